"""MirrorGAN's step on the training core (the official ``Trainer.train`` of qiaott/MirrorGAN).

AttnGAN's iteration (``fastt2i.train.families.attngan``) with MirrorGAN's differences:
  G: GLAM stages (word + sentence attention);
  D: unchanged (per stage, BCE of both heads, mismatched pairs);
  G loss: adversarial over the stages + lambda1 x STREAM's caption cross-entropy on the last
     image (10 released, 20 paper) + KL; the DAMSM losses only with lambda_damsm > 0 (the
     released config: 0, so no Inception is built at all then).
STREAM comes from ``fastt2i train stream`` (``--stream runs/stream/checkpoint.pt``) or from a pair of
files saved by the official STREAM training (``--stream-cnn cnn_encoder.pkl --stream-rnn
rnn_decoder.pkl``, the official ``CAP.caption_cnn_path`` / ``caption_rnn_path``), frozen and in
eval mode as the official trainer holds it; its vocabulary must be the dataset's.  Samples
carry STREAM's re-description of each image (``<grid>.txt`` during training; under the image
with ``fastt2i sample mirrorgan``).  ``fastt2i demo mirrorgan`` pretrains STREAM on the
shapes first, then MirrorGAN.
"""
from __future__ import annotations

import argparse
import os

import torch
from PIL import Image, ImageDraw

from fastt2i.losses import adversarial_g_loss, damsm_g_loss, kl_loss
from fastt2i.losses.mirrorgan import caption_loss
from fastt2i.models import load_state_dict_checked
from fastt2i.models._checkpoint import check_family, read_weights
from fastt2i.models.mirrorgan import CHECKPOINT_LAYOUT, G_DCGAN, G_NET, MirrorGAN, MirrorGANConfig
from fastt2i.models.mirrorgan import load_official_state_dict
from fastt2i.models.stream import STREAM, decode
from fastt2i.text import RNNEncoder, Vocabulary

from ..images import make_grid
from ..registry import Family, register_family
from .attngan import AttnGANTrainer, generate
from .attngan import add_train_arguments as add_attngan_train_arguments
from .stream import STREAMConfig


def load_stream(path: str, vocab: Vocabulary | None, device) -> STREAM:
    """A frozen STREAM from a ``fastt2i train stream`` checkpoint; its vocabulary must be ``vocab``."""
    if not path:
        raise ValueError("MirrorGAN needs a pretrained STREAM captioner: run 'fastt2i train stream' on the same "
                         "data and pass --stream <its checkpoint.pt> (the official weights were never released)")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--stream: STREAM checkpoint not found: {path}")
    obj = read_weights(path, "--stream")
    meta = obj.get("fastt2i") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or meta.get("family") != "stream":
        raise ValueError(f"--stream: {path} is not a 'fastt2i train stream' checkpoint "
                         f"(family {meta.get('family') if isinstance(meta, dict) else None!r})")
    words = meta.get("vocab")
    if vocab is not None and words is not None and list(words) != list(vocab.words):
        raise ValueError(f"--stream: the captioner's vocabulary ({len(words)} words) is not the dataset's "
                         f"({len(vocab)} words); pretrain STREAM on the same data")
    cfg = STREAMConfig.from_dict(meta["model_config"])
    stream = STREAM(len(words), cfg.embed_size, cfg.hidden_size, None, cfg.backbone, cfg.input_size)
    load_state_dict_checked(stream.caption_cnn, obj["caption_cnn"], f"{path}: caption_cnn")
    load_state_dict_checked(stream.caption_rnn, obj["caption_rnn"], f"{path}: caption_rnn")
    return stream.to(device).eval().requires_grad_(False)


def _state_dict(obj, what: str) -> dict:
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise ValueError(f"{what}: expected a state dict (torch.save(module.state_dict(), path)), "
                         f"got {type(obj).__name__}")
    return state


def load_official_stream(cnn_path: str, rnn_path: str, vocab: Vocabulary | None, device) -> STREAM:
    """A frozen STREAM from the two state dicts the official STREAM training saves (CAPTION_CNN's
    and CAPTION_RNN's, official keys).  Sizes are read from the tensors; the vocabulary can only
    be checked by its size: it must be the dataset's (the official captions.pickle)."""
    if not cnn_path or not rnn_path:
        raise ValueError("official STREAM files come as a pair: pass both --stream-cnn and --stream-rnn")
    cnn = _state_dict(read_weights(cnn_path, "--stream-cnn"), f"--stream-cnn {cnn_path}")
    rnn = _state_dict(read_weights(rnn_path, "--stream-rnn"), f"--stream-rnn {rnn_path}")
    cnn, rnn = {k.removeprefix("module."): v for k, v in cnn.items()}, {k.removeprefix("module."): v for k, v in rnn.items()}
    for key, state, what in (("embed.weight", rnn, "--stream-rnn"), ("lstm.weight_hh_l0", rnn, "--stream-rnn"),
                             ("linear.weight", cnn, "--stream-cnn")):
        if key not in state:
            raise ValueError(f"{what}: no '{key}' in the file: not an official "
                             f"{'CAPTION_RNN' if state is rnn else 'CAPTION_CNN'} state dict "
                             f"(keys: {sorted(state)[:6]}...)")
    vocab_size, embed_size = rnn["embed.weight"].shape
    hidden_size = rnn["lstm.weight_hh_l0"].shape[1]
    if cnn["linear.weight"].shape[0] != embed_size:
        raise ValueError(f"--stream-cnn / --stream-rnn: the encoder projects to {cnn['linear.weight'].shape[0]} "
                         f"features but the decoder embeds {embed_size}: not one STREAM pair")
    if vocab is not None and vocab_size != len(vocab):
        raise ValueError(f"--stream-rnn: the captioner's vocabulary has {vocab_size} words, the dataset's {len(vocab)}; "
                         "official STREAM files need the official data (its captions.pickle vocabulary)")
    stream = STREAM(vocab_size, embed_size, hidden_size, None, "resnet152")
    load_state_dict_checked(stream.caption_cnn, cnn, f"{cnn_path}: CAPTION_CNN")
    load_state_dict_checked(stream.caption_rnn, rnn, f"{rnn_path}: CAPTION_RNN")
    return stream.to(device).eval().requires_grad_(False)


class MirrorGANTrainer(AttnGANTrainer):
    family = "mirrorgan"
    title = "MirrorGAN"
    layout = CHECKPOINT_LAYOUT
    config_class = MirrorGANConfig
    progress_keys = ("errD", "errG", "cap_loss")

    def default_model_config(self) -> MirrorGANConfig:
        return MirrorGANConfig.synthetic()

    model_class = MirrorGAN
    load_official_weights = staticmethod(load_official_state_dict)

    def uses_image_encoder(self) -> bool:
        return bool(self.mcfg.lambda_damsm)  # the released config computes no DAMSM loss

    def build_extras(self) -> None:
        o = self.cfg.options
        if o.get("stream_cnn") or o.get("stream_rnn"):
            if o.get("stream"):
                raise ValueError("pass either --stream (a fastt2i checkpoint) or --stream-cnn/--stream-rnn "
                                 "(official files), not both")
            self.stream = load_official_stream(o.get("stream_cnn"), o.get("stream_rnn"), self.vocab, self.device)
        else:
            self.stream = load_stream(o.get("stream"), self.vocab, self.device)

    def run_step(self, batch) -> dict:
        m = self.mcfg
        s = self.step_inputs(batch)
        sent, sent_raw, words, lens = s.sent, s.sent_raw, s.words, s.lens
        with self.autocast():
            fake_imgs, _, mu, logvar = self.G(s.z, sent, words, s.mask, s.eps, return_attention=False)
            errD, d_parts = self.D_loss(s.reals, fake_imgs, sent)
        self.optimizer_step("D", errD)

        last = fake_imgs[len(self.netsD) - 1]
        with self.no_sync(self.D_loss):
            with self.autocast():
                adv = {f"g_loss{i}": adversarial_g_loss(netD, fake_imgs[i], sent) for i, netD in enumerate(self.netsD)}
                cap = m.lambda_caption * caption_loss(self.stream.caption_cnn, self.stream.caption_rnn, last,
                                                      s.caps.to(self.device), lens)
                kl = kl_loss(mu, logvar)
                errG = sum(adv.values()) + cap + kl
                if m.lambda_damsm:
                    w_loss, s_loss = damsm_g_loss(self.image_encoder, last, words, sent_raw, lens, s.class_ids,
                                                  m.gamma1, m.gamma2, m.gamma3)
                    errG = errG + m.lambda_damsm * (w_loss + s_loss)
            self.optimizer_step("G", errG, inputs=[p for p in self.netG.parameters() if p.requires_grad])
        out = {"errD": errD.item(), "errG": errG.item(), "cap_loss": cap.item(), "kl_loss": kl.item()}
        if m.lambda_damsm:
            out.update(w_loss=(m.lambda_damsm * w_loss).item(), s_loss=(m.lambda_damsm * s_loss).item())
        out.update({k: v.item() for k, v in d_parts.items()})
        out.update({k: v.item() for k, v in adv.items()})
        return out

    def sample_grid(self, path: str | None = None) -> str:
        path = super().sample_grid(path)
        caps = self.fixed_captions()
        images = self.generate(caps, torch.Generator().manual_seed(1))[0][-1]
        with open(os.path.splitext(path)[0] + "_stream.txt", "w") as f:
            for c, r in zip(caps, redescribe(self.stream, images, self.vocab)):
                f.write(f"{c}\t->\t{r}\n")
        return path

    def extra_state(self) -> dict:
        out = super().extra_state()
        out["stream"] = {"caption_cnn": self.stream.caption_cnn.state_dict(),
                         "caption_rnn": self.stream.caption_rnn.state_dict(),
                         "config": {"embed_size": self.stream.caption_cnn.embed_size,
                                    "hidden_size": self.stream.caption_rnn.hidden_size,
                                    "backbone": self.stream.caption_cnn.backbone,
                                    "input_size": self.stream.caption_cnn.input_size}}
        return out


@torch.no_grad()
def redescribe(stream: STREAM, images: torch.Tensor, vocab: Vocabulary) -> list[str]:
    ids = stream.describe(images.to(next(stream.parameters()).device).float())
    return [" ".join(w) for w in decode(ids, vocab.words)]


def captioned_figure(images: torch.Tensor, texts: list[str], path: str, width_chars: int = 22) -> str:
    """Images side by side, each with its text (wrapped) under it."""
    grid = [make_grid(images[i:i + 1], nrow=1, padding=2) for i in range(len(images))]
    h, w = grid[0].shape[:2]
    lines = [[t[k:k + width_chars] for k in range(0, max(len(t), 1), width_chars)] for t in texts]
    text_h = 12 * max(len(x) for x in lines) + 4
    fig = Image.new("RGB", (w * len(grid), h + text_h), "white")
    draw = ImageDraw.Draw(fig)
    for i, (g, ls) in enumerate(zip(grid, lines)):
        fig.paste(Image.fromarray(g), (i * w, 0))
        for k, line in enumerate(ls):
            draw.text((i * w + 2, h + 2 + 12 * k), line, fill="black")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.save(path)
    return path


def load_sampler(checkpoint: str, device="cpu", use_ema: bool = True):
    """(netG, text_encoder, vocab, config, sentence_norm, stream) from a fastt2i MirrorGAN checkpoint."""
    obj = read_weights(checkpoint, checkpoint)
    check_family(obj, CHECKPOINT_LAYOUT, checkpoint)
    meta = obj.get("fastt2i") if isinstance(obj, dict) else None
    if not isinstance(meta, dict) or "stream" not in meta:
        raise ValueError(f"{checkpoint}: sampling MirrorGAN needs a 'fastt2i train mirrorgan' checkpoint (it holds "
                         "the text encoder, the vocabulary and STREAM)")
    cfg = MirrorGANConfig.from_dict(meta["model_config"])
    netG = (G_DCGAN if cfg.b_dcgan else G_NET)(cfg)
    load_official_state_dict(netG, obj)
    if use_ema and meta.get("ema") is not None:
        buffers = {k: v for k, v in netG.state_dict().items() if k not in dict(netG.named_parameters())}
        load_state_dict_checked(netG, {**meta["ema"], **buffers}, "ema of netG")
    vocab = Vocabulary(meta["vocab"])
    text_encoder = RNNEncoder(len(vocab), **meta.get("text_encoder_config", {}))
    load_state_dict_checked(text_encoder, meta["text_encoder"], f"{checkpoint}: text_encoder")
    norm = meta.get("sentence_norm")
    s = meta["stream"]
    stream = STREAM(len(vocab), s["config"]["embed_size"], s["config"]["hidden_size"], None, s["config"]["backbone"],
                    s["config"]["input_size"])
    load_state_dict_checked(stream.caption_cnn, s["caption_cnn"], f"{checkpoint}: stream.caption_cnn")
    load_state_dict_checked(stream.caption_rnn, s["caption_rnn"], f"{checkpoint}: stream.caption_rnn")
    netG.to(device).eval().requires_grad_(False)
    text_encoder.to(device).eval().requires_grad_(False)
    return netG, text_encoder, vocab, cfg, None if norm is None else tuple(norm), stream.to(device).eval()


# ----------------------------------------------------------------------------- command line

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    add_attngan_train_arguments(p)
    p.add_argument("--stream", default=None, help="the pretrained STREAM: a 'fastt2i train stream' checkpoint.pt")
    p.add_argument("--stream-cnn", default=None,
                   help="official STREAM encoder state dict (CAP.caption_cnn_path, e.g. cnn_encoder.pkl); with --stream-rnn")
    p.add_argument("--stream-rnn", default=None,
                   help="official STREAM decoder state dict (CAP.caption_rnn_path, e.g. rnn_decoder.pkl); with --stream-cnn")
    p.add_argument("--lambda-caption", type=float, default=None,
                   help="weight of STREAM's caption loss (released 10 = preset birds, paper 20 = preset paper)")


def model_config(args: argparse.Namespace, preset: str) -> MirrorGANConfig:
    kw = {}
    for flag, name in (("stages", "branch_num"), ("gf", "gf_dim"), ("df", "df_dim"), ("lambda_damsm", "lambda_damsm"),
                       ("lambda_caption", "lambda_caption"), ("batch_size", "batch_size")):
        if getattr(args, flag, None) is not None:
            kw[name] = getattr(args, flag)
    if getattr(args, "official_mask", False):
        kw["official_mask"] = True
    return MirrorGANConfig.preset(preset, **kw)


def train_options(args: argparse.Namespace) -> dict:
    out = {"damsm_input_size": getattr(args, "damsm_input_size", 299), "stream": getattr(args, "stream", None)}
    for name in ("stream_cnn", "stream_rnn"):
        if getattr(args, name, None):
            out[name] = getattr(args, name)
    if getattr(args, "image_encoder", None):
        out["image_encoder"] = args.image_encoder
    return out


def sample(args: argparse.Namespace, captions: list[str], device: torch.device) -> str:
    """``fastt2i sample mirrorgan``: the final images with STREAM's re-description under each."""
    netG, text_encoder, vocab, cfg, norm, stream = load_sampler(args.checkpoint, device, use_ema=not args.no_ema)
    captions = [c for c in captions for _ in range(args.n)]
    g = torch.Generator().manual_seed(args.seed)
    images = generate(netG, text_encoder, vocab, captions, device, norm, g)[0][-1]
    texts = [f"in: {c} | STREAM: {r}" for c, r in zip(captions, redescribe(stream, images, vocab))]
    captioned_figure(images.cpu(), texts, args.out)
    return f"wrote {args.out} ({len(captions)} images with STREAM's re-descriptions)"


def demo(args: argparse.Namespace) -> None:
    from fastt2i.train.demo import DEMO_CAPTIONS

    from ..core import TrainConfig
    from .stream import STREAMTrainer

    minutes = args.minutes or 4.0
    stream_out = os.path.join(args.out, "stream")
    st = STREAMTrainer(STREAMConfig.synthetic(), TrainConfig(data="synthetic", out_dir=stream_out, steps=10**9,
                                                             max_minutes=minutes / 4, device=args.device,
                                                             backend=args.backend, seed=args.seed, save_every=200,
                                                             log_every=10))
    st.train()
    st.save()
    metrics = st.heldout_metrics()
    print(f"STREAM pretraining: {st.step} steps, held-out caption loss {metrics['val_cap_loss']:.3f}, "
          f"BLEU-4 {metrics['bleu4']:.3f}")
    tcfg = TrainConfig(data="synthetic", out_dir=args.out, steps=10**9, max_minutes=minutes * 3 / 4,
                       device=args.device, backend=args.backend, seed=args.seed, save_every=200, log_every=10,
                       sample_captions=DEMO_CAPTIONS[:8],
                       options={"stream": os.path.join(stream_out, "checkpoint.pt")})
    trainer = MirrorGANTrainer(MirrorGANConfig.synthetic(), tcfg)
    trainer.train()
    path = trainer.sample_grid(os.path.join(args.out, "mirrorgan_samples.png"))
    print(f"MirrorGAN demo: {trainer.step} steps; samples {path}, STREAM's re-descriptions "
          f"{os.path.splitext(path)[0]}_stream.txt")


register_family(Family(
    name="mirrorgan",
    summary="MirrorGAN (Qiao et al., CVPR 2019): AttnGAN with global-local attention and STREAM re-description",
    trainer=MirrorGANTrainer,
    presets=("birds", "paper", "coco", "synthetic"),
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    train_options=train_options,
    sample=sample,
    demo=demo,
))

__all__ = ["MirrorGANTrainer", "load_sampler", "load_stream", "redescribe"]
