"""The CPU kernels at every instruction-set level this machine runs (issue: explicit SIMD per level).

The extension holds one build of every CPU kernel per level (DEFAULT, AVX2, AVX512) and runs the
one ATen's at::get_cpu_capability() names; ATEN_CPU_CAPABILITY forces it.  ATen reads the variable
once per process, so each level runs tests/ops/cpu_kernel_checks.py in a subprocess.
"""
import os
import subprocess
import sys

import pytest
import torch

from fastt2i.ops import _backend

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECKS = os.path.join(ROOT, "tests", "ops", "cpu_kernel_checks.py")
ORDER = ["DEFAULT", "AVX2", "AVX512"]

ext = _backend.extension()
pytestmark = pytest.mark.skipif(ext is None or not hasattr(ext, "cpu_capability"),
                                reason="the compiled extension (per-level CPU kernels) is not built")


def _env(level=None):
    env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if level is not None:
        env["ATEN_CPU_CAPABILITY"] = level.lower()
    return env


def _run(code_or_path, level=None, timeout=600):
    args = [sys.executable, code_or_path] if code_or_path.endswith(".py") else [sys.executable, "-c", code_or_path]
    return subprocess.run(args, env=_env(level), capture_output=True, text=True, timeout=timeout)


def _hardware_level() -> str:
    out = _run("import torch; print(torch.backends.cpu.get_cpu_capability())")
    return out.stdout.strip().splitlines()[-1]


def runnable_levels() -> list[str]:
    if ext is None:
        return []
    hardware = _hardware_level()
    built = ext.cpu_levels_built().split()
    top = ORDER.index(hardware) if hardware in ORDER else 0
    return [lvl for lvl in ORDER[: top + 1] if lvl in built]


LEVELS = runnable_levels() if ext is not None else []


def test_levels_built_include_the_baseline_and_this_cpu():
    built = ext.cpu_levels_built().split()
    assert built[0] == "DEFAULT"
    if torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512"):
        assert "AVX2" in built  # an x86-64 build has at least the AVX2 level


@pytest.mark.parametrize("level", LEVELS)
def test_forced_level_is_used(level):
    out = _run("import fastt2i._C as C, torch; print(C.cpu_capability(), torch.backends.cpu.get_cpu_capability())",
               level)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [level, level]


@pytest.mark.parametrize("level", LEVELS)
def test_every_cpu_kernel_matches_the_reference(level):
    out = _run(CHECKS, level)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert f"level {level} " in out.stdout, out.stdout


def test_info_reports_the_level():
    out = subprocess.run([sys.executable, "-m", "fastt2i.info"], env=_env("default"), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "CPU kernels: DEFAULT" in out.stdout, out.stdout
