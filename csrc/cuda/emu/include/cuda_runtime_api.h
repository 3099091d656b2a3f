// CUDA emulator (csrc/cuda/emu): the part of the CUDA runtime API the launchers and the glue use, for
// the host compiler.  Under FASTT2I_CUDA_EMU this directory comes first on the include path, so the
// kernels and the glue build without the CUDA toolkit; the values match the toolkit's.
#pragma once

#include <cstddef>

enum cudaError {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
};
typedef enum cudaError cudaError_t;

enum cudaDeviceAttr {
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrMultiProcessorCount = 16,
};

typedef struct CUstream_st* cudaStream_t;

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
};

struct __attribute__((aligned(16))) float4 {
  float x, y, z, w;
};
struct __attribute__((aligned(16))) double2 {
  double x, y;
};

// Returns and clears the error of the last launch on this host thread.
cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorString(cudaError_t error);
// The emulated device: the multiprocessor count is settable (fastt2i::emu::set_num_sms) so that the
// tests reach several splits at small shapes.
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
