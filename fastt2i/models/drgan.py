"""DR-GAN (Tan et al., "DR-GAN: Distribution Regularization for Text-to-Image Generation", TNNLS 2022;
public draft code Tan-H-C/DR-GAN-Distribution-Regularization-for-Text-to-Image-Generation, model.py).

AttnGAN (``fastt2i.models.attngan``) with two additions; only the differences live here.

Generator: each ``NEXT_STAGE_G`` is an SDM (semantic disentangling module):
  Q0 = word attention of h over the words (``att``, the fused ``WordRegionAttention``);
  Q = R_NUM ResBlocks (``residual0``) on Q0;
  spatial masks sigma(f(.)) with f = conv3x3 -> BN -> LeakyReLU(0.2) -> conv1x1 -> BN
  (``reduct_demension`` for Q, ``reduct_demension2`` for h) split each into a key part
  sigma(f) * x and a non-key part (1 - sigma(f)) * x (``gate_split``);
  concat(key h, key Q) -> R_NUM ResBlocks (``residual``) -> upBlock (``upsample``).
  RIRM (real-image reconstruction): an encoder (``img_code_sxx``: conv2x2 -> BN -> LReLU ->
  conv2x2 -> BN) turns the real image at the stage's input size into real features H*, and the
  previous stage's image head decodes them back (a Siamese pair with G's own head).  The
  semantic-disentangling loss compares batch means and variances of the pooled, projected
  (``global_reduction``: conv1x1 -> BN -> ReLU) key / non-key parts with those of H*
  (``fastt2i.losses.drgan``).  The image heads are deeper than AttnGAN's: conv3x3 -> BN -> tanh
  -> conv3x3 -> BN -> tanh -> conv3x3 -> tanh.

Discriminators: AttnGAN's D_NET64/128/256 with spectral norm on every conv of the image encoder
and the joint conv (convs with bias, no BN), and a DNM (distribution normalisation module):
the D feature (D64: the 8 ndf x 4 x 4 code; D128 / D256: the deepest downsampled code) ->
global average pool -> ``global_reduction`` (conv1x1 -> 256, BN, ReLU) -> the D's own
``ca_net`` gives (mu, logvar) of 100 and z* = mu + sigma * eps; the decoder ``h_net1``
(AttnGAN's INIT_STAGE_G with 16 ndf) takes (CA(sentence), z*) to ndf x 64 x 64 and
``img_code_s1`` (conv1x1 -> 3, LeakyReLU) gives a 64 x 64 reconstruction of the image.

``DRGANConfig.preset``: ``birds`` / ``coco`` follow the paper's equations (the default); ``draft``
reproduces the draft code, whose differences are listed in the README.  Parameter names are
the draft code's wherever the module exists there (``h_net2.reduct_demension.0.weight``,
``img_code_s16.0.module.weight_bar``, ...), so its state dicts load; modules the draft builds but
never uses in a forward (D_NET256's copies of G stages, G's ``global_reductionxx``) have no
counterpart here and ``load_official_state_dict`` drops their keys by name.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from fastt2i import ops

from . import attngan
from ._checkpoint import (
    CheckpointLayout,
    StateDictMismatchError,
    check_family,
    load_state_dict_checked,
    load_weights,
    read_weights,
    register_layout,
    strip_module_prefix,
)
from ._config import PresetConfig
from .attngan import CA_NET, INIT_STAGE_G, AttnGANConfig, ResBlock, conv3x3


# ----------------------------------------------------------------------------- config

@dataclass
class DRGANConfig(AttnGANConfig, PresetConfig):
    """AttnGAN's constants with DR-GAN's: GF 64 / DF 32, lambda_DAMSM 5 (birds) / 50 (coco).

    ``draft`` switches every place where the draft code departs from the paper's equations
    (the gate logits divided by the batch size, the semantic-disentangling loss's constants,
    its exp terms and its variance, the D's KL of the real branch counted twice with the fake
    branch's mu / logvar unused).  The paper gives no values for the weights of its loss terms
    (lambda_1..3 of the SDL, the DNM's); they default to 1."""

    PRESETS = ("birds", "coco", "draft", "synthetic")

    gf_dim: int = 64
    df_dim: int = 32
    draft: bool = False
    lambda_sdl_h: float = 1.0     # lambda_1: the SDL on h's key / non-key parts
    lambda_sdl_q: float = 1.0     # lambda_2: on the word context's
    lambda_rirm: float = 1.0      # lambda_3: L1 reconstruction of the real image through RIRM
    lambda_dnm_rec: float = 1.0   # DNM's reconstruction term in D
    lambda_dnm_kl: float = 1.0    # DNM's KL term in D

    def __post_init__(self):
        super().__post_init__()
        if self.b_dcgan:
            raise ValueError("b_dcgan: DR-GAN needs a per-stage image head (RIRM decodes through it); "
                             "b_dcgan=True is not supported")
        for name in ("lambda_sdl_h", "lambda_sdl_q", "lambda_rirm", "lambda_dnm_rec", "lambda_dnm_kl"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")

    @classmethod
    def coco(cls, **kw) -> "DRGANConfig":
        return replace(cls(dataset="coco", r_num=3, batch_size=14, words_num=12, captions_per_image=5,
                           max_epoch=120, lambda_damsm=50.0), **kw)

    @classmethod
    def draft_code(cls, **kw) -> "DRGANConfig":
        return replace(cls(draft=True), **kw)

    @classmethod
    def synthetic(cls, **kw) -> "DRGANConfig":
        return replace(cls(dataset="synthetic", gf_dim=8, df_dim=8, r_num=1, batch_size=8, captions_per_image=1,
                           lambda_damsm=0.5), **kw)

    @classmethod
    def preset(cls, name: str, **kw) -> "DRGANConfig":
        if name == "draft":
            return cls.draft_code(**kw)
        return PresetConfig.preset.__func__(cls, name, **kw)


# ----------------------------------------------------------------------------- the spatial gate

def gate_split(gate_logits: torch.Tensor, x: torch.Tensor):
    """SDM's spatial mask: (key, non-key) = (sigmoid(l) * x, (1 - sigmoid(l)) * x), through the fused
    op ``fastt2i.ops.gate_split`` (one read of l and x, both parts written in one pass; the
    reference backend runs it in plain PyTorch).

    ``gate_logits`` is (B, 1, H, W) (one mask broadcast over the channels) or shaped exactly as
    ``x`` (B, C, H, W).  Every gate of DR-GAN goes through this one function."""
    return ops.gate_split(gate_logits, x)


def gate_net(channels: int) -> nn.Sequential:
    """f of the spatial mask: conv3x3 -> BN -> LeakyReLU(0.2) -> conv1x1 -> BN (the draft's
    ``encode_non_local``), logits shaped as the input."""
    return nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels),
                         nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(channels, channels, 1, 1, 0, bias=False),
                         nn.BatchNorm2d(channels))


def rirm_encoder(ngf: int) -> nn.Sequential:
    """RIRM's encoder: real image (B, 3, S, S) -> H* (B, ngf, S, S) (the draft's
    ``encode_image_by_2timesxx``: conv2x2 pad 1 -> BN -> LReLU -> conv2x2 -> BN)."""
    return nn.Sequential(nn.Conv2d(3, ngf // 2, 2, 1, 1, bias=False), nn.BatchNorm2d(ngf // 2),
                         nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ngf // 2, ngf, 2, 1, 0, bias=False),
                         nn.BatchNorm2d(ngf))


# ----------------------------------------------------------------------------- generator

class NEXT_STAGE_G(attngan.NEXT_STAGE_G):  # noqa: N801
    """SDM stage: h (B, ngf, S, S) -> (B, ngf, 2S, 2S) and the word attention; with the real image
    at S x S, also the features of the semantic-disentangling loss and RIRM's real features."""

    def __init__(self, ngf: int, nef: int, ncf: int, r_num: int = 2, official_mask: bool = False,
                 draft: bool = False):
        super().__init__(ngf, nef, ncf, r_num, official_mask)  # att, residual (2 ngf), upsample
        if ngf % 2:
            raise ValueError(f"gf_dim: DR-GAN needs an even number of channels, got {ngf}")
        self.draft = draft
        self.residual0 = nn.Sequential(*[ResBlock(ngf) for _ in range(r_num)])
        self.reduct_demension = gate_net(ngf)    # Q's mask
        self.reduct_demension2 = gate_net(ngf)   # h's mask
        self.img_code_sxx = rirm_encoder(ngf)
        self.global_reduction = nn.Sequential(nn.Conv2d(ngf, ngf, 1), nn.BatchNorm2d(ngf), nn.ReLU())

    def _gate_logits(self, f: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = f(x)
        return logits / x.shape[0] if self.draft else logits  # the draft scales the logits by 1 / batch

    def _pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.global_reduction(F.adaptive_avg_pool2d(x, 1)).flatten(1)

    def forward(self, h_code, c_code, word_embs, mask, return_attention: bool = True, real_img=None):
        q, att = self.att(h_code, word_embs, mask, return_attention=return_attention)
        q = self.residual0(q)
        key_q, nonkey_q = gate_split(self._gate_logits(self.reduct_demension, q), q)
        key_h, nonkey_h = gate_split(self._gate_logits(self.reduct_demension2, h_code), h_code)
        out = self.upsample(self.residual(torch.cat((key_h, key_q), 1)))
        if real_img is None:
            return out, att
        if real_img.dim() != 4 or tuple(real_img.shape[1:]) != (3,) + tuple(h_code.shape[2:]):
            raise ValueError(f"real image of this stage: expected (B, 3, {h_code.shape[2]}, {h_code.shape[3]}), "
                             f"got {tuple(real_img.shape)}")
        real = self.img_code_sxx(real_img.to(h_code.dtype))
        # one BN call per part, in the draft's order (each part has its own batch statistics)
        sdm = {"key_q": self._pooled(key_q), "nonkey_q": self._pooled(nonkey_q), "key_h": self._pooled(key_h),
               "nonkey_h": self._pooled(nonkey_h), "real": self._pooled(real), "real_features": real}
        return out, att, sdm


class GET_IMAGE_G(nn.Module):  # noqa: N801
    """DR-GAN's deeper image head: conv3x3 (ngf/2) -> BN -> tanh -> conv3x3 (ngf/4) -> BN -> tanh
    -> conv3x3 (3) -> tanh."""

    def __init__(self, ngf: int):
        super().__init__()
        self.gf_dim = ngf
        self.img = nn.Sequential(conv3x3(ngf, ngf // 2), nn.BatchNorm2d(ngf // 2), nn.Tanh(),
                                 conv3x3(ngf // 2, ngf // 4), nn.BatchNorm2d(ngf // 4), nn.Tanh(),
                                 conv3x3(ngf // 4, 3), nn.Tanh())

    def forward(self, h_code: torch.Tensor) -> torch.Tensor:
        return self.img(h_code)


class G_NET(attngan.G_NET):  # noqa: N801
    """forward(z, sent_emb, words, mask, ca_noise, return_attention, real_imgs=None)
    -> (fake images per stage, attention maps, mu, logvar) and, with ``real_imgs`` (the real
    images per stage, at least the first branch_num - 1), a list per SDM stage of its loss
    features: pooled key / non-key parts of Q and h and of the real features H* (each (B, ngf)),
    ``recon`` (RIRM's reconstruction of the real image through the previous stage's head) and
    ``real_img``."""

    def __init__(self, config: DRGANConfig | None = None):
        c = config or DRGANConfig()
        if c.gf_dim % 4:
            raise ValueError(f"gf_dim: DR-GAN's image heads need a multiple of 4, got {c.gf_dim}")
        super().__init__(c)
        for stage in range(1, c.branch_num + 1):
            setattr(self, f"img_net{stage}", GET_IMAGE_G(c.gf_dim))
        for stage in range(2, c.branch_num + 1):
            setattr(self, f"h_net{stage}", NEXT_STAGE_G(c.gf_dim, c.embedding_dim, c.condition_dim, c.r_num,
                                                        c.official_mask, c.draft))

    def forward(self, z_code, sent_emb, word_embs, mask=None, ca_noise=None, return_attention: bool = True,
                real_imgs=None):
        if real_imgs is None:
            return super().forward(z_code, sent_emb, word_embs, mask, ca_noise, return_attention)
        c = self.config
        if len(real_imgs) < c.branch_num - 1:
            raise ValueError(f"real_imgs: expected the real images of the first {c.branch_num - 1} stages, "
                             f"got {len(real_imgs)}")
        attngan._check_inputs(z_code, sent_emb, word_embs, mask, c.z_dim, c.embedding_dim)
        c_code, mu, logvar = self.ca_net(sent_emb, ca_noise)
        h_code = self.h_net1(z_code, c_code)
        fake_imgs, att_maps, sdm = [self.img_net1(h_code)], [], []
        for stage in range(2, c.branch_num + 1):
            h_code, att, feats = getattr(self, f"h_net{stage}")(
                h_code, c_code, word_embs.to(h_code.dtype), mask, return_attention=return_attention,
                real_img=real_imgs[stage - 2])
            fake_imgs.append(getattr(self, f"img_net{stage}")(h_code))
            feats["recon"] = getattr(self, f"img_net{stage - 1}")(feats.pop("real_features"))
            feats["real_img"] = real_imgs[stage - 2]
            sdm.append(feats)
            if att is not None:
                att_maps.append(att)
        return fake_imgs, att_maps, mu, logvar, sdm


# ----------------------------------------------------------------------------- discriminators

class SpectralNorm(nn.Module):
    """Spectral normalisation of ``module.weight`` (the draft's wrapper: ``module.weight_bar``
    holds the weight, ``module.weight_u`` / ``module.weight_v`` the power-iteration vectors):
    W / sigma with sigma = u . (W v) after one power iteration per forward in training mode.
    (The draft also iterates in eval mode; here u and v stay fixed there, as torch's spectral_norm.)"""

    def __init__(self, module: nn.Conv2d, eps: float = 1e-12):
        super().__init__()
        self.module, self.eps = module, eps
        w = module.weight
        del module._parameters["weight"]
        height = w.shape[0]
        module.register_parameter("weight_bar", nn.Parameter(w.detach().clone()))
        u = torch.randn(height)
        v = torch.randn(w[0].numel())
        module.register_buffer("weight_u", u / (u.norm() + eps))
        module.register_buffer("weight_v", v / (v.norm() + eps))

    def normalised_weight(self) -> torch.Tensor:
        m = self.module
        w = m.weight_bar
        mat = w.reshape(w.shape[0], -1)
        if self.training:
            with torch.no_grad():
                v = mat.t().mv(m.weight_u.to(mat.dtype))
                v = v / (v.norm() + self.eps)
                u = mat.mv(v)
                u = u / (u.norm() + self.eps)
            # swapped in as the draft does (``.data`` assignment): a graph built by an earlier
            # forward of this step sees the latest vectors in its backward, as in the draft
            m.weight_u.data = u.to(m.weight_u.dtype)
            m.weight_v.data = v.to(m.weight_v.dtype)
        return w / m.weight_u.to(mat.dtype).dot(mat.mv(m.weight_v.to(mat.dtype)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # the power iteration and sigma in the weight's dtype
            w = self.normalised_weight()
        return self.module._conv_forward(x, w.to(x.dtype), None if self.module.bias is None
                                         else self.module.bias.to(x.dtype))


def _sn_conv(cin: int, cout: int, k: int, s: int, p: int) -> SpectralNorm:
    return SpectralNorm(nn.Conv2d(cin, cout, k, s, p, bias=True))


def Block3x3_leakRelu(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802 - official name
    return nn.Sequential(_sn_conv(in_planes, out_planes, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True))


def downBlock(in_planes: int, out_planes: int) -> nn.Sequential:  # noqa: N802 - official name
    return nn.Sequential(_sn_conv(in_planes, out_planes, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True))


def encode_image_by_16times(ndf: int) -> nn.Sequential:
    """Four spectrally normalised conv4x4 stride-2 layers with bias (3 -> ndf -> 2 -> 4 -> 8 ndf), no BN."""
    layers, cin = [], 3
    for cout in (ndf, ndf * 2, ndf * 4, ndf * 8):
        layers += [_sn_conv(cin, cout, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True)]
        cin = cout
    return nn.Sequential(*layers)


class D_GET_LOGITS(attngan.D_GET_LOGITS):  # noqa: N801
    """AttnGAN's head with a spectrally normalised joint conv (with bias, no BN)."""

    def __init__(self, ndf: int, nef: int, bcondition: bool = False):
        super().__init__(ndf, nef, bcondition)
        if bcondition:
            self.jointConv = Block3x3_leakRelu(ndf * 8 + nef, ndf * 8)


class _DNet(attngan._DNet):
    """The DNM shared by the three Ds (see the module docstring)."""

    def __init__(self, ndf: int, nef: int, ncf: int, b_jcu: bool, pooled_channels: int):
        nn.Module.__init__(self)
        self.df_dim, self.ef_dim = ndf, nef
        self.img_code_s16 = encode_image_by_16times(ndf)
        self.ca_net = CA_NET(nef, ncf)
        self.h_net1 = INIT_STAGE_G(ndf * 16, ncf, z_dim=ncf)
        self.img_code_s1 = nn.Sequential(nn.Conv2d(ndf, 3, 1, 1, 0, bias=False), nn.LeakyReLU(0.2, inplace=True))
        self.global_reduction = nn.Sequential(nn.Conv2d(pooled_channels, nef, 1), nn.BatchNorm2d(nef), nn.ReLU())
        self.UNCOND_DNET = D_GET_LOGITS(ndf, nef, bcondition=False) if b_jcu else None
        self.COND_DNET = D_GET_LOGITS(ndf, nef, bcondition=True)

    def forward(self, x_var: torch.Tensor) -> torch.Tensor:
        """The heads' 8 ndf x 4 x 4 features (what AttnGAN's losses take)."""
        return self.features(x_var)[0]

    def normalise(self, pooled_source: torch.Tensor, sent_emb: torch.Tensor, sent_noise=None, image_noise=None):
        """DNM: (reconstruction (B, 3, 64, 64), mu, logvar) from the D code it pools.  The CA
        noise is drawn (sentence first, then image) unless given."""
        if sent_emb.dim() != 2 or sent_emb.shape != (pooled_source.shape[0], self.ef_dim):
            raise ValueError(f"sent_emb: expected ({pooled_source.shape[0]}, {self.ef_dim}), "
                             f"got {tuple(sent_emb.shape)}")
        image_code = self.global_reduction(F.adaptive_avg_pool2d(pooled_source, 1)).flatten(1)
        c_code, _, _ = self.ca_net(sent_emb, sent_noise)
        z_star, mu, logvar = self.ca_net(image_code, image_noise)
        return self.img_code_s1(self.h_net1(z_star, c_code)), mu, logvar


class D_NET64(_DNet):  # noqa: N801
    imsize = 64

    def __init__(self, ndf: int = 32, nef: int = 256, ncf: int = 100, b_jcu: bool = True):
        super().__init__(ndf, nef, ncf, b_jcu, ndf * 8)

    def features(self, x_var):
        """(head features 8 ndf x 4 x 4, the code DNM pools)."""
        self._check(x_var)
        x = self.img_code_s16(x_var)
        return x, x


class D_NET128(_DNet):  # noqa: N801
    imsize = 128

    def __init__(self, ndf: int = 32, nef: int = 256, ncf: int = 100, b_jcu: bool = True):
        super().__init__(ndf, nef, ncf, b_jcu, ndf * 16)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s32_1 = Block3x3_leakRelu(ndf * 16, ndf * 8)

    def features(self, x_var):
        self._check(x_var)
        x = self.img_code_s32(self.img_code_s16(x_var))
        return self.img_code_s32_1(x), x


class D_NET256(_DNet):  # noqa: N801
    imsize = 256

    def __init__(self, ndf: int = 32, nef: int = 256, ncf: int = 100, b_jcu: bool = True):
        super().__init__(ndf, nef, ncf, b_jcu, ndf * 32)
        self.img_code_s32 = downBlock(ndf * 8, ndf * 16)
        self.img_code_s64 = downBlock(ndf * 16, ndf * 32)
        self.img_code_s64_1 = Block3x3_leakRelu(ndf * 32, ndf * 16)
        self.img_code_s64_2 = Block3x3_leakRelu(ndf * 16, ndf * 8)

    def features(self, x_var):
        self._check(x_var)
        x = self.img_code_s64(self.img_code_s32(self.img_code_s16(x_var)))
        return self.img_code_s64_2(self.img_code_s64_1(x)), x


D_NETS = (D_NET64, D_NET128, D_NET256)


def build_discriminators(config: DRGANConfig) -> nn.ModuleList:
    c = config
    return nn.ModuleList([D_NETS[i](c.df_dim, c.embedding_dim, c.condition_dim) for i in range(c.branch_num)])


@torch.no_grad()
def weights_init(m: nn.Module) -> None:
    """AttnGAN's init (orthogonal conv / linear weights, BN N(1, 0.02)); a spectrally normalised
    conv's ``weight_bar`` is initialised as the weight it replaces."""
    if isinstance(m, nn.Conv2d) and "weight_bar" in m._parameters:
        nn.init.orthogonal_(m.weight_bar, 1.0)
    else:
        attngan.weights_init(m)


class DRGAN(attngan.StagedGAN):
    """``netG`` (G_NET with SDM stages) and ``netsD`` (one D with DNM per stage), initialised as
    the draft code (AttnGAN's ``weights_init``)."""

    config_class = DRGANConfig
    make_generator = staticmethod(G_NET)
    make_discriminators = staticmethod(build_discriminators)
    init_weights = staticmethod(weights_init)


# ----------------------------------------------------------------------------- official files

CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="drgan", title="DR-GAN",
    networks={"netG": ("model", "netG"), "netsD": ("model", "netsD")},
    optimizers={"G": ("optimizers", "optimizerG"), "D": ("optimizers", "optimizersD")},
    classes={"netG": G_NET, "netsD": nn.ModuleList}, model_class=DRGAN,
    signatures={"netG": ("h_net2.reduct_demension.", "h_net2.img_code_sxx."),
                "netsD": ("img_code_s16.0.module.", "global_reduction.")}))

# modules of the draft code that no forward uses: dropped when its files are loaded
_UNUSED_D256 = ("h_net2.", "h_net3.", "fc.", "upsample1.", "upsample2.", "upsample3.", "upsample4.", "att.",
                "residual.", "upsample.")


def drop_unused_draft_keys(state: dict, network: nn.Module) -> dict:
    """The draft's state dict without the keys of modules its forward never uses (G stages'
    ``global_reductionxx``; D_NET256's copies of generator modules)."""
    if isinstance(network, G_NET):  # h_net{i}.global_reductionxx.*
        return {k: v for k, v in state.items() if k.split(".")[1:2] != ["global_reductionxx"]}
    if isinstance(network, D_NET256):
        return {k: v for k, v in state.items() if not k.startswith(_UNUSED_D256)}
    return state


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Draft DR-GAN weights into ``model`` (in place; returns it): a ``netG_epoch_*.pth`` into a
    G_NET, a ``netD{i}.pth`` into its D_NET, a fastt2i DR-GAN checkpoint into a DRGAN or its
    generator.  Keys of draft modules no forward uses are dropped (``drop_unused_draft_keys``);
    any other mismatch raises StateDictMismatchError, a file of another family
    FamilyMismatchError."""
    obj = read_weights(source, "load_official_state_dict")
    if not isinstance(obj, dict):
        raise TypeError(f"load_official_state_dict: expected a dict or a path to one, got {type(obj).__name__}")
    if isinstance(model, G_NET):
        nets = CHECKPOINT_LAYOUT.networks_in(obj, complete=False)
        if nets is None:
            check_family(obj, CHECKPOINT_LAYOUT, "load_official_state_dict", plain=False)
        state = strip_module_prefix(nets["netG"] if nets and "netG" in nets else obj)
        file_stages, own = attngan._stages_of_g_state(state), model.config.branch_num
        if file_stages and file_stages != own:
            raise StateDictMismatchError(f"load_official_state_dict: the generator file has {file_stages} stages "
                                         f"(images up to {64 * 2 ** (file_stages - 1)}), the model {own} "
                                         f"(branch_num={own})")
        return load_state_dict_checked(model, drop_unused_draft_keys(state, model), "G_NET")
    if isinstance(model, _DNet) and CHECKPOINT_LAYOUT.networks_in(obj, complete=False) is None:
        state = drop_unused_draft_keys(strip_module_prefix(obj), model)
        return load_state_dict_checked(model, state, type(model).__name__)
    return load_weights(model, obj, CHECKPOINT_LAYOUT, "load_official_state_dict")


__all__ = ["CHECKPOINT_LAYOUT", "D_GET_LOGITS", "D_NET128", "D_NET256", "D_NET64", "DRGAN", "DRGANConfig",
           "GET_IMAGE_G", "G_NET", "NEXT_STAGE_G", "SpectralNorm", "build_discriminators", "drop_unused_draft_keys",
           "gate_net", "gate_split", "load_official_state_dict", "rirm_encoder", "weights_init"]
