// CUDA registration of fastt2i::damsm_word_fwd / damsm_word_bwd: packing of the real words,
// the GEMMs (cuBLAS through ATen) and the launches of the fused stage kernels in damsm.cu.
// The same pipeline as csrc/cpu/damsm.cpp; the math and autograd are in fastt2i/ops/damsm.py.
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

constexpr int64_t kChunkElements = int64_t(1) << 24;  // as _CHUNK_ELEMENTS in damsm.py

int64_t chunk_images(int64_t M, int64_t N, int64_t P) {
  return std::max<int64_t>(1, std::min<int64_t>(M, kChunkElements / std::max<int64_t>(1, N * P)));
}

struct Packed {
  at::Tensor erows, vt, index, lengths, offsets;  // (P, D), (M, N, D), flat b*T+w (P,), (B,), (B,) on the device
  int64_t B, T, D, N, M, P, max_len;
  cuda::DType acc;
};

// Packing needs the lengths on the host: one synchronisation (the Python caller has
// already made one to validate them).
Packed pack(const at::Tensor& words, const at::Tensor& lengths_in, const at::Tensor& regions) {
  TORCH_CHECK(words.is_cuda() && lengths_in.is_cuda() && regions.is_cuda(), "damsm (cuda): expected CUDA tensors");
  check_float(words, "words");
  TORCH_CHECK(words.dim() == 3, "words: expected (B, D, T), got ", words.sizes());
  TORCH_CHECK(words.size(2) <= cuda::kDamsmMaxWords, "words: expected T <= ", cuda::kDamsmMaxWords, ", got ",
              words.size(2));
  TORCH_CHECK(regions.dim() == 4 && regions.size(1) == words.size(1),
              "regions: expected (M, D=", words.size(1), ", H, W), got ", regions.sizes());
  TORCH_CHECK(regions.scalar_type() == words.scalar_type(), "regions: expected ", words.scalar_type(), ", got ",
              regions.scalar_type());
  TORCH_CHECK(lengths_in.dim() == 1 && lengths_in.size(0) == words.size(0) && lengths_in.scalar_type() == at::kLong,
              "lengths: expected int64 (B=", words.size(0), ",), got ", lengths_in.scalar_type(), " ",
              lengths_in.sizes());
  Packed p;
  p.B = words.size(0), p.D = words.size(1), p.T = words.size(2);
  p.M = regions.size(0), p.N = regions.size(2) * regions.size(3);
  const auto host = lengths_in.contiguous().cpu();
  const int64_t* lp = host.const_data_ptr<int64_t>();
  auto offsets = at::empty({p.B}, host.options());
  int64_t* op = offsets.mutable_data_ptr<int64_t>();
  std::vector<int64_t> index;
  int64_t total = 0, max_len = 1;
  for (int64_t i = 0; i < p.B; ++i) {
    TORCH_CHECK(lp[i] >= 1 && lp[i] <= p.T, "lengths: expected values in [1, T=", p.T, "], got ", lp[i]);
    op[i] = total;
    for (int64_t w = 0; w < lp[i]; ++w) index.push_back(i * p.T + w);
    total += lp[i];
    max_len = std::max(max_len, lp[i]);
  }
  p.P = total;
  p.max_len = max_len;
  auto index_host = at::empty({p.P}, host.options());
  std::copy(index.begin(), index.end(), index_host.mutable_data_ptr<int64_t>());
  p.index = index_host.to(words.device());
  p.offsets = offsets.to(words.device());
  p.lengths = lengths_in.contiguous();
  const auto acc_type = accumulate_type(words.scalar_type());
  p.acc = acc_type == at::kDouble ? cuda::DType::Float64 : cuda::DType::Float32;
  // padding words are never read (the official code slices them off)
  p.erows = words.to(acc_type).transpose(1, 2).reshape({p.B * p.T, p.D}).index_select(0, p.index);
  p.vt = regions.to(acc_type).reshape({p.M, p.D, p.N}).transpose(1, 2).contiguous();
  return p;
}

// scores (M, B); with save also flat alpha, beta (M*N*B*T) and contexts (M*B*T*D), of
// which the first M*N*P and M*P*D hold (M, N, P) and (M, P, D).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> damsm_word_fwd_cuda(
    const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions, double gamma1, double gamma2,
    bool save) {
  const c10::cuda::CUDAGuard guard(words.device());
  const auto p = pack(words, lengths, regions);
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
  const int64_t* len = p.lengths.const_data_ptr<int64_t>();
  const int64_t* off = p.offsets.const_data_ptr<int64_t>();
  const auto opts = p.vt.options();
  auto scores = at::empty({M, B}, opts);
  at::Tensor alpha_flat, beta_flat, c_flat;
  if (save) {
    alpha_flat = at::empty({M * N * B * p.T}, opts);
    beta_flat = at::empty({M * N * B * p.T}, opts);
    c_flat = at::empty({M * B * p.T * D}, opts);
    // the tails past the packed words are unused: zero them so the outputs are deterministic
    alpha_flat.narrow(0, M * N * P, alpha_flat.numel() - M * N * P).zero_();
    beta_flat.narrow(0, M * N * P, beta_flat.numel() - M * N * P).zero_();
    c_flat.narrow(0, M * P * D, c_flat.numel() - M * P * D).zero_();
  } else {
    alpha_flat = at::empty({0}, opts);  // distinct tensors: outputs must not alias
    beta_flat = at::empty({0}, opts);
    c_flat = at::empty({0}, opts);
  }
  const auto e2 = p.erows.t();  // (D, P)
  const int64_t chunk = chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0), pairs = mc * B;
    const auto vt = p.vt.narrow(0, j0, mc);  // (mc, N, D)
    at::Tensor s, beta, c;
    if (save) {
      s = alpha_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
      beta = beta_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
      c = c_flat.narrow(0, j0 * P * D, mc * P * D).view({mc, P, D});
      auto s2 = s.view({mc * N, P});
      at::mm_out(s2, vt.reshape({mc * N, D}), e2);
    } else {
      s = at::mm(vt.reshape({mc * N, D}), e2).view({mc, N, P});
      beta = s;
      c = at::empty({mc, P, D}, opts);
    }
    cuda::check_launch(
        cuda::damsm_stage_a(p.acc, s.data_ptr(), beta.data_ptr(), len, off, pairs, B, N, P, gamma1, stream),
        "damsm stage a");
    at::bmm_out(c, beta.transpose(1, 2), vt);  // (mc, P, D)
    auto r = scores.narrow(0, j0, mc);
    cuda::check_launch(cuda::damsm_stage_b(p.acc, c.const_data_ptr(), p.erows.const_data_ptr(), len, off, nullptr,
                                           r.data_ptr(), nullptr, nullptr, nullptr, nullptr, pairs, B, P, D, p.max_len,
                                           gamma2, stream),
                       "damsm stage b");
  }
  return {scores, alpha_flat, beta_flat, c_flat};
}

std::tuple<at::Tensor, at::Tensor> damsm_word_bwd_cuda(const at::Tensor& grad_scores, const at::Tensor& words,
                                                       const at::Tensor& lengths, const at::Tensor& regions,
                                                       const at::Tensor& alpha_flat, const at::Tensor& beta_flat,
                                                       const at::Tensor& c_flat, double gamma1, double gamma2) {
  const c10::cuda::CUDAGuard guard(words.device());
  const auto p = pack(words, lengths, regions);
  const auto stream = c10::cuda::getCurrentCUDAStream().stream();
  const int64_t B = p.B, T = p.T, D = p.D, N = p.N, M = p.M, P = p.P;
  TORCH_CHECK(grad_scores.dim() == 2 && grad_scores.size(0) == M && grad_scores.size(1) == B,
              "grad_scores: expected (M, B) = (", M, ", ", B, "), got ", grad_scores.sizes());
  const auto acc_type = p.vt.scalar_type();
  for (const auto* t : {&alpha_flat, &beta_flat, &c_flat})
    TORCH_CHECK(t->is_cuda() && t->dim() == 1 && t->is_contiguous() && t->scalar_type() == acc_type &&
                    t->numel() == (t == &c_flat ? M * B * T * D : M * N * B * T),
                "alpha/beta/context: expected the flat buffers saved by damsm_word_fwd, got ", t->sizes(), " ",
                t->scalar_type());
  const int64_t* len = p.lengths.const_data_ptr<int64_t>();
  const int64_t* off = p.offsets.const_data_ptr<int64_t>();
  const auto opts = p.vt.options();
  const auto grad = grad_scores.to(acc_type).contiguous();
  const auto e2 = p.erows.t();  // (D, P)
  auto g_e = at::zeros({P, D}, opts);
  auto g_v = at::empty({M, D, N}, opts);
  auto k2_sum = at::zeros({M, P}, opts);
  const int64_t chunk = chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0), pairs = mc * B;
    const auto vt = p.vt.narrow(0, j0, mc);  // (mc, N, D)
    const auto a = alpha_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
    const auto beta = beta_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
    const auto c = c_flat.narrow(0, j0 * P * D, mc * P * D).view({mc, P, D});
    auto g = at::empty({mc, P, D}, opts);
    auto k1 = at::empty({mc, P}, opts);
    auto k2 = k2_sum.narrow(0, j0, mc);
    auto cs = at::empty({mc, P}, opts);
    auto gr = grad.narrow(0, j0, mc);
    cuda::check_launch(cuda::damsm_stage_b(p.acc, c.const_data_ptr(), p.erows.const_data_ptr(), len, off,
                                           gr.const_data_ptr(), nullptr, g.data_ptr(), k1.data_ptr(), k2.data_ptr(),
                                           cs.data_ptr(), pairs, B, P, D, p.max_len, gamma2, stream),
                       "damsm stage b");
    auto h = at::bmm(vt, g.transpose(1, 2));  // dL/dbeta (mc, N, P)
    cuda::check_launch(cuda::damsm_stage_c(p.acc, a.const_data_ptr(), beta.const_data_ptr(), h.data_ptr(),
                                           g.data_ptr(), p.erows.const_data_ptr(), len, off, k1.const_data_ptr(),
                                           cs.const_data_ptr(), pairs, B, N, P, D, p.max_len, gamma1, stream),
                       "damsm stage c");
    auto gv = g_v.narrow(0, j0, mc);
    at::bmm_out(gv, g.transpose(1, 2), beta.transpose(1, 2));
    gv.add_(at::matmul(e2, h.transpose(1, 2)));
    g_e.addmm_(h.view({mc * N, P}).t(), vt.reshape({mc * N, D}));
  }
  g_e.addcmul_(k2_sum.sum(0).unsqueeze(-1), p.erows);
  auto g_words = at::zeros({B * T, D}, opts).index_copy_(0, p.index, g_e);
  return {g_words.view({B, T, D}).transpose(1, 2).contiguous(), g_v.view(regions.sizes())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastt2i, CUDA, m) {
  m.impl("damsm_word_fwd", &damsm_word_fwd_cuda);
  m.impl("damsm_word_bwd", &damsm_word_bwd_cuda);
}

}  // namespace fastt2i
