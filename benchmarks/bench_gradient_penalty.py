"""The MA-GP penalty alone, and DF-GAN's whole D step, at DF-GAN's 256x256 B = 32 shapes.

- ``gradient_penalty``: grads (32, 3, 256, 256) and (32, 256) -> 2 * mean(norm^6), forward and
  forward+backward; providers ``official`` (the literal MA_GP reduction: flatten, cat, sqrt, **6),
  ``eager`` (the reference), ``compile`` and the fused backends.
- ``dfgan_d_step``: real, fake and mismatched pairs through NetD/NetC, hinge loss, MA-GP
  (create_graph) and the backward into D's parameters (no optimizer step: it is the same for
  every provider).  ``official`` is an eager transcription of tobran/DF-GAN (nn.LeakyReLU,
  MA_GP), fp32 NCHW; the fused backends run fastt2i's NetD/NetC with the fused leaky ReLU and
  penalty, fp32 NCHW; ``<backend>+nhwc`` adds channels_last and ``<backend>+bf16`` also runs D
  under bf16 autocast (GALIP's AMP recipe), both labelled apart from the fp32 comparison.
  No ``compile`` provider: double backward under torch.compile is broken upstream.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import Case, backend_provider, compiled_provider, fused_backends, fwd_bwd
from fastt2i import ops
from fastt2i.losses import ma_gradient_penalty
from fastt2i.official import dfgan as dfgan_official
from fastt2i.models.dfgan import NetC, NetD


# ----------------------------------------------------------------------------- the penalty alone

def _grads(B, H, dtype, device, requires_grad):
    g = torch.Generator(device="cpu").manual_seed(0)
    image = (0.01 * torch.randn(B, 3, H, H, generator=g)).to(device=device, dtype=dtype)
    sentence = (0.01 * torch.randn(B, 256, generator=g)).to(device=device, dtype=dtype)
    return [image.requires_grad_(requires_grad), sentence.requires_grad_(requires_grad)]


def penalty_cases(device: str) -> list[Case]:
    shapes = [("DF-GAN 256x256", 32, 256)] if device == "cuda" else [("DF-GAN 64x64 (B8)", 8, 64)]
    dtypes = [torch.float32, torch.bfloat16] if device == "cuda" else [torch.float32]
    out = []
    for label, B, H in shapes:
        for dtype in dtypes:
            for mode in ("forward", "forward+backward"):
                grad = mode != "forward"

                def make(fn, B=B, H=H, dtype=dtype, grad=grad):
                    def closure():
                        grads = _grads(B, H, dtype, device, grad)
                        call = lambda: fn(grads)  # noqa: E731
                        return fwd_bwd(call, grads) if grad else call
                    return closure

                def penalty_reference(g):
                    return ops.gradient_penalty_reference(g, 2.0, 6.0)

                reference = make(penalty_reference)
                providers = {
                    "official": make(dfgan_official.ma_gp_reduction),
                    "eager": reference,
                    "compile": compiled_provider(make, penalty_reference),
                }
                for backend in fused_backends(device):
                    providers[backend] = backend_provider(backend, make(lambda g: ops.gradient_penalty(g, 2.0, 6.0)))
                elem = torch.tensor([], dtype=dtype).element_size()
                total = B * (3 * H * H + 256) * elem
                out.append(Case(
                    op="gradient_penalty",
                    name=f"{label} grads ({B},3,{H},{H})+({B},256) {str(dtype).replace('torch.', '')}",
                    mode=mode,
                    providers=providers,
                    bytes=(1 if mode == "forward" else 3) * total,
                    quick=(dtype == torch.float32 and grad),
                ))
    return out


# ----------------------------------------------------------------------------- the whole D step

def _copy_weights(src: nn.Module, dst: nn.Module) -> None:
    with torch.no_grad():
        for a, b in zip(src.parameters(), dst.parameters(), strict=True):
            b.copy_(a)


def hinge(output, negative):
    return F.relu(1.0 + output).mean() if negative else F.relu(1.0 - output).mean()


def d_step(netD, netC, imgs, sent, fake, penalty, autocast_dtype=None):
    """DF-GAN's D update (code/lib/modules.py train) up to errD.backward()."""
    device_type = imgs.device.type
    with torch.autocast(device_type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        real_features = netD(imgs)
        pred_real = netC(real_features, sent)
        errD_real = hinge(pred_real.float(), False)
        mis_features = torch.cat((real_features[1:], real_features[0:1]), dim=0)
        errD_mis = hinge(netC(mis_features, sent).float(), True)
        fake_features = netD(fake)
        errD_fake = hinge(netC(fake_features, sent).float(), True)
    errD_MAGP = penalty(imgs, sent, pred_real)
    errD = errD_real + (errD_fake + errD_mis) / 2.0 + errD_MAGP
    for p in list(netD.parameters()) + list(netC.parameters()):
        p.grad = None
    errD.backward()
    return errD


def d_step_cases(device: str) -> list[Case]:
    if device == "cuda":
        label, B, imsize = "DF-GAN 256x256 B32 ndf32", 32, 256
    else:
        label, B, imsize = "DF-GAN 64x64 B4 ndf32 (CPU)", 4, 64
    ndf = 32

    def make(official: bool, channels_last=False, autocast_dtype=None):
        def closure():
            torch.manual_seed(0)
            netD, netC = NetD(ndf=ndf, imsize=imsize), NetC(ndf=ndf, cond_dim=256)
            if official:
                oD, oC = dfgan_official.NetD(ndf, imsize), dfgan_official.NetC(ndf)
                _copy_weights(netD, oD)
                _copy_weights(netC, oC)
                netD, netC = oD, oC
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            netD, netC = netD.to(device, memory_format=fmt), netC.to(device, memory_format=fmt)
            g = torch.Generator(device="cpu").manual_seed(1)
            imgs = torch.randn(B, 3, imsize, imsize, generator=g).clamp(-1, 1).to(device).contiguous(memory_format=fmt)
            fake = torch.randn(B, 3, imsize, imsize, generator=g).clamp(-1, 1).to(device).contiguous(memory_format=fmt)
            sent = torch.randn(B, 256, generator=g).to(device)
            imgs.requires_grad_()
            sent.requires_grad_()
            penalty = dfgan_official.MA_GP if official else (lambda i, s, out: ma_gradient_penalty(out, i, s))
            return lambda: d_step(netD, netC, imgs, sent, fake, penalty, autocast_dtype)
        return closure

    providers = {"official": make(True), "eager": backend_provider("reference", make(False))}
    for backend in fused_backends(device):
        providers[backend] = backend_provider(backend, make(False))
        providers[f"{backend}+nhwc"] = backend_provider(backend, make(False, channels_last=True))
        if device == "cuda":
            providers[f"{backend}+nhwc+bf16"] = backend_provider(
                backend, make(False, channels_last=True, autocast_dtype=torch.bfloat16))
    return [Case(op="dfgan_d_step", name=label, mode="step", providers=providers, items=B, quick=True)]


def cases(device: str, quick: bool) -> list[Case]:
    return penalty_cases(device) + d_step_cases(device)
