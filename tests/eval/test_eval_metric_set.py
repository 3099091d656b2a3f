"""MetricSet: the streamed metrics equal the formulas, and 2 gloo ranks equal one process."""
import json
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from eval_fakes import FakeInception, fake_images

from fastt2i.eval.evaluator import MetricSet, parse_metrics, shard
from fastt2i.eval.images import from_generator
from fastt2i.eval.inception_score import inception_score_from_probs
from fastt2i.eval.rprecision import r_precision
from fastt2i.eval.stats import frechet_distance

N = 53
POOL = 150


def pool():
    g = torch.Generator().manual_seed(5)
    return torch.randn(POOL, 12, generator=g), [i % 30 for i in range(POOL)]


def image_code(images):
    g = torch.Generator().manual_seed(6)
    w = torch.randn(3 * 8 * 8, 12, generator=g)
    return images.flatten(1) @ w


def build_metric_set():
    codes, classes = pool()
    ref = (np.zeros(16), np.eye(16))
    return MetricSet(("fid", "is", "rprec"), FakeInception(), ref, image_code=image_code, pool_codes=codes,
                     pool_classes=classes, is_splits=5, fold_size=20, seed=3)


def true_rows():
    return [(7 * i) % POOL for i in range(N)]


def run_share(ms, rank, world, batch):
    images, rows = fake_images(N), true_rows()
    mine = shard(N, rank, world)
    for s in range(mine.start, mine.stop, batch):
        idx = list(range(s, min(s + batch, mine.stop)))
        ms.update(images[idx], None, [rows[i] for i in idx])
    return ms.result()


def test_metric_set_equals_formulas():
    out = run_share(build_metric_set(), 0, 1, batch=8)
    x01 = from_generator(fake_images(N))
    feats, logits = FakeInception()(x01)
    f = feats.double().numpy()
    assert out["fid"] == pytest.approx(frechet_distance(f.mean(0), np.cov(f, rowvar=False), np.zeros(16), np.eye(16)),
                                       rel=1e-9)
    probs = torch.softmax(logits.double(), 1).numpy()
    m, s = inception_score_from_probs(probs, 5)
    assert out["is_mean"] == pytest.approx(m, rel=1e-6) and out["is_std"] == pytest.approx(s, rel=1e-5, abs=1e-7)
    codes, classes = pool()
    r = r_precision(image_code(fake_images(N)), true_rows(), codes, classes, fold_size=20, seed=3)
    assert out["rprec_mean"] == pytest.approx(r["mean"]) and out["rprec_folds"] == pytest.approx(r["folds"])
    assert out["n"] == N


def test_metric_set_bad_input():
    with pytest.raises(ValueError, match="metrics"):
        parse_metrics("fid,clip")
    with pytest.raises(ValueError, match="reference"):
        MetricSet(("fid",), FakeInception())
    with pytest.raises(ValueError, match="Inception"):
        MetricSet(("is",))
    with pytest.raises(ValueError, match="DAMSM"):
        MetricSet(("rprec",))
    ms = MetricSet(("is",), FakeInception())
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        ms.update(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        ms.update(torch.full((2, 3, 8, 8), float("nan")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, out_path):
    import torch.distributed as dist

    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        out = run_share(build_metric_set(), rank, world, batch=3 + 4 * rank)  # different batch splits per rank
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(out, f)
        else:
            assert out is None
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process(tmp_path):
    out_path = tmp_path / "rank0.json"
    ctx = mp.start_processes(_worker, args=(2, _free_port(), str(out_path)), nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=1):
            if time.monotonic() > deadline:
                pytest.fail("the 2-process gloo run did not finish in 180 s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    merged = json.loads(out_path.read_text())
    single = run_share(build_metric_set(), 0, 1, batch=53)
    assert merged["n"] == single["n"] == N
    assert merged["fid"] == pytest.approx(single["fid"], rel=1e-9)
    # contiguous shards in rank order: IS splits and R-precision draws are those of one process
    assert merged["is_mean"] == pytest.approx(single["is_mean"], rel=1e-6)
    assert merged["is_std"] == pytest.approx(single["is_std"], rel=1e-5, abs=1e-7)
    assert merged["rprec_folds"] == pytest.approx(single["rprec_folds"])
