/* Shared by the converter's two directions (_canonical.c, _canonical_read.c). */
#ifndef MONGO_BACKUP_CANONICAL_H
#define MONGO_BACKUP_CANONICAL_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 100

typedef struct {
    char *data;
    size_t len;
    size_t cap;
    int failed; /* out of memory */
} Out;

int out_grow(Out *out, size_t more);

/* Inline: both directions call these for every few bytes they write. */
static inline int out_reserve(Out *out, size_t more) {
    return out->len + more <= out->cap || out_grow(out, more);
}

static inline int put(Out *out, const char *text, size_t n) {
    if (!out_reserve(out, n)) return 0;
    memcpy(out->data + out->len, text, n);
    out->len += n;
    return 1;
}
#define PUT(out, literal) put((out), (literal), sizeof(literal) - 1)

/* "%.20g" with libbson's ".0" for integral values: the canonical text of a finite double. */
int format_double(double value, char *text, size_t size);
/* A Decimal128 (16 bytes, little-endian) as libbson writes it, or 0 (NaN, infinities,
 * coefficients above 10^34 - 1). */
int put_decimal(Out *out, const unsigned char *p);
int sorted_regex_options(const unsigned char *options, size_t n);

PyObject *decode_lines(PyObject *self, PyObject *args);
#endif
