"""DAMSM losses (AttnGAN, taoxugit/AttnGAN code/miscc/losses.py): word-level and
sentence-level matching, cross-entropy both ways over gamma3 * scores.

``damsm_word_loss`` / ``damsm_sentence_loss`` are the fast forms (the word scores come from
the fused op ``fastt2i.ops.damsm_word_scores``).  The official ``words_loss`` /
``sent_loss`` (the specification and the benchmark baseline) are in
``fastt2i.official.damsm``.

Both return ``(loss0, loss1)`` like the official code: ``loss0`` is the cross-entropy of
each image over the captions (rows of the (images x captions) logits), ``loss1`` of each
caption over the images.  AttnGAN adds them (times lambda); DAMSM pretraining logs both.
With class ids, the pairs of a caption with the other images of its class (and of an image
with the other captions of its class) are excluded, as in the official code.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..ops import damsm_word_scores
from ..ops.damsm import COS_EPS


# ----------------------------------------------------------------------------- fast forms

def class_mask(class_ids, n: int, device) -> torch.Tensor:
    """(n, n) bool: True where two different samples share a class (excluded pairs)."""
    ids = torch.as_tensor(np.asarray(class_ids) if not isinstance(class_ids, torch.Tensor) else class_ids)
    if ids.dim() != 1 or ids.shape[0] != n:
        raise ValueError(f"class_ids: expected {n} class ids (one per sample), got shape {tuple(ids.shape)}")
    ids = ids.to(device)
    same = ids[:, None] == ids[None, :]
    return same & ~torch.eye(n, dtype=torch.bool, device=device)


def _labels(labels, n: int, device) -> torch.Tensor:
    if labels is None:
        return torch.arange(n, device=device)
    if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected an int64 tensor of shape ({n},), got {got}")
    return labels.to(device)


def _both_ways(logits: torch.Tensor, labels, class_ids):
    n = logits.shape[0]
    if logits.shape[1] != n:
        raise ValueError(f"expected as many images as captions for the loss, got scores {tuple(logits.shape)}")
    labels = _labels(labels, n, logits.device)
    if class_ids is not None:
        logits = logits.masked_fill(class_mask(class_ids, n, logits.device), float("-inf"))
    return F.cross_entropy(logits, labels), F.cross_entropy(logits.t(), labels)


def damsm_word_loss(words, lengths, regions, labels=None, class_ids=None,
                    gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0):
    """DAMSM word loss: cross-entropy both ways over gamma3 * damsm_word_scores.

    Args:
        words: (B, D, T) word features; lengths: (B,) integer, 1 <= lengths <= T.
        regions: (B, D, H, W) region features of the B matching images (image i goes with caption i).
        labels: (B,) int64 targets, default ``arange(B)`` (the official ``match_labels``).
        class_ids: None, or B class ids (numpy array, list or tensor): same-class pairs other
            than the matching one are excluded.
    Returns:
        (loss0, loss1) scalars (float32, float64 for float64 inputs): images over captions,
        captions over images.
    """
    scores = damsm_word_scores(words, lengths, regions, gamma1, gamma2)
    return _both_ways(gamma3 * scores.to(torch.promote_types(scores.dtype, torch.float32)), labels, class_ids)


def damsm_sentence_loss(sentence, image_code, labels=None, class_ids=None, gamma3: float = 10.0):
    """DAMSM sentence loss: cross-entropy both ways over gamma3 * cos(image code, sentence).

    Args:
        sentence: (B, D) sentence features; image_code: (B, D) image codes.
    Returns:
        (loss0, loss1) as ``damsm_word_loss``.
    """
    for name, t in (("sentence", sentence), ("image_code", image_code)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2 or not t.is_floating_point():
            got = f"shape {tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{name}: expected a floating (B, D) tensor, got {got}")
    if sentence.shape != image_code.shape:
        raise ValueError(f"image_code: expected shape {tuple(sentence.shape)} like sentence, "
                         f"got {tuple(image_code.shape)}")
    dtype = torch.promote_types(torch.promote_types(sentence.dtype, image_code.dtype), torch.float32)
    s, c = sentence.to(dtype), image_code.to(dtype)
    norm = (c.norm(dim=1, keepdim=True) * s.norm(dim=1)[None, :]).clamp(min=COS_EPS)
    return _both_ways(c @ s.t() / norm * gamma3, labels, class_ids)
