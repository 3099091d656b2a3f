// CUDA registration of fastt2i::bias_leaky_relu_fwd / bias_leaky_relu_bwd: layout, allocation, launch.
// The kernels are in bias_leaky_relu.cu; the math and autograd in fastt2i/ops/bias_leaky_relu.py.
#include <ATen/ops/empty_like.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <algorithm>

#include "../common.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

// Dense layouts are walked as flat memory: elementwise ops do not care about the order.
at::Tensor dense_or_contiguous(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

at::Tensor bias_leaky_relu_fwd_cuda(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in,
                                    double slope) {
  TORCH_CHECK(x_in.is_cuda(), "bias_leaky_relu (cuda): expected a CUDA tensor x");
  check_float(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const bool has_bias = bias_in.has_value() && bias_in->defined();
  at::Tensor x, bias;
  int64_t C = 1, S = 1;
  bool channels_last = false;
  if (has_bias) {
    TORCH_CHECK(bias_in->is_cuda() && bias_in->device() == x_in.device(), "bias: expected on ", x_in.device());
    TORCH_CHECK(x_in.dim() >= 2, "x: expected (B, C, ...) with a bias, got ", x_in.sizes());
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == x_in.size(1), "bias: expected (", x_in.size(1),
                ",), got ", bias_in->sizes());
    const auto acc = accumulate_type(x_in.scalar_type());
    TORCH_CHECK(bias_in->scalar_type() == acc, "bias: expected ", acc, " for x of ", x_in.scalar_type(), ", got ",
                bias_in->scalar_type());
    const auto fmt = kernel_format(x_in);
    x = x_in.contiguous(fmt);
    bias = bias_in->contiguous();
    channels_last = fmt == at::MemoryFormat::ChannelsLast;
    C = x.size(1);
    S = x.numel() / std::max<int64_t>(1, x.size(0) * C);
  } else {
    x = dense_or_contiguous(x_in);
  }
  auto y = at::empty_like(x);
  cuda::check_launch(cuda::bias_leaky_relu_forward(cuda::dtype_of(x), x.const_data_ptr(),
                                                   has_bias ? bias.const_data_ptr() : nullptr, y.mutable_data_ptr(),
                                                   x.numel(), C, S, channels_last, slope,
                                                   c10::cuda::getCurrentCUDAStream().stream()),
                     "bias_leaky_relu_fwd");
  return y;
}

at::Tensor bias_leaky_relu_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& y_in, double slope) {
  TORCH_CHECK(grad_in.is_cuda() && y_in.is_cuda(), "bias_leaky_relu (cuda): expected CUDA tensors");
  check_float(y_in, "y");
  TORCH_CHECK(grad_in.sizes() == y_in.sizes(), "grad: expected shape ", y_in.sizes(), ", got ", grad_in.sizes());
  const c10::cuda::CUDAGuard guard(y_in.device());
  const auto y = dense_or_contiguous(y_in);
  at::Tensor grad = grad_in;
  if (grad.strides() != y.strides() || grad.scalar_type() != y.scalar_type()) {  // walk grad in y's order
    grad = at::empty_like(y);
    grad.copy_(grad_in);
  }
  auto out = at::empty_like(y);
  cuda::check_launch(cuda::bias_leaky_relu_backward(cuda::dtype_of(y), grad.const_data_ptr(), y.const_data_ptr(),
                                                    out.mutable_data_ptr(), y.numel(), slope,
                                                    c10::cuda::getCurrentCUDAStream().stream()),
                     "bias_leaky_relu_bwd");
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(fastt2i, CUDA, m) {
  m.impl("bias_leaky_relu_fwd", &bias_leaky_relu_fwd_cuda);
  m.impl("bias_leaky_relu_bwd", &bias_leaky_relu_bwd_cuda);
}

}  // namespace fastt2i
