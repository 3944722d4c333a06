/* A growing byte buffer for the compiled parts that render text (_headscan.c, _logfmt.c). */
#ifndef EDGEWAY_OUTBUF_H
#define EDGEWAY_OUTBUF_H
#include <Python.h>
#include <string.h>

typedef struct { char *buf; Py_ssize_t len, cap; } out_t;

/* append n bytes (0, or -1 with MemoryError set); free o->buf with PyMem_Free when done */
static int out_put(out_t *o, const char *s, Py_ssize_t n) {
    if (n == 0) return 0;              /* o->buf may still be NULL: NULL + 0 is undefined in C */
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
/* n >= 0 in decimal at p (room for 20 digits); the number of digits written */
static int put_decimal(char *p, unsigned long long n) {
    char digits[20];
    int len = 0, i;
    do { digits[len++] = (char)('0' + n % 10); n /= 10; } while (n);
    for (i = 0; i < len; i++) p[i] = digits[len - 1 - i];
    return len;
}
#endif
