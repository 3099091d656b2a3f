"""Triton, when it is installed: the import guard and the launch helpers every op module shares.

``triton`` and ``tl`` are None without Triton, so an op module writes its kernels under
``if triton is not None:`` and still imports (the backend is then reported unavailable).
"""
from __future__ import annotations

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # Triton is optional
    triton = None
    tl = None


def num_programs_target(device: torch.device) -> int:
    """How many programs a launch should aim for to fill ``device``: four per SM on a GPU,
    one on the CPU, where the interpreter runs programs one after another."""
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 1
