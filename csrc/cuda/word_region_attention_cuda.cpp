// CUDA registration of fastt2i::word_region_attention_fwd / _bwd: checks, layout, allocation, launch.
// The kernels are in word_region_attention.cu; the math and autograd in fastt2i/ops/word_region_attention.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <array>
#include <optional>

#include "../common.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

constexpr int64_t kMaxWords = 64;

void check_inputs(const at::Tensor& regions, const at::Tensor& words, const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(regions.is_cuda() && words.is_cuda() && (!mask.has_value() || mask->is_cuda()),
              "word_region_attention (cuda): expected CUDA tensors");
  check_float(regions, "regions");
  TORCH_CHECK(regions.dim() == 4, "regions: expected (B, C, H, W), got ", regions.sizes());
  TORCH_CHECK(words.dim() == 3 && words.size(0) == regions.size(0) && words.size(1) == regions.size(1),
              "words: expected (B, C, T) matching regions ", regions.sizes(), ", got ", words.sizes());
  TORCH_CHECK(words.scalar_type() == regions.scalar_type(), "words: expected ", regions.scalar_type(), ", got ",
              words.scalar_type());
  TORCH_CHECK(words.size(2) >= 1 && words.size(2) <= kMaxWords, "words: expected 1 <= T <= ", kMaxWords,
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

// Strides of the dense NCHW / NHWC layout.  Tensors are made contiguous in that format first; their
// own strides may differ only on size-1 dims, which never move an offset.
cuda::WraLayout layout_of(const at::Tensor& regions, int64_t T) {
  const int64_t B = regions.size(0), C = regions.size(1), N = regions.size(2) * regions.size(3);
  const bool nhwc = kernel_format(regions) == at::MemoryFormat::ChannelsLast;
  return cuda::WraLayout{B, C, N, T, C * N, nhwc ? 1 : N, nhwc ? C : 1};
}

// (b, t, n) strides of a dense (B, T, H, W) attention laid out like regions.
std::array<int64_t, 3> attention_strides(const at::Tensor& regions, int64_t T) {
  const int64_t N = regions.size(2) * regions.size(3);
  if (kernel_format(regions) == at::MemoryFormat::ChannelsLast) return {T * N, 1, T};
  return {T * N, N, 1};
}

cuda::WraMask mask_of(const std::optional<at::Tensor>& mask) {
  if (!mask.has_value()) return cuda::WraMask{nullptr, 0, 0};
  return cuda::WraMask{mask->const_data_ptr(), mask->stride(0), mask->dim() == 3 ? mask->stride(1) : 0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> word_region_attention_fwd_cuda(
    const at::Tensor& regions_in, const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in,
    bool return_attention) {
  check_inputs(regions_in, words_in, mask_in);
  const c10::cuda::CUDAGuard guard(regions_in.device());
  const auto fmt = kernel_format(regions_in);
  const auto regions = regions_in.contiguous(fmt);
  const auto acc = accumulate_type(regions.scalar_type());
  const auto words = words_in.to(acc).contiguous();
  std::optional<at::Tensor> mask;
  if (mask_in.has_value()) mask = mask_in->contiguous();
  const int64_t B = regions.size(0), H = regions.size(2), W = regions.size(3), T = words.size(2);
  auto context = at::empty_like(regions, regions.options(), fmt);
  auto lse = at::empty({B, H * W}, regions.options().dtype(acc));
  auto attention = return_attention ? at::empty({B, T, H, W}, regions.options().memory_format(fmt))
                                    : at::empty({0}, regions.options());
  const auto as = attention_strides(regions, T);
  cuda::check_launch(
      cuda::word_region_attention_forward(
          cuda::dtype_of(regions), regions.const_data_ptr(), words.const_data_ptr(), mask_of(mask),
          context.mutable_data_ptr(), lse.mutable_data_ptr(),
          return_attention ? attention.mutable_data_ptr() : nullptr, as[0], as[1], as[2], layout_of(regions, T),
          c10::cuda::getCurrentCUDAStream().stream()),
      "word_region_attention_fwd");
  return {context, lse, attention};
}

std::tuple<at::Tensor, at::Tensor> word_region_attention_bwd_cuda(
    const at::Tensor& grad_context_in, const std::optional<at::Tensor>& grad_attention_in,
    const at::Tensor& regions_in, const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& lse_in) {
  check_inputs(regions_in, words_in, mask_in);
  const c10::cuda::CUDAGuard guard(regions_in.device());
  const auto fmt = kernel_format(regions_in);
  const auto regions = regions_in.contiguous(fmt);
  TORCH_CHECK(grad_context_in.sizes() == regions.sizes() && grad_context_in.scalar_type() == regions.scalar_type(),
              "grad_context: expected ", regions.sizes(), " ", regions.scalar_type(), ", got ",
              grad_context_in.sizes(), " ", grad_context_in.scalar_type());
  // The kernels read grad_context with regions' strides.
  const auto grad_context = grad_context_in.contiguous(fmt);
  const auto acc = accumulate_type(regions.scalar_type());
  const auto words = words_in.to(acc).contiguous();
  const int64_t B = regions.size(0), C = regions.size(1), H = regions.size(2), W = regions.size(3),
                T = words.size(2), N = H * W;
  TORCH_CHECK(lse_in.dim() == 2 && lse_in.size(0) == B && lse_in.size(1) == N && lse_in.scalar_type() == acc,
              "lse: expected (", B, ", ", N, ") ", acc, ", got ", lse_in.sizes(), " ", lse_in.scalar_type());
  const auto lse = lse_in.contiguous();
  std::optional<at::Tensor> mask;
  if (mask_in.has_value()) mask = mask_in->contiguous();
  at::Tensor grad_attention;
  if (grad_attention_in.has_value()) {
    TORCH_CHECK(grad_attention_in->dim() == 4 && grad_attention_in->size(0) == B && grad_attention_in->size(1) == T &&
                    grad_attention_in->size(2) == H && grad_attention_in->size(3) == W,
                "grad_attention: expected (", B, ", ", T, ", ", H, ", ", W, "), got ", grad_attention_in->sizes());
    grad_attention = grad_attention_in->to(regions.scalar_type()).contiguous(fmt);
  }
  const bool has_ga = grad_attention.defined();
  const auto as = attention_strides(regions, T);
  const auto dtype = cuda::dtype_of(regions);
  const int sms = cuda::num_sms(regions);
  const int64_t splits = cuda::word_region_attention_backward_splits(dtype, B, N, sms);
  auto grad_regions = at::empty_like(regions, regions.options(), fmt);
  auto part = at::empty({B, splits, C, T}, regions.options().dtype(acc));
  cuda::check_launch(
      cuda::word_region_attention_backward(
          dtype, grad_context.const_data_ptr(), has_ga ? grad_attention.const_data_ptr() : nullptr,
          as[0], as[1], as[2], regions.const_data_ptr(), words.const_data_ptr(), mask_of(mask),
          lse.const_data_ptr(), grad_regions.mutable_data_ptr(), part.mutable_data_ptr(), sms,
          layout_of(regions, T), c10::cuda::getCurrentCUDAStream().stream()),
      "word_region_attention_bwd");
  return {grad_regions, at::sum(part, 1).to(regions.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastt2i, CUDA, m) {
  m.impl("word_region_attention_fwd", &word_region_attention_fwd_cuda);
  m.impl("word_region_attention_bwd", &word_region_attention_bwd_cuda);
}

}  // namespace fastt2i
