"""Feature statistics for FID: streaming float64 moments, the Fréchet distance, and npz files.

Memory is O(D^2) whatever the number of images: each rank keeps n, sum(x) and sum(x x^T) in
float64 and the ranks add theirs with one ``all_reduce`` (the official code stores all N x D
features, 30k x 2048 x 8 bytes = 0.5 GB per metric, and gathers them on every rank).

Reference statistics files (``np.load(path)["mu"]``, ``["sigma"]``):
- ``dfgan``: DF-GAN's ``*_val256_FIDK0.npz``, written by ``np.savez``;
- ``pytorch-fid``: pytorch-fid's ``--save-stats`` output, written by ``np.savez_compressed``.
Both hold float64 ``mu`` (D,) and ``sigma`` (D, D); fastt2i adds ``protocol`` and ``n`` entries
that both readers ignore.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import torch

NPZ_FORMATS = ("dfgan", "pytorch-fid")


class FeatureStats:
    """Running n, sum(x), sum(x x^T) in float64 of (N, D) feature batches.

    The result does not depend on how the features are split into batches or across ranks,
    beyond float64 rounding.  ``mean_cov()`` gives the mean and the unbiased covariance
    (``np.cov(rowvar=False)``, divisor N - 1) as the official code computes them.
    """

    def __init__(self, dim: int, device="cpu"):
        if dim < 1:
            raise ValueError(f"dim: expected >= 1, got {dim}")
        self.dim = dim
        self.n = 0
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> "FeatureStats":
        if features.dim() != 2 or features.shape[1] != self.dim:
            raise ValueError(f"features: expected (N, {self.dim}), got {tuple(features.shape)}")
        x = features.detach().to(self.sum.device, torch.float64)
        if not torch.isfinite(x).all():
            raise ValueError("features: non-finite values (NaN/inf) in the batch")
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.sum_outer.addmm_(x.T, x)
        return self

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.n += other.n
        self.sum += other.sum.to(self.sum.device)
        self.sum_outer += other.sum_outer.to(self.sum.device)
        return self

    def all_reduce(self, group=None) -> "FeatureStats":
        """Sum the statistics of every rank (in place; a no-op without an initialised process group)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self
        # one flat buffer: a single collective, n carried exactly in float64 (< 2^53)
        flat = torch.cat([self.sum.new_tensor([float(self.n)]), self.sum, self.sum_outer.reshape(-1)])
        if dist.get_backend(group) == "nccl" and flat.device.type != "cuda":
            flat = flat.cuda()
        dist.all_reduce(flat, group=group)
        flat = flat.to(self.sum.device)
        self.n = int(round(flat[0].item()))
        self.sum.copy_(flat[1:1 + self.dim])
        self.sum_outer.copy_(flat[1 + self.dim:].view(self.dim, self.dim))
        return self

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.n < 2:
            raise ValueError(f"FID statistics need at least 2 images, got {self.n}")
        mean = self.sum / self.n
        # in place: one D x D temporary besides the running sums (the memory peak of a 2048-d FID)
        cov = torch.outer(mean, mean).mul_(-self.n).add_(self.sum_outer).div_(self.n - 1)
        return mean.cpu().numpy(), cov.cpu().numpy()


# ----------------------------------------------------------------------------- Fréchet distance
def _check_pair(mu1, sigma1, mu2, sigma2):
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape:
        raise ValueError(f"mean vectors differ in length: {mu1.shape} vs {mu2.shape} "
                         "(statistics of different feature layers or protocols?)")
    d = mu1.shape[0]
    for name, s in (("sigma1", sigma1), ("sigma2", sigma2)):
        if s.shape != (d, d):
            raise ValueError(f"{name}: expected ({d}, {d}) for {d}-d means, got {s.shape}")
    for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", sigma1), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name}: contains NaN or inf")
    return mu1, sigma1, mu2, sigma2


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr sqrtm(sigma1 @ sigma2) for symmetric PSD matrices, by symmetric eigendecompositions.

    With sigma1 = L L^T (Cholesky), sigma1 sigma2 is similar to L^T sigma2 L, which is symmetric
    PSD, so the eigenvalues of the product are those of L^T sigma2 L (real, >= 0) and the trace
    of its square root is the sum of their square roots: a Cholesky factorisation, two products
    and one eigenvalues-only ``eigvalsh``; no complex arithmetic, no Schur iteration.  When
    sigma1 is singular (fewer images than D) L is replaced by the PSD square root (``eigh``).
    """
    try:
        factor = np.linalg.cholesky(sigma1)
        m = factor.T @ sigma2 @ factor
    except np.linalg.LinAlgError:
        s = _psd_sqrt(sigma1)
        m = s @ sigma2 @ s
    w = np.linalg.eigvalsh((m + m.T) / 2)
    return float(np.sqrt(np.clip(w, 0, None)).sum())


def trace_sqrt_product_official(sigma1: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6) -> float:
    """The official computation: ``scipy.linalg.sqrtm(sigma1 @ sigma2)``, retried with ``eps * I``
    added to both covariances when it is not finite, imaginary parts dropped (an error when the
    diagonal's exceed 1e-3)."""
    from scipy import linalg

    with warnings.catch_warnings():  # the official call passes disp=False (deprecated in SciPy): no printing
        warnings.simplefilter("ignore")
        covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh", eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)) in float64.

    ``method="eigh"`` (default) takes the trace of the square root from symmetric
    eigendecompositions (exact for PSD inputs, no complex Schur form; faster than scipy at
    D = 2048, see benchmarks/bench_eval.py);
    ``method="scipy"`` is the official ``scipy.linalg.sqrtm`` path with its ``eps`` retry.
    """
    mu1, sigma1, mu2, sigma2 = _check_pair(mu1, sigma1, mu2, sigma2)
    if method == "eigh":
        tr = trace_sqrt_product(sigma1, sigma2)
    elif method == "scipy":
        tr = trace_sqrt_product_official(sigma1, sigma2, eps)
    else:
        raise ValueError(f"method: expected 'eigh' or 'scipy', got {method!r}")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr)


# ----------------------------------------------------------------------------- npz files
def save_stats(path, mu: np.ndarray, sigma: np.ndarray, fmt: str = "dfgan", protocol: str | None = None,
               n: int | None = None) -> str:
    """Write (mu, sigma) as DF-GAN's ``np.savez`` or pytorch-fid's ``np.savez_compressed`` file."""
    if fmt not in NPZ_FORMATS:
        raise ValueError(f"npz format: expected one of {NPZ_FORMATS}, got {fmt!r}")
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    extra = {}
    if protocol is not None:
        extra["protocol"] = np.array(protocol)
    if n is not None:
        extra["n"] = np.array(int(n))
    path = os.fspath(path)
    if not path.endswith(".npz"):
        raise ValueError(f"statistics file: expected a .npz path, got {path}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)[:-4]}.tmp{os.getpid()}.npz")
    (np.savez if fmt == "dfgan" else np.savez_compressed)(tmp, mu=mu, sigma=sigma, **extra)
    os.replace(tmp, path)
    return path


def load_stats(path, protocol: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) float64 from a DF-GAN or pytorch-fid npz.

    When the file records a protocol (fastt2i writes it) and ``protocol`` is given, they must
    agree: FIDs of different Inception networks are not comparable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"FID statistics file not found: {path}")
    try:
        f = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - np.load raises several types for bad bytes
        raise ValueError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from exc
    with f:
        keys = sorted(f.files) if hasattr(f, "files") else []
        if "mu" not in keys or "sigma" not in keys:
            raise ValueError(f"{path}: FID statistics need arrays 'mu' and 'sigma' (DF-GAN / pytorch-fid "
                             f"npz), found {keys}")
        mu, sigma = f["mu"].astype(np.float64), f["sigma"].astype(np.float64)
        recorded = str(f["protocol"]) if "protocol" in keys else None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"{path}: expected mu (D,) and sigma (D, D), got {mu.shape} and {sigma.shape}")
    if protocol is not None and recorded is not None and recorded != protocol:
        raise ValueError(f"{path}: statistics computed with the {recorded!r} protocol, asked for {protocol!r}")
    if protocol is not None and recorded is None:
        warnings.warn(f"{path} does not record its Inception protocol; assuming {protocol!r}", stacklevel=2)
    return mu, sigma
