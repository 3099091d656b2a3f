"""Inception Score: exp(E_x KL(p(y|x) || p(y))) over 10 splits, mean and std of the splits.

As the official computations (improved-GAN's TF code, StackGAN/AttnGAN's evaluation): the
softmax of the classifier's logits, the N images cut into ``splits`` consecutive parts, p(y)
the mean prediction of each part, the score of a part exp(mean KL), and the mean and the
population std (``np.std``) of the parts' scores.  The protocol names the classifier:
torchvision's 1000 ImageNet classes or the TF graph's 1008-class head.

Unlike FID this needs every image's class probabilities (N x C float32: 120 MB at 30k x 1008),
which is N x C, not N x 2048^2; ranks gather theirs on rank 0 (rank order, then image order).
"""
from __future__ import annotations

import numpy as np
import torch


def inception_score_from_probs(probs, splits: int = 10) -> tuple[float, float]:
    """(mean, std) of the IS over ``splits`` consecutive parts of (N, C) class probabilities."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs: expected (N, C), got {p.shape}")
    if splits < 1 or p.shape[0] < splits:
        raise ValueError(f"IS: {p.shape[0]} images cannot make {splits} splits (need at least one image per split)")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs: expected finite non-negative probabilities")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(0, keepdims=True)
        # 0 * log 0 = 0: classes a softmax never reaches exactly, kept safe for given probabilities
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(py)), 0.0).sum(1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


class ClassProbabilities:
    """Collects softmax(logits) per batch (float32 on the CPU) and gathers them across ranks."""

    def __init__(self):
        self.parts: list[torch.Tensor] = []

    def update(self, logits: torch.Tensor) -> None:
        if logits.dim() != 2:
            raise ValueError(f"logits: expected (N, C), got {tuple(logits.shape)}")
        self.parts.append(torch.softmax(logits.detach().double(), dim=1).float().cpu())

    def __len__(self) -> int:
        return sum(p.shape[0] for p in self.parts)

    def gather(self) -> torch.Tensor | None:
        """All ranks' probabilities on rank 0 (None on the others); this rank's without a process group."""
        import torch.distributed as dist

        local = torch.cat(self.parts) if self.parts else torch.zeros(0, 0)
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return local
        objs = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
        dist.gather_object(local, objs, dst=0)
        if dist.get_rank() != 0:
            return None
        return torch.cat([o for o in objs if o.numel()])

    def score(self, splits: int = 10) -> tuple[float, float] | None:
        probs = self.gather()
        return None if probs is None else inception_score_from_probs(probs.numpy(), splits)
