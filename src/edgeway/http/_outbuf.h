/* A growing byte buffer for the compiled parts that render text (_headscan.c, _logfmt.c). */
#ifndef EDGEWAY_OUTBUF_H
#define EDGEWAY_OUTBUF_H
#include <Python.h>
#include <string.h>

typedef struct { char *buf; Py_ssize_t len, cap; } out_t;

/* append n bytes (0, or -1 with MemoryError set); free o->buf with PyMem_Free when done */
static int out_put(out_t *o, const char *s, Py_ssize_t n) {
    if (o->len + n > o->cap) {
        Py_ssize_t cap = (o->len + n) * 2 + 64;
        char *b = PyMem_Realloc(o->buf, cap);
        if (b == NULL) { PyErr_NoMemory(); return -1; }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, n);
    o->len += n;
    return 0;
}
#endif
