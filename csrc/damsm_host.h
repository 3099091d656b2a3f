// Device-independent host side of fastt2i::damsm_word_fwd / damsm_word_bwd, shared by the CPU kernels
// (cpu/damsm.cpp) and the CUDA glue (cuda/damsm_cuda.cpp): input checks, packing of the real words,
// the saved buffers, the chunking over images and the GEMMs (ATen) around the fused per-pair stages.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/baddbmm.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <vector>

#include "common.h"

namespace fastt2i {

constexpr int64_t kDamsmChunkElements = int64_t(1) << 24;  // as _CHUNK_ELEMENTS in damsm.py

// Images per chunk, so that the (images, N, P) intermediates stay bounded.
inline int64_t damsm_chunk_images(int64_t M, int64_t N, int64_t P) {
  return std::max<int64_t>(1, std::min<int64_t>(M, kDamsmChunkElements / std::max<int64_t>(1, N * P)));
}

// out = a @ b, or out += a @ b with accumulate; 2-D, or 3-D batched; a and b may be transposed views, and
// expanded ones (batch stride 0: an operand shared by all images).
// Each backend passes the GEMM it runs (the CPU kernels may take oneDNN's, see cpu/damsm.cpp).
using DamsmGemm = void (*)(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, bool accumulate);

inline void damsm_aten_gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, bool accumulate) {
  auto o = out;
  if (out.dim() == 2)
    accumulate ? (void)o.addmm_(a, b) : (void)at::mm_out(o, a, b);
  else
    accumulate ? (void)o.baddbmm_(a, b) : (void)at::bmm_out(o, a, b);
}

// max_words > 0: the backend's limit on T.
inline void damsm_check_inputs(const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions,
                               int64_t max_words) {
  check_float(words, "words");
  TORCH_CHECK(words.dim() == 3, "words: expected (B, D, T), got ", words.sizes());
  if (max_words > 0)
    TORCH_CHECK(words.size(2) <= max_words, "words: expected T <= ", max_words, ", got ", words.size(2));
  TORCH_CHECK(regions.dim() == 4 && regions.size(1) == words.size(1),
              "regions: expected (M, D=", words.size(1), ", H, W), got ", regions.sizes());
  TORCH_CHECK(regions.scalar_type() == words.scalar_type(), "regions: expected ", words.scalar_type(), ", got ",
              regions.scalar_type());
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == words.size(0) && lengths.scalar_type() == at::kLong,
              "lengths: expected int64 (B=", words.size(0), ",), got ", lengths.scalar_type(), " ", lengths.sizes());
}

struct DamsmPacked {
  // In the accumulate type: words (P, D), regions as they are (M, D, N) and, with regions_as_rows, transposed
  // (M, N, D) (else undefined); index: flat b*T+w (P,).
  at::Tensor erows, v, vt, index;
  std::vector<int64_t> len, off;  // per caption: real words and first packed column
  int64_t B, T, D, N, M, P, max_len;
};

// lengths_host: the checked lengths, contiguous on the CPU.  index, erows, v and vt are on words' device.
// regions_as_rows: also the transposed copy vt, for backends whose GEMMs then run over all images at once (CUDA);
// the CPU kernels take v as it is and loop over images where an operand is shared (a transposing copy there
// costs about as much as the GEMM it saves).
inline DamsmPacked damsm_pack(const at::Tensor& words, const at::Tensor& lengths_host, const at::Tensor& regions,
                              bool regions_as_rows = true) {
  DamsmPacked p;
  p.B = words.size(0), p.D = words.size(1), p.T = words.size(2);
  p.M = regions.size(0), p.N = regions.size(2) * regions.size(3);
  const int64_t* lp = lengths_host.const_data_ptr<int64_t>();
  p.len.assign(lp, lp + p.B);
  p.off.resize(p.B);
  std::vector<int64_t> index;
  int64_t total = 0, max_len = 1;
  for (int64_t i = 0; i < p.B; ++i) {
    TORCH_CHECK(p.len[i] >= 1 && p.len[i] <= p.T, "lengths: expected values in [1, T=", p.T, "], got ", p.len[i]);
    p.off[i] = total;
    for (int64_t w = 0; w < p.len[i]; ++w) index.push_back(i * p.T + w);
    total += p.len[i];
    max_len = std::max(max_len, p.len[i]);
  }
  p.P = total;
  p.max_len = max_len;
  auto index_host = at::empty({p.P}, lengths_host.options());
  std::copy(index.begin(), index.end(), index_host.mutable_data_ptr<int64_t>());
  p.index = index_host.to(words.device());
  const auto acc_type = accumulate_type(words.scalar_type());
  // padding words are never read (the official code slices them off)
  p.erows = words.to(acc_type).transpose(1, 2).reshape({p.B * p.T, p.D}).index_select(0, p.index);
  p.v = regions.to(acc_type).reshape({p.M, p.D, p.N});
  if (regions_as_rows) p.vt = p.v.transpose(1, 2).contiguous();
  return p;
}

// Flat alpha, beta (M*N*B*T) and contexts (M*B*T*D) with save, of which the first M*N*P and M*P*D
// hold (M, N, P) and (M, P, D); else three distinct empty tensors (outputs must not alias).
struct DamsmSaved {
  at::Tensor alpha, beta, c;
};

inline DamsmSaved damsm_saved_buffers(const DamsmPacked& p, bool save) {
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
  const auto opts = p.erows.options();
  DamsmSaved s;
  if (save) {
    s.alpha = at::empty({M * N * B * p.T}, opts);
    s.beta = at::empty({M * N * B * p.T}, opts);
    s.c = at::empty({M * B * p.T * D}, opts);
    // the tails past the packed words are unused: zero them so the outputs are deterministic
    s.alpha.narrow(0, M * N * P, s.alpha.numel() - M * N * P).zero_();
    s.beta.narrow(0, M * N * P, s.beta.numel() - M * N * P).zero_();
    s.c.narrow(0, M * P * D, s.c.numel() - M * P * D).zero_();
  } else {
    s.alpha = at::empty({0}, opts);
    s.beta = at::empty({0}, opts);
    s.c = at::empty({0}, opts);
  }
  return s;
}

// Forward, images [j0, j0 + mc): the scores S = v^T e (mc, N, P), computed into the saved alpha with
// save (stage A turns it into alpha in place); beta is the saved buffer or aliases S; c receives
// the contexts.
struct DamsmForwardChunk {
  at::Tensor v, vt, s, beta, c;  // vt undefined without regions_as_rows
};

inline DamsmForwardChunk damsm_forward_chunk(const DamsmPacked& p, const DamsmSaved& saved, const at::Tensor& e2,
                                             int64_t j0, int64_t mc, bool save, DamsmGemm gemm = damsm_aten_gemm) {
  const int64_t D = p.D, N = p.N, P = p.P;
  DamsmForwardChunk k;
  k.v = p.v.narrow(0, j0, mc);  // (mc, D, N)
  if (p.vt.defined()) k.vt = p.vt.narrow(0, j0, mc);  // (mc, N, D)
  if (save) {
    k.s = saved.alpha.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
    k.beta = saved.beta.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
    k.c = saved.c.narrow(0, j0 * P * D, mc * P * D).view({mc, P, D});
  } else {
    k.s = at::empty({mc, N, P}, p.erows.options());
    k.beta = k.s;
    k.c = at::empty({mc, P, D}, p.erows.options());
  }
  if (k.vt.defined()) {
    gemm(k.vt.reshape({mc * N, D}), e2, k.s.view({mc * N, P}), false);
  } else {
    gemm(k.v.transpose(1, 2), e2.expand({mc, D, P}), k.s, false);
  }
  return k;
}

// require_cuda: the backend also needs the saved buffers on a CUDA device.
inline void damsm_check_backward(const DamsmPacked& p, const at::Tensor& grad_scores, const at::Tensor& alpha_flat,
                                 const at::Tensor& beta_flat, const at::Tensor& c_flat, bool require_cuda) {
  const int64_t B = p.B, T = p.T, D = p.D, N = p.N, M = p.M;
  TORCH_CHECK(grad_scores.dim() == 2 && grad_scores.size(0) == M && grad_scores.size(1) == B,
              "grad_scores: expected (M, B) = (", M, ", ", B, "), got ", grad_scores.sizes());
  const auto acc_type = p.erows.scalar_type();
  for (const auto* t : {&alpha_flat, &beta_flat, &c_flat})
    TORCH_CHECK((!require_cuda || t->is_cuda()) && t->dim() == 1 && t->is_contiguous() &&
                    t->scalar_type() == acc_type && t->numel() == (t == &c_flat ? M * B * T * D : M * N * B * T),
                "alpha/beta/context: expected the flat buffers saved by damsm_word_fwd, got ", t->sizes(), " ",
                t->scalar_type());
}

// Backward accumulators: dL/dwords (P, D) (a transposed view of (D, P) without regions_as_rows) and
// dL/dregions (M, D, N), and the per-image k2 sums.
struct DamsmGrads {
  at::Tensor g_e, g_v, k2_sum;
};

inline DamsmGrads damsm_backward_grads(const DamsmPacked& p) {
  const auto opts = p.erows.options();
  auto g_e = p.vt.defined() ? at::zeros({p.P, p.D}, opts) : at::zeros({p.D, p.P}, opts).t();
  return DamsmGrads{g_e, at::empty({p.M, p.D, p.N}, opts), at::zeros({p.M, p.P}, opts)};
}

// Backward, images [j0, j0 + mc): the saved alpha, beta, contexts and the stage buffers
// g = dL/dcontext (mc, P, D), k1, k2 (a view of the k2 sums), cs (mc, P).
struct DamsmBackwardChunk {
  at::Tensor v, vt, a, beta, c, g, k1, k2, cs;  // vt undefined without regions_as_rows
};

inline DamsmBackwardChunk damsm_backward_chunk(const DamsmPacked& p, const DamsmGrads& grads,
                                               const at::Tensor& alpha_flat, const at::Tensor& beta_flat,
                                               const at::Tensor& c_flat, int64_t j0, int64_t mc) {
  const int64_t D = p.D, N = p.N, P = p.P;
  const auto opts = p.erows.options();
  DamsmBackwardChunk k;
  k.v = p.v.narrow(0, j0, mc);  // (mc, D, N)
  if (p.vt.defined()) k.vt = p.vt.narrow(0, j0, mc);  // (mc, N, D)
  k.a = alpha_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
  k.beta = beta_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
  k.c = c_flat.narrow(0, j0 * P * D, mc * P * D).view({mc, P, D});
  k.g = at::empty({mc, P, D}, opts);
  k.k1 = at::empty({mc, P}, opts);
  k.k2 = grads.k2_sum.narrow(0, j0, mc);
  k.cs = at::empty({mc, P}, opts);
  return k;
}

// After stage C: h = dL/dS (mc, N, P), g = dL/dcontext with the cosine term of the words removed.
// dL/dregions of image j, g_j^T beta_j^T + E^T h_j^T (D, N): two batched GEMMs in place (E^T shared, an expanded
// view); dL/dwords, sum_j h_j^T V_j^T: one GEMM over all the chunk's regions with regions_as_rows, else
// (transposed, (D, P)) one GEMM per image V_j h_j.
inline void damsm_backward_accumulate(const DamsmPacked& p, DamsmGrads& grads, const DamsmBackwardChunk& k,
                                      const at::Tensor& h, int64_t j0, int64_t mc, DamsmGemm gemm = damsm_aten_gemm) {
  const int64_t N = p.N, D = p.D, P = p.P;
  auto g_v = grads.g_v.narrow(0, j0, mc);
  gemm(k.g.transpose(1, 2), k.beta.transpose(1, 2), g_v, false);
  gemm(p.erows.t().expand({mc, D, P}), h.transpose(1, 2), g_v, true);
  if (k.vt.defined()) {
    gemm(h.view({mc * N, P}).t(), k.vt.reshape({mc * N, D}), grads.g_e, true);
  } else {
    const auto g_e_t = grads.g_e.t();  // (D, P)
    for (int64_t j = 0; j < mc; ++j) gemm(k.v[j], h[j], g_e_t, true);
  }
}

// dL/dwords (B, D, T) with zeros at the padding, dL/dregions like regions.
inline std::tuple<at::Tensor, at::Tensor> damsm_backward_finish(const DamsmPacked& p, DamsmGrads& grads,
                                                                const at::Tensor& regions) {
  grads.g_e.addcmul_(grads.k2_sum.sum(0).unsqueeze(-1), p.erows);
  auto g_words = at::zeros({p.B * p.T, p.D}, p.erows.options()).index_copy_(0, p.index, grads.g_e);
  return {g_words.view({p.B, p.T, p.D}).transpose(1, 2).contiguous(), grads.g_v.view(regions.sizes())};
}

}  // namespace fastt2i
