// test/main.c — runs every test group; `test/run_tests [GROUP...]` runs some of them.
// Closes with the line "N passed, M failed" and exits non-zero on any failure.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"

int tests_passed, tests_failed;
static int verbose;

void check(int ok, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (!ok || verbose) {
        printf("  %s ", ok ? "PASS" : "FAIL");
        vprintf(fmt, ap);
        printf("\n");
    }
    va_end(ap);
    if (ok) tests_passed++; else tests_failed++;
}

int check_close(const char *what, const float *got, const float *want, long n,
                double rtol, double atol) {
    double maxabs = 0, maxrel = 0;
    long bad = 0, worst = 0;
    for (long i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        double r = d / (fabs((double)want[i]) + 1e-30);
        if (!(d <= atol + rtol * fabs((double)want[i]))) { if (!bad) worst = i; bad++; }
        if (d > maxabs || d != d) { maxabs = d; if (!bad) worst = i; }
        if (r > maxrel && fabs(want[i]) > atol) maxrel = r;
    }
    int ok = bad == 0;
    check(ok, "%-48s n=%-8ld max|diff| %.3g  max rel %.3g%s", what, n, maxabs, maxrel,
          ok ? "" : "  <-- mismatch");
    if (!ok || verbose) {
        printf("       got :");
        for (long i = 0; i < n && i < 4; i++) printf(" % .6g", got[i]);
        printf("\n       want:");
        for (long i = 0; i < n && i < 4; i++) printf(" % .6g", want[i]);
        printf("\n");
        if (!ok) printf("       %ld bad; first at [%ld]: got %.8g want %.8g\n", bad, worst,
                        got[worst], want[worst]);
    }
    return ok;
}

void check_fd(const char *what, loss_fn f, void *ctx, float *x, const float *grad, long n,
              long maxn, float h, double rtol, double atol) {
    long m = n < maxn ? n : maxn, stride = n > maxn ? n / maxn : 1;
    float *got = malloc((m + 1) * sizeof(float)), *want = malloc((m + 1) * sizeof(float));
    for (long c = 0; c < m; c++) {
        long i = c * stride + stride / 2;
        float save = x[i], up = save + h, dn = save - h;
        x[i] = up;
        double lp = f(ctx);
        x[i] = dn;
        double lm = f(ctx);
        x[i] = save;
        want[c] = (float)((lp - lm) / ((double)up - (double)dn));   // the step taken in float
        got[c] = grad[i];
    }
    check_close(what, got, want, m, rtol, atol);
    free(got);
    free(want);
}

unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    *n = 0;
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)len + 1);
    if (fread(b, 1, (size_t)len, f) != (size_t)len) { free(b); b = NULL; len = 0; }
    else b[len] = 0;   // text files can be used as C strings
    fclose(f);
    *n = (size_t)len;
    return b;
}

void spit(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); return; }
    if (n) fwrite(data, 1, n, f);
    fclose(f);
}

const char *path_in(const char *dir, const char *name) {
    static char buf[8][512];
    static int k;
    char *p = buf[k++ & 7];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

const char *repo_root(void) {
    if (access("./virtex", X_OK) == 0 && access("configs", F_OK) == 0) return ".";
    if (access("../virtex", X_OK) == 0 && access("../configs", F_OK) == 0) return "..";
    return NULL;
}

// stdout / stderr of a run, read back ("" when the file is missing).
static char *slurp_text(const char *path) {
    size_t n;
    char *s = (char *)slurp(path, &n);
    return s ? s : calloc(1, 1);
}

Run run_virtex(const char *scratch, const char *args) {
    char out[600], err[600], cmd[4096];
    snprintf(out, sizeof out, "%s/stdout", scratch);
    snprintf(err, sizeof err, "%s/stderr", scratch);
    const char *root = repo_root();
    snprintf(cmd, sizeof cmd, "cd '%s' && ./virtex %s >'%s' 2>'%s' </dev/null", root ? root : ".", args,
             out, err);
    fflush(stdout);
    int st = system(cmd);
    Run r = {-1, slurp_text(out), slurp_text(err)};
    if (st != -1 && WIFEXITED(st)) r.code = WEXITSTATUS(st);
    unlink(out);
    unlink(err);
    return r;
}

void run_free(Run *r) {
    free(r->out);
    free(r->err);
}

void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) remove_tree(p);
        else unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

const char *fixture_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    const char *dirs[] = {"test/fixtures/", "fixtures/", "../test/fixtures/"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, 512, "%s%s", dirs[i], name);
        if (access(p, R_OK) == 0) return p;
    }
    snprintf(p, 512, "test/fixtures/%s", name);
    return p;
}

static const struct { const char *name; void (*fn)(void); } groups[] = {
    {"gemm", test_gemm},
    {"ops_cnn", test_ops_cnn},
    {"ops_transformer", test_ops_transformer},
    {"config", test_config},
    {"model", test_model},
    {"checkpoint", test_checkpoint},
    {"parity", test_parity},
    {"cli", test_cli},
    {"json", test_json},
    {"image", test_image},
    {"synth", test_synth},
    {"tokenizer", test_tokenizer},
    {"loader", test_loader},
    {"train", test_train},
    {"captions", test_captions},
    {"pytorch", test_pytorch},
    {"transfer", test_transfer},
};

int main(int argc, char **argv) {
    verbose = getenv("VERBOSE") && atoi(getenv("VERBOSE"));
    setvbuf(stdout, NULL, _IOLBF, 0);
    int ngroups = (int)(sizeof groups / sizeof groups[0]);
    for (int i = 0; i < ngroups; i++) {
        int run = argc < 2;
        for (int a = 1; a < argc; a++) run |= strcmp(argv[a], groups[i].name) == 0;
        if (!run) continue;
        int p0 = tests_passed, f0 = tests_failed;
        double t0 = now_seconds();
        printf("[%s]\n", groups[i].name);
        groups[i].fn();
        printf("[%s] %d passed, %d failed (%.1fs)\n", groups[i].name, tests_passed - p0,
               tests_failed - f0, now_seconds() - t0);
    }
    printf("%d passed, %d failed\n", tests_passed, tests_failed);
    return tests_failed ? 1 : 0;
}
