"""R-precision with the DAMSM encoders, DM-GAN's protocol (the one the field reports).

For each generated image: its DAMSM image code (CNN_ENCODER's second output) is compared by
cosine similarity with the sentence codes of 100 candidate captions: its own caption and 99
captions drawn at random from captions of other classes.  A hit is the own caption ranking
first.  The hits are cut into folds of 3,000 images (10 folds for the usual 30,000) and the
result is the mean and the std (``np.std``) of the folds' hit rates.

Ties: the official ``argmax == 0`` gives a tie to the true caption (a constant encoder would
score 1.0); here a tie between the true caption and k others counts 1/(k + 1), the expected hit
of a random tie break.  With real-valued codes ties do not happen and the two agree.

The encoders are small interfaces, so any pair works:
- image side: a callable taking images (N, 3, H, W) in [-1, 1] and returning (N, D) codes or a
  tuple whose last element is the code (CNN_ENCODER returns (regions, code));
- text side: a callable taking a list of caption strings and returning (N, D) sentence codes.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

CANDIDATES = 100
FOLD_SIZE = 3000


def image_code_fn(image_encoder) -> Callable[[torch.Tensor], torch.Tensor]:
    """A module returning (regions, code) or a code -> a function images -> (N, D) code."""

    @torch.no_grad()
    def encode(images: torch.Tensor) -> torch.Tensor:
        out = image_encoder(images)
        code = out[-1] if isinstance(out, (tuple, list)) else out
        if not isinstance(code, torch.Tensor) or code.dim() != 2 or code.shape[0] != images.shape[0]:
            got = tuple(code.shape) if isinstance(code, torch.Tensor) else type(code).__name__
            raise ValueError(f"image encoder: expected an (N, D) code for {images.shape[0]} images, got {got}")
        return code

    return encode


def sentence_code_fn(text_encoder, vocab, device="cpu", batch_size: int = 256) -> Callable[[list[str]], torch.Tensor]:
    """A DAMSM RNN text encoder (returning (words, sentence)) and its vocabulary -> captions -> (N, D)."""
    from fastt2i.text import encode_captions

    @torch.no_grad()
    def encode(captions: list[str]) -> torch.Tensor:
        out = []
        for i in range(0, len(captions), batch_size):
            ids, lens = vocab.encode_batch(captions[i:i + batch_size])
            sent, _ = encode_captions(text_encoder, ids.to(device), lens)
            out.append(sent.float())
        return torch.cat(out)

    return encode


def r_precision_hits(image_codes: torch.Tensor, true_index: Sequence[int], pool_codes: torch.Tensor,
                     pool_classes: Sequence, candidates: int = CANDIDATES,
                     generator: np.random.Generator | None = None) -> np.ndarray:
    """Per-image hit (float in [0, 1]) of the true caption among ``candidates`` by cosine.

    ``pool_codes`` (P, D) are the sentence codes of the caption pool, ``pool_classes`` their
    class ids, ``true_index[i]`` the pool row of image i's caption; the 99 others are drawn
    from pool rows whose class differs from the true caption's class.
    """
    image_codes = torch.as_tensor(image_codes).double()
    pool = torch.as_tensor(pool_codes).double()
    if image_codes.dim() != 2 or pool.dim() != 2 or image_codes.shape[1] != pool.shape[1]:
        raise ValueError(f"codes: expected (N, D) images and (P, D) sentences, got {tuple(image_codes.shape)} "
                         f"and {tuple(pool.shape)}")
    n = image_codes.shape[0]
    true_index = np.asarray(true_index, dtype=np.int64)
    classes = np.asarray(pool_classes)
    if true_index.shape != (n,) or classes.shape != (pool.shape[0],):
        raise ValueError(f"true_index: expected ({n},) and pool_classes ({pool.shape[0]},), got "
                         f"{true_index.shape} and {classes.shape}")
    if n and (true_index.min() < 0 or true_index.max() >= pool.shape[0]):
        raise ValueError(f"true_index: rows must be in [0, {pool.shape[0]})")
    rng = generator if generator is not None else np.random.default_rng(0)
    # cosine with the denominator clamped as DAMSM's cosine_similarity (1e-8)
    img = image_codes / image_codes.norm(dim=1, keepdim=True).clamp_min(1e-8)
    sen = pool / pool.norm(dim=1, keepdim=True).clamp_min(1e-8)
    # DM-GAN draws each mismatched caption at random from the captions of other classes
    # (independent draws); here one uniform number per candidate, mapped into that class's list
    uniforms = rng.random((n, candidates - 1))
    others_of: dict = {}
    wrong = np.empty((n, candidates - 1), dtype=np.int64)
    for i in range(n):
        cls = classes[true_index[i]]
        others = others_of.get(cls)
        if others is None:
            others = others_of[cls] = np.flatnonzero(classes != cls)
            if len(others) < candidates - 1:
                raise ValueError(f"R-precision needs {candidates - 1} captions of other classes than {cls!r}; "
                                 f"the pool has {len(others)}")
        wrong[i] = others[(uniforms[i] * len(others)).astype(np.int64)]
    hits = np.empty(n)
    chunk = 512
    for s in range(0, n, chunk):
        rows = np.concatenate([true_index[s:s + chunk, None], wrong[s:s + chunk]], axis=1)
        scores = torch.einsum("ncd,nd->nc", sen[torch.from_numpy(rows)], img[s:s + chunk])
        best = scores.max(dim=1, keepdim=True).values
        ties = (scores == best).sum(1).double()
        hits[s:s + chunk] = torch.where(scores[:, 0] == best[:, 0], 1.0 / ties, torch.zeros_like(ties)).numpy()
    return hits


def fold_statistics(hits: np.ndarray, fold_size: int = FOLD_SIZE) -> dict:
    """Mean and std of the hit rates of consecutive folds (a last partial fold is kept)."""
    hits = np.asarray(hits, dtype=np.float64)
    if hits.size == 0:
        raise ValueError("R-precision: no image")
    folds = [float(hits[i:i + fold_size].mean()) for i in range(0, hits.size, fold_size)]
    return {"mean": float(np.mean(folds)), "std": float(np.std(folds)), "folds": folds, "n": int(hits.size)}


def r_precision(image_codes, true_index, pool_codes, pool_classes, candidates: int = CANDIDATES,
                fold_size: int = FOLD_SIZE, seed: int = 0) -> dict:
    """R-precision (DM-GAN protocol): {'mean', 'std', 'folds', 'n'}."""
    hits = r_precision_hits(image_codes, true_index, pool_codes, pool_classes, candidates,
                            np.random.default_rng(seed))
    return fold_statistics(hits, fold_size)
