"""Training and sampling: the family-independent training core, the family registry, the
families' step modules (``fastt2i.train.families``), checkpoints, sampling and image grids."""
from .checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    read_checkpoint_file,
    restore_rng_state,
)
from .core import EpochBatches, TrainConfig, Trainer, dist_env, mix_seed, resolve_device, unwrap
from .families.dfgan import DFGANTrainer, hinge_d, load_sampler
from .images import make_grid, save_grid
from .registry import Family, get_family, register_evaluator, register_family, registered_evaluators, registered_families
from .sampling import caption_embeddings, generate, truncated_noise

__all__ = [
    "CheckpointError",
    "DFGANTrainer",
    "EpochBatches",
    "Family",
    "TrainConfig",
    "Trainer",
    "atomic_save",
    "capture_rng_state",
    "caption_embeddings",
    "dist_env",
    "generate",
    "get_family",
    "hinge_d",
    "load_checkpoint",
    "load_sampler",
    "make_grid",
    "mix_seed",
    "read_checkpoint_file",
    "register_evaluator",
    "register_family",
    "registered_evaluators",
    "registered_families",
    "resolve_device",
    "restore_rng_state",
    "save_grid",
    "truncated_noise",
    "unwrap",
]
