"""The contract every fused op keeps, on every backend, driven by one small spec per op.

For each op: forward and backward agree with the float64 reference (float32 within 1e-5,
float16/bfloat16 within 1e-2 and within 2x the eager reference's own error), gradcheck in
float64 where the kernels take it, ``torch.library.opcheck`` of every backend's compiled ops
(``*_triton`` included), ``torch.compile(fullgraph=True)`` with no graph break, and clear
errors for bad inputs.  A new op adds an ``OpSpec``; what only that op has (its layouts,
masks, limits, edge values) stays in its own ``test_<op>.py``.  A backend that cannot run
here is collected and skipped with the dispatcher's reason.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

import pytest
import torch

from fastt2i import ops
from fastt2i.ops import _backend
from helpers import (TOL, assert_low_precision_close, assert_rel_close, backend_device, backend_params,
                     float64_backends, fused_backend_names)


@dataclass
class OpSpec:
    name: str
    # make(dtype, device) -> the op's tensor arguments; float arguments listed in
    # ``differentiable`` get gradients, the others (masks, lengths) are passed as they are
    make: Callable
    differentiable: tuple[int, ...]
    call: Callable          # the public function on those arguments (op parameters fixed)
    reference: Callable     # the plain-PyTorch reference on the same arguments
    dispatch: _backend.OpDispatch
    # opcheck(fwd, bwd, device): [(compiled op, arguments), ...] covering forward and backward
    opcheck_samples: Callable
    bad_inputs: list = field(default_factory=list)  # (call, exception type, words in the message)
    fp32_tol: float = TOL[torch.float32]
    gradcheck_make: Callable | None = None  # smaller arguments for gradcheck (default: make)


def _dispatch(module: str) -> _backend.OpDispatch:
    return importlib.import_module(f"fastt2i.ops.{module}").DISPATCH


def _outputs(result):
    return result if isinstance(result, tuple) else (result,)


def _run(fn, args, differentiable, seed=7):
    """Outputs of ``fn(*args)`` and the gradients of a fixed random weighting of them."""
    args = [a.detach().clone().requires_grad_() if i in differentiable else a for i, a in enumerate(args)]
    outs = _outputs(fn(*args))
    g = torch.Generator().manual_seed(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype) for o in outs]
    grads = torch.autograd.grad(outs, [args[i] for i in differentiable], weights)
    return [o.detach() for o in outs] + list(grads)


def _float64(args):
    return [a.double() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]


def _raises(fn, error, words):
    with pytest.raises(error) as info:
        fn()
    for word in words:
        assert word in str(info.value)


def _r(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- df_affine

def _df_affine_make(dtype, device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 5, 3, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    param = torch.float64 if dtype == torch.float64 else torch.float32
    gamma = (1 + 0.5 * torch.randn(2, 2, 7, generator=g)).to(device, param)
    beta = (0.5 * torch.randn(2, 2, 7, generator=g)).to(device, param)
    return [x, gamma, beta]


def _df_affine_opcheck(fwd, bwd, device):
    x, gamma, beta = _df_affine_make(torch.float32, device)
    return [(fwd, (x, gamma, beta, 0.2)), (bwd, (torch.randn_like(x), x, gamma, beta, 0.2))]


def _df_affine_make_small(dtype, device):
    x, gamma, beta = _df_affine_make(dtype, device)
    return [x[:, :3, :4, :2], gamma[:, :, :3], beta[:, :, :3]]


_X4 = torch.randn(2, 3, 4, 4)
DF_AFFINE = OpSpec(
    "df_affine", _df_affine_make, (0, 1, 2),
    lambda x, g, b: ops.df_affine(x, g, b, 0.2), lambda x, g, b: ops.df_affine_reference(x, g, b, 0.2),
    _dispatch("df_affine"), _df_affine_opcheck, gradcheck_make=_df_affine_make_small,
    bad_inputs=[
        (lambda: ops.df_affine(_r(2, 3, 4), _r(1, 2, 3), _r(1, 2, 3)), ValueError, ["x", "4-D"]),
        (lambda: ops.df_affine(_X4, _r(1, 3, 3), _r(1, 3, 3)), ValueError, ["gamma", "B=2"]),
        (lambda: ops.df_affine(_X4, _r(1, 2, 4), _r(1, 2, 4)), ValueError, ["gamma", "C=3"]),
        (lambda: ops.df_affine(_X4, _r(0, 2, 3), _r(0, 2, 3)), ValueError, ["K >= 1"]),
        (lambda: ops.df_affine(_X4, _r(2, 2, 3), _r(1, 2, 3)), ValueError, ["beta", "K=2"]),
        (lambda: ops.df_affine(torch.ones(2, 3, 4, 4, dtype=torch.int32), _r(1, 2, 3), _r(1, 2, 3)), TypeError,
         ["x", "int32"]),
        (lambda: ops.df_affine([1.0], _r(1, 2, 3), _r(1, 2, 3)), TypeError, ["x", "Tensor"]),
        (lambda: ops.df_affine(_X4, _r(1, 2, 3), _r(1, 2, 3), "0.2"), TypeError, ["negative_slope"]),
        (lambda: ops.df_affine(_X4, _r(1, 2, 3), _r(1, 2, 3), None), TypeError, ["negative_slope"]),
        (lambda: ops.df_affine(_X4, _r(1, 2, 3, device="meta"), _r(1, 2, 3)), ValueError, ["one device"]),
    ],
)


# ----------------------------------------------------------------------------- bias_leaky_relu

def _blrelu_make(dtype, device):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 4, 3, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    bias = torch.randn(5, generator=g).to(device, torch.float64 if dtype == torch.float64 else torch.float32)
    return [x, bias]


def _blrelu_opcheck(fwd, bwd, device):
    x, bias = _blrelu_make(torch.float32, device)
    y = ops.bias_leaky_relu_reference(x, bias)
    return [(fwd, (x, bias, 0.2)), (fwd, (x, None, 0.2)), (bwd, (torch.randn_like(x), y, 0.2))]


BIAS_LEAKY_RELU = OpSpec(
    "bias_leaky_relu", _blrelu_make, (0, 1),
    lambda x, b: ops.bias_leaky_relu(x, b, 0.2), lambda x, b: ops.bias_leaky_relu_reference(x, b, 0.2),
    _dispatch("bias_leaky_relu"), _blrelu_opcheck,
    bad_inputs=[
        (lambda: ops.bias_leaky_relu(_r(2, 3, 4), _r(4)), ValueError, ["bias", "(3,)"]),
        (lambda: ops.bias_leaky_relu(_r(2, 3, 4), _r(1, 3)), ValueError, ["bias", "1-D"]),
        (lambda: ops.bias_leaky_relu(_r(5), _r(5)), ValueError, ["x", "at least 2 dims"]),
        (lambda: ops.bias_leaky_relu(torch.ones(2, 3, dtype=torch.int32), None), TypeError, ["x", "int32"]),
        (lambda: ops.bias_leaky_relu([1.0, 2.0], None), TypeError, ["x", "Tensor"]),
        (lambda: ops.bias_leaky_relu(_r(2, 3), None, -0.1), ValueError, ["negative_slope", ">= 0"]),
        (lambda: ops.bias_leaky_relu(_r(2, 3), None, "0.2"), TypeError, ["negative_slope", "real number"]),
        (lambda: ops.bias_leaky_relu(_r(2, 3), _r(3, device="meta")), ValueError, ["one device"]),
    ],
)


# ----------------------------------------------------------------------------- gradient_penalty

def _gp_make(dtype, device):
    g = torch.Generator().manual_seed(2)
    image = torch.randn(3, 3, 7, 5, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    image[0] = 0  # a sample with zero gradients: 0, never NaN
    sentence = torch.randn(3, 11, generator=g).to(device, dtype)
    sentence[0] = 0
    return [image, sentence]


def _gp_opcheck(fwd, bwd, device):
    grads = _gp_make(torch.float32, device)
    loss, sumsq = fwd(grads, 2.0, 6.0, 0.5)
    return [(fwd, (grads, 2.0, 6.0, 0.5)), (bwd, (torch.ones_like(loss), grads, sumsq, 2.0, 6.0, 0.5))]


GRADIENT_PENALTY = OpSpec(
    "gradient_penalty", _gp_make, (0, 1),
    lambda a, b: ops.gradient_penalty([a, b], 2.0, 6.0), lambda a, b: ops.gradient_penalty_reference([a, b], 2.0, 6.0),
    _dispatch("gradient_penalty"), _gp_opcheck,
    bad_inputs=[
        (lambda: ops.gradient_penalty([]), ValueError, ["grads", "at least one"]),
        (lambda: ops.gradient_penalty(_r(2, 3)), TypeError, ["grads", "list or tuple"]),
        (lambda: ops.gradient_penalty([_r(2, 3), _r(3, 3)]), ValueError, ["grads[1]", "batch size 2"]),
        (lambda: ops.gradient_penalty([_r(2, 3)], p=0.0), ValueError, ["p", "> 0"]),
        (lambda: ops.gradient_penalty([_r(2, 3)], p=-2.0), ValueError, ["p", "> 0"]),
        (lambda: ops.gradient_penalty([_r(2, 3)], k="2"), TypeError, ["k", "real number"]),
        (lambda: ops.gradient_penalty([torch.ones(2, 3, dtype=torch.int64)]), TypeError, ["grads[0]", "int64"]),
        (lambda: ops.gradient_penalty([_r(2, 3), [1.0, 2.0]]), TypeError, ["grads[1]", "Tensor"]),
        (lambda: ops.gradient_penalty([torch.tensor(1.0)]), ValueError, ["grads[0]", "batch"]),
        (lambda: ops.gradient_penalty([_r(0, 3)]), ValueError, ["batch size >= 1"]),
        (lambda: ops.gradient_penalty([_r(2, 3), _r(2, 3, device="meta")]), ValueError, ["one device"]),
    ],
)


# ----------------------------------------------------------------------------- word_region_attention

def _wra_make(dtype, device):
    g = torch.Generator().manual_seed(3)
    regions = torch.randn(3, 5, 3, 4, generator=g).to(device, dtype)
    words = torch.randn(3, 5, 6, generator=g).to(device, dtype)
    lengths = torch.tensor([6, 2, 0])  # the last caption all padding: zeros, never NaN
    mask = torch.arange(6)[None, :] >= lengths[:, None]
    return [regions, words, mask.to(device)]


def _wra_make_small(dtype, device):
    g = torch.Generator().manual_seed(3)
    lengths = torch.tensor([4, 0])
    mask = torch.arange(4)[None, :] >= lengths[:, None]
    return [torch.randn(2, 3, 2, 3, generator=g).to(device, dtype), torch.randn(2, 3, 4, generator=g).to(device, dtype),
            mask.to(device)]


def _wra_opcheck(fwd, bwd, device):
    regions, words, mask = _wra_make(torch.float32, device)
    regions = regions.contiguous(memory_format=torch.channels_last)
    region_mask = ops.official_region_mask(mask, 12)
    samples = []
    for m in (None, mask, region_mask):
        samples += [(fwd, (regions, words, m, False)), (fwd, (regions, words, m, True))]
        _, lse, _ = fwd(regions, words, m, False)
        grad_attention = torch.randn(3, 6, 3, 4, device=device).contiguous(memory_format=torch.channels_last)
        for ga in (None, grad_attention):
            samples.append((bwd, (torch.randn_like(regions), ga, regions, words, m, lse)))
    return samples


_R4 = torch.randn(2, 3, 4, 4)
_W3 = torch.randn(2, 3, 5)
WORD_REGION_ATTENTION = OpSpec(
    "word_region_attention", _wra_make, (0, 1),
    lambda r, w, m: ops.word_region_attention(r, w, m, return_attention=True),
    lambda r, w, m: ops.word_region_attention_reference(r, w, m, return_attention=True),
    _dispatch("word_region_attention"), _wra_opcheck, gradcheck_make=_wra_make_small,
    bad_inputs=[
        (lambda: ops.word_region_attention(_r(2, 3, 4), _r(2, 3, 5)), ValueError, ["regions", "4-D"]),
        (lambda: ops.word_region_attention(_R4, _r(2, 3)), ValueError, ["words", "3-D"]),
        (lambda: ops.word_region_attention(_R4, _r(1, 3, 5)), ValueError, ["words", "B=2"]),
        (lambda: ops.word_region_attention(_R4, _r(2, 4, 5)), ValueError, ["words", "C=3"]),
        (lambda: ops.word_region_attention(_R4, _r(2, 3, 0)), ValueError, ["words", "T >= 1"]),
        (lambda: ops.word_region_attention(_R4, _r(2, 3, 5, dtype=torch.float64)), TypeError, ["words", "float64"]),
        (lambda: ops.word_region_attention(torch.ones(2, 3, 4, 4, dtype=torch.int32), _W3), TypeError,
         ["regions", "int32"]),
        (lambda: ops.word_region_attention(_R4, [1.0]), TypeError, ["words", "Tensor"]),
        (lambda: ops.word_region_attention(_R4, _W3, torch.zeros(2, 4, dtype=torch.bool)), ValueError,
         ["mask", "T=5"]),
        (lambda: ops.word_region_attention(_R4, _W3, torch.zeros(2, 15, 5, dtype=torch.bool)), ValueError,
         ["mask", "N=H*W=16"]),
        (lambda: ops.word_region_attention(_R4, _W3, torch.zeros(2, 5, dtype=torch.uint8)), TypeError,
         ["mask", "bool"]),
        (lambda: ops.word_region_attention(_R4, _W3, [[True]]), TypeError, ["mask", "Tensor"]),
        (lambda: ops.word_region_attention(_R4, _W3, return_attention=1), TypeError, ["return_attention", "bool"]),
        (lambda: ops.word_region_attention(_R4, _W3.to("meta")), ValueError, ["one device"]),
        (lambda: ops.word_region_attention(_R4, _W3, torch.zeros(2, 5, dtype=torch.bool, device="meta")), ValueError,
         ["one device"]),
    ],
)


# ----------------------------------------------------------------------------- damsm_word_scores

def _damsm_make(dtype, device):
    g = torch.Generator().manual_seed(4)
    words = torch.randn(3, 7, 4, generator=g).to(device, dtype)
    regions = torch.randn(2, 7, 3, 5, generator=g).to(device, dtype)  # M = 2 images != B = 3 captions
    return [words, torch.tensor([1, 4, 2], device=device), regions]


def _damsm_make_small(dtype, device):
    g = torch.Generator().manual_seed(4)
    words = torch.randn(2, 3, 3, generator=g).to(device, dtype)
    regions = torch.randn(3, 3, 2, 2, generator=g).to(device, dtype)
    return [words, torch.tensor([3, 1], device=device), regions]


def _damsm_opcheck(fwd, bwd, device):
    words, lengths, regions = _damsm_make(torch.float32, device)
    _, alpha, beta, context = fwd(words, lengths, regions, 4.0, 5.0, True)
    grad = torch.randn(regions.shape[0], words.shape[0], device=device)
    return [(fwd, (words, lengths, regions, 4.0, 5.0, False)), (fwd, (words, lengths, regions, 4.0, 5.0, True)),
            (bwd, (grad, words, lengths, regions, alpha, beta, context, 4.0, 5.0))]


_WORDS, _LENGTHS, _REGIONS = _damsm_make(torch.float32, "cpu")


def _damsm_bad(**override):
    args = dict(words=_WORDS, lengths=_LENGTHS, regions=_REGIONS)
    args.update(override)
    return lambda: ops.damsm_word_scores(**args)


DAMSM_WORD_SCORES = OpSpec(
    "damsm_word_scores", _damsm_make, (0, 2),
    lambda w, lengths, r: ops.damsm_word_scores(w, lengths, r, 4.0, 5.0),
    lambda w, lengths, r: ops.damsm_word_scores_reference(w, lengths, r, 4.0, 5.0),
    _dispatch("damsm"), _damsm_opcheck, fp32_tol=2e-5,
    gradcheck_make=_damsm_make_small,
    bad_inputs=[
        (_damsm_bad(lengths=torch.tensor([0, 4, 2])), ValueError, ["lengths", "[1, T=4]", "min 0"]),
        (_damsm_bad(lengths=torch.tensor([1, 5, 2])), ValueError, ["lengths", "max 5"]),
        (_damsm_bad(lengths=torch.tensor([1.0, 4.0, 2.0])), TypeError, ["lengths", "integer", "float32"]),
        (_damsm_bad(lengths=[1, 4, 2]), TypeError, ["lengths", "list"]),
        (_damsm_bad(lengths=torch.tensor([1, 4])), ValueError, ["lengths", "B=3"]),
        (_damsm_bad(regions=_r(2, 6, 3, 5)), ValueError, ["regions", "D=7"]),
        (_damsm_bad(regions=_r(2, 7, 15)), ValueError, ["regions", "4-D"]),
        (_damsm_bad(words=_r(3, 7)), ValueError, ["words", "3-D"]),
        (_damsm_bad(words=torch.ones(3, 7, 4, dtype=torch.int32)), TypeError, ["words", "int32"]),
        (_damsm_bad(regions=_r(2, 7, 3, 5, device="meta")), ValueError, ["one device"]),
        (_damsm_bad(words=_r(3, 7, 0)), ValueError, ["non-empty"]),
        (_damsm_bad(gamma1="4"), TypeError, ["gamma1"]),
        (_damsm_bad(gamma2=None), TypeError, ["gamma2"]),
    ],
)


# ----------------------------------------------------------------------------- gate_split

def _gate_split_make(dtype, device):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 7, 5, 3, generator=g).to(device, dtype).contiguous(memory_format=torch.channels_last)
    logits = (2 * torch.randn(2, 1, 5, 3, generator=g)).to(device, dtype)  # one gate per position
    return [logits, x]


def _gate_split_opcheck(fwd, bwd, device):
    logits, x = _gate_split_make(torch.float32, device)
    full = torch.randn(x.shape, device=device)  # one gate per element, NCHW while x is NHWC
    dk, dn = torch.randn_like(x), torch.randn(x.shape, device=device)
    return [(fwd, (logits, x)), (fwd, (full, x)), (fwd, (logits, x.contiguous())),
            (bwd, (dk, dn, logits, x)), (bwd, (None, dn, logits, x.contiguous())), (bwd, (dk, None, full, x))]


_G4 = torch.randn(2, 3, 4, 5)
GATE_SPLIT = OpSpec(
    "gate_split", _gate_split_make, (0, 1), ops.gate_split, ops.gate_split_reference,
    _dispatch("gate_split"), _gate_split_opcheck,
    bad_inputs=[
        (lambda: ops.gate_split(_r(2, 2, 4, 5), _G4), ValueError, ["gate_logits", "(B=2, 1, H=4, W=5)", "(2, 2, 4, 5)"]),
        (lambda: ops.gate_split(_r(2, 1, 4, 5, dtype=torch.float64), _G4), TypeError, ["gate_logits", "float64"]),
        (lambda: ops.gate_split(_r(2, 1, 4), _r(2, 3, 4)), ValueError, ["x", "4-D"]),
        (lambda: ops.gate_split([0.0], _G4), TypeError, ["gate_logits", "Tensor"]),
        (lambda: ops.gate_split(_r(2, 1, 4, 5, device="meta"), _G4), ValueError, ["one device"]),
    ],
)


SPECS = [DF_AFFINE, BIAS_LEAKY_RELU, GRADIENT_PENALTY, WORD_REGION_ATTENTION, DAMSM_WORD_SCORES, GATE_SPLIT]
_SPEC_IDS = [s.name for s in SPECS]


# ----------------------------------------------------------------------------- the contract

@pytest.mark.parametrize("backend", backend_params(*fused_backend_names()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=_SPEC_IDS)
def test_forward_and_backward_match_reference(spec, dtype, backend):
    args = spec.make(dtype, backend_device(backend))
    exact = _run(spec.reference, _float64(args), spec.differentiable)
    with ops.use_backend(backend):
        got = _run(spec.call, args, spec.differentiable)
    if dtype == torch.float32:
        for i, (a, e) in enumerate(zip(got, exact)):
            assert_rel_close(a, e, spec.fp32_tol, f"{spec.name} {backend} result {i}")
        return
    eager = _run(spec.reference, args, spec.differentiable)  # the reference at the same precision
    # The Triton interpreter converts float32 to bfloat16 by truncation, twice the rounding
    # error of round-to-nearest (which Triton uses on a GPU and PyTorch everywhere).
    factor = 4.0 if (backend == "triton" and args[0].device.type == "cpu" and dtype == torch.bfloat16) else 2.0
    for i, (a, p, e) in enumerate(zip(got, eager, exact)):
        assert a.dtype == p.dtype, f"{spec.name} {backend} result {i}: dtype {a.dtype}, eager {p.dtype}"
        assert_low_precision_close(a, p, e, dtype, f"{spec.name} {backend} {dtype} result {i}", factor)


@pytest.mark.slow
@pytest.mark.parametrize("backend", float64_backends())
@pytest.mark.parametrize("spec", SPECS, ids=_SPEC_IDS)
def test_gradcheck_float64(spec, backend):
    args = (spec.gradcheck_make or spec.make)(torch.float64, backend_device(backend))
    inputs = tuple(args[i].detach().clone().requires_grad_() for i in spec.differentiable)

    def fn(*diff):
        full = list(args)
        for i, t in zip(spec.differentiable, diff):
            full[i] = t
        return spec.call(*full)

    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs)


# Under TRITON_INTERPRET=1 the Triton launch cannot take fake tensors (the interpreter reads
# memory), so the Triton ops' fake-tensor and AOT checks need a GPU; their schema and
# autograd registration are checked everywhere.
_INTERPRETER_OPCHECKS = ("test_schema", "test_autograd_registration")


@pytest.mark.parametrize("backend", backend_params(*fused_backend_names()))
@pytest.mark.parametrize("spec", SPECS, ids=_SPEC_IDS)
def test_opcheck(spec, backend):
    device = backend_device(backend)
    fwd, bwd = spec.dispatch.fused_ops(backend)
    only = {"test_utils": _INTERPRETER_OPCHECKS} if (backend == "triton" and device == "cpu") else {}
    for op, args in spec.opcheck_samples(fwd, bwd, device):
        torch.library.opcheck(op.default, args, **only)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("spec", SPECS, ids=_SPEC_IDS)
def test_torch_compile_fullgraph(spec, backend):
    device = backend_device(backend)
    if backend == "triton" and device == "cpu":
        pytest.skip("Triton under the CPU interpreter cannot be traced (fake tensors reach the interpreted "
                    "launch); covered on a GPU")
    torch._dynamo.reset()  # else dynamo's recompile limit is reached after a few cases and the rest run eagerly
    args = spec.make(torch.float32, device)

    def f(*a):
        a = list(a)
        a[spec.differentiable[0]] = a[spec.differentiable[0]] * 2  # an op before: the graph must not break
        return sum(o.float().pow(2).sum() for o in _outputs(spec.call(*a)))

    leaves = [a.detach().clone().requires_grad_() if i in spec.differentiable else a for i, a in enumerate(args)]
    with ops.use_backend(backend):
        compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
        out = compiled(*leaves)
        got = torch.autograd.grad(out, [leaves[i] for i in spec.differentiable])
        eager = f(*leaves)
        want = torch.autograd.grad(eager, [leaves[i] for i in spec.differentiable])
    assert_rel_close(out.detach(), eager.detach(), 1e-6, f"{spec.name} {backend} compiled")
    for a, e in zip(got, want):
        assert_rel_close(a, e, 1e-6, f"{spec.name} {backend} compiled gradient")


@pytest.mark.parametrize(
    "spec, case", [(s, i) for s in SPECS for i in range(len(s.bad_inputs))],
    ids=[f"{s.name}-{i}" for s in SPECS for i in range(len(s.bad_inputs))])
def test_bad_inputs(spec, case):
    fn, error, words = spec.bad_inputs[case]
    _raises(fn, error, words)
