"""df_affine: every backend against the reference, forward and backward."""
import pytest
import torch
import torch.nn.functional as F

from fastt2i import nn as fnn
from fastt2i import ops
from helpers import TOL, assert_rel_close, backend_device, backend_params, fused_backends, sweep_backends

SHAPES = [(3, 5, 7, 9), (2, 17, 5, 3), (1, 3, 1, 1), (2, 67, 13, 11)]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def make_inputs(shape, K, dtype, layout, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    if layout == "strided":  # every other column of a wider tensor
        x = torch.randn(B, C, H, 2 * W, generator=g)[..., ::2]
    else:
        x = torch.randn(B, C, H, W, generator=g)
    gamma = 1 + 0.5 * torch.randn(K, B, C, generator=g)
    beta = 0.5 * torch.randn(K, B, C, generator=g)
    x = x.to(device=device, dtype=dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    return x, gamma.to(device), beta.to(device)


def run(fn, x, gamma, beta, grad_out):
    x, gamma, beta = (t.detach().clone().requires_grad_() for t in (x, gamma, beta))
    y = fn(x, gamma, beta)
    y.backward(grad_out)
    return y, x.grad, gamma.grad, beta.grad


def check_backend(backend, shape, K, dtype, layout):
    device = backend_device(backend)
    x, gamma, beta = make_inputs(shape, K, dtype, layout, device)
    grad_out = torch.randn(shape, device=device).to(dtype)
    expected = run(ops.df_affine_reference, x.double(), gamma.double(), beta.double(), grad_out.double())
    with ops.use_backend(backend):
        got = run(ops.df_affine, x, gamma, beta, grad_out)
    for name, a, e in zip(("y", "dx", "dgamma", "dbeta"), got, expected):
        assert_rel_close(a, e, TOL[dtype], f"{backend} {name}")
    y, dx = got[0], got[1]
    assert y.dtype == dtype and dx.dtype == dtype and got[2].dtype == gamma.dtype
    if layout == "channels_last":
        assert y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", sweep_backends())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("K", [1, 2, 3])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_fp32(backend, shape, K, layout):
    check_backend(backend, shape, K, torch.float32, layout)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_reference_half(backend, dtype, layout):
    check_backend(backend, (2, 19, 9, 7), 2, dtype, layout)


def test_reference_half_computes_in_float32():
    x, gamma, beta = make_inputs((2, 4, 3, 3), 2, torch.bfloat16, "contiguous", "cpu")
    y = ops.df_affine_reference(x, gamma, beta)
    expected = ops.df_affine_reference(x.float(), gamma, beta).to(torch.bfloat16)
    assert y.dtype == torch.bfloat16 and torch.equal(y, expected)


@pytest.mark.parametrize("backend", backend_params("reference", "cpu"))
def test_gradcheck_float64(backend):
    x, gamma, beta = make_inputs((2, 3, 4, 5), 2, torch.float64, "contiguous", "cpu")
    gamma, beta = gamma.double(), beta.double()
    inputs = tuple(t.clone().requires_grad_() for t in (x, gamma, beta))
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, g, b: ops.df_affine(a, g, b, 0.2), inputs)
        cl = (inputs[0].detach().contiguous(memory_format=torch.channels_last).requires_grad_(),) + inputs[1:]
        assert torch.autograd.gradcheck(lambda a, g, b: ops.df_affine(a, g, b, 0.2), cl)


@pytest.mark.parametrize("backend", fused_backends())
def test_zero_gradient_and_extreme_slopes(backend):
    device = backend_device(backend)
    x, gamma, beta = make_inputs((2, 5, 4, 3), 2, torch.float32, "contiguous", device)
    for slope in (0.0, 1.0, 0.2):
        with ops.use_backend(backend):
            y, dx, dg, db = run(lambda a, g, b: ops.df_affine(a, g, b, slope), x, gamma, beta,
                                torch.zeros_like(x))
        assert torch.isfinite(y).all() and not dx.any() and not dg.any() and not db.any()
        assert_rel_close(y, ops.df_affine_reference(x.double(), gamma.double(), beta.double(), slope), 1e-5)


def test_matches_dfgan_literal_chain():
    # The official DFBLK: affine0 -> LeakyReLU(0.2) -> affine1 -> LeakyReLU(0.2).
    x, gamma, beta = make_inputs((2, 6, 5, 5), 2, torch.float32, "contiguous", "cpu")
    h = F.leaky_relu(gamma[0].view(2, 6, 1, 1).expand_as(x) * x + beta[0].view(2, 6, 1, 1).expand_as(x), 0.2)
    h = F.leaky_relu(gamma[1].view(2, 6, 1, 1).expand_as(h) * h + beta[1].view(2, 6, 1, 1).expand_as(h), 0.2)
    for backend in ops.available_backends():
        with ops.use_backend(backend):
            assert_rel_close(ops.df_affine(x, gamma, beta), h, 1e-6, backend)


def test_too_many_layers_fall_back_or_explain():
    x, gamma, beta = make_inputs((1, 2, 3, 3), 9, torch.float32, "contiguous", "cpu")
    y = ops.df_affine(x, gamma, beta)  # auto: the fused backends decline K = 9, the reference takes it
    assert_rel_close(y, ops.df_affine_reference(x, gamma, beta), 1e-6)
    if "cpu" in ops.available_backends():
        with ops.use_backend("cpu"), pytest.raises(ValueError, match="K=9"):
            ops.df_affine(x, gamma, beta)


def test_dfblock_matches_per_affine_modules():
    torch.manual_seed(0)
    block = fnn.DFBlock(cond_dim=11, channels=7, num_affine=2)
    for p in block.parameters():  # leave the identity init, so the test is not trivial
        torch.nn.init.normal_(p, std=0.3)
    x, cond = torch.randn(3, 7, 5, 5), torch.randn(3, 11)

    def plain(x, cond):
        h = x
        for affine in block.affines():
            g = affine.fc_gamma(cond)[:, :, None, None]
            b = affine.fc_beta(cond)[:, :, None, None]
            h = F.leaky_relu(g * h + b, 0.2)
        return h

    expected = plain(x, cond)
    for backend in ops.available_backends():
        with ops.use_backend(backend):
            assert_rel_close(block(x, cond), expected, 1e-5, backend)
    keys = set(block.state_dict())
    assert "affine0.fc_gamma.linear1.weight" in keys and "affine1.fc_beta.linear2.bias" in keys
    fresh = fnn.DFBlock(11, 7)
    assert torch.equal(fresh.affine0.fc_gamma.linear2.bias, torch.ones(7))
    assert not fresh.affine1.fc_beta.linear2.weight.any()
    with pytest.raises(ValueError, match="cond"):
        block(x, torch.randn(3, 10))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_dfgan_shapes(backend, layout):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    for shape in [(32, 256, 4, 4), (32, 64, 64, 64), (8, 32, 256, 256)]:
        for dtype in (torch.float32, torch.bfloat16):
            check_backend(backend, shape, 2, dtype, layout)
