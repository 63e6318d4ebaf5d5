// test/test_captions.c — caption decoding and the caption metrics (eval.c 10a).
//
// Beam search and nucleus sampling run on hand-built step functions (Markov tables of
// next-token probabilities) whose best sequences are worked out by hand below: the
// beam beats greedy, ties go to the lower id, finished beams carry only [EOS], the
// previous token is forced to -10000, partial captions lack [SOS] after the first
// beam step (as the original) but keep it in nucleus sampling. decode_captions on the
// tiny model: batched = one image at a time. PTB tokenisation, CIDEr-D and BLEU-1..4
// against test/make_caption_fixtures.py (own Python from the published definitions),
// to 1e-6. `virtex caption` / `virtex eval captions` on a tiny synthetic dataset. ~2 s.
#include <errno.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "test.h"

enum { SOS = 1, EOS = 2, V = 6 };

// ----------------------------------------------------------------------------
// hand-built step functions

// A Markov step: the next-token distribution given the last token of the input, one
// table (V x V probabilities, row = last token) per image; records what it was fed.
typedef struct Markov {
    const double (*table[2])[V];    // per image
    int B;
    int calls, first_T[8], first_n[8], first_tok[8][16];
} Markov;

static void markov_step(void *ctx, const int *tokens, int n, int T, float *out) {
    Markov *mk = ctx;
    if (mk->calls < 8) {
        mk->first_T[mk->calls] = T;
        mk->first_n[mk->calls] = n;
        for (int r = 0; r < n && r < 16; r++) mk->first_tok[mk->calls][r] = tokens[r * T];
    }
    mk->calls++;
    for (int r = 0; r < n; r++) {
        const double (*tab)[V] = mk->table[r / (n / mk->B)];
        int last = tokens[r * T + T - 1];
        for (int v = 0; v < V; v++)
            out[r * V + v] = tab[last][v] > 0 ? (float)log(tab[last][v]) : -INFINITY;
    }
}

// Ids: 0 pad, 1 [SOS], 2 [EOS], 3 4 5 words.
static const double table_a[V][V] = {
    [SOS] = {[3] = .5, [4] = .4, [5] = .1},
    [3] = {[EOS] = .3, [4] = .35, [5] = .35},           // 4 and 5 tie
    [4] = {[EOS] = .9, [3] = .05, [5] = .05},
    [5] = {[EOS] = 1},
    [EOS] = {[EOS] = 1},
};
// table_a with the words 3 and 4 swapped (the second image of a batch)
static const double table_a2[V][V] = {
    [SOS] = {[4] = .5, [3] = .4, [5] = .1},
    [4] = {[EOS] = .3, [3] = .35, [5] = .35},           // ties: 3 before 5
    [3] = {[EOS] = .9, [4] = .05, [5] = .05},
    [5] = {[EOS] = 1},
    [EOS] = {[EOS] = 1},
};
// Repeats are the most likely; 5 can only be followed by 5.
static const double table_rep[V][V] = {
    [SOS] = {[3] = .6, [5] = .4},
    [3] = {[3] = .8, [4] = .15, [EOS] = .05},
    [4] = {[4] = .8, [3] = .15, [EOS] = .05},
    [5] = {[5] = 1},
    [EOS] = {[EOS] = 1},
};

static int seq_is(const int *got, const int *want, int n) {
    for (int i = 0; i < n; i++)
        if (got[i] != want[i]) return 0;
    return 1;
}

static void test_beam(void) {
    // beam 2 on table_a: step 1 keeps [3] (.5), [4] (.4); step 2: [4 EOS] .36 and
    // [3 4] .175 (ties with [3 5]: the lower candidate), not [3 5]; step 3: [4 EOS EOS]
    // .36 and [3 4 EOS] .1575; all ended.
    Markov mk = {{table_a, table_a2}, 2, 0, {0}, {0}, {{0}}};
    int seqs[2 * 10], steps = 0;
    float lp[2];
    beam_search(markov_step, &mk, 2, V, SOS, EOS, 0, 2, 2, 10, seqs, &steps, lp);
    check(steps == 3, "beam 2: stops when every beam ended, after 3 tokens (got %d)", steps);
    check(seq_is(seqs, (int[]){4, EOS, EOS}, 3), "beam 2, image 0: [4 EOS EOS] beats greedy's "
          "[3 4 EOS] (got %d %d %d)", seqs[0], seqs[1], seqs[2]);
    check(seq_is(seqs + 10, (int[]){3, EOS, EOS}, 3), "beam 2, image 1 (3 and 4 swapped): [3 EOS EOS]");
    check(seqs[3] == EOS && seqs[9] == EOS, "beam 2: positions after the last step hold [EOS]");
    check(fabs(lp[0] - log(.36)) < 1e-5 && fabs(lp[1] - log(.36)) < 1e-5,
          "beam 2: log-prob log(.4 * .9) = %.6f (got %.6f, %.6f)", log(.36), lp[0], lp[1]);
    check(mk.first_n[0] == 2 && mk.first_T[0] == 1 && mk.first_tok[0][0] == SOS &&
          mk.first_tok[0][1] == SOS, "beam: the first step sees [SOS] of each image (B rows)");
    check(mk.first_n[1] == 4 && mk.first_T[1] == 1 && mk.first_tok[1][0] == 3 &&
          mk.first_tok[1][1] == 4 && mk.first_tok[1][2] == 4 && mk.first_tok[1][3] == 3,
          "beam: later steps see B*beam rows of the words so far, without [SOS] (the original)");
    // keep_sos: the same search, each later step fed [SOS] + the words so far (the Markov
    // step looks at the last token only, so the result must not change)
    Markov ks = {{table_a, table_a2}, 2, 0, {0}, {0}, {{0}}};
    int seqs2[2 * 10], steps2 = 0;
    float lp2[2];
    beam_search(markov_step, &ks, 2, V, SOS, EOS, 1, 2, 2, 10, seqs2, &steps2, lp2);
    check(steps2 == steps && seq_is(seqs2, seqs, 20) && lp2[0] == lp[0] && lp2[1] == lp[1],
          "beam keep_sos: the same best beams and log-probs");
    check(ks.first_n[1] == 4 && ks.first_T[1] == 2 && ks.first_tok[1][0] == SOS &&
          ks.first_tok[1][3] == SOS && ks.first_T[2] == 3,
          "beam keep_sos: step t sees [SOS] w1..wt (T %d, then %d)", ks.first_T[1], ks.first_T[2]);

    // greedy (beam 1): [3], then 4 (tie with 5: the lower id), then EOS: .5*.35*.9
    Markov g = {{table_a, table_a2}, 2, 0, {0}, {0}, {{0}}};
    beam_search(markov_step, &g, 2, V, SOS, EOS, 0, 1, 2, 10, seqs, &steps, lp);
    check(seq_is(seqs, (int[]){3, 4, EOS}, 3) && steps == 3,
          "greedy: [3 4 EOS], ties to the lower id (got %d %d %d, %d steps)", seqs[0], seqs[1],
          seqs[2], steps);
    check(seq_is(seqs + 10, (int[]){4, 3, EOS}, 3), "greedy, image 1: [4 3 EOS]");
    check(fabs(lp[0] - log(.5 * .35 * .9)) < 1e-5, "greedy: log-prob log(.1575) (got %.6f)", lp[0]);

    // repeat penalty: greedy alternates 3 4 3 4 3 instead of 3 3 3 3 3, up to max_steps
    Markov r = {{table_rep, table_rep}, 1, 0, {0}, {0}, {{0}}};
    beam_search(markov_step, &r, 1, V, SOS, EOS, 0, 1, 2, 5, seqs, &steps, lp);
    check(seq_is(seqs, (int[]){3, 4, 3, 4, 3}, 5) && steps == 5,
          "repeat penalty: greedy [3 4 3 4 3] at max_steps 5 (got %d %d %d %d %d)", seqs[0],
          seqs[1], seqs[2], seqs[3], seqs[4]);
    check(fabs(lp[0] - log(.6 * pow(.15, 4))) < 1e-4, "repeat penalty: log-prob log(.6 * .15^4)");
    // beam 3: [5] must continue with 5 at -10000; finite beams win, [5 5] is kept 3rd
    static const double only5[V][V] = {[SOS] = {[5] = 1}, [5] = {[5] = 1}, [EOS] = {[EOS] = 1}};
    Markov f = {{only5, only5}, 1, 0, {0}, {0}, {{0}}};
    beam_search(markov_step, &f, 1, V, SOS, EOS, 0, 1, 2, 3, seqs, &steps, lp);
    check(seq_is(seqs, (int[]){5, 5, 5}, 3) && fabs(lp[0] - (-20000)) < 1e-2,
          "repeat penalty: the previous token is forced to -10000 (not -inf): [5 5 5], "
          "log-prob -20000 (got %g)", lp[0]);
}

static void test_nucleus(void) {
    // p tiny: only the most likely token is kept; the previous token never drawn
    Markov mk = {{table_rep, table_rep}, 1, 0, {0}, {0}, {{0}}};
    int seqs[4 * 6], steps;
    nucleus_sample(markov_step, &mk, 1, V, SOS, EOS, 0.01f, 6, 7, seqs, &steps);
    // [SOS] -> 3: .6 is over 0.01, so 3 is the whole nucleus
    check(seqs[0] == 3, "nucleus p 0.01: the top token first (got %d)", seqs[0]);
    check(mk.first_T[0] == 1 && mk.first_tok[0][0] == SOS && mk.first_T[1] == 2 &&
          mk.first_tok[1][0] == SOS, "nucleus: every step sees [SOS] first");
    // frequencies: p 0.7 on {.5 .3 .2}: {.5, .3} kept (the first over 0.7 stays)
    static const double three[V][V] = {[SOS] = {[3] = .5, [4] = .3, [5] = .2}};
    enum { N = 4000 };
    int *many = malloc(N * sizeof(int)), count[V] = {0};
    Markov m3 = {{three, three}, 1, 0, {0}, {0}, {{0}}};
    nucleus_sample(markov_step, &m3, N, V, SOS, EOS, 0.7f, 1, 11, many, &steps);
    for (int i = 0; i < N; i++) count[many[i]]++;
    double f3 = count[3] / (double)N, sd = sqrt(.625 * .375 / N);
    check(count[5] == 0 && count[3] + count[4] == N && fabs(f3 - .625) < 4 * sd,
          "nucleus p 0.7 on {.5 .3 .2}: draws 3 %.3f (want .625 +- %.3f), 4 %.3f, 5 never",
          f3, 4 * sd, count[4] / (double)N);
    // finished rows keep [EOS]
    static const double stop[V][V] = {[SOS] = {[EOS] = 1}, [EOS] = {[3] = 1}};
    Markov ms = {{stop, stop}, 1, 0, {0}, {0}, {{0}}};
    nucleus_sample(markov_step, &ms, 1, V, SOS, EOS, 0.9f, 4, 3, seqs, &steps);
    check(seqs[0] == EOS && steps == 1, "nucleus: stops when every row ended (%d steps)", steps);
    free(many);
}

// ----------------------------------------------------------------------------
// the tiny model

static char tmp[256], vocab_prefix[320];

static int model_tiny(Model *m) {
    Config cfg;
    char err[512];
    char *ov[] = {"DATA.TOKENIZER_MODEL", NULL};
    char path[400];
    snprintf(path, sizeof path, "%s.model", vocab_prefix);
    ov[1] = path;
    if (config_load(&cfg, "configs/small/tiny_test.yaml", 2, ov, err, sizeof err) ||
        model_build(m, &cfg, err, sizeof err)) {
        check(0, "tiny model: %s", err);
        return -1;
    }
    return 0;
}

static void test_decode_model(void) {
    Model m;
    if (model_tiny(&m)) return;
    int S = m.cfg.DATA.IMAGE_CROP_SIZE, B = 3, T = 12;
    float *img = malloc((size_t)B * 3 * S * S * sizeof(float));
    Rng rng;
    rng_seed(&rng, 5);
    for (long i = 0; i < (long)B * 3 * S * S; i++) img[i] = (float)rng_normal(&rng);
    for (int method = 0; method < 3; method++) {
        DecodeOptions o = {method, 3, 0.9f, T, 42, 0};
        int tok[3 * 12], len[3], one[12], len1, same = 1, ok_len = 1;
        decode_captions(&m, img, B, S, &o, tok, len);
        for (int b = 0; b < B; b++) {
            DecodeOptions ob = o;
            ob.seed = o.seed + b;                     // row b of the batch: seed + b
            decode_captions(&m, img + (size_t)b * 3 * S * S, 1, S, &ob, one, &len1);
            same &= len1 == len[b] && seq_is(one, tok + b * T, len1);
            ok_len &= len[b] >= 0 && len[b] <= T;
            for (int i = 0; i < len[b]; i++) ok_len &= tok[b * T + i] != EOS && tok[b * T + i] < m.V;
        }
        const char *name[] = {"greedy", "beam 3", "nucleus"};
        check(same, "decode_captions %s: a batch of 3 = each image alone (lengths %d %d %d)",
              name[method], len[0], len[1], len[2]);
        check(ok_len, "decode_captions %s: no [EOS] in the tokens, lengths <= max_steps", name[method]);
    }
    // attention maps: a distribution over the 2 x 2 grid per word
    DecodeOptions o = {DECODE_BEAM, 3, 0.9f, T, 0, 0};
    int tok[12], len, h = 0, w = 0;
    decode_captions(&m, img, 1, S, &o, tok, &len);
    float maps[12 * 4];
    caption_attention(&m, img, S, &o, tok, len, maps, &h, &w);
    int ok = h == 2 && w == 2 && len > 0;
    for (int i = 0; i < len; i++) {
        double s = 0;
        for (int j = 0; j < 4; j++) { s += maps[i * 4 + j]; ok &= maps[i * 4 + j] >= 0; }
        ok &= fabs(s - 1) < 1e-5;
    }
    check(ok, "caption_attention: %d maps over a %dx%d grid, each sums to 1", len, h, w);
    free(img);
    model_free(&m);
}

// ----------------------------------------------------------------------------
// metrics against the Python reference

static void test_metrics(void) {
    Json *doc;
    char err[512];
    if (json_parse_file(&doc, fixture_path("caption_metrics.json"), err, sizeof err)) {
        check(0, "fixture: %s (run test/make_caption_fixtures.py)", err);
        return;
    }
    const JsonValue *tk = json_get(json_root(doc), "tokenize");
    int ok = 1;
    for (int i = 0; i < json_len(tk); i++) {
        const char *in = json_string(json_at(json_at(tk, i), 0));
        const char *want = json_string(json_at(json_at(tk, i), 1));
        char *got = ptb_tokenize(in);
        if (strcmp(got, want)) {
            ok = 0;
            printf("       ptb_tokenize(\"%s\")\n         got  \"%s\"\n         want \"%s\"\n", in, got, want);
        }
        free(got);
    }
    check(ok, "ptb_tokenize: %d cases as the Python reference", json_len(tk));
    const JsonValue *corpora = json_get(json_root(doc), "corpora");
    for (int c = 0; c < json_len(corpora); c++) {
        const JsonValue *cp = json_at(corpora, c);
        int n = json_len(json_get(cp, "hyps"));
        const char **hyps = calloc(n, sizeof(char *));
        const char ***refs = calloc(n, sizeof(char **));
        int *nrefs = calloc(n, sizeof(int));
        for (int i = 0; i < n; i++) {
            const JsonValue *r = json_at(json_get(cp, "refs"), i);
            hyps[i] = json_string(json_at(json_get(cp, "hyps"), i));
            nrefs[i] = json_len(r);
            refs[i] = calloc(nrefs[i], sizeof(char *));
            for (int j = 0; j < nrefs[i]; j++) refs[i][j] = json_string(json_at(r, j));
        }
        CaptionScores s;
        double *per = calloc(n, sizeof(double)), maxd = 0;
        caption_scores(hyps, (const char *const *const *)refs, nrefs, n, &s, per);
        double want_c = json_number(json_get(cp, "cider"));
        maxd = fabs(s.cider - want_c);
        for (int i = 0; i < n; i++) {
            double d = fabs(per[i] - json_number(json_at(json_get(cp, "cider_per_image"), i)));
            maxd = d > maxd ? d : maxd;
        }
        double maxb = 0;
        for (int k = 0; k < 4; k++) {
            double d = fabs(s.bleu[k] - json_number(json_at(json_get(cp, "bleu"), k)));
            maxb = d > maxb ? d : maxb;
        }
        check(maxd < 1e-6 && maxb < 1e-6, "corpus %d (%2d images): CIDEr-D %.6f (want %.6f), "
              "BLEU-4 %.6f; max |diff| CIDEr %.1e, BLEU %.1e", c, n, s.cider, want_c, s.bleu[3],
              maxd, maxb);
        for (int i = 0; i < n; i++) free(refs[i]);
        free(hyps); free(refs); free(nrefs); free(per);
    }
    json_free(doc);
}

// ----------------------------------------------------------------------------
// the commands

static Run run(const char *args) { return run_virtex(tmp, args); }

static int lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void test_commands(void) {
    char args[2048], ckpt[320], preds[320], att[320];
    snprintf(ckpt, sizeof ckpt, "%s/tiny.ckpt", tmp);
    snprintf(preds, sizeof preds, "%s/preds.json", tmp);
    snprintf(att, sizeof att, "%s/att", tmp);
    Model m;
    if (model_tiny(&m)) return;
    char err[512];
    int saved = checkpoint_save(&m, ckpt, err, sizeof err) == 0;
    check(saved, "checkpoint_save %s%s", ckpt, saved ? "" : err);

    // caption: the captions of the checkpoint's model, in-process, for the same images
    snprintf(args, sizeof args, "caption --checkpoint %s --images %s/val2017 --beam 3 --out %s "
             "--attention %s", ckpt, tmp, preds, att);
    Run r = run(args);
    CocoCaptions cc;
    int ok = coco_captions_load(&cc, tmp, "val", err, sizeof err) == 0;
    check(ok, "coco_captions_load %s", ok ? "" : err);
    if (!ok) { run_free(&r); model_free(&m); return; }
    check(r.code == 0 && lines(r.out) == cc.n, "virtex caption: exit 0, one line per image "
          "(%d lines, %d images)%s%s", lines(r.out), cc.n, *r.err ? ": " : "", r.err);
    int S = m.cfg.DATA.IMAGE_CROP_SIZE, same = 1;
    char **paths = calloc(cc.n, sizeof(char *));
    float *img = malloc((size_t)cc.n * 3 * S * S * sizeof(float));
    for (int i = 0; i < cc.n; i++) {
        paths[i] = malloc(512);
        snprintf(paths[i], 512, "%s/%s", cc.image_dir, cc.images[i].file_name);
    }
    check(load_images_val(&m.cfg, (const char *const *)paths, cc.n, img, err, sizeof err) == 0,
          "load_images_val");
    Tokenizer *tk = tokenizer_load(m.cfg.DATA.TOKENIZER_MODEL, err, sizeof err);
    DecodeOptions o = decode_options_from_config(&m.cfg);
    o.method = DECODE_BEAM;
    o.beam_size = 3;
    int *tok = malloc((size_t)cc.n * o.max_steps * sizeof(int)), *len = malloc(cc.n * sizeof(int));
    decode_captions(&m, img, cc.n, S, &o, tok, len);
    const char *line = r.out;
    for (int i = 0; i < cc.n && tk; i++) {
        char text[512], want[1024];
        tokenizer_decode(tk, tok + (size_t)i * o.max_steps, len[i], text, sizeof text);
        snprintf(want, sizeof want, "%s\t%s\n", paths[i], text);
        same &= !strncmp(line, want, strlen(want));
        line = strchr(line, '\n') ? strchr(line, '\n') + 1 : line;
    }
    check(same, "virtex caption --checkpoint: the lines are decode_captions' of the saved model");
    int64_t *ids = NULL;
    char **caps = NULL;
    int n = 0;
    ok = read_coco_results(preds, &ids, &caps, &n, err, sizeof err) == 0 && n == cc.n;
    for (int i = 0; ok && i < n; i++) ok &= ids[i] == cc.images[i].id;
    check(ok, "--out: COCO results JSON with the image ids of the file names (%d entries)", n);
    char png[400];
    snprintf(png, sizeof png, "%s/%012lld.png", att, (long long)cc.images[0].id);
    Image pic;
    ok = image_load(&pic, png, err, sizeof err) == 0;
    check(ok && pic.w > 2 * S && pic.h > S, "--attention: %s decodes (%dx%d)", png, pic.w, pic.h);
    image_free(&pic);
    run_free(&r);

    // eval captions --predictions: the scores of caption_scores on the same pairs
    snprintf(args, sizeof args, "eval captions --predictions %s --data %s", preds, tmp);
    r = run(args);
    const char **refs[64];
    int nrefs[64];
    for (int i = 0; i < n && i < 64; i++) {
        refs[i] = (const char **)cc.images[i].captions;
        nrefs[i] = cc.images[i].ncaptions;
    }
    CaptionScores s;
    caption_scores((const char *const *)caps, (const char *const *const *)refs, nrefs, n, &s, NULL);
    char want[128];
    snprintf(want, sizeof want, "CIDEr-D  %.4f", s.cider);
    check(r.code == 0 && strstr(r.out, want) && strstr(r.out, "BLEU-4"),
          "virtex eval captions --predictions: exit %d, prints '%s'", r.code, want);
    run_free(&r);
    // the whole split decoded with random weights
    snprintf(args, sizeof args, "eval captions --weights random --config configs/small/tiny_test.yaml "
             "--data %s --beam 2 DATA.TOKENIZER_MODEL %s.model", tmp, vocab_prefix);
    r = run(args);
    check(r.code == 0 && strstr(r.out, "CIDEr-D") && strstr(r.out, "scored 2 of 2"),
          "virtex eval captions --weights random: decodes and scores the split (exit %d)%s",
          r.code, r.err);
    run_free(&r);

    // errors: one line, non-zero exit
    FILE *f = fopen(preds, "w");
    fprintf(f, "[{\"image_id\": 999999, \"caption\": \"a dog\"}]");
    fclose(f);
    snprintf(args, sizeof args, "eval captions --predictions %s --data %s", preds, tmp);
    r = run(args);
    check(r.code == 1 && lines(r.err) == 1 && strstr(r.err, "[0].image_id: 999999"),
          "unknown image id: exit 1, one line naming the entry: %s", r.err);
    run_free(&r);
    f = fopen(preds, "w");
    fprintf(f, "[{\"image_id\": 1, \"caption\": 3}]");
    fclose(f);
    r = run(args);
    check(r.code == 1 && strstr(r.err, "[0].caption: expected a string"),
          "caption not a string: exit 1: %s", r.err);
    run_free(&r);
    snprintf(args, sizeof args, "caption --checkpoint %s --images %s/val2017 --beam 2 --nucleus 0.9",
             ckpt, tmp);
    r = run(args);
    check(r.code == 2, "--beam with --nucleus: usage error, exit 2 (got %d)", r.code);
    run_free(&r);
    snprintf(args, sizeof args, "caption --checkpoint %s --images %s/nothing", ckpt, tmp);
    r = run(args);
    check(r.code == 1 && lines(r.err) == 1 && strstr(r.err, "nothing"),
          "missing image: exit 1, one line: %s", r.err);
    run_free(&r);

    for (int i = 0; i < cc.n; i++) free(paths[i]);
    for (int i = 0; i < n; i++) free(caps[i]);
    free(paths); free(img); free(tok); free(len); free(ids); free(caps);
    tokenizer_free(tk);
    coco_captions_free(&cc);
    model_free(&m);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

// A tiny shapes dataset (20 train, 2 val images) and a 100-piece vocabulary.
static int make_data(void) {
    snprintf(tmp, sizeof tmp, "/tmp/virtex_captions_XXXXXX");
    if (!mkdtemp(tmp)) { check(0, "mkdtemp: %s", strerror(errno)); return -1; }
    SynthOptions o;
    synth_default_options(&o);
    o.out = tmp;
    o.images = 20;
    o.quiet = 1;
    char err[512];
    rmdir(tmp);                                     // synth refuses a non-synth directory
    if (synth_dataset(&o, err, sizeof err)) { check(0, "synth_dataset: %s", err); return -1; }
    char path[400], **caps;
    long n;
    snprintf(path, sizeof path, "%s/annotations/captions_train2017.json", tmp);
    if (coco_read_captions(path, &caps, &n, err, sizeof err)) { check(0, "%s", err); return -1; }
    VocabOptions vo = {100, NULL, 0};
    size_t len;
    unsigned char *model = vocab_train((const char *const *)caps, n, &vo, &len, err, sizeof err);
    snprintf(vocab_prefix, sizeof vocab_prefix, "%s/vocab", tmp);
    int rc = model && !vocab_write(vocab_prefix, model, len, err, sizeof err) ? 0 : -1;
    if (rc) check(0, "vocab: %s", err);
    free(model);
    free(caps);
    return rc;
}

void test_captions(void) {
    test_beam();
    test_nucleus();
    test_metrics();
    if (make_data() == 0) {
        test_decode_model();
        test_commands();
    }
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
