"""Every CUDA kernel, run by the CPU emulator through its real ATen glue and the op's real autograd,
against the op's plain-PyTorch reference: forward and backward, odd sizes and tails, channels_last,
every dtype, masks, zero gradients, B = 1, several splits."""
import pytest
import torch

from helpers import TOL, assert_rel_close

from .conftest import emulated_cuda

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


def _reference_grads(fn, inputs, grad_out):
    leaves = [_leaf(t) for t in inputs]
    out = fn(*leaves)
    outs = out if isinstance(out, tuple) else (out,)
    grads = grad_out if isinstance(grad_out, tuple) else (grad_out,)
    torch.autograd.backward([o for o in outs], [g for g in grads])
    return out, [t.grad for t in leaves]


# ----------------------------------------------------------------------------- df_affine

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("shape,K,sms", [((1, 3, 5, 7), 1, 4),       # B = 1, C < 32
                                         ((3, 37, 3, 5), 2, 4),      # channel tail past 32 (NHWC groups)
                                         ((2, 5, 17, 19), 3, 64)])   # S = 323: two splits of the backward
def test_df_affine(emu, dtype, channels_last, shape, K, sms):
    from fastt2i.ops.df_affine import df_affine_reference
    torch.manual_seed(0)
    B, C = shape[:2]
    x = torch.randn(shape, dtype=dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    gamma, beta = torch.randn(K, B, C), torch.randn(K, B, C)
    dy = torch.randn(shape, dtype=dtype)
    with emulated_cuda(emu, "df_affine", num_sms=sms) as m:
        xs, gs, bs = _leaf(x), _leaf(gamma), _leaf(beta)
        y = m._DFAffineFunction.apply(xs, gs, bs, 0.2, "cuda")
        y.backward(dy)
    ref, (dx, dg, db) = _reference_grads(lambda a, g, b: df_affine_reference(a, g, b, 0.2), (x, gamma, beta), dy)
    tol = TOL[dtype]
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    assert_rel_close(y, ref, tol, "y")
    assert_rel_close(xs.grad, dx, tol, "dx")
    assert_rel_close(gs.grad, dg, max(tol, 1e-5) * (10 if dtype in (torch.float16, torch.bfloat16) else 1), "dgamma")
    assert_rel_close(bs.grad, db, max(tol, 1e-5) * (10 if dtype in (torch.float16, torch.bfloat16) else 1), "dbeta")


def test_df_affine_zero_gradient_and_splits_agree(emu):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 23, 29)
    gamma, beta = torch.randn(2, 2, 3), torch.randn(2, 2, 3)
    outs = []
    for sms in (1, 200):  # one split, then several: the same sums
        with emulated_cuda(emu, "df_affine", num_sms=sms):
            outs.append(emu.df_affine_bwd(torch.zeros_like(x), x, gamma, beta, 0.2))
            outs.append(emu.df_affine_bwd(torch.ones_like(x), x, gamma, beta, 0.2))
    for t in outs[0]:
        assert (t == 0).all()
    for a, b in zip(outs[1], outs[3]):
        assert_rel_close(a, b, 1e-6, "splits")


# ----------------------------------------------------------------------------- bias_leaky_relu

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "nhwc", "no_bias"])
def test_bias_leaky_relu(emu, dtype, layout):
    from fastt2i.ops.bias_leaky_relu import bias_leaky_relu_reference
    torch.manual_seed(2)
    x = torch.randn(2, 5, 3, 7, dtype=dtype)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    bias = None if layout == "no_bias" else torch.randn(5)
    dy = torch.randn(x.shape, dtype=dtype)
    with emulated_cuda(emu, "bias_leaky_relu") as m:
        xs = _leaf(x)
        bs = None if bias is None else _leaf(bias)
        y = m._BiasLeakyReLUFunction.apply(xs, bs, 0.2, "cuda")
        (dx,) = torch.autograd.grad(y, xs, dy, create_graph=True)
        y.backward(dy)
    inputs = (x,) if bias is None else (x, bias)
    ref, grads = _reference_grads(lambda *a: bias_leaky_relu_reference(*a, negative_slope=0.2), inputs, dy)
    # float32 arithmetic, one rounding to the output type: bitwise equal to the reference
    assert torch.equal(y, ref), "y"
    assert_rel_close(xs.grad, grads[0], TOL[dtype], "dx")
    if bias is not None:
        assert_rel_close(bs.grad, grads[1], max(TOL[dtype], 1e-5), "dbias")


def test_bias_leaky_relu_double_backward(emu):
    from fastt2i.ops.bias_leaky_relu import bias_leaky_relu_reference
    torch.manual_seed(3)
    x, bias, dy = torch.randn(3, 4, 5, 5, dtype=torch.float64), torch.randn(4, dtype=torch.float64), None
    dy = torch.randn_like(x)
    with emulated_cuda(emu, "bias_leaky_relu") as m:
        xs = _leaf(x)
        y = m._BiasLeakyReLUFunction.apply(xs, bias, 0.2, "cuda")
        (dx,) = torch.autograd.grad(y, xs, dy, create_graph=True)
        (ddx,) = torch.autograd.grad((dx * dx).sum(), xs)
        xr = _leaf(x)
        (dxr,) = torch.autograd.grad(bias_leaky_relu_reference(xr, bias, 0.2), xr, dy, create_graph=True)
        (ddxr,) = torch.autograd.grad((dxr * dxr).sum(), xr)
    assert_rel_close(dx, dxr, 1e-12, "dx")
    assert torch.equal(ddx, ddxr)  # both exactly zero: the step function has no derivative


# ----------------------------------------------------------------------------- gradient_penalty

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B", [1, 3])
def test_gradient_penalty(emu, dtype, B):
    from fastt2i.ops.gradient_penalty import gradient_penalty_reference
    torch.manual_seed(4)
    # nine tensors (two launch groups of at most eight), one of 2 chunks per sample (> 4096
    # elements), one channels_last, one empty per sample, odd sizes
    grads = [torch.randn(B, 5000, dtype=dtype), torch.randn(B, 3, 7, 5, dtype=dtype).contiguous(
        memory_format=torch.channels_last), torch.randn(B, 0, dtype=dtype)]
    grads += [torch.randn(B, n, dtype=dtype) for n in (1, 2, 31, 33, 255, 257)]
    grads = [g * 0.03 for g in grads]  # |grad|^(p-2) stays inside float16's range
    with emulated_cuda(emu, "gradient_penalty") as m:
        leaves = [_leaf(g) for g in grads]
        loss = m._GradientPenaltyFunction.apply(2.0, 6.0, 0.5, "cuda", *leaves)
        loss.backward(torch.tensor(1.5, dtype=loss.dtype))
    ref, ref_grads = _reference_grads(lambda *g: gradient_penalty_reference(list(g), 2.0, 6.0, 0.5), grads,
                                      torch.tensor(1.5, dtype=torch.float32))
    tol = max(TOL[dtype], 1e-5)
    assert_rel_close(loss, ref, tol, "loss")
    for i, (a, b) in enumerate(zip(leaves, ref_grads)):
        if b.numel():
            assert_rel_close(a.grad, b, tol, f"grads[{i}]")


def test_gradient_penalty_zero_sample_mixed_dtypes(emu):
    from fastt2i.ops.gradient_penalty import gradient_penalty_reference
    torch.manual_seed(5)
    g1 = torch.randn(3, 9, dtype=torch.float64)
    g2 = torch.randn(3, 2, 2)
    g1[1] = 0
    g2[1] = 0  # sample 1 has zero gradient: loss term 0 and gradient 0, not NaN
    with emulated_cuda(emu, "gradient_penalty") as m:
        a, b = _leaf(g1), _leaf(g2)
        loss = m._GradientPenaltyFunction.apply(10.0, 2.0, 1.0, "cuda", a, b)
        loss.backward()
    ref, (ra, rb) = _reference_grads(lambda x, y: gradient_penalty_reference([x, y], 10.0, 2.0, 1.0), (g1, g2),
                                     torch.tensor(1.0, dtype=torch.float64))
    assert loss.dtype == torch.float64
    assert_rel_close(loss, ref, 1e-12, "loss")
    assert_rel_close(a.grad, ra, 1e-12, "grad 1")
    assert_rel_close(b.grad, rb, 1e-6, "grad 2")
    assert (a.grad[1] == 0).all() and (b.grad[1] == 0).all()


# ----------------------------------------------------------------------------- damsm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,B,D,T,HW,lengths", [
    (3, 4, 9, 6, (3, 5), [6, 1, 3, 5]),   # N = 15 < a warp, one caption of one word, a full one
    (2, 1, 33, 3, (7, 6), [2]),            # B = 1, N = 42 (warp tail), D past a warp
    (1, 3, 5, 40, (2, 2), [40, 17, 33]),   # more words than a warp of lanes
])
def test_damsm(emu, dtype, M, B, D, T, HW, lengths):
    from fastt2i.ops.damsm import damsm_word_scores_reference
    torch.manual_seed(6)
    words = torch.randn(B, D, T, dtype=dtype)
    regions = torch.randn(M, D, *HW, dtype=dtype)
    lengths = torch.tensor(lengths, dtype=torch.int64)
    grad = torch.randn(M, B, dtype=dtype)
    with emulated_cuda(emu, "damsm") as m:
        w, r = _leaf(words), _leaf(regions)
        scores = m._DAMSMWordFunction.apply(w, lengths, r, 4.0, 5.0, "cuda", True)
        scores.backward(grad)
        unsaved = m._DAMSMWordFunction.apply(words, lengths, regions, 4.0, 5.0, "cuda", False)
    ref, (gw, gr) = _reference_grads(lambda a, b: damsm_word_scores_reference(a, lengths, b, 4.0, 5.0),
                                     (words, regions), grad)
    tol = TOL[dtype] if dtype != torch.float32 else 1e-4  # the GEMMs sum in a different order
    assert_rel_close(scores, ref, tol, "scores")
    assert_rel_close(unsaved, ref, tol, "scores (no grad)")
    assert_rel_close(w.grad, gw, tol * 5 if dtype != torch.float64 else tol, "dwords")
    assert_rel_close(r.grad, gr, tol * 5 if dtype != torch.float64 else tol, "dregions")
    for b, L in enumerate(lengths.tolist()):
        assert (w.grad[b, :, L:] == 0).all(), "padding words get no gradient"


# ----------------------------------------------------------------------------- word_region_attention

def _wra_mask(kind, B, N, T):
    if kind is None:
        return None
    g = torch.Generator().manual_seed(7)
    if kind == "caption":
        mask = torch.rand(B, T, generator=g) < 0.3
        mask[:, 0] = False
        mask[-1] = True  # an all-padding caption: zeros, not NaN
        return mask
    mask = torch.rand(B, N, T, generator=g) < 0.4
    mask[0, : N // 2] = True  # rows with no word
    return mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("B,C,HW,T,mask_kind,attention,sms", [
    (1, 5, (3, 5), 1, None, False, 4),            # B = 1, one word
    (2, 37, (10, 13), 17, "caption", True, 4),    # N = 130: two forward tiles, three backward; C tails
    (3, 6, (2, 3), 33, "region", True, 64),       # T past 32 (TMAX 64), per-region masks
    (2, 9, (13, 11), 7, "caption", False, 1),     # several tiles in one backward split
])
def test_word_region_attention(emu, dtype, channels_last, B, C, HW, T, mask_kind, attention, sms):
    from fastt2i.ops.word_region_attention import word_region_attention_reference
    torch.manual_seed(8)
    regions = torch.randn(B, C, *HW, dtype=dtype)
    if channels_last:
        regions = regions.contiguous(memory_format=torch.channels_last)
    words = torch.randn(B, C, T, dtype=dtype)
    N = HW[0] * HW[1]
    mask = _wra_mask(mask_kind, B, N, T)
    dctx = torch.randn(regions.shape, dtype=dtype)
    dattn = torch.randn(B, T, *HW, dtype=dtype) if attention else None
    with emulated_cuda(emu, "word_region_attention", num_sms=sms) as m:
        r, w = _leaf(regions), _leaf(words)
        out = m._WordRegionAttentionFunction.apply(r, w, mask, attention, "cuda")
        outs = out if attention else (out,)
        torch.autograd.backward(list(outs), [dctx] + ([dattn] if attention else []))
    ref, (gr, gw) = _reference_grads(lambda a, b: word_region_attention_reference(a, b, mask, attention),
                                     (regions, words), (dctx, dattn) if attention else dctx)
    refs = ref if attention else (ref,)
    tol = TOL[dtype] if dtype != torch.float32 else 1e-5
    for name, a, b in zip(("context", "attention"), outs, refs):
        assert_rel_close(a, b, tol, name)
    assert outs[0].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert_rel_close(r.grad, gr, tol * (3 if dtype in (torch.float16, torch.bfloat16) else 1), "dregions")
    assert_rel_close(w.grad, gw, tol * (3 if dtype in (torch.float16, torch.bfloat16) else 1), "dwords")
    if mask_kind == "caption":
        assert (outs[0][-1] == 0).all() and (r.grad[-1] == 0).all() and (w.grad[-1] == 0).all()


# ----------------------------------------------------------------------------- gate_split

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "nhwc"])
@pytest.mark.parametrize("gate", ["per_position", "per_element"])
@pytest.mark.parametrize("used", ["both", "key", "nonkey"])
def test_gate_split(emu, dtype, layout, gate, used):
    from fastt2i.ops.gate_split import gate_split_reference
    torch.manual_seed(9)
    # C = 37: a warp's lanes and a tail per position (NHWC backward); 7 x 9 = 63 positions, B = 3
    x = torch.randn(3, 37, 7, 9, dtype=dtype)
    logits = 2 * torch.randn((3, 1, 7, 9) if gate == "per_position" else x.shape, dtype=dtype)
    if layout == "nhwc":
        x = x.contiguous(memory_format=torch.channels_last)
    dk, dn = torch.randn(x.shape, dtype=dtype), torch.randn(x.shape, dtype=dtype)
    with emulated_cuda(emu, "gate_split") as m:
        lg, xs = _leaf(logits), _leaf(x)
        key, nonkey = m._GateSplitFunction.apply(lg, xs, "cuda")
        outs = {"both": ((key, dk), (nonkey, dn)), "key": ((key, dk),), "nonkey": ((nonkey, dn),)}[used]
        torch.autograd.backward([o for o, _ in outs], [g for _, g in outs])

    def reference(l, v):
        k, n = gate_split_reference(l, v)
        return {"both": (k, n), "key": k, "nonkey": n}[used]

    ref, (dl_ref, dx_ref) = _reference_grads(reference, (logits, x),
                                             {"both": (dk, dn), "key": dk, "nonkey": dn}[used])
    refs = ref if used == "both" else (ref,)
    # float32 arithmetic, one rounding to the output type, as the reference
    for got, want in zip([o for o, _ in outs], refs):
        assert_rel_close(got, want, max(TOL[dtype], 1e-6), "output")
    assert key.is_contiguous(memory_format=torch.channels_last) == (layout == "nhwc")
    assert_rel_close(xs.grad, dx_ref, max(TOL[dtype], 1e-6), "dx")
    assert_rel_close(lg.grad, dl_ref, max(TOL[dtype], 1e-5), "dlogits")


# ----------------------------------------------------------------------------- glue checks

def test_glue_rejects_mixed_devices(emu):
    """The glue's same-device check (on the emulator, 'the device' is the CPU: a meta tensor stands
    for a tensor on another device)."""
    x = torch.randn(1, 2, 3, 3)
    gamma = torch.randn(1, 1, 2)
    with pytest.raises(RuntimeError, match="beta: expected"):
        emu.df_affine_fwd(x, gamma, torch.empty(1, 1, 2, device="meta"), 0.2)
    regions, words = torch.randn(1, 2, 2, 2), torch.randn(1, 2, 3)
    with pytest.raises(RuntimeError, match="mask: expected"):
        emu.word_region_attention_fwd(regions, words, torch.zeros(1, 3, dtype=torch.bool, device="meta"), False)
    with pytest.raises(RuntimeError, match="lengths: expected"):
        emu.damsm_word_fwd(words, torch.ones(1, dtype=torch.int64, device="meta"), regions, 4.0, 5.0, False)
    x4 = torch.randn(1, 2, 3, 3)
    with pytest.raises(RuntimeError, match="gate_logits: expected"):
        emu.gate_split_fwd(torch.randn(1, 1, 3, 3, device="meta"), x4)
    with pytest.raises(RuntimeError, match="grad_nonkey: expected"):
        emu.gate_split_bwd(None, torch.randn(1, 2, 3, 3, device="meta"), torch.randn(1, 1, 3, 3), x4)
    g = torch.randn(2, 3)
    loss, sumsq = emu.gradient_penalty_fwd([g], 2.0, 6.0, 1.0)
    with pytest.raises(RuntimeError, match="sumsq: expected"):
        emu.gradient_penalty_bwd(torch.ones(()), [g], sumsq.to("meta"), 2.0, 6.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_emulated_half_conversions_match_torch(emu, dtype):
    """The emulator's own __half / __nv_bfloat16 conversions (csrc/cuda/emu/include) round like the
    toolkit's: every finite 16-bit pattern plus four biases (none, into the subnormals, a carry, an
    overflow), through float and back, bitwise as torch converts."""
    bits = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    x = bits.view(dtype).reshape(1, 4, -1)  # channel c gets bias[c]
    x = torch.where(torch.isfinite(x), x, torch.zeros((), dtype=dtype))
    bias = torch.tensor([0.0, 3e-8, 1.0009765625, 6.0e4 if dtype == torch.float16 else 3.0e38])
    with emulated_cuda(emu, "bias_leaky_relu"):
        y = emu.bias_leaky_relu_fwd(x, bias, 1.0)  # slope 1: the identity after the bias
    expected = (x.float() + bias.view(1, 4, 1)).to(dtype)
    assert torch.equal(y.view(torch.int16), expected.view(torch.int16))
