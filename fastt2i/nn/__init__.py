"""Modules built on fastt2i's fused ops."""
from .dfblock import Affine, DFBlock
from .discriminator import DBlock, FusedLeakyReLU, JointConv
from .attention import WordRegionAttention

__all__ = ["Affine", "DFBlock", "DBlock", "FusedLeakyReLU", "JointConv", "WordRegionAttention"]
from .cond_augment import CondAugment  # noqa: E402

__all__ += ["CondAugment"]
