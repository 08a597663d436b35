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

/* The length of the strict UTF-8 sequence (RFC 3629: no overlong forms, no surrogates,
 * nothing above U+10FFFF) that starts at p, at most room bytes, and its code point; 0 if
 * there is none. Both directions take only what libbson and JSON readers agree on. */
static inline size_t utf8_sequence(const unsigned char *p, size_t room, uint32_t *code) {
    unsigned char c = p[0];
    uint32_t cp;
    size_t len;
    if (c >= 0xC2 && c <= 0xDF) { cp = c & 0x1F; len = 2; }
    else if (c >= 0xE0 && c <= 0xEF) { cp = c & 0x0F; len = 3; }
    else if (c >= 0xF0 && c <= 0xF4) { cp = c & 0x07; len = 4; }
    else return 0;
    if (room < len) return 0;
    for (size_t k = 1; k < len; k++) {
        if ((p[k] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[k] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    *code = cp;
    return len;
}

/* "%.20g" with libbson's ".0" for integral values: the canonical text of a finite double. */
int format_double(double value, char *text, size_t size);
/* A Decimal128 (16 bytes, little-endian) as libbson writes it, or 0 (NaN, infinities,
 * coefficients above 10^34 - 1). */
int put_decimal(Out *out, const unsigned char *p);
int sorted_regex_options(const unsigned char *options, size_t n);

PyObject *decode_lines(PyObject *self, PyObject *args);
#endif
