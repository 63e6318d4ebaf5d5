// test/test_ops_transformer.c — the transformer kernels of ops.c: every forward
// against a straightforward formula evaluated in double, every backward against
// central finite differences, plus the kernel contract (backward adds into its
// gradients, skips NULL ones) and the dropout mask's statistics and reproducibility.
//
// Finite differences: L = sum(out * R) for a fixed random R, evaluated in double from
// the float outputs, so dL/dx is exactly what backward(dout = R) must produce. Each
// input element is moved by +-h (h = 1e-2 for inputs of size ~1; the step actually
// taken in float is used as the denominator). Error budget: the truncation error is
// ~h^2 |f'''| / 6 ~ 2e-5, the float rounding of L is ~1e-7 * sqrt(#outputs) / (2h) ~
// 1e-4 at the sizes below; checks use rtol 1e-2 with atol 1e-3 (per test, stated).
// Large cases use a directional derivative instead: L(x + hU) - L(x - hU) for a random
// direction U against sum(grad * U), where the signal sums over all elements.
#include <stdlib.h>
#include <string.h>
#include "test.h"

// ----------------------------------------------------------------------------
// helpers

// A local RNG (splitmix64), so the tests depend on nothing but the kernels.
static uint64_t tt_state = 12345;
static double tt_uniform(void) {
    uint64_t z = (tt_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
static float *tt_rand(long n, float lo, float hi) {   // uniform in [lo, hi)
    float *x = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (long i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)tt_uniform();
    return x;
}
static float *tt_zeros(long n) { return xcalloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static float *tt_copy(const float *x, long n) {
    float *y = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}
static double tt_dot(const float *a, const float *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
static int tt_all_zero(const float *x, long n) {
    for (long i = 0; i < n; i++) if (x[i] != 0.0f) return 0;
    return 1;
}
static float *tt_from_double(const double *x, long n) {
    float *y = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    for (long i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}

// Gradients are checked with check_fd (test/main.c) on L = sum(out * R).

// Directional derivative: all of x moves along a random direction U.
static void tt_fd_dir(const char *what, loss_fn f, void *ctx, float *x, const float *grad,
                      long n, float h, double rtol) {
    float *x0 = tt_copy(x, n), *U = tt_rand(n, -1, 1), *xp = xmalloc((size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) xp[i] = x0[i] + h * U[i];
    memcpy(x, xp, (size_t)n * sizeof(float));
    double lp = f(ctx);
    for (long i = 0; i < n; i++) x[i] = x0[i] - h * U[i];
    double lm = f(ctx);
    memcpy(x, x0, (size_t)n * sizeof(float));
    // the step actually taken, per element, in float
    double num = lp - lm, ana = 0;
    for (long i = 0; i < n; i++) ana += (double)grad[i] * ((double)xp[i] - (x0[i] - h * U[i]));
    float g = (float)ana, w = (float)num;
    check_close(what, &g, &w, 1, rtol, 1e-6 * fabs(num) + 1e-7);
    free(x0); free(U); free(xp);
}

// The += contract: after = before + fresh, element by element.
static void tt_accum(const char *what, const float *after, const float *before,
                     const float *fresh, long n) {
    float *want = xmalloc((size_t)n * sizeof(float));
    for (long i = 0; i < n; i++) want[i] = before[i] + fresh[i];
    check_close(what, after, want, n, 1e-5, 1e-6);
    free(want);
}

// ----------------------------------------------------------------------------
// linear

typedef struct { float *x, *w, *b, *out, *R; int N, IN, OUT; } LinearCtx;
static double linear_loss(void *p) {
    LinearCtx *c = p;
    linear_forward(c->out, c->x, c->w, c->b, c->N, c->IN, c->OUT);
    return tt_dot(c->out, c->R, (long)c->N * c->OUT);
}

static void test_linear_case(int N, int IN, int OUT, int bias) {
    char what[96];
    LinearCtx c = {tt_rand((long)N * IN, -1, 1), tt_rand((long)OUT * IN, -1, 1),
                   bias ? tt_rand(OUT, -1, 1) : NULL, tt_zeros((long)N * OUT),
                   tt_rand((long)N * OUT, -1, 1), N, IN, OUT};
    long nx = (long)N * IN, nw = (long)OUT * IN, no = (long)N * OUT;
    // forward against a double triple loop
    linear_forward(c.out, c.x, c.w, c.b, N, IN, OUT);
    double *ref = xcalloc(no, sizeof(double));
    for (int n = 0; n < N; n++)
        for (int o = 0; o < OUT; o++) {
            double s = bias ? c.b[o] : 0.0;
            for (int i = 0; i < IN; i++) s += (double)c.x[n * IN + i] * c.w[o * IN + i];
            ref[n * OUT + o] = s;
        }
    float *reff = tt_from_double(ref, no);
    snprintf(what, sizeof what, "linear fwd %dx%d->%d%s", N, IN, OUT, bias ? " +b" : "");
    check_close(what, c.out, reff, no, 1e-4, 1e-5);
    // backward from zero
    float *dx = tt_zeros(nx), *dw = tt_zeros(nw), *db = bias ? tt_zeros(OUT) : NULL;
    linear_backward(dx, dw, db, c.R, c.x, c.w, N, IN, OUT);
    if (N * IN * OUT <= 4096) {   // element-wise FD: the op is linear, FD is exact
        snprintf(what, sizeof what, "linear dx (FD) %dx%d->%d", N, IN, OUT);
        check_fd(what, linear_loss, &c, c.x, dx, nx, 200, 1e-2f, 1e-3, 1e-4);
        snprintf(what, sizeof what, "linear dw (FD) %dx%d->%d", N, IN, OUT);
        check_fd(what, linear_loss, &c, c.w, dw, nw, 200, 1e-2f, 1e-3, 1e-4);
        if (bias) {
            snprintf(what, sizeof what, "linear db (FD) %dx%d->%d", N, IN, OUT);
            check_fd(what, linear_loss, &c, c.b, db, OUT, 200, 1e-2f, 1e-3, 1e-4);
        }
    } else {   // against the double formulas dx = R w, dw = R^T x, db = colsum R
        double *rx = xcalloc(nx, sizeof(double)), *rw = xcalloc(nw, sizeof(double));
        double *rb = xcalloc(OUT, sizeof(double));
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) {
                double r = c.R[n * OUT + o];
                rb[o] += r;
                for (int i = 0; i < IN; i++) {
                    rx[n * IN + i] += r * c.w[o * IN + i];
                    rw[o * IN + i] += r * c.x[n * IN + i];
                }
            }
        float *fx = tt_from_double(rx, nx), *fw = tt_from_double(rw, nw),
              *fb = tt_from_double(rb, OUT);
        snprintf(what, sizeof what, "linear dx %dx%d->%d vs double", N, IN, OUT);
        check_close(what, dx, fx, nx, 1e-4, 1e-4);
        snprintf(what, sizeof what, "linear dw %dx%d->%d vs double", N, IN, OUT);
        check_close(what, dw, fw, nw, 1e-4, 1e-4);
        if (bias) {
            snprintf(what, sizeof what, "linear db %dx%d->%d vs double", N, IN, OUT);
            check_close(what, db, fb, OUT, 1e-4, 1e-4);
        }
        free(rx); free(rw); free(rb); free(fx); free(fw); free(fb);
    }
    // accumulate into non-zero gradients
    float *ax = tt_rand(nx, -1, 1), *aw = tt_rand(nw, -1, 1), *ab = bias ? tt_rand(OUT, -1, 1) : NULL;
    float *ax0 = tt_copy(ax, nx), *aw0 = tt_copy(aw, nw), *ab0 = bias ? tt_copy(ab, OUT) : NULL;
    linear_backward(ax, aw, ab, c.R, c.x, c.w, N, IN, OUT);
    snprintf(what, sizeof what, "linear %dx%d->%d dx accumulates", N, IN, OUT);
    tt_accum(what, ax, ax0, dx, nx);
    snprintf(what, sizeof what, "linear %dx%d->%d dw accumulates", N, IN, OUT);
    tt_accum(what, aw, aw0, dw, nw);
    if (bias) {
        snprintf(what, sizeof what, "linear %dx%d->%d db accumulates", N, IN, OUT);
        tt_accum(what, ab, ab0, db, OUT);
    }
    // NULL gradients are skipped, the others still computed
    float *sx = tt_zeros(nx);
    linear_backward(sx, NULL, NULL, c.R, c.x, c.w, N, IN, OUT);
    check(memcmp(sx, dx, nx * sizeof(float)) == 0, "linear %dx%d->%d dx alone (dw, db NULL)",
          N, IN, OUT);
    float *sw = tt_zeros(nw);
    linear_backward(NULL, sw, NULL, c.R, c.x, c.w, N, IN, OUT);
    check(memcmp(sw, dw, nw * sizeof(float)) == 0, "linear %dx%d->%d dw alone (dx, db NULL)",
          N, IN, OUT);
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.R); free(ref); free(reff);
    free(dx); free(dw); free(db); free(ax); free(aw); free(ab); free(ax0); free(aw0); free(ab0);
    free(sx); free(sw);
}

static void test_linear(void) {
    test_linear_case(5, 7, 6, 1);
    test_linear_case(4, 3, 9, 0);
    test_linear_case(67, 300, 290, 1);   // blocked sgemm paths, several bias column blocks
}

// ----------------------------------------------------------------------------
// embedding

typedef struct { const int *ids; float *table, *out, *R; int N, D; } EmbCtx;
static double emb_loss(void *p) {
    EmbCtx *c = p;
    embedding_forward(c->out, c->ids, c->table, c->N, c->D);
    return tt_dot(c->out, c->R, (long)c->N * c->D);
}

static void test_embedding(void) {
    enum { ROWS = 6, D = 5, N = 9 };
    const int ids[N] = {3, 0, 5, 3, 1, 0, 3, 2, 5};   // repeats, two padding ids
    EmbCtx c = {ids, tt_rand(ROWS * D, -1, 1), tt_zeros(N * D), tt_rand(N * D, -1, 1), N, D};
    embedding_forward(c.out, ids, c.table, N, D);
    int ok = 1;
    for (int n = 0; n < N; n++)
        ok &= memcmp(c.out + n * D, c.table + ids[n] * D, D * sizeof(float)) == 0;
    check(ok, "embedding fwd copies the rows exactly");

    // padding_idx 0: row 0 gets nothing, the others their FD gradient
    float *dt = tt_zeros(ROWS * D);
    embedding_backward(dt, c.R, ids, N, D, 0);
    check(tt_all_zero(dt, D), "embedding padding row 0 gradient exactly 0");
    check_fd("embedding dtable rows 1.. (FD, padding 0)", emb_loss, &c, c.table + D, dt + D,
          (ROWS - 1) * D, 1000, 1e-2f, 1e-3, 1e-4);
    // the repeated id 3 gets the sum of its three rows, exactly as a sequential sum
    float want3[D];
    for (int i = 0; i < D; i++) want3[i] = (c.R[0 * D + i] + c.R[3 * D + i]) + c.R[6 * D + i];
    check_close("embedding repeated id 3 = sum of its rows", dt + 3 * D, want3, D, 1e-6, 0);
    // padding_idx -1: every row (0 included) gets its gradient
    float *dall = tt_zeros(ROWS * D);
    embedding_backward(dall, c.R, ids, N, D, -1);
    check_fd("embedding dtable all rows (FD, no padding)", emb_loss, &c, c.table, dall, ROWS * D,
          1000, 1e-2f, 1e-3, 1e-4);
    // accumulate, padding row untouched though non-zero; NULL skipped
    float *acc = tt_rand(ROWS * D, -1, 1), *acc0 = tt_copy(acc, ROWS * D);
    embedding_backward(acc, c.R, ids, N, D, 0);
    tt_accum("embedding dtable accumulates", acc, acc0, dt, ROWS * D);
    check(memcmp(acc, acc0, D * sizeof(float)) == 0, "embedding padding row left unchanged");
    embedding_backward(NULL, c.R, ids, N, D, 0);
    check(1, "embedding backward with dtable NULL returns");

    // a large one: several column blocks and threads, against a sequential scatter
    enum { BR = 50, BD = 700, BN = 400 };
    int *bids = xmalloc(BN * sizeof(int));
    for (int n = 0; n < BN; n++) bids[n] = (int)(tt_uniform() * BR);
    float *btab = tt_rand((long)BR * BD, -1, 1), *bout = tt_zeros((long)BN * BD);
    float *bR = tt_rand((long)BN * BD, -1, 1);
    embedding_forward(bout, bids, btab, BN, BD);
    ok = 1;
    for (int n = 0; n < BN; n++) ok &= memcmp(bout + (long)n * BD, btab + (long)bids[n] * BD, BD * sizeof(float)) == 0;
    check(ok, "embedding fwd %dx%d exact", BN, BD);
    float *bdt = tt_zeros((long)BR * BD), *bref = tt_zeros((long)BR * BD);
    embedding_backward(bdt, bR, bids, BN, BD, 7);
    for (int n = 0; n < BN; n++)
        if (bids[n] != 7)
            for (int i = 0; i < BD; i++) bref[(long)bids[n] * BD + i] += bR[(long)n * BD + i];
    check(memcmp(bdt, bref, (size_t)BR * BD * sizeof(float)) == 0,
          "embedding bwd %dx%d = sequential scatter, bitwise", BN, BD);
    free(c.table); free(c.out); free(c.R); free(dt); free(dall); free(acc); free(acc0);
    free(bids); free(btab); free(bout); free(bR); free(bdt); free(bref);
}

// ----------------------------------------------------------------------------
// layernorm

typedef struct { float *x, *w, *b, *out, *mean, *rstd, *R; int N, D; float eps; } LnCtx;
static double ln_loss(void *p) {
    LnCtx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->x, c->w, c->b, c->N, c->D, c->eps);
    return tt_dot(c->out, c->R, (long)c->N * c->D);
}

static void test_layernorm_case(int N, int D, float eps, float offset) {
    char what[96];
    long n = (long)N * D;
    LnCtx c = {tt_rand(n, -1, 1), tt_rand(D, 0.5f, 1.5f), tt_rand(D, -0.5f, 0.5f), tt_zeros(n),
               tt_zeros(N), tt_zeros(N), tt_rand(n, -1, 1), N, D, eps};
    for (long i = 0; i < n; i++) c.x[i] += offset;
    layernorm_forward(c.out, c.mean, c.rstd, c.x, c.w, c.b, N, D, eps);
    // forward against double, biased variance, eps inside the sqrt
    double *ref = xcalloc(n, sizeof(double));
    float *rm = tt_zeros(N), *rr = tt_zeros(N);
    for (int r = 0; r < N; r++) {
        double m = 0, v = 0;
        for (int i = 0; i < D; i++) m += c.x[r * D + i];
        m /= D;
        for (int i = 0; i < D; i++) v += (c.x[r * D + i] - m) * (c.x[r * D + i] - m);
        v /= D;
        double s = 1.0 / sqrt(v + eps);
        rm[r] = (float)m; rr[r] = (float)s;
        for (int i = 0; i < D; i++) ref[r * D + i] = (c.x[r * D + i] - m) * s * c.w[i] + c.b[i];
    }
    float *reff = tt_from_double(ref, n);
    snprintf(what, sizeof what, "layernorm fwd %dx%d eps %g offset %g", N, D, eps, offset);
    check_close(what, c.out, reff, n, 1e-4, 1e-4);
    snprintf(what, sizeof what, "layernorm mean %dx%d", N, D);
    check_close(what, c.mean, rm, N, 1e-5, 1e-5);
    snprintf(what, sizeof what, "layernorm rstd %dx%d", N, D);
    check_close(what, c.rstd, rr, N, 1e-4, 0);
    float *dx = tt_zeros(n), *dw = tt_zeros(D), *db = tt_zeros(D);
    layernorm_backward(dx, dw, db, c.R, c.x, c.mean, c.rstd, c.w, N, D);
    if (offset == 0.0f) {
        // rtol 1e-2, atol 1e-3 (see the top of the file). Wide rows: the float rounding
        // of rstd (~1e-7 sqrt(D) relative) moves L by ~3e-5 at D = 1024, so h = 5e-2
        // there (out is nearly linear in one x_i: truncation stays ~1e-5).
        float h = D >= 256 ? 5e-2f : 1e-2f;
        snprintf(what, sizeof what, "layernorm dx (FD) %dx%d eps %g", N, D, eps);
        check_fd(what, ln_loss, &c, c.x, dx, n, 150, h, 1e-2, 1e-3);
        snprintf(what, sizeof what, "layernorm dw (FD) %dx%d eps %g", N, D, eps);
        check_fd(what, ln_loss, &c, c.w, dw, D, 150, 1e-2f, 1e-2, 1e-3);
        snprintf(what, sizeof what, "layernorm db (FD) %dx%d eps %g", N, D, eps);
        check_fd(what, ln_loss, &c, c.b, db, D, 150, 1e-2f, 1e-2, 1e-3);
        // accumulate and NULL skips
        float *ax = tt_rand(n, -1, 1), *aw = tt_rand(D, -1, 1), *ab = tt_rand(D, -1, 1);
        float *ax0 = tt_copy(ax, n), *aw0 = tt_copy(aw, D), *ab0 = tt_copy(ab, D);
        layernorm_backward(ax, aw, ab, c.R, c.x, c.mean, c.rstd, c.w, N, D);
        snprintf(what, sizeof what, "layernorm %dx%d dx accumulates", N, D);
        tt_accum(what, ax, ax0, dx, n);
        snprintf(what, sizeof what, "layernorm %dx%d dw accumulates", N, D);
        tt_accum(what, aw, aw0, dw, D);
        snprintf(what, sizeof what, "layernorm %dx%d db accumulates", N, D);
        tt_accum(what, ab, ab0, db, D);
        float *sx = tt_zeros(n), *sb = tt_zeros(D);
        layernorm_backward(sx, NULL, NULL, c.R, c.x, c.mean, c.rstd, c.w, N, D);
        layernorm_backward(NULL, NULL, sb, c.R, c.x, c.mean, c.rstd, c.w, N, D);
        check(memcmp(sx, dx, n * sizeof(float)) == 0 && memcmp(sb, db, D * sizeof(float)) == 0,
              "layernorm %dx%d dx alone, db alone (others NULL)", N, D);
        free(ax); free(aw); free(ab); free(ax0); free(aw0); free(ab0); free(sx); free(sb);
    } else {
        // a large mean: the output must not depend on it (the backward sees the
        // same normalised values); directional FD on x.
        snprintf(what, sizeof what, "layernorm dx (dir FD) %dx%d offset %g", N, D, offset);
        tt_fd_dir(what, ln_loss, &c, c.x, dx, n, 1e-2f, 2e-2);
    }
    free(c.x); free(c.w); free(c.b); free(c.out); free(c.mean); free(c.rstd); free(c.R);
    free(ref); free(reff); free(rm); free(rr); free(dx); free(dw); free(db);
}

static void test_layernorm(void) {
    test_layernorm_case(4, 9, 1e-5f, 0);    // the decoder layers' eps
    test_layernorm_case(4, 9, 1e-8f, 0);    // the embedding's eps
    test_layernorm_case(3, 300, 1e-5f, 0);  // two column blocks, the second partial
    test_layernorm_case(40, 1024, 1e-5f, 0); // parallel paths
    test_layernorm_case(5, 64, 1e-8f, 100.0f);
}

// ----------------------------------------------------------------------------
// attention

typedef struct {
    float *q, *k, *v, *out, *probs, *R;
    const int *key_len;
    int causal, B, Tq, Tk, NH, HS;
    float p;
    uint64_t seed;
} AttnCtx;

static double attn_loss(void *p) {
    AttnCtx *c = p;
    attention_forward(c->out, c->probs, c->q, c->k, c->v, c->key_len, c->causal, c->B, c->Tq,
                      c->Tk, c->NH, c->HS, c->p, c->seed);
    return tt_dot(c->out, c->R, (long)c->B * c->Tq * c->NH * c->HS);
}

// Attention written out in double, one score at a time, straight from the definition.
static void attn_naive(double *out, double *probs, const AttnCtx *c) {
    int D = c->NH * c->HS;
    double *s = xmalloc((size_t)c->Tk * sizeof(double));
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->NH; h++)
            for (int i = 0; i < c->Tq; i++) {
                double mx = -1e300, sum = 0;
                int any = 0;
                for (int j = 0; j < c->Tk; j++) {
                    int hidden = (c->causal && j > i) || (c->key_len && j >= c->key_len[b]);
                    if (hidden) { s[j] = NAN; continue; }
                    double d = 0;
                    for (int e = 0; e < c->HS; e++)
                        d += (double)c->q[((long)b * c->Tq + i) * D + h * c->HS + e] *
                             c->k[((long)b * c->Tk + j) * D + h * c->HS + e];
                    s[j] = d / sqrt((double)c->HS);
                    if (s[j] > mx) mx = s[j];
                    any = 1;
                }
                for (int j = 0; j < c->Tk; j++) if (s[j] == s[j]) sum += exp(s[j] - mx);
                double *o = out + ((long)b * c->Tq + i) * D + h * c->HS;
                for (int e = 0; e < c->HS; e++) o[e] = 0;
                for (int j = 0; j < c->Tk; j++) {
                    long idx = (((long)b * c->NH + h) * c->Tq + i) * c->Tk + j;
                    double pr = (any && s[j] == s[j]) ? exp(s[j] - mx) / sum : 0.0;
                    probs[idx] = pr;
                    if (c->p > 0)
                        pr = hash_uniform(c->seed, (uint64_t)idx) >= c->p ? pr / (1.0 - c->p) : 0.0;
                    for (int e = 0; e < c->HS; e++)
                        o[e] += pr * c->v[((long)b * c->Tk + j) * D + h * c->HS + e];
                }
            }
    free(s);
}

// One attention configuration: forward against the naive double version, backward
// against finite differences (element-wise when small, directional when large), the
// += contract and NULL skips. key_len may be NULL.
static void test_attention_case(const char *name, int B, int Tq, int Tk, int NH, int HS,
                                int causal, const int *key_len, float p) {
    char what[128];
    int D = NH * HS;
    long nq = (long)B * Tq * D, nk = (long)B * Tk * D, np = (long)B * NH * Tq * Tk;
    AttnCtx c = {tt_rand(nq, -1, 1), tt_rand(nk, -1, 1), tt_rand(nk, -1, 1), tt_zeros(nq),
                 tt_zeros(np), tt_rand(nq, -1, 1), key_len, causal, B, Tq, Tk, NH, HS, p,
                 0x5eedull + (uint64_t)Tq};
    if (HS >= 32) {   // realistic score magnitudes for large heads
        for (long i = 0; i < nq; i++) c.q[i] *= 2.0f;
        for (long i = 0; i < nk; i++) c.k[i] *= 2.0f;
    }
    attn_loss(&c);
    double *ro = xcalloc(nq, sizeof(double)), *rp = xcalloc(np, sizeof(double));
    attn_naive(ro, rp, &c);
    float *rof = tt_from_double(ro, nq), *rpf = tt_from_double(rp, np);
    snprintf(what, sizeof what, "attention %s: out vs double", name);
    check_close(what, c.out, rof, nq, 1e-4, 2e-5);
    snprintf(what, sizeof what, "attention %s: probs (before dropout) vs double", name);
    check_close(what, c.probs, rpf, np, 1e-4, 1e-6);
    // hidden keys have probability exactly 0
    int zeros_ok = 1;
    for (long idx = 0; idx < np; idx++) if (rp[idx] == 0.0 && c.probs[idx] != 0.0f) zeros_ok = 0;
    check(zeros_ok, "attention %s: hidden keys have probability exactly 0", name);

    float *dq = tt_zeros(nq), *dk = tt_zeros(nk), *dv = tt_zeros(nk);
    attention_backward(dq, dk, dv, c.R, c.q, c.k, c.v, c.probs, B, Tq, Tk, NH, HS, p, c.seed);
    if (nq + 2 * nk <= 2000) {
        // rtol 1e-2, atol 1e-3 (budget at the top of the file)
        snprintf(what, sizeof what, "attention %s: dq (FD)", name);
        check_fd(what, attn_loss, &c, c.q, dq, nq, 400, 1e-2f, 1e-2, 1e-3);
        snprintf(what, sizeof what, "attention %s: dk (FD)", name);
        check_fd(what, attn_loss, &c, c.k, dk, nk, 400, 1e-2f, 1e-2, 1e-3);
        snprintf(what, sizeof what, "attention %s: dv (FD)", name);
        check_fd(what, attn_loss, &c, c.v, dv, nk, 400, 1e-2f, 1e-2, 1e-3);
    } else {
        // directional: rtol 1e-3 (observed ~5e-5; a head read from the wrong columns
        // moves the result by ~1/NH, far outside)
        for (int r = 0; r < 2; r++) {
            snprintf(what, sizeof what, "attention %s: dq (dir FD %d)", name, r);
            tt_fd_dir(what, attn_loss, &c, c.q, dq, nq, 1e-2f, 1e-3);
            snprintf(what, sizeof what, "attention %s: dk (dir FD %d)", name, r);
            tt_fd_dir(what, attn_loss, &c, c.k, dk, nk, 1e-2f, 1e-3);
            snprintf(what, sizeof what, "attention %s: dv (dir FD %d)", name, r);
            tt_fd_dir(what, attn_loss, &c, c.v, dv, nk, 1e-2f, 1e-3);
        }
        attn_loss(&c);   // restore probs at the unperturbed inputs
    }
    // keys hidden from every query (beyond key_len) get exactly zero gradient
    if (key_len) {
        int ok = 1;
        for (int b = 0; b < B; b++)
            for (int j = key_len[b] < 0 ? 0 : key_len[b]; j < Tk; j++)
                ok &= tt_all_zero(dk + ((long)b * Tk + j) * D, D) &&
                      tt_all_zero(dv + ((long)b * Tk + j) * D, D);
        check(ok, "attention %s: padded keys get exactly zero dk, dv", name);
    }
    // += contract, then each gradient alone (the other two NULL)
    float *aq = tt_rand(nq, -1, 1), *ak = tt_rand(nk, -1, 1), *av = tt_rand(nk, -1, 1);
    float *aq0 = tt_copy(aq, nq), *ak0 = tt_copy(ak, nk), *av0 = tt_copy(av, nk);
    attention_backward(aq, ak, av, c.R, c.q, c.k, c.v, c.probs, B, Tq, Tk, NH, HS, p, c.seed);
    snprintf(what, sizeof what, "attention %s: dq accumulates", name);
    tt_accum(what, aq, aq0, dq, nq);
    snprintf(what, sizeof what, "attention %s: dk accumulates", name);
    tt_accum(what, ak, ak0, dk, nk);
    snprintf(what, sizeof what, "attention %s: dv accumulates", name);
    tt_accum(what, av, av0, dv, nk);
    float *sq = tt_zeros(nq), *sk = tt_zeros(nk), *sv = tt_zeros(nk);
    attention_backward(sq, NULL, NULL, c.R, c.q, c.k, c.v, c.probs, B, Tq, Tk, NH, HS, p, c.seed);
    attention_backward(NULL, sk, NULL, c.R, c.q, c.k, c.v, c.probs, B, Tq, Tk, NH, HS, p, c.seed);
    attention_backward(NULL, NULL, sv, c.R, c.q, c.k, c.v, c.probs, B, Tq, Tk, NH, HS, p, c.seed);
    check(memcmp(sq, dq, nq * sizeof(float)) == 0 && memcmp(sk, dk, nk * sizeof(float)) == 0 &&
          memcmp(sv, dv, nk * sizeof(float)) == 0,
          "attention %s: dq, dk, dv each alone (others NULL) match", name);
    attention_backward(NULL, NULL, NULL, c.R, c.q, c.k, c.v, c.probs, B, Tq, Tk, NH, HS, p, c.seed);
    free(c.q); free(c.k); free(c.v); free(c.out); free(c.probs); free(c.R);
    free(ro); free(rp); free(rof); free(rpf); free(dq); free(dk); free(dv);
    free(aq); free(ak); free(av); free(aq0); free(ak0); free(av0); free(sq); free(sk); free(sv);
}

static void test_attention(void) {
    static const int len_pad[2] = {6, 3}, len_drop[3] = {5, 2, 4}, len_zero[2] = {4, 0};
    static const int len_big[4] = {30, 12, 25, 1};
    test_attention_case("causal 2x5 NH2 HS4", 2, 5, 5, 2, 4, 1, NULL, 0);
    test_attention_case("causal+keypad 2x6 NH2", 2, 6, 6, 2, 4, 1, len_pad, 0);
    test_attention_case("keypad only 2x6 NH2", 2, 6, 6, 2, 4, 0, len_pad, 0);
    test_attention_case("cross Tq4 Tk7 NH3", 2, 4, 7, 3, 3, 0, NULL, 0);
    test_attention_case("one head 1x5", 1, 5, 5, 1, 6, 1, NULL, 0);
    test_attention_case("dropout p.3 causal+keypad NH3", 3, 5, 5, 3, 2, 1, len_drop, 0.3f);
    test_attention_case("dropout p.5 cross", 2, 3, 6, 2, 4, 0, NULL, 0.5f);
    test_attention_case("fully masked batch (key_len 0)", 2, 4, 4, 2, 3, 0, len_zero, 0);
    // the paper's sizes (sgemm's blocked paths, threads over (b,h))
    test_attention_case("self 4x30 NH8 HS64 causal+keypad", 4, 30, 30, 8, 64, 1, len_big, 0.1f);
    test_attention_case("cross 2x30 Tk49 NH4 HS64", 2, 30, 49, 4, 64, 0, NULL, 0.1f);

    // a query that sees no key: exact zeros forward and backward
    {
        int B = 2, T = 4, NH = 2, HS = 3, D = 6;
        const int lens[2] = {4, 0};
        long n = (long)B * T * D;
        float *q = tt_rand(n, -1, 1), *k = tt_rand(n, -1, 1), *v = tt_rand(n, -1, 1);
        float *out = tt_rand(n, -1, 1), *probs = tt_rand((long)B * NH * T * T, -1, 1);
        float *dout = tt_rand(n, -1, 1), *dq = tt_zeros(n), *dk = tt_zeros(n), *dv = tt_zeros(n);
        attention_forward(out, probs, q, k, v, lens, 1, B, T, T, NH, HS, 0.2f, 9);
        attention_backward(dq, dk, dv, dout, q, k, v, probs, B, T, T, NH, HS, 0.2f, 9);
        long half = (long)T * D;
        check(tt_all_zero(out + half, half) && tt_all_zero(probs + (long)NH * T * T, (long)NH * T * T),
              "attention: fully masked rows give zero output and probs");
        check(tt_all_zero(dq + half, half) && tt_all_zero(dk + half, half) &&
              tt_all_zero(dv + half, half), "attention: fully masked rows give zero gradients");
        int finite = 1;
        for (long i = 0; i < n; i++) finite &= isfinite(out[i]) && isfinite(dq[i]);
        check(finite, "attention: outputs and gradients finite");
        free(q); free(k); free(v); free(out); free(probs); free(dout); free(dq); free(dk); free(dv);
    }
}

// ----------------------------------------------------------------------------
// gelu

typedef struct { float *x, *out, *R; long n; } EltCtx;
static double gelu_loss(void *p) {
    EltCtx *c = p;
    gelu_forward(c->out, c->x, c->n);
    return tt_dot(c->out, c->R, c->n);
}

static void test_gelu(void) {
    enum { N = 81 };
    EltCtx c = {tt_zeros(N), tt_zeros(N), tt_rand(N, -1, 1), N};
    for (int i = 0; i < N; i++) c.x[i] = -5.0f + 10.0f * i / (N - 1) + 0.013f;
    gelu_forward(c.out, c.x, N);
    float want[N], dwant[N];
    for (int i = 0; i < N; i++) {
        double x = c.x[i];
        want[i] = (float)(0.5 * x * (1.0 + erf(x / sqrt(2.0))));
        dwant[i] = (float)(c.R[i] * (0.5 * (1.0 + erf(x / sqrt(2.0))) +
                                     x * exp(-0.5 * x * x) / sqrt(2.0 * M_PI)));
    }
    check_close("gelu fwd vs double erf form", c.out, want, N, 1e-5, 1e-7);
    float *dx = tt_zeros(N);
    gelu_backward(dx, c.R, c.x, N);
    check_close("gelu bwd vs double derivative", dx, dwant, N, 1e-5, 1e-7);
    // h = 1e-3: curvature up to ~0.8, truncation ~1e-7; noise ~1e-7 * 10 / 2e-3 = 5e-4
    check_fd("gelu dx (FD)", gelu_loss, &c, c.x, dx, N, N, 1e-3f, 1e-2, 2e-3);
    float *acc = tt_rand(N, -1, 1), *acc0 = tt_copy(acc, N);
    gelu_backward(acc, c.R, c.x, N);
    tt_accum("gelu dx accumulates", acc, acc0, dx, N);
    gelu_backward(NULL, c.R, c.x, N);
    // a large vector: the parallel path agrees with the small one element-wise
    long big = 1 << 16;
    float *bx = tt_rand(big, -6, 6), *bo = tt_zeros(big), *bd = tt_zeros(big), *bR = tt_rand(big, -1, 1);
    gelu_forward(bo, bx, big);
    gelu_backward(bd, bR, bx, big);
    int ok = 1;
    for (long i = 0; i < big; i += 97) {
        float o1, d1 = 0;
        gelu_forward(&o1, bx + i, 1);
        gelu_backward(&d1, bR + i, bx + i, 1);
        ok &= o1 == bo[i] && d1 == bd[i];
    }
    check(ok, "gelu parallel path = element-wise, bitwise");
    free(c.x); free(c.out); free(c.R); free(dx); free(acc); free(acc0);
    free(bx); free(bo); free(bd); free(bR);
}

// ----------------------------------------------------------------------------
// dropout and row mask

typedef struct { float *x, *out, *R; long n; float p; uint64_t seed; const int *ids; int D; } DropCtx;
static double dropout_loss(void *p) {
    DropCtx *c = p;
    dropout_forward(c->out, c->x, c->n, c->p, c->seed);
    return tt_dot(c->out, c->R, c->n);
}
static double rowmask_loss(void *p) {
    DropCtx *c = p;
    rowmask_forward(c->out, c->x, c->ids, (int)(c->n / c->D), c->D);
    return tt_dot(c->out, c->R, c->n);
}

static void test_dropout(void) {
    // statistics: the fraction dropped of 2^20 elements at p = 0.25 lies within
    // 6 standard deviations (sqrt(p(1-p)/n) = 4.2e-4) of p; kept values are x/(1-p).
    long n = 1L << 20;
    float p = 0.25f;
    float *x = tt_rand(n, 0.5f, 1.5f), *o1 = tt_zeros(n), *o2 = tt_zeros(n), *o3 = tt_zeros(n);
    dropout_forward(o1, x, n, p, 42);
    long dropped = 0, scaled_ok = 1;
    for (long i = 0; i < n; i++) {
        if (o1[i] == 0.0f) dropped++;
        else scaled_ok &= o1[i] == x[i] / (1.0f - p);
    }
    double frac = (double)dropped / n;
    check(fabs(frac - p) < 6 * sqrt(p * (1 - p) / n),
          "dropout p=0.25 drops %.5f of %ld (|diff| < %.2g)", frac, n, 6 * sqrt(p * (1 - p) / n));
    check(scaled_ok, "dropout kept values are x / (1-p) exactly");
    dropout_forward(o2, x, n, p, 42);
    check(memcmp(o1, o2, n * sizeof(float)) == 0, "dropout same seed: bitwise identical");
    dropout_forward(o3, x, n, p, 43);
    check(memcmp(o1, o3, n * sizeof(float)) != 0, "dropout another seed: another mask");
    int mask_ok = 1;
    for (long i = 0; i < n; i += 7) mask_ok &= (o1[i] != 0.0f) == (hash_uniform(42, i) >= p);
    check(mask_ok, "dropout mask is hash_uniform(seed, i) >= p");
    // backward: the same mask, accumulated
    float *g = tt_rand(n, -1, 1), *dx = tt_rand(n, -1, 1), *dx0 = tt_copy(dx, n);
    dropout_backward(dx, g, n, p, 42);
    int bok = 1;
    for (long i = 0; i < n; i++) {
        float want = o1[i] != 0.0f ? dx0[i] + g[i] / (1.0f - p) : dx0[i];
        bok &= dx[i] == want;
    }
    check(bok, "dropout bwd: dx += dout/(1-p) on kept elements only");
    dropout_backward(NULL, g, n, p, 42);
    // p = 0 is the identity, forward and backward
    dropout_forward(o2, x, n, 0.0f, 42);
    check(memcmp(o2, x, n * sizeof(float)) == 0, "dropout p=0 forward is the identity");
    memcpy(dx, dx0, n * sizeof(float));
    dropout_backward(dx, g, n, 0.0f, 42);
    bok = 1;
    for (long i = 0; i < n; i++) bok &= dx[i] == dx0[i] + g[i];
    check(bok, "dropout p=0 backward adds dout");
    // FD on a small vector (the op is linear in x: FD exact up to rounding)
    DropCtx c = {tt_rand(64, -1, 1), tt_zeros(64), tt_rand(64, -1, 1), 64, 0.3f, 7, NULL, 0};
    float *sdx = tt_zeros(64);
    dropout_backward(sdx, c.R, 64, 0.3f, 7);
    check_fd("dropout dx (FD) p=0.3", dropout_loss, &c, c.x, sdx, 64, 64, 1e-2f, 1e-3, 1e-4);
    free(x); free(o1); free(o2); free(o3); free(g); free(dx); free(dx0);
    free(c.x); free(c.out); free(c.R); free(sdx);
}

static void test_rowmask(void) {
    enum { N = 6, D = 5 };
    const int ids[N] = {4, 0, 1, 0, 9, 2};
    DropCtx c = {tt_rand(N * D, -1, 1), tt_rand(N * D, -1, 1), tt_rand(N * D, -1, 1), N * D, 0, 0,
                 ids, D};
    rowmask_forward(c.out, c.x, ids, N, D);
    int ok = 1;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++)
            ok &= c.out[n * D + i] == (ids[n] ? c.x[n * D + i] : 0.0f);
    check(ok, "rowmask fwd: id-0 rows exactly 0, others copied");
    float *dx = tt_zeros(N * D);
    rowmask_backward(dx, c.R, ids, N, D);
    check_fd("rowmask dx (FD)", rowmask_loss, &c, c.x, dx, N * D, N * D, 1e-2f, 1e-3, 1e-4);
    float *acc = tt_rand(N * D, -1, 1), *acc0 = tt_copy(acc, N * D);
    rowmask_backward(acc, c.R, ids, N, D);
    ok = 1;
    for (int n = 0; n < N; n++)
        for (int i = 0; i < D; i++)
            ok &= acc[n * D + i] == acc0[n * D + i] + (ids[n] ? c.R[n * D + i] : 0.0f);
    check(ok, "rowmask bwd accumulates, id-0 rows untouched");
    rowmask_backward(NULL, c.R, ids, N, D);
    free(c.x); free(c.out); free(c.R); free(dx); free(acc); free(acc0);
}

// ----------------------------------------------------------------------------
// cross-entropy

typedef struct { float *logits; const int *t; int N, V, ignore; float loss; } CeCtx;
static double ce_loss(void *p) {
    CeCtx *c = p;
    cross_entropy_forward(&c->loss, c->logits, c->t, c->N, c->V, c->ignore);
    return c->loss;
}

// The mean loss in double (log-sum-exp with the maximum taken out).
static double ce_ref(const float *logits, const int *t, int N, int V, int ignore, int *count) {
    double total = 0;
    *count = 0;
    for (int n = 0; n < N; n++) {
        if (t[n] == ignore) continue;
        const float *r = logits + (long)n * V;
        double mx = r[0], s = 0;
        for (int j = 1; j < V; j++) if (r[j] > mx) mx = r[j];
        for (int j = 0; j < V; j++) s += exp((double)r[j] - mx);
        total += mx + log(s) - r[t[n]];
        (*count)++;
    }
    return *count ? total / *count : 0.0;
}

static void test_cross_entropy(void) {
    enum { N = 7, V = 9 };
    const int t[N] = {3, 0, 8, 1, 0, 5, 3};   // ignore index 0: rows 1 and 4 ignored
    CeCtx c = {tt_rand(N * V, -3, 3), t, N, V, 0, 0};
    int cnt = cross_entropy_forward(&c.loss, c.logits, t, N, V, 0), rc;
    float ref = (float)ce_ref(c.logits, t, N, V, 0, &rc);
    check(cnt == 5 && rc == 5, "cross-entropy counts %d rows (want 5)", cnt);
    check_close("cross-entropy loss vs double log-sum-exp", &c.loss, &ref, 1, 1e-5, 1e-6);
    float *d = tt_zeros(N * V);
    cross_entropy_backward(d, 1.0f, c.logits, t, N, V, 0);
    // the loss is a mean of 5 rows (values ~2): h = 1e-2 gives noise ~1e-7*2/2e-2 = 1e-5
    check_fd("cross-entropy dlogits (FD)", ce_loss, &c, c.logits, d, N * V, N * V, 1e-2f, 1e-2, 2e-4);
    check(tt_all_zero(d + 1 * V, V) && tt_all_zero(d + 4 * V, V),
          "cross-entropy ignored rows get exactly 0 gradient");
    // each counted row's gradient sums to 0 (softmax minus one-hot)
    int sum_ok = 1;
    for (int n = 0; n < N; n++) {
        double s = 0;
        for (int j = 0; j < V; j++) s += d[n * V + j];
        sum_ok &= fabs(s) < 1e-6;
    }
    check(sum_ok, "cross-entropy row gradients sum to 0");
    // dloss scales, and it accumulates
    float *acc = tt_rand(N * V, -1, 1), *acc0 = tt_copy(acc, N * V), *scaled = tt_zeros(N * V);
    for (int i = 0; i < N * V; i++) scaled[i] = 0.7f * d[i];
    cross_entropy_backward(acc, 0.7f, c.logits, t, N, V, 0);
    tt_accum("cross-entropy dlogits accumulates dloss * grad", acc, acc0, scaled, N * V);
    cross_entropy_backward(NULL, 1.0f, c.logits, t, N, V, 0);
    // every row ignored: loss 0, count 0, backward adds nothing
    const int none[N] = {-100, -100, -100, -100, -100, -100, -100};
    float l0 = 123;
    int c0 = cross_entropy_forward(&l0, c.logits, none, N, V, -100);
    memcpy(acc, acc0, N * V * sizeof(float));
    cross_entropy_backward(acc, 1.0f, c.logits, none, N, V, -100);
    check(c0 == 0 && l0 == 0.0f && memcmp(acc, acc0, N * V * sizeof(float)) == 0,
          "cross-entropy with no counted row: count 0, loss 0, no gradient");
    // huge logits: the max is taken out, nothing overflows
    float big[2 * 4] = {1000, 990, -1000, 5, -2000, -2001, -1999.5f, -3000};
    const int bt[2] = {1, 2};
    float bl;
    cross_entropy_forward(&bl, big, bt, 2, 4, -100);
    float bref = (float)ce_ref(big, bt, 2, 4, -100, &rc);
    check_close("cross-entropy logits +-1000 stable", &bl, &bref, 1, 1e-5, 1e-5);
    float bd[8] = {0};
    cross_entropy_backward(bd, 1.0f, big, bt, 2, 4, -100);
    int fin = 1;
    for (int i = 0; i < 8; i++) fin &= isfinite(bd[i]);
    check(fin, "cross-entropy gradient finite at logits +-1000");
    // the paper's vocabulary: 64 rows x 10000 (parallel path) against double
    int BN = 64, BV = 10000;
    float *bigl = tt_rand((long)BN * BV, -4, 4);
    int *btg = xmalloc(BN * sizeof(int));
    for (int n = 0; n < BN; n++) btg[n] = n % 5 == 0 ? 0 : (int)(tt_uniform() * BV);
    float bigloss;
    int bc = cross_entropy_forward(&bigloss, bigl, btg, BN, BV, 0);
    float bigref = (float)ce_ref(bigl, btg, BN, BV, 0, &rc);
    check(bc == rc, "cross-entropy 64x10000 count %d (want %d)", bc, rc);
    check_close("cross-entropy 64x10000 loss vs double", &bigloss, &bigref, 1, 1e-5, 1e-6);
    float *bgd = tt_zeros((long)BN * BV);
    cross_entropy_backward(bgd, 1.0f, bigl, btg, BN, BV, 0);
    double *gref = xcalloc((size_t)BN * BV, sizeof(double));
    for (int n = 0; n < BN; n++) {
        if (btg[n] == 0) continue;
        const float *r = bigl + (long)n * BV;
        double mx = r[0], s = 0;
        for (int j = 1; j < BV; j++) if (r[j] > mx) mx = r[j];
        for (int j = 0; j < BV; j++) s += exp((double)r[j] - mx);
        for (int j = 0; j < BV; j++)
            gref[(long)n * BV + j] = (exp((double)r[j] - mx) / s - (j == btg[n])) / rc;
    }
    float *grf = tt_from_double(gref, (long)BN * BV);
    check_close("cross-entropy 64x10000 dlogits vs double", bgd, grf, (long)BN * BV, 1e-4, 1e-9);
    free(c.logits); free(d); free(acc); free(acc0); free(scaled);
    free(bigl); free(btg); free(bgd); free(gref); free(grf);
}


// ----------------------------------------------------------------------------
// soft-target cross-entropy (the classification pretraining tasks)

typedef struct { float *logits, *target; int N, V; float loss; } SceCtx;
static double sce_loss(void *p) {
    SceCtx *c = p;
    soft_cross_entropy_forward(&c->loss, c->logits, c->target, c->N, c->V);
    return c->loss;
}

static void test_soft_cross_entropy(void) {
    enum { N = 5, V = 11 };
    SceCtx c = {tt_rand(N * V, -3, 3), tt_zeros(N * V), N, V, 0};
    // row n: 1/k on k distinct labels (row 3 has none: it adds nothing)
    const int labels[N][3] = {{2, 5, 7}, {1, 0, 0}, {4, 9, 0}, {0, 0, 0}, {10, 3, 6}};
    const int k[N] = {3, 1, 2, 0, 3};
    for (int n = 0; n < N; n++)
        for (int j = 0; j < k[n]; j++) c.target[n * V + labels[n][j]] = 1.0f / k[n];
    soft_cross_entropy_forward(&c.loss, c.logits, c.target, N, V);
    // reference: the original's loop, -mean of log-probs at the labels, averaged over N
    double ref = 0;
    for (int n = 0; n < N; n++) {
        const float *r = c.logits + n * V;
        double mx = r[0], s = 0;
        for (int j = 1; j < V; j++) if (r[j] > mx) mx = r[j];
        for (int j = 0; j < V; j++) s += exp((double)r[j] - mx);
        double inst = 0;
        for (int j = 0; j < k[n]; j++) inst += r[labels[n][j]] - mx - log(s);
        if (k[n]) ref -= inst / k[n];
    }
    float want = (float)(ref / N);
    check_close("soft cross-entropy vs per-image mean log-prob (double)", &c.loss, &want, 1, 1e-5, 1e-6);
    float *d = tt_zeros(N * V);
    soft_cross_entropy_backward(d, 1.0f, c.logits, c.target, N, V);
    check_fd("soft cross-entropy dlogits (FD)", sce_loss, &c, c.logits, d, N * V, N * V, 1e-2f, 1e-2, 2e-4);
    check(tt_all_zero(d + 3 * V, V), "soft cross-entropy: a row without labels gets 0 gradient");
    float *acc = tt_rand(N * V, -1, 1), *acc0 = tt_copy(acc, N * V), *scaled = tt_zeros(N * V);
    for (int i = 0; i < N * V; i++) scaled[i] = 0.5f * d[i];
    soft_cross_entropy_backward(acc, 0.5f, c.logits, c.target, N, V);
    tt_accum("soft cross-entropy dlogits accumulates dloss * grad", acc, acc0, scaled, N * V);
    soft_cross_entropy_backward(NULL, 1.0f, c.logits, c.target, N, V);
    free(c.logits); free(c.target); free(d); free(acc); free(acc0); free(scaled);
}

// ----------------------------------------------------------------------------

void test_ops_transformer(void) {
    test_linear();
    test_embedding();
    test_layernorm();
    test_attention();
    test_gelu();
    test_dropout();
    test_rowmask();
    test_cross_entropy();
    test_soft_cross_entropy();
}
