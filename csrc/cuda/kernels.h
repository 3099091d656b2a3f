// Launchers of the CUDA kernels.  This header (and the .cu files) include no torch
// headers, so CI compiles every kernel with plain nvcc, no CUDA build of torch needed;
// the ATen glue (*_cuda.cpp) is built only against a CUDA torch.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace fastt2i {
namespace cuda {

// Element types of the tensors handed to the launchers.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

// ---- df_affine: x (B, C, S) NCHW or (B, S, C) NHWC; gamma/beta (K, B, C) of the accumulate type
// (float, or double for Float64).  The backward writes partial sums (splits, K, B, C) of dgamma and
// dbeta, which the caller sums over splits.
cudaError_t df_affine_forward(DType dtype, const void* x, void* y, const void* gamma, const void* beta,
                              int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last, double slope,
                              cudaStream_t stream);
int64_t df_affine_backward_splits(int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last,
                                  int num_sms);
cudaError_t df_affine_backward(DType dtype, const void* grad_out, const void* x, const void* gamma,
                               const void* beta, void* grad_x, void* gamma_partial, void* beta_partial,
                               int64_t splits, int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last,
                               double slope, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastt2i
