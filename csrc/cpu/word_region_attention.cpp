// Word-region attention on CPU: context[b, :, n] = sum_t softmax_t(<regions[b, :, n], words[b, :, t]>) words[b, :, t].
// Math, conventions (mask (B, T) or (B, N, T), lse = +inf on padding-only rows) and the autograd live in
// fastt2i/ops/word_region_attention.py.  Here: one task per tile of kTile regions; the tile is first
// copied to a float buffer [C][kTile] (any layout and dtype), so every inner loop runs over kTile
// contiguous regions and vectorises; the (B, N, T) scores exist only per tile.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/sum.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <vector>

#include "../common.h"
#include "kernels.h"
#include "../word_region_attention_host.h"

#if defined(__GNUC__) && !defined(__clang__)
// Without AVX-512 GCC notes that 64-byte vector returns change the ABI: they only pass between
// inline functions of this file.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kTile = 64;         // regions per tile (the vectorised dimension)
constexpr int64_t kChunkTiles = 8;    // backward: tiles per partial sum of dwords (fixed: thread-count independent)

// exp on (-inf, ~0] that vectorises (std::exp does not without -ffast-math): 2^k * poly(r),
// relative error about 2 ulp; inputs below -87 give exactly 0 (above 88 are clamped: never used here).
inline float vexp(float x) {
  const float xc = std::min(std::max(x, -87.0f), 88.0f);
  const float kf = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = std::fma(kf, -0.693145751953125f, xc);
  r = std::fma(kf, -1.428606765330187045e-06f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p * r, r, r) + 1.0f;
  const float scale = std::bit_cast<float>((static_cast<int32_t>(kf) + 127) << 23);
  return x < -87.0f ? 0.0f : p * scale;
}
inline double vexp(double x) { return std::exp(x); }

template <typename scalar_t>
struct Args {
  const scalar_t* q;      // regions (B, C, N) with strides (sqb, sqc, sqn)
  int64_t sqb, sqc, sqn;
  const bool* mask;       // (B, T) or (B, N, T) with strides (smb, smn, 1); null when none
  int64_t smb, smn;
  int64_t B, C, N, T;
};

// buf[c * kTile + i] = src[b, c, n0 + i] for i < nb, 0 beyond.
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* src, const Args<scalar_t>& a, int64_t b, int64_t n0, int64_t nb, acc_t* buf) {
  const scalar_t* base = src + b * a.sqb + n0 * a.sqn;
  if (a.sqn == 1) {
    for (int64_t c = 0; c < a.C; ++c) {
      acc_t* row = buf + c * kTile;
      const scalar_t* s = base + c * a.sqc;
      for (int64_t i = 0; i < nb; ++i) row[i] = static_cast<acc_t>(s[i]);
      for (int64_t i = nb; i < kTile; ++i) row[i] = acc_t(0);
    }
  } else {  // channels_last: each region's C channels are contiguous
    for (int64_t i = 0; i < nb; ++i) {
      const scalar_t* s = base + i * a.sqn;
      for (int64_t c = 0; c < a.C; ++c) buf[c * kTile + i] = static_cast<acc_t>(s[c * a.sqc]);
    }
    for (int64_t c = 0; c < a.C; ++c)
      for (int64_t i = nb; i < kTile; ++i) buf[c * kTile + i] = acc_t(0);
  }
}

// dst[b, c, n0 + i] = buf[c * kTile + i] for i < nb.
template <typename scalar_t, typename acc_t>
void store_tile(scalar_t* dst, const Args<scalar_t>& a, int64_t b, int64_t n0, int64_t nb, const acc_t* buf) {
  scalar_t* base = dst + b * a.sqb + n0 * a.sqn;
  if (a.sqn == 1) {
    for (int64_t c = 0; c < a.C; ++c) {
      const acc_t* row = buf + c * kTile;
      scalar_t* d = base + c * a.sqc;
      for (int64_t i = 0; i < nb; ++i) d[i] = static_cast<scalar_t>(row[i]);
    }
  } else {
    for (int64_t i = 0; i < nb; ++i) {
      scalar_t* d = base + i * a.sqn;
      for (int64_t c = 0; c < a.C; ++c) d[c * a.sqc] = static_cast<scalar_t>(buf[c * kTile + i]);
    }
  }
}

// Explicit vector registers (GCC/Clang vector extension, 64 bytes: one AVX-512 register, two AVX2
// ones): a tile row of kTile regions is NV vectors, and the blocked loops below keep their
// accumulators in registers (plain loops over local arrays get spilled).
template <typename acc_t>
struct Vec {
  typedef acc_t type __attribute__((vector_size(64)));
  static constexpr int64_t L = 64 / sizeof(acc_t);  // lanes
  static constexpr int64_t NV = kTile / L;          // vectors per tile row
  static type load(const acc_t* p) {
    type v;
    __builtin_memcpy(&v, p, sizeof(v));
    return v;
  }
  static void store(acc_t* p, type v) { __builtin_memcpy(p, &v, sizeof(v)); }
  static type splat(acc_t x) { return type{} + x; }
  static acc_t sum(type v) {
    acc_t s = 0;
    for (int64_t l = 0; l < L; ++l) s += v[l];
    return s;
  }
};

// out[r * kTile + i] = sum_j x[j * kTile + i] * k[j * ks + r * kr] for r < R, j < J: the scores
// (x = a tile [C][kTile], k = words [C][T]: ks = T, kr = 1) and the expansion back to channels
// (x = probabilities [T][kTile], k = words: ks = 1, kr = T).  Four output rows at a time.
template <typename acc_t>
void tile_matmul(const acc_t* __restrict__ x, const acc_t* __restrict__ k, int64_t J, int64_t R, int64_t ks,
                 int64_t kr, acc_t* __restrict__ out) {
  using V = Vec<acc_t>;
  using v_t = typename V::type;
  constexpr int64_t NV = V::NV, RB = 4;
  int64_t r = 0;
  for (; r + RB <= R; r += RB) {
    v_t acc[RB][NV] = {};
    for (int64_t j = 0; j < J; ++j) {
      v_t xv[NV];
#pragma GCC unroll 8
      for (int64_t v = 0; v < NV; ++v) xv[v] = V::load(x + j * kTile + v * V::L);
#pragma GCC unroll 4
      for (int64_t rr = 0; rr < RB; ++rr) {
        const v_t kv = V::splat(k[j * ks + (r + rr) * kr]);
#pragma GCC unroll 8
        for (int64_t v = 0; v < NV; ++v) acc[rr][v] += xv[v] * kv;
      }
    }
    for (int64_t rr = 0; rr < RB; ++rr)
      for (int64_t v = 0; v < NV; ++v) V::store(out + (r + rr) * kTile + v * V::L, acc[rr][v]);
  }
  for (; r < R; ++r) {
    v_t acc[NV] = {};
    for (int64_t j = 0; j < J; ++j) {
      const v_t kv = V::splat(k[j * ks + r * kr]);
#pragma GCC unroll 8
      for (int64_t v = 0; v < NV; ++v) acc[v] += V::load(x + j * kTile + v * V::L) * kv;
    }
    for (int64_t v = 0; v < NV; ++v) V::store(out + r * kTile + v * V::L, acc[v]);
  }
}

// out[t * kTile + i] = sum_c x[c * kTile + i] * k[c * T + t]  (x: a tile buffer; k: one sample's words).
template <typename acc_t>
void project(const acc_t* x, const acc_t* k, int64_t C, int64_t T, acc_t* out) {
  tile_matmul(x, k, C, T, T, 1, out);
}

// out[c * kTile + i] = sum_t w[t * kTile + i] * k[c * T + t].
template <typename acc_t>
void expand(const acc_t* w, const acc_t* k, int64_t C, int64_t T, acc_t* out) {
  tile_matmul(w, k, T, C, 1, T, out);
}

// part[c * T + t] += sum_i q[c][i] ds[t][i] + g[c][i] p[t][i] over one tile, still lane-wise: the
// horizontal sums happen once per chunk of tiles, not once per tile.  Two channels at a time, so each
// load of a ds / p row feeds four FMAs.
template <typename acc_t>
void accumulate_dwords(const acc_t* __restrict__ q, const acc_t* __restrict__ g, const acc_t* __restrict__ ds,
                       const acc_t* __restrict__ p, int64_t C, int64_t T,
                       typename Vec<acc_t>::type* __restrict__ part) {
  using V = Vec<acc_t>;
  using v_t = typename V::type;
  constexpr int64_t NV = V::NV, CB = 2;
  for (int64_t c = 0; c < C; c += CB) {
    const int64_t cb = std::min(CB, C - c);
    v_t qv[CB][NV] = {}, gv[CB][NV] = {};
    for (int64_t cc = 0; cc < cb; ++cc) {
#pragma GCC unroll 8
      for (int64_t v = 0; v < NV; ++v) {
        qv[cc][v] = V::load(q + (c + cc) * kTile + v * V::L);
        gv[cc][v] = V::load(g + (c + cc) * kTile + v * V::L);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      v_t acc0 = {}, acc1 = {};
#pragma GCC unroll 8
      for (int64_t v = 0; v < NV; ++v) {
        const v_t dsv = V::load(ds + t * kTile + v * V::L), pv = V::load(p + t * kTile + v * V::L);
        acc0 += qv[0][v] * dsv + gv[0][v] * pv;
        acc1 += qv[1][v] * dsv + gv[1][v] * pv;  // zeros past C
      }
      part[c * T + t] += acc0;
      if (cb > 1) part[(c + 1) * T + t] += acc1;
    }
  }
}

// bias[t * kTile + i] = 0 where word t is real for region n0 + i, -inf where it is padding (and for
// i >= nb): added to the scores, so every loop over them stays branch-free and vectorises.
template <typename scalar_t, typename acc_t>
void word_bias(const Args<scalar_t>& a, int64_t b, int64_t n0, int64_t nb, acc_t* bias) {
  constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
  if (a.mask == nullptr || a.smn == 0) {  // one mask row for the whole tile
    const bool* m = a.mask == nullptr ? nullptr : a.mask + b * a.smb;
    for (int64_t t = 0; t < a.T; ++t) {
      const acc_t word = m != nullptr && m[t] ? -inf : acc_t(0);
      for (int64_t i = 0; i < kTile; ++i) bias[t * kTile + i] = i < nb ? word : -inf;
    }
    return;
  }
  for (int64_t t = 0; t < a.T; ++t)
    for (int64_t i = nb; i < kTile; ++i) bias[t * kTile + i] = -inf;
  for (int64_t i = 0; i < nb; ++i) {
    const bool* m = a.mask + b * a.smb + (n0 + i) * a.smn;
    for (int64_t t = 0; t < a.T; ++t) bias[t * kTile + i] = m[t] ? -inf : acc_t(0);
  }
}

template <typename scalar_t, typename acc_t>
void forward_impl(const Args<scalar_t>& a, const acc_t* words, scalar_t* out, acc_t* lse, scalar_t* attn,
                  int64_t sab, int64_t sat, int64_t san) {
  const int64_t tiles = (a.N + kTile - 1) / kTile, C = a.C, T = a.T;
  at::parallel_for(0, a.B * tiles, 1, [=](int64_t w0, int64_t w1) {
    std::vector<acc_t> buf(C * kTile), s(T * kTile), bias(T * kTile);
    acc_t m[kTile], l[kTile];
    constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / tiles, n0 = (w % tiles) * kTile, nb = std::min(kTile, a.N - n0);
      const acc_t* k = words + b * C * T;
      load_tile(a.q, a, b, n0, nb, buf.data());
      project(buf.data(), k, C, T, s.data());
      word_bias(a, b, n0, nb, bias.data());
      for (int64_t i = 0; i < kTile; ++i) l[i] = acc_t(0);
      {
        using V = Vec<acc_t>;
        typename V::type mv[V::NV];
        for (int64_t v = 0; v < V::NV; ++v) mv[v] = V::splat(-inf);
        for (int64_t t = 0; t < T; ++t) {
          for (int64_t v = 0; v < V::NV; ++v) {
            const int64_t o = t * kTile + v * V::L;
            const auto x = V::load(s.data() + o) + V::load(bias.data() + o);  // -inf on padding
            V::store(s.data() + o, x);
            mv[v] = x > mv[v] ? x : mv[v];
          }
        }
        for (int64_t v = 0; v < V::NV; ++v) V::store(m + v * V::L, mv[v]);
      }
      for (int64_t i = 0; i < kTile; ++i) m[i] = m[i] == -inf ? acc_t(0) : m[i];  // padding-only row
      for (int64_t t = 0; t < T; ++t) {
        acc_t* st = s.data() + t * kTile;
        for (int64_t i = 0; i < kTile; ++i) {
          const acc_t e = vexp(st[i] - m[i]);  // exactly 0 on padding
          st[i] = e;
          l[i] += e;
        }
      }
      for (int64_t i = 0; i < kTile; ++i) {
        const bool has_word = l[i] > acc_t(0);
        if (i < nb) lse[b * a.N + n0 + i] = has_word ? m[i] + std::log(l[i]) : inf;
        l[i] = has_word ? acc_t(1) / l[i] : acc_t(0);
      }
      for (int64_t t = 0; t < T; ++t) {
        acc_t* st = s.data() + t * kTile;
        for (int64_t i = 0; i < kTile; ++i) st[i] *= l[i];
      }
      if (attn != nullptr) {
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < nb; ++i)
            attn[b * sab + t * sat + (n0 + i) * san] = static_cast<scalar_t>(s[t * kTile + i]);
      }
      expand(s.data(), k, C, T, buf.data());
      store_tile(out, a, b, n0, nb, buf.data());
    }
  });
}

template <typename scalar_t, typename acc_t>
void backward_impl(const Args<scalar_t>& a, const acc_t* words, const scalar_t* grad_out, const acc_t* lse,
                   const scalar_t* grad_attn, int64_t sab, int64_t sat, int64_t san, scalar_t* grad_q,
                   acc_t* grad_k_part, int64_t chunks) {
  const int64_t tiles = (a.N + kTile - 1) / kTile, C = a.C, T = a.T;
  at::parallel_for(0, a.B * chunks, 1, [=](int64_t w0, int64_t w1) {
    std::vector<acc_t> qb(C * kTile), gb(C * kTile), p(T * kTile), dp(T * kTile), bias(T * kTile);
    std::vector<typename Vec<acc_t>::type> lanes(C * T);
    acc_t lrow[kTile], delta[kTile];
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / chunks, j = w % chunks;
      const acc_t* k = words + b * C * T;
      acc_t* part = grad_k_part + w * C * T;
      std::fill(lanes.begin(), lanes.end(), typename Vec<acc_t>::type{});
      for (int64_t tile = j * kChunkTiles; tile < std::min(tiles, (j + 1) * kChunkTiles); ++tile) {
        const int64_t n0 = tile * kTile, nb = std::min(kTile, a.N - n0);
        load_tile(a.q, a, b, n0, nb, qb.data());
        load_tile(grad_out, a, b, n0, nb, gb.data());
        project(qb.data(), k, C, T, p.data());   // scores
        project(gb.data(), k, C, T, dp.data());  // dP = dO . words
        word_bias(a, b, n0, nb, bias.data());
        for (int64_t i = 0; i < kTile; ++i) {
          lrow[i] = i < nb ? lse[b * a.N + n0 + i] : std::numeric_limits<acc_t>::infinity();
          delta[i] = acc_t(0);
        }
        for (int64_t t = 0; t < T; ++t) {
          acc_t* pt = p.data() + t * kTile;
          acc_t* dpt = dp.data() + t * kTile;
          const acc_t* bt = bias.data() + t * kTile;
          if (grad_attn != nullptr) {
            const scalar_t* ga = grad_attn + b * sab + t * sat + n0 * san;
            for (int64_t i = 0; i < nb; ++i) dpt[i] += static_cast<acc_t>(ga[i * san]);
          }
          for (int64_t i = 0; i < kTile; ++i) {
            // lse = +inf (padding-only row or i >= nb): probability 0, so zero gradients
            pt[i] = vexp(pt[i] - lrow[i] + bt[i]);
            delta[i] += pt[i] * dpt[i];
          }
        }
        for (int64_t t = 0; t < T; ++t) {  // dp becomes dS = P * (dP - delta)
          const acc_t* pt = p.data() + t * kTile;
          acc_t* dpt = dp.data() + t * kTile;
          for (int64_t i = 0; i < kTile; ++i) dpt[i] = pt[i] * (dpt[i] - delta[i]);
        }
        accumulate_dwords(qb.data(), gb.data(), dp.data(), p.data(), C, T, lanes.data());
        expand(dp.data(), k, C, T, qb.data());  // dregions = dS . words
        store_tile(grad_q, a, b, n0, nb, qb.data());
      }
      for (int64_t e = 0; e < C * T; ++e) part[e] = Vec<acc_t>::sum(lanes[e]);
    }
  });
}

template <typename scalar_t>
Args<scalar_t> make_args(const at::Tensor& regions, const at::Tensor& words, const std::optional<at::Tensor>& mask) {
  Args<scalar_t> a{};
  a.q = regions.const_data_ptr<scalar_t>();
  a.B = regions.size(0);
  a.C = regions.size(1);
  a.N = regions.size(2) * regions.size(3);
  a.T = words.size(2);
  // The dense NCHW / NHWC strides: tensors are made contiguous in that format first, and their own
  // strides may differ only on size-1 dims, which never move an offset.
  const bool nhwc = kernel_format(regions) == at::MemoryFormat::ChannelsLast;
  a.sqb = a.C * a.N;
  a.sqc = nhwc ? 1 : a.N;
  a.sqn = nhwc ? a.C : 1;
  if (mask.has_value()) {
    a.mask = mask->const_data_ptr<bool>();
    a.smb = mask->stride(0);
    a.smn = mask->dim() == 3 ? mask->stride(1) : 0;
  }
  return a;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> word_region_attention_fwd_cpu(
    const at::Tensor& regions_in, const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in,
    bool return_attention) {
  wra_check_inputs(regions_in, words_in, mask_in);
  auto f = wra_forward_setup(regions_in, words_in, mask_in, return_attention);
  const auto& o = f.in;
  FASTT2I_DISPATCH_FLOATS(o.regions.scalar_type(), "word_region_attention_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = make_args<scalar_t>(o.regions, o.words, o.mask);
    forward_impl<scalar_t, acc_t>(a, o.words.const_data_ptr<acc_t>(), f.context.mutable_data_ptr<scalar_t>(),
                                  f.lse.mutable_data_ptr<acc_t>(),
                                  return_attention ? f.attention.mutable_data_ptr<scalar_t>() : nullptr, o.as[0],
                                  o.as[1], o.as[2]);
  });
  return {f.context, f.lse, f.attention};
}

std::tuple<at::Tensor, at::Tensor> word_region_attention_bwd_cpu(
    const at::Tensor& grad_context_in, const std::optional<at::Tensor>& grad_attention_in,
    const at::Tensor& regions_in, const at::Tensor& words_in, const std::optional<at::Tensor>& mask_in,
    const at::Tensor& lse_in) {
  wra_check_inputs(regions_in, words_in, mask_in);
  auto b = wra_backward_setup(grad_context_in, grad_attention_in, regions_in, words_in, mask_in, lse_in);
  const auto& o = b.in;
  const int64_t tiles = (o.N + kTile - 1) / kTile, chunks = (tiles + kChunkTiles - 1) / kChunkTiles;
  auto part = at::empty({o.B, chunks, o.C, o.T}, o.regions.options().dtype(o.acc));
  FASTT2I_DISPATCH_FLOATS(o.regions.scalar_type(), "word_region_attention_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto a = make_args<scalar_t>(o.regions, o.words, o.mask);
    const bool has_ga = b.grad_attention.defined();
    backward_impl<scalar_t, acc_t>(a, o.words.const_data_ptr<acc_t>(), b.grad_context.const_data_ptr<scalar_t>(),
                                   b.lse.const_data_ptr<acc_t>(),
                                   has_ga ? b.grad_attention.const_data_ptr<scalar_t>() : nullptr, o.as[0], o.as[1],
                                   o.as[2], b.grad_regions.mutable_data_ptr<scalar_t>(),
                                   part.mutable_data_ptr<acc_t>(), chunks);
  });
  // The few chunk partials summed in a fixed order: deterministic for any thread count.
  auto grad_words = at::sum(part, 1).to(o.regions.scalar_type());
  return {b.grad_regions, grad_words};
}

}  // namespace fastt2i::CPU_CAPABILITY
