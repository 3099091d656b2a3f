"""char-CNN-RNN encoder, its joint embedding loss, and the released embedding pickles."""
import pickle

import numpy as np
import pytest
import torch

from fastt2i.data import EmbeddingFileError, load_char_cnn_rnn_embeddings, load_embedding_pickle
from fastt2i.losses import joint_embedding_loss
from fastt2i.text import ALPHABET, CharCNNRNN, encode_characters

from helpers import assert_rel_close


# ----------------------------------------------------------------------------- characters

def test_alphabet_and_one_hot_follow_the_lua_dictionary():
    assert len(ALPHABET) == 70
    x = encode_characters(["ab-", "A?\u00e9"], doc_length=5)
    assert x.shape == (2, 5, 70)
    assert x[0, 0, 0] == 1 and x[0, 1, 1] == 1
    # '-' is in the alphabet twice; the later position wins, as in the Lua dict
    assert x[0, 2].nonzero().flatten().tolist() == [ALPHABET.rindex("-")]
    assert x[0, 3:].sum() == 0                               # past the end: zero columns
    assert x[1, 0, 0] == 1                                   # lower-cased
    assert x[1, 2].sum() == 0                                # unknown character: zero column
    assert encode_characters(["abc"], lowercase=False).shape == (1, 201, 70)
    assert encode_characters("x" * 300).sum() == 201         # truncated at doc_length


@pytest.mark.parametrize("final_pool,steps", [(True, 8), (False, 18)])
def test_encoder_shapes_and_steps(final_pool, steps):
    enc = CharCNNRNN(cnn_dim=32, emb_dim=48, final_pool=final_pool)
    assert enc.n_steps == steps
    out = enc(encode_characters(["a small red bird", "a blue square"]))
    assert out.shape == (2, 48) and torch.isfinite(out).all()
    assert all(p.abs().max() <= 0.08 for p in enc.parameters())
    with pytest.raises(ValueError, match="expected"):
        enc(torch.zeros(2, 100, 70))
    with pytest.raises(ValueError, match="no RNN step"):
        CharCNNRNN(doc_length=30)


def _direct_encoder(enc, chars):
    """The Lua graph written out step by step (Threshold, TemporalMaxPooling, FixedRNN unrolled)."""
    def temporal_conv(x, conv):  # x: (L, Cin) -> (L - 3, Cout), as nn.TemporalConvolution
        w = conv.weight  # (Cout, Cin, 4)
        frames = torch.stack([x[t:t + 4].reshape(-1) for t in range(x.shape[0] - 3)])
        return frames @ w.permute(0, 2, 1).reshape(w.shape[0], -1).t() + conv.bias

    def threshold(x):
        return torch.where(x > 1e-6, x, torch.zeros_like(x))

    def pool(x, k, s):
        return torch.stack([x[t:t + k].max(0).values for t in range(0, x.shape[0] - k + 1, s)])

    outs = []
    for doc in chars:
        h = pool(threshold(temporal_conv(doc, enc.conv1)), 3, 3)
        h = pool(threshold(temporal_conv(h, enc.conv2)), 3, 3)
        h = threshold(temporal_conv(h, enc.conv3))
        if enc.final_pool:
            h = pool(h, 3, 2)
        states = []
        for t in range(h.shape[0]):
            a = enc.rnn.i2h(h[t])
            if t:
                a = a + enc.rnn.h2h(states[-1])
            states.append(torch.relu(a))
        outs.append(enc.proj(sum(states) / len(states)))
    return torch.stack(outs)


@pytest.mark.parametrize("final_pool", [True, False])
def test_encoder_equals_the_lua_graph_written_out(final_pool):
    torch.manual_seed(0)
    enc = CharCNNRNN(cnn_dim=24, emb_dim=16, final_pool=final_pool).double()
    chars = encode_characters(["this bird has a red crown", "a large green triangle, left."]).double()
    assert_rel_close(enc(chars), _direct_encoder(enc, chars), 1e-10, "encoder")


# ----------------------------------------------------------------------------- loss

def _lua_joint_embedding_loss(fea_txt, fea_img, labels):
    """JointEmbeddingLoss of train_sje_hybrid.lua with its hand-written (sub)gradients."""
    batch, ncls = fea_img.shape[0], fea_txt.shape[0]
    loss = 0.0
    txt_grads, img_grads = torch.zeros_like(fea_txt), torch.zeros_like(fea_img)
    for i in range(batch):
        score = [float(fea_img[i] @ fea_txt[j]) for j in range(ncls)]
        for j in range(ncls):
            if j != labels[i]:
                thresh = score[j] - score[labels[i]] + 1
                if thresh > 0:
                    loss += thresh
                    img_grads[i] += fea_txt[j] - fea_txt[labels[i]]
                    txt_grads[j] += fea_img[i]
                    txt_grads[labels[i]] -= fea_img[i]
    denom = batch * ncls
    return loss / denom, txt_grads / denom, img_grads / denom


@pytest.mark.parametrize("symmetric", [True, False])
def test_joint_embedding_loss_equals_the_formula_and_its_gradients(symmetric):
    g = torch.Generator().manual_seed(3)
    img = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 0.6).requires_grad_()
    txt = (torch.randn(7, 5, generator=g, dtype=torch.float64) * 0.6).requires_grad_()
    labels = torch.randperm(7, generator=g)
    loss = joint_embedding_loss(img, txt, labels, symmetric=symmetric)
    loss.backward()
    ref, dtxt, dimg = _lua_joint_embedding_loss(txt.detach(), img.detach(), labels.tolist())
    if symmetric:
        ref2, dimg2, dtxt2 = _lua_joint_embedding_loss(img.detach(), txt.detach(), labels.tolist())
        ref, dtxt, dimg = ref + ref2, dtxt + dtxt2, dimg + dimg2
    assert 0 < ref
    assert abs(loss.item() - ref) <= 1e-12 * abs(ref)
    assert_rel_close(img.grad, dimg, 1e-12, "d image")
    assert_rel_close(txt.grad, dtxt, 1e-12, "d text")


def test_joint_embedding_loss_default_labels_and_bad_inputs():
    img, txt = torch.randn(4, 3), torch.randn(4, 3)
    assert torch.equal(joint_embedding_loss(img, txt), joint_embedding_loss(img, txt, torch.arange(4)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        joint_embedding_loss(img, torch.randn(4, 5))
    with pytest.raises(ValueError, match="labels"):
        joint_embedding_loss(img, torch.randn(5, 3))
    with pytest.raises(ValueError, match="labels: expected indices"):
        joint_embedding_loss(img, txt, torch.tensor([0, 1, 2, 9]))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        joint_embedding_loss(img[0], txt)


def test_encoder_learns_to_match_captions_to_features():
    """A few RMSprop steps of the symmetric loss separate 6 caption/feature pairs (it can fail)."""
    torch.manual_seed(0)
    captions = ["a red circle", "a blue square", "a green triangle", "a small yellow diamond",
                "a large purple circle", "a red square above a blue circle"]
    chars = encode_characters(captions, doc_length=64)
    feats = torch.nn.functional.normalize(torch.randn(6, 32), dim=1) * 3
    enc = CharCNNRNN(cnn_dim=32, emb_dim=32, doc_length=64, final_pool=False)
    opt = torch.optim.RMSprop(enc.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        loss = joint_embedding_loss(feats, enc(chars))
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    assert (feats @ enc(chars).t()).argmax(1).tolist() == list(range(6))


# ----------------------------------------------------------------------------- released pickles

def _write(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def test_loads_the_released_layout(tmp_path):
    emb = np.random.default_rng(0).standard_normal((3, 10, 1024)).astype(np.float32)
    _write(tmp_path / "char-CNN-RNN-embeddings.pickle", [e for e in emb])  # a list of per-image arrays
    _write(tmp_path / "filenames.pickle", ["001.a/img1", "001.a/img2", "002.b/img3"])
    _write(tmp_path / "class_info.pickle", [1, 1, 2])
    data = load_char_cnn_rnn_embeddings(str(tmp_path))
    assert len(data) == 3 and data.captions_per_image == 10
    assert np.array_equal(data.embeddings, emb) and data.class_ids.tolist() == [1, 1, 2]
    assert data.filenames[2] == "002.b/img3"
    flat = load_embedding_pickle(str(tmp_path / "char-CNN-RNN-embeddings.pickle"))
    assert flat.shape == (30, 1024) and torch.equal(flat[10], torch.from_numpy(emb[1, 0]))


def test_refuses_wrong_layouts(tmp_path):
    _write(tmp_path / "filenames.pickle", ["a", "b"])
    cases = [
        (np.zeros((2, 10, 512), np.float32), "1024-d embeddings, got 512-d"),
        ({"a": 1}, "regular numeric array|expected shape"),
        ([np.zeros((10, 1024)), np.zeros((9, 1024))], "regular numeric array"),
        (np.zeros((2, 3, 4, 1024), np.float32), r"expected shape \(images, captions, 1024\)"),
        (np.zeros((3, 10, 1024), np.float32), "2 filenames but 3 embedding rows"),
    ]
    for obj, message in cases:
        _write(tmp_path / "char-CNN-RNN-embeddings.pickle", obj)
        with pytest.raises(EmbeddingFileError, match=message):
            load_char_cnn_rnn_embeddings(str(tmp_path))
    _write(tmp_path / "char-CNN-RNN-embeddings.pickle", np.zeros((2, 10, 1024), np.float32))
    _write(tmp_path / "class_info.pickle", [1, 2, 3])
    with pytest.raises(EmbeddingFileError, match="class_info.pickle: expected 2 class ids"):
        load_char_cnn_rnn_embeddings(str(tmp_path))
    (tmp_path / "char-CNN-RNN-embeddings.pickle").write_bytes(b"not a pickle")
    with pytest.raises(EmbeddingFileError, match="cannot unpickle"):
        load_char_cnn_rnn_embeddings(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_char_cnn_rnn_embeddings(str(tmp_path / "missing"))
