// The Python module fastt2i._C.  Importing it loads the kernels, which register
// themselves with the dispatcher (TORCH_LIBRARY_IMPL in each op's source file);
// this file only reports how the extension was built.
#include <pybind11/pybind11.h>

#include <string>

#include "cpu/kernels.h"
// Limits that the Python side repeats (fastt2i.ops: MAX_LAYERS, MAX_WORDS, ...), exported by
// limits() so that a test holds both sides to the same values.
#include "damsm_host.h"
#include "df_affine_host.h"
#include "word_region_attention_host.h"
#ifdef FASTT2I_WITH_CUDA
#include "cuda/kernels.h"
#endif

namespace {

bool with_cuda() {
#ifdef FASTT2I_WITH_CUDA
  return true;
#else
  return false;
#endif
}

std::string build_info() {
  std::string info = "compiler " __VERSION__;
#ifdef FASTT2I_WITH_CUDA
  info += "; CUDA kernels for " FASTT2I_CUDA_ARCHS;
#else
  info += "; no CUDA kernels";
#endif
#ifdef _OPENMP
  info += "; OpenMP";
#endif
  return info;
}

pybind11::dict limits() {
  pybind11::dict out;
  out["df_affine_max_layers"] = fastt2i::kDfAffineMaxLayers;
  out["word_region_attention_max_words"] = fastt2i::kWraMaxWords;
  out["damsm_chunk_elements"] = fastt2i::kDamsmChunkElements;
#ifdef FASTT2I_WITH_CUDA
  out["damsm_max_words_cuda"] = fastt2i::cuda::kDamsmMaxWords;
#endif
  return out;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastt2i compiled kernels (CPU, and CUDA when built with it)";
  m.def("with_cuda", &with_cuda, "whether the CUDA kernels were compiled in");
  m.def("build_info", &build_info, "compiler, CUDA architectures and OpenMP of this build");
  m.def("limits", &limits, "the kernels' size limits (also written in fastt2i.ops), by name");
  m.def("cpu_capability", &fastt2i::cpu_kernel_level,
        "instruction-set level the CPU kernels run at (DEFAULT, AVX2, AVX512; ATEN_CPU_CAPABILITY forces one)");
  m.def("cpu_levels_built", &fastt2i::cpu_levels_built, "the CPU kernel levels compiled into this build");
}
