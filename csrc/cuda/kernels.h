// Launchers of the CUDA kernels.  This header (and the .cu files) include no torch
// headers, so CI compiles every kernel with plain nvcc, no CUDA build of torch needed;
// the ATen glue (*_cuda.cpp) is built only against a CUDA torch.
#pragma once

#include <cstdint>
#include <cuda_runtime_api.h>

namespace fastt2i {
namespace cuda {

// Grid, block and dynamic shared memory of a launch, in 64 bits: the launchers launch exactly this, and
// the tests check it against the device limits (grid x <= 2^31 - 1, y and z <= 65535) at shapes too
// large to run.
struct LaunchShape {
  int64_t grid[3];
  int64_t block[3];
  int64_t dynamic_smem;
};

// Element types of the tensors handed to the launchers.
enum class DType : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

// ---- df_affine: x (B, C, S) NCHW or (B, S, C) NHWC; gamma/beta (K, B, C) of the accumulate type
// (float, or double for Float64).  The backward writes partial sums (splits, K, B, C) of dgamma and
// dbeta, which the caller sums over splits.
cudaError_t df_affine_forward(DType dtype, const void* x, void* y, const void* gamma, const void* beta,
                              int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last, double slope,
                              cudaStream_t stream);
LaunchShape df_affine_forward_shape(int64_t B, int64_t C, int64_t S);
LaunchShape df_affine_backward_shape(int64_t splits, int64_t B, int64_t C, bool channels_last);
int64_t df_affine_backward_splits(int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last,
                                  int num_sms);
cudaError_t df_affine_backward(DType dtype, const void* grad_out, const void* x, const void* gamma,
                               const void* beta, void* grad_x, void* gamma_partial, void* beta_partial,
                               int64_t splits, int64_t K, int64_t B, int64_t C, int64_t S, bool channels_last,
                               double slope, cudaStream_t stream);

// ---- bias_leaky_relu: y = lrelu(x + bias[c]) over n elements of flat memory.  bias (C,) of the
// accumulate type or null; with a bias the layout is NCHW (c = (i / S) % C) or NHWC (c = i % C).
cudaError_t bias_leaky_relu_forward(DType dtype, const void* x, const void* bias, void* y, int64_t n, int64_t C,
                                    int64_t S, bool channels_last, double slope, cudaStream_t stream);
LaunchShape bias_leaky_relu_shape(int64_t n);
// out = grad * (y > 0 ? 1 : slope), grad and y walked as the same flat memory order.
cudaError_t bias_leaky_relu_backward(DType dtype, const void* grad, const void* y, void* out, int64_t n,
                                     double slope, cudaStream_t stream);

// ---- gate_split: key = s * x, nonkey = (1 - s) * x, s = sigmoid(logits), x (B, C, S) NCHW or (B, S, C)
// NHWC, logits and x of one dtype.  layout 0: logits laid out like x (one gate per element); 1: logits
// (B, S), x NCHW; 2: logits (B, S), x NHWC.  Backward: dx = s * dk + (1 - s) * dn and dlogits = (sum over
// the channels a gate serves of (dk - dn) * x) * s * (1 - s); grad_key / grad_nonkey laid out like x, or
// null for zero.
cudaError_t gate_split_forward(DType dtype, const void* logits, const void* x, void* key, void* nonkey, int64_t B,
                               int64_t C, int64_t S, int layout, cudaStream_t stream);
LaunchShape gate_split_shape(int64_t n);
LaunchShape gate_split_backward_shape(int64_t n, int64_t positions, int layout);
cudaError_t gate_split_backward(DType dtype, const void* grad_key, const void* grad_nonkey, const void* logits,
                                const void* x, void* dlogits, void* dx, int64_t B, int64_t C, int64_t S, int layout,
                                cudaStream_t stream);

// ---- gradient_penalty: up to kGradientPenaltyMaxTensors gradients per launch; sample b of tensor t
// is the flat span [b * per_sample[t], (b + 1) * per_sample[t]).  Partial sums of squares go to
// partial (B, P) of the accumulate type at columns chunk_begin[t] ... (gradient_penalty_chunks each).
constexpr int kGradientPenaltyMaxTensors = 8;
struct GradientPenaltyGroup {
  const void* grads[kGradientPenaltyMaxTensors];
  void* outs[kGradientPenaltyMaxTensors];  // backward only
  DType dtypes[kGradientPenaltyMaxTensors];
  int64_t per_sample[kGradientPenaltyMaxTensors];
  int64_t chunk_begin[kGradientPenaltyMaxTensors + 1];  // cumulative, relative to column_offset
  int64_t column_offset;
  int count;
};
int64_t gradient_penalty_chunks(int64_t per_sample);
// The partial and backward launches of a group of `chunks` chunks per sample (chunks * B blocks).
LaunchShape gradient_penalty_shape(int64_t chunks, int64_t B);
cudaError_t gradient_penalty_partial(const GradientPenaltyGroup& group, int64_t B, void* partial, int64_t P,
                                     bool acc_double, cudaStream_t stream);
// sumsq[b] = scale^2 * sum_j partial[b, j]; loss = k * mean_b sumsq[b]^(p/2) (0 for sumsq = 0).
cudaError_t gradient_penalty_finalize(const void* partial, int64_t B, int64_t P, double k, double p, double scale,
                                      void* sumsq, void* loss, bool acc_double, cudaStream_t stream);
// outs[t] = grads[t] * grad_loss * k*p/B * scale^2 * sumsq[b]^(p/2 - 1) (0 for sumsq = 0); grad_loss is
// one element of the accumulate type on the device.
cudaError_t gradient_penalty_backward(const GradientPenaltyGroup& group, int64_t B, const void* sumsq,
                                      const void* grad_loss, double k, double p, double scale, bool acc_double,
                                      cudaStream_t stream);

// ---- damsm (word-level matching): the kernels between the GEMMs, one block per (image, caption)
// pair, in the accumulate type (Float32 or Float64).  The P = sum(lengths) real words are packed:
// caption i owns columns offsets[i] .. offsets[i] + lengths[i] - 1 (lengths, offsets: int64 (B,) on
// the device, 1 <= lengths <= max_len <= kDamsmMaxWords).  S/alpha/beta/H: (images, N, P);
// C/G: (images, P, D); erows (P, D); coef_c/coef_e/g_dot_c (images, P); scores/grad (images, B).
// Per word, with gcos = dL/dcos: dL/de = coef_c * c + coef_e * e and g_dot_c = G . c (damsm.cu).
constexpr int64_t kDamsmMaxWords = 512;
// All three launch one block of 256 threads per pair, with this much dynamic shared memory.
LaunchShape damsm_pair_shape(int64_t pairs, int64_t dynamic_smem);
int64_t damsm_cosine_score_smem(DType acc, int64_t max_len);
int64_t damsm_softmax_backward_smem(DType acc, int64_t max_len);
// S -> alpha (softmax over words) in place, beta = softmax over regions of gamma1 * alpha (beta may be s).
cudaError_t damsm_attention_softmax(DType acc, void* s, void* beta, const int64_t* lengths, const int64_t* offsets,
                                    int64_t pairs, int64_t B, int64_t N, int64_t P, double gamma1,
                                    cudaStream_t stream);
// grad == nullptr: scores[pair] = R.  Else g = dR/dC * grad[pair], coef_c, coef_e, g_dot_c (scores unused).
cudaError_t damsm_cosine_scores(DType acc, const void* c, const void* erows, const int64_t* lengths,
                                const int64_t* offsets, const void* grad, void* scores, void* g, void* coef_c,
                                void* coef_e, void* g_dot_c, int64_t pairs, int64_t B, int64_t P, int64_t D,
                                int64_t max_len, double gamma2, cudaStream_t stream);
// Both softmax backwards: h: dL/dbeta -> dL/dS + coef_c * beta; g -> g - coef_c * e.
cudaError_t damsm_softmax_backward(DType acc, const void* alpha, const void* beta, void* h, void* g,
                                   const void* erows, const int64_t* lengths, const int64_t* offsets,
                                   const void* coef_c, const void* g_dot_c, int64_t pairs, int64_t B, int64_t N,
                                   int64_t P, int64_t D, int64_t max_len, double gamma1, cudaStream_t stream);

// ---- word_region_attention: regions, context and their gradients share one layout WraLayout: element
// (b, c, n) at b*sb + c*sc + n*sn (NCHW: sc = N, sn = 1; NHWC: sc = 1, sn = C).  words are (B, C, T)
// contiguous in the accumulate type (float, or double for Float64); lse (B, N) of the accumulate type,
// +inf on rows whose words are all padding.  mask: bool, element (b, n, t) at b*sb + n*sn + t (sn = 0
// for a (B, T) mask), data null for none.  attention / grad_attention: element (b, t, n) at
// b*attn_sb + t*attn_st + n*attn_sn, null for none.  The backward writes partial dwords
// (B, splits, C, T) of the accumulate type, splits = word_region_attention_backward_splits(...) with
// the same num_sms, which the caller sums over splits.  T <= 64.
struct WraLayout {
  int64_t B, C, N, T;
  int64_t sb, sc, sn;
};
struct WraMask {
  const void* data;
  int64_t sb, sn;
};
int64_t word_region_attention_backward_splits(DType dtype, int64_t B, int64_t N, int num_sms);
// One block per (sample, tile of regions) forward and per (sample, split) backward, on gridDim.x.
LaunchShape word_region_attention_forward_shape(int64_t B, int64_t N);
LaunchShape word_region_attention_backward_shape(DType dtype, int64_t B, int64_t N, int num_sms);
cudaError_t word_region_attention_forward(DType dtype, const void* regions, const void* words, WraMask mask,
                                          void* context, void* lse, void* attention, int64_t attn_sb,
                                          int64_t attn_st, int64_t attn_sn, WraLayout L, cudaStream_t stream);
cudaError_t word_region_attention_backward(DType dtype, const void* grad_context, const void* grad_attention,
                                           int64_t attn_sb, int64_t attn_st, int64_t attn_sn, const void* regions,
                                           const void* words, WraMask mask, const void* lse, void* grad_regions,
                                           void* grad_words_partial, int num_sms, WraLayout L,
                                           cudaStream_t stream);

}  // namespace cuda
}  // namespace fastt2i
