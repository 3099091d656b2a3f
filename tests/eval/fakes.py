"""Small stand-ins for the Inception network and the DAMSM encoders (the metrics' math is what is tested)."""
import torch
import torch.nn as nn


class FakeInception(nn.Module):
    """Images in [0, 1] (N, 3, 8, 8) -> (features (N, 16), logits (N, 10)), fixed random weights."""

    feature_dim = 16

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(3 * 8 * 8, 26, generator=g, dtype=torch.float64) / 8)

    def forward(self, images):
        y = (images.double().flatten(1) @ self.w).float()
        return y[:, :16], y[:, 16:] * 3


def fake_images(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
