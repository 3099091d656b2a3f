"""Issue 19: every launch stays within the device limits for every shape the other backends accept.

The launch shapes are the launchers' own arithmetic (kernels.h *_shape, exposed by the emulated
library), checked here for B*C up to 2^24 and batches past 65,535 without running those grids; the
emulator itself applies the same limits to every launch of the other tests.  The `gpu` tests run the
same shapes on a real device."""
import math

import pytest
import torch

from helpers import assert_rel_close

MAX_X, MAX_YZ = 2**31 - 1, 65535

# (B, C): products up to 2^24, batches past gridDim.y's 65,535, and the shapes of issue 19
SHAPES = [(1, 1), (1, 2**24), (4096, 128), (1024, 512), (65535, 9), (65536, 1), (65537, 3), (2**20, 16),
          (2**24, 1), (2**12, 2**12), (131071, 128)]
SMS = [1, 132]


def _check(emu, shape):
    assert emu.emu_launch_limit_violation(shape) == "", shape
    grid = shape[:3]
    assert 1 <= grid[0] <= MAX_X and 1 <= grid[1] <= MAX_YZ and 1 <= grid[2] <= MAX_YZ, grid
    assert shape[3] * shape[4] * shape[5] <= 1024
    return grid


@pytest.mark.parametrize("B,C", SHAPES)
def test_df_affine_launches_within_limits(emu, B, C):
    for S in (1, 4, 64 * 64):
        (blocks, _, _) = _check(emu, emu.emu_launch_shape("df_affine_forward", [B, C, S]))
        assert blocks * 256 >= min(B * C * S, 65535 * 8 * 256)  # grid-stride beyond
        for sms in SMS:
            grid = _check(emu, emu.emu_launch_shape("df_affine_backward", [B, C, S, 0, sms]))
            assert grid[0] == math.ceil(B * C / 8)  # rows on gridDim.x: one warp per row
            grid = _check(emu, emu.emu_launch_shape("df_affine_backward", [B, C, S, 1, sms]))
            assert grid[0] == B * math.ceil(C / 32)  # (sample, channel group) on gridDim.x


@pytest.mark.parametrize("B,C", SHAPES)
def test_word_region_attention_launches_within_limits(emu, B, C):
    N = max(1, 2**24 // B)  # regions: B * N up to 2^24 too
    grid = _check(emu, emu.emu_launch_shape("word_region_attention_forward", [B, N]))
    assert grid[0] == B * math.ceil(N / 128)
    for dbl in (0, 1):
        for sms in SMS:
            grid = _check(emu, emu.emu_launch_shape("word_region_attention_backward", [B, N, dbl, sms]))
            assert grid[0] % B == 0


@pytest.mark.parametrize("B,C", SHAPES)
def test_gradient_penalty_and_elementwise_launches_within_limits(emu, B, C):
    grid = _check(emu, emu.emu_launch_shape("gradient_penalty", [C, B]))
    assert grid[0] == math.ceil(C / 4096) * B
    _check(emu, emu.emu_launch_shape("bias_leaky_relu", [B * C]))
    for layout in (0, 1, 2):  # gate_split: n = B*C elements of 4096 positions
        _check(emu, emu.emu_launch_shape("gate_split_backward", [B * C * 4096, B * 4096, layout]))
    pairs = min(B * C, 2**24)
    for dbl in (0, 1):
        _check(emu, emu.emu_launch_shape("damsm_cosine_scores", [pairs, 512, dbl]))
        _check(emu, emu.emu_launch_shape("damsm_softmax_backward", [pairs, 512, dbl]))


def test_issue_19_configurations_were_out_of_limits(emu):
    """The checker itself: the old df_affine NCHW backward grid (splits, ceil(B*C/8)) at B*C = 524,288
    and the old (tiles, B) grid at B = 65,536 are what it rejects."""
    assert "exceeds" in emu.emu_launch_limit_violation([1, math.ceil(4096 * 128 / 8), 1, 256, 1, 1, 0])
    assert "exceeds" in emu.emu_launch_limit_violation([1, 65536, 1, 128, 1, 1, 0])
    assert "exceeds" in emu.emu_launch_limit_violation([1, 1, 65536, 32, 8, 1, 0])


# ----------------------------------------------------------------------------- the same shapes on a GPU

def _cuda_backend():
    from fastt2i import ops
    if "cuda" not in ops.available_backends():
        pytest.skip("the cuda backend is not built here")
    return ops.use_backend("cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("B,C,H,W,channels_last", [(4096, 128, 2, 2, False), (1024, 513, 1, 3, False),
                                                   (65537, 3, 2, 1, True)])
def test_df_affine_large_batch_on_gpu(B, C, H, W, channels_last):
    from fastt2i import ops
    from fastt2i.ops.df_affine import df_affine_reference
    x = torch.randn(B, C, H, W, device="cuda", dtype=torch.float16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    gamma, beta = torch.randn(2, B, C, device="cuda"), torch.randn(2, B, C, device="cuda")
    dy = torch.randn_like(x)
    leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    with _cuda_backend():
        y = ops.df_affine(*leaves)
        y.backward(dy)
    ref_leaves = [t.clone().requires_grad_() for t in (x, gamma, beta)]
    ref = df_affine_reference(*ref_leaves)
    ref.backward(dy)
    assert_rel_close(y, ref, 1e-2, "y")
    for name, a, b in zip(("dx", "dgamma", "dbeta"), leaves, ref_leaves):
        assert_rel_close(a.grad, b.grad, 1e-2, name)


@pytest.mark.gpu
def test_word_region_attention_large_batch_on_gpu():
    from fastt2i import ops
    from fastt2i.ops.word_region_attention import word_region_attention_reference
    B = 65537
    regions = torch.randn(B, 4, 2, 3, device="cuda")
    words = torch.randn(B, 4, 5, device="cuda")
    mask = torch.rand(B, 5, device="cuda") < 0.3
    leaves = [regions.clone().requires_grad_(), words.clone().requires_grad_()]
    with _cuda_backend():
        out = ops.word_region_attention(*leaves, mask)
        out.sum().backward()
    ref_leaves = [regions.clone().requires_grad_(), words.clone().requires_grad_()]
    ref = word_region_attention_reference(*ref_leaves, mask)
    ref.sum().backward()
    assert_rel_close(out, ref, 1e-5, "context")
    assert_rel_close(leaves[0].grad, ref_leaves[0].grad, 1e-5, "dregions")
    assert_rel_close(leaves[1].grad, ref_leaves[1].grad, 1e-5, "dwords")


@pytest.mark.gpu
def test_gradient_penalty_large_batch_on_gpu():
    from fastt2i import ops
    from fastt2i.ops.gradient_penalty import gradient_penalty_reference
    grads = [torch.randn(65537, 3, 4, device="cuda"), torch.randn(65537, 5000, device="cuda") * 0.01]
    leaves = [g.clone().requires_grad_() for g in grads]
    with _cuda_backend():
        loss = ops.gradient_penalty(leaves)
        loss.backward()
    ref_leaves = [g.clone().requires_grad_() for g in grads]
    ref = gradient_penalty_reference(ref_leaves)
    ref.backward()
    assert_rel_close(loss, ref, 1e-5, "loss")
    for a, b in zip(leaves, ref_leaves):
        assert_rel_close(a.grad, b.grad, 1e-5, "grad")


@pytest.mark.gpu
def test_glue_rejects_tensors_on_another_gpu():
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    _cuda_backend()
    x = torch.randn(1, 2, 3, 3, device="cuda:0")
    gamma = torch.randn(1, 1, 2, device="cuda:0")
    with pytest.raises(RuntimeError, match="beta: expected"):
        torch.ops.fastt2i.df_affine_fwd(x, gamma, torch.randn(1, 1, 2, device="cuda:1"), 0.2)
