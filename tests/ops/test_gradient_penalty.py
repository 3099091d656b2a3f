"""gradient_penalty op and the MA-GP / R1 losses: every backend against the reference and the
official DF-GAN MA_GP."""
import pytest
import torch
from torch import nn

import fastt2i.losses as losses
from fastt2i import nn as fnn
from fastt2i import ops
from fastt2i.official import dfgan as dfgan_official
from helpers import TOL, assert_rel_close, backend_device, backend_params, fused_backends, sweep_backends

LAYOUTS = ["contiguous", "channels_last", "strided"]


def make_grads(B=3, H=7, W=5, D=11, dtypes=(torch.float32, torch.float32), layout="contiguous",
               device="cpu", zero_sample=None, seed=0, magnitude=1.0):
    g = torch.Generator().manual_seed(seed)
    if layout == "strided":  # every other column of a wider tensor: samples are not dense spans
        image = torch.randn(B, 3, H, 2 * W, generator=g)[..., ::2]
    else:
        image = torch.randn(B, 3, H, W, generator=g)
    sentence = torch.randn(B, D, generator=g)
    image, sentence = image * magnitude, sentence * magnitude
    if zero_sample is not None:
        image[zero_sample] = 0
        sentence[zero_sample] = 0
    image = image.to(device=device, dtype=dtypes[0])
    if layout == "channels_last":
        image = image.contiguous(memory_format=torch.channels_last)
    return [image, sentence.to(device=device, dtype=dtypes[1])]


def run(fn, grads, k, p):
    leaves = [t.detach().clone().requires_grad_() for t in grads]
    loss = fn(leaves, k, p)
    loss.backward()
    return loss, [t.grad for t in leaves]


def expected(grads, k, p):
    return run(ops.gradient_penalty_reference, [t.double() for t in grads], k, p)


@pytest.mark.parametrize("backend", sweep_backends())
@pytest.mark.parametrize("p", [2.0, 6.0])
@pytest.mark.parametrize("k", [2.0, 0.5, 5.0])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_fp32(backend, p, k, layout):
    grads = make_grads(layout=layout, device=backend_device(backend), zero_sample=1)
    want_loss, want_grads = expected(grads, k, p)
    with ops.use_backend(backend):
        loss, got = run(ops.gradient_penalty, grads, k, p)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    assert_rel_close(loss, want_loss, TOL[torch.float32], f"{backend} loss")
    for i, (a, e) in enumerate(zip(got, want_grads)):
        assert a.dtype == grads[i].dtype and a.shape == grads[i].shape
        assert_rel_close(a, e, TOL[torch.float32], f"{backend} d grads[{i}]")
        assert not a[1].any(), "the zero-gradient sample must get a zero derivative"


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("dtypes", [(torch.float16, torch.float32), (torch.bfloat16, torch.float32),
                                    (torch.bfloat16, torch.float16)])
def test_mixed_dtypes(backend, dtypes):
    # D's gradients are small: at magnitude 1 the p = 6 derivative overflows float16
    grads = make_grads(dtypes=dtypes, device=backend_device(backend), magnitude=0.05)
    want_loss, want_grads = expected(grads, 2.0, 6.0)
    with ops.use_backend(backend):
        loss, got = run(ops.gradient_penalty, grads, 2.0, 6.0)
    assert loss.dtype == torch.float32
    assert_rel_close(loss, want_loss, 1e-5, f"{backend} loss")  # the inputs are exact, the sums are float32
    for i, (a, e) in enumerate(zip(got, want_grads)):
        assert a.dtype == dtypes[i]
        assert_rel_close(a, e, 1e-2, f"{backend} d grads[{i}]")


@pytest.mark.parametrize("backend", backend_params())
def test_edge_cases_never_nan(backend):
    device = backend_device(backend)
    zeros = [torch.zeros(2, 3, 4, 4, device=device), torch.zeros(2, 5, device=device)]
    with ops.use_backend(backend):
        for p in (0.5, 1.0, 2.0, 6.0):
            loss, got = run(ops.gradient_penalty, zeros, 2.0, p)
            assert loss.item() == 0.0 and all(torch.equal(t, torch.zeros_like(t)) for t in got)
        # one tensor only, a sample of zero size per tensor, B = 1, an odd exponent
        single = make_grads(B=1, device=device)[:1]
        loss, got = run(ops.gradient_penalty, single, 3.0, 1.0)
        want_loss, want_grads = expected(single, 3.0, 1.0)
        assert_rel_close(loss, want_loss, 1e-5)
        assert_rel_close(got[0], want_grads[0], 1e-5)
        empty = [torch.randn(2, 0, device=device), torch.randn(2, 3, device=device)]
        loss, got = run(ops.gradient_penalty, empty, 1.0, 2.0)
        assert_rel_close(loss, empty[1].double().pow(2).sum(1).mean(), 1e-5)
        assert got[0].shape == (2, 0)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("B", [1, 37])
def test_batch_sizes(backend, B):
    # 37 > the 32 samples a Triton finalising step and a CUDA warp round take at once
    grads = make_grads(B=B, H=3, W=3, D=5, device=backend_device(backend), zero_sample=0 if B > 1 else None)
    want_loss, want_grads = expected(grads, 2.0, 6.0)
    with ops.use_backend(backend):
        loss, got = run(ops.gradient_penalty, grads, 2.0, 6.0)
    assert_rel_close(loss, want_loss, 1e-5, backend)
    for a, e in zip(got, want_grads):
        assert_rel_close(a, e, 1e-5, backend)


@pytest.mark.parametrize("backend", fused_backends())
def test_many_tensors_and_scale(backend):
    # more tensors than the CUDA kernel takes per launch (8), and the AMP unscale factor
    device = backend_device(backend)
    g = torch.Generator().manual_seed(3)
    grads = [torch.randn(4, n, generator=g).to(device) for n in (1, 5, 17, 33, 2, 9, 3, 40, 7, 11)]
    scale = 1 / 1024
    want = ops.gradient_penalty_reference([t.double() for t in grads], 2.0, 6.0, scale)
    assert_rel_close(want, ops.gradient_penalty_reference([t.double() * scale for t in grads], 2.0, 6.0), 1e-12)
    with ops.use_backend(backend):
        leaves = [t.clone().requires_grad_() for t in grads]
        loss = ops.gradient_penalty(leaves, 2.0, 6.0, scale=scale)
        loss.backward()
    assert_rel_close(loss, want, 1e-5, backend)
    ref_leaves = [t.double().requires_grad_() for t in grads]
    ops.gradient_penalty_reference(ref_leaves, 2.0, 6.0, scale).backward()
    for a, e in zip(leaves, ref_leaves):
        assert_rel_close(a.grad, e.grad, 1e-5, backend)


@pytest.mark.parametrize("backend", backend_params("reference", "cpu"))
@pytest.mark.parametrize("p", [2.0, 6.0, 3.0])
def test_gradcheck_float64(backend, p):
    grads = [t.double().requires_grad_() for t in make_grads(B=3, H=3, W=2, D=4)]
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda a, b: ops.gradient_penalty([a, b], 1.5, p), grads)


def test_reference_is_official_math():
    # the official MA_GP: flatten, cat, sqrt of the sum of squares, 2 * mean(norm ** 6)
    grads = make_grads()
    flat = torch.cat([t.reshape(t.shape[0], -1) for t in grads], 1).double()
    official = 2.0 * torch.mean(torch.sqrt(torch.sum(flat ** 2, dim=1)) ** 6)
    assert_rel_close(ops.gradient_penalty_reference(grads, 2.0, 6.0), official, 1e-6)


NDF, COND = 4, 6


def small_d(official: bool, seed=0):
    """NetD(ndf=4, imsize=32) + NetC(ndf=4, cond_dim=6): conv_img, D blocks 32 -> 16 -> 8 -> 4."""
    block = dfgan_official.D_Block if official else fnn.DBlock
    netd = nn.Sequential(nn.Conv2d(3, NDF, 3, 1, 1), block(NDF, 2 * NDF), block(2 * NDF, 4 * NDF),
                         block(4 * NDF, 8 * NDF))
    netc = dfgan_official.NetC(NDF, COND) if official else fnn.JointConv(NDF, COND)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in list(netd.parameters()) + list(netc.parameters()):  # gamma != 0: the residuals matter
            p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.numel() == 1 else 0.3))
    return netd, netc


def ma_gp_step(netd, netc, img, sent, penalty):
    img = img.clone().requires_grad_()
    sent = sent.clone().requires_grad_()
    out = netc(netd(img), sent)
    loss = penalty(img, sent, out)
    params = list(netd.parameters()) + list(netc.parameters())
    grads = torch.autograd.grad(loss, params)
    return loss.detach(), grads


def test_small_d_keys_match_official():
    ours, official = small_d(False), small_d(True)
    for a, b in zip(ours, official):
        assert set(a.state_dict()) == set(b.state_dict())
        for key, value in b.state_dict().items():
            assert torch.equal(a.state_dict()[key], value)


@pytest.mark.slow
@pytest.mark.parametrize("backend", backend_params())
def test_ma_gp_matches_official(backend):
    g = torch.Generator().manual_seed(1)
    img, sent = torch.randn(3, 3, 32, 32, generator=g), torch.randn(3, COND, generator=g)
    want_loss, want_grads = ma_gp_step(*small_d(True), img, sent, dfgan_official.MA_GP)
    netd, netc = small_d(False)
    device = backend_device(backend)
    netd, netc, img, sent = netd.to(device), netc.to(device), img.to(device), sent.to(device)
    with ops.use_backend(backend):
        loss, grads = ma_gp_step(netd, netc, img, sent,
                                 lambda i, s, out: losses.ma_gradient_penalty(out, i, s))
    assert want_loss > 1e-3  # a penalty that matters
    assert_rel_close(loss, want_loss, 1e-5, f"{backend} MA-GP")
    for i, (a, e) in enumerate(zip(grads, want_grads)):
        assert_rel_close(a, e, 1e-4, f"{backend} d MA-GP / d param {i}")


def test_ma_gp_with_grad_scaler_matches_unscaled():
    g = torch.Generator().manual_seed(2)
    img, sent = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, COND, generator=g)
    netd, netc = small_d(False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
    plain, plain_grads = ma_gp_step(netd, netc, img, sent, lambda i, s, o: losses.ma_gradient_penalty(o, i, s))
    scaled, scaled_grads = ma_gp_step(netd, netc, img, sent,
                                      lambda i, s, o: losses.ma_gradient_penalty(o, i, s, scaler=scaler))
    assert_rel_close(scaled, plain, 1e-5)
    for a, e in zip(scaled_grads, plain_grads):
        assert_rel_close(a, e, 1e-4)
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert_rel_close(ma_gp_step(netd, netc, img, sent,
                                lambda i, s, o: losses.ma_gradient_penalty(o, i, s, scaler=disabled))[0], plain, 1e-6)


@pytest.mark.parametrize("backend", backend_params())
def test_r1_penalty(backend):
    netd, netc = small_d(False)
    g = torch.Generator().manual_seed(4)
    real = torch.randn(2, 3, 32, 32, generator=g).requires_grad_()
    sent = torch.randn(2, COND, generator=g)
    with ops.use_backend(backend):
        out = netc(netd(real), sent)
        got = losses.r1_penalty(out, real, gamma=10.0)
    (grad,) = torch.autograd.grad(out.sum(), real, create_graph=True)
    want = 10.0 / 2 * grad.pow(2).reshape(2, -1).sum(1).mean()
    assert_rel_close(got, want, 1e-5, backend)
    assert got.requires_grad


def test_penalty_inputs_must_require_grad():
    netd, netc = small_d(False)
    img, sent = torch.randn(2, 3, 32, 32), torch.randn(2, COND, requires_grad=True)
    out = netc(netd(img), sent)
    with pytest.raises(ValueError, match="requires_grad"):
        losses.ma_gradient_penalty(out, img, sent)


def test_lazy_regularizer():
    lazy = losses.LazyRegularizer(every=4)
    assert [s for s in range(10) if lazy.due(s)] == [0, 4, 8] and lazy.weight == 4
    x = torch.randn(3, 5, requires_grad=True)
    got = lazy(lambda t: ops.gradient_penalty([t], 1.0, 2.0), x)
    assert_rel_close(got, 4 * x.detach().double().pow(2).sum(1).mean(), 1e-5)
    assert all(losses.LazyRegularizer(1).due(s) for s in range(3))
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="every"):
            losses.LazyRegularizer(bad)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_dfgan_shapes(backend):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    g = torch.Generator().manual_seed(0)
    for dtypes in [(torch.float32, torch.float32), (torch.float16, torch.float32), (torch.bfloat16, torch.bfloat16)]:
        grads = [torch.randn(32, 3, 256, 256, generator=g).to("cuda", dtypes[0]),
                 torch.randn(32, 256, generator=g).to("cuda", dtypes[1])]
        grads[0][5] = 0
        grads[1][5] = 0
        want_loss, want_grads = expected(grads, 2.0, 6.0)
        with ops.use_backend(backend):
            loss, got = run(ops.gradient_penalty, grads, 2.0, 6.0)
        tol = 1e-5 if dtypes[0] == torch.float32 else 1e-4
        assert_rel_close(loss, want_loss, tol, f"{backend} loss")
        for a, e in zip(got, want_grads):
            assert_rel_close(a, e, TOL[a.dtype], f"{backend} grads")
