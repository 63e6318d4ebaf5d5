// train.c — VirTex pretraining: the learning-rate schedules, the optimiser (SGD with
// momentum / AdamW, Lookahead, gradient clipping) and the `virtex train` driver.
// model.h section 9 lists what is here; the original is scripts/pretrain_virtex.py
// with virtex/optim/*.py and the OptimizerFactory of virtex/factories.py.
//
//   1. schedules ........... lr_multiplier, schedule_check
//   2. parameter groups .... regex_match_start (OPTIM.NO_DECAY)
//   3. the optimiser ....... optimizer_init / step / state, clip_grad_norm
//   4. validation .......... eval_loss
//   5. the run ............. train_run: checkpoints, progress, metrics, signals
//   6. plots ............... plot_run
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "model.h"

// ----------------------------------------------------------------------------
// 1. schedules (virtex/optim/lr_scheduler.py)

double lr_multiplier(const Config *c, long step) {
    long W = c->OPTIM.WARMUP_STEPS, T = c->OPTIM.NUM_ITERATIONS;
    double m;
    if (step < W) {
        m = (double)step / (double)(W > 1 ? W : 1);
    } else if (!strcmp(c->OPTIM.LR_DECAY_NAME, "linear")) {
        m = (double)(T - step) / (double)(T - W);
    } else if (!strcmp(c->OPTIM.LR_DECAY_NAME, "cosine")) {
        double cm = cos((double)(step - W) / (double)(T - W) * (M_PI / 2));
        m = cm * cm;
    } else if (!strcmp(c->OPTIM.LR_DECAY_NAME, "multistep")) {
        int passed = 0;   // bisect.bisect_right(milestones, step)
        for (int i = 0; i < c->OPTIM.n_LR_STEPS; i++) passed += c->OPTIM.LR_STEPS[i] <= step;
        m = pow(c->OPTIM.LR_GAMMA, passed);
    } else {
        m = 1;            // "none"
    }
    return m > 0 ? m : 0;
}

int schedule_check(const Config *c, char *err, size_t errlen) {
    const char *name = c->OPTIM.LR_DECAY_NAME;
    long W = c->OPTIM.WARMUP_STEPS, T = c->OPTIM.NUM_ITERATIONS;
    if (strcmp(name, "none") && strcmp(name, "linear") && strcmp(name, "cosine") &&
        strcmp(name, "multistep")) {
        seterr(err, errlen, "OPTIM.LR_DECAY_NAME: expected none, linear, cosine or multistep, not '%s'", name);
        return -1;
    }
    if (T < 1 || W < 0) {
        seterr(err, errlen, "OPTIM.NUM_ITERATIONS (%ld) must be >= 1 and OPTIM.WARMUP_STEPS (%ld) >= 0", T, W);
        return -1;
    }
    if (W >= T) {
        seterr(err, errlen, "OPTIM.WARMUP_STEPS (%ld) must be less than OPTIM.NUM_ITERATIONS (%ld)", W, T);
        return -1;
    }
    if (!strcmp(name, "multistep")) {
        const int *s = c->OPTIM.LR_STEPS;
        int n = c->OPTIM.n_LR_STEPS;
        if (n < 1) { seterr(err, errlen, "OPTIM.LR_STEPS: multistep needs at least one milestone"); return -1; }
        for (int i = 1; i < n; i++)
            if (s[i] < s[i - 1]) { seterr(err, errlen, "OPTIM.LR_STEPS: milestones must be increasing"); return -1; }
        if (s[0] <= W) { seterr(err, errlen, "OPTIM.LR_STEPS: the first milestone (%d) must be after the warmup (%ld)", s[0], W); return -1; }
        if (s[n - 1] >= T) { seterr(err, errlen, "OPTIM.LR_STEPS: the last milestone (%d) must be less than NUM_ITERATIONS (%ld)", s[n - 1], T); return -1; }
    }
    return 0;
}

// ----------------------------------------------------------------------------
// 2. parameter groups: Python's re.match through POSIX ERE

int regex_match_start(const char *pattern, const char *name, char *err, size_t errlen) {
    size_t n = strlen(pattern);
    char *ere = malloc(n * 16 + 1), *o = ere;
    if (!ere) { seterr(err, errlen, "out of memory"); return -1; }
    for (size_t i = 0; i < n; i++) {
        char ch = pattern[i];
        if ((ch == '*' || ch == '+' || ch == '?' || ch == '}') && pattern[i + 1] == '?') {
            seterr(err, errlen, "'%s': lazy quantifiers (%c?) have no POSIX equivalent", pattern, ch);
            free(ere);
            return -1;
        }
        if (ch == '(' && pattern[i + 1] == '?') {
            seterr(err, errlen, "'%s': (?...) groups are not supported", pattern);
            free(ere);
            return -1;
        }
        if (ch != '\\' || i + 1 == n) { *o++ = ch; continue; }
        char e = pattern[++i];
        const char *cls = e == 'd' ? "[0-9]" : e == 'D' ? "[^0-9]" : e == 'w' ? "[[:alnum:]_]"
                        : e == 'W' ? "[^[:alnum:]_]" : e == 's' ? "[[:space:]]"
                        : e == 'S' ? "[^[:space:]]" : NULL;
        if (cls) { strcpy(o, cls); o += strlen(cls); continue; }
        if (isdigit((unsigned char)e) || isalpha((unsigned char)e)) {
            seterr(err, errlen, "'%s': the escape \\%c is not supported", pattern, e);
            free(ere);
            return -1;
        }
        *o++ = '\\';
        *o++ = e;
    }
    *o = 0;
    regex_t re;
    int rc = regcomp(&re, ere, REG_EXTENDED);
    free(ere);
    if (rc) {
        char msg[256];
        regerror(rc, &re, msg, sizeof msg);
        seterr(err, errlen, "'%s': %s", pattern, msg);
        return -1;
    }
    regmatch_t mt;
    int hit = regexec(&re, name, 1, &mt, 0) == 0 && mt.rm_so == 0;
    regfree(&re);
    return hit;
}

// ----------------------------------------------------------------------------
// 3. the optimiser

int optimizer_init(Optimizer *o, Model *m, char *err, size_t errlen) {
    const Config *c = &m->cfg;
    memset(o, 0, sizeof *o);
    if (strcmp(c->OPTIM.OPTIMIZER_NAME, "sgd") && strcmp(c->OPTIM.OPTIMIZER_NAME, "adamw")) {
        seterr(err, errlen, "OPTIM.OPTIMIZER_NAME: expected sgd or adamw, not '%s'", c->OPTIM.OPTIMIZER_NAME);
        return -1;
    }
    if (c->OPTIM.LOOKAHEAD.USE && c->OPTIM.LOOKAHEAD.STEPS < 1) {
        seterr(err, errlen, "OPTIM.LOOKAHEAD.STEPS: expected >= 1, not %d", c->OPTIM.LOOKAHEAD.STEPS);
        return -1;
    }
    o->adamw = !strcmp(c->OPTIM.OPTIMIZER_NAME, "adamw");
    o->momentum = c->OPTIM.SGD_MOMENTUM;
    o->base = m->params;
    o->nparams = m->nparams;
    o->param = xcalloc(m->nstate + 1, sizeof *o->param);
    o->name = xcalloc(m->nstate + 1, sizeof *o->name);
    o->lr = xcalloc(m->nstate + 1, sizeof *o->lr);
    o->weight_decay = xcalloc(m->nstate + 1, sizeof *o->weight_decay);
    for (int i = 0; i < m->nstate; i++) {
        const StateEntry *e = &m->state[i];
        if (!e->param || e->alias) continue;      // buffers; second names of shared tensors
        int k = o->ngroups++;
        int nd = regex_match_start(c->OPTIM.NO_DECAY, e->name, err, errlen);
        if (nd < 0) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", err);
            seterr(err, errlen, "OPTIM.NO_DECAY: %s", msg);
            optimizer_free(o);
            return -1;
        }
        o->param[k] = e->param;
        o->name[k] = e->name;
        o->lr[k] = strstr(e->name, "cnn") ? c->OPTIM.CNN_LR : c->OPTIM.LR;
        o->weight_decay[k] = nd ? 0.0f : c->OPTIM.WEIGHT_DECAY;
    }
    o->buf = xcalloc(m->nparams + 1, sizeof(float));
    if (o->adamw) o->buf2 = xcalloc(m->nparams + 1, sizeof(float));
    if (c->OPTIM.LOOKAHEAD.USE) {
        o->slow = xmalloc((m->nparams + 1) * sizeof(float));
        memcpy(o->slow, m->params, m->nparams * sizeof(float));
        o->lookahead_k = c->OPTIM.LOOKAHEAD.STEPS;
        o->lookahead_alpha = c->OPTIM.LOOKAHEAD.ALPHA;
    }
    return 0;
}

void optimizer_free(Optimizer *o) {
    free(o->param);
    free(o->name);
    free(o->lr);
    free(o->weight_decay);
    free(o->buf);
    free(o->buf2);
    free(o->slow);
    memset(o, 0, sizeof *o);
}

double clip_grad_norm(Model *m, double max_norm) {
    double ss = 0;
    #pragma omp parallel for reduction(+ : ss) schedule(static)
    for (long i = 0; i < m->nparams; i++) ss += (double)m->grads[i] * m->grads[i];
    double norm = sqrt(ss);
    float coef = (float)(max_norm / (norm + 1e-6));
    if (coef < 1.0f) {
        #pragma omp parallel for schedule(static)
        for (long i = 0; i < m->nparams; i++) m->grads[i] *= coef;
    }
    return norm;
}

// torch.optim.SGD(momentum, dampening 0, no nesterov) on one tensor, in float32 as
// PyTorch computes it (one rounding per operation; C11 mode does not contract).
static void sgd_update(float *p, const float *g, float *buf, long n, float lr, float wd,
                       float momentum) {
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        buf[i] = buf[i] * momentum + d;
        p[i] = p[i] + (-lr) * buf[i];
    }
}

// torch.optim.AdamW (amsgrad off) on one tensor; step counts from 1.
static void adamw_update(float *p, const float *g, float *m1, float *m2, long n, float lr,
                         float wd, long step) {
    const double b1 = 0.9, b2 = 0.999, eps = 1e-8;
    float decay = (float)(1.0 - (double)lr * wd);
    double bc1 = 1 - pow(b1, (double)step), bc2 = 1 - pow(b2, (double)step);
    float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    #pragma omp parallel for schedule(static) if (n > 65536)
    for (long i = 0; i < n; i++) {
        p[i] *= decay;
        m1[i] = m1[i] * (float)b1 + g[i] * (float)(1 - b1);
        m2[i] = m2[i] * (float)b2 + g[i] * g[i] * (float)(1 - b2);
        float denom = sqrtf(m2[i]) / bc2_sqrt + (float)eps;
        p[i] = p[i] + (-step_size) * (m1[i] / denom);
    }
}

void optimizer_step(Optimizer *o, double lr_mult) {
    o->steps++;
    for (int k = 0; k < o->ngroups; k++) {
        Tensor *t = o->param[k];
        long off = t->data - o->base;
        float lr = (float)(o->lr[k] * lr_mult);   // LambdaLR: base LR x multiplier
        if (o->adamw)
            adamw_update(t->data, t->grad, o->buf + off, o->buf2 + off, t->numel, lr,
                         o->weight_decay[k], o->steps);
        else
            sgd_update(t->data, t->grad, o->buf + off, t->numel, lr, o->weight_decay[k],
                       o->momentum);
    }
    if (o->slow && ++o->lookahead_counter >= o->lookahead_k) {
        o->lookahead_counter = 0;
        float a = o->lookahead_alpha, b = 1.0f - o->lookahead_alpha;
        float *p = o->base, *s = o->slow;
        #pragma omp parallel for schedule(static)
        for (long i = 0; i < o->nparams; i++) {
            p[i] = p[i] * a + s[i] * b;
            s[i] = p[i];
        }
    }
}

static NamedTensor state_tensor(const char *name, const char *suffix, DType dt, const Tensor *t,
                                void *data) {
    NamedTensor nt = {0};
    size_t len = strlen(name) + strlen(suffix) + 16;
    nt.name = xmalloc(len);
    snprintf(nt.name, len, "optimizer.%s%s", name, suffix);
    nt.dtype = dt;
    if (t) {
        nt.ndim = t->ndim;
        memcpy(nt.shape, t->shape, sizeof nt.shape);
        nt.numel = t->numel;
    } else {
        nt.ndim = 1;
        nt.shape[0] = 1;
        nt.numel = 1;
    }
    nt.data = data;
    return nt;
}

NamedTensor *optimizer_state(Optimizer *o, int *n) {
    NamedTensor *t = xcalloc((size_t)o->ngroups * 3 + 3, sizeof *t);
    int k = 0;
    for (int g = 0; g < o->ngroups; g++) {
        Tensor *p = o->param[g];
        long off = p->data - o->base;
        if (o->adamw) {
            t[k++] = state_tensor(o->name[g], ".exp_avg", DT_F32, p, o->buf + off);
            t[k++] = state_tensor(o->name[g], ".exp_avg_sq", DT_F32, p, o->buf2 + off);
        } else {
            t[k++] = state_tensor(o->name[g], ".momentum_buffer", DT_F32, p, o->buf + off);
        }
        if (o->slow) t[k++] = state_tensor(o->name[g], ".slow_params", DT_F32, p, o->slow + off);
    }
    t[k++] = state_tensor("steps", "", DT_I64, NULL, &o->steps);
    t[k++] = state_tensor("lookahead_counter", "", DT_I64, NULL, &o->lookahead_counter);
    *n = k;
    return t;
}

// Copy one saved tensor (name, shape and dtype checked) into dst.
static int load_one(const TensorFile *tf, const NamedTensor *want, char *err, size_t errlen) {
    const NamedTensor *got = tensorfile_find(tf, want->name);
    if (!got) { seterr(err, errlen, "'%s' is missing (not a training checkpoint of this optimiser?)", want->name); return -1; }
    if (got->dtype != want->dtype || got->numel != want->numel || got->ndim != want->ndim ||
        memcmp(got->shape, want->shape, sizeof(int) * want->ndim)) {
        seterr(err, errlen, "'%s' has the wrong shape or type", want->name);
        return -1;
    }
    memcpy(want->data, got->data, (size_t)want->numel * (want->dtype == DT_I64 ? 8 : 4));
    return 0;
}

int optimizer_load(Optimizer *o, const TensorFile *tf, char *err, size_t errlen) {
    int n, rc = 0;
    NamedTensor *t = optimizer_state(o, &n);
    for (int i = 0; i < n && !rc; i++) rc = load_one(tf, &t[i], err, errlen);
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
    return rc;
}

// ----------------------------------------------------------------------------
// 4. validation

// Non-padding targets of a batch: tokens[:, 1:] that are not 0 (the loss's ignore index).
static long count_targets(const Batch *b) {
    long n = 0;
    for (int i = 0; i < b->B; i++)
        for (int t = 1; t < b->T; t++) n += b->tokens[(long)i * b->T + t] != 0;
    return n;
}

int eval_loss(Model *m, const char *split, long limit, int workers, EvalLoss *out, char *err,
              size_t errlen) {
    memset(out, 0, sizeof *out);
    LoaderOptions lo = {.split = split, .train = 0, .workers = workers, .limit = limit, .quiet = 1};
    Loader *L = loader_open(&m->cfg, &lo, err, errlen);
    if (!L) return -1;
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    g.grad_enabled = 0;
    g.training = 0;
    int captioning = m->task == TASK_BICAPTIONING || m->task == TASK_CAPTIONING;
    double sf = 0, sb = 0;
    const Batch *b;
    while ((b = loader_next(L))) {
        graph_reset(&g);
        Losses l = model_loss(&g, m, b);
        long w = captioning ? count_targets(b) : b->B;   // token mean, else image mean
        sf += (double)l.forward * w;
        sb += (double)l.backward * w;
        out->tokens += w;
        out->images += b->B;
    }
    LoaderStats st = loader_stats(L);
    loader_close(L);
    graph_free(&g);
    if (out->tokens == 0) {
        seterr(err, errlen, "%s/%s2017: no captions to evaluate", m->cfg.DATA.ROOT, split);
        return -1;
    }
    if (st.bad)
        fprintf(stderr, "virtex: %ld unreadable images were replaced by others\n", st.bad);
    out->forward = sf / out->tokens;
    out->backward = sb / out->tokens;
    out->total = out->forward + out->backward;
    return 0;
}

// ----------------------------------------------------------------------------
// 5. the run

static volatile sig_atomic_t interrupted;
static void on_signal(int sig) { interrupted = sig; }

static long rss_mib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, rss = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    return rss * sysconf(_SC_PAGESIZE) / (1 << 20);
}

static void format_duration(double s, char *buf, size_t n) {
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, n, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, n, "%lds", t);
}

// Everything one run holds.
typedef struct Run {
    const TrainOptions *opt;
    Config cfg;
    Model m;
    Optimizer opt_state;
    char dir[1024], metrics_path[1200];
    FILE *metrics;
    long iteration;             // iterations done
    double best_val;            // lowest validation loss so far (INFINITY: none)
    int64_t best_iteration;
    long *kept;                 // iterations of the checkpoints kept, oldest first
    int nkept;
    char last_ckpt[1200];       // the newest checkpoint written ("" none)
    int tty;
} Run;

static void checkpoint_path(const Run *r, long it, char *buf, size_t n) {
    if (it < 0) snprintf(buf, n, "%s/checkpoint_best.ckpt", r->dir);
    else snprintf(buf, n, "%s/checkpoint_%ld.ckpt", r->dir, it);
}

// Model + optimiser + trainer state. The random state is the iteration itself: every
// draw of iteration i (data order, augmentation, dropout) is seeded from (seed, i).
static int save_checkpoint(Run *r, const char *path, char *err, size_t errlen) {
    int n;
    NamedTensor *t = optimizer_state(&r->opt_state, &n);
    int64_t iteration = r->iteration, best_it = r->best_iteration;
    float best = (float)r->best_val;
    NamedTensor extra[3] = {
        {"trainer.iteration", DT_I64, 1, {1}, 1, &iteration},
        {"trainer.best_val_loss", DT_F32, 1, {1}, 1, &best},
        {"trainer.best_iteration", DT_I64, 1, {1}, 1, &best_it},
    };
    NamedTensor *all = xcalloc((size_t)n + 3, sizeof *all);
    memcpy(all, t, n * sizeof *t);
    memcpy(all + n, extra, sizeof extra);
    int rc = checkpoint_save_with(&r->m, all, n + 3, path, err, errlen);
    for (int i = 0; i < n; i++) free(t[i].name);
    free(t);
    free(all);
    return rc;
}

// A periodic checkpoint: written, then the oldest beyond `keep` removed.
static int save_periodic(Run *r, char *err, size_t errlen) {
    char path[1200];
    checkpoint_path(r, r->iteration, path, sizeof path);
    if (save_checkpoint(r, path, err, errlen)) return -1;
    snprintf(r->last_ckpt, sizeof r->last_ckpt, "%s", path);
    int keep = r->opt->keep > 0 ? r->opt->keep : 3;
    if (!r->nkept || r->kept[r->nkept - 1] != r->iteration) r->kept[r->nkept++] = r->iteration;
    while (r->nkept > keep) {
        checkpoint_path(r, r->kept[0], path, sizeof path);
        unlink(path);
        memmove(r->kept, r->kept + 1, --r->nkept * sizeof *r->kept);
    }
    return 0;
}

static void metrics_line(Run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void metrics_line(Run *r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(r->metrics, fmt, ap);
    va_end(ap);
    fputc('\n', r->metrics);
    fflush(r->metrics);
}

ShapeScore shapes_score(const char *const *refs, const char *const *captions, long n, long shift) {
    ShapeScore s = {.images = n};
    enum { MAXC = SYNTH_MAX_OBJECTS * 4 };
    for (long i = 0; i < n; i++) {
        int want[MAXC], got[MAXC];
        int nw = synth_caption_classes(refs[i], want, MAXC);
        int ng = synth_caption_classes(captions[(i + shift) % n], got, MAXC);
        if (nw > MAXC) nw = MAXC;
        if (ng > MAXC) ng = MAXC;
        s.objects += nw;
        s.phrases += ng;
        for (int a = 0; a < nw; a++) {
            int same = 0, colour = 0, shape = 0;
            for (int c = 0; c < ng; c++) {
                same |= want[a] == got[c];
                colour |= want[a] / SYNTH_SHAPES == got[c] / SYNTH_SHAPES;
                shape |= want[a] % SYNTH_SHAPES == got[c] % SYNTH_SHAPES;
            }
            s.named += same;
            s.colours += colour;
            s.shapes += shape;
        }
        for (int c = 0; c < ng; c++)
            for (int a = 0; a < nw; a++) s.correct += want[a] == got[c];
    }
    return s;
}

static double percent(long a, long b) { return b ? 100.0 * a / b : 0.0; }

double caption_report(Model *m, int n, long limit, int score, int workers) {
    char err[1024];
    LoaderOptions lo = {.split = "val", .train = 0, .workers = workers, .limit = score ? limit : n, .quiet = 1};
    Loader *L = loader_open(&m->cfg, &lo, err, sizeof err);
    if (!L) { fprintf(stderr, "virtex: captions: %s\n", err); return -1; }
    const Tokenizer *tk = loader_tokenizer(L);
    const CocoCaptions *cc = loader_dataset(L);
    int S = m->cfg.DATA.IMAGE_CROP_SIZE;
    DecodeOptions d = {.method = DECODE_GREEDY, .beam_size = 1, .max_steps = m->max_len - 1,
                       .keep_sos = 1};
    long seen = 0;
    char **texts = xcalloc((size_t)cc->n + 1, sizeof *texts);      // every val image at most
    const char **refs = xcalloc((size_t)cc->n + 1, sizeof *refs);
    const Batch *b;
    while ((b = loader_next(L))) {
        int *tokens = xcalloc((size_t)b->B * d.max_steps + 1, sizeof(int));
        int *len = xcalloc(b->B + 1, sizeof(int));
        decode_captions(m, b->images, b->B, S, &d, tokens, len);
        for (int i = 0; i < b->B; i++, seen++) {
            char text[1024];
            tokenizer_decode(tk, tokens + (long)i * d.max_steps, len[i], text, sizeof text);
            const char *ref = "";
            for (int k = 0; k < cc->n; k++)
                if (cc->images[k].id == b->image_ids[i]) { ref = cc->images[k].captions[0]; break; }
            if (seen < n) printf("    %-58s | %s\n", text, ref);
            texts[seen] = xstrdup(text);
            refs[seen] = ref;          // owned by the dataset, which lives until loader_close
        }
        free(tokens);
        free(len);
        if (!score && seen >= n) break;
    }
    double named = -1;
    if (score) {
        ShapeScore s = shapes_score(refs, (const char *const *)texts, seen, 0);
        ShapeScore c = shapes_score(refs, (const char *const *)texts, seen, 1);
        if (s.objects) {
            printf("  on %ld val images: %.1f%% of the %ld objects are named with their colour and shape\n"
                   "  (their colour is named for %.1f%%, their shape for %.1f%%);\n"
                   "  %.1f%% of the %ld colour+shape phrases generated name an object in the picture\n"
                   "  chance (each image given the caption of the next): %.1f%% named, colour %.1f%%, "
                   "shape %.1f%%\n",
                   seen, percent(s.named, s.objects), s.objects, percent(s.colours, s.objects),
                   percent(s.shapes, s.objects), percent(s.correct, s.phrases), s.phrases,
                   percent(c.named, c.objects), percent(c.colours, c.objects), percent(c.shapes, c.objects));
            named = (double)s.named / s.objects;
        }
    }
    for (long i = 0; i < seen; i++) free(texts[i]);
    free(texts);
    free(refs);
    loader_close(L);
    return named;
}

// Validate: the val loss of each direction, a few sample captions, metrics, the best
// checkpoint. Returns 0, or -1 on an error.
static int validate(Run *r, char *err, size_t errlen) {
    EvalLoss v;
    double t0 = now_seconds();
    if (eval_loss(&r->m, "val", r->opt->val_images, r->opt->workers, &v, err, errlen)) return -1;
    if (r->tty) fprintf(stderr, "\r\033[K");
    printf("[val] iteration %ld: loss %.4f (forward %.4f, backward %.4f) on %ld images, %.1fs\n",
           r->iteration, v.total, v.forward, v.backward, v.images, now_seconds() - t0);
    metrics_line(r, "{\"iteration\": %ld, \"split\": \"val\", \"loss\": %.6f, \"forward\": %.6f, "
                    "\"backward\": %.6f, \"images\": %ld}",
                 r->iteration, v.total, v.forward, v.backward, v.images);
    int n = r->opt->samples;
    if (n > 0 && (r->m.task == TASK_BICAPTIONING || r->m.task == TASK_CAPTIONING)) {
        printf("  greedy captions of val images  |  first reference caption\n");
        caption_report(&r->m, n, n, 0, r->opt->workers);
    }
    if (v.total < r->best_val) {
        r->best_val = v.total;
        r->best_iteration = r->iteration;
        char path[1200];
        checkpoint_path(r, -1, path, sizeof path);
        if (save_checkpoint(r, path, err, errlen)) return -1;
    }
    fflush(stdout);
    return 0;
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

// The periodic checkpoints already in the run directory (a resumed run keeps rotating
// them), oldest first; later ones than the resumed iteration are left alone.
static void find_checkpoints(Run *r) {
    DIR *d = opendir(r->dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long it;
        char tail[8];
        if (sscanf(e->d_name, "checkpoint_%ld.%7s", &it, tail) == 2 && !strcmp(tail, "ckpt") &&
            it >= 0 && it <= r->iteration)
            r->kept[r->nkept++] = it;
    }
    closedir(d);
    qsort(r->kept, r->nkept, sizeof *r->kept, cmp_long);
}

// On resume, drop metrics lines of iterations after the checkpoint (they are redone).
static void metrics_truncate(const char *path, long iteration) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    AtomicFile af;
    if (atomic_open(&af, path)) { fclose(f); return; }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        const char *p = strstr(line, "\"iteration\": ");
        if (p && atol(p + 13) > iteration) continue;
        fputs(line, af.f);
    }
    free(line);
    fclose(f);
    atomic_commit(&af);
}

// Two configs as config_dump YAML, compared line by line: "KEY: checkpoint has X,
// this run Y" for the first differing key (its sections followed by indentation),
// or NULL when they are the same.
static char *config_difference(const Config *a, const Config *b) {
    char *ta = NULL, *tb = NULL;
    size_t la = 0, lb = 0;
    FILE *fa = open_memstream(&ta, &la), *fb = open_memstream(&tb, &lb);
    config_dump(a, fa);
    config_dump(b, fb);
    fclose(fa);
    fclose(fb);
    char section[8][64] = {{0}}, key[600] = "";
    char *diff = NULL, *sa = ta, *sb = tb;
    while (*sa || *sb) {
        size_t na = strcspn(sa, "\n"), nb = strcspn(sb, "\n");
        size_t ind = strspn(sa, " ");
        const char *colon = memchr(sa, ':', na);
        if (colon && sa[ind] != '-' && sa[ind] != '#' && ind / 2 < 8) {   // "NAME:" or "NAME: value"
            int depth = (int)(ind / 2);
            snprintf(section[depth], sizeof section[depth], "%.*s", (int)(colon - sa - ind), sa + ind);
            key[0] = 0;
            for (int d = 0; d <= depth; d++)
                snprintf(key + strlen(key), sizeof key - strlen(key), "%s%s", d ? "." : "", section[d]);
        }
        if (na != nb || memcmp(sa, sb, na)) {
            size_t len = na + nb + strlen(key) + 64;
            diff = xmalloc(len);
            snprintf(diff, len, "%s: the checkpoint has '%.*s', this run '%.*s'", key,
                     (int)(na - strspn(sa, " ")), sa + strspn(sa, " "), (int)(nb - strspn(sb, " ")),
                     sb + strspn(sb, " "));
            break;
        }
        sa += na + (sa[na] != 0);
        sb += nb + (sb[nb] != 0);
    }
    free(ta);
    free(tb);
    return diff;
}

#define DEFAULT_CONFIG "configs/small/bicaptioning_R_50W8_L1_H128.yaml"

// The built-in default's data: the shapes dataset and its vocabulary, made if missing.
static int ensure_default_data(const Config *c, char *err, size_t errlen) {
    char path[CFG_STR + 64];
    snprintf(path, sizeof path, "%s/annotations/captions_train2017.json", c->DATA.ROOT);
    if (access(path, R_OK) != 0) {
        printf("virtex: no dataset in %s: drawing the synthetic shapes dataset there\n", c->DATA.ROOT);
        SynthOptions so;
        synth_default_options(&so);
        so.out = c->DATA.ROOT;
        so.size = c->DATA.IMAGE_CROP_SIZE;
        if (synth_dataset(&so, err, errlen)) return -1;
    }
    if (access(c->DATA.TOKENIZER_MODEL, R_OK) != 0) {
        printf("virtex: no vocabulary %s: training one (%d pieces) on the train captions\n",
               c->DATA.TOKENIZER_MODEL, c->DATA.VOCAB_SIZE);
        char **caps;
        long n;
        if (coco_read_captions(path, &caps, &n, err, errlen)) return -1;
        VocabOptions vo = {.vocab_size = c->DATA.VOCAB_SIZE};
        size_t len;
        unsigned char *model = vocab_train((const char *const *)caps, n, &vo, &len, err, errlen);
        free(caps);
        if (!model) return -1;
        char prefix[CFG_STR];
        snprintf(prefix, sizeof prefix, "%s", c->DATA.TOKENIZER_MODEL);
        size_t k = strlen(prefix);
        if (k > 6 && !strcmp(prefix + k - 6, ".model")) prefix[k - 6] = 0;
        int rc = vocab_write(prefix, model, len, err, errlen);
        free(model);
        if (rc) return -1;
    }
    return 0;
}

static int mkdir_p(const char *dir) {
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return -1;
            *p = '/';
        }
    return mkdir(buf, 0777) && errno != EEXIST ? -1 : 0;
}

// Config, model, optimiser and run directory of a new or resumed run.
static int run_setup(Run *r, char *err, size_t errlen) {
    const TrainOptions *o = r->opt;
    TensorFile ck = {0};
    int have_ck = 0;
    if (o->resume) {
        if (tensorfile_read(&ck, o->resume, err, errlen)) return -1;
        have_ck = 1;
        if (!tensorfile_find(&ck, "trainer.iteration")) {
            seterr(err, errlen, "%s: not a training checkpoint (no trainer.iteration); to start "
                   "from its weights, evaluate or import it instead", o->resume);
            goto fail;
        }
    }
    // The config: the given file (or the default), or the checkpoint's own; overrides on top.
    const char *cfg_path = o->config ? o->config : (o->resume ? NULL : DEFAULT_CONFIG);
    if (cfg_path) {
        if (config_load(&r->cfg, cfg_path, o->noverrides, o->overrides, err, errlen)) goto fail;
    } else if (checkpoint_config(&r->cfg, &ck, o->resume, o->noverrides, o->overrides, err, errlen)) {
        goto fail;
    }
    if (have_ck && cfg_path) {   // a checkpoint from another config is refused
        Config saved;
        char msg[1024];
        if (!checkpoint_config(&saved, &ck, o->resume, 0, NULL, msg, sizeof msg)) {
            char *d = config_difference(&saved, &r->cfg);
            if (d) {
                seterr(err, errlen, "%s was trained with another config: %s", o->resume, d);
                free(d);
                goto fail;
            }
        }
    }
    if (schedule_check(&r->cfg, err, errlen)) goto fail;
    if (!o->config && !o->resume && ensure_default_data(&r->cfg, err, errlen)) goto fail;
    // The run directory.
    if (o->out) snprintf(r->dir, sizeof r->dir, "%s", o->out);
    else if (o->resume) {
        snprintf(r->dir, sizeof r->dir, "%s", o->resume);
        char *slash = strrchr(r->dir, '/');
        if (slash) *slash = 0; else strcpy(r->dir, ".");
    } else {
        const char *base = strrchr(cfg_path, '/');
        base = base ? base + 1 : cfg_path;
        snprintf(r->dir, sizeof r->dir, "runs/%.*s", (int)strcspn(base, "."), base);
    }
    snprintf(r->metrics_path, sizeof r->metrics_path, "%s/metrics.jsonl", r->dir);
    if (!o->resume && access(r->metrics_path, F_OK) == 0) {
        seterr(err, errlen, "%s already holds a run (metrics.jsonl): continue it with --resume "
               "%s/checkpoint_N.ckpt, or give another --out", r->dir, r->dir);
        goto fail;
    }
    if (mkdir_p(r->dir)) {
        seterr(err, errlen, "%s: cannot create the run directory: %s", r->dir, strerror(errno));
        goto fail;
    }
    // Model and optimiser.
    if (model_build(&r->m, &r->cfg, err, errlen)) goto fail;
    if (optimizer_init(&r->opt_state, &r->m, err, errlen)) goto fail_model;
    r->best_val = INFINITY;
    r->best_iteration = -1;
    if (have_ck) {
        char msg[1536];
        if (checkpoint_load_state(&r->m, &ck, o->resume, err, errlen)) goto fail_opt;
        if (optimizer_load(&r->opt_state, &ck, msg, sizeof msg)) {
            seterr(err, errlen, "%s: %s", o->resume, msg);
            goto fail_opt;
        }
        NamedTensor *it = tensorfile_find(&ck, "trainer.iteration");
        NamedTensor *bv = tensorfile_find(&ck, "trainer.best_val_loss");
        NamedTensor *bi = tensorfile_find(&ck, "trainer.best_iteration");
        if (it->dtype != DT_I64 || it->numel != 1 || !bv || bv->dtype != DT_F32 || bv->numel != 1 ||
            !bi || bi->dtype != DT_I64 || bi->numel != 1) {
            seterr(err, errlen, "%s: trainer.* entries have the wrong type or shape", o->resume);
            goto fail_opt;
        }
        r->iteration = (long)*(int64_t *)it->data;
        r->best_val = *(float *)bv->data;
        r->best_iteration = *(int64_t *)bi->data;
        if (r->iteration < 0 || r->iteration > r->cfg.OPTIM.NUM_ITERATIONS) {
            seterr(err, errlen, "%s: trainer.iteration %ld is outside 0..OPTIM.NUM_ITERATIONS (%d)",
                   o->resume, r->iteration, r->cfg.OPTIM.NUM_ITERATIONS);
            goto fail_opt;
        }
        metrics_truncate(r->metrics_path, r->iteration);
        tensorfile_free(&ck);
    }
    r->kept = xcalloc(r->cfg.OPTIM.NUM_ITERATIONS + 2, sizeof(long));
    find_checkpoints(r);
    r->metrics = fopen(r->metrics_path, "a");
    if (!r->metrics) {
        seterr(err, errlen, "%s: %s", r->metrics_path, strerror(errno));
        goto fail_opt;
    }
    return 0;
fail_opt:
    optimizer_free(&r->opt_state);
fail_model:
    model_free(&r->m);
fail:
    if (have_ck) tensorfile_free(&ck);
    return -1;
}

// The live progress line (a terminal) or a log line every log_every iterations.
static void progress(Run *r, long it, long total, double lf, double lb, double lr_cnn,
                     double lr, double ips, double eta) {
    char e[32];
    format_duration(eta, e, sizeof e);
    char line[256];
    snprintf(line, sizeof line, "it %ld/%ld  loss %.3f (fwd %.3f bwd %.3f)  lr %.3g/%.3g  "
             "%.0f img/s  ETA %s  mem %ld MiB", it, total, lf + lb, lf, lb, lr_cnn, lr, ips, e,
             rss_mib());
    if (r->tty) fprintf(stderr, "\r\033[K%s", line);
    else printf("%s\n", line);
}

int train_run(const TrainOptions *o) {
    Run run = {.opt = o}, *r = &run;
    char err[2048];
    setvbuf(stdout, NULL, _IOLBF, 0);   // progress and errors interleave in order in a log
    if (o->device == DEV_CUDA) {
        fprintf(stderr, "virtex train: %s\n", cuda_backend
                ? "the CUDA backend has no convolution, attention or layer-norm kernels yet "
                  "(kernels.cu); train with --device cpu"
                : "this virtex was built without CUDA (nvcc was not found); train with --device cpu");
        return 1;
    }
    if (run_setup(r, err, sizeof err)) { fprintf(stderr, "virtex train: %s\n", err); return 1; }
    const Config *c = &r->cfg;
    long total = c->OPTIM.NUM_ITERATIONS;
    long every = o->checkpoint_every > 0 ? o->checkpoint_every
               : total / 10 < 2000 ? (total / 10 > 0 ? total / 10 : 1) : 2000;
    long log_every = o->log_every > 0 ? o->log_every : 20;
    r->tty = !o->quiet && isatty(2);
    LoaderOptions lo = {.split = "train", .train = 1, .workers = o->workers, .start = r->iteration};
    Loader *L = loader_open(c, &lo, err, sizeof err);
    if (!L) {
        fprintf(stderr, "virtex train: %s\n", err);
        fclose(r->metrics);
        optimizer_free(&r->opt_state);
        model_free(&r->m);
        free(r->kept);
        return 1;
    }
    printf("virtex train: %s, %s + %s, %.1fM parameters; %ld iterations of batch %d; run directory %s%s\n",
           c->MODEL.NAME, c->MODEL.VISUAL.NAME, c->MODEL.TEXTUAL.NAME, r->m.nparams / 1e6, total,
           c->OPTIM.BATCH_SIZE, r->dir, r->iteration ? " (resumed)" : "");
    if (r->iteration) printf("resuming at iteration %ld\n", r->iteration);
    fflush(stdout);
    struct sigaction sa = {0}, old_int, old_term;
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;    // a second Ctrl-C stops at once
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    interrupted = 0;

    Graph g;
    graph_init(&g, DEV_CPU, 0);
    int rc = 0, began = 0;
    double t_start = now_seconds(), t_log = t_start, sum_f = 0, sum_b = 0;
    long n_log = 0, it0 = r->iteration;
    while (r->iteration < total) {
        if (interrupted || (o->stop_after && r->iteration - it0 >= o->stop_after)) break;
        long it = r->iteration + 1;
        const Batch *b = loader_next(L);
        graph_reset(&g);
        g.training = 1;
        g.grad_enabled = 1;
        g.dropout_seed = (uint64_t)c->RANDOM_SEED * 0x9E3779B97F4A7C15ull + (uint64_t)it * 1000003u;
        model_zero_grad(&r->m);
        Losses l = model_loss(&g, &r->m, b);
        if (!isfinite(l.forward) || !isfinite(l.backward)) {
            if (r->tty) fprintf(stderr, "\n");
            fprintf(stderr, "virtex train: iteration %ld: the loss is not finite (forward %g, backward %g); "
                    "stopping. %s%s\n", it, l.forward, l.backward,
                    r->last_ckpt[0] ? "The last good checkpoint is " : "No checkpoint was written yet.",
                    r->last_ckpt);
            rc = 1;
            break;
        }
        graph_backward(&g, l.total);
        clip_grad_norm(&r->m, c->OPTIM.CLIP_GRAD_NORM);
        double mult = lr_multiplier(c, it - 1);
        optimizer_step(&r->opt_state, mult);
        r->iteration = it;
        began = 1;
        sum_f += l.forward;
        sum_b += l.backward;
        n_log++;
        double now = now_seconds();
        if (it % log_every == 0 || it == total || (r->tty && now - t_log > 0.5)) {
            double ips = (double)(it - it0) * c->OPTIM.BATCH_SIZE / (now - t_start);
            double eta = (now - t_start) / (it - it0) * (total - it);
            progress(r, it, total, sum_f / n_log, sum_b / n_log, c->OPTIM.CNN_LR * mult,
                     c->OPTIM.LR * mult, ips, eta);
            if (it % log_every == 0 || it == total) {
                metrics_line(r, "{\"iteration\": %ld, \"split\": \"train\", \"loss\": %.6f, "
                                "\"forward\": %.6f, \"backward\": %.6f, \"lr_cnn\": %.6g, \"lr\": %.6g, "
                                "\"images_per_s\": %.2f}",
                             it, (sum_f + sum_b) / n_log, sum_f / n_log, sum_b / n_log,
                             c->OPTIM.CNN_LR * mult, c->OPTIM.LR * mult, ips);
                sum_f = sum_b = 0;
                n_log = 0;
            }
            t_log = now;
        }
        if (it % every == 0 || it == total) {
            if (r->tty) fprintf(stderr, "\n");
            if (validate(r, err, sizeof err) || save_periodic(r, err, sizeof err)) {
                fprintf(stderr, "virtex train: %s\n", err);
                rc = 1;
                break;
            }
            printf("[checkpoint] %s\n", r->last_ckpt);
            fflush(stdout);
        }
    }
    if (r->tty && began) fprintf(stderr, "\n");
    if (!rc && r->iteration < total) {   // interrupted or stop_after: keep what was done
        char path[1200];
        checkpoint_path(r, r->iteration, path, sizeof path);
        if (save_periodic(r, err, sizeof err)) {
            fprintf(stderr, "virtex train: %s\n", err);
            rc = 1;
        } else {
            printf("%s at iteration %ld: saved %s\ncontinue with: virtex train --resume %s\n",
                   interrupted ? "interrupted" : "stopped", r->iteration, path, path);
            rc = interrupted ? 130 : 0;
        }
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    LoaderStats st = loader_stats(L);
    loader_close(L);
    graph_free(&g);
    double secs = now_seconds() - t_start;
    if (r->iteration > it0)
        printf("trained iterations %ld..%ld in %.0fs (%.1f img/s); data wait %.1f%%; "
               "%ld unreadable images replaced\n", it0 + 1, r->iteration, secs,
               (r->iteration - it0) * (double)c->OPTIM.BATCH_SIZE / secs,
               100.0 * st.wait_seconds / secs, st.bad);
    if (!rc && r->iteration == total && r->best_iteration >= 0)
        printf("best validation loss %.4f at iteration %ld (%s/checkpoint_best.ckpt)\n", r->best_val,
               (long)r->best_iteration, r->dir);
    fclose(r->metrics);
    if (plot_run(r->dir, err, sizeof err)) fprintf(stderr, "virtex train: %s\n", err);
    else printf("curves: %s/curves.svg\n", r->dir);
    char marker[CFG_STR + 16];   // a shapes dataset: measure what the captions name
    snprintf(marker, sizeof marker, "%s/synth.txt", c->DATA.ROOT);
    if (!rc && r->iteration == total && o->samples > 0 && access(marker, R_OK) == 0 &&
        (r->m.task == TASK_BICAPTIONING || r->m.task == TASK_CAPTIONING)) {
        printf("\nheld-out images: greedy caption  |  a reference caption\n");
        caption_report(&r->m, 12, o->val_images, 1, o->workers);
    }
    optimizer_free(&r->opt_state);
    model_free(&r->m);
    free(r->kept);
    return rc;
}

// ----------------------------------------------------------------------------
// 6. plots: RUN_DIR/curves.svg from RUN_DIR/metrics.jsonl

typedef struct Series { double *x, *y; long n, cap; } Series;

static void series_add(Series *s, double x, double y) {
    if (!isfinite(y)) return;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->x = realloc(s->x, s->cap * sizeof *s->x);
        s->y = realloc(s->y, s->cap * sizeof *s->y);
        if (!s->x || !s->y) fatal("out of memory");
    }
    s->x[s->n] = x;
    s->y[s->n++] = y;
}

// A "nice" tick step (1, 2 or 5 x 10^k) for about 5 ticks over span.
static double nice_step(double span) {
    double raw = span / 5, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

// One panel at (x0, y0) of w x h: axes, ticks, the series as polylines.
static void svg_panel(FILE *f, int x0, int y0, int w, int h, const char *title, const char *ylabel,
                      Series *s, const char *const *names, const char *const *colors, int ns,
                      double xmax) {
    double ymin = INFINITY, ymax = -INFINITY;
    for (int k = 0; k < ns; k++)
        for (long i = 0; i < s[k].n; i++) {
            ymin = fmin(ymin, s[k].y[i]);
            ymax = fmax(ymax, s[k].y[i]);
        }
    if (!isfinite(ymin)) { ymin = 0; ymax = 1; }
    if (ymin > 0 && ymin < 0.5 * ymax) ymin = 0;
    if (ymax - ymin < 1e-12) ymax = ymin + 1;
    double ys = nice_step(ymax - ymin), xs = nice_step(xmax > 0 ? xmax : 1);
    ymin = floor(ymin / ys) * ys;
    ymax = ceil(ymax / ys) * ys;
    int L = 70, R = 20, T = 40, B = 50, pw = w - L - R, ph = h - T - B;
#define PX(v) (x0 + L + (v) / (xmax > 0 ? xmax : 1) * pw)
#define PY(v) (y0 + T + ph - ((v) - ymin) / (ymax - ymin) * ph)
    fprintf(f, "<text x='%d' y='%d' font-size='16' font-weight='bold'>%s</text>\n", x0 + L, y0 + 24, title);
    fprintf(f, "<rect x='%d' y='%d' width='%d' height='%d' fill='none' stroke='#444'/>\n", x0 + L, y0 + T, pw, ph);
    for (double v = ymin; v <= ymax + ys / 2; v += ys) {
        fprintf(f, "<line x1='%d' x2='%d' y1='%.1f' y2='%.1f' stroke='#ddd'/>", x0 + L, x0 + L + pw, PY(v), PY(v));
        fprintf(f, "<text x='%d' y='%.1f' font-size='12' text-anchor='end'>%g</text>\n", x0 + L - 6, PY(v) + 4, v);
    }
    for (double v = 0; v <= xmax + xs / 2; v += xs)
        fprintf(f, "<text x='%.1f' y='%d' font-size='12' text-anchor='middle'>%g</text>\n", PX(v), y0 + T + ph + 18, v);
    fprintf(f, "<text x='%d' y='%d' font-size='13' text-anchor='middle'>iteration</text>\n", x0 + L + pw / 2, y0 + h - 10);
    fprintf(f, "<text x='%d' y='%d' font-size='13' text-anchor='middle' transform='rotate(-90 %d %d)'>%s</text>\n",
            x0 + 18, y0 + T + ph / 2, x0 + 18, y0 + T + ph / 2, ylabel);
    for (int k = 0; k < ns; k++) {
        fprintf(f, "<polyline fill='none' stroke='%s' stroke-width='%s' points='", colors[k], k ? "2" : "1.5");
        for (long i = 0; i < s[k].n; i++) fprintf(f, "%.1f,%.1f ", PX(s[k].x[i]), PY(s[k].y[i]));
        fprintf(f, "'/>\n");
        if (s[k].n < 40)
            for (long i = 0; i < s[k].n; i++)
                fprintf(f, "<circle cx='%.1f' cy='%.1f' r='3' fill='%s'/>", PX(s[k].x[i]), PY(s[k].y[i]), colors[k]);
        fprintf(f, "<text x='%d' y='%d' font-size='12' fill='%s' text-anchor='end'>%s</text>\n",
                x0 + L + pw - 8, y0 + T + 18 + 16 * k, colors[k], names[k]);
    }
#undef PX
#undef PY
}

int plot_run(const char *run_dir, char *err, size_t errlen) {
    char path[1200], out[1200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    snprintf(out, sizeof out, "%s/curves.svg", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) { seterr(err, errlen, "%s: %s", path, strerror(errno)); return -1; }
    Series s[4] = {{0}};   // train loss, val loss, lr_cnn / peak, lr / peak
    double xmax = 0, peak_cnn = 0, peak = 0;
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int rc = 0;
    while (getline(&line, &cap, f) > 0) {
        lineno++;
        if (strspn(line, " \t\r\n") == strlen(line)) continue;
        Json *doc;
        char origin[1300];
        snprintf(origin, sizeof origin, "%s (line %ld)", path, lineno);
        if (json_parse(&doc, line, strlen(line), origin, err, errlen)) { rc = -1; break; }
        const JsonValue *v = json_root(doc);
        double it = json_number(json_get(v, "iteration"));
        const char *split = json_string(json_get(v, "split"));
        if (!isfinite(it) || !split) {
            seterr(err, errlen, "%s: line %ld: expected \"iteration\" and \"split\"", path, lineno);
            json_free(doc);
            rc = -1;
            break;
        }
        xmax = fmax(xmax, it);
        if (!strcmp(split, "train")) {
            series_add(&s[0], it, json_number(json_get(v, "loss")));
            double a = json_number(json_get(v, "lr_cnn")), b = json_number(json_get(v, "lr"));
            series_add(&s[2], it, a);
            series_add(&s[3], it, b);
            peak_cnn = fmax(peak_cnn, a);
            peak = fmax(peak, b);
        } else if (!strcmp(split, "val")) {
            series_add(&s[1], it, json_number(json_get(v, "loss")));
        }
        json_free(doc);
    }
    free(line);
    fclose(f);
    if (!rc) {
        for (long i = 0; i < s[2].n; i++) s[2].y[i] /= peak_cnn > 0 ? peak_cnn : 1;
        for (long i = 0; i < s[3].n; i++) s[3].y[i] /= peak > 0 ? peak : 1;
        AtomicFile af;
        if (atomic_open(&af, out)) { seterr(err, errlen, "%s: %s", out, strerror(errno)); rc = -1; }
        else {
            FILE *o = af.f;
            fprintf(o, "<svg xmlns='http://www.w3.org/2000/svg' width='1200' height='400' "
                       "font-family='sans-serif'>\n<rect width='1200' height='400' fill='white'/>\n");
            const char *ln[] = {"train (mean of each logging interval)", "validation"};
            const char *lc[] = {"#1f77b4", "#d62728"};
            svg_panel(o, 0, 0, 700, 400, "loss (forward + backward)", "cross-entropy per token", s, ln, lc, 2, xmax);
            char n0[64], n1[64];
            snprintf(n0, sizeof n0, "visual.cnn (peak %g)", peak_cnn);
            snprintf(n1, sizeof n1, "textual (peak %g)", peak);
            const char *rn[] = {n0, n1}, *rcol[] = {"#2ca02c", "#9467bd"};
            svg_panel(o, 700, 0, 500, 400, "learning rate", "fraction of the peak", s + 2, rn, rcol, 2, xmax);
            fprintf(o, "</svg>\n");
            if (atomic_commit(&af)) { seterr(err, errlen, "%s: cannot write: %s", out, strerror(errno)); rc = -1; }
        }
    }
    for (int k = 0; k < 4; k++) { free(s[k].x); free(s[k].y); }
    return rc;
}
