"""Evaluation throughput and memory.

    python -m benchmarks.bench_eval [--n 2000] [--batch 50] [--memory-n 30000] [--out benchmarks/results]

1. Feature extraction: Inception-v3 (torchvision protocol; random weights cost the same as real
   ones) on [0, 1] images at 256x256 resized to 299, images/s.
2. The full FID pipeline: DF-GAN 256x256 (ngf 32, the official size) generates from captions,
   Inception extracts, FeatureStats accumulates; images/s.  IS and the Fréchet distance at the end
   are included (reported with and without that one-off final step; the distance is also timed
   alone, eigh against the official scipy sqrtm).
3. Peak memory of the statistics for ``--memory-n`` images of 2048-d features, each in a fresh
   process (resident set sampled at ~1 kHz, above the process's baseline): streaming float64 FeatureStats vs the
   official way (every feature in an (N, 2048) float64 array, then np.cov).

``cases()`` gives the runner (``python -m benchmarks.run --ops eval``) the extraction case.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.common import Case

FEATURE_DIM = 2048


def _inception(device: str):
    from fastt2i.eval.inception import InceptionFeatures

    torch.manual_seed(0)
    return InceptionFeatures("torchvision", weights=None).to(device)


def cases(device: str, quick: bool) -> list[Case]:
    batch = 8 if device == "cpu" else 64

    def eager():
        net = _inception(device)
        x = torch.rand(batch, 3, 256, 256, device=device)
        return lambda: net(x)

    return [Case(op="eval_inception", name=f"torchvision Inception-v3 256->299 B{batch}", mode="forward",
                 providers={"eager": eager}, items=batch)]


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def time_extraction(n: int, batch: int, device: str) -> dict:
    net = _inception(device)
    x = torch.rand(batch, 3, 256, 256, device=device)
    net(x[:1])  # warm-up
    done, t0 = 0, time.perf_counter()
    while done < n:
        net(x[:min(batch, n - done)])
        done += min(batch, n - done)
    if device == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    return {"images": n, "seconds": sec, "images_per_s": n / sec}


def time_pipeline(n: int, batch: int, device: str) -> dict:
    from fastt2i.data import SyntheticShapes
    from fastt2i.eval.evaluator import MetricSet, run_generator
    from fastt2i.eval.generate import CaptionGenerator
    from fastt2i.models import DFGANConfig, NetG
    from fastt2i.text import RNNEncoder

    cfg = DFGANConfig.preset("birds")  # 256x256, ngf 32: the official generator
    torch.manual_seed(0)
    netG = NetG(cfg.ngf, cfg.nz, cfg.cond_dim, cfg.imsize, cfg.ch_size).to(device).eval()
    data = SyntheticShapes(size=max(n, 1), imsize=cfg.imsize, split="test")
    text_encoder = RNNEncoder(len(data.vocab)).to(device).eval()
    gen = CaptionGenerator(netG, text_encoder, data.vocab, cfg, None, device)
    captions = [data.caption(i) for i in range(n)]
    inception = _inception(device)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4 * FEATURE_DIM, FEATURE_DIM))  # a full-rank reference covariance
    reference = (x.mean(0), np.cov(x, rowvar=False))
    ms = MetricSet(("fid", "is"), inception, reference, is_splits=min(10, n))
    gen(captions[:1], [0])  # warm-up
    t0 = time.perf_counter()
    out = run_generator(ms, gen, captions, None, batch, progress=False)
    sec = time.perf_counter() - t0
    # the last step alone: the distance at D = 2048 (eigh) against the official scipy sqrtm
    from fastt2i.eval.stats import frechet_distance

    mu, sigma = ms.fid_stats.mean_cov()
    t1 = time.perf_counter()
    fd_eigh = frechet_distance(mu, sigma, *reference)
    t_eigh = time.perf_counter() - t1
    t1 = time.perf_counter()
    fd_scipy = frechet_distance(mu, sigma, *reference, method="scipy")
    t_scipy = time.perf_counter() - t1
    stream = sec - out["finalize_seconds"]
    return {"images": n, "seconds": sec, "images_per_s": n / sec, "fid": out["metrics"]["fid"],
            "stream_seconds": stream, "stream_images_per_s": n / stream, "finalize_seconds": out["finalize_seconds"],
            "frechet_eigh_s": t_eigh, "frechet_scipy_s": t_scipy, "frechet_rel_diff": abs(fd_eigh - fd_scipy) / fd_scipy,
            "generator": f"DF-GAN NetG {cfg.imsize}x{cfg.imsize} ngf {cfg.ngf}"}


_MEMORY_CHILD = r"""
import os, sys, threading, time, numpy as np, torch
mode, n, batch, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
page = os.sysconf("SC_PAGE_SIZE")
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
g = torch.Generator().manual_seed(0)
feats = torch.rand(batch, d, generator=g)          # one batch of features, reused
if mode == "streaming":
    from fastt2i.eval.stats import FeatureStats
base, peak, running = rss(), [0], [True]
def sample():                                       # resident set sampled at ~1 kHz
    while running[0]:
        peak[0] = max(peak[0], rss())
        time.sleep(0.001)
t = threading.Thread(target=sample, daemon=True)
t.start()
if mode == "streaming":
    st = FeatureStats(d)
    for s in range(0, n, batch):
        st.update(feats[: min(batch, n - s)])
    mu, sigma = st.mean_cov()
else:  # the official code: every feature kept in float64, then np.mean / np.cov
    arr = np.empty((n, d))
    for s in range(0, n, batch):
        k = min(batch, n - s)
        arr[s:s + k] = feats[:k].numpy()
    mu, sigma = np.mean(arr, axis=0), np.cov(arr, rowvar=False)
peak[0] = max(peak[0], rss())
running[0] = False
t.join()
print(peak[0] - base)
"""


def peak_memory(mode: str, n: int, batch: int) -> int:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, mode, str(n), str(batch), str(FEATURE_DIM)],
                         capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000, help="images for extraction and pipeline timings")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--memory-n", type=int, default=30000, help="images of features for the memory comparison")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--out", default=None, help="folder for eval-<host>-<date>.json")
    a = p.parse_args(argv)
    res = {"device": a.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_count": os.cpu_count(), "load_average_start": load_average(), "batch": a.batch}
    if not a.skip_timing:
        res["extraction"] = time_extraction(a.n, a.batch, a.device)
        print(f"feature extraction: {res['extraction']['images_per_s']:.2f} img/s ({a.n} images, batch {a.batch})",
              flush=True)
        res["pipeline"] = time_pipeline(a.n, a.batch, a.device)
        pl = res["pipeline"]
        print(f"full FID pipeline (generate + extract + stats + IS): {pl['images_per_s']:.2f} img/s for {a.n} "
              f"images including the final merge + Fréchet distance ({pl['finalize_seconds']:.1f} s); "
              f"{pl['stream_images_per_s']:.2f} img/s without it; "
              f"Fréchet distance at D=2048: eigh {pl['frechet_eigh_s']:.2f} s, scipy sqrtm "
              f"{pl['frechet_scipy_s']:.2f} s (rel diff {pl['frechet_rel_diff']:.1e})", flush=True)
    stream = peak_memory("streaming", a.memory_n, a.batch)
    stored = peak_memory("stored", a.memory_n, a.batch)
    res["memory"] = {"images": a.memory_n, "streaming_bytes": stream, "stored_features_bytes": stored,
                     "ratio": stored / max(stream, 1)}
    print(f"statistics of {a.memory_n} x {FEATURE_DIM} features: streaming float64 {stream / 2**20:.0f} MiB peak, "
          f"official (all features + np.cov) {stored / 2**20:.0f} MiB peak ({stored / max(stream, 1):.1f}x)", flush=True)
    res["load_average_end"] = load_average()
    if a.out:
        os.makedirs(a.out, exist_ok=True)
        path = os.path.join(a.out, f"eval-{platform.machine()}-{time.strftime('%Y-%m-%d')}.json")
        with open(path, "w") as f:
            json.dump(res, f, indent=2)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
