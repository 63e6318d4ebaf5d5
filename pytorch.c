// pytorch.c — torch.save files in and out without Python: a zip reader/writer, a
// pickle machine restricted to what torch.save writes, and the name mappings between
// VirTex checkpoints, torchvision ResNets and Detectron2 backbones. model.h section 11.
//
//   1. bytes ............ bounded little-endian reads, messages
//   2. zip reader ....... central directory (zip64 too), stored and deflated entries
//   3. pickle machine ... the opcodes of protocol 2 (and a few harmless ones of 3-4),
//                         a short list of allowed globals, persistent ids for storages
//   4. tensors .......... strides, offsets and dtypes into contiguous float32 / int64
//   5. the state dict ... "model" / "state_dict" / top level, "module." stripped
//   6. names ............ torchvision and Detectron2 <-> VirTex
//   7. import ........... onto a Model, every name and shape checked
//   8. writing .......... a pickle of OrderedDicts of tensors in a torch.save zip
//
// The reader never trusts the file: every length is checked against the bytes that
// hold it before it is used, nothing is allocated beyond what the file can back, and
// anything outside the known opcodes and globals is refused with a message naming it.
// No code is ever executed: the "globals" are matched by name against a fixed table
// and each has a fixed meaning here.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stb/stb_image.h>
#include "model.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pytorch.c reads and writes little-endian tensor data in place"
#endif

// ----------------------------------------------------------------------------
// 1. bytes

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

// A string of the file, quoted for a message: at most 60 bytes, control bytes as '?'.
static const char *quote(char *buf, size_t cap, const char *s, size_t n) {
    size_t k = 0, lim = n < 60 ? n : 60;
    for (size_t i = 0; i < lim && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[k++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (n > lim && k + 3 < cap) { memcpy(buf + k, "...", 3); k += 3; }
    buf[k] = 0;
    return buf;
}

// ----------------------------------------------------------------------------
// 2. the zip reader
//
// torch.save writes a zip (PyTorch >= 1.6) of stored entries, each 64-byte aligned:
// <archive>/data.pkl, <archive>/data/<key> (one per storage), <archive>/version, maybe
// <archive>/byteorder. Other tools may rewrite it deflated; both are read here.

#define ZIP_MAX_ENTRIES (1 << 22)
#define ZIP_MAX_INFLATED ((uint64_t)INT_MAX)   // stb_image's inflate counts in int

typedef struct ZipEntry {
    const char *name;            // into the central directory (not NUL-terminated)
    uint16_t nlen, method;
    uint32_t crc;
    uint64_t csize, usize, offset;   // offset: of the local header
    const unsigned char *data;   // resolved on first use: stored bytes or inflated copy
    unsigned char *inflated;     // owned copy of a deflated entry
    int checked;                 // 1: data resolved and CRC verified
    int storage;                 // 1 + index of the storage read from it, 0: none yet
} ZipEntry;

typedef struct Zip {
    const unsigned char *buf;
    size_t size;
    const char *path;            // for messages
    ZipEntry *e;                 // sorted by name
    int n;
} Zip;

static int cmp_entry(const void *a, const void *b) {
    const ZipEntry *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (int)x->nlen - (int)y->nlen;
}

// The entry called name (len bytes), or NULL.
static ZipEntry *zip_find(Zip *z, const char *name, size_t len) {
    if (len > 65535) return NULL;
    ZipEntry key = {.name = name, .nlen = (uint16_t)len};
    return bsearch(&key, z->e, (size_t)z->n, sizeof *z->e, cmp_entry);
}

// Why the bytes are not a zip: a hint for the formats torch.save wrote before 1.6.
static int not_zip(Zip *z, char *err, size_t errlen) {
    static const unsigned char legacy[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46};
    if (z->size >= 4 && !memcmp(z->buf, "PK\3\4", 4))
        seterr(err, errlen, "%s: truncated or corrupt zip archive (no end of central "
               "directory record)", z->path);
    else if (z->size >= 8 && !memcmp(z->buf, legacy, 8))
        seterr(err, errlen, "%s: the legacy torch.save format of PyTorch < 1.6 is not "
               "supported: load and re-save it with a recent torch.save", z->path);
    else if (z->size >= 262 && !memcmp(z->buf + 257, "ustar", 5))
        seterr(err, errlen, "%s: a tar archive (the legacy torch.save format of PyTorch "
               "< 1.6) is not supported: re-save it with a recent torch.save", z->path);
    else
        seterr(err, errlen, "%s: not a torch.save file (expected a zip archive, bad magic)",
               z->path);
    return -1;
}

// Read the zip64 end record through its locator, just before the classic one at eocd.
static int zip64_end(Zip *z, size_t eocd, uint64_t *count, uint64_t *cdsize,
                     uint64_t *cdoff, char *err, size_t errlen) {
    if (eocd < 20 || rd32(z->buf + eocd - 20) != 0x07064b50) {
        seterr(err, errlen, "%s: corrupt zip: zip64 sizes without a zip64 locator", z->path);
        return -1;
    }
    uint64_t off = rd64(z->buf + eocd - 20 + 8);
    if (off > z->size - 56 || z->size < 56 || rd32(z->buf + off) != 0x06064b50) {
        seterr(err, errlen, "%s: corrupt zip: bad zip64 end of central directory", z->path);
        return -1;
    }
    *count = rd64(z->buf + off + 32);
    *cdsize = rd64(z->buf + off + 40);
    *cdoff = rd64(z->buf + off + 48);
    return 0;
}

// Apply a central directory entry's zip64 extra field (id 1) to the 0xFFFFFFFF fields.
static int zip64_extra(ZipEntry *e, const unsigned char *x, size_t xlen, int need_u,
                       int need_c, int need_o) {
    for (size_t p = 0; p + 4 <= xlen;) {
        unsigned id = rd16(x + p), len = rd16(x + p + 2);
        if (p + 4 + len > xlen) return -1;
        if (id == 1) {
            const unsigned char *f = x + p + 4;
            unsigned k = 0;
            if (need_u) { if (k + 8 > len) return -1; e->usize = rd64(f + k); k += 8; }
            if (need_c) { if (k + 8 > len) return -1; e->csize = rd64(f + k); k += 8; }
            if (need_o) { if (k + 8 > len) return -1; e->offset = rd64(f + k); }
            return 0;
        }
        p += 4 + len;
    }
    return need_u || need_c || need_o ? -1 : 0;
}

// Parse the central directory of the zip in z->buf. Every offset is bounds-checked.
static int zip_open(Zip *z, char *err, size_t errlen) {
    if (z->size < 22) return not_zip(z, err, errlen);
    size_t lo = z->size > 22 + 65535 ? z->size - 22 - 65535 : 0, eocd = SIZE_MAX;
    for (size_t p = z->size - 22 + 1; p-- > lo;)
        if (rd32(z->buf + p) == 0x06054b50 && p + 22 + rd16(z->buf + p + 20) <= z->size) {
            eocd = p;
            break;
        }
    if (eocd == SIZE_MAX) return not_zip(z, err, errlen);
    const unsigned char *q = z->buf + eocd;
    uint64_t count = rd16(q + 10), cdsize = rd32(q + 12), cdoff = rd32(q + 16);
    if (count == 0xFFFF || cdsize == 0xFFFFFFFF || cdoff == 0xFFFFFFFF)
        if (zip64_end(z, eocd, &count, &cdsize, &cdoff, err, errlen)) return -1;
    if (cdoff > z->size || cdsize > z->size - cdoff || count > cdsize / 46 ||
        count > ZIP_MAX_ENTRIES) {
        seterr(err, errlen, "%s: truncated or corrupt zip: the central directory (%llu "
               "entries, %llu bytes at offset %llu) does not fit in the file's %zu bytes",
               z->path, (unsigned long long)count, (unsigned long long)cdsize,
               (unsigned long long)cdoff, z->size);
        return -1;
    }
    z->e = calloc(count + 1, sizeof *z->e);
    if (!z->e) { seterr(err, errlen, "%s: out of memory", z->path); return -1; }
    const unsigned char *p = z->buf + cdoff, *end = p + cdsize;
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < 46 || rd32(p) != 0x02014b50) {
            seterr(err, errlen, "%s: corrupt zip: central directory entry %llu is damaged",
                   z->path, (unsigned long long)i);
            return -1;
        }
        ZipEntry *e = &z->e[z->n++];
        unsigned flags = rd16(p + 8), nlen = rd16(p + 28), xlen = rd16(p + 30),
                 clen = rd16(p + 32);
        e->method = rd16(p + 10);
        e->crc = rd32(p + 16);
        e->csize = rd32(p + 20);
        e->usize = rd32(p + 24);
        e->offset = rd32(p + 42);
        if ((size_t)(end - p) < 46u + nlen + xlen + clen) {
            seterr(err, errlen, "%s: corrupt zip: central directory entry %llu runs past "
                   "the directory", z->path, (unsigned long long)i);
            return -1;
        }
        e->name = (const char *)p + 46;
        e->nlen = (uint16_t)nlen;
        char nb[80];
        if (zip64_extra(e, p + 46 + nlen, xlen, e->usize == 0xFFFFFFFF,
                        e->csize == 0xFFFFFFFF, e->offset == 0xFFFFFFFF)) {
            seterr(err, errlen, "%s: corrupt zip: entry '%s' has a bad zip64 field", z->path,
                   quote(nb, sizeof nb, e->name, nlen));
            return -1;
        }
        if (flags & 1) {
            seterr(err, errlen, "%s: entry '%s' is encrypted", z->path,
                   quote(nb, sizeof nb, e->name, nlen));
            return -1;
        }
        p += 46 + nlen + xlen + clen;
    }
    qsort(z->e, (size_t)z->n, sizeof *z->e, cmp_entry);
    return 0;
}

// The bytes of entry e (inflated if need be), CRC-checked once. NULL: err says why.
static const unsigned char *zip_data(Zip *z, ZipEntry *e, char *err, size_t errlen) {
    if (e->checked) return e->data;
    char nb[80];
    quote(nb, sizeof nb, e->name, e->nlen);
    const unsigned char *h = z->buf + e->offset;
    if (e->offset > z->size || z->size - e->offset < 30 || rd32(h) != 0x04034b50) {
        seterr(err, errlen, "%s: truncated or corrupt zip: no local header for '%s' at "
               "offset %llu", z->path, nb, (unsigned long long)e->offset);
        return NULL;
    }
    uint64_t start = e->offset + 30 + rd16(h + 26) + rd16(h + 28);
    if (start > z->size || e->csize > z->size - start) {
        seterr(err, errlen, "%s: truncated zip: entry '%s' needs %llu bytes at offset %llu, "
               "the file has %zu", z->path, nb, (unsigned long long)e->csize,
               (unsigned long long)start, z->size);
        return NULL;
    }
    const unsigned char *src = z->buf + start;
    if (e->method == 0) {
        if (e->csize != e->usize) {
            seterr(err, errlen, "%s: corrupt zip: stored entry '%s' has sizes %llu and %llu",
                   z->path, nb, (unsigned long long)e->csize, (unsigned long long)e->usize);
            return NULL;
        }
        e->data = src;
    } else if (e->method == 8) {
        // deflate expands at most ~1032:1, so a larger claim is a lie, not a big file
        if (e->usize > ZIP_MAX_INFLATED || e->csize > ZIP_MAX_INFLATED - 8 ||
            e->usize > 1032 * e->csize + 1024) {
            seterr(err, errlen, "%s: entry '%s' declares %llu bytes inflated from %llu: "
                   "too large or impossible", z->path, nb, (unsigned long long)e->usize,
                   (unsigned long long)e->csize);
            return NULL;
        }
        e->inflated = malloc(e->usize + 1);
        if (!e->inflated) { seterr(err, errlen, "%s: out of memory", z->path); return NULL; }
        // stb_image's inflate refuses a stream whose last codes lie in its final 2 bytes
        // (PNG streams always have 4 more): give it zero padding, never decoded
        unsigned char *padded = malloc(e->csize + 8);
        if (!padded) { seterr(err, errlen, "%s: out of memory", z->path); return NULL; }
        memcpy(padded, src, e->csize);
        memset(padded + e->csize, 0, 8);
        int got = stbi_zlib_decode_noheader_buffer((char *)e->inflated, (int)e->usize + 1,
                                                   (const char *)padded, (int)e->csize + 8);
        free(padded);
        if (got < 0 || (uint64_t)got != e->usize) {
            seterr(err, errlen, "%s: corrupt zip: entry '%s' does not inflate to its "
                   "declared %llu bytes", z->path, nb, (unsigned long long)e->usize);
            return NULL;
        }
        e->data = e->inflated;
    } else {
        seterr(err, errlen, "%s: entry '%s' uses zip compression method %u (only stored "
               "and deflate are read)", z->path, nb, e->method);
        return NULL;
    }
    if (crc32_update(0, e->data, e->usize) != e->crc) {
        seterr(err, errlen, "%s: entry '%s' fails its CRC-32: the file is corrupt", z->path, nb);
        return NULL;
    }
    e->checked = 1;
    return e->data;
}

static void zip_close(Zip *z) {
    for (int i = 0; i < z->n; i++) free(z->e[i].inflated);
    free(z->e);
    z->e = NULL;
    z->n = 0;
}

// ----------------------------------------------------------------------------
// 3. the pickle machine
//
// Values live in one growing array and refer to each other by index, so the memo and
// the stack share them as Python shares objects (a dict filled after it was memoised
// is the same dict). Nothing recurses over values: cycles and deep nesting are harmless.

#define PICKLE_MAX_MEMO (1 << 24)
#define TENSOR_MAX_DIMS 8

typedef enum VKind {
    V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_BYTES, V_TUPLE, V_LIST, V_DICT, V_GLOBAL,
    V_STORAGE, V_TENSOR
} VKind;
static const char *const vkind_name[] = {
    "None", "a bool", "an int", "a float", "a string", "bytes", "a tuple", "a list", "a dict",
    "a global", "a storage", "a tensor"
};

// The globals a torch.save file may name; nothing else is accepted.
typedef enum Global {
    G_ORDERED_DICT, G_REBUILD_TENSOR_V2, G_REBUILD_PARAMETER,
    G_FLOAT, G_HALF, G_BFLOAT16, G_DOUBLE, G_LONG, G_INT, G_SHORT, G_CHAR, G_BYTE, G_BOOL,
    G_COUNT
} Global;
static const struct { const char *module, *name; int esize; } globals[G_COUNT] = {
    {"collections", "OrderedDict", 0},
    {"torch._utils", "_rebuild_tensor_v2", 0},
    {"torch._utils", "_rebuild_parameter", 0},
    {"torch", "FloatStorage", 4}, {"torch", "HalfStorage", 2},
    {"torch", "BFloat16Storage", 2}, {"torch", "DoubleStorage", 8},
    {"torch", "LongStorage", 8}, {"torch", "IntStorage", 4}, {"torch", "ShortStorage", 2},
    {"torch", "CharStorage", 1}, {"torch", "ByteStorage", 1}, {"torch", "BoolStorage", 1},
};
static int global_is_storage(int g) { return g >= G_FLOAT; }

typedef struct Val {
    VKind kind;
    int n, cap;                  // items of a tuple / list; 2 x pairs of a dict
    int *items;
    union {
        int64_t i;               // bool, int
        double f;
        struct { const char *s; uint32_t len; } str;   // into data.pkl (str, bytes)
        int g;                   // global
        int storage;             // index into Pickle.storages
        int tensor;              // index into Pickle.tensors
    } u;
} Val;

typedef struct Storage {
    const char *key;
    uint32_t klen;
    int dtype;                   // the storage Global
    uint64_t numel;
    const unsigned char *data;   // numel * esize bytes
} Storage;

typedef struct TensorRef {
    int storage;
    uint64_t offset;
    int ndim;
    uint64_t size[TENSOR_MAX_DIMS], stride[TENSOR_MAX_DIMS];
} TensorRef;

typedef struct Pickle {
    const unsigned char *p, *end, *start;
    Zip *zip;
    const char *prefix;          // "archive/" of the storages
    size_t plen;
    Val *v; int nv, capv;
    int *stack; int ns, caps;
    int *marks; int nm, capm;
    int *memo; int nmemo;        // -1: unset
    int memo_count;              // indices set (MEMOIZE appends at this one)
    Storage *storages; int nst, capst;
    TensorRef *tensors; int nt, capt;
    char *err; size_t errlen;
    const char *path;
} Pickle;

// Grow *arr (of *cap elements of size sz) to hold at least need; 0 or -1 (no memory).
static int grow(void **arr, int *cap, int need, size_t sz) {
    if (need <= *cap) return 0;
    if (need > INT_MAX / 2) return -1;
    int ncap = *cap ? *cap : 16;
    while (ncap < need) ncap *= 2;
    void *p = realloc(*arr, (size_t)ncap * sz);
    if (!p) return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

static int pk_fail(Pickle *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int pk_fail(Pickle *k, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    seterr(k->err, k->errlen, "%s: data.pkl at byte %ld: %s", k->path,
           (long)(k->p - k->start), msg);
    return -1;
}

// A new value of the given kind; its index, or -1.
static int pk_new(Pickle *k, VKind kind) {
    if (grow((void **)&k->v, &k->capv, k->nv + 1, sizeof *k->v)) return pk_fail(k, "out of memory");
    memset(&k->v[k->nv], 0, sizeof k->v[0]);
    k->v[k->nv].kind = kind;
    return k->nv++;
}

static int pk_push(Pickle *k, int v) {
    if (v < 0) return -1;
    if (grow((void **)&k->stack, &k->caps, k->ns + 1, sizeof *k->stack))
        return pk_fail(k, "out of memory");
    k->stack[k->ns++] = v;
    return 0;
}

// Pop one value; -1 when the stack (above the last mark) is empty.
static int pk_pop(Pickle *k, const char *op) {
    int floor = k->nm ? k->marks[k->nm - 1] : 0;
    if (k->ns <= floor) return pk_fail(k, "%s needs a value but the stack is empty", op);
    return k->stack[--k->ns];
}

// The position of the last mark (values above it are the operands), popping it.
static int pk_pop_mark(Pickle *k, const char *op) {
    if (!k->nm) return pk_fail(k, "%s without a MARK", op);
    return k->marks[--k->nm];
}

// Append item to a container value.
static int pk_append(Pickle *k, int c, int item) {
    Val *v = &k->v[c];
    if (grow((void **)&v->items, &v->cap, v->n + 1, sizeof *v->items))
        return pk_fail(k, "out of memory");
    v->items[v->n++] = item;
    return 0;
}

// A tuple (or list) of the stack values from position `from` up; they are popped.
static int pk_collect(Pickle *k, VKind kind, int from) {
    int t = pk_new(k, kind);
    if (t < 0) return -1;
    for (int i = from; i < k->ns; i++)
        if (pk_append(k, t, k->stack[i])) return -1;
    k->ns = from;
    return t;
}

static int need_bytes(Pickle *k, size_t n, const char *op) {
    if ((size_t)(k->end - k->p) >= n) return 0;
    return pk_fail(k, "%s needs %zu bytes, the pickle ends first (truncated)", op, n);
}

// Is v a string equal to s?
static int str_is(const Val *v, const char *s) {
    size_t n = strlen(s);
    return v->kind == V_STR && v->u.str.len == n && !memcmp(v->u.str.s, s, n);
}

// An int operand (or bool) of a tensor's description.
static int want_int(Pickle *k, int v, const char *what, int64_t *out) {
    const Val *x = &k->v[v];
    if (x->kind != V_INT && x->kind != V_BOOL)
        return pk_fail(k, "%s is %s, expected an int", what, vkind_name[x->kind]);
    *out = x->u.i;
    return 0;
}

// BINPERSID: ('storage', <storage global>, key, location, numel) -> a storage whose
// bytes are the zip entry <archive>/data/<key>. The same key is the same storage.
static int pk_persistent(Pickle *k, int pid) {
    const Val *t = &k->v[pid];
    if (t->kind != V_TUPLE || t->n != 5 || !str_is(&k->v[t->items[0]], "storage"))
        return pk_fail(k, "persistent id is not ('storage', type, key, location, numel)");
    const Val *ty = &k->v[t->items[1]], *key = &k->v[t->items[2]], *loc = &k->v[t->items[3]];
    if (ty->kind != V_GLOBAL || !global_is_storage(ty->u.g))
        return pk_fail(k, "persistent id names %s, not a storage type", vkind_name[ty->kind]);
    if (key->kind != V_STR || loc->kind != V_STR)
        return pk_fail(k, "persistent id: storage key and location must be strings");
    int64_t numel = 0;
    if (want_int(k, t->items[4], "the storage's element count", &numel)) return -1;
    char kb[80];
    quote(kb, sizeof kb, key->u.str.s, key->u.str.len);
    if (numel < 0) return pk_fail(k, "storage '%s' has a negative size", kb);
    // its bytes: <prefix>data/<key>, at least numel elements
    char name[512];
    if (k->plen + 5 + key->u.str.len >= sizeof name)
        return pk_fail(k, "storage key '%s' is too long", kb);
    memcpy(name, k->prefix, k->plen);
    memcpy(name + k->plen, "data/", 5);
    memcpy(name + k->plen + 5, key->u.str.s, key->u.str.len);
    size_t nlen = k->plen + 5 + key->u.str.len;
    ZipEntry *e = zip_find(k->zip, name, nlen);
    if (!e) return pk_fail(k, "storage '%s' has no entry %.*s in the archive", kb, (int)nlen, name);
    if (e->storage) {                  // seen before: the same storage (shared)
        const Storage *s = &k->storages[e->storage - 1];
        if (s->dtype != ty->u.g || s->numel != (uint64_t)numel)
            return pk_fail(k, "storage '%s' is declared twice with different types or sizes", kb);
        int v = pk_new(k, V_STORAGE);
        if (v >= 0) k->v[v].u.storage = e->storage - 1;
        return v;
    }
    uint64_t es = (uint64_t)globals[ty->u.g].esize;
    if ((uint64_t)numel > e->usize / es)
        return pk_fail(k, "storage '%s' declares %lld elements of %llu bytes, its entry holds "
                       "only %llu bytes", kb, (long long)numel, (unsigned long long)es,
                       (unsigned long long)e->usize);
    const unsigned char *data = zip_data(k->zip, e, k->err, k->errlen);
    if (!data) return -1;
    if (grow((void **)&k->storages, &k->capst, k->nst + 1, sizeof *k->storages))
        return pk_fail(k, "out of memory");
    k->storages[k->nst] = (Storage){key->u.str.s, key->u.str.len, ty->u.g, (uint64_t)numel, data};
    e->storage = k->nst + 1;
    int v = pk_new(k, V_STORAGE);
    if (v >= 0) k->v[v].u.storage = k->nst++;
    return v;
}

// _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]):
// checks that every element the view reaches lies inside the storage.
static int pk_rebuild_tensor(Pickle *k, const Val *args) {
    if (args->n < 6 || args->n > 7)
        return pk_fail(k, "_rebuild_tensor_v2 takes 6 or 7 arguments, got %d", args->n);
    const Val *st = &k->v[args->items[0]], *sz = &k->v[args->items[2]],
              *sd = &k->v[args->items[3]], *hooks = &k->v[args->items[5]];
    if (st->kind != V_STORAGE)
        return pk_fail(k, "_rebuild_tensor_v2: argument 1 is %s, expected a storage",
                       vkind_name[st->kind]);
    if (sz->kind != V_TUPLE || sd->kind != V_TUPLE || sz->n != sd->n)
        return pk_fail(k, "_rebuild_tensor_v2: size and stride must be tuples of one length");
    if (sz->n > TENSOR_MAX_DIMS)
        return pk_fail(k, "a tensor of %d dimensions (at most %d are read)", sz->n, TENSOR_MAX_DIMS);
    if (hooks->kind != V_DICT || hooks->n)
        return pk_fail(k, "_rebuild_tensor_v2: backward hooks must be an empty OrderedDict");
    if (args->n == 7 && k->v[args->items[6]].kind != V_DICT && k->v[args->items[6]].kind != V_NONE)
        return pk_fail(k, "_rebuild_tensor_v2: metadata must be a dict");
    TensorRef t = {.storage = st->u.storage, .ndim = sz->n};
    int64_t off = 0, x = 0;
    if (want_int(k, args->items[1], "the storage offset", &off) ||
        want_int(k, args->items[4], "requires_grad", &x))
        return -1;
    const Storage *s = &k->storages[t.storage];
    if (off < 0 || (uint64_t)off > s->numel)
        return pk_fail(k, "storage offset %lld lies past the storage's %llu elements",
                       (long long)off, (unsigned long long)s->numel);
    t.offset = (uint64_t)off;
    uint64_t last = 0, numel = 1;      // the highest element index the view reaches
    for (int d = 0; d < t.ndim; d++) {
        int64_t a = 0, b = 0;
        if (want_int(k, sz->items[d], "a tensor size", &a) ||
            want_int(k, sd->items[d], "a tensor stride", &b))
            return -1;
        if (a < 0 || b < 0 || a > (int64_t)1 << 40 || b > (int64_t)1 << 40)
            return pk_fail(k, "tensor size %lld / stride %lld out of range", (long long)a,
                           (long long)b);
        t.size[d] = (uint64_t)a;
        t.stride[d] = (uint64_t)b;
        if (a == 0) numel = 0;
        else if (numel && __builtin_mul_overflow(numel, (uint64_t)a, &numel))
            return pk_fail(k, "tensor element count overflows");
    }
    if (numel) {
        for (int d = 0; d < t.ndim; d++) {
            uint64_t span;
            if (__builtin_mul_overflow(t.size[d] - 1, t.stride[d], &span) ||
                __builtin_add_overflow(last, span, &last))
                return pk_fail(k, "a tensor view spans more than 2^64 elements");
        }
        if (last >= s->numel - t.offset)
            return pk_fail(k, "a tensor view (offset %llu) reaches element %llu of a storage of "
                           "%llu elements", (unsigned long long)t.offset,
                           (unsigned long long)(t.offset + last), (unsigned long long)s->numel);
        if (numel > s->numel)
            return pk_fail(k, "a tensor of %llu elements on a storage of %llu: overlapping "
                           "(expanded) views are not read", (unsigned long long)numel,
                           (unsigned long long)s->numel);
    }
    if (grow((void **)&k->tensors, &k->capt, k->nt + 1, sizeof *k->tensors))
        return pk_fail(k, "out of memory");
    k->tensors[k->nt] = t;
    int v = pk_new(k, V_TENSOR);
    if (v >= 0) k->v[v].u.tensor = k->nt++;
    return v;
}

// REDUCE: call one of the allowed globals with a tuple of arguments.
static int pk_reduce(Pickle *k, int fn, int args) {
    const Val *f = &k->v[fn], *a = &k->v[args];
    if (f->kind != V_GLOBAL) return pk_fail(k, "REDUCE on %s, not a callable", vkind_name[f->kind]);
    if (a->kind != V_TUPLE) return pk_fail(k, "REDUCE arguments are %s, not a tuple", vkind_name[a->kind]);
    switch (f->u.g) {
    case G_ORDERED_DICT:
        if (a->n) return pk_fail(k, "OrderedDict() with arguments is not read");
        return pk_new(k, V_DICT);
    case G_REBUILD_TENSOR_V2:
        return pk_rebuild_tensor(k, a);
    case G_REBUILD_PARAMETER:     // (tensor, requires_grad, hooks): the tensor itself
        if (a->n != 3 || k->v[a->items[0]].kind != V_TENSOR)
            return pk_fail(k, "_rebuild_parameter expects (tensor, requires_grad, hooks)");
        return a->items[0];
    default:
        return pk_fail(k, "REDUCE on %s.%s: storages are not callable here",
                       globals[f->u.g].module, globals[f->u.g].name);
    }
}

// GLOBAL "module\nname\n" (or STACK_GLOBAL): only names in the table are accepted.
static int pk_global(Pickle *k, const char *mod, size_t mlen, const char *name, size_t nlen) {
    for (int g = 0; g < G_COUNT; g++)
        if (strlen(globals[g].module) == mlen && !memcmp(globals[g].module, mod, mlen) &&
            strlen(globals[g].name) == nlen && !memcmp(globals[g].name, name, nlen)) {
            int v = pk_new(k, V_GLOBAL);
            if (v >= 0) k->v[v].u.g = g;
            return v;
        }
    char a[80], b[80];
    return pk_fail(k, "global '%s.%s' is not allowed (a torch.save state dict needs only "
                   "collections.OrderedDict, torch._utils._rebuild_tensor_v2 / "
                   "_rebuild_parameter and torch.*Storage)",
                   quote(a, sizeof a, mod, mlen), quote(b, sizeof b, name, nlen));
}

// A newline-terminated argument of GLOBAL.
static int pk_line(Pickle *k, const char **s, size_t *n) {
    const unsigned char *nl = memchr(k->p, '\n', (size_t)(k->end - k->p));
    if (!nl) return pk_fail(k, "GLOBAL without a newline (truncated)");
    *s = (const char *)k->p;
    *n = (size_t)(nl - k->p);
    k->p = nl + 1;
    return 0;
}

static int pk_string(Pickle *k, VKind kind, size_t n, const char *op) {
    if (need_bytes(k, n, op)) return -1;
    if (n > UINT32_MAX) return pk_fail(k, "%s of %zu bytes is too long", op, n);
    int v = pk_new(k, kind);
    if (v < 0) return -1;
    k->v[v].u.str.s = (const char *)k->p;
    k->v[v].u.str.len = (uint32_t)n;
    k->p += n;
    return pk_push(k, v);
}

static int pk_int(Pickle *k, int64_t x) {
    int v = pk_new(k, V_INT);
    if (v < 0) return -1;
    k->v[v].u.i = x;
    return pk_push(k, v);
}

// Memo store at index i of the stack's top value.
static int pk_memo_put(Pickle *k, uint64_t i) {
    if (!k->ns) return pk_fail(k, "memo put with an empty stack");
    if (i >= PICKLE_MAX_MEMO) return pk_fail(k, "memo index %llu is too large", (unsigned long long)i);
    if ((int)i >= k->nmemo) {
        int old = k->nmemo, cap = k->nmemo;
        if (grow((void **)&k->memo, &cap, (int)i + 1, sizeof *k->memo)) return pk_fail(k, "out of memory");
        for (int j = old; j < cap; j++) k->memo[j] = -1;
        k->nmemo = cap;
    }
    if (k->memo[i] < 0) k->memo_count++;
    k->memo[i] = k->stack[k->ns - 1];
    return 0;
}

static int pk_memo_get(Pickle *k, uint64_t i) {
    if (i >= (uint64_t)k->nmemo || k->memo[i] < 0)
        return pk_fail(k, "memo get of unset index %llu", (unsigned long long)i);
    return pk_push(k, k->memo[i]);
}

// SETITEMS / SETITEM: the pairs above `from` go into the dict below them.
static int pk_setitems(Pickle *k, int from, const char *op) {
    if ((k->ns - from) % 2) return pk_fail(k, "%s with an odd number of values", op);
    int floor = k->nm ? k->marks[k->nm - 1] : 0;
    if (from - 1 < floor) return pk_fail(k, "%s without a dict", op);
    int d = k->stack[from - 1];
    if (k->v[d].kind != V_DICT) return pk_fail(k, "%s on %s, not a dict", op, vkind_name[k->v[d].kind]);
    for (int i = from; i < k->ns; i++)
        if (pk_append(k, d, k->stack[i])) return -1;
    k->ns = from;
    return 0;
}

static int pk_appends(Pickle *k, int from, const char *op) {
    int floor = k->nm ? k->marks[k->nm - 1] : 0;
    if (from - 1 < floor) return pk_fail(k, "%s without a list", op);
    int l = k->stack[from - 1];
    if (k->v[l].kind != V_LIST) return pk_fail(k, "%s on %s, not a list", op, vkind_name[k->v[l].kind]);
    for (int i = from; i < k->ns; i++)
        if (pk_append(k, l, k->stack[i])) return -1;
    k->ns = from;
    return 0;
}

// Run one opcode. Returns 1 at STOP, 0 to go on, -1 on error.
static int pk_step(Pickle *k) {
    unsigned op = *k->p++;
    const unsigned char *a = k->p;
    int x, y, from;
    switch (op) {
    case 0x80:   // PROTO
        if (need_bytes(k, 1, "PROTO")) return -1;
        if (*a > 5) return pk_fail(k, "pickle protocol %u is not read (2..5 are)", *a);
        k->p++;
        return 0;
    case 0x95:   // FRAME (protocol 4): a length to skip
        if (need_bytes(k, 8, "FRAME")) return -1;
        k->p += 8;
        return 0;
    case '.':  return 1;                                           // STOP
    case '(':                                                      // MARK
        if (grow((void **)&k->marks, &k->capm, k->nm + 1, sizeof *k->marks))
            return pk_fail(k, "out of memory");
        k->marks[k->nm++] = k->ns;
        return 0;
    case '}': return pk_push(k, pk_new(k, V_DICT));               // EMPTY_DICT
    case ']': return pk_push(k, pk_new(k, V_LIST));               // EMPTY_LIST
    case ')': return pk_push(k, pk_new(k, V_TUPLE));              // EMPTY_TUPLE
    case 'N': return pk_push(k, pk_new(k, V_NONE));               // NONE
    case 0x88: case 0x89:                                          // NEWTRUE, NEWFALSE
        if ((x = pk_new(k, V_BOOL)) < 0) return -1;
        k->v[x].u.i = op == 0x88;
        return pk_push(k, x);
    case 'K': if (need_bytes(k, 1, "BININT1")) return -1; k->p += 1; return pk_int(k, a[0]);
    case 'M': if (need_bytes(k, 2, "BININT2")) return -1; k->p += 2; return pk_int(k, rd16(a));
    case 'J': if (need_bytes(k, 4, "BININT")) return -1; k->p += 4; return pk_int(k, (int32_t)rd32(a));
    case 0x8a: {                                                   // LONG1
        if (need_bytes(k, 1, "LONG1") || need_bytes(k, 1u + a[0], "LONG1")) return -1;
        unsigned n = a[0];
        if (n > 8) return pk_fail(k, "an integer of %u bytes is too large", n);
        uint64_t u = 0;
        for (unsigned i = 0; i < n; i++) u |= (uint64_t)a[1 + i] << (8 * i);
        if (n && n < 8 && (a[n] & 0x80)) u |= ~(uint64_t)0 << (8 * n);   // sign-extend
        k->p += 1 + n;
        return pk_int(k, (int64_t)u);
    }
    case 'G': {                                                    // BINFLOAT (big-endian)
        if (need_bytes(k, 8, "BINFLOAT")) return -1;
        uint64_t u = 0;
        for (int i = 0; i < 8; i++) u = u << 8 | a[i];
        k->p += 8;
        if ((x = pk_new(k, V_FLOAT)) < 0) return -1;
        memcpy(&k->v[x].u.f, &u, 8);
        return pk_push(k, x);
    }
    case 'X': if (need_bytes(k, 4, "BINUNICODE")) return -1; k->p += 4; return pk_string(k, V_STR, rd32(a), "BINUNICODE");
    case 0x8c: if (need_bytes(k, 1, "SHORT_BINUNICODE")) return -1; k->p += 1; return pk_string(k, V_STR, a[0], "SHORT_BINUNICODE");
    case 'T': if (need_bytes(k, 4, "BINSTRING")) return -1; k->p += 4; return pk_string(k, V_STR, rd32(a), "BINSTRING");
    case 'U': if (need_bytes(k, 1, "SHORT_BINSTRING")) return -1; k->p += 1; return pk_string(k, V_STR, a[0], "SHORT_BINSTRING");
    case 'B': if (need_bytes(k, 4, "BINBYTES")) return -1; k->p += 4; return pk_string(k, V_BYTES, rd32(a), "BINBYTES");
    case 'C': if (need_bytes(k, 1, "SHORT_BINBYTES")) return -1; k->p += 1; return pk_string(k, V_BYTES, a[0], "SHORT_BINBYTES");
    case 'q': if (need_bytes(k, 1, "BINPUT")) return -1; k->p += 1; return pk_memo_put(k, a[0]);
    case 'r': if (need_bytes(k, 4, "LONG_BINPUT")) return -1; k->p += 4; return pk_memo_put(k, rd32(a));
    case 0x94: return pk_memo_put(k, (uint64_t)k->memo_count);   // MEMOIZE
    case 'h': if (need_bytes(k, 1, "BINGET")) return -1; k->p += 1; return pk_memo_get(k, a[0]);
    case 'j': if (need_bytes(k, 4, "LONG_BINGET")) return -1; k->p += 4; return pk_memo_get(k, rd32(a));
    case 't':                                                      // TUPLE
        if ((from = pk_pop_mark(k, "TUPLE")) < 0) return -1;
        return pk_push(k, pk_collect(k, V_TUPLE, from));
    case 'l':                                                      // LIST
        if ((from = pk_pop_mark(k, "LIST")) < 0) return -1;
        return pk_push(k, pk_collect(k, V_LIST, from));
    case 'd':                                                      // DICT
        if ((from = pk_pop_mark(k, "DICT")) < 0) return -1;
        if ((k->ns - from) % 2) return pk_fail(k, "DICT with an odd number of values");
        return pk_push(k, pk_collect(k, V_DICT, from));
    case 0x85: case 0x86: case 0x87: {                             // TUPLE1..3
        int n = (int)op - 0x84, floor = k->nm ? k->marks[k->nm - 1] : 0;
        if (k->ns - floor < n) return pk_fail(k, "TUPLE%d needs %d values", n, n);
        return pk_push(k, pk_collect(k, V_TUPLE, k->ns - n));
    }
    case 's':                                                      // SETITEM
        if (k->ns < 2) return pk_fail(k, "SETITEM needs a dict, a key and a value");
        return pk_setitems(k, k->ns - 2, "SETITEM");
    case 'u':                                                      // SETITEMS
        if ((from = pk_pop_mark(k, "SETITEMS")) < 0) return -1;
        return pk_setitems(k, from, "SETITEMS");
    case 'a':                                                      // APPEND
        if (k->ns < 1) return pk_fail(k, "APPEND needs a list and a value");
        return pk_appends(k, k->ns - 1, "APPEND");
    case 'e':                                                      // APPENDS
        if ((from = pk_pop_mark(k, "APPENDS")) < 0) return -1;
        return pk_appends(k, from, "APPENDS");
    case '0': return pk_pop(k, "POP") < 0 ? -1 : 0;                // POP
    case '1': if ((from = pk_pop_mark(k, "POP_MARK")) < 0) return -1; k->ns = from; return 0;
    case '2':                                                      // DUP
        if ((x = pk_pop(k, "DUP")) < 0) return -1;
        return pk_push(k, x) || pk_push(k, x) ? -1 : 0;
    case 'c': {                                                    // GLOBAL
        const char *m = NULL, *n = NULL;
        size_t ml = 0, nl = 0;
        if (pk_line(k, &m, &ml) || pk_line(k, &n, &nl)) return -1;
        return pk_push(k, pk_global(k, m, ml, n, nl));
    }
    case 0x93: {                                                   // STACK_GLOBAL
        if ((y = pk_pop(k, "STACK_GLOBAL")) < 0 || (x = pk_pop(k, "STACK_GLOBAL")) < 0) return -1;
        if (k->v[x].kind != V_STR || k->v[y].kind != V_STR)
            return pk_fail(k, "STACK_GLOBAL needs two strings");
        return pk_push(k, pk_global(k, k->v[x].u.str.s, k->v[x].u.str.len, k->v[y].u.str.s,
                                    k->v[y].u.str.len));
    }
    case 'Q':                                                      // BINPERSID
        if ((x = pk_pop(k, "BINPERSID")) < 0) return -1;
        return pk_push(k, pk_persistent(k, x));
    case 'R':                                                      // REDUCE
        if ((y = pk_pop(k, "REDUCE")) < 0 || (x = pk_pop(k, "REDUCE")) < 0) return -1;
        return pk_push(k, pk_reduce(k, x, y));
    case 'b':                                                      // BUILD
        if ((y = pk_pop(k, "BUILD")) < 0) return -1;
        if (!k->ns || k->ns <= (k->nm ? k->marks[k->nm - 1] : 0))
            return pk_fail(k, "BUILD without an object");
        x = k->stack[k->ns - 1];
        // an OrderedDict's attributes (a state_dict's _metadata): read and dropped
        if (k->v[x].kind != V_DICT || (k->v[y].kind != V_DICT && k->v[y].kind != V_NONE))
            return pk_fail(k, "BUILD on %s is not read (only a dict's attributes are)",
                           vkind_name[k->v[x].kind]);
        return 0;
    default:
        return pk_fail(k, "opcode 0x%02x ('%c') is not allowed in a torch.save file", op,
                       op >= 0x20 && op < 0x7f ? (int)op : '?');
    }
}

// Run data.pkl to STOP; the root value's index, or -1.
static int pk_run(Pickle *k) {
    while (k->p < k->end) {
        int r = pk_step(k);
        if (r < 0) return -1;
        if (r == 1) {
            if (k->ns < 1) return pk_fail(k, "STOP with an empty stack");
            return k->stack[k->ns - 1];
        }
    }
    return pk_fail(k, "the pickle ends without STOP (truncated)");
}

static void pk_free(Pickle *k) {
    for (int i = 0; i < k->nv; i++) free(k->v[i].items);
    free(k->v);
    free(k->stack);
    free(k->marks);
    free(k->memo);
    free(k->storages);
    free(k->tensors);
}

// ----------------------------------------------------------------------------
// 4. tensors: strided storage -> contiguous float32 / int64

// IEEE half -> float, exactly (subnormals, infinities, NaN payloads kept).
static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
    if (e == 0x1f) u = sign | 0x7f800000u | m << 13;
    else if (e) u = sign | (e + 112) << 23 | m << 13;
    else if (!m) u = sign;
    else {                                   // subnormal: normalise the mantissa
        e = 113;
        while (!(m & 0x400)) { m <<= 1; e--; }
        u = sign | e << 23 | (m & 0x3ff) << 13;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// Element i of a storage as float (float types) or int64 (LongStorage).
static void load_elem(const Storage *s, uint64_t i, void *dst) {
    const unsigned char *p = s->data;
    switch (s->dtype) {
    case G_FLOAT: memcpy(dst, p + 4 * i, 4); break;
    case G_HALF: { uint16_t h; memcpy(&h, p + 2 * i, 2); *(float *)dst = half_to_float(h); break; }
    case G_BFLOAT16: {
        uint16_t h; memcpy(&h, p + 2 * i, 2);
        uint32_t u = (uint32_t)h << 16;
        memcpy(dst, &u, 4);
        break;
    }
    case G_DOUBLE: { double d; memcpy(&d, p + 8 * i, 8); *(float *)dst = (float)d; break; }
    default: memcpy(dst, p + 8 * i, 8); break;   // G_LONG
    }
}

// Gather tensor t into a new NamedTensor (float32 from float types, int64 from long).
static int tensor_gather(const Pickle *k, const TensorRef *t, NamedTensor *out, const char *name,
                         char *err, size_t errlen) {
    const Storage *s = &k->storages[t->storage];
    if (s->dtype != G_FLOAT && s->dtype != G_HALF && s->dtype != G_BFLOAT16 &&
        s->dtype != G_DOUBLE && s->dtype != G_LONG) {
        seterr(err, errlen, "%s: tensor '%s' is of torch.%s (float32, float16, bfloat16, "
               "float64 and int64 are read)", k->path, name, globals[s->dtype].name);
        return -1;
    }
    if (t->ndim > MAX_DIMS) {
        seterr(err, errlen, "%s: tensor '%s' has %d dimensions (at most %d are read)", k->path,
               name, t->ndim, MAX_DIMS);
        return -1;
    }
    uint64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->size[d] > INT_MAX) {
            seterr(err, errlen, "%s: tensor '%s' has a dimension of %llu", k->path, name,
                   (unsigned long long)t->size[d]);
            return -1;
        }
        out->shape[d] = (int)t->size[d];
        numel *= t->size[d];          // <= storage numel: checked when it was built
    }
    out->ndim = t->ndim;
    out->numel = (long)numel;
    out->dtype = s->dtype == G_LONG ? DT_I64 : DT_F32;
    size_t es = out->dtype == DT_I64 ? 8 : 4;
    out->data = numel ? malloc(numel * es) : NULL;
    if (numel && !out->data) { seterr(err, errlen, "%s: out of memory", k->path); return -1; }
    uint64_t idx[MAX_DIMS] = {0};
    unsigned char *dst = out->data;
    for (uint64_t i = 0; i < numel; i++) {
        uint64_t src = t->offset;
        for (int d = 0; d < t->ndim; d++) src += idx[d] * t->stride[d];
        load_elem(s, src, dst + i * es);
        for (int d = t->ndim - 1; d >= 0; d--) {       // next index, row-major
            if (++idx[d] < t->size[d]) break;
            idx[d] = 0;
        }
    }
    return 0;
}

// ----------------------------------------------------------------------------
// 5. the state dict of a torch.save file

// The value of string key `key` in dict d (the last such pair), or -1.
static int dict_get(const Pickle *k, int d, const char *key) {
    const Val *v = &k->v[d];
    for (int i = v->n - 2; i >= 0; i -= 2)
        if (str_is(&k->v[v->items[i]], key)) return v->items[i + 1];
    return -1;
}

static int cmp_named(const void *a, const void *b) {
    return strcmp(((const NamedTensor *)a)->name, ((const NamedTensor *)b)->name);
}

// Convert the dict sd (name -> tensor) into tf, stripping a "module." prefix.
static int state_from_dict(Pickle *k, int sd, TensorFile *tf, char *err, size_t errlen) {
    const Val *d = &k->v[sd];
    tf->t = calloc((size_t)d->n / 2 + 1, sizeof *tf->t);
    if (!tf->t) { seterr(err, errlen, "%s: out of memory", k->path); return -1; }
    for (int i = 0; i + 1 < d->n; i += 2) {
        const Val *key = &k->v[d->items[i]], *val = &k->v[d->items[i + 1]];
        char kb[80];
        if (key->kind != V_STR) {
            seterr(err, errlen, "%s: the state dict has a key that is %s, not a string",
                   k->path, vkind_name[key->kind]);
            return -1;
        }
        const char *s = key->u.str.s;
        size_t n = key->u.str.len;
        quote(kb, sizeof kb, s, n);
        if (val->kind != V_TENSOR) {
            seterr(err, errlen, "%s: state dict entry '%s' is %s, not a tensor", k->path, kb,
                   vkind_name[val->kind]);
            return -1;
        }
        if (n > 7 && !memcmp(s, "module.", 7)) { s += 7; n -= 7; }   // DataParallel
        int ok = n > 0 && n < 1024 && !memchr(s, 0, n);
        for (size_t j = 0; ok && j < n; j++) ok = (unsigned char)s[j] >= 0x20 && s[j] != 0x7f;
        if (!ok) {
            seterr(err, errlen, "%s: state dict entry '%s' has an empty, overlong or "
                   "unprintable name", k->path, kb);
            return -1;
        }
        NamedTensor *t = &tf->t[tf->n++];
        t->name = strndup(s, n);
        if (!t->name) { seterr(err, errlen, "%s: out of memory", k->path); return -1; }
        if (tensor_gather(k, &k->tensors[val->u.tensor], t, t->name, err, errlen)) return -1;
    }
    // names are unique in a Python dict; a file that repeats one is not from torch.save
    NamedTensor *sorted = malloc(((size_t)tf->n + 1) * sizeof *sorted);
    if (!sorted) { seterr(err, errlen, "%s: out of memory", k->path); return -1; }
    memcpy(sorted, tf->t, (size_t)tf->n * sizeof *sorted);
    qsort(sorted, (size_t)tf->n, sizeof *sorted, cmp_named);
    int rc = 0;
    for (int i = 1; i < tf->n && !rc; i++)
        if (!strcmp(sorted[i - 1].name, sorted[i].name)) {
            seterr(err, errlen, "%s: state dict name '%s' appears twice", k->path, sorted[i].name);
            rc = -1;
        }
    free(sorted);
    return rc;
}

// Names and keys quoted in messages come from the file: keep the message one line of
// printable text whatever bytes they hold.
static void printable_line(char *err) {
    for (unsigned char *p = (unsigned char *)err; p && *p; p++)
        if (*p < 0x20 || *p == 0x7f) *p = '?';
}

int pth_read_state_memory(TensorFile *tf, const void *data, size_t n, const char *name,
                          char *err, size_t errlen) {
    memset(tf, 0, sizeof *tf);
    Zip z = {.buf = data, .size = n, .path = name};
    Pickle k = {.zip = &z, .path = name, .err = err, .errlen = errlen};
    int rc = -1;
    if (zip_open(&z, err, errlen)) goto done;
    // <archive>/data.pkl: the archive's one top-level folder
    ZipEntry *pkl = NULL;
    for (int i = 0; i < z.n && !pkl; i++) {
        const ZipEntry *e = &z.e[i];
        const char *slash = memchr(e->name, '/', e->nlen);
        if (slash && (size_t)(e->nlen - (slash + 1 - e->name)) == 8 && !memcmp(slash + 1, "data.pkl", 8))
            pkl = &z.e[i];
    }
    if (!pkl) {
        seterr(err, errlen, "%s: a zip archive without <archive>/data.pkl: not a torch.save file", name);
        goto done;
    }
    k.prefix = pkl->name;
    k.plen = (size_t)pkl->nlen - 8;
    if (!(k.start = k.p = zip_data(&z, pkl, err, errlen))) goto done;
    k.end = k.p + pkl->usize;
    int root = pk_run(&k);
    if (root < 0) goto done;
    if (k.v[root].kind != V_DICT) {
        seterr(err, errlen, "%s: the saved object is %s, expected a dict (a state dict, or a "
               "checkpoint holding one under \"model\" or \"state_dict\")", name,
               vkind_name[k.v[root].kind]);
        goto done;
    }
    int sd = root;
    const char *const wrappers[] = {"model", "state_dict"};
    for (int i = 0; i < 2 && sd == root; i++) {
        int w = dict_get(&k, root, wrappers[i]);
        if (w >= 0 && k.v[w].kind == V_DICT) sd = w;
    }
    tf->config = strdup("");
    if (!tf->config) { seterr(err, errlen, "%s: out of memory", name); goto done; }
    rc = state_from_dict(&k, sd, tf, err, errlen);
done:
    pk_free(&k);
    zip_close(&z);
    if (rc) {
        tensorfile_free(tf);
        printable_line(err);
    }
    return rc;
}

int pth_read_state(TensorFile *tf, const char *path, char *err, size_t errlen) {
    memset(tf, 0, sizeof *tf);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) { seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno)); return -1; }
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        seterr(err, errlen, "%s: not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_size == 0) {
        seterr(err, errlen, "%s: empty file, not a torch.save file", path);
        close(fd);
        return -1;
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (map == MAP_FAILED) { seterr(err, errlen, "%s: cannot map: %s", path, strerror(errno)); return -1; }
    int rc = pth_read_state_memory(tf, map, (size_t)st.st_size, path, err, errlen);
    munmap(map, (size_t)st.st_size);
    return rc;
}

// ----------------------------------------------------------------------------
// 6. names: torchvision and Detectron2 <-> VirTex
//
// A torchvision ResNet's state dict is VirTex's visual.cnn.* without the prefix (and
// with an fc layer VirTex does not have). Detectron2 renames the same tensors as the
// original's detectron2_backbone_state_dict() does: layer1..4 -> res2..res5, bnN ->
// convN.norm, downsample.0/1 -> shortcut / shortcut.norm, and "stem." before the rest.

static const char *const d2_rename[][2] = {
    {"layer1", "res2"}, {"layer2", "res3"}, {"layer3", "res4"}, {"layer4", "res5"},
    {"bn1", "conv1.norm"}, {"bn2", "conv2.norm"}, {"bn3", "conv3.norm"},
    {"downsample.0", "shortcut"}, {"downsample.1", "shortcut.norm"},
};

// Replace every `from` in buf (NUL-terminated, cap bytes) by `to`; -1 if it overflows.
static int replace_all(char *buf, size_t cap, const char *from, const char *to) {
    char out[1024];
    size_t k = 0, fl = strlen(from), tl = strlen(to);
    for (const char *p = buf; *p;) {
        if (!strncmp(p, from, fl)) {
            if (k + tl >= sizeof out) return -1;
            memcpy(out + k, to, tl); k += tl; p += fl;
        } else {
            if (k + 1 >= sizeof out) return -1;
            out[k++] = *p++;
        }
    }
    if (k >= cap) return -1;
    memcpy(buf, out, k);
    buf[k] = 0;
    return 0;
}

// torchvision name -> Detectron2 name (into out).
static int detectron2_name(const char *tv, char *out, size_t cap) {
    char buf[1024];
    if (snprintf(buf, sizeof buf, "%s", tv) >= (int)sizeof buf) return -1;
    for (size_t i = 0; i < sizeof d2_rename / sizeof d2_rename[0]; i++)
        if (replace_all(buf, sizeof buf, d2_rename[i][0], d2_rename[i][1])) return -1;
    int n = snprintf(out, cap, "%s%s", strncmp(buf, "res", 3) ? "stem." : "", buf);
    return n < 0 || (size_t)n >= cap ? -1 : 0;
}

// Detectron2 name -> torchvision name (the renaming undone, longest patterns first).
static int torchvision_from_detectron2(const char *d2, char *out, size_t cap) {
    if (snprintf(out, cap, "%s", strncmp(d2, "stem.", 5) ? d2 : d2 + 5) >= (int)cap) return -1;
    static const int order[] = {8, 7, 4, 5, 6, 0, 1, 2, 3};
    for (int i = 0; i < 9; i++)
        if (replace_all(out, cap, d2_rename[order[i]][1], d2_rename[order[i]][0])) return -1;
    return 0;
}

// ----------------------------------------------------------------------------
// 7. import: a state dict onto a Model

#define LIST_NAMES 6

// Append name to a list message (the first LIST_NAMES, then a count at the end).
static void list_add(char *buf, size_t len, int *count, const char *name) {
    size_t k = strlen(buf);
    if (*count < LIST_NAMES) snprintf(buf + k, len - k, "%s'%s'", *count ? ", " : "", name);
    (*count)++;
}

// Does name start with one of the prefixes ("a.|b." or "a.,b.")?
static int has_prefix(const char *name, const char *prefixes) {
    for (const char *p = prefixes; p && *p;) {
        size_t n = strcspn(p, "|,");
        if (n && !strncmp(name, p, n)) return 1;
        p += n + (p[n] != 0);
    }
    return 0;
}

// Largest index+1 after `prefix` ("textual.transformer.layers.") among the names.
static int count_indexed(const TensorFile *tf, char *const *names, const char *prefix) {
    size_t n = strlen(prefix);
    int best = 0;
    for (int i = 0; i < tf->n; i++)
        if (names[i] && !strncmp(names[i], prefix, n)) {
            long v = strtol(names[i] + n, NULL, 10);
            if (v >= 0 && v < 100000 && v + 1 > best) best = (int)v + 1;
        }
    return best;
}

static const NamedTensor *by_name(const TensorFile *tf, char *const *names, const char *name) {
    for (int i = 0; i < tf->n; i++)
        if (names[i] && !strcmp(names[i], name)) return &tf->t[i];
    return NULL;
}

// Compare the architecture the tensors describe with the model's config, so that a
// wrong config is reported as such rather than as a list of shape mismatches. The
// number of attention heads leaves no trace in the shapes and cannot be checked.
static int check_architecture(const Model *m, const TensorFile *tf, char *const *names,
                              char *err, size_t errlen) {
    const NamedTensor *conv1 = by_name(tf, names, "visual.cnn.conv1.weight");
    int blocks[4];
    for (int l = 0; l < 4; l++) {
        char p[64];
        snprintf(p, sizeof p, "visual.cnn.layer%d.", l + 1);
        blocks[l] = count_indexed(tf, names, p);
    }
    if (conv1 && conv1->ndim == 4 && blocks[0]) {
        int bw = conv1->shape[0], mw = m->cfg.MODEL.VISUAL.BASE_WIDTH;
        const int *mb = m->cnn.layer_blocks;
        if (bw != mw || memcmp(blocks, mb, sizeof blocks)) {
            seterr(err, errlen, "the file holds a ResNet of stem width %d and blocks %d,%d,%d,%d; "
                   "the config describes width %d and blocks %d,%d,%d,%d (MODEL.VISUAL.NAME %s, "
                   "MODEL.VISUAL.BASE_WIDTH)", bw, blocks[0], blocks[1], blocks[2], blocks[3],
                   mw, mb[0], mb[1], mb[2], mb[3], m->cfg.MODEL.VISUAL.NAME);
            return -1;
        }
    }
    const NamedTensor *words = by_name(tf, names, "textual.embedding.words.weight"),
                      *pos = by_name(tf, names, "textual.embedding.positions.weight"),
                      *lin1 = by_name(tf, names, "textual.transformer.layers.0.linear1.weight");
    if (words && pos && lin1 && words->ndim == 2 && pos->ndim == 2 && lin1->ndim == 2 &&
        m->task != TASK_TOKEN_CLASSIFICATION && m->task != TASK_MULTILABEL_CLASSIFICATION) {
        int L = count_indexed(tf, names, "textual.transformer.layers.");
        int V = words->shape[0], H = words->shape[1], F = lin1->shape[0], T = pos->shape[0];
        if (L != m->L || H != m->D || F != m->F || V != m->V || T != m->max_len) {
            seterr(err, errlen, "the file holds a textual head L%d H%d F%d with %d words and %d "
                   "positions; the config describes L%d H%d F%d, %d words, %d positions "
                   "(MODEL.TEXTUAL.NAME %s, DATA.VOCAB_SIZE, DATA.MAX_CAPTION_LENGTH)", L, H, F,
                   V, T, m->L, m->D, m->F, m->V, m->max_len, m->cfg.MODEL.TEXTUAL.NAME);
            return -1;
        }
    }
    return 0;
}

// The VirTex name of each tensor of tf (NULL: dropped), by the layout its names show.
static const char *map_names(const TensorFile *tf, char **names, char *err, size_t errlen) {
    int virtex = 0, d2 = 0, tv = 0;
    for (int i = 0; i < tf->n; i++) {
        const char *s = tf->t[i].name;
        virtex |= !strncmp(s, "visual.", 7) || !strncmp(s, "textual.", 8) ||
                  !strncmp(s, "backward_textual.", 17);
        d2 |= !strncmp(s, "stem.", 5) || !strncmp(s, "res2.", 5);
        tv |= !strcmp(s, "conv1.weight") || !strncmp(s, "layer1.", 7);
    }
    const char *layout = virtex ? "VirTex" : d2 ? "Detectron2" : tv ? "torchvision" : NULL;
    if (!layout) {
        seterr(err, errlen, "no VirTex (visual.*, textual.*), torchvision (conv1.*, layer1.*) "
               "or Detectron2 (stem.*, res2.*) names%s%s", tf->n ? ", e.g. " : "",
               tf->n ? tf->t[0].name : "");
        return NULL;
    }
    for (int i = 0; i < tf->n; i++) {
        const char *s = tf->t[i].name;
        char buf[1100], tvn[1024];
        if (virtex) snprintf(buf, sizeof buf, "%s", s);
        else if (!strcmp(s, "fc.weight") || !strcmp(s, "fc.bias")) continue;  // VirTex: no fc
        else if (d2 && torchvision_from_detectron2(s, tvn, sizeof tvn) == 0)
            snprintf(buf, sizeof buf, "visual.cnn.%s", tvn);
        else snprintf(buf, sizeof buf, "visual.cnn.%s", s);
        names[i] = xstrdup(buf);
    }
    return layout;
}

static int cmp_str_ptr(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int pth_import_state(Model *m, const TensorFile *tf, const char *partial, FILE *report,
                     char *err, size_t errlen) {
    int rc = -1, ns = m->nstate;
    char **names = xcalloc((size_t)tf->n + 1, sizeof *names);
    char **sorted = xcalloc((size_t)tf->n + 1, sizeof *sorted);
    const NamedTensor **src = xcalloc((size_t)ns + 1, sizeof *src);
    int *used = xcalloc((size_t)tf->n + 1, sizeof *used);
    const char *layout = map_names(tf, names, err, errlen);
    if (!layout || check_architecture(m, tf, names, err, errlen)) goto done;

    // names: file -> model, through a sorted copy of the mapped names
    int nn = 0;
    for (int i = 0; i < tf->n; i++) if (names[i]) sorted[nn++] = names[i];
    qsort(sorted, (size_t)nn, sizeof *sorted, cmp_str_ptr);
    char missing[512] = "", unexpected[512] = "", mismatch[768] = "";
    int nmissing = 0, nunexpected = 0, nmismatch = 0, nabsent = 0, nloaded = 0;
    for (int i = 0; i < ns; i++) {
        const StateEntry *e = &m->state[i];
        char *key = (char *)e->name;
        char **hit = bsearch(&key, sorted, (size_t)nn, sizeof *sorted, cmp_str_ptr);
        if (!hit) continue;
        for (int j = 0; j < tf->n; j++)
            if (names[j] == *hit) { src[i] = &tf->t[j]; used[j] = 1; }
    }
    for (int i = 0; i < ns; i++) {
        const StateEntry *e = &m->state[i];
        const NamedTensor *t = src[i];
        if (!t) {
            int shared = 0;        // an alias is not missing when its other name is there
            for (int j = 0; j < ns && e->alias && !shared; j++)
                shared = j != i && m->state[j].data == e->data && src[j];
            if (shared) continue;
            if (has_prefix(e->name, partial)) nabsent++;
            else list_add(missing, sizeof missing, &nmissing, e->name);
            continue;
        }
        int same = t->ndim == e->ndim && t->dtype == e->dtype;
        for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same) {
            char item[160], a[48] = "(", b[48] = "(";
            for (int d = 0; d < t->ndim; d++)
                snprintf(a + strlen(a), sizeof a - strlen(a), "%s%d", d ? "," : "", t->shape[d]);
            for (int d = 0; d < e->ndim; d++)
                snprintf(b + strlen(b), sizeof b - strlen(b), "%s%d", d ? "," : "", e->shape[d]);
            snprintf(item, sizeof item, "%s %s) %s vs %s) %s", e->name, a,
                     t->dtype == DT_I64 ? "int64" : "float", b,
                     e->dtype == DT_I64 ? "int64" : "float32");
            list_add(mismatch, sizeof mismatch, &nmismatch, item);
        }
    }
    for (int j = 0; j < tf->n; j++)
        if (names[j] && !used[j]) list_add(unexpected, sizeof unexpected, &nunexpected, names[j]);
    if (nmissing || nunexpected || nmismatch) {
        char a[700] = "", b[700] = "", c[900] = "";
        if (nmissing)
            snprintf(a, sizeof a, "; %d missing: %s%s (--partial PREFIXES allows absent ones)",
                     nmissing, missing, nmissing > LIST_NAMES ? ", ..." : "");
        if (nunexpected)
            snprintf(b, sizeof b, "; %d unexpected: %s%s", nunexpected, unexpected,
                     nunexpected > LIST_NAMES ? ", ..." : "");
        if (nmismatch)
            snprintf(c, sizeof c, "; %d of another shape or dtype: %s%s", nmismatch, mismatch,
                     nmismatch > LIST_NAMES ? ", ..." : "");
        seterr(err, errlen, "the %s state dict does not fit the model%s%s%s", layout, a, b, c);
        goto done;
    }
    // two names of one shared tensor must hold the same values
    for (int i = 0; i < ns; i++)
        for (int j = i + 1; j < ns && src[i]; j++)
            if (src[j] && m->state[j].data == m->state[i].data && m->state[i].numel &&
                memcmp(src[i]->data, src[j]->data, (size_t)m->state[i].numel *
                       (m->state[i].dtype == DT_I64 ? 8 : 4))) {
                seterr(err, errlen, "'%s' and '%s' are one shared tensor in the model but "
                       "differ in the file", m->state[i].name, m->state[j].name);
                goto done;
            }
    for (int i = 0; i < ns; i++)
        if (src[i]) {
            size_t bytes = (size_t)m->state[i].numel * (m->state[i].dtype == DT_I64 ? 8 : 4);
            if (bytes) memcpy(m->state[i].data, src[i]->data, bytes);
            nloaded++;
        }
    if (report) {
        fprintf(report, "imported %d state entries from a %s state dict", nloaded, layout);
        if (nabsent) fprintf(report, "; %d absent under %s keep their initialisation", nabsent, partial);
        if (nn < tf->n) fprintf(report, "; dropped %d (fc.*: VirTex has no fc layer)", tf->n - nn);
        fprintf(report, "\n");
    }
    rc = 0;
done:
    for (int i = 0; i < tf->n; i++) free(names[i]);
    free(names);
    free(sorted);
    free(src);
    free(used);
    return rc;
}

// ----------------------------------------------------------------------------
// 8. writing torch.save files
//
// The pickle (protocol 2, as torch.save writes it) goes to memory; then the zip is
// streamed out: <archive>/data.pkl, one stored entry per storage straight from the
// model's memory (64-byte aligned, as PyTorch aligns them), version and byteorder.
// Two names of one shared tensor point at one storage, as in PyTorch.

typedef struct Buf { unsigned char *p; size_t n, cap; } Buf;

static void put(Buf *b, const void *s, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) fatal("out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void put_u8(Buf *b, unsigned v) { unsigned char c = (unsigned char)v; put(b, &c, 1); }
static void put_le(Buf *b, uint64_t v, int n) {
    unsigned char c[8];
    for (int i = 0; i < n; i++) c[i] = (unsigned char)(v >> (8 * i));
    put(b, c, (size_t)n);
}
static void pk_put_str(Buf *b, const char *s) {
    put_u8(b, 'X');
    put_le(b, strlen(s), 4);
    put(b, s, strlen(s));
}
static void pk_put_int(Buf *b, int64_t v) {
    if (v >= 0 && v < 256) { put_u8(b, 'K'); put_u8(b, (unsigned)v); }
    else if (v >= 0 && v < 65536) { put_u8(b, 'M'); put_le(b, (uint64_t)v, 2); }
    else if (v >= INT32_MIN && v <= INT32_MAX) { put_u8(b, 'J'); put_le(b, (uint64_t)v, 4); }
    else { put_u8(b, 0x8a); put_u8(b, 8); put_le(b, (uint64_t)v, 8); }
}
static void pk_put_global(Buf *b, const char *mod, const char *name, int memo, int *seen) {
    if (*seen) { put_u8(b, 'h'); put_u8(b, (unsigned)memo); return; }
    put_u8(b, 'c');
    put(b, mod, strlen(mod)); put_u8(b, '\n');
    put(b, name, strlen(name)); put_u8(b, '\n');
    put_u8(b, 'q'); put_u8(b, (unsigned)memo);
    *seen = 1;
}

// The storage index of each tensor: one per distinct data pointer.
static int *storage_keys(const NamedTensor *t, int n, int *nstorages) {
    int *key = xcalloc((size_t)n + 1, sizeof *key), k = 0;
    for (int i = 0; i < n; i++) {
        key[i] = -1;
        for (int j = 0; j < i && key[i] < 0; j++)
            if (t[j].data == t[i].data && t[j].data && t[j].dtype == t[i].dtype &&
                t[j].numel == t[i].numel)
                key[i] = key[j];
        if (key[i] < 0) key[i] = k++;
    }
    *nstorages = k;
    return key;
}

// The pickle of an OrderedDict of the n tensors, wrapped as fmt asks.
static void pickle_state(Buf *b, const NamedTensor *t, int n, const int *key, PthFormat fmt,
                         long iteration) {
    int seen[4] = {0};   // memo 0 OrderedDict, 1 _rebuild_tensor_v2, 2 Float-, 3 LongStorage
    put_u8(b, 0x80); put_u8(b, 2);
    if (fmt != PTH_TORCHVISION) { put_u8(b, '}'); put_u8(b, '('); pk_put_str(b, "model"); }
    pk_put_global(b, "collections", "OrderedDict", 0, &seen[0]);
    put_u8(b, ')'); put_u8(b, 'R');
    put_u8(b, '(');
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "%d", key[i]);
        pk_put_str(b, t[i].name);
        pk_put_global(b, "torch._utils", "_rebuild_tensor_v2", 1, &seen[1]);
        put_u8(b, '('); put_u8(b, '(');
        pk_put_str(b, "storage");
        if (t[i].dtype == DT_I64) pk_put_global(b, "torch", "LongStorage", 3, &seen[3]);
        else pk_put_global(b, "torch", "FloatStorage", 2, &seen[2]);
        pk_put_str(b, k);
        pk_put_str(b, "cpu");
        pk_put_int(b, t[i].numel);
        put_u8(b, 't'); put_u8(b, 'Q');
        pk_put_int(b, 0);                                  // storage offset
        put_u8(b, '(');
        for (int d = 0; d < t[i].ndim; d++) pk_put_int(b, t[i].shape[d]);
        put_u8(b, 't'); put_u8(b, '(');
        long stride = 1;
        int64_t strides[MAX_DIMS];
        for (int d = t[i].ndim - 1; d >= 0; d--) { strides[d] = stride; stride *= t[i].shape[d]; }
        for (int d = 0; d < t[i].ndim; d++) pk_put_int(b, strides[d]);
        put_u8(b, 't');
        put_u8(b, 0x89);                                   // requires_grad False
        pk_put_global(b, "collections", "OrderedDict", 0, &seen[0]);
        put_u8(b, ')'); put_u8(b, 'R');                    // backward hooks
        put_u8(b, 't'); put_u8(b, 'R');
    }
    put_u8(b, 'u');
    if (fmt == PTH_VIRTEX) { pk_put_str(b, "iteration"); pk_put_int(b, iteration); }
    if (fmt == PTH_DETECTRON2) {
        pk_put_str(b, "__author__"); pk_put_str(b, "virtex.c");
        pk_put_str(b, "matching_heuristics"); put_u8(b, 0x88);
    }
    if (fmt != PTH_TORCHVISION) put_u8(b, 'u');
    put_u8(b, '.');
}

// One zip entry's bookkeeping for the central directory.
typedef struct OutEntry { char name[64]; uint32_t crc; uint64_t size, offset; } OutEntry;

// Write a stored, 64-byte aligned entry at *pos.
static int zip_put_entry(FILE *f, uint64_t *pos, OutEntry *e, const void *data) {
    Buf h = {0};
    size_t nlen = strlen(e->name);
    size_t pad = (64 - (*pos + 30 + nlen) % 64) % 64;
    if (pad && pad < 4) pad += 64;                       // room for the extra field header
    e->offset = *pos;
    put_le(&h, 0x04034b50, 4); put_le(&h, 20, 2); put_le(&h, 0, 2); put_le(&h, 0, 2);
    put_le(&h, 0, 4);                                    // time, date
    put_le(&h, e->crc, 4); put_le(&h, e->size, 4); put_le(&h, e->size, 4);
    put_le(&h, nlen, 2); put_le(&h, pad, 2);
    put(&h, e->name, nlen);
    if (pad) {
        put_le(&h, 0x4246, 2); put_le(&h, pad - 4, 2);   // "FB" padding, as PyTorch
        for (size_t i = 4; i < pad; i++) put_u8(&h, 0);
    }
    int ok = fwrite(h.p, 1, h.n, f) == h.n && (!e->size || fwrite(data, 1, e->size, f) == e->size);
    *pos += h.n + e->size;
    free(h.p);
    return ok ? 0 : -1;
}

// The central directory and end record.
static int zip_put_directory(FILE *f, uint64_t pos, const OutEntry *e, int n) {
    Buf d = {0};
    for (int i = 0; i < n; i++) {
        size_t nlen = strlen(e[i].name);
        put_le(&d, 0x02014b50, 4); put_le(&d, 20, 2); put_le(&d, 20, 2); put_le(&d, 0, 2);
        put_le(&d, 0, 2); put_le(&d, 0, 4);
        put_le(&d, e[i].crc, 4); put_le(&d, e[i].size, 4); put_le(&d, e[i].size, 4);
        put_le(&d, nlen, 2); put_le(&d, 0, 2); put_le(&d, 0, 2); put_le(&d, 0, 2);
        put_le(&d, 0, 2); put_le(&d, 0, 4); put_le(&d, e[i].offset, 4);
        put(&d, e[i].name, nlen);
    }
    size_t cdsize = d.n;
    put_le(&d, 0x06054b50, 4); put_le(&d, 0, 2); put_le(&d, 0, 2);
    put_le(&d, (uint64_t)n, 2); put_le(&d, (uint64_t)n, 2);
    put_le(&d, cdsize, 4); put_le(&d, pos, 4); put_le(&d, 0, 2);
    int ok = fwrite(d.p, 1, d.n, f) == d.n;
    free(d.p);
    return ok ? 0 : -1;
}

int pth_write(const char *path, const NamedTensor *t, int n, PthFormat fmt, long iteration,
              char *err, size_t errlen) {
    int nst;
    int *key = storage_keys(t, n, &nst);
    Buf pkl = {0};
    pickle_state(&pkl, t, n, key, fmt, iteration);
    // the total must fit the classic zip fields (no zip64 writer): 4 GiB
    uint64_t total = pkl.n + 4096;
    for (int i = 0; i < n; i++) total += (uint64_t)t[i].numel * 8 + 256;
    OutEntry *e = xcalloc((size_t)nst + 4, sizeof *e);
    const void **data = xcalloc((size_t)nst + 4, sizeof *data);
    int ne = 0, rc = -1;
    if (total >= 0xFFFFFFF0u || nst > 60000) {
        seterr(err, errlen, "%s: %d tensors of %llu bytes in all: more than this zip writer "
               "handles (4 GiB, 60000 entries)", path, n, (unsigned long long)total);
        goto done;
    }
    snprintf(e[ne].name, sizeof e[ne].name, "archive/data.pkl");
    e[ne].size = pkl.n; data[ne++] = pkl.p;
    for (int s = 0; s < nst; s++)
        for (int i = 0; i < n; i++)
            if (key[i] == s) {
                snprintf(e[ne].name, sizeof e[ne].name, "archive/data/%d", s);
                e[ne].size = (uint64_t)t[i].numel * (t[i].dtype == DT_I64 ? 8 : 4);
                data[ne++] = t[i].data;
                break;
            }
    snprintf(e[ne].name, sizeof e[ne].name, "archive/version");
    e[ne].size = 2; data[ne++] = "3\n";
    snprintf(e[ne].name, sizeof e[ne].name, "archive/byteorder");
    e[ne].size = 6; data[ne++] = "little";
    for (int i = 0; i < ne; i++) e[i].crc = crc32_update(0, data[i], e[i].size);
    AtomicFile af;
    if (atomic_open(&af, path)) {
        seterr(err, errlen, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    uint64_t pos = 0;
    int bad = 0;
    for (int i = 0; i < ne && !bad; i++) bad = zip_put_entry(af.f, &pos, &e[i], data[i]);
    if (!bad) bad = zip_put_directory(af.f, pos, e, ne);
    if (bad) {
        int ec = errno ? errno : EIO;
        fclose(af.f);
        af.f = NULL;
        unlink(af.tmp);
        free(af.path); free(af.tmp);
        seterr(err, errlen, "%s: write failed: %s", path, strerror(ec));
        goto done;
    }
    if (atomic_commit(&af)) {
        seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(key);
    free(pkl.p);
    free(e);
    free(data);
    return rc;
}

int pth_export(Model *m, const char *path, PthFormat fmt, long iteration, char *err,
               size_t errlen) {
    NamedTensor *t = xcalloc((size_t)m->nstate + 1, sizeof *t);
    int n = 0;
    for (int i = 0; i < m->nstate; i++) {
        const StateEntry *s = &m->state[i];
        int cnn = !strncmp(s->name, "visual.cnn.", 11);
        if (fmt != PTH_VIRTEX && !cnn) continue;
        char buf[1024];
        if (fmt == PTH_TORCHVISION) snprintf(buf, sizeof buf, "%s", s->name + 11);
        else if (fmt == PTH_DETECTRON2) {
            if (detectron2_name(s->name + 11, buf, sizeof buf)) fatal("name too long: %s", s->name);
        } else snprintf(buf, sizeof buf, "%s", s->name);
        t[n] = (NamedTensor){xstrdup(buf), s->dtype, s->ndim, {0}, s->numel, s->data};
        memcpy(t[n].shape, s->shape, sizeof t[n].shape);
        n++;
    }
    int rc = pth_write(path, t, n, fmt, iteration, err, errlen);
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
    return rc;
}
