// DAMSM word-level matching, CUDA stage kernels (one block per (image, caption) pair).
// The contractions between the stages are cuBLAS GEMMs issued by damsm_cuda.cpp; the math
// and the autograd are in fastt2i/ops/damsm.py.  The real words are packed: caption i owns
// columns offsets[i] .. offsets[i] + lengths[i] - 1 of the P = sum(lengths) word columns.
// Layouts (acc_t = float, or double):
//   S / alpha / beta / H : (images, N, P);  C / G : (images, P, D);  erows : (P, D)
//   k1 / k2 / cs : (images, P);  scores / grad : (images, B)
#include <cmath>

#include "common.cuh"

namespace fastt2i {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_max(acc_t v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

template <typename acc_t> __device__ __forceinline__ acc_t neg_inf();
template <> __device__ __forceinline__ float neg_inf<float>() { return -INFINITY; }
template <> __device__ __forceinline__ double neg_inf<double>() { return -(double)INFINITY; }

// Stage A: alpha = softmax over the words of each region row (written over S), then
// beta = softmax over the regions of gamma1 * alpha (written to beta, which may be S).
template <typename acc_t>
__global__ void stage_a_kernel(acc_t* s, acc_t* beta, const int64_t* __restrict__ lengths,
                               const int64_t* __restrict__ offsets, int64_t B, int64_t N, int64_t P, acc_t gamma1) {
  const int64_t pair = blockIdx.x, j = pair / B, i = pair % B;
  const int64_t L = lengths[i];
  acc_t* sp = s + j * N * P + offsets[i];
  acc_t* bp = beta + j * N * P + offsets[i];
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    acc_t* row = sp + n * P;
    acc_t mx = neg_inf<acc_t>();
    for (int64_t w = 0; w < L; ++w) mx = max(mx, row[w]);
    acc_t sum = 0;
    for (int64_t w = 0; w < L; ++w) sum += exp(row[w] - mx);
    const acc_t inv = acc_t(1) / sum;
    for (int64_t w = 0; w < L; ++w) row[w] = exp(row[w] - mx) * inv;
  }
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t w = warp; w < L; w += kWarps) {
    acc_t mx = neg_inf<acc_t>();
    for (int64_t n = lane; n < N; n += 32) mx = max(mx, gamma1 * sp[n * P + w]);
    mx = warp_max(mx);
    acc_t sum = 0;
    for (int64_t n = lane; n < N; n += 32) sum += exp(gamma1 * sp[n * P + w] - mx);
    const acc_t lse = mx + log(warp_sum(sum));
    for (int64_t n = lane; n < N; n += 32) bp[n * P + w] = exp(gamma1 * sp[n * P + w] - lse);
  }
}

// Stage B: cosines of the pair's context rows with its words and R = lse_w(gamma2 * cos).
// With grad: g = dR/dC * grad, k1 = gcos / den, k2 (dE = k1 c + k2 e), cs = g . c per word.
template <typename acc_t>
__global__ void stage_b_kernel(const acc_t* __restrict__ c, const acc_t* __restrict__ erows,
                               const int64_t* __restrict__ lengths, const int64_t* __restrict__ offsets,
                               const acc_t* __restrict__ grad, acc_t* __restrict__ scores, acc_t* __restrict__ g,
                               acc_t* __restrict__ k1, acc_t* __restrict__ k2, acc_t* __restrict__ cs, int64_t B,
                               int64_t P, int64_t D, acc_t gamma2, acc_t eps) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t pair = blockIdx.x, j = pair / B, i = pair % B, L = lengths[i];
  acc_t* x = reinterpret_cast<acc_t*>(smem_raw);  // gamma2 * cos
  acc_t* cosv = x + L;
  acc_t* den = cosv + L;
  acc_t* aa = den + L;
  acc_t* bb = aa + L;
  acc_t* ab = bb + L;
  __shared__ acc_t r_shared;
  const int64_t col = j * P + offsets[i];  // the pair's first row of C, G and k*
  const acc_t* cp = c + col * D;
  const acc_t* ep = erows + offsets[i] * D;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t w = warp; w < L; w += kWarps) {
    acc_t dot = 0, a2 = 0, b2 = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const acc_t cv = cp[w * D + d], ev = ep[w * D + d];
      dot += cv * ev;
      a2 += ev * ev;
      b2 += cv * cv;
    }
    dot = warp_sum(dot);
    a2 = warp_sum(a2);
    b2 = warp_sum(b2);
    if (lane == 0) {
      aa[w] = a2;
      bb[w] = b2;
      ab[w] = sqrt(a2) * sqrt(b2);
      den[w] = max(ab[w], eps);
      cosv[w] = dot / den[w];
      x[w] = gamma2 * cosv[w];
    }
  }
  __syncthreads();
  if (warp == 0) {
    acc_t mx = neg_inf<acc_t>();
    for (int64_t w = lane; w < L; w += 32) mx = max(mx, x[w]);
    mx = warp_max(mx);
    acc_t sum = 0;
    for (int64_t w = lane; w < L; w += 32) sum += exp(x[w] - mx);
    sum = warp_sum(sum);
    if (lane == 0) {
      r_shared = mx + log(sum);
      if (grad == nullptr) scores[pair] = r_shared;
    }
  }
  if (grad == nullptr) return;
  __syncthreads();
  const acc_t r = r_shared, gr = grad[pair];
  acc_t* gp = g + col * D;
  for (int64_t w = warp; w < L; w += kWarps) {
    const acc_t gcos = gr * gamma2 * exp(x[w] - r);
    const bool free = ab[w] >= eps;  // the clamp passes no gradient to |e||c| when active
    const acc_t kc = free ? cosv[w] / bb[w] : acc_t(0);
    const acc_t ke = free ? cosv[w] / aa[w] : acc_t(0);
    const acc_t kk1 = gcos / den[w], kcc = gcos * kc;
    acc_t acc = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const acc_t cv = cp[w * D + d];
      const acc_t gv = kk1 * ep[w * D + d] - kcc * cv;
      gp[w * D + d] = gv;
      acc += gv * cv;
    }
    acc = warp_sum(acc);
    if (lane == 0) {
      k1[col + w] = kk1;
      k2[col + w] = -gcos * ke;
      cs[col + w] = acc;
    }
  }
}

// Stage C: h holds dL/dbeta on entry and H = dS + k1 * beta on exit (both softmax
// backwards); g becomes g - k1 * e.
template <typename acc_t>
__global__ void stage_c_kernel(const acc_t* __restrict__ alpha, const acc_t* __restrict__ beta,
                               acc_t* __restrict__ h, acc_t* __restrict__ g, const acc_t* __restrict__ erows,
                               const int64_t* __restrict__ lengths, const int64_t* __restrict__ offsets,
                               const acc_t* __restrict__ k1, const acc_t* __restrict__ cs, int64_t B, int64_t N,
                               int64_t P, int64_t D, acc_t gamma1) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int64_t pair = blockIdx.x, j = pair / B, i = pair % B, L = lengths[i];
  acc_t* k1s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* css = k1s + L;
  const int64_t col = j * P + offsets[i];
  for (int64_t w = threadIdx.x; w < L; w += blockDim.x) {
    k1s[w] = k1[col + w];
    css[w] = cs[col + w];
  }
  __syncthreads();
  const int64_t off = j * N * P + offsets[i];
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const acc_t* a = alpha + off + n * P;
    const acc_t* bt = beta + off + n * P;
    acc_t* hn = h + off + n * P;
    acc_t tsum = 0;
    for (int64_t w = 0; w < L; ++w) tsum += a[w] * gamma1 * bt[w] * (hn[w] - css[w]);
    for (int64_t w = 0; w < L; ++w) {
      const acc_t t = a[w] * gamma1 * bt[w] * (hn[w] - css[w]);
      hn[w] = t - a[w] * tsum + k1s[w] * bt[w];
    }
  }
  acc_t* gp = g + col * D;
  const acc_t* ep = erows + offsets[i] * D;
  for (int64_t k = threadIdx.x; k < L * D; k += blockDim.x) gp[k] -= k1s[k / D] * ep[k];
}

template <typename F>
cudaError_t dispatch_acc(DType dtype, F&& f) {
  if (dtype == DType::Float64) return f(double{});
  if (dtype == DType::Float32) return f(float{});
  return cudaErrorInvalidValue;  // the stages run in the accumulate type only
}

}  // namespace

cudaError_t damsm_stage_a(DType acc, void* s, void* beta, const int64_t* lengths, const int64_t* offsets,
                          int64_t pairs, int64_t B, int64_t N, int64_t P, double gamma1, cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  return dispatch_acc(acc, [&](auto tag) {
    using acc_t = decltype(tag);
    stage_a_kernel<acc_t><<<static_cast<unsigned>(pairs), kThreads, 0, stream>>>(
        static_cast<acc_t*>(s), static_cast<acc_t*>(beta), lengths, offsets, B, N, P, static_cast<acc_t>(gamma1));
    return cudaGetLastError();
  });
}

cudaError_t damsm_stage_b(DType acc, const void* c, const void* erows, const int64_t* lengths, const int64_t* offsets,
                          const void* grad, void* scores, void* g, void* k1, void* k2, void* cs, int64_t pairs,
                          int64_t B, int64_t P, int64_t D, int64_t max_len, double gamma2, cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  return dispatch_acc(acc, [&](auto tag) {
    using acc_t = decltype(tag);
    const size_t smem = 6 * static_cast<size_t>(max_len) * sizeof(acc_t);
    stage_b_kernel<acc_t><<<static_cast<unsigned>(pairs), kThreads, smem, stream>>>(
        static_cast<const acc_t*>(c), static_cast<const acc_t*>(erows), lengths, offsets,
        static_cast<const acc_t*>(grad), static_cast<acc_t*>(scores), static_cast<acc_t*>(g),
        static_cast<acc_t*>(k1), static_cast<acc_t*>(k2), static_cast<acc_t*>(cs), B, P, D,
        static_cast<acc_t>(gamma2), static_cast<acc_t>(1e-8));
    return cudaGetLastError();
  });
}

cudaError_t damsm_stage_c(DType acc, const void* alpha, const void* beta, void* h, void* g, const void* erows,
                          const int64_t* lengths, const int64_t* offsets, const void* k1, const void* cs,
                          int64_t pairs, int64_t B, int64_t N, int64_t P, int64_t D, int64_t max_len, double gamma1,
                          cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  return dispatch_acc(acc, [&](auto tag) {
    using acc_t = decltype(tag);
    const size_t smem = 2 * static_cast<size_t>(max_len) * sizeof(acc_t);
    stage_c_kernel<acc_t><<<static_cast<unsigned>(pairs), kThreads, smem, stream>>>(
        static_cast<const acc_t*>(alpha), static_cast<const acc_t*>(beta), static_cast<acc_t*>(h),
        static_cast<acc_t*>(g), static_cast<const acc_t*>(erows), lengths, offsets, static_cast<const acc_t*>(k1),
        static_cast<const acc_t*>(cs), B, N, P, D, static_cast<acc_t>(gamma1));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastt2i
