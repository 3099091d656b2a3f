"""Sampling DF-GAN: truncated noise, caption encoding, image grids from a checkpoint."""
from __future__ import annotations

import torch

from fastt2i.models import DFGANConfig, NetG, load_official_state_dict
from fastt2i.text import RNNEncoder, Vocabulary, encode_captions


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
    if sentence_norm is not None:
        mean, std = (t.to(sent.device) for t in sentence_norm)
        sent = (sent - mean) / std
    return sent


@torch.no_grad()
def generate(netG: NetG, sentence: torch.Tensor, noise: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Images (B, 3, S, S) in [-1, 1], in chunks of ``batch_size``."""
    was_training = netG.training
    netG.eval()
    try:
        outs = [netG(noise[i:i + batch_size], sentence[i:i + batch_size]).float()
                for i in range(0, sentence.shape[0], batch_size)]
    finally:
        netG.train(was_training)
    return torch.cat(outs)


def load_sampler(checkpoint: str, device="cpu", use_ema: bool = True, text_encoder_path: str | None = None,
                 vocab_path: str | None = None, config: DFGANConfig | None = None):
    """(netG, text_encoder, vocab, config, sentence_norm) for sampling.

    A fastt2i checkpoint carries its configuration, text encoder and vocabulary.  An official
    training state (or a plain netG file) needs ``text_encoder_path`` (the DAMSM
    ``text_encoder*.pth``), ``vocab_path`` (the dataset's ``captions.pickle``) and ``config``.
    """
    from .checkpoint import read_checkpoint_file

    obj = read_checkpoint_file(checkpoint)
    if isinstance(obj, dict) and isinstance(obj.get("fastt2i"), dict):
        meta = obj["fastt2i"]
        cfg = DFGANConfig.from_dict(meta["model_config"])
        netG = NetG(cfg.ngf, cfg.nz, cfg.cond_dim, cfg.imsize, cfg.ch_size)
        state = meta["ema"] if (use_ema and meta.get("ema") is not None) else obj["model"]["netG"]
        load_official_state_dict(netG, state)
        vocab = Vocabulary(meta["vocab"])
        text_encoder = RNNEncoder(len(vocab), **meta.get("text_encoder_config", {}))
        load_official_state_dict(text_encoder, meta["text_encoder"])
        norm = meta.get("sentence_norm")
        sentence_norm = None if norm is None else tuple(norm)
    else:
        # the official training state (state_epoch_*.pth) or a plain netG state dict
        if text_encoder_path is None or vocab_path is None:
            raise ValueError(f"{checkpoint} is an official DF-GAN file: sampling needs --text-encoder "
                             "(DAMSM text_encoder*.pth) and --vocab (the dataset's captions.pickle)")
        cfg = config or DFGANConfig()
        netG = NetG(cfg.ngf, cfg.nz, cfg.cond_dim, cfg.imsize, cfg.ch_size)
        load_official_state_dict(netG, obj)
        vocab = Vocabulary.load(vocab_path)
        text_encoder = RNNEncoder(len(vocab), words_num=cfg.words_num)
        load_official_state_dict(text_encoder, text_encoder_path)
        sentence_norm = None
    netG.to(device).eval()
    text_encoder.to(device).eval()
    for p in list(netG.parameters()) + list(text_encoder.parameters()):
        p.requires_grad_(False)
    return netG, text_encoder, vocab, cfg, sentence_norm
