"""The released char-CNN-RNN data in the StackGAN layout (written by the tests: pickles, JPEGs, boxes)."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fastt2i.data.embedding_images import EmbeddingImageDataset
from fastt2i.data.embeddings import EmbeddingFileError
from fastt2i.data.official import bbox_crop_box, resize_short_side, to_tensor
from fastt2i.models.gan_int_cls import average_captions
from helpers import make_stackgan_layout

N_TRAIN, E = 6, 10

def _emb(root, split="train"):
    with open(root / split / "char-CNN-RNN-embeddings.pickle", "rb") as f:
        return np.asarray(pickle.load(f), dtype=np.float32)


def test_stackgan_item_is_the_official_pipeline(tmp_path):
    """Eval mode (centre crop, no flip) against the official steps done by hand; train mode: one of the
    image's own embeddings, crops of the right size, reproducible per (seed, epoch, index)."""
    keys = make_stackgan_layout(tmp_path)
    ds = EmbeddingImageDataset(tmp_path, "train", "birds", imsize=64, style="stackgan", augment=False)
    assert len(ds) == N_TRAIN
    img, text = ds[2]
    raw = Image.open(tmp_path / "CUB_200_2011" / "images" / f"{keys['train'][2]}.jpg").convert("RGB")
    box = [5 + 2, 8, 50 + 4, 41]
    manual = raw.crop(bbox_crop_box(box, *raw.size)).resize((76, 76), Image.BILINEAR).crop((6, 6, 70, 70))
    assert torch.equal(img, to_tensor(manual))
    assert torch.equal(text, torch.from_numpy(_emb(tmp_path)[2, 0]))

    train = EmbeddingImageDataset(tmp_path, "train", "birds", imsize=64, style="stackgan", seed=3)
    img1, text1 = train[4]
    img2, text2 = train[4]
    assert img1.shape == (3, 64, 64) and img1.min() >= -1 and img1.max() <= 1
    assert torch.equal(img1, img2) and torch.equal(text1, text2)
    assert any(torch.equal(text1, torch.from_numpy(row)) for row in _emb(tmp_path)[4])
    drawn = set()
    for epoch in range(12):
        train.set_epoch(epoch)
        drawn.add(int(np.argmax([torch.equal(train[4][1], torch.from_numpy(r)) for r in _emb(tmp_path)[4]])))
    assert len(drawn) > 3  # the caption varies with the epoch


def test_stackgan2_stages_and_wrong_images(tmp_path):
    """StackGAN-v2: short-side resize to 76/64, crop, each smaller stage the crop scaled down; wrong
    images of another class whenever the single redraw allows it."""
    keys = make_stackgan_layout(tmp_path, classes=2)
    ds = EmbeddingImageDataset(tmp_path, "train", "birds", imsize=128, style="stackgan2", branch_num=2,
                               wrong_images=True, augment=False)
    imgs, text, wrong = ds[1]
    assert [tuple(x.shape) for x in imgs] == [(3, 64, 64), (3, 128, 128)] == [tuple(x.shape) for x in wrong]
    raw = Image.open(tmp_path / "CUB_200_2011" / "images" / f"{keys['train'][1]}.jpg").convert("RGB")
    big = resize_short_side(raw.crop(bbox_crop_box([6, 8, 52, 41], *raw.size)), 152)
    w, h = big.size
    big = big.crop(((w - 128) // 2, (h - 128) // 2, (w - 128) // 2 + 128, (h - 128) // 2 + 128))
    assert torch.equal(imgs[1], to_tensor(big))
    assert torch.equal(imgs[0], to_tensor(resize_short_side(big, 64)))
    # the official draw: uniform, redrawn once when of the same class -> same class with p = 1/4 here
    train = EmbeddingImageDataset(tmp_path, "train", "birds", imsize=64, style="stackgan2", wrong_images=True)
    same = 0
    for epoch in range(200):
        rng = np.random.default_rng([0, epoch, 0])
        same += int(train.class_ids[train.wrong_index(0, rng)] == train.class_ids[0])
    assert 25 < same < 80


def test_gan_int_cls_averages_its_draws_once(tmp_path):
    """Reed's loader: no box crop, 76 x 76 square, crop offsets 1..12; the text is the mean of
    numCaption draws of the image's embeddings; the wrong image is always of another class."""
    keys = make_stackgan_layout(tmp_path, classes=3, list_form=True)
    ds = EmbeddingImageDataset(tmp_path, "train", "birds", imsize=64, style="reed", captions_per_sample=4,
                               wrong_images=True, seed=5)
    assert ds.bbox is None
    rows = torch.from_numpy(_emb(tmp_path)[3])
    img, text, wrong = ds[3]
    rng = np.random.default_rng([5, 0, 3])
    rng.uniform(), rng.uniform(), rng.random()  # the crop and flip draws come first
    picks = rng.integers(0, E, size=4)
    assert torch.allclose(text, rows[picks].mean(0), rtol=1e-6, atol=1e-7)
    assert torch.allclose(text, average_captions(rows[picks], 4)[0])
    assert img.shape == wrong.shape == (3, 64, 64)
    for i in range(len(ds)):
        for epoch in range(5):
            w = ds.wrong_index(i, np.random.default_rng([epoch, i]))
            assert ds.class_ids[w] != ds.class_ids[i]
    offsets = {int(np.ceil(np.random.default_rng(s).uniform(1e-2, 12))) for s in range(300)}
    assert offsets == set(range(1, 13))
    # eval mode: the first numCaption rows, centred crop of the whole image scaled to 76 x 76
    ev = EmbeddingImageDataset(tmp_path, "test", "birds", imsize=64, style="reed", captions_per_sample=4,
                               augment=False)
    img, text = ev[1]
    assert torch.allclose(text, torch.from_numpy(_emb(tmp_path, "test")[1, :4]).mean(0), rtol=1e-6)
    raw = Image.open(tmp_path / "CUB_200_2011" / "images" / f"{keys['test'][1]}.jpg").convert("RGB")
    assert torch.equal(img, to_tensor(raw.resize((76, 76), Image.BILINEAR).crop((6, 6, 70, 70))))


def test_coco_layout_has_no_boxes(tmp_path):
    make_stackgan_layout(tmp_path, dataset="coco")
    ds = EmbeddingImageDataset(tmp_path, "test", "coco", imsize=64, style="stackgan")
    assert ds.bbox is None and ds[0][0].shape == (3, 64, 64)


def test_missing_and_wrong_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder"):
        EmbeddingImageDataset(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="split folder"):
        EmbeddingImageDataset(tmp_path)
    with pytest.raises(ValueError, match="'birds' or 'coco'"):
        EmbeddingImageDataset(tmp_path, dataset="flowers")
    keys = make_stackgan_layout(tmp_path)
    os.remove(tmp_path / "CUB_200_2011" / "images" / f"{keys['train'][0]}.jpg")
    ds = EmbeddingImageDataset(tmp_path, "train", "birds")
    with pytest.raises(FileNotFoundError, match="Bird_train_0"):
        ds[0]
    with open(tmp_path / "CUB_200_2011" / "bounding_boxes.txt", "w") as f:
        f.write("1 1 1 10 10\n")
    with pytest.raises(KeyError, match="no box"):
        EmbeddingImageDataset(tmp_path, "train", "birds")
    os.remove(tmp_path / "CUB_200_2011" / "bounding_boxes.txt")
    with pytest.raises(FileNotFoundError, match="bounding_boxes.txt"):
        EmbeddingImageDataset(tmp_path, "train", "birds")
    with open(tmp_path / "train" / "char-CNN-RNN-embeddings.pickle", "wb") as f:
        pickle.dump(np.zeros((N_TRAIN, E, 512), np.float32), f)
    with pytest.raises(EmbeddingFileError, match="1024-d"):
        EmbeddingImageDataset(tmp_path, "train", "coco")
    with open(tmp_path / "train" / "class_info.pickle", "wb") as f:
        pickle.dump([1] * N_TRAIN, f)
    with open(tmp_path / "train" / "char-CNN-RNN-embeddings.pickle", "wb") as f:
        pickle.dump(np.zeros((N_TRAIN, E, 1024), np.float32), f)
    with pytest.raises(ValueError, match="single class"):
        EmbeddingImageDataset(tmp_path, "train", "coco", style="reed", wrong_images=True)
