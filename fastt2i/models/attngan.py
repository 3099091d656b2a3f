"""AttnGAN (Xu et al., CVPR 2018; taoxugit/AttnGAN code/model.py) on fastt2i's fused word attention.

Generator (``G_NET``), stage by stage as in the paper:

- ``ca_net`` (conditioning augmentation): Linear(256 -> 4 * 100) -> GLU -> (mu, logvar), and
  c = mu + exp(logvar / 2) * eps;
- ``h_net1`` (``INIT_STAGE_G``): Linear(c + z -> 16 ngf * 4 * 4 * 2, no bias) -> BN -> GLU, then
  four ``upBlock`` (nearest 2x, conv3x3, BN, GLU) to ngf x 64 x 64;
- ``h_net2`` / ``h_net3`` (``NEXT_STAGE_G``): word attention (``att``: every region attends over
  the words, ``fastt2i.nn.WordRegionAttention``), concat -> 2 ngf, R_NUM ``ResBlock``, upBlock:
  128 x 128 then 256 x 256;
- ``img_net{1,2,3}`` (``GET_IMAGE_G``): conv3x3 -> tanh after each stage.

Discriminators ``D_NET64/128/256``: bias-free 4x4 stride-2 convs with BN and LeakyReLU(0.2) down
to 8 ndf x 4 x 4, and two heads, ``UNCOND_DNET`` (image only) and ``COND_DNET`` (image and
sentence), each a conv4x4 -> sigmoid (``D_GET_LOGITS``).

Every parameter and buffer has its official name, so ``netG_epoch_*.pth`` (the released
``bird_AttnGAN2.pth``, ``coco_AttnGAN2.pth``) and ``netD{i}.pth`` load unchanged
(``load_official_state_dict``).  Official values go in ``AttnGANConfig`` instead of ``cfg``.

Differences from the official code, on purpose:
- the attention applies each caption's own padding mask (the official one misaligns it, see
  ``fastt2i.nn.WordRegionAttention``); ``official_mask=True`` restores the official behaviour,
  for released checkpoints and the parity tests;
- ``D_GET_LOGITS.logits`` gives the raw logit before the sigmoid, so the losses use
  binary_cross_entropy_with_logits (safe under autocast, where BCE on probabilities is refused);
  ``forward`` still returns the official probabilities;
- the CA noise can be passed in (a seeded stream for exact resume); when it is drawn, it is
  drawn in float32 and cast, as the official ``torch.FloatTensor(...).normal_()``; CA runs in
  float32 under autocast (exp of logvar and the KL need it).
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.nn import WordRegionAttention

from ._checkpoint import (
    CheckpointLayout,
    StateDictMismatchError,
    check_family,
    load_state_dict_checked,
    load_weights,
    read_weights,
    register_layout,
    strip_module_prefix,
)


# ----------------------------------------------------------------------------- config

@dataclass
class AttnGANConfig:
    """Model and training constants; presets follow the official ``code/cfg/*_attn2.yml``."""

    dataset: str = "birds"
    branch_num: int = 3          # TREE.BRANCH_NUM: stages, images of 64, 128, 256
    gf_dim: int = 32             # GAN.GF_DIM (ngf)
    df_dim: int = 64             # GAN.DF_DIM (ndf)
    z_dim: int = 100             # GAN.Z_DIM
    condition_dim: int = 100     # GAN.CONDITION_DIM (CA output)
    embedding_dim: int = 256     # TEXT.EMBEDDING_DIM (DAMSM space, nef)
    r_num: int = 2               # GAN.R_NUM
    b_dcgan: bool = False        # GAN.B_DCGAN: G_DCGAN and one D without UNCOND_DNET
    words_num: int = 18          # TEXT.WORDS_NUM
    captions_per_image: int = 10
    batch_size: int = 20
    max_epoch: int = 600
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple = (0.5, 0.999)
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    lambda_damsm: float = 5.0    # TRAIN.SMOOTH.LAMBDA
    ema: float = 0.999           # avg_param_G decay
    official_mask: bool = False  # the official attention-mask misalignment (released checkpoints)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.branch_num not in (1, 2, 3):
            raise ValueError(f"branch_num: expected 1, 2 or 3 stages (64, 128, 256), got {self.branch_num}")
        for name in ("gf_dim", "df_dim", "z_dim", "condition_dim", "embedding_dim", "batch_size", "words_num"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.r_num < 0:
            raise ValueError(f"r_num: expected >= 0, got {self.r_num}")
        self.betas = tuple(self.betas)

    @property
    def imsize(self) -> int:
        return 64 * 2 ** (self.branch_num - 1)

    @property
    def image_sizes(self) -> list[int]:
        return [64 * 2 ** i for i in range(self.branch_num)]

    @classmethod
    def birds(cls, **kw) -> "AttnGANConfig":
        return replace(cls(), **kw)

    @classmethod
    def coco(cls, **kw) -> "AttnGANConfig":
        # code/cfg/coco_attn2.yml and eval_coco.yml: GF_DIM 48 (the released coco_AttnGAN2.pth has it)
        return replace(cls(dataset="coco", gf_dim=48, df_dim=96, r_num=3, batch_size=14, words_num=12,
                           captions_per_image=5, max_epoch=120, lambda_damsm=50.0), **kw)

    @classmethod
    def synthetic(cls, **kw) -> "AttnGANConfig":
        """The demo: the shapes dataset, a narrow network that trains on a CPU."""
        return replace(cls(dataset="synthetic", gf_dim=8, df_dim=16, r_num=1, batch_size=8, captions_per_image=1,
                           lambda_damsm=0.5),
                       **kw)

    @classmethod
    def preset(cls, name: str, **kw) -> "AttnGANConfig":
        presets = {"birds": cls.birds, "bird": cls.birds, "cub": cls.birds, "coco": cls.coco,
                   "synthetic": cls.synthetic, "generic": cls.birds}
        if name not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)}, got {name!r}")
        return presets[name](**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "AttnGANConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# ----------------------------------------------------------------------------- building blocks

class GLU(nn.Module):
    """x[:, :C/2] * sigmoid(x[:, C/2:])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] % 2:
            raise ValueError(f"GLU: expected an even number of channels, got {x.shape[1]}")
        return F.glu(x, dim=1)


def conv3x3(in_planes: int, out_planes: int) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def upBlock(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802 - official name
    """Nearest 2x upsample -> conv3x3 to 2*out -> BN -> GLU (keys .1 conv, .2 BN)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes * 2),
                         nn.BatchNorm2d(out_planes * 2), GLU())


def Block3x3_leakRelu(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802 - official name
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


def downBlock(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802 - official name
    """conv4x4 stride 2 (no bias) -> BN -> LeakyReLU(0.2): halves the size."""
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False), nn.BatchNorm2d(out_planes),
                         nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf: int) -> nn.Sequential:
    """Four conv4x4 stride-2 layers (3 -> ndf -> 2 -> 4 -> 8 ndf), BN on all but the first."""
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
    )


class ResBlock(nn.Module):
    """x + BN(conv3x3(GLU(BN(conv3x3(x, 2C)))))."""

    def __init__(self, channel_num: int):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num * 2), nn.BatchNorm2d(channel_num * 2), GLU(),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x) + x


# ----------------------------------------------------------------------------- generator

class CA_NET(nn.Module):  # noqa: N801 - official name
    """Conditioning augmentation: sentence (B, 256) -> (c_code, mu, logvar), each (B, c_dim)."""

    def __init__(self, t_dim: int = 256, c_dim: int = 100):
        super().__init__()
        self.t_dim, self.c_dim = t_dim, c_dim
        self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
        self.relu = GLU()  # the official attribute name

    def encode(self, text_embedding: torch.Tensor):
        x = self.relu(self.fc(text_embedding))
        return x[:, :self.c_dim], x[:, self.c_dim:]

    def forward(self, text_embedding: torch.Tensor, eps: torch.Tensor | None = None):
        if text_embedding.dim() != 2 or text_embedding.shape[1] != self.t_dim:
            raise ValueError(f"sent_emb: expected (B, {self.t_dim}), got {tuple(text_embedding.shape)}")
        with torch.autocast(text_embedding.device.type, enabled=False):
            mu, logvar = self.encode(text_embedding.float() if text_embedding.dtype in (torch.float16, torch.bfloat16)
                                     else text_embedding)
            std = logvar.mul(0.5).exp()
            if eps is None:  # the official draws float32 whatever the module's dtype
                eps = torch.randn(std.shape, dtype=torch.float32, device=std.device)
            elif tuple(eps.shape) != tuple(std.shape):
                raise ValueError(f"eps: expected CA noise of shape {tuple(std.shape)}, got {tuple(eps.shape)}")
            c_code = eps.to(std.dtype) * std + mu
        return c_code, mu, logvar


class INIT_STAGE_G(nn.Module):  # noqa: N801
    """(z, c) -> ngf/16 x 64 x 64 features (called with ngf = 16 * GF_DIM)."""

    def __init__(self, ngf: int, ncf: int, z_dim: int = 100):
        super().__init__()
        self.gf_dim, self.in_dim = ngf, z_dim + ncf
        self.fc = nn.Sequential(nn.Linear(self.in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2),
                                GLU())
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)

    def forward(self, z_code: torch.Tensor, c_code: torch.Tensor) -> torch.Tensor:
        c_z_code = torch.cat((c_code.to(z_code.dtype), z_code), 1)  # condition first, as the official
        out = self.fc(c_z_code).view(-1, self.gf_dim, 4, 4)
        return self.upsample4(self.upsample3(self.upsample2(self.upsample1(out))))


class NEXT_STAGE_G(nn.Module):  # noqa: N801
    """h (B, ngf, S, S) -> (B, ngf, 2S, 2S) and the word attention (B, T, S, S)."""

    def __init__(self, ngf: int, nef: int, ncf: int, r_num: int = 2, official_mask: bool = False):
        super().__init__()
        self.gf_dim, self.ef_dim, self.cf_dim, self.num_residual = ngf, nef, ncf, r_num
        self.att = WordRegionAttention(ngf, nef, official_mask=official_mask)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = upBlock(ngf * 2, ngf)

    def forward(self, h_code, c_code, word_embs, mask, return_attention: bool = True):
        context, att = self.att(h_code, word_embs, mask, return_attention=return_attention)
        out = self.residual(torch.cat((h_code, context), 1))
        return self.upsample(out), att


class GET_IMAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf: int):
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code: torch.Tensor) -> torch.Tensor:
        return self.img(h_code)


def _check_inputs(z_code, sent_emb, word_embs, mask, z_dim, nef):
    B = sent_emb.shape[0]
    if z_code.dim() != 2 or tuple(z_code.shape) != (B, z_dim):
        raise ValueError(f"z_code: expected ({B}, {z_dim}), got {tuple(z_code.shape)}")
    if word_embs.dim() != 3 or word_embs.shape[0] != B or word_embs.shape[1] != nef:
        raise ValueError(f"word_embs: expected ({B}, {nef}, T), got {tuple(word_embs.shape)}")
    if mask is not None and tuple(mask.shape) != (B, word_embs.shape[2]):
        raise ValueError(f"mask: expected ({B}, {word_embs.shape[2]}) (True on padding), got {tuple(mask.shape)}")


class G_NET(nn.Module):  # noqa: N801
    """forward(z (B, z_dim), sent_emb (B, nef), word_embs (B, nef, T), mask (B, T) True on padding)
    -> (fake images [64, 128, 256 per stage], attention maps [stage 2, 3: (B, T, S, S)], mu, logvar)."""

    def __init__(self, config: AttnGANConfig | None = None):
        super().__init__()
        c = config or AttnGANConfig()
        self.config = c
        ngf, nef, ncf = c.gf_dim, c.embedding_dim, c.condition_dim
        self.ca_net = CA_NET(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ngf * 16, ncf, c.z_dim)
        self.img_net1 = GET_IMAGE_G(ngf)
        if c.branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(ngf, nef, ncf, c.r_num, c.official_mask)
            self.img_net2 = GET_IMAGE_G(ngf)
        if c.branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(ngf, nef, ncf, c.r_num, c.official_mask)
            self.img_net3 = GET_IMAGE_G(ngf)

    def forward(self, z_code, sent_emb, word_embs, mask=None, ca_noise=None, return_attention: bool = True):
        c = self.config
        _check_inputs(z_code, sent_emb, word_embs, mask, c.z_dim, c.embedding_dim)
        c_code, mu, logvar = self.ca_net(sent_emb, ca_noise)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs, att_maps = [self.img_net1(h_code)], []
        for stage in range(2, c.branch_num + 1):
            h_code, att = getattr(self, f"h_net{stage}")(h_code, c_code, word_embs.to(h_code.dtype), mask,
                                                         return_attention=return_attention)
            fake_imgs.append(getattr(self, f"img_net{stage}")(h_code))
            if att is not None:
                att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar


class G_DCGAN(nn.Module):  # noqa: N801
    """The official ``G_DCGAN`` (``GAN.B_DCGAN``): the same stages with one image head at the end."""

    def __init__(self, config: AttnGANConfig | None = None):
        super().__init__()
        c = config or AttnGANConfig(b_dcgan=True)
        self.config = c
        ngf, nef, ncf = c.gf_dim, c.embedding_dim, c.condition_dim
        self.ca_net = CA_NET(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ngf * 16, ncf, c.z_dim)
        if c.branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(ngf, nef, ncf, c.r_num, c.official_mask)
        if c.branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(ngf, nef, ncf, c.r_num, c.official_mask)
        self.img_net = GET_IMAGE_G(ngf)

    def forward(self, z_code, sent_emb, word_embs, mask=None, ca_noise=None, return_attention: bool = True):
        c = self.config
        _check_inputs(z_code, sent_emb, word_embs, mask, c.z_dim, c.embedding_dim)
        c_code, mu, logvar = self.ca_net(sent_emb, ca_noise)
        h_code = self.h_net1(z_code, c_code)
        att_maps = []
        for stage in range(2, c.branch_num + 1):
            h_code, att = getattr(self, f"h_net{stage}")(h_code, c_code, word_embs.to(h_code.dtype), mask,
                                                         return_attention=return_attention)
            if att is not None:
                att_maps.append(att)
        return [self.img_net(h_code)], att_maps, mu, logvar


# ----------------------------------------------------------------------------- discriminators

class D_GET_LOGITS(nn.Module):  # noqa: N801
    """Head on 8 ndf x 4 x 4 features: conditional (``jointConv`` on features + sentence repeated
    4 x 4) or not; ``outlogits`` = conv4x4 stride 4 -> sigmoid.  forward -> probabilities (B,),
    ``logits`` -> the same before the sigmoid."""

    def __init__(self, ndf: int, nef: int, bcondition: bool = False):
        super().__init__()
        self.df_dim, self.ef_dim, self.bcondition = ndf, nef, bcondition
        if bcondition:
            self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def logits(self, h_code: torch.Tensor, c_code: torch.Tensor | None = None) -> torch.Tensor:
        if self.bcondition and c_code is not None:
            if c_code.dim() != 2 or c_code.shape[1] != self.ef_dim or c_code.shape[0] != h_code.shape[0]:
                raise ValueError(f"c_code: expected ({h_code.shape[0]}, {self.ef_dim}), got {tuple(c_code.shape)}")
            c = c_code.to(h_code.dtype).view(-1, self.ef_dim, 1, 1).expand(-1, -1, 4, 4)
            h_code = self.jointConv(torch.cat((h_code, c), 1))
        return self.outlogits[0](h_code).view(-1)

    def forward(self, h_code: torch.Tensor, c_code: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(h_code, c_code))


class _DNet(nn.Module):
    def __init__(self, ndf: int, nef: int, b_jcu: bool):
        super().__init__()
        self.df_dim, self.ef_dim = ndf, nef
        self.img_code_s16 = encode_image_by_16times(ndf)

    def _heads(self, ndf, nef, b_jcu):
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)

    def _check(self, x):
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.imsize or x.shape[3] != self.imsize:
            raise ValueError(f"{type(self).__name__}: expected images (B, 3, {self.imsize}, {self.imsize}), "
                             f"got {tuple(x.shape)}")


class D_NET64(_DNet):  # noqa: N801
    imsize = 64

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__(ndf, nef, b_jcu)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var: torch.Tensor) -> torch.Tensor:
        self._check(x_var)
        return self.img_code_s16(x_var)


class D_NET128(_DNet):  # noqa: N801
    imsize = 128

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__(ndf, nef, b_jcu)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var: torch.Tensor) -> torch.Tensor:
        self._check(x_var)
        return self.img_code_s32_1(self.img_code_s32(self.img_code_s16(x_var)))


class D_NET256(_DNet):  # noqa: N801
    imsize = 256

    def __init__(self, ndf: int = 64, nef: int = 256, b_jcu: bool = True):
        super().__init__(ndf, nef, b_jcu)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s64 = downBlock(ndf * 16, ndf * 32)
        self.img_code_s64_1 = Block3x3_leakRelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = Block3x3_leakRelu(ndf * 16, ndf * 8)
        self._heads(ndf, nef, b_jcu)

    def forward(self, x_var: torch.Tensor) -> torch.Tensor:
        self._check(x_var)
        x = self.img_code_s64(self.img_code_s32(self.img_code_s16(x_var)))
        return self.img_code_s64_2(self.img_code_s64_1(x))


D_NETS = (D_NET64, D_NET128, D_NET256)


# ----------------------------------------------------------------------------- init and assembly

@torch.no_grad()
def weights_init(m: nn.Module) -> None:
    """The official init (``miscc/utils.py``): orthogonal conv and linear weights (linear bias 0),
    BatchNorm weight N(1, 0.02) and bias 0.  Use as ``net.apply(weights_init)``."""
    if isinstance(m, nn.Conv2d):
        nn.init.orthogonal_(m.weight, 1.0)
    elif isinstance(m, nn.modules.batchnorm._BatchNorm):
        m.weight.normal_(1.0, 0.02)
        m.bias.zero_()
    elif isinstance(m, nn.Linear):
        nn.init.orthogonal_(m.weight, 1.0)
        if m.bias is not None:
            m.bias.zero_()


def build_discriminators(config: AttnGANConfig) -> nn.ModuleList:
    """One D per stage (D_NET64, D_NET128, D_NET256), or with ``b_dcgan`` one D for the last
    size without the unconditional head, as the official ``build_models``."""
    c = config
    if c.b_dcgan:
        return nn.ModuleList([D_NETS[c.branch_num - 1](c.df_dim, c.embedding_dim, b_jcu=False)])
    return nn.ModuleList([D_NETS[i](c.df_dim, c.embedding_dim) for i in range(c.branch_num)])


class StagedGAN(nn.Module):
    """``netG`` and ``netsD`` (a ModuleList, one D per stage), built and initialised by the family's
    own functions: the whole-model container AttnGAN, MirrorGAN and DR-GAN share (each family is a
    subclass naming its config class, generator, discriminators and init; not an AttnGAN, so a
    checkpoint of one family is never taken for another's)."""

    config_class: type = None

    def __init__(self, config=None, init: bool = True):
        super().__init__()
        self.config = config or self.config_class()
        self.netG = self.make_generator(self.config)
        self.netsD = self.make_discriminators(self.config)
        if init:
            self.apply(self.init_weights)

    @classmethod
    def from_config(cls, config, **kw):
        if isinstance(config, str):
            config = cls.config_class.preset(config, **kw)
        elif kw:
            config = replace(config, **kw)
        return cls(config)


class AttnGAN(StagedGAN):
    """``netG`` (G_NET or G_DCGAN) and ``netsD`` (a ModuleList, one D per stage), officially initialised."""

    config_class = AttnGANConfig
    make_discriminators = staticmethod(build_discriminators)
    init_weights = staticmethod(weights_init)

    @staticmethod
    def make_generator(config: AttnGANConfig) -> nn.Module:
        return (G_DCGAN if config.b_dcgan else G_NET)(config)


# ----------------------------------------------------------------------------- official files

def _stages_of_g_state(state: dict) -> int:
    return max((int(k[len("h_net")]) for k in state if k.startswith("h_net") and k[len("h_net")].isdigit()), default=0)


CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="attngan", title="AttnGAN",
    networks={"netG": ("model", "netG"), "netsD": ("model", "netsD")},
    optimizers={"G": ("optimizers", "optimizerG"), "D": ("optimizers", "optimizersD")},
    classes={"netG": G_NET, "netsD": nn.ModuleList}, model_class=AttnGAN,
    signatures={"netG": ("ca_net.", "h_net1."), "netsD": ("img_code_s16.", "COND_DNET.")}))


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Load official AttnGAN weights into ``model`` (in place; returns it).

    - a ``netG_epoch_*.pth`` / ``bird_AttnGAN2.pth`` / ``coco_AttnGAN2.pth`` state dict into a
      G_NET or G_DCGAN (a file with another number of stages than the model's is named as such);
    - a ``netD{i}.pth`` state dict into the matching D_NET64/128/256;
    - a fastt2i AttnGAN checkpoint (``{'model': {'netG', 'netsD'}, ...}``) into an AttnGAN, or
      its generator into a G_NET / G_DCGAN.
    ``module.`` prefixes are removed; any key mismatch raises StateDictMismatchError, a file of
    another family FamilyMismatchError.
    """
    obj = read_weights(source, "load_official_state_dict")
    if not isinstance(obj, dict):
        raise TypeError(f"load_official_state_dict: expected a dict or a path to one, got {type(obj).__name__}")
    if isinstance(model, (G_NET, G_DCGAN)):
        nets = CHECKPOINT_LAYOUT.networks_in(obj, complete=False)
        if nets is None:
            check_family(obj, CHECKPOINT_LAYOUT, "load_official_state_dict", plain=False)
        state = strip_module_prefix(nets["netG"] if nets and "netG" in nets else obj)
        file_stages, own = _stages_of_g_state(state), model.config.branch_num
        if file_stages and file_stages != own:
            raise StateDictMismatchError(f"load_official_state_dict: the generator file has {file_stages} stages "
                                         f"(images up to {64 * 2 ** (file_stages - 1)}), the model {own} "
                                         f"(branch_num={own})")
        return load_state_dict_checked(model, state, type(model).__name__)
    if isinstance(model, AttnGAN):
        nets = CHECKPOINT_LAYOUT.networks_in(obj, complete=False)
        if nets is not None and "netsD" in nets and len({k.split(".")[0] for k in nets["netsD"]}) != len(model.netsD):
            raise StateDictMismatchError(f"load_official_state_dict: the file has "
                                         f"{len({k.split('.')[0] for k in nets['netsD']})} discriminators, the "
                                         f"model {len(model.netsD)}")
        if nets is not None and "netG" in nets:
            load_official_state_dict(model.netG, nets["netG"])  # names a stage mismatch as such
    return load_weights(model, obj, CHECKPOINT_LAYOUT)


def save_official(model: AttnGAN, directory: str, epoch: int, ema_state: dict | None = None) -> list[str]:
    """Write ``netG_epoch_{epoch}.pth`` (the EMA weights when given, as the official
    ``save_model`` saves ``avg_param_G``) and ``netD{i}.pth``; returns the paths."""
    from fastt2i.train.checkpoint import atomic_save

    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, f"netG_epoch_{epoch}.pth")]
    atomic_save(ema_state if ema_state is not None else model.netG.state_dict(), paths[0])
    for i, d in enumerate(model.netsD):
        paths.append(os.path.join(directory, f"netD{i}.pth"))
        atomic_save(d.state_dict(), paths[-1])
    return paths


__all__ = ["CHECKPOINT_LAYOUT", "AttnGAN", "AttnGANConfig", "CA_NET", "D_GET_LOGITS", "D_NET128", "D_NET256", "D_NET64", "GET_IMAGE_G",
           "GLU", "G_DCGAN", "G_NET", "INIT_STAGE_G", "NEXT_STAGE_G", "ResBlock", "build_discriminators",
           "load_official_state_dict", "save_official", "weights_init", "StateDictMismatchError"]
