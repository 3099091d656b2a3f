"""DAMSM pretraining on the training core (the official ``pretrain_DAMSM.py``).

One iteration: the image encoder (Inception-v3, frozen backbone; its BatchNorms run on batch
statistics, as the official ``cnn_model.train()``) gives regions and image codes, the bi-LSTM
text encoder words and sentences; loss = word loss both ways (the fused ``damsm_word_loss``)
+ sentence loss both ways, gamma1 4, gamma2 5, gamma3 10, same-class pairs masked; the RNN's
gradient norm clipped to 0.25; Adam(lr, (0.5, 0.999)) over the text encoder and the two
projections.  lr starts at 0.002 and is multiplied by 0.98 after each epoch while above lr/10.
The official code builds a new Adam every epoch (its moments restart); ``reset_adam_each_epoch``
(default True) does the same.  Images: Scale(355) -> RandomCrop(299) -> flip, the dataset's
preprocessing at imsize 299.

Checkpoints: the core's (exact resume) and, at each save, the official files
``image_encoder{epoch}.pth`` / ``text_encoder{epoch}.pth`` that AttnGAN, MirrorGAN, DR-GAN and
R-precision load.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import asdict, dataclass, field, replace

import torch

from fastt2i.data.multiscale import MultiScale
from fastt2i.models._checkpoint import CheckpointLayout, register_layout
from fastt2i.models.damsm import CNNEncoder, damsm_losses, load_image_encoder, load_text_encoder, save_encoders
from fastt2i.ops import damsm_word_scores
from fastt2i.text import RNNEncoder

from ..attention_maps import save_attention_figure
from ..core import Trainer
from ..registry import Family, register_family


@dataclass
class DAMSMConfig:
    """Presets follow ``code/cfg/DAMSM/{bird,coco}.yml``."""

    dataset: str = "birds"
    imsize: int = 299             # TREE.BASE_SIZE (the crop fed to Inception)
    input_size: int = 299         # the encoder's resize (official 299)
    embedding_dim: int = 256
    words_num: int = 18
    captions_per_image: int = 10
    batch_size: int = 48
    max_epoch: int = 600
    lr: float = 0.002             # TRAIN.ENCODER_LR
    lr_decay: float = 0.98        # per epoch, while lr > lr / 10
    betas: tuple = (0.5, 0.999)
    rnn_grad_clip: float = 0.25
    gamma1: float = 4.0
    gamma2: float = 5.0
    gamma3: float = 10.0
    reset_adam_each_epoch: bool = True
    backbone: str | None = "imagenet"  # Inception-v3 weights: "imagenet", a path, or None (random)
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        self.betas = tuple(self.betas)
        for name in ("imsize", "embedding_dim", "words_num", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size: the matching losses need >= 2 pairs, got {self.batch_size}")

    @classmethod
    def birds(cls, **kw):
        return replace(cls(), **kw)

    @classmethod
    def coco(cls, **kw):
        return replace(cls(dataset="coco", words_num=12, captions_per_image=5, max_epoch=120), **kw)

    @classmethod
    def synthetic(cls, **kw):
        """The shapes at 64 x 64, a random backbone (no download) resized to 139: CPU-sized."""
        return replace(cls(dataset="synthetic", imsize=64, input_size=139, batch_size=16, captions_per_image=1,
                           backbone=None), **kw)

    @classmethod
    def preset(cls, name: str, **kw):
        presets = {"birds": cls.birds, "bird": cls.birds, "cub": cls.birds, "coco": cls.coco,
                   "synthetic": cls.synthetic, "generic": cls.birds}
        if name not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)}, got {name!r}")
        return presets[name](**kw)

    def epoch_lr(self, epoch: int) -> float:
        """The official schedule: after each epoch lr *= decay while lr > lr0 / 10."""
        lr = self.lr
        for _ in range(epoch):
            if lr > self.lr / 10.0:
                lr *= self.lr_decay
            else:
                break
        return lr

    def to_dict(self) -> dict:
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="damsm", title="DAMSM",
    networks={"text_encoder": ("text_encoder",), "image_encoder": ("image_encoder",)},
    optimizers={"encoders": ("optimizer",)},
    classes={"text_encoder": RNNEncoder, "image_encoder": CNNEncoder},
    signatures={"image_encoder": ("Mixed_6e.", "emb_features.")}))


class DAMSMTrainer(Trainer):
    family = "damsm"
    title = "DAMSM"
    layout = CHECKPOINT_LAYOUT
    config_class = DAMSMConfig
    architecture_fields = ("embedding_dim", "input_size")
    progress_keys = ("w_loss", "s_loss")
    ema_network = None

    def default_model_config(self) -> DAMSMConfig:
        return DAMSMConfig.synthetic()

    def build(self) -> None:
        m = self.mcfg
        if not isinstance(self.dataset, MultiScale):
            self.dataset = MultiScale(self.dataset, (m.imsize,))
        self.text_encoder = RNNEncoder(len(self.vocab), nhidden=m.embedding_dim, words_num=m.words_num)
        backbone = self.cfg.options.get("backbone", m.backbone)
        self.image_encoder = CNNEncoder(m.embedding_dim, weights=backbone, input_size=m.input_size)
        if self.cfg.text_encoder:  # continue from official files (the official NET_E)
            load_text_encoder(self.text_encoder, self.cfg.text_encoder)
            load_image_encoder(self.image_encoder, self.cfg.text_encoder.replace("text_encoder", "image_encoder"))
        self.T = self.add_network("text_encoder", self.text_encoder)
        self.I = self.add_network("image_encoder", self.image_encoder)
        params = list(self.text_encoder.parameters()) + self.image_encoder.trainable_parameters()
        self.opt = self.add_optimizer("encoders", torch.optim.Adam(params, lr=m.lr, betas=tuple(m.betas)))
        self.lr_epoch = None  # the epoch whose lr (and, officially, fresh Adam) is in place

    def on_epoch(self, epoch: int) -> None:
        """The official per-epoch lr (and fresh Adam); the core calls it as each epoch starts."""
        m = self.mcfg
        if self.lr_epoch == epoch:  # the interrupted epoch after a resume: already in place
            return
        if m.reset_adam_each_epoch and self.lr_epoch is not None:
            self.opt.state.clear()  # the official code builds a new Adam every epoch
        for group in self.opt.param_groups:
            group["lr"] = m.epoch_lr(epoch)
        self.lr_epoch = epoch

    def run_step(self, batch) -> dict:
        imgs, caps, lens, _keys, class_ids = batch[:5]
        m = self.mcfg
        self.T.train(), self.I.train()
        images = imgs[-1].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        caps = caps.to(self.device)
        lens = torch.as_tensor(lens)
        with self.autocast():
            losses = damsm_losses(self.I, self.T, images, caps, lens, torch.as_tensor(class_ids).numpy(),
                                  m.gamma1, m.gamma2, m.gamma3)
        # the official clips the RNN's gradients only
        self.optimizer_step("encoders", losses["loss"], clip_norm=m.rnn_grad_clip,
                            clip_params=self.text_encoder.parameters())
        out = {k: v.item() for k, v in losses.items()}
        out["w_loss"] = out["w_loss0"] + out["w_loss1"]
        out["s_loss"] = out["s_loss0"] + out["s_loss1"]
        out["lr"] = self.opt.param_groups[0]["lr"]
        return out

    # ------------------------------------------------------------------ pictures: attention maps
    def sample(self, captions, generator=None):
        raise NotImplementedError("DAMSM generates no images; its sample grid shows attention maps")

    @torch.no_grad()
    def sample_grid(self, path: str | None = None) -> str:
        """The official ``attention_maps*.png``: the words' attention over the first training images."""
        path = path or os.path.join(self.cfg.out_dir, "samples", f"attention_{self.step:07d}.png")
        items = [self.dataset[i] for i in range(min(4, len(self.dataset)))]
        images = torch.stack([it[0][-1] for it in items]).to(self.device)
        caps = torch.stack([it[1] for it in items]).to(self.device)
        lens = torch.tensor([it[2] for it in items])
        was = self.image_encoder.training, self.text_encoder.training
        self.image_encoder.eval(), self.text_encoder.eval()
        try:
            regions, _ = self.image_encoder(images)
            words, _ = self.text_encoder(caps, lens)
            _, att = damsm_word_scores(words, lens.to(self.device), regions, self.mcfg.gamma1, self.mcfg.gamma2,
                                       return_attention=True)
        finally:
            self.image_encoder.train(was[0]), self.text_encoder.train(was[1])
        decoded = [self.vocab.decode(caps[i, :n].tolist()).split() for i, n in enumerate(lens.tolist())]
        return save_attention_figure(path, [images], [att], decoded)

    # ------------------------------------------------------------------ checkpoint
    def save(self, path: str | None = None) -> str:
        out = super().save(path)
        if self.is_main():
            save_encoders(self.image_encoder, self.text_encoder, os.path.join(self.cfg.out_dir, "Model"), self.epoch)
        return out

    def extra_state(self) -> dict:
        return {"lr_epoch": self.lr_epoch}

    def load_extra_state(self, meta: dict, path: str) -> None:
        self.lr_epoch = meta.get("lr_epoch")


# ----------------------------------------------------------------------------- command line

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=None,
                   help="Inception-v3 weights: 'imagenet' (torchvision's, downloaded; the official default), a "
                        "path, or 'random' (default: the preset's; synthetic: random)")
    p.add_argument("--lr", type=float, default=None, help="initial lr (official 0.002)")


def model_config(args: argparse.Namespace, preset: str) -> DAMSMConfig:
    kw = {}
    if getattr(args, "batch_size", None):
        kw["batch_size"] = args.batch_size
    if getattr(args, "lr", None):
        kw["lr"] = args.lr
    if getattr(args, "backbone", None):
        kw["backbone"] = None if args.backbone == "random" else args.backbone
    return DAMSMConfig.preset(preset, **kw)


register_family(Family(
    name="damsm",
    summary="DAMSM pretraining (AttnGAN's text and image encoders, official files for AttnGAN/MirrorGAN/DR-GAN)",
    trainer=DAMSMTrainer,
    presets=("birds", "coco", "synthetic"),
    model_config=model_config,
    add_train_arguments=add_train_arguments,
))

__all__ = ["CHECKPOINT_LAYOUT", "DAMSMConfig", "DAMSMTrainer"]
