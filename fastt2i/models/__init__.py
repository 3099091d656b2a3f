"""GAN families on fastt2i's fused modules.

Each family module declares its checkpoint layout (``CHECKPOINT_LAYOUT``) with
``fastt2i.models._checkpoint.register_layout``; the loading itself is generic.
"""
from ._checkpoint import (
    CheckpointLayout,
    FamilyMismatchError,
    StateDictMismatchError,
    identify,
    layouts,
    load_state_dict_checked,
    load_weights,
    register_layout,
    strip_module_prefix,
)
from .dfgan import (
    DFGAN,
    DFGANConfig,
    G_Block,
    GBlock,
    NetC,
    NetD,
    NetG,
    d_in_out_channels,
    g_in_out_channels,
    load_official_state_dict,
)
from . import attngan, damsm  # noqa: E402 - after dfgan: each registers its checkpoint layout
from .attngan import AttnGAN, AttnGANConfig
from .damsm import CNN_ENCODER, CNNEncoder
from . import mirrorgan, stream  # noqa: E402 - after attngan, whose modules MirrorGAN extends
from .mirrorgan import MirrorGAN, MirrorGANConfig
from .stream import STREAM

__all__ = [
    "AttnGAN",
    "AttnGANConfig",
    "CNNEncoder",
    "CNN_ENCODER",
    "CheckpointLayout",
    "attngan",
    "damsm",
    "DFGAN",
    "DFGANConfig",
    "FamilyMismatchError",
    "GBlock",
    "G_Block",
    "NetC",
    "NetD",
    "NetG",
    "StateDictMismatchError",
    "d_in_out_channels",
    "g_in_out_channels",
    "identify",
    "layouts",
    "load_official_state_dict",
    "load_state_dict_checked",
    "load_weights",
    "register_layout",
    "strip_module_prefix",
    "mirrorgan",
    "stream",
    "MirrorGAN",
    "MirrorGANConfig",
    "STREAM",
]
from . import gan_int_cls, stackgan, stackgan2  # noqa: E402
from .gan_int_cls import GANINTCLSConfig, build_gan_int_cls  # noqa: E402
from .stackgan import StackGANConfig, build_stackgan  # noqa: E402
from .stackgan2 import StackGAN2Config, build_stackgan2  # noqa: E402

__all__ += ["gan_int_cls", "stackgan", "stackgan2", "GANINTCLSConfig", "StackGANConfig", "StackGAN2Config",
            "build_gan_int_cls", "build_stackgan", "build_stackgan2"]
from . import drgan  # noqa: E402 - after attngan, whose modules DR-GAN extends
from .drgan import DRGAN, DRGANConfig  # noqa: E402

__all__ += ["drgan", "DRGAN", "DRGANConfig"]
