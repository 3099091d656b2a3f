"""Small stand-ins for the Inception network and the DAMSM encoders (the metrics' math is what is tested)."""
import torch
import torch.nn as nn
import torch.nn.functional as F


class FakeInception(nn.Module):
    """Images in [0, 1] (N, 3, H, W) -> (features (N, 16), logits (N, 10)) of their 8x8 average, fixed weights."""

    feature_dim = 16
    weights = "fake"

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w", torch.randn(3 * 8 * 8, 26, generator=g, dtype=torch.float64) / 8)

    def forward(self, images):
        x = F.adaptive_avg_pool2d(images.float(), 8) if images.shape[-1] != 8 else images
        y = (x.double().flatten(1) @ self.w).float()
        return y[:, :16], y[:, 16:] * 3


def fake_inception_factory(protocol="torchvision", weights=None):
    return FakeInception()


def fake_images(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
