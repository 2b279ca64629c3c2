#!/usr/bin/env bash
# Runs every figure of BENCHMARKS.md side by side (tidings vs the reference) and keeps each
# run's output under $OUT (default target/bench-results/DATE), with every JSON line in
# results.jsonl. About 60 minutes on a 2-core machine when nothing else runs; QUICK=1 makes a
# scaled-down smoke run (~8 minutes). The rooms scenarios run against our rooms extension of
# the tutorial server (bench/reference-rooms, TIDINGS_REFERENCE_ROOMS). Compare mode waits for a quiet machine before each run
# and repeats a run that other processes disturbed (see --quiet-wait and --retries).
#
# A scenario that fails (a correctness problem, a server that died, a bench error) does not
# stop the others, but the script then exits 1 naming every failed scenario. BENCH=path runs
# that tidings-bench binary instead of building one.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TIDINGS_REFERENCE="${TIDINGS_REFERENCE:-$PWD/../shared/reference/node-tutorial}"
target="${CARGO_TARGET_DIR:-target}"
out="${OUT:-$target/bench-results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"
if [ -n "${BENCH:-}" ]; then
  bench="$BENCH"
else
  cargo build --release --workspace --bins >&2
  bench="$target/release/tidings-bench"
fi
failed=()

run() {
  local name="$1"; shift
  echo "=== $name: tidings-bench $*" | tee "$out/$name.txt" >&2
  local status=0
  "$bench" "$@" | tee -a "$out/$name.txt" || status=$?
  # The JSON line is kept whatever the outcome (a failed run's lists its problems).
  tail -n 1 "$out/$name.txt" | grep '^{' >> "$out/results.jsonl" || true
  if [ "$status" -ne 0 ]; then
    echo "($name FAILED: exit status $status)" | tee -a "$out/$name.txt" >&2
    failed+=("$name")
  fi
}

if [ "${QUICK:-0}" = 1 ]; then
  run disk disk --count 500
  run ingest-c50 compare ingest -c 10 -m 50
  run ingest-c1 compare ingest -c 1 -m 500
  run fanout compare fanout -r 100 --rate 50,200 --duration 3
  run replay compare replay -n 5000 --runs 2 --recent-runs 5
  run idle compare idle --conns 500,1000 --hold 5
  run startup compare startup -n 20000 --reference-messages 2000 --runs 3
  run ingest-shared compare --only ours ingest -c 10 -m 50 --offsets shared
  run connect-storm compare --only ours connect-storm --conns 500 --probes 20
  run rooms compare rooms --conns 200 --room-size 10 --rate 100 --single-room 50 --duration 3 --idle 1
  run room-replay compare room-replay -n 5000 --rooms 10 --runs 2
  run room-memory compare room-memory --conns 500 --settle 1
else
  run disk disk
  run ingest-c50 compare ingest -c 50 -m 100
  run ingest-c50-long compare ingest -c 50 -m 1000
  run ingest-c1 compare ingest -c 1 -m 5000
  run fanout-50 compare fanout -r 500 --rate 50 --duration 20
  run fanout-sweep compare fanout -r 500 --rate 50,100,200,400,800,1600 --duration 10
  run replay compare replay -n 100000 --runs 5
  run idle compare idle --conns 2000,10000,19900 --hold 30
  run startup compare startup -n 1000000 --reference-messages 20000 --runs 5
  run ingest-shared compare --only ours ingest -c 20 -m 1000 --offsets shared --timeout 300
  run ingest-fresh compare --only ours ingest -c 20 -m 1000 --offsets fresh
  run connect-storm-1000 compare --only ours connect-storm --conns 1000
  run connect-storm compare --only ours connect-storm --conns 10000
  # Rooms (issue 28): the reference is our rooms extension of the tutorial (bench/reference-rooms).
  run rooms compare rooms --conns 10000 --room-size 10 --rate 1000 --single-room 500
  run rooms-sweep compare rooms --conns 10000 --room-size 10 --rate 250,500,1000 --single-room 500 --no-small-room
  run room-replay compare --only ours room-replay -n 1000000 --rooms 100 --runs 5
  run room-replay-both compare room-replay -n 100000 --rooms 100 --runs 5
  run room-memory compare room-memory --conns 10000
fi
echo "results in $out" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED scenarios: ${failed[*]} (see their .txt files)" >&2
  exit 1
fi
