// test/test_loader.c — the loader (data.c, model.h 8e).
//
// Draws a 40-image shapes dataset (32 px) and a vocabulary trained on its captions into
// a temp dir, then reads it through the loader as training does: the same batches for
// 1 and 3 workers and when resumed; every epoch a permutation of the images; the eval
// pass in file order with first captions and a short last batch; tokens against the
// tokenizer with [SOS]/[EOS] and the cut; noitpac; flipped images (checked against the
// decoded JPEG) with left/right swapped captions; masked_lm masking and multilabel
// labels (against the scenes); corrupt and missing images replaced, counted, reported
// once; errors that name what is wrong. About a second.
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "test.h"

enum { N_IMAGES = 40, SIZE = 32, VOCAB = 120, SEED = 11 };
static char tmp[160], root[200], vocab[200];
static CocoCaptions cc;          // the captions, read independently of the loader
static Tokenizer *tk;

static int remove_one(const char *p, const struct stat *s, int f, struct FTW *w) {
    (void)s; (void)f; (void)w;
    return remove(p);
}

// The shapes dataset and a vocabulary of its train captions.
static int make_data(void) {
    char err[512], path[400];
    SynthOptions o;
    synth_default_options(&o);
    snprintf(root, sizeof root, "%s/shapes", tmp);
    o.out = root;
    o.images = N_IMAGES;
    o.size = SIZE;
    o.seed = SEED;
    o.quiet = 1;
    int rc = synth_dataset(&o, err, sizeof err);
    check(rc == 0, "synth_dataset: %d images of %d px%s%s", N_IMAGES, SIZE, rc ? ": " : "", rc ? err : "");
    if (rc) return -1;
    char **caps;
    long n;
    snprintf(path, sizeof path, "%s/annotations/captions_train2017.json", root);
    if (coco_read_captions(path, &caps, &n, err, sizeof err)) { check(0, "%s", err); return -1; }
    VocabOptions vo = {VOCAB, NULL, 0};
    size_t len;
    unsigned char *m = vocab_train((const char *const *)caps, n, &vo, &len, err, sizeof err);
    free(caps);
    snprintf(vocab, sizeof vocab, "%s/vocab", tmp);
    rc = m ? vocab_write(vocab, m, len, err, sizeof err) : -1;
    free(m);
    check(rc == 0, "a %d-piece vocabulary of the captions%s%s", VOCAB, rc ? ": " : "", rc ? err : "");
    if (rc) return -1;
    snprintf(vocab, sizeof vocab, "%s/vocab.model", tmp);
    tk = tokenizer_load(vocab, err, sizeof err);
    if (!tk || coco_captions_load(&cc, root, "train", err, sizeof err)) {
        check(0, "%s", err);
        return -1;
    }
    return 0;
}

static void base_config(Config *c) {
    config_defaults(c);
    snprintf(c->DATA.ROOT, CFG_STR, "%s", root);
    snprintf(c->DATA.TOKENIZER_MODEL, CFG_STR, "%s", vocab);
    c->DATA.VOCAB_SIZE = VOCAB;
    c->DATA.IMAGE_CROP_SIZE = SIZE;
    c->DATA.MAX_CAPTION_LENGTH = 48;
    c->RANDOM_SEED = 5;
    c->OPTIM.BATCH_SIZE = 8;
}

static void set_list(char list[][64], int *n, const char *const *names, int k) {
    for (int i = 0; i < k; i++) snprintf(list[i], 64, "%s", names[i]);
    *n = k;
}

// ----------------------------------------------------------------------------
// batches kept for comparison

typedef struct Kept { int B, T; float *images; int *tokens, *noitpac, *lengths; int64_t ids[64]; } Kept;

static void keep(Kept *k, const Batch *b) {
    size_t px = (size_t)b->B * 3 * SIZE * SIZE, nt = (size_t)b->B * b->T;
    k->B = b->B;
    k->T = b->T;
    k->images = malloc(px * sizeof(float));
    memcpy(k->images, b->images, px * sizeof(float));
    k->tokens = malloc(nt * sizeof(int));
    memcpy(k->tokens, b->tokens, nt * sizeof(int));
    k->noitpac = malloc(nt * sizeof(int));
    memcpy(k->noitpac, b->noitpac, nt * sizeof(int));
    k->lengths = malloc(b->B * sizeof(int));
    memcpy(k->lengths, b->lengths, b->B * sizeof(int));
    memcpy(k->ids, b->image_ids, b->B * sizeof(int64_t));
}

static void drop(Kept *k, int n) {
    for (int i = 0; i < n; i++) {
        free(k[i].images); free(k[i].tokens); free(k[i].noitpac); free(k[i].lengths);
    }
}

static int same(const Kept *a, const Kept *b) {
    return a->B == b->B && a->T == b->T &&
           !memcmp(a->images, b->images, (size_t)a->B * 3 * SIZE * SIZE * sizeof(float)) &&
           !memcmp(a->tokens, b->tokens, (size_t)a->B * a->T * sizeof(int)) &&
           !memcmp(a->noitpac, b->noitpac, (size_t)a->B * a->T * sizeof(int)) &&
           !memcmp(a->lengths, b->lengths, a->B * sizeof(int)) &&
           !memcmp(a->ids, b->ids, a->B * sizeof(int64_t));
}

// n batches of a training stream; returns how many it got.
static int run_train(const Config *c, int workers, long start, int n, Kept *out) {
    char err[512];
    LoaderOptions o = {.split = "train", .train = 1, .workers = workers, .start = start, .quiet = 1};
    Loader *L = loader_open(c, &o, err, sizeof err);
    if (!L) { check(0, "loader_open: %s", err); return 0; }
    int got = 0;
    for (; got < n; got++) keep(&out[got], loader_next(L));
    loader_close(L);
    return got;
}

static const CocoImage *image_by_id(int64_t id) {
    for (int i = 0; i < cc.n; i++)
        if (cc.images[i].id == id) return &cc.images[i];
    return NULL;
}

// [SOS] + the tokenizer's ids + [EOS], cut to max: what a row must hold.
static int expected_tokens(const char *caption, int max, int *out) {
    int ids[256];
    int n = tokenizer_encode(tk, caption, strlen(caption), ids, 256), len = 0;
    out[len++] = 1;
    for (int i = 0; i < n && len < max; i++) out[len++] = ids[i];
    if (len < max) out[len++] = 2;
    return len;
}

// Which caption of the image (swapped: after the left/right swap) a row holds, or -1.
static int row_caption(const CocoImage *im, const int *row, int len, int max, int swapped) {
    for (int c = 0; c < im->ncaptions; c++) {
        char *cap = swapped ? caption_swap_left_right(im->captions[c]) : strdup(im->captions[c]);
        int want[256], n = expected_tokens(cap, max, want);
        free(cap);
        if (n == len && !memcmp(want, row, len * sizeof(int))) return c;
    }
    return -1;
}

// The rows' layout: lengths, T = the longest, 0 padding, noitpac = each row reversed.
static int layout_ok(const Kept *k) {
    int maxlen = 0, ok = 1;
    for (int i = 0; i < k->B; i++) {
        int n = k->lengths[i];
        maxlen = n > maxlen ? n : maxlen;
        for (int t = 0; t < k->T; t++) {
            ok &= k->tokens[i * k->T + t] == (t < n ? k->tokens[i * k->T + t] : 0);
            ok &= k->noitpac[i * k->T + t] == (t < n ? k->tokens[i * k->T + n - 1 - t] : 0);
        }
        ok &= n >= 2 && k->tokens[i * k->T] == 1 && k->noitpac[i * k->T + n - 1] == 1;
    }
    return ok && maxlen == k->T;
}

// ----------------------------------------------------------------------------
// the training stream

static void test_train_stream(void) {
    Config c;
    base_config(&c);        // the SPEC train pipeline: crop, flip, jitter, normalize
    enum { NB = 10 };       // 80 samples: two epochs of 40
    Kept a[NB], b[NB], r[4];
    double t0 = now_seconds();
    int na = run_train(&c, 1, 0, NB, a);
    double t1 = now_seconds();
    int nb = run_train(&c, 3, 0, NB, b);
    double t2 = now_seconds();
    if (na < NB || nb < NB) return;
    int eq = 1;
    for (int i = 0; i < NB; i++) eq &= same(&a[i], &b[i]);
    check(eq, "10 training batches of 8 are bitwise identical with 1 and 3 workers "
          "(images, tokens, noitpac, lengths, ids; %.2fs, %.2fs)", t1 - t0, t2 - t1);
    int nr = run_train(&c, 2, 6, 4, r);
    eq = nr == 4;
    for (int i = 0; i < nr; i++) eq &= same(&r[i], &a[6 + i]);
    check(eq, "resumed at batch 6 (2 workers): batches 6..9 equal those of the run from 0");
    drop(r, nr);

    for (int e = 0; e < 2; e++) {   // each epoch covers every image exactly once
        int seen[N_IMAGES + 1] = {0}, ok = 1;
        for (int i = 5 * e; i < 5 * e + 5; i++)
            for (int s = 0; s < a[i].B; s++) {
                int64_t id = a[i].ids[s];
                if (id < 1 || id > N_IMAGES) ok = 0; else seen[id]++;
            }
        for (int id = 1; id <= N_IMAGES; id++) ok &= seen[id] == 1;
        check(ok, "epoch %d (batches %d..%d) holds each of the 40 images once", e, 5 * e, 5 * e + 4);
    }
    int differ = 0, sorted = 1;
    for (int i = 0; i < 5; i++)
        for (int s = 0; s < 8; s++) {
            differ |= a[i].ids[s] != a[i + 5].ids[s];
            sorted &= a[i].ids[s] == i * 8 + s + 1;
        }
    check(differ && !sorted, "epochs are shuffled, and differently");

    int rows_ok = 1, layout = 1;
    for (int i = 0; i < NB; i++) {
        layout &= layout_ok(&a[i]);
        for (int s = 0; s < a[i].B; s++) {
            const CocoImage *im = image_by_id(a[i].ids[s]);
            const int *row = a[i].tokens + s * a[i].T;
            rows_ok &= im && (row_caption(im, row, a[i].lengths[s], 48, 0) >= 0 ||
                              row_caption(im, row, a[i].lengths[s], 48, 1) >= 0);
        }
    }
    check(rows_ok, "every row is [SOS] + tokenizer_encode(one of its image's captions, "
          "maybe left/right-swapped) + [EOS]");
    check(layout, "rows: lengths, T = longest, 0 padding, noitpac = the row reversed");
    drop(a, NB);
    drop(b, NB);
}

// Without crop and jitter an image is its JPEG, normalised, maybe mirrored: which one
// a sample is tells whether it was flipped, and its caption must follow.
static void test_flip(void) {
    Config c;
    base_config(&c);
    static const char *const tf[] = {"smallest_resize", "center_crop", "horizontal_flip", "normalize"};
    set_list(c.DATA.IMAGE_TRANSFORM_TRAIN, &c.DATA.n_IMAGE_TRANSFORM_TRAIN, tf, 4);
    Kept k[10];
    int nk = run_train(&c, 2, 0, 10, k);
    int match = 1, flips = 0, plain = 0, swapped_words = 0, captions_ok = 1;
    float want[2][3 * SIZE * SIZE];
    for (int i = 0; i < nk; i++)
        for (int s = 0; s < k[i].B; s++) {
            const CocoImage *im = image_by_id(k[i].ids[s]);
            char path[600], err[512];
            snprintf(path, sizeof path, "%s/%s", cc.image_dir, im->file_name);
            Image img;
            if (image_load(&img, path, err, sizeof err)) { check(0, "%s", err); return; }
            for (int ch = 0; ch < 3; ch++)
                for (int y = 0; y < SIZE; y++)
                    for (int x = 0; x < SIZE; x++) {
                        float v = (img.rgb[(y * SIZE + x) * 3 + ch] / 255.0f - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
                        want[0][(ch * SIZE + y) * SIZE + x] = v;
                        want[1][(ch * SIZE + y) * SIZE + SIZE - 1 - x] = v;
                    }
            image_free(&img);
            const float *got = k[i].images + (size_t)s * 3 * SIZE * SIZE;
            int which = -1;
            for (int f = 0; f < 2; f++) {
                double worst = 0;
                for (int p = 0; p < 3 * SIZE * SIZE; p++) {
                    double d = fabs(got[p] - want[f][p]);
                    worst = d > worst ? d : worst;
                }
                if (worst < 1e-5) which = f;
            }
            match &= which >= 0;
            if (which < 0) continue;
            flips += which;
            plain += !which;
            const int *row = k[i].tokens + s * k[i].T;
            int cap = row_caption(im, row, k[i].lengths[s], 48, which);
            captions_ok &= cap >= 0;
            if (which && cap >= 0 && row_caption(im, row, k[i].lengths[s], 48, 0) < 0) swapped_words++;
        }
    check(match, "each of 80 samples is its JPEG normalised, or mirrored (no crop, no jitter)");
    check(flips > 20 && plain > 20, "about half are flipped (%d flipped, %d not)", flips, plain);
    check(captions_ok && swapped_words > 0, "flipped samples have left/right-swapped captions "
          "(%d flipped captions needed the swap), the others the captions as written", swapped_words);
    drop(k, nk);
}

// ----------------------------------------------------------------------------
// the eval pass

static void test_eval(void) {
    Config c;
    base_config(&c);
    char err[512];
    LoaderOptions o = {.split = "train", .train = 0, .batch_size = 16, .workers = 3, .quiet = 1};
    Loader *L = loader_open(&c, &o, err, sizeof err);
    if (!L) { check(0, "loader_open (eval): %s", err); return; }
    int sizes[4] = {0}, nb = 0, order = 1, tokens = 1, pixels = 1;
    const Batch *b;
    while ((b = loader_next(L)) && nb < 4) {
        Kept k;
        keep(&k, b);
        sizes[nb] = b->B;
        tokens &= layout_ok(&k);
        for (int s = 0; s < b->B; s++) {
            const CocoImage *im = &cc.images[nb * 16 + s];
            order &= b->image_ids[s] == im->id;
            int want[64], n = expected_tokens(im->captions[0], 48, want);
            tokens &= b->lengths[s] == n && !memcmp(b->tokens + s * b->T, want, n * sizeof(int));
        }
        // the val pipeline of a 32 px image at crop 32 is the JPEG, normalised
        Image img;
        char path[600];
        snprintf(path, sizeof path, "%s/%s", cc.image_dir, cc.images[nb * 16].file_name);
        if (image_load(&img, path, err, sizeof err) == 0) {
            for (int p = 0; p < SIZE * SIZE; p++)
                for (int ch = 0; ch < 3; ch++) {
                    float v = (img.rgb[p * 3 + ch] / 255.0f - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
                    pixels &= fabsf(b->images[ch * SIZE * SIZE + p] - v) < 1e-5f;
                }
            image_free(&img);
        }
        drop(&k, 1);
        nb++;
    }
    check(nb == 3 && sizes[0] == 16 && sizes[1] == 16 && sizes[2] == 8 && !b && !loader_next(L),
          "eval pass over 40 images, batch 16: 16, 16, 8, then NULL (and NULL again)");
    check(order && tokens, "eval: images in file order, each with its first caption's tokens");
    check(pixels, "eval: the val pipeline's images (the JPEG, normalised)");
    LoaderStats st = loader_stats(L);
    check(st.batches == 3 && st.images == 40 && st.bad == 0, "stats: %ld batches, %ld images, %ld bad",
          st.batches, st.images, st.bad);
    loader_close(L);

    // the cut at MAX_CAPTION_LENGTH drops [EOS]; limit and val split
    c.DATA.MAX_CAPTION_LENGTH = 6;
    o = (LoaderOptions){.split = "train", .batch_size = 8, .workers = 1, .limit = 10, .quiet = 1};
    L = loader_open(&c, &o, err, sizeof err);
    if (!L) { check(0, "loader_open (cut): %s", err); return; }
    int cut = 1, n = 0;
    while ((b = loader_next(L))) {
        for (int s = 0; s < b->B; s++, n++) {
            int want[64], len = expected_tokens(cc.images[n].captions[0], 6, want);
            cut &= len == 6 && want[5] != 2 && b->T == 6 && b->lengths[s] == 6 &&
                   !memcmp(b->tokens + s * 6, want, 6 * sizeof(int));
        }
    }
    check(cut && n == 10, "MAX_CAPTION_LENGTH 6: [SOS] + the first 5 ids, no [EOS]; limit 10 "
          "gives 10 images (%d)", n);
    loader_close(L);
}

// ----------------------------------------------------------------------------
// the other pretraining tasks

static void test_masked_lm(void) {
    Config c;
    base_config(&c);
    snprintf(c.MODEL.NAME, sizeof c.MODEL.NAME, "masked_lm");
    char err[512];
    LoaderOptions o = {.split = "train", .batch_size = 40, .workers = 2, .quiet = 1};
    Loader *L = loader_open(&c, &o, err, sizeof err);
    if (!L) { check(0, "loader_open (masked_lm): %s", err); return; }
    const Batch *b = loader_next(L);
    int ok = b && b->masked_labels, masks = 0, randoms = 0, count_ok = 1;
    for (int s = 0; ok && s < b->B; s++) {
        int want[64], n = expected_tokens(cc.images[s].captions[0], 48, want), changed = 0;
        ok &= b->lengths[s] == n;
        const int *row = b->tokens + s * b->T, *lab = b->masked_labels + s * b->T;
        for (int t = 0; t < b->T; t++) {
            if (t >= n || t == 0 || t == n - 1) { ok &= row[t] == (t < n ? want[t] : 0) && lab[t] == 0; continue; }
            if (lab[t]) { ok &= row[t] == 3 && lab[t] == want[t]; masks++; changed++; }
            else if (row[t] != want[t]) { ok &= row[t] >= 0 && row[t] < VOCAB; randoms++; changed++; }
        }
        int k = (int)ceil((n - 2) * 0.15);
        count_ok &= changed <= k && changed >= 1;
    }
    check(ok, "masked_lm: only positions 1..len-2 change; a [MASK] is labelled with the token "
          "it hides, other positions 0");
    check(count_ok && masks > 0, "masked_lm: 1..ceil(0.15 (len-2)) changes per caption "
          "(%d [MASK], %d random)", masks, randoms);
    loader_close(L);
}

static void test_multilabel(void) {
    Config c;
    base_config(&c);
    snprintf(c.MODEL.NAME, sizeof c.MODEL.NAME, "multilabel_classification");
    char err[512];
    LoaderOptions o = {.split = "train", .batch_size = 40, .workers = 2, .quiet = 1};
    Loader *L = loader_open(&c, &o, err, sizeof err);
    if (!L) { check(0, "loader_open (multilabel): %s", err); return; }
    const Batch *b = loader_next(L);
    int ok = b && b->labels && b->B == 40;
    for (int s = 0; ok && s < b->B; s++) {
        SynthScene sc;
        synth_image(&sc, NULL, SYNTH_COCO_TRAIN, b->image_ids[s] - 1, SIZE, SEED);
        int want[SYNTH_CLASSES + 2] = {0};
        for (int i = 0; i < sc.n; i++) want[sc.obj[i].colour * SYNTH_SHAPES + sc.obj[i].shape + 1] = 1;
        int t = 0;
        for (int l = 1; l <= SYNTH_CLASSES; l++)
            if (want[l]) ok &= t < b->nlabels && b->labels[s * b->nlabels + t++] == l;
        for (; t < b->nlabels; t++) ok &= b->labels[s * b->nlabels + t] == 0;
    }
    check(ok, "multilabel: each image's labels are its shapes' category ids, ascending, 0-padded "
          "(nlabels %d)", b ? b->nlabels : 0);
    loader_close(L);
}

// ----------------------------------------------------------------------------
// bad images and errors

// Run fn with stderr going to a file; returns what it printed (malloc'd).
static char *capture_stderr(void (*fn)(void *), void *arg) {
    char path[300];
    snprintf(path, sizeof path, "%s/stderr.txt", tmp);
    fflush(stderr);
    int saved = dup(2), fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    dup2(fd, 2);
    close(fd);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    size_t n;
    return (char *)slurp(path, &n);
}

typedef struct BadRun { Config c; int ok_eval, ok_train; long bad_eval, bad_train; } BadRun;

static void bad_runs(void *arg) {
    BadRun *r = arg;
    char err[512];
    LoaderOptions o = {.split = "train", .batch_size = 8, .workers = 3};
    Loader *L = loader_open(&r->c, &o, err, sizeof err);
    if (!L) return;
    const Batch *b = loader_next(L);      // positions 5 (corrupt) and 6 (missing) -> image 7
    r->ok_eval = b && b->image_ids[4] == cc.images[4].id && b->image_ids[5] == cc.images[7].id &&
                 b->image_ids[6] == cc.images[7].id && b->image_ids[7] == cc.images[7].id;
    while (loader_next(L)) {}
    r->bad_eval = loader_stats(L).bad;
    loader_close(L);
    o.train = 1;
    L = loader_open(&r->c, &o, err, sizeof err);
    if (!L) return;
    r->ok_train = 1;
    for (int i = 0; i < 15; i++) {        // three epochs
        b = loader_next(L);
        for (int s = 0; s < b->B; s++)
            r->ok_train &= b->image_ids[s] != cc.images[5].id && b->image_ids[s] != cc.images[6].id;
    }
    r->bad_train = loader_stats(L).bad;
    loader_close(L);
}

static void test_bad_images(void) {
    char corrupt[600], missing[600];
    snprintf(corrupt, sizeof corrupt, "%s/%s", cc.image_dir, cc.images[5].file_name);
    snprintf(missing, sizeof missing, "%s/%s", cc.image_dir, cc.images[6].file_name);
    FILE *f = fopen(corrupt, "wb");
    fputs("\xff\xd8\xff\xe0 this is not a JPEG at all", f);
    fclose(f);
    remove(missing);
    BadRun r = {.ok_eval = 0};
    base_config(&r.c);
    char *out = capture_stderr(bad_runs, &r);
    check(r.ok_eval, "eval: a corrupt (5) and a missing (6) image are replaced by the next "
          "readable one (7)");
    check(r.bad_eval == 2 && r.bad_train == 2, "LoaderStats.bad counts them: %ld (eval), %ld "
          "(3 training epochs)", r.bad_eval, r.bad_train);
    check(r.ok_train, "training: neither appears in 3 epochs");
    int lines = 0, c_seen = 0, m_seen = 0;
    for (char *p = out; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
        lines++;
        char *e = strchr(p, '\n');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        c_seen += memmem(p, n, corrupt, strlen(corrupt)) && memmem(p, n, "warning", 7);
        m_seen += memmem(p, n, missing, strlen(missing)) && memmem(p, n, "warning", 7);
    }
    check(lines == 4 && c_seen == 2 && m_seen == 2, "each bad path is reported once per loader, "
          "by path (%d lines: %s)", lines, out ? out : "");
    free(out);
}

static void expect_error(const Config *c, const LoaderOptions *o, const char *a, const char *b,
                         const char *what) {
    char err[1024] = "";
    Loader *L = loader_open(c, o, err, sizeof err);
    check(!L && strstr(err, a) && (!b || strstr(err, b)) && !strchr(err, '\n'),
          "%s: \"%s\"", what, err);
    loader_close(L);
}

static void test_errors(void) {
    Config c;
    base_config(&c);
    LoaderOptions o = {.split = "train", .train = 1, .workers = 1, .quiet = 1};
    char path[400];
    snprintf(c.DATA.ROOT, CFG_STR, "%s/nowhere", tmp);
    expect_error(&c, &o, "DATA.ROOT", c.DATA.ROOT, "missing DATA.ROOT");
    base_config(&c);
    o.split = "test";
    snprintf(path, sizeof path, "%s/annotations/captions_test2017.json", root);
    expect_error(&c, &o, path, NULL, "missing annotation file");
    o.split = "train";
    snprintf(c.DATA.TOKENIZER_MODEL, CFG_STR, "%s/none.model", tmp);
    expect_error(&c, &o, "DATA.TOKENIZER_MODEL", c.DATA.TOKENIZER_MODEL, "bad tokenizer path");
    base_config(&c);
    c.DATA.VOCAB_SIZE = 50;
    expect_error(&c, &o, "DATA.VOCAB_SIZE", "120 pieces", "tokenizer larger than DATA.VOCAB_SIZE");
    base_config(&c);
    o.batch_size = N_IMAGES + 1;
    expect_error(&c, &o, "batch size 41", "40 images", "batch larger than the split (train)");
    o.train = 0;
    Loader *L = loader_open(&c, &o, path, sizeof path);
    const Batch *b = L ? loader_next(L) : NULL;
    check(b && b->B == N_IMAGES && !loader_next(L), "eval: batch 41 over 40 images is one short batch");
    loader_close(L);
    o.batch_size = 0;
    static const char *const nocrop[] = {"smallest_resize", "normalize"};
    set_list(c.DATA.IMAGE_TRANSFORM_VAL, &c.DATA.n_IMAGE_TRANSFORM_VAL, nocrop, 2);
    expect_error(&c, &o, "DATA.IMAGE_TRANSFORM_VAL", "32x32 (DATA.IMAGE_CROP_SIZE)", "transforms leaving no SxS image");
    static const char *const unknown[] = {"random_rotate"};
    set_list(c.DATA.IMAGE_TRANSFORM_VAL, &c.DATA.n_IMAGE_TRANSFORM_VAL, unknown, 1);
    expect_error(&c, &o, "DATA.IMAGE_TRANSFORM_VAL", "random_rotate", "unknown transform");
}

void test_loader(void) {
    snprintf(tmp, sizeof tmp, "%.120s/virtex-loader-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) {
        check(0, "mkdtemp %s: %s", tmp, strerror(errno));
        return;
    }
    if (make_data() == 0) {
        test_train_stream();
        test_flip();
        test_eval();
        test_masked_lm();
        test_multilabel();
        test_errors();
        test_bad_images();       // last: it damages the dataset
    }
    tokenizer_free(tk);
    coco_captions_free(&cc);
    nftw(tmp, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}
