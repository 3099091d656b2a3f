// Device-independent host side of fastt2i::word_region_attention_fwd / _bwd, shared by the CPU kernels
// (cpu/word_region_attention.cpp) and the CUDA glue (cuda/word_region_attention_cuda.cpp): input
// checks, layout of every operand and allocation of the outputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>

#include <array>
#include <cstdint>
#include <optional>

#include "common.h"

namespace fastt2i {

constexpr int64_t kWraMaxWords = 64;  // the kernels keep one row of T scores per region on chip

inline void wra_check_inputs(const at::Tensor& regions, const at::Tensor& words,
                             const std::optional<at::Tensor>& mask) {
  check_float(regions, "regions");
  TORCH_CHECK(regions.dim() == 4, "regions: expected (B, C, H, W), got ", regions.sizes());
  TORCH_CHECK(words.dim() == 3 && words.size(0) == regions.size(0) && words.size(1) == regions.size(1),
              "words: expected (B, C, T) matching regions ", regions.sizes(), ", got ", words.sizes());
  TORCH_CHECK(words.scalar_type() == regions.scalar_type(), "words: expected ", regions.scalar_type(), ", got ",
              words.scalar_type());
  TORCH_CHECK(words.size(2) >= 1 && words.size(2) <= kWraMaxWords, "words: expected 1 <= T <= ", kWraMaxWords,
              ", got ", words.size(2));
  if (mask.has_value()) {
    const auto& m = *mask;
    const int64_t B = regions.size(0), N = regions.size(2) * regions.size(3), T = words.size(2);
    TORCH_CHECK(m.scalar_type() == at::kBool, "mask: expected bool, got ", m.scalar_type());
    TORCH_CHECK((m.dim() == 2 && m.size(0) == B && m.size(1) == T) ||
                    (m.dim() == 3 && m.size(0) == B && m.size(1) == N && m.size(2) == T),
                "mask: expected (B, T) or (B, N, T), got ", m.sizes());
  }
}

// (b, t, n) strides of a dense (B, T, H, W) attention laid out like regions.
inline std::array<int64_t, 3> wra_attention_strides(const at::Tensor& regions, int64_t T) {
  const int64_t N = regions.size(2) * regions.size(3);
  if (kernel_format(regions) == at::MemoryFormat::ChannelsLast) return {T * N, 1, T};
  return {T * N, N, 1};
}

// Operands in the kernels' layout: regions (and grad_context, grad_attention) dense NCHW or NHWC,
// words (B, C, T) contiguous in the accumulate type, mask contiguous.
struct WraOperands {
  at::MemoryFormat fmt;
  at::ScalarType acc;
  at::Tensor regions, words;
  std::optional<at::Tensor> mask;
  int64_t B, C, H, W, T, N;
  std::array<int64_t, 3> as;  // attention strides
};

inline WraOperands wra_operands(const at::Tensor& regions_in, const at::Tensor& words_in,
                                const std::optional<at::Tensor>& mask_in) {
  WraOperands o;
  o.fmt = kernel_format(regions_in);
  o.regions = regions_in.contiguous(o.fmt);
  o.acc = accumulate_type(o.regions.scalar_type());
  o.words = words_in.to(o.acc).contiguous();
  if (mask_in.has_value()) o.mask = mask_in->contiguous();
  o.B = o.regions.size(0), o.C = o.regions.size(1), o.H = o.regions.size(2), o.W = o.regions.size(3);
  o.T = o.words.size(2), o.N = o.H * o.W;
  o.as = wra_attention_strides(o.regions, o.T);
  return o;
}

struct WraForward {
  WraOperands in;
  at::Tensor context, lse, attention;  // attention is empty unless requested
};

inline WraForward wra_forward_setup(const at::Tensor& regions_in, const at::Tensor& words_in,
                                    const std::optional<at::Tensor>& mask_in, bool return_attention) {
  WraForward f{wra_operands(regions_in, words_in, mask_in), {}, {}, {}};
  const auto& r = f.in.regions;
  f.context = at::empty_like(r, r.options(), f.in.fmt);
  f.lse = at::empty({f.in.B, f.in.N}, r.options().dtype(f.in.acc));
  f.attention = return_attention ? at::empty({f.in.B, f.in.T, f.in.H, f.in.W}, r.options().memory_format(f.in.fmt))
                                 : at::empty({0}, r.options());
  return f;
}

struct WraBackward {
  WraOperands in;
  at::Tensor grad_context, lse, grad_attention;  // grad_attention undefined when absent
  at::Tensor grad_regions;
};

inline WraBackward wra_backward_setup(const at::Tensor& grad_context_in,
                                      const std::optional<at::Tensor>& grad_attention_in,
                                      const at::Tensor& regions_in, const at::Tensor& words_in,
                                      const std::optional<at::Tensor>& mask_in, const at::Tensor& lse_in) {
  // (the sizes and dtype of regions do not depend on its layout)
  TORCH_CHECK(grad_context_in.sizes() == regions_in.sizes() && grad_context_in.scalar_type() == regions_in.scalar_type(),
              "grad_context: expected ", regions_in.sizes(), " ", regions_in.scalar_type(), ", got ",
              grad_context_in.sizes(), " ", grad_context_in.scalar_type());
  WraBackward b{wra_operands(regions_in, words_in, mask_in), {}, {}, {}, {}};
  const auto& o = b.in;
  // The kernels read grad_context with regions' strides.
  b.grad_context = grad_context_in.contiguous(o.fmt);
  TORCH_CHECK(lse_in.dim() == 2 && lse_in.size(0) == o.B && lse_in.size(1) == o.N && lse_in.scalar_type() == o.acc,
              "lse: expected (", o.B, ", ", o.N, ") ", o.acc, ", got ", lse_in.sizes(), " ", lse_in.scalar_type());
  b.lse = lse_in.contiguous();
  if (grad_attention_in.has_value()) {
    TORCH_CHECK(grad_attention_in->dim() == 4 && grad_attention_in->size(0) == o.B &&
                    grad_attention_in->size(1) == o.T && grad_attention_in->size(2) == o.H &&
                    grad_attention_in->size(3) == o.W,
                "grad_attention: expected (", o.B, ", ", o.T, ", ", o.H, ", ", o.W, "), got ",
                grad_attention_in->sizes());
    b.grad_attention = grad_attention_in->to(o.regions.scalar_type()).contiguous(o.fmt);
  }
  b.grad_regions = at::empty_like(o.regions, o.regions.options(), o.fmt);
  return b;
}

}  // namespace fastt2i
