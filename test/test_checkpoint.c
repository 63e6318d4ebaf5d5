// test/test_checkpoint.c — the VIRTEXC1 checkpoint format (checkpoint.c): CRC-32,
// atomic writes, bit-exact round trips, rejection of damaged and hostile files, and
// loading a model's state by name. Mostly hand-built TensorFiles and a hand-built Model
// (no model_build), so it runs apart from the model code; test_real_model then saves
// and loads a small model_build model end to end.
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "test.h"

// ----------------------------------------------------------------------------
// helpers: a scratch directory, whole-file I/O, a byte builder for crafted files

static char tmpdir[256];

static const char *tpath(const char *name) { return path_in(tmpdir, name); }

// Entries of dir whose name contains ".tmp." (leftover atomic-write temp files).
static int count_temp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) n += strstr(e->d_name, ".tmp.") != NULL;
    closedir(d);
    return n;
}

// A byte buffer for crafting files by hand.
typedef struct Buf { unsigned char b[4096]; size_t n; } Buf;
static void b_bytes(Buf *b, const void *p, size_t n) { memcpy(b->b + b->n, p, n); b->n += n; }
static void b_u8(Buf *b, unsigned v) { b->b[b->n++] = (unsigned char)v; }
static void b_u16(Buf *b, unsigned v) { b_u8(b, v & 0xff); b_u8(b, (v >> 8) & 0xff); }
static void b_u32(Buf *b, uint32_t v) {
    for (int i = 0; i < 4; i++) b_u8(b, (v >> (8 * i)) & 0xff);
}
static void b_header(Buf *b, uint32_t version, const char *config) {
    b->n = 0;
    b_bytes(b, "VIRTEXC1", 8);
    b_u32(b, version);
    b_u32(b, (uint32_t)strlen(config));
    b_bytes(b, config, strlen(config));
}
static void b_name(Buf *b, const char *name) {
    b_u16(b, (unsigned)strlen(name));
    b_bytes(b, name, strlen(name));
}
static void b_crc(Buf *b) { b_u32(b, crc32_update(0, b->b, b->n)); }

// Write b to a file and read it back: returns tensorfile_read's result, message in err.
static int read_crafted(const Buf *b, const char *name, char *err, size_t errlen) {
    const char *p = tpath(name);
    spit(p, b->b, b->n);
    TensorFile tf;
    int rc = tensorfile_read(&tf, p, err, errlen);
    tensorfile_free(&tf);
    return rc;
}

static int one_line(const char *s) { return strchr(s, '\n') == NULL && s[0] != 0; }

// ----------------------------------------------------------------------------
// CRC-32

// Bit-at-a-time reference, straight from the definition.
static uint32_t crc_ref(uint32_t crc, const unsigned char *p, size_t n) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++) crc = (crc & 1) ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
    }
    return ~crc;
}

static void test_crc(void) {
    check(crc32_update(0, "123456789", 9) == 0xCBF43926u,
          "crc32(\"123456789\") = %08x (want cbf43926)", crc32_update(0, "123456789", 9));
    check(crc32_update(0, "", 0) == 0, "crc32 of nothing is 0");
    check(crc32_update(crc32_update(0, "12345", 5), "6789", 4) == 0xCBF43926u,
          "crc32 chains across calls");
    unsigned char buf[10000 + 8];
    uint64_t s = 88172645463325252ull;
    for (size_t i = 0; i < sizeof buf; i++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        buf[i] = (unsigned char)s;
    }
    int bad = 0;
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n < 100; n++)
            bad += crc32_update(0x12345678u, buf + off, n) != crc_ref(0x12345678u, buf + off, n);
    bad += crc32_update(0, buf + 3, 10000) != crc_ref(0, buf + 3, 10000);
    check(bad == 0, "slicing-by-8 CRC matches the bitwise reference (%d mismatches)", bad);
}

// ----------------------------------------------------------------------------
// the documented layout, byte for byte

static void test_layout(void) {
    float w[2] = {1.0f, -2.0f};
    NamedTensor t = {.name = "w", .dtype = DT_F32, .ndim = 1, .shape = {2}, .numel = 2,
                     .data = w};
    TensorFile tf = {.config = "a: 1\n", .t = &t, .n = 1};
    char err[512] = "";
    const char *p = tpath("layout.ckpt");
    int rc = tensorfile_write(&tf, p, err, sizeof err);
    check(rc == 0, "write a one-tensor file (%s)", err);
    Buf want = {.n = 0};
    b_header(&want, 1, "a: 1\n");
    b_u32(&want, 1);
    b_name(&want, "w");
    b_u8(&want, 0);
    b_u8(&want, 1);
    b_u32(&want, 2);
    b_bytes(&want, "\x00\x00\x80\x3f\x00\x00\x00\xc0", 8);
    b_crc(&want);
    size_t n;
    unsigned char *got = slurp(p, &n);
    check(got && n == want.n && memcmp(got, want.b, n) == 0,
          "file bytes follow the documented layout (%zu bytes, want %zu)", n, want.n);
    free(got);
}

// ----------------------------------------------------------------------------
// round trip: bit-exact, deterministic

static uint32_t fbits[12] = {
    0x7fc12345u, 0x7f800001u, 0xffc00000u, 0x80000000u,   // NaN payloads, sNaN, -0
    0x00000001u, 0x807fffffu, 0x7f800000u, 0xff800000u,   // denormals, +-inf
    0x3f800000u, 0x7f7fffffu, 0x00800000u, 0xdeadbeefu,
};
static int64_t ivals[5] = {INT64_MIN, INT64_MAX, -1, 0, 1};
static float fscalar = 3.5f;
static int64_t iscalar = 42;
static float four[12];

// A TensorFile of awkward tensors (data points at static arrays).
static void sample_file(TensorFile *tf, NamedTensor t[8]) {
    for (int i = 0; i < 12; i++) four[i] = (float)i - 5.5f;
    NamedTensor s[8] = {
        {"f.special", DT_F32, 2, {3, 4}, 12, fbits},
        {"i.extremes", DT_I64, 1, {5}, 5, ivals},
        {"scalar.f", DT_F32, 0, {0}, 1, &fscalar},
        {"scalar.i", DT_I64, 0, {0}, 1, &iscalar},
        {"empty.a", DT_F32, 2, {0, 5}, 0, NULL},
        {"empty.b", DT_I64, 3, {3, 0, 2}, 0, NULL},
        {"empty.c", DT_F32, 1, {0}, 0, NULL},
        {"four.d", DT_F32, 4, {2, 1, 3, 2}, 12, four},
    };
    memcpy(t, s, sizeof s);
    tf->config = "MODEL:\n  NAME: \"virtex\"  # caf\xc3\xa9\n";
    tf->t = t;
    tf->n = 8;
}

static int same_tensor(const NamedTensor *a, const NamedTensor *b) {
    if (strcmp(a->name, b->name) || a->dtype != b->dtype || a->ndim != b->ndim ||
        a->numel != b->numel) return 0;
    for (int d = 0; d < a->ndim; d++) if (a->shape[d] != b->shape[d]) return 0;
    size_t bytes = (size_t)a->numel * (a->dtype == DT_I64 ? 8 : 4);
    if (bytes == 0) return b->data == NULL || b->numel == 0;
    return memcmp(a->data, b->data, bytes) == 0;
}

static void test_roundtrip(void) {
    NamedTensor t[8];
    TensorFile tf;
    sample_file(&tf, t);
    char err[512] = "";
    const char *p1 = tpath("rt1.ckpt"), *p2 = tpath("rt2.ckpt");
    check(tensorfile_write(&tf, p1, err, sizeof err) == 0, "write sample file (%s)", err);
    TensorFile in;
    int rc = tensorfile_read(&in, p1, err, sizeof err);
    check(rc == 0, "read sample file back (%s)", rc ? err : "ok");
    if (rc == 0) {
        check(strcmp(in.config, tf.config) == 0, "config text round-trips");
        check(in.n == tf.n, "tensor count %d == %d", in.n, tf.n);
        int same = in.n == tf.n;
        for (int i = 0; same && i < in.n; i++) same = same_tensor(&tf.t[i], &in.t[i]);
        check(same, "every tensor round-trips bit-exactly (NaN payloads, -0, denormals, "
              "int64 extremes, scalars, empty tensors), in order");
        uint32_t got[12];
        if (same) memcpy(got, in.t[0].data, sizeof got);
        check(same && got[0] == 0x7fc12345u && got[1] == 0x7f800001u && got[3] == 0x80000000u,
              "NaN payload / signalling NaN / -0.0 bits preserved");
        check(tensorfile_find(&in, "four.d") == &in.t[7] &&
              tensorfile_find(&in, "nope") == NULL, "tensorfile_find");
        check(in.t[4].data == NULL && in.t[4].numel == 0, "empty tensor has no data");
        tensorfile_free(&in);
        check(in.n == 0 && in.t == NULL && in.config == NULL, "tensorfile_free zeroes");
    }
    tensorfile_free(&in);   // safe twice

    check(tensorfile_write(&tf, p2, err, sizeof err) == 0, "write sample file again");
    size_t n1, n2;
    unsigned char *a = slurp(p1, &n1), *b = slurp(p2, &n2);
    check(a && b && n1 == n2 && memcmp(a, b, n1) == 0,
          "writing twice gives byte-identical files (%zu bytes)", n1);
    free(a);
    free(b);
    // overwrite an existing file in place
    check(tensorfile_write(&tf, p2, err, sizeof err) == 0, "overwrite an existing file");
    b = slurp(p2, &n2);
    check(b && n2 == n1, "overwritten file has the new content");
    free(b);

    // no config, no tensors
    TensorFile empty = {NULL, NULL, 0};
    const char *p3 = tpath("empty.ckpt");
    check(tensorfile_write(&empty, p3, err, sizeof err) == 0, "write an empty file (%s)", err);
    rc = tensorfile_read(&in, p3, err, sizeof err);
    check(rc == 0 && in.n == 0 && in.config && in.config[0] == 0,
          "empty file reads back with config \"\" and no tensors");
    tensorfile_free(&in);
    size_t n3;
    unsigned char *c = slurp(p3, &n3);
    check(n3 == 24, "smallest file is 24 bytes (%zu)", n3);
    free(c);
    check(count_temp_files(tmpdir) == 0, "no temp files left behind after writes");
}

// ----------------------------------------------------------------------------
// damaged files: every truncation, every flipped byte, foreign files

static void test_damage(void) {
    NamedTensor t[8];
    TensorFile tf;
    sample_file(&tf, t);
    char err[512];
    const char *good = tpath("good.ckpt"), *bad = tpath("bad.ckpt");
    tensorfile_write(&tf, good, err, sizeof err);
    size_t n;
    unsigned char *b = slurp(good, &n);
    if (!b) { check(0, "cannot read %s", good); return; }

    int missed = 0, unnamed = 0;
    long first = -1;
    for (size_t len = 0; len < n; len++) {
        spit(bad, b, len);
        TensorFile in;
        err[0] = 0;
        int rc = tensorfile_read(&in, bad, err, sizeof err);
        tensorfile_free(&in);
        if (rc == 0) { missed++; if (first < 0) first = (long)len; }
        else if (!strstr(err, bad) || !one_line(err)) unnamed++;
    }
    check(missed == 0 && unnamed == 0, "all %zu truncations rejected with a one-line error "
          "naming the file (%d accepted, first at %ld; %d without the path)", n, missed,
          first, unnamed);
    spit(bad, b, n / 2);
    TensorFile in;
    tensorfile_read(&in, bad, err, sizeof err);
    check(strstr(err, "truncated") != NULL, "truncation message: %s", err);

    missed = unnamed = 0;
    first = -1;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 2; k++) {
            unsigned char save = b[i];
            b[i] ^= k ? 0xff : 0x01;
            spit(bad, b, n);
            b[i] = save;
            err[0] = 0;
            int rc = tensorfile_read(&in, bad, err, sizeof err);
            tensorfile_free(&in);
            if (rc == 0) { missed++; if (first < 0) first = (long)i; }
            else if (!strstr(err, bad) || !one_line(err)) unnamed++;
        }
    check(missed == 0 && unnamed == 0, "all %zu single-byte corruptions rejected (%d "
          "accepted, first at %ld; %d without the path)", 2 * n, missed, first, unnamed);
    b[n - 20] ^= 0x40;   // inside the last tensor's data
    spit(bad, b, n);
    b[n - 20] ^= 0x40;
    tensorfile_read(&in, bad, err, sizeof err);
    check(strstr(err, "checksum mismatch") != NULL, "data corruption message: %s", err);

    unsigned char *longer = malloc(n + 1);
    memcpy(longer, b, n);
    longer[n] = 'x';
    spit(bad, longer, n + 1);
    check(tensorfile_read(&in, bad, err, sizeof err) == -1, "appended byte rejected: %s", err);
    free(longer);
    free(b);

    // foreign files
    spit(bad, "\x89PNG\r\n\x1a\n0000000000000000000000", 30);
    check(tensorfile_read(&in, bad, err, sizeof err) == -1 && strstr(err, bad) &&
          strstr(err, "not a virtex checkpoint (bad magic)"), "PNG file: %s", err);
    spit(bad, "hi", 2);
    check(tensorfile_read(&in, bad, err, sizeof err) == -1 && strstr(err, "bad magic"),
          "2-byte foreign file: %s", err);
    spit(bad, "VIRT", 4);
    check(tensorfile_read(&in, bad, err, sizeof err) == -1 && strstr(err, "truncated"),
          "4-byte magic prefix: %s", err);
    spit(bad, "", 0);
    check(tensorfile_read(&in, bad, err, sizeof err) == -1 && strstr(err, bad),
          "empty file: %s", err);
    Buf c;
    b_header(&c, 2, "");
    b_u32(&c, 0);
    b_crc(&c);
    check(read_crafted(&c, "v2.ckpt", err, sizeof err) == -1 &&
          strstr(err, "format version 2, this build reads 1"), "future version: %s", err);
    check(tensorfile_read(&in, tpath("does-not-exist"), err, sizeof err) == -1 &&
          strstr(err, "does-not-exist"), "missing file: %s", err);
    check(tensorfile_read(&in, tmpdir, err, sizeof err) == -1 && strstr(err, tmpdir),
          "directory: %s", err);
}

// ----------------------------------------------------------------------------
// hostile files: absurd declared lengths with valid checksums

static void test_hostile(void) {
    char err[512];
    Buf b;

    b.n = 0;
    b_bytes(&b, "VIRTEXC1", 8);
    b_u32(&b, 1);
    b_u32(&b, 0xffffffffu);           // config length 4 GiB
    b_u32(&b, 0);
    b_crc(&b);
    check(read_crafted(&b, "h1", err, sizeof err) == -1 && strstr(err, "config"),
          "config length 2^32-1 in a tiny file: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 0xffffffffu);           // 4 billion tensors
    b_crc(&b);
    check(read_crafted(&b, "h2", err, sizeof err) == -1 && strstr(err, "4294967295"),
          "tensor count 2^32-1: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_u16(&b, 65535);                 // name length 65535, 16 bytes present
    b_bytes(&b, "abcdefghijklmnop", 16);
    b_crc(&b);
    check(read_crafted(&b, "h3", err, sizeof err) == -1 && strstr(err, "name"),
          "name length 65535: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "big");
    b_u8(&b, 0); b_u8(&b, 1);
    b_u32(&b, 0x80000000u);           // dimension 2^31
    b_crc(&b);
    check(read_crafted(&b, "h4", err, sizeof err) == -1 && strstr(err, "'big'"),
          "dimension 2^31: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "huge");
    b_u8(&b, 1); b_u8(&b, 4);         // int64 (2^31-1)^4: overflows 64 bits
    for (int i = 0; i < 4; i++) b_u32(&b, 0x7fffffffu);
    b_crc(&b);
    check(read_crafted(&b, "h5", err, sizeof err) == -1 && strstr(err, "'huge'"),
          "shape (2^31-1)^4 int64: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "wide");
    b_u8(&b, 0); b_u8(&b, 2);         // 2 GiB of float32 declared in a tiny file
    b_u32(&b, 0x7fffffffu); b_u32(&b, 1);
    b_crc(&b);
    check(read_crafted(&b, "h6", err, sizeof err) == -1 && strstr(err, "'wide'"),
          "2 GiB tensor in a tiny file: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "zero");
    b_u8(&b, 0); b_u8(&b, 4);         // a 0 dimension makes the rest harmless
    b_u32(&b, 0x7fffffffu); b_u32(&b, 0); b_u32(&b, 0x7fffffffu); b_u32(&b, 0x7fffffffu);
    b_crc(&b);
    TensorFile in;
    const char *p = tpath("h7");
    spit(p, b.b, b.n);
    int rc = tensorfile_read(&in, p, err, sizeof err);
    check(rc == 0 && in.n == 1 && in.t[0].numel == 0 && in.t[0].shape[0] == 0x7fffffff,
          "shape (2^31-1,0,2^31-1,2^31-1) is a valid empty tensor (%s)", rc ? err : "ok");
    tensorfile_free(&in);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "d");
    b_u8(&b, 7); b_u8(&b, 0);         // dtype 7
    b_u32(&b, 0);
    b_crc(&b);
    check(read_crafted(&b, "h8", err, sizeof err) == -1 && strstr(err, "dtype"),
          "dtype 7: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "n");
    b_u8(&b, 0); b_u8(&b, 5);         // ndim 5
    for (int i = 0; i < 5; i++) b_u32(&b, 1);
    b_u32(&b, 0);
    b_crc(&b);
    check(read_crafted(&b, "h9", err, sizeof err) == -1 && strstr(err, "dimensions"),
          "ndim 5: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_u16(&b, 0);                     // empty name
    b_u8(&b, 0); b_u8(&b, 0);
    b_u32(&b, 0);
    b_crc(&b);
    check(read_crafted(&b, "h10", err, sizeof err) == -1 && strstr(err, "empty name"),
          "empty name: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1);
    b_name(&b, "a\nb");               // control character in a name
    b_u8(&b, 0); b_u8(&b, 0);
    b_u32(&b, 0);
    b_crc(&b);
    check(read_crafted(&b, "h11", err, sizeof err) == -1 && one_line(err),
          "newline in a name: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 2);
    for (int i = 0; i < 2; i++) {     // the same name twice
        b_name(&b, "twice");
        b_u8(&b, 0); b_u8(&b, 0);
        b_u32(&b, 0);
    }
    b_crc(&b);
    check(read_crafted(&b, "h12", err, sizeof err) == -1 && strstr(err, "duplicate") &&
          strstr(err, "'twice'"), "duplicate names: %s", err);

    b.n = 0;
    b_bytes(&b, "VIRTEXC1", 8);
    b_u32(&b, 1);
    b_u32(&b, 3);
    b_bytes(&b, "a\0b", 3);            // NUL inside the config
    b_u32(&b, 0);
    b_crc(&b);
    check(read_crafted(&b, "h13", err, sizeof err) == -1 && strstr(err, "NUL"),
          "NUL in the config: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 0);
    b_bytes(&b, "junk", 4);           // valid CRC over extra bytes
    b_crc(&b);
    check(read_crafted(&b, "h14", err, sizeof err) == -1 && strstr(err, "4 bytes"),
          "trailing data with a valid checksum: %s", err);

    b_header(&b, 1, "");
    b_u32(&b, 1000000);               // a million tensors in 30 bytes
    b_crc(&b);
    check(read_crafted(&b, "h15", err, sizeof err) == -1 && strstr(err, "1000000"),
          "tensor count 10^6 in a tiny file: %s", err);
}

// ----------------------------------------------------------------------------
// writer input validation and atomicity

static void test_atomic(void) {
    char err[512];
    float x[4] = {1, 2, 3, 4};
    NamedTensor t[2] = {{"a", DT_F32, 1, {4}, 4, x}, {"a", DT_F32, 1, {4}, 4, x}};
    TensorFile tf = {"", t, 2};
    const char *p = tpath("invalid.ckpt");
    check(tensorfile_write(&tf, p, err, sizeof err) == -1 && strstr(err, "duplicate") &&
          access(p, F_OK) != 0, "writer refuses duplicate names: %s", err);
    t[1].name = "b";
    t[1].numel = 5;
    check(tensorfile_write(&tf, p, err, sizeof err) == -1 && strstr(err, "'b'") &&
          access(p, F_OK) != 0, "writer refuses numel that disagrees with shape: %s", err);
    t[1].numel = 4;
    t[1].dtype = (DType)3;
    check(tensorfile_write(&tf, p, err, sizeof err) == -1 && strstr(err, "dtype"),
          "writer refuses an unknown dtype: %s", err);
    t[1].dtype = DT_F32;

    // a path in a missing directory
    const char *missing = tpath("no/such/dir/x.ckpt");
    check(tensorfile_write(&tf, missing, err, sizeof err) == -1 && strstr(err, missing),
          "write into a missing directory fails naming the path: %s", err);

    // the target is a directory: the rename fails after the data was written
    const char *dir = tpath("adir");
    mkdir(dir, 0755);
    check(tensorfile_write(&tf, dir, err, sizeof err) == -1 && strstr(err, dir),
          "write over a directory fails: %s", err);
    struct stat st;
    check(stat(dir, &st) == 0 && S_ISDIR(st.st_mode) && count_temp_files(tmpdir) == 0,
          "the directory is untouched and the temp file removed");

    // a write that fails midway (file size limit): the old file stays as it was
    const char *target = tpath("keep.ckpt");
    spit(target, "old content", 11);
    static float big[16384];
    NamedTensor bt = {"big", DT_F32, 1, {16384}, 16384, big};
    TensorFile btf = {"", &bt, 1};
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 4096;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    int rc = -2;
    if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
        rc = tensorfile_write(&btf, target, err, sizeof err);
        setrlimit(RLIMIT_FSIZE, &old);
    }
    signal(SIGXFSZ, oldsig);
    size_t n;
    unsigned char *c = slurp(target, &n);
    check(rc == -1 && strstr(err, target), "write past the file size limit fails: %s",
          rc == -2 ? "(setrlimit unavailable)" : err);
    check(c && n == 11 && memcmp(c, "old content", 11) == 0 &&
          count_temp_files(tmpdir) == 0,
          "a failed write leaves the old file untouched and no temp file");
    free(c);

    // the raw helpers
    AtomicFile af;
    const char *q = tpath("raw.txt");
    check(atomic_open(&af, q) == 0 && af.f, "atomic_open");
    if (af.f) {
        fputs("hello\n", af.f);
        check(access(q, F_OK) != 0, "target does not exist before commit");
        check(atomic_commit(&af) == 0 && af.f == NULL, "atomic_commit");
    }
    c = slurp(q, &n);
    check(c && n == 6 && memcmp(c, "hello\n", 6) == 0 && count_temp_files(tmpdir) == 0,
          "committed file has its content, no temp file");
    free(c);
    errno = 0;
    check(atomic_open(&af, missing) == -1 && errno == ENOENT && af.f == NULL,
          "atomic_open in a missing directory: -1, errno ENOENT");
}

// ----------------------------------------------------------------------------
// a hand-built model: load_state and checkpoint_save / checkpoint_load

typedef struct Fake {
    Model m;
    float conv[4 * 3 * 3 * 3], rm[4], words[10 * 4], bias[10], empty[1];
    int64_t nbt;
    StateEntry st[7];
} Fake;

static void fake_entry(StateEntry *e, const char *name, DType dt, int ndim, const int *shape,
                       void *data, int alias) {
    memset(e, 0, sizeof *e);
    e->name = name;
    e->dtype = dt;
    e->ndim = ndim;
    e->numel = 1;
    for (int d = 0; d < ndim; d++) { e->shape[d] = shape[d]; e->numel *= shape[d]; }
    e->data = data;
    e->alias = alias;
}

static Fake *fake_model(void) {
    Fake *f = calloc(1, sizeof *f);
    config_defaults(&f->m.cfg);
    f->m.cfg.RANDOM_SEED = 1234;
    for (int i = 0; i < 108; i++) f->conv[i] = 0.01f * (float)i - 0.5f;
    for (int i = 0; i < 4; i++) f->rm[i] = (float)i * 0.25f;
    for (int i = 0; i < 40; i++) f->words[i] = -(float)i;
    for (int i = 0; i < 10; i++) f->bias[i] = (float)i / 7;
    f->nbt = 123456789012345ll;
    fake_entry(&f->st[0], "visual.cnn.conv1.weight", DT_F32, 4, (int[]){4, 3, 3, 3},
               f->conv, 0);
    fake_entry(&f->st[1], "visual.cnn.bn1.running_mean", DT_F32, 1, (int[]){4}, f->rm, 0);
    fake_entry(&f->st[2], "visual.cnn.bn1.num_batches_tracked", DT_I64, 0, NULL, &f->nbt, 0);
    fake_entry(&f->st[3], "textual.embedding.words.weight", DT_F32, 2, (int[]){10, 4},
               f->words, 0);
    fake_entry(&f->st[4], "textual.output.weight", DT_F32, 2, (int[]){10, 4}, f->words, 1);
    fake_entry(&f->st[5], "textual.output.bias", DT_F32, 1, (int[]){10}, f->bias, 0);
    fake_entry(&f->st[6], "misc.empty", DT_F32, 2, (int[]){0, 3}, f->empty, 0);
    f->m.state = f->st;
    f->m.nstate = 7;
    return f;
}

// Copy of the fake model's values, to check that failed loads change nothing.
typedef struct Snap { float conv[108], rm[4], words[40], bias[10]; int64_t nbt; } Snap;
static void snap(const Fake *f, Snap *s) {
    memcpy(s->conv, f->conv, sizeof s->conv);
    memcpy(s->rm, f->rm, sizeof s->rm);
    memcpy(s->words, f->words, sizeof s->words);
    memcpy(s->bias, f->bias, sizeof s->bias);
    s->nbt = f->nbt;
}
static int same_as(const Fake *f, const Snap *s) {
    Snap now;
    snap(f, &now);
    return memcmp(&now, s, sizeof now) == 0;
}
static void scramble(Fake *f) {
    for (int i = 0; i < 108; i++) f->conv[i] = 9;
    for (int i = 0; i < 4; i++) f->rm[i] = 9;
    for (int i = 0; i < 40; i++) f->words[i] = 9;
    for (int i = 0; i < 10; i++) f->bias[i] = 9;
    f->nbt = 9;
}

// A shallow copy of tf's tensor list with room for 4 more, to edit freely.
static TensorFile view_of(const TensorFile *tf) {
    TensorFile v = {tf->config, calloc((size_t)tf->n + 4, sizeof(NamedTensor)), tf->n};
    memcpy(v.t, tf->t, (size_t)tf->n * sizeof(NamedTensor));
    return v;
}
static void drop(TensorFile *v, const char *name) {
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->t[i].name, name)) {
            memmove(&v->t[i], &v->t[i + 1], (size_t)(v->n - i - 1) * sizeof v->t[0]);
            v->n--;
            return;
        }
}

static void test_model_state(void) {
    Fake *f = fake_model();
    Snap orig;
    snap(f, &orig);
    char err[2048] = "";
    const char *p = tpath("model.ckpt");
    check(checkpoint_save(&f->m, p, err, sizeof err) == 0, "checkpoint_save (%s)", err);

    TensorFile tf;
    int rc = tensorfile_read(&tf, p, err, sizeof err);
    check(rc == 0, "saved checkpoint reads back (%s)", rc ? err : "ok");
    if (rc) { free(f); return; }
    int order = tf.n == 7;
    for (int i = 0; order && i < 7; i++) order = !strcmp(tf.t[i].name, f->st[i].name);
    check(order, "file holds all 7 state entries (alias included) in state order");
    NamedTensor *ow = tensorfile_find(&tf, "textual.output.weight");
    check(ow && !memcmp(ow->data, f->words, sizeof f->words), "alias entry holds the "
          "shared tensor's values");
    NamedTensor *nb = tensorfile_find(&tf, "visual.cnn.bn1.num_batches_tracked");
    check(nb && nb->dtype == DT_I64 && nb->ndim == 0 &&
          *(int64_t *)nb->data == 123456789012345ll, "int64 scalar buffer saved");
    char *dump = NULL;
    size_t dlen = 0;
    FILE *ms = open_memstream(&dump, &dlen);
    config_dump(&f->m.cfg, ms);
    fclose(ms);
    check(strcmp(tf.config, dump) == 0, "file config is config_dump's text (%zu bytes)",
          dlen);
    Config c2;
    config_defaults(&c2);
    c2.RANDOM_SEED = 0;
    char cerr[512] = "";
    rc = config_load_string(&c2, tf.config, p, cerr, sizeof cerr);
    char *dump2 = NULL;
    size_t dlen2 = 0;
    ms = open_memstream(&dump2, &dlen2);
    config_dump(&c2, ms);
    fclose(ms);
    check(rc == 0 && c2.RANDOM_SEED == 1234 && strcmp(dump, dump2) == 0,
          "the saved config loads back to the same config (%s)", rc ? cerr : "ok");
    free(dump);
    free(dump2);

    // a round trip through checkpoint_load
    scramble(f);
    rc = checkpoint_load(&f->m, p, err, sizeof err);
    check(rc == 0 && same_as(f, &orig), "checkpoint_load restores every value (%s)",
          rc ? err : "ok");

    // model_load_state failures, each naming the tensor, each leaving the model as is
    TensorFile v = view_of(&tf);
    drop(&v, "visual.cnn.bn1.running_mean");
    scramble(f);
    Snap scr;
    snap(f, &scr);
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "'visual.cnn.bn1.running_mean'") && strstr(err, "lacks"),
          "missing tensor: %s", err);
    check(same_as(f, &scr), "failed load leaves the model untouched");
    free(v.t);

    v = view_of(&tf);
    float extra[2] = {0};
    v.t[v.n++] = (NamedTensor){"visual.cnn.extra.weight", DT_F32, 1, {2}, 2, extra};
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "'visual.cnn.extra.weight'") && same_as(f, &scr),
          "unexpected tensor: %s", err);
    drop(&v, "textual.output.bias");
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "'visual.cnn.extra.weight'") &&
          strstr(err, "'textual.output.bias'"), "missing and unexpected: %s", err);
    free(v.t);

    TensorFile none = {"", NULL, 0};
    rc = model_load_state(&f->m, &none, err, sizeof err);
    check(rc == -1 && strstr(err, "7 tensors") && strstr(err, "...") && strlen(err) < 400,
          "empty file: lists 5 names and the total: %s", err);

    v = view_of(&tf);
    NamedTensor *cw = tensorfile_find(&v, "visual.cnn.conv1.weight");
    cw->shape[0] = 8;
    cw->numel = 216;
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "tensor 'visual.cnn.conv1.weight' has shape (8,3,3,3), "
          "the model expects (4,3,3,3)") && same_as(f, &scr), "wrong shape: %s", err);
    cw->shape[0] = 4;
    cw->ndim = 3;
    cw->numel = 36;
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "'visual.cnn.conv1.weight'") && strstr(err, "(4,3,3)"),
          "wrong rank: %s", err);
    free(v.t);

    v = view_of(&tf);
    float nbf[2] = {0};
    NamedTensor *nbt = tensorfile_find(&v, "visual.cnn.bn1.num_batches_tracked");
    nbt->dtype = DT_F32;
    nbt->data = nbf;
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "'visual.cnn.bn1.num_batches_tracked'") &&
          strstr(err, "float32") && same_as(f, &scr), "wrong dtype: %s", err);
    free(v.t);

    v = view_of(&tf);
    float other[40];
    memcpy(other, tensorfile_find(&tf, "textual.output.weight")->data, sizeof other);
    other[17] += 1;
    tensorfile_find(&v, "textual.output.weight")->data = other;
    rc = model_load_state(&f->m, &v, err, sizeof err);
    check(rc == -1 && strstr(err, "'textual.output.weight'") &&
          strstr(err, "'textual.embedding.words.weight'") && same_as(f, &scr),
          "shared tensor with different values under its two names: %s", err);
    free(v.t);

    // checkpoint_load ignores the training driver's sections, and only those
    v = view_of(&tf);
    float lr = 0.1f;
    int64_t step = 5;
    v.t[v.n++] = (NamedTensor){"optimizer.state.0.momentum_buffer", DT_F32, 0, {0}, 1, &lr};
    v.t[v.n++] = (NamedTensor){"trainer.step", DT_I64, 0, {0}, 1, &step};
    const char *p2 = tpath("train.ckpt");
    check(tensorfile_write(&v, p2, err, sizeof err) == 0, "write a training checkpoint");
    rc = checkpoint_load(&f->m, p2, err, sizeof err);
    check(rc == 0 && same_as(f, &orig), "checkpoint_load skips optimizer.* and trainer.* "
          "(%s)", rc ? err : "ok");
    v.t[v.n++] = (NamedTensor){"optim.lr", DT_F32, 0, {0}, 1, &lr};
    tensorfile_write(&v, p2, err, sizeof err);
    scramble(f);
    rc = checkpoint_load(&f->m, p2, err, sizeof err);
    check(rc == -1 && strncmp(err, p2, strlen(p2)) == 0 && strstr(err, "'optim.lr'") &&
          same_as(f, &scr), "other unknown names still fail, message starts with the "
          "path: %s", err);
    free(v.t);

    // a damaged checkpoint
    size_t n;
    unsigned char *b = slurp(p, &n);
    spit(p2, b, n - 1);
    free(b);
    rc = checkpoint_load(&f->m, p2, err, sizeof err);
    check(rc == -1 && strstr(err, p2) && same_as(f, &scr), "truncated checkpoint: %s", err);
    // a model whose shapes differ from the file: the path and the tensor are named
    f->st[1].shape[0] = 3;
    f->st[1].numel = 3;
    rc = checkpoint_load(&f->m, p, err, sizeof err);
    check(rc == -1 && strstr(err, p) && strstr(err, "'visual.cnn.bn1.running_mean' has "
          "shape (4), the model expects (3)"), "shape mismatch through checkpoint_load: %s",
          err);

    tensorfile_free(&tf);
    free(f);
}

// ----------------------------------------------------------------------------
// a real model (model_build): save, load into a differently seeded twin, compare bits

// Build the small real model with textual head `textual` and seed `seed`.
static int build_real(Model *m, Config *cfg, const char *textual, int seed) {
    static const char *ov[][2] = {
        {"MODEL.VISUAL.BASE_WIDTH", "4"}, {"MODEL.VISUAL.FEATURE_SIZE", "128"},
        {"DATA.VOCAB_SIZE", "40"}, {"DATA.MAX_CAPTION_LENGTH", "7"},
        {"DATA.IMAGE_CROP_SIZE", "32"},
    };
    char err[1024] = "", sv[32];
    memset(cfg, 0, sizeof *cfg);
    config_defaults(cfg);
    int rc = 0;
    for (size_t i = 0; i < sizeof ov / sizeof ov[0] && !rc; i++)
        rc = config_override(cfg, ov[i][0], ov[i][1], err, sizeof err);
    snprintf(sv, sizeof sv, "%d", seed);
    if (!rc) rc = config_override(cfg, "MODEL.TEXTUAL.NAME", textual, err, sizeof err);
    if (!rc) rc = config_override(cfg, "RANDOM_SEED", sv, err, sizeof err);
    if (rc) { check(0, "config for the real model: %s", err); return -1; }
    if (model_build(m, cfg, err, sizeof err)) {
        check(0, "model_build(%s, seed %d): %s", textual, seed, err);
        return -1;
    }
    return 0;
}

// The model's whole state as one snapshot (parameters, buffers, counters).
typedef struct State { float *p, *b; int64_t *c; } State;
static State state_copy(const Model *m) {
    State s = {malloc((size_t)m->nparams * sizeof(float) + 1),
               malloc((size_t)m->nbuffers * sizeof(float) + 1),
               malloc((size_t)m->ncounters * sizeof(int64_t) + 1)};
    memcpy(s.p, m->params, (size_t)m->nparams * sizeof(float));
    memcpy(s.b, m->buffers, (size_t)m->nbuffers * sizeof(float));
    memcpy(s.c, m->counters, (size_t)m->ncounters * sizeof(int64_t));
    return s;
}
static int state_same(const Model *m, const State *s) {
    return !memcmp(s->p, m->params, (size_t)m->nparams * sizeof(float)) &&
           !memcmp(s->b, m->buffers, (size_t)m->nbuffers * sizeof(float)) &&
           !memcmp(s->c, m->counters, (size_t)m->ncounters * sizeof(int64_t));
}
static void state_free(State *s) { free(s->p); free(s->b); free(s->c); }

// "(16,128)", as checkpoint.c writes shapes in its messages.
static const char *shape_text(char buf[64], const StateEntry *e) {
    int k = snprintf(buf, 64, "(");
    for (int d = 0; d < e->ndim; d++) k += snprintf(buf + k, (size_t)(64 - k), "%s%d", d ? "," : "", e->shape[d]);
    snprintf(buf + k, (size_t)(64 - k), ")");
    return buf;
}

static void test_real_model(void) {
    const char *H16 = "transdec_postnorm::L1_H16_A2_F32";
    Model a, b, c;
    Config ca, cb, cc;
    if (build_real(&a, &ca, H16, 11)) return;
    if (build_real(&b, &cb, H16, 12)) { model_free(&a); return; }
    check(a.nparams == b.nparams && a.nbuffers == b.nbuffers && a.ncounters == b.ncounters &&
          a.nstate == b.nstate && a.nbuffers > 0 && a.ncounters > 0,
          "twin models: %ld params, %ld buffer floats, %d counters, %d state entries",
          a.nparams, a.nbuffers, a.ncounters, a.nstate);
    // BatchNorm running stats and counters away from their initial 0 / 1 / 0
    for (long i = 0; i < a.nbuffers; i++) a.buffers[i] = 0.75f + 0.001953125f * (float)(i % 509) - (i & 1 ? 1.5f : 0.0f);
    for (int i = 0; i < a.ncounters; i++) a.counters[i] = 1000003ll * (i + 1) + ((int64_t)i << 40);
    check(memcmp(a.params, b.params, (size_t)a.nparams * sizeof(float)) != 0,
          "different RANDOM_SEEDs give different weights before the load");

    char err[2048] = "";
    const char *p = tpath("real.ckpt");
    int rc = checkpoint_save(&a, p, err, sizeof err);
    check(rc == 0, "checkpoint_save of a real model (%s)", rc ? err : "ok");
    check(count_temp_files(tmpdir) == 0, "no temp file left after checkpoint_save");
    rc = checkpoint_load(&b, p, err, sizeof err);
    check(rc == 0, "checkpoint_load into a model built with another seed (%s)", rc ? err : "ok");
    check(!memcmp(a.params, b.params, (size_t)a.nparams * sizeof(float)),
          "all %ld parameters bit-identical after the load", a.nparams);
    check(!memcmp(a.buffers, b.buffers, (size_t)a.nbuffers * sizeof(float)),
          "all %ld BatchNorm running-stat floats bit-identical", a.nbuffers);
    check(!memcmp(a.counters, b.counters, (size_t)a.ncounters * sizeof(int64_t)),
          "all %d num_batches_tracked counters identical", a.ncounters);

    // the file: config text and every state entry, in state order
    TensorFile tf;
    rc = tensorfile_read(&tf, p, err, sizeof err);
    check(rc == 0, "the real checkpoint reads back (%s)", rc ? err : "ok");
    if (rc == 0) {
        check(tf.config && tf.config[0], "the file holds the config text (%zu bytes)",
              tf.config ? strlen(tf.config) : 0);
        Config back;
        memset(&back, 0, sizeof back);
        char cerr[1024] = "";
        rc = config_load_string(&back, tf.config, p, cerr, sizeof cerr);
        check(rc == 0 && !memcmp(&back, &ca, sizeof back) && !memcmp(&back, &a.cfg, sizeof back),
              "the stored config loads (over zeroed memory) into the very Config the model "
              "was built from (%s)", rc ? cerr : "ok");
        int order = tf.n == a.nstate, bad = -1;
        for (int i = 0; order && i < tf.n; i++) {
            const StateEntry *e = &a.state[i];
            const NamedTensor *t = &tf.t[i];
            int same = !strcmp(t->name, e->name) && t->dtype == e->dtype &&
                       t->ndim == e->ndim && t->numel == e->numel;
            for (int d = 0; same && d < e->ndim; d++) same = t->shape[d] == e->shape[d];
            size_t bytes = (size_t)e->numel * (e->dtype == DT_I64 ? 8 : 4);
            if (same && bytes) same = !memcmp(t->data, e->data, bytes);
            if (!same) { order = 0; bad = i; }
        }
        check(order, "the file holds the %d state entries in state order, each with the "
              "model's name, dtype, shape and bytes (%d entries; first mismatch at %d: %s)",
              a.nstate, tf.n, bad, bad >= 0 ? a.state[bad].name : "-");
    }
    tensorfile_free(&tf);

    // a checkpoint of a differently shaped model (H32) must not load into this one
    if (build_real(&c, &cc, "transdec_postnorm::L1_H32_A2_F32", 11) == 0) {
        const char *pc = tpath("real_h32.ckpt");
        rc = checkpoint_save(&c, pc, err, sizeof err);
        check(rc == 0, "checkpoint_save of the H32 model (%s)", rc ? err : "ok");
        // the first entry (state order) whose shape differs, and the expected message
        char want[512] = "", s1[64], s2[64];
        for (int i = 0; i < b.nstate && !want[0]; i++) {
            StateEntry *e = &b.state[i], *o = model_find(&c, e->name);
            if (!o) continue;
            int same = o->ndim == e->ndim;
            for (int d = 0; same && d < e->ndim; d++) same = o->shape[d] == e->shape[d];
            if (same) continue;
            snprintf(want, sizeof want, "tensor '%s' has shape %s, the model expects %s",
                     e->name, shape_text(s1, o), shape_text(s2, e));
        }
        check(want[0] != 0, "the H32 and H16 models differ in some tensor's shape");
        State before = state_copy(&b);
        rc = checkpoint_load(&b, pc, err, sizeof err);
        check(rc == -1 && strncmp(err, pc, strlen(pc)) == 0 && strstr(err, want) && one_line(err),
              "loading an H32 checkpoint into the H16 model fails naming the path, the "
              "tensor and both shapes: %s", err);
        check(state_same(&b, &before), "the failed load leaves the model unchanged");
        state_free(&before);
        model_free(&c);
    }

    // truncated copies of the real checkpoint: rejected, named, model untouched
    size_t n;
    unsigned char *bytes = slurp(p, &n);
    if (bytes) {
        size_t clen = 0;
        TensorFile t2;
        if (tensorfile_read(&t2, p, err, sizeof err) == 0) clen = strlen(t2.config);
        tensorfile_free(&t2);
        size_t data0 = 16 + clen + 4;   // first tensor record
        size_t name0 = strlen(a.state[0].name);
        size_t first_data = data0 + 2 + name0 + 2 + 4 * (size_t)a.state[0].ndim;
        size_t cuts[] = {0, 7, 13, 16 + clen / 2, data0 + 1, first_data + 5, n / 3, n / 2,
                         n - 4 - 17, n - 4, n - 1};
        const char *pt = tpath("real_cut.ckpt");
        State before = state_copy(&b);
        int rejected = 0, named = 0, untouched = 0, ncut = (int)(sizeof cuts / sizeof cuts[0]);
        char firstbad[2048] = "";
        for (int i = 0; i < ncut; i++) {
            spit(pt, bytes, cuts[i]);
            err[0] = 0;
            rc = checkpoint_load(&b, pt, err, sizeof err);
            rejected += rc == -1;
            named += rc == -1 && strstr(err, pt) && one_line(err);
            untouched += state_same(&b, &before);
            if ((rc != -1 || !strstr(err, pt)) && !firstbad[0])
                snprintf(firstbad, sizeof firstbad, "cut at %zu: rc %d, %.1900s", cuts[i], rc, err);
        }
        check(rejected == ncut && named == ncut && untouched == ncut,
              "%d truncations of the %zu-byte checkpoint (header, config, mid-data, CRC) "
              "rejected (%d) with a one-line error naming the file (%d), model unchanged "
              "(%d)%s%s", ncut, n, rejected, named, untouched, firstbad[0] ? ": " : "",
              firstbad);
        spit(pt, bytes, n / 2);
        checkpoint_load(&b, pt, err, sizeof err);
        check(strstr(err, "truncated") != NULL && strstr(err, "tensor '"),
              "mid-data truncation names the tensor being read: %s", err);
        state_free(&before);
        free(bytes);
    } else {
        check(0, "cannot read back %s", p);
    }
    model_free(&a);
    model_free(&b);
}

// ----------------------------------------------------------------------------

void test_checkpoint(void) {
    snprintf(tmpdir, sizeof tmpdir, "%s/virtex-ckpt-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        check(0, "mkdtemp %s: %s", tmpdir, strerror(errno));
        return;
    }
    test_crc();
    test_layout();
    test_roundtrip();
    test_damage();
    test_hostile();
    test_atomic();
    test_model_state();
    test_real_model();
    remove_tree(tmpdir);
}
