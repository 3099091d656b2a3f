// Spatial gate split on CPU: key = s * x, nonkey = (1 - s) * x with s = sigmoid(logits), and backward
// dx = s * dk + (1 - s) * dn, dlogits = sum over broadcast channels of (dk - dn) * x, times s * (1 - s)
// (fastt2i/ops/gate_split.py).  Compiled once per CPU level (kernels.h): Vectorized steps through VecIO
// (float32 arithmetic for half types), parallel with ATen's thread pool.  With one gate per position the
// work is split in chunks of positions: the chunk's gates are computed once into a buffer and serve
// every channel, and the channel sum of dlogits stays in registers / a float buffer.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "../gate_split_host.h"
#include "kernels.h"
#include "vec_io.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kGrain = 32768;  // elements per parallel task
// Positions per gate buffer (64 KiB of float gates, and as many channel sums backward: L2-resident).
// Rows of x are walked whole up to 128x128 positions: splitting them into shorter segments, one per
// channel in turn, made the NCHW forward 1.5x slower (rows of 16 KiB) on one core at the memory bound.
constexpr int64_t kChunk = 16384;
constexpr int64_t kChunkAlign = 64;  // chunks shorter than a sample: a multiple of every step

// With e = exp(-|l|) in (0, 1]: 1 / (1 + e) for l >= 0, e / (1 + e) below.  exp never overflows, so
// any finite logit gives a gate in [0, 1] (exactly 0 or 1 when saturated), never inf or NaN.  exp_u20
// (ATen's polynomial exp, about 20 ulp, inlined) instead of the Sleef call: the per-element gate is
// compute-bound with the u10 exp on one core.
template <typename acc_t>
inline Vectorized<acc_t> sigmoid(const Vectorized<acc_t>& l) {
  using Vec = Vectorized<acc_t>;
  const Vec one(acc_t(1));
  const Vec e = l.abs().neg().exp_u20();
  const Vec inv = one / (one + e);
  return Vec::blendv(e * inv, inv, l >= Vec(acc_t(0)));
}

// A step of t (n elements at p), zeros for a null t (an unused output's gradient).
template <typename scalar_t>
inline void load_or_zero(const scalar_t* t, int64_t i, Vectorized<at::opmath_type<scalar_t>>* v, int64_t n) {
  using IO = VecIO<scalar_t>;
  if (t != nullptr) {
    IO::load(t + i, v, n);
  } else {
    for (int64_t u = 0; u < IO::kAcc; ++u) v[u] = Vectorized<at::opmath_type<scalar_t>>(0);
  }
}

// sig[0 .. m) = sigmoid(logits[0 .. m)), written in whole steps (the buffer holds m rounded up to kChunkAlign).
template <typename scalar_t, typename acc_t>
inline void gates(const scalar_t* logits, int64_t m, acc_t* sig) {
  using IO = VecIO<scalar_t>;
  Vectorized<acc_t> v[IO::kAcc];
  for (int64_t j = 0; j < m; j += IO::kStep) {
    IO::load(logits + j, v, std::min(IO::kStep, m - j));
    for (int64_t u = 0; u < IO::kAcc; ++u) sigmoid(v[u]).store(sig + j + u * IO::kAccLanes);
  }
}

// Positions per chunk of a sample's gates: whole samples up to kChunk, and smaller chunks (multiples of
// kChunkAlign) while there are fewer than two chunks per thread.  Only the work split depends on the
// thread count: every output element is computed the same way (channel sums always run over c in order).
inline int64_t chunk_length(int64_t B, int64_t S) {
  int64_t len = std::min(S, kChunk);
  const int64_t want = 2 * static_cast<int64_t>(at::get_num_threads());
  while (len > kChunkAlign && B * ((S + len - 1) / len) < want)
    len = ((len / 2 + kChunkAlign - 1) / kChunkAlign) * kChunkAlign;
  return len;
}

// The per-position loops' work split: tasks are (sample, chunk of len positions) pairs, grain tasks each.
struct PositionChunks {
  int64_t len, count, grain;  // positions per chunk, chunks per sample, tasks per parallel grain
  PositionChunks(int64_t B, int64_t C, int64_t S)
      : len(chunk_length(B, S)), count((S + len - 1) / len),
        grain(std::max<int64_t>(1, kGrain / (len * std::max<int64_t>(C, 1)))) {}
};

inline int64_t buffer_length(int64_t len) { return (len + kChunkAlign - 1) / kChunkAlign * kChunkAlign; }

// ---- forward

template <typename scalar_t, typename acc_t>
void forward_flat(const scalar_t* l, const scalar_t* x, scalar_t* key, scalar_t* nonkey, int64_t n) {
  using IO = VecIO<scalar_t>;
  at::parallel_for(0, n, kGrain, [=](int64_t i0, int64_t i1) {
    const Vectorized<acc_t> one(acc_t(1));
    Vectorized<acc_t> lv[IO::kAcc], xv[IO::kAcc], k[IO::kAcc], r[IO::kAcc];
    for (int64_t i = i0; i < i1; i += IO::kStep) {
      const int64_t m = std::min(IO::kStep, i1 - i);
      IO::load(l + i, lv, m);
      IO::load(x + i, xv, m);
      for (int64_t u = 0; u < IO::kAcc; ++u) {
        const auto s = sigmoid(lv[u]);
        k[u] = s * xv[u];
        r[u] = (one - s) * xv[u];
      }
      IO::store(key + i, k, m);
      IO::store(nonkey + i, r, m);
    }
  });
}

// One gate per position, x NCHW: (b, c, s) at (b*C + c)*S + s.  The tasks walk row segments (b, chunk j,
// c) in memory order (a whole sample's rows one after the other when S <= kChunk), the chunk's gates
// computed once per task into a buffer and reused by every channel.
template <typename scalar_t, typename acc_t>
void forward_positions_nchw(const scalar_t* l, const scalar_t* x, scalar_t* key, scalar_t* nonkey, int64_t B,
                            int64_t C, int64_t S) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  const int64_t len = std::min(S, kChunk);
  const int64_t chunks = (S + len - 1) / len;
  at::parallel_for(0, B * chunks * C, std::max<int64_t>(1, kGrain / len), [=](int64_t t0, int64_t t1) {
    std::vector<acc_t> buffer(buffer_length(len));
    acc_t* sig = buffer.data();
    const Acc one(acc_t(1));
    Acc xv[IO::kAcc], k[IO::kAcc], r[IO::kAcc];
    int64_t cached = -1;  // the (b, j) whose gates sig holds
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bj = t / C, c = t % C, b = bj / chunks, s0 = (bj % chunks) * len;
      const int64_t m = std::min(len, S - s0);
      if (bj != cached) {
        gates(l + b * S + s0, m, sig);
        cached = bj;
      }
      const int64_t row = (b * C + c) * S + s0;
      const auto split = [&](int64_t j, int64_t n) {
        IO::load(x + row + j, xv, n);
        for (int64_t u = 0; u < IO::kAcc; ++u) {
          const Acc s = Acc::loadu(sig + j + u * IO::kAccLanes);
          k[u] = s * xv[u];
          r[u] = (one - s) * xv[u];
        }
        IO::store(key + row + j, k, n);
        IO::store(nonkey + row + j, r, n);
      };
      int64_t j = 0;
      for (; j + IO::kStep <= m; j += IO::kStep) split(j, IO::kStep);  // whole steps: no length test
      if (j < m) split(j, m - j);
    }
  });
}

// One gate per position, x NHWC: position p's C channels at p*C, one gate broadcast over them.
template <typename scalar_t, typename acc_t>
void forward_positions_nhwc(const scalar_t* l, const scalar_t* x, scalar_t* key, scalar_t* nonkey, int64_t B,
                            int64_t C, int64_t S) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  const PositionChunks split(B, C, S);
  const int64_t len = split.len, chunks = split.count;
  at::parallel_for(0, B * chunks, split.grain, [=](int64_t t0, int64_t t1) {
    std::vector<acc_t> buffer(buffer_length(len));
    acc_t* sig = buffer.data();
    Acc xv[IO::kAcc], k[IO::kAcc], r[IO::kAcc];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks, s0 = (t % chunks) * len;
      const int64_t m = std::min(len, S - s0);
      gates(l + b * S + s0, m, sig);
      for (int64_t q = 0; q < m; ++q) {
        const int64_t pos = (b * S + s0 + q) * C;
        const Acc s(sig[q]), rs(acc_t(1) - sig[q]);
        for (int64_t c = 0; c < C; c += IO::kStep) {
          const int64_t n = std::min(IO::kStep, C - c);
          IO::load(x + pos + c, xv, n);
          for (int64_t u = 0; u < IO::kAcc; ++u) {
            k[u] = s * xv[u];
            r[u] = rs * xv[u];
          }
          IO::store(key + pos + c, k, n);
          IO::store(nonkey + pos + c, r, n);
        }
      }
    }
  });
}

// ---- backward

template <typename scalar_t, typename acc_t>
void backward_flat(const scalar_t* dk, const scalar_t* dn, const scalar_t* l, const scalar_t* x, scalar_t* dl,
                   scalar_t* dx, int64_t n) {
  using IO = VecIO<scalar_t>;
  at::parallel_for(0, n, kGrain, [=](int64_t i0, int64_t i1) {
    const Vectorized<acc_t> one(acc_t(1));
    Vectorized<acc_t> lv[IO::kAcc], xv[IO::kAcc], kv[IO::kAcc], nv[IO::kAcc], gl[IO::kAcc], gx[IO::kAcc];
    for (int64_t i = i0; i < i1; i += IO::kStep) {
      const int64_t m = std::min(IO::kStep, i1 - i);
      IO::load(l + i, lv, m);
      IO::load(x + i, xv, m);
      load_or_zero(dk, i, kv, m);
      load_or_zero(dn, i, nv, m);
      for (int64_t u = 0; u < IO::kAcc; ++u) {
        const auto s = sigmoid(lv[u]);
        const auto r = one - s;
        gx[u] = s * kv[u] + r * nv[u];
        gl[u] = (kv[u] - nv[u]) * xv[u] * s * r;
      }
      IO::store(dx + i, gx, m);
      IO::store(dl + i, gl, m);
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_positions(const scalar_t* dk, const scalar_t* dn, const scalar_t* l, const scalar_t* x, scalar_t* dl,
                        scalar_t* dx, int64_t B, int64_t C, int64_t S, bool channels_last) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  const PositionChunks split(B, C, S);
  const int64_t len = split.len, chunks = split.count;
  at::parallel_for(0, B * chunks, split.grain, [=](int64_t t0, int64_t t1) {
    // the chunk's gates, then the sum over channels of (dk - dn) * x per position
    std::vector<acc_t> buffer(2 * buffer_length(len));
    acc_t* sig = buffer.data();
    acc_t* sum = sig + buffer_length(len);
    const Acc one(acc_t(1));
    Acc xv[IO::kAcc], kv[IO::kAcc], nv[IO::kAcc], gx[IO::kAcc];
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t b = t / chunks, s0 = (t % chunks) * len;
      const int64_t m = std::min(len, S - s0);
      gates(l + b * S + s0, m, sig);
      if (!channels_last) {
        std::fill(sum, sum + buffer_length(len), acc_t(0));
        for (int64_t c = 0; c < C; ++c) {
          const int64_t row = (b * C + c) * S + s0;
          for (int64_t j = 0; j < m; j += IO::kStep) {
            const int64_t n = std::min(IO::kStep, m - j);
            IO::load(x + row + j, xv, n);
            load_or_zero(dk, row + j, kv, n);
            load_or_zero(dn, row + j, nv, n);
            for (int64_t u = 0; u < IO::kAcc; ++u) {
              const Acc s = Acc::loadu(sig + j + u * IO::kAccLanes);
              gx[u] = s * kv[u] + (one - s) * nv[u];
              acc_t* acc = sum + j + u * IO::kAccLanes;
              (Acc::loadu(acc) + (kv[u] - nv[u]) * xv[u]).store(acc);
            }
            IO::store(dx + row + j, gx, n);
          }
        }
      } else {
        for (int64_t q = 0; q < m; ++q) {
          const int64_t pos = (b * S + s0 + q) * C;
          const Acc s(sig[q]), rs(acc_t(1) - sig[q]);
          Acc total(acc_t(0));
          for (int64_t c = 0; c < C; c += IO::kStep) {
            const int64_t n = std::min(IO::kStep, C - c);  // a partial step loads zeros past n
            IO::load(x + pos + c, xv, n);
            load_or_zero(dk, pos + c, kv, n);
            load_or_zero(dn, pos + c, nv, n);
            for (int64_t u = 0; u < IO::kAcc; ++u) {
              gx[u] = s * kv[u] + rs * nv[u];
              total = total + (kv[u] - nv[u]) * xv[u];
            }
            IO::store(dx + pos + c, gx, n);
          }
          sum[q] = at::vec::vec_reduce_all<acc_t>([](Acc a, Acc b) { return a + b; }, total);
        }
      }
      // dlogits = sum * s * (1 - s), in whole steps of the buffers, stored m elements
      Acc g[IO::kAcc];
      for (int64_t j = 0; j < m; j += IO::kStep) {
        for (int64_t u = 0; u < IO::kAcc; ++u) {
          const Acc s = Acc::loadu(sig + j + u * IO::kAccLanes);
          g[u] = Acc::loadu(sum + j + u * IO::kAccLanes) * s * (one - s);
        }
        IO::store(dl + b * S + s0 + j, g, std::min(IO::kStep, m - j));
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gate_split_fwd_cpu(const at::Tensor& logits_in, const at::Tensor& x_in) {
  const auto in = gate_split_setup(logits_in, x_in);
  auto key = at::empty_like(in.x), nonkey = at::empty_like(in.x);
  const int64_t n = in.x.numel();
  if (n == 0) return {key, nonkey};
  FASTT2I_DISPATCH_FLOATS(in.x.scalar_type(), "gate_split_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* lp = in.logits.const_data_ptr<scalar_t>();
    const scalar_t* xp = in.x.const_data_ptr<scalar_t>();
    scalar_t* kp = key.mutable_data_ptr<scalar_t>();
    scalar_t* np = nonkey.mutable_data_ptr<scalar_t>();
    if (in.layout == GateLayout::kPerElement)
      forward_flat<scalar_t, acc_t>(lp, xp, kp, np, n);
    else if (in.layout == GateLayout::kPositionsNCHW)
      forward_positions_nchw<scalar_t, acc_t>(lp, xp, kp, np, in.B, in.C, in.S);
    else
      forward_positions_nhwc<scalar_t, acc_t>(lp, xp, kp, np, in.B, in.C, in.S);
  });
  return {key, nonkey};
}

std::tuple<at::Tensor, at::Tensor> gate_split_bwd_cpu(const std::optional<at::Tensor>& grad_key,
                                                      const std::optional<at::Tensor>& grad_nonkey,
                                                      const at::Tensor& logits_in, const at::Tensor& x_in) {
  const auto in = gate_split_setup(logits_in, x_in);
  const auto dk = gate_split_grad(grad_key, in.x, "grad_key");
  const auto dn = gate_split_grad(grad_nonkey, in.x, "grad_nonkey");
  auto dl = at::empty_like(in.logits), dx = at::empty_like(in.x);
  const int64_t n = in.x.numel();
  if (n == 0) return {dl.zero_(), dx};
  FASTT2I_DISPATCH_FLOATS(in.x.scalar_type(), "gate_split_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* kp = dk.defined() ? dk.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* np = dn.defined() ? dn.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* lp = in.logits.const_data_ptr<scalar_t>();
    const scalar_t* xp = in.x.const_data_ptr<scalar_t>();
    scalar_t* glp = dl.mutable_data_ptr<scalar_t>();
    scalar_t* gxp = dx.mutable_data_ptr<scalar_t>();
    if (in.layout == GateLayout::kPerElement)
      backward_flat<scalar_t, acc_t>(kp, np, lp, xp, glp, gxp, n);
    else
      backward_positions<scalar_t, acc_t>(kp, np, lp, xp, glp, gxp, in.B, in.C, in.S,
                                          in.layout == GateLayout::kPositionsNHWC);
  });
  return {dl, dx};
}

}  // namespace fastt2i::CPU_CAPABILITY
