// Device helpers shared by the CUDA kernels (no torch headers).
#pragma once

#ifdef FASTT2I_CUDA_EMU
#include "emu/cuda_emu.h"  // the kernels on the CPU (tests): FASTT2I_LAUNCH and FASTT2I_DYNAMIC_SHARED too
#else
// kernel<<<grid, block, smem, stream>>>(args...) written FASTT2I_LAUNCH(grid, block, smem, stream, kernel)(args...),
// so that the emulator can run the same source on the host.
#define FASTT2I_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#define FASTT2I_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels.h"

namespace fastt2i {
namespace cuda {

template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };

__device__ __forceinline__ float to_acc(float v) { return v; }
__device__ __forceinline__ double to_acc(double v) { return v; }
__device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_acc(float v);
template <> __device__ __forceinline__ float from_acc<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_acc<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
template <typename T> __device__ __forceinline__ T from_acc(double v);
template <> __device__ __forceinline__ double from_acc<double>(double v) { return v; }

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Calls f.template operator()<T>() with the element type named by dtype.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(float{});
    case DType::Float16: return f(__half{});
    case DType::BFloat16: return f(__nv_bfloat16{});
    case DType::Float64: return f(double{});
  }
  return cudaErrorInvalidValue;
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline dim3 grid_of(const LaunchShape& s) {
  return dim3(static_cast<unsigned>(s.grid[0]), static_cast<unsigned>(s.grid[1]), static_cast<unsigned>(s.grid[2]));
}
inline dim3 block_of(const LaunchShape& s) {
  return dim3(static_cast<unsigned>(s.block[0]), static_cast<unsigned>(s.block[1]), static_cast<unsigned>(s.block[2]));
}

// The largest gridDim.x; kernels whose row count could exceed it loop over rows.
constexpr int64_t kMaxGridX = 2147483647;

}  // namespace cuda
}  // namespace fastt2i
