"""Tokenizer and vocabulary exactly as the official DAMSM preprocessing (AttnGAN / DF-GAN).

Official rules (``load_captions`` / ``build_dictionary`` / ``tokenize``):
- ``"\\ufffd\\ufffd"`` is replaced by a space, the caption is lower-cased and split into
  ``\\w+`` tokens; non-ASCII characters are dropped from each token, empty tokens skipped.
- The vocabulary is every word of the train + test captions in order of first appearance
  (no frequency cut-off); index 0 is ``<end>``, which is also the padding.
- There is no unknown token: unknown words are dropped when encoding.
- A caption longer than ``words_num`` keeps a random subset of ``words_num`` words in their
  original order (training); padding is 0.
"""
from __future__ import annotations

import json
import os
import pickle
import re
from typing import Iterable, Sequence

import numpy as np
import torch

END_TOKEN = "<end>"
_WORD = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Official tokenizer: ``\\w+`` tokens of the lower-cased text, ASCII only."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    text = text.replace("\ufffd\ufffd", " ").lower()
    out = []
    for tok in _WORD.findall(text):
        tok = tok.encode("ascii", "ignore").decode("ascii")
        if tok:
            out.append(tok)
    return out


class EmptyCaptionError(ValueError):
    """A caption has no word of the vocabulary (the official LSTM would crash on length 0)."""


class Vocabulary:
    """``wordtoix`` / ``ixtoword`` of the official ``captions.pickle``; index 0 is ``<end>``."""

    def __init__(self, ixtoword: dict | Sequence[str]):
        if isinstance(ixtoword, dict):
            n = len(ixtoword)
            if sorted(int(k) for k in ixtoword) != list(range(n)):
                raise ValueError("ixtoword: expected the indices 0..n-1")
            words = [ixtoword[k] if k in ixtoword else ixtoword[str(k)] for k in range(n)]
        else:
            words = list(ixtoword)
        words = [w.decode("ascii") if isinstance(w, bytes) else str(w) for w in words]
        if not words or words[0] != END_TOKEN:
            raise ValueError(f"ixtoword: index 0 must be {END_TOKEN!r}, got {words[:1]}")
        self.ixtoword = dict(enumerate(words))
        self.wordtoix = {w: i for i, w in enumerate(words)}
        if len(self.wordtoix) != len(words):
            raise ValueError("ixtoword: duplicate words")

    def __len__(self) -> int:
        return len(self.ixtoword)

    def __contains__(self, word: str) -> bool:
        return word in self.wordtoix

    @property
    def words(self) -> list[str]:
        return [self.ixtoword[i] for i in range(len(self))]

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, tokenized_captions: Iterable[Sequence[str]]) -> "Vocabulary":
        """Every word in order of first appearance (the official train + test order)."""
        seen: dict[str, None] = {}
        for caption in tokenized_captions:
            for word in caption:
                seen.setdefault(word, None)
        seen.pop(END_TOKEN, None)
        return cls([END_TOKEN] + list(seen))

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "Vocabulary":
        return cls.build(tokenize(t) for t in texts)

    # ------------------------------------------------------------------ encoding
    def encode(self, text_or_tokens: str | Sequence[str]) -> list[int]:
        """Word indices; unknown words are dropped as in the official code (may be empty)."""
        tokens = tokenize(text_or_tokens) if isinstance(text_or_tokens, str) else text_or_tokens
        return [self.wordtoix[t] for t in tokens if t in self.wordtoix]

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.ixtoword[int(i)] for i in ids if int(i) != 0)

    def encode_batch(
        self,
        captions: Sequence[str | Sequence[int]],
        words_num: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad captions (texts or index lists) to ``(B, T)`` int64 and their lengths ``(B,)``.

        ``T`` is ``words_num`` when given, else the longest caption.  Longer captions keep
        ``words_num`` words in order: a random subset with ``rng`` (official training), the
        first ones without.  A caption with no known word raises EmptyCaptionError.
        """
        ids = []
        for i, cap in enumerate(captions):
            seq = self.encode(cap) if isinstance(cap, str) else [int(t) for t in cap]
            if not seq:
                raise EmptyCaptionError(
                    f"caption {i} ({cap!r}) has no word of the vocabulary ({len(self)} words): "
                    "the DAMSM text encoder cannot encode an empty caption")
            ids.append(truncate_caption(seq, words_num, rng))
        T = words_num if words_num is not None else max(len(s) for s in ids)
        out = torch.zeros(len(ids), T, dtype=torch.int64)
        for i, seq in enumerate(ids):
            out[i, : len(seq)] = torch.tensor(seq, dtype=torch.int64)
        return out, torch.tensor([len(s) for s in ids], dtype=torch.int64)

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """JSON list of words (index = position); written atomically."""
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"fastt2i_vocabulary": 1, "ixtoword": self.words}, f)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Vocabulary":
        """A vocabulary saved by ``save`` or an official ``captions.pickle``/``captions_DAMSM.pickle``."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"vocabulary file not found: {path}")
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            if not isinstance(data, dict) or "ixtoword" not in data:
                raise ValueError(f"{path}: not a fastt2i vocabulary file")
            return cls(data["ixtoword"])
        return load_captions_pickle(path)[2]

    def to_list(self) -> list[str]:
        return self.words


def truncate_caption(seq: Sequence[int], words_num: int | None, rng: np.random.Generator | None = None) -> list[int]:
    """Official ``get_caption``: keep a sorted random subset of ``words_num`` positions."""
    seq = list(seq)
    if words_num is None or len(seq) <= words_num:
        return seq
    if rng is None:
        return seq[:words_num]
    keep = np.sort(rng.permutation(len(seq))[:words_num])
    return [seq[i] for i in keep]


def _load_pickle(path: str):
    with open(path, "rb") as f:
        try:
            return pickle.load(f)
        except UnicodeDecodeError:  # Python 2 pickles with non-ASCII bytes
            f.seek(0)
            return pickle.load(f, encoding="latin1")


def load_captions_pickle(path: str | os.PathLike) -> tuple[list[list[int]], list[list[int]], Vocabulary]:
    """The official ``[train_captions, test_captions, ixtoword, wordtoix]`` pickle."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"captions pickle not found: {path}")
    try:
        data = _load_pickle(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ValueError(f"{path}: cannot read the captions pickle ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, (list, tuple)) or len(data) < 4:
        raise ValueError(f"{path}: expected [train_captions, test_captions, ixtoword, wordtoix], "
                         f"got {type(data).__name__}")
    train, test, ixtoword, wordtoix = data[0], data[1], data[2], data[3]
    vocab = Vocabulary(ixtoword)
    for w, i in wordtoix.items():
        w = w.decode("ascii") if isinstance(w, bytes) else w
        if vocab.wordtoix.get(w) != i:
            raise ValueError(f"{path}: wordtoix and ixtoword disagree on {w!r}")
    return [list(map(int, c)) for c in train], [list(map(int, c)) for c in test], vocab


def save_captions_pickle(path: str | os.PathLike, train: list[list[int]], test: list[list[int]], vocab: Vocabulary) -> None:
    """Write the official format (protocol 2, as the official code), atomically."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        pickle.dump([train, test, vocab.ixtoword, vocab.wordtoix], f, protocol=2)
    os.replace(tmp, path)
