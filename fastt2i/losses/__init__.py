"""Losses of the GAN families: adversarial, gradient penalties, DAMSM, KL, ..."""
from .gradient_penalty import LazyRegularizer, ma_gradient_penalty, r1_penalty
from .damsm import damsm_sentence_loss, damsm_word_loss, sent_loss_official, words_loss_official

__all__ = ["LazyRegularizer", "ma_gradient_penalty", "r1_penalty",
           "damsm_word_loss", "damsm_sentence_loss", "words_loss_official", "sent_loss_official"]
from .joint_embedding import joint_embedding_loss, structured_hinge_loss  # noqa: E402

__all__ += ["joint_embedding_loss", "structured_hinge_loss"]
