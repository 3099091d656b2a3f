// Spatial gate split, CUDA kernels: key = s * x, nonkey = (1 - s) * x with s = sigmoid(logits);
// backward dx = s * dk + (1 - s) * dn and dlogits = sum over broadcast channels of (dk - dn) * x, times
// s * (1 - s) (fastt2i/ops/gate_split.py).  Forward and the per-element backward are grid-stride
// elementwise loops over flat memory; with one gate per position the backward gives each position
// a thread (NCHW: neighbouring threads read neighbouring positions of a channel) or a warp (NHWC:
// the lanes read the position's contiguous channels and sum them with shuffles).
#include <algorithm>

#include "common.cuh"

namespace fastt2i {
namespace cuda {
namespace {

// sigmoid(l) from e = exp(-|l|) in (0, 1]: never overflows, so any finite logit gives a gate in [0, 1].
template <typename acc_t>
__device__ __forceinline__ acc_t gate(acc_t l) {
  const acc_t e = exp(-fabs(l));
  const acc_t inv = acc_t(1) / (acc_t(1) + e);
  return l >= acc_t(0) ? inv : e * inv;
}

template <typename scalar_t>
__device__ __forceinline__ auto load_or_zero(const scalar_t* __restrict__ t, int64_t i) {
  using acc_t = typename Acc<scalar_t>::type;
  return t != nullptr ? static_cast<acc_t>(to_acc(t[i])) : acc_t(0);
}

// layout 0: the gate of element i is i; 1: x (B, C, S), gate (b, s); 2: x (B, S, C), gate i / C.
template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                               scalar_t* __restrict__ key, scalar_t* __restrict__ nonkey, int64_t n, int64_t C,
                               int64_t S, int layout) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t g = layout == 0 ? i : layout == 1 ? (i / (C * S)) * S + i % S : i / C;
    const acc_t s = gate(static_cast<acc_t>(to_acc(logits[g])));
    const acc_t v = static_cast<acc_t>(to_acc(x[i]));
    key[i] = from_acc<scalar_t>(s * v);
    nonkey[i] = from_acc<scalar_t>((acc_t(1) - s) * v);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_flat_kernel(const scalar_t* __restrict__ dk, const scalar_t* __restrict__ dn,
                                     const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                                     scalar_t* __restrict__ dlogits, scalar_t* __restrict__ dx, int64_t n) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const acc_t s = gate(static_cast<acc_t>(to_acc(logits[i])));
    const acc_t k = load_or_zero(dk, i), m = load_or_zero(dn, i);
    dx[i] = from_acc<scalar_t>(s * k + (acc_t(1) - s) * m);
    dlogits[i] = from_acc<scalar_t>((k - m) * static_cast<acc_t>(to_acc(x[i])) * s * (acc_t(1) - s));
  }
}

// x (B, C, S): a thread per position p = (b, s), over the channels.
template <typename scalar_t, typename acc_t>
__global__ void backward_nchw_kernel(const scalar_t* __restrict__ dk, const scalar_t* __restrict__ dn,
                                     const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                                     scalar_t* __restrict__ dlogits, scalar_t* __restrict__ dx, int64_t P, int64_t C,
                                     int64_t S) {
  for (int64_t p = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; p < P; p += (int64_t)gridDim.x * blockDim.x) {
    const acc_t s = gate(static_cast<acc_t>(to_acc(logits[p])));
    const int64_t base = (p / S) * C * S + p % S;
    acc_t sum = 0;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t i = base + c * S;
      const acc_t k = load_or_zero(dk, i), m = load_or_zero(dn, i);
      dx[i] = from_acc<scalar_t>(s * k + (acc_t(1) - s) * m);
      sum += (k - m) * static_cast<acc_t>(to_acc(x[i]));
    }
    dlogits[p] = from_acc<scalar_t>(sum * s * (acc_t(1) - s));
  }
}

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// x (B, S, C): a warp per position, lanes over its C contiguous channels.
template <typename scalar_t, typename acc_t>
__global__ void backward_nhwc_kernel(const scalar_t* __restrict__ dk, const scalar_t* __restrict__ dn,
                                     const scalar_t* __restrict__ logits, const scalar_t* __restrict__ x,
                                     scalar_t* __restrict__ dlogits, scalar_t* __restrict__ dx, int64_t P,
                                     int64_t C) {
  const int lane = threadIdx.x % 32;
  for (int64_t p = blockIdx.x * (int64_t)kWarps + threadIdx.x / 32; p < P; p += (int64_t)gridDim.x * kWarps) {
    const acc_t s = gate(static_cast<acc_t>(to_acc(logits[p])));
    acc_t sum = 0;
    for (int64_t c = lane; c < C; c += 32) {
      const int64_t i = p * C + c;
      const acc_t k = load_or_zero(dk, i), m = load_or_zero(dn, i);
      dx[i] = from_acc<scalar_t>(s * k + (acc_t(1) - s) * m);
      sum += (k - m) * static_cast<acc_t>(to_acc(x[i]));
    }
    sum = warp_sum(sum);
    if (lane == 0) dlogits[p] = from_acc<scalar_t>(sum * s * (acc_t(1) - s));
  }
}

}  // namespace

LaunchShape gate_split_shape(int64_t n) {
  return LaunchShape{{std::min<int64_t>(ceil_div(n, kThreads), 65535LL * 8), 1, 1}, {kThreads, 1, 1}, 0};
}

LaunchShape gate_split_backward_shape(int64_t n, int64_t positions, int layout) {
  if (layout == 0) return gate_split_shape(n);
  const int64_t per_block = layout == 2 ? kWarps : kThreads;  // positions per block and round
  return LaunchShape{{std::min<int64_t>(ceil_div(positions, per_block), 65535LL * 8), 1, 1}, {kThreads, 1, 1}, 0};
}

cudaError_t gate_split_forward(DType dtype, const void* logits, const void* x, void* key, void* nonkey, int64_t B,
                               int64_t C, int64_t S, int layout, cudaStream_t stream) {
  const int64_t n = B * C * S;
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    const LaunchShape shape = gate_split_shape(n);
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, forward_kernel<scalar_t, acc_t>)(
        static_cast<const scalar_t*>(logits), static_cast<const scalar_t*>(x), static_cast<scalar_t*>(key),
        static_cast<scalar_t*>(nonkey), n, C, S, layout);
    return cudaGetLastError();
  });
}

cudaError_t gate_split_backward(DType dtype, const void* grad_key, const void* grad_nonkey, const void* logits,
                                const void* x, void* dlogits, void* dx, int64_t B, int64_t C, int64_t S, int layout,
                                cudaStream_t stream) {
  const int64_t n = B * C * S, P = B * S;
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    const auto* dk = static_cast<const scalar_t*>(grad_key);
    const auto* dn = static_cast<const scalar_t*>(grad_nonkey);
    const auto* l = static_cast<const scalar_t*>(logits);
    const auto* xp = static_cast<const scalar_t*>(x);
    auto* gl = static_cast<scalar_t*>(dlogits);
    auto* gx = static_cast<scalar_t*>(dx);
    const LaunchShape shape = gate_split_backward_shape(n, P, layout);
    if (layout == 0)
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_flat_kernel<scalar_t, acc_t>)(
          dk, dn, l, xp, gl, gx, n);
    else if (layout == 1)
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_nchw_kernel<scalar_t, acc_t>)(
          dk, dn, l, xp, gl, gx, P, C, S);
    else
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_nhwc_kernel<scalar_t, acc_t>)(
          dk, dn, l, xp, gl, gx, P, C);
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastt2i
