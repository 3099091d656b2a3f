"""AttnGAN and DAMSM on the training core: exact resume, CLI sampling with attention maps,
DAMSM pretraining, and clear errors for bad inputs.  Tiny networks, 2 stages, the DAMSM image
encoder resized to 139 (Inception at 299 is too slow for CI)."""
import pytest
import torch

from fastt2i.cli import main as cli_main
from fastt2i.models import StateDictMismatchError
from fastt2i.models.attngan import AttnGANConfig
from fastt2i.models.damsm import CNNEncoder, load_image_encoder, load_text_encoder
from fastt2i.official import attngan as official
from fastt2i.text import EmptyCaptionError, RNNEncoder
from fastt2i.train.core import TrainConfig
from fastt2i.train.families.attngan import AttnGANTrainer
from fastt2i.train.families.damsm import DAMSMConfig, DAMSMTrainer

TINY = dict(gf_dim=2, df_dim=2, branch_num=2, batch_size=4)


def _attngan(out, **kw):
    tc = dict(data="synthetic:16", out_dir=str(out), steps=2, save_every=100, progress=False, num_samples=2, seed=7,
              ema=0.999, options={"damsm_input_size": 139})
    tc.update(kw)
    return AttnGANTrainer(AttnGANConfig.synthetic(**TINY), TrainConfig(**tc))


def _state(trainer):
    return {f"{k}.{n}": v.clone() for k, net in trainer.networks.items() for n, v in net.state_dict().items()}


def test_attngan_exact_resume(tmp_path):
    a = _attngan(tmp_path / "a", steps=2)
    losses_a = a.train()
    assert (tmp_path / "a" / "samples" / "step_0000002_attention.png").is_file()
    b = _attngan(tmp_path / "b", steps=2, save_every=1)
    b.train(steps=1)
    c = _attngan(tmp_path / "c", steps=2, resume=str(tmp_path / "b" / "checkpoint.pt"))
    losses_c = c.train()
    assert c.step == 2 and losses_c[0]["errG"] == losses_a[1]["errG"]
    sa, sc = _state(a), _state(c)
    assert sa.keys() == sc.keys() and all(torch.equal(sa[k], sc[k]) for k in sa)
    assert all(torch.equal(x, y) for x, y in zip(a.ema.state_dict().values(), c.ema.state_dict().values()))
    ckpt = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert set(ckpt["model"]) == {"netG", "netsD"} and set(ckpt["optimizers"]) == {"optimizerG", "optimizersD"}
    assert ckpt["fastt2i"]["family"] == "attngan"


def test_cli_sample_writes_stages_and_attention_maps(tmp_path, capsys):
    _attngan(tmp_path / "run", steps=1).train()
    out = tmp_path / "g.png"
    rc = cli_main(["sample", "attngan", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                   "--caption", "a small red circle", "--caption", "a large blue square above a small green circle",
                   "--out", str(out), "--attention"])
    assert rc == 0, capsys.readouterr().err
    assert out.is_file() and (tmp_path / "g_attention.png").is_file()
    from PIL import Image

    fig = Image.open(tmp_path / "g_attention.png")
    assert fig.width > fig.height  # one cell per word beside the image
    rc = cli_main(["sample", "attngan", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                   "--caption", "zebra giraffe", "--out", str(out)])
    assert rc == 2 and "no word" in capsys.readouterr().err


def test_bad_inputs_are_clear_errors(tmp_path):
    torch.save(RNNEncoder(12).state_dict(), tmp_path / "text_encoder12.pth")
    with pytest.raises(StateDictMismatchError, match=r"encoder.weight: file \(12, 300\)"):
        _attngan(tmp_path / "t", text_encoder=str(tmp_path / "text_encoder12.pth"))
    # a three-stage official generator into a two-stage model
    g = official.G_NET(2, 256, 100, 100, 1, 3)
    torch.save(g.state_dict(), tmp_path / "netG_epoch_600.pth")
    with pytest.raises(StateDictMismatchError, match="3 stages.*branch_num=2"):
        _attngan(tmp_path / "s", init_from=str(tmp_path / "netG_epoch_600.pth"))
    # the image encoder is looked for next to the text encoder, as the official code does
    from fastt2i.data import synthetic_vocabulary

    torch.save(RNNEncoder(len(synthetic_vocabulary())).state_dict(), tmp_path / "text_encoder5.pth")
    with pytest.raises(FileNotFoundError, match="image_encoder5.pth"):
        _attngan(tmp_path / "i", text_encoder=str(tmp_path / "text_encoder5.pth"))
    with pytest.raises(EmptyCaptionError):
        _attngan(tmp_path / "e", sample_captions=["zebra giraffe"]).sample_grid()


def test_damsm_schedule_is_the_official_one():
    c = DAMSMConfig.birds()
    assert (c.lr, c.betas, c.rnn_grad_clip, c.batch_size, c.gamma1, c.gamma2, c.gamma3) == \
        (0.002, (0.5, 0.999), 0.25, 48, 4.0, 5.0, 10.0)
    assert c.epoch_lr(0) == 0.002 and c.epoch_lr(1) == pytest.approx(0.002 * 0.98)
    floor = c.epoch_lr(1000)
    assert floor <= 0.0002 < floor / 0.98 and c.epoch_lr(2000) == floor


def test_damsm_pretraining_lowers_the_loss_and_writes_official_files(tmp_path):
    """One batch of 8 (an epoch a step, so the official per-epoch lr decay and Adam restart run too)."""
    m = DAMSMConfig.synthetic(batch_size=8)
    t = DAMSMTrainer(m, TrainConfig(data="synthetic:8", out_dir=str(tmp_path), steps=5, save_every=5, progress=False,
                                    seed=3))
    history = t.train()
    first, last = history[0]["loss"], history[-1]["loss"]
    assert last < 0.8 * first, (first, last)
    assert t.epoch == 4 and history[-1]["lr"] == pytest.approx(0.002 * 0.98 ** 4)
    text = load_text_encoder(RNNEncoder(len(t.vocab)), str(tmp_path / "Model" / "text_encoder4.pth"))
    assert torch.equal(text.encoder.weight, t.text_encoder.encoder.weight)
    img = load_image_encoder(CNNEncoder(256, input_size=139), str(tmp_path / "Model" / "image_encoder4.pth"))
    assert torch.equal(img.emb_cnn_code.weight, t.image_encoder.emb_cnn_code.weight)
    assert (tmp_path / "samples" / "attention_0000005.png").is_file()


@pytest.mark.slow
def test_attngan_ddp_two_cpu_processes_from_the_cli(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path), GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "2",
           "-m", "fastt2i", "train", "attngan", "--data", "synthetic:8", "--stages", "2", "--gf", "2", "--df", "2",
           "--batch-size", "2", "--steps", "2", "--out", str(out), "--workers", "0", "--no-progress",
           "--device", "cpu", "--damsm-input-size", "139", "--ema", "0.999"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail("the torchrun DDP run did not finish in 600 s:\n" + stdout[-3000:] + stderr[-3000:])
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    ckpt = torch.load(out / "checkpoint.pt", weights_only=False)
    assert ckpt["fastt2i"]["step"] == 2 and ckpt["fastt2i"]["world_size"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["model"]["netG"].values())


def test_cli_samples_from_official_files(tmp_path, capsys):
    """An official generator (the layout of bird_AttnGAN2.pth), a DAMSM text encoder and
    captions.pickle -> stages and attention maps."""
    import pickle

    from fastt2i.text import Vocabulary

    g = official.G_NET(32, 256, 100, 100, 2, 2)
    torch.save({"module." + k: v for k, v in g.state_dict().items()}, tmp_path / "bird_AttnGAN2.pth")
    vocab = Vocabulary.from_texts(["this bird is red with white wings"])
    with open(tmp_path / "captions.pickle", "wb") as f:
        pickle.dump([[[1, 2]], [[3]], vocab.ixtoword, vocab.wordtoix], f, protocol=2)
    torch.save(RNNEncoder(len(vocab)).state_dict(), tmp_path / "text_encoder200.pth")
    args = ["sample", "attngan", "--checkpoint", str(tmp_path / "bird_AttnGAN2.pth"), "--stages", "2",
            "--caption", "this bird is red", "--out", str(tmp_path / "o.png"), "--attention", "--official-mask"]
    assert cli_main(args) == 2 and "--text-encoder" in capsys.readouterr().err
    assert cli_main(args + ["--text-encoder", str(tmp_path / "text_encoder200.pth"),
                            "--vocab", str(tmp_path / "captions.pickle")]) == 0
    assert (tmp_path / "o.png").is_file() and (tmp_path / "o_attention.png").is_file()
    # the same file declared with three stages: the mismatch is named
    assert cli_main(args[:4] + ["--stages", "3"] + args[6:] + ["--text-encoder", str(tmp_path / "text_encoder200.pth"),
                                                               "--vocab", str(tmp_path / "captions.pickle")]) == 2
    assert "2 stages" in capsys.readouterr().err
