"""GAN-INT-CLS's step on the training core (``fastt2i train gan-int-cls``).

One iteration, as ``main_cls_int.lua`` (``fDx`` then ``fGx``): the text of each image is the
mean of ``num_captions`` of its captions' embeddings (4 on CUB), averaged once, in the data
path (``EmbeddingImageDataset``, as the Lua loader + ``netR``); the step takes the averaged
(B, 1024) text as it is.  Raw captions (the synthetic shapes) give one caption per image;
D: real pairs -> 1, (real image, wrong text) -> 0 weighted cls, fakes of fresh noise -> 0
weighted 1 - cls; G: a fresh 1.5 B batch whose last B / 2 texts are midpoints of pairs of the
batch's texts, all labelled real (INT, weight 1).  Adam 2e-4, beta1 0.5; both learning rates
halved every ``decay_every`` epochs (the Lua halves at the start of epochs 100, 200, ...,
counted from 1).  The wrong images: on the released data, an image of another class drawn by
the loader, as the Lua one; on raw-caption data without classes, the batch's images rolled by one.
"""
from __future__ import annotations

import argparse

import torch

from fastt2i.models import GANINTCLSConfig, build_gan_int_cls
from fastt2i.models.gan_int_cls import (CHECKPOINT_LAYOUT, Generator, discriminator_loss, generator_loss,
                                        load_official_state_dict, load_torch7)

from ..core import Trainer
from ..registry import register_family
from ._char_text import CharTextFamily
from ._sampling import add_sample_arguments, char_text_sampler, demo_family, make_family, sample_command


class GANINTCLSTrainer(CharTextFamily, Trainer):
    family = "gan-int-cls"
    title = "GAN-INT-CLS"
    layout = CHECKPOINT_LAYOUT
    config_class = GANINTCLSConfig
    architecture_fields = ("ngf", "ndf", "nz", "nt", "text_dim", "d_residual")
    progress_keys = ("errD", "errG")
    ema_network = "netG"
    data_style = "reed"
    wrong_images = True

    def default_model_config(self) -> GANINTCLSConfig:
        return GANINTCLSConfig.synthetic()

    @classmethod
    def dataset_kwargs(cls, model_config) -> dict:
        return {"imsize": 64}

    @classmethod
    def embedding_dataset_kwargs(cls, model_config) -> dict:
        return {"captions_per_sample": model_config.num_captions}

    def build(self) -> None:
        self.build_text()
        m = self.mcfg
        netG, netD = build_gan_int_cls(m)
        if self.cfg.init_from:
            load_official_state_dict(netG, self.cfg.init_from)
        self.netG, self.netD = netG, netD
        self.G = self.add_network("netG", netG, compile=True)
        self.D = self.add_network("netD", netD)
        self.add_optimizer("G", torch.optim.Adam(netG.parameters(), lr=m.lr, betas=m.betas))
        self.add_optimizer("D", torch.optim.Adam(netD.parameters(), lr=m.lr, betas=m.betas))

    def on_epoch(self, epoch: int) -> None:
        lr = self.mcfg.lr * self.mcfg.lr_decay ** ((epoch + 1) // self.mcfg.decay_every)
        for opt in self.optimizers.values():
            for group in opt.param_groups:
                group["lr"] = lr

    def run_step(self, batch) -> dict:
        return self.train_step(*self.unpack(batch))

    def train_step(self, imgs: torch.Tensor, text: torch.Tensor, wrong_imgs: torch.Tensor | None = None) -> dict:
        """One D and one G update on images, their (B, 1024) text embeddings (already averaged over
        captions) and wrong images (None: the batch rolled by one)."""
        text = text.to(self.device)
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        wrong = imgs.roll(1, 0) if wrong_imgs is None else wrong_imgs.to(self.device, non_blocking=True).contiguous(
            memory_format=self.memory_format)
        B = imgs.shape[0]
        if B % 2:
            raise ValueError(f"GAN-INT needs an even batch, got {B}")
        nz = self.mcfg.nz
        self.netG.train(), self.netD.train()
        with self.autocast():
            errD, _ = discriminator_loss(self.G, self.D, imgs, text, wrong,
                                         torch.randn(B, nz, generator=self.step_generator(1)).to(self.device),
                                         self.mcfg.cls_weight)
        self.optimizer_step("D", errD)
        with self.no_sync(self.D):
            with self.autocast():
                noise = torch.randn(B + B // 2, nz, generator=self.step_generator(2)).to(self.device)
                errG, _ = generator_loss(self.G, self.D, text, noise, self.mcfg.interp_weight)
            self.optimizer_step("G", errG, inputs=list(self.netG.parameters()))
        return {"errD": errD.item(), "errG": errG.item()}

    def sample(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        netG = self.ema if self.ema is not None else self.netG
        was = netG.training
        netG.eval()
        try:
            with torch.no_grad(), self.autocast():
                text = self.embed(captions)
                noise = torch.randn(text.shape[0], self.mcfg.nz, generator=generator).to(self.device)
                return netG(noise, text).float()
        finally:
            netG.train(was)


def build_generator(c: GANINTCLSConfig) -> Generator:
    return Generator(c.ngf, c.nz, c.nt, c.text_dim)


def image_sampler(checkpoint: str, device="cpu", use_ema: bool = True, **kw):
    def run(netG, cfg, text, generator):
        return netG(torch.randn(text.shape[0], cfg.nz, generator=generator).to(text.device), text)

    return char_text_sampler(checkpoint, "gan-int-cls", GANINTCLSConfig, build_generator, run, device, use_ema,
                             load_torch7=load_torch7, **kw)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nf", type=int, default=None, help="ngf = ndf (default: the preset's, 128 / 64)")
    p.add_argument("--cls-weight", type=float, default=None, help="weight of the wrong-text pairs (0.5)")
    p.add_argument("--interp-weight", type=float, default=None, help="weight of the interpolated texts (1)")
    p.add_argument("--d-residual", action="store_true", help="add the D residual block the Lua script never joins")


def model_config(args: argparse.Namespace, preset: str) -> GANINTCLSConfig:
    kw = {}
    for flag in ("cls_weight", "interp_weight", "batch_size"):
        if getattr(args, flag, None) is not None:
            kw[flag] = getattr(args, flag)
    if getattr(args, "nf", None):
        kw["ngf"] = kw["ndf"] = args.nf
    if getattr(args, "d_residual", False):
        kw["d_residual"] = True
    return GANINTCLSConfig.preset(preset, **kw)


def sample(args: argparse.Namespace, captions: list[str], device: torch.device) -> str:
    return sample_command(args, captions, device, image_sampler)


register_family(make_family(
    name="gan-int-cls",
    summary="GAN-INT-CLS (Reed et al., ICML 2016): matching-aware D and interpolated text embeddings, 64x64",
    trainer=GANINTCLSTrainer,
    presets=GANINTCLSConfig.PRESETS,
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    add_sample_arguments=add_sample_arguments,
    sample=sample,
    image_sampler=image_sampler,
    demo=lambda args: demo_family(args, "gan-int-cls", GANINTCLSTrainer, GANINTCLSConfig.synthetic()),
))
