"""Caption accuracy on the synthetic shapes: every attribute of a caption read back from the
image by geometry, with no learned model.

The shapes dataset (:mod:`fastt2i.data.synthetic`) draws one or two shapes of a five-colour
palette on a mid-grey background, so an image can be read back exactly:

1. **Segmentation.**  Each pixel is compared with the palette: the rendering blends a colour
   ``c`` with the grey ``g`` by the pixel's coverage ``a`` (``p = g + a (c - g)``), so the
   pixel's colour is the palette colour whose segment ``g -> c`` passes nearest to it, and its
   coverage is its projection on that segment.  Pixels more than half-way from the grey to
   their colour are foreground.
2. **Objects** are the 4-connected foreground components (the dataset keeps shapes apart).
   Specks smaller than a third of the smallest shape are ignored; a blob larger than twice the
   largest shape is clutter (an object with no colour, shape or size).
3. **Colour**: the colour with the largest coverage mass in the component.
4. **Geometry** from the coverage-weighted moments of the component (its pixels and a one-pixel
   ring around it): the area; the centroid; the four-fold harmonic of the fourth moments
   ``c4 = (m40 + m04 - 6 m22) A / (m20 + m02)^2`` (negative for a square, positive for a
   diamond, zero for a circle); the magnitude of the three-fold harmonic of the third moments
   ``t3`` (large only for the triangle).  The **shape** is that of the nearest reference in
   ``(c4, t3)``; the references are the dataset's own renders at the same resolution, read
   by this same pipeline.  The **size** compares the area with the midpoint (in log area) of
   the small and large references of that shape.
5. **Relation** of a two-object caption from the centroids of the objects matched to its two
   phrases (the dominant axis of their offset).  **Count**: the number of objects read.

Judging a caption: the object count must match (otherwise every attribute of that image is
wrong); a two-object caption's phrases are matched to the two objects by the assignment that
agrees on more attributes (the read order on a tie).  Chance levels are the accuracies of the
same judge when the image shows a random scene of the dataset unrelated to the caption
(Monte Carlo over scene descriptions, exact attributes).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from fastt2i.data.synthetic import (
    BACKGROUND,
    COLOURS,
    RELATIONS,
    SHAPES,
    SIZES,
    _relation_words,
    parse_caption,
    render,
    sample_scene,
)

ATTRIBUTES = ("colour", "shape", "size", "relation", "count")
COLOUR_NAMES = tuple(COLOURS)
SIZE_NAMES = tuple(SIZES)
_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32) - np.array(BACKGROUND, np.float32)
_PALETTE_SQ = (_PALETTE ** 2).sum(1)
_CHUNK = 256  # images per vectorised pass (bounds the (N, H, W, 5) temporaries)


@dataclass
class SceneObject:
    """One object read from an image; colour/shape/size are None for clutter (a too large blob)."""
    colour: str | None
    shape: str | None
    size: str | None
    x: float           # centroid, as a fraction of the image width (0 = left)
    y: float           # centroid, as a fraction of the image height (0 = top)
    area: float        # coverage-weighted area, as a fraction of the image


# ----------------------------------------------------------------------------- input

def _as_pixels(images) -> np.ndarray:
    """(N, H, W, 3) float32 in 0..255 from (N, 3, H, W) floats in [-1, 1] or (N, H, W, 3) uint8."""
    if isinstance(images, torch.Tensor):
        if images.dtype == torch.uint8:
            images = images.cpu().numpy()
        else:
            if images.dim() != 4 or images.shape[1] != 3:
                raise ValueError(f"images: expected (N, 3, H, W) floats in [-1, 1] or (N, H, W, 3) uint8, "
                                 f"got a {images.dtype} tensor of shape {tuple(images.shape)}")
            x = images.detach().float().cpu().clamp(-1, 1).add(1).mul(127.5)
            return x.permute(0, 2, 3, 1).contiguous().numpy()
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3:
        raise ValueError(f"images: expected (N, 3, H, W) floats in [-1, 1] or (N, H, W, 3) uint8, "
                         f"got a {arr.dtype} array of shape {arr.shape}")
    return arr.astype(np.float32)


# ----------------------------------------------------------------------------- segmentation

def _shift(a: np.ndarray, dy: int, dx: int, fill=0) -> np.ndarray:
    """a shifted by (dy, dx) over its last two axes, ``fill`` where nothing comes in."""
    out = np.full_like(a, fill)
    H, W = a.shape[-2:]
    ys, yd = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
    xs, xd = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
    out[..., yd, xd] = a[..., ys, xs]
    return out


def _components(fg: np.ndarray) -> np.ndarray:
    """4-connected component labels of a (N, H, W) mask, per image; 0 = background.

    Max-label propagation with pointer jumping: every foreground pixel starts with its own flat
    index + 1 and takes the largest label among its neighbours and the label of the pixel its
    label came from, until nothing changes.
    """
    flat_ids = np.arange(1, fg.size + 1, dtype=np.int64).reshape(fg.shape)
    lab = np.where(fg, flat_ids, 0)
    while True:
        new = lab
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            new = np.maximum(new, _shift(lab, dy, dx))
        new = np.where(fg, new, 0)
        flat = new.reshape(-1)
        jumped = np.where(fg, flat[np.maximum(new, 1) - 1].reshape(fg.shape), 0)
        new = np.maximum(new, jumped)
        if np.array_equal(new, lab):
            return lab
        lab = new


@dataclass
class _Blobs:
    """Per-object arrays of a batch (objects of all images together)."""
    image: np.ndarray      # (K,) index of the image
    colour: np.ndarray     # (K,) palette index
    area: np.ndarray       # (K,) fraction of the image
    x: np.ndarray
    y: np.ndarray
    c4: np.ndarray
    t3: np.ndarray


def _segment(pix: np.ndarray) -> _Blobs:
    N, H, W, _ = pix.shape
    S2 = float(H * W)
    d = pix - np.array(BACKGROUND, np.float32)
    proj = np.einsum("nhwc,kc->nhwk", d, _PALETTE) / _PALETTE_SQ      # coverage along each colour
    seg = np.clip(proj, 0.0, 1.0)
    resid = ((d[..., None, :] - seg[..., None] * _PALETTE) ** 2).sum(-1)  # (N, H, W, 5)
    label = resid.argmin(-1)
    norm = np.sqrt((d ** 2).sum(-1))
    fg = norm > 0.5 * np.sqrt(_PALETTE_SQ)[label]
    cover = np.clip(np.take_along_axis(proj, label[..., None], -1)[..., 0], 0.0, 1.0)

    ids, comp = np.unique(_components(fg), return_inverse=True)
    comp = comp.reshape(fg.shape) + (0 if ids[0] == 0 else 1)   # components 1.., background 0
    ncomp = int(comp.max()) + 1
    min_px = _MIN_AREA * S2
    # the colour of a component: the palette colour with the most coverage in it (a generator's
    # blue blob with purple patches is one blue object)
    mass = np.bincount((comp * 5 + label)[fg], weights=cover[fg], minlength=ncomp * 5).reshape(ncomp, 5)
    key = np.where(fg, comp * 5 + mass.argmax(1)[comp], 0)
    ids, obj = np.unique(key, return_inverse=True)
    obj = obj.reshape(fg.shape)
    if ids[0] != 0:  # no background pixel at all: keep 0 free for the background
        obj = obj + 1
        ids = np.concatenate([[0], ids])
    colour = ids % 5
    # coverage relative to the object's own core (robust to a generator's paler colours)
    n_obj = len(ids)
    area_fg = np.bincount(obj.reshape(-1), weights=fg.reshape(-1).astype(np.float64), minlength=n_obj)
    keep = area_fg >= min_px
    keep[0] = False
    obj = np.where(keep[obj], obj, 0)
    # one-pixel ring (8-neighbourhood) of partially covered pixels around each object
    grown = obj
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                grown = np.maximum(grown, np.where(obj == 0, _shift(obj, dy, dx), 0))
    grown = np.where(obj > 0, obj, np.where(fg, 0, grown))
    proj_obj = np.take_along_axis(proj, colour[grown][..., None], -1)[..., 0]
    core_cover = np.bincount(obj[fg], weights=proj_obj[fg], minlength=n_obj)
    core_level = np.where(area_fg > 0, core_cover / np.maximum(area_fg, 1), 1.0)
    core_level = np.clip(core_level, 0.5, 1.0)
    inside = np.flatnonzero(grown.reshape(-1))          # the moments need only the objects' pixels
    o = grown.reshape(-1)[inside]
    wf = np.clip(proj_obj.reshape(-1)[inside] / core_level[o], 0.0, 1.0).astype(np.float64)
    ys = ((inside // W) % H + 0.5) / H
    xs = (inside % W + 0.5) / W
    A = np.bincount(o, weights=wf, minlength=n_obj)
    Asafe = np.maximum(A, 1e-12)
    cx = np.bincount(o, weights=wf * xs, minlength=n_obj) / Asafe
    cy = np.bincount(o, weights=wf * ys, minlength=n_obj) / Asafe
    dx, dy = xs - cx[o], ys - cy[o]

    def m(p, q):
        return np.bincount(o, weights=wf * dx ** p * dy ** q, minlength=n_obj) / S2

    m20, m02 = m(2, 0), m(0, 2)
    J = np.maximum(m20 + m02, 1e-30)
    An = A / S2
    c4 = (m(4, 0) + m(0, 4) - 6 * m(2, 2)) * An / J ** 2
    t3 = np.hypot(m(3, 0) - 3 * m(1, 2), 3 * m(2, 1) - m(0, 3)) * np.sqrt(An) / J ** 1.5
    present = np.flatnonzero(keep)
    img_of = np.zeros(n_obj, dtype=np.int64)   # every pixel of an object is in the same image
    img_of[o] = inside // (H * W)
    return _Blobs(img_of[present], colour[present], An[present], cx[present], cy[present], c4[present],
                  t3[present])


# ----------------------------------------------------------------------------- references

@functools.lru_cache(maxsize=None)
def _references(imsize: int) -> dict:
    """Features of the dataset's own renders at ``imsize``: per (shape, size) the mean (c4, t3, log area)."""
    refs = {}
    offsets = np.linspace(-0.5, 0.5, 5) / imsize
    for shape in SHAPES:
        for size in SIZES:
            scenes = [[{"shape": shape, "size": size, "colour": colour, "pos": (0.5 + ox, 0.5 + oy)}]
                      for colour in ("red", "purple") for ox in offsets for oy in offsets[::2]]
            pix = np.stack([render(s, imsize) for s in scenes]).astype(np.float32)
            b = _segment(pix)
            refs[(shape, size)] = (float(b.c4.mean()), float(b.t3.mean()), float(np.log(b.area).mean()))
    return refs


def _shape_area_fraction(shape: str, size: str) -> float:
    """Exact area of a shape as a fraction of the image (the geometry of data.synthetic._draw_shape)."""
    r = SIZES[size]
    return {"circle": np.pi * r * r, "square": (1.8 * r) ** 2, "triangle": 0.5 * 2.1 * r * 1.85 * r,
            "diamond": 2 * (1.15 * r) ** 2}[shape]


# specks below a third of the smallest shape are ignored; blobs above twice the largest are clutter
_MIN_AREA = min(_shape_area_fraction(s, z) for s in SHAPES for z in SIZES) / 3
_MAX_AREA = 2 * max(_shape_area_fraction(s, z) for s in SHAPES for z in SIZES)


def _classify(b: _Blobs, imsize: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(shape index, size index, clutter flag) per object."""
    refs = _references(imsize)
    keys = list(refs)
    ref = np.array([refs[k][:2] for k in keys])                       # (8, 2)
    feat = np.stack([b.c4, b.t3], 1)                                   # (K, 2)
    nearest = ((feat[:, None, :] - ref[None]) ** 2).sum(-1).argmin(1)
    shape = np.array([SHAPES.index(keys[i][0]) for i in nearest], dtype=np.int64)
    logs = np.array([[refs[(s, z)][2] for z in SIZE_NAMES] for s in SHAPES])  # (4, 2): small, large
    threshold = logs[shape].mean(1)
    size = (np.log(np.maximum(b.area, 1e-12)) > threshold).astype(np.int64)  # 0 small, 1 large
    clutter = b.area > _MAX_AREA
    return shape, size, clutter


# ----------------------------------------------------------------------------- reading

def read_scenes(images) -> list[list[SceneObject]]:
    """The objects of each image, top to bottom (by centroid).

    ``images``: (N, 3, H, W) floats in [-1, 1] (as the dataset and the generators give them)
    or (N, H, W, 3) uint8.
    """
    pix = _as_pixels(images)
    N, H, W, _ = pix.shape
    if H != W or H < 16:
        raise ValueError(f"images: expected square images of side >= 16, got {H}x{W}")
    scenes: list[list[SceneObject]] = [[] for _ in range(N)]
    for start in range(0, N, _CHUNK):
        b = _segment(pix[start:start + _CHUNK])
        shape, size, clutter = _classify(b, H)
        for k in range(len(b.image)):
            bad = bool(clutter[k])
            scenes[start + int(b.image[k])].append(SceneObject(
                colour=None if bad else COLOUR_NAMES[b.colour[k]],
                shape=None if bad else SHAPES[shape[k]],
                size=None if bad else SIZE_NAMES[size[k]],
                x=float(b.x[k]), y=float(b.y[k]), area=float(b.area[k])))
    for objs in scenes:
        objs.sort(key=lambda o: (o.y, o.x))
    return scenes


def relation_of(a: SceneObject, b: SceneObject) -> str:
    """Where ``a`` is relative to ``b``: the dominant axis of their centroid offset."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) > abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def judge(objects: list[SceneObject], caption: str) -> dict:
    """Per attribute: True / False, or None where it does not apply (relation of one object)."""
    return _judge(objects, *parse_caption(caption))


def _judge(objects: list[SceneObject], phrases: list[dict], relation: str | None) -> dict:
    n = len(phrases)
    res = {"count": len(objects) == n}
    if not res["count"]:
        res.update(colour=False, shape=False, size=False, relation=False if n == 2 else None)
    else:
        order = list(range(n))
        if n == 2:
            def agree(perm):
                return sum(getattr(objects[perm[i]], a) == phrases[i][a]
                           for i in range(2) for a in ("colour", "shape", "size"))
            if agree([1, 0]) > agree([0, 1]):
                order = [1, 0]
        for a in ("colour", "shape", "size"):
            res[a] = all(getattr(objects[order[i]], a) == phrases[i][a] for i in range(n))
        res["relation"] = relation_of(objects[order[0]], objects[order[1]]) == relation if n == 2 else None
    res["all"] = all(v for k, v in res.items() if v is not None)
    return res


# ----------------------------------------------------------------------------- chance

def _caption_pattern(caption: str) -> tuple:
    """What the chance level of a caption depends on: the number of phrases, the relation (the
    read order breaks ties in the matching) and which attributes its two phrases share (every
    value of an attribute is equally likely in the dataset)."""
    phrases, relation = parse_caption(caption)
    if len(phrases) == 1:
        return (1,)
    return (2, relation) + tuple(phrases[0][a] == phrases[1][a] for a in ("colour", "shape", "size"))


def _representative(pattern: tuple) -> str:
    """A caption with this pattern."""
    if pattern == (1,):
        return "a small red circle"
    relation, same_colour, same_shape, same_size = pattern[1:]
    second = (f"a {'small' if same_size else 'large'} {'red' if same_colour else 'blue'} "
              f"{'circle' if same_shape else 'square'}")
    return " ".join(["a small red circle"] + _relation_words(relation) + [second])


@functools.lru_cache(maxsize=1)
def _random_scenes(samples: int = 4000, seed: int = 1234) -> list[list[SceneObject]]:
    """Scenes of the dataset's distribution as a perfect reader would read them."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(samples):
        shapes, _rel = sample_scene(rng)
        scenes.append(sorted((SceneObject(s["colour"], s["shape"], s["size"], s["pos"][0], s["pos"][1], 0.0)
                              for s in shapes), key=lambda o: (o.y, o.x)))
    return scenes


@functools.lru_cache(maxsize=None)
def _chance(pattern: tuple) -> dict:
    """Accuracy of the judge for a caption of this pattern against random scenes of the dataset."""
    phrases, relation = parse_caption(_representative(pattern))
    totals: dict[str, list[float]] = {}
    for objs in _random_scenes():
        for k, v in _judge(objs, phrases, relation).items():
            if v is not None:
                totals.setdefault(k, []).append(float(v))
    return {k: float(np.mean(v)) for k, v in totals.items()}


# ----------------------------------------------------------------------------- accuracy

@dataclass
class CaptionAccuracy:
    """Per-attribute accuracy over a set of (image, caption) pairs, with the chance level of each.

    ``accuracy[a]`` / ``chance[a]`` / ``n[a]`` for a in ATTRIBUTES + ("all",); an attribute
    that applies to no pair (relation over one-object captions) has accuracy nan and n 0.
    ``per_image[a]``: an array of 1.0 / 0.0 / nan (not applicable) per pair.
    """
    accuracy: dict
    chance: dict
    n: dict
    per_image: dict = field(repr=False)

    def table(self, title: str = "") -> str:
        rows = [f"| {title or 'attribute'} | accuracy | chance | images |", "|---|---|---|---|"]
        for a in ATTRIBUTES + ("all",):
            if self.n[a]:
                rows.append(f"| {a} | {100 * self.accuracy[a]:.1f} % | {100 * self.chance[a]:.1f} % | {self.n[a]} |")
        return "\n".join(rows)


def caption_accuracy(images, captions: list[str]) -> CaptionAccuracy:
    """How well ``images`` show their ``captions`` (one caption per image), attribute by attribute.

    Returns per-attribute accuracy (colour, shape, size, relation, count: see the module's
    docstring for how each is read and judged), the fraction of images with every attribute
    right ("all"), and the chance level of each: the accuracy the same judge gives to random
    scenes of the dataset that are unrelated to the captions.
    """
    return scene_accuracy(read_scenes(images), captions)


def scene_accuracy(scenes: list[list[SceneObject]], captions: list[str]) -> CaptionAccuracy:
    """:func:`caption_accuracy` of scenes already read by :func:`read_scenes`."""
    captions = list(captions)
    if len(captions) != len(scenes):
        raise ValueError(f"captions: expected one per image ({len(scenes)}), got {len(captions)}")
    keys = ATTRIBUTES + ("all",)
    per = {a: np.full(len(captions), np.nan) for a in keys}
    chance_sum = {a: 0.0 for a in keys}
    for i, (objs, cap) in enumerate(zip(scenes, captions)):
        phrases, relation = parse_caption(cap)
        res = _judge(objs, phrases, relation)
        ch = _chance(_caption_pattern(cap))
        for a in keys:
            if res.get(a) is not None:
                per[a][i] = float(res[a])
                chance_sum[a] += ch[a]
    n = {a: int(np.isfinite(per[a]).sum()) for a in keys}
    acc = {a: float(np.nanmean(per[a])) if n[a] else float("nan") for a in keys}
    chance = {a: chance_sum[a] / n[a] if n[a] else float("nan") for a in keys}
    return CaptionAccuracy(acc, chance, n, per)


# ----------------------------------------------------------------------------- periodic evaluation

def split_by_objects(captions: list[str]) -> tuple[list[int], list[int]]:
    """Indices of the one-object and of the two-object captions."""
    ones, twos = [], []
    for i, c in enumerate(captions):
        (ones if len(parse_caption(c)[0]) == 1 else twos).append(i)
    return ones, twos


class CaptionAccuracyEvaluator:
    """An evaluator for a trainer of the synthetic shapes: ``fn(trainer) -> {metric: float}``.

    Generates ``noises`` images per caption with ``trainer.sample(captions, generator)`` (the
    same noise at every call: the generator is seeded with ``seed``), reads them back and
    returns the accuracies of the one-object captions (``one/colour``, ``one/shape``,
    ``one/size``, ``one/all``) and of the two-object captions (``two/colour``: both colours
    right, ``two/shape``, ``two/size``, ``two/relation``, ``two/count``, ``two/all``).
    The last images, scenes and :class:`CaptionAccuracy` per group stay in ``self.last``.
    """

    ONE = ("colour", "shape", "size", "all")
    TWO = ("colour", "shape", "size", "relation", "count", "all")

    def __init__(self, captions: list[str], noises: int = 1, seed: int = 0, batch_size: int = 64):
        if noises < 1:
            raise ValueError(f"noises: expected >= 1, got {noises}")
        self.captions = [c for c in captions for _ in range(noises)]
        for c in set(captions):
            parse_caption(c)  # a caption the reader cannot judge is an error now, not at the first evaluation
        self.noises, self.seed, self.batch_size = noises, seed, batch_size
        self.groups = dict(zip(("one", "two"), split_by_objects(self.captions)))
        self.last: dict = {}

    def images(self, trainer) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.cat([trainer.sample(self.captions[i:i + self.batch_size], g).float().cpu()
                          for i in range(0, len(self.captions), self.batch_size)])

    def results(self, images: torch.Tensor) -> dict:
        """{"one": CaptionAccuracy, "two": CaptionAccuracy} of images of ``self.captions``."""
        scenes = read_scenes(images)
        return {name: scene_accuracy([scenes[i] for i in idx], [self.captions[i] for i in idx])
                for name, idx in self.groups.items() if idx}

    def __call__(self, trainer) -> dict:
        images = self.images(trainer)
        res = self.results(images)
        self.last = {"images": images, "results": res}
        out = {}
        for name, keys in (("one", self.ONE), ("two", self.TWO)):
            if name in res:
                out.update({f"{name}/{k}": res[name].accuracy[k] for k in keys})
        return out
