"""Training the char-CNN-RNN text encoder on the core (``fastt2i train char-cnn-rnn``).

The deep symmetric structured joint embedding of Reed et al. (CVPR 2016, ``train_sje_hybrid.lua``):
text features of the batch's captions and image features of its images, the symmetric hinge
loss with pair i matching pair i (``fastt2i.losses.joint_embedding_loss``), RMSprop (lr 7e-4,
alpha 0.99, eps 1e-8 as Torch's ``optim.rmsprop`` with its defaults), the rate x0.98 per epoch.
The official image side is pre-extracted GoogLeNet features through a no-op encoder; with no
such features offline, a small conv ``ImageEncoder`` learns from the pixels alongside.

The checkpoint keeps the Lua names (``protos.enc_doc`` / ``protos.enc_image``); its ``enc_doc``
is what ``--text-encoder`` of the GAN-INT-CLS / StackGAN / StackGAN++ families loads.
"""
from __future__ import annotations

import argparse

import torch

from fastt2i.losses import joint_embedding_loss
from fastt2i.models._checkpoint import CheckpointLayout, register_layout
from fastt2i.text import CharCNNRNN, CharCNNRNNConfig, ImageEncoder, encode_characters

from ..core import Trainer
from ..registry import register_family
from ._char_text import CaptionImages
from ._sampling import make_family

CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="char-cnn-rnn",
    title="char-CNN-RNN",
    networks={"enc_doc": ("protos", "enc_doc"), "enc_image": ("protos", "enc_image")},
    optimizers={"rmsprop": ("optim_state",)},
    classes={"enc_doc": CharCNNRNN, "enc_image": ImageEncoder},
    signatures={"enc_doc": ("conv1.", "rnn.i2h.", "proj.")},
))


class CharCNNRNNTrainer(Trainer):
    family = "char-cnn-rnn"
    title = "char-CNN-RNN"
    layout = CHECKPOINT_LAYOUT
    config_class = CharCNNRNNConfig
    architecture_fields = ("emb_dim", "cnn_dim", "doc_length", "final_pool", "imsize", "image_nf")
    progress_keys = ("loss", "acc")
    ema_network = None

    def default_model_config(self) -> CharCNNRNNConfig:
        return CharCNNRNNConfig.preset("synthetic")

    @classmethod
    def dataset_kwargs(cls, model_config) -> dict:
        return {"imsize": model_config.imsize}

    @classmethod
    def make_dataset(cls, spec: str, model_config, seed: int, split: str = "train"):
        from fastt2i.data import build_dataset

        return build_dataset(spec, split, imsize=model_config.imsize, seed=seed)

    def build(self) -> None:
        if not isinstance(self.dataset, CaptionImages):
            self.dataset = CaptionImages(self.dataset)
        m = self.mcfg
        self.enc_doc = CharCNNRNN(**m.encoder_config())
        self.enc_image = ImageEncoder(m.emb_dim, m.image_nf, m.imsize)
        self.doc = self.add_network("enc_doc", self.enc_doc)
        self.image = self.add_network("enc_image", self.enc_image)
        params = list(self.enc_doc.parameters()) + list(self.enc_image.parameters())
        self.add_optimizer("rmsprop", torch.optim.RMSprop(params, lr=m.lr, alpha=0.99, eps=1e-8))

    def on_epoch(self, epoch: int) -> None:
        for group in self.optimizers["rmsprop"].param_groups:
            group["lr"] = self.mcfg.lr * self.mcfg.lr_decay ** epoch

    def run_step(self, batch) -> dict:
        imgs, captions = batch
        chars = encode_characters(list(captions), self.mcfg.doc_length).to(self.device)
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        self.enc_doc.train(), self.enc_image.train()
        with self.autocast():
            fea_txt = self.doc(chars).float()
            fea_img = self.image(imgs).float()
        loss = joint_embedding_loss(fea_img, fea_txt, symmetric=self.mcfg.symmetric)
        self.optimizer_step("rmsprop", loss)
        acc = (fea_img.detach() @ fea_txt.detach().t()).argmax(1).eq(torch.arange(len(captions), device=self.device))
        return {"loss": loss.item(), "acc": acc.float().mean().item()}

    def extra_state(self) -> dict:
        return {"encoder_config": self.mcfg.encoder_config()}

    def sample_grid(self, path: str | None = None):
        """A text encoder makes no images: no sample grids."""
        return None


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cnn-dim", type=int, default=None, help="char-CNN output width (official 256)")
    p.add_argument("--long", action="store_true", help="HybridCNNLong: no final pooling (18 RNN steps, not 8)")


def model_config(args: argparse.Namespace, preset: str) -> CharCNNRNNConfig:
    kw = {}
    if getattr(args, "cnn_dim", None):
        kw["cnn_dim"] = args.cnn_dim
    if getattr(args, "long", False):
        kw["final_pool"] = False
    if getattr(args, "batch_size", None):
        kw["batch_size"] = args.batch_size
    return CharCNNRNNConfig.preset(preset, **kw)


register_family(make_family(
    name="char-cnn-rnn",
    summary="char-CNN-RNN text encoder (Reed et al., CVPR 2016): symmetric structured joint embedding",
    trainer=CharCNNRNNTrainer,
    presets=CharCNNRNNConfig.PRESETS,
    model_config=model_config,
    add_train_arguments=add_train_arguments,
))
