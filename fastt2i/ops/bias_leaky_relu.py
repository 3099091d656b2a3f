"""Bias + leaky ReLU, ``y = leaky_relu(x + bias[c], slope)``, with fused first and second derivatives.

DF-GAN's discriminator is differentiated twice at every D step (MA-GP takes the
gradients of D's output with ``create_graph=True``, then backpropagates the
penalty through them).  As NVlabs' stylegan2-ada ``bias_act`` does, the
derivative of the activation is written as a function of the saved *output*:

    dx = dy * m(y),   m(y) = 1 where y > 0, slope elsewhere   (slope >= 0)

``m`` is piecewise constant, so the derivative of ``dy -> dy * m(y)`` is the same
kernel applied to the incoming gradient, and its derivative in ``y`` is zero
almost everywhere.  The backward is therefore itself an autograd op whose own
backward is that same op: any order of differentiation stays one fused
elementwise kernel, and only ``y`` is saved (never ``x + bias``).

Here: the reference, the Triton kernels, the schema of the compiled kernels
(``csrc/cpu/bias_leaky_relu.cpp``, ``csrc/cuda/bias_leaky_relu*.c*``), the autograd
shared by the fused backends, and the public function.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _backend, _checks
from ._library import define
from ._triton import tl, triton


# ----------------------------------------------------------------------------- reference

def bias_leaky_relu_reference(x, bias=None, negative_slope: float = 0.2):
    """Plain PyTorch: ``F.leaky_relu(x + bias.view(1, C, 1, ...), slope)`` (float32 math for half inputs)."""
    z = x.to(_checks.accumulate_dtype(x.dtype))
    if bias is not None:
        z = z + bias.to(z.dtype).view((1, -1) + (1,) * (x.dim() - 2))
    return F.leaky_relu(z, negative_slope).to(x.dtype)


# ----------------------------------------------------------------------------- layouts

def _kernel_input(x: torch.Tensor, has_bias: bool) -> torch.Tensor:
    """What the kernels take: with a bias, NCHW-contiguous or NHWC 4-D (the channel of an
    element follows from its flat index); without one, any dense layout (flat elementwise)."""
    if has_bias:
        return x.contiguous(memory_format=_checks.layout_of(x))
    return x if _checks.is_dense(x) else x.contiguous()


def _like(grad: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``grad`` with exactly ``y``'s strides, so both can be walked as flat memory."""
    if grad.stride() == y.stride() and grad.dtype == y.dtype:
        return grad
    return torch.empty_like(y).copy_(grad)


# ----------------------------------------------------------------------------- compiled kernels (csrc/)

define("bias_leaky_relu_fwd(Tensor x, Tensor? bias, float negative_slope) -> Tensor")
define("bias_leaky_relu_bwd(Tensor grad, Tensor y, float negative_slope) -> Tensor")


def _fake_forward(x, bias, negative_slope):
    return torch.empty_like(_kernel_input(x, bias is not None))


def _fake_backward(grad, y, negative_slope):
    return torch.empty_like(y if _checks.is_dense(y) else y.contiguous())


torch.library.register_fake("fastt2i::bias_leaky_relu_fwd")(_fake_forward)
torch.library.register_fake("fastt2i::bias_leaky_relu_bwd")(_fake_backward)


# ----------------------------------------------------------------------------- Triton kernels

_BLOCK = 1024

if triton is not None:

    @triton.jit
    def _blrelu_fwd_kernel(x_ptr, b_ptr, y_ptr, n, C, S, slope,
                           HAS_BIAS: tl.constexpr, CHANNELS_LAST: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_BIAS:
            if CHANNELS_LAST:
                c = offs % C
            else:
                c = (offs // S) % C
            v += tl.load(b_ptr + c, mask=mask, other=0.0).to(tl.float32)
        v = tl.where(v > 0, v, v * slope)
        tl.store(y_ptr + offs, v.to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _blrelu_bwd_kernel(g_ptr, y_ptr, out_ptr, n, slope, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        y = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + offs, tl.where(y > 0, g, g * slope).to(out_ptr.dtype.element_ty), mask=mask)

    @torch.library.triton_op("fastt2i::bias_leaky_relu_fwd_triton", mutates_args=())
    def _blrelu_fwd_triton(x: torch.Tensor, bias: torch.Tensor | None, negative_slope: float) -> torch.Tensor:
        x = _kernel_input(x, bias is not None)
        y = torch.empty_like(x)
        n = x.numel()
        C = x.shape[1] if x.dim() >= 2 else 1
        S = n // max(1, x.shape[0] * C) if x.dim() >= 2 else 1
        channels_last = bias is not None and _checks.layout_of(x) == torch.channels_last
        if n:
            torch.library.wrap_triton(_blrelu_fwd_kernel)[(triton.cdiv(n, _BLOCK),)](
                x, bias if bias is not None else x, y, n, C, S, negative_slope,
                HAS_BIAS=bias is not None, CHANNELS_LAST=channels_last, BLOCK=_BLOCK,
            )
        return y

    @torch.library.triton_op("fastt2i::bias_leaky_relu_bwd_triton", mutates_args=())
    def _blrelu_bwd_triton(grad: torch.Tensor, y: torch.Tensor, negative_slope: float) -> torch.Tensor:
        y = y if _checks.is_dense(y) else y.contiguous()
        grad = _like(grad, y)
        out = torch.empty_like(y)
        n = y.numel()
        if n:
            torch.library.wrap_triton(_blrelu_bwd_kernel)[(triton.cdiv(n, _BLOCK),)](
                grad, y, out, n, negative_slope, BLOCK=_BLOCK,
            )
        return out


# ----------------------------------------------------------------------------- autograd + dispatch

def _forward_kernel(x, bias, negative_slope, backend):
    forward, _ = DISPATCH.fused_ops(backend)
    b = None if bias is None else bias.to(_checks.accumulate_dtype(x.dtype)).contiguous()
    return forward(_kernel_input(x, bias is not None), b, negative_slope)


class _BiasLeakyReLUGrad(torch.autograd.Function):
    """``dy -> dy * m(y)``: linear in dy, so its backward is itself (any order stays fused)."""

    @staticmethod
    def forward(ctx, grad, y, negative_slope, backend):
        ctx.save_for_backward(y)
        ctx.negative_slope, ctx.backend = negative_slope, backend
        _, backward = DISPATCH.fused_ops(backend)
        return backward(_like(grad, y), y, negative_slope)

    @staticmethod
    def backward(ctx, grad_grad):
        (y,) = ctx.saved_tensors
        # d/dy of dy * m(y) is zero almost everywhere (m is a step function of y).
        return _BiasLeakyReLUGrad.apply(grad_grad, y, ctx.negative_slope, ctx.backend), None, None, None


class _BiasLeakyReLUFunction(torch.autograd.Function):
    """Saves only the output y (m(y) equals m(x + bias) for slope >= 0)."""

    @staticmethod
    def forward(ctx, x, bias, negative_slope, backend):
        y = _forward_kernel(x, bias, negative_slope, backend)
        ctx.save_for_backward(y)
        ctx.negative_slope, ctx.backend = negative_slope, backend
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y

    @staticmethod
    def backward(ctx, grad_out):
        (y,) = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph: the gradient is itself differentiable
            dx = _BiasLeakyReLUGrad.apply(grad_out, y, ctx.negative_slope, ctx.backend)
        else:  # a plain backward: the kernel alone
            dx = DISPATCH.fused_ops(ctx.backend)[1](_like(grad_out, y), y, ctx.negative_slope)
        db = None
        if ctx.needs_input_grad[1]:
            dims = [0] + list(range(2, y.dim()))
            db = dx.sum(dims, dtype=_checks.accumulate_dtype(y.dtype)).to(ctx.bias_dtype)
        return dx, db, None, None


DISPATCH = _backend.OpDispatch("bias_leaky_relu", op="bias_leaky_relu")
DISPATCH.register_backends()


def _validate(x, bias, negative_slope) -> float:
    _checks.tensor("x", x)
    if bias is not None:
        _checks.tensor("bias", bias, ndim=1)
        _checks.same_device(x=x, bias=bias)
        if x.dim() < 2:
            raise ValueError(f"x: expected (B, C, ...) with at least 2 dims when a bias is given, "
                             f"got shape {tuple(x.shape)}")
        if bias.shape[0] != x.shape[1]:
            raise ValueError(f"bias: expected shape ({x.shape[1]},) (the channels of x {tuple(x.shape)}), "
                             f"got {tuple(bias.shape)}")
    slope = _checks.real_number("negative_slope", negative_slope)
    if not slope >= 0.0:  # the derivative is read from the sign of the output
        raise ValueError(f"negative_slope: expected a number >= 0, got {negative_slope!r}")
    return slope


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor | None = None,
                    negative_slope: float = 0.2) -> torch.Tensor:
    """``leaky_relu(x + bias[c], negative_slope)``, differentiable any number of times.

    Args:
        x: (B, C, ...) any float dtype (float64 on cpu/cuda/reference), any shape when
            ``bias`` is None.  Dense layouts (contiguous, channels_last, permuted) are
            kept; other strides are copied to contiguous.
        bias: None or (C,) any float dtype, added along dim 1.
        negative_slope: >= 0 (0.2 in DF-GAN); the derivative is recovered from the sign
            of the output, which needs a non-negative slope.

    Returns:
        y with x's shape and dtype (float32 arithmetic for half inputs); x's memory
        format is kept.  The gradient of x is ``dy * (1 if y > 0 else slope)``
        (so ``slope`` at exactly zero), and that gradient is itself an op of the
        same kind: double backward (gradient penalties) runs fused kernels only.
    """
    slope = _validate(x, bias, negative_slope)
    device = x.device
    backend = DISPATCH.select(device, x, bias)
    if backend == "reference":
        return bias_leaky_relu_reference(x, bias, slope)
    if not (torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad))):
        # inference: the kernel alone (autograd.Function costs a few us per call, which is
        # 10-20 % of a 2 MiB activation)
        return _forward_kernel(x, bias, slope, backend)
    return _BiasLeakyReLUFunction.apply(x, bias, slope, backend)
