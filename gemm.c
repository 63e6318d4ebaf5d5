// gemm.c — SGEMM written from scratch: C = alpha * op(A) @ op(B) + beta * C.
//
// Row-major throughout. op(A) is M x K (stored K x M when transA), op(B) is K x N
// (stored N x K when transB). Nearly all of the model's time is spent here: every
// convolution (through im2col) and every linear layer is one call.
//
// How a fast GEMM works (the Goto / BLIS scheme, which this file follows)
// -----------------------------------------------------------------------
// A naive triple loop reads each element of A and B from memory again and again.
// A core can do 2 vector fused multiply-adds per cycle, but it can only feed them
// from registers, so the whole design is about making every load count:
//
//   1. The MICRO-KERNEL computes a small MR x NR tile of C entirely in vector
//      registers. At each step k it loads one row of NR values of B (NR/16 vectors),
//      broadcasts MR single values of A, and does MR * NR/16 vector FMAs. With
//      MR x NR = 14 x 32 that is 28 accumulators + 2 B vectors + 1 broadcast = 31
//      of the 32 zmm registers, and 28 FMAs for every 2 vector loads + 14
//      broadcasts: the FMA pipes, not the loads, set the pace.
//
//   2. The micro-kernel wants its operands contiguous, in exactly the order it reads
//      them. So A and B are first PACKED: a block of A becomes a sequence of
//      "micro-panels" of MR rows (for each k: the MR values of column k), and a panel
//      of B becomes micro-panels of NR columns (for each k: the NR values of row k).
//      Packing is where the transposes are handled: after it, all four transpose
//      combinations run the same micro-kernel. Partial panels are zero-padded, so the
//      kernel never needs a bounds check inside its loop.
//
//   3. CACHE BLOCKING decides how much to pack at once, so that each packed piece
//      stays in the cache level that re-reads it (loops from the outside in):
//
//        for jc over N in steps of NC      B panel  KC x NC -> L3
//          for pc over K in steps of KC    pack that B panel
//            for ic over M in steps of MC  A block  MC x KC -> L2  (pack it)
//              for jr over NC step NR      B micro-panel KC x NR -> L1
//                for ir over MC step MR    A micro-panel MR x KC streams from L2
//                  micro-kernel: C[ir.., jr..] += A micro-panel @ B micro-panel
//
//      The B micro-panel (KC x NR) is reused by every A micro-panel of the block, so
//      it should live in L1; the A block (MC x KC) is reused for every B
//      micro-panel: L2; the B panel is reused for every A block: L3.
//
// Blocking for this machine (AMD EPYC, Zen 5 with 2 x 512-bit FMA pipes; per core
// 48 KiB L1d, 1 MiB L2; 32 MiB L3 shared):
//   KC = 256 : B micro-panel 256 x 32 floats = 32 KiB (2/3 of L1d), leaving room for
//              the A micro-panel stream (14 x 256 x 4 B = 14 KiB) and the C tile.
//   MC = 336 : A block 336 x 256 x 4 B = 336 KiB, a third of L2 (the B micro-panels
//              stream through L2 too, so the A block must not fill it).
//   NC = 4096: B panel 256 x 4096 x 4 B = 4 MiB per thread, well inside L3.
// (Measured: KC 192..384 and MC 168..504 are all within 3% of each other here; the
// choice above is the one the cache sizes argue for.) K, M and N are cut into
// near-equal blocks (K = 300 -> 2 x 150, not 256 + 44), so no block is thin.
//
// Narrow problems (M <= MC, e.g. the convs with 64 or 128 output channels) use each
// B element for only M multiply-adds while B, the im2col matrix, streams from DRAM;
// there B is packed in small panels and the micro-kernel prefetches the next
// panel's source as it runs (section 5), which hides most of the memory latency.
//
// Threads: C is cut into a grid of rectangles, one per OpenMP thread, and when K is
// long compared with M and N (weight gradients) K is cut too, with the partial
// products summed at the end (section 7). Each thread packs into its own buffers.
//
// Pack buffers are per thread (pthread-specific), grown on demand and reused: no
// malloc in steady state. They are freed when their thread exits.
//
// Sections: 1 parameters, 2 pack buffers, 3 packing, 4 micro-kernels (AVX-512,
// AVX2+FMA, scalar), 5 the blocked loops, 6 small problems, 7 the entry point.
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__AVX512F__) || (defined(__AVX2__) && defined(__FMA__))
#include <immintrin.h>
#endif
#include "model.h"

// ----------------------------------------------------------------------------
// 1. parameters

#if defined(__AVX512F__)
#define MR 14          // rows of the C tile (broadcast values of A per step)
#define NR 32          // columns of the C tile (2 zmm vectors of B per step)
#elif defined(__AVX2__) && defined(__FMA__)
#define MR 6           // 6 x 16: 12 ymm accumulators + 2 B vectors + 1 broadcast
#define NR 16
#else
#define MR 4
#define NR 8
#endif
#define KC 256
#define MC (MR * 24)
#define NC 4096
// B panel of the narrow path (section 5), in floats: 64 KiB, L1/L2-resident.
#define NARROW_PANEL (16 * 1024)

// Problems with at most this many multiply-adds take the direct loop (section 6).
#define SMALL_MNK (32 * 1024)
// Below this many multiply-adds per thread, extra threads cost more than they give
// (1 << 20 before: 1 << 18 took the default config's 2-core training from 802 to 827
// images/s; 1 << 16 gave the same).
#define PAR_MIN_MNK (1L << 18)

// A scalar fused multiply-add where the hardware has one, so that the partial-tile
// path rounds exactly like the vector path.
#ifdef __FMA__
#define FMADD(a, b, c) fmaf(a, b, c)
#else
#define FMADD(a, b, c) ((a) * (b) + (c))
#endif

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
static inline int round_up(int a, int b) { return ceil_div(a, b) * b; }

// Cut n into near-equal blocks of at most `cap`, each a multiple of `unit`.
static int block_size(int n, int cap, int unit) {
    int nblocks = ceil_div(n, cap);
    return imin(cap, round_up(ceil_div(n, nblocks), unit));
}

// ----------------------------------------------------------------------------
// 2. per-thread pack buffers

typedef struct PackBuf {
    float *a, *b;           // packed A block, packed B panel
    float *c;               // partial product of a K part (section 7)
    size_t acap, bcap, ccap;   // capacities in floats
} PackBuf;

static pthread_key_t packbuf_key;
static pthread_once_t packbuf_once = PTHREAD_ONCE_INIT;

static void packbuf_free(void *p) {
    PackBuf *pb = p;
    free(pb->a);
    free(pb->b);
    free(pb->c);
    free(pb);
}

static void packbuf_init_key(void) {
    if (pthread_key_create(&packbuf_key, packbuf_free) != 0) fatal("sgemm: pthread_key_create failed");
}

static float *grow(float *p, size_t *cap, size_t need) {
    if (need <= *cap) return p;
    free(p);
    size_t bytes = (need * sizeof(float) + 63) & ~(size_t)63;
    p = aligned_alloc(64, bytes);
    if (!p) fatal("sgemm: out of memory (%zu bytes of pack buffer)", bytes);
    *cap = need;
    return p;
}

static PackBuf *packbuf_get(size_t afloats, size_t bfloats) {
    pthread_once(&packbuf_once, packbuf_init_key);
    PackBuf *pb = pthread_getspecific(packbuf_key);
    if (!pb) {
        pb = xcalloc(1, sizeof *pb);
        pthread_setspecific(packbuf_key, pb);
    }
    pb->a = grow(pb->a, &pb->acap, afloats);
    pb->b = grow(pb->b, &pb->bcap, bfloats);
    return pb;
}

// ----------------------------------------------------------------------------
// 3. packing
//
// pack_a: rows [0, mc) and columns [0, kc) of op(A), starting at A (already offset
// to the block's first element), into micro-panels of MR rows: element (i, k) goes
// to dst[(i / MR) * MR * kc + k * MR + i % MR]. Rows past mc are zero.
// pack_b: rows [0, kc) and columns [0, nc) of op(B) into micro-panels of NR
// columns: element (k, j) goes to dst[(j / NR) * NR * kc + k * NR + j % NR].
//
// Two of the four cases are plain copies (op(A) stored transposed, op(B) not: each
// step k reads MR or NR contiguous floats). The other two are transposes: the
// micro-panel wants, for each k, values that lie in `rows` different stored rows.
// With AVX-512 those are done 16 x 16 at a time in registers (transpose_rows);
// otherwise element by element, reading the stored rows contiguously.

#if defined(__AVX512F__)
// Transpose the 16 x 16 block r[0..15] (row i = r[i]) in registers: afterwards
// r[j] holds column j. Four rounds of shuffles, each pairing lanes further apart.
static inline void transpose16x16(__m512 r[16]) {
    __m512 t[16];
    // 32-bit interleave of row pairs: within each 128-bit lane, t[2i] holds
    // r[2i][0], r[2i+1][0], r[2i][1], r[2i+1][1] and t[2i+1] the elements 2 and 3.
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // 64-bit interleave: r[4g + c], lane L, holds rows 4g..4g+3 of column 4L + c.
    for (int g = 0; g < 4; g++) {
        __m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
        __m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    // Gather the four 128-bit lanes that belong to each column, in two rounds.
    for (int c = 0; c < 4; c++) {
        __m512 v_even = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);      // lanes 0, 2
        __m512 v_odd = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xDD);       // lanes 1, 3
        __m512 w_even = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        __m512 w_odd = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xDD);
        t[c] = _mm512_shuffle_f32x4(v_even, w_even, 0x88);               // column c
        t[8 + c] = _mm512_shuffle_f32x4(v_even, w_even, 0xDD);           // column 8 + c
        t[4 + c] = _mm512_shuffle_f32x4(v_odd, w_odd, 0x88);             // column 4 + c
        t[12 + c] = _mm512_shuffle_f32x4(v_odd, w_odd, 0xDD);            // column 12 + c
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

// dst[k * ldd + i] = src[i * lds + k] for i < rows (<= 16) and k < kc, with zeros
// for rows <= i < 16; of each dst row only the lanes in `keep` are written.
static void transpose_rows(const float *src, long lds, int rows, int kc, float *dst,
                           int ldd, __mmask16 keep) {
    for (int k0 = 0; k0 < kc; k0 += 16) {
        int kn = imin(16, kc - k0);
        __mmask16 load = (__mmask16)((1u << kn) - 1);
        __m512 r[16];
        for (int i = 0; i < 16; i++)
            r[i] = i < rows ? _mm512_maskz_loadu_ps(load, src + i * lds + k0)
                            : _mm512_setzero_ps();
        transpose16x16(r);
        for (int k = 0; k < kn; k++) _mm512_mask_storeu_ps(dst + (k0 + k) * ldd, keep, r[k]);
    }
}
#endif

static void pack_a(int transA, int mc, int kc, const float *A, long lda, float *dst) {
    for (int i0 = 0; i0 < mc; i0 += MR, dst += (long)MR * kc) {
        int rows = imin(MR, mc - i0);
        if (!transA) {
            // op(A)[i][k] = A[i*lda + k]: a transpose of `rows` stored rows.
#if defined(__AVX512F__) && MR <= 16
            transpose_rows(A + (long)i0 * lda, lda, rows, kc, dst, MR,
                           (__mmask16)((1u << MR) - 1));
#else
            for (int r = 0; r < rows; r++) {
                const float *src = A + (long)(i0 + r) * lda;
                for (int k = 0; k < kc; k++) dst[k * MR + r] = src[k];
            }
            for (int r = rows; r < MR; r++)
                for (int k = 0; k < kc; k++) dst[k * MR + r] = 0.0f;
#endif
        } else {
            // op(A)[i][k] = A[k*lda + i]: the MR values of column k are contiguous.
#if defined(__AVX512F__) && MR <= 16
            __mmask16 load = (__mmask16)((1u << rows) - 1), keep = (__mmask16)((1u << MR) - 1);
            for (int k = 0; k < kc; k++)
                _mm512_mask_storeu_ps(dst + k * MR, keep,
                                      _mm512_maskz_loadu_ps(load, A + (long)k * lda + i0));
#else
            for (int k = 0; k < kc; k++) {
                const float *src = A + (long)k * lda + i0;
                float *d = dst + k * MR;
                for (int r = 0; r < rows; r++) d[r] = src[r];
                for (int r = rows; r < MR; r++) d[r] = 0.0f;
            }
#endif
        }
    }
}

static void pack_b(int transB, int kc, int nc, const float *B, long ldb, float *dst) {
    for (int j0 = 0; j0 < nc; j0 += NR, dst += (long)NR * kc) {
        int cols = imin(NR, nc - j0);
        if (!transB) {
            // op(B)[k][j] = B[k*ldb + j]: NR contiguous values per row k.
#if defined(__AVX512F__) && NR % 16 == 0
            __mmask16 load[NR / 16];
            for (int v = 0; v < NR / 16; v++) {
                int n = cols - 16 * v;
                load[v] = n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
            }
            for (int k = 0; k < kc; k++) {
                const float *src = B + (long)k * ldb + j0;
                for (int v = 0; v < NR / 16; v++)
                    _mm512_store_ps(dst + k * NR + 16 * v,
                                    _mm512_maskz_loadu_ps(load[v], src + 16 * v));
            }
#else
            for (int k = 0; k < kc; k++) {
                const float *src = B + (long)k * ldb + j0;
                float *d = dst + k * NR;
                for (int j = 0; j < cols; j++) d[j] = src[j];
                for (int j = cols; j < NR; j++) d[j] = 0.0f;
            }
#endif
        } else {
            // op(B)[k][j] = B[j*ldb + k]: a transpose of `cols` stored rows.
#if defined(__AVX512F__) && NR % 16 == 0
            for (int h = 0; h < NR; h += 16) {
                const float *src = cols > h ? B + (long)(j0 + h) * ldb : B;
                transpose_rows(src, ldb, cols - h, kc, dst + h, NR, 0xFFFF);
            }
#else
            for (int j = 0; j < cols; j++) {
                const float *src = B + (long)(j0 + j) * ldb;
                for (int k = 0; k < kc; k++) dst[k * NR + j] = src[k];
            }
            for (int j = cols; j < NR; j++)
                for (int k = 0; k < kc; k++) dst[k * NR + j] = 0.0f;
#endif
        }
    }
}

// ----------------------------------------------------------------------------
// 4. micro-kernels
//
// micro_kernel(kc, a, b, c, ldc, alpha, beta, mr, nr, pf): with a an A micro-panel
// (kc steps of MR values) and b a B micro-panel (kc steps of NR values), computes
// the MR x NR product and writes its top-left mr x nr corner to c:
//     c = alpha * (a @ b) + beta * c      (beta == 0: c is not read)
// pf asks for prefetches on the side: at step k < pf.n, the cache lines at
// pf.p + k * pf.ld and NR - 1 floats further (one B row of the next panel).
//
// Partial tiles at the right and bottom edges of C: the AVX-512 kernel uses masked
// stores and a variant with fewer rows; the others go through a small buffer.

typedef struct Prefetch { const float *p; long ld; int n; } Prefetch;

#if !defined(__AVX512F__)
// Finish a partial tile: t holds alpha * (a @ b), MR x NR.
static void store_partial(const float *t, float *c, long ldc, float beta, int mr, int nr) {
    for (int r = 0; r < mr; r++) {
        float *cr = c + r * ldc;
        const float *tr = t + r * NR;
        if (beta == 0.0f)
            for (int j = 0; j < nr; j++) cr[j] = tr[j];
        else
            for (int j = 0; j < nr; j++) cr[j] = FMADD(beta, cr[j], tr[j]);
    }
}
#endif

#if defined(__AVX512F__)
// AVX-512: 14 x 32 tile = 14 rows x 2 zmm: 28 accumulators, 2 vectors of B, and
// one broadcast of A at a time. Per k: 2 loads of B, 14 broadcasts, 28 FMAs.
//
// The tile has ROWS rows (a compile-time constant): the bottom edge of C (M = 64 is
// 4 x 14 + 8) runs a variant with fewer rows instead of multiplying zeros. The
// right edge (nr < 32) uses masked loads and stores, so every tile is updated
// straight from the registers.
#define NV (NR / 16)
static inline __attribute__((always_inline)) void
kernel_rows(const int ROWS, int kc, const float *restrict a, const float *restrict b,
            float *restrict c, long ldc, float alpha, float beta, int mr, int nr,
            Prefetch pf) {
    __m512 acc[MR][NV];
#pragma GCC unroll 32
    for (int r = 0; r < ROWS; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    // Bring the C tile toward L1 while the FMAs run.
    for (int r = 0; r < mr; r++) {
        __builtin_prefetch(c + r * ldc);
        __builtin_prefetch(c + r * ldc + NR - 1);
    }

    for (int k = 0; k < kc; k++) {
        if (k < pf.n) {
            __builtin_prefetch(pf.p + k * pf.ld);
            __builtin_prefetch(pf.p + k * pf.ld + NR - 1);
        }
        __m512 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + 16 * v);
#pragma GCC unroll 32
        for (int r = 0; r < ROWS; r++) {
            __m512 ar = _mm512_set1_ps(a[r]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(ar, bv[v], acc[r][v]);
        }
        a += MR;
        b += NR;
    }

    // c = alpha * acc + beta * c, rows < mr and columns < nr only.
    __m512 valpha = _mm512_set1_ps(alpha), vbeta = _mm512_set1_ps(beta);
    __mmask16 mask[NV];
    for (int v = 0; v < NV; v++) {
        int n = nr - 16 * v;
        mask[v] = n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? 0 : (__mmask16)((1u << n) - 1);
    }
#pragma GCC unroll 32
    for (int r = 0; r < ROWS; r++) {
        if (r >= mr) break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            float *cp = c + r * ldc + 16 * v;
            __m512 x = _mm512_mul_ps(valpha, acc[r][v]);
            if (beta != 0.0f) x = _mm512_fmadd_ps(vbeta, _mm512_maskz_loadu_ps(mask[v], cp), x);
            _mm512_mask_storeu_ps(cp, mask[v], x);
        }
    }
}

static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, long ldc, float alpha, float beta,
                         int mr, int nr, Prefetch pf) {
    if (mr > 12) kernel_rows(14, kc, a, b, c, ldc, alpha, beta, mr, nr, pf);
    else if (mr > 8) kernel_rows(12, kc, a, b, c, ldc, alpha, beta, mr, nr, pf);
    else if (mr > 4) kernel_rows(8, kc, a, b, c, ldc, alpha, beta, mr, nr, pf);
    else kernel_rows(4, kc, a, b, c, ldc, alpha, beta, mr, nr, pf);
}

#elif defined(__AVX2__) && defined(__FMA__)
// AVX2 + FMA: 6 x 16 tile = 6 rows x 2 ymm, 12 accumulators.
#define NV (NR / 8)
static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, long ldc, float alpha, float beta,
                         int mr, int nr, Prefetch pf) {
    __m256 acc[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
    for (int r = 0; r < mr; r++) __builtin_prefetch(c + r * ldc);

    for (int k = 0; k < kc; k++) {
        if (k < pf.n) {
            __builtin_prefetch(pf.p + k * pf.ld);
            __builtin_prefetch(pf.p + k * pf.ld + NR - 1);
        }
        __m256 bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) bv[v] = _mm256_load_ps(b + 8 * v);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            __m256 ar = _mm256_broadcast_ss(a + r);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(ar, bv[v], acc[r][v]);
        }
        a += MR;
        b += NR;
    }

    __m256 valpha = _mm256_set1_ps(alpha), vbeta = _mm256_set1_ps(beta);
    if (mr == MR && nr == NR) {
        if (beta == 0.0f) {
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++)
                    _mm256_storeu_ps(c + r * ldc + 8 * v, _mm256_mul_ps(valpha, acc[r][v]));
        } else {
#pragma GCC unroll 16
            for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) {
                    float *cp = c + r * ldc + 8 * v;
                    __m256 x = _mm256_mul_ps(valpha, acc[r][v]);
                    _mm256_storeu_ps(cp, _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cp), x));
                }
        }
    } else {
        float t[MR * NR] __attribute__((aligned(32)));
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                _mm256_store_ps(t + r * NR + 8 * v, _mm256_mul_ps(valpha, acc[r][v]));
        store_partial(t, c, ldc, beta, mr, nr);
    }
}

#else
// Portable: a 4 x 8 tile in plain C; the compiler keeps it in registers.
static void micro_kernel(int kc, const float *restrict a, const float *restrict b,
                         float *restrict c, long ldc, float alpha, float beta,
                         int mr, int nr, Prefetch pf) {
    float acc[MR * NR] = {0};
    for (int k = 0; k < kc; k++, a += MR, b += NR) {
        if (k < pf.n) __builtin_prefetch(pf.p + k * pf.ld);
        for (int r = 0; r < MR; r++)
            for (int j = 0; j < NR; j++) acc[r * NR + j] += a[r] * b[j];
    }
    for (int i = 0; i < MR * NR; i++) acc[i] *= alpha;
    store_partial(acc, c, ldc, beta, mr, nr);
}
#endif

// ----------------------------------------------------------------------------
// 5. the blocked loops (one thread, one rectangle of C)
//
// A and B point at element (0, 0) of op(A) / op(B) for this rectangle; C at its
// (0, 0). See the loop nest in the header comment.

static const Prefetch no_prefetch = {0};

// The narrow case, M <= MC: one A block covers all of M, so each B element is used
// for only M multiply-adds. Big B panels would be packed from DRAM while the FMAs
// wait, so instead B is taken in small panels (NARROW_PANEL floats), and while the
// micro-kernels run on one panel they prefetch the rows of the next one: each of the
// `tiles` kernel calls on a B micro-panel takes every tiles-th row. (Only when op(B)
// is stored untransposed, where a row of a micro-panel is one stretch of memory.)
static void gemm_narrow(int transA, int transB, int M, int N, int K, float alpha,
                        const float *A, long lda, const float *B, long ldb, float beta,
                        float *C, long ldc, int kcb, int ncb, PackBuf *pb) {
    int tiles = ceil_div(M, MR);
    for (int pc = 0; pc < K; pc += kcb) {
        int kc = imin(kcb, K - pc);
        float beta_eff = pc == 0 ? beta : 1.0f;
        pack_a(transA, M, kc, transA ? A + (long)pc * lda : A + pc, lda, pb->a);
        const float *Bk = transB ? B + pc : B + (long)pc * ldb;   // row pc of op(B)
        for (int jc = 0; jc < N; jc += ncb) {
            int nc = imin(ncb, N - jc);
            pack_b(transB, kc, nc, transB ? Bk + (long)jc * ldb : Bk + jc, ldb, pb->b);
            int jn = jc + ncb, nn = imin(ncb, N - jn);    // the next panel
            for (int jr = 0; jr < nc; jr += NR) {
                for (int t = 0; t < tiles; t++) {
                    Prefetch pf = no_prefetch;
                    if (!transB && jr < nn)
                        pf = (Prefetch){Bk + jn + jr + (long)t * ldb, (long)tiles * ldb,
                                        (kc - t + tiles - 1) / tiles};
                    micro_kernel(kc, pb->a + (long)t * MR * kc, pb->b + (long)jr * kc,
                                 C + (long)t * MR * ldc + jc + jr, ldc, alpha, beta_eff,
                                 imin(MR, M - t * MR), imin(NR, nc - jr), pf);
                }
            }
        }
    }
}

static void gemm_blocked(int transA, int transB, int M, int N, int K, float alpha,
                         const float *A, long lda, const float *B, long ldb, float beta,
                         float *C, long ldc) {
    int kcb = block_size(K, KC, 1);
    int mcb = block_size(M, MC, MR);
    if (M <= mcb) {
        int ncb = block_size(N, imax(NR, NARROW_PANEL / kcb / NR * NR), NR);
        PackBuf *pb = packbuf_get((size_t)round_up(M, MR) * kcb, (size_t)ncb * kcb);
        gemm_narrow(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, kcb, ncb,
                    pb);
        return;
    }
    int ncb = block_size(N, NC, NR);
    PackBuf *pb = packbuf_get((size_t)mcb * kcb, (size_t)ncb * kcb);

    for (int jc = 0; jc < N; jc += ncb) {
        int nc = imin(ncb, N - jc);
        for (int pc = 0; pc < K; pc += kcb) {
            int kc = imin(kcb, K - pc);
            float beta_eff = pc == 0 ? beta : 1.0f;   // later K blocks accumulate
            const float *Bp = transB ? B + (long)jc * ldb + pc : B + (long)pc * ldb + jc;
            pack_b(transB, kc, nc, Bp, ldb, pb->b);

            for (int ic = 0; ic < M; ic += mcb) {
                int mc = imin(mcb, M - ic);
                const float *Ap = transA ? A + (long)pc * lda + ic : A + (long)ic * lda + pc;
                pack_a(transA, mc, kc, Ap, lda, pb->a);

                for (int jr = 0; jr < nc; jr += NR) {
                    const float *bp = pb->b + (long)jr * kc;
                    for (int ir = 0; ir < mc; ir += MR) {
                        micro_kernel(kc, pb->a + (long)ir * kc, bp,
                                     C + (long)(ic + ir) * ldc + jc + jr, ldc, alpha,
                                     beta_eff, imin(MR, mc - ir), imin(NR, nc - jr),
                                     no_prefetch);
                    }
                }
            }
        }
    }
}

// ----------------------------------------------------------------------------
// 6. small problems and degenerate cases
//
// Tiny products are not worth packing: a direct loop, row by row, accumulating
// alpha * a(i,k) * b(k,:) into the row of C after scaling it by beta.

static void scale_c(int M, int N, float beta, float *C, long ldc) {
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        if (beta == 0.0f) memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f) for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

static void gemm_small(int transA, int transB, int M, int N, int K, float alpha,
                       const float *A, long lda, const float *B, long ldb, float beta,
                       float *C, long ldc) {
    scale_c(M, N, beta, C, ldc);
    for (int i = 0; i < M; i++) {
        float *c = C + i * ldc;
        for (int k = 0; k < K; k++) {
            float a = alpha * (transA ? A[k * lda + i] : A[i * lda + k]);
            if (!transB) {
                const float *b = B + k * ldb;
                for (int j = 0; j < N; j++) c[j] += a * b[j];
            } else {
                for (int j = 0; j < N; j++) c[j] += a * B[j * ldb + k];
            }
        }
    }
}

// ----------------------------------------------------------------------------
// 7. the entry point: choose a path, split the work among the threads
//
// The threads form a tm x tn x tk grid: C is cut into tm x tn rectangles (aligned to
// MR / NR), and when K is long compared with M and N (weight gradients: dW = dout @
// col^T has K = batch x pixels) the K dimension is cut into tk parts too. The part
// owning k = 0 writes C (with beta); the others write alpha * their partial product
// to a scratch buffer, and after a barrier all tk threads of a rectangle add the
// partials into C, each over a share of its rows, in a fixed order.
//
// The grid minimises the work of the busiest thread: its multiply-adds (whole MR x NR
// tiles), plus a charge for packing its share of A (once per NC panel) and B, plus
// the reduction. A packed element costs about as much as 16 multiply-adds.
// Results are deterministic: the same inputs and thread count give the same bits.

#define MAX_THREADS 256
#define PACK_COST 16.0

typedef struct Grid { int tm, tn, tk; } Grid;

static Grid choose_grid(int nth, int M, int N, int K) {
    int mb = ceil_div(M, MR), nb = ceil_div(N, NR);
    Grid best = {1, nth, 1};
    double best_cost = -1;
    for (int tk = 1; tk <= nth; tk++) {
        if (nth % tk || (tk > 1 && K / tk < KC / 2)) continue;
        for (int tm = 1; tm <= nth / tk; tm++) {
            if ((nth / tk) % tm) continue;
            int tn = nth / tk / tm;
            double rows = (double)ceil_div(mb, tm) * MR, cols = (double)ceil_div(nb, tn) * NR;
            double kk = ceil_div(K, tk), panels = ceil(cols / NC);
            double cost = rows * cols * kk + PACK_COST * (rows * panels + cols) * kk +
                          PACK_COST * rows * cols * (tk - 1) / tk;
            if (best_cost < 0 || cost < best_cost) {
                best_cost = cost;
                best = (Grid){tm, tn, tk};
            }
        }
    }
    return best;
}

// Part p of `parts` near-equal parts of [0, len), cut at multiples of `unit`.
static void split(int len, int unit, int parts, int p, int *start, int *count) {
    int blocks = ceil_div(len, unit);
    int b0 = (int)((long)blocks * p / parts), b1 = (int)((long)blocks * (p + 1) / parts);
    *start = imin(len, b0 * unit);
    *count = imin(len, b1 * unit) - *start;
}

#ifdef _OPENMP
static void gemm_thread(int transA, int transB, int M, int N, int K, float alpha,
                        const float *A, long lda, const float *B, long ldb, float beta,
                        float *C, long ldc, Grid g, float **partial) {
    int t = omp_get_thread_num(), kp = t % g.tk, cell = t / g.tk;
    int i0, mi, j0, nj, p0, kk;
    split(M, MR, g.tm, cell / g.tn, &i0, &mi);
    split(N, NR, g.tn, cell % g.tn, &j0, &nj);
    split(K, 1, g.tk, kp, &p0, &kk);
    const float *Ap = transA ? A + (long)p0 * lda + i0 : A + (long)i0 * lda + p0;
    const float *Bp = transB ? B + (long)j0 * ldb + p0 : B + (long)p0 * ldb + j0;
    float *Cp = C + (long)i0 * ldc + j0;
    partial[t] = NULL;
    if (mi > 0 && nj > 0) {
        if (kp == 0) {
            // K < tk cannot happen (choose_grid keeps K / tk >= KC / 2), but kk == 0
            // would still be right here: C = beta * C.
            if (kk > 0) gemm_blocked(transA, transB, mi, nj, kk, alpha, Ap, lda, Bp, ldb,
                                     beta, Cp, ldc);
            else scale_c(mi, nj, beta, Cp, ldc);
        } else if (kk > 0) {
            PackBuf *pb = packbuf_get(0, 0);
            pb->c = grow(pb->c, &pb->ccap, (size_t)mi * nj);
            gemm_blocked(transA, transB, mi, nj, kk, alpha, Ap, lda, Bp, ldb, 0.0f, pb->c,
                         nj);
            partial[t] = pb->c;
        }
    }
    if (g.tk == 1) return;
#pragma omp barrier
    // Add the partials of this rectangle's other K parts into C; the tk threads of
    // the rectangle share its rows.
    int r0, nr;
    split(mi, 1, g.tk, kp, &r0, &nr);
    for (int q = 1; q < g.tk; q++) {
        const float *P = partial[cell * g.tk + q];
        if (!P) continue;
        for (int r = r0; r < r0 + nr; r++) {
            float *c = Cp + r * ldc;
            const float *p = P + (long)r * nj;
            for (int j = 0; j < nj; j++) c[j] += p[j];
        }
    }
}
#endif

void sgemm(int transA, int transB, int M, int N, int K, float alpha, const float *A,
           int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0 || alpha == 0.0f) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    double mnk = (double)M * N * K;
    if (mnk <= SMALL_MNK) {
        gemm_small(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }

    int nt = 1;
#ifdef _OPENMP
    if (!omp_in_parallel()) {
        nt = imin(omp_get_max_threads(), MAX_THREADS);
        double cap = mnk / PAR_MIN_MNK;
        if (cap < nt) nt = cap < 1 ? 1 : (int)cap;
    }
#endif
    if (nt <= 1) {
        gemm_blocked(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
#ifdef _OPENMP
    float *partial[MAX_THREADS];
#pragma omp parallel num_threads(nt)
    {
        // The team may be smaller than asked for; every thread derives the same grid.
        Grid g = choose_grid(omp_get_num_threads(), M, N, K);
        gemm_thread(transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, g,
                    partial);
    }
#endif
}
