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
// ---- end training

// ---- evaluation (eval.c): caption, features, eval captions|voc07|linear
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
    long iteration = 0;
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
    if (model_from_checkpoint(&m, in, NULL, 0, NULL, 0, err, sizeof err)) {
        fprintf(stderr, "virtex: %s\n", err);
        return 1;
    }
    int rc = pth_export(&m, out, fmt, iteration, err, sizeof err);
    if (rc) fprintf(stderr, "virtex: %s\n", err);
    else printf("wrote %s (%s)\n", out, format);
    model_free(&m);
    return rc ? 1 : 0;
}
// ---- end interop

// `virtex eval WHAT ...`: the evaluations, each a command of its own.
static const Command eval_commands[] = {
    // loss (training)
    // captions (evaluation)
    // voc07, linear (evaluation)
    {NULL, NULL, NULL, NULL, NULL},
};

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
    // evaluation
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
     "  --iteration N         the \"iteration\" of --format virtex (default 0)\n"},
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
