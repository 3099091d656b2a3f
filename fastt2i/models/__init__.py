"""GAN families on fastt2i's fused modules."""
from . import attngan, damsm
from .attngan import AttnGAN, AttnGANConfig
from .damsm import CNN_ENCODER, CNNEncoder
from .dfgan import (
    DFGAN,
    DFGANConfig,
    G_Block,
    GBlock,
    NetC,
    NetD,
    NetG,
    StateDictMismatchError,
    d_in_out_channels,
    g_in_out_channels,
    load_official_state_dict,
    load_state_dict_checked,
    strip_module_prefix,
)

__all__ = [
    "AttnGAN",
    "AttnGANConfig",
    "CNNEncoder",
    "CNN_ENCODER",
    "attngan",
    "damsm",
    "DFGAN",
    "DFGANConfig",
    "GBlock",
    "G_Block",
    "NetC",
    "NetD",
    "NetG",
    "StateDictMismatchError",
    "d_in_out_channels",
    "g_in_out_channels",
    "load_official_state_dict",
    "load_state_dict_checked",
    "strip_module_prefix",
]
