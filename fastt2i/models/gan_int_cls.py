"""GAN-INT-CLS (Reed et al., ICML 2016; reedscot/icml2016 ``main_cls_int.lua``, Torch7).

- G: the text embedding projected (Linear 1024 -> nt 128, LeakyReLU 0.2) and joined after the
  noise z (100); a 4x4 full convolution to 8 ngf, BN; a bottleneck residual block (1x1 down to
  2 ngf, 3x3, 3x3 back up, BN after each, ReLU inside; + identity; ReLU); full conv to 4 ngf,
  BN, a second residual block (4 ngf -> ngf -> 4 ngf), ReLU; full convs to 2 ngf and ngf with
  BN + ReLU; a full conv to RGB -> tanh at 64x64.  ngf 128 (CUB / flowers), 196 (COCO).
- D: 4x4 stride-2 convs 3 -> ndf (LeakyReLU) -> 2 ndf (BN, LeakyReLU) -> 4 ndf (BN) -> 8 ndf
  (BN), LeakyReLU at 4x4; the text projected (Linear 1024 -> 128, BN1d, LeakyReLU) and
  replicated 4x4; cat -> conv1x1 -> BN -> LeakyReLU -> conv4x4 -> logit.  ndf 64 (CUB), 196 (COCO).

What the Lua code does that the paper does not say, followed here:
- The D's residual block is built but never joins the network: the script adds ``skipD`` to
  the ``ConcatTable``, a name defined nowhere, so Lua adds nil and the branch is the identity
  alone.  ``d_residual=False`` (default) is that network; ``d_residual=True`` adds the block
  as written (1x1 to 2 ndf, 3x3, 3x3 to 8 ndf, BN each, LeakyReLU inside) for the described one.
- There is no activation between the 4 ndf BN and the next conv, nor after the first G BN
  before its residual block.
- Every conv and full-conv bias is zeroed before each D and G evaluation in training, so the
  convolutions are effectively bias-free: they have no bias here.
- Init: conv weights N(0, 0.02); BN weights N(1, 0.02), biases 0; the Linear layers keep
  Torch's default uniform(+-1/sqrt(fan_in)) (PyTorch's default draws from the same range).

Checkpoints: the released G / D are Torch7 ``.t7`` serialisations of whole ``nn.Sequential``
objects (``torch.save`` of the networks above, possibly cudnn-converted, CUDA storages).
``load_torch7`` reads them with fastt2i's own Torch7 reader (``_torch7``) and maps the Lua
modules with parameters onto ours in the order the script adds them, kinds and shapes
checked; the conv biases of the file, which the script zeroes before every evaluation (so
they hold at most one optimiser step), are dropped with a warning giving their size.  A state
dict with the names below loads too.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.losses import gan_int_g_loss, interpolate_text, matching_aware_d_loss

from ._checkpoint import CheckpointLayout, load_weights, register_layout
from ._torch7 import read_torch7, state_dict_from_torch7
from ._config import PresetConfig


@dataclass
class GANINTCLSConfig(PresetConfig):
    """``scripts/train_cub.sh`` over ``main_cls_int.lua``'s defaults (CUB)."""

    ngf: int = 128
    ndf: int = 64
    nz: int = 100
    nt: int = 128
    text_dim: int = 1024
    cls_weight: float = 0.5
    interp_weight: float = 1.0
    num_captions: int = 4       # embeddings averaged per image, in the data path (numCaption, replicate = 0)
    d_residual: bool = False
    batch_size: int = 64
    lr: float = 2e-4
    betas: tuple = (0.5, 0.999)
    lr_decay: float = 0.5
    decay_every: int = 100      # epochs
    max_epoch: int = 600

    def __post_init__(self):
        for name in ("ngf", "ndf", "nz", "nt", "text_dim", "num_captions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.batch_size < 2 or self.batch_size % 2:
            raise ValueError(f"batch_size: GAN-INT needs an even batch >= 2, got {self.batch_size}")
        if self.ngf % 4 or self.ndf % 4:
            raise ValueError(f"ngf / ndf: expected multiples of 4, got {self.ngf} / {self.ndf}")
        self.betas = tuple(self.betas)

    @property
    def imsize(self) -> int:
        return 64

    @classmethod
    def coco(cls, **kw) -> "GANINTCLSConfig":
        """``scripts/train_coco.sh``: ngf = ndf = 196, numCaption 3, lr halved every 40 of 200 epochs.
        That script runs ``main_cls.lua`` (GAN-CLS, no interpolation); ``--interp-weight 0`` is that
        loss here, although G's batch still holds the B / 2 interpolated texts (BN statistics)."""
        return replace(cls(ngf=196, ndf=196, num_captions=3, decay_every=40, max_epoch=200), **kw)

    @classmethod
    def synthetic(cls, **kw) -> "GANINTCLSConfig":
        return replace(cls(ngf=32, ndf=32, nz=32, nt=32, num_captions=1, batch_size=16), **kw)

    PRESETS = ("birds", "flowers", "coco", "synthetic")


def _act(kind: str) -> nn.Module:
    return nn.ReLU(True) if kind == "relu" else nn.LeakyReLU(0.2, True)


class Bottleneck(nn.Module):
    """act(x + BN(conv3x3(act(BN(conv3x3(act(BN(conv1x1(x))))))))) with C -> inner -> inner -> C."""

    def __init__(self, channels: int, inner: int, act: str = "relu"):
        super().__init__()
        self.act = act
        self.branch = nn.Sequential(
            nn.Conv2d(channels, inner, 1, bias=False), nn.BatchNorm2d(inner), _act(act),
            nn.Conv2d(inner, inner, 3, 1, 1, bias=False), nn.BatchNorm2d(inner), _act(act),
            nn.Conv2d(inner, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x + self.branch(x)
        return F.relu(y) if self.act == "relu" else F.leaky_relu(y, 0.2)


def _up(cin: int, cout: int, relu: bool = True) -> nn.Sequential:
    layers = [nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(True)) if relu else nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, ngf: int = 128, nz: int = 100, nt: int = 128, text_dim: int = 1024):
        super().__init__()
        self.nz, self.text_dim = nz, text_dim
        self.text_proj = nn.Sequential(nn.Linear(text_dim, nt), nn.LeakyReLU(0.2, True))
        self.stem = nn.Sequential(nn.ConvTranspose2d(nz + nt, ngf * 8, 4, bias=False), nn.BatchNorm2d(ngf * 8))
        self.res4 = Bottleneck(ngf * 8, ngf * 2, "relu")           # 4x4
        self.up8 = _up(ngf * 8, ngf * 4, relu=False)
        self.res8 = Bottleneck(ngf * 4, ngf, "relu")               # 8x8
        self.up16 = _up(ngf * 4, ngf * 2)
        self.up32 = _up(ngf * 2, ngf)
        self.to_rgb = nn.Sequential(nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, noise: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        if text_embedding.dim() != 2 or text_embedding.shape[1] != self.text_dim:
            raise ValueError(f"text_embedding: expected (B, {self.text_dim}), got {tuple(text_embedding.shape)}")
        t = self.text_proj(text_embedding)
        h = torch.cat((noise.reshape(noise.shape[0], self.nz).to(t.dtype), t), 1)[:, :, None, None]
        h = self.res8(self.up8(self.res4(self.stem(h))))
        return self.to_rgb(self.up32(self.up16(h)))


class Discriminator(nn.Module):
    def __init__(self, ndf: int = 64, nt: int = 128, text_dim: int = 1024, d_residual: bool = False):
        super().__init__()
        self.text_dim = text_dim
        self.encode_img = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8))
        self.residual = Bottleneck(ndf * 8, ndf * 2, "lrelu") if d_residual else None
        self.text_proj = nn.Sequential(nn.Linear(text_dim, nt), nn.BatchNorm1d(nt), nn.LeakyReLU(0.2, True))
        self.joint = nn.Sequential(nn.Conv2d(ndf * 8 + nt, ndf * 8, 1, bias=False), nn.BatchNorm2d(ndf * 8),
                                   nn.LeakyReLU(0.2, True))
        self.logits = nn.Conv2d(ndf * 8, 1, 4, bias=False)

    def forward(self, image: torch.Tensor, text_embedding: torch.Tensor) -> torch.Tensor:
        """-> (B,) logits (the official D ends with a sigmoid)."""
        if text_embedding.dim() != 2 or text_embedding.shape[1] != self.text_dim:
            raise ValueError(f"text_embedding: expected (B, {self.text_dim}), got {tuple(text_embedding.shape)}")
        h = self.encode_img(image)
        h = self.residual(h) if self.residual is not None else F.leaky_relu(h, 0.2)
        t = self.text_proj(text_embedding)[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])
        return self.logits(self.joint(torch.cat((h, t.to(h.dtype)), 1))).reshape(-1)


def init_weights(module: nn.Module) -> None:
    """``weights_init`` of main_cls_int.lua: convolutions N(0, 0.02), BN N(1, 0.02) / 0; Linear untouched."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_gan_int_cls(config: GANINTCLSConfig) -> tuple[Generator, Discriminator]:
    c = config
    netG = Generator(c.ngf, c.nz, c.nt, c.text_dim)
    netD = Discriminator(c.ndf, c.nt, c.text_dim, c.d_residual)
    init_weights(netG)
    init_weights(netD)
    return netG, netD


def average_captions(text: torch.Tensor, num_captions: int) -> torch.Tensor:
    """(B * n, D) embeddings, n consecutive rows per image -> (B, D) means (the Lua ``netR``, replicate 0)."""
    if text.dim() != 2 or text.shape[0] % num_captions:
        raise ValueError(f"text: expected (B * {num_captions}, D) embeddings, got {tuple(text.shape)}")
    return text.reshape(-1, num_captions, text.shape[1]).mean(1)


# ----------------------------------------------------------------------------- the training losses

def discriminator_loss(netG: Generator, netD: Discriminator, real_imgs: torch.Tensor, text: torch.Tensor,
                       wrong_imgs: torch.Tensor, noise: torch.Tensor, cls_weight: float = 0.5):
    """GAN-CLS D loss; as in Lua the real, wrong and fake pairs are three separate D batches and the
    fakes are made with fresh noise in this step.  -> (loss, fakes)."""
    real = netD(real_imgs, text)
    wrong = netD(wrong_imgs, text) if cls_weight > 0 else None
    with torch.no_grad():
        fake_imgs = netG(noise, text)
    fake = netD(fake_imgs, text)
    return matching_aware_d_loss(real, wrong, fake, cls_weight), fake_imgs


def generator_loss(netG: Generator, netD: Discriminator, text: torch.Tensor, noise_interp: torch.Tensor,
                   interp_weight: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """GAN-INT G loss on a 1.5 B batch (B texts + B / 2 interpolations).  -> (loss, fakes)."""
    cond = interpolate_text(text)
    fake_imgs = netG(noise_interp, cond)
    return gan_int_g_loss(netD(fake_imgs, cond), text.shape[0], interp_weight), fake_imgs


# ----------------------------------------------------------------------------- checkpoints

CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="gan-int-cls",
    title="GAN-INT-CLS",
    networks={"netG": ("netG",), "netD": ("netD",)},
    optimizers={"G": ("optimStateG",), "D": ("optimStateD",)},   # the Lua names
    classes={"netG": Generator, "netD": Discriminator},
    signatures={"netG": ("text_proj.", "stem.", "to_rgb."), "netD": ("encode_img.", "joint.", "logits.")},
))


def load_torch7(model: nn.Module, source, what: str | None = None) -> dict:
    """A Lua netG / netD ``.t7`` (path or bytes) into Generator / Discriminator, by module order.
    -> the dropped conv biases {name: max |b|} (also warned about when non-zero)."""
    what = what or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "GAN-INT-CLS .t7")
    state, dropped = state_dict_from_torch7(model, read_torch7(source, what), what)
    model.load_state_dict(state)
    large = {k: v for k, v in dropped.items() if v > 0}
    if large:
        warnings.warn(f"{what}: dropped the convolution biases the Lua script zeroes before every evaluation; "
                      f"largest |b| {max(large.values()):.3g} (in {max(large, key=large.get)})", stacklevel=2)
    return dropped


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Released weights into Generator / Discriminator: a Torch7 ``.t7`` file of the Lua network
    (``load_torch7``) or a state dict with our names (path or loaded)."""
    if isinstance(source, (str, os.PathLike)) and os.fspath(source).endswith(".t7"):
        load_torch7(model, source)
        return model
    return load_weights(model, source, CHECKPOINT_LAYOUT)
