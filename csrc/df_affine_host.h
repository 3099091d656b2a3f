// Device-independent host side of fastt2i::df_affine_fwd / df_affine_bwd, shared by the CPU kernels
// (cpu/df_affine.cpp) and the CUDA glue (cuda/df_affine_cuda.cpp): input checks and layout.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "common.h"

namespace fastt2i {

constexpr int64_t kDfAffineMaxLayers = 8;  // the kernels keep K per-layer values in registers

inline void df_affine_check_inputs(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta) {
  check_float(x, "x");
  TORCH_CHECK(x.dim() == 4, "x: expected (B, C, H, W), got ", x.sizes());
  TORCH_CHECK(gamma.dim() == 3 && gamma.size(0) >= 1 && gamma.size(0) <= kDfAffineMaxLayers &&
                  gamma.size(1) == x.size(0) && gamma.size(2) == x.size(1),
              "gamma: expected (K <= ", kDfAffineMaxLayers, ", B, C), got ", gamma.sizes());
  TORCH_CHECK(beta.sizes() == gamma.sizes(), "beta: expected ", gamma.sizes(), ", got ", beta.sizes());
  const auto acc = accumulate_type(x.scalar_type());
  TORCH_CHECK(gamma.scalar_type() == acc && beta.scalar_type() == acc,
              "gamma/beta: expected ", acc, " for x of ", x.scalar_type());
}

inline void df_affine_check_grad(const at::Tensor& dy, const at::Tensor& x) {
  TORCH_CHECK(dy.sizes() == x.sizes() && dy.scalar_type() == x.scalar_type(), "grad_out: expected ", x.sizes(), " ",
              x.scalar_type(), ", got ", dy.sizes(), " ", dy.scalar_type());
}

// The inputs in the kernels' layout: x (and dy) dense NCHW or NHWC, gamma/beta (K, B, C) contiguous.
struct DfAffineInputs {
  at::MemoryFormat fmt;
  bool channels_last;
  at::Tensor x, dy, gamma, beta;
  int64_t K, B, C, S;
};

// dy_in: the upstream gradient (backward) or undefined (forward); checked by the caller.
inline DfAffineInputs df_affine_layout(const at::Tensor& x_in, const at::Tensor& gamma_in, const at::Tensor& beta_in,
                                       const at::Tensor& dy_in = at::Tensor()) {
  DfAffineInputs in;
  in.fmt = kernel_format(x_in);
  in.channels_last = in.fmt == at::MemoryFormat::ChannelsLast;
  in.x = x_in.contiguous(in.fmt);
  if (dy_in.defined()) in.dy = dy_in.contiguous(in.fmt);
  in.gamma = gamma_in.contiguous();
  in.beta = beta_in.contiguous();
  in.K = in.gamma.size(0), in.B = in.x.size(0), in.C = in.x.size(1), in.S = in.x.size(2) * in.x.size(3);
  return in;
}

}  // namespace fastt2i
