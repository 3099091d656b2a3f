"""Inception Score and R-precision against formulas written here and constructed cases."""
import numpy as np
import pytest
import torch

from fastt2i.eval.inception_score import ClassProbabilities, inception_score_from_probs
from fastt2i.eval.rprecision import fold_statistics, image_code_fn, r_precision, r_precision_hits


def is_from_formula(probs, splits):
    n = probs.shape[0]
    scores = []
    for k in range(splits):
        part = probs[k * n // splits:(k + 1) * n // splits] if n % splits == 0 else np.array_split(probs, splits)[k]
        py = part.mean(axis=0)
        kls = [np.sum(p * (np.log(p) - np.log(py))) for p in part]
        scores.append(np.exp(np.mean(kls)))
    return np.mean(scores), np.std(scores)


@pytest.mark.parametrize("n,c", [(100, 1000), (57, 1008)])
def test_inception_score_matches_formula(n, c):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(n, c)) * 3
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    m, s = inception_score_from_probs(probs, 10)
    rm, rs = is_from_formula(probs, 10)
    assert m == pytest.approx(rm, rel=1e-12) and s == pytest.approx(rs, rel=1e-9)
    acc = ClassProbabilities()
    for i in range(0, n, 13):
        acc.update(torch.from_numpy(logits[i:i + 13]))
    m2, s2 = acc.score(10)
    assert m2 == pytest.approx(rm, rel=1e-5) and s2 == pytest.approx(rs, rel=1e-4, abs=1e-7)


def test_inception_score_known_values():
    # one-hot predictions spread uniformly over k classes: IS = k; identical predictions: IS = 1
    k = 7
    probs = np.eye(k)[np.arange(70) % k]
    assert inception_score_from_probs(probs, 10)[0] == pytest.approx(k)
    assert inception_score_from_probs(np.full((20, 5), 0.2), 10) == pytest.approx((1.0, 0.0))


def test_inception_score_bad_input():
    with pytest.raises(ValueError, match="splits"):
        inception_score_from_probs(np.full((5, 3), 1 / 3), 10)
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        inception_score_from_probs(np.ones(5), 1)
    with pytest.raises(ValueError, match="non-negative"):
        inception_score_from_probs(-np.ones((10, 2)), 1)


def constructed_pool(n_classes=300, per_class=2, dim=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    codes = torch.randn(n_classes * per_class, dim, generator=g)
    classes = [i // per_class for i in range(n_classes * per_class)]
    return codes, classes


def test_rprecision_identical_embeddings_give_one():
    codes, classes = constructed_pool()
    rows = list(range(0, 600, 1))[:500]
    # an encoder that maps each image to exactly its caption's vector (scaled: cosine ignores it)
    r = r_precision(codes[rows] * 3.0, rows, codes, classes, fold_size=100)
    assert r["mean"] == 1.0 and r["std"] == 0.0 and r["folds"] == [1.0] * 5


def test_rprecision_random_encoder_is_chance():
    codes, classes = constructed_pool()
    g = torch.Generator().manual_seed(1)
    n = 6000
    rows = [i % 600 for i in range(n)]
    r = r_precision(torch.randn(n, 64, generator=g), rows, codes, classes, fold_size=3000)
    assert len(r["folds"]) == 2 and r["n"] == n
    # chance is 1/100; binomial std over 6000 draws ~0.0013
    assert abs(r["mean"] - 0.01) < 0.006


def test_rprecision_ties_are_shared_and_same_class_excluded():
    # all captions identical: a tie of 100 -> 1/100 each (the official argmax would say 1.0)
    codes = torch.ones(200, 4)
    hits = r_precision_hits(torch.ones(3, 4), [0, 1, 2], codes, list(range(200)))
    np.testing.assert_allclose(hits, 0.01)
    # captions of the true class are never candidates: same-class duplicates cannot steal the hit
    codes = torch.randn(300, 8, generator=torch.Generator().manual_seed(2))
    classes = np.arange(300) // 3
    codes[1] = codes[0]  # same class as row 0
    hits = r_precision_hits(codes[:1], [0], codes, classes)
    assert hits[0] == 1.0


def test_rprecision_bad_input():
    codes, classes = constructed_pool(n_classes=50)
    with pytest.raises(ValueError, match="99 captions of other classes"):
        r_precision(codes[:2], [0, 1], codes, classes)
    codes, classes = constructed_pool()
    with pytest.raises(ValueError, match="codes"):
        r_precision(codes[:2, :5], [0, 1], codes, classes)
    with pytest.raises(ValueError, match="rows"):
        r_precision(codes[:2], [0, 100000], codes, classes)
    with pytest.raises(ValueError, match="no image"):
        fold_statistics(np.zeros(0))


def test_image_code_fn_takes_damsm_tuple():
    class Encoder(torch.nn.Module):
        def forward(self, x):
            return x.mean(1, keepdim=True), x.flatten(1)[:, :5]

    code = image_code_fn(Encoder())(torch.randn(4, 3, 8, 8))
    assert code.shape == (4, 5)
    with pytest.raises(ValueError, match="code"):
        image_code_fn(lambda x: x)(torch.randn(4, 3, 8, 8))
