/* The access log's batch formatter: AccessLog.format (listener.py) for a whole batch of
 * entries in one call, producing the same bytes as
 *     "".join(log.format(entry) for entry in entries).encode("utf-8", "replace")
 * (tests/unit/http/test_listener.py checks that over generated entries). Under load the
 * Python formatting cost as much as a tenth of a proxied request.
 *
 * The fields of a request line are escaped as nginx's escape=default: '"', '\', and bytes below
 * 0x20 or from 0x7f as \xHH, so that a client cannot end a quoted field or forge a line. A
 * character up to U+00FF is the byte it came from (request text is decoded as latin-1); a
 * larger one is escaped byte by byte in UTF-8 (lone surrogates as "surrogatepass" writes them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>

#include "_outbuf.h"

static int put_c(out_t *o, const char *s) { return out_put(o, s, (Py_ssize_t)strlen(s)); }

/* str(obj) as UTF-8, unencodable characters (lone surrogates) as "?" like errors="replace" */
static int put_str(out_t *o, PyObject *obj) {
    PyObject *s = PyUnicode_Check(obj) ? Py_NewRef(obj) : PyObject_Str(obj);
    if (s == NULL) return -1;
    Py_ssize_t n;
    const char *utf8 = PyUnicode_AsUTF8AndSize(s, &n);
    int r;
    if (utf8 != NULL) {
        r = out_put(o, utf8, n);
    } else {
        PyErr_Clear();
        PyObject *b = PyUnicode_AsEncodedString(s, "utf-8", "replace");
        r = b == NULL ? -1 : out_put(o, PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b));
        Py_XDECREF(b);
    }
    Py_DECREF(s);
    return r;
}

static int put_hex(out_t *o, unsigned int byte) {
    static const char hex[] = "0123456789ABCDEF";
    char e[4] = {'\\', 'x', hex[(byte >> 4) & 15], hex[byte & 15]};
    return out_put(o, e, 4);
}

/* str(obj), escaped (see the top of the file): ASCII strings, the usual case, are copied in runs */
static int put_esc(out_t *o, PyObject *obj) {
    PyObject *s = PyUnicode_Check(obj) ? Py_NewRef(obj) : PyObject_Str(obj);
    if (s == NULL) return -1;
    Py_ssize_t i, start = 0, n = PyUnicode_GET_LENGTH(s);
    int r = 0;
    if (PyUnicode_IS_ASCII(s)) {
        const unsigned char *a = PyUnicode_1BYTE_DATA(s);
        for (i = 0; i < n && r == 0; i++) {
            unsigned char c = a[i];
            if (c < 0x20 || c == '"' || c == '\\' || c == 0x7f) {
                r = out_put(o, (const char *)a + start, i - start);
                if (r == 0) r = put_hex(o, c);
                start = i + 1;
            }
        }
        if (r == 0) r = out_put(o, (const char *)a + start, n - start);
    } else {
        int kind = PyUnicode_KIND(s);
        const void *data = PyUnicode_DATA(s);
        for (i = 0; i < n && r == 0; i++) {
            Py_UCS4 c = PyUnicode_READ(kind, data, i);
            if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
                char ch = (char)c;
                r = out_put(o, &ch, 1);
            } else if (c <= 0xff) {
                r = put_hex(o, c);
            } else {   /* UTF-8, 2 to 4 bytes */
                unsigned char u[4];
                int len, j;
                if (c < 0x800) { u[0] = 0xc0 | (c >> 6); len = 2; }
                else if (c < 0x10000) { u[0] = 0xe0 | (c >> 12); u[1] = 0x80 | ((c >> 6) & 0x3f); len = 3; }
                else { u[0] = 0xf0 | (c >> 18); u[1] = 0x80 | ((c >> 12) & 0x3f); u[2] = 0x80 | ((c >> 6) & 0x3f);
                       len = 4; }
                u[len - 1] = 0x80 | (c & 0x3f);
                for (j = 0; j < len && r == 0; j++) r = put_hex(o, u[j]);
            }
        }
    }
    Py_DECREF(s);
    return r;
}

/* str(n) for an int, without making the string */
static int put_int(out_t *o, PyObject *obj) {
    if (PyLong_CheckExact(obj)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (!overflow && n >= 0) {
            char digits[24];
            return out_put(o, digits, put_decimal(digits, (unsigned long long)n));
        }
        if (n == -1 && PyErr_Occurred()) return -1;
    }
    return put_str(o, obj);
}

/* format(seconds * 1000, ".2f") */
static int put_ms(out_t *o, PyObject *seconds) {
    double v = PyFloat_AsDouble(seconds);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    double x = v * 1000;
    if (x > 0 && x < 1e7) {
        /* Rounded to hundredths by hand where that cannot differ from the correctly rounded
         * result: y = x * 100 is off by less than 2e-7 here (x < 1e7) and y - floor(y) is
         * exact, so away from a tie (.5) the nearest integer to y is that of the true x * 100.
         * Near a tie, PyOS_double_to_string decides. */
        double y = x * 100, whole = floor(y), frac = y - whole;
        if (fabs(frac - 0.5) > 1e-6) {
            unsigned long long n = (unsigned long long)whole + (frac > 0.5);
            char text[32];
            int len = put_decimal(text, n / 100);
            text[len++] = '.';
            text[len++] = (char)('0' + n % 100 / 10);
            text[len++] = (char)('0' + n % 10);
            return out_put(o, text, len);
        }
    }
    char *text = PyOS_double_to_string(x, 'f', 2, 0, NULL);
    if (text == NULL) return -1;
    int r = put_c(o, text);
    PyMem_Free(text);
    return r;
}

/* format_entries(entries, stamp) -> bytes; stamp(when) is the line prefix for that second */
static PyObject *format_entries(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "format_entries(entries: list, stamp)");
        return NULL;
    }
    PyObject *entries = args[0], *stamp_fn = args[1], *stamp = NULL, *result = NULL;
    long long second = -1;
    out_t o = {NULL, 0, 0};
    Py_ssize_t i, count = PyList_GET_SIZE(entries);
    for (i = 0; i < count; i++) {
        PyObject *e = PyList_GET_ITEM(entries, i);
        if (!PyTuple_Check(e) || (PyTuple_GET_SIZE(e) != 2 && PyTuple_GET_SIZE(e) != 14)) {
            PyErr_SetString(PyExc_TypeError, "an access-log entry is a tuple of 2 or 14 items");
            goto done;
        }
        double when = PyFloat_AsDouble(PyTuple_GET_ITEM(e, 0));
        if (when == -1.0 && PyErr_Occurred()) goto done;
        /* (long long) of NaN or of a time beyond its range is undefined; _stamp() raises for those */
        int in_range = when > -9e18 && when < 9e18;
        if (!in_range || (long long)when != second || stamp == NULL) {   /* _stamp() is cached per second */
            second = in_range ? (long long)when : -1;
            Py_XDECREF(stamp);
            stamp = PyObject_CallOneArg(stamp_fn, PyTuple_GET_ITEM(e, 0));
            if (stamp == NULL) goto done;
        }
        if (put_str(&o, stamp) < 0) goto done;
        if (PyTuple_GET_SIZE(e) == 2) {
            if (put_str(&o, PyTuple_GET_ITEM(e, 1)) < 0 || out_put(&o, "\n", 1) < 0) goto done;
            continue;
        }
        PyObject **f = &PyTuple_GET_ITEM(e, 0);
        /* when, client, method, target, version, status, server, sent, connect, header, total, cause,
         * route, request_id (the route is for the json format only) */
        if (put_esc(&o, f[1]) < 0 || out_put(&o, " \"", 2) < 0 || put_esc(&o, f[2]) < 0 || out_put(&o, " ", 1) < 0 ||
            put_esc(&o, f[3]) < 0 || put_c(&o, " HTTP/") < 0 || put_esc(&o, f[4]) < 0 || out_put(&o, "\" ", 2) < 0 ||
            put_int(&o, f[5]) < 0 || put_c(&o, " upstream=") < 0 || put_esc(&o, f[6]) < 0 ||
            put_c(&o, " bytes=") < 0 || put_int(&o, f[7]) < 0 || put_c(&o, " connect_ms=") < 0)
            goto done;
        if ((f[8] == Py_None ? out_put(&o, "-", 1) : put_ms(&o, f[8])) < 0 || put_c(&o, " header_ms=") < 0 ||
            (f[9] == Py_None ? out_put(&o, "-", 1) : put_ms(&o, f[9])) < 0 || put_c(&o, " total_ms=") < 0 ||
            put_ms(&o, f[10]) < 0)
            goto done;
        int has_id = PyObject_IsTrue(f[13]);
        if (has_id < 0) goto done;
        if (has_id && (put_c(&o, " request_id=") < 0 || put_esc(&o, f[13]) < 0)) goto done;
        int has_cause = PyObject_IsTrue(f[11]);
        if (has_cause < 0) goto done;
        if (has_cause && (put_c(&o, " cause=\"") < 0 || put_esc(&o, f[11]) < 0 || out_put(&o, "\"", 1) < 0)) goto done;
        if (out_put(&o, "\n", 1) < 0) goto done;
    }
    result = PyBytes_FromStringAndSize(o.buf ? o.buf : "", o.len);
done:
    Py_XDECREF(stamp);
    PyMem_Free(o.buf);
    return result;
}

static PyMethodDef functions[] = {
    {"format_entries", (PyCFunction)(void (*)(void))format_entries, METH_FASTCALL,
     "format_entries(entries, stamp) -> bytes: AccessLog.format over a batch, UTF-8"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "edgeway.http._logfmt",
                                    "The access log's batch formatter (see listener.AccessLog).", -1, functions,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__logfmt(void) { return PyModule_Create(&module); }
