"""bias_leaky_relu: first and second derivatives on every backend (DF-GAN's discriminator blocks on it:
tests/nn/test_discriminator_blocks.py)."""
import pytest
import torch

from fastt2i import ops
from helpers import TOL, assert_rel_close, backend_device, backend_params, fused_backends, sweep_backends

SHAPES = [(3, 5, 7, 9), (2, 17, 5, 3), (1, 3, 1, 1), (2, 67, 13, 11), (4, 7)]
LAYOUTS = ["contiguous", "channels_last", "strided", "permuted"]


def make_inputs(shape, dtype, layout, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    if layout == "strided" and len(shape) == 4:  # every other column of a wider tensor
        x = torch.randn(*shape[:-1], 2 * shape[-1], generator=g)[..., ::2]
    elif layout == "permuted" and len(shape) == 4:  # dense, but neither NCHW nor NHWC
        x = torch.randn(shape[0], shape[2], shape[3], shape[1], generator=g).permute(0, 3, 2, 1).transpose(2, 3)
    else:
        x = torch.randn(shape, generator=g)
    bias = 0.5 * torch.randn(shape[1], generator=g)
    x = x.to(device=device, dtype=dtype)
    if layout == "channels_last" and len(shape) == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, bias.to(device)


def first_and_second(fn, x, bias, grad_out, w, u, slope):
    """y, dx, dbias, and the second-order grads of <dx, w> + <dbias, u> w.r.t. grad_out, x, bias."""
    x = x.detach().clone().requires_grad_()
    b = None if bias is None else bias.detach().clone().requires_grad_()
    v = grad_out.detach().clone().requires_grad_()
    y = fn(x, b, slope)
    inputs = (x,) if b is None else (x, b)
    first = torch.autograd.grad(y, inputs, v, create_graph=True)
    total = (first[0] * w).sum() + (0 if b is None else (first[1] * u).sum())
    second = torch.autograd.grad(total, (v,) + inputs, allow_unused=True)
    second = [torch.zeros_like(t) if s is None else s for s, t in zip(second, (v,) + inputs)]
    return [y, *first, *second]


def check_backend(backend, shape, dtype, layout, with_bias, slope=0.2):
    device = backend_device(backend)
    x, bias = make_inputs(shape, dtype, layout, device)
    bias = bias if with_bias else None
    g = torch.Generator().manual_seed(1)
    grad_out = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    w = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    u = torch.randn(shape[1], generator=g).to(device)
    want = first_and_second(ops.bias_leaky_relu_reference, x.double(), None if bias is None else bias.double(),
                            grad_out.double(), w.double(), u.double(), slope)
    with ops.use_backend(backend):
        got = first_and_second(ops.bias_leaky_relu, x, bias, grad_out, w, u, slope)
    names = (["y", "dx"] + (["dbias"] if with_bias else []) + ["d2 grad_out", "d2 x"]
             + (["d2 bias"] if with_bias else []))
    for name, a, e in zip(names, got, want):
        if name in ("d2 x", "d2 bias"):  # zero almost everywhere (the slope is a step function)
            assert not a.any(), f"{backend} {name}"
            continue
        assert_rel_close(a, e, TOL[dtype], f"{backend} {name}")
    assert got[0].dtype == dtype and got[1].dtype == dtype
    if layout == "channels_last" and len(shape) == 4:
        assert got[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_inference_call_skips_autograd(backend, layout, with_bias):
    """Without gradients the op calls its kernel directly: same values and layout, no graph."""
    x, bias = make_inputs((2, 17, 5, 3), torch.float32, layout, backend_device(backend))
    bias = bias if with_bias else None
    want = ops.bias_leaky_relu_reference(x, bias, 0.2)
    with ops.use_backend(backend):
        plain = ops.bias_leaky_relu(x, bias, 0.2)
        with torch.no_grad():
            no_grad = ops.bias_leaky_relu(x.clone().requires_grad_(), bias, 0.2)
        tracked = ops.bias_leaky_relu(x.clone().requires_grad_(), bias, 0.2)
    for got in (plain, no_grad, tracked):
        assert_rel_close(got, want, TOL[torch.float32], backend)
    assert plain.grad_fn is None and no_grad.grad_fn is None and tracked.grad_fn is not None
    if layout == "channels_last":
        assert plain.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_plain_backward(backend, layout, with_bias):
    """A backward without create_graph (the kernel alone, no graph of the gradient) gives the same grads."""
    device = backend_device(backend)
    x, bias = make_inputs((2, 17, 5, 3), torch.float32, layout, device)
    bias = bias if with_bias else None
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)).to(device)
    leaves = lambda: [t.detach().clone().requires_grad_() for t in (x, bias) if t is not None]  # noqa: E731
    want_in, got_in = leaves(), leaves()
    call = lambda fn, leaf: fn(leaf[0], leaf[1] if with_bias else None, 0.2)  # noqa: E731
    call(ops.bias_leaky_relu_reference, want_in).backward(grad_out)
    with ops.use_backend(backend):
        call(ops.bias_leaky_relu, got_in).backward(grad_out)
    for got, want in zip(got_in, want_in):
        assert_rel_close(got.grad, want.grad, TOL[torch.float32], backend)
        assert got.grad.grad_fn is None


@pytest.mark.parametrize("backend", sweep_backends())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_reference_fp32(backend, shape, layout, with_bias):
    check_backend(backend, shape, torch.float32, layout, with_bias)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_reference_half(backend, dtype, layout):
    check_backend(backend, (2, 19, 9, 7), dtype, layout, with_bias=True)
    check_backend(backend, (2, 19, 9, 7), dtype, layout, with_bias=False)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("slope", [0.0, 1.0, 0.01])
def test_slopes_and_zeros(backend, slope):
    check_backend(backend, (2, 5, 4, 3), torch.float32, "contiguous", True, slope)
    device = backend_device(backend)
    x = torch.zeros(2, 3, 4, 4, device=device, requires_grad=True)  # exactly 0: the slope side, as PyTorch
    with ops.use_backend(backend):
        y = ops.bias_leaky_relu(x, None, 0.2)
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    assert not y.any() and torch.equal(dx, torch.full_like(dx, 0.2))


@pytest.mark.parametrize("backend", backend_params("reference", "cpu"))
def test_gradgradcheck_op_float64(backend):
    x, bias = make_inputs((2, 3, 4, 5), torch.float64, "contiguous", "cpu")
    x = x + 0.05 * torch.sign(x)  # keep finite differences away from the kink
    inputs = (x.requires_grad_(), bias.double().requires_grad_())
    with ops.use_backend(backend):
        fn = lambda a, b: ops.bias_leaky_relu(a, b, 0.2)  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


def test_higher_orders_stay_fused():
    # The backward of the backward is the same op, itself differentiable with that op again.
    if "cpu" not in ops.available_backends():
        pytest.skip("cpu backend not built")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    v = torch.randn_like(x, requires_grad=True)
    with ops.use_backend("cpu"):
        y = ops.bias_leaky_relu(x, None, 0.2)
        (dx,) = torch.autograd.grad(y, x, v, create_graph=True)
        (dv,) = torch.autograd.grad(dx.sum(), v, create_graph=True)
        assert "BiasLeakyReLUGrad" in type(dv.grad_fn).__name__
    assert_rel_close(dv, torch.where(x > 0, torch.ones_like(x), torch.full_like(x, 0.2)), 1e-12)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_dfgan_shapes(backend, layout):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    for shape in [(32, 256, 4, 4), (32, 64, 64, 64), (32, 32, 128, 128)]:
        for dtype in (torch.float32, torch.bfloat16):
            check_backend(backend, shape, dtype, layout, with_bias=False)
            check_backend(backend, shape, dtype, layout, with_bias=True)
