"""The demo (``fastt2i demo`` / ``python -m fastt2i.train.demo``): DF-GAN 64x64 on the synthetic
shapes for a few minutes on whatever device there is, a sample grid for fixed captions under
``demo_out/``, and a line comparing the training-step time of the fused backends with the
reference.

On a GPU the fused run is what fastt2i is for (fused ops, bf16 autocast, channels_last) and the
reference is the official-equivalent eager fp32 step; on a CPU both run fp32 (bf16 on CPU is
slower than fp32) and differ only in the backend.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from fastt2i import ops
from fastt2i.models import DFGANConfig

from .core import TrainConfig, resolve_device
from .families.dfgan import DFGANTrainer

DEMO_CAPTIONS = [
    "a large red circle",
    "a large blue square",
    "a large green triangle",
    "a large yellow diamond",
    "a small purple circle",
    "a small red square",
    "a small blue triangle",
    "a small green diamond",
    "a small red circle above a large blue square",
    "a large yellow triangle below a small green circle",
    "a small blue diamond to the left of a large red circle",
    "a large purple square to the right of a small yellow circle",
    "a large green circle",
    "a large purple triangle",
    "a small yellow square",
    "a small blue circle below a large red triangle",
]


def demo_configs(device: torch.device) -> tuple[DFGANConfig, dict]:
    if device.type == "cuda":
        return DFGANConfig.synthetic(ngf=32, ndf=32, batch_size=32), {"amp": "bf16", "channels_last": True}
    return DFGANConfig.synthetic(), {"amp": "none", "channels_last": False}


def time_steps(mcfg: DFGANConfig, device: torch.device, backend: str, amp: str, channels_last: bool,
               steps: int = 3, warmup: int = 1, out_dir: str = "demo_out") -> tuple[float, float | None]:
    """Median ms of one full DF-GAN iteration (D step with MA-GP + G step), and peak MiB on CUDA."""
    tcfg = TrainConfig(data="synthetic:64", out_dir=out_dir, device=str(device), backend=backend, amp=amp,
                       channels_last=channels_last, progress=False)
    previous = ops.get_backend()
    try:
        trainer = DFGANTrainer(mcfg, tcfg)
        g = torch.Generator().manual_seed(0)
        imgs = (torch.rand(mcfg.batch_size, 3, mcfg.imsize, mcfg.imsize, generator=g) * 2 - 1).to(device)
        sent = torch.randn(mcfg.batch_size, mcfg.cond_dim, generator=g).to(device)
        for _ in range(warmup):
            trainer.train_step(imgs, sent)
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(steps):
            t0 = time.perf_counter()
            trainer.train_step(imgs, sent)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        return statistics.median(times), peak
    finally:
        ops.set_backend(previous)


def compare_backends(mcfg: DFGANConfig, device: torch.device, fast: dict, steps: int = 3) -> str:
    ref_ms, ref_mem = time_steps(mcfg, device, "reference", "none", False, steps)
    fused = [b for b in ops.available_backends() if b != "reference"
             and (b in ("cuda", "triton") if device.type == "cuda" else b == "cpu")]
    label = f"DF-GAN {mcfg.imsize}x{mcfg.imsize} B{mcfg.batch_size} ngf{mcfg.ngf} step on {device.type}"
    parts = [f"reference fp32 {ref_ms:.1f} ms" + (f" ({ref_mem:.0f} MiB)" if ref_mem else "")]
    for b in fused:
        ms, mem = time_steps(mcfg, device, b, fast["amp"], fast["channels_last"], steps)
        extra = ("fp32" if fast["amp"] == "none" else fast["amp"]) + (", channels_last" if fast["channels_last"] else "")
        parts.append(f"{b} ({extra}) {ms:.1f} ms = {ref_ms / ms:.2f}x" + (f" ({mem:.0f} MiB)" if mem else ""))
    if not fused:
        parts.append("no fused backend available (build the extension: pip install --no-build-isolation -e .)")
    return f"{label}: " + " | ".join(parts)


def run_demo(minutes: float = 3.0, out_dir: str = "demo_out", device: str = "auto", backend: str = "auto",
             seed: int = 100, bench_steps: int = 3) -> dict:
    dev = resolve_device(device)
    mcfg, fast = demo_configs(dev)
    on_ref = backend == "reference"
    tcfg = TrainConfig(data="synthetic", out_dir=out_dir, steps=10**9, max_minutes=minutes, save_every=200,
                       sample_every=10**9, device=str(dev), backend=backend,
                       amp="none" if on_ref else fast["amp"], channels_last=False if on_ref else fast["channels_last"],
                       seed=seed, sample_captions=DEMO_CAPTIONS, log_every=10,
                       # drawing the shapes would starve a GPU; on a CPU workers only steal its cores
                       num_workers=4 if dev.type == "cuda" else 0)
    print(f"fastt2i demo: DF-GAN {mcfg.imsize}x{mcfg.imsize} on synthetic shapes, {minutes:g} min on {dev} "
          f"(backends: {ops.available_backends()})", flush=True)
    trainer = DFGANTrainer(mcfg, tcfg)
    t0 = time.perf_counter()
    history = trainer.train()
    elapsed = time.perf_counter() - t0
    grid = trainer.sample_grid(os.path.join(out_dir, "samples.png"))
    last = history[-1] if history else {}
    print(f"trained {trainer.step} steps in {elapsed:.0f} s; last losses: "
          + ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k != "step"), flush=True)
    print(f"sample grid: {grid} (captions in {os.path.splitext(grid)[0]}.txt); "
          f"checkpoint: {os.path.join(out_dir, 'checkpoint.pt')}", flush=True)
    line = compare_backends(mcfg, dev, fast, bench_steps)
    print(line, flush=True)
    with open(os.path.join(out_dir, "step_time.txt"), "w") as f:
        f.write(line + "\n")
    return {"steps": trainer.step, "grid": grid, "compare": line, "history": history}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0, help="training time (default 3)")
    p.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--backend", default="auto", choices=ops.BACKENDS + ("auto",))
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--bench-steps", type=int, default=3, help="timed steps per backend in the comparison")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastt2i.train.demo", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    a = p.parse_args(argv)
    run_demo(a.minutes, a.out, a.device, a.backend, a.seed, a.bench_steps)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
