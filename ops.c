// ops.c — the CPU reference kernels of virtex.c (section 3 of model.h).
//
// Each operation is a pair X_forward / X_backward over plain float arrays, with the
// shapes in a one-line comment above it. Shape letters: B batch, C channels, H/W input
// height/width, K output channels, R/S kernel height/width, P/Q output height/width,
// HW = H*W. All arrays are row-major and contiguous (NCHW for images).
//
// The contract every backward keeps: it ACCUMULATES into its gradients (+=), so a
// tensor used twice receives the sum, and it skips any gradient pointer that is NULL
// (an input that needs no gradient costs nothing).
//
// Heavy products go through sgemm (gemm.c); everything else here is a memory-bound
// loop, parallelised with OpenMP when it is big enough to pay for a parallel region.
// The loops here give the same bits for any number of threads: their reductions are
// split by output element (channel, plane, ...), never into thread-partial sums.
// (conv2d's products are sgemm's, and inherit whatever sgemm guarantees.)
//
// Sections: helpers, convolution, batch normalisation, relu, max pooling, residual
// add, global average pooling, batched transpose; then the transformer operations:
// linear, embedding, layernorm, attention, gelu, dropout, row mask, cross-entropy.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// ----------------------------------------------------------------------------
// helpers shared by the kernels

// Work (elements touched) below which a loop stays on one thread. A parallel region
// costs about a microsecond while the other threads still spin from the last one, so
// even small loops gain: on the default config, 1 << 11 instead of 1 << 15 took 2-core
// training from 705 to 808 images/s (300 iterations, 3 runs each).
enum { OPS_PAR_MIN = 1 << 11 };

static inline long ops_lmin(long a, long b) { return a < b ? a : b; }
static inline long ops_lmax(long a, long b) { return a > b ? a : b; }
static inline long ops_ceil_div(long a, long b) { return (a + b - 1) / b; }

// Sums over float data, accurate to double. Each block of OPS_BLOCK values is summed
// in a vector of OPS_LANES float lanes (a lane adds only OPS_BLOCK / OPS_LANES <= 64
// values, so its rounding error stays tiny), and the lanes are added into a double
// at the end of the block. A short last group is loaded zero-padded, so short rows (a
// 7x7 plane) run vectorised too. The order of additions is fixed: the result does not
// depend on the number of threads. (GCC vector extensions, one register wide: 16
// lanes with AVX-512, 8 with AVX, 4 otherwise.)
#if defined(__AVX512F__)
#define OPS_LANES 16
#elif defined(__AVX__)
#define OPS_LANES 8
#else
#define OPS_LANES 4
#endif
enum { OPS_BLOCK = 256 };
typedef float ops_vec __attribute__((vector_size(OPS_LANES * sizeof(float))));

static inline ops_vec ops_load(const float *p) {   // unaligned load
    ops_vec v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline ops_vec ops_load_part(const float *p, long n, float pad) {   // n < lanes
    float t[OPS_LANES];
    for (int j = 0; j < OPS_LANES; j++) t[j] = j < n ? p[j] : pad;
    return ops_load(t);
}
static inline double ops_hsum(ops_vec v) {
    double s = 0;
    for (int j = 0; j < OPS_LANES; j++) s += v[j];
    return s;
}

// sum x[i]
static double ops_sum(const float *x, long n) {
    double t = 0;
    for (long i = 0; i < n; i += OPS_BLOCK) {
        long end = ops_lmin(i + OPS_BLOCK, n), k = i;
        ops_vec f = {0};
        for (; k + OPS_LANES <= end; k += OPS_LANES) f += ops_load(x + k);
        if (k < end) f += ops_load_part(x + k, end - k, 0.0f);
        t += ops_hsum(f);
    }
    return t;
}

// sum (x[i] - m)^2, the deviations taken from m rounded to float (mf) and corrected:
// sum (x - m)^2 = sum (x - mf)^2 - n (m - mf)^2
static double ops_sum_sqdev(const float *x, long n, double m) {
    float mf = (float)m;
    double t = 0;
    for (long i = 0; i < n; i += OPS_BLOCK) {
        long end = ops_lmin(i + OPS_BLOCK, n), k = i;
        ops_vec f = {0};
        for (; k + OPS_LANES <= end; k += OPS_LANES) {
            ops_vec v = ops_load(x + k) - mf;
            f += v * v;
        }
        if (k < end) {   // padding with mf adds 0
            ops_vec v = ops_load_part(x + k, end - k, mf) - mf;
            f += v * v;
        }
        t += ops_hsum(f);
    }
    return t - (double)n * (m - mf) * (m - mf);
}

// *s1 += sum d[i], *s2 += sum d[i] * (x[i] - m)  (m rounded to float, corrected:
// sum d (x - m) = sum d (x - mf) + (mf - m) sum d)
static void ops_sum_dot_dev(const float *d, const float *x, long n, double m, double *s1,
                            double *s2) {
    float mf = (float)m;
    double t1 = 0, t2 = 0;
    for (long i = 0; i < n; i += OPS_BLOCK) {
        long end = ops_lmin(i + OPS_BLOCK, n), k = i;
        ops_vec f1 = {0}, f2 = {0};
        for (; k + OPS_LANES <= end; k += OPS_LANES) {
            ops_vec dv = ops_load(d + k), xv = ops_load(x + k);
            f1 += dv;
            f2 += dv * (xv - mf);
        }
        if (k < end) {
            ops_vec dv = ops_load_part(d + k, end - k, 0.0f);
            ops_vec xv = ops_load_part(x + k, end - k, mf);
            f1 += dv;
            f2 += dv * (xv - mf);
        }
        t1 += ops_hsum(f1);
        t2 += ops_hsum(f2);
    }
    *s1 += t1;
    *s2 += t2 + ((double)mf - m) * t1;
}

// ----------------------------------------------------------------------------
// convolution (no bias), as im2col + GEMM
//
// The columns of an input image are the R*S shifted copies of each channel: a matrix
// col (C*R*S, P*Q) whose column (p,q) holds the receptive field of output pixel (p,q)
// (zeros where it reaches into the padding). Then the convolution is one product
//     out_b (K, PQ) = W (K, CRS) @ col_b (CRS, PQ)
// and its backward is two more:
//     dW (K, CRS)   += dout_b (K, PQ) @ col_b^T
//     dcol (CRS, PQ) = W^T @ dout_b,   then col2im adds dcol back into dx_b.
//
// Memory traffic, not arithmetic, decides how fast this is: sgemm runs near the
// machine's peak, and col is R*S times larger than the input. So the batch is cut
// into PIECES whose col fits comfortably in the last-level cache (CONV_COL_MAX
// floats): im2col writes a piece into cache and the GEMM reads it back from there.
//   - Large images (P*Q >= CONV_N_TARGET): one image per piece, and the GEMM writes
//     straight into out (no permute). A very large image is further cut into bands
//     of output rows (the GEMM writes a column range of out_b).
//   - Small images (deep layers, 14x14 and 7x7 at 224 px): G images per piece, their
//     columns side by side, col (CRS, G*PQ), so the GEMM sees N = G*PQ columns
//     instead of a narrow 49 or 196 and packs W once for all of them. The product
//     lands in tmp (K, G*PQ) and is permuted into out (G, K, PQ); backward gathers
//     dout into the same (K, G*PQ) layout first.
//   - 1x1 stride-1 unpadded convolutions (most of ResNet's): the image itself is the
//     column matrix (CRS = C, PQ = HW), so large images need no copy at all and
//     backward computes dx_b += W^T @ dout_b straight into dx; small ones only gather.
//   - 1x1 strided convolutions (downsampling shortcuts) take the im2col path, which
//     for R = S = 1 is just a strided gather of the kept pixels.
// Backward recomputes im2col (the scratch buffer carries nothing from the forward),
// and skips it when dw is NULL.
//
// scratch layout (floats): [ col: CRS x piece_cols | tmp: K x G*PQ (only when G > 1) ]

enum {
    CONV_N_TARGET = 1024,       // GEMM width (columns) worth batching images for
    CONV_COL_MAX = 1 << 21,     // floats of col per piece (8 MiB: well inside L3)
};

typedef struct ConvPlan {
    int P, Q;
    long PQ, CRS;
    int direct;        // 1x1, stride 1, no padding: the input is its own col
    int G;             // images per piece
    int rows;          // output rows per piece (P unless a large image is banded)
    long col_floats;   // scratch: col
    long tmp_floats;   // scratch: tmp (G > 1)
} ConvPlan;

static ConvPlan conv_plan(int B, int C, int H, int W, int K, int R, int S, int stride,
                          int pad) {
    ConvPlan pl;
    if (B < 0 || C < 0 || K < 0 || H <= 0 || W <= 0 || R <= 0 || S <= 0 || stride <= 0 ||
        pad < 0 || H + 2 * pad < R || W + 2 * pad < S)
        fatal("conv2d: bad geometry: input %dx%d, kernel %dx%d, stride %d, pad %d", H, W,
              R, S, stride, pad);
    pl.P = (H + 2 * pad - R) / stride + 1;
    pl.Q = (W + 2 * pad - S) / stride + 1;
    pl.PQ = (long)pl.P * pl.Q;
    pl.CRS = (long)C * R * S;
    pl.direct = R == 1 && S == 1 && stride == 1 && pad == 0;
    long colimg = ops_lmax(1, pl.CRS * pl.PQ);   // col floats of one whole image
    long G = 1;
    if (pl.PQ < CONV_N_TARGET && B > 1) {
        G = ops_lmin(B, ops_ceil_div(CONV_N_TARGET, pl.PQ));
        G = ops_lmax(1, ops_lmin(G, CONV_COL_MAX / colimg));
        G = ops_ceil_div(B, ops_ceil_div(B, G));   // equal pieces: 8 = 4+4, not 6+2
    }
    pl.G = (int)G;
    pl.rows = pl.P;
    if (G == 1 && !pl.direct && colimg > CONV_COL_MAX) {
        long rows = ops_lmax(1, CONV_COL_MAX / ops_lmax(1, pl.CRS * pl.Q));
        pl.rows = (int)ops_ceil_div(pl.P, ops_ceil_div(pl.P, rows));
    }
    if (G > 1) {
        pl.col_floats = pl.CRS * G * pl.PQ;
        pl.tmp_floats = (long)K * G * pl.PQ;
    } else {
        pl.col_floats = pl.direct ? 0 : pl.CRS * pl.rows * pl.Q;
        pl.tmp_floats = 0;
    }
    return pl;
}

size_t conv2d_scratch_floats(int B, int C, int H, int W, int K, int R, int S, int stride,
                             int pad) {
    ConvPlan pl = conv_plan(B, C, H, W, K, R, S, stride, pad);
    return (size_t)(pl.col_floats + pl.tmp_floats);
}

// The valid output columns [*q_lo, *q_hi) of kernel (or pooling window) column s:
// those whose input column iw = q*stride - pad + s lies inside [0, W).
static void conv_qrange(int s, int W, int Q, int stride, int pad, int *q_lo, int *q_hi) {
    int iw0 = s - pad;
    int lo = iw0 >= 0 ? 0 : (-iw0 + stride - 1) / stride;
    int hi = W - 1 - iw0 < 0 ? 0 : (W - 1 - iw0) / stride + 1;
    if (hi > Q) hi = Q;
    if (lo > hi) lo = hi;
    *q_lo = lo;
    *q_hi = hi;
}

// col (CRS, G*nr*Q) = the columns of output rows [p0, p0+nr) of images b0..b0+G-1 of
// x (B,C,H,W). Column g*nr*Q + (p-p0)*Q + q of row (c,r,s) = x[b0+g][c][ih][iw].
static void im2col(float *col, const float *x, int b0, int G, int p0, int nr, int C,
                   int H, int W, int R, int S, int stride, int pad, int Q) {
    long HW = (long)H * W, piece = (long)nr * Q, ncols = G * piece, nrows = (long)C * R * S;
    int fast = R == 1 && S == 1 && stride == 1 && pad == 0;   // rows are whole planes
#pragma omp parallel for collapse(2) schedule(static) if (nrows * ncols >= OPS_PAR_MIN)
    for (long row = 0; row < nrows; row++) {
        for (int g = 0; g < G; g++) {
            int c = (int)(row / (R * S)), r = (int)(row / S % R), s = (int)(row % S);
            const float *xp = x + ((long)(b0 + g) * C + c) * HW;
            float *dst = col + row * ncols + g * piece;
            if (fast) {
                memcpy(dst, xp + (long)p0 * W, (size_t)piece * sizeof(float));
                continue;
            }
            int q_lo, q_hi, iw0 = s - pad;
            conv_qrange(s, W, Q, stride, pad, &q_lo, &q_hi);
            for (int p = p0; p < p0 + nr; p++, dst += Q) {
                int ih = p * stride - pad + r;
                if (ih < 0 || ih >= H) {
                    memset(dst, 0, (size_t)Q * sizeof(float));
                    continue;
                }
                const float *src = xp + (long)ih * W + iw0;
                for (int q = 0; q < q_lo; q++) dst[q] = 0.0f;
                if (stride == 1) {
                    memcpy(dst + q_lo, src + q_lo, (size_t)(q_hi - q_lo) * sizeof(float));
                } else {
                    for (int q = q_lo; q < q_hi; q++) dst[q] = src[(long)q * stride];
                }
                for (int q = q_hi; q < Q; q++) dst[q] = 0.0f;
            }
        }
    }
}

// dx (B,C,H,W) += the inverse of im2col: every entry of col (laid out as above) is
// added back into the input pixel it was copied from. Each thread owns whole (b,c)
// planes, so the adds into one pixel always happen in the same order.
static void col2im_add(float *dx, const float *col, int b0, int G, int p0, int nr, int C,
                       int H, int W, int R, int S, int stride, int pad, int Q) {
    long HW = (long)H * W, piece = (long)nr * Q, ncols = G * piece;
    int fast = R == 1 && S == 1 && stride == 1 && pad == 0;
#pragma omp parallel for collapse(2) schedule(static) if ((long)C * R * S * ncols >= OPS_PAR_MIN)
    for (int g = 0; g < G; g++) {
        for (int c = 0; c < C; c++) {
            float *xp = dx + ((long)(b0 + g) * C + c) * HW;
            for (int r = 0; r < R; r++) {
                for (int s = 0; s < S; s++) {
                    const float *src = col + (((long)c * R + r) * S + s) * ncols + g * piece;
                    if (fast) {
                        float *d = xp + (long)p0 * W;
                        for (long i = 0; i < piece; i++) d[i] += src[i];
                        continue;
                    }
                    int q_lo, q_hi, iw0 = s - pad;
                    conv_qrange(s, W, Q, stride, pad, &q_lo, &q_hi);
                    for (int p = p0; p < p0 + nr; p++, src += Q) {
                        int ih = p * stride - pad + r;
                        if (ih < 0 || ih >= H) continue;
                        float *d = xp + (long)ih * W + iw0;
                        if (stride == 1) {
                            for (int q = q_lo; q < q_hi; q++) d[q] += src[q];
                        } else {
                            for (int q = q_lo; q < q_hi; q++) d[(long)q * stride] += src[q];
                        }
                    }
                }
            }
        }
    }
}

// (B,K,PQ) <-> (K, G*PQ) for images b0..b0+G-1: dst = src re-laid. to_tmp = 0:
// dst is out (B,K,PQ), src is tmp; to_tmp = 1: dst is tmp, src is dout (B,K,PQ).
static void conv_permute(float *dst, const float *src, int b0, int G, int K, long PQ,
                         int to_tmp) {
#pragma omp parallel for collapse(2) schedule(static) if ((long)G * K * PQ >= OPS_PAR_MIN)
    for (int g = 0; g < G; g++) {
        for (int k = 0; k < K; k++) {
            long img = ((long)(b0 + g) * K + k) * PQ, packed = ((long)k * G + g) * PQ;
            if (to_tmp) memcpy(dst + packed, src + img, (size_t)PQ * sizeof(float));
            else memcpy(dst + img, src + packed, (size_t)PQ * sizeof(float));
        }
    }
}

// out (B,K,P,Q) = conv(x (B,C,H,W), w (K,C,R,S)); scratch: conv2d_scratch_floats()
void conv2d_forward(float *out, const float *x, const float *w, int B, int C, int H,
                    int W, int K, int R, int S, int stride, int pad, float *scratch) {
    ConvPlan pl = conv_plan(B, C, H, W, K, R, S, stride, pad);
    if (B == 0 || K == 0) return;
    int CRS = (int)pl.CRS, Q = pl.Q;
    float *col = scratch, *tmp = scratch + pl.col_floats;
    if (C == 0) {   // an empty sum
        memset(out, 0, (size_t)B * K * pl.PQ * sizeof(float));
        return;
    }
    for (int b0 = 0; b0 < B; b0 += pl.G) {
        int G = (int)ops_lmin(pl.G, B - b0);
        if (pl.G > 1) {   // several small images side by side
            int n = (int)(G * pl.PQ);
            im2col(col, x, b0, G, 0, pl.P, C, H, W, R, S, stride, pad, Q);
            sgemm(0, 0, K, n, CRS, 1.0f, w, CRS, col, n, 0.0f, tmp, n);
            conv_permute(out, tmp, b0, G, K, pl.PQ, 0);
            continue;
        }
        float *ob = out + (long)b0 * K * pl.PQ;
        if (pl.direct) {  // 1x1 stride 1: the image is its own col
            int n = (int)pl.PQ;
            sgemm(0, 0, K, n, CRS, 1.0f, w, CRS, x + (long)b0 * C * pl.PQ, n, 0.0f, ob, n);
            continue;
        }
        for (int p0 = 0; p0 < pl.P; p0 += pl.rows) {   // bands of output rows
            int nr = (int)ops_lmin(pl.rows, pl.P - p0), n = nr * Q;
            im2col(col, x, b0, 1, p0, nr, C, H, W, R, S, stride, pad, Q);
            sgemm(0, 0, K, n, CRS, 1.0f, w, CRS, col, n, 0.0f, ob + (long)p0 * Q,
                  (int)pl.PQ);
        }
    }
}

// dx (B,C,H,W) += conv input grad, dw (K,C,R,S) += weight grad, from dout (B,K,P,Q)
void conv2d_backward(float *dx, float *dw, const float *dout, const float *x,
                     const float *w, int B, int C, int H, int W, int K, int R, int S,
                     int stride, int pad, float *scratch) {
    ConvPlan pl = conv_plan(B, C, H, W, K, R, S, stride, pad);
    if ((!dx && !dw) || B == 0 || K == 0 || C == 0) return;
    int CRS = (int)pl.CRS, Q = pl.Q, ldo = (int)pl.PQ;
    float *col = scratch, *tmp = scratch + pl.col_floats;
    for (int b0 = 0; b0 < B; b0 += pl.G) {
        int G = (int)ops_lmin(pl.G, B - b0);
        if (pl.G > 1) {
            int n = (int)(G * pl.PQ);
            conv_permute(tmp, dout, b0, G, K, pl.PQ, 1);
            if (dw) {
                im2col(col, x, b0, G, 0, pl.P, C, H, W, R, S, stride, pad, Q);
                sgemm(0, 1, K, CRS, n, 1.0f, tmp, n, col, n, 1.0f, dw, CRS);
            }
            if (dx) {
                sgemm(1, 0, CRS, n, K, 1.0f, w, CRS, tmp, n, 0.0f, col, n);
                col2im_add(dx, col, b0, G, 0, pl.P, C, H, W, R, S, stride, pad, Q);
            }
            continue;
        }
        const float *db = dout + (long)b0 * K * pl.PQ;
        if (pl.direct) {
            long off = (long)b0 * C * pl.PQ;
            if (dw) sgemm(0, 1, K, CRS, ldo, 1.0f, db, ldo, x + off, ldo, 1.0f, dw, CRS);
            if (dx) sgemm(1, 0, CRS, ldo, K, 1.0f, w, CRS, db, ldo, 1.0f, dx + off, ldo);
            continue;
        }
        for (int p0 = 0; p0 < pl.P; p0 += pl.rows) {
            int nr = (int)ops_lmin(pl.rows, pl.P - p0), n = nr * Q;
            const float *dp = db + (long)p0 * Q;
            if (dw) {
                im2col(col, x, b0, 1, p0, nr, C, H, W, R, S, stride, pad, Q);
                sgemm(0, 1, K, CRS, n, 1.0f, dp, ldo, col, n, 1.0f, dw, CRS);
            }
            if (dx) {
                sgemm(1, 0, CRS, n, K, 1.0f, w, CRS, dp, ldo, 0.0f, col, n);
                col2im_add(dx, col, b0, 1, p0, nr, C, H, W, R, S, stride, pad, Q);
            }
        }
    }
}

// ----------------------------------------------------------------------------
// batch normalisation (BatchNorm2d), per channel over the B*HW values of x (B,C,HW)
//
// training: mean and biased variance of the batch (two passes in double: the mean,
// then the squared deviations from it, so no cancellation), rstd = 1/sqrt(var + eps),
// out = x * a + b with a = gamma * rstd, b = beta - mean * a (PyTorch's CPU form).
// The running stats move by momentum toward the mean and the UNBIASED variance
// var * n / (n - 1), n = B*HW, exactly as PyTorch. eval: the running stats take the
// place of the batch's (and are saved as mean/rstd, so backward uses them).
// Parallel over channels: one channel's values are read three times while they are
// still in the core's cache.

// out (B,C,HW), mean (C), rstd (C) = bn(x (B,C,HW); gamma, beta (C)); running_* (C) or NULL
void batchnorm_forward(float *out, float *mean, float *rstd, const float *x,
                       const float *gamma, const float *beta, float *running_mean,
                       float *running_var, int B, int C, int HW, int training,
                       float momentum, float eps) {
    long n = (long)B * HW, CHW = (long)C * HW;
    if (training && n <= 1)
        fatal("batchnorm: training needs more than one value per channel (B=%d, HW=%d)", B,
              HW);
    if (!training && (!running_mean || !running_var))
        fatal("batchnorm: eval mode needs the running statistics");
#pragma omp parallel for schedule(static) if (n * C >= OPS_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double m, var;
        if (training) {
            double s = 0;
            for (int b = 0; b < B; b++) s += ops_sum(x + b * CHW + (long)c * HW, HW);
            m = s / (double)n;
            double ss = 0;
            for (int b = 0; b < B; b++) ss += ops_sum_sqdev(x + b * CHW + (long)c * HW, HW, m);
            var = ss / (double)n;
            if (running_mean)
                running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + momentum * m);
            if (running_var)
                running_var[c] = (float)((1.0 - momentum) * running_var[c] +
                                         momentum * var * (double)n / (double)(n - 1));
        } else {
            m = running_mean[c];
            var = running_var[c];
        }
        double rs = 1.0 / sqrt(var + (double)eps);
        mean[c] = (float)m;
        rstd[c] = (float)rs;
        float a = (float)(gamma[c] * rs), sh = (float)(beta[c] - m * gamma[c] * rs);
        for (int b = 0; b < B; b++) {
            const float *xp = x + b * CHW + (long)c * HW;
            float *op = out + b * CHW + (long)c * HW;
            for (int i = 0; i < HW; i++) op[i] = xp[i] * a + sh;
        }
    }
}

// dx (B,C,HW) += , dgamma (C) += , dbeta (C) += grads of bn, from dout (B,C,HW)
//   eval:     dx = dout * gamma * rstd
//   training: dx = gamma * rstd * (dout - mean(dout) - xhat * mean(dout * xhat)),
//             xhat = (x - mean) * rstd (the batch statistics depend on x too)
void batchnorm_backward(float *dx, float *dgamma, float *dbeta, const float *dout,
                        const float *x, const float *mean, const float *rstd,
                        const float *gamma, int B, int C, int HW, int training) {
    if (!dx && !dgamma && !dbeta) return;
    long n = (long)B * HW, CHW = (long)C * HW;
#pragma omp parallel for schedule(static) if (n * C >= OPS_PAR_MIN)
    for (int c = 0; c < C; c++) {
        double m = mean[c], rs = rstd[c];
        double s1 = 0, s2 = 0;   // sum dout, sum dout * (x - mean)
        if (dgamma || dbeta || training)
            for (int b = 0; b < B; b++) {
                long off = b * CHW + (long)c * HW;
                ops_sum_dot_dev(dout + off, x + off, HW, m, &s1, &s2);
            }
        if (dgamma) dgamma[c] += (float)(s2 * rs);
        if (dbeta) dbeta[c] += (float)s1;
        if (!dx) continue;
        double a = (double)gamma[c] * rs;
        float fa = (float)a;
        if (!training) {
            for (int b = 0; b < B; b++) {
                long off = b * CHW + (long)c * HW;
                for (int i = 0; i < HW; i++) dx[off + i] += dout[off + i] * fa;
            }
            continue;
        }
        // dx = a*dout + k*(x - mean) + c0, k = -a*rstd^2*s2/n, c0 = -a*s1/n
        float fk = (float)(-a * rs * rs * s2 / (double)n), fm = (float)m;
        float c0 = (float)(-a * s1 / (double)n);
        for (int b = 0; b < B; b++) {
            long off = b * CHW + (long)c * HW;
            const float *dp = dout + off, *xp = x + off;
            float *gp = dx + off;
            for (int i = 0; i < HW; i++) gp[i] += fa * dp[i] + fk * (xp[i] - fm) + c0;
        }
    }
}

// ----------------------------------------------------------------------------
// relu

// out (n) = max(x, 0); NaN stays NaN (as in PyTorch), so a diverging run shows it
void relu_forward(float *out, const float *x, long n) {
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (long i = 0; i < n; i++) out[i] = x[i] < 0.0f ? 0.0f : x[i];
}

// dx (n) += dout where the forward output was positive
void relu_backward(float *dx, const float *dout, const float *out, long n) {
    if (!dx) return;
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (long i = 0; i < n; i++) dx[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

// ----------------------------------------------------------------------------
// max pooling: window k, stride s, padding p, as PyTorch's MaxPool2d
//
// Padding never wins: the window is clipped to the image. Ties go to the first
// maximum in row-major window order; a NaN wins (and stays), as in PyTorch. The
// winner's index into its H*W plane is saved for backward.

// One output row of one plane: out/am (Q) from input rows [h0, h1) of xp (H,W). The
// window offsets (ih, j) are visited in row-major order, outermost, each as a sweep
// over the output columns it reaches; with the strict > (or NaN) test the first
// maximum in row-major window order wins, and the sweep vectorises. `st` is the
// stride, a compile-time constant where the caller's specialisation allows.
static inline void maxpool_row(float *restrict out, int *restrict am, const float *xp,
                               int W, int Q, int k, int st, int p, int h0, int h1) {
    for (int ow = 0; ow < Q; ow++) {   // PyTorch's start: the window's first valid pixel
        int w0 = ow * st - p;
        out[ow] = -INFINITY;
        am[ow] = h0 * W + (w0 > 0 ? w0 : 0);
    }
    for (int ih = h0; ih < h1; ih++) {
        const float *row = xp + (long)ih * W;
        for (int j = 0; j < k; j++) {
            int lo, hi;   // the output columns whose input column ow*st - p + j is inside
            conv_qrange(j, W, Q, st, p, &lo, &hi);
            for (int ow = lo; ow < hi; ow++) {
                int iw = ow * st - p + j;
                float v = row[iw], b = out[ow];
                int take = (v > b) | (v != v);
                out[ow] = take ? v : b;
                am[ow] = take ? ih * W + iw : am[ow];
            }
        }
    }
}

// out (B,C,P,Q), argmax (B,C,P,Q) = maxpool(x (B,C,H,W))
void maxpool_forward(float *out, int *argmax, const float *x, int B, int C, int H, int W,
                     int k, int s, int p) {
    // p <= k/2 (as PyTorch requires) keeps every window at least partly inside the image
    if (k <= 0 || s <= 0 || p < 0 || 2 * p > k || H + 2 * p < k || W + 2 * p < k)
        fatal("maxpool: bad geometry: input %dx%d, window %d, stride %d, pad %d", H, W, k,
              s, p);
    int P = (H + 2 * p - k) / s + 1, Q = (W + 2 * p - k) / s + 1;
    long planes = (long)B * C, HW = (long)H * W, PQ = (long)P * Q;
#pragma omp parallel for schedule(static) if (planes * HW >= OPS_PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        for (int oh = 0; oh < P; oh++) {
            int h0 = oh * s - p, h1 = h0 + k;
            if (h0 < 0) h0 = 0;
            if (h1 > H) h1 = H;
            float *o = out + pl * PQ + (long)oh * Q;
            int *a = argmax + pl * PQ + (long)oh * Q;
            if (s == 2)   // ResNet's stem pool: let the compiler see the stride
                maxpool_row(o, a, x + pl * HW, W, Q, k, 2, p, h0, h1);
            else
                maxpool_row(o, a, x + pl * HW, W, Q, k, s, p, h0, h1);
        }
    }
}

// dx (B,C,H,W) += dout (B,C,P,Q) routed to each window's winner (argmax)
void maxpool_backward(float *dx, const float *dout, const int *argmax, int B, int C,
                      int H, int W, int k, int s, int p) {
    if (!dx) return;
    int P = (H + 2 * p - k) / s + 1, Q = (W + 2 * p - k) / s + 1;
    long planes = (long)B * C, HW = (long)H * W, PQ = (long)P * Q;
#pragma omp parallel for schedule(static) if (planes * (HW + PQ) >= OPS_PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float *dp = dx + pl * HW;
        const float *gp = dout + pl * PQ;
        const int *ap = argmax + pl * PQ;
        for (long i = 0; i < PQ; i++) dp[ap[i]] += gp[i];
    }
}

// ----------------------------------------------------------------------------
// residual add

// out (n) = a (n) + b (n)
void add_forward(float *out, const float *a, const float *b, long n) {
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
    for (long i = 0; i < n; i++) out[i] = a[i] + b[i];
}

// da (n) += dout, db (n) += dout (da and db may be the same array: x + x)
void add_backward(float *da, float *db, const float *dout, long n) {
    if (da) {
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
        for (long i = 0; i < n; i++) da[i] += dout[i];
    }
    if (db) {
#pragma omp parallel for simd schedule(static) if (n >= OPS_PAR_MIN)
        for (long i = 0; i < n; i++) db[i] += dout[i];
    }
}

// ----------------------------------------------------------------------------
// global average pooling

// out (B,C) = mean of x (B,C,HW) over HW
void avgpool_forward(float *out, const float *x, int B, int C, int HW) {
    long planes = (long)B * C;
#pragma omp parallel for schedule(static) if (planes * HW >= OPS_PAR_MIN)
    for (long pl = 0; pl < planes; pl++)
        out[pl] = HW > 0 ? (float)(ops_sum(x + pl * HW, HW) / HW) : 0.0f;
}

// dx (B,C,HW) += dout (B,C) / HW
void avgpool_backward(float *dx, const float *dout, int B, int C, int HW) {
    if (!dx || HW <= 0) return;
    long planes = (long)B * C;
#pragma omp parallel for schedule(static) if (planes * HW >= OPS_PAR_MIN)
    for (long pl = 0; pl < planes; pl++) {
        float g = dout[pl] / (float)HW;
        float *dp = dx + pl * HW;
        for (int i = 0; i < HW; i++) dp[i] += g;
    }
}

// ----------------------------------------------------------------------------
// batched transpose
//
// Done in TRANSPOSE_TILE x TRANSPOSE_TILE tiles: a tile's source rows and destination
// rows are both short runs that stay in L1, so neither side strides through memory.

enum { TRANSPOSE_TILE = 32 };

// dst (B,N,M) = (or +=, when acc) src (B,M,N) transposed in each batch entry
static void transpose_tiled(float *dst, const float *src, int B, int M, int N, int acc) {
    long tm = ops_ceil_div(M, TRANSPOSE_TILE), tn = ops_ceil_div(N, TRANSPOSE_TILE);
    long MN = (long)M * N;
#pragma omp parallel for collapse(2) schedule(static) if ((long)B * MN >= OPS_PAR_MIN)
    for (int b = 0; b < B; b++) {
        for (long t = 0; t < tm * tn; t++) {
            int i0 = (int)(t / tn) * TRANSPOSE_TILE, j0 = (int)(t % tn) * TRANSPOSE_TILE;
            int i1 = (int)ops_lmin(i0 + TRANSPOSE_TILE, M), j1 = (int)ops_lmin(j0 + TRANSPOSE_TILE, N);
            const float *s = src + b * MN;
            float *d = dst + b * MN;
            for (int j = j0; j < j1; j++) {
                float *drow = d + (long)j * M;
                if (acc) {
                    for (int i = i0; i < i1; i++) drow[i] += s[(long)i * N + j];
                } else {
                    for (int i = i0; i < i1; i++) drow[i] = s[(long)i * N + j];
                }
            }
        }
    }
}

// out (B,N,M) = x (B,M,N) transposed
void transpose_forward(float *out, const float *x, int B, int M, int N) {
    transpose_tiled(out, x, B, M, N, 0);
}

// dx (B,M,N) += dout (B,N,M) transposed
void transpose_backward(float *dx, const float *dout, int B, int M, int N) {
    if (!dx) return;
    transpose_tiled(dx, dout, B, N, M, 1);
}

// ---- transformer operations
//
// The kernels of the textual head (section 3 of model.h), CPU reference: linear,
// embedding, layernorm, multi-head attention, gelu, dropout, row mask and softmax
// cross-entropy, each as a forward / backward pair. Shapes: N rows, D width,
// B batch, Tq/Tk query/key lengths, NH heads, HS head size (D = NH*HS), V vocabulary.
// Backward kernels ACCUMULATE into their gradients (+=) and skip NULL ones.
// The heavy products (linear layers, per-head attention products) go through sgemm;
// everything else is a row loop parallelised with OpenMP when it is big enough.
// Column block width for the column-sum style reductions (bias, layernorm weights,
// embedding rows): each thread owns whole blocks of columns, so no two threads ever
// add into the same gradient entry and the result does not depend on the threads.
enum { TR_COLBLK = 256 };

// The dropout rule shared by dropout_* and the attention probabilities: element
// `index` survives when hash_uniform(seed, index) >= p.
static inline int tr_keep(uint64_t seed, uint64_t index, float p) {
    return hash_uniform(seed, index) >= p;
}

// ----------------------------------------------------------------------------
// linear

// out (N,OUT) = x (N,IN) @ w^T (OUT,IN) + b (OUT, or NULL)
void linear_forward(float *out, const float *x, const float *w, const float *b, int N,
                    int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (b) {   // start from the bias, let the product accumulate onto it
#pragma omp parallel for if ((long)N * OUT >= OPS_PAR_MIN)
        for (int n = 0; n < N; n++) memcpy(out + (long)n * OUT, b, (size_t)OUT * sizeof(float));
    }
    sgemm(0, 1, N, OUT, IN, 1.0f, x, IN, w, IN, b ? 1.0f : 0.0f, out, OUT);
}

// dx (N,IN) += dout @ w; dw (OUT,IN) += dout^T @ x; db (OUT) += column sums of dout
void linear_backward(float *dx, float *dw, float *db, const float *dout, const float *x,
                     const float *w, int N, int IN, int OUT) {
    if (N <= 0 || OUT <= 0) return;
    if (dx && IN > 0) sgemm(0, 0, N, IN, OUT, 1.0f, dout, OUT, w, IN, 1.0f, dx, IN);
    if (dw && IN > 0) sgemm(1, 0, OUT, IN, N, 1.0f, dout, OUT, x, IN, 1.0f, dw, IN);
    if (db) {
        int nblk = (OUT + TR_COLBLK - 1) / TR_COLBLK;
#pragma omp parallel for schedule(static) if ((long)N * OUT >= OPS_PAR_MIN)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * TR_COLBLK, nc = OUT - c0 < TR_COLBLK ? OUT - c0 : TR_COLBLK;
            float acc[TR_COLBLK] = {0};
            for (int n = 0; n < N; n++) {
                const float *d = dout + (long)n * OUT + c0;
                for (int c = 0; c < nc; c++) acc[c] += d[c];
            }
            for (int c = 0; c < nc; c++) db[c0 + c] += acc[c];
        }
    }
}

// ----------------------------------------------------------------------------
// embedding
//
// ids must lie in [0, rows of the table): the kernels do not know the table's size,
// so op_embedding (tape.c) checks every id and stops with a message before calling.

// out (N,D) = table[ids[n]] for ids (N) into table (rows,D)
void embedding_forward(float *out, const int *ids, const float *table, int N, int D) {
#pragma omp parallel for if ((long)N * D >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++)
        memcpy(out + (long)n * D, table + (long)ids[n] * D, (size_t)D * sizeof(float));
}

// dtable (rows,D) [ids[n]] += dout (N,D) [n], except rows with id == padding_idx
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D,
                        int padding_idx) {
    if (!dtable) return;
    // Repeated ids add into the same row, so threads split the columns, not the rows.
    int nblk = (D + TR_COLBLK - 1) / TR_COLBLK;
#pragma omp parallel for schedule(static) if ((long)N * D >= OPS_PAR_MIN)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * TR_COLBLK, nc = D - c0 < TR_COLBLK ? D - c0 : TR_COLBLK;
        for (int n = 0; n < N; n++) {
            if (ids[n] == padding_idx) continue;
            float *t = dtable + (long)ids[n] * D + c0;
            const float *d = dout + (long)n * D + c0;
            for (int c = 0; c < nc; c++) t[c] += d[c];
        }
    }
}

// ----------------------------------------------------------------------------
// layernorm (PyTorch nn.LayerNorm: biased variance, eps inside the square root)

// x (N,D), w (D), b (D) -> out (N,D); saves mean (N), rstd (N) = 1/sqrt(var + eps)
void layernorm_forward(float *out, float *mean, float *rstd, const float *x,
                       const float *w, const float *b, int N, int D, float eps) {
#pragma omp parallel for if ((long)N * D >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *xr = x + (long)n * D;
        float *o = out + (long)n * D;
        float m = 0.0f;
        for (int i = 0; i < D; i++) m += xr[i];
        m /= (float)D;
        float v = 0.0f;   // two passes: no cancellation when |mean| >> std
        for (int i = 0; i < D; i++) {
            float d = xr[i] - m;
            v += d * d;
        }
        v /= (float)D;
        float s = 1.0f / sqrtf(v + eps);
        for (int i = 0; i < D; i++) o[i] = (xr[i] - m) * s * w[i] + b[i];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = s;
    }
}

// dx (N,D) += the input gradient; dw (D) += sum_n dout*xhat; db (D) += sum_n dout.
// With xhat = (x - mean) * rstd and g = dout * w:
//   dx = rstd * (g - mean(g) - xhat * mean(g * xhat))   (means over the row)
void layernorm_backward(float *dx, float *dw, float *db, const float *dout,
                        const float *x, const float *mean, const float *rstd,
                        const float *w, int N, int D) {
    if (dx) {
#pragma omp parallel for if ((long)N * D >= OPS_PAR_MIN)
        for (int n = 0; n < N; n++) {
            const float *xr = x + (long)n * D, *d = dout + (long)n * D;
            float m = mean[n], s = rstd[n];
            float gmean = 0.0f, gxmean = 0.0f;
            for (int i = 0; i < D; i++) {
                float g = d[i] * w[i];
                gmean += g;
                gxmean += g * (xr[i] - m) * s;
            }
            gmean /= (float)D;
            gxmean /= (float)D;
            float *dxr = dx + (long)n * D;
            for (int i = 0; i < D; i++) {
                float xhat = (xr[i] - m) * s;
                dxr[i] += s * (d[i] * w[i] - gmean - xhat * gxmean);
            }
        }
    }
    if (dw || db) {   // sums over rows: threads split the columns
        int nblk = (D + TR_COLBLK - 1) / TR_COLBLK;
#pragma omp parallel for schedule(static) if ((long)N * D >= OPS_PAR_MIN)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * TR_COLBLK, nc = D - c0 < TR_COLBLK ? D - c0 : TR_COLBLK;
            float aw[TR_COLBLK] = {0}, ab[TR_COLBLK] = {0};
            for (int n = 0; n < N; n++) {
                const float *xr = x + (long)n * D + c0, *d = dout + (long)n * D + c0;
                float m = mean[n], s = rstd[n];
                for (int c = 0; c < nc; c++) {
                    aw[c] += d[c] * (xr[c] - m) * s;
                    ab[c] += d[c];
                }
            }
            for (int c = 0; c < nc; c++) {
                if (dw) dw[c0 + c] += aw[c];
                if (db) db[c0 + c] += ab[c];
            }
        }
    }
}

// ----------------------------------------------------------------------------
// attention
//
// For each batch b and head h (columns h*HS .. h*HS+HS-1 of q, k, v and out, so a
// head's rows are read in place with row stride D, nothing is copied):
//   S = Q K^T / sqrt(HS)              (Tq,Tk)   sgemm
//   P = softmax over the visible keys  (Tq,Tk)   saved in probs; hidden keys get 0
//   P' = P * keep / (1-p)                        dropout on the probabilities
//   O = P' V                           (Tq,HS)  sgemm
// Both masks hide a suffix of the keys, so query i sees keys j < lim(i) with
// lim(i) = min(Tk, i+1 if causal, key_len[b] if key_len). lim(i) = 0 gives P = 0 and a
// zero output row (PyTorch would give NaN there). The dropout index of P[b,h,i,j] is
// its flat index ((b*NH + h)*Tq + i)*Tk + j in probs; kept values are multiplied by
// 1/(1-p), computed once in float.
//
// Threads take whole (b,h) pairs: each pair writes its own columns of out, dq, dk and
// dv, so there are no races. The per-head products are small (30 x 49 x 64 at the
// paper's sizes); sgemm sees it is inside a parallel region and runs single-threaded
// (gemm.c checks omp_in_parallel()), so the two levels never oversubscribe.

// Visible keys of query i: see above.
static inline int tr_attn_limit(int i, const int *key_len, int b, int causal, int Tk) {
    int lim = Tk;
    if (causal && i + 1 < lim) lim = i + 1;
    if (key_len && key_len[b] < lim) lim = key_len[b] < 0 ? 0 : key_len[b];
    return lim;
}

// Copy of one (Tq,Tk) block of probabilities with dropout applied. base: flat index
// of the block's first element in probs.
static void tr_attn_drop(float *dst, const float *P, long n, float p, uint64_t seed,
                         uint64_t base) {
    float scale = 1.0f / (1.0f - p);
    for (long e = 0; e < n; e++)
        dst[e] = tr_keep(seed, base + (uint64_t)e, p) ? P[e] * scale : 0.0f;
}

// q (B,Tq,D), k (B,Tk,D), v (B,Tk,D), key_len (B) or NULL -> out (B,Tq,D),
// probs (B,NH,Tq,Tk): the softmax before dropout
void attention_forward(float *out, float *probs, const float *q, const float *k,
                       const float *v, const int *key_len, int causal, int B, int Tq,
                       int Tk, int NH, int HS, float p, uint64_t seed) {
    int D = NH * HS, BH = B * NH;
    long TT = (long)Tq * Tk;
    if (BH <= 0 || Tq <= 0) return;
    if (Tk <= 0) {   // no keys at all: every query sees nothing
        memset(out, 0, (size_t)B * Tq * D * sizeof(float));
        return;
    }
    float scale = 1.0f / sqrtf((float)HS);
    int drop = p > 0.0f;
#pragma omp parallel if ((long)BH * TT * HS >= OPS_PAR_MIN)
    {
        float *pd = drop ? xmalloc((size_t)TT * sizeof(float)) : NULL;
#pragma omp for schedule(static)
        for (int bh = 0; bh < BH; bh++) {
            int b = bh / NH, h = bh % NH;
            const float *qh = q + (long)b * Tq * D + h * HS;
            const float *kh = k + (long)b * Tk * D + h * HS;
            const float *vh = v + (long)b * Tk * D + h * HS;
            float *P = probs + (long)bh * TT;
            sgemm(0, 1, Tq, Tk, HS, scale, qh, D, kh, D, 0.0f, P, Tk);
            for (int i = 0; i < Tq; i++) {
                float *row = P + (long)i * Tk;
                int lim = tr_attn_limit(i, key_len, b, causal, Tk);
                float mx = -INFINITY, sum = 0.0f;
                for (int j = 0; j < lim; j++) mx = row[j] > mx ? row[j] : mx;
                for (int j = 0; j < lim; j++) {
                    row[j] = expf(row[j] - mx);
                    sum += row[j];
                }
                float inv = lim > 0 ? 1.0f / sum : 0.0f;
                for (int j = 0; j < lim; j++) row[j] *= inv;
                for (int j = lim; j < Tk; j++) row[j] = 0.0f;
            }
            const float *Pv = P;
            if (drop) {
                tr_attn_drop(pd, P, TT, p, seed, (uint64_t)bh * TT);
                Pv = pd;
            }
            sgemm(0, 0, Tq, HS, Tk, 1.0f, Pv, Tk, vh, D, 0.0f,
                  out + (long)b * Tq * D + h * HS, D);
        }
        free(pd);
    }
}

// Given dout (B,Tq,D) and the forward's inputs and probs: dq (B,Tq,D), dk and dv
// (B,Tk,D) +=. Per (b,h), with P' the dropped probabilities:
//   dV += P'^T dO;  dP' = dO V^T;  dP = dP' * keep / (1-p);
//   dS = P * (dP - rowsum(P * dP));  dQ += dS K / sqrt(HS);  dK += dS^T Q / sqrt(HS)
// Hidden keys have P = 0, hence dS = 0: the masks need not be passed again.
void attention_backward(float *dq, float *dk, float *dv, const float *dout,
                        const float *q, const float *k, const float *v,
                        const float *probs, int B, int Tq, int Tk, int NH, int HS,
                        float p, uint64_t seed) {
    int D = NH * HS, BH = B * NH;
    long TT = (long)Tq * Tk;
    if (!dq && !dk && !dv) return;
    if (BH <= 0 || TT <= 0) return;
    float scale = 1.0f / sqrtf((float)HS);
    int drop = p > 0.0f;
    float dscale = drop ? 1.0f / (1.0f - p) : 1.0f;
#pragma omp parallel if ((long)BH * TT * HS >= OPS_PAR_MIN)
    {
        float *dP = xmalloc((size_t)TT * sizeof(float));
        float *pd = drop ? xmalloc((size_t)TT * sizeof(float)) : NULL;
#pragma omp for schedule(static)
        for (int bh = 0; bh < BH; bh++) {
            int b = bh / NH, h = bh % NH;
            long qoff = (long)b * Tq * D + h * HS, koff = (long)b * Tk * D + h * HS;
            const float *P = probs + (long)bh * TT;
            const float *Pv = P;
            if (drop) {
                tr_attn_drop(pd, P, TT, p, seed, (uint64_t)bh * TT);
                Pv = pd;
            }
            if (dv) sgemm(1, 0, Tk, HS, Tq, 1.0f, Pv, Tk, dout + qoff, D, 1.0f, dv + koff, D);
            if (!dq && !dk) continue;
            sgemm(0, 1, Tq, Tk, HS, 1.0f, dout + qoff, D, v + koff, D, 0.0f, dP, Tk);
            for (int i = 0; i < Tq; i++) {
                const float *pr = P + (long)i * Tk;
                float *dr = dP + (long)i * Tk;
                if (drop) {
                    uint64_t base = (uint64_t)bh * TT + (uint64_t)i * Tk;
                    for (int j = 0; j < Tk; j++)
                        dr[j] = tr_keep(seed, base + j, p) ? dr[j] * dscale : 0.0f;
                }
                float dot = 0.0f;
                for (int j = 0; j < Tk; j++) dot += pr[j] * dr[j];
                for (int j = 0; j < Tk; j++) dr[j] = pr[j] * (dr[j] - dot);   // dS
            }
            if (dq) sgemm(0, 0, Tq, HS, Tk, scale, dP, Tk, k + koff, D, 1.0f, dq + qoff, D);
            if (dk) sgemm(1, 0, Tk, HS, Tq, scale, dP, Tk, q + qoff, D, 1.0f, dk + koff, D);
        }
        free(dP);
        free(pd);
    }
}

// ----------------------------------------------------------------------------
// gelu, exact: gelu(x) = x * Phi(x), Phi the standard normal CDF

#define TR_SQRT1_2 0.70710678118654752f       // 1/sqrt(2)
#define TR_INV_SQRT_2PI 0.39894228040143268f  // 1/sqrt(2*pi)

// out (n) = 0.5 * x * (1 + erf(x / sqrt(2))), x (n)
void gelu_forward(float *out, const float *x, long n) {
#pragma omp parallel for if (n >= OPS_PAR_MIN / 8)
    for (long i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * TR_SQRT1_2));
}

// dx (n) += dout * (Phi(x) + x * phi(x)), phi the standard normal density
void gelu_backward(float *dx, const float *dout, const float *x, long n) {
    if (!dx) return;
#pragma omp parallel for if (n >= OPS_PAR_MIN / 8)
    for (long i = 0; i < n; i++) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * TR_SQRT1_2));
        float pdf = TR_INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] += dout[i] * (cdf + v * pdf);
    }
}

// ----------------------------------------------------------------------------
// dropout (the same arithmetic as kernels.cu: kept values are x / (1-p))

// out (n) = x / (1-p) where hash_uniform(seed, i) >= p, else 0; p == 0: a copy
void dropout_forward(float *out, const float *x, long n, float p, uint64_t seed) {
    if (p <= 0.0f) {
        if (out != x) memcpy(out, x, (size_t)n * sizeof(float));
        return;
    }
    float keep = 1.0f - p;
#pragma omp parallel for if (n >= OPS_PAR_MIN)
    for (long i = 0; i < n; i++) out[i] = tr_keep(seed, (uint64_t)i, p) ? x[i] / keep : 0.0f;
}

// dx (n) += dout / (1-p) where element i was kept
void dropout_backward(float *dx, const float *dout, long n, float p, uint64_t seed) {
    if (!dx) return;
    if (p <= 0.0f) {
#pragma omp parallel for if (n >= OPS_PAR_MIN)
        for (long i = 0; i < n; i++) dx[i] += dout[i];
        return;
    }
    float keep = 1.0f - p;
#pragma omp parallel for if (n >= OPS_PAR_MIN)
    for (long i = 0; i < n; i++)
        if (tr_keep(seed, (uint64_t)i, p)) dx[i] += dout[i] / keep;
}

// ----------------------------------------------------------------------------
// row mask: padded positions (id 0) become exact zeros

// out (N,D) = x (N,D) where ids (N) != 0, else 0
void rowmask_forward(float *out, const float *x, const int *ids, int N, int D) {
#pragma omp parallel for if ((long)N * D >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *o = out + (long)n * D;
        if (ids[n] != 0) memcpy(o, x + (long)n * D, (size_t)D * sizeof(float));
        else memset(o, 0, (size_t)D * sizeof(float));
    }
}

// dx (N,D) += dout (N,D) on the rows whose id != 0
void rowmask_backward(float *dx, const float *dout, const int *ids, int N, int D) {
    if (!dx) return;
#pragma omp parallel for if ((long)N * D >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        if (ids[n] == 0) continue;
        float *d = dx + (long)n * D;
        const float *g = dout + (long)n * D;
        for (int i = 0; i < D; i++) d[i] += g[i];
    }
}

// ----------------------------------------------------------------------------
// softmax cross-entropy with an ignored target (padding)

// Rows that count (target != ignore_index); a counted target outside [0, V) is a bug
// in the caller's data and stops the program.
static int tr_ce_count(const int *targets, int N, int V, int ignore_index) {
    int count = 0;
    for (int n = 0; n < N; n++) {
        int t = targets[n];
        if (t == ignore_index) continue;
        if (t < 0 || t >= V)
            fatal("cross-entropy: target %d of row %d is outside the vocabulary [0, %d)",
                  t, n, V);
        count++;
    }
    return count;
}

// Row maximum (for a stable softmax).
static inline float tr_ce_rowmax(const float *row, int V) {
    float mx = row[0];
    for (int j = 1; j < V; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

// logits (N,V), targets (N) -> *loss = mean over counted rows of
// logsumexp(row) - row[target]; returns the count. No counted row: *loss = 0.
int cross_entropy_forward(float *loss, const float *logits, const int *targets, int N,
                          int V, int ignore_index) {
    int count = tr_ce_count(targets, N, V, ignore_index);
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) if ((long)N * V >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        if (targets[n] == ignore_index) continue;
        const float *row = logits + (long)n * V;
        float mx = tr_ce_rowmax(row, V), sum = 0.0f;
        for (int j = 0; j < V; j++) sum += expf(row[j] - mx);
        total += (double)mx + log((double)sum) - (double)row[targets[n]];
    }
    *loss = count > 0 ? (float)(total / count) : 0.0f;
    return count;
}

// dlogits (N,V) += dloss * (softmax(row) - onehot(target)) / count on counted rows;
// ignored rows are left untouched.
void cross_entropy_backward(float *dlogits, float dloss, const float *logits,
                            const int *targets, int N, int V, int ignore_index) {
    if (!dlogits) return;
    int count = tr_ce_count(targets, N, V, ignore_index);
    if (count == 0) return;
    float g = dloss / (float)count;
#pragma omp parallel if ((long)N * V >= OPS_PAR_MIN)
    {
        float *e = xmalloc((size_t)V * sizeof(float));   // the row's exponentials
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++) {
            if (targets[n] == ignore_index) continue;
            const float *row = logits + (long)n * V;
            float *d = dlogits + (long)n * V;
            float mx = tr_ce_rowmax(row, V), sum = 0.0f;
            for (int j = 0; j < V; j++) {
                e[j] = expf(row[j] - mx);
                sum += e[j];
            }
            float s = g / sum;
            for (int j = 0; j < V; j++) d[j] += s * e[j];
            d[targets[n]] -= g;
        }
        free(e);
    }
}

// ----------------------------------------------------------------------------
// soft-target cross-entropy (the classification pretraining tasks)

// *loss = -(1/N) sum_n sum_v target[n,v] * log_softmax(logits[n])_v.
// logits, target (N,V); a row of target is a distribution (e.g. 1/k on k labels) or 0.
void soft_cross_entropy_forward(float *loss, const float *logits, const float *target, int N,
                                int V) {
    double total = 0.0;
#pragma omp parallel for reduction(+ : total) if ((long)N * V >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *row = logits + (long)n * V, *t = target + (long)n * V;
        float mx = tr_ce_rowmax(row, V), sum = 0.0f;
        for (int j = 0; j < V; j++) sum += expf(row[j] - mx);
        double lse = (double)mx + log((double)sum);
        for (int j = 0; j < V; j++)
            if (t[j] != 0.0f) total += (double)t[j] * (lse - (double)row[j]);
    }
    *loss = N > 0 ? (float)(total / N) : 0.0f;
}

// dlogits[n] += dloss / N * (softmax(logits[n]) * sum(target[n]) - target[n]).
void soft_cross_entropy_backward(float *dlogits, float dloss, const float *logits,
                                 const float *target, int N, int V) {
    if (!dlogits || N == 0) return;
    float g = dloss / (float)N;
#pragma omp parallel for schedule(static) if ((long)N * V >= OPS_PAR_MIN)
    for (int n = 0; n < N; n++) {
        const float *row = logits + (long)n * V, *t = target + (long)n * V;
        float *d = dlogits + (long)n * V;
        float mx = tr_ce_rowmax(row, V), sum = 0.0f, mass = 0.0f;
        for (int j = 0; j < V; j++) {
            sum += expf(row[j] - mx);
            mass += t[j];
        }
        float s = g * mass / sum;
        for (int j = 0; j < V; j++) d[j] += s * expf(row[j] - mx) - g * t[j];
    }
}
