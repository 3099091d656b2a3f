"""Eager transcriptions of the papers' official code, one module per paper.

Each module computes exactly what the authors' repository computes (same module and
parameter names, so their checkpoints load; same order of operations, quirks included),
written in our own words and using no fastt2i op.  They are the ground truth that the
tests hold fastt2i's models, losses and ops to, and the "official" baseline of the
benchmarks; they are not meant for training.

Modules (import them directly, e.g. ``from fastt2i.official import dfgan``):
    dfgan     tobran/DF-GAN: NetG, NetD, NetC and the MA-GP penalty
    damsm     taoxugit/AttnGAN's DAMSM matching: word-region attention of the losses,
              the per-caption word-score loop, the word and sentence losses
    attngan   taoxugit/AttnGAN: the generator's networks
    drgan     Tan-H-C/DR-GAN (the public draft): SDM / RIRM stages, DNM discriminators,
              spectral norm, the draft's SDL constants
    stackgan, stackgan2, gan_int_cls
              hanzhanggit/StackGAN-Pytorch, hanzhanggit/StackGAN-v2, reedscot/icml2016 (Lua)
"""
