"""The Inception protocols: exact resize/normalisation, the TF-FID layout, weights loading."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fastt2i.eval.inception import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InceptionFeatures,
    TFInceptionA,
    TFInceptionC,
    TFInceptionE,
    preprocess,
    tf_fid_inception_v3,
)


def bilinear_half_pixel(src: np.ndarray, out: int) -> np.ndarray:
    """1-D bilinear resampling with half-pixel centres (align_corners=False), from the formula."""
    n = len(src)
    res = np.empty(out)
    for i in range(out):
        x = max((i + 0.5) * n / out - 0.5, 0.0)
        j = min(int(np.floor(x)), n - 1)
        k = min(j + 1, n - 1)
        t = x - j
        res[i] = (1 - t) * src[j] + t * src[k]
    return res


def known_image():
    # separable: value = row ramp * column ramp per channel, so the 2-D bilinear result is the outer product
    rows = np.linspace(0.0, 1.0, 16)
    cols = np.linspace(0.2, 0.9, 16) ** 2
    img = np.stack([np.outer(rows, cols) * s for s in (1.0, 0.5, 0.25)])
    return img, rows, cols


@pytest.mark.parametrize("protocol", ["torchvision", "torchvision-legacy", "tf-inception"])
def test_preprocess_known_image(protocol):
    img, rows, cols = known_image()
    out = preprocess(torch.from_numpy(img).float()[None], protocol)[0].double().numpy()
    assert out.shape == (3, 299, 299)
    resized = np.outer(bilinear_half_pixel(rows, 299), bilinear_half_pixel(cols, 299))
    for c, s in enumerate((1.0, 0.5, 0.25)):
        expected = resized * s
        if protocol == "torchvision":
            expected = (expected - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
        elif protocol == "torchvision-legacy":
            expected = expected * IMAGENET_STD[c] / 0.5 + (IMAGENET_MEAN[c] - 0.5) / 0.5
        else:
            expected = expected * 2 - 1
        np.testing.assert_allclose(out[c], expected, atol=2e-6)


def test_preprocess_constant_and_299_passthrough():
    x = torch.full((1, 3, 64, 64), 0.5)
    out = preprocess(x, "torchvision")
    for c in range(3):
        torch.testing.assert_close(out[0, c], torch.full((299, 299), (0.5 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]))
    x = torch.rand(2, 3, 299, 299)
    torch.testing.assert_close(preprocess(x, "tf-inception"), x * 2 - 1)


def test_preprocess_bad_input():
    with pytest.raises(ValueError, match="protocol"):
        preprocess(torch.rand(1, 3, 8, 8), "clip")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        preprocess(torch.rand(3, 8, 8), "torchvision")
    with pytest.raises(TypeError, match="uint8"):
        preprocess(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "torchvision")


def test_tf_blocks_pool_like_tensorflow():
    torch.manual_seed(0)
    x = torch.randn(1, 192, 9, 9)
    block = TFInceptionA(192, pool_features=32).eval()
    with torch.no_grad():
        y = block(x)
        # the pool branch divides corner sums by 4 valid pixels, not 9
        pooled = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        assert torch.allclose(pooled[..., 0, 0], x[..., :2, :2].mean((-1, -2)), atol=1e-6)
        torch.testing.assert_close(y[:, -32:], block.branch_pool(pooled))
        torch.testing.assert_close(y[:, :64], block.branch1x1(x))
    e = TFInceptionE(64, pool="max").eval()
    with torch.no_grad():
        x = torch.randn(1, 64, 5, 5)
        torch.testing.assert_close(e(x)[:, -192:], e.branch_pool(F.max_pool2d(x, 3, 1, 1)))
    c = TFInceptionC(32, channels_7x7=8).eval()
    with torch.no_grad():
        x = torch.randn(1, 32, 6, 6)
        assert c(x).shape == (1, 4 * 192, 6, 6)
    with pytest.raises(ValueError, match="pool"):
        TFInceptionE(8, pool="sum")


def test_tf_layout_has_pytorch_fid_keys_and_1008_classes():
    net = tf_fid_inception_v3()
    sd = net.state_dict()
    assert sd["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in sd)
    assert "Mixed_7c.branch3x3dbl_3b.conv.weight" in sd and "Mixed_5b.branch_pool.conv.weight" in sd
    assert net.Mixed_7b.pool == "avg" and net.Mixed_7c.pool == "max"


@pytest.mark.parametrize("protocol", ["torchvision", "tf-inception"])
def test_weights_from_file_round_trip_and_mismatch(tmp_path, protocol):
    torch.manual_seed(0)
    a = InceptionFeatures(protocol, weights=None)
    path = tmp_path / "w.pth"
    torch.save(a.net.state_dict(), path)
    b = InceptionFeatures(protocol, weights=str(path))
    for (k, v), (k2, v2) in zip(a.net.state_dict().items(), b.net.state_dict().items()):
        assert k == k2 and torch.equal(v, v2)
    other = "tf-inception" if protocol == "torchvision" else "torchvision"
    with pytest.raises(ValueError, match="do not fit"):
        InceptionFeatures(other, weights=str(path))
    with pytest.raises(FileNotFoundError):
        InceptionFeatures(protocol, weights=str(tmp_path / "none.pth"))


def test_torchvision_transform_input_is_the_minus1_1_map():
    # torchvision's transform_input undoes the ImageNet normalisation into 2x - 1 (float rounding aside)
    net = InceptionFeatures("torchvision", weights=None)
    x = torch.rand(1, 3, 299, 299)
    torch.testing.assert_close(net.preprocess(x), x * 2 - 1, atol=1e-6, rtol=0)
    # the legacy wrapper feeds the network its formula directly, with no further transform
    legacy = InceptionFeatures("torchvision-legacy", weights=None)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(legacy.preprocess(x), x * std / 0.5 + (mean - 0.5) / 0.5)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["torchvision", "tf-inception"])
def test_features_and_logits_shapes(protocol):
    torch.manual_seed(0)
    net = InceptionFeatures(protocol, weights=None)
    pool3, logits = net(torch.rand(2, 3, 64, 64))
    assert pool3.shape == (2, 2048) and logits.shape == (2, 1000 if protocol == "torchvision" else 1008)
    assert torch.isfinite(pool3).all() and (pool3 >= 0).all()  # average of ReLU outputs
    net.train()
    assert not net.training  # BatchNorm statistics stay frozen
