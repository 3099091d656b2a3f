"""DF-GAN's discriminator blocks on the fused bias + leaky ReLU: official parameters and outputs,
double backward (MA-GP) on every backend, torch.compile."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastt2i import nn as fnn
from fastt2i import ops
from fastt2i.official import dfgan as dfgan_official
from helpers import assert_rel_close, backend_device, backend_params, fused_backends


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


@pytest.mark.parametrize("backend", backend_params())
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


@pytest.mark.parametrize("backend", backend_params())
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


@pytest.mark.slow
@pytest.mark.parametrize("backend", backend_params("reference", "cpu"))
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
