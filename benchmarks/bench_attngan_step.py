"""One whole AttnGAN iteration at the birds shapes: G forward (64/128/256), the three D updates,
the G update with the adversarial terms, the DAMSM word and sentence losses of the 256x256 image
(Inception-v3 at 299) and the KL.

Providers: ``official`` is the official-equivalent eager fp32 step (``fastt2i.official.attngan``:
the official modules, BCE on probabilities, the per-caption Python loop of ``words_loss``);
``eager`` is fastt2i's step on the reference backend in fp32; each fused backend runs fastt2i's
step as meant (fused word attention and DAMSM ops; on GPU bf16 autocast and channels_last).
Birds shapes: GF 32, DF 64, R_NUM 2, 18 words; B = 20 on GPU, a small batch on CPU.  The text
encoder runs inside fastt2i's step (a frozen LSTM on B captions, negligible next to Inception) and
outside the official one.

``python -m benchmarks.bench_attngan_step [--batch 2] [--steps 3]`` times every provider in a
fresh process each (peak resident memory from ``ru_maxrss``), prints images/s, ratios and a
profile of where fastt2i's step spends its time (by phase and by op).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.common import Case, backend_provider, fused_backends, interleaved_step_ms
from fastt2i import ops

GPU_BATCH, CPU_BATCH = 20, 2
WORDS = 18


def _batch(B: int, device, seed: int = 0):
    """Three real image sizes, frozen-encoder-like word and sentence features, lengths 18 .. 9."""
    g = torch.Generator().manual_seed(seed)
    reals = [(torch.rand(B, 3, s, s, generator=g) * 2 - 1).to(device) for s in (64, 128, 256)]
    lens = torch.tensor([WORDS - (i % 10) for i in range(B)])
    words = torch.randn(B, 256, WORDS, generator=g) * (torch.arange(WORDS)[None, None] < lens[:, None, None])
    sent = torch.randn(B, 256, generator=g)
    caps = (torch.arange(WORDS)[None] < lens[:, None]).long() * 3
    return reals, words.to(device), sent.to(device), lens, caps.to(device)


def official_closure(B: int, device: str):
    """The official step (fp32, contiguous, reference everything)."""
    from fastt2i.models.attngan import AttnGANConfig
    from fastt2i.models.damsm import _inception_v3
    from fastt2i.official import attngan as off

    def make():
        torch.manual_seed(0)
        c = AttnGANConfig.birds()
        netG = off.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3).to(device)
        netsD = [cls(c.df_dim, 256).to(device) for cls in (off.D_NET64, off.D_NET128, off.D_NET256)]
        netG.apply(off.weights_init)
        for d in netsD:
            d.apply(off.weights_init)
        enc = off.CNN_ENCODER(_inception_v3(None)).to(device).eval()
        for p in enc.parameters():
            p.requires_grad_(False)
        optG = torch.optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
        optsD = [torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999)) for d in netsD]
        avg = [p.detach().clone() for p in netG.parameters()]
        reals, words, sent, lens, caps = _batch(B, device)
        mask = caps == 0
        class_ids = np.arange(B)
        noise = torch.empty(B, 100, device=device)

        def step():
            noise.normal_(0, 1)
            errD, errG = off.train_iteration(netG, netsD, optsD, optG, enc, reals, words, sent, mask, lens, class_ids,
                                             noise, avg, lambda_damsm=c.lambda_damsm)
            return errD.item() + errG.item()

        return step

    return make


def fastt2i_closure(B: int, device: str, amp: str, channels_last: bool):
    from fastt2i.models.attngan import AttnGANConfig
    from fastt2i.train.core import TrainConfig
    from fastt2i.train.families.attngan import AttnGANTrainer

    def make():
        trainer = AttnGANTrainer(AttnGANConfig.birds(batch_size=B),
                                 TrainConfig(data=f"synthetic:{max(B, 8)}", device=device, amp=amp,
                                             channels_last=channels_last, ema=0.999, progress=False,
                                             out_dir=os.path.join("/tmp", "bench_attngan")))
        reals, _, _, _, _ = _batch(B, device)
        ids, lens = trainer.vocab.encode_batch([trainer.dataset.caption(i) for i in range(B)])
        batch = (reals, ids, lens, [""] * B, torch.arange(B))

        def step():
            out = trainer.run_step(batch)
            trainer.update_ema()
            return out

        return step

    return make


def cases(device: str, quick: bool) -> list[Case]:
    if quick:
        return []  # seconds per iteration on a CPU: not a demo case
    B = GPU_BATCH if device == "cuda" else CPU_BATCH
    fast_amp, fast_cl = ("bf16", True) if device == "cuda" else ("none", False)
    providers = {"official": backend_provider("reference", official_closure(B, device)),
                 "eager": backend_provider("reference", fastt2i_closure(B, device, "none", False))}
    for b in fused_backends(device):
        providers[b] = backend_provider(b, fastt2i_closure(B, device, fast_amp, fast_cl))
    return [Case(op="attngan_step", name=f"AttnGAN birds 256 B{B}", mode="step", providers=providers, items=B)]


# ----------------------------------------------------------------------------- standalone: one process per provider

PROVIDERS = {
    "official": ("reference", None),
    "fastt2i-fp32": ("auto", ("none", False)),
    "fastt2i-bf16-cl": ("auto", ("bf16", True)),
}


def _run_one(name: str, B: int, steps: int, device: str) -> dict:
    backend, fast = PROVIDERS[name]
    make = official_closure(B, device) if fast is None else fastt2i_closure(B, device, *fast)
    with ops.use_backend(backend):
        fn = make()
        fn()  # warm-up (first-call allocations)
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    ms = 1e3 * statistics.median(times)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"provider": name, "ms": ms, "images_per_s": B / (ms * 1e-3), "peak_MiB": peak,
            "peak_kind": "allocated (CUDA)" if device == "cuda" else "process max RSS"}


def _interleaved(names: list[str], B: int, steps: int, device: str) -> dict:
    """Median ms per provider, their steps alternating in one process: on a shared, noisy machine
    the load then changes for every provider alike."""
    fns = {}
    for name in names:
        backend, fast = PROVIDERS[name]
        make = official_closure(B, device) if fast is None else fastt2i_closure(B, device, *fast)
        with ops.use_backend(backend):
            fns[name] = (backend, make())
    return interleaved_step_ms(fns, steps, device)


def _profile(B: int, device: str) -> str:
    from torch.profiler import ProfilerActivity, profile

    fn = fastt2i_closure(B, device, "none", False)()
    fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    phases = sorted((e for e in events if e.key.startswith("attngan:")), key=lambda e: -e.cpu_time_total)
    total = sum(e.cpu_time_total for e in phases) or 1.0
    lines = ["phase                               ms     share"]
    lines += [f"{e.key:34s} {e.cpu_time_total / 1e3:8.1f}  {100 * e.cpu_time_total / total:5.1f}%" for e in phases]
    lines.append("")
    lines.append(events.table(sort_by="self_cpu_time_total", row_limit=12))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--providers", default=",".join(PROVIDERS))
    p.add_argument("--profile", action="store_true", help="also profile fastt2i's fp32 step")
    p.add_argument("--interleave", action="store_true",
                   help="time the providers again with their steps alternating in one process (noisy machines)")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one provider, print JSON
    a = p.parse_args(argv)
    B = a.batch or (GPU_BATCH if a.device == "cuda" else CPU_BATCH)
    if a.one:
        print(json.dumps(_run_one(a.one, B, a.steps, a.device)))
        return 0
    rows = []
    for name in a.providers.split(","):
        cmd = [sys.executable, "-m", "benchmarks.bench_attngan_step", "--one", name, "--batch", str(B),
               "--steps", str(a.steps), "--device", a.device]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode:
            rows.append({"provider": name, "error": res.stderr.strip().splitlines()[-1][:300]})
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    if a.interleave:
        names = [r["provider"] for r in rows if "ms" in r]
        for r, (name, ms) in zip([r for r in rows if "ms" in r], _interleaved(names, B, a.steps, a.device).items()):
            r["ms_alone"], r["ms"], r["images_per_s"] = r["ms"], ms, B / (ms * 1e-3)
    base = next((r["ms"] for r in rows if r["provider"] == "official" and "ms" in r), None)
    print(f"AttnGAN iteration, birds shapes (GF 32, DF 64, R_NUM 2, 3 stages to 256, DAMSM at 299), B={B}, "
          f"{a.device}, median of {a.steps}" + (" (steps alternating between providers in one process)"
                                                 if a.interleave else ""))
    for r in rows:
        if "error" in r:
            print(f"  {r['provider']:16s} error: {r['error']}")
            continue
        ratio = f"  x{base / r['ms']:.2f} vs official" if base else ""
        alone = f" (alone: {r['ms_alone']:.0f} ms)" if "ms_alone" in r else ""
        print(f"  {r['provider']:16s} {r['ms']:9.0f} ms  {r['images_per_s']:7.3f} images/s  peak {r['peak_MiB']:7.0f} "
              f"MiB ({r['peak_kind']}){ratio}{alone}")
    if a.profile:
        print(_profile(B, a.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
