"""fastt2i: fused kernels and clean models for text-to-image GANs."""
__version__ = "0.1.0"

from . import ops  # noqa: E402
from . import nn  # noqa: E402

__all__ = ["ops", "nn", "__version__"]
