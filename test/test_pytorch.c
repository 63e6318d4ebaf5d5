// test/test_pytorch.c — PyTorch interop (pytorch.c): torch.save files written by PyTorch
// itself (test/make_torch_fixtures.py) are read element-exactly, imported onto the C
// model whose loss must match PyTorch's, exported and re-imported bit-exactly, and
// hostile files are refused with a message, never a crash.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "test.h"

static const char *const OVERRIDES[] = {"MODEL.VISUAL.BASE_WIDTH", "4", "MODEL.VISUAL.FEATURE_SIZE", "128"};

// The fixture model's config: configs/small/tiny_test.yaml at base width 4.
static int tiny_config(Config *c, const char *textual) {
    char err[1024];
    const char *path = fixture_path("../../configs/small/tiny_test.yaml");
    if (config_load(c, path, 4, (char **)OVERRIDES, err, sizeof err) ||
        (textual && config_override(c, "MODEL.TEXTUAL.NAME", textual, err, sizeof err))) {
        check(0, "config: %s", err);
        return -1;
    }
    return 0;
}

// Every tensor of `got` equals the expected one `prefix`+name bit for bit (dtype, shape
// and bytes), and every expected one under prefix is there.
static void check_exact(const char *what, const TensorFile *got, const TensorFile *want,
                        const char *prefix) {
    int n = 0, bad = 0, expected = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < want->n; i++) expected += !strncmp(want->t[i].name, prefix, pl);
    for (int i = 0; i < got->n; i++) {
        char name[1100];
        snprintf(name, sizeof name, "%s%s", prefix, got->t[i].name);
        const NamedTensor *w = tensorfile_find(want, name), *g = &got->t[i];
        int ok = w && w->dtype == g->dtype && w->ndim == g->ndim && w->numel == g->numel &&
                 !memcmp(w->shape, g->shape, sizeof(int) * (size_t)g->ndim) &&
                 (!g->numel || !memcmp(w->data, g->data, (size_t)g->numel * (g->dtype == DT_I64 ? 8 : 4)));
        if (!ok && bad++ < 3) printf("    %s: '%s' differs from %s\n", what, g->name, name);
        n++;
    }
    check(bad == 0 && n == expected, "%s: %d/%d tensors bit-exact (dtype, shape, values)", what,
          n - bad, expected);
}

// The model's state entries under `under` equal want's `prefix`+name, bit for bit.
static void check_model(const char *what, Model *m, const TensorFile *want, const char *prefix,
                        const char *under) {
    int n = 0, bad = 0;
    for (int i = 0; i < m->nstate; i++) {
        const StateEntry *e = &m->state[i];
        if (strncmp(e->name, under, strlen(under))) continue;
        char name[1100];
        snprintf(name, sizeof name, "%s%s", prefix, e->name);
        const NamedTensor *w = tensorfile_find(want, name);
        n++;
        if (!w || w->numel != e->numel ||
            memcmp(w->data, e->data, (size_t)e->numel * (e->dtype == DT_I64 ? 8 : 4))) {
            if (bad++ < 3) printf("    %s: '%s' differs\n", what, e->name);
        }
    }
    check(bad == 0 && n > 0, "%s: %d state entries under '%s' equal, bit for bit", what, n - bad, under);
}

static int *to_int(const NamedTensor *t) {
    int *p = xmalloc((size_t)t->numel * sizeof(int));
    for (long i = 0; i < t->numel; i++) p[i] = (int)((int64_t *)t->data)[i];
    return p;
}

// The imported model's eval-mode loss on the fixture batch against PyTorch's.
static void check_loss(Model *m, const TensorFile *x) {
    NamedTensor *img = tensorfile_find(x, "input.images"), *tok = tensorfile_find(x, "input.tokens"),
                *rev = tensorfile_find(x, "input.noitpac"), *len = tensorfile_find(x, "input.lengths"),
                *lf = tensorfile_find(x, "eval.loss_forward"), *lb = tensorfile_find(x, "eval.loss_backward");
    if (!img || !tok || !rev || !len || !lf || !lb) { check(0, "fixture lacks the batch or losses"); return; }
    Batch b = {.B = tok->shape[0], .T = tok->shape[1], .images = img->data};
    b.tokens = to_int(tok);
    b.noitpac = to_int(rev);
    b.lengths = to_int(len);
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    g.training = 0;
    g.grad_enabled = 0;
    Losses L = model_loss(&g, m, &b);
    float wf = *(float *)lf->data, wb = *(float *)lb->data;
    check(fabsf(L.forward - wf) <= 1e-5f * wf && fabsf(L.backward - wb) <= 1e-5f * wb,
          "imported model's eval loss: C %.7f %.7f, PyTorch %.7f %.7f (rel 1e-5)", L.forward,
          L.backward, wf, wb);
    graph_free(&g);
    free(b.tokens); free(b.noitpac); free(b.lengths);
}

// ----------------------------------------------------------------------------
// hostile files, built here: a zip of stored entries

typedef struct Zipper { unsigned char *p; size_t n; unsigned char cd[4096]; size_t ncd; int count; } Zipper;

static void zput(unsigned char *b, size_t *n, uint64_t v, int k) {
    for (int i = 0; i < k; i++) b[(*n)++] = (unsigned char)(v >> (8 * i));
}

static void zip_add(Zipper *z, const char *name, const void *data, size_t len) {
    size_t nl = strlen(name);
    z->p = realloc(z->p, z->n + 30 + nl + len);
    uint32_t crc = crc32_update(0, data, len);
    size_t off = z->n;
    zput(z->p, &z->n, 0x04034b50, 4); zput(z->p, &z->n, 20, 2); zput(z->p, &z->n, 0, 2);
    zput(z->p, &z->n, 0, 2); zput(z->p, &z->n, 0, 4); zput(z->p, &z->n, crc, 4);
    zput(z->p, &z->n, len, 4); zput(z->p, &z->n, len, 4); zput(z->p, &z->n, nl, 2);
    zput(z->p, &z->n, 0, 2);
    memcpy(z->p + z->n, name, nl); z->n += nl;
    memcpy(z->p + z->n, data, len); z->n += len;
    unsigned char *c = z->cd;
    zput(c, &z->ncd, 0x02014b50, 4); zput(c, &z->ncd, 20, 2); zput(c, &z->ncd, 20, 2);
    zput(c, &z->ncd, 0, 2); zput(c, &z->ncd, 0, 2); zput(c, &z->ncd, 0, 4);
    zput(c, &z->ncd, crc, 4); zput(c, &z->ncd, len, 4); zput(c, &z->ncd, len, 4);
    zput(c, &z->ncd, nl, 2); zput(c, &z->ncd, 0, 2); zput(c, &z->ncd, 0, 2);
    zput(c, &z->ncd, 0, 2); zput(c, &z->ncd, 0, 2); zput(c, &z->ncd, 0, 4);
    zput(c, &z->ncd, off, 4);
    memcpy(c + z->ncd, name, nl); z->ncd += nl;
    z->count++;
}

static void zip_finish(Zipper *z) {
    z->p = realloc(z->p, z->n + z->ncd + 22);
    size_t cdoff = z->n;
    memcpy(z->p + z->n, z->cd, z->ncd); z->n += z->ncd;
    zput(z->p, &z->n, 0x06054b50, 4); zput(z->p, &z->n, 0, 4);
    zput(z->p, &z->n, (uint64_t)z->count, 2); zput(z->p, &z->n, (uint64_t)z->count, 2);
    zput(z->p, &z->n, z->ncd, 4); zput(z->p, &z->n, cdoff, 4); zput(z->p, &z->n, 0, 2);
}

// Read bytes as a .pth: must fail with a message that names the file and contains want.
static void expect_refused(const char *what, const void *data, size_t n, const char *want) {
    TensorFile tf;
    char err[1024] = "";
    int rc = pth_read_state_memory(&tf, data, n, "bad.pth", err, sizeof err);
    check(rc == -1 && !strncmp(err, "bad.pth: ", 9) && strstr(err, want) && !strchr(err, '\n'),
          "%-34s refused: %s", what, err);
    if (rc == 0) tensorfile_free(&tf);
}

// A torch.save-like archive whose data.pkl is `pkl`, with storage "0" of `bytes` bytes.
static void refused_pickle(const char *what, const char *pkl, size_t plen, size_t bytes, const char *want) {
    Zipper z = {0};
    unsigned char *data = calloc(1, bytes + 1);
    zip_add(&z, "archive/data.pkl", pkl, plen);
    zip_add(&z, "archive/data/0", data, bytes);
    zip_add(&z, "archive/version", "3\n", 2);
    zip_finish(&z);
    expect_refused(what, z.p, z.n, want);
    free(z.p);
    free(data);
}

// Append n bytes to a pickle being built.
static size_t add(char *out, size_t at, const void *s, size_t n) {
    memcpy(out + at, s, n);
    return at + n;
}
#define ADD(lit) (n = add(out, n, lit, sizeof lit - 1))

// LONG1 of 8 bytes: v.
static size_t add_long(char *out, size_t n, long v) {
    out[n++] = (char)0x8a;
    out[n++] = 8;
    return add(out, n, &v, 8);
}

// A state dict {"w": tensor} with this storage numel, offset, size and stride (1-d).
static size_t tensor_pickle(char *out, long numel, long offset, long size, long stride) {
    size_t n = 0;
    ADD("\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n");
    ADD("((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0" "X\x03\x00\x00\x00" "cpu");
    n = add_long(out, n, numel);
    ADD("tQ");
    n = add_long(out, n, offset);
    n = add_long(out, n, size);
    ADD("\x85");
    n = add_long(out, n, stride);
    ADD("\x85\x89" "ccollections\nOrderedDict\n)RtRs.");
    return n;
}

// A string literal and its length (without the final NUL).
#define LIT(s) s, sizeof s - 1

static void test_hostile(void) {
    size_t n;
    unsigned char *good = slurp(fixture_path("torch_zoo.pth"), &n);
    if (!good) { check(0, "torch_zoo.pth missing"); return; }
    expect_refused("wrong magic", "hello, world: not a zip at all", 30, "not a torch.save file");
    expect_refused("empty", "", 0, "not a torch.save file");
    size_t cuts[] = {n - 1, n - 30, n / 2, 200, 40, 4};
    for (int i = 0; i < 6; i++) expect_refused("truncated zip", good, cuts[i], "zip");
    unsigned char *bad = malloc(n);
    memcpy(bad, good, n);
    bad[64 + 100] ^= 0x55;          // in data.pkl (the first entry, its data 64-byte aligned)
    expect_refused("a flipped byte (CRC)", bad, n, "CRC");
    free(bad);
    // found by make fuzz: a storage key naming an archive entry with a newline in it;
    // the message must stay one line
    size_t nc;
    unsigned char *ctl = slurp(fixture_path("pth_control_chars.pth"), &nc);
    if (ctl) expect_refused("an entry name with control characters", ctl, nc, "has no entry");
    else check(0, "pth_control_chars.pth missing");
    free(ctl);

    char p[512];
    refused_pickle("unknown opcode (INST)", LIT("\x80\x02i os\nsystem\n."), 4, "opcode 0x69");
    refused_pickle("GLOBAL outside the list", LIT("\x80\x02" "cos\nsystem\nX\x02\x00\x00\x00" "lsR."), 4,
                   "global 'os.system' is not allowed");
    refused_pickle("builtins.eval", LIT("\x80\x02" "cbuiltins\neval\n."), 4, "global 'builtins.eval'");
    refused_pickle("no STOP", LIT("\x80\x02}"), 4, "without STOP");
    refused_pickle("memo get of nothing", LIT("\x80\x02h\x05."), 4, "memo get");
    size_t k = tensor_pickle(p, 1L << 40, 0, 4, 1);
    refused_pickle("huge storage size", p, k, 16, "declares 1099511627776 elements");
    k = tensor_pickle(p, 4, 0, 1L << 40, 1);
    refused_pickle("huge tensor size", p, k, 16, "reaches element");
    k = tensor_pickle(p, 4, 9, 1, 1);
    refused_pickle("offset past the storage", p, k, 16, "offset 9 lies past");
    k = tensor_pickle(p, 4, 2, 3, 1);
    refused_pickle("view past the storage", p, k, 16, "reaches element 4");
    k = tensor_pickle(p, 4, 0, 3, 1L << 62);
    refused_pickle("huge stride", p, k, 16, "out of range");
    k = tensor_pickle(p, 4, 0, 4, 1);
    Zipper z = {0};
    zip_add(&z, "archive/data.pkl", p, k);
    zip_add(&z, "archive/version", "3\n", 2);
    zip_finish(&z);
    expect_refused("storage without its entry", z.p, z.n, "no entry archive/data/0");
    free(z.p);
    // a deflate entry that claims 2 GB from a few bytes
    unsigned char *d = malloc(n);
    memcpy(d, good, n);
    for (size_t i = 0; i + 46 < n; i++)
        if (d[i] == 0x50 && d[i + 1] == 0x4b && d[i + 2] == 1 && d[i + 3] == 2) {
            d[i + 10] = 8;                                        // method: deflate
            d[i + 24] = 0; d[i + 25] = 0; d[i + 26] = 0; d[i + 27] = 0x7f;   // usize 2 GB
            break;
        }
    expect_refused("huge inflated size", d, n, "too large or impossible");
    free(d);

    // random damage: every outcome is a success or a one-line message, never a crash
    Rng r;
    rng_seed(&r, 6);
    int ok = 0, refused = 0, badmsg = 0;
    unsigned char *m = malloc(n);
    for (int it = 0; it < 3000; it++) {
        memcpy(m, good, n);
        int flips = 1 + (int)(rng_next(&r) % 4);
        for (int f = 0; f < flips; f++) {
            // mostly the pickle and the directories, where structure lives
            size_t at = rng_next(&r) % 2 ? rng_next(&r) % n : (size_t)(rng_next(&r) % 1100);
            m[at < n ? at : n - 1] = (unsigned char)rng_next(&r);
        }
        TensorFile tf;
        char err[1024] = "";
        if (pth_read_state_memory(&tf, m, n, "bad.pth", err, sizeof err) == 0) { ok++; tensorfile_free(&tf); }
        else { refused++; badmsg += strncmp(err, "bad.pth: ", 9) != 0 || strchr(err, '\n'); }
    }
    free(m);
    check(badmsg == 0, "3000 randomly damaged files: %d read, %d refused, each with one line", ok, refused);
    free(good);
}

// ----------------------------------------------------------------------------

// Read a fixture .pth: 0 or a failed check.
static int read_pth(TensorFile *tf, const char *name) {
    char err[1024];
    int rc = pth_read_state(tf, fixture_path(name), err, sizeof err);
    check(rc == 0, "read %s%s%s", name, rc ? ": " : "", rc ? err : "");
    return rc;
}

// Export m in fmt, read it back and import it onto a freshly initialised model (other
// seed): the exported part must come back bit for bit.
static void round_trip(Model *m, const TensorFile *x, PthFormat fmt, const char *fname,
                       const char *partial, const char *under) {
    char path[256], err[1024];
    snprintf(path, sizeof path, "/tmp/virtex_pytorch_%d_%s.pth", (int)getpid(), fname);
    if (pth_export(m, path, fmt, 7, err, sizeof err)) { check(0, "export %s: %s", fname, err); return; }
    TensorFile tf;
    int rc = pth_read_state(&tf, path, err, sizeof err);
    unlink(path);
    if (rc) { check(0, "read back the %s export: %s", fname, err); return; }
    Config c;
    Model m2;
    if (tiny_config(&c, NULL)) { tensorfile_free(&tf); return; }
    c.RANDOM_SEED = 99;
    if (model_build(&m2, &c, err, sizeof err)) { check(0, "%s", err); tensorfile_free(&tf); return; }
    rc = pth_import_state(&m2, &tf, partial, NULL, err, sizeof err);
    check(rc == 0, "the %s export imports again%s%s", fname, rc ? ": " : "", rc ? err : "");
    char what[64];
    snprintf(what, sizeof what, "round trip (%s)", fname);
    if (!rc) check_model(what, &m2, x, "state.", under);
    model_free(&m2);
    tensorfile_free(&tf);
}

void test_pytorch(void) {
    TensorFile x, tf;
    char err[2048];
    if (tensorfile_read(&x, fixture_path("torch_expected.bin"), err, sizeof err)) {
        check(0, "%s", err);
        return;
    }
    // what the fixture script confirmed with PyTorch when it ran
    for (int i = 0; i < x.n; i++)
        if (!strncmp(x.t[i].name, "record.", 7))
            check(*(int64_t *)x.t[i].data == 1, "recorded at generation: %s", x.t[i].name + 7);

    // the official layout: {"model": state_dict, "optimizer": ..., "iteration": ...}
    if (!read_pth(&tf, "torch_virtex.pth")) {
        check_exact("torch_virtex.pth (model)", &tf, &x, "state.");
        Config c;
        Model m;
        if (!tiny_config(&c, NULL) && !model_build_layout(&m, &c, err, sizeof err)) {
            int rc = pth_import_state(&m, &tf, NULL, NULL, err, sizeof err);
            check(rc == 0, "import onto the tiny model%s%s", rc ? ": " : "", rc ? err : "");
            check_model("imported model", &m, &x, "state.", "");
            check_loss(&m, &x);
            round_trip(&m, &x, PTH_VIRTEX, "virtex", NULL, "");
            round_trip(&m, &x, PTH_TORCHVISION, "torchvision", "textual.,backward_textual.", "visual.cnn.");
            round_trip(&m, &x, PTH_DETECTRON2, "detectron2", "textual.|backward_textual.", "visual.cnn.");
            model_free(&m);
        }
        // a config that does not fit the tensors is named as such
        if (!tiny_config(&c, "transdec_postnorm::L2_H64_A2_F128") &&
            !model_build_layout(&m, &c, err, sizeof err)) {
            int rc = pth_import_state(&m, &tf, NULL, NULL, err, sizeof err);
            check(rc == -1 && strstr(err, "textual head L1 H64 F128") && strstr(err, "config describes L2"),
                  "wrong config refused: %s", err);
            model_free(&m);
        }
        tensorfile_free(&tf);
    }

    // a torchvision ResNet state_dict (with fc) into visual.cnn.*
    if (!read_pth(&tf, "torch_resnet.pth")) {
        Config c;
        Model m;
        if (!tiny_config(&c, NULL) && !model_build(&m, &c, err, sizeof err)) {
            int rc = pth_import_state(&m, &tf, NULL, NULL, err, sizeof err);
            check(rc == -1 && strstr(err, "missing: 'textual.") && strstr(err, "--partial"),
                  "torchvision without --partial lists what is missing: %.160s...", err);
            rc = pth_import_state(&m, &tf, "textual.,backward_textual.", NULL, err, sizeof err);
            check(rc == 0, "torchvision ResNet with --partial%s%s", rc ? ": " : "", rc ? err : "");
            check_model("torchvision import", &m, &x, "state.", "visual.cnn.");
            model_free(&m);
        }
        tensorfile_free(&tf);
    }

    // the zoo of dtypes and layouts, stored and deflated, under "state_dict" / "module."
    if (!read_pth(&tf, "torch_zoo.pth")) { check_exact("torch_zoo.pth", &tf, &x, "zoo."); tensorfile_free(&tf); }
    if (!read_pth(&tf, "torch_zoo_deflated.pth")) {
        check_exact("torch_zoo_deflated.pth", &tf, &x, "zoo.");
        tensorfile_free(&tf);
    }
    test_hostile();
    tensorfile_free(&x);
}
