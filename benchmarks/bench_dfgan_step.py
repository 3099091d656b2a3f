"""The whole DF-GAN iteration: D step (hinge on real / mismatched / fake pairs + MA-GP) and G step.

GPU: the paper's shape, 256x256, B = 32, ngf = ndf = 32 (and 64x64 as the quick case).  CPU: the
demo's configuration.  Providers: ``eager`` is the official-equivalent step (reference backend, fp32,
contiguous); each fused backend runs what fastt2i is for (fused ops, bf16 autocast on GPU,
channels_last on GPU).  There is no ``compile`` provider: MA-GP's double backward does not go
through torch.compile upstream (PyTorch #91469), so the penalty path stays eager.
Case.items = images per iteration (images/s in the table); the runner reports peak memory.
"""
from __future__ import annotations

import torch

from benchmarks.common import Case, backend_provider, fused_backends
from fastt2i import ops
from fastt2i.models import DFGANConfig

GPU_SHAPES = [("256x256 B32 nf32", 256, 32, 32, False), ("64x64 B32 nf32", 64, 32, 32, True)]
# CPU: the `fastt2i demo` configuration (DFGANConfig.synthetic(): 64x64, batch 16, ngf = ndf = 16, fp32).
CPU_SHAPES = [("64x64 B16 nf16 (demo)", 64, 16, 16, True)]


def _step_closure(imsize, batch, nf, device, amp, channels_last, backend):
    from fastt2i.train import DFGANTrainer, TrainConfig

    def make():
        cfg = DFGANConfig.synthetic(imsize=imsize, ngf=nf, ndf=nf, batch_size=batch)
        with ops.use_backend(backend):
            trainer = DFGANTrainer(cfg, TrainConfig(data=f"synthetic:{max(64, batch)}", device=device, amp=amp,
                                                    channels_last=channels_last, progress=False, backend="auto"))
        g = torch.Generator().manual_seed(0)
        imgs = (torch.rand(batch, 3, imsize, imsize, generator=g) * 2 - 1).to(device)
        sent = torch.randn(batch, 256, generator=g).to(device)

        def step():
            return trainer.train_step(imgs, sent)

        return step

    return make


def cases(device: str, quick: bool) -> list[Case]:
    shapes = GPU_SHAPES if device == "cuda" else CPU_SHAPES
    fast_amp = "bf16" if device == "cuda" else "none"
    fast_cl = device == "cuda"
    out = []
    for label, imsize, batch, nf, is_quick in shapes:
        if quick and not is_quick:
            continue
        ref = _step_closure(imsize, batch, nf, device, "none", False, "reference")
        providers = {"eager": backend_provider("reference", ref)}
        for b in fused_backends(device):
            providers[b] = backend_provider(b, _step_closure(imsize, batch, nf, device, fast_amp, fast_cl, b))
        out.append(Case(op="dfgan_step", name=f"DF-GAN {label}", mode="step", providers=providers,
                        quick=is_quick, items=batch))
    return out
