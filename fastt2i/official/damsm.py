"""AttnGAN's DAMSM matching as its authors wrote it (taoxugit/AttnGAN: ``func_attention`` of
``code/GlobalAttention.py``; ``cosine_similarity``, ``words_loss`` and ``sent_loss`` of
``code/miscc/losses.py``), re-expressed in plain PyTorch without fastt2i ops.

Kept from the official code because it decides the numbers: one attention per caption,
with the caption's real words repeated for every image; the softmax over the words, then
over the regions of ``gamma1`` times it; the cosine ``x.y / max(|x| |y|, eps)``;
``log(sum(exp(gamma2 * cos)))`` over a caption's words, written with in-place ops;
``gamma3`` times the scores, same-class pairs other than the matching one set to -inf
(through ``.data``), and the cross-entropy both ways.  Configuration values (``cfg.TRAIN.
SMOOTH.GAMMA1/2/3``) are arguments; ``.cuda()`` becomes the device of the inputs.

fastt2i's fast forms are ``fastt2i.ops.damsm_word_scores`` (all pairs at once, with a
vectorised reference) and ``fastt2i.losses.damsm_word_loss`` / ``damsm_sentence_loss``.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def cosine_similarity(x1, x2, dim=1, eps=1e-8):
    """``x1 . x2 / max(|x1| |x2|, eps)`` along ``dim``, squeezed."""
    dot = torch.sum(x1 * x2, dim)
    norms = torch.norm(x1, 2, dim) * torch.norm(x2, 2, dim)
    return (dot / norms.clamp(min=eps)).squeeze()


def func_attention(query, context, gamma1):
    """Words attending over image regions, as DAMSM does (Eq. 7-9 of the AttnGAN paper).

    query: (batch, ndf, queryL) word features; context: (batch, ndf, ih, iw) regions.
    Returns the region context of every word (batch, ndf, queryL) and the attention over
    the regions (batch, queryL, ih, iw).
    """
    batch, words = query.size(0), query.size(2)
    ih, iw = context.size(2), context.size(3)
    regions = context.view(batch, -1, ih * iw)                       # (batch, ndf, N)
    scores = torch.bmm(torch.transpose(regions, 1, 2).contiguous(), query)  # (batch, N, queryL)
    # softmax over the words of each region
    attn = nn.Softmax(dim=1)(scores.view(batch * ih * iw, words)).view(batch, ih * iw, words)
    # then, per word, softmax over the regions of gamma1 times it
    attn = torch.transpose(attn, 1, 2).contiguous().view(batch * words, ih * iw)
    attn = nn.Softmax(dim=1)(attn * gamma1).view(batch, words, ih * iw)
    weighted = torch.bmm(regions, torch.transpose(attn, 1, 2).contiguous())
    return weighted, attn.view(batch, -1, ih, iw)


def word_scores(words_emb, cap_lens, img_features, gamma1=4.0, gamma2=5.0):
    """The similarity loop of ``words_loss``: ``R(image j, caption i)`` for every pair.

    One ``func_attention`` per caption, on its ``cap_lens[i]`` real words repeated for each
    of the M images.  Returns ``(similarities (M, B), att_maps)``, ``att_maps[i]`` the
    (1, len_i, H, W) attention of caption i on image i (for i < M).  The official code
    has M == B; M != B also runs here.
    """
    images = img_features.size(0)
    lengths = cap_lens.data.tolist()
    columns, att_maps = [], []
    for i in range(words_emb.size(0)):
        n = lengths[i]
        word = words_emb[i, :, :n].unsqueeze(0).contiguous().repeat(images, 1, 1)
        context, attn = func_attention(word, img_features, gamma1)
        if i < images:
            att_maps.append(attn[i].unsqueeze(0).contiguous())
        word = word.transpose(1, 2).contiguous().view(images * n, -1)
        context = context.transpose(1, 2).contiguous().view(images * n, -1)
        row_sim = cosine_similarity(word, context).view(images, n)
        row_sim.mul_(gamma2).exp_()                                   # Eq. 10, in place as upstream
        columns.append(torch.log(row_sim.sum(dim=1, keepdim=True)))
    return torch.cat(columns, 1), att_maps


def _same_class_masks(class_ids, batch_size, device):
    """(batch, batch) uint8: 1 where sample j shares sample i's class, j != i."""
    rows = []
    for i in range(batch_size):
        row = (class_ids == class_ids[i]).astype(np.uint8)
        row[i] = 0
        rows.append(row.reshape((1, -1)))
    return torch.ByteTensor(np.concatenate(rows, 0)).to(device)


def words_loss(img_features, words_emb, labels, cap_lens, class_ids, batch_size,
               gamma1=4.0, gamma2=5.0, gamma3=10.0):
    """DAMSM's word loss: returns ``(loss0, loss1, att_maps)`` (losses None without labels).

    ``loss0``: each image's cross-entropy over the captions; ``loss1``: each caption's over
    the images.  ``class_ids``: a numpy array or None.
    """
    similarities, att_maps = word_scores(words_emb[:batch_size], cap_lens, img_features, gamma1, gamma2)
    similarities = similarities * gamma3
    if class_ids is not None:
        masks = _same_class_masks(class_ids, batch_size, similarities.device)
        similarities.data.masked_fill_(masks.to(torch.bool), -float("inf"))
    if labels is None:
        return None, None, att_maps
    return (nn.CrossEntropyLoss()(similarities, labels),
            nn.CrossEntropyLoss()(similarities.transpose(0, 1), labels), att_maps)


def sent_loss(cnn_code, rnn_code, labels, class_ids, batch_size, eps=1e-8, gamma3=10.0):
    """DAMSM's sentence loss: ``(loss0, loss1)`` over ``gamma3`` times the cosines of every
    image code with every sentence (losses None without labels)."""
    if cnn_code.dim() == 2:
        cnn_code, rnn_code = cnn_code.unsqueeze(0), rnn_code.unsqueeze(0)
    cnn_norm = torch.norm(cnn_code, 2, dim=2, keepdim=True)
    rnn_norm = torch.norm(rnn_code, 2, dim=2, keepdim=True)
    scores = torch.bmm(cnn_code, rnn_code.transpose(1, 2))
    norms = torch.bmm(cnn_norm, rnn_norm.transpose(1, 2))
    scores0 = (scores / norms.clamp(min=eps) * gamma3).squeeze()
    if class_ids is not None:
        masks = _same_class_masks(class_ids, batch_size, cnn_code.device)
        scores0.data.masked_fill_(masks.to(torch.bool), -float("inf"))
    if labels is None:
        return None, None
    return nn.CrossEntropyLoss()(scores0, labels), nn.CrossEntropyLoss()(scores0.transpose(0, 1), labels)
