"""Official dataset layouts (built on the fly) and the synthetic shapes dataset."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fastt2i.data import (
    SyntheticShapes,
    TextImageDataset,
    bbox_crop_box,
    build_dataset,
    parse_data_spec,
    synthetic_vocabulary,
)
from fastt2i.data.official import resize_short_side

CAPTIONS = [
    "this bird has a red crown and white wings",
    "a small bird with a short beak",
    "the bird is blue with black stripes",
]


def _image(path, w, h, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(path, quality=95)


def make_layout(root, dataset="birds", per_image=3, n_train=3, n_test=2):
    """A tiny dataset in the official layout: filenames.pickle, text/, images and (birds) boxes."""
    keys = {"train": [f"001.Class/img_{i}" for i in range(n_train)],
            "test": [f"002.Class/img_{i}" for i in range(n_test)]}
    if dataset == "coco":
        keys = {"train": [f"COCO_train2014_{i:012d}" for i in range(n_train)],
                "test": [f"COCO_val2014_{i:012d}" for i in range(n_test)]}
    for split, names in keys.items():
        os.makedirs(root / split, exist_ok=True)
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(names, f, protocol=2)
        for i, key in enumerate(names):
            text = root / "text" / f"{key}.txt"
            os.makedirs(text.parent, exist_ok=True)
            lines = [f"{CAPTIONS[(i + j) % len(CAPTIONS)]} number {split} {i} {j}" for j in range(per_image)]
            text.write_text("\n".join(lines[:1] + [""] + lines[1:]) + "\n")  # an empty line is skipped
    all_keys = keys["train"] + keys["test"]
    sizes = {}
    for i, key in enumerate(all_keys):
        w, h = 120 + 7 * i, 90 + 5 * i
        sizes[key] = (w, h)
        if dataset == "birds":
            path = root / "CUB_200_2011" / "images" / f"{key}.jpg"
        elif dataset == "flowers":
            path = root / "oxford-102-flowers" / "images" / f"{key}.jpg"
        else:
            sub = "train2014" if key in keys["train"] else "val2014"
            path = root / "images" / sub / f"{key}.jpg"
        _image(path, w, h, i)
    if dataset == "birds":
        with open(root / "CUB_200_2011" / "images.txt", "w") as f:
            f.writelines(f"{i + 1} {key}.jpg\n" for i, key in enumerate(all_keys))
        with open(root / "CUB_200_2011" / "bounding_boxes.txt", "w") as f:
            f.writelines(f"{i + 1} {10.0 + i} {12.0} {60.0 + i} {40.0}\n" for i, key in enumerate(all_keys))
    return keys, sizes


def test_bbox_crop_is_the_official_one():
    # r = int(max(60, 40) * 0.75) = 45, centre (40, 32): x in [0, 85], y in [0, 77]
    assert bbox_crop_box([10, 12, 60, 40], 120, 90) == (0, 0, 85, 77)
    assert bbox_crop_box([50, 40, 20, 10], 200, 200) == (45, 30, 75, 60)


def test_resize_short_side_like_torchvision():
    img = Image.new("RGB", (120, 90))
    assert resize_short_side(img, 76).size == (101, 76)
    assert resize_short_side(Image.new("RGB", (90, 120)), 76).size == (76, 101)


def test_birds_layout(tmp_path):
    keys, _ = make_layout(tmp_path, "birds")
    ds = TextImageDataset(tmp_path, "train", imsize=64, words_num=18, captions_per_image=3)
    assert ds.dataset == "birds" and len(ds) == 3
    assert os.path.isfile(tmp_path / "captions_DAMSM.pickle")  # built and cached as the official code
    img, caps, cap_len, key = ds[1]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert -1.0 <= img.min() and img.max() <= 1.0
    assert caps.shape == (18,) and caps.dtype == torch.int64
    assert 0 < cap_len <= 18 and torch.all(caps[cap_len:] == 0) and torch.all(caps[:cap_len] > 0)
    assert key == keys["train"][1]
    # the caption comes from this image's captions
    text = ds.vocab.decode(caps[:cap_len].tolist())
    assert "number train 1" in text
    # deterministic for a (seed, epoch, index), different across epochs
    again = TextImageDataset(tmp_path, "train", imsize=64, captions_per_image=3)
    torch.testing.assert_close(again[1][0], img)
    test = TextImageDataset(tmp_path, "test", imsize=64, captions_per_image=3)
    assert len(test) == 2 and not test.augment
    # the second construction read the cached pickle and got the same vocabulary
    assert test.vocab.words == ds.vocab.words


def test_eval_crop_matches_manual_pipeline(tmp_path):
    keys, sizes = make_layout(tmp_path, "birds")
    ds = TextImageDataset(tmp_path, "test", imsize=32, captions_per_image=3)
    key = keys["test"][0]
    img = Image.open(tmp_path / "CUB_200_2011" / "images" / f"{key}.jpg").convert("RGB")
    idx = 3  # the first test key is the 4th line of images.txt
    bbox = [int(10.0 + idx), 12, int(60.0 + idx), 40]
    img = img.crop(bbox_crop_box(bbox, *img.size))
    img = resize_short_side(img, int(32 * 76 / 64))
    w, h = img.size
    top, left = (h - 32) // 2, (w - 32) // 2
    arr = np.asarray(img.crop((left, top, left + 32, top + 32)), dtype=np.float32)
    expected = torch.from_numpy(arr).permute(2, 0, 1) / 255 * 2 - 1
    torch.testing.assert_close(ds[0][0], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dataset", ["flowers", "coco"])
def test_flowers_and_coco_layouts(tmp_path, dataset):
    keys, _ = make_layout(tmp_path, dataset, per_image=5 if dataset == "coco" else 3)
    per = None if dataset == "coco" else 3  # coco's default is 5 captions per image
    ds = build_dataset(f"{dataset}:{tmp_path}", "train", imsize=32) if per is None else \
        TextImageDataset(tmp_path, "train", dataset=dataset, imsize=32, captions_per_image=per)
    assert ds.dataset == dataset and ds.embeddings_num == (5 if dataset == "coco" else 3)
    img, caps, cap_len, key = ds[2]
    assert img.shape == (3, 32, 32) and key == keys["train"][2]
    test = TextImageDataset(tmp_path, "test", dataset=dataset, imsize=32, captions_per_image=ds.embeddings_num)
    assert test[1][3] == keys["test"][1]


def test_official_pickle_is_used_when_present(tmp_path):
    make_layout(tmp_path, "birds")
    ixtoword = {0: "<end>", 1: "only", 2: "words"}
    train = [[1, 2]] * 9
    test = [[2]] * 6
    with open(tmp_path / "captions.pickle", "wb") as f:
        pickle.dump([train, test, ixtoword, {w: i for i, w in ixtoword.items()}], f, protocol=2)
    ds = TextImageDataset(tmp_path, "train", imsize=32, captions_per_image=3)
    assert ds.vocab.words == ["<end>", "only", "words"]
    assert ds[0][1][:2].tolist() == [1, 2]


def test_bad_paths_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        TextImageDataset(tmp_path / "nope")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="train filenames not found"):
        TextImageDataset(tmp_path / "empty")
    root = tmp_path / "birds"
    keys, _ = make_layout(root, "birds")
    os.remove(root / "CUB_200_2011" / "images" / f"{keys['train'][0]}.jpg")
    ds = TextImageDataset(root, "train", imsize=32, captions_per_image=3)
    with pytest.raises(FileNotFoundError, match="image for key"):
        ds[0]
    with pytest.raises(ValueError, match="usable captions, expected 4"):
        TextImageDataset(make_layout(tmp_path / "b2", "flowers")[0] and tmp_path / "b2", "train",
                         dataset="flowers", captions_per_image=4)
    with pytest.raises(ValueError, match="data"):
        parse_data_spec("imagenet-but-not-a-folder")
    with pytest.raises(ValueError, match="needs a folder"):
        build_dataset("birds:")


def test_synthetic_is_deterministic_and_described():
    a = SyntheticShapes(size=32, imsize=64, seed=3)
    b = SyntheticShapes(size=32, imsize=64, seed=3)
    c = SyntheticShapes(size=32, imsize=64, seed=4)
    for i in (0, 5, 31):
        ia, ca, la, ka = a[i]
        ib, cb, lb, kb = b[i]
        assert torch.equal(ia, ib) and torch.equal(ca, cb) and la == lb and ka == kb
    assert any(not torch.equal(a[i][0], c[i][0]) for i in range(8))
    test = SyntheticShapes(size=32, imsize=64, seed=3, split="test")
    assert any(a.caption(i) != test.caption(i) for i in range(8))
    img, caps, length, key = a[0]
    assert img.shape == (3, 64, 64) and -1 <= img.min() and img.max() <= 1
    assert a.vocab.decode(caps[:length].tolist()) == a.caption(0)
    assert a.vocab.words == synthetic_vocabulary().words
    with pytest.raises(IndexError):
        a.scene(32)
    with pytest.raises(ValueError, match="imsize"):
        SyntheticShapes(imsize=8)
    one = build_dataset("synthetic:40:1", imsize=32)
    assert len(one) == 40 and one.max_shapes == 1 and all(len(one.caption(i).split()) == 4 for i in range(40))
    with pytest.raises(ValueError, match="integers"):
        build_dataset("synthetic:many")


def test_synthetic_pictures_match_captions():
    """The described colour is where the caption says: 'X above Y' puts X's colour higher up."""
    from fastt2i.data.synthetic import COLOURS

    ds = SyntheticShapes(size=200, imsize=64, seed=0)
    checked = 0
    for i in range(200):
        shapes, relation = ds.scene(i)
        if relation is None or shapes[0]["colour"] == shapes[1]["colour"]:
            continue
        pix = ds[i][0].permute(1, 2, 0).add(1).mul(127.5).numpy()
        centres = []
        for s in shapes:
            mask = np.abs(pix - np.array(COLOURS[s["colour"]])).sum(-1) < 30
            ys, xs = np.nonzero(mask)
            assert len(ys) > 10, (ds.caption(i), s)
            centres.append((xs.mean(), ys.mean()))
        (x0, y0), (x1, y1) = centres
        ok = {"above": y0 < y1, "below": y0 > y1, "left": x0 < x1, "right": x0 > x1}[relation]
        assert ok, ds.caption(i)
        checked += 1
    assert checked > 50
    # one-shape captions and two-shape captions both occur
    captions = [ds.caption(i) for i in range(50)]
    assert any(" of " in c or "above" in c or "below" in c for c in captions)
    assert any(len(c.split()) == 4 for c in captions)
