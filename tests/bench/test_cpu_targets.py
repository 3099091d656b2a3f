"""The benchmark tooling that writes the committed results: merging per-op result files and the
per-level targets tables of issue 10 (what counts as met, what is left out, the README rewrite)."""
import json
import os

from benchmarks import cpu_targets, merge_results


def _row(op, case, mode, provider, ms, x_eager=None, x_compile=None, **extra):
    row = {"op": op, "case": case, "mode": mode, "provider": provider, "ms": ms}
    if x_eager is not None:
        row["x_vs_eager"] = x_eager
    if x_compile is not None:
        row["x_vs_compile"] = x_compile
    row.update(extra)
    return row


def _record(level, date, rows, commit="abc1234"):
    facts = {"aten_cpu_capability": level, "fastt2i_cpu_capability": level, "cpu_model": "Test CPU",
             "threads": 2, "torch": "2.x", "load_average_at_start": [1, 1, 1], "load_average_at_end": [2, 2, 2]}
    return {"date": date, "commit": commit, "facts": facts, "peaks": {"copy_GBps": 40.0}, "rows": rows}


ROWS = [
    _row("df_affine", "G 32", "forward", "eager", 2.0),
    _row("df_affine", "G 32", "forward", "compile", 1.0),
    _row("df_affine", "G 32", "forward", "cpu", 0.5, x_eager=4.0, x_compile=2.0, GBps=10.0),
    _row("bias_leaky_relu", "D 64", "forward", "cpu", 1.0, x_eager=1.5, x_compile=0.9),
    _row("gate_split", "SDM", "forward", "cpu", 1.0, x_eager=2.5),  # no compile row: one target only
    _row("call_cost", "1 element", "forward", "cpu", 0.004, x_eager=0.3),  # not a kernel target
    _row("dfgan_step", "DF-GAN demo", "step", "cpu", 60.0, x_eager=1.31),
    _row("dfgan_step", "DF-GAN demo", "step", "eager", 80.0),
]


def test_table_counts_targets_per_op(tmp_path):
    path = tmp_path / "x86_64-avx2-2026-01-02.json"
    path.write_text(json.dumps(_record("AVX2", "2026-01-02T10:00:00", ROWS)))
    text, met, missed, per_op = cpu_targets.table(str(path))
    # df_affine: both met; bias_leaky_relu: both missed; gate_split: its one target met
    assert (met, missed) == (3, 2)
    assert per_op["df_affine"] == [2, 2] and per_op["bias_leaky_relu"] == [0, 2] and per_op["gate_split"] == [1, 1]
    assert per_op["dfgan_step [cpu]"] == [1, 1]
    assert "call_cost" not in per_op and "call_cost" not in text
    assert "| df_affine | G 32 | forward | 0.5 | 4.00x | 2.00x | 10 / - / - | met | met |" in text
    assert "| bias_leaky_relu | D 64 | forward | 1 | 1.50x | 0.90x |  | MISSED | MISSED |" in text


def test_newest_file_per_level_and_readme_rewrite(tmp_path):
    for name, level, date in [("x86_64-avx2-2026-01-01", "AVX2", "2026-01-01T09:00:00"),
                              ("x86_64-avx2-2026-01-02", "AVX2", "2026-01-02T09:00:00"),
                              ("x86_64-avx512-2026-01-01", "AVX512", "2026-01-01T09:00:00"),
                              ("x86_64-avx2-2026-01-02-gate-split", "AVX2", "2026-01-03T09:00:00")]:
        (tmp_path / f"{name}.json").write_text(json.dumps(_record(level, date, ROWS)))
    newest = [os.path.basename(p) for p in cpu_targets.newest_per_level(str(tmp_path))]
    assert newest == ["x86_64-avx2-2026-01-02.json", "x86_64-avx512-2026-01-01.json"]  # suffixed files skipped

    readme = tmp_path / "README.md"
    readme.write_text(f"# Results\n\nbefore\n\n{cpu_targets.BEGIN}\nstale table\n{cpu_targets.END}\n\nafter\n")
    cpu_targets.write_readme(str(readme), str(tmp_path))
    text = readme.read_text()
    assert "stale table" not in text and text.startswith("# Results\n\nbefore") and text.rstrip().endswith("after")
    assert "| AVX2 | `x86_64-avx2-2026-01-02.json` | 3 | 2 |" in text
    assert "| df_affine | 2 / 2 | 2 / 2 |" in text
    cpu_targets.write_readme(str(readme), str(tmp_path))  # idempotent: one generated block
    assert readme.read_text() == text


def test_merge_keeps_every_row_and_the_load_of_each_part(tmp_path):
    parts = []
    for i, (op, rows) in enumerate([("df_affine", ROWS[:3]), ("bias_leaky_relu", ROWS[3:4])]):
        record = _record("AVX2", f"2026-01-02T10:0{i}:00", rows)
        record["facts"]["load_average_at_start"] = [i, i, i]
        record["facts"]["compile"] = "available"
        path = tmp_path / f"part{i}.json"
        path.write_text(json.dumps(record))
        parts.append(str(path))
    merge_results.merge(str(tmp_path / "merged"), parts)
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["rows"] == ROWS[:4]
    assert merged["date"] == "2026-01-02T10:00:00" and merged["date_end"] == "2026-01-02T10:01:00"
    assert [p[0] for p in merged["facts"]["load_averages_per_part"]] == ["df_affine", "bias_leaky_relu"]
    assert merged["facts"]["compile"] == "available"
    assert (tmp_path / "merged.md").read_text().startswith("# Benchmarks 2026-01-02T10:00:00")


def test_allocator_settings_are_recorded_per_op(tmp_path):
    parts = []
    for i, (op, rows, tunables) in enumerate([("df_affine", ROWS[:3], "glibc.malloc.mmap_threshold=1"),
                                               ("dfgan_step", ROWS[6:8], "")]):
        record = _record("AVX2", f"2026-01-02T10:0{i}:00", rows)
        record["facts"]["glibc_tunables"] = tunables
        path = tmp_path / f"part{i}.json"
        path.write_text(json.dumps(record))
        parts.append(str(path))
    merge_results.merge(str(tmp_path / "x86_64-avx2-2026-01-02"), parts)
    merged = json.loads((tmp_path / "x86_64-avx2-2026-01-02.json").read_text())
    assert merged["facts"]["glibc_tunables_per_part"] == [["df_affine", "glibc.malloc.mmap_threshold=1"],
                                                          ["dfgan_step", ""]]
    text = cpu_targets.table(str(tmp_path / "x86_64-avx2-2026-01-02.json"))[0]
    assert ("GLIBC_TUNABLES glibc.malloc.mmap_threshold=1 for df_affine; unset (glibc defaults) for dfgan_step"
            in text)
