// CUDA registration of fastt2i::df_affine_fwd / df_affine_bwd: layout, allocation, launch.
// The kernels are in df_affine.cu; the math and autograd in fastt2i/ops/df_affine.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include "../common.h"
#include "../df_affine_host.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

void check_device(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,
                  const at::Tensor& grad_out = at::Tensor()) {
  cuda::check_devices("df_affine", {{"x", &x}, {"gamma", &gamma}, {"beta", &beta}, {"grad_out", &grad_out}});
}

at::Tensor df_affine_fwd_cuda(const at::Tensor& x_in, const at::Tensor& gamma_in, const at::Tensor& beta_in,
                              double slope) {
  check_device(x_in, gamma_in, beta_in);
  df_affine_check_inputs(x_in, gamma_in, beta_in);
  const cuda::DeviceGuard guard(x_in.device());
  const auto in = df_affine_layout(x_in, gamma_in, beta_in);
  const auto fmt = in.fmt;
  const auto &x = in.x, &gamma = in.gamma, &beta = in.beta;
  auto y = at::empty_like(x, x.options(), fmt);
  cuda::check_launch(
      cuda::df_affine_forward(cuda::dtype_of(x), x.const_data_ptr(), y.mutable_data_ptr(), gamma.const_data_ptr(),
                              beta.const_data_ptr(), gamma.size(0), x.size(0), x.size(1), x.size(2) * x.size(3),
                              fmt == at::MemoryFormat::ChannelsLast, slope,
                              cuda::current_stream()),
      "df_affine_fwd");
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> df_affine_bwd_cuda(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                                  const at::Tensor& gamma_in,
                                                                  const at::Tensor& beta_in, double slope) {
  check_device(x_in, gamma_in, beta_in, dy_in);
  df_affine_check_inputs(x_in, gamma_in, beta_in);
  df_affine_check_grad(dy_in, x_in);
  const cuda::DeviceGuard guard(x_in.device());
  const auto in = df_affine_layout(x_in, gamma_in, beta_in, dy_in);
  const auto fmt = in.fmt;
  const bool channels_last = in.channels_last;
  const auto &x = in.x, &dy = in.dy, &gamma = in.gamma, &beta = in.beta;
  const int64_t K = in.K, B = in.B, C = in.C, S = in.S;
  const int64_t splits = cuda::df_affine_backward_splits(K, B, C, S, channels_last, cuda::num_sms(x));
  auto dx = at::empty_like(x, x.options(), fmt);
  auto pg = at::empty({splits, K, B, C}, gamma.options());
  auto pb = at::empty({splits, K, B, C}, gamma.options());
  cuda::check_launch(cuda::df_affine_backward(cuda::dtype_of(x), dy.const_data_ptr(), x.const_data_ptr(),
                                              gamma.const_data_ptr(), beta.const_data_ptr(), dx.mutable_data_ptr(),
                                              pg.mutable_data_ptr(), pb.mutable_data_ptr(), splits, K, B, C, S,
                                              channels_last, slope, cuda::current_stream()),
                     "df_affine_bwd");
  return {dx, at::sum(pg, 0), at::sum(pb, 0)};
}

}  // namespace

FASTT2I_CUDA_KERNELS(m) {
  m.impl("df_affine_fwd", &df_affine_fwd_cuda);
  m.impl("df_affine_bwd", &df_affine_bwd_cuda);
}

}  // namespace fastt2i
