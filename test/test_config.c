// test/test_config.c — the configuration system (config.c): the original's defaults,
// every shipped config under configs/, _BASE_ inheritance, KEY VALUE overrides, the
// dump -> load round trip, malformed YAML (each error names file, line and key), the
// MODEL.TEXTUAL.NAME parser, and a short fuzz run of the reader.
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "test.h"

// ----------------------------------------------------------------------------
// helpers: a temporary directory for the files written here

static char tmpdir[256];
static char made[128][512];   // files and directories created, removed at the end
static int nmade;

static const char *tmp_path(const char *name) { return path_in(tmpdir, name); }

static void remember(const char *path) {
    if (nmade < 128) snprintf(made[nmade++], 512, "%s", path);
}

static const char *write_tmp(const char *name, const char *text, size_t len) {
    const char *path = tmp_path(name);
    FILE *f = fopen(path, "wb");
    if (!f) { check(0, "cannot write %s", path); return path; }
    fwrite(text, 1, len, f);
    fclose(f);
    remember(path);
    return path;
}

static const char *write_yaml(const char *name, const char *text) {
    return write_tmp(name, text, strlen(text));
}

static void make_subdir(const char *name) {
    const char *path = tmp_path(name);
    if (mkdir(path, 0700) == 0) remember(path);
}

static void cleanup_tmp(void) {
    for (int i = nmade - 1; i >= 0; i--) {
        struct stat st;
        if (stat(made[i], &st) == 0 && S_ISDIR(st.st_mode)) rmdir(made[i]);
        else unlink(made[i]);
    }
    nmade = 0;
    rmdir(tmpdir);
}

// Where configs/ is (tests run from the repo root, or from test/).
static const char *configs_root(void) {
    if (access("configs/_base_bicaptioning_R_50_L1_H1024.yaml", R_OK) == 0) return "configs";
    return "../configs";
}

static const char *shipped(const char *rel) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ & 3];
    snprintf(p, 512, "%s/%s", configs_root(), rel);
    return p;
}

// Load a config file with overrides; report the error as a failed check.
static int load(Config *c, const char *path, int n, char **ov) {
    char err[1024];
    memset(c, 0, sizeof *c);
    if (config_load(c, path, n, ov, err, sizeof err)) {
        check(0, "load %s: %s", path, err);
        return -1;
    }
    return 0;
}

// dump c, read the text back over `start`, compare bytes.
static int round_trip(const Config *c, const Config *start, char *err, size_t errlen) {
    FILE *f = tmpfile();
    if (!f) { snprintf(err, errlen, "tmpfile failed"); return 0; }
    config_dump(c, f);
    long n = ftell(f);
    rewind(f);
    char *text = malloc((size_t)n + 1);
    size_t got = fread(text, 1, (size_t)n, f);
    text[got] = 0;
    fclose(f);
    Config *back = malloc(sizeof *back);
    memcpy(back, start, sizeof *back);
    int ok = config_load_string(back, text, "dump", err, errlen) == 0;
    if (ok && memcmp(back, c, sizeof *c)) {
        snprintf(err, errlen, "the config read back differs from the one dumped");
        ok = 0;
    }
    free(back);
    free(text);
    return ok;
}

// ----------------------------------------------------------------------------
// defaults: virtex/config.py, key by key

static void test_defaults(void) {
    Config c;
    memset(&c, 0x5A, sizeof c);
    config_defaults(&c);
    check(c.RANDOM_SEED == 0 && c.AMP == 1 && c.CUDNN_DETERMINISTIC == 0 && c.CUDNN_BENCHMARK == 1,
          "defaults: RANDOM_SEED 0, AMP true, CUDNN_DETERMINISTIC false, CUDNN_BENCHMARK true");
    check(!strcmp(c.DATA.ROOT, "datasets/coco") &&
          !strcmp(c.DATA.TOKENIZER_MODEL, "datasets/vocab/coco_10k.model"),
          "defaults: DATA.ROOT '%s', DATA.TOKENIZER_MODEL '%s'", c.DATA.ROOT, c.DATA.TOKENIZER_MODEL);
    check(c.DATA.VOCAB_SIZE == 10000 && c.DATA.UNK_INDEX == 0 && c.DATA.SOS_INDEX == 1 &&
          c.DATA.EOS_INDEX == 2 && c.DATA.MASK_INDEX == 3,
          "defaults: VOCAB_SIZE 10000, UNK/SOS/EOS/MASK 0/1/2/3");
    check(c.DATA.IMAGE_CROP_SIZE == 224 && c.DATA.MAX_CAPTION_LENGTH == 30,
          "defaults: IMAGE_CROP_SIZE 224, MAX_CAPTION_LENGTH 30");
    check(c.DATA.n_IMAGE_TRANSFORM_TRAIN == 4 &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[0], "random_resized_crop") &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[1], "horizontal_flip") &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[2], "color_jitter") &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[3], "normalize") && !c.DATA.IMAGE_TRANSFORM_TRAIN[4][0],
          "defaults: IMAGE_TRANSFORM_TRAIN [random_resized_crop, horizontal_flip, color_jitter, normalize]");
    check(c.DATA.n_IMAGE_TRANSFORM_VAL == 3 &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_VAL[0], "smallest_resize") &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_VAL[1], "center_crop") &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_VAL[2], "normalize"),
          "defaults: IMAGE_TRANSFORM_VAL [smallest_resize, center_crop, normalize]");
    check(c.DATA.USE_PERCENTAGE == 100.0f && c.DATA.USE_SINGLE_CAPTION == 0,
          "defaults: USE_PERCENTAGE 100, USE_SINGLE_CAPTION false");
    check(c.DATA.MASKED_LM.MASK_PROPORTION == 0.15f && c.DATA.MASKED_LM.MASK_PROBABILITY == 0.85f &&
          c.DATA.MASKED_LM.REPLACE_PROBABILITY == 0.10f, "defaults: MASKED_LM 0.15 / 0.85 / 0.10");
    check(!strcmp(c.MODEL.NAME, "virtex") && !strcmp(c.MODEL.VISUAL.NAME, "torchvision::resnet50") &&
          c.MODEL.VISUAL.FEATURE_SIZE == 2048 && !c.MODEL.VISUAL.PRETRAINED && !c.MODEL.VISUAL.FROZEN,
          "defaults: MODEL.NAME virtex, VISUAL torchvision::resnet50, FEATURE_SIZE 2048, not pretrained/frozen");
    check(c.MODEL.VISUAL.BASE_WIDTH == 64, "defaults: MODEL.VISUAL.BASE_WIDTH 64 (extension)");
    check(!strcmp(c.MODEL.TEXTUAL.NAME, "transdec_postnorm::L1_H2048_A32_F8192") &&
          c.MODEL.TEXTUAL.DROPOUT == 0.1f,
          "defaults: TEXTUAL transdec_postnorm::L1_H2048_A32_F8192, DROPOUT 0.1");
    check(!strcmp(c.MODEL.DECODER.NAME, "beam_search") && c.MODEL.DECODER.BEAM_SIZE == 5 &&
          c.MODEL.DECODER.NUCLEUS_SIZE == 0.9f && c.MODEL.DECODER.MAX_DECODING_STEPS == 30,
          "defaults: DECODER beam_search, beam 5, nucleus 0.9, 30 steps");
    check(!strcmp(c.OPTIM.OPTIMIZER_NAME, "sgd") && c.OPTIM.SGD_MOMENTUM == 0.9f &&
          c.OPTIM.WEIGHT_DECAY == 0.0001f && c.OPTIM.CLIP_GRAD_NORM == 10.0f,
          "defaults: OPTIM sgd, momentum 0.9, weight decay 1e-4, clip 10");
    check(!strcmp(c.OPTIM.NO_DECAY, ".*textual.(embedding|transformer).*(norm.*|bias)"),
          "defaults: OPTIM.NO_DECAY '%s'", c.OPTIM.NO_DECAY);
    check(c.OPTIM.LOOKAHEAD.USE == 1 && c.OPTIM.LOOKAHEAD.ALPHA == 0.5f && c.OPTIM.LOOKAHEAD.STEPS == 5,
          "defaults: LOOKAHEAD on, alpha 0.5, 5 steps");
    check(c.OPTIM.BATCH_SIZE == 256 && c.OPTIM.CNN_LR == 0.2f && c.OPTIM.LR == 0.001f &&
          c.OPTIM.NUM_ITERATIONS == 500000 && c.OPTIM.WARMUP_STEPS == 10000,
          "defaults: batch 256, CNN_LR 0.2, LR 0.001, 500000 iterations, 10000 warmup");
    check(!strcmp(c.OPTIM.LR_DECAY_NAME, "cosine") && c.OPTIM.n_LR_STEPS == 0 && c.OPTIM.LR_STEPS[0] == 0 &&
          c.OPTIM.LR_GAMMA == 0.1f, "defaults: cosine decay, LR_STEPS [], LR_GAMMA 0.1");
    Config d;
    memset(&d, 0, sizeof d);
    config_defaults(&d);
    check(!memcmp(&c, &d, sizeof c), "config_defaults sets every byte (independent of prior contents)");
    int ok = 1, prenorm, L, H, A, F;
    char err[512];
    ok = !parse_textual_name(c.MODEL.TEXTUAL.NAME, &prenorm, &L, &H, &A, &F, err, sizeof err);
    check(ok && !prenorm && L == 1 && H == 2048 && A == 32 && F == 8192,
          "the default textual name parses to post-norm L1 H2048 A32 F8192");
}

// ----------------------------------------------------------------------------
// every shipped config parses (and round-trips)

static void walk(const char *dir, int *count, int *bad) {
    DIR *d = opendir(dir);
    if (!d) { check(0, "cannot open directory %s", dir); (*bad)++; return; }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st)) continue;
        if (S_ISDIR(st.st_mode)) { walk(path, count, bad); continue; }
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 5, ".yaml")) continue;
        (*count)++;
        Config c, start;
        char err[1024];
        memset(&c, 0, sizeof c);
        int ok = config_load(&c, path, 0, NULL, err, sizeof err) == 0;
        if (!ok) { check(0, "shipped config %s: %s", path, err); (*bad)++; continue; }
        config_defaults(&start);
        if (!round_trip(&c, &start, err, sizeof err)) {
            check(0, "shipped config %s: dump -> load: %s", path, err);
            (*bad)++;
        }
        if (strcmp(c.MODEL.TEXTUAL.NAME, "none") &&
            parse_textual_name(c.MODEL.TEXTUAL.NAME, NULL, NULL, NULL, NULL, NULL, err, sizeof err)) {
            check(0, "shipped config %s: %s", path, err);
            (*bad)++;
        }
        if (c.MODEL.VISUAL.FEATURE_SIZE != 32 * c.MODEL.VISUAL.BASE_WIDTH) {
            check(0, "shipped config %s: FEATURE_SIZE %d != 32 x BASE_WIDTH %d", path,
                  c.MODEL.VISUAL.FEATURE_SIZE, c.MODEL.VISUAL.BASE_WIDTH);
            (*bad)++;
        }
    }
    closedir(d);
}

static void test_shipped(void) {
    int count = 0, bad = 0;
    walk(configs_root(), &count, &bad);
    check(count >= 20 && bad == 0, "every shipped config parses, round-trips and names a valid head: "
          "%d files, %d problems", count, bad);
}

// ----------------------------------------------------------------------------
// _BASE_ inheritance

static void test_inheritance(void) {
    Config c;
    if (!load(&c, shipped("width_ablations/bicaptioning_R_50_L1_H512.yaml"), 0, NULL)) {
        check(!strcmp(c.MODEL.TEXTUAL.NAME, "transdec_postnorm::L1_H512_A8_F2048"),
              "width H512: the child sets TEXTUAL.NAME '%s'", c.MODEL.TEXTUAL.NAME);
        check(!strcmp(c.DATA.ROOT, "datasets/coco") && c.OPTIM.BATCH_SIZE == 256 &&
              !strcmp(c.MODEL.NAME, "virtex") && c.MODEL.DECODER.BEAM_SIZE == 5 &&
              c.DATA.n_IMAGE_TRANSFORM_TRAIN == 4 && c.OPTIM.LOOKAHEAD.USE == 1,
              "width H512: the other values come from the base");
    }
    if (!load(&c, shipped("backbone_ablations/bicaptioning_R_101_L1_H1024.yaml"), 0, NULL))
        check(!strcmp(c.MODEL.VISUAL.NAME, "torchvision::resnet101") &&
              !strcmp(c.MODEL.TEXTUAL.NAME, "transdec_postnorm::L1_H1024_A16_F4096"),
              "R-101: VISUAL.NAME from the child, TEXTUAL.NAME H1024 from the base (default: H2048)");
    if (!load(&c, shipped("task_ablations/multilabel_classification_R_50.yaml"), 0, NULL))
        check(c.DATA.VOCAB_SIZE == 81 && !strcmp(c.OPTIM.NO_DECAY, "none") &&
              !strcmp(c.MODEL.NAME, "multilabel_classification") && !strcmp(c.MODEL.TEXTUAL.NAME, "none"),
              "multilabel classification: VOCAB_SIZE 81, NO_DECAY none, TEXTUAL none");
    if (!load(&c, shipped("downstream/inaturalist_clf.yaml"), 0, NULL))
        check(c.OPTIM.n_LR_STEPS == 2 && c.OPTIM.LR_STEPS[0] == 119700 && c.OPTIM.LR_STEPS[1] == 153900 &&
              !c.OPTIM.LOOKAHEAD.USE && c.OPTIM.LR == 0.025f && c.OPTIM.NUM_ITERATIONS == 171000 &&
              !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[0], "random_resized_crop::{'scale': (0.08, 1.0)}") &&
              c.DATA.n_IMAGE_TRANSFORM_TRAIN == 3,
              "iNaturalist: LR_STEPS [119700, 153900] (with comments), transform strings with braces");
    // a two-level chain from the small configs
    if (!load(&c, shipped("small/tiny_test.yaml"), 0, NULL)) {
        check(c.DATA.VOCAB_SIZE == 100 && c.MODEL.VISUAL.BASE_WIDTH == 8 && c.DATA.IMAGE_CROP_SIZE == 64 &&
              !strcmp(c.MODEL.TEXTUAL.NAME, "transdec_postnorm::L1_H64_A2_F128"),
              "tiny_test: its own values (V 100, width 8, 64 px, L1_H64_A2_F128)");
        check(!strcmp(c.DATA.ROOT, "data/shapes") && c.OPTIM.LR == 0.3f && c.OPTIM.CNN_LR == 0.3f && !c.AMP &&
              !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[0], "smallest_resize"),
              "tiny_test: values of its base (configs/small/bicaptioning_R_50W8_L1_H128.yaml)");
        check(!strcmp(c.OPTIM.NO_DECAY, ".*textual.(embedding|transformer).*(norm.*|bias)") &&
              c.OPTIM.LOOKAHEAD.USE && !strcmp(c.MODEL.NAME, "virtex"),
              "tiny_test: values of its base's base (the paper's base config)");
    }
    // relative paths resolve from the including file's directory, through subdirectories
    make_subdir("a");
    make_subdir("b");
    write_yaml("b/base2.yaml", "OPTIM:\n  LR: 0.5\n  BATCH_SIZE: 7\n");
    write_yaml("b/base.yaml", "_BASE_: base2.yaml\nOPTIM:\n  BATCH_SIZE: 8\nDATA:\n"
               "  IMAGE_TRANSFORM_VAL: [x, y, z]\n  IMAGE_TRANSFORM_TRAIN: [p, q, r]\n");
    const char *child = write_yaml("a/child.yaml", "OPTIM:\n  BATCH_SIZE: 9\n_BASE_: \"../b/base.yaml\"\n"
                                   "DATA:\n  IMAGE_TRANSFORM_TRAIN: [only]\n");
    if (!load(&c, child, 0, NULL)) {
        check(c.OPTIM.BATCH_SIZE == 9 && c.OPTIM.LR == 0.5f && c.DATA.n_IMAGE_TRANSFORM_VAL == 3 &&
              !strcmp(c.DATA.IMAGE_TRANSFORM_VAL[2], "z"),
              "_BASE_ ../b/base.yaml -> base2.yaml: paths relative to each file; the child wins "
              "(BATCH_SIZE %d, LR %g)", c.OPTIM.BATCH_SIZE, c.OPTIM.LR);
        check(c.DATA.n_IMAGE_TRANSFORM_TRAIN == 1 && !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[0], "only") &&
              !c.DATA.IMAGE_TRANSFORM_TRAIN[1][0] && !c.DATA.IMAGE_TRANSFORM_TRAIN[2][0],
              "a list in the child replaces the base's list (no leftover items)");
    }
}

// ----------------------------------------------------------------------------
// overrides

static void test_overrides(void) {
    Config c;
    char *ov[] = {"OPTIM.BATCH_SIZE", "64", "OPTIM.LR", "1e-4", "MODEL.NAME", "captioning",
                  "DATA.IMAGE_TRANSFORM_TRAIN", "[normalize, 'horizontal_flip']",
                  "OPTIM.LR_STEPS", "[10, 20, 30]", "AMP", "True", "DATA.ROOT", "\"x y\"",
                  "OPTIM.CLIP_GRAD_NORM", "5", "OPTIM.NO_DECAY", ""};
    if (!load(&c, shipped("small/tiny_test.yaml"), 18, ov)) {
        check(c.OPTIM.BATCH_SIZE == 64 && c.OPTIM.LR == 1e-4f && !strcmp(c.MODEL.NAME, "captioning"),
              "overrides: int 64, float 1e-4, string captioning");
        check(c.DATA.n_IMAGE_TRANSFORM_TRAIN == 2 && !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[1], "horizontal_flip") &&
              c.OPTIM.n_LR_STEPS == 3 && c.OPTIM.LR_STEPS[2] == 30,
              "overrides: flow lists of strings and ints");
        check(c.AMP == 1 && !strcmp(c.DATA.ROOT, "x y") && c.OPTIM.CLIP_GRAD_NORM == 5.0f &&
              !strcmp(c.OPTIM.NO_DECAY, ""), "overrides: bool, quoted string, int for a float key, "
              "empty string");
        check(c.DATA.VOCAB_SIZE == 100, "overrides leave the file's other values");
    }
    config_defaults(&c);
    Config before = c;
    char err[512] = "";
    int rc = config_override(&c, "OPTIM.NOT_A_KEY", "1", err, sizeof err);
    check(rc == -1 && strstr(err, "Non-existent config key") && strstr(err, "OPTIM.NOT_A_KEY") &&
          !memcmp(&c, &before, sizeof c), "override of an unknown key fails: %s", err);
    rc = config_override(&c, "OPTIM.BATCH_SIZE", "abc", err, sizeof err);
    check(rc == -1 && strstr(err, "OPTIM.BATCH_SIZE") && strstr(err, "int") && strstr(err, "abc") &&
          !memcmp(&c, &before, sizeof c), "override with the wrong type fails: %s", err);
    rc = config_override(&c, "OPTIM.BATCH_SIZE", "1.5", err, sizeof err);
    check(rc == -1, "an int key refuses 1.5: %s", err);
    rc = config_override(&c, "OPTIM", "1", err, sizeof err);
    check(rc == -1 && strstr(err, "section"), "override of a section fails: %s", err);
    rc = config_override(&c, "OPTIM.LR_STEPS", "[1, 2", err, sizeof err);
    check(rc == -1 && strstr(err, "OPTIM.LR_STEPS"), "override with an unterminated list fails: %s", err);
    rc = config_override(&c, "DATA.IMAGE_TRANSFORM_VAL", "normalize", err, sizeof err);
    check(rc == -1 && strstr(err, "list"), "a list key refuses a scalar: %s", err);
    rc = config_override(&c, "MODEL.VISUAL.FROZEN", "1", err, sizeof err);
    check(rc == -1 && strstr(err, "bool"), "a bool key refuses 1: %s", err);
    check(!memcmp(&c, &before, sizeof c), "failed overrides leave the config unchanged");
    char *odd[] = {"OPTIM.LR", "0.1", "OPTIM.BATCH_SIZE"};
    rc = config_load(&c, shipped("small/tiny_test.yaml"), 3, odd, err, sizeof err);
    check(rc == -1 && strstr(err, "OPTIM.BATCH_SIZE"), "an override without value fails: %s", err);
    char *unknown[] = {"MODEL.TEXTUAL.NAMES", "x"};
    rc = config_load(&c, shipped("small/tiny_test.yaml"), 2, unknown, err, sizeof err);
    check(rc == -1 && strstr(err, "MODEL.TEXTUAL.NAMES"), "config_load with an unknown override fails: %s", err);
}

// ----------------------------------------------------------------------------
// dump -> load

static void test_round_trip(void) {
    Config c, start;
    char err[1024];
    config_defaults(&c);
    config_defaults(&start);
    check(round_trip(&c, &start, err, sizeof err), "dump -> load of the defaults is identical %s", err);
    const char *ov[][2] = {
        {"RANDOM_SEED", "-2147483648"},
        {"DATA.ROOT", "\"quote \\\" backslash \\\\ tab \\t newline \\n e\\u00e9 # not: a comment\""},
        {"DATA.TOKENIZER_MODEL", "'single ''quoted'' \\ raw'"},
        {"OPTIM.NO_DECAY", "\"\""},
        {"OPTIM.LR", "1e-4"},
        {"OPTIM.CNN_LR", "0.1"},
        {"OPTIM.WEIGHT_DECAY", "3.4e38"},
        {"OPTIM.LR_GAMMA", "-0.0"},
        {"MODEL.TEXTUAL.DROPOUT", "1e-45"},
        {"DATA.USE_PERCENTAGE", "33.333333"},
        {"MODEL.DECODER.NUCLEUS_SIZE", "123456789"},
        {"DATA.IMAGE_TRANSFORM_TRAIN", "[a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p]"},
        {"DATA.IMAGE_TRANSFORM_VAL", "[]"},
        {"OPTIM.LR_STEPS", "[1, -2, 2147483647]"},
        {"AMP", "false"},
        {"MODEL.VISUAL.FROZEN", "true"},
    };
    int ok = 1;
    for (size_t i = 0; i < sizeof ov / sizeof ov[0]; i++)
        if (config_override(&c, ov[i][0], ov[i][1], err, sizeof err)) {
            check(0, "override %s %s: %s", ov[i][0], ov[i][1], err);
            ok = 0;
        }
    check(ok && !strcmp(c.DATA.ROOT, "quote \" backslash \\ tab \t newline \n e\xc3\xa9 # not: a comment") &&
          !strcmp(c.DATA.TOKENIZER_MODEL, "single 'quoted' \\ raw") && c.OPTIM.LR_GAMMA == 0.0f &&
          c.DATA.n_IMAGE_TRANSFORM_TRAIN == 16 && c.DATA.n_IMAGE_TRANSFORM_VAL == 0,
          "tricky values (escapes, UTF-8, 16 list items, empty list) are stored as written");
    // start from a config with other contents everywhere: every byte must be rewritten
    char *other[] = {"DATA.IMAGE_TRANSFORM_VAL", "[a_long_transform_name, b, c, d, e, f, g, h]",
                     "OPTIM.LR_STEPS", "[5, 6, 7, 8, 9, 10, 11, 12, 13, 14]",
                     "DATA.ROOT", "a_much_longer_root_directory_name_than_the_other_one"};
    char e2[512];
    if (config_load(&start, shipped("small/tiny_test.yaml"), 6, other, e2, sizeof e2)) check(0, "%s", e2);
    check(round_trip(&c, &start, err, sizeof err), "dump -> load of tricky values is identical %s", err);
    // the dump names every section once
    FILE *f = tmpfile();
    config_dump(&c, f);
    long n = ftell(f);
    rewind(f);
    char *text = calloc((size_t)n + 1, 1);
    if (fread(text, 1, (size_t)n, f) != (size_t)n) check(0, "read back the dump");
    fclose(f);
    const char *heads[] = {"\nDATA:\n", "\n  MASKED_LM:\n", "\nMODEL:\n", "\n  VISUAL:\n",
                           "\n  TEXTUAL:\n", "\n  DECODER:\n", "\nOPTIM:\n", "\n  LOOKAHEAD:\n"};
    int once = 1;
    for (size_t i = 0; i < sizeof heads / sizeof heads[0]; i++) {
        const char *a = strstr(text, heads[i]);
        if (!a || strstr(a + 1, heads[i])) once = 0;
    }
    check(once && strstr(text, "\n  LR: 0.0001\n") && strstr(text, "\n  CNN_LR: 0.1\n") &&
          strstr(text, "\n  LR_GAMMA: -0.0\n") && strstr(text, "\n  IMAGE_TRANSFORM_VAL: []\n") &&
          strstr(text, "\n    - \"a\"\n"),
          "the dump is nested block YAML, shortest exact floats, quoted strings");
    free(text);
}

// ----------------------------------------------------------------------------
// valid YAML in all its forms

static void test_yaml_forms(void) {
    const char *text =
        "\xEF\xBB\xBF# a comment first, a byte order mark before it\r\n"
        "RANDOM_SEED: -7   # trailing comment\r\n"
        "AMP: False\n"
        "CUDNN_BENCHMARK: yes\n"
        "DATA:\n"
        "  ROOT: 'it''s # not a comment'\n"
        "  TOKENIZER_MODEL: \"tab\\there \\\"q\\\" \\\\ \\u00e9\\x41\"   # comment\n"
        "  USE_PERCENTAGE: .5\n"
        "  IMAGE_TRANSFORM_TRAIN:\n"
        "  - a   # a compact list at the key's indentation\n"
        "  - \"b c\"\n"
        "\n"
        "  -   'd'\n"
        "  IMAGE_TRANSFORM_VAL: []\n"
        "  MASKED_LM:\n"
        "       MASK_PROPORTION: 1e-4\n"
        "       # comment lines may sit anywhere\n"
        "# even here\n"
        "       MASK_PROBABILITY: -1.5E+2\n"
        "OPTIM:\n"
        "  LR_STEPS: [ 1, 2 ,3, ]  # trailing comma\n"
        "  NO_DECAY: \"\"\n"
        "  LR: 1\n"
        "  LOOKAHEAD: # a comment after a section\n"
        "    USE: off\n"
        "  OPTIMIZER_NAME: adamw\n"
        "MODEL:\n"
        "  VISUAL:\n"
        "    NAME: torchvision::resnet101\n"
        "  \"NAME\": 'captioning'\n";
    Config c;
    char err[512];
    config_defaults(&c);
    int rc = config_load_string(&c, text, "forms.yaml", err, sizeof err);
    check(rc == 0, "YAML forms parse: %s", rc ? err : "ok");
    if (rc) return;
    check(c.RANDOM_SEED == -7 && c.AMP == 0 && c.CUDNN_BENCHMARK == 1, "negative int, False, yes");
    check(!strcmp(c.DATA.ROOT, "it's # not a comment"), "single quotes with '' and # inside: '%s'",
          c.DATA.ROOT);
    check(!strcmp(c.DATA.TOKENIZER_MODEL, "tab\there \"q\" \\ \xc3\xa9" "A"),
          "double-quote escapes \\t \\\" \\\\ \\u00e9 \\x41: '%s'", c.DATA.TOKENIZER_MODEL);
    check(c.DATA.USE_PERCENTAGE == 0.5f && c.DATA.MASKED_LM.MASK_PROPORTION == 1e-4f &&
          c.DATA.MASKED_LM.MASK_PROBABILITY == -150.0f && c.OPTIM.LR == 1.0f,
          "floats .5, 1e-4, -1.5E+2 and an int for a float key");
    check(c.DATA.n_IMAGE_TRANSFORM_TRAIN == 3 && !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[1], "b c") &&
          !strcmp(c.DATA.IMAGE_TRANSFORM_TRAIN[2], "d") && c.DATA.n_IMAGE_TRANSFORM_VAL == 0,
          "compact block list with a blank line inside, empty flow list");
    check(c.OPTIM.n_LR_STEPS == 3 && c.OPTIM.LR_STEPS[2] == 3 && !c.OPTIM.NO_DECAY[0] &&
          c.OPTIM.LOOKAHEAD.USE == 0 && !strcmp(c.OPTIM.OPTIMIZER_NAME, "adamw"),
          "flow list with a trailing comma, empty string, 'off', back to the outer level");
    check(!strcmp(c.MODEL.VISUAL.NAME, "torchvision::resnet101") && !strcmp(c.MODEL.NAME, "captioning"),
          "plain scalar with '::', quoted key");
    config_defaults(&c);
    rc = config_load_string(&c, "  AMP: false\n  OPTIM:\n      LR: 0.5\n", "indented", err, sizeof err);
    check(rc == 0 && !c.AMP && c.OPTIM.LR == 0.5f, "a document indented as a whole: %s", rc ? err : "ok");
    rc = config_load_string(&c, "---\nAMP: true\n", "doc", err, sizeof err);
    check(rc == 0 && c.AMP, "a leading document marker: %s", rc ? err : "ok");
    Config before = c;
    rc = config_load_string(&c, "", "empty", err, sizeof err) ||
         config_load_string(&c, "# only a comment\n\n   \n", "comments", err, sizeof err);
    check(rc == 0 && !memcmp(&c, &before, sizeof c), "empty and comment-only texts change nothing");
    rc = config_load_string(&c, "_BASE_: x.yaml\n", "checkpoint", err, sizeof err);
    check(rc == -1 && strstr(err, "_BASE_") && strstr(err, "checkpoint:1:"),
          "config_load_string does not follow _BASE_: %s", err);
}

// ----------------------------------------------------------------------------
// malformed YAML: each error names the file, the line and the key

// Write `text` as `name`, load it: the error must point at at_name:line (the file where
// the problem is, which is a base for errors found in bases) and name the key.
static void expect_error_at(const char *name, const char *text, const char *at_name, int line,
                            const char *key, const char *words) {
    const char *path = write_yaml(name, text);
    Config c;
    char err[1024] = "";
    config_defaults(&c);
    Config before = c;
    int rc = config_load(&c, path, 0, NULL, err, sizeof err);
    char where[600];
    snprintf(where, sizeof where, "%s:%d:", at_name, line);
    int ok = rc == -1 && strstr(err, where) && (!key || strstr(err, key)) &&
             (!words || strstr(err, words)) && !strchr(err, '\n') && !memcmp(&c, &before, sizeof c);
    check(ok, "%-22s -> %s", name, err);
}

static void expect_error(const char *name, const char *text, int line, const char *key,
                         const char *words) {
    expect_error_at(name, text, name, line, key, words);
}

static void test_errors(void) {
    expect_error("tab.yaml", "DATA:\n\tROOT: x\n", 2, "ROOT", "tab");
    expect_error("dedent.yaml", "DATA:\n    ROOT: \"a\"\n  VOCAB_SIZE: 5\n", 3, "VOCAB_SIZE", "indentation");
    expect_error("indent.yaml", "OPTIM:\n  LR: 0.1\n    BATCH_SIZE: 5\n", 3, "BATCH_SIZE", "indent");
    expect_error("quote.yaml", "DATA:\n  ROOT: \"abc\n", 2, "DATA.ROOT", "unterminated");
    expect_error("squote.yaml", "DATA:\n  IMAGE_TRANSFORM_VAL:\n    - 'abc\n", 3, "DATA.IMAGE_TRANSFORM_VAL", "unterminated");
    expect_error("colon.yaml", "MODEL:\n  NAME \"virtex\"\n", 2, "NAME", "':'");
    expect_error("dup.yaml", "OPTIM:\n  LR: 0.1\n  BATCH_SIZE: 3\n  LR: 0.2\n", 4, "OPTIM.LR", "duplicate");
    expect_error("dupsec.yaml", "OPTIM:\n  LR: 0.1\nDATA:\n  VOCAB_SIZE: 5\nOPTIM:\n  BATCH_SIZE: 3\n",
                 5, "OPTIM", "duplicate");
    expect_error("unknown.yaml", "MODEL:\n  VISUAL:\n    NAMEX: \"a\"\n", 3, "MODEL.VISUAL.NAMEX",
                 "Non-existent config key");
    expect_error("unknown_top.yaml", "FP16_OPT: 2\n", 1, "FP16_OPT", "Non-existent config key");
    expect_error("dotted.yaml", "OPTIM.LR: 0.1\n", 1, "OPTIM.LR", "Non-existent config key");
    expect_error("type_int.yaml", "OPTIM:\n  BATCH_SIZE: abc\n", 2, "OPTIM.BATCH_SIZE", "expected int");
    expect_error("type_int2.yaml", "OPTIM:\n  BATCH_SIZE: 256.0\n", 2, "OPTIM.BATCH_SIZE", "expected int");
    expect_error("type_quoted.yaml", "OPTIM:\n  BATCH_SIZE: \"256\"\n", 2, "OPTIM.BATCH_SIZE", "expected int");
    expect_error("type_float.yaml", "OPTIM:\n  LR: fast\n", 2, "OPTIM.LR", "expected float");
    expect_error("type_bool.yaml", "AMP: 1\n", 1, "AMP", "expected bool");
    expect_error("type_str.yaml", "MODEL:\n  NAME: 5\n", 2, "MODEL.NAME", "expected string");
    expect_error("type_str2.yaml", "MODEL:\n  NAME: no\n", 2, "MODEL.NAME", "quote");
    expect_error("type_list.yaml", "DATA:\n  IMAGE_TRANSFORM_VAL: normalize\n", 2,
                 "DATA.IMAGE_TRANSFORM_VAL", "list of strings");
    expect_error("type_item.yaml", "OPTIM:\n  LR_STEPS:\n    - 10\n    - ten\n", 4, "OPTIM.LR_STEPS", "ten");
    expect_error("type_scalar.yaml", "OPTIM:\n  LR: [0.1]\n", 2, "OPTIM.LR", "list");
    char longer[600];
    snprintf(longer, sizeof longer, "DATA:\n  ROOT: \"%0300d\"\n", 0);
    expect_error("long.yaml", longer, 2, "DATA.ROOT", "too long");
    char item[81];
    memset(item, 'x', 80);
    item[80] = 0;
    snprintf(longer, sizeof longer, "DATA:\n  IMAGE_TRANSFORM_VAL:\n    - %s\n", item);
    expect_error("long_item.yaml", longer, 3, "DATA.IMAGE_TRANSFORM_VAL", "too long");
    expect_error("many.yaml", "OPTIM:\n  LR_STEPS: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]\n", 2,
                 "OPTIM.LR_STEPS", "too many");
    expect_error("null.yaml", "OPTIM:\n  LR:\n", 2, "OPTIM.LR", "null");
    expect_error("null2.yaml", "OPTIM:\n  LR: ~\n  BATCH_SIZE: 3\n", 2, "OPTIM.LR", "null");
    expect_error("null_item.yaml", "DATA:\n  IMAGE_TRANSFORM_VAL:\n    -\n", 3, "DATA.IMAGE_TRANSFORM_VAL", "null");
    expect_error("section.yaml", "DATA: 5\n", 1, "DATA", "section");
    expect_error("empty_section.yaml", "MODEL:\nOPTIM:\n  LR: 0.1\n", 1, "MODEL", "section");
    expect_error("mapping.yaml", "OPTIM:\n  LR:\n    X: 1\n", 3, "OPTIM.LR", "mapping");
    expect_error("section_list.yaml", "OPTIM:\n  - 1\n", 2, "OPTIM", "section");
    expect_error("flow.yaml", "OPTIM:\n  LR_STEPS: [1, 2\n", 2, "OPTIM.LR_STEPS", "unterminated");
    expect_error("flow2.yaml", "OPTIM:\n  LR_STEPS: [1 2]\n", 2, "OPTIM.LR_STEPS", NULL);
    expect_error("flow3.yaml", "OPTIM:\n  LR_STEPS: [1, , 2]\n", 2, "OPTIM.LR_STEPS", "empty");
    expect_error("after.yaml", "MODEL:\n  NAME: \"a\" b\n", 2, "MODEL.NAME", "after");
    expect_error("range.yaml", "OPTIM:\n  BATCH_SIZE: 99999999999\n", 2, "OPTIM.BATCH_SIZE", "range");
    expect_error("frange.yaml", "OPTIM:\n  LR: 1e39\n", 2, "OPTIM.LR", "float32");
    expect_error("nan.yaml", "OPTIM:\n  LR: .nan\n", 2, "OPTIM.LR", "finite");
    expect_error("flowmap.yaml", "OPTIM:\n  LR: {a: 1}\n", 2, "OPTIM.LR", "unsupported");
    expect_error("anchor.yaml", "OPTIM:\n  LR: &x 0.1\n", 2, "OPTIM.LR", "unsupported");
    expect_error("block.yaml", "MODEL:\n  NAME: |\n    virtex\n", 2, "MODEL.NAME", "unsupported");
    expect_error("colon2.yaml", "MODEL:\n  NAME: a: b\n", 2, "MODEL.NAME", "':'");
    expect_error("escape.yaml", "DATA:\n  ROOT: \"a\\qb\"\n", 2, "DATA.ROOT", "escape");
    expect_error("nul.yaml", "DATA:\n  ROOT: \"a\\u0000b\"\n", 2, "DATA.ROOT", "NUL");
    expect_error("item.yaml", "AMP: true\n- a\n", 2, "- a", "list item");
    expect_error("nested.yaml", "DATA:\n  IMAGE_TRANSFORM_VAL:\n    - - a\n", 3, "DATA.IMAGE_TRANSFORM_VAL", "nested");
    expect_error("docs.yaml", "AMP: true\n---\nAMP: false\n", 2, NULL, "documents");
    expect_error("list_indent.yaml", "DATA:\n  IMAGE_TRANSFORM_VAL:\n    - a\n      b\n", 4,
                 "DATA.IMAGE_TRANSFORM_VAL", "indentation");
    expect_error("nested_base.yaml", "MODEL:\n  _BASE_: x.yaml\n", 2, "MODEL._BASE_", "Non-existent");
    expect_error("base_missing.yaml", "# a base that is not there\n_BASE_: \"nope/missing.yaml\"\n", 2,
                 "_BASE_", "missing.yaml");
    expect_error("base_type.yaml", "_BASE_: [a.yaml]\n", 1, "_BASE_", NULL);
    write_yaml("cyc_b.yaml", "# b\n_BASE_: \"cyc_a.yaml\"\n");
    expect_error_at("cyc_a.yaml", "_BASE_: cyc_b.yaml\nOPTIM:\n  LR: 0.1\n", "cyc_b.yaml", 2, "_BASE_",
                    "cycle");
    expect_error("self.yaml", "_BASE_: ./self.yaml\n", 1, "_BASE_", "cycle");
    write_yaml("base_bad.yaml", "OPTIM:\n  FOO: 1\n");
    expect_error_at("base_child.yaml", "_BASE_: base_bad.yaml\n", "base_bad.yaml", 2, "OPTIM.FOO",
                    "base_child.yaml:1");
    // a chain deeper than the guard
    char name[64], body[128];
    for (int i = 0; i < 12; i++) {
        snprintf(name, sizeof name, "deep%d.yaml", i);
        snprintf(body, sizeof body, "_BASE_: deep%d.yaml\n", i + 1);
        write_yaml(name, body);
    }
    write_yaml("deep12.yaml", "AMP: false\n");
    Config c;
    char err[1024];
    int rc = config_load(&c, tmp_path("deep0.yaml"), 0, NULL, err, sizeof err);
    check(rc == -1 && strstr(err, "_BASE_") && strstr(err, "deeper"), "a _BASE_ chain of 13 files is refused: %s", err);
    rc = config_load(&c, tmp_path("deep6.yaml"), 0, NULL, err, sizeof err);
    check(rc == 0 && !c.AMP, "a _BASE_ chain of 7 files loads: %s", rc ? err : "ok");
    // not a file / not text
    rc = config_load(&c, tmp_path("no_such_file.yaml"), 0, NULL, err, sizeof err);
    check(rc == -1 && strstr(err, "no_such_file.yaml"), "a missing config file: %s", err);
    const char *bin = write_tmp("binary.yaml", "AMP: true\nOP\0TIM:\n", 18);
    rc = config_load(&c, bin, 0, NULL, err, sizeof err);
    check(rc == -1 && strstr(err, "binary.yaml:2:3"), "a NUL byte: %s", err);
    rc = config_load(&c, tmpdir, 0, NULL, err, sizeof err);
    check(rc == -1, "a directory as config file: %s", err);
}

// ----------------------------------------------------------------------------
// MODEL.TEXTUAL.NAME

static void test_textual_name(void) {
    int pre = -1, L = 0, H = 0, A = 0, F = 0;
    char err[512];
    int rc = parse_textual_name("transdec_prenorm::L4_H1024_A16_F4096", &pre, &L, &H, &A, &F, err, sizeof err);
    check(rc == 0 && pre == 1 && L == 4 && H == 1024 && A == 16 && F == 4096,
          "transdec_prenorm::L4_H1024_A16_F4096 -> prenorm L4 H1024 A16 F4096");
    rc = parse_textual_name("transdec_postnorm::L1_H64_A2_F128", &pre, &L, &H, &A, &F, err, sizeof err);
    check(rc == 0 && pre == 0 && L == 1 && H == 64 && A == 2 && F == 128, "transdec_postnorm::L1_H64_A2_F128");
    const char *bad[] = {
        "", "none", "transdec_postnorm", "transdec_postnorm::", "transdec_postnorm::L1_H2048_A32",
        "transformer_postnorm::L1_H2048_A32_F8192", "transdec_postnorm::L1_H100_A3_F128",
        "transdec_postnorm::L0_H64_A2_F128", "transdec_postnorm::L1_H64_A0_F128",
        "transdec_postnorm::LX_H64_A2_F128", "transdec_postnorm::L1_H64_A2_F128_X",
        "transdec_postnorm::L-1_H64_A2_F128", "transdec_postnorm::L99999999999999999999_H64_A2_F128",
        "transdec_postnorm::H64_L1_A2_F128", "transdec_postnorm::L1-H64-A2-F128",
        "transdec_postnorm:L1_H64_A2_F128", "transdec_postnorm::L1_H64_A2_F", " transdec_postnorm::L1_H64_A2_F128",
    };
    int all = 1;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        pre = L = H = A = F = 7;
        rc = parse_textual_name(bad[i], &pre, &L, &H, &A, &F, err, sizeof err);
        if (rc != -1 || !strstr(err, "L<layers>_H<hidden>_A<heads>_F<feedforward>") || L != 7) {
            check(0, "parse_textual_name('%s') should fail: rc %d, %s", bad[i], rc, err);
            all = 0;
        }
    }
    check(all, "malformed textual names are refused with the expected form (e.g. %s)", err);
}

// ----------------------------------------------------------------------------
// fuzz: mutated configs never crash, errors stay one line, failures change nothing

static uint64_t fz_state = 0x9E3779B97F4A7C15ull;
static uint32_t fz_next(void) {
    fz_state ^= fz_state << 13;
    fz_state ^= fz_state >> 7;
    fz_state ^= fz_state << 17;
    return (uint32_t)(fz_state >> 11);
}

static void test_fuzz(void) {
    const char *seeds[] = {
        "RANDOM_SEED: 0\nDATA:\n  ROOT: \"datasets/coco\"\n  IMAGE_TRANSFORM_TRAIN:\n"
        "    - \"random_resized_crop\"\n    - 'horizontal_flip'\n  IMAGE_TRANSFORM_VAL: [a, \"b\"]\n"
        "  MASKED_LM:\n    MASK_PROPORTION: .15\nMODEL:\n  TEXTUAL:\n    NAME: transdec_postnorm::L1_H64_A2_F128\n"
        "OPTIM:\n  LR_STEPS:\n  - 1  # c\n  - 2\n  LOOKAHEAD:\n    USE: false\n  LR: 1e-4 # x\n",
        "OPTIM:\n  LR_STEPS: [1, 2, 3]\n  NO_DECAY: \"a\\tb\\u00e9\\\"\"\n  BATCH_SIZE: -5\nAMP: yes\n",
    };
    const char alphabet[] = " \t\n:#-[]{},'\"\\0a.eE_|&*!%\r";
    char buf[2048];
    char err[256];
    Config base, c;
    config_defaults(&base);
    int crashes_would_abort = 0, bad = 0, accepted = 0;
    for (int it = 0; it < 20000; it++) {
        const char *s = seeds[it & 1];
        size_t n = strlen(s);
        memcpy(buf, s, n + 1);
        int edits = 1 + (int)(fz_next() % 4);
        for (int e = 0; e < edits; e++) {
            size_t pos = n ? fz_next() % n : 0;
            int op = (int)(fz_next() % 3);
            char ch = alphabet[fz_next() % (sizeof alphabet - 1)];
            if (op == 0 && n) buf[pos] = ch;
            else if (op == 1 && n + 1 < sizeof buf) {
                memmove(buf + pos + 1, buf + pos, n - pos + 1);
                buf[pos] = ch;
                n++;
            } else if (n) {
                memmove(buf + pos, buf + pos + 1, n - pos);
                n--;
            }
            buf[n] = 0;
        }
        memcpy(&c, &base, sizeof c);
        err[0] = 0;
        int rc = config_load_string(&c, buf, "fuzz", err, sizeof err);
        if (rc) {
            if (!err[0] || strchr(err, '\n') || memcmp(&c, &base, sizeof c)) bad++;
        } else {
            accepted++;
        }
        // the same bytes as an override value
        memcpy(&c, &base, sizeof c);
        rc = config_override(&c, (it & 2) ? "DATA.IMAGE_TRANSFORM_VAL" : "OPTIM.LR", buf + (fz_next() % (n + 1)),
                             err, sizeof err);
        if (rc && (!err[0] || memcmp(&c, &base, sizeof c))) bad++;
    }
    check(bad == 0 && !crashes_would_abort, "20000 mutated configs: no crash, one-line errors, "
          "failures leave the config unchanged (%d accepted, %d problems)", accepted, bad);
}

void test_config(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/virtex_config_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        check(0, "mkdtemp failed");
        return;
    }
    test_defaults();
    test_shipped();
    test_inheritance();
    test_overrides();
    test_round_trip();
    test_yaml_forms();
    test_errors();
    test_textual_name();
    test_fuzz();
    cleanup_tmp();
}
