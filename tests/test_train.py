"""DF-GAN training: steps, exact resume, checkpoints, DDP, sampling and the CLI (tiny CPU models)."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fastt2i.cli import main as cli_main
from fastt2i.models import DFGANConfig
from fastt2i.train import (
    CheckpointError,
    DFGANTrainer,
    EpochBatches,
    TrainConfig,
    atomic_save,
    load_checkpoint,
    make_grid,
    truncated_noise,
)

TINY = dict(imsize=32, ngf=4, ndf=4, batch_size=4)


def _trainer(out, **kw):
    tc = dict(data="synthetic:24", out_dir=str(out), steps=2, save_every=100, progress=False, num_samples=4, seed=5)
    tc.update(kw)
    return DFGANTrainer(DFGANConfig.synthetic(**TINY), TrainConfig(**tc))


def _params(trainer):
    return {f"{k}.{n}": p.detach().clone() for k in ("netG", "netD", "netC")
            for n, p in getattr(trainer, k).named_parameters()}


def test_two_steps_give_finite_losses_and_a_grid(tmp_path):
    t = _trainer(tmp_path)
    before = _params(t)
    hist = t.train()
    assert [h["step"] for h in hist] == [1, 2]
    for h in hist:
        assert all(np.isfinite(v) for v in h.values()), h
    after = _params(t)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("netG"))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("netD"))
    grid = tmp_path / "samples" / "step_0000002.png"
    assert grid.is_file() and (tmp_path / "samples" / "step_0000002.txt").read_text().count("\n") == 4
    assert Image.open(grid).size[0] > 32
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt", require_fastt2i=True)
    assert set(ckpt["model"]) == {"netG", "netD", "netC"}
    assert set(ckpt["optimizers"]) == {"optimizer_G", "optimizer_D"}  # the official layout
    assert ckpt["fastt2i"]["step"] == 2
    assert not [f for f in os.listdir(tmp_path) if ".tmp" in f]  # atomic writes leave no temp file


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_channels_last_and_ema_step(tmp_path, amp):
    t = _trainer(tmp_path, amp=amp, channels_last=True, ema=0.9, steps=1)
    g0 = [p.detach().clone() for p in t.netG.parameters()]
    hist = t.train()
    assert all(np.isfinite(v) for v in hist[0].values())
    for pe, p, p0 in zip(t.ema.parameters(), t.netG.parameters(), g0):  # ema = 0.9 * old + 0.1 * new
        torch.testing.assert_close(pe, 0.9 * p0 + 0.1 * p.detach(), rtol=1e-5, atol=1e-6)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["fastt2i"]["ema"] is not None


def test_kill_and_resume_is_bit_identical(tmp_path):
    a = _trainer(tmp_path / "a", steps=2, save_every=2)
    a.train()                      # saves at step 2 ...
    a.train(steps=3)               # ... and goes on for one more step
    b = _trainer(tmp_path / "b", steps=3, resume=str(tmp_path / "a" / "checkpoint.pt"))
    b.train()                      # resumes at step 2, trains step 3
    assert b.step == 3
    pa, pb = _params(a), _params(b)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    for oa, ob in ((a.optG, b.optG), (a.optD, b.optD)):
        for sa, sb in zip(oa.state.values(), ob.state.values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_resume_auto_and_mismatched_model(tmp_path):
    a = _trainer(tmp_path, steps=1, save_every=1)
    a.train()
    b = _trainer(tmp_path, steps=2, resume="auto")
    b.train()
    assert b.step == 2
    with pytest.raises(ValueError, match="ngf=4 differs"):
        DFGANTrainer(DFGANConfig.synthetic(imsize=32, ngf=8, ndf=4, batch_size=4),
                     TrainConfig(data="synthetic:24", out_dir=str(tmp_path), progress=False)).load(
            str(tmp_path / "checkpoint.pt"))


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path):
    t = _trainer(tmp_path, steps=1, save_every=1)
    t.train()
    good = (tmp_path / "checkpoint.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "truncated.pt")
    (tmp_path / "noise.pt").write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        t.load(str(tmp_path / "noise.pt"))
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a DF-GAN training state"):
        load_checkpoint(tmp_path / "other.pt", family="dfgan")
    with pytest.raises(CheckpointError, match="not a training state"):
        load_checkpoint(tmp_path / "other.pt")
    torch.save({"model": {"netG": {}, "netD": {}, "netC": {}}}, tmp_path / "official.pt")
    with pytest.raises(CheckpointError, match="no fastt2i resume state"):
        t.load(str(tmp_path / "official.pt"))
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_atomic_save_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "ck.pt"
    atomic_save({"a": torch.ones(2)}, path)
    with pytest.raises(Exception):
        atomic_save({"a": lambda: 0}, path)  # unpicklable: fails mid-write
    assert torch.equal(torch.load(path)["a"], torch.ones(2))
    assert os.listdir(tmp_path) == ["ck.pt"]


def test_epoch_batches_are_deterministic_and_sharded():
    b = EpochBatches(10, 2, seed=1)
    assert b.epoch(0) == EpochBatches(10, 2, seed=1).epoch(0) and b.epoch(0) != b.epoch(1)
    assert b.epoch(0, start=3) == b.epoch(0)[3:]
    r0, r1 = EpochBatches(10, 2, 1, 0, 2).epoch(0), EpochBatches(10, 2, 1, 1, 2).epoch(0)
    flat = sum(r0, []) + sum(r1, [])
    assert len(flat) == len(set(flat)) == 8
    with pytest.raises(ValueError, match="fewer than batch_size"):
        EpochBatches(3, 4, 0)


def test_truncated_noise_and_grid():
    g = torch.Generator().manual_seed(0)
    z = truncated_noise(64, 100, 0.5, generator=g)
    assert z.shape == (64, 100) and z.abs().max() <= 1.0 and z.std() > 0.2
    assert torch.equal(z, truncated_noise(64, 100, 0.5, generator=torch.Generator().manual_seed(0)))
    imgs = torch.stack([torch.full((3, 4, 4), v) for v in (-1.0, 0.0, 1.0)])
    grid = make_grid(imgs, nrow=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3) and grid.dtype == np.uint8
    assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 128 and grid[6, 1, 0] == 255


def test_cli_train_and_sample(tmp_path, capsys):
    out = tmp_path / "run"
    rc = cli_main(["train", "dfgan", "--data", "synthetic:16", "--imsize", "32", "--nf", "4", "--batch-size", "4",
                   "--steps", "1", "--out", str(out), "--workers", "0", "--no-progress", "--ema", "0.5"])
    assert rc == 0 and (out / "checkpoint.pt").is_file()
    png = tmp_path / "grid.png"
    rc = cli_main(["sample", "dfgan", "--checkpoint", str(out / "checkpoint.pt"), "--caption", "a small red circle",
                   "--caption", "a large blue square above a small green circle", "--n", "2", "--out", str(png),
                   "--truncation", "0.8", "--backend", "reference"])
    assert rc == 0
    assert Image.open(png).size == ((2 * 34 + 2) * 4, (2 * 34 + 2) * 4)  # 2x2 grid of 32px, padding 2, x4
    rc = cli_main(["sample", "dfgan", "--checkpoint", str(out / "checkpoint.pt"), "--caption", "zebra giraffe",
                   "--out", str(png)])
    assert rc == 2 and "no word of the vocabulary" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    rc = cli_main(["sample", "dfgan", "--checkpoint", str(tmp_path / "bad.pt"), "--caption", "a red circle",
                   "--out", str(png)])
    assert rc == 2 and "corrupt or truncated" in capsys.readouterr().err
    rc = cli_main(["train", "dfgan", "--data", f"birds:{tmp_path / 'nowhere'}", "--steps", "1"])
    assert rc == 2 and "dataset folder not found" in capsys.readouterr().err


def test_ddp_two_cpu_processes_take_steps(tmp_path):
    out = tmp_path / "ddp"
    # gloo on the loopback interface: resolving the sandbox's hostname can stall the rendezvous
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path), GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "fastt2i", "train", "dfgan", "--data", "synthetic:16", "--imsize", "32", "--nf", "4",
           "--batch-size", "2", "--steps", "2", "--out", str(out), "--workers", "0", "--no-progress",
           "--device", "cpu"]
    # own process group, so a stuck run is killed with its workers and reported with its output
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("the torchrun DDP run did not finish in 240 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    ckpt = load_checkpoint(out / "checkpoint.pt", require_fastt2i=True)
    assert ckpt["fastt2i"]["step"] == 2 and ckpt["fastt2i"]["world_size"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"]["netG"].values())


def test_sample_from_official_files(tmp_path):
    """Official training state + DAMSM text encoder + captions.pickle -> a grid."""
    import pickle

    from fastt2i.models import DFGAN
    from fastt2i.text import RNNEncoder, Vocabulary

    cfg = DFGANConfig(imsize=32, ngf=4, ndf=4)
    m = DFGAN(cfg)
    torch.save({"model": {k: {f"module.{n}": v for n, v in getattr(m, k).state_dict().items()}
                          for k in ("netG", "netD", "netC")},
                "optimizers": {"optimizer_G": {}, "optimizer_D": {}}, "epoch": 1220}, tmp_path / "state_epoch_1220.pth")
    vocab = Vocabulary.from_texts(["this bird is red with white wings"])
    with open(tmp_path / "captions.pickle", "wb") as f:
        pickle.dump([[[1, 2]], [[3]], vocab.ixtoword, vocab.wordtoix], f, protocol=2)
    torch.save(RNNEncoder(len(vocab)).state_dict(), tmp_path / "text_encoder200.pth")
    png = tmp_path / "official.png"
    args = ["sample", "dfgan", "--checkpoint", str(tmp_path / "state_epoch_1220.pth"), "--imsize", "32", "--nf", "4",
            "--caption", "this bird is red", "--out", str(png)]
    assert cli_main(args) == 2  # no text encoder / vocabulary given: a clear error
    assert cli_main(args + ["--text-encoder", str(tmp_path / "text_encoder200.pth"),
                            "--vocab", str(tmp_path / "captions.pickle")]) == 0
    assert Image.open(png).size == ((32 + 4) * 4, (32 + 4) * 4)
    torch.save(m.netG.state_dict(), tmp_path / "netG.pth")  # a plain netG file
    assert cli_main(args[:3] + [str(tmp_path / "netG.pth")] + args[4:] + [
        "--text-encoder", str(tmp_path / "text_encoder200.pth"), "--vocab", str(tmp_path / "captions.pickle")]) == 0


def test_demo_writes_grid_and_step_time_line(tmp_path, monkeypatch, capsys):
    from fastt2i import ops
    from fastt2i.train import demo

    monkeypatch.setattr(demo, "demo_configs", lambda device: (DFGANConfig.synthetic(**TINY),
                                                             {"amp": "none", "channels_last": False}))
    out = demo.run_demo(minutes=0.01, out_dir=str(tmp_path / "demo_out"), bench_steps=1)
    assert out["steps"] >= 1 and os.path.isfile(tmp_path / "demo_out" / "samples.png")
    line = (tmp_path / "demo_out" / "step_time.txt").read_text()
    assert "reference fp32" in line and " ms" in line
    if "cpu" in ops.available_backends():
        assert "cpu (fp32)" in line and "x" in line
    assert line.strip() in capsys.readouterr().out


def test_sampler_reproduces_the_trainers_text_conditioning(tmp_path):
    """The random encoder's sentence standardisation travels in the checkpoint to sampling."""
    from fastt2i.train import caption_embeddings, load_sampler

    t = _trainer(tmp_path, steps=1, save_every=1)
    t.train()
    assert t.sentence_norm is not None
    netG, enc, vocab, cfg, norm = load_sampler(str(tmp_path / "checkpoint.pt"))
    caption = ["a small red circle above a large blue square"]
    ids, lens = vocab.encode_batch(caption)
    torch.testing.assert_close(caption_embeddings(enc, vocab, caption, "cpu", norm), t.encode(ids, lens))
    # standardised over the training captions: about zero mean and unit spread per dimension
    ids, lens = vocab.encode_batch([t.dataset.caption(i) for i in range(24)])
    sent = t.encode(ids, lens)
    assert sent.mean().abs() < 0.5 and 0.5 < sent.std() < 2.0
    for k, v in netG.state_dict().items():
        assert torch.equal(v, t.netG.state_dict()[k]), k
