"""DF-GAN's deep text-image fusion block (DFBLK) on the fused ``df_affine`` op."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from fastt2i.ops import df_affine


class Affine(nn.Module):
    """One conditional affine of DF-GAN: ``gamma = fc_gamma(cond)``, ``beta = fc_beta(cond)``.

    Submodule names follow the official code (``fc_gamma.linear1`` ... ``linear2``)
    so official state dicts load unchanged.  ``linear2`` starts at weight 0 with
    bias 1 (gamma) / 0 (beta): the block begins as the identity affine.
    """

    def __init__(self, cond_dim: int, num_features: int):
        super().__init__()
        self.fc_gamma = self._mlp(cond_dim, num_features)
        self.fc_beta = self._mlp(cond_dim, num_features)
        nn.init.zeros_(self.fc_gamma.linear2.weight)
        nn.init.ones_(self.fc_gamma.linear2.bias)
        nn.init.zeros_(self.fc_beta.linear2.weight)
        nn.init.zeros_(self.fc_beta.linear2.bias)

    @staticmethod
    def _mlp(cond_dim: int, num_features: int) -> nn.Sequential:
        return nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(cond_dim, num_features)),
            ("relu1", nn.ReLU()),
            ("linear2", nn.Linear(num_features, num_features)),
        ]))

    def mlps(self):
        return (self.fc_gamma, self.fc_beta)


class DFBlock(nn.Module):
    """DFBLK: ``num_affine`` x (affine -> LeakyReLU(0.2)), fused into one ``df_affine`` call.

    forward(x (B, C, H, W), cond (B, cond_dim)) -> (B, C, H, W).  All the block's
    gamma/beta MLPs run as two batched matmuls, then one fused kernel applies them.
    """

    def __init__(self, cond_dim: int, channels: int, num_affine: int = 2, negative_slope: float = 0.2):
        super().__init__()
        if num_affine < 1:
            raise ValueError(f"num_affine: expected >= 1, got {num_affine}")
        self.cond_dim, self.channels, self.num_affine = cond_dim, channels, num_affine
        self.negative_slope = negative_slope
        for k in range(num_affine):
            self.add_module(f"affine{k}", Affine(cond_dim, channels))

    def affines(self) -> list[Affine]:
        return [getattr(self, f"affine{k}") for k in range(self.num_affine)]

    def gamma_beta(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Every affine's (gamma, beta), each (num_affine, B, C), in two batched matmuls."""
        if cond.dim() != 2 or cond.shape[1] != self.cond_dim:
            raise ValueError(f"cond: expected shape (B, {self.cond_dim}), got {tuple(cond.shape)}")
        mlps = [mlp for affine in self.affines() for mlp in affine.mlps()]  # gamma0, beta0, gamma1, ...
        w1 = torch.cat([m.linear1.weight for m in mlps])  # (2K*C, cond_dim)
        b1 = torch.cat([m.linear1.bias for m in mlps])
        hidden = torch.relu(torch.addmm(b1, cond, w1.t()))  # (B, 2K*C)
        hidden = hidden.view(cond.shape[0], len(mlps), self.channels).transpose(0, 1)  # (2K, B, C)
        w2 = torch.stack([m.linear2.weight for m in mlps])  # (2K, C, C)
        b2 = torch.stack([m.linear2.bias for m in mlps])[:, None, :]
        out = torch.baddbmm(b2, hidden, w2.transpose(1, 2))  # (2K, B, C)
        return out[0::2], out[1::2]

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.gamma_beta(cond)
        return df_affine(x, gamma, beta, self.negative_slope)

    def extra_repr(self) -> str:
        return f"cond_dim={self.cond_dim}, channels={self.channels}, num_affine={self.num_affine}"
