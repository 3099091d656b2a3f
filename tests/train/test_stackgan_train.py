"""GAN-INT-CLS, StackGAN (both stages), StackGAN++ and char-CNN-RNN on the training core: steps,
exact resume, checkpoints, sampling from captions and from an embedding pickle, the CLI."""
import pickle

import numpy as np
import pytest
import torch

from fastt2i.cli import main as cli
from fastt2i.models import GANINTCLSConfig, StackGAN2Config, StackGANConfig
from fastt2i.text import CharCNNRNNConfig
from fastt2i.train import TrainConfig
from fastt2i.train.registry import get_family, registered_families

TINY = {
    "stackgan": lambda **kw: StackGANConfig.synthetic(ngf=8, ndf=4, c_dim=8, z_dim=8, batch_size=4, **kw),
    "stackgan2": lambda **kw: StackGAN2Config.synthetic(ngf=8, ndf=4, c_dim=8, z_dim=8, batch_size=4, **kw),
    "gan-int-cls": lambda **kw: GANINTCLSConfig.synthetic(ngf=8, ndf=8, nz=8, nt=8, batch_size=4, **kw),
    "char-cnn-rnn": lambda **kw: CharCNNRNNConfig.preset("synthetic", cnn_dim=16, image_nf=8, batch_size=4, **kw),
}


def trainer(name, out, steps, mcfg=None, **kw):
    kw.setdefault("sample_captions", ["a red circle", "a small blue square"])
    tcfg = TrainConfig(data="synthetic:24", out_dir=str(out), steps=steps, save_every=kw.pop("save_every", 1000),
                       progress=False, **kw)
    return get_family(name).trainer(mcfg or TINY[name](), tcfg)


def test_families_are_registered():
    names = registered_families()
    for name in ("gan-int-cls", "stackgan", "stackgan2", "char-cnn-rnn"):
        assert name in names


@pytest.mark.parametrize("name", ["gan-int-cls", "stackgan2"])
def test_family_trains_and_samples(name, tmp_path):
    kw = {"color_coeff": 1.0, "branch_num": 2} if name == "stackgan2" else {}
    t = trainer(name, tmp_path, 2, TINY[name](**kw), ema=0.999)
    history = t.train()
    assert len(history) == 2 and all(np.isfinite(v) for v in history[-1].values())
    images = t.sample(["a red circle"] * 2, torch.Generator().manual_seed(0))
    assert images.shape[1:] == (3, 128 if name == "stackgan2" else 64, 128 if name == "stackgan2" else 64)
    assert images.abs().max() <= 1
    assert (tmp_path / "samples").is_dir() and (tmp_path / "checkpoint.pt").is_file()


def _weights(t):
    return {k: v.clone() for k, v in t.networks["netG"].state_dict().items()}


def test_stackgan_resume_is_exact(tmp_path):
    straight = trainer("stackgan", tmp_path / "a", 4)
    h_straight = straight.train()
    first = trainer("stackgan", tmp_path / "b", 2, save_every=2)
    first.train()
    resumed = trainer("stackgan", tmp_path / "b", 4, resume="auto")
    h_resumed = resumed.train()
    assert [r["step"] for r in h_resumed] == [3, 4]
    for a, b in zip(h_straight[2:], h_resumed):
        assert a == b
    for k, v in _weights(straight).items():
        assert torch.equal(v, _weights(resumed)[k]), k


def test_stackgan_stage2_on_stage1_and_sampling(tmp_path):
    trainer("stackgan", tmp_path / "s1", 1).train()
    with pytest.raises(ValueError, match="--stage1-g"):
        trainer("stackgan", tmp_path / "s2", 1, TINY["stackgan"](stage=2))
    t2 = trainer("stackgan", tmp_path / "s2", 1, TINY["stackgan"](stage=2),
                 options={"stage1_g": str(tmp_path / "s1" / "checkpoint.pt")})
    s1 = torch.load(tmp_path / "s1" / "checkpoint.pt", weights_only=False)["netG"]
    assert torch.equal(t2.networks["netG"].STAGE1_G.fc[0].weight, s1["fc.0.weight"])
    before = {k: v.clone() for k, v in t2.networks["netG"].STAGE1_G.named_parameters()}
    t2.train()
    for k, v in t2.networks["netG"].STAGE1_G.named_parameters():
        assert torch.equal(v, before[k]), f"Stage I moved: {k}"
    # fastt2i sample with captions, then with a released-style embedding pickle
    ckpt = str(tmp_path / "s2" / "checkpoint.pt")
    assert cli(["sample", "stackgan", "--checkpoint", ckpt, "--caption", "a red circle", "--n", "2",
                "--out", str(tmp_path / "grid.png")]) == 0
    emb = np.random.default_rng(0).standard_normal((3, 10, 1024)).astype(np.float32)
    with open(tmp_path / "char-CNN-RNN-embeddings.pickle", "wb") as f:
        pickle.dump(emb, f, protocol=2)
    assert cli(["sample", "stackgan", "--checkpoint", ckpt, "--embeddings",
                str(tmp_path / "char-CNN-RNN-embeddings.pickle"), "--count", "4",
                "--out", str(tmp_path / "grid_emb.png")]) == 0
    assert (tmp_path / "grid.png").is_file() and (tmp_path / "grid_emb.png").is_file()


def test_char_cnn_rnn_trains_and_conditions_a_gan(tmp_path):
    t = trainer("char-cnn-rnn", tmp_path / "text", 3)
    history = t.train()
    assert all(np.isfinite(r["loss"]) for r in history)
    path = str(tmp_path / "text" / "checkpoint.pt")
    obj = torch.load(path, weights_only=False)
    assert set(obj["protos"]) == {"enc_doc", "enc_image"}
    g = trainer("gan-int-cls", tmp_path / "gan", 1, text_encoder=path)
    assert g.text.norm is None  # a trained encoder is used as it is
    assert torch.equal(g.text.encoder.proj.weight, obj["protos"]["enc_doc"]["proj.weight"])
    g.train()
    with pytest.raises(ValueError, match="char-cnn-rnn"):
        trainer("gan-int-cls", tmp_path / "gan2", 1, text_encoder=str(tmp_path / "gan" / "checkpoint.pt"))


def test_cli_trains_a_family(tmp_path):
    assert cli(["train", "gan-int-cls", "--data", "synthetic:16", "--steps", "1", "--batch-size", "4", "--nf", "8",
                "--workers", "0", "--no-progress", "--out", str(tmp_path)]) == 0
    obj = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert obj["fastt2i"]["family"] == "gan-int-cls" and set(obj) >= {"netG", "netD", "optimStateG", "optimStateD"}


@pytest.mark.parametrize("name", ["gan-int-cls", "stackgan", "stackgan2"])
def test_family_trains_on_the_released_layout(name, tmp_path, monkeypatch, capsys):
    """`--data birds:PATH` in the StackGAN layout: the family's loader feeds the step the released
    embeddings (GAN-INT-CLS: averaged once, in the data path) and the loader's wrong images."""
    from helpers import make_stackgan_layout

    make_stackgan_layout(tmp_path / "birds", n_train=8, classes=2)
    data = f"birds:{tmp_path / 'birds'}"
    fam = get_family(name)
    kw = {"branch_num": 2} if name == "stackgan2" else {"num_captions": 4} if name == "gan-int-cls" else {}
    mcfg = TINY[name](**kw)
    seen = []
    original = fam.trainer.train_step

    def spy(self, imgs, text, *rest):
        seen.append((imgs, text, rest))
        return original(self, imgs, text, *rest)

    monkeypatch.setattr(fam.trainer, "train_step", spy)
    tcfg = TrainConfig(data=data, out_dir=str(tmp_path / "run"), steps=2, progress=False, num_workers=0)
    t = fam.trainer(mcfg, tcfg)
    assert t.text is None and t.dataset.style == fam.trainer.data_style
    history = t.train()
    assert len(history) == 2 and all(np.isfinite(v) for v in history[-1].values())
    imgs, text, rest = seen[0]
    assert text.shape == (4, 1024)
    if name == "gan-int-cls":  # the step gets the mean of 4 draws of each image's embeddings, as it is
        for row in text:  # some image's rows weighted k/4 (k integer, summing to 1): one average of 4 draws
            fits = []
            for rows in torch.from_numpy(t.dataset.embeddings):
                w = torch.linalg.lstsq(rows.T.double(), row.double()[:, None]).solution[:, 0]
                fits.append(bool(torch.allclose(rows.T.double() @ w, row.double(), atol=1e-5)
                                 and torch.allclose(w * 4, (w * 4).round(), atol=1e-4) and abs(w.sum() - 1) < 1e-6
                                 and (w >= -1e-6).all()))
            assert any(fits)
    if name == "stackgan":
        assert rest == ()
    else:
        wrong = rest[0]
        assert (len(wrong) == 2) if name == "stackgan2" else wrong.shape == (4, 3, 64, 64)
    images = t.sample(t.fixed_captions()[:2], torch.Generator().manual_seed(0))
    assert images.shape[0] == 2 and images.abs().max() <= 1
    # the checkpoint holds no text encoder; sampling it needs the released embeddings
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    assert cli(["sample", name, "--checkpoint", ckpt, "--embeddings",
                str(tmp_path / "birds" / "test" / "char-CNN-RNN-embeddings.pickle"), "--count", "2",
                "--out", str(tmp_path / "grid.png")]) == 0
    assert cli(["sample", name, "--checkpoint", ckpt, "--caption", "a bird", "--out", str(tmp_path / "g2.png")]) != 0
    assert "text encoder" in capsys.readouterr().err


def test_released_layout_resume_is_exact(tmp_path):
    """The loader's draws (crop, flip, captions averaged, wrong image) depend on (seed, epoch, index)
    only: 4 steps straight equal 2 + 2 resumed (2 epochs of 2 batches)."""
    from helpers import make_stackgan_layout

    make_stackgan_layout(tmp_path / "birds", n_train=8, classes=2)

    def run(out, steps, **kw):
        tcfg = TrainConfig(data=f"birds:{tmp_path / 'birds'}", out_dir=str(out), steps=steps, progress=False,
                           num_workers=0, **kw)
        return get_family("gan-int-cls").trainer(TINY["gan-int-cls"](num_captions=4), tcfg)

    straight = run(tmp_path / "a", 4)
    h_straight = straight.train()
    run(tmp_path / "b", 2, save_every=2).train()
    resumed = run(tmp_path / "b", 4, resume="auto")
    assert resumed.train()[-2:] == h_straight[2:]
    for k, v in _weights(straight).items():
        assert torch.equal(v, _weights(resumed)[k]), k


def test_released_layout_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="char-CNN-RNN-embeddings.pickle"):
        get_family("stackgan").trainer.make_dataset(f"birds:{tmp_path}", TINY["stackgan"](), 0)
    from helpers import make_stackgan_layout

    make_stackgan_layout(tmp_path / "d")
    with pytest.raises(ValueError, match="'birds' or 'coco'"):
        get_family("stackgan").trainer.make_dataset(f"flowers:{tmp_path / 'd'}", TINY["stackgan"](), 0)
    tcfg = TrainConfig(data=f"birds:{tmp_path / 'd'}", out_dir=str(tmp_path / "r"), steps=1, progress=False,
                       text_encoder="x.pt")
    with pytest.raises(ValueError, match="--text-encoder"):
        get_family("gan-int-cls").trainer(TINY["gan-int-cls"](), tcfg)


def test_stackgan2_averages_g_by_default_as_the_official_code(tmp_path):
    """StackGAN-v2 always keeps avg_param_G (decay 0.999): the CLI and a trainer built without a
    TrainConfig do too; an explicit --ema 0 turns it off; the other families keep it off by default."""
    from fastt2i.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["train", "stackgan2"]).ema == 0.999
    assert parser.parse_args(["train", "stackgan2", "--ema", "0"]).ema == 0.0
    assert parser.parse_args(["train", "stackgan"]).ema == 0.0
    common = ["--data", "synthetic:8", "--steps", "1", "--batch-size", "2", "--nf", "8", "--branches", "1",
              "--workers", "0", "--no-progress"]
    for flags, averaged in (([], True), (["--ema", "0"], False)):
        out = tmp_path / f"run{len(flags)}"
        assert cli(["train", "stackgan2", *common, *flags, "--out", str(out)]) == 0
        meta = torch.load(out / "checkpoint.pt", weights_only=False)["fastt2i"]
        assert (meta["ema"] is not None) == averaged
        assert meta["model_config"]["ema"] == (0.999 if averaged else 0.0)
    from fastt2i.train.families.stackgan2 import StackGAN2Trainer

    class Probe(StackGAN2Trainer):  # only the configuration, not the networks
        def build(self):
            raise StopIteration(self.cfg.ema)

    with pytest.raises(StopIteration) as stop:
        Probe(TINY["stackgan2"](), dataset=torch.utils.data.TensorDataset(torch.zeros(4)))
    assert stop.value.args[0] == 0.999


def test_stackgan_ddp_two_cpu_processes(tmp_path):
    """D's heads are reached through one PairLogits forward, so DDP all-reduces every D gradient."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path), GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "fastt2i", "train", "stackgan", "--data", "synthetic:16", "--nf", "8", "--batch-size", "2",
           "--steps", "2", "--out", str(out), "--workers", "0", "--no-progress", "--device", "cpu"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("the torchrun run did not finish in 300 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["fastt2i"]["step"] == 2 and ckpt["fastt2i"]["world_size"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["netD"].values())
