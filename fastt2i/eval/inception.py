"""Inception-v3 feature extractors for FID and IS, one per named protocol.

``torchvision``   DF-GAN's: torchvision's ImageNet Inception-v3.  Images in [0, 1] are resized
                  bilinearly to 299x299 and normalised with the ImageNet mean/std; the network
                  (built as torchvision builds its pretrained model, ``transform_input=True``)
                  maps that back to the [-1, 1] range its ported Google weights expect.
                  pool3 = 2048-d average pool; logits = its 1000-class head.
``torchvision-legacy``  torchvision's ImageNet Inception-v3 behind the InceptionV3 wrapper of early
                  pytorch-fid, as DF-GAN-based repositories ship it in ``code/models/inception.py``:
                  it maps its [0, 1] input with torchvision's ``transform_input`` formula as if
                  the input were ImageNet-normalised, x * std / 0.5 + (mean - 0.5) / 0.5 per
                  channel, so the network sees about [-0.19, 0.43] instead of [-1, 1].  DF-GAN's
                  own ``models/inception.py`` is not in its public repository; forks carry either
                  this file or pytorch-fid's later one (which is ``tf-inception``), so both are
                  offered, named.
``tf-inception``  The network of the original TensorFlow FID (the 2015-12-05 ImageNet graph) as
                  pytorch-fid ports it: torchvision's layout with a 1008-class head, TF's
                  average pooling that ignores padded pixels in the Mixed 5/6/7b blocks and a
                  max pool in Mixed_7c's pool branch.  Images in [0, 1] resized bilinearly to
                  299x299, then scaled to [-1, 1].

Both resize with ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``
(what pytorch-fid does and what ``transforms.Resize`` does when upsampling 256 -> 299, where
antialiasing has no effect).  Weights: a path to a state dict, ``"download"`` (torchvision's
weights, or pytorch-fid's release file ``pt_inception-2015-12-05``), or ``None`` / ``"random"``
for a random network (smoke tests only: its numbers mean nothing, and the results say so).
"""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import inception as tv_inception

PROTOCOLS = ("torchvision", "torchvision-legacy", "tf-inception")
INPUT_SIZE = 299
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ported TF weights, as pytorch-fid publishes them (used only by weights="download").
TF_INCEPTION_URL = ("https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                    "pt_inception-2015-12-05-6726825d.pth")
NUM_CLASSES = {"torchvision": 1000, "torchvision-legacy": 1000, "tf-inception": 1008}
FEATURE_DIM = 2048


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ValueError(f"FID/IS protocol: expected one of {PROTOCOLS}, got {protocol!r}")
    return protocol


def check_images01(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name}: expected a (N, 3, H, W) float tensor in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"{name}: expected a float tensor in [0, 1], got {images.dtype} "
                        "(convert uint8 pixels with .float() / 255)")
    return images


def resize_to_input(images: torch.Tensor) -> torch.Tensor:
    """Bilinear resize to 299x299 (half-pixel centres, no antialiasing), float32."""
    images = images.float()
    if images.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
        return images
    return F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False,
                         antialias=False)


def preprocess(images: torch.Tensor, protocol: str) -> torch.Tensor:
    """Images (N, 3, H, W) in [0, 1] -> the network input of ``protocol`` (N, 3, 299, 299) float32."""
    check_protocol(protocol)
    x = resize_to_input(check_images01(images))
    mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    if protocol == "torchvision":
        return (x - mean) / std
    if protocol == "torchvision-legacy":  # transform_input's formula on [0, 1] pixels (see the module doc)
        return x * (std / 0.5) + (mean - 0.5) / 0.5
    return x * 2 - 1


# ----------------------------------------------------------------------------- TF-FID blocks
def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TF's 3x3 SAME average pool divides by the number of valid pixels, not by 9.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class TFInceptionA(tv_inception.InceptionA):
    """InceptionA (Mixed_5b/c/d) with TF's average pool in the pool branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch_1x1 = self.branch1x1(x)
        branch_5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch_double_3x3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([branch_1x1, branch_5x5, branch_double_3x3, branch_pool], 1)


class TFInceptionC(tv_inception.InceptionC):
    """InceptionC (Mixed_6b/c/d/e) with TF's average pool in the pool branch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch_1x1 = self.branch1x1(x)
        branch_7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        y = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                     self.branch7x7dbl_5):
            y = conv(y)
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([branch_1x1, branch_7x7, y, branch_pool], 1)


class TFInceptionE(tv_inception.InceptionE):
    """InceptionE (Mixed_7b: TF average pool; Mixed_7c: max pool, as the TF graph has it)."""

    def __init__(self, in_channels: int, pool: str):
        super().__init__(in_channels)
        if pool not in ("avg", "max"):
            raise ValueError(f"pool: expected 'avg' or 'max', got {pool!r}")
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch_1x1 = self.branch1x1(x)
        y = self.branch3x3_1(x)
        branch_3x3 = torch.cat([self.branch3x3_2a(y), self.branch3x3_2b(y)], 1)
        y = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch_double_3x3 = torch.cat([self.branch3x3dbl_3a(y), self.branch3x3dbl_3b(y)], 1)
        pooled = _tf_avg_pool(x) if self.pool == "avg" else F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        branch_pool = self.branch_pool(pooled)
        return torch.cat([branch_1x1, branch_3x3, branch_double_3x3, branch_pool], 1)

    def extra_repr(self) -> str:
        return f"pool={self.pool}"


def tf_fid_inception_v3() -> tv_inception.Inception3:
    """The TF-FID Inception-v3 layout (random weights): keys match pytorch-fid's weight file."""
    net = tv_inception.Inception3(num_classes=1008, aux_logits=False, transform_input=False, init_weights=False)
    net.Mixed_5b = TFInceptionA(192, pool_features=32)
    net.Mixed_5c = TFInceptionA(256, pool_features=64)
    net.Mixed_5d = TFInceptionA(288, pool_features=64)
    net.Mixed_6b = TFInceptionC(768, channels_7x7=128)
    net.Mixed_6c = TFInceptionC(768, channels_7x7=160)
    net.Mixed_6d = TFInceptionC(768, channels_7x7=160)
    net.Mixed_6e = TFInceptionC(768, channels_7x7=192)
    net.Mixed_7b = TFInceptionE(1280, pool="avg")
    net.Mixed_7c = TFInceptionE(2048, pool="max")
    return net


def torchvision_inception_v3() -> tv_inception.Inception3:
    """torchvision's Inception-v3 as its ImageNet weights are used (random weights here)."""
    return tv_inception.Inception3(num_classes=1000, aux_logits=True, transform_input=True, init_weights=False)


# ----------------------------------------------------------------------------- extractor
_TRUNK = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
          "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _random_init(net: nn.Module) -> None:
    # He-normal weights: with eval-mode BatchNorm acting as the identity, activations keep their
    # scale through the ~50 layers, so random features still differ between images (PyTorch's
    # default init shrinks them towards a constant and every FID of a random net would be 0).
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _load_weights(net: nn.Module, protocol: str, weights) -> str:
    """Load ``weights`` into ``net``; returns a description of where they came from."""
    if weights is None or weights == "random":
        _random_init(net)
        return "random (testing only)"
    if isinstance(weights, dict):
        state, origin = weights, "state dict"
    elif weights == "download":
        tv = protocol != "tf-inception"
        url = tv_inception.Inception_V3_Weights.IMAGENET1K_V1.url if tv else TF_INCEPTION_URL
        origin = "torchvision IMAGENET1K_V1" if tv else url.rsplit("/", 1)[-1]
        try:
            state = torch.hub.load_state_dict_from_url(url, progress=True, check_hash=tv)
        except OSError as exc:  # offline: URLError and socket errors are OSErrors
            raise RuntimeError(f"cannot download the {protocol} Inception weights ({url}): {exc}. Offline, pass "
                               "--inception-weights PATH (a state dict file)") from exc
    else:
        path = os.fspath(weights)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"Inception weights ({protocol}) not found: {path}")
        state = torch.load(path, map_location="cpu", weights_only=True)
        origin = os.path.basename(path)
    if not isinstance(state, dict):
        raise ValueError(f"Inception weights ({protocol}): expected a state dict, got {type(state).__name__}")
    if protocol != "tf-inception":
        # the auxiliary classifier is unused at evaluation; a file without it is fine
        state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
        net.AuxLogits = None
    own = net.state_dict()
    mis_shaped = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
                  if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected or mis_shaped:
        raise ValueError(f"Inception weights ({protocol}, {origin}) do not fit the {protocol} network: "
                         f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
                         f"mis-shaped {mis_shaped[:3]}{'...' if len(mis_shaped) > 3 else ''}")
    net.load_state_dict(state)
    return origin


class InceptionFeatures(nn.Module):
    """Inception-v3 of a named protocol: images in [0, 1] -> (pool3 (N, 2048), logits (N, C)) float32.

    ``C`` is 1000 for the torchvision protocols and 1008 for ``tf-inception``.  Frozen, always in eval mode.
    """

    def __init__(self, protocol: str = "torchvision", weights="download"):
        super().__init__()
        self.protocol = check_protocol(protocol)
        self.net = tf_fid_inception_v3() if protocol == "tf-inception" else torchvision_inception_v3()
        self.weights = _load_weights(self.net, protocol, weights)
        self.net.AuxLogits = None
        self.num_classes = NUM_CLASSES[protocol]
        self.feature_dim = FEATURE_DIM
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # BatchNorm must keep its running statistics
        return super().train(False)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images, self.protocol)
        if self.protocol == "torchvision":
            # torchvision's transform_input, done here once rather than inside the network
            x = self.net._transform_input(x)
        return x

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.preprocess(images.to(next(self.parameters()).device))
        for name in _TRUNK:
            x = getattr(self.net, name)(x)
        pool3 = torch.flatten(self.net.avgpool(x), 1)
        logits = self.net.fc(pool3)
        return pool3.float(), logits.float()

    def extra_repr(self) -> str:
        return f"protocol={self.protocol}, weights={self.weights}"
