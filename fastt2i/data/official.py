"""The official birds (CUB-200-2011), flowers (Oxford-102) and COCO layouts of AttnGAN / DF-GAN.

Layout under ``root`` (as in the official ``data/`` folders):

    captions_DAMSM.pickle or captions.pickle   [train_captions, test_captions, ixtoword, wordtoix]
    train/filenames.pickle, test/filenames.pickle   image keys (optional class_info.pickle)
    text/<key>.txt                              captions, one a line (used when no pickle exists)
    birds:   CUB_200_2011/images/<key>.jpg, CUB_200_2011/images.txt, CUB_200_2011/bounding_boxes.txt
    flowers: oxford-102-flowers/images/<key>.jpg
    coco:    images/train2014/<key>.jpg and images/val2014/<key>.jpg (or .../jpg/<key>.jpg)
    other:   images/<key>.jpg

Preprocessing as the official ``get_imgs`` + ``prepare_dataset``: birds are cropped to
1.5 x max(bbox w, h) around the box centre; then Resize(int(imsize * 76 / 64)) of the short
side (bilinear), RandomCrop(imsize), RandomHorizontalFlip, to [-1, 1].  With
``augment=False`` the crop is centred and there is no flip (deterministic evaluation).

Differences from the official code, on purpose: the random choices (caption of the image,
word subset of a long caption, crop, flip) come from a generator seeded by
(seed, epoch, index) instead of the global NumPy state, so runs are reproducible with any
number of workers and resume exactly; missing files raise errors instead of giving an
empty dataset; an image with fewer captions than captions_per_image is an error (the
official code prints and goes on with misaligned captions).
"""
from __future__ import annotations

import os
import pickle

import numpy as np
import torch
from PIL import Image

from fastt2i.text import Vocabulary, load_captions_pickle, save_captions_pickle, tokenize, truncate_caption

DATASETS = ("birds", "flowers", "coco", "generic")
CAPTIONS_PER_IMAGE = {"birds": 10, "flowers": 10, "coco": 5, "generic": 10}
PICKLE_NAMES = ("captions_DAMSM.pickle", "captions.pickle")


def _require(path: str, what: str) -> str:
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def guess_dataset(root: str) -> str:
    if os.path.isdir(os.path.join(root, "CUB_200_2011")):
        return "birds"
    if os.path.isdir(os.path.join(root, "oxford-102-flowers")):
        return "flowers"
    if os.path.isdir(os.path.join(root, "images", "train2014")) or os.path.isdir(os.path.join(root, "images", "val2014")):
        return "coco"
    return "generic"


def load_filenames(root: str, split: str) -> list[str]:
    path = _require(os.path.join(root, split, "filenames.pickle"), f"{split} filenames")
    with open(path, "rb") as f:
        try:
            names = pickle.load(f)
        except UnicodeDecodeError:
            f.seek(0)
            names = pickle.load(f, encoding="latin1")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def load_bboxes(root: str) -> dict[str, list[int]]:
    """CUB ``bounding_boxes.txt`` ([x-left, y-top, width, height]) keyed by image path minus '.jpg'."""
    cub = os.path.join(root, "CUB_200_2011")
    with open(_require(os.path.join(cub, "images.txt"), "CUB images.txt")) as f:
        names = {}
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                names[parts[0]] = parts[1]
    out = {}
    with open(_require(os.path.join(cub, "bounding_boxes.txt"), "CUB bounding_boxes.txt")) as f:
        for line in f:
            parts = line.split()
            if len(parts) < 5:
                continue
            if parts[0] not in names:
                raise ValueError(f"bounding_boxes.txt: image id {parts[0]} is not in images.txt")
            # the official code reads them with pandas and .astype(int): truncation
            out[names[parts[0]][:-4]] = [int(float(v)) for v in parts[1:5]]
    return out


def bbox_crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    """The official crop around a CUB box: square of side 1.5 x max(w, h), clipped to the image."""
    r = int(max(bbox[2], bbox[3]) * 0.75)
    cx = int((2 * bbox[0] + bbox[2]) / 2)
    cy = int((2 * bbox[1] + bbox[3]) / 2)
    y1, y2 = max(0, cy - r), min(height, cy + r)
    x1, x2 = max(0, cx - r), min(width, cx + r)
    return x1, y1, x2, y2


def load_captions(root: str, filenames: list[str], per_image: int) -> list[list[str]]:
    """Tokenised captions, ``per_image`` per file, as the official ``load_captions``."""
    out = []
    for name in filenames:
        path = _require(os.path.join(root, "text", f"{name}.txt"), "caption file")
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        count = 0
        for line in lines:
            if not line:
                continue
            tokens = tokenize(line)
            if not tokens:  # the official code skips captions with no token
                continue
            out.append(tokens)
            count += 1
            if count == per_image:
                break
        if count < per_image:
            raise ValueError(f"{path}: {count} usable captions, expected {per_image} (captions_per_image)")
    return out


def load_text_data(root: str, per_image: int, build: bool = True):
    """(train_names, test_names, train_captions, test_captions, vocab) as index lists."""
    train_names, test_names = load_filenames(root, "train"), load_filenames(root, "test")
    for name in PICKLE_NAMES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            train_caps, test_caps, vocab = load_captions_pickle(path)
            break
    else:
        if not build:
            raise FileNotFoundError(f"no {' or '.join(PICKLE_NAMES)} under {root}")
        train_tok = load_captions(root, train_names, per_image)
        test_tok = load_captions(root, test_names, per_image)
        vocab = Vocabulary.build(train_tok + test_tok)
        train_caps = [vocab.encode(t) for t in train_tok]
        test_caps = [vocab.encode(t) for t in test_tok]
        try:  # cached as the official code does; a read-only dataset folder is fine
            save_captions_pickle(os.path.join(root, PICKLE_NAMES[0]), train_caps, test_caps, vocab)
        except OSError:
            pass
    for split, names, caps in (("train", train_names, train_caps), ("test", test_names, test_caps)):
        if len(caps) != len(names) * per_image:
            raise ValueError(f"{root}: {len(caps)} {split} captions for {len(names)} images, expected "
                             f"{per_image} per image (captions_per_image={per_image})")
    return train_names, test_names, train_caps, test_caps, vocab


def resize_short_side(img: Image.Image, size: int) -> Image.Image:
    """torchvision ``Resize(int)``: the short side becomes ``size``, the long one int(size*long/short)."""
    w, h = img.size
    if w <= h:
        nw, nh = size, int(size * h / w)
    else:
        nw, nh = int(size * w / h), size
    return img.resize((nw, nh), Image.BILINEAR)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """ToTensor + Normalize((0.5,)*3, (0.5,)*3): (3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0).sub_(0.5).div_(0.5)


class TextImageDataset(torch.utils.data.Dataset):
    """The official ``TextImgDataset``; items are (image, caption (words_num,), length, key)."""

    def __init__(self, root: str, split: str = "train", dataset: str | None = None, imsize: int = 256,
                 words_num: int = 18, captions_per_image: int | None = None, augment: bool | None = None,
                 seed: int = 0):
        root = os.fspath(root)
        if not os.path.isdir(root):
            raise FileNotFoundError(f"dataset folder not found: {root}")
        if split not in ("train", "test", "val"):
            raise ValueError(f"split: expected 'train', 'test' or 'val', got {split!r}")
        self.split = "train" if split == "train" else "test"  # the official 'val' reads test/
        self.dataset = dataset or guess_dataset(root)
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        self.root, self.imsize, self.words_num, self.seed = root, imsize, words_num, seed
        self.embeddings_num = captions_per_image or CAPTIONS_PER_IMAGE[self.dataset]
        self.augment = (self.split == "train") if augment is None else augment
        self.epoch = 0
        train_names, test_names, train_caps, test_caps, self.vocab = load_text_data(root, self.embeddings_num)
        self.filenames = train_names if self.split == "train" else test_names
        self.captions = train_caps if self.split == "train" else test_caps
        if not self.filenames:
            raise ValueError(f"{root}/{self.split}/filenames.pickle lists no image")
        self.n_words = len(self.vocab)
        self.bbox = load_bboxes(root) if self.dataset == "birds" else None
        class_path = os.path.join(root, split, "class_info.pickle")
        if os.path.isfile(class_path):
            with open(class_path, "rb") as f:
                self.class_id = list(pickle.load(f, encoding="bytes"))
        else:
            self.class_id = list(range(len(self.filenames)))

    def __len__(self) -> int:
        return len(self.filenames)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def image_path(self, key: str) -> str:
        r = self.root
        if self.dataset == "birds":
            candidates = [os.path.join(r, "CUB_200_2011", "images", f"{key}.jpg")]
        elif self.dataset == "flowers":
            candidates = [os.path.join(r, "oxford-102-flowers", "images", f"{key}.jpg")]
        elif self.dataset == "coco":
            sub = "train2014" if self.split == "train" else "val2014"
            candidates = [os.path.join(r, "images", sub, f"{key}.jpg"), os.path.join(r, "images", sub, "jpg", f"{key}.jpg")]
        else:
            candidates = [os.path.join(r, "images", f"{key}.jpg")]
        for path in candidates:
            if os.path.isfile(path):
                return path
        raise FileNotFoundError(f"image for key {key!r} not found; looked for {candidates}")

    def load_image(self, key: str, rng: np.random.Generator) -> torch.Tensor:
        img = Image.open(self.image_path(key)).convert("RGB")
        if self.bbox is not None:
            if key not in self.bbox:
                raise KeyError(f"no bounding box for {key!r} in CUB_200_2011/bounding_boxes.txt")
            img = img.crop(bbox_crop_box(self.bbox[key], *img.size))
        img = resize_short_side(img, int(self.imsize * 76 / 64))
        w, h = img.size
        if self.augment:
            top, left = int(rng.integers(0, h - self.imsize + 1)), int(rng.integers(0, w - self.imsize + 1))
        else:
            top, left = (h - self.imsize) // 2, (w - self.imsize) // 2
        img = img.crop((left, top, left + self.imsize, top + self.imsize))
        if self.augment and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return to_tensor(img)

    def get_caption(self, sent_ix: int, rng: np.random.Generator | None) -> tuple[torch.Tensor, int]:
        seq = truncate_caption(self.captions[sent_ix], self.words_num, rng)
        if not seq:
            raise ValueError(f"caption {sent_ix} of {self.root} ({self.split}) has no word")
        out = torch.zeros(self.words_num, dtype=torch.int64)
        out[: len(seq)] = torch.tensor(seq, dtype=torch.int64)
        return out, len(seq)

    def __getitem__(self, index: int):
        key = self.filenames[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        img = self.load_image(key, rng)
        sent = int(rng.integers(0, self.embeddings_num)) if self.augment else 0
        caps, cap_len = self.get_caption(index * self.embeddings_num + sent, rng)
        return img, caps, cap_len, key
