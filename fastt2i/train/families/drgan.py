"""DR-GAN's step on the training core: AttnGAN's iteration (``fastt2i.train.families.attngan``)
with DR-GAN's differences (the draft's ``condGANTrainer.train``):
  G: SDM stages; the forward also takes the real images (RIRM's input and the SDL's H*);
  D: per stage AttnGAN's BCE terms + DNM: MSE of its 64 x 64 reconstructions of the real and
     the fake image, and the KL of its (mu, logvar) (the real branch's twice in the draft preset);
  G loss: adversarial over the stages + lambda_DAMSM x DAMSM (5 birds, 50 coco) + the semantic
     disentangling loss (paper or draft form) + the CA's KL.
The DNM's CA noise of step t comes from the core's ``step_generator`` (stream 3), as z and
the generator's CA noise (streams 1 and 2), so a resumed run draws it again.
"""
from __future__ import annotations

import argparse
import functools

import torch
from torch import nn

from fastt2i.losses import kl_loss
from fastt2i.losses.drgan import discriminator_loss, generator_loss
from fastt2i.models.drgan import CHECKPOINT_LAYOUT, DRGAN, G_NET, DRGANConfig, load_official_state_dict

from ..registry import Family, register_family
from . import attngan


class _DiscriminatorLoss(nn.Module):
    """All stages' D losses with DNM in one forward (DDP wraps it); 64 x 64 targets from stage 1."""

    def __init__(self, netsD: nn.ModuleList, config: DRGANConfig):
        super().__init__()
        self.netsD, self.config = netsD, config

    def forward(self, reals, fakes, sent, noise):
        c, total, parts = self.config, 0.0, {}
        for i, netD in enumerate(self.netsD):
            errD, p = discriminator_loss(netD, reals[i], fakes[i], sent, reals[0], fakes[0], draft=c.draft,
                                         lambda_rec=c.lambda_dnm_rec, lambda_kl=c.lambda_dnm_kl, noise=tuple(noise[i]))
            parts[f"errD{i}"], parts[f"dnm_rec{i}"], parts[f"dnm_kl{i}"] = errD, p["dnm_rec"], p["dnm_kl"]
            total = total + errD
        return total, parts


class DRGANTrainer(attngan.AttnGANTrainer):
    family = "drgan"
    title = "DR-GAN"
    layout = CHECKPOINT_LAYOUT
    config_class = DRGANConfig
    architecture_fields = attngan.AttnGANTrainer.architecture_fields + ("draft",)
    progress_keys = ("errD", "errG", "sdl", "w_loss")
    model_class = DRGAN
    load_official_weights = staticmethod(load_official_state_dict)

    def default_model_config(self) -> DRGANConfig:
        return DRGANConfig.synthetic()

    def uses_image_encoder(self) -> bool:
        return bool(self.mcfg.lambda_damsm)

    @staticmethod
    def build_generator(config) -> nn.Module:
        return G_NET(config)

    def discriminator_loss_module(self) -> nn.Module:
        return _DiscriminatorLoss(self.netsD, self.mcfg)

    def run_step(self, batch) -> dict:
        m = self.mcfg
        s = self.step_inputs(batch)
        sent, words, reals = s.sent, s.words, s.reals
        dnm_noise = torch.randn(len(self.netsD), 4, sent.shape[0], m.condition_dim,
                                generator=self.step_generator(3)).to(self.device)
        with self.autocast():
            fake_imgs, _, mu, logvar, sdm = self.G(s.z, sent, words, s.mask, s.eps, return_attention=False,
                                                   real_imgs=reals)
            errD, d_parts = self.D_loss(reals, fake_imgs, sent, dnm_noise)
        self.optimizer_step("D", errD)

        with self.no_sync(self.D_loss):
            with self.autocast():
                errG, g_parts = generator_loss(
                    self.netsD, self.image_encoder, fake_imgs, words, s.sent_raw, s.lens, sdm,
                    s.class_ids, m.lambda_damsm, m.draft, m.lambda_sdl_h, m.lambda_sdl_q,
                    m.lambda_rirm, m.gamma1, m.gamma2, m.gamma3, adversarial_sentence=sent)
                kl = kl_loss(mu, logvar)
                errG = errG + kl
            self.optimizer_step("G", errG, inputs=[p for p in self.netG.parameters() if p.requires_grad])
        out = {"errD": errD.item(), "errG": errG.item(), "kl_loss": kl.item()}
        out.update({k: v.item() for k, v in d_parts.items()})
        out.update({k: v.item() for k, v in g_parts.items()})
        return out


# ----------------------------------------------------------------------------- command line

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    attngan.add_train_arguments(p)
    p.add_argument("--draft", action="store_true",
                   help="the public draft code's losses and constants (= preset draft; default: the paper's)")


def model_config(args: argparse.Namespace, preset: str) -> DRGANConfig:
    cfg = attngan.model_config(args, preset, config_class=DRGANConfig)
    if getattr(args, "draft", False):
        cfg = DRGANConfig.from_dict({**cfg.to_dict(), "draft": True})
    return cfg


register_family(Family(
    name="drgan",
    summary="DR-GAN (Tan et al., TNNLS 2022): AttnGAN with semantic disentangling (SDM) and distribution "
            "normalisation (DNM)",
    trainer=DRGANTrainer,
    presets=DRGANConfig.PRESETS,
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    train_options=attngan.train_options,
    add_sample_arguments=attngan.add_sample_arguments,
    sample=functools.partial(attngan.sample, trainer_class=DRGANTrainer),
    demo=functools.partial(attngan.demo, trainer_class=DRGANTrainer),
))

__all__ = ["DRGANTrainer"]
