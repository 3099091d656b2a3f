"""Sampling and demo helpers shared by the char-CNN-RNN-conditioned families (GAN-INT-CLS, StackGAN, StackGAN++).

``fastt2i sample <family>`` takes captions (encoded by the checkpoint's char-CNN-RNN) or, with
``--embeddings PICKLE``, the 1024-d embeddings of a released ``char-CNN-RNN-embeddings.pickle``
(or any pickle of (N, E, 1024) / (N, 1024) numbers), as the official samplers do.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import torch

from fastt2i.data import load_embedding_pickle
from fastt2i.models import load_state_dict_checked
from fastt2i.models._checkpoint import read_weights

from ..core import TrainConfig, resolve_device
from ..images import save_grid
from ._char_text import CharTextConditioning


def char_text_sampler(checkpoint: str, family: str, config_class, build_generator, run, device="cpu",
                      use_ema: bool = True, config=None, text_encoder_path: str | None = None,
                      load_torch7=None):
    """fn(captions=None, generator=None, embeddings=None) -> images (B, 3, S, S) in [-1, 1].

    A fastt2i checkpoint carries its config and text encoder.  An official generator file (a plain
    state dict, or with ``load_torch7(netG, path)`` a Torch7 ``.t7``) needs ``config`` and, for
    captions, ``text_encoder_path`` (a char-cnn-rnn checkpoint).
    """
    torch7 = _is_torch7(checkpoint)
    if torch7 and load_torch7 is None:
        raise ValueError(f"{checkpoint}: a Torch7 file; {family} has no Torch7 checkpoints (only GAN-INT-CLS)")
    obj = None if torch7 else read_weights(checkpoint, f"{family} checkpoint")
    meta = obj.get("fastt2i") if isinstance(obj, dict) else None
    text = None
    if isinstance(meta, dict):
        if meta.get("family") != family:
            raise ValueError(f"{checkpoint}: a {meta.get('family')!r} checkpoint, not a {family!r} one")
        cfg = config_class.from_dict(meta["model_config"])
        netG = build_generator(cfg)
        state = meta["ema"] if (use_ema and meta.get("ema") is not None) else obj["netG"]
        load_state_dict_checked(netG, state, f"{checkpoint}: netG")
        text = CharTextConditioning.from_state(meta, device)
    else:
        if config is None:
            raise ValueError(f"{checkpoint} is not a fastt2i checkpoint: give the model preset for an official file")
        cfg = config
        netG = build_generator(cfg)
        if torch7:
            load_torch7(netG, checkpoint)
        else:
            load_state_dict_checked(netG, obj.get("state_dict", obj) if isinstance(obj, dict) else obj,
                                    f"{checkpoint}: netG")
    if text is None and text_encoder_path:  # official weights, or a run on released embeddings
        text = CharTextConditioning.build(text_encoder_path, None, device, 0)
    netG.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def sample_images(captions=None, generator=None, embeddings=None) -> torch.Tensor:
        if embeddings is None:
            if text is None:
                raise ValueError("captions need a char-CNN-RNN text encoder: give --text-encoder (a `fastt2i "
                                 "train char-cnn-rnn` checkpoint) or --embeddings PICKLE")
            embeddings = text(captions)
        emb = embeddings.to(device, torch.float32)
        return torch.cat([run(netG, cfg, emb[i:i + 64], generator).float() for i in range(0, emb.shape[0], 64)])

    sample_images.imsize = getattr(cfg, "imsize", 64)
    return sample_images


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--embeddings", default=None,
                   help="a char-CNN-RNN embedding pickle: images for its first --count embeddings (captions ignored)")
    p.add_argument("--count", type=int, default=16, help="with --embeddings: how many embeddings")
    p.add_argument("--text-encoder", default=None, help="official weights + captions: a char-cnn-rnn checkpoint")
    p.add_argument("--preset", default="birds", help="for official weights: the model preset")
    p.add_argument("--stage", type=int, choices=(1, 2), default=1, help="StackGAN official weights: the stage")


def sample_command(args: argparse.Namespace, captions: list[str], device, image_sampler) -> str:
    fam_config = None
    from fastt2i.train.registry import get_family

    fam = get_family(args.family)
    if not _is_fastt2i(args.checkpoint):
        fam_config = fam.model_config(args, args.preset)
    sampler = image_sampler(args.checkpoint, device, use_ema=not args.no_ema, config=fam_config,
                            text_encoder_path=args.text_encoder)
    generator = torch.Generator().manual_seed(args.seed)
    if args.embeddings:
        emb = load_embedding_pickle(args.embeddings)[: args.count]
        emb = emb.repeat_interleave(args.n, 0)
        images = sampler(generator=generator, embeddings=emb)
        what = f"{emb.shape[0]} images from {args.embeddings}"
    else:
        captions = [c for c in captions for _ in range(args.n)]
        images = sampler(captions, generator)
        what = f"{len(captions)} images"
    nrow = args.n if args.n > 1 else int(math.ceil(math.sqrt(images.shape[0])))
    save_grid(images, args.out, nrow=nrow, scale=max(1, 128 // images.shape[-1]))
    return f"wrote {args.out} ({what}, {images.shape[-1]}x{images.shape[-1]})"


def _is_torch7(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".t7")


def _is_fastt2i(path: str) -> bool:
    if _is_torch7(path):
        return False
    obj = read_weights(path, "checkpoint")
    return isinstance(obj, dict) and isinstance(obj.get("fastt2i"), dict)


def demo_family(args: argparse.Namespace, family: str, trainer_class, model_config, ema: float = 0.0) -> dict:
    """``fastt2i demo <family>``: train on the synthetic shapes for --minutes, write a sample grid."""
    from fastt2i.train.demo import DEMO_CAPTIONS

    dev = resolve_device(args.device)
    tcfg = TrainConfig(data="synthetic", out_dir=args.out, steps=10**9, max_minutes=args.minutes, save_every=200,
                       sample_every=10**9, device=str(dev), backend=args.backend, seed=args.seed,
                       amp="bf16" if dev.type == "cuda" else "none", channels_last=dev.type == "cuda",
                       sample_captions=DEMO_CAPTIONS, log_every=10, num_workers=4 if dev.type == "cuda" else 0, ema=ema)
    print(f"fastt2i demo: {trainer_class.title} on synthetic shapes, {args.minutes:g} min on {dev}", flush=True)
    trainer = trainer_class(model_config, tcfg)
    t0 = time.perf_counter()
    history = trainer.train()
    elapsed = time.perf_counter() - t0
    grid = trainer.sample_grid(os.path.join(args.out, "samples.png"))
    line = f"{trainer.title}: {trainer.step} steps in {elapsed:.0f} s ({1000 * elapsed / max(1, trainer.step):.0f} ms/step)"
    print(line + f"; sample grid: {grid}; checkpoint: {os.path.join(args.out, 'checkpoint.pt')}", flush=True)
    with open(os.path.join(args.out, "step_time.txt"), "w") as f:
        f.write(line + "\n")
    return {"steps": trainer.step, "grid": grid, "history": history}


def make_family(**fields):
    """A ``Family`` from the fields this core's registry knows (``image_sampler`` came later)."""
    import dataclasses

    from ..registry import Family

    known = {f.name for f in dataclasses.fields(Family)}
    return Family(**{k: v for k, v in fields.items() if k in known})
