"""Images with their released char-CNN-RNN embeddings: the StackGAN data layout, as it is distributed.

Layout under ``root`` (StackGAN-Pytorch / StackGAN-v2 ``data/birds`` and ``data/coco``)::

    train/filenames.pickle, train/char-CNN-RNN-embeddings.pickle, train/class_info.pickle (and test/)
    birds: CUB_200_2011/images/<key>.jpg, CUB_200_2011/images.txt, CUB_200_2011/bounding_boxes.txt
    coco:  images/<key>.jpg  (no boxes)

One item is ``(image, embedding)`` or, for the families whose official loader draws them,
``(image, embedding, wrong_image)``; with ``branch_num > 1`` (StackGAN++) the images are lists
of the 64 / 128 / 256 versions.  Each family's own official preprocessing (``style``):

- ``"stackgan"`` (StackGAN-Pytorch ``TextDataset.get_img`` + ``main.py``): CUB images cropped to
  1.5 x the larger box side around the box centre; resized to a *square* of int(imsize * 76 / 64)
  (PIL bilinear); RandomCrop(imsize); RandomHorizontalFlip.  One of the image's embeddings,
  uniformly.  No wrong image (the StackGAN trainer pairs image i with condition i + 1).
- ``"stackgan2"`` (StackGAN-v2 ``get_imgs`` + ``main.py``): the same box crop; the short side
  resized to int(imsize * 76 / 64) (``transforms.Scale``, bilinear); RandomCrop(imsize);
  RandomHorizontalFlip; every smaller stage is that image with its short side scaled to the
  stage size.  One embedding uniformly; a wrong image drawn uniformly from the split and, if
  of the same class, drawn once more (the official code redraws once, not until it differs).
- ``"reed"`` (GAN-INT-CLS, reedscot/icml2016 ``donkey_folder_txt.lua``): no box crop; the whole
  image scaled to a 76 x 76 square; a random 64 crop at offsets ceil(U(0.01, 12)) = 1..12 as the
  Lua draws them (``image.crop`` takes 0-based corners, so offset 0 never occurs); flip with
  probability 0.5.  The text is the mean of ``captions_per_sample`` embeddings of the image,
  each drawn uniformly with replacement (``numCaption`` 4 on CUB, averaged by the script's
  ``netR`` with ``replicate = 0``); the wrong image comes from another class, always.

Differences from the official code, on purpose: the random draws come from a generator seeded
by (seed, epoch, index), so runs are reproducible with any number of workers and resume exactly;
items are indexed by image (the Lua loader draws a class, then an image of it); missing files
are errors naming the path (the official loaders fail later or not at all).
"""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from PIL import Image

from .embeddings import load_char_cnn_rnn_embeddings
from .official import bbox_crop_box, load_bboxes, resize_short_side, to_tensor

STYLES = ("stackgan", "stackgan2", "reed")
LAYOUTS = ("birds", "coco")


class EmbeddingImageDataset(torch.utils.data.Dataset):
    """The official ``TextDataset`` of StackGAN / StackGAN-v2 (and GAN-INT-CLS's loader) on the released files."""

    def __init__(self, root: str, split: str = "train", dataset: str = "birds", imsize: int = 64,
                 style: str = "stackgan", branch_num: int = 1, captions_per_sample: int = 1,
                 wrong_images: bool = False, augment: bool | None = None, seed: int = 0):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"dataset folder not found: {root}")
        if dataset not in LAYOUTS:
            raise ValueError(f"dataset: the released char-CNN-RNN embeddings come in the StackGAN 'birds' or "
                             f"'coco' layout, got {dataset!r}")
        if style not in STYLES:
            raise ValueError(f"style: expected one of {STYLES}, got {style!r}")
        if split not in ("train", "test"):
            raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
        if captions_per_sample < 1:
            raise ValueError(f"captions_per_sample: expected >= 1, got {captions_per_sample}")
        if branch_num < 1 or imsize % 2 ** (branch_num - 1):
            raise ValueError(f"branch_num {branch_num} with imsize {imsize}: expected imsize divisible by "
                             f"2 ** (branch_num - 1)")
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(f"split folder not found: {split_dir} (expected {split}/filenames.pickle and "
                                    f"{split}/char-CNN-RNN-embeddings.pickle under {root})")
        emb = load_char_cnn_rnn_embeddings(split_dir)
        self.root, self.split, self.dataset, self.style = root, split, dataset, style
        self.imsize, self.branch_num, self.seed = imsize, branch_num, seed
        self.captions_per_sample, self.wrong_images = captions_per_sample, wrong_images
        self.augment = (split == "train") if augment is None else augment
        self.embeddings, self.filenames = emb.embeddings, emb.filenames
        # no class_info.pickle: every image its own class, as the official load_class_id
        self.class_ids = emb.class_ids if emb.class_ids is not None else np.arange(len(self.filenames))
        self.epoch = 0
        self.bbox = load_bboxes(root) if dataset == "birds" and style != "reed" else None
        if self.bbox is not None:
            missing = [k for k in self.filenames if k not in self.bbox]
            if missing:
                raise KeyError(f"{len(missing)} images of {split}/filenames.pickle have no box in "
                               f"CUB_200_2011/bounding_boxes.txt (first: {missing[0]!r})")
        if wrong_images and style == "reed":
            self._by_class = {}
            for i, c in enumerate(self.class_ids.tolist()):
                self._by_class.setdefault(c, []).append(i)
            if len(self._by_class) < 2:
                raise ValueError(f"{split_dir}: GAN-INT-CLS's wrong images come from another class, but "
                                 f"class_info.pickle names a single class")
            self._classes = sorted(self._by_class)

    def __len__(self) -> int:
        return len(self.filenames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def load_size(self) -> int:
        return int(self.imsize * 76 / 64)

    # ------------------------------------------------------------------ images
    def image_path(self, key: str) -> str:
        if self.dataset == "birds":
            candidates = [os.path.join(self.root, "CUB_200_2011", "images", f"{key}.jpg")]
        else:
            candidates = [os.path.join(self.root, "images", f"{key}.jpg")]
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"image for key {key!r} not found; looked for {candidates}")

    def load_image(self, index: int, rng: np.random.Generator):
        """One image in [-1, 1] (a list of the stage sizes when branch_num > 1)."""
        key = self.filenames[index]
        img = Image.open(self.image_path(key)).convert("RGB")
        if self.bbox is not None:
            img = img.crop(bbox_crop_box(self.bbox[key], *img.size))
        size, load = self.imsize, self.load_size
        if self.style == "stackgan2":
            img = resize_short_side(img, load)
        else:
            img = img.resize((load, load), Image.BILINEAR)
        w, h = img.size
        if not self.augment:
            top, left = (h - size) // 2, (w - size) // 2
        elif self.style == "reed":
            top, left = (int(math.ceil(rng.uniform(1e-2, h - size))), int(math.ceil(rng.uniform(1e-2, w - size))))
        else:
            top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        img = img.crop((left, top, left + size, top + size))
        if self.augment and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if self.branch_num == 1:
            return to_tensor(img)
        sizes = [size // 2 ** (self.branch_num - 1 - i) for i in range(self.branch_num)]
        return [to_tensor(resize_short_side(img, s) if s != size else img) for s in sizes]

    def wrong_index(self, index: int, rng: np.random.Generator) -> int:
        if self.style == "reed":  # an image of another class
            own = int(self.class_ids[index])
            others = [c for c in self._classes if c != own]
            members = self._by_class[others[int(rng.integers(0, len(others)))]]
            return members[int(rng.integers(0, len(members)))]
        wrong = int(rng.integers(0, len(self)))
        if self.class_ids[wrong] == self.class_ids[index]:  # StackGAN-v2 redraws once
            wrong = int(rng.integers(0, len(self)))
        return wrong

    # ------------------------------------------------------------------ text
    def embedding(self, index: int, rng: np.random.Generator | None) -> torch.Tensor:
        """The item's text: one embedding of the image, or the mean of ``captions_per_sample`` draws."""
        rows = self.embeddings[index]
        if rng is None:  # deterministic (evaluation, sample grids): the first caption(s)
            picks = np.arange(self.captions_per_sample) % rows.shape[0]
        else:
            picks = rng.integers(0, rows.shape[0], size=self.captions_per_sample)
        text = torch.from_numpy(rows[picks].copy())
        if self.captions_per_sample == 1:
            return text[0]
        from fastt2i.models.gan_int_cls import average_captions  # the one averaging op (the Lua netR)

        return average_captions(text, self.captions_per_sample)[0]

    def captions_for_display(self, n: int) -> list[str]:
        """Labels of the first ``n`` images (sample grids show the embeddings of these images)."""
        return [f"{self.filenames[i]} (embedding)" for i in range(min(n, len(self)))]

    def display_embeddings(self, labels: list[str]) -> torch.Tensor:
        index = {f"{k} (embedding)": i for i, k in enumerate(self.filenames)}
        unknown = [c for c in labels if c not in index]
        if unknown:
            raise ValueError(f"sampling on released embeddings: {unknown[0]!r} is no image of {self.root}/"
                             f"{self.split} (raw captions need a char-CNN-RNN text encoder)")
        return torch.stack([self.embedding(index[c], None) for c in labels])

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        draw = rng if rng is not None else np.random.default_rng([self.seed, index])
        img = self.load_image(index, draw)
        text = self.embedding(index, rng)
        if not self.wrong_images:
            return img, text
        return img, text, self.load_image(self.wrong_index(index, draw), draw)
