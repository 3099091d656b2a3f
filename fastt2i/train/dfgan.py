"""The DF-GAN trainer: the official procedure plus AMP, channels_last, compile, EMA, DDP,
atomic checkpoints with exact resume, progress, sample grids and TensorBoard.

One iteration, as the official ``lib/modules.py:train``:
  D: hinge on (real, s), on (real rolled by one, s) and on (G(z, s) detached, s); MA-GP on the
     real pair's output w.r.t. image and sentence (k = 2, p = 6); Adam(4e-4, (0, 0.9)).
  G: -NetC(NetD(G(z, s)), s).mean(); Adam(1e-4, (0, 0.9)).
The DAMSM text encoder is frozen.

Reproducibility: the noise of step ``t`` on rank ``r`` comes from a generator seeded by
(seed, r, t) and the data order of epoch ``e`` from a permutation seeded by (seed, e), so a
resumed run (single process or DDP) sees the same noise and batches as an uninterrupted one;
global RNG states are saved and restored as well.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from fastt2i import ops
from fastt2i.data import build_dataset
from fastt2i.losses import ma_gradient_penalty
from fastt2i.models import DFGAN, DFGANConfig, load_official_state_dict
from fastt2i.text import RNNEncoder, encode_captions

from .checkpoint import FORMAT_VERSION, atomic_save, capture_rng_state, load_checkpoint, restore_rng_state
from .images import save_grid
from .sampling import caption_embeddings, generate, truncated_noise

AMP_DTYPES = {"none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    data: str = "synthetic"
    out_dir: str = "runs/dfgan"
    steps: int = 1000
    max_minutes: float | None = None      # stop (and checkpoint) after this wall time
    batch_size: int | None = None         # per process; None: the model config's
    device: str = "auto"
    backend: str = "auto"
    amp: str = "none"                     # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False                 # torch.compile of NetG (the MA-GP double backward stays eager)
    ema: float = 0.0                      # EMA decay of G (0: off), e.g. 0.999
    save_every: int = 500
    sample_every: int | None = None       # None: with every checkpoint
    log_every: int = 50
    seed: int = 100                       # the official manual_seed
    num_workers: int = 0
    tensorboard: bool = False
    resume: str | None = None             # a checkpoint path, or "auto": out_dir/checkpoint.pt if present
    init_from: str | None = None          # official weights to start from (training state or netG file)
    text_encoder: str | None = None       # official DAMSM text_encoder*.pth; None: random frozen encoder
    sample_captions: list = field(default_factory=list)
    num_samples: int = 16
    progress: bool = True

    def __post_init__(self):
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp: expected one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        if self.steps < 0:
            raise ValueError(f"steps: expected >= 0, got {self.steps}")
        if self.save_every < 1:
            raise ValueError(f"save_every: expected >= 1, got {self.save_every}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: expected a decay in [0, 1), got {self.ema}")


# ----------------------------------------------------------------------------- distributed

def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", local_rank)
    return dev


def _unwrap(module):
    module = getattr(module, "_orig_mod", module)  # torch.compile
    return getattr(module, "module", module)       # DDP


def _mix(*values: int) -> int:
    """A 63-bit seed from integers (SplitMix64-style), so nearby steps get unrelated streams."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


class EpochBatches:
    """Deterministic, shardable batch order: a permutation per epoch seeded by (seed, epoch)."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.rank, self.world = n, batch_size, seed, rank, world_size
        self.per_rank = n // world_size
        if self.per_rank < batch_size:
            raise ValueError(f"the dataset has {n} items: fewer than batch_size={batch_size} per process "
                             f"({world_size} processes)")
        self.batches_per_epoch = self.per_rank // batch_size  # drop_last, as the official loader

    def epoch(self, epoch: int, start: int = 0) -> list[list[int]]:
        g = torch.Generator().manual_seed(_mix(self.seed, epoch))
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world]
        mine = perm[self.rank::self.world].tolist()
        return [mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(start, self.batches_per_epoch)]


def hinge_d(output: torch.Tensor, negative: bool) -> torch.Tensor:
    """Official ``hinge_loss``: relu(1 - out) for real pairs, relu(1 + out) for negatives."""
    out = output.float()
    return F.relu(1.0 + out).mean() if negative else F.relu(1.0 - out).mean()


# ----------------------------------------------------------------------------- trainer

class DFGANTrainer:
    def __init__(self, model_config: DFGANConfig | None = None, config: TrainConfig | None = None, dataset=None):
        self.cfg = config or TrainConfig()
        self.rank, self.world, self.local_rank = dist_env()
        self.device = resolve_device(self.cfg.device, self.local_rank)
        self.distributed = self.world > 1
        if self.distributed and not torch.distributed.is_initialized():
            backend = "nccl" if self.device.type == "cuda" else "gloo"
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            torch.distributed.init_process_group(backend=backend)
        if self.cfg.backend != "auto":  # process-wide, as FASTT2I_BACKEND; 'auto' leaves the current choice
            ops.set_backend(self.cfg.backend)
        self.mcfg = model_config or DFGANConfig.synthetic()
        self.batch_size = self.cfg.batch_size or self.mcfg.batch_size
        self.amp_dtype = AMP_DTYPES[self.cfg.amp]
        self.memory_format = torch.channels_last if self.cfg.channels_last else torch.contiguous_format

        # Models start identical on every rank (DDP also broadcasts rank 0's at wrapping).
        torch.manual_seed(self.cfg.seed)
        self.dataset = dataset if dataset is not None else build_dataset(
            self.cfg.data, "train", imsize=self.mcfg.imsize, words_num=self.mcfg.words_num, seed=self.cfg.seed)
        self.vocab = self.dataset.vocab
        self.text_encoder = RNNEncoder(len(self.vocab), words_num=self.mcfg.words_num)
        if self.cfg.text_encoder:
            load_official_state_dict(self.text_encoder, self.cfg.text_encoder)
        else:
            # No pretrained DAMSM: a random frozen encoder.  N(0, 1) word embeddings (instead of
            # the official U(-0.1, 0.1) init, made for training) keep the LSTM out of its linear
            # range, so different captions get clearly different sentence vectors.
            torch.nn.init.normal_(self.text_encoder.encoder.weight, 0.0, 1.0)
        self.text_encoder.to(self.device).eval().requires_grad_(False)
        # Per-dimension standardisation of the random encoder's sentence vectors (None with a
        # pretrained DAMSM): see sentence_statistics.
        self.sentence_norm = None if self.cfg.text_encoder else self.sentence_statistics()

        self.model = DFGAN(self.mcfg)
        if self.cfg.init_from:
            load_official_state_dict(self.model, self.cfg.init_from)
        self.model.to(self.device)
        if self.cfg.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.netG, self.netD, self.netC = self.model.netG, self.model.netD, self.model.netC
        self.ema = None
        if self.cfg.ema > 0:
            self.ema = copy.deepcopy(self.netG).eval().requires_grad_(False)

        betas = tuple(self.mcfg.betas)
        self.optG = torch.optim.Adam(self.netG.parameters(), lr=self.mcfg.lr_g, betas=betas)
        self.optD = torch.optim.Adam(list(self.netD.parameters()) + list(self.netC.parameters()),
                                     lr=self.mcfg.lr_d, betas=betas)
        fp16 = self.amp_dtype is torch.float16
        self.scalerD = torch.amp.GradScaler(self.device.type) if fp16 else None
        self.scalerG = torch.amp.GradScaler(self.device.type) if fp16 else None

        # Wrappers used in the step; self.netG/netD/netC stay the plain modules.
        self.G, self.D, self.C = self.netG, self.netD, self.netC
        if self.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.G = DDP(self.netG, device_ids=ids, broadcast_buffers=False)
            # NetD's last blocks keep an unused conv_s, as the official model
            self.D = DDP(self.netD, device_ids=ids, broadcast_buffers=False, find_unused_parameters=True)
            self.C = DDP(self.netC, device_ids=ids, broadcast_buffers=False)
        if self.cfg.compile:
            self.G = torch.compile(self.G)

        self.batches = EpochBatches(len(self.dataset), self.batch_size, self.cfg.seed, self.rank, self.world)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict] = []
        self.writer = None
        self._fixed = None

    # ------------------------------------------------------------------ helpers
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step_noise(self, batch_size: int) -> torch.Tensor:
        g = torch.Generator(device="cpu").manual_seed(_mix(self.cfg.seed, self.rank, self.step, 1))
        return torch.randn(batch_size, self.mcfg.nz, generator=g).to(self.device)

    @torch.no_grad()
    def sentence_statistics(self, n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std per dimension of the sentence vectors of the first ``n`` training captions.

        An untrained LSTM's sentence vectors share a large common part and vary by ~0.1 per
        dimension, ten times less than the N(0, 1) noise that they are concatenated with in
        NetG's condition, so G would long ignore the text.  Standardising them (a fixed affine
        map, saved in checkpoints) gives the text the noise's scale.
        """
        g = torch.Generator().manual_seed(_mix(self.cfg.seed, 11))
        idx = torch.randperm(len(self.dataset), generator=g)[:n].tolist()
        if hasattr(self.dataset, "caption"):
            texts = [self.dataset.caption(i) for i in idx]
            ids, lens = self.vocab.encode_batch(texts)
        else:
            ids, lens = self.vocab.encode_batch([self.dataset.captions[i * self.dataset.embeddings_num] for i in idx])
        sents = [encode_captions(self.text_encoder, ids[i:i + 512].to(self.device), lens[i:i + 512])[0]
                 for i in range(0, len(idx), 512)]
        sent = torch.cat(sents)
        return sent.mean(0), sent.std(0).clamp_min(1e-3)

    def normalize_sentence(self, sent: torch.Tensor) -> torch.Tensor:
        if self.sentence_norm is None:
            return sent
        mean, std = self.sentence_norm
        return (sent - mean) / std

    def encode(self, captions: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sent, _ = encode_captions(self.text_encoder, captions.to(self.device), lengths)
        return self.normalize_sentence(sent)

    # ------------------------------------------------------------------ one iteration
    def train_step(self, imgs: torch.Tensor, sent: torch.Tensor) -> dict:
        """One D update (with MA-GP) and one G update on a batch; returns float losses."""
        self.G.train(), self.D.train(), self.C.train()
        imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format).requires_grad_()
        sent = sent.to(self.device).detach().requires_grad_()
        B = imgs.shape[0]
        with self.autocast():
            real_features = self.D(imgs)
            pred_real = self.C(real_features, sent)
            errD_real = hinge_d(pred_real, negative=False)
            mis_features = torch.cat((real_features[1:], real_features[0:1]), dim=0)
            errD_mis = hinge_d(self.C(mis_features, sent), negative=True)
            noise = self.step_noise(B)
            fake = self.G(noise, sent)
            errD_fake = hinge_d(self.C(self.D(fake.detach()), sent), negative=True)
        errD_MAGP = ma_gradient_penalty(pred_real, imgs, sent, k=self.mcfg.gp_k, p=self.mcfg.gp_p, scaler=self.scalerD)
        errD = errD_real + (errD_fake + errD_mis) / 2.0 + errD_MAGP
        self.optD.zero_grad(set_to_none=True)
        if self.scalerD is not None:
            self.scalerD.scale(errD).backward()
            self.scalerD.step(self.optD)
            self.scalerD.update()
        else:
            errD.backward()
            self.optD.step()

        # G step: D's gradients are not needed (and not all-reduced under DDP).
        with contextlib.ExitStack() as stack:
            for m in (self.D, self.C):
                if hasattr(m, "no_sync"):
                    stack.enter_context(m.no_sync())
            with self.autocast():
                output = self.C(self.D(fake), sent)
                errG = -output.float().mean()
            self.optG.zero_grad(set_to_none=True)
            g_params = [p for p in self.netG.parameters() if p.requires_grad]
            if self.scalerG is not None:
                torch.autograd.backward(self.scalerG.scale(errG), inputs=g_params)
                self.scalerG.step(self.optG)
                self.scalerG.update()
            else:
                torch.autograd.backward(errG, inputs=g_params)
                self.optG.step()
        if self.ema is not None:
            with torch.no_grad():
                for pe, p in zip(self.ema.parameters(), self.netG.parameters()):
                    pe.lerp_(p.detach(), 1.0 - self.cfg.ema)
        return {"errD": errD.item(), "errD_real": errD_real.item(), "errD_fake": errD_fake.item(),
                "errD_mis": errD_mis.item(), "errD_MAGP": errD_MAGP.item(), "errG": errG.item()}

    # ------------------------------------------------------------------ data
    def _loader(self, batches):
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.cfg.num_workers,
                                           pin_memory=self.device.type == "cuda")

    def batch_stream(self):
        """Batches from the current (epoch, batch_in_epoch) on, across epochs."""
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            for imgs, caps, lens, _keys in self._loader(self.batches.epoch(self.epoch, self.batch_in_epoch)):
                self.batch_in_epoch += 1
                yield imgs, caps, lens
            self.epoch += 1
            self.batch_in_epoch = 0

    # ------------------------------------------------------------------ fixed samples
    def fixed_inputs(self):
        if self._fixed is None:
            caps = list(self.cfg.sample_captions)
            if not caps:
                if hasattr(self.dataset, "captions_for_display"):
                    caps = self.dataset.captions_for_display(self.cfg.num_samples)
                else:
                    caps = [self.vocab.decode(self.dataset.captions[i * self.dataset.embeddings_num])
                            for i in range(min(self.cfg.num_samples, len(self.dataset)))]
            g = torch.Generator().manual_seed(_mix(self.cfg.seed, 7))
            trunc = self.mcfg.trunc_rate if self.mcfg.truncation else 1.0
            noise = truncated_noise(len(caps), self.mcfg.nz, trunc, generator=g, device=self.device)
            sent = self.normalize_sentence(caption_embeddings(self.text_encoder, self.vocab, caps, self.device))
            self._fixed = (caps, noise, sent)
        return self._fixed

    def sample_grid(self, path: str | None = None) -> str:
        caps, noise, sent = self.fixed_inputs()
        net = self.ema if self.ema is not None else self.netG
        with self.autocast():
            images = generate(net, sent, noise)
        path = path or os.path.join(self.cfg.out_dir, "samples", f"step_{self.step:07d}.png")
        scale = max(1, 128 // self.mcfg.imsize)
        save_grid(images, path, nrow=int(math.ceil(math.sqrt(len(caps)))), scale=scale)
        with open(os.path.splitext(path)[0] + ".txt", "w") as f:
            f.write("\n".join(caps) + "\n")
        if self.writer is not None:
            self.writer.add_images("samples", images.add(1).div(2).clamp(0, 1), self.step)
        return path

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "model": {"netG": self.netG.state_dict(), "netD": self.netD.state_dict(), "netC": self.netC.state_dict()},
            "optimizers": {"optimizer_G": self.optG.state_dict(), "optimizer_D": self.optD.state_dict()},
            "epoch": self.epoch,
            "fastt2i": {
                "format": FORMAT_VERSION,
                "family": "dfgan",
                "step": self.step,
                "epoch": self.epoch,
                "batch_in_epoch": self.batch_in_epoch,
                "world_size": self.world,
                "model_config": self.mcfg.to_dict(),
                "train_config": {k: v for k, v in dataclasses.asdict(self.cfg).items()},
                "rng": capture_rng_state(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scalers": {"D": self.scalerD.state_dict() if self.scalerD else None,
                            "G": self.scalerG.state_dict() if self.scalerG else None},
                "text_encoder": self.text_encoder.state_dict(),
                "text_encoder_config": {"words_num": self.mcfg.words_num},
                "vocab": self.vocab.words,
                "sentence_norm": None if self.sentence_norm is None else [t.cpu() for t in self.sentence_norm],
            },
        }

    def save(self, path: str | None = None) -> str:
        path = path or os.path.join(self.cfg.out_dir, "checkpoint.pt")
        if self.is_main():
            atomic_save(self.state_dict(), path)
        if self.distributed:
            torch.distributed.barrier()
        return path

    def load(self, path: str) -> None:
        obj = load_checkpoint(path, require_fastt2i=True)
        meta = obj["fastt2i"]
        saved_cfg = DFGANConfig.from_dict(meta["model_config"])
        for name in ("imsize", "ngf", "ndf", "nz", "cond_dim", "ch_size"):
            if getattr(saved_cfg, name) != getattr(self.mcfg, name):
                raise ValueError(f"{path}: checkpoint {name}={getattr(saved_cfg, name)} differs from the model's "
                                 f"{getattr(self.mcfg, name)}")
        if list(meta["vocab"]) != self.vocab.words:
            raise ValueError(f"{path}: the checkpoint's vocabulary ({len(meta['vocab'])} words) differs from the "
                             f"dataset's ({len(self.vocab)} words)")
        load_official_state_dict(self.model, obj)
        load_official_state_dict(self.text_encoder, meta["text_encoder"])
        norm = meta.get("sentence_norm")
        self.sentence_norm = None if norm is None else tuple(t.to(self.device) for t in norm)
        self.optG.load_state_dict(obj["optimizers"]["optimizer_G"])
        self.optD.load_state_dict(obj["optimizers"]["optimizer_D"])
        if self.ema is not None:
            if meta.get("ema") is not None:
                self.ema.load_state_dict(meta["ema"])
            else:
                self.ema.load_state_dict(self.netG.state_dict())
        for scaler, key in ((self.scalerD, "D"), (self.scalerG, "G")):
            if scaler is not None and meta["scalers"].get(key):
                scaler.load_state_dict(meta["scalers"][key])
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        if meta.get("world_size", 1) != self.world:
            # another sharding: restart the interrupted epoch's order with this world size
            self.batch_in_epoch = 0
        restore_rng_state(meta["rng"])

    # ------------------------------------------------------------------ loop
    def train(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` total iterations (default: config.steps) or max_minutes."""
        target = self.cfg.steps if steps is None else steps
        if self.cfg.resume:
            path = self.cfg.resume
            if path == "auto":
                path = os.path.join(self.cfg.out_dir, "checkpoint.pt")
                path = path if os.path.isfile(path) else None
            if path:
                self.load(path)
                self.cfg = dataclasses.replace(self.cfg, resume=None)
        if self.is_main() and self.cfg.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError("--tensorboard needs the 'tensorboard' package (pip install tensorboard)") from exc
            self.writer = SummaryWriter(os.path.join(self.cfg.out_dir, "tb"))
        bar = None
        if self.is_main() and self.cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=target if target < 10**8 else None, initial=self.step, desc="DF-GAN", dynamic_ncols=True)
        start = time.perf_counter()
        sample_every = self.cfg.sample_every or self.cfg.save_every
        out = []
        stream = self.batch_stream() if self.step < target else iter(())
        try:
            for imgs, caps, lens in stream:
                sent = self.encode(caps, lens)
                losses = self.train_step(imgs, sent)
                self.step += 1
                if not all(math.isfinite(v) for v in losses.values()):
                    raise FloatingPointError(f"step {self.step}: non-finite loss {losses}")
                losses["step"] = self.step
                out.append(losses)
                if bar is not None:
                    bar.update(1)
                    if self.step % max(1, self.cfg.log_every) == 0 or self.step == target:
                        bar.set_postfix(errD=f"{losses['errD']:.3f}", errG=f"{losses['errG']:.3f}")
                if self.writer is not None and self.step % max(1, self.cfg.log_every) == 0:
                    for k, v in losses.items():
                        if k != "step":
                            self.writer.add_scalar(f"loss/{k}", v, self.step)
                timed_out = self.cfg.max_minutes is not None and time.perf_counter() - start > 60 * self.cfg.max_minutes
                done = self.step >= target or timed_out
                if self.step % self.cfg.save_every == 0 or done:
                    self.save()
                if self.is_main() and (self.step % sample_every == 0 or done):
                    self.sample_grid()
                if done:
                    break
        finally:
            if bar is not None:
                bar.close()
            if self.writer is not None:
                self.writer.flush()
        self.history.extend(out)
        return out

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
