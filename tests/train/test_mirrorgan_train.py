"""STREAM pretraining and MirrorGAN on the training core: held-out caption loss and BLEU-4, exact
resume, the CLI (train stream -> train mirrorgan -> sample with re-descriptions), clear errors.
Tiny networks: two stages, a random ResNet-18 at 64 x 64 for STREAM."""
import pytest
import torch

from fastt2i.cli import main as cli_main
from fastt2i.models.mirrorgan import MirrorGANConfig
from fastt2i.train.core import TrainConfig
from fastt2i.text import Vocabulary
from fastt2i.train.families.mirrorgan import MirrorGANTrainer, load_official_stream, load_stream
from fastt2i.train.families.stream import STREAMConfig, STREAMTrainer, corpus_bleu4

TINY = dict(gf_dim=2, df_dim=2, branch_num=2, batch_size=4)


@pytest.fixture(scope="module")
def stream_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("stream")
    t = STREAMTrainer(STREAMConfig.synthetic(batch_size=8, heldout=8, embed_size=16, hidden_size=24),
                      TrainConfig(data="synthetic:16", out_dir=str(out), steps=2, save_every=100, progress=False,
                                  seed=7))
    t.train()
    return t, str(out / "checkpoint.pt")


def _mirrorgan(out, stream, **kw):
    tc = dict(data="synthetic:16", out_dir=str(out), steps=2, save_every=100, progress=False, num_samples=2, seed=7,
              ema=0.999, options={"stream": stream})
    tc.update(kw)
    return MirrorGANTrainer(MirrorGANConfig.synthetic(**TINY), TrainConfig(**tc))


def test_bleu4_on_known_cases():
    assert corpus_bleu4([[1, 2, 3, 4]], [[[1, 2, 3, 4]]]) == pytest.approx(1.0)
    assert corpus_bleu4([[1, 2, 3]], [[[4, 5, 6]]]) == 0.0
    # one 4-gram of two matches; brevity penalty 1 (hypothesis as long as the reference)
    h, r = [1, 2, 3, 4, 5], [1, 2, 3, 4, 6]
    expected = ((4 / 5) * (3 / 4) * (2 / 3) * (1 / 2)) ** 0.25
    assert corpus_bleu4([h], [[r]]) == pytest.approx(expected)
    # a short hypothesis is penalised
    assert corpus_bleu4([[1, 2, 3, 4]], [[[1, 2, 3, 4, 5, 6]]]) == pytest.approx(__import__("math").exp(1 - 6 / 4))
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_bleu4([[1]], [])


def test_stream_reports_heldout_loss_and_bleu(stream_checkpoint):
    t, path = stream_checkpoint
    m = t.heldout_metrics()
    assert set(m) == {"val_cap_loss", "bleu4"} and m["val_cap_loss"] > 0 and 0.0 <= m["bleu4"] <= 1.0
    ckpt = torch.load(path, weights_only=False)
    assert ckpt["fastt2i"]["family"] == "stream" and {"caption_cnn", "caption_rnn"} <= set(ckpt)


def test_mirrorgan_exact_resume_and_stream_frozen(tmp_path, stream_checkpoint):
    _, stream = stream_checkpoint
    a = _mirrorgan(tmp_path / "a", stream)
    before = {k: v.clone() for k, v in a.stream.state_dict().items()}
    losses_a = a.train()
    assert all(torch.equal(before[k], v) for k, v in a.stream.state_dict().items())
    assert "cap_loss" in losses_a[0] and "w_loss" not in losses_a[0]  # released config: no DAMSM
    assert (tmp_path / "a" / "samples" / "step_0000002_stream.txt").is_file()
    b = _mirrorgan(tmp_path / "b", stream, save_every=1)
    b.train(steps=1)
    c = _mirrorgan(tmp_path / "c", stream, resume=str(tmp_path / "b" / "checkpoint.pt"))
    losses_c = c.train()
    assert c.step == 2 and losses_c[0]["errG"] == losses_a[1]["errG"]
    for k, v in a.netG.state_dict().items():
        assert torch.equal(v, c.netG.state_dict()[k]), k


def test_cli_train_and_sample_with_redescriptions(tmp_path, stream_checkpoint, capsys):
    _, stream = stream_checkpoint
    _mirrorgan(tmp_path / "run", stream, steps=1).train()
    out = tmp_path / "m.png"
    rc = cli_main(["sample", "mirrorgan", "--checkpoint", str(tmp_path / "run" / "checkpoint.pt"),
                   "--caption", "a small red circle", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    from PIL import Image

    fig = Image.open(out)
    assert fig.height > 64  # the text row under the image


def test_bad_inputs(tmp_path, stream_checkpoint):
    with pytest.raises(ValueError, match="fastt2i train stream"):
        _mirrorgan(tmp_path / "x", None)
    with pytest.raises(FileNotFoundError, match="STREAM checkpoint"):
        _mirrorgan(tmp_path / "x", str(tmp_path / "missing.pt"))
    _mirrorgan(tmp_path / "m", stream_checkpoint[1], steps=1).train()
    with pytest.raises(ValueError, match="not a 'fastt2i train stream'"):
        _mirrorgan(tmp_path / "y", str(tmp_path / "m" / "checkpoint.pt"))
    with pytest.raises(ValueError, match="vocabulary"):
        load_stream(stream_checkpoint[1], Vocabulary(["<end>", "a", "b"]), "cpu")


def test_cli_train_stream_reports_heldout_metrics(tmp_path, capsys):
    out = tmp_path / "s"
    rc = cli_main(["train", "stream", "--data", "synthetic:8", "--steps", "1", "--batch-size", "4", "--out", str(out),
                   "--eval-every", "1", "--eval", "stream", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    import json

    rows = [json.loads(line) for line in open(out / "log.jsonl")]
    evals = [r["eval"] for r in rows if "eval" in r]
    assert evals and {"val_cap_loss", "bleu4"} <= set(evals[-1])


def test_official_stream_files_load_by_official_keys(tmp_path, stream_checkpoint):
    """--stream-cnn/--stream-rnn: the two state dicts the official STREAM training saves."""
    from fastt2i.models.stream import STREAM

    trainer, _ = stream_checkpoint
    torch.manual_seed(3)
    official = STREAM(len(trainer.vocab), 16, 24, None, "resnet152")
    cnn, rnn = tmp_path / "cnn_encoder.pkl", tmp_path / "rnn_decoder.pkl"
    torch.save(official.caption_cnn.state_dict(), cnn)
    torch.save(official.caption_rnn.state_dict(), rnn)
    m = _mirrorgan(tmp_path / "m", None, steps=1, options={"stream_cnn": str(cnn), "stream_rnn": str(rnn)})
    m.train()
    for part in ("caption_cnn", "caption_rnn"):
        got = getattr(m.stream, part).state_dict()
        for name, want in getattr(official, part).state_dict().items():
            assert torch.equal(got[name], want), f"{part}.{name}"
    assert not any(p.requires_grad for p in m.stream.parameters()) and not m.stream.training

    with pytest.raises(ValueError, match="as a pair"):
        load_official_stream(str(cnn), None, trainer.vocab, "cpu")
    with pytest.raises(ValueError, match="vocabulary has"):
        load_official_stream(str(cnn), str(rnn), Vocabulary(["<end>", "a", "b"]), "cpu")
    with pytest.raises(ValueError, match="not an official CAPTION_RNN"):
        load_official_stream(str(cnn), str(cnn), trainer.vocab, "cpu")
    with pytest.raises(ValueError, match="not both"):
        _mirrorgan(tmp_path / "n", stream_checkpoint[1], options={"stream": stream_checkpoint[1],
                                                                    "stream_cnn": str(cnn), "stream_rnn": str(rnn)})
