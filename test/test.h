// test/test.h — the test harness: counters, checks that print what they compare.
#ifndef VIRTEX_TEST_H
#define VIRTEX_TEST_H
#include <math.h>
#include <stdio.h>
#include "../model.h"

extern int tests_passed, tests_failed;

// Record one check; prints FAIL lines (and PASS lines with VERBOSE=1).
void check(int ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Compare arrays: |got - want| <= atol + rtol * |want| elementwise. Prints the first
// few values of each side and the max abs / rel difference. Returns 1 if all close.
int check_close(const char *what, const float *got, const float *want, long n,
                double rtol, double atol);
// Finite differences: a scalar function of the inputs (e.g. L = sum(out * R) of an
// op's forward), and a check of up to maxn elements of x (all of them when n <= maxn,
// else an even spread) of the analytic grad against central differences with step h.
typedef double (*loss_fn)(void *ctx);
void check_fd(const char *what, loss_fn f, void *ctx, float *x, const float *grad, long n,
              long maxn, float h, double rtol, double atol);
// The whole file, malloc'd and NUL-terminated, its size in *n; NULL if unreadable.
unsigned char *slurp(const char *path, size_t *n);
// Write n bytes to path (a test's scratch file).
void spit(const char *path, const void *data, size_t n);
// "dir/name" in one of 8 rotating static buffers.
const char *path_in(const char *dir, const char *name);
// The repository root relative to the working directory ("." or ".."), NULL when
// ./virtex is not built there.
const char *repo_root(void);
// `./virtex ARGS` (shell text) run in the repository root: exit code (-1 if it did not
// exit normally), stdout and stderr ("" when empty), captured through files in scratch.
typedef struct Run { int code; char *out, *err; } Run;
Run run_virtex(const char *scratch, const char *args);
void run_free(Run *r);
// Remove a directory and everything under it (temp dirs of the tests).
void remove_tree(const char *dir);
// Path of a fixture file under test/fixtures (works from the repo root or test/).
const char *fixture_path(const char *name);

// The test groups (each in its own test/test_*.c file).
void test_gemm(void);
void test_ops_cnn(void);
void test_ops_transformer(void);
void test_config(void);
void test_model(void);
void test_checkpoint(void);
void test_parity(void);
void test_cli(void);
void test_json(void);
void test_image(void);
void test_synth(void);
void test_tokenizer(void);
void test_loader(void);
void test_train(void);
void test_captions(void);
void test_pytorch(void);
void test_transfer(void);

#endif
