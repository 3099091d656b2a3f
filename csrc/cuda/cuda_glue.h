// ATen-side helpers of the CUDA glue files: built against a CUDA torch, or (-DFASTT2I_CUDA_EMU, tests
// only) against any torch with the kernels running under the CPU emulator of csrc/cuda/emu, where CPU
// tensors stand for device tensors and the ops register as fastt2i_cuda_emu::* instead of the CUDA
// kernels of fastt2i::*.
#pragma once

#include <ATen/core/Tensor.h>
#include <torch/library.h>

#ifndef FASTT2I_CUDA_EMU
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "kernels.h"

namespace fastt2i {
namespace cuda {

#ifdef FASTT2I_CUDA_EMU
constexpr bool kEmulated = true;
inline bool on_device(const at::Tensor& t) { return t.is_cpu(); }
struct DeviceGuard {
  explicit DeviceGuard(at::Device) {}
};
inline cudaStream_t current_stream() { return nullptr; }

// `m.impl(name, fn)` of the registration block defines fastt2i_cuda_emu::name with the schema of fn.
struct EmulatedRegistrar {
  torch::Library& library;
  template <typename F>
  EmulatedRegistrar& impl(const char* name, F&& fn) {
    library.def(name, std::forward<F>(fn));
    return *this;
  }
};
#define FASTT2I_CUDA_KERNELS_IMPL(m, id)                                                  \
  static void id(::fastt2i::cuda::EmulatedRegistrar& m);                                 \
  TORCH_LIBRARY_FRAGMENT(fastt2i_cuda_emu, library) {                                    \
    ::fastt2i::cuda::EmulatedRegistrar registrar{library};                               \
    id(registrar);                                                                       \
  }                                                                                      \
  static void id(::fastt2i::cuda::EmulatedRegistrar& m)
#define FASTT2I_CUDA_KERNELS(m) FASTT2I_CUDA_KERNELS_IMPL(m, C10_CONCATENATE(fastt2i_emulated_kernels_, __LINE__))
#else
constexpr bool kEmulated = false;
inline bool on_device(const at::Tensor& t) { return t.is_cuda(); }
using DeviceGuard = c10::cuda::CUDAGuard;
inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }
// TORCH_LIBRARY_IMPL(fastt2i, CUDA, m) { m.impl(...); }
#define FASTT2I_CUDA_KERNELS(m) TORCH_LIBRARY_IMPL(fastt2i, CUDA, m)
#endif

inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Float64;
    default: TORCH_CHECK(false, "expected float32/float64/float16/bfloat16, got ", t.scalar_type());
  }
}

// Every tensor a kernel reads or writes must be on the first one's CUDA device: a pointer to another
// device's memory would be read as this device's.
inline void check_devices(const char* op, std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  const at::Tensor& first = *tensors.begin()->second;
  for (const auto& [name, t] : tensors) {
    if (t == nullptr || !t->defined()) continue;
    TORCH_CHECK(on_device(*t) && t->device() == first.device(), op, " (cuda): ", name,
                ": expected a ", kEmulated ? "CPU (emulated device)" : "CUDA", " tensor on ", first.device(),
                " like ", tensors.begin()->first, ", got ", t->device());
  }
}

inline void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, ": CUDA error ", cudaGetErrorString(err));
}

inline int num_sms(const at::Tensor& t) {
  int count = 0;
  cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, t.get_device());
  return count > 0 ? count : 1;
}

}  // namespace cuda
}  // namespace fastt2i
