"""DAMSM encoders: CNN_ENCODER against the official one, pretraining losses against the official
words_loss / sent_loss, official-format checkpoints.  Inception-v3 at 299 is slow on a CPU: one
random backbone per module, batch 2-3."""
import inspect

import numpy as np
import pytest
import torch

from fastt2i import ops
from fastt2i.losses import sent_loss_official, words_loss_official
from fastt2i.models.attngan import StateDictMismatchError
from fastt2i.models.damsm import (
    BACKBONE,
    CNNEncoder,
    damsm_losses,
    load_image_encoder,
    load_text_encoder,
    save_encoders,
)
from fastt2i.official import attngan as official
from fastt2i.text import RNNEncoder

from helpers import fused_backends, rel_error


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return CNNEncoder(256, weights=None, align_corners=False).eval()


def _official_copy(enc):
    """The official CNN_ENCODER on the same backbone modules and projections."""
    off = official.CNN_ENCODER(enc, nef=enc.nef)
    off.emb_features.load_state_dict(enc.emb_features.state_dict())
    off.emb_cnn_code.load_state_dict(enc.emb_cnn_code.state_dict())
    return off.eval()


def test_official_names_shapes_and_frozen_backbone(encoder):
    keys = set(encoder.state_dict())
    for name in BACKBONE:
        assert any(k.startswith(name + ".") for k in keys), name
    assert {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias", "Mixed_6e.branch7x7dbl_5.bn.running_var",
            "Conv2d_1a_3x3.conv.weight"} <= keys
    assert not any(k.startswith(("fc.", "AuxLogits.")) for k in keys)
    trainable = {n for n, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}
    assert encoder.emb_features.weight.abs().max() <= 0.1 and encoder.emb_cnn_code.weight.abs().max() <= 0.1
    with torch.no_grad():
        regions, code = encoder(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert regions.shape == (2, 256, 17, 17) and code.shape == (2, 256)
    with pytest.raises(ValueError, match="images"):
        encoder(torch.rand(2, 1, 64, 64))


def test_matches_the_official_cnn_encoder(encoder):
    off = _official_copy(encoder)
    x = torch.rand(2, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        r, c = encoder(x)
        ro, co = off(x)
    assert rel_error(r, ro) <= 1e-5 and rel_error(c, co) <= 1e-5


def test_align_corners_is_the_torch03_resize(encoder):
    """align_corners=True samples as torch 0.3's Upsample (what released encoders saw); it is
    not what the official line does on a current torch."""
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    legacy = CNNEncoder.__new__(CNNEncoder)
    legacy.align_corners, legacy.input_size = True, 299
    up = legacy.resize(x)
    assert torch.allclose(up[..., 0, 0], x[..., 0, 0]) and torch.allclose(up[..., -1, -1], x[..., -1, -1])
    assert not torch.allclose(encoder.resize(x), up)
    assert inspect.signature(CNNEncoder).parameters["align_corners"].default is True  # the legacy resize


@pytest.mark.parametrize("backend", ["reference"] + [b for b in fused_backends() if b != "triton"])
def test_pretraining_losses_equal_the_official_ones(encoder, backend):
    ops.set_backend(backend)
    torch.manual_seed(1)
    text = RNNEncoder(30, words_num=8)
    captions = torch.tensor([[3, 4, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0], [12, 13, 14, 15, 0, 0]])
    lens = torch.tensor([6, 3, 4])
    class_ids = np.array([1, 2, 1])
    imgs = torch.rand(3, 3, 96, 96) * 2 - 1
    encoder.train()  # pretraining runs the backbone's BatchNorms on batch statistics, as the official
    text.eval()      # no dropout, so both sides see the same word features
    try:
        ours = damsm_losses(encoder, text, imgs, captions, lens, class_ids)
        regions, code = encoder(imgs)
        words, sent = text(captions, lens)
        labels = torch.arange(3)
        w0, w1, _ = words_loss_official(regions, words, labels, lens, class_ids, 3)
        s0, s1 = sent_loss_official(code, sent, labels, class_ids, 3)
    finally:
        encoder.eval()
    for k, v in (("w_loss0", w0), ("w_loss1", w1), ("s_loss0", s0), ("s_loss1", s1)):
        assert rel_error(ours[k], v) <= 1e-5, k
    # gradients of the trainable parts
    g_ours = torch.autograd.grad(ours["loss"], [encoder.emb_features.weight, text.encoder.weight])
    g_off = torch.autograd.grad(w0 + w1 + s0 + s1, [encoder.emb_features.weight, text.encoder.weight])
    for a, b in zip(g_ours, g_off):
        assert rel_error(a, b) <= 1e-4


def test_checkpoints_round_trip_with_official_keys(encoder, tmp_path):
    text = RNNEncoder(30)
    img_path, txt_path = save_encoders(encoder, text, str(tmp_path), 5)
    assert img_path.endswith("image_encoder5.pth") and txt_path.endswith("text_encoder5.pth")
    state = torch.load(img_path)
    assert set(state) == set(encoder.state_dict())  # a plain state dict, the official file's layout
    torch.manual_seed(9)
    other = CNNEncoder(256, align_corners=False)
    load_image_encoder(other, img_path)
    for k, v in encoder.state_dict().items():
        assert torch.equal(other.state_dict()[k], v), k
    assert {n for n, p in other.named_parameters() if p.requires_grad} == \
        {"emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"}
    text2 = load_text_encoder(RNNEncoder(30), txt_path)
    assert torch.equal(text2.encoder.weight, text.encoder.weight)


def test_files_of_old_torch_without_batchnorm_counters_load(encoder, tmp_path):
    state = {k: v for k, v in encoder.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "image_encoder550.pth")
    other = load_image_encoder(CNNEncoder(256), str(tmp_path / "image_encoder550.pth"))
    assert torch.equal(other.emb_features.weight, encoder.emb_features.weight)


def test_bad_files_give_clear_errors(encoder, tmp_path):
    torch.save(RNNEncoder(5450).state_dict(), tmp_path / "text_encoder200.pth")
    with pytest.raises(ValueError, match="5450 words.*30"):
        load_text_encoder(RNNEncoder(30), str(tmp_path / "text_encoder200.pth"))
    state = dict(encoder.state_dict())
    state["emb_features.weight"] = torch.zeros(128, 768, 1, 1)
    with pytest.raises(StateDictMismatchError, match="emb_features"):
        load_image_encoder(CNNEncoder(256), state)
    with pytest.raises(FileNotFoundError):
        load_image_encoder(CNNEncoder(256), str(tmp_path / "nope.pth"))
