// DF-Block affine fusion, CUDA kernels: y = lrelu(g[K-1] * ... lrelu(g[0] * x + b[0]) ... + b[K-1]).
// Forward: one thread per element (grid-stride).  Backward: recompute the K layer inputs in
// registers, produce dx, and reduce dgamma/dbeta per (sample, channel) inside the same pass
// into per-split partial sums.
#include <algorithm>

#include "common.cuh"

namespace fastt2i {
namespace cuda {
namespace {

constexpr int kMaxLayers = 8;

template <typename acc_t>
__device__ __forceinline__ acc_t lrelu(acc_t v, acc_t slope) { return v > acc_t(0) ? v : v * slope; }

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ y,
                               const acc_t* __restrict__ g, const acc_t* __restrict__ b, int K, int64_t B,
                               int64_t C, int64_t S, bool channels_last, acc_t slope) {
  const int64_t n = B * C * S, BC = B * C;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t c = channels_last ? i % C : (i / S) % C;
    const int64_t bc = (i / (C * S)) * C + c;
    acc_t v = to_acc(x[i]);
#pragma unroll
    for (int k = 0; k < kMaxLayers; ++k) {
      if (k < K) v = lrelu(__ldg(g + k * BC + bc) * v + __ldg(b + k * BC + bc), slope);
    }
    y[i] = from_acc<scalar_t>(v);
  }
}

// One element's backward: recompute the layer inputs a[k] and pre-activations z[k], then walk back.
template <typename acc_t>
__device__ __forceinline__ acc_t backward_element(acc_t xv, acc_t d, const acc_t* g, const acc_t* b, int64_t BC,
                                                  int64_t bc, int K, acc_t slope, acc_t* sum_g, acc_t* sum_b) {
  acc_t a[kMaxLayers], z[kMaxLayers];
  acc_t v = xv;
#pragma unroll
  for (int k = 0; k < kMaxLayers; ++k) {
    if (k < K) {
      a[k] = v;
      z[k] = __ldg(g + k * BC + bc) * v + __ldg(b + k * BC + bc);
      v = lrelu(z[k], slope);
    }
  }
#pragma unroll
  for (int k = kMaxLayers - 1; k >= 0; --k) {
    if (k < K) {
      const acc_t dz = z[k] > acc_t(0) ? d : d * slope;
      sum_g[k] += dz * a[k];
      sum_b[k] += dz;
      d = dz * __ldg(g + k * BC + bc);
    }
  }
  return d;
}

// NCHW: one warp per (row = b*C + c, split); grid (row groups of rows_per_block warps, splits).  Rows go
// on gridDim.x (up to 2^31 - 1 blocks; beyond, each warp loops over rows a grid apart).
template <typename scalar_t, typename acc_t>
__global__ void backward_rows_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                     const acc_t* __restrict__ g, const acc_t* __restrict__ b,
                                     scalar_t* __restrict__ dx, acc_t* __restrict__ pg, acc_t* __restrict__ pb,
                                     int K, int64_t BC, int64_t S, int64_t chunk, acc_t slope) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t rows_per_block = blockDim.x / 32;
  const int64_t split = blockIdx.y;
  const int64_t s_begin = split * chunk, s_end = min(S, s_begin + chunk);
  for (int64_t row = blockIdx.x * rows_per_block + warp; row < BC; row += gridDim.x * rows_per_block) {
    acc_t sum_g[kMaxLayers], sum_b[kMaxLayers];
#pragma unroll
    for (int k = 0; k < kMaxLayers; ++k) sum_g[k] = sum_b[k] = acc_t(0);
    for (int64_t s = s_begin + lane; s < s_end; s += 32) {
      const int64_t i = row * S + s;
      dx[i] = from_acc<scalar_t>(
          backward_element(to_acc(x[i]), to_acc(dy[i]), g, b, BC, row, K, slope, sum_g, sum_b));
    }
#pragma unroll
    for (int k = 0; k < kMaxLayers; ++k) {
      if (k < K) {
        const acc_t tg = warp_sum(sum_g[k]), tb = warp_sum(sum_b[k]);
        if (lane == 0) {
          pg[(split * K + k) * BC + row] = tg;
          pb[(split * K + k) * BC + row] = tb;
        }
      }
    }
  }
}

// NHWC: block (32 channels x 8 position lanes) per (sample, channel group) on gridDim.x and split on
// gridDim.y.
template <typename scalar_t, typename acc_t>
__global__ void backward_positions_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ x,
                                          const acc_t* __restrict__ g, const acc_t* __restrict__ b,
                                          scalar_t* __restrict__ dx, acc_t* __restrict__ pg,
                                          acc_t* __restrict__ pb, int K, int64_t B, int64_t C, int64_t S,
                                          int64_t chunk, acc_t slope) {
  __shared__ acc_t red_g[kMaxLayers][8][32];
  __shared__ acc_t red_b[kMaxLayers][8][32];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t groups = (C + 31) / 32;
  const int64_t split = blockIdx.y, c = (blockIdx.x % groups) * 32 + tx, bi = blockIdx.x / groups, BC = B * C;
  const int64_t s_begin = split * chunk, s_end = min(S, s_begin + chunk);
  acc_t sum_g[kMaxLayers], sum_b[kMaxLayers];
#pragma unroll
  for (int k = 0; k < kMaxLayers; ++k) sum_g[k] = sum_b[k] = acc_t(0);
  if (c < C) {
    for (int64_t s = s_begin + ty; s < s_end; s += 8) {
      const int64_t i = (bi * S + s) * C + c;
      dx[i] = from_acc<scalar_t>(
          backward_element(to_acc(x[i]), to_acc(dy[i]), g, b, BC, bi * C + c, K, slope, sum_g, sum_b));
    }
  }
#pragma unroll
  for (int k = 0; k < kMaxLayers; ++k) {
    if (k < K) { red_g[k][ty][tx] = sum_g[k]; red_b[k][ty][tx] = sum_b[k]; }
  }
  __syncthreads();
  if (ty == 0 && c < C) {
    for (int k = 0; k < K; ++k) {
      acc_t tg = 0, tb = 0;
#pragma unroll
      for (int j = 0; j < 8; ++j) { tg += red_g[k][j][tx]; tb += red_b[k][j][tx]; }
      pg[(split * K + k) * BC + bi * C + c] = tg;
      pb[(split * K + k) * BC + bi * C + c] = tb;
    }
  }
}

constexpr int kRowsPerBlock = 8;  // warps per block in the NCHW backward
constexpr int kForwardThreads = 256;

}  // namespace

LaunchShape df_affine_forward_shape(int64_t B, int64_t C, int64_t S) {
  const int64_t blocks = std::min<int64_t>(ceil_div(B * C * S, kForwardThreads), 65535LL * 8);  // grid-stride
  return LaunchShape{{blocks, 1, 1}, {kForwardThreads, 1, 1}, 0};
}

LaunchShape df_affine_backward_shape(int64_t splits, int64_t B, int64_t C, bool channels_last) {
  if (channels_last) return LaunchShape{{B * ceil_div(C, 32), splits, 1}, {32, 8, 1}, 0};
  return LaunchShape{{std::min(ceil_div(B * C, kRowsPerBlock), kMaxGridX), splits, 1}, {32 * kRowsPerBlock, 1, 1}, 0};
}

cudaError_t df_affine_forward(DType dtype, const void* x, void* y, const void* gamma, const void* beta, int64_t K,
                              int64_t B, int64_t C, int64_t S, bool channels_last, double slope,
                              cudaStream_t stream) {
  const int64_t n = B * C * S;
  if (n == 0) return cudaSuccess;
  const LaunchShape shape = df_affine_forward_shape(B, C, S);
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, forward_kernel<scalar_t, acc_t>)(
        static_cast<const scalar_t*>(x), static_cast<scalar_t*>(y), static_cast<const acc_t*>(gamma),
        static_cast<const acc_t*>(beta), static_cast<int>(K), B, C, S, channels_last, static_cast<acc_t>(slope));
    return cudaGetLastError();
  });
}

int64_t df_affine_backward_splits(int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last, int num_sms) {
  // Enough blocks to fill the GPU about 4 times over, each still reading at least 256 positions.
  const int64_t base_blocks = channels_last ? ceil_div(C, 32) * B : ceil_div(B * C, kRowsPerBlock);
  const int64_t want = ceil_div(4LL * num_sms, std::max<int64_t>(base_blocks, 1));
  return std::max<int64_t>(1, std::min<int64_t>({want, ceil_div(S, 256), 65535}));
}

cudaError_t df_affine_backward(DType dtype, const void* grad_out, const void* x, const void* gamma,
                               const void* beta, void* grad_x, void* gamma_partial, void* beta_partial,
                               int64_t splits, int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last,
                               double slope, cudaStream_t stream) {
  if (B * C == 0) return cudaSuccess;
  const int64_t chunk = ceil_div(S, splits);
  const LaunchShape shape = df_affine_backward_shape(splits, B, C, channels_last);
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    auto dy_p = static_cast<const scalar_t*>(grad_out);
    auto x_p = static_cast<const scalar_t*>(x);
    auto g_p = static_cast<const acc_t*>(gamma);
    auto b_p = static_cast<const acc_t*>(beta);
    auto dx_p = static_cast<scalar_t*>(grad_x);
    auto pg = static_cast<acc_t*>(gamma_partial);
    auto pb = static_cast<acc_t*>(beta_partial);
    if (channels_last) {
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_positions_kernel<scalar_t, acc_t>)(
          dy_p, x_p, g_p, b_p, dx_p, pg, pb, static_cast<int>(K), B, C, S, chunk, static_cast<acc_t>(slope));
    } else {
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_rows_kernel<scalar_t, acc_t>)(
          dy_p, x_p, g_p, b_p, dx_p, pg, pb, static_cast<int>(K), B * C, S, chunk, static_cast<acc_t>(slope));
    }
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastt2i
