"""`fastt2i eval` end to end on a tiny synthetic checkpoint (a stand-in Inception keeps it fast)."""
import json

import numpy as np
import pytest
import torch
from eval_fakes import fake_inception_factory
from PIL import Image

from fastt2i.eval import command, evaluator
from fastt2i.eval.command import main
from fastt2i.models import DFGANConfig
from fastt2i.train import DFGANTrainer, TrainConfig

TINY = dict(imsize=32, ngf=4, ndf=4, batch_size=4)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("ck")
    t = DFGANTrainer(DFGANConfig.synthetic(**TINY), TrainConfig(data="synthetic:16", out_dir=str(out), steps=1,
                                                               progress=False, save_every=1, sample_every=10**9))
    t.train()
    t.close()
    return out / "checkpoint.pt"


@pytest.fixture
def fake_inception(monkeypatch):
    monkeypatch.setattr(command, "InceptionFeatures", fake_inception_factory)
    monkeypatch.setattr(evaluator, "InceptionFeatures", fake_inception_factory)


def test_eval_checkpoint_writes_json_and_table(checkpoint, tmp_path, fake_inception, capsys):
    out = tmp_path / "r.json"
    rc = main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:12", "--metrics", "fid,is",
               "--batch", "5", "--is-splits", "3", "--out", str(out), "--no-progress", "--seed", "3"])
    assert rc == 0, capsys.readouterr().err
    r = json.loads(out.read_text())
    assert r["metrics"]["n"] == 12 and np.isfinite(r["metrics"]["fid"]) and r["metrics"]["fid"] > 0
    assert r["metrics"]["is_mean"] >= 1.0 and r["protocol"]["fid"] == "torchvision" and r["seed"] == 3
    assert len(r["checkpoint_sha256"]) == 64 and r["family"] == "dfgan" and "reference" in r
    text = capsys.readouterr().out
    assert "FID" in text and "IS" in text and "12 images" in text
    # the same seed gives the same images whatever the batch size
    out2 = tmp_path / "r2.json"
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:12", "--metrics", "fid,is",
                 "--batch", "12", "--is-splits", "3", "--out", str(out2), "--no-progress", "--seed", "3"]) == 0
    r2 = json.loads(out2.read_text())
    assert r2["metrics"]["fid"] == pytest.approx(r["metrics"]["fid"], rel=1e-5)


def test_eval_stats_then_images_and_reference(checkpoint, tmp_path, fake_inception):
    ref = tmp_path / "ref.npz"
    assert main(["stats", "--data", "synthetic:10", "--imsize", "32", "--out", str(ref), "--format", "pytorch-fid",
                 "--no-progress"]) == 0
    with np.load(ref) as f:
        assert f["mu"].shape == (16,) and f["sigma"].shape == (16, 16) and str(f["protocol"]) == "torchvision"
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    out = tmp_path / "img.json"
    assert main(["images", "--images", str(folder), "--fid-stats", str(ref), "--metrics", "fid,is", "--is-splits", "2",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["metrics"]["n"] == 6 and r["metrics"]["fid"] > 0
    # the folder's own statistics as reference: FID 0
    ref2 = tmp_path / "own.npz"
    assert main(["stats", "--images", str(folder), "--out", str(ref2), "--no-progress"]) == 0
    assert main(["images", "--images", str(folder), "--fid-stats", str(ref2), "--metrics", "fid", "--out", str(out),
                 "--no-progress"]) == 0
    assert abs(json.loads(out.read_text())["metrics"]["fid"]) < 1e-6
    out3 = tmp_path / "ck.json"
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:8", "--fid-stats", str(ref),
                 "--metrics", "fid", "--out", str(out3), "--no-progress"]) == 0
    assert json.loads(out3.read_text())["reference"] == str(ref.resolve())


def test_eval_rprec_with_constructed_encoders(checkpoint, tmp_path, monkeypatch):
    def fake_damsm(args, vocab, device):
        def sentence(captions):  # a code per distinct caption
            return torch.stack([torch.randn(16, generator=torch.Generator().manual_seed(hash(c) % 2**31))
                                for c in captions])
        return (lambda images: images.flatten(1)[:, :16]), sentence

    monkeypatch.setattr(command, "load_damsm", fake_damsm)
    out = tmp_path / "rp.json"
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:400", "--n", "30", "--metrics",
                 "rprec", "--rprec-fold", "10", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())["metrics"]
    assert len(r["rprec_folds"]) == 3 and 0.0 <= r["rprec_mean"] <= 1.0


def test_eval_bad_inputs(checkpoint, tmp_path, fake_inception, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["stats", "--images", str(empty), "--out", str(tmp_path / "x.npz")]) == 2
    assert "no image files" in capsys.readouterr().err
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32)).save(mixed / "a.png")
    Image.new("RGB", (16, 32)).save(mixed / "b.png")
    assert main(["stats", "--images", str(mixed), "--out", str(tmp_path / "x.npz"), "--no-progress"]) == 2
    assert "one size" in capsys.readouterr().err
    np.savez(tmp_path / "nomu.npz", m=np.zeros(16))
    assert main(["images", "--images", str(mixed), "--fid-stats", str(tmp_path / "nomu.npz"), "--metrics", "fid"]) == 2
    assert "'mu' and 'sigma'" in capsys.readouterr().err
    # a checkpoint of another family
    obj = torch.load(checkpoint, weights_only=True)
    obj["fastt2i"]["family"] = "attngan"
    torch.save(obj, tmp_path / "attngan.pt")
    assert main(["dfgan", "--checkpoint", str(tmp_path / "attngan.pt"), "--data", "synthetic:4"]) == 2
    assert "is a 'attngan' checkpoint" in capsys.readouterr().err
    # another network's weights
    torch.save({"encoder.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    assert main(["dfgan", "--checkpoint", str(tmp_path / "other.pth"), "--data", "synthetic:4", "--text-encoder",
                 str(tmp_path / "other.pth"), "--vocab", str(tmp_path / "other.pth")]) == 2
    capsys.readouterr()
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:4", "--metrics", "rprec"]) == 2
    assert "--damsm-image-encoder" in capsys.readouterr().err
    assert main(["images", "--images", str(mixed), "--metrics", "rprec"]) == 2
    assert "need captions" in capsys.readouterr().err
    assert main(["dfgan", "--data", "synthetic:4"]) == 2
    assert "--checkpoint" in capsys.readouterr().err


def test_synthetic_metric_is_accepted_by_name(checkpoint, tmp_path, monkeypatch):
    import sys
    import types

    mod = types.ModuleType("fastt2i.eval.synthetic")
    mod.caption_accuracy = lambda images, captions: torch.ones(len(captions))
    monkeypatch.setitem(sys.modules, "fastt2i.eval.synthetic", mod)
    import fastt2i.eval

    monkeypatch.setattr(fastt2i.eval, "synthetic", mod, raising=False)
    out = tmp_path / "s.json"
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:6", "--metrics", "synthetic",
                 "--out", str(out), "--no-progress"]) == 0
    assert json.loads(out.read_text())["metrics"]["synthetic_accuracy"] == 1.0


def test_training_hook(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluator, "InceptionFeatures", fake_inception_factory)
    t = DFGANTrainer(DFGANConfig.synthetic(**TINY), TrainConfig(data="synthetic:16", out_dir=str(tmp_path),
                                                               progress=False, ema=0.5))
    evaluate = evaluator.make_train_evaluator("fid,is", n=10, batch_size=4)
    first = evaluate(t)
    assert set(first) == {"fid", "is_mean", "is_std", "n"} and all(isinstance(v, float) for v in first.values())
    assert first["n"] == 10.0 and t.netG.training and first == evaluate(t)  # deterministic, G left in train mode
    with pytest.raises(ValueError, match="rprec"):
        evaluator.make_train_evaluator("rprec")


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["tf-inception"])  # torchvision's runs in the torchrun test below
def test_eval_with_random_inception_weights_file(checkpoint, tmp_path, protocol):
    from fastt2i.eval.inception import InceptionFeatures

    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(InceptionFeatures(protocol, None).net.state_dict(), weights)
    out = tmp_path / "r.json"
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:4", "--metrics", "fid,is",
                 "--fid-protocol", protocol, "--inception-weights", str(weights), "--is-splits", "2",
                 "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())
    assert r["protocol"]["fid"] == protocol and np.isfinite(r["metrics"]["fid"]) and r["metrics"]["fid"] > 0


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(checkpoint, tmp_path):
    """`torchrun -m fastt2i.eval` on 2 CPU ranks (gloo, loopback) gives one process's numbers."""
    import os
    import signal
    import subprocess
    import sys

    from fastt2i.eval.inception import InceptionFeatures

    torch.manual_seed(0)
    weights = tmp_path / "w.pth"
    torch.save(InceptionFeatures("torchvision", None).net.state_dict(), weights)
    ref = tmp_path / "ref.npz"
    common = ["--inception-weights", str(weights), "--no-progress", "--device", "cpu"]
    assert main(["stats", "--data", "synthetic:4", "--imsize", "32", "--out", str(ref)] + common) == 0
    args = ["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:6", "--metrics", "fid,is",
            "--fid-stats", str(ref), "--is-splits", "2", "--batch", "2"] + common
    assert main(args + ["--out", str(tmp_path / "one.json")]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path), GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "fastt2i.eval"] + args + ["--out", str(tmp_path / "two.json")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("the torchrun evaluation did not finish in 600 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert two["world_size"] == 2 and two["metrics"]["n"] == one["metrics"]["n"] == 6
    # same images (noise seeded per image); features may differ in the last float32 bits by batch layout
    assert two["metrics"]["fid"] == pytest.approx(one["metrics"]["fid"], rel=1e-4)
    assert two["metrics"]["is_mean"] == pytest.approx(one["metrics"]["is_mean"], rel=1e-4)


def test_eval_any_registered_family_through_the_cli(tmp_path, fake_inception, capsys):
    """`fastt2i eval <family>` generates through the family's registered image sampler."""
    from fastt2i.cli import main as fastt2i_main

    out = tmp_path / "run"
    assert fastt2i_main(["train", "gan-int-cls", "--data", "synthetic:8", "--steps", "1", "--batch-size", "4",
                         "--nf", "4", "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    result = tmp_path / "r.json"
    assert fastt2i_main(["eval", "gan-int-cls", "--checkpoint", str(out / "checkpoint.pt"), "--data", "synthetic:8",
                         "--metrics", "fid,is", "--is-splits", "2", "--batch", "4", "--out", str(result),
                         "--no-progress"]) == 0
    r = json.loads(result.read_text())
    assert r["family"] == "gan-int-cls" and r["metrics"]["n"] == 8 and np.isfinite(r["metrics"]["fid"])
    # a checkpoint of one family evaluated as another is refused, naming both
    assert fastt2i_main(["eval", "stackgan", "--checkpoint", str(out / "checkpoint.pt"), "--data", "synthetic:8",
                         "--metrics", "is", "--no-progress"]) == 2
    assert "gan-int-cls" in capsys.readouterr().err


def test_train_eval_every_through_the_cli(tmp_path, fake_inception, capsys):
    """`fastt2i train ... --eval-every N --eval is` logs the registered evaluator's figures."""
    from fastt2i.cli import main as fastt2i_main

    out = tmp_path / "run"
    assert fastt2i_main(["train", "dfgan", "--data", "synthetic:8", "--steps", "2", "--batch-size", "4",
                         "--imsize", "64", "--nf", "4", "--out", str(out), "--eval-every", "1",
                         "--eval", "is", "--eval-n", "4", "--eval-batch", "4", "--no-progress",
                         "--workers", "0"]) == 0
    assert "is_mean" in capsys.readouterr().out
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("is_mean" in json.dumps(row) for row in logged)


@pytest.mark.slow
def test_rprec_with_damsm_encoder_files(checkpoint, tmp_path):
    """rprec loads DAMSM encoders in the official file format (as `fastt2i train damsm` writes them)."""
    from fastt2i.data import build_dataset
    from fastt2i.models.damsm import CNNEncoder, save_encoders
    from fastt2i.text import RNNEncoder

    vocab = build_dataset("synthetic:1500", "test", imsize=32).vocab
    torch.manual_seed(0)
    img, txt = save_encoders(CNNEncoder(256, input_size=139), RNNEncoder(len(vocab)), str(tmp_path), 0)
    out = tmp_path / "r.json"
    assert main(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:1500", "--metrics", "rprec",
                 "--damsm-image-encoder", img, "--damsm-text-encoder", txt, "--damsm-input-size", "139",
                 "--rprec-fold", "4", "--n", "8", "--batch", "8", "--out", str(out), "--no-progress"]) == 0
    r = json.loads(out.read_text())["metrics"]
    assert 0.0 <= r["rprec_mean"] <= 1.0 and len(r["rprec_folds"]) == 2  # 8 images in folds of 4
    # a text encoder of another vocabulary is refused with both sizes named
    wrong = save_encoders(CNNEncoder(256, input_size=139), RNNEncoder(len(vocab) + 3), str(tmp_path / "w"), 0)[1]
    with pytest.raises(ValueError, match="vocabulary"):
        command.run(command_args(["dfgan", "--checkpoint", str(checkpoint), "--data", "synthetic:1500",
                                  "--metrics", "rprec", "--damsm-image-encoder", img, "--damsm-text-encoder", wrong,
                                  "--damsm-input-size", "139", "--n", "4", "--no-progress"]))


def command_args(argv):
    import argparse

    p = argparse.ArgumentParser()
    command.add_arguments(p)
    return p.parse_args(argv)
