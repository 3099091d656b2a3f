"""AttnGAN against the official code (fastt2i.official.attngan): same state dict -> same images,
attention, D outputs, D and G losses and parameter gradients, on every backend that runs here.

Whole-network gradients are compared in float64 on both sides (<= 1e-5 relative, per
tensor); float32 outputs (and each network's gradients as one vector) are compared with the
official float64 result within twice the official code's own float32 error (at least 1e-5) (the official float32 run differs from its float64 run by up to ~1e-3 in
gradients, see SPEC.md "AttnGAN parity in practice").  The generator uses ``official_mask=True``
for these comparisons; a separate test shows what the fixed mask changes.
"""
import os

import numpy as np
import pytest
import torch
from torch import nn

from fastt2i import ops
from fastt2i.losses import discriminator_loss, generator_loss, kl_loss
from fastt2i.models.attngan import (
    D_NET64,
    D_NET128,
    D_NET256,
    G_DCGAN,
    G_NET,
    AttnGAN,
    AttnGANConfig,
    StateDictMismatchError,
    load_official_state_dict,
    save_official,
    weights_init,
)
from fastt2i.official import attngan as official

from helpers import backend_params, fused_backend_names, rel_error, requires_backend

# float64 parity runs on every backend that takes float64 (Triton has its own float32 test below)
NON_TRITON = backend_params("reference", *(b for b in fused_backend_names() if b != "triton"))
TINY = dict(gf_dim=2, df_dim=2, r_num=1)


class TinyImageEncoder(nn.Module):
    """A stand-in for CNN_ENCODER (Inception at 299 is too slow for these tests; it has its own
    parity test): (B, 3, S, S) -> regions (B, 256, 17, 17), code (B, 256)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 256, 1)
        self.fc = nn.Linear(3, 256)

    def forward(self, x):
        regions = self.conv(nn.functional.adaptive_avg_pool2d(x, 17))
        return regions, self.fc(x.mean(dim=(2, 3)))


def _pair(config, dtype=torch.float64, seed=0):
    """(ours, official G, official Ds, image encoder) with one officially initialised state."""
    torch.manual_seed(seed)
    ours = AttnGAN(config)
    c = config
    og = official.G_NET(c.gf_dim, c.embedding_dim, c.condition_dim, c.z_dim, c.r_num, c.branch_num)
    og.load_state_dict(ours.netG.state_dict())
    ods = [cls(c.df_dim, c.embedding_dim) for cls in (official.D_NET64, official.D_NET128, official.D_NET256)]
    ods = ods[:c.branch_num]
    for o, d in zip(ods, ours.netsD):
        o.load_state_dict(d.state_dict())
    enc = TinyImageEncoder()
    return ours.to(dtype), og.to(dtype), [o.to(dtype) for o in ods], enc.to(dtype)


def _inputs(B=3, T=7, lens=(7, 4, 2), dtype=torch.float64, sizes=(64, 128, 256), seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, 100, generator=g).to(dtype)
    sent = torch.randn(B, 256, generator=g).to(dtype)
    words = torch.randn(B, 256, T, generator=g).to(dtype)
    lens = torch.tensor(lens[:B])
    words = words * (torch.arange(T)[None, None] < lens[:, None, None])  # zeros past each length, as the LSTM
    mask = torch.arange(T)[None] >= lens[:, None]
    reals = [torch.rand(B, 3, s, s, generator=g).to(dtype) * 2 - 1 for s in sizes]
    return z, sent, words, lens, mask, reals


def _official_step(og, ods, enc, inputs, class_ids=None, lam=5.0):
    """Official forward, per-stage D losses and G loss, with their gradients."""
    z, sent, words, lens, mask, reals = inputs
    B = z.shape[0]
    torch.manual_seed(5)
    fake, att, mu, logvar = og(z, sent, words, mask)
    real_labels = torch.ones(B, dtype=z.dtype)
    fake_labels = torch.zeros(B, dtype=z.dtype)
    errDs = []
    for i, d in enumerate(ods):
        d.zero_grad()
        errD = official.discriminator_loss(d, reals[i], fake[i], sent, real_labels, fake_labels)
        errD.backward()
        errDs.append(errD.detach())
    d_grads = [p.grad.clone() for d in ods for p in d.parameters()]
    og.zero_grad()
    for d in ods:
        d.zero_grad()
    errG = official.generator_loss(ods, enc, fake, real_labels, words, sent, torch.arange(B), lens, class_ids, lam)
    errG = errG + official.KL_loss(mu, logvar)
    errG.backward()
    g_grads = [p.grad.clone() for p in og.parameters()]
    return fake, att, errDs, errG.detach(), d_grads, g_grads


def _our_step(ours, enc, inputs, class_ids=None, lam=5.0):
    z, sent, words, lens, mask, reals = inputs
    torch.manual_seed(5)
    fake, att, mu, logvar = ours.netG(z, sent, words, mask)
    errDs = []
    for i, d in enumerate(ours.netsD):
        d.zero_grad()
        errD, _ = discriminator_loss(d, reals[i], fake[i], sent)
        errD.backward()
        errDs.append(errD.detach())
    d_grads = [p.grad.clone() for d in ours.netsD for p in d.parameters()]
    ours.zero_grad()
    errG, _ = generator_loss(ours.netsD, enc, fake, words, sent, lens, class_ids, lam)
    errG = errG + kl_loss(mu, logvar)
    errG.backward()
    g_grads = [p.grad.clone() for p in ours.netG.parameters()]
    return fake, att, errDs, errG.detach(), d_grads, g_grads


def _max_rel(xs, ys):
    return max(rel_error(x, y) for x, y in zip(xs, ys))


def _flat(tensors):
    """All of a network's gradients as one vector: in float32 the relative error of one small
    tensor is noise (the official float32 run itself is off by 1e-4 there), of the whole is not."""
    return torch.cat([t.double().flatten() for t in tensors])


# ----------------------------------------------------------------------------- names, init, configs

def test_parameter_names_and_shapes_are_the_official_ones():
    c = AttnGANConfig(**TINY)
    ours = AttnGAN(c)
    og = official.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3)
    assert {k: tuple(v.shape) for k, v in ours.netG.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in og.state_dict().items()}
    for d, o in zip(ours.netsD, (official.D_NET64(2), official.D_NET128(2), official.D_NET256(2))):
        assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == \
            {k: tuple(v.shape) for k, v in o.state_dict().items()}
    # a few official keys spelled out (bird_AttnGAN2.pth has them)
    keys = set(ours.netG.state_dict())
    for k in ("ca_net.fc.weight", "h_net1.fc.0.weight", "h_net1.fc.1.running_var", "h_net1.upsample4.1.weight",
              "h_net2.att.conv_context.weight", "h_net2.residual.0.block.4.weight", "h_net3.upsample.2.bias",
              "img_net3.img.0.weight"):
        assert k in keys, k
    assert "COND_DNET.jointConv.0.weight" in ours.netsD[2].state_dict()
    assert "UNCOND_DNET.outlogits.0.bias" in ours.netsD[0].state_dict()


def test_official_init():
    torch.manual_seed(0)
    m = AttnGAN(AttnGANConfig(**TINY))
    w = m.netG.h_net2.residual[0].block[0].weight.flatten(1)
    assert torch.allclose(w @ w.t(), torch.eye(w.shape[0]), atol=1e-5)  # orthogonal rows
    bn = m.netG.h_net1.fc[1]
    assert 0.9 < bn.weight.mean() < 1.1 and 0.005 < bn.weight.std() < 0.05 and bn.bias.abs().max() == 0
    assert m.netG.ca_net.fc.bias.abs().max() == 0


def test_configs_follow_the_official_yml():
    b, c = AttnGANConfig.birds(), AttnGANConfig.coco()
    assert (b.gf_dim, b.df_dim, b.r_num, b.batch_size, b.lambda_damsm, b.words_num) == (32, 64, 2, 20, 5.0, 18)
    assert (c.gf_dim, c.df_dim, c.r_num, c.batch_size, c.lambda_damsm, c.words_num) == (48, 96, 3, 14, 50.0, 12)
    assert b.betas == (0.5, 0.999) and b.lr_g == b.lr_d == 2e-4 and b.imsize == 256
    with pytest.raises(ValueError, match="branch_num"):
        AttnGANConfig(branch_num=4)
    with pytest.raises(ValueError, match="preset"):
        AttnGANConfig.preset("cats")


# ----------------------------------------------------------------------------- parity, float64

@pytest.mark.parametrize("backend", NON_TRITON)
def test_float64_parity_with_the_official_code(backend):
    """Images, attention maps, D losses, G loss and every parameter gradient, float64 both sides."""
    ops.set_backend(backend)
    ours, og, ods, enc = _pair(AttnGANConfig(official_mask=True, **TINY))
    inputs = _inputs()
    class_ids = np.array([3, 5, 3])  # masks the (0, 2) pairs in the DAMSM losses
    o = _official_step(og, ods, enc, inputs, class_ids)
    f = _our_step(ours, enc, inputs, class_ids)
    assert _max_rel(f[0], o[0]) <= 1e-10, "images"
    assert _max_rel(f[1], o[1]) <= 1e-10, "attention maps"
    assert _max_rel(f[2], o[2]) <= 1e-10, "D losses"
    assert rel_error(f[3], o[3]) <= 1e-10, "G loss"
    assert _max_rel(f[4], o[4]) <= 1e-5, "D gradients"
    assert _max_rel(f[5], o[5]) <= 1e-5, "G gradients"


@pytest.mark.parametrize("backend", NON_TRITON)
def test_discriminator_outputs_match(backend):
    ops.set_backend(backend)
    ours, _, ods, _ = _pair(AttnGANConfig(**TINY))
    _, sent, _, _, _, reals = _inputs()
    for d, o, x in zip(ours.netsD, ods, reals):
        feats, ofeats = d(x), o(x)
        assert rel_error(feats, ofeats) <= 1e-12
        assert rel_error(d.COND_DNET(feats, sent), o.COND_DNET(ofeats, sent)) <= 1e-12
        assert rel_error(d.UNCOND_DNET(feats), o.UNCOND_DNET(ofeats)) <= 1e-12
        assert rel_error(torch.sigmoid(d.COND_DNET.logits(feats, sent)), o.COND_DNET(ofeats, sent)) <= 1e-12


# ----------------------------------------------------------------------------- parity, float32

def _fp32_bound(official_error, floor=1e-5):
    """Twice the official code's own float32 error, and at least ``floor``."""
    return max(2.0 * official_error, floor)


@pytest.mark.parametrize("backend", [pytest.param(p.values[0], marks=[*p.marks, pytest.mark.slow])
                                     if p.values[0] == "reference" else p for p in NON_TRITON])
def test_float32_within_the_official_float32_error(backend):
    ops.set_backend(backend)
    config = AttnGANConfig(official_mask=True, **TINY)
    ours64, og64, ods64, enc64 = _pair(config, torch.float64)
    ours32, og32, ods32, enc32 = _pair(config, torch.float32)
    in64, in32 = _inputs(dtype=torch.float64), _inputs(dtype=torch.float32)
    ref = _official_step(og64, ods64, enc64, in64)
    off32 = _official_step(og32, ods32, enc32, in32)
    mine = _our_step(ours32, enc32, in32)
    for k, what in enumerate(("images", "attention", "D losses")):
        own = _max_rel(off32[k], ref[k])
        assert _max_rel(mine[k], ref[k]) <= _fp32_bound(own), what
    assert rel_error(mine[3], ref[3]) <= _fp32_bound(rel_error(off32[3], ref[3])), "G loss"
    for k, what in ((4, "D gradients"), (5, "G gradients")):
        own = rel_error(_flat(off32[k]), _flat(ref[k]))
        assert rel_error(_flat(mine[k]), _flat(ref[k])) <= _fp32_bound(own), what


@pytest.mark.slow
@requires_backend("triton")
def test_triton_matches_the_official_code_at_a_tiny_shape():
    """Two stages (attention at 64 x 64), batch 2, float32 (Triton takes no float64)."""
    ops.set_backend("triton")
    config = AttnGANConfig(official_mask=True, branch_num=2, **TINY)
    ours, og32, ods32, enc32 = _pair(config, torch.float32)
    _, og64, ods64, enc64 = _pair(config, torch.float64)
    in32 = _inputs(B=2, T=5, lens=(5, 3), dtype=torch.float32, sizes=(64, 128))
    in64 = _inputs(B=2, T=5, lens=(5, 3), dtype=torch.float64, sizes=(64, 128))
    ref = _official_step(og64, ods64, enc64, in64)
    off32 = _official_step(og32, ods32, enc32, in32)
    mine = _our_step(ours, enc32, in32)
    for k in range(3):
        assert _max_rel(mine[k], ref[k]) <= _fp32_bound(_max_rel(off32[k], ref[k]))
    for k in (4, 5):
        assert rel_error(_flat(mine[k]), _flat(ref[k])) <= _fp32_bound(rel_error(_flat(off32[k]), _flat(ref[k])))


# ----------------------------------------------------------------------------- the attention mask

def test_fixed_mask_differs_from_the_official_one_only_with_unequal_lengths():
    config = AttnGANConfig(official_mask=False, **TINY)
    fixed, og, _, _ = _pair(config)
    z, sent, words, lens, mask, _ = _inputs()
    torch.manual_seed(5)
    img_fixed, att_fixed, _, _ = fixed.netG(z, sent, words, mask)
    torch.manual_seed(5)
    img_off, att_off, _, _ = og(z, sent, words, mask)
    # The fixed mask gives no attention to a caption's own padding words; the official one does.
    for att in att_fixed:
        assert att.masked_select(mask[:, :, None, None].expand_as(att)).abs().max() == 0
    leak = max(a.masked_select(mask[:, :, None, None].expand_as(a)).max().item() for a in att_off)
    assert leak > 1e-3
    assert rel_error(img_fixed[-1], img_off[-1]) > 1e-6
    # equal lengths: nothing to misalign, the two agree
    lens_eq = torch.tensor([7, 7, 7])
    mask_eq = torch.arange(7)[None] >= lens_eq[:, None]
    torch.manual_seed(5)
    a = fixed.netG(z, sent, words, mask_eq)[0][-1]
    torch.manual_seed(5)
    b = og(z, sent, words, mask_eq)[0][-1]
    assert rel_error(a, b) <= 1e-10


# ----------------------------------------------------------------------------- G_DCGAN, loading, errors

def test_g_dcgan_matches_the_official_structure_and_forward():
    config = AttnGANConfig(b_dcgan=True, official_mask=True, **TINY)
    m = AttnGAN(config)
    assert isinstance(m.netG, G_DCGAN) and len(m.netsD) == 1 and m.netsD[0].UNCOND_DNET is None
    assert "img_net.img.0.weight" in m.netG.state_dict() and "img_net1.img.0.weight" not in m.netG.state_dict()
    z, sent, words, _, mask, reals = _inputs(dtype=torch.float32)
    imgs, att, _, _ = m.netG(z, sent, words, mask)
    assert len(imgs) == 1 and imgs[0].shape == (3, 3, 256, 256) and len(att) == 2
    errD, parts = discriminator_loss(m.netsD[0], reals[2], imgs[0], sent)
    assert set(parts) == {"cond_real", "cond_fake", "cond_wrong"}
    expect = parts["cond_real"] + (parts["cond_fake"] + parts["cond_wrong"]) / 2
    assert torch.allclose(errD, expect)


def test_official_files_load(tmp_path):
    torch.manual_seed(0)
    og = official.G_NET(2, 256, 100, 100, 1, 3)
    og.apply(official.weights_init)
    path = tmp_path / "netG_epoch_600.pth"
    torch.save({"module." + k: v for k, v in og.state_dict().items()}, path)  # DataParallel-saved
    g = G_NET(AttnGANConfig(**TINY))
    load_official_state_dict(g, str(path))
    for k, v in og.state_dict().items():
        assert torch.equal(g.state_dict()[k], v), k
    d = official.D_NET128(4)
    d.apply(official.weights_init)
    torch.save(d.state_dict(), tmp_path / "netD1.pth")
    ours_d = load_official_state_dict(D_NET128(4), str(tmp_path / "netD1.pth"))
    assert torch.equal(ours_d.img_code_s32[0].weight, d.img_code_s32[0].weight)


def test_save_official_and_reload(tmp_path):
    m = AttnGAN(AttnGANConfig(**TINY))
    paths = save_official(m, str(tmp_path), 7)
    assert [os.path.basename(p) for p in paths] == ["netG_epoch_7.pth", "netD0.pth", "netD1.pth", "netD2.pth"]
    og = official.G_NET(2, 256, 100, 100, 1, 3)
    og.load_state_dict(torch.load(paths[0]))  # the official code reads it
    m2 = AttnGAN(AttnGANConfig(**TINY))
    load_official_state_dict(m2.netsD[2], paths[3])
    assert torch.equal(m2.netsD[2].img_code_s64_2[0].weight, m.netsD[2].img_code_s64_2[0].weight)


def test_stages_not_matching_the_checkpoint_are_named(tmp_path):
    og = official.G_NET(2, 256, 100, 100, 1, 3)
    torch.save(og.state_dict(), tmp_path / "g3.pth")
    with pytest.raises(StateDictMismatchError, match="3 stages.*2"):
        load_official_state_dict(G_NET(AttnGANConfig(branch_num=2, **TINY)), str(tmp_path / "g3.pth"))
    with pytest.raises(StateDictMismatchError, match="shape"):
        load_official_state_dict(G_NET(AttnGANConfig(gf_dim=8, df_dim=4, r_num=1)), str(tmp_path / "g3.pth"))
    with pytest.raises(FileNotFoundError):
        load_official_state_dict(G_NET(AttnGANConfig(**TINY)), str(tmp_path / "missing.pth"))


def test_bad_inputs_give_clear_errors():
    m = AttnGAN(AttnGANConfig(**TINY))
    z, sent, words, _, mask, reals = _inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match="z_code"):
        m.netG(z[:, :50], sent, words, mask)
    with pytest.raises(ValueError, match="word_embs"):
        m.netG(z, sent, words[:, :100], mask)
    with pytest.raises(ValueError, match="mask"):
        m.netG(z, sent, words, mask[:, :3])
    with pytest.raises(ValueError, match="D_NET128"):
        m.netsD[1](reals[0])
    with pytest.raises(ValueError, match="batch of >= 2"):
        discriminator_loss(m.netsD[0], reals[0][:1], reals[0][:1], sent[:1])


def test_weights_init_is_the_official_one():
    """Same draws in the same order as the official function."""
    torch.manual_seed(3)
    a = D_NET64(4)
    a.apply(weights_init)
    torch.manual_seed(3)
    b = official.D_NET64(4)
    b.apply(official.weights_init)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    assert D_NET256 and G_DCGAN  # exported
