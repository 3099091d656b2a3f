"""DF-GAN's discriminator blocks on the fused ``bias_leaky_relu`` op.

MA-GP differentiates the discriminator twice at every D step.  Every leaky ReLU
here is the fused op, whose first and second derivatives are fused kernels that
read only the saved output: the double backward of a block is its convolutions'
(native cuDNN) plus one elementwise kernel per activation.

Parameter names follow tobran/DF-GAN ``code/models/GAN.py`` (``D_Block``:
``conv_r.0``, ``conv_r.2``, ``conv_s``, ``gamma``; ``NetC``: ``joint_conv.0``,
``joint_conv.2``), so official state dicts load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.ops import bias_leaky_relu


class FusedLeakyReLU(nn.Module):
    """Drop-in for ``nn.LeakyReLU(negative_slope)``, on the fused op, any-order differentiable.

    Parameter-free (no state-dict entries).  ``inplace`` is accepted for signature
    compatibility with the official ``nn.LeakyReLU(0.2, inplace=True)`` and ignored:
    the op keeps its output for the backward, so it never overwrites its input.
    """

    def __init__(self, negative_slope: float = 0.2, inplace: bool = False):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(x, None, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class DBlock(nn.Module):
    """DF-GAN's D_Block: ``x' + gamma * conv_r(x)`` with ``x'`` = avg_pool(conv_s(x)).

    conv_r = conv4x4/2 (no bias) -> LReLU(0.2) -> conv3x3 (no bias) -> LReLU(0.2);
    conv_s = 1x1 conv (with bias), applied only when ``fin != fout`` but present
    always, as in the official code; gamma is a learned scalar starting at 0.
    forward(x (B, fin, H, W)) -> (B, fout, H/2, W/2) (H, W even when ``downsample``).
    """

    def __init__(self, fin: int, fout: int, downsample: bool = True):
        super().__init__()
        self.fin, self.fout, self.downsample = fin, fout, downsample
        self.learned_shortcut = fin != fout
        self.conv_r = nn.Sequential(
            nn.Conv2d(fin, fout, 4, 2, 1, bias=False),
            FusedLeakyReLU(0.2),
            nn.Conv2d(fout, fout, 3, 1, 1, bias=False),
            FusedLeakyReLU(0.2),
        )
        self.conv_s = nn.Conv2d(fin, fout, 1, stride=1, padding=0)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.conv_r(x)
        if self.learned_shortcut:
            x = self.conv_s(x)
        if self.downsample:
            x = F.avg_pool2d(x, 2)
        return x + self.gamma * res

    def extra_repr(self) -> str:
        return f"fin={self.fin}, fout={self.fout}, downsample={self.downsample}"


class JointConv(nn.Module):
    """DF-GAN NetC's joint conv: the sentence tiled to 4x4, concatenated to D's features, two convs.

    joint_conv = conv3x3(8*ndf + cond_dim -> 2*ndf, no bias) -> LReLU(0.2) -> conv4x4(2*ndf -> 1, no bias).
    forward(features (B, 8*ndf, 4, 4), sentence (B, cond_dim)) -> (B, 1, 1, 1) raw logits.
    """

    def __init__(self, ndf: int, cond_dim: int = 256):
        super().__init__()
        self.ndf, self.cond_dim = ndf, cond_dim
        self.joint_conv = nn.Sequential(
            nn.Conv2d(ndf * 8 + cond_dim, ndf * 2, 3, 1, 1, bias=False),
            FusedLeakyReLU(0.2),
            nn.Conv2d(ndf * 2, 1, 4, 1, 0, bias=False),
        )

    def forward(self, features: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        if features.dim() != 4 or features.shape[1] != self.ndf * 8 or tuple(features.shape[2:]) != (4, 4):
            raise ValueError(f"features: expected shape (B, {self.ndf * 8}, 4, 4), got {tuple(features.shape)}")
        if sentence.dim() != 2 or sentence.shape != (features.shape[0], self.cond_dim):
            raise ValueError(f"sentence: expected shape ({features.shape[0]}, {self.cond_dim}), "
                             f"got {tuple(sentence.shape)}")
        # As the official NetC: view (B, cond_dim, 1, 1), repeat to 4x4, concatenate on channels.
        tiled = sentence.view(-1, self.cond_dim, 1, 1).repeat(1, 1, 4, 4)
        if features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous():
            # cat keeps channels_last only when both inputs have it
            tiled = tiled.contiguous(memory_format=torch.channels_last)
        return self.joint_conv(torch.cat((features, tiled), 1))

    def extra_repr(self) -> str:
        return f"ndf={self.ndf}, cond_dim={self.cond_dim}"
