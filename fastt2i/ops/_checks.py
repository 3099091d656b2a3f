"""Input validation shared by the public op functions: errors name the argument,
what was expected and what came."""
from __future__ import annotations

import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def tensor(name: str, value, ndim: int | None = None, floating: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if ndim is not None and value.dim() != ndim:
        raise ValueError(f"{name}: expected a {ndim}-D tensor, got shape {tuple(value.shape)}")
    if floating and value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a floating dtype {FLOAT_DTYPES}, got {value.dtype}")
    return value


def same_device(**tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise ValueError(f"expected all tensors on one device, got {devices}")


def dim_equals(name: str, t: torch.Tensor, dim: int, expected: int, what: str) -> None:
    if t.shape[dim] != expected:
        raise ValueError(
            f"{name}: expected size {expected} ({what}) at dim {dim}, got shape {tuple(t.shape)}"
        )


def real_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got {type(value).__name__} {value!r}")
    return float(value)


def layout_of(x: torch.Tensor) -> torch.memory_format:
    """The memory format a 4-D kernel will use for ``x``: channels_last when ``x``
    is stored that way (and not also plainly contiguous), else contiguous."""
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float32 arithmetic for half inputs, float64 for float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense (every element of one storage span used once, in any order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def batch_major(t: torch.Tensor) -> bool:
    """Sample b occupies the flat memory span [b*N, (b+1)*N) (N = numel / B), in any order inside."""
    B = t.shape[0]
    return is_dense(t) and (B <= 1 or t.numel() == 0 or t.stride(0) * B == t.numel())
