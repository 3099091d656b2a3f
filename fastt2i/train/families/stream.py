"""STREAM pretraining on the training core: MirrorGAN's captioner, whose weights were never released.

The official STREAM was trained with a separate image-captioning tutorial (CAPTION_CNN /
CAPTION_RNN are its Encoder/Decoder): Adam(lr 1e-3) over the decoder and the encoder's
``linear`` and ``bn`` (the ResNet is frozen), cross-entropy of teacher-forced word logits packed
by length.  Here each caption gets the ``<end>`` word (index 0) appended, so greedy decoding
learns to stop; MirrorGAN's G loss scores the words only, as the official code.

Held-out evaluation (``--eval-every N --eval stream`` or :meth:`STREAMTrainer.heldout_metrics`):
the caption loss and corpus BLEU-4 of greedy re-descriptions of held-out images against their
captions (the dataset's test split).
"""
from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F

from fastt2i.data.multiscale import MultiScale
from fastt2i.models._checkpoint import CheckpointLayout, register_layout
from fastt2i.models.stream import CAPTION_CNN, CAPTION_RNN, STREAM, decode, pack_targets, with_end_token

from ..core import Trainer
from ..registry import Family, register_evaluator, register_family


@dataclass
class STREAMConfig:
    dataset: str = "birds"
    imsize: int = 256              # the dataset's images (CAPTION_CNN resizes to input_size)
    input_size: int = 224
    backbone: str = "resnet152"
    weights: str | None = "imagenet"  # the backbone's: "imagenet", a path, or None (random)
    embed_size: int = 256           # CAP.embed_size
    hidden_size: int = 512          # CAP.hidden_size * 2
    words_num: int = 18
    captions_per_image: int = 10
    batch_size: int = 128           # the captioning tutorial's
    lr: float = 1e-3                # CAP.learning_rate
    heldout: int = 256              # held-out images for the loss and BLEU-4
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("imsize", "embed_size", "hidden_size", "words_num", "batch_size", "heldout"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")

    @classmethod
    def birds(cls, **kw):
        return replace(cls(), **kw)

    @classmethod
    def coco(cls, **kw):
        return replace(cls(dataset="coco", words_num=12, captions_per_image=5), **kw)

    @classmethod
    def synthetic(cls, **kw):
        """The shapes at 64 x 64, a random ResNet-18 at 64 (no download): CPU-sized."""
        return replace(cls(dataset="synthetic", imsize=64, input_size=64, backbone="resnet18", weights=None,
                           embed_size=64, hidden_size=128, batch_size=32, captions_per_image=1, lr=3e-3,
                           heldout=64), **kw)

    @classmethod
    def preset(cls, name: str, **kw):
        presets = {"birds": cls.birds, "bird": cls.birds, "cub": cls.birds, "coco": cls.coco,
                   "synthetic": cls.synthetic}
        if name not in presets:
            raise ValueError(f"preset: expected one of {sorted(presets)}, got {name!r}")
        return presets[name](**kw)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


CHECKPOINT_LAYOUT = register_layout(CheckpointLayout(
    family="stream", title="STREAM",
    networks={"caption_cnn": ("caption_cnn",), "caption_rnn": ("caption_rnn",)},
    optimizers={"captioner": ("optimizer",)},
    classes={"caption_cnn": CAPTION_CNN, "caption_rnn": CAPTION_RNN},
    signatures={"caption_rnn": ("embed.", "lstm.", "linear.")}))


def corpus_bleu4(hypotheses: list[list], references: list[list[list]]) -> float:
    """Corpus BLEU-4 (Papineni et al. 2002): clipped n-gram precisions (n = 1..4) pooled over the
    corpus, geometric mean with equal weights, brevity penalty against the closest reference
    length.  0 when some order has no match (no smoothing)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu4: {len(hypotheses)} hypotheses but {len(references)} reference sets")
    matches, totals, hyp_len, ref_len = [0] * 4, [0] * 4, 0, 0
    for hyp, refs in zip(hypotheses, references):
        hyp_len += len(hyp)
        ref_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, 5):
            grams = Counter(tuple(hyp[i:i + n]) for i in range(len(hyp) - n + 1))
            best = Counter()
            for r in refs:
                best |= Counter(tuple(r[i:i + n]) for i in range(len(r) - n + 1))
            matches[n - 1] += sum(min(c, best[g]) for g, c in grams.items())
            totals[n - 1] += max(len(hyp) - n + 1, 0)
    if min(matches) == 0 or hyp_len == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / 4
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)


def stream_loss(stream: STREAM, images: torch.Tensor, captions: torch.Tensor, lens) -> torch.Tensor:
    """Teacher-forced cross-entropy over the words and the appended ``<end>``."""
    caps, caps_lens = with_end_token(captions, lens)
    logits = stream(images, caps, caps_lens)
    return F.cross_entropy(logits.float(), pack_targets(caps, caps_lens).to(logits.device))


class STREAMTrainer(Trainer):
    family = "stream"
    title = "STREAM"
    layout = CHECKPOINT_LAYOUT
    config_class = STREAMConfig
    architecture_fields = ("backbone", "embed_size", "hidden_size", "input_size")
    progress_keys = ("cap_loss",)
    ema_network = None

    def default_model_config(self) -> STREAMConfig:
        return STREAMConfig.synthetic()

    def build(self) -> None:
        m = self.mcfg
        if not isinstance(self.dataset, MultiScale):
            self.dataset = MultiScale(self.dataset, (m.imsize,))
        self.stream = STREAM(len(self.vocab), m.embed_size, m.hidden_size, m.weights, m.backbone, m.input_size)
        self.add_network("caption_cnn", self.stream.caption_cnn)
        self.add_network("caption_rnn", self.stream.caption_rnn)
        self.opt = self.add_optimizer("captioner", torch.optim.Adam(self.stream.trainable_parameters(), lr=m.lr))
        self._heldout = None

    def run_step(self, batch) -> dict:
        imgs, caps, lens = batch[:3]
        self.stream.train()
        images = imgs[-1].to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        with self.autocast():
            loss = stream_loss(self.stream, images, caps.to(self.device), torch.as_tensor(lens))
        self.optimizer_step("captioner", loss)
        return {"cap_loss": loss.item()}

    def heldout_set(self):
        """(images, captions, lengths) of the first ``heldout`` items of the test split."""
        if self._heldout is None:
            m = self.mcfg
            base = self.make_dataset(self.cfg.data, m, self.cfg.seed, split="test")
            if base.vocab.to_list() != self.vocab.to_list():
                raise ValueError("the test split's vocabulary differs from the training split's")
            ds = MultiScale(base, (m.imsize,))
            items = [ds[i] for i in range(min(m.heldout, len(ds)))]
            self._heldout = (torch.stack([it[0][-1] for it in items]), torch.stack([it[1] for it in items]),
                             torch.tensor([it[2] for it in items]))
        return self._heldout

    @torch.no_grad()
    def heldout_metrics(self) -> dict:
        images, caps, lens = self.heldout_set()
        was = self.stream.training
        self.stream.eval()
        try:
            losses, hyps = [], []
            for i in range(0, len(images), self.batch_size):
                x = images[i:i + self.batch_size].to(self.device)
                c, n = caps[i:i + self.batch_size].to(self.device), lens[i:i + self.batch_size]
                losses.append(stream_loss(self.stream, x, c, n).item() * len(x))
                hyps += decode(self.stream.describe(x))
        finally:
            self.stream.train(was)
        refs = [[caps[i, :n].tolist()] for i, n in enumerate(lens.tolist())]
        return {"val_cap_loss": sum(losses) / len(images), "bleu4": corpus_bleu4(hyps, refs)}

    def describe(self, images: torch.Tensor) -> list[str]:
        return [" ".join(w) for w in decode(self.stream.describe(images.to(self.device)), self.vocab.to_list())]


# ----------------------------------------------------------------------------- command line

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default=None, help="resnet152 (official) | resnet18 | ... (synthetic: resnet18)")
    p.add_argument("--backbone-weights", default=None,
                   help="'imagenet' (torchvision's, downloaded; official), a path, or 'random'")
    p.add_argument("--lr", type=float, default=None, help="Adam lr (official CAP.learning_rate 1e-3)")


def model_config(args: argparse.Namespace, preset: str) -> STREAMConfig:
    kw = {}
    for flag, name in (("batch_size", "batch_size"), ("lr", "lr"), ("backbone", "backbone")):
        if getattr(args, flag, None):
            kw[name] = getattr(args, flag)
    if getattr(args, "backbone_weights", None):
        kw["weights"] = None if args.backbone_weights == "random" else args.backbone_weights
    return STREAMConfig.preset(preset, **kw)


def _make_heldout_evaluator(args):
    def heldout(trainer) -> dict:
        if not isinstance(trainer, STREAMTrainer):
            raise TypeError(f"--eval stream: the STREAM held-out metrics need 'fastt2i train stream', "
                            f"not {trainer.title}")
        return trainer.heldout_metrics()

    return heldout


register_evaluator("stream", _make_heldout_evaluator,
                   "STREAM: caption loss and BLEU-4 of greedy re-descriptions on held-out images")

register_family(Family(
    name="stream",
    summary="STREAM pretraining (MirrorGAN's captioner: ResNet + LSTM; reports caption loss and BLEU-4)",
    trainer=STREAMTrainer,
    presets=("birds", "coco", "synthetic"),
    model_config=model_config,
    add_train_arguments=add_train_arguments,
))

__all__ = ["CHECKPOINT_LAYOUT", "STREAMConfig", "STREAMTrainer", "corpus_bleu4", "stream_loss"]
