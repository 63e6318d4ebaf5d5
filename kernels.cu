// kernels.cu — the CUDA backend: twins of the CPU kernels in ops.c, same names and
// arguments, in namespace cuda, collected in the table `cuda_backend` (model.h).
//
// State of this file: device memory management and the elementwise kernels (relu,
// add, gelu, dropout, row mask). The heavy kernels (GEMM, convolution, batch norm,
// layer norm, attention) are the CUDA backend issue's work; until they land their
// entries are NULL and the op layer stops with "the cuda backend has no kernel for X".
// Every kernel here must agree with its CPU twin, which is the reference.
#include <cuda_runtime.h>
#include <math.h>
#include "model.h"

#define CUDA_CHECK(call)                                                              \
    do {                                                                              \
        cudaError_t e_ = (call);                                                      \
        if (e_ != cudaSuccess) fatal("CUDA error %s at %s:%d: %s", cudaGetErrorName(e_), \
                                     __FILE__, __LINE__, cudaGetErrorString(e_));     \
    } while (0)

namespace cuda {

static const int THREADS = 256;
static unsigned blocks_for(long n) { return (unsigned)((n + THREADS - 1) / THREADS); }

// ---- memory -----------------------------------------------------------------

void *alloc(size_t bytes) {
    void *p = NULL;
    CUDA_CHECK(cudaMalloc(&p, bytes ? bytes : 64));
    return p;
}
void release(void *p) { CUDA_CHECK(cudaFree(p)); }
void to_host(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void from_host(void *dst, const void *src, size_t bytes) {
    CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void zero(void *p, size_t bytes) { CUDA_CHECK(cudaMemset(p, 0, bytes)); }

// ---- relu -------------------------------------------------------------------

__global__ void relu_forward_kernel(float *out, const float *x, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
__global__ void relu_backward_kernel(float *dx, const float *dout, const float *out, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n && out[i] > 0.0f) dx[i] += dout[i];
}
void relu_forward(float *out, const float *x, long n) {
    relu_forward_kernel<<<blocks_for(n), THREADS>>>(out, x, n);
}
void relu_backward(float *dx, const float *dout, const float *out, long n) {
    if (dx) relu_backward_kernel<<<blocks_for(n), THREADS>>>(dx, dout, out, n);
}

// ---- residual add -----------------------------------------------------------

__global__ void add_forward_kernel(float *out, const float *a, const float *b, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = a[i] + b[i];
}
__global__ void accumulate_kernel(float *dst, const float *src, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) dst[i] += src[i];
}
void add_forward(float *out, const float *a, const float *b, long n) {
    add_forward_kernel<<<blocks_for(n), THREADS>>>(out, a, b, n);
}
void add_backward(float *da, float *db, const float *dout, long n) {
    if (da) accumulate_kernel<<<blocks_for(n), THREADS>>>(da, dout, n);
    if (db) accumulate_kernel<<<blocks_for(n), THREADS>>>(db, dout, n);
}

// ---- gelu (exact erf form) --------------------------------------------------

__global__ void gelu_forward_kernel(float *out, const float *x, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}
__global__ void gelu_backward_kernel(float *dx, const float *dout, const float *x, long n) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
        float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
        dx[i] += dout[i] * (cdf + v * pdf);
    }
}
void gelu_forward(float *out, const float *x, long n) {
    gelu_forward_kernel<<<blocks_for(n), THREADS>>>(out, x, n);
}
void gelu_backward(float *dx, const float *dout, const float *x, long n) {
    if (dx) gelu_backward_kernel<<<blocks_for(n), THREADS>>>(dx, dout, x, n);
}

// ---- dropout (mask from hash_uniform, identical to the CPU's) ----------------

__global__ void dropout_kernel(float *out, const float *x, long n, float p, uint64_t seed,
                               int accumulate) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) {
        float v = hash_uniform(seed, (uint64_t)i) >= p ? x[i] / (1.0f - p) : 0.0f;
        if (accumulate) out[i] += v; else out[i] = v;
    }
}
void dropout_forward(float *out, const float *x, long n, float p, uint64_t seed) {
    dropout_kernel<<<blocks_for(n), THREADS>>>(out, x, n, p, seed, 0);
}
void dropout_backward(float *dx, const float *dout, long n, float p, uint64_t seed) {
    if (dx) dropout_kernel<<<blocks_for(n), THREADS>>>(dx, dout, n, p, seed, 1);
}

// ---- row mask (padding positions to zero) -----------------------------------

__global__ void rowmask_kernel(float *out, const float *x, const int *ids, int N, int D,
                               int accumulate) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < (long)N * D) {
        float v = ids[i / D] != 0 ? x[i] : 0.0f;
        if (accumulate) out[i] += v; else out[i] = v;
    }
}
void rowmask_forward(float *out, const float *x, const int *ids, int N, int D) {
    rowmask_kernel<<<blocks_for((long)N * D), THREADS>>>(out, x, ids, N, D, 0);
}
void rowmask_backward(float *dx, const float *dout, const int *ids, int N, int D) {
    if (dx) rowmask_kernel<<<blocks_for((long)N * D), THREADS>>>(dx, dout, ids, N, D, 1);
}

}  // namespace cuda

// Designated initialisers (C++20) must follow the field order of Backend; the fields
// left out are NULL: kernels still to be written.
static const Backend cuda_table = {
    .name = "cuda",
    .alloc = cuda::alloc, .release = cuda::release,
    .to_host = cuda::to_host, .from_host = cuda::from_host, .zero = cuda::zero,
    .relu_forward = cuda::relu_forward, .relu_backward = cuda::relu_backward,
    .add_forward = cuda::add_forward, .add_backward = cuda::add_backward,
    .gelu_forward = cuda::gelu_forward, .gelu_backward = cuda::gelu_backward,
    .dropout_forward = cuda::dropout_forward, .dropout_backward = cuda::dropout_backward,
    .rowmask_forward = cuda::rowmask_forward, .rowmask_backward = cuda::rowmask_backward,
};

extern "C" const Backend *const cuda_backend = &cuda_table;
