"""Benchmark runner: ``python -m benchmarks.run [--quick] [--ops df_affine,...] [--out DIR]``.

Discovers ``benchmarks/bench_*.py``, times every provider of every case in this process
(GPU: ``triton.testing.do_bench`` median with 20/80 quantiles; CPU: median of repeated
wall-clock runs), measures the device's peak copy bandwidth and matmul throughput for the
"% of peak" columns, prints a table and writes JSON + Markdown under ``--out`` named by
device, commit and date.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import json
import math
import os
import pkgutil
import platform
import statistics
import subprocess
import sys
import time
import traceback

import torch

import benchmarks
from benchmarks.common import Case


# ----------------------------------------------------------------------------- timing

def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_fn(fn, device: str, min_seconds: float = 0.3, max_runs: int = 200) -> tuple[float, float, float]:
    """(median, p20, p80) in milliseconds.  CPU: at least 3 calls and min_seconds, except that a call
    of a second or more is timed once (the runner's interleaved rounds give its median; this keeps
    the slow references, e.g. DAMSM's official per-caption loop, from dominating a run's time)."""
    if device == "cuda":
        import triton.testing

        med, lo, hi = triton.testing.do_bench(fn, quantiles=[0.5, 0.2, 0.8], warmup=25, rep=100)
        return float(med), float(lo), float(hi)
    times = []
    start = time.perf_counter()
    while (len(times) < 3 and not (times and times[0] >= 1e3)) or (
            time.perf_counter() - start < min_seconds and len(times) < max_runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]  # noqa: E731
    return statistics.median(times), q(0.2), q(0.8)


def peak_memory_of(fn, device: str) -> float | None:
    if device != "cuda":
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


# ----------------------------------------------------------------------------- device facts

def device_facts(device: str) -> dict:
    facts = {"device": device, "python": platform.python_version(), "torch": torch.__version__}
    if device == "cuda":
        facts["name"] = torch.cuda.get_device_name()
        props = torch.cuda.get_device_properties(0)
        facts["sms"] = props.multi_processor_count
        facts["memory_gib"] = round(props.total_memory / 2**30, 1)
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            facts["driver"] = pynvml.nvmlSystemGetDriverVersion()
            facts["max_sm_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_SM)
            facts["max_mem_clock_mhz"] = pynvml.nvmlDeviceGetMaxClockInfo(handle, pynvml.NVML_CLOCK_MEM)
        except Exception as exc:  # nvidia-ml-py missing or no NVML: facts stay partial
            facts["nvml"] = f"unavailable: {exc}"
    else:
        facts["name"] = platform.processor() or platform.machine()
        facts["threads"] = torch.get_num_threads()
        facts.update(cpu_facts())
    return facts


def cpu_facts() -> dict:
    """The CPU model, ATen's capability level (what eager and torch.compile run at) and the level of
    fastt2i's CPU kernels; both follow ATEN_CPU_CAPABILITY."""
    facts = {"aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "load_average_at_start": [round(v, 1) for v in os.getloadavg()], "cpus": os.cpu_count(),
             # glibc's malloc settings decide whether every large output is fresh, page-faulting memory
             "glibc_tunables": os.environ.get("GLIBC_TUNABLES", "")}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from fastt2i.ops import _backend

    ext = _backend.extension()
    if ext is not None and hasattr(ext, "cpu_capability"):
        facts["fastt2i_cpu_capability"] = ext.cpu_capability()
        facts["fastt2i_cpu_levels_built"] = ext.cpu_levels_built()
    return facts


def measured_peaks(device: str) -> dict:
    """Copy bandwidth (bytes read + written) and dense matmul throughput, measured now."""
    n = (1 << 28) if device == "cuda" else (1 << 25)  # 1 GiB / 128 MiB of float32
    src = torch.empty(n, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms, _, _ = time_fn(lambda: dst.copy_(src), device)
    bandwidth = 2 * src.numel() * 4 / (ms * 1e-3) / 1e9
    del src, dst
    size = 8192 if device == "cuda" else 1024
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    ms, _, _ = time_fn(lambda: a @ b, device)
    tflops = 2 * size**3 / (ms * 1e-3) / 1e12
    return {"copy_GBps": round(bandwidth, 1), "matmul_TFLOPs": round(tflops, 2),
            "matmul_dtype": str(dtype).replace("torch.", "")}


# ----------------------------------------------------------------------------- running

def discover(only: set[str] | None):
    for info in pkgutil.iter_modules(benchmarks.__path__):
        if info.name.startswith("bench_"):
            if only and info.name[len("bench_"):] not in only:
                continue
            yield importlib.import_module(f"benchmarks.{info.name}")


# ----------------------------------------------------------------------------- torch.compile at a CPU level

def inductor_cache_for_level(env: dict, level: str) -> str:
    """A TorchInductor cache directory of this CPU level only.  Inductor's FX graph cache key does not
    include ATEN_CPU_CAPABILITY (torch 2.14): C++ generated at one level is reused at another and built
    with the other level's flags.  Checked on the AVX-512 development machine: AVX2 code reused at
    AVX512 corrupts the heap (glibc "free(): invalid pointer", "unaligned tcache chunk"), AVX512 code
    reused at AVX2 returns wrong values, and any vectorised code reused at DEFAULT does not compile
    ("'at::vec' has not been declared")."""
    import getpass
    import tempfile

    base = env.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(), f"torchinductor_{getpass.getuser()}")
    return os.path.join(base, f"level-{level.lower()}")


_COMPILE_STATUS: list = []  # [None] when torch.compile works here, [reason] when it does not


def compile_unavailable() -> str | None:
    """None when torch.compile builds and runs a small elementwise + reduction graph correctly in this
    process (checked once), else the reason: the compile providers are then recorded as unavailable
    with it instead of failing case by case."""
    if not _COMPILE_STATUS:
        def probe(x, y):
            return torch.nn.functional.leaky_relu(x * 2 + y, 0.2).sum(1)

        x, y = torch.randn(37, 129), torch.randn(37, 129)
        try:
            torch._dynamo.reset()
            got = torch.compile(probe)(x, y)
            reason = None if torch.allclose(got, probe(x, y), rtol=1e-5, atol=1e-5) else "wrong values on a probe graph"
        except Exception as exc:
            text = str(exc)
            detail = next((line.strip() for line in text.splitlines() if "error:" in line), text.splitlines()[0] if text else "")
            reason = f"{type(exc).__name__}: {detail}"[:300]
        _COMPILE_STATUS.append(reason)
    return _COMPILE_STATUS[0]


def run_case(case: Case, device: str, peaks: dict, repeat: int = 1) -> list[dict]:
    """Times every provider of ``case``.  With ``repeat`` > 1 the providers are timed in turn, round
    after round (interleaved, so a change of load hits them all alike): ``ms`` is the median of the
    rounds' medians and each ratio the median of the rounds' ratios."""
    rows, fns = [], {}
    for provider, setup in case.providers.items():
        row = {"op": case.op, "case": case.name, "mode": case.mode, "provider": provider}
        if provider == "compile" and device == "cpu" and compile_unavailable():
            row["error"] = f"compile unavailable: {compile_unavailable()}"
            rows.append(row)
            continue
        try:
            fn = setup()
            for _ in range(3 if provider == "compile" else 1):  # compile + autotune outside the timing
                fn()
            _sync(device)
            fns[provider] = fn
            mem = peak_memory_of(fn, device)
            if mem is not None:
                row["peak_MiB"] = round(mem, 2)
            if provider in case.saved_bytes:
                row["saved_MiB"] = round(case.saved_bytes[provider]()() / 2**20, 3)
        except Exception as exc:  # one failing provider must not hide the others
            row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            if os.environ.get("FASTT2I_BENCH_TRACE"):
                traceback.print_exc()
        rows.append(row)
    by_provider = {r["provider"]: r for r in rows}
    rounds: dict[str, list[tuple[float, float, float]]] = {p: [] for p in fns}
    for _ in range(max(1, repeat)):
        for provider, fn in list(fns.items()):
            try:
                rounds[provider].append(time_fn(fn, device))
            except Exception as exc:
                by_provider[provider]["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                del fns[provider]
    for provider, times in rounds.items():
        if provider not in fns or not times:
            continue
        row = by_provider[provider]
        row.update(ms=statistics.median(t[0] for t in times), ms_p20=statistics.median(t[1] for t in times),
                   ms_p80=statistics.median(t[2] for t in times), rounds=len(times))
        med = row["ms"]
        if case.bytes:
            row["GBps"] = case.bytes / (med * 1e-3) / 1e9
            row["pct_peak_bw"] = 100 * row["GBps"] / peaks["copy_GBps"]
        if case.flops:
            row["TFLOPs"] = case.flops / (med * 1e-3) / 1e12
            row["pct_peak_flops"] = 100 * row["TFLOPs"] / peaks["matmul_TFLOPs"]
        if case.items:
            row["items_per_s"] = case.items / (med * 1e-3)
    for provider in fns:
        row = by_provider[provider]
        for ref in ("eager", "compile", "official"):
            if ref in fns:
                ratios = [r[0] / p[0] for r, p in zip(rounds[ref], rounds[provider])]
                row[f"x_vs_{ref}"] = statistics.median(ratios)
    fns.clear()
    if device == "cuda":
        torch.cuda.empty_cache()
    return rows


def format_table(rows: list[dict]) -> str:
    cols = [("op", "op"), ("case", "case"), ("mode", "mode"), ("provider", "provider"), ("ms", "ms"),
            ("x_vs_eager", "x eager"), ("x_vs_compile", "x compile"), ("x_vs_official", "x official"),
            ("GBps", "GB/s"), ("pct_peak_bw", "% bw"), ("TFLOPs", "TFLOP/s"), ("items_per_s", "items/s"),
            ("peak_MiB", "peak MiB"), ("saved_MiB", "saved MiB")]
    used = [(k, h) for k, h in cols if any(k in r for r in rows)]

    def fmt(v):
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in used) + " |", "|" + "---|" * len(used)]
    for r in rows:
        cells = [fmt(r.get(k)) for k, _ in used]
        if "error" in r:
            cells[-1] = "error: " + r["error"][:80]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def git_commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        # results written by an earlier level of the same run do not make the measured code dirty
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude)benchmarks/results"], cwd=root, capture_output=True, text=True).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "") if out.returncode == 0 else "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the cases marked quick (the demo)")
    parser.add_argument("--ops", default="", help="comma-separated bench module names (df_affine,...)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="directory for JSON + Markdown results (none: print only)")
    parser.add_argument("--cases", default="", help="only cases whose name contains one of these (comma-separated)")
    parser.add_argument("--providers", default="",
                        help="only these providers (comma-separated, e.g. eager,cpu: torch.compile'd code aborts "
                             "in glibc malloc at the AVX512 level on the development machine)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved timing rounds per case (medians of the rounds; default 3)")
    parser.add_argument("--cpu-capability", choices=["default", "avx2", "avx512"], default=None,
                        help="run at this ATen CPU level (sets ATEN_CPU_CAPABILITY: eager, torch.compile and "
                             "fastt2i's CPU kernels alike)")
    args = parser.parse_args(argv)
    if args.cpu_capability and os.environ.get("ATEN_CPU_CAPABILITY") != args.cpu_capability:
        # ATen reads the level once per process: start again with it set.
        env = dict(os.environ, ATEN_CPU_CAPABILITY=args.cpu_capability)
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache_for_level(os.environ, args.cpu_capability)
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, "-m", "benchmarks.run",
                                   *(sys.argv[1:] if argv is None else argv)], env)
    name_filter = [s.strip() for s in args.cases.split(",") if s.strip()]
    device = args.device
    only = {s.strip() for s in args.ops.split(",") if s.strip()} or None
    providers = {s.strip() for s in args.providers.split(",") if s.strip()}

    if device == "cpu" and "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        level = os.environ.get("ATEN_CPU_CAPABILITY") or torch.backends.cpu.get_cpu_capability()
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache_for_level(os.environ, level)
    facts = device_facts(device)
    peaks = measured_peaks(device)
    if device == "cpu":
        print(f"CPU level: ATen {facts.get('aten_cpu_capability')}, fastt2i kernels "
              f"{facts.get('fastt2i_cpu_capability', 'not built')}; {facts.get('threads')} threads", flush=True)
    print(f"device: {facts.get('name')} ({device}); measured peak: copy {peaks['copy_GBps']} GB/s, "
          f"{peaks['matmul_dtype']} matmul {peaks['matmul_TFLOPs']} TFLOP/s", flush=True)
    rows = []
    for module in discover(only):
        for case in module.cases(device, args.quick):
            if args.quick and not case.quick:
                continue
            if name_filter and not any(f in case.name for f in name_filter):
                continue
            if providers:
                case.providers = {k: v for k, v in case.providers.items() if k in providers}
            print(f"  {case.op}: {case.name} [{case.mode}]", flush=True)
            rows.extend(run_case(case, device, peaks, args.repeat))
    table = format_table(rows)
    print(table)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc)
        commit = git_commit()
        tag = (facts.get("name") or device).replace(" ", "-").replace("/", "-")
        level = f"-{facts['aten_cpu_capability'].lower()}" if "aten_cpu_capability" in facts else ""
        base = os.path.join(args.out, f"{tag}{level}-{stamp:%Y-%m-%d}{'-quick' if args.quick else ''}")
        if device == "cpu" and _COMPILE_STATUS:
            facts["compile"] = "available" if _COMPILE_STATUS[0] is None else f"unavailable: {_COMPILE_STATUS[0]}"
        if device == "cpu":
            facts["load_average_at_end"] = [round(v, 1) for v in os.getloadavg()]
        record = {"date": stamp.isoformat(timespec="seconds"), "commit": commit, "facts": facts,
                  "peaks": peaks, "rows": rows}
        with open(base + ".json", "w") as f:
            json.dump(record, f, indent=1, default=lambda v: None if isinstance(v, float) and math.isnan(v) else v)
        with open(base + ".md", "w") as f:
            f.write(f"# Benchmarks {stamp:%Y-%m-%d %H:%M} UTC, commit {commit}\n\n")
            f.write(f"Device: {facts.get('name')} ({device}), torch {facts['torch']}; measured peak copy "
                    f"{peaks['copy_GBps']} GB/s, {peaks['matmul_dtype']} matmul {peaks['matmul_TFLOPs']} TFLOP/s.\n\n")
            if "aten_cpu_capability" in facts:
                f.write(f"CPU: {facts.get('cpu_model', '?')}, {facts.get('threads')} threads; CPU level "
                        f"{facts['aten_cpu_capability']} (ATen: eager and torch.compile), fastt2i kernels at "
                        f"{facts.get('fastt2i_cpu_capability', 'n/a')} (built: "
                        f"{facts.get('fastt2i_cpu_levels_built', 'n/a')}); {args.repeat} interleaved rounds "
                        f"per case, medians; torch.compile {facts.get('compile', 'not run')}.\n\n")
            f.write(table + "\n")
        print(f"wrote {base}.json and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
