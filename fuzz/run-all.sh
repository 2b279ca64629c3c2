#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each, one after the other, with JOBS
# fuzzing processes per target (libFuzzer's -fork), at the lowest CPU priority; then prints
# the executions each reached. New inputs go to fuzz/corpus/<target>/ (minimize them before
# committing: cargo fuzz cmin), a failing input to fuzz/artifacts/<target>/; logs to
# fuzz/target/run-all/<target>.log. Exits non-zero if any target failed.
#
#   fuzz/run-all.sh [SECONDS] [JOBS] [TARGET...]      (defaults: 600 s, 1 job, every target)
#   RUNS=10000000 fuzz/run-all.sh 0 1 live             (one process until N executions instead)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
seconds=${1:-600}
jobs=${2:-1}
shift $(($# < 2 ? $# : 2))
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
  targets=("$@")
else
  # A failing or empty list must not pass as "nothing failed".
  list=$(cargo fuzz list)
  read -r -a targets <<<"$(echo $list)"
fi
[ ${#targets[@]} -gt 0 ] || { echo "no fuzz targets" >&2; exit 1; }

# Every target is built without a sanitizer: the crate forbids unsafe code, and the
# sanitizer's slowdown (3-4x on the store) buys little. The store target also goes without
# comparison tracing (half its speed; its inputs are operations, not magic values), in a
# target directory of its own so the two builds do not undo each other.
flags() {
  case "$1" in
    store) echo "--sanitizer none --no-trace-compares --target-dir target/no-trace-compares" ;;
    *) echo "--sanitizer none" ;;
  esac
}

mkdir -p target/run-all
summary=()
failed=0
for target in "${targets[@]}"; do
  log="target/run-all/$target.log"
  mkdir -p "corpus/$target"
  how="${seconds}s, $jobs job(s)"
  [ -z "${RUNS:-}" ] || how="until $RUNS executions, one process"
  echo "--- $target: $how, log in fuzz/$log"
  # shellcheck disable=SC2046
  nice -n 19 cargo fuzz build $(flags "$target") "$target"
  status=0
  # One process until RUNS executions (libFuzzer prints its count at the end), or JOBS
  # processes for SECONDS (each fork-mode progress line starts with the count: "#123: cov:").
  if [ -n "${RUNS:-}" ]; then
    mode=(-runs="$RUNS" -print_final_stats=1)
    count='s/^stat::number_of_executed_units: *//p'
  else
    mode=(-fork="$jobs" -max_total_time="$seconds")
    count='s/^#\([0-9]*\): .*/\1/p'
  fi
  # shellcheck disable=SC2046
  nice -n 19 cargo fuzz run $(flags "$target") "$target" "corpus/$target" -- \
    "${mode[@]}" -timeout=10 -rss_limit_mb=2048 >"$log" 2>&1 || status=$?
  execs=$(sed -n "$count" "$log" | tail -n 1)
  result=ok
  if [ "$status" -ne 0 ] && grep -q 'libFuzzer: run interrupted' "$log"; then
    # Stopped by a signal (SIGINT to the fuzzer prints its final stats): no failure found.
    result="interrupted (exit $status), no failure"
    failed=1
  elif [ "$status" -ne 0 ]; then
    result="FAILED (exit $status; see fuzz/$log and fuzz/artifacts/$target/)"
    failed=1
  fi
  summary+=("$(printf '%-8s %12s executions  %s' "$target" "${execs:-0}" "$result")")
  echo "${summary[-1]}"
done

echo
if [ -n "${RUNS:-}" ]; then
  echo "=== executions per target (one process each, until $RUNS executions)"
else
  echo "=== executions per target (${seconds}s each, $jobs job(s))"
fi
printf '%s\n' "${summary[@]}"
exit "$failed"
