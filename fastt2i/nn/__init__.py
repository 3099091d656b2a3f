"""Modules built on fastt2i's fused ops."""
from .dfblock import Affine, DFBlock

__all__ = ["Affine", "DFBlock"]
