"""Generation for evaluation: a checkpoint of a family -> images for a list of captions.

Generation uses the sampling code of fastt2i.train, imported lazily (fastt2i.eval sits below
the trainers; the family registry will supply the loaders).  One small interface (``load_generator(family, checkpoint, ...)`` -> ``CaptionGenerator``) so
that the family registry can replace the table below.  The noise of image ``i`` is drawn from
a generator seeded with (seed, i): the images, and so the metrics, do not depend on the batch
size or on how many ranks share the work.
"""
from __future__ import annotations

import contextlib
import hashlib
import os

import torch


def file_sha256(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def checkpoint_family(obj) -> str | None:
    """The family a checkpoint declares (fastt2i checkpoints), or None for an official file."""
    if isinstance(obj, dict) and isinstance(obj.get("fastt2i"), dict):
        return obj["fastt2i"].get("family")
    return None


def image_noise_seed(seed: int, index: int) -> int:
    return (int(seed) * 0x9E3779B97F4A7C15 + int(index)) % (2**63 - 1)


class CaptionGenerator:
    """Captions -> images in [-1, 1] for one loaded generator (DF-GAN today)."""

    family = "dfgan"

    def __init__(self, netG, text_encoder, vocab, config, sentence_norm, device, truncation: float | None = None,
                 amp: str = "none", seed: int = 0):
        self.seed = int(seed)
        self.netG, self.text_encoder, self.vocab, self.config = netG, text_encoder, vocab, config
        self.sentence_norm, self.device = sentence_norm, torch.device(device)
        self.truncation = truncation if truncation is not None else (
            config.trunc_rate if getattr(config, "truncation", False) else 0.0)
        if amp not in ("none", "bf16"):
            raise ValueError(f"amp: expected 'none' or 'bf16', got {amp!r}")
        if amp == "bf16" and self.device.type != "cuda":
            raise ValueError("amp='bf16' is for CUDA devices (on a CPU it is slower than float32)")
        self.amp = amp
        self.imsize = config.imsize

    def noise(self, indices) -> torch.Tensor:
        from fastt2i.train.sampling import truncated_noise

        rows = []
        for i in indices:
            g = torch.Generator().manual_seed(image_noise_seed(self.seed, i))
            if self.truncation > 0:
                rows.append(truncated_noise(1, self.config.nz, self.truncation, generator=g))
            else:
                rows.append(torch.randn(1, self.config.nz, generator=g))
        return torch.cat(rows).to(self.device)

    @torch.no_grad()
    def __call__(self, captions: list[str], indices) -> torch.Tensor:
        """Images (N, 3, S, S) float32 in [-1, 1] for ``captions``; ``indices`` are the images' global numbers."""
        from fastt2i.train.sampling import caption_embeddings

        sent = caption_embeddings(self.text_encoder, self.vocab, list(captions), self.device, self.sentence_norm)
        noise = self.noise(indices)
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16) if self.amp == "bf16" else contextlib.nullcontext())
        with ctx:
            images = self.netG(noise, sent)
        return images.float()


def _load_dfgan(checkpoint: str, obj, device, use_ema: bool, text_encoder: str | None, vocab: str | None,
                preset: str, truncation: float | None, amp: str) -> CaptionGenerator:
    from fastt2i.models import DFGANConfig
    from fastt2i.train.families.dfgan import load_sampler

    netG, text_enc, voc, cfg, sentence_norm = load_sampler(
        checkpoint, device, use_ema=use_ema, text_encoder_path=text_encoder, vocab_path=vocab,
        config=DFGANConfig.preset(preset))
    return CaptionGenerator(netG, text_enc, voc, cfg, sentence_norm, device, truncation, amp)


class FamilySampler(CaptionGenerator):
    """Captions -> images through a registered family's ``image_sampler`` (every family with one).

    The family's sampler draws the noise of a batch from one generator, seeded here with (seed,
    first image of the batch): reproducible for a given --batch, but unlike DF-GAN's per-image
    seeds the images change with the batch size and the number of ranks."""

    def __init__(self, family: str, sample_images, device, amp: str = "none", seed: int = 0):
        if amp != "none":
            raise ValueError(f"amp: --amp bf16 is implemented for dfgan only, got {amp!r} for {family}")
        self.family, self.sample_images = family, sample_images
        self.device, self.amp, self.seed = torch.device(device), amp, int(seed)
        self.imsize = int(getattr(sample_images, "imsize", 64))
        self.truncation = 0.0
        self.config = getattr(sample_images, "config", None)

    @torch.no_grad()
    def __call__(self, captions: list[str], indices) -> torch.Tensor:
        indices = list(indices)
        # a CPU generator: the families draw noise on the CPU and move it (same images on any device)
        g = torch.Generator().manual_seed(image_noise_seed(self.seed, indices[0] if indices else 0))
        return self.sample_images(list(captions), g).float()


def _load_registered(family: str):
    def load(checkpoint: str, obj, device, use_ema: bool, text_encoder, vocab, preset, truncation, amp):
        from fastt2i.train.registry import get_family

        fam = get_family(family)
        if fam.image_sampler is None:
            raise ValueError(f"family {family!r} has no image sampler: it cannot be evaluated from a checkpoint")
        return FamilySampler(family, fam.image_sampler(checkpoint, device, use_ema=use_ema), device, amp)

    return load


# DF-GAN keeps per-image noise seeds (metrics independent of batch and ranks); every other
# registered family generates through its Family.image_sampler.
LOADERS = {"dfgan": _load_dfgan}


def evaluable_families() -> tuple[str, ...]:
    """Families ``fastt2i eval`` can generate with: DF-GAN and every registered family with an image sampler."""
    from fastt2i.train.registry import registered_families

    return tuple(sorted(set(LOADERS) | {n for n, f in registered_families().items() if f.image_sampler}))


def load_generator(family: str, checkpoint: str, device="cpu", use_ema: bool = True, text_encoder: str | None = None,
                   vocab: str | None = None, preset: str = "birds", truncation: float | None = None,
                   amp: str = "none", seed: int = 0) -> CaptionGenerator:
    """Load the generator of ``family`` from ``checkpoint`` (clear errors for a missing file or another family)."""
    if family not in evaluable_families():
        raise ValueError(f"family: evaluation can generate with {list(evaluable_families())}, got {family!r}")
    # sampling lives in fastt2i.train (a layer above): imported here, not at module import
    from fastt2i.train.checkpoint import read_checkpoint_file

    checkpoint = os.fspath(checkpoint)
    obj = read_checkpoint_file(checkpoint)
    declared = checkpoint_family(obj)
    if declared is not None and declared != family:
        raise ValueError(f"{checkpoint} is a {declared!r} checkpoint, not {family!r}: run `fastt2i eval {declared} ...`")
    try:
        load = LOADERS.get(family) or _load_registered(family)
        gen = load(checkpoint, obj, device, use_ema, text_encoder, vocab, preset, truncation, amp)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{checkpoint}: does not hold {family} weights ({type(exc).__name__}: {exc})") from exc
    gen.seed = int(seed)
    return gen


def generate(family: str, checkpoint, captions: list[str], seed: int = 0, batch_size: int = 50, device="cpu",
             **kwargs) -> torch.Tensor:
    """Images (N, 3, S, S) in [-1, 1] for ``captions`` (one image each) from a checkpoint path or a
    loaded CaptionGenerator."""
    gen = checkpoint if isinstance(checkpoint, CaptionGenerator) else load_generator(
        family, checkpoint, device, seed=seed, **kwargs)
    out = [gen(captions[i:i + batch_size], range(i, min(i + batch_size, len(captions))))
           for i in range(0, len(captions), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, 3, gen.imsize, gen.imsize)
