"""The pre-extracted char-CNN-RNN text embeddings of StackGAN / StackGAN++ / GAN-INT-CLS, as distributed.

Each split folder (``birds/train``, ``birds/test``, ...) of the released data holds

    char-CNN-RNN-embeddings.pickle   (N images, E captions, 1024) float32: a NumPy array or a
                                     list of per-image (E, 1024) arrays (E = 10 on CUB, 5 on COCO)
    filenames.pickle                 N image keys, in the same order
    class_info.pickle                N class ids (optional; StackGAN-v2 uses it for wrong images)

They were written by Python 2, so they are read with ``encoding="latin1"`` as the official
loaders do.  Anything of another layout, embedding size or length is refused with an error
saying what was expected and what the file holds.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

EMBEDDING_FILE = "char-CNN-RNN-embeddings.pickle"
EMBEDDING_DIM = 1024


class EmbeddingFileError(ValueError):
    """A char-CNN-RNN embedding / filenames / class_info pickle that is not in the released layout."""


def _load_pickle(path: str, what: str):
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what}: file not found: {path}")
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="latin1")
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many types
        raise EmbeddingFileError(f"{what}: cannot unpickle {path} ({type(exc).__name__}: {exc})") from exc


def embeddings_array(obj, dim: int = EMBEDDING_DIM, what: str = "embeddings") -> np.ndarray:
    """The unpickled object -> float32 array (N, E, dim), or EmbeddingFileError."""
    try:
        arr = np.asarray(obj, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise EmbeddingFileError(f"{what}: expected (images, captions, {dim}) numbers (an array or a list of "
                                 f"equal-shaped per-image arrays), got {type(obj).__name__} that is not a regular "
                                 f"numeric array ({exc})") from exc
    if arr.ndim == 2:  # one embedding per image (some released test files)
        arr = arr[:, None, :]
    if arr.ndim != 3:
        raise EmbeddingFileError(f"{what}: expected shape (images, captions, {dim}), got {arr.shape}")
    if arr.shape[2] != dim:
        raise EmbeddingFileError(f"{what}: expected {dim}-d embeddings, got {arr.shape[2]}-d "
                                 f"(array of shape {arr.shape})")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise EmbeddingFileError(f"{what}: no embeddings (shape {arr.shape})")
    if not np.isfinite(arr).all():
        raise EmbeddingFileError(f"{what}: non-finite values")
    return arr


@dataclass
class CharCNNRNNEmbeddings:
    """One split: embeddings (N, E, dim) float32, filenames (N), class ids (N) or None."""

    embeddings: np.ndarray
    filenames: list
    class_ids: np.ndarray | None

    def __len__(self) -> int:
        return self.embeddings.shape[0]

    @property
    def captions_per_image(self) -> int:
        return self.embeddings.shape[1]

    def tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.embeddings)


def load_char_cnn_rnn_embeddings(split_dir: str, dim: int = EMBEDDING_DIM,
                                 embedding_file: str = EMBEDDING_FILE) -> CharCNNRNNEmbeddings:
    """Load ``split_dir``'s embedding, filenames and (if present) class_info pickles, checked."""
    emb = embeddings_array(_load_pickle(os.path.join(split_dir, embedding_file), embedding_file), dim,
                           os.path.join(split_dir, embedding_file))
    names = _load_pickle(os.path.join(split_dir, "filenames.pickle"), "filenames.pickle")
    if isinstance(names, np.ndarray):
        names = names.tolist()
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
        raise EmbeddingFileError(f"filenames.pickle: expected a list of image keys (str), got {type(names).__name__}")
    names = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    if len(names) != emb.shape[0]:
        raise EmbeddingFileError(f"{split_dir}: {len(names)} filenames but {emb.shape[0]} embedding rows")
    class_ids = None
    class_path = os.path.join(split_dir, "class_info.pickle")
    if os.path.isfile(class_path):
        try:
            class_ids = np.asarray(_load_pickle(class_path, "class_info.pickle"), dtype=np.int64)
        except (ValueError, TypeError) as exc:
            raise EmbeddingFileError(f"class_info.pickle: expected a list of integer class ids ({exc})") from exc
        if class_ids.shape != (emb.shape[0],):
            raise EmbeddingFileError(f"class_info.pickle: expected {emb.shape[0]} class ids, got shape "
                                     f"{class_ids.shape}")
    return CharCNNRNNEmbeddings(emb, names, class_ids)


def load_embedding_pickle(path: str, dim: int = EMBEDDING_DIM) -> torch.Tensor:
    """A single embedding pickle (e.g. the sampling files of StackGAN) -> (N * E, dim) float32 tensor."""
    arr = embeddings_array(_load_pickle(path, os.path.basename(path)), dim, path)
    return torch.from_numpy(arr.reshape(-1, dim).copy())
