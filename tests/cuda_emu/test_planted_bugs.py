"""The emulator and its sanitizer builds catch what they are for: each planted bug (planted_bugs.cu)
changes the result or draws a sanitizer report, and its correct twin runs clean."""
import os
import re
import subprocess
from pathlib import Path

import pytest

from . import emu_build

SOURCE = Path(__file__).with_name("planted_bugs.cu")

pytestmark = pytest.mark.skipif(not emu_build.compiler_available(), reason="no host C++ compiler")


def _run(sanitizer: str, case: str, **env_vars) -> subprocess.CompletedProcess:
    program = emu_build.build_program("planted_bugs", [SOURCE], sanitizer)
    env = {**os.environ, **emu_build.SANITIZER_ENV.get(sanitizer, {}), **env_vars}
    return subprocess.run([str(program), case], capture_output=True, text=True, env=env, timeout=600)


def test_missing_syncthreads_is_a_race_for_thread_sanitizer():
    good = _run("tsan", "sync")
    assert good.returncode == 0 and "WARNING" not in good.stderr, good.stderr
    assert good.stdout.split()[1:4] == ["4", "6", "8"]
    bad = _run("tsan", "missing_sync")
    assert bad.returncode != 0 and "ThreadSanitizer: data race" in bad.stderr, bad.stderr[-2000:]
    assert "neighbour_kernel" in bad.stderr


def test_off_by_one_tail_is_an_overflow_for_address_sanitizer():
    good = _run("asan", "tail")
    assert good.returncode == 0 and good.stdout.strip() == "copied 44", good.stderr
    bad = _run("asan", "tail_off_by_one")
    assert bad.returncode != 0 and "heap-buffer-overflow" in bad.stderr, bad.stderr[-2000:]
    assert "copy_kernel" in bad.stderr


def test_wrong_shuffle_offset_changes_the_result():
    assert _run("plain", "shuffle").stdout.split() == ["warp", "sums", "528", "1552"]
    bad = _run("plain", "wrong_shuffle_offset")
    assert bad.returncode == 0 and bad.stdout.split()[2:] != ["528", "1552"], bad.stdout


def test_static_shared_overflow_for_address_sanitizer():
    good = _run("asan", "shared")
    assert good.returncode == 0 and good.stdout.split()[1:3] == ["64", "63"], good.stderr
    bad = _run("asan", "shared_too_small")
    # UBSan's bounds check sees the static array's type first; AddressSanitizer would report the global.
    # Which out-of-range thread (index 32..63) reports first depends on the threads' scheduling.
    assert bad.returncode != 0, bad.stdout
    assert (re.search(r"index (3[2-9]|[4-5][0-9]|6[0-3]) out of bounds for type 'float \[32\]'", bad.stderr)
            or "global-buffer-overflow" in bad.stderr), bad.stderr[-2000:]


def test_dynamic_shared_overflow_for_address_sanitizer():
    good = _run("asan", "dynamic_shared")
    assert good.returncode == 0 and good.stdout.split()[1:3] == ["64", "63"], good.stderr
    bad = _run("asan", "dynamic_shared_too_small")
    assert bad.returncode != 0 and "heap-buffer-overflow" in bad.stderr, bad.stderr[-2000:]


def test_uninitialised_dynamic_shared_memory_reads_nan():
    values = _run("plain", "uninitialised_shared").stdout.split()[1:]
    assert values[:32] == ["1"] * 32 and all(v in ("nan", "-nan") for v in values[32:]), values


def test_launch_limits_are_reported_not_run():
    lines = _run("plain", "launch_limits").stdout.splitlines()
    assert len(lines) == 6
    for line in lines[:5]:
        assert line.startswith("invalid configuration argument | empty_kernel: "), line
    assert "grid (1, 65536, 1)" in lines[0] and "grid (1, 1, 65536)" in lines[1]
    assert "block (1025, 1, 1)" in lines[2] and "block (1, 1, 65)" in lines[3]
    assert "dynamic shared memory 49156 B" in lines[4]
    assert lines[5] == "nothing ran: 0"


def test_divergent_shuffle_is_reported_as_a_deadlock():
    bad = _run("plain", "divergent_shuffle", FASTT2I_EMU_DEADLOCK_SECONDS="2")
    assert bad.returncode != 0, bad.stdout
    assert "deadlock in divergent_shuffle_kernel" in bad.stderr, bad.stderr
