// Tiny kernels with a planted bug each, next to their correct versions, to prove that the emulator
// and its sanitizer builds catch what they are for (test_planted_bugs.py).  Run: planted_bugs <case>.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "common.cuh"

namespace {

constexpr int kThreads = 64;

// Each thread writes its slot of shared memory and reads its neighbour's: without the barrier the
// read races with the neighbour's write (ThreadSanitizer: data race).
template <bool kSync>
__global__ void neighbour_kernel(const float* in, float* out) {
  __shared__ float slots[kThreads];
  slots[threadIdx.x] = in[threadIdx.x] * 2.0f;
  if (kSync) __syncthreads();
  out[threadIdx.x] = slots[(threadIdx.x + 1) % kThreads];
}

// Grid-stride copy; the planted bug runs one element past the end (AddressSanitizer: heap overflow).
template <bool kOffByOne>
__global__ void copy_kernel(const float* in, float* out, int n) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; kOffByOne ? i <= n : i < n; i += gridDim.x * blockDim.x)
    out[i] = in[i];
}

// Warp sum by xor shuffles; the planted bug uses offsets 16, 8, 4, 2, 2 (lane pairs never combined).
template <bool kWrongOffset>
__global__ void warp_sum_kernel(const float* in, float* out) {
  float v = in[threadIdx.x];
  for (int offset = 16; offset > 0; offset >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, kWrongOffset && offset == 1 ? 2 : offset);
  if (threadIdx.x % 32 == 0) out[threadIdx.x / 32] = v;
}

// Static shared memory of 32 floats indexed by 64 threads (AddressSanitizer: global overflow, the
// emulator's shared arrays being static storage).
template <bool kTooSmall>
__global__ void shared_bounds_kernel(const float* in, float* out) {
  __shared__ float tile[kTooSmall ? 32 : kThreads];
  tile[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = tile[kThreads - 1 - threadIdx.x];
}

// Dynamic shared memory sized for 32 floats at the launch, indexed by 64 threads.
__global__ void dynamic_shared_kernel(const float* in, float* out) {
  FASTT2I_DYNAMIC_SHARED(float, tile);
  tile[threadIdx.x] = in[threadIdx.x];
  __syncthreads();
  out[threadIdx.x] = tile[kThreads - 1 - threadIdx.x];
}

// Reads dynamic shared memory that no thread wrote: the emulator fills it with NaN for each block.
__global__ void uninitialised_shared_kernel(float* out) {
  FASTT2I_DYNAMIC_SHARED(float, tile);
  if (threadIdx.x < kThreads / 2) tile[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = tile[threadIdx.x];
}

// Lane 0 skips the warp's shuffle and waits at the block barrier, where its warp never arrives: a hang
// on a GPU, a reported deadlock here.
__global__ void divergent_shuffle_kernel(float* out) {
  float v = 1.0f;
  if (threadIdx.x != 0) v = __shfl_xor_sync(0xffffffffu, v, 1);
  __syncthreads();
  out[threadIdx.x] = v;
}

__global__ void empty_kernel(float* out) { out[0] = 1.0f; }

void print(const char* what, const std::vector<float>& v) {
  std::printf("%s", what);
  for (float x : v) std::printf(" %g", x);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  const std::string which = argv[1];
  std::vector<float> in(kThreads);
  for (int i = 0; i < kThreads; ++i) in[i] = static_cast<float>(i + 1);
  std::vector<float> out(kThreads, 0.0f);
  if (which == "sync" || which == "missing_sync") {
    if (which == "sync") FASTT2I_LAUNCH(1, kThreads, 0, nullptr, neighbour_kernel<true>)(in.data(), out.data());
    else FASTT2I_LAUNCH(1, kThreads, 0, nullptr, neighbour_kernel<false>)(in.data(), out.data());
    print("neighbours", out);
  } else if (which == "tail" || which == "tail_off_by_one") {
    const int n = 45;
    auto* src = new float[n];
    auto* dst = new float[n];
    for (int i = 0; i < n; ++i) src[i] = static_cast<float>(i);
    if (which == "tail") FASTT2I_LAUNCH(2, 16, 0, nullptr, copy_kernel<false>)(src, dst, n);
    else FASTT2I_LAUNCH(2, 16, 0, nullptr, copy_kernel<true>)(src, dst, n);
    std::printf("copied %g\n", dst[n - 1]);
    delete[] src;
    delete[] dst;
  } else if (which == "shuffle" || which == "wrong_shuffle_offset") {
    std::vector<float> sums(2);
    if (which == "shuffle") FASTT2I_LAUNCH(1, kThreads, 0, nullptr, warp_sum_kernel<false>)(in.data(), sums.data());
    else FASTT2I_LAUNCH(1, kThreads, 0, nullptr, warp_sum_kernel<true>)(in.data(), sums.data());
    print("warp sums", sums);  // correct: 528 1552
  } else if (which == "shared" || which == "shared_too_small") {
    if (which == "shared") FASTT2I_LAUNCH(1, kThreads, 0, nullptr, shared_bounds_kernel<false>)(in.data(), out.data());
    else FASTT2I_LAUNCH(1, kThreads, 0, nullptr, shared_bounds_kernel<true>)(in.data(), out.data());
    print("reversed", out);
  } else if (which == "dynamic_shared" || which == "dynamic_shared_too_small") {
    const size_t bytes = (which == "dynamic_shared" ? kThreads : kThreads / 2) * sizeof(float);
    FASTT2I_LAUNCH(1, kThreads, bytes, nullptr, dynamic_shared_kernel)(in.data(), out.data());
    print("reversed", out);
  } else if (which == "uninitialised_shared") {
    FASTT2I_LAUNCH(1, kThreads, kThreads * sizeof(float), nullptr, uninitialised_shared_kernel)(out.data());
    print("read", out);
  } else if (which == "divergent_shuffle") {
    FASTT2I_LAUNCH(1, 32, 0, nullptr, divergent_shuffle_kernel)(out.data());
  } else if (which == "launch_limits") {
    const dim3 bad[4][2] = {{dim3(1, 65536), dim3(32)}, {dim3(1, 1, 65536), dim3(32)}, {dim3(1), dim3(1025)},
                            {dim3(1), dim3(1, 1, 65)}};
    for (const auto& shape : bad) {
      FASTT2I_LAUNCH(shape[0], shape[1], 0, nullptr, empty_kernel)(out.data());
      std::printf("%s | %s\n", cudaGetErrorString(cudaGetLastError()), fastt2i::emu::last_launch_error());
    }
    FASTT2I_LAUNCH(1, 32, 48 * 1024 + 4, nullptr, empty_kernel)(out.data());
    std::printf("%s | %s\n", cudaGetErrorString(cudaGetLastError()), fastt2i::emu::last_launch_error());
    std::printf("nothing ran: %g\n", out[0]);
  } else {
    return 2;
  }
  return 0;
}
