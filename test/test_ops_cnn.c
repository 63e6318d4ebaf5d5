// test/test_ops_cnn.c — the CNN kernels of ops.c: conv2d, batchnorm, relu, maxpool,
// add, avgpool, transpose.
//
// Three kinds of check:
//   1. forward against a straightforward loop evaluated in double (conv2d against a
//      direct convolution, batchnorm against its formula, running stats included);
//   2. backward against central finite differences of L = sum(out * R) for a fixed
//      random R, over EVERY input element (the shapes are small). L is evaluated in
//      double from the float outputs; the step actually taken in float is the
//      denominator. Error budget per op is stated where the tolerance is chosen;
//   3. the kernel contract: backward adds into its gradients (called twice it gives
//      the initial value plus twice the gradient) and skips NULL gradients; conv2d's
//      scratch is filled with NaN first, so reading anything it did not write shows.
// conv2d also runs shapes that take each path of its plan (batched small images with
// an uneven last piece, a large 1x1 image used in place, a large image cut into row
// bands), checked forward and backward against direct loops in double.
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "test.h"

// ----------------------------------------------------------------------------
// helpers

// A local RNG (splitmix64), so the tests depend on nothing but the kernels.
static uint64_t cn_state = 0x5eed0c22ull;
static double cn_uniform(void) {
    uint64_t z = (cn_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}
static float *cn_alloc(long n) { return xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }
static float *cn_rand(long n, float lo, float hi) {   // uniform in [lo, hi)
    float *x = cn_alloc(n);
    for (long i = 0; i < n; i++) x[i] = lo + (hi - lo) * (float)cn_uniform();
    return x;
}
static float *cn_zeros(long n) { return xcalloc((size_t)(n > 0 ? n : 1), sizeof(float)); }
static float *cn_copy(const float *x, long n) {
    float *y = cn_alloc(n);
    memcpy(y, x, (size_t)n * sizeof(float));
    return y;
}
static float *cn_nan(long n) {   // "uninitialised" memory that poisons whatever reads it
    float *x = cn_alloc(n);
    for (long i = 0; i < n; i++) x[i] = NAN;
    return x;
}
static float *cn_from_double(const double *x, long n) {
    float *y = cn_alloc(n);
    for (long i = 0; i < n; i++) y[i] = (float)x[i];
    return y;
}
static double cn_dot(const float *a, const float *b, long n) {
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}
// Distinct values: a random permutation of lo, lo + gap, lo + 2 gap, ... (no ties,
// and no two values closer than gap, so a finite-difference step < gap/2 never changes
// which one is the largest).
static float *cn_distinct(long n, float lo, float gap) {
    float *x = cn_alloc(n);
    for (long i = 0; i < n; i++) x[i] = lo + gap * (float)i;
    for (long i = n - 1; i > 0; i--) {
        long j = (long)(cn_uniform() * (double)(i + 1));
        float t = x[i]; x[i] = x[j]; x[j] = t;
    }
    return x;
}
// want = base + k * g, for the accumulate checks
static float *cn_axpy(const float *base, const float *g, float k, long n) {
    float *y = cn_alloc(n);
    for (long i = 0; i < n; i++) y[i] = base[i] + k * g[i];
    return y;
}

// Gradients are checked with check_fd (test/main.c) on L = sum(out * R).

// ----------------------------------------------------------------------------
// conv2d

typedef struct ConvCase {
    const char *name;
    int B, C, H, W, K, R, S, stride, pad;
} ConvCase;

// out (B,K,P,Q) = direct convolution, accumulated in double
static void conv_ref_forward(double *out, const float *x, const float *w, const ConvCase *c,
                             int P, int Q) {
    for (int b = 0; b < c->B; b++)
        for (int k = 0; k < c->K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    double s = 0;
                    for (int ch = 0; ch < c->C; ch++)
                        for (int r = 0; r < c->R; r++)
                            for (int t = 0; t < c->S; t++) {
                                int ih = p * c->stride - c->pad + r, iw = q * c->stride - c->pad + t;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                s += (double)x[(((long)b * c->C + ch) * c->H + ih) * c->W + iw] *
                                     w[(((long)k * c->C + ch) * c->R + r) * c->S + t];
                            }
                    out[(((long)b * c->K + k) * P + p) * Q + q] = s;
                }
}

// dx (B,C,H,W), dw (K,C,R,S) = direct backward of the convolution, in double
static void conv_ref_backward(double *dx, double *dw, const float *dout, const float *x,
                              const float *w, const ConvCase *c, int P, int Q) {
    for (int b = 0; b < c->B; b++)
        for (int k = 0; k < c->K; k++)
            for (int p = 0; p < P; p++)
                for (int q = 0; q < Q; q++) {
                    double g = dout[(((long)b * c->K + k) * P + p) * Q + q];
                    for (int ch = 0; ch < c->C; ch++)
                        for (int r = 0; r < c->R; r++)
                            for (int t = 0; t < c->S; t++) {
                                int ih = p * c->stride - c->pad + r, iw = q * c->stride - c->pad + t;
                                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                                long xi = (((long)b * c->C + ch) * c->H + ih) * c->W + iw;
                                long wi = (((long)k * c->C + ch) * c->R + r) * c->S + t;
                                dx[xi] += g * w[wi];
                                dw[wi] += g * x[xi];
                            }
                }
}

typedef struct ConvCtx {
    const ConvCase *c;
    float *x, *w, *out, *R, *scratch;
    long nout;
} ConvCtx;

static double conv_loss(void *p) {
    ConvCtx *t = p;
    const ConvCase *c = t->c;
    conv2d_forward(t->out, t->x, t->w, c->B, c->C, c->H, c->W, c->K, c->R, c->S, c->stride,
                   c->pad, t->scratch);
    return cn_dot(t->out, t->R, t->nout);
}

// Forward and backward against the direct loops; with fd, also finite differences
// over every element of x and w, and the accumulate / NULL contract.
static void conv_case(const ConvCase *c, int fd) {
    int P = (c->H + 2 * c->pad - c->R) / c->stride + 1;
    int Q = (c->W + 2 * c->pad - c->S) / c->stride + 1;
    long nx = (long)c->B * c->C * c->H * c->W, nw = (long)c->K * c->C * c->R * c->S;
    long nout = (long)c->B * c->K * P * Q;
    long ns = (long)conv2d_scratch_floats(c->B, c->C, c->H, c->W, c->K, c->R, c->S,
                                          c->stride, c->pad);
    float *x = cn_rand(nx, -1, 1), *w = cn_rand(nw, -1, 1), *R = cn_rand(nout, -1, 1);
    float *out = cn_alloc(nout), *scratch = cn_nan(ns);
    char what[160];

    // forward against the direct convolution. Sums of C*R*S products of size ~1/3:
    // float error ~1e-7 * sqrt(CRS) * |terms|, so rtol 1e-4, atol 1e-4 is generous.
    conv2d_forward(out, x, w, c->B, c->C, c->H, c->W, c->K, c->R, c->S, c->stride, c->pad,
                   scratch);
    double *ref = xcalloc((size_t)nout, sizeof(double));
    conv_ref_forward(ref, x, w, c, P, Q);
    float *reff = cn_from_double(ref, nout);
    snprintf(what, sizeof what, "conv %s forward vs direct", c->name);
    check_close(what, out, reff, nout, 1e-4, 1e-4);

    // backward against the direct backward (same tolerance: the same kind of sums)
    float *dx = cn_zeros(nx), *dw = cn_zeros(nw);
    for (long i = 0; i < ns; i++) scratch[i] = NAN;
    conv2d_backward(dx, dw, R, x, w, c->B, c->C, c->H, c->W, c->K, c->R, c->S, c->stride,
                    c->pad, scratch);
    double *rdx = xcalloc((size_t)nx, sizeof(double)), *rdw = xcalloc((size_t)nw, sizeof(double));
    conv_ref_backward(rdx, rdw, R, x, w, c, P, Q);
    float *rdxf = cn_from_double(rdx, nx), *rdwf = cn_from_double(rdw, nw);
    snprintf(what, sizeof what, "conv %s dx vs direct", c->name);
    check_close(what, dx, rdxf, nx, 1e-4, 1e-4);
    snprintf(what, sizeof what, "conv %s dw vs direct", c->name);
    check_close(what, dw, rdwf, nw, 1e-4, 1e-4);

    if (fd) {
        // L is linear in x and in w, so central differences have no truncation error;
        // what remains is the float rounding of out, ~1e-7 * sqrt(nout) * |out| / (2h)
        // ~ 1e-4 at h = 1e-2: atol 2e-3, rtol 1e-2.
        ConvCtx t = {c, x, w, out, R, scratch, nout};
        snprintf(what, sizeof what, "conv %s dx vs finite differences", c->name);
        check_fd(what, conv_loss, &t, x, dx, nx, nx, 1e-2f, 1e-2, 2e-3);
        snprintf(what, sizeof what, "conv %s dw vs finite differences", c->name);
        check_fd(what, conv_loss, &t, w, dw, nw, nw, 1e-2f, 1e-2, 2e-3);

        // contract: called again it adds the same gradients once more; NULL skipped
        float *dx0 = cn_copy(dx, nx), *dw0 = cn_copy(dw, nw);
        conv2d_backward(dx, dw, R, x, w, c->B, c->C, c->H, c->W, c->K, c->R, c->S,
                        c->stride, c->pad, scratch);
        float *dx2 = cn_axpy(dx0, dx0, 1.0f, nx), *dw2 = cn_axpy(dw0, dw0, 1.0f, nw);
        snprintf(what, sizeof what, "conv %s backward accumulates dx", c->name);
        check_close(what, dx, dx2, nx, 1e-5, 1e-6);
        snprintf(what, sizeof what, "conv %s backward accumulates dw", c->name);
        check_close(what, dw, dw2, nw, 1e-5, 1e-6);
        float *only = cn_zeros(nx);
        conv2d_backward(only, NULL, R, x, w, c->B, c->C, c->H, c->W, c->K, c->R, c->S,
                        c->stride, c->pad, scratch);
        snprintf(what, sizeof what, "conv %s dx alone (dw NULL)", c->name);
        check_close(what, only, dx0, nx, 1e-6, 1e-7);
        free(only);
        only = cn_zeros(nw);
        conv2d_backward(NULL, only, R, x, w, c->B, c->C, c->H, c->W, c->K, c->R, c->S,
                        c->stride, c->pad, scratch);
        snprintf(what, sizeof what, "conv %s dw alone (dx NULL)", c->name);
        check_close(what, only, dw0, nw, 1e-6, 1e-7);
        conv2d_backward(NULL, NULL, R, x, w, c->B, c->C, c->H, c->W, c->K, c->R, c->S,
                        c->stride, c->pad, scratch);
        check(1, "conv %s backward with both grads NULL returns", c->name);
        free(only); free(dx0); free(dw0); free(dx2); free(dw2);
    }
    free(x); free(w); free(R); free(out); free(scratch); free(ref); free(reff);
    free(dx); free(dw); free(rdx); free(rdw); free(rdxf); free(rdwf);
}

static void test_conv2d(void) {
    // every convolution shape of ResNet-50, at small odd sizes (finite differences)
    static const ConvCase small[] = {
        {"7x7/s2/p3 stem", 2, 3, 11, 13, 4, 7, 7, 2, 3},
        {"3x3/s1/p1", 2, 3, 7, 9, 5, 3, 3, 1, 1},
        {"3x3/s2/p1", 2, 3, 9, 7, 4, 3, 3, 2, 1},
        {"1x1/s1", 3, 5, 5, 7, 6, 1, 1, 1, 0},
        {"1x1/s2 downsample", 2, 4, 7, 9, 3, 1, 1, 2, 0},
        {"3x5/s1/p2 non-square", 2, 2, 6, 5, 3, 3, 5, 1, 2},
        {"2x2/s3/p0 window skips pixels", 1, 2, 8, 7, 2, 2, 2, 3, 0},
    };
    for (size_t i = 0; i < sizeof small / sizeof small[0]; i++) conv_case(&small[i], 1);
    // each path of the plan, forward and backward against the direct loops
    static const ConvCase paths[] = {
        {"3x3 batched, uneven pieces (B=5)", 5, 6, 17, 18, 7, 3, 3, 1, 1},
        {"1x1 batched gather (B=3)", 3, 9, 11, 13, 10, 1, 1, 1, 0},
        {"1x1/s2 batched (B=4)", 4, 8, 15, 13, 6, 1, 1, 2, 0},
        {"1x1 large image in place", 2, 5, 33, 35, 7, 1, 1, 1, 0},
        {"3x3 large image, one piece", 2, 3, 35, 33, 4, 3, 3, 1, 1},
        {"3x3 large image in row bands", 1, 64, 61, 63, 3, 3, 3, 1, 1},
        {"7x7/s2 large image in row bands", 1, 48, 127, 121, 2, 7, 7, 2, 3},
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) conv_case(&paths[i], 0);
}

// ----------------------------------------------------------------------------
// batchnorm

typedef struct BnCtx {
    float *x, *g, *b, *out, *mean, *rstd, *rm, *rv, *R;
    int B, C, HW, training;
} BnCtx;

static double bn_loss(void *p) {
    BnCtx *t = p;
    // running stats are not touched by the loss (training: pass NULL)
    batchnorm_forward(t->out, t->mean, t->rstd, t->x, t->g, t->b,
                      t->training ? NULL : t->rm, t->training ? NULL : t->rv, t->B, t->C,
                      t->HW, t->training, 0.1f, 1e-5f);
    return cn_dot(t->out, t->R, (long)t->B * t->C * t->HW);
}

// The forward in double: batch statistics (training) or the running ones (eval).
static void bn_reference(double *out, double *mean, double *var, const float *x,
                         const float *g, const float *b, const float *rm, const float *rv,
                         int B, int C, int HW, int training, double eps) {
    long n = (long)B * HW;
    for (int c = 0; c < C; c++) {
        double m = 0, v = 0;
        if (training) {
            for (int bb = 0; bb < B; bb++)
                for (int i = 0; i < HW; i++) m += x[((long)bb * C + c) * HW + i];
            m /= (double)n;
            for (int bb = 0; bb < B; bb++)
                for (int i = 0; i < HW; i++) {
                    double d = x[((long)bb * C + c) * HW + i] - m;
                    v += d * d;
                }
            v /= (double)n;
        } else {
            m = rm[c];
            v = rv[c];
        }
        mean[c] = m;
        var[c] = v;
        for (int bb = 0; bb < B; bb++)
            for (int i = 0; i < HW; i++) {
                long k = ((long)bb * C + c) * HW + i;
                out[k] = (x[k] - m) / sqrt(v + eps) * g[c] + b[c];
            }
    }
}

static void bn_forward_case(int B, int C, int HW, float shift) {
    long n = (long)B * C * HW;
    float *x = cn_rand(n, shift - 2, shift + 2), *g = cn_rand(C, 0.5f, 1.5f),
          *b = cn_rand(C, -0.5f, 0.5f);
    float *rm = cn_rand(C, -0.2f, 0.2f), *rv = cn_rand(C, 0.5f, 1.5f);
    float *rm0 = cn_copy(rm, C), *rv0 = cn_copy(rv, C);
    float *out = cn_alloc(n), *mean = cn_alloc(C), *rstd = cn_alloc(C);
    double *ro = xmalloc((size_t)n * sizeof(double)), *rmean = xmalloc((size_t)C * sizeof(double)),
           *rvar = xmalloc((size_t)C * sizeof(double));
    char what[160];
    double momentum = 0.1, eps = 1e-5, cnt = (double)B * HW;

    // training: batch statistics. Values ~1 normalised: rtol/atol 1e-5 is float level.
    batchnorm_forward(out, mean, rstd, x, g, b, rm, rv, B, C, HW, 1, 0.1f, 1e-5f);
    bn_reference(ro, rmean, rvar, x, g, b, NULL, NULL, B, C, HW, 1, eps);
    float *want = cn_from_double(ro, n);
    snprintf(what, sizeof what, "bn train (%d,%d,%d) mean %+g: out", B, C, HW, shift);
    check_close(what, out, want, n, 1e-5, 1e-5);
    float *wm = cn_alloc(C), *wr = cn_alloc(C), *wrm = cn_alloc(C), *wrv = cn_alloc(C);
    for (int c = 0; c < C; c++) {
        wm[c] = (float)rmean[c];
        wr[c] = (float)(1.0 / sqrt(rvar[c] + eps));
        // PyTorch: running = (1 - momentum) * running + momentum * stat, with the
        // unbiased variance var * n / (n - 1)
        wrm[c] = (float)((1 - momentum) * rm0[c] + momentum * rmean[c]);
        wrv[c] = (float)((1 - momentum) * rv0[c] + momentum * rvar[c] * cnt / (cnt - 1));
    }
    snprintf(what, sizeof what, "bn train (%d,%d,%d): saved mean", B, C, HW);
    check_close(what, mean, wm, C, 1e-6, 1e-6);
    snprintf(what, sizeof what, "bn train (%d,%d,%d): saved rstd", B, C, HW);
    check_close(what, rstd, wr, C, 1e-6, 1e-6);
    snprintf(what, sizeof what, "bn train (%d,%d,%d): running_mean update", B, C, HW);
    check_close(what, rm, wrm, C, 1e-6, 1e-6);
    snprintf(what, sizeof what, "bn train (%d,%d,%d): running_var update (unbiased)", B, C, HW);
    check_close(what, rv, wrv, C, 1e-6, 1e-6);

    // NULL running stats: same output, nothing written
    float *out2 = cn_alloc(n);
    batchnorm_forward(out2, mean, rstd, x, g, b, NULL, NULL, B, C, HW, 1, 0.1f, 1e-5f);
    snprintf(what, sizeof what, "bn train (%d,%d,%d): NULL running stats, same out", B, C, HW);
    check_close(what, out2, out, n, 0, 0);

    // eval: the (now updated) running statistics, which must be left unchanged
    float *rm1 = cn_copy(rm, C), *rv1 = cn_copy(rv, C);
    batchnorm_forward(out, mean, rstd, x, g, b, rm, rv, B, C, HW, 0, 0.1f, 1e-5f);
    bn_reference(ro, rmean, rvar, x, g, b, rm1, rv1, B, C, HW, 0, eps);
    free(want);
    want = cn_from_double(ro, n);
    snprintf(what, sizeof what, "bn eval (%d,%d,%d): out from running stats", B, C, HW);
    check_close(what, out, want, n, 1e-5, 1e-5);
    for (int c = 0; c < C; c++) wr[c] = (float)(1.0 / sqrt((double)rv1[c] + eps));
    snprintf(what, sizeof what, "bn eval (%d,%d,%d): saved mean = running_mean", B, C, HW);
    check_close(what, mean, rm1, C, 0, 0);
    snprintf(what, sizeof what, "bn eval (%d,%d,%d): saved rstd from running_var", B, C, HW);
    check_close(what, rstd, wr, C, 1e-6, 0);
    int same = memcmp(rm, rm1, (size_t)C * sizeof(float)) == 0 &&
               memcmp(rv, rv1, (size_t)C * sizeof(float)) == 0;
    check(same, "bn eval (%d,%d,%d): running stats untouched", B, C, HW);

    free(x); free(g); free(b); free(rm); free(rv); free(rm0); free(rv0); free(out);
    free(out2); free(mean); free(rstd); free(ro); free(rmean); free(rvar); free(want);
    free(wm); free(wr); free(wrm); free(wrv); free(rm1); free(rv1);
}

static void bn_backward_case(int B, int C, int HW, int training) {
    long n = (long)B * C * HW;
    BnCtx t = {cn_rand(n, -2, 2), cn_rand(C, 0.5f, 1.5f), cn_rand(C, -0.5f, 0.5f),
               cn_alloc(n), cn_alloc(C), cn_alloc(C), cn_rand(C, -0.3f, 0.3f),
               cn_rand(C, 0.5f, 1.5f), cn_rand(n, -1, 1), B, C, HW, training};
    const char *mode = training ? "train" : "eval";
    char what[160];
    bn_loss(&t);   // fills mean / rstd as backward needs them
    float *dx = cn_zeros(n), *dg = cn_zeros(C), *db = cn_zeros(C);
    batchnorm_backward(dx, dg, db, t.R, t.x, t.mean, t.rstd, t.g, B, C, HW, training);

    // Training: L is smooth in x; the third derivative of the normalisation is O(1)
    // for unit-variance data, so the truncation error at h = 1e-2 is ~1e-5, and the
    // float rounding of L ~1e-7 * sqrt(n) / (2h) ~ 1e-4: rtol 1e-2, atol 2e-3.
    snprintf(what, sizeof what, "bn %s (%d,%d,%d): dx vs finite differences", mode, B, C, HW);
    check_fd(what, bn_loss, &t, t.x, dx, n, n, 1e-2f, 1e-2, 2e-3);
    snprintf(what, sizeof what, "bn %s (%d,%d,%d): dgamma vs finite differences", mode, B, C, HW);
    check_fd(what, bn_loss, &t, t.g, dg, C, C, 1e-2f, 1e-2, 2e-3);
    snprintf(what, sizeof what, "bn %s (%d,%d,%d): dbeta vs finite differences", mode, B, C, HW);
    check_fd(what, bn_loss, &t, t.b, db, C, C, 1e-2f, 1e-2, 2e-3);

    // contract: accumulate, and each NULL gradient skipped without changing the others
    bn_loss(&t);
    float *dx0 = cn_copy(dx, n), *dg0 = cn_copy(dg, C), *db0 = cn_copy(db, C);
    batchnorm_backward(dx, dg, db, t.R, t.x, t.mean, t.rstd, t.g, B, C, HW, training);
    float *w1 = cn_axpy(dx0, dx0, 1, n), *w2 = cn_axpy(dg0, dg0, 1, C), *w3 = cn_axpy(db0, db0, 1, C);
    snprintf(what, sizeof what, "bn %s backward accumulates dx", mode);
    check_close(what, dx, w1, n, 1e-5, 1e-6);
    snprintf(what, sizeof what, "bn %s backward accumulates dgamma", mode);
    check_close(what, dg, w2, C, 1e-5, 1e-6);
    snprintf(what, sizeof what, "bn %s backward accumulates dbeta", mode);
    check_close(what, db, w3, C, 1e-5, 1e-6);
    float *a = cn_zeros(n), *bb = cn_zeros(C);
    batchnorm_backward(a, NULL, NULL, t.R, t.x, t.mean, t.rstd, t.g, B, C, HW, training);
    snprintf(what, sizeof what, "bn %s dx alone (dgamma, dbeta NULL)", mode);
    check_close(what, a, dx0, n, 0, 0);
    batchnorm_backward(NULL, bb, NULL, t.R, t.x, t.mean, t.rstd, t.g, B, C, HW, training);
    snprintf(what, sizeof what, "bn %s dgamma alone", mode);
    check_close(what, bb, dg0, C, 0, 0);
    memset(bb, 0, (size_t)C * sizeof(float));
    batchnorm_backward(NULL, NULL, bb, t.R, t.x, t.mean, t.rstd, t.g, B, C, HW, training);
    snprintf(what, sizeof what, "bn %s dbeta alone", mode);
    check_close(what, bb, db0, C, 0, 0);

    free(t.x); free(t.g); free(t.b); free(t.out); free(t.mean); free(t.rstd); free(t.rm);
    free(t.rv); free(t.R); free(dx); free(dg); free(db); free(dx0); free(dg0); free(db0);
    free(w1); free(w2); free(w3); free(a); free(bb);
}

// A large-batch check of the training backward against the closed form in double
// (too many elements for finite differences, and it runs the parallel path).
static void bn_backward_large(int B, int C, int HW) {
    long n = (long)B * C * HW, cnt = (long)B * HW;
    float *x = cn_rand(n, 1, 5), *g = cn_rand(C, 0.5f, 1.5f), *b = cn_rand(C, -1, 1);
    float *out = cn_alloc(n), *mean = cn_alloc(C), *rstd = cn_alloc(C), *d = cn_rand(n, -1, 1);
    float *dx = cn_zeros(n), *dg = cn_zeros(C), *db = cn_zeros(C);
    batchnorm_forward(out, mean, rstd, x, g, b, NULL, NULL, B, C, HW, 1, 0.1f, 1e-5f);
    batchnorm_backward(dx, dg, db, d, x, mean, rstd, g, B, C, HW, 1);
    double *ro = xmalloc((size_t)n * sizeof(double)), *rm = xmalloc((size_t)C * sizeof(double)),
           *rv = xmalloc((size_t)C * sizeof(double));
    bn_reference(ro, rm, rv, x, g, b, NULL, NULL, B, C, HW, 1, 1e-5);
    double *wdx = xmalloc((size_t)n * sizeof(double));
    float *wg = cn_alloc(C), *wb = cn_alloc(C);
    for (int c = 0; c < C; c++) {
        double rs = 1 / sqrt(rv[c] + 1e-5), s1 = 0, s2 = 0;
        for (int bb = 0; bb < B; bb++)
            for (int i = 0; i < HW; i++) {
                long k = ((long)bb * C + c) * HW + i;
                s1 += d[k];
                s2 += d[k] * (x[k] - rm[c]) * rs;
            }
        wg[c] = (float)s2;
        wb[c] = (float)s1;
        for (int bb = 0; bb < B; bb++)
            for (int i = 0; i < HW; i++) {
                long k = ((long)bb * C + c) * HW + i;
                double xh = (x[k] - rm[c]) * rs;
                wdx[k] = g[c] * rs * (d[k] - s1 / cnt - xh * s2 / cnt);
            }
    }
    float *wdxf = cn_from_double(wdx, n);
    char what[160];
    // sums over cnt ~1e4 terms of size ~1: float-level relative error ~1e-6
    snprintf(what, sizeof what, "bn train (%d,%d,%d) mean 3: dx vs closed form", B, C, HW);
    check_close(what, dx, wdxf, n, 1e-4, 1e-5);
    snprintf(what, sizeof what, "bn train (%d,%d,%d): dgamma vs closed form", B, C, HW);
    check_close(what, dg, wg, C, 1e-5, 1e-4);
    snprintf(what, sizeof what, "bn train (%d,%d,%d): dbeta vs closed form", B, C, HW);
    check_close(what, db, wb, C, 1e-5, 1e-4);
    free(x); free(g); free(b); free(out); free(mean); free(rstd); free(d); free(dx);
    free(dg); free(db); free(ro); free(rm); free(rv); free(wdx); free(wg); free(wb); free(wdxf);
}

static void test_batchnorm(void) {
    bn_forward_case(2, 3, 7, 0.0f);
    bn_forward_case(3, 5, 1, 0.0f);            // HW = 1 (a 1x1 feature map)
    bn_forward_case(4, 6, 1111, 100.0f);       // far from zero: two-pass variance
    bn_forward_case(8, 16, 49, -3.0f);
    bn_backward_case(2, 3, 7, 1);
    bn_backward_case(3, 2, 5, 0);
    bn_backward_case(4, 3, 1, 1);
    bn_backward_large(4, 8, 3000);
}

// ----------------------------------------------------------------------------
// relu, maxpool, add, avgpool, transpose

typedef struct SimpleCtx {     // one input, one output, L = sum(out * R)
    int op;                    // 0 relu, 1 maxpool, 2 avgpool, 3 transpose
    float *x, *out, *R;
    int *argmax;
    long nout;
    int B, C, H, W, k, s, p;
} SimpleCtx;

static double simple_loss(void *ptr) {
    SimpleCtx *t = ptr;
    switch (t->op) {
    case 0: relu_forward(t->out, t->x, (long)t->B * t->C * t->H * t->W); break;
    case 1: maxpool_forward(t->out, t->argmax, t->x, t->B, t->C, t->H, t->W, t->k, t->s, t->p); break;
    case 2: avgpool_forward(t->out, t->x, t->B, t->C, t->H * t->W); break;
    default: transpose_forward(t->out, t->x, t->B, t->C, t->H * t->W); break;
    }
    return cn_dot(t->out, t->R, t->nout);
}

static void test_relu(void) {
    long n = 2 * 3 * 5 * 7;
    SimpleCtx t = {0, cn_rand(n, -1, 1), cn_alloc(n), cn_rand(n, -1, 1), NULL, n, 2, 3, 5, 7, 0, 0, 0};
    for (long i = 0; i < n; i++)   // keep clear of the kink at 0 (further than h)
        if (fabsf(t.x[i]) < 0.05f) t.x[i] = t.x[i] < 0 ? -0.05f : 0.05f;
    simple_loss(&t);
    float *want = cn_alloc(n);
    for (long i = 0; i < n; i++) want[i] = t.x[i] > 0 ? t.x[i] : 0.0f;
    check_close("relu forward", t.out, want, n, 0, 0);
    float *dx = cn_zeros(n);
    relu_backward(dx, t.R, t.out, n);
    // piecewise linear, away from the kink: FD exact up to float rounding of L
    check_fd("relu dx vs finite differences", simple_loss, &t, t.x, dx, n, n, 1e-2f, 1e-3, 1e-4);
    float *dx0 = cn_copy(dx, n);
    relu_backward(dx, t.R, t.out, n);
    float *w2 = cn_axpy(dx0, dx0, 1, n);
    check_close("relu backward accumulates", dx, w2, n, 0, 0);
    relu_backward(NULL, t.R, t.out, n);
    check(1, "relu backward with NULL dx returns");
    float nanv = NAN, o;
    relu_forward(&o, &nanv, 1);
    check(isnan(o), "relu forward keeps NaN (as PyTorch)");
    // a big array takes the parallel path
    long big = 1L << 20;
    float *xb = cn_rand(big, -1, 1), *ob = cn_alloc(big), *wb = cn_alloc(big);
    relu_forward(ob, xb, big);
    for (long i = 0; i < big; i++) wb[i] = xb[i] > 0 ? xb[i] : 0.0f;
    check_close("relu forward, 2^20 elements", ob, wb, big, 0, 0);
    free(t.x); free(t.out); free(t.R); free(want); free(dx); free(dx0); free(w2);
    free(xb); free(ob); free(wb);
}

// out (B,C,P,Q), argmax: the straightforward maxpool, first max in row-major order
static void maxpool_ref(float *out, int *am, const float *x, int B, int C, int H, int W,
                        int k, int s, int p) {
    int P = (H + 2 * p - k) / s + 1, Q = (W + 2 * p - k) / s + 1;
    for (long pl = 0; pl < (long)B * C; pl++)
        for (int oh = 0; oh < P; oh++)
            for (int ow = 0; ow < Q; ow++) {
                float best = -INFINITY;
                int bi = -1;
                for (int i = 0; i < k; i++)
                    for (int j = 0; j < k; j++) {
                        int ih = oh * s - p + i, iw = ow * s - p + j;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        float v = x[pl * H * W + ih * W + iw];
                        if (bi < 0 || v > best) { best = v; bi = ih * W + iw; }
                    }
                out[(pl * P + oh) * Q + ow] = best;
                am[(pl * P + oh) * Q + ow] = bi;
            }
}

static void maxpool_case(int B, int C, int H, int W, int k, int s, int p) {
    int P = (H + 2 * p - k) / s + 1, Q = (W + 2 * p - k) / s + 1;
    long nx = (long)B * C * H * W, no = (long)B * C * P * Q;
    // distinct values 0.01 apart: a step of h = 2e-3 never changes a window's winner
    SimpleCtx t = {1, cn_distinct(nx, -1, 0.01f), cn_alloc(no), cn_rand(no, -1, 1),
                   xmalloc((size_t)no * sizeof(int)), no, B, C, H, W, k, s, p};
    char what[160];
    simple_loss(&t);
    float *want = cn_alloc(no);
    int *wam = xmalloc((size_t)no * sizeof(int));
    maxpool_ref(want, wam, t.x, B, C, H, W, k, s, p);
    snprintf(what, sizeof what, "maxpool %dx%d/s%d/p%d (%d,%d,%d,%d) forward", k, k, s, p, B, C, H, W);
    check_close(what, t.out, want, no, 0, 0);
    check(memcmp(t.argmax, wam, (size_t)no * sizeof(int)) == 0, "maxpool %dx%d/s%d/p%d argmax",
          k, k, s, p);
    float *dx = cn_zeros(nx);
    maxpool_backward(dx, t.R, t.argmax, B, C, H, W, k, s, p);
    snprintf(what, sizeof what, "maxpool %dx%d/s%d/p%d dx vs finite differences", k, k, s, p);
    check_fd(what, simple_loss, &t, t.x, dx, nx, nx, 2e-3f, 1e-3, 1e-4);
    simple_loss(&t);
    float *dx0 = cn_copy(dx, nx);
    maxpool_backward(dx, t.R, t.argmax, B, C, H, W, k, s, p);
    float *w2 = cn_axpy(dx0, dx0, 1, nx);
    // overlapping windows add into one pixel in a different order the second time
    snprintf(what, sizeof what, "maxpool %dx%d/s%d/p%d backward accumulates", k, k, s, p);
    check_close(what, dx, w2, nx, 1e-6, 1e-6);
    maxpool_backward(NULL, t.R, t.argmax, B, C, H, W, k, s, p);
    free(t.x); free(t.out); free(t.R); free(t.argmax); free(want); free(wam); free(dx);
    free(dx0); free(w2);
}

static void test_maxpool(void) {
    maxpool_case(2, 3, 9, 7, 3, 2, 1);      // the ResNet stem's pool, odd sizes
    maxpool_case(1, 2, 8, 10, 3, 2, 1);     // even sizes
    maxpool_case(2, 2, 6, 7, 2, 2, 0);
    maxpool_case(1, 3, 7, 7, 3, 1, 1);      // overlapping windows, stride 1
    // ties: the first maximum in row-major window order wins
    float x[9] = {1, 5, 5,
                  5, 2, 5,
                  0, 5, 3};
    float out[4];
    int am[4];
    maxpool_forward(out, am, x, 1, 1, 3, 3, 2, 1, 0);
    int want[4] = {1, 1, 3, 5};   // windows {0,1,3,4} {1,2,4,5} {3,4,6,7} {4,5,7,8}
    check(memcmp(am, want, sizeof want) == 0 && out[0] == 5,
          "maxpool ties: first max in row-major order (got %d %d %d %d, want 1 1 3 5)",
          am[0], am[1], am[2], am[3]);
    // padding never wins, even over all-negative windows
    float neg[4] = {-3, -2, -4, -5}, o2[4];
    int a2[4];
    maxpool_forward(o2, a2, neg, 1, 1, 2, 2, 3, 1, 1);
    check(o2[0] == -2 && a2[0] == 1, "maxpool padding never wins (got %g at %d)", o2[0], a2[0]);
    // an all-zero plane (ReLU output): every window's first valid pixel wins
    float z[25] = {0}, oz[9];
    int az[9], wz[9];
    maxpool_forward(oz, az, z, 1, 1, 5, 5, 3, 2, 1);
    for (int i = 0; i < 9; i++) {
        int h = (i / 3) * 2 - 1, w = (i % 3) * 2 - 1;
        wz[i] = (h < 0 ? 0 : h) * 5 + (w < 0 ? 0 : w);
    }
    check(memcmp(az, wz, sizeof wz) == 0, "maxpool all-equal windows: first valid pixel wins");
    // a NaN wins its windows (PyTorch propagates NaN through max pooling)
    float xn[9] = {1, 2, 3, 4, NAN, 6, 7, 8, 9}, on[4];
    int an[4];
    maxpool_forward(on, an, xn, 1, 1, 3, 3, 2, 1, 0);
    check(isnan(on[0]) && isnan(on[3]) && an[0] == 4 && an[3] == 4,
          "maxpool NaN propagates (out %g %g, at %d %d)", on[0], on[3], an[0], an[3]);
}

static void test_add(void) {
    long n = 3 * 4 * 5;
    float *a = cn_rand(n, -1, 1), *b = cn_rand(n, -1, 1), *out = cn_alloc(n), *want = cn_alloc(n);
    add_forward(out, a, b, n);
    for (long i = 0; i < n; i++) want[i] = a[i] + b[i];
    check_close("add forward", out, want, n, 0, 0);
    float *d = cn_rand(n, -1, 1), *da = cn_rand(n, -1, 1), *db = cn_zeros(n);
    float *da0 = cn_copy(da, n);
    add_backward(da, db, d, n);   // the gradient of a + b is exact: no FD needed
    float *w1 = cn_axpy(da0, d, 1, n);
    check_close("add backward: da += dout (onto existing values)", da, w1, n, 0, 0);
    check_close("add backward: db += dout", db, d, n, 0, 0);
    add_backward(NULL, db, d, n);
    float *w2 = cn_axpy(d, d, 1, n);
    check_close("add backward: da NULL skipped, db accumulates", db, w2, n, 0, 0);
    float *same = cn_zeros(n);
    add_backward(same, same, d, n);   // x + x: both gradients land in one buffer
    check_close("add backward: da == db gets 2 dout", same, w2, n, 0, 0);
    free(a); free(b); free(out); free(want); free(d); free(da); free(db); free(da0);
    free(w1); free(w2); free(same);
}

static void test_avgpool(void) {
    int B = 2, C = 3, HW = 7 * 5;
    long nx = (long)B * C * HW, no = (long)B * C;
    SimpleCtx t = {2, cn_rand(nx, -1, 1), cn_alloc(no), cn_rand(no, -1, 1), NULL, no, B, C, 7, 5, 0, 0, 0};
    simple_loss(&t);
    float *want = cn_alloc(no);
    for (long i = 0; i < no; i++) {
        double s = 0;
        for (int j = 0; j < HW; j++) s += t.x[i * HW + j];
        want[i] = (float)(s / HW);
    }
    check_close("avgpool forward", t.out, want, no, 1e-6, 1e-7);
    float *dx = cn_zeros(nx);
    avgpool_backward(dx, t.R, B, C, HW);
    check_fd("avgpool dx vs finite differences", simple_loss, &t, t.x, dx, nx, nx, 1e-2f, 1e-3, 1e-4);
    float *dx0 = cn_copy(dx, nx);
    avgpool_backward(dx, t.R, B, C, HW);
    float *w2 = cn_axpy(dx0, dx0, 1, nx);
    check_close("avgpool backward accumulates", dx, w2, nx, 0, 0);
    avgpool_backward(NULL, t.R, B, C, HW);
    free(t.x); free(t.out); free(t.R); free(want); free(dx); free(dx0); free(w2);
}

static void transpose_case(int B, int M, int N, int fd) {
    long n = (long)B * M * N;
    SimpleCtx t = {3, cn_rand(n, -1, 1), cn_alloc(n), cn_rand(n, -1, 1), NULL, n, B, M, N, 1, 0, 0, 0};
    char what[160];
    simple_loss(&t);
    float *want = cn_alloc(n);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                want[((long)b * N + j) * M + i] = t.x[((long)b * M + i) * N + j];
    snprintf(what, sizeof what, "transpose (%d,%d,%d) forward", B, M, N);
    check_close(what, t.out, want, n, 0, 0);
    float *dx = cn_rand(n, -1, 1), *dx0 = cn_copy(dx, n), *wdx = cn_alloc(n);
    transpose_backward(dx, t.R, B, M, N);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                long k = ((long)b * M + i) * N + j;
                wdx[k] = dx0[k] + t.R[((long)b * N + j) * M + i];
            }
    snprintf(what, sizeof what, "transpose (%d,%d,%d) backward accumulates", B, M, N);
    check_close(what, dx, wdx, n, 0, 0);
    if (fd) {
        float *g = cn_zeros(n);
        transpose_backward(g, t.R, B, M, N);
        snprintf(what, sizeof what, "transpose (%d,%d,%d) dx vs finite differences", B, M, N);
        check_fd(what, simple_loss, &t, t.x, g, n, n, 1e-2f, 1e-3, 1e-4);
        free(g);
    }
    transpose_backward(NULL, t.R, B, M, N);
    free(t.x); free(t.out); free(t.R); free(want); free(dx); free(dx0); free(wdx);
}

static void test_transpose(void) {
    transpose_case(2, 3, 5, 1);
    transpose_case(3, 37, 45, 0);      // partial tiles on both sides
    transpose_case(2, 2048, 49, 0);    // the ResNet-50 grid -> memory layout
    transpose_case(1, 1, 7, 0);
}

// ----------------------------------------------------------------------------
// the same bits for any number of threads

// Runs conv2d and batchnorm forward + backward at shapes large enough to take the
// parallel paths; fills res[0..5] (conv out, dx, dw, bn out, dx, dgamma). bn runs
// on its own input y (B,K,HW), so its inputs are the same bits in both runs.
static void threads_run(float **res, const float *x, const float *w, const float *d,
                        const float *y, const float *g, const float *b) {
    int B = 4, C = 24, H = 21, W = 19, K = 32;   // 3x3/s1/p1: pieces of 3 + 1 images
    long nx = (long)B * C * H * W, no = (long)B * K * H * W;
    float *scratch = cn_alloc((long)conv2d_scratch_floats(B, C, H, W, K, 3, 3, 1, 1));
    res[0] = cn_alloc(no); res[1] = cn_zeros(nx); res[2] = cn_zeros((long)K * C * 9);
    res[3] = cn_alloc(no); res[4] = cn_zeros(no); res[5] = cn_zeros(K);
    conv2d_forward(res[0], x, w, B, C, H, W, K, 3, 3, 1, 1, scratch);
    conv2d_backward(res[1], res[2], d, x, w, B, C, H, W, K, 3, 3, 1, 1, scratch);
    float mean[32], rstd[32], db[32] = {0};
    batchnorm_forward(res[3], mean, rstd, y, g, b, NULL, NULL, B, K, H * W, 1, 0.1f, 1e-5f);
    batchnorm_backward(res[4], res[5], db, d, y, mean, rstd, g, B, K, H * W, 1);
    free(scratch);
}

static void test_threads(void) {
#ifdef _OPENMP
    int nt = omp_get_max_threads();
    if (nt < 2) { check(1, "threads: only one thread available, skipped"); return; }
    long nx = 4L * 24 * 21 * 19, no = 4L * 32 * 21 * 19;
    float *x = cn_rand(nx, -1, 1), *w = cn_rand(32L * 24 * 9, -1, 1), *d = cn_rand(no, -1, 1);
    float *y = cn_rand(no, -2, 3), *g = cn_rand(32, 0.5f, 1.5f), *b = cn_rand(32, -1, 1);
    float *one[6], *all[6];
    omp_set_num_threads(1);
    threads_run(one, x, w, d, y, g, b);
    omp_set_num_threads(nt);
    threads_run(all, x, w, d, y, g, b);
    long n[6] = {no, nx, 32L * 24 * 9, no, no, 32};
    const char *names[6] = {"conv out", "conv dx", "conv dw", "bn out", "bn dx", "bn dgamma"};
    // ops.c's own loops never split a sum across threads: bitwise equal. The conv
    // products are sgemm's, which may split a long reduction between threads, so
    // the conv outputs may differ by rounding.
    for (int i = 0; i < 6; i++) {
        char what[96];
        int exact = i >= 3;   // values ~10, sums of ~10^3 terms: rounding ~1e-5
        snprintf(what, sizeof what, "threads: %s, 1 vs %d threads %s", names[i], nt,
                 exact ? "bitwise" : "(sgemm rounding)");
        check_close(what, all[i], one[i], n[i], exact ? 0 : 1e-5, exact ? 0 : 1e-4);
        free(one[i]); free(all[i]);
    }
    free(x); free(w); free(d); free(y); free(g); free(b);
#else
    check(1, "threads: built without OpenMP, skipped");
#endif
}

// ----------------------------------------------------------------------------

void test_ops_cnn(void) {
    test_conv2d();
    test_batchnorm();
    test_relu();
    test_maxpool();
    test_add();
    test_avgpool();
    test_transpose();
    test_threads();
}
