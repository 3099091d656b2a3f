"""DAMSM losses (AttnGAN, taoxugit/AttnGAN code/miscc/losses.py): word-level and
sentence-level matching, cross-entropy both ways over gamma3 * scores.

``damsm_word_loss`` / ``damsm_sentence_loss`` are the fast forms (the word scores come from
the fused op ``fastt2i.ops.damsm_word_scores``).  ``words_loss_official`` /
``sent_loss_official`` transcribe the official functions literally (configuration values
passed as arguments instead of ``cfg``): they are the specification and the benchmark
baseline.

Both return ``(loss0, loss1)`` like the official code: ``loss0`` is the cross-entropy of
each image over the captions (rows of the (images x captions) logits), ``loss1`` of each
caption over the images.  AttnGAN adds them (times lambda); DAMSM pretraining logs both.
With class ids, the pairs of a caption with the other images of its class (and of an image
with the other captions of its class) are excluded, as in the official code.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import damsm as _damsm
from ..ops import damsm_word_scores

COS_EPS = 1e-8


# ----------------------------------------------------------------------------- official, literal

def sent_loss_official(cnn_code, rnn_code, labels, class_ids, batch_size, eps=1e-8, gamma3=10.0):
    """AttnGAN's ``sent_loss`` (class_ids a numpy array or None; cfg.TRAIN.SMOOTH.GAMMA3 = gamma3)."""
    masks = []
    if class_ids is not None:
        for i in range(batch_size):
            mask = (class_ids == class_ids[i]).astype(np.uint8)
            mask[i] = 0
            masks.append(mask.reshape((1, -1)))
        masks = np.concatenate(masks, 0)
        masks = torch.ByteTensor(masks).to(cnn_code.device)
    if cnn_code.dim() == 2:
        cnn_code = cnn_code.unsqueeze(0)
        rnn_code = rnn_code.unsqueeze(0)
    cnn_code_norm = torch.norm(cnn_code, 2, dim=2, keepdim=True)
    rnn_code_norm = torch.norm(rnn_code, 2, dim=2, keepdim=True)
    scores0 = torch.bmm(cnn_code, rnn_code.transpose(1, 2))
    norm0 = torch.bmm(cnn_code_norm, rnn_code_norm.transpose(1, 2))
    scores0 = scores0 / norm0.clamp(min=eps) * gamma3
    scores0 = scores0.squeeze()
    if class_ids is not None:
        masks_bool = masks.to(torch.bool)
        scores0.data.masked_fill_(masks_bool, -float("inf"))
    scores1 = scores0.transpose(0, 1)
    if labels is not None:
        loss0 = nn.CrossEntropyLoss()(scores0, labels)
        loss1 = nn.CrossEntropyLoss()(scores1, labels)
    else:
        loss0, loss1 = None, None
    return loss0, loss1


def words_loss_official(img_features, words_emb, labels, cap_lens, class_ids, batch_size,
                        gamma1=4.0, gamma2=5.0, gamma3=10.0):
    """AttnGAN's ``words_loss``: returns (loss0, loss1, att_maps)."""
    masks = []
    att_maps = []
    similarities = []
    cap_lens = cap_lens.data.tolist()
    for i in range(batch_size):
        if class_ids is not None:
            mask = (class_ids == class_ids[i]).astype(np.uint8)
            mask[i] = 0
            masks.append(mask.reshape((1, -1)))
        words_num = cap_lens[i]
        word = words_emb[i, :, :words_num].unsqueeze(0).contiguous()
        word = word.repeat(batch_size, 1, 1)
        context = img_features
        weiContext, attn = _damsm.func_attention_official(word, context, gamma1)
        att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous()
        weiContext = weiContext.transpose(1, 2).contiguous()
        word = word.view(batch_size * words_num, -1)
        weiContext = weiContext.view(batch_size * words_num, -1)
        row_sim = _damsm.cosine_similarity_official(word, weiContext)
        row_sim = row_sim.view(batch_size, words_num)
        row_sim.mul_(gamma2).exp_()
        row_sim = row_sim.sum(dim=1, keepdim=True)
        row_sim = torch.log(row_sim)
        similarities.append(row_sim)
    similarities = torch.cat(similarities, 1)
    if class_ids is not None:
        masks = np.concatenate(masks, 0)
        masks = torch.ByteTensor(masks).to(similarities.device)
    similarities = similarities * gamma3
    if class_ids is not None:
        masks_bool = masks.to(torch.bool)
        similarities.data.masked_fill_(masks_bool, -float("inf"))
    similarities1 = similarities.transpose(0, 1)
    if labels is not None:
        loss0 = nn.CrossEntropyLoss()(similarities, labels)
        loss1 = nn.CrossEntropyLoss()(similarities1, labels)
    else:
        loss0, loss1 = None, None
    return loss0, loss1, att_maps


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
