"""GAN-INT-CLS against a transcription of reedscot/icml2016 main_cls_int.lua: outputs, losses, gradients."""
import pytest
import torch

from fastt2i.losses import gan_int_g_loss, interpolate_text, matching_aware_d_loss
from fastt2i.models import GANINTCLSConfig, build_gan_int_cls
from fastt2i.models import gan_int_cls as ours
from fastt2i.official import gan_int_cls as official

from helpers import assert_rel_close

SMALL = dict(ngf=8, ndf=8, nz=10, nt=12, text_dim=24)
B = 4


def randomise(module, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=g) / fan ** 0.5 + (1.0 if p.dim() == 1 and name.endswith("weight") else 0))
    return module


def twins(dtype):
    netG, netD = build_gan_int_cls(GANINTCLSConfig(**SMALL))
    randomise(netG, 0), randomise(netD, 1)
    offG = official.NetG(SMALL["ngf"], SMALL["nz"], SMALL["nt"], SMALL["text_dim"])
    offD = official.NetD(SMALL["ndf"], SMALL["nt"], SMALL["text_dim"])
    offG.load_state_dict(netG.state_dict())
    offD.load_state_dict(netD.state_dict())
    return [m.to(dtype) for m in (netG, netD, offG, offD)]


def inputs(dtype, seed=5, captions=4):
    g = torch.Generator().manual_seed(seed)
    raw_txt = torch.randn(B * captions, SMALL["text_dim"], generator=g).to(dtype)
    real = (torch.rand(B, 3, 64, 64, generator=g) * 2 - 1).to(dtype)
    wrong = (torch.rand(B, 3, 64, 64, generator=g) * 2 - 1).to(dtype)
    noise = torch.randn(B, SMALL["nz"], 1, 1, generator=g).to(dtype)
    noise_interp = torch.randn(B * 3 // 2, SMALL["nz"], 1, 1, generator=g).to(dtype)
    return raw_txt, real, wrong, noise, noise_interp


def test_names_match_and_lua_network_facts():
    netG, netD = build_gan_int_cls(GANINTCLSConfig(**SMALL))
    assert list(netG.state_dict()) == list(official.NetG(8, 10, 12, 24).state_dict())
    assert list(netD.state_dict()) == list(official.NetD(8, 12, 24).state_dict())
    # convolutions are bias-free (the Lua zeroes them before every evaluation)
    assert all(m.bias is None for m in netG.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
    # skipD is undefined in the script: no D residual parameters unless asked for
    assert not any("residual" in k for k in netD.state_dict())
    _, netD_res = build_gan_int_cls(GANINTCLSConfig(d_residual=True, **SMALL))
    assert sum("residual" in k for k in netD_res.state_dict()) > 0
    assert netD_res(torch.randn(2, 3, 64, 64), torch.randn(2, 24)).shape == (2,)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-9)])
def test_outputs_losses_and_gradients_match_the_lua(dtype, tol):
    netG, netD, offG, offD = twins(dtype)
    raw_txt, real, wrong, noise, noise_interp = inputs(dtype)
    text = ours.average_captions(raw_txt, 4)
    assert_rel_close(text, official.netR(raw_txt, B, 4), 1e-12 if dtype == torch.float64 else 1e-6, "netR")

    # forward
    assert_rel_close(netG(noise, text), offG(noise, text), tol, "G image")
    assert_rel_close(torch.sigmoid(netD(real, text)), offD(real, text), tol, "D probability")

    # D step
    d_loss, _ = ours.discriminator_loss(netG, netD, real, text, wrong, noise, cls_weight=0.5)
    d_want = official.fDx(offG, offD, real, text, wrong, noise, cls_weight=0.5)
    assert_rel_close(d_loss, d_want, tol, "D loss")
    d_loss.backward()
    d_want.backward()
    # G step (1.5 B batch with interpolated texts)
    assert all(p.grad is None for p in netG.parameters())  # the D step does not reach G
    g_loss, fakes = ours.generator_loss(netG, netD, text, noise_interp, interp_weight=1.0)
    g_want = official.fGx(offG, offD, text, noise_interp, interp_weight=1.0)
    assert fakes.shape[0] == B * 3 // 2
    assert_rel_close(g_loss, g_want, tol, "G loss")
    g_loss.backward()
    g_want.backward()
    if dtype == torch.float64:
        for (name, p), q in zip(netG.named_parameters(), offG.parameters()):
            assert_rel_close(p.grad, q.grad, tol, f"dG {name}")
        for (name, p), q in zip(netD.named_parameters(), offD.parameters()):
            if name == "text_proj.0.bias":  # feeds a BatchNorm: its gradient is 0 up to rounding
                assert p.grad.abs().max() < 1e-12 and q.grad.abs().max() < 1e-12
                continue
            assert_rel_close(p.grad, q.grad, tol, f"dD {name} (D step + G step)")


def test_interpolation_and_weighted_generator_loss():
    t = torch.arange(8.0).reshape(4, 2)
    assert torch.equal(interpolate_text(t)[4:], (t[:2] + t[2:]) / 2)
    with pytest.raises(ValueError, match="even"):
        interpolate_text(t[:3])
    logits = torch.randn(6, dtype=torch.float64)
    w = torch.tensor([1, 1, 1, 1, 0.25, 0.25], dtype=torch.float64)
    want = official.bce_criterion(torch.sigmoid(logits), torch.ones(6, dtype=torch.float64), w)
    assert_rel_close(gan_int_g_loss(logits, 4, 0.25), want, 1e-10, "weighted INT loss")
    with pytest.raises(ValueError, match="B \\+ B/2"):
        gan_int_g_loss(logits[:5], 4)
    real, wrong, fake = torch.randn(4), torch.randn(4), torch.randn(4)
    no_cls = matching_aware_d_loss(real, None, fake, cls_weight=0.0)
    assert no_cls.isfinite()


def test_bad_inputs():
    netG, netD = build_gan_int_cls(GANINTCLSConfig(**SMALL))
    with pytest.raises(ValueError, match=r"text_embedding: expected \(B, 24\)"):
        netG(torch.randn(2, 10), torch.randn(2, 1024))
    with pytest.raises(ValueError, match="text_embedding"):
        netD(torch.randn(2, 3, 64, 64), torch.randn(2, 7))
    with pytest.raises(ValueError, match="even batch"):
        GANINTCLSConfig(batch_size=7)
    with pytest.raises(ValueError, match="B \\* 4"):
        ours.average_captions(torch.randn(7, 24), 4)


def test_presets_follow_the_training_scripts():
    """train_cub.sh / train_flowers.sh: numCaption 4, decay every 100 of 600; train_coco.sh: 3, 40 of 200."""
    birds, coco = ours.GANINTCLSConfig.preset("birds"), ours.GANINTCLSConfig.preset("coco")
    assert (birds.num_captions, birds.decay_every, birds.max_epoch, birds.ngf, birds.ndf) == (4, 100, 600, 128, 64)
    assert (coco.num_captions, coco.decay_every, coco.max_epoch, coco.ngf, coco.ndf) == (3, 40, 200, 196, 196)
