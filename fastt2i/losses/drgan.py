"""DR-GAN's losses: AttnGAN's (``fastt2i.losses.attngan``) plus the SDM and DNM terms.

Paper preset (``draft=False``, the default), for each SDM stage i with pooled, projected parts
(B, C) of the key / non-key word context Q+ / Q-, of h, H+ / H-, and the real features H*:
  mu = batch mean, sigma = batch variance (per channel), d(a, b) = mean over channels of (a - b)^2,
  L_H = SP(d(mu(H+), mu(H*)) - d(mu(H-), mu(H*))) + SP(d(sigma(H+), sigma(H*)) - d(sigma(H-), sigma(H*)))
  L_Q the same with Q+ / Q-, SP(x) = ln(1 + e^x) (softplus),
  L_SDL_i = lambda_1 L_H + lambda_2 L_Q + lambda_3 |RIRM(I*) - I*|_1 (mean absolute error).
  D (per stage) = AttnGAN's adversarial terms + lambda_rec (MSE(rec(real), real64) + MSE(rec(fake),
  fake64)) + lambda_kl (KL(mu_real, logvar_real) + KL(mu_fake, logvar_fake)), with the DNM's
  64 x 64 reconstructions and the KL of its (mu, logvar) against N(0, 1).
  G = AttnGAN's (adversarial over the stages + lambda_DAMSM x DAMSM) + sum_i L_SDL_i; the caller
  adds the CA's KL as AttnGAN.

Draft preset (``draft=True``, the public draft code's model.py), per stage with S_i = 64, 128:
  d(a, b) = sum (a - b)^2 / S_i; mu = sum over the batch / B; "variance" = (sum over the batch of
  (x - mu))^2 / B (the square of a sum of deviations, zero up to rounding);
  L_i = SP(d_mu(Q+) - d_mu(Q-)) + SP(d_mu(H+) - d_mu(H-)) + the same on the "variances"
        + exp(d_mu(Q+)) + exp(d_mu(H+)) + exp(d_var(Q+)) + exp(d_var(H+));
  SDL = 10.1 ** (sum_i L_i / S_i^2) + 1e-5 x sum_i sum (I* - RIRM(I*))^2 / S_i^2;
  D: the KL of the real branch counted twice, the fake branch's (mu, logvar) unused.
  (The draft's loss file ships only inside a zip archive; how it weighs the SDL in G (1 here) and
  the DNM reconstruction (MSE here) is taken as in the paper preset.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .attngan import adversarial_g_loss, damsm_g_loss, discriminator_heads_loss, kl_loss
from .conditional_gan import _wide  # half precision reduced in float32


_PARTS = ("key_q", "nonkey_q", "key_h", "nonkey_h", "real")


def _check_stage(i: int, feats: dict) -> None:
    missing = [k for k in _PARTS + ("recon", "real_img") if k not in feats]
    if missing:
        raise ValueError(f"semantic_disentangling_loss: stage {i + 2} lacks {missing} (G_NET's outputs with "
                         "real_imgs)")
    shapes = {k: tuple(feats[k].shape) for k in _PARTS}
    if len(set(shapes.values())) != 1 or len(shapes["real"]) != 2:
        raise ValueError(f"semantic_disentangling_loss: stage {i + 2}: expected parts of one shape (B, C), got {shapes}")


def _paper_stage(f: dict, lambda_h: float, lambda_q: float, lambda_rirm: float) -> dict:
    def d(a, b):
        return (a - b).pow(2).mean()

    mu = {k: f[k].mean(0) for k in _PARTS}
    var = {k: f[k].var(0, unbiased=False) for k in _PARTS}

    def sdl(key, nonkey):
        return (F.softplus(d(mu[key], mu["real"]) - d(mu[nonkey], mu["real"]))
                + F.softplus(d(var[key], var["real"]) - d(var[nonkey], var["real"])))

    out = {"sdl_h": lambda_h * sdl("key_h", "nonkey_h"), "sdl_q": lambda_q * sdl("key_q", "nonkey_q"),
           "rirm": lambda_rirm * (f["recon"] - f["real_img"].to(f["recon"].dtype)).abs().mean()}
    out["total"] = out["sdl_h"] + out["sdl_q"] + out["rirm"]
    return out


def _draft_stage(f: dict, size: int) -> dict:
    B = f["real"].shape[0]

    def d(a, b):
        return (a - b).pow(2).sum() / size

    mu = {k: f[k].sum(0) / B for k in _PARTS}
    var = {k: (f[k] - mu[k]).sum(0).pow(2) / B for k in _PARTS}
    out = {}
    for name, m in (("mean", mu), ("var", var)):
        ap_q, an_q = d(m["key_q"], m["real"]), d(m["nonkey_q"], m["real"])
        ap_h, an_h = d(m["key_h"], m["real"]), d(m["nonkey_h"], m["real"])
        out[f"softplus_{name}"] = F.softplus(ap_q - an_q) + F.softplus(ap_h - an_h)
        out[f"exp_{name}"] = torch.exp(ap_q) + torch.exp(ap_h)
    out["stage"] = out["softplus_mean"] + out["softplus_var"] + out["exp_mean"] + out["exp_var"]
    out["rirm"] = (f["real_img"].to(f["recon"].dtype) - f["recon"]).pow(2).sum() / size ** 2
    return out


def semantic_disentangling_loss(sdm: list, draft: bool = False, lambda_h: float = 1.0, lambda_q: float = 1.0,
                                lambda_rirm: float = 1.0):
    """The SDL summed over the SDM stages (``sdm``: G_NET's fifth output, one dict per stage);
    returns (loss, parts).  ``lambda_*`` weigh the paper's terms (the draft has its own constants)."""
    if not sdm:
        raise ValueError("semantic_disentangling_loss: no SDM stage (branch_num must be >= 2)")
    for i, f in enumerate(sdm):
        _check_stage(i, f)
    sdm = [{k: _wide(v) for k, v in f.items()} for f in sdm]
    parts = {}
    if not draft:
        total = 0.0
        for i, f in enumerate(sdm):
            stage = _paper_stage(f, lambda_h, lambda_q, lambda_rirm)
            parts.update({f"{k}{i + 2}": v for k, v in stage.items() if k != "total"})
            total = total + stage["total"]
        return total, parts
    exponent, rirm = 0.0, 0.0
    for i, f in enumerate(sdm):
        size = 64 * 2 ** i  # the stage's input side: the draft's b (64, 128)
        stage = _draft_stage(f, size)
        parts.update({f"{k}{i + 2}": v for k, v in stage.items()})
        exponent = exponent + stage["stage"] / size ** 2
        rirm = rirm + stage["rirm"]
    return 10.1 ** exponent + 1e-5 * rirm, parts


def discriminator_loss(netD, real_imgs: torch.Tensor, fake_imgs: torch.Tensor, sent_emb: torch.Tensor,
                       real64: torch.Tensor, fake64: torch.Tensor, draft: bool = False, lambda_rec: float = 1.0,
                       lambda_kl: float = 1.0, noise=None):
    """One stage's D loss with DNM; returns (errD, parts).

    AttnGAN's combination of the heads' BCE terms (``fastt2i.losses.attngan.discriminator_loss``),
    on features computed once since DNM pools them too, plus DNM's reconstruction of the 64 x 64
    images (``real64`` / ``fake64``: the first stage's real and fake images) and its KL.
    ``noise``: optional (real sentence, real image, fake sentence, fake image) CA noises of the DNM."""
    B = real_imgs.shape[0]
    if B < 2:
        raise ValueError(f"discriminator_loss: the mismatched pairs need a batch of >= 2, got {B}")
    for name, x in (("real64", real64), ("fake64", fake64)):
        if x.dim() != 4 or tuple(x.shape[1:]) != (3, 64, 64) or x.shape[0] != B:
            raise ValueError(f"{name}: expected ({B}, 3, 64, 64), got {tuple(x.shape)}")
    noise = noise or (None,) * 4
    real_h, real_src = netD.features(real_imgs)
    real_rec, mu_r, logvar_r = netD.normalise(real_src, sent_emb, noise[0], noise[1])
    fake_h, fake_src = netD.features(fake_imgs.detach())
    fake_rec, mu_f, logvar_f = netD.normalise(fake_src, sent_emb, noise[2], noise[3])
    errD, parts = discriminator_heads_loss(netD, real_h, fake_h, sent_emb)
    parts["dnm_rec"] = lambda_rec * (F.mse_loss(_wide(real_rec), _wide(real64).to(_wide(real_rec).dtype))
                                     + F.mse_loss(_wide(fake_rec), _wide(fake64.detach()).to(_wide(fake_rec).dtype)))
    kl_real = kl_loss(mu_r, logvar_r)
    # the draft adds the real branch's KL twice and never uses the fake branch's mu / logvar
    parts["dnm_kl"] = lambda_kl * (kl_real + kl_real if draft else kl_real + kl_loss(mu_f, logvar_f))
    return errD + parts["dnm_rec"] + parts["dnm_kl"], parts


def generator_loss(netsD, image_encoder, fake_imgs, words_embs, sent_emb, cap_lens, sdm, class_ids=None,
                   lambda_damsm: float = 5.0, draft: bool = False, lambda_h: float = 1.0, lambda_q: float = 1.0,
                   lambda_rirm: float = 1.0, gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0,
                   adversarial_sentence=None):
    """G's loss without the CA's KL: adversarial over the stages (AttnGAN's heads; the DNM
    branch plays no part in G's loss) + lambda_DAMSM x DAMSM on the last image + the SDL.
    ``adversarial_sentence``: the sentence the D heads are conditioned on when it is not the
    DAMSM one (the trainer's standardised sentence without a pretrained encoder).
    Returns (errG, {"g_loss0", ..., "w_loss", "s_loss", "sdl", SDL parts})."""
    if len(fake_imgs) < len(netsD):
        raise ValueError(f"generator_loss: {len(netsD)} discriminators but {len(fake_imgs)} images")
    parts, total = {}, 0.0
    for i, netD in enumerate(netsD):
        parts[f"g_loss{i}"] = adversarial_g_loss(netD, fake_imgs[i], sent_emb if adversarial_sentence is None
                                                 else adversarial_sentence)
        total = total + parts[f"g_loss{i}"]
    if lambda_damsm:
        w, s = damsm_g_loss(image_encoder, fake_imgs[len(netsD) - 1], words_embs, sent_emb, cap_lens, class_ids,
                            gamma1, gamma2, gamma3)
        parts["w_loss"], parts["s_loss"] = w * lambda_damsm, s * lambda_damsm
        total = total + parts["w_loss"] + parts["s_loss"]
    sdl, sdl_parts = semantic_disentangling_loss(sdm, draft, lambda_h, lambda_q, lambda_rirm)
    parts["sdl"] = sdl
    parts.update(sdl_parts)
    return total + sdl, parts


__all__ = ["discriminator_loss", "generator_loss", "kl_loss", "semantic_disentangling_loss"]
