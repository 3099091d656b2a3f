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
#include <ATen/ops/empty_like.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "../common.h"

namespace fastt2i {
namespace {

constexpr int64_t kChunkElements = int64_t(1) << 24;  // as _CHUNK_ELEMENTS in damsm.py
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

int64_t chunk_images(int64_t M, int64_t N, int64_t P) {
  return std::max<int64_t>(1, std::min<int64_t>(M, kChunkElements / std::max<int64_t>(1, N * P)));
}

struct Packed {
  at::Tensor erows, vt, index;  // words (P, D), regions (M, N, D) in the accumulate type; flat b*T+w (P,)
  std::vector<int64_t> len, off;
  int64_t B, T, D, N, M, P;
};

Packed pack(const at::Tensor& words, const at::Tensor& lengths_in, const at::Tensor& regions) {
  check_float(words, "words");
  TORCH_CHECK(words.dim() == 3, "words: expected (B, D, T), got ", words.sizes());
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
  const auto lengths = lengths_in.contiguous();
  const int64_t* lp = lengths.const_data_ptr<int64_t>();
  p.len.assign(lp, lp + p.B);
  p.off.resize(p.B);
  std::vector<int64_t> index;
  int64_t total = 0;
  for (int64_t i = 0; i < p.B; ++i) {
    TORCH_CHECK(p.len[i] >= 1 && p.len[i] <= p.T, "lengths: expected values in [1, T=", p.T, "], got ", p.len[i]);
    p.off[i] = total;
    for (int64_t w = 0; w < p.len[i]; ++w) index.push_back(i * p.T + w);
    total += p.len[i];
  }
  p.P = total;
  const auto acc_type = accumulate_type(words.scalar_type());
  p.index = at::empty({p.P}, lengths.options());
  std::copy(index.begin(), index.end(), p.index.mutable_data_ptr<int64_t>());
  // padding words are never read (the official code slices them off)
  p.erows = words.to(acc_type).transpose(1, 2).reshape({p.B * p.T, p.D}).index_select(0, p.index);
  p.vt = regions.to(acc_type).reshape({p.M, p.D, p.N}).transpose(1, 2).contiguous();
  return p;
}

// scores (M, B); with save also flat alpha, beta (M*N*B*T) and contexts (M*B*T*D), of
// which the first M*N*P and M*P*D hold (M, N, P) and (M, P, D).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> damsm_word_fwd_cpu(
    const at::Tensor& words, const at::Tensor& lengths, const at::Tensor& regions, double gamma1_d,
    double gamma2_d, bool save) {
  const auto p = pack(words, lengths, regions);
  const int64_t B = p.B, D = p.D, N = p.N, M = p.M, P = p.P;
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
    const int64_t mc = std::min(chunk, M - j0);
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
    at::bmm_out(c, beta.transpose(1, 2), vt);  // (mc, P, D)
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
  return {scores, alpha_flat, beta_flat, c_flat};
}

std::tuple<at::Tensor, at::Tensor> damsm_word_bwd_cpu(const at::Tensor& grad_scores, const at::Tensor& words,
                                                      const at::Tensor& lengths, const at::Tensor& regions,
                                                      const at::Tensor& alpha_flat, const at::Tensor& beta_flat,
                                                      const at::Tensor& c_flat, double gamma1_d, double gamma2_d) {
  const auto p = pack(words, lengths, regions);
  const int64_t B = p.B, T = p.T, D = p.D, N = p.N, M = p.M, P = p.P;
  TORCH_CHECK(grad_scores.dim() == 2 && grad_scores.size(0) == M && grad_scores.size(1) == B,
              "grad_scores: expected (M, B) = (", M, ", ", B, "), got ", grad_scores.sizes());
  const auto acc_type = p.vt.scalar_type();
  for (const auto* t : {&alpha_flat, &beta_flat, &c_flat})
    TORCH_CHECK(t->dim() == 1 && t->is_contiguous() && t->scalar_type() == acc_type &&
                    t->numel() == (t == &c_flat ? M * B * T * D : M * N * B * T),
                "alpha/beta/context: expected the flat buffers saved by damsm_word_fwd, got ", t->sizes(), " ",
                t->scalar_type());
  const auto opts = p.vt.options();
  const auto grad = grad_scores.to(acc_type).contiguous();
  const auto e2 = p.erows.t();  // (D, P)
  auto g_e = at::zeros({P, D}, opts);
  auto g_v = at::empty({M, D, N}, opts);
  auto k2_sum = at::zeros({M, P}, opts);
  const int64_t chunk = chunk_images(M, N, P);
  for (int64_t j0 = 0; j0 < M; j0 += chunk) {
    const int64_t mc = std::min(chunk, M - j0);
    const auto vt = p.vt.narrow(0, j0, mc);  // (mc, N, D)
    const auto a = alpha_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
    const auto beta = beta_flat.narrow(0, j0 * N * P, mc * N * P).view({mc, N, P});
    const auto c = c_flat.narrow(0, j0 * P * D, mc * P * D).view({mc, P, D});
    auto g = at::empty({mc, P, D}, opts);
    auto k1 = at::empty({mc, P}, opts);
    auto k2 = k2_sum.narrow(0, j0, mc);
    auto cs = at::empty({mc, P}, opts);
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

TORCH_LIBRARY_IMPL(fastt2i, CPU, m) {
  m.impl("damsm_word_fwd", &damsm_word_fwd_cpu);
  m.impl("damsm_word_bwd", &damsm_word_bwd_cpu);
}

}  // namespace fastt2i
