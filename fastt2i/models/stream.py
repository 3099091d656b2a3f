"""MirrorGAN's STREAM captioner (Qiao et al., CVPR 2019; qiaott/MirrorGAN model.py ``CAPTION_CNN``,
``CAPTION_RNN``): the "mirror" that re-describes a generated image.

- ``CAPTION_CNN``: the image, bilinearly resized to 224 x 224, through a frozen ImageNet
  ResNet-152 without its fc (``resnet``: 2048-d pooled feature) -> ``linear`` (2048 -> 256) ->
  ``bn`` (BatchNorm1d, momentum 0.01);
- ``CAPTION_RNN``: ``embed`` (vocab -> 256) -> ``lstm`` (256 -> 512, batch-first) -> ``linear``
  (512 -> vocab).  Teacher forcing: the image feature is the first input, then the caption's
  words; the run is packed by caption length, so step t predicts word t.  ``sample`` decodes
  greedily up to ``max_seg_length`` (20) words.

Parameter names are the official ones (``resnet.*``, ``linear.*``, ``bn.*``; ``embed.*``,
``lstm.*``, ``linear.*``), so a STREAM pair saved by the official code loads unchanged.  The
official weights were never released (qiaott/MirrorGAN issue #6): ``fastt2i train stream``
trains them (``fastt2i.train.families.stream``).

Differences from the official code, on purpose:
- the frozen backbone stays in eval mode (its BatchNorm statistics are part of what is frozen);
  the tutorial code the official STREAM was trained with left it in train mode, so its frozen
  convolutions saw batch statistics;
- the LSTM is packed with ``enforce_sorted=False``: captions need not be sorted by length
  (the loss is the same mean over the same tokens);
- ``input_size`` and ``backbone`` can be lowered for CPU tests and the synthetic demo; the
  defaults (224, ResNet-152) are the official model.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

RESNET_SIZE = 224
MAX_CAPTION_WORDS = 20  # CAPTION_RNN(max_seq_length=20)
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def _resnet(backbone: str, weights):
    """torchvision's ResNet: ``weights`` None (random), ``"imagenet"`` (torchvision's ImageNet
    weights, as the official ``resnet152(pretrained=True)``) or a path to a ResNet state dict."""
    import torchvision.models as tvm

    if backbone not in BACKBONES:
        raise ValueError(f"backbone: expected one of {BACKBONES}, got {backbone!r}")
    build = getattr(tvm, backbone)
    if weights is None:
        return build(weights=None)
    if isinstance(weights, str) and weights.lower() in ("imagenet", "default"):
        try:
            return build(weights="DEFAULT" if backbone != "resnet152" else "IMAGENET1K_V1")
        except Exception as exc:  # noqa: BLE001 - offline machines raise URLError, OSError, ...
            raise RuntimeError(f"cannot download torchvision's ImageNet {backbone} weights "
                               f"({type(exc).__name__}: {exc}); pass weights=<path to a {backbone} .pth> "
                               "or weights=None for a random backbone") from exc
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights: {backbone} file not found: {path}")
        model = build(weights=None)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model
    raise TypeError(f"weights: expected None, 'imagenet' or a path, got {type(weights).__name__}")


class CAPTION_CNN(nn.Module):  # noqa: N801 - official name
    """forward(images (B, 3, H, W), in [-1, 1] as G makes them) -> image features (B, embed_size)."""

    def __init__(self, embed_size: int = 256, weights=None, backbone: str = "resnet152",
                 input_size: int = RESNET_SIZE, align_corners: bool = False):
        super().__init__()
        if embed_size < 1:
            raise ValueError(f"embed_size: expected >= 1, got {embed_size}")
        if input_size < 32:
            raise ValueError(f"input_size: expected >= 32 (official 224), got {input_size}")
        self.embed_size, self.backbone, self.input_size = embed_size, backbone, input_size
        # The official nn.Upsample(mode='bilinear') samples as align_corners=False on torch >= 0.4.
        self.align_corners = align_corners
        resnet = _resnet(backbone, weights)
        self.resnet = nn.Sequential(*list(resnet.children())[:-1])  # everything up to the pooled feature
        self.resnet.requires_grad_(False)
        self.linear = nn.Linear(resnet.fc.in_features, embed_size)
        self.bn = nn.BatchNorm1d(embed_size, momentum=0.01)

    def train(self, mode: bool = True):
        super().train(mode)
        self.resnet.eval()  # frozen, statistics included
        return self

    def backbone_features(self, images: torch.Tensor) -> torch.Tensor:
        """The frozen part: (B, 3, H, W) -> (B, 2048); gradients still flow to the images."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W), got {tuple(images.shape)}")
        x = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=self.align_corners)
        return self.resnet(x).flatten(1)

    def project(self, backbone_features: torch.Tensor) -> torch.Tensor:
        """The trained part: (B, 2048) -> BN(linear(x)) (B, embed_size).  Pretraining can run the
        frozen backbone once per image and train on its features."""
        return self.bn(self.linear(backbone_features))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone_features(images))

    def extra_repr(self) -> str:
        return f"backbone={self.backbone}, input_size={self.input_size}, align_corners={self.align_corners}"


def _check_captions(captions: torch.Tensor, cap_lens, extra: int = 0) -> torch.Tensor:
    if captions.dim() != 2 or captions.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"captions: expected word ids (B, T) int64, got {tuple(captions.shape)} {captions.dtype}")
    lens = torch.as_tensor(cap_lens).to("cpu", torch.int64)
    if lens.dim() != 1 or lens.shape[0] != captions.shape[0]:
        raise ValueError(f"cap_lens: expected ({captions.shape[0]},), got {tuple(lens.shape)}")
    if lens.numel() and (lens.min() < 1 or lens.max() > captions.shape[1] + extra):
        raise ValueError(f"cap_lens: expected lengths in [1, {captions.shape[1] + extra}], "
                         f"got [{lens.min().item()}, {lens.max().item()}]")
    return lens


def pack_targets(captions: torch.Tensor, cap_lens) -> torch.Tensor:
    """The words CAPTION_RNN.forward predicts, in its packed order: (sum(cap_lens),)."""
    lens = _check_captions(captions, cap_lens)
    return pack_padded_sequence(captions, lens, batch_first=True, enforce_sorted=False).data


def with_end_token(captions: torch.Tensor, cap_lens, end_token: int = 0):
    """Captions with the ``<end>`` word appended (index 0 in the DAMSM vocabulary, also the
    padding): (captions (B, T + 1), cap_lens + 1).  STREAM pretraining learns to stop this way;
    the official G loss scores the words only."""
    lens = _check_captions(captions, cap_lens)
    out = F.pad(captions, (0, 1), value=0)
    out[torch.arange(out.shape[0]), lens.to(out.device)] = end_token
    return out, lens + 1


class CAPTION_RNN(nn.Module):  # noqa: N801 - official name
    """forward(features (B, E), captions (B, T), cap_lens (B,)) -> packed logits (sum(cap_lens), vocab);
    ``sample(features)`` -> greedy word ids (B, max_seg_length)."""

    def __init__(self, embed_size: int = 256, hidden_size: int = 512, vocab_size: int = 5450, num_layers: int = 1,
                 max_seq_length: int = MAX_CAPTION_WORDS):
        super().__init__()
        for name, v in (("embed_size", embed_size), ("hidden_size", hidden_size), ("vocab_size", vocab_size),
                        ("num_layers", num_layers), ("max_seq_length", max_seq_length)):
            if v < 1:
                raise ValueError(f"{name}: expected >= 1, got {v}")
        self.embed_size, self.hidden_size, self.vocab_size = embed_size, hidden_size, vocab_size
        self.embed = nn.Embedding(vocab_size, embed_size)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True)
        self.linear = nn.Linear(hidden_size, vocab_size)
        self.max_seg_length = max_seq_length  # the official attribute name

    def _check_features(self, features: torch.Tensor, batch: int | None = None):
        if features.dim() != 2 or features.shape[1] != self.embed_size or (batch is not None and
                                                                          features.shape[0] != batch):
            raise ValueError(f"features: expected ({batch if batch is not None else 'B'}, {self.embed_size}), "
                             f"got {tuple(features.shape)}")

    def forward(self, features: torch.Tensor, captions: torch.Tensor, cap_lens) -> torch.Tensor:
        lens = _check_captions(captions, cap_lens)
        self._check_features(features, captions.shape[0])
        if captions.numel() and (captions.min() < 0 or captions.max() >= self.vocab_size):
            raise ValueError(f"captions: word ids must be in [0, {self.vocab_size}), "
                             f"got [{captions.min().item()}, {captions.max().item()}]")
        embeddings = torch.cat((features.unsqueeze(1).to(self.embed.weight.dtype), self.embed(captions)), 1)
        packed = pack_padded_sequence(embeddings, lens, batch_first=True, enforce_sorted=False)
        hiddens, _ = self.lstm(packed)
        return self.linear(hiddens.data)

    @torch.no_grad()
    def sample(self, features: torch.Tensor, states=None, max_words: int | None = None) -> torch.Tensor:
        """Greedy decoding: the image feature first, then each step's most likely word."""
        self._check_features(features)
        inputs, ids = features.unsqueeze(1).to(self.embed.weight.dtype), []
        for _ in range(max_words or self.max_seg_length):
            hiddens, states = self.lstm(inputs, states)
            predicted = self.linear(hiddens.squeeze(1)).argmax(1)
            ids.append(predicted)
            inputs = self.embed(predicted).unsqueeze(1)
        return torch.stack(ids, 1)


def decode(ids: torch.Tensor, ixtoword: dict | list | None = None, end_token: int = 0) -> list:
    """Greedy ids (B, L) -> per caption the words up to the first ``<end>`` (ids, or strings
    with ``ixtoword``)."""
    out = []
    for row in ids.tolist():
        words = row[:row.index(end_token)] if end_token in row else row
        out.append([ixtoword[w] for w in words] if ixtoword is not None else words)
    return out


class STREAM(nn.Module):
    """The captioner pair: ``caption_cnn`` and ``caption_rnn``; ``describe(images)`` -> greedy ids."""

    def __init__(self, vocab_size: int, embed_size: int = 256, hidden_size: int = 512, weights=None,
                 backbone: str = "resnet152", input_size: int = RESNET_SIZE, align_corners: bool = False):
        super().__init__()
        self.caption_cnn = CAPTION_CNN(embed_size, weights, backbone, input_size, align_corners)
        self.caption_rnn = CAPTION_RNN(embed_size, hidden_size, vocab_size)

    def forward(self, images: torch.Tensor, captions: torch.Tensor, cap_lens) -> torch.Tensor:
        return self.caption_rnn(self.caption_cnn(images), captions, cap_lens)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def describe(self, images: torch.Tensor, max_words: int | None = None) -> torch.Tensor:
        return self.caption_rnn.sample(self.caption_cnn(images), max_words=max_words)


__all__ = ["CAPTION_CNN", "CAPTION_RNN", "MAX_CAPTION_WORDS", "RESNET_SIZE", "STREAM", "decode", "pack_targets",
           "with_end_token"]
