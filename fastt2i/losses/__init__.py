"""Losses of the GAN families: adversarial, gradient penalties, DAMSM, KL, ..."""
from .gradient_penalty import LazyRegularizer, ma_gradient_penalty, r1_penalty
from .damsm import damsm_sentence_loss, damsm_word_loss

__all__ = ["LazyRegularizer", "ma_gradient_penalty", "r1_penalty", "damsm_word_loss", "damsm_sentence_loss"]
