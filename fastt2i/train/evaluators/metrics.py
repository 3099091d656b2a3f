"""``--eval fid|is|synthetic``: the metrics of fastt2i.eval on a held-out subset during training.

Each name is its own evaluator so that ``--eval fid --eval synthetic`` composes; they share the
flags below.  The Inception network is built at the first evaluation (not at import: the CLI
imports this module to build its help).
"""
from __future__ import annotations

import argparse

from fastt2i.train.registry import register_evaluator


def _add_arguments(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--eval-n", type=int, default=2048, help="held-out captions per evaluation (default 2048)")
    g.add_argument("--eval-batch", type=int, default=50)
    g.add_argument("--eval-fid-protocol", default="torchvision", help="torchvision | tf-inception | torchvision-legacy")
    g.add_argument("--eval-inception-weights", default="download",
                   help="Inception state dict path, or 'download'")
    g.add_argument("--eval-fid-stats", default=None,
                   help="reference npz (mu, sigma); default: the first --eval-n images of the held-out split")


def _maker(metric: str):
    def make(args: argparse.Namespace):
        from fastt2i.eval import make_train_evaluator

        return make_train_evaluator(metric, n=args.eval_n, protocol=args.eval_fid_protocol,
                                    inception_weights=args.eval_inception_weights, reference=args.eval_fid_stats,
                                    batch_size=args.eval_batch, seed=args.seed)

    return make


register_evaluator("fid", _maker("fid"), "FID against the held-out split (fastt2i.eval, named protocol)",
                   add_arguments=_add_arguments)
register_evaluator("is", _maker("is"), "Inception score of held-out-caption samples")
register_evaluator("synthetic", _maker("synthetic"),
                   "caption accuracy read back from the images (synthetic shapes data only)")
