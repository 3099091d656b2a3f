"""A short demo run writes every output: the captioned grid, the report, the curve, the checkpoint."""
import os

import torch
from PIL import Image

from fastt2i.train.demo import DEMO_CAPTIONS, TARGETS, run_demo


def test_short_demo_writes_every_output(tmp_path, capsys):
    threads = torch.get_num_threads()
    try:
        out = run_demo(minutes=0.005, out_dir=str(tmp_path), device="cpu", bench_steps=1, eval_every=2, threads=1,
                       noises=2, heldout=8, progress=False)
    finally:
        torch.set_num_threads(threads)
    for name in ("samples.png", "report.md", "curve.png", "checkpoint.pt", "step_time.txt", "log.jsonl"):
        assert os.path.getsize(tmp_path / name) > 0, name
    assert out["steps"] >= 1
    # one held-out evaluation every 2 steps and one at the end
    assert [r["step"] for r in out["eval_history"]][-1] == out["steps"]
    assert len(out["eval_history"]) == out["steps"] // 2 + (out["steps"] % 2)
    assert all(0.0 <= r["one/colour"] <= 1.0 and r["train_seconds"] > 0 for r in out["eval_history"])
    assert set(out["backend_ms"]) >= {"reference"}

    grid = Image.open(tmp_path / "samples.png")
    assert grid.width >= 4 * 160 and grid.height > 4 * 160  # enlarged images with caption lines under them
    Image.open(tmp_path / "curve.png").verify()

    report = (tmp_path / "report.md").read_text()
    printed = capsys.readouterr().out
    for text in (report, printed):
        assert "| one object | colour |" in text and "| two objects | both colours |" in text
        assert f">= {100 * TARGETS['one/shape']:.0f} %" in text
    assert f"{len(DEMO_CAPTIONS)} fixed captions x 2 noises" in report
    assert "| reference |" in report and "ms/step" in report
    assert "## Held-out evaluation every 2 steps" in report


def test_demo_command_line_flags():
    import argparse

    from fastt2i.train.demo import add_arguments

    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--minutes", "0.5", "--eval-every", "7", "--threads", "1"])
    assert (a.minutes, a.eval_every, a.threads, a.out) == (0.5, 7, 1, "demo_out")


def test_synthetic_caption_evaluator_is_offered_to_the_trainer():
    import argparse

    import pytest

    from fastt2i.eval.synthetic import CaptionAccuracyEvaluator
    from fastt2i.train import registered_evaluators

    spec = registered_evaluators()["synthetic-captions"]
    ev = spec.make(argparse.Namespace(data="synthetic", seed=100))
    assert isinstance(ev, CaptionAccuracyEvaluator) and len(ev.captions) == 128
    with pytest.raises(ValueError, match="needs --data synthetic"):
        spec.make(argparse.Namespace(data="birds:/data/birds", seed=100))
