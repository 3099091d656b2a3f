"""DF-GAN as its authors wrote it (tobran/DF-GAN, ``code/models/GAN.py`` and the MA-GP of
``code/lib/modules.py``), re-expressed in plain PyTorch without fastt2i ops.

What is kept from the official code, because it decides the numbers or the checkpoint
keys: the module and parameter names (``GBlocks.0.fuse1.affine0.fc_gamma.linear1.weight``,
...), the initialisation of the affine heads (gamma = 1, beta = 0), the nearest-neighbour
upsampling before each generator block, the learned 1x1 shortcuts only where the channel
count changes, the in-place LeakyReLU(0.2) activations, the 4x4 sentence tiling in NetC,
and MA-GP's ``k * mean(||[d out/d img, d out/d sent]||^p)`` through ``sqrt`` (which is NaN
at a zero gradient: fastt2i's penalty defines that point as 0).  The only change: the
official ``.cuda()`` becomes the device of the output.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


def _stage_channels(nf: int, imsize: int) -> list[int]:
    """nf * (1, 2, 4, 8, 8, ...): one width per resolution from 4x4 up to imsize / 2."""
    stages = int(math.log2(imsize)) - 1
    return [nf * min(2 ** i, 8) for i in range(stages)]


def generator_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of each generator block: the stage widths from the widest down."""
    widths = _stage_channels(nf, imsize)[::-1]
    return list(zip(widths, widths[1:]))


def discriminator_channels(nf: int, imsize: int) -> list[tuple[int, int]]:
    """(in, out) channels of each discriminator block: the stage widths from the narrowest up."""
    widths = _stage_channels(nf, imsize)
    return list(zip(widths, widths[1:]))


def _conditional_head(cond_dim: int, width: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        linear1=nn.Linear(cond_dim, width),
        relu1=nn.ReLU(inplace=True),
        linear2=nn.Linear(width, width),
    ))


class Affine(nn.Module):
    """``gamma(cond) * x + beta(cond)`` per sample and channel; two-layer MLP heads that
    start as the identity (gamma's last layer outputs 1, beta's outputs 0)."""

    def __init__(self, cond_dim, num_features):
        super().__init__()
        self.fc_gamma = _conditional_head(cond_dim, num_features)
        self.fc_beta = _conditional_head(cond_dim, num_features)
        for head, bias_value in ((self.fc_gamma, 1.0), (self.fc_beta, 0.0)):
            nn.init.zeros_(head.linear2.weight.data)
            nn.init.constant_(head.linear2.bias.data, bias_value)

    def forward(self, x, y=None):
        scale = self.fc_gamma(y)[:, :, None, None].expand(x.size())
        shift = self.fc_beta(y)[:, :, None, None].expand(x.size())
        return scale * x + shift


class DFBLK(nn.Module):
    """Two conditional affines, each followed by an in-place LeakyReLU(0.2)."""

    def __init__(self, cond_dim, in_ch):
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x, y=None):
        out = x
        for affine in (self.affine0, self.affine1):
            out = nn.LeakyReLU(0.2, inplace=True)(affine(out, y))
        return out


class G_Block(nn.Module):  # noqa: N801 (the official name)
    """Upsample x2 (nearest), then shortcut + [fuse1, 3x3 conv, fuse2, 3x3 conv]."""

    def __init__(self, cond_dim, in_ch, out_ch):
        super().__init__()
        self.learnable_sc = in_ch != out_ch
        self.c1 = nn.Conv2d(in_ch, out_ch, 3, 1, 1)
        self.c2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1)
        self.fuse1 = DFBLK(cond_dim, in_ch)
        self.fuse2 = DFBLK(cond_dim, out_ch)
        if self.learnable_sc:
            self.c_sc = nn.Conv2d(in_ch, out_ch, 1, stride=1, padding=0)

    def shortcut(self, x):
        return self.c_sc(x) if self.learnable_sc else x

    def residual(self, h, y):
        return self.c2(self.fuse2(self.c1(self.fuse1(h, y)), y))

    def forward(self, x, y):
        up = F.interpolate(x, scale_factor=2)
        return self.shortcut(up) + self.residual(up, y)


class NetG(nn.Module):
    """Noise -> 4x4 map of 8*ngf channels -> G_Blocks conditioned on [noise, sentence] -> RGB."""

    def __init__(self, ngf, nz, cond_dim, imsize):
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        self.GBlocks = nn.ModuleList(
            G_Block(cond_dim + nz, cin, cout) for cin, cout in generator_channels(ngf, imsize))
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ngf, 3, 3, 1, 1), nn.Tanh())

    def forward(self, noise, c):
        h = self.fc(noise).view(noise.size(0), 8 * self.ngf, 4, 4)
        condition = torch.cat((noise, c), dim=1)  # the noise comes first
        for block in self.GBlocks:
            h = block(h, condition)
        return self.to_rgb(h)


class D_Block(nn.Module):  # noqa: N801 (the official name)
    """Residual down block: x' + gamma * [4x4/2 conv, lrelu, 3x3 conv, lrelu](x), where x' is
    x through a 1x1 conv when the width changes and a 2x2 average pool; gamma starts at 0."""

    def __init__(self, fin, fout, downsample=True):
        super().__init__()
        self.downsample = downsample
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)  # created even when unused
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x, y=None):
        residual = self.conv_r(x)
        skip = self.conv_s(x) if self.learned_shortcut else x
        if self.downsample:
            skip = F.avg_pool2d(skip, 2)
        return skip + self.gamma * residual


class NetD(nn.Module):
    """3x3 conv from RGB, then D_Blocks down to 4x4 with 8*ndf channels."""

    def __init__(self, ndf, imsize):
        super().__init__()
        self.conv_img = nn.Conv2d(3, ndf, 3, 1, 1)
        self.DBlocks = nn.ModuleList(D_Block(cin, cout) for cin, cout in discriminator_channels(ndf, imsize))

    def forward(self, x):
        h = self.conv_img(x)
        for block in self.DBlocks:
            h = block(h)
        return h


class NetC(nn.Module):
    """The conditional head: the sentence tiled over the 4x4 features, then two convs to a logit."""

    def __init__(self, ndf, cond_dim=256):
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, out, y):
        tiled = y.view(-1, self.cond_dim, 1, 1).repeat(1, 1, 4, 4)
        return self.joint_conv(torch.cat((out, tiled), 1))


def ma_gp_reduction(grads, k=2.0, p=6.0):
    """MA-GP's reduction of (d out / d image, d out / d sentence): the per-sample L2 norm of
    both gradients flattened side by side, as ``sqrt(sum of squares)``, then ``k * mean(norm^p)``."""
    batch = grads[0].size(0)
    joined = torch.cat([g.view(batch, -1) for g in grads[:2]], dim=1)
    norm = torch.sqrt(torch.sum(joined ** 2, dim=1))
    return k * torch.mean(norm ** p)


def MA_GP(img, sent, out):  # noqa: N802 (the official name)
    """DF-GAN's matching-aware gradient penalty (k = 2, p = 6) of D's output ``out``."""
    grads = torch.autograd.grad(outputs=out, inputs=(img, sent),
                                grad_outputs=torch.ones(out.size(), device=out.device),
                                retain_graph=True, create_graph=True, only_inputs=True)
    return ma_gp_reduction(grads, 2.0, 6.0)
