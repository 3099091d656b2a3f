"""DR-GAN on the training core: a few steps with finite losses (paper and draft presets), exact
resume (the DNM's CA noise included), CLI train and sample.  Tiny networks, two stages, no DAMSM
term (lambda 0: no Inception to build; the DAMSM term is AttnGAN's, tested there)."""
import math

import pytest
import torch

from fastt2i.cli import main as cli_main
from fastt2i.models.drgan import DRGANConfig
from fastt2i.train.core import TrainConfig
from fastt2i.train.families.drgan import DRGANTrainer

TINY = dict(gf_dim=4, df_dim=2, branch_num=2, batch_size=4, lambda_damsm=0.0)


def _drgan(out, draft=False, **kw):
    tc = dict(data="synthetic:16", out_dir=str(out), steps=2, save_every=100, progress=False, num_samples=2, seed=7,
              ema=0.999)
    tc.update(kw)
    return DRGANTrainer(DRGANConfig.synthetic(draft=draft, **TINY), TrainConfig(**tc))


def _state(trainer):
    return {f"{k}.{n}": v.clone() for k, net in trainer.networks.items() for n, v in net.state_dict().items()}


@pytest.mark.parametrize("draft", [False, True])
def test_drgan_steps_have_finite_losses(tmp_path, draft):
    losses = _drgan(tmp_path / "run", draft=draft).train()
    for row in losses:
        for k in ("errD", "errG", "sdl", "dnm_rec0", "dnm_kl1", "kl_loss"):
            assert math.isfinite(row[k]), (k, row)
    assert ("exp_mean2" in losses[0]) == draft and ("sdl_h2" in losses[0]) == (not draft)


def test_drgan_exact_resume(tmp_path):
    a = _drgan(tmp_path / "a")
    losses_a = a.train()
    b = _drgan(tmp_path / "b", save_every=1)
    b.train(steps=1)
    c = _drgan(tmp_path / "c", resume=str(tmp_path / "b" / "checkpoint.pt"))
    losses_c = c.train()
    assert c.step == 2 and losses_c[0]["errG"] == losses_a[1]["errG"] and losses_c[0]["errD"] == losses_a[1]["errD"]
    sa, sc = _state(a), _state(c)
    assert sa.keys() == sc.keys() and all(torch.equal(sa[k], sc[k]) for k in sa)
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert ckpt["fastt2i"]["family"] == "drgan" and set(ckpt["model"]) == {"netG", "netsD"}


def test_cli_train_and_sample(tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli_main(["train", "drgan", "--data", "synthetic:8", "--steps", "1", "--batch-size", "4", "--stages", "2",
                   "--gf", "4", "--df", "2", "--lambda-damsm", "0", "--draft", "--out", str(run), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ckpt = torch.load(run / "checkpoint.pt", weights_only=False)
    assert ckpt["fastt2i"]["model_config"]["draft"] is True
    out = tmp_path / "d.png"
    rc = cli_main(["sample", "drgan", "--checkpoint", str(run / "checkpoint.pt"), "--caption", "a small red circle",
                   "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    from PIL import Image

    assert Image.open(out).width >= 128


def test_sampling_a_checkpoint_of_another_family_is_refused(tmp_path, capsys):
    from fastt2i.models.attngan import AttnGANConfig
    from fastt2i.train.families.attngan import AttnGANTrainer

    AttnGANTrainer(AttnGANConfig.synthetic(gf_dim=2, df_dim=2, branch_num=2, batch_size=4),
                   TrainConfig(data="synthetic:8", out_dir=str(tmp_path / "a"), steps=1, save_every=100,
                               progress=False, options={"damsm_input_size": 139})).train()
    rc = cli_main(["sample", "drgan", "--checkpoint", str(tmp_path / "a" / "checkpoint.pt"), "--caption",
                   "a small red circle", "--out", str(tmp_path / "x.png")])
    assert rc != 0 and "attngan" in capsys.readouterr().err.lower()
