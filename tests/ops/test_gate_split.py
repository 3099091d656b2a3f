"""gate_split (DR-GAN's spatial gate): every backend against the float64 reference, forward and backward,
both gate shapes, layouts, dtypes, an unused part, extreme logits and bad inputs (the shared contract is in
test_op_contract.py; the CPU kernels at every ISA level in cpu_kernel_checks.py)."""
import pytest
import torch

from fastt2i import ops
from helpers import TOL, assert_rel_close, backend_device, backend_params, fused_backends, sweep_backends

# (B, C, H, W): odd sizes, channel tails past every vector width (37), one position, C = 1 (per-position
# gates equal per-element ones), positions split in CPU chunks with a tail (37 * 29 = 1073 in two
# chunks of 576 with two threads), more positions than a CPU chunk of 16384 (131 * 127 = 16637: 16384
# and 253)
SHAPES = [(2, 5, 7, 9), (1, 3, 1, 1), (2, 37, 5, 3), (3, 1, 4, 5), (2, 3, 37, 29), (1, 2, 131, 127)]
LAYOUTS = ["contiguous", "channels_last", "strided", "mixed"]
GRADS = ["both", "key_only", "nonkey_only"]


def make_inputs(shape, per_position, dtype, layout, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    lshape = (B, 1, H, W) if per_position else shape
    x = torch.randn(shape, generator=g)
    logits = 2 * torch.randn(lshape, generator=g)
    if layout == "strided":  # every other column of wider tensors: not dense, copied by the op
        x = torch.randn(B, C, H, 2 * W, generator=g)[..., ::2]
        logits = (2 * torch.randn(*lshape[:3], 2 * W, generator=g))[..., ::2]
    x, logits = x.to(device, dtype), logits.to(device, dtype)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
        logits = logits.contiguous(memory_format=torch.channels_last)
    elif layout == "mixed":  # x channels_last, the logits not: laid out like x by the op
        x = x.contiguous(memory_format=torch.channels_last)
    return logits, x


def run(fn, logits, x, grads, upstream):
    """key, nonkey and the gradients of the logits and x for the upstream gradients of the used parts."""
    logits = logits.detach().clone().requires_grad_()
    x = x.detach().clone().requires_grad_()
    key, nonkey = fn(logits, x)
    outs, ups = [], []
    if grads in ("both", "key_only"):
        outs.append(key)
        ups.append(upstream[0])
    if grads in ("both", "nonkey_only"):
        outs.append(nonkey)
        ups.append(upstream[1])
    dl, dx = torch.autograd.grad(outs, (logits, x), ups)
    return [key.detach(), nonkey.detach(), dl, dx]


def check_backend(backend, shape, per_position, dtype, layout, grads="both", seed=0):
    device = backend_device(backend)
    logits, x = make_inputs(shape, per_position, dtype, layout, device, seed)
    g = torch.Generator().manual_seed(seed + 1)
    upstream = [torch.randn(shape, generator=g).to(device, dtype) for _ in range(2)]
    want = run(ops.gate_split_reference, logits.double(), x.double(), grads, [u.double() for u in upstream])
    with ops.use_backend(backend):
        got = run(ops.gate_split, logits, x, grads, upstream)
    for name, a, e in zip(("key", "nonkey", "dlogits", "dx"), got, want):
        assert a.dtype == dtype, f"{backend} {name}: dtype {a.dtype}"
        assert a.shape == e.shape, f"{backend} {name}: shape {tuple(a.shape)}"
        # half types: the gradient of the logits sums C products rounded from half inputs
        assert_rel_close(a, e, TOL[dtype], f"{backend} {name} {shape} {layout} {grads}")
    if layout in ("channels_last", "mixed") and shape[1] > 1 and shape[2] * shape[3] > 1:
        for name, t in zip(("key", "nonkey", "dx"), (got[0], got[1], got[3])):
            assert t.is_contiguous(memory_format=torch.channels_last), f"{backend} {name} lost channels_last"
    return got


@pytest.mark.parametrize("backend", sweep_backends())
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("per_position", [True, False], ids=["gate_B1HW", "gate_like_x"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_matches_reference_fp32(backend, shape, per_position, layout):
    check_backend(backend, shape, per_position, torch.float32, layout)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("per_position", [True, False], ids=["gate_B1HW", "gate_like_x"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_matches_reference_half(backend, dtype, per_position, layout):
    check_backend(backend, (2, 37, 5, 7), per_position, dtype, layout)


@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("grads", ["key_only", "nonkey_only"])
@pytest.mark.parametrize("per_position", [True, False], ids=["gate_B1HW", "gate_like_x"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_one_part_unused(backend, grads, per_position, layout):
    """The unused part's gradient is None: the kernels read it as zeros (no zeros tensor is made)."""
    check_backend(backend, (2, 6, 5, 3), per_position, torch.float32, layout, grads)


@pytest.mark.parametrize("backend", backend_params("reference", "cpu", "cuda"))
@pytest.mark.parametrize("per_position", [True, False], ids=["gate_B1HW", "gate_like_x"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gradcheck_float64(backend, per_position, layout):
    logits, x = make_inputs((2, 3, 4, 3), per_position, torch.float64, layout, backend_device(backend))
    with ops.use_backend(backend):
        assert torch.autograd.gradcheck(ops.gate_split, (logits.requires_grad_(), x.requires_grad_()))


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("per_position", [True, False], ids=["gate_B1HW", "gate_like_x"])
def test_extreme_logits_stay_finite(backend, dtype, per_position):
    """Logits of +-1e4 saturate the gate to exactly 1 / 0 (no inf / NaN from exp overflow), with
    large x: key = x or 0, nonkey = 0 or x, and the gate's gradient is exactly 0 there."""
    device = backend_device(backend)
    big = 3e4 if dtype == torch.float16 else 1e30
    B, C, H, W = 2, 5, 3, 4
    lshape = (B, 1, H, W) if per_position else (B, C, H, W)
    logits = torch.full(lshape, 1e4)
    logits.view(-1)[1::2] = -1e4
    logits = logits.to(device, dtype)
    x = (big * torch.randn(B, C, H, W, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)).to(device, dtype)
    with ops.use_backend(backend):
        lg, xg = logits.clone().requires_grad_(), x.clone().requires_grad_()
        key, nonkey = ops.gate_split(lg, xg)
        dk, dn = torch.ones_like(key), -torch.ones_like(nonkey)
        dl, dx = torch.autograd.grad((key, nonkey), (lg, xg), (dk, dn))
    on = (logits > 0).expand_as(x)
    zero = torch.zeros_like(x)
    for name, t in (("key", key), ("nonkey", nonkey), ("dlogits", dl), ("dx", dx)):
        assert torch.isfinite(t).all(), f"{backend} {name}: non-finite"
    assert torch.equal(key, torch.where(on, x, zero)) and torch.equal(nonkey, torch.where(on, zero, x))
    assert torch.equal(dx, torch.where(on, dk, dn)) and not dl.any()


@pytest.mark.parametrize("backend", backend_params())
def test_empty_and_zero_channels(backend):
    device = backend_device(backend)
    with ops.use_backend(backend):
        x = torch.zeros(2, 0, 3, 3, device=device, requires_grad=True)
        logits = torch.randn(2, 1, 3, 3, device=device, requires_grad=True)
        key, nonkey = ops.gate_split(logits, x)
        (dl,) = torch.autograd.grad(key.sum() + nonkey.sum(), (logits,))
    assert key.shape == nonkey.shape == (2, 0, 3, 3) and torch.equal(dl, torch.zeros_like(dl))


def test_bad_inputs_name_what_was_expected():
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(ValueError, match=r"gate_logits: expected shape \(B=2, 1, H=4, W=5\) or x's shape"):
        ops.gate_split(torch.randn(2, 2, 4, 5), x)
    with pytest.raises(ValueError, match=r"gate_logits: expected shape .* got \(2, 1, 5, 4\)"):
        ops.gate_split(torch.randn(2, 1, 5, 4), x)
    with pytest.raises(TypeError, match="gate_logits: expected x's dtype torch.float32, got torch.float16"):
        ops.gate_split(torch.randn(2, 1, 4, 5, dtype=torch.float16), x)
    with pytest.raises(ValueError, match=r"x: expected a 4-D tensor \(B, C, H, W\)"):
        ops.gate_split(torch.randn(2, 1, 4), torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="one device"):
        ops.gate_split(torch.randn(2, 1, 4, 5, device="meta"), x)
    with pytest.raises(TypeError, match="x: expected a floating dtype"):
        ops.gate_split(torch.ones(2, 1, 4, 5, dtype=torch.int32), torch.ones(2, 3, 4, 5, dtype=torch.int32))
    with pytest.raises(TypeError, match="gate_logits: expected a torch.Tensor"):
        ops.gate_split(0.5, x)


@pytest.mark.parametrize("backend", backend_params("cpu"))
def test_compiled_op_checks_its_inputs(backend):
    """Called directly (past the Python checks), the compiled op still refuses bad shapes."""
    from fastt2i.ops.gate_split import DISPATCH
    fwd, bwd = DISPATCH.fused_ops(backend)
    x = torch.randn(2, 3, 4, 5)
    with pytest.raises(RuntimeError, match="gate_logits: expected"):
        fwd(torch.randn(2, 2, 4, 5), x)
    with pytest.raises(RuntimeError, match="grad_key: expected shape"):
        bwd(torch.randn(2, 3, 4, 4), None, torch.randn(2, 1, 4, 5), x)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_gpu_drgan_shapes(backend, layout):
    if backend not in ops.available_backends():
        pytest.skip(f"{backend} not available")
    for shape in [(8, 32, 64, 64), (8, 64, 128, 128)]:
        for dtype in (torch.float32, torch.bfloat16):
            for per_position in (True, False):
                check_backend(backend, shape, per_position, dtype, layout)
