// Bias + leaky ReLU on CPU: y = lrelu(x + bias[c]) and its derivative dx = dy * (y > 0 ? 1 : slope).
// The derivative is a function of the saved output only, so the same backward kernel serves every
// order of differentiation (see fastt2i/ops/bias_leaky_relu.py).  Compiled once per CPU level
// (kernels.h): at::vec::map / map2 and Vectorized steps with branch-free selects (blendv), float32
// arithmetic for half types, parallel with ATen's thread pool.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Optional.h>

#include <algorithm>

#include "../bias_leaky_relu_host.h"
#include "../common.h"
#include "kernels.h"
#include "vec_io.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task

// Dense memory in any order, no bias.  The lambdas take Vectorized<acc_t>: for half types map then
// converts each step to float32 and back.
template <typename scalar_t, typename acc_t>
void forward_flat(const scalar_t* x, scalar_t* y, int64_t n, acc_t slope) {
  at::parallel_for(0, n, kGrain, [=](int64_t i0, int64_t i1) {
    const Vectorized<acc_t> s(slope);
    at::vec::map<scalar_t>([=](Vectorized<acc_t> v) { return leaky_relu(v, s); }, y + i0, x + i0, i1 - i0);
  });
}

// NCHW-contiguous (B, C, S): rows of S values share one bias.
template <typename scalar_t, typename acc_t>
void forward_rows(const scalar_t* x, scalar_t* y, const acc_t* bias, int64_t BC, int64_t C, int64_t S, acc_t slope) {
  at::parallel_for(0, BC, std::max<int64_t>(1, kGrain / std::max<int64_t>(S, 1)), [=](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const Vectorized<acc_t> bv(bias[r % C]), s(slope);
      at::vec::map<scalar_t>([=](Vectorized<acc_t> v) { return leaky_relu(v + bv, s); }, y + r * S, x + r * S, S);
    }
  });
}

// NHWC (B, S, C): every position holds C channels; the bias is padded to whole steps (zeros) once.
template <typename scalar_t, typename acc_t>
void forward_positions(const scalar_t* x, scalar_t* y, const acc_t* bias, int64_t positions, int64_t C,
                       acc_t slope_s) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  const int64_t C_pad = (C + IO::kStep - 1) / IO::kStep * IO::kStep;
  std::vector<acc_t> bias_pad(static_cast<size_t>(C_pad), acc_t(0));
  std::copy(bias, bias + C, bias_pad.begin());
  const acc_t* bp = bias_pad.data();
  at::parallel_for(0, positions, std::max<int64_t>(1, kGrain / std::max<int64_t>(C, 1)), [=](int64_t p0, int64_t p1) {
    const Acc slope(slope_s);
    Acc v[IO::kAcc];
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t c = 0; c < C; c += IO::kStep) {
        const int64_t n = std::min(IO::kStep, C - c);
        IO::load(x + p * C + c, v, n);
        for (int64_t u = 0; u < IO::kAcc; ++u)
          v[u] = leaky_relu(v[u] + Acc::loadu(bp + c + u * IO::kAccLanes), slope);
        IO::store(y + p * C + c, v, n);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_flat(const scalar_t* g, const scalar_t* y, scalar_t* out, int64_t n, acc_t slope) {
  at::parallel_for(0, n, kGrain, [=](int64_t i0, int64_t i1) {
    const Vectorized<acc_t> s(slope);
    at::vec::map2<scalar_t>([=](Vectorized<acc_t> gv, Vectorized<acc_t> yv) { return leaky_relu_grad(gv, yv, s); },
                            out + i0, g + i0, y + i0, i1 - i0);
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
