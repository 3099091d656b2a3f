"""The char-CNN-RNN text side shared by the GAN-INT-CLS, StackGAN and StackGAN++ families.

The official code trains on pre-extracted 1024-d char-CNN-RNN embeddings.  Here the captions
of ``--data`` (the synthetic shapes, or any dataset with raw captions) go through a frozen
``CharCNNRNN``:

- ``--text-encoder PATH``: a ``fastt2i train char-cnn-rnn`` checkpoint (its ``enc_doc``), the
  encoder trained with the symmetric joint embedding loss; its embeddings are used as they are.
- no ``--text-encoder``: a randomly initialised encoder (the official uniform(-0.08, 0.08)),
  whose embeddings are standardised per dimension over 2048 training captions.  Untrained, its
  1024-d outputs vary by ~0.01 per dimension around a common vector, far below the N(0, 1)
  noise they are joined with; standardised, different captions are clearly apart (mean cosine
  ~0.02 over 512 synthetic captions) although captions sharing words stay close (0.4 - 0.6),
  so a trained encoder conditions better.  This is the default because it needs no
  pre-training step; the encoder and the statistics are saved in the checkpoint.

``--data birds:PATH`` / ``coco:PATH`` with ``PATH/train/char-CNN-RNN-embeddings.pickle`` instead
trains on the released data in the StackGAN layout (``fastt2i.data.embedding_images``): the
pre-extracted embeddings are the text, no encoder runs, and each family reads the images with
its own official preprocessing (``data_style``).  Sample grids then show the embeddings of the
first images of the split.  A folder without the pickle but with raw captions (``text/``, the
AttnGAN layout) goes through the char-CNN-RNN as the synthetic shapes do.
"""
from __future__ import annotations

import os

import torch

from fastt2i.models._checkpoint import read_weights
from fastt2i.models import load_state_dict_checked
from fastt2i.text import CharCNNRNN, encode_characters

from ..core import mix_seed


def dataset_caption(dataset, index: int) -> str:
    if hasattr(dataset, "caption"):
        return dataset.caption(index)
    raise ValueError(f"{type(dataset).__name__}: this family encodes raw captions with the char-CNN-RNN; the "
                     "dataset must offer caption(index) (the synthetic shapes do)")


class CaptionImages(torch.utils.data.Dataset):
    """(image, caption text) items of a dataset with ``caption(i)``; other fields are dropped."""

    def __init__(self, base):
        dataset_caption(base, 0)
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def caption(self, index: int) -> str:
        return self.base.caption(index)

    def captions_for_display(self, n: int) -> list[str]:
        return [self.caption(i) for i in range(min(n, len(self)))]

    def __getitem__(self, index: int):
        return self.base[index][0], self.caption(index)


def encoder_config(encoder: CharCNNRNN) -> dict:
    return {"alphabet_size": encoder.alphabet_size, "emb_dim": encoder.emb_dim, "cnn_dim": encoder.cnn_dim,
            "doc_length": encoder.doc_length, "final_pool": encoder.final_pool}


class CharTextConditioning:
    """Frozen char-CNN-RNN + optional standardisation: captions -> (B, 1024) embeddings."""

    def __init__(self, encoder: CharCNNRNN, norm: tuple | None, device):
        self.encoder = encoder.to(device).eval().requires_grad_(False)
        self.norm = None if norm is None else tuple(t.to(device) for t in norm)
        self.device = device

    @classmethod
    def build(cls, path: str | None, dataset, device, seed: int, n: int = 2048) -> "CharTextConditioning":
        if path:
            obj = read_weights(path, "char-CNN-RNN text encoder")
            meta = obj.get("fastt2i", {}) if isinstance(obj, dict) else {}
            if not (isinstance(obj, dict) and isinstance(obj.get("protos"), dict) and "enc_doc" in obj["protos"]):
                raise ValueError(f"--text-encoder {path}: expected a `fastt2i train char-cnn-rnn` checkpoint "
                                 "(with protos/enc_doc)")
            encoder = CharCNNRNN(**meta.get("encoder_config", {}))
            load_state_dict_checked(encoder, obj["protos"]["enc_doc"], f"{path}: enc_doc")
            return cls(encoder, None, device)
        with torch.random.fork_rng(devices=[]):  # the random encoder depends on the seed only
            torch.manual_seed(mix_seed(seed, 13))
            encoder = CharCNNRNN().to(device).eval()
        g = torch.Generator().manual_seed(mix_seed(seed, 11))
        idx = torch.randperm(len(dataset), generator=g)[:n].tolist()
        with torch.no_grad():
            emb = torch.cat([encoder(encode_characters([dataset_caption(dataset, i) for i in idx[k:k + 256]],
                                                       encoder.doc_length).to(device))
                             for k in range(0, len(idx), 256)])
        return cls(encoder, (emb.mean(0), emb.std(0).clamp_min(1e-6)), device)

    @torch.no_grad()
    def __call__(self, captions: list[str]) -> torch.Tensor:
        emb = self.encoder(encode_characters(list(captions), self.encoder.doc_length).to(self.device))
        if self.norm is not None:
            emb = (emb - self.norm[0]) / self.norm[1]
        return emb

    def state(self) -> dict:
        return {"char_cnn_rnn": self.encoder.state_dict(), "char_cnn_rnn_config": encoder_config(self.encoder),
                "char_cnn_rnn_norm": None if self.norm is None else [t.cpu() for t in self.norm]}

    @classmethod
    def from_state(cls, meta: dict, device) -> "CharTextConditioning | None":
        """None when the run trained on released embeddings (no encoder in the checkpoint)."""
        if meta.get("char_cnn_rnn") is None:
            return None
        encoder = CharCNNRNN(**meta["char_cnn_rnn_config"])
        load_state_dict_checked(encoder, meta["char_cnn_rnn"], "char_cnn_rnn")
        norm = meta.get("char_cnn_rnn_norm")
        return cls(encoder, None if norm is None else tuple(norm), device)


class CharTextFamily:
    """Mixin for the Trainer subclasses of the char-CNN-RNN-conditioned families.

    ``data_style``: the family's official image preprocessing on released data (see
    ``EmbeddingImageDataset``); ``wrong_images``: whether its official loader draws them."""

    data_style = "stackgan"
    wrong_images = False

    @classmethod
    def dataset_kwargs(cls, model_config) -> dict:
        return {"imsize": model_config.imsize}

    @classmethod
    def embedding_dataset_kwargs(cls, model_config) -> dict:
        """What else the family's released-data loader needs (stage sizes, captions averaged)."""
        return {}

    @classmethod
    def make_dataset(cls, spec: str, model_config, seed: int, split: str = "train"):
        from fastt2i.data import build_dataset, parse_data_spec
        from fastt2i.data.embedding_images import LAYOUTS, EmbeddingImageDataset
        from fastt2i.data.embeddings import EMBEDDING_FILE

        kind, path = parse_data_spec(spec)
        if kind == "synthetic":
            return build_dataset(spec, split, seed=seed, **cls.dataset_kwargs(model_config))
        released = bool(path) and os.path.isfile(os.path.join(path, split, EMBEDDING_FILE))
        if not released:
            if path and os.path.isdir(os.path.join(path, "text")):  # raw captions through the char-CNN-RNN
                return build_dataset(spec, split, seed=seed, **cls.dataset_kwargs(model_config))
            raise FileNotFoundError(
                f"--data {spec!r}: {cls.title} trains on 'synthetic[:N]', on the released char-CNN-RNN data in the "
                f"StackGAN layout ('birds:PATH' or 'coco:PATH' with PATH/{split}/{EMBEDDING_FILE}) or on raw "
                f"captions (PATH/text/); found neither {os.path.join(str(path), split, EMBEDDING_FILE)} nor "
                f"{os.path.join(str(path), 'text')}")
        if kind not in LAYOUTS:
            raise ValueError(f"--data {spec!r}: the released char-CNN-RNN embeddings come in the StackGAN 'birds' "
                             f"or 'coco' layout; say which, e.g. --data birds:{path}")
        return EmbeddingImageDataset(path, split, dataset=kind, style=cls.data_style, wrong_images=cls.wrong_images,
                                     seed=seed, **cls.dataset_kwargs(model_config),
                                     **cls.embedding_dataset_kwargs(model_config))

    @property
    def on_released_embeddings(self) -> bool:
        from fastt2i.data.embedding_images import EmbeddingImageDataset

        return isinstance(self.dataset, EmbeddingImageDataset)

    def build_text(self) -> None:
        """Raw captions: wrap the dataset into (image, caption) items and set up the frozen text
        encoder.  Released embeddings: nothing to encode."""
        if self.on_released_embeddings:
            if self.cfg.text_encoder:
                raise ValueError("--text-encoder: the released data already holds the char-CNN-RNN embeddings; "
                                 "an encoder is only used with raw captions (--data synthetic)")
            self.text = None
            return
        if not isinstance(self.dataset, CaptionImages):
            self.dataset = CaptionImages(self.dataset)
        self.text = CharTextConditioning.build(self.cfg.text_encoder, self.dataset, self.device, self.cfg.seed)

    def unpack(self, batch) -> tuple:
        """A loader batch -> (images, (B, 1024) text embeddings, wrong images or None)."""
        if self.text is None:
            imgs, text, *wrong = batch
            return imgs, text, (wrong[0] if wrong else None)
        imgs, captions = batch
        return imgs, self.text(captions), None

    def embed(self, captions: list[str]) -> torch.Tensor:
        """Text embeddings of sample-grid labels: encoded captions, or the released embeddings of the
        images the labels name (``EmbeddingImageDataset.captions_for_display``)."""
        if self.text is None:
            return self.dataset.display_embeddings(captions).to(self.device)
        return self.text(captions)

    def fixed_captions(self) -> list[str]:
        return list(self.cfg.sample_captions) or self.dataset.captions_for_display(self.cfg.num_samples)

    def extra_state(self) -> dict:
        if self.text is None:
            return {"char_cnn_rnn": None}
        return self.text.state()

    def load_extra_state(self, meta: dict, path: str) -> None:
        self.text = CharTextConditioning.from_state(meta, self.device)
