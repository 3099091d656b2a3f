"""Shared test helpers: relative errors, tolerances and backend parametrisation."""
import pytest
import torch

from fastt2i import ops
from fastt2i.ops import _backend

# Relative-error bounds from the project's standards.
TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 1e-2}


def rel_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected| (max-norm relative error)."""
    actual, expected = actual.double(), expected.double()
    scale = expected.abs().max().clamp_min(1e-12)
    return ((actual - expected).abs().max() / scale).item()


def assert_rel_close(actual, expected, tol, what=""):
    assert torch.isfinite(actual).all(), f"{what}: non-finite values"
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:.3g}"


def assert_low_precision_close(fused, eager, exact, dtype, what="", factor=2.0):
    """flash-attention's rule for float16/bfloat16 inputs (``dtype``), beside the absolute
    bound TOL[dtype]: the fused result's error against a float64 ``exact`` is at most
    ``factor`` (2) times the error of the eager reference run at the same precision (plus
    the float32 bound, for float32 results such as parameter gradients, which both
    compute alike and so err by next to nothing)."""
    assert_rel_close(fused, exact, TOL[dtype], what)
    fused_err, eager_err = rel_error(fused, exact), rel_error(eager, exact)
    assert fused_err <= factor * eager_err + TOL[torch.float32], (
        f"{what}: error {fused_err:.3g} against float64 > {factor:g} x the eager reference's {eager_err:.3g}")


def backend_device(name: str) -> str:
    if name == "cuda" or (name == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def backend_params(*names: str) -> list:
    """``names`` (default: every backend, in priority order) as pytest parameters; a backend that
    cannot run in this process is collected and skipped with the dispatcher's own reason."""
    names = names or tuple(row.name for row in _backend.BACKEND_TABLE)
    return [pytest.param(name, marks=requires_backend(name)) for name in names]


def fused_backend_names() -> tuple[str, ...]:
    """Every backend with compiled (non-reference) kernels, available here or not."""
    return tuple(row.name for row in _backend.BACKEND_TABLE if row.op_suffix is not None)


def fused_backends() -> list:
    """Every fused backend as pytest parameters (skipped, with the reason, where unavailable)."""
    return backend_params(*fused_backend_names())


def float64_backends() -> list:
    """The backends whose kernels take float64 (gradcheck), as pytest parameters."""
    return backend_params(*(row.name for row in _backend.BACKEND_TABLE if row.float64))


def requires_backend(name: str):
    """Mark: skip unless backend ``name`` can run here, with the dispatcher's reason."""
    return pytest.mark.skipif(name not in ops.available_backends(),
                              reason=f"backend {name!r} unavailable: {_backend._why_unavailable(name)}")


def sweep_backends() -> list:
    """``fused_backends()`` for the large shape/layout sweeps: on CPU the Triton kernels run in
    the interpreter (slow), so those cases are also marked ``slow`` (``make test-fast`` skips
    them; the op contract still runs Triton on one input of every op)."""
    interpreted = not torch.cuda.is_available()
    return [pytest.param(name, marks=[requires_backend(name)]
                         + ([pytest.mark.slow] if name == "triton" and interpreted else []))
            for name in fused_backend_names()]


# ----------------------------------------------------------------------------- released StackGAN data

def _stackgan_jpeg(path, w, h, seed):
    import os

    import numpy as np
    from PIL import Image

    os.makedirs(os.path.dirname(path), exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def make_stackgan_layout(root, dataset="birds", n_train=6, n_test=2, classes=3, list_form=False):
    """A tiny copy of StackGAN's data/birds (or data/coco): per split filenames / embeddings / class_info
    pickles (protocol 2, as the Python 2 originals), the JPEGs and (birds) images.txt + bounding_boxes.txt."""
    import os
    import pickle

    import numpy as np

    rng = np.random.default_rng(0)
    keys = {}
    for split, n in (("train", n_train), ("test", n_test)):
        if dataset == "birds":
            names = [f"{1 + i % classes:03d}.Class_{i % classes}/Bird_{split}_{i}" for i in range(n)]
        else:
            names = [f"COCO_{split}2014_{i:012d}" for i in range(n)]
        keys[split] = names
        os.makedirs(root / split, exist_ok=True)
        emb = rng.standard_normal((n, 10, 1024)).astype(np.float32)
        with open(root / split / "filenames.pickle", "wb") as f:
            pickle.dump(names, f, protocol=2)
        with open(root / split / "char-CNN-RNN-embeddings.pickle", "wb") as f:
            pickle.dump([row for row in emb] if list_form else emb, f, protocol=2)
        with open(root / split / "class_info.pickle", "wb") as f:
            pickle.dump([1 + i % classes for i in range(n)], f, protocol=2)
    all_keys = keys["train"] + keys["test"]
    for i, key in enumerate(all_keys):
        sub = ("CUB_200_2011", "images") if dataset == "birds" else ("images",)
        _stackgan_jpeg(root.joinpath(*sub, f"{key}.jpg"), 110 + 9 * i, 80 + 4 * i, i)
    if dataset == "birds":
        with open(root / "CUB_200_2011" / "images.txt", "w") as f:
            f.writelines(f"{i + 1} {key}.jpg\n" for i, key in enumerate(all_keys))
        with open(root / "CUB_200_2011" / "bounding_boxes.txt", "w") as f:
            f.writelines(f"{i + 1} {5.0 + i} {8.0} {50.0 + 2 * i} {41.0}\n" for i in range(len(all_keys)))
    return keys
