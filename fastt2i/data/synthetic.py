"""A synthetic text-to-image dataset: one or two coloured shapes, captions that describe them.

Needs no download, is deterministic by (seed, index), and is learnable in minutes on a CPU,
so text conditioning can be seen to work: "a small red circle above a large blue square".
Items have the same layout as the official datasets: (image (3, S, S) in [-1, 1],
caption indices (words_num,) int64 padded with 0, caption length, key).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw

from fastt2i.text import Vocabulary

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 205, 30),
    "purple": (140, 50, 190),
}
SHAPES = ("circle", "square", "triangle", "diamond")
SIZES = {"small": 0.11, "large": 0.19}  # radius as a fraction of the image side
_EXTENT = 1.15  # the largest half-extent of any shape, in radii (the diamond)
_MARGIN = 0.02
_GAP = 0.03
RELATIONS = {"above": (0, -1), "below": (0, 1), "left": (-1, 0), "right": (1, 0)}
BACKGROUND = (128, 128, 128)  # mid-grey: 0 in [-1, 1], where an untrained G starts (no tanh saturation)
_SUPERSAMPLE = 4


def _relation_words(rel: str) -> list[str]:
    return [rel] if rel in ("above", "below") else ["to", "the", rel, "of"]


def synthetic_vocabulary() -> Vocabulary:
    words = ["a"] + list(SIZES) + list(COLOURS) + list(SHAPES) + ["above", "below", "to", "the", "left", "right", "of"]
    return Vocabulary(["<end>"] + words)


def describe(shapes: list[dict], relation: str | None) -> str:
    phrases = [f"a {s['size']} {s['colour']} {s['shape']}" for s in shapes]
    if len(phrases) == 1:
        return phrases[0]
    return " ".join([phrases[0]] + _relation_words(relation) + [phrases[1]])


def parse_caption(caption: str) -> tuple[list[dict], str | None]:
    """The inverse of :func:`describe`: ([{size, colour, shape}, ...], relation or None)."""
    words = caption.lower().split()

    def phrase(ws: list[str]) -> dict:
        if len(ws) != 4 or ws[0] != "a" or ws[1] not in SIZES or ws[2] not in COLOURS or ws[3] not in SHAPES:
            raise ValueError(f"caption {caption!r}: expected 'a <{'|'.join(SIZES)}> <{'|'.join(COLOURS)}> "
                             f"<{'|'.join(SHAPES)}>' phrases, got {' '.join(ws)!r}")
        return {"size": ws[1], "colour": ws[2], "shape": ws[3]}

    if len(words) == 4:
        return [phrase(words)], None
    for rel in RELATIONS:
        rw = _relation_words(rel)
        if words[4:4 + len(rw)] == rw and len(words) == 8 + len(rw):
            return [phrase(words[:4]), phrase(words[4 + len(rw):])], rel
    raise ValueError(f"caption {caption!r}: expected 'a SIZE COLOUR SHAPE' optionally followed by "
                     "'above' | 'below' | 'to the left of' | 'to the right of' and a second such phrase")


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, colour) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif shape == "square":
        q = r * 0.9  # equal visual area with the circle, roughly
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r * 1.05, cy + r * 0.85), (cx - r * 1.05, cy + r * 0.85)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r * 1.15), (cx + r * 1.15, cy), (cx, cy + r * 1.15), (cx - r * 1.15, cy)], fill=colour)
    else:
        raise ValueError(f"shape: expected one of {SHAPES}, got {shape!r}")


def sample_scene(rng: np.random.Generator, max_shapes: int = 2) -> tuple[list[dict], str | None]:
    """Random shapes with positions in [0, 1]^2 (centres) that realise the caption's relation."""
    n = 1 if max_shapes == 1 else int(rng.integers(1, max_shapes + 1))
    shapes = []
    for _ in range(n):
        shapes.append({
            "shape": SHAPES[rng.integers(len(SHAPES))],
            "colour": list(COLOURS)[rng.integers(len(COLOURS))],
            "size": list(SIZES)[rng.integers(len(SIZES))],
        })
    relation = None
    if n == 1:
        e = _EXTENT * SIZES[shapes[0]["size"]]
        shapes[0]["pos"] = tuple(float(v) for v in rng.uniform(e + _MARGIN, 1 - e - _MARGIN, size=2))
    else:
        if shapes[1] == shapes[0]:  # two identical shapes make "a X above a X": change the colour
            colours = [c for c in COLOURS if c != shapes[0]["colour"]]
            shapes[1]["colour"] = colours[rng.integers(len(colours))]
        relation = list(RELATIONS)[rng.integers(len(RELATIONS))]
        dx, dy = RELATIONS[relation]
        e0, e1 = _EXTENT * SIZES[shapes[0]["size"]], _EXTENT * SIZES[shapes[1]["size"]]
        # Along the relation's axis the "lower" shape (smaller x or y) comes first, and the
        # two never overlap: their centres are at least e0 + e1 + _GAP apart.
        lo, hi = (0, 1) if (dx + dy) < 0 else (1, 0)
        e_lo, e_hi = (e0, e1)[lo], (e0, e1)[hi]
        a_lo = rng.uniform(e_lo + _MARGIN, 1 - e_hi - _MARGIN - (e_lo + e_hi + _GAP))
        a_hi = rng.uniform(a_lo + e_lo + e_hi + _GAP, 1 - e_hi - _MARGIN)
        along = [0.0, 0.0]
        along[lo], along[hi] = a_lo, a_hi
        emax = max(e0, e1)
        cross0 = rng.uniform(emax + _MARGIN, 1 - emax - _MARGIN)
        cross1 = float(np.clip(cross0 + rng.uniform(-0.12, 0.12), e1 + _MARGIN, 1 - e1 - _MARGIN))
        cross = (cross0, cross1)
        for k in range(2):
            shapes[k]["pos"] = (along[k], cross[k]) if dx != 0 else (cross[k], along[k])
    return shapes, relation


def render(shapes: list[dict], imsize: int) -> np.ndarray:
    """(imsize, imsize, 3) uint8, drawn at 4x and box-filtered down (anti-aliased edges)."""
    big = imsize * _SUPERSAMPLE
    img = Image.new("RGB", (big, big), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        cx, cy = s["pos"][0] * big, s["pos"][1] * big
        _draw_shape(draw, s["shape"], cx, cy, SIZES[s["size"]] * big, COLOURS[s["colour"]])
    return np.asarray(img.resize((imsize, imsize), Image.BOX))


class SyntheticShapes(torch.utils.data.Dataset):
    """``size`` scenes; item ``i`` depends only on (seed, split, i)."""

    def __init__(self, size: int = 8192, imsize: int = 64, seed: int = 0, split: str = "train",
                 words_num: int = 18, max_shapes: int = 2):
        if size < 1:
            raise ValueError(f"size: expected >= 1, got {size}")
        if imsize < 16:
            raise ValueError(f"imsize: expected >= 16, got {imsize}")
        if split not in ("train", "test", "val"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if max_shapes not in (1, 2):
            raise ValueError(f"max_shapes: expected 1 or 2, got {max_shapes}")
        self.size, self.imsize, self.seed, self.words_num, self.max_shapes = size, imsize, seed, words_num, max_shapes
        self.split = "train" if split == "train" else "test"
        self.vocab = synthetic_vocabulary()
        self.n_words = len(self.vocab)
        self.embeddings_num = 1

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:  # items do not depend on the epoch
        pass

    def scene(self, index: int):
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} items")
        rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1, index])
        return sample_scene(rng, self.max_shapes)

    def caption(self, index: int) -> str:
        return describe(*self.scene(index))

    def __getitem__(self, index: int):
        shapes, relation = self.scene(index)
        pixels = render(shapes, self.imsize)
        img = torch.from_numpy(pixels.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
        ids, lens = self.vocab.encode_batch([describe(shapes, relation)], words_num=self.words_num)
        return img, ids[0], int(lens[0]), f"synthetic_{self.split}_{index:06d}"

    def captions_for_display(self, n: int) -> list[str]:
        return [self.caption(i) for i in range(min(n, self.size))]
