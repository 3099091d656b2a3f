"""DF-GAN's step on the training core: networks and optimisers, one iteration, sampling, and
what its checkpoint holds besides the networks (the frozen text encoder and its statistics).

One iteration, as the official ``lib/modules.py:train``:
  D: hinge on (real, s), on (real rolled by one, s) and on (G(z, s) detached, s); MA-GP on the
     real pair's output w.r.t. image and sentence (k = 2, p = 6); Adam(4e-4, (0, 0.9)).
  G: -NetC(NetD(G(z, s)), s).mean(); Adam(1e-4, (0, 0.9)).
The DAMSM text encoder is frozen.  The noise of step ``t`` on rank ``r`` comes from the core's
``step_generator`` (seeded by (seed, r, t)), so a resumed run draws the same noise.
"""
from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from fastt2i.losses import ma_gradient_penalty
from fastt2i.models import DFGAN, DFGANConfig, NetG, load_official_state_dict, load_state_dict_checked
from fastt2i.models._checkpoint import check_family
from fastt2i.models.dfgan import CHECKPOINT_LAYOUT
from fastt2i.text import RNNEncoder, Vocabulary, encode_captions

from ..checkpoint import read_checkpoint_file
from ..core import Trainer
from ..images import save_grid
from ..registry import Family, register_family
from ..sampling import caption_embeddings, generate, truncated_noise
from ..text_conditioning import FrozenTextEncoderState, frozen_text_encoder, sentence_statistics, standardize


def hinge_d(output: torch.Tensor, negative: bool) -> torch.Tensor:
    """Official ``hinge_loss``: relu(1 - out) for real pairs, relu(1 + out) for negatives."""
    out = output.float()
    return F.relu(1.0 + out).mean() if negative else F.relu(1.0 - out).mean()


class DFGANTrainer(FrozenTextEncoderState, Trainer):
    family = "dfgan"
    title = "DF-GAN"
    layout = CHECKPOINT_LAYOUT
    config_class = DFGANConfig
    architecture_fields = ("imsize", "ngf", "ndf", "nz", "cond_dim", "ch_size")
    progress_keys = ("errD", "errG")
    ema_network = "netG"

    def default_model_config(self) -> DFGANConfig:
        return DFGANConfig.synthetic()

    def build(self) -> None:
        m = self.mcfg
        self.text_encoder = frozen_text_encoder(len(self.vocab), m.words_num, self.cfg.text_encoder, self.device)
        # Per-dimension standardisation of the random encoder's sentence vectors (None with a
        # pretrained DAMSM): see text_conditioning.sentence_statistics.
        self.sentence_norm = None if self.cfg.text_encoder else sentence_statistics(
            self.text_encoder, self.dataset, self.vocab, self.device, self.cfg.seed)

        self.model = DFGAN(m)
        if self.cfg.init_from:
            load_official_state_dict(self.model, self.cfg.init_from)
        self.netG, self.netD, self.netC = self.model.netG, self.model.netD, self.model.netC
        # What the step calls (DDP / compiled wrappers); self.netG/netD/netC stay the plain modules.
        self.G = self.add_network("netG", self.netG, compile=True)  # MA-GP's double backward stays eager
        # NetD's last blocks keep an unused conv_s, as the official model
        self.D = self.add_network("netD", self.netD, find_unused_parameters=True)
        self.C = self.add_network("netC", self.netC)
        betas = tuple(m.betas)
        self.optG = self.add_optimizer("G", torch.optim.Adam(self.netG.parameters(), lr=m.lr_g, betas=betas))
        self.optD = self.add_optimizer("D", torch.optim.Adam(list(self.netD.parameters()) + list(self.netC.parameters()),
                                                             lr=m.lr_d, betas=betas))
        self.scalerG, self.scalerD = self.scalers["G"], self.scalers["D"]

    # ------------------------------------------------------------------ text
    def normalize_sentence(self, sent: torch.Tensor) -> torch.Tensor:
        return standardize(sent, self.sentence_norm)

    def encode(self, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sent, _ = encode_captions(self.text_encoder, captions.to(self.device), lengths)
        return self.normalize_sentence(sent)

    def step_noise(self, batch_size: int) -> torch.Tensor:
        return torch.randn(batch_size, self.mcfg.nz, generator=self.step_generator(1)).to(self.device)

    # ------------------------------------------------------------------ one iteration
    def run_step(self, batch) -> dict:
        imgs, caps, lens = batch[:3]
        return self.train_step(imgs, self.encode(caps, lens))

    def train_step(self, imgs: torch.Tensor, sent: torch.Tensor) -> dict:
        """One D update (with MA-GP) and one G update on a batch; returns float losses."""
        self.G.train(), self.D.train(), self.C.train()
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format).requires_grad_()
        sent = sent.to(self.device).detach().requires_grad_()
        B = imgs.shape[0]
        with self.autocast():
            real_features = self.D(imgs)
            pred_real = self.C(real_features, sent)
            errD_real = hinge_d(pred_real, negative=False)
            mis_features = torch.cat((real_features[1:], real_features[0:1]), dim=0)
            errD_mis = hinge_d(self.C(mis_features, sent), negative=True)
            fake = self.G(self.step_noise(B), sent)
            errD_fake = hinge_d(self.C(self.D(fake.detach()), sent), negative=True)
        errD_MAGP = ma_gradient_penalty(pred_real, imgs, sent, k=self.mcfg.gp_k, p=self.mcfg.gp_p, scaler=self.scalerD)
        errD = errD_real + (errD_fake + errD_mis) / 2.0 + errD_MAGP
        self.optimizer_step("D", errD)

        # G step: D's gradients are not needed (and not all-reduced under DDP).
        with self.no_sync(self.D, self.C):
            with self.autocast():
                errG = -self.C(self.D(fake), sent).float().mean()
            self.optimizer_step("G", errG, inputs=[p for p in self.netG.parameters() if p.requires_grad])
        return {"errD": errD.item(), "errD_real": errD_real.item(), "errD_fake": errD_fake.item(),
                "errD_mis": errD_mis.item(), "errD_MAGP": errD_MAGP.item(), "errG": errG.item()}

    # ------------------------------------------------------------------ sampling
    def sample(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        trunc = self.mcfg.trunc_rate if self.mcfg.truncation else 1.0
        noise = truncated_noise(len(captions), self.mcfg.nz, trunc, generator=generator, device=self.device)
        sent = self.normalize_sentence(caption_embeddings(self.text_encoder, self.vocab, captions, self.device))
        with self.autocast():
            return generate(self.ema if self.ema is not None else self.netG, sent, noise)


# ----------------------------------------------------------------------------- sampling from files

def load_sampler(checkpoint: str, device="cpu", use_ema: bool = True, text_encoder_path: str | None = None,
                 vocab_path: str | None = None, config: DFGANConfig | None = None):
    """(netG, text_encoder, vocab, config, sentence_norm) for sampling.

    A fastt2i checkpoint carries its configuration, text encoder and vocabulary.  An official
    training state (or a plain netG file) needs ``text_encoder_path`` (the DAMSM
    ``text_encoder*.pth``), ``vocab_path`` (the dataset's ``captions.pickle``) and ``config``.
    """
    obj = read_checkpoint_file(checkpoint)
    check_family(obj, CHECKPOINT_LAYOUT, checkpoint)
    if isinstance(obj, dict) and isinstance(obj.get("fastt2i"), dict):
        meta = obj["fastt2i"]
        cfg = DFGANConfig.from_dict(meta["model_config"])
        netG = NetG(cfg.ngf, cfg.nz, cfg.cond_dim, cfg.imsize, cfg.ch_size)
        state = meta["ema"] if (use_ema and meta.get("ema") is not None) else obj["model"]["netG"]
        load_official_state_dict(netG, state)
        vocab = Vocabulary(meta["vocab"])
        text_encoder = RNNEncoder(len(vocab), **meta.get("text_encoder_config", {}))
        load_state_dict_checked(text_encoder, meta["text_encoder"], f"{checkpoint}: text_encoder")
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


def image_sampler(checkpoint: str, device="cpu", use_ema: bool = True, truncation: float | None = None,
                  **official_files):
    """``fn(captions, generator) -> images (B, 3, S, S) in [-1, 1]`` from a checkpoint, the
    family-independent handle that evaluation uses (``Family.image_sampler``).

    ``truncation``: None is the config's rate (the official sampling), 0 plain N(0, 1) noise.
    ``official_files``: ``text_encoder_path``, ``vocab_path``, ``config`` for official files.
    """
    netG, text_encoder, vocab, cfg, sentence_norm = load_sampler(checkpoint, device, use_ema=use_ema,
                                                                 **official_files)
    trunc = truncation if truncation is not None else (cfg.trunc_rate if cfg.truncation else 0.0)

    def sample_images(captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        sent = caption_embeddings(text_encoder, vocab, captions, device, sentence_norm)
        if trunc > 0:
            noise = truncated_noise(len(captions), cfg.nz, trunc, generator=generator, device=device)
        else:
            noise = torch.randn(len(captions), cfg.nz, generator=generator).to(device)
        return generate(netG, sent, noise)

    sample_images.imsize = cfg.imsize
    return sample_images


# ----------------------------------------------------------------------------- command line

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--imsize", type=int, default=None, help="64 | 128 | 256 (default: the preset's)")
    p.add_argument("--nf", type=int, default=None, help="ngf = ndf (official 32)")


def model_config(args: argparse.Namespace, preset: str) -> DFGANConfig:
    kw = {}
    if getattr(args, "imsize", None):
        kw["imsize"] = args.imsize
    if getattr(args, "nf", None):
        kw["ngf"] = kw["ndf"] = args.nf
    if getattr(args, "batch_size", None):
        kw["batch_size"] = args.batch_size
    return DFGANConfig.preset(preset, **kw)


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--truncation", type=float, default=None,
                   help="truncated noise rate (default: the config's, 0.86 for birds); 0 disables truncation")
    p.add_argument("--text-encoder", default=None, help="for official files: DAMSM text_encoder*.pth")
    p.add_argument("--vocab", default=None, help="for official files: captions.pickle / captions_DAMSM.pickle")
    p.add_argument("--preset", default="birds", help="for official files: birds | flowers | coco")
    p.add_argument("--imsize", type=int, default=None, help="for official files (default 256)")
    p.add_argument("--nf", type=int, default=None, help="for official files (default 32)")


def sample(args: argparse.Namespace, captions: list[str], device: torch.device) -> str:
    """``fastt2i sample dfgan``: a PNG grid of ``args.n`` images per caption."""
    sample_images = image_sampler(args.checkpoint, device, use_ema=not args.no_ema, truncation=args.truncation,
                                  text_encoder_path=args.text_encoder, vocab_path=args.vocab,
                                  config=model_config(args, args.preset))
    captions = [c for c in captions for _ in range(args.n)]
    images = sample_images(captions, torch.Generator().manual_seed(args.seed))
    nrow = args.n if args.n > 1 else int(math.ceil(math.sqrt(len(captions))))
    save_grid(images, args.out, nrow=nrow, scale=max(1, 128 // sample_images.imsize))
    return f"wrote {args.out} ({len(captions)} images, {sample_images.imsize}x{sample_images.imsize})"


def demo(args: argparse.Namespace) -> None:
    from fastt2i.train.demo import run_demo_from_args

    run_demo_from_args(args)


register_family(Family(
    name="dfgan",
    summary="DF-GAN (Tao et al., CVPR 2022): one generator with deep text-image fusion blocks, MA-GP",
    trainer=DFGANTrainer,
    presets=("birds", "flowers", "coco", "synthetic"),
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    add_sample_arguments=add_sample_arguments,
    sample=sample,
    image_sampler=image_sampler,
    demo=demo,
))
