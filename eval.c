// eval.c — what a trained VirTex is measured by: captions (decoding, CIDEr-D, BLEU,
// attention maps) and the transfer of its ResNet (pooled features, VOC07 SVMs, the
// ImageNet linear probe). model.h section 10 lists what is here.
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <stb/stb_image_write.h>
#include "model.h"

// ----------------------------------------------------------------------------
// 10a. captions: decoding and metrics

// ---- decoding: beam search and nucleus sampling over a step callback

// In-place log_softmax of one row (max-subtracted, the sum in double).
static void log_softmax_row(float *x, int V) {
    float mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    double s = 0;
    for (int v = 0; v < V; v++) s += exp((double)x[v] - mx);
    float lse = mx + (float)log(s);
    for (int v = 0; v < V; v++) x[v] -= lse;
}

// The k largest of x (n), descending; ties keep the lower index first (as a stable
// sort). idx, val (k). k <= n.
static void topk(const float *x, int n, int k, int *idx, float *val) {
    int have = 0;
    for (int i = 0; i < n; i++) {
        float v = x[i];
        if (have == k && !(v > val[k - 1])) continue;
        int j = have < k ? have++ : k - 1;
        while (j > 0 && v > val[j - 1]) { val[j] = val[j - 1]; idx[j] = idx[j - 1]; j--; }
        val[j] = v;
        idx[j] = i;
    }
}

void beam_search(DecodeStepFn step, void *ctx, int B, int V, int sos, int eos, int keep_sos,
                 int beam, int per_node, int max_steps, int *seqs, int *steps, float *logprob) {
    beam = beam < V ? beam : V;
    per_node = per_node < V ? per_node : V;
    int R = B * beam, C = beam * per_node;            // rows, candidates per image
    float *lp = xmalloc((size_t)R * V * sizeof(float)), *last = xmalloc(R * sizeof(float));
    int *cur = xmalloc((size_t)R * max_steps * sizeof(int));
    int *next = xmalloc((size_t)R * max_steps * sizeof(int));
    int *in = xmalloc((size_t)R * (max_steps + 1) * sizeof(int));
    float *cand = xmalloc((size_t)B * C * sizeof(float)), *top = xmalloc(C * sizeof(float));
    int *cand_tok = xmalloc((size_t)B * C * sizeof(int)), *pick = xmalloc(C * sizeof(int));
    // the first step: [SOS] of each image, its top `beam` tokens start the beams
    for (int b = 0; b < B; b++) in[b] = sos;
    step(ctx, in, B, 1, lp);
    for (int b = 0; b < B; b++) {
        log_softmax_row(lp + (size_t)b * V, V);
        topk(lp + (size_t)b * V, V, beam, pick, top);
        for (int k = 0; k < beam; k++) {
            cur[(size_t)(b * beam + k) * max_steps] = pick[k];
            last[b * beam + k] = top[k];
        }
    }
    int T = 1;
    for (int t = 0; t < max_steps - 1; t++) {
        int all_eos = 1;
        for (int r = 0; r < R; r++) all_eos &= cur[(size_t)r * max_steps + T - 1] == eos;
        if (all_eos) break;
        int W = T + (keep_sos != 0);            // the partial captions (with [SOS]?)
        for (int r = 0; r < R; r++) {
            if (keep_sos) in[(size_t)r * W] = sos;
            memcpy(in + (size_t)r * W + (keep_sos != 0), cur + (size_t)r * max_steps, T * sizeof(int));
        }
        step(ctx, in, R, W, lp);
        for (int r = 0; r < R; r++) {
            float *row = lp + (size_t)r * V, *c = cand + (size_t)r * per_node;
            int *ct = cand_tok + (size_t)r * per_node, prev = cur[(size_t)r * max_steps + T - 1];
            if (prev == eos) {                  // ended: only [EOS] again, at no cost
                for (int j = 0; j < per_node; j++) {
                    ct[j] = j == 0 ? eos : (j - 1 < eos ? j - 1 : j);   // -inf ties: low ids
                    c[j] = j == 0 ? last[r] : -INFINITY;
                }
                continue;
            }
            log_softmax_row(row, V);
            row[prev] = -10000.0f;              // the repeat penalty
            topk(row, V, per_node, ct, c);
            for (int j = 0; j < per_node; j++) c[j] += last[r];
        }
        for (int b = 0; b < B; b++) {          // the best `beam` of beam*per_node
            topk(cand + (size_t)b * C, C, beam, pick, top);
            for (int k = 0; k < beam; k++) {
                int parent = b * beam + pick[k] / per_node, r = b * beam + k;
                memcpy(next + (size_t)r * max_steps, cur + (size_t)parent * max_steps,
                       T * sizeof(int));
                next[(size_t)r * max_steps + T] = cand_tok[(size_t)b * C + pick[k]];
                last[r] = top[k];
            }
        }
        int *swap = cur; cur = next; next = swap;
        T++;
    }
    for (int b = 0; b < B; b++) {
        for (int i = 0; i < max_steps; i++)
            seqs[(size_t)b * max_steps + i] = i < T ? cur[(size_t)b * beam * max_steps + i] : eos;
        if (logprob) logprob[b] = last[b * beam];
    }
    *steps = T;
    free(lp); free(last); free(cur); free(next); free(in);
    free(cand); free(top); free(cand_tok); free(pick);
}

// Indices sorted by value descending, ties by index (for the nucleus).
static const float *sort_keys;
static int by_value_desc(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (sort_keys[i] != sort_keys[j]) return sort_keys[i] > sort_keys[j] ? -1 : 1;
    return (i > j) - (i < j);
}

// One nucleus draw from logits x (V), the previous token prev; x is overwritten.
static int nucleus_draw(float *x, int V, float p, int prev, int *order, double *prob, Rng *rng) {
    for (int v = 0; v < V; v++) order[v] = v;
    sort_keys = x;
    qsort(order, V, sizeof(int), by_value_desc);
    double mx = x[order[0]], s = 0, cum = 0;
    for (int v = 0; v < V; v++) s += exp((double)x[v] - mx);
    int keep = V;                     // sorted positions >= keep are removed
    for (int i = 0; i < V; i++) {
        cum += exp((double)x[order[i]] - mx) / s;
        if (cum > p) { keep = i + 1; break; }   // the first one over p stays
    }
    for (int i = keep; i < V; i++) x[order[i]] = -1e12f;
    x[prev] = -1e12f;
    mx = -INFINITY;
    for (int v = 0; v < V; v++) mx = x[v] > mx ? x[v] : mx;
    s = 0;
    for (int v = 0; v < V; v++) s += prob[v] = exp((double)x[v] - mx);
    double u = rng_uniform(rng) * s, acc = 0;
    for (int v = 0; v < V; v++)
        if ((acc += prob[v]) > u) return v;
    return order[0];
}

void nucleus_sample(DecodeStepFn step, void *ctx, int B, int V, int sos, int eos, float p,
                    int max_steps, uint64_t seed, int *seqs, int *steps) {
    int W = max_steps + 1;                            // [SOS] + the tokens
    int *seq = xmalloc((size_t)B * W * sizeof(int)), *in = xmalloc((size_t)B * W * sizeof(int));
    int *order = xmalloc(V * sizeof(int));
    float *logits = xmalloc((size_t)B * V * sizeof(float));
    double *prob = xmalloc(V * sizeof(double));
    Rng *rng = xmalloc(B * sizeof(Rng));
    for (int b = 0; b < B; b++) { seq[(size_t)b * W] = sos; rng_seed(&rng[b], seed + b); }
    int T = 1;
    for (; T <= max_steps; T++) {
        int all_eos = 1;
        for (int b = 0; b < B; b++) all_eos &= seq[(size_t)b * W + T - 1] == eos;
        if (all_eos) break;
        for (int b = 0; b < B; b++) memcpy(in + (size_t)b * T, seq + (size_t)b * W, T * sizeof(int));
        step(ctx, in, B, T, logits);
        for (int b = 0; b < B; b++) {
            int prev = seq[(size_t)b * W + T - 1];
            seq[(size_t)b * W + T] = prev == eos ? eos
                : nucleus_draw(logits + (size_t)b * V, V, p, prev, order, prob, &rng[b]);
        }
    }
    *steps = T - 1;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < max_steps; i++)
            seqs[(size_t)b * max_steps + i] = i < T - 1 ? seq[(size_t)b * W + 1 + i] : eos;
    free(seq); free(in); free(order); free(logits); free(prob); free(rng);
}

// ---- decoding with the model

// The model as a step function: the textual head (forward direction) on the partial
// captions, the visual memory already computed (repeated per beam for beam rows).
typedef struct ModelStep {
    Model *m;
    Graph *g;                       // reset at every step
    Tensor *mem, *mem_beam;         // (B,HW,D), (B*beam,HW,D)
    int B;
} ModelStep;

static void model_step(void *ctx, const int *tokens, int n, int T, float *out) {
    ModelStep *s = ctx;
    Model *m = s->m;
    graph_reset(s->g);
    int *lens = arena_alloc(&s->g->meta, (size_t)n * sizeof(int));
    for (int i = 0; i < n; i++) lens[i] = T;
    Tensor *logits = textual_forward(s->g, m, &m->fwd, n == s->B ? s->mem : s->mem_beam,
                                     tokens, lens, n, T);
    const Backend *be = backend_for(s->g->device);
    for (int i = 0; i < n; i++)                // the last position's logits
        be->to_host(out + (size_t)i * m->V, logits->data + ((size_t)i * T + T - 1) * m->V,
                    (size_t)m->V * sizeof(float));
}

// An eval-mode, no-grad graph on the model's device.
static void eval_graph(Graph *g, Model *m) {
    graph_init(g, m->tensors[0].device, 0);
    g->grad_enabled = 0;
    g->training = 0;
}

// The visual memory (B,HW,D) of B normalised images, in graph g; grid size in h, w.
static Tensor *image_memory(Graph *g, Model *m, const float *images, int B, int S, int *h,
                            int *w) {
    Tensor *x = tensor_new(g, 4, (int[]){B, 3, S, S});
    backend_for(g->device)->from_host(x->data, images, x->numel * sizeof(float));
    Tensor *visual = visual_forward(g, m, x);
    if (h) *h = visual->shape[2];
    if (w) *w = visual->shape[3];
    return visual_memory(g, m, visual);
}

// mem (B,HW,D) with each image's rows repeated k times: (B*k,HW,D), image-major.
static Tensor *repeat_rows(Graph *g, Tensor *mem, int k) {
    int B = mem->shape[0];
    size_t row = (size_t)mem->shape[1] * mem->shape[2];
    const Backend *be = backend_for(g->device);
    float *host = xmalloc((size_t)B * row * sizeof(float));
    be->to_host(host, mem->data, (size_t)B * row * sizeof(float));
    Tensor *out = tensor_new(g, 3, (int[]){B * k, mem->shape[1], mem->shape[2]});
    for (int b = 0; b < B; b++)
        for (int j = 0; j < k; j++)
            be->from_host(out->data + (size_t)(b * k + j) * row, host + (size_t)b * row,
                          row * sizeof(float));
    free(host);
    return out;
}

DecodeOptions decode_options_from_config(const Config *cfg) {
    DecodeOptions o = {DECODE_BEAM, cfg->MODEL.DECODER.BEAM_SIZE, cfg->MODEL.DECODER.NUCLEUS_SIZE,
                       cfg->MODEL.DECODER.MAX_DECODING_STEPS, (uint64_t)cfg->RANDOM_SEED, 0};
    if (!strcmp(cfg->MODEL.DECODER.NAME, "nucleus_sampling")) o.method = DECODE_NUCLEUS;
    else if (o.beam_size == 1) o.method = DECODE_GREEDY;
    return o;
}

void decode_captions(Model *m, const float *images, int B, int S, const DecodeOptions *o,
                     int *tokens, int *len) {
    int sos = m->cfg.DATA.SOS_INDEX, eos = m->cfg.DATA.EOS_INDEX;
    int steps = o->max_steps < m->max_len ? o->max_steps : m->max_len, T = 0;
    if (steps < 1) {
        memset(len, 0, (size_t)B * sizeof(int));
        return;
    }
    int beam = o->method == DECODE_BEAM ? o->beam_size : 1;
    Graph gv, gt;
    eval_graph(&gv, m);
    eval_graph(&gt, m);
    ModelStep s = {m, &gt, NULL, NULL, B};
    s.mem = image_memory(&gv, m, images, B, S, NULL, NULL);   // once per image
    s.mem_beam = beam > 1 ? repeat_rows(&gv, s.mem, beam) : s.mem;
    int *seqs = xmalloc((size_t)B * steps * sizeof(int));
    if (o->method == DECODE_NUCLEUS)
        nucleus_sample(model_step, &s, B, m->V, sos, eos, o->nucleus_p, steps, o->seed, seqs, &T);
    else
        beam_search(model_step, &s, B, m->V, sos, eos, o->keep_sos, beam, 2, steps, seqs, &T, NULL);
    for (int b = 0; b < B; b++) {               // up to the first [EOS]
        len[b] = 0;
        while (len[b] < T && seqs[(size_t)b * steps + len[b]] != eos) {
            tokens[(size_t)b * o->max_steps + len[b]] = seqs[(size_t)b * steps + len[b]];
            len[b]++;
        }
    }
    free(seqs);
    graph_free(&gt);
    graph_free(&gv);
}

// Head-averaged cross-attention of the last layer for queries q0.. of one forward pass
// over tokens (T) into maps (T, HW).
static void attention_pass(Graph *g, Model *m, Tensor *mem, const int *tokens, int T,
                           float *maps) {
    float **probs = arena_alloc(&g->meta, m->L * sizeof(float *));
    g->cross_attention = probs;
    int *lens = arena_alloc(&g->meta, sizeof(int));
    *lens = T;
    textual_forward(g, m, &m->fwd, mem, tokens, lens, 1, T);
    int HW = mem->shape[1], NH = m->NH;
    float *host = xmalloc((size_t)NH * T * HW * sizeof(float));
    backend_for(g->device)->to_host(host, probs[m->L - 1], (size_t)NH * T * HW * sizeof(float));
    for (int q = 0; q < T; q++)
        for (int j = 0; j < HW; j++) {
            double s = 0;
            for (int h = 0; h < NH; h++) s += host[((size_t)h * T + q) * HW + j];
            maps[(size_t)q * HW + j] = (float)(s / NH);
        }
    free(host);
    g->cross_attention = NULL;
    graph_reset(g);
}

void caption_attention(Model *m, const float *image, int S, const DecodeOptions *o,
                       const int *tokens, int len, float *maps, int *h, int *w) {
    Graph gv, gt;
    eval_graph(&gv, m);
    eval_graph(&gt, m);
    Tensor *mem = image_memory(&gv, m, image, 1, S, h, w);
    int HW = mem->shape[1], sos = m->cfg.DATA.SOS_INDEX;
    int *in = xmalloc((size_t)(len + 1) * sizeof(int));
    if (len > 0 && (o->method == DECODE_NUCLEUS || o->keep_sos)) {   // fed [SOS] w1 .. w(len-1)
        in[0] = sos;
        memcpy(in + 1, tokens, (size_t)(len - 1) * sizeof(int));
        attention_pass(&gt, m, mem, in, len, maps);
    } else if (len > 0) {                             // fed [SOS], then w1 .. wt
        in[0] = sos;
        attention_pass(&gt, m, mem, in, 1, maps);
        if (len > 1) attention_pass(&gt, m, mem, tokens, len - 1, maps + HW);
    }
    free(in);
    graph_free(&gt);
    graph_free(&gv);
}

// ---- PTB tokenisation (coco-caption's ptbtokenizer.py, rules in model.h)

static int ptb_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

// Is s[i] a separator: a character the PTB tokenizer makes a token that coco-caption
// then removes (a comma or colon between two digits is part of a number).
static int ptb_separator(const char *s, size_t i, size_t n) {
    char c = s[i];
    if (c && strchr("\"()[]{};?!", c)) return 1;
    if (c != ',' && c != ':') return 0;
    int digits = i > 0 && isdigit((unsigned char)s[i - 1]) && i + 1 < n &&
                 isdigit((unsigned char)s[i + 1]);
    return !digits;
}

// Append s[a,b) as one token.
static void ptb_emit(char *out, size_t *o, const char *s, size_t a, size_t b) {
    if (b <= a) return;
    if (*o) out[(*o)++] = ' ';
    memcpy(out + *o, s + a, b - a);
    *o += b - a;
    out[*o] = 0;
}

// One piece s[a,b) between separators: strip quotes and final dots, drop what is only
// dashes and dots, split off a clitic.
static void ptb_piece(char *out, size_t *o, const char *s, size_t a, size_t b) {
    for (int changed = 1; changed && a < b;) {
        changed = 0;
        while (a < b && (s[a] == '\'' || s[a] == '`')) a++;
        while (b > a && (s[b - 1] == '\'' || s[b - 1] == '`')) b--;
        size_t d = 0;
        while (d < b - a && s[b - 1 - d] == '.') d++;
        int inner = d == 1 && memchr(s + a, '.', b - a - 1) != NULL;
        if (d >= 2 || (d == 1 && !inner)) { b -= d; changed = 1; }
    }
    int only_marks = 1;
    for (size_t i = a; i < b; i++) only_marks &= s[i] == '-' || s[i] == '.';
    if (only_marks) return;
    static const char *const clitics[] = {"n't", "'s", "'re", "'ve", "'d", "'ll", "'m"};
    for (int k = 0; k < 7; k++) {
        size_t L = strlen(clitics[k]);
        if (b - a > L && !memcmp(s + b - L, clitics[k], L)) {
            ptb_emit(out, o, s, a, b - L);
            ptb_emit(out, o, s, b - L, b);
            return;
        }
    }
    ptb_emit(out, o, s, a, b);
}

char *ptb_tokenize(const char *text) {
    size_t n = strlen(text), o = 0;
    char *s = xmalloc(n + 1), *out = xmalloc(2 * n + 2);   // a clitic split adds a space
    for (size_t i = 0; i <= n; i++)                         // lower-case ASCII only
        s[i] = text[i] >= 'A' && text[i] <= 'Z' ? (char)(text[i] - 'A' + 'a') : text[i];
    out[0] = 0;
    for (size_t i = 0; i < n;) {
        if (ptb_space(s[i]) || ptb_separator(s, i, n)) { i++; continue; }
        size_t j = i;
        while (j < n && !ptb_space(s[j]) && !ptb_separator(s, j, n)) j++;
        ptb_piece(out, &o, s, i, j);
        i = j;
    }
    free(s);
    return out;
}

// ---- n-grams

// Interned strings (the n-grams "w1 w2 ..."): open addressing, FNV-1a.
typedef struct Interner {
    char **key;
    int *slot;                      // slot -> id + 1 (0 empty)
    size_t cap, n, nkeys;
} Interner;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static int intern(Interner *t, const char *s, size_t len) {
    if (2 * (t->n + 1) > t->cap) {              // grow and rehash
        size_t cap = t->cap ? 2 * t->cap : 1024;
        int *slot = xcalloc(cap, sizeof(int));
        for (size_t i = 0; i < t->cap; i++)
            if (t->slot[i]) {
                const char *k = t->key[t->slot[i] - 1];
                size_t j = fnv1a(k, strlen(k)) & (cap - 1);
                while (slot[j]) j = (j + 1) & (cap - 1);
                slot[j] = t->slot[i];
            }
        free(t->slot);
        t->slot = slot;
        t->cap = cap;
    }
    size_t j = fnv1a(s, len) & (t->cap - 1);
    for (; t->slot[j]; j = (j + 1) & (t->cap - 1)) {
        const char *k = t->key[t->slot[j] - 1];
        if (!strncmp(k, s, len) && k[len] == 0) return t->slot[j] - 1;
    }
    if (t->n == t->nkeys) {
        t->nkeys = t->nkeys ? 2 * t->nkeys : 1024;
        t->key = realloc(t->key, t->nkeys * sizeof(char *));
        if (!t->key) fatal("out of memory");
    }
    char *k = xmalloc(len + 1);
    memcpy(k, s, len);
    k[len] = 0;
    t->key[t->n] = k;
    t->slot[j] = (int)++t->n;
    return (int)t->n - 1;
}

static void interner_free(Interner *t) {
    for (size_t i = 0; i < t->n; i++) free(t->key[i]);
    free(t->key);
    free(t->slot);
}

// A caption as its n-gram counts (n = 1..4), sorted by n-gram id.
typedef struct Cooked {
    int words;                      // tokens
    int n;                          // distinct n-grams
    int *id, *count;
    unsigned char *order;           // n - 1
} Cooked;

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

// Tokenise text and count its n-grams; ids from t, their order into *order_of.
static void cook(Cooked *c, const char *text, Interner *t, unsigned char **order_of,
                 size_t *order_cap) {
    char *tok = ptb_tokenize(text);
    size_t len = strlen(tok);
    int nw = 0, cap = 16, *start = xmalloc(cap * sizeof(int)), *end = xmalloc(cap * sizeof(int));
    for (size_t i = 0; i < len;) {               // single spaces between tokens
        size_t j = i;
        while (j < len && tok[j] != ' ') j++;
        if (nw == cap) {
            cap *= 2;
            start = realloc(start, cap * sizeof(int));
            end = realloc(end, cap * sizeof(int));
            if (!start || !end) fatal("out of memory");
        }
        start[nw] = (int)i;
        end[nw++] = (int)j;
        i = j + 1;
    }
    int total = 0;
    for (int k = 1; k <= 4; k++) total += nw - k + 1 > 0 ? nw - k + 1 : 0;
    int *ids = xmalloc((total + 1) * sizeof(int)), m = 0;
    for (int k = 1; k <= 4; k++)
        for (int i = 0; i + k <= nw; i++) {
            int id = intern(t, tok + start[i], (size_t)(end[i + k - 1] - start[i]));
            if ((size_t)id >= *order_cap) {
                *order_cap = 2 * (size_t)id + 1024;
                *order_of = realloc(*order_of, *order_cap);
                if (!*order_of) fatal("out of memory");
            }
            (*order_of)[id] = (unsigned char)(k - 1);
            ids[m++] = id;
        }
    qsort(ids, m, sizeof(int), cmp_int);
    c->words = nw;
    c->id = xmalloc((m + 1) * sizeof(int));
    c->count = xmalloc((m + 1) * sizeof(int));
    c->order = xmalloc(m + 1);
    c->n = 0;
    for (int i = 0; i < m; i++) {
        if (c->n && c->id[c->n - 1] == ids[i]) { c->count[c->n - 1]++; continue; }
        c->id[c->n] = ids[i];
        c->count[c->n] = 1;
        c->order[c->n++] = (*order_of)[ids[i]];
    }
    free(ids); free(start); free(end); free(tok);
}

static void cooked_free(Cooked *c) { free(c->id); free(c->count); free(c->order); }

// The count of n-gram id in c (0 when absent).
static int cooked_count(const Cooked *c, int id) {
    int lo = 0, hi = c->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (c->id[mid] == id) return c->count[mid];
        if (c->id[mid] < id) lo = mid + 1; else hi = mid - 1;
    }
    return 0;
}

// ---- CIDEr-D and BLEU (pycocoevalcap's cider_scorer.py, bleu_scorer.py)

// CIDEr-D's TF-IDF vector of c: vec (c->n), norm[4], and its bigram count.
static int cider_vec(const Cooked *c, const double *df, double log_n, double *vec,
                     double norm[4]) {
    int bigrams = 0;
    for (int k = 0; k < 4; k++) norm[k] = 0;
    for (int i = 0; i < c->n; i++) {
        double d = df[c->id[i]];
        vec[i] = c->count[i] * (log_n - log(d > 1.0 ? d : 1.0));
        norm[c->order[i]] += vec[i] * vec[i];
        if (c->order[i] == 1) bigrams += c->count[i];
    }
    for (int k = 0; k < 4; k++) norm[k] = sqrt(norm[k]);
    return bigrams;
}

// CIDEr-D of one image: candidate h against refs r (nr).
static double cider_image(const Cooked *h, const Cooked *r, int nr, const double *df,
                          double log_n) {
    double *vh = xmalloc((h->n + 1) * sizeof(double)), nh[4], score[4] = {0, 0, 0, 0};
    int lh = cider_vec(h, df, log_n, vh, nh);
    for (int j = 0; j < nr; j++) {
        double *vr = xmalloc((r[j].n + 1) * sizeof(double)), nrm[4], val[4] = {0, 0, 0, 0};
        int lr = cider_vec(&r[j], df, log_n, vr, nrm);
        for (int a = 0, b = 0; a < h->n; a++) {   // merge on the sorted ids
            while (b < r[j].n && r[j].id[b] < h->id[a]) b++;
            double x = b < r[j].n && r[j].id[b] == h->id[a] ? vr[b] : 0;
            val[h->order[a]] += (vh[a] < x ? vh[a] : x) * x;
        }
        double delta = (double)(lh - lr);
        for (int k = 0; k < 4; k++) {
            if (nh[k] != 0 && nrm[k] != 0) val[k] /= nh[k] * nrm[k];
            score[k] += val[k] * exp(-(delta * delta) / (2 * 6.0 * 6.0));
        }
        free(vr);
    }
    free(vh);
    return (score[0] + score[1] + score[2] + score[3]) / 4 / nr * 10.0;
}

// BLEU's statistics of one image, added into guess[4], correct[4], *testlen, *reflen.
static void bleu_image(const Cooked *h, const Cooked *r, int nr, double guess[4],
                       double correct[4], double *testlen, double *reflen) {
    for (int a = 0; a < h->n; a++) {
        int mx = 0;
        for (int j = 0; j < nr; j++) {
            int c = cooked_count(&r[j], h->id[a]);
            mx = c > mx ? c : mx;
        }
        correct[h->order[a]] += h->count[a] < mx ? h->count[a] : mx;
    }
    for (int k = 0; k < 4; k++) guess[k] += h->words - k > 0 ? h->words - k : 0;
    int best = r[0].words;                   // closest length, ties: the shorter
    for (int j = 1; j < nr; j++) {
        int d = abs(r[j].words - h->words), db = abs(best - h->words);
        if (d < db || (d == db && r[j].words < best)) best = r[j].words;
    }
    *testlen += h->words;
    *reflen += best;
}

void caption_scores(const char *const *hyps, const char *const *const *refs,
                    const int *nrefs, int n, CaptionScores *out, double *cider_per_image) {
    Interner t = {0};
    unsigned char *order_of = NULL;
    size_t order_cap = 0;
    Cooked *H = xcalloc(n + 1, sizeof(Cooked)), **R = xcalloc(n + 1, sizeof(Cooked *));
    for (int i = 0; i < n; i++) {
        cook(&H[i], hyps[i], &t, &order_of, &order_cap);
        R[i] = xcalloc(nrefs[i] + 1, sizeof(Cooked));
        for (int j = 0; j < nrefs[i]; j++) cook(&R[i][j], refs[i][j], &t, &order_of, &order_cap);
    }
    // document frequency: the images whose references hold the n-gram
    double *df = xcalloc(t.n + 1, sizeof(double));
    int *seen = xmalloc((t.n + 1) * sizeof(int));
    for (size_t k = 0; k < t.n; k++) seen[k] = -1;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < nrefs[i]; j++)
            for (int a = 0; a < R[i][j].n; a++)
                if (seen[R[i][j].id[a]] != i) { seen[R[i][j].id[a]] = i; df[R[i][j].id[a]]++; }
    double log_n = log((double)n), sum = 0;
    double guess[4] = {0}, correct[4] = {0}, testlen = 0, reflen = 0;
    for (int i = 0; i < n; i++) {
        double c = cider_image(&H[i], R[i], nrefs[i], df, log_n);
        if (cider_per_image) cider_per_image[i] = c;
        sum += c;
        bleu_image(&H[i], R[i], nrefs[i], guess, correct, &testlen, &reflen);
    }
    out->images = n;
    out->cider = n ? sum / n : 0;
    const double tiny = 1e-15, small = 1e-9;
    double ratio = (testlen + tiny) / (reflen + small);
    for (int k = 1; k <= 4; k++) {
        double b = 1;
        for (int j = 0; j < k; j++) b *= (correct[j] + tiny) / (guess[j] + small);
        out->bleu[k - 1] = pow(b, 1.0 / k) * (ratio < 1 ? exp(1 - 1 / ratio) : 1);
    }
    for (int i = 0; i < n; i++) {
        cooked_free(&H[i]);
        for (int j = 0; j < nrefs[i]; j++) cooked_free(&R[i][j]);
        free(R[i]);
    }
    free(H); free(R); free(df); free(seen); free(order_of);
    interner_free(&t);
}

// ---- attention pictures: a 5x7 bitmap font, a heat map, PNG

// The font: capitals, digits and a little punctuation, 7 rows of 5 pixels ('#' on).
static const struct Glyph { char c; const char *rows[7]; } font[] = {
    {'A', {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'B', {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."}},
    {'C', {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."}},
    {'D', {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."}},
    {'E', {"#####", "#....", "#....", "####.", "#....", "#....", "#####"}},
    {'F', {"#####", "#....", "#....", "####.", "#....", "#....", "#...."}},
    {'G', {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"}},
    {'H', {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"}},
    {'I', {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'J', {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."}},
    {'K', {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"}},
    {'L', {"#....", "#....", "#....", "#....", "#....", "#....", "#####"}},
    {'M', {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"}},
    {'N', {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"}},
    {'O', {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'P', {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."}},
    {'Q', {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"}},
    {'R', {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"}},
    {'S', {".####", "#....", "#....", ".###.", "....#", "....#", "####."}},
    {'T', {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."}},
    {'U', {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."}},
    {'V', {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."}},
    {'W', {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."}},
    {'X', {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"}},
    {'Y', {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."}},
    {'Z', {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"}},
    {'0', {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."}},
    {'1', {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."}},
    {'2', {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"}},
    {'3', {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."}},
    {'4', {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."}},
    {'5', {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."}},
    {'6', {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."}},
    {'7', {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."}},
    {'8', {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."}},
    {'9', {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."}},
    {'\'', {"..#..", "..#..", ".#...", ".....", ".....", ".....", "....."}},
    {'-', {".....", ".....", ".....", "#####", ".....", ".....", "....."}},
    {'.', {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."}},
    {',', {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."}},
    {'?', {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."}},
    {'!', {"..#..", "..#..", "..#..", "..#..", "..#..", ".....", "..#.."}},
    {':', {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."}},
    {'/', {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."}},
    {'&', {".##..", "#..#.", "#.#..", ".#...", "#.#.#", "#..#.", ".##.#"}},
    {'[', {".###.", ".#...", ".#...", ".#...", ".#...", ".#...", ".###."}},
    {']', {".###.", "...#.", "...#.", "...#.", "...#.", "...#.", ".###."}},
    {'<', {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."}},
    {'>', {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."}},
    {'(', {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."}},
    {')', {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."}},
};

// The glyph of c (lower case drawn as capitals); NULL draws a hollow box.
static const struct Glyph *glyph(char c) {
    if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    for (size_t i = 0; i < sizeof font / sizeof font[0]; i++)
        if (font[i].c == c) return &font[i];
    return NULL;
}

// An RGB canvas (w x h), row-major.
typedef struct Canvas { int w, h; unsigned char *rgb; } Canvas;

// Draw text at (x, y) with pixels scale x scale, colour rgb; at most maxw pixels wide.
static void draw_text(Canvas *cv, int x, int y, int scale, const char *text,
                      const unsigned char rgb[3], int maxw) {
    int adv = 6 * scale;
    for (const char *p = text; *p && (p - text + 1) * adv <= maxw; p++, x += adv) {
        if (*p == ' ') continue;
        const struct Glyph *g = glyph(*p);
        for (int r = 0; r < 7; r++)
            for (int c = 0; c < 5; c++) {
                int on = g ? g->rows[r][c] == '#' : (r == 0 || r == 6 || c == 0 || c == 4);
                if (!on) continue;
                for (int dy = 0; dy < scale; dy++)
                    for (int dx = 0; dx < scale; dx++) {
                        int px = x + c * scale + dx, py = y + r * scale + dy;
                        if (px >= 0 && py >= 0 && px < cv->w && py < cv->h)
                            memcpy(cv->rgb + ((size_t)py * cv->w + px) * 3, rgb, 3);
                    }
            }
    }
}

// A blue -> cyan -> green -> yellow -> red colour for t in [0, 1] (a "jet" map).
static void heat_colour(float t, float out[3]) {
    float r = 1.5f - fabsf(4 * t - 3), g = 1.5f - fabsf(4 * t - 2), b = 1.5f - fabsf(4 * t - 1);
    out[0] = r < 0 ? 0 : r > 1 ? 1 : r;
    out[1] = g < 0 ? 0 : g > 1 ? 1 : g;
    out[2] = b < 0 ? 0 : b > 1 ? 1 : b;
}

// Bilinear sample of grid (h, w) at pixel (x, y) of a P x P tile (align_corners=False).
static float grid_sample(const float *grid, int h, int w, int P, int x, int y) {
    float fy = (y + 0.5f) * h / P - 0.5f, fx = (x + 0.5f) * w / P - 0.5f;
    fy = fy < 0 ? 0 : fy > h - 1 ? h - 1 : fy;
    fx = fx < 0 ? 0 : fx > w - 1 ? w - 1 : fx;
    int y0 = (int)fy, x0 = (int)fx, y1 = y0 + 1 < h ? y0 + 1 : y0, x1 = x0 + 1 < w ? x0 + 1 : x0;
    float ay = fy - y0, ax = fx - x0;
    return (1 - ay) * ((1 - ax) * grid[y0 * w + x0] + ax * grid[y0 * w + x1]) +
           ay * ((1 - ax) * grid[y1 * w + x0] + ax * grid[y1 * w + x1]);
}

// One tile at (x0, y0): the image (3,S,S) in [0,1] scaled to P x P (nearest), with the
// attention map (h, w) over it as a heat map when map is not NULL.
static void draw_tile(Canvas *cv, int x0, int y0, int P, const float *img, int S,
                      const float *map, int h, int w) {
    float mx = 0;
    for (int i = 0; map && i < h * w; i++) mx = map[i] > mx ? map[i] : mx;
    for (int y = 0; y < P; y++)
        for (int x = 0; x < P; x++) {
            int sy = y * S / P, sx = x * S / P;
            float px[3];
            for (int c = 0; c < 3; c++) px[c] = img[((size_t)c * S + sy) * S + sx];
            if (map) {
                float heat[3], a = mx > 0 ? grid_sample(map, h, w, P, x, y) / mx : 0;
                heat_colour(a, heat);
                for (int c = 0; c < 3; c++) px[c] = 0.5f * px[c] + 0.5f * heat[c];
            }
            unsigned char *o = cv->rgb + ((size_t)(y0 + y) * cv->w + x0 + x) * 3;
            for (int c = 0; c < 3; c++) {
                float v = px[c] * 255.0f + 0.5f;
                o[c] = (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
}

static void png_write_fn(void *ctx, void *data, int size) {
    fwrite(data, 1, (size_t)size, (FILE *)ctx);
}

int attention_png(const char *path, const float *image, int S, const char *const *words,
                  int nwords, const float *maps, int h, int w, char *err, size_t errlen) {
    enum { COLS = 6, SCALE = 2, TEXT = 7 * SCALE + 8, PAD = 4 };
    int P = S >= 160 ? S : S * ((160 + S - 1) / S);       // tiles at least 160 pixels
    int tiles = nwords + 1, cols = tiles < COLS ? tiles : COLS, rows = (tiles + cols - 1) / cols;
    Canvas cv = {cols * (P + PAD) + PAD, rows * (P + TEXT + PAD) + PAD, NULL};
    cv.rgb = xmalloc((size_t)cv.w * cv.h * 3);
    memset(cv.rgb, 255, (size_t)cv.w * cv.h * 3);
    float *img = xmalloc((size_t)3 * S * S * sizeof(float));   // undo the normalisation
    for (int c = 0; c < 3; c++)
        for (long i = 0; i < (long)S * S; i++)
            img[c * (long)S * S + i] = image[c * (long)S * S + i] * IMAGENET_STD[c] + IMAGENET_MEAN[c];
    static const unsigned char ink[3] = {0, 0, 0};
    for (int t = 0; t < tiles; t++) {
        int x = PAD + (t % cols) * (P + PAD), y = PAD + (t / cols) * (P + TEXT + PAD);
        draw_tile(&cv, x, y, P, img, S, t ? maps + (size_t)(t - 1) * h * w : NULL, h, w);
        draw_text(&cv, x, y + P + 4, SCALE, t ? words[t - 1] : "(image)", ink, P);
    }
    AtomicFile af;
    int rc = -1;
    if (atomic_open(&af, path)) {
        snprintf(err, errlen, "%s: cannot create it: %s", path, strerror(errno));
    } else {
        if (!stbi_write_png_to_func(png_write_fn, af.f, cv.w, cv.h, 3, cv.rgb, cv.w * 3)) {
            fclose(af.f);                   // atomic_commit then removes the temp file
            af.f = NULL;
        }
        if (atomic_commit(&af)) snprintf(err, errlen, "%s: cannot write it", path);
        else rc = 0;
    }
    free(img);
    free(cv.rgb);
    return rc;
}

// ---- the drivers of `virtex caption` and `virtex eval captions`

int load_images_val(const Config *cfg, const char *const *paths, int n, float *out,
                    char *err, size_t errlen) {
    int S = cfg->DATA.IMAGE_CROP_SIZE, bad = -1;
    TransformPipeline tp;
    if (transform_parse(&tp, cfg->DATA.IMAGE_TRANSFORM_VAL, cfg->DATA.n_IMAGE_TRANSFORM_VAL, S,
                        0, err, errlen))
        return -1;
    char *msgs = xcalloc((size_t)n, 512);
    #pragma omp parallel for schedule(dynamic)
    for (int i = 0; i < n; i++) {
        Image img;
        Rng rng;
        rng_seed(&rng, 0);                      // the val pipeline draws nothing
        if (image_load(&img, paths[i], msgs + (size_t)i * 512, 512) == 0) {
            transform_run(&tp, &img, out + (size_t)i * 3 * S * S, &rng, NULL,
                          msgs + (size_t)i * 512, 512);
            image_free(&img);
        }
    }
    for (int i = n - 1; i >= 0; i--)
        if (msgs[(size_t)i * 512]) bad = i;
    if (bad >= 0) snprintf(err, errlen, "%s", msgs + (size_t)bad * 512);
    free(msgs);
    return bad >= 0 ? -1 : 0;
}

// JSON string literal of s into f.
static void json_write_string(FILE *f, const char *s) {
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

int write_coco_results(const char *path, const int64_t *ids, const char *const *captions,
                       int n, char *err, size_t errlen) {
    AtomicFile af;
    if (atomic_open(&af, path)) {
        snprintf(err, errlen, "%s: cannot create it: %s", path, strerror(errno));
        return -1;
    }
    fputc('[', af.f);
    for (int i = 0; i < n; i++) {
        fprintf(af.f, "%s{\"image_id\": %lld, \"caption\": ", i ? ",\n " : "", (long long)ids[i]);
        json_write_string(af.f, captions[i]);
        fputc('}', af.f);
    }
    fputs("]\n", af.f);
    if (atomic_commit(&af)) {
        snprintf(err, errlen, "%s: cannot write it: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int read_coco_results(const char *path, int64_t **ids, char ***captions, int *n, char *err,
                      size_t errlen) {
    Json *doc;
    if (json_parse_file(&doc, path, err, errlen)) return -1;
    const JsonValue *root = json_root(doc);
    if (json_type(root) != JSON_ARRAY) {
        snprintf(err, errlen, "%s: expected an array of {\"image_id\", \"caption\"}, found %s",
                 path, json_type_name(json_type(root)));
        json_free(doc);
        return -1;
    }
    int k = json_len(root);
    *ids = xmalloc((size_t)(k + 1) * sizeof(int64_t));
    *captions = xcalloc((size_t)k + 1, sizeof(char *));
    for (int i = 0; i < k; i++) {
        const JsonValue *id = json_get(json_at(root, i), "image_id");
        const JsonValue *cap = json_get(json_at(root, i), "caption");
        const char *what = !json_int64(id, &(*ids)[i]) ? "image_id: expected an integer"
                         : json_type(cap) != JSON_STRING ? "caption: expected a string" : NULL;
        if (what) {
            snprintf(err, errlen, "%s: [%d].%s", path, i, what);
            for (int j = 0; j < i; j++) free((*captions)[j]);
            free(*ids); free(*captions);
            *ids = NULL;
            *captions = NULL;
            json_free(doc);
            return -1;
        }
        (*captions)[i] = xstrdup(json_string(cap));
    }
    *n = k;
    json_free(doc);
    return 0;
}

// The caption text of tokens (len) (malloc'd).
static char *caption_text(const Tokenizer *tk, const int *tokens, int len) {
    long need = tokenizer_decode(tk, tokens, len, NULL, 0);
    char *s = xmalloc(need > 0 ? (size_t)need + 1 : 1);
    s[0] = 0;
    if (need > 0) tokenizer_decode(tk, tokens, len, s, (size_t)need + 1);
    return s;
}

// A piece as a word of the picture: its "▁" (word start) dropped.
static void piece_word(const Tokenizer *tk, int id, char *out, size_t n) {
    const char *p = tokenizer_piece(tk, id);
    size_t o = 0;
    for (; p && *p && o + 1 < n; p++) {
        if (!strncmp(p, "\xe2\x96\x81", 3)) { p += 2; continue; }
        out[o++] = *p;
    }
    out[o] = 0;
}

// The evaluation model, its tokenizer and decoding options from a CaptionRun.
static int caption_setup(const CaptionRun *r, Model *m, Tokenizer **tk, DecodeOptions *o,
                         char *err, size_t errlen) {
    if (model_from_checkpoint(m, r->checkpoint, r->config, r->noverrides, r->overrides,
                              r->random_weights, err, errlen))
        return -1;
    if (m->task != TASK_CAPTIONING && m->task != TASK_BICAPTIONING) {
        snprintf(err, errlen, "MODEL.NAME %s: captions need a captioning model "
                 "(virtex, bicaptioning or captioning)", m->cfg.MODEL.NAME);
        model_free(m);
        return -1;
    }
    *tk = tokenizer_load(m->cfg.DATA.TOKENIZER_MODEL, err, errlen);
    if (*tk && tokenizer_size(*tk) != m->V) {
        snprintf(err, errlen, "%s: %d pieces, but the model's vocabulary (DATA.VOCAB_SIZE) is %d",
                 m->cfg.DATA.TOKENIZER_MODEL, tokenizer_size(*tk), m->V);
        tokenizer_free(*tk);
        *tk = NULL;
    }
    if (!*tk) { model_free(m); return -1; }
    *o = decode_options_from_config(&m->cfg);
    if (r->beam > 0) { o->method = r->beam == 1 ? DECODE_GREEDY : DECODE_BEAM; o->beam_size = r->beam; }
    if (r->nucleus > 0) { o->method = DECODE_NUCLEUS; o->nucleus_p = r->nucleus; }
    o->keep_sos = r->keep_sos;
    if (o->beam_size > m->V) o->beam_size = m->V;
    return 0;
}

static const char *decode_name(const DecodeOptions *o, char *buf, size_t n) {
    if (o->method == DECODE_NUCLEUS) snprintf(buf, n, "nucleus sampling p %g", o->nucleus_p);
    else if (o->method == DECODE_GREEDY) snprintf(buf, n, "greedy");
    else snprintf(buf, n, "beam search, beam %d", o->beam_size);
    return buf;
}

// The attention picture of one captioned image: DIR/<file name without extension>.png.
static int attention_for(const char *dir, const char *path, Model *m, const Tokenizer *tk,
                         const DecodeOptions *o, const float *image, int S, const int *tokens,
                         int len, char *err, size_t errlen) {
    int h = 0, w = 0, cells = (S / 32 + 1) * (S / 32 + 1);   // >= the layer4 grid
    float *maps = xmalloc((size_t)(len + 1) * cells * sizeof(float));
    caption_attention(m, image, S, o, tokens, len, maps, &h, &w);
    char **words = xcalloc((size_t)len + 1, sizeof(char *));
    for (int i = 0; i < len; i++) {
        words[i] = xmalloc(64);
        piece_word(tk, tokens[i], words[i], 64);
    }
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    const char *dot = strrchr(base, '.');
    int stem = dot && dot != base ? (int)(dot - base) : (int)strlen(base);
    size_t n = strlen(dir) + (size_t)stem + 8;
    char *out = xmalloc(n);
    snprintf(out, n, "%s/%.*s.png", dir, stem, base);
    int rc = attention_png(out, image, S, (const char *const *)words, len, maps, h, w, err, errlen);
    for (int i = 0; i < len; i++) free(words[i]);
    free(words); free(maps); free(out);
    return rc;
}

// Decode n images (paths) in batches of r->batch: captions[i] malloc'd text; with
// r->attention, one picture per image there. Returns 0 or -1 with err.
static int caption_files(const CaptionRun *r, Model *m, const Tokenizer *tk,
                         const DecodeOptions *o, const char *const *paths, int n,
                         char **captions, int print, char *err, size_t errlen) {
    int S = m->cfg.DATA.IMAGE_CROP_SIZE, bs = r->batch > 0 ? r->batch : 16, rc = 0;
    float *images = xmalloc((size_t)bs * 3 * S * S * sizeof(float));
    int *tokens = xmalloc((size_t)bs * o->max_steps * sizeof(int)), *len = xmalloc(bs * sizeof(int));
    for (int i0 = 0; i0 < n && !rc; i0 += bs) {
        int B = n - i0 < bs ? n - i0 : bs;
        if (load_images_val(&m->cfg, paths + i0, B, images, err, errlen)) { rc = -1; break; }
        DecodeOptions ob = *o;
        ob.seed = o->seed + (uint64_t)i0;         // row b: seed + its image index
        decode_captions(m, images, B, S, &ob, tokens, len);
        for (int b = 0; b < B && !rc; b++) {
            const int *t = tokens + (size_t)b * o->max_steps;
            captions[i0 + b] = caption_text(tk, t, len[b]);
            if (print) printf("%s\t%s\n", paths[i0 + b], captions[i0 + b]);
            if (r->attention) rc = attention_for(r->attention, paths[i0 + b], m, tk, o,
                                                 images + (size_t)b * 3 * S * S, S, t, len[b],
                                                 err, errlen);
        }
        fflush(stdout);
    }
    free(images); free(tokens); free(len);
    return rc;
}

// The image files of the inputs: a directory gives the images under it (list_images:
// recursively, sorted by name), a file itself. *paths (malloc'd strings). Returns 0
// or -1 with err.
static int collect_images(const char *const *inputs, int ninputs, char ***paths, int *n,
                          char *err, size_t errlen) {
    long cap = 64, k = 0;
    char **p = xmalloc(cap * sizeof(char *));
    for (int i = 0; i < ninputs; i++) {
        struct stat st;
        if (stat(inputs[i], &st)) {
            snprintf(err, errlen, "%s: %s", inputs[i], strerror(errno));
            goto fail;
        }
        long m = 1;
        char **rel = NULL;
        if (S_ISDIR(st.st_mode) && !(rel = list_images(inputs[i], &m, err, errlen))) goto fail;
        if (k + m > cap) {
            cap = 2 * (k + m);
            p = realloc(p, cap * sizeof(char *));
            if (!p) fatal("out of memory");
        }
        if (!rel) { p[k++] = xstrdup(inputs[i]); continue; }
        for (long j = 0; j < m; j++) {
            size_t len = strlen(inputs[i]) + strlen(rel[j]) + 2;
            p[k] = xmalloc(len);
            snprintf(p[k++], len, "%s/%s", inputs[i], rel[j]);
        }
        free_strings(rel, m);
    }
    *paths = p;
    *n = (int)k;
    return 0;
fail:
    for (long i = 0; i < k; i++) free(p[i]);
    free(p);
    return -1;
}

// The image id of a file: the last run of digits in its name (without extension),
// else `index`.
static int64_t image_id_of(const char *path, int index) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    const char *end = strrchr(base, '.') && strrchr(base, '.') != base ? strrchr(base, '.')
                                                                        : base + strlen(base);
    const char *q = end;
    while (q > base && !isdigit((unsigned char)q[-1])) q--;
    const char *p = q;
    while (p > base && isdigit((unsigned char)p[-1])) p--;
    while (p < q - 1 && *p == '0') p++;                // leading zeros
    if (p == q || q - p > 18) return index;
    int64_t id = 0;
    for (; p < q; p++) id = id * 10 + (*p - '0');
    return id;
}

int caption_run(const CaptionRun *r, char *err, size_t errlen) {
    char **paths = NULL, **captions = NULL;
    int n = 0, rc = -1;
    if (collect_images(r->inputs, r->ninputs, &paths, &n, err, errlen)) return -1;
    if (r->attention && mkdir(r->attention, 0777) && errno != EEXIST) {
        snprintf(err, errlen, "%s: cannot create the directory: %s", r->attention, strerror(errno));
        goto done_paths;
    }
    Model m;
    Tokenizer *tk;
    DecodeOptions o;
    if (caption_setup(r, &m, &tk, &o, err, errlen)) goto done_paths;
    captions = xcalloc((size_t)n + 1, sizeof(char *));
    if (!caption_files(r, &m, tk, &o, (const char *const *)paths, n, captions, 1, err, errlen)) {
        rc = 0;
        if (r->out) {
            int64_t *ids = xmalloc((size_t)(n + 1) * sizeof(int64_t));
            for (int i = 0; i < n; i++) ids[i] = image_id_of(paths[i], i);
            rc = write_coco_results(r->out, ids, (const char *const *)captions, n, err, errlen);
            free(ids);
        }
    }
    for (int i = 0; i < n; i++) free(captions[i]);
    free(captions);
    tokenizer_free(tk);
    model_free(&m);
done_paths:
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
    return rc;
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

// Score captions (ids, n) against the references of cc; prints the metrics.
static int score_and_print(const CocoCaptions *cc, const int64_t *ids, char **captions,
                           int n, const char *origin, char *err, size_t errlen) {
    int64_t *sorted = xmalloc((size_t)(cc->n + 1) * 2 * sizeof(int64_t));   // (id, index)
    for (int i = 0; i < cc->n; i++) { sorted[2 * i] = cc->images[i].id; sorted[2 * i + 1] = i; }
    qsort(sorted, cc->n, 2 * sizeof(int64_t), cmp_id);
    const char *const **refs = xcalloc((size_t)n + 1, sizeof(char **));
    int *nrefs = xcalloc((size_t)n + 1, sizeof(int)), *used = xcalloc((size_t)cc->n + 1, sizeof(int));
    int rc = 0;
    for (int i = 0; i < n && !rc; i++) {
        int64_t *hit = bsearch(&ids[i], sorted, cc->n, 2 * sizeof(int64_t), cmp_id);
        if (!hit || used[hit[1]]) {
            snprintf(err, errlen, "%s: [%d].image_id: %lld %s", origin, i, (long long)ids[i],
                     hit ? "appears twice (one caption per image)"
                         : "is not an image of the annotations");
            rc = -1;
            break;
        }
        used[hit[1]] = 1;
        const CocoImage *im = &cc->images[hit[1]];
        refs[i] = (const char *const *)im->captions;
        nrefs[i] = im->ncaptions;
    }
    if (!rc) {
        CaptionScores s;
        double t0 = now_seconds();
        caption_scores((const char *const *)captions, refs, nrefs, n, &s, NULL);
        printf("scored %d of %d images (%.2fs)\n", n, cc->n, now_seconds() - t0);
        printf("CIDEr-D  %.4f  (x100: %.2f, as the paper reports it)\n", s.cider, 100 * s.cider);
        for (int k = 0; k < 4; k++) printf("BLEU-%d   %.4f\n", k + 1, s.bleu[k]);
    }
    free(sorted); free(refs); free(nrefs); free(used);
    return rc;
}

int eval_captions_run(const CaptionRun *r, char *err, size_t errlen) {
    CocoCaptions cc;
    const char *split = r->split ? r->split : "val";
    if (coco_captions_load(&cc, r->data, split, err, errlen)) return -1;
    int64_t *ids = NULL;
    char **captions = NULL;
    int n = 0, rc = -1;
    if (r->predictions) {
        if (read_coco_results(r->predictions, &ids, &captions, &n, err, errlen)) goto done;
        rc = score_and_print(&cc, ids, captions, n, r->predictions, err, errlen);
    } else {
        Model m;
        Tokenizer *tk;
        DecodeOptions o;
        if (caption_setup(r, &m, &tk, &o, err, errlen)) goto done;
        n = r->limit > 0 && r->limit < cc.n ? (int)r->limit : cc.n;
        char **paths = xcalloc((size_t)n + 1, sizeof(char *));
        ids = xmalloc((size_t)(n + 1) * sizeof(int64_t));
        captions = xcalloc((size_t)n + 1, sizeof(char *));
        for (int i = 0; i < n; i++) {
            size_t len = strlen(cc.image_dir) + strlen(cc.images[i].file_name) + 2;
            paths[i] = xmalloc(len);
            snprintf(paths[i], len, "%s/%s", cc.image_dir, cc.images[i].file_name);
            ids[i] = cc.images[i].id;
        }
        char how[64];
        printf("captioning %d %s images (%s)\n", n, split, decode_name(&o, how, sizeof how));
        double t0 = now_seconds();
        rc = caption_files(r, &m, tk, &o, (const char *const *)paths, n, captions, 0, err, errlen);
        if (!rc) printf("decoded in %.1fs\n", now_seconds() - t0);
        if (!rc && r->out) rc = write_coco_results(r->out, ids, (const char *const *)captions, n, err, errlen);
        if (!rc) rc = score_and_print(&cc, ids, captions, n, split, err, errlen);
        if (!rc) {   // and the loss of each direction on the same images (as `eval loss`)
            snprintf(m.cfg.DATA.ROOT, sizeof m.cfg.DATA.ROOT, "%s", r->data);
            EvalLoss v;
            rc = eval_loss(&m, split, r->limit, 0, &v, err, errlen);
            if (!rc)
                printf("loss     forward %.4f  backward %.4f  total %.4f  (%ld target tokens)\n",
                       v.forward, v.backward, v.total, v.tokens);
        }
        for (int i = 0; i < n; i++) free(paths[i]);
        free(paths);
        tokenizer_free(tk);
        model_free(&m);
    }
done:
    for (int i = 0; i < n && captions; i++) free(captions[i]);
    free(captions);
    free(ids);
    coco_captions_free(&cc);
    return rc;
}

// ---- end 10a

// ----------------------------------------------------------------------------
// 10b. transfer: features, VOC07 SVMs, linear probe
//
// The ResNet of a VirTex model as a frozen feature extractor (eval mode, no grad):
// global-average-pooled layer4 features, then the paper's two probes. VOC07: one
// linear SVM per class, solved in the dual by coordinate descent as liblinear's
// L2R_L2LOSS_SVC_DUAL (what the original's sklearn.svm.LinearSVC runs), its cost picked
// by 3-fold cross-validated AP (sklearn's StratifiedKFold without shuffling, AP as
// sklearn.metrics.average_precision_score). ImageNet: a Linear layer trained by SGD on
// top of the frozen features (scripts/clf_linear.py of the original).

#include <dirent.h>
#include <errno.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

void downstream_sizes(const Config *cfg, int *S, int *R) {
    *S = cfg->DATA.IMAGE_CROP_SIZE;
    *R = *S * 256 / 224;
}

// Seed of sample `key` of a feature pass: the same (seed, key) draws the same crop.
static uint64_t sample_seed(uint64_t seed, uint64_t key) {
    uint64_t z = seed * 0x9E3779B97F4A7C15ull ^ (key + 0x632BE59BD9B4E019ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// ---- progress on stderr for long passes: rate and ETA, at most once a second on a
// terminal (with \r), every 15 s otherwise; the last call prints the final line.
typedef struct Progress { const char *label; long total; double t0, last; int tty; } Progress;

static void progress_start(Progress *p, const char *label, long total) {
    p->label = label;
    p->total = total;
    p->t0 = p->last = now_seconds();
    p->tty = isatty(2);
}

static void progress_update(Progress *p, long done) {
    if (!p->label) return;
    double t = now_seconds();
    if (done < p->total && t - p->last < (p->tty ? 1.0 : 15.0)) return;
    p->last = t;
    double rate = done / (t - p->t0 + 1e-9);
    double eta = rate > 0 ? (p->total - done) / rate : 0;
    fprintf(stderr, "%s%s: %ld/%ld images, %.1f images/s, ETA %.0fs%s", p->tty ? "\r" : "",
            p->label, done, p->total, rate, eta, p->tty && done < p->total ? "   " : "\n");
}

// ---- pooled features

int features_extract(Model *m, const char *const *paths, long n, const FeatureOptions *o,
                     float *out, char *err, size_t errlen) {
    const TransformPipeline *tp = o->tp;
    int S = tp->S, C = m->cnn.out_channels, B = o->batch_size > 0 ? o->batch_size : 64;
    Device dev = m->ntensors ? m->tensors[0].device : DEV_CPU;
    const Backend *be = backend_for(dev);
    float *images = xmalloc((size_t)B * 3 * S * S * sizeof(float));
    Graph g;
    graph_init(&g, dev, 0);
    g.grad_enabled = 0;                            // frozen: no tape
    g.training = 0;                                // BatchNorm running stats
    Progress pr = {0};
    if (o->progress) progress_start(&pr, o->progress, n);
    int rc = 0;
    for (long i0 = 0; i0 < n && !rc; i0 += B) {
        int nb = n - i0 < B ? (int)(n - i0) : B;
        long bad = -1;
        // decode and transform the batch on every core
        #pragma omp parallel for schedule(dynamic)
        for (int b = 0; b < nb; b++) {
            Image img = {0};
            char e[512];
            Rng rng;
            rng_seed(&rng, sample_seed(o->seed, (uint64_t)(i0 + b)));
            int fail = image_load(&img, paths[i0 + b], e, sizeof e) ||
                       transform_run(tp, &img, images + (size_t)b * 3 * S * S, &rng, NULL, e, sizeof e);
            image_free(&img);
            if (fail) {
                #pragma omp critical(features_error)
                if (bad < 0 || i0 + b < bad) {
                    bad = i0 + b;
                    snprintf(err, errlen, "%s", e);
                }
            }
        }
        if (bad >= 0) { rc = -1; break; }
        graph_reset(&g);
        Tensor *x = tensor_new(&g, 4, (int[]){nb, 3, S, S});
        be->from_host(x->data, images, (size_t)nb * 3 * S * S * sizeof(float));
        Tensor *pooled = op_avgpool(&g, visual_forward(&g, m, x));      // (nb, C)
        float *dst = out + i0 * C;
        be->to_host(dst, pooled->data, (size_t)nb * C * sizeof(float));
        if (o->l2_normalize)                       // features / ||features|| (the original)
            for (int b = 0; b < nb; b++) {
                double ss = 0;
                for (int c = 0; c < C; c++) ss += (double)dst[b * C + c] * dst[b * C + c];
                float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
                for (int c = 0; c < C; c++) dst[b * C + c] *= inv;
            }
        progress_update(&pr, i0 + nb);
    }
    graph_free(&g);
    free(images);
    return rc;
}

// ---- image lists

static int has_image_ext(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tga", ".ppm",
                                      ".pgm", ".pnm", ".psd", ".hdr"};
    const char *dot = strrchr(name, '.');
    if (!dot) return 0;
    for (size_t i = 0; i < sizeof ext / sizeof ext[0]; i++)
        if (!strcasecmp(dot, ext[i])) return 1;
    return 0;
}

typedef struct StrList { char **s; long n, cap; } StrList;

static void strlist_push(StrList *l, char *s) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->s = realloc(l->s, (size_t)l->cap * sizeof *l->s);
        if (!l->s) fatal("out of memory");
    }
    l->s[l->n++] = s;
}

static void strlist_free(StrList *l) {
    for (long i = 0; i < l->n; i++) free(l->s[i]);
    free(l->s);
    memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

// The entries of dir (files when want_dirs is 0, else directories), sorted by name,
// hidden ones skipped. Returns -1 with a message when dir cannot be read.
static int list_dir(const char *dir, int want_dirs, StrList *out, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "%s: %s", dir, strerror(errno));
        return -1;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(dir) + strlen(e->d_name) + 2;
        char *path = xmalloc(len);
        snprintf(path, len, "%s/%s", dir, e->d_name);
        struct stat st;
        int ok = stat(path, &st) == 0 && (want_dirs ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
        free(path);
        if (ok) strlist_push(out, xstrdup(e->d_name));
    }
    closedir(d);
    qsort(out->s, (size_t)out->n, sizeof *out->s, cmp_str);
    return 0;
}

// Append the images under dir/rel (recursively, each directory in name order) as
// paths relative to dir.
static int walk_images(const char *dir, const char *rel, StrList *out, int depth, char *err,
                       size_t errlen) {
    size_t nhere = strlen(dir) + strlen(rel) + 2;
    char *here = xmalloc(nhere);
    snprintf(here, nhere, "%s%s%s", dir, *rel ? "/" : "", rel);
    StrList names = {0};
    int rc = list_dir(here, 0, &names, err, errlen);
    for (long i = 0; i < names.n && !rc; i++) {
        size_t nsub = strlen(rel) + strlen(names.s[i]) + 2, nfull = strlen(here) + strlen(names.s[i]) + 2;
        char *sub = xmalloc(nsub), *full = xmalloc(nfull);
        snprintf(sub, nsub, "%s%s%s", rel, *rel ? "/" : "", names.s[i]);
        snprintf(full, nfull, "%s/%s", here, names.s[i]);
        struct stat st;
        if (stat(full, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth < 16) rc = walk_images(dir, sub, out, depth + 1, err, errlen);
            free(sub);
        } else if (has_image_ext(names.s[i])) {
            strlist_push(out, sub);
        } else {
            free(sub);
        }
        free(full);
    }
    strlist_free(&names);
    free(here);
    return rc;
}

char **list_images(const char *dir, long *n, char *err, size_t errlen) {
    StrList l = {0};
    *n = 0;
    if (walk_images(dir, "", &l, 0, err, errlen)) { strlist_free(&l); return NULL; }
    if (l.n == 0) {
        snprintf(err, errlen, "%s: no images (.jpg .jpeg .png .bmp .gif .tga .ppm .pgm .pnm .psd .hdr)", dir);
        strlist_free(&l);
        return NULL;
    }
    *n = l.n;
    return l.s;
}

void free_strings(char **s, long n) {
    for (long i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

// ---- NumPy .npy v1.0, written as numpy 1.24's np.save writes it (byte for byte): the
// header dict, spare spaces for growing axis 0, padded with spaces and '\n' so the
// data starts at a multiple of 64 bytes.
int npy_write(const char *path, const float *x, long rows, long cols, char *err, size_t errlen) {
    char dict[160], num[32];
    int len = snprintf(dict, sizeof dict, "{'descr': '<f4', 'fortran_order': False, 'shape': (%ld, %ld), }",
                       rows, cols);
    int grow = 21 - snprintf(num, sizeof num, "%ld", rows);
    int hlen = len + (grow > 0 ? grow : 0) + 1;
    int pad = 64 - (10 + hlen) % 64;
    AtomicFile af;
    if (atomic_open(&af, path)) {
        snprintf(err, errlen, "%s: cannot write: %s", path, strerror(errno));
        return -1;
    }
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
    pre[8] = (unsigned char)((hlen + pad) & 0xFF);
    pre[9] = (unsigned char)((hlen + pad) >> 8);
    fwrite(pre, 1, 10, af.f);
    fputs(dict, af.f);
    fprintf(af.f, "%*s\n", (grow > 0 ? grow : 0) + pad, "");
    fwrite(x, sizeof(float), (size_t)(rows * cols), af.f);   // little-endian hosts
    if (atomic_commit(&af)) {
        snprintf(err, errlen, "%s: write failed: %s", path, strerror(errno ? errno : EIO));
        return -1;
    }
    return 0;
}

// ---- average precision, folds, the SVM

typedef struct ScoreIndex { double s; long i; } ScoreIndex;
static int cmp_score_desc(const void *a, const void *b) {
    const ScoreIndex *x = a, *y = b;
    return x->s < y->s ? 1 : x->s > y->s ? -1 : (x->i > y->i) - (x->i < y->i);
}

double average_precision(const double *scores, const int *positive, long n) {
    ScoreIndex *order = xmalloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    long npos = 0;
    for (long i = 0; i < n; i++) {
        order[i] = (ScoreIndex){scores[i], i};
        npos += positive[i] != 0;
    }
    qsort(order, (size_t)n, sizeof *order, cmp_score_desc);      // highest score first
    double ap = 0, prev_recall = 0;
    long tp = 0, fp = 0;
    for (long i = 0; i < n && npos > 0;) {
        long j = i;                                // one threshold per distinct score
        for (; j < n && order[j].s == order[i].s; j++) {
            if (positive[order[j].i]) tp++;
            else fp++;
        }
        double recall = (double)tp / npos, precision = (double)tp / (tp + fp);
        ap += (recall - prev_recall) * precision;  // sum of (R_k - R_k-1) P_k
        prev_recall = recall;
        i = j;
    }
    free(order);
    return ap;                                     // no positives: 0, as sklearn 1.2
}

void stratified_folds(const int *y, long n, int k, int *fold) {
    // classes numbered in order of first appearance; the sorted labels dealt round-robin
    // give each class's count per fold; then each class's samples, in order, fill fold
    // 0 first, then fold 1, ...
    int first = n ? y[0] : 0;
    long count[2] = {0, 0};
    for (long i = 0; i < n; i++) count[y[i] != first]++;
    for (int c = 0; c < 2; c++) {
        long start = c ? count[0] : 0, end = start + count[c];
        long alloc[64] = {0};
        for (long p = start; p < end; p++) alloc[p % k]++;
        int f = 0;
        long used = 0;
        for (long i = 0; i < n; i++) {
            if ((y[i] != first) != c) continue;
            while (f < k - 1 && used >= alloc[f]) { f++; used = 0; }
            fold[i] = f;
            used++;
        }
    }
}

long svm_train(const float *X, int d, const long *rows, long n, const int *y, const SvmOptions *o,
               double *w) {
    double diag[2] = {0.5 / o->C, 0.5 / (o->C * o->pos_weight)};   // [y == +1]
    double *alpha = xcalloc((size_t)n + 1, sizeof *alpha), *QD = xmalloc(((size_t)n + 1) * sizeof *QD);
    long *index = xmalloc(((size_t)n + 1) * sizeof *index);
    memset(w, 0, (size_t)(d + 1) * sizeof *w);
    for (long i = 0; i < n; i++) {
        const float *x = X + (size_t)(rows ? rows[i] : i) * d;
        double s = 1.0;                            // the bias feature, intercept_scaling = 1
        for (int j = 0; j < d; j++) s += (double)x[j] * x[j];
        QD[i] = diag[y[i] > 0] + s;
        index[i] = i;
    }
    Rng rng;
    rng_seed(&rng, o->seed);
    long active = n, iter = 0;
    double PGmax_old = INFINITY;                   // (no upper bound: no PGmin shrinking)
    while (iter < o->max_iter) {
        double PGmax_new = -INFINITY, PGmin_new = INFINITY;
        for (long i = 0; i < active; i++) {        // visit the active set in random order
            long j = i + (long)(rng_next(&rng) % (uint64_t)(active - i));
            long t = index[i]; index[i] = index[j]; index[j] = t;
        }
        for (long s = 0; s < active; s++) {
            long i = index[s];
            const float *x = X + (size_t)(rows ? rows[i] : i) * d;
            double yi = y[i] > 0 ? 1.0 : -1.0, dot = w[d];
            for (int j = 0; j < d; j++) dot += w[j] * x[j];
            double G = yi * dot - 1 + alpha[i] * diag[y[i] > 0], PG = 0;
            if (alpha[i] == 0) {
                if (G > PGmax_old) {               // shrink: stays at the bound
                    active--;
                    long t = index[s]; index[s] = index[active]; index[active] = t;
                    s--;
                    continue;
                } else if (G < 0) PG = G;
            } else PG = G;                         // no upper bound for the squared hinge
            if (PG > PGmax_new) PGmax_new = PG;
            if (PG < PGmin_new) PGmin_new = PG;
            if (fabs(PG) > 1e-12) {
                double old = alpha[i];
                alpha[i] = fmax(alpha[i] - G / QD[i], 0.0);
                double step = (alpha[i] - old) * yi;
                for (int j = 0; j < d; j++) w[j] += step * x[j];
                w[d] += step;
            }
        }
        iter++;
        if (PGmax_new - PGmin_new <= o->tol) {
            if (active == n) break;
            active = n;                            // check the shrunk ones once more
            PGmax_old = INFINITY;
            continue;
        }
        PGmax_old = PGmax_new <= 0 ? INFINITY : PGmax_new;
    }
    free(alpha);
    free(QD);
    free(index);
    return iter;
}

double svm_decision(const double *w, const float *x, int d) {
    double s = w[d];
    for (int j = 0; j < d; j++) s += w[j] * x[j];
    return s;
}

const double VOC07_COSTS[4] = {0.01, 0.1, 1.0, 10.0};

// Mean AP of the 3 folds at one cost; NaN when a fold's training part has one class
// (sklearn's LinearSVC refuses it and cross_val_score scores it NaN).
static double crossval_ap(const float *X, int d, long n, const int *y, const int *fold, double C,
                          long *rows, double *scores, int *pos) {
    double sum = 0;
    for (int f = 0; f < 3; f++) {
        long nt = 0, nv = 0, np = 0;
        for (long i = 0; i < n; i++)
            if (fold[i] != f) { rows[nt++] = i; np += y[i] > 0; }
        if (np == 0 || np == nt) return NAN;
        int *yt = xmalloc((size_t)nt * sizeof *yt);
        for (long t = 0; t < nt; t++) yt[t] = y[rows[t]];
        double *w = xmalloc((size_t)(d + 1) * sizeof *w);
        SvmOptions o = {C, 2.0, 1e-4, 2000, 0};
        svm_train(X, d, rows, nt, yt, &o, w);
        for (long i = 0; i < n; i++)
            if (fold[i] == f) { scores[nv] = svm_decision(w, X + (size_t)i * d, d); pos[nv++] = y[i] > 0; }
        sum += average_precision(scores, pos, nv);
        free(yt);
        free(w);
    }
    return sum / 3;
}

void voc07_class_svm(const float *Xtr, const signed char *ltr, long ntr, const float *Xte,
                     const signed char *lte, long nte, int d, VocClassResult *r) {
    int *y = xmalloc((size_t)(ntr + 1) * sizeof *y), *fold = xmalloc((size_t)(ntr + 1) * sizeof *fold);
    long n = ntr > nte ? ntr : nte;
    long *rows = xmalloc((size_t)(n + 1) * sizeof *rows);
    double *scores = xmalloc((size_t)(n + 1) * sizeof *scores);
    int *pos = xmalloc((size_t)(n + 1) * sizeof *pos);
    r->npos_train = r->npos_test = 0;
    for (long i = 0; i < ntr; i++) {               // difficult (0) trains as a negative
        y[i] = ltr[i] == 1 ? 1 : -1;
        r->npos_train += y[i] > 0;
    }
    stratified_folds(y, ntr, 3, fold);
    double best = 0.0;
    int best_k = -1;
    for (int k = 0; k < 4; k++) {
        r->cv_ap[k] = crossval_ap(Xtr, d, ntr, y, fold, VOC07_COSTS[k], rows, scores, pos);
        if (r->cv_ap[k] > best) { best = r->cv_ap[k]; best_k = k; }   // NaN never wins
    }
    r->cost_index = best_k < 0 ? 0 : best_k;      // no cost beat AP 0: the smallest
    r->ap = NAN;
    if (r->npos_train > 0 && r->npos_train < ntr) {
        double *w = xmalloc((size_t)(d + 1) * sizeof *w);
        SvmOptions o = {VOC07_COSTS[r->cost_index], 2.0, 1e-4, 2000, 0};
        svm_train(Xtr, d, NULL, ntr, y, &o, w);
        long nv = 0;
        for (long i = 0; i < nte; i++)
            if (lte[i] != 0) {                     // difficult test images are ignored
                scores[nv] = svm_decision(w, Xte + (size_t)i * d, d);
                pos[nv] = lte[i] == 1;
                r->npos_test += pos[nv++];
            }
        r->ap = average_precision(scores, pos, nv);
        free(w);
    }
    free(y);
    free(fold);
    free(rows);
    free(scores);
    free(pos);
}

// ---- the VOC07 layout

// A string -> index map (open addressing, FNV-1a) for image names.
typedef struct NameMap { long *slot; long cap; } NameMap;

// Index of name among names[0..n) (the map indexes them), or -1.
static long namemap_find(const NameMap *m, char *const *names, const char *name, long *slot) {
    long k = (long)(fnv1a(name, strlen(name)) & (uint64_t)(m->cap - 1));
    while (m->slot[k] >= 0 && strcmp(names[m->slot[k]], name)) k = (k + 1) & (m->cap - 1);
    *slot = k;
    return m->slot[k];
}

static void namemap_rebuild(NameMap *m, char *const *names, long n) {
    free(m->slot);
    m->cap = 64;
    while (m->cap < 2 * n + 2) m->cap *= 2;
    m->slot = xmalloc((size_t)m->cap * sizeof *m->slot);
    for (long k = 0; k < m->cap; k++) m->slot[k] = -1;
    for (long i = 0, k; i < n; i++) {
        namemap_find(m, names, names[i], &k);
        m->slot[k] = i;
    }
}

void voc07_free(VocSplit *v) {
    free_strings(v->classes, v->nclasses);
    free_strings(v->images, v->n);
    free(v->labels);
    memset(v, 0, sizeof *v);
}

// Read one CLASS_split.txt into column c of the labels, adding new images as they come.
static int voc07_read_class(VocSplit *v, StrList *names, NameMap *map, long *cap, const char *path,
                            int c, char *err, size_t errlen) {
    FILE *f = fopen(path, "r");
    if (!f) { snprintf(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    char line[512];
    int rc = 0;
    for (long ln = 1; fgets(line, sizeof line, f); ln++) {
        char name[256], extra[2];
        int label;
        int got = sscanf(line, "%255s %d %1s", name, &label, extra);
        if (got <= 0) continue;                    // blank line
        size_t len = strlen(line);
        if (got != 2 || (label != 1 && label != -1 && label != 0) ||
            (len == sizeof line - 1 && line[len - 1] != '\n')) {   // or a line too long
            snprintf(err, errlen, "%s:%ld: expected 'IMAGE LABEL' with LABEL 1, -1 or 0", path, ln);
            rc = -1;
            break;
        }
        long slot, i = namemap_find(map, names->s, name, &slot);
        if (i < 0) {                               // a new image: absent from other classes
            i = names->n;
            strlist_push(names, xstrdup(name));
            if (names->n > *cap) {
                *cap = 2 * names->n;
                v->labels = realloc(v->labels, (size_t)*cap * v->nclasses);
                if (!v->labels) fatal("out of memory");
            }
            memset(v->labels + (size_t)i * v->nclasses, 0, (size_t)v->nclasses);
            if (2 * names->n + 2 > map->cap) namemap_rebuild(map, names->s, names->n);
            else map->slot[slot] = i;
        }
        v->labels[(size_t)i * v->nclasses + c] = (signed char)label;
    }
    if (!rc && ferror(f)) { snprintf(err, errlen, "%s: read error", path); rc = -1; }
    fclose(f);
    return rc;
}

int voc07_read(VocSplit *v, const char *root, const char *split, char *err, size_t errlen) {
    memset(v, 0, sizeof *v);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/ImageSets/Main", root);
    StrList files = {0}, classes = {0}, names = {0};
    if (list_dir(dir, 0, &files, err, errlen)) return -1;
    char suffix[64];
    snprintf(suffix, sizeof suffix, "_%s.txt", split);
    size_t sl = strlen(suffix);
    for (long i = 0; i < files.n; i++) {          // CLASS_split.txt, in file name order
        size_t l = strlen(files.s[i]);
        if (l > sl && !strcmp(files.s[i] + l - sl, suffix))
            strlist_push(&classes, strndup(files.s[i], l - sl));
    }
    strlist_free(&files);
    if (classes.n == 0) {
        snprintf(err, errlen, "%s: no CLASS%s files (expected the PASCAL VOC 2007 layout)", dir, suffix);
        return -1;
    }
    v->classes = classes.s;
    v->nclasses = (int)classes.n;
    NameMap map = {0};
    namemap_rebuild(&map, NULL, 0);
    long cap = 0;
    int rc = 0;
    for (int c = 0; c < v->nclasses && !rc; c++) {
        char path[8192];
        snprintf(path, sizeof path, "%s/%s%s", dir, v->classes[c], suffix);
        rc = voc07_read_class(v, &names, &map, &cap, path, c, err, errlen);
    }
    free(map.slot);
    v->images = names.s;
    v->n = names.n;
    if (!rc && v->n == 0) {
        snprintf(err, errlen, "%s: the CLASS%s files list no images", dir, suffix);
        rc = -1;
    }
    if (rc) voc07_free(v);
    return rc;
}

// Features of a VOC split: JPEGImages/NAME.jpg through the downstream val transform,
// L2-normalised.
static float *voc07_features(Model *m, const char *root, const VocSplit *v, const TransformPipeline *tp,
                             int batch, const char *label, char *err, size_t errlen) {
    char **paths = xmalloc((size_t)v->n * sizeof *paths);
    for (long i = 0; i < v->n; i++) {
        paths[i] = xmalloc(strlen(root) + strlen(v->images[i]) + 20);
        sprintf(paths[i], "%s/JPEGImages/%s.jpg", root, v->images[i]);
    }
    float *f = xmalloc((size_t)v->n * m->cnn.out_channels * sizeof(float));
    FeatureOptions o = {tp, 0, batch, 1, label};
    if (features_extract(m, (const char *const *)paths, v->n, &o, f, err, errlen)) {
        free(f);
        f = NULL;
    }
    free_strings(paths, v->n);
    return f;
}

int eval_voc07(Model *m, const char *root, const TransferOptions *o, double *map, FILE *out,
               char *err, size_t errlen) {
    VocSplit tr, te;
    if (voc07_read(&tr, root, "trainval", err, errlen)) return -1;
    if (voc07_read(&te, root, "test", err, errlen)) { voc07_free(&tr); return -1; }
    int rc = -1;
    float *ftr = NULL, *fte = NULL;
    VocClassResult *res = NULL;
    int same = tr.nclasses == te.nclasses;
    for (int c = 0; same && c < tr.nclasses; c++) same = !strcmp(tr.classes[c], te.classes[c]);
    if (!same) {
        snprintf(err, errlen, "%s/ImageSets/Main: the classes of *_trainval.txt and *_test.txt differ", root);
        goto done;
    }
    int S, R, d = m->cnn.out_channels;
    downstream_sizes(&m->cfg, &S, &R);
    TransformPipeline tp;
    const char val[3][64] = {"smallest_resize", "center_crop", "normalize"};
    if (transform_parse(&tp, val, 3, S, R, err, errlen)) goto done;
    if (!o->quiet)
        fprintf(out, "VOC07 SVMs: %s, %d classes, trainval %ld images, test %ld; %s features (%d), "
                "resize %d, crop %d, L2-normalised\n", root, tr.nclasses, tr.n, te.n,
                o->random_weights ? "random-init" : "pretrained", d, R, S);
    fflush(out);
    if (!(ftr = voc07_features(m, root, &tr, &tp, o->batch_size, o->quiet ? NULL : "trainval features", err, errlen)) ||
        !(fte = voc07_features(m, root, &te, &tp, o->batch_size, o->quiet ? NULL : "test features", err, errlen)))
        goto done;
    res = xcalloc((size_t)tr.nclasses, sizeof *res);
    // one class's column of labels per task; classes run in parallel
    double t0 = now_seconds();
    #pragma omp parallel for schedule(dynamic, 1)
    for (int c = 0; c < tr.nclasses; c++) {
        signed char *ltr = xmalloc((size_t)tr.n + 1), *lte = xmalloc((size_t)te.n + 1);
        for (long i = 0; i < tr.n; i++) ltr[i] = tr.labels[(size_t)i * tr.nclasses + c];
        for (long i = 0; i < te.n; i++) lte[i] = te.labels[(size_t)i * te.nclasses + c];
        voc07_class_svm(ftr, ltr, tr.n, fte, lte, te.n, d, &res[c]);
        free(ltr);
        free(lte);
    }
    double sum = 0;
    int counted = 0;
    fprintf(out, "%-20s %6s %6s %6s %8s %7s\n", "class", "pos/tv", "pos/te", "C", "cv AP", "AP");
    for (int c = 0; c < tr.nclasses; c++) {
        VocClassResult *r = &res[c];
        if (isnan(r->ap)) {
            fprintf(out, "%-20s %6ld %6s %6s %8s %7s  (no SVM: trainval holds one label only)\n",
                    tr.classes[c], r->npos_train, "-", "-", "-", "-");
            continue;
        }
        double cv = r->cv_ap[r->cost_index];
        fprintf(out, "%-20s %6ld %6ld %6g %8.2f %7.2f%s\n", tr.classes[c], r->npos_train, r->npos_test,
                VOC07_COSTS[r->cost_index], 100 * cv, 100 * r->ap,
                r->npos_test ? "" : "  (no positive test image: AP 0, as sklearn)");
        sum += r->ap;
        counted++;
    }
    *map = counted ? 100 * sum / counted : NAN;
    fprintf(out, "mAP %.2f over %d classes (VOC07 test, difficult ignored; SVMs %.1fs)\n", *map,
            counted, now_seconds() - t0);
    rc = 0;
done:
    free(res);
    free(ftr);
    free(fte);
    voc07_free(&tr);
    voc07_free(&te);
    return rc;
}

// ---- the ImageNet folder layout and the linear probe

void image_folder_free(ImageFolder *f) {
    free_strings(f->classes, f->nclasses);
    free_strings(f->paths, f->n);
    free(f->labels);
    memset(f, 0, sizeof *f);
}

int image_folder_read(ImageFolder *f, const char *dir, char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    StrList classes = {0}, paths = {0};
    if (list_dir(dir, 1, &classes, err, errlen)) return -1;
    f->classes = classes.s;
    f->nclasses = (int)classes.n;
    long cap = 0;
    int rc = 0;
    if (classes.n == 0) {
        snprintf(err, errlen, "%s: no class folders (expected %s/CLASS/IMAGE.jpg)", dir, dir);
        rc = -1;
    }
    for (int c = 0; c < f->nclasses && !rc; c++) {
        char *cdir = xmalloc(strlen(dir) + strlen(f->classes[c]) + 2);
        sprintf(cdir, "%s/%s", dir, f->classes[c]);
        StrList rel = {0};
        rc = walk_images(cdir, "", &rel, 0, err, errlen);
        if (!rc && rel.n == 0) {
            snprintf(err, errlen, "%s: no images in this class folder", cdir);
            rc = -1;
        }
        for (long i = 0; i < rel.n && !rc; i++) {
            char *p = xmalloc(strlen(cdir) + strlen(rel.s[i]) + 2);
            sprintf(p, "%s/%s", cdir, rel.s[i]);
            strlist_push(&paths, p);
            if (paths.n > cap) {
                cap = paths.cap;
                f->labels = realloc(f->labels, (size_t)cap * sizeof *f->labels);
                if (!f->labels) fatal("out of memory");
            }
            f->labels[paths.n - 1] = c;
        }
        strlist_free(&rel);
        free(cdir);
    }
    f->paths = paths.s;
    f->n = paths.n;
    if (rc) image_folder_free(f);
    return rc;
}

void linear_probe_init(LinearProbe *p, int C, int K, uint64_t seed) {
    p->C = C;
    p->K = K;
    p->w = xmalloc((size_t)K * C * sizeof(float));
    p->b = xcalloc((size_t)K, sizeof(float));                       // bias 0
    p->mw = xcalloc((size_t)K * C, sizeof(float));                  // momentum buffers
    p->mb = xcalloc((size_t)K, sizeof(float));
    Rng r;
    rng_seed(&r, seed);
    for (long i = 0; i < (long)K * C; i++) p->w[i] = (float)(0.01 * rng_normal(&r));   // N(0, 0.01)
}

void linear_probe_free(LinearProbe *p) {
    free(p->w);
    free(p->b);
    free(p->mw);
    free(p->mb);
    memset(p, 0, sizeof *p);
}

void linear_probe_forward(const LinearProbe *p, const float *x, int B, float *logits) {
    for (int i = 0; i < B; i++) memcpy(logits + (size_t)i * p->K, p->b, (size_t)p->K * sizeof(float));
    sgemm(0, 1, B, p->K, p->C, 1.0f, x, p->C, p->w, p->C, 1.0f, logits, p->K);   // x W^T + b
}

float linear_probe_step(LinearProbe *p, const float *x, const int *y, int B, float lr, float momentum) {
    int K = p->K, C = p->C;
    float *dl = xmalloc((size_t)B * K * sizeof(float)), *gw = xmalloc((size_t)K * C * sizeof(float));
    linear_probe_forward(p, x, B, dl);
    double loss = 0;
    for (int i = 0; i < B; i++) {                  // d mean CE / d logits = (softmax - onehot) / B
        float *row = dl + (size_t)i * K, mx = row[0];
        for (int k = 1; k < K; k++) mx = fmaxf(mx, row[k]);
        double z = 0;
        for (int k = 0; k < K; k++) z += exp((double)row[k] - mx);
        loss += log(z) + mx - row[y[i]];
        for (int k = 0; k < K; k++) row[k] = (float)(exp((double)row[k] - mx) / z / B);
        row[y[i]] -= 1.0f / B;
    }
    sgemm(1, 0, K, C, B, 1.0f, dl, K, x, C, 0.0f, gw, C);          // dW = dlogits^T x
    for (int k = 0; k < K; k++) {                  // SGD with momentum, as torch.optim.SGD
        float gb = 0;
        for (int i = 0; i < B; i++) gb += dl[(size_t)i * K + k];
        p->mb[k] = momentum * p->mb[k] + gb;
        p->b[k] -= lr * p->mb[k];
    }
    for (long j = 0; j < (long)K * C; j++) {
        p->mw[j] = momentum * p->mw[j] + gw[j];
        p->w[j] -= lr * p->mw[j];
    }
    free(dl);
    free(gw);
    return (float)(loss / B);
}

double cosine_lr(double base, long step, long total) {
    double c = cos((double)step / (double)total * (M_PI / 2));    // the original's cos^2 form
    return base * c * c;
}

void topk_correct(const float *logits, const int *y, int B, int K, long *top1, long *top5) {
    for (int i = 0; i < B; i++) {
        const float *row = logits + (size_t)i * K;
        int above = 0;                             // classes scored above the true one
        for (int k = 0; k < K; k++) above += row[k] > row[y[i]] || (row[k] == row[y[i]] && k < y[i]);
        *top1 += above < 1;
        *top5 += above < 5;
    }
}

// Features of rows [0, n) of `paths` picked by idx (NULL: in order).
static int gather_features(Model *m, char *const *paths, const long *idx, long n, const TransformPipeline *tp,
                           uint64_t seed, int batch, const char *label, float *out, char *err, size_t errlen) {
    const char **sel = xmalloc((size_t)(n + 1) * sizeof *sel);
    for (long i = 0; i < n; i++) sel[i] = paths[idx ? idx[i] : i];
    FeatureOptions o = {tp, seed, batch, 0, label};
    int rc = features_extract(m, sel, n, &o, out, err, errlen);
    free(sel);
    return rc;
}

int eval_linear(Model *m, const char *root, const TransferOptions *o, double acc[2], FILE *out,
                char *err, size_t errlen) {
    ImageFolder tr, va;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/train", root);
    if (image_folder_read(&tr, dir, err, errlen)) return -1;
    snprintf(dir, sizeof dir, "%s/val", root);
    if (image_folder_read(&va, dir, err, errlen)) { image_folder_free(&tr); return -1; }
    int rc = -1, C = m->cnn.out_channels, K = tr.nclasses, B = o->probe_batch;
    float *ftrain = NULL, *fval = NULL, *fb = NULL, *logits = NULL;
    long *perm = NULL;
    int *yb = NULL;
    LinearProbe p = {0};
    int same = tr.nclasses == va.nclasses;
    for (int c = 0; same && c < K; c++) same = !strcmp(tr.classes[c], va.classes[c]);
    if (!same) {
        snprintf(err, errlen, "%s: the class folders of train/ and val/ differ", root);
        goto done;
    }
    TransferOptions oo = *o;                       // epochs from iterations, when given
    if (o->iterations > 0) oo.epochs = (int)fmax(1, floor((double)o->iterations * B / tr.n + 0.5));
    o = &oo;
    if (B < 1 || o->epochs < 1) {
        snprintf(err, errlen, "linear probe: batch size %d and epochs %d must be at least 1", B, o->epochs);
        goto done;
    }
    int S, R;
    downstream_sizes(&m->cfg, &S, &R);
    TransformPipeline tpv, tpt;
    const char val[3][64] = {"smallest_resize", "center_crop", "normalize"};
    const char train[3][64] = {"random_resized_crop::{'scale': (0.08, 1.0)}", "horizontal_flip", "normalize"};
    if (transform_parse(&tpv, val, 3, S, R, err, errlen) || transform_parse(&tpt, train, 3, S, R, err, errlen))
        goto done;
    long ipe = (tr.n + B - 1) / B, T = ipe * o->epochs;
    if (!o->quiet)
        fprintf(out, "linear probe: %s, %d classes, train %ld images, val %ld; %s features (%d); "
                "%d epochs x %ld iterations, batch %d, SGD momentum 0.9, LR %g cosine, no weight decay; %s\n",
                root, K, tr.n, va.n, o->random_weights ? "random-init" : "pretrained", C, o->epochs, ipe, B,
                o->lr, o->precomputed ? "PRECOMPUTED center-crop train features (fast path, no augmentation)"
                                      : "train: random resized crop 8-100% + flip");
    fflush(out);                                   // before the progress lines on stderr
    fval = xmalloc((size_t)va.n * C * sizeof(float));
    if (gather_features(m, va.paths, NULL, va.n, &tpv, 0, o->batch_size, o->quiet ? NULL : "val features", fval,
                        err, errlen))
        goto done;
    if (o->precomputed) {
        ftrain = xmalloc((size_t)tr.n * C * sizeof(float));
        if (gather_features(m, tr.paths, NULL, tr.n, &tpv, 0, o->batch_size, o->quiet ? NULL : "train features",
                            ftrain, err, errlen))
            goto done;
    }
    linear_probe_init(&p, C, K, o->seed);
    perm = xmalloc((size_t)tr.n * sizeof *perm);
    fb = xmalloc((size_t)B * C * sizeof(float));
    yb = xmalloc((size_t)B * sizeof *yb);
    long t = 0;
    double t0 = now_seconds();
    for (int e = 0; e < o->epochs; e++) {
        Rng rng;                                   // epoch e: a fresh shuffle of train
        rng_seed(&rng, sample_seed(o->seed, 0x5EED0000ull + (uint64_t)e));
        for (long i = 0; i < tr.n; i++) perm[i] = i;
        for (long i = tr.n - 1; i > 0; i--) {
            long j = (long)(rng_next(&rng) % (uint64_t)(i + 1)), s = perm[i];
            perm[i] = perm[j];
            perm[j] = s;
        }
        double loss = 0;
        for (long it = 0; it < ipe; it++, t++) {
            long i0 = it * B;
            int nb = tr.n - i0 < B ? (int)(tr.n - i0) : B;   // the last batch may be short
            for (int b = 0; b < nb; b++) {
                yb[b] = tr.labels[perm[i0 + b]];
                if (o->precomputed) memcpy(fb + (size_t)b * C, ftrain + (size_t)perm[i0 + b] * C, C * sizeof(float));
            }
            if (!o->precomputed &&
                gather_features(m, tr.paths, perm + i0, nb, &tpt, sample_seed(o->seed, (uint64_t)t), o->batch_size,
                                NULL, fb, err, errlen))
                goto done;
            loss += linear_probe_step(&p, fb, yb, nb, (float)cosine_lr(o->lr, t, T), 0.9f);
        }
        if (!o->quiet) {
            double el = now_seconds() - t0;
            fprintf(stderr, "epoch %d/%d: loss %.4f, last lr %.4g, %.1f images/s, ETA %.0fs\n", e + 1, o->epochs,
                    loss / ipe, cosine_lr(o->lr, t - 1, T), (double)(e + 1) * tr.n / el, el / (e + 1) * (o->epochs - e - 1));
        }
    }
    logits = xmalloc((size_t)va.n * K * sizeof(float));
    linear_probe_forward(&p, fval, (int)va.n, logits);
    long top1 = 0, top5 = 0;
    topk_correct(logits, va.labels, (int)va.n, K, &top1, &top5);
    acc[0] = 100.0 * top1 / va.n;
    acc[1] = 100.0 * top5 / va.n;
    fprintf(out, "top-1 %.2f  top-5 %.2f  (val, %ld images, center crop%s)\n", acc[0], acc[1], va.n,
            o->precomputed ? "; trained on precomputed features: fast path" : "");
    rc = 0;
done:
    linear_probe_free(&p);
    free(ftrain);
    free(fval);
    free(fb);
    free(yb);
    free(perm);
    free(logits);
    image_folder_free(&tr);
    image_folder_free(&va);
    return rc;
}


// ---- end 10b
