"""StackGAN's step on the training core (``fastt2i train stackgan --stage 1|2``).

One iteration, as the official ``GANTrainer.train``: G makes the fakes once (CA noise and z);
D: the official loss on real / wrong (image i, condition i + 1) / fake pairs conditioned on mu
(detached), Stage II with the unconditional terms; G: adversarial loss of the same fakes +
2 * KL.  Adam 2e-4, betas (0.5, 0.999), both learning rates halved every ``lr_decay_epoch``
epochs.  Stage II trains on top of a frozen Stage-I G given by ``--stage1-g`` (a ``fastt2i
train stackgan --stage 1`` checkpoint or an official Stage-I ``netG_epoch_*.pth``).

Noise (z and the CA's eps) comes from the core's step generators, so a resumed run draws it
again.  Text: the released embeddings (``--data birds:PATH``, read as StackGAN-Pytorch's
``TextDataset``: square resize to 76/64 of the size, random crop, flip, one of the image's
embeddings) or captions through the frozen char-CNN-RNN (see ``_char_text``).
"""
from __future__ import annotations

import argparse

import torch

from fastt2i.models import StackGANConfig, build_stackgan, load_state_dict_checked
from fastt2i.models._checkpoint import read_weights
from fastt2i.models.stackgan import (CHECKPOINT_LAYOUT, PairLogits, Stage1Generator, Stage2Generator,
                                     discriminator_loss, generator_loss, load_official_state_dict)

from ..core import Trainer
from ..registry import register_family
from ._char_text import CharTextFamily
from ._sampling import add_sample_arguments, char_text_sampler, demo_family, make_family, sample_command


def _ddp(trainer: Trainer, module: torch.nn.Module) -> torch.nn.Module:
    if not trainer.distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [trainer.device.index] if trainer.device.type == "cuda" else None
    return DDP(module, device_ids=ids, broadcast_buffers=False)


def stage1_state(source) -> dict:
    """Stage-I G weights from a fastt2i stage-1 checkpoint (its EMA if any) or an official netG file."""
    obj = read_weights(source, "--stage1-g")
    meta = obj.get("fastt2i") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        if meta.get("family") != "stackgan" or meta.get("model_config", {}).get("stage") != 1:
            raise ValueError(f"--stage1-g {source}: expected a StackGAN Stage-I checkpoint, got family "
                             f"{meta.get('family')!r} stage {meta.get('model_config', {}).get('stage')!r}")
        return meta["ema"] if meta.get("ema") is not None else obj["netG"]
    return obj


class StackGANTrainer(CharTextFamily, Trainer):
    family = "stackgan"
    title = "StackGAN"
    layout = CHECKPOINT_LAYOUT
    config_class = StackGANConfig
    architecture_fields = ("stage", "ngf", "ndf", "c_dim", "z_dim", "text_dim", "r_num")
    progress_keys = ("errD", "errG", "kl")
    ema_network = "netG"

    def default_model_config(self) -> StackGANConfig:
        return StackGANConfig.synthetic()

    def build(self) -> None:
        self.build_text()
        m = self.mcfg
        netG, netD = build_stackgan(m)
        if self.cfg.init_from:
            load_official_state_dict(netG, self.cfg.init_from)
        if m.stage == 2:
            path = self.cfg.options.get("stage1_g")
            if not path and not self.cfg.init_from:
                # the official code meant to refuse this too (its `assert ValueError(...)` never fires)
                raise ValueError("StackGAN Stage II needs the trained Stage-I generator: --stage1-g PATH")
            if path:
                load_state_dict_checked(netG.STAGE1_G, stage1_state(path), f"--stage1-g {path}")
        self.netG, self.netD = netG, netD
        self.G = self.add_network("netG", netG, compile=True)
        self.add_network("netD", netD, ddp=False)
        self.D = _ddp(self, PairLogits(netD))  # all of D's uses in one forward (see PairLogits)
        trainable = [p for p in netG.parameters() if p.requires_grad]  # Stage II: Stage I is frozen
        self.add_optimizer("G", torch.optim.Adam(trainable, lr=m.lr_g, betas=m.betas))
        self.add_optimizer("D", torch.optim.Adam(netD.parameters(), lr=m.lr_d, betas=m.betas))

    def on_epoch(self, epoch: int) -> None:
        factor = 0.5 ** (epoch // self.mcfg.lr_decay_epoch)  # official: halved when epoch % step == 0
        for name, lr in (("G", self.mcfg.lr_g), ("D", self.mcfg.lr_d)):
            for group in self.optimizers[name].param_groups:
                group["lr"] = lr * factor

    def run_step(self, batch) -> dict:
        imgs, text, _ = self.unpack(batch)
        return self.train_step(imgs, text)

    def train_step(self, imgs: torch.Tensor, text: torch.Tensor) -> dict:
        """One D and one G update on images and their (B, 1024) text embeddings."""
        text = text.to(self.device)
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        B = imgs.shape[0]
        noise = torch.randn(B, self.mcfg.z_dim, generator=self.step_generator(1)).to(self.device)
        self.netG.train(), self.netD.train()
        with self.autocast():
            _, fake, mu, logvar = self.G(text, noise, generator=self.step_generator(2))
            errD, parts = discriminator_loss(self.D, imgs, fake, mu)
        self.optimizer_step("D", errD)
        with self.no_sync(self.D):
            with self.autocast():
                errG, gparts = generator_loss(self.D, fake, mu, logvar, self.mcfg.kl_coeff)
            self.optimizer_step("G", errG, inputs=[p for p in self.netG.parameters() if p.requires_grad])
        return {"errD": errD.item(), "errD_real": parts["real"].item(), "errD_wrong": parts["wrong"].item(),
                "errD_fake": parts["fake"].item(), "errG": gparts["g_adv"].item(), "kl": gparts["kl"].item()}

    def generate(self, netG, text: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        noise = torch.randn(text.shape[0], self.mcfg.z_dim, generator=generator).to(self.device)
        return netG(text, noise, generator=generator)[1]

    def sample(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        netG = self.ema if self.ema is not None else self.netG
        was = netG.training
        netG.eval()
        try:
            with torch.no_grad(), self.autocast():
                return self.generate(netG, self.embed(captions), generator).float()
        finally:
            netG.train(was)


# ----------------------------------------------------------------------------- sampling from files

def build_generator(config: StackGANConfig) -> torch.nn.Module:
    c = config
    if c.stage == 1:
        return Stage1Generator(c.ngf, c.c_dim, c.z_dim, c.text_dim)
    return Stage2Generator(None, c.ngf, c.c_dim, c.z_dim, c.text_dim, c.r_num)


def image_sampler(checkpoint: str, device="cpu", use_ema: bool = True, **kw):
    """fn(captions or embeddings, generator) -> images in [-1, 1] from a fastt2i StackGAN checkpoint
    (or an official netG file with ``config=`` and ``text_encoder_path=``)."""
    def run(netG, cfg, text, generator):
        noise = torch.randn(text.shape[0], cfg.z_dim, generator=generator).to(text.device)
        return netG(text, noise, generator=generator)[1]

    return char_text_sampler(checkpoint, "stackgan", StackGANConfig, build_generator, run, device, use_ema, **kw)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stage", type=int, choices=(1, 2), default=1, help="1: 64x64 Stage-I GAN; 2: 256x256 on Stage I")
    p.add_argument("--stage1-g", default=None, help="Stage II: the Stage-I generator (fastt2i checkpoint or netG_*.pth)")
    p.add_argument("--nf", type=int, default=None, help="ngf = ndf (default: the preset's, 192 / 96)")


def model_config(args: argparse.Namespace, preset: str) -> StackGANConfig:
    kw = {"stage": getattr(args, "stage", 1) or 1}
    if getattr(args, "nf", None):
        kw["ngf"] = kw["ndf"] = args.nf
    if getattr(args, "batch_size", None):
        kw["batch_size"] = args.batch_size
    return StackGANConfig.preset(preset, **kw)


def train_options(args: argparse.Namespace) -> dict:
    return {"stage1_g": getattr(args, "stage1_g", None)}


def sample(args: argparse.Namespace, captions: list[str], device: torch.device) -> str:
    return sample_command(args, captions, device, image_sampler)


register_family(make_family(
    name="stackgan",
    summary="StackGAN (Zhang et al., ICCV 2017): conditioning augmentation, Stage I 64x64 then Stage II 256x256",
    trainer=StackGANTrainer,
    presets=StackGANConfig.PRESETS,
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    train_options=train_options,
    add_sample_arguments=add_sample_arguments,
    sample=sample,
    image_sampler=image_sampler,
    demo=lambda args: demo_family(args, "stackgan", StackGANTrainer, StackGANConfig.synthetic()),
))
