"""Image grids as PNG, without torchvision (``make_grid(normalize=True, value_range=(-1, 1))``)."""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8, clamped (the official ``(im + 1) * 127.5``)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images: expected (N, 1|3, H, W), got {tuple(images.shape)}")
    x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def make_grid(images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 32) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> one (rows*(H+p)+p, ncol*(W+p)+p, C) uint8 image."""
    pix = to_uint8(images)
    n, h, w, c = pix.shape
    ncol = max(1, min(nrow, n))
    rows = math.ceil(n / ncol)
    grid = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = pix[i]
    return grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int = 8, padding: int = 2, scale: int = 1) -> str:
    """Write the grid as PNG (atomically); ``scale`` enlarges small images with nearest pixels."""
    grid = make_grid(images, nrow=nrow, padding=padding)
    img = Image.fromarray(grid if grid.shape[2] == 3 else grid[..., 0])
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}.png")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
