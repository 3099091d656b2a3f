"""MirrorGAN (Qiao et al., CVPR 2019; qiaott/MirrorGAN model.py, GLAttention.py): AttnGAN with
global-local attention in the generator and a captioner (STREAM, ``fastt2i.models.stream``)
that re-describes the generated image.

Only the differences from AttnGAN live here (``fastt2i.models.attngan`` has the rest):

- STEM is the DAMSM text encoder (unchanged);
- GLAM: each ``NEXT_STAGE_G`` attends with ``GLAttentionGeneral`` (``att``):
  the word context of AttnGAN's word-region attention (the fused op) and a sentence context:
  s = ``linear``(c_code) (100 -> ngf) broadcast over H x W, a = softmax over channels of
  ``conv_sentence_vis``(h * s) (conv1x1, no bias), sentence context = s * a.
  Then concat(h, word context, sentence context) -> ``conv`` (conv1x1 3 ngf -> 2 ngf, no bias) ->
  R_NUM ResBlocks -> upBlock;
- D is AttnGAN's (``D_NET64/128/256``, the same losses);
- G's loss adds lambda1 x the caption cross-entropy of STREAM on the last image
  (``fastt2i.losses.mirrorgan``); the released config has lambda1 = 10 and no DAMSM loss
  (``TRAIN.SMOOTH.LAMBDA: 0.0``), the paper lambda = 20: presets ``birds`` (released) and
  ``paper``.

Parameter names are the official ones (``h_net2.att.conv_sentence_vis.weight``,
``h_net2.att.linear.weight``, ``h_net2.conv.weight``, ...), so official ``netG_epoch_*.pth``
files load unchanged.  ``official_mask`` has AttnGAN's meaning (MirrorGAN's attention has the
same mask misalignment).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from fastt2i.nn import WordRegionAttention

from . import attngan
from ._checkpoint import (
    CheckpointLayout,
    StateDictMismatchError,
    load_state_dict_checked,
    load_weights,
    read_weights,
    register_layout,
    strip_module_prefix,
)
from .attngan import AttnGANConfig, ResBlock, build_discriminators, upBlock, weights_init


@dataclass
class MirrorGANConfig(AttnGANConfig):
    """AttnGAN's constants plus MirrorGAN's; presets follow ``cfg/train_bird.yml``."""

    batch_size: int = 12           # TRAIN.BATCH_SIZE
    max_epoch: int = 650
    lambda_damsm: float = 0.0      # TRAIN.SMOOTH.LAMBDA: the released code computes no DAMSM loss
    lambda_caption: float = 10.0   # TRAIN.SMOOTH.LAMBDA1 (the paper: 20)
    stream_embed: int = 256        # CAP.embed_size
    stream_hidden: int = 512       # CAP.hidden_size * 2
    stream_lr: float = 1e-3        # CAP.learning_rate (STREAM pretraining)

    def __post_init__(self):
        super().__post_init__()
        if self.lambda_caption < 0 or self.lambda_damsm < 0:
            raise ValueError(f"lambda_caption / lambda_damsm: expected >= 0, got {self.lambda_caption} / "
                             f"{self.lambda_damsm}")

    @classmethod
    def birds(cls, **kw) -> "MirrorGANConfig":
        """The released configuration (cfg/train_bird.yml)."""
        return replace(cls(), **kw)

    @classmethod
    def paper(cls, **kw) -> "MirrorGANConfig":
        """The paper's weight of the caption loss (lambda = 20); no DAMSM loss, as released."""
        return replace(cls(lambda_caption=20.0), **kw)

    @classmethod
    def coco(cls, **kw) -> "MirrorGANConfig":
        # no COCO config was released; AttnGAN's COCO network and text constants
        return replace(cls(dataset="coco", gf_dim=48, df_dim=96, r_num=3, batch_size=14, words_num=12,
                           captions_per_image=5, max_epoch=120), **kw)

    @classmethod
    def synthetic(cls, **kw) -> "MirrorGANConfig":
        return replace(cls(dataset="synthetic", gf_dim=8, df_dim=16, r_num=1, batch_size=8, captions_per_image=1,
                           stream_embed=64, stream_hidden=128), **kw)

    @classmethod
    def preset(cls, name: str, **kw) -> "MirrorGANConfig":
        presets = {"birds": cls.birds, "bird": cls.birds, "cub": cls.birds, "released": cls.birds,
                   "paper": cls.paper, "coco": cls.coco, "synthetic": cls.synthetic}
        if name not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)}, got {name!r}")
        return presets[name](**kw)


class GLAttentionGeneral(WordRegionAttention):
    """GLAM's attention: forward(h (B, idf, H, W), c_code (B, ncf), words (B, cdf, T), mask (B, T))
    -> (word context (B, idf, H, W), sentence context (B, idf, H, W), word attention (B, T, H, W)
    or None, sentence attention (B, idf, H, W))."""

    def __init__(self, idf: int, cdf: int, ncf: int = 100, official_mask: bool = False):
        super().__init__(idf, cdf, official_mask=official_mask)  # conv_context: the word part
        self.conv_sentence_vis = nn.Conv2d(idf, idf, kernel_size=1, stride=1, padding=0, bias=False)
        self.linear = nn.Linear(ncf, idf)
        self.ncf = ncf

    def sentence_attention(self, h: torch.Tensor, c_code: torch.Tensor):
        """(sentence context s * a, a): s = linear(c_code) over every region, a = channel softmax
        of conv1x1(h * s)."""
        if c_code.dim() != 2 or c_code.shape != (h.shape[0], self.ncf):
            raise ValueError(f"c_code: expected ({h.shape[0]}, {self.ncf}), got {tuple(c_code.shape)}")
        sentence = self.linear(c_code.to(h.dtype))[:, :, None, None]
        sent_att = torch.softmax(self.conv_sentence_vis(h * sentence), dim=1)
        return sentence * sent_att, sent_att

    def forward(self, h, c_code, words, mask=None, return_attention: bool = True):
        word_context, word_att = super().forward(h, words, mask, return_attention=return_attention)
        sentence_context, sent_att = self.sentence_attention(h, c_code)
        return word_context, sentence_context, word_att, sent_att


class NEXT_STAGE_G(attngan.NEXT_STAGE_G):  # noqa: N801
    """AttnGAN's stage with GLAM: h (B, ngf, S, S) -> (B, ngf, 2S, 2S) and the word attention."""

    def __init__(self, ngf: int, nef: int, ncf: int, r_num: int = 2, official_mask: bool = False):
        super().__init__(ngf, nef, ncf, r_num, official_mask)
        self.att = GLAttentionGeneral(ngf, nef, ncf, official_mask=official_mask)
        self.conv = nn.Conv2d(ngf * 3, ngf * 2, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, h_code, c_code, word_embs, mask, return_attention: bool = True):
        context, sentence, att, _ = self.att(h_code, c_code, word_embs, mask, return_attention=return_attention)
        out = self.residual(self.conv(torch.cat((h_code, context, sentence), 1)))
        return self.upsample(out), att


class G_NET(attngan.G_NET):  # noqa: N801
    """AttnGAN's G_NET with MirrorGAN's stages: the same forward and outputs."""

    def __init__(self, config: MirrorGANConfig | None = None):
        c = config or MirrorGANConfig()
        super().__init__(c)
        for stage in range(2, c.branch_num + 1):
            setattr(self, f"h_net{stage}",
                    NEXT_STAGE_G(c.gf_dim, c.embedding_dim, c.condition_dim, c.r_num, c.official_mask))


class G_DCGAN(attngan.G_DCGAN):  # noqa: N801
    def __init__(self, config: MirrorGANConfig | None = None):
        c = config or MirrorGANConfig(b_dcgan=True)
        super().__init__(c)
        for stage in range(2, c.branch_num + 1):
            setattr(self, f"h_net{stage}",
                    NEXT_STAGE_G(c.gf_dim, c.embedding_dim, c.condition_dim, c.r_num, c.official_mask))


class MirrorGAN(attngan.StagedGAN):
    """``netG`` (G_NET or G_DCGAN with GLAM) and ``netsD`` (AttnGAN's), officially initialised.
    STREAM is separate (``fastt2i.models.stream.STREAM``): pretrained, then frozen."""

    config_class = MirrorGANConfig
    make_discriminators = staticmethod(build_discriminators)
    init_weights = staticmethod(weights_init)

    @staticmethod
    def make_generator(config: MirrorGANConfig) -> nn.Module:
        return (G_DCGAN if config.b_dcgan else G_NET)(config)


CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="mirrorgan", title="MirrorGAN",
    networks={"netG": ("model", "netG"), "netsD": ("model", "netsD")},
    optimizers={"G": ("optimizers", "optimizerG"), "D": ("optimizers", "optimizersD")},
    classes={"netG": G_NET, "netsD": nn.ModuleList}, model_class=MirrorGAN,
    signatures={"netG": ("h_net2.att.conv_sentence_vis.", "h_net2.conv."), "netsD": ("img_code_s16.", "COND_DNET.")}))


def load_official_state_dict(model: nn.Module, source) -> nn.Module:
    """Official MirrorGAN weights into ``model`` (in place; returns it): a ``netG_epoch_*.pth``
    into a G_NET / G_DCGAN (another number of stages is named as such), a ``netD{i}.pth`` into
    its D_NET, a fastt2i MirrorGAN checkpoint into a MirrorGAN or its generator.  Key mismatches
    raise StateDictMismatchError."""
    obj = read_weights(source, "load_official_state_dict")
    if not isinstance(obj, dict):
        raise TypeError(f"load_official_state_dict: expected a dict or a path to one, got {type(obj).__name__}")
    if isinstance(model, (G_NET, G_DCGAN)):
        nets = CHECKPOINT_LAYOUT.networks_in(obj, complete=False)
        state = strip_module_prefix(nets["netG"] if nets and "netG" in nets else obj)
        file_stages, own = attngan._stages_of_g_state(state), model.config.branch_num
        if file_stages and file_stages != own:
            raise StateDictMismatchError(f"load_official_state_dict: the generator file has {file_stages} stages "
                                         f"(images up to {64 * 2 ** (file_stages - 1)}), the model {own} "
                                         f"(branch_num={own})")
        return load_state_dict_checked(model, state, type(model).__name__)
    return load_weights(model, obj, CHECKPOINT_LAYOUT, "load_official_state_dict")


__all__ = ["CHECKPOINT_LAYOUT", "GLAttentionGeneral", "G_DCGAN", "G_NET", "MirrorGAN", "MirrorGANConfig",
           "NEXT_STAGE_G", "ResBlock", "load_official_state_dict", "upBlock"]
