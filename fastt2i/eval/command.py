"""``fastt2i eval``: FID / IS / R-precision / synthetic accuracy of a checkpoint or a folder of images,
and ``fastt2i eval stats``: reference FID statistics of a dataset split or a folder.

    fastt2i eval dfgan --checkpoint CKPT --data birds:PATH --metrics fid,is,rprec \\
        [--fid-protocol torchvision|tf-inception] [--fid-stats birds_val256_FIDK0.npz] [--n 30000] [--batch 50]
    fastt2i eval images --images DIR --metrics fid,is --fid-stats REF.npz
    fastt2i eval stats --data birds:PATH --out birds_val256_FIDK0.npz [--format dfgan|pytorch-fid]

Under ``torchrun --nproc_per_node N -m fastt2i.eval ...`` each rank generates a contiguous share
of the images and the statistics are merged; rank 0 prints the table and writes the JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

from .evaluator import METRICS, MetricSet, dist_info, parse_metrics, reference_statistics, run_generator, shard
from .inception import PROTOCOLS, InceptionFeatures

# images per test caption as the papers evaluate (DF-GAN: CUB test set x 10 ~ 30k; COCO val x 1)
PER_CAPTION = {"birds": 10, "flowers": 10, "coco": 1, "synthetic": 1}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .generate import evaluable_families

    p.add_argument("target", choices=evaluable_families() + ("images", "stats"),
                   help="a model family (generate from --checkpoint), 'images' (a folder) or 'stats' (reference npz)")
    p.add_argument("--checkpoint", help="fastt2i checkpoint, official state_epoch_*.pth or netG file")
    p.add_argument("--data", help="synthetic[:N] | birds:PATH | flowers:PATH | coco:PATH: the captions (and "
                   "the reference images when --fid-stats is not given)")
    p.add_argument("--split", default="test", help="dataset split (default test)")
    p.add_argument("--images", help="folder of images (for 'images' and 'stats')")
    p.add_argument("--metrics", default="fid,is", help=f"comma list of {', '.join(METRICS)} (default fid,is)")
    p.add_argument("--fid-protocol", default="torchvision", choices=PROTOCOLS,
                   help="Inception network for FID and IS (default torchvision, DF-GAN's)")
    p.add_argument("--inception-weights", default="download",
                   help="state dict path, 'download' (torchvision's / pytorch-fid's file), or 'random' "
                   "(smoke tests: meaningless numbers)")
    p.add_argument("--fid-stats", help="reference npz (mu, sigma): DF-GAN *_FIDK0.npz or pytorch-fid; "
                   "default: computed from --data")
    p.add_argument("--n", type=int, default=None, help="images to generate (default: test captions x per-caption)")
    p.add_argument("--per-caption", type=int, default=None, help="images per test caption (default 10 birds/flowers, "
                   "1 coco/synthetic)")
    p.add_argument("--batch", type=int, default=50, help="images per batch and rank")
    p.add_argument("--seed", type=int, default=0, help="noise seed (image i uses (seed, i))")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", default="none", choices=("none", "bf16"),
                   help="bf16 autocast of the generator on CUDA (Inception always float32)")
    p.add_argument("--truncation", type=float, default=None, help="truncated noise (default: the config's); 0: off")
    p.add_argument("--no-ema", action="store_true", help="use G rather than its EMA")
    p.add_argument("--text-encoder", help="for official files: DAMSM text_encoder*.pth")
    p.add_argument("--vocab", help="for official files: captions.pickle")
    p.add_argument("--preset", default="birds", help="for official files: birds | flowers | coco")
    p.add_argument("--damsm-image-encoder", help="rprec: DAMSM image_encoder*.pth")
    p.add_argument("--damsm-text-encoder", help="rprec: DAMSM text_encoder*.pth (vocabulary of --data)")
    p.add_argument("--damsm-input-size", type=int, default=299,
                   help="rprec: the image encoder's input size (299 official; a smaller one only for a DAMSM "
                   "pretrained at that size, e.g. the synthetic demo's)")
    p.add_argument("--is-splits", type=int, default=10)
    p.add_argument("--rprec-fold", type=int, default=3000, help="images per R-precision fold (default 3000)")
    p.add_argument("--imsize", type=int, default=None, help="stats / reference images: size (default: the "
                   "checkpoint's, 256 for official data in 'stats')")
    p.add_argument("--format", default="dfgan", choices=("dfgan", "pytorch-fid"), help="stats: npz format")
    p.add_argument("--out", default=None, help="JSON result (eval) or npz (stats); eval default eval_results.json")
    p.add_argument("--no-progress", action="store_true")


# ----------------------------------------------------------------------------- helpers
def git_commit() -> str | None:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def setup_distributed(device_name: str) -> torch.device:
    """Initialise the process group under torchrun (gloo on CPU, nccl on CUDA); the device of this rank."""
    from fastt2i.train.core import dist_env, resolve_device

    rank, world, local_rank = dist_env()
    device = resolve_device(device_name, local_rank)
    if world > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def _dataset_captions(dataset) -> tuple[list[str], list]:
    """Every caption of the split as text, with its class (image class, or the caption itself for synthetic)."""
    if hasattr(dataset, "caption"):  # synthetic shapes: classes are the distinct captions
        caps = [dataset.caption(i) for i in range(len(dataset))]
        return caps, list(caps)
    per = dataset.embeddings_num
    caps = [dataset.vocab.decode(c) for c in dataset.captions[:len(dataset) * per]]
    classes = [dataset.class_id[j // per] for j in range(len(caps))]
    return caps, classes


def caption_plan(dataset, kind: str, n: int | None, per_caption: int | None):
    """(captions to generate, their pool rows, pool captions, pool classes): pass r uses caption r mod K
    of every test image, DF-GAN's order (test set x passes)."""
    pool, classes = _dataset_captions(dataset)
    per_image = 1 if hasattr(dataset, "caption") else dataset.embeddings_num
    passes = per_caption or PER_CAPTION.get(kind, 1)
    if passes < 1:
        raise ValueError(f"--per-caption must be >= 1, got {passes}")
    total = n if n is not None else len(dataset) * passes
    if total < 2:
        raise ValueError(f"--n must be >= 2, got {total}")
    rows = [(i % len(dataset)) * per_image + (i // len(dataset)) % per_image for i in range(total)]
    return [pool[r] for r in rows], rows, pool, classes


def load_damsm(args, vocab, device):
    """(image code fn, sentence code fn) from the DAMSM files, for rprec."""
    from .rprecision import image_code_fn, sentence_code_fn

    if not (args.damsm_image_encoder and args.damsm_text_encoder):
        raise ValueError("metric rprec needs --damsm-image-encoder and --damsm-text-encoder (DAMSM image_encoder*.pth "
                         "and text_encoder*.pth trained on the dataset's vocabulary)")
    from fastt2i.models.damsm import CNNEncoder, load_image_encoder, load_text_encoder
    from fastt2i.text import RNNEncoder

    # the legacy (torch 0.3, align_corners=True) resize: what the released encoders and the
    # published R-precision figures used
    image_encoder = CNNEncoder(256, align_corners=True, input_size=args.damsm_input_size)
    load_image_encoder(image_encoder, args.damsm_image_encoder)
    text_encoder = RNNEncoder(len(vocab))
    load_text_encoder(text_encoder, args.damsm_text_encoder)
    image_encoder.to(device).eval().requires_grad_(False)
    text_encoder.to(device).eval().requires_grad_(False)
    return image_code_fn(image_encoder), sentence_code_fn(text_encoder, vocab, device)


def print_table(result: dict) -> None:
    m = result["metrics"]
    rows = []
    if "fid" in m:
        rows.append(("FID", f"{m['fid']:.3f}", f"{result['protocol']['fid']} Inception, pool3 2048-d"))
    if "is_mean" in m:
        rows.append(("IS", f"{m['is_mean']:.3f} ± {m['is_std']:.3f}",
                     f"{result['protocol']['is']} ({result['protocol']['is_splits']} splits)"))
    if "rprec_mean" in m:
        rows.append(("R-precision", f"{m['rprec_mean']:.4f} ± {m['rprec_std']:.4f}", "DAMSM, 1 + 99 captions, folds "
                     f"of {result['protocol']['rprec_fold']}"))
    if "synthetic_accuracy" in m:
        rows.append(("synthetic accuracy", f"{m['synthetic_accuracy']:.4f}", "fastt2i.eval.synthetic"))
    w0, w1 = max(len(r[0]) for r in rows + [("metric", "value")]), max(len(r[1]) for r in rows)
    print(f"{'metric':<{w0}}  {'value':<{w1}}  protocol")
    for name, value, proto in rows:
        print(f"{name:<{w0}}  {value:<{w1}}  {proto}")
    print(f"{m['n']} images in {result['seconds']:.1f} s ({result['images_per_s']:.1f} img/s), "
          f"world size {result['world_size']}, seed {result['seed']}")


# ----------------------------------------------------------------------------- commands
def run_stats(args, device) -> int:
    from fastt2i.data import build_dataset, parse_data_spec

    from .images import dataset_batches, folder_batches, list_images
    from .stats import save_stats

    if not args.out:
        raise ValueError("fastt2i eval stats: give --out REF.npz")
    rank, world = dist_info()
    inception = InceptionFeatures(args.fid_protocol, args.inception_weights).to(device)
    if args.images:
        files = list_images(args.images)[:args.n] if args.n else list_images(args.images)
        mine = shard(len(files), rank, world)
        batches, total = folder_batches(files[mine.start:mine.stop], args.batch), len(files)
        source = os.path.abspath(args.images)
    elif args.data:
        kind, _ = parse_data_spec(args.data)
        imsize = args.imsize or (64 if kind == "synthetic" else 256)
        dataset = build_dataset(args.data, args.split, imsize=imsize)
        total = min(args.n or len(dataset), len(dataset))
        mine = shard(total, rank, world)
        batches, source = dataset_batches(dataset, args.batch, list(mine)), f"{args.data} {args.split} {imsize}px"
    else:
        raise ValueError("fastt2i eval stats: give --data SPEC or --images DIR")
    mu, sigma = reference_statistics(inception, batches, progress=not args.no_progress, total=total)
    if rank == 0:
        save_stats(args.out, mu, sigma, fmt=args.format, protocol=args.fid_protocol, n=total)
        print(f"wrote {args.out} ({args.format} npz, {args.fid_protocol} Inception, {total} images of {source})")
    return 0


def run_eval(args, device) -> int:
    from .images import folder_batches, list_images
    from .stats import load_stats

    metrics = parse_metrics(args.metrics)
    rank, world = dist_info()
    protocol = args.fid_protocol
    gen = None
    if args.target != "images":  # the checkpoint first: its errors come before any download
        from .generate import load_generator

        if not args.checkpoint or not args.data:
            raise ValueError(f"fastt2i eval {args.target}: give --checkpoint CKPT and --data SPEC (its test captions)")
        gen = load_generator(args.target, args.checkpoint, device, use_ema=not args.no_ema,
                             text_encoder=args.text_encoder, vocab=args.vocab, preset=args.preset,
                             truncation=args.truncation, amp=args.amp, seed=args.seed)
    inception = None
    if "fid" in metrics or "is" in metrics:
        inception = InceptionFeatures(protocol, args.inception_weights).to(device)
    result = {"target": args.target, "metrics": {}, "seed": args.seed, "commit": git_commit(),
              "world_size": world, "device": str(device), "amp": args.amp,
              "protocol": {"fid": protocol if "fid" in metrics else None, "is": protocol if "is" in metrics else None,
                           "inception_weights": inception.weights if inception is not None else None,
                           "resize": "bilinear to 299, align_corners=False, no antialias",
                           "is_splits": args.is_splits, "rprec_fold": args.rprec_fold, "rprec_candidates": 100}}

    if args.target == "images":
        if not args.images:
            raise ValueError("fastt2i eval images: give --images DIR")
        if "rprec" in metrics or "synthetic" in metrics:
            raise ValueError("rprec and synthetic need captions: evaluate a checkpoint with --data instead")
        if "fid" in metrics and not args.fid_stats:
            raise ValueError("fid of a folder needs --fid-stats REF.npz (make one with `fastt2i eval stats`)")
        reference = load_stats(args.fid_stats, protocol) if "fid" in metrics else None
        files = list_images(args.images)[:args.n] if args.n else list_images(args.images)
        ms = MetricSet(metrics, inception, reference, is_splits=args.is_splits)
        mine = shard(len(files), rank, world)
        t0 = time.perf_counter()
        for batch in folder_batches(files[mine.start:mine.stop], args.batch):
            ms.update(batch * 2 - 1)
        out = {"metrics": ms.result(), "seconds": time.perf_counter() - t0}
        result.update(images=os.path.abspath(args.images))
    else:
        from fastt2i.data import build_dataset, parse_data_spec

        from .generate import file_sha256
        kind, _ = parse_data_spec(args.data)
        dataset = build_dataset(args.data, args.split, imsize=args.imsize or gen.imsize,
                                words_num=getattr(gen.config, "words_num", 18))
        captions, rows, pool, pool_classes = caption_plan(dataset, kind, args.n, args.per_caption)
        reference = None
        if "fid" in metrics:
            if args.fid_stats:
                reference = load_stats(args.fid_stats, protocol)
                result["reference"] = os.path.abspath(args.fid_stats)
            else:
                from .images import dataset_batches

                mine = shard(len(dataset), rank, world)
                reference = reference_statistics(inception, dataset_batches(dataset, args.batch, list(mine)),
                                                 progress=not args.no_progress, total=len(dataset))
                result["reference"] = f"{args.data} {dataset.split} split, {len(dataset)} images at {dataset.imsize}px"
        image_code = pool_codes = None
        if "rprec" in metrics:
            image_code, sentence_code = load_damsm(args, dataset.vocab, device)
            pool_codes = sentence_code(pool).cpu()
        ms = MetricSet(metrics, inception, reference, image_code=image_code, pool_codes=pool_codes,
                       pool_classes=pool_classes, is_splits=args.is_splits, fold_size=args.rprec_fold,
                       seed=args.seed)
        out = run_generator(ms, gen, captions, rows, args.batch, progress=not args.no_progress,
                            desc=f"eval {args.target}")
        result.update(family=args.target, checkpoint=os.path.abspath(args.checkpoint),
                      checkpoint_sha256=file_sha256(args.checkpoint), data=args.data, split=dataset.split,
                      truncation=gen.truncation, ema=not args.no_ema, imsize=gen.imsize)
    if rank != 0:
        return 0
    result["metrics"] = out["metrics"]
    result["seconds"] = out["seconds"]
    result["images_per_s"] = out["metrics"]["n"] / max(out["seconds"], 1e-9)
    path = args.out or "eval_results.json"
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print_table(result)
    print(f"wrote {path}")
    return 0


def run(args) -> int:
    """Entry point for ``fastt2i eval`` (the CLI wires its subparser to ``add_arguments`` and this)."""
    device = setup_distributed(args.device)
    if args.batch < 1:
        raise ValueError(f"--batch must be >= 1, got {args.batch}")
    try:
        return run_stats(args, device) if args.target == "stats" else run_eval(args, device)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="fastt2i eval", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"fastt2i eval: error: {exc}", file=sys.stderr)
        return 2
