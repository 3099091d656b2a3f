// CUDA emulator runtime: launches, barriers, warp exchange, the runtime API calls (see cuda_emu.h).
#include "cuda_emu.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace fastt2i {
namespace emu {
namespace {

// Seconds a barrier waits before it reports a deadlock (FASTT2I_EMU_DEADLOCK_SECONDS, default 300).
int deadlock_seconds() {
  static const int seconds = [] {
    const char* env = std::getenv("FASTT2I_EMU_DEADLOCK_SECONDS");
    const int v = env != nullptr ? std::atoi(env) : 0;
    return v > 0 ? v : 300;
  }();
  return seconds;
}

// A barrier whose party count shrinks when a thread leaves (returns from the kernel): a GPU barrier
// waits only for the threads that have not exited.  Mutex + condition variable, so ThreadSanitizer
// sees every arrival happen before every departure.
class Barrier {
 public:
  void reset(int parties) {
    std::lock_guard<std::mutex> lock(mutex_);
    parties_ = parties;
    arrived_ = 0;
  }

  // on_complete runs in the last arriving thread before any thread leaves the barrier.
  void arrive_and_wait(const char* what, const char* kernel, const std::function<void()>& on_complete = {}) {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t phase = phase_;
    if (++arrived_ == parties_) {
      if (on_complete) on_complete();
      complete();
      return;
    }
    // A barrier that some thread never reaches hangs a GPU; here it ends the process with a message.
    if (!cv_.wait_for(lock, std::chrono::seconds(deadlock_seconds()), [&] { return phase_ != phase; })) {
      std::fprintf(stderr, "fastt2i CUDA emulator: deadlock in %s: %d of %d threads waited at %s for %d s\n",
                   kernel, arrived_, parties_, what, deadlock_seconds());
      std::abort();
    }
  }

  void leave() {
    std::lock_guard<std::mutex> lock(mutex_);
    --parties_;
    if (arrived_ > 0 && arrived_ == parties_) complete();
  }

 private:
  void complete() {
    arrived_ = 0;
    ++phase_;
    cv_.notify_all();
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  int parties_ = 0, arrived_ = 0;
  uint64_t phase_ = 0;
};

struct Warp {
  Barrier barrier;
  unsigned running = 0;  // lanes that have not returned (guarded by the barriers' ordering)
  std::mutex running_mutex;
  uint64_t words[32] = {};
};

struct Block {
  const char* kernel = "";
  int threads = 0;
  Barrier sync;       // __syncthreads
  Barrier block_end;  // all threads done with a block before the next one starts
  std::vector<std::unique_ptr<Warp>> warps;
  std::vector<unsigned char> dynamic_shared;
};

thread_local Block* current_block = nullptr;
thread_local int current_thread = 0;  // linear thread index in the block
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_message;
std::mutex launch_mutex;  // one launch at a time: static __shared__ storage is per process
std::atomic<int> emulated_sms{4};

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "fastt2i CUDA emulator: %s\n", message.c_str());
  std::abort();
}

void reset_block(Block& b) {
  b.sync.reset(b.threads);
  for (size_t w = 0; w < b.warps.size(); ++w) {
    const int lanes = std::min(32, b.threads - static_cast<int>(w) * 32);
    b.warps[w]->barrier.reset(lanes);
    b.warps[w]->running = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1);
  }
  if (!b.dynamic_shared.empty()) std::memset(b.dynamic_shared.data(), 0xff, b.dynamic_shared.size());
}

}  // namespace

const char* last_launch_error() { return last_message.c_str(); }

void set_num_sms(int count) { emulated_sms = count > 0 ? count : 1; }

std::string launch_limit_violation(dim3 grid, dim3 block, size_t dynamic_smem) {
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  auto dims = [](dim3 d) {
    return "(" + std::to_string(d.x) + ", " + std::to_string(d.y) + ", " + std::to_string(d.z) + ")";
  };
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || threads == 0) return "empty grid or block " + dims(grid) + " " + dims(block);
  if (threads > kMaxThreadsPerBlock || block.x > kMaxBlockDimXY || block.y > kMaxBlockDimXY || block.z > kMaxBlockDimZ)
    return "block " + dims(block) + " exceeds 1024 threads or (1024, 1024, 64)";
  if (grid.x > kMaxGridDimX || grid.y > kMaxGridDimYZ || grid.z > kMaxGridDimYZ)
    return "grid " + dims(grid) + " exceeds (2^31 - 1, 65535, 65535)";
  if (dynamic_smem > static_cast<size_t>(kMaxDynamicSharedBytes))
    return "dynamic shared memory " + std::to_string(dynamic_smem) + " B exceeds 48 KiB";
  return "";
}

void run_launch(dim3 grid, dim3 block, size_t smem, const char* name, const std::function<void()>& body) {
  const std::string violation = launch_limit_violation(grid, block, smem);
  if (!violation.empty()) {
    last_error = cudaErrorInvalidConfiguration;
    last_message = std::string(name) + ": " + violation;
    return;
  }
  last_message.clear();
  std::lock_guard<std::mutex> serial(launch_mutex);
  Block b;
  b.kernel = name;
  b.threads = static_cast<int>(block.x * block.y * block.z);
  for (int w = 0; w < (b.threads + 31) / 32; ++w) b.warps.push_back(std::make_unique<Warp>());
  b.dynamic_shared.resize(smem);
  reset_block(b);
  b.block_end.reset(b.threads);
  const uint64_t blocks = uint64_t(grid.x) * grid.y * grid.z;
  auto thread_main = [&](int t) {
    current_block = &b;
    current_thread = t;
    threadIdx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
    blockDim = block;
    gridDim = grid;
    Warp& warp = *b.warps[t / 32];
    for (uint64_t i = 0; i < blocks; ++i) {
      blockIdx = uint3{static_cast<unsigned>(i % grid.x), static_cast<unsigned>((i / grid.x) % grid.y),
                       static_cast<unsigned>(i / (uint64_t(grid.x) * grid.y))};
      body();
      {  // returned: no longer awaited at barriers or shuffles
        std::lock_guard<std::mutex> lock(warp.running_mutex);
        warp.running &= ~(1u << (t % 32));
      }
      warp.barrier.leave();
      b.sync.leave();
      b.block_end.arrive_and_wait("the end of the block", name, [&] { reset_block(b); });
    }
    current_block = nullptr;
  };
  std::vector<std::thread> threads;
  threads.reserve(b.threads);
  for (int t = 0; t < b.threads; ++t) threads.emplace_back(thread_main, t);
  for (auto& th : threads) th.join();
}

void syncthreads() {
  if (current_block == nullptr) fail("__syncthreads outside a kernel");
  current_block->sync.arrive_and_wait("__syncthreads", current_block->kernel);
}

void* dynamic_shared_memory() {
  if (current_block == nullptr) fail("dynamic shared memory outside a kernel");
  return current_block->dynamic_shared.empty() ? nullptr : current_block->dynamic_shared.data();
}

uint64_t warp_exchange(unsigned mask, uint64_t word, int source_lane, const char* what) {
  if (current_block == nullptr) fail(std::string(what) + " outside a kernel");
  Block& b = *current_block;
  Warp& warp = *b.warps[current_thread / 32];
  const int lane = current_thread % 32;
  unsigned running;
  {
    std::lock_guard<std::mutex> lock(warp.running_mutex);
    running = warp.running;
  }
  if (mask != running) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s in %s: mask 0x%08x but the warp's running lanes are 0x%08x (lane %d)", what,
                  b.kernel, mask, running, lane);
    fail(buf);
  }
  if (((mask >> source_lane) & 1u) == 0) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "%s in %s: lane %d reads lane %d outside the mask 0x%08x", what, b.kernel, lane,
                  source_lane, mask);
    fail(buf);
  }
  warp.words[lane] = word;
  warp.barrier.arrive_and_wait(what, b.kernel);
  const uint64_t out = warp.words[source_lane];
  warp.barrier.arrive_and_wait(what, b.kernel);  // nobody overwrites a word before every lane read it
  return out;
}

}  // namespace emu
}  // namespace fastt2i

cudaError_t cudaGetLastError() {
  const cudaError_t e = fastt2i::emu::last_error;
  fastt2i::emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError() { return fastt2i::emu::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  }
  return "unknown error";
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int) {
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *value = fastt2i::emu::emulated_sms; return cudaSuccess;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = static_cast<int>(fastt2i::emu::kMaxDynamicSharedBytes); return cudaSuccess;
  }
  return cudaErrorInvalidValue;
}
