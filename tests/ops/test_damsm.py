"""damsm_word_scores and the DAMSM losses: the official loop, the vectorised reference and
every fused backend, forward and backward."""
import numpy as np
import pytest
import torch

from fastt2i import losses, ops
from fastt2i.official import damsm as official_damsm
from fastt2i.ops import damsm as dm
from helpers import assert_rel_close, backend_device, backend_params, fused_backends, sweep_backends

# (B captions, M images, D, T, H, W, lengths): M != B, odd D, T = 1, lengths 1 and T together.
CASES = [
    (3, 2, 7, 4, 3, 5, [1, 4, 2]),
    (4, 4, 33, 1, 2, 3, [1, 1, 1, 1]),
    (5, 3, 16, 6, 4, 4, [6, 1, 3, 6, 2]),
    (2, 5, 9, 3, 1, 1, [3, 1]),
]
FP32_TOL = 2e-5


def make_inputs(case, dtype=torch.float32, device="cpu", seed=0, layout="contiguous"):
    B, M, D, T, H, W, lens = case
    g = torch.Generator().manual_seed(seed)
    words = torch.randn(B, D, T, generator=g)
    regions = torch.randn(M, D, H, W, generator=g)
    if layout == "strided":  # words as a transposed view, regions channels_last
        words = torch.randn(B, T, D, generator=g).transpose(1, 2)
        regions = regions.contiguous(memory_format=torch.channels_last)
    lengths = torch.tensor(lens, dtype=torch.int64)
    return words.to(device, dtype), lengths.to(device), regions.to(device, dtype)


def run(fn, words, lengths, regions, grad):
    w = words.detach().clone().requires_grad_()
    r = regions.detach().clone().requires_grad_()
    s = fn(w, lengths, r)
    s.backward(grad)
    return s, w.grad, r.grad


def expected(words, lengths, regions, grad):
    return run(dm.damsm_word_scores_reference, words.double(), lengths, regions.double(), grad.double())


@pytest.mark.parametrize("case", CASES)
def test_vectorised_reference_matches_official_loop(case):
    words, lengths, regions = make_inputs(case, torch.float64)
    grad = torch.randn(regions.shape[0], words.shape[0], dtype=torch.float64)
    official = run(lambda w, l, r: official_damsm.word_scores(w, l, r)[0], words, lengths, regions, grad)
    vectorised = run(dm.damsm_word_scores_reference, words, lengths, regions, grad)
    for name, a, e in zip(("scores", "dwords", "dregions"), vectorised, official):
        assert_rel_close(a, e, 1e-12, name)
    # padded word positions get no gradient, as in the official code (which slices them off)
    for i, L in enumerate(lengths.tolist()):
        assert not vectorised[1][i, :, L:].any()


@pytest.mark.parametrize("case", CASES)
def test_attention_matches_official(case):
    words, lengths, regions = make_inputs(case, torch.float64)
    _, maps = official_damsm.word_scores(words, lengths, regions)
    B, T = words.shape[0], words.shape[2]
    for backend in ops.available_backends():
        with ops.use_backend(backend):
            scores, attn = ops.damsm_word_scores(words.float(), lengths, regions.float(), return_attention=True)
        assert attn.shape == (B, T) + tuple(regions.shape[2:]) and scores.shape == (regions.shape[0], B)
        for i, m in enumerate(maps):
            L = int(lengths[i])
            assert_rel_close(attn[i, :L], m[0], 1e-5, f"{backend} attention {i}")
            assert not attn[i, L:].any()
        assert not attn[len(maps):].any()  # captions without a matching image
    _, ref_attn = dm.damsm_word_scores_reference(words, lengths, regions, return_attention=True)
    assert_rel_close(ref_attn, attn.double(), 1e-5, "reference attention")


def check_backend(backend, case, dtype, layout="contiguous", seed=0):
    device = backend_device(backend)
    words, lengths, regions = make_inputs(case, dtype, device, seed, layout)
    grad = torch.randn(regions.shape[0], words.shape[0], device=device).to(dtype)
    exp = expected(words, lengths, regions, grad)
    with ops.use_backend(backend):
        got = run(ops.damsm_word_scores, words, lengths, regions, grad)
    tol = FP32_TOL if dtype == torch.float32 else 1e-2
    for name, a, e in zip(("scores", "dwords", "dregions"), got, exp):
        assert a.dtype == dtype, f"{name}: dtype {a.dtype}"
        assert_rel_close(a, e, tol, f"{backend} {name} {dtype}")


@pytest.mark.parametrize("backend", sweep_backends())
@pytest.mark.parametrize("case", CASES)
def test_backends_match_reference_fp32(backend, case):
    check_backend(backend, case, torch.float32)


@pytest.mark.parametrize("backend", fused_backends())
def test_backends_non_contiguous_inputs(backend):
    check_backend(backend, CASES[2], torch.float32, layout="strided", seed=3)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_backends_match_reference_half(backend, dtype):
    check_backend(backend, CASES[0], dtype, seed=1)
    check_backend(backend, CASES[2], dtype, seed=2)


@pytest.mark.parametrize("backend", fused_backends())
def test_forward_without_grad_saves_nothing(backend):
    device = backend_device(backend)
    words, lengths, regions = make_inputs(CASES[2], device=device)
    with ops.use_backend(backend), torch.no_grad():
        s = ops.damsm_word_scores(words, lengths, regions)
    assert s.grad_fn is None
    assert_rel_close(s, dm.damsm_word_scores_reference(words.double(), lengths, regions.double()), FP32_TOL)
    fwd = dm.DISPATCH.fused_ops(backend)[0]
    _, alpha, beta, context = fwd(words, lengths, regions, 4.0, 5.0, False)
    assert alpha.numel() == beta.numel() == context.numel() == 0


@pytest.mark.parametrize("backend", backend_params("cpu"))
@pytest.mark.parametrize("mkldnn", [True, False])
def test_cpu_gemms_match_reference(backend, mkldnn, monkeypatch):
    # At the AVX-512 level the CPU kernels run their float32 GEMMs with oneDNN unless
    # torch.backends.mkldnn is disabled (then ATen's); both within the float32 tolerance, at a size
    # where every GEMM is a real one (images, regions and words above a vector width).
    case = (6, 5, 40, 9, 5, 7, [9, 3, 1, 7, 9, 5])
    words, lengths, regions = make_inputs(case, seed=4)
    grad = torch.randn(5, 6, generator=torch.Generator().manual_seed(5))
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", mkldnn)  # restored after the test
    with ops.use_backend(backend):
        got = run(ops.damsm_word_scores, words, lengths, regions, grad)
    for name, a, e in zip(("scores", "d words", "d regions"), got, expected(words, lengths, regions, grad)):
        assert_rel_close(a, e, FP32_TOL, f"{name}, mkldnn enabled={mkldnn}")


def test_chunked_images_match(monkeypatch):
    # more images than one chunk holds: the backward (and a forward that saves nothing) runs
    # chunk by chunk
    case = (3, 5, 6, 4, 2, 3, [4, 1, 2])
    words, lengths, regions = make_inputs(case)
    grad = torch.randn(5, 3)
    exp = expected(words, lengths, regions, grad)
    monkeypatch.setattr(dm, "_CHUNK_ELEMENTS", 2 * 6 * 12)  # two images per chunk in the Triton path
    for backend in [b for b in ops.available_backends() if b != "reference"]:
        if backend == "triton":
            with ops.use_backend(backend):
                got = run(ops.damsm_word_scores, words, lengths, regions, grad)
            for a, e in zip(got, exp):
                assert_rel_close(a, e, FP32_TOL, backend)
            with ops.use_backend(backend), torch.no_grad():
                assert_rel_close(ops.damsm_word_scores(words, lengths, regions), exp[0], FP32_TOL, backend)


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_compiled_chunks_match_image_by_image(backend):
    # N * sum(lengths) above half the compiled kernels' chunk budget: one image per chunk.
    # D = 2 keeps the GEMMs trivial; each image alone (no chunking) must give the same.
    g = torch.Generator().manual_seed(5)
    B, D, T, S, M = 75, 2, 28, 72, 2
    lengths = torch.randint(20, T + 1, (B,), generator=g)
    words, regions = torch.randn(B, D, T, generator=g), torch.randn(M, D, S, S, generator=g)
    grad = torch.randn(M, B, generator=g)
    with ops.use_backend(backend):
        whole = run(ops.damsm_word_scores, words, lengths, regions, grad)
        parts = [run(ops.damsm_word_scores, words, lengths, regions[j:j + 1], grad[j:j + 1]) for j in range(M)]
    assert_rel_close(whole[0], torch.cat([p[0] for p in parts]), 1e-6, "scores")
    assert_rel_close(whole[1], sum(p[1] for p in parts), 5e-5, "dwords")  # fp32 summation order
    assert_rel_close(whole[2], torch.cat([p[2] for p in parts]), 1e-6, "dregions")


@pytest.mark.parametrize("backend", backend_params())
def test_edge_values_never_nan(backend):
    device = backend_device(backend)
    words, lengths, regions = make_inputs(CASES[2], device=device)
    words[0, :, 0] = 0  # a zero word vector: |e| = 0, the cosine's clamp is active
    words[1, :, 1:] = float("nan")  # padding is never read
    regions[1] = 0  # a zero image: uniform attention, zero context
    big = make_inputs(CASES[0], device=device)
    for w, r in ((words, regions), (big[0] * 300, big[2] * 300)):
        lens = lengths if w is words else big[1]
        w, r = w.clone().requires_grad_(), r.clone().requires_grad_()
        with ops.use_backend(backend):
            s = ops.damsm_word_scores(w, lens, r)
        s.sum().backward()
        assert torch.isfinite(s).all() and torch.isfinite(r.grad).all()
        valid = torch.arange(w.shape[2], device=device)[None, None, :] < lens[:, None, None].to(device)
        assert torch.isfinite(w.grad[valid.expand_as(w)]).all() and not w.grad[~valid.expand_as(w)].any()
    ref = dm.damsm_word_scores_reference(words.nan_to_num(0.0), lengths, regions)
    with ops.use_backend(backend):
        assert_rel_close(ops.damsm_word_scores(words, lengths, regions), ref, FP32_TOL, backend)


def test_bad_loss_arguments():
    # (bad gammas: in test_op_contract.py)
    words, lengths, regions = make_inputs(CASES[0])
    with pytest.raises(ValueError, match="as many images as captions"):
        losses.damsm_word_loss(words, lengths, regions)
    words, lengths, regions = make_inputs(CASES[1])
    with pytest.raises(ValueError, match="class_ids"):
        losses.damsm_word_loss(words, lengths, regions, class_ids=[1, 2, 3])
    with pytest.raises(ValueError, match="labels"):
        losses.damsm_word_loss(words, lengths, regions, labels=torch.arange(3))
    with pytest.raises(ValueError, match="image_code"):
        losses.damsm_sentence_loss(torch.randn(4, 5), torch.randn(4, 6))


def test_mixed_dtypes_promote():
    words, lengths, regions = make_inputs(CASES[0])
    s = ops.damsm_word_scores(words.to(torch.bfloat16), lengths, regions)
    assert s.dtype == torch.float32
    assert_rel_close(s, dm.damsm_word_scores_reference(words.to(torch.bfloat16).float(), lengths, regions), 1e-5)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("with_classes", [False, True])
def test_losses_match_official(backend, with_classes):
    B, D, T = 6, 11, 5
    g = torch.Generator().manual_seed(4)
    words = torch.randn(B, D, T, generator=g, dtype=torch.float64)
    regions = torch.randn(B, D, 3, 4, generator=g, dtype=torch.float64)
    sentence = torch.randn(B, D, generator=g, dtype=torch.float64)
    code = torch.randn(B, D, generator=g, dtype=torch.float64)
    lengths = torch.tensor([1, 5, 3, 2, 5, 4])
    class_ids = np.array([7, 2, 7, 3, 2, 7]) if with_classes else None
    labels = torch.arange(B)
    tensors = [t.clone().requires_grad_() for t in (words, regions, sentence, code)]
    w0, w1, _ = official_damsm.words_loss(tensors[1], tensors[0], labels, lengths, class_ids, B)
    s0, s1 = official_damsm.sent_loss(tensors[3], tensors[2], labels, class_ids, B)
    ref = torch.stack([w0, w1, s0, s1])
    ref_grads = torch.autograd.grad(ref.sum(), tensors)
    dtype = torch.float64 if backend in ("reference", "cpu") else torch.float32
    device = backend_device(backend)
    fast = [t.detach().to(device, dtype).requires_grad_() for t in (words, regions, sentence, code)]
    with ops.use_backend(backend):
        fw = losses.damsm_word_loss(fast[0], lengths.to(device), fast[1], class_ids=class_ids)
    fs = losses.damsm_sentence_loss(fast[2], fast[3], labels.to(device), class_ids=class_ids)
    got = torch.stack([*fw, *fs])
    grads = torch.autograd.grad(got.sum(), fast)
    tol = 1e-10 if dtype == torch.float64 else FP32_TOL
    assert_rel_close(got, ref, tol, f"{backend} losses")
    for name, a, e in zip(("words", "regions", "sentence", "image_code"), grads, ref_grads):
        assert_rel_close(a, e, tol, f"{backend} d{name}")


def check_compile(backend, device="cpu"):
    words, lengths, regions = make_inputs((4, 4, 9, 5, 3, 2, [5, 1, 3, 4]), device=device)
    words.requires_grad_()
    class_ids = torch.tensor([1, 2, 1, 3], device=device)

    def f(w, l, r):
        loss0, loss1 = losses.damsm_word_loss(w * 2, l, r, class_ids=class_ids)
        return loss0 + loss1 + ops.damsm_word_scores(w, l, r[:3]).sum()

    with ops.use_backend(backend):
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        out = compiled(words, lengths, regions)
        out.backward()
        grad = words.grad.clone()
        words.grad = None
        eager = f(words, lengths, regions)
        eager.backward()
    assert_rel_close(out.detach(), eager.detach(), 1e-6)
    assert_rel_close(grad, words.grad, 1e-6)


# Triton under the CPU interpreter cannot be traced (fake tensors reach the interpreted launch,
# df_affine likewise); on a GPU it is covered by test_gpu_torch_compile.
@pytest.mark.parametrize("backend", backend_params("reference", "cpu"))
def test_torch_compile_fullgraph_no_graph_break(backend):
    check_compile(backend)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_gpu_torch_compile(backend):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    check_compile(backend, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("shape", [(48, 256, 18, 17), (20, 256, 18, 17), (14, 256, 12, 17)])
def test_gpu_paper_shapes(backend, shape):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    B, D, T, S = shape
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[1] = 1, T
    case = (B, B, D, T, S, S, lengths.tolist())
    for dtype in (torch.float32, torch.bfloat16):
        check_backend(backend, case, dtype)
