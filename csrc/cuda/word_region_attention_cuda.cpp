// CUDA registration of fastt2i::word_region_attention_fwd / _bwd: checks, layout, allocation, launch.
// The kernels are in word_region_attention.cu; the math and autograd in fastt2i/ops/word_region_attention.py.
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include <optional>

#include "../common.h"
#include "../word_region_attention_host.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

void check_device(const at::Tensor& regions, const at::Tensor& words, const std::optional<at::Tensor>& mask,
                  const at::Tensor* grad_context = nullptr, const std::optional<at::Tensor>& grad_attention = {},
                  const at::Tensor* lse = nullptr) {
  cuda::check_devices("word_region_attention",
                      {{"regions", &regions},
                       {"words", &words},
                       {"mask", mask.has_value() ? &*mask : nullptr},
                       {"grad_context", grad_context},
                       {"grad_attention", grad_attention.has_value() ? &*grad_attention : nullptr},
                       {"lse", lse}});
}

// Strides of the dense NCHW / NHWC layout.  Tensors are made contiguous in that format first; their
// own strides may differ only on size-1 dims, which never move an offset.
cuda::WraLayout layout_of(const at::Tensor& regions, int64_t T) {
  const int64_t B = regions.size(0), C = regions.size(1), N = regions.size(2) * regions.size(3);
  const bool nhwc = kernel_format(regions) == at::MemoryFormat::ChannelsLast;
  return cuda::WraLayout{B, C, N, T, C * N, nhwc ? 1 : N, nhwc ? C : 1};
}

cuda::WraMask mask_of(const std::optional<at::Tensor>& mask) {
  if (!mask.has_value()) return cuda::WraMask{nullptr, 0, 0};
  return cuda::WraMask{mask->const_data_ptr(), mask->stride(0), mask->dim() == 3 ? mask->stride(1) : 0};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> word_region_attention_fwd_cuda(
    const at::Tensor& regions_in, const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in,
    bool return_attention) {
  check_device(regions_in, words_in, mask_in);
  wra_check_inputs(regions_in, words_in, mask_in);
  const cuda::DeviceGuard guard(regions_in.device());
  auto f = wra_forward_setup(regions_in, words_in, mask_in, return_attention);
  const auto& o = f.in;
  cuda::check_launch(
      cuda::word_region_attention_forward(
          cuda::dtype_of(o.regions), o.regions.const_data_ptr(), o.words.const_data_ptr(), mask_of(o.mask),
          f.context.mutable_data_ptr(), f.lse.mutable_data_ptr(),
          return_attention ? f.attention.mutable_data_ptr() : nullptr, o.as[0], o.as[1], o.as[2],
          layout_of(o.regions, o.T), cuda::current_stream()),
      "word_region_attention_fwd");
  return {f.context, f.lse, f.attention};
}

std::tuple<at::Tensor, at::Tensor> word_region_attention_bwd_cuda(
    const at::Tensor& grad_context_in, const std::optional<at::Tensor>& grad_attention_in,
    const at::Tensor& regions_in, const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& lse_in) {
  check_device(regions_in, words_in, mask_in, &grad_context_in, grad_attention_in, &lse_in);
  wra_check_inputs(regions_in, words_in, mask_in);
  const cuda::DeviceGuard guard(regions_in.device());
  auto b = wra_backward_setup(grad_context_in, grad_attention_in, regions_in, words_in, mask_in, lse_in);
  const auto& o = b.in;
  const bool has_ga = b.grad_attention.defined();
  const auto dtype = cuda::dtype_of(o.regions);
  const int sms = cuda::num_sms(o.regions);
  const int64_t splits = cuda::word_region_attention_backward_splits(dtype, o.B, o.N, sms);
  auto part = at::empty({o.B, splits, o.C, o.T}, o.regions.options().dtype(o.acc));
  cuda::check_launch(
      cuda::word_region_attention_backward(
          dtype, b.grad_context.const_data_ptr(), has_ga ? b.grad_attention.const_data_ptr() : nullptr,
          o.as[0], o.as[1], o.as[2], o.regions.const_data_ptr(), o.words.const_data_ptr(), mask_of(o.mask),
          b.lse.const_data_ptr(), b.grad_regions.mutable_data_ptr(), part.mutable_data_ptr(), sms,
          layout_of(o.regions, o.T), cuda::current_stream()),
      "word_region_attention_bwd");
  return {b.grad_regions, at::sum(part, 1).to(o.regions.scalar_type())};
}

}  // namespace

FASTT2I_CUDA_KERNELS(m) {
  m.impl("word_region_attention_fwd", &word_region_attention_fwd_cuda);
  m.impl("word_region_attention_bwd", &word_region_attention_bwd_cuda);
}

}  // namespace fastt2i
