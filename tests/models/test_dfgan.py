"""DF-GAN models: shapes, backends against the reference, official names and loading."""
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastt2i import ops
from fastt2i.losses import ma_gradient_penalty
from fastt2i.models import (
    DFGAN,
    DFGANConfig,
    NetC,
    NetD,
    NetG,
    StateDictMismatchError,
    d_in_out_channels,
    g_in_out_channels,
    load_official_state_dict,
)
from fastt2i.official import dfgan as official
from fastt2i.text import RNNEncoder

from helpers import assert_rel_close, fused_backends, rel_error


# The official modules: fastt2i.official.dfgan, an eager transcription of tobran/DF-GAN.


def _randomise(module, seed):
    """Non-trivial weights everywhere (the affine's zero init and D's gamma = 0 would hide errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan = p[0].numel() if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g) / fan ** 0.5)
            if name.endswith("gamma"):
                p.fill_(0.7)
            if "fc_gamma.linear2.bias" in name:
                p.add_(1.0)
    return module


def _official_triplet(cfg):
    return (official.NetG(cfg.ngf, cfg.nz, cfg.cond_dim, cfg.imsize), official.NetD(cfg.ndf, cfg.imsize),
            official.NetC(cfg.ndf, cfg.cond_dim))


# ----------------------------------------------------------------------------- shapes and schedules

def test_channel_schedules_match_the_official_formula():
    assert g_in_out_channels(32, 256) == [(256, 256), (256, 256), (256, 256), (256, 128), (128, 64), (64, 32)]
    assert d_in_out_channels(32, 256) == [(32, 64), (64, 128), (128, 256), (256, 256), (256, 256), (256, 256)]
    assert g_in_out_channels(32, 64) == [(256, 256), (256, 128), (128, 64), (64, 32)]
    with pytest.raises(ValueError, match="imsize"):
        g_in_out_channels(32, 100)
    for imsize in (64, 128, 256):  # the same schedule as the official transcription's
        assert g_in_out_channels(32, imsize) == official.generator_channels(32, imsize)
        assert d_in_out_channels(32, imsize) == official.discriminator_channels(32, imsize)


@pytest.mark.parametrize("imsize", [64, 128, 256])
def test_shapes(imsize):
    torch.manual_seed(0)
    cfg = DFGANConfig(imsize=imsize, ngf=4, ndf=4)
    m = DFGAN(cfg)
    assert len(m.netG.GBlocks) == {64: 4, 128: 5, 256: 6}[imsize]
    noise, sent = torch.randn(2, 100), torch.randn(2, 256)
    img = m.netG(noise, sent)
    assert img.shape == (2, 3, imsize, imsize) and img.abs().max() <= 1
    feats = m.netD(img)
    assert feats.shape == (2, 32, 4, 4)
    assert m.netC(feats, sent).shape == (2, 1, 1, 1)


def test_config_presets():
    b, f, c = DFGANConfig.birds(), DFGANConfig.flowers(), DFGANConfig.coco()
    assert (b.imsize, b.ngf, b.nz, b.cond_dim, b.batch_size, b.lr_g, b.lr_d, b.betas) == \
        (256, 32, 100, 256, 32, 1e-4, 4e-4, (0.0, 0.9))
    assert (b.trunc_rate, f.trunc_rate, c.trunc_rate) == (0.86, 0.88, 0.86)
    assert c.captions_per_image == 5 and b.captions_per_image == 10 and c.max_epoch == 301
    assert DFGANConfig.from_dict(b.to_dict()) == b
    assert DFGANConfig.preset("coco", imsize=128).imsize == 128
    with pytest.raises(ValueError, match="preset"):
        DFGANConfig.preset("imagenet")
    with pytest.raises(ValueError, match="ngf"):
        DFGANConfig(ngf=0)


# ----------------------------------------------------------------------------- official names

@pytest.mark.parametrize("imsize", [64, 256])
def test_state_dict_names_match_the_official_modules(imsize):
    cfg = DFGANConfig(imsize=imsize, ngf=4, ndf=4)
    ours = DFGAN(cfg)
    for mine, theirs in zip((ours.netG, ours.netD, ours.netC), _official_triplet(cfg)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert list(a) == list(b) or sorted(a) == sorted(b)
        assert all(a[k].shape == b[k].shape for k in a)


def test_official_weights_give_the_official_outputs():
    """Round trip: official modules -> state dicts -> fastt2i (reference backend) -> same numbers -> back."""
    cfg = DFGANConfig(imsize=64, ngf=4, ndf=4)
    offG, offD, offC = [_randomise(m, i) for i, m in enumerate(_official_triplet(cfg))]
    state = {"model": {"netG": offG.state_dict(), "netD": offD.state_dict(), "netC": offC.state_dict()},
             "optimizers": {}, "epoch": 1220}
    ours = load_official_state_dict(DFGAN(cfg), state)
    torch.manual_seed(1)
    noise, sent = torch.randn(3, 100), torch.randn(3, 256)
    with ops.use_backend("reference"):
        img = ours.netG(noise, sent)
        logit = ours.netC(ours.netD(img), sent)
    # fp32 max-norm relative error (the DFBLK MLPs run as batched matmuls: not bit-equal)
    assert_rel_close(img, offG(noise, sent), 1e-5, "G")
    assert_rel_close(logit, offC(offD(img), sent), 1e-5, "D+C")
    back = _official_triplet(cfg)
    for net, name in zip(back, ("netG", "netD", "netC")):
        net.load_state_dict(getattr(ours, name).state_dict())  # strict: fastt2i's names are the official ones


def test_load_official_files(tmp_path):
    cfg = DFGANConfig(imsize=64, ngf=4, ndf=4)
    src = _randomise(DFGAN(cfg), 3)
    state = {"model": {k: {f"module.{n}": t for n, t in getattr(src, k).state_dict().items()}  # DDP-saved
                       for k in ("netG", "netD", "netC")},
             "optimizers": {"optimizer_G": {}, "optimizer_D": {}}, "epoch": 7}
    path = tmp_path / "state_epoch_007.pth"
    torch.save(state, path)
    dst = load_official_state_dict(DFGAN(cfg), str(path))
    for k in ("netG", "netD", "netC"):
        for (n, a), b in zip(getattr(dst, k).state_dict().items(), getattr(src, k).state_dict().values()):
            assert torch.equal(a, b), n
    g = load_official_state_dict(NetG(4, imsize=64), str(path))  # a NetG from the training state
    assert torch.equal(g.fc.weight, src.netG.fc.weight)
    torch.save(src.netG.state_dict(), tmp_path / "netG.pth")  # a plain netG file
    g = load_official_state_dict(NetG(4, imsize=64), str(tmp_path / "netG.pth"))
    assert torch.equal(g.to_rgb[1].weight, src.netG.to_rgb[1].weight)
    d = load_official_state_dict(NetD(4, 64), state)
    assert torch.equal(d.conv_img.weight, src.netD.conv_img.weight)
    enc = RNNEncoder(12)
    torch.save(enc.state_dict(), tmp_path / "text_encoder200.pth")  # the DAMSM text encoder file
    enc2 = load_official_state_dict(RNNEncoder(12), str(tmp_path / "text_encoder200.pth"))
    assert torch.equal(enc2.encoder.weight, enc.encoder.weight)


def test_mismatch_is_a_clear_error(tmp_path):
    small = DFGAN(DFGANConfig(imsize=64, ngf=4, ndf=4))
    state = {"model": {k: getattr(small, k).state_dict() for k in ("netG", "netD", "netC")}}
    with pytest.raises(StateDictMismatchError) as err:
        load_official_state_dict(DFGAN(DFGANConfig(imsize=128, ngf=4, ndf=4)), state)
    msg = str(err.value)
    assert "missing keys" in msg and "GBlocks.4" in msg and "netG" in msg
    bad = dict(small.netG.state_dict())
    bad["extra.weight"] = torch.zeros(1)
    del bad["fc.bias"]
    with pytest.raises(StateDictMismatchError) as err:
        load_official_state_dict(NetG(4, imsize=64), bad)
    assert "missing keys (1): ['fc.bias']" in str(err.value) and "unexpected keys (1): ['extra.weight']" in str(err.value)
    with pytest.raises(StateDictMismatchError, match="shape mismatches"):
        load_official_state_dict(NetG(8, imsize=64), small.netG.state_dict())
    with pytest.raises(StateDictMismatchError, match="missing keys"):
        load_official_state_dict(RNNEncoder(12), small.netC.state_dict())
    with pytest.raises(FileNotFoundError, match="file not found"):
        load_official_state_dict(NetG(4, imsize=64), str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_official_state_dict(NetG(4, imsize=64), str(tmp_path / "junk.pth"))
    with pytest.raises(ValueError, match="training state file"):
        load_official_state_dict(DFGAN(DFGANConfig(imsize=64, ngf=4, ndf=4)), small.netG.state_dict())


# ----------------------------------------------------------------------------- backends agree

def _d_and_g_grads(model, imgs, sent, noise):
    """The official D loss (hinge + mismatched + MA-GP) and G loss; their parameter gradients."""
    model.zero_grad(set_to_none=True)
    imgs = imgs.clone().requires_grad_()
    sent = sent.clone().requires_grad_()
    real = model.netD(imgs)
    pred_real = model.netC(real, sent)
    mis = torch.cat((real[1:], real[:1]))
    fake = model.netG(noise, sent)
    err_d = (F.relu(1 - pred_real).mean()
             + (F.relu(1 + model.netC(model.netD(fake.detach()), sent)).mean()
                + F.relu(1 + model.netC(mis, sent)).mean()) / 2
             + ma_gradient_penalty(pred_real, imgs, sent))
    d_params = list(model.netD.parameters()) + list(model.netC.parameters())
    # the last D_Blocks keep an unused conv_s, as the official model: its gradient is None
    d_grads = torch.autograd.grad(err_d, d_params, allow_unused=True)
    d_grads = [torch.zeros_like(p) if g is None else g for p, g in zip(d_params, d_grads)]
    err_g = -model.netC(model.netD(fake), sent).mean()
    g_grads = torch.autograd.grad(err_g, list(model.netG.parameters()))
    return fake.detach(), err_d.detach(), d_grads, g_grads


@pytest.mark.slow
@pytest.mark.parametrize("backend", fused_backends())
@pytest.mark.parametrize("channels_last", [False, True])
def test_backends_agree_on_the_whole_model(backend, channels_last):
    if backend == "triton" and channels_last:
        pytest.skip("one Triton run is enough on the CPU interpreter (slow)")
    cfg = DFGANConfig(imsize=64, ngf=4, ndf=4)
    torch.manual_seed(0)
    model = _randomise(DFGAN(cfg), 5)
    g = torch.Generator().manual_seed(2)
    imgs = torch.rand(3, 3, 64, 64, generator=g) * 2 - 1
    sent, noise = torch.randn(3, 256, generator=g), torch.randn(3, 100, generator=g)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        imgs = imgs.contiguous(memory_format=torch.channels_last)
    with ops.use_backend("reference"):
        ref = _d_and_g_grads(model, imgs, sent, noise)
    with ops.use_backend(backend):
        got = _d_and_g_grads(model, imgs, sent, noise)
    assert rel_error(got[0], ref[0]) <= 1e-4, "G output"
    assert rel_error(got[1], ref[1]) <= 1e-4, "D loss"
    names_d = [n for n, _ in model.netD.named_parameters()] + [n for n, _ in model.netC.named_parameters()]
    for name, a, b in zip(names_d, got[2], ref[2]):
        assert rel_error(a, b) <= 1e-4, f"D grad {name}: {rel_error(a, b):.2e}"
    for (name, _), a, b in zip(model.netG.named_parameters(), got[3], ref[3]):
        assert rel_error(a, b) <= 1e-4, f"G grad {name}: {rel_error(a, b):.2e}"


def test_input_validation():
    g = NetG(4, imsize=64)
    with pytest.raises(ValueError, match="noise"):
        g(torch.randn(2, 99), torch.randn(2, 256))
    with pytest.raises(ValueError, match="c: expected"):
        g(torch.randn(2, 100), torch.randn(3, 256))
    with pytest.raises(ValueError, match="features"):
        NetC(4)(torch.randn(2, 16, 4, 4), torch.randn(2, 256))
