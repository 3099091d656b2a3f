"""gate_split at DR-GAN's SDM shapes: the spatial gate of the 64x64 and 128x128 stages (batch 8, C 32 and
64), one gate per position (B, 1, H, W) and one per element, NCHW and channels_last, forward and
forward+backward (both parts used), float32.

GB/s counts what the fused kernels move: forward reads x and the logits and writes both parts;
backward reads both upstream gradients, x and the logits and writes dx and dlogits.
"""
from __future__ import annotations

import torch

from benchmarks.common import Case, backend_provider, compiled_provider, fused_backends, fwd_bwd
from fastt2i import ops

B = 8
SHAPES = [(32, 64), (64, 64), (32, 128), (64, 128)]  # (C, H = W)


def _inputs(C, H, per_position, channels_last, device, grad):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(B, C, H, H, generator=g).to(device)
    logits = (2 * torch.randn(B, 1 if per_position else C, H, H, generator=g)).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        logits = logits.contiguous(memory_format=torch.channels_last)
    return logits.requires_grad_(grad), x.requires_grad_(grad)


def cases(device: str, quick: bool) -> list[Case]:
    out = []
    for C, H in SHAPES:
        for per_position in (True, False):
            for channels_last in (False, True):
                for mode in ("forward", "forward+backward"):
                    grad = mode != "forward"

                    def make(fn, C=C, H=H, pp=per_position, cl=channels_last, grad=grad):
                        def closure():
                            logits, x = _inputs(C, H, pp, cl, device, grad)
                            call = lambda: fn(logits, x)  # noqa: E731
                            return fwd_bwd(call, (logits, x)) if grad else call
                        return closure

                    reference = make(ops.gate_split_reference)
                    providers = {"eager": reference, "compile": compiled_provider(make, ops.gate_split_reference)}
                    for backend in fused_backends(device):
                        providers[backend] = backend_provider(backend, make(ops.gate_split))
                    n = B * C * H * H
                    n_logits = B * H * H if per_position else n
                    moved = 3 * n + n_logits if mode == "forward" else (3 * n + n_logits) + (4 * n + 2 * n_logits)
                    gate = "gate B1HW" if per_position else "gate BCHW"
                    out.append(Case(op="gate_split", name=f"SDM {H}x{H} B{B} C{C} {gate} float32"
                                    f" {'NHWC' if channels_last else 'NCHW'}", mode=mode, providers=providers,
                                    bytes=moved * 4, quick=(C == 32 and H == 64 and per_position and channels_last)))
    return out
