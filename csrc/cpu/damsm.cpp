// DAMSM word-level matching on CPU: every caption against every image.
// The math and the autograd live in fastt2i/ops/damsm.py.  Only the real words are
// computed: they are packed into P = sum(lengths) columns (the official loop slices each
// caption likewise).  The contractions are GEMMs over all pairs; the computations between them
// are fused loops here: attention_softmaxes_image (alpha, beta of one image against all captions,
// whole rows of P words at a time), cosine_logsumexp_pair (a pair's score and, in the backward,
// dL/dcontexts) and softmax_backward_image (dL/dS through both softmaxes).  Compiled once per CPU
// level (kernels.h) on at::vec::Vectorized.  With save the forward keeps alpha, beta and the
// contexts for the backward (flat buffers sized for the padded B*T words so their shapes do not
// depend on the lengths); otherwise, and in the backward, images go in chunks so the
// intermediates stay bounded.
//
// The GEMMs: ATen's (MKL), except at the AVX-512 level in float32, where oneDNN's matmul
// (at::native::mkldnn_matmul, the one ATen uses for its bf16/fp16 GEMMs) runs them: MKL takes its
// AVX2 code on AMD CPUs, oneDNN its AVX-512 one (1 thread, Zen 5: 1024^3 fp32 110 vs 224 GFLOP/s,
// these shapes 60-100 vs 160-235).  Float32 stays float32 (oneDNN's strict math mode unless
// torch's mkldnn fp32 precision setting allows less); torch.backends.mkldnn.enabled = False turns it off.
#include <ATen/Context.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "../common.h"
#include "../damsm_host.h"
#include "kernels.h"
#include "vec_io.h"

// Exported by libtorch_cpu, declared in ATen/native/mkldnn/Matmul.h (not among the installed headers):
// result = beta * result + alpha * mat1 @ mat2, 2-D or 3-D, contiguous or transposed operands.  Weak, so
// that a torch without it still loads this library (the GEMMs then stay ATen's).
namespace at::native {
TORCH_API void mkldnn_matmul(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result, float beta,
                             float alpha) __attribute__((weak));
}  // namespace at::native

namespace fastt2i::CPU_CAPABILITY {
namespace {

using Packed = DamsmPacked;

constexpr double kCosEps = 1e-8;

// The GEMM of this level (see the top of the file).
void gemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& out, bool accumulate) {
#if defined(CPU_CAPABILITY_AVX512)
  static std::atomic<bool> onednn_refused{false};
  if (at::native::mkldnn_matmul != nullptr && out.scalar_type() == at::kFloat &&
      at::globalContext().userEnabledMkldnn() && !onednn_refused.load(std::memory_order_relaxed)) {
    try {
      const float beta = accumulate ? 1.0f : 0.0f;
      if (out.dim() == 3 && (a.stride(0) == 0 || b.stride(0) == 0)) {
        // an expanded operand would be copied whole: one 2-D GEMM per batch entry instead
        for (int64_t j = 0; j < out.size(0); ++j) at::native::mkldnn_matmul(a[j], b[j], out[j], beta, 1.0f);
      } else {
        at::native::mkldnn_matmul(a, b, out, beta, 1.0f);
      }
      return;
    } catch (const c10::Error&) {
      // it checks the CPU (and ONEDNN_MAX_CPU_ISA) before writing anything: ATen's GEMMs from now on
      onednn_refused.store(true, std::memory_order_relaxed);
    }
  }
#endif
  damsm_aten_gemm(a, b, out, accumulate);
}

// f(k, count) over [0, n) in vector steps, the last one partial (count < V::size()).
template <typename acc_t, typename F>
inline void vec_steps(int64_t n, const F& f) {
  constexpr int64_t lanes = Vectorized<acc_t>::size();
  int64_t k = 0;
  for (; k + lanes <= n; k += lanes) f(k, lanes);
  if (k < n) f(k, n - k);
}
template <typename acc_t>
inline Vectorized<acc_t> load(const acc_t* p, int64_t count) {  // zeros past count
  return count == Vectorized<acc_t>::size() ? Vectorized<acc_t>::loadu(p) : Vectorized<acc_t>::loadu(p, count);
}
template <typename acc_t>
inline void store(acc_t* p, const Vectorized<acc_t>& v, int64_t count) {
  if (count == Vectorized<acc_t>::size())
    v.store(p);
  else
    v.store(p, static_cast<int>(count));
}

template <typename acc_t>
inline acc_t reduce_sum(const Vectorized<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vectorized<acc_t> a, Vectorized<acc_t> b) { return a + b; }, v);
}

// The attention softmaxes of one image against every caption.  Row n (stride P) holds the similarities
// S[n, :] of region n with the P packed words, caption i in columns off[i] .. off[i] + len[i]:
//   alpha[n, w] = softmax over caption i's words of S[n, :]     (each region's attention on each caption's words)
//   beta[n, w]  = softmax over the regions n of gamma1 * alpha[:, w]  (each word's attention on the regions)
// Whole rows go through the vector exp; only the per-caption max and sum of a row are scalar loops, spread
// back over the caption's words in `spread` (P).  alpha is written over s; beta may alias s (alpha is then
// not kept).  col_max, col_sum (P): the column statistics of beta's softmax.
template <typename acc_t>
void attention_softmaxes_image(acc_t* s, acc_t* beta, const Packed& p, acc_t gamma1, acc_t* spread, acc_t* col_max,
                               acc_t* col_sum) {
  using V = Vectorized<acc_t>;
  const int64_t N = p.N, P = p.P, B = p.B;
  const V g1(gamma1);
  std::fill(col_max, col_max + P, -std::numeric_limits<acc_t>::infinity());
  for (int64_t n = 0; n < N; ++n) {
    acc_t* row = s + n * P;
    for (int64_t i = 0; i < B; ++i) {
      const acc_t* x = row + p.off[i];
      acc_t m = x[0];
      for (int64_t w = 1; w < p.len[i]; ++w) m = std::max(m, x[w]);
      std::fill(spread + p.off[i], spread + p.off[i] + p.len[i], m);
    }
    vec_steps<acc_t>(P, [&](int64_t k, int64_t c) { store(row + k, (load(row + k, c) - load(spread + k, c)).exp_u20(), c); });
    for (int64_t i = 0; i < B; ++i) {
      const acc_t* x = row + p.off[i];
      acc_t sum = 0;
      for (int64_t w = 0; w < p.len[i]; ++w) sum += x[w];
      std::fill(spread + p.off[i], spread + p.off[i] + p.len[i], acc_t(1) / sum);
    }
    vec_steps<acc_t>(P, [&](int64_t k, int64_t c) {
      const V a = load(row + k, c) * load(spread + k, c);
      store(row + k, a, c);
      store(col_max + k, at::vec::maximum(load(col_max + k, c), g1 * a), c);
    });
  }
  std::fill(col_sum, col_sum + P, acc_t(0));
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* a = s + n * P;
    acc_t* out = beta + n * P;
    vec_steps<acc_t>(P, [&](int64_t k, int64_t c) {
      const V e = (g1 * load(a + k, c) - load(col_max + k, c)).exp_u20();
      store(out + k, e, c);
      store(col_sum + k, load(col_sum + k, c) + e, c);
    });
  }
  vec_steps<acc_t>(P, [&](int64_t k, int64_t c) { store(col_sum + k, V(acc_t(1)) / load(col_sum + k, c), c); });
  for (int64_t n = 0; n < N; ++n) {
    acc_t* out = beta + n * P;
    vec_steps<acc_t>(P, [&](int64_t k, int64_t c) { store(out + k, load(out + k, c) * load(col_sum + k, c), c); });
  }
}

// Sums of x.y, x.x and y.y over D values (one vector pass, three accumulators).
template <typename acc_t>
inline void dot3(const acc_t* x, const acc_t* y, int64_t D, acc_t& xy, acc_t& xx, acc_t& yy) {
  using V = Vectorized<acc_t>;
  V vxy(acc_t(0)), vxx(acc_t(0)), vyy(acc_t(0));
  for (int64_t k = 0; k < D; k += V::size()) {
    const int64_t n = std::min<int64_t>(V::size(), D - k);
    const V a = n == V::size() ? V::loadu(x + k) : V::loadu(x + k, n);  // zeros past D
    const V b = n == V::size() ? V::loadu(y + k) : V::loadu(y + k, n);
    vxy = at::vec::fmadd(a, b, vxy);
    vxx = at::vec::fmadd(a, a, vxx);
    vyy = at::vec::fmadd(b, b, vyy);
  }
  xy = reduce_sum(vxy), xx = reduce_sum(vxx), yy = reduce_sum(vyy);
}

// Per-word coefficients of the backward of one pair (see cosine_logsumexp_pair):
//   context_coef[w] = dL/dcos_w / max(|e_w||c_w|, eps): dL/dword_w = context_coef[w] * c_w + word_coef[w] * e_w
//   word_coef[w]    = -dL/dcos_w * cos_w / |e_w|^2 (0 where the eps clamp is active)
//   grad_dot_context[w] = (dL/dc_w) . c_w
// In the host structs (damsm_host.h) these are k1, k2 and cs.
template <typename acc_t>
struct WordCoefficients {
  acc_t* context_coef;
  acc_t* word_coef;
  acc_t* grad_dot_context;
};

// The cosine log-sum-exp of one pair: with c the L context rows (L, D) of the image's regions
// attended by each word and e the caption's words (L, D), cos_w = c_w . e_w / max(|c_w||e_w|, eps);
// returns R = logsumexp_w(gamma2 * cos_w).  With grad_c != null also the backward for the upstream
// gradient dL/dR = grad: grad_c = dL/dc (L, D) and the per-word coefficients.
template <typename acc_t>
acc_t cosine_logsumexp_pair(const acc_t* c, const acc_t* e, int64_t L, int64_t D, acc_t gamma2, acc_t grad,
                            acc_t* grad_c, const WordCoefficients<acc_t>& coef, acc_t* work) {
  using V = Vectorized<acc_t>;
  const acc_t eps = static_cast<acc_t>(kCosEps);
  acc_t* scaled_cos = work;  // gamma2 * cos
  acc_t* cosv = work + L;
  acc_t* den = work + 2 * L;
  acc_t* word_sq = work + 3 * L;
  acc_t* context_sq = work + 4 * L;
  acc_t* norm_product = work + 5 * L;
  acc_t xmax = -std::numeric_limits<acc_t>::infinity();
  for (int64_t w = 0; w < L; ++w) {
    acc_t dot, c2, e2;
    dot3(c + w * D, e + w * D, D, dot, c2, e2);
    word_sq[w] = e2;
    context_sq[w] = c2;
    norm_product[w] = std::sqrt(e2) * std::sqrt(c2);
    den[w] = std::max(norm_product[w], eps);
    cosv[w] = dot / den[w];
    scaled_cos[w] = gamma2 * cosv[w];
    xmax = std::max(xmax, scaled_cos[w]);
  }
  acc_t sum = 0;
  for (int64_t w = 0; w < L; ++w) sum += std::exp(scaled_cos[w] - xmax);
  const acc_t r = xmax + std::log(sum);
  if (grad_c == nullptr) return r;
  for (int64_t w = 0; w < L; ++w) {
    const acc_t dcos = grad * gamma2 * std::exp(scaled_cos[w] - r);  // dL/dcos_w
    const bool free = norm_product[w] >= eps;  // the clamp passes no gradient to |e||c| when active
    const acc_t to_context = free ? cosv[w] / context_sq[w] : acc_t(0);
    const acc_t to_word = free ? cosv[w] / word_sq[w] : acc_t(0);
    coef.context_coef[w] = dcos / den[w];
    coef.word_coef[w] = -dcos * to_word;
    const acc_t* cw = c + w * D;
    const acc_t* ew = e + w * D;
    acc_t* gw = grad_c + w * D;
    const V along_word(coef.context_coef[w]), along_context(dcos * to_context);
    V dotv(acc_t(0));
    for (int64_t k = 0; k < D; k += V::size()) {  // dL/dc_w = context_coef * e_w - dcos * cos / |c|^2 * c_w
      const int64_t n = std::min<int64_t>(V::size(), D - k);
      const V cv = n == V::size() ? V::loadu(cw + k) : V::loadu(cw + k, n);
      const V ev = n == V::size() ? V::loadu(ew + k) : V::loadu(ew + k, n);
      const V gv = along_word * ev - along_context * cv;
      if (n == V::size()) gv.store(gw + k); else gv.store(gw + k, static_cast<int>(n));
      dotv = at::vec::fmadd(gv, cv, dotv);
    }
    coef.grad_dot_context[w] = reduce_sum(dotv);
  }
  return r;
}

// The backward of both attention softmaxes of one image (rows as in attention_softmaxes_image).  On entry h
// holds dL/dbeta (N, P); on exit dL/dS + context_coef * beta, the gradient of the similarities S with the
// cosine term of the words folded in; grad_c (dL/dc, P rows of D) becomes grad_c - context_coef * e.
// context_coef, grad_dot_context: the image's per-word coefficients (P).  t, spread: buffers (P).
template <typename acc_t>
void softmax_backward_image(const acc_t* alpha, const acc_t* beta, acc_t* h, acc_t* grad_c, const acc_t* e,
                            const acc_t* context_coef, const acc_t* grad_dot_context, const Packed& p, acc_t gamma1,
                            acc_t* t, acc_t* spread) {
  using V = Vectorized<acc_t>;
  const int64_t N = p.N, P = p.P, B = p.B, D = p.D;
  const V g1(gamma1);
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* a = alpha + n * P;
    const acc_t* bt = beta + n * P;
    acc_t* hn = h + n * P;
    vec_steps<acc_t>(P, [&](int64_t k, int64_t c) {  // alpha * dL/dalpha, dL/dalpha = gamma1 * beta * (h - grad_dot_context)
      store(t + k, load(a + k, c) * g1 * load(bt + k, c) * (load(hn + k, c) - load(grad_dot_context + k, c)), c);
    });
    for (int64_t i = 0; i < B; ++i) {
      const acc_t* x = t + p.off[i];
      acc_t sum = 0;
      for (int64_t w = 0; w < p.len[i]; ++w) sum += x[w];
      std::fill(spread + p.off[i], spread + p.off[i] + p.len[i], sum);
    }
    vec_steps<acc_t>(P, [&](int64_t k, int64_t c) {
      store(hn + k,
            load(t + k, c) - load(a + k, c) * load(spread + k, c) + load(context_coef + k, c) * load(bt + k, c), c);
    });
  }
  for (int64_t q = 0; q < P; ++q) {
    acc_t* gq = grad_c + q * D;
    const acc_t* eq = e + q * D;
    const V coef(context_coef[q]);
    vec_steps<acc_t>(D, [&](int64_t k, int64_t c) { store(gq + k, load(gq + k, c) - coef * load(eq + k, c), c); });
  }
}

Packed pack(const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions) {
  damsm_check_inputs(words, lengths, regions, /*max_words=*/0);
  return damsm_pack(words, lengths.contiguous(), regions, /*regions_as_rows=*/false);
}

}  // namespace

// scores (M, B); with save also flat alpha, beta (M*N*B*T) and contexts (M*B*T*D), of
// which the first M*N*P and M*P*D hold (M, N, P) and (M, P, D).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> damsm_word_fwd_cpu(
    const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions, double gamma1_d,
    double gamma2_d, bool save) {
  const auto p = pack(words, lengths, regions);
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
  auto scores = at::empty({M, B}, p.erows.options());
  const auto saved = damsm_saved_buffers(p, save);
  const auto e2 = p.erows.t();  // (D, P)
  const int64_t chunk = damsm_chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0);
    const auto k = damsm_forward_chunk(p, saved, e2, j0, mc, save, gemm);
    const auto &v = k.v, &s = k.s, &beta = k.beta, &c = k.c;
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "damsm_attention_softmaxes_cpu", [&] {
      scalar_t* sp = s.mutable_data_ptr<scalar_t>();
      scalar_t* bp = beta.mutable_data_ptr<scalar_t>();
      const scalar_t g1 = static_cast<scalar_t>(gamma1_d);
      at::parallel_for(0, mc, 1, [&](int64_t j_begin, int64_t j_end) {
        std::vector<scalar_t> buf(static_cast<size_t>(3 * P));
        for (int64_t j = j_begin; j < j_end; ++j)
          attention_softmaxes_image<scalar_t>(sp + j * N * P, bp + j * N * P, p, g1, buf.data(), buf.data() + P,
                                              buf.data() + 2 * P);
      });
    });
    gemm(beta.transpose(1, 2), v.transpose(1, 2), c, false);  // contexts (mc, P, D)
    AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "damsm_cosine_logsumexp_cpu", [&] {
      const scalar_t* cp = c.const_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      scalar_t* rp = scores.mutable_data_ptr<scalar_t>() + j0 * B;
      const scalar_t g2 = static_cast<scalar_t>(gamma2_d);
      at::parallel_for(0, mc * B, 4, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> work(static_cast<size_t>(6 * p.T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          rp[q] = cosine_logsumexp_pair<scalar_t>(cp + (j * P + p.off[i]) * D, ep + p.off[i] * D, p.len[i], D, g2,
                                                  scalar_t(0), nullptr, {}, work.data());
        }
      });
    });
  }
  return {scores, saved.alpha, saved.beta, saved.c};
}

std::tuple<at::Tensor, at::Tensor> damsm_word_bwd_cpu(const at::Tensor& grad_scores, const at::Tensor& words,
                                                      const at::Tensor& lengths, const at::Tensor& regions,
                                                      const at::Tensor& alpha_flat, const at::Tensor& beta_flat,
                                                      const at::Tensor& c_flat, double gamma1_d, double gamma2_d) {
  const auto p = pack(words, lengths, regions);
  const int64_t B = p.B, T = p.T, D = p.D, N = p.N, M = p.M, P = p.P;
  damsm_check_backward(p, grad_scores, alpha_flat, beta_flat, c_flat, /*require_cuda=*/false);
  const auto acc_type = p.erows.scalar_type();
  const auto grad = grad_scores.to(acc_type).contiguous();
  auto grads = damsm_backward_grads(p);
  const int64_t chunk = damsm_chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0);
    const auto k = damsm_backward_chunk(p, grads, alpha_flat, beta_flat, c_flat, j0, mc);
    // k.g = dL/dcontexts; k.k1, k.k2, k.cs: the per-word coefficients (WordCoefficients).
    const auto &v = k.v, &a = k.a, &beta = k.beta, &c = k.c, &grad_c = k.g;
    const auto &context_coef = k.k1, &word_coef = k.k2, &grad_dot_context = k.cs;
    AT_DISPATCH_FLOATING_TYPES(acc_type, "damsm_cosine_logsumexp_backward_cpu", [&] {
      const scalar_t* cp = c.const_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      const scalar_t* gr = grad.const_data_ptr<scalar_t>() + j0 * B;
      scalar_t* gp = grad_c.mutable_data_ptr<scalar_t>();
      scalar_t* context_coef_p = context_coef.mutable_data_ptr<scalar_t>();
      scalar_t* word_coef_p = word_coef.mutable_data_ptr<scalar_t>();
      scalar_t* grad_dot_context_p = grad_dot_context.mutable_data_ptr<scalar_t>();
      const scalar_t g2 = static_cast<scalar_t>(gamma2_d);
      at::parallel_for(0, mc * B, 4, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> work(static_cast<size_t>(6 * T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          const int64_t col = j * P + p.off[i];
          const WordCoefficients<scalar_t> coef{context_coef_p + col, word_coef_p + col, grad_dot_context_p + col};
          cosine_logsumexp_pair<scalar_t>(cp + col * D, ep + p.off[i] * D, p.len[i], D, g2, gr[q], gp + col * D, coef,
                                          work.data());
        }
      });
    });
    auto h = at::empty({mc, N, P}, v.options());  // dL/dbeta
    gemm(v.transpose(1, 2), grad_c.transpose(1, 2), h, false);
    AT_DISPATCH_FLOATING_TYPES(acc_type, "damsm_softmax_backward_cpu", [&] {
      const scalar_t* ap = a.const_data_ptr<scalar_t>();
      const scalar_t* bp = beta.const_data_ptr<scalar_t>();
      scalar_t* hp = h.mutable_data_ptr<scalar_t>();
      scalar_t* gp = grad_c.mutable_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      const scalar_t* context_coef_p = context_coef.const_data_ptr<scalar_t>();
      const scalar_t* grad_dot_context_p = grad_dot_context.const_data_ptr<scalar_t>();
      const scalar_t g1 = static_cast<scalar_t>(gamma1_d);
      at::parallel_for(0, mc, 1, [&](int64_t j_begin, int64_t j_end) {
        std::vector<scalar_t> buf(static_cast<size_t>(2 * P));
        for (int64_t j = j_begin; j < j_end; ++j)
          softmax_backward_image<scalar_t>(ap + j * N * P, bp + j * N * P, hp + j * N * P, gp + j * P * D, ep,
                                           context_coef_p + j * P, grad_dot_context_p + j * P, p, g1, buf.data(),
                                           buf.data() + P);
      });
    });
    damsm_backward_accumulate(p, grads, k, h, j0, mc, gemm);
  }
  return damsm_backward_finish(p, grads, regions);
}

}  // namespace fastt2i::CPU_CAPABILITY
