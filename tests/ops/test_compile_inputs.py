"""Every op under torch.compile(fullgraph=True), with inputs that do and do not require grad.

Regression: ``torch.compile(fullgraph=True)`` of ``ops.gradient_penalty([a, b])`` failed when no
gradient required grad (dynamo passed the autograd.Function's arguments shifted by one, so
"Expected a value of type 'float' for argument 'scale' but instead found type 'str'").
The grid runs with the ``aot_eager`` backend (dynamo, the fake kernels and AOT autograd: where
those failures live) to keep CI short; the penalty also runs with inductor.
"""
import pytest
import torch

from fastt2i import ops

BACKENDS = [b for b in ops.available_backends() if b in ("cpu", "reference")]


def _inputs(op, requires_grad, n_grads=2):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if op == "df_affine":
        args = [r(2, 5, 3, 4), 1 + 0.1 * r(2, 2, 5), 0.1 * r(2, 2, 5)]
        fn = lambda x, gm, bt: ops.df_affine(x, gm, bt, 0.2)  # noqa: E731
    elif op == "bias_leaky_relu":
        args = [r(2, 5, 3, 4), r(5)]
        fn = lambda x, b: ops.bias_leaky_relu(x, b, 0.2)  # noqa: E731
    elif op == "word_region_attention":
        mask = torch.tensor([[False, False, True], [False, False, False]])
        args = [r(2, 4, 3, 5), r(2, 4, 3)]
        fn = lambda q, w: ops.word_region_attention(q, w, mask)  # noqa: E731
    elif op == "damsm_word_scores":
        lengths = torch.tensor([2, 3])
        args = [r(2, 6, 3), r(3, 6, 2, 2)]
        fn = lambda w, q: ops.damsm_word_scores(w, lengths, q, 4.0, 5.0)  # noqa: E731
    elif op == "gate_split":
        args = [r(2, 1, 3, 4), r(2, 5, 3, 4)]
        fn = lambda gl, x: torch.cat(ops.gate_split(gl, x), 1)  # noqa: E731
    elif op == "gradient_penalty":
        args = [0.1 * r(3, 2, 4, 4), 0.1 * r(3, 7)][:n_grads]
        fn = lambda *gs: ops.gradient_penalty(list(gs), 2.0, 6.0)  # noqa: E731
    else:
        raise ValueError(op)
    return fn, [a.requires_grad_(requires_grad) for a in args]


def _check(op, backend, requires_grad, compile_backend="aot_eager", n_grads=2):
    fn, args = _inputs(op, requires_grad, n_grads)
    torch._dynamo.reset()
    with ops.use_backend(backend):
        compiled = torch.compile(fn, fullgraph=True, backend=compile_backend)
        out = compiled(*args)
        expected = fn(*[a.detach().requires_grad_(requires_grad) for a in args])
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    assert out.requires_grad == requires_grad
    if requires_grad:
        upstream = torch.randn_like(out)
        grads = torch.autograd.grad(out, args, upstream)
        ref_args = [a.detach().requires_grad_() for a in args]
        with ops.use_backend("reference"):
            ref_grads = torch.autograd.grad(fn(*ref_args), ref_args, upstream)
        for a, e in zip(grads, ref_grads):
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad_inputs", "grad_inputs"])
@pytest.mark.parametrize("op", ["df_affine", "bias_leaky_relu", "word_region_attention", "damsm_word_scores",
                                "gate_split"])
def test_op_compiles_fullgraph(op, backend, requires_grad):
    _check(op, backend, requires_grad)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad_inputs", "grad_inputs"])
@pytest.mark.parametrize("n_grads", [1, 2], ids=["one_gradient", "two_gradients"])
def test_gradient_penalty_compiles_fullgraph(backend, requires_grad, n_grads):
    _check("gradient_penalty", backend, requires_grad, n_grads=n_grads)


@pytest.mark.parametrize("requires_grad", [False, True], ids=["no_grad_inputs", "grad_inputs"])
def test_gradient_penalty_compiles_with_inductor(requires_grad):
    if "cpu" not in ops.available_backends():
        pytest.skip("the cpu backend is not built")
    _check("gradient_penalty", "cpu", requires_grad, compile_backend="inductor", n_grads=2)


def test_gradient_penalty_mixed_requires_grad():
    """One gradient requires grad, the other not: the penalty is differentiable in the first only."""
    fn, (a, b) = _inputs("gradient_penalty", False)
    a.requires_grad_()
    torch._dynamo.reset()
    with ops.use_backend(BACKENDS[0]):
        out = torch.compile(fn, fullgraph=True, backend="aot_eager")(a, b)
    (ga,) = torch.autograd.grad(out, [a])
    with ops.use_backend("reference"):
        a2 = a.detach().requires_grad_()
        (expected,) = torch.autograd.grad(fn(a2, b), [a2])
    torch.testing.assert_close(ga, expected, rtol=1e-4, atol=1e-6)
