"""A literal transcription of tobran/DF-GAN (code/models/GAN.py, code/lib/modules.py MA_GP).

Plain PyTorch with the official structure, names and math (in-place LeakyReLUs included),
no fastt2i ops: the ground truth that the tests hold ``fastt2i.models.dfgan`` to, and the
"official-equivalent eager" baseline of the benchmarks.  Not meant for training.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .dfgan import d_in_out_channels, g_in_out_channels


class Affine(nn.Module):
    def __init__(self, cond_dim, num_features):
        super().__init__()
        self.fc_gamma = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(cond_dim, num_features)), ("relu1", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(num_features, num_features))]))
        self.fc_beta = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(cond_dim, num_features)), ("relu1", nn.ReLU(inplace=True)),
            ("linear2", nn.Linear(num_features, num_features))]))
        nn.init.zeros_(self.fc_gamma.linear2.weight.data)
        nn.init.ones_(self.fc_gamma.linear2.bias.data)
        nn.init.zeros_(self.fc_beta.linear2.weight.data)
        nn.init.zeros_(self.fc_beta.linear2.bias.data)

    def forward(self, x, y=None):
        weight = self.fc_gamma(y)
        bias = self.fc_beta(y)
        size = x.size()
        weight = weight.unsqueeze(-1).unsqueeze(-1).expand(size)
        bias = bias.unsqueeze(-1).unsqueeze(-1).expand(size)
        return weight * x + bias


class DFBLK(nn.Module):
    def __init__(self, cond_dim, in_ch):
        super().__init__()
        self.affine0 = Affine(cond_dim, in_ch)
        self.affine1 = Affine(cond_dim, in_ch)

    def forward(self, x, y=None):
        h = self.affine0(x, y)
        h = nn.LeakyReLU(0.2, inplace=True)(h)
        h = self.affine1(h, y)
        h = nn.LeakyReLU(0.2, inplace=True)(h)
        return h


class G_Block(nn.Module):
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
        h = self.fuse1(h, y)
        h = self.c1(h)
        h = self.fuse2(h, y)
        return self.c2(h)

    def forward(self, x, y):
        x = F.interpolate(x, scale_factor=2)
        return self.shortcut(x) + self.residual(x, y)


class NetG(nn.Module):
    def __init__(self, ngf, nz, cond_dim, imsize):
        super().__init__()
        self.ngf = ngf
        self.fc = nn.Linear(nz, ngf * 8 * 4 * 4)
        self.GBlocks = nn.ModuleList([G_Block(cond_dim + nz, i, o) for i, o in g_in_out_channels(ngf, imsize)])
        self.to_rgb = nn.Sequential(nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ngf, 3, 3, 1, 1), nn.Tanh())

    def forward(self, noise, c):
        out = self.fc(noise)
        out = out.view(noise.size(0), 8 * self.ngf, 4, 4)
        cond = torch.cat((noise, c), dim=1)
        for block in self.GBlocks:
            out = block(out, cond)
        return self.to_rgb(out)


class D_Block(nn.Module):
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
        self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x, y=None):
        res = self.conv_r(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x + self.gamma * res


class NetD(nn.Module):
    def __init__(self, ndf, imsize):
        super().__init__()
        self.conv_img = nn.Conv2d(3, ndf, 3, 1, 1)
        self.DBlocks = nn.ModuleList([D_Block(i, o) for i, o in d_in_out_channels(ndf, imsize)])

    def forward(self, x):
        out = self.conv_img(x)
        for block in self.DBlocks:
            out = block(out)
        return out


class NetC(nn.Module):
    def __init__(self, ndf, cond_dim=256):
        super().__init__()
        self.cond_dim = cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, out, y):
        y = y.view(-1, self.cond_dim, 1, 1)
        y = y.repeat(1, 1, 4, 4)
        h_c_code = torch.cat((out, y), 1)
        return self.joint_conv(h_c_code)


def ma_gp_reduction(grads, k=2.0, p=6.0):
    """MA_GP's reduction of the two gradients: flatten, concatenate, L2 norm, ``k * mean(norm^p)``."""
    grad0 = grads[0].view(grads[0].size(0), -1)
    grad1 = grads[1].view(grads[1].size(0), -1)
    grad = torch.cat((grad0, grad1), dim=1)
    grad_l2norm = torch.sqrt(torch.sum(grad ** 2, dim=1))
    return k * torch.mean(grad_l2norm ** p)


def MA_GP(img, sent, out):
    """code/lib/modules.py MA_GP (``.cuda()`` replaced by the output's device)."""
    grads = torch.autograd.grad(outputs=out, inputs=(img, sent), grad_outputs=torch.ones(out.size(), device=out.device),
                                retain_graph=True, create_graph=True, only_inputs=True)
    return ma_gp_reduction(grads, 2.0, 6.0)
