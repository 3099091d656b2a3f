"""Losses of the GAN families: adversarial, gradient penalties, DAMSM, KL, ..."""
from .gradient_penalty import LazyRegularizer, ma_gradient_penalty, r1_penalty
from .damsm import damsm_sentence_loss, damsm_word_loss

__all__ = ["LazyRegularizer", "ma_gradient_penalty", "r1_penalty", "damsm_word_loss", "damsm_sentence_loss"]
from .joint_embedding import joint_embedding_loss, structured_hinge_loss  # noqa: E402

__all__ += ["joint_embedding_loss", "structured_hinge_loss"]
from .conditional_gan import (  # noqa: E402
    bce_logits,
    colour_consistency_loss,
    gan_int_g_loss,
    interpolate_text,
    kl_loss,
    matching_aware_d_loss,
    mean_covariance,
    stackgan2_d_loss,
    stackgan2_g_loss,
    stackgan_d_loss,
    stackgan_g_loss,
)

__all__ += ["bce_logits", "colour_consistency_loss", "gan_int_g_loss", "interpolate_text", "kl_loss",
            "matching_aware_d_loss", "mean_covariance", "stackgan2_d_loss", "stackgan2_g_loss",
            "stackgan_d_loss", "stackgan_g_loss"]
from .attngan import adversarial_g_loss, damsm_g_loss, discriminator_loss, generator_loss  # noqa: E402

__all__ += ["adversarial_g_loss", "damsm_g_loss", "discriminator_loss", "generator_loss"]
from .mirrorgan import caption_loss  # noqa: E402

__all__ += ["caption_loss"]
from . import drgan  # noqa: E402 - DR-GAN's (same names as AttnGAN's): fastt2i.losses.drgan.*
from .drgan import semantic_disentangling_loss  # noqa: E402

__all__ += ["semantic_disentangling_loss"]
