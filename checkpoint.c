// checkpoint.c — section 7 of model.h: the native named-tensor checkpoint file.
//
// A checkpoint is a "VIRTEXC1" file (layout documented in model.h, section 7): the
// config YAML the model was built from, then every state_dict entry by its PyTorch
// name, then a CRC-32 of everything before it. This file holds
//
//   1. CRC-32 .............. zlib's CRC, slicing-by-8 tables
//   2. atomic writes ....... temp file in the same directory, fsync, rename
//   3. writing a file ...... validate the TensorFile, then stream it out
//   4. reading a file ...... validate every length against the file size before
//                            allocating, the CRC, then the names
//   5. loading a model ..... match a TensorFile to Model.state by name, dtype, shape
//   6. checkpoints ......... checkpoint_save / checkpoint_load
//
// Nothing here prints or exits: every failure returns -1 with a one-line message in
// err that starts with the file's path (model_load_state, which sees no file, leaves
// the path to its caller). State data is read and written through plain host
// pointers, so a model whose tensors live on a GPU must be synced to the host first.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "model.h"

// Tensor data is stored as the raw bytes of host memory, which the format defines as
// little-endian. Header integers are encoded byte by byte and are portable anyway.
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "virtex.c checkpoints store raw little-endian data: build on a little-endian machine"
#endif
_Static_assert(sizeof(float) == 4 && sizeof(int64_t) == 8, "float32 / int64 sizes");
_Static_assert(sizeof(long) >= 8, "numel is a long and must hold 64-bit counts");

static const char MAGIC[8] = {'V', 'I', 'R', 'T', 'E', 'X', 'C', '1'};
#define FORMAT_VERSION 1u
// The smallest valid file: magic, version, config length, tensor count, CRC.
#define MIN_FILE_BYTES (8 + 4 + 4 + 4 + 4)
// The smallest tensor record: name length, a 1-byte name, dtype, ndim (a scalar's
// data follows, but a zero-sized tensor could in principle be this small).
#define MIN_RECORD_BYTES (2 + 1 + 1 + 1)
#define MAX_NAME_BYTES 65535u
#define IO_CHUNK ((size_t)1 << 20)

// Write a formatted message into err (if there is room for one).
static size_t dtype_size(DType d) { return d == DT_I64 ? 8 : 4; }
static const char *dtype_name(int d) {
    return d == DT_F32 ? "float32" : d == DT_I64 ? "int64" : "unknown";
}

// "(64,3,7,7)"; "()" for a scalar.
static const char *shape_str(char *buf, size_t len, int ndim, const int *shape) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, len - k, "(");
    for (int i = 0; i < ndim && k < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%d", i ? "," : "", shape[i]);
    if (k < len) snprintf(buf + k, len - k, ")");
    return buf;
}

// A name is 1..65535 bytes without control characters (so messages stay one line).
static int name_ok(const char *s, size_t n) {
    if (n == 0 || n > MAX_NAME_BYTES) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return 0;
    }
    return 1;
}

// qsort / bsearch comparators over arrays of NamedTensor pointers, by name.
static int cmp_tensor_ptr(const void *a, const void *b) {
    return strcmp((*(NamedTensor *const *)a)->name, (*(NamedTensor *const *)b)->name);
}

// The first duplicated name among n tensors, or NULL. O(n log n): a hostile file may
// hold millions of tiny records.
static const char *find_duplicate(const NamedTensor *t, int n) {
    if (n < 2) return NULL;
    NamedTensor **p = malloc((size_t)n * sizeof *p);
    if (!p) return NULL;   // out of memory: skip the check rather than fail the load
    for (int i = 0; i < n; i++) p[i] = (NamedTensor *)&t[i];
    qsort(p, (size_t)n, sizeof *p, cmp_tensor_ptr);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(p[i - 1]->name, p[i]->name) == 0) dup = p[i]->name;
    free(p);
    return dup;
}

// ----------------------------------------------------------------------------
// 1. CRC-32 (zlib: reflected polynomial 0xEDB88320, initial and final inversion)
//
// Slicing-by-8: table[k][b] is the CRC contribution of byte b followed by k zero
// bytes, so eight input bytes are folded in per step (a checkpoint is ~730 MB).

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

// Fill the tables once (pthread_once: safe from any thread).
static void crc_init(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t c = b;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[0][b] = c;
    }
    for (int k = 1; k < 8; k++)
        for (int b = 0; b < 256; b++) {
            uint32_t c = crc_table[k - 1][b];
            crc_table[k][b] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
}

// Continue a CRC over n more bytes; crc32_update(0, ...) starts a new one, exactly as
// zlib's crc32(). crc32_update(0, "123456789", 9) == 0xCBF43926.
uint32_t crc32_update(uint32_t crc, const void *data, size_t n) {
    pthread_once(&crc_once, crc_init);
    const unsigned char *p = data;
    crc = ~crc;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);            // little-endian load
        w ^= crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

// ----------------------------------------------------------------------------
// 2. atomic file writes
//
// The data goes to "<path>.tmp.<pid>" next to the target, is flushed and fsynced,
// then renamed over the target, and the directory is fsynced so the rename itself
// survives a crash. A reader sees the old file or the new one, never a mix; a failed
// write leaves the old file untouched and no temp file behind. (A symlink at path is
// replaced by a regular file; the new file gets default permissions.)

// Open the temp file for path. -1 with errno set on failure (nothing is left behind).
int atomic_open(AtomicFile *af, const char *path) {
    memset(af, 0, sizeof *af);
    size_t n = strlen(path) + 32;
    af->path = strdup(path);
    af->tmp = malloc(n);
    if (!af->path || !af->tmp) {
        free(af->path);
        free(af->tmp);
        memset(af, 0, sizeof *af);
        errno = ENOMEM;
        return -1;
    }
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    af->f = fopen(af->tmp, "wbe");   // e: O_CLOEXEC
    if (!af->f) {
        int e = errno;
        free(af->path);
        free(af->tmp);
        memset(af, 0, sizeof *af);
        errno = e;
        return -1;
    }
    return 0;
}

// Drop an open atomic write: close and remove the temp file (target untouched).
static void atomic_abort(AtomicFile *af) {
    int e = errno;
    if (af->f) fclose(af->f);
    if (af->tmp) unlink(af->tmp);
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
    errno = e;
}

// fsync the directory holding path, so a rename in it is durable. Filesystems that
// cannot sync directories (EINVAL, ENOTSUP) and unreadable directories are accepted.
static int fsync_dir_of(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else dir = strndup(path, (size_t)(slash - path));
    if (!dir) { errno = ENOMEM; return -1; }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return 0;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    if (rc != 0 && (e == EINVAL || e == ENOTSUP)) rc = 0;
    errno = e;
    return rc;
}

// Flush, fsync, close and rename the temp file over the target. 0 on success; on
// failure -1 with errno set, and the temp file removed. af is released either way.
int atomic_commit(AtomicFile *af) {
    int rc = 0, e = 0;
    if (!af->f || !af->tmp || !af->path) {
        atomic_abort(af);
        errno = EBADF;
        return -1;
    }
    errno = 0;
    if (fflush(af->f) != 0 || ferror(af->f)) { e = errno ? errno : EIO; rc = -1; }
    if (!rc && fsync(fileno(af->f)) != 0) { e = errno; rc = -1; }
    if (fclose(af->f) != 0 && !rc) { e = errno; rc = -1; }
    af->f = NULL;
    if (!rc && rename(af->tmp, af->path) != 0) { e = errno; rc = -1; }
    if (rc) unlink(af->tmp);
    else if (fsync_dir_of(af->path) != 0) { e = errno; rc = -1; }
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof *af);
    errno = e;
    return rc;
}

// ----------------------------------------------------------------------------
// 3. writing a TensorFile

// Encode little-endian integers for the header fields.
static void put_le(unsigned char *b, uint64_t v, int n) {
    for (int i = 0; i < n; i++) b[i] = (unsigned char)(v >> (8 * i));
}

// The output stream and the running CRC; the first write error sticks in err.
typedef struct Writer {
    FILE *f;
    uint32_t crc;
    int err;
} Writer;

// Append n bytes to the file and the CRC, in chunks (cache-friendly for big tensors).
static void wput(Writer *w, const void *data, size_t n) {
    const unsigned char *p = data;
    while (n && !w->err) {
        size_t k = n < IO_CHUNK ? n : IO_CHUNK;
        w->crc = crc32_update(w->crc, p, k);
        errno = 0;
        if (fwrite(p, 1, k, w->f) != k) w->err = errno ? errno : EIO;
        p += k;
        n -= k;
    }
}

// Check that a TensorFile can be written and read back: names, dtypes, shapes,
// numel, data pointers, sizes that fit the format's fields, no duplicate names.
static int tensorfile_validate(const TensorFile *tf, const char *path, char *err,
                               size_t errlen) {
    size_t clen = tf->config ? strlen(tf->config) : 0;
    if (clen > UINT32_MAX) {
        seterr(err, errlen, "%s: config text of %zu bytes is too long for the format",
               path, clen);
        return -1;
    }
    if (tf->n < 0 || (tf->n > 0 && !tf->t)) {
        seterr(err, errlen, "%s: invalid tensor list (n = %d)", path, tf->n);
        return -1;
    }
    for (int i = 0; i < tf->n; i++) {
        const NamedTensor *t = &tf->t[i];
        if (!t->name || !name_ok(t->name, strlen(t->name))) {
            seterr(err, errlen, "%s: tensor #%d has an invalid name (empty, longer than "
                   "65535 bytes or with control characters)", path, i);
            return -1;
        }
        if (t->dtype != DT_F32 && t->dtype != DT_I64) {
            seterr(err, errlen, "%s: tensor '%s' has unknown dtype %d", path, t->name,
                   (int)t->dtype);
            return -1;
        }
        if (t->ndim < 0 || t->ndim > MAX_DIMS) {
            seterr(err, errlen, "%s: tensor '%s' has %d dimensions (at most %d)", path,
                   t->name, t->ndim, MAX_DIMS);
            return -1;
        }
        long numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            if (t->shape[d] < 0) {
                seterr(err, errlen, "%s: tensor '%s' has a negative dimension", path,
                       t->name);
                return -1;
            }
            if (t->shape[d] && numel > LONG_MAX / 8 / t->shape[d]) {
                seterr(err, errlen, "%s: tensor '%s' is too large", path, t->name);
                return -1;
            }
            numel *= t->shape[d];
        }
        if (t->numel != numel) {
            char sb[64];
            seterr(err, errlen, "%s: tensor '%s' has numel %ld but shape %s", path,
                   t->name, t->numel, shape_str(sb, sizeof sb, t->ndim, t->shape));
            return -1;
        }
        if (numel > 0 && !t->data) {
            seterr(err, errlen, "%s: tensor '%s' has no data", path, t->name);
            return -1;
        }
    }
    const char *dup = find_duplicate(tf->t, tf->n);
    if (dup) {
        seterr(err, errlen, "%s: duplicate tensor name '%s'", path, dup);
        return -1;
    }
    return 0;
}

// Write tf to path atomically in the VIRTEXC1 format, streaming the CRC as it goes.
// The bytes depend only on tf, so writing the same TensorFile twice gives one file.
int tensorfile_write(const TensorFile *tf, const char *path, char *err, size_t errlen) {
    if (tensorfile_validate(tf, path, err, errlen)) return -1;
    AtomicFile af;
    if (atomic_open(&af, path)) {
        seterr(err, errlen, "%s: cannot create %s.tmp.%ld: %s", path, path,
               (long)getpid(), strerror(errno));
        return -1;
    }
    Writer w = {af.f, 0, 0};
    unsigned char b[16];
    size_t clen = tf->config ? strlen(tf->config) : 0;
    wput(&w, MAGIC, 8);
    put_le(b, FORMAT_VERSION, 4);
    put_le(b + 4, clen, 4);
    wput(&w, b, 8);
    wput(&w, tf->config, clen);
    put_le(b, (uint64_t)tf->n, 4);
    wput(&w, b, 4);
    for (int i = 0; i < tf->n && !w.err; i++) {
        const NamedTensor *t = &tf->t[i];
        size_t nlen = strlen(t->name);
        put_le(b, nlen, 2);
        wput(&w, b, 2);
        wput(&w, t->name, nlen);
        b[0] = (unsigned char)t->dtype;
        b[1] = (unsigned char)t->ndim;
        wput(&w, b, 2);
        for (int d = 0; d < t->ndim; d++) {
            put_le(b, (uint64_t)t->shape[d], 4);
            wput(&w, b, 4);
        }
        wput(&w, t->data, (size_t)t->numel * dtype_size(t->dtype));
    }
    uint32_t crc = w.crc;
    put_le(b, crc, 4);
    wput(&w, b, 4);
    if (w.err) {
        atomic_abort(&af);
        seterr(err, errlen, "%s: write failed: %s", path, strerror(w.err));
        return -1;
    }
    if (atomic_commit(&af)) {
        seterr(err, errlen, "%s: write failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

// ----------------------------------------------------------------------------
// 4. reading a TensorFile
//
// The file's size (fstat) bounds every declared length before anything is allocated:
// a truncated or hostile file can never make us allocate more than it holds, nor read
// past its end. Structure is checked as it is parsed; the CRC is checked once every
// byte has been read; names (duplicates) are checked last, so that a damaged file is
// reported as damaged rather than by the accident its damage produced.

// The input stream: position, end of the content (the CRC's offset), running CRC.
typedef struct Reader {
    FILE *f;
    const char *path;
    uint64_t pos, end;
    uint32_t crc;
    char *err;
    size_t errlen;
} Reader;

// Fail unless n more content bytes remain; "what" names the field for the message.
static int rneed(Reader *r, uint64_t n, const char *what) {
    uint64_t left = r->end - r->pos;
    if (n <= left) return 0;
    seterr(r->err, r->errlen, "%s: file is truncated or corrupt: %s at offset %llu "
           "needs %llu bytes, only %llu remain", r->path, what,
           (unsigned long long)r->pos, (unsigned long long)n,
           (unsigned long long)left);
    return -1;
}

// Read exactly n bytes into dst (or discard them when dst is NULL), in chunks, adding
// them to the CRC.
static int rget(Reader *r, void *dst, uint64_t n, const char *what) {
    if (rneed(r, n, what)) return -1;
    unsigned char scratch[4096];
    unsigned char *p = dst;
    while (n) {
        size_t k = n < IO_CHUNK ? (size_t)n : IO_CHUNK;
        unsigned char *q = p;
        if (!p && k > sizeof scratch) k = sizeof scratch;
        if (!p) q = scratch;
        errno = 0;
        if (fread(q, 1, k, r->f) != k) {
            if (ferror(r->f))
                seterr(r->err, r->errlen, "%s: read error at offset %llu: %s", r->path,
                       (unsigned long long)r->pos, strerror(errno ? errno : EIO));
            else
                seterr(r->err, r->errlen, "%s: file ended early at offset %llu (was it "
                       "modified while being read?)", r->path, (unsigned long long)r->pos);
            return -1;
        }
        r->crc = crc32_update(r->crc, q, k);
        r->pos += k;
        n -= k;
        if (p) p += k;
    }
    return 0;
}

static int rget_u8(Reader *r, unsigned *v, const char *what) {
    unsigned char b;
    if (rget(r, &b, 1, what)) return -1;
    *v = b;
    return 0;
}
static int rget_u16(Reader *r, unsigned *v, const char *what) {
    unsigned char b[2];
    if (rget(r, b, 2, what)) return -1;
    *v = (unsigned)b[0] | (unsigned)b[1] << 8;
    return 0;
}
static uint32_t le32(const unsigned char *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
           (uint32_t)b[3] << 24;
}
static int rget_u32(Reader *r, uint32_t *v, const char *what) {
    unsigned char b[4];
    if (rget(r, b, 4, what)) return -1;
    *v = le32(b);
    return 0;
}

// Parse one tensor record into t (which the caller frees on failure).
static int read_tensor(Reader *r, NamedTensor *t, uint32_t index) {
    char what[96];
    snprintf(what, sizeof what, "the name length of tensor #%u", index);
    unsigned nlen, dtype, ndim;
    if (rget_u16(r, &nlen, what)) return -1;
    if (nlen == 0) {
        seterr(r->err, r->errlen, "%s: tensor #%u has an empty name (file is corrupt)",
               r->path, index);
        return -1;
    }
    snprintf(what, sizeof what, "the name of tensor #%u", index);
    if (rneed(r, nlen, what)) return -1;
    t->name = malloc(nlen + 1);
    if (!t->name) {
        seterr(r->err, r->errlen, "%s: out of memory", r->path);
        return -1;
    }
    if (rget(r, t->name, nlen, what)) return -1;
    t->name[nlen] = 0;
    if (!name_ok(t->name, nlen)) {
        seterr(r->err, r->errlen, "%s: tensor #%u has a name with control characters or "
               "NUL bytes (file is corrupt)", r->path, index);
        return -1;
    }
    snprintf(what, sizeof what, "the header of tensor '%.40s'", t->name);
    if (rget_u8(r, &dtype, what) || rget_u8(r, &ndim, what)) return -1;
    if (dtype != DT_F32 && dtype != DT_I64) {
        seterr(r->err, r->errlen, "%s: tensor '%s' has unknown dtype %u (0 float32, "
               "1 int64)", r->path, t->name, dtype);
        return -1;
    }
    if (ndim > MAX_DIMS) {
        seterr(r->err, r->errlen, "%s: tensor '%s' has %u dimensions, this build handles "
               "at most %d", r->path, t->name, ndim, MAX_DIMS);
        return -1;
    }
    t->dtype = (DType)dtype;
    t->ndim = (int)ndim;
    int zero = 0;
    for (unsigned d = 0; d < ndim; d++) {
        uint32_t v;
        if (rget_u32(r, &v, what)) return -1;
        if (v > INT_MAX) {
            seterr(r->err, r->errlen, "%s: tensor '%s' has dimension %u of size %lu, more "
                   "than %d", r->path, t->name, d, (unsigned long)v, INT_MAX);
            return -1;
        }
        t->shape[d] = (int)v;
        zero |= v == 0;
    }
    // numel, bounded by the bytes left: no overflow, no allocation beyond the file.
    uint64_t esize = dtype_size(t->dtype), limit = (r->end - r->pos) / esize, numel = 1;
    char sb[64];
    for (int d = 0; d < t->ndim && !zero; d++) {
        uint64_t v = (uint64_t)t->shape[d];
        if (numel > limit / v) {
            seterr(r->err, r->errlen, "%s: file is truncated or corrupt: tensor '%s' of "
                   "shape %s needs more data than the %llu bytes left", r->path, t->name,
                   shape_str(sb, sizeof sb, t->ndim, t->shape),
                   (unsigned long long)(r->end - r->pos));
            return -1;
        }
        numel *= v;
    }
    if (zero) numel = 0;
    t->numel = (long)numel;
    if (numel) {
        snprintf(what, sizeof what, "the data of tensor '%.40s'", t->name);
        if (rneed(r, numel * esize, what)) return -1;
        t->data = malloc(numel * esize);
        if (!t->data) {
            seterr(r->err, r->errlen, "%s: out of memory for tensor '%s' (%llu bytes)",
                   r->path, t->name, (unsigned long long)(numel * esize));
            return -1;
        }
        if (rget(r, t->data, numel * esize, what)) return -1;
    }
    return 0;
}

// Parse the whole file into tf (see the section comment). tf is zeroed on failure.
static int read_file(Reader *r, TensorFile *tf, uint64_t size) {
    unsigned char b[8];
    // magic: also the verdict on files that are not checkpoints at all
    if (size == 0) {
        seterr(r->err, r->errlen, "%s: empty file, not a virtex checkpoint", r->path);
        return -1;
    }
    size_t k = size < 8 ? (size_t)size : 8;
    if (fread(b, 1, k, r->f) != k) {
        seterr(r->err, r->errlen, "%s: read error: %s", r->path,
               strerror(errno ? errno : EIO));
        return -1;
    }
    if (memcmp(b, MAGIC, k) != 0) {
        seterr(r->err, r->errlen, "%s: not a virtex checkpoint (bad magic)", r->path);
        return -1;
    }
    if (size < 12) {
        seterr(r->err, r->errlen, "%s: file is truncated (%llu bytes)", r->path,
               (unsigned long long)size);
        return -1;
    }
    if (fread(b, 1, 4, r->f) != 4) {
        seterr(r->err, r->errlen, "%s: read error: %s", r->path,
               strerror(errno ? errno : EIO));
        return -1;
    }
    uint32_t version = le32(b);
    if (version != FORMAT_VERSION) {
        seterr(r->err, r->errlen, "%s: format version %lu, this build reads %u", r->path,
               (unsigned long)version, FORMAT_VERSION);
        return -1;
    }
    if (size < MIN_FILE_BYTES) {
        seterr(r->err, r->errlen, "%s: file is truncated (%llu bytes)", r->path,
               (unsigned long long)size);
        return -1;
    }
    r->crc = crc32_update(crc32_update(0, MAGIC, 8), b, 4);
    r->pos = 12;
    r->end = size - 4;

    // config text
    uint32_t clen;
    if (rget_u32(r, &clen, "the config length")) return -1;
    if (rneed(r, clen, "the config text")) return -1;
    tf->config = malloc((size_t)clen + 1);
    if (!tf->config) {
        seterr(r->err, r->errlen, "%s: out of memory", r->path);
        return -1;
    }
    if (rget(r, tf->config, clen, "the config text")) return -1;
    tf->config[clen] = 0;
    if (memchr(tf->config, 0, clen)) {
        seterr(r->err, r->errlen, "%s: the config text contains a NUL byte (file is "
               "corrupt)", r->path);
        return -1;
    }

    // tensors: the array grows as records arrive, so a false count allocates nothing
    uint32_t count;
    if (rget_u32(r, &count, "the tensor count")) return -1;
    if (count > INT_MAX || count > (r->end - r->pos) / MIN_RECORD_BYTES) {
        seterr(r->err, r->errlen, "%s: file is truncated or corrupt: it declares %lu "
               "tensors but only %llu bytes remain", r->path, (unsigned long)count,
               (unsigned long long)(r->end - r->pos));
        return -1;
    }
    int cap = 0;
    for (uint32_t i = 0; i < count; i++) {
        if (tf->n == cap) {
            int ncap = cap ? (cap > INT_MAX / 2 ? INT_MAX : 2 * cap) : 64;
            if ((uint32_t)ncap > count) ncap = (int)count;
            NamedTensor *nt = realloc(tf->t, (size_t)ncap * sizeof *nt);
            if (!nt) {
                seterr(r->err, r->errlen, "%s: out of memory", r->path);
                return -1;
            }
            tf->t = nt;
            cap = ncap;
        }
        memset(&tf->t[tf->n], 0, sizeof tf->t[0]);
        tf->n++;   // counted now, so a half-read record is freed with the rest
        if (read_tensor(r, &tf->t[tf->n - 1], i)) return -1;
    }

    // the CRC covers everything up to it, including any bytes the records left over
    uint64_t extra = r->end - r->pos;
    if (extra && rget(r, NULL, extra, "trailing data")) return -1;
    if (fread(b, 1, 4, r->f) != 4) {
        seterr(r->err, r->errlen, "%s: read error: %s", r->path,
               strerror(errno ? errno : EIO));
        return -1;
    }
    if (le32(b) != r->crc) {
        seterr(r->err, r->errlen, "%s: checksum mismatch: file is corrupt or truncated",
               r->path);
        return -1;
    }
    if (extra) {
        seterr(r->err, r->errlen, "%s: %llu bytes of unexpected data after the last "
               "tensor", r->path, (unsigned long long)extra);
        return -1;
    }
    const char *dup = find_duplicate(tf->t, tf->n);
    if (dup) {
        seterr(r->err, r->errlen, "%s: duplicate tensor name '%s'", r->path, dup);
        return -1;
    }
    return 0;
}

// Read and fully validate a checkpoint file. 0 on success; -1 with a message naming
// the file in err, and tf zeroed (tensorfile_free is safe either way). Tensors with
// no elements have data == NULL.
int tensorfile_read(TensorFile *tf, const char *path, char *err, size_t errlen) {
    memset(tf, 0, sizeof *tf);
    FILE *f = fopen(path, "rbe");
    if (!f) {
        seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        seterr(err, errlen, "%s: cannot stat: %s", path, strerror(errno));
        fclose(f);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        seterr(err, errlen, "%s: not a regular file", path);
        fclose(f);
        return -1;
    }
    Reader r = {f, path, 0, 0, 0, err, errlen};
    int rc = read_file(&r, tf, (uint64_t)st.st_size);
    fclose(f);
    if (rc) tensorfile_free(tf);
    return rc;
}

// The tensor called name, or NULL (a linear scan).
NamedTensor *tensorfile_find(const TensorFile *tf, const char *name) {
    for (int i = 0; i < tf->n; i++)
        if (strcmp(tf->t[i].name, name) == 0) return &tf->t[i];
    return NULL;
}

// Free everything tensorfile_read allocated and zero tf.
void tensorfile_free(TensorFile *tf) {
    for (int i = 0; i < tf->n; i++) {
        free(tf->t[i].name);
        free(tf->t[i].data);
    }
    free(tf->t);
    free(tf->config);
    memset(tf, 0, sizeof *tf);
}

// ----------------------------------------------------------------------------
// 5. loading a model's state from a TensorFile
//
// Strict: the file must hold exactly the model's state_dict names (aliases included,
// as PyTorch saves both names of a shared tensor), each with the model's dtype and
// shape, and the two names of a shared tensor must hold identical bytes. Everything is
// checked before anything is copied, so a failed load leaves the model untouched.
// Messages do not name the file (checkpoint_load prefixes its path).

#define LIST_NAMES 5

// Append "'name'" to a list message (the first LIST_NAMES, then "...").
static void list_add(char *buf, size_t len, int *count, const char *name) {
    size_t k = strlen(buf);
    if (*count < LIST_NAMES)
        snprintf(buf + k, len - k, "%s'%s'", *count ? ", " : "", name);
    else if (*count == LIST_NAMES)
        snprintf(buf + k, len - k, ", ...");
    (*count)++;
}

// The state entry called name, or NULL; sorted is m->state by name (bsearch).
static int cmp_state_ptr(const void *a, const void *b) {
    return strcmp((*(StateEntry *const *)a)->name, (*(StateEntry *const *)b)->name);
}

// Check every name, dtype, shape and alias of tf against m->state, then copy the data.
int model_load_state(Model *m, const TensorFile *tf, char *err, size_t errlen) {
    int ns = m->nstate, rc = -1;
    NamedTensor **files = malloc(((size_t)tf->n + 1) * sizeof *files);
    StateEntry **states = malloc(((size_t)ns + 1) * sizeof *states);
    NamedTensor **src = calloc((size_t)ns + 1, sizeof *src);
    if (!files || !states || !src) {
        seterr(err, errlen, "out of memory");
        goto done;
    }
    for (int i = 0; i < tf->n; i++) files[i] = &tf->t[i];
    for (int i = 0; i < ns; i++) states[i] = &m->state[i];
    qsort(files, (size_t)tf->n, sizeof *files, cmp_tensor_ptr);
    qsort(states, (size_t)ns, sizeof *states, cmp_state_ptr);

    // names: what the model expects and the file lacks, and the reverse
    char missing[640] = "", unexpected[640] = "";
    int nmissing = 0, nunexpected = 0;
    for (int i = 0; i < ns; i++) {
        NamedTensor key = {.name = (char *)m->state[i].name}, *kp = &key;
        NamedTensor **hit = bsearch(&kp, files, (size_t)tf->n, sizeof *files,
                                    cmp_tensor_ptr);
        src[i] = hit ? *hit : NULL;
        if (!hit) list_add(missing, sizeof missing, &nmissing, m->state[i].name);
    }
    for (int i = 0; i < tf->n; i++) {
        StateEntry key = {.name = tf->t[i].name}, *kp = &key;
        if (!bsearch(&kp, states, (size_t)ns, sizeof *states, cmp_state_ptr))
            list_add(unexpected, sizeof unexpected, &nunexpected, tf->t[i].name);
    }
    if (nmissing || nunexpected) {
        char a[720] = "", b[720] = "";
        if (nmissing)
            snprintf(a, sizeof a, "the checkpoint lacks %d tensor%s the model expects: %s",
                     nmissing, nmissing == 1 ? "" : "s", missing);
        if (nunexpected)
            snprintf(b, sizeof b, "the checkpoint has %d tensor%s the model does not: %s",
                     nunexpected, nunexpected == 1 ? "" : "s", unexpected);
        seterr(err, errlen, "%s%s%s", a, nmissing && nunexpected ? "; " : "", b);
        goto done;
    }

    // dtypes and shapes
    for (int i = 0; i < ns; i++) {
        const StateEntry *e = &m->state[i];
        const NamedTensor *t = src[i];
        char s1[64], s2[64];
        long numel = 1;
        for (int d = 0; d < e->ndim && d < MAX_DIMS; d++) numel *= e->shape[d];
        if (e->ndim < 0 || e->ndim > MAX_DIMS || numel != e->numel) {
            seterr(err, errlen, "model state entry '%s' has an inconsistent shape "
                   "(internal error)", e->name);
            goto done;
        }
        if (t->dtype != e->dtype) {
            seterr(err, errlen, "tensor '%s' has dtype %s, the model expects %s", e->name,
                   dtype_name(t->dtype), dtype_name(e->dtype));
            goto done;
        }
        int same = t->ndim == e->ndim;
        for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
        if (!same) {
            seterr(err, errlen, "tensor '%s' has shape %s, the model expects %s", e->name,
                   shape_str(s1, sizeof s1, t->ndim, t->shape),
                   shape_str(s2, sizeof s2, e->ndim, e->shape));
            goto done;
        }
    }

    // aliases: a second name of a shared tensor must carry the same bytes as the first
    for (int i = 0; i < ns; i++) {
        const StateEntry *e = &m->state[i];
        if (!e->alias) continue;
        for (int j = 0; j < ns; j++) {
            const StateEntry *c = &m->state[j];
            if (c->alias || c->data != e->data) continue;
            size_t bytes = (size_t)e->numel * dtype_size(e->dtype);
            if (c->numel != e->numel || c->dtype != e->dtype ||
                (bytes && memcmp(src[i]->data, src[j]->data, bytes) != 0)) {
                seterr(err, errlen, "tensors '%s' and '%s' are one shared tensor in the "
                       "model but differ in the checkpoint", c->name, e->name);
                goto done;
            }
            break;
        }
    }

    // copy: canonical entries, and aliases that have no canonical entry of their own
    for (int i = 0; i < ns; i++) {
        const StateEntry *e = &m->state[i];
        if (e->alias) {
            int has_canonical = 0;
            for (int j = 0; j < ns && !has_canonical; j++)
                has_canonical = !m->state[j].alias && m->state[j].data == e->data;
            if (has_canonical) continue;
        }
        size_t bytes = (size_t)e->numel * dtype_size(e->dtype);
        if (bytes) memcpy(e->data, src[i]->data, bytes);
    }
    rc = 0;
done:
    free(files);
    free(states);
    free(src);
    return rc;
}

// ----------------------------------------------------------------------------
// 6. checkpoints

// Save the model: its config (config_dump YAML) and every state entry, aliases
// included, in m->state order — the same names and order as PyTorch's state_dict —
// then the extra tensors (the training driver's "optimizer." / "trainer." state).
// Tensor data is written straight from memory (no copy).
int checkpoint_save_with(Model *m, const NamedTensor *extra, int nextra, const char *path,
                         char *err, size_t errlen) {
    char *cfg = NULL;
    size_t clen = 0;
    FILE *ms = open_memstream(&cfg, &clen);
    if (!ms) {
        seterr(err, errlen, "%s: cannot serialise the config: %s", path, strerror(errno));
        return -1;
    }
    config_dump(&m->cfg, ms);
    if (fclose(ms) != 0 || !cfg) {
        seterr(err, errlen, "%s: cannot serialise the config: %s", path, strerror(errno));
        free(cfg);
        return -1;
    }
    NamedTensor *t = calloc((size_t)m->nstate + nextra + 1, sizeof *t);
    if (!t) {
        free(cfg);
        seterr(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < m->nstate; i++) {
        const StateEntry *e = &m->state[i];
        t[i].name = (char *)e->name;
        t[i].dtype = e->dtype;
        t[i].ndim = e->ndim;
        memcpy(t[i].shape, e->shape, sizeof t[i].shape);
        t[i].numel = e->numel;
        t[i].data = e->data;
    }
    for (int i = 0; i < nextra; i++) t[m->nstate + i] = extra[i];
    TensorFile tf = {cfg, t, m->nstate + nextra};
    int rc = tensorfile_write(&tf, path, err, errlen);
    free(t);
    free(cfg);
    return rc;
}

int checkpoint_save(Model *m, const char *path, char *err, size_t errlen) {
    return checkpoint_save_with(m, NULL, 0, path, err, errlen);
}

// Names under these prefixes belong to the training driver (optimizer moments, step
// counters, RNG state) and are ignored when loading the model.
static int reserved_name(const char *name) {
    return strncmp(name, "optimizer.", 10) == 0 || strncmp(name, "trainer.", 8) == 0;
}

// Read path and load the model's state from it (model_load_state), ignoring entries
// under the training driver's "optimizer." and "trainer." prefixes. The config text
// in the file is not consulted: the model is already built, and every shape is checked.
int checkpoint_load_state(Model *m, const TensorFile *tf, const char *path, char *err,
                          size_t errlen) {
    TensorFile view = {tf->config, malloc(((size_t)tf->n + 1) * sizeof(NamedTensor)), 0};
    if (!view.t) return seterr(err, errlen, "%s: out of memory", path);
    for (int i = 0; i < tf->n; i++)
        if (!reserved_name(tf->t[i].name)) view.t[view.n++] = tf->t[i];
    char msg[1536];
    int rc = model_load_state(m, &view, msg, sizeof msg);
    if (rc) seterr(err, errlen, "%s: %s", path, msg);
    free(view.t);
    return rc;
}

int checkpoint_load(Model *m, const char *path, char *err, size_t errlen) {
    TensorFile tf;
    if (tensorfile_read(&tf, path, err, errlen)) return -1;
    int rc = checkpoint_load_state(m, &tf, path, err, errlen);
    tensorfile_free(&tf);
    return rc;
}

int checkpoint_config(Config *c, const TensorFile *tf, const char *path, int noverrides,
                      char **overrides, char *err, size_t errlen) {
    char msg[1536];
    config_defaults(c);
    if (config_load_string(c, tf->config, path, msg, sizeof msg))
        return seterr(err, errlen, "%s: its stored config: %s", path, msg);
    for (int i = 0; i + 1 < noverrides; i += 2)
        if (config_override(c, overrides[i], overrides[i + 1], err, errlen)) return -1;
    return 0;
}

// The model an evaluation runs on (see model.h): config from the checkpoint (or the
// given file), overrides on top, then the weights; the file is read once.
int model_from_checkpoint(Model *m, const char *ckpt, const char *config_path,
                          int noverrides, char **overrides, int random_weights,
                          char *err, size_t errlen) {
    TensorFile tf = {0};
    int need_file = !config_path || !random_weights;   // for its config or its weights
    if (need_file && !ckpt)
        return seterr(err, errlen, config_path ? "no checkpoint: give --checkpoint CKPT, or --weights random"
                                               : "no checkpoint and no config: give --checkpoint CKPT or --config FILE");
    if (need_file && tensorfile_read(&tf, ckpt, err, errlen)) return -1;
    Config cfg;
    int rc = config_path ? config_load(&cfg, config_path, noverrides, overrides, err, errlen)
                         : checkpoint_config(&cfg, &tf, ckpt, noverrides, overrides, err, errlen);
    if (!rc) rc = random_weights ? model_build(m, &cfg, err, errlen) : model_build_layout(m, &cfg, err, errlen);
    if (!rc && !random_weights && checkpoint_load_state(m, &tf, ckpt, err, errlen)) {
        model_free(m);
        rc = -1;
    }
    tensorfile_free(&tf);
    return rc;
}
