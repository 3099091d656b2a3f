// Device-independent host side of fastt2i::gradient_penalty_fwd / _bwd, shared by the CPU kernels
// (cpu/gradient_penalty.cpp) and the CUDA glue (cuda/gradient_penalty_cuda.cpp): input checks,
// layout of the gradients, accumulate type and the checks of the saved sums.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <vector>

#include "common.h"

namespace fastt2i {

// The samples of t are consecutive dense spans: batch-major and non-overlapping-dense.
inline bool gp_batch_major(const at::Tensor& t) {
  const int64_t B = t.size(0);
  return t.is_non_overlapping_and_dense() && (B <= 1 || t.numel() == 0 || t.stride(0) * B == t.numel());
}

// Checks every gradient and makes it batch-major.  check_device(g, i) is the backend's device check;
// it runs first for each tensor when device_first, else last (the order of the error messages).
template <typename DeviceCheck>
std::vector<at::Tensor> gp_checked_inputs(at::TensorList grads_in, bool device_first, DeviceCheck check_device) {
  TORCH_CHECK(!grads_in.empty(), "grads: expected at least one tensor");
  const int64_t B = grads_in[0].dim() > 0 ? grads_in[0].size(0) : -1;
  TORCH_CHECK(B >= 1, "grads[0]: expected a batch size >= 1 at dim 0, got ", grads_in[0].sizes());
  std::vector<at::Tensor> grads;
  grads.reserve(grads_in.size());
  for (size_t i = 0; i < grads_in.size(); ++i) {
    const auto& g = grads_in[i];
    if (device_first) check_device(g, i);
    check_float(g, "grads[i]");
    TORCH_CHECK(g.dim() >= 1 && g.size(0) == B, "grads[", i, "]: expected batch size ", B, ", got ", g.sizes());
    if (!device_first) check_device(g, i);
    grads.push_back(gp_batch_major(g) ? g : g.contiguous());
  }
  return grads;
}

inline at::ScalarType gp_acc_type(const std::vector<at::Tensor>& grads) {
  for (const auto& g : grads)
    if (g.scalar_type() == at::kDouble) return at::kDouble;
  return at::kFloat;
}

}  // namespace fastt2i
