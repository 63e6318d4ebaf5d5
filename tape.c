// tape.c — utilities, the activation arena, and the autograd tape.
//
// One training step builds a Graph: every op_* function below computes its output
// with the kernels of the tensors' device (section 3 of model.h) and, when gradients
// are wanted, appends a Node that remembers what the backward kernel will need.
// graph_backward() walks the nodes in reverse. Nothing here knows about ResNets or
// transformers: model.c composes these ops into VirTex.
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "model.h"

// ----------------------------------------------------------------------------
// utilities

void fatal(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    fprintf(stderr, "virtex: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(1);
}

int seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) fatal("out of memory allocating %zu bytes", bytes);
    return p;
}

void *xcalloc(size_t n, size_t size) {
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) fatal("out of memory allocating %zu x %zu bytes", n, size);
    return p;
}

char *xstrdup(const char *s) {
    size_t n = strlen(s) + 1;
    return memcpy(xmalloc(n), s, n);
}

double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

// ----------------------------------------------------------------------------
// random numbers: xoshiro256** seeded by splitmix64

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rng_seed(Rng *r, uint64_t seed) {
    for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t rng_next(Rng *r) {
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t; s[3] = rotl(s[3], 45);
    return out;
}

double rng_uniform(Rng *r) { return (rng_next(r) >> 11) * 0x1.0p-53; }

double rng_normal(Rng *r) {
    double u1 = rng_uniform(r), u2 = rng_uniform(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

// ----------------------------------------------------------------------------
// the arena: one block, plus overflow blocks that are merged into one at reset

typedef struct ArenaBlock { struct ArenaBlock *next; void *p; } ArenaBlock;

static void *arena_raw_alloc(Arena *a, size_t bytes) {
    if (a->be && a->be->alloc) return a->be->alloc(bytes);
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) fatal("out of memory: arena of %zu bytes", bytes);
    return p;
}

static void arena_raw_free(Arena *a, void *p) {
    if (a->be && a->be->release) a->be->release(p); else free(p);
}

void arena_init(Arena *a, const Backend *be, size_t cap) {
    memset(a, 0, sizeof *a);
    a->be = be;
    a->cap = cap;
    a->base = cap ? arena_raw_alloc(a, cap) : NULL;
}

void *arena_alloc(Arena *a, size_t bytes) {
    bytes = (bytes + 63) & ~(size_t)63;
    if (a->used + bytes <= a->cap) {
        void *p = a->base + a->used;
        a->used += bytes;
        if (a->used + a->overflow > a->peak) a->peak = a->used + a->overflow;
        return p;
    }
    // Out of room this step: take a separate block; reset() grows the main block so
    // that the next step fits in one piece.
    ArenaBlock *b = xmalloc(sizeof *b);
    b->p = arena_raw_alloc(a, bytes);
    b->next = a->extra;
    a->extra = b;
    a->overflow += bytes;
    if (a->used + a->overflow > a->peak) a->peak = a->used + a->overflow;
    return b->p;
}

void arena_reset(Arena *a) {
    if (a->extra) {
        while (a->extra) {
            ArenaBlock *b = a->extra;
            a->extra = b->next;
            arena_raw_free(a, b->p);
            free(b);
        }
        size_t want = a->used + a->overflow;
        want += want / 8;   // headroom: steps vary a little (e.g. caption lengths)
        if (a->base) arena_raw_free(a, a->base);
        a->cap = want;
        a->base = arena_raw_alloc(a, want);
    }
    a->used = 0;
    a->overflow = 0;
}

void arena_free(Arena *a) {
    arena_reset(a);
    if (a->base) arena_raw_free(a, a->base);
    memset(a, 0, sizeof *a);
}

// ----------------------------------------------------------------------------
// backends

static void *host_alloc(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64)) fatal("out of memory: %zu bytes", bytes);
    return p;
}
static void host_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }
static void host_zero(void *p, size_t bytes) { memset(p, 0, bytes); }

const Backend cpu_backend = {
    .name = "cpu",
    .alloc = host_alloc, .release = free,
    .to_host = host_copy, .from_host = host_copy, .zero = host_zero,
    .sgemm = sgemm,
    .conv2d_forward = conv2d_forward, .conv2d_backward = conv2d_backward,
    .batchnorm_forward = batchnorm_forward, .batchnorm_backward = batchnorm_backward,
    .relu_forward = relu_forward, .relu_backward = relu_backward,
    .maxpool_forward = maxpool_forward, .maxpool_backward = maxpool_backward,
    .add_forward = add_forward, .add_backward = add_backward,
    .avgpool_forward = avgpool_forward, .avgpool_backward = avgpool_backward,
    .transpose_forward = transpose_forward, .transpose_backward = transpose_backward,
    .linear_forward = linear_forward, .linear_backward = linear_backward,
    .embedding_forward = embedding_forward, .embedding_backward = embedding_backward,
    .layernorm_forward = layernorm_forward, .layernorm_backward = layernorm_backward,
    .attention_forward = attention_forward, .attention_backward = attention_backward,
    .gelu_forward = gelu_forward, .gelu_backward = gelu_backward,
    .dropout_forward = dropout_forward, .dropout_backward = dropout_backward,
    .rowmask_forward = rowmask_forward, .rowmask_backward = rowmask_backward,
    .cross_entropy_forward = cross_entropy_forward,
    .cross_entropy_backward = cross_entropy_backward,
    .soft_cross_entropy_forward = soft_cross_entropy_forward,
    .soft_cross_entropy_backward = soft_cross_entropy_backward,
};

const Backend *backend_for(Device d) {
    if (d == DEV_CPU) return &cpu_backend;
    if (!cuda_backend) fatal("this build has no CUDA backend (nvcc was not found at build time)");
    return cuda_backend;
}

// The kernel `fn` of the backend of device d; exits naming the op if it is missing.
#define KERNEL(d, fn) (*kernel_or_die(backend_for(d)->fn, backend_for(d)->name, #fn))
static void *kernel_check(void *fn, const char *be, const char *name) {
    if (!fn) fatal("the %s backend has no kernel for %s yet", be, name);
    return fn;
}
#define kernel_or_die(fn, be, name) ((__typeof__(fn))kernel_check((void *)(fn), be, name))

// ----------------------------------------------------------------------------
// graphs and tensors

void graph_init(Graph *g, Device device, size_t arena_bytes) {
    memset(g, 0, sizeof *g);
    g->device = device;
    arena_init(&g->arena, device == DEV_CPU ? NULL : backend_for(device), arena_bytes);
    arena_init(&g->meta, NULL, 1 << 20);
    g->grad_enabled = 1;
    g->training = 1;
}

void graph_reset(Graph *g) {
    g->nnodes = 0;
    arena_reset(&g->arena);
    arena_reset(&g->meta);
}

void graph_free(Graph *g) {
    if (g->scratch) backend_for(g->device)->release(g->scratch);
    arena_free(&g->arena);
    arena_free(&g->meta);
    free(g->nodes);
    memset(g, 0, sizeof *g);
}

static long shape_numel(int ndim, const int *shape) {
    long n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

static Tensor *tensor_header(Graph *g, int ndim, const int *shape) {
    if (ndim < 0 || ndim > MAX_DIMS) fatal("tensor of %d dims (at most %d)", ndim, MAX_DIMS);
    Tensor *t = arena_alloc(&g->meta, sizeof *t);
    memset(t, 0, sizeof *t);
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = shape_numel(ndim, shape);
    t->device = g->device;
    return t;
}

Tensor *tensor_new(Graph *g, int ndim, const int *shape) {
    Tensor *t = tensor_header(g, ndim, shape);
    t->data = arena_alloc(&g->arena, t->numel * sizeof(float));
    return t;
}

Tensor *tensor_zeros(Graph *g, int ndim, const int *shape) {
    Tensor *t = tensor_new(g, ndim, shape);
    backend_for(g->device)->zero(t->data, t->numel * sizeof(float));
    return t;
}

// A view shares data and grad with t; reshapes need no backward of their own as
// long as t's grad exists before the view's consumers run backward, so we make it now.
Tensor *tensor_view(Graph *g, Tensor *t, int ndim, const int *shape) {
    Tensor *v = tensor_header(g, ndim, shape);
    if (v->numel != t->numel) fatal("view of %ld elements as %ld", t->numel, v->numel);
    v->data = t->data;
    v->requires_grad = t->requires_grad;
    if (t->requires_grad && g->grad_enabled) v->grad = tensor_grad(g, t);
    return v;
}

float *tensor_grad(Graph *g, Tensor *t) {
    if (!t->grad) {
        t->grad = arena_alloc(&g->arena, t->numel * sizeof(float));
        backend_for(t->device)->zero(t->grad, t->numel * sizeof(float));
    }
    return t->grad;
}

Tensor *param_rows(Graph *g, Tensor *p, int r0, int n) {
    long row = p->numel / p->shape[0];
    Tensor *v = tensor_header(g, p->ndim, p->shape);
    v->shape[0] = n;
    v->numel = n * row;
    v->data = p->data + r0 * row;
    v->grad = p->grad ? p->grad + r0 * row : NULL;
    v->requires_grad = p->requires_grad;
    v->name = p->name;
    return v;
}

static void *meta_copy(Graph *g, const void *src, size_t bytes) {
    return memcpy(arena_alloc(&g->meta, bytes), src, bytes);
}

// Append a node for `out` if any input needs a gradient; returns NULL otherwise.
static Node *record(Graph *g, const char *op, BackwardFn fn, Tensor *out, Tensor *a,
                    Tensor *b, Tensor *c, Tensor *d) {
    Tensor *in[NODE_MAX_IN] = {a, b, c, d};
    int need = 0;
    for (int i = 0; i < NODE_MAX_IN; i++) need |= in[i] && in[i]->requires_grad;
    if (!g->grad_enabled || !need) return NULL;
    out->requires_grad = 1;
    if (g->nnodes == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->nodes = realloc(g->nodes, g->cap * sizeof(Node));
        if (!g->nodes) fatal("out of memory growing the tape");
    }
    Node *n = &g->nodes[g->nnodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->backward = fn;
    n->out = out;
    for (int i = 0; i < NODE_MAX_IN; i++) n->in[i] = in[i];
    return n;
}

// The gradient buffer of input i of node n, or NULL when it needs none.
static float *in_grad(Graph *g, Node *n, int i) {
    Tensor *t = n->in[i];
    return t && t->requires_grad ? tensor_grad(g, t) : NULL;
}

void graph_backward(Graph *g, Tensor *loss) {
    if (loss->numel != 1) fatal("backward from a tensor of %ld elements (want a scalar)", loss->numel);
    if (!loss->requires_grad) fatal("backward from a loss that does not require grad");
    float one = 1.0f;
    backend_for(loss->device)->from_host(tensor_grad(g, loss), &one, sizeof one);
    for (int i = g->nnodes - 1; i >= 0; i--) {
        Node *n = &g->nodes[i];
        if (n->out->grad) n->backward(g, n);   // nothing flowed here: skip
    }
}

// ----------------------------------------------------------------------------
// the ops: forward now, backward recorded

#define DEV(t) ((t)->device)

// conv2d --------------------------------------------------------------------
// The im2col scratch holds nothing between forward and backward (backward recomputes
// its columns), so one buffer serves every convolution of the step.
static float *conv_scratch(Graph *g, const int *a) {
    size_t need = conv2d_scratch_floats(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
    if (need > g->scratch_floats) {
        const Backend *be = backend_for(g->device);
        if (g->scratch) be->release(g->scratch);
        g->scratch = be->alloc(need * sizeof(float));
        g->scratch_floats = need;
    }
    return g->scratch;
}

static void conv2d_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1];
    int *a = n->iarg;
    KERNEL(DEV(x), conv2d_backward)(in_grad(g, n, 0), in_grad(g, n, 1), n->out->grad,
                                    x->data, w->data, a[0], a[1], a[2], a[3], a[4],
                                    a[5], a[6], a[7], a[8], conv_scratch(g, a));
}

Tensor *op_conv2d(Graph *g, Tensor *x, Tensor *w, int stride, int pad) {
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int K = w->shape[0], R = w->shape[2], S = w->shape[3];
    if (x->ndim != 4 || w->ndim != 4 || w->shape[1] != C)
        fatal("conv2d: input (%d,%d,%d,%d) does not match weight %s (%d,%d,%d,%d)", B, C, H,
              W, w->name ? w->name : "", K, w->shape[1], R, S);
    int P = (H + 2 * pad - R) / stride + 1, Q = (W + 2 * pad - S) / stride + 1;
    Tensor *out = tensor_new(g, 4, (int[]){B, K, P, Q});
    int a[9] = {B, C, H, W, K, R, S, stride, pad};
    g->flops += 2.0 * K * C * R * S * (double)P * Q * B;
    KERNEL(DEV(x), conv2d_forward)(out->data, x->data, w->data, B, C, H, W, K, R, S,
                                   stride, pad, conv_scratch(g, a));
    Node *n = record(g, "conv2d", conv2d_bwd, out, x, w, NULL, NULL);
    if (n) memcpy(n->iarg, a, sizeof a);
    return out;
}

// batchnorm -----------------------------------------------------------------
static void batchnorm_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0], *gamma = n->in[1];
    KERNEL(DEV(x), batchnorm_backward)(in_grad(g, n, 0), in_grad(g, n, 1), in_grad(g, n, 2),
                                       n->out->grad, x->data, n->saved[0], n->saved[1],
                                       gamma->data, n->iarg[0], n->iarg[1], n->iarg[2],
                                       n->iarg[3]);
}

Tensor *op_batchnorm(Graph *g, Tensor *x, BatchNorm *bn) {
    int B = x->shape[0], C = x->shape[1], HW = (int)(x->numel / ((long)B * C));
    if (C != bn->C) fatal("batchnorm: %d channels, the layer %s has %d", C, bn->weight->name, bn->C);
    Tensor *out = tensor_new(g, x->ndim, x->shape);
    float *mean = arena_alloc(&g->arena, C * sizeof(float));
    float *rstd = arena_alloc(&g->arena, C * sizeof(float));
    KERNEL(DEV(x), batchnorm_forward)(out->data, mean, rstd, x->data, bn->weight->data,
                                      bn->bias->data, bn->running_mean, bn->running_var,
                                      B, C, HW, g->training, 0.1f, 1e-5f);
    if (g->training && bn->num_batches_tracked) (*bn->num_batches_tracked)++;
    Node *n = record(g, "batchnorm", batchnorm_bwd, out, x, bn->weight, bn->bias, NULL);
    if (n) {
        n->saved[0] = mean;
        n->saved[1] = rstd;
        n->iarg[0] = B; n->iarg[1] = C; n->iarg[2] = HW; n->iarg[3] = g->training;
    }
    return out;
}

// relu ----------------------------------------------------------------------
static void relu_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), relu_backward)(in_grad(g, n, 0), n->out->grad, n->out->data,
                                       n->out->numel);
}

Tensor *op_relu(Graph *g, Tensor *x) {
    Tensor *out = tensor_new(g, x->ndim, x->shape);
    KERNEL(DEV(x), relu_forward)(out->data, x->data, x->numel);
    record(g, "relu", relu_bwd, out, x, NULL, NULL, NULL);
    return out;
}

// maxpool -------------------------------------------------------------------
static void maxpool_bwd(Graph *g, Node *n) {
    int *a = n->iarg;
    KERNEL(DEV(n->out), maxpool_backward)(in_grad(g, n, 0), n->out->grad, n->saved[0], a[0],
                                          a[1], a[2], a[3], a[4], a[5], a[6]);
}

Tensor *op_maxpool(Graph *g, Tensor *x, int k, int s, int p) {
    int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    int P = (H + 2 * p - k) / s + 1, Q = (W + 2 * p - k) / s + 1;
    Tensor *out = tensor_new(g, 4, (int[]){B, C, P, Q});
    int *argmax = arena_alloc(&g->arena, out->numel * sizeof(int));
    KERNEL(DEV(x), maxpool_forward)(out->data, argmax, x->data, B, C, H, W, k, s, p);
    Node *n = record(g, "maxpool", maxpool_bwd, out, x, NULL, NULL, NULL);
    if (n) {
        int a[7] = {B, C, H, W, k, s, p};
        memcpy(n->iarg, a, sizeof a);
        n->saved[0] = argmax;
    }
    return out;
}

// add -----------------------------------------------------------------------
static void add_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), add_backward)(in_grad(g, n, 0), in_grad(g, n, 1), n->out->grad,
                                      n->out->numel);
}

Tensor *op_add(Graph *g, Tensor *a, Tensor *b) {
    if (a->numel != b->numel) fatal("add: %ld and %ld elements", a->numel, b->numel);
    Tensor *out = tensor_new(g, a->ndim, a->shape);
    KERNEL(DEV(a), add_forward)(out->data, a->data, b->data, a->numel);
    record(g, "add", add_bwd, out, a, b, NULL, NULL);
    return out;
}

// global average pool ---------------------------------------------------------
static void avgpool_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), avgpool_backward)(in_grad(g, n, 0), n->out->grad, n->iarg[0],
                                          n->iarg[1], n->iarg[2]);
}

Tensor *op_avgpool(Graph *g, Tensor *x) {
    int B = x->shape[0], C = x->shape[1], HW = (int)(x->numel / ((long)B * C));
    Tensor *out = tensor_new(g, 2, (int[]){B, C});
    KERNEL(DEV(x), avgpool_forward)(out->data, x->data, B, C, HW);
    Node *n = record(g, "avgpool", avgpool_bwd, out, x, NULL, NULL, NULL);
    if (n) { n->iarg[0] = B; n->iarg[1] = C; n->iarg[2] = HW; }
    return out;
}

// transpose (B,M,N) -> (B,N,M) ------------------------------------------------
static void transpose_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), transpose_backward)(in_grad(g, n, 0), n->out->grad, n->iarg[0],
                                            n->iarg[1], n->iarg[2]);
}

Tensor *op_transpose(Graph *g, Tensor *x) {
    int B = x->shape[0], M = x->shape[1], N = (int)(x->numel / ((long)B * M));
    Tensor *out = tensor_new(g, 3, (int[]){B, N, M});
    KERNEL(DEV(x), transpose_forward)(out->data, x->data, B, M, N);
    Node *n = record(g, "transpose", transpose_bwd, out, x, NULL, NULL, NULL);
    if (n) { n->iarg[0] = B; n->iarg[1] = M; n->iarg[2] = N; }
    return out;
}

// linear ----------------------------------------------------------------------
static void linear_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1];
    KERNEL(DEV(x), linear_backward)(in_grad(g, n, 0), in_grad(g, n, 1), in_grad(g, n, 2),
                                    n->out->grad, x->data, w->data, n->iarg[0], n->iarg[1],
                                    n->iarg[2]);
}

Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b) {
    int IN = w->shape[1], OUT = w->shape[0];
    if (x->shape[x->ndim - 1] != IN)
        fatal("linear %s: input has %d features, the weight expects %d",
              w->name ? w->name : "", x->shape[x->ndim - 1], IN);
    int N = (int)(x->numel / IN);
    int shape[MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = OUT;
    Tensor *out = tensor_new(g, x->ndim, shape);
    g->flops += 2.0 * N * (double)IN * OUT;
    KERNEL(DEV(x), linear_forward)(out->data, x->data, w->data, b ? b->data : NULL, N, IN, OUT);
    Node *n = record(g, "linear", linear_bwd, out, x, w, b, NULL);
    if (n) { n->iarg[0] = N; n->iarg[1] = IN; n->iarg[2] = OUT; }
    return out;
}

// embedding -------------------------------------------------------------------
static void embedding_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), embedding_backward)(in_grad(g, n, 0), n->out->grad, n->saved[0],
                                            n->iarg[0], n->iarg[1], n->iarg[2]);
}

Tensor *op_embedding(Graph *g, const int *ids, int B, int T, Tensor *table, int padding_idx) {
    int rows = table->shape[0], D = table->shape[1];
    for (int i = 0; i < B * T; i++)
        if (ids[i] < 0 || ids[i] >= rows)
            fatal("embedding %s: id %d out of range [0, %d)", table->name ? table->name : "",
                  ids[i], rows);
    Tensor *out = tensor_new(g, 3, (int[]){B, T, D});
    int *saved = meta_copy(g, ids, (size_t)B * T * sizeof(int));
    KERNEL(DEV(table), embedding_forward)(out->data, saved, table->data, B * T, D);
    Node *n = record(g, "embedding", embedding_bwd, out, table, NULL, NULL, NULL);
    if (n) {
        n->saved[0] = saved;
        n->iarg[0] = B * T; n->iarg[1] = D; n->iarg[2] = padding_idx;
    }
    return out;
}

// layernorm -------------------------------------------------------------------
static void layernorm_bwd(Graph *g, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1];
    KERNEL(DEV(x), layernorm_backward)(in_grad(g, n, 0), in_grad(g, n, 1), in_grad(g, n, 2),
                                       n->out->grad, x->data, n->saved[0], n->saved[1],
                                       w->data, n->iarg[0], n->iarg[1]);
}

Tensor *op_layernorm(Graph *g, Tensor *x, Tensor *w, Tensor *b, float eps) {
    int D = x->shape[x->ndim - 1], N = (int)(x->numel / D);
    Tensor *out = tensor_new(g, x->ndim, x->shape);
    float *mean = arena_alloc(&g->arena, N * sizeof(float));
    float *rstd = arena_alloc(&g->arena, N * sizeof(float));
    KERNEL(DEV(x), layernorm_forward)(out->data, mean, rstd, x->data, w->data, b->data, N, D, eps);
    Node *n = record(g, "layernorm", layernorm_bwd, out, x, w, b, NULL);
    if (n) {
        n->saved[0] = mean; n->saved[1] = rstd;
        n->iarg[0] = N; n->iarg[1] = D;
    }
    return out;
}

// attention -------------------------------------------------------------------
static void attention_bwd(Graph *g, Node *n) {
    Tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    int *a = n->iarg;
    KERNEL(DEV(q), attention_backward)(in_grad(g, n, 0), in_grad(g, n, 1), in_grad(g, n, 2),
                                       n->out->grad, q->data, k->data, v->data, n->saved[0],
                                       a[0], a[1], a[2], a[3], a[4], n->farg[0], n->seed);
}

Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int nhead,
                     const int *key_len, int causal, float p) {
    int B = q->shape[0], Tq = q->shape[1], D = q->shape[2], Tk = k->shape[1];
    if (D % nhead) fatal("attention: width %d is not divisible by %d heads", D, nhead);
    if (!g->training) p = 0;
    Tensor *out = tensor_new(g, 3, (int[]){B, Tq, D});
    float *probs = arena_alloc(&g->arena, (size_t)B * nhead * Tq * Tk * sizeof(float));
    uint64_t seed = p > 0 ? g->dropout_seed++ : 0;
    int *lens = key_len ? meta_copy(g, key_len, B * sizeof(int)) : NULL;
    g->flops += 4.0 * B * (double)Tq * Tk * D;   // scores and weighted sum
    KERNEL(DEV(q), attention_forward)(out->data, probs, q->data, k->data, v->data, lens,
                                      causal, B, Tq, Tk, nhead, D / nhead, p, seed);
    g->attention_probs = probs;
    Node *n = record(g, "attention", attention_bwd, out, q, k, v, NULL);
    if (n) {
        int a[5] = {B, Tq, Tk, nhead, D / nhead};
        memcpy(n->iarg, a, sizeof a);
        n->saved[0] = probs;
        n->farg[0] = p;
        n->seed = seed;
    }
    return out;
}

// gelu ------------------------------------------------------------------------
static void gelu_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), gelu_backward)(in_grad(g, n, 0), n->out->grad, n->in[0]->data,
                                       n->out->numel);
}

Tensor *op_gelu(Graph *g, Tensor *x) {
    Tensor *out = tensor_new(g, x->ndim, x->shape);
    KERNEL(DEV(x), gelu_forward)(out->data, x->data, x->numel);
    record(g, "gelu", gelu_bwd, out, x, NULL, NULL, NULL);
    return out;
}

// dropout ---------------------------------------------------------------------
static void dropout_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), dropout_backward)(in_grad(g, n, 0), n->out->grad, n->out->numel,
                                          n->farg[0], n->seed);
}

Tensor *op_dropout(Graph *g, Tensor *x, float p) {
    if (!g->training || p == 0) return x;
    Tensor *out = tensor_new(g, x->ndim, x->shape);
    uint64_t seed = g->dropout_seed++;
    KERNEL(DEV(x), dropout_forward)(out->data, x->data, x->numel, p, seed);
    Node *n = record(g, "dropout", dropout_bwd, out, x, NULL, NULL, NULL);
    if (n) { n->farg[0] = p; n->seed = seed; }
    return out;
}

// rowmask ---------------------------------------------------------------------
static void rowmask_bwd(Graph *g, Node *n) {
    KERNEL(DEV(n->out), rowmask_backward)(in_grad(g, n, 0), n->out->grad, n->saved[0],
                                          n->iarg[0], n->iarg[1]);
}

Tensor *op_rowmask(Graph *g, Tensor *x, const int *ids) {
    int D = x->shape[x->ndim - 1], N = (int)(x->numel / D);
    Tensor *out = tensor_new(g, x->ndim, x->shape);
    int *saved = meta_copy(g, ids, (size_t)N * sizeof(int));
    KERNEL(DEV(x), rowmask_forward)(out->data, x->data, saved, N, D);
    Node *n = record(g, "rowmask", rowmask_bwd, out, x, NULL, NULL, NULL);
    if (n) { n->saved[0] = saved; n->iarg[0] = N; n->iarg[1] = D; }
    return out;
}

// cross-entropy ---------------------------------------------------------------
static void cross_entropy_bwd(Graph *g, Node *n) {
    float dloss;
    backend_for(DEV(n->out))->to_host(&dloss, n->out->grad, sizeof dloss);
    KERNEL(DEV(n->out), cross_entropy_backward)(in_grad(g, n, 0), dloss, n->in[0]->data,
                                                n->saved[0], n->iarg[0], n->iarg[1],
                                                n->iarg[2]);
}

Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int *targets, int ignore_index) {
    int V = logits->shape[logits->ndim - 1], N = (int)(logits->numel / V);
    Tensor *out = tensor_new(g, 0, NULL);
    int *saved = meta_copy(g, targets, (size_t)N * sizeof(int));
    float loss;
    KERNEL(DEV(logits), cross_entropy_forward)(&loss, logits->data, saved, N, V, ignore_index);
    backend_for(DEV(logits))->from_host(out->data, &loss, sizeof loss);
    Node *n = record(g, "cross_entropy", cross_entropy_bwd, out, logits, NULL, NULL, NULL);
    if (n) {
        n->saved[0] = saved;
        n->iarg[0] = N; n->iarg[1] = V; n->iarg[2] = ignore_index;
    }
    return out;
}

// soft-target cross-entropy ---------------------------------------------------
static void soft_cross_entropy_bwd(Graph *g, Node *n) {
    float dloss;
    backend_for(DEV(n->out))->to_host(&dloss, n->out->grad, sizeof dloss);
    KERNEL(DEV(n->out), soft_cross_entropy_backward)(in_grad(g, n, 0), dloss, n->in[0]->data,
                                                     n->saved[0], n->iarg[0], n->iarg[1]);
}

// target (N,V) is host memory; it is copied to the logits' device.
Tensor *op_soft_cross_entropy(Graph *g, Tensor *logits, const float *target) {
    int V = logits->shape[logits->ndim - 1], N = (int)(logits->numel / V);
    Tensor *out = tensor_new(g, 0, NULL);
    float *t = arena_alloc(&g->arena, (size_t)N * V * sizeof(float));
    backend_for(DEV(logits))->from_host(t, target, (size_t)N * V * sizeof(float));
    float loss;
    KERNEL(DEV(logits), soft_cross_entropy_forward)(&loss, logits->data, t, N, V);
    backend_for(DEV(logits))->from_host(out->data, &loss, sizeof loss);
    Node *n = record(g, "soft_cross_entropy", soft_cross_entropy_bwd, out, logits, NULL, NULL, NULL);
    if (n) {
        n->saved[0] = t;
        n->iarg[0] = N; n->iarg[1] = V;
    }
    return out;
}
