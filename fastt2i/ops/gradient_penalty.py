"""Fused gradient penalty: ``k * mean_b (sum_i ||scale * grads_i[b]||^2)^(p/2)``.

DF-GAN's MA-GP (k = 2, p = 6) takes D's gradients with respect to the image
(B, 3, H, W) and the sentence (B, 256), flattens them, concatenates them, and
reduces ``2 * mean(||grad||^6)``; R1 is k = gamma/2, p = 2.  Eagerly that is a
concatenation copy and half a dozen passes over the 25 MB image gradient, and as
many again in the backward.  Fused: the forward reads every gradient once
(per-sample partial sums of squares, then one tiny finalising reduction) and the
backward reads it once and writes the result once:

    d loss / d grads_i[b] = k * p / B * scale^2 * s_b^(p/2 - 1) * grads_i[b],
    s_b = scale^2 * sum_i ||grads_i[b]||^2,

defined as 0 where s_b = 0 (the official ``sqrt`` gives NaN there).

``scale`` multiplies the gradients before the norm without a copy: GALIP's AMP
recipe differentiates the GradScaler-scaled output and unscales the gradients
before the penalty, which is ``scale = 1 / loss_scale`` here.

Here: the reference, the Triton kernels, the schema of the compiled kernels
(``csrc/cpu/gradient_penalty.cpp``, ``csrc/cuda/gradient_penalty*.c*``), the
autograd shared by the fused backends, and the public function.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import _backend, _checks
from ._library import define
from ._triton import tl, triton


# ----------------------------------------------------------------------------- reference

def _acc_dtype(grads) -> torch.dtype:
    return torch.float64 if any(g.dtype == torch.float64 for g in grads) else torch.float32


def gradient_penalty_reference(grads, k: float = 2.0, p: float = 6.0, scale: float = 1.0) -> torch.Tensor:
    """Plain PyTorch, as DF-GAN's MA_GP: flatten, concatenate, per-sample norm, ``k * mean(norm^p)``.

    ``norm^p`` is written ``s^(p/2)`` of the squared norm s (same value) with the
    derivative at s = 0 defined as 0, where the official ``sqrt`` gives NaN.
    """
    acc = _acc_dtype(grads)
    B = grads[0].shape[0]
    grad = torch.cat([g.reshape(B, -1).to(acc) * scale for g in grads], dim=1)
    s = grad.pow(2).sum(dim=1)
    nonzero = s > 0
    value = torch.where(nonzero, torch.where(nonzero, s, torch.ones_like(s)).pow(p / 2), torch.zeros_like(s))
    return k * value.mean()


# ----------------------------------------------------------------------------- layouts

def _kernel_input(t: torch.Tensor) -> torch.Tensor:
    return t if _checks.batch_major(t) else t.contiguous()


# ----------------------------------------------------------------------------- compiled kernels (csrc/)

define("gradient_penalty_fwd(Tensor[] grads, float k, float p, float scale) -> (Tensor, Tensor)")
define("gradient_penalty_bwd(Tensor grad_loss, Tensor[] grads, Tensor sumsq, float k, float p, float scale)"
       " -> Tensor[]")


def _fake_forward(grads, k, p, scale):
    acc = _acc_dtype(grads)
    return grads[0].new_empty((), dtype=acc), grads[0].new_empty((grads[0].shape[0],), dtype=acc)


def _fake_backward(grad_loss, grads, sumsq, k, p, scale):
    return [torch.empty_like(_kernel_input(g)) for g in grads]


torch.library.register_fake("fastt2i::gradient_penalty_fwd")(_fake_forward)
torch.library.register_fake("fastt2i::gradient_penalty_bwd")(_fake_backward)


# ----------------------------------------------------------------------------- Triton kernels

_BLOCK = 1024
_CHUNK_BLOCKS = 8  # one program: 8 x 1024 elements of one sample


def _chunks(N: int) -> int:
    return max(1, triton.cdiv(N, _BLOCK * _CHUNK_BLOCKS))


if triton is not None:

    @triton.jit
    def _gp_partial_kernel(g_ptr, part_ptr, N, P, col0, BLOCK: tl.constexpr, CHUNK_BLOCKS: tl.constexpr):
        # part[b, col0 + chunk] = sum of squares of one chunk of sample b
        chunk = tl.program_id(0)
        b = tl.program_id(1)
        base = b.to(tl.int64) * N
        start = chunk.to(tl.int64) * (BLOCK * CHUNK_BLOCKS)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for i in tl.static_range(CHUNK_BLOCKS):
            offs = start + i * BLOCK + tl.arange(0, BLOCK)
            v = tl.load(g_ptr + base + offs, mask=offs < N, other=0.0).to(tl.float32)
            acc += v * v
        tl.store(part_ptr + b * P + col0 + chunk, tl.sum(acc, axis=0))

    @triton.jit
    def _gp_finalize_kernel(part_ptr, s_ptr, loss_ptr, B, P, k, half_p, scale2,
                            BLOCK_B: tl.constexpr, BLOCK_P: tl.constexpr):
        total = tl.zeros([BLOCK_B], dtype=tl.float32)
        for b0 in range(0, B, BLOCK_B):
            rows = b0 + tl.arange(0, BLOCK_B)
            acc = tl.zeros([BLOCK_B], dtype=tl.float32)
            for p0 in range(0, P, BLOCK_P):
                cols = p0 + tl.arange(0, BLOCK_P)
                m = (rows[:, None] < B) & (cols[None, :] < P)
                acc += tl.sum(tl.load(part_ptr + rows[:, None] * P + cols[None, :], mask=m, other=0.0), axis=1)
            s = acc * scale2
            tl.store(s_ptr + rows, s, mask=rows < B)
            pos = s > 0
            total += tl.where(pos, tl.exp2(half_p * tl.log2(tl.where(pos, s, 1.0))), 0.0)
        tl.store(loss_ptr, k * tl.sum(total, axis=0) / B)

    @triton.jit
    def _gp_bwd_kernel(g_ptr, out_ptr, s_ptr, gl_ptr, N, coef, exponent,
                       BLOCK: tl.constexpr, CHUNK_BLOCKS: tl.constexpr):
        chunk = tl.program_id(0)
        b = tl.program_id(1)
        s = tl.load(s_ptr + b)
        gl = tl.load(gl_ptr).to(tl.float32)
        pos = s > 0
        c = tl.where(pos, gl * coef * tl.exp2(exponent * tl.log2(tl.where(pos, s, 1.0))), 0.0)
        base = b.to(tl.int64) * N
        start = chunk.to(tl.int64) * (BLOCK * CHUNK_BLOCKS)
        for i in tl.static_range(CHUNK_BLOCKS):
            offs = start + i * BLOCK + tl.arange(0, BLOCK)
            m = offs < N
            v = tl.load(g_ptr + base + offs, mask=m, other=0.0).to(tl.float32)
            tl.store(out_ptr + base + offs, (v * c).to(out_ptr.dtype.element_ty), mask=m)

    @torch.library.triton_op("fastt2i::gradient_penalty_fwd_triton", mutates_args=())
    def _gp_fwd_triton(grads: list[torch.Tensor], k: float, p: float, scale: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        grads = [_kernel_input(g) for g in grads]
        B = grads[0].shape[0]
        counts = [_chunks(g.numel() // B if B else 0) for g in grads]
        P = sum(counts)
        part = torch.zeros((B, P), device=grads[0].device, dtype=torch.float32)
        col = 0
        for g, n_chunks in zip(grads, counts):
            N = g.numel() // B if B else 0
            if N and B:
                torch.library.wrap_triton(_gp_partial_kernel)[(n_chunks, B)](
                    g, part, N, P, col, BLOCK=_BLOCK, CHUNK_BLOCKS=_CHUNK_BLOCKS)
            col += n_chunks
        s = torch.empty((B,), device=grads[0].device, dtype=torch.float32)
        loss = torch.empty((), device=grads[0].device, dtype=torch.float32)
        torch.library.wrap_triton(_gp_finalize_kernel)[(1,)](
            part, s, loss, B, P, k, p / 2, scale * scale,
            BLOCK_B=min(32, triton.next_power_of_2(max(B, 1))),
            BLOCK_P=min(128, triton.next_power_of_2(P)))
        return loss, s

    @torch.library.triton_op("fastt2i::gradient_penalty_bwd_triton", mutates_args=())
    def _gp_bwd_triton(grad_loss: torch.Tensor, grads: list[torch.Tensor], sumsq: torch.Tensor,
                       k: float, p: float, scale: float) -> list[torch.Tensor]:
        grads = [_kernel_input(g) for g in grads]
        B = grads[0].shape[0]
        coef = k * p / max(B, 1) * scale * scale
        outs = []
        for g in grads:
            out = torch.empty_like(g)
            N = g.numel() // B if B else 0
            if N and B:
                torch.library.wrap_triton(_gp_bwd_kernel)[(_chunks(N), B)](
                    g, out, sumsq, grad_loss, N, coef, p / 2 - 1,
                    BLOCK=_BLOCK, CHUNK_BLOCKS=_CHUNK_BLOCKS)
            outs.append(out)
        return outs


# ----------------------------------------------------------------------------- autograd + dispatch

class _GradientPenaltyFunction(torch.autograd.Function):
    """Saves the (already existing) gradients and the per-sample squared norms (B values)."""

    @staticmethod
    def forward(ctx, k, p, scale, backend, *grads):
        forward, _ = DISPATCH.fused_ops(backend)
        grads = [_kernel_input(g) for g in grads]
        loss, sumsq = forward(grads, k, p, scale)
        ctx.save_for_backward(sumsq, *grads)
        ctx.k, ctx.p, ctx.scale, ctx.backend = k, p, scale, backend
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_loss):
        sumsq, *grads = ctx.saved_tensors
        _, backward = DISPATCH.fused_ops(ctx.backend)
        outs = backward(grad_loss.to(sumsq.dtype).contiguous(), grads, sumsq, ctx.k, ctx.p, ctx.scale)
        return (None, None, None, None, *outs)


DISPATCH = _backend.OpDispatch("gradient_penalty", op="gradient_penalty")
DISPATCH.register_backends()


def _validate(grads, k, p, scale):
    # One lean pass (this runs every D step); the detailed messages come from _checks on failure.
    if isinstance(grads, torch.Tensor) or not isinstance(grads, (list, tuple)):
        raise TypeError(f"grads: expected a list or tuple of tensors, got {type(grads).__name__}")
    if len(grads) == 0:
        raise ValueError("grads: expected at least one tensor, got an empty sequence")
    B = device = None
    for i, g in enumerate(grads):
        if not isinstance(g, torch.Tensor) or g.dtype not in _checks.FLOAT_DTYPES:
            _checks.tensor(f"grads[{i}]", g)
        if g.dim() < 1:
            raise ValueError(f"grads[{i}]: expected a leading batch dimension, got a 0-D tensor")
        if i == 0:
            B, device = g.shape[0], g.device
            if B == 0:
                raise ValueError(f"grads: expected a batch size >= 1, got shape {tuple(g.shape)}")
            continue
        if g.shape[0] != B:
            raise ValueError(f"grads[{i}]: expected batch size {B} (of grads[0]) at dim 0, "
                             f"got shape {tuple(g.shape)}")
        if g.device != device:
            _checks.same_device(**{f"grads[{j}]": t for j, t in enumerate(grads)})
    k = _checks.real_number("k", k)
    p = _checks.real_number("p", p)
    scale = _checks.real_number("scale", scale)
    if not p > 0:
        raise ValueError(f"p: expected an exponent > 0, got {p!r}")
    return k, p, scale


def gradient_penalty(grads: Sequence[torch.Tensor], k: float = 2.0, p: float = 6.0, *,
                     scale: float = 1.0) -> torch.Tensor:
    """``k * mean over b of (sum_i ||scale * grads[i][b]||^2)^(p/2)``, fused, no concatenation copy.

    MA-GP (DF-GAN) is k = 2, p = 6 with grads = (d out / d image, d out / d sentence);
    R1 is k = gamma / 2, p = 2 with grads = (d out / d real,).

    Args:
        grads: non-empty list/tuple of tensors sharing the batch size B >= 1 at dim 0,
            any float dtypes (they may differ), any layout (a tensor whose samples are
            not each one dense span of memory is copied to contiguous first).
        k: the weight.  p: the exponent of the per-sample norm, > 0.
        scale: the gradients are taken as ``scale * grads[i]`` (1 / the GradScaler
            scale unscales AMP gradients in the kernel, with no extra pass).

    Returns:
        a 0-D tensor, float32 (float64 when any grad is float64).  Differentiable in
        every grad (first order: enough to backpropagate the penalty into D's
        parameters through gradients taken with ``create_graph=True``); the
        derivative for a sample whose gradients are all zero is zero, never NaN.
    """
    k, p, scale = _validate(grads, k, p, scale)
    grads = list(grads)
    backend = DISPATCH.select(grads[0].device, grads)
    if backend == "reference":
        return gradient_penalty_reference(grads, k, p, scale)
    if not (torch.is_grad_enabled() and any(g.requires_grad for g in grads)):
        # Nothing to differentiate: the forward kernel alone.  (Also the only form torch.compile
        # traces here: dynamo passes a Function's arguments shifted by one when no input requires grad.)
        forward, _ = DISPATCH.fused_ops(backend)
        return forward([_kernel_input(g) for g in grads], k, p, scale)[0]
    return _GradientPenaltyFunction.apply(k, p, scale, backend, *grads)
