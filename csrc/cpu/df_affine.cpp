// DF-Block affine fusion on CPU: y = lrelu(g[K-1] * ... lrelu(g[0] * x + b[0]) ... + b[K-1]).
// Math and the autograd live in fastt2i/ops/df_affine.py; here: vectorisable loops
// over chunks of LANES elements, parallel with ATen's thread pool, and the
// registration of the CPU kernels of fastt2i::df_affine_fwd / df_affine_bwd.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "../df_affine_host.h"

namespace fastt2i {
namespace {

constexpr int64_t kMaxLayers = kDfAffineMaxLayers;
constexpr int64_t LANES = 64;        // elements per inner chunk (vectorised loops)
constexpr int64_t kPositionChunk = 512;  // channels_last backward: positions per partial sum

template <typename acc_t>
inline acc_t lrelu(acc_t v, acc_t slope) { return v > acc_t(0) ? v : v * slope; }

// ---- NCHW: one (b, c) row of S contiguous values shares K scalar (g, b) pairs.
template <typename scalar_t, typename acc_t>
void forward_rows(const scalar_t* x, scalar_t* y, const acc_t* g, const acc_t* b,
                  int64_t K, int64_t BC, int64_t S, acc_t slope) {
  at::parallel_for(0, BC, std::max<int64_t>(1, 16384 / std::max<int64_t>(S, 1)), [=](int64_t r0, int64_t r1) {
    acc_t buf[LANES];
    for (int64_t r = r0; r < r1; ++r) {
      const scalar_t* xr = x + r * S;
      scalar_t* yr = y + r * S;
      for (int64_t s0 = 0; s0 < S; s0 += LANES) {
        const int64_t n = std::min(LANES, S - s0);
        for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(xr[s0 + i]);
        for (int64_t k = 0; k < K; ++k) {
          const acc_t gk = g[k * BC + r], bk = b[k * BC + r];
          for (int64_t i = 0; i < n; ++i) buf[i] = lrelu(gk * buf[i] + bk, slope);
        }
        for (int64_t i = 0; i < n; ++i) yr[s0 + i] = static_cast<scalar_t>(buf[i]);
      }
    }
  });
}

// The backward of one chunk of n <= LANES elements, written as flat loops over pointers so
// the compiler vectorises them (and selects instead of branching on the sign of random data).
// G/Bt are the per-element parameter arrays of layer k, or nullptr with scalars g/b (NCHW).
template <typename acc_t>
struct ChunkBackward {
  acc_t a[kMaxLayers][LANES], z[kMaxLayers][LANES], d[LANES];

  template <typename ParamAt>
  inline void run(int64_t n, int64_t K, acc_t slope, ParamAt param, acc_t (*sum_g)[LANES],
                  acc_t (*sum_b)[LANES]) {
    for (int64_t k = 0; k < K; ++k) {  // recompute layer inputs a[k] and pre-activations z[k]
      const acc_t* gk; const acc_t* bk; acc_t gs, bs;
      param(k, gk, bk, gs, bs);
      acc_t* ak = a[k];
      acc_t* zk = z[k];
      if (gk) { for (int64_t i = 0; i < n; ++i) zk[i] = gk[i] * ak[i] + bk[i]; }
      else { for (int64_t i = 0; i < n; ++i) zk[i] = gs * ak[i] + bs; }
      if (k + 1 < K) {
        acc_t* an = a[k + 1];
        for (int64_t i = 0; i < n; ++i) an[i] = lrelu(zk[i], slope);
      }
    }
    for (int64_t k = K - 1; k >= 0; --k) {
      const acc_t* gk; const acc_t* bk; acc_t gs, bs;
      param(k, gk, bk, gs, bs);
      const acc_t* ak = a[k];
      const acc_t* zk = z[k];
      acc_t* sg = sum_g[k];
      acc_t* sb = sum_b[k];
      for (int64_t i = 0; i < n; ++i) {
        const acc_t dz = zk[i] > acc_t(0) ? d[i] : d[i] * slope;
        sg[i] += dz * ak[i];
        sb[i] += dz;
        d[i] = dz * (gk ? gk[i] : gs);
      }
    }
  }
};

template <typename scalar_t, typename acc_t>
void backward_rows(const scalar_t* dy, const scalar_t* x, const acc_t* g, const acc_t* b,
                   scalar_t* dx, acc_t* dg, acc_t* db, int64_t K, int64_t BC, int64_t S, acc_t slope) {
  at::parallel_for(0, BC, std::max<int64_t>(1, 8192 / std::max<int64_t>(S, 1)), [=](int64_t r0, int64_t r1) {
    ChunkBackward<acc_t> chunk;
    acc_t sum_g[kMaxLayers][LANES], sum_b[kMaxLayers][LANES];  // lane-wise partial sums of one row
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t i = 0; i < LANES; ++i) sum_g[k][i] = sum_b[k][i] = acc_t(0);
      auto param = [&](int64_t k, const acc_t*& gk, const acc_t*& bk, acc_t& gs, acc_t& bs) {
        gk = bk = nullptr;
        gs = g[k * BC + r];
        bs = b[k * BC + r];
      };
      for (int64_t s0 = 0; s0 < S; s0 += LANES) {
        const int64_t n = std::min(LANES, S - s0);
        const scalar_t* xs = x + r * S + s0;
        const scalar_t* dys = dy + r * S + s0;
        for (int64_t i = 0; i < n; ++i) chunk.a[0][i] = static_cast<acc_t>(xs[i]);
        for (int64_t i = 0; i < n; ++i) chunk.d[i] = static_cast<acc_t>(dys[i]);
        chunk.run(n, K, slope, param, sum_g, sum_b);
        scalar_t* dxs = dx + r * S + s0;
        for (int64_t i = 0; i < n; ++i) dxs[i] = static_cast<scalar_t>(chunk.d[i]);
      }
      for (int64_t k = 0; k < K; ++k) {
        acc_t tg = 0, tb = 0;
        for (int64_t i = 0; i < LANES; ++i) { tg += sum_g[k][i]; tb += sum_b[k][i]; }
        dg[k * BC + r] = tg;
        db[k * BC + r] = tb;
      }
    }
  });
}

// ---- NHWC: each position holds C contiguous channels; (g, b) vary along them.
template <typename scalar_t, typename acc_t>
void forward_positions(const scalar_t* x, scalar_t* y, const acc_t* g, const acc_t* b,
                       int64_t K, int64_t B, int64_t C, int64_t S, acc_t slope) {
  const int64_t BC = B * C;
  at::parallel_for(0, B * S, std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1)), [=](int64_t p0, int64_t p1) {
    acc_t buf[LANES];
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t bi = p / S;
      for (int64_t c0 = 0; c0 < C; c0 += LANES) {
        const int64_t n = std::min(LANES, C - c0);
        const int64_t off = p * C + c0;
        for (int64_t i = 0; i < n; ++i) buf[i] = static_cast<acc_t>(x[off + i]);
        for (int64_t k = 0; k < K; ++k) {
          const acc_t* gk = g + k * BC + bi * C + c0;
          const acc_t* bk = b + k * BC + bi * C + c0;
          for (int64_t i = 0; i < n; ++i) buf[i] = lrelu(gk[i] * buf[i] + bk[i], slope);
        }
        for (int64_t i = 0; i < n; ++i) y[off + i] = static_cast<scalar_t>(buf[i]);
      }
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_positions(const scalar_t* dy, const scalar_t* x, const acc_t* g, const acc_t* b,
                        scalar_t* dx, acc_t* dg, acc_t* db, int64_t K, int64_t B, int64_t C, int64_t S,
                        acc_t slope) {
  // Partial sums per (sample, chunk of kPositionChunk positions): the chunking depends only
  // on the shape, so results do not depend on the number of threads.
  const int64_t BC = B * C;
  const int64_t chunks = (S + kPositionChunk - 1) / kPositionChunk;
  const int64_t c_blocks = (C + LANES - 1) / LANES;
  // per task: (c_block, K, LANES) lane sums for gamma, then for beta
  const int64_t task_size = 2 * c_blocks * K * LANES;
  std::vector<acc_t> part(static_cast<size_t>(B * chunks * task_size));
  acc_t* part_data = part.data();
  at::parallel_for(0, B * chunks, 1, [=](int64_t t0, int64_t t1) {
    ChunkBackward<acc_t> chunk;
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t bi = t / chunks, j = t % chunks;
      acc_t* pg = part_data + t * task_size;
      acc_t* pb = pg + c_blocks * K * LANES;
      std::fill(pg, pg + task_size, acc_t(0));
      const int64_t s_end = std::min(S, (j + 1) * kPositionChunk);
      for (int64_t s = j * kPositionChunk; s < s_end; ++s) {
        for (int64_t cb = 0; cb < c_blocks; ++cb) {
          const int64_t c0 = cb * LANES, n = std::min(LANES, C - c0);
          const int64_t off = (bi * S + s) * C + c0;
          const int64_t prm = bi * C + c0;
          auto param = [&](int64_t k, const acc_t*& gk, const acc_t*& bk, acc_t& gs, acc_t& bs) {
            gk = g + k * BC + prm;
            bk = b + k * BC + prm;
            gs = bs = acc_t(0);
          };
          for (int64_t i = 0; i < n; ++i) chunk.a[0][i] = static_cast<acc_t>(x[off + i]);
          for (int64_t i = 0; i < n; ++i) chunk.d[i] = static_cast<acc_t>(dy[off + i]);
          chunk.run(n, K, slope, param, reinterpret_cast<acc_t(*)[LANES]>(pg + cb * K * LANES),
                    reinterpret_cast<acc_t(*)[LANES]>(pb + cb * K * LANES));
          for (int64_t i = 0; i < n; ++i) dx[off + i] = static_cast<scalar_t>(chunk.d[i]);
        }
      }
    }
  });
  for (int64_t bi = 0; bi < B; ++bi)  // the small reduction over position chunks
    for (int64_t k = 0; k < K; ++k)
      for (int64_t c = 0; c < C; ++c) {
        const int64_t cb = c / LANES, lane = c % LANES;
        acc_t tg = 0, tb = 0;
        for (int64_t j = 0; j < chunks; ++j) {
          const acc_t* pg = part_data + (bi * chunks + j) * task_size;
          tg += pg[(cb * K + k) * LANES + lane];
          tb += pg[c_blocks * K * LANES + (cb * K + k) * LANES + lane];
        }
        dg[k * BC + bi * C + c] = tg;
        db[k * BC + bi * C + c] = tb;
      }
}

at::Tensor df_affine_fwd_cpu(const at::Tensor& x_in, const at::Tensor& gamma_in, const at::Tensor& beta_in,
                             double slope) {
  df_affine_check_inputs(x_in, gamma_in, beta_in);
  const auto in = df_affine_layout(x_in, gamma_in, beta_in);
  const auto fmt = in.fmt;
  const auto &x = in.x, &gamma = in.gamma, &beta = in.beta;
  auto y = at::empty_like(x, x.options(), fmt);
  const int64_t K = in.K, B = in.B, C = in.C, S = in.S;
  FASTT2I_DISPATCH_FLOATS(x.scalar_type(), "df_affine_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (fmt == at::MemoryFormat::ChannelsLast)
      forward_positions<scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                         gamma.const_data_ptr<acc_t>(), beta.const_data_ptr<acc_t>(), K, B, C,
                                         S, static_cast<acc_t>(slope));
    else
      forward_rows<scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(),
                                    gamma.const_data_ptr<acc_t>(), beta.const_data_ptr<acc_t>(), K, B * C, S,
                                    static_cast<acc_t>(slope));
  });
  return y;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> df_affine_bwd_cpu(const at::Tensor& dy_in, const at::Tensor& x_in,
                                                                 const at::Tensor& gamma_in,
                                                                 const at::Tensor& beta_in, double slope) {
  df_affine_check_inputs(x_in, gamma_in, beta_in);
  df_affine_check_grad(dy_in, x_in);
  const auto in = df_affine_layout(x_in, gamma_in, beta_in, dy_in);
  const auto fmt = in.fmt;
  const auto &x = in.x, &dy = in.dy, &gamma = in.gamma, &beta = in.beta;
  auto dx = at::empty_like(x, x.options(), fmt);
  auto dg = at::empty(gamma.sizes(), gamma.options());
  auto db = at::empty(beta.sizes(), beta.options());
  const int64_t K = in.K, B = in.B, C = in.C, S = in.S;
  FASTT2I_DISPATCH_FLOATS(x.scalar_type(), "df_affine_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    if (fmt == at::MemoryFormat::ChannelsLast)
      backward_positions<scalar_t, acc_t>(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                          gamma.const_data_ptr<acc_t>(), beta.const_data_ptr<acc_t>(),
                                          dx.mutable_data_ptr<scalar_t>(), dg.mutable_data_ptr<acc_t>(),
                                          db.mutable_data_ptr<acc_t>(), K, B, C, S, static_cast<acc_t>(slope));
    else
      backward_rows<scalar_t, acc_t>(dy.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                     gamma.const_data_ptr<acc_t>(), beta.const_data_ptr<acc_t>(),
                                     dx.mutable_data_ptr<scalar_t>(), dg.mutable_data_ptr<acc_t>(),
                                     db.mutable_data_ptr<acc_t>(), K, B * C, S, static_cast<acc_t>(slope));
  });
  return {dx, dg, db};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastt2i, CPU, m) {
  m.impl("df_affine_fwd", &df_affine_fwd_cpu);
  m.impl("df_affine_bwd", &df_affine_bwd_cpu);
}

}  // namespace fastt2i
