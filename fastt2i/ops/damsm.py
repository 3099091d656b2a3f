"""DAMSM word-level matching: every caption against every image, forward and backward.

For image j (regions v_{j,n}, n < N = H*W) and caption i (words e_{i,w}, w < len_i),
following AttnGAN's ``func_attention`` and ``words_loss`` (taoxugit/AttnGAN,
code/GlobalAttention.py and code/miscc/losses.py):

    s[n, w]    = v_{j,n} . e_{i,w}                         (Eq. 7)
    alpha[n,:] = softmax over the words w < len_i of s[n,:] (Eq. 8)
    beta[w,:]  = softmax over the regions n of gamma1 * alpha[:, w]   (Eq. 9)
    c_{j,i,w}  = sum_n beta[w, n] v_{j,n}
    R(j, i)    = log sum_{w < len_i} exp(gamma2 * cos(e_{i,w}, c_{j,i,w}))   (Eq. 10)

with ``cos(x, y) = x.y / max(|x| |y|, 1e-8)``.  The official code computes Eq. 10 as
``exp(gamma2 * cos).sum().log()``; the vectorised and fused forms use logsumexp,
which has the same value (|gamma2 * cos| <= gamma2, so the official form never
overflows either) and is stable for any gamma2.

The official loop runs ``func_attention`` once per caption with the caption repeated
for every image.  Here the fused backends run all M x B pairs together:

  forward   S = V^T [E_1 .. E_B]   one GEMM for all pairs            (M, N, B*T)
            attention kernel: softmax over words, then gamma1-softmax over regions, per pair
            C = Beta^T V                one batched GEMM              (M, B*T, D)
            cosine kernel: cosines and R per pair
  backward  the cosine kernel again, now also forming dR/dC; dBeta = V^T dC (one batched
            GEMM); the softmax-backward kernel fuses both softmax backwards; then dV and dE
            are GEMMs.

(The C++ sources call the three kernels stages A, B and C.)  In the backward, with
``gcos = dR/dcos`` per word, ``cos = e.c / (|e| |c|)``:

    cross_coef = gcos / (|e| |c|)          coefficient of e in dR/dc, and of c in dR/de
    self_coef  = -gcos * cos / |e|^2       coefficient of e in dR/de
    c_dot_gc   = <c, dR/dc> = sum_n beta[n] dR/dbeta[n]   the row term of the softmax
                                           backward over the regions

The kernels are fused (C++/OpenMP, CUDA, Triton) over all pairs at once; the
contractions go to the platform GEMM (cuBLAS; on CPU MKL, or oneDNN at the AVX-512 level
in float32, where MKL runs its AVX2 code on AMD CPUs: see csrc/cpu/damsm.cpp).  When a gradient is needed the
forward saves alpha, beta and C (GEMM outputs: recomputing them would add two GEMMs to
the six of forward + backward) and the backward recomputes only the elementwise parts; without
gradients nothing is kept and images are processed in chunks so that the (images x
regions x captions*words) intermediates stay bounded (``_CHUNK_ELEMENTS``); the backward
is chunked likewise.  The compiled backends (cpu, cuda) pack the real words of all
captions into P = sum(lengths) columns, so padding costs nothing (the official loop slices
each caption likewise); the Triton backend keeps the padded B*T columns and masks them.
The official loop keeps every caption's repeated copies and attention maps for its
backward instead.

The official loop (the specification and the benchmark baseline) is
``fastt2i.official.damsm.word_scores``.  Here: the vectorised reference, the Triton kernels, the schema of the compiled kernels
(``csrc/cpu/damsm.cpp``, ``csrc/cuda/damsm*.c*``), one autograd for every fused
backend, and the public function.
"""
from __future__ import annotations

import torch

from . import _backend, _checks
from ._library import define
from ._triton import tl, triton

COS_EPS = 1e-8  # AttnGAN's cosine_similarity: x.y / max(|x| |y|, eps); used by fastt2i.losses too
MAX_WORDS_CUDA = 512  # the CUDA kernels keep a few floats per word in shared memory
# Elements of one (images x regions x captions*words) intermediate per chunk of images.
_CHUNK_ELEMENTS = 1 << 24


# ----------------------------------------------------------------------------- vectorised reference

def _word_mask(lengths, T):
    return torch.arange(T, device=lengths.device)[None, :] < lengths[:, None]


def damsm_word_scores_reference(words, lengths, regions, gamma1: float = 4.0, gamma2: float = 5.0,
                                return_attention: bool = False):
    """All pairs at once in plain PyTorch; same value as the official loop.

    Computes in float32 for half inputs (float64 for float64) and returns scores (M, B)
    in the inputs' dtype; with ``return_attention`` also (B, T, H, W), see
    ``damsm_word_scores``.
    """
    dtype = torch.promote_types(words.dtype, regions.dtype)
    acc = _checks.accumulate_dtype(dtype)
    B, D, T = words.shape
    M, _, H, W = regions.shape
    mask = _word_mask(lengths, T)            # (B, T) True on real words
    e = words.to(acc).masked_fill(~mask[:, None, :], 0.0)  # padding is never read, as in the official slice
    v = regions.to(acc).reshape(M, D, H * W)  # (M, D, N)
    s = torch.einsum("jdn,idw->jniw", v, e)  # (M, N, B, T)
    alpha = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)            # Eq. 8: over words
    beta = torch.softmax(gamma1 * alpha, dim=1)                                    # Eq. 9: over regions
    c = torch.einsum("jniw,jdn->jiwd", beta, v)                                     # (M, B, T, D)
    et = e.transpose(1, 2)                   # (B, T, D)
    num = (c * et).sum(-1)
    den = (c.norm(dim=-1) * et.norm(dim=-1)).clamp(min=COS_EPS)
    cos = num / den                          # (M, B, T)
    scores = (gamma2 * cos).masked_fill(~mask, float("-inf")).logsumexp(-1)        # Eq. 10
    scores = scores.to(dtype)
    if not return_attention:
        return scores
    n = min(M, B)
    idx = torch.arange(n, device=words.device)
    attn = beta[idx, :, idx, :].permute(0, 2, 1)                                    # (n, T, N)
    attn = attn * mask[:n, :, None]
    out = attn.new_zeros(B, T, H * W)
    out[:n] = attn
    return scores, out.reshape(B, T, H, W).to(dtype)


# ----------------------------------------------------------------------------- compiled kernels (csrc/)

define(
    "damsm_word_fwd(Tensor words, Tensor lengths, Tensor regions, float gamma1, float gamma2, bool save)"
    " -> (Tensor, Tensor, Tensor, Tensor)"
)
define(
    "damsm_word_bwd(Tensor grad_scores, Tensor words, Tensor lengths, Tensor regions, Tensor alpha,"
    " Tensor beta, Tensor context, float gamma1, float gamma2) -> (Tensor, Tensor)"
)


def _fake_forward(words, lengths, regions, gamma1, gamma2, save):
    # The compiled kernels pack the P = sum(lengths) real words; what they save for the
    # backward lives in flat buffers sized for B*T words, so no shape depends on the lengths.
    acc = _checks.accumulate_dtype(words.dtype)
    B, D, T = words.shape
    M, N = regions.shape[0], regions.shape[2] * regions.shape[3]
    scores = words.new_empty((M, B), dtype=acc)
    if not save:
        empty = words.new_empty((0,), dtype=acc)
        return scores, empty, empty.clone(), empty.clone()
    return (scores, words.new_empty((M * N * B * T,), dtype=acc), words.new_empty((M * N * B * T,), dtype=acc),
            words.new_empty((M * B * T * D,), dtype=acc))


def _fake_backward(grad_scores, words, lengths, regions, alpha, beta, context, gamma1, gamma2):
    acc = _checks.accumulate_dtype(words.dtype)
    return words.new_empty(words.shape, dtype=acc), regions.new_empty(regions.shape, dtype=acc)


torch.library.register_fake("fastt2i::damsm_word_fwd")(_fake_forward)
torch.library.register_fake("fastt2i::damsm_word_bwd")(_fake_backward)


def _chunk_images(M: int, N: int, BT: int) -> int:
    return max(1, min(M, _CHUNK_ELEMENTS // max(1, N * BT)))


# ----------------------------------------------------------------------------- Triton kernels

if triton is not None:

    @triton.jit
    def _pair_words(pid, B, T, len_ptr, BLOCK_T: tl.constexpr):
        """Program ``pid`` takes image j = pid // B and caption i = pid % B: the word offsets w
        and which of them are real words (w < len_i, len_i clamped to [1, T]: never out of bounds)."""
        j = pid // B
        i = pid % B
        length = tl.minimum(tl.maximum(tl.load(len_ptr + i).to(tl.int32), 1), T)
        w = tl.arange(0, BLOCK_T)
        return j, i, w, w < length

    @triton.jit
    def _attention_kernel(s_ptr, alpha_ptr, bt_ptr, len_ptr, B, T, N, BT, gamma1,
                          WRITE_ALPHA: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr):
        # One program per (image j, caption i): the (N, T) block of columns i*T.. of S[j].
        # Pass 1: row softmax over words, running log-sum-exp over regions of gamma1*alpha.
        # Pass 2: recompute alpha and write beta (and alpha for the backward).
        pid = tl.program_id(0)
        j, i, w, w_ok = _pair_words(pid, B, T, len_ptr, BLOCK_T)
        base = j.to(tl.int64) * N * BT + i * T
        run_max = tl.full([BLOCK_T], float("-inf"), tl.float32)
        run_sum = tl.zeros([BLOCK_T], dtype=tl.float32)
        for n0 in range(0, N, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_ok = n < N
            m2 = n_ok[:, None] & w_ok[None, :]
            s = tl.load(s_ptr + base + n[:, None] * BT + w[None, :], mask=m2, other=float("-inf")).to(tl.float32)
            s = tl.where(n_ok[:, None], s, 0.0)  # keep padded region rows finite
            s = tl.where(w_ok[None, :], s, float("-inf"))
            p = tl.exp(s - tl.max(s, axis=1)[:, None])
            alpha = p / tl.sum(p, axis=1)[:, None]
            z = tl.where(n_ok[:, None], gamma1 * alpha, float("-inf"))
            new_max = tl.maximum(run_max, tl.max(z, axis=0))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(z - new_max[None, :]), axis=0)
            run_max = new_max
        lse = run_max + tl.log(run_sum)
        lse = tl.where(w_ok, lse, 0.0)
        for n0 in range(0, N, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_ok = n < N
            m2 = n_ok[:, None] & w_ok[None, :]
            offs = base + n[:, None] * BT + w[None, :]
            s = tl.load(s_ptr + offs, mask=m2, other=float("-inf")).to(tl.float32)
            s = tl.where(n_ok[:, None], s, 0.0)
            s = tl.where(w_ok[None, :], s, float("-inf"))
            p = tl.exp(s - tl.max(s, axis=1)[:, None])
            alpha = p / tl.sum(p, axis=1)[:, None]
            beta = tl.where(w_ok[None, :], tl.exp(gamma1 * alpha - lse[None, :]), 0.0)
            store = n_ok[:, None] & (w[None, :] < T)
            if WRITE_ALPHA:
                tl.store(alpha_ptr + offs, alpha, mask=store)
            tl.store(bt_ptr + offs, beta, mask=store)

    @triton.jit
    def _cosine_kernel(c_ptr, e_ptr, len_ptr, gr_ptr, r_ptr, g_ptr, cross_coef_ptr, self_coef_ptr, c_dot_gc_ptr,
                       B, T, D, gamma2, eps,
                       BACKWARD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        # One program per pair: cosines of the T context rows with the words, R = lse(gamma2*cos);
        # in the backward also dR/dC (into g), the coefficients of dR/dE and sum_d dC*C.
        pid = tl.program_id(0)
        j, i, w, w_ok = _pair_words(pid, B, T, len_ptr, BLOCK_T)
        dot = tl.zeros([BLOCK_T], dtype=tl.float32)
        aa = tl.zeros([BLOCK_T], dtype=tl.float32)
        bb = tl.zeros([BLOCK_T], dtype=tl.float32)
        c_base = (j.to(tl.int64) * B + i) * T * D
        e_base = i.to(tl.int64) * T * D
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            m2 = w_ok[:, None] & (d[None, :] < D)
            c = tl.load(c_ptr + c_base + w[:, None] * D + d[None, :], mask=m2, other=0.0)
            e = tl.load(e_ptr + e_base + w[:, None] * D + d[None, :], mask=m2, other=0.0)
            dot += tl.sum(c * e, axis=1)
            aa += tl.sum(e * e, axis=1)
            bb += tl.sum(c * c, axis=1)
        ab = tl.sqrt(aa) * tl.sqrt(bb)
        den = tl.maximum(ab, eps)
        cos = dot / den
        x = tl.where(w_ok, gamma2 * cos, float("-inf"))
        xmax = tl.max(x, axis=0)
        r = xmax + tl.log(tl.sum(tl.exp(x - xmax), axis=0))
        if not BACKWARD:
            tl.store(r_ptr + pid, r)
        else:
            gr = tl.load(gr_ptr + pid).to(tl.float32)
            gcos = tl.where(w_ok, gr * gamma2 * tl.exp(x - r), 0.0)
            # the clamp passes no gradient to |e||c| when it is active
            free = ab >= eps
            kc = tl.where(free, cos / tl.where(free, bb, 1.0), 0.0)
            ke = tl.where(free, cos / tl.where(free, aa, 1.0), 0.0)
            cross_coef = gcos / den
            self_coef = -gcos * ke
            c_dot_gc = tl.zeros([BLOCK_T], dtype=tl.float32)
            for d0 in range(0, D, BLOCK_D):
                d = d0 + tl.arange(0, BLOCK_D)
                m2 = w_ok[:, None] & (d[None, :] < D)
                c = tl.load(c_ptr + c_base + w[:, None] * D + d[None, :], mask=m2, other=0.0)
                e = tl.load(e_ptr + e_base + w[:, None] * D + d[None, :], mask=m2, other=0.0)
                gc = cross_coef[:, None] * e - (gcos * kc)[:, None] * c
                c_dot_gc += tl.sum(gc * c, axis=1)
                tl.store(g_ptr + c_base + w[:, None] * D + d[None, :], gc,
                         mask=(w[:, None] < T) & (d[None, :] < D))
            t_ok = w < T
            tl.store(cross_coef_ptr + pid * T + w, cross_coef, mask=t_ok)
            tl.store(self_coef_ptr + pid * T + w, self_coef, mask=t_ok)
            tl.store(c_dot_gc_ptr + pid * T + w, c_dot_gc, mask=t_ok)

    @triton.jit
    def _softmax_backward_kernel(alpha_ptr, bt_ptr, h_ptr, g_ptr, e_ptr, len_ptr, cross_coef_ptr, c_dot_gc_ptr,
                                 B, T, N, D, BT, gamma1,
                                 BLOCK_N: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr):
        # One program per pair: both softmax backwards.  h holds dL/dBeta on entry and
        # H = dS + cross_coef * Beta on exit; g (dR/dC) becomes dR/dC - cross_coef * e.
        # (Then the dE GEMM H^T V also yields the cross_coef * c term of dR/de, c = Beta^T V,
        # and the E H^T term of dV restores the cross_coef * e taken out of g.)
        pid = tl.program_id(0)
        j, i, w, w_ok = _pair_words(pid, B, T, len_ptr, BLOCK_T)
        cross_coef = tl.load(cross_coef_ptr + pid * T + w, mask=w_ok, other=0.0)
        c_dot_gc = tl.load(c_dot_gc_ptr + pid * T + w, mask=w_ok, other=0.0)
        base = j.to(tl.int64) * N * BT + i * T
        for n0 in range(0, N, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            m2 = (n[:, None] < N) & w_ok[None, :]
            offs = base + n[:, None] * BT + w[None, :]
            a = tl.load(alpha_ptr + offs, mask=m2, other=0.0)
            bt = tl.load(bt_ptr + offs, mask=m2, other=0.0)
            gb = tl.load(h_ptr + offs, mask=m2, other=0.0)
            ga = gamma1 * bt * (gb - c_dot_gc[None, :])
            t = a * ga
            gs = t - a * tl.sum(t, axis=1)[:, None]
            h = tl.where(m2, gs + cross_coef[None, :] * bt, 0.0)
            tl.store(h_ptr + offs, h, mask=(n[:, None] < N) & (w[None, :] < T))
        g_base = (j.to(tl.int64) * B + i) * T * D
        e_base = i.to(tl.int64) * T * D
        for d0 in range(0, D, BLOCK_D):
            d = d0 + tl.arange(0, BLOCK_D)
            m2 = w_ok[:, None] & (d[None, :] < D)
            offs = w[:, None] * D + d[None, :]
            g = tl.load(g_ptr + g_base + offs, mask=m2, other=0.0)
            e = tl.load(e_ptr + e_base + offs, mask=m2, other=0.0)
            tl.store(g_ptr + g_base + offs, g - cross_coef[:, None] * e, mask=m2)


def _triton_blocks(T: int, N: int, D: int):
    block_t = triton.next_power_of_2(T)
    block_n = max(1, min(triton.next_power_of_2(N), 4096 // block_t))
    block_d = max(1, min(triton.next_power_of_2(D), 4096 // block_t))
    return block_t, block_n, block_d


def _prepare(words, lengths, regions):
    """Accumulate-dtype copies: E2 (D, B*T), E rows (B, T, D), V (M, D, N); padding zeroed."""
    acc = _checks.accumulate_dtype(words.dtype)
    B, D, T = words.shape
    M = regions.shape[0]
    e = words.to(acc).masked_fill(~_word_mask(lengths, T)[:, None, :], 0.0)
    e2 = e.permute(1, 0, 2).reshape(D, B * T)
    erows = e.transpose(1, 2).contiguous()
    v = regions.to(acc).reshape(M, D, -1).contiguous()
    return e2, erows, v


if triton is not None:

    def _triton_forward(e2, erows, v, lengths, gamma1, gamma2, save):
        """scores, and with ``save`` alpha, beta (M, N, B*T) and the contexts C (M, B*T, D)."""
        M, D, N = v.shape
        B, T, _ = erows.shape
        BT = B * T
        block_t, block_n, block_d = _triton_blocks(T, N, D)
        chunk = M if save else _chunk_images(M, N, BT)  # what is saved is kept whole anyway
        scores, alphas, betas, contexts = [], [], [], []
        for j0 in range(0, M, chunk):
            vt = v[j0:j0 + chunk].transpose(1, 2)
            mc = vt.shape[0]
            s = torch.matmul(vt, e2)                      # (mc, N, BT); alpha is written over it
            bt = torch.empty_like(s) if save else s
            torch.library.wrap_triton(_attention_kernel)[(mc * B,)](
                s, s, bt, lengths, B, T, N, BT, gamma1,
                WRITE_ALPHA=save, BLOCK_N=block_n, BLOCK_T=block_t)
            c = torch.bmm(bt.transpose(1, 2), vt)         # (mc, BT, D)
            r = torch.empty((mc, B), device=v.device, dtype=v.dtype)
            torch.library.wrap_triton(_cosine_kernel)[(mc * B,)](
                c, erows, lengths, r, r, c, r, r, r, B, T, D, gamma2, COS_EPS,
                BACKWARD=False, BLOCK_T=block_t, BLOCK_D=block_d)
            scores.append(r)
            if save:
                alphas.append(s)
                betas.append(bt)
                contexts.append(c)
        if not save:
            empty = v.new_empty((0,))
            return torch.cat(scores, 0), empty, empty.clone(), empty.clone()
        return scores[0], alphas[0], betas[0], contexts[0]

    def _triton_backward(e2, erows, v, lengths, gamma1, gamma2, grad, alpha, beta, context):
        """(dE rows (B*T, D), dV (M, D, N)) from the saved attention and contexts."""
        M, D, N = v.shape
        B, T, _ = erows.shape
        BT = B * T
        block_t, block_n, block_d = _triton_blocks(T, N, D)
        chunk = _chunk_images(M, N, BT)
        g_e = torch.zeros((BT, D), device=v.device, dtype=v.dtype)
        self_coef_sum = torch.zeros((B, T), device=v.device, dtype=v.dtype)
        g_v = []
        for j0 in range(0, M, chunk):
            vt = v[j0:j0 + chunk].transpose(1, 2)
            mc = vt.shape[0]
            a, bt, c = alpha[j0:j0 + mc], beta[j0:j0 + mc], context[j0:j0 + mc]
            gr = grad[j0:j0 + mc].contiguous()
            g = torch.empty_like(c)
            cross_coef = torch.empty((mc, B, T), device=v.device, dtype=v.dtype)
            self_coef = torch.empty_like(cross_coef)
            c_dot_gc = torch.empty_like(cross_coef)
            torch.library.wrap_triton(_cosine_kernel)[(mc * B,)](
                c, erows, lengths, gr, gr, g, cross_coef, self_coef, c_dot_gc, B, T, D, gamma2, COS_EPS,
                BACKWARD=True, BLOCK_T=block_t, BLOCK_D=block_d)
            h = torch.bmm(vt, g.transpose(1, 2))           # dL/dbeta (mc, N, BT)
            torch.library.wrap_triton(_softmax_backward_kernel)[(mc * B,)](
                a, bt, h, g, erows, lengths, cross_coef, c_dot_gc, B, T, N, D, BT, gamma1,
                BLOCK_N=block_n, BLOCK_T=block_t, BLOCK_D=block_d)
            g_v.append(torch.bmm(g.transpose(1, 2), bt.transpose(1, 2)) + torch.matmul(e2, h.transpose(1, 2)))
            g_e += h.reshape(mc * N, BT).t() @ vt.reshape(mc * N, D)
            self_coef_sum += self_coef.sum(0)
        return g_e + self_coef_sum.reshape(BT, 1) * erows.reshape(BT, D), torch.cat(g_v, 0)

    @torch.library.triton_op("fastt2i::damsm_word_fwd_triton", mutates_args=())
    def _damsm_word_fwd_triton(words: torch.Tensor, lengths: torch.Tensor, regions: torch.Tensor,
                               gamma1: float, gamma2: float, save: bool
                               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        e2, erows, v = _prepare(words, lengths, regions)
        return _triton_forward(e2, erows, v, lengths.contiguous(), gamma1, gamma2, save)

    @torch.library.triton_op("fastt2i::damsm_word_bwd_triton", mutates_args=())
    def _damsm_word_bwd_triton(grad_scores: torch.Tensor, words: torch.Tensor, lengths: torch.Tensor,
                               regions: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor,
                               context: torch.Tensor, gamma1: float, gamma2: float
                               ) -> tuple[torch.Tensor, torch.Tensor]:
        e2, erows, v = _prepare(words, lengths, regions)
        B, D, T = words.shape
        g_e, g_v = _triton_backward(e2, erows, v, lengths.contiguous(), gamma1, gamma2,
                                    grad_scores.to(v.dtype), alpha, beta, context)
        return g_e.reshape(B, T, D).transpose(1, 2).contiguous(), g_v.reshape(regions.shape)


# ----------------------------------------------------------------------------- autograd + dispatch

class _DAMSMWordFunction(torch.autograd.Function):
    """One autograd for every fused backend.  Saves the inputs, the two attentions and the
    contexts (the GEMM outputs, so the backward runs 4 GEMMs instead of 6); recomputes the
    cosines and everything elementwise."""

    @staticmethod
    def forward(ctx, words, lengths, regions, gamma1, gamma2, backend, save):
        forward, _ = DISPATCH.fused_ops(backend)
        scores, alpha, beta, context = forward(words, lengths, regions, gamma1, gamma2, save)
        ctx.save_for_backward(words, lengths, regions, alpha, beta, context)
        ctx.gammas, ctx.backend = (gamma1, gamma2), backend
        return scores.to(words.dtype)

    @staticmethod
    def backward(ctx, grad_scores):
        words, lengths, regions, alpha, beta, context = ctx.saved_tensors
        _, backward = DISPATCH.fused_ops(ctx.backend)
        acc = _checks.accumulate_dtype(words.dtype)
        g_words, g_regions = backward(grad_scores.to(acc).contiguous(), words, lengths, regions,
                                      alpha, beta, context, *ctx.gammas)
        return g_words.to(words.dtype), None, g_regions.to(regions.dtype), None, None, None, None


def _cuda_unsupported_reasons(words, lengths, regions):
    T = words.shape[2]
    return [] if T <= MAX_WORDS_CUDA else [f"T={T} > {MAX_WORDS_CUDA} words"]


def _triton_unsupported_reasons(words, lengths, regions):
    return [f"T={words.shape[2]} > 1024 words"] if words.shape[2] > 1024 else []


DISPATCH = _backend.OpDispatch("damsm_word_scores", op="damsm_word")
DISPATCH.register_backends(cuda=_cuda_unsupported_reasons, triton=_triton_unsupported_reasons)


_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8)


def _validate(words, lengths, regions, gamma1, gamma2):
    _checks.tensor("words", words, ndim=3)
    _checks.tensor("regions", regions, ndim=4)
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths: expected an integer torch.Tensor of shape (B,), got {type(lengths).__name__}")
    if lengths.dtype not in _INT_DTYPES:
        raise TypeError(f"lengths: expected an integer dtype {_INT_DTYPES}, got {lengths.dtype}")
    _checks.same_device(words=words, lengths=lengths, regions=regions)
    B, D, T = words.shape
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"lengths: expected shape (B={B},) to match words {tuple(words.shape)}, "
                         f"got {tuple(lengths.shape)}")
    if regions.shape[1] != D:
        raise ValueError(f"regions: expected D={D} channels like words {tuple(words.shape)}, "
                         f"got shape {tuple(regions.shape)}")
    if B == 0 or T == 0 or regions.shape[0] == 0 or regions.shape[2] * regions.shape[3] == 0:
        raise ValueError(f"words/regions: expected non-empty (B, D, T) and (M, D, H, W), got "
                         f"{tuple(words.shape)} and {tuple(regions.shape)}")
    if not torch.compiler.is_compiling():  # a value check would break the graph
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > T:
            raise ValueError(f"lengths: expected values in [1, T={T}], got min {lo}, max {hi}")
    return _checks.real_number("gamma1", gamma1), _checks.real_number("gamma2", gamma2)


def damsm_attention(words, lengths, regions, gamma1: float = 4.0):
    """Region attention beta of each matching pair (i, i) as (B, T, H, W), zero beyond len_i.

    Computed for the pictures only (not differentiable); images i >= M give zeros.
    """
    with torch.no_grad():
        n = min(words.shape[0], regions.shape[0])
        B, D, T = words.shape
        H, W = regions.shape[2:]
        acc = _checks.accumulate_dtype(torch.promote_types(words.dtype, regions.dtype))
        mask = _word_mask(lengths[:n], T)
        e = words[:n].to(acc).masked_fill(~mask[:, None, :], 0.0)
        v = regions[:n].to(acc).reshape(n, D, H * W)
        s = torch.bmm(v.transpose(1, 2), e).masked_fill(~mask[:, None, :], float("-inf"))
        beta = torch.softmax(gamma1 * torch.softmax(s, dim=2), dim=1)     # (n, N, T)
        attn = beta.transpose(1, 2) * mask[:, :, None]
        out = attn.new_zeros(B, T, H * W)
        out[:n] = attn
        return out.reshape(B, T, H, W).to(torch.promote_types(words.dtype, regions.dtype))


def damsm_word_scores(words: torch.Tensor, lengths: torch.Tensor, regions: torch.Tensor,
                      gamma1: float = 4.0, gamma2: float = 5.0, return_attention: bool = False):
    """DAMSM word-level matching score of every caption against every image.

    ``scores[j, i] = log sum_{w < lengths[i]} exp(gamma2 * cos(e_{i,w}, c_{j,i,w}))`` with
    ``c`` the region context of word w from AttnGAN's two-stage attention (softmax over
    the words, then softmax over the regions of gamma1 times it) and cos clamped at 1e-8.

    Args:
        words: (B, D, T) word features of B captions (positions >= lengths[i] are ignored).
        lengths: (B,) integer tensor, 1 <= lengths[i] <= T, on words' device.
        regions: (M, D, H, W) region features of M images (DAMSM: 17 x 17).
        gamma1, gamma2: AttnGAN's GAMMA1 (4) and GAMMA2 (5).
        return_attention: also return the attention of each matching pair (i, i) as
            (B, T, H, W), zero beyond each caption's length (zeros for i >= M; for pictures,
            not differentiable).

    Returns:
        scores (M, B) in the promoted dtype of words and regions (float32/float16/bfloat16,
        float64 on cpu/cuda/reference); arithmetic is float32 for half inputs.
        Differentiable in words and regions.

    Memory: when a gradient is needed the fused backends keep, for the backward, the two
    attentions (M, H*W, B*T) and the contexts (M, B*T, D) in float32 (at most 132 MiB at
    DAMSM pretraining's B = M = 48, T = 18, 17 x 17; the official loop keeps about 840 MiB);
    without gradients, chunks of images bounded to 64 MiB per intermediate.
    ``lengths`` is checked on the host (one device sync) except under ``torch.compile``;
    the cuda backend reads them on the host again to pack the words.
    """
    g1, g2 = _validate(words, lengths, regions, gamma1, gamma2)
    dtype = torch.promote_types(words.dtype, regions.dtype)
    words, regions = words.to(dtype), regions.to(dtype)
    backend = DISPATCH.select(words.device, words, lengths, regions)
    if backend == "reference":
        scores = damsm_word_scores_reference(words, lengths, regions, g1, g2)
    else:
        save = torch.is_grad_enabled() and (words.requires_grad or regions.requires_grad)
        scores = _DAMSMWordFunction.apply(words.contiguous(), lengths.to(torch.int64).contiguous(),
                                          regions.contiguous(), g1, g2, backend, save)
    if return_attention:
        return scores, damsm_attention(words, lengths, regions, g1)
    return scores
