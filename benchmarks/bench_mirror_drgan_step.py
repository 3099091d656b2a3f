"""One MirrorGAN or DR-GAN iteration at the birds shapes, and profiles of GLAM's sentence attention
and of DR-GAN's spatial gate.

Providers (timed with their steps alternating in one process, medians: the machine is shared):
- ``official``: the official-equivalent eager fp32 step (``fastt2i.official.mirrorgan.train_iteration``:
  official modules, BCE on probabilities, packed STREAM caption loss, reference backend);
- ``fastt2i-fp32``: fastt2i's modules and losses (fused word attention on the best backend), fp32;
- ``fastt2i-bf16-cl``: the same under bf16 autocast with channels_last.
Birds shapes: GF 32, DF 64, R_NUM 2, 18 words, STREAM = ResNet-152 at 224 (random weights: the
cost is the same) + LSTM 512; B small on CPU.

``--model drgan``: one DR-GAN iteration at its birds shapes (GF 64, DF 32, R_NUM 2, lambda_DAMSM 5,
the DAMSM Inception at 299 with random weights): ``official`` = ``fastt2i.official.drgan.train_iteration``
(the draft code's modules, SAGAN spectral norm, BCE on probabilities, DAMSM Python loops);
``fastt2i-*`` = ``DRGANTrainer.run_step`` (preset ``draft``, the same computation) at fp32, or
bf16 autocast + channels_last.

``--profile-glam``: forward + backward of one GLAM stage at (B, 32, S, S), split into the word
attention, the sentence attention chain (linear -> broadcast multiply -> conv1x1 -> channel
softmax -> multiply) and the rest of the stage (conv1x1, ResBlocks, upBlock): what a fused
sentence-attention op could save at most.

``--profile-gate``: forward + backward of one DR-GAN SDM stage at (B, 64, S, S), split into the
word attention, the gate nets f (conv3x3 -> BN -> LReLU -> conv1x1 -> BN, twice), the gate split
itself (sigmoid, key = m * x, non-key = x - key, for Q and h: ``gate_split``, what a fused gate op
replaces) and the rest (ResBlocks on Q, ResBlocks on the key parts, upBlock): the gate split's share
is the most a fused gate can save of a stage.

``python -m benchmarks.bench_mirror_drgan_step [--model mirrorgan|drgan] [--batch 2] [--steps 3]
[--profile-glam] [--profile-gate] [--no-step]``
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.common import interleaved_step_ms
from fastt2i import ops

WORDS = 18


def _batch(B, device, vocab=5450, seed=0):
    g = torch.Generator().manual_seed(seed)
    reals = [(torch.rand(B, 3, s, s, generator=g) * 2 - 1).to(device) for s in (64, 128, 256)]
    lens = torch.tensor(sorted([WORDS - (i % 10) for i in range(B)], reverse=True))
    valid = torch.arange(WORDS)[None] < lens[:, None]
    words = (torch.randn(B, 256, WORDS, generator=g) * valid[:, None]).to(device)
    sent = torch.randn(B, 256, generator=g).to(device)
    caps = (torch.randint(1, vocab, (B, WORDS), generator=g) * valid).to(device)
    return reals, words, sent, lens, caps, (~valid).to(device)


def official_closure(B, device):
    import torchvision

    from fastt2i.models.mirrorgan import MirrorGANConfig
    from fastt2i.official import attngan as off_a
    from fastt2i.official import mirrorgan as off

    torch.manual_seed(0)
    c = MirrorGANConfig.birds()
    netG = off.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3).to(device).apply(off_a.weights_init)
    netsD = [cls(c.df_dim, 256).to(device).apply(off_a.weights_init)
             for cls in (off_a.D_NET64, off_a.D_NET128, off_a.D_NET256)]
    cnn = off.CAPTION_CNN(256, torchvision.models.resnet152(weights=None)).to(device).eval()
    rnn = off.CAPTION_RNN(256, 512, 5450, 1).to(device).requires_grad_(False)
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optsD = [torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999)) for d in netsD]
    avg = [p.detach().clone() for p in netG.parameters()]
    reals, words, sent, lens, caps, mask = _batch(B, device)
    noise = torch.empty(B, 100, device=device)

    def step():
        noise.normal_(0, 1)
        errD, errG = off.train_iteration(netG, netsD, optsD, optG, cnn, rnn, reals, caps, lens, words, sent, mask,
                                         noise, avg, c.lambda_caption)
        return errD.item() + errG.item()

    return step


def fastt2i_closure(B, device, amp, channels_last):
    from fastt2i.losses import discriminator_loss, kl_loss
    from fastt2i.losses.mirrorgan import generator_loss
    from fastt2i.models.mirrorgan import MirrorGAN, MirrorGANConfig
    from fastt2i.models.stream import STREAM

    torch.manual_seed(0)
    c = MirrorGANConfig.birds()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = MirrorGAN(c).to(device).to(memory_format=fmt)
    stream = STREAM(5450).to(device).to(memory_format=fmt).eval().requires_grad_(False)
    optG = torch.optim.Adam(model.netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optD = torch.optim.Adam(model.netsD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    ema = [p.detach().clone() for p in model.netG.parameters()]
    reals, words, sent, lens, caps, mask = _batch(B, device)
    reals = [x.contiguous(memory_format=fmt) for x in reals]
    ctx = (lambda: torch.autocast(device, dtype=torch.bfloat16)) if amp == "bf16" else \
        (lambda: torch.autocast(device, enabled=False))

    def step():
        z = torch.randn(B, 100, device=device)
        with ctx():
            fake, _, mu, logvar = model.netG(z, sent, words, mask, return_attention=False)
            errD = sum(discriminator_loss(d, reals[i], fake[i], sent)[0] for i, d in enumerate(model.netsD))
        optD.zero_grad(set_to_none=True)
        errD.backward()
        optD.step()
        with ctx():
            errG, _ = generator_loss(model.netsD, stream.caption_cnn, stream.caption_rnn, fake, caps, lens, words, sent,
                                     c.lambda_caption)
            errG = errG + kl_loss(mu, logvar)
        optG.zero_grad(set_to_none=True)
        errG.backward(inputs=list(model.netG.parameters()))
        optG.step()
        with torch.no_grad():
            for a, p in zip(ema, model.netG.parameters()):
                a.lerp_(p, 0.001)
        return errD.item() + errG.item()

    return step


def drgan_official_closure(B, device):
    import numpy as np

    from fastt2i.models.damsm import _inception_v3
    from fastt2i.models.drgan import DRGANConfig
    from fastt2i.official import attngan as off_a
    from fastt2i.official import drgan as off

    torch.manual_seed(0)
    c = DRGANConfig.draft_code()
    netG = off.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3, batch_size=B).to(device).apply(off_a.weights_init)
    netsD = [cls(c.df_dim, 256, 100).to(device) for cls in (off.D_NET64, off.D_NET128, off.D_NET256)]
    enc = off_a.CNN_ENCODER(_inception_v3(None)).to(device).eval().requires_grad_(False)
    optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optsD = [torch.optim.Adam([p for p in d.parameters() if p.requires_grad], lr=2e-4, betas=(0.5, 0.999))
             for d in netsD]
    reals, words, sent, lens, caps, mask = _batch(B, device)
    noise = torch.empty(B, 100, device=device)
    class_ids = np.arange(B)

    def step():
        noise.normal_(0, 1)
        errD, errG = off.train_iteration(netG, netsD, optsD, optG, enc, reals, words, sent, mask, lens, class_ids,
                                         noise, c.lambda_damsm)
        return errD.item() + errG.item()

    return step


def drgan_fastt2i_closure(B, device, amp, channels_last):
    from fastt2i.models.drgan import DRGANConfig
    from fastt2i.train.core import TrainConfig
    from fastt2i.train.families.drgan import DRGANTrainer

    trainer = DRGANTrainer(DRGANConfig.draft_code(batch_size=B),
                           TrainConfig(data=f"synthetic:{max(B, 8)}", device=device, amp=amp,
                                       channels_last=channels_last, ema=0.999, progress=False,
                                       out_dir="/tmp/bench_drgan"))
    reals = _batch(B, device)[0]
    ids, lens = trainer.vocab.encode_batch([trainer.dataset.caption(i) for i in range(B)])
    batch = (reals, ids, lens, [""] * B, torch.arange(B))

    def step():
        out = trainer.run_step(batch)
        trainer.update_ema()
        return out["errD"] + out["errG"]

    return step


def cases(device: str, quick: bool):
    """For ``benchmarks.run``: the MirrorGAN and DR-GAN iterations (seconds per iteration on a CPU:
    not quick cases)."""
    from benchmarks.common import Case, backend_provider, fused_backends

    if quick:
        return []
    B = 12 if device == "cuda" else 2
    fast = ("bf16", True) if device == "cuda" else ("none", False)
    providers = {"official": backend_provider("reference", lambda: official_closure(B, device)),
                 "eager": backend_provider("reference", lambda: fastt2i_closure(B, device, "none", False))}
    for b in fused_backends(device):
        providers[b] = backend_provider(b, lambda: fastt2i_closure(B, device, *fast))
    out = [Case(op="mirrorgan_step", name=f"MirrorGAN birds 256 B{B}", mode="step", providers=providers, items=B)]
    providers = {"official": backend_provider("reference", lambda: drgan_official_closure(B, device)),
                 "eager": backend_provider("reference", lambda: drgan_fastt2i_closure(B, device, "none", False))}
    for b in fused_backends(device):
        providers[b] = backend_provider(b, lambda: drgan_fastt2i_closure(B, device, *fast))
    out.append(Case(op="drgan_step", name=f"DR-GAN birds 256 B{B}", mode="step", providers=providers, items=B))
    return out


PROVIDERS = {"official": ("reference", None), "fastt2i-fp32": ("auto", ("none", False)),
             "fastt2i-bf16-cl": ("auto", ("bf16", True))}


def interleaved(names, B, steps, device, model="mirrorgan"):
    official, fastt2i = ((official_closure, fastt2i_closure) if model == "mirrorgan"
                         else (drgan_official_closure, drgan_fastt2i_closure))
    fns = {}
    for name in names:
        backend, fast = PROVIDERS[name]
        with ops.use_backend(backend):
            fns[name] = (backend, official(B, device) if fast is None else fastt2i(B, device, *fast))
    return interleaved_step_ms(fns, steps, device)


def profile_glam(B, S, device, reps):
    """ms (median) of forward + backward of each part of one GLAM stage at (B, 32, S, S)."""
    from fastt2i.models.mirrorgan import NEXT_STAGE_G

    torch.manual_seed(0)
    stage = NEXT_STAGE_G(32, 256, 100, 2).to(device)
    att = stage.att
    h = torch.randn(B, 32, S, S, device=device, requires_grad=True)
    c_code = torch.randn(B, 100, device=device)
    _, words, _, _, _, mask = _batch(B, device)

    def word_part():
        ctx, _ = super(type(att), att).forward(h, words, mask, return_attention=False)
        return ctx

    def sentence_part():
        return att.sentence_attention(h, c_code)[0]

    def rest():
        x = torch.randn(B, 96, S, S, device=device, requires_grad=True)
        return stage.upsample(stage.residual(stage.conv(x)))

    out = {}
    for name, fn in (("word attention", word_part), ("sentence attention", sentence_part), ("rest of stage", rest)):
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn().sum().backward()
            ts.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(ts)
    return out


def profile_gate(B, S, device, reps, ngf=64):
    """ms (median) of forward + backward of each part of one DR-GAN SDM stage at (B, ngf, S, S)."""
    from fastt2i.models.drgan import NEXT_STAGE_G, gate_split
    from fastt2i.ops.gate_split import gate_split_reference

    torch.manual_seed(0)
    stage = NEXT_STAGE_G(ngf, 256, 100, 2).to(device)
    _, words, _, _, _, mask = _batch(B, device)

    def leaf(*shape):
        return torch.randn(*shape, device=device, requires_grad=True)

    def word_part():
        return stage.att(leaf(B, ngf, S, S), words, mask, return_attention=False)[0]

    def gate_nets():
        return stage.reduct_demension(leaf(B, ngf, S, S)) + stage.reduct_demension2(leaf(B, ngf, S, S))

    gate_inputs = [leaf(B, ngf, S, S) for _ in range(4)]  # made once: drawing them would dominate the split

    def gate_splits(split=gate_split):  # Q's and h's (the model's split: the fused op on a fused backend)
        lq, q, lh, h = gate_inputs
        kq, nq = split(lq, q)
        kh, nh = split(lh, h)
        return kq.sum() + nq.sum() + kh.sum() + nh.sum()

    def eager_gate_splits():  # the same in plain PyTorch: what the fused op replaces
        return gate_splits(gate_split_reference)

    def rest():
        q = stage.residual0(leaf(B, ngf, S, S))
        return q.sum() + stage.upsample(stage.residual(leaf(B, 2 * ngf, S, S))).sum()

    out = {}
    for name, fn in (("word attention", word_part), ("gate nets f", gate_nets), ("gate split", gate_splits),
                     ("gate split, eager", eager_gate_splits), ("rest of stage", rest)):
        fn().sum().backward()  # warm-up
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn().sum().backward()
            if device == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t0)
        out[name] = 1e3 * statistics.median(ts)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--model", choices=("mirrorgan", "drgan"), default="mirrorgan", help="whose iteration to time")
    p.add_argument("--profile-glam", action="store_true")
    p.add_argument("--profile-gate", action="store_true", help="DR-GAN's SDM stage, part by part")
    p.add_argument("--no-step", action="store_true", help="only the profiles")
    a = p.parse_args(argv)
    B = a.batch or (12 if a.device == "cuda" else 2)
    if a.profile_glam:
        for S in (64, 128):
            r = profile_glam(B, S, a.device, max(a.steps, 3))
            total = sum(r.values())
            print(f"GLAM stage at {S}x{S}, B={B}, fwd+bwd: " +
                  ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in r.items()))
    if a.profile_gate:
        for S in (64, 128):
            r = profile_gate(B, S, a.device, max(a.steps, 3))
            total = sum(v for k, v in r.items() if k != "gate split, eager")  # one split per stage
            print(f"SDM stage at {S}x{S}, B={B}, fwd+bwd: " +
                  ", ".join(f"{k} {v:.1f} ms ({100 * v / total:.0f}%)" for k, v in r.items()))
    if not a.no_step:
        names = a.providers.split(",")
        ms = interleaved(names, B, a.steps, a.device, a.model)
        base = ms.get("official")
        for n in names:
            ratio = f"  x{base / ms[n]:.2f} vs official" if base else ""
            print(f"{n:16s} {ms[n]:9.1f} ms/iter  {B / ms[n] * 1e3:7.2f} images/s{ratio}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
