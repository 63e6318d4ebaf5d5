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
static const Command *find_eval_command(const char *name);
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
// The options shared by `virtex features` and `virtex eval voc07|linear`: the model
// (--checkpoint, --config, --weights), a few numbers, KEY VALUE overrides.
typedef struct TransferArgs {
    const char *ckpt, *config, *data, *images, *out;
    int random, precomputed;
    long batch, epochs, probe_batch;
    double lr;
    char **overrides;
    int noverrides;
} TransferArgs;

// Parse argv into a; `allowed` lists the command's own options (" --data --epochs ").
static int transfer_args(const Command *c, int argc, char **argv, const char *allowed, TransferArgs *a) {
    a->overrides = xcalloc(argc + 1, sizeof(char *));
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (o[0] != '-' || o[1] != '-') { a->overrides[a->noverrides++] = argv[i]; continue; }
        char key[64];
        snprintf(key, sizeof key, " %.60s ", o);
        int common = strstr(" --checkpoint --config --weights --batch-size ", key) != NULL;
        if (!common && !strstr(allowed, key)) return bad_usage(c, "unknown option '%s'", o);
        if (!strcmp(o, "--precomputed")) { a->precomputed = 1; continue; }
        if (i + 1 >= argc) return bad_usage(c, "option %s needs a value", o);
        const char *v = argv[++i];
        if (!strcmp(o, "--checkpoint")) a->ckpt = v;
        else if (!strcmp(o, "--config")) a->config = v;
        else if (!strcmp(o, "--data")) a->data = v;
        else if (!strcmp(o, "--images")) a->images = v;
        else if (!strcmp(o, "--out")) a->out = v;
        else if (!strcmp(o, "--weights")) {
            if (strcmp(v, "random") && strcmp(v, "checkpoint"))
                return bad_usage(c, "--weights is 'checkpoint' or 'random', not '%s'", v);
            a->random = !strcmp(v, "random");
        } else if (!strcmp(o, "--lr")) {
            char *end;
            a->lr = strtod(v, &end);
            if (!*v || *end || !(a->lr > 0 && a->lr < 1e3)) return bad_usage(c, "--lr needs a positive number, not '%s'", v);
        } else {
            char *end;
            errno = 0;
            long x = strtol(v, &end, 10);
            if (!*v || *end || errno || x < 1 || x > 1000000) {
                char msg[160];
                snprintf(msg, sizeof msg, "%s needs a whole number from 1 to 1000000, not '%.60s'", o, v);
                return bad_usage(c, "%s", msg);
            }
            *(!strcmp(o, "--batch-size") ? &a->batch : !strcmp(o, "--epochs") ? &a->epochs : &a->probe_batch) = x;
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

// `virtex features`: pooled layer4 features of every image under DIR as .npy + .txt.
static int cmd_features(int argc, char **argv) {
    const Command *c = find_command("features");
    TransferArgs a = {0};
    int rc = transfer_args(c, argc, argv, " --images --out ", &a);
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
    int rc = transfer_args(c, argc, argv, linear ? " --data --epochs --probe-batch-size --lr --precomputed " : " --data ", &a);
    if (!rc && !a.data) rc = bad_usage(c, "%s", linear ? "--data IMAGENET_ROOT is required" : "--data VOC2007_ROOT is required");
    Model m;
    if (rc || (rc = transfer_model(&a, &m))) { free(a.overrides); return rc; }
    TransferOptions o = {(int)a.batch, a.random, 0, (int)a.epochs, (int)a.probe_batch, a.lr, a.precomputed,
                         (uint64_t)m.cfg.RANDOM_SEED};
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
// ---- end interop

// `virtex eval WHAT ...`: the evaluations, each a command of its own.
static const Command eval_commands[] = {
    // loss (training)
    // captions (evaluation)
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
    // evaluation
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
