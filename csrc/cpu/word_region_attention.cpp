// Word-region attention on CPU: context[b, :, n] = sum_t softmax_t(<regions[b, :, n], words[b, :, t]>) words[b, :, t].
// Math, conventions (mask (B, T) or (B, N, T), lse = +inf on padding-only rows) and the autograd live in
// fastt2i/ops/word_region_attention.py.  Here: one task per tile of kTile regions; the tile is first
// copied to a float buffer [C][kTile] (any layout and dtype; channels_last through register
// transposes), so every inner loop runs over kTile contiguous regions; the (B, N, T) scores exist only
// per tile, and only for the words real for some region of the tile (padding words have probability
// 0, so ragged captions cost their length).  Compiled once per CPU level (kernels.h): the loops over a
// tile row run on at::vec::Vectorized (register-blocked contractions, exp_u20 softmax, branch-free
// masking with -inf biases), float32 arithmetic for half types; float outputs leave through
// streaming stores.
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
#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "kernels.h"
#include "vec_io.h"
#include "../word_region_attention_host.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

constexpr int64_t kTile = 64;         // regions per tile (the vectorised dimension)
constexpr int64_t kChunkTiles = 8;    // backward: tiles per partial sum of dwords (fixed: thread-count independent)

template <typename scalar_t>
struct Args {
  const scalar_t* q;      // regions (B, C, N) with strides (sqb, sqc, sqn)
  int64_t sqb, sqc, sqn;
  const bool* mask;       // (B, T) or (B, N, T) with strides (smb, smn, 1); null when none
  int64_t smb, smn;
  int64_t B, C, N, T;
};

// Square blocks of the in-register transposes that move channels_last rows (one region's C
// contiguous values) into the tile's [c][i] layout and back.
#ifdef CPU_CAPABILITY_AVX512
constexpr int64_t kBlock = 16;
#else
constexpr int64_t kBlock = 8;
#endif

// dst[j * ld + i] = src[i * ls + j] for i < rows, j < cols (rows, cols <= kBlock).  float blocks go
// through ATen's register transposes (any block with AVX-512, whole 8x8 blocks with AVX2).
#if defined(CPU_CAPABILITY_AVX512)
// A whole 16x16 block with the sizes known at compile time: flatten inlines ATen's transpose so its
// loops over the 16 rows unroll into registers (called with run-time sizes it goes through memory
// and was the largest cost of a channels_last tile).
__attribute__((flatten)) inline void transpose_16x16(const float* src, int64_t ls, float* dst, int64_t ld) {
  at::vec::transpose_mxn_16x16(src, ls, dst, ld, 16, 16);
}
#endif

template <typename T>
inline void transpose_block(const T* src, int64_t ls, T* dst, int64_t ld, int64_t rows, int64_t cols) {
  if constexpr (std::is_same_v<T, float>) {
#if defined(CPU_CAPABILITY_AVX512)
    if (rows == 16 && cols == 16)
      transpose_16x16(src, ls, dst, ld);
    else
      at::vec::transpose_mxn<float>(src, ls, dst, ld, static_cast<int>(rows), static_cast<int>(cols));
    return;
#elif defined(CPU_CAPABILITY_AVX2)
    if (rows == 8 && cols == 8) {
      at::vec::transpose_mxn<float, 8, 8>(src, ls, dst, ld);
      return;
    }
#endif
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) dst[j * ld + i] = src[i * ls + j];
}

// dst[j * ld + i] = src[i * ls + j] for i < rows, j < cols, block by block.
template <typename T>
void transpose(const T* src, int64_t ls, T* dst, int64_t ld, int64_t rows, int64_t cols) {
  for (int64_t i = 0; i < rows; i += kBlock)
    for (int64_t j = 0; j < cols; j += kBlock)
      transpose_block(src + i * ls + j, ls, dst + j * ld + i, ld, std::min(kBlock, rows - i),
                      std::min(kBlock, cols - j));
}

// out[e] = src[e] for e < n, converted (vectorised).
template <typename scalar_t, typename acc_t>
inline void convert_row(const scalar_t* src, acc_t* out, int64_t n) {
  using IO = VecIO<scalar_t>;
  Vectorized<acc_t> v[IO::kAcc];
  int64_t e = 0;
  for (; e + IO::kStep <= n; e += IO::kStep) {
    IO::load(src + e, v);
    for (int64_t u = 0; u < IO::kAcc; ++u) v[u].store(out + e + u * IO::kAccLanes);
  }
  for (; e < n; ++e) out[e] = static_cast<acc_t>(src[e]);
}

template <typename scalar_t, typename acc_t>
inline void convert_row(const acc_t* src, scalar_t* out, int64_t n) {
  using IO = VecIO<scalar_t>;
  Vectorized<acc_t> v[IO::kAcc];
  int64_t e = 0;
  for (; e + IO::kStep <= n; e += IO::kStep) {
    for (int64_t u = 0; u < IO::kAcc; ++u) v[u] = Vectorized<acc_t>::loadu(src + e + u * IO::kAccLanes);
    IO::store(out + e, v);
  }
  for (; e < n; ++e) out[e] = static_cast<scalar_t>(src[e]);
}

// buf[r * kTile + i] = src[r * sr + i * si] for r < R, i < nb, and 0 for nb <= i < kTile: a tile of
// R rows (channels, or words of the attention) in any of the two dense layouts, as the accumulate
// type.  stage: kTile * R scratch values (used for half types in the si != 1 layout).
template <typename scalar_t, typename acc_t>
void load_rows(const scalar_t* src, int64_t sr, int64_t si, int64_t R, int64_t nb, acc_t* buf, acc_t* stage) {
  using IO = VecIO<scalar_t>;
  if (si == 1) {  // rows of nb contiguous regions, zero-filled to kTile
    Vectorized<acc_t> v[IO::kAcc];
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t i = 0; i < kTile; i += IO::kStep) {
        IO::load(src + r * sr + i, v, std::clamp<int64_t>(nb - i, 0, IO::kStep));
        for (int64_t u = 0; u < IO::kAcc; ++u) v[u].store(buf + r * kTile + i + u * IO::kAccLanes);
      }
    }
    return;
  }
  if (sr == 1) {  // channels_last: each region's R values are contiguous; transpose them in registers
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      transpose(src, si, buf, kTile, nb, R);
    } else {
      for (int64_t i = 0; i < nb; ++i) convert_row<scalar_t, acc_t>(src + i * si, stage + i * R, R);
      transpose(stage, R, buf, kTile, nb, R);
    }
  } else {
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t r = 0; r < R; ++r) buf[r * kTile + i] = static_cast<acc_t>(src[r * sr + i * si]);
  }
  if (nb < kTile)
    for (int64_t r = 0; r < R; ++r) std::fill(buf + r * kTile + nb, buf + (r + 1) * kTile, acc_t(0));
}

// Streaming (non-temporal) stores for the outputs (context, dregions: as large as regions, written
// once, never read back here): they skip reading every destination line into the cache before
// writing it (measured at the benchmark shapes: forward 1.2x faster at AVX2, 1.15-1.4x at AVX-512).
// float tiles whose rows are whole 64-byte lines; everything else takes ordinary stores.  A streamed
// tile starts and ends on a line boundary, so no line is shared with an ordinarily stored one;
// stream_fence orders them before the kernel returns.
constexpr int64_t kStreamAlign = 64;

inline bool stream_ok(const void* p, int64_t bytes) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  return reinterpret_cast<uintptr_t>(p) % kStreamAlign == 0 && bytes % kStreamAlign == 0;
#else
  return false;
#endif
}

// dst[e] = src[e] for e < n, dst 64-byte aligned and n a whole number of cache lines (stream_ok).
inline void stream_copy(const float* src, float* dst, int64_t n) {
  using V = Vectorized<float>;
  for (int64_t e = 0; e < n; e += V::size()) {
#if defined(CPU_CAPABILITY_AVX512)
    _mm512_stream_ps(dst + e, V::loadu(src + e));
#elif defined(CPU_CAPABILITY_AVX2)
    _mm256_stream_ps(dst + e, V::loadu(src + e));
#else
    V::loadu(src + e).store(dst + e);
#endif
  }
}

inline void stream_fence() {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  _mm_sfence();
#endif
}

// dst[r * sr + i * si] = buf[r * kTile + i] for r < R, i < nb (the inverse of load_rows).
template <typename scalar_t, typename acc_t>
void store_rows(scalar_t* dst, int64_t sr, int64_t si, int64_t R, int64_t nb, const acc_t* buf, acc_t* stage,
                bool stream = false) {
  using IO = VecIO<scalar_t>;
  if constexpr (std::is_same_v<scalar_t, float>) {
    constexpr int64_t kf = sizeof(float);
    if (stream && si == 1 && stream_ok(dst, nb * kf) && (sr * kf) % kStreamAlign == 0) {
      for (int64_t r = 0; r < R; ++r) stream_copy(buf + r * kTile, dst + r * sr, nb);
      return;
    }
    if (stream && sr == 1 && si == R && stream_ok(dst, nb * R * kf)) {  // the tile's rows are one block
      transpose(buf, kTile, stage, R, R, nb);
      stream_copy(stage, dst, nb * R);
      return;
    }
  }
  if (si == 1) {
    Vectorized<acc_t> v[IO::kAcc];
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t i = 0; i < nb; i += IO::kStep) {
        for (int64_t u = 0; u < IO::kAcc; ++u) v[u] = Vectorized<acc_t>::loadu(buf + r * kTile + i + u * IO::kAccLanes);
        IO::store(dst + r * sr + i, v, std::min(IO::kStep, nb - i));
      }
    }
  } else if (sr == 1) {
    if constexpr (std::is_same_v<scalar_t, acc_t>) {
      transpose(buf, kTile, dst, si, R, nb);
    } else {
      transpose(buf, kTile, stage, R, R, nb);
      for (int64_t i = 0; i < nb; ++i) convert_row<scalar_t, acc_t>(stage + i * R, dst + i * si, R);
    }
  } else {
    for (int64_t i = 0; i < nb; ++i)
      for (int64_t r = 0; r < R; ++r) dst[r * sr + i * si] = static_cast<scalar_t>(buf[r * kTile + i]);
  }
}

// The tile of regions n0 .. n0 + nb of sample b (regions, or grad_context laid out like them).
template <typename scalar_t, typename acc_t>
void load_tile(const scalar_t* src, const Args<scalar_t>& a, int64_t b, int64_t n0, int64_t nb, acc_t* buf,
               acc_t* stage) {
  load_rows(src + b * a.sqb + n0 * a.sqn, a.sqc, a.sqn, a.C, nb, buf, stage);
}

template <typename scalar_t, typename acc_t>
void store_tile(scalar_t* dst, const Args<scalar_t>& a, int64_t b, int64_t n0, int64_t nb, const acc_t* buf,
                acc_t* stage) {
  store_rows(dst + b * a.sqb + n0 * a.sqn, a.sqc, a.sqn, a.C, nb, buf, stage, /*stream=*/true);
}

// A tile row of kTile regions is kVecs vectors of the accumulate type.
template <typename acc_t>
struct Tile {
  using V = Vectorized<acc_t>;
  static constexpr int64_t kLanes = V::size();
  static constexpr int64_t kVecs = kTile / kLanes;
  static_assert(kTile % kLanes == 0, "kTile must be a whole number of vectors");
  // Register blocking of the contractions: kRowBlock output rows x kVecBlock vectors of accumulators
  // (16 of 32 registers with AVX-512, 8 of 16 with AVX2).
#ifdef CPU_CAPABILITY_AVX512
  static constexpr int64_t kRowBlock = 4;
#else
  static constexpr int64_t kRowBlock = 2;
#endif
  static constexpr int64_t kVecBlock = kVecs < 4 ? kVecs : 4;
};

// out[r * kTile + i] = sum_j x[j * kTile + i] * k[j * ks + r * kr] for r < R, j < J: the scores
// (x = a tile [C][kTile], k = words [C][T]: ks = T, kr = 1) and the expansion back to channels
// (x = probabilities [T][kTile], k = words: ks = 1, kr = T).  Each x vector loaded feeds RB FMAs.
template <typename acc_t, int64_t RB>
inline void tile_matmul_rows(const acc_t* __restrict__ x, const acc_t* __restrict__ k, int64_t J, int64_t r,
                             int64_t ks, int64_t kr, acc_t* __restrict__ out) {
  using TL = Tile<acc_t>;
  using V = typename TL::V;
  constexpr int64_t VB = TL::kVecBlock;
  for (int64_t v0 = 0; v0 < TL::kVecs; v0 += VB) {
    V acc[RB][VB];
    for (int64_t rr = 0; rr < RB; ++rr)
      for (int64_t v = 0; v < VB; ++v) acc[rr][v] = V(acc_t(0));
    for (int64_t j = 0; j < J; ++j) {
      V xv[VB];
      for (int64_t v = 0; v < VB; ++v) xv[v] = V::loadu(x + j * kTile + (v0 + v) * TL::kLanes);
      for (int64_t rr = 0; rr < RB; ++rr) {
        const V kv(k[j * ks + (r + rr) * kr]);
        for (int64_t v = 0; v < VB; ++v) acc[rr][v] = at::vec::fmadd(xv[v], kv, acc[rr][v]);
      }
    }
    for (int64_t rr = 0; rr < RB; ++rr)
      for (int64_t v = 0; v < VB; ++v) acc[rr][v].store(out + (r + rr) * kTile + (v0 + v) * TL::kLanes);
  }
}

template <typename acc_t>
void tile_matmul(const acc_t* x, const acc_t* k, int64_t J, int64_t R, int64_t ks, int64_t kr, acc_t* out) {
  constexpr int64_t RB = Tile<acc_t>::kRowBlock;
  int64_t r = 0;
  for (; r + RB <= R; r += RB) tile_matmul_rows<acc_t, RB>(x, k, J, r, ks, kr, out);
  for (; r < R; ++r) tile_matmul_rows<acc_t, 1>(x, k, J, r, ks, kr, out);
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

// lanes[c * T + word[j]] += q[c][i] ds[j][i] + g[c][i] p[j][i] over one tile (rows j of ds and p are
// the tile's active words), still lane-wise (the horizontal sums happen once per chunk of tiles).
// Blocks of CB channels x TB words: each loaded row vector feeds CB or TB FMAs.
template <typename acc_t, int64_t CB, int64_t TB>
inline void dwords_block(const acc_t* __restrict__ q, const acc_t* __restrict__ g, const acc_t* __restrict__ ds,
                         const acc_t* __restrict__ p, int64_t c, int64_t t, int64_t T, const int64_t* word,
                         Vectorized<acc_t>* __restrict__ lanes) {
  using TL = Tile<acc_t>;
  using V = typename TL::V;
  V acc[CB][TB];
  for (int64_t cc = 0; cc < CB; ++cc)
    for (int64_t tt = 0; tt < TB; ++tt) acc[cc][tt] = V(acc_t(0));
  for (int64_t v = 0; v < TL::kVecs; ++v) {
    const int64_t o = v * TL::kLanes;
    V qv[CB], gv[CB];
    for (int64_t cc = 0; cc < CB; ++cc) {
      qv[cc] = V::loadu(q + (c + cc) * kTile + o);
      gv[cc] = V::loadu(g + (c + cc) * kTile + o);
    }
    for (int64_t tt = 0; tt < TB; ++tt) {
      const V dsv = V::loadu(ds + (t + tt) * kTile + o), pv = V::loadu(p + (t + tt) * kTile + o);
      for (int64_t cc = 0; cc < CB; ++cc)
        acc[cc][tt] = at::vec::fmadd(qv[cc], dsv, at::vec::fmadd(gv[cc], pv, acc[cc][tt]));
    }
  }
  for (int64_t cc = 0; cc < CB; ++cc)
    for (int64_t tt = 0; tt < TB; ++tt) {
      Vectorized<acc_t>& l = lanes[(c + cc) * T + word[t + tt]];
      l = l + acc[cc][tt];
    }
}

template <typename acc_t>
void accumulate_dwords(const acc_t* q, const acc_t* g, const acc_t* ds, const acc_t* p, int64_t C, int64_t T,
                       const int64_t* word, int64_t n, Vectorized<acc_t>* lanes) {
  // Each accumulator takes two dependent FMAs per vector, so CB * TB >= 8 of them keep both FMA
  // ports busy; with the CB + CB + 2 operand vectors that fills AVX2's 16 registers (CB 2, TB 4),
  // and AVX-512's 32 with CB 4.
#ifdef CPU_CAPABILITY_AVX512
  constexpr int64_t CB = 4;
#else
  constexpr int64_t CB = 2;
#endif
  constexpr int64_t TB = 4;
  auto columns = [&]<int64_t CBk>(int64_t c) {
    int64_t t = 0;
    for (; t + TB <= n; t += TB) dwords_block<acc_t, CBk, TB>(q, g, ds, p, c, t, T, word, lanes);
    for (; t + 2 <= n; t += 2) dwords_block<acc_t, CBk, 2>(q, g, ds, p, c, t, T, word, lanes);
    for (; t < n; ++t) dwords_block<acc_t, CBk, 1>(q, g, ds, p, c, t, T, word, lanes);
  };
  int64_t c = 0;
  for (; c + CB <= C; c += CB) columns.template operator()<CB>(c);
  for (; c < C; ++c) columns.template operator()<1>(c);
}

// The words that are real for at least one region of a tile, in order, and their columns of the
// sample's words as [C][n].  A padding word gets probability 0 (zero context, attention and
// gradients), so every contraction runs over these n words only: ragged captions cost their length.
// With a (B, T) mask (or none) the set changes only with the sample.
template <typename acc_t>
struct ActiveWords {
  std::vector<int64_t> word;  // word[j]: the j-th active word
  std::vector<acc_t> k;       // k[c * n + j] = words[b, c, word[j]]
  std::vector<char> real;     // scratch: real[t] for the tile at hand
  int64_t n = 0, b = -1;

  ActiveWords(int64_t C, int64_t T) : word(T), k(C * T), real(T) {}

  template <typename scalar_t>
  void update(const Args<scalar_t>& a, const acc_t* words, int64_t b_, int64_t n0, int64_t nb) {
    const int64_t C = a.C, T = a.T;
    if (a.mask == nullptr || a.smn == 0) {
      if (b_ == b) return;
      const bool* m = a.mask == nullptr ? nullptr : a.mask + b_ * a.smb;
      for (int64_t t = 0; t < T; ++t) real[t] = m == nullptr || !m[t];
    } else {
      std::fill(real.begin(), real.end(), char(0));
      for (int64_t i = 0; i < nb; ++i) {
        const bool* m = a.mask + b_ * a.smb + (n0 + i) * a.smn;
        for (int64_t t = 0; t < T; ++t) real[t] |= !m[t];
      }
      bool same = b_ == b;
      for (int64_t t = 0, j = 0; same && t < T; ++t) {
        const bool was = j < n && word[j] == t;
        same = was == static_cast<bool>(real[t]);
        j += was;
      }
      if (same) return;
    }
    b = b_;
    n = 0;
    for (int64_t t = 0; t < T; ++t)
      if (real[t]) word[n++] = t;
    const acc_t* src = words + b * C * T;
    for (int64_t c = 0; c < C; ++c)
      for (int64_t j = 0; j < n; ++j) k[c * n + j] = src[c * T + word[j]];
  }

  // bias[j * kTile + i] = 0 where active word j is real for region n0 + i, -inf where it is padding
  // (and for i >= nb): added to the scores, so every loop over them stays branch-free.
  template <typename scalar_t>
  void bias(const Args<scalar_t>& a, int64_t n0, int64_t nb, acc_t* out) const {
    constexpr acc_t inf = std::numeric_limits<acc_t>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      std::fill(out + j * kTile, out + j * kTile + nb, acc_t(0));
      std::fill(out + j * kTile + nb, out + (j + 1) * kTile, -inf);
    }
    if (a.mask == nullptr || a.smn == 0) return;  // active words are real for every region
    for (int64_t i = 0; i < nb; ++i) {
      const bool* m = a.mask + b * a.smb + (n0 + i) * a.smn;
      for (int64_t j = 0; j < n; ++j)
        if (m[word[j]]) out[j * kTile + i] = -inf;
    }
  }

  // full[t * kTile + i] = rows[j * kTile + i] for t = word[j], 0 for the other words.
  void scatter(const acc_t* rows, int64_t T, acc_t* full) const {
    std::fill(full, full + T * kTile, acc_t(0));
    for (int64_t j = 0; j < n; ++j) std::copy(rows + j * kTile, rows + (j + 1) * kTile, full + word[j] * kTile);
  }
};

// The softmax over the T words of every region of a tile, in place on s[t * kTile + i] (the scores
// plus bias: -inf on padding): m[i] = the row maximum (0 for a padding-only row), l[i] = sum_t exp.
template <typename acc_t>
void softmax_rows(acc_t* s, const acc_t* bias, int64_t T, acc_t* m, acc_t* l) {
  using TL = Tile<acc_t>;
  using V = typename TL::V;
  const V neg_inf(-std::numeric_limits<acc_t>::infinity()), zero(acc_t(0));
  for (int64_t v = 0; v < TL::kVecs; ++v) {
    const int64_t o = v * TL::kLanes;
    V mv = neg_inf;
    for (int64_t t = 0; t < T; ++t) {
      const V x = V::loadu(s + t * kTile + o) + V::loadu(bias + t * kTile + o);
      x.store(s + t * kTile + o);
      mv = at::vec::maximum(mv, x);
    }
    mv = V::blendv(mv, zero, mv == neg_inf);  // padding-only row: exp(-inf - 0) = 0 below
    V lv = zero;
    for (int64_t t = 0; t < T; ++t) {
      const V e = (V::loadu(s + t * kTile + o) - mv).exp_u20();  // exactly 0 on padding
      e.store(s + t * kTile + o);
      lv = lv + e;
    }
    mv.store(m + o);
    lv.store(l + o);
  }
}

// s[t][i] *= 1 / l[i], 0 where l[i] = 0 (a padding-only row: probabilities 0).
template <typename acc_t>
void scale_rows(acc_t* s, int64_t T, const acc_t* l) {
  using TL = Tile<acc_t>;
  using V = typename TL::V;
  const V zero(acc_t(0)), one(acc_t(1));
  for (int64_t v = 0; v < TL::kVecs; ++v) {
    const int64_t o = v * TL::kLanes;
    const V lv = V::loadu(l + o);
    const V inv = V::blendv(zero, one / lv, lv > zero);
    for (int64_t t = 0; t < T; ++t) (V::loadu(s + t * kTile + o) * inv).store(s + t * kTile + o);
  }
}

// Softmax backward of a tile: p holds the scores on entry and the probabilities exp(s + bias - lse) on
// exit (lse = +inf: padding-only row or past the tile's regions, probability 0, so zero gradients);
// dp holds dL/dP on entry and dS = P * (dP - sum_t P dP) on exit.
template <typename acc_t>
void softmax_backward_rows(acc_t* p, acc_t* dp, const acc_t* bias, const acc_t* lse, int64_t T) {
  using TL = Tile<acc_t>;
  using V = typename TL::V;
  for (int64_t v = 0; v < TL::kVecs; ++v) {
    const int64_t o = v * TL::kLanes;
    const V lv = V::loadu(lse + o);
    V delta(acc_t(0));
    for (int64_t t = 0; t < T; ++t) {
      const V pv = (V::loadu(p + t * kTile + o) - lv + V::loadu(bias + t * kTile + o)).exp_u20();
      pv.store(p + t * kTile + o);
      delta = at::vec::fmadd(pv, V::loadu(dp + t * kTile + o), delta);
    }
    for (int64_t t = 0; t < T; ++t) {
      const V pv = V::loadu(p + t * kTile + o);
      (pv * (V::loadu(dp + t * kTile + o) - delta)).store(dp + t * kTile + o);
    }
  }
}

// lse[i] = m[i] + log(l[i]) for i < nb, +inf where l[i] = 0 (a padding-only row).
template <typename acc_t>
void store_lse(const acc_t* m, const acc_t* l, int64_t nb, acc_t* lse) {
  using TL = Tile<acc_t>;
  using V = typename TL::V;
  const V inf(std::numeric_limits<acc_t>::infinity()), zero(acc_t(0));
  for (int64_t o = 0; o < nb; o += TL::kLanes) {
    const V lv = V::loadu(l + o);
    const V r = V::blendv(inf, V::loadu(m + o) + V::blendv(V(acc_t(1)), lv, lv > zero).log(), lv > zero);
    r.store(lse + o, static_cast<int>(std::min(TL::kLanes, nb - o)));
  }
}

template <typename scalar_t, typename acc_t>
void forward_impl(const Args<scalar_t>& a, const acc_t* words, scalar_t* out, acc_t* lse, scalar_t* attn,
                  int64_t sab, int64_t sat, int64_t san) {
  const int64_t tiles = (a.N + kTile - 1) / kTile, C = a.C, T = a.T;
  at::parallel_for(0, a.B * tiles, 1, [=](int64_t w0, int64_t w1) {
    std::vector<acc_t> buf(C * kTile), s(T * kTile), bias(T * kTile), stage(kTile * std::max(C, T));
    std::vector<acc_t> full(attn != nullptr ? T * kTile : 0);
    ActiveWords<acc_t> act(C, T);
    alignas(64) acc_t m[kTile];
    alignas(64) acc_t l[kTile];
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / tiles, n0 = (w % tiles) * kTile, nb = std::min(kTile, a.N - n0);
      act.update(a, words, b, n0, nb);
      const int64_t n = act.n;
      load_tile(a.q, a, b, n0, nb, buf.data(), stage.data());
      project(buf.data(), act.k.data(), C, n, s.data());
      act.bias(a, n0, nb, bias.data());
      softmax_rows(s.data(), bias.data(), n, m, l);
      store_lse(m, l, nb, lse + b * a.N + n0);
      scale_rows(s.data(), n, l);
      if (attn != nullptr) {
        act.scatter(s.data(), T, full.data());
        store_rows(attn + b * sab + n0 * san, sat, san, T, nb, full.data(), stage.data());
      }
      expand(s.data(), act.k.data(), C, n, buf.data());
      store_tile(out, a, b, n0, nb, buf.data(), stage.data());
    }
    stream_fence();
  });
}

template <typename scalar_t, typename acc_t>
void backward_impl(const Args<scalar_t>& a, const acc_t* words, const scalar_t* grad_out, const acc_t* lse,
                   const scalar_t* grad_attn, int64_t sab, int64_t sat, int64_t san, scalar_t* grad_q,
                   acc_t* grad_k_part, int64_t chunks) {
  const int64_t tiles = (a.N + kTile - 1) / kTile, C = a.C, T = a.T;
  at::parallel_for(0, a.B * chunks, 1, [=](int64_t w0, int64_t w1) {
    std::vector<acc_t> qb(C * kTile), gb(C * kTile), p(T * kTile), dp(T * kTile), bias(T * kTile);
    std::vector<acc_t> stage(kTile * std::max(C, T)), ga(grad_attn != nullptr ? T * kTile : 0);
    std::vector<Vectorized<acc_t>> lanes(C * T);
    ActiveWords<acc_t> act(C, T);
    alignas(64) acc_t lrow[kTile];
    for (int64_t w = w0; w < w1; ++w) {
      const int64_t b = w / chunks, j = w % chunks;
      acc_t* part = grad_k_part + w * C * T;
      std::fill(lanes.begin(), lanes.end(), Vectorized<acc_t>(acc_t(0)));
      for (int64_t tile = j * kChunkTiles; tile < std::min(tiles, (j + 1) * kChunkTiles); ++tile) {
        const int64_t n0 = tile * kTile, nb = std::min(kTile, a.N - n0);
        act.update(a, words, b, n0, nb);
        const int64_t n = act.n;
        const acc_t* k = act.k.data();
        load_tile(a.q, a, b, n0, nb, qb.data(), stage.data());
        load_tile(grad_out, a, b, n0, nb, gb.data(), stage.data());
        project(qb.data(), k, C, n, p.data());   // scores
        project(gb.data(), k, C, n, dp.data());  // dP = dO . words
        act.bias(a, n0, nb, bias.data());
        for (int64_t i = 0; i < kTile; ++i) lrow[i] = i < nb ? lse[b * a.N + n0 + i] : std::numeric_limits<acc_t>::infinity();
        if (grad_attn != nullptr) {  // dP += the gradient reaching the returned attention
          load_rows(grad_attn + b * sab + n0 * san, sat, san, T, nb, ga.data(), stage.data());
          for (int64_t r = 0; r < n; ++r)  // (a padding word's probability is 0: its dP does not matter)
            at::vec::map2<acc_t>([](auto x, auto y) { return x + y; }, dp.data() + r * kTile, dp.data() + r * kTile,
                                 ga.data() + act.word[r] * kTile, kTile);
        }
        softmax_backward_rows(p.data(), dp.data(), bias.data(), lrow, n);
        accumulate_dwords(qb.data(), gb.data(), dp.data(), p.data(), C, T, act.word.data(), n, lanes.data());
        expand(dp.data(), k, C, n, qb.data());  // dregions = dS . words
        store_tile(grad_q, a, b, n0, nb, qb.data(), stage.data());
      }
      for (int64_t e = 0; e < C * T; ++e)
        part[e] = at::vec::vec_reduce_all<acc_t>([](auto x, auto y) { return x + y; }, lanes[e]);
    }
    stream_fence();
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
