// Bias + leaky ReLU on CPU: y = lrelu(x + bias[c]) and its derivative dx = dy * (y > 0 ? 1 : slope).
// The derivative is a function of the saved output only, so the same backward kernel serves every
// order of differentiation (see fastt2i/ops/bias_leaky_relu.py).  Elementwise loops over flat
// memory, parallel with ATen's thread pool; registration of the CPU kernels of
// fastt2i::bias_leaky_relu_fwd / bias_leaky_relu_bwd.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <c10/util/Optional.h>

#include <algorithm>

#include "../bias_leaky_relu_host.h"
#include "../common.h"
#include "kernels.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task

// v * (v > 0 ? 1 : slope) equals (v > 0 ? v : v * slope) exactly, but selects between two constants
// and multiplies unconditionally: the compiler vectorises it (a branch on the sign of random data
// mispredicts half the time, and -ftrapping-math forbids speculating v * slope).
template <typename acc_t>
inline acc_t gain(acc_t v, acc_t slope) { return v > acc_t(0) ? acc_t(1) : slope; }

template <typename scalar_t, typename acc_t>
void forward_flat(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, int64_t n, acc_t slope) {
  at::parallel_for(0, n, kGrain, [=](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const acc_t v = static_cast<acc_t>(x[i]);
      y[i] = static_cast<scalar_t>(v * gain(v, slope));
    }
  });
}

// NCHW-contiguous (B, C, S): rows of S values share one bias.
template <typename scalar_t, typename acc_t>
void forward_rows(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const acc_t* __restrict__ bias,
                  int64_t BC, int64_t C, int64_t S, acc_t slope) {
  at::parallel_for(0, BC, std::max<int64_t>(1, kGrain / std::max<int64_t>(S, 1)), [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const acc_t b = bias[r % C];
      const scalar_t* xr = x + r * S;
      scalar_t* yr = y + r * S;
      for (int64_t s = 0; s < S; ++s) {
        const acc_t v = static_cast<acc_t>(xr[s]) + b;
        yr[s] = static_cast<scalar_t>(v * gain(v, slope));
      }
    }
  });
}

// NHWC (B, S, C): every position holds C channels.
template <typename scalar_t, typename acc_t>
void forward_positions(const scalar_t* __restrict__ x, scalar_t* __restrict__ y, const acc_t* __restrict__ bias,
                       int64_t positions, int64_t C, acc_t slope) {
  at::parallel_for(0, positions, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [=](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* xp = x + p * C;
      scalar_t* yp = y + p * C;
      for (int64_t c = 0; c < C; ++c) {
        const acc_t v = static_cast<acc_t>(xp[c]) + bias[c];
        yp[c] = static_cast<scalar_t>(v * gain(v, slope));
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_flat(const scalar_t* __restrict__ g, const scalar_t* __restrict__ y, scalar_t* __restrict__ out,
                   int64_t n, acc_t slope) {
  at::parallel_for(0, n, kGrain, [=](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      out[i] = static_cast<scalar_t>(static_cast<acc_t>(g[i]) * gain(static_cast<acc_t>(y[i]), slope));
    }
  });
}

}  // namespace

at::Tensor bias_leaky_relu_fwd_cpu(const at::Tensor& x_in, const c10::optional<at::Tensor>& bias_in,
                                   double slope) {
  check_float(x_in, "x");
  const auto f = blr_forward_setup(x_in, bias_in);
  const auto &x = f.x, &y = f.y;
  const int64_t n = x.numel();
  if (n == 0) return y;
  FASTT2I_DISPATCH_FLOATS(x.scalar_type(), "bias_leaky_relu_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto s = static_cast<acc_t>(slope);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if (!f.has_bias) {
      forward_flat<scalar_t, acc_t>(xp, yp, n, s);
    } else {
      const int64_t B = x.size(0), C = f.C, S = f.S;
      const acc_t* bp = f.bias.const_data_ptr<acc_t>();
      // (B, C) inputs (S = 1) are "positions" of C contiguous channels, like NHWC
      if (f.channels_last || S == 1)
        forward_positions<scalar_t, acc_t>(xp, yp, bp, n / C, C, s);
      else
        forward_rows<scalar_t, acc_t>(xp, yp, bp, B * C, C, S, s);
    }
  });
  return y;
}

at::Tensor bias_leaky_relu_bwd_cpu(const at::Tensor& grad_in, const at::Tensor& y_in, double slope) {
  blr_check_backward(grad_in, y_in);
  const auto b = blr_backward_setup(grad_in, y_in);
  const int64_t n = b.y.numel();
  if (n == 0) return b.out;
  FASTT2I_DISPATCH_FLOATS(b.y.scalar_type(), "bias_leaky_relu_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    backward_flat<scalar_t, acc_t>(b.grad.const_data_ptr<scalar_t>(), b.y.const_data_ptr<scalar_t>(),
                                   b.out.mutable_data_ptr<scalar_t>(), n, static_cast<acc_t>(slope));
  });
  return b.out;
}

}  // namespace fastt2i::CPU_CAPABILITY
