"""Every CPU kernel against its reference, run in one process at one CPU level.

``python tests/ops/cpu_kernel_checks.py`` (with ATEN_CPU_CAPABILITY=default|avx2|avx512 set by
tests/ops/test_cpu_capability.py) prints one line per failed check and exits 1 if any failed.
Shapes are small but cover tails (sizes that are not a multiple of any vector width: 8 / 16 float
lanes, 16 / 32 half lanes), channels_last, strided (non-dense) inputs, fp32 / bf16 / fp16 (and
fp64), and the all-padding caption case.
"""
from __future__ import annotations

import sys

import torch

from fastt2i import ops

# fp32 <= 1e-5 relative (max-norm) as the project's standard; half types 1e-2.
TOL = {torch.float32: 1e-5, torch.float64: 1e-10, torch.float16: 1e-2, torch.bfloat16: 1e-2}
HALF_TYPES = (torch.float16, torch.bfloat16)


def rel_error(actual, expected) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-12)).item()


class Checker:
    def __init__(self):
        self.failures: list[str] = []
        self.count = 0

    def close(self, what, actual, expected, dtype):
        self.count += 1
        if not torch.isfinite(actual).all():
            self.failures.append(f"{what}: non-finite values")
            return
        err = rel_error(actual, expected)
        if err > TOL[dtype]:
            self.failures.append(f"{what}: relative error {err:.3g} > {TOL[dtype]:.3g}")


def _layout(x, layout):
    if layout == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if layout == "strided":  # every other column of a wider tensor: not dense
        wide = torch.cat([x, x], dim=-1)
        return wide[..., ::2].copy_(x)
    return x


def _forward_backward(c: Checker, name, fn, inputs, dtype):
    """fn(*inputs) on the cpu backend against the reference run on float64 copies: the output and the
    gradient of every input that requires grad, for one fixed random upstream gradient."""
    with ops.use_backend("cpu"):
        out = fn(*inputs)
    ref_inputs = [t.detach().double().requires_grad_(t.requires_grad)
                  if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    with ops.use_backend("reference"):
        ref = fn(*ref_inputs)
    c.close(f"{name} forward", out, ref, dtype)
    diff = [i for i, t in enumerate(inputs) if isinstance(t, torch.Tensor) and t.requires_grad]
    if not diff:
        return
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    grads = torch.autograd.grad(out, [inputs[i] for i in diff], upstream.to(out.dtype))
    ref_grads = torch.autograd.grad(ref, [ref_inputs[i] for i in diff], upstream.double())
    for i, a, e in zip(diff, grads, ref_grads):
        c.close(f"{name} grad[{i}]", a, e, dtype)


def check_df_affine(c: Checker):
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for layout in ("contiguous", "channels_last", "strided"):
            for (B, C, H, W, K) in ((2, 19, 5, 7, 2), (1, 37, 3, 3, 1), (2, 8, 4, 4, 3)):
                acc = torch.float64 if dtype == torch.float64 else torch.float32
                x = _layout(torch.randn(B, C, H, W, generator=g).to(dtype), layout).requires_grad_()
                gamma = (1 + 0.3 * torch.randn(K, B, C, generator=g)).to(acc).requires_grad_()
                beta = (0.3 * torch.randn(K, B, C, generator=g)).to(acc).requires_grad_()
                _forward_backward(c, f"df_affine {dtype} {layout} {(B, C, H, W, K)}",
                                  lambda x, gm, bt: ops.df_affine(x, gm, bt, 0.2), [x, gamma, beta], dtype)
    # channels_last inputs over 4 MiB take the untiled forward (one position at a time)
    for dtype in (torch.float32, torch.float64):
        x = _layout(torch.randn(2, 37, 120, 121, generator=g).to(dtype), "channels_last").requires_grad_()
        gamma = (1 + 0.3 * torch.randn(2, 2, 37, generator=g)).to(dtype).requires_grad_()
        beta = (0.3 * torch.randn(2, 2, 37, generator=g)).to(dtype).requires_grad_()
        _forward_backward(c, f"df_affine {dtype} channels_last large", lambda x, gm, bt: ops.df_affine(x, gm, bt, 0.2),
                          [x, gamma, beta], dtype)


def check_bias_leaky_relu(c: Checker):
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for layout in ("contiguous", "channels_last", "strided"):
            for shape in ((2, 19, 5, 7), (3, 37, 1, 1), (2, 40, 3, 5)):
                acc = torch.float64 if dtype == torch.float64 else torch.float32
                x = _layout(torch.randn(*shape, generator=g).to(dtype), layout).requires_grad_()
                bias = (0.3 * torch.randn(shape[1], generator=g)).to(acc).requires_grad_()
                _forward_backward(c, f"bias_leaky_relu {dtype} {layout} {shape}",
                                  lambda x, b: ops.bias_leaky_relu(x, b, 0.2), [x, bias], dtype)
                _forward_backward(c, f"bias_leaky_relu no bias {dtype} {layout} {shape}",
                                  lambda x: ops.bias_leaky_relu(x, None, 0.2), [x], dtype)
        x2 = torch.randn(5, 23, generator=g).to(dtype).requires_grad_()  # (B, C): positions of C channels
        b2 = torch.randn(23, generator=g).to(torch.float64 if dtype == torch.float64 else torch.float32)
        _forward_backward(c, f"bias_leaky_relu (B, C) {dtype}", lambda x, b: ops.bias_leaky_relu(x, b, 0.2),
                          [x2, b2.requires_grad_()], dtype)


def check_gradient_penalty(c: Checker):
    g = torch.Generator().manual_seed(2)
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for layout in ("contiguous", "channels_last", "strided"):
            image = _layout(0.1 * torch.randn(3, 3, 11, 13, generator=g), layout).to(dtype).requires_grad_()
            sentence = (0.1 * torch.randn(3, 37, generator=g)).to(dtype).requires_grad_()
            _forward_backward(c, f"gradient_penalty two grads {dtype} {layout}",
                              lambda a, b: ops.gradient_penalty([a, b], 2.0, 6.0), [image, sentence], dtype)
            _forward_backward(c, f"gradient_penalty one grad {dtype} {layout}",
                              lambda a: ops.gradient_penalty([a], 5.0, 2.0), [image], dtype)
    zero = torch.zeros(2, 5, requires_grad=True)  # s_b = 0: zero derivative, never NaN
    _forward_backward(c, "gradient_penalty zeros", lambda a: ops.gradient_penalty([a + 0.0 * a]), [zero],
                      torch.float32)


def check_word_region_attention(c: Checker):
    g = torch.Generator().manual_seed(3)
    # N = 99: one full tile of 64 regions and a partial one; N = 80, C = 16: output rows of whole
    # cache lines (streaming stores).
    for B, C, H, W, T in ((3, 13, 9, 11, 7), (3, 16, 8, 10, 7)):
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for layout in ("contiguous", "channels_last", "strided"):
                what = f"word_region_attention {(B, C, H, W, T)} {dtype} {layout}"
                regions = _layout(torch.randn(B, C, H, W, generator=g), layout).to(dtype).requires_grad_()
                words = torch.randn(B, C, T, generator=g).to(dtype).requires_grad_()
                mask = torch.zeros(B, T, dtype=torch.bool)
                mask[0, 4:] = True
                mask[1, :] = True  # an all-padding caption: zero context, attention and gradients
                for m in (None, mask):
                    _forward_backward(c, f"{what} mask={m is not None}",
                                      lambda r, w, m=m: ops.word_region_attention(r, w, m), [regions, words], dtype)
                    _forward_backward(c, f"{what} attention mask={m is not None}",
                                      lambda r, w, m=m: ops.word_region_attention(r, w, m, return_attention=True)[1],
                                      [regions, words], dtype)
                with ops.use_backend("cpu"):
                    context, attention = ops.word_region_attention(regions, words, mask, return_attention=True)
                c.count += 1
                if context[1].abs().max() != 0 or attention[1].abs().max() != 0:
                    c.failures.append(f"{what}: all-padding caption not zero")


def check_damsm(c: Checker):
    g = torch.Generator().manual_seed(4)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        B, D, T, M = 4, 21, 11, 3  # lengths 1..T: one-word captions and partial rows of words
        words = torch.randn(B, D, T, generator=g).to(dtype).requires_grad_()
        regions = torch.randn(M, D, 5, 3, generator=g).to(dtype).requires_grad_()
        lengths = torch.tensor([1, 11, 5, 9])
        _forward_backward(c, f"damsm_word_scores {dtype}",
                          lambda w, r: ops.damsm_word_scores(w, lengths, r, 4.0, 5.0), [words, regions], dtype)


def _gate_split_both_parts(gate_logits, x):
    key, nonkey = ops.gate_split(gate_logits, x)
    return torch.cat([key, nonkey], dim=1)  # one output: both parts' gradients flow


def check_gate_split(c: Checker):
    g = torch.Generator().manual_seed(5)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        for layout in ("contiguous", "channels_last", "strided"):
            # S = 1073: chunks of 576 with two threads; S = 16637: past a chunk of 16384, and a tail
            for shape in ((2, 19, 5, 7), (3, 37, 1, 1), (2, 5, 37, 29), (1, 2, 131, 127)):
                B, C, H, W = shape
                x = _layout(torch.randn(*shape, generator=g).to(dtype), layout).requires_grad_()
                for lshape in ((B, 1, H, W), shape):
                    logits = _layout((2 * torch.randn(*lshape, generator=g)).to(dtype), layout).requires_grad_()
                    _forward_backward(c, f"gate_split {dtype} {layout} {shape} gate {lshape}", _gate_split_both_parts,
                                      [logits, x], dtype)
                    _forward_backward(c, f"gate_split key only {dtype} {layout} {shape} gate {lshape}",
                                      lambda gl, x: ops.gate_split(gl, x)[0], [logits, x], dtype)


CHECKS = [check_df_affine, check_bias_leaky_relu, check_gradient_penalty, check_word_region_attention, check_damsm,
          check_gate_split]


def main() -> int:
    import fastt2i._C as ext

    c = Checker()
    for check in CHECKS:
        check(c)
    print(f"level {ext.cpu_capability()} (ATen {torch.backends.cpu.get_cpu_capability()}): "
          f"{c.count} checks, {len(c.failures)} failed")
    for f in c.failures:
        print("FAIL", f)
    return 1 if c.failures else 0


if __name__ == "__main__":
    sys.exit(main())
