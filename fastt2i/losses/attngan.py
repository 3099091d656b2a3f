"""AttnGAN's losses (taoxugit/AttnGAN code/miscc/losses.py) on raw logits and the fused DAMSM ops.

- ``discriminator_loss``: per stage, binary cross-entropy of the unconditional head on real
  and fake images and of the conditional head on (real, s), (fake, s) and the mismatched pairs
  (real features [:B-1] against sentences [1:B]):
  (real_uncond + real_cond) / 2 + (fake_uncond + fake_cond + wrong_cond) / 3;
  without an unconditional head (G_DCGAN): real_cond + (fake_cond + wrong_cond) / 2.
- ``generator_loss``: over the stages, BCE of both heads on fake images against "real", plus
  on the last stage's image lambda * (DAMSM word loss both ways + sentence loss both ways),
  through ``damsm_word_loss`` (the fused word matching) and ``damsm_sentence_loss``.
- ``kl_loss``: the CA's KL divergence, -0.5 * mean(1 + logvar - mu^2 - exp(logvar)).

The official code applies ``nn.BCELoss`` to sigmoid outputs; here the heads' logits go to
``binary_cross_entropy_with_logits``: the same values where the sigmoid does not saturate, no
clamp of log at -100 where it does, and allowed under autocast.  Losses are computed in float32
(float64 for float64 inputs).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .conditional_gan import kl_loss  # one KL_loss for every family with conditioning augmentation
from .damsm import damsm_sentence_loss, damsm_word_loss


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(netD, real_imgs: torch.Tensor, fake_imgs: torch.Tensor, conditions: torch.Tensor):
    """One stage's D loss; returns (errD, {"real", "fake", "wrong", "real_cond", "fake_cond", ...}).

    ``netD`` is a D_NET64/128/256 (its forward gives 8 ndf x 4 x 4 features, its ``COND_DNET``
    and ``UNCOND_DNET`` the heads); ``fake_imgs`` are detached here."""
    B = real_imgs.shape[0]
    if B < 2:
        raise ValueError(f"discriminator_loss: the mismatched pairs need a batch of >= 2, got {B}")
    return discriminator_heads_loss(netD, netD(real_imgs), netD(fake_imgs.detach()), conditions)


def discriminator_heads_loss(netD, real_features: torch.Tensor, fake_features: torch.Tensor,
                             conditions: torch.Tensor):
    """The heads' part of one stage's D loss, on D features already computed: conditional BCE on
    real, fake and mismatched (real image, next caption) pairs, and with an unconditional head
    (real + cond_real) / 2 + (fake + cond_fake + cond_wrong) / 3; returns (errD, parts)."""
    B = real_features.shape[0]
    parts = {
        "cond_real": _bce(netD.COND_DNET.logits(real_features, conditions), 1.0),
        "cond_fake": _bce(netD.COND_DNET.logits(fake_features, conditions), 0.0),
        "cond_wrong": _bce(netD.COND_DNET.logits(real_features[:B - 1], conditions[1:B]), 0.0),
    }
    if netD.UNCOND_DNET is not None:
        parts["real"] = _bce(netD.UNCOND_DNET.logits(real_features), 1.0)
        parts["fake"] = _bce(netD.UNCOND_DNET.logits(fake_features), 0.0)
        errD = ((parts["real"] + parts["cond_real"]) / 2.0
                + (parts["fake"] + parts["cond_fake"] + parts["cond_wrong"]) / 3.0)
    else:
        errD = parts["cond_real"] + (parts["cond_fake"] + parts["cond_wrong"]) / 2.0
    return errD, parts


def adversarial_g_loss(netD, fake_imgs: torch.Tensor, sent_emb: torch.Tensor) -> torch.Tensor:
    """One stage's adversarial G term: BCE of the conditional (and unconditional) head on fake
    images against "real"."""
    features = netD(fake_imgs)
    g_loss = _bce(netD.COND_DNET.logits(features, sent_emb), 1.0)
    if netD.UNCOND_DNET is not None:
        g_loss = g_loss + _bce(netD.UNCOND_DNET.logits(features), 1.0)
    return g_loss


def damsm_g_loss(image_encoder, image: torch.Tensor, words_embs: torch.Tensor, sent_emb: torch.Tensor,
                 cap_lens: torch.Tensor, class_ids=None, gamma1: float = 4.0, gamma2: float = 5.0,
                 gamma3: float = 10.0):
    """(word loss, sentence loss) of generated images against their captions, each summed both
    ways (not yet times lambda)."""
    regions, code = image_encoder(image)
    lengths = torch.as_tensor(cap_lens).to(device=words_embs.device, dtype=torch.int64)
    w0, w1 = damsm_word_loss(words_embs, lengths, regions, class_ids=class_ids, gamma1=gamma1, gamma2=gamma2,
                             gamma3=gamma3)
    s0, s1 = damsm_sentence_loss(sent_emb, code, class_ids=class_ids, gamma3=gamma3)
    return w0 + w1, s0 + s1


def generator_loss(netsD, image_encoder, fake_imgs, words_embs, sent_emb, cap_lens, class_ids=None,
                   lambda_damsm: float = 5.0, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0):
    """G's loss without the KL: returns (errG_total, {"g_loss0", ..., "w_loss", "s_loss"})."""
    if len(fake_imgs) < len(netsD):
        raise ValueError(f"generator_loss: {len(netsD)} discriminators but {len(fake_imgs)} images")
    parts, total = {}, 0.0
    for i, netD in enumerate(netsD):
        parts[f"g_loss{i}"] = adversarial_g_loss(netD, fake_imgs[i], sent_emb)
        total = total + parts[f"g_loss{i}"]
    w, s = damsm_g_loss(image_encoder, fake_imgs[len(netsD) - 1], words_embs, sent_emb, cap_lens, class_ids,
                        gamma1, gamma2, gamma3)
    parts["w_loss"], parts["s_loss"] = w * lambda_damsm, s * lambda_damsm
    return total + parts["w_loss"] + parts["s_loss"], parts


__all__ = ["adversarial_g_loss", "damsm_g_loss", "discriminator_loss", "generator_loss", "kl_loss"]
