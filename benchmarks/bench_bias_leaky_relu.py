"""bias_leaky_relu at DF-GAN discriminator shapes (every D_Block's two LeakyReLU(0.2), no bias, and
the bias form of StyleGAN-style blocks), forward and forward+backward, NCHW and channels_last.

CPU: NetD(ndf=32) at 64x64 batch 16 (the demo's D) and the first D_Block of NetD at 256x256, batch 4.
"""
from __future__ import annotations

import torch

from benchmarks.common import Case, backend_provider, compiled_provider, fused_backends, fwd_bwd
from fastt2i import ops

# (label, B, C, H, with_bias)
GPU_SHAPES = [("D 256x256 block1", 32, 64, 128, False), ("D 256x256 block1 +bias", 32, 64, 128, True),
              ("D 32x32", 32, 256, 16, False)]
CPU_SHAPES = [("D 64x64 block1", 16, 32, 32, False), ("D 256x256 block1", 4, 64, 128, False),
              ("D 256x256 block1 +bias", 4, 64, 128, True)]


def _inputs(B, C, H, with_bias, channels_last, device, grad):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(B, C, H, H, generator=g).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    bias = (0.1 * torch.randn(C, generator=g)).to(device) if with_bias else None
    x.requires_grad_(grad)
    if bias is not None:
        bias.requires_grad_(grad)
    return x, bias


def cases(device: str, quick: bool) -> list[Case]:
    out = []
    for label, B, C, H, with_bias in GPU_SHAPES if device == "cuda" else CPU_SHAPES:
        for channels_last in (False, True):
            for mode in ("forward", "forward+backward"):
                grad = mode != "forward"

                def make(fn, B=B, C=C, H=H, wb=with_bias, cl=channels_last, grad=grad):
                    def closure():
                        x, bias = _inputs(B, C, H, wb, cl, device, grad)
                        call = lambda: fn(x, bias, 0.2)  # noqa: E731
                        return fwd_bwd(call, [t for t in (x, bias) if t is not None]) if grad else call
                    return closure

                reference = make(ops.bias_leaky_relu_reference)
                providers = {"eager": reference, "compile": compiled_provider(make, ops.bias_leaky_relu_reference)}
                for backend in fused_backends(device):
                    providers[backend] = backend_provider(backend, make(ops.bias_leaky_relu))
                numel = B * C * H * H
                out.append(Case(op="bias_leaky_relu", name=f"{label} B{B} C{C} {H}x{H} float32"
                                f" {'NHWC' if channels_last else 'NCHW'}", mode=mode, providers=providers,
                                bytes=(2 if mode == "forward" else 5) * numel * 4))
    if device == "cpu":
        out.append(_call_cost_case())
    return out


def _call_cost_case() -> Case:
    """The cost of one call, on a 1-element tensor: what the op adds to a small activation beyond its
    bytes (Python validation, dispatch, autograd.Function) against ATen's C++ binding of leaky_relu.
    Not a kernel target (op name ``call_cost``); bias_leaky_relu's no-bias rows are read against it."""
    def make(fn):
        def closure():
            x = torch.randn(1)
            return lambda: fn(x, None, 0.2)
        return closure

    eager = make(lambda x, bias, slope: torch.nn.functional.leaky_relu(x, slope))
    providers = {"eager": eager}
    for backend in fused_backends("cpu"):
        providers[backend] = backend_provider(backend, make(ops.bias_leaky_relu))
    return Case(op="call_cost", name="bias_leaky_relu vs F.leaky_relu, 1 element", mode="forward",
                providers=providers)
