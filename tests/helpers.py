"""Shared test helpers: relative errors and backend parametrisation."""
import torch

from fastt2i import ops

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


def backend_device(name: str) -> str:
    if name == "cuda" or (name == "triton" and torch.cuda.is_available()):
        return "cuda"
    return "cpu"


def fused_backends() -> list[str]:
    return [b for b in ops.available_backends() if b != "reference"]
