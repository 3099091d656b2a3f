// Bias + leaky ReLU, CUDA kernels: y = lrelu(x + bias[c]) and dx = dy * (y > 0 ? 1 : slope).
// The derivative reads only the saved output, so the backward kernel also serves every higher
// order (fastt2i/ops/bias_leaky_relu.py).  Grid-stride elementwise loops over flat memory.
#include <algorithm>

#include "common.cuh"

namespace fastt2i {
namespace cuda {
namespace {

template <typename scalar_t, typename acc_t>
__global__ void forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ bias,
                               scalar_t* __restrict__ y, int64_t n, int64_t C, int64_t S, bool channels_last,
                               acc_t slope) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    acc_t v = static_cast<acc_t>(to_acc(x[i]));
    if (bias != nullptr) v += __ldg(bias + (channels_last ? i % C : (i / S) % C));
    y[i] = from_acc<scalar_t>(v > acc_t(0) ? v : v * slope);
  }
}

template <typename scalar_t, typename acc_t>
__global__ void backward_kernel(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y,
                                scalar_t* __restrict__ out, int64_t n, acc_t slope) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const acc_t gv = static_cast<acc_t>(to_acc(g[i]));
    out[i] = from_acc<scalar_t>(static_cast<acc_t>(to_acc(y[i])) > acc_t(0) ? gv : gv * slope);
  }
}

constexpr int kThreads = 256;

}  // namespace

LaunchShape bias_leaky_relu_shape(int64_t n) {
  return LaunchShape{{std::min<int64_t>(ceil_div(n, kThreads), 65535LL * 8), 1, 1}, {kThreads, 1, 1}, 0};  // grid-stride
}

cudaError_t bias_leaky_relu_forward(DType dtype, const void* x, const void* bias, void* y, int64_t n, int64_t C,
                                    int64_t S, bool channels_last, double slope, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    const LaunchShape shape = bias_leaky_relu_shape(n);
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, forward_kernel<scalar_t, acc_t>)(
        static_cast<const scalar_t*>(x), static_cast<const acc_t*>(bias), static_cast<scalar_t*>(y), n,
        std::max<int64_t>(C, 1), std::max<int64_t>(S, 1), channels_last, static_cast<acc_t>(slope));
    return cudaGetLastError();
  });
}

cudaError_t bias_leaky_relu_backward(DType dtype, const void* grad, const void* y, void* out, int64_t n,
                                     double slope, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    const LaunchShape shape = bias_leaky_relu_shape(n);
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_kernel<scalar_t, acc_t>)(
        static_cast<const scalar_t*>(grad), static_cast<const scalar_t*>(y), static_cast<scalar_t*>(out), n,
        static_cast<acc_t>(slope));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastt2i
