"""One step module per GAN family: a ``Trainer`` subclass and one ``register_family`` call.

Every module here is imported by ``fastt2i.train.registry`` on its first look-up.
"""
