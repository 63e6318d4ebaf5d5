// config.c — the configuration system: the original VirTex config keys and defaults
// (virtex/config.py), a reader for its YAML files, KEY VALUE overrides, and a dump.
//
// Everything is driven by ONE table, `schema` below. Each row names a dotted key, its
// type, the Config field it lives in (the key IS the field path: offsetof(Config,
// DATA.ROOT) and the string "DATA.ROOT" come from the same macro argument) and its
// default, written as YAML text. config_defaults, the YAML reader, config_override and
// config_dump all walk that table; adding a key is one row here plus the field in
// model.h.
//
// Semantics follow fvcore's CfgNode (which the original uses):
//   - a file may name `_BASE_: "relative/path.yaml"` at its top level; the base is
//     loaded first (its own bases first, recursively), then the file's keys override it;
//   - every key must exist ("Non-existent config key: MODEL.VISUAL.NAMEX");
//   - every value must have the key's type (ints for int keys, numbers for float keys,
//     booleans, strings, lists of strings or ints). Lists are replaced, not appended.
// Differences, all deliberate: a file may not repeat a key (PyYAML silently keeps the
// last one); an int is accepted for a float key (yacs calls 0 for 0.0 a type mismatch);
// 1e-4 is a float (PyYAML's YAML 1.1 wants a dot: 1.0e-4), as virtex.c users expect.
//
// The YAML subset read here is what the original configs use: block mappings nested by
// indentation (spaces only), plain / 'single' / "double" quoted scalars on one line,
// `#` comments, `[a, b]` flow lists on one line and `- item` block lists of scalars.
// Anchors, tags, flow mappings, multi-line scalars and multiple documents are refused
// with a message. Scalars are typed the YAML 1.1 way PyYAML does it: null/~, true/false
// (also yes/no/on/off), ints, floats (1.5, .5, 1e-4, -2.0E+3), anything else is a string.
//
// The reader is line based, iterative (no recursion except _BASE_, which is limited to
// MAX_BASE_DEPTH files) and keeps every value in fixed buffers with explicit bounds:
// a string longer than its field is an error, never truncated. Errors come back as one
// line "file:line:column: message" in err; nothing here prints or exits (except
// config_defaults, through fatal(), if the built-in table itself is broken: a bug).
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// ----------------------------------------------------------------------------
// the schema

enum { T_INT, T_FLOAT, T_BOOL, T_STR, T_STRLIST, T_INTLIST };
static const char *const type_name[] = {"int", "float", "bool", "string", "list of strings",
                                        "list of ints"};

typedef struct Key {
    const char *key;       // dotted name, e.g. "OPTIM.LOOKAHEAD.USE"
    int type;
    size_t off, size;      // the field: offset in Config and size in bytes
    size_t count_off;      // lists: offset of the item count (int)
    int cap;               // lists: capacity in items
    size_t elem;           // lists: bytes per item
    const char *def;       // the default, as YAML text
} Key;

#define FIELD_(f) offsetof(Config, f), sizeof(((Config *)0)->f)
#define KEY_(type, f, def) {#f, type, FIELD_(f), 0, 0, 0, def}
#define LIST_(type, f, nf, def)                                                       \
    {#f, type, FIELD_(f), offsetof(Config, nf),                                       \
     (int)(sizeof(((Config *)0)->f) / sizeof(((Config *)0)->f[0])),                   \
     sizeof(((Config *)0)->f[0]), def}

// Rows follow virtex/config.py (comments abridged from it). A section's rows must be
// contiguous: config_dump opens each section once.
static const Key schema[] = {
    // Random seed for NumPy and PyTorch (here: our RNG), for reproducibility.
    KEY_(T_INT, RANDOM_SEED, "0"),
    // Train with automatic mixed precision.
    KEY_(T_BOOL, AMP, "true"),
    // cudnn.deterministic / cudnn.benchmark flags of the original (kept for fidelity).
    KEY_(T_BOOL, CUDNN_DETERMINISTIC, "false"),
    KEY_(T_BOOL, CUDNN_BENCHMARK, "true"),

    // ---- data paths and data loading
    KEY_(T_STR, DATA.ROOT, "\"datasets/coco\""),
    KEY_(T_STR, DATA.TOKENIZER_MODEL, "\"datasets/vocab/coco_10k.model\""),
    // Vocabulary size and special token indices (must match the tokenizer).
    KEY_(T_INT, DATA.VOCAB_SIZE, "10000"),
    KEY_(T_INT, DATA.UNK_INDEX, "0"),      // out-of-vocabulary, also padding
    KEY_(T_INT, DATA.SOS_INDEX, "1"),
    KEY_(T_INT, DATA.EOS_INDEX, "2"),
    KEY_(T_INT, DATA.MASK_INDEX, "3"),
    // Size of the square crop of the input image; longer captions are truncated.
    KEY_(T_INT, DATA.IMAGE_CROP_SIZE, "224"),
    KEY_(T_INT, DATA.MAX_CAPTION_LENGTH, "30"),
    // Image transforms applied in order during training and validation.
    LIST_(T_STRLIST, DATA.IMAGE_TRANSFORM_TRAIN, DATA.n_IMAGE_TRANSFORM_TRAIN,
          "[random_resized_crop, horizontal_flip, color_jitter, normalize]"),
    LIST_(T_STRLIST, DATA.IMAGE_TRANSFORM_VAL, DATA.n_IMAGE_TRANSFORM_VAL,
          "[smallest_resize, center_crop, normalize]"),
    // Data-efficiency ablations (v1.0): percentage of the training set, one caption
    // per image.
    KEY_(T_FLOAT, DATA.USE_PERCENTAGE, "100.0"),
    KEY_(T_BOOL, DATA.USE_SINGLE_CAPTION, "false"),
    // Masked LM pretraining: fraction of tokens chosen, P([MASK]), P(random token).
    KEY_(T_FLOAT, DATA.MASKED_LM.MASK_PROPORTION, "0.15"),
    KEY_(T_FLOAT, DATA.MASKED_LM.MASK_PROBABILITY, "0.85"),
    KEY_(T_FLOAT, DATA.MASKED_LM.REPLACE_PROBABILITY, "0.10"),

    // ---- model: visual backbone and textual head
    // token_classification, multilabel_classification, captioning, bicaptioning,
    // masked_lm, virtex (= bicaptioning).
    KEY_(T_STR, MODEL.NAME, "\"virtex\""),
    KEY_(T_STR, MODEL.VISUAL.NAME, "\"torchvision::resnet50\""),
    KEY_(T_INT, MODEL.VISUAL.FEATURE_SIZE, "2048"),
    KEY_(T_BOOL, MODEL.VISUAL.PRETRAINED, "false"),
    KEY_(T_BOOL, MODEL.VISUAL.FROZEN, "false"),
    // virtex.c extension: stem / layer1 width of the ResNet (64 in torchvision; small
    // models for teaching and tests use 8-16; FEATURE_SIZE must be 32 x BASE_WIDTH).
    KEY_(T_INT, MODEL.VISUAL.BASE_WIDTH, "64"),
    // transdec_postnorm::L<layers>_H<hidden>_A<heads>_F<feedforward>, or _prenorm;
    // "none" for the *_classification tasks.
    KEY_(T_STR, MODEL.TEXTUAL.NAME, "\"transdec_postnorm::L1_H2048_A32_F8192\""),
    KEY_(T_FLOAT, MODEL.TEXTUAL.DROPOUT, "0.1"),
    // Decoding for captioning: beam_search or nucleus_sampling.
    KEY_(T_STR, MODEL.DECODER.NAME, "\"beam_search\""),
    KEY_(T_INT, MODEL.DECODER.BEAM_SIZE, "5"),
    KEY_(T_FLOAT, MODEL.DECODER.NUCLEUS_SIZE, "0.9"),
    KEY_(T_INT, MODEL.DECODER.MAX_DECODING_STEPS, "30"),   // = DATA.MAX_CAPTION_LENGTH

    // ---- optimisation (defaults: the best model's bicaptioning pretraining)
    KEY_(T_STR, OPTIM.OPTIMIZER_NAME, "\"sgd\""),       // sgd or adamw
    KEY_(T_FLOAT, OPTIM.SGD_MOMENTUM, "0.9"),
    KEY_(T_FLOAT, OPTIM.WEIGHT_DECAY, "0.0001"),
    // Regex of parameter names without weight decay.
    KEY_(T_STR, OPTIM.NO_DECAY, "\".*textual.(embedding|transformer).*(norm.*|bias)\""),
    KEY_(T_FLOAT, OPTIM.CLIP_GRAD_NORM, "10.0"),
    // Lookahead around the optimizer (arXiv 1907.08610).
    KEY_(T_BOOL, OPTIM.LOOKAHEAD.USE, "true"),
    KEY_(T_FLOAT, OPTIM.LOOKAHEAD.ALPHA, "0.5"),
    KEY_(T_INT, OPTIM.LOOKAHEAD.STEPS, "5"),
    // Total batch size, peak LR of the CNN and of the rest, iterations.
    KEY_(T_INT, OPTIM.BATCH_SIZE, "256"),
    KEY_(T_FLOAT, OPTIM.CNN_LR, "0.2"),
    KEY_(T_FLOAT, OPTIM.LR, "0.001"),
    KEY_(T_INT, OPTIM.NUM_ITERATIONS, "500000"),
    // Linear warmup steps, then decay: none, linear, cosine or multistep.
    KEY_(T_INT, OPTIM.WARMUP_STEPS, "10000"),
    KEY_(T_STR, OPTIM.LR_DECAY_NAME, "\"cosine\""),
    LIST_(T_INTLIST, OPTIM.LR_STEPS, OPTIM.n_LR_STEPS, "[]"),   // multistep milestones
    KEY_(T_FLOAT, OPTIM.LR_GAMMA, "0.1"),                       // multistep factor
};
#define NKEYS ((int)(sizeof schema / sizeof schema[0]))

static void *field_of(Config *c, const Key *k) { return (char *)c + k->off; }
static int *count_of(Config *c, const Key *k) { return (int *)((char *)c + k->count_off); }
static int is_list(const Key *k) { return k->type == T_STRLIST || k->type == T_INTLIST; }

static int find_key(const char *full) {
    for (int i = 0; i < NKEYS; i++)
        if (!strcmp(schema[i].key, full)) return i;
    return -1;
}

// The first key inside section `full` ("MODEL.VISUAL"), or -1 if it is no section.
static int section_first_key(const char *full) {
    size_t n = strlen(full);
    for (int i = 0; i < NKEYS; i++)
        if (!strncmp(schema[i].key, full, n) && schema[i].key[n] == '.') return i;
    return -1;
}

// ----------------------------------------------------------------------------
// the parser state

#define KEY_MAX 128           // longest dotted key kept (schema keys are far shorter)
#define SBUF 1024             // longest decoded scalar
#define MAX_LEVELS 8          // nesting of block mappings (the schema needs 4)
#define MAX_SECTIONS 32
#define MAX_BASE_DEPTH 8      // files in a _BASE_ chain
#define MAX_TEXT (16 << 20)   // longest YAML text accepted
#define MAX_FILE (1 << 20)    // longest YAML file accepted

enum { S_NULL, S_BOOL, S_INT, S_FLOAT, S_STR, S_QSTR };
enum { CTX_BLOCK, CTX_FLOW, CTX_OVERRIDE };

typedef struct Scalar {
    int kind;
    const char *raw;          // source text (for messages)
    int rawlen;
    char s[SBUF];             // decoded text
    int slen;
    long long i;              // S_INT: value; i_ok: fits an int
    int i_ok;
    double f;                 // S_INT, S_FLOAT: value
    int b;                    // S_BOOL
} Scalar;

typedef struct Parser {
    const char *origin;       // file name, or what the text is
    int lineno;               // 0: no position (overrides)
    const char *line;         // the current line and its length (without newline)
    int len;
    int mode;                 // CTX_BLOCK (YAML text) or CTX_OVERRIDE
    char *err;
    size_t errlen;
    Config *cfg;              // values are written here
    int set_line[NKEYS];      // line where each key was given (0: not given)
    int any_content;
    // open block mappings: indentation and length of `prefix` at each level
    int nlevel;
    int level_indent[MAX_LEVELS], level_plen[MAX_LEVELS];
    char prefix[KEY_MAX];     // dotted path of the innermost open section ("" at the root)
    // a key whose value is the following indented block (a section or a block list)
    int pend, pend_key, pend_indent, pend_line, pend_col;   // pend_key -1: a section
    char pend_path[KEY_MAX];
    // an open block list
    int list_key, list_indent;
    // sections met in this text (duplicates)
    int nsec;
    char sec[MAX_SECTIONS][KEY_MAX];
    int sec_line[MAX_SECTIONS];
    // _BASE_
    int allow_base, has_base, base_line, base_col;
    char base[SBUF];
    Scalar sc;
} Parser;

// Copy s for a message (at most cap - 4 characters, then "..."), control characters
// as '?', so that errors stay on one line.
static const char *snip(char *buf, size_t cap, const char *s, int len) {
    int max = (int)cap - 4, o = 0;
    for (int i = 0; i < len && i < max; i++)
        buf[o++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (len > max) { memcpy(buf + o, "...", 3); o += 3; }
    buf[o] = 0;
    return buf;
}

__attribute__((format(printf, 4, 5)))
static int perr(Parser *p, int line, int col, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (p->err && p->errlen) {
        if (line > 0) snprintf(p->err, p->errlen, "%s:%d:%d: %s", p->origin, line, col, msg);
        else snprintf(p->err, p->errlen, "%s: %s", p->origin, msg);
    }
    return -1;
}

static int is_space(char c) { return c == ' ' || c == '\t'; }

// ----------------------------------------------------------------------------
// scalars

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int put_byte(Parser *p, Scalar *sc, int c, int line, int col, const char *what) {
    if (sc->slen >= SBUF - 1)
        return perr(p, line, col, "%s: string longer than %d characters", what, SBUF - 1);
    sc->s[sc->slen++] = (char)c;
    sc->s[sc->slen] = 0;
    return 0;
}

// A quoted scalar starting at s[0] (' or "), closed on the same line. *used: bytes
// consumed through the closing quote.
static int read_quoted(Parser *p, const char *s, int n, int col, const char *what, int *used) {
    Scalar *sc = &p->sc;
    char q = s[0];
    char b[64];
    int line = p->lineno, i = 1;
    sc->slen = 0;
    sc->s[0] = 0;
    for (;;) {
        if (i >= n)
            return perr(p, line, col, "%s: unterminated quoted string %s (quotes must close on "
                        "the same line)", what, snip(b, sizeof b, s, n));
        char c = s[i];
        if (c == q && q == '\'') {
            if (i + 1 < n && s[i + 1] == '\'') {   // '' is a quote inside '...'
                if (put_byte(p, sc, '\'', line, col, what)) return -1;
                i += 2;
                continue;
            }
            i++;
            break;
        }
        if (c == q) { i++; break; }
        if (c != '\\' || q == '\'') {
            if (put_byte(p, sc, (unsigned char)c, line, col, what)) return -1;
            i++;
            continue;
        }
        // escapes of double-quoted scalars
        if (i + 1 >= n) { i++; continue; }   // reported as unterminated
        char e = s[i + 1];
        int ecol = col + i, ch = -1, ndig = 0;
        switch (e) {
        case 'a': ch = 7; break;
        case 'b': ch = 8; break;
        case 't': case '\t': ch = 9; break;
        case 'n': ch = 10; break;
        case 'v': ch = 11; break;
        case 'f': ch = 12; break;
        case 'r': ch = 13; break;
        case 'e': ch = 27; break;
        case ' ': ch = ' '; break;
        case '"': ch = '"'; break;
        case '/': ch = '/'; break;
        case '\\': ch = '\\'; break;
        case 'x': ndig = 2; break;
        case 'u': ndig = 4; break;
        case 'U': ndig = 8; break;
        case '0': return perr(p, line, ecol, "%s: NUL characters (\\0) are not allowed in strings", what);
        default:
            return perr(p, line, ecol, "%s: invalid escape '\\%c' in double-quoted string", what,
                        (unsigned char)e < 0x20 ? '?' : e);
        }
        i += 2;
        if (ndig) {
            unsigned long cp = 0;
            for (int d = 0; d < ndig; d++) {
                int h = i + d < n ? hexval(s[i + d]) : -1;
                if (h < 0)
                    return perr(p, line, ecol, "%s: escape '\\%c' needs %d hex digits", what, e, ndig);
                cp = cp * 16 + (unsigned long)h;
            }
            i += ndig;
            if (cp == 0) return perr(p, line, ecol, "%s: NUL characters are not allowed in strings", what);
            if (e == 'x') ch = (int)cp;
            else {
                if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                    return perr(p, line, ecol, "%s: invalid Unicode code point U+%lX", what, cp);
                unsigned char u[4];
                int nu;
                if (cp < 0x80) { u[0] = (unsigned char)cp; nu = 1; }
                else if (cp < 0x800) { u[0] = 0xC0 | (cp >> 6); u[1] = 0x80 | (cp & 63); nu = 2; }
                else if (cp < 0x10000) {
                    u[0] = 0xE0 | (cp >> 12); u[1] = 0x80 | ((cp >> 6) & 63); u[2] = 0x80 | (cp & 63); nu = 3;
                } else {
                    u[0] = 0xF0 | (cp >> 18); u[1] = 0x80 | ((cp >> 12) & 63);
                    u[2] = 0x80 | ((cp >> 6) & 63); u[3] = 0x80 | (cp & 63); nu = 4;
                }
                for (int k = 0; k < nu; k++)
                    if (put_byte(p, sc, u[k], line, col, what)) return -1;
                continue;
            }
        }
        if (put_byte(p, sc, ch, line, col, what)) return -1;
    }
    sc->kind = S_QSTR;
    sc->raw = s;
    sc->rawlen = i;
    *used = i;
    return 0;
}

// YAML 1.1 typing of a plain scalar (as PyYAML's safe_load does it).
static void classify(Scalar *sc) {
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};
    static const char *const trues[] = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"};
    static const char *const falses[] = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"};
    const char *s = sc->s;
    sc->kind = S_STR;
    for (size_t i = 0; i < sizeof nulls / sizeof *nulls; i++)
        if (!strcmp(s, nulls[i])) { sc->kind = S_NULL; return; }
    for (size_t i = 0; i < sizeof trues / sizeof *trues; i++) {
        if (!strcmp(s, trues[i])) { sc->kind = S_BOOL; sc->b = 1; return; }
        if (!strcmp(s, falses[i])) { sc->kind = S_BOOL; sc->b = 0; return; }
    }
    const char *t = s;
    int neg = *t == '-';
    if (*t == '+' || *t == '-') t++;
    if (!strcmp(t, ".inf") || !strcmp(t, ".Inf") || !strcmp(t, ".INF")) {
        sc->kind = S_FLOAT;
        sc->f = neg ? -INFINITY : INFINITY;
        return;
    }
    if (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN")) {
        sc->kind = S_FLOAT;
        sc->f = NAN;
        return;
    }
    int digits = 0, dot = 0, expo = 0;
    while (isdigit((unsigned char)*t)) t++, digits++;
    if (*t == '.') {
        dot = 1;
        t++;
        while (isdigit((unsigned char)*t)) t++, digits++;
    }
    if (!digits) return;
    if (*t == 'e' || *t == 'E') {
        t++;
        if (*t == '+' || *t == '-') t++;
        if (!isdigit((unsigned char)*t)) return;
        while (isdigit((unsigned char)*t)) t++;
        expo = 1;
    }
    if (*t) return;
    errno = 0;
    sc->f = strtod(s, NULL);
    if (!dot && !expo) {
        sc->kind = S_INT;
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        sc->i = v;
        sc->i_ok = errno == 0 && v >= INT_MIN && v <= INT_MAX;
    } else {
        sc->kind = S_FLOAT;
    }
}

// A plain (unquoted) scalar starting at s[0]. In block context it ends at a comment or
// the end of the line, in flow context also at ',' or ']'; an override value is the
// whole string. *used: bytes consumed (trailing blanks included).
static int read_plain(Parser *p, const char *s, int n, int col, int ctx, const char *what,
                      int *used) {
    Scalar *sc = &p->sc;
    char b[64];
    int line = p->lineno;
    unsigned char c0 = (unsigned char)s[0];
    if ((c0 && strchr(",[]{}#&*!|>%@`", c0)) ||
        ((c0 == '-' || c0 == '?' || c0 == ':') && (n == 1 || is_space(s[1]))))
        return perr(p, line, col, "%s: unsupported YAML syntax at '%s' (quote the value if it "
                    "is a string)", what, snip(b, sizeof b, s, n));
    int i = 0;
    for (; i < n; i++) {
        char c = s[i];
        if (ctx == CTX_OVERRIDE) continue;
        if (c == '#' && i > 0 && is_space(s[i - 1])) break;
        if (ctx == CTX_FLOW && (c == ',' || c == ']')) break;
        if (ctx == CTX_FLOW && (c == '[' || c == '{' || c == '}'))
            return perr(p, line, col + i, "%s: nested flow collections are not supported ('%s')",
                        what, snip(b, sizeof b, s, n));
        if (c == ':' && (i + 1 == n || is_space(s[i + 1]) ||
                         (ctx == CTX_FLOW && (s[i + 1] == ',' || s[i + 1] == ']'))))
            return perr(p, line, col + i, "%s: unexpected ':' in value '%s' (quote the value, or "
                        "put nested keys on their own indented lines)", what, snip(b, sizeof b, s, n));
    }
    *used = i;
    int end = i;
    while (end > 0 && is_space(s[end - 1])) end--;
    if (end >= SBUF)
        return perr(p, line, col, "%s: value longer than %d characters", what, SBUF - 1);
    memcpy(sc->s, s, (size_t)end);
    sc->s[end] = 0;
    sc->slen = end;
    sc->raw = s;
    sc->rawlen = end;
    classify(sc);
    return 0;
}

static int read_scalar(Parser *p, const char *s, int n, int col, int ctx, const char *what,
                       int *used) {
    if (s[0] == '"' || s[0] == '\'') return read_quoted(p, s, n, col, what, used);
    return read_plain(p, s, n, col, ctx, what, used);
}

// After a value only blanks and a comment may follow.
static int check_rest(Parser *p, const char *s, int n, int col, const char *what) {
    int i = 0;
    while (i < n && is_space(s[i])) i++;
    if (i == n) return 0;
    if (s[i] == '#' && i > 0 && p->mode != CTX_OVERRIDE) return 0;
    char b[64];
    return perr(p, p->lineno, col + i, "%s: unexpected text '%s' after the value", what,
                snip(b, sizeof b, s + i, n - i));
}

// ----------------------------------------------------------------------------
// storing values

static const char *describe(const Scalar *sc, char *buf, size_t cap) {
    char b[64];
    snip(b, sizeof b, sc->raw, sc->rawlen);
    switch (sc->kind) {
    case S_NULL: snprintf(buf, cap, "null%s", sc->rawlen ? "" : " (an empty value)"); break;
    case S_BOOL: snprintf(buf, cap, "bool '%s'", b); break;
    case S_INT: snprintf(buf, cap, "int '%s'", b); break;
    case S_FLOAT: snprintf(buf, cap, "float '%s'", b); break;
    case S_STR: snprintf(buf, cap, "string '%s'", b); break;
    default: snprintf(buf, cap, "string %s", b); break;
    }
    return buf;
}

static int type_error(Parser *p, int line, int col, const Key *k, const Scalar *sc,
                      const char *item) {
    char d[96];
    const char *hint = "";
    if (is_list(k) && !*item) {
        hint = " (write a list: [a, b], or one '- item' per line)";
    } else if (k->type == T_STR || k->type == T_STRLIST) {
        if (sc->kind != S_NULL) hint = " (quote it to make it a string)";
        else hint = " (write \"\" for an empty string)";
    } else if (sc->kind == S_QSTR) {
        hint = " (quoted values are strings)";
    }
    return perr(p, line, col, "%s: expected %s, found %s%s%s", k->key, type_name[k->type], item,
                describe(sc, d, sizeof d), hint);
}

static int store_scalar(Parser *p, int ki, int line, int col) {
    const Key *k = &schema[ki];
    Scalar *sc = &p->sc;
    void *f = field_of(p->cfg, k);
    switch (k->type) {
    case T_INT:
        if (sc->kind != S_INT) return type_error(p, line, col, k, sc, "");
        if (!sc->i_ok)
            return perr(p, line, col, "%s: %s is out of range for an int", k->key, sc->s);
        *(int *)f = (int)sc->i;
        return 0;
    case T_FLOAT:
        if (sc->kind != S_INT && sc->kind != S_FLOAT) return type_error(p, line, col, k, sc, "");
        if (!isfinite(sc->f) || fabs(sc->f) > FLT_MAX)
            return perr(p, line, col, "%s: %s is not a finite float32 value", k->key, sc->s);
        *(float *)f = (float)sc->f;
        return 0;
    case T_BOOL:
        if (sc->kind != S_BOOL) return type_error(p, line, col, k, sc, "");
        *(int *)f = sc->b;
        return 0;
    case T_STR:
        if (sc->kind != S_STR && sc->kind != S_QSTR) return type_error(p, line, col, k, sc, "");
        if ((size_t)sc->slen >= k->size)
            return perr(p, line, col, "%s: string of %d characters is too long (at most %d)",
                        k->key, sc->slen, (int)k->size - 1);
        memset(f, 0, k->size);
        memcpy(f, sc->s, (size_t)sc->slen);
        return 0;
    default:
        return type_error(p, line, col, k, sc, "");
    }
}

static void list_begin(Parser *p, int ki) {
    const Key *k = &schema[ki];
    memset(field_of(p->cfg, k), 0, k->size);
    *count_of(p->cfg, k) = 0;
}

static int list_add(Parser *p, int ki, int line, int col) {
    const Key *k = &schema[ki];
    Scalar *sc = &p->sc;
    int *n = count_of(p->cfg, k);
    char *f = (char *)field_of(p->cfg, k) + (size_t)*n * k->elem;
    if (*n >= k->cap) return perr(p, line, col, "%s: too many items (at most %d)", k->key, k->cap);
    if (k->type == T_STRLIST) {
        if (sc->kind != S_STR && sc->kind != S_QSTR) return type_error(p, line, col, k, sc, "item ");
        if ((size_t)sc->slen >= k->elem)
            return perr(p, line, col, "%s: item of %d characters is too long (at most %d)", k->key,
                        sc->slen, (int)k->elem - 1);
        memcpy(f, sc->s, (size_t)sc->slen);
    } else {
        if (sc->kind != S_INT) return type_error(p, line, col, k, sc, "item ");
        if (!sc->i_ok)
            return perr(p, line, col, "%s: item %s is out of range for an int", k->key, sc->s);
        int v = (int)sc->i;
        memcpy(f, &v, sizeof v);
    }
    (*n)++;
    return 0;
}

// A flow list "[a, b]" starting at s[0] == '[' for key ki, closed on the same line.
static int read_flow_list(Parser *p, int ki, const char *s, int n, int col, int *used) {
    const Key *k = &schema[ki];
    char b[64];
    int line = p->lineno;
    if (!is_list(k))
        return perr(p, line, col, "%s: expected %s, found a list '%s'", k->key, type_name[k->type],
                    snip(b, sizeof b, s, n));
    list_begin(p, ki);
    int i = 1;
    for (;;) {
        while (i < n && is_space(s[i])) i++;
        if (i >= n) goto unterminated;
        if (s[i] == ']') { i++; break; }            // "[]" or a trailing comma
        if (s[i] == ',')
            return perr(p, line, col + i, "%s: empty item in flow list '%s'", k->key,
                        snip(b, sizeof b, s, n));
        int u;
        if (read_scalar(p, s + i, n - i, col + i, CTX_FLOW, k->key, &u)) return -1;
        if (list_add(p, ki, line, col + i)) return -1;
        i += u;
        while (i < n && is_space(s[i])) i++;
        if (i >= n) goto unterminated;
        if (s[i] == ',') { i++; continue; }
        if (s[i] == ']') { i++; break; }
        if (s[i] == '#') goto unterminated;
        return perr(p, line, col + i, "%s: expected ',' or ']' in flow list at '%s'", k->key,
                    snip(b, sizeof b, s + i, n - i));
    }
    *used = i;
    return 0;
unterminated:
    return perr(p, line, col, "%s: unterminated flow list '%s' (flow lists must close on the "
                "same line)", k->key, snip(b, sizeof b, s, n));
}

// The value of key ki written inline after "KEY:" (or an override): s[0] is not blank.
static int read_value(Parser *p, int ki, const char *s, int n, int col) {
    int used = 0;
    if (s[0] == '[') {
        if (read_flow_list(p, ki, s, n, col, &used)) return -1;
        return check_rest(p, s + used, n - used, col + used, schema[ki].key);
    }
    if (read_scalar(p, s, n, col, p->mode, schema[ki].key, &used)) return -1;
    if (p->sc.kind == S_QSTR && check_rest(p, s + used, n - used, col + used, schema[ki].key))
        return -1;
    return store_scalar(p, ki, p->lineno, col);
}

// ----------------------------------------------------------------------------
// block structure

static int pending_null(Parser *p) {
    p->pend = 0;
    if (p->pend_key < 0)
        return perr(p, p->pend_line, p->pend_col, "%s: section has no keys (expected an indented "
                    "block of keys under it)", p->pend_path);
    Scalar *sc = &p->sc;
    sc->kind = S_NULL;
    sc->raw = "";
    sc->rawlen = 0;
    sc->s[0] = 0;
    sc->slen = 0;
    return type_error(p, p->pend_line, p->pend_col, &schema[p->pend_key], sc, "");
}

static int list_item(Parser *p, int ind) {
    const char *L = p->line;
    int n = p->len, ki = p->list_key, i = ind + 1;
    const Key *k = &schema[ki];
    char b[64];
    while (i < n && is_space(L[i])) i++;
    if (i >= n || L[i] == '#') {
        Scalar *sc = &p->sc;
        sc->kind = S_NULL;
        sc->raw = "";
        sc->rawlen = 0;
        return type_error(p, p->lineno, ind + 1, k, sc, "item ");
    }
    if ((L[i] == '-' && (i + 1 == n || is_space(L[i + 1]))) || L[i] == '[')
        return perr(p, p->lineno, i + 1, "%s: nested lists are not supported ('%s')", k->key,
                    snip(b, sizeof b, L + i, n - i));
    int used = 0;
    if (read_scalar(p, L + i, n - i, i + 1, CTX_BLOCK, k->key, &used)) return -1;
    if (p->sc.kind == S_QSTR && check_rest(p, L + i + used, n - i - used, i + 1 + used, k->key))
        return -1;
    return list_add(p, ki, p->lineno, i + 1);
}

// Copy a dotted key into a KEY_MAX buffer (keys reaching here are schema keys or
// sections, far shorter; longer ones are cut).
static void copy_key(char *dst, const char *src) {
    size_t n = strnlen(src, KEY_MAX - 1);
    memcpy(dst, src, n);
    dst[n] = 0;
}

static int push_level(Parser *p, int indent, const char *path) {
    if (p->nlevel >= MAX_LEVELS) return perr(p, p->lineno, indent + 1, "mappings nested too deeply");
    size_t len = strlen(path);
    if (len >= KEY_MAX) len = KEY_MAX - 1;
    memcpy(p->prefix, path, len);
    p->prefix[len] = 0;
    p->level_indent[p->nlevel] = indent;
    p->level_plen[p->nlevel] = (int)len;
    p->nlevel++;
    return 0;
}

// "KEY: value" or "KEY:" at indentation ind (the current level's).
static int key_line(Parser *p, int ind) {
    const char *L = p->line;
    int n = p->len, i = ind, kcol = ind + 1;
    char b[64], kb[KEY_MAX + 16], key[KEY_MAX], full[2 * KEY_MAX + 2];
    int klen;
    if (L[i] == '"' || L[i] == '\'') {
        int used = 0;
        if (read_quoted(p, L + i, n - i, kcol, "key", &used)) return -1;
        i += used;
        while (i < n && is_space(L[i])) i++;
        if (i >= n || L[i] != ':' || (i + 1 < n && !is_space(L[i + 1])))
            return perr(p, p->lineno, kcol, "missing ':' after key '%s'", snip(b, sizeof b, L + ind, n - ind));
        i++;
        klen = p->sc.slen < KEY_MAX ? p->sc.slen : KEY_MAX - 1;
        memcpy(key, p->sc.s, (size_t)klen);
    } else {
        unsigned char c0 = (unsigned char)L[i];
        if ((c0 && strchr("[]{},&*!|>%@`", c0)) || ((c0 == '?' || c0 == ':') && (i + 1 == n || is_space(L[i + 1]))))
            return perr(p, p->lineno, kcol, "unsupported YAML syntax at '%s' (expected KEY: VALUE)",
                        snip(b, sizeof b, L + i, n - i));
        int j = i;
        for (; j < n; j++) {
            if (L[j] == ':' && (j + 1 == n || is_space(L[j + 1]))) break;
            if (L[j] == '#' && is_space(L[j - 1])) { j = n; break; }
        }
        if (j >= n)
            return perr(p, p->lineno, kcol, "missing ':' after key in '%s' (expected KEY: VALUE)",
                        snip(b, sizeof b, L + i, n - i));
        int e = j;
        while (e > i && is_space(L[e - 1])) e--;
        klen = e - i < KEY_MAX ? e - i : KEY_MAX - 1;
        memcpy(key, L + i, (size_t)klen);
        i = j + 1;
    }
    key[klen] = 0;
    snprintf(full, sizeof full, "%s%s%s", p->prefix, p->prefix[0] ? "." : "", key);
    while (i < n && is_space(L[i])) i++;
    int has_value = i < n && L[i] != '#';

    if (!p->prefix[0] && !strcmp(key, "_BASE_")) {
        if (!p->allow_base)
            return perr(p, p->lineno, kcol, "_BASE_: bases are only followed in config files "
                        "(%s is merged as it is)", p->origin);
        if (p->has_base)
            return perr(p, p->lineno, kcol, "duplicate key _BASE_ (first given on line %d)", p->base_line);
        if (!has_value)
            return perr(p, p->lineno, kcol, "_BASE_: expected the path of a base config file");
        int used = 0;
        if (read_scalar(p, L + i, n - i, i + 1, CTX_BLOCK, "_BASE_", &used)) return -1;
        if (p->sc.kind == S_QSTR && check_rest(p, L + i + used, n - i - used, i + 1 + used, "_BASE_"))
            return -1;
        if ((p->sc.kind != S_STR && p->sc.kind != S_QSTR) || !p->sc.slen) {
            char d[96];
            return perr(p, p->lineno, i + 1, "_BASE_: expected the path of a base config file, found %s",
                        describe(&p->sc, d, sizeof d));
        }
        memcpy(p->base, p->sc.s, (size_t)p->sc.slen + 1);
        p->has_base = 1;
        p->base_line = p->lineno;
        p->base_col = i + 1;
        return 0;
    }

    int ki = strchr(key, '.') ? -1 : find_key(full);
    int sec = ki < 0 && !strchr(key, '.') && section_first_key(full) >= 0;
    if (ki < 0 && !sec)
        return perr(p, p->lineno, kcol, "Non-existent config key: %s%s", snip(kb, sizeof kb, full, (int)strlen(full)),
                    strchr(key, '.') ? " (nest keys as indented mappings, not dotted names)" : "");
    if (ki >= 0) {
        if (p->set_line[ki])
            return perr(p, p->lineno, kcol, "duplicate key %s (first given on line %d)", full, p->set_line[ki]);
        p->set_line[ki] = p->lineno;
    } else {
        for (int s = 0; s < p->nsec; s++)
            if (!strcmp(p->sec[s], full))
                return perr(p, p->lineno, kcol, "duplicate key %s (first given on line %d)", full, p->sec_line[s]);
        if (p->nsec >= MAX_SECTIONS) return perr(p, p->lineno, kcol, "too many sections");
        copy_key(p->sec[p->nsec], full);
        p->sec_line[p->nsec++] = p->lineno;
    }
    if (!has_value) {
        p->pend = 1;
        p->pend_key = ki;
        p->pend_indent = ind;
        p->pend_line = p->lineno;
        p->pend_col = kcol;
        copy_key(p->pend_path, full);
        return 0;
    }
    if (sec)
        return perr(p, p->lineno, i + 1, "%s is a section: expected an indented block of keys, found '%s'",
                    full, snip(b, sizeof b, L + i, n - i));
    return read_value(p, ki, L + i, n - i, i + 1);
}

static int process_line(Parser *p) {
    const char *L = p->line;
    int n = p->len, i = 0;
    char b[64];
    while (i < n && is_space(L[i])) i++;
    if (i == n || L[i] == '#') return 0;   // blank line or comment
    for (int j = 0; j < i; j++)
        if (L[j] == '\t')
            return perr(p, p->lineno, j + 1, "tab character in the indentation of '%s' (YAML "
                        "indents with spaces only)", snip(b, sizeof b, L + i, n - i));
    int ind = i;
    if (ind == 0 && n >= 3 && (!strncmp(L, "---", 3) || !strncmp(L, "...", 3)) &&
        (n == 3 || is_space(L[3]))) {
        if (!p->any_content && L[0] == '-' && n == 3) return 0;   // a leading document marker
        return perr(p, p->lineno, 1, "unsupported YAML: several documents in one file");
    }
    if (ind == 0 && L[0] == '%') return perr(p, p->lineno, 1, "unsupported YAML: directives ('%s')",
                                             snip(b, sizeof b, L, n));
    p->any_content = 1;
    int dash = L[ind] == '-' && (ind + 1 == n || is_space(L[ind + 1]));

    if (p->list_key >= 0) {
        if (dash && ind == p->list_indent) return list_item(p, ind);
        if (ind > p->list_indent)
            return perr(p, p->lineno, ind + 1, "bad indentation of '%s' inside the list %s",
                        snip(b, sizeof b, L + ind, n - ind), schema[p->list_key].key);
        p->list_key = -1;
    }
    if (p->pend) {
        if (ind > p->pend_indent || (dash && ind == p->pend_indent)) {
            p->pend = 0;
            int ki = p->pend_key;
            if (dash) {
                if (ki < 0)
                    return perr(p, p->lineno, ind + 1, "%s is a section: expected indented keys, found "
                                "a list item '%s'", p->pend_path, snip(b, sizeof b, L + ind, n - ind));
                if (!is_list(&schema[ki]))
                    return perr(p, p->lineno, ind + 1, "%s: expected %s, found a list item '%s'",
                                schema[ki].key, type_name[schema[ki].type], snip(b, sizeof b, L + ind, n - ind));
                list_begin(p, ki);
                p->list_key = ki;
                p->list_indent = ind;
                return list_item(p, ind);
            }
            if (ki >= 0)
                return perr(p, p->lineno, ind + 1, "%s: expected %s, found a nested mapping '%s'",
                            schema[ki].key, type_name[schema[ki].type], snip(b, sizeof b, L + ind, n - ind));
            if (push_level(p, ind, p->pend_path)) return -1;
            return key_line(p, ind);
        }
        if (pending_null(p)) return -1;
    }
    if (dash)
        return perr(p, p->lineno, ind + 1, "unexpected list item '%s' (only list keys take lists)",
                    snip(b, sizeof b, L + ind, n - ind));
    if (p->nlevel == 0 && push_level(p, ind, "")) return -1;
    if (ind > p->level_indent[p->nlevel - 1])
        return perr(p, p->lineno, ind + 1, "bad indentation of '%s': unexpected indent",
                    snip(b, sizeof b, L + ind, n - ind));
    while (p->nlevel > 1 && ind < p->level_indent[p->nlevel - 1]) {
        p->nlevel--;
        p->prefix[p->level_plen[p->nlevel - 1]] = 0;
    }
    if (ind != p->level_indent[p->nlevel - 1])
        return perr(p, p->lineno, ind + 1, "bad indentation of '%s': does not match any outer level",
                    snip(b, sizeof b, L + ind, n - ind));
    return key_line(p, ind);
}

static Parser *parser_new(const char *origin, Config *cfg, char *err, size_t errlen) {
    Parser *p = calloc(1, sizeof *p);
    if (!p) {
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", origin);
        return NULL;
    }
    p->origin = origin;
    p->cfg = cfg;
    p->err = err;
    p->errlen = errlen;
    p->list_key = -1;
    p->mode = CTX_BLOCK;
    return p;
}

// Parse YAML text (len bytes, no NUL inside) into p->cfg.
static int parse_text(Parser *p, const char *text, size_t len) {
    if (len > MAX_TEXT) return perr(p, 0, 0, "YAML text larger than %d bytes", MAX_TEXT);
    const char *s = text, *end = text + len;
    if (len >= 3 && !memcmp(s, "\xEF\xBB\xBF", 3)) s += 3;   // UTF-8 byte order mark
    while (s < end) {
        const char *nl = memchr(s, '\n', (size_t)(end - s));
        const char *e = nl ? nl : end;
        p->lineno++;
        p->line = s;
        p->len = (int)(e - s);
        if (p->len > 0 && s[p->len - 1] == '\r') p->len--;
        if (process_line(p)) return -1;
        s = nl ? nl + 1 : end;
    }
    p->list_key = -1;
    if (p->pend && pending_null(p)) return -1;
    return 0;
}

// ----------------------------------------------------------------------------
// the API

void config_defaults(Config *c) {
    memset(c, 0, sizeof *c);
    char err[512];
    for (int k = 0; k < NKEYS; k++) {
        const Key *key = &schema[k];
        int t = key->type;
        size_t want = t == T_INT || t == T_BOOL ? sizeof(int) : t == T_FLOAT ? sizeof(float) : 0;
        if ((want && key->size != want) || (t == T_INTLIST && key->elem != sizeof(int)))
            fatal("config.c: schema row %s has the wrong field type", key->key);
        if (config_override(c, key->key, key->def, err, sizeof err))
            fatal("config.c: bad default: %s", err);
    }
}

// One KEY VALUE override (as fvcore's merge_from_list): the value is read as a YAML
// scalar or a one-line flow list with the typing rules of the files ("64" is an int,
// "[a, b]" a list, "'64'" a string); '#' starts no comment here. An empty value sets a
// string key to "" (an empty shell argument). On error c is unchanged.
int config_override(Config *c, const char *key, const char *value, char *err, size_t errlen) {
    char b[64];
    if (!key || !value) {
        if (err && errlen) snprintf(err, errlen, "config override: missing key or value");
        return -1;
    }
    Config *tmp = malloc(sizeof *tmp);
    Parser *p = parser_new("config override", tmp, err, errlen);
    int rc = -1;
    if (!tmp || !p) {
        if (err && errlen) snprintf(err, errlen, "config override: out of memory");
        goto done;
    }
    memcpy(tmp, c, sizeof *tmp);
    p->mode = CTX_OVERRIDE;
    int ki = find_key(key);
    if (ki < 0) {
        int first = section_first_key(key);
        if (first >= 0 && key[0])
            perr(p, 0, 0, "%s is a section, not a key (override its keys, e.g. %s)",
                 snip(b, sizeof b, key, (int)strlen(key)), schema[first].key);
        else
            perr(p, 0, 0, "Non-existent config key: %s", snip(b, sizeof b, key, (int)strlen(key)));
        goto done;
    }
    size_t n = strlen(value);
    if (n >= SBUF * 4) {
        perr(p, 0, 0, "%s: value longer than %d characters", key, SBUF * 4);
        goto done;
    }
    while (n && is_space(value[n - 1])) n--;
    while (n && is_space(*value)) value++, n--;
    p->line = value;
    p->len = (int)n;
    if (n == 0) {
        p->sc.kind = S_NULL;
        p->sc.raw = "";
        p->sc.rawlen = 0;
        if (schema[ki].type == T_STR) {   // an empty command-line argument: ""
            p->sc.kind = S_QSTR;
            p->sc.s[0] = 0;
            p->sc.slen = 0;
            rc = store_scalar(p, ki, 0, 0);
        } else {
            rc = type_error(p, 0, 0, &schema[ki], &p->sc, "");
        }
        goto done;
    }
    rc = read_value(p, ki, value, (int)n, 1);
done:
    if (!rc) memcpy(c, tmp, sizeof *c);
    free(p);
    free(tmp);
    return rc;
}

// Merge YAML text over c (no _BASE_: used for configs stored in checkpoints). On error
// c is unchanged.
int config_load_string(Config *c, const char *yaml, const char *origin, char *err,
                       size_t errlen) {
    if (!origin) origin = "<config text>";
    Config *tmp = malloc(sizeof *tmp);
    Parser *p = parser_new(origin, tmp, err, errlen);
    int rc = -1;
    if (!tmp || !p) {
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", origin);
    } else if (!yaml) {
        perr(p, 0, 0, "no YAML text");
    } else {
        memcpy(tmp, c, sizeof *tmp);
        rc = parse_text(p, yaml, strlen(yaml));
        if (!rc) memcpy(c, tmp, sizeof *c);
    }
    free(p);
    free(tmp);
    return rc;
}

// Read a whole file (at most MAX_FILE bytes, no NUL bytes) into a NUL-terminated buffer.
static char *read_file_text(const char *path, size_t *len, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot open config file: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = malloc(MAX_FILE + 1);
    size_t n = buf ? fread(buf, 1, MAX_FILE + 1, f) : 0;
    int bad = !buf || ferror(f);
    int e = errno;
    fclose(f);
    if (bad) {
        if (err && errlen) snprintf(err, errlen, "%s: cannot read config file: %s", path, buf ? strerror(e) : "out of memory");
        free(buf);
        return NULL;
    }
    if (n > MAX_FILE) {
        if (err && errlen) snprintf(err, errlen, "%s: config file larger than %d bytes", path, MAX_FILE);
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    const char *z = memchr(buf, 0, n);
    if (z) {
        int line = 1, col = 1;
        for (const char *q = buf; q < z; q++) {
            if (*q == '\n') line++, col = 1;
            else col++;
        }
        if (err && errlen) snprintf(err, errlen, "%s:%d:%d: NUL byte in config file (not a text file?)", path, line, col);
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

typedef struct Chain {
    char real[MAX_BASE_DEPTH][PATH_MAX];   // canonical paths of the files being loaded
    char shown[MAX_BASE_DEPTH][PATH_MAX];  // the same as written
} Chain;

static void append(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    size_t n = strlen(err);
    if (n + 1 >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - n, fmt, ap);
    va_end(ap);
}

// Merge file chain->shown[depth] over c: its _BASE_ first, then its own keys.
static int merge_file(Config *c, Chain *ch, int depth, char *err, size_t errlen) {
    const char *path = ch->shown[depth];
    size_t len;
    char *text = read_file_text(path, &len, err, errlen);
    if (!text) return -1;
    Config *staged = malloc(sizeof *staged);
    Parser *p = parser_new(path, staged, err, errlen);
    int rc = -1;
    if (!staged || !p) {
        if (err && errlen) snprintf(err, errlen, "%s: out of memory", path);
        goto done;
    }
    memcpy(staged, c, sizeof *staged);
    p->allow_base = 1;
    rc = parse_text(p, text, len);
    free(text);
    text = NULL;
    if (rc || !p->has_base) goto done;

    rc = -1;
    if (depth + 1 >= MAX_BASE_DEPTH) {
        perr(p, p->base_line, p->base_col, "_BASE_: bases nested deeper than %d files", MAX_BASE_DEPTH);
        goto done;
    }
    // the base path is relative to the directory of the including file
    char *next = ch->shown[depth + 1];
    const char *slash = strrchr(path, '/');
    int dirlen = p->base[0] == '/' || !slash ? 0 : (int)(slash - path + 1);
    if ((size_t)dirlen + strlen(p->base) >= PATH_MAX) {
        perr(p, p->base_line, p->base_col, "_BASE_: path too long");
        goto done;
    }
    memcpy(next, path, (size_t)dirlen);
    strcpy(next + dirlen, p->base);
    if (!realpath(next, ch->real[depth + 1])) {
        perr(p, p->base_line, p->base_col, "_BASE_: cannot open '%s': %s", next, strerror(errno));
        goto done;
    }
    for (int d = 0; d <= depth; d++) {
        if (strcmp(ch->real[d], ch->real[depth + 1])) continue;
        perr(p, p->base_line, p->base_col, "_BASE_: cycle of bases: ");
        for (int e = d; e <= depth; e++) append(err, errlen, "%s -> ", ch->shown[e]);
        append(err, errlen, "%s", next);
        goto done;
    }
    if (merge_file(c, ch, depth + 1, err, errlen)) {
        append(err, errlen, " (the _BASE_ of %s:%d)", path, p->base_line);
        goto done;
    }
    rc = 0;
done:
    if (!rc) {   // the file's own keys over c (which now holds the bases)
        for (int k = 0; k < NKEYS; k++) {
            if (!p->set_line[k]) continue;
            const Key *key = &schema[k];
            memcpy(field_of(c, key), field_of(staged, key), key->size);
            if (is_list(key)) *count_of(c, key) = *count_of(staged, key);
        }
    }
    free(text);
    free(p);
    free(staged);
    return rc;
}

// defaults + the file (its bases first) + the overrides; c is written only on success.
int config_load(Config *c, const char *path, int noverrides, char **overrides, char *err,
                size_t errlen) {
    Config *tmp = malloc(sizeof *tmp);
    Chain *ch = malloc(sizeof *ch);
    int rc = -1;
    if (!tmp || !ch) {
        if (err && errlen) snprintf(err, errlen, "config: out of memory");
        goto done;
    }
    config_defaults(tmp);
    if (path) {
        if (strlen(path) >= PATH_MAX) {
            if (err && errlen) snprintf(err, errlen, "config file path too long");
            goto done;
        }
        strcpy(ch->shown[0], path);
        if (!realpath(path, ch->real[0])) {
            if (err && errlen) snprintf(err, errlen, "%s: cannot open config file: %s", path, strerror(errno));
            goto done;
        }
        if (merge_file(tmp, ch, 0, err, errlen)) goto done;
    }
    if (noverrides < 0 || (noverrides && !overrides)) noverrides = 0;
    if (noverrides % 2) {
        if (err && errlen)
            snprintf(err, errlen, "config override %s has no value (overrides come as KEY VALUE pairs)",
                     overrides[noverrides - 1] ? overrides[noverrides - 1] : "(null)");
        goto done;
    }
    for (int i = 0; i < noverrides; i += 2)
        if (config_override(tmp, overrides[i], overrides[i + 1], err, errlen)) goto done;
    memcpy(c, tmp, sizeof *c);
    rc = 0;
done:
    free(tmp);
    free(ch);
    return rc;
}

// ----------------------------------------------------------------------------
// the dump

// The shortest decimal that reads back (through strtod, as the parser does) to v,
// always with a '.' so that YAML readers see a float: plain notation (0.0001, 100.0)
// for everyday magnitudes, an exponent (1.0e-45, 3.4e+38) otherwise.
static void format_float(char *buf, size_t cap, float v) {
    if (isnan(v)) { snprintf(buf, cap, ".nan"); return; }
    if (isinf(v)) { snprintf(buf, cap, v < 0 ? "-.inf" : ".inf"); return; }
    char t[40];
    double a = fabs((double)v);
    if (a == 0 || (a >= 1e-4 && a < 1e9)) {
        for (int d = 0; d <= 17; d++) {
            snprintf(t, sizeof t, "%.*f", d, (double)v);
            if ((float)strtod(t, NULL) == v) {
                snprintf(buf, cap, "%s%s", t, d ? "" : ".0");
                return;
            }
        }
    }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(t, sizeof t, "%.*g", prec, (double)v);
        if ((float)strtod(t, NULL) == v) break;
    }
    char *e = strchr(t, 'e');
    if (strchr(t, '.')) snprintf(buf, cap, "%s", t);
    else if (e) snprintf(buf, cap, "%.*s.0%s", (int)(e - t), t, e);
    else snprintf(buf, cap, "%s.0", t);
}

static void dump_string(FILE *f, const char *s, size_t cap) {
    size_t n = strnlen(s, cap);
    fputc('"', f);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') fprintf(f, "\\%c", ch);
        else if (ch == '\n') fputs("\\n", f);
        else if (ch == '\t') fputs("\\t", f);
        else if (ch == '\r') fputs("\\r", f);
        else if (ch < 0x20 || ch == 0x7f) fprintf(f, "\\x%02x", ch);
        else fputc(ch, f);
    }
    fputc('"', f);
}

// How many leading components two section paths share ("MODEL.VISUAL" and
// "MODEL.TEXTUAL": 1; "" and anything: 0).
static int common_depth(const char *a, size_t alen, const char *b, size_t blen) {
    int d = 0;
    size_t i = 0;
    if (!alen || !blen) return 0;
    for (;;) {
        size_t j = i;
        while (j < alen && j < blen && a[j] == b[j] && a[j] != '.') j++;
        int enda = j == alen || a[j] == '.', endb = j == blen || b[j] == '.';
        if (!enda || !endb) return d;
        d++;
        if (j == alen || j == blen) return d;
        i = j + 1;
    }
}

void config_dump(const Config *c, FILE *f) {
    fprintf(f, "# virtex.c config: every key (read back with config_load)\n");
    const char *open = "";
    size_t openlen = 0;
    for (int k = 0; k < NKEYS; k++) {
        const Key *key = &schema[k];
        const char *dot = strrchr(key->key, '.');
        size_t seclen = dot ? (size_t)(dot - key->key) : 0;
        int common = common_depth(open, openlen, key->key, seclen);
        // open the sections below the common part, one header per component
        int depth = 0;
        for (size_t i = 0; i <= seclen && seclen; i++) {
            if (i < seclen && key->key[i] != '.') continue;
            depth++;
            if (depth > common) {
                size_t start = i;
                while (start > 0 && key->key[start - 1] != '.') start--;
                fprintf(f, "%*s%.*s:\n", 2 * (depth - 1), "", (int)(i - start), key->key + start);
            }
        }
        open = key->key;
        openlen = seclen;
        const char *name = dot ? dot + 1 : key->key;
        const void *fp = (const char *)c + key->off;
        int ind = 2 * depth;
        fprintf(f, "%*s%s:", ind, "", name);
        char num[64];
        switch (key->type) {
        case T_INT: fprintf(f, " %d\n", *(const int *)fp); break;
        case T_BOOL: fprintf(f, " %s\n", *(const int *)fp ? "true" : "false"); break;
        case T_FLOAT:
            format_float(num, sizeof num, *(const float *)fp);
            fprintf(f, " %s\n", num);
            break;
        case T_STR:
            fputc(' ', f);
            dump_string(f, fp, key->size);
            fputc('\n', f);
            break;
        default: {
            int n = *(const int *)((const char *)c + key->count_off);
            if (n < 0) n = 0;
            if (n > key->cap) n = key->cap;
            if (!n) { fprintf(f, " []\n"); break; }
            fputc('\n', f);
            for (int i = 0; i < n; i++) {
                const char *item = (const char *)fp + (size_t)i * key->elem;
                fprintf(f, "%*s- ", ind + 2, "");
                if (key->type == T_STRLIST) dump_string(f, item, key->elem);
                else {
                    int v;
                    memcpy(&v, item, sizeof v);
                    fprintf(f, "%d", v);
                }
                fputc('\n', f);
            }
        }
        }
    }
}

// ----------------------------------------------------------------------------
// MODEL.TEXTUAL.NAME

int parse_textual_name(const char *name, int *prenorm, int *L, int *H, int *A, int *F,
                       char *err, size_t errlen) {
    static const char form[] = "expected transdec_postnorm::L<layers>_H<hidden>_A<heads>_F<feedforward> "
                               "or transdec_prenorm::..., e.g. transdec_postnorm::L1_H2048_A32_F8192";
    char b[64];
    const char *why = NULL;
    int v[4] = {0, 0, 0, 0}, pre = 0;
    if (!name) name = "";
    const char *arch = strstr(name, "::");
    if (!arch) why = "no '::' after the head kind";
    else if ((size_t)(arch - name) == strlen("transdec_postnorm") && !strncmp(name, "transdec_postnorm", (size_t)(arch - name))) pre = 0;
    else if ((size_t)(arch - name) == strlen("transdec_prenorm") && !strncmp(name, "transdec_prenorm", (size_t)(arch - name))) pre = 1;
    else why = "unknown head kind (transdec_postnorm or transdec_prenorm)";
    if (!why) {
        const char *s = arch + 2;
        static const char letters[] = "LHAF";
        for (int i = 0; i < 4 && !why; i++) {
            if (*s != letters[i]) { why = "the parts must be L, H, A and F in this order"; break; }
            s++;
            if (!isdigit((unsigned char)*s)) { why = "each letter must be followed by a number"; break; }
            long x = 0;
            while (isdigit((unsigned char)*s)) {
                x = x * 10 + (*s++ - '0');
                if (x > 65536) { why = "a number is too large (at most 65536)"; break; }
            }
            if (why) break;
            if (x == 0) { why = "L, H, A and F must be positive"; break; }
            v[i] = (int)x;
            if (i < 3 && *s++ != '_') { why = "the parts must be separated by '_'"; break; }
        }
        if (!why && *s) why = "unexpected text after F<feedforward>";
        if (!why && v[1] % v[2]) why = "H must be divisible by A (head size H/A)";
    }
    if (why) {
        if (err && errlen)
            snprintf(err, errlen, "MODEL.TEXTUAL.NAME '%s' is malformed: %s (%s)",
                     snip(b, sizeof b, name, (int)strlen(name)), why, form);
        return -1;
    }
    if (prenorm) *prenorm = pre;
    if (L) *L = v[0];
    if (H) *H = v[1];
    if (A) *A = v[2];
    if (F) *F = v[3];
    return 0;
}
