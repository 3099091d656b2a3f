"""StackGAN (Zhang et al., ICCV 2017; hanzhanggit/StackGAN-Pytorch ``code/model.py``).

Two GANs trained one after the other (``stage`` 1 then 2):

- Stage-I G: conditioning augmentation (``CondAugment``, ReLU gate, c_dim 128), cat(z, c) ->
  Linear (no bias) -> BN1d -> ReLU to 8 ngf x 4 x 4, four up-blocks (nearest 2x, conv3x3,
  BN, ReLU) halving the channels, conv3x3 -> tanh at 64x64.
- Stage-I D: four stride-2 4x4 convs (BN after the first) with LeakyReLU(0.2) to 8 ndf x 4 x 4;
  conditional head: cat(features, c repeated 4x4) -> conv3x3 -> BN -> LeakyReLU -> conv4x4/4.
- Stage-II G: the frozen Stage-I G makes the 64x64 image (detached); an encoder (conv3x3 ->
  ReLU, two stride-2 convs with BN + ReLU) to 4 ngf x 16 x 16; joined with its own CA's c
  repeated 16x16 (conv3x3, BN, ReLU), ``r_num`` residual blocks, four up-blocks to 256x256.
- Stage-II D: six stride-2 convs to 32 ndf x 4 x 4, two conv3x3 back to 8 ndf, conditional and
  unconditional heads.

The parameter names are the official ones (Sequential indices included), so released
``netG_epoch_*.pth`` / ``netD_epoch_last.pth`` files load with ``load_official_state_dict``.

Differences from the official code, on purpose:
- the heads end at the logit (no ``Sigmoid``; the losses use BCE with logits, which autocast
  allows); ``torch.sigmoid`` of our logits is the official output;
- ``D_GET_LOGITS`` tests ``c_code is not None`` where the official ``if ... and c_code:`` takes
  the truth value of a tensor, an error on today's PyTorch for any batch > 1;
- the CA noise can come from a ``torch.Generator`` (exact resume), drawn in float32 like the
  official ``torch.FloatTensor(...).normal_()``;
- in Stage II the frozen Stage-I G runs under ``no_grad`` (its output is detached anyway) but
  keeps the official train/eval mode, so its BatchNorm running statistics still move in
  Stage-II training, as they do in the official code.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.losses import kl_loss, stackgan_d_loss, stackgan_g_loss
from fastt2i.nn import CondAugment

from ._checkpoint import CheckpointLayout, load_weights, register_layout
from ._config import PresetConfig


@dataclass
class StackGANConfig(PresetConfig):
    """Constants of ``code/cfg/*.yml`` (coco_s1/s2: GF 192, DF 96, R_NUM 2; config.py defaults GF 128,
    DF 64, R_NUM 4); CUB keeps the COCO network sizes, batch 64, lr halved every 20 epochs."""

    stage: int = 1
    ngf: int = 192             # GF_DIM: Stage I works at 8 * ngf channels at 4x4, Stage II at ngf
    ndf: int = 96              # DF_DIM
    c_dim: int = 128           # GAN.CONDITION_DIM
    z_dim: int = 100
    text_dim: int = 1024
    r_num: int = 2
    kl_coeff: float = 2.0
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple = (0.5, 0.999)
    lr_decay_epoch: int = 20
    max_epoch: int = 600

    def __post_init__(self):
        if self.stage not in (1, 2):
            raise ValueError(f"stage: expected 1 or 2, got {self.stage!r}")
        for name in ("ngf", "ndf", "c_dim", "z_dim", "text_dim", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.ngf % 4 or self.ngf < 4:
            raise ValueError(f"ngf: expected a multiple of 4 (Stage II goes down to ngf / 4), got {self.ngf}")
        self.betas = tuple(self.betas)

    @property
    def imsize(self) -> int:
        return 64 if self.stage == 1 else 256

    @classmethod
    def synthetic(cls, **kw) -> "StackGANConfig":
        """Small networks for the shapes demo on a CPU."""
        return replace(cls(ngf=16, ndf=16, c_dim=32, z_dim=32, batch_size=16), **kw)

    PRESETS = ("birds", "coco", "synthetic")


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1, bias=False)


def up_block(cin: int, cout: int) -> nn.Sequential:
    """nearest 2x -> conv3x3 -> BN -> ReLU (official ``upBlock``)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(cin, cout),
                         nn.BatchNorm2d(cout), nn.ReLU(True))


def down_conv(cin: int, cout: int, bn: bool = True) -> list:
    """stride-2 conv4x4 (no bias) [-> BN] -> LeakyReLU(0.2)."""
    layers = [nn.Conv2d(cin, cout, 4, 2, 1, bias=False)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    return layers + [nn.LeakyReLU(0.2, inplace=True)]


class ResBlock(nn.Module):
    """relu(x + BN(conv3x3(relu(BN(conv3x3(x))))))."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channels, channels), nn.BatchNorm2d(channels), nn.ReLU(True),
                                   conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.block(x))


class CondLogits(nn.Module):
    """The D head (official ``D_GET_LOGITS``): conditional joins c repeated 4x4; returns (B,) logits."""

    def __init__(self, ndf: int, c_dim: int, conditional: bool = True):
        super().__init__()
        self.ndf, self.c_dim, self.conditional = ndf, c_dim, conditional
        if conditional:
            self.outlogits = nn.Sequential(conv3x3(ndf * 8 + c_dim, ndf * 8), nn.BatchNorm2d(ndf * 8),
                                           nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ndf * 8, 1, 4, 4))
        else:
            self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, 4, 4))

    def forward(self, h_code: torch.Tensor, c_code: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            if c_code is None:
                raise ValueError("c_code: the conditional head needs the condition (B, c_dim)")
            c = c_code.reshape(-1, self.c_dim, 1, 1).expand(-1, -1, h_code.shape[2], h_code.shape[3])
            h_code = torch.cat((h_code, c.to(h_code.dtype)), 1)
        return self.outlogits(h_code).reshape(-1)


class Stage1Generator(nn.Module):
    def __init__(self, ngf: int = 192, c_dim: int = 128, z_dim: int = 100, text_dim: int = 1024):
        super().__init__()
        self.gf_dim, self.ef_dim, self.z_dim = ngf * 8, c_dim, z_dim
        g = self.gf_dim
        self.ca_net = CondAugment(text_dim, c_dim, gate="relu")
        self.fc = nn.Sequential(nn.Linear(z_dim + c_dim, g * 16, bias=False), nn.BatchNorm1d(g * 16), nn.ReLU(True))
        self.upsample1 = up_block(g, g // 2)
        self.upsample2 = up_block(g // 2, g // 4)
        self.upsample3 = up_block(g // 4, g // 8)
        self.upsample4 = up_block(g // 8, g // 16)
        self.img = nn.Sequential(conv3x3(g // 16, 3), nn.Tanh())

    def forward(self, text_embedding: torch.Tensor, noise: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        """-> (None, 64x64 image, mu, logvar), the official return layout."""
        c_code, mu, logvar = self.ca_net(text_embedding, eps, generator)
        h = self.fc(torch.cat((noise.to(c_code.dtype), c_code), 1)).view(-1, self.gf_dim, 4, 4)
        h = self.upsample4(self.upsample3(self.upsample2(self.upsample1(h))))
        return None, self.img(h), mu, logvar


class Stage1Discriminator(nn.Module):
    def __init__(self, ndf: int = 96, c_dim: int = 128):
        super().__init__()
        self.df_dim, self.ef_dim = ndf, c_dim
        self.encode_img = nn.Sequential(*down_conv(3, ndf, bn=False), *down_conv(ndf, ndf * 2),
                                        *down_conv(ndf * 2, ndf * 4), *down_conv(ndf * 4, ndf * 8))
        self.get_cond_logits = CondLogits(ndf, c_dim)
        self.get_uncond_logits = None

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """-> image features (B, 8 ndf, 4, 4); heads: ``get_cond_logits(features, c)``."""
        return self.encode_img(image)


class Stage2Generator(nn.Module):
    def __init__(self, stage1: Stage1Generator | None = None, ngf: int = 192, c_dim: int = 128, z_dim: int = 100,
                 text_dim: int = 1024, r_num: int = 2, stage1_ngf: int | None = None):
        super().__init__()
        self.gf_dim, self.ef_dim, self.z_dim = ngf, c_dim, z_dim
        self.STAGE1_G = stage1 if stage1 is not None else Stage1Generator(stage1_ngf or ngf, c_dim, z_dim, text_dim)
        for p in self.STAGE1_G.parameters():  # Stage I is fixed in Stage-II training
            p.requires_grad_(False)
        self.ca_net = CondAugment(text_dim, c_dim, gate="relu")
        self.encoder = nn.Sequential(conv3x3(3, ngf), nn.ReLU(True),
                                     nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
                                     nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4),
                                     nn.ReLU(True))
        self.hr_joint = nn.Sequential(conv3x3(c_dim + ngf * 4, ngf * 4), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.residual = nn.Sequential(*[ResBlock(ngf * 4) for _ in range(r_num)])
        self.upsample1 = up_block(ngf * 4, ngf * 2)
        self.upsample2 = up_block(ngf * 2, ngf)
        self.upsample3 = up_block(ngf, ngf // 2)
        self.upsample4 = up_block(ngf // 2, ngf // 4)
        self.img = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(self, text_embedding: torch.Tensor, noise: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None, stage1_eps: torch.Tensor | None = None):
        """-> (64x64 Stage-I image, 256x256 image, mu, logvar).  Noise order as official: Stage I's CA
        draws first, then Stage II's."""
        with torch.no_grad():
            _, stage1_img, _, _ = self.STAGE1_G(text_embedding, noise, stage1_eps, generator)
        encoded = self.encoder(stage1_img)
        c_code, mu, logvar = self.ca_net(text_embedding, eps, generator)
        c = c_code.view(-1, self.ef_dim, 1, 1).expand(-1, -1, encoded.shape[2], encoded.shape[3])
        h = self.residual(self.hr_joint(torch.cat([encoded, c.to(encoded.dtype)], 1)))
        h = self.upsample4(self.upsample3(self.upsample2(self.upsample1(h))))
        return stage1_img, self.img(h), mu, logvar


class Stage2Discriminator(nn.Module):
    def __init__(self, ndf: int = 96, c_dim: int = 128):
        super().__init__()
        self.df_dim, self.ef_dim = ndf, c_dim
        self.encode_img = nn.Sequential(
            *down_conv(3, ndf, bn=False), *down_conv(ndf, ndf * 2), *down_conv(ndf * 2, ndf * 4),
            *down_conv(ndf * 4, ndf * 8), *down_conv(ndf * 8, ndf * 16), *down_conv(ndf * 16, ndf * 32),
            conv3x3(ndf * 32, ndf * 16), nn.BatchNorm2d(ndf * 16), nn.LeakyReLU(0.2, inplace=True),
            conv3x3(ndf * 16, ndf * 8), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True))
        self.get_cond_logits = CondLogits(ndf, c_dim, conditional=True)
        self.get_uncond_logits = CondLogits(ndf, c_dim, conditional=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encode_img(image)


# The official class names.
STAGE1_G, STAGE1_D, STAGE2_G, STAGE2_D, D_GET_LOGITS = (Stage1Generator, Stage1Discriminator, Stage2Generator,
                                                        Stage2Discriminator, CondLogits)


def init_weights(module: nn.Module) -> None:
    """The official ``weights_init``: conv and linear weights N(0, 0.02), linear biases 0, BN N(1, 0.02) / 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_stackgan(config: StackGANConfig) -> tuple[nn.Module, nn.Module]:
    """(netG, netD) of ``config.stage``, initialised as the official trainer does."""
    c = config
    if c.stage == 1:
        netG, netD = Stage1Generator(c.ngf, c.c_dim, c.z_dim, c.text_dim), Stage1Discriminator(c.ndf, c.c_dim)
    else:
        netG = Stage2Generator(None, c.ngf, c.c_dim, c.z_dim, c.text_dim, c.r_num)
        netD = Stage2Discriminator(c.ndf, c.c_dim)
    init_weights(netG)
    init_weights(netD)
    return netG, netD


# ----------------------------------------------------------------------------- the training losses

class PairLogits(nn.Module):
    """Every D logit a step needs in one forward (D's trunk, then its heads), so that a DDP wrapper
    of this module sees all uses of D's parameters; the official code calls the heads one by one.

    forward(fake_imgs, cond, real_imgs=None) -> {"fake", "uncond_fake"} and, with real images,
    {"real", "wrong", "uncond_real"}; "wrong" pairs real image i with condition i + 1 (B - 1 of them).
    """

    def __init__(self, netD: nn.Module):
        super().__init__()
        self.netD = netD

    def forward(self, fake_imgs: torch.Tensor, cond: torch.Tensor, real_imgs: torch.Tensor | None = None) -> dict:
        d, out = self.netD, {}
        if real_imgs is not None:  # real first: BatchNorm running statistics move as official
            real_features = d(real_imgs)
            out["real"] = d.get_cond_logits(real_features, cond)
            out["wrong"] = d.get_cond_logits(real_features[:-1], cond[1:])
            if d.get_uncond_logits is not None:
                out["uncond_real"] = d.get_uncond_logits(real_features)
        fake_features = d(fake_imgs)
        out["fake"] = d.get_cond_logits(fake_features, cond)
        if d.get_uncond_logits is not None:
            out["uncond_fake"] = d.get_uncond_logits(fake_features)
        return out


def _pairs(netD: nn.Module) -> nn.Module:
    return PairLogits(netD) if isinstance(netD, (Stage1Discriminator, Stage2Discriminator)) else netD


def discriminator_loss(netD: nn.Module, real_imgs: torch.Tensor, fake_imgs: torch.Tensor, mu: torch.Tensor):
    """The official D loss on one batch: real, wrong (real image i with condition i + 1) and fake pairs,
    conditioned on mu (detached); Stage II adds the unconditional terms.  ``netD`` is a Stage D or a
    (DDP-wrapped) PairLogits.  -> (loss, parts)."""
    out = _pairs(netD)(fake_imgs.detach(), mu.detach(), real_imgs)
    return stackgan_d_loss(out["real"], out["wrong"], out["fake"], out.get("uncond_real"), out.get("uncond_fake"))


def generator_loss(netD: nn.Module, fake_imgs: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor,
                   kl_coeff: float = 2.0) -> tuple[torch.Tensor, dict]:
    """Adversarial loss of the fakes (condition mu detached, as official) + kl_coeff * KL."""
    out = _pairs(netD)(fake_imgs, mu.detach())
    adv = stackgan_g_loss(out["fake"], out.get("uncond_fake"))
    kl = kl_loss(mu, logvar)
    return adv + kl_coeff * kl, {"g_adv": adv.detach(), "kl": kl.detach()}


# ----------------------------------------------------------------------------- checkpoints

# The official trainer saves netG and netD as separate state-dict files (netG_epoch_*.pth,
# netD_epoch_last.pth); a fastt2i checkpoint keeps one entry per network and optimiser.
CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="stackgan",
    title="StackGAN",
    networks={"netG": ("netG",), "netD": ("netD",)},
    optimizers={"G": ("optimizerG",), "D": ("optimizerD",)},
    classes={"netG": Stage1Generator, "netD": Stage1Discriminator},
    signatures={"netG": ("ca_net.fc.", "upsample4.", "img.0."), "netD": ("encode_img.", "get_cond_logits.")},
))


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Official StackGAN weights (a path or a loaded state dict: ``netG_epoch_*.pth`` of Stage I or
    II, ``netD_epoch_last.pth``) into the matching module; ``module.`` prefixes are removed and
    any mismatch is an error listing the keys."""
    return load_weights(model, source, CHECKPOINT_LAYOUT)
