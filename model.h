// model.h — the map of virtex.c.
//
// VirTex (Desai & Johnson, CVPR 2021): a ResNet and a Transformer decoder are trained
// together to caption images in both directions; the ResNet is then transferred to
// vision tasks. This header declares every piece of the system, in the order a reader
// meets them during one training step:
//
//   1. utilities ........ error helpers, RNG                          (tape.c)
//   2. tensors & arena .. Tensor, Arena                               (tape.c)
//   3. kernels .......... raw forward/backward of every operation,   (gemm.c, ops.c,
//                         CPU reference + CUDA twin with one name     kernels.cu)
//   4. the tape ......... autograd: ops record nodes, backward replays (tape.c)
//   5. config ........... the original VirTex YAML configs           (config.c)
//   6. the model ........ ResNet + transformer heads, losses, info    (model.c)
//   7. checkpoints ...... native named-tensor file format             (checkpoint.c)
//   8. data ............. JSON, COCO, images, tokenizer, shapes, loader (data.c)
//
// Shape letters used throughout: B batch, C channels, H/W height/width, K output
// channels, R/S kernel height/width, P/Q output height/width, T sequence length,
// D model width, NH attention heads, HS head size (D = NH*HS), V vocabulary size.
// All tensors are float32, row-major, contiguous (NCHW for images).
#ifndef VIRTEX_MODEL_H
#define VIRTEX_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

// ----------------------------------------------------------------------------
// 1. utilities

// Print "virtex: <message>" to stderr and exit(1). Every user-facing error goes here.
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
// Put one formatted line into err (errlen bytes; NULL err is allowed) and return -1:
// the library reports errors this way and leaves printing to the command line.
int seterr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void *xmalloc(size_t bytes) __attribute__((malloc, returns_nonnull));                  // exits with a message on failure
void *xcalloc(size_t n, size_t size) __attribute__((malloc, returns_nonnull));
char *xstrdup(const char *s) __attribute__((malloc, returns_nonnull));
double now_seconds(void);                     // monotonic clock

// A small, fast, seedable RNG (xoshiro256**). Its state is four words, so it can be
// saved in a checkpoint and restored for exact resumption.
typedef struct Rng { uint64_t s[4]; } Rng;
void rng_seed(Rng *r, uint64_t seed);
uint64_t rng_next(Rng *r);
double rng_uniform(Rng *r);                   // [0, 1)
double rng_normal(Rng *r);                    // N(0, 1), Box-Muller
// Counter-based random number in [0, 1): the same (seed, index) gives the same value
// on any device and in any thread order. Dropout masks use it, so CPU and CUDA agree.
#ifdef __CUDACC__
#define HOST_DEVICE __host__ __device__
#else
#define HOST_DEVICE
#endif
static inline HOST_DEVICE float hash_uniform(uint64_t seed, uint64_t index) {
    uint64_t z = seed ^ (index * 0xD1B54A32D192ED03ull);   // splitmix64 finaliser
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

// ----------------------------------------------------------------------------
// 2. tensors and the activation arena

typedef enum Device { DEV_CPU = 0, DEV_CUDA = 1 } Device;
#define MAX_DIMS 4

typedef struct Tensor {
    int ndim;
    int shape[MAX_DIMS];
    long numel;
    float *data;
    float *grad;           // NULL until backward needs it (parameters: preallocated)
    Device device;
    int requires_grad;
    const char *name;      // parameter name (PyTorch state_dict key) or NULL
} Tensor;

// Bump allocator for activations, gradients of activations and scratch space. Reset
// at the start of each step; memory is kept, so steady-state steps never call malloc.
typedef struct Arena {
    const struct Backend *be; // allocator of the arena's device (NULL: host malloc)
    char *base;
    size_t used, cap;
    size_t peak;           // high-water mark over the arena's life
    size_t overflow;       // bytes requested past cap in the current step
    struct ArenaBlock *extra;  // blocks taken when cap ran out (merged on reset)
} Arena;
void arena_init(Arena *a, const struct Backend *be, size_t cap);
void *arena_alloc(Arena *a, size_t bytes);   // 64-byte aligned, uninitialised
void arena_reset(Arena *a);
void arena_free(Arena *a);

// ----------------------------------------------------------------------------
// 3. kernels: the raw operations
//
// Each operation is a pair X_forward / X_backward over plain float arrays. Backward
// functions ACCUMULATE into the input gradients (+=) and skip any gradient pointer
// that is NULL. The CPU versions (gemm.c, ops.c) are the reference; kernels.cu holds
// CUDA twins with the same names and arguments (namespace cuda), and the op layer
// picks one through the Backend table below by the tensors' device.
//
// Each signature is written once, as a function type; the CPU function and the
// Backend field are both declared from it.

// C = alpha * op(A) @ op(B) + beta * C, row-major; op(A) is M x K, op(B) is K x N.
typedef void sgemm_fn(int transA, int transB, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc);

// conv2d, no bias. x (B,C,H,W), w (K,C,R,S), out (B,K,P,Q) with
// P = (H + 2*pad - R)/stride + 1, Q likewise. scratch holds conv2d_scratch_floats().
typedef void conv2d_forward_fn(float *out, const float *x, const float *w,
                               int B, int C, int H, int W, int K, int R, int S,
                               int stride, int pad, float *scratch);
typedef void conv2d_backward_fn(float *dx, float *dw, const float *dout,
                                const float *x, const float *w,
                                int B, int C, int H, int W, int K, int R, int S,
                                int stride, int pad, float *scratch);
size_t conv2d_scratch_floats(int B, int C, int H, int W, int K, int R, int S,
                             int stride, int pad);

// batchnorm2d over x (B,C,HW). training: normalise with the batch mean and biased
// variance, save them (mean, rstd: (C)), and update running stats with momentum and
// the unbiased variance. eval: normalise with the running stats (saved likewise).
typedef void batchnorm_forward_fn(float *out, float *mean, float *rstd, const float *x,
                                  const float *gamma, const float *beta,
                                  float *running_mean, float *running_var,
                                  int B, int C, int HW, int training,
                                  float momentum, float eps);
typedef void batchnorm_backward_fn(float *dx, float *dgamma, float *dbeta,
                                   const float *dout, const float *x,
                                   const float *mean, const float *rstd,
                                   const float *gamma, int B, int C, int HW,
                                   int training);

typedef void relu_forward_fn(float *out, const float *x, long n);
typedef void relu_backward_fn(float *dx, const float *dout, const float *out, long n);

// max pooling with window k, stride s, padding p (padding never wins the max).
// x (B,C,H,W), out (B,C,P,Q); argmax (B,C,P,Q) holds the winning input index in H*W.
typedef void maxpool_forward_fn(float *out, int *argmax, const float *x,
                                int B, int C, int H, int W, int k, int s, int p);
typedef void maxpool_backward_fn(float *dx, const float *dout, const int *argmax,
                                 int B, int C, int H, int W, int k, int s, int p);

// out = a + b (the residual add). backward: da += dout, db += dout.
typedef void add_forward_fn(float *out, const float *a, const float *b, long n);
typedef void add_backward_fn(float *da, float *db, const float *dout, long n);

// global average pool: x (B,C,HW) -> out (B,C).
typedef void avgpool_forward_fn(float *out, const float *x, int B, int C, int HW);
typedef void avgpool_backward_fn(float *dx, const float *dout, int B, int C, int HW);

// batched transpose: x (B,M,N) -> out (B,N,M). Turns (B,C,HW) grids into (B,HW,C).
typedef void transpose_forward_fn(float *out, const float *x, int B, int M, int N);
typedef void transpose_backward_fn(float *dx, const float *dout, int B, int M, int N);

// linear: x (N,IN), w (OUT,IN), b (OUT) or NULL -> out (N,OUT) = x @ w^T + b.
typedef void linear_forward_fn(float *out, const float *x, const float *w,
                               const float *b, int N, int IN, int OUT);
typedef void linear_backward_fn(float *dx, float *dw, float *db, const float *dout,
                                const float *x, const float *w, int N, int IN, int OUT);

// embedding lookup: ids (N) into table (rows, D) -> out (N,D). backward adds each
// row of dout into dtable[id], except id == padding_idx (-1: no padding row).
typedef void embedding_forward_fn(float *out, const int *ids, const float *table,
                                  int N, int D);
typedef void embedding_backward_fn(float *dtable, const float *dout, const int *ids,
                                   int N, int D, int padding_idx);

// layernorm over the last dim: x (N,D) -> out (N,D); saves mean, rstd (N).
typedef void layernorm_forward_fn(float *out, float *mean, float *rstd, const float *x,
                                  const float *w, const float *b, int N, int D,
                                  float eps);
typedef void layernorm_backward_fn(float *dx, float *dw, float *db, const float *dout,
                                   const float *x, const float *mean,
                                   const float *rstd, const float *w, int N, int D);

// Scaled dot-product attention, heads split from D as PyTorch does (head h owns
// columns h*HS .. h*HS+HS-1). q (B,Tq,D), k and v (B,Tk,D) -> out (B,Tq,D).
// Key j is hidden from query i when causal && j > i, or when key_len && j >=
// key_len[b]. A query that sees no key gets a zero output. probs (B,NH,Tq,Tk) saves
// the softmax before dropout; dropout (prob p, mask from hash_uniform(seed, index
// into probs)) is applied to the probabilities, scaled by 1/(1-p).
typedef void attention_forward_fn(float *out, float *probs, const float *q,
                                  const float *k, const float *v, const int *key_len,
                                  int causal, int B, int Tq, int Tk, int NH, int HS,
                                  float p, uint64_t seed);
typedef void attention_backward_fn(float *dq, float *dk, float *dv, const float *dout,
                                   const float *q, const float *k, const float *v,
                                   const float *probs, int B, int Tq, int Tk, int NH,
                                   int HS, float p, uint64_t seed);

// gelu, exact form x * 0.5 * (1 + erf(x / sqrt(2))).
typedef void gelu_forward_fn(float *out, const float *x, long n);
typedef void gelu_backward_fn(float *dx, const float *dout, const float *x, long n);

// dropout: element i is kept when hash_uniform(seed, i) >= p, then scaled by 1/(1-p).
typedef void dropout_forward_fn(float *out, const float *x, long n, float p,
                                uint64_t seed);
typedef void dropout_backward_fn(float *dx, const float *dout, long n, float p,
                                 uint64_t seed);

// zero the rows of x (N,D) whose id is 0 (padding): out = x * (ids != 0).
typedef void rowmask_forward_fn(float *out, const float *x, const int *ids, int N, int D);
typedef void rowmask_backward_fn(float *dx, const float *dout, const int *ids, int N,
                                 int D);

// softmax cross-entropy, mean over rows whose target != ignore_index.
// logits (N,V), targets (N). Writes the mean loss to *loss (host memory on every
// backend), returns the row count.
typedef int cross_entropy_forward_fn(float *loss, const float *logits,
                                     const int *targets, int N, int V, int ignore_index);
typedef void cross_entropy_backward_fn(float *dlogits, float dloss, const float *logits,
                                       const int *targets, int N, int V,
                                       int ignore_index);

// soft-target cross-entropy for the classification pretraining tasks:
// *loss = -(1/N) sum_n sum_v target[n,v] * log_softmax(logits[n])_v (host memory).
// logits, target (N,V); each target row is a distribution over labels, or all zero.
typedef void soft_cross_entropy_forward_fn(float *loss, const float *logits,
                                           const float *target, int N, int V);
typedef void soft_cross_entropy_backward_fn(float *dlogits, float dloss, const float *logits,
                                            const float *target, int N, int V);

// The CPU reference kernels (gemm.c, ops.c).
sgemm_fn sgemm;
conv2d_forward_fn conv2d_forward;
conv2d_backward_fn conv2d_backward;
batchnorm_forward_fn batchnorm_forward;
batchnorm_backward_fn batchnorm_backward;
relu_forward_fn relu_forward;
relu_backward_fn relu_backward;
maxpool_forward_fn maxpool_forward;
maxpool_backward_fn maxpool_backward;
add_forward_fn add_forward;
add_backward_fn add_backward;
avgpool_forward_fn avgpool_forward;
avgpool_backward_fn avgpool_backward;
transpose_forward_fn transpose_forward;
transpose_backward_fn transpose_backward;
linear_forward_fn linear_forward;
linear_backward_fn linear_backward;
embedding_forward_fn embedding_forward;
embedding_backward_fn embedding_backward;
layernorm_forward_fn layernorm_forward;
layernorm_backward_fn layernorm_backward;
attention_forward_fn attention_forward;
attention_backward_fn attention_backward;
gelu_forward_fn gelu_forward;
gelu_backward_fn gelu_backward;
dropout_forward_fn dropout_forward;
dropout_backward_fn dropout_backward;
rowmask_forward_fn rowmask_forward;
rowmask_backward_fn rowmask_backward;
cross_entropy_forward_fn cross_entropy_forward;
cross_entropy_backward_fn cross_entropy_backward;
soft_cross_entropy_forward_fn soft_cross_entropy_forward;
soft_cross_entropy_backward_fn soft_cross_entropy_backward;

// One table of kernels per device. A NULL entry means "no kernel on this device yet".
typedef struct Backend {
    const char *name;
    void *(*alloc)(size_t bytes);
    void (*release)(void *p);
    void (*to_host)(void *dst, const void *src, size_t bytes);
    void (*from_host)(void *dst, const void *src, size_t bytes);
    void (*zero)(void *p, size_t bytes);
    sgemm_fn *sgemm;
    conv2d_forward_fn *conv2d_forward;
    conv2d_backward_fn *conv2d_backward;
    batchnorm_forward_fn *batchnorm_forward;
    batchnorm_backward_fn *batchnorm_backward;
    relu_forward_fn *relu_forward;
    relu_backward_fn *relu_backward;
    maxpool_forward_fn *maxpool_forward;
    maxpool_backward_fn *maxpool_backward;
    add_forward_fn *add_forward;
    add_backward_fn *add_backward;
    avgpool_forward_fn *avgpool_forward;
    avgpool_backward_fn *avgpool_backward;
    transpose_forward_fn *transpose_forward;
    transpose_backward_fn *transpose_backward;
    linear_forward_fn *linear_forward;
    linear_backward_fn *linear_backward;
    embedding_forward_fn *embedding_forward;
    embedding_backward_fn *embedding_backward;
    layernorm_forward_fn *layernorm_forward;
    layernorm_backward_fn *layernorm_backward;
    attention_forward_fn *attention_forward;
    attention_backward_fn *attention_backward;
    gelu_forward_fn *gelu_forward;
    gelu_backward_fn *gelu_backward;
    dropout_forward_fn *dropout_forward;
    dropout_backward_fn *dropout_backward;
    rowmask_forward_fn *rowmask_forward;
    rowmask_backward_fn *rowmask_backward;
    cross_entropy_forward_fn *cross_entropy_forward;
    cross_entropy_backward_fn *cross_entropy_backward;
    soft_cross_entropy_forward_fn *soft_cross_entropy_forward;
    soft_cross_entropy_backward_fn *soft_cross_entropy_backward;
} Backend;

extern const Backend cpu_backend;             // tape.c, pointing at ops.c and gemm.c
extern const Backend *const cuda_backend;     // kernels.cu, or NULL when built without
const Backend *backend_for(Device d);          // exits with a message if unavailable

// ----------------------------------------------------------------------------
// 4. the autograd tape
//
// A Graph is the context of one step: the arena its tensors live in, the tape of
// recorded nodes, and the mode. Every op below computes its output with the kernels
// of its inputs' device and, when grad is enabled and an input requires grad,
// appends a Node. graph_backward() replays the nodes in reverse, each calling the
// backward kernel of its op.

typedef struct Node Node;
typedef struct Graph Graph;
typedef void (*BackwardFn)(Graph *g, Node *n);

#define NODE_MAX_IN 4
struct Node {
    BackwardFn backward;
    const char *op;                     // for debugging and `virtex info`
    Tensor *in[NODE_MAX_IN];            // inputs (NULL where unused)
    Tensor *out;
    void *saved[4];                     // saved values (means, argmax, probs, ids ...)
    int iarg[10];
    float farg[2];
    uint64_t seed;                      // dropout seed
};

struct Graph {
    Arena arena;                        // tensor data on the graph's device
    Arena meta;                         // host: Tensor structs, saved ids and lengths
    float *scratch;                     // conv2d's im2col buffer, shared by every conv
    size_t scratch_floats;              // (forward and backward) and grown on demand
    Node *nodes;
    int nnodes, cap;
    int grad_enabled;                   // 0: no-grad mode (evaluation)
    int training;                       // BatchNorm batch stats, dropout on
    Device device;
    uint64_t dropout_seed;              // advanced for every dropout op
    double flops;                       // 2 x multiply-adds of conv, linear, attention
    FILE *trace;                        // `virtex info`: model.c prints a row per module
    double trace_mark;                  // flops at the previous row
    float *attention_probs;             // probs (B,NH,Tq,Tk) of the latest op_attention
                                        // (arena memory: valid until graph_reset)
    float **cross_attention;            // NULL, or textual_forward stores there, per
                                        // decoder layer i, its cross-attention probs
};

void graph_init(Graph *g, Device device, size_t arena_bytes);
void graph_reset(Graph *g);             // drop the tape, reset the arena
void graph_free(Graph *g);
void graph_backward(Graph *g, Tensor *loss);   // d loss = 1, replay the tape

Tensor *tensor_new(Graph *g, int ndim, const int *shape);   // arena, uninitialised
Tensor *tensor_zeros(Graph *g, int ndim, const int *shape);
Tensor *tensor_view(Graph *g, Tensor *t, int ndim, const int *shape);   // reshape
float *tensor_grad(Graph *g, Tensor *t);    // the grad buffer, zero-allocated on demand

// The ops. Shapes as in section 3.
typedef struct BatchNorm BatchNorm;
Tensor *op_conv2d(Graph *g, Tensor *x, Tensor *w, int stride, int pad);
Tensor *op_batchnorm(Graph *g, Tensor *x, BatchNorm *bn);
Tensor *op_relu(Graph *g, Tensor *x);
Tensor *op_maxpool(Graph *g, Tensor *x, int k, int s, int p);
Tensor *op_add(Graph *g, Tensor *a, Tensor *b);
Tensor *op_avgpool(Graph *g, Tensor *x);                       // (B,C,H,W) -> (B,C)
Tensor *op_transpose(Graph *g, Tensor *x);                     // (B,M,N) -> (B,N,M)
Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b);  // over the last dim
Tensor *op_embedding(Graph *g, const int *ids, int B, int T, Tensor *table,
                     int padding_idx);                         // -> (B,T,D)
Tensor *op_layernorm(Graph *g, Tensor *x, Tensor *w, Tensor *b, float eps);
Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int nhead,
                     const int *key_len, int causal, float p);
Tensor *op_gelu(Graph *g, Tensor *x);
Tensor *op_dropout(Graph *g, Tensor *x, float p);             // identity in eval
Tensor *op_rowmask(Graph *g, Tensor *x, const int *ids);       // x (B,T,D), ids (B,T)
Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int *targets,
                         int ignore_index);                    // -> scalar
Tensor *op_soft_cross_entropy(Graph *g, Tensor *logits, const float *target); // -> scalar
// A view of rows [r0, r0+n) of a parameter (e.g. the q/k/v blocks of in_proj_weight).
Tensor *param_rows(Graph *g, Tensor *p, int r0, int n);

// ----------------------------------------------------------------------------
// 5. configuration: the original VirTex config keys and defaults (virtex/config.py)

#define CFG_STR 256
#define CFG_LIST 16
typedef struct Config {
    int RANDOM_SEED;
    int AMP;
    int CUDNN_DETERMINISTIC;
    int CUDNN_BENCHMARK;
    struct {
        char ROOT[CFG_STR];
        char TOKENIZER_MODEL[CFG_STR];
        int VOCAB_SIZE, UNK_INDEX, SOS_INDEX, EOS_INDEX, MASK_INDEX;
        int IMAGE_CROP_SIZE;
        int MAX_CAPTION_LENGTH;
        char IMAGE_TRANSFORM_TRAIN[CFG_LIST][64]; int n_IMAGE_TRANSFORM_TRAIN;
        char IMAGE_TRANSFORM_VAL[CFG_LIST][64];   int n_IMAGE_TRANSFORM_VAL;
        float USE_PERCENTAGE;
        int USE_SINGLE_CAPTION;
        struct { float MASK_PROPORTION, MASK_PROBABILITY, REPLACE_PROBABILITY; } MASKED_LM;
    } DATA;
    struct {
        char NAME[64];
        struct {
            char NAME[64];
            int FEATURE_SIZE;
            int PRETRAINED;
            int FROZEN;
            int BASE_WIDTH;      // virtex.c extension: stem/layer1 width (64 = torchvision)
        } VISUAL;
        struct { char NAME[128]; float DROPOUT; } TEXTUAL;
        struct {
            char NAME[64];
            int BEAM_SIZE;
            float NUCLEUS_SIZE;
            int MAX_DECODING_STEPS;
        } DECODER;
    } MODEL;
    struct {
        char OPTIMIZER_NAME[32];
        float SGD_MOMENTUM;
        float WEIGHT_DECAY;
        char NO_DECAY[CFG_STR];
        float CLIP_GRAD_NORM;
        struct { int USE; float ALPHA; int STEPS; } LOOKAHEAD;
        int BATCH_SIZE;
        float CNN_LR;
        float LR;
        int NUM_ITERATIONS;
        int WARMUP_STEPS;
        char LR_DECAY_NAME[32];
        int LR_STEPS[CFG_LIST]; int n_LR_STEPS;
        float LR_GAMMA;
    } OPTIM;
} Config;

void config_defaults(Config *c);
// Load a YAML file (following _BASE_ relative to the file) over the defaults, then
// apply overrides given as alternating KEY VALUE strings. Errors name the file, line,
// key and what was expected, and return -1 with the message in err (errlen bytes).
int config_load(Config *c, const char *path, int noverrides, char **overrides,
                char *err, size_t errlen);
int config_load_string(Config *c, const char *yaml, const char *origin, char *err,
                       size_t errlen);     // merge YAML text (no _BASE_ resolution)
int config_override(Config *c, const char *key, const char *value, char *err,
                    size_t errlen);
void config_dump(const Config *c, FILE *f);   // full YAML, readable by config_load
// Split MODEL.TEXTUAL.NAME "transdec_postnorm::L1_H2048_A32_F8192" (or transdec_prenorm)
// into layers L, width H, heads A, feedforward F. Malformed names (missing parts,
// non-numeric, zeros, H not divisible by A) return -1 with the expected form in err.
int parse_textual_name(const char *name, int *prenorm, int *L, int *H, int *A, int *F,
                       char *err, size_t errlen);

// ----------------------------------------------------------------------------
// 6. the model

struct BatchNorm {
    Tensor *weight, *bias;               // parameters (C)
    float *running_mean, *running_var;   // buffers (C)
    int64_t *num_batches_tracked;
    int C;
};

typedef struct Bottleneck {
    Tensor *conv1, *conv2, *conv3, *down_conv;   // down_conv NULL: identity shortcut
    BatchNorm bn1, bn2, bn3, down_bn;
    int stride;
} Bottleneck;

typedef struct ResNet {
    Tensor *conv1;
    BatchNorm bn1;
    Bottleneck *blocks;
    int nblocks;
    int layer_blocks[4];                 // blocks per layer, e.g. 3,4,6,3
    int out_channels;                    // 2048 for ResNet-50
} ResNet;

typedef struct DecoderLayer {            // nn.TransformerDecoderLayer
    Tensor *self_in_w, *self_in_b, *self_out_w, *self_out_b;     // self_attn
    Tensor *cross_in_w, *cross_in_b, *cross_out_w, *cross_out_b; // multihead_attn
    Tensor *lin1_w, *lin1_b, *lin2_w, *lin2_b;
    Tensor *norm1_w, *norm1_b, *norm2_w, *norm2_b, *norm3_w, *norm3_b;
} DecoderLayer;

typedef struct Transformer {             // one direction's nn.TransformerDecoder
    DecoderLayer *layers;
    Tensor *norm_w, *norm_b;             // final LayerNorm, pre-norm only
} Transformer;

// MODEL.NAME: "virtex"/"bicaptioning", "captioning", "masked_lm", and the two
// classification tasks of the paper's pretraining-task ablation.
typedef enum Task {
    TASK_BICAPTIONING, TASK_CAPTIONING, TASK_MASKED_LM,
    TASK_TOKEN_CLASSIFICATION, TASK_MULTILABEL_CLASSIFICATION
} Task;

// One entry of the state_dict: a parameter or a buffer, by its PyTorch name.
typedef enum DType { DT_F32 = 0, DT_I64 = 1 } DType;
typedef struct StateEntry {
    const char *name;
    DType dtype;
    int ndim, shape[MAX_DIMS];
    long numel;
    void *data;                          // into Model.params / buffers / counters
    Tensor *param;                       // the parameter tensor, NULL for buffers
    int alias;                           // 1: a second name of a shared tensor
} StateEntry;

typedef struct Model {
    Config cfg;
    Task task;
    int prenorm;                         // transdec_prenorm
    int L, D, NH, F, V;                  // textual head: layers, width, heads, ffn, vocab
    int max_len;                         // positions table size (MAX_CAPTION_LENGTH)
    float dropout;
    // parameters: one contiguous buffer (and one for their gradients)
    float *params, *grads;
    long nparams;
    Tensor *tensors;                     // the parameter tensors, in registration order
    int ntensors;
    // buffers: BatchNorm running stats (float) and batch counters (int64)
    float *buffers;
    long nbuffers;
    int64_t *counters;
    int ncounters;
    StateEntry *state;                   // the full state_dict, PyTorch order
    int nstate;
    // structure
    ResNet cnn;
    Tensor *proj_w, *proj_b;             // textual.visual_projection (shared)
    Tensor *words, *positions;           // textual.embedding.{words,positions} (shared)
    Tensor *emb_norm_w, *emb_norm_b;     // textual.embedding.layer_norm (shared)
    Tensor *out_b;                       // textual.output.bias (weight = words)
    Tensor *cls_w, *cls_b;               // textual.output of the classification tasks
    Transformer fwd, bwd;                // textual.transformer, backward_textual.transformer
} Model;

// Build the model described by cfg (errors go to err, return -1) and initialise it
// from cfg->RANDOM_SEED as the original does.
int model_build(Model *m, const Config *cfg, char *err, size_t errlen);
// The same without initialising: every parameter and buffer is zero (for `info`,
// and before loading a checkpoint).
int model_build_layout(Model *m, const Config *cfg, char *err, size_t errlen);
void model_init_weights(Model *m, uint64_t seed);
void model_free(Model *m);
void model_zero_grad(Model *m);
StateEntry *model_find(Model *m, const char *name);
long model_param_count(const Model *m, const char *prefixes); // 'a.|b.', NULL = all

// A batch as the model sees it. tokens are [SOS] w1 .. wn [EOS], right-padded with 0;
// noitpac is the same reversed ([EOS] wn .. w1 [SOS]); lengths count the real tokens.
// masked_lm reads tokens with some replaced by [MASK] and masked_labels; token
// classification reads the tokens as labels; multilabel classification reads labels.
typedef struct Batch {
    int B, T;
    float *images;                       // (B,3,S,S), normalised
    int *tokens, *noitpac;               // (B,T)
    int *lengths;                        // (B)
    int *masked_labels;                  // masked_lm: (B,T) target at chosen positions, else 0
    int *labels, nlabels;                // multilabel: (B,nlabels) category ids, 0-padded
    int64_t *image_ids;                  // (B) dataset image ids (loader), may be NULL
} Batch;

typedef struct Losses {
    Tensor *total;                       // forward + backward (or forward only)
    float forward, backward;             // each direction's loss, on the host
    Tensor *visual;                      // (B,C,h,w) layer4 features
    Tensor *logits[2];                   // (B,T,V) forward / backward direction
} Losses;

Tensor *visual_forward(Graph *g, Model *m, Tensor *images);      // -> (B,C,h,w)
// The grid of visual features as the transformer's memory: (B,C,h,w) -> (B,h*w,D).
Tensor *visual_memory(Graph *g, Model *m, Tensor *visual);
// Logits (B,T,V) of one direction (&m->fwd or &m->bwd) given the memory.
Tensor *textual_forward(Graph *g, Model *m, Transformer *dir, Tensor *memory,
                        const int *tokens, const int *lengths, int B, int T);
Losses model_loss(Graph *g, Model *m, const Batch *batch);

// `virtex info`: per-layer table, parameter counts, forward FLOPs per image.
void model_print_info(Model *m, FILE *f);

// ----------------------------------------------------------------------------
// 7. checkpoints: a native, documented named-tensor file
//
//   "VIRTEXC1"                      8 bytes magic
//   u32 version (1)
//   u32 config length, config YAML  (config_dump text)
//   u32 number of tensors, then for each:
//       u16 name length, name; u8 dtype (0 f32, 1 i64); u8 ndim; u32 shape[ndim];
//       raw little-endian data
//   u32 CRC-32 (zlib polynomial) of every byte before it
//
// Files are written atomically: a temp file in the same directory, fsync, rename.

typedef struct NamedTensor {
    char *name;
    DType dtype;
    int ndim, shape[MAX_DIMS];
    long numel;
    void *data;                          // float or int64_t
} NamedTensor;

typedef struct TensorFile {
    char *config;                        // YAML text ("" when none)
    NamedTensor *t;
    int n;
} TensorFile;

int tensorfile_read(TensorFile *tf, const char *path, char *err, size_t errlen);
int tensorfile_write(const TensorFile *tf, const char *path, char *err, size_t errlen);
NamedTensor *tensorfile_find(const TensorFile *tf, const char *name);
void tensorfile_free(TensorFile *tf);
uint32_t crc32_update(uint32_t crc, const void *data, size_t n);

int checkpoint_save(Model *m, const char *path, char *err, size_t errlen);
// The same plus extra tensors after the model's (names under "optimizer." / "trainer.").
int checkpoint_save_with(Model *m, const NamedTensor *extra, int nextra, const char *path,
                         char *err, size_t errlen);
// Load parameters and buffers by name, checking every name and shape.
int checkpoint_load(Model *m, const char *path, char *err, size_t errlen);
int model_load_state(Model *m, const TensorFile *tf, char *err, size_t errlen);
// checkpoint_load on a file already read (path names it in messages; the training
// driver's "optimizer." / "trainer." entries are skipped), and the config stored in it
// with KEY VALUE overrides on top (over config_defaults).
int checkpoint_load_state(Model *m, const TensorFile *tf, const char *path, char *err,
                          size_t errlen);
int checkpoint_config(Config *c, const TensorFile *tf, const char *path, int noverrides,
                      char **overrides, char *err, size_t errlen);

// Atomic file write helpers: open "<path>.tmp.<pid>", then fsync + rename on commit.
typedef struct AtomicFile { FILE *f; char *path, *tmp; } AtomicFile;
int atomic_open(AtomicFile *af, const char *path);
int atomic_commit(AtomicFile *af);   // 0 on success; removes the temp file on failure

// ----------------------------------------------------------------------------
// 8. data (data.c): JSON, COCO Captions, images and transforms, the SentencePiece
// tokenizer, the synthetic shapes dataset, the loader. SPEC.md's Data section.

// ---- 8a. JSON and COCO Captions (data.c)
// JSON (RFC 8259), strict: UTF-8 input (a leading BOM is skipped), \u escapes incl.
// surrogate pairs decoded to UTF-8 (unpaired surrogates are errors), the exact number
// grammar, at most JSON_MAX_DEPTH nested arrays/objects, nothing after the root value.
// The text is parsed whole, in linear time, into a read-only tree owned by the Json.
// Errors: one line "ORIGIN:LINE:COL: message" in err (COL counts characters); nothing
// is printed. Accessors take NULL (and values of the wrong type) and answer
// NULL / 0 / NAN, so lookups chain: json_string(json_get(json_at(a, 3), "caption")).
#define JSON_MAX_DEPTH 512
typedef enum JsonType {
    JSON_NONE, JSON_NULL, JSON_BOOL, JSON_NUMBER, JSON_STRING, JSON_ARRAY, JSON_OBJECT
} JsonType;
typedef struct Json Json;              // a parsed document
typedef struct JsonValue JsonValue;    // a value in it
int json_parse(Json **out, const char *text, size_t len, const char *origin, char *err,
               size_t errlen);
int json_parse_file(Json **out, const char *path, char *err, size_t errlen);
void json_free(Json *doc);
const JsonValue *json_root(const Json *doc);
JsonType json_type(const JsonValue *v);               // JSON_NONE for NULL
const char *json_type_name(JsonType t);               // "a string", ... for messages
int json_len(const JsonValue *v);                     // items / members, else 0
const JsonValue *json_at(const JsonValue *v, int i);  // i-th item / member, in order
const char *json_key(const JsonValue *member);        // name of a member from json_at
const JsonValue *json_get(const JsonValue *obj, const char *key); // last such member
const char *json_string(const JsonValue *v);          // NUL-terminated UTF-8
size_t json_string_len(const JsonValue *v);           // bytes (may hold \u0000)
double json_number(const JsonValue *v);
// 1 and *out when v is an integer literal (no '.', no exponent) that fits int64.
int json_int64(const JsonValue *v, int64_t *out);
int json_bool(const JsonValue *v);                    // 1 for true

// A caption as the original normalises it: lower(), NFKD, combining marks dropped,
// then surrounding whitespace trimmed. Full for ASCII, Latin-1 Supplement, Latin
// Extended-A/B and Additional, General Punctuation, fullwidth ASCII and the fi/fl
// ligatures (coverage in data.c). Returns a malloc'd string (NULL: out of memory).
char *caption_normalize(const char *utf8);

// COCO Captions: ROOT/annotations/captions_{split}2017.json, images in ROOT/{split}2017/.
// Images keep images[] order; each image's captions (normalised) keep the annotation
// file's order; images without captions are dropped (counted); an annotation naming an
// unknown image id is an error. Errors name the file and the field:
// "ROOT/annotations/captions_train2017.json: annotations[17].caption: expected a string, ...".
typedef struct CocoImage {
    int64_t id;
    char *file_name;                     // relative to image_dir
    char **captions;                     // normalised
    int ncaptions;
} CocoImage;
typedef struct CocoCaptions {
    CocoImage *images;
    int n;
    char *image_dir;                     // "ROOT/{split}2017"
    long ncaptions;                      // all images together
    int dropped;                         // images[] entries without any caption
    char *text_, **ptrs_;                // storage of the strings (internal)
} CocoCaptions;
int coco_captions_load(CocoCaptions *cc, const char *root, const char *split, char *err,
                       size_t errlen);
void coco_captions_free(CocoCaptions *cc);
// Every annotations[].caption of a captions file, normalised, in file order (for the
// vocabulary trainer). *captions is one allocation: free(*captions) releases it all.
int coco_read_captions(const char *json_path, char ***captions, long *n, char *err,
                       size_t errlen);
// ---- end 8a

// ---- 8b. images and transforms (data.c)
//
// Decoding goes through stb_image (JPEG, PNG, BMP, GIF's first frame, TGA, PSD, PNM,
// HDR) and always yields 8-bit RGB: grayscale is replicated into three channels, an
// alpha channel is DROPPED (not composited), as PIL's convert("RGB") does, and 16-bit
// PNGs keep their high byte. EXIF orientation is ignored (as PIL's Image.open does).
//
// The transforms work on planar float images: CHW, 3 planes of H*W, values in [0,1]
// (u8 / 255) until normalisation, so a finished image is one NCHW batch row. They match
// torchvision 0.14's TENSOR path on the float image u8/255 (torchvision.transforms.
// functional with InterpolationMode.BILINEAR and antialias=None, i.e. no antialiasing,
// align_corners=False, half-pixel centres; F.resized_crop / F.resize / F.center_crop /
// adjust_* / normalize), checked against it by test/make_image_fixtures.py. The crop
// and the resize are done in one pass straight from the u8 source.
// Random draws come from the caller's Rng, in the documented order, so a seed fixes
// every parameter; the parameter *algorithms* are torchvision's (their RNG is not).

typedef struct Image { int w, h; uint8_t *rgb; } Image;   // HWC, rgb[(y*w + x)*3 + c]
#define IMAGE_MAX_SIDE 16384                // larger images are refused (per side)
#define IMAGE_MAX_PIXELS (1L << 28)         // and so are w*h above this

// Decode a file / a memory buffer to RGB. On error return -1, leave img empty and put
// one line "PATH: reason" in err (missing file: strerror; bad data: stb's reason; zero
// size or dimensions over the limits). `name` only labels messages. Thread-safe.
int image_load(Image *img, const char *path, char *err, size_t errlen);
int image_load_memory(Image *img, const void *data, size_t n, const char *name,
                      char *err, size_t errlen);
void image_free(Image *img);                // free the pixels, zero the struct

// A crop box in pixels of the image it was drawn from.
typedef struct CropBox { int top, left, h, w; } CropBox;

// torchvision's RandomResizedCrop.get_params on an H x W image: up to 10 attempts of
// area = H*W*U(scale) and aspect = exp(U(log ratio)), w = round(sqrt(area*aspect)),
// h = round(sqrt(area/aspect)) (round half to even, like Python); accepted when
// 0 < w <= W and 0 < h <= H, then top = randint(H-h+1), left = randint(W-w+1). Rng
// draws per attempt: scale, log-ratio, and on acceptance top, left. Otherwise the
// centre crop of the whole image with its aspect clamped to the ratio range (no draws).
// Returns 1 when that fallback was taken, else 0.
int rrc_get_params(int H, int W, const double scale[2], const double ratio[2], Rng *rng,
                   CropBox *box);

// F.resized_crop(img, top, left, h, w, [oh, ow], BILINEAR): box (inside the image)
// resized bilinearly to oh x ow (no antialias), out (3, oh, ow) in [0,1].
void image_resized_crop(const Image *img, CropBox box, int oh, int ow, float *out_chw);
// F.center_crop(F.resize(img, R), S): shorter side to R (longer = int(R*long/short)),
// then the centre S x S (torchvision's rounding; zero padding when R < S). out (3,S,S).
void image_resize_center_crop(const Image *img, int R, int S, float *out_chw);

// Mirror every row of a (C,H,W) image in place.
void image_hflip(float *chw, int C, int H, int W);
// The caption of a flipped image: the whole words "left" and "right" swapped, every
// other byte kept ("leftover", "bright", "righteous" are untouched). A word is a run
// of ASCII letters/digits and non-ASCII bytes, so "left-hand", "left's", "left." are
// swapped. Matching is case-sensitive, lower case only: captions are lower-cased by the
// COCO reader before this step. Returns a malloc'd string.
char *caption_swap_left_right(const char *caption);

// The colour adjustments of torchvision 0.14 on a (3,H,W) float image in place, hw =
// H*W, each clamped to [0,1]: brightness = blend with black, contrast = blend with the
// mean of the grayscale image, saturation = blend with the grayscale image, where
// grayscale = 0.2989 R + 0.587 G + 0.114 B (torchvision's rgb_to_grayscale constants),
// hue = rotation of H in torchvision's _rgb2hsv/_hsv2rgb (factor in [-0.5, 0.5]).
// blend(x, y, f) = f*x + (1-f)*y in float32, as torchvision's _blend.
void adjust_brightness(float *chw, long hw, double factor);
void adjust_contrast(float *chw, long hw, double factor);
void adjust_saturation(float *chw, long hw, double factor);
void adjust_hue(float *chw, long hw, double factor);

// ColorJitter(brightness, contrast, saturation, hue) wrapped in RandomApply(p).
// color_jitter_make gives torchvision's ranges: brightness b -> [max(0,1-b), 1+b] (same
// for contrast and saturation), hue h -> [-h, h]; SPEC: (0.4, 0.4, 0.4, 0.1, p 0.8).
// Rng draws: U < p decides `apply` (nothing more is drawn when it is 0); then the order
// (torch.randperm(4) as a Fisher-Yates shuffle: 3 draws), then the four factors
// uniformly in the order b, c, s, h. order[] holds 0 brightness, 1 contrast,
// 2 saturation, 3 hue in the order they are applied.
typedef struct ColorJitter { double lo[4], hi[4], p; } ColorJitter;   // b, c, s, h
ColorJitter color_jitter_make(double brightness, double contrast, double saturation,
                              double hue, double p);
typedef struct JitterParams { int apply; int order[4]; double factor[4]; } JitterParams;
JitterParams color_jitter_params(const ColorJitter *cj, Rng *rng);
void color_jitter_apply(float *chw, long hw, const JitterParams *jp);

// In place (x - mean[c]) / std[c] with the ImageNet statistics (float32, as
// torchvision's normalize).
extern const float IMAGENET_MEAN[3], IMAGENET_STD[3];
void normalize_imagenet(float *chw, long hw);

// The pipelines: DATA.IMAGE_TRANSFORM_TRAIN / _VAL, names applied in order, each with
// optional options in the original's "name::{'key': value}" syntax:
//   random_resized_crop  to S x S; options 'scale': (lo, hi) (default (0.2, 1.0)),
//                        'ratio': (lo, hi) (default (3/4, 4/3))
//   smallest_resize      shorter side to R (bilinear)      global_resize  to S x S
//   center_crop          S x S                              normalize      ImageNet
//   horizontal_flip      p 0.5 ('p'); *flipped reports it (the caller swaps the caption)
//   color_jitter         'brightness', 'contrast', 'saturation', 'hue' (a number v or
//                        a (lo, hi) pair), 'p' (default 0.4, 0.4, 0.4, 0.1, p 0.8)
// Geometric steps are composed lazily and resampled once from the u8 source; flip,
// jitter and normalize run on the S x S float result. The list must leave an S x S
// image (else transform_run fails with a message). Rng draws, in list order: rrc as
// rrc_get_params, flip one U < p, jitter as color_jitter_params.
enum { TF_RANDOM_RESIZED_CROP, TF_SMALLEST_RESIZE, TF_GLOBAL_RESIZE, TF_CENTER_CROP,
       TF_HORIZONTAL_FLIP, TF_COLOR_JITTER, TF_NORMALIZE };
typedef struct TransformStep {
    int op;                                 // TF_*
    double scale[2], ratio[2];              // random_resized_crop
    double p;                               // horizontal_flip
    ColorJitter jitter;                     // color_jitter
} TransformStep;
typedef struct TransformPipeline {
    int n, S, R;                            // crop size, smallest_resize target
    TransformStep step[CFG_LIST];
} TransformPipeline;
// Parse names (unknown names and options fail with the list of valid ones). R <= 0
// means R = S (pretraining val: 224; downstream evaluation passes 256).
int transform_parse(TransformPipeline *tp, const char names[][64], int n, int S, int R,
                    char *err, size_t errlen);
// Run on one image into out_chw (3,S,S). flipped (may be NULL) gets 1 when a
// horizontal flip was applied. Returns 0, or -1 with a message.
int transform_run(const TransformPipeline *tp, const Image *img, float *out_chw,
                  Rng *rng, int *flipped, char *err, size_t errlen);
// parse + run in one call.
int transform_apply(const char names[][64], int n, const Image *img, float *out_chw,
                    int S, int R, Rng *rng, int *flipped, char *err, size_t errlen);
// The SPEC pipelines: train = random_resized_crop, horizontal_flip, color_jitter,
// normalize; val = smallest_resize R, center_crop S, normalize.
void transform_train(const Image *img, float *out_chw, int S, Rng *rng, int *flipped);
void transform_val(const Image *img, float *out_chw, int R, int S);
// ---- end 8b

// ---- 8c. tokenizer (data.c)
// SentencePiece BPE, exact to the `sentencepiece` library (EncodeAsIds, EncodeAsPieces,
// DecodeIds; checked against its Python package 0.1.97 by
// test/make_tokenizer_fixtures.py). A .model file is a protobuf ModelProto: pieces
// (string, score, type), trainer_spec, normalizer_spec with its precompiled charsmap
// (a Darts double-array trie of longest-match replacement rules). Encoding = the
// library's Normalizer (rules, then whitespace: leading/trailing/repeated spaces
// dropped, "▁" dummy prefix, spaces -> "▁"), then bpe::Model (characters, user-defined
// symbols whole, the highest-scoring mergeable adjacent pair merged first, ties to the
// left), runs of unknown characters -> one unk id (or UTF-8 byte pieces with
// byte_fallback). Only BPE models load; the file is never trusted (every length
// checked, wire types must match, nothing allocated beyond what the file holds), errors
// are one line "PATH: what is wrong". A Tokenizer is read-only once loaded: encode and
// decode may run on many threads at once.
#define TOKENIZER_MAX_FILE (1 << 30)        // bytes; larger files are refused
typedef struct Tokenizer Tokenizer;
enum {                                      // ModelProto.SentencePiece.Type
    PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3, PIECE_USER_DEFINED = 4,
    PIECE_UNUSED = 5, PIECE_BYTE = 6
};
Tokenizer *tokenizer_load(const char *path, char *err, size_t errlen);    // NULL: error
Tokenizer *tokenizer_load_memory(const void *data, size_t n, const char *name, char *err,
                                 size_t errlen);
void tokenizer_free(Tokenizer *tk);
int tokenizer_size(const Tokenizer *tk);                     // pieces, V
const char *tokenizer_piece(const Tokenizer *tk, int id);    // NULL when out of range
int tokenizer_piece_type(const Tokenizer *tk, int id);       // PIECE_*, 0 out of range
float tokenizer_score(const Tokenizer *tk, int id);
int tokenizer_piece_id(const Tokenizer *tk, const char *piece);  // unk id when absent
int tokenizer_unk_id(const Tokenizer *tk);
// EncodeAsIds of len bytes of UTF-8 (malformed bytes are taken as the library takes
// them). Stores at most max ids and returns how many there are (> max: call again
// with room for them all), or -1 where the library itself fails (hostile models only).
int tokenizer_encode(const Tokenizer *tk, const char *text, size_t len, int *ids, int max);
// EncodeAsPieces: NULL-terminated, in one allocation (free() it); *n pieces (-1: error).
char **tokenizer_encode_pieces(const Tokenizer *tk, const char *text, size_t len, int *n);
// DecodeIds: the text into out (cap bytes, NUL-terminated, truncated like snprintf);
// returns its full length, or -1 when an id is out of range.
long tokenizer_decode(const Tokenizer *tk, const int *ids, int n, char *out, size_t cap);
// What the model's normalizer makes of text ("▁" for spaces): malloc'd, NUL-terminated.
char *tokenizer_normalize(const Tokenizer *tk, const char *text, size_t len, size_t *outlen);
// The .vocab format of spm_train: "piece<TAB>score" per line, the score as %g.
int tokenizer_write_vocab(const Tokenizer *tk, FILE *f);

// `virtex vocab`: train a BPE vocabulary on captions (already lower-cased and
// accent-stripped by caption_normalize) as VirTex's build_vocabulary.py asks
// sentencepiece to: model_type bpe, character coverage 1.0 (every character is a
// piece), ids 0 <unk>, 1 [SOS], 2 [EOS], 3 [MASK] (control pieces), bos/eos off.
// Merges: the most frequent adjacent pair over the words (ties: fewer characters,
// then the smaller string), pieces never mixing scripts (letters / digits+punctuation
// / other scripts), "▁" only first, at most 16 characters; scores -index in merge
// order, then the characters by frequency, as the library lays out a BPE model. The
// merge order is a proper BPE, not the library trainer's heuristic one; the library
// loads the result and encodes with it exactly as virtex does. Normalizer: by default
// "nmt_nfkc_subset" — nmt_nfkc's whitespace/control rules, Unicode spaces -> U+0020,
// fullwidth ASCII -> ASCII, built as a charsmap here (full NFKC tables are not carried);
// normalizer_from copies another model's normalizer (e.g. the full nmt_nfkc charsmap of
// a library-trained model) instead. Deterministic.
typedef struct VocabOptions {
    int vocab_size;                         // all pieces, the 4 special ones included
    const Tokenizer *normalizer_from;       // NULL: the built-in rules
    int verbose;                            // 1: print a summary line to stdout
} VocabOptions;
// The serialized .model (malloc'd, *len bytes), or NULL with the reason in err.
unsigned char *vocab_train(const char *const *captions, long n, const VocabOptions *o,
                           size_t *len, char *err, size_t errlen);
// Write PREFIX.model (these bytes, checked by loading them) and PREFIX.vocab, each
// atomically. Returns 0, or -1 with one line in err.
int vocab_write(const char *prefix, const unsigned char *model, size_t len, char *err,
                size_t errlen);
// ---- end 8c

// ---- 8d. the synthetic shapes dataset (data.c)
//
// `virtex synth` draws a dataset that makes the whole pipeline runnable on a laptop:
// square JPEG images (quality 95, no chroma subsampling) of coloured shapes with
// anti-aliased edges on low-contrast textured grey backgrounds, in three real layouts:
//   DIR/train2017/000000000001.jpg ..., DIR/val2017/...,
//   DIR/annotations/captions_{train,val}2017.json     COCO Captions: 5 true captions
//   DIR/annotations/instances_{train,val}2017.json    COCO instances: bbox, category
//   DIR/voc2007/{JPEGImages,Annotations,ImageSets/Main}   PASCAL VOC 2007 classification
//   DIR/imagenet/{train,val}/CLASS/CLASS_000000.jpg       ImageNet folders
//   DIR/synth.txt                                     what was made, and how
// Shapes: circle square triangle star cross. Colours: red orange yellow green blue
// purple white. The 35 colour+shape pairs are the classes everywhere: class = colour *
// SYNTH_SHAPES + shape, named "red_circle" ... "white_cross"; COCO category id =
// class + 1. COCO images hold one shape (70%) or two (a colour+shape pair at most once),
// large unless there is no room, never covering each other's centre (few shapes, and
// large, so that a few minutes of training learn to name them: see synth_layout_shapes
// in data.c), and 5 captions from different templates
// that name every shape with its colour (and often its size) and say where it is:
// absolute ("in the top left": thirds of the picture), relative ("a red circle to the
// left of a blue star": the horizontal relation when |dx| >= |dy|, else above/below) or
// ordered ("from left to right: ..."). Every horizontal word is "left" or "right", so a
// mirrored image with the two words swapped is described truly. VOC images hold 1-3
// shapes (30/40/30%), small or large, plus (1 in 4) a "difficult" extra shape: tiny,
// or mostly outside the picture; a class seen only as difficult is labelled 0. ImageNet images show one
// large shape of their class near the centre, sometimes with a small other one.
// Each image has its own RNG seeded from (seed, split, index): the files are
// byte-identical for a seed whatever the number of threads.
enum { SYNTH_SHAPES = 5, SYNTH_COLOURS = 7, SYNTH_CLASSES = 35, SYNTH_MAX_OBJECTS = 4,
       SYNTH_CAPTIONS = 5, SYNTH_CAPTION_LEN = 192 };
typedef enum SynthSplit {
    SYNTH_COCO_TRAIN, SYNTH_COCO_VAL, SYNTH_VOC_TRAINVAL, SYNTH_VOC_TEST,
    SYNTH_IMAGENET_TRAIN, SYNTH_IMAGENET_VAL, SYNTH_NSPLITS
} SynthSplit;
extern const char *const synth_shape_names[SYNTH_SHAPES];
extern const char *const synth_colour_names[SYNTH_COLOURS];
extern const unsigned char synth_colour_rgb[SYNTH_COLOURS][3];   // the nominal colour

typedef struct SynthObject {
    int shape, colour;             // indices into the name tables
    int size;                      // 0 small, 1 large, 2 tiny (VOC difficult only)
    int difficult, truncated;      // VOC: tiny, or mostly outside the picture
    float cx, cy, r;               // centre and radius in pixels (x right, y down)
    float bbox[4];                 // x, y, w, h of the shape's part inside the picture
    float area;                    // pixels covered
} SynthObject;

typedef struct SynthScene {
    int n;                         // objects, in drawing order
    SynthObject obj[SYNTH_MAX_OBJECTS];
    int ncaptions;                 // SYNTH_CAPTIONS for COCO images, else 0
    char caption[SYNTH_CAPTIONS][SYNTH_CAPTION_LEN];
} SynthScene;

typedef struct SynthOptions {
    const char *out;               // output directory (default "data/shapes")
    int images;                    // N = COCO train images (default 10000, 10..1000000)
    int size;                      // image side in pixels (default 64, 32..512)
    uint64_t seed;                 // default 0
    int threads;                   // 0: OpenMP's default
    int quiet;                     // 1: print nothing (no progress, no summary)
} SynthOptions;
void synth_default_options(SynthOptions *o);
int synth_check_options(const SynthOptions *o, char *err, size_t errlen);  // -1: bad
// Images per split, from N: COCO train N, val N/10; VOC trainval N/5, test N/5;
// ImageNet N/100 per class train, N/500 per class val (counts here are totals, 35 x
// per class); each at least 1 (per class). Image ids: COCO train 1..N, val from N+1;
// VOC trainval 1.., test after it. ImageNet image `index` of a split is of class
// index % 35, file CLASS/CLASS_%06d.jpg with index / 35.
void synth_split_sizes(const SynthOptions *o, long count[SYNTH_NSPLITS]);
// Write the whole dataset. A non-empty DIR without synth.txt is refused (nothing of
// the user's is overwritten); a DIR made by synth is redrawn, stale images removed.
// Returns 0, or -1 with one line in err.
int synth_dataset(const SynthOptions *o, char *err, size_t errlen);
// Draw image `index` of a split: the scene (with captions for COCO) and, when rgb is
// not NULL, its pixels (size*size*3 bytes, RGB, row-major), exactly as written.
void synth_image(SynthScene *s, unsigned char *rgb, SynthSplit split, long index,
                 int size, uint64_t seed);
void synth_class_name(int cls, char *buf, size_t n);     // "red_circle"
// The classes a caption names ("... a red circle ..." -> red_circle), each once, in
// order of first mention; returns how many (at most max are stored). For measuring
// generated captions against a scene.
int synth_caption_classes(const char *caption, int *classes, int max);
// ---- end 8d

// ---- 8e. the loader (data.c)
//
// Batches of (image, caption) samples for training and evaluation, made ahead of
// their use by worker threads (pthreads) that read, decode, transform and tokenize
// into a bounded queue of ready batches. The consumer takes them in order.
//
// The stream is a pure function of (seed, batch index), whatever the number of
// workers:
//   train  endless; epoch e is a permutation of the split's images (Fisher-Yates with
//          an Rng seeded from (seed, e)); batch b holds stream positions b*B .. b*B+B-1
//          of the concatenated epochs; the sample at position k picks one of its
//          image's captions uniformly and runs DATA.IMAGE_TRANSFORM_TRAIN, both drawing
//          from an Rng seeded from (seed, k) (a horizontal flip swaps "left"/"right").
//   eval   one pass over the images in order, the first caption of each (as listed in
//          the annotation file), DATA.IMAGE_TRANSFORM_VAL, no randomness; the last
//          batch may be short; then loader_next returns NULL.
// Resuming training at iteration i is loader_open with start = i.
// Tokens: [SOS] + encode(caption) + [EOS], then the first DATA.MAX_CAPTION_LENGTH of
// them (as the original: a caption that long loses its [EOS]), padded with 0 to the
// longest caption in the batch (Batch.T); noitpac is each caption reversed.
// Batch.image_ids holds the COCO image ids. DATA.USE_SINGLE_CAPTION: always the first.
// MODEL.NAME masked_lm: after the transforms, the original's masking (MaskedLmDataset)
// with the same sample Rng: ceil((len-2) * MASK_PROPORTION) distinct positions among
// 1..len-2; one alone becomes [MASK], else per position f = U: f <= MASK_PROBABILITY
// -> [MASK], f <= MASK_PROBABILITY + REPLACE_PROBABILITY -> a random id in [0, V),
// else unchanged; Batch.masked_labels (B,T) holds the hidden token at [MASK]ed
// positions only (as the original), 0 elsewhere.
// MODEL.NAME multilabel_classification: Batch.labels (B, nlabels) are the image's
// distinct categories in ROOT/annotations/instances_{split}2017.json as 1 + their
// index in categories[], ascending, 0-padded; images without instances leave the stream.
// A missing or undecodable image is reported once per loader on stderr ("virtex:
// warning: PATH: reason; replaced by another image"), counted, and its sample replaced
// by the next image of the split (in index order, wrapping) that loads: deterministic
// as well. Workers run no OpenMP (the training step's threads keep their cores).
typedef struct Loader Loader;
typedef struct LoaderOptions {
    const char *split;          // "train" or "val" (COCO ROOT/{split}2017)
    int train;                  // 1: the endless shuffled stream; 0: one ordered pass
    int batch_size;             // 0: OPTIM.BATCH_SIZE
    int workers;                // 0: the number of cores
    int prefetch;               // batches made ahead of the one held; 0: 2 (workers
                                // share a batch sample by sample, so 2 keep them busy)
    long start;                 // index of the first batch (resume)
    long limit;                 // eval: at most this many images (0: all)
    int quiet;                  // 1: no warnings on stderr (still counted)
} LoaderOptions;
// Open DATA.ROOT's split, DATA.TOKENIZER_MODEL, the transforms of cfg and start the
// workers. Errors (missing directory or annotation file, bad tokenizer, a batch size
// the split cannot fill in train mode, ...) return NULL with one line in err.
Loader *loader_open(const Config *cfg, const LoaderOptions *o, char *err, size_t errlen);
// The next batch (blocks until it is ready). Owned by the loader, valid until the next
// call. NULL: the eval pass is over.
const Batch *loader_next(Loader *L);
typedef struct LoaderStats {
    long batches, images;       // delivered so far
    long bad;                   // distinct unreadable images found (each reported once)
    double wait_seconds;        // time loader_next spent blocked
} LoaderStats;
LoaderStats loader_stats(const Loader *L);
const CocoCaptions *loader_dataset(const Loader *L);
const Tokenizer *loader_tokenizer(const Loader *L);
void loader_close(Loader *L);   // stops and joins the workers, frees everything
// ---- end 8e

// ----------------------------------------------------------------------------
// 9. training (train.c): optimiser, schedules, the `virtex train` driver
//
// One iteration, as the original's scripts/pretrain_virtex.py: zero the grads, the
// next batch, the loss, backward, clip the global gradient norm to CLIP_GRAD_NORM,
// the optimiser step with the LR of the schedule, Lookahead every STEPS steps.

// The LR multiplier of OPTIM.LR_DECAY_NAME after `step` scheduler steps, each with a
// linear warmup (step / WARMUP_STEPS while step < WARMUP_STEPS), then
//   none 1;  linear (T - step) / (T - W);  cosine cos^2(pi/2 * (step - W) / (T - W));
//   multistep LR_GAMMA ^ (number of LR_STEPS <= step);   never below 0.
// The original steps its LambdaLR after each optimiser step, so iteration i (from 1)
// trains with lr_multiplier(i - 1): the first iteration has LR 0.
double lr_multiplier(const Config *c, long step);
// The original's asserts on the schedule keys (warmup < total; milestones increasing,
// after the warmup and before the end). 0, or -1 with the key named in err.
int schedule_check(const Config *c, char *err, size_t errlen);

// Python's re.match(pattern, name) (a match at the start, not necessarily to the end)
// through POSIX extended regular expressions, for OPTIM.NO_DECAY. \d \w \s (and their
// capitals) are translated; lazy quantifiers, (?...) groups and backreferences are
// refused. 1 match, 0 no match, -1 a bad pattern (message in err).
int regex_match_start(const char *pattern, const char *name, char *err, size_t errlen);

// The optimiser of the original's OptimizerFactory: one parameter group per parameter
// (model.named_parameters() order: every shared tensor once, under its first name)
// with lr = CNN_LR when the name contains "cnn", else LR, and weight decay 0 when the
// name matches NO_DECAY, else WEIGHT_DECAY. "sgd": torch.optim.SGD with momentum
// (d = g + wd p; buf = momentum buf + d; p -= lr buf); "adamw": torch.optim.AdamW
// (betas 0.9, 0.999, eps 1e-8; p *= 1 - lr wd, then the bias-corrected Adam step).
// Lookahead (LOOKAHEAD.USE): every STEPS steps p = alpha p + (1 - alpha) slow, slow = p.
typedef struct Optimizer {
    int adamw;                  // 0: SGD with momentum
    float momentum;
    int ngroups;                // = parameters
    Tensor **param;             // (ngroups) the model's tensors, named_parameters order
    const char **name;
    float *lr, *weight_decay;   // base LR and weight decay per group
    float *buf, *buf2;          // momentum buffer / AdamW exp_avg, exp_avg_sq (nparams)
    float *slow;                // Lookahead slow weights (nparams), NULL when off
    int lookahead_k;
    float lookahead_alpha;
    int64_t lookahead_counter;  // steps since the last slow-weight update
    int64_t steps;              // optimiser steps taken
    float *base;                // m->params (buffers are indexed by offset from it)
    long nparams;
} Optimizer;
int optimizer_init(Optimizer *o, Model *m, char *err, size_t errlen);
void optimizer_free(Optimizer *o);
// torch.nn.utils.clip_grad_norm_ over every parameter once: the global L2 norm of the
// gradients, scaled by max_norm / (norm + 1e-6) when that is below 1. Returns the norm.
double clip_grad_norm(Model *m, double max_norm);
// One step with every group's LR scaled by lr_mult (then Lookahead's count).
void optimizer_step(Optimizer *o, double lr_mult);
// The optimiser's state as checkpoint tensors ("optimizer.NAME.momentum_buffer",
// ".exp_avg", ".exp_avg_sq", ".slow_params", "optimizer.steps",
// "optimizer.lookahead_counter"), pointing into o (valid while o lives; free() the
// array), and back from a checkpoint (every tensor required, shapes checked).
NamedTensor *optimizer_state(Optimizer *o, int *n);
int optimizer_load(Optimizer *o, const TensorFile *tf, char *err, size_t errlen);

// `virtex train`.
typedef struct TrainOptions {
    const char *config;         // NULL: the built-in default (configs/small/...)
    int noverrides;
    char **overrides;           // KEY VALUE pairs
    const char *out;            // run directory (NULL: runs/<config name>)
    const char *resume;         // a checkpoint to continue from
    Device device;
    int checkpoint_every;       // 0: min(2000, NUM_ITERATIONS / 10), at least 1
    int log_every;              // non-terminal progress lines (0: 20 iterations)
    int keep;                   // most recent checkpoints kept (0: 3)
    int workers;                // loader threads (0: the cores)
    long val_images;            // images of the val split per validation (0: all)
    int samples;                // captions printed per validation (default 4)
    int stop_after;             // stop (with a checkpoint) after this many iterations
                                // of this invocation (0: never; for tests and demos)
    int quiet;                  // no progress display (metrics still written)
} TrainOptions;
int train_run(const TrainOptions *o);    // exit code: 0, 1 error, 130 interrupted

// The validation loss of each direction: the mean over every non-padding target token
// of the split (eval mode, validation transform, first caption of each image).
typedef struct EvalLoss { double forward, backward, total; long images, tokens; } EvalLoss;
int eval_loss(Model *m, const char *split, long limit, int workers, EvalLoss *out,
              char *err, size_t errlen);
// Generated captions against reference captions of the shapes dataset, by their
// colour+shape phrases (synth_caption_classes): how many of the references' objects
// are named (colour and shape in one phrase), have their colour named, have their shape
// named; how many generated phrases name an object of the picture. Caption
// (i + shift) % n is scored against reference i: shift 0 scores the captions, shift 1
// the chance level (every image described by the caption of another).
typedef struct ShapeScore { long images, objects, named, colours, shapes, phrases, correct; } ShapeScore;
ShapeScore shapes_score(const char *const *refs, const char *const *captions, long n, long shift);
// Greedy captions ([SOS] kept at every step) of the first n val images printed next to
// their first reference caption. With `score`: every val image (up to limit, 0 all)
// is captioned and, on the shapes dataset, scored by shapes_score against its first
// reference, then again with every caption moved to the next image (the chance level):
// prints both and returns the fraction of objects named (-1 when not measured).
double caption_report(Model *m, int n, long limit, int score, int workers);
// `virtex plot RUN_DIR`: RUN_DIR/curves.svg from RUN_DIR/metrics.jsonl.
int plot_run(const char *run_dir, char *err, size_t errlen);
// ---- end 9

// ----------------------------------------------------------------------------
// 10. evaluation (eval.c)

// A model for evaluation: built from the config stored in checkpoint `ckpt` (or from
// config_path when it is given), then the KEY VALUE overrides; its weights loaded from
// ckpt, or, with random_weights, initialised from RANDOM_SEED as for training (the
// paper's "random init" baseline; ckpt may then be NULL). Returns 0, or -1 with one
// line in err.
int model_from_checkpoint(Model *m, const char *ckpt, const char *config_path,
                          int noverrides, char **overrides, int random_weights,
                          char *err, size_t errlen);

// ---- 10a. captions: decoding, metrics (eval.c)
//
// Decoding follows the original (virtex/utils/beam_search.py v1.2+, nucleus_sampling.py,
// models/captioning.py): each step reruns the textual head on the whole partial caption
// and keeps the last position's logits.
//   beam     log_softmax; the row's previous token forced to -10000 (not at the first
//            step); a beam that ended with [EOS] can only add [EOS] at no cost; the top
//            `per_node` tokens of each beam, then the top `beam` of those beam*per_node
//            candidates by summed log-prob; the first step takes the top `beam` tokens
//            of [SOS]'s distribution; at most max_steps tokens; stop when every beam
//            ended; the best beam is returned. As the original, the partial captions
//            after the first step do NOT start with [SOS] (the first step sees [SOS],
//            step t sees w1..wt) unless keep_sos is set (then step t sees [SOS] w1..wt,
//            the inputs the model was trained on). Greedy = beam 1. Ties: the lower index first
//            (a token id, or a candidate's beam-major position).
//   nucleus  the partial caption starts with [SOS]; the logits sorted descending, the
//            smallest prefix whose softmax sum exceeds p is kept (the first token always),
//            the rest and the previous token set to -1e12; one token sampled from the
//            softmax; a caption that ended keeps adding [EOS].
// The step callback writes the logits (n,V) of the next token of n partial captions
// tokens (n,T) into out.
typedef void (*DecodeStepFn)(void *ctx, const int *tokens, int n, int T, float *out);
// Beam search over B start rows ([SOS] each): seqs (B, max_steps) the best beam's
// tokens (those after its [EOS] are [EOS]), *steps the length of every row's sequence
// (the same for all rows, <= max_steps), logprob (B) its summed log-prob (may be NULL).
void beam_search(DecodeStepFn step, void *ctx, int B, int V, int sos, int eos, int keep_sos,
                 int beam, int per_node, int max_steps, int *seqs, int *steps, float *logprob);
// Nucleus sampling of B rows; row b draws from an Rng seeded with seed + b. seqs
// (B, max_steps) without the [SOS], *steps as for beam_search.
void nucleus_sample(DecodeStepFn step, void *ctx, int B, int V, int sos, int eos, float p,
                    int max_steps, uint64_t seed, int *seqs, int *steps);

// Decode captions of B images (B,3,S,S) normalised, in eval mode, the visual features
// computed once per image and the memory repeated for each beam. method greedy / beam
// (beam_size, 2 candidates per beam as the original) / nucleus (p, row b seeded with
// seed + b). Tokens out: (B, max_steps) ids without [SOS] and [EOS] (cut at the first
// [EOS]), len[b] of them. max_steps (>= 1) is capped at MAX_CAPTION_LENGTH (the positions).
// Forward direction only.
typedef enum DecodeMethod { DECODE_GREEDY, DECODE_BEAM, DECODE_NUCLEUS } DecodeMethod;
typedef struct DecodeOptions {
    DecodeMethod method;
    int beam_size;              // beam: 5
    float nucleus_p;            // nucleus: 0.9
    int max_steps;              // 30
    uint64_t seed;              // nucleus sampling
    int keep_sos;               // beam/greedy: [SOS] stays in front of the partial caption
                                // (the original drops it after the first step)
} DecodeOptions;
void decode_captions(Model *m, const float *images, int B, int S, const DecodeOptions *o,
                     int *tokens, int *len);
// The decoding options of the config (MODEL.DECODER.*).
DecodeOptions decode_options_from_config(const Config *cfg);
// Where the model looked for each word of a decoded caption: the cross-attention of the
// last decoder layer, averaged over heads, at the step that produced each of the len
// tokens, replaying the inputs the method fed it. image (3,S,S) normalised; maps
// (len, h*w) over the visual grid (h, w) of layer4.
void caption_attention(Model *m, const float *image, int S, const DecodeOptions *o,
                       const int *tokens, int len, float *maps, int *h, int *w);

// The COCO caption evaluation (tylin/coco-caption, pycocoevalcap), on plain text.
// PTB tokenisation, as the Stanford PTBTokenizer (-lowerCase) + the punctuation removal
// of ptbtokenizer.py do it to captions: ASCII lower-cased; split at whitespace and at
// " ( ) [ ] { } , ; : ? ! (a comma or colon between two digits stays, as in 1,000 or
// 10:30); leading and trailing ' and ` removed; a trailing "..." (or more dots)
// removed, a single trailing "." removed unless the word has another "." (u.s., 3.5
// and a.m. stay whole); clitics split off as their own tokens: n't 's 're 've 'd 'll
// 'm ("don't" -> do n't, "man's" -> man 's); words of only "-" or "." removed.
// Returns the tokens joined by single spaces (malloc'd). Not modelled: Stanford's
// abbreviation list, "cannot"/"gonna" splits, Unicode quotes.
char *ptb_tokenize(const char *text);
// CIDEr-D (cider_scorer.py): n-grams 1..4 of the tokenised captions; document frequency
// df = number of images whose references contain the n-gram; vectors tf * (log(N) -
// log(max(1, df))) per n (N images); per reference sim_n = sum over the candidate's
// n-grams of min(c, r) * r / (|c| |r|) (0 when a norm is 0) * exp(-(lc - lr)^2 / 72)
// with lc, lr the BIGRAM counts (as the scorer does); image score = 10 * mean over n
// and over references; CIDEr-D = mean over images.
// BLEU (bleu_scorer.py, option "closest"): per image clipped n-gram matches against the
// max count in any reference, guesses max(0, len-n+1), reference length the closest to
// the candidate's (ties: the shorter); corpus BLEU-n = (prod_k (correct_k + 1e-15) /
// (guess_k + 1e-9))^(1/n) times exp(1 - 1/ratio) when ratio = (testlen + 1e-15) /
// (reflen + 1e-9) < 1.
typedef struct CaptionScores {
    double cider;               // CIDEr-D as coco-caption prints it (the paper: x100)
    double bleu[4];             // BLEU-1..4
    int images;
} CaptionScores;
// hyps[i] the candidate of image i, refs[i] its nrefs[i] >= 1 references (raw text:
// tokenised here). cider_per_image (n) may be NULL.
void caption_scores(const char *const *hyps, const char *const *const *refs,
                    const int *nrefs, int n, CaptionScores *out, double *cider_per_image);
// Images as the model sees them in evaluation: image_load + DATA.IMAGE_TRANSFORM_VAL at
// DATA.IMAGE_CROP_SIZE S, into out (n,3,S,S), in parallel. 0, or -1 with the first error.
int load_images_val(const Config *cfg, const char *const *paths, int n, float *out,
                    char *err, size_t errlen);
// The picture of `virtex caption --attention`: the image (3,S,S) normalised, then per
// word a tile of the image under its attention map (h, w) (bilinear, scaled to its max,
// a blue-to-red heat map blended 50/50), the word written under it (built-in 5x7 font,
// capitals). maps (nwords, h*w). PNG, written atomically. 0, or -1 with err.
int attention_png(const char *path, const float *image, int S, const char *const *words,
                  int nwords, const float *maps, int h, int w, char *err, size_t errlen);
// COCO results JSON: [{"image_id": N, "caption": "..."}, ...], written atomically; the
// reader checks each entry's fields (errors name the file and the entry).
int write_coco_results(const char *path, const int64_t *ids, const char *const *captions,
                       int n, char *err, size_t errlen);
int read_coco_results(const char *path, int64_t **ids, char ***captions, int *n, char *err,
                      size_t errlen);

// `virtex caption` and `virtex eval captions`. The model comes from model_from_checkpoint;
// decoding from MODEL.DECODER.* unless beam / nucleus are given.
typedef struct CaptionRun {
    const char *checkpoint, *config;   // model_from_checkpoint's arguments
    int noverrides;
    char **overrides;
    int random_weights;
    int beam;                          // > 0: beam search of this width (1: greedy)
    float nucleus;                     // > 0: nucleus sampling with this p
    int keep_sos;                      // DecodeOptions.keep_sos
    int batch;                         // images per forward pass (0: 16)
    const char *const *inputs;         // caption: image files and directories
    int ninputs;
    const char *out;                   // COCO results JSON to write (NULL: none)
    const char *attention;             // caption: directory for the pictures (NULL: none)
    const char *data, *split;          // eval: COCO root, split (NULL: "val")
    const char *predictions;           // eval: score this results file instead of decoding
    long limit;                        // eval: the first N images only (0: all)
} CaptionRun;
// Prints "file<TAB>caption" per image; with out, the results JSON (image_id = the last
// number in the file name, else the image's index).
int caption_run(const CaptionRun *r, char *err, size_t errlen);
// Decodes the split (or reads predictions) and prints CIDEr-D and BLEU-1..4 over the
// images captioned (coco-caption scores the images of the results file).
int eval_captions_run(const CaptionRun *r, char *err, size_t errlen);
// ---- end 10a

// ---- 10b. transfer: features, VOC07 SVMs, linear probe (eval.c)
// The frozen ResNet (eval mode: BatchNorm running stats, no tape) as a feature
// extractor, and the paper's two probes of it (SPEC "Downstream evaluation protocols").
//
// Image sizes: the original evaluates at resize R = 256, crop S = 224. Here S is the
// model config's DATA.IMAGE_CROP_SIZE and R = S*256/224 (integer division), so a
// 224-px model gets exactly 256/224 and the 64-px shapes models 73/64.
void downstream_sizes(const Config *cfg, int *S, int *R);

// Global-average-pooled layer4 features (n, C = m->cnn.out_channels) of image files:
// each decoded and transformed by tp (image k's Rng seeded from (seed, k)), batches of
// batch_size images decoded on every core, then one CNN forward per batch.
// l2_normalize: each row / its L2 norm (VOC07). progress: label of a progress line on
// stderr (images/s, ETA), NULL for none. Returns 0, or -1 with "PATH: reason" in err
// at the first image that fails.
typedef struct FeatureOptions {
    const TransformPipeline *tp;
    uint64_t seed;
    int batch_size;                 // 0: 64
    int l2_normalize;
    const char *progress;
} FeatureOptions;
int features_extract(Model *m, const char *const *paths, long n, const FeatureOptions *o,
                     float *out, char *err, size_t errlen);
// The images under dir (recursively; .jpg .jpeg .png .bmp .gif .tga .ppm .pgm .pnm .psd
// .hdr), as paths relative to dir, each directory in byte order of names; NULL with a
// message when there are none or dir cannot be read. free_strings releases the list.
char **list_images(const char *dir, long *n, char *err, size_t errlen);
void free_strings(char **s, long n);
// A (rows, cols) float32 array as a NumPy .npy v1.0 file, byte for byte what numpy
// 1.24's np.save writes (header padded to 64 bytes), written atomically.
int npy_write(const char *path, const float *x, long rows, long cols, char *err, size_t errlen);

// sklearn.metrics.average_precision_score: sum over the distinct scores, highest first,
// of (R_k - R_k-1) * P_k. No positives: 0 (as sklearn 1.2).
double average_precision(const double *scores, const int *positive, long n);
// sklearn's StratifiedKFold(k) without shuffling on binary labels y: fold[i] in 0..k-1.
void stratified_folds(const int *y, long n, int k, int *fold);
// A linear SVM as liblinear's L2R_L2LOSS_SVC_DUAL (sklearn LinearSVC, dual): minimise
// 0.5 |w|^2 + sum_i C_i max(0, 1 - y_i w.x_i)^2, C_i = C * pos_weight for y_i = +1, by
// dual coordinate descent with shrinking (random order each pass, stop when the
// projected-gradient spread <= tol or after max_iter passes). x_i gets an appended
// constant 1 (intercept_scaling 1; its weight, the bias, is regularised). X (.., d)
// rows `rows[i]` (NULL: 0..n-1), y[i] = +1 / -1. w: d + 1 (bias last). Returns passes.
typedef struct SvmOptions { double C, pos_weight, tol; long max_iter; uint64_t seed; } SvmOptions;
long svm_train(const float *X, int d, const long *rows, long n, const int *y, const SvmOptions *o,
               double *w);
double svm_decision(const double *w, const float *x, int d);   // w.x + bias

// VOC07: ROOT/ImageSets/Main/CLASS_{split}.txt ("NAME LABEL", 1 present, -1 absent,
// 0 difficult), classes in file name order (CLASS = file name less "_split.txt"),
// images in order of first appearance, images ROOT/JPEGImages/NAME.jpg. labels (n,
// nclasses) keep VOC's values; an image a class file does not list is 0 (ignored, as
// the original).
typedef struct VocSplit { char **classes; int nclasses; char **images; long n; signed char *labels; } VocSplit;
int voc07_read(VocSplit *v, const char *root, const char *split, char *err, size_t errlen);
void voc07_free(VocSplit *v);
// One class as the original's train_test_single_svm: trainval labels 1 -> +1, else -1
// (difficult trains as negative); for C in VOC07_COSTS, mean AP of 3 stratified folds
// (NaN when a fold trains on one label); the first C with the highest mean > 0 (none:
// the smallest) retrained on all trainval; AP on test without the difficult images.
// ap is NaN when trainval holds one label only (no SVM can be trained).
extern const double VOC07_COSTS[4];        // 0.01 0.1 1 10; SVM: pos_weight 2, tol 1e-4, 2000 passes
typedef struct VocClassResult { double cv_ap[4], ap; int cost_index; long npos_train, npos_test; } VocClassResult;
void voc07_class_svm(const float *Xtr, const signed char *ltr, long ntr, const float *Xte,
                     const signed char *lte, long nte, int d, VocClassResult *r);

// ImageNet layout: DIR/CLASS/... images (classes = sub-folders in name order, label =
// their index, images as list_images per class), as torchvision's ImageFolder.
typedef struct ImageFolder { char **classes; int nclasses; char **paths; int *labels; long n; } ImageFolder;
int image_folder_read(ImageFolder *f, const char *dir, char *err, size_t errlen);
void image_folder_free(ImageFolder *f);
// The linear probe: nn.Linear(C, K), weight N(0, 0.01), bias 0; a step is mean
// cross-entropy over the batch, then torch.optim.SGD with momentum (buf = m*buf + g,
// p -= lr*buf; no dampening, no weight decay). Returns the batch loss.
typedef struct LinearProbe { int C, K; float *w, *b, *mw, *mb; } LinearProbe;
void linear_probe_init(LinearProbe *p, int C, int K, uint64_t seed);
void linear_probe_free(LinearProbe *p);
void linear_probe_forward(const LinearProbe *p, const float *x, int B, float *logits);   // (B,K)
float linear_probe_step(LinearProbe *p, const float *x, const int *y, int B, float lr, float momentum);
// The original's cosine schedule without warmup: base * cos(pi/2 * step/total)^2.
double cosine_lr(double base, long step, long total);
// Adds to *top1 / *top5 the rows whose label is among the 1 / 5 highest logits.
void topk_correct(const float *logits, const int *y, int B, int K, long *top1, long *top5);

// The evaluations behind `virtex eval voc07` and `virtex eval linear` (results to out,
// progress to stderr; -1 with one line in err on bad data).
typedef struct TransferOptions {
    int batch_size;                 // images per CNN forward (feature extraction)
    int random_weights;             // only labels the output
    int quiet;                      // no header and progress lines
    int epochs, probe_batch;        // linear: 100 and 256 in the paper
    double lr;                      // linear: 0.3
    int precomputed;                // linear: train on center-crop features computed once
    uint64_t seed;                  // linear: init and shuffling
    long iterations;                // linear: > 0 sets the epochs to about iterations *
                                    // probe_batch / train images (OPTIM.NUM_ITERATIONS of
                                    // configs/downstream/imagenet_clf.yaml: 500500 = 100)
} TransferOptions;
// VOC07 SVM probe: L2-normalised center-crop features, voc07_class_svm for every class
// (OpenMP over classes); prints per-class AP and mAP (percent; classes without an SVM
// left out), *map the mAP.
int eval_voc07(Model *m, const char *root, const TransferOptions *o, double *map, FILE *out,
               char *err, size_t errlen);
// ImageNet linear probe on ROOT/{train,val}: epochs x ceil(n/B) SGD steps (each epoch a
// fresh shuffle, the last batch short), LR cosine over all steps; train features of
// random resized crops (8-100%) + flips computed per step (or, precomputed, center-crop
// features once); acc = {top-1, top-5} on val center crops, in percent.
int eval_linear(Model *m, const char *root, const TransferOptions *o, double acc[2], FILE *out,
                char *err, size_t errlen);
// ---- end 10b

// ----------------------------------------------------------------------------
// 11. PyTorch interop (pytorch.c): torch.save files in and out
//
// Reading: the zip format of torch.save (PyTorch >= 1.6; stored or deflated entries,
// zip64) and a pickle machine for what it writes: protocol 2 opcodes (plus the harmless
// ones of 3-5: FRAME, MEMOIZE, SHORT_BINUNICODE, STACK_GLOBAL, BINBYTES), and only the
// globals collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter
// and torch.<T>Storage. Anything else is refused, naming the opcode or the global;
// nothing is executed. Every size, offset and stride is checked against the bytes that
// back it (a view must lie inside its storage, which must fit its zip entry), entries'
// CRC-32 are verified, and no allocation exceeds what the file can back.
// The state dict is the top-level dict's "model" (VirTex checkpoints) or "state_dict"
// entry when it is a dict, else the top level itself (a plain state_dict, e.g. the
// torch.hub ResNet-50); a "module." prefix is stripped. Its tensors (float32, float16,
// bfloat16, float64 -> float32 as torch's .float() rounds; int64 kept) are gathered
// through their strides and storage offsets into contiguous NamedTensors; tf->config is "".
int pth_read_state(TensorFile *tf, const char *path, char *err, size_t errlen);
int pth_read_state_memory(TensorFile *tf, const void *data, size_t n, const char *name,
                          char *err, size_t errlen);
// Load a state dict onto m (built, and initialised where --partial lets tensors be
// absent). Its names are VirTex's (visual.*, textual.*, backward_textual.*), a
// torchvision ResNet's (conv1.*, layer1.* -> visual.cnn.*; fc.* dropped) or Detectron2's
// (stem.*, res2..5.*, renamed back). The architecture the shapes describe (ResNet width
// and blocks; textual L, H, F, vocabulary, positions) is compared with the config first;
// the number of heads leaves no trace in the shapes. Then every name: missing ones
// (except under the prefixes of `partial`, "a.|b." or "a.,b."; the second name of a
// shared tensor may be absent), unexpected ones and shape/dtype mismatches are listed
// and nothing is loaded. Two names of one shared tensor must hold the same values.
// A one-line summary goes to report (may be NULL). 0, or -1 with one line in err.
int pth_import_state(Model *m, const TensorFile *tf, const char *partial, FILE *report,
                     char *err, size_t errlen);
// Writing, as torch.save (protocol 2, stored 64-byte aligned entries under "archive/",
// one storage per distinct tensor, so shared names share it), atomically:
//   PTH_TORCHVISION  OrderedDict of visual.cnn.* without the prefix: a torchvision
//                    ResNet's state_dict without fc (load it into a model whose fc is
//                    nn.Identity(), as VirTex's backbone, or with strict=False)
//   PTH_VIRTEX       {"model": the full state_dict, "iteration": N}, the original's layout
//   PTH_DETECTRON2   {"model": the backbone renamed as SPEC.md says, "__author__":
//                    "virtex.c", "matching_heuristics": True}: the .pth form Detectron2's
//                    DetectionCheckpointer loads with its name-matching heuristics (not the
//                    .pkl of numpy arrays)
typedef enum PthFormat { PTH_TORCHVISION, PTH_VIRTEX, PTH_DETECTRON2 } PthFormat;
int pth_write(const char *path, const NamedTensor *t, int n, PthFormat fmt, long iteration,
              char *err, size_t errlen);
int pth_export(Model *m, const char *path, PthFormat fmt, long iteration, char *err,
               size_t errlen);
// ---- end 11

#ifdef __cplusplus
}
#endif
#endif
