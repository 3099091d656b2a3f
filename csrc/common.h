// Helpers shared by the ATen glue of every op (CPU and CUDA registration files).
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

// The four floating dtypes every fused op accepts (AT_DISPATCH_FLOATING_TYPES_AND2 without the
// reduced-precision mixing): one switch, shared by the CPU kernel files.
#define FASTT2I_DISPATCH_FLOATS(TYPE, NAME, ...)                                          \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                                           \
                     AT_DISPATCH_CASE(at::kFloat, __VA_ARGS__)                             \
                         AT_DISPATCH_CASE(at::kDouble, __VA_ARGS__)                        \
                             AT_DISPATCH_CASE(at::kHalf, __VA_ARGS__)                      \
                                 AT_DISPATCH_CASE(at::kBFloat16, __VA_ARGS__))

namespace fastt2i {

// Kernels take NCHW-contiguous or channels_last (NHWC) 4-D tensors.
inline bool is_channels_last(const at::Tensor& x) {
  return x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
}

inline at::MemoryFormat kernel_format(const at::Tensor& x) {
  return is_channels_last(x) ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

// float32 arithmetic for half inputs, float64 for float64 (the parameters' dtype).
inline at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline void check_float(const at::Tensor& t, const char* name) {
  auto s = t.scalar_type();
  TORCH_CHECK(s == at::kFloat || s == at::kDouble || s == at::kHalf || s == at::kBFloat16,
              name, ": expected float32/float64/float16/bfloat16, got ", s);
}

}  // namespace fastt2i
