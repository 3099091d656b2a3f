"""An eager transcription of the official AttnGAN (taoxugit/AttnGAN: code/model.py,
code/GlobalAttention.py, code/miscc/losses.py, the D/G update of code/trainer.py).

Written for fastt2i, not copied: the same computation, in the same order, with the same
quirks, and the same module and parameter names, so one state dict drives both this and
``fastt2i.models.attngan``.  Configuration values (``cfg.GAN.*``, ``cfg.TEXT.*``,
``cfg.TRAIN.SMOOTH.*``) are constructor or function arguments.  Plain PyTorch only, no
fastt2i op: this is what the parity tests compare against and the benchmark's
"official-equivalent eager" step.  Not meant for training.

Quirks kept on purpose:
- the word attention masks scores laid out as (B * queryL, T) with ``mask.repeat(queryL, 1)``,
  so region n of caption b gets the mask of caption (b * queryL + n) % B;
- the CA noise is drawn in float32 (``torch.FloatTensor(...).normal_()``) whatever the dtype;
- the heads return sigmoid probabilities and the losses are ``nn.BCELoss`` on them;
- ``CNN_ENCODER`` resizes with ``nn.Upsample(mode='bilinear')``, which samples as
  ``align_corners=False`` on any torch >= 0.4 (the code was written for torch 0.3);
- the DAMSM losses are the official Python loops (``words_loss`` / ``sent_loss`` of
  ``fastt2i.official.damsm``).
The only edits the official files need on a current torch (``.data[0]`` -> ``.item()``,
uint8 masks -> bool) change no value.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.official.damsm import sent_loss as sent_loss_official, words_loss as words_loss_official


class GLU(nn.Module):
    def forward(self, x):
        half = x.size(1) // 2
        return x[:, :half] * torch.sigmoid(x[:, half:])


def _conv3x3(cin, cout):
    return nn.Conv2d(cin, cout, kernel_size=3, stride=1, padding=1, bias=False)


def _up_block(cin, cout):
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(cin, cout * 2),
                         nn.BatchNorm2d(cout * 2), GLU())


def _block3x3_lrelu(cin, cout):
    return nn.Sequential(_conv3x3(cin, cout), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def _down_block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.LeakyReLU(0.2, inplace=True))


def _encode_by_16(ndf):
    layers = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
    for k in (1, 2, 4):
        layers += [nn.Conv2d(ndf * k, ndf * k * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * k * 2),
                   nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers)


class ResBlock(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.block = nn.Sequential(_conv3x3(channels, channels * 2), nn.BatchNorm2d(channels * 2), GLU(),
                                   _conv3x3(channels, channels), nn.BatchNorm2d(channels))

    def forward(self, x):
        out = self.block(x)
        out += x
        return out


class GlobalAttentionGeneral(nn.Module):
    """GlobalAttention.py, with its (B * queryL, T) mask layout."""

    def __init__(self, idf, cdf):
        super().__init__()
        self.conv_context = nn.Conv2d(cdf, idf, kernel_size=1, stride=1, padding=0, bias=False)
        self.mask = None

    def applyMask(self, mask):  # noqa: N802 - official name
        self.mask = mask

    def forward(self, inp, context):
        B, _, ih, iw = inp.shape
        queryL, sourceL = ih * iw, context.size(2)
        targetT = inp.view(B, -1, queryL).transpose(1, 2).contiguous()      # B x queryL x idf
        sourceT = self.conv_context(context.unsqueeze(3)).squeeze(3)         # B x idf x sourceL
        attn = torch.bmm(targetT, sourceT).view(B * queryL, sourceL)
        if self.mask is not None:
            attn.data.masked_fill_(self.mask.repeat(queryL, 1).to(torch.bool).data, -float("inf"))
        attn = torch.softmax(attn, dim=1).view(B, queryL, sourceL).transpose(1, 2).contiguous()
        weighted = torch.bmm(sourceT, attn).view(B, -1, ih, iw)
        return weighted, attn.view(B, -1, ih, iw)


class CA_NET(nn.Module):  # noqa: N801
    def __init__(self, t_dim=256, c_dim=100):
        super().__init__()
        self.c_dim = c_dim
        self.fc = nn.Linear(t_dim, c_dim * 4, bias=True)
        self.relu = GLU()

    def forward(self, text_embedding):
        x = self.relu(self.fc(text_embedding))
        mu, logvar = x[:, :self.c_dim], x[:, self.c_dim:]
        std = logvar.mul(0.5).exp_()
        eps = torch.FloatTensor(std.size()).normal_().to(std.device)  # float32, as torch.FloatTensor
        return eps.mul(std).add_(mu), mu, logvar


class INIT_STAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf, ncf, z_dim=100):
        super().__init__()
        self.gf_dim = ngf
        self.fc = nn.Sequential(nn.Linear(z_dim + ncf, ngf * 4 * 4 * 2, bias=False),
                                nn.BatchNorm1d(ngf * 4 * 4 * 2), GLU())
        self.upsample1 = _up_block(ngf, ngf // 2)
        self.upsample2 = _up_block(ngf // 2, ngf // 4)
        self.upsample3 = _up_block(ngf // 4, ngf // 8)
        self.upsample4 = _up_block(ngf // 8, ngf // 16)

    def forward(self, z_code, c_code):
        out = self.fc(torch.cat((c_code, z_code), 1)).view(-1, self.gf_dim, 4, 4)
        out = self.upsample2(self.upsample1(out))
        return self.upsample4(self.upsample3(out))


class NEXT_STAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf, nef, ncf, r_num=2):
        super().__init__()
        self.att = GlobalAttentionGeneral(ngf, nef)
        self.residual = nn.Sequential(*[ResBlock(ngf * 2) for _ in range(r_num)])
        self.upsample = _up_block(ngf * 2, ngf)

    def forward(self, h_code, c_code, word_embs, mask):
        self.att.applyMask(mask)
        c, att = self.att(h_code, word_embs)
        return self.upsample(self.residual(torch.cat((h_code, c), 1))), att


class GET_IMAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf):
        super().__init__()
        self.img = nn.Sequential(_conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)


class G_NET(nn.Module):  # noqa: N801
    def __init__(self, gf_dim=32, embedding_dim=256, condition_dim=100, z_dim=100, r_num=2, branch_num=3):
        super().__init__()
        self.branch_num = branch_num
        self.ca_net = CA_NET(embedding_dim, condition_dim)
        self.h_net1 = INIT_STAGE_G(gf_dim * 16, condition_dim, z_dim)
        self.img_net1 = GET_IMAGE_G(gf_dim)
        for stage in range(2, branch_num + 1):
            setattr(self, f"h_net{stage}", NEXT_STAGE_G(gf_dim, embedding_dim, condition_dim, r_num))
            setattr(self, f"img_net{stage}", GET_IMAGE_G(gf_dim))

    def forward(self, z_code, sent_emb, word_embs, mask):
        c_code, mu, logvar = self.ca_net(sent_emb)
        h = self.h_net1(z_code, c_code)
        fake_imgs, att_maps = [self.img_net1(h)], []
        for stage in range(2, self.branch_num + 1):
            h, att = getattr(self, f"h_net{stage}")(h, c_code, word_embs, mask)
            fake_imgs.append(getattr(self, f"img_net{stage}")(h))
            if att is not None:
                att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar


class D_GET_LOGITS(nn.Module):  # noqa: N801
    def __init__(self, ndf, nef, bcondition=False):
        super().__init__()
        self.ef_dim, self.bcondition = nef, bcondition
        if bcondition:
            self.jointConv = _block3x3_lrelu(ndf * 8 + nef, ndf * 8)
        self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, h_code, c_code=None):
        if self.bcondition and c_code is not None:
            c = c_code.view(-1, self.ef_dim, 1, 1).repeat(1, 1, 4, 4)
            h_code = self.jointConv(torch.cat((h_code, c), 1))
        return self.outlogits(h_code).view(-1)


class _D(nn.Module):
    def __init__(self, ndf, nef, b_jcu):
        super().__init__()
        self.img_code_s16 = _encode_by_16(ndf)
        self._ndf, self._nef, self._b_jcu = ndf, nef, b_jcu

    def _heads(self):
        self.UNCOND_DNET = D_GET_LOGITS(self._ndf, self._nef, False) if self._b_jcu else None
        self.COND_DNET = D_GET_LOGITS(self._ndf, self._nef, True)


class D_NET64(_D):  # noqa: N801
    def __init__(self, ndf=64, nef=256, b_jcu=True):
        super().__init__(ndf, nef, b_jcu)
        self._heads()

    def forward(self, x):
        return self.img_code_s16(x)


class D_NET128(_D):  # noqa: N801
    def __init__(self, ndf=64, nef=256, b_jcu=True):
        super().__init__(ndf, nef, b_jcu)
        self.img_code_s32 = _down_block(ndf * 8, ndf * 16)
        self.img_code_s32_1 = _block3x3_lrelu(ndf * 16, ndf * 8)
        self._heads()

    def forward(self, x):
        return self.img_code_s32_1(self.img_code_s32(self.img_code_s16(x)))


class D_NET256(_D):  # noqa: N801
    def __init__(self, ndf=64, nef=256, b_jcu=True):
        super().__init__(ndf, nef, b_jcu)
        self.img_code_s32 = _down_block(ndf * 8, ndf * 16)
        self.img_code_s64 = _down_block(ndf * 16, ndf * 32)
        self.img_code_s64_1 = _block3x3_lrelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = _block3x3_lrelu(ndf * 16, ndf * 8)
        self._heads()

    def forward(self, x):
        x = self.img_code_s64(self.img_code_s32(self.img_code_s16(x)))
        return self.img_code_s64_2(self.img_code_s64_1(x))


def weights_init(m):
    """miscc/utils.py: by class name, 'Conv' -> orthogonal, 'BatchNorm' -> N(1, 0.02) and bias 0,
    'Linear' -> orthogonal and bias 0."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.orthogonal_(m.weight.data, 1.0)
    elif "BatchNorm" in name:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)
    elif "Linear" in name:
        nn.init.orthogonal_(m.weight.data, 1.0)
        if m.bias is not None:
            m.bias.data.fill_(0.0)


class CNN_ENCODER(nn.Module):  # noqa: N801
    """model.py CNN_ENCODER on a given torchvision Inception-v3 (the official loads ImageNet weights)."""

    def __init__(self, inception, nef=256):
        super().__init__()
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
                     "Mixed_7a", "Mixed_7b", "Mixed_7c"):
            setattr(self, name, getattr(inception, name))
        for p in self.parameters():
            p.requires_grad = False
        self.emb_features = nn.Conv2d(768, nef, kernel_size=1, stride=1, padding=0, bias=False)
        self.emb_cnn_code = nn.Linear(2048, nef)
        self.emb_features.weight.data.uniform_(-0.1, 0.1)
        self.emb_cnn_code.weight.data.uniform_(-0.1, 0.1)

    def forward(self, x):
        x = nn.Upsample(size=(299, 299), mode="bilinear")(x)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        features = x
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        x = F.avg_pool2d(x, kernel_size=8).view(x.size(0), -1)
        return self.emb_features(features), self.emb_cnn_code(x)


# ----------------------------------------------------------------------------- miscc/losses.py

def discriminator_loss(netD, real_imgs, fake_imgs, conditions, real_labels, fake_labels):
    real_features = netD(real_imgs)
    fake_features = netD(fake_imgs.detach())
    bce = nn.BCELoss()
    cond_real = bce(netD.COND_DNET(real_features, conditions), real_labels)
    cond_fake = bce(netD.COND_DNET(fake_features, conditions), fake_labels)
    B = real_features.size(0)
    cond_wrong = bce(netD.COND_DNET(real_features[:B - 1], conditions[1:B]), fake_labels[1:B])
    if netD.UNCOND_DNET is not None:
        real = bce(netD.UNCOND_DNET(real_features), real_labels)
        fake = bce(netD.UNCOND_DNET(fake_features), fake_labels)
        return (real + cond_real) / 2.0 + (fake + cond_fake + cond_wrong) / 3.0
    return cond_real + (cond_fake + cond_wrong) / 2.0


def generator_loss(netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels, cap_lens,
                   class_ids, lambda_damsm=5.0, gamma1=4.0, gamma2=5.0, gamma3=10.0):
    bce = nn.BCELoss()
    batch_size = real_labels.size(0)
    total = 0
    for i, netD in enumerate(netsD):
        features = netD(fake_imgs[i])
        g_loss = bce(netD.COND_DNET(features, sent_emb), real_labels)
        if netD.UNCOND_DNET is not None:
            g_loss = g_loss + bce(netD.UNCOND_DNET(features), real_labels)
        total += g_loss
        if i == len(netsD) - 1:
            region_features, cnn_code = image_encoder(fake_imgs[i])
            w0, w1, _ = words_loss_official(region_features, words_embs, match_labels, cap_lens, class_ids,
                                            batch_size, gamma1, gamma2, gamma3)
            s0, s1 = sent_loss_official(cnn_code, sent_emb, match_labels, class_ids, batch_size, gamma3=gamma3)
            total += (w0 + w1) * lambda_damsm + (s0 + s1) * lambda_damsm
    return total


def KL_loss(mu, logvar):  # noqa: N802
    element = mu.pow(2).add_(logvar.exp()).mul_(-1).add_(1).add_(logvar)
    return torch.mean(element).mul_(-0.5)


def train_iteration(netG, netsD, optimizersD, optimizerG, image_encoder, imgs, words_embs, sent_emb, mask,
                    cap_lens, class_ids, noise, avg_param_G=None, lambda_damsm=5.0, gammas=(4.0, 5.0, 10.0)):
    """One iteration of ``condGANTrainer.train``: G forward, one update per D, one G update, EMA."""
    B = sent_emb.size(0)
    real_labels = torch.ones(B, dtype=sent_emb.dtype, device=sent_emb.device)
    fake_labels = torch.zeros(B, dtype=sent_emb.dtype, device=sent_emb.device)
    match_labels = torch.arange(B, device=sent_emb.device)
    fake_imgs, _, mu, logvar = netG(noise, sent_emb, words_embs, mask)
    errD_total = 0
    for i, netD in enumerate(netsD):
        netD.zero_grad()
        errD = discriminator_loss(netD, imgs[i], fake_imgs[i], sent_emb, real_labels, fake_labels)
        errD.backward()
        optimizersD[i].step()
        errD_total += errD
    netG.zero_grad()
    errG_total = generator_loss(netsD, image_encoder, fake_imgs, real_labels, words_embs, sent_emb, match_labels,
                                cap_lens, class_ids, lambda_damsm, *gammas)
    errG_total = errG_total + KL_loss(mu, logvar)
    errG_total.backward()
    optimizerG.step()
    if avg_param_G is not None:
        for p, avg_p in zip(netG.parameters(), avg_param_G):
            avg_p.mul_(0.999).add_(p.data, alpha=0.001)
    return errD_total, errG_total
