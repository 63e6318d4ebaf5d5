// test/test_transfer.c — the transfer evaluations (eval.c section 10b): average
// precision, StratifiedKFold folds, the liblinear-style SVM and the VOC07 cost
// selection against sklearn; the linear probe's SGD steps against torch, and that it
// learns a separable problem; .npy files byte-identical to numpy's np.save (references
// by test/make_transfer_fixtures.py); then the whole pipeline on a tiny shapes dataset
// and a tiny model (features, VOC07 SVMs, linear probe, `virtex features`).
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "test.h"

static TensorFile tf;

static NamedTensor *need(const char *name) {
    NamedTensor *t = tensorfile_find(&tf, name);
    if (!t) check(0, "fixture transfer.bin has no %s (rerun test/make_transfer_fixtures.py)", name);
    return t;
}

static const int64_t *I64(NamedTensor *t) { return (const int64_t *)t->data; }
static const float *F32(NamedTensor *t) { return (const float *)t->data; }

// average_precision_score on score sets with and without ties, to 1e-6.
static void test_ap(void) {
    char name[32];
    for (int j = 0; j < 5; j++) {
        snprintf(name, sizeof name, "ap.s.%d", j);
        NamedTensor *s = need(name);
        snprintf(name, sizeof name, "ap.y.%d", j);
        NamedTensor *y = need(name);
        snprintf(name, sizeof name, "ap.v.%d", j);
        NamedTensor *v = need(name);
        if (!s || !y || !v) return;
        long n = s->numel;
        double *sc = malloc(n * sizeof *sc);
        int *pos = malloc(n * sizeof *pos);
        for (long i = 0; i < n; i++) { sc[i] = F32(s)[i]; pos[i] = (int)I64(y)[i]; }
        double got = average_precision(sc, pos, n);
        check(fabs(got - F32(v)[0]) < 1e-6, "average_precision set %d (n %ld%s): %.7f, sklearn %.7f", j, n,
              j % 2 ? ", ties" : "", got, F32(v)[0]);
        free(sc);
        free(pos);
    }
    double s3[3] = {0.1, 0.2, 0.3};
    int none[3] = {0, 0, 0};
    check(average_precision(s3, none, 3) == 0, "average_precision with no positive is 0 (sklearn 1.2)");
}

// StratifiedKFold(3) fold ids, exactly.
static void test_folds(void) {
    char name[32];
    for (int j = 0; j < 7; j++) {
        snprintf(name, sizeof name, "fold.y.%d", j);
        NamedTensor *y = need(name);
        snprintf(name, sizeof name, "fold.f.%d", j);
        NamedTensor *f = need(name);
        if (!y || !f) return;
        long n = y->numel, bad = 0;
        int *yy = malloc(n * sizeof *yy), *fold = malloc(n * sizeof *fold);
        for (long i = 0; i < n; i++) yy[i] = (int)I64(y)[i];
        stratified_folds(yy, n, 3, fold);
        for (long i = 0; i < n; i++) bad += fold[i] != I64(f)[i];
        check(bad == 0, "stratified_folds case %d (n %ld): %ld of %ld fold ids differ from StratifiedKFold(3)",
              j, n, bad, n);
        free(yy);
        free(fold);
    }
}

// The SVM of each class and cost on trainval against LinearSVC: weights, decision
// values and the AP they give on test; then the whole per-class protocol.
static void test_svm(void) {
    NamedTensor *xtr = need("voc.xtr"), *xte = need("voc.xte"), *ltr = need("voc.ltr"), *lte = need("voc.lte");
    NamedTensor *dec = need("voc.dec"), *wref = need("voc.w"), *cv = need("voc.cv_ap"), *best = need("voc.best");
    NamedTensor *apref = need("voc.ap");
    if (!xtr || !xte || !ltr || !lte || !dec || !wref || !cv || !best || !apref) return;
    int ntr = xtr->shape[0], nte = xte->shape[0], d = xtr->shape[1], K = ltr->shape[1];
    int *y = malloc(ntr * sizeof *y), *pos = malloc(nte * sizeof *pos);
    double *w = malloc((d + 1) * sizeof *w), *sc = malloc(nte * sizeof *sc), *sref = malloc(nte * sizeof *sref);
    float *wf = malloc((d + 1) * sizeof *wf), *df = malloc(nte * sizeof *df);
    signed char *lt = malloc(ntr), *le = malloc(nte);
    double worst_ap = 0;
    for (int c = 0; c < K; c++) {
        for (int i = 0; i < ntr; i++) y[i] = I64(ltr)[i * K + c] == 1 ? 1 : -1;
        for (int k = 0; k < 4; k++) {
            SvmOptions o = {VOC07_COSTS[k], 2.0, 1e-4, 2000, (uint64_t)k};
            long passes = svm_train(F32(xtr), d, NULL, ntr, y, &o, w);
            const float *wr = F32(wref) + (size_t)(c * 4 + k) * (d + 1), *dr = F32(dec) + (size_t)(c * 4 + k) * nte;
            for (int j = 0; j <= d; j++) wf[j] = (float)w[j];
            long nv = 0;
            for (int i = 0; i < nte; i++) {
                df[i] = (float)svm_decision(w, F32(xte) + (size_t)i * d, d);
                if (I64(lte)[i * K + c] == 0) continue;
                sc[nv] = df[i];
                sref[nv] = dr[i];
                pos[nv++] = I64(lte)[i * K + c] == 1;
            }
            char what[96];
            snprintf(what, sizeof what, "svm class %d C %g: w, b (%ld passes) vs LinearSVC", c, VOC07_COSTS[k], passes);
            check_close(what, wf, wr, d + 1, 0, 2e-3 * (1 + VOC07_COSTS[k]));
            snprintf(what, sizeof what, "svm class %d C %g: decision values on test", c, VOC07_COSTS[k]);
            check_close(what, df, dr, nte, 0, 2e-3 * (1 + VOC07_COSTS[k]));
            double a = average_precision(sc, pos, nv), b = average_precision(sref, pos, nv);
            if (fabs(a - b) > worst_ap) worst_ap = fabs(a - b);
        }
    }
    check(worst_ap <= 1e-3, "svm test AP at the same C within 1e-3 of LinearSVC's (worst %.2g over %d SVMs)",
          worst_ap, 4 * K);
    for (int c = 0; c < K; c++) {                  // the whole protocol of one class
        for (int i = 0; i < ntr; i++) lt[i] = (signed char)I64(ltr)[i * K + c];
        for (int i = 0; i < nte; i++) le[i] = (signed char)I64(lte)[i * K + c];
        VocClassResult r;
        voc07_class_svm(F32(xtr), lt, ntr, F32(xte), le, nte, d, &r);
        double cvw = 0;
        for (int k = 0; k < 4; k++) cvw = fmax(cvw, fabs(r.cv_ap[k] - F32(cv)[c * 4 + k]));
        check(cvw <= 1e-3, "voc07 class %d: 3-fold CV AP of the 4 costs within 1e-3 of cross_val_score (worst %.2g)",
              c, cvw);
        check(r.cost_index == I64(best)[c], "voc07 class %d: chosen C %g, the original's %g", c,
              VOC07_COSTS[r.cost_index], VOC07_COSTS[I64(best)[c]]);
        check(fabs(r.ap - F32(apref)[c]) <= 1e-3, "voc07 class %d: test AP %.5f, the original's %.5f", c, r.ap,
              F32(apref)[c]);
    }
    free(y); free(pos); free(w); free(sc); free(sref); free(wf); free(df); free(lt); free(le);
}

// linear_probe_step against torch's Linear + cross_entropy + SGD(momentum) + cosine.
static void test_probe_torch(void) {
    NamedTensor *w0 = need("lin.w0"), *x = need("lin.x"), *y = need("lin.y"), *lr = need("lin.lr");
    NamedTensor *w = need("lin.w"), *b = need("lin.b"), *loss = need("lin.loss");
    if (!w0 || !x || !y || !lr || !w || !b || !loss) return;
    int S = x->shape[0], B = x->shape[1], C = x->shape[2], K = w0->shape[0];
    LinearProbe p;
    linear_probe_init(&p, C, K, 1);
    memcpy(p.w, F32(w0), sizeof(float) * K * C);
    float lrs[16], losses[16];
    int yy[64];
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < B; i++) yy[i] = (int)I64(y)[s * B + i];
        lrs[s] = (float)cosine_lr(0.3, s, S);
        losses[s] = linear_probe_step(&p, F32(x) + (size_t)s * B * C, yy, B, lrs[s], 0.9f);
    }
    check_close("cosine_lr = the original's schedule (torch LambdaLR)", lrs, F32(lr), S, 1e-6, 1e-7);
    check_close("linear probe losses over 4 SGD steps vs torch", losses, F32(loss), S, 1e-5, 1e-6);
    check_close("linear probe weight after 4 steps vs torch", p.w, F32(w), (long)K * C, 1e-4, 1e-6);
    check_close("linear probe bias after 4 steps vs torch", p.b, F32(b), K, 1e-4, 1e-6);
    linear_probe_free(&p);
    LinearProbe q;
    linear_probe_init(&q, 100, 100, 5);
    double m = 0, v = 0;
    for (int i = 0; i < 10000; i++) { m += q.w[i]; v += (double)q.w[i] * q.w[i]; }
    check(fabs(m / 1e4) < 5e-4 && fabs(sqrt(v / 1e4) - 0.01) < 5e-4 && q.b[0] == 0 && q.b[99] == 0,
          "linear probe init N(0, 0.01): mean %.2g, std %.4f, bias 0", m / 1e4, sqrt(v / 1e4));
    linear_probe_free(&q);
}

// Three well-separated Gaussian clusters: the probe reaches 100% top-1 on held-out points.
static void test_probe_separable(void) {
    enum { C = 8, K = 3, N = 96, NV = 60, B = 16, E = 20 };
    float x[N * C], xv[NV * C], logits[NV * K];
    int y[N], yv[NV];
    Rng r;
    rng_seed(&r, 42);
    for (int i = 0; i < N + NV; i++) {
        int k = i % K;
        float *row = i < N ? x + i * C : xv + (i - N) * C;
        for (int c = 0; c < C; c++) row[c] = (float)((c == k ? 3.0 : 0.0) + 0.5 * rng_normal(&r));
        if (i < N) y[i] = k; else yv[i - N] = k;
    }
    LinearProbe p;
    linear_probe_init(&p, C, K, 0);
    float first = 0, last = 0;
    long T = E * (N / B);
    for (long t = 0; t < T; t++) {
        int off = (int)(t % (N / B)) * B;
        float l = linear_probe_step(&p, x + off * C, y + off, B, (float)cosine_lr(0.3, t, T), 0.9f);
        if (t == 0) first = l;
        last = l;
    }
    linear_probe_forward(&p, xv, NV, logits);
    long top1 = 0, top5 = 0;
    topk_correct(logits, yv, NV, K, &top1, &top5);
    check(top1 == NV && top5 == NV && last < 0.1f * first,
          "linear probe learns 3 separable clusters: val top-1 %ld/%d, loss %.3f -> %.4f", top1, NV, first, last);
    linear_probe_free(&p);
    float lg[2 * 6] = {0, 5, 1, 2, 3, 4, /**/ 9, 8, 7, 6, 5, 10};
    int ly[2] = {0, 3};
    top1 = top5 = 0;
    topk_correct(lg, ly, 2, 6, &top1, &top5);
    check(top1 == 0 && top5 == 1, "topk_correct: label ranked last -> miss, ranked 5th -> top-5 hit only");
}

// .npy bytes equal to np.save's.
static void test_npy(const char *tmp) {
    const struct { const char *name; long r, c; } cases[] = {
        {"npy_3x5.npy", 3, 5}, {"npy_1x2048.npy", 1, 2048}, {"npy_0x4.npy", 0, 4}};
    char path[512], err[512];
    for (int k = 0; k < 3; k++) {
        long n = cases[k].r * cases[k].c;
        float *a = malloc((n + 1) * sizeof *a);
        for (long i = 0; i < n; i++) a[i] = i * 0.25f - 1;
        snprintf(path, sizeof path, "%s/%s", tmp, cases[k].name);
        int rc = npy_write(path, a, cases[k].r, cases[k].c, err, sizeof err);
        size_t ng, nw;
        unsigned char *got = slurp(path, &ng), *want = slurp(fixture_path(cases[k].name), &nw);
        check(rc == 0 && got && want && ng == nw && !memcmp(got, want, nw),
              "npy_write (%ld, %ld): %zu bytes, identical to numpy's np.save (%zu bytes)", cases[k].r,
              cases[k].c, ng, nw);
        free(got);
        free(want);
        free(a);
        unlink(path);
    }
    check(npy_write("/nonexistent-dir/x.npy", (float[]){1}, 1, 1, err, sizeof err) == -1 &&
          strstr(err, "/nonexistent-dir/x.npy"), "npy_write to a missing directory: %s", err);
}

static void spit_text(const char *path, const char *text) { spit(path, text, strlen(text)); }

// The VOC07 reader on a hand-made layout: classes with underscores in file name order,
// images in order of first appearance, unlisted = 0, no final newline, a bad line.
static void test_voc_read(const char *tmp) {
    char dir[600], p[700], err[1024];
    snprintf(dir, sizeof dir, "%s/voc", tmp);
    mkdir(dir, 0755);
    snprintf(p, sizeof p, "%s/ImageSets", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/ImageSets/Main", dir);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/ImageSets/Main/red_circle_trainval.txt", dir);
    spit_text(p, "000005 -1\n000002  1\n\n000009  0");
    snprintf(p, sizeof p, "%s/ImageSets/Main/blue_star_trainval.txt", dir);
    spit_text(p, "000002 -1\n000007  1\n");
    snprintf(p, sizeof p, "%s/ImageSets/Main/trainval.txt", dir);
    spit_text(p, "000005\n000002\n");
    VocSplit v;
    int rc = voc07_read(&v, dir, "trainval", err, sizeof err);
    int ok = rc == 0 && v.nclasses == 2 && !strcmp(v.classes[0], "blue_star") && !strcmp(v.classes[1], "red_circle") &&
             v.n == 4 && !strcmp(v.images[0], "000002") && !strcmp(v.images[1], "000007") &&
             !strcmp(v.images[2], "000005") && !strcmp(v.images[3], "000009");
    static const signed char want[8] = {-1, 1, 1, 0, 0, -1, 0, 0};
    for (int i = 0; ok && i < 8; i++) ok = v.labels[i] == want[i];
    check(ok, "voc07_read: 2 classes (blue_star, red_circle), 4 images in order of appearance, labels 1/-1/0, "
          "unlisted 0%s%s", rc ? ": " : "", rc ? err : "");
    if (!rc) voc07_free(&v);
    snprintf(p, sizeof p, "%s/ImageSets/Main/blue_star_trainval.txt", dir);
    spit_text(p, "000002 -1\n000007  2\n");
    rc = voc07_read(&v, dir, "trainval", err, sizeof err);
    check(rc == -1 && strstr(err, "blue_star_trainval.txt:2:") && !strchr(err, '\n'),
          "voc07_read: a label 2 names file and line: %s", err);
    rc = voc07_read(&v, dir, "test", err, sizeof err);
    check(rc == -1 && strstr(err, "_test.txt"), "voc07_read: no CLASS_test.txt files: %s", err);
}

// ----------------------------------------------------------------------------
// end to end on a tiny shapes dataset and the tiny test model

static void test_pipeline(const char *tmp, const char *root) {
    char data[600], ckpt[600], path[1200], err[1024];
    snprintf(data, sizeof data, "%s/shapes", tmp);
    SynthOptions so;
    synth_default_options(&so);
    so.out = data;
    so.images = 50;                                // VOC 10 + 10, ImageNet 35 + 35
    so.quiet = 1;
    if (synth_dataset(&so, err, sizeof err)) { check(0, "synth_dataset: %s", err); return; }
    Config cfg;
    Model m, r;
    snprintf(path, sizeof path, "%s/configs/small/tiny_test.yaml", root);
    if (config_load(&cfg, path, 0, NULL, err, sizeof err) || model_build(&m, &cfg, err, sizeof err)) {
        check(0, "tiny model: %s", err);
        return;
    }
    snprintf(ckpt, sizeof ckpt, "%s/tiny.ckpt", tmp);
    check(checkpoint_save(&m, ckpt, err, sizeof err) == 0, "save the tiny model");
    model_free(&m);
    int rc = model_from_checkpoint(&m, ckpt, NULL, 0, NULL, 0, err, sizeof err);
    check(rc == 0, "model_from_checkpoint%s%s", rc ? ": " : "", rc ? err : "");
    if (rc) return;
    char *ov[] = {"RANDOM_SEED", "7"};
    rc = model_from_checkpoint(&r, ckpt, NULL, 2, ov, 1, err, sizeof err);
    check(rc == 0, "model_from_checkpoint --weights random%s%s", rc ? ": " : "", rc ? err : "");
    if (rc) { model_free(&m); return; }
    // a config alone is enough only for random weights: the weights need a checkpoint
    Model none;
    rc = model_from_checkpoint(&none, NULL, path, 0, NULL, 0, err, sizeof err);
    check(rc == -1 && strstr(err, "--checkpoint"), "model_from_checkpoint with a config, no checkpoint: %s", err);
    rc = model_from_checkpoint(&none, NULL, NULL, 0, NULL, 1, err, sizeof err);
    check(rc == -1 && strstr(err, "no checkpoint and no config"), "model_from_checkpoint with neither: %s", err);

    int S, R, C = m.cnn.out_channels;
    downstream_sizes(&m.cfg, &S, &R);
    check(S == 64 && R == 73 && C == 256, "tiny model: crop %d, resize %d (= S*256/224), %d features", S, R, C);

    // features: sorted list, batched on two cores = one image at a time
    snprintf(path, sizeof path, "%s/imagenet/val", data);
    long n;
    char **names = list_images(path, &n, err, sizeof err);
    check(names && n == 35 && !strcmp(names[0], "blue_circle/blue_circle_000000.jpg") &&
          strcmp(names[0], names[1]) < 0, "list_images: %ld images under imagenet/val, sorted (%s ...)", n,
          names ? names[0] : err);
    if (!names) goto done;
    char **full = malloc(n * sizeof *full);
    for (long i = 0; i < n; i++) {
        full[i] = malloc(strlen(path) + strlen(names[i]) + 2);
        sprintf(full[i], "%s/%s", path, names[i]);
    }
    TransformPipeline tp;
    const char val[3][64] = {"smallest_resize", "center_crop", "normalize"};
    transform_parse(&tp, val, 3, S, R, err, sizeof err);
    float *f = malloc(n * C * sizeof *f), *g1 = malloc(C * sizeof *g1), *fr = malloc(n * C * sizeof *fr);
    FeatureOptions fo = {&tp, 0, 8, 0, NULL};
    double t0 = now_seconds();
    rc = features_extract(&m, (const char *const *)full, n, &fo, f, err, sizeof err);
    double dt = now_seconds() - t0;
    check(rc == 0, "features_extract: 35 images in batches of 8 (%.2fs, %.0f images/s)", dt, n / dt);
    FeatureOptions one = {&tp, 0, 1, 0, NULL};
    features_extract(&m, (const char *const *)full + 17, 1, &one, g1, err, sizeof err);
    check_close("image 17 alone = image 17 in a batch of 8", g1, f + 17 * C, C, 1e-4, 1e-5);
    Image img;
    image_load(&img, full[17], err, sizeof err);
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    g.grad_enabled = 0;
    g.training = 0;
    Tensor *x = tensor_new(&g, 4, (int[]){1, 3, S, S});
    transform_val(&img, x->data, R, S);
    Tensor *v = visual_forward(&g, &m, x);
    float *pool = calloc(C, sizeof *pool);
    int hw = v->shape[2] * v->shape[3];
    for (int c = 0; c < C; c++) {
        double s = 0;
        for (int k = 0; k < hw; k++) s += v->data[c * hw + k];
        pool[c] = (float)(s / hw);
    }
    check_close("features = mean over h*w of visual_forward(transform_val)", f + 17 * C, pool, C, 1e-4, 1e-5);
    graph_free(&g);
    image_free(&img);
    free(pool);
    fo.l2_normalize = 1;
    features_extract(&m, (const char *const *)full, 1, &fo, g1, err, sizeof err);
    double norm = 0;
    for (int c = 0; c < C; c++) norm += (double)g1[c] * g1[c];
    check(fabs(norm - 1) < 1e-5, "l2_normalize: |feature| = %.6f", sqrt(norm));
    fo.l2_normalize = 0;
    features_extract(&r, (const char *const *)full, n, &fo, fr, err, sizeof err);
    double diff = 0;
    for (long i = 0; i < n * C; i++) diff = fmax(diff, fabs(fr[i] - f[i]));
    check(diff > 1e-3, "--weights random gives other features (max diff %.3g)", diff);
    snprintf(path, sizeof path, "%s/missing.jpg", tmp);
    const char *bad[] = {full[0], path};
    rc = features_extract(&m, bad, 2, &fo, f, err, sizeof err);
    check(rc == -1 && strstr(err, "missing.jpg") && !strchr(err, '\n'), "a missing image: one line: %s", err);
    free(f);
    free(fr);
    free(g1);
    free_strings(full, n);
    free_strings(names, n);

    // VOC07 SVMs and the linear probe run end to end
    FILE *out = tmpfile();
    TransferOptions to = {16, 0, 1, 2, 16, 0.3, 1, 0, 0};
    double map = -1, acc[2] = {-1, -1};
    snprintf(path, sizeof path, "%s/voc2007", data);
    t0 = now_seconds();
    rc = eval_voc07(&m, path, &to, &map, out, err, sizeof err);
    check(rc == 0 && (isnan(map) || (map >= 0 && map <= 100)), "eval_voc07 on the tiny VOC (35 classes): mAP %.2f (%.2fs)%s%s",
          map, now_seconds() - t0, rc ? ": " : "", rc ? err : "");
    snprintf(path, sizeof path, "%s/imagenet", data);
    t0 = now_seconds();
    rc = eval_linear(&m, path, &to, acc, out, err, sizeof err);
    check(rc == 0 && acc[0] >= 0 && acc[0] <= acc[1] && acc[1] <= 100,
          "eval_linear --precomputed, 2 epochs: top-1 %.1f top-5 %.1f (%.2fs)", acc[0], acc[1], now_seconds() - t0);
    // iterations (a downstream config's OPTIM.NUM_ITERATIONS) set the epochs:
    // 11 iterations x batch 16 over the 35 train images = 5.03 -> 5 epochs
    FILE *hdr = tmpfile();
    to.quiet = 0;
    to.iterations = 11;
    rc = eval_linear(&m, path, &to, acc, hdr, err, sizeof err);
    char line[1024] = "";
    rewind(hdr);
    while (fgets(line, sizeof line, hdr) && !strstr(line, "linear probe:")) {}
    check(rc == 0 && strstr(line, " 5 epochs x 3 iterations"), "eval_linear: 11 iterations of 16 over 35 images "
          "= 5 epochs of 3 iterations: %.200s", line);
    fclose(hdr);
    to.quiet = 1;
    to.iterations = 0;
    to.precomputed = 0;
    t0 = now_seconds();
    rc = eval_linear(&m, path, &to, acc, out, err, sizeof err);
    check(rc == 0 && acc[0] >= 0 && acc[0] <= acc[1] && acc[1] <= 100,
          "eval_linear with random-resized-crop features, 2 epochs: top-1 %.1f top-5 %.1f (%.2fs)", acc[0], acc[1],
          now_seconds() - t0);
    fclose(out);
    rc = eval_voc07(&m, tmp, &to, &map, stderr, err, sizeof err);
    check(rc == -1 && strstr(err, "ImageSets/Main") && !strchr(err, '\n'), "eval_voc07 without the VOC layout: %s", err);

    // the command: feats.npy + feats.txt
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s/virtex features --checkpoint %s --images %s/imagenet/val --out %s/feats.npy "
             "--batch-size 16 >%s/features.log 2>&1", root, ckpt, data, tmp, tmp);
    rc = system(cmd);
    snprintf(path, sizeof path, "%s/feats.npy", tmp);
    size_t nb;
    unsigned char *npy = slurp(path, &nb);
    snprintf(path, sizeof path, "%s/feats.txt", tmp);
    size_t nt;
    char *txt = (char *)slurp(path, &nt);
    long lines = 0;
    for (size_t i = 0; txt && i < nt; i++) lines += txt[i] == '\n';
    check(rc == 0 && npy && nb == 128 + 35 * 256 * 4 && strstr((char *)npy + 10, "'shape': (35, 256)") && lines == 35 &&
          !strncmp(txt, "blue_circle/blue_circle_000000.jpg\n", 35),
          "virtex features: feats.npy (35, 256) float32 (%zu bytes) and feats.txt (%ld names)", nb, lines);
    free(npy);
    free(txt);
done:
    model_free(&m);
    model_free(&r);
}

void test_transfer(void) {
    char err[512];
    int have = tensorfile_read(&tf, fixture_path("transfer.bin"), err, sizeof err) == 0;
    check(have, "read test/fixtures/transfer.bin%s%s", have ? "" : ": ", have ? "" : err);
    if (have) {
        test_ap();
        test_folds();
        test_svm();
        test_probe_torch();
        tensorfile_free(&tf);
    }
    test_probe_separable();
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s/virtex-transfer-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp)) { check(0, "mkdtemp %s: %s", tmp, strerror(errno)); return; }
    test_npy(tmp);
    test_voc_read(tmp);
    const char *root = access("./virtex", X_OK) == 0 && access("configs", F_OK) == 0 ? "."
                       : access("../virtex", X_OK) == 0 ? ".." : NULL;
    if (root) test_pipeline(tmp, root);
    else check(0, "./virtex is not built (run `make test`, which builds it first)");
    remove_tree(tmp);
}
