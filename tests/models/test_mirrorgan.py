"""MirrorGAN against the official code (fastt2i.official.mirrorgan): same state dict -> same images,
attention, D and G losses (with the STREAM caption loss) and parameter gradients, on every
backend that runs here.  As for AttnGAN: whole-network gradients in float64 on both sides
(<= 1e-5), float32 within twice the official code's own float32 error; ``official_mask=True``
for the comparisons.  STREAM here is a random ResNet-18 at 32 x 32 (ResNet-152 at 224 is too slow
for a CPU test; the modules are the same code whatever the backbone)."""
import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from fastt2i import ops
from fastt2i.losses import discriminator_loss, kl_loss
from fastt2i.losses.attngan import adversarial_g_loss, damsm_g_loss
from fastt2i.losses.mirrorgan import caption_loss, generator_loss
from fastt2i.models.attngan import weights_init
from fastt2i.models.mirrorgan import (
    G_DCGAN,
    G_NET,
    GLAttentionGeneral,
    MirrorGAN,
    MirrorGANConfig,
    load_official_state_dict,
)
from fastt2i.models._checkpoint import StateDictMismatchError
from fastt2i.models.stream import STREAM
from fastt2i.official import attngan as official_attngan
from fastt2i.official import mirrorgan as official

from helpers import backend_params, fused_backend_names, rel_error

# float64 parity runs on every backend that takes float64 (Triton takes float32 only)
NON_TRITON = backend_params("reference", *(b for b in fused_backend_names() if b != "triton"))
TINY = dict(gf_dim=2, df_dim=2, r_num=1)
VOCAB = 11


def _stream_pair(dtype, seed=0):
    torch.manual_seed(seed)
    ours = STREAM(VOCAB, embed_size=16, hidden_size=24, backbone="resnet18", input_size=32)
    ours.eval()  # as the official trainer holds it
    resnet = torchvision.models.resnet18(weights=None)
    cnn = official.CAPTION_CNN(16, resnet, size=32)
    rnn = official.CAPTION_RNN(16, 24, VOCAB, 1)
    cnn.load_state_dict(ours.caption_cnn.state_dict())
    rnn.load_state_dict(ours.caption_rnn.state_dict())
    cnn.eval()
    return ours.to(dtype), cnn.to(dtype), rnn.to(dtype)


def _pair(config, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ours = MirrorGAN(config)
    c = config
    og = official.G_NET(c.gf_dim, c.embedding_dim, c.condition_dim, c.z_dim, c.r_num, c.branch_num)
    og.load_state_dict(ours.netG.state_dict())
    ods = [cls(c.df_dim, c.embedding_dim) for cls in
           (official_attngan.D_NET64, official_attngan.D_NET128, official_attngan.D_NET256)][:c.branch_num]
    for o, d in zip(ods, ours.netsD):
        o.load_state_dict(d.state_dict())
    stream, cnn, rnn = _stream_pair(dtype, seed)
    return ours.to(dtype), og.to(dtype), [o.to(dtype) for o in ods], stream, cnn, rnn


def _inputs(B=3, T=7, lens=(7, 4, 2), dtype=torch.float64, sizes=(64, 128, 256), seed=1):
    """Lengths sorted longest first, as the official prepare_data sorts the batch."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(B, 100, generator=g).to(dtype)
    sent = torch.randn(B, 256, generator=g).to(dtype)
    words = torch.randn(B, 256, T, generator=g).to(dtype)
    lens = torch.tensor(lens[:B])
    valid = torch.arange(T)[None] < lens[:, None]
    words = words * valid[:, None]
    mask = ~valid
    captions = torch.randint(1, VOCAB, (B, T), generator=g) * valid
    reals = [torch.rand(B, 3, s, s, generator=g).to(dtype) * 2 - 1 for s in sizes]
    return z, sent, words, lens, mask, captions, reals


def _official_step(og, ods, cnn, rnn, inputs, lam=10.0):
    z, sent, words, lens, mask, captions, reals = inputs
    B = z.shape[0]
    torch.manual_seed(5)
    fake, att, mu, logvar = og(z, sent, words, mask)
    real_labels, fake_labels = torch.ones(B, dtype=z.dtype), torch.zeros(B, dtype=z.dtype)
    errDs = []
    for i, d in enumerate(ods):
        d.zero_grad()
        errD = official.discriminator_loss(d, reals[i], fake[i], sent, real_labels, fake_labels)
        errD.backward()
        errDs.append(errD.detach())
    d_grads = [p.grad.clone() for d in ods for p in d.parameters()]
    og.zero_grad()
    errG = official.generator_loss(ods, cnn, rnn, captions, fake, real_labels, lens, sent, lam)
    errG = errG + official.KL_loss(mu, logvar)
    errG.backward()
    return fake, att, errDs, errG.detach(), d_grads, [p.grad.clone() for p in og.parameters()]


def _our_step(ours, stream, inputs, lam=10.0):
    z, sent, words, lens, mask, captions, reals = inputs
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
    errG, parts = generator_loss(ours.netsD, stream.caption_cnn, stream.caption_rnn, fake, captions, lens, words,
                                 sent, lambda_caption=lam)
    errG = errG + kl_loss(mu, logvar)
    errG.backward()
    return fake, att, errDs, errG.detach(), d_grads, [p.grad.clone() for p in ours.netG.parameters()]


def _max_rel(xs, ys):
    return max(rel_error(x, y) for x, y in zip(xs, ys))


def _flat(tensors):
    return torch.cat([t.double().flatten() for t in tensors])


def _fp32_bound(official_error, floor=1e-5):
    return max(2.0 * official_error, floor)


# ----------------------------------------------------------------------------- names, configs

def test_parameter_names_and_shapes_are_the_official_ones():
    c = MirrorGANConfig(**TINY)
    ours, og = MirrorGAN(c), official.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3)
    assert {k: tuple(v.shape) for k, v in ours.netG.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in og.state_dict().items()}
    keys = set(ours.netG.state_dict())
    for k in ("h_net2.att.conv_context.weight", "h_net2.att.conv_sentence_vis.weight", "h_net2.att.linear.weight",
              "h_net2.att.linear.bias", "h_net3.conv.weight", "h_net3.residual.0.block.4.weight"):
        assert k in keys, k
    stream, cnn, rnn = _stream_pair(torch.float32)
    assert set(stream.caption_cnn.state_dict()) == set(cnn.state_dict())
    assert set(stream.caption_rnn.state_dict()) == set(rnn.state_dict())


def test_presets_follow_the_released_config_and_the_paper():
    b, p = MirrorGANConfig.birds(), MirrorGANConfig.preset("paper")
    assert (b.lambda_caption, b.lambda_damsm, b.batch_size, b.max_epoch, b.gf_dim, b.df_dim, b.r_num) == \
        (10.0, 0.0, 12, 650, 32, 64, 2)
    assert (b.stream_embed, b.stream_hidden, b.stream_lr) == (256, 512, 1e-3)
    assert (p.lambda_caption, p.lambda_damsm) == (20.0, 0.0)
    with pytest.raises(ValueError, match="preset"):
        MirrorGANConfig.preset("cats")
    with pytest.raises(ValueError, match="lambda_caption"):
        MirrorGANConfig(lambda_caption=-1.0)


# ----------------------------------------------------------------------------- parity

@pytest.mark.parametrize("backend", NON_TRITON)
def test_glam_matches_the_official_attention(backend):
    ops.set_backend(backend)
    torch.manual_seed(0)
    ours = GLAttentionGeneral(6, 256, official_mask=True).double()
    off = official.GLAttentionGeneral(6, 256).double()
    off.load_state_dict(ours.state_dict())
    z, sent, words, lens, mask, _, _ = _inputs()
    h = torch.randn(3, 6, 5, 7, dtype=torch.float64, requires_grad=True)
    c_code = torch.randn(3, 100, dtype=torch.float64)
    off.applyMask(mask)
    o = off(h, c_code, words)
    f = ours(h, c_code, words, mask)
    for a, b, what in zip(f, o, ("word context", "sentence context", "word attention", "sentence attention")):
        assert rel_error(a, b) <= 1e-12, what
    go = torch.autograd.grad(o[0].sum() + (o[1] * o[3]).sum(), [h] + list(off.parameters()))
    gf = torch.autograd.grad(f[0].sum() + (f[1] * f[3]).sum(), [h] + list(ours.parameters()))
    assert _max_rel(gf, go) <= 1e-10


@pytest.mark.parametrize("backend", NON_TRITON)
def test_float64_parity_with_the_official_code(backend):
    """Images, attention, D losses, G loss (adversarial + 10 x caption + KL) and every gradient."""
    ops.set_backend(backend)
    ours, og, ods, stream, cnn, rnn = _pair(MirrorGANConfig(official_mask=True, **TINY))
    inputs = _inputs()
    o = _official_step(og, ods, cnn, rnn, inputs)
    f = _our_step(ours, stream, inputs)
    assert _max_rel(f[0], o[0]) <= 1e-10, "images"
    assert _max_rel(f[1], o[1]) <= 1e-10, "attention maps"
    assert _max_rel(f[2], o[2]) <= 1e-10, "D losses"
    assert rel_error(f[3], o[3]) <= 1e-10, "G loss"
    assert _max_rel(f[4], o[4]) <= 1e-5, "D gradients"
    assert _max_rel(f[5], o[5]) <= 1e-5, "G gradients"


@pytest.mark.parametrize("backend", [pytest.param(p.values[0], marks=[*p.marks, pytest.mark.slow])
                                     if p.values[0] == "reference" else p for p in NON_TRITON])
def test_float32_within_the_official_float32_error(backend):
    ops.set_backend(backend)
    config = MirrorGANConfig(official_mask=True, **TINY)
    _, og64, ods64, _, cnn64, rnn64 = _pair(config, torch.float64)
    ours32, og32, ods32, stream32, cnn32, rnn32 = _pair(config, torch.float32)
    in64, in32 = _inputs(dtype=torch.float64), _inputs(dtype=torch.float32)
    ref = _official_step(og64, ods64, cnn64, rnn64, in64)
    off32 = _official_step(og32, ods32, cnn32, rnn32, in32)
    mine = _our_step(ours32, stream32, in32)
    for k, what in enumerate(("images", "attention", "D losses")):
        assert _max_rel(mine[k], ref[k]) <= _fp32_bound(_max_rel(off32[k], ref[k])), what
    assert rel_error(mine[3], ref[3]) <= _fp32_bound(rel_error(off32[3], ref[3])), "G loss"
    for k, what in ((4, "D gradients"), (5, "G gradients")):
        own = rel_error(_flat(off32[k]), _flat(ref[k]))
        assert rel_error(_flat(mine[k]), _flat(ref[k])) <= _fp32_bound(own), what


def test_caption_loss_does_not_need_sorted_captions():
    stream, cnn, rnn = _stream_pair(torch.float64)
    _, _, _, lens, _, captions, reals = _inputs()
    expected = official.caption_loss(rnn(cnn(reals[0]), captions, lens.tolist()),
                                      torch.nn.utils.rnn.pack_padded_sequence(captions, lens.tolist(),
                                                                              batch_first=True)[0])
    order = torch.tensor([2, 0, 1])
    got = caption_loss(stream.caption_cnn, stream.caption_rnn, reals[0][order], captions[order], lens[order])
    assert rel_error(got, expected) <= 1e-12


def test_damsm_option_adds_the_attngan_terms():
    ops.set_backend("reference")
    ours, _, _, stream, _, _ = _pair(MirrorGANConfig(branch_num=1, **TINY))
    z, sent, words, lens, mask, captions, reals = _inputs(sizes=(64,))

    class TinyImageEncoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 256, 1), nn.Linear(3, 256)

        def forward(self, x):
            return self.conv(nn.functional.adaptive_avg_pool2d(x, 17)), self.fc(x.mean(dim=(2, 3)))

    enc = TinyImageEncoder().double()
    with torch.no_grad():
        fake, _, _, _ = ours.netG(z, sent, words, mask)
        off, parts0 = generator_loss(ours.netsD, stream.caption_cnn, stream.caption_rnn, fake, captions, lens, words,
                                     sent, 10.0)
        on, parts = generator_loss(ours.netsD, stream.caption_cnn, stream.caption_rnn, fake, captions, lens, words,
                                   sent, 10.0, image_encoder=enc, lambda_damsm=5.0, class_ids=np.array([1, 2, 3]))
        w, s = damsm_g_loss(enc, fake[-1], words, sent, lens, np.array([1, 2, 3]))
        adv = sum(adversarial_g_loss(d, x, sent) for d, x in zip(ours.netsD, fake))
    assert "w_loss" not in parts0
    assert rel_error(on, off + 5.0 * (w + s)) <= 1e-12
    assert rel_error(off, adv + parts0["cap_loss"]) <= 1e-12
    with pytest.raises(ValueError, match="image_encoder"):
        generator_loss(ours.netsD, stream.caption_cnn, stream.caption_rnn, fake, captions, lens, words, sent,
                       lambda_damsm=5.0)


def test_g_dcgan_has_glam_stages():
    c = MirrorGANConfig(b_dcgan=True, **TINY)
    g = G_DCGAN(c).apply(weights_init).double()
    assert isinstance(g.h_net3.att, GLAttentionGeneral)
    z, sent, words, lens, mask, _, _ = _inputs()
    imgs, att, _, _ = g(z, sent, words, mask)
    assert [tuple(i.shape) for i in imgs] == [(3, 3, 256, 256)] and len(att) == 2


# ----------------------------------------------------------------------------- files, bad inputs

def test_official_files_load_and_stage_mismatch_is_named(tmp_path):
    c = MirrorGANConfig(**TINY)
    og = official.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3)
    torch.save(og.state_dict(), tmp_path / "netG_epoch_600.pth")
    g = load_official_state_dict(G_NET(c), str(tmp_path / "netG_epoch_600.pth"))
    for k, v in og.state_dict().items():
        assert torch.equal(g.state_dict()[k], v), k
    with pytest.raises(StateDictMismatchError, match="stages"):
        load_official_state_dict(G_NET(MirrorGANConfig(branch_num=2, **TINY)), str(tmp_path / "netG_epoch_600.pth"))
    # an AttnGAN generator lacks GLAM's sentence attention: the missing keys are named
    attn = official_attngan.G_NET(c.gf_dim, 256, 100, 100, c.r_num, 3)
    with pytest.raises(StateDictMismatchError, match="conv_sentence_vis"):
        load_official_state_dict(G_NET(c), attn.state_dict())


def test_bad_inputs_give_clear_errors():
    att = GLAttentionGeneral(4, 256)
    h, words = torch.randn(2, 4, 3, 3), torch.randn(2, 256, 5)
    with pytest.raises(ValueError, match="c_code"):
        att(h, torch.randn(2, 99), words)
    stream, _, _ = _stream_pair(torch.float32)
    fake = [torch.randn(2, 3, 64, 64)]
    with pytest.raises(ValueError, match="cap_lens"):
        caption_loss(stream.caption_cnn, stream.caption_rnn, fake[0], torch.ones(2, 4, dtype=torch.long),
                     torch.tensor([5, 2]))
    with pytest.raises(ValueError, match="captions"):
        caption_loss(stream.caption_cnn, stream.caption_rnn, fake[0], torch.ones(2, 4), torch.tensor([4, 2]))
