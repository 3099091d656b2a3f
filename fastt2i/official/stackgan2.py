"""hanzhanggit/StackGAN-v2 (``code/model.py``, ``code/trainer.py`` condGANTrainer) transcribed, in our words.

Plain PyTorch with the official structure, names and math (the text-conditioned
configuration, ``B_CONDITION: True``; sigmoid heads with ``BCELoss``; the D and G losses of
``train_Dnet`` / ``train_Gnet`` without the optimiser steps; ``compute_mean_covariance``):
the ground truth of ``tests/models/test_stackgan2.py`` and the benchmark's eager baseline.
``cfg`` becomes constructor / function arguments; ``ca_eps`` lets a test fix the CA noise.
"""
from __future__ import annotations

import torch
from torch import nn


class GLU(nn.Module):
    def forward(self, x):
        nc = x.size(1)
        assert nc % 2 == 0, "channels dont divide 2!"
        nc = int(nc / 2)
        return x[:, :nc] * torch.sigmoid(x[:, nc:])


def conv3x3(in_planes, out_planes):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)


def upBlock(in_planes, out_planes):  # noqa: N802
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes * 2),
                         nn.BatchNorm2d(out_planes * 2), GLU())


def Block3x3_relu(in_planes, out_planes):  # noqa: N802
    return nn.Sequential(conv3x3(in_planes, out_planes * 2), nn.BatchNorm2d(out_planes * 2), GLU())


class ResBlock(nn.Module):
    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num * 2), nn.BatchNorm2d(channel_num * 2), GLU(),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))

    def forward(self, x):
        residual = x
        out = self.block(x)
        out += residual
        return out


class CA_NET(nn.Module):  # noqa: N801
    def __init__(self, t_dim=1024, ef_dim=128):
        super().__init__()
        self.t_dim, self.ef_dim = t_dim, ef_dim
        self.fc = nn.Linear(t_dim, ef_dim * 4, bias=True)
        self.relu = GLU()
        self.ca_eps = None

    def encode(self, text_embedding):
        x = self.relu(self.fc(text_embedding))
        return x[:, :self.ef_dim], x[:, self.ef_dim:]

    def reparametrize(self, mu, logvar):
        std = logvar.mul(0.5).exp_()
        # torch.cuda.FloatTensor / torch.FloatTensor by cfg.CUDA: float32 noise on std's device
        eps = self.ca_eps if self.ca_eps is not None else torch.empty(std.size(), device=std.device).normal_()
        return eps.mul(std).add_(mu)

    def forward(self, text_embedding):
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar), mu, logvar


class INIT_STAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf, z_dim=100, ef_dim=128):
        super().__init__()
        self.gf_dim = ngf
        self.in_dim = z_dim + ef_dim
        self.fc = nn.Sequential(nn.Linear(self.in_dim, ngf * 4 * 4 * 2, bias=False), nn.BatchNorm1d(ngf * 4 * 4 * 2),
                                GLU())
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)

    def forward(self, z_code, c_code=None):
        in_code = torch.cat((c_code, z_code), 1)
        out_code = self.fc(in_code)
        out_code = out_code.view(-1, self.gf_dim, 4, 4)
        out_code = self.upsample1(out_code)
        out_code = self.upsample2(out_code)
        out_code = self.upsample3(out_code)
        return self.upsample4(out_code)


class NEXT_STAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf, ef_dim=128, num_residual=2):
        super().__init__()
        self.gf_dim, self.ef_dim, self.num_residual = ngf, ef_dim, num_residual
        self.jointConv = Block3x3_relu(ngf + ef_dim, ngf)
        self.residual = nn.Sequential(*[ResBlock(ngf) for _ in range(num_residual)])
        self.upsample = upBlock(ngf, ngf // 2)

    def forward(self, h_code, c_code):
        s_size = h_code.size(2)
        c_code = c_code.view(-1, self.ef_dim, 1, 1)
        c_code = c_code.repeat(1, 1, s_size, s_size)
        h_c_code = torch.cat((c_code, h_code), 1)
        out_code = self.jointConv(h_c_code)
        out_code = self.residual(out_code)
        return self.upsample(out_code)


class GET_IMAGE_G(nn.Module):  # noqa: N801
    def __init__(self, ngf):
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, 3), nn.Tanh())

    def forward(self, h_code):
        return self.img(h_code)


class G_NET(nn.Module):  # noqa: N801
    def __init__(self, gf_dim=64, ef_dim=128, z_dim=100, t_dim=1024, r_num=2, branch_num=3):
        super().__init__()
        self.gf_dim, self.branch_num = gf_dim, branch_num
        self.ca_net = CA_NET(t_dim, ef_dim)
        if branch_num > 0:
            self.h_net1 = INIT_STAGE_G(gf_dim * 16, z_dim, ef_dim)
            self.img_net1 = GET_IMAGE_G(gf_dim)
        if branch_num > 1:
            self.h_net2 = NEXT_STAGE_G(gf_dim, ef_dim, r_num)
            self.img_net2 = GET_IMAGE_G(gf_dim // 2)
        if branch_num > 2:
            self.h_net3 = NEXT_STAGE_G(gf_dim // 2, ef_dim, r_num)
            self.img_net3 = GET_IMAGE_G(gf_dim // 4)

    def forward(self, z_code, text_embedding=None):
        c_code, mu, logvar = self.ca_net(text_embedding)
        fake_imgs = []
        if self.branch_num > 0:
            h_code1 = self.h_net1(z_code, c_code)
            fake_imgs.append(self.img_net1(h_code1))
        if self.branch_num > 1:
            h_code2 = self.h_net2(h_code1, c_code)
            fake_imgs.append(self.img_net2(h_code2))
        if self.branch_num > 2:
            h_code3 = self.h_net3(h_code2, c_code)
            fake_imgs.append(self.img_net3(h_code3))
        return fake_imgs, mu, logvar


def Block3x3_leakRelu(in_planes, out_planes):  # noqa: N802
    return nn.Sequential(conv3x3(in_planes, out_planes), nn.BatchNorm2d(out_planes), nn.LeakyReLU(0.2, inplace=True))


def downBlock(in_planes, out_planes):  # noqa: N802
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 4, 2, 1, bias=False), nn.BatchNorm2d(out_planes),
                         nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf):
    return nn.Sequential(
        nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True))


class _D_NET(nn.Module):  # noqa: N801 - the three official D classes differ only in their trunk
    def __init__(self, df_dim=64, ef_dim=128):
        super().__init__()
        self.df_dim, self.ef_dim = df_dim, ef_dim
        ndf, efg = df_dim, ef_dim
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.build_trunk(ndf)
        self.logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())
        self.jointConv = Block3x3_leakRelu(ndf * 8 + efg, ndf * 8)
        self.uncond_logits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def build_trunk(self, ndf):
        pass

    def trunk(self, x_code):
        return x_code

    def forward(self, x_var, c_code=None):
        x_code = self.trunk(self.img_code_s16(x_var))
        c_code = c_code.view(-1, self.ef_dim, 1, 1)
        c_code = c_code.repeat(1, 1, 4, 4)
        h_c_code = torch.cat((c_code, x_code), 1)
        h_c_code = self.jointConv(h_c_code)
        output = self.logits(h_c_code)
        out_uncond = self.uncond_logits(x_code)
        return [output.view(-1), out_uncond.view(-1)]


class D_NET64(_D_NET):  # noqa: N801
    pass


class D_NET128(_D_NET):  # noqa: N801
    def build_trunk(self, ndf):
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu(ndf * 16, ndf * 8)

    def trunk(self, x_code):
        return self.img_code_s32_1(self.img_code_s32(x_code))


class D_NET256(_D_NET):  # noqa: N801
    def build_trunk(self, ndf):
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s64 = downBlock(ndf * 16, ndf * 32)
        self.img_code_s64_1 = Block3x3_leakRelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = Block3x3_leakRelu(ndf * 16, ndf * 8)

    def trunk(self, x_code):
        x_code = self.img_code_s32(x_code)
        x_code = self.img_code_s64(x_code)
        x_code = self.img_code_s64_1(x_code)
        return self.img_code_s64_2(x_code)


def compute_mean_covariance(img):
    batch_size, channel_num, height, width = img.size()
    num_pixels = height * width
    mu = img.mean(2, keepdim=True).mean(3, keepdim=True)
    img_hat = img - mu.expand_as(img)
    img_hat = img_hat.view(batch_size, channel_num, num_pixels)
    img_hat_transpose = img_hat.transpose(1, 2)
    covariance = torch.bmm(img_hat, img_hat_transpose)
    return mu, covariance / num_pixels


def KL_loss(mu, logvar):  # noqa: N802
    kld_element = mu.pow(2).add_(logvar.exp()).mul_(-1).add_(1).add_(logvar)
    return torch.mean(kld_element).mul_(-0.5)


def d_loss(netD, real_imgs, wrong_imgs, fake_imgs, mu, uncond_loss=1.0):  # noqa: N803
    """``train_Dnet`` for one stage, up to ``errD`` (no backward / step)."""
    criterion = nn.BCELoss()
    batch_size = real_imgs.size(0)
    real_labels = torch.ones(batch_size, dtype=real_imgs.dtype, device=real_imgs.device)
    fake_labels = torch.zeros(batch_size, dtype=real_imgs.dtype, device=real_imgs.device)
    real_logits = netD(real_imgs, mu.detach())
    wrong_logits = netD(wrong_imgs, mu.detach())
    fake_logits = netD(fake_imgs.detach(), mu.detach())
    errD_real = criterion(real_logits[0], real_labels)
    errD_wrong = criterion(wrong_logits[0], fake_labels)
    errD_fake = criterion(fake_logits[0], fake_labels)
    if len(real_logits) > 1 and uncond_loss > 0:
        errD_real = errD_real + uncond_loss * criterion(real_logits[1], real_labels)
        errD_wrong = errD_wrong + uncond_loss * criterion(wrong_logits[1], real_labels)
        errD_fake = errD_fake + uncond_loss * criterion(fake_logits[1], fake_labels)
        return errD_real + errD_wrong + errD_fake
    return errD_real + 0.5 * (errD_wrong + errD_fake)


def g_loss(netsD, fake_imgs, mu, logvar, uncond_loss=1.0, color_loss=0.0, kl_coeff=2.0):  # noqa: N803
    """``train_Gnet`` up to ``errG_total`` (no backward / step); returns (kl_loss, errG_total)."""
    criterion = nn.BCELoss()
    batch_size = fake_imgs[0].size(0)
    real_labels = torch.ones(batch_size, dtype=fake_imgs[0].dtype, device=fake_imgs[0].device)
    errG_total = 0
    for i in range(len(netsD)):
        outputs = netsD[i](fake_imgs[i], mu)
        errG = criterion(outputs[0], real_labels)
        if len(outputs) > 1 and uncond_loss > 0:
            errG = errG + uncond_loss * criterion(outputs[1], real_labels)
        errG_total = errG_total + errG
    num_Ds = len(netsD)
    if color_loss > 0:
        if num_Ds > 1:
            mu1, covariance1 = compute_mean_covariance(fake_imgs[-1])
            mu2, covariance2 = compute_mean_covariance(fake_imgs[-2].detach())
            like_mu2 = color_loss * nn.MSELoss()(mu1, mu2)
            like_cov2 = color_loss * 5 * nn.MSELoss()(covariance1, covariance2)
            errG_total = errG_total + like_mu2 + like_cov2
        if num_Ds > 2:
            mu1, covariance1 = compute_mean_covariance(fake_imgs[-2])
            mu2, covariance2 = compute_mean_covariance(fake_imgs[-3].detach())
            like_mu1 = color_loss * nn.MSELoss()(mu1, mu2)
            like_cov1 = color_loss * 5 * nn.MSELoss()(covariance1, covariance2)
            errG_total = errG_total + like_mu1 + like_cov1
    kl_loss = KL_loss(mu, logvar) * kl_coeff
    return kl_loss, errG_total + kl_loss

