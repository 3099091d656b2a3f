"""word_region_attention: every backend against the reference, forward and backward; the module."""
import importlib

import pytest
import torch

from fastt2i import nn as fnn
from fastt2i import ops
from helpers import TOL, assert_rel_close, backend_device, backend_params, fused_backends, requires_backend, sweep_backends

# (B, C, H, W, T): odd sizes, T = 1, N = 1, T = 64 (the fused maximum), C over one Triton chunk, and
# sizes whose output rows are whole cache lines (the CPU kernel's streaming stores: N = 80 is a full
# tile of 64 regions and a tail of 16, C = 16).
SHAPES = [(3, 5, 3, 7, 5), (2, 37, 5, 5, 1), (2, 70, 9, 9, 33), (1, 3, 1, 1, 7), (2, 19, 11, 13, 64),
          (2, 16, 8, 10, 5)]
MASKS = ["none", "ragged", "region"]
LAYOUTS = ["contiguous", "channels_last", "strided"]


def make_mask(kind, B, N, T, g):
    if kind == "none":
        return None
    if kind == "ragged":  # caption lengths 1..T, and the last caption all padding
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[-1] = 0
        return torch.arange(T)[None, :] >= lengths[:, None]
    if kind == "tiles":  # per-region masks whose real words change from one block of 64 regions to the next
        lengths = torch.randint(0, T + 1, (B, (N + 63) // 64), generator=g).repeat_interleave(64, dim=1)[:, :N]
        lengths[0, :64] = 0  # a block with no real word at all
        return (torch.arange(T)[None, None, :] >= lengths[:, :, None]) | (torch.rand(B, N, T, generator=g) < 0.2)
    mask = torch.rand(B, N, T, generator=g) < 0.4  # one mask per region, one region all padding
    mask[0, N // 2] = True
    return mask


def make_inputs(shape, dtype, layout, mask_kind, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W, T = shape
    if layout == "strided":  # every other column of a wider tensor
        regions = torch.randn(B, C, H, 2 * W, generator=g)[..., ::2]
    else:
        regions = torch.randn(B, C, H, W, generator=g)
    regions = regions.to(device=device, dtype=dtype)
    if layout == "channels_last":
        regions = regions.contiguous(memory_format=torch.channels_last)
    words = torch.randn(B, C, T, generator=g).to(device=device, dtype=dtype)
    mask = make_mask(mask_kind, B, H * W, T, g)
    return regions, words, None if mask is None else mask.to(device)


def run(fn, regions, words, mask, return_attention, grads):
    regions, words = (t.detach().clone().requires_grad_() for t in (regions, words))
    out = fn(regions, words, mask, return_attention=return_attention)
    outs = out if return_attention else (out,)
    torch.autograd.backward(outs, grads[: len(outs)])
    return (*outs, regions.grad, words.grad)


def check_backend(backend, shape, dtype, layout, mask_kind, return_attention):
    device = backend_device(backend)
    regions, words, mask = make_inputs(shape, dtype, layout, mask_kind, device)
    B, C, H, W, T = shape
    g = torch.Generator().manual_seed(1)
    grads = (torch.randn(B, C, H, W, generator=g).to(device, dtype),
             torch.randn(B, T, H, W, generator=g).to(device, dtype))
    expected = run(ops.word_region_attention_reference, regions.double(), words.double(), mask,
                   return_attention, tuple(t.double() for t in grads))
    with ops.use_backend(backend):
        got = run(ops.word_region_attention, regions, words, mask, return_attention, grads)
    names = ("context", "attention", "dregions", "dwords") if return_attention else ("context", "dregions", "dwords")
    for name, a, e in zip(names, got, expected):
        assert a.dtype == dtype, name
        assert_rel_close(a, e, TOL[dtype], f"{backend} {name}")
    if layout == "channels_last" and H * W > 1 and C > 1:
        assert got[0].is_contiguous(memory_format=torch.channels_last)
    if mask_kind != "none":  # padding-only rows: exactly zero context (and attention)
        empty = mask.all(-1) if mask.dim() == 3 else mask.all(-1)[:, None].expand(B, H * W)
        assert not got[0].reshape(B, C, H * W).transpose(1, 2)[empty].any()
        if return_attention:
            assert not got[1].reshape(B, T, H * W).transpose(1, 2)[empty].any()


@pytest.mark.parametrize("backend", sweep_backends())
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("mask_kind", MASKS)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("return_attention", [False, True])
def test_matches_reference_fp32(backend, shape, mask_kind, layout, return_attention):
    check_backend(backend, shape, torch.float32, layout, mask_kind, return_attention)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("mask_kind", MASKS)
def test_matches_reference_strided(backend, mask_kind):
    check_backend(backend, (2, 9, 5, 7, 6), torch.float32, "strided", mask_kind, True)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_reference_when_the_real_words_change_between_tiles(backend, layout):
    # The CPU kernel contracts over the words real for some region of a tile of 64 regions only.
    check_backend(backend, (2, 6, 12, 17, 9), torch.float32, layout, "tiles", True)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_reference_half(backend, dtype, layout):
    check_backend(backend, (2, 19, 9, 7, 18), dtype, layout, "ragged", True)


def test_reference_half_computes_in_float32():
    regions, words, mask = make_inputs((2, 4, 3, 3, 5), torch.bfloat16, "contiguous", "ragged", "cpu")
    got = ops.word_region_attention_reference(regions, words, mask)
    expected = ops.word_region_attention_reference(regions.float(), words.float(), mask).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, expected)


@pytest.mark.slow
@pytest.mark.parametrize("backend", backend_params("reference", "cpu"))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("mask_kind", ["ragged", "region"])
def test_gradcheck_float64(backend, layout, mask_kind):
    regions, words, mask = make_inputs((2, 3, 3, 5, 4), torch.float64, layout, mask_kind, "cpu")
    inputs = (regions.detach().requires_grad_(), words.detach().requires_grad_())
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(lambda r, w: ops.word_region_attention(r, w, mask), inputs)
        assert torch.autograd.gradcheck(
            lambda r, w: ops.word_region_attention(r, w, mask, return_attention=True), inputs)


@pytest.mark.parametrize("backend", backend_params())
def test_padding_only_and_extreme_scores_never_nan(backend):
    device = backend_device(backend)
    regions, words, _ = make_inputs((3, 8, 4, 5, 6), torch.float32, "contiguous", "none", device)
    mask = torch.zeros(3, 6, dtype=torch.bool, device=device)
    mask[1] = True  # caption 1: all padding
    mask[2, 3:] = True
    regions = regions * 30  # scores in the thousands: the softmax must subtract the row max
    with ops.use_backend(backend):
        got = run(ops.word_region_attention, regions, words, mask, True,
                  (torch.randn(3, 8, 4, 5, device=device), torch.randn(3, 6, 4, 5, device=device)))
    for t in got:
        assert torch.isfinite(t).all()
    context, attention, dregions, dwords = got
    assert not context[1].any() and not attention[1].any() and not dregions[1].any() and not dwords[1].any()
    assert not attention[2, 3:].any()
    assert_rel_close(attention[[0, 2]].sum(1), torch.ones(2, 4, 5, device=device), 1e-6, "rows sum to 1")
    expected = ops.word_region_attention_reference(regions.double(), words.double(), mask)
    assert_rel_close(context, expected, 1e-5, backend)


@pytest.mark.parametrize("backend", fused_backends())
def test_inference_matches_training_call(backend):
    device = backend_device(backend)
    regions, words, mask = make_inputs((2, 7, 5, 3, 9), torch.float32, "channels_last", "ragged", device)
    with ops.use_backend(backend):
        with torch.no_grad():
            inference = ops.word_region_attention(regions, words, mask, return_attention=True)
        training = ops.word_region_attention(regions.requires_grad_(), words, mask, return_attention=True)
    assert not inference[0].requires_grad and training[0].requires_grad
    for a, e in zip(inference, training):
        assert torch.equal(a, e.detach())


@pytest.mark.parametrize("backend", backend_params())
def test_single_word_copies_it(backend):
    device = backend_device(backend)
    regions, words, _ = make_inputs((2, 5, 3, 3, 1), torch.float32, "contiguous", "none", device)
    with ops.use_backend(backend):
        context, attention = ops.word_region_attention(regions, words, return_attention=True)
    assert torch.equal(attention, torch.ones_like(attention))
    assert_rel_close(context, words[:, :, :, None].expand(2, 5, 3, 3), 1e-6, backend)


# ----------------------------------------------------------------------------- official code parity

class OfficialGlobalAttentionGeneral(torch.nn.Module):
    """AttnGAN's GlobalAttentionGeneral (code/GlobalAttention.py), transcribed for the comparison."""

    def __init__(self, idf, cdf):
        super().__init__()
        self.conv_context = torch.nn.Conv2d(cdf, idf, kernel_size=1, stride=1, padding=0, bias=False)
        self.sm = torch.nn.Softmax(dim=1)
        self.mask = None

    def applyMask(self, mask):  # noqa: N802 (the official name)
        self.mask = mask

    def forward(self, input, context):
        ih, iw = input.size(2), input.size(3)
        queryL = ih * iw
        batch_size, sourceL = context.size(0), context.size(2)
        target = input.view(batch_size, -1, queryL)
        targetT = torch.transpose(target, 1, 2).contiguous()
        sourceT = self.conv_context(context.unsqueeze(3)).squeeze(3)
        attn = torch.bmm(targetT, sourceT)
        attn = attn.view(batch_size * queryL, sourceL)
        if self.mask is not None:
            mask = self.mask.repeat(queryL, 1)
            attn.data.masked_fill_(mask.data, -float("inf"))
        attn = self.sm(attn)
        attn = attn.view(batch_size, queryL, sourceL)
        attn = torch.transpose(attn, 1, 2).contiguous()
        weightedContext = torch.bmm(sourceT, attn)
        return weightedContext.view(batch_size, -1, ih, iw), attn.view(batch_size, -1, ih, iw)


def _official_pair(lengths, H=4, W=3, idf=6, cdf=10, seed=0):
    torch.manual_seed(seed)
    official = OfficialGlobalAttentionGeneral(idf, cdf)
    ours = fnn.WordRegionAttention(idf, cdf)
    ours.load_state_dict(official.state_dict())  # official weights load unchanged
    B, T = len(lengths), max(lengths)
    h, words = torch.randn(B, idf, H, W), torch.randn(B, cdf, T)
    mask = torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]
    return official, ours, h, words, mask


@pytest.mark.parametrize("backend", backend_params())
def test_official_mask_reproduces_official_code(backend):
    official, ours, h, words, mask = _official_pair([5, 2, 4])
    ours.official_mask = True
    official.applyMask(mask)
    expected = official(h, words)
    with ops.use_backend(backend):
        got = ours(h, words, mask)
    assert_rel_close(got[0], expected[0], 1e-5, f"{backend} context")
    assert_rel_close(got[1], expected[1], 1e-5, f"{backend} attention")


@pytest.mark.parametrize("backend", backend_params())
def test_own_mask_differs_from_official_only_when_ragged(backend):
    official, ours, h, words, mask = _official_pair([5, 2, 4])
    official.applyMask(mask)
    with ops.use_backend(backend):
        context, attention = ours(h, words, mask)
    # each caption's own mask: padding words get no attention
    assert not attention.permute(0, 2, 3, 1)[mask[:, None, None, :].expand(3, 4, 3, 5)].any()
    assert (context - official(h, words)[0]).abs().max() > 1e-3  # the official misalignment shows
    official, ours, h, words, mask = _official_pair([4, 4, 4])
    official.applyMask(mask)
    with ops.use_backend(backend):
        context, _ = ours(h, words, mask)
    assert_rel_close(context, official(h, words)[0], 1e-5, backend)


def test_official_region_mask_layout():
    mask = torch.tensor([[False, True], [False, False], [True, True]])
    per_region = ops.official_region_mask(mask, 4)  # region n of caption b: caption (b*4 + n) % 3
    for b in range(3):
        for n in range(4):
            assert torch.equal(per_region[b, n], mask[(b * 4 + n) % 3])


def test_module_checks_and_no_attention():
    module = fnn.WordRegionAttention(4, 7)
    assert module.conv_context.weight.shape == (4, 7, 1, 1) and module.conv_context.bias is None
    h, words = torch.randn(2, 4, 3, 3), torch.randn(2, 7, 5)
    context, attention = module(h, words, return_attention=False)
    assert attention is None and context.shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="words"):
        module(h, torch.randn(2, 6, 5))
    with pytest.raises(ValueError, match="h"):
        module(torch.randn(2, 5, 3, 3), words)


# ----------------------------------------------------------------------------- errors, dispatch, compile

def test_many_words_fall_back_or_explain():
    regions, words, mask = make_inputs((2, 3, 2, 3, 65), torch.float32, "contiguous", "ragged", "cpu")
    got = ops.word_region_attention(regions, words, mask)  # auto: the fused backends decline T = 65
    assert_rel_close(got, ops.word_region_attention_reference(regions, words, mask), 1e-6)
    for backend in [b for b in ops.available_backends() if b != "reference"]:
        with ops.use_backend(backend), pytest.raises(ValueError, match="T=65"):
            ops.word_region_attention(regions, words, mask)


@pytest.mark.parametrize("backend", fused_backends())
def test_saves_row_statistics_not_scores(backend):
    # flash-style: no (B, N, T) tensor is saved for backward unless the attention is returned
    device = backend_device(backend)
    B, C, H, W, T = 2, 4, 8, 8, 6
    regions, words, mask = make_inputs((B, C, H, W, T), torch.float32, "contiguous", "ragged", device)
    regions.requires_grad_()
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with ops.use_backend(backend), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        ops.word_region_attention(regions, words, mask)
    assert max(saved) == B * C * H * W and B * H * W * T not in saved
    assert B * H * W in saved  # the row log-sum-exp


@requires_backend("triton")
@pytest.mark.parametrize("programs", [1, 4, 9])  # 3 tiles per sample: 3, 2 (uneven) or 1 per program
def test_triton_backward_splits_over_programs(monkeypatch, programs):
    # the backward spreads the tiles over programs (the last one partly past N) and sums their dwords
    module = importlib.import_module("fastt2i.ops.word_region_attention")  # the module, not the function
    monkeypatch.setattr(module, "num_programs_target", lambda device: programs)
    check_backend("triton", (3, 6, 13, 11, 9), torch.float32, "contiguous", "ragged", True)


@pytest.mark.parametrize("return_attention", [False, True])
def test_torch_compile_fullgraph_no_graph_break(return_attention):
    regions, words, mask = make_inputs((2, 5, 6, 6, 7), torch.float32, "contiguous", "ragged", "cpu")
    regions.requires_grad_()
    words.requires_grad_()

    def f(regions, words, mask):
        out = ops.word_region_attention(regions * 2, words, mask, return_attention=return_attention)
        if return_attention:
            return out[0].sum() + (out[1] ** 2).sum()
        return out.sum()

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    out = compiled(regions, words, mask)
    out.backward()
    grads = (regions.grad.clone(), words.grad.clone())
    regions.grad = words.grad = None
    expected = f(regions, words, mask)
    expected.backward()
    assert_rel_close(out.detach(), expected.detach(), 1e-6)
    assert_rel_close(grads[0], regions.grad, 1e-6)
    assert_rel_close(grads[1], words.grad, 1e-6)


def test_module_compiles_fullgraph():
    module = fnn.WordRegionAttention(5, 9, official_mask=True)
    h, words = torch.randn(3, 5, 4, 4), torch.randn(3, 9, 6)
    mask = torch.arange(6)[None, :] >= torch.tensor([6, 3, 4])[:, None]
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    for a, e in zip(compiled(h, words, mask), module(h, words, mask)):
        assert_rel_close(a, e, 1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_attngan_shapes(backend, layout):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    for shape in [(20, 32, 64, 64, 18), (14, 48, 128, 128, 12), (2, 512, 16, 16, 64)]:
        for dtype in (torch.float32, torch.bfloat16):
            check_backend(backend, shape, dtype, layout, "ragged", True)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_compile_fullgraph(backend):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    regions, words, mask = make_inputs((4, 32, 16, 16, 18), torch.float32, "channels_last", "ragged", "cuda")
    regions.requires_grad_()

    def f(regions, words, mask):
        context, attention = ops.word_region_attention(regions, words, mask, return_attention=True)
        return context.square().sum() + attention.square().sum()

    with ops.use_backend(backend):
        out = torch.compile(f, fullgraph=True)(regions, words, mask)
        out.backward()
        grad = regions.grad.clone()
        regions.grad = None
        expected = f(regions, words, mask)
        expected.backward()
    assert_rel_close(out.detach(), expected.detach(), 1e-5)
    assert_rel_close(grad, regions.grad, 1e-5)
