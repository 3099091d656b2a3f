// Per-level helpers of the CPU kernels on ATen's explicit SIMD layer (at::vec::Vectorized), included by
// the kernel files only: they are compiled once per CPU_CAPABILITY into fastt2i::<level>.
//
// A "step" is one Vectorized<scalar_t> of input elements, held as kAcc vectors of the accumulate type
// (float for float/bfloat16/float16, double for double): half types load 2 float vectors per step
// through convert_to_float, so all arithmetic is in float32.  Loads of a partial step (the tail of a
// row, n < kStep) fill the unused lanes with zeros; stores write only n elements.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cstdint>
#include <type_traits>

#ifndef CPU_CAPABILITY
#error "vec_io.h is for the per-level kernel files (compiled with -DCPU_CAPABILITY=...)"
#endif

namespace fastt2i::CPU_CAPABILITY {

using at::vec::Vectorized;

template <typename scalar_t>
struct VecIO {
  using acc_t = at::opmath_type<scalar_t>;
  using Acc = Vectorized<acc_t>;
  using Raw = Vectorized<scalar_t>;
  static constexpr int64_t kStep = Raw::size();                // input elements per step
  static constexpr int64_t kAccLanes = Acc::size();
  static constexpr int64_t kAcc = kStep / kAccLanes;            // accumulate vectors per step (1 or 2)
  static constexpr bool kReduced = !std::is_same_v<scalar_t, acc_t>;

  static inline void load(const scalar_t* p, Acc* out, int64_t n = kStep) {
    const Raw raw = n == kStep ? Raw::loadu(p) : Raw::loadu(p, n);
    if constexpr (kReduced) {
      auto [lo, hi] = at::vec::convert_to_float<scalar_t>(raw);
      out[0] = lo;
      out[1] = hi;
    } else {
      out[0] = raw;
    }
  }

  static inline void store(scalar_t* p, const Acc* v, int64_t n = kStep) {
    Raw raw;
    if constexpr (kReduced) {
      raw = at::vec::convert_from_float<scalar_t>(v[0], v[1]);
    } else {
      raw = v[0];
    }
    if (n == kStep)
      raw.store(p);
    else
      raw.store(p, static_cast<int>(n));
  }
};

// leaky ReLU without a branch: v where v > 0, else v * slope (any slope; NaN stays NaN).
template <typename acc_t>
inline Vectorized<acc_t> leaky_relu(const Vectorized<acc_t>& v, const Vectorized<acc_t>& slope) {
  return Vectorized<acc_t>::blendv(v * slope, v, v > Vectorized<acc_t>(acc_t(0)));
}

// d * (z > 0 ? 1 : slope): the derivative of leaky ReLU at z applied to d, branch-free.
template <typename acc_t>
inline Vectorized<acc_t> leaky_relu_grad(const Vectorized<acc_t>& d, const Vectorized<acc_t>& z,
                                         const Vectorized<acc_t>& slope) {
  return Vectorized<acc_t>::blendv(d * slope, d, z > Vectorized<acc_t>(acc_t(0)));
}

}  // namespace fastt2i::CPU_CAPABILITY
