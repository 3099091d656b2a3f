// CUDA registration of fastt2i::df_affine_fwd / df_affine_bwd: layout, allocation, launch.
// The kernels are in df_affine.cu; the math and autograd in fastt2i/ops/df_affine.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include "../common.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

constexpr int64_t kMaxLayers = 8;

void check_inputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta) {
  TORCH_CHECK(x.is_cuda() && gamma.is_cuda() && beta.is_cuda(), "df_affine (cuda): expected CUDA tensors");
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(gamma.dim() == 3 && gamma.size(0) >= 1 && gamma.size(0) <= kMaxLayers &&
                  gamma.size(1) == x.size(0) && gamma.size(2) == x.size(1),
              "gamma: expected (K <= ", kMaxLayers, ", B, C), got ", gamma.sizes());
  TORCH_CHECK(beta.sizes() == gamma.sizes(), "beta: expected ", gamma.sizes(), ", got ", beta.sizes());
  const auto acc = accumulate_type(x.scalar_type());
  TORCH_CHECK(gamma.scalar_type() == acc && beta.scalar_type() == acc,
              "gamma/beta: expected ", acc, " for x of ", x.scalar_type());
}

at::Tensor df_affine_fwd_cuda(const at::Tensor& x_in, const at::Tensor& gamma_in, const at::Tensor& beta_in,
                              double slope) {
  check_inputs(x_in, gamma_in, beta_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto fmt = kernel_format(x_in);
  const auto x = x_in.contiguous(fmt);
  const auto gamma = gamma_in.contiguous(), beta = beta_in.contiguous();
  auto y = at::empty_like(x, x.options(), fmt);
  cuda::check_launch(
      cuda::df_affine_forward(cuda::dtype_of(x), x.const_data_ptr(), y.mutable_data_ptr(), gamma.const_data_ptr(),
                              beta.const_data_ptr(), gamma.size(0), x.size(0), x.size(1), x.size(2) * x.size(3),
                              fmt == at::MemoryFormat::ChannelsLast, slope,
                              c10::cuda::getCurrentCUDAStream().stream()),
      "df_affine_fwd");
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> df_affine_bwd_cuda(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                                  const at::Tensor& gamma_in,
                                                                  const at::Tensor& beta_in, double slope) {
  check_inputs(x_in, gamma_in, beta_in);
  TORCH_CHECK(dy_in.sizes() == x_in.sizes() && dy_in.scalar_type() == x_in.scalar_type(),
              "grad_out: expected ", x_in.sizes(), " ", x_in.scalar_type(), ", got ", dy_in.sizes(), " ",
              dy_in.scalar_type());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const auto fmt = kernel_format(x_in);
  const bool channels_last = fmt == at::MemoryFormat::ChannelsLast;
  const auto x = x_in.contiguous(fmt), dy = dy_in.contiguous(fmt);
  const auto gamma = gamma_in.contiguous(), beta = beta_in.contiguous();
  const int64_t K = gamma.size(0), B = x.size(0), C = x.size(1), S = x.size(2) * x.size(3);
  const int64_t splits = cuda::df_affine_backward_splits(K, B, C, S, channels_last, cuda::num_sms(x));
  auto dx = at::empty_like(x, x.options(), fmt);
  auto pg = at::empty({splits, K, B, C}, gamma.options());
  auto pb = at::empty({splits, K, B, C}, gamma.options());
  cuda::check_launch(cuda::df_affine_backward(cuda::dtype_of(x), dy.const_data_ptr(), x.const_data_ptr(),
                                              gamma.const_data_ptr(), beta.const_data_ptr(), dx.mutable_data_ptr(),
                                              pg.mutable_data_ptr(), pb.mutable_data_ptr(), splits, K, B, C, S,
                                              channels_last, slope, c10::cuda::getCurrentCUDAStream().stream()),
                     "df_affine_bwd");
  return {dx, at::sum(pg, 0), at::sum(pb, 0)};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastt2i, CUDA, m) {
  m.impl("df_affine_fwd", &df_affine_fwd_cuda);
  m.impl("df_affine_bwd", &df_affine_bwd_cuda);
}

}  // namespace fastt2i
