"""DR-GAN against the draft code's transcription (fastt2i.official.drgan): same state dict -> same
images, attention, SDL, D losses with DNM, G loss and parameter gradients, on every backend that
runs here (preset ``draft``, ``official_mask=True``).  As for AttnGAN: whole-network gradients in
float64 on both sides (<= 1e-5), float32 outputs and losses within 1e-5 of the float32
transcription.  The paper preset is checked where it departs from the draft (the doubled KL,
the SDL's form), and the spatial gate on its own."""
import pytest
import torch
from torch import nn

from fastt2i import ops
from fastt2i.losses import kl_loss
from fastt2i.losses.drgan import discriminator_loss, generator_loss, semantic_disentangling_loss
from fastt2i.models import attngan
from fastt2i.models._checkpoint import FamilyMismatchError, StateDictMismatchError
from fastt2i.models.drgan import (
    DRGAN,
    G_NET,
    DRGANConfig,
    SpectralNorm,
    gate_split,
    load_official_state_dict,
)
from fastt2i.official import drgan as official

from helpers import backend_params, fused_backend_names, rel_error

NON_TRITON = backend_params("reference", *(b for b in fused_backend_names() if b != "triton"))
WITH_TRITON_F32 = backend_params("reference", *fused_backend_names())
TINY = dict(gf_dim=4, df_dim=2, r_num=1)
LAMBDA = 5.0


class TinyImageEncoder(nn.Module):
    """Stands in for the DAMSM Inception encoder (the same module on both sides): regions and code."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 256, 32, 32)
        self.fc = nn.Linear(256, 256)

    def forward(self, x):
        regions = self.conv(x)
        return regions, self.fc(regions.mean((2, 3)))


def _pair(config, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ours = DRGAN(config)
    c = config
    og = official.G_NET(c.gf_dim, c.embedding_dim, c.condition_dim, c.z_dim, c.r_num, c.branch_num)
    og.load_state_dict(ours.netG.state_dict())
    ods = [cls(c.df_dim, c.embedding_dim, c.condition_dim) for cls in
           (official.D_NET64, official.D_NET128, official.D_NET256)][:c.branch_num]
    for o, d in zip(ods, ours.netsD):
        o.load_state_dict(d.state_dict())
    enc = TinyImageEncoder().to(dtype)
    return ours.to(dtype), og.to(dtype), [o.to(dtype) for o in ods], enc


def _inputs(B=3, T=7, lens=(7, 4, 2), dtype=torch.float64, sizes=(64, 128, 256), seed=1):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, 100, generator=g).to(dtype)
    sent = torch.randn(B, 256, generator=g).to(dtype)
    words = torch.randn(B, 256, T, generator=g).to(dtype)
    lens = torch.tensor(lens[:B])
    valid = torch.arange(T)[None] < lens[:, None]
    words = words * valid[:, None]
    reals = [torch.rand(B, 3, s, s, generator=g).to(dtype) * 2 - 1 for s in sizes]
    return z, sent, words, lens, ~valid, reals


def _official_step(og, ods, enc, inputs):
    z, sent, words, lens, mask, reals = inputs
    B = z.shape[0]
    torch.manual_seed(5)
    fake, att, mu, logvar, sdl = og(z, sent, words, mask, reals)
    real_labels, fake_labels = torch.ones(B, dtype=z.dtype), torch.zeros(B, dtype=z.dtype)
    errDs = []
    for i, d in enumerate(ods):
        d.zero_grad()
        errD = official.discriminator_loss(d, reals[i], fake[i], sent, real_labels, fake_labels, fake[0], reals[0])
        errD.backward()
        errDs.append(errD.detach())
    d_grads = {f"{i}.{n}": p.grad.clone() for i, d in enumerate(ods) for n, p in d.named_parameters()
               if p.grad is not None}
    og.zero_grad()
    errG = official.generator_loss(ods, enc, fake, real_labels, words, sent, torch.arange(B), lens, None, sdl,
                                   LAMBDA)
    errG = errG + official.KL_loss(mu, logvar)
    errG.backward()
    return fake, att, errDs, errG.detach(), d_grads, {n: p.grad.clone() for n, p in og.named_parameters()}, sdl


def _our_step(ours, enc, inputs):
    z, sent, words, lens, mask, reals = inputs
    torch.manual_seed(5)
    fake, att, mu, logvar, sdm = ours.netG(z, sent, words, mask, real_imgs=reals)
    errDs = []
    for i, d in enumerate(ours.netsD):
        d.zero_grad()
        errD, _ = discriminator_loss(d, reals[i], fake[i], sent, reals[0], fake[0], draft=ours.config.draft)
        errD.backward()
        errDs.append(errD.detach())
    d_grads = {f"{i}.{n}": p.grad.clone() for i, d in enumerate(ours.netsD) for n, p in d.named_parameters()}
    ours.zero_grad()
    errG, parts = generator_loss(ours.netsD, enc, fake, words, sent, lens, sdm, lambda_damsm=LAMBDA,
                                 draft=ours.config.draft)
    errG = errG + kl_loss(mu, logvar)
    errG.backward()
    return fake, att, errDs, errG.detach(), d_grads, {n: p.grad.clone() for n, p in ours.netG.named_parameters()}, \
        parts["sdl"]


def _max_rel(xs, ys):
    return max(rel_error(x, y) for x, y in zip(xs, ys))


def _max_rel_named(mine: dict, ref: dict):
    """Per parameter, relative to the largest gradient of the network: a conv bias right before a
    BatchNorm has a zero gradient up to rounding, which a per-tensor relative error would inflate."""
    assert set(mine) == set(ref), sorted(set(mine) ^ set(ref))
    scale = max(v.abs().max().item() for v in ref.values())
    return max((mine[k] - ref[k]).abs().max().item() for k in mine) / scale


# ----------------------------------------------------------------------------- the gate

def test_gate_split_per_channel_and_broadcast():
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    for logits in (torch.randn(2, 5, 3, 4, dtype=torch.float64), torch.randn(2, 1, 3, 4, dtype=torch.float64)):
        key, nonkey = gate_split(logits, x)
        m = 1.0 / (1.0 + torch.exp(-logits))
        assert rel_error(key, m * x) <= 1e-14 and rel_error(nonkey, (1 - m) * x) <= 1e-14
        assert torch.allclose(key + nonkey, x)
    lg = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    xs = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: gate_split(a, b), (lg, xs))


def test_gate_split_rejects_bad_shapes():
    x = torch.randn(2, 5, 3, 4)
    with pytest.raises(ValueError, match=r"gate_logits: expected shape \(B=2, 1, H=3, W=4\) or x's shape \(2, 5, 3, 4\)"):
        gate_split(torch.randn(2, 2, 3, 4), x)
    with pytest.raises(ValueError, match="x: expected"):
        gate_split(torch.randn(2, 1, 3), torch.randn(2, 5, 3))


# ----------------------------------------------------------------------------- names, presets

def test_parameter_names_and_shapes_are_the_draft_ones():
    c = DRGANConfig(draft=True, **TINY)
    ours, og, ods, _ = _pair(c, torch.float32)
    assert {k: tuple(v.shape) for k, v in ours.netG.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in og.state_dict().items()}
    for o, d in zip(ods, ours.netsD):
        assert {k: tuple(v.shape) for k, v in d.state_dict().items()} == \
            {k: tuple(v.shape) for k, v in o.state_dict().items()}
    keys = set(ours.netG.state_dict())
    for k in ("h_net2.reduct_demension.0.weight", "h_net2.reduct_demension2.4.running_var",
              "h_net3.img_code_sxx.3.weight", "h_net2.global_reduction.0.bias", "h_net2.residual0.0.block.0.weight",
              "img_net1.img.6.weight"):
        assert k in keys, k
    dkeys = set(ours.netsD[2].state_dict())
    for k in ("img_code_s16.0.module.weight_bar", "img_code_s16.0.module.weight_u", "COND_DNET.jointConv.0.module.bias",
              "ca_net.fc.weight", "h_net1.fc.0.weight", "img_code_s1.0.weight", "global_reduction.0.weight"):
        assert k in dkeys, k


def test_presets():
    birds, coco, draft = DRGANConfig.preset("birds"), DRGANConfig.preset("coco"), DRGANConfig.preset("draft")
    assert (birds.gf_dim, birds.df_dim, birds.lambda_damsm, birds.draft) == (64, 32, 5.0, False)
    assert (coco.lambda_damsm, coco.draft) == (50.0, False)
    assert draft.draft and draft.gf_dim == 64 and draft.lambda_damsm == 5.0
    assert DRGANConfig.from_dict(draft.to_dict()) == draft
    with pytest.raises(ValueError, match="preset"):
        DRGANConfig.preset("paper2")
    with pytest.raises(ValueError, match="b_dcgan"):
        DRGANConfig(b_dcgan=True)


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("backend", NON_TRITON)  # the Triton kernels take no float64: fp32 parity below
def test_float64_parity_with_the_draft_code(backend):
    """Images, attention, SDL, D losses (with DNM), G loss (adversarial + DAMSM + SDL + KL) and
    every gradient of G and of the Ds."""
    ops.set_backend(backend)
    ours, og, ods, enc = _pair(DRGANConfig(draft=True, official_mask=True, **TINY))
    inputs = _inputs()
    o = _official_step(og, ods, enc, inputs)
    f = _our_step(ours, enc, inputs)
    assert _max_rel(f[0], o[0]) <= 1e-10, "images"
    assert _max_rel(f[1], o[1]) <= 1e-10, "attention maps"
    assert rel_error(f[6], o[6]) <= 1e-10, "SDL"
    assert _max_rel(f[2], o[2]) <= 1e-10, "D losses"
    assert rel_error(f[3], o[3]) <= 1e-10, "G loss"
    assert _max_rel_named(f[4], o[4]) <= 1e-5, "D gradients"
    assert _max_rel_named(f[5], o[5]) <= 1e-5, "G gradients"


@pytest.mark.parametrize("backend", WITH_TRITON_F32)
def test_float32_outputs_and_losses(backend):
    ops.set_backend(backend)
    ours, og, ods, enc = _pair(DRGANConfig(draft=True, official_mask=True, branch_num=2, **TINY), torch.float32)
    inputs = _inputs(dtype=torch.float32, sizes=(64, 128))
    o = _official_step(og, ods, enc, inputs)
    f = _our_step(ours, enc, inputs)
    assert _max_rel(f[0], o[0]) <= 1e-5, "images"
    assert _max_rel(f[1], o[1]) <= 1e-5, "attention maps"
    assert rel_error(f[6], o[6]) <= 1e-5, "SDL"
    assert _max_rel(f[2], o[2]) <= 1e-5, "D losses"
    assert rel_error(f[3], o[3]) <= 1e-5, "G loss"


def test_spectral_norm_matches_the_draft_wrapper():
    torch.manual_seed(0)
    ours = SpectralNorm(nn.Conv2d(3, 5, 3, 1, 1)).double()
    theirs = official.SpectralNorm(nn.Conv2d(3, 5, 3, 1, 1)).double()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    for _ in range(3):  # u, v advance one power iteration per forward on both sides
        assert rel_error(ours(x), theirs(x)) <= 1e-12
    w = ours.module.weight_bar.reshape(5, -1)
    for _ in range(200):
        ours(x)
    sigma = torch.linalg.matrix_norm(w.detach(), 2)
    assert rel_error(ours.normalised_weight().reshape(5, -1).detach() * sigma, w.detach()) <= 1e-6


# ----------------------------------------------------------------------------- paper vs draft

def test_paper_and_draft_differ_by_the_doubled_kl():
    """The draft adds the real branch's KL twice and drops the fake branch's; the rest is equal."""
    ops.set_backend("reference")
    c = DRGANConfig(branch_num=1, **TINY)
    model = DRGAN(c).double()
    d = model.netsD[0]
    state = {k: v.clone() for k, v in d.state_dict().items()}  # BN statistics and u, v move each call
    z, sent, words, lens, mask, reals = _inputs(sizes=(64,))
    fake = torch.rand_like(reals[0]) * 2 - 1
    noise = tuple(torch.randn(3, 100, dtype=torch.float64) for _ in range(4))
    paper, pp = discriminator_loss(d, reals[0], fake, sent, reals[0], fake, draft=False, noise=noise)
    d.load_state_dict(state)
    draft, dp = discriminator_loss(d, reals[0], fake, sent, reals[0], fake, draft=True, noise=noise)
    d.load_state_dict(state)
    _, mu_r, lv_r = d.normalise(d.features(reals[0])[1], sent, noise[0], noise[1])
    _, mu_f, lv_f = d.normalise(d.features(fake)[1], sent, noise[2], noise[3])
    kl_r, kl_f = kl_loss(mu_r, lv_r), kl_loss(mu_f, lv_f)
    assert abs(kl_r - kl_f) > 1e-3
    assert rel_error(dp["dnm_kl"], 2 * kl_r) <= 1e-12
    assert rel_error(pp["dnm_kl"], kl_r + kl_f) <= 1e-12
    assert rel_error(draft - paper, kl_r - kl_f) <= 1e-9
    for k in ("cond_real", "cond_fake", "cond_wrong", "real", "fake", "dnm_rec"):
        assert rel_error(dp[k], pp[k]) <= 1e-12, k


def _sdm(key, nonkey, real, B=4):
    f = {"key_q": key, "nonkey_q": nonkey, "key_h": key, "nonkey_h": nonkey, "real": real,
         "recon": torch.zeros(B, 3, 64, 64, dtype=torch.float64), "real_img": torch.zeros(B, 3, 64, 64,
                                                                                         dtype=torch.float64)}
    return [f]


def test_paper_sdl_rewards_key_parts_close_to_the_real_features():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(4, 6, generator=g, dtype=torch.float64)
    far = real * 3 + 5
    good, parts = semantic_disentangling_loss(_sdm(real.clone(), far, real))
    bad, _ = semantic_disentangling_loss(_sdm(far, real.clone(), real))
    assert good < 1e-3 and bad > 10.0
    # the batch variance, not the draft's squared sum of deviations (which is zero)
    shifted = real + 7.0  # same variance, other mean
    _, p = semantic_disentangling_loss(_sdm(shifted, shifted * 0 + real.mean(0), real))
    assert p["sdl_h2"] > 1.0
    draft_total, dparts = semantic_disentangling_loss(_sdm(real.clone(), far, real), draft=True)
    assert abs(dparts["exp_var2"].item() - 2.0) <= 1e-9  # exp(~0) + exp(~0): the draft's "variance" is ~0
    assert draft_total > 10.1 ** 0  # 10.1 ** (...) >= 1


def test_paper_preset_trains_the_gate_without_the_batch_scaling():
    torch.manual_seed(0)
    paper, draft = G_NET(DRGANConfig(branch_num=2, **TINY)), G_NET(DRGANConfig(draft=True, branch_num=2, **TINY))
    draft.load_state_dict(paper.state_dict())
    z, sent, words, lens, mask, reals = _inputs(dtype=torch.float32, sizes=(64, 128))
    eps = torch.randn(3, 100)
    a = paper(z, sent, words, mask, eps)[0][1]
    b = draft(z, sent, words, mask, eps)[0][1]
    assert rel_error(a, b) > 1e-4  # sigma(f) vs sigma(f / B)


# ----------------------------------------------------------------------------- files and bad inputs

def test_draft_files_load_with_their_unused_modules(tmp_path):
    c = DRGANConfig(**TINY)
    src = DRGAN(c)
    g_state = dict(src.netG.state_dict())
    g_state["h_net2.global_reductionxx.0.weight"] = torch.zeros(256, c.gf_dim, 1, 1)  # draft-only, unused
    torch.save(g_state, tmp_path / "netG_epoch_1.pth")
    d_state = dict(src.netsD[2].state_dict())
    d_state["h_net2.att.conv_context.weight"] = torch.zeros(32, 256, 1, 1)  # D_NET256's unused G copies
    d_state["fc.0.weight"] = torch.zeros(4, 200)
    torch.save(d_state, tmp_path / "netD2.pth")
    dst = DRGAN(c)
    load_official_state_dict(dst.netG, str(tmp_path / "netG_epoch_1.pth"))
    load_official_state_dict(dst.netsD[2], str(tmp_path / "netD2.pth"))
    for k, v in src.netG.state_dict().items():
        assert torch.equal(v, dst.netG.state_dict()[k]), k
    assert torch.equal(src.netsD[2].img_code_s16[0].module.weight_bar, dst.netsD[2].img_code_s16[0].module.weight_bar)
    two = DRGAN(DRGANConfig(branch_num=2, **TINY))
    with pytest.raises(StateDictMismatchError, match="3 stages"):
        load_official_state_dict(two.netG, str(tmp_path / "netG_epoch_1.pth"))


def test_other_family_checkpoint_is_refused():
    a = attngan.AttnGAN(attngan.AttnGANConfig(gf_dim=4, df_dim=2, r_num=1))
    g = G_NET(DRGANConfig(**TINY))
    with pytest.raises((StateDictMismatchError, FamilyMismatchError)):
        load_official_state_dict(g, a.netG.state_dict())
    with pytest.raises((StateDictMismatchError, FamilyMismatchError)):
        load_official_state_dict(DRGAN(DRGANConfig(**TINY)).netsD[0], a.netsD[0].state_dict())


def test_bad_inputs_give_clear_errors():
    c = DRGANConfig(branch_num=2, **TINY)
    model = DRGAN(c)
    z, sent, words, lens, mask, reals = _inputs(dtype=torch.float32, sizes=(64, 128))
    with pytest.raises(ValueError, match=r"real image of this stage: expected \(B, 3, 64, 64\)"):
        model.netG(z, sent, words, mask, real_imgs=[reals[1]])
    with pytest.raises(ValueError, match="real_imgs: expected the real images of the first 1 stages"):
        model.netG(z, sent, words, mask, real_imgs=[])
    with pytest.raises(ValueError, match=r"real64: expected \(3, 3, 64, 64\)"):
        discriminator_loss(model.netsD[0], reals[0], reals[0], sent, reals[1], reals[0])
    with pytest.raises(ValueError, match="sent_emb: expected"):
        model.netsD[0].normalise(model.netsD[0].features(reals[0])[1], sent[:, :10])
    with pytest.raises(ValueError, match="lacks"):
        semantic_disentangling_loss([{"key_q": sent}])
    with pytest.raises(ValueError, match="gf_dim"):
        G_NET(DRGANConfig(gf_dim=6, df_dim=2, r_num=1))


@pytest.mark.parametrize("backend", NON_TRITON)
def test_bf16_autocast_channels_last_step_is_finite(backend):
    """The fast path: bf16 autocast and channels_last through G (with RIRM; the gates on the fused
    op), the D loss with DNM and the G loss; spectral norm keeps its power iteration in float32."""
    ops.set_backend(backend)
    c = DRGANConfig(branch_num=2, **TINY)
    model = DRGAN(c).to(memory_format=torch.channels_last)
    z, sent, words, lens, mask, reals = _inputs(dtype=torch.float32, sizes=(64, 128))
    reals = [x.contiguous(memory_format=torch.channels_last) for x in reals]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fake, _, mu, logvar, sdm = model.netG(z, sent, words, mask, real_imgs=reals)
        errD = sum(discriminator_loss(d, reals[i], fake[i], sent, reals[0], fake[0])[0]
                   for i, d in enumerate(model.netsD))
        errG, _ = generator_loss(model.netsD, None, fake, words, sent, lens, sdm, lambda_damsm=0.0)
        errG = errG + kl_loss(mu, logvar)
    errD.backward(inputs=list(model.netsD.parameters()))
    errG.backward(inputs=list(model.netG.parameters()))
    assert torch.isfinite(errD) and torch.isfinite(errG)
    assert model.netsD[0].img_code_s16[0].module.weight_u.dtype == torch.float32
    assert all(torch.isfinite(p.grad).all() for p in model.netG.parameters() if p.grad is not None)
