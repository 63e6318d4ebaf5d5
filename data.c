// data.c — the data pipeline of virtex.c (model.h section 8): JSON and COCO Captions,
// images and transforms, the SentencePiece tokenizer, the synthetic shapes dataset.
// Sections in that order; each begins with its own banner.

// ---- JSON and COCO Captions a JSON (RFC 8259) reader and the COCO Captions annotations on top of it.
//
// JSON. The whole text is parsed into a read-only tree owned by one Json. The parser is
// iterative (an explicit stack of open containers, JSON_MAX_DEPTH deep, so no input can
// overflow the C stack) and linear in the input: a finished value is pushed on a value
// stack; when its container closes, the container's children are copied once into a
// node pool (64K-node blocks) and popped. Decoded strings go back to back into one
// buffer as long as the input (a decoded string plus its NUL is never longer than its
// quoted source). A 90 MB COCO file is some 3.5M nodes of 32 bytes.
//
// Strict RFC 8259, with these choices:
//   - the input must be UTF-8 (overlong forms, surrogates and code points past U+10FFFF
//     are errors); a leading UTF-8 byte order mark is skipped;
//   - \u escapes of unpaired surrogates are errors (no U+FFFD substitution);
//   - numbers follow the grammar exactly (no '+', '.5', '1.', leading zeros, NaN,
//     Infinity); a number whose magnitude overflows a double is an error, one that
//     underflows becomes 0 (or a denormal). Integer literals (no '.', no exponent) that
//     fit int64 are kept exactly as well (json_int64), as Python's json keeps ints;
//   - an object may repeat a name: json_at sees every member, json_get returns the last
//     one (Python's json.load keeps the last). Names containing \u0000 are never
//     matched by json_get (a C string cannot spell them); json_at/json_key see them;
//   - nesting deeper than JSON_MAX_DEPTH arrays/objects is an error.
// Errors are one line "ORIGIN:LINE:COL: message" in err (LINE and COL from 1; COL counts
// characters, i.e. UTF-8 sequences, so a tab is one column). Nothing here prints or exits.
//
// COCO Captions: ROOT/annotations/captions_{split}2017.json and images in
// ROOT/{split}2017/. See coco_captions_load below and model.h section 8a.
#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "model.h"

// ----------------------------------------------------------------------------
// the tree

enum { JSON_F_INT = 1, JSON_F_KEYNUL = 2 };

struct JsonValue {
    const char *key;                   // member name when this is an object member
    union {
        double num;                    // JSON_NUMBER
        const char *str;               // JSON_STRING (NUL-terminated)
        JsonValue *items;              // JSON_ARRAY, JSON_OBJECT (members in order)
    } u;
    int64_t i;                         // JSON_NUMBER with JSON_F_INT: the exact value
    uint32_t n;                        // string bytes / number of items / bool value
    uint8_t type, flags;
};

#define JSON_BLOCK 65536               // nodes per pool block

typedef struct JsonBlock {
    struct JsonBlock *next;
    size_t used, cap;
    JsonValue v[];
} JsonBlock;

struct Json {
    JsonValue root;
    JsonBlock *blocks;
    char *strings;                     // every decoded string and member name
};

// n contiguous nodes from the pool. A request larger than a quarter block gets a block
// of its own, linked behind the current one, so the current block's tail stays usable.
static JsonValue *json_pool(Json *doc, size_t n) {
    JsonBlock *b = doc->blocks;
    if (b && b->cap - b->used >= n) {
        b->used += n;
        return b->v + b->used - n;
    }
    int own = n > JSON_BLOCK / 4;
    size_t cap = own ? n : JSON_BLOCK;
    JsonBlock *nb = malloc(sizeof *nb + cap * sizeof(JsonValue));
    if (!nb) return NULL;
    nb->cap = cap;
    nb->used = n;
    if (own && b) {
        nb->next = b->next;
        b->next = nb;
    } else {
        nb->next = b;
        doc->blocks = nb;
    }
    return nb->v;
}

void json_free(Json *doc) {
    if (!doc) return;
    for (JsonBlock *b = doc->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    free(doc->strings);
    free(doc);
}

// ----------------------------------------------------------------------------
// the parser

typedef struct JsonFrame {
    size_t first;                      // its first child on the value stack
    const char *key;                   // its own member name (or NULL)
    uint8_t type, keyflags;
} JsonFrame;

typedef struct JsonParser {
    const unsigned char *text, *p, *end;
    const char *origin;
    char *err;
    size_t errlen;
    Json *doc;
    char *sp;                          // next free byte of doc->strings
    JsonValue *stack;                  // finished values whose container is still open
    size_t nstack, capstack;
    JsonFrame frame[JSON_MAX_DEPTH];
    int depth;
} JsonParser;

// Report "origin:line:col: message" for the position `at`; returns -1.
static int json_fail(JsonParser *ps, const unsigned char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int json_fail(JsonParser *ps, const unsigned char *at, const char *fmt, ...) {
    if (!ps->err || !ps->errlen) return -1;
    long line = 1, col = 1;
    for (const unsigned char *q = ps->text; q < at; q++) {
        if (*q == '\n') line++, col = 1;
        else if ((*q & 0xC0) != 0x80) col++;
    }
    int n = snprintf(ps->err, ps->errlen, "%s:%ld:%ld: ", ps->origin, line, col);
    if (n < 0 || (size_t)n >= ps->errlen) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ps->err + n, ps->errlen - n, fmt, ap);
    va_end(ap);
    return -1;
}

// Length (1-4) of the valid UTF-8 sequence at p, with its code point in *cp; 0 if
// invalid (bad lead byte, bad or missing continuation, overlong, surrogate, > U+10FFFF).
static int json_utf8(const unsigned char *p, const unsigned char *end, uint32_t *cp) {
    unsigned c = p[0];
    int n;
    uint32_t v, min;
    if (c < 0x80) { *cp = c; return 1; }
    if (c >= 0xC2 && c <= 0xDF) n = 2, v = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) n = 3, v = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) n = 4, v = c & 0x07, min = 0x10000;
    else return 0;
    if (end - p < n) return 0;
    for (int i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        v = v << 6 | (p[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) return 0;
    *cp = v;
    return n;
}

// The first byte of the invalid sequence at p that breaks it (for the message).
static const unsigned char *json_utf8_bad(const unsigned char *p, const unsigned char *end) {
    if (*p < 0xC2 || *p > 0xF4) return p;
    int n = *p < 0xE0 ? 2 : *p < 0xF0 ? 3 : 4;
    for (int i = 1; i < n && p + i < end; i++)
        if ((p[i] & 0xC0) != 0x80) return p + i;
    return p;
}

static int json_put_utf8(char *d, uint32_t c) {
    if (c < 0x80) { d[0] = (char)c; return 1; }
    if (c < 0x800) {
        d[0] = (char)(0xC0 | c >> 6);
        d[1] = (char)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        d[0] = (char)(0xE0 | c >> 12);
        d[1] = (char)(0x80 | (c >> 6 & 0x3F));
        d[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    d[0] = (char)(0xF0 | c >> 18);
    d[1] = (char)(0x80 | (c >> 12 & 0x3F));
    d[2] = (char)(0x80 | (c >> 6 & 0x3F));
    d[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

// What is at p, for "expected X, found Y" messages.
static const char *json_found(JsonParser *ps, const unsigned char *p, char *buf, size_t n) {
    uint32_t cp;
    if (p >= ps->end) return "end of input";
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')) {   // a word: NaN, tru, ...
        int k = 0;
        while (p + k < ps->end && k < 24 &&
               ((p[k] >= 'a' && p[k] <= 'z') || (p[k] >= 'A' && p[k] <= 'Z') ||
                (p[k] >= '0' && p[k] <= '9')))
            k++;
        snprintf(buf, n, "'%.*s'", k, (const char *)p);
    } else if (*p > 0x20 && *p < 0x7F) {
        snprintf(buf, n, "'%c'", *p);
    } else if (*p < 0x80) {
        snprintf(buf, n, "byte 0x%02x", *p);
    } else if (json_utf8(p, ps->end, &cp)) {
        snprintf(buf, n, "U+%04X", (unsigned)cp);
    } else {
        snprintf(buf, n, "invalid UTF-8 byte 0x%02x", *json_utf8_bad(p, ps->end));
    }
    return buf;
}

static void json_skip_ws(JsonParser *ps) {
    const unsigned char *p = ps->p, *end = ps->end;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    ps->p = p;
}

static int json_hex4(const unsigned char *p, const unsigned char *end, uint32_t *out) {
    if (end - p < 4) return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = p[i], d;
        if (c >= '0' && c <= '9') d = c - '0';
        else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
        else return 0;
        v = v << 4 | d;
    }
    *out = v;
    return 1;
}

// The string at ps->p (which is at its opening quote), decoded into the string buffer.
static int json_parse_string(JsonParser *ps, const char **out, uint32_t *outlen, int *has_nul) {
    const unsigned char *start = ps->p, *p = start + 1, *end = ps->end;
    char *d = ps->sp, *d0 = d;
    *has_nul = 0;
    for (;;) {
        while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') *d++ = (char)*p++;
        if (p >= end) return json_fail(ps, start, "unterminated string (it starts here)");
        unsigned c = *p;
        if (c == '"') {
            p++;
            break;
        }
        if (c < 0x20)
            return json_fail(ps, p, "unescaped control character 0x%02x in string", c);
        if (c >= 0x80) {
            uint32_t cp;
            int k = json_utf8(p, end, &cp);
            if (!k) {
                const unsigned char *bad = json_utf8_bad(p, end);
                return json_fail(ps, bad, "invalid UTF-8 byte 0x%02x", *bad);
            }
            memcpy(d, p, k);
            d += k, p += k;
            continue;
        }
        // an escape
        if (p + 1 >= end) return json_fail(ps, start, "unterminated string (it starts here)");
        uint32_t u, lo;
        switch (p[1]) {
        case '"': *d++ = '"'; break;
        case '\\': *d++ = '\\'; break;
        case '/': *d++ = '/'; break;
        case 'b': *d++ = '\b'; break;
        case 'f': *d++ = '\f'; break;
        case 'n': *d++ = '\n'; break;
        case 'r': *d++ = '\r'; break;
        case 't': *d++ = '\t'; break;
        case 'u':
            if (!json_hex4(p + 2, end, &u))
                return json_fail(ps, p, "invalid \\u escape: expected 4 hex digits after \\u");
            if (u >= 0xDC00 && u <= 0xDFFF)
                return json_fail(ps, p, "lone surrogate \\u%04X (a low surrogate without a "
                                        "high one before it)", (unsigned)u);
            if (u >= 0xD800 && u <= 0xDBFF) {
                if (!(end - p >= 12 && p[6] == '\\' && p[7] == 'u' && json_hex4(p + 8, end, &lo) &&
                      lo >= 0xDC00 && lo <= 0xDFFF))
                    return json_fail(ps, p, "lone surrogate \\u%04X (a high surrogate must be "
                                            "followed by a \\uDC00-\\uDFFF escape)", (unsigned)u);
                u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                p += 6;
            }
            if (u == 0) *has_nul = 1;
            d += json_put_utf8(d, u);
            p += 4;
            break;
        default:
            if (p[1] > 0x20 && p[1] < 0x7F)
                return json_fail(ps, p, "invalid escape '\\%c'", p[1]);
            return json_fail(ps, p, "invalid escape: '\\' followed by byte 0x%02x", p[1]);
        }
        p += 2;
    }
    if ((size_t)(d - d0) >= UINT32_MAX) return json_fail(ps, start, "string longer than 4 GiB");
    *d++ = 0;
    ps->sp = d;
    ps->p = p;
    *out = d0;
    *outlen = (uint32_t)(d - d0 - 1);
    return 0;
}

static int json_isdigit(const unsigned char *p, const unsigned char *end) {
    return p < end && *p >= '0' && *p <= '9';
}

// The number at ps->p (a '-' or a digit) into v.
static int json_parse_number(JsonParser *ps, JsonValue *v) {
    const unsigned char *s = ps->p, *p = s, *end = ps->end;
    int neg = 0, isint = 1, overflow = 0;
    uint64_t mag = 0;
    if (*p == '-') {
        neg = 1;
        p++;
        if (!json_isdigit(p, end)) return json_fail(ps, p, "expected a digit after '-'");
    }
    if (*p == '0') {
        p++;
        if (json_isdigit(p, end)) return json_fail(ps, s, "leading zero in number");
    } else {
        for (; json_isdigit(p, end); p++) {
            unsigned dgt = *p - '0';
            if (mag > (UINT64_MAX - dgt) / 10) overflow = 1;
            else mag = mag * 10 + dgt;
        }
    }
    if (p < end && *p == '.') {
        isint = 0;
        p++;
        if (!json_isdigit(p, end)) return json_fail(ps, p, "expected a digit after the decimal point");
        while (json_isdigit(p, end)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        isint = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!json_isdigit(p, end)) return json_fail(ps, p, "expected a digit in the exponent");
        while (json_isdigit(p, end)) p++;
    }
    ps->p = p;
    v->type = JSON_NUMBER;
    if (isint && !overflow && mag <= (neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX)) {
        v->i = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
        v->u.num = neg && mag == 0 ? -0.0 : (double)v->i;
        v->flags |= JSON_F_INT;
        return 0;
    }
    // strtod on a NUL-terminated copy, with the locale's decimal point
    size_t n = (size_t)(p - s);
    char small[64], *buf = n < sizeof small ? small : malloc(n + 1);
    if (!buf) return json_fail(ps, s, "out of memory");
    memcpy(buf, s, n);
    buf[n] = 0;
    const char *dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1]) {
        char *dot = memchr(buf, '.', n);
        if (dot) *dot = dp[0];
    }
    char *stop;
    v->u.num = strtod(buf, &stop);
    int bad = stop != buf + n;
    if (buf != small) free(buf);
    if (bad) return json_fail(ps, s, "number not understood by strtod (locale?)");
    if (isinf(v->u.num)) return json_fail(ps, s, "number out of range for a double");
    return 0;
}

static int json_push(JsonParser *ps, const JsonValue *v) {
    if (ps->nstack == ps->capstack) {
        size_t cap = ps->capstack ? 2 * ps->capstack : 1024;
        JsonValue *s = realloc(ps->stack, cap * sizeof *s);
        if (!s) return json_fail(ps, ps->p, "out of memory");
        ps->stack = s;
        ps->capstack = cap;
    }
    ps->stack[ps->nstack++] = *v;
    return 0;
}

// A member name and its ':' (ps->p is past '{' or ',' and whitespace).
static int json_member_name(JsonParser *ps, const char **key, uint8_t *keyflags, int first) {
    char buf[48];
    if (ps->p >= ps->end || *ps->p != '"')
        return json_fail(ps, ps->p, first ? "expected a member name (a string) or '}', found %s"
                                          : "expected a member name (a string) after ',', found %s",
                         json_found(ps, ps->p, buf, sizeof buf));
    uint32_t len;
    int has_nul;
    if (json_parse_string(ps, key, &len, &has_nul)) return -1;
    *keyflags = has_nul ? JSON_F_KEYNUL : 0;
    json_skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
        return json_fail(ps, ps->p, "expected ':' after member name, found %s",
                         json_found(ps, ps->p, buf, sizeof buf));
    ps->p++;
    return 0;
}

// Close the innermost container: its children move from the stack into the pool, and
// the container itself becomes a finished value on the stack.
static int json_close(JsonParser *ps) {
    JsonFrame *f = &ps->frame[--ps->depth];
    size_t n = ps->nstack - f->first;
    if (n > INT32_MAX) return json_fail(ps, ps->p, "more than 2^31 items in one container");
    JsonValue v = {0};
    v.type = f->type;
    v.key = f->key;
    v.flags = f->keyflags;
    v.n = (uint32_t)n;
    if (n) {
        v.u.items = json_pool(ps->doc, n);
        if (!v.u.items) return json_fail(ps, ps->p, "out of memory");
        memcpy(v.u.items, ps->stack + f->first, n * sizeof(JsonValue));
    }
    ps->nstack = f->first;
    return json_push(ps, &v);
}

static int json_parse_text(JsonParser *ps) {
    const char *key = NULL;            // the name of the member whose value comes next
    uint8_t keyflags = 0;
    char buf[48];
    for (;;) {
        // a value
        json_skip_ws(ps);
        const unsigned char *p = ps->p;
        if (p >= ps->end)
            return json_fail(ps, p, ps->depth || p > ps->text ? "expected a value, found end of input"
                                                              : "expected a JSON value, found empty input");
        JsonValue v = {0};
        v.key = key;
        v.flags = keyflags;
        unsigned c = *p;
        if (c == '[' || c == '{') {
            if (ps->depth == JSON_MAX_DEPTH)
                return json_fail(ps, p, "nesting deeper than %d levels", JSON_MAX_DEPTH);
            JsonFrame *f = &ps->frame[ps->depth++];
            f->first = ps->nstack;
            f->key = key;
            f->keyflags = keyflags;
            f->type = c == '[' ? JSON_ARRAY : JSON_OBJECT;
            ps->p++;
            json_skip_ws(ps);
            if (ps->p < ps->end && *ps->p == (c == '[' ? ']' : '}')) {
                ps->p++;
                if (json_close(ps)) return -1;
            } else {
                key = NULL;
                keyflags = 0;
                if (c == '{' && json_member_name(ps, &key, &keyflags, 1)) return -1;
                continue;
            }
        } else {
            if (c == '"') {
                int has_nul;
                v.type = JSON_STRING;
                if (json_parse_string(ps, &v.u.str, &v.n, &has_nul)) return -1;
            } else if (c == '-' || (c >= '0' && c <= '9')) {
                if (json_parse_number(ps, &v)) return -1;
            } else if (ps->end - p >= 4 && !memcmp(p, "null", 4)) {
                v.type = JSON_NULL;
                ps->p += 4;
            } else if (ps->end - p >= 4 && !memcmp(p, "true", 4)) {
                v.type = JSON_BOOL;
                v.n = 1;
                ps->p += 4;
            } else if (ps->end - p >= 5 && !memcmp(p, "false", 5)) {
                v.type = JSON_BOOL;
                ps->p += 5;
            } else {
                return json_fail(ps, p, "expected a value, found %s", json_found(ps, p, buf, sizeof buf));
            }
            if (json_push(ps, &v)) return -1;
        }
        // after a finished value: the end of the text, or ',' or the container's close
        for (;;) {
            json_skip_ws(ps);
            p = ps->p;
            if (ps->depth == 0) {
                if (p < ps->end)
                    return json_fail(ps, p, "unexpected %s after the JSON value",
                                     json_found(ps, p, buf, sizeof buf));
                ps->doc->root = ps->stack[0];
                return 0;
            }
            JsonFrame *f = &ps->frame[ps->depth - 1];
            int arr = f->type == JSON_ARRAY;
            unsigned close = arr ? ']' : '}';
            if (p < ps->end && *p == close) {
                ps->p++;
                if (json_close(ps)) return -1;
                continue;
            }
            if (p < ps->end && *p == ',') {
                ps->p++;
                json_skip_ws(ps);
                if (ps->p < ps->end && *ps->p == close)
                    return json_fail(ps, p, "trailing comma in %s", arr ? "array" : "object");
                key = NULL;
                keyflags = 0;
                if (!arr && json_member_name(ps, &key, &keyflags, 0)) return -1;
                break;
            }
            return json_fail(ps, p, arr ? "expected ',' or ']' after array element, found %s"
                                        : "expected ',' or '}' after object member, found %s",
                             json_found(ps, p, buf, sizeof buf));
        }
    }
}

int json_parse(Json **out, const char *text, size_t len, const char *origin, char *err,
               size_t errlen) {
    *out = NULL;
    if (err && errlen) err[0] = 0;
    JsonParser *ps = calloc(1, sizeof *ps);
    Json *doc = calloc(1, sizeof *doc);
    char *strings = malloc(len + 1);
    if (!ps || !doc || !strings) {
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", origin ? origin : "<json>");
        free(ps), free(doc), free(strings);
        return -1;
    }
    doc->strings = strings;
    ps->text = (const unsigned char *)text;
    ps->end = ps->text + len;
    if (len >= 3 && !memcmp(text, "\xEF\xBB\xBF", 3)) ps->text += 3;   // byte order mark
    ps->p = ps->text;
    ps->origin = origin ? origin : "<json>";
    ps->err = err;
    ps->errlen = errlen;
    ps->doc = doc;
    ps->sp = strings;
    int rc = json_parse_text(ps);
    free(ps->stack);
    free(ps);
    if (rc) {
        json_free(doc);
        return -1;
    }
    *out = doc;
    return 0;
}

int json_parse_file(Json **out, const char *path, char *err, size_t errlen) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    // read it whole (a regular file's size from fstat, then whatever is really there)
    size_t cap = 1 << 16, len = 0;
    struct stat st;
    if (fstat(fileno(f), &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            if (err && errlen) snprintf(err, errlen, "%s: cannot read: is a directory", path);
            fclose(f);
            return -1;
        }
        if (S_ISREG(st.st_mode) && st.st_size > 0) cap = (size_t)st.st_size + 1;
    }
    char *buf = malloc(cap);
    for (;;) {
        if (!buf) {
            if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
            fclose(f);
            return -1;
        }
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap) break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    int bad = ferror(f), e = errno;
    fclose(f);
    if (bad) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot read: %s", path, strerror(e));
        free(buf);
        return -1;
    }
    int rc = json_parse(out, buf, len, path, err, errlen);
    free(buf);
    return rc;
}

// ----------------------------------------------------------------------------
// access

const JsonValue *json_root(const Json *doc) { return doc ? &doc->root : NULL; }

JsonType json_type(const JsonValue *v) { return v ? (JsonType)v->type : JSON_NONE; }

const char *json_type_name(JsonType t) {
    switch (t) {
    case JSON_NULL: return "null";
    case JSON_BOOL: return "a boolean";
    case JSON_NUMBER: return "a number";
    case JSON_STRING: return "a string";
    case JSON_ARRAY: return "an array";
    case JSON_OBJECT: return "an object";
    default: return "nothing";
    }
}

int json_len(const JsonValue *v) {
    return v && (v->type == JSON_ARRAY || v->type == JSON_OBJECT) ? (int)v->n : 0;
}

const JsonValue *json_at(const JsonValue *v, int i) {
    return i >= 0 && i < json_len(v) ? &v->u.items[i] : NULL;
}

const char *json_key(const JsonValue *member) { return member ? member->key : NULL; }

const JsonValue *json_get(const JsonValue *obj, const char *key) {
    if (!obj || obj->type != JSON_OBJECT) return NULL;
    for (uint32_t i = obj->n; i-- > 0;) {
        const JsonValue *m = &obj->u.items[i];
        if (!(m->flags & JSON_F_KEYNUL) && strcmp(m->key, key) == 0) return m;
    }
    return NULL;
}

const char *json_string(const JsonValue *v) {
    return v && v->type == JSON_STRING ? v->u.str : NULL;
}

size_t json_string_len(const JsonValue *v) {
    return v && v->type == JSON_STRING ? v->n : 0;
}

double json_number(const JsonValue *v) {
    return v && v->type == JSON_NUMBER ? v->u.num : NAN;
}

int json_int64(const JsonValue *v, int64_t *out) {
    if (!v || v->type != JSON_NUMBER || !(v->flags & JSON_F_INT)) return 0;
    *out = v->i;
    return 1;
}

int json_bool(const JsonValue *v) { return v && v->type == JSON_BOOL && v->n; }

// ----------------------------------------------------------------------------
// caption normalisation: what the original does to every caption,
//     caption = unicodedata.normalize("NFKD", caption.lower())
//     caption = "".join(c for c in caption if not unicodedata.combining(c))
// then leading/trailing ASCII whitespace trimmed. Per code point c this is a fixed
// string f(c) (NFKD's canonical reordering only moves combining marks, which are all
// dropped), except for Greek capital sigma, whose lower() depends on its neighbours.
//
// Coverage: ASCII (A-Z lower-cased), the combining-mark blocks U+0300-036F, 1AB0-1AFF,
// 1DC0-1DFF, 20D0-20FF and FE20-FE2F (marks with a non-zero combining class dropped),
// fullwidth ASCII U+FF01-FF5E (to ASCII, lower-cased), and the table below, which lists
// every code point of Latin-1 Supplement (U+00A0-00FF), Latin Extended-A and -B
// (U+0100-024F), Latin Extended Additional (U+1E00-1EFF), General Punctuation
// (U+2000-206F), U+3000 and the Latin ligatures U+FB00-FB06 whose f(c) differs from c.
// Every other code point passes through unchanged (so e.g. Greek and Cyrillic capitals
// are not lower-cased, and Hangul is not decomposed). Note NFKD keeps ß, æ, œ, ø, đ, ł
// and ı as they are, and expands ligatures and fractions: U+FB01 -> "fi",
// U+00BD -> "1⁄2" (with U+2044). Invalid UTF-8 bytes are copied through.
//
// The table was generated from Python 3.11's unicodedata (Unicode 14.0): for each c in
// those blocks that is not a combining mark, the entry {c, f(c)} when f(c) != c.

static const char *coco_fold_lookup(uint32_t c);   // the table is at the end of the file
static const uint32_t coco_combining[][2] = {
    {0x0300, 0x034E}, {0x0350, 0x036F}, {0x1AB0, 0x1ABD}, {0x1ABF, 0x1ACE}, {0x1DC0, 0x1DFF},
    {0x20D0, 0x20DC}, {0x20E1, 0x20E1}, {0x20E5, 0x20F0}, {0xFE20, 0xFE2F},
};

static int coco_is_combining(uint32_t c) {
    for (size_t i = 0; i < sizeof coco_combining / sizeof coco_combining[0]; i++)
        if (c >= coco_combining[i][0] && c <= coco_combining[i][1]) return 1;
    return 0;
}

// A growable byte buffer.
typedef struct CocoBuf { char *b; size_t n, cap; } CocoBuf;

static int coco_reserve(CocoBuf *b, size_t more) {
    if (b->n + more <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->n + more) cap *= 2;
    char *nb = realloc(b->b, cap);
    if (!nb) return -1;
    b->b = nb;
    b->cap = cap;
    return 0;
}

static int coco_is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

// Append the normalised form of s[0..len) and a NUL; -1 when out of memory.
static int coco_normalize_append(CocoBuf *b, const char *s, size_t len) {
    // f(c) is at most 4x as long as c's UTF-8 (U+2057: 3 bytes -> 4 x U+2032, 12 bytes)
    if (coco_reserve(b, 4 * len + 1)) return -1;
    const unsigned char *p = (const unsigned char *)s, *end = p + len;
    char *d0 = b->b + b->n, *d = d0;
    while (p < end) {
        uint32_t c;
        if (*p < 0x80) {
            *d++ = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
            p++;
            continue;
        }
        int k = json_utf8(p, end, &c);
        if (!k) {
            *d++ = (char)*p++;
            continue;
        }
        const char *to;
        if (coco_is_combining(c)) {
            // dropped
        } else if (c >= 0xFF01 && c <= 0xFF5E) {
            c -= 0xFEE0;
            *d++ = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        } else if ((to = coco_fold_lookup(c))) {
            size_t m = strlen(to);
            memcpy(d, to, m);
            d += m;
        } else {
            memcpy(d, p, k);
            d += k;
        }
        p += k;
    }
    char *a = d0;
    while (a < d && coco_is_space(*a)) a++;
    while (d > a && coco_is_space(d[-1])) d--;
    memmove(d0, a, (size_t)(d - a));
    d0[d - a] = 0;
    b->n += (size_t)(d - a) + 1;
    return 0;
}

char *caption_normalize(const char *utf8) {
    CocoBuf b = {0};
    if (coco_normalize_append(&b, utf8, strlen(utf8))) {
        free(b.b);
        return NULL;
    }
    return b.b;
}

// ----------------------------------------------------------------------------
// COCO Captions

// "PATH: FIELD: expected T, found U" unless v has type t (t == JSON_NUMBER means an
// integer here).
static int coco_expect(const JsonValue *v, JsonType t, const char *path, const char *field,
                       char *err, size_t errlen) {
    int64_t i;
    if (t == JSON_NUMBER ? json_int64(v, &i) : json_type(v) == t) return 0;
    const char *want = t == JSON_NUMBER ? "an integer" : json_type_name(t);
    if (!v) return seterr(err, errlen, "%s: %s: missing (expected %s)", path, field, want);
    return seterr(err, errlen, "%s: %s: expected %s, found %s", path, field, want,
                    t == JSON_NUMBER && json_type(v) == JSON_NUMBER ? "a non-integer number"
                                                                    : json_type_name(json_type(v)));
}

// The annotations[] array of a parsed captions file, checked to be an array of objects
// with string captions (and, with ids, integer image_ids).
static int coco_annotations(const Json *doc, const char *path, int ids, const JsonValue **out,
                            char *err, size_t errlen) {
    const JsonValue *root = json_root(doc);
    if (json_type(root) != JSON_OBJECT)
        return seterr(err, errlen, "%s: expected an object at the top level, found %s", path,
                        json_type_name(json_type(root)));
    const JsonValue *anns = json_get(root, "annotations");
    if (coco_expect(anns, JSON_ARRAY, path, "annotations", err, errlen)) return -1;
    char field[64];
    for (int i = 0; i < json_len(anns); i++) {
        const JsonValue *a = json_at(anns, i);
        snprintf(field, sizeof field, "annotations[%d]", i);
        if (coco_expect(a, JSON_OBJECT, path, field, err, errlen)) return -1;
        snprintf(field, sizeof field, "annotations[%d].caption", i);
        if (coco_expect(json_get(a, "caption"), JSON_STRING, path, field, err, errlen)) return -1;
        snprintf(field, sizeof field, "annotations[%d].image_id", i);
        if (ids && coco_expect(json_get(a, "image_id"), JSON_NUMBER, path, field, err, errlen))
            return -1;
    }
    *out = anns;
    return 0;
}

int coco_read_captions(const char *json_path, char ***captions, long *n, char *err,
                       size_t errlen) {
    *captions = NULL;
    *n = 0;
    Json *doc;
    if (json_parse_file(&doc, json_path, err, errlen)) return -1;
    const JsonValue *anns;
    if (coco_annotations(doc, json_path, 0, &anns, err, errlen)) {
        json_free(doc);
        return -1;
    }
    long na = json_len(anns);
    CocoBuf text = {0};
    size_t *off = malloc((na + 1) * sizeof *off);
    int oom = !off;
    for (long i = 0; i < na && !oom; i++) {
        const JsonValue *c = json_get(json_at(anns, (int)i), "caption");
        off[i] = text.n;
        oom = coco_normalize_append(&text, json_string(c), json_string_len(c));
    }
    json_free(doc);
    // one block: the pointers, then the text
    char **out = oom ? NULL : malloc(na * sizeof(char *) + text.n + 1);
    if (!out) {
        free(off);
        free(text.b);
        return seterr(err, errlen, "%s: out of memory", json_path);
    }
    char *base = (char *)(out + na);
    if (text.n) memcpy(base, text.b, text.n);
    for (long i = 0; i < na; i++) out[i] = base + off[i];
    free(off);
    free(text.b);
    *captions = out;
    *n = na;
    return 0;
}

// Open-addressing map from image id to its index in images[].
typedef struct CocoMap { int64_t *key; int *val; size_t mask; } CocoMap;

static size_t coco_hash(int64_t k, size_t mask) {
    uint64_t z = (uint64_t)k * 0x9E3779B97F4A7C15ull;
    return (size_t)(z ^ (z >> 29)) & mask;
}

static int coco_map_find(const CocoMap *m, int64_t k) {
    for (size_t h = coco_hash(k, m->mask);; h = (h + 1) & m->mask) {
        if (m->val[h] < 0) return -1;
        if (m->key[h] == k) return m->val[h];
    }
}

static void coco_map_put(CocoMap *m, int64_t k, int v) {
    size_t h = coco_hash(k, m->mask);
    while (m->val[h] >= 0) h = (h + 1) & m->mask;
    m->key[h] = k;
    m->val[h] = v;
}

void coco_captions_free(CocoCaptions *cc) {
    if (!cc) return;
    free(cc->images);
    free(cc->image_dir);
    free(cc->text_);
    free(cc->ptrs_);
    memset(cc, 0, sizeof *cc);
}

static char *coco_join(const char *a, const char *b, const char *c, const char *d) {
    size_t na = strlen(a);
    int slash = na > 0 && a[na - 1] != '/';
    size_t n = na + slash + strlen(b) + strlen(c) + strlen(d) + 1;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s%s%s%s%s", a, slash ? "/" : "", b, c, d);
    return s;
}

int coco_captions_load(CocoCaptions *cc, const char *root, const char *split, char *err,
                       size_t errlen) {
    memset(cc, 0, sizeof *cc);
    char *path = coco_join(root, "annotations/captions_", split, "2017.json");
    cc->image_dir = coco_join(root, split, "2017", "");
    Json *doc = NULL;
    CocoMap map = {0};
    int *count = NULL, *first = NULL, *ann_img = NULL;
    size_t *off = NULL, *name_off = NULL;
    CocoBuf text = {0};
    int rc = -1;
    char field[64];
    if (!path || !cc->image_dir) {
        seterr(err, errlen, "out of memory");
        goto done;
    }
    if (json_parse_file(&doc, path, err, errlen)) goto done;
    const JsonValue *anns, *images;
    if (coco_annotations(doc, path, 1, &anns, err, errlen)) goto done;
    images = json_get(json_root(doc), "images");
    if (coco_expect(images, JSON_ARRAY, path, "images", err, errlen)) goto done;

    // images: check them and map id -> index
    int ni = json_len(images), na = json_len(anns);
    size_t cap = 16;
    while (cap < 2 * (size_t)ni) cap *= 2;
    map.key = malloc(cap * sizeof *map.key);
    map.val = malloc(cap * sizeof *map.val);
    map.mask = cap - 1;
    count = calloc((size_t)ni + 1, sizeof *count);
    first = malloc(((size_t)ni + 1) * sizeof *first);
    ann_img = malloc(((size_t)na + 1) * sizeof *ann_img);
    off = malloc(((size_t)na + 1) * sizeof *off);
    if (!map.key || !map.val || !count || !first || !ann_img || !off) {
        seterr(err, errlen, "%s: out of memory", path);
        goto done;
    }
    memset(map.val, 0xff, cap * sizeof *map.val);
    for (int i = 0; i < ni; i++) {
        const JsonValue *im = json_at(images, i);
        snprintf(field, sizeof field, "images[%d]", i);
        if (coco_expect(im, JSON_OBJECT, path, field, err, errlen)) goto done;
        snprintf(field, sizeof field, "images[%d].file_name", i);
        if (coco_expect(json_get(im, "file_name"), JSON_STRING, path, field, err, errlen)) goto done;
        snprintf(field, sizeof field, "images[%d].id", i);
        if (coco_expect(json_get(im, "id"), JSON_NUMBER, path, field, err, errlen)) goto done;
        int64_t id = 0;
        json_int64(json_get(im, "id"), &id);
        int other = coco_map_find(&map, id);
        if (other >= 0) {
            seterr(err, errlen, "%s: %s: duplicate image id %lld (also images[%d].id)", path,
                     field, (long long)id, other);
            goto done;
        }
        coco_map_put(&map, id, i);
    }
    // annotations: the image of each, and the caption count per image
    for (int i = 0; i < na; i++) {
        int64_t id = 0;
        json_int64(json_get(json_at(anns, i), "image_id"), &id);
        int k = coco_map_find(&map, id);
        if (k < 0) {
            seterr(err, errlen, "%s: annotations[%d].image_id: unknown image id %lld (not in "
                     "images[])", path, i, (long long)id);
            goto done;
        }
        ann_img[i] = k;
        count[k]++;
    }
    // the kept images (with a caption), in images[] order; first[] = their first slot
    int nkept = 0;
    long slot = 0;
    for (int i = 0; i < ni; i++) {
        first[i] = (int)slot;
        slot += count[i];
        nkept += count[i] > 0;
    }
    cc->images = calloc((size_t)nkept + 1, sizeof *cc->images);
    cc->ptrs_ = malloc(((size_t)na + 1) * sizeof *cc->ptrs_);
    if (!cc->images || !cc->ptrs_) {
        seterr(err, errlen, "%s: out of memory", path);
        goto done;
    }
    // captions into their slots, normalised; then the file names
    memset(count, 0, (size_t)ni * sizeof *count);
    for (int i = 0; i < na; i++) {
        const JsonValue *c = json_get(json_at(anns, i), "caption");
        int k = ann_img[i];
        off[first[k] + count[k]++] = text.n;
        if (coco_normalize_append(&text, json_string(c), json_string_len(c))) {
            seterr(err, errlen, "%s: out of memory", path);
            goto done;
        }
    }
    name_off = malloc(((size_t)nkept + 1) * sizeof *name_off);
    if (!name_off) {
        seterr(err, errlen, "%s: out of memory", path);
        goto done;
    }
    for (int i = 0, j = 0; i < ni; i++) {
        if (!count[i]) continue;
        const JsonValue *fn = json_get(json_at(images, i), "file_name");
        name_off[j++] = text.n;
        if (coco_reserve(&text, json_string_len(fn) + 1)) {
            seterr(err, errlen, "%s: out of memory", path);
            goto done;
        }
        memcpy(text.b + text.n, json_string(fn), json_string_len(fn) + 1);
        text.n += json_string_len(fn) + 1;
    }
    // the text has stopped moving: offsets become pointers
    for (int i = 0; i < na; i++) cc->ptrs_[i] = text.b + off[i];
    for (int i = 0, j = 0; i < ni; i++) {
        if (!count[i]) continue;
        CocoImage *ci = &cc->images[j];
        json_int64(json_get(json_at(images, i), "id"), &ci->id);
        ci->file_name = text.b + name_off[j++];
        ci->captions = cc->ptrs_ + first[i];
        ci->ncaptions = count[i];
    }
    cc->text_ = text.b;
    text.b = NULL;
    cc->n = nkept;
    cc->ncaptions = na;
    cc->dropped = ni - nkept;
    rc = 0;
done:
    if (rc) {
        free(text.b);
        coco_captions_free(cc);
    }
    json_free(doc);
    free(path);
    free(map.key);
    free(map.val);
    free(count);
    free(first);
    free(ann_img);
    free(off);
    free(name_off);
    return rc;
}

// ----------------------------------------------------------------------------
// the fold table (see "caption normalisation" above)

typedef struct CocoFold { uint32_t cp; const char *to; } CocoFold;

static const CocoFold coco_fold[] = {
    {0x00A0, " "}, {0x00A8, " "}, {0x00AA, "a"}, {0x00AF, " "}, {0x00B2, "2"},
    {0x00B3, "3"}, {0x00B4, " "}, {0x00B5, "μ"}, {0x00B8, " "}, {0x00B9, "1"},
    {0x00BA, "o"}, {0x00BC, "1⁄4"}, {0x00BD, "1⁄2"}, {0x00BE, "3⁄4"}, {0x00C0, "a"},
    {0x00C1, "a"}, {0x00C2, "a"}, {0x00C3, "a"}, {0x00C4, "a"}, {0x00C5, "a"},
    {0x00C6, "æ"}, {0x00C7, "c"}, {0x00C8, "e"}, {0x00C9, "e"}, {0x00CA, "e"},
    {0x00CB, "e"}, {0x00CC, "i"}, {0x00CD, "i"}, {0x00CE, "i"}, {0x00CF, "i"},
    {0x00D0, "ð"}, {0x00D1, "n"}, {0x00D2, "o"}, {0x00D3, "o"}, {0x00D4, "o"},
    {0x00D5, "o"}, {0x00D6, "o"}, {0x00D8, "ø"}, {0x00D9, "u"}, {0x00DA, "u"},
    {0x00DB, "u"}, {0x00DC, "u"}, {0x00DD, "y"}, {0x00DE, "þ"}, {0x00E0, "a"},
    {0x00E1, "a"}, {0x00E2, "a"}, {0x00E3, "a"}, {0x00E4, "a"}, {0x00E5, "a"},
    {0x00E7, "c"}, {0x00E8, "e"}, {0x00E9, "e"}, {0x00EA, "e"}, {0x00EB, "e"},
    {0x00EC, "i"}, {0x00ED, "i"}, {0x00EE, "i"}, {0x00EF, "i"}, {0x00F1, "n"},
    {0x00F2, "o"}, {0x00F3, "o"}, {0x00F4, "o"}, {0x00F5, "o"}, {0x00F6, "o"},
    {0x00F9, "u"}, {0x00FA, "u"}, {0x00FB, "u"}, {0x00FC, "u"}, {0x00FD, "y"},
    {0x00FF, "y"}, {0x0100, "a"}, {0x0101, "a"}, {0x0102, "a"}, {0x0103, "a"},
    {0x0104, "a"}, {0x0105, "a"}, {0x0106, "c"}, {0x0107, "c"}, {0x0108, "c"},
    {0x0109, "c"}, {0x010A, "c"}, {0x010B, "c"}, {0x010C, "c"}, {0x010D, "c"},
    {0x010E, "d"}, {0x010F, "d"}, {0x0110, "đ"}, {0x0112, "e"}, {0x0113, "e"},
    {0x0114, "e"}, {0x0115, "e"}, {0x0116, "e"}, {0x0117, "e"}, {0x0118, "e"},
    {0x0119, "e"}, {0x011A, "e"}, {0x011B, "e"}, {0x011C, "g"}, {0x011D, "g"},
    {0x011E, "g"}, {0x011F, "g"}, {0x0120, "g"}, {0x0121, "g"}, {0x0122, "g"},
    {0x0123, "g"}, {0x0124, "h"}, {0x0125, "h"}, {0x0126, "ħ"}, {0x0128, "i"},
    {0x0129, "i"}, {0x012A, "i"}, {0x012B, "i"}, {0x012C, "i"}, {0x012D, "i"},
    {0x012E, "i"}, {0x012F, "i"}, {0x0130, "i"}, {0x0132, "ij"}, {0x0133, "ij"},
    {0x0134, "j"}, {0x0135, "j"}, {0x0136, "k"}, {0x0137, "k"}, {0x0139, "l"},
    {0x013A, "l"}, {0x013B, "l"}, {0x013C, "l"}, {0x013D, "l"}, {0x013E, "l"},
    {0x013F, "l·"}, {0x0140, "l·"}, {0x0141, "ł"}, {0x0143, "n"}, {0x0144, "n"},
    {0x0145, "n"}, {0x0146, "n"}, {0x0147, "n"}, {0x0148, "n"}, {0x0149, "ʼn"},
    {0x014A, "ŋ"}, {0x014C, "o"}, {0x014D, "o"}, {0x014E, "o"}, {0x014F, "o"},
    {0x0150, "o"}, {0x0151, "o"}, {0x0152, "œ"}, {0x0154, "r"}, {0x0155, "r"},
    {0x0156, "r"}, {0x0157, "r"}, {0x0158, "r"}, {0x0159, "r"}, {0x015A, "s"},
    {0x015B, "s"}, {0x015C, "s"}, {0x015D, "s"}, {0x015E, "s"}, {0x015F, "s"},
    {0x0160, "s"}, {0x0161, "s"}, {0x0162, "t"}, {0x0163, "t"}, {0x0164, "t"},
    {0x0165, "t"}, {0x0166, "ŧ"}, {0x0168, "u"}, {0x0169, "u"}, {0x016A, "u"},
    {0x016B, "u"}, {0x016C, "u"}, {0x016D, "u"}, {0x016E, "u"}, {0x016F, "u"},
    {0x0170, "u"}, {0x0171, "u"}, {0x0172, "u"}, {0x0173, "u"}, {0x0174, "w"},
    {0x0175, "w"}, {0x0176, "y"}, {0x0177, "y"}, {0x0178, "y"}, {0x0179, "z"},
    {0x017A, "z"}, {0x017B, "z"}, {0x017C, "z"}, {0x017D, "z"}, {0x017E, "z"},
    {0x017F, "s"}, {0x0181, "ɓ"}, {0x0182, "ƃ"}, {0x0184, "ƅ"}, {0x0186, "ɔ"},
    {0x0187, "ƈ"}, {0x0189, "ɖ"}, {0x018A, "ɗ"}, {0x018B, "ƌ"}, {0x018E, "ǝ"},
    {0x018F, "ə"}, {0x0190, "ɛ"}, {0x0191, "ƒ"}, {0x0193, "ɠ"}, {0x0194, "ɣ"},
    {0x0196, "ɩ"}, {0x0197, "ɨ"}, {0x0198, "ƙ"}, {0x019C, "ɯ"}, {0x019D, "ɲ"},
    {0x019F, "ɵ"}, {0x01A0, "o"}, {0x01A1, "o"}, {0x01A2, "ƣ"}, {0x01A4, "ƥ"},
    {0x01A6, "ʀ"}, {0x01A7, "ƨ"}, {0x01A9, "ʃ"}, {0x01AC, "ƭ"}, {0x01AE, "ʈ"},
    {0x01AF, "u"}, {0x01B0, "u"}, {0x01B1, "ʊ"}, {0x01B2, "ʋ"}, {0x01B3, "ƴ"},
    {0x01B5, "ƶ"}, {0x01B7, "ʒ"}, {0x01B8, "ƹ"}, {0x01BC, "ƽ"}, {0x01C4, "dz"},
    {0x01C5, "dz"}, {0x01C6, "dz"}, {0x01C7, "lj"}, {0x01C8, "lj"}, {0x01C9, "lj"},
    {0x01CA, "nj"}, {0x01CB, "nj"}, {0x01CC, "nj"}, {0x01CD, "a"}, {0x01CE, "a"},
    {0x01CF, "i"}, {0x01D0, "i"}, {0x01D1, "o"}, {0x01D2, "o"}, {0x01D3, "u"},
    {0x01D4, "u"}, {0x01D5, "u"}, {0x01D6, "u"}, {0x01D7, "u"}, {0x01D8, "u"},
    {0x01D9, "u"}, {0x01DA, "u"}, {0x01DB, "u"}, {0x01DC, "u"}, {0x01DE, "a"},
    {0x01DF, "a"}, {0x01E0, "a"}, {0x01E1, "a"}, {0x01E2, "æ"}, {0x01E3, "æ"},
    {0x01E4, "ǥ"}, {0x01E6, "g"}, {0x01E7, "g"}, {0x01E8, "k"}, {0x01E9, "k"},
    {0x01EA, "o"}, {0x01EB, "o"}, {0x01EC, "o"}, {0x01ED, "o"}, {0x01EE, "ʒ"},
    {0x01EF, "ʒ"}, {0x01F0, "j"}, {0x01F1, "dz"}, {0x01F2, "dz"}, {0x01F3, "dz"},
    {0x01F4, "g"}, {0x01F5, "g"}, {0x01F6, "ƕ"}, {0x01F7, "ƿ"}, {0x01F8, "n"},
    {0x01F9, "n"}, {0x01FA, "a"}, {0x01FB, "a"}, {0x01FC, "æ"}, {0x01FD, "æ"},
    {0x01FE, "ø"}, {0x01FF, "ø"}, {0x0200, "a"}, {0x0201, "a"}, {0x0202, "a"},
    {0x0203, "a"}, {0x0204, "e"}, {0x0205, "e"}, {0x0206, "e"}, {0x0207, "e"},
    {0x0208, "i"}, {0x0209, "i"}, {0x020A, "i"}, {0x020B, "i"}, {0x020C, "o"},
    {0x020D, "o"}, {0x020E, "o"}, {0x020F, "o"}, {0x0210, "r"}, {0x0211, "r"},
    {0x0212, "r"}, {0x0213, "r"}, {0x0214, "u"}, {0x0215, "u"}, {0x0216, "u"},
    {0x0217, "u"}, {0x0218, "s"}, {0x0219, "s"}, {0x021A, "t"}, {0x021B, "t"},
    {0x021C, "ȝ"}, {0x021E, "h"}, {0x021F, "h"}, {0x0220, "ƞ"}, {0x0222, "ȣ"},
    {0x0224, "ȥ"}, {0x0226, "a"}, {0x0227, "a"}, {0x0228, "e"}, {0x0229, "e"},
    {0x022A, "o"}, {0x022B, "o"}, {0x022C, "o"}, {0x022D, "o"}, {0x022E, "o"},
    {0x022F, "o"}, {0x0230, "o"}, {0x0231, "o"}, {0x0232, "y"}, {0x0233, "y"},
    {0x023A, "ⱥ"}, {0x023B, "ȼ"}, {0x023D, "ƚ"}, {0x023E, "ⱦ"}, {0x0241, "ɂ"},
    {0x0243, "ƀ"}, {0x0244, "ʉ"}, {0x0245, "ʌ"}, {0x0246, "ɇ"}, {0x0248, "ɉ"},
    {0x024A, "ɋ"}, {0x024C, "ɍ"}, {0x024E, "ɏ"}, {0x1E00, "a"}, {0x1E01, "a"},
    {0x1E02, "b"}, {0x1E03, "b"}, {0x1E04, "b"}, {0x1E05, "b"}, {0x1E06, "b"},
    {0x1E07, "b"}, {0x1E08, "c"}, {0x1E09, "c"}, {0x1E0A, "d"}, {0x1E0B, "d"},
    {0x1E0C, "d"}, {0x1E0D, "d"}, {0x1E0E, "d"}, {0x1E0F, "d"}, {0x1E10, "d"},
    {0x1E11, "d"}, {0x1E12, "d"}, {0x1E13, "d"}, {0x1E14, "e"}, {0x1E15, "e"},
    {0x1E16, "e"}, {0x1E17, "e"}, {0x1E18, "e"}, {0x1E19, "e"}, {0x1E1A, "e"},
    {0x1E1B, "e"}, {0x1E1C, "e"}, {0x1E1D, "e"}, {0x1E1E, "f"}, {0x1E1F, "f"},
    {0x1E20, "g"}, {0x1E21, "g"}, {0x1E22, "h"}, {0x1E23, "h"}, {0x1E24, "h"},
    {0x1E25, "h"}, {0x1E26, "h"}, {0x1E27, "h"}, {0x1E28, "h"}, {0x1E29, "h"},
    {0x1E2A, "h"}, {0x1E2B, "h"}, {0x1E2C, "i"}, {0x1E2D, "i"}, {0x1E2E, "i"},
    {0x1E2F, "i"}, {0x1E30, "k"}, {0x1E31, "k"}, {0x1E32, "k"}, {0x1E33, "k"},
    {0x1E34, "k"}, {0x1E35, "k"}, {0x1E36, "l"}, {0x1E37, "l"}, {0x1E38, "l"},
    {0x1E39, "l"}, {0x1E3A, "l"}, {0x1E3B, "l"}, {0x1E3C, "l"}, {0x1E3D, "l"},
    {0x1E3E, "m"}, {0x1E3F, "m"}, {0x1E40, "m"}, {0x1E41, "m"}, {0x1E42, "m"},
    {0x1E43, "m"}, {0x1E44, "n"}, {0x1E45, "n"}, {0x1E46, "n"}, {0x1E47, "n"},
    {0x1E48, "n"}, {0x1E49, "n"}, {0x1E4A, "n"}, {0x1E4B, "n"}, {0x1E4C, "o"},
    {0x1E4D, "o"}, {0x1E4E, "o"}, {0x1E4F, "o"}, {0x1E50, "o"}, {0x1E51, "o"},
    {0x1E52, "o"}, {0x1E53, "o"}, {0x1E54, "p"}, {0x1E55, "p"}, {0x1E56, "p"},
    {0x1E57, "p"}, {0x1E58, "r"}, {0x1E59, "r"}, {0x1E5A, "r"}, {0x1E5B, "r"},
    {0x1E5C, "r"}, {0x1E5D, "r"}, {0x1E5E, "r"}, {0x1E5F, "r"}, {0x1E60, "s"},
    {0x1E61, "s"}, {0x1E62, "s"}, {0x1E63, "s"}, {0x1E64, "s"}, {0x1E65, "s"},
    {0x1E66, "s"}, {0x1E67, "s"}, {0x1E68, "s"}, {0x1E69, "s"}, {0x1E6A, "t"},
    {0x1E6B, "t"}, {0x1E6C, "t"}, {0x1E6D, "t"}, {0x1E6E, "t"}, {0x1E6F, "t"},
    {0x1E70, "t"}, {0x1E71, "t"}, {0x1E72, "u"}, {0x1E73, "u"}, {0x1E74, "u"},
    {0x1E75, "u"}, {0x1E76, "u"}, {0x1E77, "u"}, {0x1E78, "u"}, {0x1E79, "u"},
    {0x1E7A, "u"}, {0x1E7B, "u"}, {0x1E7C, "v"}, {0x1E7D, "v"}, {0x1E7E, "v"},
    {0x1E7F, "v"}, {0x1E80, "w"}, {0x1E81, "w"}, {0x1E82, "w"}, {0x1E83, "w"},
    {0x1E84, "w"}, {0x1E85, "w"}, {0x1E86, "w"}, {0x1E87, "w"}, {0x1E88, "w"},
    {0x1E89, "w"}, {0x1E8A, "x"}, {0x1E8B, "x"}, {0x1E8C, "x"}, {0x1E8D, "x"},
    {0x1E8E, "y"}, {0x1E8F, "y"}, {0x1E90, "z"}, {0x1E91, "z"}, {0x1E92, "z"},
    {0x1E93, "z"}, {0x1E94, "z"}, {0x1E95, "z"}, {0x1E96, "h"}, {0x1E97, "t"},
    {0x1E98, "w"}, {0x1E99, "y"}, {0x1E9A, "aʾ"}, {0x1E9B, "s"}, {0x1E9E, "ß"},
    {0x1EA0, "a"}, {0x1EA1, "a"}, {0x1EA2, "a"}, {0x1EA3, "a"}, {0x1EA4, "a"},
    {0x1EA5, "a"}, {0x1EA6, "a"}, {0x1EA7, "a"}, {0x1EA8, "a"}, {0x1EA9, "a"},
    {0x1EAA, "a"}, {0x1EAB, "a"}, {0x1EAC, "a"}, {0x1EAD, "a"}, {0x1EAE, "a"},
    {0x1EAF, "a"}, {0x1EB0, "a"}, {0x1EB1, "a"}, {0x1EB2, "a"}, {0x1EB3, "a"},
    {0x1EB4, "a"}, {0x1EB5, "a"}, {0x1EB6, "a"}, {0x1EB7, "a"}, {0x1EB8, "e"},
    {0x1EB9, "e"}, {0x1EBA, "e"}, {0x1EBB, "e"}, {0x1EBC, "e"}, {0x1EBD, "e"},
    {0x1EBE, "e"}, {0x1EBF, "e"}, {0x1EC0, "e"}, {0x1EC1, "e"}, {0x1EC2, "e"},
    {0x1EC3, "e"}, {0x1EC4, "e"}, {0x1EC5, "e"}, {0x1EC6, "e"}, {0x1EC7, "e"},
    {0x1EC8, "i"}, {0x1EC9, "i"}, {0x1ECA, "i"}, {0x1ECB, "i"}, {0x1ECC, "o"},
    {0x1ECD, "o"}, {0x1ECE, "o"}, {0x1ECF, "o"}, {0x1ED0, "o"}, {0x1ED1, "o"},
    {0x1ED2, "o"}, {0x1ED3, "o"}, {0x1ED4, "o"}, {0x1ED5, "o"}, {0x1ED6, "o"},
    {0x1ED7, "o"}, {0x1ED8, "o"}, {0x1ED9, "o"}, {0x1EDA, "o"}, {0x1EDB, "o"},
    {0x1EDC, "o"}, {0x1EDD, "o"}, {0x1EDE, "o"}, {0x1EDF, "o"}, {0x1EE0, "o"},
    {0x1EE1, "o"}, {0x1EE2, "o"}, {0x1EE3, "o"}, {0x1EE4, "u"}, {0x1EE5, "u"},
    {0x1EE6, "u"}, {0x1EE7, "u"}, {0x1EE8, "u"}, {0x1EE9, "u"}, {0x1EEA, "u"},
    {0x1EEB, "u"}, {0x1EEC, "u"}, {0x1EED, "u"}, {0x1EEE, "u"}, {0x1EEF, "u"},
    {0x1EF0, "u"}, {0x1EF1, "u"}, {0x1EF2, "y"}, {0x1EF3, "y"}, {0x1EF4, "y"},
    {0x1EF5, "y"}, {0x1EF6, "y"}, {0x1EF7, "y"}, {0x1EF8, "y"}, {0x1EF9, "y"},
    {0x1EFA, "ỻ"}, {0x1EFC, "ỽ"}, {0x1EFE, "ỿ"}, {0x2000, " "}, {0x2001, " "},
    {0x2002, " "}, {0x2003, " "}, {0x2004, " "}, {0x2005, " "}, {0x2006, " "},
    {0x2007, " "}, {0x2008, " "}, {0x2009, " "}, {0x200A, " "}, {0x2011, "‐"},
    {0x2017, " "}, {0x2024, "."}, {0x2025, ".."}, {0x2026, "..."}, {0x202F, " "},
    {0x2033, "′′"}, {0x2034, "′′′"}, {0x2036, "‵‵"}, {0x2037, "‵‵‵"}, {0x203C, "!!"},
    {0x203E, " "}, {0x2047, "??"}, {0x2048, "?!"}, {0x2049, "!?"}, {0x2057, "′′′′"},
    {0x205F, " "}, {0x3000, " "}, {0xFB00, "ff"}, {0xFB01, "fi"}, {0xFB02, "fl"},
    {0xFB03, "ffi"}, {0xFB04, "ffl"}, {0xFB05, "st"}, {0xFB06, "st"},
};
static const size_t coco_nfold = sizeof coco_fold / sizeof coco_fold[0];

static const char *coco_fold_lookup(uint32_t c) {
    size_t lo = 0, hi = coco_nfold;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (coco_fold[mid].cp < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < coco_nfold && coco_fold[lo].cp == c ? coco_fold[lo].to : NULL;
}

// ---- images and transforms — images and transforms (model.h section 8b).
//
// Decoding through stb_image (always 8-bit RGB), and the train/val transforms of
// SPEC.md with torchvision 0.14's tensor-path semantics on the float image u8/255:
// RandomResizedCrop (get_params + F.resized_crop, bilinear, antialias off), Resize +
// CenterCrop, hflip (with the caption's left/right swap), ColorJitter
// (adjust_brightness/contrast/saturation/hue), Normalize. Images are planar float
// (3,H,W) once decoded pixels are resampled; crop + resize read the u8 source directly.
// test/make_image_fixtures.py produces the torchvision references the tests compare to.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <stb/stb_image.h>
#include "model.h"

// ----------------------------------------------------------------------------
// decoding

static const char *img_stb_reason(void) {
    const char *r = stbi_failure_reason();
    return r && *r ? r : "unknown error";
}

int image_load_memory(Image *img, const void *data, size_t n, const char *name,
                      char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    if (!name) name = "<memory>";
    if (!data || n == 0) {
        snprintf(err, errlen, "%s: empty file, not an image", name);
        return -1;
    }
    if (n > (size_t)INT_MAX) {
        snprintf(err, errlen, "%s: file too large to decode (%zu bytes)", name, n);
        return -1;
    }
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory(data, (int)n, &w, &h, &comp)) {
        snprintf(err, errlen, "%s: cannot decode image: %s", name, img_stb_reason());
        return -1;
    }
    if (w <= 0 || h <= 0) {
        snprintf(err, errlen, "%s: image has zero size (%dx%d)", name, w, h);
        return -1;
    }
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE || (long)w * h > IMAGE_MAX_PIXELS) {
        snprintf(err, errlen, "%s: image is %dx%d pixels, over the limit (%d per side, "
                 "%ld pixels)", name, w, h, IMAGE_MAX_SIDE, (long)IMAGE_MAX_PIXELS);
        return -1;
    }
    int w2 = 0, h2 = 0;
    uint8_t *px = stbi_load_from_memory(data, (int)n, &w2, &h2, &comp, 3);
    if (!px) {
        snprintf(err, errlen, "%s: cannot decode image: %s", name, img_stb_reason());
        return -1;
    }
    if (w2 != w || h2 != h) {      // header and data disagree: do not trust either
        stbi_image_free(px);
        snprintf(err, errlen, "%s: cannot decode image: size changed while decoding",
                 name);
        return -1;
    }
    img->w = w;
    img->h = h;
    img->rgb = px;
    return 0;
}

int image_load(Image *img, const char *path, char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        snprintf(err, errlen, "%s: cannot read: is a directory", path);
        return -1;
    }
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 1 << 16, n = 0;
    unsigned char *buf = xmalloc(cap);
    for (;;) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0 || n < cap) break;
        if (cap >= (size_t)INT_MAX) break;
        cap *= 2;
        buf = realloc(buf, cap);
        if (!buf) fatal("out of memory reading %s", path);
    }
    int rerr = ferror(f) ? errno : 0;
    fclose(f);
    if (rerr) {
        free(buf);
        snprintf(err, errlen, "%s: cannot read: %s", path, strerror(rerr));
        return -1;
    }
    int r = image_load_memory(img, buf, n, path, err, errlen);
    free(buf);
    return r;
}

void image_free(Image *img) {
    if (img->rgb) stbi_image_free(img->rgb);
    memset(img, 0, sizeof *img);
}

// ----------------------------------------------------------------------------
// random resized crop parameters (torchvision RandomResizedCrop.get_params)

static int img_randint(Rng *rng, int n) {      // uniform in [0, n)
    int k = (int)(rng_uniform(rng) * n);
    return k < n ? k : n - 1;
}

int rrc_get_params(int H, int W, const double scale[2], const double ratio[2], Rng *rng,
                   CropBox *box) {
    double area = (double)H * W;
    double lr0 = log(ratio[0]), lr1 = log(ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * (scale[0] + (scale[1] - scale[0]) * rng_uniform(rng));
        double aspect = exp(lr0 + (lr1 - lr0) * rng_uniform(rng));
        double w = rint(sqrt(target * aspect)), h = rint(sqrt(target / aspect));
        if (0 < w && w <= W && 0 < h && h <= H) {
            box->h = (int)h;
            box->w = (int)w;
            box->top = img_randint(rng, H - box->h + 1);
            box->left = img_randint(rng, W - box->w + 1);
            return 0;
        }
    }
    // fallback: the centre crop, its aspect clamped to the ratio range
    double in_ratio = (double)W / H;
    double rmin = ratio[0] < ratio[1] ? ratio[0] : ratio[1];
    double rmax = ratio[0] < ratio[1] ? ratio[1] : ratio[0];
    double w = W, h = H;
    if (in_ratio < rmin) h = rint(w / rmin);
    else if (in_ratio > rmax) w = rint(h * rmax);
    if (!(h >= 1)) h = 1;                      // degenerate ratio options only
    if (!(w >= 1)) w = 1;
    if (h > H) h = H;
    if (w > W) w = W;
    box->h = (int)h;
    box->w = (int)w;
    box->top = (H - box->h) / 2;
    box->left = (W - box->w) / 2;
    return 1;
}

// ----------------------------------------------------------------------------
// the resampler: a lazily composed view (box of a source -> resize -> window) that is
// turned into a planar float image in one pass

typedef struct img_View {
    const uint8_t *u8;      // source: u8 HWC (an Image) ...
    const float *f;         // ... or planar float (3, sh, sw)
    int sh, sw;
    int bt, bl, bh, bw;     // box in the source
    int rh, rw;             // the box resized to rh x rw (== bh x bw: no resize)
    int wt, wl, oh, ow;     // output window on the resized grid (may stick out)
    int vt, vl, vb, vr;     // valid part of the resized grid: outside it is zero
} img_View;

static void img_view_full(img_View *v, int h, int w) {
    v->sh = h; v->sw = w;
    v->bt = v->bl = 0; v->bh = v->rh = h; v->bw = v->rw = w;
    v->wt = v->wl = 0; v->oh = h; v->ow = w;
    v->vt = v->vl = 0; v->vb = h; v->vr = w;
}

static void img_view_u8(img_View *v, const Image *img) {
    v->u8 = img->rgb;
    v->f = NULL;
    img_view_full(v, img->h, img->w);
}

static void img_view_float(img_View *v, const float *chw, int h, int w) {
    v->u8 = NULL;
    v->f = chw;
    img_view_full(v, h, w);
}

static int img_view_resized(const img_View *v) { return v->rh != v->bh || v->rw != v->bw; }
static int img_view_padded(const img_View *v) {
    return v->wt < v->vt || v->wl < v->vl || v->wt + v->oh > v->vb || v->wl + v->ow > v->vr;
}

// A pending crop without resize or padding is just a smaller box: fold it in. Returns
// 1 when the view is such a plain box afterwards.
static int img_view_fold(img_View *v) {
    if (img_view_resized(v) || img_view_padded(v)) return 0;
    v->bt += v->wt; v->bl += v->wl;
    v->bh = v->rh = v->oh; v->bw = v->rw = v->ow;
    v->wt = v->wl = 0;
    v->vt = v->vl = 0; v->vb = v->oh; v->vr = v->ow;
    return 1;
}

// The view is exactly its float source.
static int img_view_identity(img_View *v) {
    return v->f && img_view_fold(v) && v->bt == 0 && v->bl == 0 && v->bh == v->sh &&
           v->bw == v->sw;
}

// Set a resize of the (plain box) view to h x w.
static void img_view_resize(img_View *v, int h, int w) {
    if (h == v->bh && w == v->bw) return;      // torchvision skips same-size resizes
    v->rh = h; v->rw = w;
    v->wt = v->wl = 0; v->oh = h; v->ow = w;
    v->vt = v->vl = 0; v->vb = h; v->vr = w;
}

// F.center_crop of the current window to ch x cw, zero padding as torchvision.
static void img_view_center_crop(img_View *v, int ch, int cw) {
    int ih = v->oh, iw = v->ow;
    if (cw > iw || ch > ih) {
        int pl = cw > iw ? (cw - iw) / 2 : 0, pt = ch > ih ? (ch - ih) / 2 : 0;
        int pr = cw > iw ? (cw - iw + 1) / 2 : 0, pb = ch > ih ? (ch - ih + 1) / 2 : 0;
        // what lies outside the current window is padding now
        if (v->vt < v->wt) v->vt = v->wt;
        if (v->vl < v->wl) v->vl = v->wl;
        if (v->vb > v->wt + ih) v->vb = v->wt + ih;
        if (v->vr > v->wl + iw) v->vr = v->wl + iw;
        ih += pt + pb; iw += pl + pr;
        v->wt -= pt; v->wl -= pl; v->oh = ih; v->ow = iw;
        if (ch == ih && cw == iw) return;
    }
    v->wt += (int)rint((ih - ch) / 2.0);       // Python's round: half to even
    v->wl += (int)rint((iw - cw) / 2.0);
    v->oh = ch; v->ow = cw;
}

// Bilinear taps of one axis (PyTorch upsample_bilinear2d, align_corners=False):
// output index d reads resized-grid index g = off + d; src = scale*(g+0.5)-0.5 in the
// box (clamped at 0), i1 = i0+1 except at the last pixel. Indices are absolute source
// indices. Positions outside [vlo, vhi) get weight 0 (padding).
typedef struct img_Tap { int i0, i1; float l0, l1; } img_Tap;

static void img_taps(img_Tap *t, int n, int off, int rsize, int bsize, int base, int vlo,
                     int vhi) {
    float scale = (float)bsize / (float)rsize;
    for (int d = 0; d < n; d++) {
        int g = off + d;
        if (g < vlo || g >= vhi) {
            t[d] = (img_Tap){base, base, 0.0f, 0.0f};
            continue;
        }
        float src = scale * ((float)g + 0.5f) - 0.5f;
        if (src < 0) src = 0;
        int i0 = (int)src;
        if (i0 > bsize - 1) i0 = bsize - 1;
        int i1 = i0 + (i0 < bsize - 1 ? 1 : 0);
        float l1 = src - (float)i0;
        l1 = l1 < 0 ? 0 : (l1 > 1 ? 1 : l1);
        t[d] = (img_Tap){base + i0, base + i1, 1.0f - l1, l1};
    }
}

// One horizontally interpolated source row r into planar row buffer out (3, ow).
static void img_hrow(const img_View *v, const img_Tap *tx, int ow, int r, float *out,
                     const float *lut) {
    float *o0 = out, *o1 = out + ow, *o2 = out + 2 * ow;
    if (v->u8) {
        const uint8_t *row = v->u8 + (size_t)r * v->sw * 3;
        for (int x = 0; x < ow; x++) {
            const uint8_t *p = row + 3 * tx[x].i0, *q = row + 3 * tx[x].i1;
            float a = tx[x].l0, b = tx[x].l1;
            o0[x] = lut[p[0]] * a + lut[q[0]] * b;
            o1[x] = lut[p[1]] * a + lut[q[1]] * b;
            o2[x] = lut[p[2]] * a + lut[q[2]] * b;
        }
    } else {
        size_t plane = (size_t)v->sh * v->sw;
        for (int c = 0; c < 3; c++) {
            const float *row = v->f + c * plane + (size_t)r * v->sw;
            float *o = out + (size_t)c * ow;
            for (int x = 0; x < ow; x++)
                o[x] = row[tx[x].i0] * tx[x].l0 + row[tx[x].i1] * tx[x].l1;
        }
    }
}

// Render the view into dst (3, oh, ow). Separable: each needed source row is
// interpolated horizontally once (two cached rows), then rows are blended vertically:
// out = (p00*wx0 + p01*wx1)*wy0 + (p10*wx0 + p11*wx1)*wy1, PyTorch's order.
static void img_resample(const img_View *v, float *dst) {
    int oh = v->oh, ow = v->ow;
    size_t plane = (size_t)oh * ow;
    img_Tap *tx = xmalloc(sizeof(img_Tap) * (size_t)(ow + oh)), *ty = tx + ow;
    img_taps(tx, ow, v->wl, v->rw, v->bw, v->bl, v->vl, v->vr);
    img_taps(ty, oh, v->wt, v->rh, v->bh, v->bt, v->vt, v->vb);
    float lut[256];
    for (int i = 0; i < 256; i++) lut[i] = (float)i / 255.0f;
    float *cache = xmalloc(sizeof(float) * 6 * (size_t)ow);
    int tag[2] = {-1, -1};
    for (int y = 0; y < oh; y++) {
        int rows[2] = {ty[y].i0, ty[y].i1};
        float *rp[2];
        int used = -1;                          // the slot rows[0] is in
        for (int k = 0; k < 2; k++) {
            int s = tag[0] == rows[k] ? 0 : tag[1] == rows[k] ? 1 : -1;
            if (s < 0) {
                // k 0: keep a slot that already holds rows[1]; k 1: keep rows[0]'s slot
                s = k == 0 ? (tag[0] == rows[1] ? 1 : 0) : (used == 0 ? 1 : 0);
                img_hrow(v, tx, ow, rows[k], cache + (size_t)s * 3 * ow, lut);
                tag[s] = rows[k];
            }
            if (k == 0) used = s;
            rp[k] = cache + (size_t)s * 3 * ow;
        }
        float wa = ty[y].l0, wb = ty[y].l1;
        for (int c = 0; c < 3; c++) {
            const float *a = rp[0] + (size_t)c * ow, *b = rp[1] + (size_t)c * ow;
            float *o = dst + c * plane + (size_t)y * ow;
            for (int x = 0; x < ow; x++) o[x] = a[x] * wa + b[x] * wb;
        }
    }
    free(cache);
    free(tx);
}

void image_resized_crop(const Image *img, CropBox box, int oh, int ow, float *out_chw) {
    if (box.top < 0 || box.left < 0 || box.h <= 0 || box.w <= 0 ||
        box.top + box.h > img->h || box.left + box.w > img->w || oh <= 0 || ow <= 0)
        fatal("image_resized_crop: box %d,%d %dx%d -> %dx%d outside a %dx%d image",
              box.top, box.left, box.h, box.w, oh, ow, img->h, img->w);
    img_View v;
    img_view_u8(&v, img);
    v.bt = box.top; v.bl = box.left; v.bh = v.rh = box.h; v.bw = v.rw = box.w;
    v.oh = box.h; v.ow = box.w; v.vb = box.h; v.vr = box.w;
    img_view_resize(&v, oh, ow);
    img_resample(&v, out_chw);
}

static void img_smallest_size(int h, int w, int R, int *nh, int *nw) {
    int shorter = w <= h ? w : h, longer = w <= h ? h : w;
    int nl = (int)((double)((long)R * longer) / shorter);
    if (w <= h) { *nw = R; *nh = nl; } else { *nh = R; *nw = nl; }
}

void image_resize_center_crop(const Image *img, int R, int S, float *out_chw) {
    img_View v;
    img_view_u8(&v, img);
    int nh, nw;
    img_smallest_size(img->h, img->w, R, &nh, &nw);
    img_view_resize(&v, nh, nw);
    img_view_center_crop(&v, S, S);
    img_resample(&v, out_chw);
}

// ----------------------------------------------------------------------------
// flip and the caption's left/right

void image_hflip(float *chw, int C, int H, int W) {
    for (long r = 0; r < (long)C * H; r++) {
        float *row = chw + r * W;
        for (int a = 0, b = W - 1; a < b; a++, b--) {
            float t = row[a]; row[a] = row[b]; row[b] = t;
        }
    }
}

static int img_wordch(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           c >= 0x80;
}

static int img_word_at(const char *s, size_t i, size_t n, const char *w, size_t wl) {
    if (i + wl > n || memcmp(s + i, w, wl) != 0) return 0;
    if (i > 0 && img_wordch((unsigned char)s[i - 1])) return 0;
    if (i + wl < n && img_wordch((unsigned char)s[i + wl])) return 0;
    return 1;
}

char *caption_swap_left_right(const char *caption) {
    size_t n = strlen(caption), extra = 0;
    for (size_t i = 0; i < n; i++)
        if (img_word_at(caption, i, n, "left", 4)) extra++, i += 3;
    char *out = xmalloc(n + extra + 1), *o = out;
    for (size_t i = 0; i < n;) {
        if (img_word_at(caption, i, n, "left", 4)) {
            memcpy(o, "right", 5); o += 5; i += 4;
        } else if (img_word_at(caption, i, n, "right", 5)) {
            memcpy(o, "left", 4); o += 4; i += 5;
        } else {
            *o++ = caption[i++];
        }
    }
    *o = 0;
    return out;
}

// ----------------------------------------------------------------------------
// colour: torchvision 0.14 functional_tensor, float32 throughout

static inline float img_clamp01(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }

// rgb_to_grayscale: (0.2989 * r + 0.587 * g + 0.114 * b)
static inline float img_gray(float r, float g, float b) {
    return 0.2989f * r + 0.587f * g + 0.114f * b;
}

void adjust_brightness(float *chw, long hw, double factor) {
    float a = (float)factor;                   // blend with zeros: a*x + (1-a)*0 = a*x
    for (long i = 0; i < 3 * hw; i++) chw[i] = img_clamp01(a * chw[i]);
}

void adjust_contrast(float *chw, long hw, double factor) {
    const float *r = chw, *g = chw + hw, *b = chw + 2 * hw;
    double sum = 0;
    for (long i = 0; i < hw; i++) sum += img_gray(r[i], g[i], b[i]);
    float mean = (float)(sum / (double)hw);
    float a = (float)factor, bm = (float)(1.0 - factor) * mean;
    for (long i = 0; i < 3 * hw; i++) chw[i] = img_clamp01(a * chw[i] + bm);
}

void adjust_saturation(float *chw, long hw, double factor) {
    float *r = chw, *g = chw + hw, *b = chw + 2 * hw;
    float a = (float)factor, c = (float)(1.0 - factor);
    for (long i = 0; i < hw; i++) {
        float gy = c * img_gray(r[i], g[i], b[i]);
        r[i] = img_clamp01(a * r[i] + gy);
        g[i] = img_clamp01(a * g[i] + gy);
        b[i] = img_clamp01(a * b[i] + gy);
    }
}

// _rgb2hsv, h = (h + factor) % 1.0 (Python-style remainder), _hsv2rgb.
void adjust_hue(float *chw, long hw, double factor) {
    float *R = chw, *G = chw + hw, *B = chw + 2 * hw;
    float hf = (float)factor;
    for (long i = 0; i < hw; i++) {
        float r = R[i], g = G[i], b = B[i];
        float maxc = r > g ? r : g, minc = r < g ? r : g;
        maxc = maxc > b ? maxc : b;
        minc = minc < b ? minc : b;
        int eqc = maxc == minc;
        float cr = maxc - minc;
        float s = cr / (eqc ? 1.0f : maxc);
        float crd = eqc ? 1.0f : cr;
        float rc = (maxc - r) / crd, gc = (maxc - g) / crd, bc = (maxc - b) / crd;
        float h;
        if (maxc == r) h = bc - gc;
        else if (maxc == g) h = 2.0f + rc - bc;
        else h = 4.0f + gc - rc;
        // fmod(x, 1) for x in [5/6, 11/6] and then (h + hf) % 1 for h + hf in
        // [-0.5, 1.5), without libm's fmodf: x - 1 is exact there (Sterbenz), so the
        // results are the same floats, and the loop stays free of calls.
        h = h / 6.0f + 1.0f;
        h = h >= 1.0f ? h - 1.0f : h;
        h = h + hf;                            // (h + hue_factor) % 1.0, Python-style
        float m = h >= 1.0f ? h - 1.0f : h;
        if (m < 0) m += 1.0f;
        h = m;
        float v = maxc;
        float h6 = h * 6.0f, fi = floorf(h6), f = h6 - fi;
        int k = ((int)fi) % 6;
        if (k < 0) k += 6;
        float p = img_clamp01(v * (1.0f - s));
        float q = img_clamp01(v * (1.0f - s * f));
        float t = img_clamp01(v * (1.0f - s * (1.0f - f)));
        switch (k) {
        case 0: r = v; g = t; b = p; break;
        case 1: r = q; g = v; b = p; break;
        case 2: r = p; g = v; b = t; break;
        case 3: r = p; g = q; b = v; break;
        case 4: r = t; g = p; b = v; break;
        default: r = v; g = p; b = q; break;
        }
        R[i] = r; G[i] = g; B[i] = b;
    }
}

ColorJitter color_jitter_make(double brightness, double contrast, double saturation,
                              double hue, double p) {
    ColorJitter cj;
    double v[3] = {brightness, contrast, saturation};
    for (int k = 0; k < 3; k++) {
        cj.lo[k] = 1.0 - v[k] > 0 ? 1.0 - v[k] : 0;
        cj.hi[k] = 1.0 + v[k];
    }
    cj.lo[3] = -hue;
    cj.hi[3] = hue;
    cj.p = p;
    return cj;
}

JitterParams color_jitter_params(const ColorJitter *cj, Rng *rng) {
    JitterParams jp;
    memset(&jp, 0, sizeof jp);
    for (int k = 0; k < 4; k++) jp.order[k] = k, jp.factor[k] = k == 3 ? 0.0 : 1.0;
    jp.apply = rng_uniform(rng) < cj->p;
    if (!jp.apply) return jp;
    for (int i = 3; i > 0; i--) {
        int j = img_randint(rng, i + 1), t = jp.order[i];
        jp.order[i] = jp.order[j];
        jp.order[j] = t;
    }
    for (int k = 0; k < 4; k++)
        jp.factor[k] = cj->lo[k] + (cj->hi[k] - cj->lo[k]) * rng_uniform(rng);
    return jp;
}

void color_jitter_apply(float *chw, long hw, const JitterParams *jp) {
    if (!jp->apply) return;
    for (int k = 0; k < 4; k++) {
        double f = jp->factor[jp->order[k]];
        switch (jp->order[k]) {
        case 0: if (f != 1.0) adjust_brightness(chw, hw, f); break;
        case 1: if (f != 1.0) adjust_contrast(chw, hw, f); break;
        case 2: if (f != 1.0) adjust_saturation(chw, hw, f); break;
        default: if (f != 0.0) adjust_hue(chw, hw, f); break;
        }
    }
}

const float IMAGENET_MEAN[3] = {0.485f, 0.456f, 0.406f};
const float IMAGENET_STD[3] = {0.229f, 0.224f, 0.225f};

void normalize_imagenet(float *chw, long hw) {
    for (int c = 0; c < 3; c++) {
        float m = IMAGENET_MEAN[c], s = IMAGENET_STD[c];
        float *x = chw + c * hw;
        for (long i = 0; i < hw; i++) x[i] = (x[i] - m) / s;
    }
}

// ----------------------------------------------------------------------------
// the pipelines

static const char *const img_tf_names[] = {
    [TF_RANDOM_RESIZED_CROP] = "random_resized_crop", [TF_SMALLEST_RESIZE] = "smallest_resize",
    [TF_GLOBAL_RESIZE] = "global_resize",             [TF_CENTER_CROP] = "center_crop",
    [TF_HORIZONTAL_FLIP] = "horizontal_flip",         [TF_COLOR_JITTER] = "color_jitter",
    [TF_NORMALIZE] = "normalize",
};
#define IMG_NTF ((int)(sizeof img_tf_names / sizeof img_tf_names[0]))

static const char *img_skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

static const char *img_number(const char *p, double *v) {
    char *end;
    *v = strtod(p, &end);
    return end == p || !isfinite(*v) ? NULL : end;
}

// Options "{'key': value, 'key': (lo, hi)}" (Python dict syntax; lists too). Calls
// set() for each; returns 0 or -1 with a message.
typedef int (*img_opt_fn)(TransformStep *st, const char *key, const double *v, int pair,
                          char *why, size_t whylen);

static int img_parse_opts(const char *opts, TransformStep *st, img_opt_fn set,
                          const char *name, char *err, size_t errlen) {
    const char *p = img_skip_ws(opts);
    char why[160] = "";
    if (*p != '{') { snprintf(why, sizeof why, "expected '{' after '::'"); goto bad; }
    p = img_skip_ws(p + 1);
    while (*p != '}') {
        char q = *p, key[32];
        if (q != '\'' && q != '"') { snprintf(why, sizeof why, "expected a quoted key"); goto bad; }
        const char *k0 = ++p;
        while (*p && *p != q) p++;
        if (!*p || p - k0 >= (long)sizeof key) { snprintf(why, sizeof why, "bad key"); goto bad; }
        memcpy(key, k0, (size_t)(p - k0));
        key[p - k0] = 0;
        p = img_skip_ws(p + 1);
        if (*p != ':') { snprintf(why, sizeof why, "expected ':' after '%s'", key); goto bad; }
        p = img_skip_ws(p + 1);
        double v[2] = {0, 0};
        int pair = 0;
        if (*p == '(' || *p == '[') {
            char close = *p == '(' ? ')' : ']';
            pair = 1;
            p = img_number(img_skip_ws(p + 1), &v[0]);
            if (p) p = img_skip_ws(p);
            if (p && *p == ',') p = img_number(img_skip_ws(p + 1), &v[1]);
            else p = NULL;
            if (p) p = img_skip_ws(p);
            if (!p || *p != close) {
                snprintf(why, sizeof why, "'%s': expected a pair of numbers (lo, hi)", key);
                goto bad;
            }
            p++;
        } else {
            p = img_number(p, &v[0]);
            if (!p) { snprintf(why, sizeof why, "'%s': expected a number", key); goto bad; }
        }
        if (set(st, key, v, pair, why, sizeof why)) goto bad;
        p = img_skip_ws(p);
        if (*p == ',') p = img_skip_ws(p + 1);
        else if (*p != '}') { snprintf(why, sizeof why, "expected ',' or '}'"); goto bad; }
    }
    p = img_skip_ws(p + 1);
    if (*p) { snprintf(why, sizeof why, "unexpected text after '}'"); goto bad; }
    return 0;
bad:
    snprintf(err, errlen, "image transform \"%s\": %s", name, why);
    return -1;
}

static int img_set_option(TransformStep *st, const char *key, const double *v, int pair,
                          char *why, size_t whylen) {
    const char *op = img_tf_names[st->op];
    if (st->op == TF_RANDOM_RESIZED_CROP &&
        (!strcmp(key, "scale") || !strcmp(key, "ratio"))) {
        int isscale = key[0] == 's';
        if (!pair || !(v[0] > 0) || !(v[0] <= v[1]) || (isscale && v[1] > 1)) {
            snprintf(why, whylen, "'%s' must be a pair (lo, hi) with 0 < lo <= hi%s", key,
                     isscale ? " <= 1" : "");
            return -1;
        }
        double *dst = isscale ? st->scale : st->ratio;
        dst[0] = v[0];
        dst[1] = v[1];
        return 0;
    }
    if ((st->op == TF_HORIZONTAL_FLIP || st->op == TF_COLOR_JITTER) && !strcmp(key, "p")) {
        if (pair || !(v[0] >= 0 && v[0] <= 1)) {
            snprintf(why, whylen, "'p' must be a number in [0, 1]");
            return -1;
        }
        if (st->op == TF_HORIZONTAL_FLIP) st->p = v[0];
        else st->jitter.p = v[0];
        return 0;
    }
    if (st->op == TF_COLOR_JITTER) {
        static const char *const comp[4] = {"brightness", "contrast", "saturation", "hue"};
        for (int k = 0; k < 4; k++) {
            if (strcmp(key, comp[k])) continue;
            double lo, hi;
            if (pair) lo = v[0], hi = v[1];
            else if (k == 3) lo = -v[0], hi = v[0];
            else lo = 1 - v[0] > 0 ? 1 - v[0] : 0, hi = 1 + v[0];
            int ok = lo <= hi && (k == 3 ? (lo >= -0.5 && hi <= 0.5) : lo >= 0) &&
                     (pair || v[0] >= 0);
            if (!ok) {
                snprintf(why, whylen, "'%s' out of range (%s)", key,
                         k == 3 ? "a value in [0, 0.5] or a pair within [-0.5, 0.5]"
                                : "a value >= 0 or a pair 0 <= lo <= hi");
                return -1;
            }
            st->jitter.lo[k] = lo;
            st->jitter.hi[k] = hi;
            return 0;
        }
    }
    const char *known = st->op == TF_RANDOM_RESIZED_CROP ? "'scale', 'ratio'"
                      : st->op == TF_HORIZONTAL_FLIP     ? "'p'"
                      : st->op == TF_COLOR_JITTER
                          ? "'brightness', 'contrast', 'saturation', 'hue', 'p'"
                          : "none";
    snprintf(why, whylen, "unknown option '%s' for %s (options: %s)", key, op, known);
    return -1;
}

int transform_parse(TransformPipeline *tp, const char names[][64], int n, int S, int R,
                    char *err, size_t errlen) {
    memset(tp, 0, sizeof *tp);
    if (n < 0 || n > CFG_LIST) {
        snprintf(err, errlen, "image transforms: %d steps, at most %d", n, CFG_LIST);
        return -1;
    }
    if (S <= 0 || S > IMAGE_MAX_SIDE || R > IMAGE_MAX_SIDE) {
        snprintf(err, errlen, "image transforms: crop size %d / resize %d out of range "
                 "(1..%d)", S, R, IMAGE_MAX_SIDE);
        return -1;
    }
    tp->n = n;
    tp->S = S;
    tp->R = R > 0 ? R : S;
    for (int i = 0; i < n; i++) {
        const char *name = names[i];
        if (memchr(name, 0, 64) == NULL) {
            snprintf(err, errlen, "image transform %d: name longer than 63 bytes", i + 1);
            return -1;
        }
        const char *sep = strstr(name, "::");
        const char *b0 = img_skip_ws(name);
        size_t blen = sep ? (size_t)(sep - b0) : strlen(b0);
        while (blen && (b0[blen - 1] == ' ' || b0[blen - 1] == '\t')) blen--;
        TransformStep *st = &tp->step[i];
        st->op = -1;
        for (int k = 0; k < IMG_NTF; k++)
            if (strlen(img_tf_names[k]) == blen && !strncmp(b0, img_tf_names[k], blen))
                st->op = k;
        if (st->op < 0) {
            char list[256] = "";
            for (int k = 0; k < IMG_NTF; k++) {
                strcat(list, img_tf_names[k]);
                if (k + 1 < IMG_NTF) strcat(list, ", ");
            }
            snprintf(err, errlen, "image transform \"%s\": unknown name (expected one of: "
                     "%s)", name, list);
            return -1;
        }
        st->scale[0] = 0.2; st->scale[1] = 1.0;
        st->ratio[0] = 3.0 / 4.0; st->ratio[1] = 4.0 / 3.0;
        st->p = 0.5;
        st->jitter = color_jitter_make(0.4, 0.4, 0.4, 0.1, 0.8);
        if (sep && img_parse_opts(sep + 2, st, img_set_option, name, err, errlen)) return -1;
    }
    return 0;
}

// Turn the view into a float image: into out when it is S x S and not the source,
// else into a new buffer; the previous owned buffer is freed.
static void img_materialize(img_View *v, float **buf, int *owned, float *out, int S) {
    float *dst = (v->oh == S && v->ow == S && v->f != out)
                     ? out : xmalloc(sizeof(float) * 3 * (size_t)v->oh * v->ow);
    img_resample(v, dst);
    if (*owned) free(*buf);
    *buf = dst;
    *owned = dst != out;
    img_view_float(v, dst, v->oh, v->ow);
}

int transform_run(const TransformPipeline *tp, const Image *img, float *out_chw,
                  Rng *rng, int *flipped, char *err, size_t errlen) {
    int S = tp->S, flip = 0, owned = 0;
    float *buf = NULL;
    img_View v;
    if (flipped) *flipped = 0;
    img_view_u8(&v, img);
    for (int i = 0; i < tp->n; i++) {
        const TransformStep *st = &tp->step[i];
        switch (st->op) {
        case TF_RANDOM_RESIZED_CROP: {
            if (!img_view_fold(&v)) { img_materialize(&v, &buf, &owned, out_chw, S); img_view_fold(&v); }
            CropBox b;
            rrc_get_params(v.bh, v.bw, st->scale, st->ratio, rng, &b);
            v.bt += b.top; v.bl += b.left;
            v.bh = v.rh = v.oh = v.vb = b.h;
            v.bw = v.rw = v.ow = v.vr = b.w;
            img_view_resize(&v, S, S);
            break;
        }
        case TF_SMALLEST_RESIZE:
        case TF_GLOBAL_RESIZE: {
            if (!img_view_fold(&v)) { img_materialize(&v, &buf, &owned, out_chw, S); img_view_fold(&v); }
            int nh = S, nw = S;
            if (st->op == TF_SMALLEST_RESIZE) img_smallest_size(v.bh, v.bw, tp->R, &nh, &nw);
            img_view_resize(&v, nh, nw);
            break;
        }
        case TF_CENTER_CROP:
            img_view_center_crop(&v, S, S);
            img_view_fold(&v);
            break;
        case TF_HORIZONTAL_FLIP:
            if (rng_uniform(rng) < st->p) {
                if (!img_view_identity(&v)) img_materialize(&v, &buf, &owned, out_chw, S);
                image_hflip(buf, 3, v.sh, v.sw);
                flip ^= 1;
            }
            break;
        case TF_COLOR_JITTER: {
            JitterParams jp = color_jitter_params(&st->jitter, rng);
            if (jp.apply) {
                if (!img_view_identity(&v)) img_materialize(&v, &buf, &owned, out_chw, S);
                color_jitter_apply(buf, (long)v.sh * v.sw, &jp);
            }
            break;
        }
        case TF_NORMALIZE:
            if (!img_view_identity(&v)) img_materialize(&v, &buf, &owned, out_chw, S);
            normalize_imagenet(buf, (long)v.sh * v.sw);
            break;
        }
    }
    if (!(img_view_identity(&v) && v.sh == S && v.sw == S)) {
        if (v.oh != S || v.ow != S) {
            snprintf(err, errlen, "image transforms leave a %dx%d image from a %dx%d one, "
                     "not %dx%d: the list needs a crop to the crop size (center_crop or "
                     "random_resized_crop)", v.ow, v.oh, img->w, img->h, S, S);
            if (owned) free(buf);
            return -1;
        }
        img_materialize(&v, &buf, &owned, out_chw, S);
    }
    if (buf != out_chw) {
        memcpy(out_chw, buf, sizeof(float) * 3 * (size_t)S * S);
        free(buf);
    }
    if (flipped) *flipped = flip;
    return 0;
}

int transform_apply(const char names[][64], int n, const Image *img, float *out_chw,
                    int S, int R, Rng *rng, int *flipped, char *err, size_t errlen) {
    TransformPipeline tp;
    if (transform_parse(&tp, names, n, S, R, err, errlen)) return -1;
    return transform_run(&tp, img, out_chw, rng, flipped, err, errlen);
}

void transform_train(const Image *img, float *out_chw, int S, Rng *rng, int *flipped) {
    static const double scale[2] = {0.2, 1.0}, ratio[2] = {3.0 / 4.0, 4.0 / 3.0};
    CropBox b;
    rrc_get_params(img->h, img->w, scale, ratio, rng, &b);
    image_resized_crop(img, b, S, S, out_chw);
    int f = rng_uniform(rng) < 0.5;
    if (f) image_hflip(out_chw, 3, S, S);
    if (flipped) *flipped = f;
    ColorJitter cj = color_jitter_make(0.4, 0.4, 0.4, 0.1, 0.8);
    JitterParams jp = color_jitter_params(&cj, rng);
    color_jitter_apply(out_chw, (long)S * S, &jp);
    normalize_imagenet(out_chw, (long)S * S);
}

void transform_val(const Image *img, float *out_chw, int R, int S) {
    image_resize_center_crop(img, R, S, out_chw);
    normalize_imagenet(out_chw, (long)S * S);
}

// ---- the tokenizer — the SentencePiece BPE tokenizer, exact to the sentencepiece
// library, and the BPE vocabulary trainer behind `virtex vocab`.
//
// Sections:
//   1. UTF-8 as sentencepiece's string_util reads it
//   2. a defensive protobuf wire-format reader (ModelProto) and writer
//   3. the normalizer: Darts double-array charsmap lookup + whitespace rules
//      (normalizer.cc), and a double-array builder for the charsmaps we write
//   4. loading a .model (model_interface.cc's checks)
//   5. encoding (bpe_model.cc + sentencepiece_processor.cc's PopulateSentencePieceText)
//   6. decoding (sentencepiece_processor.cc's Decode)
//   7. training a BPE vocabulary and writing PREFIX.model / PREFIX.vocab
//
// The algorithms follow the library's public source (github google/sentencepiece,
// the v0.1.9x line that Debian's python3-sentencepiece 0.1.97 is); the code is ours.
// Parity is checked against the Python package by test/make_tokenizer_fixtures.py.
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// ----------------------------------------------------------------------------
// small helpers

static void *sp_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) fatal("out of memory (%zu bytes)", n);
    return q;
}

// A growable byte buffer.
typedef struct SpBuf { char *p; size_t n, cap; } SpBuf;

static void sp_buf_reserve(SpBuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    b->p = sp_realloc(b->p, cap);
    b->cap = cap;
}
static void sp_buf_put(SpBuf *b, const void *s, size_t n) {
    sp_buf_reserve(b, n);
    if (n) memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}
static void sp_buf_byte(SpBuf *b, unsigned char c) { sp_buf_put(b, &c, 1); }

static uint64_t sp_hash(const void *s, size_t n) {      // FNV-1a, 64 bit
    const unsigned char *p = s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static const char SP_WS[] = "\xe2\x96\x81";      // U+2581 LOWER ONE EIGHTH BLOCK, "▁"
#define SP_WS_LEN 3

// ----------------------------------------------------------------------------
// 1. UTF-8, as sentencepiece's string_util reads it

// OneCharLen: the length a lead byte announces (1 for stray continuation bytes).
static int sp_one_char_len(unsigned char c) {
    return "\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4];
}
static int sp_is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }
static int sp_valid_codepoint(uint32_t c) {
    return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF);
}
// DecodeUTF8: the code point at s (n > 0 bytes) and its length; malformed input gives
// U+FFFD with length 1.
static uint32_t sp_decode_utf8(const unsigned char *s, size_t n, int *mblen) {
    if (s[0] < 0x80) { *mblen = 1; return s[0]; }
    if (n >= 2 && (s[0] & 0xE0) == 0xC0) {
        uint32_t c = ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
        if (sp_is_trail(s[1]) && c >= 0x80) { *mblen = 2; return c; }
    } else if (n >= 3 && (s[0] & 0xF0) == 0xE0) {
        uint32_t c = ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) |
                     (s[2] & 0x3F);
        if (sp_is_trail(s[1]) && sp_is_trail(s[2]) && c >= 0x800 && sp_valid_codepoint(c)) {
            *mblen = 3;
            return c;
        }
    } else if (n >= 4 && (s[0] & 0xF8) == 0xF0) {
        uint32_t c = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
                     ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
        if (sp_is_trail(s[1]) && sp_is_trail(s[2]) && sp_is_trail(s[3]) && c >= 0x10000 &&
            sp_valid_codepoint(c)) {
            *mblen = 4;
            return c;
        }
    }
    *mblen = 1;
    return 0xFFFD;
}
// IsValidDecodeUTF8: a real U+FFFD (3 bytes) is valid, a malformed byte is not.
static int sp_valid_utf8_char(const unsigned char *s, size_t n, int *mblen) {
    return sp_decode_utf8(s, n, mblen) != 0xFFFD || *mblen == 3;
}
static int sp_put_utf8(char *o, uint32_t c) {
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | (c >> 6)); o[1] = (char)(0x80 | (c & 0x3F)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | (c >> 12));
        o[1] = (char)(0x80 | ((c >> 6) & 0x3F));
        o[2] = (char)(0x80 | (c & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | (c >> 18));
    o[1] = (char)(0x80 | ((c >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((c >> 6) & 0x3F));
    o[3] = (char)(0x80 | (c & 0x3F));
    return 4;
}

// ----------------------------------------------------------------------------
// 2. protobuf wire format
//
// Reading: every length is checked against the bytes left in the enclosing message,
// varints are at most 10 bytes, a known field with the wrong wire type is an error
// (the library would silently drop it and go on with a half-read model), groups and
// the reserved wire types 6/7 are errors, unknown fields are skipped.

enum {                              // wire types
    SP_PB_VARINT = 0, SP_PB_I64 = 1, SP_PB_LEN = 2, SP_PB_SGROUP = 3, SP_PB_EGROUP = 4,
    SP_PB_I32 = 5
};

typedef struct SpPb {
    const unsigned char *p, *end;
    const unsigned char *base;      // start of the file, for offsets in messages
} SpPb;

typedef struct SpField {
    int num, wt;
    uint64_t v;                     // SP_PB_VARINT, SP_PB_I32, SP_PB_I64 value
    const unsigned char *data;      // SP_PB_LEN payload
    size_t len;
    size_t at;                      // file offset of the tag
} SpField;

static const char *sp_wt_name(int wt) {
    static const char *names[8] = {"varint", "64-bit", "length-delimited", "start-group",
                                   "end-group", "32-bit", "invalid (6)", "invalid (7)"};
    return names[wt & 7];
}

static int sp_pb_varint(SpPb *r, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return -1;
        unsigned b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) { *v = x; return 0; }
    }
    return -2;
}

// Read the next field of the message in r. Returns 1 with f filled, 0 at the end of
// the message, -1 with a message in err.
static int sp_pb_next(SpPb *r, SpField *f, const char *msg, char *err, size_t errlen) {
    if (r->p >= r->end) return 0;
    memset(f, 0, sizeof *f);
    f->at = (size_t)(r->p - r->base);
    uint64_t tag;
    int rc = sp_pb_varint(r, &tag);
    if (rc) return seterr(err, errlen, "%s: %s field tag at byte %zu", msg,
                           rc == -1 ? "truncated" : "over-long (> 10 bytes)", f->at);
    f->wt = (int)(tag & 7);
    if ((tag >> 3) == 0 || (tag >> 3) > 536870911u)
        return seterr(err, errlen, "%s: invalid field number %llu at byte %zu", msg,
                       (unsigned long long)(tag >> 3), f->at);
    f->num = (int)(tag >> 3);
    switch (f->wt) {
    case SP_PB_VARINT:
        rc = sp_pb_varint(r, &f->v);
        if (rc) return seterr(err, errlen, "%s: field %d: %s varint at byte %zu", msg, f->num,
                               rc == -1 ? "truncated" : "over-long", f->at);
        return 1;
    case SP_PB_I64:
    case SP_PB_I32: {
        size_t n = f->wt == SP_PB_I32 ? 4 : 8;
        if ((size_t)(r->end - r->p) < n)
            return seterr(err, errlen, "%s: field %d: truncated %s value at byte %zu", msg,
                           f->num, sp_wt_name(f->wt), f->at);
        for (size_t i = 0; i < n; i++) f->v |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return 1;
    }
    case SP_PB_LEN: {
        uint64_t len;
        rc = sp_pb_varint(r, &len);
        if (rc) return seterr(err, errlen, "%s: field %d: %s length at byte %zu", msg, f->num,
                               rc == -1 ? "truncated" : "over-long", f->at);
        if (len > (uint64_t)(r->end - r->p))
            return seterr(err, errlen,
                           "%s: field %d at byte %zu says %llu bytes, only %zu are left "
                           "(truncated or corrupt file)", msg, f->num, f->at,
                           (unsigned long long)len, (size_t)(r->end - r->p));
        f->data = r->p;
        f->len = (size_t)len;
        r->p += len;
        return 1;
    }
    default:
        return seterr(err, errlen, "%s: field %d at byte %zu has wire type %s, which this "
                       "reader does not accept", msg, f->num, f->at, sp_wt_name(f->wt));
    }
}

static int sp_pb_expect(const SpField *f, int wt, const char *msg, const char *name,
                        char *err, size_t errlen) {
    if (f->wt == wt) return 0;
    return seterr(err, errlen, "%s.%s (field %d, byte %zu) has wire type %s, expected %s",
                   msg, name, f->num, f->at, sp_wt_name(f->wt), sp_wt_name(wt));
}

static float sp_f32(uint64_t bits) {
    uint32_t u = (uint32_t)bits;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

// Writing.
static void sp_pbw_varint(SpBuf *b, uint64_t v) {
    unsigned char t[10];
    int n = 0;
    do {
        t[n] = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) t[n] |= 0x80;
        n++;
    } while (v);
    sp_buf_put(b, t, (size_t)n);
}
static void sp_pbw_tag(SpBuf *b, int num, int wt) {
    sp_pbw_varint(b, ((uint64_t)num << 3) | (unsigned)wt);
}
static void sp_pbw_int(SpBuf *b, int num, int64_t v) {   // int32/int64/bool/enum
    sp_pbw_tag(b, num, SP_PB_VARINT);
    sp_pbw_varint(b, (uint64_t)v);                        // negative: 10 bytes, as protobuf
}
static void sp_pbw_bytes(SpBuf *b, int num, const void *s, size_t n) {
    sp_pbw_tag(b, num, SP_PB_LEN);
    sp_pbw_varint(b, n);
    sp_buf_put(b, s, n);
}
static void sp_pbw_float(SpBuf *b, int num, float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    unsigned char t[4] = {(unsigned char)u, (unsigned char)(u >> 8), (unsigned char)(u >> 16),
                          (unsigned char)(u >> 24)};
    sp_pbw_tag(b, num, SP_PB_I32);
    sp_buf_put(b, t, 4);
}

// ----------------------------------------------------------------------------
// 3. the normalizer
//
// precompiled_charsmap = u32 (little-endian) trie size in bytes, the Darts-clone
// double array (u32 units), then the replacement strings, each NUL-terminated. A unit:
// bit 31 = value unit flag (then bits 0..30 hold the value: an offset into the
// strings), bits 0..7 = label, bit 8 = has a leaf (a key ends here; its value unit
// is the child with label 0), bits 10..31 = offset to the children's base, scaled by
// 256 when bit 9 is set. A child with label c of node p sits at p ^ offset(p) ^ c.

typedef struct SpNorm {
    uint32_t *units;                // the double array, NULL: no charsmap
    size_t nunits;
    char *str;                      // replacement strings (+ a NUL after the last byte)
    size_t nstr;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    int ws_suffix;                  // trainer_spec.treat_whitespace_as_suffix
    char *name;                     // normalizer_spec.name ("" when absent)
    unsigned char *blob;            // the charsmap bytes as read (for copying)
    size_t blob_len;
} SpNorm;

static void sp_norm_defaults(SpNorm *nm) {
    memset(nm, 0, sizeof *nm);
    nm->add_dummy_prefix = nm->remove_extra_ws = nm->escape_ws = 1;
}
static void sp_norm_free(SpNorm *nm) {
    free(nm->units);
    free(nm->str);
    free(nm->name);
    free(nm->blob);
    memset(nm, 0, sizeof *nm);
}

static uint32_t sp_unit_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }
static uint32_t sp_unit_label(uint32_t u) { return u & ((1u << 31) | 0xFF); }
static int sp_unit_has_leaf(uint32_t u) { return (u >> 8) & 1; }

// Decode a charsmap blob into nm (DecodePrecompiledCharsMap). nm->blob keeps a copy.
static int sp_norm_set_charsmap(SpNorm *nm, const unsigned char *blob, size_t n, char *err,
                                size_t errlen) {
    if (n <= 4) return seterr(err, errlen, "normalizer charsmap is broken (%zu bytes)", n);
    uint32_t trie = (uint32_t)blob[0] | (uint32_t)blob[1] << 8 | (uint32_t)blob[2] << 16 |
                    (uint32_t)blob[3] << 24;
    if (trie > n - 4)      // (the library checks trie >= n only, then reads past the end)
        return seterr(err, errlen, "normalizer charsmap: trie size %u exceeds the %zu-byte "
                       "blob", trie, n);
    free(nm->units);
    free(nm->str);
    free(nm->blob);
    nm->nunits = trie / 4;
    nm->units = sp_realloc(NULL, (nm->nunits ? nm->nunits : 1) * sizeof(uint32_t));
    for (size_t i = 0; i < nm->nunits; i++) {
        const unsigned char *u = blob + 4 + 4 * i;
        nm->units[i] = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 |
                       (uint32_t)u[3] << 24;
    }
    nm->nstr = n - 4 - trie;
    nm->str = sp_realloc(NULL, nm->nstr + 1);
    memcpy(nm->str, blob + 4 + trie, nm->nstr);
    nm->str[nm->nstr] = 0;
    nm->blob = sp_realloc(NULL, n);
    memcpy(nm->blob, blob, n);
    nm->blob_len = n;
    return 0;
}

// Longest match of the double array at in[0..n): its length (0: none) and value.
// Walks exactly as Darts' commonPrefixSearch; positions outside the array end the
// walk (a well-formed trie never reaches them).
static size_t sp_trie_longest(const SpNorm *nm, const unsigned char *in, size_t n,
                              uint32_t *value) {
    const uint32_t *a = nm->units;
    size_t na = nm->nunits, best = 0;
    if (!a || na == 0) return 0;
    size_t pos = sp_unit_offset(a[0]);
    for (size_t i = 0; i < n; i++) {
        pos ^= in[i];
        if (pos >= na) break;
        uint32_t u = a[pos];
        if (sp_unit_label(u) != in[i]) break;
        pos ^= sp_unit_offset(u);
        if (sp_unit_has_leaf(u)) {
            if (pos >= na) break;
            best = i + 1;
            *value = a[pos] & 0x7FFFFFFFu;
        }
    }
    return best;
}

// The user-defined symbols' prefix matcher (a byte trie; longest match).
typedef struct SpTrieNode { int child, sibling, terminal; unsigned char label; } SpTrieNode;
typedef struct SpTrie { SpTrieNode *node; int n, cap; } SpTrie;

static void sp_trie_insert(SpTrie *t, const char *s, size_t len) {
    if (t->n == 0) {
        t->cap = 16;
        t->node = sp_realloc(NULL, (size_t)t->cap * sizeof *t->node);
        t->node[0] = (SpTrieNode){-1, -1, 0, 0};
        t->n = 1;
    }
    int cur = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int k = t->node[cur].child;
        while (k >= 0 && t->node[k].label != c) k = t->node[k].sibling;
        if (k < 0) {
            if (t->n == t->cap) {
                t->cap *= 2;
                t->node = sp_realloc(t->node, (size_t)t->cap * sizeof *t->node);
            }
            k = t->n++;
            t->node[k] = (SpTrieNode){-1, t->node[cur].child, 0, c};
            t->node[cur].child = k;
        }
        cur = k;
    }
    t->node[cur].terminal = 1;
}
// PrefixMatch: length of the longest symbol at s (found = 1), else of one character.
static size_t sp_trie_match(const SpTrie *t, const unsigned char *s, size_t n, int *found) {
    size_t best = 0;
    if (t->n) {
        int cur = 0;
        for (size_t i = 0; i < n; i++) {
            int k = t->node[cur].child;
            while (k >= 0 && t->node[k].label != s[i]) k = t->node[k].sibling;
            if (k < 0) break;
            cur = k;
            if (t->node[k].terminal) best = i + 1;
        }
    }
    *found = best > 0;
    if (best) return best;
    size_t one = (size_t)sp_one_char_len(s[0]);
    return one < n ? one : n;
}

// NormalizePrefix: the normalised form of the longest rule at in (or the character
// itself; a malformed byte becomes U+FFFD), and how many input bytes it consumes.
static size_t sp_norm_prefix(const SpNorm *nm, const SpTrie *user, const unsigned char *in,
                             size_t n, const char **out, size_t *outlen) {
    if (user && user->n) {
        int found;
        size_t len = sp_trie_match(user, in, n, &found);
        if (found) { *out = (const char *)in; *outlen = len; return len; }
    }
    uint32_t value = 0;
    size_t longest = sp_trie_longest(nm, in, n, &value);
    if (longest == 0) {
        int len;
        if (!sp_valid_utf8_char(in, n, &len)) {
            *out = "\xEF\xBF\xBD";
            *outlen = 3;
            return 1;
        }
        *out = (const char *)in;
        *outlen = (size_t)len;
        return (size_t)len;
    }
    if (value >= nm->nstr) { *out = ""; *outlen = 0; return longest; }
    *out = nm->str + value;
    *outlen = strlen(nm->str + value);   // str is NUL-terminated past its end
    return longest;
}

static void sp_add_ws(const SpNorm *nm, SpBuf *o) {
    if (nm->escape_ws) sp_buf_put(o, SP_WS, SP_WS_LEN);
    else sp_buf_byte(o, ' ');
}

// Normalizer::Normalize. o is cleared first.
static void sp_normalize(const SpNorm *nm, const SpTrie *user, const char *text, size_t len,
                         SpBuf *o) {
    const unsigned char *in = (const unsigned char *)text;
    o->n = 0;
    if (o->p) o->p[0] = 0;
    if (len == 0) return;
    const char *s;
    size_t sl;
    if (nm->remove_extra_ws) {      // leading spaces
        while (len > 0) {
            size_t used = sp_norm_prefix(nm, user, in, len, &s, &sl);
            if (!(sl == 1 && s[0] == ' ')) break;
            in += used;
            len -= used;
        }
    }
    if (len == 0) return;
    if (!nm->ws_suffix && nm->add_dummy_prefix) sp_add_ws(nm, o);
    int prev_space = nm->remove_extra_ws;
    while (len > 0) {
        size_t used = sp_norm_prefix(nm, user, in, len, &s, &sl);
        while (prev_space && sl > 0 && s[0] == ' ') { s++; sl--; }
        if (sl > 0) {
            sp_buf_reserve(o, sl * SP_WS_LEN);
            for (size_t i = 0; i < sl; i++) {
                if (nm->escape_ws && s[i] == ' ') {
                    memcpy(o->p + o->n, SP_WS, SP_WS_LEN);
                    o->n += SP_WS_LEN;
                } else {
                    o->p[o->n++] = s[i];
                }
            }
            o->p[o->n] = 0;
            prev_space = s[sl - 1] == ' ';
        }
        in += used;
        len -= used;
        if (!nm->remove_extra_ws) prev_space = 0;
    }
    if (nm->remove_extra_ws) {      // trailing spaces
        const char *sp = nm->escape_ws ? SP_WS : " ";
        size_t spl = nm->escape_ws ? SP_WS_LEN : 1;
        while (o->n >= spl && memcmp(o->p + o->n - spl, sp, spl) == 0) o->n -= spl;
        o->p[o->n] = 0;
    }
    if (nm->ws_suffix && nm->add_dummy_prefix) sp_add_ws(nm, o);
}

// Building a charsmap (for the models `virtex vocab` writes): a double array in
// Darts-clone's layout from sorted, distinct, non-empty keys without NUL bytes. Plain
// trie (no suffix sharing); every base is used by one node only, and every offset
// fits the unit's encoding (< 2^21, or a multiple of 256 below 2^29).
typedef struct SpDaBuild {
    uint32_t *unit;
    unsigned char *used, *base_used;
    size_t n, cap, first_free;
    const char *const *key;
    const size_t *klen;
    const uint32_t *value;
} SpDaBuild;

static void sp_da_grow(SpDaBuild *b, size_t need) {
    if (need <= b->n) return;
    size_t n = (need + 255) & ~(size_t)255;
    if (n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < n) cap *= 2;
        b->unit = sp_realloc(b->unit, cap * sizeof *b->unit);
        b->used = sp_realloc(b->used, cap);
        b->base_used = sp_realloc(b->base_used, cap);
        b->cap = cap;
    }
    memset(b->unit + b->n, 0, (n - b->n) * sizeof *b->unit);
    memset(b->used + b->n, 0, n - b->n);
    memset(b->base_used + b->n, 0, n - b->n);
    b->n = n;
}

// The byte of key i at depth (0 past its end).
static unsigned char sp_da_label(const SpDaBuild *b, size_t i, size_t depth) {
    return depth < b->klen[i] ? (unsigned char)b->key[i][depth] : 0;
}

static int sp_da_arrange(SpDaBuild *b, size_t begin, size_t end, size_t depth, size_t id) {
    unsigned char labels[256];
    int nl = 0;
    for (size_t i = begin; i < end; i++) {
        unsigned char c = sp_da_label(b, i, depth);
        if (nl == 0 || labels[nl - 1] != c) labels[nl++] = c;
    }
    // the first base e with every e ^ label free
    while (b->first_free < b->n && b->used[b->first_free]) b->first_free++;
    size_t e = 0;
    for (size_t p = b->first_free;; p++) {
        sp_da_grow(b, p + 1);
        if (b->used[p]) continue;
        e = p ^ labels[0];
        sp_da_grow(b, (e | 255) + 1);
        if (b->base_used[e]) continue;
        size_t rel = id ^ e;
        if (rel >= (1u << 21) && ((rel & 255) || rel >= (1u << 29))) continue;
        int ok = 1;
        for (int k = 1; k < nl && ok; k++) ok = !b->used[e ^ labels[k]];
        if (ok) break;
    }
    size_t rel = id ^ e;
    if (rel >= (1u << 29)) return -1;
    uint32_t keep = b->unit[id] & ((1u << 31) | (1u << 8) | 0xFF);
    b->unit[id] = rel < (1u << 21) ? keep | (uint32_t)(rel << 10)
                                   : keep | (uint32_t)(rel << 2) | (1u << 9);
    b->base_used[e] = 1;
    for (int k = 0; k < nl; k++) b->used[e ^ labels[k]] = 1;
    size_t i = begin;
    for (int k = 0; k < nl; k++) {
        size_t j = i;
        while (j < end && sp_da_label(b, j, depth) == labels[k]) j++;
        size_t child = e ^ labels[k];
        if (labels[k] == 0) {
            b->unit[id] |= 1u << 8;
            b->unit[child] = b->value[i] | (1u << 31);
        } else {
            b->unit[child] = labels[k];
        }
        i = j;
    }
    i = begin;
    for (int k = 0; k < nl; k++) {
        size_t j = i;
        while (j < end && sp_da_label(b, j, depth) == labels[k]) j++;
        if (labels[k] != 0 && sp_da_arrange(b, i, j, depth + 1, e ^ labels[k])) return -1;
        i = j;
    }
    return 0;
}

// The charsmap blob for n rules key[i] -> val[i] (keys sorted and distinct).
static unsigned char *sp_charsmap_build(const char *const *key, const size_t *klen,
                                        const char *const *val, int n, size_t *len) {
    SpBuf strs = {0};
    uint32_t *value = sp_realloc(NULL, (size_t)(n ? n : 1) * sizeof *value);
    for (int i = 0; i < n; i++) {     // replacement strings, each once
        size_t vl = strlen(val[i]);
        int found = -1;
        for (int j = 0; j < i && found < 0; j++)
            if (!strcmp(val[j], val[i])) found = (int)value[j];
        if (found >= 0) { value[i] = (uint32_t)found; continue; }
        value[i] = (uint32_t)strs.n;
        sp_buf_put(&strs, val[i], vl + 1);
    }
    SpDaBuild b = {0};
    b.key = key;
    b.klen = klen;
    b.value = value;
    sp_da_grow(&b, 256);
    b.used[0] = 1;
    b.base_used[0] = 1;
    if (n > 0 && sp_da_arrange(&b, 0, (size_t)n, 0, 0)) fatal("charsmap too large");
    size_t trie = b.n * 4;
    unsigned char *blob = sp_realloc(NULL, 4 + trie + strs.n);
    for (int k = 0; k < 4; k++) blob[k] = (unsigned char)(trie >> (8 * k));
    for (size_t i = 0; i < b.n; i++)
        for (int k = 0; k < 4; k++) blob[4 + 4 * i + k] = (unsigned char)(b.unit[i] >> (8 * k));
    memcpy(blob + 4 + trie, strs.p, strs.n);
    *len = 4 + trie + strs.n;
    free(b.unit);
    free(b.used);
    free(b.base_used);
    free(value);
    free(strs.p);
    return blob;
}

// The rules of the normalizer `virtex vocab` writes by default ("nmt_nfkc_subset"):
// the whitespace and control-character rules of sentencepiece's nmt_nfkc (control
// characters removed; TAB LF FF CR and the other space-like characters -> U+0020),
// the Unicode spaces NFKC folds to U+0020, and fullwidth ASCII -> ASCII. The rest of
// NFKC is not built in: the captions were NFKD-folded by caption_normalize already.
// `virtex vocab --normalizer-from MODEL` copies a model's full charsmap instead.
// Returns -1: no rule, 0: the character is removed, else its ASCII replacement.
static int sp_default_rule(uint32_t c) {
    if (c == 0x09 || c == 0x0A || c == 0x0C || c == 0x0D) return ' ';
    if (c < 0x20 || c == 0x7F || c == 0x8F || c == 0x9F) return 0;
    if (c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200C) || c == 0x200E ||
        c == 0x200F || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
        c == 0x2581 || c == 0x3000 || c == 0xFEFF || c == 0xFFFD)
        return ' ';
    if (c >= 0xFF01 && c <= 0xFF5E) return (int)(c - 0xFF01 + 0x21);
    return -1;
}

static unsigned char *sp_default_charsmap(size_t *len) {
    enum { MAXR = 256 };
    char keybuf[MAXR][4], valbuf[MAXR][2];
    const char *key[MAXR], *val[MAXR];
    size_t klen[MAXR];
    int n = 0;
    for (uint32_t c = 1; c < 0x10000 && n < MAXR; c++) {   // code point order = key order
        int r = sp_default_rule(c);
        if (r < 0) continue;
        klen[n] = (size_t)sp_put_utf8(keybuf[n], c);
        key[n] = keybuf[n];
        valbuf[n][0] = (char)r;
        valbuf[n][1] = 0;
        val[n] = valbuf[n];
        n++;
    }
    return sp_charsmap_build(key, klen, val, n, len);
}

// ----------------------------------------------------------------------------
// 4. the model

// Open-addressing map from a byte string to a piece id; each slot keeps 32 bits of the
// hash so that most mismatches are rejected without touching the strings.
typedef struct SpSlot { uint32_t tag; int id; } SpSlot;
typedef struct SpMap { SpSlot *slot; size_t mask; } SpMap;

// The merge table: (left piece id, right piece id) -> the piece that is their join, for
// every piece of at most SP_MERGE_MAX bytes that splits into two pieces. Encoding asks
// it instead of hashing strings; longer joins and unknown characters use the strings.
#define SP_MERGE_MAX 64
typedef struct SpMerge { uint64_t key; int id; } SpMerge;
typedef struct SpMergeMap { SpMerge *slot; size_t mask; } SpMergeMap;

struct Tokenizer {
    int n;                          // pieces
    char **piece;                   // NUL-terminated (into text)
    int *plen;
    float *score;
    unsigned char *type;            // PieceType
    char *text;                     // storage of the piece strings
    SpMap pieces;                   // NORMAL, USER_DEFINED, UNUSED pieces
    SpMap reserved;                 // UNKNOWN, CONTROL, BYTE pieces
    int unk_id;
    int byte_fallback, has_unused;
    int byte_id[256];               // PieceToId("<0xXX>")
    int ascii_id[128];              // PieceToId of each one-byte character
    int ascii_pid[128];             // ... its id among the normal pieces, else -1
    SpMergeMap merges;
    int *rid;                       // rid[x]: a reserved piece with x's string, else -1
    uint32_t *skey;                 // scores as integers of the same order (-0 = +0)
    char *unk_surface;
    SpTrie user;                    // USER_DEFINED pieces
    SpNorm norm, denorm;
    int has_denorm;
    // trainer_spec fields as read (model_type is checked; the others are informative)
    int model_type, vocab_size, unk_id_spec, bos_id, eos_id, pad_id;
};

static void sp_map_init(SpMap *m, int n) {
    size_t cap = 16;
    while (cap < (size_t)n * 2) cap *= 2;
    m->slot = sp_realloc(NULL, cap * sizeof *m->slot);
    for (size_t i = 0; i < cap; i++) m->slot[i] = (SpSlot){0, -1};
    m->mask = cap - 1;
}
static int sp_map_find(const SpMap *m, const Tokenizer *tk, const char *s, size_t n) {
    if (!m->slot) return -1;
    uint64_t hash = sp_hash(s, n);
    uint32_t tag = (uint32_t)(hash >> 32);
    for (size_t h = hash & m->mask;; h = (h + 1) & m->mask) {
        const SpSlot *q = &m->slot[h];
        if (q->id < 0) return -1;
        if (q->tag == tag && (size_t)tk->plen[q->id] == n && memcmp(tk->piece[q->id], s, n) == 0)
            return q->id;
    }
}
// Insert id; returns the id already there with the same string, or -1.
static int sp_map_insert(SpMap *m, const Tokenizer *tk, int id) {
    const char *s = tk->piece[id];
    size_t n = (size_t)tk->plen[id];
    uint64_t hash = sp_hash(s, n);
    uint32_t tag = (uint32_t)(hash >> 32);
    for (size_t h = hash & m->mask;; h = (h + 1) & m->mask) {
        SpSlot *q = &m->slot[h];
        if (q->id < 0) { *q = (SpSlot){tag, id}; return -1; }
        if (q->tag == tag && (size_t)tk->plen[q->id] == n && memcmp(tk->piece[q->id], s, n) == 0)
            return q->id;
    }
}

static uint64_t sp_merge_hash(uint64_t key) {
    key ^= key >> 31;
    key *= 0x9E3779B97F4A7C15ull;
    return key ^ (key >> 29);
}
static int sp_merge_find(const SpMergeMap *m, int a, int b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t h = sp_merge_hash(key) & m->mask;; h = (h + 1) & m->mask) {
        if (m->slot[h].id < 0) return -1;
        if (m->slot[h].key == key) return m->slot[h].id;
    }
}
static void sp_merges_build(Tokenizer *tk) {
    int count = 0;
    for (int i = 0; i < tk->n; i++)
        if (tk->plen[i] <= SP_MERGE_MAX) count += tk->plen[i] - 1;
    SpMergeMap *m = &tk->merges;
    size_t cap = 16;
    while (cap < (size_t)count * 2) cap *= 2;
    m->slot = sp_realloc(NULL, cap * sizeof *m->slot);
    for (size_t i = 0; i < cap; i++) m->slot[i] = (SpMerge){0, -1};
    m->mask = cap - 1;
    for (int i = 0; i < tk->n; i++) {
        int ty = tk->type[i];
        int normal = ty == PIECE_NORMAL || ty == PIECE_USER_DEFINED || ty == PIECE_UNUSED;
        if (tk->plen[i] > SP_MERGE_MAX || !normal) continue;
        for (int cut = 1; cut < tk->plen[i]; cut++) {
            int a = sp_map_find(&tk->pieces, tk, tk->piece[i], (size_t)cut);
            if (a < 0) continue;
            int b = sp_map_find(&tk->pieces, tk, tk->piece[i] + cut, (size_t)(tk->plen[i] - cut));
            if (b < 0) continue;
            uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
            size_t h = sp_merge_hash(key) & m->mask;
            while (m->slot[h].id >= 0) h = (h + 1) & m->mask;
            m->slot[h] = (SpMerge){key, i};
        }
    }
}

// ModelInterface::PieceToId: reserved pieces first, then the others, else unk.
static int sp_piece_to_id(const Tokenizer *tk, const char *s, size_t n) {
    int id = sp_map_find(&tk->reserved, tk, s, n);
    if (id >= 0) return id;
    id = sp_map_find(&tk->pieces, tk, s, n);
    return id >= 0 ? id : tk->unk_id;
}

// PieceToByte: "<0x41>" -> 0x41 (upper-case hex, exactly), else -1.
static int sp_byte_value(const char *s, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>' || !s[3] || !s[4]) return -1;
    const char *h = strchr(hex, s[3]), *l = strchr(hex, s[4]);
    if (!h || !l) return -1;
    return (int)((h - hex) * 16 + (l - hex));
}

static const char *sp_model_type_name(int t) {
    switch (t) {
    case 1: return "UNIGRAM";
    case 2: return "BPE";
    case 3: return "WORD";
    case 4: return "CHAR";
    default: return "unknown";
    }
}

typedef struct SpView { const unsigned char *p; size_t n; } SpView;

static int sp_parse_normalizer(SpNorm *nm, const unsigned char *data, size_t len,
                               const unsigned char *base, const char *msg, char *err,
                               size_t errlen) {
    SpPb r = {data, data + len, base};
    SpField f;
    int rc;
    while ((rc = sp_pb_next(&r, &f, msg, err, errlen)) == 1) {
        switch (f.num) {
        case 1:
            if (sp_pb_expect(&f, SP_PB_LEN, msg, "name", err, errlen)) return -1;
            free(nm->name);
            nm->name = sp_realloc(NULL, f.len + 1);
            memcpy(nm->name, f.data, f.len);
            nm->name[f.len] = 0;
            break;
        case 2:
            if (sp_pb_expect(&f, SP_PB_LEN, msg, "precompiled_charsmap", err, errlen)) return -1;
            if (f.len == 0) {   // an empty charsmap means none
                free(nm->units); free(nm->str); free(nm->blob);
                nm->units = NULL; nm->str = NULL; nm->blob = NULL;
                nm->nunits = nm->nstr = nm->blob_len = 0;
            } else {
                char e2[256];
                if (sp_norm_set_charsmap(nm, f.data, f.len, e2, sizeof e2))
                    return seterr(err, errlen, "%s: %s", msg, e2);
            }
            break;
        case 3:
        case 4:
        case 5: {
            static const char *names[] = {"add_dummy_prefix", "remove_extra_whitespaces",
                                          "escape_whitespaces"};
            if (sp_pb_expect(&f, SP_PB_VARINT, msg, names[f.num - 3], err, errlen)) return -1;
            int v = f.v != 0;
            if (f.num == 3) nm->add_dummy_prefix = v;
            else if (f.num == 4) nm->remove_extra_ws = v;
            else nm->escape_ws = v;
            break;
        }
        default: break;
        }
    }
    return rc;
}

// Parse a ModelProto into tk (pieces as views into the buffer first).
static int sp_parse_model(Tokenizer *tk, const unsigned char *buf, size_t len, SpView **pv,
                          int *np, char *err, size_t errlen) {
    SpPb r = {buf, buf + len, buf};
    SpField f;
    int rc, cap = 0;
    SpView *views = NULL;
    int n = 0;
    float *score = NULL;
    unsigned char *type = NULL;
    tk->model_type = 1;             // proto default UNIGRAM
    tk->vocab_size = 8000;
    tk->unk_id_spec = 0;
    tk->bos_id = 1;
    tk->eos_id = 2;
    tk->pad_id = -1;
    sp_norm_defaults(&tk->norm);
    sp_norm_defaults(&tk->denorm);
    *pv = NULL;
    *np = 0;
    while ((rc = sp_pb_next(&r, &f, "ModelProto", err, errlen)) == 1) {
        if (f.num == 1) {           // pieces
            if (sp_pb_expect(&f, SP_PB_LEN, "ModelProto", "pieces", err, errlen)) goto fail;
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                views = sp_realloc(views, (size_t)cap * sizeof *views);
                score = sp_realloc(score, (size_t)cap * sizeof *score);
                type = sp_realloc(type, (size_t)cap);
            }
            views[n] = (SpView){(const unsigned char *)"", 0};
            score[n] = 0;
            type[n] = PIECE_NORMAL;
            char msg[64];
            snprintf(msg, sizeof msg, "ModelProto.pieces[%d]", n);
            SpPb s = {f.data, f.data + f.len, buf};
            SpField g;
            while ((rc = sp_pb_next(&s, &g, msg, err, errlen)) == 1) {
                if (g.num == 1) {
                    if (sp_pb_expect(&g, SP_PB_LEN, msg, "piece", err, errlen)) goto fail;
                    views[n] = (SpView){g.data, g.len};
                } else if (g.num == 2) {
                    if (sp_pb_expect(&g, SP_PB_I32, msg, "score", err, errlen)) goto fail;
                    score[n] = sp_f32(g.v);
                } else if (g.num == 3) {
                    if (sp_pb_expect(&g, SP_PB_VARINT, msg, "type", err, errlen)) goto fail;
                    if (g.v < 1 || g.v > 6) {
                        seterr(err, errlen, "%s.type is %llu, not a piece type (1..6)", msg,
                                (unsigned long long)g.v);
                        goto fail;
                    }
                    type[n] = (unsigned char)g.v;
                }
            }
            if (rc < 0) goto fail;
            n++;
            if (n > INT_MAX / 4) { seterr(err, errlen, "too many pieces"); goto fail; }
        } else if (f.num == 2) {    // trainer_spec
            if (sp_pb_expect(&f, SP_PB_LEN, "ModelProto", "trainer_spec", err, errlen)) goto fail;
            SpPb s = {f.data, f.data + f.len, buf};
            SpField g;
            const char *msg = "ModelProto.trainer_spec";
            while ((rc = sp_pb_next(&s, &g, msg, err, errlen)) == 1) {
                int *ip = NULL;
                const char *name = NULL;
                switch (g.num) {
                case 3: ip = &tk->model_type; name = "model_type"; break;
                case 4: ip = &tk->vocab_size; name = "vocab_size"; break;
                case 24: ip = &tk->norm.ws_suffix; name = "treat_whitespace_as_suffix"; break;
                case 35: ip = &tk->byte_fallback; name = "byte_fallback"; break;
                case 40: ip = &tk->unk_id_spec; name = "unk_id"; break;
                case 41: ip = &tk->bos_id; name = "bos_id"; break;
                case 42: ip = &tk->eos_id; name = "eos_id"; break;
                case 43: ip = &tk->pad_id; name = "pad_id"; break;
                case 44:
                    if (sp_pb_expect(&g, SP_PB_LEN, msg, "unk_surface", err, errlen)) goto fail;
                    free(tk->unk_surface);
                    tk->unk_surface = sp_realloc(NULL, g.len + 1);
                    memcpy(tk->unk_surface, g.data, g.len);
                    tk->unk_surface[g.len] = 0;
                    break;
                default: break;
                }
                if (ip) {
                    if (sp_pb_expect(&g, SP_PB_VARINT, msg, name, err, errlen)) goto fail;
                    if (g.num == 24 || g.num == 35) *ip = g.v != 0;
                    else *ip = (int)(int32_t)(uint32_t)g.v;
                }
            }
            if (rc < 0) goto fail;
        } else if (f.num == 3 || f.num == 5) {   // normalizer_spec, denormalizer_spec
            const char *msg = f.num == 3 ? "ModelProto.normalizer_spec"
                                         : "ModelProto.denormalizer_spec";
            if (sp_pb_expect(&f, SP_PB_LEN, "ModelProto", msg + 11, err, errlen)) goto fail;
            SpNorm *nm = f.num == 3 ? &tk->norm : &tk->denorm;
            if (sp_parse_normalizer(nm, f.data, f.len, buf, msg, err, errlen)) goto fail;
            if (f.num == 5) tk->has_denorm = 1;
        }
    }
    if (rc < 0) goto fail;
    tk->score = score;
    tk->type = type;
    *pv = views;
    *np = n;
    return 0;
fail:
    free(views);
    free(score);
    free(type);
    return -1;
}

static Tokenizer *sp_load(const unsigned char *buf, size_t len, const char *name, char *err,
                          size_t errlen) {
    Tokenizer *tk = xcalloc(1, sizeof *tk);
    SpView *views = NULL;
    int n = 0;
    char e[768];
    if (sp_parse_model(tk, buf, len, &views, &n, e, sizeof e)) {
        seterr(err, errlen, "%s: not a valid SentencePiece model: %s", name, e);
        goto fail;
    }
    if (tk->model_type != 2) {
        seterr(err, errlen, "%s: this is a SentencePiece %s model; virtex reads BPE models "
                "only (model_type=bpe, as VirTex's vocabularies are)", name,
                sp_model_type_name(tk->model_type));
        goto fail;
    }
    if (n == 0) { seterr(err, errlen, "%s: the model has no pieces", name); goto fail; }
    tk->n = n;
    size_t total = 0;
    for (int i = 0; i < n; i++) total += views[i].n + 1;
    tk->text = sp_realloc(NULL, total);
    tk->piece = sp_realloc(NULL, (size_t)n * sizeof *tk->piece);
    tk->plen = sp_realloc(NULL, (size_t)n * sizeof *tk->plen);
    char *t = tk->text;
    for (int i = 0; i < n; i++) {
        tk->piece[i] = t;
        tk->plen[i] = (int)views[i].n;
        memcpy(t, views[i].p, views[i].n);
        t[views[i].n] = 0;
        t += views[i].n + 1;
    }
    free(views);
    views = NULL;
    // ModelInterface::InitializePieces
    sp_map_init(&tk->pieces, n);
    sp_map_init(&tk->reserved, n);
    tk->unk_id = -1;
    int byte_found[256] = {0};
    for (int i = 0; i < n; i++) {
        int ty = tk->type[i];
        if (tk->plen[i] == 0) {
            seterr(err, errlen, "%s: piece %d is empty", name, i);
            goto fail;
        }
        if (memchr(tk->piece[i], 0, (size_t)tk->plen[i])) {
            seterr(err, errlen, "%s: piece %d holds a NUL byte", name, i);
            goto fail;
        }
        if (tk->plen[i] >= 8000) {
            seterr(err, errlen, "%s: piece %d is too long (%d bytes)", name, i, tk->plen[i]);
            goto fail;
        }
        int normal = ty == PIECE_NORMAL || ty == PIECE_USER_DEFINED || ty == PIECE_UNUSED;
        int dup = sp_map_insert(normal ? &tk->pieces : &tk->reserved, tk, i);
        if (dup >= 0) {
            seterr(err, errlen, "%s: piece \"%.40s\" is defined twice (ids %d and %d)", name,
                    tk->piece[i], dup, i);
            goto fail;
        }
        if (ty == PIECE_USER_DEFINED)
            sp_trie_insert(&tk->user, tk->piece[i], (size_t)tk->plen[i]);
        if (ty == PIECE_UNUSED) tk->has_unused = 1;
        if (ty == PIECE_UNKNOWN) {
            if (tk->unk_id >= 0) {
                seterr(err, errlen, "%s: two unknown pieces (ids %d and %d)", name,
                        tk->unk_id, i);
                goto fail;
            }
            tk->unk_id = i;
        }
        if (ty == PIECE_BYTE) {
            if (!tk->byte_fallback) {
                seterr(err, errlen, "%s: byte piece %s (id %d) but byte_fallback is off", name,
                        tk->piece[i], i);
                goto fail;
            }
            int v = sp_byte_value(tk->piece[i], (size_t)tk->plen[i]);
            if (v < 0) {
                seterr(err, errlen, "%s: byte piece \"%.40s\" (id %d) is not <0xXX>", name,
                        tk->piece[i], i);
                goto fail;
            }
            byte_found[v] = 1;
        }
    }
    if (tk->unk_id < 0) {
        seterr(err, errlen, "%s: the model has no unknown piece (<unk>)", name);
        goto fail;
    }
    if (tk->byte_fallback) {
        for (int b = 0; b < 256; b++)
            if (!byte_found[b]) {
                seterr(err, errlen, "%s: byte_fallback is on but byte piece <0x%02X> is missing",
                        name, b);
                goto fail;
            }
    }
    for (int b = 0; b < 256; b++) {
        char bp[8];
        snprintf(bp, sizeof bp, "<0x%02X>", b);
        tk->byte_id[b] = sp_piece_to_id(tk, bp, 6);
        if (b < 128) {
            bp[0] = (char)b;
            tk->ascii_id[b] = sp_piece_to_id(tk, bp, 1);
            tk->ascii_pid[b] = sp_map_find(&tk->pieces, tk, bp, 1);
        }
    }
    tk->rid = sp_realloc(NULL, (size_t)n * sizeof *tk->rid);
    for (int i = 0; i < n; i++)
        tk->rid[i] = sp_map_find(&tk->reserved, tk, tk->piece[i], (size_t)tk->plen[i]);
    sp_merges_build(tk);
    tk->skey = sp_realloc(NULL, (size_t)n * sizeof *tk->skey);
    for (int i = 0; i < n; i++) {
        float f = tk->score[i] == 0.0f ? 0.0f : tk->score[i];
        uint32_t u;
        memcpy(&u, &f, 4);
        tk->skey[i] = (u >> 31) ? ~u : (u | 0x80000000u);
    }
    if (!tk->unk_surface) tk->unk_surface = xstrdup(" \xE2\x81\x87 ");
    if (!tk->norm.name) tk->norm.name = xstrdup("");
    if (!tk->denorm.name) tk->denorm.name = xstrdup("");
    // the denormalizer is used only when it has rules; it never has a suffix space
    tk->has_denorm = tk->has_denorm && tk->denorm.units != NULL;
    tk->denorm.ws_suffix = 0;
    return tk;
fail:
    free(views);
    tokenizer_free(tk);
    return NULL;
}

Tokenizer *tokenizer_load_memory(const void *data, size_t n, const char *name, char *err,
                                 size_t errlen) {
    return sp_load(data, n, name ? name : "model", err, errlen);
}

Tokenizer *tokenizer_load(const char *path, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) { seterr(err, errlen, "%s: %s", path, strerror(errno)); return NULL; }
    SpBuf b = {0};
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.n + got > TOKENIZER_MAX_FILE) {
            fclose(f);
            free(b.p);
            seterr(err, errlen, "%s: larger than %d MiB: not a SentencePiece model", path,
                    TOKENIZER_MAX_FILE >> 20);
            return NULL;
        }
        sp_buf_put(&b, chunk, got);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b.p);
        seterr(err, errlen, "%s: read error", path);
        return NULL;
    }
    Tokenizer *tk = sp_load((const unsigned char *)(b.p ? b.p : ""), b.n, path, err, errlen);
    free(b.p);
    return tk;
}

void tokenizer_free(Tokenizer *tk) {
    if (!tk) return;
    free(tk->piece);
    free(tk->rid);
    free(tk->skey);
    free(tk->merges.slot);
    free(tk->plen);
    free(tk->score);
    free(tk->type);
    free(tk->text);
    free(tk->pieces.slot);
    free(tk->reserved.slot);
    free(tk->unk_surface);
    free(tk->user.node);
    sp_norm_free(&tk->norm);
    sp_norm_free(&tk->denorm);
    free(tk);
}

int tokenizer_size(const Tokenizer *tk) { return tk->n; }
const char *tokenizer_piece(const Tokenizer *tk, int id) {
    return id >= 0 && id < tk->n ? tk->piece[id] : NULL;
}
int tokenizer_piece_type(const Tokenizer *tk, int id) {
    return id >= 0 && id < tk->n ? tk->type[id] : 0;
}
float tokenizer_score(const Tokenizer *tk, int id) {
    return id >= 0 && id < tk->n ? tk->score[id] : 0.0f;
}
int tokenizer_piece_id(const Tokenizer *tk, const char *piece) {
    return sp_piece_to_id(tk, piece, strlen(piece));
}
int tokenizer_unk_id(const Tokenizer *tk) { return tk->unk_id; }

char *tokenizer_normalize(const Tokenizer *tk, const char *text, size_t len, size_t *outlen) {
    SpBuf o = {0};
    sp_normalize(&tk->norm, &tk->user, text, len, &o);
    sp_buf_reserve(&o, 0);
    if (outlen) *outlen = o.n;
    return o.p;
}

int tokenizer_write_vocab(const Tokenizer *tk, FILE *f) {
    for (int i = 0; i < tk->n; i++)
        if (fprintf(f, "%s\t%g\n", tk->piece[i], (double)tk->score[i]) < 0) return -1;
    return ferror(f) ? -1 : 0;
}

// ----------------------------------------------------------------------------
// 5. encoding
//
// bpe::Model::SampleEncode with alpha 0: split the normalised text into characters
// (user-defined symbols whole, and never merged), then repeatedly merge the adjacent
// pair whose concatenation is a piece with the highest score (ties: the leftmost
// pair), with a max-heap of candidate pairs checked for staleness when popped. UNUSED
// pieces are split back into the pair that formed them. Then
// PopulateSentencePieceText: runs of unknown pieces become one unknown piece (or, with
// byte_fallback, each unknown piece becomes its UTF-8 bytes as <0xXX> pieces).

typedef struct SpSym {              // a symbol: bytes [start, start+len) of the text
    int prev, next, start, len;
    int freeze;                     // a user-defined symbol: never merged
    int id;                         // the normal piece it is, or -1
} SpSym;
// A candidate merge; prio orders the heap: the piece's score, then the leftmost pair.
typedef struct SpPair { uint64_t prio; int left, right, size, id; } SpPair;
typedef struct SpRev { int start, len, lstart, llen, rstart, rlen; } SpRev;
typedef struct SpOut { int id, start, len; } SpOut;   // start -1: the vocabulary piece

typedef struct SpEnc {
    const Tokenizer *tk;
    SpBuf norm;
    SpSym *sym;
    SpPair *heap;
    int nheap, capheap;
    SpRev *rev;                     // rev_merge (only for models with UNUSED pieces)
    int *revslot;
    size_t revmask;
    int nrev;
    SpOut *out;
    int nout, capout;
    int prev_unk;
    size_t consumed;
    int bad;                        // a control piece came out of the merges
} SpEnc;

static int sp_pair_better(const SpPair *a, const SpPair *b) { return a->prio > b->prio; }
static void sp_heap_push(SpEnc *e, SpPair p) {
    if (e->nheap == e->capheap) {
        e->capheap = e->capheap ? e->capheap * 2 : 64;
        e->heap = sp_realloc(e->heap, (size_t)e->capheap * sizeof *e->heap);
    }
    int i = e->nheap++;
    while (i > 0) {
        int up = (i - 1) / 2;
        if (!sp_pair_better(&p, &e->heap[up])) break;
        e->heap[i] = e->heap[up];
        i = up;
    }
    e->heap[i] = p;
}
static SpPair sp_heap_pop(SpEnc *e) {
    SpPair top = e->heap[0], last = e->heap[--e->nheap];
    int i = 0, n = e->nheap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && sp_pair_better(&e->heap[c + 1], &e->heap[c])) c++;
        if (!sp_pair_better(&e->heap[c], &last)) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0) e->heap[i] = last;
    return top;
}

static SpRev *sp_rev_slot(SpEnc *e, const char *s, size_t n, int insert) {
    const char *base = e->norm.p;
    if (insert && (size_t)(e->nrev + 1) * 2 > e->revmask + 1) {   // grow and rehash
        size_t cap = e->revmask ? (e->revmask + 1) * 2 : 64;
        int *slot = sp_realloc(NULL, cap * sizeof *slot);
        for (size_t i = 0; i < cap; i++) slot[i] = -1;
        for (int k = 0; k < e->nrev; k++) {
            size_t h = sp_hash(base + e->rev[k].start, (size_t)e->rev[k].len) & (cap - 1);
            while (slot[h] >= 0) h = (h + 1) & (cap - 1);
            slot[h] = k;
        }
        free(e->revslot);
        e->revslot = slot;
        e->revmask = cap - 1;
        e->rev = sp_realloc(e->rev, cap * sizeof *e->rev);
    }
    if (!e->revslot) return NULL;
    for (size_t h = sp_hash(s, n) & e->revmask;; h = (h + 1) & e->revmask) {
        int k = e->revslot[h];
        if (k < 0) {
            if (!insert) return NULL;
            k = e->nrev++;
            e->revslot[h] = k;
            e->rev[k].start = (int)(s - base);
            e->rev[k].len = (int)n;
            return &e->rev[k];
        }
        if ((size_t)e->rev[k].len == n && memcmp(base + e->rev[k].start, s, n) == 0)
            return &e->rev[k];
    }
}

static void sp_maybe_add(SpEnc *e, int left, int right) {
    if (left < 0 || right < 0 || e->sym[left].freeze || e->sym[right].freeze) return;
    const char *s = e->norm.p + e->sym[left].start;
    size_t n = (size_t)e->sym[left].len + (size_t)e->sym[right].len;
    const Tokenizer *tk = e->tk;
    int a = e->sym[left].id, b = e->sym[right].id, id;
    if (a >= 0 && b >= 0 && n <= SP_MERGE_MAX) id = sp_merge_find(&tk->merges, a, b);
    else id = sp_map_find(&tk->pieces, tk, s, n);
    if (id < 0) return;
    uint64_t prio = (uint64_t)tk->skey[id] << 32 | (uint32_t)~(uint32_t)left;
    sp_heap_push(e, (SpPair){prio, left, right, (int)n, id});
    if (tk->type[id] == PIECE_UNUSED) {
        SpRev *r = sp_rev_slot(e, s, n, 1);
        r->lstart = e->sym[left].start;
        r->llen = e->sym[left].len;
        r->rstart = e->sym[right].start;
        r->rlen = e->sym[right].len;
    }
}

static void sp_out_push(SpEnc *e, int id, int start, int len) {
    if (e->nout == e->capout) {
        e->capout = e->capout ? e->capout * 2 : 64;
        e->out = sp_realloc(e->out, (size_t)e->capout * sizeof *e->out);
    }
    e->out[e->nout++] = (SpOut){id, start, len};
}

// One piece of the model's output (PopulateSentencePieceText's loop body).
static void sp_emit(SpEnc *e, int start, int len, int id) {
    const Tokenizer *tk = e->tk;
    int is_unk = tk->type[id] == PIECE_UNKNOWN;
    if (tk->type[id] == PIECE_CONTROL) {
        sp_out_push(e, id, start, len);   // no surface: consumes nothing
        e->bad = 1;                       // ... so the library's final check fails
    } else if (is_unk && tk->byte_fallback) {
        for (int i = 0; i < len; i++)
            sp_out_push(e, tk->byte_id[(unsigned char)e->norm.p[start + i]], -1, 0);
        e->consumed += (size_t)len;
    } else if (is_unk && e->prev_unk) {
        e->out[e->nout - 1].len += len;   // runs of unknown pieces are one piece
        e->consumed += (size_t)len;
    } else {
        sp_out_push(e, id, start, len);
        e->consumed += (size_t)len;
    }
    e->prev_unk = is_unk;
}

static void sp_span_push(int **stack, int *n, int *cap, int start, int len) {
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 32;
        *stack = sp_realloc(*stack, (size_t)*cap * 2 * sizeof **stack);
    }
    (*stack)[2 * *n] = start;
    (*stack)[2 * *n + 1] = len;
    (*n)++;
}

// Normalise and encode into e->out. Returns 0, or -1 where the library fails.
static int sp_encode(SpEnc *e, const Tokenizer *tk, const char *text, size_t len) {
    memset(e, 0, sizeof *e);
    e->tk = tk;
    sp_normalize(&tk->norm, &tk->user, text, len, &e->norm);
    size_t n = e->norm.n;
    if (n == 0) return 0;
    if (n > INT_MAX / 4) return -1;
    const unsigned char *s = (const unsigned char *)e->norm.p;
    e->sym = sp_realloc(NULL, n * sizeof *e->sym);
    int nsym = 0;
    for (size_t pos = 0; pos < n;) {
        int found;
        size_t mb = sp_trie_match(&tk->user, s + pos, n - pos, &found);
        int pid = mb == 1 && s[pos] < 128
                      ? tk->ascii_pid[s[pos]]
                      : sp_map_find(&tk->pieces, tk, (const char *)s + pos, mb);
        int next = pos + mb < n ? nsym + 1 : -1;
        e->sym[nsym] = (SpSym){nsym - 1, next, (int)pos, (int)mb, found, pid};
        nsym++;
        pos += mb;
    }
    for (int i = 1; i < nsym; i++) sp_maybe_add(e, i - 1, i);
    while (e->nheap > 0) {
        SpPair top = sp_heap_pop(e);
        SpSym *l = &e->sym[top.left], *r = &e->sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue;
        l->len += r->len;
        l->id = top.id;
        l->next = r->next;
        if (r->next >= 0) e->sym[r->next].prev = top.left;
        r->len = 0;
        sp_maybe_add(e, l->prev, top.left);
        sp_maybe_add(e, top.left, l->next);
    }
    if (!tk->has_unused) {        // the ids: PieceToId of each symbol, known ones reused
        for (int i = 0; i != -1; i = e->sym[i].next) {
            const SpSym *y = &e->sym[i];
            int id;
            if (y->id >= 0) id = tk->rid[y->id] >= 0 ? tk->rid[y->id] : y->id;
            else id = sp_piece_to_id(tk, e->norm.p + y->start, (size_t)y->len);
            sp_emit(e, y->start, y->len, id);
        }
        return e->bad || e->consumed != n ? -1 : 0;
    }
    // resegment (UNUSED pieces back into their parts), with an explicit stack of spans
    int *stack = NULL, nst = 0, capst = 0;       // (start, len) pairs
    for (int i = 0; i != -1; i = e->sym[i].next) {
        sp_span_push(&stack, &nst, &capst, e->sym[i].start, e->sym[i].len);
        while (nst > 0) {
            nst--;
            int st = stack[2 * nst], ln = stack[2 * nst + 1];
            int id = sp_piece_to_id(tk, e->norm.p + st, (size_t)ln);
            SpRev *r = NULL;
            if (tk->type[id] == PIECE_UNUSED) r = sp_rev_slot(e, e->norm.p + st, (size_t)ln, 0);
            if (!r) {
                sp_emit(e, st, ln, id);
                continue;
            }
            sp_span_push(&stack, &nst, &capst, r->rstart, r->rlen);   // right after left
            sp_span_push(&stack, &nst, &capst, r->lstart, r->llen);
        }
    }
    free(stack);
    return e->bad || e->consumed != n ? -1 : 0;
}

static void sp_enc_free(SpEnc *e) {
    free(e->norm.p);
    free(e->sym);
    free(e->heap);
    free(e->rev);
    free(e->revslot);
    free(e->out);
}

int tokenizer_encode(const Tokenizer *tk, const char *text, size_t len, int *ids, int max) {
    SpEnc e;
    int rc = sp_encode(&e, tk, text, len);
    int n = e.nout;
    for (int i = 0; i < n && i < max; i++) ids[i] = e.out[i].id;
    sp_enc_free(&e);
    return rc ? -1 : n;
}

char **tokenizer_encode_pieces(const Tokenizer *tk, const char *text, size_t len, int *count) {
    SpEnc e;
    if (sp_encode(&e, tk, text, len)) {
        sp_enc_free(&e);
        if (count) *count = -1;
        return NULL;
    }
    size_t bytes = (size_t)(e.nout + 1) * sizeof(char *);
    for (int i = 0; i < e.nout; i++)
        bytes += (e.out[i].start < 0 ? (size_t)tk->plen[e.out[i].id] : (size_t)e.out[i].len) + 1;
    char **v = xmalloc(bytes);
    char *t = (char *)(v + e.nout + 1);
    for (int i = 0; i < e.nout; i++) {
        const char *s = e.out[i].start < 0 ? tk->piece[e.out[i].id] : e.norm.p + e.out[i].start;
        size_t l = e.out[i].start < 0 ? (size_t)tk->plen[e.out[i].id] : (size_t)e.out[i].len;
        v[i] = t;
        memcpy(t, s, l);
        t[l] = 0;
        t += l + 1;
    }
    v[e.nout] = NULL;
    if (count) *count = e.nout;
    sp_enc_free(&e);
    return v;
}

// ----------------------------------------------------------------------------
// 6. decoding (SentencePieceProcessor::Decode over IdToPiece of each id)

// DecodeSentencePiece: one piece's text. At the start of the text (bos) a leading "▁"
// is dropped when the normalizer adds a dummy prefix or removes extra spaces; returns
// 1 when that happened and only the first such "▁" may go (remove_extra_whitespaces
// off), so the caller stops dropping.
static int sp_decode_piece(const Tokenizer *tk, int id, const char *piece, size_t plen,
                           int bos, SpBuf *o) {
    int ty = tk->type[id], seen = 0;
    if (ty == PIECE_CONTROL) return 0;
    if (ty == PIECE_UNKNOWN) {
        if ((size_t)tk->plen[id] == plen && memcmp(tk->piece[id], piece, plen) == 0)
            sp_buf_put(o, tk->unk_surface, strlen(tk->unk_surface));
        else
            sp_buf_put(o, piece, plen);
        return 0;
    }
    if (bos && (tk->norm.add_dummy_prefix || tk->norm.remove_extra_ws) && plen >= SP_WS_LEN &&
        memcmp(piece, SP_WS, SP_WS_LEN) == 0) {
        piece += SP_WS_LEN;
        plen -= SP_WS_LEN;
        seen = !tk->norm.remove_extra_ws;
    }
    for (size_t i = 0; i < plen;) {
        if (i + SP_WS_LEN <= plen && memcmp(piece + i, SP_WS, SP_WS_LEN) == 0) {
            sp_buf_byte(o, ' ');
            i += SP_WS_LEN;
        } else {
            sp_buf_byte(o, (unsigned char)piece[i++]);
        }
    }
    return seen;
}

// A run of byte pieces: their bytes as UTF-8 characters, U+FFFD per malformed byte.
static void sp_decode_bytes(const unsigned char *bytes, size_t n, SpBuf *o) {
    for (size_t off = 0; off < n;) {
        int len;
        if (!sp_valid_utf8_char(bytes + off, n - off, &len)) {
            sp_buf_put(o, "\xEF\xBF\xBD", 3);
            off += 1;
        } else {
            sp_buf_put(o, bytes + off, (size_t)len);
            off += (size_t)len;
        }
    }
}

long tokenizer_decode(const Tokenizer *tk, const int *ids, int n, char *out, size_t cap) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tk->n) return -1;
    SpBuf o = {0};
    sp_buf_reserve(&o, 0);
    unsigned char *bytes = sp_realloc(NULL, (size_t)(n > 0 ? n : 1));
    size_t nbytes = 0;
    int bos = 1, bos_seen = 0;       // still at the start / dropped a "▁" there
    for (int i = 0; i < n; i++) {
        const char *piece = tk->piece[ids[i]];
        size_t plen = (size_t)tk->plen[ids[i]];
        int id = sp_piece_to_id(tk, piece, plen);
        if (tk->type[id] == PIECE_BYTE) {
            bytes[nbytes++] = (unsigned char)sp_byte_value(piece, plen);
            continue;
        }
        sp_decode_bytes(bytes, nbytes, &o);
        nbytes = 0;
        if (bos_seen || o.n > 0) bos = 0;
        bos_seen = sp_decode_piece(tk, id, piece, plen, bos, &o);
    }
    sp_decode_bytes(bytes, nbytes, &o);
    free(bytes);
    if (tk->has_denorm) {
        SpBuf d = {0};
        sp_normalize(&tk->denorm, NULL, o.p, o.n, &d);
        free(o.p);
        o = d;
        sp_buf_reserve(&o, 0);
    }
    long total = (long)o.n;
    if (out && cap) {
        size_t k = o.n < cap - 1 ? o.n : cap - 1;
        memcpy(out, o.p, k);
        out[k] = 0;
    }
    free(o.p);
    return total;
}

// ----------------------------------------------------------------------------
// 7. training
//
// BPE over the words of the normalised captions (each word starts with "▁"): every
// character is a piece (character coverage 1.0); then, until the vocabulary is full,
// the most frequent adjacent pair of symbols becomes a new symbol (ties: fewer
// characters, then the smaller byte string). Pieces may not mix scripts (letters
// with digits/punctuation, Latin with Greek ...), hold "▁" other than first, or be
// longer than 16 characters, as sentencepiece's trainer requires. The model lists
// <unk>, [SOS], [EOS], [MASK], the merged pieces in order of creation with score
// -index, then the characters by frequency (score continuing), as the library's BPE
// trainer lays them out. Deterministic: no threads, no randomness.

enum { SP_SCRIPT_ANY = -1, SP_SCRIPT_COMMON = 0, SP_SCRIPT_LATIN = 1 };

// A Unicode script class (an approximation by blocks; what matters is that letters,
// digits/punctuation and different scripts do not mix).
static int sp_script(uint32_t c) {
    static const struct { uint32_t lo, hi; int script; } t[] = {
        {0x0041, 0x005A, 1}, {0x0061, 0x007A, 1}, {0x00AA, 0x00AA, 1}, {0x00BA, 0x00BA, 1},
        {0x00C0, 0x00D6, 1}, {0x00D8, 0x00F6, 1}, {0x00F8, 0x02AF, 1}, {0x02B0, 0x02FF, 0},
        {0x0300, 0x036F, 2}, {0x0370, 0x03FF, 3}, {0x0400, 0x052F, 4}, {0x0530, 0x058F, 5},
        {0x0590, 0x05FF, 6}, {0x0600, 0x06FF, 7}, {0x0750, 0x077F, 7}, {0x08A0, 0x08FF, 7},
        {0x0E00, 0x0E7F, 8}, {0x10A0, 0x10FF, 9}, {0x1100, 0x11FF, 10}, {0x1AB0, 0x1AFF, 2},
        {0x1C80, 0x1C8F, 4}, {0x1D00, 0x1D7F, 1}, {0x1DC0, 0x1DFF, 2}, {0x1E00, 0x1EFF, 1},
        {0x1F00, 0x1FFF, 3}, {0x2000, 0x20CF, 0}, {0x20D0, 0x20FF, 2}, {0x2100, 0x2BFF, 0},
        {0x2C60, 0x2C7F, 1}, {0x2DE0, 0x2DFF, 4}, {0x2E00, 0x2E7F, 0}, {0x2E80, 0x2FDF, 11},
        {0x3000, 0x303F, 0}, {0x3040, 0x30FF, 11}, {0x3130, 0x318F, 10}, {0x31F0, 0x31FF, 11},
        {0x3400, 0x4DBF, 11}, {0x4E00, 0x9FFF, 11}, {0xA640, 0xA69F, 4}, {0xA720, 0xA7FF, 1},
        {0xA960, 0xA97F, 10}, {0xAB30, 0xAB6F, 1}, {0xAC00, 0xD7FF, 10}, {0xF900, 0xFAFF, 11},
        {0xFB00, 0xFB06, 1}, {0xFB50, 0xFDFF, 7}, {0xFE20, 0xFE2F, 2}, {0xFE30, 0xFE6F, 0},
        {0xFE70, 0xFEFE, 7}, {0xFF00, 0xFF20, 0}, {0xFF21, 0xFF3A, 1}, {0xFF3B, 0xFF40, 0},
        {0xFF41, 0xFF5A, 1}, {0xFF5B, 0xFF65, 0}, {0xFF66, 0xFF9F, 11}, {0xFFA0, 0xFFDC, 10},
        {0xFFE0, 0xFFFF, 0}, {0x1F000, 0x1FAFF, 0}, {0x20000, 0x3FFFF, 11},
    };
    if (c == 0x2581) return SP_SCRIPT_ANY;
    if (c < 0x80 && !((c | 32) >= 'a' && (c | 32) <= 'z')) return SP_SCRIPT_COMMON;
    int lo = 0, hi = (int)(sizeof t / sizeof t[0]) - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c < t[mid].lo) hi = mid - 1;
        else if (c > t[mid].hi) lo = mid + 1;
        else return t[mid].script;
    }
    return c < 0x100 ? SP_SCRIPT_COMMON : 100 + (int)(c >> 7);
}

typedef struct SpTSym {             // a training symbol
    size_t off;                     // its string in SpTrain.arena
    int len, nchars, script, has_ws;
} SpTSym;

typedef struct SpTPair {
    int a, b;
    long count;
    int *words, nwords, capwords;
    unsigned stamp;                 // last merge step that pushed it
} SpTPair;

typedef struct SpTHeap { long count; int a, b, pair; } SpTHeap;

typedef struct SpTrain {
    SpBuf arena;                    // symbol strings
    SpTSym *sym;
    int nsym, capsym;
    int *symslot;                   // string -> symbol map
    size_t symmask;
    SpTPair *pair;
    int npair, cappair;
    int *pairslot;                  // (a,b) -> pair map
    size_t pairmask;
    SpTHeap *heap;
    int nheap, capheap;
    // words
    int *seq;                       // all words' symbol sequences
    long *wstart;                   // word w: seq[wstart[w] .. wstart[w] + wlen[w])
    int *wlen;
    long *wcount;
    unsigned *wstamp;
    int nwords;
} SpTrain;

static const char *sp_tsym_str(const SpTrain *t, int id) { return t->arena.p + t->sym[id].off; }

static int sp_tsym_find(SpTrain *t, const char *s, size_t n, int insert) {
    if ((size_t)(t->nsym + 1) * 2 > t->symmask + 1) {
        size_t cap = t->symmask ? (t->symmask + 1) * 2 : 1024;
        int *slot = sp_realloc(NULL, cap * sizeof *slot);
        for (size_t i = 0; i < cap; i++) slot[i] = -1;
        for (int k = 0; k < t->nsym; k++) {
            size_t h = sp_hash(sp_tsym_str(t, k), (size_t)t->sym[k].len) & (cap - 1);
            while (slot[h] >= 0) h = (h + 1) & (cap - 1);
            slot[h] = k;
        }
        free(t->symslot);
        t->symslot = slot;
        t->symmask = cap - 1;
    }
    for (size_t h = sp_hash(s, n) & t->symmask;; h = (h + 1) & t->symmask) {
        int k = t->symslot[h];
        if (k < 0) {
            if (!insert) return -1;
            if (t->nsym == t->capsym) {
                t->capsym = t->capsym ? t->capsym * 2 : 1024;
                t->sym = sp_realloc(t->sym, (size_t)t->capsym * sizeof *t->sym);
            }
            k = t->nsym++;
            SpTSym *y = &t->sym[k];
            memset(y, 0, sizeof *y);
            y->off = t->arena.n;
            y->len = (int)n;
            sp_buf_put(&t->arena, s, n);
            sp_buf_byte(&t->arena, 0);
            t->symslot[h] = k;
            return k;
        }
        if ((size_t)t->sym[k].len == n && memcmp(sp_tsym_str(t, k), s, n) == 0) return k;
    }
}

static int sp_tpair_valid(const SpTrain *t, int a, int b) {
    const SpTSym *x = &t->sym[a], *y = &t->sym[b];
    if (x->nchars + y->nchars > 16 || y->has_ws) return 0;
    return x->script == SP_SCRIPT_ANY || y->script == SP_SCRIPT_ANY || x->script == y->script;
}

static SpTPair *sp_tpair(SpTrain *t, int a, int b, int insert) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    if (insert && (size_t)(t->npair + 1) * 2 > t->pairmask + 1) {
        size_t cap = t->pairmask ? (t->pairmask + 1) * 2 : 4096;
        int *slot = sp_realloc(NULL, cap * sizeof *slot);
        for (size_t i = 0; i < cap; i++) slot[i] = -1;
        for (int k = 0; k < t->npair; k++) {
            uint64_t kk = ((uint64_t)(uint32_t)t->pair[k].a << 32) | (uint32_t)t->pair[k].b;
            size_t h = sp_hash(&kk, 8) & (cap - 1);
            while (slot[h] >= 0) h = (h + 1) & (cap - 1);
            slot[h] = k;
        }
        free(t->pairslot);
        t->pairslot = slot;
        t->pairmask = cap - 1;
    }
    if (!t->pairslot) return NULL;
    for (size_t h = sp_hash(&key, 8) & t->pairmask;; h = (h + 1) & t->pairmask) {
        int k = t->pairslot[h];
        if (k < 0) {
            if (!insert) return NULL;
            if (t->npair == t->cappair) {
                t->cappair = t->cappair ? t->cappair * 2 : 4096;
                t->pair = sp_realloc(t->pair, (size_t)t->cappair * sizeof *t->pair);
            }
            k = t->npair++;
            memset(&t->pair[k], 0, sizeof t->pair[k]);
            t->pair[k].a = a;
            t->pair[k].b = b;
            t->pairslot[h] = k;
            return &t->pair[k];
        }
        if (t->pair[k].a == a && t->pair[k].b == b) return &t->pair[k];
    }
}

// Heap order: higher count, then fewer characters, then the smaller string, then ids.
static int sp_theap_better(const SpTrain *t, const SpTHeap *x, const SpTHeap *y) {
    if (x->count != y->count) return x->count > y->count;
    int nx = t->sym[x->a].nchars + t->sym[x->b].nchars;
    int ny = t->sym[y->a].nchars + t->sym[y->b].nchars;
    if (nx != ny) return nx < ny;
    // compare the concatenations x.a x.b and y.a y.b bytewise
    const unsigned char *p[2] = {(const unsigned char *)sp_tsym_str(t, x->a),
                                 (const unsigned char *)sp_tsym_str(t, x->b)};
    const unsigned char *q[2] = {(const unsigned char *)sp_tsym_str(t, y->a),
                                 (const unsigned char *)sp_tsym_str(t, y->b)};
    int lp[2] = {t->sym[x->a].len, t->sym[x->b].len};
    int lq[2] = {t->sym[y->a].len, t->sym[y->b].len};
    int i = 0, pi = 0, j = 0, qi = 0;
    for (;;) {
        while (pi < 2 && i >= lp[pi]) { pi++; i = 0; }
        while (qi < 2 && j >= lq[qi]) { qi++; j = 0; }
        if (pi == 2 || qi == 2) break;
        if (p[pi][i] != q[qi][j]) return p[pi][i] < q[qi][j];
        i++;
        j++;
    }
    if ((pi == 2) != (qi == 2)) return pi == 2;
    if (x->a != y->a) return x->a < y->a;
    return x->b < y->b;
}
static void sp_theap_push(SpTrain *t, SpTHeap v) {
    if (t->nheap == t->capheap) {
        t->capheap = t->capheap ? t->capheap * 2 : 4096;
        t->heap = sp_realloc(t->heap, (size_t)t->capheap * sizeof *t->heap);
    }
    int i = t->nheap++;
    while (i > 0) {
        int up = (i - 1) / 2;
        if (!sp_theap_better(t, &v, &t->heap[up])) break;
        t->heap[i] = t->heap[up];
        i = up;
    }
    t->heap[i] = v;
}
static SpTHeap sp_theap_pop(SpTrain *t) {
    SpTHeap top = t->heap[0], last = t->heap[--t->nheap];
    int i = 0, n = t->nheap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && sp_theap_better(t, &t->heap[c + 1], &t->heap[c])) c++;
        if (!sp_theap_better(t, &t->heap[c], &last)) break;
        t->heap[i] = t->heap[c];
        i = c;
    }
    if (n > 0) t->heap[i] = last;
    return top;
}

static void sp_tpair_addword(SpTPair *p, int w) {
    if (p->nwords && p->words[p->nwords - 1] == w) return;
    if (p->nwords == p->capwords) {
        p->capwords = p->capwords ? p->capwords * 2 : 4;
        p->words = sp_realloc(p->words, (size_t)p->capwords * sizeof *p->words);
    }
    p->words[p->nwords++] = w;
}

static void sp_train_free(SpTrain *t) {
    free(t->arena.p);
    free(t->sym);
    free(t->symslot);
    for (int i = 0; i < t->npair; i++) free(t->pair[i].words);
    free(t->pair);
    free(t->pairslot);
    free(t->heap);
    free(t->seq);
    free(t->wstart);
    free(t->wlen);
    free(t->wcount);
    free(t->wstamp);
}

// Word counting: normalised caption -> words ("▁"-initial, SplitIntoWords).
typedef struct SpWordMap {
    SpBuf text;                     // words, NUL-separated
    size_t *off;
    int *len;
    long *count;
    int n, cap;
    int *slot;
    size_t mask;
} SpWordMap;

static void sp_word_add(SpWordMap *m, const char *s, size_t n) {
    if ((size_t)(m->n + 1) * 2 > m->mask + 1) {
        size_t cap = m->mask ? (m->mask + 1) * 2 : 4096;
        int *slot = sp_realloc(NULL, cap * sizeof *slot);
        for (size_t i = 0; i < cap; i++) slot[i] = -1;
        for (int k = 0; k < m->n; k++) {
            size_t h = sp_hash(m->text.p + m->off[k], (size_t)m->len[k]) & (cap - 1);
            while (slot[h] >= 0) h = (h + 1) & (cap - 1);
            slot[h] = k;
        }
        free(m->slot);
        m->slot = slot;
        m->mask = cap - 1;
    }
    for (size_t h = sp_hash(s, n) & m->mask;; h = (h + 1) & m->mask) {
        int k = m->slot[h];
        if (k < 0) {
            if (m->n == m->cap) {
                m->cap = m->cap ? m->cap * 2 : 4096;
                m->off = sp_realloc(m->off, (size_t)m->cap * sizeof *m->off);
                m->len = sp_realloc(m->len, (size_t)m->cap * sizeof *m->len);
                m->count = sp_realloc(m->count, (size_t)m->cap * sizeof *m->count);
            }
            k = m->n++;
            m->off[k] = m->text.n;
            m->len[k] = (int)n;
            m->count[k] = 1;
            sp_buf_put(&m->text, s, n);
            sp_buf_byte(&m->text, 0);
            m->slot[h] = k;
            return;
        }
        if ((size_t)m->len[k] == n && memcmp(m->text.p + m->off[k], s, n) == 0) {
            m->count[k]++;
            return;
        }
    }
}

typedef struct SpChar { uint32_t cp; long count; } SpChar;
static int sp_char_cmp(const void *a, const void *b) {   // count desc, code point asc
    const SpChar *x = a, *y = b;
    if (x->count != y->count) return x->count > y->count ? -1 : 1;
    return x->cp < y->cp ? -1 : x->cp > y->cp;
}

unsigned char *vocab_train(const char *const *captions, long ncaptions, const VocabOptions *o,
                           size_t *outlen, char *err, size_t errlen) {
    static const char *const special[4] = {"<unk>", "[SOS]", "[EOS]", "[MASK]"};
    double t0 = now_seconds();
    SpNorm nm;
    sp_norm_defaults(&nm);
    if (o->normalizer_from) {
        const SpNorm *src = &o->normalizer_from->norm;
        nm.name = xstrdup(src->name ? src->name : "");
        if (src->blob && sp_norm_set_charsmap(&nm, src->blob, src->blob_len, err, errlen)) {
            sp_norm_free(&nm);
            return NULL;
        }
        nm.add_dummy_prefix = src->add_dummy_prefix;
        nm.remove_extra_ws = src->remove_extra_ws;
        nm.escape_ws = src->escape_ws;
    } else {
        size_t blen;
        unsigned char *blob = sp_default_charsmap(&blen);
        nm.name = xstrdup("nmt_nfkc_subset");
        sp_norm_set_charsmap(&nm, blob, blen, NULL, 0);
        free(blob);
    }
    if (!nm.escape_ws) {
        sp_norm_free(&nm);
        seterr(err, errlen, "the normalizer must escape whitespace (escape_whitespaces) to "
                "train a vocabulary");
        return NULL;
    }
    // 1. words and characters
    SpWordMap wm = {0};
    SpBuf nb = {0};
    for (long i = 0; i < ncaptions; i++) {
        const char *c = captions[i] ? captions[i] : "";
        sp_normalize(&nm, NULL, c, strlen(c), &nb);
        size_t n = nb.n, start = 0;
        for (size_t pos = 0; pos < n;) {     // SplitIntoWords: a new word at each "▁"
            size_t mb = (size_t)sp_one_char_len((unsigned char)nb.p[pos]);
            if (mb > n - pos) mb = n - pos;
            if (pos > 0 && mb == SP_WS_LEN && memcmp(nb.p + pos, SP_WS, SP_WS_LEN) == 0) {
                sp_word_add(&wm, nb.p + start, pos - start);
                start = pos;
            }
            pos += mb;
        }
        if (n > 0) sp_word_add(&wm, nb.p + start, n - start);
    }
    free(nb.p);
    SpTrain t = {0};
    t.nwords = wm.n;
    t.wstart = sp_realloc(NULL, (size_t)(wm.n + 1) * sizeof *t.wstart);
    t.wlen = sp_realloc(NULL, (size_t)(wm.n + 1) * sizeof *t.wlen);
    t.wcount = sp_realloc(NULL, (size_t)(wm.n + 1) * sizeof *t.wcount);
    t.wstamp = xcalloc((size_t)wm.n + 1, sizeof *t.wstamp);
    long total = 0;
    for (int w = 0; w < wm.n; w++) total += wm.len[w];
    t.seq = sp_realloc(NULL, (size_t)(total + 1) * sizeof *t.seq);
    SpChar *chars = NULL;
    int nchars_distinct = 0;
    long pos_seq = 0;
    for (int w = 0; w < wm.n; w++) {
        const unsigned char *s = (const unsigned char *)wm.text.p + wm.off[w];
        size_t n = (size_t)wm.len[w];
        t.wstart[w] = pos_seq;
        t.wcount[w] = wm.count[w];
        int k = 0;
        for (size_t p = 0; p < n;) {
            int mb;
            uint32_t cp = sp_decode_utf8(s + p, n - p, &mb);   // always valid here
            int before = t.nsym;
            int id = sp_tsym_find(&t, (const char *)s + p, (size_t)mb, 1);
            if (id == before) {            // a new character
                t.sym[id].nchars = 1;
                t.sym[id].script = sp_script(cp);
                t.sym[id].has_ws = cp == 0x2581;
                chars = sp_realloc(chars, (size_t)(nchars_distinct + 1) * sizeof *chars);
                chars[nchars_distinct].cp = cp;
                chars[nchars_distinct].count = 0;
                nchars_distinct++;
            }
            chars[id].count += wm.count[w];    // character ids = symbol ids here
            t.seq[pos_seq + k++] = id;
            p += (size_t)mb;
        }
        t.wlen[w] = k;
        pos_seq += k;
    }
    int nwords_unique = wm.n;
    long nwords_total = 0;
    for (int w = 0; w < wm.n; w++) nwords_total += wm.count[w];
    free(wm.text.p);
    free(wm.off);
    free(wm.len);
    free(wm.count);
    free(wm.slot);
    int nchar = t.nsym;
    long want = (long)o->vocab_size - 4 - nchar;    // merged pieces to make
    unsigned char *result = NULL;
    if (ncaptions <= 0 || nchar == 0) {
        seterr(err, errlen, "no text to train on (%ld captions)", ncaptions);
        goto done;
    }
    if (want < 0) {
        seterr(err, errlen, "vocabulary size %d is too small: the captions use %d distinct "
                "characters and there are 4 special pieces, so it must be at least %d",
                o->vocab_size, nchar, nchar + 4);
        goto done;
    }
    // 2. pair statistics
    for (int w = 0; w < t.nwords; w++) {
        int *s = t.seq + t.wstart[w];
        for (int i = 0; i + 1 < t.wlen[w]; i++) {
            if (!sp_tpair_valid(&t, s[i], s[i + 1])) continue;
            SpTPair *p = sp_tpair(&t, s[i], s[i + 1], 1);
            p->count += t.wcount[w];
            sp_tpair_addword(p, w);
        }
    }
    for (int k = 0; k < t.npair; k++)
        sp_theap_push(&t, (SpTHeap){t.pair[k].count, t.pair[k].a, t.pair[k].b, k});
    // 3. merges
    int *merged = sp_realloc(NULL, (size_t)(want + 1) * sizeof *merged);
    long nmerged = 0;
    unsigned stamp = 0;
    int *tmp = NULL, captmp = 0, *touched = NULL, ntouched = 0, captouched = 0;
    while (nmerged < want) {
        if (t.nheap == 0) {
            seterr(err, errlen, "vocabulary size %d is too large for these captions: at most "
                    "%ld pieces can be made (4 special, %d characters, %ld merged)",
                    o->vocab_size, 4 + nchar + nmerged, nchar, nmerged);
            free(merged);
            free(tmp);
            free(touched);
            goto done;
        }
        SpTHeap top = sp_theap_pop(&t);
        SpTPair *p = &t.pair[top.pair];
        if (p->count != top.count) {
            if (p->count > 0) {
                top.count = p->count;
                sp_theap_push(&t, top);
            }
            continue;
        }
        if (p->count <= 0) continue;
        int a = p->a, b = p->b;
        // the new symbol
        size_t la = (size_t)t.sym[a].len, lb = (size_t)t.sym[b].len;
        char *s = sp_realloc(NULL, la + lb);
        memcpy(s, sp_tsym_str(&t, a), la);
        memcpy(s + la, sp_tsym_str(&t, b), lb);
        int before = t.nsym;
        int c = sp_tsym_find(&t, s, la + lb, 1);
        free(s);
        if (c == before) {
            t.sym[c].nchars = t.sym[a].nchars + t.sym[b].nchars;
            int sa = t.sym[a].script;
            t.sym[c].script = sa != SP_SCRIPT_ANY ? sa : t.sym[b].script;
            t.sym[c].has_ws = t.sym[a].has_ws;
            merged[nmerged++] = c;
        }
        // apply it in every word that holds the pair
        stamp++;
        ntouched = 0;
        int nw = p->nwords;
        for (int wi = 0; wi < nw; wi++) {
            int w = t.pair[top.pair].words[wi];     // (the array may move: re-read)
            if (t.wstamp[w] == stamp) continue;
            t.wstamp[w] = stamp;
            int *q = t.seq + t.wstart[w], n = t.wlen[w];
            int has = 0;
            for (int i = 0; i + 1 < n && !has; i++) has = q[i] == a && q[i + 1] == b;
            if (!has) continue;
            long cnt = t.wcount[w];
            for (int i = 0; i + 1 < n; i++) {
                SpTPair *r = sp_tpair(&t, q[i], q[i + 1], 0);
                if (r) r->count -= cnt;
            }
            if (n > captmp) {
                captmp = n * 2;
                tmp = sp_realloc(tmp, (size_t)captmp * sizeof *tmp);
            }
            int m = 0;
            for (int i = 0; i < n;) {
                if (i + 1 < n && q[i] == a && q[i + 1] == b) { tmp[m++] = c; i += 2; }
                else tmp[m++] = q[i++];
            }
            memcpy(q, tmp, (size_t)m * sizeof *q);
            t.wlen[w] = m;
            for (int i = 0; i + 1 < m; i++) {
                SpTPair *r = sp_tpair(&t, q[i], q[i + 1], 0);
                if (r) { r->count += cnt; }
                if (q[i] != c && q[i + 1] != c) continue;
                if (!r) {
                    if (!sp_tpair_valid(&t, q[i], q[i + 1])) continue;
                    r = sp_tpair(&t, q[i], q[i + 1], 1);
                    r->count = cnt;
                }
                sp_tpair_addword(r, w);
                if (r->stamp != stamp) {
                    r->stamp = stamp;
                    if (ntouched == captouched) {
                        captouched = captouched ? captouched * 2 : 256;
                        touched = sp_realloc(touched, (size_t)captouched * sizeof *touched);
                    }
                    touched[ntouched++] = (int)(r - t.pair);
                }
            }
        }
        for (int k = 0; k < ntouched; k++) {
            SpTPair *r = &t.pair[touched[k]];
            if (r->count > 0) sp_theap_push(&t, (SpTHeap){r->count, r->a, r->b, touched[k]});
        }
    }
    free(tmp);
    free(touched);
    // 4. the model
    qsort(chars, (size_t)nchars_distinct, sizeof *chars, sp_char_cmp);
    SpBuf pb = {0}, piece = {0};
    for (int i = 0; i < 4; i++) {
        piece.n = 0;
        sp_pbw_bytes(&piece, 1, special[i], strlen(special[i]));
        sp_pbw_float(&piece, 2, 0.0f);
        sp_pbw_int(&piece, 3, i == 0 ? PIECE_UNKNOWN : PIECE_CONTROL);
        sp_pbw_bytes(&pb, 1, piece.p, piece.n);
    }
    long k = 0;
    for (long i = 0; i < nmerged + nchars_distinct; i++, k++) {
        const char *s;
        size_t l;
        char cbuf[4];
        if (i < nmerged) {
            s = sp_tsym_str(&t, merged[i]);
            l = (size_t)t.sym[merged[i]].len;
        } else {
            l = (size_t)sp_put_utf8(cbuf, chars[i - nmerged].cp);
            s = cbuf;
        }
        piece.n = 0;
        sp_pbw_bytes(&piece, 1, s, l);
        sp_pbw_float(&piece, 2, -(float)k);
        sp_pbw_bytes(&pb, 1, piece.p, piece.n);
    }
    piece.n = 0;                      // trainer_spec
    sp_pbw_int(&piece, 3, 2);            // model_type BPE
    sp_pbw_int(&piece, 4, o->vocab_size);
    sp_pbw_float(&piece, 10, 1.0f);      // character_coverage
    for (int i = 1; i < 4; i++) sp_pbw_bytes(&piece, 30, special[i], strlen(special[i]));
    sp_pbw_int(&piece, 40, 0);           // unk_id
    sp_pbw_int(&piece, 41, -1);          // bos_id
    sp_pbw_int(&piece, 42, -1);          // eos_id
    sp_pbw_int(&piece, 43, -1);          // pad_id
    sp_pbw_bytes(&pb, 2, piece.p, piece.n);
    piece.n = 0;                      // normalizer_spec
    sp_pbw_bytes(&piece, 1, nm.name, strlen(nm.name));
    if (nm.blob) sp_pbw_bytes(&piece, 2, nm.blob, nm.blob_len);
    sp_pbw_int(&piece, 3, nm.add_dummy_prefix);
    sp_pbw_int(&piece, 4, nm.remove_extra_ws);
    sp_pbw_int(&piece, 5, nm.escape_ws);
    sp_pbw_bytes(&pb, 3, piece.p, piece.n);
    free(piece.p);
    free(merged);
    result = (unsigned char *)pb.p;
    *outlen = pb.n;
    if (o->verbose)
        printf("vocab: %ld captions, %ld words (%d distinct), %d characters, %ld merges, "
               "%d pieces, normalizer %s (%.1fs)\n", ncaptions, nwords_total, nwords_unique,
               nchar, nmerged, (int)(4 + nmerged + nchars_distinct), nm.name,
               now_seconds() - t0);
done:
    free(chars);
    sp_train_free(&t);
    sp_norm_free(&nm);
    return result;
}

int vocab_write(const char *prefix, const unsigned char *model, size_t len, char *err,
                size_t errlen) {
    size_t n = strlen(prefix) + 8;
    char *mpath = xmalloc(n), *vpath = xmalloc(n);
    snprintf(mpath, n, "%s.model", prefix);
    snprintf(vpath, n, "%s.vocab", prefix);
    int rc = -1;
    Tokenizer *tk = tokenizer_load_memory(model, len, mpath, err, errlen);
    if (!tk) goto out;
    AtomicFile af;
    for (int k = 0; k < 2; k++) {                  // PREFIX.model, then PREFIX.vocab
        const char *path = k ? vpath : mpath;
        if (atomic_open(&af, path)) {
            seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
            goto out;
        }
        if (k) tokenizer_write_vocab(tk, af.f);
        else fwrite(model, 1, len, af.f);
        if (atomic_commit(&af)) {                  // (a failed write shows here)
            seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
            goto out;
        }
    }
    rc = 0;
out:
    tokenizer_free(tk);
    free(mpath);
    free(vpath);
    return rc;
}

// ---- the synthetic shapes dataset — `virtex synth`: the built-in synthetic shapes dataset (model.h 8d).
//
// One image is: a textured grey background, 1-3 shapes drawn with 4x4 supersampled
// coverage, a little pixel noise, quantised to 8 bits and written by stb_image_write.
// Its scene (what is where) also yields the captions (COCO), the boxes (COCO instances,
// VOC Annotations) and the labels (VOC ImageSets, ImageNet folders). Every image is
// drawn from its own Rng seeded from (seed, split, index); images are drawn in
// parallel chunks and their records are written in index order after each chunk.
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <stb/stb_image_write.h>
#include "model.h"

#define SYNTH_JPEG_QUALITY 95        // > 90: stb keeps full-resolution chroma
#define SYNTH_PATH 4096

const char *const synth_shape_names[SYNTH_SHAPES] = {"circle", "square", "triangle", "star",
                                                     "cross"};
const char *const synth_colour_names[SYNTH_COLOURS] = {"red", "orange", "yellow", "green",
                                                       "blue", "purple", "white"};
const unsigned char synth_colour_rgb[SYNTH_COLOURS][3] = {
    {220, 30, 30}, {250, 140, 20}, {245, 225, 30}, {30, 170, 50},
    {30, 70, 230}, {145, 50, 195}, {245, 245, 245}};

static const char *const synth_split_names[SYNTH_NSPLITS] = {
    "coco train2017", "coco val2017", "voc2007 trainval", "voc2007 test",
    "imagenet train", "imagenet val"};

void synth_class_name(int cls, char *buf, size_t n) {
    if (cls < 0 || cls >= SYNTH_CLASSES) { snprintf(buf, n, "?"); return; }
    snprintf(buf, n, "%s_%s", synth_colour_names[cls / SYNTH_SHAPES],
             synth_shape_names[cls % SYNTH_SHAPES]);
}

static float synth_u(Rng *r, float lo, float hi) { return lo + (hi - lo) * (float)rng_uniform(r); }
static int synth_int(Rng *r, int n) { return (int)(rng_uniform(r) * n); }

// ----------------------------------------------------------------------------
// shapes: each is a polygon in units of its radius r (circle: a true circle; its
// polygon only serves the COCO segmentation), centred on (cx, cy), y pointing down.

// The distance from the centre to the farthest point, in units of r.
static const float synth_extent[SYNTH_SHAPES] = {0.92f, 1.1314f, 1.2f, 1.15f, 1.0566f};
#define SYNTH_MAX_VERTS 24

static int synth_polygon(int shape, float v[SYNTH_MAX_VERTS][2]) {
    static const float square[4][2] = {{-0.8f, -0.8f}, {0.8f, -0.8f}, {0.8f, 0.8f}, {-0.8f, 0.8f}};
    static const float triangle[3][2] = {{0, -1.2f}, {1.03923f, 0.6f}, {-1.03923f, 0.6f}};
    static const float cross[12][2] = {
        {-0.34f, -1}, {0.34f, -1}, {0.34f, -0.34f}, {1, -0.34f}, {1, 0.34f}, {0.34f, 0.34f},
        {0.34f, 1}, {-0.34f, 1}, {-0.34f, 0.34f}, {-1, 0.34f}, {-1, -0.34f}, {-0.34f, -0.34f}};
    switch (shape) {
    case 0:
        for (int k = 0; k < 24; k++) {
            v[k][0] = 0.92f * (float)cos(2 * M_PI * k / 24);
            v[k][1] = 0.92f * (float)sin(2 * M_PI * k / 24);
        }
        return 24;
    case 1: memcpy(v, square, sizeof square); return 4;
    case 2: memcpy(v, triangle, sizeof triangle); return 3;
    case 3:                                 // five points, one straight up
        for (int k = 0; k < 10; k++) {
            double a = -M_PI / 2 + k * M_PI / 5, rad = k % 2 ? 0.48 : 1.15;
            v[k][0] = (float)(rad * cos(a));
            v[k][1] = (float)(rad * sin(a));
        }
        return 10;
    default: memcpy(v, cross, sizeof cross); return 12;
    }
}

// Is the point (u, w) (units of r, relative to the centre) inside the shape?
static int synth_inside(int shape, const float v[][2], int nv, float u, float w) {
    if (shape == 0) return u * u + w * w <= 0.92f * 0.92f;
    int in = 0;                              // crossing number
    for (int i = 0, j = nv - 1; i < nv; j = i++)
        if ((v[i][1] > w) != (v[j][1] > w) &&
            u < (v[j][0] - v[i][0]) * (w - v[i][1]) / (v[j][1] - v[i][1]) + v[i][0])
            in = !in;
    return in;
}

static float synth_reach(const SynthObject *o) { return synth_extent[o->shape] * o->r; }

// ----------------------------------------------------------------------------
// scenes

// Radius of a size class: small 0.10 S, large 0.165 S, tiny 0.05 S, each +-10%.
static float synth_radius(int size, int S, Rng *r) {
    static const float frac[3] = {0.10f, 0.165f, 0.05f};
    return frac[size] * S * synth_u(r, 0.9f, 1.1f);
}

// Does o keep clear of every object of s? Bounding circles may overlap by 10%, and no
// shape may reach within 2 px of another's centre.
static int synth_clear(const SynthScene *s, const SynthObject *o) {
    for (int i = 0; i < s->n; i++) {
        float a = synth_reach(o), b = synth_reach(&s->obj[i]);
        float d = hypotf(o->cx - s->obj[i].cx, o->cy - s->obj[i].cy);
        if (d < 0.9f * (a + b) || d < fmaxf(a, b) + 2) return 0;
    }
    return 1;
}

// Put o at a random place with its centre in [lo, hi]^2 shrunk so the shape stays
// inside the picture and clear of the others. Returns 0 after 100 failed tries.
static int synth_place(const SynthScene *s, SynthObject *o, int S, float lo, float hi, Rng *r) {
    float e = synth_reach(o);
    lo = fmaxf(lo, e + 1);
    hi = fminf(hi, S - e - 1);
    if (hi < lo) return 0;
    for (int t = 0; t < 100; t++) {
        o->cx = synth_u(r, lo, hi);
        o->cy = synth_u(r, lo, hi);
        if (synth_clear(s, o)) return 1;
    }
    return 0;
}

static int synth_has_class(const SynthScene *s, int colour, int shape) {
    for (int i = 0; i < s->n; i++)
        if (s->obj[i].colour == colour && s->obj[i].shape == shape) return 1;
    return 0;
}

// How many shapes a scene holds and how large they are. The COCO scenes are mostly one
// large shape: the default 7000-iteration run learns to name shapes there (94.4% of
// the val objects named with colour and shape), while with half of the scenes holding
// two shapes it names 40.7%, and on the VOC mix below (also half of the shapes small)
// 3000 iterations name shapes at chance (30.9%) and 15000 only 40.3% (README, "What
// it learns"). VOC keeps the busier scenes: they are what its multi-label SVMs are for.
// P(1 shape), P(1 or 2 shapes) (else 3), P(a shape is drawn large)
typedef struct SynthLayout { float one, upto_two, large; } SynthLayout;
static const SynthLayout synth_coco_layout = {0.7f, 1.0f, 1.0f};
static const SynthLayout synth_voc_layout = {0.3f, 0.7f, 0.5f};

// 1 to 3 shapes, each colour+shape pair at most once; a large shape that does not fit
// is tried small, one that still does not fit is left out.
static void synth_layout_shapes(SynthScene *s, const SynthLayout *l, int S, Rng *r) {
    float u = (float)rng_uniform(r);
    int want = u < l->one ? 1 : u < l->upto_two ? 2 : 3;
    for (int k = 0; k < want; k++) {
        SynthObject o = {0};
        do {
            o.colour = synth_int(r, SYNTH_COLOURS);
            o.shape = synth_int(r, SYNTH_SHAPES);
        } while (synth_has_class(s, o.colour, o.shape));
        o.size = rng_uniform(r) < l->large;
        o.r = synth_radius(o.size, S, r);
        if (!synth_place(s, &o, S, 0, (float)S, r)) {
            if (!o.size) continue;
            o.size = 0;
            o.r = synth_radius(0, S, r);
            if (!synth_place(s, &o, S, 0, (float)S, r)) continue;
        }
        s->obj[s->n++] = o;
    }
}

// VOC's "difficult" object: tiny, or with its centre outside the picture so that about
// three quarters of it are cut off. Any class (it may repeat a visible one).
static void synth_add_difficult(SynthScene *s, int S, Rng *r) {
    SynthObject o = {0};
    o.colour = synth_int(r, SYNTH_COLOURS);
    o.shape = synth_int(r, SYNTH_SHAPES);
    o.difficult = 1;
    if (rng_uniform(r) < 0.5) {
        o.size = 2;
        o.r = synth_radius(2, S, r);
        if (synth_place(s, &o, S, 0, (float)S, r)) s->obj[s->n++] = o;
        return;
    }
    o.size = rng_uniform(r) < 0.5;
    o.r = synth_radius(o.size, S, r);
    o.truncated = 1;
    float e = synth_reach(&o);
    for (int t = 0; t < 50; t++) {
        int edge = synth_int(r, 4);
        float along = synth_u(r, e, S - e), out = -0.35f * e;
        o.cx = edge == 0 ? out : edge == 1 ? S - out : along;
        o.cy = edge == 2 ? out : edge == 3 ? S - out : along;
        if (synth_clear(s, &o)) { s->obj[s->n++] = o; return; }
    }
}

// ImageNet: one large shape of class cls near the centre; 40% of the time a small
// shape of another class beside it.
static void synth_layout_dominant(SynthScene *s, int cls, int S, Rng *r) {
    SynthObject o = {0};
    o.colour = cls / SYNTH_SHAPES;
    o.shape = cls % SYNTH_SHAPES;
    o.size = 1;
    o.r = S * synth_u(r, 0.15f, 0.20f);
    if (!synth_place(s, &o, S, 0.3f * S, 0.7f * S, r)) {   // always fits an empty scene
        o.cx = o.cy = 0.5f * S;
    }
    s->obj[s->n++] = o;
    if (rng_uniform(r) < 0.4) {
        SynthObject d = {0};
        do {
            d.colour = synth_int(r, SYNTH_COLOURS);
            d.shape = synth_int(r, SYNTH_SHAPES);
        } while (d.colour * SYNTH_SHAPES + d.shape == cls);
        d.r = synth_radius(0, S, r);
        if (synth_place(s, &d, S, 0, (float)S, r)) s->obj[s->n++] = d;
    }
}

// bbox (x, y, w, h) of the polygon inside the picture (the circle's exactly).
static void synth_bbox(SynthObject *o, int S) {
    float v[SYNTH_MAX_VERTS][2];
    int nv = synth_polygon(o->shape, v);
    float x0 = 1e9f, y0 = 1e9f, x1 = -1e9f, y1 = -1e9f;
    for (int k = 0; k < nv; k++) {
        x0 = fminf(x0, v[k][0]); x1 = fmaxf(x1, v[k][0]);
        y0 = fminf(y0, v[k][1]); y1 = fmaxf(y1, v[k][1]);
    }
    if (o->shape == 0) x0 = y0 = -0.92f, x1 = y1 = 0.92f;
    x0 = fmaxf(0, o->cx + x0 * o->r); x1 = fminf((float)S, o->cx + x1 * o->r);
    y0 = fmaxf(0, o->cy + y0 * o->r); y1 = fminf((float)S, o->cy + y1 * o->r);
    o->bbox[0] = x0; o->bbox[1] = y0;
    o->bbox[2] = fmaxf(0, x1 - x0); o->bbox[3] = fmaxf(0, y1 - y0);
}

// ----------------------------------------------------------------------------
// drawing

static void synth_hsv(float h, float s, float v, float rgb[3]) {
    float c = v * s, hp = h * 6, x = c * (1 - fabsf(fmodf(hp, 2) - 1)), m = v - c;
    float t[3] = {0, 0, 0};
    int k = (int)hp % 6;
    if (k == 0) t[0] = c, t[1] = x;
    else if (k == 1) t[0] = x, t[1] = c;
    else if (k == 2) t[1] = c, t[2] = x;
    else if (k == 3) t[1] = x, t[2] = c;
    else if (k == 4) t[0] = x, t[2] = c;
    else t[0] = c, t[2] = x;
    for (int i = 0; i < 3; i++) rgb[i] = (t[i] + m) * 255;
}

// A low-contrast background, mid grey with a faint tint (value 0.36-0.62, saturation
// <= 0.15, so white stays the brightest thing and the named colours stand out), a
// linear gradient, and one texture: noise, stripes or clouds. Returns the noise level.
static float synth_background(float *img, int S, Rng *r) {
    float base[3];
    synth_hsv((float)rng_uniform(r), synth_u(r, 0, 0.15f), synth_u(r, 0.36f, 0.62f), base);
    float ga = synth_u(r, 0, 36), gt = synth_u(r, 0, 2 * (float)M_PI);
    float gx = cosf(gt), gy = sinf(gt);
    int tex = synth_int(r, 3);
    float amp[4], fx[4], fy[4], ph[4], noise = synth_u(r, 2, 4);
    int waves = tex == 1 ? 1 : tex == 2 ? 4 : 0;
    for (int k = 0; k < waves; k++) {
        float a = synth_u(r, 0, 2 * (float)M_PI);
        float f = tex == 1 ? 1 / synth_u(r, 3, 10)               // stripes: 3-10 px period
                           : synth_u(r, 0.5f, 3.5f) / S;          // clouds: 0.5-3.5 per image
        amp[k] = tex == 1 ? synth_u(r, 5, 12) : synth_u(r, 3, 7);
        fx[k] = 2 * (float)M_PI * f * cosf(a);
        fy[k] = 2 * (float)M_PI * f * sinf(a);
        ph[k] = synth_u(r, 0, 2 * (float)M_PI);
    }
    if (tex == 0) noise = synth_u(r, 4, 9);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float t = ga * ((x + 0.5f) / S - 0.5f) * gx + ga * ((y + 0.5f) / S - 0.5f) * gy;
            for (int k = 0; k < waves; k++) t += amp[k] * sinf(fx[k] * x + fy[k] * y + ph[k]);
            for (int c = 0; c < 3; c++) img[(y * S + x) * 3 + c] = base[c] + t;
        }
    return noise;
}

// Composite one shape: its colour (the nominal one +-12 per channel), shaded +-8%
// across the shape from a random light direction, alpha = 4x4 supersampled coverage.
static void synth_draw(float *img, int S, SynthObject *o, Rng *r) {
    float v[SYNTH_MAX_VERTS][2], col[3];
    int nv = synth_polygon(o->shape, v);
    for (int c = 0; c < 3; c++) col[c] = synth_colour_rgb[o->colour][c] + synth_u(r, -12, 12);
    float la = synth_u(r, 0, 2 * (float)M_PI), lx = cosf(la), ly = sinf(la);
    float e = synth_reach(o);
    int x0 = (int)floorf(o->cx - e) - 1, x1 = (int)ceilf(o->cx + e) + 1;
    int y0 = (int)floorf(o->cy - e) - 1, y1 = (int)ceilf(o->cy + e) + 1;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > S - 1) x1 = S - 1;
    if (y1 > S - 1) y1 = S - 1;
    float inv = 1 / o->r, area = 0;
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            int hits = 0;
            for (int sy = 0; sy < 4; sy++)
                for (int sx = 0; sx < 4; sx++)
                    hits += synth_inside(o->shape, (const float(*)[2])v, nv,
                                         (x + (sx + 0.5f) / 4 - o->cx) * inv,
                                         (y + (sy + 0.5f) / 4 - o->cy) * inv);
            if (!hits) continue;
            float a = hits / 16.0f;
            float shade = 1 + 0.08f * ((x + 0.5f - o->cx) * lx + (y + 0.5f - o->cy) * ly) * inv / 1.2f;
            float *p = img + (y * S + x) * 3;
            for (int c = 0; c < 3; c++) p[c] = (1 - a) * p[c] + a * fminf(255, col[c] * shade);
            area += a;
        }
    o->area = area;
    synth_bbox(o, S);
}

// Cheap pixel noise, close to N(0, 1): the sum of the four 16-bit parts of one draw
// (Irwin-Hall), centred and scaled.
static float synth_noise(Rng *r) {
    uint64_t x = rng_next(r);
    long sum = (long)(x & 0xFFFF) + (long)((x >> 16) & 0xFFFF) + (long)((x >> 32) & 0xFFFF) +
               (long)(x >> 48);
    return (float)(sum - 131070) * (1.0f / 37837.0f);
}

static void synth_render(SynthScene *s, unsigned char *rgb, int S, Rng *r) {
    float *img = xmalloc((size_t)S * S * 3 * sizeof(float));
    float noise = synth_background(img, S, r);
    for (int i = 0; i < s->n; i++) synth_draw(img, S, &s->obj[i], r);
    for (long i = 0; i < (long)S * S; i++) {
        float g = noise * synth_noise(r);
        for (int c = 0; c < 3; c++) {
            float x = img[i * 3 + c] + g + 1.5f * synth_noise(r);
            rgb[i * 3 + c] = (unsigned char)lrintf(fminf(255, fmaxf(0, x)));
        }
    }
    free(img);
}

// ----------------------------------------------------------------------------
// captions

typedef struct SynthText { char *p; size_t cap, len; } SynthText;

static void synth_put(SynthText *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void synth_put(SynthText *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (t->len < t->cap) {
        int n = vsnprintf(t->p + t->len, t->cap - t->len, fmt, ap);
        t->len = n < 0 ? t->cap : t->len + (size_t)n;
        if (t->len >= t->cap) t->len = t->cap - 1;   // truncated (the tests check it never is)
    }
    va_end(ap);
}

// "a large red circle", "an orange star", "one small blue cross", "the red circle".
// det "a" becomes "an" before a vowel. with_size adds "small" or "large" ("big" 1 in 5).
static void synth_put_object(SynthText *t, const SynthObject *o, const char *det, int with_size,
                             Rng *r) {
    const char *colour = synth_colour_names[o->colour], *shape = synth_shape_names[o->shape];
    const char *size = o->size == 0 ? "small" : rng_uniform(r) < 0.2 ? "big" : "large";
    const char *first = with_size ? size : colour;
    if (!strcmp(det, "a") && strchr("aeiou", first[0])) det = "an";
    if (with_size) synth_put(t, "%s %s %s %s", det, size, colour, shape);
    else synth_put(t, "%s %s %s", det, colour, shape);
}

// Where an object is, by thirds of the picture: "in the top left" ... "in the middle".
static const char *synth_where(const SynthObject *o, int S) {
    static const char *const where[3][3] = {
        {"in the top left", "at the top", "in the top right"},
        {"on the left", "in the middle", "on the right"},
        {"in the bottom left", "at the bottom", "in the bottom right"}};
    int col = o->cx < S / 3.0f ? 0 : o->cx < 2 * S / 3.0f ? 1 : 2;
    int row = o->cy < S / 3.0f ? 0 : o->cy < 2 * S / 3.0f ? 1 : 2;
    return where[row][col];
}

// "a REL b": along the axis where they are farther apart.
static const char *synth_relation(const SynthObject *a, const SynthObject *b) {
    float dx = b->cx - a->cx, dy = b->cy - a->cy;
    if (fabsf(dx) >= fabsf(dy)) return dx > 0 ? "to the left of" : "to the right of";
    return dy > 0 ? "above" : "below";
}

// "from left to right: " with o[] sorted by x when the objects spread wider than
// tall, else "from top to bottom: " sorted by y.
static void synth_put_order(SynthText *t, const SynthObject **o, int n) {
    float x0 = 1e9f, x1 = -1e9f, y0 = 1e9f, y1 = -1e9f;
    for (int i = 0; i < n; i++) {
        x0 = fminf(x0, o[i]->cx); x1 = fmaxf(x1, o[i]->cx);
        y0 = fminf(y0, o[i]->cy); y1 = fmaxf(y1, o[i]->cy);
    }
    int horizontal = x1 - x0 >= y1 - y0;
    for (int i = 1; i < n; i++)                 // insertion sort
        for (int j = i; j > 0; j--) {
            float a = horizontal ? o[j - 1]->cx : o[j - 1]->cy, b = horizontal ? o[j]->cx : o[j]->cy;
            if (a <= b) break;
            const SynthObject *tmp = o[j]; o[j] = o[j - 1]; o[j - 1] = tmp;
        }
    synth_put(t, horizontal ? "from left to right: " : "from top to bottom: ");
}

// Caption template tpl (0..5) for the scene of 1 or 2 shapes; objects are taken in a
// random order.
static void synth_caption(char *out, const SynthScene *s, int S, int tpl, Rng *r) {
    SynthText t = {out, SYNTH_CAPTION_LEN, 0};
    out[0] = 0;
    const SynthObject *o[3];
    int n = s->n;
    for (int i = 0; i < n; i++) o[i] = &s->obj[i];
    for (int i = n - 1; i > 0; i--) {           // shuffle
        int j = synth_int(r, i + 1);
        const SynthObject *tmp = o[i]; o[i] = o[j]; o[j] = tmp;
    }
    int coin = rng_uniform(r) < 0.5;
    if (n == 1) {
        const SynthObject *a = o[0];
        switch (tpl) {
        case 0: synth_put_object(&t, a, "a", 1, r); synth_put(&t, " %s", synth_where(a, S)); break;
        case 1: synth_put(&t, "there is "); synth_put_object(&t, a, "a", 1, r);
                synth_put(&t, " %s", synth_where(a, S)); break;
        case 2: synth_put_object(&t, a, "one", 0, r); synth_put(&t, " %s", synth_where(a, S)); break;
        case 3: synth_put(&t, "%s there is ", synth_where(a, S)); synth_put_object(&t, a, "a", 1, r); break;
        case 4: synth_put(&t, "a picture of "); synth_put_object(&t, a, "a", coin, r); break;
        default: synth_put(&t, "an image with "); synth_put_object(&t, a, "one", 1, r); break;
        }
    } else {                                    // two shapes (COCO scenes hold 1 or 2)
        const SynthObject *a = o[0], *b = o[1];
        switch (tpl) {
        case 0: synth_put_object(&t, a, "a", 1, r); synth_put(&t, " %s ", synth_relation(a, b));
                synth_put_object(&t, b, "a", 1, r); break;
        case 1: synth_put(&t, "there is "); synth_put_object(&t, a, "a", 1, r);
                synth_put(&t, " %s and ", synth_where(a, S)); synth_put_object(&t, b, "a", 1, r);
                synth_put(&t, " %s", synth_where(b, S)); break;
        case 2: synth_put(&t, "two shapes: "); synth_put_object(&t, a, "a", 0, r);
                synth_put(&t, " and "); synth_put_object(&t, b, "a", 0, r); break;
        case 3: synth_put_object(&t, a, "a", 1, r); synth_put(&t, " and ");
                synth_put_object(&t, b, "a", 1, r); break;
        case 4: synth_put_order(&t, o, 2); synth_put_object(&t, o[0], "a", coin, r);
                synth_put(&t, " and "); synth_put_object(&t, o[1], "a", coin, r); break;
        default: synth_put(&t, "two shapes: "); synth_put_object(&t, a, "a", coin, r);
                synth_put(&t, " %s ", synth_relation(a, b)); synth_put_object(&t, b, "a", coin, r); break;
        }
    }
}

// Five captions from five different templates of the six for the object count.
static void synth_captions(SynthScene *s, int S, Rng *r) {
    int tpl[6] = {0, 1, 2, 3, 4, 5};
    for (int i = 5; i > 0; i--) {
        int j = synth_int(r, i + 1), tmp = tpl[i];
        tpl[i] = tpl[j];
        tpl[j] = tmp;
    }
    for (int k = 0; k < SYNTH_CAPTIONS; k++) synth_caption(s->caption[k], s, S, tpl[k], r);
    s->ncaptions = SYNTH_CAPTIONS;
}

int synth_caption_classes(const char *caption, int *classes, int max) {
    int n = 0, prev = -1;                        // prev: colour of the previous word
    const char *p = caption;
    while (*p) {
        while (*p && !(*p >= 'a' && *p <= 'z')) p++;
        const char *w = p;
        while (*p >= 'a' && *p <= 'z') p++;
        size_t len = (size_t)(p - w);
        if (!len) break;
        int colour = -1, shape = -1;
        for (int i = 0; i < SYNTH_COLOURS; i++)
            if (strlen(synth_colour_names[i]) == len && !strncmp(w, synth_colour_names[i], len)) colour = i;
        for (int i = 0; i < SYNTH_SHAPES; i++)
            if (strlen(synth_shape_names[i]) == len && !strncmp(w, synth_shape_names[i], len)) shape = i;
        if (shape >= 0 && prev >= 0) {
            int cls = prev * SYNTH_SHAPES + shape, seen = 0;
            for (int i = 0; i < n && i < max; i++) seen |= classes[i] == cls;
            if (!seen) {
                if (n < max) classes[n] = cls;
                n++;
            }
        }
        prev = colour;
    }
    return n;
}

// ----------------------------------------------------------------------------
// one image

// A seed for image `index` of `split`: two rounds of the splitmix64 finaliser.
static uint64_t synth_mix(uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void synth_image(SynthScene *s, unsigned char *rgb, SynthSplit split, long index, int size,
                 uint64_t seed) {
    Rng r;
    rng_seed(&r, synth_mix(synth_mix(seed) ^ synth_mix(((uint64_t)split << 48) ^ (uint64_t)index)));
    memset(s, 0, sizeof *s);
    int S = size;
    if (split == SYNTH_IMAGENET_TRAIN || split == SYNTH_IMAGENET_VAL) {
        synth_layout_dominant(s, (int)(index % SYNTH_CLASSES), S, &r);
    } else {
        int voc = split == SYNTH_VOC_TRAINVAL || split == SYNTH_VOC_TEST;
        synth_layout_shapes(s, voc ? &synth_voc_layout : &synth_coco_layout, S, &r);
        if (voc && rng_uniform(&r) < 0.25) synth_add_difficult(s, S, &r);
    }
    if (rgb) synth_render(s, rgb, S, &r);
    else {                                       // the same boxes and areas, no pixels
        unsigned char *tmp = xmalloc((size_t)S * S * 3);
        synth_render(s, tmp, S, &r);
        free(tmp);
    }
    if (split == SYNTH_COCO_TRAIN || split == SYNTH_COCO_VAL) synth_captions(s, S, &r);
}

// ----------------------------------------------------------------------------
// files

// mkdir -p
static int synth_mkdirs(const char *path, char *err, size_t errlen) {
    char p[SYNTH_PATH];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s) continue;
        char c = *s;
        *s = 0;
        struct stat st;
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            return seterr(err, errlen, "cannot create directory %s: %s", p, strerror(errno));
        if (stat(p, &st) != 0)
            return seterr(err, errlen, "cannot create directory %s: %s", p, strerror(errno));
        if (!S_ISDIR(st.st_mode))
            return seterr(err, errlen, "cannot create directory %s: a file of that name is in the way", p);
        *s = c;
        if (!c) return 0;
    }
}

// A growing string (the two arrays of a COCO file are built side by side).
typedef struct SynthBuf { char *p; size_t len, cap; } SynthBuf;

static void synth_buf_put(SynthBuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void synth_buf_put(SynthBuf *b, const char *fmt, ...) {
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n >= 0 && b->p && b->len + (size_t)n < b->cap) { b->len += (size_t)n; return; }
        size_t cap = b->cap ? b->cap * 2 : 1 << 16;
        while (cap < b->len + (size_t)n + 1) cap *= 2;
        char *q = xmalloc(cap);
        if (b->p) memcpy(q, b->p, b->len);
        free(b->p);
        b->p = q;
        b->cap = cap;
    }
}

static long synth_max(long a, long b) { return a > b ? a : b; }

// stb_image_write's output callback: append to a SynthBuf.
static void synth_buf_write(void *ctx, void *data, int n) {
    SynthBuf *b = ctx;
    if (b->len + (size_t)n > b->cap) {
        size_t cap = b->cap ? b->cap : 1 << 14;
        while (cap < b->len + (size_t)n) cap *= 2;
        char *q = xmalloc(cap);
        if (b->len) memcpy(q, b->p, b->len);
        free(b->p);
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, (size_t)n);
    b->len += (size_t)n;
}

// Encode rgb (S x S) as JPEG and write it to path; 0, or -1 with errno set. (stb's own
// file writer does not report a failed write, e.g. a full disk.)
static int synth_write_jpeg(const char *path, const unsigned char *rgb, int S) {
    SynthBuf b = {0};
    if (!stbi_write_jpg_to_func(synth_buf_write, &b, S, S, 3, rgb, SYNTH_JPEG_QUALITY)) {
        free(b.p);
        errno = EINVAL;
        return -1;
    }
    FILE *f = fopen(path, "wb");
    int rc = -1;
    if (f) {
        rc = fwrite(b.p, 1, b.len, f) == b.len ? 0 : -1;
        int e = errno;
        if (fclose(f) != 0) rc = -1;
        else errno = e;
    }
    free(b.p);
    return rc;
}

void synth_split_sizes(const SynthOptions *o, long count[SYNTH_NSPLITS]) {
    long n = o->images;
    count[SYNTH_COCO_TRAIN] = n;
    count[SYNTH_COCO_VAL] = synth_max(1, n / 10);
    count[SYNTH_VOC_TRAINVAL] = count[SYNTH_VOC_TEST] = synth_max(1, n / 5);
    count[SYNTH_IMAGENET_TRAIN] = SYNTH_CLASSES * synth_max(1, n / 100);
    count[SYNTH_IMAGENET_VAL] = SYNTH_CLASSES * synth_max(1, n / 500);
}

void synth_default_options(SynthOptions *o) {
    memset(o, 0, sizeof *o);
    o->out = "data/shapes";
    o->images = 10000;
    o->size = 64;
}

int synth_check_options(const SynthOptions *o, char *err, size_t errlen) {
    if (!o->out || !*o->out) return seterr(err, errlen, "--out needs a directory");
    if (strlen(o->out) > SYNTH_PATH - 200)
        return seterr(err, errlen, "--out path is too long (%zu characters)", strlen(o->out));
    if (o->images < 10 || o->images > 1000000)
        return seterr(err, errlen, "--images must be from 10 to 1000000 (got %d)", o->images);
    if (o->size < 32 || o->size > 512)
        return seterr(err, errlen, "--size must be from 32 to 512 pixels (got %d)", o->size);
    return 0;
}

// The id of image `index` of a split (COCO and VOC number their two splits in a row).
static long synth_id(const long count[SYNTH_NSPLITS], int split, long index) {
    if (split == SYNTH_COCO_VAL) return count[SYNTH_COCO_TRAIN] + index + 1;
    if (split == SYNTH_VOC_TEST) return count[SYNTH_VOC_TRAINVAL] + index + 1;
    return index + 1;
}

static void synth_image_path(char *p, size_t n, const char *out, const long count[SYNTH_NSPLITS],
                             int split, long index) {
    long id = synth_id(count, split, index);
    char cls[32];
    switch (split) {
    case SYNTH_COCO_TRAIN: snprintf(p, n, "%s/train2017/%012ld.jpg", out, id); break;
    case SYNTH_COCO_VAL: snprintf(p, n, "%s/val2017/%012ld.jpg", out, id); break;
    case SYNTH_VOC_TRAINVAL:
    case SYNTH_VOC_TEST: snprintf(p, n, "%s/voc2007/JPEGImages/%06ld.jpg", out, id); break;
    default:
        synth_class_name((int)(index % SYNTH_CLASSES), cls, sizeof cls);
        snprintf(p, n, "%s/imagenet/%s/%s/%s_%06ld.jpg", out,
                 split == SYNTH_IMAGENET_TRAIN ? "train" : "val", cls, cls, index / SYNTH_CLASSES);
    }
}

// The VOC annotation XML of one image (boxes in VOC's 1-based inclusive pixels).
static int synth_write_voc_xml(const char *out, long id, const SynthScene *s, int S) {
    char path[SYNTH_PATH], cls[32];
    snprintf(path, sizeof path, "%s/voc2007/Annotations/%06ld.xml", out, id);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>%06ld.jpg</filename>\n"
               "\t<source>\n\t\t<database>virtex.c synthetic shapes</database>\n\t</source>\n"
               "\t<size>\n\t\t<width>%d</width>\n\t\t<height>%d</height>\n\t\t<depth>3</depth>\n"
               "\t</size>\n\t<segmented>0</segmented>\n", id, S, S);
    for (int i = 0; i < s->n; i++) {
        const SynthObject *o = &s->obj[i];
        synth_class_name(o->colour * SYNTH_SHAPES + o->shape, cls, sizeof cls);
        int x0 = (int)floorf(o->bbox[0]) + 1, y0 = (int)floorf(o->bbox[1]) + 1;
        int x1 = (int)ceilf(o->bbox[0] + o->bbox[2]), y1 = (int)ceilf(o->bbox[1] + o->bbox[3]);
        fprintf(f, "\t<object>\n\t\t<name>%s</name>\n\t\t<pose>Unspecified</pose>\n"
                   "\t\t<truncated>%d</truncated>\n\t\t<difficult>%d</difficult>\n"
                   "\t\t<bndbox>\n\t\t\t<xmin>%d</xmin>\n\t\t\t<ymin>%d</ymin>\n"
                   "\t\t\t<xmax>%d</xmax>\n\t\t\t<ymax>%d</ymax>\n\t\t</bndbox>\n\t</object>\n",
                cls, o->truncated, o->difficult, x0, y0, x1 < x0 ? x0 : x1, y1 < y0 ? y0 : y1);
    }
    fprintf(f, "</annotation>\n");
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) return -1;
    return 0;
}

// What a split's writer does with each drawn scene, in index order.
typedef struct SynthSink {
    SynthBuf images, anns, inst;                 // COCO: the JSON arrays' items
    long next_caption_id, next_instance_id;
    signed char *labels;                         // VOC: (count, 35) of 1 / 0 / -1
} SynthSink;

// JSON items of one COCO image: its "images" entry (into images), its captions (anns)
// and its instances (inst).
static void synth_coco_records(SynthSink *k, const SynthScene *s, long id, int S) {
    synth_buf_put(&k->images, "%s\n    {\"id\": %ld, \"file_name\": \"%012ld.jpg\", \"width\": %d, "
                  "\"height\": %d, \"license\": 0}", k->images.len ? "," : "", id, id, S, S);
    for (int c = 0; c < s->ncaptions; c++)    // captions are [a-z ,:] only: no escapes
        synth_buf_put(&k->anns, "%s\n    {\"id\": %ld, \"image_id\": %ld, \"caption\": \"%s\"}",
                      k->anns.len ? "," : "", k->next_caption_id++, id, s->caption[c]);
    for (int i = 0; i < s->n; i++) {
        const SynthObject *o = &s->obj[i];
        float v[SYNTH_MAX_VERTS][2];
        int nv = synth_polygon(o->shape, v);
        synth_buf_put(&k->inst, "%s\n    {\"id\": %ld, \"image_id\": %ld, \"category_id\": %d, "
                      "\"bbox\": [%.2f, %.2f, %.2f, %.2f], \"area\": %.2f, \"iscrowd\": 0, "
                      "\"segmentation\": [[", k->inst.len ? "," : "", k->next_instance_id++, id,
                      o->colour * SYNTH_SHAPES + o->shape + 1, o->bbox[0], o->bbox[1], o->bbox[2],
                      o->bbox[3], o->area);
        for (int j = 0; j < nv; j++)
            synth_buf_put(&k->inst, "%s%.2f, %.2f", j ? ", " : "",
                          fminf((float)S, fmaxf(0, o->cx + v[j][0] * o->r)),
                          fminf((float)S, fmaxf(0, o->cy + v[j][1] * o->r)));
        synth_buf_put(&k->inst, "]]}");
    }
}

static void synth_json_head(FILE *f, const SynthOptions *o, const char *what) {
    fprintf(f, "{\n  \"info\": {\"description\": \"virtex.c synthetic shapes: %s\", "
               "\"version\": \"1.0\", \"contributor\": \"virtex synth\", \"seed\": %llu, "
               "\"image_size\": %d},\n  \"licenses\": [{\"id\": 0, \"name\": \"generated\", "
               "\"url\": \"\"}],\n", what, (unsigned long long)o->seed, o->size);
}

// annotations/{captions,instances}_{train,val}2017.json, each written atomically.
static int synth_write_coco_json(const SynthOptions *o, const char *split, SynthSink *k,
                                 char *err, size_t errlen) {
    for (int which = 0; which < 2; which++) {
        char path[SYNTH_PATH];
        snprintf(path, sizeof path, "%s/annotations/%s_%s2017.json", o->out,
                 which ? "instances" : "captions", split);
        AtomicFile af;
        if (atomic_open(&af, path))
            return seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
        FILE *f = af.f;
        synth_json_head(f, o, which ? "instances" : "captions");
        fprintf(f, "  \"images\": [");
        fwrite(k->images.p, 1, k->images.len, f);
        fprintf(f, "\n  ],\n  \"annotations\": [");
        SynthBuf *b = which ? &k->inst : &k->anns;
        if (b->len) fwrite(b->p, 1, b->len, f);
        fprintf(f, "\n  ]");
        if (which) {
            fprintf(f, ",\n  \"categories\": [");
            for (int c = 0; c < SYNTH_CLASSES; c++) {
                char name[32];
                synth_class_name(c, name, sizeof name);
                fprintf(f, "%s\n    {\"id\": %d, \"name\": \"%s\", \"supercategory\": \"%s\"}",
                        c ? "," : "", c + 1, name, synth_shape_names[c % SYNTH_SHAPES]);
            }
            fprintf(f, "\n  ]");
        }
        fprintf(f, "\n}\n");
        if (atomic_commit(&af))
            return seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
    }
    return 0;
}

// Draw and write every image of a split in parallel chunks, handing the scenes to the
// split's records in index order.
static int synth_split(const SynthOptions *o, const long count[SYNTH_NSPLITS], int split,
                       SynthSink *k, char *err, size_t errlen) {
    const long chunk = 256;
    long n = count[split];
    int S = o->size;
    SynthScene *scenes = xmalloc(chunk * sizeof *scenes);
    double t0 = now_seconds(), shown = t0;
    int tty = !o->quiet && isatty(fileno(stdout));  // a live progress line
    int nt = 1;
#ifdef _OPENMP
    nt = o->threads > 0 ? o->threads : omp_get_max_threads();
#endif
    for (long start = 0; start < n; start += chunk) {
        long m = n - start < chunk ? n - start : chunk;
        long bad = -1;
        int bad_errno = 0;
        #pragma omp parallel for schedule(dynamic, 4) num_threads(nt)
        for (long i = 0; i < m; i++) {
            unsigned char *rgb = xmalloc((size_t)S * S * 3);
            char path[SYNTH_PATH];
            synth_image(&scenes[i], rgb, (SynthSplit)split, start + i, S, o->seed);
            synth_image_path(path, sizeof path, o->out, count, split, start + i);
            errno = 0;
            int ok = synth_write_jpeg(path, rgb, S) == 0;
            if (ok && (split == SYNTH_VOC_TRAINVAL || split == SYNTH_VOC_TEST))
                ok = synth_write_voc_xml(o->out, synth_id(count, split, start + i), &scenes[i], S) == 0;
            if (!ok) {
                int e = errno ? errno : EIO;
                #pragma omp critical(synth_error)
                if (bad < 0 || i < bad) { bad = i; bad_errno = e; }
            }
            free(rgb);
        }
        if (bad >= 0) {
            char path[SYNTH_PATH];
            synth_image_path(path, sizeof path, o->out, count, split, start + bad);
            free(scenes);
            if (tty) printf("\n");
            return seterr(err, errlen, "cannot write %s: %s", path, strerror(bad_errno));
        }
        for (long i = 0; i < m; i++) {
            long index = start + i, id = synth_id(count, split, index);
            if (split == SYNTH_COCO_TRAIN || split == SYNTH_COCO_VAL)
                synth_coco_records(k, &scenes[i], id, S);
            if (k->labels) {
                signed char *l = k->labels + index * SYNTH_CLASSES;
                for (int c = 0; c < SYNTH_CLASSES; c++) l[c] = -1;
                for (int j = 0; j < scenes[i].n; j++) {   // difficult: 0 unless also seen
                    const SynthObject *ob = &scenes[i].obj[j];
                    int c = ob->colour * SYNTH_SHAPES + ob->shape;
                    if (!ob->difficult) l[c] = 1;
                    else if (l[c] < 0) l[c] = 0;
                }
            }
        }
        if (tty && now_seconds() - shown > 0.1) {   // at most 10 a second
            shown = now_seconds();
            printf("\r  %-18s %7ld/%ld images", synth_split_names[split], start + m, n);
            fflush(stdout);
        }
    }
    free(scenes);
    if (!o->quiet)
        printf("%s  %-18s %7ld images (%.1fs)%s\n", tty ? "\r" : "", synth_split_names[split],
               n, now_seconds() - t0, tty ? "      " : "");
    return 0;
}

// ImageSets/Main: trainval.txt, test.txt and CLASS_{trainval,test}.txt ("000012  1").
static int synth_write_voc_sets(const SynthOptions *o, const long count[SYNTH_NSPLITS],
                                signed char *const labels[2], char *err, size_t errlen) {
    char path[SYNTH_PATH];
    for (int sp = 0; sp < 2; sp++) {
        int split = sp ? SYNTH_VOC_TEST : SYNTH_VOC_TRAINVAL;
        const char *name = sp ? "test" : "trainval";
        for (int c = -1; c < SYNTH_CLASSES; c++) {
            char cls[32];
            synth_class_name(c, cls, sizeof cls);
            if (c < 0) snprintf(path, sizeof path, "%s/voc2007/ImageSets/Main/%s.txt", o->out, name);
            else snprintf(path, sizeof path, "%s/voc2007/ImageSets/Main/%s_%s.txt", o->out, cls, name);
            FILE *f = fopen(path, "w");
            if (!f) return seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
            for (long i = 0; i < count[split]; i++) {
                long id = synth_id(count, split, i);
                if (c < 0) fprintf(f, "%06ld\n", id);
                else fprintf(f, "%06ld %2d\n", id, labels[sp][i * SYNTH_CLASSES + c]);
            }
            int bad = ferror(f);
            if (fclose(f) != 0 || bad)
                return seterr(err, errlen, "cannot write %s: %s", path, strerror(errno ? errno : EIO));
        }
    }
    return 0;
}

// Remove images a previous, larger run left behind: files named like ours
// (prefix + digits + suffix) whose number is not in [lo, hi].
static void synth_prune(const char *dir, const char *prefix, int digits, const char *suffix,
                        long lo, long hi) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    size_t pl = strlen(prefix), sl = strlen(suffix);
    while ((e = readdir(d))) {
        const char *nm = e->d_name;
        if (strlen(nm) != pl + (size_t)digits + sl || strncmp(nm, prefix, pl) ||
            strcmp(nm + pl + digits, suffix))
            continue;
        long v = 0;
        int ok = 1;
        for (int i = 0; i < digits; i++) {
            char ch = nm[pl + i];
            if (ch < '0' || ch > '9') { ok = 0; break; }
            v = v * 10 + (ch - '0');
        }
        if (!ok || (v >= lo && v <= hi)) continue;
        char path[SYNTH_PATH];
        snprintf(path, sizeof path, "%s/%s", dir, nm);
        unlink(path);
    }
    closedir(d);
}

// synth.txt: the marker that DIR is ours, and a description of what is in it.
static int synth_write_readme(const SynthOptions *o, const long count[SYNTH_NSPLITS],
                              char *err, size_t errlen) {
    char path[SYNTH_PATH];
    snprintf(path, sizeof path, "%s/synth.txt", o->out);
    AtomicFile af;
    if (atomic_open(&af, path)) return seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
    FILE *f = af.f;
    fprintf(f,
        "virtex.c synthetic shapes dataset, made by `virtex synth --images %d --size %d --seed %llu`.\n"
        "Every file here is redrawn identically by the same command.\n\n"
        "Images: %dx%d JPEG (quality %d) of shapes (circle square triangle star cross) in colours\n"
        "(red orange yellow green blue purple white), small or large, on textured grey backgrounds.\n"
        "Classes: the 35 colour+shape pairs, red_circle ... white_cross (class = colour * 5 + shape;\n"
        "COCO category id = class + 1).\n\n"
        "COCO (pretraining):   train2017/ %ld, val2017/ %ld images of 1 shape (70%%) or 2, mostly large;\n"
        "  annotations/captions_{train,val}2017.json   5 captions per image\n"
        "  annotations/instances_{train,val}2017.json  bbox + category per shape\n"
        "VOC07 (SVM probe):    voc2007/ JPEGImages, Annotations, ImageSets/Main/{trainval,test}.txt and\n"
        "  CLASS_{trainval,test}.txt (1 present, -1 absent, 0 difficult only); %ld trainval, %ld test;\n"
        "  images of 1-3 shapes, small or large\n"
        "ImageNet (linear):    imagenet/{train,val}/CLASS/*.jpg, %ld and %ld per class, one large shape\n"
        "  of the class near the centre, sometimes a small other one beside it\n",
        o->images, o->size, (unsigned long long)o->seed, o->size, o->size, SYNTH_JPEG_QUALITY,
        count[SYNTH_COCO_TRAIN], count[SYNTH_COCO_VAL], count[SYNTH_VOC_TRAINVAL],
        count[SYNTH_VOC_TEST], count[SYNTH_IMAGENET_TRAIN] / SYNTH_CLASSES,
        count[SYNTH_IMAGENET_VAL] / SYNTH_CLASSES);
    if (atomic_commit(&af)) return seterr(err, errlen, "cannot write %s: %s", path, strerror(errno));
    return 0;
}

// Refuse a DIR that holds something not made by synth (a file, or a non-empty
// directory without synth.txt).
static int synth_check_out(const char *out, char *err, size_t errlen) {
    struct stat st;
    if (stat(out, &st) != 0) return 0;
    if (!S_ISDIR(st.st_mode)) return seterr(err, errlen, "%s exists and is not a directory", out);
    char marker[SYNTH_PATH];
    snprintf(marker, sizeof marker, "%s/synth.txt", out);
    if (access(marker, F_OK) == 0) return 0;
    DIR *d = opendir(out);
    if (!d) return seterr(err, errlen, "cannot read directory %s: %s", out, strerror(errno));
    struct dirent *e;
    int empty = 1;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) empty = 0;
    closedir(d);
    if (!empty)
        return seterr(err, errlen, "%s is not empty and was not made by `virtex synth` "
                         "(no synth.txt); choose another --out", out);
    return 0;
}

int synth_dataset(const SynthOptions *o, char *err, size_t errlen) {
    if (synth_check_options(o, err, errlen)) return -1;
    if (synth_check_out(o->out, err, errlen)) return -1;
    long count[SYNTH_NSPLITS];
    synth_split_sizes(o, count);
    char path[SYNTH_PATH], cls[32];
    const char *dirs[] = {"train2017", "val2017", "annotations", "voc2007/JPEGImages",
                          "voc2007/Annotations", "voc2007/ImageSets/Main"};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        snprintf(path, sizeof path, "%s/%s", o->out, dirs[i]);
        if (synth_mkdirs(path, err, errlen)) return -1;
    }
    for (int sp = 0; sp < 2; sp++)
        for (int c = 0; c < SYNTH_CLASSES; c++) {
            synth_class_name(c, cls, sizeof cls);
            snprintf(path, sizeof path, "%s/imagenet/%s/%s", o->out, sp ? "val" : "train", cls);
            if (synth_mkdirs(path, err, errlen)) return -1;
        }
    if (synth_write_readme(o, count, err, errlen)) return -1;
    double t0 = now_seconds();
    if (!o->quiet)
        printf("virtex synth: drawing %dx%d images into %s (seed %llu)\n", o->size, o->size,
               o->out, (unsigned long long)o->seed);
    int rc = 0;
    for (int sp = 0; sp < 2 && !rc; sp++) {     // COCO
        SynthSink k = {0};
        k.next_caption_id = sp ? count[SYNTH_COCO_TRAIN] * SYNTH_CAPTIONS + 1 : 1;
        k.next_instance_id = sp ? 10 * count[SYNTH_COCO_TRAIN] + 1 : 1;
        rc = synth_split(o, count, sp ? SYNTH_COCO_VAL : SYNTH_COCO_TRAIN, &k, err, errlen);
        if (!rc) rc = synth_write_coco_json(o, sp ? "val" : "train", &k, err, errlen);
        free(k.images.p);
        free(k.anns.p);
        free(k.inst.p);
    }
    signed char *labels[2] = {NULL, NULL};
    for (int sp = 0; sp < 2 && !rc; sp++) {     // VOC
        int split = sp ? SYNTH_VOC_TEST : SYNTH_VOC_TRAINVAL;
        SynthSink k = {0};
        k.labels = labels[sp] = xmalloc((size_t)count[split] * SYNTH_CLASSES);
        rc = synth_split(o, count, split, &k, err, errlen);
    }
    if (!rc) rc = synth_write_voc_sets(o, count, labels, err, errlen);
    free(labels[0]);
    free(labels[1]);
    for (int sp = 0; sp < 2 && !rc; sp++) {     // ImageNet
        SynthSink k = {0};
        rc = synth_split(o, count, sp ? SYNTH_IMAGENET_VAL : SYNTH_IMAGENET_TRAIN, &k, err, errlen);
    }
    if (rc) return -1;
    // stale images of an earlier run with other sizes
    long ntr = count[SYNTH_COCO_TRAIN], nvoc = count[SYNTH_VOC_TRAINVAL] + count[SYNTH_VOC_TEST];
    snprintf(path, sizeof path, "%s/train2017", o->out);
    synth_prune(path, "", 12, ".jpg", 1, ntr);
    snprintf(path, sizeof path, "%s/val2017", o->out);
    synth_prune(path, "", 12, ".jpg", ntr + 1, ntr + count[SYNTH_COCO_VAL]);
    snprintf(path, sizeof path, "%s/voc2007/JPEGImages", o->out);
    synth_prune(path, "", 6, ".jpg", 1, nvoc);
    snprintf(path, sizeof path, "%s/voc2007/Annotations", o->out);
    synth_prune(path, "", 6, ".xml", 1, nvoc);
    for (int sp = 0; sp < 2; sp++)
        for (int c = 0; c < SYNTH_CLASSES; c++) {
            char prefix[40];
            synth_class_name(c, cls, sizeof cls);
            snprintf(prefix, sizeof prefix, "%s_", cls);
            snprintf(path, sizeof path, "%s/imagenet/%s/%s", o->out, sp ? "val" : "train", cls);
            synth_prune(path, prefix, 6, ".jpg", 0,
                        count[sp ? SYNTH_IMAGENET_VAL : SYNTH_IMAGENET_TRAIN] / SYNTH_CLASSES - 1);
        }
    if (!o->quiet) {
        long total = 0;
        for (int i = 0; i < SYNTH_NSPLITS; i++) total += count[i];
        printf("virtex synth: %ld images in %.1fs\n"
               "  COCO      %s/{train2017,val2017}, %s/annotations/{captions,instances}_{train,val}2017.json\n"
               "  VOC07     %s/voc2007 (35 classes: JPEGImages, Annotations, ImageSets/Main)\n"
               "  ImageNet  %s/imagenet/{train,val}/CLASS (35 classes)\n",
               total, now_seconds() - t0, o->out, o->out, o->out, o->out);
    }
    return 0;
}


// ---- the loader — batches of (image, caption) samples made ahead by worker threads
// (model.h 8e).
//
// The stream is a pure function of (RANDOM_SEED, stream position): position k of the
// stream is image perm_e[k mod n] of epoch e = k / n in training (image k in eval), and
// every random draw of sample k (caption choice, transforms, masking) comes from an Rng
// seeded from (seed, k). So which worker makes a sample, and when, cannot change it.
//
// Work is handed out one sample at a time: a worker claims the next stream position
// under the mutex (resolving its image through the epoch's permutation, kept for the
// epoch being claimed), then reads, decodes, transforms and tokenizes it on its own,
// writing the image straight into its batch's row. Batches live in a ring of slots
// (prefetch + 1 of them: the batch the consumer holds, and those being made); a worker
// may only start batch b once the slot it needs has been given back by loader_next.
// The worker that completes a batch lays its tokens out as (B,T) and marks it ready.
// Workers do single-threaded work only (no OpenMP inside them), so they never take
// the cores of the training step's OpenMP team.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "model.h"

// One batch of the ring. Samples write their tokens into tok (Lmax per sample) until
// the batch is complete; then they are packed into batch.tokens (B,T).
typedef struct LoaderSlot {
    Batch batch;
    long index;                 // the batch it holds
    int need, filled, ready;    // samples it needs (B, or fewer at the end of eval)
    int *tok, *len, *mlab;      // (B, Lmax) tokens and masked labels, (B) lengths
    int *lab, *nlab;            // multilabel: (B, maxlab) labels, (B) counts
} LoaderSlot;

struct Loader {
    LoaderOptions o;
    CocoCaptions cc;
    Tokenizer *tk;
    TransformPipeline tp;
    int B, S, Lmax, V, sos, eos, mask;
    int masked_lm, multilabel, single_caption;
    double mask_proportion, mask_probability, replace_probability;
    uint64_t seed;
    int *img;                   // the stream's images: indices into cc.images
    int n;                      // how many (multilabel: those with instances)
    long end;                   // eval: the stream's length in positions
    int *lab, *lab_off, maxlab; // multilabel: labels of cc image i at lab[lab_off[i]..]
    unsigned char *bad;         // per stream image: found unreadable (reported once)
    int *perm;                  // training: the permutation of epoch perm_epoch
    long perm_epoch;
    LoaderSlot *slot;
    int nslots;
    long next_pos;              // next stream position to claim
    long released;              // batches below this one have given their slot back
    long next_batch;            // the batch loader_next returns next
    int holding, stop;          // the consumer holds batch next_batch - 1
    pthread_mutex_t mu;
    pthread_cond_t work, done;  // workers wait on work, the consumer on done
    pthread_t *threads;
    int nthreads;
    LoaderStats st;
};

// ----------------------------------------------------------------------------
// seeds, the epoch permutation

// A 64-bit seed from two words (splitmix64's finaliser over a mix of both).
static uint64_t loader_mix(uint64_t a, uint64_t b) {
    uint64_t z = a ^ (b * 0xD1B54A32D192ED03ull + 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int loader_randint(Rng *r, int n) {      // uniform in [0, n)
    int k = (int)(rng_uniform(r) * n);
    return k < n ? k : n - 1;
}

// Epoch e's order of the stream's images: Fisher-Yates with an Rng from (seed, e).
static void loader_permute(Loader *L, long e) {
    Rng r;
    rng_seed(&r, loader_mix(~L->seed, (uint64_t)e));
    for (int i = 0; i < L->n; i++) L->perm[i] = i;
    for (int i = L->n - 1; i > 0; i--) {
        int j = loader_randint(&r, i + 1), t = L->perm[i];
        L->perm[i] = L->perm[j];
        L->perm[j] = t;
    }
    L->perm_epoch = e;
}

// The stream image (index into img[]) at position k. Called under the mutex.
static int loader_position_image(Loader *L, long k) {
    if (!L->o.train) return (int)k;
    long e = k / L->n;
    if (e != L->perm_epoch) loader_permute(L, e);
    return L->perm[k % L->n];
}

// ----------------------------------------------------------------------------
// one sample

// Decode stream image j, or the next one (in index order, wrapping) that loads. Each
// unreadable image is reported once and counted. Returns the image used.
static int loader_read_image(Loader *L, int j, Image *im) {
    char err[1024];
    for (int tries = 0; tries < L->n; tries++, j = (j + 1) % L->n) {
        if (__atomic_load_n(&L->bad[j], __ATOMIC_ACQUIRE)) continue;
        const CocoImage *ci = &L->cc.images[L->img[j]];
        char *path = coco_join(L->cc.image_dir, ci->file_name, "", "");
        if (!path) fatal("out of memory");
        int rc = image_load(im, path, err, sizeof err);
        free(path);
        if (rc == 0) return j;
        pthread_mutex_lock(&L->mu);
        if (!L->bad[j]) {
            __atomic_store_n(&L->bad[j], 1, __ATOMIC_RELEASE);
            L->st.bad++;
            if (!L->o.quiet) fprintf(stderr, "virtex: warning: %s; replaced by another image\n", err);
        }
        pthread_mutex_unlock(&L->mu);
    }
    fatal("%s: none of its %d images could be read", L->cc.image_dir, L->n);
}

// [SOS] + encode(caption) + [EOS], cut to Lmax tokens (a cut caption loses its [EOS],
// as the original's TruncateCaptionTokens). Returns the length.
static int loader_tokenize(const Loader *L, const char *caption, int *tok) {
    tok[0] = L->sos;
    int n = tokenizer_encode(L->tk, caption, strlen(caption), tok + 1, L->Lmax - 1);
    if (n < 0) n = 0;                        // hostile models only: an empty caption
    if (n + 2 <= L->Lmax) {
        tok[n + 1] = L->eos;
        return n + 2;
    }
    return L->Lmax;
}

// The original's MaskedLmDataset: ceil((len - 2) * MASK_PROPORTION) distinct positions
// among 1..len-2 (random.sample); a lone one always becomes [MASK]; otherwise one draw
// f each: f <= MASK_PROBABILITY -> [MASK], else f <= MASK + REPLACE_PROBABILITY -> a
// random id in [0, V), else unchanged. Only [MASK]ed positions get a label (the token
// they hid), exactly as the original; the rest stay 0 (ignored by the loss).
static void loader_mask(const Loader *L, Rng *r, int *tok, int len, int *mlab) {
    for (int t = 0; t < len; t++) mlab[t] = 0;
    int m = len - 2;
    if (m <= 0) return;
    int k = (int)ceil(m * L->mask_proportion);
    if (k > m) k = m;
    int pos[m];
    for (int i = 0; i < m; i++) pos[i] = i + 1;
    for (int i = 0; i < k; i++) {            // the first k of a Fisher-Yates shuffle
        int j = i + loader_randint(r, m - i), t = pos[i];
        pos[i] = pos[j];
        pos[j] = t;
    }
    for (int i = 0; i < k; i++) {
        int p = pos[i];
        double f = k == 1 ? 0.0 : rng_uniform(r);
        if (f <= L->mask_probability) {
            mlab[p] = tok[p];
            tok[p] = L->mask;
        } else if (f <= L->mask_probability + L->replace_probability) {
            tok[p] = loader_randint(r, L->V);
        }
    }
}

// Make sample i of slot s from stream position k, whose image is stream image j.
static void loader_make_sample(Loader *L, LoaderSlot *s, int i, long k, int j) {
    Rng r;
    rng_seed(&r, loader_mix(L->seed, (uint64_t)k));
    Image im;
    j = loader_read_image(L, j, &im);
    int ci = L->img[j];
    const CocoImage *c = &L->cc.images[ci];
    int pick = 0;
    if (L->o.train && !L->single_caption) pick = loader_randint(&r, c->ncaptions);
    int flipped = 0;
    char err[512];
    float *out = s->batch.images + (size_t)i * 3 * L->S * L->S;
    if (transform_run(&L->tp, &im, out, &r, &flipped, err, sizeof err))
        fatal("%s/%s: %s", L->cc.image_dir, c->file_name, err);
    image_free(&im);
    char *swapped = flipped ? caption_swap_left_right(c->captions[pick]) : NULL;
    int *tok = s->tok + (size_t)i * L->Lmax;
    s->len[i] = loader_tokenize(L, swapped ? swapped : c->captions[pick], tok);
    free(swapped);
    if (L->masked_lm) loader_mask(L, &r, tok, s->len[i], s->mlab + (size_t)i * L->Lmax);
    if (L->multilabel) {
        s->nlab[i] = L->lab_off[ci + 1] - L->lab_off[ci];
        memcpy(s->lab + (size_t)i * L->maxlab, L->lab + L->lab_off[ci], s->nlab[i] * sizeof(int));
    }
    s->batch.image_ids[i] = c->id;
}

// The batch's samples are all made: lay out tokens, noitpac, masked labels (B,T) and
// labels (B,nlabels), padded with 0.
static void loader_pack(Loader *L, LoaderSlot *s) {
    Batch *b = &s->batch;
    int B = s->need, T = 1, NL = 1;
    for (int i = 0; i < B; i++) {
        if (s->len[i] > T) T = s->len[i];
        if (L->multilabel && s->nlab[i] > NL) NL = s->nlab[i];
    }
    b->B = B;
    b->T = T;
    for (int i = 0; i < B; i++) {
        const int *tok = s->tok + (size_t)i * L->Lmax, *ml = s->mlab + (size_t)i * L->Lmax;
        int n = s->len[i];
        b->lengths[i] = n;
        for (int t = 0; t < T; t++) {
            b->tokens[i * T + t] = t < n ? tok[t] : 0;
            b->noitpac[i * T + t] = t < n ? tok[n - 1 - t] : 0;
            if (L->masked_lm) b->masked_labels[i * T + t] = t < n ? ml[t] : 0;
        }
    }
    if (L->multilabel) {
        b->nlabels = NL;
        for (int i = 0; i < B; i++)
            for (int t = 0; t < NL; t++)
                b->labels[i * NL + t] = t < s->nlab[i] ? s->lab[(size_t)i * L->maxlab + t] : 0;
    }
}

// ----------------------------------------------------------------------------
// the workers and the consumer

static void *loader_worker(void *arg) {
    Loader *L = arg;
#ifdef _OPENMP
    omp_set_num_threads(1);    // nothing here should ever start a team of threads
#endif
    pthread_mutex_lock(&L->mu);
    while (!L->stop) {
        long k = L->next_pos, b = k / L->B;
        if ((!L->o.train && k >= L->end) || b >= L->released + L->nslots) {
            pthread_cond_wait(&L->work, &L->mu);
            continue;
        }
        L->next_pos++;
        LoaderSlot *s = &L->slot[b % L->nslots];
        int i = (int)(k - b * L->B);
        if (i == 0) {
            s->index = b;
            s->filled = s->ready = 0;
            s->need = L->o.train || L->end - k >= L->B ? L->B : (int)(L->end - k);
        }
        int j = loader_position_image(L, k);
        pthread_mutex_unlock(&L->mu);
        loader_make_sample(L, s, i, k, j);
        pthread_mutex_lock(&L->mu);
        if (++s->filled == s->need) {
            loader_pack(L, s);
            s->ready = 1;
            pthread_cond_broadcast(&L->done);
        }
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

const Batch *loader_next(Loader *L) {
    pthread_mutex_lock(&L->mu);
    if (L->holding) {                  // the previous batch's slot is free again
        L->released = L->next_batch;
        L->holding = 0;
        pthread_cond_broadcast(&L->work);
    }
    long b = L->next_batch;
    if (!L->o.train && b * L->B >= L->end) {
        pthread_mutex_unlock(&L->mu);
        return NULL;
    }
    LoaderSlot *s = &L->slot[b % L->nslots];
    double t0 = now_seconds();
    while (!(s->ready && s->index == b)) pthread_cond_wait(&L->done, &L->mu);
    L->st.wait_seconds += now_seconds() - t0;
    L->st.batches++;
    L->st.images += s->batch.B;
    L->next_batch++;
    L->holding = 1;
    pthread_mutex_unlock(&L->mu);
    return &s->batch;
}

LoaderStats loader_stats(const Loader *L) {
    pthread_mutex_lock((pthread_mutex_t *)&L->mu);
    LoaderStats st = L->st;
    pthread_mutex_unlock((pthread_mutex_t *)&L->mu);
    return st;
}

const CocoCaptions *loader_dataset(const Loader *L) { return &L->cc; }
const Tokenizer *loader_tokenizer(const Loader *L) { return L->tk; }

void loader_close(Loader *L) {
    if (!L) return;
    pthread_mutex_lock(&L->mu);
    L->stop = 1;
    pthread_cond_broadcast(&L->work);
    pthread_mutex_unlock(&L->mu);
    for (int t = 0; t < L->nthreads; t++) pthread_join(L->threads[t], NULL);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->work);
    pthread_cond_destroy(&L->done);
    for (int i = 0; L->slot && i < L->nslots; i++) {
        LoaderSlot *s = &L->slot[i];
        free(s->batch.images); free(s->batch.tokens); free(s->batch.noitpac);
        free(s->batch.lengths); free(s->batch.masked_labels); free(s->batch.labels);
        free(s->batch.image_ids);
        free(s->tok); free(s->len); free(s->mlab); free(s->lab); free(s->nlab);
    }
    free(L->slot);
    free(L->threads);
    free(L->perm);
    free(L->bad);
    free(L->img);
    free(L->lab);
    free(L->lab_off);
    tokenizer_free(L->tk);
    coco_captions_free(&L->cc);
    free(L);
}

// ----------------------------------------------------------------------------
// opening: the dataset, the tokenizer, the transforms, the labels

static int loader_cmp_pair(const void *a, const void *b) {
    const int *x = a, *y = b;
    return x[0] != y[0] ? (x[0] < y[0] ? -1 : 1) : (x[1] > y[1]) - (x[1] < y[1]);
}

// Multilabel classification (the original's MultiLabelClassificationDataset): per
// image the distinct categories of ROOT/annotations/instances_{split}2017.json, as
// 1 + their index in categories[] (0 is padding), ascending. Images without instances
// leave the stream; instances of images the captions file lacks are ignored.
static int loader_instances(Loader *L, const char *root, const char *split, int V,
                            char *err, size_t errlen) {
    char *path = coco_join(root, "annotations/instances_", split, "2017.json");
    Json *doc = NULL;
    CocoMap img = {0}, cat = {0};
    int *pairs = NULL, rc = -1, np = 0;
    char field[64];
    if (!path) return seterr(err, errlen, "out of memory");
    if (json_parse_file(&doc, path, err, errlen)) goto done;
    const JsonValue *root_v = json_root(doc);
    const JsonValue *cats = json_get(root_v, "categories"), *anns = json_get(root_v, "annotations");
    if (coco_expect(cats, JSON_ARRAY, path, "categories", err, errlen) ||
        coco_expect(anns, JSON_ARRAY, path, "annotations", err, errlen))
        goto done;
    int nc = json_len(cats), na = json_len(anns), ni = L->cc.n;
    if (nc + 1 > V) {
        seterr(err, errlen, "DATA.VOCAB_SIZE %d is too small for the %d categories of %s "
                   "(multilabel_classification needs %d)", V, nc, path, nc + 1);
        goto done;
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)(ni > nc ? ni : nc)) cap *= 2;
    img = (CocoMap){xmalloc(cap * sizeof(int64_t)), xmalloc(cap * sizeof(int)), cap - 1};
    cat = (CocoMap){xmalloc(cap * sizeof(int64_t)), xmalloc(cap * sizeof(int)), cap - 1};
    memset(img.val, 0xff, cap * sizeof(int));
    memset(cat.val, 0xff, cap * sizeof(int));
    for (int i = 0; i < ni; i++) coco_map_put(&img, L->cc.images[i].id, i);
    for (int i = 0; i < nc; i++) {
        int64_t id = 0;
        snprintf(field, sizeof field, "categories[%d].id", i);
        if (coco_expect(json_get(json_at(cats, i), "id"), JSON_NUMBER, path, field, err, errlen))
            goto done;
        json_int64(json_get(json_at(cats, i), "id"), &id);
        if (coco_map_find(&cat, id) < 0) coco_map_put(&cat, id, i + 1);
    }
    pairs = xmalloc(((size_t)na + 1) * 2 * sizeof(int));
    for (int i = 0; i < na; i++) {
        const JsonValue *a = json_at(anns, i);
        int64_t iid = 0, cid = 0;
        snprintf(field, sizeof field, "annotations[%d].image_id", i);
        if (coco_expect(json_get(a, "image_id"), JSON_NUMBER, path, field, err, errlen)) goto done;
        snprintf(field, sizeof field, "annotations[%d].category_id", i);
        if (coco_expect(json_get(a, "category_id"), JSON_NUMBER, path, field, err, errlen)) goto done;
        json_int64(json_get(a, "image_id"), &iid);
        json_int64(json_get(a, "category_id"), &cid);
        int label = coco_map_find(&cat, cid), k = coco_map_find(&img, iid);
        if (label < 0) {
            seterr(err, errlen, "%s: %s: unknown category id %lld (not in categories[])",
                       path, field, (long long)cid);
            goto done;
        }
        if (k < 0) continue;
        pairs[2 * np] = k;
        pairs[2 * np + 1] = label;
        np++;
    }
    qsort(pairs, np, 2 * sizeof(int), loader_cmp_pair);
    L->lab = xmalloc(((size_t)np + 1) * sizeof(int));
    L->lab_off = xcalloc((size_t)ni + 1, sizeof(int));
    int nl = 0;
    for (int p = 0; p < np; p++) {
        if (p > 0 && pairs[2 * p] == pairs[2 * p - 2] && pairs[2 * p + 1] == pairs[2 * p - 1])
            continue;
        L->lab[nl++] = pairs[2 * p + 1];
        L->lab_off[pairs[2 * p] + 1]++;
    }
    L->n = 0;
    L->maxlab = 1;
    for (int i = 0; i < ni; i++) {
        int c = L->lab_off[i + 1];
        if (c > L->maxlab) L->maxlab = c;
        if (c > 0) L->img[L->n++] = i;
        L->lab_off[i + 1] += L->lab_off[i];
    }
    if (L->n == 0) {
        seterr(err, errlen, "%s: no image of %s has an instance", path, L->cc.image_dir);
        goto done;
    }
    rc = 0;
done:
    free(pairs);
    free(img.key); free(img.val); free(cat.key); free(cat.val);
    json_free(doc);
    free(path);
    return rc;
}

// DATA.TOKENIZER_MODEL, checked against the config's special ids and vocabulary size.
static int loader_tokenizer_load(Loader *L, const Config *cfg, char *err, size_t errlen) {
    const char *path = cfg->DATA.TOKENIZER_MODEL;
    char e[512];
    L->tk = tokenizer_load(path, e, sizeof e);
    if (!L->tk) return seterr(err, errlen, "DATA.TOKENIZER_MODEL: %s", e);
    const struct { const char *piece, *key; int id; } special[3] = {
        {"[SOS]", "DATA.SOS_INDEX", cfg->DATA.SOS_INDEX},
        {"[EOS]", "DATA.EOS_INDEX", cfg->DATA.EOS_INDEX},
        {"[MASK]", "DATA.MASK_INDEX", cfg->DATA.MASK_INDEX}};
    for (int i = 0; i < 3; i++) {
        int id = tokenizer_piece_id(L->tk, special[i].piece);
        if (id != special[i].id)
            return seterr(err, errlen, "DATA.TOKENIZER_MODEL %s: %s has id %d, but %s is %d",
                              path, special[i].piece, id, special[i].key, special[i].id);
    }
    if (!L->multilabel && tokenizer_size(L->tk) > L->V)
        return seterr(err, errlen, "DATA.TOKENIZER_MODEL %s has %d pieces, more than "
                          "DATA.VOCAB_SIZE %d", path, tokenizer_size(L->tk), L->V);
    return 0;
}

// DATA.IMAGE_TRANSFORM_TRAIN or _VAL, parsed, and run once on a blank non-square image
// so that a list leaving no S x S image fails here rather than in a worker.
static int loader_transforms(Loader *L, const Config *cfg, char *err, size_t errlen) {
    const char *key = L->o.train ? "DATA.IMAGE_TRANSFORM_TRAIN" : "DATA.IMAGE_TRANSFORM_VAL";
    char e[512];
    int rc = transform_parse(&L->tp, L->o.train ? cfg->DATA.IMAGE_TRANSFORM_TRAIN
                                                : cfg->DATA.IMAGE_TRANSFORM_VAL,
                             L->o.train ? cfg->DATA.n_IMAGE_TRANSFORM_TRAIN
                                        : cfg->DATA.n_IMAGE_TRANSFORM_VAL,
                             L->S, 0, e, sizeof e);
    if (!rc) {
        Image probe = {L->S + L->S / 2 + 3, L->S + 1, NULL};
        probe.rgb = xcalloc((size_t)probe.w * probe.h, 3);
        float *out = xmalloc(sizeof(float) * 3 * (size_t)L->S * L->S);
        Rng r;
        rng_seed(&r, 0);
        rc = transform_run(&L->tp, &probe, out, &r, NULL, e, sizeof e);
        free(out);
        free(probe.rgb);
        if (rc)
            return seterr(err, errlen, "%s: does not make every image %dx%d "
                              "(DATA.IMAGE_CROP_SIZE): it needs a crop to that size "
                              "(center_crop or random_resized_crop) after any resize", key,
                              L->S, L->S);
    }
    return rc ? seterr(err, errlen, "%s: %s", key, e) : 0;
}

// The ring: nslots batches, each with room for B samples of Lmax tokens.
static void loader_alloc_slots(Loader *L) {
    size_t B = (size_t)L->B, T = (size_t)L->Lmax;
    L->slot = xcalloc((size_t)L->nslots, sizeof(LoaderSlot));
    for (int i = 0; i < L->nslots; i++) {
        LoaderSlot *s = &L->slot[i];
        s->index = -1;
        s->batch.images = xmalloc(B * 3 * L->S * L->S * sizeof(float));
        s->batch.tokens = xmalloc(B * T * sizeof(int));
        s->batch.noitpac = xmalloc(B * T * sizeof(int));
        s->batch.lengths = xmalloc(B * sizeof(int));
        s->batch.image_ids = xmalloc(B * sizeof(int64_t));
        s->tok = xmalloc(B * T * sizeof(int));
        s->len = xmalloc(B * sizeof(int));
        if (L->masked_lm) {
            s->batch.masked_labels = xmalloc(B * T * sizeof(int));
            s->mlab = xmalloc(B * T * sizeof(int));
        }
        if (L->multilabel) {
            s->batch.labels = xmalloc(B * L->maxlab * sizeof(int));
            s->lab = xmalloc(B * L->maxlab * sizeof(int));
            s->nlab = xmalloc(B * sizeof(int));
        }
    }
}

// A config float as the decimal the YAML gave (0.15f -> 0.15), so that
// ceil(n * MASK_PROPORTION) counts as Python's float arithmetic does.
static double loader_decimal(float x) {
    char buf[32];
    snprintf(buf, sizeof buf, "%.6g", x);
    return strtod(buf, NULL);
}

static int loader_setup(Loader *L, const Config *cfg, char *err, size_t errlen) {
    const char *root = cfg->DATA.ROOT, *split = L->o.split ? L->o.split : "train";
    struct stat st;
    if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
        return seterr(err, errlen, "DATA.ROOT %s: %s", root,
                          stat(root, &st) != 0 ? strerror(errno) : "not a directory");
    if (coco_captions_load(&L->cc, root, split, err, errlen)) return -1;
    if (stat(L->cc.image_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return seterr(err, errlen, "%s: no such directory (the images of split %s under "
                          "DATA.ROOT)", L->cc.image_dir, split);
    if (L->cc.n == 0)
        return seterr(err, errlen, "%s: no image has a caption", L->cc.image_dir);
    if (L->Lmax < 2)
        return seterr(err, errlen, "DATA.MAX_CAPTION_LENGTH %d: expected at least 2 "
                          "([SOS] and [EOS])", L->Lmax);
    if (L->B < 1) return seterr(err, errlen, "batch size %d: expected at least 1", L->B);
    L->img = xmalloc((size_t)L->cc.n * sizeof(int));
    L->n = L->cc.n;
    for (int i = 0; i < L->n; i++) L->img[i] = i;
    if (L->multilabel && loader_instances(L, root, split, L->V, err, errlen)) return -1;
    if (loader_tokenizer_load(L, cfg, err, errlen)) return -1;
    if (loader_transforms(L, cfg, err, errlen)) return -1;
    if (L->o.train && L->B > L->n)
        return seterr(err, errlen, "batch size %d (OPTIM.BATCH_SIZE) is larger than the %d "
                          "images of %s", L->B, L->n, L->cc.image_dir);
    return 0;
}

Loader *loader_open(const Config *cfg, const LoaderOptions *o, char *err, size_t errlen) {
    Loader *L = xcalloc(1, sizeof *L);
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->work, NULL);
    pthread_cond_init(&L->done, NULL);
    L->o = *o;
    L->B = o->batch_size > 0 ? o->batch_size : cfg->OPTIM.BATCH_SIZE;
    L->S = cfg->DATA.IMAGE_CROP_SIZE;
    L->Lmax = cfg->DATA.MAX_CAPTION_LENGTH;
    L->V = cfg->DATA.VOCAB_SIZE;
    L->sos = cfg->DATA.SOS_INDEX;
    L->eos = cfg->DATA.EOS_INDEX;
    L->mask = cfg->DATA.MASK_INDEX;
    L->masked_lm = !strcmp(cfg->MODEL.NAME, "masked_lm");
    L->multilabel = !strcmp(cfg->MODEL.NAME, "multilabel_classification");
    L->single_caption = cfg->DATA.USE_SINGLE_CAPTION;
    L->mask_proportion = loader_decimal(cfg->DATA.MASKED_LM.MASK_PROPORTION);
    L->mask_probability = loader_decimal(cfg->DATA.MASKED_LM.MASK_PROBABILITY);
    L->replace_probability = loader_decimal(cfg->DATA.MASKED_LM.REPLACE_PROBABILITY);
    L->seed = (uint64_t)(int64_t)cfg->RANDOM_SEED;
    if (loader_setup(L, cfg, err, errlen)) {
        loader_close(L);
        return NULL;
    }
    L->end = o->limit > 0 && o->limit < L->n ? o->limit : L->n;
    L->bad = xcalloc((size_t)L->n, 1);
    if (o->train) {
        L->perm = xmalloc((size_t)L->n * sizeof(int));
        loader_permute(L, 0);
    }
    L->nslots = (o->prefetch > 0 ? o->prefetch : 2) + 1;
    loader_alloc_slots(L);
    L->next_pos = o->start * L->B;
    L->released = L->next_batch = o->start;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int nw = o->workers > 0 ? o->workers : ncpu > 0 ? (int)ncpu : 1;
    L->threads = xcalloc((size_t)nw, sizeof(pthread_t));
    for (; L->nthreads < nw; L->nthreads++) {
        int rc = pthread_create(&L->threads[L->nthreads], NULL, loader_worker, L);
        if (rc) {
            seterr(err, errlen, "cannot start loader worker %d of %d: %s", L->nthreads + 1,
                       nw, strerror(rc));
            loader_close(L);
            return NULL;
        }
    }
    return L;
}
