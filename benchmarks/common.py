"""The benchmark case format shared by the runner (``python -m benchmarks.run``) and the
pytest-benchmark suite (``pytest benchmarks``).

Each ``benchmarks/bench_<name>.py`` defines ``cases(device: str, quick: bool) -> list[Case]``.
A Case names one op/step at one shape and mode, and gives per provider a *setup* function
that builds the inputs and returns the zero-argument closure to time.  Providers are named
``eager`` (the reference in eager PyTorch), ``compile`` (torch.compile of the reference),
``official`` (a literal transcription of the official code, where that differs from eager),
and the fused backends ``cuda``, ``triton``, ``cpu``.  The runner times every provider of a
case in the same process and reports ratios against ``eager`` and ``compile``.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

Setup = Callable[[], Callable[[], Any]]


@dataclass
class Case:
    op: str                     # e.g. "df_affine"
    name: str                   # the shape, e.g. "DF-GAN 64x64 B32 C256"
    mode: str                   # "forward" | "forward+backward" | "step"
    providers: dict             # provider name -> Setup
    bytes: Optional[float] = None   # bytes the ideal fused kernel must move (for GB/s)
    flops: Optional[float] = None   # useful floating-point operations (for TFLOP/s)
    saved_bytes: dict = field(default_factory=dict)  # provider -> Setup whose closure returns bytes saved for backward
    quick: bool = False         # part of `--quick` (the demo)
    items: Optional[int] = None # e.g. images per call, for items/s


def backend_provider(backend: str, make_closure: Callable[[], Callable[[], Any]]) -> Setup:
    """A provider that runs ``make_closure``'s closure with ``fastt2i.ops.use_backend(backend)``."""
    from fastt2i import ops

    from fastt2i.ops import _backend

    def setup():
        fn = make_closure()
        ops.set_backend(backend)  # checked once here; each call only swaps the name (use_backend's
        ops.set_backend("auto")   # context manager costs a few us, which a 20 us op would be charged)

        def run():
            previous = _backend._state["backend"]
            _backend._state["backend"] = backend
            try:
                return fn()
            finally:
                _backend._state["backend"] = previous

        return run

    return setup


def compiled_provider(make: Callable, op: Optional[Callable] = None, **compile_kwargs) -> Setup:
    """torch.compile of the reference ``op`` itself, in the case's closure ``make(op)``: the
    forward+backward closures call ``backward`` outside the compiled region, as when a model is
    compiled (compiling the closure broke the graph at ``torch.autograd.backward`` in every case).
    Note for reading the results: inductor's training-mode leaky_relu kernel, which also stores the
    bool mask for the backward, took 17-60 ms for 0.5 M elements on the development machine (torch
    2.14.1, AVX2 and AVX512, 1 thread) against 0.05 ms in inference mode; bias_leaky_relu's compile
    column of forward+backward is slow for that reason, not for the benchmark's.
    Without ``op``, ``make`` is a closure factory and its whole closure is compiled (the older form)."""
    def setup():
        # Every case compiles the same code object: without a reset, dynamo's recompile limit is
        # reached after a few cases and the rest silently run eagerly.
        torch._dynamo.reset()
        if op is None:
            return torch.compile(make(), **compile_kwargs)
        return make(torch.compile(op, **compile_kwargs))()

    return setup


def fused_backends(device: str) -> list[str]:
    from fastt2i import ops

    names = [b for b in ops.available_backends() if b != "reference"]
    if device == "cuda":
        return [b for b in names if b in ("cuda", "triton")]
    return [b for b in names if b == "cpu"]


def saved_tensor_bytes(fn: Callable[[], Any]) -> int:
    """Bytes of the tensors autograd saves for backward while ``fn()`` runs (distinct storages)."""
    seen: dict = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            seen[id(t)] = t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return int(sum(seen.values()))


def fwd_bwd(forward: Callable[[], torch.Tensor], inputs=()) -> Callable[[], None]:
    """Wrap a forward closure into forward+backward against a fixed random gradient.  The ``.grad`` of
    the leaf ``inputs`` is cleared before each call, as a training step does (``zero_grad`` sets it to
    None): the backward then hands its gradient over instead of adding it to the previous call's (an
    extra read-read-write pass over every input, the same for every provider, that no step makes)."""
    state = {}

    def run():
        for t in inputs:
            t.grad = None
        out = forward()
        outs = out if isinstance(out, (tuple, list)) else (out,)
        outs = [o for o in outs if isinstance(o, torch.Tensor) and o.requires_grad]
        if "grads" not in state:
            state["grads"] = [torch.randn_like(o) for o in outs]
        torch.autograd.backward(outs, state["grads"])

    return run


@contextlib.contextmanager
def no_tf32():
    """fp32 references stay fp32 on Ampere/Hopper."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def interleaved_step_ms(fns: dict, steps: int, device: str, warmup: int = 2) -> dict:
    """Median ms per provider of ``fns`` ({name: (backend, step closure)}), their steps alternating in
    one process so that a shared machine's load changes for every provider alike.  ``warmup`` calls
    each first: the second step of a training closure still pays one-off costs (optimizer state,
    oneDNN primitives)."""
    from fastt2i import ops

    for backend, fn in fns.values():
        with ops.use_backend(backend):
            for _ in range(warmup):
                fn()
    times = {n: [] for n in fns}
    for _ in range(steps):
        for name, (backend, fn) in fns.items():
            with ops.use_backend(backend):
                t0 = time.perf_counter()
                fn()
                if device == "cuda":
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - t0)
    return {n: 1e3 * statistics.median(t) for n, t in times.items()}
