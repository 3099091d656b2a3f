"""The ``fastt2i`` command; its families come from ``fastt2i.train.registry``.

    fastt2i train FAMILY --data synthetic|birds:PATH|flowers:PATH|coco:PATH [options]
    fastt2i sample FAMILY --checkpoint CKPT --caption "..." [--caption ...] --out grid.png
    fastt2i demo [FAMILY] [--minutes 3] [--out demo_out]

Multi-GPU / multi-process: ``torchrun --nproc_per_node N -m fastt2i train FAMILY ...``.
Flags with the same meaning are the same for every family; ``fastt2i train FAMILY --help``
also lists the family's own.
"""
from __future__ import annotations

import argparse
import sys

from fastt2i import ops


def _families():
    from fastt2i.train.registry import registered_families

    return registered_families()


def _family_list(fams) -> str:
    return "\n".join(f"  {name:<10} {fam.summary}" for name, fam in fams.items())


def _add_common_train_arguments(p: argparse.ArgumentParser, fam) -> None:
    from fastt2i.train.registry import registered_evaluators

    g = p.add_argument_group("training (every family)")
    g.add_argument("--data", default="synthetic", help="synthetic[:N] | birds:PATH | flowers:PATH | coco:PATH")
    g.add_argument("--preset", default=None, choices=fam.presets, help="model preset (default: from --data)")
    g.add_argument("--batch-size", type=int, default=None, help="per process (default: the preset's)")
    g.add_argument("--steps", type=int, default=None, help="total iterations (default: the preset's epochs)")
    g.add_argument("--minutes", type=float, default=None, help="stop after this wall time (checkpointed)")
    g.add_argument("--out", default=None, help=f"output folder: checkpoint.pt, samples/, log.jsonl, tb/ "
                   f"(default runs/{fam.name})")
    g.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    g.add_argument("--backend", default="auto", choices=ops.BACKENDS + ("auto",))
    g.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    g.add_argument("--channels-last", action="store_true")
    g.add_argument("--compile", action="store_true", help="torch.compile the networks that allow it")
    g.add_argument("--ema", type=float, default=0.0, help="EMA decay of G, e.g. 0.999 (0: off)")
    g.add_argument("--save-every", type=int, default=1000)
    g.add_argument("--sample-every", type=int, default=None, help="default: with every checkpoint")
    g.add_argument("--log-every", type=int, default=50)
    evs = registered_evaluators()
    g.add_argument("--eval-every", type=int, default=None, help="run the --eval evaluators every N steps")
    g.add_argument("--eval", action="append", default=[], metavar="NAME",
                   help="evaluator (repeat): " + ("; ".join(f"{n}: {e.summary}" for n, e in evs.items())
                                                  or "none registered"))
    g.add_argument("--seed", type=int, default=100)
    g.add_argument("--workers", type=int, default=4)
    g.add_argument("--tensorboard", action="store_true")
    g.add_argument("--resume", default=None, help="checkpoint path, or 'auto' (OUT/checkpoint.pt if present)")
    g.add_argument("--init-from", default=None, help=f"official {fam.title} weights to start from")
    g.add_argument("--text-encoder", default=None, help="official DAMSM text_encoder*.pth (vocabulary of --data)")
    g.add_argument("--sample-caption", action="append", default=[], help="caption for the sample grid (repeat)")
    g.add_argument("--no-progress", action="store_true")
    for spec in evs.values():
        spec.add_arguments(p.add_argument_group(f"evaluator {spec.name}"))


def _train_parser(sub, fams) -> None:
    p = sub.add_parser("train", help="train a model", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a GAN family (its official procedure on the shared training core).\n\n"
                                   "families:\n" + _family_list(fams))
    fsub = p.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, fam in fams.items():
        fp = fsub.add_parser(name, help=fam.summary, description=f"Train {fam.title}: {fam.summary}.")
        _add_common_train_arguments(fp, fam)
        fam.add_train_arguments(fp.add_argument_group(f"{fam.title} model"))


def _sample_parser(sub, fams) -> None:
    p = sub.add_parser("sample", help="generate images", formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Generate images from captions with a trained model.\n\nfamilies:\n"
                                   + _family_list({n: f for n, f in fams.items() if f.sample}))
    fsub = p.add_subparsers(dest="family", metavar="FAMILY", required=True)
    for name, fam in fams.items():
        if fam.sample is None:
            continue
        fp = fsub.add_parser(name, help=fam.summary, description=f"Sample {fam.title} into a PNG.")
        g = fp.add_argument_group("sampling (every family)")
        g.add_argument("--checkpoint", required=True, help="fastt2i checkpoint or official weights")
        g.add_argument("--caption", action="append", default=[], help="caption (repeat for several)")
        g.add_argument("--captions-file", default=None, help="one caption a line")
        g.add_argument("--out", default="grid.png")
        g.add_argument("--n", type=int, default=1, help="images per caption")
        g.add_argument("--seed", type=int, default=0)
        g.add_argument("--device", default="auto")
        g.add_argument("--backend", default="auto", choices=ops.BACKENDS + ("auto",))
        g.add_argument("--no-ema", action="store_true", help="use G rather than its EMA")
        fam.add_sample_arguments(fp.add_argument_group(f"{fam.title}"))


def _demo_parser(sub, fams) -> None:
    from fastt2i.train.demo import add_arguments

    demos = {n: f for n, f in fams.items() if f.demo}
    p = sub.add_parser("demo", help="train on synthetic shapes for a few minutes, then compare backends",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train a family on the synthetic shapes for a few minutes, then compare the "
                                   "backends' step times.\n\nfamilies:\n" + _family_list(demos))
    default = "dfgan" if "dfgan" in demos else next(iter(demos), None)
    p.add_argument("family", nargs="?", default=default, choices=sorted(demos),
                   help=f"the family to train (default {default})")
    add_arguments(p)  # the demo's flags, the same for every family


def build_parser() -> argparse.ArgumentParser:
    fams = _families()
    p = argparse.ArgumentParser(prog="fastt2i", description="fastt2i: fast text-to-image GANs "
                                f"(families: {', '.join(fams)})")
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub, fams)
    _sample_parser(sub, fams)
    _demo_parser(sub, fams)
    return p


def cmd_train(a) -> int:
    from fastt2i.data import parse_data_spec
    from fastt2i.train import TrainConfig
    from fastt2i.train.registry import get_family, registered_evaluators

    fam = get_family(a.family)
    kind, _ = parse_data_spec(a.data)
    preset = a.preset or (kind if kind in fam.presets else fam.presets[0])
    mcfg = fam.model_config(a, preset)
    if a.eval_every is not None and not a.eval:
        raise ValueError("--eval-every needs at least one --eval NAME (registered: "
                         f"{', '.join(registered_evaluators()) or 'none'})")
    known = registered_evaluators()
    unknown = [name for name in a.eval if name not in known]
    if unknown:
        raise ValueError(f"--eval: unknown evaluator(s) {unknown}: expected one of {', '.join(known) or 'none registered'}")
    evaluators = {name: known[name].make(a) for name in a.eval}
    dataset = fam.trainer.make_dataset(a.data, mcfg, a.seed)
    steps = a.steps
    if steps is None:  # the preset's epochs over this dataset
        steps = mcfg.max_epoch * max(1, len(dataset) // mcfg.batch_size)
    tcfg = TrainConfig(data=a.data, out_dir=a.out, steps=steps, max_minutes=a.minutes, device=a.device,
                       backend=a.backend, amp=a.amp, channels_last=a.channels_last, compile=a.compile, ema=a.ema,
                       save_every=a.save_every, sample_every=a.sample_every, log_every=a.log_every,
                       eval_every=a.eval_every, seed=a.seed, num_workers=a.workers, tensorboard=a.tensorboard,
                       resume=a.resume, init_from=a.init_from, text_encoder=a.text_encoder,
                       sample_captions=a.sample_caption, progress=not a.no_progress, options=fam.train_options(a))
    trainer = fam.trainer(mcfg, tcfg, dataset=dataset, evaluators=evaluators)
    history = trainer.train()
    trainer.close()
    if trainer.is_main():
        last = history[-1] if history else {}
        print(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))
        if trainer.eval_history:
            print("evaluation: " + ", ".join(f"{k} {v:.4g}" for k, v in trainer.eval_history[-1].items()))
        print(f"checkpoint: {trainer.cfg.out_dir}/checkpoint.pt")
    if trainer.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def cmd_sample(a) -> int:
    from fastt2i.train.core import resolve_device
    from fastt2i.train.registry import get_family

    fam = get_family(a.family)
    ops.set_backend(a.backend)
    captions = list(a.caption)
    if a.captions_file:
        with open(a.captions_file, encoding="utf-8") as f:
            captions += [line.strip() for line in f if line.strip()]
    if not captions:
        raise SystemExit("fastt2i sample: give at least one --caption or --captions-file")
    if a.n < 1:
        raise SystemExit(f"fastt2i sample: --n must be >= 1, got {a.n}")
    print(fam.sample(a, captions, resolve_device(a.device)))
    return 0


def cmd_demo(a) -> int:
    from fastt2i.train.registry import get_family

    if a.family is None:
        raise ValueError("no family has a demo")
    get_family(a.family).demo(a)
    return 0


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "sample": cmd_sample, "demo": cmd_demo}[a.command](a)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
        print(f"fastt2i {a.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
