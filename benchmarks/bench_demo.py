"""Time to accuracy: how long the demo's training takes to reach a caption accuracy, per backend.

    python -m benchmarks.bench_demo                       # one/colour >= 0.9, cpu against reference
    python -m benchmarks.bench_demo --target two/colour=0.7 --max-minutes 20 --every 50

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


def _trainer(backend: str, device: torch.device, seed: int, out_dir: str):
    from fastt2i.train import DFGANTrainer, TrainConfig
    from fastt2i.train.demo import demo_configs

    mcfg, fast = demo_configs(device)
    amp, cl = ("none", False) if backend == "reference" else (fast["amp"], fast["channels_last"])
    cfg = TrainConfig(data="synthetic", out_dir=os.path.join(out_dir, backend), device=str(device), backend=backend,
                      amp=amp, channels_last=cl, seed=seed, progress=False, num_workers=0)
    return DFGANTrainer(mcfg, cfg)


def time_to_accuracy(backends: list[str], metric: str, target: float, every: int = 25, max_minutes: float = 10.0,
                     device: str = "auto", seed: int = 100, out_dir: str = "/tmp/fastt2i_bench_demo") -> dict:
    from fastt2i.eval.synthetic import CaptionAccuracyEvaluator
    from fastt2i.train import resolve_device
    from fastt2i.train.demo import heldout_captions

    dev = resolve_device(device)
    evaluator = CaptionAccuracyEvaluator(heldout_captions(), noises=1, seed=seed + 1)
    previous = ops.get_backend()
    runs = {}
    try:
        for b in backends:
            trainer = _trainer(b, dev, seed, out_dir)
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
                print(f"{b:>10}: step {tr.step:5d}  {run['train_s']:7.1f} s  {metric} {100 * acc[metric]:5.1f} %",
                      flush=True)
                if acc[metric] >= target and run["reached"] is None:
                    run["reached"] = {"step": tr.step, "train_s": run["train_s"]}
                if run["reached"] is not None or run["train_s"] > 60 * max_minutes:
                    active.remove(b)
    finally:
        ops.set_backend(previous)
    return {b: {"reached": r["reached"], "steps": r["trainer"].step, "train_s": r["train_s"],
                "median_step_ms": statistics.median(r["step_ms"]), "curve": r["curve"]} for b, r in runs.items()}


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
    a = p.parse_args(argv)
    metric, _, value = a.target.partition("=")
    if not value:
        raise SystemExit(f"--target: expected METRIC=VALUE (e.g. one/colour=0.9), got {a.target!r}")
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.backends:
        backends = a.backends.split(",")
    else:
        cuda = a.device.startswith("cuda") or (a.device == "auto" and torch.cuda.is_available())
        backends = [b for b in ops.available_backends() if b in (("cuda", "triton") if cuda else ("cpu",))]
        backends.append("reference")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    res = time_to_accuracy(backends, metric, float(value), a.every, a.max_minutes, a.device, a.seed)
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
                       "results": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
