"""Losses of GAN-INT-CLS, StackGAN and StackGAN++, on discriminator logits.

The official discriminators end in a sigmoid and use ``BCELoss`` (Torch7 ``BCECriterion``);
fastt2i's end at the logit and use ``binary_cross_entropy_with_logits``: the same value
(up to BCELoss's clamp of log at -100 and BCECriterion's 1e-12 inside the log, which only
matter at saturation), and safe under autocast, where ``BCELoss`` is refused.

- GAN-INT-CLS (reedscot/icml2016 ``main_cls_int.lua``): D = real + cls * wrong-text +
  (1 - cls) * fake with cls = 0.5; G on a 1.5 B batch whose extra B / 2 rows are conditioned
  on interpolated texts, all labelled real, the extra rows weighted ``interp_weight`` (1), the
  weighted sum divided by the 1.5 B elements (Torch's size average).
- StackGAN (hanzhanggit/StackGAN-Pytorch ``compute_discriminator_loss``): Stage I
  real + (fake + wrong) / 2; Stage II (real + uncond real) / 2 + (fake + wrong + uncond fake) / 3.
  G: cond fake + uncond fake (Stage II) labelled real.
- StackGAN++ (hanzhanggit/StackGAN-v2 ``condGANTrainer``), per stage: real + wrong + fake
  with the unconditional terms (weight ``uncond``; wrong images count as *real* there) added to
  each, or real + (wrong + fake) / 2 without them; G: cond + uncond * uncond fake.
- KL of conditioning augmentation, and StackGAN++'s colour-consistency regulariser.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Half-precision values are reduced in float32; float32 / float64 stay as they are."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """mean BCE of sigmoid(logits) against a constant label (1 real, 0 fake), at least float32."""
    logits = _wide(logits)
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, 1)) as the official ``KL_loss``: -0.5 * mean(1 + logvar - mu^2 - sigma^2)."""
    mu, logvar = _wide(mu), _wide(logvar)
    return -0.5 * torch.mean(1 + logvar - mu.pow(2) - logvar.exp())


# ----------------------------------------------------------------------------- GAN-INT-CLS

def matching_aware_d_loss(real: torch.Tensor, wrong: torch.Tensor, fake: torch.Tensor,
                          cls_weight: float = 0.5) -> torch.Tensor:
    """GAN-CLS discriminator: real pairs -> 1, (real image, wrong text) and fake -> 0."""
    loss = bce_logits(real, 1.0) + (1.0 - cls_weight) * bce_logits(fake, 0.0)
    if cls_weight > 0:
        loss = loss + cls_weight * bce_logits(wrong, 0.0)
    return loss


def interpolate_text(text: torch.Tensor) -> torch.Tensor:
    """GAN-INT's G conditions: the B texts then the B / 2 midpoints (t_i + t_{i + B/2}) / 2 (interp_type 1)."""
    half = text.shape[0] // 2
    if text.shape[0] % 2:
        raise ValueError(f"text: GAN-INT needs an even batch, got {text.shape[0]}")
    return torch.cat([text, (text[:half] + text[half:2 * half]) * 0.5], 0)


def gan_int_g_loss(logits: torch.Tensor, batch_size: int, interp_weight: float = 1.0) -> torch.Tensor:
    """GAN-INT generator loss on D's logits for the 1.5 B batch of ``interpolate_text``."""
    if logits.shape[0] != batch_size + batch_size // 2:
        raise ValueError(f"logits: expected {batch_size + batch_size // 2} rows (B + B/2), got {logits.shape[0]}")
    logits = _wide(logits)
    weights = torch.ones_like(logits)
    weights[batch_size:] = interp_weight
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), weight=weights)


# ----------------------------------------------------------------------------- StackGAN

def stackgan_d_loss(real: torch.Tensor, wrong: torch.Tensor, fake: torch.Tensor,
                    uncond_real: torch.Tensor | None = None, uncond_fake: torch.Tensor | None = None):
    """StackGAN D loss; ``wrong`` are the logits of (real image i, condition i + 1), B - 1 of them.

    Returns (loss, parts) with parts = {"real", "wrong", "fake"} as the official logs them."""
    err_real, err_wrong, err_fake = bce_logits(real, 1.0), bce_logits(wrong, 0.0), bce_logits(fake, 0.0)
    if (uncond_real is None) != (uncond_fake is None):
        raise ValueError("uncond_real and uncond_fake: give both (Stage II) or neither (Stage I)")
    if uncond_real is None:
        loss = err_real + (err_fake + err_wrong) * 0.5
    else:
        u_real, u_fake = bce_logits(uncond_real, 1.0), bce_logits(uncond_fake, 0.0)
        loss = (err_real + u_real) / 2.0 + (err_fake + err_wrong + u_fake) / 3.0
        err_real, err_fake = (err_real + u_real) / 2.0, (err_fake + u_fake) / 2.0
    return loss, {"real": err_real.detach(), "wrong": err_wrong.detach(), "fake": err_fake.detach()}


def stackgan_g_loss(cond_fake: torch.Tensor, uncond_fake: torch.Tensor | None = None) -> torch.Tensor:
    loss = bce_logits(cond_fake, 1.0)
    if uncond_fake is not None:
        loss = loss + bce_logits(uncond_fake, 1.0)
    return loss


# ----------------------------------------------------------------------------- StackGAN++

def stackgan2_d_loss(real: tuple, wrong: tuple, fake: tuple, uncond_weight: float = 1.0) -> torch.Tensor:
    """One stage's D loss; each argument is D's (cond logits, uncond logits) for that input."""
    err_real, err_wrong, err_fake = bce_logits(real[0], 1.0), bce_logits(wrong[0], 0.0), bce_logits(fake[0], 0.0)
    if len(real) > 1 and uncond_weight > 0:
        err_real = err_real + uncond_weight * bce_logits(real[1], 1.0)
        err_wrong = err_wrong + uncond_weight * bce_logits(wrong[1], 1.0)  # a real image: real here
        err_fake = err_fake + uncond_weight * bce_logits(fake[1], 0.0)
        return err_real + err_wrong + err_fake
    return err_real + 0.5 * (err_wrong + err_fake)


def stackgan2_g_loss(fake: tuple, uncond_weight: float = 1.0) -> torch.Tensor:
    loss = bce_logits(fake[0], 1.0)
    if len(fake) > 1 and uncond_weight > 0:
        loss = loss + uncond_weight * bce_logits(fake[1], 1.0)
    return loss


def mean_covariance(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image channel means (B, C, 1, 1) and pixel covariances (B, C, C) (divided by H * W)."""
    b, c, h, w = img.shape
    mu = img.mean(dim=(2, 3), keepdim=True)
    centred = (img - mu).reshape(b, c, h * w)
    return mu, torch.bmm(centred, centred.transpose(1, 2)) / (h * w)


def colour_consistency_loss(images: list, weight: float, cov_weight: float = 5.0) -> torch.Tensor:
    """StackGAN++ colour-consistency regulariser over consecutive stages.

    For each pair (coarse, fine) of consecutive images -- the official code takes the last
    three stages at most -- weight * (MSE(mu_fine, mu_coarse) + cov_weight * MSE(cov_fine,
    cov_coarse)), the coarser stage detached.
    """
    total = _wide(images[-1]).new_zeros(())
    for k in range(1, min(len(images), 3)):
        mu_f, cov_f = mean_covariance(_wide(images[-k]))
        mu_c, cov_c = mean_covariance(_wide(images[-k - 1].detach()))
        total = total + weight * F.mse_loss(mu_f, mu_c) + weight * cov_weight * F.mse_loss(cov_f, cov_c)
    return total
