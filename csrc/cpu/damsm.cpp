// DAMSM word-level matching on CPU: every caption against every image.
// The math and the autograd live in fastt2i/ops/damsm.py.  Only the real words are
// computed: they are packed into P = sum(lengths) columns (the official loop slices each
// caption likewise).  The contractions are GEMMs over all pairs (ATen's BLAS); the
// per-pair stages between them (both softmaxes; cosines and log-sum-exp; both softmax
// backwards) are fused loops here, parallel over the (image, caption) pairs.  With save
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
#include "kernels.h"
#include "../damsm_host.h"

namespace fastt2i::CPU_CAPABILITY {
namespace {

using Packed = DamsmPacked;

constexpr double kCosEps = 1e-8;

// Stage A, one pair (j, i): alpha = softmax over the L words of each region row of S,
// beta = softmax over the N regions of gamma1 * alpha.  Element (n, w) of the pair is at
// [n * P + w].  alpha may alias s; beta may alias s when alpha is null (zbuf holds alpha).
template <typename acc_t>
void stage_a_pair(const acc_t* s, acc_t* alpha, acc_t* beta, int64_t L, int64_t N, int64_t P, acc_t gamma1,
                  acc_t* zbuf, acc_t* colmax, acc_t* colsum) {
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* row = s + n * P;
    acc_t mx = -std::numeric_limits<acc_t>::infinity();
    for (int64_t w = 0; w < L; ++w) mx = std::max(mx, row[w]);
    acc_t* z = zbuf + n * L;
    for (int64_t w = 0; w < L; ++w) z[w] = std::exp(row[w] - mx);
    acc_t sum = 0;
    for (int64_t w = 0; w < L; ++w) sum += z[w];
    const acc_t inv = acc_t(1) / sum;
    for (int64_t w = 0; w < L; ++w) z[w] *= inv;  // alpha
  }
  for (int64_t w = 0; w < L; ++w) {
    colmax[w] = -std::numeric_limits<acc_t>::infinity();
    colsum[w] = 0;
  }
  for (int64_t n = 0; n < N; ++n)
    for (int64_t w = 0; w < L; ++w) colmax[w] = std::max(colmax[w], gamma1 * zbuf[n * L + w]);
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* a = zbuf + n * L;
    if (alpha != nullptr) std::copy(a, a + L, alpha + n * P);
    acc_t* out = beta + n * P;
    for (int64_t w = 0; w < L; ++w) out[w] = std::exp(gamma1 * a[w] - colmax[w]);
    for (int64_t w = 0; w < L; ++w) colsum[w] += out[w];
  }
  for (int64_t w = 0; w < L; ++w) colsum[w] = acc_t(1) / colsum[w];
  for (int64_t n = 0; n < N; ++n) {
    acc_t* out = beta + n * P;
    for (int64_t w = 0; w < L; ++w) out[w] *= colsum[w];
  }
}

// Stage B, one pair: cosines of the L context rows c (L, D) with the words e (L, D);
// returns R = logsumexp_w(gamma2 * cos).  With g != null also g = dR/dC * grad, and per
// word k1 = gcos / den, k2 (dE = k1 c + k2 e), cs = g . c.
template <typename acc_t>
acc_t stage_b_pair(const acc_t* c, const acc_t* e, int64_t L, int64_t D, acc_t gamma2, acc_t grad, acc_t* g,
                   acc_t* k1, acc_t* k2, acc_t* cs, acc_t* work) {
  const acc_t eps = static_cast<acc_t>(kCosEps);
  acc_t* x = work;  // gamma2 * cos
  acc_t* cosv = work + L;
  acc_t* den = work + 2 * L;
  acc_t* aa = work + 3 * L;
  acc_t* bb = work + 4 * L;
  acc_t* ab = work + 5 * L;
  acc_t xmax = -std::numeric_limits<acc_t>::infinity();
  for (int64_t w = 0; w < L; ++w) {
    const acc_t* cw = c + w * D;
    const acc_t* ew = e + w * D;
    acc_t dot = 0, a2 = 0, b2 = 0;
    for (int64_t k = 0; k < D; ++k) {
      dot += cw[k] * ew[k];
      a2 += ew[k] * ew[k];
      b2 += cw[k] * cw[k];
    }
    aa[w] = a2;
    bb[w] = b2;
    ab[w] = std::sqrt(a2) * std::sqrt(b2);
    den[w] = std::max(ab[w], eps);
    cosv[w] = dot / den[w];
    x[w] = gamma2 * cosv[w];
    xmax = std::max(xmax, x[w]);
  }
  acc_t sum = 0;
  for (int64_t w = 0; w < L; ++w) sum += std::exp(x[w] - xmax);
  const acc_t r = xmax + std::log(sum);
  if (g == nullptr) return r;
  for (int64_t w = 0; w < L; ++w) {
    const acc_t gcos = grad * gamma2 * std::exp(x[w] - r);
    const bool free = ab[w] >= eps;  // the clamp passes no gradient to |e||c| when active
    const acc_t kc = free ? cosv[w] / bb[w] : acc_t(0);
    const acc_t ke = free ? cosv[w] / aa[w] : acc_t(0);
    k1[w] = gcos / den[w];
    k2[w] = -gcos * ke;
    const acc_t* cw = c + w * D;
    const acc_t* ew = e + w * D;
    acc_t* gw = g + w * D;
    const acc_t kcc = gcos * kc;
    acc_t acc = 0;
    for (int64_t k = 0; k < D; ++k) {
      gw[k] = k1[w] * ew[k] - kcc * cw[k];
      acc += gw[k] * cw[k];
    }
    cs[w] = acc;
  }
  return r;
}

// Stage C, one pair: h holds dL/dbeta on entry and H = dS + k1 * beta on exit (both
// softmax backwards); g (dR/dC) becomes g - k1 * e.
template <typename acc_t>
void stage_c_pair(const acc_t* alpha, const acc_t* beta, acc_t* h, acc_t* g, const acc_t* e, const acc_t* k1,
                  const acc_t* cs, int64_t L, int64_t N, int64_t P, int64_t D, acc_t gamma1, acc_t* t) {
  for (int64_t n = 0; n < N; ++n) {
    const acc_t* a = alpha + n * P;
    const acc_t* bt = beta + n * P;
    acc_t* hn = h + n * P;
    acc_t tsum = 0;
    for (int64_t w = 0; w < L; ++w) {
      t[w] = a[w] * gamma1 * bt[w] * (hn[w] - cs[w]);
      tsum += t[w];
    }
    for (int64_t w = 0; w < L; ++w) hn[w] = t[w] - a[w] * tsum + k1[w] * bt[w];
  }
  for (int64_t w = 0; w < L; ++w) {
    acc_t* gw = g + w * D;
    const acc_t* ew = e + w * D;
    for (int64_t k = 0; k < D; ++k) gw[k] -= k1[w] * ew[k];
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
    AT_DISPATCH_FLOATING_TYPES(s.scalar_type(), "damsm_stage_a_cpu", [&] {
      scalar_t* sp = s.mutable_data_ptr<scalar_t>();
      scalar_t* bp = beta.mutable_data_ptr<scalar_t>();
      const scalar_t g1 = static_cast<scalar_t>(gamma1_d);
      at::parallel_for(0, mc * B, 1, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> zbuf(static_cast<size_t>(N * p.T)), col(static_cast<size_t>(2 * p.T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          const int64_t off = j * N * P + p.off[i];
          stage_a_pair<scalar_t>(sp + off, save ? sp + off : nullptr, bp + off, p.len[i], N, P, g1, zbuf.data(),
                                 col.data(), col.data() + p.T);
        }
      });
    });
    auto ctx = c;
    at::bmm_out(ctx, beta.transpose(1, 2), vt);  // (mc, P, D)
    AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "damsm_stage_b_cpu", [&] {
      const scalar_t* cp = c.const_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      scalar_t* rp = scores.mutable_data_ptr<scalar_t>() + j0 * B;
      const scalar_t g2 = static_cast<scalar_t>(gamma2_d);
      at::parallel_for(0, mc * B, 4, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> work(static_cast<size_t>(6 * p.T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          rp[q] = stage_b_pair<scalar_t>(cp + (j * P + p.off[i]) * D, ep + p.off[i] * D, p.len[i], D, g2,
                                         scalar_t(0), nullptr, nullptr, nullptr, nullptr, work.data());
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
    const auto &vt = k.vt, &a = k.a, &beta = k.beta, &c = k.c, &g = k.g, &k1 = k.k1, &k2 = k.k2, &cs = k.cs;
    AT_DISPATCH_FLOATING_TYPES(acc_type, "damsm_stage_b_cpu", [&] {
      const scalar_t* cp = c.const_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      const scalar_t* gr = grad.const_data_ptr<scalar_t>() + j0 * B;
      scalar_t* gp = g.mutable_data_ptr<scalar_t>();
      scalar_t* k1p = k1.mutable_data_ptr<scalar_t>();
      scalar_t* k2p = k2.mutable_data_ptr<scalar_t>();
      scalar_t* csp = cs.mutable_data_ptr<scalar_t>();
      const scalar_t g2 = static_cast<scalar_t>(gamma2_d);
      at::parallel_for(0, mc * B, 4, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> work(static_cast<size_t>(6 * T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          const int64_t col = j * P + p.off[i];
          stage_b_pair<scalar_t>(cp + col * D, ep + p.off[i] * D, p.len[i], D, g2, gr[q], gp + col * D, k1p + col,
                                 k2p + col, csp + col, work.data());
        }
      });
    });
    auto h = at::bmm(vt, g.transpose(1, 2));  // dL/dbeta (mc, N, P)
    AT_DISPATCH_FLOATING_TYPES(acc_type, "damsm_stage_c_cpu", [&] {
      const scalar_t* ap = a.const_data_ptr<scalar_t>();
      const scalar_t* bp = beta.const_data_ptr<scalar_t>();
      scalar_t* hp = h.mutable_data_ptr<scalar_t>();
      scalar_t* gp = g.mutable_data_ptr<scalar_t>();
      const scalar_t* ep = p.erows.const_data_ptr<scalar_t>();
      const scalar_t* k1p = k1.const_data_ptr<scalar_t>();
      const scalar_t* csp = cs.const_data_ptr<scalar_t>();
      const scalar_t g1 = static_cast<scalar_t>(gamma1_d);
      at::parallel_for(0, mc * B, 1, [=](int64_t q0, int64_t q1) {
        std::vector<scalar_t> t(static_cast<size_t>(T));
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t j = q / B, i = q % B;
          const int64_t off = j * N * P + p.off[i], col = j * P + p.off[i];
          stage_c_pair<scalar_t>(ap + off, bp + off, hp + off, gp + col * D, ep + p.off[i] * D, k1p + col,
                                 csp + col, p.len[i], N, P, D, g1, t.data());
        }
      });
    });
    damsm_backward_accumulate(p, grads, k, e2, h, j0, mc);
  }
  return damsm_backward_finish(p, grads, regions);
}

}  // namespace fastt2i::CPU_CAPABILITY
