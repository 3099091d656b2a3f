"""MirrorGAN's losses (qiaott/MirrorGAN miscc/losses.py): AttnGAN's plus the STREAM caption loss.

- D: AttnGAN's ``discriminator_loss`` unchanged;
- ``caption_loss``: cross-entropy of CAPTION_RNN's teacher-forced logits against the caption's
  words (the mean over all words of the batch, packed by length);
- ``generator_loss``: per stage the adversarial terms (conditional + unconditional), plus
  lambda1 x the caption loss of STREAM on the last stage's image, plus (optional, off in the
  released config) lambda x the DAMSM word and sentence losses, as AttnGAN.  The KL term is
  ``kl_loss`` (AttnGAN's), added by the caller as the official trainer does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastt2i.models.stream import pack_targets

from .attngan import adversarial_g_loss, damsm_g_loss, discriminator_loss, kl_loss


def caption_loss(caption_cnn, caption_rnn, images: torch.Tensor, captions: torch.Tensor, cap_lens) -> torch.Tensor:
    """Mean cross-entropy of STREAM's re-description of ``images`` against ``captions``."""
    logits = caption_rnn(caption_cnn(images), captions, cap_lens)
    targets = pack_targets(captions, cap_lens).to(logits.device)
    return F.cross_entropy(logits.to(torch.promote_types(logits.dtype, torch.float32)), targets)


def generator_loss(netsD, caption_cnn, caption_rnn, fake_imgs, captions, cap_lens, words_embs, sent_emb,
                   lambda_caption: float = 10.0, image_encoder=None, lambda_damsm: float = 0.0, class_ids=None,
                   gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0):
    """G's loss without the KL: returns (errG_total, {"g_loss0", ..., "cap_loss"[, "w_loss", "s_loss"]})."""
    if len(fake_imgs) < len(netsD):
        raise ValueError(f"generator_loss: {len(netsD)} discriminators but {len(fake_imgs)} images")
    if lambda_damsm and image_encoder is None:
        raise ValueError("generator_loss: lambda_damsm > 0 needs the DAMSM image_encoder")
    parts, total = {}, 0.0
    for i, netD in enumerate(netsD):
        parts[f"g_loss{i}"] = adversarial_g_loss(netD, fake_imgs[i], sent_emb)
        total = total + parts[f"g_loss{i}"]
    last = fake_imgs[len(netsD) - 1]
    parts["cap_loss"] = caption_loss(caption_cnn, caption_rnn, last, captions, cap_lens) * lambda_caption
    total = total + parts["cap_loss"]
    if lambda_damsm:
        w, s = damsm_g_loss(image_encoder, last, words_embs, sent_emb, cap_lens, class_ids, gamma1, gamma2, gamma3)
        parts["w_loss"], parts["s_loss"] = w * lambda_damsm, s * lambda_damsm
        total = total + parts["w_loss"] + parts["s_loss"]
    return total, parts


__all__ = ["caption_loss", "discriminator_loss", "generator_loss", "kl_loss"]
