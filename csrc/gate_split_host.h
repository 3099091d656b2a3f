// Device-independent host side of fastt2i::gate_split_fwd / _bwd, shared by the CPU kernels
// (cpu/gate_split.cpp) and the CUDA glue (cuda/gate_split_cuda.cpp): input checks, layouts and
// allocation of the outputs (the same as _kernel_inputs in fastt2i/ops/gate_split.py).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "common.h"

namespace fastt2i {

// How the gate of an element of x is found.
enum class GateLayout : int {
  kPerElement = 0,     // logits laid out exactly like x: the same flat index
  kPositionsNCHW = 1,  // logits (B, H*W), x (B, C, S): the gate of (b, c, s) is (b, s)
  kPositionsNHWC = 2,  // logits (B, H*W), x (B, S, C): the gate of position p is p
};

struct GateSplitInputs {
  at::Tensor logits, x;
  GateLayout layout = GateLayout::kPerElement;
  int64_t B = 0, C = 0, S = 0;
};

// t with exactly ref's strides and dtype (copied when they differ), walked as ref's flat memory.
inline at::Tensor gate_split_like(const at::Tensor& t, const at::Tensor& ref) {
  if (t.strides() == ref.strides() && t.scalar_type() == ref.scalar_type()) return t;
  auto out = at::empty_like(ref);
  out.copy_(t);
  return out;
}

inline GateSplitInputs gate_split_setup(const at::Tensor& logits_in, const at::Tensor& x_in) {
  check_float(x_in, "x");
  TORCH_CHECK(x_in.dim() == 4, "x: expected a 4-D tensor (B, C, H, W), got ", x_in.sizes());
  TORCH_CHECK(logits_in.scalar_type() == x_in.scalar_type(), "gate_logits: expected x's dtype ", x_in.scalar_type(),
              ", got ", logits_in.scalar_type());
  const int64_t B = x_in.size(0), C = x_in.size(1), H = x_in.size(2), W = x_in.size(3);
  const bool per_position = logits_in.dim() == 4 && logits_in.size(0) == B && logits_in.size(1) == 1 &&
                            logits_in.size(2) == H && logits_in.size(3) == W;
  TORCH_CHECK(per_position || logits_in.sizes() == x_in.sizes(), "gate_logits: expected (", B, ", 1, ", H, ", ", W,
              ") or x's shape ", x_in.sizes(), ", got ", logits_in.sizes());
  GateSplitInputs in;
  in.B = B, in.C = C, in.S = H * W;
  in.x = x_in.contiguous(kernel_format(x_in));
  if (per_position && C != 1) {
    in.logits = logits_in.contiguous();
    in.layout = is_channels_last(in.x) ? GateLayout::kPositionsNHWC : GateLayout::kPositionsNCHW;
  } else {
    in.logits = gate_split_like(logits_in, in.x);
  }
  return in;
}

// An upstream gradient laid out like x, or an undefined tensor for none.
inline at::Tensor gate_split_grad(const c10::optional<at::Tensor>& grad, const at::Tensor& x, const char* name) {
  if (!grad.has_value() || !grad->defined()) return at::Tensor();
  TORCH_CHECK(grad->sizes() == x.sizes(), name, ": expected shape ", x.sizes(), ", got ", grad->sizes());
  return gate_split_like(*grad, x);
}

}  // namespace fastt2i
