// test/test_model.c — the model builder, initialisation, the tape, and `virtex info`
// counts against PyTorch's (test/fixtures/param_counts.bin, from make_fixtures.py).
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "test.h"

// A tiny model from the defaults plus overrides (independent of configs/ files).
static int build_tiny(Model *m, const char *textual, const char *name, float dropout) {
    Config c;
    config_defaults(&c);
    char drop[32];
    snprintf(drop, sizeof drop, "%g", dropout);
    const char *kv[][2] = {
        {"MODEL.NAME", name},
        {"MODEL.VISUAL.BASE_WIDTH", "4"},
        {"MODEL.VISUAL.FEATURE_SIZE", "128"},
        {"MODEL.TEXTUAL.NAME", textual},
        {"MODEL.TEXTUAL.DROPOUT", drop},
        {"DATA.VOCAB_SIZE", "40"},
        {"DATA.MAX_CAPTION_LENGTH", "7"},
        {"DATA.IMAGE_CROP_SIZE", "32"},
    };
    char err[512];
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (config_override(&c, kv[i][0], kv[i][1], err, sizeof err)) {
            check(0, "override %s: %s", kv[i][0], err);
            return -1;
        }
    if (model_build(m, &c, err, sizeof err)) { check(0, "model_build: %s", err); return -1; }
    return 0;
}

// A batch of B images and captions of varied lengths (>= 3: SOS, a word, EOS).
static void make_batch(Batch *b, int B, int T, int S, int V, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    b->B = B; b->T = T;
    b->images = xmalloc((size_t)B * 3 * S * S * sizeof(float));
    for (long i = 0; i < (long)B * 3 * S * S; i++) b->images[i] = (float)rng_normal(&r);
    b->tokens = xcalloc((size_t)B * T, sizeof(int));
    b->noitpac = xcalloc((size_t)B * T, sizeof(int));
    b->lengths = xcalloc(B, sizeof(int));
    b->masked_labels = xcalloc((size_t)B * T, sizeof(int));
    b->nlabels = 3;
    b->labels = xcalloc((size_t)B * b->nlabels, sizeof(int));
    for (int i = 0; i < B; i++) {
        int n = 3 + (int)(rng_next(&r) % (T - 2));
        b->lengths[i] = n;
        int *t = b->tokens + i * T;
        t[0] = 1; t[n - 1] = 2;
        for (int j = 1; j < n - 1; j++) t[j] = 4 + (int)(rng_next(&r) % (V - 4));
        for (int j = 0; j < n; j++) b->noitpac[i * T + j] = t[n - 1 - j];
        b->masked_labels[i * T + 1] = t[1];   // masked_lm: position 1 is chosen
        for (int j = 0; j < b->nlabels; j++) b->labels[i * b->nlabels + j] = (int)(rng_next(&r) % V);
    }
}

static void free_batch(Batch *b) {
    free(b->images); free(b->tokens); free(b->noitpac); free(b->lengths);
    free(b->masked_labels); free(b->labels);
}

// The loss in the given mode with a fixed dropout seed (no gradients).
static double loss_at(Graph *g, Model *m, const Batch *b) {
    graph_reset(g);
    g->dropout_seed = 1234;
    int ge = g->grad_enabled;
    g->grad_enabled = 0;
    Losses L = model_loss(g, m, b);
    g->grad_enabled = ge;
    return (double)L.forward + L.backward;
}

// Finite differences through the whole model: for every parameter tensor of the
// textual heads, the coordinate with the largest analytic gradient is perturbed by
// +-eps. The visual tensors are left to the PyTorch parity test and to the per-op
// checks: a ResNet with batch-statistics BatchNorm on a tiny batch puts ReLU inputs
// right at their kink (each channel is normalised to mean zero over a few values), so
// finite differences of its weights measure the kinks, not the gradient.
static void test_model_gradcheck(const char *textual, const char *task, float dropout) {
    Model m;
    if (build_tiny(&m, textual, task, dropout)) return;
    // make every gradient non-trivial: zero-init residual BN weights to 1
    for (int i = 0; i < m.ntensors; i++)
        if (strstr(m.tensors[i].name, "bn3.weight"))
            for (long j = 0; j < m.tensors[i].numel; j++) m.tensors[i].data[j] = 1.0f;
    Batch b;
    make_batch(&b, 3, 7, 32, m.V, 7);
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    g.dropout_seed = 1234;
    model_zero_grad(&m);
    Losses L = model_loss(&g, &m, &b);
    graph_backward(&g, L.total);
    int bad = 0, n = 0;
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.ntensors; i++) {
        Tensor *t = &m.tensors[i];
        if (!strncmp(t->name, "visual.", 7)) continue;
        long k = 0;
        for (long j = 1; j < t->numel; j++) if (fabsf(t->grad[j]) > fabsf(t->grad[k])) k = j;
        float an = t->grad[k], save = t->data[k], eps = 1e-2f * fmaxf(0.1f, fabsf(save));
        t->data[k] = save + eps;
        double lp = loss_at(&g, &m, &b);
        t->data[k] = save - eps;
        double lm = loss_at(&g, &m, &b);
        t->data[k] = save;
        double fd = (lp - lm) / (2.0 * eps);
        // pass: within 5% or the finite difference's noise floor (the loss is a float
        // of magnitude ~8, resolved to ~1e-6, over 2*eps, doubled)
        double floor = 1e-6 / eps, err = fabs(fd - an) / (0.05 * fabs(an) + floor);
        if (err > worst) { worst = err; worst_name = t->name; }
        if (err > 1) {
            bad++;
            printf("    %s[%ld]: analytic %.6g, finite difference %.6g\n", t->name, k, an, fd);
        }
        n++;
    }
    check(bad == 0, "%s %s dropout %.1f: gradients of all %d tensors agree with finite "
          "differences (worst |fd-an|/tol %.3g at %s)", task, textual, dropout, n, worst, worst_name);
    graph_free(&g);
    free_batch(&b);
    model_free(&m);
}

static void test_init(void) {
    Model a, b, c;
    if (build_tiny(&a, "transdec_postnorm::L2_H16_A2_F32", "virtex", 0.1f)) return;
    build_tiny(&b, "transdec_postnorm::L2_H16_A2_F32", "virtex", 0.1f);
    Config cfg = a.cfg;
    cfg.RANDOM_SEED = 1;
    char err[256];
    model_build(&c, &cfg, err, sizeof err);
    check(!memcmp(a.params, b.params, a.nparams * sizeof(float)), "same seed, same weights");
    check(memcmp(a.params, c.params, a.nparams * sizeof(float)) != 0, "different seed, different weights");
    // kaiming normal, fan_out: std of layer3.0.conv2 (16 x 16 x 3 x 3) is sqrt(2/144)
    Tensor *w = model_find(&a, "visual.cnn.layer3.0.conv2.weight")->param;
    double s = 0;
    for (long i = 0; i < w->numel; i++) s += (double)w->data[i] * w->data[i];
    double std = sqrt(s / w->numel), want = sqrt(2.0 / (16 * 9));
    check(fabs(std / want - 1) < 0.1, "conv init std %.4f, kaiming fan_out wants %.4f", std, want);
    int zero_bn3 = 1, one_bn1 = 1;
    for (int i = 0; i < a.ntensors; i++) {
        Tensor *t = &a.tensors[i];
        for (long j = 0; j < t->numel; j++) {
            if (strstr(t->name, "bn3.weight")) zero_bn3 &= t->data[j] == 0;
            if (strstr(t->name, "bn1.weight")) one_bn1 &= t->data[j] == 1;
        }
    }
    check(zero_bn3 && one_bn1, "zero_init_residual: every bn3.weight is 0, other BN weights 1");
    int row0 = 1;
    for (int j = 0; j < a.D; j++) row0 &= a.words->data[j] == 0;
    check(row0, "embedding row 0 (padding) starts at zero");
    Tensor *ib = model_find(&a, "textual.transformer.layers.0.self_attn.in_proj_bias")->param;
    int zeros = 1;
    for (long j = 0; j < ib->numel; j++) zeros &= ib->data[j] == 0;
    check(zeros, "attention in_proj_bias starts at zero");
    Tensor *l1 = model_find(&a, "textual.transformer.layers.1.linear1.bias")->param;
    float mx = 0;
    for (long j = 0; j < l1->numel; j++) mx = fmaxf(mx, fabsf(l1->data[j]));
    check(mx > 0 && mx <= 1 / sqrtf(16), "linear1.bias uniform within 1/sqrt(fan_in) (max %.3f)", mx);
    int same = 1;
    for (int l = 0; l < a.L; l++) {
        Tensor **f = (Tensor **)&a.fwd.layers[l], **k = (Tensor **)&a.bwd.layers[l];
        for (size_t i = 0; i < sizeof(DecoderLayer) / sizeof(Tensor *); i++)
            same &= !memcmp(f[i]->data, k[i]->data, f[i]->numel * sizeof(float)) && f[i]->data != k[i]->data;
    }
    check(same, "backward transformer starts as a copy (own storage) of the forward one, like deepcopy");
    // shared names point at the same storage
    check(model_find(&a, "backward_textual.embedding.words.weight")->data == a.words->data &&
          model_find(&a, "textual.output.weight")->data == a.words->data,
          "backward_textual.embedding and the tied output weight share embedding.words");
    model_free(&a); model_free(&b); model_free(&c);
}

static void test_modes(void) {
    Model m;
    if (build_tiny(&m, "transdec_prenorm::L1_H16_A2_F32", "captioning", 0.2f)) return;
    Batch b;
    make_batch(&b, 2, 7, 32, m.V, 3);
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    g.grad_enabled = 0;
    g.training = 0;
    Losses e1 = model_loss(&g, &m, &b);
    check(g.nnodes == 0, "no-grad mode records no nodes (%d)", g.nnodes);
    graph_reset(&g);
    g.dropout_seed = 99;
    Losses e2 = model_loss(&g, &m, &b);
    check(e1.forward == e2.forward, "eval mode is deterministic whatever the dropout seed");
    float rm = m.cnn.bn1.running_mean[0];
    check(rm == 0 && *m.cnn.bn1.num_batches_tracked == 0, "eval mode leaves running stats alone");
    graph_reset(&g);
    g.grad_enabled = 1;
    g.training = 1;
    Losses t1 = model_loss(&g, &m, &b);
    check(g.nnodes > 100, "training mode records the tape (%d nodes)", g.nnodes);
    check(*m.cnn.bn1.num_batches_tracked == 1 && m.cnn.bn1.running_mean[0] != 0,
          "training mode updates running stats and num_batches_tracked");
    check(t1.forward != e1.forward, "training (batch stats, dropout) differs from eval");
    size_t used = g.arena.used + g.arena.overflow;
    graph_backward(&g, t1.total);
    graph_reset(&g);
    size_t cap = g.arena.cap;
    Losses t2 = model_loss(&g, &m, &b);
    graph_backward(&g, t2.total);
    check(g.arena.overflow == 0 && g.arena.cap == cap,
          "after one step the arena holds a whole step: no allocation in the next (%zu bytes, forward %zu)",
          cap, used);
    check(m.ntensors > 0 && !model_find(&m, "backward_textual.transformer.layers.0.norm1.weight") &&
          model_find(&m, "textual.transformer.norm.weight"),
          "captioning has no backward head; pre-norm has the final LayerNorm");
    graph_free(&g);
    free_batch(&b);
    model_free(&m);
}

static void test_errors(void) {
    Config c;
    config_defaults(&c);
    Model m;
    char err[512];
    strcpy(c.MODEL.TEXTUAL.NAME, "transdec_postnorm::L1_H100_A3_F400");
    check(model_build(&m, &c, err, sizeof err) == -1 && strstr(err, "MODEL.TEXTUAL.NAME"),
          "a bad textual name is refused: %s", err);
    config_defaults(&c);
    strcpy(c.MODEL.VISUAL.NAME, "torchvision::resnet18");
    check(model_build(&m, &c, err, sizeof err) == -1 && strstr(err, "resnet18"),
          "an unsupported backbone is refused: %s", err);
    config_defaults(&c);
    c.MODEL.VISUAL.FEATURE_SIZE = 1024;
    check(model_build(&m, &c, err, sizeof err) == -1 && strstr(err, "FEATURE_SIZE"),
          "a FEATURE_SIZE that does not match the backbone is refused: %s", err);
    config_defaults(&c);
    strcpy(c.MODEL.NAME, "nonsense");
    check(model_build(&m, &c, err, sizeof err) == -1 && strstr(err, "MODEL.NAME"),
          "an unknown MODEL.NAME is refused: %s", err);
}


// Every shipped config (the original's and ours) builds a model.
static int build_all(const char *dir, double *seconds) {
    DIR *d = opendir(dir);
    if (!d) { check(0, "cannot open %s", dir); return 0; }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        if (len > 5 && !strcmp(e->d_name + len - 5, ".yaml")) {
            Config c;
            Model m;
            char err[1024];
            double t0 = now_seconds();
            int ok = config_load(&c, path, 0, NULL, err, sizeof err) == 0 &&
                     model_build_layout(&m, &c, err, sizeof err) == 0;
            check(ok, "%s builds%s%s", path, ok ? "" : ": ", ok ? "" : err);
            if (ok) {
                if (getenv("VERBOSE")) printf("    %-60s %12ld params\n", path, model_param_count(&m, NULL));
                model_free(&m);
            }
            *seconds += now_seconds() - t0;
            n++;
        } else {
            struct stat st;
            if (!stat(path, &st) && S_ISDIR(st.st_mode)) n += build_all(path, seconds);
        }
    }
    closedir(d);
    return n;
}

// Parameter counts of the real models against PyTorch's (make_fixtures.py).
static void test_counts(void) {
    TensorFile tf;
    char err[512];
    if (tensorfile_read(&tf, fixture_path("param_counts.bin"), err, sizeof err)) {
        check(0, "read param_counts.bin: %s", err);
        return;
    }
    Config c;
    if (config_load(&c, "configs/task_ablations/bicaptioning_R_50_L1_H2048.yaml", 0, NULL, err, sizeof err)) {
        check(0, "config: %s", err);
        tensorfile_free(&tf);
        return;
    }
    Model m;
    if (model_build(&m, &c, err, sizeof err)) { check(0, "build: %s", err); tensorfile_free(&tf); return; }
    struct { const char *key; long got; } rows[] = {
        {"count.visual", model_param_count(&m, "visual.")},
        {"count.textual", model_param_count(&m, "textual.|backward_textual.")},
        {"count.total", model_param_count(&m, NULL)},
        {"count.state_entries", m.nstate},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        NamedTensor *t = tensorfile_find(&tf, rows[i].key);
        long want = t ? (long)((int64_t *)t->data)[0] : -1;
        check(t && rows[i].got == want, "R-50 + L1_H2048 bicaptioning %-20s %ld, PyTorch %ld",
              rows[i].key, rows[i].got, want);
    }
    // forward FLOPs of the backbone: 2 x the multiply-adds of its convolutions, which
    // PyTorch counted with hooks on nn.Conv2d for one 224 x 224 image
    NamedTensor *fv = tensorfile_find(&tf, "count.flops_visual");
    if (fv) {
        Graph g;
        graph_init(&g, DEV_CPU, 0);
        g.grad_enabled = 0;
        g.training = 0;
        Tensor *x = tensor_zeros(&g, 4, (int[]){1, 3, 224, 224});
        visual_forward(&g, &m, x);
        long want = (long)((int64_t *)fv->data)[0];
        check((long)g.flops == want, "R-50 forward FLOPs per 224 px image %ld, PyTorch's conv count %ld",
              (long)g.flops, want);
        graph_free(&g);
    }
    model_free(&m);
    const char *backbones[][2] = {{"torchvision::resnet101", "count.visual_resnet101"},
                                  {"torchvision::wide_resnet50_2", "count.visual_wide_resnet50_2"}};
    for (int i = 0; i < 2; i++) {
        NamedTensor *t = tensorfile_find(&tf, backbones[i][1]);
        if (!t) continue;
        config_defaults(&c);
        strcpy(c.MODEL.VISUAL.NAME, backbones[i][0]);
        strcpy(c.MODEL.TEXTUAL.NAME, "transdec_postnorm::L1_H64_A1_F64");
        if (model_build(&m, &c, err, sizeof err)) { check(0, "build: %s", err); continue; }
        long got = model_param_count(&m, "visual."), want = (long)((int64_t *)t->data)[0];
        check(got == want, "%s visual parameters %ld, PyTorch %ld", backbones[i][0], got, want);
        model_free(&m);
    }
    tensorfile_free(&tf);
}

void test_model(void) {
    test_init();
    test_modes();
    test_errors();
    test_model_gradcheck("transdec_postnorm::L2_H16_A2_F32", "virtex", 0.0f);
    test_model_gradcheck("transdec_postnorm::L1_H16_A2_F32", "virtex", 0.1f);
    test_model_gradcheck("transdec_prenorm::L1_H16_A4_F32", "captioning", 0.1f);
    test_model_gradcheck("transdec_postnorm::L1_H16_A2_F32", "masked_lm", 0.1f);
    test_model_gradcheck("none", "token_classification", 0.0f);
    test_model_gradcheck("none", "multilabel_classification", 0.0f);
    test_counts();
    double seconds = 0;
    int n = build_all("configs", &seconds);
    check(n >= 20, "%d shipped configs built (%.1f s)", n, seconds);
}
