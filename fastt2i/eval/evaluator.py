"""Running metrics over a stream of images, on one rank or many, and the training hook.

``MetricSet`` consumes batches of images (and their captions where a metric needs them) and
keeps only what each metric needs: FID's float64 moments (O(D^2)), IS's class probabilities
(N x C), R-precision's image codes (N x 256), the synthetic accuracy's per-image results.
``result()`` merges the ranks (one all_reduce, gathers to rank 0) and returns plain floats on
rank 0 (None on the others).
"""
from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np
import torch

from .images import from_generator
from .inception import FEATURE_DIM, InceptionFeatures, check_protocol
from .inception_score import ClassProbabilities
from .rprecision import CANDIDATES, FOLD_SIZE, fold_statistics, r_precision_hits
from .stats import FeatureStats, frechet_distance

METRICS = ("fid", "is", "rprec", "synthetic")


def module_device(module) -> torch.device:
    for t in list(module.parameters()) + list(module.buffers()):
        return t.device
    return torch.device("cpu")


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    names = [m.strip().lower() for m in (spec.split(",") if isinstance(spec, str) else spec) if m.strip()]
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise ValueError(f"metrics: expected a comma list of {METRICS}, got {spec!r}")
    return tuple(dict.fromkeys(names))


def dist_info() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather_to_rank0(obj):
    import torch.distributed as dist

    rank, world = dist_info()
    if world == 1:
        return [obj]
    out = [None] * world if rank == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def synthetic_accuracy_fn() -> Callable:
    """``fastt2i.eval.synthetic.caption_accuracy(images in [-1, 1], captions) -> per-image scores or a float``."""
    try:
        from fastt2i.eval import synthetic
    except ImportError as exc:
        raise ValueError("metric 'synthetic' needs fastt2i.eval.synthetic (the synthetic-shapes caption reader), "
                         f"which this installation lacks ({exc})") from exc
    fn = getattr(synthetic, "caption_accuracy", None)
    if fn is None:
        raise ValueError("fastt2i.eval.synthetic has no caption_accuracy(images, captions)")
    return fn


class MetricSet:
    """Streaming FID / IS / R-precision / synthetic accuracy over batches of generated images.

    ``inception``: an InceptionFeatures (for fid and is); ``reference``: (mu, sigma) for fid;
    ``image_code``: images in [-1, 1] -> (N, D) DAMSM codes and ``pool_codes`` / ``pool_classes``
    the sentence codes and classes of the caption pool (for rprec).
    """

    def __init__(self, metrics: Sequence[str], inception: InceptionFeatures | None = None, reference=None,
                 image_code: Callable | None = None, pool_codes: torch.Tensor | None = None,
                 pool_classes: Sequence | None = None, is_splits: int = 10, candidates: int = CANDIDATES,
                 fold_size: int = FOLD_SIZE, seed: int = 0, synthetic_fn: Callable | None = None):
        self.metrics = parse_metrics(metrics)
        if ("fid" in self.metrics or "is" in self.metrics) and inception is None:
            raise ValueError("metrics fid/is need an Inception network (InceptionFeatures)")
        if "fid" in self.metrics and reference is None:
            raise ValueError("metric fid needs reference statistics (mu, sigma)")
        if "rprec" in self.metrics and (image_code is None or pool_codes is None or pool_classes is None):
            raise ValueError("metric rprec needs a DAMSM image encoder and the sentence codes of the caption pool")
        self.inception, self.reference = inception, reference
        self.image_code, self.pool_codes, self.pool_classes = image_code, pool_codes, pool_classes
        self.is_splits, self.candidates, self.fold_size, self.seed = is_splits, candidates, fold_size, seed
        self.synthetic_fn = synthetic_fn if synthetic_fn is not None else (
            synthetic_accuracy_fn() if "synthetic" in self.metrics else None)
        device = module_device(inception) if inception is not None else "cpu"
        dim = getattr(inception, "feature_dim", FEATURE_DIM)
        self.fid_stats = FeatureStats(dim, device=device) if "fid" in self.metrics else None
        self.probs = ClassProbabilities() if "is" in self.metrics else None
        self.codes: list[torch.Tensor] = []
        self.true_index: list[int] = []
        self.synthetic_scores: list[float] = []
        self.synthetic_weighted = [0.0, 0]
        self.synthetic_attributes: dict[str, list[float]] = {}  # attribute -> per-image 1/0 (where it applies)
        self.n = 0

    def update(self, images: torch.Tensor, captions: Sequence[str] | None = None,
               pool_index: Sequence[int] | None = None) -> None:
        """``images`` (N, 3, H, W) in [-1, 1]; ``captions`` and their pool rows for rprec / synthetic."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (N, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError("images: NaN or inf in a generated batch")
        if self.inception is not None:
            pool3, logits = self.inception(from_generator(images))
            if self.fid_stats is not None:
                self.fid_stats.update(pool3)
            if self.probs is not None:
                self.probs.update(logits)
        if "rprec" in self.metrics:
            if pool_index is None or len(pool_index) != images.shape[0]:
                raise ValueError("rprec: each image needs the pool row of its caption")
            self.codes.append(self.image_code(images).detach().float().cpu())
            self.true_index.extend(int(i) for i in pool_index)
        if self.synthetic_fn is not None:
            if captions is None or len(captions) != images.shape[0]:
                raise ValueError("synthetic: each image needs its caption")
            out = self.synthetic_fn(images, list(captions))
            if hasattr(out, "per_image"):  # fastt2i.eval.synthetic.CaptionAccuracy: every attribute
                for name, flags in out.per_image.items():
                    self.synthetic_attributes.setdefault(name, []).extend(
                        float(v) for v in np.asarray(flags, dtype=np.float64) if np.isfinite(v))
                out = out.per_image["all"]
            if isinstance(out, dict):
                if "accuracy" not in out:
                    raise ValueError(f"synthetic: caption_accuracy returned a dict without 'accuracy' ({sorted(out)})")
                out = out["accuracy"]
            if isinstance(out, (int, float)):
                self.synthetic_weighted[0] += float(out) * images.shape[0]
                self.synthetic_weighted[1] += images.shape[0]
            else:
                self.synthetic_scores.extend(float(v) for v in torch.as_tensor(out).flatten().tolist())
        self.n += images.shape[0]

    def result(self) -> dict | None:
        """Merged metrics on rank 0 (plain floats and lists); None on other ranks. Collective: call on all ranks."""
        rank, _ = dist_info()
        out: dict = {}
        if self.fid_stats is not None:
            self.fid_stats.all_reduce()
            if rank == 0:
                mu, sigma = self.fid_stats.mean_cov()
                out["fid"] = frechet_distance(mu, sigma, *self.reference)
        if self.probs is not None:
            score = self.probs.score(self.is_splits)
            if rank == 0:
                out["is_mean"], out["is_std"] = score
        if "rprec" in self.metrics:
            local = (torch.cat(self.codes) if self.codes else torch.zeros(0, 0), list(self.true_index))
            parts = _gather_to_rank0(local)
            if rank == 0:
                codes = torch.cat([c for c, _ in parts if c.numel()])
                index = [i for _, idx in parts for i in idx]
                hits = r_precision_hits(codes, index, self.pool_codes, self.pool_classes, self.candidates,
                                        np.random.default_rng(self.seed))
                r = fold_statistics(hits, self.fold_size)
                out["rprec_mean"], out["rprec_std"], out["rprec_folds"] = r["mean"], r["std"], r["folds"]
        if self.synthetic_fn is not None:
            parts = _gather_to_rank0((self.synthetic_scores, self.synthetic_weighted))
            if rank == 0:
                total = sum(sum(s) for s, _ in parts) + sum(w[0] for _, w in parts)
                count = sum(len(s) for s, _ in parts) + sum(w[1] for _, w in parts)
                out["synthetic_accuracy"] = total / max(count, 1)
            attributes = _gather_to_rank0(self.synthetic_attributes)
            if rank == 0:
                for name in sorted({a for part in attributes for a in part}):
                    flags = [v for part in attributes for v in part.get(name, [])]
                    if flags:
                        out[f"synthetic_{name}"] = sum(flags) / len(flags)
        n = _gather_to_rank0(self.n)
        if rank != 0:
            return None
        out["n"] = int(sum(n))
        return out


def reference_statistics(inception: InceptionFeatures, batches, progress: bool = False,
                         total: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the pool3 features of ``batches`` ([0, 1] images), merged across ranks."""
    stats = FeatureStats(getattr(inception, "feature_dim", FEATURE_DIM), device=module_device(inception))
    rank, world = dist_info()
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=total, desc="reference", unit="img", dynamic_ncols=True)
    for batch in batches:
        stats.update(inception(batch)[0])
        if bar is not None:
            bar.update(batch.shape[0] * world)
    if bar is not None:
        bar.close()
    stats.all_reduce()
    return stats.mean_cov()


def shard(n: int, rank: int, world: int) -> range:
    """Contiguous share of ``n`` items of ``rank`` (rank order = global order, so IS splits match one process)."""
    per = math.ceil(n / world)
    return range(min(n, rank * per), min(n, (rank + 1) * per))


def run_generator(metric_set: MetricSet, generator, captions: Sequence[str], pool_index: Sequence[int] | None,
                  batch_size: int, progress: bool = True, desc: str = "eval") -> dict:
    """Generate this rank's share of ``captions`` (image i from caption i) and feed the metrics.

    Returns {'metrics': the merged dict on rank 0 (None on the others), 'seconds': this rank's time,
    'finalize_seconds': the part spent merging and computing the final numbers}.
    """
    rank, world = dist_info()
    mine = shard(len(captions), rank, world)
    bar = None
    if progress and rank == 0:
        from tqdm import tqdm

        bar = tqdm(total=len(mine) * world, desc=desc, unit="img", dynamic_ncols=True)
    t0 = time.perf_counter()
    for start in range(mine.start, mine.stop, batch_size):
        idx = range(start, min(start + batch_size, mine.stop))
        caps = [captions[i] for i in idx]
        images = generator(caps, idx)
        metric_set.update(images, caps, None if pool_index is None else [pool_index[i] for i in idx])
        if bar is not None:
            bar.update(len(idx) * world)
    if bar is not None:
        bar.close()
    t1 = time.perf_counter()
    result = metric_set.result()
    t2 = time.perf_counter()
    return {"metrics": result, "seconds": t2 - t0, "finalize_seconds": t2 - t1}


# ----------------------------------------------------------------------------- training hook
class _TrainerSampler:
    """``run_generator``'s generator interface over ``trainer.sample(captions, generator)``."""

    def __init__(self, trainer, seed: int):
        self.trainer, self.seed = trainer, int(seed)
        self.imsize = trainer.mcfg.imsize

    @torch.no_grad()
    def __call__(self, captions, indices) -> torch.Tensor:
        from .generate import image_noise_seed

        indices = list(indices)
        g = torch.Generator().manual_seed(image_noise_seed(self.seed, indices[0] if indices else 0))
        return self.trainer.sample(list(captions), g).float()


def make_train_evaluator(metrics: str | Sequence[str] = "fid", n: int = 2048, protocol: str = "torchvision",
                         inception_weights="download", reference=None, captions: Sequence[str] | None = None,
                         batch_size: int = 50, seed: int = 0, split: str = "test",
                         synthetic_fn: Callable | None = None, progress: bool = False) -> Callable[..., dict]:
    """A callable ``evaluate(trainer) -> {'fid': ..., 'is_mean': ..., ...}`` for ``--eval-every``.

    The held-out ``split`` of the trainer's data (``trainer.cfg.data``, at the model's size) gives
    the captions (its first ``n``, unless ``captions`` is given) and, when ``reference`` (an npz
    path or (mu, sigma)) is None, FID's reference statistics (its first ``n`` images, computed once).
    The Inception network and the reference are built at the first call and kept.  Under DDP call it on every rank: each generates its share and the
    statistics merge; the dict is returned on rank 0 ({} on the others).  R-precision is not
    offered here (it needs DAMSM encoders the trainer may not have).
    """
    names = parse_metrics(metrics)
    if "rprec" in names:
        raise ValueError("the training hook computes fid, is and synthetic; run `fastt2i eval` for rprec")
    check_protocol(protocol)
    state: dict = {}

    def evaluate(trainer) -> dict:
        from .images import dataset_batches
        from .stats import load_stats

        from fastt2i.data import build_dataset

        device = trainer.device
        if "inception" not in state and ("fid" in names or "is" in names):
            state["inception"] = InceptionFeatures(protocol, inception_weights).to(device)
        inception = state.get("inception")
        if "dataset" not in state:
            state["dataset"] = build_dataset(trainer.cfg.data, split, imsize=trainer.mcfg.imsize,
                                             words_num=getattr(trainer.mcfg, "words_num", 18), seed=trainer.cfg.seed)
        dataset = state["dataset"]
        if "reference" not in state and "fid" in names:
            if reference is None:
                rank, world = dist_info()
                mine = list(shard(min(n, len(dataset)), rank, world))
                state["reference"] = reference_statistics(inception, dataset_batches(dataset, batch_size, mine))
            elif isinstance(reference, (tuple, list)):
                state["reference"] = tuple(reference)
            else:
                state["reference"] = load_stats(reference, protocol)
        caps = list(captions) if captions is not None else [
            dataset.caption(i) if hasattr(dataset, "caption") else dataset.vocab.decode(dataset.captions[
                i * dataset.embeddings_num]) for i in range(min(n, len(dataset)))]
        # every family samples through trainer.sample (its EMA generator when it keeps one)
        gen = _TrainerSampler(trainer, seed)
        generators = [m for name, m in trainer.networks.items() if name.startswith("netG")]
        modes = [m.training for m in generators]
        for m in generators:
            m.eval()
        try:
            ms = MetricSet(names, inception, state.get("reference"), is_splits=min(10, len(caps)),
                           synthetic_fn=synthetic_fn)
            out = run_generator(ms, gen, caps, None, batch_size, progress, desc="eval")
        finally:
            for m, mode in zip(generators, modes):
                m.train(mode)
        metrics_out = out["metrics"]
        if metrics_out is None:
            return {}
        return {k: float(v) for k, v in metrics_out.items() if isinstance(v, (int, float))}

    return evaluate
