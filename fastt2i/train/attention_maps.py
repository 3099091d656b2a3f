"""AttnGAN's attention figure: each word under its attention map laid over the generated image.

One block per caption: a row per attention stage (AttnGAN: stage 2 at 64 x 64 and stage 3 at
128 x 128, DAMSM: the 17 x 17 regions), the stage's input image first, then one cell per word
(the image, dimmed, with the word's map as a heat overlay), and the words written under their
cells, as in the paper's figures.  Each row's maps share one colour scale.
"""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from .images import to_uint8

TEXT_HEIGHT = 14


def _heat(a: np.ndarray) -> np.ndarray:
    """[0, 1] -> RGB: black, red, yellow, white (a perceptually ordered ramp without matplotlib)."""
    r = np.clip(3 * a, 0, 1)
    g = np.clip(3 * a - 1, 0, 1)
    b = np.clip(3 * a - 2, 0, 1)
    return np.stack([r, g, b], -1)


def attention_figure(images: list[torch.Tensor], attention: list[torch.Tensor], words: list[list[str]],
                     cell: int = 96, alpha: float = 0.6) -> Image.Image:
    """A PIL image of every caption's per-word maps.

    Args:
        images: per row of maps, the images they lie over, (B, 3, H, W) in [-1, 1] (any size).
        attention: per row, the maps (B, T, h, w) (non-negative; padding words ignored).
        words: per caption, its words (caption b has len(words[b]) <= T maps).
    """
    if len(images) != len(attention):
        raise ValueError(f"images/attention: expected one image batch per attention stage, got "
                         f"{len(images)} and {len(attention)}")
    B = attention[0].shape[0]
    if len(words) != B:
        raise ValueError(f"words: expected {B} captions, got {len(words)}")
    T = max(len(w) for w in words)
    row_h = cell + TEXT_HEIGHT
    fig = Image.new("RGB", ((T + 1) * (cell + 2), B * (len(attention) * row_h + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(fig)
    y = 0
    for b in range(B):
        n = len(words[b])
        for img, att in zip(images, attention):
            base = F.interpolate(img[b:b + 1].float().cpu(), size=(cell, cell), mode="bilinear", align_corners=False)
            pix = to_uint8(base)[0].astype(np.float32) / 255.0
            fig.paste(Image.fromarray((pix * 255).astype(np.uint8)), (0, y))
            maps = F.interpolate(att[b:b + 1, :n].float().cpu(), size=(cell, cell), mode="bilinear",
                                 align_corners=False)[0].clamp_min(0).numpy()
            lo, hi = float(maps.min()), float(maps.max())
            maps = (maps - lo) / max(hi - lo, 1e-12)
            for t in range(n):
                over = (1 - alpha) * pix * 0.6 + alpha * _heat(maps[t])
                x = (t + 1) * (cell + 2)
                fig.paste(Image.fromarray((np.clip(over, 0, 1) * 255).astype(np.uint8)), (x, y))
                draw.text((x + 2, y + cell + 1), words[b][t][:12], fill=(0, 0, 0))
            y += row_h
        y += 6
    return fig


def save_attention_figure(path: str, *args, **kwargs) -> str:
    fig = attention_figure(*args, **kwargs)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}.png")
    fig.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
