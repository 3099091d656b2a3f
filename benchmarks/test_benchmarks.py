"""pytest-benchmark view of the same cases as ``python -m benchmarks.run``.

    pytest benchmarks                      # every case and provider on this device
    pytest benchmarks -k df_affine --benchmark-json out.json

Not part of ``make test``: speed is claimed only from benchmark runs.
"""
import pytest
import torch

from benchmarks.run import discover

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _params():
    for module in discover(None):
        for case in module.cases(DEVICE, quick=False):
            for provider, setup in case.providers.items():
                yield pytest.param(case, setup, id=f"{case.op}-{case.name}-{case.mode}-{provider}".replace(" ", "_"))


@pytest.mark.parametrize("case, setup", list(_params()))
def test_benchmark(benchmark, case, setup):
    fn = setup()
    fn()  # warm-up (compilation, autotuning)
    if DEVICE == "cuda":
        def timed():
            fn()
            torch.cuda.synchronize()
    else:
        timed = fn
    benchmark.extra_info.update(op=case.op, case=case.name, mode=case.mode, bytes=case.bytes)
    benchmark(timed)
