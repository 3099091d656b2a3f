// DAMSM word-level matching on CPU: every caption against every image.
// The math and the autograd live in fastt2i/ops/damsm.py.  Only the real words are
// computed: they are packed into P = sum(lengths) columns (the official loop slices each
// caption likewise).  The contractions are GEMMs over all pairs (ATen's BLAS); the
// per-pair computations between them are fused loops here, parallel over the (image, caption)
// pairs: attention_softmaxes_pair (alpha, beta), cosine_logsumexp_pair (the pair's score and, in the
// backward, dL/dcontexts) and softmax_backward_pair (dL/dS through both softmaxes).  Compiled once
// per CPU level (kernels.h) on at::vec::Vectorized (exp_u20, masked partial rows of words).  With save
// the forward keeps alpha, beta and the contexts for the backward (flat buffers sized for
// the padded B*T words so their shapes do not depend on the lengths); otherwise, and in
// the backward, images go in chunks so the intermediates stay bounded.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/bmm.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common.h"
#include "../damsm_host.h"
#include "kernels.h"
#include "vec_io.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

using Packed = DamsmPacked;

constexpr double kCosEps = 1e-8;

// A row of L <= T words is processed in vector steps of Vectorized<acc_t>::size() words, the last one
// partial: partial loads fill the missing words with `fill`, partial stores write only the L words.
template <typename acc_t>
struct WordRow {
  using V = Vectorized<acc_t>;
  static constexpr int64_t kLanes = V::size();
  static V load(const acc_t* p, int64_t n, acc_t fill = acc_t(0)) {
    if (n >= kLanes) return V::loadu(p);
    return V::blendv(V(fill), V::loadu(p, n), V::loadu(kLaneIndex) < V(static_cast<acc_t>(n)));
  }
  static void store(acc_t* p, const V& v, int64_t n) {
    if (n >= kLanes)
      v.store(p);
    else
      v.store(p, static_cast<int>(n));
  }
  static constexpr acc_t kLaneIndex[64] = {0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11, 12, 13, 14, 15,
                                            16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
                                            32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
                                            48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63};
};

template <typename acc_t>
inline acc_t reduce_sum(const Vectorized<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>([](Vectorized<acc_t> a, Vectorized<acc_t> b) { return a + b; }, v);
}
template <typename acc_t>
inline acc_t reduce_max(const Vectorized<acc_t>& v) {
  return at::vec::vec_reduce_all<acc_t>(
      [](Vectorized<acc_t> a, Vectorized<acc_t> b) { return at::vec::maximum(a, b); }, v);
}

// The attention softmaxes of one (image j, caption i) pair.  Element (n, w) of the pair is at
// [n * P + w] (N regions, L words).  On entry s holds the word-region similarities S; then
//   alpha[n, w] = softmax over the words w of S[n, :]            (each region's attention on the words)
//   beta[n, w]  = softmax over the regions n of gamma1 * alpha[:, w]  (each word's attention on regions)
// alpha may alias s; beta may alias s when alpha is null (alpha_buf holds alpha, (N, L) dense).
template <typename acc_t>
void attention_softmaxes_pair(const acc_t* s, acc_t* alpha, acc_t* beta, int64_t L, int64_t N, int64_t P,
                              acc_t gamma1, acc_t* alpha_buf, acc_t* col_max, acc_t* col_inv_sum) {
  using R = WordRow<acc_t>;
  using V = typename R::V;
  constexpr acc_t neg_inf = -std::numeric_limits<acc_t>::infinity();
  const V g1(gamma1);
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* row = s + n * P;
    acc_t* a = alpha_buf + n * L;
    V mx(neg_inf);
    for (int64_t w = 0; w < L; w += R::kLanes) mx = at::vec::maximum(mx, R::load(row + w, L - w, neg_inf));
    const V m(reduce_max(mx));
    V sum(acc_t(0));
    for (int64_t w = 0; w < L; w += R::kLanes) {
      const V e = (R::load(row + w, L - w, neg_inf) - m).exp_u20();  // 0 past L
      R::store(a + w, e, L - w);
      sum = sum + e;
    }
    const V inv(acc_t(1) / reduce_sum(sum));
    for (int64_t w = 0; w < L; w += R::kLanes) R::store(a + w, R::load(a + w, L - w) * inv, L - w);
  }
  for (int64_t w = 0; w < L; w += R::kLanes) {
    V mx(neg_inf);
    for (int64_t n = 0; n < N; ++n) mx = at::vec::maximum(mx, g1 * R::load(alpha_buf + n * L + w, L - w));
    R::store(col_max + w, mx, L - w);
  }
  std::fill(col_inv_sum, col_inv_sum + L, acc_t(0));
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* a = alpha_buf + n * L;
    if (alpha != nullptr) std::copy(a, a + L, alpha + n * P);
    acc_t* out = beta + n * P;
    for (int64_t w = 0; w < L; w += R::kLanes) {
      const V e = (g1 * R::load(a + w, L - w) - R::load(col_max + w, L - w)).exp_u20();
      R::store(out + w, e, L - w);
      R::store(col_inv_sum + w, R::load(col_inv_sum + w, L - w) + e, L - w);
    }
  }
  for (int64_t w = 0; w < L; ++w) col_inv_sum[w] = acc_t(1) / col_inv_sum[w];
  for (int64_t n = 0; n < N; ++n) {
    acc_t* out = beta + n * P;
    for (int64_t w = 0; w < L; w += R::kLanes)
      R::store(out + w, R::load(out + w, L - w) * R::load(col_inv_sum + w, L - w), L - w);
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

// The backward of both attention softmaxes of one pair.  On entry h holds dL/dbeta (N, L at stride P);
// on exit dL/dS + context_coef * beta, the gradient of the similarities S with the cosine term of
// the words folded in; grad_c (dL/dc) becomes grad_c - context_coef * e.
template <typename acc_t>
void softmax_backward_pair(const acc_t* alpha, const acc_t* beta, acc_t* h, acc_t* grad_c, const acc_t* e,
                           const acc_t* context_coef, const acc_t* grad_dot_context, int64_t L, int64_t N,
                           int64_t P, int64_t D, acc_t gamma1, acc_t* dalpha) {
  using R = WordRow<acc_t>;
  using V = typename R::V;
  const V g1(gamma1);
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* a = alpha + n * P;
    const acc_t* bt = beta + n * P;
    acc_t* hn = h + n * P;
    V total(acc_t(0));
    for (int64_t w = 0; w < L; w += R::kLanes) {  // dalpha = alpha * gamma1 * beta * (h - grad_dot_context)
      const V t = R::load(a + w, L - w) * g1 * R::load(bt + w, L - w) *
                  (R::load(hn + w, L - w) - R::load(grad_dot_context + w, L - w));
      R::store(dalpha + w, t, L - w);
      total = total + t;
    }
    const V tsum(reduce_sum(total));
    for (int64_t w = 0; w < L; w += R::kLanes) {
      const V out = R::load(dalpha + w, L - w) - R::load(a + w, L - w) * tsum +
                    R::load(context_coef + w, L - w) * R::load(bt + w, L - w);
      R::store(hn + w, out, L - w);
    }
  }
  using VD = Vectorized<acc_t>;
  for (int64_t w = 0; w < L; ++w) {
    acc_t* gw = grad_c + w * D;
    const acc_t* ew = e + w * D;
    const VD k(context_coef[w]);
    for (int64_t d = 0; d < D; d += VD::size()) {
      const int64_t n = std::min<int64_t>(VD::size(), D - d);
      if (n == VD::size())
        (VD::loadu(gw + d) - k * VD::loadu(ew + d)).store(gw + d);
      else
        (VD::loadu(gw + d, n) - k * VD::loadu(ew + d, n)).store(gw + d, static_cast<int>(n));
    }
  }
}

Packed pack(const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions) {
  damsm_check_inputs(words, lengths, regions, /*max_words=*/0);
  return damsm_pack(words, lengths.contiguous(), regions);
}

}  // namespace

// scores (M, B); with save also flat alpha, beta (M*N*B*T) and contexts (M*B*T*D), of
// which the first M*N*P and M*P*D hold (M, N, P) and (M, P, D).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> damsm_word_fwd_cpu(
    const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions, double gamma1_d,
    double gamma2_d, bool save) {
  const auto p = pack(words, lengths, regions);
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
  auto scores = at::empty({M, B}, p.vt.options());
  const auto saved = damsm_saved_buffers(p, save);
  const auto e2 = p.erows.t();  // (D, P)
  const int64_t chunk = damsm_chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0);
    const auto k = damsm_forward_chunk(p, saved, e2, j0, mc, save);
    const auto &vt = k.vt, &s = k.s, &beta = k.beta, &c = k.c;
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "damsm_attention_softmaxes_cpu", [&] {
      scalar_t* sp = s.mutable_data_ptr<scalar_t>();
      scalar_t* bp = beta.mutable_data_ptr<scalar_t>();
      const scalar_t g1 = static_cast<scalar_t>(gamma1_d);
      at::parallel_for(0, mc * B, 1, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> alpha_buf(static_cast<size_t>(N * p.T)), col(static_cast<size_t>(2 * p.T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          const int64_t off = j * N * P + p.off[i];
          attention_softmaxes_pair<scalar_t>(sp + off, save ? sp + off : nullptr, bp + off, p.len[i], N, P, g1,
                                             alpha_buf.data(), col.data(), col.data() + p.T);
        }
      });
    });
    auto ctx = c;
    at::bmm_out(ctx, beta.transpose(1, 2), vt);  // (mc, P, D)
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
  const auto acc_type = p.vt.scalar_type();
  const auto grad = grad_scores.to(acc_type).contiguous();
  const auto e2 = p.erows.t();  // (D, P)
  auto grads = damsm_backward_grads(p);
  const int64_t chunk = damsm_chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0);
    const auto k = damsm_backward_chunk(p, grads, alpha_flat, beta_flat, c_flat, j0, mc);
    // k.g = dL/dcontexts; k.k1, k.k2, k.cs: the per-word coefficients (WordCoefficients).
    const auto &vt = k.vt, &a = k.a, &beta = k.beta, &c = k.c, &grad_c = k.g;
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
    auto h = at::bmm(vt, grad_c.transpose(1, 2));  // dL/dbeta (mc, N, P)
    AT_DISPATCH_FLOATING_TYPES(acc_type, "damsm_softmax_backward_cpu", [&] {
      const scalar_t* ap = a.const_data_ptr<scalar_t>();
      const scalar_t* bp = beta.const_data_ptr<scalar_t>();
      scalar_t* hp = h.mutable_data_ptr<scalar_t>();
      scalar_t* gp = grad_c.mutable_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      const scalar_t* context_coef_p = context_coef.const_data_ptr<scalar_t>();
      const scalar_t* grad_dot_context_p = grad_dot_context.const_data_ptr<scalar_t>();
      const scalar_t g1 = static_cast<scalar_t>(gamma1_d);
      at::parallel_for(0, mc * B, 1, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> dalpha(static_cast<size_t>(T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          const int64_t off = j * N * P + p.off[i], col = j * P + p.off[i];
          softmax_backward_pair<scalar_t>(ap + off, bp + off, hp + off, gp + col * D, ep + p.off[i] * D,
                                          context_coef_p + col, grad_dot_context_p + col, p.len[i], N, P, D, g1,
                                          dalpha.data());
        }
      });
    });
    damsm_backward_accumulate(p, grads, k, e2, h, j0, mc);
  }
  return damsm_backward_finish(p, grads, regions);
}

}  // namespace fastt2i::CPU_CAPABILITY
