// model.c — VirTex: a torchvision ResNet and transformer decoder heads, built from a
// config, initialised as the original, and run forward through the ops of tape.c.
//
// Reading order: model_build (what the parameters are and what they are called),
// model_init_weights, then model_loss -> visual_forward / textual_forward.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include "model.h"

// ----------------------------------------------------------------------------
// parameter registration
//
// The builder runs twice: the first pass only counts parameters, buffers and
// state_dict entries; then one buffer of each kind is allocated, and the second pass
// points every tensor into it. So all parameters live in one contiguous array (and
// their gradients in another), in the PyTorch state_dict order.

typedef struct Builder {
    Model *m;
    int counting;                        // first pass: sizes only
    Tensor scratch;                      // what the counting pass hands out
} Builder;

static char *fmt_name(const char *fmt, va_list ap) {
    char buf[256];
    vsnprintf(buf, sizeof buf, fmt, ap);
    return xstrdup(buf);
}

static StateEntry *add_entry(Builder *b, DType dt, int ndim, const int *shape, void *data,
                             Tensor *param, int alias, char *name) {
    Model *m = b->m;
    int i = m->nstate++;
    if (b->counting) { free(name); return NULL; }
    StateEntry *e = &m->state[i];
    e->name = name;
    e->dtype = dt;
    e->ndim = ndim;
    e->numel = 1;
    for (int d = 0; d < ndim; d++) { e->shape[d] = shape[d]; e->numel *= shape[d]; }
    e->data = data;
    e->param = param;
    e->alias = alias;
    return e;
}

// A parameter of the given shape, named by a printf format.
static Tensor *param(Builder *b, int ndim, const int *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static Tensor *param(Builder *b, int ndim, const int *shape, const char *fmt, ...) {
    Model *m = b->m;
    va_list ap;
    va_start(ap, fmt);
    char *name = fmt_name(fmt, ap);
    va_end(ap);
    long n = 1;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    long offset = m->nparams;
    m->nparams += n;
    int it = m->ntensors++;
    if (b->counting) { add_entry(b, DT_F32, ndim, shape, NULL, NULL, 0, name); return &b->scratch; }
    Tensor *t = &m->tensors[it];
    t->ndim = ndim;
    memcpy(t->shape, shape, ndim * sizeof(int));
    t->numel = n;
    t->data = m->params + offset;
    t->grad = m->grads + offset;
    t->device = DEV_CPU;
    t->requires_grad = 1;
    t->name = add_entry(b, DT_F32, ndim, shape, t->data, t, 0, name)->name;
    return t;
}

// A second state_dict name for an already registered tensor (shared modules).
static void alias(Builder *b, Tensor *t, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void alias(Builder *b, Tensor *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *name = fmt_name(fmt, ap);
    va_end(ap);
    add_entry(b, DT_F32, t->ndim, t->shape, t->data, t, 1, name);
}

static float *buffer(Builder *b, int n, const char *prefix, const char *what) {
    Model *m = b->m;
    long offset = m->nbuffers;
    m->nbuffers += n;
    float *p = b->counting ? NULL : m->buffers + offset;
    char name[320];
    snprintf(name, sizeof name, "%s.%s", prefix, what);
    add_entry(b, DT_F32, 1, &n, p, NULL, 0, xstrdup(name));
    return p;
}

static void batchnorm(Builder *b, BatchNorm *bn, int C, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void batchnorm(Builder *b, BatchNorm *bn, int C, const char *fmt, ...) {
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    bn->C = C;
    bn->weight = param(b, 1, &C, "%s.weight", prefix);
    bn->bias = param(b, 1, &C, "%s.bias", prefix);
    bn->running_mean = buffer(b, C, prefix, "running_mean");
    bn->running_var = buffer(b, C, prefix, "running_var");
    int ic = b->m->ncounters++;
    bn->num_batches_tracked = b->counting ? NULL : &b->m->counters[ic];
    char name[300];
    snprintf(name, sizeof name, "%s.num_batches_tracked", prefix);
    add_entry(b, DT_I64, 0, NULL, bn->num_batches_tracked, NULL, 0, xstrdup(name));
}

static Tensor *conv(Builder *b, int K, int C, int R, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static Tensor *conv(Builder *b, int K, int C, int R, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    return param(b, 4, (int[]){K, C, R, R}, "%s.weight", name);
}

// ----------------------------------------------------------------------------
// the architecture

// torchvision's ResNet: stem, then layer1..4 of Bottleneck blocks. `width` is the
// stem/layer1 width (64 in torchvision); `inner` scales the 3x3 convs' width
// (2 for wide_resnet50_2).
static void build_resnet(Builder *b, ResNet *r, const int blocks[4], int width, int inner) {
    const char *p = "visual.cnn";
    r->conv1 = conv(b, width, 3, 7, "%s.conv1", p);
    batchnorm(b, &r->bn1, width, "%s.bn1", p);
    int total = blocks[0] + blocks[1] + blocks[2] + blocks[3];
    if (!b->counting) { r->blocks = xcalloc(total, sizeof(Bottleneck)); }
    r->nblocks = total;
    memcpy(r->layer_blocks, blocks, 4 * sizeof(int));
    int inplanes = width, k = 0;
    for (int l = 0; l < 4; l++) {
        int planes = width << l, w = planes * inner, outc = planes * 4;
        for (int i = 0; i < blocks[l]; i++, k++) {
            Bottleneck tmp, *blk = b->counting ? &tmp : &r->blocks[k];
            memset(blk, 0, sizeof *blk);
            blk->stride = (i == 0 && l > 0) ? 2 : 1;
            blk->conv1 = conv(b, w, inplanes, 1, "%s.layer%d.%d.conv1", p, l + 1, i);
            batchnorm(b, &blk->bn1, w, "%s.layer%d.%d.bn1", p, l + 1, i);
            blk->conv2 = conv(b, w, w, 3, "%s.layer%d.%d.conv2", p, l + 1, i);
            batchnorm(b, &blk->bn2, w, "%s.layer%d.%d.bn2", p, l + 1, i);
            blk->conv3 = conv(b, outc, w, 1, "%s.layer%d.%d.conv3", p, l + 1, i);
            batchnorm(b, &blk->bn3, outc, "%s.layer%d.%d.bn3", p, l + 1, i);
            if (i == 0) {
                blk->down_conv = conv(b, outc, inplanes, 1, "%s.layer%d.%d.downsample.0", p, l + 1, i);
                batchnorm(b, &blk->down_bn, outc, "%s.layer%d.%d.downsample.1", p, l + 1, i);
            }
            inplanes = outc;
        }
    }
    r->out_channels = inplanes;
}

static void build_decoder_layer(Builder *b, DecoderLayer *d, int D, int F, const char *p, int i) {
    int D3[2] = {3 * D, D}, DD[2] = {D, D}, FD[2] = {F, D}, DF[2] = {D, F};
    d->self_in_w = param(b, 2, D3, "%s.layers.%d.self_attn.in_proj_weight", p, i);
    d->self_in_b = param(b, 1, D3, "%s.layers.%d.self_attn.in_proj_bias", p, i);
    d->self_out_w = param(b, 2, DD, "%s.layers.%d.self_attn.out_proj.weight", p, i);
    d->self_out_b = param(b, 1, DD, "%s.layers.%d.self_attn.out_proj.bias", p, i);
    d->cross_in_w = param(b, 2, D3, "%s.layers.%d.multihead_attn.in_proj_weight", p, i);
    d->cross_in_b = param(b, 1, D3, "%s.layers.%d.multihead_attn.in_proj_bias", p, i);
    d->cross_out_w = param(b, 2, DD, "%s.layers.%d.multihead_attn.out_proj.weight", p, i);
    d->cross_out_b = param(b, 1, DD, "%s.layers.%d.multihead_attn.out_proj.bias", p, i);
    d->lin1_w = param(b, 2, FD, "%s.layers.%d.linear1.weight", p, i);
    d->lin1_b = param(b, 1, FD, "%s.layers.%d.linear1.bias", p, i);
    d->lin2_w = param(b, 2, DF, "%s.layers.%d.linear2.weight", p, i);
    d->lin2_b = param(b, 1, DF, "%s.layers.%d.linear2.bias", p, i);
    d->norm1_w = param(b, 1, &D, "%s.layers.%d.norm1.weight", p, i);
    d->norm1_b = param(b, 1, &D, "%s.layers.%d.norm1.bias", p, i);
    d->norm2_w = param(b, 1, &D, "%s.layers.%d.norm2.weight", p, i);
    d->norm2_b = param(b, 1, &D, "%s.layers.%d.norm2.bias", p, i);
    d->norm3_w = param(b, 1, &D, "%s.layers.%d.norm3.weight", p, i);
    d->norm3_b = param(b, 1, &D, "%s.layers.%d.norm3.bias", p, i);
}

// One direction's textual head. The forward one ("textual") owns the projection,
// embedding and output layer; the backward one shares them and adds only its own
// transformer, but the state_dict lists the shared tensors under its name too.
static void build_textual(Builder *b, Model *m, Transformer *t, const char *prefix, int own) {
    int D = m->D, V = m->V;
    int proj[2] = {D, m->cfg.MODEL.VISUAL.FEATURE_SIZE}, VD[2] = {V, D}, PD[2] = {m->max_len, D};
    if (own) {
        m->proj_w = param(b, 2, proj, "%s.visual_projection.weight", prefix);
        m->proj_b = param(b, 1, proj, "%s.visual_projection.bias", prefix);
        m->words = param(b, 2, VD, "%s.embedding.words.weight", prefix);
        m->positions = param(b, 2, PD, "%s.embedding.positions.weight", prefix);
        m->emb_norm_w = param(b, 1, &D, "%s.embedding.layer_norm.weight", prefix);
        m->emb_norm_b = param(b, 1, &D, "%s.embedding.layer_norm.bias", prefix);
    } else {
        alias(b, m->proj_w, "%s.visual_projection.weight", prefix);
        alias(b, m->proj_b, "%s.visual_projection.bias", prefix);
        alias(b, m->words, "%s.embedding.words.weight", prefix);
        alias(b, m->positions, "%s.embedding.positions.weight", prefix);
        alias(b, m->emb_norm_w, "%s.embedding.layer_norm.weight", prefix);
        alias(b, m->emb_norm_b, "%s.embedding.layer_norm.bias", prefix);
    }
    char tp[128];
    snprintf(tp, sizeof tp, "%s.transformer", prefix);
    if (!b->counting) t->layers = xcalloc(m->L, sizeof(DecoderLayer));
    for (int i = 0; i < m->L; i++) {
        DecoderLayer tmp, *d = b->counting ? &tmp : &t->layers[i];
        build_decoder_layer(b, d, D, m->F, tp, i);
    }
    if (m->prenorm) {
        t->norm_w = param(b, 1, &D, "%s.norm.weight", tp);
        t->norm_b = param(b, 1, &D, "%s.norm.bias", tp);
    }
    alias(b, m->words, "%s.output.weight", prefix);
    if (own) m->out_b = param(b, 1, &V, "%s.output.bias", prefix);
    else alias(b, m->out_b, "%s.output.bias", prefix);
}

static int is_classification(const Model *m) {
    return m->task == TASK_TOKEN_CLASSIFICATION || m->task == TASK_MULTILABEL_CLASSIFICATION;
}

static void build(Builder *b, Model *m, const int blocks[4], int inner) {
    build_resnet(b, &m->cnn, blocks, m->cfg.MODEL.VISUAL.BASE_WIDTH, inner);
    if (is_classification(m)) {   // LinearTextualHead: pooled features -> vocabulary
        int VC[2] = {m->V, m->cfg.MODEL.VISUAL.FEATURE_SIZE};
        m->cls_w = param(b, 2, VC, "textual.output.weight");
        m->cls_b = param(b, 1, VC, "textual.output.bias");
        return;
    }
    build_textual(b, m, &m->fwd, "textual", 1);
    if (m->task == TASK_BICAPTIONING) build_textual(b, m, &m->bwd, "backward_textual", 0);
}

int model_build(Model *m, const Config *cfg, char *err, size_t errlen) {
    if (model_build_layout(m, cfg, err, errlen)) return -1;
    model_init_weights(m, (uint64_t)cfg->RANDOM_SEED);
    return 0;
}

int model_build_layout(Model *m, const Config *cfg, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const char *name = cfg->MODEL.NAME;
    static const struct { const char *name; Task task; } tasks[] = {
        {"virtex", TASK_BICAPTIONING}, {"bicaptioning", TASK_BICAPTIONING},
        {"captioning", TASK_CAPTIONING}, {"masked_lm", TASK_MASKED_LM},
        {"token_classification", TASK_TOKEN_CLASSIFICATION},
        {"multilabel_classification", TASK_MULTILABEL_CLASSIFICATION},
    };
    int found = 0;
    for (size_t i = 0; i < sizeof tasks / sizeof tasks[0] && !found; i++)
        if (!strcmp(name, tasks[i].name)) { m->task = tasks[i].task; found = 1; }
    if (!found) {
        snprintf(err, errlen, "MODEL.NAME: '%s' is not a pretraining task (expected virtex, "
                 "bicaptioning, captioning, masked_lm, token_classification or "
                 "multilabel_classification)", name);
        return -1;
    }
    int blocks[4], inner = 1;
    const char *vis = cfg->MODEL.VISUAL.NAME;
    if (!strcmp(vis, "torchvision::resnet50")) memcpy(blocks, (int[]){3, 4, 6, 3}, sizeof blocks);
    else if (!strcmp(vis, "torchvision::resnet101")) memcpy(blocks, (int[]){3, 4, 23, 3}, sizeof blocks);
    else if (!strcmp(vis, "torchvision::wide_resnet50_2")) {
        memcpy(blocks, (int[]){3, 4, 6, 3}, sizeof blocks);
        inner = 2;
    } else {
        snprintf(err, errlen, "MODEL.VISUAL.NAME: '%s' is not a supported backbone (expected "
                 "torchvision::resnet50, torchvision::resnet101 or torchvision::wide_resnet50_2)", vis);
        return -1;
    }
    int bw = cfg->MODEL.VISUAL.BASE_WIDTH;
    if (bw < 1 || bw > 1024) {
        snprintf(err, errlen, "MODEL.VISUAL.BASE_WIDTH: %d is out of range (expected 1..1024, 64 for torchvision)", bw);
        return -1;
    }
    if (cfg->MODEL.VISUAL.FEATURE_SIZE != 32 * bw) {
        snprintf(err, errlen, "MODEL.VISUAL.FEATURE_SIZE: %d does not match the backbone, "
                 "whose layer4 has %d channels (32 x BASE_WIDTH %d)", cfg->MODEL.VISUAL.FEATURE_SIZE, 32 * bw, bw);
        return -1;
    }
    if (is_classification(m)) {
        if (strcmp(cfg->MODEL.TEXTUAL.NAME, "none")) {
            snprintf(err, errlen, "MODEL.TEXTUAL.NAME: '%s' for %s (expected \"none\": the "
                     "classification tasks have a linear head)", cfg->MODEL.TEXTUAL.NAME, name);
            return -1;
        }
    } else if (parse_textual_name(cfg->MODEL.TEXTUAL.NAME, &m->prenorm, &m->L, &m->D, &m->NH,
                                  &m->F, err, errlen))
        return -1;
    m->V = cfg->DATA.VOCAB_SIZE;
    m->max_len = cfg->DATA.MAX_CAPTION_LENGTH;
    m->dropout = cfg->MODEL.TEXTUAL.DROPOUT;
    if (m->V < 5 || m->max_len < 2) {
        snprintf(err, errlen, "DATA.VOCAB_SIZE %d / DATA.MAX_CAPTION_LENGTH %d: expected at least 5 / 2",
                 m->V, m->max_len);
        return -1;
    }
    if (cfg->DATA.IMAGE_CROP_SIZE < 32) {
        snprintf(err, errlen, "DATA.IMAGE_CROP_SIZE: %d is too small for a ResNet (expected >= 32)",
                 cfg->DATA.IMAGE_CROP_SIZE);
        return -1;
    }
    // pass 1: count; pass 2: allocate and point
    Builder b = {.m = m, .counting = 1};
    build(&b, m, blocks, inner);
    long np = m->nparams, nb = m->nbuffers;
    int nt = m->ntensors, nc = m->ncounters, ns = m->nstate;
    m->params = xcalloc(np, sizeof(float));
    m->grads = xcalloc(np, sizeof(float));
    m->buffers = xcalloc(nb, sizeof(float));
    m->counters = xcalloc(nc, sizeof(int64_t));
    m->tensors = xcalloc(nt, sizeof(Tensor));
    m->state = xcalloc(ns, sizeof(StateEntry));
    m->nparams = m->nbuffers = 0;
    m->ntensors = m->ncounters = m->nstate = 0;
    b.counting = 0;
    build(&b, m, blocks, inner);
    if (m->cfg.MODEL.VISUAL.FROZEN)
        for (int i = 0; i < m->ntensors; i++)
            if (!strncmp(m->tensors[i].name, "visual.", 7)) m->tensors[i].requires_grad = 0;
    return 0;
}

void model_free(Model *m) {
    for (int i = 0; i < m->nstate; i++) free((char *)m->state[i].name);
    free(m->state);
    free(m->cnn.blocks);
    free(m->fwd.layers);
    free(m->bwd.layers);
    free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m->counters);
    free(m->tensors);
    memset(m, 0, sizeof *m);
}

void model_zero_grad(Model *m) { memset(m->grads, 0, m->nparams * sizeof(float)); }

StateEntry *model_find(Model *m, const char *name) {
    for (int i = 0; i < m->nstate; i++)
        if (!strcmp(m->state[i].name, name)) return &m->state[i];
    return NULL;
}

// Parameters whose (canonical) name starts with any of the '|'-separated prefixes;
// NULL counts all. Shared and tied tensors have one canonical name, so count once.
long model_param_count(const Model *m, const char *prefixes) {
    long n = 0;
    for (int i = 0; i < m->ntensors; i++) {
        const Tensor *t = &m->tensors[i];
        int match = !prefixes;
        for (const char *p = prefixes; p && *p && !match;) {
            size_t len = strcspn(p, "|");
            match = !strncmp(t->name, p, len);
            p += len + (p[len] == '|');
        }
        if (match) n += t->numel;
    }
    return n;
}

// ----------------------------------------------------------------------------
// initialisation, as the original: torchvision's ResNet init with zero_init_residual,
// and the textual head's N(0, 0.02) for linear / attention / embedding weights.

static void fill_normal(Rng *r, Tensor *t, double std) {
    for (long i = 0; i < t->numel; i++) t->data[i] = (float)(std * rng_normal(r));
}
static void fill_uniform(Rng *r, Tensor *t, double bound) {
    for (long i = 0; i < t->numel; i++) t->data[i] = (float)(bound * (2 * rng_uniform(r) - 1));
}
static void fill_const(Tensor *t, float v) {
    for (long i = 0; i < t->numel; i++) t->data[i] = v;
}

static void init_bn(BatchNorm *bn, float weight) {
    fill_const(bn->weight, weight);
    fill_const(bn->bias, 0);
    for (int c = 0; c < bn->C; c++) { bn->running_mean[c] = 0; bn->running_var[c] = 1; }
    *bn->num_batches_tracked = 0;
}

// kaiming_normal_(mode="fan_out", nonlinearity="relu"): std = sqrt(2 / (K*R*S))
static void init_conv(Rng *r, Tensor *w) {
    fill_normal(r, w, sqrt(2.0 / ((double)w->shape[0] * w->shape[2] * w->shape[3])));
}

static void init_layer(Rng *r, DecoderLayer *d, int D, int F) {
    fill_normal(r, d->self_in_w, 0.02);   fill_const(d->self_in_b, 0);
    fill_normal(r, d->self_out_w, 0.02);  fill_const(d->self_out_b, 0);
    fill_normal(r, d->cross_in_w, 0.02);  fill_const(d->cross_in_b, 0);
    fill_normal(r, d->cross_out_w, 0.02); fill_const(d->cross_out_b, 0);
    fill_normal(r, d->lin1_w, 0.02);      fill_uniform(r, d->lin1_b, 1 / sqrt(D));
    fill_normal(r, d->lin2_w, 0.02);      fill_uniform(r, d->lin2_b, 1 / sqrt(F));
    Tensor *norms[6] = {d->norm1_w, d->norm1_b, d->norm2_w, d->norm2_b, d->norm3_w, d->norm3_b};
    for (int i = 0; i < 6; i++) fill_const(norms[i], i % 2 ? 0.0f : 1.0f);
}

static void copy_layer(DecoderLayer *dst, const DecoderLayer *src) {
    const Tensor *const *s = (const Tensor *const *)src;
    Tensor **d = (Tensor **)dst;
    for (size_t i = 0; i < sizeof(DecoderLayer) / sizeof(Tensor *); i++)
        memcpy(d[i]->data, s[i]->data, s[i]->numel * sizeof(float));
}

static void init_resnet(Rng *r, ResNet *c);
static void init_textual(Rng *r, Model *m);

void model_init_weights(Model *m, uint64_t seed) {
    Rng r;
    rng_seed(&r, seed);
    init_resnet(&r, &m->cnn);
    if (is_classification(m)) {   // nn.Linear's default: U(+-1/sqrt(fan_in)) for both
        double bound = 1 / sqrt(m->cfg.MODEL.VISUAL.FEATURE_SIZE);
        fill_uniform(&r, m->cls_w, bound);
        fill_uniform(&r, m->cls_b, bound);
        return;
    }
    init_textual(&r, m);
}

static void init_resnet(Rng *r, ResNet *c) {
    init_conv(r, c->conv1);
    init_bn(&c->bn1, 1);
    for (int i = 0; i < c->nblocks; i++) {
        Bottleneck *b = &c->blocks[i];
        init_conv(r, b->conv1); init_bn(&b->bn1, 1);
        init_conv(r, b->conv2); init_bn(&b->bn2, 1);
        init_conv(r, b->conv3); init_bn(&b->bn3, 0);   // zero_init_residual
        if (b->down_conv) { init_conv(r, b->down_conv); init_bn(&b->down_bn, 1); }
    }
}

static void init_textual(Rng *r, Model *m) {
    fill_normal(r, m->proj_w, 0.02);
    fill_uniform(r, m->proj_b, 1 / sqrt(m->cfg.MODEL.VISUAL.FEATURE_SIZE));
    fill_normal(r, m->words, 0.02);
    memset(m->words->data, 0, m->D * sizeof(float));            // padding row 0
    fill_normal(r, m->positions, 0.02);
    fill_const(m->emb_norm_w, 1);
    fill_const(m->emb_norm_b, 0);
    for (int i = 0; i < m->L; i++) init_layer(r, &m->fwd.layers[i], m->D, m->F);
    if (m->prenorm) { fill_const(m->fwd.norm_w, 1); fill_const(m->fwd.norm_b, 0); }
    fill_uniform(r, m->out_b, 1 / sqrt(m->D));
    // The original makes the backward head with copy.deepcopy(textual): its
    // transformer starts as an exact copy of the forward one.
    if (m->task == TASK_BICAPTIONING) {
        for (int i = 0; i < m->L; i++) copy_layer(&m->bwd.layers[i], &m->fwd.layers[i]);
        if (m->prenorm) { fill_const(m->bwd.norm_w, 1); fill_const(m->bwd.norm_b, 0); }
    }
}

// ----------------------------------------------------------------------------
// forward

// `virtex info` sets g->trace: each module reports its output shape, parameters and
// the FLOPs spent since the previous row.
static void trace(Graph *g, Model *m, const char *module, const char *prefix, Tensor *out) {
    if (!g->trace) return;
    char shape[64] = "(", *p = shape + 1;
    for (int i = 0; i < out->ndim; i++)
        p += snprintf(p, shape + sizeof shape - p, "%d%s", out->shape[i], i + 1 < out->ndim ? "," : ")");
    if (out->ndim == 0) strcpy(shape, "()");
    long np = *prefix ? model_param_count(m, prefix) : 0;
    fprintf(g->trace, "  %-40s %-18s %12ld %10.3f\n", module, shape, np, (g->flops - g->trace_mark) / 1e9);
    g->trace_mark = g->flops;
}

static Tensor *conv_bn(Graph *g, Tensor *x, Tensor *w, BatchNorm *bn, int stride, int relu) {
    int pad = w->shape[2] / 2;
    Tensor *y = op_batchnorm(g, op_conv2d(g, x, w, stride, pad), bn);
    return relu ? op_relu(g, y) : y;
}

static Tensor *bottleneck(Graph *g, Bottleneck *b, Tensor *x) {
    Tensor *y = conv_bn(g, x, b->conv1, &b->bn1, 1, 1);
    y = conv_bn(g, y, b->conv2, &b->bn2, b->stride, 1);
    y = conv_bn(g, y, b->conv3, &b->bn3, 1, 0);
    Tensor *shortcut = b->down_conv ? conv_bn(g, x, b->down_conv, &b->down_bn, b->stride, 0) : x;
    return op_relu(g, op_add(g, y, shortcut));
}

Tensor *visual_forward(Graph *g, Model *m, Tensor *images) {
    ResNet *c = &m->cnn;
    g->trace_mark = g->flops;
    Tensor *x = conv_bn(g, images, c->conv1, &c->bn1, 2, 1);
    x = op_maxpool(g, x, 3, 2, 1);
    trace(g, m, "stem (conv1 bn1 relu maxpool)", "visual.cnn.conv1.|visual.cnn.bn1.", x);
    int k = 0;
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < c->layer_blocks[l]; i++, k++) {
            x = bottleneck(g, &c->blocks[k], x);
            char name[64], prefix[64];
            snprintf(name, sizeof name, "layer%d.%d", l + 1, i);
            snprintf(prefix, sizeof prefix, "visual.cnn.layer%d.%d.", l + 1, i);
            trace(g, m, name, prefix, x);
        }
    return x;
}

Tensor *visual_memory(Graph *g, Model *m, Tensor *visual) {
    int B = visual->shape[0], C = visual->shape[1], HW = visual->shape[2] * visual->shape[3];
    Tensor *grid = op_transpose(g, tensor_view(g, visual, 3, (int[]){B, C, HW}));
    Tensor *mem = op_linear(g, grid, m->proj_w, m->proj_b);
    trace(g, m, "visual_projection", "textual.visual_projection", mem);
    return mem;
}

// nn.MultiheadAttention: project with the q/k/v blocks of in_proj, attend, project out.
static Tensor *mha(Graph *g, Model *m, Tensor *x, Tensor *mem, Tensor *in_w, Tensor *in_b,
                   Tensor *out_w, Tensor *out_b, const int *key_len, int causal) {
    int D = m->D;
    Tensor *q = op_linear(g, x, param_rows(g, in_w, 0, D), param_rows(g, in_b, 0, D));
    Tensor *k = op_linear(g, mem, param_rows(g, in_w, D, D), param_rows(g, in_b, D, D));
    Tensor *v = op_linear(g, mem, param_rows(g, in_w, 2 * D, D), param_rows(g, in_b, 2 * D, D));
    Tensor *a = op_attention(g, q, k, v, m->NH, key_len, causal, m->dropout);
    return op_linear(g, a, out_w, out_b);
}

static Tensor *feedforward(Graph *g, Model *m, DecoderLayer *d, Tensor *x) {
    Tensor *h = op_dropout(g, op_gelu(g, op_linear(g, x, d->lin1_w, d->lin1_b)), m->dropout);
    return op_linear(g, h, d->lin2_w, d->lin2_b);
}

// nn.TransformerDecoderLayer, post-norm (norm_first=False) or pre-norm.
static Tensor *decoder_layer(Graph *g, Model *m, DecoderLayer *d, Tensor *x, Tensor *mem,
                             const int *lengths) {
    float p = m->dropout;
    int causal = m->task != TASK_MASKED_LM;   // masked LM sees the whole caption
    if (!m->prenorm) {
        Tensor *sa = mha(g, m, x, x, d->self_in_w, d->self_in_b, d->self_out_w, d->self_out_b, lengths, causal);
        x = op_layernorm(g, op_add(g, x, op_dropout(g, sa, p)), d->norm1_w, d->norm1_b, 1e-5f);
        Tensor *ca = mha(g, m, x, mem, d->cross_in_w, d->cross_in_b, d->cross_out_w, d->cross_out_b, NULL, 0);
        x = op_layernorm(g, op_add(g, x, op_dropout(g, ca, p)), d->norm2_w, d->norm2_b, 1e-5f);
        Tensor *ff = feedforward(g, m, d, x);
        return op_layernorm(g, op_add(g, x, op_dropout(g, ff, p)), d->norm3_w, d->norm3_b, 1e-5f);
    }
    Tensor *h = op_layernorm(g, x, d->norm1_w, d->norm1_b, 1e-5f);
    Tensor *sa = mha(g, m, h, h, d->self_in_w, d->self_in_b, d->self_out_w, d->self_out_b, lengths, causal);
    x = op_add(g, x, op_dropout(g, sa, p));
    h = op_layernorm(g, x, d->norm2_w, d->norm2_b, 1e-5f);
    Tensor *ca = mha(g, m, h, mem, d->cross_in_w, d->cross_in_b, d->cross_out_w, d->cross_out_b, NULL, 0);
    x = op_add(g, x, op_dropout(g, ca, p));
    h = op_layernorm(g, x, d->norm3_w, d->norm3_b, 1e-5f);
    return op_add(g, x, op_dropout(g, feedforward(g, m, d, h), p));
}

Tensor *textual_forward(Graph *g, Model *m, Transformer *dir, Tensor *memory,
                        const int *tokens, const int *lengths, int B, int T) {
    if (T > m->max_len) fatal("captions of %d tokens, the model has %d positions", T, m->max_len);
    const char *prefix = dir == &m->bwd ? "backward_textual" : "textual";
    // WordAndPositionalEmbedding: words + positions, LayerNorm(eps 1e-8), dropout,
    // then padded positions set to exactly zero.
    int *pos = arena_alloc(&g->meta, (size_t)B * T * sizeof(int));
    for (int i = 0; i < B * T; i++) pos[i] = i % T;
    Tensor *x = op_add(g, op_embedding(g, tokens, B, T, m->words, 0),
                       op_embedding(g, pos, B, T, m->positions, -1));
    x = op_layernorm(g, x, m->emb_norm_w, m->emb_norm_b, 1e-8f);
    x = op_rowmask(g, op_dropout(g, x, m->dropout), tokens);
    int shared = dir == &m->bwd;   // the backward head shares embedding and output
    trace(g, m, shared ? "embedding (shared)" : "embedding", shared ? "" : "textual.embedding", x);
    for (int i = 0; i < m->L; i++) {
        x = decoder_layer(g, m, &dir->layers[i], x, memory, lengths);
        // a layer's last attention is its cross-attention (decoding's attention maps)
        if (g->cross_attention) g->cross_attention[i] = g->attention_probs;
        char name[96], pre[96];
        snprintf(name, sizeof name, "%s.transformer.layers.%d", prefix, i);
        snprintf(pre, sizeof pre, "%s.transformer.layers.%d.", prefix, i);
        trace(g, m, name, pre, x);
    }
    if (m->prenorm) x = op_layernorm(g, x, dir->norm_w, dir->norm_b, 1e-5f);
    Tensor *logits = op_linear(g, x, m->words, m->out_b);   // tied to embedding.words
    trace(g, m, shared ? "output (shared)" : "output (weight tied to words)",
          shared ? "" : "textual.output.", logits);
    return logits;
}

// Cross-entropy of logits[:, :-1] against tokens[:, 1:], ignoring padding (0). The
// last position's target is set to padding, which is the same as slicing it off.
static Tensor *caption_loss(Graph *g, Tensor *logits, const int *tokens, int B, int T) {
    int *targets = arena_alloc(&g->meta, (size_t)B * T * sizeof(int));
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) targets[b * T + t] = t + 1 < T ? tokens[b * T + t + 1] : 0;
    return op_cross_entropy(g, logits, targets, 0);
}

// The classification tasks' target: per image, 1/k on each of its k distinct labels
// (caption tokens without the special ones, or COCO categories without background).
static float *label_distribution(Graph *g, Model *m, const Batch *batch) {
    int B = batch->B, V = m->V, n = batch->T;
    const int *labels = batch->tokens;
    int skip[4] = {m->cfg.DATA.UNK_INDEX, m->cfg.DATA.SOS_INDEX, m->cfg.DATA.EOS_INDEX,
                   m->cfg.DATA.MASK_INDEX}, nskip = 4;
    if (m->task == TASK_MULTILABEL_CLASSIFICATION) {
        if (!batch->labels) fatal("multilabel_classification needs the batch's labels");
        labels = batch->labels;
        n = batch->nlabels;
        nskip = 1;   // only the background / padding id 0
    }
    float *target = arena_alloc(&g->meta, (size_t)B * V * sizeof(float));
    memset(target, 0, (size_t)B * V * sizeof(float));
    for (int b = 0; b < B; b++) {
        float *t = target + (size_t)b * V;
        int k = 0;
        for (int i = 0; i < n; i++) {
            int id = labels[b * n + i], special = 0;
            for (int s = 0; s < nskip; s++) special |= id == skip[s];
            if (special || id < 0 || id >= V || t[id] != 0) continue;
            t[id] = 1;
            k++;
        }
        for (int v = 0; v < V && k; v++) t[v] /= k;
    }
    return target;
}

Losses model_loss(Graph *g, Model *m, const Batch *batch) {
    int B = batch->B, T = batch->T, S = m->cfg.DATA.IMAGE_CROP_SIZE;
    Tensor *images = tensor_new(g, 4, (int[]){B, 3, S, S});
    backend_for(g->device)->from_host(images->data, batch->images, images->numel * sizeof(float));
    Tensor *visual = visual_forward(g, m, images);
    Losses L = {.visual = visual};
    if (is_classification(m)) {
        L.logits[0] = op_linear(g, op_avgpool(g, visual), m->cls_w, m->cls_b);
        trace(g, m, "avgpool + output", "textual.output.", L.logits[0]);
        L.total = op_soft_cross_entropy(g, L.logits[0], label_distribution(g, m, batch));
        backend_for(g->device)->to_host(&L.forward, L.total->data, sizeof(float));
        return L;
    }
    Tensor *memory = visual_memory(g, m, visual);
    L.logits[0] = textual_forward(g, m, &m->fwd, memory, batch->tokens, batch->lengths, B, T);
    Tensor *lf;
    if (m->task == TASK_MASKED_LM) {   // loss only where tokens were chosen for masking
        if (!batch->masked_labels) fatal("masked_lm needs the batch's masked_labels");
        lf = op_cross_entropy(g, L.logits[0], batch->masked_labels, m->cfg.DATA.UNK_INDEX);
    } else {
        lf = caption_loss(g, L.logits[0], batch->tokens, B, T);
    }
    backend_for(g->device)->to_host(&L.forward, lf->data, sizeof(float));
    L.total = lf;
    if (m->task == TASK_BICAPTIONING) {
        L.logits[1] = textual_forward(g, m, &m->bwd, memory, batch->noitpac, batch->lengths, B, T);
        Tensor *lb = caption_loss(g, L.logits[1], batch->noitpac, B, T);
        backend_for(g->device)->to_host(&L.backward, lb->data, sizeof(float));
        L.total = op_add(g, lf, lb);
    }
    return L;
}

// ----------------------------------------------------------------------------
// `virtex info`

void model_print_info(Model *m, FILE *f) {
    const Config *c = &m->cfg;
    int S = c->DATA.IMAGE_CROP_SIZE, T = m->max_len;
    fprintf(f, "model: %s   visual: %s (base width %d)   textual: %s   vocab %d\n", c->MODEL.NAME,
            c->MODEL.VISUAL.NAME, c->MODEL.VISUAL.BASE_WIDTH, c->MODEL.TEXTUAL.NAME, m->V);
    fprintf(f, "one image %dx%d, one caption of %d tokens\n\n", S, S, T);
    fprintf(f, "  %-40s %-18s %12s %10s\n", "module", "output shape", "params", "GFLOPs");
    Graph g;
    graph_init(&g, DEV_CPU, 0);
    g.grad_enabled = 0;
    g.training = 0;
    g.trace = f;
    Batch batch = {.B = 1, .T = T};
    batch.images = xcalloc((size_t)3 * S * S, sizeof(float));
    batch.tokens = xcalloc(T, sizeof(int));
    batch.noitpac = xcalloc(T, sizeof(int));
    int len = T;
    batch.lengths = &len;
    for (int t = 0; t < T; t++) batch.tokens[t] = batch.noitpac[t] = 4 + t % (m->V - 4);
    batch.masked_labels = batch.labels = batch.tokens;   // for masked_lm, classification
    batch.nlabels = T;
    Losses L = model_loss(&g, m, &batch);
    (void)L;
    long visual = model_param_count(m, "visual."), total = model_param_count(m, NULL);
    fprintf(f, "\nparameters (each shared or tied tensor counted once):\n");
    fprintf(f, "  visual   %14ld\n  textual  %14ld\n  total    %14ld\n", visual, total - visual, total);
    fprintf(f, "state_dict entries: %d (shared modules listed under each name)\n", m->nstate);
    fprintf(f, "forward FLOPs per image: %.3f G (2 x multiply-adds of convolutions, linear layers "
            "and attention)\n", g.flops / 1e9);
    free(batch.images);
    free(batch.tokens);
    free(batch.noitpac);
    graph_free(&g);
}
