"""bias_leaky_relu (first and second derivatives) and DF-GAN's discriminator blocks on it."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastt2i import nn as fnn
from fastt2i import ops
from fastt2i.models import dfgan_official
from helpers import TOL, assert_rel_close, backend_device, fused_backends

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


@pytest.mark.parametrize("backend", ["reference"] + [b for b in fused_backends() if b == "cpu"])
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


# ----------------------------------------------------------------------------- modules

def randomise(module, seed=0, std=0.3):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return module


def test_fused_leaky_relu_is_a_drop_in():
    act = fnn.FusedLeakyReLU(0.2)
    assert list(act.state_dict()) == [] and list(act.parameters()) == []
    assert "negative_slope=0.2" in repr(act)
    fnn.FusedLeakyReLU(0.2, inplace=True)  # the official signature is accepted
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    for backend in ops.available_backends():
        with ops.use_backend(backend):
            y = act(x)
            (dx,) = torch.autograd.grad(y, x, torch.ones_like(y), create_graph=True)
        assert_rel_close(y, nn.LeakyReLU(0.2)(x), 1e-7, backend)
        assert_rel_close(dx, torch.where(x > 0, 1.0, 0.2), 1e-7, backend)


def test_dblock_parameters_match_official():
    for fin, fout in [(4, 8), (8, 8)]:
        ours, official = fnn.DBlock(fin, fout), dfgan_official.D_Block(fin, fout)
        assert {k: v.shape for k, v in ours.state_dict().items()} == \
               {k: v.shape for k, v in official.state_dict().items()}
        assert set(ours.state_dict()) == {"conv_r.0.weight", "conv_r.2.weight", "conv_s.weight", "conv_s.bias",
                                          "gamma"}
        assert torch.equal(ours.gamma, torch.zeros(1)) and ours.conv_s.bias is not None
        assert isinstance(ours.conv_r[1], fnn.FusedLeakyReLU) and ours.conv_r[0].bias is None
    head = fnn.JointConv(4, cond_dim=6)
    assert set(head.state_dict()) == {"joint_conv.0.weight", "joint_conv.2.weight"}
    assert head.joint_conv[0].weight.shape == (8, 38, 3, 3) and head.joint_conv[2].weight.shape == (1, 8, 4, 4)


@pytest.mark.parametrize("backend", ops.available_backends())
@pytest.mark.parametrize("fin, fout", [(4, 8), (6, 6)])
def test_dblock_matches_official(backend, fin, fout):
    official = randomise(dfgan_official.D_Block(fin, fout))
    ours = fnn.DBlock(fin, fout)
    ours.load_state_dict(official.state_dict())
    device = backend_device(backend)
    ours, official = ours.to(device), official.to(device)
    x = torch.randn(3, fin, 10, 6, device=device)
    for layout in (torch.contiguous_format, torch.channels_last):
        xl = x.contiguous(memory_format=layout)
        with ops.use_backend(backend):
            got = ours(xl)
        assert_rel_close(got, official(xl.clone()), 1e-5, f"{backend} {layout}")
        assert got.shape == (3, fout, 5, 3)


@pytest.mark.parametrize("backend", ops.available_backends())
def test_joint_conv_matches_official(backend):
    device = backend_device(backend)
    head = randomise(fnn.JointConv(2, cond_dim=5)).to(device)
    feats, sent = torch.randn(3, 16, 4, 4, device=device), torch.randn(3, 5, device=device)
    # the official NetC: sentence viewed (B, cond, 1, 1), repeated 4x4, concatenated, joint_conv
    tiled = sent.view(-1, 5, 1, 1).repeat(1, 1, 4, 4)
    c0, c2 = head.joint_conv[0], head.joint_conv[2]
    want = F.conv2d(F.leaky_relu(F.conv2d(torch.cat((feats, tiled), 1), c0.weight, padding=1), 0.2), c2.weight)
    with ops.use_backend(backend):
        got = head(feats, sent)
        got_cl = head(feats.contiguous(memory_format=torch.channels_last), sent)
    assert got.shape == (3, 1, 1, 1)
    assert_rel_close(got, want, 1e-5, backend)
    assert_rel_close(got_cl, want, 1e-5, backend)
    with pytest.raises(ValueError, match="features"):
        head(torch.randn(3, 16, 8, 8, device=device), sent)
    with pytest.raises(ValueError, match="sentence"):
        head(feats, torch.randn(3, 4, device=device))


def tiny_d(dtype=torch.float64):
    """conv_img -> DBlock(4, 8) (8x8 -> 4x4) -> JointConv(ndf=1, cond_dim=3): a whole small D + C."""
    torch.manual_seed(0)
    netd = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), fnn.DBlock(4, 8))
    netc = fnn.JointConv(1, cond_dim=3)
    randomise(netd, 1, 0.5), randomise(netc, 2, 0.5)
    return netd.to(dtype), netc.to(dtype)


@pytest.mark.parametrize("backend", ["reference"] + [b for b in fused_backends() if b == "cpu"])
def test_gradgradcheck_small_d_float64(backend):
    netd, netc = tiny_d()
    g = torch.Generator().manual_seed(3)
    img = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    sent = torch.randn(1, 3, generator=g, dtype=torch.float64, requires_grad=True)
    with ops.use_backend(backend):
        fn = lambda i, s: netc(netd(i), s)  # noqa: E731
        # the reference is PyTorch's own double backward: a random-projection check is enough there
        assert torch.autograd.gradgradcheck(fn, (img, sent), fast_mode=backend == "reference")
        block = randomise(fnn.DBlock(2, 2), 4, 0.5).double()  # the identity-shortcut variant
        x = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradgradcheck(block, (x,))


@pytest.mark.parametrize("backend", fused_backends())
def test_double_backward_small_d_matches_reference(backend):
    """D's parameter gradients of a create_graph penalty: every backend against the reference."""
    device = backend_device(backend)
    netd, netc = tiny_d(torch.float32)
    netd, netc = netd.to(device), netc.to(device)
    img = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    sent = torch.randn(2, 3, device=device, requires_grad=True)

    def penalty_grads():
        out = netc(netd(img), sent)
        gi, gs = torch.autograd.grad(out.sum(), (img, sent), create_graph=True)
        total = gi.pow(2).sum() + gs.pow(2).sum()
        return torch.autograd.grad(total, list(netd.parameters()) + list(netc.parameters()))

    with ops.use_backend("reference"):
        want = penalty_grads()
    with ops.use_backend(backend):
        got = penalty_grads()
    for i, (a, e) in enumerate(zip(got, want)):
        assert_rel_close(a, e, 1e-5, f"{backend} param {i}")


@pytest.mark.parametrize(
    "args, error, words",
    [
        ((torch.randn(2, 3, 4), torch.randn(4)), ValueError, ["bias", "(3,)"]),
        ((torch.randn(2, 3, 4), torch.randn(1, 3)), ValueError, ["bias", "1-D"]),
        ((torch.randn(5), torch.randn(5)), ValueError, ["x", "at least 2 dims"]),
        ((torch.ones(2, 3, dtype=torch.int32), None), TypeError, ["x", "int32"]),
        (([1.0, 2.0], None), TypeError, ["x", "Tensor"]),
        ((torch.randn(2, 3), None, -0.1), ValueError, ["negative_slope", ">= 0"]),
        ((torch.randn(2, 3), None, "0.2"), TypeError, ["negative_slope", "real number"]),
        ((torch.randn(2, 3), torch.randn(3, device="meta")), ValueError, ["one device"]),
    ],
)
def test_bad_inputs(args, error, words):
    with pytest.raises(error) as info:
        ops.bias_leaky_relu(*args)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize("backend", [b for b in fused_backends() if b == "cpu"])
def test_opcheck(backend):
    x, bias = make_inputs((2, 3, 4, 5), torch.float32, "channels_last", "cpu")
    torch.library.opcheck(torch.ops.fastt2i.bias_leaky_relu_fwd.default, (x, bias, 0.2))
    torch.library.opcheck(torch.ops.fastt2i.bias_leaky_relu_fwd.default, (x, None, 0.2))
    y = ops.bias_leaky_relu_reference(x, bias)
    torch.library.opcheck(torch.ops.fastt2i.bias_leaky_relu_bwd.default, (torch.randn_like(x), y, 0.2))


def test_torch_compile_fullgraph_first_order():
    # Double backward under torch.compile is broken upstream: first-order use only.
    block = randomise(fnn.DBlock(3, 5))
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)

    def f(x, bias):
        return ops.bias_leaky_relu(block(x), bias, 0.2).pow(2).sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(x, bias)
    out.backward()
    got = x.grad.clone(), bias.grad.clone()
    x.grad = bias.grad = None
    want = f(x, bias)
    want.backward()
    assert_rel_close(out.detach(), want.detach(), 1e-6)
    assert_rel_close(got[0], x.grad, 1e-6)
    assert_rel_close(got[1], bias.grad, 1e-6)


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
