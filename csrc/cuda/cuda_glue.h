// ATen-side helpers of the CUDA glue files (built only against a CUDA torch).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"

namespace fastt2i {
namespace cuda {

inline DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return DType::Float32;
    case at::kHalf: return DType::Float16;
    case at::kBFloat16: return DType::BFloat16;
    case at::kDouble: return DType::Float64;
    default: TORCH_CHECK(false, "expected float32/float64/float16/bfloat16, got ", t.scalar_type());
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
