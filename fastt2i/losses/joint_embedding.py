"""Deep (symmetric) structured joint embedding loss of Reed et al., CVPR 2016 (char-CNN-RNN training).

For image features v (B, D) and text features t (C, D), with labels y (B,) giving each image's
text row, the ``JointEmbeddingLoss`` of ``train_sje_hybrid.lua`` is the multi-class hinge

    L(v, t, y) = sum_i sum_{j != y_i} max(0, 1 + <v_i, t_j> - <v_i, t_{y_i}>) / (B * C)

and the symmetric form (``-symmetric 1``, the released setting) adds the same loss with the
roles of images and texts swapped: L(v, t, y) + L(t, v, y).  The Lua code writes the
subgradient by hand (a term contributes only when its margin is > 0); autograd of the
expression below gives the same numbers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _check(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name}: expected a (N, D) feature matrix, got {shape}")


def structured_hinge_loss(queries: torch.Tensor, candidates: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L(queries, candidates, labels): the one-directional loss above (queries play the images)."""
    _check("queries", queries)
    _check("candidates", candidates)
    if queries.shape[1] != candidates.shape[1]:
        raise ValueError(f"queries and candidates: feature sizes differ ({queries.shape[1]} vs {candidates.shape[1]})")
    if labels.shape != (queries.shape[0],):
        raise ValueError(f"labels: expected ({queries.shape[0]},), got {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= candidates.shape[0]):
        raise ValueError(f"labels: expected indices in [0, {candidates.shape[0]}), got [{int(labels.min())}, "
                         f"{int(labels.max())}]")
    scores = queries @ candidates.t()                                   # (B, C)
    true = scores.gather(1, labels[:, None])                            # (B, 1)
    margins = F.relu(scores - true + 1.0)
    margins = margins.scatter(1, labels[:, None], 0.0)                  # j == y_i does not count
    return margins.sum() / (queries.shape[0] * candidates.shape[0])


def joint_embedding_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                         labels: torch.Tensor | None = None, symmetric: bool = True) -> torch.Tensor:
    """Symmetric structured joint embedding loss; ``labels`` default to the diagonal (pair i is (i, i))."""
    _check("image_features", image_features)
    _check("text_features", text_features)
    if labels is None:
        if image_features.shape[0] != text_features.shape[0]:
            raise ValueError("labels: needed when image and text batches differ in size "
                             f"({image_features.shape[0]} vs {text_features.shape[0]})")
        labels = torch.arange(image_features.shape[0], device=image_features.device)
    loss = structured_hinge_loss(image_features, text_features, labels)
    if symmetric:
        loss = loss + structured_hinge_loss(text_features, image_features, labels)
    return loss
