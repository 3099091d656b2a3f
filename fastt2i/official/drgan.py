"""An eager transcription of the public DR-GAN draft code
(Tan-H-C/DR-GAN-Distribution-Regularization-for-Text-to-Image-Generation: model.py's
NEXT_STAGE_G, GET_IMAGE_G, G_NET and D_NET64/128/256, the SpectralNorm wrapper they import, and
the D / G update of trainer.py).

Written for fastt2i, not copied: the same computation in the same order, with the draft's module
and parameter names, so one state dict drives this and ``fastt2i.models.drgan`` (preset
``draft``).  What DR-GAN shares with AttnGAN comes from ``fastt2i.official.attngan``.  Plain
PyTorch only; not for training.

Constants the draft hard-codes for GF_DIM 64 / DF_DIM 32 (64 channels in the SDM, 32 * 16 in the
DNM decoder, 256 / 512 / 1024 in the D's reduction) are written as functions of ngf / ndf; at the
draft's dimensions they are its numbers.  Modules the draft builds but no forward uses (the
stages' ``global_reductionxx`` used only for outputs I_P / I_star, D_NET256's copies of G
modules) are left out.

Quirks kept:
- the gate logits divided by the batch size; the SDL's constants (1 / b with b = 64, 128),
  its exp terms, its "variance" (the squared sum of deviations), 10.1 ** (...) and the
  1e-5-weighted squared-error RIRM term (all in ``NEXT_STAGE_G.forward`` / ``G_NET.forward``);
- ``repeat(cfg.TRAIN.BATCH_SIZE, 1)`` of the batch means: the batch is the config's batch;
- the spectral norm iterates u, v in every forward, train or eval (the SAGAN-style wrapper);
- the D's CA draws its sentence noise, then its image noise, in every D forward.
The draft's loss file (miscc/losses.py) is shipped inside a zip the reading tools cannot open:
``discriminator_loss`` / ``generator_loss`` here follow its call signature in trainer.py, the
AttnGAN losses it extends, and the documented behaviour (the real branch's KL added twice, the
fake branch's mu / logvar unused); the DNM reconstruction is an MSE and the SDL is added to G's
loss with weight 1 (see the README's list of differences).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import attngan as _attngan
from .attngan import CA_NET, GLU, INIT_STAGE_G, KL_loss, ResBlock, _conv3x3, _up_block  # noqa: F401


# ----------------------------------------------------------------------------- spectral.py

def _l2normalize(v, eps=1e-12):
    return v / (v.norm() + eps)


class SpectralNorm(nn.Module):
    """The SAGAN-style wrapper: weight_bar / weight_u / weight_v on the wrapped conv, one power
    iteration per forward."""

    def __init__(self, module, name="weight", power_iterations=1):
        super().__init__()
        self.module, self.name, self.power_iterations = module, name, power_iterations
        w = getattr(module, name)
        height, width = w.shape[0], w.view(w.shape[0], -1).shape[1]
        u = nn.Parameter(_l2normalize(w.data.new(height).normal_(0, 1)), requires_grad=False)
        v = nn.Parameter(_l2normalize(w.data.new(width).normal_(0, 1)), requires_grad=False)
        w_bar = nn.Parameter(w.data)
        del module._parameters[name]
        module.register_parameter(name + "_u", u)
        module.register_parameter(name + "_v", v)
        module.register_parameter(name + "_bar", w_bar)

    def _update_u_v(self):
        u = getattr(self.module, self.name + "_u")
        v = getattr(self.module, self.name + "_v")
        w = getattr(self.module, self.name + "_bar")
        height = w.data.shape[0]
        for _ in range(self.power_iterations):
            v.data = _l2normalize(torch.mv(torch.t(w.view(height, -1).data), u.data))
            u.data = _l2normalize(torch.mv(w.view(height, -1).data, v.data))
        sigma = u.dot(w.view(height, -1).mv(v))
        setattr(self.module, self.name, w / sigma.expand_as(w))

    def forward(self, *args):
        self._update_u_v()
        return self.module.forward(*args)


# ----------------------------------------------------------------------------- G (model.py)

def _encode_image_by_2timesxx(ngf):
    return nn.Sequential(nn.Conv2d(3, ngf // 2, 2, 1, 1, bias=False), nn.BatchNorm2d(ngf // 2),
                         nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ngf // 2, ngf, 2, 1, 0, bias=False),
                         nn.BatchNorm2d(ngf))


def _encode_non_local(ngf):
    return nn.Sequential(nn.Conv2d(ngf, ngf, 3, 1, 1, bias=False), nn.BatchNorm2d(ngf),
                         nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ngf, ngf, 1, 1, 0, bias=False),
                         nn.BatchNorm2d(ngf))


class NEXT_STAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf, nef, ncf, r_num=2, batch_size=None):
        super().__init__()
        self.cfg_batch_size = batch_size
        self.reduct_demension = _encode_non_local(ngf)
        self.reduct_demension2 = _encode_non_local(ngf)
        self.global_reduction = nn.Sequential(nn.Conv2d(ngf, ngf, 1), nn.BatchNorm2d(ngf), nn.ReLU())
        self.img_code_sxx = _encode_image_by_2timesxx(ngf)
        self.global_avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.att = _attngan.GlobalAttentionGeneral(ngf, nef)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.residual0 = nn.Sequential(*[ResBlock(ngf) for _ in range(r_num)])
        self.upsample = _up_block(ngf * 2, ngf)

    def forward(self, h_code, c_code, word_embs, mask, imgs, a, b):
        batch_size = c_code.shape[0]
        cfg_batch = self.cfg_batch_size or batch_size
        self.att.applyMask(mask)
        imgs0 = self.img_code_sxx(imgs)
        c_code0, att = self.att(h_code, word_embs)
        c_code1 = self.residual0(c_code0)

        sita = 1.0 / batch_size * self.reduct_demension(c_code1)
        x11 = c_code1.mul(torch.sigmoid(sita))
        r11 = c_code1 - x11
        sitaa = 1.0 / batch_size * self.reduct_demension2(h_code)
        x12 = h_code.mul(torch.sigmoid(sitaa))
        r12 = h_code - x12

        out_code = self.upsample(self.residual(torch.cat((x12, x11), 1)))

        def pooled(x):
            return self.global_reduction(self.global_avgpool(x)).squeeze()

        vx11, rx11, vx12, rx12, imgs = pooled(x11), pooled(r11), pooled(x12), pooled(r12), pooled(imgs0)
        vx11mean = 1.0 / batch_size * torch.sum(vx11, 0)
        rx11mean = 1.0 / batch_size * torch.sum(rx11, 0)
        vx12mean = 1.0 / batch_size * torch.sum(vx12, 0)
        rx12mean = 1.0 / batch_size * torch.sum(rx12, 0)
        imgsmean = 1.0 / batch_size * torch.sum(imgs, 0)

        def gap(x, y):
            return 1.0 / b * torch.sum(pow(x - y, 2.0))

        vx11ap, rx11an = gap(vx11mean, imgsmean), gap(rx11mean, imgsmean)
        vx12ap, rx12an = gap(vx12mean, imgsmean), gap(rx12mean, imgsmean)
        loss1 = torch.log(1.0 + torch.exp(vx11ap - rx11an)) + torch.log(1.0 + torch.exp(vx12ap - rx12an))
        loss10 = torch.exp(vx11ap) + torch.exp(vx12ap)

        def spread(x, m):
            return 1.0 / batch_size * pow(torch.sum(x - m.unsqueeze(0).repeat(cfg_batch, 1), 0), 2.0)

        vx11var, rx11var = spread(vx11, vx11mean), spread(rx11, rx11mean)
        vx12var, rx12var = spread(vx12, vx12mean), spread(rx12, rx12mean)
        imgsvar = spread(imgs, imgsmean)
        vx11ap1, rx11an1 = gap(vx11var, imgsvar), gap(rx11var, imgsvar)
        vx12ap1, rx12an1 = gap(vx12var, imgsvar), gap(rx12var, imgsvar)
        loss2 = torch.log(1.0 + torch.exp(vx11ap1 - rx11an1)) + torch.log(1.0 + torch.exp(vx12ap1 - rx12an1))
        loss20 = torch.exp(vx11ap1) + torch.exp(vx12ap1)
        return out_code, att, loss2 + loss1 + loss10 + loss20, imgs0


class GET_IMAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf):
        super().__init__()
        self.img = nn.Sequential(_conv3x3(ngf, ngf // 2), nn.BatchNorm2d(ngf // 2), nn.Tanh(),
                                 _conv3x3(ngf // 2, ngf // 4), nn.BatchNorm2d(ngf // 4), nn.Tanh(),
                                 _conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)


class G_NET(nn.Module):  # noqa: N801
    """forward -> (fake_imgs, att_maps, mu, logvar, SDL loss (erreorx)); the draft's stage count
    is 3 (its ``loss`` exists only there); with 2 stages the same expression runs over one stage."""

    def __init__(self, gf_dim=64, embedding_dim=256, condition_dim=100, z_dim=100, r_num=2, branch_num=3,
                 batch_size=None):
        super().__init__()
        self.branch_num = branch_num
        self.ca_net = CA_NET(embedding_dim, condition_dim)
        self.h_net1 = INIT_STAGE_G(gf_dim * 16, condition_dim, z_dim)
        self.img_net1 = GET_IMAGE_G(gf_dim)
        for stage in range(2, branch_num + 1):
            setattr(self, f"h_net{stage}", NEXT_STAGE_G(gf_dim, embedding_dim, condition_dim, r_num, batch_size))
            setattr(self, f"img_net{stage}", GET_IMAGE_G(gf_dim))

    def forward(self, z_code, sent_emb, word_embs, mask, imgs):
        c_code, mu, logvar = self.ca_net(sent_emb)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs, att_maps = [self.img_net1(h_code)], []
        exponent, gt_losses = 0.0, 0.0
        for stage in range(2, self.branch_num + 1):
            size = 64 * 2 ** (stage - 2)
            h_code, att, stage_loss, real_features = getattr(self, f"h_net{stage}")(
                h_code, c_code, word_embs, mask, imgs[stage - 2], 64, size)
            fake_imgs.append(getattr(self, f"img_net{stage}")(h_code))
            gt_img = getattr(self, f"img_net{stage - 1}")(real_features)
            gt_losses = gt_losses + (1.0 / (size * size)) * torch.sum(pow(imgs[stage - 2] - gt_img, 2.0))
            exponent = exponent + 1.0 / (size * size) * stage_loss
            if att is not None:
                att_maps.append(att)
        loss = 10.1 ** exponent + 0.00001 * gt_losses
        return fake_imgs, att_maps, mu, logvar, loss


# ----------------------------------------------------------------------------- D (model.py)

def _sn(conv):
    return SpectralNorm(conv)


def _block3x3_lrelu(cin, cout):
    return nn.Sequential(_sn(nn.Conv2d(cin, cout, 3, 1, 1, bias=True)), nn.LeakyReLU(0.2, inplace=True))


def _down_block(cin, cout):
    return nn.Sequential(_sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=True)), nn.LeakyReLU(0.2, inplace=True))


def _encode_image_by_16times(ndf):
    layers = []
    for cin, cout in ((3, ndf), (ndf, ndf * 2), (ndf * 2, ndf * 4), (ndf * 4, ndf * 8)):
        layers.append(_sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=True)))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
    return nn.Sequential(*layers)


class D_GET_LOGITS(_attngan.D_GET_LOGITS):  # noqa: N801
    def __init__(self, ndf, nef, bcondition=False):
        super().__init__(ndf, nef, bcondition)
        if bcondition:
            self.jointConv = _block3x3_lrelu(ndf * 8 + nef, ndf * 8)


class _D(nn.Module):
    def __init__(self, ndf, nef, ncf, b_jcu, reduction_in):
        super().__init__()
        self.ca_net = CA_NET(nef, ncf)
        self.img_code_s16 = _encode_image_by_16times(ndf)
        self.h_net1 = INIT_STAGE_G(ndf * 16, ncf, ncf)
        self.img_code_s1 = nn.Sequential(nn.Conv2d(ndf, 3, 1, 1, 0, bias=False), nn.LeakyReLU(0.2, inplace=True))
        self.global_avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)
        self.global_reduction = nn.Sequential(nn.Conv2d(reduction_in, nef, 1), nn.BatchNorm2d(nef), nn.ReLU())

    def _normalise(self, x_code41, sent_emb):
        image_code = self.global_reduction(x_code41).squeeze()
        c_code, _, _ = self.ca_net(sent_emb)
        image_code, muD, logvarD = self.ca_net(image_code)
        return self.img_code_s1(self.h_net1(image_code, c_code)), muD, logvarD


class D_NET64(_D):  # noqa: N801
    def __init__(self, ndf=32, nef=256, ncf=100, b_jcu=True):
        super().__init__(ndf, nef, ncf, b_jcu, ndf * 8)

    def forward(self, x_var, sent_emb):
        x_code4 = self.img_code_s16(x_var)
        out_code, muD, logvarD = self._normalise(self.global_avgpool(x_code4), sent_emb)
        return x_code4, out_code, muD, logvarD


class D_NET128(_D):  # noqa: N801
    def __init__(self, ndf=32, nef=256, ncf=100, b_jcu=True):
        super().__init__(ndf, nef, ncf, b_jcu, ndf * 16)
        self.img_code_s32 = _down_block(ndf * 8, ndf * 16)
        self.img_code_s32_1 = _block3x3_lrelu(ndf * 16, ndf * 8)

    def forward(self, x_var, sent_emb):
        x_code8 = self.img_code_s16(x_var)
        x_code40 = self.img_code_s32(x_code8)
        x_code4 = self.img_code_s32_1(x_code40)
        out_code, muD, logvarD = self._normalise(self.global_avgpool(x_code40), sent_emb)
        return x_code4, out_code, muD, logvarD


class D_NET256(_D):  # noqa: N801
    def __init__(self, ndf=32, nef=256, ncf=100, b_jcu=True):
        super().__init__(ndf, nef, ncf, b_jcu, ndf * 32)
        self.img_code_s32 = _down_block(ndf * 8, ndf * 16)
        self.img_code_s64 = _down_block(ndf * 16, ndf * 32)
        self.img_code_s64_1 = _block3x3_lrelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = _block3x3_lrelu(ndf * 16, ndf * 8)

    def forward(self, x_var, sent_emb):
        x_code40 = self.img_code_s64(self.img_code_s32(self.img_code_s16(x_var)))
        x_code4 = self.img_code_s64_2(self.img_code_s64_1(x_code40))
        out_code, muD, logvarD = self._normalise(self.global_avgpool(x_code40), sent_emb)
        return x_code4, out_code, muD, logvarD


# ----------------------------------------------------------------------------- losses (see the docstring)

def discriminator_loss(netD, real_imgs, fake_imgs, conditions, real_labels, fake_labels, fake64, real64):
    real_features, real_out, muD, logvarD = netD(real_imgs, conditions)
    fake_features, fake_out, _, _ = netD(fake_imgs.detach(), conditions)  # its mu / logvar: unused
    bce = nn.BCELoss()
    cond_real = bce(netD.COND_DNET(real_features, conditions), real_labels)
    cond_fake = bce(netD.COND_DNET(fake_features, conditions), fake_labels)
    B = real_features.size(0)
    cond_wrong = bce(netD.COND_DNET(real_features[:B - 1], conditions[1:B]), fake_labels[1:B])
    if netD.UNCOND_DNET is not None:
        real = bce(netD.UNCOND_DNET(real_features), real_labels)
        fake = bce(netD.UNCOND_DNET(fake_features), fake_labels)
        errD = (real + cond_real) / 2.0 + (fake + cond_fake + cond_wrong) / 3.0
    else:
        errD = cond_real + (cond_fake + cond_wrong) / 2.0
    errD = errD + F.mse_loss(real_out, real64) + F.mse_loss(fake_out, fake64.detach())
    errD = errD + KL_loss(muD, logvarD)
    errD = errD + KL_loss(muD, logvarD)  # the same (real) term again
    return errD


def generator_loss(netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels, cap_lens,
                   class_ids, erreorx, lambda_damsm=5.0, gamma1=4.0, gamma2=5.0, gamma3=10.0):
    """AttnGAN's generator loss (through the D's full forward) plus the SDL ``erreorx``."""
    bce = nn.BCELoss()
    batch_size = real_labels.size(0)
    total = 0
    for i, netD in enumerate(netsD):
        features, _, _, _ = netD(fake_imgs[i], sent_emb)
        g_loss = bce(netD.COND_DNET(features, sent_emb), real_labels)
        if netD.UNCOND_DNET is not None:
            g_loss = g_loss + bce(netD.UNCOND_DNET(features), real_labels)
        total += g_loss
        if i == len(netsD) - 1 and lambda_damsm:
            region_features, cnn_code = image_encoder(fake_imgs[i])
            w0, w1, _ = _attngan.words_loss_official(region_features, words_embs, match_labels, cap_lens, class_ids,
                                                     batch_size, gamma1, gamma2, gamma3)
            s0, s1 = _attngan.sent_loss_official(cnn_code, sent_emb, match_labels, class_ids, batch_size,
                                                 gamma3=gamma3)
            total += (w0 + w1) * lambda_damsm + (s0 + s1) * lambda_damsm
    return total + erreorx


def train_iteration(netG, netsD, optimizersD, optimizerG, image_encoder, imgs, words_embs, sent_emb, mask,
                    cap_lens, class_ids, noise, lambda_damsm=5.0):
    """One iteration of the draft's ``condGANTrainer.train``: G forward (with the real images),
    one update per D, one G update."""
    B = sent_emb.size(0)
    real_labels = torch.ones(B, dtype=sent_emb.dtype, device=sent_emb.device)
    fake_labels = torch.zeros(B, dtype=sent_emb.dtype, device=sent_emb.device)
    match_labels = torch.arange(B, device=sent_emb.device)
    fake_imgs, _, mu, logvar, erreorx = netG(noise, sent_emb, words_embs, mask, imgs)
    errD_total = 0
    for i, netD in enumerate(netsD):
        netD.zero_grad()
        errD = discriminator_loss(netD, imgs[i], fake_imgs[i], sent_emb, real_labels, fake_labels, fake_imgs[0],
                                  imgs[0])
        errD.backward()
        optimizersD[i].step()
        errD_total += errD
    netG.zero_grad()
    errG_total = generator_loss(netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels,
                                cap_lens, class_ids, erreorx, lambda_damsm)
    errG_total = errG_total + KL_loss(mu, logvar)
    errG_total.backward()
    optimizerG.step()
    return errD_total, errG_total
