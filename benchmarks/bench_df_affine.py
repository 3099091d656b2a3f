"""df_affine at DF-GAN's generator shapes (the DFBLKs of NetG at 256x256, B = 32)."""
from __future__ import annotations

import torch

from benchmarks.common import Case, backend_provider, compiled_provider, fused_backends, fwd_bwd, saved_tensor_bytes
from fastt2i import ops

# (label, B, C, H): DFBLKs of NetG(ngf=32) at 256x256, batch 32 (on CPU batch 4, same per-sample shapes).
GPU_SHAPES = [("G 256x256", 32, 64, 256), ("G 128x128", 32, 128, 128), ("G 32x32", 32, 256, 32),
              ("G 8x8", 32, 256, 8)]
CPU_SHAPES = [("G 256x256", 4, 64, 256), ("G 128x128", 4, 128, 128), ("G 32x32", 4, 256, 32)]


def _inputs(B, C, H, dtype, channels_last, device, grad):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(B, C, H, H, generator=g).to(device=device, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    gamma = (1 + 0.1 * torch.randn(2, B, C, generator=g)).to(device)
    beta = (0.1 * torch.randn(2, B, C, generator=g)).to(device)
    for t in (x, gamma, beta):
        t.requires_grad_(grad)
    return x, gamma, beta


def cases(device: str, quick: bool) -> list[Case]:
    shapes = GPU_SHAPES if device == "cuda" else CPU_SHAPES
    dtypes = [torch.bfloat16, torch.float32] if device == "cuda" else [torch.float32]
    out = []
    for label, B, C, H in shapes:
        for dtype in dtypes:
            for channels_last in (True, False):
                for mode in ("forward", "forward+backward"):
                    grad = mode != "forward"

                    def make(fn, B=B, C=C, H=H, dtype=dtype, cl=channels_last, grad=grad):
                        def closure():
                            x, gamma, beta = _inputs(B, C, H, dtype, cl, device, grad)
                            call = lambda: fn(x, gamma, beta)  # noqa: E731
                            return fwd_bwd(call, (x, gamma, beta)) if grad else call
                        return closure

                    reference = make(ops.df_affine_reference)
                    providers = {"eager": reference, "compile": compiled_provider(make, ops.df_affine_reference)}
                    for backend in fused_backends(device):
                        providers[backend] = backend_provider(backend, make(ops.df_affine))
                    numel = B * C * H * H
                    elem = torch.tensor([], dtype=dtype).element_size()
                    saved = {}
                    if grad:
                        def saved_of(fn, backend, B=B, C=C, H=H, dtype=dtype, cl=channels_last):
                            def closure():
                                x, gamma, beta = _inputs(B, C, H, dtype, cl, device, True)

                                def measure():
                                    with ops.use_backend(backend):
                                        return saved_tensor_bytes(lambda: fn(x, gamma, beta))
                                return measure
                            return closure
                        saved["eager"] = saved_of(ops.df_affine_reference, "reference")
                        for backend in fused_backends(device):
                            saved[backend] = saved_of(ops.df_affine, backend)
                    out.append(Case(
                        op="df_affine",
                        name=f"{label} B{B} C{C} {str(dtype).replace('torch.', '')}"
                             f" {'NHWC' if channels_last else 'NCHW'}",
                        mode=mode,
                        providers=providers,
                        bytes=(2 if mode == "forward" else 5) * numel * elem,
                        saved_bytes=saved,
                        quick=(label == "G 128x128" and channels_last and dtype == dtypes[0]),
                    ))
    return out
