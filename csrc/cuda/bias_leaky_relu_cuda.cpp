// CUDA registration of fastt2i::bias_leaky_relu_fwd / bias_leaky_relu_bwd: layout, allocation, launch.
// The kernels are in bias_leaky_relu.cu; the math and autograd in fastt2i/ops/bias_leaky_relu.py.
#include <c10/util/Optional.h>
#include <torch/library.h>

#include "../bias_leaky_relu_host.h"
#include "../common.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

at::Tensor bias_leaky_relu_fwd_cuda(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in,
                                    double slope) {
  cuda::check_devices("bias_leaky_relu", {{"x", &x_in}, {"bias", blr_has_bias(bias_in) ? &*bias_in : nullptr}});
  check_float(x_in, "x");
  const cuda::DeviceGuard guard(x_in.device());
  const auto f = blr_forward_setup(x_in, bias_in);
  cuda::check_launch(cuda::bias_leaky_relu_forward(cuda::dtype_of(f.x), f.x.const_data_ptr(),
                                                   f.has_bias ? f.bias.const_data_ptr() : nullptr,
                                                   f.y.mutable_data_ptr(), f.x.numel(), f.C, f.S, f.channels_last,
                                                   slope, cuda::current_stream()),
                     "bias_leaky_relu_fwd");
  return f.y;
}

at::Tensor bias_leaky_relu_bwd_cuda(const at::Tensor& grad_in, const at::Tensor& y_in, double slope) {
  cuda::check_devices("bias_leaky_relu", {{"y", &y_in}, {"grad", &grad_in}});
  blr_check_backward(grad_in, y_in);
  const cuda::DeviceGuard guard(y_in.device());
  const auto b = blr_backward_setup(grad_in, y_in);
  cuda::check_launch(cuda::bias_leaky_relu_backward(cuda::dtype_of(b.y), b.grad.const_data_ptr(),
                                                    b.y.const_data_ptr(), b.out.mutable_data_ptr(), b.y.numel(), slope,
                                                    cuda::current_stream()),
                     "bias_leaky_relu_bwd");
  return b.out;
}

}  // namespace

FASTT2I_CUDA_KERNELS(m) {
  m.impl("bias_leaky_relu_fwd", &bias_leaky_relu_fwd_cuda);
  m.impl("bias_leaky_relu_bwd", &bias_leaky_relu_bwd_cuda);
}

}  // namespace fastt2i
