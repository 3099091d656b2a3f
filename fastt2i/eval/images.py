"""Image sources for evaluation: a folder of images, or the images of a dataset split.

Every source yields batches of (N, 3, H, W) float32 images in [0, 1], the input of the
Inception protocols (generated images in [-1, 1] are mapped with ``from_generator``).
"""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
from PIL import Image

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".ppm", ".tif", ".tiff")


def from_generator(images: torch.Tensor) -> torch.Tensor:
    """Generator output in [-1, 1] -> [0, 1] (DF-GAN's ``Normalize((-1,) * 3, (2,) * 3)``), clamped."""
    return ((images.float() + 1) / 2).clamp_(0, 1)


def list_images(folder: str) -> list[str]:
    """Image files under ``folder`` (recursively), sorted; an error when there is none."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(os.path.join(root, f) for root, _, names in os.walk(folder) for f in names
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise ValueError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found")
    return files


def load_image(path: str) -> torch.Tensor:
    """(3, H, W) float32 in [0, 1] (RGB; grey and RGBA converted)."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


def folder_batches(files: list[str], batch_size: int) -> Iterator[torch.Tensor]:
    """Batches of the images in ``files``; all must have one size (the metric would mix resamplings)."""
    size = None
    for i in range(0, len(files), batch_size):
        batch = []
        for path in files[i:i + batch_size]:
            img = load_image(path)
            if size is None:
                size = tuple(img.shape[1:])
            elif tuple(img.shape[1:]) != size:
                raise ValueError(f"{path}: image of size {tuple(img.shape[1:])} (H, W), the folder's first image is "
                                 f"{size}; evaluation needs images of one size (resize them first)")
            batch.append(img)
        yield torch.stack(batch)


def dataset_batches(dataset, batch_size: int, indices: list[int] | None = None) -> Iterator[torch.Tensor]:
    """Images of a fastt2i dataset (items (image in [-1, 1], caption, length, key)) as [0, 1] batches."""
    idx = list(range(len(dataset))) if indices is None else list(indices)
    for i in range(0, len(idx), batch_size):
        yield from_generator(torch.stack([dataset[j][0] for j in idx[i:i + batch_size]]))
