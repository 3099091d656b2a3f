// Fused gradient penalty, CUDA kernels (math in fastt2i/ops/gradient_penalty.py).
// Forward: one launch reads every gradient of a group once (block = one chunk of one sample of one
// tensor) and writes a partial sum of squares; one single-block launch sums the partials in a fixed
// order (deterministic), writes the per-sample squared norms and the loss.  Backward: one launch
// scales every gradient by its sample's coefficient, read from the device (no host sync).
#include <algorithm>
#include <type_traits>

#include "common.cuh"

namespace fastt2i {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kPerThread = 16;
constexpr int64_t kChunk = kThreads * kPerThread;  // elements of one sample per block

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ scalar_t cast_out(acc_t v) {
  if constexpr (std::is_same<scalar_t, double>::value) {
    return static_cast<double>(v);
  } else {
    return from_acc<scalar_t>(static_cast<float>(v));
  }
}

template <typename acc_t>
__device__ __forceinline__ acc_t block_sum(acc_t v, acc_t* shared) {  // result valid in thread 0
  v = warp_sum(v);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  acc_t total = 0;
  if (threadIdx.x == 0)
    for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
  return total;
}

__device__ __forceinline__ int tensor_of(const GradientPenaltyGroup& g, int64_t chunk) {
  int t = 0;
  while (t + 1 < g.count && chunk >= g.chunk_begin[t + 1]) ++t;
  return t;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t chunk_sumsq(const void* ptr, int64_t begin, int64_t end) {
  const scalar_t* g = static_cast<const scalar_t*>(ptr);
  acc_t vals[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {  // all loads in flight before the arithmetic
    const int64_t i = begin + j * kThreads + threadIdx.x;
    vals[j] = i < end ? static_cast<acc_t>(to_acc(g[i])) : acc_t(0);
  }
  acc_t s = 0;
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) s += vals[j] * vals[j];
  return s;
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void chunk_scale(const void* ptr, void* out_ptr, int64_t begin, int64_t end, acc_t c) {
  const scalar_t* g = static_cast<const scalar_t*>(ptr);
  scalar_t* out = static_cast<scalar_t*>(out_ptr);
  acc_t vals[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = begin + j * kThreads + threadIdx.x;
    vals[j] = i < end ? static_cast<acc_t>(to_acc(g[i])) : acc_t(0);
  }
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int64_t i = begin + j * kThreads + threadIdx.x;
    if (i < end) out[i] = cast_out<scalar_t, acc_t>(vals[j] * c);
  }
}

// The group's chunks of sample b are blocks b * chunks ... (b + 1) * chunks - 1 of a 1-D grid (a batch
// on gridDim.y would stop at 65535).
__host__ __device__ __forceinline__ int64_t group_chunks(const GradientPenaltyGroup& g) { return g.chunk_begin[g.count]; }

template <typename acc_t>
__global__ void partial_kernel(const GradientPenaltyGroup group, acc_t* __restrict__ partial, int64_t P) {
  __shared__ acc_t shared[kThreads / 32];
  const int64_t chunk = blockIdx.x % group_chunks(group), b = blockIdx.x / group_chunks(group);
  const int t = tensor_of(group, chunk);
  const int64_t N = group.per_sample[t];
  const int64_t begin = b * N + (chunk - group.chunk_begin[t]) * kChunk;
  const int64_t end = b * N + min(N, (chunk - group.chunk_begin[t] + 1) * kChunk);
  acc_t s = 0;
  switch (group.dtypes[t]) {
    case DType::Float32: s = chunk_sumsq<float, acc_t>(group.grads[t], begin, end); break;
    case DType::Float16: s = chunk_sumsq<__half, acc_t>(group.grads[t], begin, end); break;
    case DType::BFloat16: s = chunk_sumsq<__nv_bfloat16, acc_t>(group.grads[t], begin, end); break;
    case DType::Float64: s = chunk_sumsq<double, acc_t>(group.grads[t], begin, end); break;
  }
  s = block_sum(s, shared);
  if (threadIdx.x == 0) partial[b * P + group.column_offset + chunk] = s;
}

template <typename acc_t>
__device__ __forceinline__ acc_t pow_or_zero(acc_t s, acc_t e) {
  return s > acc_t(0) ? pow(s, e) : acc_t(0);
}

// One block: warp w sums the partials of samples w, w + 8, ...; thread 0 adds the per-warp
// totals in a fixed order.
template <typename acc_t>
__global__ void finalize_kernel(const acc_t* __restrict__ partial, int64_t B, int64_t P, acc_t k, acc_t half_p,
                                acc_t scale2, acc_t* __restrict__ sumsq, acc_t* __restrict__ loss) {
  __shared__ acc_t shared[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  acc_t warp_total = 0;
  for (int64_t b = warp; b < B; b += kThreads / 32) {
    acc_t s = 0;
    for (int64_t j = lane; j < P; j += 32) s += partial[b * P + j];
    s = warp_sum(s) * scale2;
    if (lane == 0) {
      sumsq[b] = s;
      warp_total += pow_or_zero(s, half_p);
    }
  }
  if (lane == 0) shared[warp] = warp_total;
  __syncthreads();
  if (threadIdx.x == 0) {
    acc_t total = 0;
    for (int w = 0; w < kThreads / 32; ++w) total += shared[w];
    *loss = k * total / static_cast<acc_t>(B);
  }
}

template <typename acc_t>
__global__ void backward_kernel(const GradientPenaltyGroup group, const acc_t* __restrict__ sumsq,
                                const acc_t* __restrict__ grad_loss, acc_t base, acc_t exponent) {
  const int64_t chunk = blockIdx.x % group_chunks(group), b = blockIdx.x / group_chunks(group);
  const int t = tensor_of(group, chunk);
  const int64_t N = group.per_sample[t];
  const int64_t begin = b * N + (chunk - group.chunk_begin[t]) * kChunk;
  const int64_t end = b * N + min(N, (chunk - group.chunk_begin[t] + 1) * kChunk);
  const acc_t s = sumsq[b];
  const acc_t c = s > acc_t(0) ? *grad_loss * base * pow(s, exponent) : acc_t(0);
  switch (group.dtypes[t]) {
    case DType::Float32: chunk_scale<float, acc_t>(group.grads[t], group.outs[t], begin, end, c); break;
    case DType::Float16: chunk_scale<__half, acc_t>(group.grads[t], group.outs[t], begin, end, c); break;
    case DType::BFloat16: chunk_scale<__nv_bfloat16, acc_t>(group.grads[t], group.outs[t], begin, end, c); break;
    case DType::Float64: chunk_scale<double, acc_t>(group.grads[t], group.outs[t], begin, end, c); break;
  }
}

}  // namespace

int64_t gradient_penalty_chunks(int64_t per_sample) { return ceil_div(per_sample, kChunk); }

LaunchShape gradient_penalty_shape(int64_t chunks, int64_t B) {
  return LaunchShape{{chunks * B, 1, 1}, {kThreads, 1, 1}, 0};
}

cudaError_t gradient_penalty_partial(const GradientPenaltyGroup& group, int64_t B, void* partial, int64_t P,
                                     bool acc_double, cudaStream_t stream) {
  const int64_t chunks = group_chunks(group);
  if (chunks == 0 || B == 0) return cudaSuccess;
  const LaunchShape shape = gradient_penalty_shape(chunks, B);
  if (acc_double)
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, partial_kernel<double>)(
        group, static_cast<double*>(partial), P);
  else
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, partial_kernel<float>)(
        group, static_cast<float*>(partial), P);
  return cudaGetLastError();
}

cudaError_t gradient_penalty_finalize(const void* partial, int64_t B, int64_t P, double k, double p, double scale,
                                      void* sumsq, void* loss, bool acc_double, cudaStream_t stream) {
  if (acc_double)
    FASTT2I_LAUNCH(1, kThreads, 0, stream, finalize_kernel<double>)(
        static_cast<const double*>(partial), B, P, k, p / 2, scale * scale, static_cast<double*>(sumsq),
        static_cast<double*>(loss));
  else
    FASTT2I_LAUNCH(1, kThreads, 0, stream, finalize_kernel<float>)(
        static_cast<const float*>(partial), B, P, static_cast<float>(k), static_cast<float>(p / 2),
        static_cast<float>(scale * scale), static_cast<float*>(sumsq), static_cast<float*>(loss));
  return cudaGetLastError();
}

cudaError_t gradient_penalty_backward(const GradientPenaltyGroup& group, int64_t B, const void* sumsq,
                                      const void* grad_loss, double k, double p, double scale, bool acc_double,
                                      cudaStream_t stream) {
  const int64_t chunks = group_chunks(group);
  if (chunks == 0 || B == 0) return cudaSuccess;
  const LaunchShape shape = gradient_penalty_shape(chunks, B);
  const double base = k * p / static_cast<double>(B) * scale * scale;
  if (acc_double)
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_kernel<double>)(
        group, static_cast<const double*>(sumsq), static_cast<const double*>(grad_loss), base, p / 2 - 1);
  else
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_kernel<float>)(
        group, static_cast<const float*>(sumsq), static_cast<const float*>(grad_loss), static_cast<float>(base),
        static_cast<float>(p / 2 - 1));
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace fastt2i
