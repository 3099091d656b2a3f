"""fastt2i's fused ops.

Every op has a plain-PyTorch reference and fused backends (``triton``, ``cuda``,
``cpu``); ``set_backend``/``use_backend``/``FASTT2I_BACKEND`` choose, ``auto``
(the default) picks cuda -> triton -> reference for CUDA tensors and
cpu -> reference for CPU tensors, among ``available_backends()``.
"""
from ._backend import (
    BACKENDS,
    available_backends,
    get_backend,
    refresh_available_backends,
    set_backend,
    use_backend,
)
from .df_affine import df_affine, df_affine_reference
from .bias_leaky_relu import bias_leaky_relu, bias_leaky_relu_reference
from .gradient_penalty import gradient_penalty, gradient_penalty_reference
from .gate_split import gate_split, gate_split_reference
from .word_region_attention import (
    official_region_mask,
    word_region_attention,
    word_region_attention_reference,
)
from .damsm import (
    damsm_attention,
    damsm_word_scores,
    damsm_word_scores_reference,
)

# Op modules define their schemas above; only now load the compiled kernels.
refresh_available_backends()

__all__ = [
    "BACKENDS",
    "available_backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "refresh_available_backends",
    "df_affine",
    "df_affine_reference",
    "bias_leaky_relu",
    "bias_leaky_relu_reference",
    "gradient_penalty",
    "gradient_penalty_reference",
    "gate_split",
    "gate_split_reference",
    "word_region_attention",
    "word_region_attention_reference",
    "official_region_mask",
    "damsm_word_scores",
    "damsm_word_scores_reference",
    "damsm_attention",
]
