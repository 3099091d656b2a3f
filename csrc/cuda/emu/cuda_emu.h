// CUDA emulator: runs the project's .cu kernels on the CPU, compiled by the host C++ compiler with
// -DFASTT2I_CUDA_EMU and csrc/cuda/emu/include first on the include path (common.cuh includes this
// header then).  What nvcc compiles is unchanged.
//
// Execution model (runtime in emu.cpp):
//  - a launch checks the limits a GPU checks (threads per block <= 1024, blockDim.z <= 64,
//    gridDim.x <= 2^31 - 1, gridDim.y/z <= 65535, dynamic shared memory <= 48 KiB) and, like a GPU,
//    reports a violation through cudaGetLastError() without running anything;
//  - a block's threads are OS threads running concurrently, so __syncthreads() is a real barrier and
//    ThreadSanitizer sees a race between threads with no barrier between them, as on a GPU;
//  - blocks run one after another on the same threads, so a static __shared__ array (a function-static
//    variable here) is per-block storage; dynamic shared memory is allocated per launch and filled
//    with 0xff bytes (NaN) before each block, so reading it before writing shows;
//  - warp shuffles exchange values among the 32 lanes of a warp, which must all take part (the mask
//    must name exactly the warp's running lanes);
//  - a thread that never reaches a barrier the others wait at aborts the process with a message
//    instead of hanging.
#pragma once

#include <math.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include <cuda_runtime_api.h>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

// The launch and the dynamic shared memory, the two places where CUDA syntax is not C++.
#define FASTT2I_LAUNCH(grid, block, smem, stream, ...) \
  ::fastt2i::emu::LaunchConfig(grid, block, smem, stream, #__VA_ARGS__).kernel(__VA_ARGS__)
#define FASTT2I_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::fastt2i::emu::dynamic_shared_memory())

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline thread_local dim3 blockDim{1, 1, 1};
inline thread_local dim3 gridDim{1, 1, 1};

namespace fastt2i {
namespace emu {

// Limits of the emulated device (those of sm_80 / sm_90 without opt-in shared memory).
constexpr int64_t kMaxThreadsPerBlock = 1024;
constexpr int64_t kMaxBlockDimXY = 1024, kMaxBlockDimZ = 64;
constexpr int64_t kMaxGridDimX = 2147483647, kMaxGridDimYZ = 65535;
constexpr int64_t kMaxDynamicSharedBytes = 48 * 1024;

// The error message of the last launch that did not run ("" after a good one), for the tests.
const char* last_launch_error();
// Multiprocessor count reported by cudaDeviceGetAttribute (default 4).
void set_num_sms(int count);
// "" when a launch of this shape is within the device limits, else what is wrong.
std::string launch_limit_violation(dim3 grid, dim3 block, size_t dynamic_smem);

void syncthreads();
void* dynamic_shared_memory();
// Exchange of 8-byte words among a warp's lanes: returns the word of lane source(lane).
uint64_t warp_exchange(unsigned mask, uint64_t word, int source_lane, const char* what);

void run_launch(dim3 grid, dim3 block, size_t smem, const char* name, const std::function<void()>& body);

class LaunchConfig {
 public:
  LaunchConfig(dim3 grid, dim3 block, size_t smem, cudaStream_t, const char* name)
      : grid_(grid), block_(block), smem_(smem), name_(name) {}

  // Arguments convert to the kernel's parameter types at the call, as with <<<...>>>.
  template <typename... Params>
  auto kernel(void (*fn)(Params...)) const {
    return [cfg = *this, fn](Params... args) {
      const std::tuple<std::decay_t<Params>...> params(args...);
      cfg.run([&] { std::apply(fn, params); });  // each thread gets its own copies, as on a GPU
    };
  }

 private:
  void run(const std::function<void()>& body) const { run_launch(grid_, block_, smem_, name_, body); }
  dim3 grid_, block_;
  size_t smem_;
  const char* name_;
};

template <typename T>
T shuffle(unsigned mask, T value, int source_lane, const char* what) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable<T>::value, "shuffle of a word");
  uint64_t word = 0;
  std::memcpy(&word, &value, sizeof(T));
  word = warp_exchange(mask, word, source_lane, what);
  T out;
  std::memcpy(&out, &word, sizeof(T));
  return out;
}

inline int lane_id() {
  return static_cast<int>((threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)) % 32);
}

}  // namespace emu
}  // namespace fastt2i

inline void __syncthreads() { ::fastt2i::emu::syncthreads(); }

// Source lanes as the CUDA programming guide defines them for a segment of `width` lanes.
template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  const int lane = ::fastt2i::emu::lane_id();
  return ::fastt2i::emu::shuffle(mask, v, (lane & ~(width - 1)) + (src_lane & (width - 1)), "__shfl_sync");
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  const int lane = ::fastt2i::emu::lane_id();
  const int src = lane ^ lane_mask;
  return ::fastt2i::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane,
                                 "__shfl_xor_sync");
}
template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::fastt2i::emu::lane_id();
  const int src = lane + static_cast<int>(delta);
  return ::fastt2i::emu::shuffle(mask, v, (src & ~(width - 1)) == (lane & ~(width - 1)) ? src : lane,
                                 "__shfl_down_sync");
}
template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  const int lane = ::fastt2i::emu::lane_id();
  const int src = lane - static_cast<int>(delta);
  return ::fastt2i::emu::shuffle(mask, v, src >= (lane & ~(width - 1)) ? src : lane, "__shfl_up_sync");
}

template <typename T>
inline T __ldg(const T* p) {
  return *p;
}

inline float __int_as_float(int v) {
  float f;
  std::memcpy(&f, &v, sizeof f);
  return f;
}
inline int __float_as_int(float v) {
  int i;
  std::memcpy(&i, &v, sizeof i);
  return i;
}
inline double __longlong_as_double(long long v) {
  double d;
  std::memcpy(&d, &v, sizeof d);
  return d;
}
inline long long __double_as_longlong(double v) {
  long long i;
  std::memcpy(&i, &v, sizeof i);
  return i;
}

// CUDA's min/max: fminf/fmaxf semantics for floating point, plain comparison for integers.
inline float max(float a, float b) { return fmaxf(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline float min(float a, float b) { return fminf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
template <typename T, typename = std::enable_if_t<std::is_integral<T>::value>>
inline T max(T a, T b) {
  return a < b ? b : a;
}
template <typename T, typename = std::enable_if_t<std::is_integral<T>::value>>
inline T min(T a, T b) {
  return b < a ? b : a;
}
