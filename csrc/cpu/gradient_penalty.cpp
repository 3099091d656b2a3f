// Fused gradient penalty on CPU: loss = k * mean_b s_b^(p/2), s_b = scale^2 * sum_i ||grads_i[b]||^2,
// and its derivative d loss / d grads_i[b] = grad_loss * k*p/B * scale^2 * s_b^(p/2-1) * grads_i[b]
// (0 where s_b = 0).  Math and autograd in fastt2i/ops/gradient_penalty.py.  Each gradient is read
// in place (sample b = the flat span [b*N, (b+1)*N)), so there is no concatenation copy; partial
// sums are per fixed-size chunk, so results do not depend on the number of threads.  Compiled once per
// CPU level (kernels.h) on at::vec::Vectorized, float32 accumulation for half types.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "../common.h"
#include "kernels.h"
#include "vec_io.h"
#include "../gradient_penalty_host.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kChunk = 16384;  // elements of one sample per partial sum

// Tasks of (sample, chunk) per parallel piece: about 32768 elements each (ATen's grain size), so a
// small gradient (DF-GAN's (B, 256) sentence gradient) runs inline instead of waking the thread pool.
inline int64_t task_grain(int64_t N) {
  return std::max<int64_t>(1, int64_t{32768} / std::max<int64_t>(1, std::min(N, kChunk)));
}

std::vector<at::Tensor> checked_inputs(at::TensorList grads_in) {
  return gp_checked_inputs(grads_in, /*device_first=*/false, [&](const at::Tensor& g, size_t i) {
    TORCH_CHECK(g.device() == grads_in[0].device(), "grads[", i, "]: expected device ", grads_in[0].device());
  });
}

template <typename acc_t>
acc_t power_or_zero(acc_t s, acc_t e) {  // s^e for s > 0, else 0 (never NaN/inf at 0)
  return s > acc_t(0) ? std::pow(s, e) : acc_t(0);
}

// Partial sums of squares of every (sample, chunk) of one tensor: part[b * chunks + j].  Four
// independent vector accumulators per step hide the FMA latency.  The lanes accumulate in the
// tensor's own accumulate type (float32 for float/half types, as the reference's per-tensor sums).
template <typename scalar_t, typename part_t>
void sum_squares(const scalar_t* g, int64_t B, int64_t N, part_t* part, int64_t chunks) {
  using IO = VecIO<scalar_t>;
  using acc_t = typename IO::acc_t;
  using Acc = Vectorized<acc_t>;
  at::parallel_for(0, B * chunks, task_grain(N), [=](int64_t t0, int64_t t1) {
    constexpr int64_t kUnroll = 4;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks, j = t % chunks;
      const int64_t begin = j * kChunk, end = std::min(N, begin + kChunk);
      const scalar_t* gb = g + b * N;
      Acc acc[kUnroll][IO::kAcc], v[IO::kAcc];
      for (auto& row : acc)
        for (auto& a : row) a = Acc(acc_t(0));
      int64_t i = begin;
      for (; i + kUnroll * IO::kStep <= end; i += kUnroll * IO::kStep) {
        for (int64_t r = 0; r < kUnroll; ++r) {
          IO::load(gb + i + r * IO::kStep, v);
          for (int64_t u = 0; u < IO::kAcc; ++u) acc[r][u] = at::vec::fmadd(v[u], v[u], acc[r][u]);
        }
      }
      for (; i < end; i += IO::kStep) {  // the last steps, the final one partial (zero-filled)
        IO::load(gb + i, v, std::min(IO::kStep, end - i));
        for (int64_t u = 0; u < IO::kAcc; ++u) acc[0][u] = at::vec::fmadd(v[u], v[u], acc[0][u]);
      }
      Acc total(acc_t(0));
      for (auto& row : acc)
        for (auto& a : row) total = total + a;
      part[t] = static_cast<part_t>(at::vec::vec_reduce_all<acc_t>([](Acc p, Acc q) { return p + q; }, total));
    }
  });
}

template <typename scalar_t, typename acc_t>
void scale_samples(const scalar_t* g, scalar_t* out, int64_t B, int64_t N, const acc_t* coef) {
  const int64_t chunks = (N + kChunk - 1) / kChunk;
  at::parallel_for(0, B * chunks, task_grain(N), [=](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks, j = t % chunks;
      const int64_t begin = b * N + j * kChunk, end = b * N + std::min(N, (j + 1) * kChunk);
      using V = Vectorized<at::opmath_type<scalar_t>>;  // float lanes for half types (map converts)
      const V c(static_cast<at::opmath_type<scalar_t>>(coef[b]));
      at::vec::map<scalar_t>([=](V v) { return v * c; }, out + begin, g + begin, end - begin);
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gradient_penalty_fwd_cpu(at::TensorList grads_in, double k, double p,
                                                           double scale) {
  TORCH_CHECK(p > 0, "p: expected > 0, got ", p);
  const auto grads = checked_inputs(grads_in);
  const int64_t B = grads[0].size(0);
  const auto acc = gp_acc_type(grads);
  auto opts = grads[0].options().dtype(acc);
  auto sumsq = at::empty({B}, opts);
  auto loss = at::empty({}, opts);
  AT_DISPATCH_FLOATING_TYPES(acc, "gradient_penalty_fwd_cpu", [&] {
    using acc_t = scalar_t;
    std::vector<acc_t> s(static_cast<size_t>(B), acc_t(0));
    for (const auto& g : grads) {
      const int64_t N = g.numel() / B;
      if (N == 0) continue;
      const int64_t chunks = (N + kChunk - 1) / kChunk;
      std::vector<acc_t> part(static_cast<size_t>(B * chunks));
      FASTT2I_DISPATCH_FLOATS(g.scalar_type(), "gradient_penalty_sum_squares", [&] {
        sum_squares<scalar_t, acc_t>(g.const_data_ptr<scalar_t>(), B, N, part.data(), chunks);
      });
      for (int64_t b = 0; b < B; ++b)
        for (int64_t j = 0; j < chunks; ++j) s[b] += part[b * chunks + j];
    }
    const acc_t scale2 = static_cast<acc_t>(scale) * static_cast<acc_t>(scale);
    acc_t total = 0;
    acc_t* sp = sumsq.mutable_data_ptr<acc_t>();
    for (int64_t b = 0; b < B; ++b) {
      sp[b] = s[b] * scale2;
      total += power_or_zero<acc_t>(sp[b], static_cast<acc_t>(p / 2));
    }
    *loss.mutable_data_ptr<acc_t>() = static_cast<acc_t>(k) * total / static_cast<acc_t>(B);
  });
  return {loss, sumsq};
}

std::vector<at::Tensor> gradient_penalty_bwd_cpu(const at::Tensor& grad_loss, at::TensorList grads_in,
                                                 const at::Tensor& sumsq_in, double k, double p, double scale) {
  const auto grads = checked_inputs(grads_in);
  const int64_t B = grads[0].size(0);
  const auto acc = gp_acc_type(grads);
  TORCH_CHECK(sumsq_in.dim() == 1 && sumsq_in.size(0) == B && sumsq_in.scalar_type() == acc,
              "sumsq: expected (", B, ",) of ", acc, ", got ", sumsq_in.sizes(), " ", sumsq_in.scalar_type());
  TORCH_CHECK(grad_loss.numel() == 1, "grad_loss: expected one element, got ", grad_loss.sizes());
  const auto sumsq = sumsq_in.contiguous();
  std::vector<at::Tensor> outs;
  outs.reserve(grads.size());
  AT_DISPATCH_FLOATING_TYPES(acc, "gradient_penalty_bwd_cpu", [&] {
    using acc_t = scalar_t;
    const acc_t gl = grad_loss.to(acc).item<acc_t>();
    const acc_t base = gl * static_cast<acc_t>(k * p / static_cast<double>(B) * scale * scale);
    std::vector<acc_t> coef(static_cast<size_t>(B));
    const acc_t* sp = sumsq.const_data_ptr<acc_t>();
    for (int64_t b = 0; b < B; ++b)
      coef[b] = sp[b] > acc_t(0) ? base * std::pow(sp[b], static_cast<acc_t>(p / 2 - 1)) : acc_t(0);
    for (const auto& g : grads) {
      auto out = at::empty_like(g);
      const int64_t N = g.numel() / B;
      if (N > 0) {
        FASTT2I_DISPATCH_FLOATS(g.scalar_type(), "gradient_penalty_scale_samples", [&] {
          scale_samples<scalar_t, acc_t>(g.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), B, N,
                                         coef.data());
        });
      }
      outs.push_back(out);
    }
  });
  return outs;
}

}  // namespace fastt2i::CPU_CAPABILITY
