import os

# The Triton kernels run on CPU tensors through the interpreter: set before importing triton.
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import fastt2i  # noqa: E402,F401
from fastt2i import ops  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _restore_backend():
    previous = ops.get_backend()
    yield
    ops.set_backend(previous)
