"""Builds the CUDA sources for the CPU emulator (csrc/cuda/emu) with the host C++ compiler.

``build_torch_library()``: the kernels (*.cu) and their real ATen glue (*_cuda.cpp) as a torch op
library, ``fastt2i_cuda_emu::*``, taking CPU tensors (test only).  ``build_program(...)``: a
stand-alone program (no torch) of the emulator and the given sources, optionally with sanitizers
(the planted-bug tests).  Objects are rebuilt only when a source or a header under csrc/ changed.

As a script: ``python tests/cuda_emu/emu_build.py library`` builds the library;
``python tests/cuda_emu/emu_build.py sanitize asan|tsan`` builds sanitizer_driver.cpp plainly and with
the sanitizer, runs both and fails on a sanitizer report or on any difference in their output
(`make cuda-emu-asan`, `make cuda-emu-tsan`).
"""
from __future__ import annotations

import concurrent.futures
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CUDA_DIR = ROOT / "csrc" / "cuda"
EMU_DIR = CUDA_DIR / "emu"
BUILD_DIR = ROOT / "build" / "cuda_emu"
CXX = os.environ.get("CXX", "g++")
JOBS = int(os.environ.get("MAX_JOBS", "2"))

COMMON_FLAGS = ["-std=c++20", "-fPIC", "-pthread", "-DFASTT2I_CUDA_EMU", f"-I{EMU_DIR / 'include'}", "-Wall",
                "-Wno-unused-function", "-Wno-unknown-pragmas"]
SANITIZERS = {"plain": [], "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                                    "-fno-omit-frame-pointer"],
              "tsan": ["-fsanitize=thread"]}


def compiler_available() -> bool:
    return shutil.which(CXX) is not None


def _headers() -> list[Path]:
    return sorted(p for p in (ROOT / "csrc").rglob("*") if p.suffix in (".h", ".cuh"))


def _newest(paths) -> float:
    return max(p.stat().st_mtime for p in paths)


def _compile(src: Path, obj: Path, flags: list[str]) -> None:
    cmd = [CXX, *flags, "-x", "c++", "-c", str(src), "-o", str(obj)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"compiling {src} for the CUDA emulator failed:\n{' '.join(cmd)}\n{result.stderr}")


def _build(name: str, sources: list[Path], flags: list[str], link: list[str], shared: bool) -> Path:
    key = hashlib.sha1(" ".join([CXX, *flags, *link]).encode()).hexdigest()[:8]
    out_dir = BUILD_DIR / f"{name}-{key}"
    out_dir.mkdir(parents=True, exist_ok=True)
    header_time = _newest(_headers())
    jobs = []
    objects = []
    for src in sources:
        obj = out_dir / (src.parent.name + "_" + src.name + ".o")
        objects.append(obj)
        if not obj.exists() or obj.stat().st_mtime < max(src.stat().st_mtime, header_time):
            jobs.append((src, obj))
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        for future in [pool.submit(_compile, src, obj, flags) for src, obj in jobs]:
            future.result()
    target = out_dir / (f"lib{name}.so" if shared else name)
    if jobs or not target.exists():
        cmd = [CXX, *flags, *(["-shared"] if shared else []), *map(str, objects), "-o", str(target), *link]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"linking {target} failed:\n{' '.join(cmd)}\n{result.stderr}")
    return target


def kernel_sources() -> list[Path]:
    return sorted(CUDA_DIR.glob("*.cu"))


def build_torch_library() -> Path:
    """The emulated kernels and glue as a library for ``torch.ops.load_library``."""
    import torch
    from torch.utils import cpp_extension

    torch_lib = Path(torch.__file__).parent / "lib"
    flags = [*COMMON_FLAGS, "-O2", "-fvisibility=hidden",
             f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
             *[f"-I{p}" for p in cpp_extension.include_paths()]]
    sources = [*kernel_sources(), *sorted(CUDA_DIR.glob("*_cuda.cpp")), EMU_DIR / "emu.cpp", EMU_DIR / "torch_ops.cpp"]
    link = [f"-L{torch_lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}"]
    return _build("fastt2i_cuda_emu", sources, flags, link, shared=True)


def build_program(name: str, sources: list[Path], sanitizer: str = "plain", opt: str = "-O1") -> Path:
    """A stand-alone emulator program (no torch) of `sources` plus the emulator runtime."""
    flags = [*COMMON_FLAGS, opt, "-g", *SANITIZERS[sanitizer], f"-I{CUDA_DIR}"]
    return _build(f"{name}-{sanitizer}", [*sources, EMU_DIR / "emu.cpp"], flags, [], shared=False)


SANITIZER_ENV = {
    "asan": {"ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1:abort_on_error=0",
             "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"},
    "tsan": {"TSAN_OPTIONS": "halt_on_error=1:exitcode=66:second_deadlock_stack=1"},
}


def run_sanitized(sanitizer: str) -> int:
    """Every launcher under the sanitizer; its output must equal the plain build's."""
    import time
    driver = Path(__file__).with_name("sanitizer_driver.cpp")
    outputs = {}
    for variant in ("plain", sanitizer):
        program = build_program("sanitizer_driver", [driver, *kernel_sources()], variant)
        start = time.monotonic()
        result = subprocess.run([str(program)], capture_output=True, text=True,
                                env={**os.environ, **SANITIZER_ENV.get(variant, {})})
        print(f"{program.name}: exit {result.returncode} in {time.monotonic() - start:.1f} s")
        if result.returncode != 0 or result.stderr.strip():
            print(result.stdout + result.stderr)
            print(f"FAILED: the {variant} emulated kernels reported errors")
            return 1
        outputs[variant] = result.stdout
    if outputs["plain"] != outputs[sanitizer]:
        import difflib
        print("".join(difflib.unified_diff(outputs["plain"].splitlines(True), outputs[sanitizer].splitlines(True),
                                           "plain", sanitizer)))
        print(f"FAILED: the {sanitizer} build computes different results")
        return 1
    print(f"{sanitizer}: every emulated CUDA kernel ran clean ({len(outputs['plain'].splitlines())} outputs agree)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "sanitize" and len(sys.argv) == 3 and sys.argv[2] in ("asan", "tsan"):
        sys.exit(run_sanitized(sys.argv[2]))
    if len(sys.argv) == 2 and sys.argv[1] == "library":
        print(build_torch_library())
        sys.exit(0)
    sys.exit("usage: emu_build.py library | sanitize asan|tsan")
