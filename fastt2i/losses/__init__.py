"""Losses of the GAN families: adversarial, gradient penalties, DAMSM, KL, ..."""
