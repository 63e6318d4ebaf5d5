// test/bench.c — `make bench`: how fast the pieces of virtex.c run on this machine.
//
// Sections (one function each), run in order by main():
//   bench_gemm ... SGEMM GFLOP/s at 1024^3 and at the GEMM shapes of ResNet-50's
//                  convolutions (forward and both backward forms), against the
//                  machine's float32 peak, which is measured and printed first.
//   bench_train_step  one training step of R-50 + L1_H2048 bicaptioning at batch 8,
//                  224 px, and the same step in PyTorch (test/bench_torch.py).
//   bench_loader   one sample's data pipeline (640x480 JPEG -> 224 train transforms +
//                  tokenize) on one thread against PIL + torchvision
//                  (test/bench_loader.py), and the Loader's images/s with 2 workers.
//   bench_train    full training iterations (loader + step + clip + optimiser) of the
//                  default shapes config and of R-50 + L1_H2048 at batch 8, 224 px:
//                  images/s and the fraction of the time spent waiting for data.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stb/stb_image_write.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "../model.h"

// ----------------------------------------------------------------------------
// helpers

static int bench_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

// CPU seconds used by the whole machine so far (all processes, from /proc/stat:
// everything but idle and iowait), and by this process (getrusage).
static double machine_cpu_s(void) {
    FILE *f = fopen("/proc/stat", "r");
    if (!f) return 0;
    unsigned long long v[8] = {0};
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                   &v[3], &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n < 4) return 0;
    // user nice system idle iowait irq softirq steal
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
           1e-6 * (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

// Timings mean little when other programs share the cores. A section calls
// busy_begin() and busy_end(); the latter prints a warning when other processes
// (or the hypervisor: steal time) took more than 5% of the machine meanwhile.
typedef struct Busy { double wall, machine, self; } Busy;
static Busy busy_begin(void) {
    return (Busy){now_seconds(), machine_cpu_s(), self_cpu_s()};
}
static void busy_end(Busy b) {
    double wall = now_seconds() - b.wall;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    double other = (machine_cpu_s() - b.machine) - (self_cpu_s() - b.self);
    double share = wall > 0 && ncpu > 0 ? other / (wall * ncpu) : 0;
    if (share > 0.05)
        printf("WARNING: other processes used %.0f%% of the %ld CPUs during this section;"
               " its numbers are too low. Rerun on an idle machine.\n", 100 * share, ncpu);
}

// n floats, uniform in [-0.5, 0.5), 64-byte aligned like the activation arena.
static float *bench_alloc(long n, uint64_t seed) {
    float *p = aligned_alloc(64, ((size_t)n * sizeof(float) + 63) & ~(size_t)63);
    if (!p) fatal("bench: out of memory");
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (long i = 0; i < n; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        p[i] = (float)(x >> 40) / (float)(1 << 24) - 0.5f;
    }
    return p;
}

// ----------------------------------------------------------------------------
// the machine's float32 peak
//
// peak = cores x FMA pipes x SIMD lanes x 2 flop x clock. None of these is taken on
// faith: /proc/cpuinfo "cpu MHz" on a VM is the nominal (TSC) clock, while the cores
// boost well above it, and the number of FMA pipes differs between generations
// (Zen 4: 2 x 256-bit, Zen 5: 2 x 512-bit). So, with every thread busy at once:
//   clock : timed chain of dependent integer adds (1 cycle each)
//   pipes : timed loop of 12 independent FMAs on full-width registers, divided by
//           lanes x 2 x clock and rounded to a whole number
// and the FMA loop's rate is printed too: it is the most any kernel could reach.

#if defined(__AVX512F__)
#define PEAK_LANES 16
#define FMA12 \
    "vfmadd231ps %%zmm30,%%zmm31,%%zmm0\n\tvfmadd231ps %%zmm30,%%zmm31,%%zmm1\n\t"   \
    "vfmadd231ps %%zmm30,%%zmm31,%%zmm2\n\tvfmadd231ps %%zmm30,%%zmm31,%%zmm3\n\t"   \
    "vfmadd231ps %%zmm30,%%zmm31,%%zmm4\n\tvfmadd231ps %%zmm30,%%zmm31,%%zmm5\n\t"   \
    "vfmadd231ps %%zmm30,%%zmm31,%%zmm6\n\tvfmadd231ps %%zmm30,%%zmm31,%%zmm7\n\t"   \
    "vfmadd231ps %%zmm30,%%zmm31,%%zmm8\n\tvfmadd231ps %%zmm30,%%zmm31,%%zmm9\n\t"   \
    "vfmadd231ps %%zmm30,%%zmm31,%%zmm10\n\tvfmadd231ps %%zmm30,%%zmm31,%%zmm11\n\t"
#elif defined(__AVX2__) && defined(__FMA__)
#define PEAK_LANES 8
#define FMA12 \
    "vfmadd231ps %%ymm14,%%ymm15,%%ymm0\n\tvfmadd231ps %%ymm14,%%ymm15,%%ymm1\n\t"   \
    "vfmadd231ps %%ymm14,%%ymm15,%%ymm2\n\tvfmadd231ps %%ymm14,%%ymm15,%%ymm3\n\t"   \
    "vfmadd231ps %%ymm14,%%ymm15,%%ymm4\n\tvfmadd231ps %%ymm14,%%ymm15,%%ymm5\n\t"   \
    "vfmadd231ps %%ymm14,%%ymm15,%%ymm6\n\tvfmadd231ps %%ymm14,%%ymm15,%%ymm7\n\t"   \
    "vfmadd231ps %%ymm14,%%ymm15,%%ymm8\n\tvfmadd231ps %%ymm14,%%ymm15,%%ymm9\n\t"   \
    "vfmadd231ps %%ymm14,%%ymm15,%%ymm10\n\tvfmadd231ps %%ymm14,%%ymm15,%%ymm11\n\t"
#endif

// Cycles per second of one core, from `n` dependent adds.
static double time_add_chain(long n) {
#if defined(__x86_64__)
    unsigned long x = 0;
    double t0 = now_seconds();
    for (long i = 0; i < n; i += 8)
        __asm__ volatile("add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                         "add $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\tadd $1,%0\n\t"
                         : "+r"(x));
    return (double)n / (now_seconds() - t0);
#else
    (void)n;
    return 0;
#endif
}

// flop/s of one core running independent FMAs (0 when there is no vector FMA).
static double time_fma_loop(long n) {
#if defined(PEAK_LANES) && defined(__x86_64__)
    double t0 = now_seconds();
    for (long i = 0; i < n; i++) {
        __asm__ volatile(FMA12 ::: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",
                         "xmm7", "xmm8", "xmm9", "xmm10", "xmm11");
    }
    return 12.0 * PEAK_LANES * 2 * n / (now_seconds() - t0);
#else
    (void)n;
    return 0;
#endif
}

static double cpuinfo_mhz(char *model, size_t model_len) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    double mhz = 0;
    snprintf(model, model_len, "unknown CPU");
    if (!f) return 0;
    char line[512];
    int got_model = 0;
    while (fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (!colon) continue;
        if (!got_model && strncmp(line, "model name", 10) == 0) {
            snprintf(model, model_len, "%s", colon + 2);
            model[strcspn(model, "\n")] = 0;
            got_model = 1;
        }
        if (mhz == 0 && strncmp(line, "cpu MHz", 7) == 0) mhz = atof(colon + 1);
    }
    fclose(f);
    return mhz;
}

static double g_peak;      // GFLOP/s, all threads
static double g_fma_loop;  // GFLOP/s, all threads

static void measure_peak(void) {
    int nt = bench_threads();
    char model[256];
    double mhz = cpuinfo_mhz(model, sizeof model);
    double clock_sum = 0, fma_sum = 0;
    time_add_chain(100000000);   // wake the cores up
#pragma omp parallel reduction(+ : clock_sum, fma_sum)
    {
        clock_sum += time_add_chain(400000000);
        fma_sum += time_fma_loop(10000000);
    }
    double clock = clock_sum / nt, fma = fma_sum / nt;   // per core
    const char *clock_src = "dependent-add chain, all threads busy";
    if (clock <= 0) clock = mhz * 1e6, clock_src = "/proc/cpuinfo cpu MHz";
#ifdef PEAK_LANES
    int lanes = PEAK_LANES;
#else
    int lanes = 1;
#endif
    int pipes = fma > 0 ? (int)(fma / (lanes * 2.0 * clock) + 0.5) : 1;
    if (pipes < 1) pipes = 1;
    g_peak = nt * pipes * lanes * 2.0 * clock / 1e9;
    g_fma_loop = nt * fma / 1e9;

    printf("machine: %s, %d threads; /proc/cpuinfo cpu MHz = %.0f (nominal)\n", model, nt,
           mhz);
    printf("clock  : %.2f GHz measured (%s)\n", clock / 1e9, clock_src);
    printf("peak   : %d cores x %d FMA pipes x %d lanes x 2 flop x %.2f GHz = %.1f GFLOP/s"
           " float32\n", nt, pipes, lanes, clock / 1e9, g_peak);
    printf("         (FMA pipes = measured FMA-loop rate / (lanes x 2 x clock), rounded)\n");
    if (g_fma_loop > 0)
        printf("ceiling: %.1f GFLOP/s measured by a loop of independent FMAs on all threads"
               "\n", g_fma_loop);
    if (mhz > 0)
        printf("         (at the nominal %.0f MHz the same formula gives %.1f GFLOP/s)\n", mhz,
               nt * pipes * lanes * 2.0 * mhz / 1e3);
}

// ----------------------------------------------------------------------------
// bench_gemm

// Best GFLOP/s of C = op(A) @ op(B) over a few runs after one warm-up.
static double gemm_gflops(int ta, int tb, int M, int N, int K, const float *A,
                          const float *B, float *C) {
    int lda = ta ? M : K, ldb = tb ? K : N;
    sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
    double best = 1e30, total = 0;
    for (int run = 0; run < 10 && (run < 3 || total < 0.25); run++) {
        double t0 = now_seconds();
        sgemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C, N);
        double t = now_seconds() - t0;
        total += t;
        if (t < best) best = t;
    }
    return 2.0 * M * N * K / best / 1e9;
}

// The convolutions of ResNet-50 (torchvision v1.5: stride on the 3x3) at batch 8 and
// 224 px, as im2col GEMMs: M = K_out, N = 8*P*Q, K = C*R*S. count: how many convs of
// the network have this shape.
typedef struct ConvShape { const char *name; int count, M, N, K; } ConvShape;
static const ConvShape resnet50_convs[] = {
    {"stem 7x7/2 3->64", 1, 64, 8 * 112 * 112, 3 * 49},
    {"l1.0 1x1 64->64", 1, 64, 8 * 56 * 56, 64},
    {"l1 3x3 64->64", 3, 64, 8 * 56 * 56, 64 * 9},
    {"l1 1x1 64->256 (+down)", 4, 256, 8 * 56 * 56, 64},
    {"l1 1x1 256->64", 2, 64, 8 * 56 * 56, 256},
    {"l2.0 1x1 256->128", 1, 128, 8 * 56 * 56, 256},
    {"l2 3x3 128->128 (.0 /2)", 4, 128, 8 * 28 * 28, 128 * 9},
    {"l2 1x1 128->512", 4, 512, 8 * 28 * 28, 128},
    {"l2.0 down 1x1/2 256->512", 1, 512, 8 * 28 * 28, 256},
    {"l2 1x1 512->128", 3, 128, 8 * 28 * 28, 512},
    {"l3.0 1x1 512->256", 1, 256, 8 * 28 * 28, 512},
    {"l3 3x3 256->256 (.0 /2)", 6, 256, 8 * 14 * 14, 256 * 9},
    {"l3 1x1 256->1024", 6, 1024, 8 * 14 * 14, 256},
    {"l3.0 down 1x1/2 512->1024", 1, 1024, 8 * 14 * 14, 512},
    {"l3 1x1 1024->256", 5, 256, 8 * 14 * 14, 1024},
    {"l4.0 1x1 1024->512", 1, 512, 8 * 14 * 14, 1024},
    {"l4 3x3 512->512 (.0 /2)", 3, 512, 8 * 7 * 7, 512 * 9},
    {"l4 1x1 512->2048", 3, 2048, 8 * 7 * 7, 512},
    {"l4.0 down 1x1/2 1024->2048", 1, 2048, 8 * 7 * 7, 1024},
    {"l4 1x1 2048->512", 2, 512, 8 * 7 * 7, 2048},
};

static void bench_gemm(void) {
    printf("\n== sgemm ==\n");
    Busy busy = busy_begin();
    measure_peak();
    double t_start = now_seconds();

    // Square 1024^3 in all four transpose forms.
    int n = 1024;
    float *A = bench_alloc((long)n * n, 1), *B = bench_alloc((long)n * n, 2);
    float *C = bench_alloc((long)n * n, 3);
    printf("\n%-28s %8s %7s\n", "C = op(A) @ op(B)", "GFLOP/s", "% peak");
    const char *forms[4] = {"NN", "NT", "TN", "TT"};
    for (int f = 0; f < 4; f++) {
        double g = gemm_gflops(f >> 1, f & 1, n, n, n, A, B, C);
        char label[64];
        snprintf(label, sizeof label, "1024^3 %s", forms[f]);
        printf("%-28s %8.1f %6.1f%%\n", label, g, 100 * g / g_peak);
    }
    free(A), free(B), free(C);

    // ResNet-50 convolutions: forward out = W @ col (NN), backward dW = dout @ col^T
    // (NT: M = K_out, N = CRS, K = 8PQ) and dcol = W^T @ dout (TN: M = CRS, N = 8PQ,
    // K = K_out). Each column: GFLOP/s and % of peak.
    int nconv = (int)(sizeof resnet50_convs / sizeof resnet50_convs[0]);
    long maxw = 0, maxcol = 0, maxout = 0;
    for (int i = 0; i < nconv; i++) {
        const ConvShape *s = &resnet50_convs[i];
        if ((long)s->M * s->K > maxw) maxw = (long)s->M * s->K;
        if ((long)s->K * s->N > maxcol) maxcol = (long)s->K * s->N;
        if ((long)s->M * s->N > maxout) maxout = (long)s->M * s->N;
    }
    float *W = bench_alloc(maxw, 4), *col = bench_alloc(maxcol, 5);
    float *out = bench_alloc(maxout, 6), *dW = bench_alloc(maxw, 7);
    float *dcol = bench_alloc(maxcol, 8);

    printf("\nResNet-50 convolutions as GEMMs, batch 8, 224 px (M = K_out, N = 8PQ, "
           "K = CRS)\n");
    printf("%-27s %2s %5s %6s %5s | %-13s | %-13s | %-13s\n", "conv", "#", "M", "N", "K",
           "fwd W@col NN", "dW dout@colT", "dcol WT@dout");
    double flop_total = 0, time_total = 0;
    int convs = 0;
    for (int i = 0; i < nconv; i++) {
        const ConvShape *s = &resnet50_convs[i];
        double g[3];
        g[0] = gemm_gflops(0, 0, s->M, s->N, s->K, W, col, out);
        g[1] = gemm_gflops(0, 1, s->M, s->K, s->N, out, col, dW);
        g[2] = gemm_gflops(1, 0, s->K, s->N, s->M, W, out, dcol);
        double flop = 2.0 * s->M * s->N * s->K;
        convs += s->count;
        for (int j = 0; j < 3; j++) {
            flop_total += s->count * flop;
            time_total += s->count * flop / (g[j] * 1e9);
        }
        printf("%-27s %2d %5d %6d %5d | %6.1f %5.1f%% | %6.1f %5.1f%% | %6.1f %5.1f%%\n",
               s->name, s->count, s->M, s->N, s->K, g[0], 100 * g[0] / g_peak, g[1],
               100 * g[1] / g_peak, g[2], 100 * g[2] / g_peak);
    }
    printf("all %d convs, forward + backward: %.1f GFLOP in %.3f s = %.1f GFLOP/s (%.1f%% "
           "of peak)\n", convs, flop_total / 1e9, time_total, flop_total / time_total / 1e9,
           100 * flop_total / time_total / 1e9 / g_peak);
    free(W), free(col), free(out), free(dW), free(dcol);
    printf("(gemm bench took %.1f s)\n", now_seconds() - t_start);
    busy_end(busy);
}


// ----------------------------------------------------------------------------
// bench_train_step: one training step (forward + backward) of the paper's best model,
// R-50 + transdec_postnorm::L1_H2048_A32_F8192 bicaptioning, batch 8, 224 px, against
// the same step of the PyTorch model (test/bench_torch.py) run in the same bench.

static long peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

// The PyTorch reference's median step time in ms, or -1 if torch is not installed.
static double torch_step_ms(long *torch_rss_mb) {
    if (system("/usr/bin/python3 -c 'import torch, torchvision' >/dev/null 2>&1") != 0) return -1;
    FILE *p = popen("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 test/bench_torch.py 3 "
                    "--threads 2 --peak-mem 2>&1", "r");
    if (!p) return -1;
    char line[512];
    double ms = -1;
    while (fgets(line, sizeof line, p)) {
        printf("  torch| %s", line);
        sscanf(line, "torch_step_ms %lf", &ms);
        sscanf(line, "torch_peak_rss_mb %ld", torch_rss_mb);
    }
    pclose(p);
    return ms;
}

static void bench_train_step(void) {
    printf("\n== one training step: R-50 + L1_H2048 bicaptioning, batch 8, 224 px ==\n");
    const char *path = "configs/task_ablations/bicaptioning_R_50_L1_H2048.yaml";
    Config cfg;
    char err[512];
    if (config_load(&cfg, path, 0, NULL, err, sizeof err)) { printf("  %s\n", err); return; }
    Model m;
    if (model_build(&m, &cfg, err, sizeof err)) { printf("  %s\n", err); return; }
    int B = 8, T = 30, S = 224;
    Batch b = {.B = B, .T = T};
    b.images = bench_alloc((long)B * 3 * S * S, 7);
    b.tokens = xcalloc(B * T, sizeof(int));
    b.noitpac = xcalloc(B * T, sizeof(int));
    b.lengths = xcalloc(B, sizeof(int));
    for (int i = 0; i < B; i++) {   // captions of 18..22 tokens, like bench_torch.py
        int n = 18 + i % 5;
        b.lengths[i] = n;
        for (int t = 0; t < n; t++) b.tokens[i * T + t] = t == 0 ? 1 : t == n - 1 ? 2 : 4 + (37 * i + 11 * t) % 9990;
        for (int t = 0; t < n; t++) b.noitpac[i * T + t] = b.tokens[i * T + n - 1 - t];
    }
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    double times[4];
    for (int it = 0; it < 4; it++) {   // one warm-up step, then three timed
        double t0 = now_seconds();
        graph_reset(&g);
        model_zero_grad(&m);
        Losses L = model_loss(&g, &m, &b);
        graph_backward(&g, L.total);
        times[it] = now_seconds() - t0;
        printf("  step %d: %.0f ms  (loss %.3f + %.3f)%s\n", it, 1e3 * times[it], L.forward,
               L.backward, it ? "" : "  warm-up");
    }
    double t1 = times[1], t2 = times[2], t3 = times[3];   // median of the three
    double med = t1 > t2 ? (t2 > t3 ? t2 : (t1 > t3 ? t3 : t1)) : (t1 > t3 ? t1 : (t2 > t3 ? t3 : t2));
    long rss = peak_rss_mb();
    printf("  virtex.c: %.0f ms per step, %.2f images/s, %d threads; arena %.0f MiB, "
           "peak RSS %ld MiB (parameters + gradients %.0f MiB)\n", 1e3 * med, B / med,
           bench_threads(), g.arena.peak / 1048576.0, rss, 2.0 * m.nparams * 4 / 1048576.0);
    graph_free(&g);
    free(b.images); free(b.tokens); free(b.noitpac); free(b.lengths);
    model_free(&m);
    long trss = -1;
    double tms = torch_step_ms(&trss);
    if (tms < 0) { printf("  PyTorch reference: python3-torch not installed, skipped\n"); return; }
    printf("\n  %-28s %10s %10s %12s\n", "step (fwd+bwd), batch 8", "ms", "images/s", "peak RSS MiB");
    printf("  %-28s %10.0f %10.2f %12ld\n", "virtex.c", 1e3 * med, B / med, rss);
    printf("  %-28s %10.0f %10.2f %12ld\n", "PyTorch 1.13 (2 threads)", tms, B / (tms / 1e3), trss);
    printf("  virtex.c / PyTorch time ratio: %.2f  (below 1 = virtex.c faster)\n", 1e3 * med / tms);
}

// ----------------------------------------------------------------------------
// bench_loader: the data pipeline of one training sample — read and decode a 640x480
// JPEG, the SPEC train transforms to 224 (random resized crop, flip with the caption's
// left/right swap, color jitter p 0.8, normalize), tokenize a caption — on one thread,
// next to PIL + torchvision transforms + sentencepiece (test/bench_loader.py, 1 torch
// thread) on the same files in the same bench; then the Loader with 2 workers.

enum { LB_FILES = 16, LB_W = 640, LB_H = 480 };
static const char *const lb_captions[4] = {
    "a man riding a wave on top of a surfboard to the left of a pier",
    "two dogs playing with a frisbee in a grassy field on the right",
    "a kitchen with white cabinets, a stove and a window above the sink",
    "a red double decker bus driving down a city street next to tall buildings"};

// Photo-like test images: smooth gradients, a few frequencies, pixel noise; JPEG q 90.
static int lb_write_images(const char *dir) {
    unsigned char *rgb = malloc((size_t)LB_W * LB_H * 3);
    uint64_t x = 12345;
    int rc = 0;
    for (int f = 0; f < LB_FILES && !rc; f++) {
        for (int y = 0; y < LB_H; y++)
            for (int i = 0; i < LB_W; i++)
                for (int c = 0; c < 3; c++) {
                    x = x * 6364136223846793005ull + 1442695040888963407ull;
                    double v = 110 + 50 * sin((i + 7 * f) / (9.0 + 4 * c)) * cos(y / (13.0 + f)) +
                               40.0 * i / LB_W - 30.0 * y / LB_H + (double)(x >> 59) * 2.5;
                    rgb[((size_t)y * LB_W + i) * 3 + c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
        char path[512];
        snprintf(path, sizeof path, "%s/train2017/%012d.jpg", dir, f + 1);
        rc = !stbi_write_jpg(path, LB_W, LB_H, 3, rgb, 90);
    }
    free(rgb);
    return rc ? -1 : 0;
}

// DIR/annotations/captions_train2017.json for the files (for the Loader).
static int lb_write_captions(const char *dir) {
    char path[512];
    snprintf(path, sizeof path, "%s/annotations/captions_train2017.json", dir);
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "{\"images\": [");
    for (int i = 0; i < LB_FILES; i++)
        fprintf(f, "%s{\"id\": %d, \"file_name\": \"%012d.jpg\"}", i ? ", " : "", i + 1, i + 1);
    fprintf(f, "], \"annotations\": [");
    for (int i = 0; i < LB_FILES; i++)
        fprintf(f, "%s{\"id\": %d, \"image_id\": %d, \"caption\": \"%s\"}", i ? ", " : "", i,
                i + 1, lb_captions[i % 4]);
    fprintf(f, "]}\n");
    return fclose(f) ? -1 : 0;
}

// images/s of the whole one-sample pipeline on this thread, over n samples.
static double lb_single_thread(const char *dir, const Tokenizer *tk, int n) {
    float *out = malloc(sizeof(float) * 3 * 224 * 224);
    int ids[64], total = 0;
    Rng rng;
    rng_seed(&rng, 1);
    char err[512];
    double t0 = now_seconds();
    for (int i = 0; i < n; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/train2017/%012d.jpg", dir, i % LB_FILES + 1);
        Image img;
        if (image_load(&img, path, err, sizeof err)) { printf("  %s\n", err); break; }
        int flipped;
        transform_train(&img, out, 224, &rng, &flipped);
        image_free(&img);
        const char *cap = lb_captions[i % 4];
        char *swapped = flipped ? caption_swap_left_right(cap) : NULL;
        total += tokenizer_encode(tk, swapped ? swapped : cap, strlen(swapped ? swapped : cap), ids, 64);
        free(swapped);
    }
    double dt = now_seconds() - t0;
    free(out);
    return total > 0 ? n / dt : 0;
}

// images/s of the Loader (SPEC train pipeline, 224 px, batch 16) with `workers` threads.
static double lb_loader(const char *dir, int workers, int batches) {
    Config cfg;
    config_defaults(&cfg);
    snprintf(cfg.DATA.ROOT, CFG_STR, "%s", dir);
    snprintf(cfg.DATA.TOKENIZER_MODEL, CFG_STR, "test/fixtures/tokenizer_small.model");
    char err[512];
    LoaderOptions o = {.split = "train", .train = 1, .batch_size = 16, .workers = workers};
    Loader *L = loader_open(&cfg, &o, err, sizeof err);
    if (!L) { printf("  loader: %s\n", err); return 0; }
    loader_next(L);                               // warm-up: the first batch
    double t0 = now_seconds();
    for (int i = 0; i < batches; i++) loader_next(L);
    double dt = now_seconds() - t0;
    loader_close(L);
    return batches * 16 / dt;
}

// images/s of PIL + torchvision (test/bench_loader.py), or -1 when it cannot run.
static double lb_torchvision(const char *dir, int n) {
    if (system("/usr/bin/python3 -c 'import torchvision, sentencepiece, PIL' >/dev/null 2>&1") != 0)
        return -1;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 "
             "test/bench_loader.py %s %d --threads 1 2>&1", dir, n);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    double ips = -1;
    while (fgets(line, sizeof line, p)) {
        printf("  torch| %s", line);
        sscanf(line, "pil_images_per_s %lf", &ips);
    }
    pclose(p);
    return ips;
}

static void bench_loader(void) {
    printf("\n== loader: decode a 640x480 JPEG + SPEC train transforms to 224 + tokenize ==\n");
    char dir[] = "/tmp/virtex-bench-loader-XXXXXX", sub[600], err[512];
    if (!mkdtemp(dir)) { printf("  mkdtemp failed\n"); return; }
    snprintf(sub, sizeof sub, "%s/train2017", dir);
    mkdir(sub, 0755);
    snprintf(sub, sizeof sub, "%s/annotations", dir);
    mkdir(sub, 0755);
    Tokenizer *tk = tokenizer_load("test/fixtures/tokenizer_small.model", err, sizeof err);
    if (!tk || lb_write_images(dir) || lb_write_captions(dir)) {
        printf("  cannot prepare the test images: %s\n", tk ? dir : err);
    } else {
        Busy busy = busy_begin();
        lb_single_thread(dir, tk, 16);                       // warm the page cache
        double c1 = lb_single_thread(dir, tk, 160);
        printf("  virtex.c, 1 thread:                %7.1f images/s\n", c1);
        double l2 = lb_loader(dir, 2, 10);
        printf("  virtex.c Loader, 2 workers:        %7.1f images/s (batch 16)\n", l2);
        busy_end(busy);
        double py = lb_torchvision(dir, 160);
        if (py < 0) {
            printf("  PIL + torchvision: python3-torchvision (or sentencepiece) not installed, skipped\n");
        } else {
            printf("  PIL + torchvision, 1 thread:       %7.1f images/s\n", py);
            printf("  virtex.c / PIL+torchvision, per core: %.2fx  (above 1 = virtex.c faster)\n",
                   c1 / py);
        }
    }
    tokenizer_free(tk);
    for (int i = 0; i < LB_FILES; i++) {
        snprintf(sub, sizeof sub, "%s/train2017/%012d.jpg", dir, i + 1);
        remove(sub);
    }
    snprintf(sub, sizeof sub, "%s/annotations/captions_train2017.json", dir);
    remove(sub);
    snprintf(sub, sizeof sub, "%s/train2017", dir);
    rmdir(sub);
    snprintf(sub, sizeof sub, "%s/annotations", dir);
    rmdir(sub);
    rmdir(dir);
}


// ----------------------------------------------------------------------------
// full training iterations

// A shapes dataset of n images at px pixels with a 128-piece vocabulary in dir
// (made once; reused by later runs).
static int bench_dataset(const char *dir, int n, int px) {
    char path[600], err[1024];
    snprintf(path, sizeof path, "%s/vocab.model", dir);
    if (access(path, R_OK) == 0) return 0;
    SynthOptions so;
    synth_default_options(&so);
    so.out = dir;
    so.images = n;
    so.size = px;
    so.quiet = 1;
    if (synth_dataset(&so, err, sizeof err)) { printf("  %s\n", err); return -1; }
    snprintf(path, sizeof path, "%s/annotations/captions_train2017.json", dir);
    char **caps;
    long ncap;
    if (coco_read_captions(path, &caps, &ncap, err, sizeof err)) { printf("  %s\n", err); return -1; }
    VocabOptions vo = {.vocab_size = 128};
    size_t len;
    unsigned char *model = vocab_train((const char *const *)caps, ncap, &vo, &len, err, sizeof err);
    free(caps);
    snprintf(path, sizeof path, "%s/vocab", dir);
    int rc = !model || vocab_write(path, model, len, err, sizeof err);
    free(model);
    if (rc) printf("  %s\n", err);
    return rc ? -1 : 0;
}

// `iters` timed iterations (after `warm` untimed) of the training loop of train.c:
// the next batch, loss, backward, clip, SGD + Lookahead step.
// Returns images/s (0 on an error).
static double bench_training(const char *what, const char *cfg_path, char **ov, int nov, int warm,
                             int iters) {
    Config c;
    char err[1024];
    if (config_load(&c, cfg_path, nov, ov, err, sizeof err)) { printf("  %s\n", err); return 0; }
    Model m;
    Optimizer o;
    if (model_build(&m, &c, err, sizeof err) || optimizer_init(&o, &m, err, sizeof err)) {
        printf("  %s\n", err);
        return 0;
    }
    LoaderOptions lo = {.split = "train", .train = 1};
    Loader *L = loader_open(&c, &lo, err, sizeof err);
    if (!L) { printf("  %s\n", err); model_free(&m); return 0; }
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    double t0 = 0, wait0 = 0;
    for (int it = 0; it < warm + iters; it++) {
        if (it == warm) { t0 = now_seconds(); wait0 = loader_stats(L).wait_seconds; }
        const Batch *b = loader_next(L);
        graph_reset(&g);
        model_zero_grad(&m);
        Losses l = model_loss(&g, &m, b);
        graph_backward(&g, l.total);
        clip_grad_norm(&m, c.OPTIM.CLIP_GRAD_NORM);
        optimizer_step(&o, lr_multiplier(&c, it + 1));
    }
    double secs = now_seconds() - t0, wait = loader_stats(L).wait_seconds - wait0;
    double rate = (double)iters * c.OPTIM.BATCH_SIZE / secs;
    printf("  %-44s %8.1f images/s  %6.0f ms/iteration  data wait %4.1f%%  peak RSS %ld MiB\n", what,
           rate, 1e3 * secs / iters, 100 * wait / secs, peak_rss_mb());
    loader_close(L);
    graph_free(&g);
    optimizer_free(&o);
    model_free(&m);
    return rate;
}

static void bench_train(void) {
    printf("\n== full training iterations: loader (%d workers) + step + clip + SGD/Lookahead ==\n",
           bench_threads());
    const char *small = "/tmp/virtex-bench-shapes64", *large = "/tmp/virtex-bench-shapes256";
    if (bench_dataset(small, 2000, 64) == 0) {
        char *ov[] = {"DATA.ROOT", (char *)small, "DATA.TOKENIZER_MODEL", "/tmp/virtex-bench-shapes64/vocab.model"};
        const char *cfg = "configs/small/bicaptioning_R_50W8_L1_H128.yaml";
        double all = bench_training("default (R-50 W8 + L1_H128, batch 32, 64 px)", cfg, ov, 4, 5, 60);
#ifdef _OPENMP
        // How well the ops use the cores: the same with one OpenMP thread (the loader's
        // workers unchanged).
        int nt = bench_threads();
        if (nt > 1 && all > 0) {
            omp_set_num_threads(1);
            double one = bench_training("the same, 1 OpenMP thread", cfg, ov, 4, 5, 60);
            omp_set_num_threads(nt);
            if (one > 0) printf("  %d threads / 1 thread: %.2fx\n", nt, all / one);
        }
#endif
    }
    if (bench_dataset(large, 200, 256) == 0) {
        char *ov[] = {"DATA.ROOT", (char *)large, "DATA.TOKENIZER_MODEL", "/tmp/virtex-bench-shapes256/vocab.model",
                      "DATA.VOCAB_SIZE", "128", "OPTIM.BATCH_SIZE", "8"};
        bench_training("R-50 + L1_H2048 (batch 8, 224 px, V 128*)",
                       "configs/task_ablations/bicaptioning_R_50_L1_H2048.yaml", ov, 8, 2, 6);
        printf("  * the synthetic captions allow ~150 pieces: V 128 instead of COCO's 10000, so\n"
               "    the output layers are ~1%% of their full-size cost\n");
    }
}

// ----------------------------------------------------------------------------

static int wanted(int argc, char **argv, const char *section) {
    for (int i = 1; i < argc; i++) if (!strcmp(argv[i], section)) return 1;
    return argc < 2;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    // `test/bench [SECTION...]` runs some sections: gemm, step, loader, train
    if (wanted(argc, argv, "gemm")) bench_gemm();
    if (wanted(argc, argv, "step")) bench_train_step();
    if (wanted(argc, argv, "loader")) bench_loader();
    if (wanted(argc, argv, "train")) bench_train();
    return 0;
}
