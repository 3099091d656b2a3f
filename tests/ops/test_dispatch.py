"""Backend selection: names, errors, context manager, environment, missing extension."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from fastt2i import ops
from fastt2i.ops import _backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository


def test_available_backends_lists_reference_last():
    names = ops.available_backends()
    assert names[-1] == "reference"
    assert set(names) <= set(ops.BACKENDS)
    # this suite runs with TRITON_INTERPRET=1 (conftest), so Triton runs on CPU tensors when installed
    try:
        import triton  # noqa: F401

        assert "triton" in names
    except ImportError:
        assert "triton" not in names
    if not torch.cuda.is_available():
        assert "cuda" not in names


def test_set_and_use_backend():
    assert ops.get_backend() == "auto"
    ops.set_backend("reference")
    assert ops.get_backend() == "reference"
    with ops.use_backend("auto"):
        assert ops.get_backend() == "auto"
    assert ops.get_backend() == "reference"
    ops.set_backend("auto")


def test_use_backend_restores_after_an_error():
    with pytest.raises(RuntimeError):
        with ops.use_backend("reference"):
            raise RuntimeError("boom")
    assert ops.get_backend() == "auto"


def test_unknown_and_unavailable_backends_are_clear_errors():
    with pytest.raises(ValueError, match="expected one of"):
        ops.set_backend("fast")
    missing = [b for b in ops.BACKENDS if b not in ops.available_backends()]
    for name in missing:
        with pytest.raises(ValueError, match="not available"):
            ops.set_backend(name)


def test_auto_picks_compiled_cpu_for_cpu_tensors():
    x = torch.randn(1, 2, 3, 3)
    from fastt2i.ops.df_affine import DISPATCH

    choice = DISPATCH.select(x.device, x, torch.ones(1, 1, 2), torch.ones(1, 1, 2))
    assert choice == ("cpu" if "cpu" in ops.available_backends() else "reference")


def test_auto_falls_back_when_the_compiled_kernel_refuses_the_input():
    """The fast path of ``auto`` asks each op's reasons per call: T > 64 words goes to the reference."""
    from fastt2i.ops.word_region_attention import DISPATCH, MAX_WORDS

    regions = torch.randn(1, 4, 2, 2)
    fits, too_long = torch.randn(1, 4, MAX_WORDS), torch.randn(1, 4, MAX_WORDS + 1)
    compiled = "cpu" if "cpu" in ops.available_backends() else "reference"
    assert DISPATCH.select(regions.device, regions, fits, None) == compiled
    assert DISPATCH.select(regions.device, regions, too_long, None) == "reference"
    assert DISPATCH.select(regions.device, regions, fits, None) == compiled


def test_refreshing_the_backends_refreshes_auto(monkeypatch):
    x = torch.randn(1, 2, 3, 3)
    from fastt2i.ops.df_affine import DISPATCH

    args = (x, torch.ones(1, 1, 2), torch.ones(1, 1, 2))
    before = DISPATCH.select(x.device, *args)
    monkeypatch.setattr(_backend, "_extension_missing", lambda: "pretend the extension is missing")
    monkeypatch.setattr(_backend, "BACKEND_TABLE", tuple(
        row if row.name != "cpu" else _backend.Backend(row.name, row.devices, row.devices_text, row.auto_devices,
                                                       row.op_suffix, row.float64, _backend._extension_missing)
        for row in _backend.BACKEND_TABLE))
    _backend.refresh_available_backends()
    try:
        assert DISPATCH.select(x.device, *args) == "reference"
    finally:
        monkeypatch.undo()
        _backend.refresh_available_backends()
    assert DISPATCH.select(x.device, *args) == before


def test_explicit_backend_that_cannot_take_the_input_lists_reasons():
    if "cpu" not in ops.available_backends():
        pytest.skip("extension not built")
    x = torch.randn(1, 2, 3, 3, device="meta")
    with ops.use_backend("cpu"), pytest.raises(ValueError, match="takes CPU tensors"):
        ops.df_affine(x, torch.ones(1, 1, 2, device="meta"), torch.ones(1, 1, 2, device="meta"))


def _run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": ROOT, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


def test_environment_variable_selects_backend():
    out = _run_python("import fastt2i; print(fastt2i.ops.get_backend())", FASTT2I_BACKEND="reference")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "reference"
    bad = _run_python("import fastt2i", FASTT2I_BACKEND="nope")
    assert bad.returncode != 0 and "expected one of" in bad.stderr


def test_import_without_extension_warns_once_and_falls_back():
    code = """
    import sys, warnings, importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "fastt2i._C":
                raise ImportError("blocked for the test")
    sys.meta_path.insert(0, Block())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import torch, fastt2i
        from fastt2i import ops
        x = torch.randn(2, 3, 4, 4)
        y = ops.df_affine(x, torch.ones(1, 2, 3), torch.zeros(1, 2, 3))
        ops.available_backends()
    messages = [str(w.message) for w in caught if "not built" in str(w.message)]
    print(len(messages), "cpu" in ops.available_backends(), bool((y - torch.nn.functional.leaky_relu(x, 0.2)).abs().max() == 0))
    """
    out = _run_python(code, TRITON_INTERPRET="0")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False", "True"]


def test_info_reports_every_backend():
    out = _run_python("import runpy; runpy.run_module('fastt2i.info', run_name='__main__')")
    assert out.returncode == 0, out.stderr
    for name in ops.BACKENDS:
        assert name in out.stdout


def test_reasons_of_triton_on_cpu_without_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert _backend._device_reasons("triton", torch.device("cpu"))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not _backend._device_reasons("triton", torch.device("cpu"))
