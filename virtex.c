// virtex.c — the front door: `virtex COMMAND [options]`.
//
// Each command is a function taking its arguments; the table below lists them with
// their one-line help, so `virtex help` and the dispatcher can never disagree.
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "model.h"

typedef struct Command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *args;      // synopsis of the arguments
    const char *summary;   // one line
    const char *help;      // the options, one per line
} Command;

static const Command *find_command(const char *name);
static const Command *find_eval_command(const char *name);
static void print_usage(FILE *f);

// "eval " for the evaluations (`virtex eval voc07 ...`), "" for the commands.
static const char *prefix_of(const Command *c) {
    return find_eval_command(c->name) == c ? "eval " : "";
}

// Print the command's help to f.
static void command_help(const Command *c, FILE *f) {
    fprintf(f, "usage: virtex %s%s %s\n\n%s\n", prefix_of(c), c->name, c->args, c->summary);
    if (c->help && *c->help) fprintf(f, "\noptions:\n%s", c->help);
}

// Complain about one bad argument, show the command's usage, return the exit code.
static int bad_usage(const Command *c, const char *fmt, const char *arg) {
    fprintf(stderr, "virtex %s%s: ", prefix_of(c), c->name);
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

// `virtex synth`: parse the options into SynthOptions, check them, draw the dataset.
static int cmd_synth(int argc, char **argv) {
    const Command *c = find_command("synth");
    SynthOptions o;
    synth_default_options(&o);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--out") && strcmp(a, "--images") && strcmp(a, "--size") && strcmp(a, "--seed"))
            return bad_usage(c, "unknown argument '%s'", a);
        if (i + 1 >= argc) return bad_usage(c, "option %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--out")) { o.out = v; continue; }
        char *end, msg[160];
        errno = 0;
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno || v[0] == '-' || v[0] == '+') {
            snprintf(msg, sizeof msg, "%s needs a non-negative whole number, not '%.80s'", a, v);
            return bad_usage(c, "%s", msg);
        }
        if (!strcmp(a, "--seed")) { o.seed = x; continue; }
        int *field = !strcmp(a, "--images") ? &o.images : &o.size;
        *field = x > 1000000000 ? -1 : (int)x;     // out of range either way: checked below
        if (*field < 0) {
            snprintf(msg, sizeof msg, "%s %.80s is out of range", a, v);
            return bad_usage(c, "%s", msg);
        }
    }
    char err[1024];
    if (synth_check_options(&o, err, sizeof err)) return bad_usage(c, "%s", err);
    if (synth_dataset(&o, err, sizeof err)) { fprintf(stderr, "virtex: %s\n", err); return 1; }
    return 0;
}

// `virtex vocab`: train a BPE vocabulary on captions, write PREFIX.model and .vocab.
static int cmd_vocab(int argc, char **argv) {
    const Command *c = find_command("vocab");
    const char *path = NULL, *out = NULL, *from = NULL;
    long size = 10000;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--captions") && strcmp(a, "--vocab-size") && strcmp(a, "--out") &&
            strcmp(a, "--normalizer-from"))
            return bad_usage(c, "unknown argument '%s'", a);
        if (i + 1 >= argc) return bad_usage(c, "option %s needs a value", a);
        const char *v = argv[++i];
        if (!strcmp(a, "--captions")) path = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--normalizer-from")) from = v;
        else {
            char *end;
            errno = 0;
            size = strtol(v, &end, 10);
            if (!*v || *end || errno || size < 5 || size > 1000000)
                return bad_usage(c, "--vocab-size needs an integer from 5 to 1000000, not '%s'", v);
        }
    }
    if (!path) return bad_usage(c, "%s", "--captions FILE is required");
    if (!out) return bad_usage(c, "%s", "--out PREFIX is required");
    char err[1024];
    char **caps = NULL;
    long n = 0;
    size_t plen = strlen(path);
    int json = plen >= 5 && !strcmp(path + plen - 5, ".json");
    if (json) {
        if (coco_read_captions(path, &caps, &n, err, sizeof err)) {
            fprintf(stderr, "virtex: %s\n", err);
            return 1;
        }
    } else {                       // plain text: one caption per line, normalised here
        FILE *f = fopen(path, "r");
        if (!f) { fprintf(stderr, "virtex: %s: %s\n", path, strerror(errno)); return 1; }
        char *line = NULL;
        size_t cap = 0;
        long ncap = 0;
        ssize_t got;
        while ((got = getline(&line, &cap, f)) >= 0) {
            while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = 0;
            if (n == ncap) {
                ncap = ncap ? ncap * 2 : 1024;
                caps = realloc(caps, (size_t)ncap * sizeof *caps);
                if (!caps) fatal("out of memory");
            }
            caps[n] = caption_normalize(line);
            if (!caps[n]) fatal("out of memory");
            n++;
        }
        free(line);
        int bad = ferror(f);
        fclose(f);
        if (bad) { fprintf(stderr, "virtex: %s: read error\n", path); return 1; }
    }
    Tokenizer *nf = NULL;
    int rc = 1;
    if (from && !(nf = tokenizer_load(from, err, sizeof err))) {
        fprintf(stderr, "virtex: %s\n", err);
    } else {
        VocabOptions o = {(int)size, nf, 1};
        size_t len = 0;
        unsigned char *model = vocab_train((const char *const *)caps, n, &o, &len, err, sizeof err);
        if (!model || vocab_write(out, model, len, err, sizeof err)) {
            fprintf(stderr, "virtex: %s\n", err);
        } else {
            printf("wrote %s.model and %s.vocab\n", out, out);
            rc = 0;
        }
        free(model);
    }
    tokenizer_free(nf);
    if (!json)
        for (long i = 0; i < n; i++) free(caps[i]);
    free(caps);
    return rc;
}

// One caption of `virtex tokenize`: its ids (or pieces) on one line.
static int tokenize_one(const Tokenizer *tk, const char *s, size_t n, int pieces) {
    if (pieces) {
        int k;
        char **p = tokenizer_encode_pieces(tk, s, n, &k);
        if (!p) return -1;
        for (int i = 0; i < k; i++) printf("%s%s", i ? " " : "", p[i]);
        putchar('\n');
        free(p);
        return 0;
    }
    int cap = 256, *ids = xmalloc((size_t)cap * sizeof *ids);
    int k = tokenizer_encode(tk, s, n, ids, cap);
    if (k > cap) {
        free(ids);
        ids = xmalloc((size_t)k * sizeof *ids);
        k = tokenizer_encode(tk, s, n, ids, k);
    }
    for (int i = 0; i < k; i++) printf("%s%d", i ? " " : "", ids[i]);
    if (k >= 0) putchar('\n');
    free(ids);
    return k < 0 ? -1 : 0;
}

// `virtex tokenize`: captions from the arguments (one each) or stdin (one per line).
// Options come first; the first other argument (or everything after "--") is text.
static int cmd_tokenize(int argc, char **argv) {
    const Command *c = find_command("tokenize");
    const char *path = NULL;
    int pieces = 0, first_text = argc;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--model")) {
            if (i + 1 >= argc) return bad_usage(c, "option %s needs a FILE", argv[i]);
            path = argv[++i];
        } else if (!strcmp(argv[i], "--pieces")) {
            pieces = 1;
        } else if (!strcmp(argv[i], "--")) {
            first_text = i + 1;
            break;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return bad_usage(c, "unknown option '%s'", argv[i]);
        } else {
            first_text = i;
            break;
        }
    }
    if (!path) return bad_usage(c, "%s", "--model FILE is required");
    char err[1024];
    Tokenizer *tk = tokenizer_load(path, err, sizeof err);
    if (!tk) { fprintf(stderr, "virtex: %s\n", err); return 1; }
    int rc = 0;
    if (first_text < argc) {
        for (int i = first_text; i < argc && !rc; i++)
            rc = tokenize_one(tk, argv[i], strlen(argv[i]), pieces);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t got;
        while (!rc && (got = getline(&line, &cap, stdin)) >= 0) {
            if (got > 0 && line[got - 1] == '\n') got--;
            if (got > 0 && line[got - 1] == '\r') got--;
            rc = tokenize_one(tk, line, (size_t)got, pieces);
        }
        free(line);
    }
    if (rc) fprintf(stderr, "virtex: %s: the model cannot encode this text\n", path);
    tokenizer_free(tk);
    return rc ? 1 : 0;
}

// ---- training (train.c): train, eval loss, plot

// A whole number 0..max from an option's value; -1 when it is not one.
static long parse_count(const char *v, long max) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    return !*v || *end || errno || x < 0 || x > max ? -1 : x;
}

// `virtex train`: options into TrainOptions, the rest are KEY VALUE overrides.
static int cmd_train(int argc, char **argv) {
    const Command *c = find_command("train");
    TrainOptions o = {.samples = 4};
    char **ov = xcalloc(argc + 1, sizeof(char *));
    int rc = 2;
    static const struct { const char *name; long max; } counts[] = {
        {"--checkpoint-every", 1L << 30}, {"--log-every", 1L << 30}, {"--keep", 1000000},
        {"--workers", 256}, {"--val-images", 1L << 40}, {"--samples", 1000},
        {"--stop-after", 1L << 30},
    };
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quiet")) { o.quiet = 1; continue; }
        if (strncmp(a, "--", 2)) {   // KEY VALUE
            ov[o.noverrides++] = argv[i];
            continue;
        }
        if (i + 1 >= argc) { rc = bad_usage(c, "option %s needs a value", a); goto done; }
        const char *v = argv[++i];
        if (!strcmp(a, "--config")) o.config = v;
        else if (!strcmp(a, "--out")) o.out = v;
        else if (!strcmp(a, "--resume")) o.resume = v;
        else if (!strcmp(a, "--device")) {
            if (strcmp(v, "cpu") && strcmp(v, "cuda")) { rc = bad_usage(c, "--device is cpu or cuda, not '%s'", v); goto done; }
            o.device = strcmp(v, "cpu") ? DEV_CUDA : DEV_CPU;
        } else {
            size_t k = 0;
            while (k < sizeof counts / sizeof counts[0] && strcmp(a, counts[k].name)) k++;
            if (k == sizeof counts / sizeof counts[0]) { rc = bad_usage(c, "unknown option '%s'", a); goto done; }
            long x = parse_count(v, counts[k].max);
            if (x < 0) { rc = bad_usage(c, "option needs a whole number: '%s'", v); goto done; }
            if (k == 0) o.checkpoint_every = (int)x;
            else if (k == 1) o.log_every = (int)x;
            else if (k == 2) o.keep = (int)x;
            else if (k == 3) o.workers = (int)x;
            else if (k == 4) o.val_images = x;
            else if (k == 5) o.samples = (int)x;
            else o.stop_after = (int)x;
        }
    }
    if (o.noverrides % 2) { rc = bad_usage(c, "override '%s' has no value (overrides come as KEY VALUE pairs)", ov[o.noverrides - 1]); goto done; }
    o.overrides = ov;
    rc = train_run(&o);
done:
    free(ov);
    return rc;
}

// `virtex plot RUN_DIR`
static int cmd_plot(int argc, char **argv) {
    const Command *c = find_command("plot");
    if (argc != 1 || argv[0][0] == '-') return bad_usage(c, "%s", "expected one RUN_DIR");
    char err[1536];
    if (plot_run(argv[0], err, sizeof err)) { fprintf(stderr, "virtex plot: %s\n", err); return 1; }
    printf("%s/curves.svg\n", argv[0]);
    return 0;
}
// ---- end training

// ---- evaluation (eval.c): caption, features, eval captions|voc07|linear

// The options of `caption` and `eval captions` into r (overrides: an argv-sized array
// owned by the caller). Returns 0, or the exit code of a usage error.
static int parse_caption_args(const Command *c, int argc, char **argv, CaptionRun *r,
                              char **overrides, int eval) {
    memset(r, 0, sizeof *r);
    r->overrides = overrides;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') { overrides[r->noverrides++] = argv[i]; continue; }
        if (!strcmp(a, "--keep-sos")) { r->keep_sos = 1; continue; }
        if (!strcmp(a, "--images") && !eval) {
            r->inputs = (const char *const *)argv + i + 1;
            while (i + 1 < argc && strncmp(argv[i + 1], "--", 2)) { i++; r->ninputs++; }
            if (!r->ninputs) return bad_usage(c, "%s", "--images needs a DIR or FILE");
            continue;
        }
        const char *opts[] = {"--checkpoint", "--config", "--weights", "--beam", "--nucleus",
                              "--out", "--batch", eval ? "--data" : "--attention",
                              eval ? "--split" : "", eval ? "--predictions" : "", eval ? "--limit" : ""};
        int known = 0;
        for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) known |= !strcmp(a, opts[k]);
        if (!known) return bad_usage(c, "unknown option '%s'", a);
        if (i + 1 >= argc) return bad_usage(c, "option %s needs a value", a);
        const char *v = argv[++i];
        char *end;
        errno = 0;
        if (!strcmp(a, "--checkpoint")) r->checkpoint = v;
        else if (!strcmp(a, "--config")) r->config = v;
        else if (!strcmp(a, "--out")) r->out = v;
        else if (!strcmp(a, "--attention")) r->attention = v;
        else if (!strcmp(a, "--data")) r->data = v;
        else if (!strcmp(a, "--split")) r->split = v;
        else if (!strcmp(a, "--predictions")) r->predictions = v;
        else if (!strcmp(a, "--weights")) {
            if (strcmp(v, "random")) return bad_usage(c, "--weights takes only 'random', not '%s'", v);
            r->random_weights = 1;
        } else if (!strcmp(a, "--nucleus")) {
            r->nucleus = strtof(v, &end);
            if (!*v || *end || !(r->nucleus > 0 && r->nucleus <= 1))
                return bad_usage(c, "--nucleus needs a probability in (0, 1], not '%s'", v);
        } else {
            long x = strtol(v, &end, 10);
            if (!*v || *end || errno || x < 1 || x > 1000000)
                return bad_usage(c, !strcmp(a, "--beam") ? "--beam needs a width from 1, not '%s'"
                                 : !strcmp(a, "--batch") ? "--batch needs a count from 1, not '%s'"
                                 : "--limit needs a count from 1, not '%s'", v);
            if (!strcmp(a, "--beam")) r->beam = (int)x;
            else if (!strcmp(a, "--batch")) r->batch = (int)x;
            else r->limit = x;
        }
    }
    if (r->noverrides % 2)
        return bad_usage(c, "override '%s' has no value (overrides come as KEY VALUE pairs)",
                         overrides[r->noverrides - 1]);
    if (r->beam && r->nucleus) return bad_usage(c, "%s", "--beam and --nucleus exclude each other");
    if (eval && !r->data) return bad_usage(c, "%s", "--data COCO_ROOT is required");
    if (!eval && !r->ninputs) return bad_usage(c, "%s", "--images DIR|FILE... is required");
    if (!r->predictions && !r->checkpoint && !(r->random_weights && r->config))
        return bad_usage(c, "%s", eval ? "--checkpoint CKPT (or --predictions FILE) is required"
                                       : "--checkpoint CKPT is required");
    return 0;
}

// `virtex caption`: caption images, print them, optionally results JSON and pictures.
static int cmd_caption(int argc, char **argv) {
    CaptionRun r;
    char **overrides = xcalloc(argc + 1, sizeof(char *)), err[1024];
    int rc = parse_caption_args(find_command("caption"), argc, argv, &r, overrides, 0);
    if (!rc && caption_run(&r, err, sizeof err)) { fprintf(stderr, "virtex: %s\n", err); rc = 1; }
    free(overrides);
    return rc;
}

// `virtex eval captions`: decode a COCO split (or read predictions), CIDEr-D and BLEU.
static int cmd_eval_captions(int argc, char **argv) {
    CaptionRun r;
    char **overrides = xcalloc(argc + 1, sizeof(char *)), err[1024];
    int rc = parse_caption_args(find_eval_command("captions"), argc, argv, &r, overrides, 1);
    if (!rc && eval_captions_run(&r, err, sizeof err)) { fprintf(stderr, "virtex: %s\n", err); rc = 1; }
    free(overrides);
    return rc;
}
// The options of the commands that evaluate a model (`virtex features`, `virtex eval
// loss|shapes|voc07|linear`): the model (--checkpoint, --config, --weights), each
// command's own options, KEY VALUE overrides.
typedef struct TransferArgs {
    const char *ckpt, *config, *data, *images, *out, *split;
    int random, precomputed;
    long batch, epochs, probe_batch, workers, limit, show;
    const char *probe_config;
    double lr;
    char **overrides;
    int noverrides;
} TransferArgs;

// The whole-number options: their fields and ranges.
static long *count_option(TransferArgs *a, const char *o, long *lo, long *hi) {
    static const struct { const char *name; size_t off; long lo, hi; } opts[] = {
        {"--batch-size", offsetof(TransferArgs, batch), 1, 1000000},
        {"--epochs", offsetof(TransferArgs, epochs), 1, 1000000},
        {"--probe-batch-size", offsetof(TransferArgs, probe_batch), 1, 1000000},
        {"--workers", offsetof(TransferArgs, workers), 0, 256},
        {"--limit", offsetof(TransferArgs, limit), 0, 1L << 40},
        {"--show", offsetof(TransferArgs, show), 0, 100000},
    };
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++)
        if (!strcmp(o, opts[k].name)) {
            *lo = opts[k].lo;
            *hi = opts[k].hi;
            return (long *)((char *)a + opts[k].off);
        }
    return NULL;
}

// Parse argv into a; `allowed` lists the command's own options (" --data --epochs ").
static int transfer_args(const Command *c, int argc, char **argv, const char *allowed, TransferArgs *a) {
    a->overrides = xcalloc(argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] != '-' || o[1] != '-') { a->overrides[a->noverrides++] = argv[i]; continue; }
        char key[64];
        snprintf(key, sizeof key, " %.60s ", o);
        int common = strstr(" --checkpoint --config --weights ", key) != NULL;
        if (!common && !strstr(allowed, key)) return bad_usage(c, "unknown option '%s'", o);
        if (!strcmp(o, "--precomputed")) { a->precomputed = 1; continue; }
        if (i + 1 >= argc) return bad_usage(c, "option %s needs a value", o);
        const char *v = argv[++i];
        if (!strcmp(o, "--checkpoint")) a->ckpt = v;
        else if (!strcmp(o, "--config")) a->config = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--probe-config")) a->probe_config = v;
        else if (!strcmp(o, "--images")) a->images = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--split")) a->split = v;
        else if (!strcmp(o, "--weights")) {
            if (strcmp(v, "random") && strcmp(v, "checkpoint"))
                return bad_usage(c, "--weights is 'checkpoint' or 'random', not '%s'", v);
            a->random = !strcmp(v, "random");
        } else if (!strcmp(o, "--lr")) {
            char *end;
            a->lr = strtod(v, &end);
            if (!*v || *end || !(a->lr > 0 && a->lr < 1e3)) return bad_usage(c, "--lr needs a positive number, not '%s'", v);
        } else {
            long lo = 0, hi = 0, *field = count_option(a, o, &lo, &hi);
            char *end;
            errno = 0;
            long x = strtol(v, &end, 10);
            if (!*v || *end || errno || x < lo || x > hi) {
                char msg[160];
                snprintf(msg, sizeof msg, "%s needs a whole number from %ld to %ld, not '%.60s'", o, lo, hi, v);
                return bad_usage(c, "%s", msg);
            }
            *field = x;
        }
    }
    if (a->noverrides % 2)
        return bad_usage(c, "override '%s' has no value (overrides come as KEY VALUE pairs)",
                         a->overrides[a->noverrides - 1]);
    if (!a->ckpt && !(a->random && a->config))
        return bad_usage(c, "%s", "--checkpoint CKPT is required (or --weights random --config FILE)");
    return 0;
}

// The model to evaluate, as the arguments ask.
static int transfer_model(const TransferArgs *a, Model *m) {
    char err[1024];
    if (model_from_checkpoint(m, a->ckpt, a->config, a->noverrides, a->overrides, a->random, err, sizeof err)) {
        fprintf(stderr, "virtex: %s\n", err);
        return 1;
    }
    return 0;
}

// `virtex eval loss`: the validation loss of each direction over a whole split.
static int cmd_eval_loss(int argc, char **argv) {
    TransferArgs a = {0};
    Model m;
    int rc = transfer_args(find_eval_command("loss"), argc, argv, " --split --workers ", &a);
    if (rc || (rc = transfer_model(&a, &m))) { free(a.overrides); return rc; }
    free(a.overrides);
    const char *split = a.split ? a.split : "val";
    EvalLoss v;
    char err[2048];
    double t0 = now_seconds();
    rc = eval_loss(&m, split, 0, (int)a.workers, &v, err, sizeof err);
    if (rc) fprintf(stderr, "virtex eval loss: %s\n", err);
    else {
        printf("%s split of %s: %ld images, %ld target tokens, %.1fs\n", split, m.cfg.DATA.ROOT,
               v.images, v.tokens, now_seconds() - t0);
        printf("loss forward  %.6f\nloss backward %.6f\nloss total    %.6f\n", v.forward, v.backward, v.total);
    }
    model_free(&m);
    return rc ? 1 : 0;
}

// `virtex eval shapes`: how well a model's captions name the synthetic shapes.
static int cmd_eval_shapes(int argc, char **argv) {
    TransferArgs a = {.show = 12};
    Model m;
    int rc = transfer_args(find_eval_command("shapes"), argc, argv, " --limit --show ", &a);
    if (rc || (rc = transfer_model(&a, &m))) { free(a.overrides); return rc; }
    free(a.overrides);
    char marker[CFG_STR + 16];
    snprintf(marker, sizeof marker, "%s/synth.txt", m.cfg.DATA.ROOT);
    if (access(marker, R_OK) != 0) {
        fprintf(stderr, "virtex eval shapes: %s is not a shapes dataset (no synth.txt; make one with virtex synth)\n",
                m.cfg.DATA.ROOT);
        model_free(&m);
        return 1;
    }
    printf("greedy caption  |  a reference caption\n");
    double f = caption_report(&m, (int)a.show, a.limit, 1, 0);
    model_free(&m);
    return f < 0 ? 1 : 0;
}

// `virtex features`: pooled layer4 features of every image under DIR as .npy + .txt.
static int cmd_features(int argc, char **argv) {
    const Command *c = find_command("features");
    TransferArgs a = {0};
    int rc = transfer_args(c, argc, argv, " --images --out --batch-size ", &a);
    if (!rc && !a.images) rc = bad_usage(c, "%s", "--images DIR is required");
    if (!rc && !a.out) rc = bad_usage(c, "%s", "--out FILE.npy is required");
    Model m;
    if (rc || (rc = transfer_model(&a, &m))) { free(a.overrides); return rc; }
    char err[1024];
    long n = 0;
    char **names = list_images(a.images, &n, err, sizeof err);
    char **paths = NULL, *txt = NULL;
    float *f = NULL;
    rc = 1;
    if (!names) { fprintf(stderr, "virtex: %s\n", err); goto done; }
    paths = xmalloc(n * sizeof *paths);
    for (long i = 0; i < n; i++) {
        paths[i] = xmalloc(strlen(a.images) + strlen(names[i]) + 2);
        sprintf(paths[i], "%s/%s", a.images, names[i]);
    }
    int S, R, C = m.cnn.out_channels;
    downstream_sizes(&m.cfg, &S, &R);
    TransformPipeline tp;
    const char val[3][64] = {"smallest_resize", "center_crop", "normalize"};
    if (transform_parse(&tp, val, 3, S, R, err, sizeof err)) { fprintf(stderr, "virtex: %s\n", err); goto done; }
    f = xmalloc((size_t)n * C * sizeof *f);
    FeatureOptions fo = {&tp, 0, (int)a.batch, 0, "features"};
    if (features_extract(&m, (const char *const *)paths, n, &fo, f, err, sizeof err) ||
        npy_write(a.out, f, n, C, err, sizeof err)) {
        fprintf(stderr, "virtex: %s\n", err);
        goto done;
    }
    size_t len = strlen(a.out);                    // feats.npy -> feats.txt: the names in order
    txt = xmalloc(len + 5);
    strcpy(txt, a.out);
    if (len >= 4 && !strcmp(txt + len - 4, ".npy")) txt[len - 4] = 0;
    strcat(txt, ".txt");
    AtomicFile af;
    if (atomic_open(&af, txt)) { fprintf(stderr, "virtex: %s: cannot write: %s\n", txt, strerror(errno)); goto done; }
    for (long i = 0; i < n; i++) fprintf(af.f, "%s\n", names[i]);
    if (atomic_commit(&af)) { fprintf(stderr, "virtex: %s: write failed\n", txt); goto done; }
    printf("wrote %s (%ld x %d float32, %s weights, resize %d, crop %d) and %s\n", a.out, n, C,
           a.random ? "random" : "checkpoint", R, S, txt);
    rc = 0;
done:
    free(txt);
    free(f);
    free_strings(paths, paths ? n : 0);
    free_strings(names, n);
    model_free(&m);
    free(a.overrides);
    return rc;
}

// `virtex eval voc07` and `virtex eval linear`.
static int eval_transfer(const char *what, int argc, char **argv) {
    const Command *c = find_eval_command(what);
    int linear = !strcmp(what, "linear");
    TransferArgs a = {0};
    a.epochs = 100;
    a.probe_batch = 256;
    a.lr = 0.3;
    int rc = transfer_args(c, argc, argv, linear ? " --data --epochs --probe-batch-size --lr --precomputed --probe-config --batch-size "
                                                 : " --data --batch-size ", &a);
    if (!rc && !a.data) rc = bad_usage(c, "%s", linear ? "--data IMAGENET_ROOT is required" : "--data VOC2007_ROOT is required");
    long iterations = 0;
    if (!rc && a.probe_config) {   // the probe's batch size, LR and length from a downstream config
        Config d;
        char msg[1024];
        if (config_load(&d, a.probe_config, 0, NULL, msg, sizeof msg)) {
            fprintf(stderr, "virtex: %s\n", msg);
            rc = 1;
        } else {
            a.probe_batch = d.OPTIM.BATCH_SIZE;
            a.lr = d.OPTIM.LR;
            iterations = d.OPTIM.NUM_ITERATIONS;
        }
    }
    Model m;
    if (rc || (rc = transfer_model(&a, &m))) { free(a.overrides); return rc; }
    TransferOptions o = {(int)a.batch, a.random, 0, (int)a.epochs, (int)a.probe_batch, a.lr,
                         a.precomputed, (uint64_t)m.cfg.RANDOM_SEED, iterations};
    char err[1024];
    double r[2];
    rc = linear ? eval_linear(&m, a.data, &o, r, stdout, err, sizeof err)
                : eval_voc07(&m, a.data, &o, r, stdout, err, sizeof err);
    if (rc) fprintf(stderr, "virtex: %s\n", err);
    model_free(&m);
    free(a.overrides);
    return rc ? 1 : 0;
}

static int cmd_eval_voc07(int argc, char **argv) { return eval_transfer("voc07", argc, argv); }
static int cmd_eval_linear(int argc, char **argv) { return eval_transfer("linear", argc, argv); }

// ---- end evaluation

// ---- PyTorch interop (pytorch.c): import, export

// `virtex import FILE.pth --out CKPT [--config FILE] [--partial PREFIXES] [KEY VALUE ...]`:
// a torch.save state dict onto the model the config describes, saved as a checkpoint.
static int cmd_import(int argc, char **argv) {
    const Command *c = find_command("import");
    const char *in = NULL, *out = NULL, *cfgpath = NULL, *partial = NULL;
    char **overrides = xcalloc((size_t)argc + 1, sizeof *overrides);
    int n = 0, rc = 1;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--out") || !strcmp(a, "--config") || !strcmp(a, "--partial")) {
            if (i + 1 >= argc) { free(overrides); return bad_usage(c, "option %s needs a value", a); }
            const char *v = argv[++i];
            if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--config")) cfgpath = v;
            else partial = v;
        } else if (a[0] == '-' && a[1] == '-') {
            free(overrides);
            return bad_usage(c, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            overrides[n++] = argv[i];
        }
    }
    if (!in || !out || n % 2) {
        free(overrides);
        return bad_usage(c, "%s", !in ? "FILE.pth is required" : !out ? "--out CKPT is required"
                                   : "overrides come as KEY VALUE pairs");
    }
    char err[2048];
    Config cfg;
    TensorFile tf = {0};
    Model m;
    int built = 0;
    if (cfgpath ? config_load(&cfg, cfgpath, n, overrides, err, sizeof err) : 0) goto fail;
    if (!cfgpath) {
        config_defaults(&cfg);
        for (int i = 0; i < n; i += 2)
            if (config_override(&cfg, overrides[i], overrides[i + 1], err, sizeof err)) goto fail;
    }
    if (pth_read_state(&tf, in, err, sizeof err)) goto fail;
    // absent tensors (--partial) start from the config's initialisation, as for training
    if ((partial ? model_build : model_build_layout)(&m, &cfg, err, sizeof err)) goto fail;
    built = 1;
    char msg[1800];
    if (pth_import_state(&m, &tf, partial, stdout, msg, sizeof msg)) {
        snprintf(err, sizeof err, "%s: %s", in, msg);
        goto fail;
    }
    if (checkpoint_save(&m, out, err, sizeof err)) goto fail;
    printf("wrote %s\n", out);
    rc = 0;
fail:
    if (rc) fprintf(stderr, "virtex: %s\n", err);
    if (built) model_free(&m);
    tensorfile_free(&tf);
    free(overrides);
    return rc;
}

// `virtex export CKPT --format torchvision|virtex|detectron2 --out FILE [--iteration N]`.
static int cmd_export(int argc, char **argv) {
    const Command *c = find_command("export");
    const char *in = NULL, *out = NULL, *format = NULL;
    long iteration = -1;                     // -1: the checkpoint's trainer.iteration, or 0
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--out") || !strcmp(a, "--format") || !strcmp(a, "--iteration")) {
            if (i + 1 >= argc) return bad_usage(c, "option %s needs a value", a);
            const char *v = argv[++i];
            if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--format")) format = v;
            else {
                char *end;
                errno = 0;
                iteration = strtol(v, &end, 10);
                if (!*v || *end || errno || iteration < 0)
                    return bad_usage(c, "--iteration needs a non-negative integer, not '%s'", v);
            }
        } else if (a[0] == '-' && a[1] == '-') {
            return bad_usage(c, "unknown option '%s'", a);
        } else if (!in) {
            in = a;
        } else {
            return bad_usage(c, "unexpected argument '%s'", a);
        }
    }
    if (!in) return bad_usage(c, "%s", "CKPT is required");
    if (!out) return bad_usage(c, "%s", "--out FILE is required");
    PthFormat fmt;
    if (!format) return bad_usage(c, "%s", "--format torchvision|virtex|detectron2 is required");
    if (!strcmp(format, "torchvision")) fmt = PTH_TORCHVISION;
    else if (!strcmp(format, "virtex")) fmt = PTH_VIRTEX;
    else if (!strcmp(format, "detectron2")) fmt = PTH_DETECTRON2;
    else return bad_usage(c, "unknown --format '%s' (torchvision, virtex or detectron2)", format);
    char err[2048];
    Model m;
    TensorFile tf;                           // read once: the model and its iteration
    Config cfg;
    if (tensorfile_read(&tf, in, err, sizeof err) || checkpoint_config(&cfg, &tf, in, 0, NULL, err, sizeof err) ||
        model_build_layout(&m, &cfg, err, sizeof err)) {
        fprintf(stderr, "virtex: %s\n", err);
        tensorfile_free(&tf);
        return 1;
    }
    if (checkpoint_load_state(&m, &tf, in, err, sizeof err)) {
        fprintf(stderr, "virtex: %s\n", err);
        model_free(&m);
        tensorfile_free(&tf);
        return 1;
    }
    const NamedTensor *it = tensorfile_find(&tf, "trainer.iteration");
    if (iteration < 0)
        iteration = it && it->dtype == DT_I64 && it->numel == 1 ? (long)*(int64_t *)it->data : 0;
    tensorfile_free(&tf);
    int rc = pth_export(&m, out, fmt, iteration, err, sizeof err);
    if (rc) fprintf(stderr, "virtex: %s\n", err);
    else printf("wrote %s (%s)\n", out, format);
    model_free(&m);
    return rc ? 1 : 0;
}
// ---- end interop

// `virtex eval WHAT ...`: the evaluations, each a command of its own.
static const Command eval_commands[] = {
    {"loss", cmd_eval_loss, "--checkpoint CKPT [--config FILE] [--split val] [--workers N] [KEY VALUE ...]",
     "Validation loss of each direction over a whole split (deterministic).",
     "  --checkpoint CKPT  a checkpoint (its stored config is used unless --config is given)\n"
     "  --split NAME       COCO split under DATA.ROOT (default val)\n"
     "  KEY VALUE          override a config key, e.g. DATA.ROOT /data/coco\n"},
    {"shapes", cmd_eval_shapes, "--checkpoint CKPT [--limit N] [--show N] [--weights random] [KEY VALUE ...]",
     "On the shapes dataset: the fraction of objects a model's greedy captions name with colour and shape,\n"
     "and the same with every image given the caption of the next one (the chance level).",
     "  --checkpoint CKPT  a model trained on a `virtex synth` dataset (DATA.ROOT)\n"
     "  --limit N          the first N val images (default all)\n"
     "  --show N           captions printed next to a reference (default 12)\n"},
    // captions (evaluation)
    {"captions", cmd_eval_captions,
     "(--checkpoint CKPT [--config FILE] [--weights random] | --predictions FILE) --data COCO_ROOT\n"
     "       [--split val] [--beam N | --nucleus P] [--out preds.json] [--limit N] [KEY VALUE ...]",
     "Caption a COCO split and score it: CIDEr-D and BLEU-1..4 as the COCO caption evaluation.",
     "  --checkpoint CKPT  the model (its stored config, or --config FILE, then KEY VALUE)\n"
     "  --weights random   random initial weights instead of the checkpoint's\n"
     "  --predictions FILE score this COCO results JSON instead of decoding\n"
     "  --data COCO_ROOT   annotations/captions_SPLIT2017.json and SPLIT2017/ images\n"
     "  --split S          val (default) or train\n"
     "  --beam N           beam search of width N (1: greedy); default MODEL.DECODER.*\n"
     "  --nucleus P        nucleus sampling with top-p P (seeded by RANDOM_SEED)\n"
     "  --keep-sos         beam/greedy: keep [SOS] in front of the partial caption at every\n"
     "                     step (the original's beam search drops it after the first step)\n"
     "  --out FILE         also write the decoded captions as COCO results JSON\n"
     "  --limit N          only the first N images of the split\n"
     "  --batch N          images per forward pass (default 16)\n"},
    // voc07, linear (evaluation)
    {"voc07", cmd_eval_voc07, "--checkpoint CKPT --data VOC2007_ROOT [options] [KEY VALUE ...]",
     "VOC07 SVM probe: per-class linear SVMs on frozen pooled features; per-class AP and mAP.",
     "  --checkpoint CKPT  the model (its stored config; KEY VALUE pairs override it)\n"
     "  --config FILE      build from this config instead of the checkpoint's\n"
     "  --weights random   a randomly initialised backbone (RANDOM_SEED): the paper's baseline\n"
     "  --data DIR         VOC2007 root: ImageSets/Main/CLASS_{trainval,test}.txt, JPEGImages/\n"
     "  --batch-size N     images per CNN forward (default 64)\n"
     "  protocol: resize S*256/224, center crop S = DATA.IMAGE_CROP_SIZE, L2-normalised\n"
     "  features; squared-hinge SVM, positive weight 2, C in {0.01,0.1,1,10} by 3-fold AP\n"},
    {"linear", cmd_eval_linear, "--checkpoint CKPT --data IMAGENET_ROOT [options] [KEY VALUE ...]",
     "ImageNet linear probe on the frozen CNN: top-1 and top-5 on val.",
     "  --checkpoint CKPT  the model (its stored config; KEY VALUE pairs override it)\n"
     "  --config FILE      build from this config instead of the checkpoint's\n"
     "  --weights random   a randomly initialised backbone (RANDOM_SEED): the paper's baseline\n"
     "  --data DIR         ImageNet root: train/CLASS/*.jpg, val/CLASS/*.jpg\n"
     "  --epochs N         default 100 (the paper)\n"
     "  --probe-batch-size N  SGD batch, default 256\n"
     "  --lr X             default 0.3 (cosine to 0, momentum 0.9, no weight decay)\n"
     "  --probe-config F   batch size, LR and length from a downstream config's OPTIM.BATCH_SIZE,\n"
     "                     OPTIM.LR, OPTIM.NUM_ITERATIONS (configs/downstream/imagenet_clf.yaml:\n"
     "                     256, 0.3, 500500 iterations = 100 ImageNet epochs), in place of\n"
     "                     --epochs, --probe-batch-size and --lr\n"
     "  --precomputed      train on center-crop features computed once (fast path, no\n"
     "                     augmentation; the paper uses random resized crops 8-100% + flip)\n"
     "  --batch-size N     images per CNN forward (default 64)\n"},
    {NULL, NULL, NULL, NULL, NULL},
};

static const Command *find_eval_command(const char *name) {
    for (const Command *e = eval_commands; e->name; e++)
        if (!strcmp(e->name, name)) return e;
    return NULL;
}

static int cmd_eval(int argc, char **argv) {
    const Command *c = find_command("eval");
    if (argc >= 1)
        for (const Command *e = eval_commands; e->name; e++)
            if (!strcmp(argv[0], e->name)) {
                if (argc >= 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
                    command_help(e, stdout);
                    return 0;
                }
                return e->run(argc - 1, argv + 1);
            }
    if (argc >= 1 && strcmp(argv[0], "--help") && strcmp(argv[0], "-h"))
        fprintf(stderr, "virtex eval: unknown evaluation '%s'\n\n", argv[0]);
    FILE *f = argc >= 1 && (!strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) ? stdout : stderr;
    fprintf(f, "usage: virtex eval WHAT [options]\n\n%s\n\nevaluations:\n", c->summary);
    for (const Command *e = eval_commands; e->name; e++)
        fprintf(f, "  %-10s %s\n", e->name, e->summary);
    return f == stdout ? 0 : 2;
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
    {"synth", cmd_synth, "[--out DIR] [--images N] [--size PX] [--seed S]",
     "Draw the synthetic shapes dataset: COCO captions, VOC07 and ImageNet layouts (JPEG).",
     "  --out DIR       output directory (default data/shapes; refused if it holds other files)\n"
     "  --images N      COCO train images (default 10000; val N/10, VOC N/5 + N/5,\n"
     "                  ImageNet N/100 + N/500 per class of 35)\n"
     "  --size PX       square image side in pixels, 32..512 (default 64)\n"
     "  --seed S        random seed (default 0); the files depend on it only\n"},
    {"vocab", cmd_vocab, "--captions FILE --out PREFIX [--vocab-size N] [--normalizer-from MODEL]",
     "Train a SentencePiece BPE vocabulary on captions: PREFIX.model and PREFIX.vocab.",
     "  --captions FILE  COCO captions JSON (captions_train2017.json), or text with one\n"
     "                   caption per line; captions are lower-cased, accents stripped\n"
     "  --out PREFIX     writes PREFIX.model (loads in Python sentencepiece) and PREFIX.vocab\n"
     "  --vocab-size N   pieces in all, incl. <unk> [SOS] [EOS] [MASK] (default 10000)\n"
     "  --normalizer-from MODEL  copy this .model's normalizer (e.g. the full nmt_nfkc of\n"
     "                   a sentencepiece-trained model); default: built-in nmt_nfkc_subset\n"},
    {"tokenize", cmd_tokenize, "--model FILE [--pieces] [TEXT ...]",
     "Encode captions with a SentencePiece BPE model, exactly as sentencepiece's EncodeAsIds.",
     "  --model FILE     a .model file (BPE; e.g. VirTex's coco_10k.model)\n"
     "  --pieces         print the pieces instead of the ids\n"
     "  TEXT ...         each argument is one caption; none: one caption per stdin line\n"
     "                   (the model's own normalizer applies, nothing else)\n"},
    // training
    {"train", cmd_train, "[--config FILE] [--out DIR] [--resume CKPT] [--device cpu|cuda] [KEY VALUE ...]",
     "Pretrain VirTex; with no arguments, a small model on the built-in shapes dataset (minutes on a CPU).",
     "  --config FILE         a VirTex YAML config (default " "configs/small/bicaptioning_R_50W8_L1_H128.yaml;\n"
     "                        its dataset and vocabulary are made in data/shapes when missing)\n"
     "  --out DIR             run directory: checkpoints, metrics.jsonl, curves.svg\n"
     "                        (default runs/CONFIG_NAME)\n"
     "  --resume CKPT         continue a run exactly where the checkpoint left it\n"
     "  --device cpu|cuda     where to train (default cpu)\n"
     "  --checkpoint-every N  validate and checkpoint every N iterations\n"
     "                        (default min(2000, NUM_ITERATIONS / 10))\n"
     "  --keep K              periodic checkpoints kept (default 3; plus checkpoint_best.ckpt)\n"
     "  --workers N           data loading threads (default: the number of cores)\n"
     "  --val-images N        images of the val split per validation (default all)\n"
     "  --samples N           greedy captions printed per validation (default 4)\n"
     "  --log-every N         progress line / metrics every N iterations (default 20)\n"
     "  --stop-after N        stop after N iterations with a checkpoint (resume later)\n"
     "  --quiet               no live progress line\n"
     "  KEY VALUE             override a config key, e.g. OPTIM.BATCH_SIZE 64\n"},
    {"plot", cmd_plot, "RUN_DIR", "Draw RUN_DIR/curves.svg: train and val loss, learning rates.", ""},
    // evaluation
    {"caption", cmd_caption,
     "--checkpoint CKPT --images DIR|FILE... [--beam N | --nucleus P] [--out preds.json]\n"
     "       [--attention DIR] [--config FILE] [--weights random] [KEY VALUE ...]",
     "Caption images: one 'file<TAB>caption' line each; COCO results JSON; attention maps.",
     "  --checkpoint CKPT  the model (its stored config, or --config FILE, then KEY VALUE)\n"
     "  --images DIR|FILE  image files, or directories of them (sorted by name); takes\n"
     "                     every argument up to the next --option (KEY VALUE go before it)\n"
     "  --beam N           beam search of width N (1: greedy); default MODEL.DECODER.*\n"
     "  --nucleus P        nucleus sampling with top-p P (seeded by RANDOM_SEED)\n"
     "  --keep-sos         beam/greedy: keep [SOS] in front of the partial caption at every\n"
     "                     step (the original's beam search drops it after the first step)\n"
     "  --out FILE         COCO results JSON; image_id = the last number in the file name\n"
     "  --attention DIR    per image DIR/NAME.png: where the model looked for each word\n"
     "  --weights random   random initial weights instead of the checkpoint's\n"
     "  --batch N          images per forward pass (default 16)\n"},
    {"features", cmd_features, "--checkpoint CKPT --images DIR --out FEATS.npy [options] [KEY VALUE ...]",
     "Global-average-pooled layer4 features of every image under DIR, as a NumPy .npy file.",
     "  --checkpoint CKPT  the model (its stored config; KEY VALUE pairs override it)\n"
     "  --config FILE      build from this config instead of the checkpoint's\n"
     "  --weights random   a randomly initialised backbone (RANDOM_SEED)\n"
     "  --images DIR       images under DIR, recursively, in name order\n"
     "  --out FEATS.npy    (N, C) float32; FEATS.txt gets the N file names (relative to DIR)\n"
     "  --batch-size N     images per CNN forward (default 64)\n"
     "  images: resize S*256/224, center crop S = DATA.IMAGE_CROP_SIZE; features not normalised\n"},
    // interop
    {"import", cmd_import, "FILE.pth --out CKPT [--config FILE] [--partial PREFIXES] [KEY VALUE ...]",
     "Import a torch.save checkpoint (VirTex model zoo, torchvision ResNet, Detectron2 backbone).",
     "  FILE.pth          written by torch.save: {\"model\": state_dict, ...}, {\"state_dict\": ...}\n"
     "                    or a plain state_dict; a \"module.\" prefix is stripped\n"
     "  --out CKPT        the virtex checkpoint to write (config + every state entry)\n"
     "  --config FILE     the VirTex YAML config of the model (default: the built-in defaults);\n"
     "                    checked against the tensors' shapes\n"
     "  --partial P       prefixes that may be absent, e.g. 'textual.,backward_textual.' for a\n"
     "                    torchvision ResNet; they keep the config's initialisation\n"
     "  KEY VALUE         override a config key\n"},
    {"export", cmd_export, "CKPT --format torchvision|virtex|detectron2 --out FILE [--iteration N]",
     "Export a checkpoint as a torch.save file for torchvision, VirTex or Detectron2.",
     "  --format torchvision  the ResNet's state_dict (no fc: load into a model with\n"
     "                        fc = nn.Identity(), as VirTex's backbone)\n"
     "  --format virtex       {\"model\": state_dict, \"iteration\": N}, the original's layout\n"
     "  --format detectron2   {\"model\": backbone renamed stem./res2..5, \"__author__\",\n"
     "                        \"matching_heuristics\": True}, for DetectionCheckpointer (.pth)\n"
     "  --iteration N         the \"iteration\" of --format virtex (default: the\n"
     "                        training checkpoint's iteration, else 0)\n"},
    {"eval", cmd_eval, "WHAT [options]", "Evaluate a checkpoint (virtex eval --help lists the evaluations).", ""},
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
    if (help && c->run != cmd_eval) command_help(c, stdout);   // eval: per evaluation
    else rc = c->run(argc - 2, argv + 2);
    if (fflush(stdout) || ferror(stdout)) {   // e.g. a full disk: never exit 0 on lost output
        fprintf(stderr, "virtex: error writing the output: %s\n", strerror(errno));
        return 1;
    }
    return rc;
}
