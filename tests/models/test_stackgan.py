"""StackGAN (v1) against a transcription of hanzhanggit/StackGAN-Pytorch: names, outputs, losses, gradients."""
import copy

import pytest
import torch
from torch import nn

from fastt2i.losses import kl_loss
from fastt2i.models import StackGANConfig, build_stackgan
from fastt2i.models.stackgan import load_official_state_dict
from fastt2i.models import stackgan as ours
from fastt2i.official import stackgan as official

from helpers import assert_rel_close

SMALL = dict(ngf=8, ndf=4, c_dim=6, z_dim=10, text_dim=24)
B = 4


def randomise(module, seed):
    """Weights away from their init everywhere (BN affine and running stats included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan ** 0.5 + (1.0 if name.endswith("weight") and p.dim() == 1 else 0))
    return module


def official_pair(stage, c):
    s1 = official.STAGE1_G(c["ngf"], c["c_dim"], c["z_dim"], c["text_dim"])
    if stage == 1:
        return s1, official.STAGE1_D(c["ndf"], c["c_dim"])
    return (official.STAGE2_G(s1, c["ngf"], c["c_dim"], c["z_dim"], c["text_dim"], 2),
            official.STAGE2_D(c["ndf"], c["c_dim"]))


def twins(stage, dtype, seed=0):
    netG, netD = build_stackgan(StackGANConfig(stage=stage, **SMALL))
    randomise(netG, seed), randomise(netD, seed + 1)
    offG, offD = official_pair(stage, SMALL)
    offG.load_state_dict(netG.state_dict())
    offD.load_state_dict(netD.state_dict())
    return [m.to(dtype) for m in (netG, netD, offG, offD)]


def inputs(stage, dtype, seed=5):
    g = torch.Generator().manual_seed(seed)
    size = 64 if stage == 1 else 256
    text = torch.randn(B, SMALL["text_dim"], generator=g).to(dtype)
    noise = torch.randn(B, SMALL["z_dim"], generator=g).to(dtype)
    real = (torch.rand(B, 3, size, size, generator=g) * 2 - 1).to(dtype)
    eps = [torch.randn(B, SMALL["c_dim"], generator=g) for _ in range(2)]  # float32, as the official draws
    return text, noise, real, eps


def run_ours(netG, netD, stage, text, noise, real, eps):
    if stage == 1:
        _, fake, mu, logvar = netG(text, noise, eps=eps[0])
    else:
        _, fake, mu, logvar = netG(text, noise, eps=eps[1], stage1_eps=eps[0])
    d_loss, _ = ours.discriminator_loss(netD, real, fake, mu)
    g_loss, _ = ours.generator_loss(netD, fake, mu, logvar, kl_coeff=2.0)
    return fake, mu, logvar, d_loss, g_loss


def run_official(netG, netD, stage, text, noise, real, eps):
    if stage == 1:
        netG.ca_net.ca_eps = eps[0]
    else:
        netG.STAGE1_G.ca_net.ca_eps, netG.ca_net.ca_eps = eps
    _, fake, mu, logvar = netG(text, noise)
    ones, zeros = torch.ones(B, dtype=real.dtype), torch.zeros(B, dtype=real.dtype)
    d_loss = official.compute_discriminator_loss(netD, real, fake, ones, zeros, mu)[0]
    g_loss = official.compute_generator_loss(netD, fake, ones, mu) + official.KL_loss(mu, logvar) * 2.0
    return fake, mu, logvar, d_loss, g_loss


def test_names_match_the_official_modules():
    for stage in (1, 2):
        netG, netD = build_stackgan(StackGANConfig(stage=stage, **SMALL))
        offG, offD = official_pair(stage, SMALL)
        assert list(netG.state_dict()) == list(offG.state_dict())
        assert list(netD.state_dict()) == list(offD.state_dict())


@pytest.mark.parametrize("stage", [1, 2])
def test_outputs_and_losses_match_official_fp32(stage):
    netG, netD, offG, offD = twins(stage, torch.float32)
    args = inputs(stage, torch.float32)
    with torch.no_grad():
        got = run_ours(netG, netD, stage, *args)
        want = run_official(offG, offD, stage, *args)
    for name, a, b in zip(("image", "mu", "logvar", "D loss", "G loss"), got, want):
        assert_rel_close(a, b, 1e-5, name)
    # the sigmoid of our logits is the official probability
    feats = netD(got[0])
    assert_rel_close(torch.sigmoid(netD.get_cond_logits(feats, got[1])), offD.get_cond_logits(offD(want[0]), want[1]),
                     1e-5, "D probability")
    # BatchNorm running statistics moved the same way (Stage I's too in Stage II)
    for (k, a), b in zip(netG.state_dict().items(), offG.state_dict().values()):
        assert_rel_close(a.double(), b.double(), 1e-5, k)


@pytest.mark.parametrize("stage", [1, 2])
def test_whole_network_gradients_match_official_float64(stage):
    netG, netD, offG, offD = twins(stage, torch.float64)
    args = inputs(stage, torch.float64)
    for step in ("D", "G"):
        for m in (netG, netD, offG, offD):
            m.zero_grad()
        got = run_ours(netG, netD, stage, *args)
        want = run_official(offG, offD, stage, *args)
        (got[3] if step == "D" else got[4]).backward()
        (want[3] if step == "D" else want[4]).backward()
        pairs = (netD, offD) if step == "D" else (netG, offG)
        n = 0
        for (name, p), q in zip(pairs[0].named_parameters(), pairs[1].parameters()):
            if q.grad is None:
                assert p.grad is None or not p.requires_grad, name
                continue
            assert_rel_close(p.grad, q.grad, 1e-9, f"{step} step d{name}")
            n += 1
        assert n > 10


def test_stage2_keeps_stage1_frozen_and_released_files_load(tmp_path):
    netG, netD = build_stackgan(StackGANConfig(stage=2, **SMALL))
    assert all(not p.requires_grad for p in netG.STAGE1_G.parameters())
    offG, _ = official_pair(2, SMALL)
    randomise(offG, 3)
    state = {"module." + k: v for k, v in offG.state_dict().items()}  # as nn.DataParallel saves it
    torch.save(state, tmp_path / "netG_epoch_600.pth")
    load_official_state_dict(netG, str(tmp_path / "netG_epoch_600.pth"))
    assert torch.equal(netG.STAGE1_G.fc[0].weight, offG.STAGE1_G.fc[0].weight)
    stage1, _ = build_stackgan(StackGANConfig(stage=1, **SMALL))
    load_official_state_dict(stage1, offG.STAGE1_G.state_dict())
    with pytest.raises(ValueError, match="missing keys"):
        load_official_state_dict(stage1, {k: v for k, v in offG.STAGE1_G.state_dict().items() if "img" not in k})


def test_kl_and_bad_inputs():
    mu, logvar = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    assert_rel_close(kl_loss(mu, logvar), official.KL_loss(mu.clone(), logvar.clone()), 1e-12, "KL")
    netG, netD = build_stackgan(StackGANConfig(stage=1, **SMALL))
    with pytest.raises(ValueError, match=r"text_embedding: expected \(B, 24\)"):
        netG(torch.randn(2, 1024), torch.randn(2, 10))
    with pytest.raises(ValueError, match="c_code"):
        netD.get_cond_logits(torch.randn(2, 32, 4, 4))
    with pytest.raises(ValueError, match="stage"):
        StackGANConfig(stage=3)


def test_generator_noise_is_reproducible_from_a_generator():
    netG, _ = build_stackgan(StackGANConfig(stage=1, **SMALL))
    text, noise = torch.randn(2, 24), torch.randn(2, 10)
    a = netG(text, noise, generator=torch.Generator().manual_seed(1))[1]
    b = netG(text, noise, generator=torch.Generator().manual_seed(1))[1]
    c = netG(text, noise, generator=torch.Generator().manual_seed(2))[1]
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert isinstance(copy.deepcopy(netG), nn.Module)
