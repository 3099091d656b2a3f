// DF-Block affine fusion on CPU: y = lrelu(g[K-1] * ... lrelu(g[0] * x + b[0]) ... + b[K-1]).
// Math and the autograd live in fastt2i/ops/df_affine.py.  Compiled once per CPU level (kernels.h):
// every loop runs on at::vec::Vectorized steps with branch-free selects, float32 arithmetic for
// half types, and is parallel with ATen's thread pool.  The backward recomputes the K pre-activations
// of a step in registers instead of saving them.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "../df_affine_host.h"
#include "kernels.h"
#include "vec_io.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kMaxLayers = kDfAffineMaxLayers;
constexpr int64_t kGrainElements = 16384;  // elements per parallel task
constexpr int64_t kPositionChunk = 512;    // channels_last backward: positions per partial sum
constexpr int64_t kPositionTile = 8;       // channels_last forward: positions sharing a parameter load
constexpr int64_t kTiledForwardBytes = int64_t(1) << 22;  // ... for inputs up to this size (about L2 + L3 share)

// Runs body(std::integral_constant<int64_t, K>) for the common layer counts (DF-GAN: 2), so their
// loops over layers unroll and the per-layer vectors stay in registers; 0 = any K <= kMaxLayers.
template <typename Body>
inline void with_layer_count(int64_t K, const Body& body) {
  if (K == 2)
    body(std::integral_constant<int64_t, 2>{});
  else if (K == 1)
    body(std::integral_constant<int64_t, 1>{});
  else
    body(std::integral_constant<int64_t, 0>{});
}

// One accumulate vector through the K layers.  gk/bk: the layers' parameters.
template <int64_t KC, typename acc_t>
inline Vectorized<acc_t> forward_vector(Vectorized<acc_t> v, const Vectorized<acc_t>* gk,
                                        const Vectorized<acc_t>* bk, int64_t K, const Vectorized<acc_t>& slope) {
  const int64_t nk = KC > 0 ? KC : K;
  for (int64_t k = 0; k < nk; ++k) v = leaky_relu(at::vec::fmadd(gk[k], v, bk[k]), slope);
  return v;
}

// The backward of one accumulate vector: returns dx; adds dz_k * a_k and dz_k to sum_g[k], sum_b[k].
template <int64_t KC, typename acc_t>
inline Vectorized<acc_t> backward_vector(const Vectorized<acc_t>& x, Vectorized<acc_t> d,
                                         const Vectorized<acc_t>* gk, const Vectorized<acc_t>* bk, int64_t K,
                                         const Vectorized<acc_t>& slope, Vectorized<acc_t>* sum_g,
                                         Vectorized<acc_t>* sum_b) {
  using Acc = Vectorized<acc_t>;
  const int64_t nk = KC > 0 ? KC : K;
  Acc a[kMaxLayers], z[kMaxLayers];  // layer inputs and pre-activations, recomputed
  a[0] = x;
  for (int64_t k = 0; k < nk; ++k) {
    z[k] = at::vec::fmadd(gk[k], a[k], bk[k]);
    if (k + 1 < nk) a[k + 1] = leaky_relu(z[k], slope);
  }
  for (int64_t k = nk - 1; k >= 0; --k) {
    const Acc dz = leaky_relu_grad(d, z[k], slope);
    sum_g[k] = at::vec::fmadd(dz, a[k], sum_g[k]);
    sum_b[k] = sum_b[k] + dz;
    d = dz * gk[k];
  }
  return d;
}

// ---- NCHW: one (b, c) row of S contiguous values shares K scalar (g, b) pairs.
template <int64_t KC, typename scalar_t, typename acc_t>
void forward_rows(const scalar_t* x, scalar_t* y, const acc_t* g, const acc_t* b, int64_t K, int64_t BC, int64_t S,
                  acc_t slope_s) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  at::parallel_for(0, BC, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(S, 1)), [=](int64_t r0, int64_t r1) {
    const Acc slope(slope_s);
    Acc gk[kMaxLayers], bk[kMaxLayers];
    Acc v[IO::kAcc];
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < K; ++k) gk[k] = Acc(g[k * BC + r]), bk[k] = Acc(b[k * BC + r]);
      const scalar_t* xr = x + r * S;
      scalar_t* yr = y + r * S;
      for (int64_t s = 0; s < S; s += IO::kStep) {
        const int64_t n = std::min(IO::kStep, S - s);
        IO::load(xr + s, v, n);
        for (int64_t u = 0; u < IO::kAcc; ++u) v[u] = forward_vector<KC>(v[u], gk, bk, K, slope);
        IO::store(yr + s, v, n);
      }
    }
  });
}

template <int64_t KC, typename scalar_t, typename acc_t>
void backward_rows(const scalar_t* dy, const scalar_t* x, const acc_t* g, const acc_t* b, scalar_t* dx, acc_t* dg,
                   acc_t* db, int64_t K, int64_t BC, int64_t S, acc_t slope_s) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  at::parallel_for(0, BC, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(S, 1)), [=](int64_t r0, int64_t r1) {
    const Acc slope(slope_s);
    Acc gk[kMaxLayers], bk[kMaxLayers], sum_g[kMaxLayers], sum_b[kMaxLayers];
    Acc xv[IO::kAcc], dv[IO::kAcc];
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < K; ++k) {
        gk[k] = Acc(g[k * BC + r]), bk[k] = Acc(b[k * BC + r]);
        sum_g[k] = sum_b[k] = Acc(acc_t(0));
      }
      const int64_t off = r * S;
      for (int64_t s = 0; s < S; s += IO::kStep) {
        const int64_t n = std::min(IO::kStep, S - s);  // zero lanes past n: dy = 0 adds nothing
        IO::load(x + off + s, xv, n);
        IO::load(dy + off + s, dv, n);
        for (int64_t u = 0; u < IO::kAcc; ++u)
          dv[u] = backward_vector<KC>(xv[u], dv[u], gk, bk, K, slope, sum_g, sum_b);
        IO::store(dx + off + s, dv, n);
      }
      for (int64_t k = 0; k < K; ++k) {
        dg[k * BC + r] = at::vec::vec_reduce_all<acc_t>([](Acc p, Acc q) { return p + q; }, sum_g[k]);
        db[k * BC + r] = at::vec::vec_reduce_all<acc_t>([](Acc p, Acc q) { return p + q; }, sum_b[k]);
      }
    }
  });
}

// ---- NHWC: each position holds C contiguous channels; (g, b) vary along them.  Each task copies one
// sample's parameters to a buffer padded to whole steps (zeros), so every parameter load is a full one.
template <typename acc_t>
struct PaddedParams {
  int64_t C_pad, sample = -1;
  std::vector<acc_t> g, b;  // (K, C_pad)
  PaddedParams(int64_t K, int64_t C, int64_t step)
      : C_pad((C + step - 1) / step * step), g(K * C_pad, acc_t(0)), b(K * C_pad, acc_t(0)) {}
  void load(const acc_t* g_all, const acc_t* b_all, int64_t K, int64_t BC, int64_t C, int64_t bi) {
    if (bi == sample) return;
    sample = bi;
    for (int64_t k = 0; k < K; ++k) {
      std::copy(g_all + k * BC + bi * C, g_all + k * BC + bi * C + C, g.data() + k * C_pad);
      std::copy(b_all + k * BC + bi * C, b_all + k * BC + bi * C + C, b.data() + k * C_pad);
    }
  }
};

// A tile of kPositionTile positions (within one sample) is walked one channel step at a time: the step's
// K (g, b) vectors are loaded once and serve every position of the tile, so the loop body is one load
// of x, the K layers and one store (loading 2K parameter vectors per x vector, as per position, made the
// small L2-resident shapes bound by loads).  The tile's rows (kPositionTile * C elements) are contiguous.
template <int64_t KC, typename scalar_t, typename acc_t>
void forward_positions(const scalar_t* x, scalar_t* y, const acc_t* g, const acc_t* b, int64_t K, int64_t B,
                       int64_t C, int64_t S, acc_t slope_s) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  const int64_t BC = B * C;
  // Tiles pay where x stays in cache; streamed from memory, their 8 interleaved rows cost more than the
  // parameter loads they save (256x256 C64: 28 against 40-47 GB/s), so large inputs go a position at a time.
  const int64_t tile = B * S * C * int64_t(sizeof(scalar_t)) <= kTiledForwardBytes ? kPositionTile : 1;
  at::parallel_for(0, B * S, std::max<int64_t>(1, kGrainElements / std::max<int64_t>(C, 1)), [=](int64_t p0, int64_t p1) {
    const Acc slope(slope_s);
    PaddedParams<acc_t> prm(K, C, IO::kStep);
    Acc gk[IO::kAcc][kMaxLayers], bk[IO::kAcc][kMaxLayers], v[IO::kAcc];
    const int64_t nk = KC > 0 ? KC : K;
    for (int64_t p = p0; p < p1;) {
      const int64_t bi = p / S;
      const int64_t tile_end = std::min({p + tile, p1, (bi + 1) * S});
      prm.load(g, b, K, BC, C, bi);
      for (int64_t c = 0; c < C; c += IO::kStep) {
        const int64_t n = std::min(IO::kStep, C - c);
        for (int64_t u = 0; u < IO::kAcc; ++u)
          for (int64_t k = 0; k < nk; ++k) {
            gk[u][k] = Acc::loadu(prm.g.data() + k * prm.C_pad + c + u * IO::kAccLanes);
            bk[u][k] = Acc::loadu(prm.b.data() + k * prm.C_pad + c + u * IO::kAccLanes);
          }
        for (int64_t q = p; q < tile_end; ++q) {
          IO::load(x + q * C + c, v, n);
          for (int64_t u = 0; u < IO::kAcc; ++u) v[u] = forward_vector<KC>(v[u], gk[u], bk[u], K, slope);
          IO::store(y + q * C + c, v, n);
        }
      }
      p = tile_end;
    }
  });
}

template <int64_t KC, typename scalar_t, typename acc_t>
void backward_positions(const scalar_t* dy, const scalar_t* x, const acc_t* g, const acc_t* b, scalar_t* dx,
                        acc_t* dg, acc_t* db, int64_t K, int64_t B, int64_t C, int64_t S, acc_t slope_s) {
  using IO = VecIO<scalar_t>;
  using Acc = Vectorized<acc_t>;
  // Partial sums per (sample, chunk of kPositionChunk positions): the chunking depends only on the
  // shape, so results do not depend on the number of threads.  Each partial: (K, C_pad) for gamma,
  // then for beta, summed lane-wise in memory (L1-resident rows).
  const int64_t BC = B * C;
  const int64_t chunks = (S + kPositionChunk - 1) / kPositionChunk;
  const int64_t C_pad = (C + IO::kStep - 1) / IO::kStep * IO::kStep;
  const int64_t part_size = 2 * K * C_pad;
  std::vector<acc_t> part(static_cast<size_t>(B * chunks * part_size));
  acc_t* part_data = part.data();
  at::parallel_for(0, B * chunks, 1, [=](int64_t t0, int64_t t1) {
    const Acc slope(slope_s);
    PaddedParams<acc_t> prm(K, C, IO::kStep);
    Acc gk[kMaxLayers], bk[kMaxLayers], sum_g[kMaxLayers], sum_b[kMaxLayers], xv[IO::kAcc], dv[IO::kAcc];
    const int64_t nk = KC > 0 ? KC : K;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / chunks, j = t % chunks;
      prm.load(g, b, K, BC, C, bi);
      acc_t* pg = part_data + t * part_size;
      acc_t* pb = pg + K * C_pad;
      std::fill(pg, pg + part_size, acc_t(0));
      const int64_t s_end = std::min(S, (j + 1) * kPositionChunk);
      for (int64_t s = j * kPositionChunk; s < s_end; ++s) {
        const int64_t off = (bi * S + s) * C;
        for (int64_t c = 0; c < C; c += IO::kStep) {
          const int64_t n = std::min(IO::kStep, C - c);  // zero lanes past n: dy = 0 adds nothing
          IO::load(x + off + c, xv, n);
          IO::load(dy + off + c, dv, n);
          for (int64_t u = 0; u < IO::kAcc; ++u) {
            const int64_t o = c + u * IO::kAccLanes;
            for (int64_t k = 0; k < nk; ++k) {
              gk[k] = Acc::loadu(prm.g.data() + k * C_pad + o);
              bk[k] = Acc::loadu(prm.b.data() + k * C_pad + o);
              sum_g[k] = Acc::loadu(pg + k * C_pad + o);
              sum_b[k] = Acc::loadu(pb + k * C_pad + o);
            }
            dv[u] = backward_vector<KC>(xv[u], dv[u], gk, bk, K, slope, sum_g, sum_b);
            for (int64_t k = 0; k < nk; ++k) {
              sum_g[k].store(pg + k * C_pad + o);
              sum_b[k].store(pb + k * C_pad + o);
            }
          }
          IO::store(dx + off + c, dv, n);
        }
      }
    }
  });
  // The small reduction over position chunks, in a fixed order.
  for (int64_t bi = 0; bi < B; ++bi)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) {
        acc_t tg = 0, tb = 0;
        for (int64_t j = 0; j < chunks; ++j) {
          const acc_t* pg = part_data + (bi * chunks + j) * part_size;
          tg += pg[k * C_pad + c];
          tb += pg[K * C_pad + k * C_pad + c];
        }
        dg[k * BC + bi * C + c] = tg;
        db[k * BC + bi * C + c] = tb;
      }
}

}  // namespace

at::Tensor df_affine_fwd_cpu(const at::Tensor& x_in, const at::Tensor& gamma_in, const at::Tensor& beta_in,
                             double slope) {
  df_affine_check_inputs(x_in, gamma_in, beta_in);
  const auto in = df_affine_layout(x_in, gamma_in, beta_in);
  const auto &x = in.x, &gamma = in.gamma, &beta = in.beta;
  auto y = at::empty_like(x, x.options(), in.fmt);
  const int64_t K = in.K, B = in.B, C = in.C, S = in.S;
  if (x.numel() == 0) return y;
  FASTT2I_DISPATCH_FLOATS(x.scalar_type(), "df_affine_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    const acc_t* gp = gamma.const_data_ptr<acc_t>();
    const acc_t* bp = beta.const_data_ptr<acc_t>();
    const auto s = static_cast<acc_t>(slope);
    with_layer_count(K, [&](auto layers) {
      constexpr int64_t KC = decltype(layers)::value;
      if (in.channels_last)
        forward_positions<KC>(xp, yp, gp, bp, K, B, C, S, s);
      else
        forward_rows<KC>(xp, yp, gp, bp, K, B * C, S, s);
    });
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> df_affine_bwd_cpu(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                                 const at::Tensor& gamma_in,
                                                                 const at::Tensor& beta_in, double slope) {
  df_affine_check_inputs(x_in, gamma_in, beta_in);
  df_affine_check_grad(dy_in, x_in);
  const auto in = df_affine_layout(x_in, gamma_in, beta_in, dy_in);
  const auto &x = in.x, &dy = in.dy, &gamma = in.gamma, &beta = in.beta;
  auto dx = at::empty_like(x, x.options(), in.fmt);
  auto dg = at::empty(gamma.sizes(), gamma.options());
  auto db = at::empty(beta.sizes(), beta.options());
  const int64_t K = in.K, B = in.B, C = in.C, S = in.S;
  if (x.numel() == 0) {
    dg.zero_();
    db.zero_();
    return {dx, dg, db};
  }
  FASTT2I_DISPATCH_FLOATS(x.scalar_type(), "df_affine_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const acc_t* gp = gamma.const_data_ptr<acc_t>();
    const acc_t* bp = beta.const_data_ptr<acc_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    acc_t* dgp = dg.mutable_data_ptr<acc_t>();
    acc_t* dbp = db.mutable_data_ptr<acc_t>();
    const auto s = static_cast<acc_t>(slope);
    with_layer_count(K, [&](auto layers) {
      constexpr int64_t KC = decltype(layers)::value;
      if (in.channels_last)
        backward_positions<KC>(dyp, xp, gp, bp, dxp, dgp, dbp, K, B, C, S, s);
      else
        backward_rows<KC>(dyp, xp, gp, bp, dxp, dgp, dbp, K, B * C, S, s);
    });
  });
  return {dx, dg, db};
}

}  // namespace fastt2i::CPU_CAPABILITY
