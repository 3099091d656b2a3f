"""Limits written both in Python (fastt2i.ops) and in C++ (csrc/*_host.h, csrc/cuda/kernels.h)
agree: the extension exports its values through ``fastt2i._C.limits()``."""
import importlib

import pytest

from fastt2i.ops import _backend
from helpers import requires_backend

PYTHON_LIMITS = {
    # name in _C.limits(): (module of fastt2i.ops, attribute)
    "df_affine_max_layers": ("df_affine", "MAX_LAYERS"),
    "word_region_attention_max_words": ("word_region_attention", "MAX_WORDS"),
    "damsm_chunk_elements": ("damsm", "_CHUNK_ELEMENTS"),
    "damsm_max_words_cuda": ("damsm", "MAX_WORDS_CUDA"),
}


@requires_backend("cpu")
@pytest.mark.parametrize("name", sorted(PYTHON_LIMITS))
def test_python_and_cpp_limits_agree(name):
    exported = _backend.extension().limits()
    if name == "damsm_max_words_cuda" and not _backend.extension().with_cuda():
        pytest.skip("the CUDA limits are exported by a build with the CUDA kernels")
    module, attribute = PYTHON_LIMITS[name]
    python_value = getattr(importlib.import_module(f"fastt2i.ops.{module}"), attribute)
    assert exported[name] == python_value, f"{name}: C++ {exported[name]}, Python {module}.{attribute} {python_value}"


@requires_backend("cpu")
def test_every_exported_limit_is_checked():
    assert set(_backend.extension().limits()) <= set(PYTHON_LIMITS)
