"""``--eval synthetic-captions``: caption accuracy of the samples on the synthetic shapes, read back
by geometry (:mod:`fastt2i.eval.synthetic`), for 128 held-out (test-split) captions."""
from __future__ import annotations

from ..registry import register_evaluator


def make(args):
    from fastt2i.eval.synthetic import CaptionAccuracyEvaluator
    from fastt2i.train.demo import heldout_captions

    data = getattr(args, "data", "synthetic")
    if not str(data).startswith("synthetic"):
        raise ValueError(f"--eval synthetic-captions: needs --data synthetic[:N], got --data {data}")
    return CaptionAccuracyEvaluator(heldout_captions(), noises=1, seed=getattr(args, "seed", 100) + 1)


register_evaluator("synthetic-captions", make,
                   "synthetic shapes: colour/shape/size/relation/count accuracy of 128 held-out captions, read back")
