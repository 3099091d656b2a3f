"""Backend registry and selection shared by every fused op.

The backends are rows of a table (``BACKEND_TABLE``: devices, compiled-op names,
dtypes, availability), so an added backend is one row.  Each op registers, per backend,
an ``unsupported_reasons(*args)`` function returning the reasons it cannot take these
inputs (empty list = it can).  ``auto`` walks the table in order for the inputs' device
and takes the first available backend with no reasons; an explicit choice that cannot
run raises with the reasons.
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


def _extension_missing() -> str:
    return "" if extension() is not None else f"The compiled extension is not built: {_ext_error}"


def _cuda_missing() -> str:
    ext = extension()
    if ext is None:
        return _extension_missing()
    if not ext.with_cuda():
        return "The extension was built without CUDA kernels."
    if not torch.cuda.is_available():
        return "No CUDA device is visible."
    return ""


def _triton_missing() -> str:
    if not _triton_installed():
        return "Triton is not installed."
    if not (torch.cuda.is_available() or triton_interpret()):
        return "Triton needs a CUDA device, or TRITON_INTERPRET=1 for CPU tensors."
    return ""


def _triton_devices() -> tuple[str, ...]:
    return ("cuda", "cpu") if triton_interpret() else ("cuda",)


# ----------------------------------------------------------------------------- the backend table

@dataclass(frozen=True)
class Backend:
    """What one backend is, as data; the dispatcher has no code of its own per backend.

    The table's order is the priority of ``auto`` (and of ``available_backends()``).
    """

    name: str
    # device types of the tensors it takes, None for any (a function: Triton takes CPU
    # tensors only under TRITON_INTERPRET=1), and how to say so when it is refused
    devices: Callable[[], "tuple[str, ...] | None"]
    devices_text: str
    # device types for which ``auto`` may pick it, None for any (never Triton on CPU:
    # the interpreter is for testing, not speed)
    auto_devices: "tuple[str, ...] | None"
    # the compiled ops of op ``x`` are ``torch.ops.fastt2i.<x>_fwd<op_suffix>`` and
    # ``..._bwd<op_suffix>``; None: plain PyTorch (the op's reference)
    op_suffix: str | None
    # whether its kernels take float64 (the Triton kernels compute in float32)
    float64: bool
    # why it cannot run in this process ("" when it can)
    missing: Callable[[], str]


BACKEND_TABLE: tuple[Backend, ...] = (
    Backend("cuda", lambda: ("cuda",), "CUDA tensors", ("cuda",), "", True, _cuda_missing),
    Backend("triton", _triton_devices, "CUDA tensors (or CPU tensors with TRITON_INTERPRET=1)", ("cuda",),
            "_triton", False, _triton_missing),
    Backend("cpu", lambda: ("cpu",), "CPU tensors", ("cpu",), "", True, _extension_missing),
    Backend("reference", lambda: None, "any tensors", None, None, True, lambda: ""),
)
_BY_NAME = {row.name: row for row in BACKEND_TABLE}
assert set(_BY_NAME) == set(BACKENDS)


def backend_info(name: str) -> Backend:
    """The table row of backend ``name``."""
    return _BY_NAME[name]


def _why_unavailable(name: str) -> str:
    return _BY_NAME[name].missing()


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
    _available = tuple(row.name for row in BACKEND_TABLE if not row.missing())
    _auto_rows.clear()


# device type -> the rows ``auto`` may take for it that can run in this process, in table order
_auto_rows: dict = {}


def _auto_candidates(device_type: str) -> tuple:
    rows = _auto_rows.get(device_type)
    if rows is None:
        available_backends()
        rows = tuple(row for row in BACKEND_TABLE
                     if (row.auto_devices is None or device_type in row.auto_devices) and row.name in _available
                     and (row.devices() is None or device_type in row.devices()))
        _auto_rows[device_type] = rows
    return rows


# ----------------------------------------------------------------------------- per-op dispatch

UnsupportedReasons = Callable[..., "list[str]"]


def _device_reasons(backend: str, device: torch.device) -> list[str]:
    row = _BY_NAME[backend]
    devices = row.devices()
    if devices is None or device.type in devices:
        return []
    return [f"the {backend} backend takes {row.devices_text}, got {device.type}"]


def _float64_reasons(backend: str, args) -> list[str]:
    for arg in args:
        tensors = arg if isinstance(arg, (list, tuple)) else (arg,)
        if any(isinstance(t, torch.Tensor) and t.dtype == torch.float64 for t in tensors):
            return [f"the {backend} kernels take float32/float16/bfloat16, got float64"]
    return []


@dataclass
class OpDispatch:
    """Which backends implement one op, what each of them refuses, and its compiled ops.

    ``name`` names the op in errors; the compiled ops of a backend are looked up in the
    backend table from ``op`` (``torch.ops.fastt2i.<op>_fwd`` / ``_bwd`` plus the
    backend's suffix).
    """

    name: str
    op: str = ""
    unsupported_reasons: dict = field(default_factory=dict)
    _ops: dict = field(default_factory=dict, repr=False)

    def register(self, backend: str, unsupported_reasons: UnsupportedReasons | None = None) -> None:
        """``backend`` implements this op; ``unsupported_reasons(*args)`` lists why it cannot
        take some inputs (an empty list: it can)."""
        self.unsupported_reasons[backend] = unsupported_reasons or (lambda *a, **k: [])

    def register_backends(self, fused: UnsupportedReasons | None = None, **by_backend: UnsupportedReasons) -> None:
        """Register the reference and every backend of the table that has compiled ops, with
        ``fused`` (or ``by_backend[name]``) as their reasons: a backend added to the table
        serves every op that registers this way."""
        for row in BACKEND_TABLE:
            self.register(row.name, None if row.op_suffix is None else by_backend.get(row.name, fused))

    def fused_ops(self, backend: str):
        """(forward, backward) compiled ops of ``backend`` (a backend with an op suffix)."""
        found = self._ops.get(backend)
        if found is None:  # looked up once: torch.ops attribute access costs about 1 us per call
            suffix = _BY_NAME[backend].op_suffix
            namespace = torch.ops.fastt2i
            found = getattr(namespace, f"{self.op}_fwd{suffix}"), getattr(namespace, f"{self.op}_bwd{suffix}")
            self._ops[backend] = found
        return found

    def reasons(self, backend: str, device: torch.device, *args, **kwargs) -> list[str]:
        if backend not in self.unsupported_reasons:
            return [f"{self.name} has no {backend} implementation"]
        if backend not in _available:
            return [f"{backend} is not available: {_why_unavailable(backend)}"]
        why = _device_reasons(backend, device)
        if not _BY_NAME[backend].float64:
            why += _float64_reasons(backend, args)
        return why + list(self.unsupported_reasons[backend](*args, **kwargs))

    def select(self, device: torch.device, *args, **kwargs) -> str:
        requested = get_backend()
        if requested != "auto":
            why = self.reasons(requested, device, *args, **kwargs)
            if why:
                raise ValueError(f"{self.name}: backend {requested!r} cannot run these inputs: " + "; ".join(why))
            return requested
        # fast path (this runs on every call of every op): the available rows for this device,
        # asked only what depends on the inputs
        for row in _auto_candidates(device.type):
            op_reasons = self.unsupported_reasons.get(row.name)
            if op_reasons is None or (not row.float64 and _float64_reasons(row.name, args)):
                continue
            if not op_reasons(*args, **kwargs):
                return row.name
        collected = {}  # none can: say why for each
        for row in BACKEND_TABLE:
            if row.auto_devices is not None and device.type not in row.auto_devices:
                continue
            why = self.reasons(row.name, device, *args, **kwargs)
            if not why:
                return row.name
            collected[row.name] = why
        raise ValueError(f"{self.name}: no backend can run these inputs: {collected}")
