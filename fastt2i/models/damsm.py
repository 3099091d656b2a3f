"""DAMSM, the Deep Attentional Multimodal Similarity Model of AttnGAN (Xu et al., CVPR 2018).

The image side, ``CNNEncoder`` (official name ``CNN_ENCODER``), is Inception-v3 cut in two:

- ``Conv2d_1a_3x3`` ... ``Mixed_6e`` give 768 x 17 x 17 features; ``emb_features`` (1x1 conv,
  no bias) projects them to ``nef`` = 256: the 289 *region* features that words attend to;
- ``Mixed_7a`` ... ``Mixed_7c`` and an 8x8 average pool give 2048 features; ``emb_cnn_code``
  (Linear) projects them to the *image code* matched against sentences.

The submodules keep the official names (they are torchvision's Inception-v3 modules, as in
the official code), so ``image_encoder*.pth`` files load and save with the official keys.
The backbone is frozen; only the two projections train (uniform(-0.1, 0.1) init).

Input: images in [-1, 1], any size, bilinearly resized to 299x299 with no ImageNet
normalisation (the official code feeds the GAN's [-1, 1] images to Inception as they are).

The resize.  The official ``nn.Upsample(size=(299, 299), mode='bilinear')`` was written for
torch 0.3, whose bilinear upsampling sampled as ``align_corners=True``; since torch 0.4 the same
line samples as ``align_corners=False``.  The released DAMSM encoders (``bird``, ``coco``) were
trained with the old behaviour, and the numbers computed with them (AttnGAN's DAMSM losses,
R-precision) assume it, so ``align_corners=True`` is the default here.  ``align_corners=False``
reproduces the official code as it runs on a current torch (the parity tests use it).

The text side is ``fastt2i.text.RNNEncoder`` (``RNN_ENCODER``), re-exported here.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i.text import RNN_ENCODER, RNNEncoder

from ._checkpoint import load_state_dict_checked, read_weights, strip_module_prefix

INCEPTION_SIZE = 299
REGION_SIZE = 17  # Mixed_6e's 17 x 17 grid: 289 regions

# The Inception-v3 modules CNN_ENCODER keeps, in order, split where the region features are taken.
REGION_STEM = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
               "maxpool", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
               "Mixed_6e")
CODE_HEAD = ("Mixed_7a", "Mixed_7b", "Mixed_7c")
BACKBONE = tuple(n for n in REGION_STEM if n != "maxpool") + CODE_HEAD


def _inception_v3(weights):
    """torchvision's Inception-v3: ``None`` random, ``"imagenet"`` torchvision's ImageNet weights
    (downloaded once to the torch hub cache), or a path to an Inception-v3 state dict."""
    try:
        from torchvision.models import inception_v3
    except ImportError as exc:  # pragma: no cover - torchvision is a dependency
        raise ImportError("the DAMSM image encoder needs torchvision (see the README for the pinned version)") from exc
    if weights is None:
        # init_weights=False: torchvision's default init (a truncated normal per conv), without
        # its deprecation warning; the values are irrelevant for a random backbone.
        return inception_v3(weights=None, aux_logits=False, init_weights=False)
    if isinstance(weights, str) and weights.lower() in ("imagenet", "default"):
        from torchvision.models import Inception_V3_Weights

        try:
            return inception_v3(weights=Inception_V3_Weights.IMAGENET1K_V1, aux_logits=True)
        except Exception as exc:  # noqa: BLE001 - offline machines raise URLError, OSError, ...
            raise RuntimeError("cannot download torchvision's ImageNet Inception-v3 weights "
                               f"({type(exc).__name__}: {exc}); pass weights=<path to inception_v3 .pth> "
                               "or weights=None for a random backbone") from exc
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights: Inception-v3 file not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = inception_v3(weights=None, aux_logits="AuxLogits.fc.weight" in state, init_weights=False)
        model.load_state_dict(state)
        return model
    raise TypeError(f"weights: expected None, 'imagenet' or a path, got {type(weights).__name__}")


class CNNEncoder(nn.Module):
    """AttnGAN's ``CNN_ENCODER``: forward(images (B, 3, H, W) in [-1, 1]) ->
    (region features (B, nef, 17, 17), image code (B, nef)).

    Args:
        nef: the joint embedding size (``TEXT.EMBEDDING_DIM``, 256).
        weights: the backbone: ``None`` (random: tests, or weights loaded afterwards from an
            ``image_encoder*.pth``), ``"imagenet"`` (torchvision's ImageNet weights, as the
            official code for pretraining) or a path to an Inception-v3 state dict.
        align_corners: the resize to 299 (see the module docstring): True (default) the
            torch 0.3 sampling that released encoders were trained with, False the official
            code as it runs today.
        input_size: the side images are resized to: 299 (official; 17 x 17 regions).  Smaller
            sizes (>= 139: 7 x 7 regions) make CPU runs of the synthetic demo affordable; they
            are not the official model.
    """

    def __init__(self, nef: int = 256, weights=None, align_corners: bool = True, input_size: int = INCEPTION_SIZE):
        super().__init__()
        if nef < 1:
            raise ValueError(f"nef: expected >= 1, got {nef}")
        if input_size < 139:
            raise ValueError(f"input_size: Inception-v3 needs >= 139 (official 299), got {input_size}")
        self.nef, self.align_corners, self.input_size = nef, align_corners, input_size
        inception = _inception_v3(weights)
        for name in BACKBONE:
            setattr(self, name, getattr(inception, name))
        for name in BACKBONE:
            getattr(self, name).requires_grad_(False)
        self.emb_features = nn.Conv2d(768, nef, kernel_size=1, stride=1, padding=0, bias=False)
        self.emb_cnn_code = nn.Linear(2048, nef)
        self.init_trainable_weights()

    def init_trainable_weights(self) -> None:
        nn.init.uniform_(self.emb_features.weight, -0.1, 0.1)
        nn.init.uniform_(self.emb_cnn_code.weight, -0.1, 0.1)
        # emb_cnn_code.bias keeps nn.Linear's default init, as the official code

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def resize(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                             align_corners=self.align_corners)

    def forward(self, x: torch.Tensor):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"images: expected (B, 3, H, W) in [-1, 1], got {tuple(x.shape)}")
        x = self.resize(x)
        for name in REGION_STEM:
            x = F.max_pool2d(x, kernel_size=3, stride=2) if name == "maxpool" else getattr(self, name)(x)
        regions = x                                        # (B, 768, 17, 17)
        for name in CODE_HEAD:
            x = getattr(self, name)(x)                     # (B, 2048, 8, 8)
        code = F.adaptive_avg_pool2d(x, 1).flatten(1)      # (B, 2048): the official 8x8 average pool at 299
        return self.emb_features(regions), self.emb_cnn_code(code)

    def extra_repr(self) -> str:
        return f"nef={self.nef}, align_corners={self.align_corners}, input_size={self.input_size}"


CNN_ENCODER = CNNEncoder  # the official class name


# ----------------------------------------------------------------------------- official files

def _fill_batchnorm_counters(module: nn.Module, state: dict) -> dict:
    """Files saved by torch < 0.4.1 have no BatchNorm ``num_batches_tracked``: take the module's."""
    own = module.state_dict()
    state = dict(state)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = value
    return state


def load_image_encoder(encoder: CNNEncoder, source) -> CNNEncoder:
    """Load an official ``image_encoder*.pth`` (or a fastt2i one: same keys) into ``encoder``.

    ``source`` is a path or a state dict; DDP's ``module.`` prefixes are removed; any
    missing, unexpected or mis-shaped key raises StateDictMismatchError naming them."""
    if not isinstance(encoder, CNNEncoder):
        raise TypeError(f"load_image_encoder: expected a CNNEncoder, got {type(encoder).__name__}")
    state = read_weights(source, "load_image_encoder")
    if not isinstance(state, dict):
        raise TypeError(f"load_image_encoder: expected a state dict, got {type(state).__name__}")
    state = _fill_batchnorm_counters(encoder, strip_module_prefix(state))
    load_state_dict_checked(encoder, state, "image encoder")
    encoder.requires_grad_(False)
    encoder.emb_features.requires_grad_(True)
    encoder.emb_cnn_code.requires_grad_(True)
    return encoder


def load_text_encoder(encoder: RNNEncoder, source) -> RNNEncoder:
    """Load an official ``text_encoder*.pth`` into ``encoder``; a vocabulary of another size
    gives a clear error (the embedding's shape names both sizes)."""
    state = read_weights(source, "load_text_encoder")
    if not isinstance(state, dict):
        raise TypeError(f"load_text_encoder: expected a state dict, got {type(state).__name__}")
    state = strip_module_prefix(state)
    emb = state.get("encoder.weight")
    if emb is not None and emb.shape[0] != encoder.ntoken:
        raise ValueError(f"text encoder: the file has a vocabulary of {emb.shape[0]} words, the encoder "
                         f"{encoder.ntoken}; use the captions.pickle that goes with the encoder")
    return load_state_dict_checked(encoder, state, "text encoder")


def save_encoders(image_encoder: CNNEncoder, text_encoder: RNNEncoder, directory: str, epoch: int) -> tuple[str, str]:
    """Write ``image_encoder{epoch}.pth`` and ``text_encoder{epoch}.pth`` as the official
    ``pretrain_DAMSM.py`` does (plain state dicts, official keys); returns the two paths."""
    from fastt2i.train.checkpoint import atomic_save

    os.makedirs(directory, exist_ok=True)
    img = os.path.join(directory, f"image_encoder{epoch}.pth")
    txt = os.path.join(directory, f"text_encoder{epoch}.pth")
    atomic_save(image_encoder.state_dict(), img)
    atomic_save(text_encoder.state_dict(), txt)
    return img, txt


# ----------------------------------------------------------------------------- pretraining losses

def damsm_losses(image_encoder: CNNEncoder, text_encoder: RNNEncoder, images: torch.Tensor,
                 captions: torch.Tensor, cap_lens: torch.Tensor, class_ids=None,
                 gamma1: float = 4.0, gamma2: float = 5.0, gamma3: float = 10.0) -> dict:
    """The four DAMSM pretraining losses of one batch, as the official ``pretrain_DAMSM.train``.

    Returns ``{"w_loss0", "w_loss1", "s_loss0", "s_loss1", "loss"}`` (``loss`` is their sum),
    the word losses through the fused ``damsm_word_loss``.
    """
    from fastt2i.losses import damsm_sentence_loss, damsm_word_loss

    regions, code = image_encoder(images)
    words, sent = text_encoder(captions, cap_lens)
    lengths = torch.as_tensor(cap_lens).to(words.device)
    w0, w1 = damsm_word_loss(words, lengths, regions, class_ids=class_ids, gamma1=gamma1, gamma2=gamma2,
                             gamma3=gamma3)
    s0, s1 = damsm_sentence_loss(sent, code, class_ids=class_ids, gamma3=gamma3)
    return {"w_loss0": w0, "w_loss1": w1, "s_loss0": s0, "s_loss1": s1, "loss": w0 + w1 + s0 + s1}


__all__ = ["CNNEncoder", "CNN_ENCODER", "RNNEncoder", "RNN_ENCODER", "damsm_losses", "load_image_encoder",
           "load_text_encoder", "save_encoders"]
