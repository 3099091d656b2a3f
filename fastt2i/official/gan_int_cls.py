"""reedscot/icml2016 ``main_cls_int.lua`` (Torch7) transcribed to PyTorch, in our words.

The Lua networks are ``nn.Sequential`` chains of ``ParallelTable`` / ``JoinTable`` /
``ConcatTable`` + ``CAddTable`` modules; here each Torch module is one PyTorch call in the
same order, with the parameters under the names of ``fastt2i.models.gan_int_cls`` so one state
dict serves both.  Torch semantics kept: ``BCECriterion`` is -(t log(x + 1e-12) + (1 - t)
log(1 - x + 1e-12)), optionally weighted, averaged over all elements; conv biases are zero
(the script zeroes them before every evaluation, so they are left out); ``skipD`` is
undefined in the script, so the D's ``ConcatTable`` holds the identity alone.  ``fDx`` /
``fGx`` are the two closures up to their loss values (the gradients are autograd's).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TORCH_BCE_EPS = 1e-12


def bce_criterion(output, target, weights=None):
    """Torch7 nn.BCECriterion (sizeAverage): weighted sum over elements / number of elements."""
    terms = target * torch.log(output + TORCH_BCE_EPS) + (1 - target) * torch.log(1 - output + TORCH_BCE_EPS)
    if weights is not None:
        terms = terms * weights
    return -terms.sum() / output.numel()


class NetG(nn.Module):
    def __init__(self, ngf=128, nz=100, nt=128, txt_size=1024):
        super().__init__()
        self.nz = nz
        # fcG: Linear(txtSize, nt), LeakyReLU(0.2)
        self.text_proj = nn.Sequential(nn.Linear(txt_size, nt), nn.LeakyReLU(0.2, True))
        # SpatialFullConvolution(nz + nt, ngf*8, 4, 4), SpatialBatchNormalization(ngf*8)
        self.stem = nn.Sequential(nn.ConvTranspose2d(nz + nt, ngf * 8, 4, bias=False), nn.BatchNorm2d(ngf * 8))
        self.res4 = self._residual(ngf * 8, ngf * 2)
        self.up8 = nn.Sequential(nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4))
        self.res8 = self._residual(ngf * 4, ngf)
        self.up16 = nn.Sequential(nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2),
                                  nn.ReLU(True))
        self.up32 = nn.Sequential(nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf),
                                  nn.ReLU(True))
        self.to_rgb = nn.Sequential(nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())

    @staticmethod
    def _residual(c, inner):
        wrapper = nn.Module()  # ``conv`` of the ConcatTable, under the name ``branch``
        wrapper.branch = nn.Sequential(
            nn.Conv2d(c, inner, 1, 1, 0, bias=False), nn.BatchNorm2d(inner), nn.ReLU(True),
            nn.Conv2d(inner, inner, 3, 1, 1, bias=False), nn.BatchNorm2d(inner), nn.ReLU(True),
            nn.Conv2d(inner, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))
        return wrapper

    def forward(self, noise, txt):
        # ParallelTable{Identity, fcG} -> JoinTable(2): the noise first
        t = self.text_proj(txt)
        x = torch.cat([noise.reshape(noise.shape[0], self.nz), t], 1).view(noise.shape[0], -1, 1, 1)
        x = self.stem(x)
        x = F.relu(x + self.res4.branch(x))  # ConcatTable{Identity, conv} -> CAddTable -> ReLU
        x = self.up8(x)
        x = F.relu(x + self.res8.branch(x))
        return self.to_rgb(self.up32(self.up16(x)))


class NetD(nn.Module):
    def __init__(self, ndf=64, nt=128, txt_size=1024):
        super().__init__()
        self.encode_img = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8))
        # fcD: Linear(txtSize, nt), BatchNormalization(nt), LeakyReLU, Replicate(4, 3), Replicate(4, 4)
        self.text_proj = nn.Sequential(nn.Linear(txt_size, nt), nn.BatchNorm1d(nt), nn.LeakyReLU(0.2, True))
        self.joint = nn.Sequential(nn.Conv2d(ndf * 8 + nt, ndf * 8, 1, bias=False), nn.BatchNorm2d(ndf * 8),
                                   nn.LeakyReLU(0.2, True))
        self.logits = nn.Conv2d(ndf * 8, 1, 4, bias=False)

    def forward(self, img, txt):
        h = self.encode_img(img)
        h = F.leaky_relu(h, 0.2)  # ConcatTable{Identity, nil} -> CAddTable (identity) -> LeakyReLU
        t = self.text_proj(txt)
        t = t.view(t.shape[0], -1, 1, 1).repeat(1, 1, 4, 4)
        out = torch.sigmoid(self.logits(self.joint(torch.cat([h, t], 1))))
        return out.view(-1)  # nn.View(1):setNumInputDims(3)


def netR(txt_raw, batch_size, num_caption):  # noqa: N802
    """replicate = 0: Reshape(B, n, txt) -> Transpose{1, 2} -> Mean(1)."""
    return txt_raw.reshape(batch_size, num_caption, -1).transpose(0, 1).mean(0)


def fDx(netG, netD, real_img, real_txt, wrong_img, noise, cls_weight=0.5):  # noqa: N802, N803
    """The D closure up to errD; the three D evaluations are separate batches, as in Lua."""
    b = real_img.shape[0]
    label = torch.ones(b, dtype=real_img.dtype, device=real_img.device)
    err_real = bce_criterion(netD(real_img, real_txt), label)
    err_wrong = 0
    if cls_weight > 0:
        err_wrong = cls_weight * bce_criterion(netD(wrong_img, real_txt), label * 0)
    fake = netG(noise, real_txt).detach()  # input_img:copy(fake)
    err_fake = bce_criterion(netD(fake, real_txt), label * 0) * (1 - cls_weight)
    return err_real + err_fake + err_wrong


def txt_interp(input_txt):
    """interp_type 1: rows B.. 1.5B are (t[:B/2] + t[B/2:]) * 0.5."""
    b = input_txt.shape[0]
    extra = (input_txt[: b // 2] + input_txt[b // 2: b]) * 0.5
    return torch.cat([input_txt, extra], 0)


def fGx(netG, netD, input_txt, noise_interp, interp_weight=1.0):  # noqa: N802, N803
    b = input_txt.shape[0]
    weights = torch.zeros(b * 3 // 2, dtype=input_txt.dtype, device=input_txt.device)
    weights[:b] = 1
    weights[b:] = interp_weight
    txt = txt_interp(input_txt)
    fake = netG(noise_interp, txt)
    output = netD(fake, txt)
    return bce_criterion(output, torch.ones_like(output), weights)
