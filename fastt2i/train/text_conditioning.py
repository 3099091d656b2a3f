"""The frozen DAMSM text encoder that conditions DF-GAN, AttnGAN, MirrorGAN and DR-GAN.

With an official ``text_encoder*.pth`` the encoder is the pretrained one.  Without one (the
synthetic shapes, tests) it is a random frozen encoder whose sentence vectors are
standardised per dimension over the training captions (see :func:`sentence_statistics`).
"""
from __future__ import annotations

import torch

from fastt2i.models import load_state_dict_checked
from fastt2i.models._checkpoint import read_weights
from fastt2i.text import RNNEncoder, encode_captions

from .core import mix_seed


def frozen_text_encoder(vocab_size: int, words_num: int, path: str | None, device) -> RNNEncoder:
    """The DAMSM RNN encoder, loaded from ``path`` or random, in eval mode without gradients."""
    encoder = RNNEncoder(vocab_size, words_num=words_num)
    if path:
        load_state_dict_checked(encoder, read_weights(path, "text encoder"), f"text encoder {path}")
    else:
        # No pretrained DAMSM: a random frozen encoder.  N(0, 1) word embeddings (instead of
        # the official U(-0.1, 0.1) init, made for training) keep the LSTM out of its linear
        # range, so different captions get clearly different sentence vectors.
        torch.nn.init.normal_(encoder.encoder.weight, 0.0, 1.0)
    return encoder.to(device).eval().requires_grad_(False)


@torch.no_grad()
def sentence_statistics(text_encoder: RNNEncoder, dataset, vocab, device, seed: int, n: int = 2048
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per dimension of the sentence vectors of ``n`` training captions.

    An untrained LSTM's sentence vectors share a large common part and vary by ~0.1 per
    dimension, ten times less than the N(0, 1) noise that they are concatenated with in the
    generators' conditions, so G would long ignore the text.  Standardising them (a fixed affine
    map, saved in checkpoints) gives the text the noise's scale.
    """
    g = torch.Generator().manual_seed(mix_seed(seed, 11))
    idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
    if hasattr(dataset, "caption"):
        ids, lens = vocab.encode_batch([dataset.caption(i) for i in idx])
    else:
        ids, lens = vocab.encode_batch([dataset.captions[i * dataset.embeddings_num] for i in idx])
    sents = [encode_captions(text_encoder, ids[i:i + 512].to(device), lens[i:i + 512])[0]
             for i in range(0, len(idx), 512)]
    sent = torch.cat(sents)
    return sent.mean(0), sent.std(0).clamp_min(1e-3)


def standardize(sent: torch.Tensor, norm: tuple | None) -> torch.Tensor:
    """(sent - mean) / std with the saved statistics; unchanged when ``norm`` is None."""
    if norm is None:
        return sent
    mean, std = (t.to(sent.device) for t in norm)
    return (sent - mean) / std


class FrozenTextEncoderState:
    """Checkpoint contents of a trainer conditioned on the frozen DAMSM text encoder (DF-GAN,
    AttnGAN and the families built on it): the encoder and the sentence standardisation, so a
    checkpoint samples with the conditioning it was trained with.  Mixed in before ``Trainer``."""

    def extra_state(self) -> dict:
        return {
            "text_encoder": self.text_encoder.state_dict(),
            "text_encoder_config": {"words_num": self.mcfg.words_num},
            "sentence_norm": None if self.sentence_norm is None else [t.cpu() for t in self.sentence_norm],
        }

    def load_extra_state(self, meta: dict, path: str) -> None:
        load_state_dict_checked(self.text_encoder, meta["text_encoder"], f"{path}: text_encoder")
        norm = meta.get("sentence_norm")
        self.sentence_norm = None if norm is None else tuple(t.to(self.device) for t in norm)
