"""GAN families on fastt2i's fused modules."""
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
