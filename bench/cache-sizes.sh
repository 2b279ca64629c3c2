#!/usr/bin/env bash
# The database cache's trade-off (BENCHMARKS.md, "The database cache"): the same scenarios
# against tidings at several --db-cache-mb sizes, each on a fresh database, with the size
# order reversed on every other repeat. Keeps each run's output under $OUT (default
# target/bench-results/cache-DATE) and every JSON line in results.jsonl (the size is in
# params.server_args). About 40 minutes on a 2-core machine when nothing else runs.
#
#   SIZES="0 4 16 32 64 256 1024"   sizes (MiB) for the runs on a fresh database
#   LARGE_SIZES="4 32 128 1024"     sizes for the runs on a 1M-message history (151 MB)
#   REPEATS=1                       rounds over the sizes
#   QUICK=1                         a scaled-down smoke run (~5 minutes)
#   QUIET_WAIT=600 RETRIES=2        how long each run waits for a quiet machine, and how
#                                   often a disturbed run is repeated
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
out="${OUT:-$target/bench-results/cache-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
cargo build --release --workspace --bins >&2
bench="$target/release/tidings-bench"
sizes="${SIZES:-0 4 16 32 64 256 1024}"
large_sizes="${LARGE_SIZES:-4 32 128 1024}"
repeats="${REPEATS:-1}"
if [ "${QUICK:-0}" = 1 ]; then
  sizes="${SIZES:-4 32 1024}"; large_sizes="${LARGE_SIZES:-4 1024}"
  n=20000; large=100000; first=20000; c1=500; c50=100
else
  n=100000; large=1000000; first=100000; c1=5000; c50=1000
fi

run() {
  local size="$1" name="$2"; shift 2
  local file="$out/$name-$size.txt"
  echo "=== $name at --db-cache-mb=$size: $*" | tee -a "$file" >&2
  "$bench" compare --only ours --quiet-wait "${QUIET_WAIT:-600}" --retries "${RETRIES:-2}" --ours-arg="--db-cache-mb=$size" "$@" | tee -a "$file" \
    || echo "($name at $size exited with $?)" | tee -a "$file"
  tail -n 1 "$file" | grep '^{' >> "$out/results.jsonl" || true
}

in_order() {
  # Sizes in the given order on even rounds, reversed on odd ones.
  if [ $(( $1 % 2 )) = 0 ]; then echo "$2"; else echo "$2" | tr ' ' '\n' | tac | tr '\n' ' '; fi
}

for round in $(seq 0 $((repeats - 1))); do
  for size in $(in_order "$round" "$sizes"); do
    run "$size" ingest-c1 ingest -c 1 -m "$c1"
    run "$size" ingest-c50 ingest -c 50 -m "$c50"
    run "$size" replay replay -n "$n" --runs 5 --recent-runs 20
    run "$size" history history -n "$n"
  done
  for size in $(in_order "$round" "$large_sizes"); do
    run "$size" large-replay replay -n "$large" --first "$first" --runs 3 --recent-runs 10
    run "$size" large-history history -n "$large"
    run "$size" large-ingest-c50 ingest --history "$large" -c 50 -m "$c50"
  done
done
echo "results in $out" >&2
