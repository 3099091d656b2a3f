"""Build of fastt2i: setuptools drives CMake (Ninja) for the extension fastt2i._C.

Environment:
  FASTT2I_BUILD_EXT=0     pure-Python install (no compiled backends)
  FASTT2I_WITH_CUDA=0/1   force the CUDA kernels off/on (default: on when torch has CUDA and nvcc is found)
  FASTT2I_CUDA_ARCHS      CUDA architectures, CMake syntax (default "80;90")
  FASTT2I_CPU_AVX512=0    skip the AVX-512 level of the CPU kernels (built by default where the compiler can;
                          the level that runs is chosen at run time: ATEN_CPU_CAPABILITY=default|avx2|avx512)
  MAX_JOBS                parallel compile jobs (default: cores, at most 1 job per 2 GB of memory)
"""
import os
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


def _find_nvcc():
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def _tool(module_name: str, binary: str) -> str:
    """The cmake/ninja of the pip packages when installed (a venv's bin/ may not be on PATH)."""
    try:
        module = __import__(module_name)
        path = os.path.join(getattr(module, "CMAKE_BIN_DIR", None) or module.BIN_DIR, binary)
        if os.path.exists(path):
            return path
    except (ImportError, AttributeError):
        pass
    found = shutil.which(binary)
    if found is None:
        raise RuntimeError(f"{binary} not found: pip install {module_name}")
    return found


def _max_jobs() -> int:
    if os.environ.get("MAX_JOBS"):
        return int(os.environ["MAX_JOBS"])
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):
        mem_gb = 8
    return max(1, min(os.cpu_count() or 1, int(mem_gb // 2)))


class CMakeBuild(build_ext):
    def build_extension(self, ext):
        import pybind11
        import torch
        from torch.utils import cpp_extension

        out_dir = os.path.abspath(os.path.dirname(self.get_ext_fullpath(ext.name)))
        nvcc = _find_nvcc()
        want_cuda = os.environ.get("FASTT2I_WITH_CUDA")
        with_cuda = torch.version.cuda is not None and nvcc is not None
        if want_cuda == "1" and not with_cuda:
            raise RuntimeError(
                "FASTT2I_WITH_CUDA=1 but " + ("this torch has no CUDA" if torch.version.cuda is None
                                              else "nvcc was not found: set CUDA_HOME"))
        if want_cuda == "0":
            with_cuda = False
        include_dirs = list(cpp_extension.include_paths())
        nvidia_include = os.path.join(os.path.dirname(os.path.dirname(torch.__file__)), "nvidia", "cu13", "include")
        if with_cuda and os.path.isdir(nvidia_include):
            include_dirs.append(nvidia_include)
        args = [
            "-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={_tool('ninja', 'ninja')}",
            f"-DCMAKE_BUILD_TYPE={'Debug' if self.debug else 'Release'}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DTORCH_INCLUDE_DIRS={';'.join(include_dirs)}",
            f"-DTORCH_LIBRARY_DIR={os.path.join(os.path.dirname(torch.__file__), 'lib')}",
            f"-DTORCH_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
            f"-DFASTT2I_WITH_CUDA={'ON' if with_cuda else 'OFF'}",
            f"-DFASTT2I_CPU_AVX512={'OFF' if os.environ.get('FASTT2I_CPU_AVX512') == '0' else 'ON'}",
        ]
        if with_cuda:
            args += [f"-DCMAKE_CUDA_COMPILER={nvcc}",
                     f"-DFASTT2I_CUDA_ARCHS={os.environ.get('FASTT2I_CUDA_ARCHS', '80;90')}"]
        build_dir = os.path.abspath(self.build_temp)
        os.makedirs(build_dir, exist_ok=True)
        print(f"fastt2i: building the extension (CUDA kernels: {'yes' if with_cuda else 'no'})", flush=True)
        cmake = _tool("cmake", "cmake")
        subprocess.check_call([cmake, os.path.abspath(os.path.dirname(__file__)), *args], cwd=build_dir)
        subprocess.check_call([cmake, "--build", ".", "-j", str(_max_jobs())], cwd=build_dir)


build_ext_enabled = os.environ.get("FASTT2I_BUILD_EXT", "1") != "0"

setup(
    packages=find_packages(include=["fastt2i", "fastt2i.*"]),
    ext_modules=[CMakeExtension("fastt2i._C")] if build_ext_enabled else [],
    cmdclass={"build_ext": CMakeBuild},
)
