"""word_region_attention at the generators' shapes: AttnGAN CUB (B 20, C 32, T 18), COCO (B 14, C 48,
T 12) at the 64x64 and 128x128 stages, and a large case (B 16, C 64, T 32, 256x256).

Captions are ragged (random lengths, fixed seed), as in training.  ``saved_bytes`` counts every
storage autograd keeps for backward, the inputs included (the fused op keeps regions, words, the
mask and a (B, N) row log-sum-exp; eager keeps regions and two (B, N, T) probability tensors).
"""
from __future__ import annotations

import torch

from benchmarks.common import Case, backend_provider, compiled_provider, fused_backends, fwd_bwd, saved_tensor_bytes
from fastt2i import ops

# (label, B, C, T, H)
GPU_SHAPES = [
    ("AttnGAN 64x64", 20, 32, 18, 64),
    ("AttnGAN 128x128", 20, 32, 18, 128),
    ("COCO 64x64", 14, 48, 12, 64),
    ("COCO 128x128", 14, 48, 12, 128),
    ("large 256x256", 16, 64, 32, 256),
]
# On CPU the real batch at 64x64 (the C++ kernel's target is measured there) and a reduced 128x128.
CPU_SHAPES = [
    ("AttnGAN 64x64", 20, 32, 18, 64),
    ("COCO 64x64", 14, 48, 12, 64),
    ("AttnGAN 128x128", 4, 32, 18, 128),
]


def _inputs(B, C, T, H, dtype, channels_last, device, grad):
    g = torch.Generator(device="cpu").manual_seed(0)
    regions = torch.randn(B, C, H, H, generator=g).to(device=device, dtype=dtype)
    if channels_last:
        regions = regions.contiguous(memory_format=torch.channels_last)
    words = torch.randn(B, C, T, generator=g).to(device=device, dtype=dtype)
    lengths = torch.randint(max(1, T // 3), T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None, :] >= lengths[:, None]).to(device)
    regions.requires_grad_(grad)
    words.requires_grad_(grad)
    return regions, words, mask


def cases(device: str, quick: bool) -> list[Case]:
    shapes = GPU_SHAPES if device == "cuda" else CPU_SHAPES
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]
    layouts = [False, True]
    out = []
    for label, B, C, T, H in shapes:
        for dtype in dtypes:
            for channels_last in layouts:
                for mode in ("forward", "forward+backward"):
                    grad = mode != "forward"

                    def make(fn, B=B, C=C, T=T, H=H, dtype=dtype, cl=channels_last, grad=grad):
                        def closure():
                            regions, words, mask = _inputs(B, C, T, H, dtype, cl, device, grad)
                            call = lambda: fn(regions, words, mask)  # noqa: E731
                            return fwd_bwd(call, (regions, words)) if grad else call
                        return closure

                    reference = make(ops.word_region_attention_reference)
                    providers = {"eager": reference, "compile": compiled_provider(make, ops.word_region_attention_reference)}
                    for backend in fused_backends(device):
                        providers[backend] = backend_provider(backend, make(ops.word_region_attention))
                    saved = {}
                    if grad:
                        def saved_of(fn, backend, B=B, C=C, T=T, H=H, dtype=dtype, cl=channels_last):
                            def closure():
                                regions, words, mask = _inputs(B, C, T, H, dtype, cl, device, True)

                                def measure():
                                    with ops.use_backend(backend):
                                        return saved_tensor_bytes(lambda: fn(regions, words, mask))
                                return measure
                            return closure
                        saved["eager"] = saved_of(ops.word_region_attention_reference, "reference")
                        for backend in fused_backends(device):
                            saved[backend] = saved_of(ops.word_region_attention, backend)
                    elem = torch.tensor([], dtype=dtype).element_size()
                    activations = B * C * H * H
                    macs = B * H * H * C * T
                    out.append(Case(
                        op="word_region_attention",
                        name=f"{label} B{B} C{C} T{T} {str(dtype).replace('torch.', '')}"
                             f" {'NHWC' if channels_last else 'NCHW'}",
                        mode=mode,
                        providers=providers,
                        # forward: read regions, write context; backward: read regions and dO, write dregions
                        bytes=(2 if mode == "forward" else 5) * activations * elem,
                        # forward: scores + context; backward: scores, dP, dregions and two dwords products
                        flops=2 * macs * (2 if mode == "forward" else 7),
                        saved_bytes=saved,
                        quick=(label == "AttnGAN 64x64" and dtype == dtypes[0] and not channels_last),
                    ))
    return out

