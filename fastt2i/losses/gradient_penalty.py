"""Gradient penalties: DF-GAN's Matching-Aware GP (MA-GP) and R1, on the fused ``gradient_penalty`` op.

Both take D's gradients with ``create_graph=True`` (so the penalty backpropagates
into D's parameters) and reduce them with one fused op, with no concatenation copy.

Mixed precision follows GALIP (DF-GAN's successor, ``MA_GP_MP``): with a
``torch.amp.GradScaler`` the gradients are taken of the *scaled* output (so fp16
gradients do not underflow) and unscaled by ``1 / (scale + 1e-8)`` before the
norm; here the unscaling is folded into the op (no extra pass over the image
gradient) and the penalty is reduced in float32.

Lazy regularisation (StyleGAN2): compute the penalty only every ``n`` D steps and
weight it by ``n`` (``LazyRegularizer``).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from fastt2i.ops import gradient_penalty


def _unscale_factor(scaler) -> float:
    if scaler is None or not scaler.is_enabled():
        return 1.0
    # As GALIP's MA_GP_MP: 1 / (scale + 1e-8).
    return 1.0 / (scaler.get_scale() + 1e-8)


def _grads(output: torch.Tensor, inputs: tuple, scaler) -> tuple:
    for i, t in enumerate(inputs):
        if not t.requires_grad:
            raise ValueError(f"input {i} of the penalty does not require grad: call .requires_grad_() on it "
                             f"before the discriminator's forward")
    out = output if scaler is None or not scaler.is_enabled() else scaler.scale(output)
    return torch.autograd.grad(outputs=out, inputs=inputs, grad_outputs=torch.ones_like(out),
                               retain_graph=True, create_graph=True, only_inputs=True)


def ma_gradient_penalty(output: torch.Tensor, image: torch.Tensor, sentence: torch.Tensor,
                        k: float = 2.0, p: float = 6.0, scaler: Optional[torch.amp.GradScaler] = None
                        ) -> torch.Tensor:
    """DF-GAN's MA-GP: ``k * mean_b ||(d out / d image, d out / d sentence)[b]||^p``.

    Args:
        output: D's raw logits on the real, matching pairs (any shape, batch first).
        image: the real images (B, 3, H, W) that produced ``output``, with requires_grad.
        sentence: the sentence embeddings (B, cond_dim), with requires_grad.
        k, p: 2 and 6 in DF-GAN.
        scaler: a GradScaler when D runs under AMP (GALIP's recipe; see the module doc).

    Returns a 0-D float32 tensor (float64 for float64 inputs), differentiable into D.
    """
    grads = _grads(output, (image, sentence), scaler)
    return gradient_penalty(grads, k, p, scale=_unscale_factor(scaler))


def r1_penalty(output: torch.Tensor, real: torch.Tensor, gamma: float = 10.0,
               scaler: Optional[torch.amp.GradScaler] = None) -> torch.Tensor:
    """R1 (Mescheder et al. 2018): ``gamma / 2 * mean_b ||d out.sum() / d real[b]||^2``."""
    (grad,) = _grads(output, (real,), scaler)
    return gradient_penalty([grad], gamma / 2, 2.0, scale=_unscale_factor(scaler))


class LazyRegularizer:
    """StyleGAN2's lazy regularisation: apply a penalty every ``every`` steps, weighted by ``every``.

    >>> lazy = LazyRegularizer(every=4)
    >>> for step in range(steps):
    ...     loss = adversarial_loss
    ...     if lazy.due(step):
    ...         loss = loss + lazy(ma_gradient_penalty, output, image, sentence)

    ``every=1`` is the plain (every-step) penalty.
    """

    def __init__(self, every: int = 1):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every!r}")
        self.every = every

    @property
    def weight(self) -> int:
        return self.every

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, penalty: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        return penalty(*args, **kwargs) * self.every

    def __repr__(self) -> str:
        return f"LazyRegularizer(every={self.every})"
