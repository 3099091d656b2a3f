"""Fixtures of the CUDA-emulator tests: the emulated kernels + glue as fastt2i_cuda_emu::* ops."""
import contextlib
import importlib

import pytest
import torch

from . import emu_build


@pytest.fixture(scope="session")
def emu():
    """torch.ops.fastt2i_cuda_emu, built on first use (a minute or two on 2 cores, then cached)."""
    if not emu_build.compiler_available():
        pytest.skip(f"no host C++ compiler ({emu_build.CXX}) to build the CUDA emulator")
    torch.ops.load_library(str(emu_build.build_torch_library()))
    return torch.ops.fastt2i_cuda_emu


@contextlib.contextmanager
def emulated_cuda(emu, op: str, num_sms: int = 4):
    """Within: fastt2i.ops.<op>'s autograd Function, called with backend "cuda", runs the emulated CUDA
    glue and kernels on CPU tensors (the same Python autograd and the same C++ as on a GPU)."""
    module = importlib.import_module(f"fastt2i.ops.{op}")
    dispatch = module.DISPATCH
    table_ops = dispatch.fused_ops
    fwd, bwd = {
        "df_affine": (emu.df_affine_fwd, emu.df_affine_bwd),
        "bias_leaky_relu": (emu.bias_leaky_relu_fwd, emu.bias_leaky_relu_bwd),
        "gradient_penalty": (emu.gradient_penalty_fwd, emu.gradient_penalty_bwd),
        "damsm": (emu.damsm_word_fwd, emu.damsm_word_bwd),
        "word_region_attention": (emu.word_region_attention_fwd, emu.word_region_attention_bwd),
        "gate_split": (emu.gate_split_fwd, emu.gate_split_bwd),
    }[op]
    # an instance attribute shadows OpDispatch.fused_ops (the backend-table lookup) for this op only
    dispatch.fused_ops = lambda backend: (fwd, bwd) if backend == "cuda" else table_ops(backend)
    emu.emu_set_num_sms(num_sms)
    try:
        yield module
    finally:
        del dispatch.fused_ops
        emu.emu_set_num_sms(4)
