"""Conditioning augmentation (StackGAN, StackGAN++; also AttnGAN's CA_NET): text -> (c, mu, logvar).

mu and log sigma^2 come from one Linear on the sentence embedding, gated as the official
``CA_NET`` of each code base does it:

- ``gate="relu"`` (StackGAN, hanzhanggit/StackGAN-Pytorch): fc: text_dim -> 2 c_dim, ReLU;
- ``gate="glu"``  (StackGAN++ and AttnGAN): fc: text_dim -> 4 c_dim, GLU over the features;

then mu = first c_dim features, logvar = the rest, and c = mu + eps * exp(logvar / 2),
eps ~ N(0, 1).  The parameter is named ``fc`` as in the official modules, so ``ca_net.fc.*``
keys of released generators load.  The official code draws eps with ``torch.FloatTensor``
from the global generator; here eps is drawn in float32 too (then cast to mu's dtype), from
``generator`` when one is given (exact resume), or passed in directly.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CondAugment(nn.Module):
    def __init__(self, text_dim: int = 1024, c_dim: int = 128, gate: str = "relu"):
        super().__init__()
        if gate not in ("relu", "glu"):
            raise ValueError(f"gate: expected 'relu' (StackGAN) or 'glu' (StackGAN++ / AttnGAN), got {gate!r}")
        self.text_dim, self.c_dim, self.gate = text_dim, c_dim, gate
        self.fc = nn.Linear(text_dim, c_dim * (2 if gate == "relu" else 4))

    def encode(self, text_embedding: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if text_embedding.dim() != 2 or text_embedding.shape[1] != self.text_dim:
            raise ValueError(f"text_embedding: expected (B, {self.text_dim}), got {tuple(text_embedding.shape)}")
        x = self.fc(text_embedding)
        x = F.relu(x) if self.gate == "relu" else F.glu(x, dim=1)
        return x[:, :self.c_dim], x[:, self.c_dim:]

    def forward(self, text_embedding: torch.Tensor, eps: torch.Tensor | None = None,
                generator: torch.Generator | None = None):
        mu, logvar = self.encode(text_embedding)
        if eps is None:
            where = generator.device if generator is not None else mu.device
            eps = torch.randn(mu.shape, generator=generator, device=where, dtype=torch.float32).to(mu.device)
        elif eps.shape != mu.shape:
            raise ValueError(f"eps: expected {tuple(mu.shape)}, got {tuple(eps.shape)}")
        c_code = eps.to(mu.dtype) * torch.exp(0.5 * logvar) + mu
        return c_code, mu, logvar

    def extra_repr(self) -> str:
        return f"text_dim={self.text_dim}, c_dim={self.c_dim}, gate={self.gate!r}"
