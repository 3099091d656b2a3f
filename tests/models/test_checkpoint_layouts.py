"""Generic weight loading (fastt2i.models._checkpoint): layouts, family detection, clear errors."""
import pytest
import torch
from torch import nn

from fastt2i.models import (
    DFGAN,
    CheckpointLayout,
    DFGANConfig,
    FamilyMismatchError,
    NetG,
    StateDictMismatchError,
    identify,
    load_official_state_dict,
    load_weights,
)
from fastt2i.models import _checkpoint as checkpoints
from fastt2i.models.dfgan import CHECKPOINT_LAYOUT as DFGAN_LAYOUT


class Gen(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.mapping = nn.Linear(3, width)
        self.synthesis = nn.Linear(width, 2)


class Disc(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Linear(2, 3)


class Pair(nn.Module):
    def __init__(self, width=4):
        super().__init__()
        self.gen, self.disc = Gen(width), Disc()


PAIR = CheckpointLayout(family="pair", title="Pair-GAN", networks={"gen": ("gen",), "disc": ("disc",)},
                        classes={"gen": Gen, "disc": Disc}, model_class=Pair,
                        signatures={"gen": ("mapping.", "synthesis."), "disc": ("features.",)})


@pytest.fixture
def pair_layout(monkeypatch):
    monkeypatch.setattr(checkpoints, "_LAYOUTS", dict(checkpoints._LAYOUTS))
    return checkpoints.register_layout(PAIR)


def test_layout_description_and_identification(pair_layout):
    assert DFGAN_LAYOUT.describe() == "{'model': {'netG', 'netD', 'netC'}}"
    assert PAIR.describe() == "{'gen', 'disc'}"
    src = Pair()
    state = {"gen": src.gen.state_dict(), "disc": src.disc.state_dict()}
    assert identify(state) == (PAIR, None)
    assert identify({f"module.{k}": v for k, v in src.gen.state_dict().items()}) == (PAIR, "gen")
    assert identify({"model": {}, "fastt2i": {"family": "dfgan"}}) == (DFGAN_LAYOUT, None)
    assert identify({"something": torch.zeros(1)}) is None


def test_load_whole_model_one_network_and_plain_files(tmp_path, pair_layout):
    src = Pair()
    for p in src.parameters():
        nn.init.normal_(p)
    state = {"gen": {f"module.{k}": v for k, v in src.gen.state_dict().items()}, "disc": src.disc.state_dict()}
    torch.save(state, tmp_path / "pair.pth")
    dst = load_weights(Pair(), str(tmp_path / "pair.pth"), PAIR)
    assert all(torch.equal(a, b) for a, b in zip(dst.state_dict().values(), src.state_dict().values()))
    d = load_weights(Disc(), state, PAIR)  # one network of a training state, by its class
    assert torch.equal(d.features.weight, src.disc.features.weight)
    g = load_weights(Gen(), {"state_dict": src.gen.state_dict()}, PAIR)  # a plain (wrapped) state dict
    assert torch.equal(g.mapping.weight, src.gen.mapping.weight)
    # a training state lacking a network: nested layouts tell it from a plain state dict
    dfgan = DFGAN(DFGANConfig(imsize=32, ngf=4, ndf=4))
    with pytest.raises(StateDictMismatchError, match=r"the file has no 'netD' \(found \['netG'\]\)"):
        load_official_state_dict(dfgan, {"model": {"netG": dfgan.netG.state_dict()}})
    assert load_official_state_dict(NetG(4, imsize=32), {"model": {"netG": dfgan.netG.state_dict()}})
    with pytest.raises(TypeError, match="loads into Pair, Gen, Disc, not Linear"):
        load_weights(nn.Linear(2, 3), state, PAIR)
    with pytest.raises(ValueError, match=r"a Pair needs the Pair-GAN training state file \{'gen', 'disc'\}"):
        load_weights(Pair(), src.gen.state_dict(), PAIR)
    with pytest.raises(StateDictMismatchError, match=r"shape mismatches \(\d\): \['mapping.bias"):
        load_weights(Gen(width=5), src.gen.state_dict(), PAIR)


def test_another_familys_file_names_both_families(tmp_path, pair_layout):
    dfgan = DFGAN(DFGANConfig(imsize=32, ngf=4, ndf=4))
    official = {"model": {k: getattr(dfgan, k).state_dict() for k in ("netG", "netD", "netC")}, "epoch": 1}
    with pytest.raises(FamilyMismatchError, match=r"a DF-GAN checkpoint \(family 'dfgan'\), not a Pair-GAN one"):
        load_weights(Pair(), official, PAIR)
    pair = {"gen": Gen().state_dict(), "disc": Disc().state_dict(), "fastt2i": {"family": "pair"}}
    with pytest.raises(FamilyMismatchError, match=r"Pair-GAN checkpoint \(family 'pair'\), not a DF-GAN one"):
        load_official_state_dict(DFGAN(DFGANConfig(imsize=32, ngf=4, ndf=4)), pair)
    # a foreign network's plain state dict: the key error says whose keys they are
    with pytest.raises(StateDictMismatchError, match=r"the keys are those of Pair-GAN's gen: a 'pair' file"):
        load_official_state_dict(NetG(4, imsize=32), Gen().state_dict())
    # ... but a plain dict is not judged by its family when it fits (a shared module)
    assert isinstance(load_weights(Gen(), Gen().state_dict(), DFGAN_LAYOUT), Gen)
