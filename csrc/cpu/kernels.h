// The CPU kernels of every op, declared once per instruction-set level.
//
// Each csrc/cpu/<op>.cpp is compiled once per level (CMakeLists.txt): with -DCPU_CAPABILITY=DEFAULT
// (baseline x86-64), AVX2 (-mavx2 -mfma -mf16c) and AVX512 (-mavx512f/bw/vl/dq, where the compiler
// has it), each time into its own namespace fastt2i::<level>, the way ATen builds its native/cpu
// kernels.  ATen's at::vec::Vectorized<T> then has the vector width of that level.
// registration.cpp (compiled once, baseline flags) registers one entry per op that calls the level
// chosen at run time from at::get_cpu_capability(), so ATEN_CPU_CAPABILITY=default|avx2|avx512
// forces a level.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <string>
#include <tuple>
#include <vector>

#define FASTT2I_DECLARE_CPU_KERNELS(LEVEL)                                                                      \
  namespace fastt2i::LEVEL {                                                                                    \
  at::Tensor bias_leaky_relu_fwd_cpu(const at::Tensor& x, const std::optional<at::Tensor>& bias, double slope); \
  at::Tensor bias_leaky_relu_bwd_cpu(const at::Tensor& grad, const at::Tensor& y, double slope);                \
  at::Tensor df_affine_fwd_cpu(const at::Tensor& x, const at::Tensor& gamma, const at::Tensor& beta,            \
                               double slope);                                                                   \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> df_affine_bwd_cpu(const at::Tensor& dy, const at::Tensor& x,   \
                                                                   const at::Tensor& gamma,                     \
                                                                   const at::Tensor& beta, double slope);       \
  std::tuple<at::Tensor, at::Tensor> gradient_penalty_fwd_cpu(at::TensorList grads, double k, double p,         \
                                                              double scale);                                    \
  std::vector<at::Tensor> gradient_penalty_bwd_cpu(const at::Tensor& grad_loss, at::TensorList grads,           \
                                                   const at::Tensor& sumsq, double k, double p, double scale);  \
  std::tuple<at::Tensor, at::Tensor, at::Tensor> word_region_attention_fwd_cpu(                                 \
      const at::Tensor& regions, const at::Tensor& words, const std::optional<at::Tensor>& mask,                \
      bool return_attention);                                                                                   \
  std::tuple<at::Tensor, at::Tensor> word_region_attention_bwd_cpu(                                             \
      const at::Tensor& grad_context, const std::optional<at::Tensor>& grad_attention,                          \
      const at::Tensor& regions, const at::Tensor& words, const std::optional<at::Tensor>& mask,                \
      const at::Tensor& lse);                                                                                   \
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> damsm_word_fwd_cpu(                                \
      const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions, double gamma1,             \
      double gamma2, bool save);                                                                                \
  std::tuple<at::Tensor, at::Tensor> damsm_word_bwd_cpu(                                                        \
      const at::Tensor& grad_scores, const at::Tensor& words, const at::Tensor& lengths,                        \
      const at::Tensor& regions, const at::Tensor& alpha, const at::Tensor& beta, const at::Tensor& contexts,   \
      double gamma1, double gamma2);                                                                            \
  std::tuple<at::Tensor, at::Tensor> gate_split_fwd_cpu(const at::Tensor& gate_logits, const at::Tensor& x);    \
  std::tuple<at::Tensor, at::Tensor> gate_split_bwd_cpu(                                                        \
      const std::optional<at::Tensor>& grad_key, const std::optional<at::Tensor>& grad_nonkey,                  \
      const at::Tensor& gate_logits, const at::Tensor& x);                                                      \
  }

#ifdef CPU_CAPABILITY  // a kernel file: declares its own level's kernels (checks the signatures)
FASTT2I_DECLARE_CPU_KERNELS(CPU_CAPABILITY)
#endif

namespace fastt2i {

// The level the CPU kernels run at: "DEFAULT", "AVX2" or "AVX512" (at::get_cpu_capability(),
// lowered to the highest level this build has).  Defined in registration.cpp.
std::string cpu_kernel_level();
// The levels compiled into this build, lowest first, e.g. "DEFAULT AVX2 AVX512".
std::string cpu_levels_built();

}  // namespace fastt2i
