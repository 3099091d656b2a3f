"""The whole DF-GAN iteration: D step (hinge on real / mismatched / fake pairs + MA-GP) and G step.

GPU: the paper's shape, 256x256, B = 32, ngf = ndf = 32 (and 64x64 as the quick case).  CPU: the
``fastt2i demo`` configuration and options (``fastt2i.train.demo.demo_configs``: 32x32, batch 16,
ngf = ndf = 16, fp32, contiguous), and 64x64 at the same widths.  Providers: ``eager`` is the
official-equivalent step (reference backend, fp32, contiguous); each fused backend runs what
fastt2i is for (the demo's options on CPU; fused ops, bf16 autocast and channels_last on GPU);
on CPU ``<backend>+nhwc`` is the same with channels_last, labelled apart.  There is no ``compile`` provider: MA-GP's double backward does not go
through torch.compile upstream (PyTorch #91469), so the penalty path stays eager.
Case.items = images per iteration (images/s in the table); the runner reports peak memory.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from benchmarks.common import Case, backend_provider, fused_backends
from fastt2i import ops
from fastt2i.models import DFGANConfig

GPU_SHAPES = [("256x256 B32 nf32", 256, 32, 32, False), ("64x64 B32 nf32", 64, 32, 32, True)]


def _cpu_shapes():
    """(label, imsize, batch, nf, quick, model config) of the demo's CPU run, and at 64x64."""
    from fastt2i.train.demo import demo_configs

    demo, _ = demo_configs(torch.device("cpu"))
    at64 = replace(demo, imsize=64)
    return [(f"{c.imsize}x{c.imsize} B{c.batch_size} nf{c.ngf}{' (demo)' if c is demo else ''}", c.imsize,
             c.batch_size, c.ngf, c is demo, c) for c in (demo, at64)]


def _step_closure(imsize, batch, nf, device, amp, channels_last, backend, mcfg=None):
    from fastt2i.train import DFGANTrainer, TrainConfig

    def make():
        cfg = mcfg or DFGANConfig.synthetic(imsize=imsize, ngf=nf, ndf=nf, batch_size=batch)
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
    if device == "cuda":
        shapes = [(*shape, None) for shape in GPU_SHAPES]
        fast_amp, fast_cl = "bf16", True
    else:
        from fastt2i.train.demo import demo_configs

        shapes = _cpu_shapes()
        _, demo_options = demo_configs(torch.device("cpu"))
        fast_amp, fast_cl = demo_options["amp"], demo_options["channels_last"]
    out = []
    for label, imsize, batch, nf, is_quick, mcfg in shapes:
        if quick and not is_quick:
            continue
        ref = _step_closure(imsize, batch, nf, device, "none", False, "reference", mcfg)
        providers = {"eager": backend_provider("reference", ref)}
        for b in fused_backends(device):
            providers[b] = backend_provider(b, _step_closure(imsize, batch, nf, device, fast_amp, fast_cl, b, mcfg))
            if device == "cpu" and not fast_cl:
                providers[f"{b}+nhwc"] = backend_provider(
                    b, _step_closure(imsize, batch, nf, device, fast_amp, True, b, mcfg))
        out.append(Case(op="dfgan_step", name=f"DF-GAN {label}", mode="step", providers=providers,
                        quick=is_quick, items=batch))
    return out
