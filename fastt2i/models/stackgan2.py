"""StackGAN++ (Zhang et al., TPAMI 2018; hanzhanggit/StackGAN-v2 ``code/model.py``), text-conditioned.

- CA: Linear(1024 -> 4 c_dim) -> GLU -> (mu, logvar) of c_dim each (``CondAugment(gate="glu")``).
- G (``G_NET``, a tree of ``branch_num`` stages, 64 -> 128 -> 256):
  ``h_net1`` = cat(c, z) -> Linear (no bias) -> BN1d -> GLU to 16 ngf x 4 x 4, four up-blocks
  (nearest 2x, conv3x3 to 2 out, BN, GLU) to ngf x 64 x 64; ``h_net2``/``h_net3`` (NEXT_STAGE_G):
  cat(c repeated, h) -> conv3x3 -> BN -> GLU (``jointConv``), ``r_num`` GLU residual blocks, an
  up-block halving the channels; ``img_net{i}`` = conv3x3 -> tanh after each stage.
- D (``D_NET64/128/256``): image down by 16 (stride-2 convs, LeakyReLU), more down-blocks for
  128 / 256 and conv3x3 blocks back to 8 ndf at 4x4; ``jointConv`` on cat(c repeated 4x4,
  features); ``logits`` (conditional) and ``uncond_logits`` (on the image features alone).
  The condition D sees is mu: detached in the D step, not in the G step (so G's adversarial
  loss also reaches the CA through D's condition), as the official trainer passes it.

Official parameter names throughout, so released ``netG_*.pth`` (StackGAN-v2 saves the
``nn.DataParallel`` state: the ``module.`` prefix is stripped) and ``netD{i}.pth`` load.

Differences from the official code, on purpose: heads end at the logit (BCE with logits in
the losses; ``torch.sigmoid`` gives the official output); GLU is ``F.glu`` (the same
a * sigmoid(b)); CA noise from an optional ``torch.Generator``; only the text-conditioned
configuration (``B_CONDITION: True``, the text-to-image setting) is built; stages 4 and 5
(512 / 1024, "not tested yet" in the official code) are not.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.losses import colour_consistency_loss, kl_loss, stackgan2_d_loss, stackgan2_g_loss
from fastt2i.nn import CondAugment

from ._checkpoint import CheckpointLayout, load_weights, register_layout
from ._config import PresetConfig


@dataclass
class StackGAN2Config(PresetConfig):
    """``code/cfg/birds_3stages.yml`` over ``miscc/config.py``: GF 64, DF 64, EMBEDDING_DIM 128, R_NUM 2,
    batch 24, UNCOND_LOSS 1, KL 2, COLOR_LOSS 0 (the colour-consistency weight; > 0 enables it)."""

    branch_num: int = 3
    ngf: int = 64
    ndf: int = 64
    c_dim: int = 128
    z_dim: int = 100
    text_dim: int = 1024
    r_num: int = 2
    kl_coeff: float = 2.0
    uncond_coeff: float = 1.0
    color_coeff: float = 0.0
    batch_size: int = 24
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple = (0.5, 0.999)
    ema: float = 0.999          # avg_param_G's decay: the default of the run's EMA (TrainConfig.ema)
    max_epoch: int = 600

    def __post_init__(self):
        if self.branch_num not in (1, 2, 3):
            raise ValueError(f"branch_num: expected 1, 2 or 3 stages (64 / 128 / 256), got {self.branch_num!r}")
        for name in ("ngf", "ndf", "c_dim", "z_dim", "text_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.ngf % 4:
            raise ValueError(f"ngf: expected a multiple of 4 (the last stage works at ngf / 4), got {self.ngf}")
        self.betas = tuple(self.betas)

    @property
    def imsize(self) -> int:
        return 64 * 2 ** (self.branch_num - 1)

    @classmethod
    def synthetic(cls, **kw) -> "StackGAN2Config":
        return replace(cls(branch_num=2, ngf=16, ndf=16, c_dim=32, z_dim=32, batch_size=16), **kw)

    PRESETS = ("birds", "synthetic")


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


class GLU(nn.Module):
    """First half of the channels gated by the sigmoid of the second (the official ``GLU``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.glu(x, dim=1)


def up_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(cin, cout * 2),
                         nn.BatchNorm2d(cout * 2), GLU())


def glu_block(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 -> BN -> GLU, same size (official ``Block3x3_relu``)."""
    return nn.Sequential(conv3x3(cin, cout * 2), nn.BatchNorm2d(cout * 2), GLU())


def lrelu_block(cin: int, cout: int) -> nn.Sequential:
    """conv3x3 -> BN -> LeakyReLU(0.2) (official ``Block3x3_leakRelu``)."""
    return nn.Sequential(conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def down_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True))


class ResBlock(nn.Module):
    """x + BN(conv3x3(GLU(BN(conv3x3(x -> 2C))))) (no activation after the sum, as official)."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channels, channels * 2), nn.BatchNorm2d(channels * 2), GLU(),
                                   conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def _repeat_condition(c_code: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return c_code.reshape(c_code.shape[0], -1, 1, 1).expand(-1, -1, like.shape[2], like.shape[3]).to(like.dtype)


class InitStageG(nn.Module):
    def __init__(self, ngf: int, c_dim: int = 128, z_dim: int = 100):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(nn.Linear(c_dim + z_dim, ngf * 4 * 4 * 2, bias=False),
                                nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
        self.upsample1 = up_block(ngf, ngf // 2)
        self.upsample2 = up_block(ngf // 2, ngf // 4)
        self.upsample3 = up_block(ngf // 4, ngf // 8)
        self.upsample4 = up_block(ngf // 8, ngf // 16)

    def forward(self, z_code: torch.Tensor, c_code: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat((c_code, z_code.to(c_code.dtype)), 1)).view(-1, self.gf_dim, 4, 4)
        return self.upsample4(self.upsample3(self.upsample2(self.upsample1(h))))


class NextStageG(nn.Module):
    def __init__(self, ngf: int, c_dim: int = 128, num_residual: int = 2):
        super().__init__()
        self.gf_dim, self.ef_dim = ngf, c_dim
        self.jointConv = glu_block(ngf + c_dim, ngf)
        self.residual = nn.Sequential(*[ResBlock(ngf) for _ in range(num_residual)])
        self.upsample = up_block(ngf, ngf // 2)

    def forward(self, h_code: torch.Tensor, c_code: torch.Tensor) -> torch.Tensor:
        h = self.jointConv(torch.cat((_repeat_condition(c_code, h_code), h_code), 1))
        return self.upsample(self.residual(h))


class GetImageG(nn.Module):
    def __init__(self, ngf: int):
        super().__init__()
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code: torch.Tensor) -> torch.Tensor:
        return self.img(h_code)


class Generator(nn.Module):
    """G_NET: forward(z, text) -> ([64x64, 128x128, 256x256 images][:branch_num], mu, logvar)."""

    def __init__(self, ngf: int = 64, c_dim: int = 128, z_dim: int = 100, text_dim: int = 1024, r_num: int = 2,
                 branch_num: int = 3):
        super().__init__()
        self.gf_dim, self.branch_num = ngf, branch_num
        self.ca_net = CondAugment(text_dim, c_dim, gate="glu")
        self.h_net1 = InitStageG(ngf * 16, c_dim, z_dim)
        self.img_net1 = GetImageG(ngf)
        if branch_num > 1:
            self.h_net2 = NextStageG(ngf, c_dim, r_num)
            self.img_net2 = GetImageG(ngf // 2)
        if branch_num > 2:
            self.h_net3 = NextStageG(ngf // 2, c_dim, r_num)
            self.img_net3 = GetImageG(ngf // 4)

    def forward(self, z_code: torch.Tensor, text_embedding: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        c_code, mu, logvar = self.ca_net(text_embedding, eps, generator)
        h = self.h_net1(z_code, c_code)
        fake_imgs = [self.img_net1(h)]
        for i in range(2, self.branch_num + 1):
            h = getattr(self, f"h_net{i}")(h, c_code)
            fake_imgs.append(getattr(self, f"img_net{i}")(h))
        return fake_imgs, mu, logvar


class Discriminator(nn.Module):
    """D_NET64 / D_NET128 / D_NET256: forward(image, c) -> (cond logits (B,), uncond logits (B,))."""

    def __init__(self, imsize: int = 64, ndf: int = 64, c_dim: int = 128):
        super().__init__()
        if imsize not in (64, 128, 256):
            raise ValueError(f"imsize: expected 64, 128 or 256, got {imsize!r}")
        self.imsize, self.df_dim, self.ef_dim = imsize, ndf, c_dim
        self.img_code_s16 = encode_image_by_16times(ndf)
        if imsize == 128:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s32_1 = lrelu_block(ndf * 16, ndf * 8)
        elif imsize == 256:
            self.img_code_s32 = down_block(ndf * 8, ndf * 16)
            self.img_code_s64 = down_block(ndf * 16, ndf * 32)
            self.img_code_s64_1 = lrelu_block(ndf * 32, ndf * 16)
            self.img_code_s64_2 = lrelu_block(ndf * 16, ndf * 8)
        self.logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, 4, 4))
        self.jointConv = lrelu_block(ndf * 8 + c_dim, ndf * 8)
        self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, 4, 4))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.img_code_s16(x)
        if self.imsize == 128:
            x = self.img_code_s32_1(self.img_code_s32(x))
        elif self.imsize == 256:
            x = self.img_code_s64_2(self.img_code_s64_1(self.img_code_s64(self.img_code_s32(x))))
        return x

    def forward(self, x_var: torch.Tensor, c_code: torch.Tensor):
        x_code = self.encode(x_var)
        h = self.jointConv(torch.cat((_repeat_condition(c_code, x_code), x_code), 1))
        return self.logits(h).reshape(-1), self.uncond_logits(x_code).reshape(-1)


def D_NET64(ndf: int = 64, c_dim: int = 128) -> Discriminator:  # noqa: N802 - official names
    return Discriminator(64, ndf, c_dim)


def D_NET128(ndf: int = 64, c_dim: int = 128) -> Discriminator:  # noqa: N802
    return Discriminator(128, ndf, c_dim)


def D_NET256(ndf: int = 64, c_dim: int = 128) -> Discriminator:  # noqa: N802
    return Discriminator(256, ndf, c_dim)


G_NET, INIT_STAGE_G, NEXT_STAGE_G, GET_IMAGE_G = Generator, InitStageG, NextStageG, GetImageG


def init_weights(module: nn.Module) -> None:
    """The official StackGAN-v2 ``weights_init``: orthogonal conv / linear weights (gain 1), linear
    biases 0, BN weight N(1, 0.02) and bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, 1.0)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_stackgan2(config: StackGAN2Config) -> tuple[nn.Module, nn.ModuleList]:
    """(netG, netsD) with one D per stage, initialised as the official ``load_network``."""
    c = config
    netG = Generator(c.ngf, c.c_dim, c.z_dim, c.text_dim, c.r_num, c.branch_num)
    netsD = nn.ModuleList(Discriminator(64 * 2 ** i, c.ndf, c.c_dim) for i in range(c.branch_num))
    init_weights(netG)
    init_weights(netsD)
    return netG, netsD


# ----------------------------------------------------------------------------- the training losses

def discriminator_loss(netD: Discriminator, real_imgs: torch.Tensor, wrong_imgs: torch.Tensor,
                       fake_imgs: torch.Tensor, mu: torch.Tensor, uncond_coeff: float = 1.0) -> torch.Tensor:
    """One stage's D loss (official ``train_Dnet``): three separate D evaluations, condition mu detached."""
    cond = mu.detach()
    real = netD(real_imgs, cond)
    wrong = netD(wrong_imgs, cond)
    fake = netD(fake_imgs.detach(), cond)
    return stackgan2_d_loss(real, wrong, fake, uncond_coeff)


def generator_loss(netsD, fake_imgs: list, mu: torch.Tensor, logvar: torch.Tensor, uncond_coeff: float = 1.0,
                   color_coeff: float = 0.0, kl_coeff: float = 2.0) -> tuple[torch.Tensor, dict]:
    """Official ``train_Gnet``: per-stage adversarial terms (D conditioned on mu, not detached), the
    colour-consistency regulariser when ``color_coeff`` > 0, and kl_coeff * KL."""
    adv = sum(stackgan2_g_loss(netD(img, mu), uncond_coeff) for netD, img in zip(netsD, fake_imgs))
    parts = {"g_adv": adv.detach()}
    total = adv
    if color_coeff > 0 and len(fake_imgs) > 1:
        colour = colour_consistency_loss(fake_imgs, color_coeff)
        total = total + colour
        parts["colour"] = colour.detach()
    kl = kl_loss(mu, logvar) * kl_coeff
    parts["kl"] = kl.detach()
    return total + kl, parts


# ----------------------------------------------------------------------------- checkpoints

def checkpoint_layout(branch_num: int = 3) -> CheckpointLayout:
    """netG and one netD per stage (the official files: netG_<iteration>.pth, netD0.pth ...)."""
    networks = {"netG": ("netG",), **{f"netD{i}": ("netsD", f"netD{i}") for i in range(branch_num)}}
    optimizers = {"G": ("optimizerG",), **{f"D{i}": ("optimizersD", f"optimizerD{i}") for i in range(branch_num)}}
    return CheckpointLayout(
        family="stackgan2", title="StackGAN++", networks=networks, optimizers=optimizers,
        classes={"netG": Generator},
        signatures={"netG": ("ca_net.fc.", "h_net1.", "img_net1."), "netD0": ("img_code_s16.", "uncond_logits.")})


CHECKPOINT_LAYOUT = register_layout(checkpoint_layout(3))


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Official StackGAN++ weights (``netG_*.pth``, saved from ``nn.DataParallel``: the ``module.``
    prefix is removed; ``netD{i}.pth``) into the matching module, with key errors listed."""
    return load_weights(model, source, CHECKPOINT_LAYOUT)
