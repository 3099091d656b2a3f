// Test-only ops of the emulated CUDA build (fastt2i_cuda_emu::*, next to the emulated glue ops):
// the emulated device's multiprocessor count, and the launch shapes the launchers compute, so that a
// test can check them against the device limits at shapes too large to run.
#include <torch/library.h>

#include <string>
#include <vector>

#include "../kernels.h"
#include "cuda_emu.h"

namespace fastt2i {
namespace cuda {
namespace {

void emu_set_num_sms(int64_t count) { emu::set_num_sms(static_cast<int>(count)); }

// [grid x, y, z, block x, y, z, dynamic shared bytes] of launch `kernel` for the sizes in args.
std::vector<int64_t> emu_launch_shape(const std::string& kernel, const std::vector<int64_t>& a) {
  auto need = [&](size_t n) {
    TORCH_CHECK(a.size() == n, "emu_launch_shape(", kernel, "): expected ", n, " sizes, got ", a.size());
  };
  LaunchShape s{};
  if (kernel == "df_affine_forward") {  // B, C, S
    need(3), s = df_affine_forward_shape(a[0], a[1], a[2]);
  } else if (kernel == "df_affine_backward") {  // B, C, S, channels_last, num_sms
    need(5);
    const int64_t splits = df_affine_backward_splits(1, a[0], a[1], a[2], a[3] != 0, static_cast<int>(a[4]));
    s = df_affine_backward_shape(splits, a[0], a[1], a[3] != 0);
  } else if (kernel == "bias_leaky_relu") {  // n
    need(1), s = bias_leaky_relu_shape(a[0]);
  } else if (kernel == "gate_split_backward") {  // n, positions, layout
    need(3), s = gate_split_backward_shape(a[0], a[1], static_cast<int>(a[2]));
  } else if (kernel == "gradient_penalty") {  // per-sample elements, B
    need(2), s = gradient_penalty_shape(gradient_penalty_chunks(a[0]), a[1]);
  } else if (kernel == "damsm_cosine_scores") {  // pairs, max_len, float64
    need(3), s = damsm_pair_shape(a[0], damsm_cosine_score_smem(a[2] ? DType::Float64 : DType::Float32, a[1]));
  } else if (kernel == "damsm_softmax_backward") {  // pairs, max_len, float64
    need(3), s = damsm_pair_shape(a[0], damsm_softmax_backward_smem(a[2] ? DType::Float64 : DType::Float32, a[1]));
  } else if (kernel == "word_region_attention_forward") {  // B, N
    need(2), s = word_region_attention_forward_shape(a[0], a[1]);
  } else if (kernel == "word_region_attention_backward") {  // B, N, float64, num_sms
    need(4);
    s = word_region_attention_backward_shape(a[2] ? DType::Float64 : DType::Float32, a[0], a[1],
                                             static_cast<int>(a[3]));
  } else {
    TORCH_CHECK(false, "emu_launch_shape: unknown kernel ", kernel);
  }
  return {s.grid[0], s.grid[1], s.grid[2], s.block[0], s.block[1], s.block[2], s.dynamic_smem};
}

// The emulator's verdict on a launch shape ("" = within the limits).
std::string emu_launch_limit_violation(const std::vector<int64_t>& shape) {
  TORCH_CHECK(shape.size() == 7, "emu_launch_limit_violation: expected the 7 numbers of emu_launch_shape");
  for (int64_t v : shape)
    if (v < 0 || v > 0xffffffffLL) return "a dimension outside 32 bits: " + std::to_string(v);
  auto u = [](int64_t v) { return static_cast<unsigned>(v); };
  return emu::launch_limit_violation(dim3(u(shape[0]), u(shape[1]), u(shape[2])),
                                     dim3(u(shape[3]), u(shape[4]), u(shape[5])), static_cast<size_t>(shape[6]));
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastt2i_cuda_emu, m) {
  m.def("emu_set_num_sms", &emu_set_num_sms);
  m.def("emu_launch_shape", &emu_launch_shape);
  m.def("emu_launch_limit_violation", &emu_launch_limit_violation);
}

}  // namespace cuda
}  // namespace fastt2i
