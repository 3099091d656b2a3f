"""The training core shared by every GAN family.

The core owns everything that does not depend on the model: devices, DDP under ``torchrun``,
AMP (bf16/fp16, a GradScaler per optimiser for fp16), channels_last, optional
``torch.compile``, EMA of one network, seeded data order and noise, atomic checkpoints with
exact resume, logging (progress bar, ``log.jsonl``, TensorBoard), sample grids, periodic
evaluation and time limits.  A family supplies only what differs, as a subclass of
:class:`Trainer` in ``fastt2i/train/families/<name>.py`` (next to its model module
``fastt2i/models/<name>.py``), registered with one ``register_family`` call there.

The family interface (DF-GAN, ``fastt2i/train/families/dfgan.py``, is the worked example)::

    class DFGANTrainer(Trainer):
        family = "dfgan"                          # registry name, recorded in checkpoints
        title = "DF-GAN"                          # progress bar, messages
        layout = CHECKPOINT_LAYOUT                # fastt2i.models.CheckpointLayout: where each
                                                  # network / optimiser sits in the checkpoint
        config_class = DFGANConfig                # model config: to_dict(), from_dict(), preset()
        architecture_fields = ("imsize", "ngf", ...)  # must match when resuming
        progress_keys = ("errD", "errG")          # losses on the progress bar
        ema_network = "netG"                      # the network --ema averages (None: no EMA)

        def default_model_config(self): ...       # used when no config is given
        def make_dataset(cls, spec, mcfg, seed):  # optional classmethod: the --data dataset
        def build(self):                          # networks, optimisers (and the text encoder)
            self.G = self.add_network("netG", netG, compile=True)   # -> DDP / compiled wrapper
            self.D = self.add_network("netD", netD, find_unused_parameters=True)
            self.optG = self.add_optimizer("G", torch.optim.Adam(netG.parameters(), ...))
        def run_step(self, batch) -> dict:        # one iteration on a loader batch -> float losses
            ...  with self.autocast(): ...;  self.optimizer_step("D", errD) ...
        def sample(self, captions, generator):    # images (B, C, H, W) in [-1, 1] (EMA if any);
                                                  # optional: without it, no sample grids
        def on_epoch(self, epoch):                # optional: per-epoch schedules
        def extra_state(self) -> dict:            # what else the checkpoint holds (text encoder ...)
        def load_extra_state(self, meta, path):   # ... and its restoration

Services for the step: ``autocast()``, ``optimizer_step(name, loss, inputs=None, clip_norm=None)``
(zero_grad, scaled backward, optional clipping of unscaled gradients, step, scaler update), ``no_sync(*wrappers)`` (skip DDP's all-reduce for
networks that are not updated), ``step_generator(stream)`` (a CPU generator seeded by (seed,
rank, step, stream): the same noise after a resume), ``self.device``, ``self.memory_format``,
``self.dataset``, ``self.vocab``, ``self.mcfg`` (model config), ``self.cfg`` (TrainConfig,
family-specific options in ``cfg.options``).  The core updates the EMA after each step.

Checkpoints follow the family's layout (DF-GAN: the official training state ``{'model':
{'netG', 'netD', 'netC'}, 'optimizers': {'optimizer_G', 'optimizer_D'}, 'epoch'}``, readable by
the official code) plus a ``'fastt2i'`` entry: format, family, step, data position, world size,
configs, RNG states, EMA, grad scalers, vocabulary, evaluation history and the family's
``extra_state()``.  Resuming from another family's checkpoint is an error naming both.

Evaluation: ``evaluators`` are callables ``fn(trainer) -> {name: float}`` (family-independent:
they use ``trainer.sample`` / ``trainer.networks``); with ``eval_every = N`` they run every N
steps and at the end (on every rank, so they may use collectives; rank 0 logs), under
``torch.no_grad()``.  Results go to the progress bar, ``log.jsonl``, TensorBoard (``eval/<name>``)
and ``trainer.eval_history`` (a list of ``{"step": s, name: value}``, kept across resumes).

Reproducibility: the data order of epoch ``e`` is a permutation seeded by (seed, e), sharded by
rank; step noise comes from ``step_generator``; global RNG states are saved and restored, so a
resumed run (single process or DDP) takes the same steps as an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from fastt2i import ops
from fastt2i.data import build_dataset
from fastt2i.models import load_state_dict_checked

from .checkpoint import FORMAT_VERSION, atomic_save, capture_rng_state, load_checkpoint, restore_rng_state
from .images import save_grid

AMP_DTYPES = {"none": None, "fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

Evaluator = Callable[["Trainer"], dict]


@dataclass
class TrainConfig:
    data: str = "synthetic"
    out_dir: str | None = None            # None: runs/<family>
    steps: int = 1000
    max_minutes: float | None = None      # stop (and checkpoint) after this wall time
    batch_size: int | None = None         # per process; None: the model config's
    device: str = "auto"
    backend: str = "auto"
    amp: str = "none"                     # none | bf16 | fp16
    channels_last: bool = False
    compile: bool = False                 # torch.compile of the networks the family marks (DF-GAN: NetG)
    ema: float = 0.0                      # EMA decay of the family's ema_network (0: off), e.g. 0.999
    save_every: int = 500
    sample_every: int | None = None       # None: with every checkpoint
    log_every: int = 50
    eval_every: int | None = None         # run the evaluators every N steps (None: never)
    seed: int = 100                       # the official manual_seed
    num_workers: int = 0
    tensorboard: bool = False
    resume: str | None = None             # a checkpoint path, or "auto": out_dir/checkpoint.pt if present
    init_from: str | None = None          # official weights to start from
    text_encoder: str | None = None       # official DAMSM text_encoder*.pth; None: random frozen encoder
    sample_captions: list = field(default_factory=list)
    num_samples: int = 16
    progress: bool = True
    options: dict = field(default_factory=dict)  # family-specific options (its extra CLI flags)

    def __post_init__(self):
        if self.amp not in AMP_DTYPES:
            raise ValueError(f"amp: expected one of {sorted(AMP_DTYPES)}, got {self.amp!r}")
        if self.steps < 0:
            raise ValueError(f"steps: expected >= 0, got {self.steps}")
        if self.save_every < 1:
            raise ValueError(f"save_every: expected >= 1, got {self.save_every}")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"eval_every: expected >= 1 (or None), got {self.eval_every}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema: expected a decay in [0, 1), got {self.ema}")


# ----------------------------------------------------------------------------- distributed, seeds, batches

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


def unwrap(module):
    """The plain module inside torch.compile and DDP wrappers."""
    module = getattr(module, "_orig_mod", module)  # torch.compile
    return getattr(module, "module", module)       # DDP


def mix_seed(*values: int) -> int:
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
        self.batches_per_epoch = self.per_rank // batch_size  # drop_last, as the official loaders

    def epoch(self, epoch: int, start: int = 0) -> list[list[int]]:
        g = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
        perm = torch.randperm(self.n, generator=g)[: self.per_rank * self.world]
        mine = perm[self.rank::self.world].tolist()
        return [mine[i * self.batch_size:(i + 1) * self.batch_size] for i in range(start, self.batches_per_epoch)]


def _set_path(tree: dict, path: tuple, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _get_path(tree: dict, path: tuple):
    for key in path:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


# ----------------------------------------------------------------------------- the core

def fused_adam(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` rebuilt with ``fused=True`` when it is a fresh Adam/AdamW with the implementation
    left open (foreach and fused None, not differentiable) over floating CPU/CUDA parameters on one
    device type; otherwise ``optimizer`` itself."""
    import inspect

    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW) or optimizer.state:
        return optimizer
    groups = optimizer.param_groups
    params = [p for g in groups for p in g["params"]]
    if (not params or any(g.get("fused") is not None or g.get("foreach") is not None or g.get("differentiable")
                          for g in groups)
            or len({p.device.type for p in params}) != 1 or params[0].device.type not in ("cpu", "cuda")
            or not all(p.is_floating_point() for p in params)):
        return optimizer
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return type(optimizer)([{**g, "fused": True} for g in groups], **{**defaults, "fused": True})


class Trainer:
    """Family-independent training loop; subclass it per family (see the module docstring)."""

    family: str = ""
    title: str = ""
    layout = None                   # fastt2i.models.CheckpointLayout
    config_class: type | None = None
    architecture_fields: tuple = ()
    progress_keys: tuple = ()
    ema_network: str | None = None

    def __init__(self, model_config=None, config: TrainConfig | None = None, dataset=None,
                 evaluators: dict | list | tuple = ()):
        if not self.family or self.layout is None or self.config_class is None:
            raise TypeError(f"{type(self).__name__}: a family trainer sets family, layout and config_class")
        self.cfg = config or TrainConfig()
        if self.cfg.out_dir is None:
            self.cfg = dataclasses.replace(self.cfg, out_dir=os.path.join("runs", self.family))
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
        self.mcfg = model_config if model_config is not None else self.default_model_config()
        if not isinstance(self.mcfg, self.config_class):
            raise TypeError(f"model_config: expected a {self.config_class.__name__} for {self.title}, "
                            f"got {type(self.mcfg).__name__}")
        self.batch_size = self.cfg.batch_size or self.mcfg.batch_size
        self.amp_dtype = AMP_DTYPES[self.cfg.amp]
        self.memory_format = torch.channels_last if self.cfg.channels_last else torch.contiguous_format

        # Models start identical on every rank (DDP also broadcasts rank 0's at wrapping).
        torch.manual_seed(self.cfg.seed)
        self.dataset = dataset if dataset is not None else self.make_dataset(self.cfg.data, self.mcfg, self.cfg.seed)
        self.vocab = getattr(self.dataset, "vocab", None)

        self.networks: dict[str, torch.nn.Module] = {}   # plain modules, by checkpoint name
        self.wrapped: dict[str, torch.nn.Module] = {}    # what the step calls (DDP / compiled)
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.scalers: dict[str, torch.amp.GradScaler | None] = {}
        self.build()
        missing = [n for n in self.layout.networks if n not in self.networks]
        if missing:
            raise TypeError(f"{type(self).__name__}.build: the layout's networks {missing} were not added")
        self.ema = None
        if self.cfg.ema > 0 and self.ema_network is not None:
            self.ema = copy.deepcopy(self.networks[self.ema_network]).eval().requires_grad_(False)

        self.batches = EpochBatches(len(self.dataset), self.batch_size, self.cfg.seed, self.rank, self.world)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.history: list[dict] = []
        self.eval_history: list[dict] = []
        self.evaluators: dict[str, Evaluator] = {}
        items = evaluators.items() if isinstance(evaluators, dict) else (
            (getattr(fn, "__name__", f"evaluator{i}"), fn) for i, fn in enumerate(evaluators))
        for name, fn in items:
            self.add_evaluator(fn, name)
        self.writer = None

    # ------------------------------------------------------------------ the family's part
    def default_model_config(self):
        return self.config_class()

    @classmethod
    def make_dataset(cls, spec: str, model_config, seed: int, split: str = "train"):
        """The dataset for ``--data spec`` (``fastt2i.data.build_dataset`` at the config's image size
        and caption length); a family with other inputs (DAMSM's 299-pixel crops) overrides it."""
        return build_dataset(spec, split, imsize=model_config.imsize, words_num=model_config.words_num, seed=seed)

    # The family interface: build and run_step are required, sample only for families with images.
    def build(self) -> None:
        """Networks (``add_network``), optimisers (``add_optimizer``) and frozen encoders."""
        raise NotImplementedError(f"{type(self).__name__} must define build(): its networks and optimisers")

    def run_step(self, batch) -> dict:
        """One training iteration on a loader batch; returns {name: float} losses."""
        raise NotImplementedError(f"{type(self).__name__} must define run_step(batch): one training iteration")

    def sample(self, captions: list[str], generator: torch.Generator | None = None) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] for raw captions (the EMA network when there is one).

        A family without images (DAMSM pretraining) leaves it out: no sample grids then."""
        raise NotImplementedError(f"{type(self).__name__} generates no images (it defines no sample())")

    def on_epoch(self, epoch: int) -> None:
        """Called when an epoch starts (also the interrupted one after a resume): per-epoch
        schedules such as DAMSM's learning-rate decay go here."""

    def extra_state(self) -> dict:
        return {}

    @classmethod
    def makes_images(cls) -> bool:
        return cls.sample is not Trainer.sample

    def load_extra_state(self, meta: dict, path: str) -> None:
        pass

    # ------------------------------------------------------------------ services for families
    def is_main(self) -> bool:
        return self.rank == 0

    def add_network(self, name: str, module: torch.nn.Module, *, find_unused_parameters: bool = False,
                    compile: bool = False, ddp: bool = True) -> torch.nn.Module:
        """Register a network under its checkpoint name: moved to the device (channels_last when
        asked), wrapped in DDP when distributed and trainable, compiled when ``compile`` and
        ``--compile``.  Returns the wrapper the step should call."""
        module.to(self.device)
        if self.cfg.channels_last:
            module.to(memory_format=torch.channels_last)
        self.networks[name] = module
        wrapped = module
        if self.distributed and ddp and any(p.requires_grad for p in module.parameters()):
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DDP(module, device_ids=ids, broadcast_buffers=False,
                          find_unused_parameters=find_unused_parameters)
        if compile and self.cfg.compile:
            wrapped = torch.compile(wrapped)
        self.wrapped[name] = wrapped
        return wrapped

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Register an optimiser under its layout name (use the one returned); fp16 gives it its own
        GradScaler.  With a fused backend selected (not ``reference``, which keeps the official
        per-parameter loop), Adam and AdamW whose implementation the family left open run PyTorch's
        fused kernel: same update (2e-7 relative on DF-GAN's networks), one pass per parameter;
        on the CPU demo's networks (1.4 M parameters, 137 tensors, 1 thread) 1.7 ms instead of 8.5
        ms per step, and foreach=True was no faster (8.3 ms)."""
        if ops.get_backend() != "reference":
            optimizer = fused_adam(optimizer)
        self.optimizers[name] = optimizer
        fp16 = self.amp_dtype is torch.float16
        self.scalers[name] = torch.amp.GradScaler(self.device.type) if fp16 else None
        return optimizer

    def optimizer_step(self, name: str, loss: torch.Tensor, inputs=None, clip_norm: float | None = None,
                       clip_params=None) -> None:
        """zero_grad, backward (scaled under fp16, only into ``inputs`` when given), optional
        gradient-norm clipping of ``clip_params`` (default: the optimiser's; on unscaled
        gradients), step, scaler update."""
        opt, scaler = self.optimizers[name], self.scalers[name]
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(scaler.scale(loss) if scaler is not None else loss, inputs=inputs)
        if clip_norm is not None:
            if scaler is not None:
                scaler.unscale_(opt)
            params = clip_params if clip_params is not None else [p for g in opt.param_groups for p in g["params"]]
            torch.nn.utils.clip_grad_norm_(list(params), clip_norm)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    @contextlib.contextmanager
    def no_sync(self, *modules):
        """DDP's no_sync for the given wrappers: their gradients are not needed in this phase."""
        with contextlib.ExitStack() as stack:
            for m in modules:
                if hasattr(m, "no_sync"):
                    stack.enter_context(m.no_sync())
            yield

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def step_generator(self, stream: int = 1) -> torch.Generator:
        """A CPU generator for this (rank, step): noise that a resumed run draws again identically."""
        return torch.Generator(device="cpu").manual_seed(mix_seed(self.cfg.seed, self.rank, self.step, stream))

    @torch.no_grad()
    def update_ema(self) -> None:
        if self.ema is not None:
            for pe, p in zip(self.ema.parameters(), self.networks[self.ema_network].parameters()):
                pe.lerp_(p.detach(), 1.0 - self.cfg.ema)

    # ------------------------------------------------------------------ evaluation
    def add_evaluator(self, fn: Evaluator, name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"evaluator: expected a callable fn(trainer) -> dict, got {type(fn).__name__}")
        name = name or getattr(fn, "__name__", f"evaluator{len(self.evaluators)}")
        if name in self.evaluators:
            raise ValueError(f"evaluator {name!r} is already registered")
        self.evaluators[name] = fn

    def evaluate(self) -> dict:
        """Run every evaluator now; returns (and records) ``{"step": s, metric: value, ...}``."""
        row = {"step": self.step}
        with torch.no_grad():
            for name, fn in self.evaluators.items():
                result = fn(self)
                if not isinstance(result, dict):
                    raise TypeError(f"evaluator {name!r}: expected a dict of named floats, got {type(result).__name__}")
                for k, v in result.items():
                    if k in row:
                        raise ValueError(f"evaluator {name!r}: metric {k!r} is also reported by another evaluator")
                    row[k] = float(v)
        self.eval_history.append(row)
        if self.is_main():
            self._log({"eval": {k: v for k, v in row.items() if k != "step"}, "step": self.step})
            if self.writer is not None:
                for k, v in row.items():
                    if k != "step":
                        self.writer.add_scalar(f"eval/{k}", v, self.step)
        return row

    # ------------------------------------------------------------------ data
    def _loader(self, batches):
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=batches, num_workers=self.cfg.num_workers,
                                           pin_memory=self.device.type == "cuda")

    def batch_stream(self):
        """Loader batches (as the dataset returns them) from the current (epoch, batch_in_epoch) on."""
        while True:
            if hasattr(self.dataset, "set_epoch"):
                self.dataset.set_epoch(self.epoch)
            self.on_epoch(self.epoch)
            for batch in self._loader(self.batches.epoch(self.epoch, self.batch_in_epoch)):
                self.batch_in_epoch += 1
                yield batch
            self.epoch += 1
            self.batch_in_epoch = 0

    # ------------------------------------------------------------------ sample grids
    def fixed_captions(self) -> list[str]:
        caps = list(self.cfg.sample_captions)
        if not caps:
            if hasattr(self.dataset, "captions_for_display"):
                caps = self.dataset.captions_for_display(self.cfg.num_samples)
            else:
                caps = [self.vocab.decode(self.dataset.captions[i * self.dataset.embeddings_num])
                        for i in range(min(self.cfg.num_samples, len(self.dataset)))]
        return caps

    def sample_grid(self, path: str | None = None) -> str:
        """A PNG grid of the fixed captions with fixed noise (and their captions in a .txt)."""
        caps = self.fixed_captions()
        images = self.sample(caps, torch.Generator().manual_seed(mix_seed(self.cfg.seed, 7)))
        path = path or os.path.join(self.cfg.out_dir, "samples", f"step_{self.step:07d}.png")
        scale = max(1, 128 // images.shape[-1])
        save_grid(images, path, nrow=int(math.ceil(math.sqrt(len(caps)))), scale=scale)
        with open(os.path.splitext(path)[0] + ".txt", "w") as f:
            f.write("\n".join(caps) + "\n")
        if self.writer is not None:
            self.writer.add_images("samples", images.add(1).div(2).clamp(0, 1), self.step)
        return path

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        out: dict = {}
        for name, path in self.layout.networks.items():
            _set_path(out, path, self.networks[name].state_dict())
        for name, path in self.layout.optimizers.items():
            _set_path(out, path, self.optimizers[name].state_dict())
        out["epoch"] = self.epoch
        out["fastt2i"] = {
            "format": FORMAT_VERSION,
            "family": self.family,
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world_size": self.world,
            "model_config": self.mcfg.to_dict(),
            "train_config": dataclasses.asdict(self.cfg),
            "rng": capture_rng_state(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scalers": {k: s.state_dict() if s is not None else None for k, s in self.scalers.items()},
            "vocab": self.vocab.words if self.vocab is not None else None,
            "evaluations": list(self.eval_history),
            **self.extra_state(),
        }
        return out

    def save(self, path: str | None = None) -> str:
        path = path or os.path.join(self.cfg.out_dir, "checkpoint.pt")
        if self.is_main():
            atomic_save(self.state_dict(), path)
        if self.distributed:
            torch.distributed.barrier()
        return path

    def load(self, path: str) -> None:
        """Restore a fastt2i checkpoint of this family for exact resume."""
        obj = load_checkpoint(path, require_fastt2i=True, family=self.family)
        meta = obj["fastt2i"]
        saved_cfg = self.config_class.from_dict(meta["model_config"])
        for name in self.architecture_fields:
            if getattr(saved_cfg, name) != getattr(self.mcfg, name):
                raise ValueError(f"{path}: checkpoint {name}={getattr(saved_cfg, name)} differs from the model's "
                                 f"{getattr(self.mcfg, name)}")
        if self.vocab is not None and meta.get("vocab") is not None and list(meta["vocab"]) != self.vocab.words:
            raise ValueError(f"{path}: the checkpoint's vocabulary ({len(meta['vocab'])} words) differs from the "
                             f"dataset's ({len(self.vocab)} words)")
        for name, state in self.layout.networks_in(obj).items():
            load_state_dict_checked(self.networks[name], state, name)
        for name, opath in self.layout.optimizers.items():
            state = _get_path(obj, opath)
            if state is None:
                raise ValueError(f"{path}: the checkpoint has no optimiser state at {'/'.join(opath)}")
            self.optimizers[name].load_state_dict(state)
        self.load_extra_state(meta, path)
        if self.ema is not None:
            if meta.get("ema") is not None:
                load_state_dict_checked(self.ema, meta["ema"], f"ema of {self.ema_network}")
            else:
                self.ema.load_state_dict(self.networks[self.ema_network].state_dict())
        for name, scaler in self.scalers.items():
            if scaler is not None and (meta.get("scalers") or {}).get(name):
                scaler.load_state_dict(meta["scalers"][name])
        self.step, self.epoch, self.batch_in_epoch = meta["step"], meta["epoch"], meta["batch_in_epoch"]
        if meta.get("world_size", 1) != self.world:
            # another sharding: restart the interrupted epoch's order with this world size
            self.batch_in_epoch = 0
        self.eval_history = [dict(r) for r in meta.get("evaluations", [])]
        restore_rng_state(meta["rng"])

    # ------------------------------------------------------------------ logging
    def _log(self, record: dict) -> None:
        os.makedirs(self.cfg.out_dir, exist_ok=True)
        with open(os.path.join(self.cfg.out_dir, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    # ------------------------------------------------------------------ loop
    def _resume_if_asked(self) -> None:
        if not self.cfg.resume:
            return
        path = self.cfg.resume
        if path == "auto":
            path = os.path.join(self.cfg.out_dir, "checkpoint.pt")
            path = path if os.path.isfile(path) else None
        if path:
            self.load(path)
        self.cfg = dataclasses.replace(self.cfg, resume=None)

    def train(self, steps: int | None = None) -> list[dict]:
        """Train until ``steps`` total iterations (default: config.steps) or max_minutes."""
        target = self.cfg.steps if steps is None else steps
        self._resume_if_asked()
        if self.is_main() and self.cfg.tensorboard and self.writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise RuntimeError("--tensorboard needs the 'tensorboard' package (pip install tensorboard)") from exc
            self.writer = SummaryWriter(os.path.join(self.cfg.out_dir, "tb"))
        bar = None
        if self.is_main() and self.cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=target if target < 10**8 else None, initial=self.step, desc=self.title,
                       dynamic_ncols=True)
        start = time.perf_counter()
        log_every = max(1, self.cfg.log_every)
        sample_every = self.cfg.sample_every or self.cfg.save_every
        eval_every = self.cfg.eval_every if self.evaluators else None
        out = []
        stream = self.batch_stream() if self.step < target else iter(())
        try:
            for batch in stream:
                losses = self.run_step(batch)
                self.update_ema()
                self.step += 1
                if not all(math.isfinite(v) for v in losses.values()):
                    raise FloatingPointError(f"step {self.step}: non-finite loss {losses}")
                losses["step"] = self.step
                out.append(losses)
                timed_out = self.cfg.max_minutes is not None and time.perf_counter() - start > 60 * self.cfg.max_minutes
                done = self.step >= target or timed_out
                logged = self.step % log_every == 0 or done
                if self.is_main() and logged:
                    self._log({**losses, "seconds": round(time.perf_counter() - start, 3)})
                    if self.writer is not None:
                        for k, v in losses.items():
                            if k != "step":
                                self.writer.add_scalar(f"loss/{k}", v, self.step)
                evaluated = None
                if eval_every and (self.step % eval_every == 0 or done):
                    evaluated = self.evaluate()
                if bar is not None:
                    bar.update(1)
                    if logged or evaluated:
                        post = {k: f"{losses[k]:.3f}" for k in self.progress_keys if k in losses}
                        last_eval = self.eval_history[-1] if self.eval_history else {}
                        post.update({k: f"{v:.3g}" for k, v in last_eval.items() if k != "step"})
                        bar.set_postfix(post)
                if self.step % self.cfg.save_every == 0 or done:
                    self.save()
                if self.is_main() and self.makes_images() and (self.step % sample_every == 0 or done):
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
