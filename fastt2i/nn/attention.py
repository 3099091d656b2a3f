"""AttnGAN's word attention (``GlobalAttentionGeneral``) on the fused ``word_region_attention`` op."""
from __future__ import annotations

import torch
from torch import nn

from fastt2i.ops import official_region_mask, word_region_attention


class WordRegionAttention(nn.Module):
    """Every image region attends over the caption's words (AttnGAN, DR-GAN's WAM, MirrorGAN's GLAM).

    ``conv_context`` is the official 1x1 projection of the words (no bias, same name and
    weight shape (query_dim, word_dim, 1, 1)), so official generator weights load unchanged.

    forward(h (B, query_dim, H, W), words (B, word_dim, T), mask (B, T) bool or None, True on
    padding words) -> (context (B, query_dim, H, W), attention (B, T, H, W), or None when
    ``return_attention=False``).

    ``official_mask=True`` reproduces the official code's mask misalignment
    (``mask.repeat(queryL, 1)`` against (B*queryL, T) scores: region n of caption b gets the
    mask of caption ``(b*queryL + n) % B``) for exact parity with official checkpoints; it
    builds that (B, N, T) per-region mask and hands it to the op, so it stays fused.  The
    default applies each caption's own mask.  Either way a region whose words are all padding
    gets zeros, where the official code gives NaN.
    """

    def __init__(self, query_dim: int, word_dim: int, official_mask: bool = False):
        super().__init__()
        self.query_dim, self.word_dim, self.official_mask = query_dim, word_dim, official_mask
        self.conv_context = nn.Conv2d(word_dim, query_dim, kernel_size=1, stride=1, padding=0, bias=False)

    def forward(self, h: torch.Tensor, words: torch.Tensor, mask: torch.Tensor | None = None,
                return_attention: bool = True):
        if words.dim() != 3 or words.shape[1] != self.word_dim:
            raise ValueError(f"words: expected shape (B, {self.word_dim}, T), got {tuple(words.shape)}")
        if h.dim() != 4 or h.shape[1] != self.query_dim:
            raise ValueError(f"h: expected shape (B, {self.query_dim}, H, W), got {tuple(h.shape)}")
        # (B, D, T) -> (B, C, T): the official conv1x1 on (B, D, T, 1), as one matmul.
        source = torch.matmul(self.conv_context.weight[:, :, 0, 0].to(words.dtype), words)
        source = source.to(h.dtype)
        if mask is not None and self.official_mask:
            if mask.dim() != 2:
                raise ValueError(f"mask: expected shape (B, T), got {tuple(mask.shape)}")
            mask = official_region_mask(mask, h.shape[2] * h.shape[3])
        if return_attention:
            return word_region_attention(h, source, mask, return_attention=True)
        return word_region_attention(h, source, mask), None

    def extra_repr(self) -> str:
        return f"query_dim={self.query_dim}, word_dim={self.word_dim}, official_mask={self.official_mask}"
