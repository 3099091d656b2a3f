"""The demo (``fastt2i demo`` / ``python -m fastt2i.train.demo``): DF-GAN trained on the synthetic
shapes for a few minutes on whatever device there is, then judged by reading its samples back
(:mod:`fastt2i.eval.synthetic`).

Outputs in ``--out`` (default ``demo_out/``):
- ``samples.png``: the fixed captions, one image each, enlarged, each caption printed under its
  image with what the reader saw in it;
- ``report.md``: the configuration, steps and step time, the caption accuracy over the fixed
  captions x 8 noises (one-object and two-object captions, chance levels, the targets), the
  held-out curve as a table, and the step time of each backend;
- ``curve.png``: held-out caption accuracy against training time (an evaluation every N steps
  on the core's evaluation hook);
- ``checkpoint.pt`` (``fastt2i sample dfgan --checkpoint ...`` samples from it), ``log.jsonl``.

The configuration of each device was chosen by measurement (README, "The demo"): on a CPU
DF-GAN at 32x32, ngf = ndf = 16, batch 16, learning rates 2x the official; on a GPU 64x64,
ngf = 32, batch 32, bf16 and channels_last.  On a CPU the number of threads is measured too: on
a busy machine one thread can be ten times faster than two (OpenMP threads wait on each other).

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
from fastt2i.data import SyntheticShapes
from fastt2i.eval.synthetic import CaptionAccuracyEvaluator
from fastt2i.models import DFGANConfig

from .core import TrainConfig, resolve_device
from .families.dfgan import DFGANTrainer
from .images import save_captioned_grid

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
NOISES = 8          # images per fixed caption in the final evaluation
HELDOUT = 128       # held-out captions (test split) of the periodic evaluation
CURVE_POINTS = 12   # periodic evaluations over a run, about
# (metric, target) of the issue: one-object captions colour / shape / size, two-object both colours
TARGETS = {"one/colour": 0.90, "one/shape": 0.60, "one/size": 0.80, "two/colour": 0.70}
# what the periodic held-out evaluation reports (and the progress bar shows)
CURVE_KEYS = ("one/colour", "one/shape", "one/size", "two/colour", "two/relation")


def demo_configs(device: torch.device) -> tuple[DFGANConfig, dict]:
    """The model config and the fast run's options of each device type (README: how they were chosen)."""
    if device.type == "cuda":
        return DFGANConfig.synthetic(ngf=32, ndf=32, batch_size=32), {"amp": "bf16", "channels_last": True}
    # 32x32: 3.5x the steps of 64x64; 2x the official learning rates (same 1:4 ratio): the
    # caption accuracy rises within hundreds of steps instead of thousands (README, "The demo")
    # channels_last: the demo step at 1.31x (AVX2) / 1.41x (AVX-512) the reference step against
    # 1.14x contiguous (benchmarks/results, dfgan_step "cpu+nhwc", 2026-11-30 quiet run)
    return (DFGANConfig.synthetic(imsize=32, ngf=16, ndf=16, batch_size=16, lr_g=2e-4, lr_d=8e-4),
            {"amp": "none", "channels_last": True})


def _timing_trainer(mcfg: DFGANConfig, device: torch.device, backend: str, amp: str, channels_last: bool,
                    out_dir: str) -> tuple[DFGANTrainer, torch.Tensor, torch.Tensor]:
    tcfg = TrainConfig(data="synthetic:64", out_dir=out_dir, device=str(device), backend=backend, amp=amp,
                       channels_last=channels_last, progress=False)
    trainer = DFGANTrainer(mcfg, tcfg)
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(mcfg.batch_size, 3, mcfg.imsize, mcfg.imsize, generator=g) * 2 - 1).to(device)
    sent = torch.randn(mcfg.batch_size, mcfg.cond_dim, generator=g).to(device)
    return trainer, imgs, sent


def _median_step_ms(trainer: DFGANTrainer, imgs, sent, steps: int, warmup: int = 1) -> float:
    cuda = trainer.device.type == "cuda"
    for _ in range(warmup):
        trainer.train_step(imgs, sent)
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.train_step(imgs, sent)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def time_steps(mcfg: DFGANConfig, device: torch.device, backend: str, amp: str, channels_last: bool,
               steps: int = 3, warmup: int = 1, out_dir: str = "demo_out") -> tuple[float, float | None]:
    """Median ms of one full DF-GAN iteration (D step with MA-GP + G step), and peak MiB on CUDA."""
    previous = ops.get_backend()
    try:
        trainer, imgs, sent = _timing_trainer(mcfg, device, backend, amp, channels_last, out_dir)
        if device.type == "cuda":
            trainer.train_step(imgs, sent)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        ms = _median_step_ms(trainer, imgs, sent, steps, warmup)
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
        return ms, peak
    finally:
        ops.set_backend(previous)


def compare_backends(mcfg: DFGANConfig, device: torch.device, fast: dict, steps: int = 3) -> tuple[str, dict]:
    """One line comparing the step time of each fused backend with the reference, and {backend: ms}."""
    ref_ms, ref_mem = time_steps(mcfg, device, "reference", "none", False, steps)
    fused = [b for b in ops.available_backends() if b != "reference"
             and (b in ("cuda", "triton") if device.type == "cuda" else b == "cpu")]
    label = f"DF-GAN {mcfg.imsize}x{mcfg.imsize} B{mcfg.batch_size} ngf{mcfg.ngf} step on {device.type}"
    parts = [f"reference fp32 {ref_ms:.1f} ms" + (f" ({ref_mem:.0f} MiB)" if ref_mem else "")]
    times = {"reference": ref_ms}
    for b in fused:
        ms, mem = time_steps(mcfg, device, b, fast["amp"], fast["channels_last"], steps)
        times[b] = ms
        extra = ("fp32" if fast["amp"] == "none" else fast["amp"]) + (", channels_last" if fast["channels_last"] else "")
        parts.append(f"{b} ({extra}) {ms:.1f} ms = {ref_ms / ms:.2f}x" + (f" ({mem:.0f} MiB)" if mem else ""))
    if not fused:
        parts.append("no fused backend available (build the extension: pip install --no-build-isolation -e .)")
    return f"{label}: " + " | ".join(parts), times


def choose_threads(mcfg: DFGANConfig, out_dir: str, steps: int = 3) -> tuple[int, dict]:
    """The CPU thread count with the fastest training step, measured now: (threads, {threads: ms}).

    On an idle machine all cores win; on a busy one OpenMP threads wait on each other and a single
    thread can be several times faster."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    candidates = sorted({1, min(cores, torch.get_num_threads())})
    if len(candidates) == 1:
        return candidates[0], {}
    previous = torch.get_num_threads()
    trainer, imgs, sent = _timing_trainer(mcfg, torch.device("cpu"), "auto", "none", False, out_dir)
    times = {}
    try:
        for n in candidates:
            torch.set_num_threads(n)
            times[n] = _median_step_ms(trainer, imgs, sent, steps)
    finally:
        torch.set_num_threads(previous)
    return min(times, key=times.get), times


def heldout_captions(n: int = HELDOUT, seed: int = 1) -> list[str]:
    """Captions of the test split (scenes the training split does not hold)."""
    test = SyntheticShapes(size=n, seed=seed, split="test")
    return [test.caption(i) for i in range(n)]


class TimedEvaluator:
    """Wraps an evaluator: records the training time (seconds, evaluations excluded) of each
    evaluation in ``seconds[step]`` and keeps only ``keys`` of its results for the trainer (the
    progress bar shows every metric of the latest evaluation)."""

    def __init__(self, evaluator, keys: tuple[str, ...]):
        self.evaluator, self.keys = evaluator, keys
        self.seconds: dict[int, float] = {}
        self.start()

    def start(self) -> None:
        self.train_s, self._since = 0.0, time.perf_counter()

    def __call__(self, trainer) -> dict:
        self.train_s += time.perf_counter() - self._since
        self.seconds[trainer.step] = self.train_s
        out = self.evaluator(trainer)
        self._since = time.perf_counter()
        return {k: v for k, v in out.items() if k in self.keys}


def _backend_label(backend: str, device: torch.device) -> str:
    """What 'auto' runs on this device: cpu -> reference on CPUs, cuda -> triton -> reference on GPUs."""
    if backend == "auto":
        backend = ops.get_backend()
    if backend != "auto":
        return backend
    order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference")
    return next(b for b in order if b in ops.available_backends())


def _read_note(objs) -> str:
    if not objs:
        return "read: nothing"
    if len(objs) > 2:
        return f"read: {len(objs)} objects"
    return "read: " + ", ".join(" ".join(v for v in (o.size, o.colour, o.shape) if v) or "clutter" for o in objs)


def _matplotlib():
    try:
        import matplotlib
    except ImportError as exc:
        raise RuntimeError("the demo's curve.png needs matplotlib: pip install matplotlib "
                           "(or pip install fastt2i[plots])") from exc
    return matplotlib


def plot_curve(rows: list[dict], chance: dict, path: str, title: str) -> str:
    matplotlib = _matplotlib()
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["train_seconds"] for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=120)
    colours = {"one/colour": "tab:red", "one/shape": "tab:blue", "one/size": "tab:green",
               "two/colour": "tab:purple", "two/relation": "tab:orange"}
    for key, col in colours.items():
        if all(key in r for r in rows):
            ax.plot(t, [100 * r[key] for r in rows], "o-", color=col, label=key, markersize=3)
            if key in chance:
                ax.axhline(100 * chance[key], color=col, linestyle=":", linewidth=0.8)
            if key in TARGETS:
                ax.axhline(100 * TARGETS[key], color=col, linestyle="--", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("held-out caption accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    if len(rows) >= 2:  # steps on the top axis (linear interpolation of the evaluations)
        steps = [r["step"] for r in rows]
        import numpy as np

        top = ax.secondary_xaxis("top", functions=(lambda x: np.interp(x, t, steps), lambda s: np.interp(s, steps, t)))
        top.set_xticks(steps[::max(1, len(steps) // 6)][:-1] + steps[-1:])  # the evaluated steps, up to ~7
        top.set_xlabel("steps")
    fig.text(0.99, 0.01, "dotted: chance   dashed: target", ha="right", fontsize=7, color="grey")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def accuracy_table(results: dict) -> str:
    """A markdown table of the final accuracies: one-object and two-object captions, chance, target."""
    rows = ["| captions | attribute | accuracy | chance | target | images |", "|---|---|---|---|---|---|"]
    for group, res in results.items():
        for a in CaptionAccuracyEvaluator.ONE if group == "one" else CaptionAccuracyEvaluator.TWO:
            key = f"{group}/{a}"
            target = TARGETS.get(key)
            mark = "" if target is None else (f">= {100 * target:.0f} % " + ("met" if res.accuracy[a] >= target else "NOT met"))
            label = {"one": "one object", "two": "two objects"}[group]
            name = "both colours" if key == "two/colour" else a
            rows.append(f"| {label} | {name} | {100 * res.accuracy[a]:.1f} % | {100 * res.chance[a]:.1f} % | "
                        f"{mark} | {res.n[a]} |")
    return "\n".join(rows)


def run_demo(minutes: float = 3.0, out_dir: str = "demo_out", device: str = "auto", backend: str = "auto",
             seed: int = 100, bench_steps: int = 3, eval_every: int | None = None, threads: int | None = None,
             noises: int = NOISES, heldout: int = HELDOUT, progress: bool = True) -> dict:
    _matplotlib()  # before minutes of training, not after
    dev = resolve_device(device)
    mcfg, fast = demo_configs(dev)
    on_ref = backend == "reference"
    os.makedirs(out_dir, exist_ok=True)
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    thread_times = {}
    if dev.type == "cpu":
        if threads is None:
            threads, thread_times = choose_threads(mcfg, out_dir)
        torch.set_num_threads(threads)
    if eval_every is None:  # about CURVE_POINTS evaluations over the run, from the measured step time
        step_ms = min(thread_times.values()) if thread_times else (time_steps(mcfg, dev, backend, fast["amp"],
                                                                                fast["channels_last"], 2)[0])
        # an evaluation costs about 3-6 steps: at least 25 steps apart keeps it under ~20 % on a
        # busy machine (about 3 % on an idle one, where 3 minutes give thousands of steps)
        eval_every = max(25, int(60e3 * minutes / step_ms / CURVE_POINTS) // 25 * 25)
    evaluator = TimedEvaluator(CaptionAccuracyEvaluator(heldout_captions(heldout), noises=1, seed=seed + 1), CURVE_KEYS)
    tcfg = TrainConfig(data="synthetic", out_dir=out_dir, steps=10**9, max_minutes=minutes, save_every=10**9,
                       sample_every=10**9, device=str(dev), backend=backend, eval_every=eval_every,
                       amp="none" if on_ref else fast["amp"], channels_last=False if on_ref else fast["channels_last"],
                       seed=seed, sample_captions=DEMO_CAPTIONS, log_every=10, progress=progress,
                       # drawing the shapes would starve a GPU; on a CPU workers only steal its cores
                       num_workers=4 if dev.type == "cuda" else 0)
    print(f"fastt2i demo: DF-GAN {mcfg.imsize}x{mcfg.imsize} (ngf {mcfg.ngf}, batch {mcfg.batch_size}) on synthetic "
          f"shapes, {minutes:g} min on {dev}" + (f" with {threads} thread(s)" if dev.type == "cpu" else "")
          + f" (backends: {ops.available_backends()}; held-out evaluation every {eval_every} steps)", flush=True)
    if thread_times:
        print("  step time by threads: " + ", ".join(f"{n}: {ms:.0f} ms" for n, ms in thread_times.items()), flush=True)
    trainer = DFGANTrainer(mcfg, tcfg, evaluators={"heldout": evaluator})
    used_backend = _backend_label(backend, dev)
    evaluator.start()
    t0 = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - t0
    train_s = evaluator.train_s
    curve_rows = [dict(r, train_seconds=evaluator.seconds[r["step"]]) for r in trainer.eval_history
                  if r["step"] in evaluator.seconds]
    print(f"trained {trainer.step} steps in {elapsed:.0f} s ({train_s:.0f} s of training, "
          f"{1e3 * train_s / max(1, trainer.step):.0f} ms/step)", flush=True)

    # the fixed captions x noises, read back
    final = CaptionAccuracyEvaluator(DEMO_CAPTIONS, noises=noises, seed=seed + 2)
    from tqdm import tqdm

    g = torch.Generator().manual_seed(final.seed)
    chunks = []
    with torch.no_grad():
        for i in tqdm(range(0, len(final.captions), final.batch_size), desc="sampling", disable=not progress,
                      dynamic_ncols=True):
            chunks.append(trainer.sample(final.captions[i:i + final.batch_size], g).float().cpu())
    images = torch.cat(chunks)
    results = final.results(images)
    from fastt2i.eval.synthetic import read_scenes

    first = images[::noises]  # the first noise of each caption
    grid = save_captioned_grid(first, DEMO_CAPTIONS, os.path.join(out_dir, "samples.png"),
                               notes=[_read_note(objs) for objs in read_scenes(first)], cell=160)
    chance = {f"{grp}/{a}": res.chance[a] for grp, res in results.items() for a in res.chance}
    curve = plot_curve(curve_rows, chance, os.path.join(out_dir, "curve.png"),
                       f"DF-GAN {mcfg.imsize}x{mcfg.imsize} ngf{mcfg.ngf} B{mcfg.batch_size} on {dev.type} "
                       f"({used_backend}): {HELDOUT if heldout == HELDOUT else heldout} held-out captions")
    line, backend_ms = compare_backends(mcfg, dev, fast, bench_steps)
    load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = accuracy_table(results)
    report = _report(mcfg, fast, dev, used_backend, threads, thread_times, minutes, trainer.step, train_s, elapsed,
                     eval_every, curve_rows, table, line, backend_ms, noises, heldout, (load_start, load_end))
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out_dir, "step_time.txt"), "w") as f:
        f.write(line + "\n")
    print(line, flush=True)
    print(f"\ncaption accuracy over {len(DEMO_CAPTIONS)} fixed captions x {noises} noises after {trainer.step} steps:")
    print(table, flush=True)
    print(f"\nwrote {grid}, {curve}, {os.path.join(out_dir, 'report.md')}, {os.path.join(out_dir, 'checkpoint.pt')}",
          flush=True)
    trainer.close()
    return {"steps": trainer.step, "train_seconds": train_s, "grid": grid, "curve": curve, "compare": line,
            "results": results, "eval_history": curve_rows, "backend_ms": backend_ms, "threads": threads}


def _report(mcfg, fast, dev, used_backend, threads, thread_times, minutes, steps, train_s, elapsed, eval_every,
            curve_rows, table, line, backend_ms, noises, heldout, loads) -> str:
    lines = [
        "# fastt2i demo report",
        "",
        f"DF-GAN {mcfg.imsize}x{mcfg.imsize}, ngf = ndf = {mcfg.ngf}, batch {mcfg.batch_size}, lr G {mcfg.lr_g:g} / "
        f"D {mcfg.lr_d:g}, random frozen DAMSM text encoder (standardised sentence vectors), on {dev}"
        + (f" with {threads} thread(s)" if dev.type == "cpu" else f", amp {fast['amp']}")
        + f", backend `{used_backend}`.",
        "",
        f"- training: {steps} steps in {train_s:.1f} s ({1e3 * train_s / max(1, steps):.0f} ms/step; "
        f"{elapsed:.1f} s with the {len(curve_rows)} held-out evaluations; limit {minutes:g} min)",
        f"- machine load (1-minute load average) at the start / end: {loads[0]:.1f} / {loads[1]:.1f} "
        f"on {os.cpu_count()} logical CPUs",
    ]
    if thread_times:
        lines.append("- step time by CPU threads (measured before training): "
                     + ", ".join(f"{n}: {ms:.0f} ms" for n, ms in thread_times.items()))
    lines += [
        "",
        f"## Caption accuracy: {len(DEMO_CAPTIONS)} fixed captions x {noises} noises",
        "",
        "Read back by `fastt2i.eval.synthetic` (segmentation, palette colour, shape and size from the "
        "moments, relation from the centroids); chance: the same judge on random scenes of the dataset.",
        "",
        table,
        "",
        "## Step time per backend (median of timed steps after training, same configuration)",
        "",
        "| backend | ms / step |",
        "|---|---|",
    ]
    lines += [f"| {b} | {ms:.1f} |" for b, ms in backend_ms.items()]
    lines += ["", line, "", f"## Held-out evaluation every {eval_every} steps ({heldout} test-split captions, "
              "one noise each): `curve.png`", ""]
    keys = list(CURVE_KEYS)
    lines.append("| step | training s | " + " | ".join(keys) + " |")
    lines.append("|---" * (len(keys) + 2) + "|")
    for r in curve_rows:
        lines.append(f"| {r['step']} | {r['train_seconds']:.0f} | "
                     + " | ".join(f"{100 * r[k]:.0f}" if k in r else "" for k in keys) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=3.0, help="training time (default 3)")
    p.add_argument("--out", default="demo_out", help="output folder (default ./demo_out)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    p.add_argument("--backend", default="auto", choices=ops.BACKENDS + ("auto",))
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--bench-steps", type=int, default=3, help="timed steps per backend in the comparison")
    p.add_argument("--eval-every", type=int, default=None,
                   help="held-out evaluation every N steps (default: about 12 over the run)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: the faster of 1 and all, measured)")


def run_demo_from_args(a: argparse.Namespace) -> dict:
    return run_demo(a.minutes, a.out, a.device, a.backend, a.seed, a.bench_steps,
                    eval_every=getattr(a, "eval_every", None), threads=getattr(a, "threads", None))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastt2i.train.demo", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    run_demo_from_args(p.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
