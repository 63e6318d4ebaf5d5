// test/test_cli.c — the command line (virtex.c): runs the built ./virtex as a user
// would, capturing stdout, stderr and the exit code, and checks the command table's
// help, usage errors (exit 2), config errors (exit 1, one line naming the culprit) and
// that `virtex info` prints the parameter counts the library computes in-process.
// Only tiny configs are run, so the group takes a second or two.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"

static char tmpdir[256];
static const char *root;         // the repository root, relative: "." or ".." (from test/)

static Run run(const char *args) { return run_virtex(tmpdir, args); }

// Exactly one line of text (ends with the only newline).
static int one_line(const char *s) {
    const char *nl = strchr(s, '\n');
    return s[0] && nl && nl[1] == 0;
}

// First line of s (for messages), in a rotating static buffer.
static const char *first_line(const char *s) {
    static char buf[4][256];
    static int k;
    char *p = buf[k++ & 3];
    size_t n = strcspn(s, "\n");
    if (n > 255) n = 255;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

// The number on the line "  <label> <number>" of `virtex info`'s parameter summary.
static long count_of(const char *out, const char *label) {
    char key[64];
    snprintf(key, sizeof key, "\n  %s ", label);
    const char *s = strstr(out, key);
    long v = -1;
    if (!s || sscanf(s + strlen(key), "%ld", &v) != 1) return -1;
    return v;
}

// The in-process reference: config_load(path, overrides) + model_build + counts.
static int reference_counts(const char *path, int n, char **ov, long *visual,
                            long *total) {
    Config cfg;
    Model m;
    char err[1024];
    memset(&cfg, 0, sizeof cfg);
    if (config_load(&cfg, path, n, ov, err, sizeof err) || model_build(&m, &cfg, err, sizeof err)) {
        check(0, "in-process reference for %s: %s", path, err);
        return -1;
    }
    *visual = model_param_count(&m, "visual.");
    *total = model_param_count(&m, NULL);
    model_free(&m);
    return 0;
}

// ----------------------------------------------------------------------------
// help and the command table

static void test_help(void) {
    Run bare = run(""), help = run("help"), dash = run("--help"), h = run("-h");
    check(bare.code == 0 && strstr(bare.out, "usage: virtex COMMAND") &&
          strstr(bare.out, "commands:\n") && strstr(bare.out, "\n  info ") &&
          strstr(bare.out, "\n  help ") && !bare.err[0],
          "`virtex` alone lists the commands on stdout, exit 0 (exit %d, stderr '%s')",
          bare.code, first_line(bare.err));
    check(help.code == 0 && !strcmp(help.out, bare.out) && !help.err[0],
          "`virtex help` prints the same list, exit 0 (exit %d)", help.code);
    check(dash.code == 0 && !strcmp(dash.out, bare.out) && h.code == 0 &&
          !strcmp(h.out, bare.out), "`virtex --help` and `virtex -h` print it too");
    run_free(&bare);
    run_free(&dash);
    run_free(&h);

    Run hi = run("help info"), ih = run("info --help"), ihh = run("info -h");
    check(hi.code == 0 && strstr(hi.out, "usage: virtex info [--config FILE] [KEY VALUE ...]") &&
          strstr(hi.out, "options:\n") && strstr(hi.out, "--config FILE") &&
          strstr(hi.out, "KEY VALUE") && !hi.err[0],
          "`virtex help info` prints info's usage and options, exit 0 (exit %d: %s)",
          hi.code, first_line(hi.out));
    check(ih.code == 0 && !strcmp(ih.out, hi.out) && !ih.err[0] && ihh.code == 0 &&
          !strcmp(ihh.out, hi.out), "`virtex info --help` / `-h` print the same, exit 0 "
          "(exit %d)", ih.code);
    Run ihc = run("info --config configs/small/tiny_test.yaml --help");
    check(ihc.code == 0 && !strcmp(ihc.out, hi.out),
          "--help after other options still shows the help and runs nothing");
    run_free(&ihc);
    run_free(&ih);
    run_free(&ihh);

    Run hh = run("help help");
    check(hh.code == 0 && strstr(hh.out, "usage: virtex help [COMMAND]"),
          "`virtex help help` (exit %d): %s", hh.code, first_line(hh.out));
    run_free(&hh);

    Run unk = run("frobnicate");
    check(unk.code == 2 && strstr(unk.err, "unknown command 'frobnicate'") &&
          strstr(unk.err, "commands:\n") && strstr(unk.err, "\n  info ") && !unk.out[0],
          "`virtex frobnicate`: exit 2, names the command, usage on stderr (exit %d: %s)",
          unk.code, first_line(unk.err));
    run_free(&unk);
    Run hu = run("help frobnicate");
    check(hu.code == 2 && strstr(hu.err, "unknown command 'frobnicate'") &&
          strstr(hu.err, "commands:\n") && !hu.out[0],
          "`virtex help frobnicate`: exit 2 (exit %d: %s)", hu.code, first_line(hu.err));
    run_free(&hu);
    Run hx = run("help info extra");
    check(hx.code == 2 && strstr(hx.err, "unexpected argument 'extra'") &&
          strstr(hx.err, "usage: virtex help [COMMAND]") && !hx.out[0],
          "`virtex help info extra`: exit 2, names the extra argument (exit %d: %s)",
          hx.code, first_line(hx.err));
    run_free(&hx);

    // usage errors of a command: exit 2, the complaint, then that command's usage
    Run bog = run("info --bogus");
    check(bog.code == 2 && strstr(bog.err, "unknown option '--bogus'") &&
          strstr(bog.err, "usage: virtex info [--config FILE]") &&
          strstr(bog.err, "--config FILE") && !bog.out[0],
          "`virtex info --bogus`: exit 2, names the option, shows info's usage (exit %d: %s)",
          bog.code, first_line(bog.err));
    run_free(&bog);
    Run nof = run("info --config");
    check(nof.code == 2 && strstr(nof.err, "--config") && strstr(nof.err, "FILE") &&
          strstr(nof.err, "usage: virtex info") && !nof.out[0],
          "`virtex info --config` without FILE: exit 2, names the option (exit %d: %s)",
          nof.code, first_line(nof.err));
    run_free(&nof);
    Run odd = run("info --config configs/small/tiny_test.yaml OPTIM.BATCH_SIZE");
    check(odd.code == 2 && strstr(odd.err, "'OPTIM.BATCH_SIZE'") &&
          strstr(odd.err, "no value") && !odd.out[0],
          "odd override count: exit 2, names the dangling key (exit %d: %s)", odd.code,
          first_line(odd.err));
    run_free(&odd);
    run_free(&help);
    run_free(&hi);
}

// ----------------------------------------------------------------------------
// virtex info: the numbers, overrides, config errors

static void test_info(void) {
    char cfgpath[512];
    snprintf(cfgpath, sizeof cfgpath, "%s/configs/small/tiny_test.yaml", root);
    long rv = -1, rt = -1, ov_v = -1, ov_t = -1;
    char *ov[] = {"MODEL.TEXTUAL.NAME", "transdec_prenorm::L2_H64_A2_F128"};
    if (reference_counts(cfgpath, 0, NULL, &rv, &rt) ||
        reference_counts(cfgpath, 2, ov, &ov_v, &ov_t)) return;

    Run r = run("info --config configs/small/tiny_test.yaml");
    long v = count_of(r.out, "visual"), t = count_of(r.out, "textual"),
         tot = count_of(r.out, "total");
    check(r.code == 0 && !r.err[0], "`virtex info --config tiny_test.yaml`: exit 0, quiet "
          "stderr (exit %d: %s)", r.code, first_line(r.err));
    check(tot == rt && v == rv && t == rt - rv,
          "info prints the library's counts: total %ld (want %ld), visual %ld (want %ld), "
          "textual %ld (want %ld)", tot, rt, v, rv, t, rt - rv);
    check(strstr(r.out, "transdec_postnorm::L1_H64_A2_F128") != NULL,
          "info names the config's textual head");
    run_free(&r);

    r = run("info --config configs/small/tiny_test.yaml MODEL.TEXTUAL.NAME "
            "transdec_prenorm::L2_H64_A2_F128");
    long v2 = count_of(r.out, "visual"), t2 = count_of(r.out, "textual"),
         tot2 = count_of(r.out, "total");
    check(r.code == 0 && tot2 == ov_t && v2 == ov_v && t2 == ov_t - ov_v,
          "the override reaches the model: total %ld (want %ld), textual %ld (want %ld), "
          "exit %d", tot2, ov_t, t2, ov_t - ov_v, r.code);
    check(v2 == v && t2 > t && strstr(r.out, "transdec_prenorm::L2_H64_A2_F128"),
          "two pre-norm layers: the textual count grows (%ld -> %ld), visual stays %ld",
          t, t2, v2);
    run_free(&r);

    // config errors: exit 1, one line on stderr naming what is wrong, nothing on stdout
    r = run("info --config /nonexistent.yaml");
    check(r.code == 1 && one_line(r.err) && strstr(r.err, "/nonexistent.yaml") && !r.out[0],
          "missing config file: exit 1, one line naming the file (exit %d): %s", r.code,
          first_line(r.err));
    run_free(&r);
    r = run("info --config configs/small/tiny_test.yaml NO.SUCH_KEY 3");
    check(r.code == 1 && one_line(r.err) && strstr(r.err, "NO.SUCH_KEY") && !r.out[0],
          "unknown override key: exit 1, one line naming the key (exit %d): %s", r.code,
          first_line(r.err));
    run_free(&r);
    r = run("info --config configs/small/tiny_test.yaml DATA.VOCAB_SIZE many");
    check(r.code == 1 && one_line(r.err) && strstr(r.err, "DATA.VOCAB_SIZE") && !r.out[0],
          "override of the wrong type: exit 1, names the key (exit %d): %s", r.code,
          first_line(r.err));
    run_free(&r);
    r = run("info --config configs/small/tiny_test.yaml MODEL.VISUAL.FEATURE_SIZE 100");
    check(r.code == 1 && one_line(r.err) && strstr(r.err, "FEATURE_SIZE") && !r.out[0],
          "a config the model cannot be built from: exit 1, one line (exit %d): %s", r.code,
          first_line(r.err));
    run_free(&r);

    char bad[320], args[512];
    snprintf(bad, sizeof bad, "%s/bad.yaml", tmpdir);
    FILE *f = fopen(bad, "w");
    if (!f) { check(0, "cannot write %s: %s", bad, strerror(errno)); return; }
    fputs("OPTIM:\n  BATCH_SIZE: 4\n  LR: [0.1\n", f);   // unterminated flow list, line 3
    fclose(f);
    snprintf(args, sizeof args, "info --config '%s'", bad);
    r = run(args);
    char want[400];
    snprintf(want, sizeof want, "%s:3", bad);
    check(r.code == 1 && one_line(r.err) && strstr(r.err, want) && !r.out[0],
          "malformed YAML: exit 1, one line with file:line (exit %d): %s", r.code,
          first_line(r.err));
    run_free(&r);
    unlink(bad);
}

// ----------------------------------------------------------------------------

void test_cli(void) {
    if (!(root = repo_root())) {
        check(0, "./virtex is not built (run `make test`, which builds it first)");
        return;
    }
    snprintf(tmpdir, sizeof tmpdir, "%s/virtex-cli-XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmpdir)) {
        check(0, "mkdtemp %s: %s", tmpdir, strerror(errno));
        return;
    }
    test_help();
    test_info();
    rmdir(tmpdir);
}
