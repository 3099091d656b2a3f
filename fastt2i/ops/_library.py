"""The ``fastt2i`` operator namespace.

Schemas are declared here, in Python, once; the compiled extension only adds
per-device kernels (``TORCH_LIBRARY_IMPL``) and each op module registers its fake
(meta) kernel, so ``torch.compile`` traces the ops whether or not the extension
is built.
"""
import torch

LIBRARY = torch.library.Library("fastt2i", "DEF")


def define(schema: str) -> None:
    LIBRARY.define(schema)
