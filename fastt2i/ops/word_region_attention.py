"""Word-region attention: every image region attends over the caption's words.

AttnGAN's ``GlobalAttentionGeneral`` (also DR-GAN's WAM and the word half of
MirrorGAN's GLAM), after the 1x1 ``conv_context`` projection of the words::

    s[b, n, t] = <regions[b, :, n], words[b, :, t]>                  (N = H*W regions, T words)
    a[b, n, :] = softmax over the unmasked t of s[b, n, :]
    context[b, :, n] = sum_t a[b, n, t] * words[b, :, t]

Fused like flash attention: the forward computes scores, masked softmax and the
weighted sum per tile of regions without writing the (B, N, T) scores, and saves
only the row log-sum-exp ``lse`` (B, N); the backward recomputes the softmax from
it (``dP = dO . words``, ``dS = P * (dP - rowsum(P * dP))``, ``dregions = dS . words``,
``dwords = regions . dS + dO . P``).  The whole score row of a region (T <= 64) is
held at once, so ``rowsum(P * dP)`` comes from the row itself and the context
output need not be saved.

Here: the reference (the specification), the Triton kernels, the schema of the
compiled kernels (``csrc/cpu/word_region_attention.cpp``,
``csrc/cuda/word_region_attention*.c*``), one autograd for every fused backend,
and the public function.

Conventions shared by every backend:
- ``mask`` is bool, True on padding words, either (B, T) (each caption's own mask)
  or (B, N, T) (one mask per region: how ``official_mask`` in
  :class:`fastt2i.nn.WordRegionAttention` reproduces the official misalignment).
- A region whose words are all padding gets ``lse = +inf``: its probabilities
  ``exp(s - lse)`` are then exactly 0, so its context, attention and gradients are 0.
"""
from __future__ import annotations

import torch

from . import _backend, _checks
from ._library import define
from ._triton import num_programs_target, tl, triton

MAX_WORDS = 64  # the fused kernels keep a region's whole score row in registers


# ----------------------------------------------------------------------------- reference

def _region_mask(mask):
    """(B, N or 1, T) view of a (B, T) or (B, N, T) padding mask."""
    return mask[:, None, :] if mask.dim() == 2 else mask


def word_region_attention_reference(regions, words, mask=None, return_attention: bool = False):
    """Plain PyTorch, as AttnGAN's GlobalAttentionGeneral after ``conv_context``.

    Differences from the official code, both deliberate: each caption's own mask is
    applied (pass a (B, N, T) mask to reproduce the official misalignment), and a
    region whose words are all padding gets zeros instead of NaN.
    """
    B, C, H, W = regions.shape
    T, N = words.shape[2], H * W
    acc = _checks.accumulate_dtype(regions.dtype)
    target = regions.reshape(B, C, N).to(acc)           # (B, idf, queryL)
    source = words.to(acc)                              # (B, idf, sourceL)
    attn = torch.bmm(target.transpose(1, 2), source)    # (B, queryL, sourceL) scores
    if mask is not None:
        pad = _region_mask(mask)
        has_word = ~pad.all(dim=-1, keepdim=True)
        # A row with no word would be softmax(-inf, ...) = NaN: give it finite scores, then zero it.
        attn = attn.masked_fill(pad, float("-inf")).masked_fill(~has_word, 0.0)
        attn = torch.softmax(attn, dim=-1) * has_word  # AttnGAN Eq. (2)
    else:
        attn = torch.softmax(attn, dim=-1)
    context = torch.bmm(source, attn.transpose(1, 2))   # (B, idf, queryL)
    context = context.reshape(B, C, H, W).to(regions.dtype)
    if not return_attention:
        return context
    return context, attn.transpose(1, 2).reshape(B, T, H, W).to(regions.dtype)


def official_region_mask(mask: torch.Tensor, num_regions: int) -> torch.Tensor:
    """The per-region mask the official code applies: ``mask.repeat(queryL, 1)`` against
    scores laid out as (B*queryL, T), so region n of caption b gets the mask of caption
    ``(b*queryL + n) % B``.  Returns (B, N, T) bool."""
    B, T = mask.shape
    return mask.to(torch.bool).repeat(num_regions, 1).reshape(B, num_regions, T)


# ----------------------------------------------------------------------------- compiled kernels (csrc/)

define(
    "word_region_attention_fwd(Tensor regions, Tensor words, Tensor? mask, bool return_attention)"
    " -> (Tensor, Tensor, Tensor)"
)
define(
    "word_region_attention_bwd(Tensor grad_context, Tensor? grad_attention, Tensor regions, Tensor words,"
    " Tensor? mask, Tensor lse) -> (Tensor, Tensor)"
)


def _attention_shape(regions, words, return_attention):
    B, _, H, W = regions.shape
    return (B, words.shape[2], H, W) if return_attention else (0,)


def _fake_forward(regions, words, mask, return_attention):
    fmt = _checks.layout_of(regions)
    B, C, H, W = regions.shape
    acc = _checks.accumulate_dtype(regions.dtype)
    context = torch.empty_like(regions, memory_format=fmt)
    lse = regions.new_empty((B, H * W), dtype=acc)
    shape = _attention_shape(regions, words, return_attention)
    if return_attention:
        attention = torch.empty(shape, dtype=regions.dtype, device=regions.device, memory_format=fmt)
    else:
        attention = regions.new_empty(shape)
    return context, lse, attention


def _fake_backward(grad_context, grad_attention, regions, words, mask, lse):
    return torch.empty_like(regions, memory_format=_checks.layout_of(regions)), torch.empty_like(words)


torch.library.register_fake("fastt2i::word_region_attention_fwd")(_fake_forward)
torch.library.register_fake("fastt2i::word_region_attention_bwd")(_fake_backward)


# ----------------------------------------------------------------------------- Triton kernels

# Names: the regions are the attention's queries and the words its keys and values; the
# context (one vector per region) is its output.  ``reg``/``wrd``/``ctx`` are tiles of them,
# ``d_*`` their gradients, ``s`` the region-word scores, ``p`` the softmax over the words.
if triton is not None:

    @triton.jit
    def _load_regions(ptr, b, n, c, N, C, stride_b, stride_c, stride_n):
        """(BLOCK_N, BLOCK_C) tile of a (B, C, N) tensor in either layout, as float32."""
        offs = b.to(tl.int64) * stride_b + c[None, :] * stride_c + n[:, None].to(tl.int64) * stride_n
        return tl.load(ptr + offs, mask=(n[:, None] < N) & (c[None, :] < C), other=0.0).to(tl.float32)

    @triton.jit
    def _load_words(ptr, b, c, t, C, T):
        """(BLOCK_C, BLOCK_T) tile of the contiguous (B, C, T) words, as float32."""
        return tl.load(ptr + (b * C + c[:, None]) * T + t[None, :],
                       mask=(c[:, None] < C) & (t[None, :] < T), other=0.0).to(tl.float32)

    @triton.jit
    def _valid_words(mask_ptr, b, n, t, N, T, stride_mb, stride_mn, HAS_MASK: tl.constexpr):
        """(BLOCK_N, BLOCK_T) True where word t is a real word for region n."""
        valid = (t[None, :] < T) & (n[:, None] >= 0)
        if HAS_MASK:
            pad = tl.load(mask_ptr + b.to(tl.int64) * stride_mb + n[:, None].to(tl.int64) * stride_mn + t[None, :],
                          mask=(n[:, None] < N) & (t[None, :] < T), other=1)
            valid = valid & (pad == 0)
        return valid

    @triton.jit
    def _wra_fwd_kernel(
        regions_ptr, words_ptr, mask_ptr, context_ptr, lse_ptr, attention_ptr, C, N, T,
        stride_rb, stride_rc, stride_rn, stride_mb, stride_mn, stride_ab, stride_at, stride_an,
        HAS_MASK: tl.constexpr, RETURN_ATTN: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr,
        BLOCK_T: tl.constexpr, PRECISION: tl.constexpr,
    ):
        # One program: BLOCK_N regions of one sample x all T words; C in chunks of BLOCK_C.
        pid_n = tl.program_id(0)
        b = tl.program_id(1)
        n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        t = tl.arange(0, BLOCK_T)
        s = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            reg = _load_regions(regions_ptr, b, n, c, N, C, stride_rb, stride_rc, stride_rn)
            wrd = _load_words(words_ptr, b, c, t, C, T)
            s += tl.dot(reg, wrd, input_precision=PRECISION)
        valid = _valid_words(mask_ptr, b, n, t, N, T, stride_mb, stride_mn, HAS_MASK)
        s = tl.where(valid, s, float("-inf"))
        m = tl.max(s, axis=1)
        m = tl.where(m == float("-inf"), 0.0, m)  # a row of padding only: keep exp() finite
        e = tl.where(valid, tl.exp(s - m[:, None]), 0.0)
        l = tl.sum(e, axis=1)
        has_word = l > 0
        l_safe = tl.where(has_word, l, 1.0)
        p = e * tl.where(has_word, 1.0 / l_safe, 0.0)[:, None]
        lse = tl.where(has_word, m + tl.log(l_safe), float("inf"))
        tl.store(lse_ptr + b.to(tl.int64) * N + n, lse, mask=n < N)
        if RETURN_ATTN:
            attention_offs = (b.to(tl.int64) * stride_ab + t[None, :] * stride_at
                              + n[:, None].to(tl.int64) * stride_an)
            tl.store(attention_ptr + attention_offs, p.to(attention_ptr.dtype.element_ty),
                     mask=(n[:, None] < N) & (t[None, :] < T))
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            wrd = _load_words(words_ptr, b, c, t, C, T)
            ctx = tl.dot(p, tl.trans(wrd), input_precision=PRECISION)  # (BLOCK_N, BLOCK_C)
            offs = b.to(tl.int64) * stride_rb + c[None, :] * stride_rc + n[:, None].to(tl.int64) * stride_rn
            tl.store(context_ptr + offs, ctx.to(context_ptr.dtype.element_ty),
                     mask=(n[:, None] < N) & (c[None, :] < C))

    @triton.jit
    def _wra_bwd_kernel(
        regions_ptr, words_ptr, mask_ptr, lse_ptr, grad_context_ptr, grad_attention_ptr, grad_regions_ptr,
        grad_words_part_ptr, C, N, T, tiles_per_program,
        stride_rb, stride_rc, stride_rn, stride_mb, stride_mn, stride_ab, stride_at, stride_an,
        HAS_MASK: tl.constexpr, HAS_GRAD_ATTN: tl.constexpr, ONE_CHUNK: tl.constexpr, BLOCK_N: tl.constexpr,
        BLOCK_C: tl.constexpr, BLOCK_T: tl.constexpr, PRECISION: tl.constexpr,
    ):
        # One program: tiles_per_program tiles of BLOCK_N regions of one sample.  Pass 1
        # recomputes the scores and dP = dO . words; pass 2 writes dregions and the partial
        # dwords, which are summed over programs afterwards (deterministic, no atomics).  When
        # all C channels are one chunk, the program's partial dwords stay in registers across
        # its tiles; otherwise each program takes a single tile.
        pid_s = tl.program_id(0)
        b = tl.program_id(1)
        t = tl.arange(0, BLOCK_T)
        d_wrd_acc = tl.zeros([BLOCK_C, BLOCK_T], dtype=tl.float32)
        for it in range(0, tiles_per_program):
            n = (pid_s * tiles_per_program + it) * BLOCK_N + tl.arange(0, BLOCK_N)
            s = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
            dp = tl.zeros([BLOCK_N, BLOCK_T], dtype=tl.float32)
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                reg = _load_regions(regions_ptr, b, n, c, N, C, stride_rb, stride_rc, stride_rn)
                d_ctx = _load_regions(grad_context_ptr, b, n, c, N, C, stride_rb, stride_rc, stride_rn)
                wrd = _load_words(words_ptr, b, c, t, C, T)
                s += tl.dot(reg, wrd, input_precision=PRECISION)
                dp += tl.dot(d_ctx, wrd, input_precision=PRECISION)
            valid = _valid_words(mask_ptr, b, n, t, N, T, stride_mb, stride_mn, HAS_MASK)
            lse = tl.load(lse_ptr + b.to(tl.int64) * N + n, mask=n < N, other=float("inf"))
            # lse = +inf (padding-only row, or n >= N) gives p = 0 and so zero gradients.
            p = tl.exp(tl.where(valid, s - lse[:, None], float("-inf")))
            if HAS_GRAD_ATTN:
                attention_offs = (b.to(tl.int64) * stride_ab + t[None, :] * stride_at
                                  + n[:, None].to(tl.int64) * stride_an)
                dp += tl.load(grad_attention_ptr + attention_offs, mask=(n[:, None] < N) & (t[None, :] < T),
                              other=0.0).to(tl.float32)
            delta = tl.sum(p * dp, axis=1)
            ds = p * (dp - delta[:, None])
            for c0 in range(0, C, BLOCK_C):
                c = c0 + tl.arange(0, BLOCK_C)
                reg = _load_regions(regions_ptr, b, n, c, N, C, stride_rb, stride_rc, stride_rn)
                d_ctx = _load_regions(grad_context_ptr, b, n, c, N, C, stride_rb, stride_rc, stride_rn)
                wrd = _load_words(words_ptr, b, c, t, C, T)
                d_reg = tl.dot(ds, tl.trans(wrd), input_precision=PRECISION)  # (BLOCK_N, BLOCK_C)
                offs = b.to(tl.int64) * stride_rb + c[None, :] * stride_rc + n[:, None].to(tl.int64) * stride_rn
                tl.store(grad_regions_ptr + offs, d_reg.to(grad_regions_ptr.dtype.element_ty),
                         mask=(n[:, None] < N) & (c[None, :] < C))
                d_wrd = tl.dot(tl.trans(reg), ds, input_precision=PRECISION)
                d_wrd += tl.dot(tl.trans(d_ctx), p, input_precision=PRECISION)  # (BLOCK_C, BLOCK_T)
                if ONE_CHUNK:
                    d_wrd_acc += d_wrd
                else:
                    part = ((b.to(tl.int64) * tl.num_programs(0) + pid_s) * C + c[:, None]) * T + t[None, :]
                    tl.store(grad_words_part_ptr + part, d_wrd, mask=(c[:, None] < C) & (t[None, :] < T))
        if ONE_CHUNK:
            c = tl.arange(0, BLOCK_C)
            part = ((b.to(tl.int64) * tl.num_programs(0) + pid_s) * C + c[:, None]) * T + t[None, :]
            tl.store(grad_words_part_ptr + part, d_wrd_acc, mask=(c[:, None] < C) & (t[None, :] < T))


def _triton_blocks(C: int, T: int) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_C, BLOCK_T); tl.dot needs every dim >= 16."""
    block_t = max(16, triton.next_power_of_2(T))
    block_c = min(64, max(16, triton.next_power_of_2(C)))
    block_n = 64 if block_t <= 32 else 32
    return block_n, block_c, block_t


def _precision(dtype: torch.dtype) -> str:
    # float32 inputs keep full float32 products (tf32 would miss the 1e-5 bound); half
    # inputs are widened to float32 and may use tf32, which is finer than their own mantissa.
    return "ieee" if dtype == torch.float32 else "tf32"


def _mask_args(mask):
    """(mask tensor as uint8 or None, stride over samples, stride over regions)."""
    if mask is None:
        return None, 0, 0
    m = mask.view(torch.uint8)
    if m.dim() == 2:
        return m, m.stride(0), 0
    return m, m.stride(0), m.stride(1)


def _dense_strides(regions, T):
    """(b, c, n) strides of regions and (b, t, n) strides of the attention in the dense NCHW / NHWC
    layout.  Tensors are made contiguous in that format first; their own strides may differ only
    on size-1 dims, which never move an offset (so the flat n = h*W + w is safe)."""
    B, C, H, W = regions.shape
    N = H * W
    if _checks.layout_of(regions) == torch.channels_last:
        return (C * N, 1, C), (T * N, 1, T)
    return (C * N, N, 1), (T * N, N, 1)


if triton is not None:

    @torch.library.triton_op("fastt2i::word_region_attention_fwd_triton", mutates_args=())
    def _wra_fwd_triton(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None,
                        return_attention: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        regions = regions.contiguous(memory_format=_checks.layout_of(regions))
        words = words.contiguous()
        mask = None if mask is None else mask.contiguous()
        context, lse, attention = _fake_forward(regions, words, mask, return_attention)
        B, C, H, W = regions.shape
        T, N = words.shape[2], H * W
        block_n, block_c, block_t = _triton_blocks(C, T)
        m, smb, smn = _mask_args(mask)
        (reg_sb, reg_sc, reg_sn), (att_sb, att_st, att_sn) = _dense_strides(regions, T)
        grid = (triton.cdiv(N, block_n), B)
        torch.library.wrap_triton(_wra_fwd_kernel)[grid](
            regions, words, m, context, lse, attention if return_attention else None, C, N, T,
            reg_sb, reg_sc, reg_sn, smb, smn, att_sb, att_st, att_sn,
            HAS_MASK=mask is not None, RETURN_ATTN=return_attention, BLOCK_N=block_n, BLOCK_C=block_c,
            BLOCK_T=block_t, PRECISION=_precision(regions.dtype),
        )
        return context, lse, attention

    @torch.library.triton_op("fastt2i::word_region_attention_bwd_triton", mutates_args=())
    def _wra_bwd_triton(grad_context: torch.Tensor, grad_attention: torch.Tensor | None, regions: torch.Tensor,
                        words: torch.Tensor, mask: torch.Tensor | None, lse: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        fmt = _checks.layout_of(regions)
        regions = regions.contiguous(memory_format=fmt)
        grad_context = grad_context.contiguous(memory_format=fmt)
        if grad_attention is not None:
            grad_attention = grad_attention.contiguous(memory_format=fmt)
        words, lse = words.contiguous(), lse.contiguous()
        mask = None if mask is None else mask.contiguous()
        B, C, H, W = regions.shape
        T, N = words.shape[2], H * W
        block_n, block_c, block_t = _triton_blocks(C, T)
        tiles = triton.cdiv(N, block_n)
        one_chunk = C <= block_c
        per_program = 1
        if one_chunk:  # fewer, longer programs: fewer partial dwords to write and sum
            per_program = max(1, min(32, tiles, B * tiles // num_programs_target(regions.device)))
        splits = triton.cdiv(tiles, per_program)
        m, smb, smn = _mask_args(mask)
        (reg_sb, reg_sc, reg_sn), (att_sb, att_st, att_sn) = _dense_strides(regions, T)
        grad_regions = torch.empty_like(regions, memory_format=fmt)
        grad_words_part = torch.empty((B, splits, C, T), device=regions.device, dtype=torch.float32)
        torch.library.wrap_triton(_wra_bwd_kernel)[(splits, B)](
            regions, words, m, lse, grad_context, grad_attention, grad_regions, grad_words_part, C, N, T, per_program,
            reg_sb, reg_sc, reg_sn, smb, smn, att_sb, att_st, att_sn,
            HAS_MASK=mask is not None, HAS_GRAD_ATTN=grad_attention is not None, ONE_CHUNK=one_chunk,
            BLOCK_N=block_n, BLOCK_C=block_c, BLOCK_T=block_t, PRECISION=_precision(regions.dtype),
        )
        return grad_regions, grad_words_part.sum(1).to(words.dtype)


# ----------------------------------------------------------------------------- autograd + dispatch

class _WordRegionAttentionFunction(torch.autograd.Function):
    """One autograd for every fused backend: saves regions, words, the mask and the
    (B, N) row log-sum-exp; the backward recomputes the softmax."""

    @staticmethod
    def forward(ctx, regions, words, mask, return_attention, backend):
        forward, _ = DISPATCH.fused_ops(backend)
        regions = regions.contiguous(memory_format=_checks.layout_of(regions))
        words = words.contiguous()
        context, lse, attention = forward(regions, words, mask, return_attention)
        ctx.save_for_backward(regions, words, mask, lse)
        ctx.backend, ctx.return_attention = backend, return_attention
        if return_attention:
            return context, attention
        return context

    @staticmethod
    def backward(ctx, grad_context, grad_attention=None):
        regions, words, mask, lse = ctx.saved_tensors
        _, backward = DISPATCH.fused_ops(ctx.backend)
        fmt = _checks.layout_of(regions)
        grad_context = grad_context.to(regions.dtype).contiguous(memory_format=fmt)
        if grad_attention is not None:
            grad_attention = grad_attention.to(regions.dtype).contiguous(memory_format=fmt)
        grad_regions, grad_words = backward(grad_context, grad_attention, regions, words, mask, lse)
        return grad_regions, grad_words, None, None, None


def _compiled_unsupported_reasons(regions, words, mask):
    why = []
    if words.shape[2] > MAX_WORDS:
        why.append(f"T={words.shape[2]} > {MAX_WORDS} words")
    if regions.numel() == 0 or words.numel() == 0:
        why.append("empty input")
    return why


DISPATCH = _backend.OpDispatch("word_region_attention", op="word_region_attention")
DISPATCH.register_backends(_compiled_unsupported_reasons)


def _validate(regions, words, mask, return_attention) -> None:
    _checks.tensor("regions", regions, ndim=4)
    _checks.tensor("words", words, ndim=3)
    if words.dtype != regions.dtype:
        raise TypeError(f"words: expected the dtype of regions ({regions.dtype}), got {words.dtype}")
    B, C, H, W = regions.shape
    if words.shape[0] != B or words.shape[1] != C:
        raise ValueError(
            f"words: expected shape (B={B}, C={C}, T) to match regions {tuple(regions.shape)}, "
            f"got {tuple(words.shape)}"
        )
    if words.shape[2] < 1:
        raise ValueError(f"words: expected at least one word (T >= 1), got shape {tuple(words.shape)}")
    if mask is not None:
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"mask: expected a bool torch.Tensor or None, got {type(mask).__name__}")
        if mask.dtype != torch.bool:
            raise TypeError(f"mask: expected dtype torch.bool (True on padding words), got {mask.dtype}")
        T, N = words.shape[2], H * W
        if tuple(mask.shape) not in ((B, T), (B, N, T)):
            raise ValueError(
                f"mask: expected shape (B={B}, T={T}) or (B={B}, N=H*W={N}, T={T}), got {tuple(mask.shape)}"
            )
    _checks.same_device(regions=regions, words=words, mask=mask)
    if not isinstance(return_attention, bool):
        raise TypeError(f"return_attention: expected a bool, got {type(return_attention).__name__}")


def word_region_attention(regions: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None = None,
                          return_attention: bool = False):
    """Every region of ``regions`` attends over the ``words`` (AttnGAN's word attention).

    ``context[b, :, n] = sum_t a[b, n, t] * words[b, :, t]`` with
    ``a[b, n, :] = softmax over the unmasked t of <regions[b, :, n], words[b, :, t]>``.

    Args:
        regions: (B, C, H, W) image features, the N = H*W queries; float32/float16/bfloat16
            (float64 on cpu/cuda/reference); contiguous or channels_last (other strides
            are copied to contiguous).
        words: (B, C, T) word features already projected to C, regions' dtype.  T <= 64
            for the fused backends (the reference takes any T).
        mask: None, or bool with True on padding words: (B, T) for each caption's own
            mask, or (B, N, T) for one mask per region (see ``official_region_mask``).
        return_attention: also return ``a`` as (B, T, H, W).

    Returns:
        context (B, C, H, W) in regions' dtype and memory format, and with
        ``return_attention`` the attention (B, T, H, W) (laid out like regions).  A region
        whose words are all padding gets zero context, zero attention and zero gradient.
        Arithmetic is float32 for half inputs.  Differentiable in regions and words (also
        through the returned attention); the fused backward recomputes the softmax from
        the saved (B, N) row log-sum-exp.
    """
    _validate(regions, words, mask, return_attention)
    backend = DISPATCH.select(regions.device, regions, words, mask)
    if backend == "reference":
        return word_region_attention_reference(regions, words, mask, return_attention)
    if mask is not None:
        mask = mask.contiguous()
    if torch.is_grad_enabled() and (regions.requires_grad or words.requires_grad):
        return _WordRegionAttentionFunction.apply(regions, words, mask, return_attention, backend)
    # inference: skip autograd (and the row statistics it would keep)
    context, _, attention = DISPATCH.fused_ops(backend)[0](
        regions.contiguous(memory_format=_checks.layout_of(regions)), words.contiguous(), mask, return_attention)
    return (context, attention) if return_attention else context
