"""Losses of the GAN families: adversarial, gradient penalties, DAMSM, KL, ..."""
from .gradient_penalty import LazyRegularizer, ma_gradient_penalty, r1_penalty
from .damsm import damsm_sentence_loss, damsm_word_loss, sent_loss_official, words_loss_official
from .attngan import adversarial_g_loss, damsm_g_loss, discriminator_loss, generator_loss, kl_loss
from .mirrorgan import caption_loss

__all__ = ["LazyRegularizer", "ma_gradient_penalty", "r1_penalty",
           "damsm_word_loss", "damsm_sentence_loss", "words_loss_official", "sent_loss_official",
           "adversarial_g_loss", "damsm_g_loss", "discriminator_loss", "generator_loss", "kl_loss",
           "caption_loss"]
