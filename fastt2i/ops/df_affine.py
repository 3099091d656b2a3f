"""DF-Block affine fusion: ``y = lrelu(g[K-1] * ... lrelu(g[0] * x + b[0]) ... + b[K-1])``.

DF-GAN's DFBLK applies two conditional affines, each followed by LeakyReLU(0.2),
with a gamma/beta per sample and channel.  Eagerly that is 2K elementwise kernels
and K saved intermediates; fused, the forward reads x once and writes y once,
and the backward reads (x, dy) once, recomputes the intermediates in registers
and produces dx together with the per-(sample, channel) reductions dgamma and
dbeta in the same pass.

Here: the reference (the specification), the Triton kernels, the schema of the
compiled kernels (``csrc/cpu/df_affine.cpp``, ``csrc/cuda/df_affine*.c*``), one
autograd for every fused backend, and the public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backend, _checks
from ._library import define
from ._triton import num_programs_target, tl, triton

MAX_LAYERS = 8  # the fused kernels keep every layer's intermediates in registers


# ----------------------------------------------------------------------------- reference

def df_affine_reference(x, gamma, beta, negative_slope: float = 0.2):
    """Plain PyTorch, as DF-GAN's DFBLK: per layer ``leaky_relu(gamma * y + beta)``."""
    y = x.to(_checks.accumulate_dtype(x.dtype))
    for k in range(gamma.shape[0]):
        g = gamma[k].to(y.dtype)[:, :, None, None]
        b = beta[k].to(y.dtype)[:, :, None, None]
        y = F.leaky_relu(g * y + b, negative_slope)
    return y.to(x.dtype)


# ----------------------------------------------------------------------------- compiled kernels (csrc/)

define("df_affine_fwd(Tensor x, Tensor gamma, Tensor beta, float negative_slope) -> Tensor")
define(
    "df_affine_bwd(Tensor grad_out, Tensor x, Tensor gamma, Tensor beta, float negative_slope)"
    " -> (Tensor, Tensor, Tensor)"
)


def _fake_forward(x, gamma, beta, negative_slope):
    return torch.empty_like(x, memory_format=_checks.layout_of(x))


def _fake_backward(grad_out, x, gamma, beta, negative_slope):
    acc = _checks.accumulate_dtype(x.dtype)
    return (
        torch.empty_like(x, memory_format=_checks.layout_of(x)),
        gamma.new_empty(gamma.shape, dtype=acc),
        beta.new_empty(beta.shape, dtype=acc),
    )


torch.library.register_fake("fastt2i::df_affine_fwd")(_fake_forward)
torch.library.register_fake("fastt2i::df_affine_bwd")(_fake_backward)


# ----------------------------------------------------------------------------- Triton kernels

if triton is not None:

    @triton.jit
    def _tile_offsets(pid_b, s, c, C, S, CHANNELS_LAST: tl.constexpr):
        base = pid_b.to(tl.int64) * C * S
        if CHANNELS_LAST:
            return base + s[:, None] * C + c[None, :]
        return base + c[None, :] * S + s[:, None]

    @triton.jit
    def _df_affine_fwd_kernel(
        x_ptr, y_ptr, g_ptr, b_ptr, B, C, S, slope,
        K: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        pid_s = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2)
        s = pid_s * BLOCK_S + tl.arange(0, BLOCK_S)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        mask = (s[:, None] < S) & c_ok[None, :]
        offs = _tile_offsets(pid_b, s, c, C, S, CHANNELS_LAST)
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        for k in tl.static_range(K):
            g = tl.load(g_ptr + (k * B + pid_b) * C + c, mask=c_ok, other=0.0)
            b = tl.load(b_ptr + (k * B + pid_b) * C + c, mask=c_ok, other=0.0)
            v = g[None, :] * v + b[None, :]
            v = tl.where(v > 0, v, v * slope)
        tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _df_affine_bwd_kernel(
        dy_ptr, x_ptr, g_ptr, b_ptr, dx_ptr, dg_part_ptr, db_part_ptr, B, C, S, slope, chunk,
        K: tl.constexpr, KP: tl.constexpr, CHANNELS_LAST: tl.constexpr,
        BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        # One program: one sample, BLOCK_C channels, a chunk of the spatial positions.
        # dgamma/dbeta partial sums of that chunk go to (split, K, B, C); the few
        # splits are summed afterwards (a tiny reduction, not another pass over x).
        pid_split = tl.program_id(0)
        pid_c = tl.program_id(1)
        pid_b = tl.program_id(2)
        c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        c_ok = c < C
        layer = tl.arange(0, KP)
        acc_g = tl.zeros([KP, BLOCK_C], dtype=tl.float32)
        acc_b = tl.zeros([KP, BLOCK_C], dtype=tl.float32)
        start = pid_split * chunk
        for i in range(0, chunk, BLOCK_S):  # the last chunk is masked at S
            s = start + i + tl.arange(0, BLOCK_S)
            mask = (s[:, None] < S) & c_ok[None, :]
            offs = _tile_offsets(pid_b, s, c, C, S, CHANNELS_LAST)
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            d = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            for r in tl.static_range(K):
                k = K - 1 - r
                # recompute the input of layer k (K is small: recomputing is cheaper than storing)
                a = x
                for j in tl.static_range(k):
                    gj = tl.load(g_ptr + (j * B + pid_b) * C + c, mask=c_ok, other=0.0)
                    bj = tl.load(b_ptr + (j * B + pid_b) * C + c, mask=c_ok, other=0.0)
                    a = gj[None, :] * a + bj[None, :]
                    a = tl.where(a > 0, a, a * slope)
                gk = tl.load(g_ptr + (k * B + pid_b) * C + c, mask=c_ok, other=0.0)
                bk = tl.load(b_ptr + (k * B + pid_b) * C + c, mask=c_ok, other=0.0)
                z = gk[None, :] * a + bk[None, :]
                dz = tl.where(z > 0, d, d * slope)
                dz = tl.where(mask, dz, 0.0)
                acc_g += tl.where(layer[:, None] == k, tl.sum(dz * a, axis=0)[None, :], 0.0)
                acc_b += tl.where(layer[:, None] == k, tl.sum(dz, axis=0)[None, :], 0.0)
                d = dz * gk[None, :]
            tl.store(dx_ptr + offs, d.to(dx_ptr.dtype.element_ty), mask=mask)
        part = ((pid_split * K + layer[:, None]) * B + pid_b) * C + c[None, :]
        part_mask = (layer[:, None] < K) & c_ok[None, :]
        tl.store(dg_part_ptr + part, acc_g, mask=part_mask)
        tl.store(db_part_ptr + part, acc_b, mask=part_mask)


def _triton_tiles(C: int, S: int, channels_last: bool) -> tuple[int, int]:
    """(BLOCK_S, BLOCK_C): about 2048 elements a tile, along the contiguous dim first."""
    if channels_last:
        block_c = min(triton.next_power_of_2(C), 128)
        return max(1, 2048 // block_c), block_c
    block_s = min(triton.next_power_of_2(S), 1024)
    return block_s, max(1, min(triton.next_power_of_2(C), 2048 // block_s))


if triton is not None:

    @torch.library.triton_op("fastt2i::df_affine_fwd_triton", mutates_args=())
    def _df_affine_fwd_triton(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                              negative_slope: float) -> torch.Tensor:
        B, C, H, W = x.shape
        S, K = H * W, gamma.shape[0]
        channels_last = _checks.layout_of(x) == torch.channels_last
        y = torch.empty_like(x, memory_format=_checks.layout_of(x))
        block_s, block_c = _triton_tiles(C, S, channels_last)
        grid = (triton.cdiv(S, block_s), triton.cdiv(C, block_c), B)
        torch.library.wrap_triton(_df_affine_fwd_kernel)[grid](
            x, y, gamma, beta, B, C, S, negative_slope,
            K=K, CHANNELS_LAST=channels_last, BLOCK_S=block_s, BLOCK_C=block_c,
        )
        return y

    @torch.library.triton_op("fastt2i::df_affine_bwd_triton", mutates_args=())
    def _df_affine_bwd_triton(grad_out: torch.Tensor, x: torch.Tensor, gamma: torch.Tensor,
                              beta: torch.Tensor, negative_slope: float
                              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, C, H, W = x.shape
        S, K = H * W, gamma.shape[0]
        fmt = _checks.layout_of(x)
        channels_last = fmt == torch.channels_last
        block_s, block_c = _triton_tiles(C, S, channels_last)
        c_blocks = triton.cdiv(C, block_c)
        s_blocks = triton.cdiv(S, block_s)
        splits = max(1, min(s_blocks, triton.cdiv(num_programs_target(x.device), B * c_blocks)))
        chunk = triton.cdiv(s_blocks, splits) * block_s
        splits = triton.cdiv(S, chunk)
        dx = torch.empty_like(x, memory_format=fmt)
        dg_part = torch.empty((splits, K, B, C), device=x.device, dtype=torch.float32)
        db_part = torch.empty((splits, K, B, C), device=x.device, dtype=torch.float32)
        torch.library.wrap_triton(_df_affine_bwd_kernel)[(splits, c_blocks, B)](
            grad_out, x, gamma, beta, dx, dg_part, db_part, B, C, S, negative_slope, chunk,
            K=K, KP=triton.next_power_of_2(K), CHANNELS_LAST=channels_last,
            BLOCK_S=block_s, BLOCK_C=block_c,
        )
        return dx, dg_part.sum(0), db_part.sum(0)


# ----------------------------------------------------------------------------- autograd + dispatch

def _kernel_inputs(x, gamma, beta):
    """x in a layout the kernels take; gamma/beta in the accumulate dtype, contiguous."""
    acc = _checks.accumulate_dtype(x.dtype)
    return x.contiguous(memory_format=_checks.layout_of(x)), gamma.to(acc).contiguous(), beta.to(acc).contiguous()


class _DFAffineFunction(torch.autograd.Function):
    """One autograd for every fused backend: saves only x, gamma, beta."""

    @staticmethod
    def forward(ctx, x, gamma, beta, negative_slope, backend):
        forward, _ = DISPATCH.fused_ops(backend)
        x, g, b = _kernel_inputs(x, gamma, beta)
        ctx.save_for_backward(x, g, b)
        ctx.negative_slope, ctx.backend = negative_slope, backend
        ctx.param_dtypes = (gamma.dtype, beta.dtype)
        return forward(x, g, b, negative_slope)

    @staticmethod
    def backward(ctx, grad_out):
        x, g, b = ctx.saved_tensors
        _, backward = DISPATCH.fused_ops(ctx.backend)
        grad_out = grad_out.to(x.dtype).contiguous(memory_format=_checks.layout_of(x))
        dx, dg, db = backward(grad_out, x, g, b, ctx.negative_slope)
        return dx, dg.to(ctx.param_dtypes[0]), db.to(ctx.param_dtypes[1]), None, None


def _compiled_unsupported_reasons(x, gamma, beta):
    return [] if gamma.shape[0] <= MAX_LAYERS else [f"K={gamma.shape[0]} > {MAX_LAYERS} layers"]


DISPATCH = _backend.OpDispatch("df_affine", op="df_affine")
DISPATCH.register_backends(_compiled_unsupported_reasons)


def _validate(x, gamma, beta, negative_slope) -> float:
    _checks.tensor("x", x, ndim=4)
    _checks.tensor("gamma", gamma, ndim=3)
    _checks.tensor("beta", beta, ndim=3)
    _checks.same_device(x=x, gamma=gamma, beta=beta)
    B, C = x.shape[:2]
    if gamma.shape[0] < 1:
        raise ValueError(f"gamma: expected K >= 1 stacked layers (K, B, C), got shape {tuple(gamma.shape)}")
    for name, t in (("gamma", gamma), ("beta", beta)):
        if tuple(t.shape[1:]) != (B, C):
            raise ValueError(
                f"{name}: expected shape (K, B={B}, C={C}) to match x {tuple(x.shape)}, got {tuple(t.shape)}"
            )
    if beta.shape[0] != gamma.shape[0]:
        raise ValueError(f"beta: expected K={gamma.shape[0]} layers like gamma, got shape {tuple(beta.shape)}")
    return _checks.real_number("negative_slope", negative_slope)


def df_affine(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
              negative_slope: float = 0.2) -> torch.Tensor:
    """K stacked conditional affines, each followed by a leaky ReLU (DF-GAN's DFBLK for K = 2).

    ``y = x; for k in range(K): y = leaky_relu(gamma[k][:, :, None, None] * y + beta[k][:, :, None, None])``

    Args:
        x: (B, C, H, W) float32/float16/bfloat16 (float64 on cpu/cuda/reference),
            contiguous or channels_last (other strides are copied to contiguous).
        gamma, beta: (K, B, C), K >= 1 (K <= 8 for the fused backends), any float dtype.
        negative_slope: the leaky ReLU slope (0.2 in DF-GAN).

    Returns:
        y with x's shape, dtype and memory format.  Arithmetic is float32 for half
        inputs.  Differentiable in x, gamma and beta (first order).
    """
    slope = _validate(x, gamma, beta, negative_slope)
    backend = DISPATCH.select(x.device, x, gamma, beta)
    if backend == "reference":
        return df_affine_reference(x, gamma, beta, slope)
    if torch.is_grad_enabled() and (x.requires_grad or gamma.requires_grad or beta.requires_grad):
        return _DFAffineFunction.apply(x, gamma, beta, slope, backend)
    return DISPATCH.fused_ops(backend)[0](*_kernel_inputs(x, gamma, beta), slope)  # inference: skip autograd
