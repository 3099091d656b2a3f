"""hanzhanggit/StackGAN-Pytorch (``code/model.py``, ``code/miscc/utils.py``) transcribed, in our words.

Plain PyTorch with the official structure, parameter names and math (sigmoid heads and
``BCELoss``, in-place ReLUs, ``torch.FloatTensor`` noise, the loss functions with their wrong
pairs): the ground truth of ``tests/models/test_stackgan.py`` and the eager baseline of the
benchmark.  The global ``cfg`` becomes constructor arguments.  One line differs, because the
official one no longer runs: ``D_GET_LOGITS`` tests ``c_code is not None`` instead of the
truth value of a tensor.  ``ca_eps`` lets a test hand the CA the noise it would draw.
"""
from __future__ import annotations

import torch
from torch import nn


def conv3x3(in_planes, out_planes, stride=1):
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def upBlock(in_planes, out_planes):  # noqa: N802
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_planes, out_planes),
                         nn.BatchNorm2d(out_planes), nn.ReLU(True))


class ResBlock(nn.Module):
    def __init__(self, channel_num):
        super().__init__()
        self.block = nn.Sequential(conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num), nn.ReLU(True),
                                   conv3x3(channel_num, channel_num), nn.BatchNorm2d(channel_num))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        residual = x
        out = self.block(x)
        out += residual
        return self.relu(out)


class CA_NET(nn.Module):  # noqa: N801
    def __init__(self, t_dim=1024, c_dim=128):
        super().__init__()
        self.t_dim, self.c_dim = t_dim, c_dim
        self.fc = nn.Linear(t_dim, c_dim * 2, bias=True)
        self.relu = nn.ReLU()
        self.ca_eps = None  # tests: the noise to use instead of a fresh draw

    def encode(self, text_embedding):
        x = self.relu(self.fc(text_embedding))
        return x[:, :self.c_dim], x[:, self.c_dim:]

    def reparametrize(self, mu, logvar):
        std = logvar.mul(0.5).exp_()
        # torch.cuda.FloatTensor / torch.FloatTensor by cfg.CUDA: float32 noise on std's device
        eps = self.ca_eps if self.ca_eps is not None else torch.empty(std.size(), device=std.device).normal_()
        return eps.mul(std).add_(mu)

    def forward(self, text_embedding):
        mu, logvar = self.encode(text_embedding)
        return self.reparametrize(mu, logvar), mu, logvar


class D_GET_LOGITS(nn.Module):  # noqa: N801
    def __init__(self, ndf, nef, bcondition=True):
        super().__init__()
        self.df_dim, self.ef_dim, self.bcondition = ndf, nef, bcondition
        if bcondition:
            self.outlogits = nn.Sequential(conv3x3(ndf * 8 + nef, ndf * 8), nn.BatchNorm2d(ndf * 8),
                                           nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4),
                                           nn.Sigmoid())
        else:
            self.outlogits = nn.Sequential(nn.Conv2d(ndf * 8, 1, kernel_size=4, stride=4), nn.Sigmoid())

    def forward(self, h_code, c_code=None):
        if self.bcondition and c_code is not None:
            c_code = c_code.view(-1, self.ef_dim, 1, 1)
            c_code = c_code.repeat(1, 1, 4, 4)
            h_c_code = torch.cat((h_code, c_code), 1)
        else:
            h_c_code = h_code
        return self.outlogits(h_c_code).view(-1)


class STAGE1_G(nn.Module):  # noqa: N801
    def __init__(self, gf_dim=192, c_dim=128, z_dim=100, t_dim=1024):
        super().__init__()
        self.gf_dim, self.ef_dim, self.z_dim = gf_dim * 8, c_dim, z_dim
        ngf = self.gf_dim
        self.ca_net = CA_NET(t_dim, c_dim)
        self.fc = nn.Sequential(nn.Linear(z_dim + c_dim, ngf * 4 * 4, bias=False), nn.BatchNorm1d(ngf * 4 * 4),
                                nn.ReLU(True))
        self.upsample1 = upBlock(ngf, ngf // 2)
        self.upsample2 = upBlock(ngf // 2, ngf // 4)
        self.upsample3 = upBlock(ngf // 4, ngf // 8)
        self.upsample4 = upBlock(ngf // 8, ngf // 16)
        self.img = nn.Sequential(conv3x3(ngf // 16, 3), nn.Tanh())

    def forward(self, text_embedding, noise):
        c_code, mu, logvar = self.ca_net(text_embedding)
        z_c_code = torch.cat((noise, c_code), 1)
        h_code = self.fc(z_c_code)
        h_code = h_code.view(-1, self.gf_dim, 4, 4)
        h_code = self.upsample1(h_code)
        h_code = self.upsample2(h_code)
        h_code = self.upsample3(h_code)
        h_code = self.upsample4(h_code)
        return None, self.img(h_code), mu, logvar


class STAGE1_D(nn.Module):  # noqa: N801
    def __init__(self, df_dim=96, c_dim=128):
        super().__init__()
        ndf, nef = df_dim, c_dim
        self.df_dim, self.ef_dim = ndf, nef
        self.encode_img = nn.Sequential(
            nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True))
        self.get_cond_logits = D_GET_LOGITS(ndf, nef)
        self.get_uncond_logits = None

    def forward(self, image):
        return self.encode_img(image)


class STAGE2_G(nn.Module):  # noqa: N801
    def __init__(self, stage1_g, gf_dim=192, c_dim=128, z_dim=100, t_dim=1024, r_num=2):
        super().__init__()
        self.gf_dim, self.ef_dim, self.z_dim = gf_dim, c_dim, z_dim
        self.STAGE1_G = stage1_g
        for param in self.STAGE1_G.parameters():
            param.requires_grad = False
        ngf = gf_dim
        self.ca_net = CA_NET(t_dim, c_dim)
        self.encoder = nn.Sequential(
            conv3x3(3, ngf), nn.ReLU(True),
            nn.Conv2d(ngf, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.Conv2d(ngf * 2, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.hr_joint = nn.Sequential(conv3x3(c_dim + ngf * 4, ngf * 4), nn.BatchNorm2d(ngf * 4), nn.ReLU(True))
        self.residual = nn.Sequential(*[ResBlock(ngf * 4) for _ in range(r_num)])
        self.upsample1 = upBlock(ngf * 4, ngf * 2)
        self.upsample2 = upBlock(ngf * 2, ngf)
        self.upsample3 = upBlock(ngf, ngf // 2)
        self.upsample4 = upBlock(ngf // 2, ngf // 4)
        self.img = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(self, text_embedding, noise):
        _, stage1_img, _, _ = self.STAGE1_G(text_embedding, noise)
        stage1_img = stage1_img.detach()
        encoded_img = self.encoder(stage1_img)
        c_code, mu, logvar = self.ca_net(text_embedding)
        c_code = c_code.view(-1, self.ef_dim, 1, 1)
        c_code = c_code.repeat(1, 1, 16, 16)
        i_c_code = torch.cat([encoded_img, c_code], 1)
        h_code = self.hr_joint(i_c_code)
        h_code = self.residual(h_code)
        h_code = self.upsample1(h_code)
        h_code = self.upsample2(h_code)
        h_code = self.upsample3(h_code)
        h_code = self.upsample4(h_code)
        return stage1_img, self.img(h_code), mu, logvar


class STAGE2_D(nn.Module):  # noqa: N801
    def __init__(self, df_dim=96, c_dim=128):
        super().__init__()
        ndf, nef = df_dim, c_dim
        self.df_dim, self.ef_dim = ndf, nef
        layers = [nn.Conv2d(3, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True)]
        for cin, cout in ((ndf, ndf * 2), (ndf * 2, ndf * 4), (ndf * 4, ndf * 8), (ndf * 8, ndf * 16),
                          (ndf * 16, ndf * 32)):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)]
        layers += [conv3x3(ndf * 32, ndf * 16), nn.BatchNorm2d(ndf * 16), nn.LeakyReLU(0.2, inplace=True),
                   conv3x3(ndf * 16, ndf * 8), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True)]
        self.encode_img = nn.Sequential(*layers)
        self.get_cond_logits = D_GET_LOGITS(ndf, nef, bcondition=True)
        self.get_uncond_logits = D_GET_LOGITS(ndf, nef, bcondition=False)

    def forward(self, image):
        return self.encode_img(image)


def KL_loss(mu, logvar):  # noqa: N802
    kld_element = mu.pow(2).add_(logvar.exp()).mul_(-1).add_(1).add_(logvar)
    return torch.mean(kld_element).mul_(-0.5)


def compute_discriminator_loss(netD, real_imgs, fake_imgs, real_labels, fake_labels, conditions):  # noqa: N803
    """The official D loss (data_parallel calls become direct calls)."""
    criterion = nn.BCELoss()
    batch_size = real_imgs.size(0)
    cond = conditions.detach()
    fake = fake_imgs.detach()
    real_features = netD(real_imgs)
    fake_features = netD(fake)
    real_logits = netD.get_cond_logits(real_features, cond)
    errD_real = criterion(real_logits, real_labels)
    wrong_logits = netD.get_cond_logits(real_features[:(batch_size - 1)], cond[1:])
    errD_wrong = criterion(wrong_logits, fake_labels[1:])
    fake_logits = netD.get_cond_logits(fake_features, cond)
    errD_fake = criterion(fake_logits, fake_labels)
    if netD.get_uncond_logits is not None:
        real_logits = netD.get_uncond_logits(real_features)
        fake_logits = netD.get_uncond_logits(fake_features)
        uncond_errD_real = criterion(real_logits, real_labels)
        uncond_errD_fake = criterion(fake_logits, fake_labels)
        errD = (errD_real + uncond_errD_real) / 2. + (errD_fake + errD_wrong + uncond_errD_fake) / 3.
        errD_real = (errD_real + uncond_errD_real) / 2.
        errD_fake = (errD_fake + uncond_errD_fake) / 2.
    else:
        errD = errD_real + (errD_fake + errD_wrong) * 0.5
    return errD, errD_real.data, errD_wrong.data, errD_fake.data


def compute_generator_loss(netD, fake_imgs, real_labels, conditions):  # noqa: N803
    criterion = nn.BCELoss()
    cond = conditions.detach()
    fake_features = netD(fake_imgs)
    fake_logits = netD.get_cond_logits(fake_features, cond)
    errD_fake = criterion(fake_logits, real_labels)
    if netD.get_uncond_logits is not None:
        fake_logits = netD.get_uncond_logits(fake_features)
        uncond_errD_fake = criterion(fake_logits, real_labels)
        errD_fake += uncond_errD_fake
    return errD_fake
