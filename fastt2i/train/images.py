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


def _font(size: int):
    from PIL import ImageFont

    try:  # Pillow >= 10.1 scales its built-in font; older ones have a fixed bitmap font
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def _wrap(draw, text: str, font, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and draw.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    return lines + ([line] if line else [])


def save_captioned_grid(images: torch.Tensor, captions: list[str], path: str | os.PathLike, ncol: int = 4,
                        cell: int = 192, notes: list[str] | None = None, font_size: int = 13) -> str:
    """A PNG grid with each image enlarged to ``cell`` pixels (nearest) and its caption printed under
    it (wrapped), optionally followed by a grey note line (e.g. what was read back from the image)."""
    from PIL import ImageDraw

    if len(captions) != images.shape[0]:
        raise ValueError(f"captions: expected one per image ({images.shape[0]}), got {len(captions)}")
    if notes is not None and len(notes) != len(captions):
        raise ValueError(f"notes: expected one per image ({len(captions)}), got {len(notes)}")
    pix = to_uint8(images)
    font = _font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, line_h = 6, font_size + 3
    texts = [_wrap(measure, c, font, cell) for c in captions]
    note_lines = [_wrap(measure, n, font, cell) for n in notes] if notes is not None else [[] for _ in captions]
    text_h = max(len(t) + len(n) for t, n in zip(texts, note_lines)) * line_h + pad
    n = len(captions)
    ncol = max(1, min(ncol, n))
    rows = math.ceil(n / ncol)
    W, H = ncol * (cell + pad) + pad, rows * (cell + text_h + pad) + pad
    canvas = Image.new("RGB", (W, H), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for i in range(n):
        r, c = divmod(i, ncol)
        x, y = pad + c * (cell + pad), pad + r * (cell + text_h + pad)
        img = Image.fromarray(pix[i] if pix.shape[3] == 3 else pix[i, ..., 0]).resize((cell, cell), Image.NEAREST)
        canvas.paste(img, (x, y))
        ty = y + cell + 2
        for line in texts[i]:
            draw.text((x, ty), line, fill=(0, 0, 0), font=font)
            ty += line_h
        for line in note_lines[i]:
            draw.text((x, ty), line, fill=(110, 110, 110), font=font)
            ty += line_h
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}.png")
    canvas.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
