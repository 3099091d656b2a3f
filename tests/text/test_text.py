"""Tokenizer, vocabulary and the DAMSM text encoder against the official rules."""
import pickle

import numpy as np
import pytest
import torch

from fastt2i.text import (
    EmptyCaptionError,
    RNNEncoder,
    Vocabulary,
    encode_captions,
    load_captions_pickle,
    save_captions_pickle,
    tokenize,
    truncate_caption,
)


def test_tokenize_official_rules():
    assert tokenize("This bird has a RED crown, and\ufffd\ufffdwhite-wings.") == [
        "this", "bird", "has", "a", "red", "crown", "and", "white", "wings"]
    # non-ASCII characters are dropped from tokens; a token left empty disappears
    assert tokenize("café ñ 42") == ["caf", "42"]
    assert tokenize("   ...  ") == []
    with pytest.raises(TypeError, match="text"):
        tokenize(3)


def test_vocabulary_build_order_and_end_token():
    vocab = Vocabulary.from_texts(["a red bird", "A blue bird!", "red"])
    assert vocab.words == ["<end>", "a", "red", "bird", "blue"]
    assert vocab.wordtoix["<end>"] == 0 and len(vocab) == 5
    assert vocab.encode("a green bird") == [1, 3]  # unknown words dropped, no <unk>
    assert vocab.decode([1, 3, 0, 0]) == "a bird"


def test_vocabulary_save_load_roundtrip(tmp_path):
    vocab = Vocabulary.from_texts(["the small bird", "a large bird"])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert Vocabulary.load(path).words == vocab.words
    with pytest.raises(FileNotFoundError, match="vocabulary file not found"):
        Vocabulary.load(tmp_path / "missing.json")


def test_official_captions_pickle_loads(tmp_path):
    # the official layout: [train_captions, test_captions, ixtoword, wordtoix], protocol 2
    ixtoword = {0: "<end>", 1: "this", 2: "bird", 3: "is", 4: "red"}
    wordtoix = {w: i for i, w in ixtoword.items()}
    path = tmp_path / "captions.pickle"
    with open(path, "wb") as f:
        pickle.dump([[[1, 2, 3, 4]], [[2, 3]], ixtoword, wordtoix], f, protocol=2)
    train, test, vocab = load_captions_pickle(path)
    assert train == [[1, 2, 3, 4]] and test == [[2, 3]]
    assert vocab.words == ["<end>", "this", "bird", "is", "red"]
    assert Vocabulary.load(path).words == vocab.words
    out = tmp_path / "again.pickle"
    save_captions_pickle(out, train, test, vocab)
    with open(out, "rb") as f:
        raw = pickle.load(f)
    assert raw[2] == ixtoword and raw[3] == wordtoix


def test_bad_captions_pickle_is_a_clear_error(tmp_path):
    path = tmp_path / "captions.pickle"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="cannot read the captions pickle"):
        load_captions_pickle(path)
    with open(path, "wb") as f:
        pickle.dump({"a": 1}, f)
    with pytest.raises(ValueError, match="expected \\[train_captions"):
        load_captions_pickle(path)
    with pytest.raises(ValueError, match="index 0 must be"):
        Vocabulary(["bird", "<end>"])


def test_encode_batch_pads_and_truncates_like_official():
    vocab = Vocabulary.from_texts(["one two three four five six"])
    ids, lens = vocab.encode_batch(["one two", "three"], words_num=4)
    assert ids.tolist() == [[1, 2, 0, 0], [3, 0, 0, 0]] and lens.tolist() == [2, 1]
    ids, lens = vocab.encode_batch(["one two three four five six"], words_num=3)
    assert ids.tolist() == [[1, 2, 3]] and lens.tolist() == [3]  # no rng: the first words
    rng = np.random.default_rng(0)
    kept = truncate_caption(list(range(1, 21)), 18, rng)
    assert len(kept) == 18 and kept == sorted(kept) and set(kept) <= set(range(1, 21))
    assert truncate_caption([5, 6], 18, rng) == [5, 6]


def test_caption_with_only_unknown_words_is_a_clear_error():
    vocab = Vocabulary.from_texts(["a red bird"])
    with pytest.raises(EmptyCaptionError, match="no word of the vocabulary"):
        vocab.encode_batch(["a red bird", "zebra giraffe"])
    with pytest.raises(EmptyCaptionError):
        vocab.encode_batch([""])


def test_rnn_encoder_official_names_and_shapes():
    torch.manual_seed(0)
    enc = RNNEncoder(30).eval()
    keys = set(enc.state_dict())
    expected = {"encoder.weight"} | {f"rnn.{k}_l0{s}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                                      for s in ("", "_reverse")}
    assert keys == expected
    assert enc.state_dict()["encoder.weight"].shape == (30, 300)
    assert enc.state_dict()["rnn.weight_ih_l0"].shape == (4 * 128, 300)
    assert enc.encoder.weight.abs().max() <= 0.1
    caps = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [9, 0, 0, 0, 0]])
    lens = torch.tensor([3, 5, 1])
    words, sent = enc(caps, lens)
    assert words.shape == (3, 256, 5) and sent.shape == (3, 256)
    assert torch.all(words[0, :, 3:] == 0) and torch.all(words[2, :, 1:] == 0)


def test_rnn_encoder_matches_official_sorted_packing():
    """Unsorted batches give what the official sort -> encode -> rm_sort gives, caption by caption."""
    torch.manual_seed(1)
    enc = RNNEncoder(20).eval()
    caps = torch.tensor([[1, 2, 0, 0], [3, 4, 5, 6], [7, 8, 9, 0]])
    lens = torch.tensor([2, 4, 3])
    sent, words = encode_captions(enc, caps, lens)  # official order: (sentence, words)
    for i in range(3):
        L = int(lens[i])
        emb = enc.encoder(caps[i:i + 1, :L])
        out, (h, _) = enc.rnn(emb)
        torch.testing.assert_close(sent[i], torch.cat([h[0, 0], h[1, 0]]), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(words[i, :, :L], out[0].t(), rtol=1e-5, atol=1e-6)
    # the official (B, T, 1) caption layout is accepted
    s2, _ = encode_captions(enc, caps.unsqueeze(-1), lens)
    torch.testing.assert_close(s2, sent)


def test_rnn_encoder_input_errors():
    enc = RNNEncoder(10).eval()
    with pytest.raises(ValueError, match="length 0"):
        enc(torch.tensor([[1, 2], [0, 0]]), torch.tensor([2, 0]))
    with pytest.raises(ValueError, match="vocabulary mismatch"):
        enc(torch.tensor([[1, 12]]), torch.tensor([2]))
    with pytest.raises(ValueError, match="captions"):
        enc(torch.ones(2, 3), torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="ntoken"):
        RNNEncoder(1)
