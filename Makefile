# fastt2i: `make test` (the whole suite; what CI runs) and `make demo` (the main job).
# Both create .venv, install the pinned environment and build the extension first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastt2i-installed
NVCC ?= $(or $(wildcard $(CUDA_HOME)/bin/nvcc),$(wildcard /usr/local/cuda-13.0/bin/nvcc),$(wildcard /usr/local/cuda/bin/nvcc),nvcc)
CUDA_ARCHS ?= 80 90
CSRC := $(shell find csrc -type f)
# The CUDA kernels are built into the extension only where a GPU is present (the CPU-only
# machines still compile every CUDA source in `cuda-compile-check`).
FASTT2I_WITH_CUDA ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1 || echo 0)
export FASTT2I_WITH_CUDA

# `make bench`: the op and step benchmark table (python -m benchmarks.run), saved under benchmarks/results.
.PHONY: install test test-fast demo bench cuda-compile-check cuda-emu-asan cuda-emu-tsan gpu-check clean

$(STAMP): requirements-dev.txt pyproject.toml setup.py CMakeLists.txt $(CSRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

# The whole suite (Triton kernels under TRITON_INTERPRET=1 on CPU, CUDA kernels under the CPU
# emulator in tests/cuda_emu), the emulated CUDA kernels under the sanitizers, then every CUDA
# source compiled for each architecture in CUDA_ARCHS.
test: $(STAMP)
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory cuda-emu-asan cuda-emu-tsan
	$(MAKE) --no-print-directory cuda-compile-check

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

# The main job: DF-GAN on the synthetic shapes for 3 minutes on this device; in demo_out/ the
# captioned sample grid, report.md (caption accuracy read back from the samples, step time per
# backend) and curve.png (held-out accuracy against training time).
demo: $(STAMP)
	$(PY) -m fastt2i demo --minutes 3 --out demo_out

bench: $(STAMP)
	$(PY) -m benchmarks.run --out benchmarks/results

# Every launcher of csrc/cuda/kernels.h on the CPU emulator (csrc/cuda/emu) under AddressSanitizer +
# UBSan (out-of-bounds global and shared memory: compute-sanitizer memcheck's part) and under
# ThreadSanitizer (races between a block's threads with no barrier between them: racecheck's part);
# each sanitised run must print what the plain emulated build prints.  Stand-alone programs without
# torch: a sanitised runtime under a Python host reports Python's own allocations and threads.
cuda-emu-asan:
	$(PYTHON) tests/cuda_emu/emu_build.py sanitize asan

cuda-emu-tsan:
	$(PYTHON) tests/cuda_emu/emu_build.py sanitize tsan

# Every CUDA source compiles: the kernels (*.cu, no torch headers) with plain nvcc for each
# architecture; the ATen glue (*_cuda.cpp) against the headers of the venv's torch, which is
# a CUDA build (torch 2.14.1 cu13: the only build torchvision imports with here).
TORCH_INC = $(foreach d,$(wildcard $(VENV)/lib/python*/site-packages/torch/include),-I$(d) -I$(d)/torch/csrc/api/include)
CUDA_INC := $(dir $(NVCC))../include

cuda-compile-check: $(STAMP)
	@set -e; for src in csrc/cuda/*.cu; do \
	  for arch in $(CUDA_ARCHS); do \
	    echo "nvcc sm_$$arch $$src"; \
	    $(NVCC) -std=c++17 -O3 --expt-relaxed-constexpr -gencode arch=compute_$$arch,code=sm_$$arch \
	      -c $$src -o /dev/null; \
	  done; \
	done
	@set -e; for src in csrc/cuda/*_cuda.cpp; do \
	  echo "c++ (CUDA torch headers) $$src"; \
	  $(CXX) -std=c++20 -O0 -fPIC -D_GLIBCXX_USE_CXX11_ABI=1 -DFASTT2I_WITH_CUDA $(TORCH_INC) \
	    -I$(CUDA_INC) -c $$src -o /dev/null; \
	done

# On a GPU machine (torch with CUDA preinstalled, no network): build in place with the
# system python, run the whole suite including `gpu` tests, then the benchmark runner.
gpu-check:
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps --no-index -e .
	$(PYTHON) -m fastt2i.info
	$(PYTHON) -m pytest -q tests 2>&1 | tee $${OUT:-.}/gpu-tests.log
	$(PYTHON) -m benchmarks.run --out $${OUT:-benchmarks/results} 2>&1 | tee $${OUT:-.}/gpu-bench.log

clean:
	rm -rf build $(VENV) fastt2i/_C*.so *.egg-info
