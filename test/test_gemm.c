// test/test_gemm.c — sgemm against a reference accumulated in double.
//
// Two kinds of check:
//   exact   small-integer matrices: every partial sum is an integer below 2^24, so
//           any summation order gives the exact answer, and sgemm must match the
//           reference bit for bit. This catches indexing and packing mistakes with
//           no tolerance at all.
//   rounded normal-distributed matrices: the error of each element, divided by its
//           magnitude |alpha| sum_k |a_ik b_kj| + |beta c_ij|, must stay below
//           (4 sqrt(K) + 4) * 2^-24: rounding that grows like a random walk over
//           the K steps. A single lost or doubled product would be off by about
//           1/K of the magnitude, far above that for any K used here.
// The shapes cross every block boundary of the blocking in gemm.c (MR 14, NR 32,
// KC 256, MC 336, NC 4096 with AVX-512; smaller tiles in the other builds), and the
// paths it chooses: direct loop, narrow (M <= MC), blocked, and K split across
// threads. Also: beta = 0 with NaN in C, leading dimensions larger than the rows,
// K = 0, alpha = 0, and calls from inside a parallel region.
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "test.h"

#define EPS32 (1.0 / 16777216.0)   // 2^-24, the float32 unit roundoff

typedef struct Case {
    int ta, tb, M, N, K;
    float alpha, beta;
    int pad;            // added to each leading dimension
    int exact;          // small integers instead of normal values
} Case;

// Operands of one case, with C0 the initial C and C the one sgemm overwrites.
typedef struct Mats {
    int lda, ldb, ldc;
    long na, nb, nc;
    float *A, *B, *C0, *C;
} Mats;

static Mats mats_new(const Case *c, Rng *r) {
    Mats m;
    m.lda = (c->ta ? c->M : c->K) + c->pad;
    m.ldb = (c->tb ? c->K : c->N) + c->pad;
    m.ldc = c->N + c->pad;
    m.na = (long)(c->ta ? c->K : c->M) * m.lda;
    m.nb = (long)(c->tb ? c->N : c->K) * m.ldb;
    m.nc = (long)c->M * m.ldc;
    m.A = xmalloc((m.na + 1) * sizeof(float));
    m.B = xmalloc((m.nb + 1) * sizeof(float));
    m.C0 = xmalloc((m.nc + 1) * sizeof(float));
    m.C = xmalloc((m.nc + 1) * sizeof(float));
    for (long i = 0; i < m.na; i++)
        m.A[i] = c->exact ? (float)((int)(rng_next(r) % 7) - 3) : (float)rng_normal(r);
    for (long i = 0; i < m.nb; i++)
        m.B[i] = c->exact ? (float)((int)(rng_next(r) % 7) - 3) : (float)rng_normal(r);
    for (long i = 0; i < m.nc; i++)   // beta == 0: C must not be read, so NaN it
        m.C0[i] = c->beta == 0 ? NAN
                  : c->exact   ? (float)((int)(rng_next(r) % 17) - 8)
                               : (float)rng_normal(r);
    memcpy(m.C, m.C0, m.nc * sizeof(float));
    return m;
}

static void mats_free(Mats *m) {
    free(m->A), free(m->B), free(m->C0), free(m->C);
}

static void run_sgemm(const Case *c, Mats *m) {
    sgemm(c->ta, c->tb, c->M, c->N, c->K, c->alpha, m->A, m->lda, m->B, m->ldb, c->beta,
          m->C, m->ldc);
}

// want[i*N + j] = alpha * sum_k op(A)[i][k] op(B)[k][j] + beta * C0[i][j] in double,
// mag[i*N + j] the magnitude that bounds its rounding error.
static void reference(const Case *c, const Mats *m, double *want, double *mag) {
    for (int i = 0; i < c->M; i++)
        for (int j = 0; j < c->N; j++) {
            double s = 0, a_b = 0;
            for (int k = 0; k < c->K; k++) {
                double a = c->ta ? m->A[(long)k * m->lda + i] : m->A[(long)i * m->lda + k];
                double b = c->tb ? m->B[(long)j * m->ldb + k] : m->B[(long)k * m->ldb + j];
                s += a * b;
                a_b += fabs(a * b);
            }
            double c0 = c->beta != 0 ? (double)c->beta * m->C0[(long)i * m->ldc + j] : 0;
            want[(long)i * c->N + j] = c->alpha * s + c0;
            mag[(long)i * c->N + j] = fabs(c->alpha) * a_b + fabs(c0);
        }
}

static void describe(char *buf, size_t len, const Case *c, const char *what) {
    snprintf(buf, len, "sgemm %c%c %dx%dx%d a=%g b=%g ld+%d %s", c->ta ? 'T' : 'N',
             c->tb ? 'T' : 'N', c->M, c->N, c->K, c->alpha, c->beta, c->pad, what);
}

// Compare m->C with the reference: exactly, or as error / magnitude against the
// tolerance. The padding columns of C must be untouched either way.
static void check_result(const Case *c, const Mats *m, const double *want,
                         const double *mag, const char *what) {
    long n = (long)c->M * c->N;
    float *got = xmalloc((n + 1) * sizeof(float)), *ref = xmalloc((n + 1) * sizeof(float));
    char label[160];
    describe(label, sizeof label, c, what);
    if (c->exact) {
        for (int i = 0; i < c->M; i++)
            for (int j = 0; j < c->N; j++) {
                got[(long)i * c->N + j] = m->C[(long)i * m->ldc + j];
                ref[(long)i * c->N + j] = (float)want[(long)i * c->N + j];
            }
        check_close(label, got, ref, n, 0, 0);
    } else {
        // got: the relative error of each element; ref: zero.
        for (int i = 0; i < c->M; i++)
            for (int j = 0; j < c->N; j++) {
                long e = (long)i * c->N + j;
                got[e] = (float)((m->C[(long)i * m->ldc + j] - want[e]) / (mag[e] + 1e-30));
                ref[e] = 0;
            }
        check_close(label, got, ref, n, 0, (4 * sqrt((double)c->K) + 4) * EPS32);
    }
    int untouched = 1;
    for (int i = 0; i < c->M; i++)
        for (int j = c->N; j < m->ldc; j++)
            untouched &= !memcmp(&m->C[(long)i * m->ldc + j], &m->C0[(long)i * m->ldc + j],
                                 sizeof(float));
    if (c->pad) check(untouched, "%s: padding columns of C untouched", label);
    free(got), free(ref);
}

static void run_case(const Case *c, Rng *r) {
    Mats m = mats_new(c, r);
    long n = (long)c->M * c->N;
    double *want = xmalloc((n + 1) * sizeof(double)), *mag = xmalloc((n + 1) * sizeof(double));
    reference(c, &m, want, mag);
    run_sgemm(c, &m);
    check_result(c, &m, want, mag, c->exact ? "exact" : "");
    free(want), free(mag);
    mats_free(&m);
}

// ----------------------------------------------------------------------------

static void test_shapes(Rng *r) {
    // M, N, K: tiny, odd primes, and each side of the block boundaries.
    static const int shapes[][3] = {
        {1, 1, 1},      {1, 37, 1},     {37, 1, 29},   {5, 1, 9},     {1, 300, 300},
        {300, 1, 300},  {37, 53, 29},   {13, 31, 255}, {14, 32, 256}, {15, 33, 257},
        {29, 65, 513},  {335, 40, 20},  {336, 40, 20}, {337, 40, 20}, {700, 45, 30},
        {64, 600, 300}, {300, 257, 513}, {700, 40, 520}, {16, 24, 3000},
        {64, 147, 1000},
    };
    int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int s = 0; s < nshapes; s++)
        for (int t = 0; t < 4; t++) {
            Case c = {t >> 1, t & 1, shapes[s][0], shapes[s][1], shapes[s][2], 1, 0, 0, 0};
            // Alternate the alpha / beta / ld forms so that every shape meets each.
            switch ((s + t) % 4) {
            case 0: break;                                             // beta 0, C NaN
            case 1: c.alpha = 0.7f, c.beta = 0.5f, c.pad = 3; break;
            case 2: c.alpha = -1.3f, c.beta = 1, c.pad = 1; break;
            case 3: c.alpha = 2, c.beta = 0, c.pad = 5; break;         // beta 0, padded
            }
            run_case(&c, r);
        }
}

static void test_exact(Rng *r) {
    // Integer data: bit-exact whatever the summation order (|sums| < 2^24).
    static const int shapes[][3] = {
        {14, 32, 256}, {45, 70, 90}, {337, 97, 300}, {64, 600, 300}, {20, 30, 1000},
        {700, 50, 300}, {340, 4097, 8},   // two NC panels
    };
    for (int s = 0; s < (int)(sizeof shapes / sizeof shapes[0]); s++)
        for (int t = 0; t < 4; t++) {
            static const float betas[4] = {0, 1, 0.5f, -2};
            Case c = {t >> 1, t & 1, shapes[s][0], shapes[s][1], shapes[s][2],
                      t == 3 ? -1.0f : (float)(1 + (s & 1)), betas[(s + t) % 4], s % 3, 1};
            run_case(&c, r);
        }
}

static void test_degenerate(Rng *r) {
    // K = 0 and alpha = 0: C = beta * C, A and B unread (beta 0: C becomes 0).
    for (int v = 0; v < 4; v++) {
        Case c = {v & 1, v >> 1, 30, 41, v < 2 ? 0 : 17, v < 2 ? 1.0f : 0.0f,
                  v & 1 ? 0.5f : 0.0f, 2, 1};
        Mats m = mats_new(&c, r);
        run_sgemm(&c, &m);
        int ok = 1;
        for (int i = 0; i < c.M; i++)
            for (int j = 0; j < c.N; j++) {
                float want = c.beta == 0 ? 0.0f : c.beta * m.C0[(long)i * m.ldc + j];
                ok &= m.C[(long)i * m.ldc + j] == want;
            }
        check(ok, "sgemm K=%d alpha=%g beta=%g: C = beta * C", c.K, c.alpha, c.beta);
        mats_free(&m);
    }
    // M = 0 or N = 0: nothing is touched (NULL pointers are fine).
    sgemm(0, 0, 0, 5, 5, 1, NULL, 5, NULL, 5, 0, NULL, 5);
    sgemm(1, 1, 5, 0, 5, 1, NULL, 5, NULL, 5, 0, NULL, 5);
    check(1, "sgemm with M = 0 or N = 0 returns without touching memory");
}

static void test_threads(Rng *r) {
    // The same call twice gives the same bits.
    Case c = {0, 1, 130, 200, 700, 1, 0, 0, 0};
    Mats m = mats_new(&c, r);
    run_sgemm(&c, &m);
    float *first = xmalloc(m.nc * sizeof(float));
    memcpy(first, m.C, m.nc * sizeof(float));
    run_sgemm(&c, &m);
    check(!memcmp(first, m.C, m.nc * sizeof(float)), "sgemm is deterministic (%dx%dx%d twice)",
          c.M, c.N, c.K);
    free(first);
    mats_free(&m);

#ifdef _OPENMP
    // Other thread counts: 1 (serial path), 3 (uneven splits, K cut in 3) and 4
    // (2 x 2 grids).
    int saved = omp_get_max_threads();
    static const int shapes[][3] = {{130, 200, 700}, {20, 30, 3000}, {401, 77, 260},
                                    {300, 300, 100}};
    static const int counts[3] = {1, 3, 4};
    for (int ic = 0; ic < 3; ic++) {
        int nt = counts[ic];
        omp_set_num_threads(nt);
        for (int s = 0; s < 4; s++) {
            Case d = {s & 1, s >> 1, shapes[s][0], shapes[s][1], shapes[s][2], 1, 0.5f, 1, 0};
            char what[32];
            snprintf(what, sizeof what, "%d threads", nt);
            Mats mm = mats_new(&d, r);
            long n = (long)d.M * d.N;
            double *want = xmalloc(n * sizeof(double)), *mag = xmalloc(n * sizeof(double));
            reference(&d, &mm, want, mag);
            run_sgemm(&d, &mm);
            check_result(&d, &mm, want, mag, what);
            free(want), free(mag);
            mats_free(&mm);
        }
    }
    omp_set_num_threads(saved);

    // Called from inside a parallel region: each thread its own product, at once
    // (sgemm then runs serially in each, with that thread's pack buffers).
    Case cs[2] = {{0, 0, 150, 90, 400, 1, 0, 2, 0}, {1, 1, 70, 130, 333, -0.5f, 1, 0, 0}};
    Mats ms[2];
    double *want[2], *mag[2];
    for (int i = 0; i < 2; i++) {
        ms[i] = mats_new(&cs[i], r);
        long n = (long)cs[i].M * cs[i].N;
        want[i] = xmalloc(n * sizeof(double));
        mag[i] = xmalloc(n * sizeof(double));
        reference(&cs[i], &ms[i], want[i], mag[i]);
    }
#pragma omp parallel for num_threads(2)
    for (int i = 0; i < 2; i++) run_sgemm(&cs[i], &ms[i]);
    for (int i = 0; i < 2; i++) {
        check_result(&cs[i], &ms[i], want[i], mag[i], "inside omp parallel");
        free(want[i]), free(mag[i]);
        mats_free(&ms[i]);
    }
#endif
}

void test_gemm(void) {
    Rng r;
    rng_seed(&r, 20240601);
    test_shapes(&r);
    test_exact(&r);
    test_degenerate(&r);
    test_threads(&r);
}
