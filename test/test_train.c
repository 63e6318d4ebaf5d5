// test/test_train.c — the optimiser and the schedules (train.c): LR schedules against
// their closed forms, the NO_DECAY rule, SGD/AdamW + Lookahead + clipping against
// PyTorch (test/make_fixtures.py: optim_{sgd,adamw}.bin), optimiser state round trip.
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"

// ---- schedules: the original's multipliers, worked out by hand

static void test_schedules(void) {
    Config c;
    config_defaults(&c);
    c.OPTIM.NUM_ITERATIONS = 100;
    c.OPTIM.WARMUP_STEPS = 10;
    struct { const char *name; long step; double want; } cases[] = {
        {"cosine", 0, 0.0},  {"cosine", 5, 0.5},  {"cosine", 10, 1.0},
        {"cosine", 55, 0.5},                        // cos^2(pi/4)
        {"cosine", 70, 0.25},                       // cos^2(pi/3)
        {"cosine", 100, 0.0},
        {"linear", 3, 0.3},  {"linear", 55, 0.5}, {"linear", 100, 0.0}, {"linear", 120, 0.0},
        {"none", 1, 0.1},    {"none", 10, 1.0},   {"none", 99, 1.0},
        {"multistep", 9, 0.9}, {"multistep", 10, 1.0}, {"multistep", 29, 1.0},
        {"multistep", 30, 0.1}, {"multistep", 59, 0.1}, {"multistep", 60, 0.01},
    };
    c.OPTIM.n_LR_STEPS = 2;
    c.OPTIM.LR_STEPS[0] = 30;
    c.OPTIM.LR_STEPS[1] = 60;
    c.OPTIM.LR_GAMMA = 0.1f;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(c.OPTIM.LR_DECAY_NAME, sizeof c.OPTIM.LR_DECAY_NAME, "%s", cases[i].name);
        double got = lr_multiplier(&c, cases[i].step), want = cases[i].want;
        check(fabs(got - want) < 1e-6 * (1 + fabs(want)), "lr %s at step %ld: %.9g (want %.9g)",
              cases[i].name, cases[i].step, got, want);
    }
    // past the end the original's formula keeps going (cos^2 rises again): not clamped
    snprintf(c.OPTIM.LR_DECAY_NAME, sizeof c.OPTIM.LR_DECAY_NAME, "cosine");
    double past = cos(110.0 / 90 * M_PI / 2);
    check(fabs(lr_multiplier(&c, 120) - past * past) < 1e-12, "cosine at step 120 of 100: %.6f (the formula's %.6f)",
          lr_multiplier(&c, 120), past * past);
    // warmup 0: full LR from the first step
    c.OPTIM.WARMUP_STEPS = 0;
    snprintf(c.OPTIM.LR_DECAY_NAME, sizeof c.OPTIM.LR_DECAY_NAME, "cosine");
    check(lr_multiplier(&c, 0) == 1.0, "cosine without warmup starts at 1 (%g)", lr_multiplier(&c, 0));

    // the original's asserts, as messages naming the key
    char err[256];
    struct { const char *name; int warm, total, n, s0, s1; const char *key; } bad[] = {
        {"cosine", 100, 100, 0, 0, 0, "OPTIM.WARMUP_STEPS"},
        {"multistep", 10, 100, 2, 60, 30, "increasing"},
        {"multistep", 10, 100, 1, 10, 0, "after the warmup"},
        {"multistep", 10, 100, 1, 100, 0, "less than NUM_ITERATIONS"},
        {"multistep", 10, 100, 0, 0, 0, "at least one"},
        {"exponential", 10, 100, 0, 0, 0, "LR_DECAY_NAME"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(c.OPTIM.LR_DECAY_NAME, sizeof c.OPTIM.LR_DECAY_NAME, "%s", bad[i].name);
        c.OPTIM.WARMUP_STEPS = bad[i].warm;
        c.OPTIM.NUM_ITERATIONS = bad[i].total;
        c.OPTIM.n_LR_STEPS = bad[i].n;
        c.OPTIM.LR_STEPS[0] = bad[i].s0;
        c.OPTIM.LR_STEPS[1] = bad[i].s1;
        err[0] = 0;
        int rc = schedule_check(&c, err, sizeof err);
        check(rc == -1 && strstr(err, bad[i].key), "schedule_check refuses case %zu: %s", i, err);
    }
    snprintf(c.OPTIM.LR_DECAY_NAME, sizeof c.OPTIM.LR_DECAY_NAME, "multistep");
    c.OPTIM.n_LR_STEPS = 2;
    c.OPTIM.LR_STEPS[0] = 30;
    c.OPTIM.LR_STEPS[1] = 60;
    check(schedule_check(&c, err, sizeof err) == 0, "a valid multistep schedule passes");
}

// ---- the NO_DECAY rule: Python's re.match semantics

static void test_regex(void) {
    const char *nd = ".*textual.(embedding|transformer).*(norm.*|bias)";
    struct { const char *pat, *name; int want; } cases[] = {
        {nd, "textual.embedding.layer_norm.weight", 1},
        {nd, "textual.transformer.layers.0.norm1.weight", 1},
        {nd, "textual.transformer.layers.0.linear1.bias", 1},
        {nd, "backward_textual.transformer.layers.0.self_attn.in_proj_bias", 1},
        {nd, "textual.transformer.layers.0.linear1.weight", 0},
        {nd, "textual.visual_projection.bias", 0},     // not embedding/transformer
        {nd, "textual.output.bias", 0},
        {nd, "visual.cnn.bn1.bias", 0},
        {"cnn", "visual.cnn.conv1.weight", 0},          // re.match anchors at the start
        {"visual", "visual.cnn.conv1.weight", 1},       // ... but not at the end
        {".*layer\\d\\.0", "visual.cnn.layer3.0.conv1.weight", 1},
        {".*layer\\d\\.0", "visual.cnn.layerx.0.conv1.weight", 0},
        {"visual\\.cnn\\.bn\\w", "visual.cnn.bn1.weight", 1},
    };
    char err[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = regex_match_start(cases[i].pat, cases[i].name, err, sizeof err);
        check(got == cases[i].want, "re.match('%s', '%s') = %d (want %d)", cases[i].pat,
              cases[i].name, got, cases[i].want);
    }
    const char *refused[] = {".*?bias", "(?i)bias", "a(b", "\\1"};
    for (int i = 0; i < 4; i++) {
        err[0] = 0;
        int got = regex_match_start(refused[i], "bias", err, sizeof err);
        check(got == -1 && strstr(err, refused[i]), "pattern '%s' refused: %s", refused[i], err);
    }
}

// ---- the optimiser against PyTorch

static void test_optim_fixture(const char *file) {
    const char *path = fixture_path(file);
    TensorFile tf;
    char err[1024];
    if (tensorfile_read(&tf, path, err, sizeof err)) {
        check(0, "%s", err);
        return;
    }
    Config cfg;
    config_defaults(&cfg);
    if (config_load_string(&cfg, tf.config, path, err, sizeof err)) { check(0, "%s", err); tensorfile_free(&tf); return; }
    Model m;
    if (model_build_layout(&m, &cfg, err, sizeof err)) { check(0, "%s", err); tensorfile_free(&tf); return; }
    TensorFile view = tf;
    view.t = calloc(tf.n, sizeof *view.t);
    view.n = 0;
    for (int i = 0; i < tf.n; i++)
        if (strncmp(tf.t[i].name, "group.", 6) && strncmp(tf.t[i].name, "grad.", 5) &&
            strncmp(tf.t[i].name, "final.", 6) && strcmp(tf.t[i].name, "norms"))
            view.t[view.n++] = tf.t[i];
    int rc = model_load_state(&m, &view, err, sizeof err);
    free(view.t);
    check(rc == 0, "%s: state loads (%s)", file, rc ? err : "ok");
    Optimizer o;
    rc = optimizer_init(&o, &m, err, sizeof err);
    check(rc == 0, "%s: optimizer_init (%s)", file, rc ? err : "ok");
    if (rc) { model_free(&m); tensorfile_free(&tf); return; }

    // parameter groups: every named parameter, its LR and weight decay
    int groups_ok = 1, ngroups = 0;
    for (int i = 0; i < tf.n; i++) {
        if (strncmp(tf.t[i].name, "group.", 6)) continue;
        ngroups++;
        const char *name = tf.t[i].name + 6;
        const float *want = tf.t[i].data;
        int k = 0;
        while (k < o.ngroups && strcmp(o.name[k], name)) k++;
        if (k == o.ngroups || o.lr[k] != want[0] || o.weight_decay[k] != want[1]) {
            if (groups_ok) printf("    group %s: %s\n", name, k == o.ngroups ? "missing" : "lr/wd differ");
            groups_ok = 0;
        }
    }
    check(groups_ok && ngroups == o.ngroups, "%s: %d parameter groups with PyTorch's names, LRs and "
          "weight decays (PyTorch %d)", file, o.ngroups, ngroups);

    // the steps
    const NamedTensor *norms = tensorfile_find(&tf, "norms");
    int nsteps = norms ? (int)norms->numel : 0;
    for (int s = 0; s < nsteps; s++) {
        for (int k = 0; k < o.ngroups; k++) {
            char name[300];
            snprintf(name, sizeof name, "grad.%d.%s", s, o.name[k]);
            const NamedTensor *g = tensorfile_find(&tf, name);
            if (!g || g->numel != o.param[k]->numel) { check(0, "%s: no %s", file, name); goto done; }
            memcpy(o.param[k]->grad, g->data, g->numel * sizeof(float));
        }
        double norm = clip_grad_norm(&m, cfg.OPTIM.CLIP_GRAD_NORM);
        float want = ((const float *)norms->data)[s];
        check(fabs(norm - want) <= 1e-5 * want, "%s: step %d: gradient norm %.6g (PyTorch %.6g)", file, s, norm, want);
        optimizer_step(&o, lr_multiplier(&cfg, s));
    }
    double worst = 0;
    long n = 0, bad = 0;
    for (int k = 0; k < o.ngroups; k++) {
        char name[300];
        snprintf(name, sizeof name, "final.%s", o.name[k]);
        const NamedTensor *f = tensorfile_find(&tf, name);
        if (!f) { bad++; continue; }
        const float *want = f->data, *got = o.param[k]->data;
        for (long i = 0; i < f->numel; i++, n++) {
            double d = fabs((double)got[i] - want[i]);
            if (d > worst) worst = d;
            bad += d > 1e-6 + 1e-5 * fabs(want[i]);
        }
    }
    check(bad == 0 && n == m.nparams, "%s: %ld parameters after %d steps equal PyTorch's (max |diff| %.3g, "
          "%ld outside 1e-6 + 1e-5 rel)", file, n, nsteps, worst, bad);

    // the optimiser state survives a round trip through a checkpoint's tensors
    int ns;
    NamedTensor *st = optimizer_state(&o, &ns);
    TensorFile saved = {"", st, ns};
    Optimizer o2;
    optimizer_init(&o2, &m, err, sizeof err);
    rc = optimizer_load(&o2, &saved, err, sizeof err);
    int same = rc == 0 && o2.steps == o.steps && o2.lookahead_counter == o.lookahead_counter &&
               !memcmp(o2.buf, o.buf, m.nparams * sizeof(float)) &&
               (!o.buf2 || !memcmp(o2.buf2, o.buf2, m.nparams * sizeof(float))) &&
               (!o.slow || !memcmp(o2.slow, o.slow, m.nparams * sizeof(float)));
    check(same, "%s: optimizer_state -> optimizer_load restores %d tensors exactly (%s)", file, ns,
          rc ? err : "ok");
    saved.n = ns - 1;   // drop one: refused, named
    err[0] = 0;
    rc = optimizer_load(&o2, &saved, err, sizeof err);
    check(rc == -1 && strstr(err, "optimizer.lookahead_counter"), "a missing optimizer tensor is named: %s", err);
    for (int i = 0; i < ns; i++) free(st[i].name);
    free(st);
    optimizer_free(&o2);
done:
    optimizer_free(&o);
    model_free(&m);
    tensorfile_free(&tf);
}

// clip_grad_norm by hand: gradients (3, 4) -> norm 5, scaled to max_norm 1 -> (0.6, 0.8).
static void test_clip(void) {
    Config c;
    char err[512];
    if (config_load(&c, "configs/small/tiny_test.yaml", 0, NULL, err, sizeof err)) { check(0, "%s", err); return; }
    Model m;
    if (model_build_layout(&m, &c, err, sizeof err)) { check(0, "%s", err); return; }
    model_zero_grad(&m);
    m.grads[0] = 3;
    m.grads[m.nparams - 1] = 4;
    double norm = clip_grad_norm(&m, 1.0);
    check(fabs(norm - 5) < 1e-12, "clip: global norm %g (want 5)", norm);
    float want0 = (float)(3 * (1.0 / (5 + 1e-6))), want1 = (float)(4 * (1.0 / (5 + 1e-6)));
    check(fabsf(m.grads[0] - want0) < 1e-7f && fabsf(m.grads[m.nparams - 1] - want1) < 1e-7f,
          "clip: scaled to %.7f %.7f (want %.7f %.7f)", m.grads[0], m.grads[m.nparams - 1], want0, want1);
    norm = clip_grad_norm(&m, 10.0);
    check(fabs(norm - 1) < 1e-5 && fabsf(m.grads[0] - want0) == 0, "clip: below the limit nothing changes");
    model_free(&m);
}

// ---- the driver on a tiny synthetic dataset

static char tmpdir[256];

// stderr of a call, captured into a file and read back (train_run reports there).
static int saved_stderr = -1;
static void capture_begin(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/stderr", tmpdir);
    fflush(stderr);
    saved_stderr = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(fd, 2);
    close(fd);
}
static char *capture_end(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/stderr", tmpdir);
    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    size_t n;
    char *s = (char *)slurp(path, &n);
    return s ? s : calloc(1, 1);
}

// A 40-image shapes dataset at 32 px with a 100-piece vocabulary.
static int make_dataset(char *root, size_t n) {
    snprintf(root, n, "%s/shapes", tmpdir);
    SynthOptions so;
    synth_default_options(&so);
    so.out = root;
    so.images = 40;
    so.size = 32;
    so.quiet = 1;
    char err[1024], path[700];
    if (synth_dataset(&so, err, sizeof err)) { check(0, "synth: %s", err); return -1; }
    snprintf(path, sizeof path, "%s/annotations/captions_train2017.json", root);
    char **caps;
    long ncap;
    if (coco_read_captions(path, &caps, &ncap, err, sizeof err)) { check(0, "%s", err); return -1; }
    VocabOptions vo = {.vocab_size = 100};
    size_t len;
    unsigned char *model = vocab_train((const char *const *)caps, ncap, &vo, &len, err, sizeof err);
    free(caps);
    if (!model) { check(0, "vocab: %s", err); return -1; }
    snprintf(path, sizeof path, "%s/vocab", root);
    int rc = vocab_write(path, model, len, err, sizeof err);
    free(model);
    if (rc) check(0, "vocab_write: %s", err);
    return rc;
}

// The overrides every run here uses: the tiny config on the temp dataset at 32 px.
static char ov_root[300], ov_vocab[400];
static char *tiny_overrides[] = {
    "DATA.ROOT", ov_root, "DATA.TOKENIZER_MODEL", ov_vocab, "DATA.IMAGE_CROP_SIZE", "32",
    "OPTIM.NUM_ITERATIONS", "8", "OPTIM.WARMUP_STEPS", "2", "MODEL.TEXTUAL.DROPOUT", "0.1",
};
#define NOV ((int)(sizeof tiny_overrides / sizeof tiny_overrides[0]))

static TrainOptions tiny_run(const char *out, int workers) {
    TrainOptions o = {.config = "configs/small/tiny_test.yaml", .noverrides = NOV,
                      .overrides = tiny_overrides, .out = out, .checkpoint_every = 4,
                      .log_every = 1000, .keep = 2, .workers = workers, .samples = 0, .quiet = 1};
    return o;
}

// Every tensor of two checkpoints bit-identical (model, optimiser, trainer state).
static void check_same_files(const char *a, const char *b, const char *what) {
    TensorFile ta, tb;
    char err[1024];
    if (tensorfile_read(&ta, a, err, sizeof err)) { check(0, "%s", err); return; }
    if (tensorfile_read(&tb, b, err, sizeof err)) { check(0, "%s", err); tensorfile_free(&ta); return; }
    int same = ta.n == tb.n, first = -1;
    for (int i = 0; same && i < ta.n; i++) {
        const NamedTensor *x = &ta.t[i], *y = tensorfile_find(&tb, x->name);
        size_t bytes = (size_t)x->numel * (x->dtype == DT_I64 ? 8 : 4);
        if (!y || y->numel != x->numel || memcmp(x->data, y->data, bytes)) { same = 0; first = i; }
    }
    check(same, "%s: all %d tensors bit-identical%s%s", what, ta.n, first >= 0 ? "; first difference: " : "",
          first >= 0 ? ta.t[first].name : "");
    tensorfile_free(&ta);
    tensorfile_free(&tb);
}

static void test_resume(void) {
    char a[400], b[400], ck[500], ckb[500], ck3[500];
    snprintf(a, sizeof a, "%s/run_a", tmpdir);
    snprintf(b, sizeof b, "%s/run_b", tmpdir);
    // A: 8 iterations in one go, 1 loader worker
    TrainOptions o = tiny_run(a, 1);
    int rc = train_run(&o);
    check(rc == 0, "train 8 iterations: exit %d", rc);
    // B: 3 iterations, stop, resume for the other 5, with 2 loader workers
    o = tiny_run(b, 2);
    o.stop_after = 3;
    rc = train_run(&o);
    snprintf(ck3, sizeof ck3, "%s/checkpoint_3.ckpt", b);
    check(rc == 0 && access(ck3, R_OK) == 0, "stop after 3 iterations leaves %s (exit %d)", ck3, rc);
    TrainOptions r = {.resume = ck3, .noverrides = 0, .log_every = 1000, .checkpoint_every = 4,
                      .keep = 2, .workers = 2, .quiet = 1};
    rc = train_run(&r);
    check(rc == 0, "resume from iteration 3: exit %d", rc);
    snprintf(ck, sizeof ck, "%s/checkpoint_8.ckpt", a);
    snprintf(ckb, sizeof ckb, "%s/checkpoint_8.ckpt", b);
    check_same_files(ck, ckb, "8 iterations = 3 + resume for 5 (1 vs 2 workers)");
    // keep 2: checkpoint_4 and _8 remain, _3 (older) was rotated out; best exists
    char p[500];
    snprintf(p, sizeof p, "%s/checkpoint_3.ckpt", b);
    int gone3 = access(p, F_OK) != 0;
    snprintf(p, sizeof p, "%s/checkpoint_4.ckpt", b);
    int has4 = access(p, F_OK) == 0;
    snprintf(p, sizeof p, "%s/checkpoint_best.ckpt", b);
    check(gone3 && has4 && access(p, F_OK) == 0, "--keep 2 keeps checkpoints 4 and 8 (and the best)");
    // metrics: one val line per validation (4 and 8), none repeated after the resume
    snprintf(p, sizeof p, "%s/metrics.jsonl", b);
    size_t n;
    char *text = (char *)slurp(p, &n);
    int vals = 0;
    for (char *q = text; q && (q = strstr(q, "\"split\": \"val\"")); q++) vals++;
    check(vals == 2, "metrics.jsonl holds 2 validation lines (%d)", vals);
    free(text);
    snprintf(p, sizeof p, "%s/curves.svg", b);
    text = (char *)slurp(p, &n);
    check(text && strstr(text, "<svg") && strstr(text, "polyline"), "curves.svg is drawn (%zu bytes)", n);
    free(text);

    // a checkpoint from another config is refused, naming the key
    TrainOptions bad = tiny_run(b, 1);
    char *ov2[NOV + 2];
    memcpy(ov2, tiny_overrides, sizeof tiny_overrides);
    ov2[NOV] = "OPTIM.LR";
    ov2[NOV + 1] = "0.5";
    bad.overrides = ov2;
    bad.noverrides = NOV + 2;
    bad.resume = ck;
    capture_begin();
    rc = train_run(&bad);
    char *msg = capture_end();
    check(rc == 1 && strstr(msg, "another config") && strstr(msg, "OPTIM.LR:"), "resume with another config: %s", msg);
    free(msg);
}

static void test_learns(void) {
    char out[400], err[1024];
    snprintf(out, sizeof out, "%s/run_learn", tmpdir);
    TrainOptions o = tiny_run(out, 2);
    char *ov[NOV + 6];
    memcpy(ov, tiny_overrides, sizeof tiny_overrides);
    ov[7] = "40";     // OPTIM.NUM_ITERATIONS
    ov[NOV] = "OPTIM.BATCH_SIZE";
    ov[NOV + 1] = "8";
    ov[NOV + 2] = "OPTIM.LOOKAHEAD.USE";
    ov[NOV + 3] = "false";
    o.overrides = ov;
    o.noverrides = NOV + 4;
    o.checkpoint_every = 40;
    Config c;
    if (config_load(&c, o.config, o.noverrides, o.overrides, err, sizeof err)) { check(0, "%s", err); return; }
    Model m;
    if (model_build(&m, &c, err, sizeof err)) { check(0, "%s", err); return; }
    EvalLoss before, after;
    int rc = eval_loss(&m, "val", 0, 2, &before, err, sizeof err);
    check(rc == 0, "val loss before training: %.3f (%s)", before.total, rc ? err : "ok");
    model_free(&m);
    rc = train_run(&o);
    char ck[500];
    snprintf(ck, sizeof ck, "%s/checkpoint_40.ckpt", out);
    if (rc || model_from_checkpoint(&m, ck, NULL, 0, NULL, 0, err, sizeof err)) { check(0, "train: %s", err); return; }
    rc = eval_loss(&m, "val", 0, 2, &after, err, sizeof err);
    check(rc == 0 && after.total < 0.7 * before.total,
          "40 iterations lower the val loss: %.3f -> %.3f (forward %.3f, backward %.3f)", before.total,
          after.total, after.forward, after.backward);
    model_free(&m);

    // the commands on that checkpoint: `eval loss` prints the same losses, `eval shapes`
    // its report, a bad option a usage error
    char args[900];
    snprintf(args, sizeof args, "eval loss --checkpoint %s --workers 1", ck);
    Run r = run_virtex(tmpdir, args);
    const char *t = strstr(r.out, "loss total");
    double total = t ? atof(t + 10) : -1;
    check(r.code == 0 && fabs(total - after.total) < 1e-6, "virtex eval loss: total %.6f (in-process %.6f)",
          total, after.total);
    run_free(&r);
    snprintf(args, sizeof args, "eval shapes --checkpoint %s --show 2", ck);
    r = run_virtex(tmpdir, args);
    int shown = 0;
    for (const char *q = r.out; (q = strstr(q, "\n    ")); q++) shown++;   // caption rows
    check(r.code == 0 && strstr(r.out, "objects are named with their colour and shape") && shown == 2,
          "virtex eval shapes: 2 captions shown and the report (exit %d)", r.code);
    run_free(&r);
    snprintf(args, sizeof args, "eval shapes --checkpoint %s --show -1", ck);
    r = run_virtex(tmpdir, args);
    check(r.code == 2 && strstr(r.err, "--show"), "virtex eval shapes --show -1: a usage error naming --show (exit %d)",
          r.code);
    run_free(&r);
}

static void test_bad_input(void) {
    char out[400], bogus[400];
    snprintf(out, sizeof out, "%s/run_bad", tmpdir);
    struct { const char *key, *value, *config, *resume, *want; } cases[] = {
        {"DATA.ROOT", "/nonexistent/coco", NULL, NULL, "/nonexistent/coco"},
        {NULL, NULL, "/nonexistent/config.yaml", NULL, "/nonexistent/config.yaml"},
        {"OPTIM.BATCH_SIZE", "1000", NULL, NULL, "BATCH_SIZE"},
        {NULL, NULL, NULL, bogus, bogus},
        {"OPTIM.WARMUP_STEPS", "100", NULL, NULL, "WARMUP_STEPS"},
        {"OPTIM.LR", "1e38", NULL, NULL, "the loss is not finite"},   // diverges at once
    };
    snprintf(bogus, sizeof bogus, "%s/corrupt.ckpt", tmpdir);
    FILE *f = fopen(bogus, "wb");
    fputs("VIRTEXC1 this is not a checkpoint", f);
    fclose(f);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TrainOptions o = tiny_run(out, 1);
        char *ov[NOV + 2];
        memcpy(ov, tiny_overrides, sizeof tiny_overrides);
        int n = NOV;
        if (cases[i].key) { ov[n++] = (char *)cases[i].key; ov[n++] = (char *)cases[i].value; }
        o.overrides = ov;
        o.noverrides = n;
        if (cases[i].config) o.config = cases[i].config;
        if (cases[i].resume) { o.resume = cases[i].resume; o.config = NULL; o.noverrides = 0; }
        capture_begin();
        int rc = train_run(&o);
        char *msg = capture_end();
        int lines = 0;
        for (char *q = msg; *q; q++) lines += *q == '\n';
        check(rc == 1 && strstr(msg, cases[i].want) && lines == 1, "bad input %zu: exit %d, one line naming '%s': %s",
              i, rc, cases[i].want, msg);
        free(msg);
        char p[500];
        snprintf(p, sizeof p, "%s/metrics.jsonl", out);
        unlink(p);
    }
}

// Ctrl-C: `virtex train` saves a checkpoint and exits 130; the run then resumes.
static void test_interrupt(void) {
    char out[400], metrics[500], log[500];
    snprintf(out, sizeof out, "%s/run_int", tmpdir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    snprintf(log, sizeof log, "%s/int.log", tmpdir);
    if (access("./virtex", X_OK) != 0) { check(0, "./virtex is not built (run from the repository root)"); return; }
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execl("./virtex", "virtex", "train", "--config", "configs/small/tiny_test.yaml", "--out", out,
              "--quiet", "--samples", "0", "--log-every", "1", "DATA.ROOT", ov_root,
              "DATA.TOKENIZER_MODEL", ov_vocab, "DATA.IMAGE_CROP_SIZE", "32",
              "OPTIM.NUM_ITERATIONS", "100000", (char *)NULL);
        _exit(127);
    }
    // wait for the first logged iteration, then interrupt
    double t0 = now_seconds();
    size_t n = 0;
    while (now_seconds() - t0 < 60) {
        unsigned char *m = slurp(metrics, &n);
        free(m);
        if (n > 0) break;
        usleep(20000);
    }
    kill(pid, SIGINT);
    int st = 0;
    waitpid(pid, &st, 0);
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    char *text = (char *)slurp(log, &n);
    const char *saved = text ? strstr(text, "interrupted at iteration ") : NULL;
    long it = saved ? atol(saved + 25) : -1;
    char ck[600];
    snprintf(ck, sizeof ck, "%s/checkpoint_%ld.ckpt", out, it);
    check(code == 130 && it > 0 && access(ck, R_OK) == 0,
          "Ctrl-C: exit %d (want 130), checkpoint of iteration %ld saved", code, it);
    free(text);
    TensorFile tf;
    char err[512];
    int ok = tensorfile_read(&tf, ck, err, sizeof err) == 0;
    const NamedTensor *t = ok ? tensorfile_find(&tf, "trainer.iteration") : NULL;
    check(t && *(int64_t *)t->data == it, "the interrupted checkpoint is whole and records iteration %ld", it);
    if (ok) tensorfile_free(&tf);
}

void test_train(void) {
    test_schedules();
    test_regex();
    test_clip();
    test_optim_fixture("optim_sgd.bin");
    test_optim_fixture("optim_adamw.bin");

    snprintf(tmpdir, sizeof tmpdir, "/tmp/virtex_train_XXXXXX");
    if (!mkdtemp(tmpdir)) { check(0, "mkdtemp: %s", strerror(errno)); return; }
    char root[300];
    if (make_dataset(root, sizeof root)) return;
    snprintf(ov_root, sizeof ov_root, "%s", root);
    snprintf(ov_vocab, sizeof ov_vocab, "%s/vocab.model", root);
    test_resume();
    test_learns();
    test_bad_input();
    test_interrupt();
    remove_tree(tmpdir);
}
