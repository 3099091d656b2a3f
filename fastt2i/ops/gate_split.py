"""Spatial gate split, ``key = sigmoid(l) * x``, ``nonkey = (1 - sigmoid(l)) * x``: two outputs from one read.

DR-GAN's semantic disentangling module (SDM) gates the word context and the hidden features with
``sigma(f(.))``: the key part is ``sigma * x``, the non-key part ``(1 - sigma) * x``.  Eager PyTorch
runs a sigmoid, a subtraction and two multiplies forward (four passes over memory, the gate stored
twice) and as many backward.  Fused: the logits and x are read once, both parts written once;
backward recomputes the sigmoid from the saved logits and writes dx and dlogits in one pass:

    dx      = s * dk + (1 - s) * dn
    dlogits = sum over broadcast channels of (dk - dn) * x, times s * (1 - s)

Either upstream gradient may be None (a part that is not used).  The logits are one gate per
position, (B, 1, H, W), broadcast over x's channels, or one per element (x's shape).

Here: the reference, the Triton kernels, the schema of the compiled kernels
(``csrc/cpu/gate_split.cpp``, ``csrc/cuda/gate_split*.c*``), the autograd shared by the fused
backends, and the public function.
"""
from __future__ import annotations

import torch

from . import _backend, _checks
from ._library import define
from ._triton import tl, triton


# ----------------------------------------------------------------------------- reference

def gate_split_reference(gate_logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain PyTorch: ``(sigmoid(l) * x, (1 - sigmoid(l)) * x)``, l broadcast over channels (float32 math
    for half inputs)."""
    acc = _checks.accumulate_dtype(x.dtype)
    s = torch.sigmoid(gate_logits.to(acc))
    xa = x.to(acc)
    return (s * xa).to(x.dtype), ((1 - s) * xa).to(x.dtype)


# ----------------------------------------------------------------------------- layouts

def _is_broadcast(gate_logits: torch.Tensor, x: torch.Tensor) -> bool:
    return gate_logits.shape[1] != x.shape[1]


def _like(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with exactly ``ref``'s strides and dtype, so both can be walked as the same flat memory."""
    if t.stride() == ref.stride() and t.dtype == ref.dtype:
        return t
    return torch.empty_like(ref).copy_(t)


def _kernel_inputs(gate_logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the kernels take: x NCHW-contiguous or NHWC; per-position logits (B, 1, H, W) as (B, H*W)
    contiguous memory (both layouts agree when C = 1); per-element logits laid out exactly like x."""
    x = x.contiguous(memory_format=_checks.layout_of(x))
    if _is_broadcast(gate_logits, x):
        return gate_logits.contiguous(), x
    return _like(gate_logits, x), x


def _layout_code(gate_logits: torch.Tensor, x: torch.Tensor) -> int:
    """0: one gate per element (flat); 1: per position, x NCHW; 2: per position, x NHWC."""
    if not _is_broadcast(gate_logits, x):
        return 0
    return 2 if _checks.layout_of(x) == torch.channels_last else 1


# ----------------------------------------------------------------------------- compiled kernels (csrc/)

define("gate_split_fwd(Tensor gate_logits, Tensor x) -> (Tensor, Tensor)")
define("gate_split_bwd(Tensor? grad_key, Tensor? grad_nonkey, Tensor gate_logits, Tensor x) -> (Tensor, Tensor)")


def _fake_forward(gate_logits, x):
    _, x = _kernel_inputs(gate_logits, x)
    return torch.empty_like(x), torch.empty_like(x)


def _fake_backward(grad_key, grad_nonkey, gate_logits, x):
    gate_logits, x = _kernel_inputs(gate_logits, x)
    return torch.empty_like(gate_logits), torch.empty_like(x)


torch.library.register_fake("fastt2i::gate_split_fwd")(_fake_forward)
torch.library.register_fake("fastt2i::gate_split_bwd")(_fake_backward)


# ----------------------------------------------------------------------------- Triton kernels

_BLOCK = 1024

if triton is not None:

    @triton.jit
    def _sigmoid(logits):
        """From e = exp(-|l|) in (0, 1]: never overflows, so any finite logit gives a gate in [0, 1]."""
        e = tl.exp(-tl.abs(logits))
        inv = 1.0 / (1.0 + e)
        return tl.where(logits >= 0, inv, e * inv)

    @triton.jit
    def _gate_split_fwd_kernel(l_ptr, x_ptr, key_ptr, nonkey_ptr, n, C, S, LAYOUT: tl.constexpr,
                               BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        if LAYOUT == 0:
            lo = offs
        elif LAYOUT == 1:  # (B, C, S): the gate of (b, c, s) is (b, s)
            lo = (offs // (C * S)) * S + offs % S
        else:  # (B, S, C): the gate of position p is p
            lo = offs // C
        s = _sigmoid(tl.load(l_ptr + lo, mask=mask, other=0.0).to(tl.float32))
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(key_ptr + offs, (s * x).to(key_ptr.dtype.element_ty), mask=mask)
        tl.store(nonkey_ptr + offs, ((1.0 - s) * x).to(nonkey_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_split_bwd_flat_kernel(dk_ptr, dn_ptr, l_ptr, x_ptr, dl_ptr, dx_ptr, n,
                                    HAS_DK: tl.constexpr, HAS_DN: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        s = _sigmoid(tl.load(l_ptr + offs, mask=mask, other=0.0).to(tl.float32))
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        dk = tl.load(dk_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_DK else tl.zeros_like(x)
        dn = tl.load(dn_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_DN else tl.zeros_like(x)
        tl.store(dx_ptr + offs, (s * dk + (1.0 - s) * dn).to(dx_ptr.dtype.element_ty), mask=mask)
        tl.store(dl_ptr + offs, ((dk - dn) * x * s * (1.0 - s)).to(dl_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _gate_split_bwd_positions_kernel(dk_ptr, dn_ptr, l_ptr, x_ptr, dl_ptr, dx_ptr, P, C, S,
                                         stride_c, stride_s, HAS_DK: tl.constexpr, HAS_DN: tl.constexpr,
                                         BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """A tile of positions p = (b, s), all channels: (b, c, s) at b*C*S + c*stride_c + s*stride_s."""
        p = tl.program_id(0).to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < P
        s = _sigmoid(tl.load(l_ptr + p, mask=pmask, other=0.0).to(tl.float32))
        base = (p // S) * C * S + (p % S) * stride_s
        acc = tl.zeros((BLOCK_P,), dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            c = c0 + tl.arange(0, BLOCK_C)
            offs = base[:, None] + c[None, :].to(tl.int64) * stride_c
            mask = pmask[:, None] & (c < C)[None, :]
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            dk = tl.load(dk_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_DK else tl.zeros_like(x)
            dn = tl.load(dn_ptr + offs, mask=mask, other=0.0).to(tl.float32) if HAS_DN else tl.zeros_like(x)
            tl.store(dx_ptr + offs, (s[:, None] * dk + (1.0 - s[:, None]) * dn).to(dx_ptr.dtype.element_ty),
                     mask=mask)
            acc += tl.sum((dk - dn) * x, axis=1)
        tl.store(dl_ptr + p, (acc * s * (1.0 - s)).to(dl_ptr.dtype.element_ty), mask=pmask)

    def _sizes(x):
        B, C, H, W = x.shape
        return B, C, H * W

    @torch.library.triton_op("fastt2i::gate_split_fwd_triton", mutates_args=())
    def _gate_split_fwd_triton(gate_logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate_logits, x = _kernel_inputs(gate_logits, x)
        key, nonkey = torch.empty_like(x), torch.empty_like(x)
        n = x.numel()
        _, C, S = _sizes(x)
        if n:
            torch.library.wrap_triton(_gate_split_fwd_kernel)[(triton.cdiv(n, _BLOCK),)](
                gate_logits, x, key, nonkey, n, C, S, LAYOUT=_layout_code(gate_logits, x), BLOCK=_BLOCK,
            )
        return key, nonkey

    @torch.library.triton_op("fastt2i::gate_split_bwd_triton", mutates_args=())
    def _gate_split_bwd_triton(grad_key: torch.Tensor | None, grad_nonkey: torch.Tensor | None,
                               gate_logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        gate_logits, x = _kernel_inputs(gate_logits, x)
        dk = None if grad_key is None else _like(grad_key, x)
        dn = None if grad_nonkey is None else _like(grad_nonkey, x)
        dl, dx = torch.empty_like(gate_logits), torch.empty_like(x)
        B, C, S = _sizes(x)
        flags = dict(HAS_DK=dk is not None, HAS_DN=dn is not None)
        dk, dn = (x if dk is None else dk), (x if dn is None else dn)  # any tensor: the kernel reads neither when HAS_DK / HAS_DN is false
        layout = _layout_code(gate_logits, x)
        if x.numel() == 0:
            dl.zero_()  # no channels: the channel sums are zero
        elif layout == 0:
            n = x.numel()
            torch.library.wrap_triton(_gate_split_bwd_flat_kernel)[(triton.cdiv(n, _BLOCK),)](
                dk, dn, gate_logits, x, dl, dx, n, BLOCK=_BLOCK, **flags)
        else:
            block_c = min(32, triton.next_power_of_2(C))
            block_p = 2048 // block_c
            stride_c, stride_s = (S, 1) if layout == 1 else (1, C)
            torch.library.wrap_triton(_gate_split_bwd_positions_kernel)[(triton.cdiv(B * S, block_p),)](
                dk, dn, gate_logits, x, dl, dx, B * S, C, S, stride_c, stride_s,
                BLOCK_P=block_p, BLOCK_C=block_c, **flags)
        return dl, dx


# ----------------------------------------------------------------------------- autograd + dispatch

class _GateSplitFunction(torch.autograd.Function):
    """Saves the logits and x (the sigmoid is recomputed backward); an unused part's gradient stays None."""

    @staticmethod
    def forward(ctx, gate_logits, x, backend):
        forward, _ = DISPATCH.fused_ops(backend)
        logits_k, x_k = _kernel_inputs(gate_logits, x)
        ctx.save_for_backward(logits_k, x_k)
        ctx.backend = backend
        ctx.set_materialize_grads(False)
        return forward(logits_k, x_k)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_key, grad_nonkey):
        if grad_key is None and grad_nonkey is None:
            return None, None, None
        logits, x = ctx.saved_tensors
        _, backward = DISPATCH.fused_ops(ctx.backend)
        dk = None if grad_key is None else _like(grad_key, x)
        dn = None if grad_nonkey is None else _like(grad_nonkey, x)
        dl, dx = backward(dk, dn, logits, x)
        return dl, dx, None


DISPATCH = _backend.OpDispatch("gate_split", op="gate_split")
DISPATCH.register_backends()


def _validate(gate_logits, x) -> None:
    _checks.tensor("x", x)
    _checks.tensor("gate_logits", gate_logits)
    if x.dim() != 4:
        raise ValueError(f"x: expected a 4-D tensor (B, C, H, W), got shape {tuple(x.shape)}")
    B, C, H, W = x.shape
    if tuple(gate_logits.shape) not in ((B, 1, H, W), (B, C, H, W)):
        raise ValueError(f"gate_logits: expected shape (B={B}, 1, H={H}, W={W}) or x's shape {tuple(x.shape)}, "
                         f"got {tuple(gate_logits.shape)}")
    if gate_logits.dtype != x.dtype:
        raise TypeError(f"gate_logits: expected x's dtype {x.dtype}, got {gate_logits.dtype}")
    _checks.same_device(gate_logits=gate_logits, x=x)


def gate_split(gate_logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` by a sigmoid gate: ``(sigmoid(l) * x, (1 - sigmoid(l)) * x)`` (DR-GAN's SDM).

    Args:
        gate_logits: the gate before the sigmoid, (B, 1, H, W) (one gate per position, broadcast
            over x's channels) or x's shape (B, C, H, W); x's dtype and device.
        x: (B, C, H, W) float32/float16/bfloat16 (float64 on cpu/cuda/reference); contiguous
            and channels_last are kept, other strides are copied to contiguous.

    Returns:
        (key, nonkey) with x's shape, dtype and memory format (float32 arithmetic for half
        inputs).  Finite for any finite logits (the gate saturates to exactly 0 or 1).  The
        gradient of either part may be absent (a part not used downstream); the logits'
        gradient sums over the broadcast channels.
    """
    _validate(gate_logits, x)
    backend = DISPATCH.select(x.device, gate_logits, x)
    if backend == "reference":
        return gate_split_reference(gate_logits, x)
    return _GateSplitFunction.apply(gate_logits, x, backend)
