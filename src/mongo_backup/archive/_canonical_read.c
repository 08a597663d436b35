/*
 * The way back: lines of canonical Extended JSON, exactly as encode_batch writes them,
 * to raw BSON documents, a whole buffer of lines per call.
 *
 * Contract (archive/lines.py relies on it, tests/archive/test_canonical_accel.py checks
 * it against python-bsonjs): decode_lines(buffer, start, end) reads the lines of
 * buffer[start:end] (each ends with "\n") and returns (documents, stop): one bytes
 * object of raw BSON per line, the very bytes bsonjs.loads gives for it, and the offset
 * of the first line it did not convert (== end when it converted all). It accepts only
 * the text encode_batch writes (so that encode_batch gives each accepted line back
 * byte for byte): single spaces where it puts them, the escapes it uses, numbers in
 * their canonical spelling, the type wrappers it writes. Anything else (pretty or
 * relaxed text, other tools' JSON, escape lines, keys starting with "$", NaN, a NUL in
 * a string, a Decimal128 that does not read back the same, a blank line) stops it;
 * the caller reads that line with python-bsonjs and its own checks.
 */
#include "_canonical.h"

typedef struct {
    const unsigned char *p; /* next byte to read */
    const unsigned char *end; /* end of the line (its "\n") */
} Text;

static int take(Text *t, const char *literal, size_t n) {
    if ((size_t)(t->end - t->p) < n || memcmp(t->p, literal, n) != 0) return 0;
    t->p += n;
    return 1;
}
#define TAKE(t, literal) take((t), (literal), sizeof(literal) - 1)

static int hex_digit(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* the encoder writes lowercase only */
}

/* A quoted string's contents, decoded to UTF-8 into out (no NUL added). Only what
 * put_string writes is accepted. */
static int read_string(Text *t, Out *out) {
    if (!TAKE(t, "\"")) return 0;
    for (;;) {
        if (t->p >= t->end) return 0;
        unsigned char c = *t->p;
        if (c == '"') {
            t->p++;
            return 1;
        }
        if (c == '\\') {
            if (t->end - t->p < 2) return 0;
            unsigned char e = t->p[1];
            char plain = 0;
            switch (e) {
            case '"': plain = '"'; break;
            case '\\': plain = '\\'; break;
            case 'b': plain = '\b'; break;
            case 'f': plain = '\f'; break;
            case 'n': plain = '\n'; break;
            case 'r': plain = '\r'; break;
            case 't': plain = '\t'; break;
            case 'u': break;
            default: return 0;
            }
            if (plain) {
                if (!put(out, &plain, 1)) return 0;
                t->p += 2;
                continue;
            }
            if (t->end - t->p < 6) return 0;
            uint32_t cp = 0;
            for (int k = 2; k < 6; k++) {
                int d = hex_digit(t->p[k]);
                if (d < 0) return 0;
                cp = (cp << 4) | (uint32_t)d;
            }
            t->p += 6;
            if (cp < 0x20) {
                if (cp == 0 || cp == '\b' || cp == '\f' || cp == '\n' || cp == '\r' || cp == '\t')
                    return 0; /* NUL, or a character with a short escape */
                char byte = (char)cp;
                if (!put(out, &byte, 1)) return 0;
            } else if (cp == 0x85) {
                if (!PUT(out, "\xc2\x85")) return 0;
            } else if (cp == 0x2028 || cp == 0x2029) {
                char bytes[3] = {(char)0xE2, (char)0x80, (char)(cp == 0x2028 ? 0xA8 : 0xA9)};
                if (!put(out, bytes, 3)) return 0;
            } else {
                return 0;
            }
            continue;
        }
        if (c < 0x20) return 0;
        if (c < 0x80) { /* a run of plain ASCII in one copy */
            const unsigned char *run = t->p;
            while (t->p < t->end && *t->p >= 0x20 && *t->p < 0x80 && *t->p != '"' &&
                   *t->p != '\\')
                t->p++;
            if (!put(out, (const char *)run, (size_t)(t->p - run))) return 0;
            continue;
        }
        /* Strict UTF-8, and none of the line breaks the encoder escapes. */
        uint32_t cp;
        size_t len = utf8_sequence(t->p, (size_t)(t->end - t->p), &cp);
        if (!len || cp == 0x85 || cp == 0x2028 || cp == 0x2029) return 0;
        if (!put(out, (const char *)t->p, len)) return 0;
        t->p += len;
    }
}

/* A quoted string holding a number, copied NUL-terminated into text. */
static int read_number_text(Text *t, char *text, size_t size) {
    if (!TAKE(t, "\"")) return 0;
    size_t n = 0;
    while (t->p < t->end && *t->p != '"') {
        /* A NUL would end the C string early: "0\0-61" must not read as "0" (found by
         * the damaged-lines property test). No number text holds a control byte. */
        if (n + 1 >= size || (unsigned char)*t->p < 0x20) return 0;
        text[n++] = (char)*t->p++;
    }
    text[n] = 0;
    return n > 0 && TAKE(t, "\"");
}

/* A decimal integer in printf's spelling (no "+", no leading zeros), within bounds. */
static int parse_integer(const char *text, long long low, unsigned long long high,
                         long long *value) {
    const char *s = text;
    int negative = *s == '-';
    if (negative) s++;
    if (!*s || (*s == '0' && s[1]) || (negative && *s == '0')) return 0;
    unsigned long long magnitude = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return 0;
        unsigned digit = (unsigned)(*s - '0');
        if (magnitude > (ULLONG_MAX - digit) / 10) return 0;
        magnitude = magnitude * 10 + digit;
    }
    if (negative) {
        if (magnitude > (unsigned long long)(-(low + 1)) + 1) return 0;
        *value = magnitude ? -(long long)(magnitude - 1) - 1 : 0;
    } else {
        if (magnitude > high) return 0;
        *value = (long long)magnitude;
    }
    return 1;
}

static int read_integer(Text *t, long long low, unsigned long long high, long long *value) {
    char text[32];
    return read_number_text(t, text, sizeof text) && parse_integer(text, low, high, value);
}

/* An unquoted uint32 (the fields of a $timestamp). */
static int read_u32(Text *t, uint32_t *value) {
    char text[16];
    size_t n = 0;
    while (t->p < t->end && *t->p >= '0' && *t->p <= '9' && n + 1 < sizeof text)
        text[n++] = (char)*t->p++;
    text[n] = 0;
    long long parsed;
    if (!parse_integer(text, 0, 0xFFFFFFFFULL, &parsed)) return 0;
    *value = (uint32_t)parsed;
    return 1;
}

static int put_le(Out *out, uint64_t value, int bytes) {
    char b[8];
    for (int k = 0; k < bytes; k++) b[k] = (char)((value >> (8 * k)) & 0xFF);
    return put(out, b, (size_t)bytes);
}

static int read_double(Text *t, Out *out) {
    char text[48];
    if (!read_number_text(t, text, sizeof text)) return 0;
    double value;
    if (strcmp(text, "Infinity") == 0) value = 1.0 / 0.0;
    else if (strcmp(text, "-Infinity") == 0) value = -1.0 / 0.0;
    else {
        char *rest;
        value = strtod(text, &rest);
        char again[64];
        /* Only the spelling the encoder writes: then the bits are the ones it read. */
        if (*rest || value != value || format_double(value, again, sizeof again) !=
                                           (int)strlen(text) || strcmp(again, text) != 0)
            return 0;
    }
    uint64_t bits;
    memcpy(&bits, &value, 8);
    return put_le(out, bits, 8);
}

/* A Decimal128 from the text put_decimal writes; accepted only if put_decimal writes
 * the same text back for the bits found. */
static int read_decimal(Text *t, Out *out) {
    char text[80];
    if (!read_number_text(t, text, sizeof text)) return 0;
    const char *s = text;
    int negative = *s == '-';
    if (negative) s++;
    unsigned __int128 coefficient = 0;
    int digits = 0, fraction = 0, seen_point = 0;
    for (; *s && *s != 'E'; s++) {
        if (*s == '.') {
            if (seen_point) return 0;
            seen_point = 1;
            continue;
        }
        if (*s < '0' || *s > '9' || ++digits > 34) return 0;
        coefficient = coefficient * 10 + (unsigned)(*s - '0');
        fraction += seen_point;
    }
    long long exponent = 0;
    if (*s == 'E') {
        if (!(s[1] == '+' || s[1] == '-') || !parse_integer(s + 2, 0, 100000, &exponent))
            return 0;
        if (s[1] == '-') exponent = -exponent;
    }
    exponent -= fraction;
    if (digits == 0 || exponent < -6176 || exponent > 6111) return 0;
    uint64_t high = ((uint64_t)negative << 63) | ((uint64_t)(exponent + 6176) << 49) |
                    (uint64_t)(coefficient >> 64);
    uint64_t low = (uint64_t)coefficient;
    unsigned char bits[16];
    for (int k = 0; k < 8; k++) {
        bits[k] = (unsigned char)(low >> (8 * k));
        bits[8 + k] = (unsigned char)(high >> (8 * k));
    }
    char written[160]; /* more than put_decimal ever writes: it never reallocates */
    Out again = {written, 0, sizeof written, 0};
    int same = put_decimal(&again, bits) && again.len == 25 + strlen(text) &&
               memcmp(again.data + 22, text, strlen(text)) == 0;
    return same && put(out, (const char *)bits, 16);
}

/* Base64 digit values, -1 for every other byte. */
static signed char BASE64[256];
static int base64_ready;

static void init_base64(void) {
    static const char ALPHABET[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    memset(BASE64, -1, sizeof BASE64);
    for (int k = 0; k < 64; k++) BASE64[(unsigned char)ALPHABET[k]] = (signed char)k;
    base64_ready = 1;
}

static int read_binary(Text *t, Out *out) {
    if (!TAKE(t, "{ \"base64\" : \"")) return 0;
    const unsigned char *start = t->p;
    while (t->p < t->end && *t->p != '"') t->p++;
    size_t n = (size_t)(t->p - start);
    if (n % 4 || !TAKE(t, "\", \"subType\" : \"") || t->end - t->p < 2) return 0;
    int hi = hex_digit(t->p[0]), lo = hex_digit(t->p[1]);
    if (hi < 0 || lo < 0 || hi * 16 + lo == 2) return 0;
    t->p += 2;
    if (!TAKE(t, "\" } }")) return 0;
    size_t size_at = out->len;
    if (!put_le(out, 0, 4) || !put_le(out, (uint64_t)(hi * 16 + lo), 1)) return 0;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i += 4) {
        int pad = 0;
        if (i + 4 == n && start[i + 3] == '=') pad = start[i + 2] == '=' ? 2 : 1;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            if (k >= 4 - pad) { /* the "=" of the last quad */
                v <<= 6;
                continue;
            }
            int digit = BASE64[start[i + k]];
            if (digit < 0) return 0;
            v = (v << 6) | (uint32_t)digit;
        }
        /* Canonical base64 only: the bits under the padding are zero. */
        if ((pad == 1 && (v & 0xFF)) || (pad == 2 && (v & 0xFFFF))) return 0;
        char b[3] = {(char)(v >> 16), (char)(v >> 8), (char)v};
        if (!put(out, b, (size_t)(3 - pad))) return 0;
        bytes += (size_t)(3 - pad);
    }
    uint32_t size = (uint32_t)bytes;
    for (int k = 0; k < 4; k++) out->data[size_at + (size_t)k] = (char)(size >> (8 * k));
    return 1;
}

/* A string value in BSON: int32 size, bytes, NUL. */
static int read_bson_string(Text *t, Out *out) {
    size_t size_at = out->len;
    if (!put_le(out, 0, 4)) return 0;
    size_t from = out->len;
    if (!read_string(t, out)) return 0;
    if (memchr(out->data + from, 0, out->len - from)) return 0;
    uint32_t size = (uint32_t)(out->len - from + 1);
    for (int k = 0; k < 4; k++) out->data[size_at + (size_t)k] = (char)(size >> (8 * k));
    return PUT(out, "\0");
}

static int read_document(Text *t, Out *out, int array, int depth);

/* One value; its BSON type is written at type_at. */
static int read_value(Text *t, Out *out, size_t type_at, int depth) {
    unsigned char c = t->p < t->end ? *t->p : 0;
    unsigned char type;
    long long number;
    if (c == '"') {
        type = 0x02;
        if (!read_bson_string(t, out)) return 0;
    } else if (c == 't' || c == 'f') {
        type = 0x08;
        if (TAKE(t, "true")) { if (!PUT(out, "\x01")) return 0; }
        else if (!TAKE(t, "false") || !PUT(out, "\0")) return 0;
    } else if (c == 'n') {
        type = 0x0A;
        if (!TAKE(t, "null")) return 0;
    } else if (c == '[') {
        type = 0x04;
        if (!read_document(t, out, 1, depth + 1)) return 0;
    } else if (c != '{') {
        return 0;
    } else if (t->end - t->p < 3 || t->p[1] != ' ' || t->p[2] != '"' ||
               t->end - t->p < 4 || t->p[3] != '$') {
        type = 0x03;
        if (!read_document(t, out, 0, depth + 1)) return 0;
    } else if (TAKE(t, "{ \"$numberInt\" : ")) {
        type = 0x10;
        if (!read_integer(t, INT32_MIN, INT32_MAX, &number) || !TAKE(t, " }") ||
            !put_le(out, (uint64_t)number, 4))
            return 0;
    } else if (TAKE(t, "{ \"$numberLong\" : ")) {
        type = 0x12;
        if (!read_integer(t, INT64_MIN, INT64_MAX, &number) || !TAKE(t, " }") ||
            !put_le(out, (uint64_t)number, 8))
            return 0;
    } else if (TAKE(t, "{ \"$numberDouble\" : ")) {
        type = 0x01;
        if (!read_double(t, out) || !TAKE(t, " }")) return 0;
    } else if (TAKE(t, "{ \"$oid\" : \"")) {
        type = 0x07;
        if (t->end - t->p < 24) return 0;
        char bytes[12];
        for (int k = 0; k < 12; k++) {
            int hi = hex_digit(t->p[2 * k]), lo = hex_digit(t->p[2 * k + 1]);
            if (hi < 0 || lo < 0) return 0;
            bytes[k] = (char)(hi * 16 + lo);
        }
        t->p += 24;
        if (!TAKE(t, "\" }") || !put(out, bytes, 12)) return 0;
    } else if (TAKE(t, "{ \"$date\" : { \"$numberLong\" : ")) {
        type = 0x09;
        if (!read_integer(t, INT64_MIN, INT64_MAX, &number) || !TAKE(t, " } }") ||
            !put_le(out, (uint64_t)number, 8))
            return 0;
    } else if (TAKE(t, "{ \"$numberDecimal\" : ")) {
        type = 0x13;
        if (!read_decimal(t, out) || !TAKE(t, " }")) return 0;
    } else if (TAKE(t, "{ \"$timestamp\" : { \"t\" : ")) {
        type = 0x11;
        uint32_t seconds, increment;
        if (!read_u32(t, &seconds) || !TAKE(t, ", \"i\" : ") || !read_u32(t, &increment) ||
            !TAKE(t, " } }") || !put_le(out, increment, 4) || !put_le(out, seconds, 4))
            return 0;
    } else if (TAKE(t, "{ \"$binary\" : ")) {
        type = 0x05;
        if (!read_binary(t, out)) return 0;
    } else if (TAKE(t, "{ \"$regularExpression\" : { \"pattern\" : ")) {
        type = 0x0B;
        size_t from = out->len;
        if (!read_string(t, out) || memchr(out->data + from, 0, out->len - from) ||
            !PUT(out, "\0") || !TAKE(t, ", \"options\" : "))
            return 0;
        from = out->len;
        if (!read_string(t, out) ||
            !sorted_regex_options((const unsigned char *)out->data + from, out->len - from) ||
            !PUT(out, "\0") || !TAKE(t, " } }"))
            return 0;
    } else {
        return 0; /* another wrapper, or a real subdocument with a "$" key */
    }
    out->data[type_at] = (char)type;
    return 1;
}

/* "{ ... }" or "[ ... ]" as BSON; the top level (depth 0) writes an empty one "{ }". */
static int read_document(Text *t, Out *out, int array, int depth) {
    if (depth > MAX_DEPTH) return 0;
    size_t size_at = out->len;
    if (!put_le(out, 0, 4)) return 0;
    if (!(array ? TAKE(t, "[ ") : TAKE(t, "{ "))) return 0;
    int empty = depth == 0 ? TAKE(t, "}") : (array ? TAKE(t, " ]") : TAKE(t, " }"));
    for (size_t index = 0; !empty; index++) {
        if (index && !TAKE(t, ", ")) {
            if (array ? TAKE(t, " ]") : TAKE(t, " }")) break;
            return 0;
        }
        size_t type_at = out->len;
        if (!PUT(out, "\0")) return 0;
        if (array) { /* the index in decimal, and its NUL */
            char key[24];
            size_t n = sizeof key, value = index;
            key[--n] = 0;
            do {
                key[--n] = (char)('0' + value % 10);
                value /= 10;
            } while (value);
            if (!put(out, key + n, sizeof key - n)) return 0;
        } else {
            size_t from = out->len;
            if (!read_string(t, out)) return 0;
            size_t n = out->len - from;
            if ((n && out->data[from] == '$') || memchr(out->data + from, 0, n)) return 0;
            if (!PUT(out, "\0") || !TAKE(t, " : ")) return 0;
        }
        if (!read_value(t, out, type_at, depth)) return 0;
    }
    if (!PUT(out, "\0")) return 0;
    size_t size = out->len - size_at;
    if (size > INT32_MAX) return 0;
    for (int k = 0; k < 4; k++) out->data[size_at + (size_t)k] = (char)(size >> (8 * k));
    return 1;
}

PyObject *decode_lines(PyObject *self, PyObject *args) {
    (void)self;
    Py_buffer view;
    Py_ssize_t start, stop_at;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &start, &stop_at)) return NULL;
    const unsigned char *buffer = view.buf;
    size_t end = stop_at < 0 || (size_t)stop_at > (size_t)view.len ? (size_t)view.len
                                                                    : (size_t)stop_at;
    size_t pos = start < 0 || (size_t)start > end ? end : (size_t)start;
    Out out = {NULL, 0, 0, 0};
    size_t *bounds = NULL, count = 0, room = 0;
    int failed = 0;
    if (!base64_ready) init_base64(); /* under the GIL: once */
    Py_BEGIN_ALLOW_THREADS
    out_reserve(&out, end - pos + 64);
    while (pos < end && !out.failed) {
        const unsigned char *newline = memchr(buffer + pos, '\n', end - pos);
        if (!newline) break;
        Text t = {buffer + pos, newline};
        size_t mark = out.len;
        if (!read_document(&t, &out, 0, 0) || t.p != t.end) {
            out.len = mark; /* this line goes to python-bsonjs */
            break;
        }
        if (count == room) {
            room = room ? room * 2 : 1024;
            size_t *grown = realloc(bounds, room * sizeof *bounds);
            if (!grown) {
                failed = 1;
                break;
            }
            bounds = grown;
        }
        bounds[count++] = mark;
        pos = (size_t)(newline - buffer) + 1;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    PyObject *documents = failed || out.failed ? NULL : PyList_New((Py_ssize_t)count);
    for (size_t k = 0; documents && k < count; k++) {
        size_t from = bounds[k], to = k + 1 < count ? bounds[k + 1] : out.len;
        PyObject *raw = PyBytes_FromStringAndSize(out.data + from, (Py_ssize_t)(to - from));
        if (!raw) {
            Py_CLEAR(documents);
            break;
        }
        PyList_SET_ITEM(documents, (Py_ssize_t)k, raw);
    }
    free(out.data);
    free(bounds);
    if (!documents) return PyErr_Occurred() ? NULL : PyErr_NoMemory();
    return Py_BuildValue("(Nn)", documents, (Py_ssize_t)pos);
}
