"""Merges result files of several ``benchmarks.run`` processes (one per op, e.g. so that a crash of
one provider cannot lose a whole run) into one JSON + Markdown pair, in the runner's format.

    python -m benchmarks.merge_results OUT_BASE part1.json part2.json ...
"""
from __future__ import annotations

import json
import sys

from benchmarks.run import format_table


def merge(out_base: str, parts: list[str]) -> None:
    records = [json.load(open(p)) for p in parts]
    first = records[0]
    facts = dict(first["facts"])
    facts["load_average_at_start"] = first["facts"].get("load_average_at_start")
    facts["load_average_at_end"] = records[-1]["facts"].get("load_average_at_end")
    facts["load_averages_per_part"] = [(r["rows"][0]["op"] if r["rows"] else "?", r["facts"].get("load_average_at_start"),
                                        r["facts"].get("load_average_at_end")) for r in records]
    facts["glibc_tunables_per_part"] = [(r["rows"][0]["op"] if r["rows"] else "?", r["facts"].get("glibc_tunables", ""))
                                        for r in records]
    compile_status = sorted({r["facts"]["compile"] for r in records if "compile" in r["facts"]})
    if compile_status:
        facts["compile"] = "; ".join(compile_status)
    rows = [row for r in records for row in r["rows"]]
    record = {"date": first["date"], "date_end": records[-1]["date"], "commit": first["commit"], "facts": facts,
              "peaks": first["peaks"], "rows": rows}
    with open(out_base + ".json", "w") as f:
        json.dump(record, f, indent=1)
    peaks = first["peaks"]
    with open(out_base + ".md", "w") as f:
        f.write(f"# Benchmarks {first['date']} to {records[-1]['date']} (UTC), commit {first['commit']}\n\n")
        f.write(f"Device: {facts.get('cpu_model', facts.get('name'))}, {facts.get('threads')} threads, torch "
                f"{facts['torch']}; CPU level {facts.get('aten_cpu_capability')} (ATen: eager and torch.compile), "
                f"fastt2i kernels at {facts.get('fastt2i_cpu_capability')} (built: "
                f"{facts.get('fastt2i_cpu_levels_built')}); measured peak copy {peaks['copy_GBps']} GB/s.\n\n")
        f.write("Load average (1/5/15 min) at the start and end of each op's run: "
                + "; ".join(f"{op} {a} -> {b}" for op, a, b in facts["load_averages_per_part"]) + "\n\n")
        f.write(format_table(rows) + "\n")
    print(f"wrote {out_base}.json and .md")


if __name__ == "__main__":
    merge(sys.argv[1], sys.argv[2:])
