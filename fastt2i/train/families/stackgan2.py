"""StackGAN++'s step on the training core (``fastt2i train stackgan2``).

One iteration, as the official ``condGANTrainer.train``: G makes the images of every stage
once; each stage's D is updated on real / wrong / fake images with mu detached (real + wrong +
fake, the unconditional terms weighted ``uncond_coeff``, wrong images real there); then G on
all stages (D conditioned on mu itself), the colour-consistency regulariser when
``color_coeff`` > 0, and 2 * KL.  Adam 2e-4, betas (0.5, 0.999).  The official G is always
averaged with decay 0.999 (``avg_param_G``; its samples and saved G are the average): so is
this family's by default (``fastt2i train stackgan2`` and a trainer built without a
TrainConfig), ``--ema 0`` turning it off.

On the released data (``--data birds:PATH``) the loader gives every stage's real and wrong
images as the official ``TextDataset`` (wrong: drawn from the split, redrawn once if of the same
class).  On raw-caption data, the smaller stages are the batch's images resized (bilinear,
antialiased) from the largest and the wrong images are the batch rolled by one (the synthetic
shapes have no classes).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from fastt2i.models import StackGAN2Config, build_stackgan2
from fastt2i.models.stackgan2 import (CHECKPOINT_LAYOUT, Generator, checkpoint_layout, discriminator_loss,
                                      generator_loss, load_official_state_dict)

from ..core import TrainConfig, Trainer
from ..registry import register_family
from ._char_text import CharTextFamily
from ._sampling import add_sample_arguments, char_text_sampler, demo_family, make_family, sample_command


def image_pyramid(imgs: torch.Tensor, branch_num: int) -> list[torch.Tensor]:
    """[64, 128, 256][:branch_num] versions of the batch (the largest unchanged)."""
    size = imgs.shape[-1]
    out = []
    for i in range(branch_num):
        s = size // 2 ** (branch_num - 1 - i)
        out.append(imgs if s == size else F.interpolate(imgs, size=(s, s), mode="bilinear", align_corners=False,
                                                        antialias=True))
    return out


class StackGAN2Trainer(CharTextFamily, Trainer):
    family = "stackgan2"
    title = "StackGAN++"
    layout = CHECKPOINT_LAYOUT
    config_class = StackGAN2Config
    architecture_fields = ("branch_num", "ngf", "ndf", "c_dim", "z_dim", "text_dim", "r_num")
    progress_keys = ("errD", "errG", "kl")
    ema_network = "netG"
    data_style = "stackgan2"
    wrong_images = True

    @classmethod
    def embedding_dataset_kwargs(cls, model_config) -> dict:
        return {"branch_num": model_config.branch_num}

    def __init__(self, model_config=None, config=None, dataset=None, evaluators=()):
        mcfg = model_config if model_config is not None else StackGAN2Config.synthetic()
        self.layout = checkpoint_layout(mcfg.branch_num)  # one D per stage
        if config is None:  # the official always-on average of G
            config = TrainConfig(ema=mcfg.ema)
        super().__init__(mcfg, config, dataset, evaluators)

    def default_model_config(self) -> StackGAN2Config:
        return StackGAN2Config.synthetic()

    def build(self) -> None:
        self.build_text()
        m = self.mcfg
        netG, netsD = build_stackgan2(m)
        if self.cfg.init_from:
            load_official_state_dict(netG, self.cfg.init_from)
        self.netG, self.netsD = netG, list(netsD)
        self.G = self.add_network("netG", netG, compile=True)
        self.Ds = [self.add_network(f"netD{i}", d) for i, d in enumerate(self.netsD)]
        self.add_optimizer("G", torch.optim.Adam(netG.parameters(), lr=m.lr_g, betas=m.betas))
        for i, d in enumerate(self.netsD):
            self.add_optimizer(f"D{i}", torch.optim.Adam(d.parameters(), lr=m.lr_d, betas=m.betas))

    def run_step(self, batch) -> dict:
        return self.train_step(*self.unpack(batch))

    def stages(self, imgs) -> list[torch.Tensor]:
        """Every stage's images on the device: the loader's list, or the pyramid of the largest."""
        if not isinstance(imgs, (list, tuple)):
            imgs = image_pyramid(imgs.to(self.device, non_blocking=True), self.mcfg.branch_num)
        if len(imgs) != self.mcfg.branch_num:
            raise ValueError(f"expected {self.mcfg.branch_num} stage images, got {len(imgs)}")
        return [x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format) for x in imgs]

    def train_step(self, imgs, text: torch.Tensor, wrong_imgs=None) -> dict:
        """One update of every stage's D and of G on images (the largest, or a list per stage),
        their (B, 1024) text embeddings and wrong images (None: the batch rolled by one)."""
        text = text.to(self.device)
        m = self.mcfg
        reals = self.stages(imgs)
        wrongs = [x.roll(1, 0) for x in reals] if wrong_imgs is None else self.stages(wrong_imgs)
        noise = torch.randn(text.shape[0], m.z_dim, generator=self.step_generator(1)).to(self.device)
        self.netG.train()
        with self.autocast():
            fakes, mu, logvar = self.G(noise, text, generator=self.step_generator(2))
        errD_total = 0.0
        for i, D in enumerate(self.Ds):
            self.netsD[i].train()
            with self.autocast():
                errD = discriminator_loss(D, reals[i], wrongs[i], fakes[i], mu, m.uncond_coeff)
            self.optimizer_step(f"D{i}", errD)
            errD_total += errD.item()
        with self.no_sync(*self.Ds):
            with self.autocast():
                errG, parts = generator_loss(self.Ds, fakes, mu, logvar, m.uncond_coeff, m.color_coeff, m.kl_coeff)
            self.optimizer_step("G", errG, inputs=list(self.netG.parameters()))
        out = {"errD": errD_total, "errG": parts["g_adv"].item(), "kl": parts["kl"].item()}
        if "colour" in parts:
            out["colour"] = parts["colour"].item()
        return out

    def sample(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        netG = self.ema if self.ema is not None else self.netG
        was = netG.training
        netG.eval()
        try:
            with torch.no_grad(), self.autocast():
                text = self.embed(captions)
                noise = torch.randn(text.shape[0], self.mcfg.z_dim, generator=generator).to(self.device)
                return netG(noise, text, generator=generator)[0][-1].float()
        finally:
            netG.train(was)


def build_generator(c: StackGAN2Config) -> Generator:
    return Generator(c.ngf, c.c_dim, c.z_dim, c.text_dim, c.r_num, c.branch_num)


def image_sampler(checkpoint: str, device="cpu", use_ema: bool = True, **kw):
    def run(netG, cfg, text, generator):
        noise = torch.randn(text.shape[0], cfg.z_dim, generator=generator).to(text.device)
        return netG(noise, text, generator=generator)[0][-1]

    return char_text_sampler(checkpoint, "stackgan2", StackGAN2Config, build_generator, run, device, use_ema, **kw)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--branches", type=int, choices=(1, 2, 3), default=None, help="stages: 64 / 128 / 256 (preset's)")
    p.add_argument("--nf", type=int, default=None, help="ngf = ndf (default: the preset's, 64)")
    p.add_argument("--color-coeff", type=float, default=None, help="colour-consistency weight (official birds: 0)")
    p.add_argument("--uncond-coeff", type=float, default=None, help="unconditional loss weight (official birds: 1)")
    # the official G average is always on: --ema defaults to its decay here (--ema 0: off)
    p.set_defaults(ema=StackGAN2Config.ema)


def model_config(args: argparse.Namespace, preset: str) -> StackGAN2Config:
    kw = {}
    for flag, field in (("branches", "branch_num"), ("color_coeff", "color_coeff"), ("uncond_coeff", "uncond_coeff"),
                        ("batch_size", "batch_size")):
        if getattr(args, flag, None) is not None:
            kw[field] = getattr(args, flag)
    if getattr(args, "nf", None):
        kw["ngf"] = kw["ndf"] = args.nf
    if getattr(args, "ema", None) is not None:  # the decay the run uses, recorded with the model
        kw["ema"] = args.ema
    return StackGAN2Config.preset(preset, **kw)


def sample(args: argparse.Namespace, captions: list[str], device: torch.device) -> str:
    return sample_command(args, captions, device, image_sampler)


register_family(make_family(
    name="stackgan2",
    summary="StackGAN++ (Zhang et al., TPAMI 2018): tree generator 64/128/256, joint conditional + unconditional losses",
    trainer=StackGAN2Trainer,
    presets=StackGAN2Config.PRESETS,
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    add_sample_arguments=add_sample_arguments,
    sample=sample,
    image_sampler=image_sampler,
    demo=lambda args: demo_family(args, "stackgan2", StackGAN2Trainer, StackGAN2Config.synthetic(),
                                  ema=StackGAN2Config.ema),
))
