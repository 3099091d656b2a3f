"""The ``fastt2i`` command.

    fastt2i train dfgan --data synthetic|birds:PATH|flowers:PATH|coco:PATH [options]
    fastt2i sample dfgan --checkpoint CKPT --caption "..." [--caption ...] --out grid.png
    fastt2i demo [--minutes 3] [--out demo_out]

Multi-GPU / multi-process: ``torchrun --nproc_per_node N -m fastt2i train dfgan ...``.
"""
from __future__ import annotations

import argparse
import math
import sys

from fastt2i import ops

FAMILIES = ("dfgan",)


def _train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model", description="Train DF-GAN (official procedure).")
    p.add_argument("family", choices=FAMILIES)
    p.add_argument("--data", default="synthetic", help="synthetic[:N] | birds:PATH | flowers:PATH | coco:PATH")
    p.add_argument("--preset", default=None, help="model preset: birds | flowers | coco | synthetic "
                   "(default: from --data)")
    p.add_argument("--imsize", type=int, default=None, help="64 | 128 | 256 (default: the preset's)")
    p.add_argument("--nf", type=int, default=None, help="ngf = ndf (official 32)")
    p.add_argument("--batch-size", type=int, default=None, help="per process (official 32)")
    p.add_argument("--steps", type=int, default=None, help="total iterations (default: the preset's epochs)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this wall time (checkpointed)")
    p.add_argument("--out", default="runs/dfgan", help="output folder: checkpoint.pt, samples/, tb/")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=ops.BACKENDS + ("auto",))
    p.add_argument("--amp", default="none", choices=("none", "bf16", "fp16"))
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile NetG (the MA-GP path stays eager)")
    p.add_argument("--ema", type=float, default=0.0, help="EMA decay of G, e.g. 0.999 (0: off)")
    p.add_argument("--save-every", type=int, default=1000)
    p.add_argument("--sample-every", type=int, default=None)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--tensorboard", action="store_true")
    p.add_argument("--resume", default=None, help="checkpoint path, or 'auto' (OUT/checkpoint.pt if present)")
    p.add_argument("--init-from", default=None, help="official DF-GAN weights to start from")
    p.add_argument("--text-encoder", default=None, help="official DAMSM text_encoder*.pth (vocabulary of --data)")
    p.add_argument("--sample-caption", action="append", default=[], help="caption for the sample grid (repeat)")
    p.add_argument("--no-progress", action="store_true")


def _sample_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate images", description="Sample DF-GAN into a PNG grid.")
    p.add_argument("family", choices=FAMILIES)
    p.add_argument("--checkpoint", required=True, help="fastt2i checkpoint, official state_epoch_*.pth or netG file")
    p.add_argument("--caption", action="append", default=[], help="caption (repeat for several)")
    p.add_argument("--captions-file", default=None, help="one caption a line")
    p.add_argument("--out", default="grid.png")
    p.add_argument("--n", type=int, default=1, help="images per caption")
    p.add_argument("--truncation", type=float, default=None,
                   help="truncated noise rate (default: the config's, 0.86 for birds); 0 disables truncation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=ops.BACKENDS + ("auto",))
    p.add_argument("--no-ema", action="store_true", help="use G rather than its EMA")
    p.add_argument("--text-encoder", default=None, help="for official files: DAMSM text_encoder*.pth")
    p.add_argument("--vocab", default=None, help="for official files: captions.pickle / captions_DAMSM.pickle")
    p.add_argument("--preset", default="birds", help="for official files: birds | flowers | coco")
    p.add_argument("--imsize", type=int, default=None, help="for official files (default 256)")
    p.add_argument("--nf", type=int, default=None, help="for official files (default 32)")


def _model_config(preset: str, imsize, nf, batch_size=None):
    from fastt2i.models import DFGANConfig

    kw = {}
    if imsize:
        kw["imsize"] = imsize
    if nf:
        kw["ngf"] = kw["ndf"] = nf
    if batch_size:
        kw["batch_size"] = batch_size
    return DFGANConfig.preset(preset, **kw)


def cmd_train(a) -> int:
    from fastt2i.data import build_dataset, parse_data_spec
    from fastt2i.train import DFGANTrainer, TrainConfig

    kind, _ = parse_data_spec(a.data)
    mcfg = _model_config(a.preset or kind, a.imsize, a.nf, a.batch_size)
    dataset = build_dataset(a.data, "train", imsize=mcfg.imsize, words_num=mcfg.words_num, seed=a.seed)
    steps = a.steps
    if steps is None:  # the preset's epochs over this dataset
        steps = mcfg.max_epoch * max(1, len(dataset) // mcfg.batch_size)
    tcfg = TrainConfig(data=a.data, out_dir=a.out, steps=steps, max_minutes=a.minutes, device=a.device,
                       backend=a.backend, amp=a.amp, channels_last=a.channels_last, compile=a.compile, ema=a.ema,
                       save_every=a.save_every, sample_every=a.sample_every, log_every=a.log_every, seed=a.seed,
                       num_workers=a.workers, tensorboard=a.tensorboard, resume=a.resume, init_from=a.init_from,
                       text_encoder=a.text_encoder, sample_captions=a.sample_caption, progress=not a.no_progress)
    trainer = DFGANTrainer(mcfg, tcfg, dataset=dataset)
    history = trainer.train()
    trainer.close()
    if trainer.is_main():
        last = history[-1] if history else {}
        print(f"step {trainer.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "step"))
        print(f"checkpoint: {trainer.cfg.out_dir}/checkpoint.pt")
    if trainer.distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def cmd_sample(a) -> int:
    import torch

    from fastt2i.train import generate, load_sampler, save_grid, truncated_noise
    from fastt2i.train.dfgan import resolve_device
    from fastt2i.train.sampling import caption_embeddings

    ops.set_backend(a.backend)
    captions = list(a.caption)
    if a.captions_file:
        with open(a.captions_file, encoding="utf-8") as f:
            captions += [line.strip() for line in f if line.strip()]
    if not captions:
        raise SystemExit("fastt2i sample: give at least one --caption or --captions-file")
    if a.n < 1:
        raise SystemExit(f"fastt2i sample: --n must be >= 1, got {a.n}")
    device = resolve_device(a.device)
    cfg = _model_config(a.preset, a.imsize, a.nf)
    netG, text_encoder, vocab, cfg, sentence_norm = load_sampler(
        a.checkpoint, device, use_ema=not a.no_ema, text_encoder_path=a.text_encoder, vocab_path=a.vocab, config=cfg)
    captions = [c for c in captions for _ in range(a.n)]
    sent = caption_embeddings(text_encoder, vocab, captions, device, sentence_norm)
    trunc = a.truncation if a.truncation is not None else (cfg.trunc_rate if cfg.truncation else 0.0)
    g = torch.Generator().manual_seed(a.seed)
    if trunc > 0:
        noise = truncated_noise(len(captions), cfg.nz, trunc, generator=g, device=device)
    else:
        noise = torch.randn(len(captions), cfg.nz, generator=g).to(device)
    images = generate(netG, sent, noise)
    nrow = a.n if a.n > 1 else int(math.ceil(math.sqrt(len(captions))))
    save_grid(images, a.out, nrow=nrow, scale=max(1, 128 // cfg.imsize))
    print(f"wrote {a.out} ({len(captions)} images, {cfg.imsize}x{cfg.imsize})")
    return 0


def cmd_demo(a) -> int:
    from fastt2i.train.demo import run_demo

    run_demo(a.minutes, a.out, a.device, a.backend, a.seed, a.bench_steps)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from fastt2i.train.demo import add_arguments

    p = argparse.ArgumentParser(prog="fastt2i", description="fastt2i: fast text-to-image GANs")
    sub = p.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    _sample_parser(sub)
    d = sub.add_parser("demo", help="train DF-GAN on synthetic shapes for a few minutes, then compare backends")
    add_arguments(d)
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train, "sample": cmd_sample, "demo": cmd_demo}[a.command](a)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:  # CheckpointError is a RuntimeError
        print(f"fastt2i {a.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
