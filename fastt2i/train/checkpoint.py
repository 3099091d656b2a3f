"""Atomic checkpoints and RNG state capture for exact resume.

A checkpoint keeps its family's training-state layout (``fastt2i.models.CheckpointLayout``;
DF-GAN's is the official ``{'model': {'netG', 'netD', 'netC'}, 'optimizers': {'optimizer_G',
'optimizer_D'}, 'epoch'}``, so the official code can read it), plus a ``'fastt2i'`` entry with
what exact resume and sampling need (family, step, data position, RNG states, EMA, grad
scalers, configs, the vocabulary, the evaluation history and the family's own state).
Files are written to a temporary name in the same folder and moved into place with
``os.replace``: a run killed mid-write never leaves a truncated checkpoint behind.
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch

from fastt2i.models import FamilyMismatchError, layouts
from fastt2i.models._checkpoint import fastt2i_family, identify

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is unreadable (corrupt, truncated) or not a training state of the family."""


def atomic_save(obj, path: str | os.PathLike) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_checkpoint_file(path: str | os.PathLike, map_location="cpu"):
    """``torch.load`` (tensors and plain containers only) with clear errors for missing / corrupt files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load raises many exception types for bad bytes
        raise CheckpointError(f"{path}: cannot read the checkpoint, the file is corrupt or truncated "
                              f"({type(exc).__name__}: {str(exc)[:200]})") from exc


def load_checkpoint(path: str | os.PathLike, map_location="cpu", require_fastt2i: bool = False,
                    family: str | None = None) -> dict:
    """Read a training state (fastt2i's or the official one) with clear errors.

    ``family`` (a registry name such as ``"dfgan"``) requires that family's layout and rejects
    another family's checkpoint naming both; None accepts any registered family's.
    """
    path = os.fspath(path)
    obj = read_checkpoint_file(path, map_location)
    known = layouts()
    if family is not None and family not in known:
        raise ValueError(f"family: expected one of {sorted(known)}, got {family!r}")
    candidates = [known[family]] if family is not None else list(known.values())
    recorded = fastt2i_family(obj)
    if family is not None and recorded is not None and recorded != family:
        other = known.get(recorded)
        raise FamilyMismatchError(f"{path}: this is a {other.title if other else recorded} checkpoint (family "
                                  f"'{recorded}'), not a {known[family].title} one (family '{family}')")
    layout = next((lay for lay in candidates if lay.networks_in(obj) is not None), None)
    if layout is None:
        found = identify(obj)
        if family is not None and found is not None and found[0].family != family:
            what = f"{found[0].title}'s {found[1]}" if found[1] else f"a {found[0].title} training state"
            raise FamilyMismatchError(f"{path}: this is {what} (family '{found[0].family}'), not a "
                                      f"{known[family].title} one (family '{family}')")
        keys = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        expected = "; ".join(f"{lay.title}: {lay.describe()}" for lay in candidates)
        title = known[family].title + " " if family is not None else ""
        raise CheckpointError(f"{path}: not a {title}training state (expected {expected}; found {keys})")
    if require_fastt2i and not isinstance(obj.get("fastt2i"), dict):
        raise CheckpointError(f"{path}: an official {layout.title} file has no fastt2i resume state (step, RNG, "
                              "data position); load its weights with --init-from / load_official_state_dict")
    if isinstance(obj.get("fastt2i"), dict) and obj["fastt2i"].get("format", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {obj['fastt2i']['format']} is newer than this "
                              f"fastt2i ({FORMAT_VERSION})")
    return obj


def capture_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states, as plain containers and tensors."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])
