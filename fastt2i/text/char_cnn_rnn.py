"""The char-CNN-RNN ("hybrid") sentence encoder of Reed et al. (CVPR 2016, reedscot/cvpr2016).

Its 1024-d embeddings condition GAN-INT-CLS, StackGAN and StackGAN++ (the released
``char-CNN-RNN-embeddings.pickle`` files were made with it).  The network, as the Torch7
modules ``HybridCNN`` / ``HybridCNNLong`` + ``FixedRNN`` build it:

- input: a caption as ``doc_length`` (201) one-hot columns over a 70-symbol alphabet
  (characters outside the alphabet and positions past the caption's end are all-zero);
- three temporal convolutions, kernel 4, alphabet -> 384 -> 512 -> cnn_dim, each followed by
  Torch's ``Threshold`` (x if x > 1e-6 else 0) and the first two by max-pooling 3/3;
  ``HybridCNN`` max-pools the third 3/2 as well (201 -> 8 steps), ``HybridCNNLong`` does not
  (201 -> 18 steps): ``final_pool`` chooses;
- ``FixedRNN``: h_1 = relu(W_i x_1 + b_i), h_t = relu(W_i x_t + b_i + W_h h_{t-1} + b_h), the
  output is the mean of all h_t (the ``avg`` option of the Lua code is ignored there too);
- dropout (0 in the released configuration) and a Linear cnn_dim -> 1024.

All parameters start uniform(-0.08, 0.08), as ``train_sje_hybrid.lua`` initialises them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

# The alphabet of reedscot/icml2016 and cvpr2016, in its order.  '-' appears twice; the Lua
# dictionary keeps the later position, so column 37 (1-based) is never set: kept for the
# 70-wide input of released encoders.
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+-=<>()[]{} "
DOC_LENGTH = 201
THRESHOLD = 1e-6  # Torch7 nn.Threshold() default: x > 1e-6 ? x : 0

_CHAR_INDEX = {ch: i for i, ch in enumerate(ALPHABET)}  # later duplicates win, as in Lua


def encode_characters(captions: Sequence[str] | str, doc_length: int = DOC_LENGTH,
                      lowercase: bool = True) -> torch.Tensor:
    """Captions -> one-hot (B, doc_length, len(ALPHABET)) float32, truncated at doc_length.

    The official scripts feed the pre-processed, lower-case CUB text; ``lowercase`` maps a
    user's capital letters onto it instead of leaving them all-zero as the Lua demo does.
    """
    if isinstance(captions, str):
        captions = [captions]
    if doc_length < 1:
        raise ValueError(f"doc_length: expected >= 1, got {doc_length}")
    out = torch.zeros(len(captions), doc_length, len(ALPHABET))
    for b, text in enumerate(captions):
        if not isinstance(text, str):
            raise TypeError(f"captions[{b}]: expected a str, got {type(text).__name__}")
        if lowercase:
            text = text.lower()
        for t, ch in enumerate(text[:doc_length]):
            ix = _CHAR_INDEX.get(ch)
            if ix is not None:
                out[b, t, ix] = 1.0
    return out


def conv_steps(doc_length: int, final_pool: bool) -> int:
    """Number of RNN steps the convolutional trunk leaves from doc_length characters."""
    n = (doc_length - 3) // 3
    n = (n - 3) // 3
    n = n - 3
    if final_pool:
        n = (n - 3) // 2 + 1
    return n


class FixedRNN(nn.Module):
    """Reed's ReLU RNN with input and recurrent affine maps (``i2h``, ``h2h``), time-averaged."""

    def __init__(self, dim: int):
        super().__init__()
        self.i2h = nn.Linear(dim, dim)
        self.h2h = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, dim)
        inputs = self.i2h(x)  # one GEMM for all steps
        h = F.relu(inputs[:, 0])
        total = h
        for t in range(1, x.shape[1]):
            h = F.relu(inputs[:, t] + self.h2h(h))
            total = total + h
        return total / x.shape[1]


class CharCNNRNN(nn.Module):
    """char-CNN-RNN text encoder: one-hot characters (B, L, 70) -> sentence embedding (B, emb_dim)."""

    def __init__(self, alphabet_size: int = len(ALPHABET), emb_dim: int = 1024, cnn_dim: int = 256,
                 doc_length: int = DOC_LENGTH, final_pool: bool = True, dropout: float = 0.0):
        super().__init__()
        self.alphabet_size, self.emb_dim, self.cnn_dim = alphabet_size, emb_dim, cnn_dim
        self.doc_length, self.final_pool = doc_length, final_pool
        self.n_steps = conv_steps(doc_length, final_pool)
        if self.n_steps < 1:
            raise ValueError(f"doc_length: {doc_length} characters leave no RNN step after the "
                             f"convolutions and poolings (final_pool={final_pool})")
        self.conv1 = nn.Conv1d(alphabet_size, 384, 4)
        self.conv2 = nn.Conv1d(384, 512, 4)
        self.conv3 = nn.Conv1d(512, cnn_dim, 4)
        self.rnn = FixedRNN(cnn_dim)
        self.drop = nn.Dropout(dropout)
        self.proj = nn.Linear(cnn_dim, emb_dim)
        self.reset_parameters()

    def reset_parameters(self, bound: float = 0.08) -> None:
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def forward(self, chars: torch.Tensor) -> torch.Tensor:
        if chars.dim() != 3 or chars.shape[1] != self.doc_length or chars.shape[2] != self.alphabet_size:
            raise ValueError(f"chars: expected (B, {self.doc_length}, {self.alphabet_size}) one-hot characters, "
                             f"got {tuple(chars.shape)}")
        x = chars.transpose(1, 2).to(self.conv1.weight.dtype)  # (B, alphabet, L)
        x = F.max_pool1d(F.threshold(self.conv1(x), THRESHOLD, 0.0), 3, 3)
        x = F.max_pool1d(F.threshold(self.conv2(x), THRESHOLD, 0.0), 3, 3)
        x = F.threshold(self.conv3(x), THRESHOLD, 0.0)
        if self.final_pool:
            x = F.max_pool1d(x, 3, 2)
        return self.proj(self.drop(self.rnn(x.transpose(1, 2))))

    @torch.no_grad()
    def encode(self, captions: Sequence[str] | str, lowercase: bool = True) -> torch.Tensor:
        """Captions -> embeddings (B, emb_dim) on the module's device (eval-mode dropout)."""
        was_training = self.training
        self.eval()
        try:
            chars = encode_characters(captions, self.doc_length, lowercase)
            return self(chars.to(self.proj.weight.device))
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return f"steps={self.n_steps}, final_pool={self.final_pool}"


# ----------------------------------------------------------------------------- joint embedding training

@dataclass
class CharCNNRNNConfig:
    """``train_sje_hybrid.lua`` + ``scripts/train_cub_hybrid.sh``: batch 40, RMSprop lr 7e-4 decayed
    x0.98 per epoch, 200 epochs, symmetric loss; emb_dim 1024.  The image side: the official
    trains against pre-extracted 1024-d GoogLeNet features with a no-op image encoder; offline
    there are none, so ``ImageEncoder`` (a small conv net) learns jointly from the pixels."""

    emb_dim: int = 1024
    cnn_dim: int = 256
    doc_length: int = DOC_LENGTH
    final_pool: bool = True
    dropout: float = 0.0
    imsize: int = 64
    image_nf: int = 32
    batch_size: int = 40
    lr: float = 7e-4
    lr_decay: float = 0.98
    max_epoch: int = 200
    symmetric: bool = True

    PRESETS = ("birds", "synthetic")

    @classmethod
    def preset(cls, name: str, **kw) -> "CharCNNRNNConfig":
        if name not in cls.PRESETS:
            raise ValueError(f"preset: expected one of {cls.PRESETS}, got {name!r}")
        return replace(cls(max_epoch=20) if name == "synthetic" else cls(), **kw)

    def encoder_config(self) -> dict:
        return {"emb_dim": self.emb_dim, "cnn_dim": self.cnn_dim, "doc_length": self.doc_length,
                "final_pool": self.final_pool, "dropout": self.dropout}

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CharCNNRNNConfig":
        return cls(**d)


class ImageEncoder(nn.Module):
    """Pixels (B, 3, S, S) in [-1, 1] -> image features (B, emb_dim): stride-2 convs with LeakyReLU
    down to 4x4, average pooling, Linear."""

    def __init__(self, emb_dim: int = 1024, nf: int = 32, imsize: int = 64):
        super().__init__()
        layers, c, s = [], 3, imsize
        while s > 4:
            out = nf * min(8, 2 ** (len(layers) // 2))
            layers += [nn.Conv2d(c, out, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
            c, s = out, s // 2
        self.convs = nn.Sequential(*layers)
        self.fc = nn.Linear(c, emb_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(images).mean(dim=(2, 3)))
