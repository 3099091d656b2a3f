# fastt2i: `make test` (the whole suite; what CI runs) and `make demo` (the main job).
# Both create .venv, install the pinned environment and build the extension first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fastt2i-installed
NVCC ?= $(or $(wildcard $(CUDA_HOME)/bin/nvcc),$(wildcard /usr/local/cuda-13.0/bin/nvcc),$(wildcard /usr/local/cuda/bin/nvcc),nvcc)
CUDA_ARCHS ?= 80 90
CSRC := $(shell find csrc -type f)

.PHONY: install test test-fast demo bench cuda-compile-check gpu-check clean

$(STAMP): requirements-dev.txt pyproject.toml setup.py CMakeLists.txt $(CSRC)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps -e .
	touch $@

install: $(STAMP)

# The whole suite (Triton kernels under TRITON_INTERPRET=1 on CPU), then every CUDA
# source compiled for each architecture in CUDA_ARCHS.
test: $(STAMP)
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory cuda-compile-check

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

demo: $(STAMP)
	$(PY) -m benchmarks.run --quick

bench: $(STAMP)
	$(PY) -m benchmarks.run

# The kernels include no torch headers, so plain nvcc checks them without a CUDA torch.
cuda-compile-check:
	@set -e; for src in csrc/cuda/*.cu; do \
	  for arch in $(CUDA_ARCHS); do \
	    echo "nvcc sm_$$arch $$src"; \
	    $(NVCC) -std=c++17 -O3 --expt-relaxed-constexpr -gencode arch=compute_$$arch,code=sm_$$arch \
	      -c $$src -o /dev/null; \
	  done; \
	done

# On a GPU machine (torch with CUDA preinstalled, no network): build in place with the
# system python, run the whole suite including `gpu` tests, then the benchmark runner.
gpu-check:
	$(PYTHON) -m pip install -q --no-build-isolation --no-deps --no-index -e .
	$(PYTHON) -m fastt2i.info
	$(PYTHON) -m pytest -q tests 2>&1 | tee $${OUT:-.}/gpu-tests.log
	$(PYTHON) -m benchmarks.run --out benchmarks/results 2>&1 | tee $${OUT:-.}/gpu-bench.log

clean:
	rm -rf build $(VENV) fastt2i/_C*.so *.egg-info
