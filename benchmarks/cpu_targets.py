"""The CPU targets of issue 10 checked against result files: every fused CPU kernel >= 2x eager and
not slower than torch.compile (forward and forward+backward, NCHW and channels_last), and the DF-GAN
demo step >= 1.3x the reference step.  Prints one Markdown table per file.

    python -m benchmarks.cpu_targets benchmarks/results/<cpu>-avx2-<date>.json ...
"""
from __future__ import annotations

import json
import sys

KERNEL_OPS = ("df_affine", "bias_leaky_relu", "word_region_attention", "damsm_word_loss", "gradient_penalty", "gate_split")


def _fmt(v):
    return "n/a" if v is None else f"{v:.2f}x"


def table(path: str) -> str:
    record = json.load(open(path))
    facts = record["facts"]
    lines = [f"### {facts.get('aten_cpu_capability', '?')} level: `{path.split('/')[-1]}`", "",
             f"fastt2i kernels at {facts.get('fastt2i_cpu_capability')}, {facts.get('threads')} threads, load "
             f"average {facts.get('load_average_at_start')} at the start, {facts.get('load_average_at_end')} at "
             "the end.", "",
             "| op | case | mode | cpu ms | x eager | x compile | >= 2x eager | >= compile |", "|---|---|---|---|---|---|---|---|"]
    met = missed = 0
    for row in record["rows"]:
        if row["provider"] != "cpu" or "ms" not in row:
            continue
        if row["op"] in KERNEL_OPS:
            xe, xc = row.get("x_vs_eager"), row.get("x_vs_compile")
            ok_e = xe is not None and xe >= 2.0
            ok_c = None if xc is None else xc >= 1.0
            met += ok_e + bool(ok_c)
            missed += (not ok_e) + (ok_c is False)
            lines.append(f"| {row['op']} | {row['case']} | {row['mode']} | {row['ms']:.3g} | {_fmt(xe)} | {_fmt(xc)} | "
                         f"{'met' if ok_e else 'MISSED'} | {'n/a' if ok_c is None else 'met' if ok_c else 'MISSED'} |")
        elif row["op"] == "dfgan_step":
            xe = row.get("x_vs_eager")
            ok = xe is not None and xe >= 1.3
            lines.append(f"| {row['op']} | {row['case']} | {row['mode']} (target 1.3x) | {row['ms']:.4g} | "
                         f"{_fmt(xe)} | | {'met' if ok else 'MISSED'} | |")
    lines += ["", f"{met} kernel targets met, {missed} missed."]
    return "\n".join(lines)


if __name__ == "__main__":
    print("\n\n".join(table(p) for p in sys.argv[1:]))
