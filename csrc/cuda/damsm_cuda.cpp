// CUDA registration of fastt2i::damsm_word_fwd / damsm_word_bwd: packing of the real words,
// the GEMMs (cuBLAS through ATen) and the launches of the fused stage kernels in damsm.cu.
// The same pipeline as csrc/cpu/damsm.cpp; the math and autograd are in fastt2i/ops/damsm.py.
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "../common.h"
#include "../damsm_host.h"
#include "cuda_glue.h"

namespace fastt2i {
namespace {

// The shared packing plus the per-caption lengths and packed offsets on the device.
struct Packed : DamsmPacked {
  at::Tensor lengths, offsets;  // (B,), (B,) on the device
  cuda::DType acc;
};

// Packing needs the lengths on the host: one synchronisation (the Python caller has
// already made one to validate them).
Packed pack(const at::Tensor& words, const at::Tensor& lengths_in, const at::Tensor& regions) {
  cuda::check_devices("damsm", {{"words", &words}, {"lengths", &lengths_in}, {"regions", &regions}});
  damsm_check_inputs(words, lengths_in, regions, cuda::kDamsmMaxWords);
  const auto host = lengths_in.contiguous().cpu();
  Packed p;
  static_cast<DamsmPacked&>(p) = damsm_pack(words, host, regions);
  auto offsets = at::empty({p.B}, host.options());
  std::copy(p.off.begin(), p.off.end(), offsets.mutable_data_ptr<int64_t>());
  p.offsets = offsets.to(words.device());
  p.lengths = lengths_in.contiguous();
  p.acc = p.vt.scalar_type() == at::kDouble ? cuda::DType::Float64 : cuda::DType::Float32;
  return p;
}

// scores (M, B); with save also flat alpha, beta (M*N*B*T) and contexts (M*B*T*D), of
// which the first M*N*P and M*P*D hold (M, N, P) and (M, P, D).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> damsm_word_fwd_cuda(
    const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions, double gamma1, double gamma2,
    bool save) {
  const cuda::DeviceGuard guard(words.device());
  const auto p = pack(words, lengths, regions);
  const auto stream = cuda::current_stream();
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
  const int64_t* len = p.lengths.const_data_ptr<int64_t>();
  const int64_t* off = p.offsets.const_data_ptr<int64_t>();
  auto scores = at::empty({M, B}, p.vt.options());
  const auto saved = damsm_saved_buffers(p, save);
  const auto e2 = p.erows.t();  // (D, P)
  const int64_t chunk = damsm_chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0), pairs = mc * B;
    const auto k = damsm_forward_chunk(p, saved, e2, j0, mc, save);
    const auto &vt = k.vt, &s = k.s, &beta = k.beta, &c = k.c;
    cuda::check_launch(
        cuda::damsm_attention_softmax(p.acc, s.data_ptr(), beta.data_ptr(), len, off, pairs, B, N, P, gamma1, stream),
        "damsm attention softmax");
    auto ctx = c;
    at::bmm_out(ctx, beta.transpose(1, 2), vt);  // (mc, P, D)
    auto r = scores.narrow(0, j0, mc);
    cuda::check_launch(cuda::damsm_cosine_scores(p.acc, c.const_data_ptr(), p.erows.const_data_ptr(), len, off,
                                                 nullptr, r.data_ptr(), nullptr, nullptr, nullptr, nullptr, pairs, B, P,
                                                 D, p.max_len, gamma2, stream),
                       "damsm cosine scores");
  }
  return {scores, saved.alpha, saved.beta, saved.c};
}

std::tuple<at::Tensor, at::Tensor> damsm_word_bwd_cuda(const at::Tensor& grad_scores, const at::Tensor& words,
                                                       const at::Tensor& lengths, const at::Tensor& regions,
                                                       const at::Tensor& alpha_flat, const at::Tensor& beta_flat,
                                                       const at::Tensor& c_flat, double gamma1, double gamma2) {
  const cuda::DeviceGuard guard(words.device());
  const auto p = pack(words, lengths, regions);
  const auto stream = cuda::current_stream();
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
  cuda::check_devices("damsm", {{"words", &words}, {"grad_scores", &grad_scores}, {"alpha", &alpha_flat},
                                {"beta", &beta_flat}, {"context", &c_flat}});
  damsm_check_backward(p, grad_scores, alpha_flat, beta_flat, c_flat, /*require_cuda=*/!cuda::kEmulated);
  const auto acc_type = p.vt.scalar_type();
  const int64_t* len = p.lengths.const_data_ptr<int64_t>();
  const int64_t* off = p.offsets.const_data_ptr<int64_t>();
  const auto grad = grad_scores.to(acc_type).contiguous();
  auto grads = damsm_backward_grads(p);
  const int64_t chunk = damsm_chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0), pairs = mc * B;
    const auto k = damsm_backward_chunk(p, grads, alpha_flat, beta_flat, c_flat, j0, mc);
    // damsm_host.h's k1, k2, cs are coef_c, coef_e, g_dot_c of damsm.cu
    const auto &vt = k.vt, &a = k.a, &beta = k.beta, &c = k.c, &g = k.g;
    const auto &coef_c = k.k1, &coef_e = k.k2, &g_dot_c = k.cs;
    auto gr = grad.narrow(0, j0, mc);
    cuda::check_launch(cuda::damsm_cosine_scores(p.acc, c.const_data_ptr(), p.erows.const_data_ptr(), len, off,
                                                 gr.const_data_ptr(), nullptr, g.data_ptr(), coef_c.data_ptr(),
                                                 coef_e.data_ptr(), g_dot_c.data_ptr(), pairs, B, P, D, p.max_len,
                                                 gamma2, stream),
                       "damsm cosine scores backward");
    auto h = at::bmm(vt, g.transpose(1, 2));  // dL/dbeta (mc, N, P)
    cuda::check_launch(cuda::damsm_softmax_backward(p.acc, a.const_data_ptr(), beta.const_data_ptr(), h.data_ptr(),
                                                    g.data_ptr(), p.erows.const_data_ptr(), len, off,
                                                    coef_c.const_data_ptr(), g_dot_c.const_data_ptr(), pairs, B, N, P,
                                                    D, p.max_len, gamma1, stream),
                       "damsm softmax backward");
    damsm_backward_accumulate(p, grads, k, h, j0, mc);
  }
  return damsm_backward_finish(p, grads, regions);
}

}  // namespace

FASTT2I_CUDA_KERNELS(m) {
  m.impl("damsm_word_fwd", &damsm_word_fwd_cuda);
  m.impl("damsm_word_bwd", &damsm_word_bwd_cuda);
}

}  // namespace fastt2i
