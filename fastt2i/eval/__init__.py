"""Evaluation: FID and IS with named Inception protocols, R-precision (DAMSM), streaming statistics.

``fastt2i eval`` (fastt2i.eval.command, also ``python -m fastt2i.eval``) runs them on a
checkpoint or a folder of images; ``make_train_evaluator`` is the training hook.
``fastt2i.eval.synthetic`` reads captions back from images of the synthetic shapes (caption accuracy).
"""
from .evaluator import METRICS, MetricSet, make_train_evaluator, parse_metrics, reference_statistics
from .generate import CaptionGenerator, generate, load_generator
from .inception import PROTOCOLS, InceptionFeatures, preprocess
from .inception_score import inception_score_from_probs
from .rprecision import r_precision
from .stats import FeatureStats, frechet_distance, load_stats, save_stats

__all__ = [
    "METRICS",
    "PROTOCOLS",
    "CaptionGenerator",
    "FeatureStats",
    "InceptionFeatures",
    "MetricSet",
    "frechet_distance",
    "generate",
    "inception_score_from_probs",
    "load_generator",
    "load_stats",
    "make_train_evaluator",
    "parse_metrics",
    "preprocess",
    "r_precision",
    "reference_statistics",
    "save_stats",
]
