"""The registry of GAN families, from which ``fastt2i train|sample|demo|eval`` build their choices.

A family registers itself with one call at the bottom of its step module
``fastt2i/train/families/<name>.py``::

    register_family(Family(
        name="dfgan", summary="DF-GAN (Tao et al., CVPR 2022): one-stage, deep text-image fusion",
        trainer=DFGANTrainer, presets=("birds", "flowers", "coco", "synthetic"),
        model_config=dfgan_model_config, add_train_arguments=add_dfgan_train_arguments,
        add_sample_arguments=add_dfgan_sample_arguments, sample=sample_dfgan, demo=demo_dfgan))

The ``fastt2i demo`` flags are the demo's own (``fastt2i.train.demo.add_arguments``), the same
for every family.

Modules in ``fastt2i.train.families`` (and evaluators in ``fastt2i.train.evaluators``, which
call :func:`register_evaluator`) are found and imported on the first look-up, so a new family
or evaluator needs no edit elsewhere.  The trainer class carries the rest (title, model config
class, checkpoint layout).
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _no_options(args: argparse.Namespace) -> dict:
    return {}


@dataclass(frozen=True)
class Family:
    """What ``fastt2i`` needs to know of a family.

    name                  registry name (``fastt2i train <name>``); equals ``trainer.family``.
    summary               one line for ``fastt2i train --help``.
    trainer               the ``fastt2i.train.core.Trainer`` subclass.
    presets               model presets (``--preset``; the default follows ``--data``).
    model_config          (args, preset) -> the model config, from the family's extra flags.
    add_train_arguments   the family's extra ``fastt2i train <name>`` flags.
    train_options         args -> family-specific TrainConfig.options.
    add_sample_arguments  the family's extra ``fastt2i sample <name>`` flags.
    sample                (args, captions, device) -> a message; writes args.out (None: no sampling).
    image_sampler         (checkpoint, device, use_ema=True, **kw) -> fn(captions, generator) -> images
                          (B, C, H, W) in [-1, 1]: what ``fastt2i eval`` and evaluators of saved
                          checkpoints call (None: the family makes no images).
    demo                  args -> None: runs ``fastt2i demo <name>`` (flags: fastt2i.train.demo.add_arguments).
    """

    name: str
    summary: str
    trainer: type
    presets: tuple
    model_config: Callable
    add_train_arguments: Callable = _no_arguments
    train_options: Callable = _no_options
    add_sample_arguments: Callable = _no_arguments
    sample: Callable | None = None
    image_sampler: Callable | None = None
    demo: Callable | None = None

    def __post_init__(self):
        if self.trainer.family != self.name:
            raise ValueError(f"family {self.name!r}: its trainer {self.trainer.__name__} says family "
                             f"{self.trainer.family!r}")

    @property
    def title(self) -> str:
        return self.trainer.title

    @property
    def layout(self):
        return self.trainer.layout

    @property
    def config_class(self) -> type:
        return self.trainer.config_class


_FAMILIES: dict[str, Family] = {}
_discovered = False


def register_family(family: Family) -> Family:
    """Add a family (one call in its step module)."""
    if family.name in _FAMILIES and _FAMILIES[family.name].trainer is not family.trainer:
        raise ValueError(f"family {family.name!r} is already registered by {_FAMILIES[family.name].trainer.__module__}")
    _FAMILIES[family.name] = family
    return family


def _discover() -> None:
    """Import every module of ``fastt2i.train.families`` and ``fastt2i.train.evaluators`` once."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    # by name: the package attribute ``families`` would not do (fastt2i.train re-exports functions)
    family_package = importlib.import_module("fastt2i.train.families")
    evaluator_package = importlib.import_module("fastt2i.train.evaluators")

    for package in (family_package, evaluator_package):
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")


def registered_families() -> dict[str, Family]:
    """Every registered family by name (imports ``fastt2i.train.families.*`` on first use)."""
    _discover()
    return dict(sorted(_FAMILIES.items()))


def get_family(name: str) -> Family:
    known = registered_families()
    if name not in known:
        raise ValueError(f"unknown family {name!r}: expected one of {', '.join(known)}")
    return known[name]


# ----------------------------------------------------------------------------- evaluators

@dataclass(frozen=True)
class EvaluatorSpec:
    """A named evaluator for ``--eval NAME``: ``make(args)`` returns ``fn(trainer) -> {name: float}``;
    ``add_arguments(parser)`` adds its options to ``fastt2i train`` (e.g. a statistics file)."""

    name: str
    summary: str
    make: Callable
    add_arguments: Callable = _no_arguments


_EVALUATORS: dict[str, EvaluatorSpec] = {}


def register_evaluator(name: str, make: Callable, summary: str,
                       add_arguments: Callable = _no_arguments) -> EvaluatorSpec:
    """Offer an evaluator to ``fastt2i train ... --eval-every N --eval NAME``.

    ``make(args)`` gets the parsed command line and returns the callable the core runs; import
    heavy dependencies (Inception weights ...) inside ``make``, not at module level, since the
    CLI imports every evaluator module to build its help.
    """
    spec = EvaluatorSpec(name, summary, make, add_arguments)
    _EVALUATORS[name] = spec
    return spec


def registered_evaluators() -> dict[str, EvaluatorSpec]:
    _discover()  # families may register evaluators of their own
    return dict(sorted(_EVALUATORS.items()))
