"""FID pieces: streaming float64 moments, the Fréchet distance against scipy, npz files."""
import numpy as np
import pytest
import torch
from scipy import linalg

from fastt2i.eval.stats import FeatureStats, frechet_distance, load_stats, save_stats


def fd_from_formula(mu1, s1, mu2, s2, eps=1e-6):
    """The textbook FID with scipy's sqrtm and the official eps retry, written here independently."""
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        off = eps * np.eye(len(mu1))
        covmean = linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def random_features(n, d, seed, scale=1.0, shift=0.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix) * scale + shift


@pytest.mark.parametrize("n,d", [(500, 17), (300, 64)])
def test_frechet_distance_matches_scipy(n, d):
    x, y = random_features(n, d, 0), random_features(n, d, 1, scale=1.3, shift=0.2)
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    ref = fd_from_formula(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu1, s1, mu2, s2, method="scipy") == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_near_singular():
    # fewer samples than dimensions: rank-deficient covariances, as with small evaluation runs
    d = 40
    x, y = random_features(12, d, 2), random_features(15, d, 3, shift=0.5)
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    assert np.linalg.matrix_rank(s1) < d
    ref = fd_from_formula(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-6)
    assert frechet_distance(mu1, s1, mu2, s2, method="scipy") == pytest.approx(ref, rel=1e-6)


def test_frechet_distance_identical_is_zero_and_symmetric():
    x = random_features(200, 10, 4)
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    assert abs(frechet_distance(mu, s, mu, s)) < 1e-9
    y = random_features(200, 10, 5, shift=1.0)
    mu2, s2 = y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mu, s, mu2, s2) == pytest.approx(frechet_distance(mu2, s2, mu, s), rel=1e-9)


def test_frechet_distance_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="sigma2"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(2))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full(3, np.nan), np.eye(3), np.zeros(3), np.eye(3))


@pytest.mark.parametrize("splits", [[250], [1, 99, 150], [7] * 35 + [5]])
def test_streaming_equals_batch(splits):
    x = random_features(sum(splits), 33, 6, shift=3.0)
    st = FeatureStats(33)
    start = 0
    for k in splits:
        st.update(torch.from_numpy(x[start:start + k]))
        start += k
    mu, sigma = st.mean_cov()
    np.testing.assert_allclose(mu, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(x, rowvar=False), rtol=1e-10, atol=1e-11)


def test_merge_equals_single():
    x = random_features(120, 9, 7)
    whole = FeatureStats(9).update(torch.from_numpy(x))
    a = FeatureStats(9).update(torch.from_numpy(x[:50]))
    b = FeatureStats(9).update(torch.from_numpy(x[50:]))
    a.merge(b)
    for u, v in zip(a.mean_cov(), whole.mean_cov()):
        np.testing.assert_allclose(u, v, rtol=1e-12, atol=1e-13)


def test_stats_bad_input():
    st = FeatureStats(4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        st.update(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="non-finite"):
        st.update(torch.tensor([[float("nan"), 0, 0, 0]]))
    st.update(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="at least 2"):
        st.mean_cov()


@pytest.mark.parametrize("fmt", ["dfgan", "pytorch-fid"])
def test_npz_round_trip(tmp_path, fmt):
    x = random_features(50, 6, 8)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    path = save_stats(tmp_path / f"ref_{fmt}.npz", mu, sigma, fmt=fmt, protocol="torchvision", n=50)
    mu2, sigma2 = load_stats(path, "torchvision")
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    # what DF-GAN's load_npz / pytorch-fid read
    with np.load(path) as f:
        np.testing.assert_array_equal(f["mu"][:], mu)
        np.testing.assert_array_equal(f["sigma"][:], sigma)
    with pytest.raises(ValueError, match="protocol"):
        load_stats(path, "tf-inception")


def test_npz_written_elsewhere_is_read(tmp_path):
    # files written by the official tools: plain mu / sigma, compressed or not, no protocol
    mu, sigma = np.arange(3.0), np.eye(3) * 2
    np.savez(tmp_path / "a_FIDK0.npz", mu=mu, sigma=sigma)
    np.savez_compressed(tmp_path / "b.npz", mu=mu.astype(np.float32), sigma=sigma)
    for name in ("a_FIDK0.npz", "b.npz"):
        with pytest.warns(UserWarning, match="does not record"):
            m, s = load_stats(tmp_path / name, "torchvision")
        assert m.dtype == np.float64 and np.array_equal(m, mu) and np.array_equal(s, sigma)


def test_npz_bad_files(tmp_path):
    np.savez(tmp_path / "nomu.npz", mean=np.zeros(3), cov=np.eye(3))
    with pytest.raises(ValueError, match="'mu' and 'sigma'.*found \\['cov', 'mean'\\]"):
        load_stats(tmp_path / "nomu.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match="expected mu"):
        load_stats(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_stats(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_stats(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="format"):
        save_stats(tmp_path / "x.npz", np.zeros(2), np.eye(2), fmt="tf")
