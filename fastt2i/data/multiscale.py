"""Images at several sizes per item, for the multi-stage generators (AttnGAN, StackGAN++, MirrorGAN).

The official ``get_imgs`` crops and flips one image at the largest size and resizes it to
each stage's size (64, 128, 256).  ``MultiScale`` does the same for any dataset here:

- the synthetic shapes are rendered at each size directly (each drawn at 4x and box-filtered,
  so every size is as sharp as it can be);
- other datasets give their largest image, and the smaller ones are antialiased bilinear
  resizes of it (as PIL's ``Resize`` in the official code).

Items: (images: tuple of (3, S, S) in [-1, 1], smallest first; caption indices (words_num,);
caption length; key; class id).  The class id is the dataset's (``class_id``: CUB's
``class_info.pickle``) or, for the synthetic shapes, one id per distinct caption, so the DAMSM
losses do not treat two renderings of the same caption as a mismatched pair.
"""
from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F

from .synthetic import SyntheticShapes, describe, render


class MultiScale(torch.utils.data.Dataset):
    def __init__(self, base, sizes):
        sizes = tuple(int(s) for s in sizes)
        if not sizes or list(sizes) != sorted(set(sizes)):
            raise ValueError(f"sizes: expected increasing image sizes, e.g. (64, 128, 256), got {sizes}")
        if getattr(base, "imsize", sizes[-1]) != sizes[-1]:
            raise ValueError(f"the dataset gives {base.imsize}x{base.imsize} images, the largest size asked is "
                             f"{sizes[-1]}; build it with imsize={sizes[-1]}")
        self.base, self.sizes = base, sizes
        self.vocab = base.vocab
        self.n_words = len(base.vocab)
        self.embeddings_num = getattr(base, "embeddings_num", 1)
        self.imsize = sizes[-1]

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):  # caption(), captions, captions_for_display(), ... of the base
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def class_of(self, index: int, caption: torch.Tensor, length: int) -> int:
        ids = getattr(self.base, "class_id", None)
        if ids is not None and not callable(ids):
            return int(ids[index])
        return zlib.crc32(caption[:length].numpy().tobytes()) & 0x7FFFFFFF  # one class per caption

    def __getitem__(self, index: int):
        if isinstance(self.base, SyntheticShapes):
            shapes, relation = self.base.scene(index)
            images = tuple(torch.from_numpy(render(shapes, s).copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)
                           for s in self.sizes)
            ids, lens = self.base.vocab.encode_batch([describe(shapes, relation)], words_num=self.base.words_num)
            caption, length, key = ids[0], int(lens[0]), f"synthetic_{self.base.split}_{index:06d}"
        else:
            img, caption, length, key = self.base[index][:4]
            images = tuple(img if s == img.shape[-1] else
                           F.interpolate(img[None], size=(s, s), mode="bilinear", align_corners=False,
                                         antialias=True)[0] for s in self.sizes)
        return images, caption, length, key, self.class_of(index, caption, length)
