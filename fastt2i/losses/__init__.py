"""Losses of the GAN families: adversarial, gradient penalties, DAMSM, KL, ..."""
from .gradient_penalty import LazyRegularizer, ma_gradient_penalty, r1_penalty

__all__ = ["LazyRegularizer", "ma_gradient_penalty", "r1_penalty"]
