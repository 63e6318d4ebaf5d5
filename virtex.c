// virtex.c — the front door: `virtex COMMAND [options]`.
//
// Each command is a function taking its arguments; the table below lists them with
// their one-line help, so `virtex help` and the dispatcher can never disagree.
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

typedef struct Command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *args;      // synopsis of the arguments
    const char *summary;   // one line
    const char *help;      // the options, one per line
} Command;

static const Command *find_command(const char *name);
static void print_usage(FILE *f);

// Print the command's help to f.
static void command_help(const Command *c, FILE *f) {
    fprintf(f, "usage: virtex %s %s\n\n%s\n", c->name, c->args, c->summary);
    if (c->help && *c->help) fprintf(f, "\noptions:\n%s", c->help);
}

// Complain about one bad argument, show the command's usage, return the exit code.
static int bad_usage(const Command *c, const char *fmt, const char *arg) {
    fprintf(stderr, "virtex %s: ", c->name);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n");
    command_help(c, stderr);
    return 2;
}

// Parse "--config FILE [KEY VALUE ...]" (the common tail of most commands) into cfg.
// Unknown "--options" are an error; returns 0, or the exit code to return.
static int parse_config_args(const Command *c, int argc, char **argv, Config *cfg) {
    const char *path = NULL;
    char **overrides = xcalloc(argc + 1, sizeof(char *));
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) { free(overrides); return bad_usage(c, "option %s needs a FILE", argv[i]); }
            path = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            free(overrides);
            return bad_usage(c, "unknown option '%s'", argv[i]);
        } else {
            overrides[n++] = argv[i];
        }
    }
    if (n % 2) {
        int code = bad_usage(c, "override '%s' has no value (overrides come as KEY VALUE pairs)",
                             overrides[n - 1]);
        free(overrides);
        return code;
    }
    char err[1024];
    int rc;
    if (path) rc = config_load(cfg, path, n, overrides, err, sizeof err);
    else {
        config_defaults(cfg);
        rc = 0;
        for (int i = 0; i < n && !rc; i += 2) rc = config_override(cfg, overrides[i], overrides[i + 1], err, sizeof err);
    }
    free(overrides);
    if (rc) { fprintf(stderr, "virtex: %s\n", err); return 1; }
    return 0;
}

// ----------------------------------------------------------------------------
// the commands

static int cmd_info(int argc, char **argv) {
    Config cfg;
    int rc = parse_config_args(find_command("info"), argc, argv, &cfg);
    if (rc) return rc;
    Model m;
    char err[1024];
    if (model_build_layout(&m, &cfg, err, sizeof err)) { fprintf(stderr, "virtex: %s\n", err); return 1; }
    model_print_info(&m, stdout);   // shapes and counts need no initialised weights
    model_free(&m);
    return 0;
}

static int cmd_help(int argc, char **argv) {
    if (argc > 1) return bad_usage(find_command("help"), "unexpected argument '%s'", argv[1]);
    if (argc > 0) {
        const Command *c = find_command(argv[0]);
        if (!c) {
            fprintf(stderr, "virtex: unknown command '%s'\n\n", argv[0]);
            print_usage(stderr);
            return 2;
        }
        command_help(c, stdout);
        return 0;
    }
    print_usage(stdout);
    return 0;
}

static const Command commands[] = {
    {"info", cmd_info, "[--config FILE] [KEY VALUE ...]",
     "Print the model's layers with output shapes, parameter counts and forward FLOPs per image.",
     "  --config FILE   a VirTex YAML config (default: the built-in defaults, R-50 + L1_H2048)\n"
     "  KEY VALUE       override a config key, e.g. MODEL.TEXTUAL.NAME transdec_prenorm::L2_H512_A8_F2048\n"},
    {"help", cmd_help, "[COMMAND]", "List the commands, or show one command's options.", ""},
};

static const Command *find_command(const char *name) {
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(commands[i].name, name)) return &commands[i];
    return NULL;
}

static void print_usage(FILE *f) {
    fprintf(f, "virtex.c — VirTex (caption pretraining of a ResNet with a transformer) in C\n\n"
               "usage: virtex COMMAND [options]      (virtex COMMAND --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char **argv) {
    if (argc < 2) { print_usage(stdout); return 0; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return cmd_help(0, NULL);
    const Command *c = find_command(argv[1]);
    if (!c) {
        fprintf(stderr, "virtex: unknown command '%s'\n\n", argv[1]);
        print_usage(stderr);
        return 2;
    }
    int rc = 0;
    int help = 0;
    for (int i = 2; i < argc; i++) help |= !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
    if (help) command_help(c, stdout);
    else rc = c->run(argc - 2, argv + 2);
    if (fflush(stdout) || ferror(stdout)) {   // e.g. a full disk: never exit 0 on lost output
        fprintf(stderr, "virtex: error writing the output: %s\n", strerror(errno));
        return 1;
    }
    return rc;
}
