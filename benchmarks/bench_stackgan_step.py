"""One training iteration of GAN-INT-CLS, StackGAN (Stage I and II) and StackGAN++: the D step(s) and the G step.

Providers:
- ``official``: the official computation in eager fp32, contiguous (``fastt2i.official.*``: sigmoid
  heads, BCELoss, the official loss functions, plain Adam steps);
- ``eager``: fastt2i's family step (``Trainer.train_step``) in fp32, contiguous;
- ``bf16+cl``: the same step under bf16 autocast with channels_last, what fastt2i runs on a GPU.
No fused op is involved (the profile found nothing worth fusing in these families: convolutions
dominate), so there is no per-backend provider.  Both sides start from text embeddings (the
official code trains on pre-extracted ones), so the char-CNN-RNN is not in the timing; the
EMA update is not either.  Case.items = images per iteration.

GPU: the papers' CUB shapes.  CPU: small widths and batches (the shared 2-core machine).

GAN-INT-CLS profile (CPU case, one iteration, ``FlopCounterMode`` + the profiler's op counts):
``eager`` 8.39 GFLOP in 3,496 aten calls, ``official`` 9.07 GFLOP in 3,737 calls, the same 35
convolution backwards: fastt2i makes the D step's fakes without an autograd graph and sends the
G step's backward into G's parameters only (the Lua / official step also computes D's weight
gradients there, then discards them).  A step timed slower than ``official`` on the shared
machine is load, not work: compare interleaved rounds (``--repeat``).
"""
from __future__ import annotations

import torch

from benchmarks.common import Case

# (label, family, model-config kwargs, batch, quick)
GPU_CASES = [
    ("GAN-INT-CLS 64x64 B64 ngf128 ndf64", "gan-int-cls", dict(ngf=128, ndf=64), 64, True),
    ("StackGAN-I 64x64 B64 ngf192 ndf96", "stackgan", dict(stage=1, ngf=192, ndf=96, c_dim=128, z_dim=100), 64, True),
    ("StackGAN-II 256x256 B16 ngf192 ndf96", "stackgan", dict(stage=2, ngf=192, ndf=96, c_dim=128, z_dim=100), 16, False),
    ("StackGAN++ 3 stages B24 nf64", "stackgan2", dict(branch_num=3, ngf=64, ndf=64, c_dim=128, z_dim=100), 24, False),
]
CPU_CASES = [
    ("GAN-INT-CLS 64x64 B8 nf32", "gan-int-cls", dict(ngf=32, ndf=32, nz=100, nt=128), 8, True),
    ("StackGAN-I 64x64 B8 nf32", "stackgan", dict(stage=1, ngf=32, ndf=32, c_dim=128, z_dim=100), 8, True),
    ("StackGAN++ 2 stages B4 nf16", "stackgan2", dict(branch_num=2, ngf=16, ndf=16, c_dim=128, z_dim=100), 4, False),
]


def _config(family: str, kw: dict, batch: int):
    from fastt2i.models import GANINTCLSConfig, StackGAN2Config, StackGANConfig

    cls = {"gan-int-cls": GANINTCLSConfig, "stackgan": StackGANConfig, "stackgan2": StackGAN2Config}[family]
    return cls(batch_size=batch, **kw)


def _inputs(mcfg, batch: int, device):
    g = torch.Generator().manual_seed(0)
    size = mcfg.imsize
    imgs = (torch.rand(batch, 3, size, size, generator=g) * 2 - 1).to(device)
    text = torch.randn(batch, 1024, generator=g).to(device)
    return imgs, text


def _fastt2i_closure(family, kw, batch, device, amp, channels_last):
    def make():
        from fastt2i.train import TrainConfig
        from fastt2i.train.registry import get_family

        mcfg = _config(family, kw, batch)
        options = {}
        if family == "stackgan" and mcfg.stage == 2:
            from fastt2i.models.stackgan import Stage1Generator

            s1 = Stage1Generator(mcfg.ngf, mcfg.c_dim, mcfg.z_dim, mcfg.text_dim)
            options["stage1_g"] = {k: v.clone() for k, v in s1.state_dict().items()}
        tcfg = TrainConfig(data="synthetic:64", device=device, amp=amp, channels_last=channels_last, progress=False,
                           out_dir="/tmp/fastt2i_bench_stackgan", options=options)
        trainer = get_family(family).trainer(mcfg, tcfg)
        imgs, text = _inputs(mcfg, batch, device)
        return lambda: trainer.train_step(imgs, text)

    return make


def _official_closure(family, kw, batch, device):
    def make():
        from fastt2i.official import gan_int_cls as o_gic
        from fastt2i.official import stackgan as o_sg
        from fastt2i.official import stackgan2 as o_sg2

        mcfg = _config(family, kw, batch)
        imgs, text = _inputs(mcfg, batch, device)

        def adam(m):
            return torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=2e-4, betas=(0.5, 0.999))

        def update(opt, loss):
            opt.zero_grad()
            loss.backward()
            opt.step()

        if family == "gan-int-cls":
            netG = o_gic.NetG(mcfg.ngf, mcfg.nz, mcfg.nt).to(device)
            netD = o_gic.NetD(mcfg.ndf, mcfg.nt).to(device)
            optG, optD = adam(netG), adam(netD)
            wrong = imgs.roll(1, 0)

            def step():
                update(optD, o_gic.fDx(netG, netD, imgs, text, wrong, torch.randn(batch, mcfg.nz, 1, 1, device=device)))
                update(optG, o_gic.fGx(netG, netD, text, torch.randn(batch * 3 // 2, mcfg.nz, 1, 1, device=device)))
            return step

        if family == "stackgan":
            s1 = o_sg.STAGE1_G(mcfg.ngf, mcfg.c_dim, mcfg.z_dim)
            netG = (s1 if mcfg.stage == 1 else o_sg.STAGE2_G(s1, mcfg.ngf, mcfg.c_dim, mcfg.z_dim, r_num=mcfg.r_num)).to(device)
            netD = (o_sg.STAGE1_D if mcfg.stage == 1 else o_sg.STAGE2_D)(mcfg.ndf, mcfg.c_dim).to(device)
            optG, optD = adam(netG), adam(netD)
            ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)
            for ca in (m for m in netG.modules() if isinstance(m, o_sg.CA_NET)):
                ca.ca_eps = None

            def step():
                _, fake, mu, logvar = netG(text, torch.randn(batch, mcfg.z_dim, device=device))
                update(optD, o_sg.compute_discriminator_loss(netD, imgs, fake, ones, zeros, mu)[0])
                update(optG, o_sg.compute_generator_loss(netD, fake, ones, mu) + o_sg.KL_loss(mu, logvar) * 2.0)
            return step

        netG = o_sg2.G_NET(mcfg.ngf, mcfg.c_dim, mcfg.z_dim, r_num=mcfg.r_num, branch_num=mcfg.branch_num).to(device)
        netsD = [cls(mcfg.ndf, mcfg.c_dim).to(device)
                 for cls in (o_sg2.D_NET64, o_sg2.D_NET128, o_sg2.D_NET256)[:mcfg.branch_num]]
        optG, optsD = adam(netG), [adam(d) for d in netsD]
        reals = _pyramid(imgs, mcfg.branch_num)
        wrongs = [r.roll(1, 0) for r in reals]

        def step():
            fakes, mu, logvar = netG(torch.randn(batch, mcfg.z_dim, device=device), text)
            for d, o, r, w, f in zip(netsD, optsD, reals, wrongs, fakes):
                update(o, o_sg2.d_loss(d, r, w, f, mu, mcfg.uncond_coeff))
            update(optG, o_sg2.g_loss(netsD, fakes, mu, logvar, mcfg.uncond_coeff, mcfg.color_coeff, mcfg.kl_coeff)[1])
        return step

    return make


def _pyramid(imgs, branch_num):
    from fastt2i.train.families.stackgan2 import image_pyramid

    return image_pyramid(imgs, branch_num)


def cases(device: str, quick: bool) -> list[Case]:
    out = []
    for label, family, kw, batch, is_quick in (GPU_CASES if device == "cuda" else CPU_CASES):
        if quick and not is_quick:
            continue
        providers = {
            "official": _official_closure(family, kw, batch, device),
            "eager": _fastt2i_closure(family, kw, batch, device, "none", False),
            "bf16+cl": _fastt2i_closure(family, kw, batch, device, "bf16", True),
        }
        out.append(Case(op="stackgan_step", name=label, mode="step", providers=providers, quick=is_quick, items=batch))
    return out
