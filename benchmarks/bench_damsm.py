"""DAMSM word loss, forward + backward, at the shapes of DAMSM pretraining and AttnGAN training.

Providers: ``official`` (AttnGAN's words_loss loop, transcribed), ``eager`` and ``compile``
(the vectorised PyTorch reference), and each fused backend.
"""
from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import Case, backend_provider, compiled_provider, fused_backends, saved_tensor_bytes
from fastt2i import losses, ops
from fastt2i.losses import damsm as damsm_losses
from fastt2i.official import damsm as official_damsm
from fastt2i.ops import damsm

# (label, B = M, D, T, H = W): DAMSM pretraining (batch 48, CUB), AttnGAN CUB (20) and COCO (14, T 12).
GPU_SHAPES = [("DAMSM pretrain", 48, 256, 18, 17), ("AttnGAN CUB", 20, 256, 18, 17),
              ("AttnGAN COCO", 14, 256, 12, 17)]
# On CPU too the real shapes (the official loop takes about a second per call at B = 48).
CPU_SHAPES = [("DAMSM pretrain", 48, 256, 18, 17), ("AttnGAN COCO", 14, 256, 12, 17)]


def _inputs(B, D, T, S, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(B, D, T, generator=g).to(device).requires_grad_()
    regions = torch.randn(B, D, S, S, generator=g).to(device).requires_grad_()
    lengths = torch.randint(max(1, T // 3), T + 1, (B,), generator=g)
    lengths[0] = T
    class_ids = np.arange(B) % max(1, B // 2)  # pairs of captions share a class: the mask is used
    return words, lengths.to(device), regions, class_ids


def _official(words, lengths, regions, class_ids):
    B = words.shape[0]
    labels = torch.arange(B, device=words.device)
    loss0, loss1, _ = official_damsm.words_loss(regions, words, labels, lengths, class_ids, B)
    return loss0 + loss1


def _vectorised(words, lengths, regions, class_ids):
    scores = damsm.damsm_word_scores_reference(words, lengths, regions)
    loss0, loss1 = damsm_losses._both_ways(10.0 * scores, None, class_ids)
    return loss0 + loss1


def _fused(words, lengths, regions, class_ids):
    loss0, loss1 = losses.damsm_word_loss(words, lengths, regions, class_ids=class_ids)
    return loss0 + loss1


def _closure(loss_fn, B, D, T, S, device):
    def make():
        words, lengths, regions, class_ids = _inputs(B, D, T, S, device)

        def run():
            words.grad = regions.grad = None  # as a training step's zero_grad (see common.fwd_bwd)
            loss_fn(words, lengths, regions, class_ids).backward()
        return run
    return make


def _saved(loss_fn, backend, B, D, T, S, device):
    def make():
        words, lengths, regions, class_ids = _inputs(B, D, T, S, device)

        def measure():
            with ops.use_backend(backend):
                return saved_tensor_bytes(lambda: loss_fn(words, lengths, regions, class_ids))
        return measure
    return make


def cases(device: str, quick: bool) -> list[Case]:
    out = []
    for label, B, D, T, S in (GPU_SHAPES if device == "cuda" else CPU_SHAPES):
        providers = {
            "official": _closure(_official, B, D, T, S, device),
            "eager": _closure(_vectorised, B, D, T, S, device),
            "compile": compiled_provider(lambda fn, B=B, D=D, T=T, S=S: _closure(fn, B, D, T, S, device), _vectorised),
        }
        saved = {"official": _saved(_official, "reference", B, D, T, S, device),
                 "eager": _saved(_vectorised, "reference", B, D, T, S, device)}
        for backend in fused_backends(device):
            providers[backend] = backend_provider(backend, _closure(_fused, B, D, T, S, device))
            saved[backend] = _saved(_fused, backend, B, D, T, S, device)
        # the official algorithm's multiply-adds: scores and context forward, twice that backward
        flops = 6 * 2 * B * B * S * S * T * D
        out.append(Case(op="damsm_word_loss", name=f"{label} B{B} D{D} T{T} {S}x{S} fp32",
                        mode="forward+backward", providers=providers, flops=flops, saved_bytes=saved,
                        quick=label == "AttnGAN COCO", items=B * B))
    return out
