/* The L7 proxy's fast path for the common message: one call that reads a whole plain request
 * head and returns what httptools' callbacks plus messages.analyze_request would have
 * produced (scan_request), or reads a whole plain response and renders it for the client as
 * UpstreamConnection's callbacks and client_response_head would (forward_response); or None.
 *
 * None means "not the plain case": the caller then feeds the same bytes to httptools (llhttp,
 * strict), which stays the reference for everything, errors included. So this scanner accepts
 * only a strict subset of what llhttp accepts and never decides that input is bad: no
 * request body, no Transfer-Encoding, no Upgrade/Expect, one message exactly filling the
 * buffer, plain token names without '_' (whether those are dropped is the listener's
 * underscores_in_headers, which the Python path applies) and visible-ASCII values. tests/unit/http/test_headscan.py
 * checks, over generated and mutated inputs, that whatever is accepted here comes out of
 * the httptools path field for field (requests) and byte for byte (responses).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include <structmember.h>   /* T_OBJECT_EX */

#include "_outbuf.h"

static PyObject *RequestHead;                      /* the dataclass of messages.py */
/* RequestHead's slots in field order, to fill a new instance without running its generated
 * __init__ (a Python function of 16 assignments: a tenth of the scan's cost); 0 fields: not
 * the expected shape, so the constructor is called instead */
#define REQUEST_FIELDS 16
static Py_ssize_t request_offsets[REQUEST_FIELDS];
static int request_slots;
static PyObject *no_tokens, *close_tokens, *keepalive_tokens;   /* frozensets */
static PyObject *s_version11;
static PyObject *methods[8];
static const char *method_names[8] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", NULL};

/* RFC 9110 5.6.2 tchar */
static unsigned char is_tchar[256];
/* request-target characters accepted here (a subset of llhttp's): RFC 3986 pchar, '/', '?' */
static unsigned char is_target[256];
/* field-value characters accepted here: VCHAR, SP, HTAB (no obs-text, no controls) */
static unsigned char is_vchar[256];
/* reg-name characters of messages._HOST */
static unsigned char is_host[256];

static void init_tables(void) {
    const char *t = "!#$%&'*+-.^_`|~";
    const char *p;
    int c;
    for (c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        is_tchar[c] = alnum;
        is_target[c] = alnum;
        is_host[c] = alnum;
        is_vchar[c] = (c >= 0x21 && c <= 0x7e) || c == ' ' || c == '\t';
    }
    for (p = t; *p; p++) is_tchar[(unsigned char)*p] = 1;
    for (p = "-._~!$&'()*+,;=:@/?%"; *p; p++) is_target[(unsigned char)*p] = 1;
    for (p = "._~!$&'()*+,;=%-"; *p; p++) is_host[(unsigned char)*p] = 1;
}

static int lower_eq(const char *s, Py_ssize_t n, const char *lower) {
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c != (unsigned char)lower[i] || lower[i] == 0) return 0;
    }
    return lower[n] == 0;
}

/* the value without its surrounding SP/HTAB (bytes.strip() for the values accepted here) */
static void trim(const char **v, Py_ssize_t *n) {
    while (*n && ((*v)[0] == ' ' || (*v)[0] == '\t')) { (*v)++; (*n)--; }
    while (*n && ((*v)[*n - 1] == ' ' || (*v)[*n - 1] == '\t')) (*n)--;
}

/* One field line at p (limit end): name, value (leading OWS dropped, trailing kept, as llhttp
 * gives it); returns the position after its CRLF, or NULL if it is not a plain field line. */
static const char *field_line(const char *p, const char *end, const char **name, Py_ssize_t *name_len,
                              const char **value, Py_ssize_t *value_len) {
    const char *q = p;
    while (q < end && is_tchar[(unsigned char)*q]) q++;
    if (q == p || q >= end || *q != ':') return NULL;
    *name = p;
    *name_len = q - p;
    q++;
    while (q < end && (*q == ' ' || *q == '\t')) q++;
    *value = q;
    while (q < end && is_vchar[(unsigned char)*q]) q++;
    if (q + 1 >= end || q[0] != '\r' || q[1] != '\n') return NULL;
    *value_len = q - *value;
    return q + 2;
}

static int out_field(out_t *o, const char *name, Py_ssize_t nl, const char *value, Py_ssize_t vl) {
    if (out_put(o, name, nl) < 0 || out_put(o, ": ", 2) < 0 || out_put(o, value, vl) < 0) return -1;
    return out_put(o, "\r\n", 2);
}

/* a join of field values with ", " (X-Forwarded-For, Forwarded) */
static int join_value(PyObject **acc, const char *v, Py_ssize_t n) {
    PyObject *piece = PyBytes_FromStringAndSize(v, n);
    if (piece == NULL) return -1;
    if (*acc == NULL) { *acc = piece; return 0; }
    PyObject *sep = PyBytes_FromStringAndSize(", ", 2);
    if (sep == NULL) { Py_DECREF(piece); return -1; }
    PyBytes_ConcatAndDel(acc, sep);
    if (*acc != NULL) PyBytes_ConcatAndDel(acc, piece); else Py_DECREF(piece);
    return *acc == NULL ? -1 : 0;
}

/* messages._HOST without the bracketed IPv6 form (declined: the slow path checks it) */
static int plain_host(const char *h, Py_ssize_t n) {
    Py_ssize_t i = 0, digits = 0;
    while (i < n && is_host[(unsigned char)h[i]]) i++;
    if (i == n) return 1;
    if (h[i] != ':') return 0;
    for (i++; i < n; i++, digits++)
        if (h[i] < '0' || h[i] > '9' || digits == 5) return 0;
    return 1;
}

/* "close" or "keep-alive" alone (1, 2); 0 for anything else */
static int connection_option(const char *v, Py_ssize_t n) {
    trim(&v, &n);
    if (n == 5 && lower_eq(v, n, "close")) return 1;
    if (n == 10 && lower_eq(v, n, "keep-alive")) return 2;
    return 0;
}

/* scan_request(data, max_uri_length, max_header_size, client_ip, scheme) -> RequestHead | None
 *
 * The head's upstream_head is the request for the server as messages.upstream_request_head
 * renders it when the route keeps target and Host and no Forwarded field is added. */
static PyObject *scan_request(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyUnicode_Check(args[3]) || !PyUnicode_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "scan_request(data: bytes, max_uri_length: int, max_header_size: int, "
                                         "client_ip: str, scheme: str)");
        return NULL;
    }
    if (RequestHead == NULL) {   /* messages.py calls init() on import */
        PyErr_SetString(PyExc_RuntimeError, "_headscan.scan_request() before _headscan.init(RequestHead, ...)");
        return NULL;
    }
    Py_ssize_t max_uri = PyLong_AsSsize_t(args[1]), max_head = PyLong_AsSsize_t(args[2]);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t ip_len, scheme_len;
    const char *ip = PyUnicode_AsUTF8AndSize(args[3], &ip_len);
    const char *scheme = ip ? PyUnicode_AsUTF8AndSize(args[4], &scheme_len) : NULL;
    if (scheme == NULL) return NULL;
    const char *data = PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    const char *end = data + size, *p = data;
    /* the whole buffer is one head: it ends with the first blank line */
    if (size < 18 || memcmp(end - 4, "\r\n\r\n", 4) != 0) Py_RETURN_NONE;

    int m;
    PyObject *method = NULL;
    for (m = 0; method_names[m]; m++) {
        size_t ml = strlen(method_names[m]);
        if ((Py_ssize_t)ml < size && memcmp(p, method_names[m], ml) == 0 && p[ml] == ' ') {
            method = methods[m];
            p += ml + 1;
            break;
        }
    }
    if (method == NULL || *p != '/') Py_RETURN_NONE;
    const char *target = p;
    while (p < end && is_target[(unsigned char)*p]) p++;
    Py_ssize_t target_len = p - target;
    if (target_len > max_uri || end - p < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0) Py_RETURN_NONE;
    p += 11;

    Py_ssize_t head_size = target_len;
    const char *host = NULL;
    Py_ssize_t host_len = 0;
    int connection = -1, has_cookie = 0;
    PyObject *headers = PyList_New(0), *xff = NULL, *prior = NULL, *result = NULL;
    out_t fwd = {NULL, 0, 0};
    if (headers == NULL) return NULL;

    while (p < end - 2) {
        const char *name, *value;
        Py_ssize_t nl, vl;
        const char *next = field_line(p, end - 2, &name, &nl, &value, &vl);
        if (next == NULL || memchr(name, '_', nl) != NULL) goto decline;
        head_size += nl + vl + 4;
        if (head_size > max_head) goto decline;     /* the slow path answers 431 */
        PyObject *pair = Py_BuildValue("(y#y#)", name, nl, value, vl);
        if (pair == NULL) goto error;
        int failed = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (failed) goto error;
        int fwd_it = 1;
        switch (nl) {
        case 2:
            if (lower_eq(name, nl, "te")) fwd_it = 0;
            break;
        case 4:
            if (lower_eq(name, nl, "host")) {
                if (host != NULL) goto decline;     /* several Host: 400 in the slow path */
                host = value;
                host_len = vl;
                trim(&host, &host_len);
                if (!plain_host(host, host_len)) goto decline;
                fwd_it = 0;
            }
            break;
        case 6:
            if (lower_eq(name, nl, "cookie")) has_cookie = 1;
            else if (lower_eq(name, nl, "expect")) goto decline;
            break;
        case 7:
            if (lower_eq(name, nl, "upgrade")) goto decline;
            if (lower_eq(name, nl, "trailer")) fwd_it = 0;
            break;
        case 9:
            if (lower_eq(name, nl, "forwarded")) {
                if (join_value(&prior, value, vl) < 0) goto error;
                fwd_it = 0;
            } else if (lower_eq(name, nl, "x-real-ip")) fwd_it = 0;
            break;
        case 10:
            if (lower_eq(name, nl, "connection")) {
                if (connection != -1) goto decline;
                connection = connection_option(value, vl);
                if (connection == 0) goto decline;
                fwd_it = 0;
            } else if (lower_eq(name, nl, "keep-alive")) fwd_it = 0;
            break;
        case 14:
            if (lower_eq(name, nl, "content-length")) goto decline;
            break;
        case 15:
            if (lower_eq(name, nl, "x-forwarded-for")) {
                if (join_value(&xff, value, vl) < 0) goto error;
                fwd_it = 0;
            }
            break;
        case 16:
            /* llhttp reads Proxy-Connection as Connection (close, keep-alive, upgrade) */
            if (lower_eq(name, nl, "proxy-connection")) goto decline;
            if (lower_eq(name, nl, "x-forwarded-host")) fwd_it = 0;
            break;
        case 17:
            if (lower_eq(name, nl, "transfer-encoding")) goto decline;
            if (lower_eq(name, nl, "x-forwarded-proto")) fwd_it = 0;
            break;
        }
        if (fwd_it && out_field(&fwd, name, nl, value, vl) < 0) goto error;
        p = next;
    }
    /* no Host in HTTP/1.1: 400 in the slow path; an empty one: the server's name is sent */
    if (p != end - 2 || host == NULL || host_len == 0) goto decline;

    {
        out_t up = {NULL, 0, 0};
        const char *method_s = PyUnicode_AsUTF8(method);
        PyObject *upstream = NULL;
        if (out_put(&up, method_s, strlen(method_s)) < 0 || out_put(&up, " ", 1) < 0 ||
            out_put(&up, target, target_len) < 0 || out_put(&up, " HTTP/1.1\r\nHost: ", 17) < 0 ||
            out_put(&up, host, host_len) < 0 || out_put(&up, "\r\n", 2) < 0 ||
            (fwd.len && out_put(&up, fwd.buf, fwd.len) < 0) ||
            out_put(&up, "X-Real-IP: ", 11) < 0 || out_put(&up, ip, ip_len) < 0 ||
            out_put(&up, "\r\nX-Forwarded-For: ", 19) < 0 ||
            /* an empty X-Forwarded-For counts as none (as upstream_request_head's `if xff`) */
            (xff && PyBytes_GET_SIZE(xff) &&
             (out_put(&up, PyBytes_AS_STRING(xff), PyBytes_GET_SIZE(xff)) < 0 || out_put(&up, ", ", 2) < 0)) ||
            out_put(&up, ip, ip_len) < 0 || out_put(&up, "\r\nX-Forwarded-Proto: ", 21) < 0 ||
            out_put(&up, scheme, scheme_len) < 0 || out_put(&up, "\r\nX-Forwarded-Host: ", 20) < 0 ||
            out_put(&up, host, host_len) < 0 || out_put(&up, "\r\n\r\n", 4) < 0 ||
            (upstream = PyBytes_FromStringAndSize(up.buf, up.len)) == NULL) {
            PyMem_Free(up.buf);
            goto error;
        }
        PyMem_Free(up.buf);
        PyObject *forward = PyBytes_FromStringAndSize(fwd.buf ? fwd.buf : "", fwd.len);
        PyObject *target_s = PyUnicode_DecodeLatin1(target, target_len, NULL);
        PyObject *host_s = PyUnicode_DecodeLatin1(host, host_len, NULL);
        PyObject *tokens = connection == 1 ? close_tokens : connection == 2 ? keepalive_tokens : no_tokens;
        if (forward && target_s && host_s) {
            PyObject *argv[REQUEST_FIELDS] = {method, target_s, s_version11, headers, host_s, Py_None, Py_False,
                                  connection == 1 ? Py_False : Py_True, Py_None, Py_False, tokens,
                                  has_cookie ? Py_True : Py_False, forward,
                                  xff ? xff : Py_None, prior ? prior : Py_None, upstream};
            if (request_slots) {
                PyTypeObject *type = (PyTypeObject *)RequestHead;
                result = type->tp_alloc(type, 0);
                if (result != NULL) {
                    int i;
                    for (i = 0; i < REQUEST_FIELDS; i++)
                        *(PyObject **)((char *)result + request_offsets[i]) = Py_NewRef(argv[i]);
                }
            } else {
                result = PyObject_Vectorcall(RequestHead, argv, REQUEST_FIELDS, NULL);
            }
        }
        Py_DECREF(upstream);
        Py_XDECREF(forward);
        Py_XDECREF(target_s);
        Py_XDECREF(host_s);
    }
    goto done;
decline:
    result = Py_None;
    Py_INCREF(result);
    goto done;
error:
    result = NULL;
done:
    Py_DECREF(headers);
    Py_XDECREF(xff);
    Py_XDECREF(prior);
    PyMem_Free(fwd.buf);
    return result;
}

/* What the scan of a response found. */
typedef struct {
    int status, connection;       /* connection: -1 none, 1 close, 2 keep-alive */
    const char *reason, *conn_value, *body;
    Py_ssize_t reason_len, conn_len;
    long long length;
    out_t lines;                  /* the fields to forward, rendered */
} resp_t;

/* 1: a whole plain response, head and its Content-Length body, filling the buffer exactly,
 * its head at most max_head bytes as UpstreamConnection counts them (status line, then name +
 * value + 4 per field); 0: anything else; -1: out of memory. r->lines is to be freed by the
 * caller either way. */
static int scan_resp(const char *data, Py_ssize_t size, Py_ssize_t max_head, resp_t *r) {
    const char *end = data + size, *p = data;
    r->lines.buf = NULL;
    r->lines.len = r->lines.cap = 0;
    if (size < 19 || memcmp(p, "HTTP/1.1 ", 9) != 0) return 0;
    p += 9;
    if (p[0] < '2' || p[0] > '5' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3] != ' ')
        return 0;
    r->status = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (r->status == 204 || r->status == 304) return 0;   /* no body: llhttp's own rules */
    p += 4;
    r->reason = p;
    while (p < end && is_vchar[(unsigned char)*p]) p++;
    if (end - p < 2 || p[0] != '\r' || p[1] != '\n') return 0;
    r->reason_len = p - r->reason;
    Py_ssize_t head_size = r->reason_len + 15;
    p += 2;
    r->length = -1;
    r->connection = -1;
    r->conn_value = NULL;
    r->conn_len = 0;
    for (;;) {
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') { p += 2; break; }
        const char *name, *value;
        Py_ssize_t nl, vl, i;
        const char *next = field_line(p, end, &name, &nl, &value, &vl);
        if (next == NULL) return 0;
        head_size += nl + vl + 4;
        if (head_size > max_head) return 0;   /* the slow path answers 502 */
        int fwd_it = 1;
        switch (nl) {
        case 2:
            if (lower_eq(name, nl, "te")) fwd_it = 0;
            break;
        case 7:
            if (lower_eq(name, nl, "upgrade")) return 0;
            if (lower_eq(name, nl, "trailer")) fwd_it = 0;
            break;
        case 10:
            if (lower_eq(name, nl, "connection")) {
                if (r->connection != -1) return 0;
                r->connection = connection_option(value, vl);
                if (r->connection == 0) return 0;
                r->conn_value = value;
                r->conn_len = vl;
                fwd_it = 0;
            } else if (lower_eq(name, nl, "keep-alive")) fwd_it = 0;
            break;
        case 14:
            if (lower_eq(name, nl, "content-length")) {
                if (r->length != -1 || vl == 0 || vl > 15) return 0;
                r->length = 0;
                for (i = 0; i < vl; i++) {
                    if (value[i] < '0' || value[i] > '9') return 0;
                    r->length = r->length * 10 + (value[i] - '0');
                }
                fwd_it = 0;
            }
            break;
        case 16:
            if (lower_eq(name, nl, "proxy-connection")) return 0;   /* llhttp: as Connection */
            break;
        case 17:
            if (lower_eq(name, nl, "transfer-encoding")) return 0;
            break;
        }
        if (fwd_it && out_field(&r->lines, name, nl, value, vl) < 0) return -1;
        p = next;
    }
    if (r->length < 0 || (end - p) != r->length) return 0;   /* close-delimited, partial, or more */
    r->body = p;
    return 1;
}

/* forward_response(data, extra, keep_alive, client_10, max_head) -> (status, server_keep_alive,
 * content_length, out) | None: a whole plain response (scan_resp), and the bytes for the client as
 * messages.client_response_head renders them (a GET-like request, Content-Length framing)
 * followed by the body: `extra` (rendered fields) after the server's, then Content-Length,
 * then Connection as `keep_alive` and the client's version want it. */
static PyObject *forward_response(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "forward_response(data: bytes, extra: bytes, keep_alive, client_10, max_head: int)");
        return NULL;
    }
    int keep_alive = PyObject_IsTrue(args[2]), client_10 = PyObject_IsTrue(args[3]);
    if (keep_alive < 0 || client_10 < 0) return NULL;
    Py_ssize_t max_head = PyLong_AsSsize_t(args[4]);
    if (max_head == -1 && PyErr_Occurred()) return NULL;
    resp_t r;
    int found = scan_resp(PyBytes_AS_STRING(args[0]), PyBytes_GET_SIZE(args[0]), max_head, &r);
    if (found <= 0) {
        PyMem_Free(r.lines.buf);
        if (found < 0) return NULL;
        Py_RETURN_NONE;
    }
    char line[64];
    const char *tail = !keep_alive ? "Connection: close\r\n\r\n" : client_10 ? "Connection: keep-alive\r\n\r\n" : "\r\n";
    memcpy(line, "HTTP/1.1 ", 9);
    int line_len = 9 + put_decimal(line + 9, (unsigned long long)r.status);
    line[line_len++] = ' ';
    char cl[48];
    memcpy(cl, "Content-Length: ", 16);
    int cl_len = 16 + put_decimal(cl + 16, (unsigned long long)r.length);
    cl[cl_len++] = '\r';
    cl[cl_len++] = '\n';
    Py_ssize_t extra_len = PyBytes_GET_SIZE(args[1]), tail_len = (Py_ssize_t)strlen(tail);
    Py_ssize_t total = line_len + r.reason_len + 2 + r.lines.len + extra_len + cl_len + tail_len + r.length;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    PyObject *result = NULL;
    if (out != NULL) {
        char *o = PyBytes_AS_STRING(out);
        memcpy(o, line, line_len); o += line_len;
        memcpy(o, r.reason, r.reason_len); o += r.reason_len;
        memcpy(o, "\r\n", 2); o += 2;
        if (r.lines.len) { memcpy(o, r.lines.buf, r.lines.len); o += r.lines.len; }
        memcpy(o, PyBytes_AS_STRING(args[1]), extra_len); o += extra_len;
        memcpy(o, cl, cl_len); o += cl_len;
        memcpy(o, tail, tail_len); o += tail_len;
        memcpy(o, r.body, r.length);
        result = Py_BuildValue("(iOLN)", r.status, r.connection == 1 ? Py_False : Py_True, r.length, out);
    }
    PyMem_Free(r.lines.buf);
    return result;
}

/* init(RequestHead, no_tokens, close_tokens, keepalive_tokens) */
static PyObject *init(PyObject *self, PyObject *args) {
    PyObject *a, *c, *d, *e;
    if (!PyArg_ParseTuple(args, "OOOO", &a, &c, &d, &e)) return NULL;
    Py_XSETREF(RequestHead, Py_NewRef(a));
    request_slots = 0;
    PyObject *fields = PyObject_GetAttrString(a, "__dataclass_fields__");
    if (fields == NULL) return NULL;
    if (PyDict_Check(fields) && PyDict_GET_SIZE(fields) == REQUEST_FIELDS && PyType_Check(a)) {
        PyObject *name, *value;
        Py_ssize_t pos = 0;
        int i = 0, ok = 1;
        while (ok && PyDict_Next(fields, &pos, &name, &value)) {
            PyObject *descr = PyObject_GetAttr(a, name);   /* a member_descriptor for a slot */
            if (descr == NULL) { Py_DECREF(fields); return NULL; }
            if (Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
                ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX)
                request_offsets[i++] = ((PyMemberDescrObject *)descr)->d_member->offset;
            else
                ok = 0;
            Py_DECREF(descr);
        }
        request_slots = ok && i == REQUEST_FIELDS;
    }
    Py_DECREF(fields);
    Py_XSETREF(no_tokens, Py_NewRef(c));
    Py_XSETREF(close_tokens, Py_NewRef(d));
    Py_XSETREF(keepalive_tokens, Py_NewRef(e));
    Py_RETURN_NONE;
}

static PyMethodDef functions[] = {
    {"scan_request", (PyCFunction)(void (*)(void))scan_request, METH_FASTCALL,
     "scan_request(data, max_uri_length, max_header_size, client_ip, scheme) -> RequestHead | None"},
    {"forward_response", (PyCFunction)(void (*)(void))forward_response, METH_FASTCALL,
     "forward_response(data, extra, keep_alive, client_10, max_head) -> (status, server_keep_alive, length, out) "
     "| None"},
    {"init", init, METH_VARARGS, "init(RequestHead, no_tokens, close_tokens, keepalive_tokens)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "edgeway.http._headscan",
                                    "Whole-message scanner for the proxy's common case (see messages.py).",
                                    -1, functions, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__headscan(void) {
    int m;
    init_tables();
    s_version11 = PyUnicode_InternFromString("1.1");
    if (s_version11 == NULL) return NULL;
    for (m = 0; method_names[m]; m++) {
        methods[m] = PyUnicode_InternFromString(method_names[m]);
        if (methods[m] == NULL) return NULL;
    }
    return PyModule_Create(&module);
}
