#!/usr/bin/env bash
# The CPU results files: every op at each CPU level given (default: avx2 default), one process per op
# (retried once if it dies: torch.compile'd code has aborted intermittently in glibc malloc on the
# development machine, with or without fastt2i), merged into
# benchmarks/results/<cpu>-<level>-<date>.{json,md}.
#   benchmarks/run_cpu_levels.sh [levels...]      e.g. benchmarks/run_cpu_levels.sh avx2 avx512
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
levels=("${@:-avx2 default}")
[ $# -eq 0 ] && levels=(avx2 default)
ops=(${FASTT2I_BENCH_OPS:-df_affine bias_leaky_relu word_region_attention damsm gradient_penalty gate_split dfgan_step})
for level in "${levels[@]}"; do
  tmp=$(mktemp -d)
  parts=()
  for op in "${ops[@]}"; do
    for attempt in 1 2; do
      rm -rf "$tmp/$op" && mkdir -p "$tmp/$op"
      if $PY -m benchmarks.run --device cpu --ops "$op" --repeat "${REPEAT:-3}" --cpu-capability "$level" \
          --out "$tmp/$op"; then
        break
      fi
      echo "benchmarks: $op at $level failed (attempt $attempt)" >&2
    done
    for f in "$tmp/$op"/*.json; do [ -e "$f" ] && parts+=("$f"); done
  done
  name=$(basename "${parts[0]}" .json)
  $PY -m benchmarks.merge_results "benchmarks/results/$name" "${parts[@]}"
  rm -rf "$tmp"
done
