#!/usr/bin/env bash
# Builds the benchmarks (preset `benchmarks`: Release, no sanitizers) and runs every suite with
# repetitions, printing each suite's crosstown-vs-baseline summary (medians). Results go to
# build/benchmarks/results/: summary.txt (the ratios) and <suite>.json (every repetition).
#
#   benchmarks/run.sh [repetitions] [extra Google Benchmark flags...]
#
# The machine should be otherwise idle: the suites compare ratios, but a compile running
# beside them still skews the threaded suites more than the single-threaded ones.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
repetitions="${1:-5}"
shift || true

cd "$root"
cmake --preset benchmarks >/dev/null
cmake --build --preset benchmarks

bin="$root/build/benchmarks/benchmarks"
out="$root/build/benchmarks/results"
mkdir -p "$out"
: >"$out/summary.txt"
{
  echo "crosstown benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD)$(git diff --quiet || echo '+dirty')"
  echo "$(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); repetitions $repetitions"
} >>"$out/summary.txt"

# Suite 4 writes its latency samples here; the plot below is drawn from them.
export CROSSTOWN_LATENCY_CSV="$out/latency"
for suite in registration dispatch first_task memory no_drag simulator io_deferral; do
  extra=()
  # Interleaving spreads a busy spell of the machine over suite 4's variants.
  [ "$suite" = no_drag ] && extra=(--benchmark_enable_random_interleaving=true)
  "$bin/$suite" \
    --benchmark_repetitions="$repetitions" \
    --benchmark_report_aggregates_only=true \
    --benchmark_out="$out/$suite.json" --benchmark_out_format=json \
    --crosstown_summary="$out/summary.txt" \
    "${extra[@]}" "$@"
done

python3 "$root/benchmarks/plot_latency.py" "$out/latency" --json "$out/no_drag.json" \
  -o "$out/no_drag_latency.svg" --rate-output "$out/no_drag_rate_latency.svg" \
  --summary "$out/no_drag.txt"

echo
echo "summary: $out/summary.txt"
cat "$out/summary.txt"
