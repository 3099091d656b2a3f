// Device-independent host side of fastt2i::bias_leaky_relu_fwd / _bwd, shared by the CPU kernels
// (cpu/bias_leaky_relu.cpp) and the CUDA glue (cuda/bias_leaky_relu_cuda.cpp): input checks,
// layout and allocation of the outputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cstdint>

#include "common.h"

namespace fastt2i {

// Dense layouts are walked as flat memory: elementwise ops do not care about the order.
inline at::Tensor blr_dense_or_contiguous(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() ? t : t.contiguous();
}

struct BlrForward {
  bool has_bias = false;
  bool channels_last = false;  // with a bias: x is NHWC
  at::Tensor x, bias, y;
  int64_t C = 1, S = 1;  // with a bias: channels and positions per (sample, channel)
};

inline bool blr_has_bias(const c10::optional<at::Tensor>& bias) { return bias.has_value() && bias->defined(); }

// x is checked to be floating by the caller.  With a bias x keeps its (NCHW / NHWC) layout, bias
// becomes contiguous; without one any dense x is used as is.
inline BlrForward blr_forward_setup(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in) {
  BlrForward f;
  f.has_bias = blr_has_bias(bias_in);
  if (f.has_bias) {
    TORCH_CHECK(x_in.dim() >= 2, "x: expected (B, C, ...) with a bias, got ", x_in.sizes());
    TORCH_CHECK(bias_in->dim() == 1 && bias_in->size(0) == x_in.size(1), "bias: expected (", x_in.size(1),
                ",), got ", bias_in->sizes());
    const auto acc = accumulate_type(x_in.scalar_type());
    TORCH_CHECK(bias_in->scalar_type() == acc, "bias: expected ", acc, " for x of ", x_in.scalar_type(), ", got ",
                bias_in->scalar_type());
    const auto fmt = kernel_format(x_in);
    f.x = x_in.contiguous(fmt);
    f.bias = bias_in->contiguous();
    f.channels_last = fmt == at::MemoryFormat::ChannelsLast;
    f.C = f.x.size(1);
    f.S = f.x.numel() / std::max<int64_t>(1, f.x.size(0) * f.C);
  } else {
    f.x = blr_dense_or_contiguous(x_in);
  }
  f.y = at::empty_like(f.x);
  return f;
}

struct BlrBackward {
  at::Tensor y, grad, out;  // grad laid out like y
};

inline void blr_check_backward(const at::Tensor& grad, const at::Tensor& y) {
  check_float(y, "y");
  TORCH_CHECK(grad.sizes() == y.sizes(), "grad: expected shape ", y.sizes(), ", got ", grad.sizes());
}

inline BlrBackward blr_backward_setup(const at::Tensor& grad_in, const at::Tensor& y_in) {
  BlrBackward b;
  b.y = blr_dense_or_contiguous(y_in);
  b.out = at::empty_like(b.y);
  // grad must be walked in y's memory order
  b.grad = grad_in;
  if (b.grad.strides() != b.y.strides() || b.grad.scalar_type() != b.y.scalar_type()) {
    b.grad = at::empty_like(b.y);
    b.grad.copy_(grad_in);
  }
  return b;
}

}  // namespace fastt2i
