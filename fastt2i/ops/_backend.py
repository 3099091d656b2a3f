"""Backend registry and selection shared by every fused op.

Each op registers, per backend, a ``supports(*args)`` function returning the list
of reasons it cannot take these inputs (empty list = it can).  ``auto`` walks a
priority list for the inputs' device and takes the first available backend with
no reasons; an explicit choice that cannot run raises with the reasons.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

BACKENDS = ("reference", "triton", "cuda", "cpu")
_CHOICES = BACKENDS + ("auto",)
# Priority of ``auto`` by device type.  Triton is never auto-picked on CPU: the
# interpreter is for testing, not speed.
_AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in _CHOICES:
        raise ValueError(f"backend: expected one of {_CHOICES}, got {name!r}")
    return name


# A plain module-level dict (not threading.local) so torch.compile can read it and
# guard on it without a graph break.
_state = {"backend": _check_name(os.environ.get("FASTT2I_BACKEND", "auto").strip().lower() or "auto")}


def get_backend() -> str:
    """The backend requested for this process: a name from ``BACKENDS`` or ``"auto"``."""
    return _state["backend"]


def set_backend(name: str) -> None:
    """Select the backend for every fused op (``"auto"`` restores the default).

    Raises ValueError for an unknown name or for a backend that cannot run in this process.
    """
    _check_name(name)
    if name != "auto" and name not in available_backends():
        raise ValueError(
            f"backend {name!r} is not available in this process; available: {available_backends()}. "
            f"{_why_unavailable(name)}"
        )
    _state["backend"] = name


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Context manager: ``with use_backend("cpu"): ...`` then restore the previous choice."""
    previous = _state["backend"]
    set_backend(name)
    try:
        yield
    finally:
        _state["backend"] = previous


# ----------------------------------------------------------------------------- availability

def triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _triton_installed() -> bool:
    return importlib.util.find_spec("triton") is not None


_ext_module = None
_ext_error: str | None = None
_ext_warned = False


def extension():
    """The compiled module ``fastt2i._C`` or None (warns once with how to build it)."""
    global _ext_module, _ext_error, _ext_warned
    if _ext_module is None and _ext_error is None:
        try:
            _ext_module = importlib.import_module("fastt2i._C")
        except ImportError as exc:  # an unbuilt extension is never an import error
            _ext_error = str(exc)
    if _ext_module is None and not _ext_warned and os.environ.get("FASTT2I_BUILD_EXT", "1") != "0":
        _ext_warned = True
        warnings.warn(
            "fastt2i: the compiled extension fastt2i._C is not built "
            f"({_ext_error}); the 'cpu' and 'cuda' backends are unavailable. "
            "Build it with `pip install --no-build-isolation -e .` (see `python -m fastt2i.info`).",
            RuntimeWarning,
            stacklevel=3,
        )
    return _ext_module


def _why_unavailable(name: str) -> str:
    if name == "triton":
        if not _triton_installed():
            return "Triton is not installed."
        return "Triton needs a CUDA device, or TRITON_INTERPRET=1 for CPU tensors."
    if name in ("cpu", "cuda"):
        ext = extension()
        if ext is None:
            return f"The compiled extension is not built: {_ext_error}"
        if name == "cuda":
            if not ext.with_cuda():
                return "The extension was built without CUDA kernels."
            return "No CUDA device is visible."
    return ""


_available: tuple | None = None


def available_backends() -> list[str]:
    """Backends that can run in this process, in priority order for ``auto``.

    Computed once per process (so compiled code reads a constant); call
    ``refresh_available_backends()`` after changing TRITON_INTERPRET or devices.
    """
    if _available is None:
        refresh_available_backends()
    return list(_available)


def refresh_available_backends() -> None:
    global _available
    out = []
    ext = extension()
    gpu = torch.cuda.is_available()
    if ext is not None and ext.with_cuda() and gpu:
        out.append("cuda")
    if _triton_installed() and (gpu or triton_interpret()):
        out.append("triton")
    if ext is not None:
        out.append("cpu")
    out.append("reference")
    _available = tuple(out)


# ----------------------------------------------------------------------------- per-op dispatch

Supports = Callable[..., "list[str]"]


def _device_reasons(backend: str, device: torch.device) -> list[str]:
    if backend == "cpu" and device.type != "cpu":
        return [f"the cpu backend takes CPU tensors, got {device.type}"]
    if backend == "cuda" and device.type != "cuda":
        return [f"the cuda backend takes CUDA tensors, got {device.type}"]
    if backend == "triton" and device.type != "cuda" and not (device.type == "cpu" and triton_interpret()):
        return [f"triton takes CUDA tensors (or CPU tensors with TRITON_INTERPRET=1), got {device.type}"]
    return []


def _triton_dtype_reasons(args) -> list[str]:
    """The Triton kernels of every op compute in float32 for float32/float16/bfloat16 inputs."""
    for arg in args:
        tensors = arg if isinstance(arg, (list, tuple)) else (arg,)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tensors):
            return ["Triton kernels take float32/float16/bfloat16, got float64"]
    return []


@dataclass
class OpDispatch:
    """Which backends implement one op, and what each of them accepts."""

    name: str
    supports: dict = field(default_factory=dict)

    def register(self, backend: str, supports: Supports | None = None) -> None:
        self.supports[backend] = supports or (lambda *a, **k: [])

    def reasons(self, backend: str, device: torch.device, *args, **kwargs) -> list[str]:
        if backend not in self.supports:
            return [f"{self.name} has no {backend} implementation"]
        if backend not in _available:
            return [f"{backend} is not available: {_why_unavailable(backend)}"]
        why = _device_reasons(backend, device)
        if backend == "triton":
            why += _triton_dtype_reasons(args)
        return why + list(self.supports[backend](*args, **kwargs))

    def select(self, device: torch.device, *args, **kwargs) -> str:
        requested = get_backend()
        if requested != "auto":
            why = self.reasons(requested, device, *args, **kwargs)
            if why:
                raise ValueError(f"{self.name}: backend {requested!r} cannot run these inputs: " + "; ".join(why))
            return requested
        order = _AUTO_ORDER.get(device.type, ("reference",))
        collected = {}
        for backend in order:
            why = self.reasons(backend, device, *args, **kwargs)
            if not why:
                return backend
            collected[backend] = why
        raise ValueError(f"{self.name}: no backend can run these inputs: {collected}")
