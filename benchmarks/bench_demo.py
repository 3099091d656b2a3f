"""Time to accuracy: how long the demo's training takes to reach a caption accuracy, per backend.

    python -m benchmarks.bench_demo                       # one/colour >= 0.9, cpu against reference
    python -m benchmarks.bench_demo --target two/colour=0.7 --max-minutes 20 --every 50
    # the tuning runs of the README: one backend, another configuration, a fixed number of steps
    python -m benchmarks.bench_demo --backends cpu --lr-g 2e-4 --lr-d 8e-4 --max-steps 800 --every 100 --threads 1
    # the step cost of configurations (IMSIZE,NF,BATCH), interleaved in this process
    python -m benchmarks.bench_demo --step-cost 32,16,16 64,16,16 32,16,32 --threads 1

One trainer per backend with the demo's configuration of this device and the same seed (the same
batches and noise), trained in interleaved chunks of ``--every`` steps in this one process, so
both see the same machine load; after each chunk the held-out evaluator of the demo
(:mod:`fastt2i.eval.synthetic`, 128 test-split captions) runs, untimed.  Reported per backend:
the steps and the training seconds when the target was first reached, and the median step time.
This is the figure a user feels; the per-step tables of ``python -m benchmarks.run`` are the
microscope.

Not a ``benchmarks.run`` case (``cases`` returns none): training to an accuracy is minutes,
not a closure timed many times.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from fastt2i import ops


def cases(device: str, quick: bool) -> list:
    return []  # a run of its own (see the module docstring), not a per-call timing


def _trainer(backend: str, device: torch.device, seed: int, out_dir: str, overrides: dict | None = None,
             ema: float = 0.0):
    from dataclasses import replace

    from fastt2i.train import DFGANTrainer, TrainConfig
    from fastt2i.train.demo import demo_configs

    mcfg, fast = demo_configs(device)
    mcfg = replace(mcfg, **(overrides or {}))
    amp, cl = ("none", False) if backend == "reference" else (fast["amp"], fast["channels_last"])
    cfg = TrainConfig(data="synthetic", out_dir=os.path.join(out_dir, backend), device=str(device), backend=backend,
                      amp=amp, channels_last=cl, seed=seed, progress=False, num_workers=0, ema=ema)
    return DFGANTrainer(mcfg, cfg)


def time_to_accuracy(backends: list[str], metric: str, target: float, every: int = 25, max_minutes: float = 10.0,
                     device: str = "auto", seed: int = 100, out_dir: str = "/tmp/fastt2i_bench_demo",
                     max_steps: int | None = None, overrides: dict | None = None, ema: float = 0.0) -> dict:
    """Train each backend in interleaved chunks of ``every`` steps until ``metric >= target`` on the
    held-out evaluator, ``max_minutes`` of training or ``max_steps``; per backend the first hit, the
    steps, the training seconds, the median step time and the curve."""
    from fastt2i.eval.synthetic import CaptionAccuracyEvaluator
    from fastt2i.train import resolve_device
    from fastt2i.train.demo import heldout_captions

    dev = resolve_device(device)
    evaluator = CaptionAccuracyEvaluator(heldout_captions(), noises=1, seed=seed + 1)
    previous = ops.get_backend()
    runs = {}
    try:
        for b in backends:
            trainer = _trainer(b, dev, seed, out_dir, overrides, ema)
            runs[b] = {"trainer": trainer, "stream": trainer.batch_stream(), "train_s": 0.0, "step_ms": [],
                       "curve": [], "reached": None}
        active = list(backends)
        while active:
            for b in list(active):
                run = runs[b]
                tr = run["trainer"]
                with ops.use_backend(b):
                    for _ in range(every):
                        batch = next(run["stream"])
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        t0 = time.perf_counter()
                        tr.run_step(batch)
                        tr.update_ema()
                        if dev.type == "cuda":
                            torch.cuda.synchronize()
                        dt = time.perf_counter() - t0
                        tr.step += 1
                        run["train_s"] += dt
                        run["step_ms"].append(1e3 * dt)
                    with torch.no_grad():
                        acc = evaluator(tr)
                run["curve"].append({"step": tr.step, "train_s": run["train_s"], **acc})
                print(f"{b:>10}: step {tr.step:5d}  {run['train_s']:7.1f} s  "
                      + "  ".join(f"{k} {100 * v:5.1f}" for k, v in acc.items()), flush=True)
                if acc[metric] >= target and run["reached"] is None:
                    run["reached"] = {"step": tr.step, "train_s": run["train_s"]}
                if (run["reached"] is not None or run["train_s"] > 60 * max_minutes
                        or (max_steps is not None and tr.step >= max_steps)):
                    active.remove(b)
    finally:
        ops.set_backend(previous)
    return {b: {"reached": r["reached"], "steps": r["trainer"].step, "train_s": r["train_s"],
                "median_step_ms": statistics.median(r["step_ms"]), "curve": r["curve"]} for b, r in runs.items()}


def step_cost(configs: list[tuple[int, int, int]], backend: str = "cpu", rounds: int = 5, device: str = "auto",
              seed: int = 100) -> dict:
    """Median ms of one training step of each (imsize, nf, batch), the configurations interleaved
    round by round so that a changing machine load hits them alike."""
    from fastt2i.train import resolve_device

    dev = resolve_device(device)
    previous = ops.get_backend()
    try:
        setups = []
        for imsize, nf, batch in configs:
            tr = _trainer(backend, dev, seed, "/tmp/fastt2i_bench_demo", {"imsize": imsize, "ngf": nf, "ndf": nf,
                                                                          "batch_size": batch})
            g = torch.Generator().manual_seed(0)
            imgs = (torch.rand(batch, 3, imsize, imsize, generator=g) * 2 - 1).to(dev)
            sent = torch.randn(batch, tr.mcfg.cond_dim, generator=g).to(dev)
            tr.train_step(imgs, sent)  # warm-up
            setups.append((tr, imgs, sent))
        times = [[] for _ in setups]
        for _ in range(rounds):
            for i, (tr, imgs, sent) in enumerate(setups):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                tr.train_step(imgs, sent)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times[i].append(1e3 * (time.perf_counter() - t0))
    finally:
        ops.set_backend(previous)
    return {c: statistics.median(t) for c, t in zip(configs, times)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="one/colour=0.9", help="METRIC=VALUE of the held-out evaluator")
    p.add_argument("--backends", default=None, help="comma-separated (default: the fused backend(s) and reference)")
    p.add_argument("--every", type=int, default=25, help="steps between evaluations")
    p.add_argument("--max-minutes", type=float, default=10.0, help="training time limit per backend")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--json", default=None, help="write the results here")
    p.add_argument("--max-steps", type=int, default=None, help="stop each backend after this many steps")
    p.add_argument("--imsize", type=int, default=None, help="override the demo's configuration ...")
    p.add_argument("--nf", type=int, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--lr-g", type=float, default=None)
    p.add_argument("--lr-d", type=float, default=None)
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of G (the evaluation samples the EMA)")
    p.add_argument("--step-cost", nargs="+", default=None, metavar="IMSIZE,NF,BATCH",
                   help="instead: the median step time of these configurations, interleaved")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    if a.step_cost:
        configs = [tuple(int(v) for v in c.split(",")) for c in a.step_cost]
        res = step_cost(configs, (a.backends or "cpu").split(",")[0], device=a.device, seed=a.seed)
        base = next(iter(res.values()))
        print(f"step time (threads {torch.get_num_threads()}, load average at start {load:.1f}):")
        print("| imsize, nf, batch | ms / step | relative |\n|---|---|---|")
        for c, ms in res.items():
            print(f"| {c} | {ms:.1f} | {ms / base:.2f} |")
        return 0
    overrides = {k: v for k, v in (("imsize", a.imsize), ("ngf", a.nf), ("ndf", a.nf), ("batch_size", a.batch),
                                   ("lr_g", a.lr_g), ("lr_d", a.lr_d)) if v is not None}
    metric, _, value = a.target.partition("=")
    if not value:
        raise SystemExit(f"--target: expected METRIC=VALUE (e.g. one/colour=0.9), got {a.target!r}")
    if a.backends:
        backends = a.backends.split(",")
    else:
        cuda = a.device.startswith("cuda") or (a.device == "auto" and torch.cuda.is_available())
        backends = [b for b in ops.available_backends() if b in (("cuda", "triton") if cuda else ("cpu",))]
        backends.append("reference")
    res = time_to_accuracy(backends, metric, float(value), a.every, a.max_minutes, a.device, a.seed,
                           max_steps=a.max_steps, overrides=overrides, ema=a.ema)
    print(f"\ntime to {metric} >= {float(value):g} (held-out, demo configuration; threads {torch.get_num_threads()}, "
          f"load average at start {load:.1f}):")
    print("| backend | steps | training s | median ms/step |\n|---|---|---|---|")
    for b, r in res.items():
        hit = r["reached"]
        steps, secs = (hit["step"], f"{hit['train_s']:.1f}") if hit else (f"> {r['steps']}", f"> {r['train_s']:.0f} (not reached)")
        print(f"| {b} | {steps} | {secs} | {r['median_step_ms']:.1f} |")
    if "reference" in res and res["reference"]["reached"]:
        for b, r in res.items():
            if b != "reference" and r["reached"]:
                print(f"{b}: {res['reference']['reached']['train_s'] / r['reached']['train_s']:.2f}x faster to the target "
                      f"than reference")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"metric": metric, "target": float(value), "load": load, "threads": torch.get_num_threads(),
                       "overrides": overrides, "ema": a.ema, "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
