// Word-region attention, CUDA kernels (math and conventions: fastt2i/ops/word_region_attention.py).
// One thread per region keeps the region's whole score row (T <= TMAX <= 64) in registers.  Tiles of
// regions and channels are staged through shared memory with coalesced loads in either layout
// (NCHW: regions contiguous; NHWC: channels contiguous); the words chunk is broadcast from shared.
// Forward: scores, masked softmax, lse and context in one pass (scores never reach memory).
// Backward: recompute P from lse, dS = P * (dP - rowsum(P * dP)), dregions = dS . words; each block
// takes a run of tiles and accumulates its partial dwords = regions . dS + dO . P in its own slice of
// (B, splits, C, T), which the caller sums (deterministic, no atomics).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common.cuh"

namespace fastt2i {
namespace cuda {
namespace {

// Block shapes, sized to stay under 48 KiB of static shared memory at TMAX = 64.
constexpr int kFwdRegions = 128;  // threads (= regions) per forward block
template <typename acc_t> struct Cfg {
  static constexpr int kFwdChunk = 32;    // channels per shared-memory chunk, forward
  static constexpr int kBwdRegions = 64;  // threads (= regions) per backward block
  static constexpr int kBwdChunk = 16;    // channels per chunk, backward (P and dS also live in shared memory)
};
template <> struct Cfg<double> {
  static constexpr int kFwdChunk = 16;
  static constexpr int kBwdRegions = 32;
  static constexpr int kBwdChunk = 8;
};

template <typename acc_t> __device__ __forceinline__ acc_t exp_acc(acc_t x);
template <> __device__ __forceinline__ float exp_acc<float>(float x) { return expf(x); }
template <> __device__ __forceinline__ double exp_acc<double>(double x) { return exp(x); }
template <typename acc_t> __device__ __forceinline__ acc_t log_acc(acc_t x);
template <> __device__ __forceinline__ float log_acc<float>(float x) { return logf(x); }
template <> __device__ __forceinline__ double log_acc<double>(double x) { return log(x); }
template <typename acc_t> __device__ __forceinline__ acc_t inf_acc();
template <> __device__ __forceinline__ float inf_acc<float>() { return __int_as_float(0x7f800000); }
template <> __device__ __forceinline__ double inf_acc<double>() { return __longlong_as_double(0x7ff0000000000000LL); }

// tile[c][i] = src[b, c0 + c, n0 + i] (0 outside C and N).  Consecutive threads read consecutive
// addresses: along n for NCHW, along c for NHWC.
template <int CHUNK, int REGIONS, typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_tile(acc_t (*tile)[REGIONS + 1], const scalar_t* __restrict__ src,
                                          const WraLayout& L, int64_t b, int64_t n0, int64_t c0) {
  const bool nhwc = L.sn != 1;
  for (int idx = threadIdx.x; idx < CHUNK * REGIONS; idx += REGIONS) {
    const int c = nhwc ? idx % CHUNK : idx / REGIONS;
    const int i = nhwc ? idx / CHUNK : idx % REGIONS;
    const int64_t cc = c0 + c, n = n0 + i;
    tile[c][i] = (cc < L.C && n < L.N) ? to_acc(src[b * L.sb + cc * L.sc + n * L.sn]) : acc_t(0);
  }
}

template <int CHUNK, int REGIONS, typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_tile(scalar_t* __restrict__ dst, const acc_t (*tile)[REGIONS + 1],
                                           const WraLayout& L, int64_t b, int64_t n0, int64_t c0) {
  const bool nhwc = L.sn != 1;
  for (int idx = threadIdx.x; idx < CHUNK * REGIONS; idx += REGIONS) {
    const int c = nhwc ? idx % CHUNK : idx / REGIONS;
    const int i = nhwc ? idx / CHUNK : idx % REGIONS;
    const int64_t cc = c0 + c, n = n0 + i;
    if (cc < L.C && n < L.N) dst[b * L.sb + cc * L.sc + n * L.sn] = from_acc<scalar_t>(tile[c][i]);
  }
}

// ks[c][t] = words[b, c0 + c, t] (0 outside C and T); words are the accumulate type, contiguous.
template <int CHUNK, int TMAX, int THREADS, typename acc_t>
__device__ __forceinline__ void load_words(acc_t (*ks)[TMAX], const acc_t* __restrict__ words, const WraLayout& L,
                                           int64_t b, int64_t c0) {
  for (int idx = threadIdx.x; idx < CHUNK * TMAX; idx += THREADS) {
    const int c = idx / TMAX, t = idx % TMAX;
    const int64_t cc = c0 + c;
    ks[c][t] = (cc < L.C && t < L.T) ? words[(b * L.C + cc) * L.T + t] : acc_t(0);
  }
}

// v[0..3] = p[0..3]; p is 16-byte aligned (so float loads are one 128-bit load, double two).
__device__ __forceinline__ void load4(const float* p, float* v) {
  const float4 x = *reinterpret_cast<const float4*>(p);
  v[0] = x.x; v[1] = x.y; v[2] = x.z; v[3] = x.w;
}
__device__ __forceinline__ void load4(const double* p, double* v) {
  const double2 x = reinterpret_cast<const double2*>(p)[0], y = reinterpret_cast<const double2*>(p)[1];
  v[0] = x.x; v[1] = x.y; v[2] = y.x; v[3] = y.y;
}

__device__ __forceinline__ bool is_word(const WraMask& M, int64_t b, int64_t n, int t, int64_t T) {
  if (t >= T) return false;
  if (M.data == nullptr) return true;
  return !static_cast<const bool*>(M.data)[b * M.sb + n * M.sn + t];
}

template <typename scalar_t, int TMAX>
__global__ void __launch_bounds__(kFwdRegions) forward_kernel(const scalar_t* __restrict__ regions,
                                                               const typename Acc<scalar_t>::type* __restrict__ words,
                                                               WraMask mask, scalar_t* __restrict__ context,
                                                               typename Acc<scalar_t>::type* __restrict__ lse,
                                                               scalar_t* __restrict__ attention, int64_t a_sb,
                                                               int64_t a_st, int64_t a_sn, WraLayout L) {
  using acc_t = typename Acc<scalar_t>::type;
  constexpr int kFwdChunk = Cfg<acc_t>::kFwdChunk;
  __shared__ acc_t tile[kFwdChunk][kFwdRegions + 1];
  __shared__ __align__(16) acc_t ks[kFwdChunk][TMAX];
  // grid: (sample, tile of regions) flattened on gridDim.x (gridDim.y would cap the batch at 65535)
  const int64_t tiles = (L.N + kFwdRegions - 1) / kFwdRegions;
  const int64_t b = blockIdx.x / tiles, n0 = (blockIdx.x % tiles) * kFwdRegions, n = n0 + threadIdx.x;
  const int i = threadIdx.x;
  acc_t s[TMAX];
#pragma unroll
  for (int t = 0; t < TMAX; ++t) s[t] = acc_t(0);
  for (int64_t c0 = 0; c0 < L.C; c0 += kFwdChunk) {
    load_tile<kFwdChunk, kFwdRegions>(tile, regions, L, b, n0, c0);
    load_words<kFwdChunk, TMAX, kFwdRegions>(ks, words, L, b, c0);
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < kFwdChunk; ++c) {
      const acc_t qv = tile[c][i];
#pragma unroll
      for (int t = 0; t < TMAX; ++t) s[t] += qv * ks[c][t];
    }
    __syncthreads();
  }
  const bool in_range = n < L.N;
  const acc_t inf = inf_acc<acc_t>();
  acc_t m = -inf;
#pragma unroll
  for (int t = 0; t < TMAX; ++t) {
    if (!(in_range && is_word(mask, b, n, t, L.T))) s[t] = -inf;
    m = s[t] > m ? s[t] : m;
  }
  if (m == -inf) m = acc_t(0);  // a row of padding only: every exp below is exactly 0
  acc_t l = acc_t(0);
#pragma unroll
  for (int t = 0; t < TMAX; ++t) {
    s[t] = s[t] == -inf ? acc_t(0) : exp_acc(s[t] - m);
    l += s[t];
  }
  const bool has_word = l > acc_t(0);
  const acc_t inv = has_word ? acc_t(1) / l : acc_t(0);
#pragma unroll
  for (int t = 0; t < TMAX; ++t) s[t] *= inv;
  if (in_range) {
    lse[b * L.N + n] = has_word ? m + log_acc(l) : inf;
    if (attention != nullptr) {
#pragma unroll
      for (int t = 0; t < TMAX; ++t)
        if (t < L.T) attention[b * a_sb + t * a_st + n * a_sn] = from_acc<scalar_t>(s[t]);
    }
  }
  for (int64_t c0 = 0; c0 < L.C; c0 += kFwdChunk) {
    load_words<kFwdChunk, TMAX, kFwdRegions>(ks, words, L, b, c0);
    __syncthreads();
#pragma unroll 4
    for (int c = 0; c < kFwdChunk; ++c) {
      acc_t o = acc_t(0);
#pragma unroll
      for (int t = 0; t < TMAX; ++t) o += s[t] * ks[c][t];
      tile[c][i] = o;
    }
    __syncthreads();
    store_tile<kFwdChunk, kFwdRegions>(context, tile, L, b, n0, c0);
    __syncthreads();
  }
}

template <typename scalar_t, int TMAX>
__global__ void __launch_bounds__(Cfg<typename Acc<scalar_t>::type>::kBwdRegions) backward_kernel(
    const scalar_t* __restrict__ grad_context, const scalar_t* __restrict__ grad_attention, int64_t a_sb,
    int64_t a_st, int64_t a_sn, const scalar_t* __restrict__ regions,
    const typename Acc<scalar_t>::type* __restrict__ words, WraMask mask,
    const typename Acc<scalar_t>::type* __restrict__ lse, scalar_t* __restrict__ grad_regions,
    typename Acc<scalar_t>::type* __restrict__ grad_words_partial, int64_t tiles_per_block, WraLayout L) {
  using acc_t = typename Acc<scalar_t>::type;
  constexpr int kBwdRegions = Cfg<acc_t>::kBwdRegions, kBwdChunk = Cfg<acc_t>::kBwdChunk;
  __shared__ acc_t qs[kBwdChunk][kBwdRegions + 1];
  __shared__ acc_t gs[kBwdChunk][kBwdRegions + 1];
  constexpr int kRow = TMAX + 4;  // row stride of P and dS: 16-byte aligned rows for 4-word loads
  __shared__ __align__(16) acc_t ks[kBwdChunk][TMAX];
  __shared__ __align__(16) acc_t ps[kBwdRegions][kRow];
  __shared__ __align__(16) acc_t dss[kBwdRegions][kRow];
  // grid: (sample, split) flattened on gridDim.x (gridDim.y would cap the batch at 65535); split
  // takes tiles [split * tiles_per_block, (split + 1) * tiles_per_block).
  const int64_t tiles = (L.N + kBwdRegions - 1) / kBwdRegions;
  const int64_t splits = (tiles + tiles_per_block - 1) / tiles_per_block;
  const int64_t b = blockIdx.x / splits, split = blockIdx.x % splits;
  const int i = threadIdx.x;
  // This block's slice (b, split) of partial dwords, summed over its tiles: each (c, t) is owned by
  // one thread for all tiles (the job mapping below depends only on the thread), so no atomics are needed.
  acc_t* part = grad_words_partial + static_cast<int64_t>(blockIdx.x) * L.C * L.T;
  const int64_t tile_end = min(tiles, (split + 1) * tiles_per_block);
  for (int64_t tile = split * tiles_per_block; tile < tile_end; ++tile) {
    const bool first = tile == split * tiles_per_block;
    const int64_t n0 = tile * kBwdRegions, n = n0 + threadIdx.x;
    acc_t s[TMAX], dp[TMAX];
#pragma unroll
    for (int t = 0; t < TMAX; ++t) s[t] = dp[t] = acc_t(0);
    for (int64_t c0 = 0; c0 < L.C; c0 += kBwdChunk) {
      load_tile<kBwdChunk, kBwdRegions>(qs, regions, L, b, n0, c0);
      load_tile<kBwdChunk, kBwdRegions>(gs, grad_context, L, b, n0, c0);
      load_words<kBwdChunk, TMAX, kBwdRegions>(ks, words, L, b, c0);
      __syncthreads();
#pragma unroll 4
      for (int c = 0; c < kBwdChunk; ++c) {
        const acc_t qv = qs[c][i], gv = gs[c][i];
#pragma unroll
        for (int t = 0; t < TMAX; ++t) {
          s[t] += qv * ks[c][t];
          dp[t] += gv * ks[c][t];
        }
      }
      __syncthreads();
    }
    const bool in_range = n < L.N;
    // lse = +inf (padding-only row) gives P = 0 and so zero gradients; so does a region past N.
    const acc_t row_lse = in_range ? lse[b * L.N + n] : inf_acc<acc_t>();
    acc_t delta = acc_t(0);
#pragma unroll
    for (int t = 0; t < TMAX; ++t) {
      const bool word = in_range && is_word(mask, b, n, t, L.T);
      s[t] = word ? exp_acc(s[t] - row_lse) : acc_t(0);  // s becomes P
      if (grad_attention != nullptr && word) dp[t] += to_acc(grad_attention[b * a_sb + t * a_st + n * a_sn]);
      delta += s[t] * dp[t];
    }
#pragma unroll
    for (int t = 0; t < TMAX; ++t) {
      dp[t] = s[t] * (dp[t] - delta);  // dp becomes dS
      ps[i][t] = s[t];
      dss[i][t] = dp[t];
    }
    for (int64_t c0 = 0; c0 < L.C; c0 += kBwdChunk) {
      load_tile<kBwdChunk, kBwdRegions>(qs, regions, L, b, n0, c0);
      load_tile<kBwdChunk, kBwdRegions>(gs, grad_context, L, b, n0, c0);
      load_words<kBwdChunk, TMAX, kBwdRegions>(ks, words, L, b, c0);
      __syncthreads();
      // this tile's dwords[c, t] = sum_j q[c][j] dS[j][t] + dO[c][j] P[j][t]: one channel x four words
      // per thread at a time (two broadcast and two vector loads per eight FMAs)
      constexpr int kGroups = TMAX / 4;
      for (int job = i; job < kBwdChunk * kGroups; job += kBwdRegions) {
        const int c = job / kGroups, t0 = (job % kGroups) * 4;
        acc_t sum[4] = {acc_t(0), acc_t(0), acc_t(0), acc_t(0)};
#pragma unroll 4
        for (int j = 0; j < kBwdRegions; ++j) {
          const acc_t qv = qs[c][j], gv = gs[c][j];
          acc_t d[4], p[4];
          load4(&dss[j][t0], d);
          load4(&ps[j][t0], p);
#pragma unroll
          for (int k = 0; k < 4; ++k) sum[k] += qv * d[k] + gv * p[k];
        }
        if (c0 + c < L.C) {
#pragma unroll
          for (int k = 0; k < 4; ++k)
            if (t0 + k < L.T) {
              acc_t* out = part + (c0 + c) * L.T + t0 + k;
              *out = first ? sum[k] : *out + sum[k];
            }
        }
      }
      __syncthreads();
#pragma unroll 4
      for (int c = 0; c < kBwdChunk; ++c) {  // dregions = dS . words, staged in qs for a coalesced store
        acc_t g = acc_t(0);
#pragma unroll
        for (int t = 0; t < TMAX; ++t) g += dp[t] * ks[c][t];
        qs[c][i] = g;
      }
      __syncthreads();
      store_tile<kBwdChunk, kBwdRegions>(grad_regions, qs, L, b, n0, c0);
      __syncthreads();
    }
  }  // tiles
}

// Calls f(std::integral_constant<int, TMAX>) with the smallest TMAX >= T.
template <typename F>
cudaError_t dispatch_words(int64_t T, F&& f) {
  if (T <= 16) return f(std::integral_constant<int, 16>{});
  if (T <= 24) return f(std::integral_constant<int, 24>{});
  if (T <= 32) return f(std::integral_constant<int, 32>{});
  if (T <= 64) return f(std::integral_constant<int, 64>{});
  return cudaErrorInvalidValue;
}

}  // namespace

static int64_t word_region_attention_backward_tiles_per_block(DType dtype, int64_t B, int64_t N, int num_sms) {
  // About 8 blocks per SM; more tiles per block means fewer partial dwords slices to write and sum.
  const int64_t tiles = ceil_div(N, dtype == DType::Float64 ? Cfg<double>::kBwdRegions : Cfg<float>::kBwdRegions);
  const int64_t per_block = (B * tiles) / (8LL * num_sms);
  return std::max<int64_t>(1, std::min<int64_t>({per_block, 32, tiles}));
}

int64_t word_region_attention_backward_splits(DType dtype, int64_t B, int64_t N, int num_sms) {
  const int64_t tiles = ceil_div(N, dtype == DType::Float64 ? Cfg<double>::kBwdRegions : Cfg<float>::kBwdRegions);
  return ceil_div(tiles, word_region_attention_backward_tiles_per_block(dtype, B, N, num_sms));
}

LaunchShape word_region_attention_forward_shape(int64_t B, int64_t N) {
  return LaunchShape{{B * ceil_div(N, kFwdRegions), 1, 1}, {kFwdRegions, 1, 1}, 0};
}

LaunchShape word_region_attention_backward_shape(DType dtype, int64_t B, int64_t N, int num_sms) {
  const int64_t threads = dtype == DType::Float64 ? Cfg<double>::kBwdRegions : Cfg<float>::kBwdRegions;
  return LaunchShape{{B * word_region_attention_backward_splits(dtype, B, N, num_sms), 1, 1}, {threads, 1, 1}, 0};
}

cudaError_t word_region_attention_forward(DType dtype, const void* regions, const void* words, WraMask mask,
                                          void* context, void* lse, void* attention, int64_t attn_sb,
                                          int64_t attn_st, int64_t attn_sn, WraLayout L, cudaStream_t stream) {
  if (L.B * L.N == 0) return cudaSuccess;
  const LaunchShape shape = word_region_attention_forward_shape(L.B, L.N);
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    return dispatch_words(L.T, [&](auto tmax) {
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, forward_kernel<scalar_t, decltype(tmax)::value>)(
          static_cast<const scalar_t*>(regions), static_cast<const acc_t*>(words), mask,
          static_cast<scalar_t*>(context), static_cast<acc_t*>(lse), static_cast<scalar_t*>(attention), attn_sb,
          attn_st, attn_sn, L);
      return cudaGetLastError();
    });
  });
}

cudaError_t word_region_attention_backward(DType dtype, const void* grad_context, const void* grad_attention,
                                           int64_t attn_sb, int64_t attn_st, int64_t attn_sn, const void* regions,
                                           const void* words, WraMask mask, const void* lse, void* grad_regions,
                                           void* grad_words_partial, int num_sms, WraLayout L,
                                           cudaStream_t stream) {
  if (L.B * L.N == 0) return cudaSuccess;
  const int64_t per_block = word_region_attention_backward_tiles_per_block(dtype, L.B, L.N, num_sms);
  const LaunchShape shape = word_region_attention_backward_shape(dtype, L.B, L.N, num_sms);
  return dispatch_dtype(dtype, [&](auto tag) {
    using scalar_t = decltype(tag);
    using acc_t = typename Acc<scalar_t>::type;
    return dispatch_words(L.T, [&](auto tmax) {
      FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, backward_kernel<scalar_t, decltype(tmax)::value>)(
          static_cast<const scalar_t*>(grad_context), static_cast<const scalar_t*>(grad_attention), attn_sb,
          attn_st, attn_sn, static_cast<const scalar_t*>(regions), static_cast<const acc_t*>(words), mask,
          static_cast<const acc_t*>(lse), static_cast<scalar_t*>(grad_regions),
          static_cast<acc_t*>(grad_words_partial), per_block, L);
      return cudaGetLastError();
    });
  });
}

}  // namespace cuda
}  // namespace fastt2i
