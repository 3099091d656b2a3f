"""Sampling helpers shared by the families: truncated noise, caption encoding, chunked generation."""
from __future__ import annotations

import torch

from fastt2i.text import RNNEncoder, Vocabulary, encode_captions

from .text_conditioning import standardize


def truncated_noise(batch_size: int, nz: int = 100, truncation: float = 1.0, generator: torch.Generator | None = None,
                    device="cpu") -> torch.Tensor:
    """Official ``truncated_noise``: truncation * truncnorm(-2, 2) samples, (batch, nz) float32."""
    if truncation <= 0:
        raise ValueError(f"truncation: expected > 0, got {truncation}")
    z = torch.empty(batch_size, nz)
    torch.nn.init.trunc_normal_(z, 0.0, 1.0, -2.0, 2.0, generator=generator)
    return (z * truncation).to(device)


def caption_embeddings(text_encoder: RNNEncoder, vocab: Vocabulary, captions: list[str], device,
                       sentence_norm: tuple | None = None) -> torch.Tensor:
    """Sentence embeddings (B, 256) of raw captions (unknown words dropped; none left is an error).

    ``sentence_norm`` = (mean, std) standardises them as the trainer did for a random encoder.
    """
    ids, lens = vocab.encode_batch(captions)
    sent, _ = encode_captions(text_encoder, ids.to(device), lens)
    return standardize(sent, sentence_norm)


@torch.no_grad()
def generate(netG: torch.nn.Module, sentence: torch.Tensor, noise: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Images (B, 3, S, S) in [-1, 1], in chunks of ``batch_size``."""
    was_training = netG.training
    netG.eval()
    try:
        outs = [netG(noise[i:i + batch_size], sentence[i:i + batch_size]).float()
                for i in range(0, sentence.shape[0], batch_size)]
    finally:
        netG.train(was_training)
    return torch.cat(outs)
