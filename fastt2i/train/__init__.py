"""Training and sampling: the DF-GAN trainer, checkpoints, sampling and image grids."""
from .checkpoint import (
    CheckpointError,
    atomic_save,
    capture_rng_state,
    load_checkpoint,
    read_checkpoint_file,
    restore_rng_state,
)
from .dfgan import DFGANTrainer, EpochBatches, TrainConfig, hinge_d
from .images import make_grid, save_grid
from .sampling import caption_embeddings, generate, load_sampler, truncated_noise

__all__ = [
    "CheckpointError",
    "DFGANTrainer",
    "EpochBatches",
    "TrainConfig",
    "atomic_save",
    "capture_rng_state",
    "caption_embeddings",
    "generate",
    "hinge_d",
    "load_checkpoint",
    "load_sampler",
    "read_checkpoint_file",
    "make_grid",
    "restore_rng_state",
    "save_grid",
    "truncated_noise",
]
