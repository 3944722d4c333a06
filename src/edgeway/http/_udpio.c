/* Datagrams in batches: recvmmsg and sendmmsg for the DNS server's UDP sockets (see
 * edgeway.dns.server.UdpServer).
 *
 * A UDP server in Python pays one system call per datagram in and one per answer out
 * (socket.recvfrom, socket.sendto), plus, for each datagram, glibc formatting the client's
 * address into text. Here one recvmmsg takes up to BATCH_MAX waiting datagrams and one
 * sendmmsg sends a batch of answers; the address of a client seen recently is not formatted
 * again (a small cache of address -> Python tuple). What Python sees is what socket.recvfrom
 * and socket.sendto give and take: (bytes, address) with the address as the socket module
 * makes it ((host, port) for AF_INET, (host, port, flowinfo, scope_id) for AF_INET6).
 *
 * Memory: one receive area of BATCH_MAX buffers of DGRAM_MAX bytes, allocated on first use
 * and kept (only the pages a datagram touched become resident). Every function runs with the
 * GIL held and never releases it (the socket is non-blocking, MSG_DONTWAIT), but Python code
 * can still run inside recv_batch (a garbage collection's finalizers, while the result is
 * built) and call it again: the message headers are on each call's stack, and a call that
 * finds the kept area in use reads into one of its own (recv_batch).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#define BATCH_MAX 64
#define DGRAM_MAX 65536               /* more than any UDP payload over IPv4 or IPv6 without jumbograms */
#define ADDR_CACHE 64                 /* clients whose address tuple is kept (direct-mapped) */

static char *recv_area;               /* BATCH_MAX * DGRAM_MAX bytes, kept */
static int recv_area_busy;            /* a recv_batch call is reading it (see recv_batch) */

typedef struct {
    struct sockaddr_storage addr;
    socklen_t len;                    /* 0: empty */
    PyObject *tuple;                  /* strong reference */
} CachedAddress;

static CachedAddress addr_cache[ADDR_CACHE];

/* The address tuple of a socket address, as socket.recvfrom makes it (makesockaddr,
 * make_ipv4_addr and make_ipv6_addr in CPython's socketmodule.c: inet_ntop, so a link-local
 * host comes without "%scope", the scope being the tuple's fourth field; getnameinfo would
 * add "%lo" and ask the kernel for the interface's name). New reference; NULL with an
 * exception set. */
static PyObject *make_address(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        if (inet_ntop(AF_INET, &a->sin_addr, host, sizeof host) == NULL) return PyErr_SetFromErrno(PyExc_OSError);
        return Py_BuildValue("(si)", host, (int)ntohs(a->sin_port));
    }
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    if (inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host) == NULL) return PyErr_SetFromErrno(PyExc_OSError);
    return Py_BuildValue("(siII)", host, (int)ntohs(a->sin6_port), (unsigned int)ntohl(a->sin6_flowinfo),
                         (unsigned int)a->sin6_scope_id);
}

static size_t address_slot(const struct sockaddr_storage *ss) {
    uint32_t h;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        h = a->sin_addr.s_addr ^ ((uint32_t)a->sin_port * 2654435761u);
    } else {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        uint32_t words[4];
        memcpy(words, &a->sin6_addr, sizeof words);
        h = words[0] ^ words[1] ^ words[2] ^ words[3] ^ ((uint32_t)a->sin6_port * 2654435761u);
    }
    h ^= h >> 16;
    return h % ADDR_CACHE;
}

/* The tuple for a received address: the cached one when this client was seen lately. */
static PyObject *address_of(const struct sockaddr_storage *ss, socklen_t len) {
    if (ss->ss_family != AF_INET && ss->ss_family != AF_INET6) {
        PyErr_Format(PyExc_OSError, "recv_batch: address family %d is not AF_INET or AF_INET6", ss->ss_family);
        return NULL;
    }
    if ((ss->ss_family == AF_INET && len < (socklen_t)sizeof(struct sockaddr_in)) ||
        (ss->ss_family == AF_INET6 && len < (socklen_t)sizeof(struct sockaddr_in6))) {
        PyErr_SetString(PyExc_OSError, "recv_batch: short socket address");
        return NULL;
    }
    CachedAddress *slot = &addr_cache[address_slot(ss)];
    if (slot->len == len && memcmp(&slot->addr, ss, len) == 0) {
        Py_INCREF(slot->tuple);
        return slot->tuple;
    }
    PyObject *tuple = make_address(ss);
    if (tuple == NULL) return NULL;
    Py_XSETREF(slot->tuple, Py_NewRef(tuple));
    memcpy(&slot->addr, ss, len);
    slot->len = len;
    return tuple;
}

static int file_descriptor(PyObject *arg) {
    int fd = PyObject_AsFileDescriptor(arg);
    return fd;
}

static PyObject *recv_batch(PyObject *self, PyObject *args) {
    PyObject *fdobj;
    int count;
    if (!PyArg_ParseTuple(args, "Oi:recv_batch", &fdobj, &count)) return NULL;
    int fd = file_descriptor(fdobj);
    if (fd < 0) return NULL;
    if (count < 1 || count > BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "recv_batch: count must be 1 to %d, not %d", BATCH_MAX, count);
        return NULL;
    }
    /* Building the result allocates objects the cyclic GC tracks (the list, the tuples), so
     * a collection may run in the middle, and with it finalizers: arbitrary Python code, which
     * may call recv_batch again (or let another thread do so). The headers live on this call's
     * stack; the kept area is this call's only if no other call holds it, else it reads into
     * an area of its own, freed at the end. */
    struct mmsghdr msgs[BATCH_MAX];
    struct iovec iov[BATCH_MAX];
    struct sockaddr_storage addrs[BATCH_MAX];
    char *area;
    int own_area = recv_area_busy;
    if (own_area) {
        area = PyMem_RawMalloc((size_t)count * DGRAM_MAX);
        if (area == NULL) return PyErr_NoMemory();
    } else {
        if (recv_area == NULL) {
            recv_area = PyMem_RawMalloc((size_t)BATCH_MAX * DGRAM_MAX);
            if (recv_area == NULL) return PyErr_NoMemory();
        }
        area = recv_area;
        recv_area_busy = 1;
    }
    for (int i = 0; i < count; i++) {
        iov[i].iov_base = area + (size_t)i * DGRAM_MAX;
        iov[i].iov_len = DGRAM_MAX;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
        msgs[i].msg_len = 0;
    }
    PyObject *list = NULL;
    int got = recvmmsg(fd, msgs, (unsigned int)count, MSG_DONTWAIT, NULL);
    if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            list = PyList_New(0);
        else
            PyErr_SetFromErrno(PyExc_OSError);
        goto done;
    }
    list = PyList_New(got);
    if (list == NULL) goto done;
    for (int i = 0; i < got; i++) {
        size_t len = msgs[i].msg_len;
        if (len > DGRAM_MAX) len = DGRAM_MAX;      /* (MSG_TRUNC: the kernel says the full length) */
        PyObject *data = PyBytes_FromStringAndSize(iov[i].iov_base, (Py_ssize_t)len);
        PyObject *addr = data ? address_of(&addrs[i], msgs[i].msg_hdr.msg_namelen) : NULL;
        PyObject *item = addr ? PyTuple_Pack(2, data, addr) : NULL;
        Py_XDECREF(data);
        Py_XDECREF(addr);
        if (item == NULL) {
            /* (the datagrams of this batch are consumed: the caller learns why they are lost) */
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, item);
    }
done:
    if (own_area)
        PyMem_RawFree(area);
    else
        recv_area_busy = 0;
    return list;
}

/* addr (as socket.sendto takes it for `family`, numeric host only) -> *ss; -1 with an exception. */
static int parse_address(int family, PyObject *addr, struct sockaddr_storage *ss, socklen_t *len) {
    const char *host;
    int port;
    unsigned int flowinfo = 0, scope_id = 0;
    if (!PyTuple_Check(addr)) {
        PyErr_Format(PyExc_TypeError, "send_batch: an address must be a tuple, not %.100s", Py_TYPE(addr)->tp_name);
        return -1;
    }
    /* exact str and int only: converting anything else could run Python code (__index__),
     * which could change the caller's list while send_batch holds pointers into it */
    Py_ssize_t size = PyTuple_GET_SIZE(addr);
    if (family == AF_INET ? size != 2 : (size != 2 && size != 4)) {
        PyErr_SetString(PyExc_TypeError, family == AF_INET
                        ? "send_batch: an AF_INET address must be (host, port)"
                        : "send_batch: an AF_INET6 address must be (host, port[, flowinfo, scope_id])");
        return -1;
    }
    for (Py_ssize_t k = 1; k < size; k++)
        if (!PyLong_CheckExact(PyTuple_GET_ITEM(addr, k))) {
            PyErr_SetString(PyExc_TypeError, "send_batch: the port, flowinfo and scope_id must be int");
            return -1;
        }
    PyObject *hostobj = PyTuple_GET_ITEM(addr, 0);
    if (!PyUnicode_CheckExact(hostobj)) {
        PyErr_SetString(PyExc_TypeError, "send_batch: the host must be a str (a numeric address)");
        return -1;
    }
    Py_ssize_t hostlen;
    host = PyUnicode_AsUTF8AndSize(hostobj, &hostlen);
    if (host == NULL) return -1;
    if ((size_t)hostlen != strlen(host)) {
        PyErr_SetString(PyExc_ValueError, "send_batch: embedded null character in the host");
        return -1;
    }
    long value = PyLong_AsLong(PyTuple_GET_ITEM(addr, 1));
    if (value == -1 && PyErr_Occurred()) return -1;
    if (value < 0 || value > 65535) {
        PyErr_SetString(PyExc_OverflowError, "send_batch: port must be 0-65535.");
        return -1;
    }
    port = (int)value;
    if (size == 4) {
        unsigned long f = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 2));
        if (f == (unsigned long)-1 && PyErr_Occurred()) return -1;
        unsigned long sc = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(addr, 3));
        if (sc == (unsigned long)-1 && PyErr_Occurred()) return -1;
        if (f > 0xfffff) {
            PyErr_SetString(PyExc_OverflowError, "send_batch: flowinfo must be 0-1048575.");
            return -1;
        }
        if (sc > UINT32_MAX) {
            PyErr_SetString(PyExc_OverflowError, "send_batch: scope_id must be 0-4294967295.");
            return -1;
        }
        flowinfo = (unsigned int)f;
        scope_id = (unsigned int)sc;
    }
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1) {
            PyErr_Format(PyExc_ValueError, "send_batch: %.100R is not a numeric IPv4 address", PyTuple_GET_ITEM(addr, 0));
            return -1;
        }
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        *len = sizeof *a;
        return 0;
    }
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1) {
        /* a scoped address (fe80::1%lo): as the socket module, through getaddrinfo */
        struct addrinfo hints, *res = NULL;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_INET6;
        hints.ai_socktype = SOCK_DGRAM;
        hints.ai_flags = AI_NUMERICHOST;
        if (strchr(host, '%') == NULL || getaddrinfo(host, NULL, &hints, &res) != 0 || res == NULL ||
            res->ai_addrlen != sizeof(struct sockaddr_in6)) {
            if (res) freeaddrinfo(res);
            PyErr_Format(PyExc_ValueError, "send_batch: %.100R is not a numeric IPv6 address", PyTuple_GET_ITEM(addr, 0));
            return -1;
        }
        memcpy(a, res->ai_addr, sizeof *a);
        if (scope_id == 0) scope_id = a->sin6_scope_id;
        freeaddrinfo(res);
    }
    a->sin6_family = AF_INET6;
    a->sin6_port = htons((uint16_t)port);
    a->sin6_flowinfo = htonl(flowinfo);
    a->sin6_scope_id = scope_id;
    *len = sizeof *a;
    return 0;
}

/* Send the n messages of send_msgs; returns the number that failed, or -1 (errno set) when
 * the descriptor is no socket at all (EBADF, ENOTSOCK: no datagram could go, and sendto raises). */
static Py_ssize_t send_all(int fd, struct mmsghdr *send_msgs, Py_ssize_t n) {
    Py_ssize_t failed = 0, i = 0;
    while (i < n) {
        int sent = sendmmsg(fd, send_msgs + i, (unsigned int)(n - i), MSG_DONTWAIT);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EBADF || errno == ENOTSOCK) return -1;
            failed++;          /* this datagram could not go (EAGAIN, EMSGSIZE, ...): the rest still may */
            i++;
        } else if (sent == 0) {
            failed += n - i;   /* (not expected from Linux: nothing sent and no error) */
            break;
        } else {
            i += sent;
        }
    }
    return failed;
}

static PyObject *send_batch(PyObject *self, PyObject *args) {
    PyObject *fdobj, *items;
    int family;
    if (!PyArg_ParseTuple(args, "OiO:send_batch", &fdobj, &family, &items)) return NULL;
    int fd = file_descriptor(fdobj);
    if (fd < 0) return NULL;
    if (family != AF_INET && family != AF_INET6) {
        PyErr_Format(PyExc_ValueError, "send_batch: family must be AF_INET or AF_INET6, not %d", family);
        return NULL;
    }
    if (!PyList_Check(items)) {
        PyErr_Format(PyExc_TypeError, "send_batch: items must be a list, not %.100s", Py_TYPE(items)->tp_name);
        return NULL;
    }
    struct mmsghdr send_msgs[BATCH_MAX];        /* (on this call's stack, as recv_batch's) */
    struct iovec send_iov[BATCH_MAX];
    struct sockaddr_storage send_addr[BATCH_MAX];
    Py_ssize_t n = PyList_GET_SIZE(items);
    if (n > BATCH_MAX) {
        PyErr_Format(PyExc_ValueError, "send_batch: at most %d items, not %zd", BATCH_MAX, n);
        return NULL;
    }
    /* Every item is checked before anything is sent: a malformed one raises and nothing goes.
     * parse_address runs no Python code that could change the list or free a bytes object
     * (PyArg_ParseTuple on a tuple of str and int), and `items` is held by the caller for the
     * whole call, so the pointers taken here stay valid until the send. */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyBytes_Check(PyTuple_GET_ITEM(item, 0))) {
            PyErr_Format(PyExc_TypeError, "send_batch: item %zd must be a (bytes, address) tuple", i);
            return NULL;
        }
        socklen_t len;
        if (parse_address(family, PyTuple_GET_ITEM(item, 1), &send_addr[i], &len) < 0) return NULL;
        PyObject *data = PyTuple_GET_ITEM(item, 0);
        send_iov[i].iov_base = PyBytes_AS_STRING(data);
        send_iov[i].iov_len = (size_t)PyBytes_GET_SIZE(data);
        memset(&send_msgs[i].msg_hdr, 0, sizeof send_msgs[i].msg_hdr);
        send_msgs[i].msg_hdr.msg_iov = &send_iov[i];
        send_msgs[i].msg_hdr.msg_iovlen = 1;
        send_msgs[i].msg_hdr.msg_name = &send_addr[i];
        send_msgs[i].msg_hdr.msg_namelen = len;
        send_msgs[i].msg_len = 0;
    }
    Py_ssize_t failed = send_all(fd, send_msgs, n);
    if (failed < 0) return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromSsize_t(failed);
}

static PyMethodDef methods[] = {
    {"recv_batch", recv_batch, METH_VARARGS,
     "recv_batch(fd, count) -> [(data, address), ...]: up to count (1-64) datagrams waiting on the\n"
     "socket, in one recvmmsg; [] when none is waiting. Addresses as socket.recvfrom gives them."},
    {"send_batch", send_batch, METH_VARARGS,
     "send_batch(fd, family, [(data, address), ...]) -> failed: send each of at most 64 datagrams (sendmmsg, in\n"
     "order); a datagram the kernel refuses is skipped and counted, the rest still go. Addresses as\n"
     "socket.sendto takes them for the family (numeric hosts); a malformed item raises before\n"
     "anything is sent."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "edgeway.http._udpio",
                                    "Datagrams in batches: recvmmsg and sendmmsg (see edgeway.dns.server).",
                                    -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__udpio(void) { return PyModule_Create(&module); }
