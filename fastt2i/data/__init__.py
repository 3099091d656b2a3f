"""Datasets: the official birds / flowers / coco layouts and a synthetic shapes dataset.

``build_dataset("synthetic" | "synthetic:N" | "synthetic:N:S" | "birds:PATH" | "flowers:PATH" | "coco:PATH" | "PATH")``
(N items, at most S shapes per image).
"""
from __future__ import annotations

import os

from .official import (
    CAPTIONS_PER_IMAGE,
    DATASETS,
    TextImageDataset,
    bbox_crop_box,
    guess_dataset,
    load_bboxes,
    load_text_data,
)
from .synthetic import SyntheticShapes, describe, parse_caption, render, sample_scene, synthetic_vocabulary

__all__ = [
    "CAPTIONS_PER_IMAGE",
    "DATASETS",
    "SyntheticShapes",
    "TextImageDataset",
    "bbox_crop_box",
    "build_dataset",
    "describe",
    "guess_dataset",
    "load_bboxes",
    "load_text_data",
    "parse_caption",
    "parse_data_spec",
    "render",
    "sample_scene",
    "synthetic_vocabulary",
]


def parse_data_spec(spec: str) -> tuple[str, str | None]:
    """``"birds:/data/birds"`` -> ("birds", "/data/birds"); ``"synthetic:4096"`` -> ("synthetic", "4096")."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data: expected 'synthetic', 'synthetic:N' or 'birds|flowers|coco:PATH', got {spec!r}")
    kind, sep, rest = spec.partition(":")
    if kind in ("synthetic",) + DATASETS and sep:
        return kind, rest
    if kind == "synthetic":
        return "synthetic", None
    if os.path.isdir(spec):
        return guess_dataset(spec), spec
    raise ValueError(f"data: {spec!r} is neither 'synthetic[:N]', '<birds|flowers|coco|generic>:PATH' "
                     "nor an existing folder")


def build_dataset(spec: str, split: str = "train", imsize: int = 64, words_num: int = 18, seed: int = 0):
    kind, arg = parse_data_spec(spec)
    if kind == "synthetic":
        size_s, _, shapes_s = (arg or "").partition(":")
        try:
            size = int(size_s) if size_s else (8192 if split == "train" else 1024)
            max_shapes = int(shapes_s) if shapes_s else 2
        except ValueError:
            raise ValueError(f"data: 'synthetic:N[:S]' needs integers (N items, at most S shapes), got {arg!r}") from None
        return SyntheticShapes(size=size, imsize=imsize, seed=seed, split=split, words_num=words_num,
                               max_shapes=max_shapes)
    if not arg:
        raise ValueError(f"data: {kind!r} needs a folder, e.g. '{kind}:/path/to/{kind}'")
    return TextImageDataset(arg, split=split, dataset=kind, imsize=imsize, words_num=words_num, seed=seed)

from .embeddings import (  # noqa: E402
    CharCNNRNNEmbeddings,
    EmbeddingFileError,
    load_char_cnn_rnn_embeddings,
    load_embedding_pickle,
)

__all__ += ["CharCNNRNNEmbeddings", "EmbeddingFileError", "load_char_cnn_rnn_embeddings", "load_embedding_pickle"]
from .embedding_images import EmbeddingImageDataset  # noqa: E402

__all__ += ["EmbeddingImageDataset"]
