// test/test_gemm.c — sgemm against a plain triple loop accumulated in double.
#include <stdlib.h>
#include <string.h>
#include "test.h"

// C = alpha * op(A) @ op(B) + beta * C0, in double; also returns sum |a||b| per entry
// (the scale of the rounding error a float accumulation may make).
static void reference(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, const float *C0, int ldc, double *C,
                      double *mag) {
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, m = 0;
            for (int k = 0; k < K; k++) {
                double a = ta ? A[(long)k * lda + i] : A[(long)i * lda + k];
                double b = tb ? B[(long)j * ldb + k] : B[(long)k * ldb + j];
                s += a * b;
                m += fabs(a * b);
            }
            double c0 = beta != 0 ? beta * (double)C0[(long)i * ldc + j] : 0;   // beta 0: C0 unread
            C[(long)i * N + j] = alpha * s + c0;
            mag[(long)i * N + j] = fabs(alpha) * m + fabs(c0);
        }
}

static int one_case(Rng *r, int ta, int tb, int M, int N, int K, float alpha, float beta, int pad) {
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    long na = (long)(ta ? K : M) * lda, nb = (long)(tb ? N : K) * ldb, nc = (long)M * ldc;
    float *A = xmalloc((na + 1) * sizeof(float)), *B = xmalloc((nb + 1) * sizeof(float));
    float *C = xmalloc((nc + 1) * sizeof(float)), *C0 = xmalloc((nc + 1) * sizeof(float));
    for (long i = 0; i < na; i++) A[i] = (float)rng_normal(r);
    for (long i = 0; i < nb; i++) B[i] = (float)rng_normal(r);
    for (long i = 0; i < nc; i++) C0[i] = beta == 0 ? NAN : (float)rng_normal(r);   // beta 0: never read
    memcpy(C, C0, nc * sizeof(float));
    double *want = xmalloc(((long)M * N + 1) * sizeof(double)), *mag = xmalloc(((long)M * N + 1) * sizeof(double));
    reference(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, want, mag);
    sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    // float32 accumulation of K products: error <= ~K * 2^-24 * sum|a b| (we allow
    // 4x the typical sqrt(K) growth and never more than that bound)
    int ok = 1;
    double worst = 0;
    for (int i = 0; i < M && ok; i++) {
        for (int j = 0; j < N; j++) {
            double tol = 4 * sqrt((double)K + 1) * 6e-8 * mag[(long)i * N + j] + 1e-30;
            double d = fabs((double)C[(long)i * ldc + j] - want[(long)i * N + j]);
            if (!(d <= tol)) { ok = 0; break; }
            worst = fmax(worst, d / tol);
        }
        for (int j = N; j < ldc; j++)   // padding columns untouched
            if (memcmp(&C[(long)i * ldc + j], &C0[(long)i * ldc + j], sizeof(float))) ok = 0;
    }
    check(ok, "sgemm %c%c M=%-4d N=%-4d K=%-4d alpha %.2g beta %.2g ld+%d (worst %.2f of tol)",
          ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, beta, pad, worst);
    free(A); free(B); free(C); free(C0); free(want); free(mag);
    return ok;
}

void test_gemm(void) {
    Rng r;
    rng_seed(&r, 42);
    // shapes: tiny, odd primes, and sizes across the blocking (MR 14, NR 32, KC 256, MC 336)
    const int shapes[][3] = {{1, 1, 1},  {1, 37, 1},   {5, 1, 9},     {14, 32, 256}, {15, 33, 257},
                             {37, 53, 29}, {29, 64, 300}, {337, 65, 513}, {300, 257, 513},
                             {64, 500, 147}, {3, 700, 45}, {13, 31, 0}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int t = 0; t < 4; t++)
            one_case(&r, t >> 1, t & 1, shapes[s][0], shapes[s][1], shapes[s][2], 1.0f, 0.0f, 0);
    // alpha, beta and leading dimensions larger than the rows
    one_case(&r, 0, 0, 45, 70, 90, 0.5f, 1.0f, 3);
    one_case(&r, 1, 0, 45, 70, 90, -2.0f, 0.5f, 7);
    one_case(&r, 0, 1, 129, 33, 260, 1.0f, 1.0f, 1);
    one_case(&r, 1, 1, 70, 45, 33, 1.5f, 0.0f, 5);
    one_case(&r, 0, 0, 200, 300, 700, 1.0f, 1.0f, 0);
}
