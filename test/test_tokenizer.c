// test/test_tokenizer.c — the SentencePiece BPE tokenizer against the Python library's
// recorded results (test/make_tokenizer_fixtures.py writes test/fixtures/tokenizer_*),
// the vocabulary trainer, and hostile .model files.
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "test.h"

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

// The fixture escapes: \\ \t \n \r \xHH. In place; returns the new length.
static size_t unescape(char *s, size_t n) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 >= n) { s[o++] = s[i]; continue; }
        char c = s[++i];
        if (c == 't') s[o++] = '\t';
        else if (c == 'n') s[o++] = '\n';
        else if (c == 'r') s[o++] = '\r';
        else if (c == 'x' && i + 2 < n + 1 && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            s[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else s[o++] = c;
    }
    s[o] = 0;
    return o;
}

// Split a line at tabs into at most max fields (the line is modified).
static int split_tabs(char *line, char **f, int max) {
    int n = 0;
    f[n++] = line;
    for (char *p = line; *p && n < max; p++)
        if (*p == '\t') { *p = 0; f[n++] = p + 1; }
    return n;
}

static int parse_ids(const char *s, int *ids, int max) {
    int n = 0;
    while (*s && n < max) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s) break;
        ids[n++] = (int)v;
        s = end;
    }
    return n;
}

// ---------------------------------------------------------------------------
// the fixture models

static char **read_train_captions(long *n) {
    size_t len;
    char *text = (char *)slurp(fixture_path("tokenizer_train.txt"), &len);
    if (!text) return NULL;
    long cap = 1024, k = 0;
    char **caps = malloc((size_t)cap * sizeof *caps);
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        if (k == cap) caps = realloc(caps, (size_t)(cap *= 2) * sizeof *caps);
        caps[k++] = caption_normalize(line);    // what `virtex vocab` does to each line
        if (!nl) break;
        line = nl + 1;
    }
    free(text);
    *n = k;
    return caps;
}

static void free_captions(char **caps, long n) {
    for (long i = 0; i < n; i++) free(caps[i]);
    free(caps);
}

#define MAX_MODELS 24
static struct { char tag[48]; Tokenizer *tk; } models[MAX_MODELS];
static int nmodels;
static unsigned char *nfkc_model;            // virtex vocab --normalizer-from small
static size_t nfkc_len;

static Tokenizer *model_for(const char *tag) {
    for (int i = 0; i < nmodels; i++)
        if (!strcmp(models[i].tag, tag)) return models[i].tk;
    if (nmodels == MAX_MODELS) return NULL;
    char err[512], name[96];
    Tokenizer *tk;
    if (!strcmp(tag, "virtex_nfkc")) {
        tk = nfkc_model ? tokenizer_load_memory(nfkc_model, nfkc_len, tag, err, sizeof err) : NULL;
    } else {
        snprintf(name, sizeof name, "tokenizer_%s.model", tag);
        tk = tokenizer_load(fixture_path(name), err, sizeof err);
    }
    check(tk != NULL, "load %s: %s", tag, tk ? "ok" : err);
    snprintf(models[nmodels].tag, sizeof models[nmodels].tag, "%s", tag);
    models[nmodels++].tk = tk;
    return tk;
}

// ---------------------------------------------------------------------------
// parity with the library

typedef struct Stats { char tag[48]; int enc, enc_bad, dec, dec_bad; } Stats;

static void test_parity_cases(void) {
    size_t len;
    char *text = (char *)slurp(fixture_path("tokenizer_cases.txt"), &len);
    check(text != NULL, "read %s", fixture_path("tokenizer_cases.txt"));
    if (!text) return;
    Stats st[MAX_MODELS];
    int nst = 0, shown = 0;
    int *want = malloc(65536 * sizeof *want), *got = malloc(65536 * sizeof *got);
    char *out = malloc(1 << 20);
    for (char *line = text; *line;) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        char *f[8];
        int nf = line[0] == '#' ? 0 : split_tabs(line, f, 8);
        Tokenizer *tk = nf >= 2 ? model_for(f[1]) : NULL;
        Stats *s = NULL;
        if (tk) {
            for (int i = 0; i < nst; i++) if (!strcmp(st[i].tag, f[1])) s = &st[i];
            if (!s && nst < MAX_MODELS) {
                s = &st[nst++];
                memset(s, 0, sizeof *s);
                snprintf(s->tag, sizeof s->tag, "%s", f[1]);
            }
        }
        if (tk && s && !strcmp(f[0], "E") && nf == 6 && !strcmp(f[3], "!")) {
            size_t tl = unescape(f[2], strlen(f[2]));   // the library fails: so do we
            int ng = tokenizer_encode(tk, f[2], tl, got, 65536);
            int np;
            char **pieces = tokenizer_encode_pieces(tk, f[2], tl, &np);
            s->enc++;
            if (ng != -1 || pieces || np != -1) {
                s->enc_bad++;
                if (shown++ < 8) printf("    %s: \"%s\": the library fails, we gave %d ids\n", f[1], f[2], ng);
            }
            free(pieces);
        } else if (tk && s && !strcmp(f[0], "E") && nf == 6) {
            size_t tl = unescape(f[2], strlen(f[2]));
            int nw = parse_ids(f[3], want, 65536);
            int ng = tokenizer_encode(tk, f[2], tl, got, 65536);
            int ok = ng == nw && !memcmp(got, want, (size_t)nw * sizeof *got);
            int np;
            char **pieces = tokenizer_encode_pieces(tk, f[2], tl, &np);
            // (pieces are C strings: a NUL byte in the text cuts its piece short)
            int has_nul = memchr(f[2], 0, tl) != NULL;
            // the expected pieces, space-separated, each escaped
            char *p = f[4];
            int k = 0;
            while (pieces && ok && !has_nul) {
                while (*p == ' ') p++;
                if (!*p) break;
                char *e = p;
                while (*e && *e != ' ') e++;
                char save = *e;
                *e = 0;
                size_t pl = unescape(p, (size_t)(e - p));
                ok = k < np && strlen(pieces[k]) == pl && !memcmp(pieces[k], p, pl);
                k++;
                *e = save;
                p = e;
            }
            ok = ok && pieces && (k == np || has_nul);
            size_t dl = unescape(f[5], strlen(f[5]));
            long gl = tokenizer_decode(tk, want, nw, out, 1 << 20);
            ok = ok && gl == (long)dl && !memcmp(out, f[5], dl);
            s->enc++;
            if (!ok) {
                s->enc_bad++;
                if (shown++ < 8) {
                    printf("    %s: \"%s\"\n      want ids %s\n      got  ids", f[1], f[2], f[3]);
                    for (int i = 0; i < ng && i < 40; i++) printf(" %d", got[i]);
                    printf("\n      got pieces");
                    for (int i = 0; pieces && i < np && i < 40; i++) printf(" [%s]", pieces[i]);
                    printf("\n      want pieces %s\n      decode want \"%s\" got \"%s\"\n", f[4], f[5],
                           gl >= 0 ? out : "(error)");
                }
            }
            free(pieces);
        } else if (tk && s && !strcmp(f[0], "D") && nf == 4) {
            int nw = parse_ids(f[2], want, 65536);
            size_t dl = unescape(f[3], strlen(f[3]));
            long gl = tokenizer_decode(tk, want, nw, out, 1 << 20);
            s->dec++;
            if (!(gl == (long)dl && !memcmp(out, f[3], dl))) {
                s->dec_bad++;
                if (shown++ < 8)
                    printf("    %s: decode %s\n      want \"%s\"\n      got  \"%s\"\n", f[1], f[2],
                           f[3], gl >= 0 ? out : "(error)");
            }
        }
        if (!nl) break;
        line = nl + 1;
    }
    for (int i = 0; i < nst; i++)
        check(st[i].enc_bad == 0 && st[i].dec_bad == 0 && st[i].enc > 0,
              "%-24s %3d encodes (ids, pieces, decode) %2d decodes as sentencepiece (%d differ)",
              st[i].tag, st[i].enc, st[i].dec, st[i].enc_bad + st[i].dec_bad);
    check(nst >= 14, "every fixture model has cases (%d)", nst);
    free(want);
    free(got);
    free(out);
    free(text);
}

// ---------------------------------------------------------------------------
// the trainer

static void test_trainer(void) {
    long n;
    char **caps = read_train_captions(&n);
    check(caps != NULL && n == 4000, "read tokenizer_train.txt (%ld captions)", caps ? n : 0L);
    if (!caps) return;
    char err[512];
    VocabOptions o = {500, NULL, 0};
    size_t len;
    double t0 = now_seconds();
    unsigned char *m = vocab_train((const char *const *)caps, n, &o, &len, err, sizeof err);
    double dt = now_seconds() - t0;
    size_t flen = 0;
    char *fix = (char *)slurp(fixture_path("tokenizer_virtex.model"), &flen);
    check(m && fix && len == flen && !memcmp(m, fix, len),
          "vocab_train (500 pieces, %.3fs) writes tokenizer_virtex.model byte for byte "
          "(else: the trainer changed; rerun test/make_tokenizer_fixtures.py)", dt);
    Tokenizer *tk = m ? tokenizer_load_memory(m, len, "trained", err, sizeof err) : NULL;
    check(tk && tokenizer_size(tk) == 500, "the trained model loads, 500 pieces");
    if (tk) {
        const char *want[4] = {"<unk>", "[SOS]", "[EOS]", "[MASK]"};
        int ok = 1;
        for (int i = 0; i < 4; i++)
            ok &= !strcmp(tokenizer_piece(tk, i), want[i]) &&
                  tokenizer_piece_type(tk, i) == (i ? PIECE_CONTROL : PIECE_UNKNOWN) &&
                  tokenizer_score(tk, i) == 0.0f;
        for (int i = 4; i < 500; i++)
            ok &= tokenizer_piece_type(tk, i) == PIECE_NORMAL && tokenizer_score(tk, i) == -(float)(i - 4);
        check(ok, "ids 0 <unk>, 1 [SOS], 2 [EOS], 3 [MASK]; then scores -0, -1, -2 ...");
        // every merged piece is made of two pieces before it (proper BPE order)
        int first_char = 500;
        for (int i = 4; i < 500; i++) {
            const char *p = tokenizer_piece(tk, i);
            int mb = (unsigned char)p[0] < 0x80 ? 1 : (unsigned char)p[0] < 0xE0 ? 2 : (unsigned char)p[0] < 0xF0 ? 3 : 4;
            if ((int)strlen(p) == mb && first_char == 500) first_char = i;
        }
        int bpe = first_char < 500;
        for (int i = 4; i < first_char && bpe; i++) {
            const char *p = tokenizer_piece(tk, i);
            size_t pl = strlen(p);
            int found = 0;
            for (size_t cut = 1; cut < pl && !found; cut++) {
                char a[64], b[64];
                if (cut >= sizeof a || pl - cut >= sizeof b) break;
                memcpy(a, p, cut); a[cut] = 0;
                memcpy(b, p + cut, pl - cut); b[pl - cut] = 0;
                int ia = tokenizer_piece_id(tk, a), ib = tokenizer_piece_id(tk, b);
                int oka = ia > 3 && (ia < i || ia >= first_char);
                int okb = ib > 3 && (ib < i || ib >= first_char);
                found = oka && okb;
            }
            bpe = found;
        }
        check(bpe, "merged pieces come first (%d), each the join of two earlier pieces or "
              "characters; then the %d characters", first_char - 4, 500 - first_char);
        const char *raw = "\tA\xe3\x80\x80 \xef\xbd\x84og\x01 ";
        char *norm = tokenizer_normalize(tk, raw, strlen(raw), NULL);
        check(norm && !strcmp(norm, "\xe2\x96\x81" "A\xe2\x96\x81" "dog"),
              "built-in normalizer: tab/ideographic space -> space, fullwidth -> ASCII, "
              "controls dropped: \"%s\"", norm ? norm : "(null)");
        free(norm);
    }
    tokenizer_free(tk);
    // deterministic, and the same from a second run
    size_t len2;
    unsigned char *m2 = vocab_train((const char *const *)caps, n, &o, &len2, err, sizeof err);
    check(m && m2 && len == len2 && !memcmp(m, m2, len), "vocab_train is deterministic");
    free(m2);
    // --normalizer-from: the library-trained model's nmt_nfkc charsmap, copied
    Tokenizer *small = model_for("small");
    if (small) {
        VocabOptions o2 = {500, small, 0};
        nfkc_model = vocab_train((const char *const *)caps, n, &o2, &nfkc_len, err, sizeof err);
        check(nfkc_model != NULL, "vocab_train with normalizer_from: %s", nfkc_model ? "ok" : err);
    }
    // sizes out of range
    VocabOptions small_o = {20, NULL, 0}, big_o = {100000, NULL, 0};
    unsigned char *bad = vocab_train((const char *const *)caps, n, &small_o, &len2, err, sizeof err);
    check(!bad && strstr(err, "too small"), "vocab size below the characters: \"%s\"", err);
    free(bad);
    bad = vocab_train((const char *const *)caps, n, &big_o, &len2, err, sizeof err);
    check(!bad && strstr(err, "too large"), "vocab size above what merges can make: \"%s\"", err);
    free(bad);
    free(fix);
    free(m);
    free_captions(caps, n);
}

// The .vocab format: spm_train's file for tokenizer_small.model, byte for byte.
static void test_vocab_file(void) {
    Tokenizer *tk = model_for("small");
    if (!tk) return;
    char path[64];
    snprintf(path, sizeof path, "/tmp/virtex_test_vocab_%d.vocab", (int)getpid());
    FILE *f = fopen(path, "wb");
    int rc = f ? tokenizer_write_vocab(tk, f) : -1;
    if (f) fclose(f);
    size_t a = 0, b = 0;
    char *got = (char *)slurp(path, &a), *want = (char *)slurp(fixture_path("tokenizer_small.vocab"), &b);
    check(!rc && got && want && a == b && !memcmp(got, want, a),
          "tokenizer_write_vocab == the library's tokenizer_small.vocab (%zu bytes)", b);
    remove(path);
    free(got);
    free(want);
    // vocab_write: PREFIX.model + PREFIX.vocab, loadable
    long n;
    char **caps = read_train_captions(&n);
    char err[512], prefix[64];
    snprintf(prefix, sizeof prefix, "/tmp/virtex_test_tok_%d", (int)getpid());
    VocabOptions o = {300, NULL, 0};
    size_t len;
    unsigned char *m = caps ? vocab_train((const char *const *)caps, n, &o, &len, err, sizeof err) : NULL;
    rc = m ? vocab_write(prefix, m, len, err, sizeof err) : -1;
    char mp[80], vp[80];
    snprintf(mp, sizeof mp, "%s.model", prefix);
    snprintf(vp, sizeof vp, "%s.vocab", prefix);
    Tokenizer *t2 = rc ? NULL : tokenizer_load(mp, err, sizeof err);
    char *vocab = (char *)slurp(vp, &a);
    int lines = 0;
    for (size_t i = 0; vocab && i < a; i++) lines += vocab[i] == '\n';
    check(t2 && vocab && lines == 300 && !strncmp(vocab, "<unk>\t0\n[SOS]\t0\n[EOS]\t0\n[MASK]\t0\n", 32) &&
              strstr(vocab, "\t-0\n") && strstr(vocab, "\t-295\n"),
          "vocab_write: PREFIX.model loads, PREFIX.vocab has 300 lines \"piece<TAB>score\"");
    tokenizer_free(t2);
    free(vocab);
    remove(mp);
    remove(vp);
    free(m);
    if (caps) free_captions(caps, n);
}

// ---------------------------------------------------------------------------
// API details

static void test_api(void) {
    Tokenizer *tk = model_for("small");
    if (!tk) return;
    const char *s = "a man riding a wave on top of a surfboard.";
    int all[64], few[3];
    int n = tokenizer_encode(tk, s, strlen(s), all, 64);
    int m = tokenizer_encode(tk, s, strlen(s), few, 3);
    check(n > 3 && m == n && !memcmp(all, few, sizeof few),
          "encode with a short buffer: returns the full count (%d), fills what fits", n);
    char buf[8];
    long full = tokenizer_decode(tk, all, n, NULL, 0);
    long cut = tokenizer_decode(tk, all, n, buf, sizeof buf);
    check(full == (long)strlen(s) && cut == full && strlen(buf) == 7 && !strncmp(buf, s, 7),
          "decode truncates like snprintf and returns the full length (%ld)", full);
    int badid[2] = {5, 999999};
    check(tokenizer_decode(tk, badid, 2, buf, sizeof buf) == -1 &&
              tokenizer_decode(tk, (int[]){-1}, 1, buf, sizeof buf) == -1,
          "decode of an id out of range: -1");
    check(tokenizer_piece(tk, -1) == NULL && tokenizer_piece(tk, tokenizer_size(tk)) == NULL &&
              tokenizer_piece_type(tk, 100000) == 0 && tokenizer_unk_id(tk) == 0 &&
              tokenizer_piece_id(tk, "[SOS]") == 1 && tokenizer_piece_id(tk, "no such") == 0,
          "piece lookups: out of range -> NULL/0, [SOS] -> 1, unknown -> unk");
    // thread safety: the same results from many threads at once
    long nc;
    char **caps = read_train_captions(&nc);
    if (!caps) return;
    int *ser = malloc((size_t)nc * 64 * sizeof *ser), *par = malloc((size_t)nc * 64 * sizeof *par);
    int *sn = malloc((size_t)nc * sizeof *sn), *pn = malloc((size_t)nc * sizeof *pn);
    for (long i = 0; i < nc; i++) sn[i] = tokenizer_encode(tk, caps[i], strlen(caps[i]), ser + i * 64, 64);
#pragma omp parallel for num_threads(4) schedule(dynamic, 16)
    for (long i = 0; i < nc; i++) pn[i] = tokenizer_encode(tk, caps[i], strlen(caps[i]), par + i * 64, 64);
    int same = 1;
    for (long i = 0; i < nc && same; i++)
        same = sn[i] == pn[i] && !memcmp(ser + i * 64, par + i * 64, (size_t)(sn[i] < 64 ? sn[i] : 64) * sizeof *ser);
    check(same, "encoding from 4 threads at once gives the serial results (%ld captions)", nc);
    // speed: captions per second, one thread
    long done = 0;
    double t0 = now_seconds(), dt;
    do {
        for (long i = 0; i < nc; i++) tokenizer_encode(tk, caps[i], strlen(caps[i]), par, 64);
        done += nc;
        dt = now_seconds() - t0;
    } while (dt < 0.3);
    double rate = done / dt;
#if defined(__SANITIZE_ADDRESS__) || !defined(__OPTIMIZE__)
    check(rate > 1000, "encode speed %.0f captions/s, one thread (unoptimised build)", rate);
#else
    check(rate > 100000, "encode speed %.0f captions/s, one thread (nmt_nfkc model; > 100k)", rate);
#endif
    free(ser); free(par); free(sn); free(pn);
    free_captions(caps, nc);
}

// ---------------------------------------------------------------------------
// hostile files

typedef struct Pb { unsigned char *p; size_t n, cap; } Pb;
static void pb_raw(Pb *b, const void *s, size_t n) {
    if (b->n + n > b->cap) { b->cap = (b->n + n) * 2 + 64; b->p = realloc(b->p, b->cap); }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void pb_var(Pb *b, uint64_t v) {
    do {
        unsigned char c = (unsigned char)(v & 0x7F);
        v >>= 7;
        if (v) c |= 0x80;
        pb_raw(b, &c, 1);
    } while (v);
}
static void pb_tag(Pb *b, int f, int wt) { pb_var(b, (uint64_t)f << 3 | (unsigned)wt); }
static void pb_len(Pb *b, int f, const void *s, size_t n) { pb_tag(b, f, 2); pb_var(b, n); pb_raw(b, s, n); }
static void pb_str(Pb *b, int f, const char *s) { pb_len(b, f, s, strlen(s)); }
static void pb_int(Pb *b, int f, int64_t v) { pb_tag(b, f, 0); pb_var(b, (uint64_t)v); }
static void pb_piece(Pb *b, const char *s, float score, int type) {
    Pb p = {0};
    pb_str(&p, 1, s);
    pb_tag(&p, 2, 5);
    pb_raw(&p, &score, 4);
    if (type) pb_int(&p, 3, type);
    pb_len(b, 1, p.p, p.n);
    free(p.p);
}
static void pb_trainer(Pb *b, int model_type, int byte_fallback) {
    Pb t = {0};
    pb_int(&t, 3, model_type);
    if (byte_fallback) pb_int(&t, 35, 1);
    pb_len(b, 2, t.p, t.n);
    free(t.p);
}

// A tiny valid BPE model: <unk>, then a b ab.
static Pb tiny_model(void) {
    Pb b = {0};
    pb_piece(&b, "<unk>", 0, 2);
    pb_piece(&b, "\xe2\x96\x81", -3, 0);
    pb_piece(&b, "a", -1, 0);
    pb_piece(&b, "b", -2, 0);
    pb_piece(&b, "ab", -0.5f, 0);
    return b;
}

static void expect_reject(const char *what, const unsigned char *data, size_t n,
                          const char *needle) {
    char err[512] = "";
    Tokenizer *tk = tokenizer_load_memory(data, n, "hostile.model", err, sizeof err);
    check(!tk && strstr(err, "hostile.model: ") == err && strstr(err, needle),
          "reject %s: \"%s\"", what, tk ? "(loaded!)" : err);
    tokenizer_free(tk);
}

static void encode_some(const Tokenizer *tk) {
    static const char *texts[] = {"a man riding a wave", "  ab  ba\tab ", "\xff\xfe x \xe2\x96\x81",
                                  "ＡＢＣ ａｂｃ 日本", ""};
    int ids[512];
    char out[2048];
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
        int n = tokenizer_encode(tk, texts[i], strlen(texts[i]), ids, 512);
        if (n > 512) n = 512;
        if (n > 0) tokenizer_decode(tk, ids, n, out, sizeof out);
        char **p = tokenizer_encode_pieces(tk, texts[i], strlen(texts[i]), &n);
        free(p);
    }
    int some[6] = {0, 1, 2, 3, 4, 5};
    int k = tokenizer_size(tk) < 6 ? tokenizer_size(tk) : 6;
    tokenizer_decode(tk, some, k, out, sizeof out);
}

static void test_hostile(void) {
    char err[512];
    // the tiny model itself is fine
    Pb b = tiny_model();
    pb_trainer(&b, 2, 0);
    Tokenizer *tk = tokenizer_load_memory(b.p, b.n, "tiny", err, sizeof err);
    int ids[8] = {0};
    int n = tk ? tokenizer_encode(tk, "ab ba", 5, ids, 8) : -1;
    check(tk && n == 5 && ids[0] == 1 && ids[1] == 4 && ids[2] == 1 && ids[3] == 3 && ids[4] == 2,
          "a hand-made model (no normalizer spec) encodes \"ab ba\" -> 1 4 1 3 2 (%d ids)", n);
    tokenizer_free(tk);
    free(b.p);

    b = tiny_model();
    pb_trainer(&b, 1, 0);
    expect_reject("a UNIGRAM model", b.p, b.n, "UNIGRAM model; virtex reads BPE models only");
    free(b.p);
    b = tiny_model();
    pb_trainer(&b, 3, 0);
    expect_reject("a WORD model", b.p, b.n, "WORD");
    free(b.p);
    b = tiny_model();
    expect_reject("no trainer_spec (UNIGRAM by default)", b.p, b.n, "UNIGRAM");
    free(b.p);
    expect_reject("an empty file", (const unsigned char *)"", 0, "UNIGRAM");
    const char *json = "{\"images\": [], \"annotations\": []}";
    expect_reject("a JSON file", (const unsigned char *)json, strlen(json), "not a valid SentencePiece model");

    b = (Pb){0};
    pb_int(&b, 1, 5);                                   // pieces as a varint
    pb_trainer(&b, 2, 0);
    expect_reject("pieces with a varint wire type", b.p, b.n, "wire type varint, expected length-delimited");
    free(b.p);
    b = (Pb){0};
    { Pb p = {0}; pb_str(&p, 1, "<unk>"); pb_int(&p, 2, 7); pb_len(&b, 1, p.p, p.n); free(p.p); }
    expect_reject("a score with a varint wire type", b.p, b.n, "score");
    free(b.p);
    b = tiny_model();
    pb_tag(&b, 1, 2);
    pb_var(&b, (uint64_t)1 << 62);                      // a huge length
    expect_reject("a length of 2^62", b.p, b.n, "only 0 are left");
    free(b.p);
    b = tiny_model();
    pb_tag(&b, 2, 2);
    pb_var(&b, 1000);                                   // longer than the rest
    pb_raw(&b, "\x18\x02", 2);
    expect_reject("a length past the end", b.p, b.n, "says 1000 bytes, only 2 are left");
    free(b.p);
    b = tiny_model();
    pb_raw(&b, "\x10\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 12);  // 11-byte varint
    expect_reject("an 11-byte varint", b.p, b.n, "over-long");
    free(b.p);
    b = tiny_model();
    pb_tag(&b, 7, 3);                                   // a group
    expect_reject("a group", b.p, b.n, "start-group");
    free(b.p);
    b = tiny_model();
    pb_raw(&b, "\x07", 1);                              // field 0, wire type 7
    expect_reject("field number 0", b.p, b.n, "invalid field number 0");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "x", 0, 9);
    expect_reject("a piece type 9", b.p, b.n, "not a piece type");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "", 0, 0);
    pb_trainer(&b, 2, 0);
    expect_reject("an empty piece", b.p, b.n, "piece 5 is empty");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "ab", 0, 0);
    pb_trainer(&b, 2, 0);
    expect_reject("a duplicate piece", b.p, b.n, "defined twice (ids 4 and 5)");
    free(b.p);
    b = (Pb){0};
    pb_piece(&b, "a", 0, 0);
    pb_trainer(&b, 2, 0);
    expect_reject("no unknown piece", b.p, b.n, "no unknown piece");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "<unk2>", 0, 2);
    pb_trainer(&b, 2, 0);
    expect_reject("two unknown pieces", b.p, b.n, "two unknown pieces");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "<0x41>", 0, 6);
    pb_trainer(&b, 2, 0);
    expect_reject("a byte piece without byte_fallback", b.p, b.n, "byte_fallback is off");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "<0x41>", 0, 6);
    pb_trainer(&b, 2, 1);
    expect_reject("byte_fallback with 255 byte pieces missing", b.p, b.n, "<0x00> is missing");
    free(b.p);
    b = tiny_model();
    pb_piece(&b, "<0xg1>", 0, 6);
    pb_trainer(&b, 2, 1);
    expect_reject("a malformed byte piece", b.p, b.n, "is not <0xXX>");
    free(b.p);
    b = tiny_model();
    pb_trainer(&b, 2, 0);
    { Pb nz = {0}; pb_len(&nz, 2, "\xff\x00\x00\x00" "abc", 7); pb_len(&b, 3, nz.p, nz.n); free(nz.p); }
    expect_reject("a charsmap trie larger than the blob", b.p, b.n, "exceeds");
    free(b.p);
    b = tiny_model();
    pb_trainer(&b, 2, 0);
    { Pb nz = {0}; pb_len(&nz, 2, "\x01\x00", 2); pb_len(&b, 3, nz.p, nz.n); free(nz.p); }
    expect_reject("a 2-byte charsmap", b.p, b.n, "charsmap is broken");
    free(b.p);

    // a charsmap of random units and strings without NULs: loads, never reads out of
    // bounds whatever the text
    Rng r;
    rng_seed(&r, 5);
    int survived = 0;
    for (int trial = 0; trial < 50; trial++) {
        b = tiny_model();
        pb_trainer(&b, 2, 0);
        unsigned char blob[4 + 64 + 16];
        uint32_t tsz = 64;
        memcpy(blob, &tsz, 4);
        for (size_t i = 4; i < sizeof blob; i++) blob[i] = (unsigned char)rng_next(&r);
        Pb nz = {0};
        pb_len(&nz, 2, blob, sizeof blob);
        pb_len(&b, 3, nz.p, nz.n);
        free(nz.p);
        tk = tokenizer_load_memory(b.p, b.n, "random charsmap", err, sizeof err);
        if (tk) {
            for (int k = 0; k < 20; k++) {
                char text[24];
                for (int i = 0; i < 24; i++) text[i] = (char)rng_next(&r);
                int got[64];
                tokenizer_encode(tk, text, sizeof text, got, 64);
            }
            encode_some(tk);
            survived++;
        }
        tokenizer_free(tk);
        free(b.p);
    }
    check(survived == 50, "random charsmaps: load and encode random bytes without a fault (%d)", survived);

    // every truncation of a real model: rejected with a message, or (cut at a field
    // boundary after trainer_spec) a smaller model that still works
    size_t len = 0;
    unsigned char *m = (unsigned char *)slurp(fixture_path("tokenizer_identity.model"), &len);
    int rejected = 0, loaded = 0, quiet = 0;
    for (size_t cut = 0; m && cut < len; cut++) {
        err[0] = 0;
        tk = tokenizer_load_memory(m, cut, "cut", err, sizeof err);
        if (tk) { encode_some(tk); loaded++; }
        else { rejected++; quiet += strncmp(err, "cut: ", 5) != 0; }
        tokenizer_free(tk);
    }
    check(m && rejected + loaded == (int)len && quiet == 0 && rejected > (int)len * 9 / 10,
          "all %zu truncations of tokenizer_identity.model: %d rejected with a message, %d "
          "load at a field boundary and encode", len, rejected, loaded);
    free(m);
    m = (unsigned char *)slurp(fixture_path("tokenizer_small.model"), &len);
    rejected = loaded = 0;
    for (size_t k = 0; m && k < 300; k++) {
        size_t cut = k * (len / 300) + k % 7;
        tk = tokenizer_load_memory(m, cut, "cut", err, sizeof err);
        if (tk) { encode_some(tk); loaded++; } else rejected++;
        tokenizer_free(tk);
    }
    check(m && rejected + loaded == 300, "300 truncations of the nmt_nfkc model (inside the "
          "charsmap too): %d rejected, %d load", rejected, loaded);
    // random byte flips of a small model
    int ok = 0;
    for (int trial = 0; m && trial < 300; trial++) {
        unsigned char *c = malloc(len);
        memcpy(c, m, len);
        int flips = 1 + (int)(rng_next(&r) % 8);
        for (int k = 0; k < flips; k++) c[rng_next(&r) % len] ^= (unsigned char)(1 + rng_next(&r) % 255);
        tk = tokenizer_load_memory(c, len, "flipped", err, sizeof err);
        if (tk) encode_some(tk);
        tokenizer_free(tk);
        free(c);
        ok++;
    }
    check(ok == 300, "300 randomly corrupted models: loaded or rejected, never a fault");
    free(m);
    tk = tokenizer_load("/nonexistent/x.model", err, sizeof err);
    check(!tk && strstr(err, "/nonexistent/x.model: No such file"), "a missing file: \"%s\"", err);
}

void test_tokenizer(void) {
    test_trainer();           // first: it makes the virtex_nfkc model the cases need
    test_parity_cases();
    test_vocab_file();
    test_api();
    test_hostile();
    for (int i = 0; i < nmodels; i++) tokenizer_free(models[i].tk);
    nmodels = 0;
    free(nfkc_model);
    nfkc_model = NULL;
}
