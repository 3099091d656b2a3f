"""StackGAN++ against a transcription of hanzhanggit/StackGAN-v2: names, outputs, losses, gradients."""
import pytest
import torch

from fastt2i.losses import colour_consistency_loss, mean_covariance
from fastt2i.models import StackGAN2Config, build_stackgan2
from fastt2i.models.stackgan2 import load_official_state_dict
from fastt2i.models import stackgan2 as ours
from fastt2i.official import stackgan2 as official

from helpers import assert_rel_close

SMALL = dict(ngf=8, ndf=4, c_dim=6, z_dim=10, text_dim=24)
B = 3


def randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan ** 0.5 + (1.0 if p.dim() == 1 and name.endswith("weight") else 0))
    return module


def twins(branch_num, dtype, seed=0):
    netG, netsD = build_stackgan2(StackGAN2Config(branch_num=branch_num, **SMALL))
    randomise(netG, seed), randomise(netsD, seed + 1)
    offG = official.G_NET(SMALL["ngf"], SMALL["c_dim"], SMALL["z_dim"], SMALL["text_dim"], 2, branch_num)
    offDs = [cls(SMALL["ndf"], SMALL["c_dim"]) for cls in (official.D_NET64, official.D_NET128,
                                                            official.D_NET256)[:branch_num]]
    offG.load_state_dict(netG.state_dict())
    for d, o in zip(netsD, offDs):
        o.load_state_dict(d.state_dict())
    return netG.to(dtype), netsD.to(dtype), offG.to(dtype), [o.to(dtype) for o in offDs]


def inputs(branch_num, dtype, seed=5):
    g = torch.Generator().manual_seed(seed)
    text = torch.randn(B, SMALL["text_dim"], generator=g).to(dtype)
    noise = torch.randn(B, SMALL["z_dim"], generator=g).to(dtype)
    reals = [(torch.rand(B, 3, 64 * 2 ** i, 64 * 2 ** i, generator=g) * 2 - 1).to(dtype) for i in range(branch_num)]
    wrongs = [(torch.rand(B, 3, 64 * 2 ** i, 64 * 2 ** i, generator=g) * 2 - 1).to(dtype) for i in range(branch_num)]
    eps = torch.randn(B, SMALL["c_dim"], generator=g)
    return text, noise, reals, wrongs, eps


COEFFS = dict(uncond=1.0, color=0.7, kl=2.0)


def run_ours(netG, netsD, text, noise, reals, wrongs, eps):
    fakes, mu, logvar = netG(noise, text, eps=eps)
    d_losses = [ours.discriminator_loss(d, r, w, f, mu, COEFFS["uncond"]) for d, r, w, f in zip(netsD, reals, wrongs, fakes)]
    g_loss, _ = ours.generator_loss(netsD, fakes, mu, logvar, COEFFS["uncond"], COEFFS["color"], COEFFS["kl"])
    return fakes, mu, logvar, d_losses, g_loss


def run_official(netG, netsD, text, noise, reals, wrongs, eps):
    netG.ca_net.ca_eps = eps
    fakes, mu, logvar = netG(noise, text)
    d_losses = [official.d_loss(d, r, w, f, mu, COEFFS["uncond"]) for d, r, w, f in zip(netsD, reals, wrongs, fakes)]
    _, g_loss = official.g_loss(netsD, fakes, mu, logvar, COEFFS["uncond"], COEFFS["color"], COEFFS["kl"])
    return fakes, mu, logvar, d_losses, g_loss


def test_names_match_the_official_modules():
    netG, netsD = build_stackgan2(StackGAN2Config(**SMALL))
    assert list(netG.state_dict()) == list(official.G_NET(8, 6, 10, 24).state_dict())
    for d, cls in zip(netsD, (official.D_NET64, official.D_NET128, official.D_NET256)):
        assert list(d.state_dict()) == list(cls(4, 6).state_dict())


@pytest.mark.parametrize("branch_num", [2, 3])
def test_outputs_and_losses_match_official_fp32(branch_num):
    netG, netsD, offG, offDs = twins(branch_num, torch.float32)
    args = inputs(branch_num, torch.float32)
    with torch.no_grad():
        got = run_ours(netG, netsD, *args)
        want = run_official(offG, offDs, *args)
    for i, (a, b) in enumerate(zip(got[0], want[0])):
        assert_rel_close(a, b, 1e-5, f"image {i}")
    assert_rel_close(got[1], want[1], 1e-5, "mu")
    assert_rel_close(got[2], want[2], 1e-5, "logvar")
    for i, (a, b) in enumerate(zip(got[3], want[3])):
        assert_rel_close(a, b, 1e-5, f"D{i} loss")
    assert_rel_close(got[4], want[4], 1e-5, "G loss")
    cond, uncond = netsD[0](got[0][0], got[1])
    assert_rel_close(torch.sigmoid(uncond), offDs[0](want[0][0], want[1])[1], 1e-5, "uncond probability")


def test_whole_network_gradients_match_official_float64():
    netG, netsD, offG, offDs = twins(3, torch.float64)
    args = inputs(3, torch.float64)
    for step in ("D", "G"):
        for m in [netG, netsD, offG, *offDs]:
            m.zero_grad()
        got = run_ours(netG, netsD, *args)
        want = run_official(offG, offDs, *args)
        (sum(got[3]) if step == "D" else got[4]).backward()
        (sum(want[3]) if step == "D" else want[4]).backward()
        if step == "D":
            pairs = [(n, p, q) for d, o in zip(netsD, offDs) for (n, p), q in zip(d.named_parameters(), o.parameters())]
        else:
            pairs = [(n, p, q) for (n, p), q in zip(netG.named_parameters(), offG.parameters())]
        for name, p, q in pairs:
            assert_rel_close(p.grad, q.grad, 1e-9, f"{step} step d{name}")
        assert len(pairs) > 20


def test_colour_consistency_equals_the_official_terms():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.randn(2, 3, 8 * 2 ** i, 8 * 2 ** i, generator=g, dtype=torch.float64, requires_grad=True)
            for i in range(3)]
    mu, cov = mean_covariance(imgs[0])
    mu_o, cov_o = official.compute_mean_covariance(imgs[0])
    assert_rel_close(mu, mu_o, 1e-12, "mu")
    assert_rel_close(cov, cov_o, 1e-12, "covariance")
    loss = colour_consistency_loss(imgs, 0.3)
    want = 0
    mse = torch.nn.MSELoss()
    for fine, coarse in ((imgs[2], imgs[1]), (imgs[1], imgs[0])):
        m1, c1 = official.compute_mean_covariance(fine)
        m2, c2 = official.compute_mean_covariance(coarse.detach())
        want = want + 0.3 * mse(m1, m2) + 0.3 * 5 * mse(c1, c2)
    assert_rel_close(loss, want, 1e-12, "colour loss")
    grads = torch.autograd.grad(loss, imgs, allow_unused=True)
    want_grads = torch.autograd.grad(want, imgs, allow_unused=True)
    assert grads[0] is None and want_grads[0] is None  # the coarsest stage is only a target
    for a, b in zip(grads[1:], want_grads[1:]):
        assert_rel_close(a, b, 1e-12, "colour gradient")


def test_released_generator_loads_and_bad_inputs(tmp_path):
    off = randomise(official.G_NET(8, 6, 10, 24), 4)
    torch.save({"module." + k: v for k, v in off.state_dict().items()}, tmp_path / "netG_26000.pth")
    netG, _ = build_stackgan2(StackGAN2Config(**SMALL))
    load_official_state_dict(netG, str(tmp_path / "netG_26000.pth"))
    assert torch.equal(netG.h_net3.jointConv[0].weight, off.h_net3.jointConv[0].weight)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official_state_dict(build_stackgan2(StackGAN2Config(**dict(SMALL, ngf=16)))[0], off.state_dict())
    with pytest.raises(ValueError, match="branch_num"):
        StackGAN2Config(branch_num=4)
    with pytest.raises(ValueError, match="imsize"):
        ours.Discriminator(96)
