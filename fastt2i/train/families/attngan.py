"""AttnGAN's step on the training core (the official ``condGANTrainer.train``).

One iteration:
  G: images at 64, 128, 256 from (z, CA(sentence), words) with the word attention;
  D: for each stage, BCE of the unconditional head (real / fake) and of the conditional head
     (real, fake and mismatched pairs real[:B-1] x sentence[1:B]); one Adam(2e-4, (0.5, 0.999))
     over all Ds (each D's loss touches only its own parameters, so this equals the official
     one optimiser per D);
  G: adversarial BCE over the stages + lambda * (DAMSM word + sentence losses of the last image,
     both ways, through the fused ops) + KL of CA; Adam(2e-4, (0.5, 0.999)); the core's EMA
     (--ema 0.999) is the official ``avg_param_G``.
The DAMSM text and image encoders are frozen.  z and the CA noise of step t come from the
core's ``step_generator`` (streams 1 and 2), so a resumed run draws them again.

DAMSM without pretrained encoders (the synthetic shapes): a random frozen text encoder (its
sentence vectors standardised, as DF-GAN's demo) and a random frozen Inception backbone.  The
DAMSM term then carries no matching signal worth its weight, so the synthetic preset weighs it
0.5 instead of 5 and trains mostly on the conditional D; pretraining a DAMSM on the shapes
(``fastt2i train damsm``) and passing ``--text-encoder`` (its image encoder is found next to it)
restores the official setting.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.profiler import record_function

from fastt2i.data.multiscale import MultiScale
from fastt2i.losses import adversarial_g_loss, damsm_g_loss, discriminator_loss, kl_loss
from fastt2i.models import load_state_dict_checked
from fastt2i.models._checkpoint import check_family, read_weights
from fastt2i.models.attngan import CHECKPOINT_LAYOUT, G_DCGAN, G_NET, AttnGAN, AttnGANConfig, load_official_state_dict
from fastt2i.models.damsm import CNNEncoder, load_image_encoder
from fastt2i.text import RNNEncoder, Vocabulary, encode_captions

from ..attention_maps import save_attention_figure
from ..core import Trainer
from ..images import save_grid
from ..registry import Family, register_family
from ..text_conditioning import FrozenTextEncoderState, frozen_text_encoder, sentence_statistics, standardize


def image_encoder_path(text_encoder_path: str | None) -> str | None:
    """The official convention: ``.../text_encoder550.pth`` -> ``.../image_encoder550.pth``."""
    if not text_encoder_path:
        return None
    folder, name = os.path.split(text_encoder_path)
    return os.path.join(folder, name.replace("text_encoder", "image_encoder"))


def frozen_image_encoder(nef: int, path: str | None, device, input_size: int = 299) -> CNNEncoder:
    enc = CNNEncoder(nef, weights=None, input_size=input_size)
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"DAMSM image encoder not found: {path} (it sits next to the text encoder "
                                    "in the official layout; pass --image-encoder)")
        load_image_encoder(enc, path)
    return enc.to(device).eval().requires_grad_(False)


class _DiscriminatorLoss(nn.Module):
    """All stages' D losses in one forward, so DDP can wrap the discriminators."""

    def __init__(self, netsD: nn.ModuleList):
        super().__init__()
        self.netsD = netsD

    def forward(self, reals, fakes, sent):
        total, parts = 0.0, {}
        for i, netD in enumerate(self.netsD):
            errD, _ = discriminator_loss(netD, reals[i], fakes[i], sent)
            parts[f"errD{i}"] = errD
            total = total + errD
        return total, parts


@dataclass
class StepInputs:
    """One iteration's inputs: the real images per stage, the captions and their encodings (DAMSM
    RNN: sentence as G sees it, the raw sentence, words, padding mask), the step's seeded noise."""
    reals: list
    caps: torch.Tensor
    lens: torch.Tensor
    class_ids: np.ndarray  # same-class pairs are not negatives in DAMSM
    sent: torch.Tensor
    sent_raw: torch.Tensor
    words: torch.Tensor
    mask: torch.Tensor
    z: torch.Tensor
    eps: torch.Tensor


class AttnGANTrainer(FrozenTextEncoderState, Trainer):
    family = "attngan"
    title = "AttnGAN"
    layout = CHECKPOINT_LAYOUT
    config_class = AttnGANConfig
    architecture_fields = ("branch_num", "gf_dim", "df_dim", "z_dim", "condition_dim", "embedding_dim", "r_num",
                           "b_dcgan")
    progress_keys = ("errD", "errG", "w_loss", "s_loss")
    ema_network = "netG"

    # a family on AttnGAN's backbone (MirrorGAN) names its own model class and official-weights loader
    model_class = AttnGAN
    load_official_weights = staticmethod(load_official_state_dict)

    def default_model_config(self) -> AttnGANConfig:
        return AttnGANConfig.synthetic()

    def uses_image_encoder(self) -> bool:
        """Whether the G loss needs the DAMSM image encoder (AttnGAN: always; MirrorGAN: only with
        a DAMSM weight)."""
        return True

    def build_extras(self) -> None:
        """Frozen networks a family adds beside the DAMSM encoders, built before the GAN (MirrorGAN: STREAM)."""

    @staticmethod
    def build_generator(config) -> nn.Module:
        """A bare generator of this family for a config (sampling from files)."""
        return (G_DCGAN if config.b_dcgan else G_NET)(config)

    def discriminator_loss_module(self) -> nn.Module:
        """All stages' D losses as one module (DR-GAN: with its DNM terms)."""
        return _DiscriminatorLoss(self.netsD)

    def build(self) -> None:
        m = self.mcfg
        if not isinstance(self.dataset, MultiScale):
            self.dataset = MultiScale(self.dataset, m.image_sizes)
        self.text_encoder = frozen_text_encoder(len(self.vocab), m.words_num, self.cfg.text_encoder, self.device)
        if self.text_encoder.out_dim != m.embedding_dim:
            raise ValueError(f"text encoder: {self.text_encoder.out_dim}-d features, the model expects "
                             f"embedding_dim={m.embedding_dim}")
        self.sentence_norm = None if self.cfg.text_encoder else sentence_statistics(
            self.text_encoder, self.dataset, self.vocab, self.device, self.cfg.seed)
        self.image_encoder = None
        if self.uses_image_encoder():
            img_path = self.cfg.options.get("image_encoder") or image_encoder_path(self.cfg.text_encoder)
            self.image_encoder = frozen_image_encoder(m.embedding_dim, img_path, self.device,
                                                      self.cfg.options.get("damsm_input_size", 299))
        self.build_extras()

        self.model = self.model_class(m)
        if self.cfg.init_from:
            self.load_official_weights(self.model.netG, self.cfg.init_from)
        self.netG, self.netsD = self.model.netG, self.model.netsD
        self.G = self.add_network("netG", self.netG, compile=True)
        self.add_network("netsD", self.netsD, ddp=False)
        self.D_loss = self.discriminator_loss_module()
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.D_loss = DDP(self.D_loss, device_ids=ids, broadcast_buffers=False)
        betas = tuple(m.betas)
        self.optG = self.add_optimizer("G", torch.optim.Adam(self.netG.parameters(), lr=m.lr_g, betas=betas))
        self.optD = self.add_optimizer("D", torch.optim.Adam(self.netsD.parameters(), lr=m.lr_d, betas=betas))

    # ------------------------------------------------------------------ text
    def encode(self, captions: torch.Tensor, lengths):
        """(sentence for G and D, raw sentence for DAMSM, words (B, 256, T), mask (B, T) True on padding)."""
        captions = captions.to(self.device)
        sent, words = encode_captions(self.text_encoder, captions, lengths)
        mask = (captions == 0)[:, :words.shape[2]]
        return standardize(sent, self.sentence_norm), sent, words, mask

    def step_noise(self, batch_size: int):
        m = self.mcfg
        z = torch.randn(batch_size, m.z_dim, generator=self.step_generator(1)).to(self.device)
        eps = torch.randn(batch_size, m.condition_dim, generator=self.step_generator(2)).to(self.device)
        return z, eps

    # ------------------------------------------------------------------ one iteration
    def step_inputs(self, batch) -> StepInputs:
        """The official ``prepare_data`` plus the step's noise, with the networks in train mode:
        what every family on AttnGAN's iteration starts from."""
        imgs, caps, lens, _keys, class_ids = batch[:5]
        self.netG.train(), self.netsD.train()
        reals = [x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format) for x in imgs]
        lens = torch.as_tensor(lens)
        sent, sent_raw, words, mask = self.encode(caps, lens)
        z, eps = self.step_noise(sent.shape[0])
        return StepInputs(reals, caps, lens, torch.as_tensor(class_ids).numpy(), sent, sent_raw, words, mask, z, eps)

    def run_step(self, batch) -> dict:
        m = self.mcfg
        s = self.step_inputs(batch)
        reals, lens, class_ids, sent, sent_raw, words, mask = (s.reals, s.lens, s.class_ids, s.sent, s.sent_raw,
                                                               s.words, s.mask)
        z, eps = s.z, s.eps
        # record_function labels: the phases in profiles (benchmarks/bench_attngan_step.py)
        with self.autocast(), record_function("attngan: G forward"):
            fake_imgs, _, mu, logvar = self.G(z, sent, words, mask, eps, return_attention=False)
        with record_function("attngan: D step"):
            with self.autocast():
                errD, d_parts = self.D_loss(reals, fake_imgs, sent)
            self.optimizer_step("D", errD)

        with self.no_sync(self.D_loss):
            with self.autocast():
                with record_function("attngan: G adversarial"):
                    adv = {f"g_loss{i}": adversarial_g_loss(netD, fake_imgs[i], sent)
                           for i, netD in enumerate(self.netsD)}
                with record_function("attngan: G DAMSM"):
                    w_loss, s_loss = damsm_g_loss(self.image_encoder, fake_imgs[len(self.netsD) - 1], words,
                                                  sent_raw, lens, class_ids, m.gamma1, m.gamma2, m.gamma3)
                kl = kl_loss(mu, logvar)
                errG = sum(adv.values()) + m.lambda_damsm * (w_loss + s_loss) + kl
            with record_function("attngan: G backward and update"):
                self.optimizer_step("G", errG, inputs=[p for p in self.netG.parameters() if p.requires_grad])
        out = {"errD": errD.item(), "errG": errG.item(), "w_loss": (m.lambda_damsm * w_loss).item(),
               "s_loss": (m.lambda_damsm * s_loss).item(), "kl_loss": kl.item()}
        out.update({k: v.item() for k, v in d_parts.items()})
        out.update({k: v.item() for k, v in adv.items()})
        return out

    # ------------------------------------------------------------------ sampling
    def sampling_generator(self) -> nn.Module:
        """G in eval mode with the EMA weights (when any) and G's BatchNorm statistics: the
        official ``load_params(netG, avg_param_G)`` swaps only the parameters."""
        if self.ema is None:
            return self.netG
        for be, b in zip(self.ema.buffers(), self.netG.buffers()):
            be.copy_(b)
        return self.ema

    @torch.no_grad()
    def generate(self, captions: list[str], generator: torch.Generator | None = None, use_ema: bool = True):
        """(images per stage, attention maps per stage, words per caption) for raw captions."""
        net = self.sampling_generator() if use_ema else self.netG
        return generate(net, self.text_encoder, self.vocab, captions, self.device, self.sentence_norm, generator,
                        self.autocast)

    def sample(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        return self.generate(captions, generator)[0][-1]

    def sample_grid(self, path: str | None = None) -> str:
        path = super().sample_grid(path)
        caps = self.fixed_captions()[:4]
        images, att, words = self.generate(caps, torch.Generator().manual_seed(1))
        if att:
            save_attention_figure(os.path.splitext(path)[0] + "_attention.png", images[:len(att)], att, words)
        return path


@torch.no_grad()
def generate(netG, text_encoder, vocab, captions, device, sentence_norm=None, generator=None, autocast=None):
    """Images per stage ([B, 3, 64|128|256]), attention per stage, and each caption's known words."""
    ids, lens = vocab.encode_batch(captions)  # EmptyCaptionError for a caption with no known word
    ids = ids.to(device)
    sent, words = encode_captions(text_encoder, ids, lens)
    mask = (ids == 0)[:, :words.shape[2]]
    c = netG.config
    z = torch.randn(len(captions), c.z_dim, generator=generator).to(device)
    eps = torch.randn(len(captions), c.condition_dim, generator=generator).to(device)
    was_training = netG.training
    netG.eval()
    try:
        with (autocast() if autocast is not None else torch.autocast(device.type, enabled=False)):
            images, att, _, _ = netG(z, standardize(sent, sentence_norm), words, mask, eps)
    finally:
        netG.train(was_training)
    decoded = [vocab.decode(ids[i, :n].tolist()).split() for i, n in enumerate(lens.tolist())]
    return [x.float() for x in images], [a.float() for a in att], decoded


# ----------------------------------------------------------------------------- sampling from files

def load_sampler(checkpoint: str, device="cpu", use_ema: bool = True, text_encoder_path: str | None = None,
                 vocab_path: str | None = None, config: AttnGANConfig | None = None, trainer_class=None):
    """(netG, text_encoder, vocab, config, sentence_norm) for sampling: a fastt2i checkpoint
    carries everything; an official ``netG_epoch_*.pth`` / ``bird_AttnGAN2.pth`` needs the DAMSM
    ``text_encoder*.pth``, the dataset's ``captions.pickle`` and the config (preset).
    ``trainer_class``: a family on AttnGAN's backbone (its layout, config, generator, loader)."""
    tc = trainer_class or AttnGANTrainer
    obj = read_weights(checkpoint, checkpoint)
    check_family(obj, tc.layout, checkpoint)
    if isinstance(obj, dict) and isinstance(obj.get("fastt2i"), dict):
        meta = obj["fastt2i"]
        cfg = tc.config_class.from_dict(meta["model_config"])
        netG = tc.build_generator(cfg)
        tc.load_official_weights(netG, obj)
        if use_ema and meta.get("ema") is not None:
            buffers = {k: v for k, v in netG.state_dict().items() if k not in dict(netG.named_parameters())}
            load_state_dict_checked(netG, {**meta["ema"], **buffers}, "ema of netG")
        vocab = Vocabulary(meta["vocab"])
        text_encoder = RNNEncoder(len(vocab), **meta.get("text_encoder_config", {}))
        load_state_dict_checked(text_encoder, meta["text_encoder"], f"{checkpoint}: text_encoder")
        norm = meta.get("sentence_norm")
        sentence_norm = None if norm is None else tuple(norm)
    else:
        if text_encoder_path is None or vocab_path is None:
            raise ValueError(f"{checkpoint} is an official {tc.title} generator: sampling needs --text-encoder "
                             "(DAMSM text_encoder*.pth) and --vocab (the dataset's captions.pickle)")
        cfg = config or tc.config_class()
        netG = tc.build_generator(cfg)
        tc.load_official_weights(netG, obj)
        vocab = Vocabulary.load(vocab_path)
        text_encoder = RNNEncoder(len(vocab), words_num=cfg.words_num)
        load_state_dict_checked(text_encoder, read_weights(text_encoder_path, "text encoder"),
                                f"text encoder {text_encoder_path}")
        sentence_norm = None
    netG.to(device).eval().requires_grad_(False)
    text_encoder.to(device).eval().requires_grad_(False)
    return netG, text_encoder, vocab, cfg, sentence_norm


# ----------------------------------------------------------------------------- command line

def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stages", type=int, default=None, help="1 | 2 | 3 (images up to 64 | 128 | 256; default 3)")
    p.add_argument("--gf", type=int, default=None, help="GF_DIM (official 32 birds, 48 coco)")
    p.add_argument("--df", type=int, default=None, help="DF_DIM (official 64 birds, 96 coco)")
    p.add_argument("--lambda-damsm", type=float, default=None, help="weight of the DAMSM losses (5 birds, 50 coco)")
    p.add_argument("--image-encoder", default=None,
                   help="DAMSM image_encoder*.pth (default: next to --text-encoder, as the official code)")
    p.add_argument("--official-mask", action="store_true",
                   help="the official attention-mask misalignment (for released checkpoints)")
    p.add_argument("--damsm-input-size", type=int, default=299,
                   help="side the DAMSM image encoder resizes to (official 299; smaller for CPU demos)")


def model_config(args: argparse.Namespace, preset: str, config_class=AttnGANConfig) -> AttnGANConfig:
    kw = {}
    for flag, name in (("stages", "branch_num"), ("gf", "gf_dim"), ("df", "df_dim"), ("lambda_damsm", "lambda_damsm"),
                       ("batch_size", "batch_size")):
        if getattr(args, flag, None) is not None:
            kw[name] = getattr(args, flag)
    if getattr(args, "official_mask", False):
        kw["official_mask"] = True
    return config_class.preset(preset, **kw)


def train_options(args: argparse.Namespace) -> dict:
    out = {"damsm_input_size": getattr(args, "damsm_input_size", 299)}
    if getattr(args, "image_encoder", None):
        out["image_encoder"] = args.image_encoder
    return out


def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attention", action="store_true",
                   help="also write the per-word attention maps of stages 2 and 3 (<out>_attention.png)")
    p.add_argument("--text-encoder", default=None, help="for official files: DAMSM text_encoder*.pth")
    p.add_argument("--vocab", default=None, help="for official files: captions.pickle")
    p.add_argument("--preset", default="birds", help="for official files: birds | coco")
    p.add_argument("--stages", type=int, default=None, help="for official files (default 3)")
    p.add_argument("--official-mask", action="store_true", help="the official attention mask (released weights)")


def sample(args: argparse.Namespace, captions: list[str], device: torch.device, trainer_class=None) -> str:
    """``fastt2i sample attngan``: the stages' images (one row per stage) and, with --attention,
    the word attention maps.  ``trainer_class``: a family on AttnGAN's backbone."""
    tc = trainer_class or AttnGANTrainer
    cfg = None
    if not os.path.isfile(args.checkpoint) or "fastt2i" not in (read_weights(args.checkpoint, args.checkpoint) or {}):
        kw = {"official_mask": True} if args.official_mask else {}
        if args.stages:
            kw["branch_num"] = args.stages
        cfg = tc.config_class.preset(args.preset, **kw)
    netG, text_encoder, vocab, cfg, norm = load_sampler(args.checkpoint, device, use_ema=not args.no_ema,
                                                        text_encoder_path=args.text_encoder, vocab_path=args.vocab,
                                                        config=cfg, trainer_class=tc)
    if args.official_mask:
        for stage in (2, 3):
            if hasattr(netG, f"h_net{stage}"):
                getattr(netG, f"h_net{stage}").att.official_mask = True
    captions = [c for c in captions for _ in range(args.n)]
    g = torch.Generator().manual_seed(args.seed)
    images, att, words = generate(netG, text_encoder, vocab, captions, device, norm, g)
    size = images[-1].shape[-1]
    rows = [torch.nn.functional.interpolate(x, size=(size, size), mode="nearest") for x in images]
    save_grid(torch.cat(rows), args.out, nrow=len(captions))
    msg = f"wrote {args.out} ({len(captions)} captions x {len(images)} stages, up to {size}x{size})"
    if args.attention:
        if not att:
            raise ValueError("--attention: this generator has one stage, hence no word attention")
        path = os.path.splitext(args.out)[0] + "_attention.png"
        save_attention_figure(path, images[:len(att)], att, words)
        msg += f" and {path}"
    return msg


def demo(args: argparse.Namespace, trainer_class=None) -> None:
    from fastt2i.train.demo import DEMO_CAPTIONS

    from ..core import TrainConfig

    tc = trainer_class or AttnGANTrainer
    device = args.device
    mcfg = tc.config_class.synthetic()
    tcfg = TrainConfig(data="synthetic", out_dir=args.out, steps=10**9, max_minutes=args.minutes, device=device,
                       backend=args.backend, seed=args.seed, save_every=200, log_every=10,
                       sample_captions=DEMO_CAPTIONS[:8], options={"damsm_input_size": 139})
    trainer = tc(mcfg, tcfg)
    trainer.train()
    path = trainer.sample_grid(os.path.join(args.out, f"{tc.family}_samples.png"))
    print(f"{tc.title} demo: {trainer.step} steps; samples {path}, attention maps "
          f"{os.path.splitext(path)[0]}_attention.png")


register_family(Family(
    name="attngan",
    summary="AttnGAN (Xu et al., CVPR 2018): three stages with word attention, DAMSM loss",
    trainer=AttnGANTrainer,
    presets=("birds", "coco", "synthetic"),
    model_config=model_config,
    add_train_arguments=add_train_arguments,
    train_options=train_options,
    add_sample_arguments=add_sample_arguments,
    sample=sample,
    demo=demo,
))
