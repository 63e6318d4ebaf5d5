// ---- transformer operations
//
// The kernels of the textual head (section 3 of model.h), CPU reference: linear,
// embedding, layernorm, multi-head attention, gelu, dropout, row mask and softmax
// cross-entropy, each as a forward / backward pair. Shapes: N rows, D width,
// B batch, Tq/Tk query/key lengths, NH heads, HS head size (D = NH*HS), V vocabulary.
// Backward kernels ACCUMULATE into their gradients (+=) and skip NULL ones.
// The heavy products (linear layers, per-head attention products) go through sgemm;
// everything else is a row loop parallelised with OpenMP when it is big enough.
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// Work (in elements touched) below which a loop runs on one thread: a parallel
// region costs a few microseconds, as much as ~10^4 simple float operations.
static const long tr_par_min = 1L << 15;
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
#pragma omp parallel for if ((long)N * OUT >= tr_par_min)
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
#pragma omp parallel for schedule(static) if ((long)N * OUT >= tr_par_min)
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
#pragma omp parallel for if ((long)N * D >= tr_par_min)
    for (int n = 0; n < N; n++)
        memcpy(out + (long)n * D, table + (long)ids[n] * D, (size_t)D * sizeof(float));
}

// dtable (rows,D) [ids[n]] += dout (N,D) [n], except rows with id == padding_idx
void embedding_backward(float *dtable, const float *dout, const int *ids, int N, int D,
                        int padding_idx) {
    if (!dtable) return;
    // Repeated ids add into the same row, so threads split the columns, not the rows.
    int nblk = (D + TR_COLBLK - 1) / TR_COLBLK;
#pragma omp parallel for schedule(static) if ((long)N * D >= tr_par_min)
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
#pragma omp parallel for if ((long)N * D >= tr_par_min)
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
#pragma omp parallel for if ((long)N * D >= tr_par_min)
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
#pragma omp parallel for schedule(static) if ((long)N * D >= tr_par_min)
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
#pragma omp parallel if ((long)BH * TT * HS >= tr_par_min)
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
#pragma omp parallel if ((long)BH * TT * HS >= tr_par_min)
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
#pragma omp parallel for if (n >= tr_par_min / 8)
    for (long i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * TR_SQRT1_2));
}

// dx (n) += dout * (Phi(x) + x * phi(x)), phi the standard normal density
void gelu_backward(float *dx, const float *dout, const float *x, long n) {
    if (!dx) return;
#pragma omp parallel for if (n >= tr_par_min / 8)
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
#pragma omp parallel for if (n >= tr_par_min)
    for (long i = 0; i < n; i++) out[i] = tr_keep(seed, (uint64_t)i, p) ? x[i] / keep : 0.0f;
}

// dx (n) += dout / (1-p) where element i was kept
void dropout_backward(float *dx, const float *dout, long n, float p, uint64_t seed) {
    if (!dx) return;
    if (p <= 0.0f) {
#pragma omp parallel for if (n >= tr_par_min)
        for (long i = 0; i < n; i++) dx[i] += dout[i];
        return;
    }
    float keep = 1.0f - p;
#pragma omp parallel for if (n >= tr_par_min)
    for (long i = 0; i < n; i++)
        if (tr_keep(seed, (uint64_t)i, p)) dx[i] += dout[i] / keep;
}

// ----------------------------------------------------------------------------
// row mask: padded positions (id 0) become exact zeros

// out (N,D) = x (N,D) where ids (N) != 0, else 0
void rowmask_forward(float *out, const float *x, const int *ids, int N, int D) {
#pragma omp parallel for if ((long)N * D >= tr_par_min)
    for (int n = 0; n < N; n++) {
        float *o = out + (long)n * D;
        if (ids[n] != 0) memcpy(o, x + (long)n * D, (size_t)D * sizeof(float));
        else memset(o, 0, (size_t)D * sizeof(float));
    }
}

// dx (N,D) += dout (N,D) on the rows whose id != 0
void rowmask_backward(float *dx, const float *dout, const int *ids, int N, int D) {
    if (!dx) return;
#pragma omp parallel for if ((long)N * D >= tr_par_min)
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
#pragma omp parallel for reduction(+ : total) if ((long)N * V >= tr_par_min)
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
#pragma omp parallel if ((long)N * V >= tr_par_min)
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
