/* Client connections of a plain-HTTP listener without asyncio transports (see rawio.py).
 *
 * Poller: one epoll set, watched by the event loop as one descriptor (loop.add_reader on its
 * fd, callback Poller.ready). Listener: a listening socket in the set; each readiness accepts
 * up to ACCEPTS connections (accept4, non-blocking), makes the protocol with the factory and
 * a Transport for it. Transport: the subset of asyncio.Transport the proxy uses, with its
 * semantics (connection_lost via loop.call_soon after the close; pause_writing above
 * HIGH_WATER buffered, resume_writing at LOW_WATER; eof_received decides on a FIN).
 *
 * What this saves per connection over a uvloop transport: getsockname, getpeername, the
 * TCP_NODELAY setsockopt (set here only before a connection's second write, which is the
 * first that Nagle's algorithm could hold back), the io_uring submission of libuv's epoll
 * registration, and uvloop's transport bookkeeping.
 *
 * Lifetimes: the Poller holds a reference to each live Transport (its `live` set). A
 * Transport closed while a batch of events is being handled goes to the poller's graveyard
 * until the batch is done, so that a later event of the same batch finds it (closed) rather
 * than freed memory. The Transport drops its protocol once connection_lost is scheduled.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_SIZE 65536
#define HIGH_WATER (64 * 1024)
#define LOW_WATER (HIGH_WATER / 4)
#define ACCEPTS 16
#define BATCH 256

static PyObject *s_data_received, *s_eof_received, *s_connection_made, *s_connection_lost, *s_pause_writing,
    *s_resume_writing, *s_call_soon, *s_peername, *s_sockname;
static char read_buffer[READ_SIZE];

typedef struct PollerObject PollerObject;

enum { KIND_TRANSPORT = 1, KIND_LISTENER = 2 };

typedef struct {
    PyObject_HEAD
    int kind;
    int fd;
    PollerObject *poller;
    PyObject *protocol;
    PyObject *peer;
    char *pending;                 /* bytes written but not yet taken by the kernel */
    Py_ssize_t pending_len, pending_cap, pending_off;
    int closing, closed, paused, unread, write_paused, writes;
    int shut_pending, shut;        /* write_eof(): shutdown(SHUT_WR) once pending is sent; done */
    int eof;                       /* the client's FIN was read (and handed to eof_received) */
} TransportObject;

typedef struct {
    PyObject_HEAD
    int kind;
    int fd;
    PollerObject *poller;
    PyObject *factory;             /* () -> protocol */
} ListenerObject;

struct PollerObject {
    PyObject_HEAD
    int epfd;
    PyObject *loop;
    PyObject *on_error;            /* (what: str, exc) -> None: a callback raised */
    PyObject *live;                /* set of Transports */
    PyObject *graveyard;           /* list: closed during the current batch */
    PyObject *listeners;           /* list of Listeners */
    int in_batch;
};

static PyTypeObject TransportType, ListenerType, PollerType;

/* ------------------------------------------------------------------ helpers */

/* the exception being raised, normalized, with its traceback (and the error indicator cleared) */
static PyObject *fetch_exception(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) return NULL;
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) PyException_SetTraceback(value, tb);
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

/* a callback raised: hand the exception to the poller's on_error (which logs it) */
static void report(PollerObject *poller, const char *what) {
    PyObject *exc = fetch_exception();
    PyObject *res = NULL;
    if (poller->on_error != NULL && poller->on_error != Py_None) {
        PyObject *w = PyUnicode_FromString(what);
        if (w != NULL) {
            res = PyObject_CallFunctionObjArgs(poller->on_error, w, exc ? exc : Py_None, NULL);
            Py_DECREF(w);
        }
    }
    if (res == NULL) PyErr_WriteUnraisable(exc ? exc : Py_None);
    Py_XDECREF(res);
    Py_XDECREF(exc);
}

static PyObject *peer_tuple(struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, ntohs(a->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        return Py_BuildValue("(siII)", host, ntohs(a->sin6_port), ntohl(a->sin6_flowinfo), a->sin6_scope_id);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------ Transport */

static void transport_lose(TransportObject *t, PyObject *exc) {
    if (t->closed) return;
    t->closed = t->closing = 1;
    t->pending_len = t->pending_off = 0;
    PollerObject *poller = t->poller;
    close(t->fd);                      /* takes it out of the epoll set too */
    Py_INCREF(t);                      /* until the end of this function */
    if (poller->in_batch) {
        if (PyList_Append(poller->graveyard, (PyObject *)t) < 0) report(poller, "graveyard");
    }
    if (PySet_Discard(poller->live, (PyObject *)t) < 0) report(poller, "live set");
    if (t->protocol != NULL) {
        PyObject *lost = PyObject_GetAttr(t->protocol, s_connection_lost);
        PyObject *res = NULL;
        if (lost != NULL) {
            res = PyObject_CallMethodObjArgs(poller->loop, s_call_soon, lost, exc ? exc : Py_None, NULL);
            Py_DECREF(lost);
        }
        if (res == NULL) report(poller, "connection_lost");
        Py_XDECREF(res);
        Py_CLEAR(t->protocol);
    }
    Py_DECREF(t);
}

/* an OSError for errno, as the socket module would raise it */
static PyObject *errno_exception(int err) {
    errno = err;
    PyErr_SetFromErrno(PyExc_OSError);
    return fetch_exception();
}

static void transport_lose_errno(TransportObject *t, int err) {
    PyObject *exc = errno_exception(err);
    transport_lose(t, exc);
    Py_XDECREF(exc);
}

static void transport_read(TransportObject *t) {
    while (!t->closed && !t->paused) {
        ssize_t n = recv(t->fd, read_buffer, READ_SIZE, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR) continue;
            transport_lose_errno(t, errno);
            return;
        }
        if (n == 0) {                  /* the client's FIN: the protocol decides, once */
            if (t->closing || t->eof) return;
            t->eof = 1;
            PyObject *keep = PyObject_CallMethodNoArgs(t->protocol, s_eof_received);
            int keep_open = 0;
            if (keep == NULL) report(t->poller, "eof_received");
            else {
                keep_open = PyObject_IsTrue(keep);
                Py_DECREF(keep);
                if (keep_open < 0) { report(t->poller, "eof_received"); keep_open = 0; }
            }
            if (!keep_open && !t->closing) {
                t->closing = 1;
                if (t->pending_len == t->pending_off) transport_lose(t, NULL);
            }
            return;
        }
        PyObject *data = PyBytes_FromStringAndSize(read_buffer, n);
        if (data == NULL) { report(t->poller, "read"); transport_lose(t, NULL); return; }
        Py_INCREF(t);
        PyObject *res = PyObject_CallMethodOneArg(t->protocol, s_data_received, data);
        Py_DECREF(data);
        if (res == NULL) {
            report(t->poller, "data_received");
            transport_lose(t, NULL);
        }
        Py_XDECREF(res);
        int stop = n < READ_SIZE || t->closed;
        if (!stop && t->paused) t->unread = 1;
        Py_DECREF(t);
        if (stop) return;              /* drained: new bytes bring a new edge */
    }
    if (t->paused) t->unread = 1;
}

static void transport_flush(TransportObject *t) {
    while (t->pending_off < t->pending_len) {
        ssize_t n = send(t->fd, t->pending + t->pending_off, t->pending_len - t->pending_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == EINTR) continue;
            transport_lose_errno(t, errno);
            return;
        }
        t->pending_off += n;
    }
    if (t->pending_off == t->pending_len) {
        t->pending_off = t->pending_len = 0;
        if (t->shut_pending && !t->shut) {
            t->shut = 1;
            shutdown(t->fd, SHUT_WR);
        }
    }
    if (t->write_paused && t->pending_len - t->pending_off <= LOW_WATER) {
        t->write_paused = 0;
        if (t->protocol != NULL) {
            PyObject *res = PyObject_CallMethodNoArgs(t->protocol, s_resume_writing);
            if (res == NULL) report(t->poller, "resume_writing");
            Py_XDECREF(res);
        }
    }
    if (t->pending_len == 0 && t->closing) transport_lose(t, NULL);
}

static void transport_event(TransportObject *t, uint32_t events) {
    if (t->closed) return;
    if ((events & EPOLLOUT) && t->pending_len > t->pending_off) transport_flush(t);
    if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)) && !t->closed) {
        if (t->paused) t->unread = 1;
        else transport_read(t);
    }
}

static int pending_add(TransportObject *t, const char *data, Py_ssize_t n) {
    if (t->pending_off && t->pending_off == t->pending_len) t->pending_off = t->pending_len = 0;
    if (t->pending_len + n > t->pending_cap) {
        if (t->pending_off) {          /* move the unsent rest to the front first */
            memmove(t->pending, t->pending + t->pending_off, t->pending_len - t->pending_off);
            t->pending_len -= t->pending_off;
            t->pending_off = 0;
        }
        if (t->pending_len + n > t->pending_cap) {
            Py_ssize_t cap = (t->pending_len + n) * 2;
            char *b = PyMem_Realloc(t->pending, cap);
            if (b == NULL) { PyErr_NoMemory(); return -1; }
            t->pending = b;
            t->pending_cap = cap;
        }
    }
    memcpy(t->pending + t->pending_len, data, n);
    t->pending_len += n;
    return 0;
}

static PyObject *transport_write(TransportObject *t, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    if (t->closing || t->closed || t->shut_pending || view.len == 0) { PyBuffer_Release(&view); Py_RETURN_NONE; }
    const char *data = view.buf;
    Py_ssize_t n = view.len, sent = 0;
    if (++t->writes == 2) {
        int one = 1;
        setsockopt(t->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (t->pending_len == t->pending_off) {
        while (sent < n) {
            ssize_t r = send(t->fd, data + sent, n - sent, MSG_NOSIGNAL);
            if (r < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) break;
                int err = errno;
                PyBuffer_Release(&view);
                transport_lose_errno(t, err);
                Py_RETURN_NONE;
            }
            sent += r;
        }
    }
    int failed = sent < n ? pending_add(t, data + sent, n - sent) : 0;
    PyBuffer_Release(&view);
    if (failed) return NULL;
    if (!t->write_paused && t->pending_len - t->pending_off > HIGH_WATER && t->protocol != NULL) {
        t->write_paused = 1;
        PyObject *res = PyObject_CallMethodNoArgs(t->protocol, s_pause_writing);
        if (res == NULL) report(t->poller, "pause_writing");
        Py_XDECREF(res);
    }
    Py_RETURN_NONE;
}

static PyObject *transport_writelines(TransportObject *t, PyObject *arg) {
    PyObject *it = PyObject_GetIter(arg), *item;
    if (it == NULL) return NULL;
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *r = transport_write(t, item);
        Py_DECREF(item);
        if (r == NULL) { Py_DECREF(it); return NULL; }
        Py_DECREF(r);
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return NULL;
    Py_RETURN_NONE;
}

static PyObject *transport_close(TransportObject *t, PyObject *unused) {
    if (!t->closing && !t->closed) {
        t->closing = 1;
        if (t->pending_len == t->pending_off) transport_lose(t, NULL);
    }
    Py_RETURN_NONE;
}

/* write_eof(): our FIN after what is pending (half-close; reading goes on) */
static PyObject *transport_write_eof(TransportObject *t, PyObject *unused) {
    if (t->closing || t->closed || t->shut_pending) Py_RETURN_NONE;
    t->shut_pending = 1;
    if (t->pending_len == t->pending_off) {
        t->shut = 1;
        shutdown(t->fd, SHUT_WR);
    }
    Py_RETURN_NONE;
}

static PyObject *transport_can_write_eof(TransportObject *t, PyObject *unused) {
    Py_RETURN_TRUE;
}

static PyObject *transport_abort(TransportObject *t, PyObject *unused) {
    transport_lose(t, NULL);
    Py_RETURN_NONE;
}

static PyObject *transport_is_closing(TransportObject *t, PyObject *unused) {
    return PyBool_FromLong(t->closing || t->closed);
}

static PyObject *transport_pause_reading(TransportObject *t, PyObject *unused) {
    t->paused = 1;
    Py_RETURN_NONE;
}

static PyObject *transport_read_again(TransportObject *t, PyObject *unused) {
    if (!t->closed && !t->paused) transport_read(t);
    Py_RETURN_NONE;
}

static PyObject *transport_resume_reading(TransportObject *t, PyObject *unused) {
    if (t->paused) {
        t->paused = 0;
        if (t->unread && !t->closed) {  /* the edge came while paused: read soon */
            t->unread = 0;
            PyObject *again = PyObject_GetAttrString((PyObject *)t, "_read_again");
            if (again == NULL) return NULL;
            PyObject *res = PyObject_CallMethodOneArg(t->poller->loop, s_call_soon, again);
            Py_DECREF(again);
            if (res == NULL) return NULL;
            Py_DECREF(res);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *transport_is_reading(TransportObject *t, PyObject *unused) {
    return PyBool_FromLong(!t->paused && !t->closed);
}

static PyObject *transport_get_write_buffer_size(TransportObject *t, PyObject *unused) {
    return PyLong_FromSsize_t(t->pending_len - t->pending_off);
}

static PyObject *transport_get_extra_info(TransportObject *t, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "get_extra_info(name, default=None)");
        return NULL;
    }
    PyObject *dflt = nargs == 2 ? args[1] : Py_None;
    int eq = PyObject_RichCompareBool(args[0], s_peername, Py_EQ);
    if (eq < 0) return NULL;
    if (eq) return Py_NewRef(t->peer);
    eq = PyObject_RichCompareBool(args[0], s_sockname, Py_EQ);
    if (eq < 0) return NULL;
    if (eq && !t->closed) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        if (getsockname(t->fd, (struct sockaddr *)&ss, &len) == 0) return peer_tuple(&ss);
    }
    return Py_NewRef(dflt);
}

static PyObject *transport_get_protocol(TransportObject *t, PyObject *unused) {
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *transport_set_protocol(TransportObject *t, PyObject *protocol) {
    if (!t->closed) Py_XSETREF(t->protocol, Py_NewRef(protocol));
    Py_RETURN_NONE;
}

static int transport_traverse(TransportObject *t, visitproc visit, void *arg) {
    Py_VISIT(t->poller);
    Py_VISIT(t->protocol);
    Py_VISIT(t->peer);
    return 0;
}

static int transport_clear(TransportObject *t) {
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->peer);
    Py_CLEAR(t->poller);
    return 0;
}

static void transport_dealloc(TransportObject *t) {
    PyObject_GC_UnTrack(t);
    if (!t->closed && t->fd >= 0) close(t->fd);   /* not reached while the poller holds it */
    transport_clear(t);
    PyMem_Free(t->pending);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

static PyMethodDef transport_methods[] = {
    {"write", (PyCFunction)transport_write, METH_O, NULL},
    {"writelines", (PyCFunction)transport_writelines, METH_O, NULL},
    {"close", (PyCFunction)transport_close, METH_NOARGS, NULL},
    {"abort", (PyCFunction)transport_abort, METH_NOARGS, NULL},
    {"write_eof", (PyCFunction)transport_write_eof, METH_NOARGS, NULL},
    {"can_write_eof", (PyCFunction)transport_can_write_eof, METH_NOARGS, NULL},
    {"is_closing", (PyCFunction)transport_is_closing, METH_NOARGS, NULL},
    {"pause_reading", (PyCFunction)transport_pause_reading, METH_NOARGS, NULL},
    {"resume_reading", (PyCFunction)transport_resume_reading, METH_NOARGS, NULL},
    {"is_reading", (PyCFunction)transport_is_reading, METH_NOARGS, NULL},
    {"_read_again", (PyCFunction)transport_read_again, METH_NOARGS, NULL},
    {"get_write_buffer_size", (PyCFunction)transport_get_write_buffer_size, METH_NOARGS, NULL},
    {"get_extra_info", (PyCFunction)(void (*)(void))transport_get_extra_info, METH_FASTCALL, NULL},
    {"get_protocol", (PyCFunction)transport_get_protocol, METH_NOARGS, NULL},
    {"set_protocol", (PyCFunction)transport_set_protocol, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject TransportType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeway.http._rawio.Transport",
    .tp_basicsize = sizeof(TransportObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "An accepted client socket in a Poller (made by a Listener).",
    .tp_traverse = (traverseproc)transport_traverse,
    .tp_clear = (inquiry)transport_clear,
    .tp_dealloc = (destructor)transport_dealloc,
    .tp_methods = transport_methods,
};

/* ------------------------------------------------------------------ Listener */

/* on_error(listener, OSError) for a failed accept (EMFILE...): the Python side pauses the
 * listener for a moment; on_error(what, exception) for a callback that raised. */
static void listener_event(ListenerObject *l) {
    PollerObject *poller = l->poller;
    int i;
    for (i = 0; i < ACCEPTS && l->fd >= 0; i++) {
        struct sockaddr_storage ss;
        socklen_t len = sizeof ss;
        int fd = accept4(l->fd, (struct sockaddr *)&ss, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
            /* EMFILE, ENFILE, ENOBUFS, ...: the Python side pauses accepting for a while */
            PyObject *exc = errno_exception(errno);
            PyObject *res = PyObject_CallFunctionObjArgs(poller->on_error, (PyObject *)l, exc, NULL);
            if (res == NULL) PyErr_WriteUnraisable((PyObject *)l);
            Py_XDECREF(res);
            Py_XDECREF(exc);
            return;
        }
        TransportObject *t = PyObject_GC_New(TransportObject, &TransportType);
        if (t == NULL) { close(fd); report(poller, "accept"); return; }
        t->kind = KIND_TRANSPORT;
        t->fd = fd;
        t->poller = (PollerObject *)Py_NewRef(poller);
        t->protocol = NULL;
        t->peer = NULL;
        t->pending = NULL;
        t->pending_len = t->pending_cap = t->pending_off = 0;
        t->closing = t->closed = t->paused = t->unread = t->write_paused = t->writes = 0;
        t->shut_pending = t->shut = t->eof = 0;
        PyObject_GC_Track(t);
        t->peer = peer_tuple(&ss);
        t->protocol = t->peer ? PyObject_CallNoArgs(l->factory) : NULL;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = t};
        if (t->protocol == NULL || PySet_Add(poller->live, (PyObject *)t) < 0) {
            report(poller, "protocol factory");
            t->closed = 1;
            close(fd);
            Py_DECREF(t);
            continue;
        }
        if (epoll_ctl(poller->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            t->closed = 1;
            close(fd);
            PySet_Discard(poller->live, (PyObject *)t);
            Py_DECREF(t);
            continue;
        }
        PyObject *res = PyObject_CallMethodOneArg(t->protocol ? t->protocol : Py_None, s_connection_made,
                                                  (PyObject *)t);
        if (res == NULL) {
            report(poller, "connection_made");
            transport_lose(t, NULL);
        }
        Py_XDECREF(res);
        Py_DECREF(t);                  /* the live set holds it */
    }
}

static PyObject *listener_pause(ListenerObject *l, PyObject *unused) {
    struct epoll_event ev = {.events = 0, .data.ptr = l};
    if (l->fd >= 0 && epoll_ctl(l->poller->epfd, EPOLL_CTL_MOD, l->fd, &ev) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyObject *listener_resume(ListenerObject *l, PyObject *unused) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    if (l->fd >= 0 && epoll_ctl(l->poller->epfd, EPOLL_CTL_MOD, l->fd, &ev) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static int listener_traverse(ListenerObject *l, visitproc visit, void *arg) {
    Py_VISIT(l->poller);
    Py_VISIT(l->factory);
    return 0;
}

static int listener_clear(ListenerObject *l) {
    Py_CLEAR(l->poller);
    Py_CLEAR(l->factory);
    return 0;
}

static void listener_dealloc(ListenerObject *l) {
    PyObject_GC_UnTrack(l);
    listener_clear(l);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static PyMethodDef listener_methods[] = {
    {"pause", (PyCFunction)listener_pause, METH_NOARGS, "stop accepting (until resume)"},
    {"resume", (PyCFunction)listener_resume, METH_NOARGS, "accept again"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ListenerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeway.http._rawio.Listener",
    .tp_basicsize = sizeof(ListenerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "A listening socket in a Poller (made by Poller.listen).",
    .tp_traverse = (traverseproc)listener_traverse,
    .tp_clear = (inquiry)listener_clear,
    .tp_dealloc = (destructor)listener_dealloc,
    .tp_methods = listener_methods,
};

/* ------------------------------------------------------------------ Poller */

static PyObject *poller_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *loop, *on_error;
    if (!PyArg_ParseTuple(args, "OO", &loop, &on_error)) return NULL;
    PollerObject *p = (PollerObject *)type->tp_alloc(type, 0);
    if (p == NULL) return NULL;
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->loop = Py_NewRef(loop);
    p->on_error = Py_NewRef(on_error);
    p->live = PySet_New(NULL);
    p->graveyard = PyList_New(0);
    p->listeners = PyList_New(0);
    if (p->epfd < 0) { PyErr_SetFromErrno(PyExc_OSError); Py_DECREF(p); return NULL; }
    if (!p->live || !p->graveyard || !p->listeners) { Py_DECREF(p); return NULL; }
    return (PyObject *)p;
}

static PyObject *poller_ready(PollerObject *p, PyObject *unused) {
    struct epoll_event events[BATCH];
    if (p->epfd < 0) Py_RETURN_NONE;
    int n = epoll_wait(p->epfd, events, BATCH, 0), i;
    if (n <= 0) Py_RETURN_NONE;
    p->in_batch = 1;
    for (i = 0; i < n; i++) {
        PyObject *o = events[i].data.ptr;
        if (((TransportObject *)o)->kind == KIND_TRANSPORT) transport_event((TransportObject *)o, events[i].events);
        else listener_event((ListenerObject *)o);
    }
    p->in_batch = 0;
    if (PyList_GET_SIZE(p->graveyard) && PyList_SetSlice(p->graveyard, 0, PY_SSIZE_T_MAX, NULL) < 0) return NULL;
    Py_RETURN_NONE;
}

/* listen(fd, factory) -> Listener: watch an already listening socket (the caller keeps it) */
static PyObject *poller_listen(PollerObject *p, PyObject *args) {
    int fd;
    PyObject *factory;
    if (!PyArg_ParseTuple(args, "iO", &fd, &factory)) return NULL;
    ListenerObject *l = PyObject_GC_New(ListenerObject, &ListenerType);
    if (l == NULL) return NULL;
    l->kind = KIND_LISTENER;
    l->fd = fd;
    l->poller = (PollerObject *)Py_NewRef(p);
    l->factory = Py_NewRef(factory);
    PyObject_GC_Track(l);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    if (epoll_ctl(p->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        Py_DECREF(l);
        return NULL;
    }
    if (PyList_Append(p->listeners, (PyObject *)l) < 0) { Py_DECREF(l); return NULL; }
    return (PyObject *)l;
}

/* unlisten(listener): stop watching its socket (before the caller closes it) */
static PyObject *poller_unlisten(PollerObject *p, PyObject *arg) {
    if (!PyObject_TypeCheck(arg, &ListenerType)) {
        PyErr_SetString(PyExc_TypeError, "unlisten(listener)");
        return NULL;
    }
    ListenerObject *l = (ListenerObject *)arg;
    if (l->fd >= 0 && p->epfd >= 0) epoll_ctl(p->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    l->fd = -1;
    /* an event of the current batch may still name it: kept until the batch is done */
    if (PyList_Append(p->graveyard, arg) < 0) return NULL;
    Py_ssize_t i = 0;
    for (; i < PyList_GET_SIZE(p->listeners); i++) {
        if (PyList_GET_ITEM(p->listeners, i) == arg) {
            if (PyList_SetSlice(p->listeners, i, i + 1, NULL) < 0) return NULL;
            break;
        }
    }
    Py_RETURN_NONE;
}

static PyObject *poller_fileno(PollerObject *p, PyObject *unused) {
    return PyLong_FromLong(p->epfd);
}

static PyObject *poller_connections(PollerObject *p, PyObject *unused) {
    return PyLong_FromSsize_t(PySet_GET_SIZE(p->live));
}

/* close(): abort every connection still open (what is unsent is dropped) and the epoll set */
static PyObject *poller_close(PollerObject *p, PyObject *unused) {
    PyObject *live = PySequence_List(p->live);
    if (live == NULL) return NULL;
    Py_ssize_t i;
    for (i = 0; i < PyList_GET_SIZE(live); i++) transport_lose((TransportObject *)PyList_GET_ITEM(live, i), NULL);
    Py_DECREF(live);
    for (i = 0; i < PyList_GET_SIZE(p->listeners); i++) ((ListenerObject *)PyList_GET_ITEM(p->listeners, i))->fd = -1;
    /* closed by a callback during ready(): the batch's later events may still name these */
    Py_ssize_t dead = PyList_GET_SIZE(p->graveyard);
    if (p->in_batch && PyList_SetSlice(p->graveyard, dead, dead, p->listeners) < 0) return NULL;
    if (PyList_SetSlice(p->listeners, 0, PY_SSIZE_T_MAX, NULL) < 0) return NULL;
    if (!p->in_batch && PyList_SetSlice(p->graveyard, 0, PY_SSIZE_T_MAX, NULL) < 0) return NULL;
    if (p->epfd >= 0) { close(p->epfd); p->epfd = -1; }
    Py_RETURN_NONE;
}

static int poller_traverse(PollerObject *p, visitproc visit, void *arg) {
    Py_VISIT(p->loop);
    Py_VISIT(p->on_error);
    Py_VISIT(p->live);
    Py_VISIT(p->graveyard);
    Py_VISIT(p->listeners);
    return 0;
}

static int poller_clear(PollerObject *p) {
    Py_CLEAR(p->loop);
    Py_CLEAR(p->on_error);
    Py_CLEAR(p->live);
    Py_CLEAR(p->graveyard);
    Py_CLEAR(p->listeners);
    return 0;
}

static void poller_dealloc(PollerObject *p) {
    PyObject_GC_UnTrack(p);
    if (p->epfd >= 0) close(p->epfd);
    poller_clear(p);
    Py_TYPE(p)->tp_free((PyObject *)p);
}

static PyMethodDef poller_methods[] = {
    {"ready", (PyCFunction)poller_ready, METH_NOARGS, "handle what epoll reports (the loop's reader callback)"},
    {"listen", (PyCFunction)poller_listen, METH_VARARGS, "listen(fd, factory) -> Listener"},
    {"unlisten", (PyCFunction)poller_unlisten, METH_O, "unlisten(listener)"},
    {"fileno", (PyCFunction)poller_fileno, METH_NOARGS, "the epoll descriptor"},
    {"connections", (PyCFunction)poller_connections, METH_NOARGS, "how many connections are open"},
    {"close", (PyCFunction)poller_close, METH_NOARGS, "abort every connection, close the epoll set"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PollerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "edgeway.http._rawio.Poller",
    .tp_basicsize = sizeof(PollerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Poller(loop, on_error): an epoll set of listening and accepted sockets.",
    .tp_new = poller_new,
    .tp_traverse = (traverseproc)poller_traverse,
    .tp_clear = (inquiry)poller_clear,
    .tp_dealloc = (destructor)poller_dealloc,
    .tp_methods = poller_methods,
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "edgeway.http._rawio",
                                    "Plain-HTTP client sockets in an epoll set of our own (see rawio.py).",
                                    -1, NULL, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__rawio(void) {
#define INTERN(var, text) if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(s_data_received, "data_received");
    INTERN(s_eof_received, "eof_received");
    INTERN(s_connection_made, "connection_made");
    INTERN(s_connection_lost, "connection_lost");
    INTERN(s_pause_writing, "pause_writing");
    INTERN(s_resume_writing, "resume_writing");
    INTERN(s_call_soon, "call_soon");
    INTERN(s_peername, "peername");
    INTERN(s_sockname, "sockname");
    if (PyType_Ready(&TransportType) < 0 || PyType_Ready(&ListenerType) < 0 || PyType_Ready(&PollerType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Poller", (PyObject *)&PollerType) < 0 ||
        PyModule_AddObjectRef(m, "Transport", (PyObject *)&TransportType) < 0 ||
        PyModule_AddObjectRef(m, "Listener", (PyObject *)&ListenerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
