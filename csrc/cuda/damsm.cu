// DAMSM word-level matching, CUDA kernels between the GEMMs (one block per (image, caption) pair).
// The contractions between them are cuBLAS GEMMs issued by damsm_cuda.cpp; the math and the
// autograd are in fastt2i/ops/damsm.py.  The real words are packed: caption i owns columns
// offsets[i] .. offsets[i] + lengths[i] - 1 of the P = sum(lengths) word columns.
//   forward:  S = V^T E (GEMM) -> attention_softmax: alpha, beta -> C = beta^T V (GEMM)
//             -> cosine_score: R = log sum_w exp(gamma2 cos(e_w, c_w))
//   backward: cosine_score with a gradient: G = dL/dC and the per-word coefficients below
//             -> H = V^T G (GEMM) -> softmax_backward: H = dL/dS (+ folded term), G corrected
// Per word w of a pair, with gcos = dL/dcos(e_w, c_w) and den = max(|e_w| |c_w|, eps):
//   coef_c[w] = gcos / den, coef_e[w] = -gcos cos / |e_w|^2   so  dL/de_w = coef_c c_w + coef_e e_w;
//   g_dot_c[w] = G_w . c_w = sum_n beta[n, w] dL/dbeta[n, w]   (the row sum of the beta softmax backward).
// Layouts (acc_t = float, or double):
//   S / alpha / beta / H : (images, N, P);  C / G : (images, P, D);  erows : (P, D)
//   coef_c / coef_e / g_dot_c : (images, P);  scores / grad : (images, B)
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

// alpha = softmax over the words of each region row (written over S), then
// beta = softmax over the regions of gamma1 * alpha (written to beta, which may be S).
template <typename acc_t>
__global__ void attention_softmax_kernel(acc_t* s, acc_t* beta, const int64_t* __restrict__ lengths,
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

// Cosines of the pair's context rows with its words and R = lse_w(gamma2 * cos).
// With grad: g = dR/dC * grad, and coef_c, coef_e, g_dot_c per word (see the top of the file).
template <typename acc_t>
__global__ void cosine_score_kernel(const acc_t* __restrict__ c, const acc_t* __restrict__ erows,
                                    const int64_t* __restrict__ lengths, const int64_t* __restrict__ offsets,
                                    const acc_t* __restrict__ grad, acc_t* __restrict__ scores,
                                    acc_t* __restrict__ g, acc_t* __restrict__ coef_c, acc_t* __restrict__ coef_e,
                                    acc_t* __restrict__ g_dot_c, int64_t B, int64_t P, int64_t D, acc_t gamma2,
                                    acc_t eps) {
  FASTT2I_DYNAMIC_SHARED(unsigned char, smem_raw);
  const int64_t pair = blockIdx.x, j = pair / B, i = pair % B, L = lengths[i];
  acc_t* x = reinterpret_cast<acc_t*>(smem_raw);  // gamma2 * cos, per word
  acc_t* cosv = x + L;
  acc_t* den = cosv + L;           // max(|e| |c|, eps)
  acc_t* e_sq = den + L;           // |e|^2
  acc_t* c_sq = e_sq + L;          // |c|^2
  acc_t* norm_product = c_sq + L;  // |e| |c|
  __shared__ acc_t r_shared;
  const int64_t col = j * P + offsets[i];  // the pair's first row of C, G and the per-word coefficients
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
      e_sq[w] = a2;
      c_sq[w] = b2;
      norm_product[w] = sqrt(a2) * sqrt(b2);
      den[w] = max(norm_product[w], eps);
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
    const bool free = norm_product[w] >= eps;  // the clamp passes no gradient to |e||c| when active
    const acc_t cos_over_c_sq = free ? cosv[w] / c_sq[w] : acc_t(0);
    const acc_t cos_over_e_sq = free ? cosv[w] / e_sq[w] : acc_t(0);
    // dcos/dc = e / den - cos c / |c|^2, dcos/de = c / den - cos e / |e|^2
    const acc_t word_coef_c = gcos / den[w], context_coef_c = gcos * cos_over_c_sq;
    acc_t dot = 0;
    for (int64_t d = lane; d < D; d += 32) {
      const acc_t cv = cp[w * D + d];
      const acc_t gv = word_coef_c * ep[w * D + d] - context_coef_c * cv;
      gp[w * D + d] = gv;
      dot += gv * cv;
    }
    dot = warp_sum(dot);
    if (lane == 0) {
      coef_c[col + w] = word_coef_c;
      coef_e[col + w] = -gcos * cos_over_e_sq;
      g_dot_c[col + w] = dot;
    }
  }
}

// Both softmax backwards: h holds dL/dbeta on entry and H = dS + coef_c * beta on exit; g becomes
// g - coef_c * e.  (The coef_c c_w term of dL/de_w is folded into the dL/dS GEMM, c_w being
// sum_n beta[n, w] v_n; the correction of g takes back what that adds to dL/dV.)
template <typename acc_t>
__global__ void softmax_backward_kernel(const acc_t* __restrict__ alpha, const acc_t* __restrict__ beta,
                                        acc_t* __restrict__ h, acc_t* __restrict__ g,
                                        const acc_t* __restrict__ erows, const int64_t* __restrict__ lengths,
                                        const int64_t* __restrict__ offsets, const acc_t* __restrict__ coef_c,
                                        const acc_t* __restrict__ g_dot_c, int64_t B, int64_t N, int64_t P,
                                        int64_t D, acc_t gamma1) {
  FASTT2I_DYNAMIC_SHARED(unsigned char, smem_raw);
  const int64_t pair = blockIdx.x, j = pair / B, i = pair % B, L = lengths[i];
  acc_t* coef_c_s = reinterpret_cast<acc_t*>(smem_raw);
  acc_t* g_dot_c_s = coef_c_s + L;
  const int64_t col = j * P + offsets[i];
  for (int64_t w = threadIdx.x; w < L; w += blockDim.x) {
    coef_c_s[w] = coef_c[col + w];
    g_dot_c_s[w] = g_dot_c[col + w];
  }
  __syncthreads();
  const int64_t off = j * N * P + offsets[i];
  for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
    const acc_t* a = alpha + off + n * P;
    const acc_t* bt = beta + off + n * P;
    acc_t* hn = h + off + n * P;
    acc_t tsum = 0;
    for (int64_t w = 0; w < L; ++w) tsum += a[w] * gamma1 * bt[w] * (hn[w] - g_dot_c_s[w]);
    for (int64_t w = 0; w < L; ++w) {
      const acc_t t = a[w] * gamma1 * bt[w] * (hn[w] - g_dot_c_s[w]);
      hn[w] = t - a[w] * tsum + coef_c_s[w] * bt[w];
    }
  }
  acc_t* gp = g + col * D;
  const acc_t* ep = erows + offsets[i] * D;
  for (int64_t k = threadIdx.x; k < L * D; k += blockDim.x) gp[k] -= coef_c_s[k / D] * ep[k];
}

template <typename F>
cudaError_t dispatch_acc(DType dtype, F&& f) {
  if (dtype == DType::Float64) return f(double{});
  if (dtype == DType::Float32) return f(float{});
  return cudaErrorInvalidValue;  // these kernels run in the accumulate type only
}

}  // namespace

LaunchShape damsm_pair_shape(int64_t pairs, int64_t dynamic_smem) {
  return LaunchShape{{pairs, 1, 1}, {kThreads, 1, 1}, dynamic_smem};
}

cudaError_t damsm_attention_softmax(DType acc, void* s, void* beta, const int64_t* lengths, const int64_t* offsets,
                                    int64_t pairs, int64_t B, int64_t N, int64_t P, double gamma1,
                                    cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  const LaunchShape shape = damsm_pair_shape(pairs, 0);
  return dispatch_acc(acc, [&](auto tag) {
    using acc_t = decltype(tag);
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), 0, stream, attention_softmax_kernel<acc_t>)(
        static_cast<acc_t*>(s), static_cast<acc_t*>(beta), lengths, offsets, B, N, P, static_cast<acc_t>(gamma1));
    return cudaGetLastError();
  });
}

int64_t damsm_cosine_score_smem(DType acc, int64_t max_len) {
  return 6 * max_len * (acc == DType::Float64 ? 8 : 4);
}

cudaError_t damsm_cosine_scores(DType acc, const void* c, const void* erows, const int64_t* lengths,
                                const int64_t* offsets, const void* grad, void* scores, void* g, void* coef_c,
                                void* coef_e, void* g_dot_c, int64_t pairs, int64_t B, int64_t P, int64_t D,
                                int64_t max_len, double gamma2, cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  const LaunchShape shape = damsm_pair_shape(pairs, damsm_cosine_score_smem(acc, max_len));
  return dispatch_acc(acc, [&](auto tag) {
    using acc_t = decltype(tag);
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), shape.dynamic_smem, stream, cosine_score_kernel<acc_t>)(
        static_cast<const acc_t*>(c), static_cast<const acc_t*>(erows), lengths, offsets,
        static_cast<const acc_t*>(grad), static_cast<acc_t*>(scores), static_cast<acc_t*>(g),
        static_cast<acc_t*>(coef_c), static_cast<acc_t*>(coef_e), static_cast<acc_t*>(g_dot_c), B, P, D,
        static_cast<acc_t>(gamma2), static_cast<acc_t>(1e-8));
    return cudaGetLastError();
  });
}

int64_t damsm_softmax_backward_smem(DType acc, int64_t max_len) {
  return 2 * max_len * (acc == DType::Float64 ? 8 : 4);
}

cudaError_t damsm_softmax_backward(DType acc, const void* alpha, const void* beta, void* h, void* g,
                                   const void* erows, const int64_t* lengths, const int64_t* offsets,
                                   const void* coef_c, const void* g_dot_c, int64_t pairs, int64_t B, int64_t N,
                                   int64_t P, int64_t D, int64_t max_len, double gamma1, cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  const LaunchShape shape = damsm_pair_shape(pairs, damsm_softmax_backward_smem(acc, max_len));
  return dispatch_acc(acc, [&](auto tag) {
    using acc_t = decltype(tag);
    FASTT2I_LAUNCH(grid_of(shape), block_of(shape), shape.dynamic_smem, stream, softmax_backward_kernel<acc_t>)(
        static_cast<const acc_t*>(alpha), static_cast<const acc_t*>(beta), static_cast<acc_t*>(h),
        static_cast<acc_t*>(g), static_cast<const acc_t*>(erows), lengths, offsets,
        static_cast<const acc_t*>(coef_c), static_cast<const acc_t*>(g_dot_c), B, N, P, D,
        static_cast<acc_t>(gamma1));
    return cudaGetLastError();
  });
}

}  // namespace cuda
}  // namespace fastt2i
