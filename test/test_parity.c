// test/test_parity.c — the C model against PyTorch, tensor by tensor.
//
// test/make_fixtures.py builds the same small VirTex model from stock PyTorch modules
// (torchvision's Bottleneck, nn.TransformerDecoderLayer, ...) and records its weights,
// an input batch, the losses, logits, every parameter's gradient, and the BatchNorm
// running statistics after one training forward. Here we load the weights into the C
// model, run the same batch, and compare.
#include <stdlib.h>
#include <string.h>
#include "test.h"

// The state_dict part of a fixture: every tensor not under input./train./eval./meta.
static TensorFile state_part(const TensorFile *tf) {
    TensorFile s = {.config = tf->config, .t = xcalloc(tf->n, sizeof(NamedTensor))};
    for (int i = 0; i < tf->n; i++) {
        const char *n = tf->t[i].name;
        if (strncmp(n, "input.", 6) && strncmp(n, "train.", 6) && strncmp(n, "eval.", 5) &&
            strncmp(n, "meta.", 5))
            s.t[s.n++] = tf->t[i];
    }
    return s;
}

static NamedTensor *need(const TensorFile *tf, const char *fmt, const char *arg) {
    char name[256];
    snprintf(name, sizeof name, fmt, arg);
    NamedTensor *t = tensorfile_find(tf, name);
    if (!t) check(0, "fixture has no tensor '%s'", name);
    return t;
}

static int *to_int(const NamedTensor *t) {
    int *p = xmalloc(t->numel * sizeof(int));
    for (long i = 0; i < t->numel; i++) p[i] = (int)((int64_t *)t->data)[i];
    return p;
}

static int load_model(Model *m, const TensorFile *tf, const char *file) {
    Config c;
    config_defaults(&c);
    char err[1024];
    if (config_load_string(&c, tf->config, file, err, sizeof err)) { check(0, "config: %s", err); return -1; }
    if (model_build(m, &c, err, sizeof err)) { check(0, "build: %s", err); return -1; }
    TensorFile s = state_part(tf);
    int rc = model_load_state(m, &s, err, sizeof err);
    free(s.t);
    check(rc == 0, "%s: all %d state_dict entries load by name and shape%s%s", file, m->nstate,
          rc ? ": " : "", rc ? err : "");
    return rc;
}

// Activations: within rtol 1e-3 elementwise, or `scale` x the tensor's largest value
// (PyTorch itself moves by ~1e-4 of scale between thread counts and memory layouts).
static void check_scaled(const char *what, const float *got, const NamedTensor *want, double scale) {
    if (!want) return;
    double mx = 0;
    for (long i = 0; i < want->numel; i++) mx = fmax(mx, fabs(((float *)want->data)[i]));
    check_close(what, got, want->data, want->numel, 1e-3, scale * mx);
}

// Compare a scalar loss: relative 1e-5.
static void check_loss(const char *what, float got, const NamedTensor *want) {
    if (!want) return;
    float w = ((float *)want->data)[0];
    check(fabsf(got - w) <= 1e-5f * fabsf(w), "%-34s C %.8f  PyTorch %.8f  rel %.2g", what, got, w,
          fabsf(got - w) / fabsf(w));
}

// Gradients: every element within 1e-3 of the tensor's largest gradient magnitude
// (relative to the tensor's scale), and the tensor as a whole within 1e-3 in norm.
static int check_grad(const char *name, const float *got, const NamedTensor *want) {
    const float *w = want->data;
    double maxw = 0, diff2 = 0, norm2 = 0, maxd = 0;
    for (long i = 0; i < want->numel; i++) {
        double d = fabs((double)got[i] - w[i]);
        maxw = fmax(maxw, fabs(w[i]));
        maxd = fmax(maxd, d);
        diff2 += d * d;
        norm2 += (double)w[i] * w[i];
    }
    double rel = maxd / (maxw + 1e-30), relnorm = sqrt(diff2 / (norm2 + 1e-60));
    int ok = rel <= 1e-3 && relnorm <= 1e-3;
    if (!ok || getenv("VERBOSE"))
        printf("    %-60s max|g| %.3g  max|diff|/max|g| %.2g  |diff|/|g| %.2g%s\n", name, maxw, rel,
               relnorm, ok ? "" : "  <-- mismatch");
    return ok;
}

static void parity(const char *file, int bicaptioning) {
    TensorFile tf;
    char err[1024];
    if (tensorfile_read(&tf, fixture_path(file), err, sizeof err)) { check(0, "%s", err); return; }
    Model m;
    if (load_model(&m, &tf, file)) { tensorfile_free(&tf); return; }
    NamedTensor *img = need(&tf, "input.images", ""), *tok = need(&tf, "input.tokens", ""),
                *rev = need(&tf, "input.noitpac", ""), *len = need(&tf, "input.lengths", "");
    if (!img || !tok || !len || (bicaptioning && !rev)) { tensorfile_free(&tf); model_free(&m); return; }
    Batch b = {.B = tok->shape[0], .T = tok->shape[1], .images = img->data};
    b.tokens = to_int(tok);
    b.noitpac = rev ? to_int(rev) : NULL;
    b.lengths = to_int(len);

    // training mode: batch statistics, dropout 0, one forward + backward
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    model_zero_grad(&m);
    Losses L = model_loss(&g, &m, &b);
    check_loss("train loss (forward direction)", L.forward, need(&tf, "train.loss_forward", ""));
    if (bicaptioning)
        check_loss("train loss (backward direction)", L.backward, need(&tf, "train.loss_backward", ""));
    NamedTensor *vf = need(&tf, "train.visual_features", "");
    check_scaled("train visual features (layer4)", L.visual->data, vf, 5e-4);
    NamedTensor *lf = need(&tf, "train.logits_forward", "");
    check_scaled("train logits (forward)", L.logits[0]->data, lf, 1e-4);
    if (bicaptioning)
        check_scaled("train logits (backward)", L.logits[1]->data, need(&tf, "train.logits_backward", ""), 1e-4);
    graph_backward(&g, L.total);
    int ngrad = 0, nbad = 0, nparams_seen = 0;
    for (int i = 0; i < m.ntensors; i++) {
        Tensor *t = &m.tensors[i];
        NamedTensor *w = need(&tf, "train.grad.%s", t->name);
        nparams_seen++;
        if (!w) { nbad++; continue; }
        ngrad++;
        nbad += !check_grad(t->name, t->grad, w);
    }
    check(nbad == 0 && ngrad == m.ntensors, "gradients of all %d/%d parameters match PyTorch "
          "(max|diff| <= 1e-3 max|g|, norm <= 1e-3)", ngrad - nbad, nparams_seen);
    // running statistics after the step
    int nbuf = 0, badbuf = 0;
    for (int i = 0; i < m.nstate; i++) {
        StateEntry *e = &m.state[i];
        if (e->param) continue;
        NamedTensor *w = need(&tf, "train.after.%s", e->name);
        if (!w) { badbuf++; continue; }
        nbuf++;
        if (e->dtype == DT_I64) badbuf += *(int64_t *)e->data != *(int64_t *)w->data;
        else {
            const float *gv = e->data, *wv = w->data;
            for (long j = 0; j < e->numel; j++)
                if (fabsf(gv[j] - wv[j]) > 1e-5f + 1e-5f * fabsf(wv[j])) { badbuf++; break; }
        }
    }
    check(badbuf == 0 && nbuf > 0, "BatchNorm running_mean/var/num_batches_tracked after the step: "
          "%d buffers match (1e-5)", nbuf);

    // eval mode, from the initial weights again
    TensorFile s = state_part(&tf);
    model_load_state(&m, &s, err, sizeof err);
    free(s.t);
    graph_reset(&g);
    g.training = 0;
    model_zero_grad(&m);
    L = model_loss(&g, &m, &b);
    check_loss("eval loss (forward direction)", L.forward, need(&tf, "eval.loss_forward", ""));
    if (bicaptioning)
        check_loss("eval loss (backward direction)", L.backward, need(&tf, "eval.loss_backward", ""));
    lf = need(&tf, "eval.logits_forward", "");
    check_scaled("eval logits (forward)", L.logits[0]->data, lf, 1e-4);
    graph_backward(&g, L.total);
    int ne = 0, be = 0;
    for (int i = 0; i < tf.n; i++)
        if (!strncmp(tf.t[i].name, "eval.grad.", 10)) {
            StateEntry *e = model_find(&m, tf.t[i].name + 10);
            ne++;
            be += !e || !e->param || !check_grad(tf.t[i].name, e->param->grad, &tf.t[i]);
        }
    if (ne) check(be == 0, "eval-mode gradients of %d parameters match PyTorch", ne);
    graph_free(&g);
    free(b.tokens); free(b.noitpac); free(b.lengths);
    model_free(&m);
    tensorfile_free(&tf);
}

void test_parity(void) {
    parity("parity_postnorm.bin", 1);
    parity("parity_prenorm.bin", 0);
}
