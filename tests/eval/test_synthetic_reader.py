"""The synthetic caption reader (fastt2i.eval.synthetic): right on the dataset's own renders,
at chance on unrelated captions, not above chance on noise."""
import numpy as np
import pytest
import torch

from fastt2i.data import SyntheticShapes, describe, parse_caption, render
from fastt2i.eval.synthetic import ATTRIBUTES, caption_accuracy, judge, read_scenes, scene_accuracy

N = 2000


@pytest.fixture(scope="module", params=[32, 64])
def rendered(request):
    ds = SyntheticShapes(size=N, imsize=request.param, seed=3, split="test")
    images = torch.stack([ds[i][0] for i in range(N)])
    return read_scenes(images), [ds.caption(i) for i in range(N)]


def test_reads_every_attribute_of_the_dataset(rendered):
    scenes, captions = rendered
    res = scene_accuracy(scenes, captions)
    for a in ATTRIBUTES + ("all",):
        assert res.accuracy[a] >= 0.99, (a, res.table())
    assert res.n["relation"] == sum(" of " in c or " above " in c or " below " in c for c in captions)
    assert 0.4 < res.n["relation"] / N < 0.6


def test_wrong_captions_are_at_chance(rendered):
    scenes, captions = rendered
    wrong = captions[7:] + captions[:7]   # captions of other, independent scenes
    res = scene_accuracy(scenes, wrong)
    for a in ATTRIBUTES + ("all",):
        # 2,000 pairs: the standard error of a rate near 0.1-0.5 is 0.7-1.1 points
        assert abs(res.accuracy[a] - res.chance[a]) < 0.04, (a, res.table())
    assert res.chance["count"] == pytest.approx(0.5, abs=0.02)
    assert res.chance["colour"] < 0.15 and res.chance["all"] < 0.02


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "smooth"])
@pytest.mark.parametrize("imsize", [32, 64])
def test_noise_is_not_read_as_the_caption(kind, imsize):
    g = torch.Generator().manual_seed(1)
    n = 300
    if kind == "uniform":
        images = torch.rand(n, 3, imsize, imsize, generator=g) * 2 - 1
    elif kind == "gaussian":
        images = (torch.randn(n, 3, imsize, imsize, generator=g) * 0.3).clamp(-1, 1)
    else:  # smooth colour fields, closer to what an untrained generator draws
        low = torch.rand(n, 3, imsize // 8, imsize // 8, generator=g) * 2 - 1
        images = torch.nn.functional.interpolate(low, size=(imsize, imsize), mode="bilinear", align_corners=False)
    ds = SyntheticShapes(size=n, imsize=imsize, seed=4)
    res = caption_accuracy(images, [ds.caption(i) for i in range(n)])
    for a in ATTRIBUTES + ("all",):
        # uniform noise is one clutter blob: the count is right for the one-object captions,
        # about half of these 300 (standard error 3 points)
        slack = 0.09 if a == "count" else 0.03
        assert res.accuracy[a] <= res.chance[a] + slack, (a, res.table())


@pytest.mark.parametrize("imsize", [32, 64])
def test_each_attribute_is_judged_on_its_own(imsize):
    """Change one attribute of the caption: only that attribute turns wrong."""
    scene = [{"shape": "triangle", "colour": "blue", "size": "large", "pos": (0.3, 0.7)},
             {"shape": "circle", "colour": "yellow", "size": "small", "pos": (0.75, 0.6)}]
    img = torch.from_numpy(render(scene, imsize).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    objs = read_scenes(img)[0]
    assert [(o.colour, o.shape, o.size) for o in objs] == [("yellow", "circle", "small"), ("blue", "triangle", "large")]
    right = describe(scene, "left")
    assert right == "a large blue triangle to the left of a small yellow circle"
    assert all(v for v in judge(objs, right).values())
    for wrong, attr in [("a large red triangle to the left of a small yellow circle", "colour"),
                        ("a large blue diamond to the left of a small yellow circle", "shape"),
                        ("a large blue triangle to the left of a large yellow circle", "size"),
                        ("a large blue triangle above a small yellow circle", "relation")]:
        res = judge(objs, wrong)
        assert [a for a in ATTRIBUTES if res[a] is False] == [attr], (wrong, res)
    # the phrases may come in either order: "a small yellow circle to the right of ..."
    assert all(v for v in judge(objs, "a small yellow circle to the right of a large blue triangle").values())
    res = judge(objs[:1], right)
    assert res["count"] is False and res["all"] is False
    res = judge(objs, "a small yellow circle")
    assert res["count"] is False and res["relation"] is None


def test_a_blob_of_two_colours_is_one_object_of_its_main_colour():
    """A generator's blue blob with a purple patch: one object, blue (the dataset keeps shapes apart)."""
    scene = [{"shape": "square", "colour": "blue", "size": "large", "pos": (0.5, 0.5)}]
    img = render(scene, 64).copy()
    img[28:36, 26:34] = (140, 50, 190)                        # a purple patch inside
    objs = read_scenes(torch.from_numpy(img)[None])[0]        # uint8 (1, H, W, 3) is accepted too
    assert [(o.colour, o.shape, o.size) for o in objs] == [("blue", "square", "large")]


def test_an_image_of_only_foreground_has_one_clutter_object():
    img = np.zeros((2, 32, 32, 3), np.uint8)
    img[..., 0] = 255                                          # all red: no background pixel at all
    scenes = read_scenes(img)
    assert [[(o.colour, o.shape) for o in objs] for objs in scenes] == [[(None, None)], [(None, None)]]


def test_parse_caption_inverts_describe():
    ds = SyntheticShapes(size=200, seed=2)
    for i in range(200):
        shapes, rel = ds.scene(i)
        phrases, rel2 = parse_caption(ds.caption(i))
        assert rel2 == rel
        assert phrases == [{k: s[k] for k in ("size", "colour", "shape")} for s in shapes]
    for bad in ["a red circle", "a small red circle next to a large blue square", "a small pink circle", ""]:
        with pytest.raises(ValueError, match="caption"):
            parse_caption(bad)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match=r"images: expected \(N, 3, H, W\)"):
        caption_accuracy(torch.zeros(2, 64, 64), ["a small red circle"] * 2)
    with pytest.raises(ValueError, match="images: expected"):
        caption_accuracy(np.zeros((2, 64, 64, 3), np.float32), ["a small red circle"] * 2)
    with pytest.raises(ValueError, match="one per image"):
        caption_accuracy(torch.zeros(2, 3, 32, 32), ["a small red circle"])
    with pytest.raises(ValueError, match="square"):
        caption_accuracy(torch.zeros(1, 3, 32, 48), ["a small red circle"])


def test_evaluator_scores_a_perfect_and_a_blank_generator():
    from fastt2i.eval.synthetic import CaptionAccuracyEvaluator

    ds = SyntheticShapes(size=40, imsize=32, seed=6)
    by_caption = {ds.caption(i): ds[i][0] for i in range(40)}

    class Perfect:
        def sample(self, captions, generator=None):
            return torch.stack([by_caption[c] for c in captions])

    class Blank:
        def sample(self, captions, generator=None):
            return torch.zeros(len(captions), 3, 32, 32)

    ev = CaptionAccuracyEvaluator(list(by_caption), noises=2, seed=0, batch_size=16)
    good = ev(Perfect())
    assert set(good) == {f"one/{k}" for k in ev.ONE} | {f"two/{k}" for k in ev.TWO}
    assert all(v == 1.0 for v in good.values()), good
    assert ev.last["images"].shape == (2 * len(by_caption), 3, 32, 32)
    assert all(v == 0.0 for v in ev(Blank()).values())
    with pytest.raises(ValueError, match="caption"):
        CaptionAccuracyEvaluator(["a red thing"])
