// Registers the CPU kernels of every op with the dispatcher.  Compiled once with baseline flags
// (never per level): each registered entry forwards to the kernels of the level chosen at run time.
#include <ATen/Version.h>
#include <torch/library.h>

#include <string>

#include "kernels.h"

FASTT2I_DECLARE_CPU_KERNELS(DEFAULT)
#ifdef FASTT2I_CPU_AVX2
FASTT2I_DECLARE_CPU_KERNELS(AVX2)
#endif
#ifdef FASTT2I_CPU_AVX512
FASTT2I_DECLARE_CPU_KERNELS(AVX512)
#endif

namespace fastt2i {
namespace {

enum class Level { Default, Avx2, Avx512 };

// at::get_cpu_capability() is ATen's own choice (the CPU's features, or ATEN_CPU_CAPABILITY when
// set), so our kernels always run at the level of ATen's: "DEFAULT", "AVX2", "AVX512" on x86.
Level choose_level() {
  const std::string aten = at::get_cpu_capability();
#ifdef FASTT2I_CPU_AVX512
  if (aten == "AVX512") return Level::Avx512;
#endif
#ifdef FASTT2I_CPU_AVX2
  if (aten == "AVX2" || aten == "AVX512") return Level::Avx2;
#endif
  return Level::Default;
}

Level level() {
  static const Level chosen = choose_level();  // fixed for the process, as ATen's
  return chosen;
}

// One registered function per op that calls the chosen level's kernel.
template <auto Default, auto Avx2, auto Avx512, typename Fn = decltype(Default)>
struct PerLevel;

template <auto Default, auto Avx2, auto Avx512, typename R, typename... Args>
struct PerLevel<Default, Avx2, Avx512, R (*)(Args...)> {
  static R call(Args... args) {
    switch (level()) {
      case Level::Avx512:
        return Avx512(args...);
      case Level::Avx2:
        return Avx2(args...);
      default:
        return Default(args...);
    }
  }
};

#ifdef FASTT2I_CPU_AVX2
#define FASTT2I_AVX2_OR_DEFAULT(fn) &AVX2::fn
#else
#define FASTT2I_AVX2_OR_DEFAULT(fn) &DEFAULT::fn
#endif
#ifdef FASTT2I_CPU_AVX512
#define FASTT2I_AVX512_OR_LOWER(fn) &AVX512::fn
#else
#define FASTT2I_AVX512_OR_LOWER(fn) FASTT2I_AVX2_OR_DEFAULT(fn)
#endif
#define FASTT2I_PER_LEVEL(fn) \
  &PerLevel<&DEFAULT::fn, FASTT2I_AVX2_OR_DEFAULT(fn), FASTT2I_AVX512_OR_LOWER(fn)>::call

}  // namespace

std::string cpu_kernel_level() {
  switch (level()) {
    case Level::Avx512:
      return "AVX512";
    case Level::Avx2:
      return "AVX2";
    default:
      return "DEFAULT";
  }
}

std::string cpu_levels_built() {
  std::string levels = "DEFAULT";
#ifdef FASTT2I_CPU_AVX2
  levels += " AVX2";
#endif
#ifdef FASTT2I_CPU_AVX512
  levels += " AVX512";
#endif
  return levels;
}

TORCH_LIBRARY_IMPL(fastt2i, CPU, m) {
  m.impl("bias_leaky_relu_fwd", FASTT2I_PER_LEVEL(bias_leaky_relu_fwd_cpu));
  m.impl("bias_leaky_relu_bwd", FASTT2I_PER_LEVEL(bias_leaky_relu_bwd_cpu));
  m.impl("df_affine_fwd", FASTT2I_PER_LEVEL(df_affine_fwd_cpu));
  m.impl("df_affine_bwd", FASTT2I_PER_LEVEL(df_affine_bwd_cpu));
  m.impl("gradient_penalty_fwd", FASTT2I_PER_LEVEL(gradient_penalty_fwd_cpu));
  m.impl("gradient_penalty_bwd", FASTT2I_PER_LEVEL(gradient_penalty_bwd_cpu));
  m.impl("word_region_attention_fwd", FASTT2I_PER_LEVEL(word_region_attention_fwd_cpu));
  m.impl("word_region_attention_bwd", FASTT2I_PER_LEVEL(word_region_attention_bwd_cpu));
  m.impl("damsm_word_fwd", FASTT2I_PER_LEVEL(damsm_word_fwd_cpu));
  m.impl("damsm_word_bwd", FASTT2I_PER_LEVEL(damsm_word_bwd_cpu));
  m.impl("gate_split_fwd", FASTT2I_PER_LEVEL(gate_split_fwd_cpu));
  m.impl("gate_split_bwd", FASTT2I_PER_LEVEL(gate_split_bwd_cpu));
}

}  // namespace fastt2i
