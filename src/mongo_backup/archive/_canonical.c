/*
 * Canonical Extended JSON for the common BSON types, a whole batch per call.
 *
 * Why this exists: python-bsonjs converts one document per call, and for small
 * documents the Python loop around it, the str object it returns and the re-encoding
 * to UTF-8 cost as much as libbson's conversion itself. This converter writes the
 * lines of a whole batch into one buffer with the GIL released, so the reader thread
 * keeps reading while it runs.
 *
 * Contract (archive/extjson.py relies on it, tests/archive/test_canonical_accel.py
 * checks it against python-bsonjs with generated documents):
 * - encode_batch(batch, start) converts the documents of `batch` from byte offset
 *   `start` on and returns (text, documents, stop). `text` is, for each converted
 *   document, exactly the bytes of bsonjs.dumps(doc, mode=CANONICAL) encoded as UTF-8,
 *   with U+0085, U+2028 and U+2029 written as \uXXXX escapes, followed by "\n".
 * - It stops at the first document it does not convert exactly and returns its offset
 *   as `stop` (== len(batch) when all were converted). It never guesses: malformed
 *   BSON, a key starting with "$" (may look like a type wrapper), a key or string that
 *   is not strict UTF-8 or holds a NUL, NaN, a bool byte other than 0 or 1, binary
 *   subtype 2, array keys other than "0", "1", ..., regex options that libbson would
 *   sort or drop, a Decimal128 that is NaN, infinite or non-canonical, nesting deeper
 *   than 100 and the rare types (code, symbol, dbpointer, undefined, min/max key) all
 *   stop it. The caller converts that one document on the libbson path, which also
 *   decides about escape lines. What it does convert round-trips byte for byte, so
 *   that path would never have escaped it.
 */
#include "_canonical.h"

int out_grow(Out *out, size_t more) {
    size_t cap = out->cap ? out->cap : 4096;
    while (cap < out->len + more) cap *= 2;
    char *data = realloc(out->data, cap);
    if (!data) {
        out->failed = 1;
        return 0;
    }
    out->data = data;
    out->cap = cap;
    return 1;
}

static uint32_t u32(const unsigned char *p) {
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

static uint64_t u64(const unsigned char *p) { return (uint64_t)u32(p) | ((uint64_t)u32(p + 4) << 32); }

static const char HEX[] = "0123456789abcdef";

/* A quoted JSON string as libbson writes it, or 0 if the text is not strict UTF-8
 * (overlong forms, surrogates, > U+10FFFF) or holds a NUL. */
static int put_string(Out *out, const unsigned char *s, size_t n) {
    if (!out_reserve(out, n * 6 + 2)) return 0;
    char *w = out->data + out->len;
    *w++ = '"';
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *w++ = (char)c;
            i++;
            continue;
        }
        if (c < 0x80) {
            *w++ = '\\';
            switch (c) {
            case '"': *w++ = '"'; break;
            case '\\': *w++ = '\\'; break;
            case '\b': *w++ = 'b'; break;
            case '\f': *w++ = 'f'; break;
            case '\n': *w++ = 'n'; break;
            case '\r': *w++ = 'r'; break;
            case '\t': *w++ = 't'; break;
            default:
                if (c == 0) return 0;
                *w++ = 'u'; *w++ = '0'; *w++ = '0';
                *w++ = HEX[c >> 4]; *w++ = HEX[c & 15];
            }
            i++;
            continue;
        }
        uint32_t cp;
        size_t len = utf8_sequence(s + i, n - i, &cp);
        if (!len) return 0;
        if (cp == 0x85 || cp == 0x2028 || cp == 0x2029) {
            /* Line breaks to str.splitlines and some JSON Lines readers. */
            *w++ = '\\'; *w++ = 'u';
            *w++ = HEX[(cp >> 12) & 15]; *w++ = HEX[(cp >> 8) & 15];
            *w++ = HEX[(cp >> 4) & 15]; *w++ = HEX[cp & 15];
        } else {
            memcpy(w, s + i, len);
            w += len;
        }
        i += len;
    }
    *w++ = '"';
    out->len = (size_t)(w - out->data);
    return 1;
}

static int put_int(Out *out, const char *prefix, long long value, const char *suffix) {
    char buffer[96];
    int n = snprintf(buffer, sizeof buffer, "%s%lld%s", prefix, value, suffix);
    return put(out, buffer, (size_t)n);
}

int format_double(double value, char *text, size_t size) {
    int n = snprintf(text, size, "%.20g", value);
    /* libbson appends ".0" so that 3.0 does not read back as an integer. */
    if (strspn(text, "0123456789-") == (size_t)n && (size_t)n + 2 < size) {
        memcpy(text + n, ".0", 3);
        n += 2;
    }
    return n;
}

static int put_double(Out *out, double value) {
    if (value != value) return 0; /* NaN: payload and sign are lost in JSON */
    if (value == 1.0 / 0.0) return PUT(out, "{ \"$numberDouble\" : \"Infinity\" }");
    if (value == -1.0 / 0.0) return PUT(out, "{ \"$numberDouble\" : \"-Infinity\" }");
    char number[64];
    int n = format_double(value, number, sizeof number);
    return PUT(out, "{ \"$numberDouble\" : \"") && put(out, number, (size_t)n) && PUT(out, "\" }");
}

static int put_base64(Out *out, const unsigned char *p, size_t n) {
    static const char ALPHABET[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!out_reserve(out, (n + 2) / 3 * 4)) return 0;
    char *w = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        *w++ = ALPHABET[v >> 18]; *w++ = ALPHABET[(v >> 12) & 63];
        *w++ = ALPHABET[(v >> 6) & 63]; *w++ = ALPHABET[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        *w++ = ALPHABET[v >> 18]; *w++ = ALPHABET[(v >> 12) & 63]; *w++ = '='; *w++ = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        *w++ = ALPHABET[v >> 18]; *w++ = ALPHABET[(v >> 12) & 63];
        *w++ = ALPHABET[(v >> 6) & 63]; *w++ = '=';
    }
    out->len = (size_t)(w - out->data);
    return 1;
}

/* A Decimal128 as libbson's bson_decimal128_to_string writes it (the BSON Decimal128
 * specification's to-string algorithm), or 0 for NaN, infinities and coefficients
 * above 10^34 - 1, which libbson reads as zero (the exact-bytes path handles those). */
int put_decimal(Out *out, const unsigned char *p) {
    uint64_t low = u64(p), high = u64(p + 8);
    if (((high >> 61) & 3) == 3) return 0; /* combination 11xxx */
    int exponent = (int)((high >> 49) & 0x3FFF) - 6176;
    unsigned __int128 coefficient = ((unsigned __int128)(high & 0x1FFFFFFFFFFFFULL) << 64) | low;
    const unsigned __int128 largest =
        (unsigned __int128)1000000000000000000ULL * 10000000000000000ULL - 1;
    if (coefficient > largest) return 0;
    char reversed[40], digits[40];
    int n = 0;
    /* 128-bit divisions are slow: one splits off the low 19 digits, 64-bit ones do the rest. */
    uint64_t upper = (uint64_t)(coefficient / 10000000000000000000ULL);
    uint64_t lower = (uint64_t)(coefficient % 10000000000000000000ULL);
    if (upper) {
        for (int k = 0; k < 19; k++, lower /= 10) reversed[n++] = (char)('0' + (int)(lower % 10));
        lower = upper;
    }
    do {
        reversed[n++] = (char)('0' + (int)(lower % 10));
        lower /= 10;
    } while (lower);
    for (int k = 0; k < n; k++) digits[k] = reversed[n - 1 - k];
    int scientific = n - 1 + exponent;
    char text[96];
    int w = 0;
    if (high >> 63) text[w++] = '-';
    if (exponent > 0 || scientific < -6) {
        text[w++] = digits[0];
        if (n > 1) {
            text[w++] = '.';
            memcpy(text + w, digits + 1, (size_t)(n - 1));
            w += n - 1;
        }
        w += snprintf(text + w, sizeof text - (size_t)w, "E%+d", scientific);
    } else if (exponent == 0) {
        memcpy(text + w, digits, (size_t)n);
        w += n;
    } else {
        int radix = n + exponent;
        if (radix > 0) {
            memcpy(text + w, digits, (size_t)radix);
            w += radix;
        } else {
            text[w++] = '0';
        }
        text[w++] = '.';
        for (int k = radix; k < 0; k++) text[w++] = '0';
        int from = radix > 0 ? radix : 0;
        memcpy(text + w, digits + from, (size_t)(n - from));
        w += n - from;
    }
    return PUT(out, "{ \"$numberDecimal\" : \"") && put(out, text, (size_t)w) && PUT(out, "\" }");
}

/* Regex options that libbson writes unchanged: distinct flags of "ilmsux" in that order. */
int sorted_regex_options(const unsigned char *options, size_t n) {
    static const char ORDER[] = "ilmsux";
    const char *last = ORDER - 1;
    for (size_t k = 0; k < n; k++) {
        const char *at = memchr(ORDER, options[k], sizeof ORDER - 1);
        if (!at || at <= last) return 0;
        last = at;
    }
    return 1;
}

/* Whether an array key is the element's index in decimal, as libbson writes it back.
 * (No snprintf: it runs for every array element.) */
static int is_index(const unsigned char *key, size_t n, size_t index) {
    if (n == 0 || n > 19 || (key[0] == '0' && n > 1)) return 0;
    size_t value = 0;
    for (size_t k = 0; k < n; k++) {
        if (key[k] < '0' || key[k] > '9') return 0;
        value = value * 10 + (size_t)(key[k] - '0');
    }
    return value == index;
}

static int put_document(Out *out, const unsigned char *p, size_t size, int array, int depth);

/* One value of type `type` at p (at most `room` bytes); its size in *used. */
static int put_value(Out *out, unsigned char type, const unsigned char *p, size_t room,
                     size_t *used, int depth) {
    uint32_t n;
    switch (type) {
    case 0x01: /* double */
        if (room < 8) return 0;
        {
            double value;
            uint64_t bits = u64(p);
            memcpy(&value, &bits, 8);
            *used = 8;
            return put_double(out, value);
        }
    case 0x02: /* string */
        if (room < 5) return 0;
        n = u32(p);
        if (n < 1 || n > room - 4 || p[4 + n - 1] != 0) return 0;
        *used = 4 + (size_t)n;
        return put_string(out, p + 4, n - 1);
    case 0x03: /* document */
    case 0x04: /* array */
        if (room < 5) return 0;
        n = u32(p);
        if (n < 5 || n > room) return 0;
        *used = n;
        return put_document(out, p, n, type == 0x04, depth + 1);
    case 0x05: /* binary */
        if (room < 5) return 0;
        n = u32(p);
        if (n > room - 5 || p[4] == 0x02) return 0; /* subtype 2 carries a second length */
        *used = 5 + (size_t)n;
        {
            char subtype[3] = {HEX[p[4] >> 4], HEX[p[4] & 15], 0};
            return PUT(out, "{ \"$binary\" : { \"base64\" : \"") && put_base64(out, p + 5, n) &&
                   PUT(out, "\", \"subType\" : \"") && put(out, subtype, 2) && PUT(out, "\" } }");
        }
    case 0x07: /* ObjectId */
        if (room < 12) return 0;
        *used = 12;
        {
            char hex[24];
            for (int k = 0; k < 12; k++) {
                hex[2 * k] = HEX[p[k] >> 4];
                hex[2 * k + 1] = HEX[p[k] & 15];
            }
            return PUT(out, "{ \"$oid\" : \"") && put(out, hex, 24) && PUT(out, "\" }");
        }
    case 0x08: /* bool */
        if (room < 1 || p[0] > 1) return 0;
        *used = 1;
        return p[0] ? PUT(out, "true") : PUT(out, "false");
    case 0x09: /* date */
        if (room < 8) return 0;
        *used = 8;
        return put_int(out, "{ \"$date\" : { \"$numberLong\" : \"", (long long)(int64_t)u64(p),
                       "\" } }");
    case 0x0A: /* null */
        *used = 0;
        return PUT(out, "null");
    case 0x0B: /* regex: two C strings */
        {
            const unsigned char *pattern_end = memchr(p, 0, room);
            if (!pattern_end) return 0;
            size_t pattern = (size_t)(pattern_end - p);
            const unsigned char *options_end = memchr(pattern_end + 1, 0, room - pattern - 1);
            if (!options_end) return 0;
            size_t options = (size_t)(options_end - pattern_end - 1);
            if (!sorted_regex_options(pattern_end + 1, options)) return 0;
            *used = pattern + options + 2;
            return PUT(out, "{ \"$regularExpression\" : { \"pattern\" : ") &&
                   put_string(out, p, pattern) && PUT(out, ", \"options\" : ") &&
                   put_string(out, pattern_end + 1, options) && PUT(out, " } }");
        }
    case 0x10: /* int32 */
        if (room < 4) return 0;
        *used = 4;
        return put_int(out, "{ \"$numberInt\" : \"", (long long)(int32_t)u32(p), "\" }");
    case 0x11: /* timestamp: increment first, then seconds */
        if (room < 8) return 0;
        *used = 8;
        {
            char buffer[96];
            int k = snprintf(buffer, sizeof buffer, "{ \"$timestamp\" : { \"t\" : %" PRIu32
                             ", \"i\" : %" PRIu32 " } }", u32(p + 4), u32(p));
            return put(out, buffer, (size_t)k);
        }
    case 0x12: /* int64 */
        if (room < 8) return 0;
        *used = 8;
        return put_int(out, "{ \"$numberLong\" : \"", (long long)(int64_t)u64(p), "\" }");
    case 0x13: /* decimal128 */
        if (room < 16) return 0;
        *used = 16;
        return put_decimal(out, p);
    default:
        return 0;
    }
}

/* A document or array of `size` bytes at p, already known to fit its parent. */
static int put_document(Out *out, const unsigned char *p, size_t size, int array, int depth) {
    if (depth > MAX_DEPTH || size < 5 || p[size - 1] != 0) return 0;
    size_t pos = 4, end = size - 1, members = 0;
    if (!(array ? PUT(out, "[ ") : PUT(out, "{ "))) return 0;
    while (pos < end) {
        unsigned char type = p[pos++];
        const unsigned char *key = p + pos;
        const unsigned char *nul = memchr(key, 0, end - pos);
        if (!nul) return 0;
        size_t key_len = (size_t)(nul - key);
        pos += key_len + 1;
        if (array && !is_index(key, key_len, members)) return 0;
        if (members++ && !PUT(out, ", ")) return 0;
        if (!array) {
            if (key_len && key[0] == '$') return 0; /* may read back as a type wrapper */
            if (!put_string(out, key, key_len) || !PUT(out, " : ")) return 0;
        }
        size_t used = 0;
        if (!put_value(out, type, p + pos, end - pos, &used, depth)) return 0;
        pos += used;
    }
    if (pos != end) return 0;
    /* libbson: "{ }" for an empty top-level document, "{  }" for a nested one. */
    if (members == 0 && depth == 0) return PUT(out, "}");
    return array ? PUT(out, " ]") : PUT(out, " }");
}

static PyObject *encode_batch(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "y*n", &view, &start)) return NULL;
    const unsigned char *batch = view.buf;
    size_t end = (size_t)view.len, pos = start < 0 ? end : (size_t)start;
    if (pos > end) pos = end;
    Out out = {NULL, 0, 0, 0};
    Py_ssize_t documents = 0;
    Py_BEGIN_ALLOW_THREADS
    out_reserve(&out, (end - pos) * 2 + 64);
    while (pos + 5 <= end && !out.failed) {
        uint32_t size = u32(batch + pos);
        if (size < 5 || size > end - pos) break;
        size_t mark = out.len;
        if (!put_document(&out, batch + pos, size, 0, 0) || !PUT(&out, "\n")) {
            out.len = mark; /* this document goes to the libbson path */
            break;
        }
        pos += size;
        documents++;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (out.failed) {
        free(out.data);
        return PyErr_NoMemory();
    }
    PyObject *text = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.len);
    free(out.data);
    if (!text) return NULL;
    return Py_BuildValue("(Nnn)", text, documents, (Py_ssize_t)pos);
}

static PyMethodDef METHODS[] = {
    {"encode_batch", encode_batch, METH_VARARGS,
     "encode_batch(batch, start) -> (text, documents, stop): canonical Extended JSON lines "
     "for the documents from `start` on, stopping at the first one it cannot convert exactly."},
    {"decode_lines", decode_lines, METH_VARARGS,
     "decode_lines(buffer, start, end) -> (documents, stop): raw BSON for the lines of "
     "buffer[start:end] written by encode_batch, stopping at the first other line."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef MODULE = {
    PyModuleDef_HEAD_INIT, "_canonical", NULL, -1, METHODS, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__canonical(void) { return PyModule_Create(&MODULE); }
