"""DF-GAN (Tao et al., CVPR 2022; tobran/DF-GAN, current version) on fastt2i's fused blocks.

NetG, NetD and NetC follow the official ``code/models/GAN.py`` module by module, with the
same parameter names, so official checkpoints load unchanged:

- NetG: ``fc`` (nz -> 8*ngf*4*4) on the noise; every ``GBlocks[i]`` (nearest 2x upsample,
  residual fuse1 -> c1 -> fuse2 -> c2, shortcut ``c_sc`` 1x1 when channels change) is
  conditioned on cat(noise, sentence); ``to_rgb`` = LeakyReLU(0.2) -> conv3x3 -> tanh.
- NetD: ``conv_img`` conv3x3 then ``DBlocks`` down to 4x4 (8*ndf channels).
- NetC: ``joint_conv`` on cat(features, sentence repeated 4x4) -> one raw logit.

The DFBLKs run as ``fastt2i.nn.DFBlock`` (one fused df_affine per block), the D blocks as
``fastt2i.nn.DBlock`` and the activations as ``fastt2i.nn.FusedLeakyReLU``, so each op
dispatches to the active backend.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.nn import DBlock, DFBlock, FusedLeakyReLU, JointConv

from ._checkpoint import CheckpointLayout, load_weights, register_layout


# ----------------------------------------------------------------------------- config

@dataclass
class DFGANConfig:
    """Model and training constants; presets ``birds()``, ``flowers()``, ``coco()`` follow the
    official ``code/cfg/*.yml`` (nf 32, z 100, cond 256, batch 32, imsize 256)."""

    imsize: int = 256
    ngf: int = 32
    ndf: int = 32
    nz: int = 100
    cond_dim: int = 256
    ch_size: int = 3
    words_num: int = 18
    captions_per_image: int = 10
    batch_size: int = 32
    max_epoch: int = 1301
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple = (0.0, 0.9)
    gp_k: float = 2.0
    gp_p: float = 6.0
    truncation: bool = True
    trunc_rate: float = 0.86
    dataset: str = "birds"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        check_imsize(self.imsize)
        for name in ("ngf", "ndf", "nz", "cond_dim", "ch_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        self.betas = tuple(self.betas)

    @classmethod
    def birds(cls, **kw) -> "DFGANConfig":
        return replace(cls(), **kw)

    @classmethod
    def flowers(cls, **kw) -> "DFGANConfig":
        return replace(cls(dataset="flowers", max_epoch=1001, trunc_rate=0.88), **kw)

    @classmethod
    def coco(cls, **kw) -> "DFGANConfig":
        return replace(cls(dataset="coco", max_epoch=301, captions_per_image=5), **kw)

    @classmethod
    def synthetic(cls, **kw) -> "DFGANConfig":
        """The demo: 64x64 shapes, a small network that learns in minutes on a CPU."""
        return replace(cls(dataset="synthetic", imsize=64, ngf=16, ndf=16, batch_size=16,
                           captions_per_image=1, trunc_rate=1.0), **kw)

    @classmethod
    def preset(cls, name: str, **kw) -> "DFGANConfig":
        presets = {"birds": cls.birds, "bird": cls.birds, "cub": cls.birds, "flowers": cls.flowers,
                   "flower": cls.flowers, "coco": cls.coco, "synthetic": cls.synthetic, "generic": cls.birds}
        if name not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)}, got {name!r}")
        return presets[name](**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DFGANConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def check_imsize(imsize: int) -> None:
    if not isinstance(imsize, int) or imsize < 8 or imsize & (imsize - 1):
        raise ValueError(f"imsize: expected a power of two >= 8 (64, 128, 256), got {imsize!r}")


def g_in_out_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """Official ``get_G_in_out_chs``: nf*min(2^i, 8) for i < log2(imsize)-1, reversed, pairwise."""
    check_imsize(imsize)
    layer_num = int(math.log2(imsize)) - 1
    chans = [nf * min(2 ** i, 8) for i in range(layer_num)][::-1]
    return list(zip(chans[:-1], chans[1:]))


def d_in_out_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """Official ``get_D_in_out_chs``: the same channel list, not reversed."""
    check_imsize(imsize)
    layer_num = int(math.log2(imsize)) - 1
    chans = [nf * min(2 ** i, 8) for i in range(layer_num)]
    return list(zip(chans[:-1], chans[1:]))


# ----------------------------------------------------------------------------- networks

class GBlock(nn.Module):
    """Official ``G_Block``: x up 2x; out = c_sc(x) (or x) + c2(fuse2(c1(fuse1(x, y)), y))."""

    def __init__(self, cond_dim: int, in_ch: int, out_ch: int, upsample: bool = True):
        super().__init__()
        self.upsample = upsample
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBlock(cond_dim, in_ch)
        self.fuse2 = DFBlock(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_sc(x) if self.learnable_sc else x

    def residual(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fuse1(h, y)
        h = self.c1(h)
        h = self.fuse2(h, y)
        return self.c2(h)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.upsample:
            x = F.interpolate(x, scale_factor=2)  # nearest, as the official code
        return self.shortcut(x) + self.residual(x, y)


G_Block = GBlock  # the official class name


class NetG(nn.Module):
    def __init__(self, ngf: int = 32, nz: int = 100, cond_dim: int = 256, imsize: int = 256, ch_size: int = 3):
        super().__init__()
        self.ngf, self.nz, self.cond_dim, self.imsize = ngf, nz, cond_dim, imsize
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        self.GBlocks = nn.ModuleList()
        pairs = g_in_out_channels(ngf, imsize)
        for in_ch, out_ch in pairs:
            self.GBlocks.append(GBlock(cond_dim + nz, in_ch, out_ch, upsample=True))
        self.to_rgb = nn.Sequential(
            FusedLeakyReLU(0.2),
            nn.Conv2d(pairs[-1][1], ch_size, 3, 1, 1),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if noise.dim() != 2 or noise.shape[1] != self.nz:
            raise ValueError(f"noise: expected (B, {self.nz}), got {tuple(noise.shape)}")
        if c.dim() != 2 or c.shape[1] != self.cond_dim or c.shape[0] != noise.shape[0]:
            raise ValueError(f"c: expected ({noise.shape[0]}, {self.cond_dim}), got {tuple(c.shape)}")
        out = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, c), dim=1)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class NetD(nn.Module):
    """Image features (B, 8*ndf, 4, 4); the conditional head is NetC."""

    def __init__(self, ndf: int = 32, imsize: int = 256, ch_size: int = 3):
        super().__init__()
        self.ndf, self.imsize = ndf, imsize
        self.conv_img = nn.Conv2d(ch_size, ndf, 3, 1, 1)
        self.DBlocks = nn.ModuleList()
        for in_ch, out_ch in d_in_out_channels(ndf, imsize):
            self.DBlocks.append(DBlock(in_ch, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(JointConv):
    """The official NetC is exactly fastt2i.nn.JointConv (its ``joint_conv`` Sequential keeps the
    official keys ``joint_conv.0`` / ``joint_conv.2``): forward(features, sentence) -> (B, 1, 1, 1)."""

    def __init__(self, ndf: int = 32, cond_dim: int = 256):
        super().__init__(ndf, cond_dim=cond_dim)


class DFGAN(nn.Module):
    """The three networks together (``netG``, ``netD``, ``netC``) built from a DFGANConfig."""

    def __init__(self, config: DFGANConfig | None = None):
        super().__init__()
        self.config = config or DFGANConfig()
        c = self.config
        self.netG = NetG(c.ngf, c.nz, c.cond_dim, c.imsize, c.ch_size)
        self.netD = NetD(c.ndf, c.imsize, c.ch_size)
        self.netC = NetC(c.ndf, c.cond_dim)

    @classmethod
    def from_config(cls, config: DFGANConfig | str, **kw) -> "DFGAN":
        if isinstance(config, str):
            config = DFGANConfig.preset(config, **kw)
        elif kw:
            config = replace(config, **kw)
        return cls(config)


# ----------------------------------------------------------------------------- official weights

CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="dfgan",
    title="DF-GAN",
    # the official training state (code/lib/utils.py:save_models), which fastt2i checkpoints keep
    networks={"netG": ("model", "netG"), "netD": ("model", "netD"), "netC": ("model", "netC")},
    optimizers={"G": ("optimizers", "optimizer_G"), "D": ("optimizers", "optimizer_D")},
    classes={"netG": NetG, "netD": NetD, "netC": NetC},
    model_class=DFGAN,
    signatures={"netG": ("fc.", "GBlocks.", "to_rgb."), "netD": ("conv_img.", "DBlocks."),
                "netC": ("joint_conv.",)},
))


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Load official DF-GAN / DAMSM weights into ``model`` (in place; returns it).

    ``source`` is a path or an already loaded object:
    - the official training state ``{'model': {'netG', 'netD', 'netC'}, 'optimizers': ...}``
      (also fastt2i checkpoints, which use the same layout) into a DFGAN, NetG, NetD or NetC;
    - a plain state dict of one network (e.g. a released netG file) into that network;
    - the official DAMSM text encoder file (``text_encoder200.pth``) into an RNNEncoder.
    ``module.`` prefixes of DDP-saved files are removed.  Any key mismatch raises
    StateDictMismatchError listing the missing and unexpected keys; another family's file raises
    FamilyMismatchError naming both families.
    """
    return load_weights(model, source, CHECKPOINT_LAYOUT, "load_official_state_dict")
