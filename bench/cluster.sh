#!/usr/bin/env bash
# Cluster figures of BENCHMARKS.md (issue 11): the same scenarios on three setups:
#   a-single   one tidings node on its redb file (no NATS)
#   b-1node    3 NATS servers (JetStream, R3) + 1 tidings node
#   c-3nodes   3 NATS servers + 3 tidings nodes (clients spread over the nodes)
# Each setup starts its NATS servers on a fresh store; each scenario starts its tidings nodes
# on fresh files and, in a cluster, a stream of its own.
# Scenarios: ingest at C=1 and C=50, a fan-out sweep (receivers spread over the nodes, the
# sender on node 1), a replay of N messages stored through node 1 (in c, read from node 3),
# and in c the catch-up of a restarted node: node 3 is stopped, N messages are stored through
# node 1, node 3 is started again and timed until it has applied all of them.
#
# Needs built release binaries (cargo build --release --workspace --bins) and nats-server.
# Each scenario's output is kept under $OUT (default target/bench-results/cluster-DATE), its
# JSON line in SETUP-SCENARIO.json and in results.jsonl. CPU and memory figures are the sum of
# every process of the setup, each process's share as .p1, .p2, ...: the tidings nodes first,
# then nats-1..3 (processes.txt says which is which).
#
# Sizes (env): M1=2000 (messages per client at C=1), M50=200 (at C=50), N=100000 (replay and
# catch-up), RECEIVERS=500, RATES=50,200,800, DURATION=10 (seconds per rate),
# OVERLOAD_RATE=800 and OVERLOAD_DRAIN=180 (the overload scenario: a fan-out at a rate the
# cluster setups cannot keep up with on 2 cores, then up to DRAIN seconds for every ack and
# delivery to arrive, to tell late from lost; OVERLOAD_RATE=0 skips it). QUICK=1: tiny
# sizes, a smoke run of under a minute. The full run takes about 10 minutes on 2 cores. Also TIDINGS_BIN, BENCH, OUT, KEEP=1 (keep
# the scratch folder), NATS_PORT_BASE=14220 (NATS listens on BASE+1..3, routes on BASE+11..13,
# monitoring on BASE+21..23; the tidings nodes take free ports).
#
# A scenario that fails does not stop the others; the script then exits 1 naming them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
target="${CARGO_TARGET_DIR:-target}"
tidings="${TIDINGS_BIN:-$target/release/tidings}"
bench="${BENCH:-$target/release/tidings-bench}"
out="${OUT:-$target/bench-results/cluster-$(date +%Y%m%d-%H%M%S)}"
if [ "${QUICK:-0}" = 1 ]; then
  M1="${M1:-100}" M50="${M50:-10}" N="${N:-2000}"
  RECEIVERS="${RECEIVERS:-50}" RATES="${RATES:-50,200}" DURATION="${DURATION:-2}"
  OVERLOAD_RATE="${OVERLOAD_RATE:-400}" OVERLOAD_DRAIN="${OVERLOAD_DRAIN:-30}"
else
  M1="${M1:-2000}" M50="${M50:-200}" N="${N:-100000}"
  RECEIVERS="${RECEIVERS:-500}" RATES="${RATES:-50,200,800}" DURATION="${DURATION:-10}"
  OVERLOAD_RATE="${OVERLOAD_RATE:-800}" OVERLOAD_DRAIN="${OVERLOAD_DRAIN:-180}"
fi
port_base="${NATS_PORT_BASE:-14220}"
for bin in "$tidings" "$bench"; do
  [ -x "$bin" ] || { echo "$bin not found: cargo build --release --workspace --bins" >&2; exit 1; }
done
command -v nats-server >/dev/null || { echo "nats-server not found" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl not found" >&2; exit 1; }
mkdir -p "$out"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/tidings-cluster-bench.XXXXXX")"
# The bench raises its own open-file limit; the servers started here inherit the shell's.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# The bench's traffic is far above a chat user's: no per-connection rate limit.
export TIDINGS_RATE_LIMIT=0

# Every process started here, by pid: stopped on exit whatever happens.
started=()
cleanup() {
  local pid
  for pid in "${started[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "kept $scratch" >&2
  else
    rm -rf "$scratch"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
# Arithmetic on decimals (bash has integers only): calc "EXPRESSION".
calc() { awk "BEGIN { printf \"%.3f\", $1 }"; }

# Stops one process started here (SIGTERM: a graceful shutdown) and waits for it.
stop() {
  local pid="$1" left=()
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  for p in "${started[@]}"; do
    [ "$p" = "$pid" ] || left+=("$p")
  done
  started=("${left[@]}")
}

# Polls until command "$@" succeeds, failing after 60 s or when process $pid is gone.
wait_for() {
  local what="$1" pid="$2"; shift 2
  local deadline=$((SECONDS + 60))
  until "$@"; do
    kill -0 "$pid" 2>/dev/null || { echo "$what: the process exited" >&2; return 1; }
    [ "$SECONDS" -lt "$deadline" ] || { echo "$what: not ready within 60 s" >&2; return 1; }
    sleep 0.05
  done
}

healthy() { curl -sf -o /dev/null "$1/healthz"; }
# The lastId a tidings node reports on /healthz (also while it is not ready).
last_id() { curl -s "$1/healthz" | grep -o '"lastId":[0-9]*' | cut -d: -f2; }

# Starts the 3 NATS servers of examples/cluster for setup $1 on a fresh store and other ports
# (the example listens on 4221-4223, routes on 6221-6223, monitoring on 8221-8223).
nats_urls="" nats_pids=()
start_nats() {
  local dir="$scratch/nats-$1" n m urls=() ports=()
  mkdir -p "$dir"
  for m in 1 2 3; do
    ports+=(-e "s|:422$m\b|:$((port_base + m))|g" -e "s|:622$m\b|:$((port_base + 10 + m))|g"
      -e "s|:822$m\b|:$((port_base + 20 + m))|g")
  done
  nats_pids=()
  for n in 1 2 3; do
    sed -e "s|store_dir: .*|store_dir: \"$dir/store-$n\"|" "${ports[@]}" \
      "examples/cluster/nats-$n.conf" >"$dir/nats-$n.conf"
    nats-server -c "$dir/nats-$n.conf" >"$dir/nats-$n.log" 2>&1 &
    started+=($!)
    nats_pids+=($!)
    urls+=("nats://127.0.0.1:$((port_base + n))")
  done
  for n in 1 2 3; do
    wait_for "nats-$n" "${nats_pids[n - 1]}" healthy "http://127.0.0.1:$((port_base + 20 + n))"
  done
  nats_urls="$(IFS=,; echo "${urls[*]}")"
}

stop_nats() {
  local pid
  for pid in "${nats_pids[@]}"; do
    stop "$pid"
  done
  nats_pids=() nats_urls=""
}

# Starts tidings node $1 on file $2 (cluster flags after), waits until it listens and is
# ready; sets node_pid and node_url.
node_pid="" node_url=""
start_node() {
  local name="$1" db="$2"; shift 2
  local log="$scratch/$name.out"
  # TIDINGS_ARGS: extra flags for every node, split on spaces.
  # shellcheck disable=SC2086
  "$tidings" --host 127.0.0.1 --port 0 --db "$db" ${TIDINGS_ARGS:-} "$@" \
    >"$log" 2>"$scratch/$name.log" &
  node_pid=$!
  started+=("$node_pid")
  wait_for "$name" "$node_pid" grep -qs "listening on http://" "$log"
  node_url="$(grep -o 'http://[0-9.:]*' "$log" | head -n 1)"
  wait_for "$name /healthz" "$node_pid" healthy "$node_url"
}

# Starts setup $1 (a-single, b-1node, c-3nodes) for scenario $2 on fresh files and a fresh
# stream; sets urls and pids (comma-separated) for the bench.
node_pids=() node_urls=() stream=""
start_setup() {
  local setup="$1" scenario="$2" count=1 n
  stream="$(echo "${setup}_$scenario" | tr 'a-z-' 'A-Z_')"
  node_pids=() node_urls=()
  [ "$setup" = c-3nodes ] && count=3
  for n in $(seq 1 "$count"); do
    local db="$scratch/$setup-$scenario-node-$n.redb"
    if [ "$setup" = a-single ]; then
      start_node "$setup-$scenario-node-$n" "$db"
    else
      start_node "$setup-$scenario-node-$n" "$db" --cluster "$nats_urls" --replicas 3 \
        --stream "$stream" --node-name "node-$n"
    fi
    node_pids+=("$node_pid")
    node_urls+=("$node_url")
  done
  urls="$(IFS=,; echo "${node_urls[*]}")"
  if [ "$setup" = a-single ]; then
    pids="$(IFS=,; echo "${node_pids[*]}")"
  else
    pids="$(IFS=,; echo "${node_pids[*]},${nats_pids[*]}")"
  fi
}

stop_setup() {
  local pid
  for pid in "${node_pids[@]}"; do
    stop "$pid"
  done
}

failed=()
# Runs the bench as `run SETUP NAME ARGS...`, keeping its output and its JSON line.
run() {
  local setup="$1" name="$2"; shift 2
  local file="$out/$setup-$name"
  echo "=== $setup $name: tidings-bench $*" | tee "$file.txt" >&2
  local status=0
  "$bench" "$@" | tee -a "$file.txt" || status=$?
  # The JSON line is kept whatever the outcome (a failed run's lists its problems).
  if tail -n 1 "$file.txt" | grep '^{' >"$file.json"; then
    echo "{\"setup\":\"$setup\",\"run\":\"$name\",\"result\":$(cat "$file.json")}" \
      >>"$out/results.jsonl"
  fi
  if [ "$status" -ne 0 ]; then
    echo "($setup $name FAILED: exit status $status)" | tee -a "$file.txt" >&2
    failed+=("$setup/$name")
  fi
}

# One scenario on a fresh start of the setup.
scenario() {
  local setup="$1" name="$2"; shift 2
  start_setup "$setup" "$name"
  run "$setup" "$name" "$@" --url "$urls" --server-pid "$pids"
  stop_setup
}

# Node 3 of c-3nodes stops, N messages are stored through node 1, node 3 starts again on its
# file: the time until it has applied them all (and until /healthz says ready).
catch_up() {
  local setup=c-3nodes
  start_setup "$setup" catchup
  local db="$scratch/$setup-catchup-node-3.redb"
  local before
  before="$(last_id "${node_urls[2]}")"
  stop "${node_pids[2]}"
  unset 'node_pids[2]'
  # The replay scenario without replays: it stores N messages and reports its rate.
  run "$setup" catchup-store replay -n "$N" --runs 0 --recent-runs 0 \
    --url "${node_urls[0]}" --server-pid "${node_pids[0]}"
  local end
  end="$(last_id "${node_urls[0]}")"
  if [ -z "$before" ] || [ -z "$end" ]; then
    echo "catch-up: no lastId on /healthz (node 3 before: '$before', node 1: '$end')" >&2
    failed+=("$setup/catchup")
    stop_setup
    return
  fi
  local log="$scratch/$setup-catchup-node-3-again.out" t0 pid url="" listening="" ready=""
  t0="$(now)"
  # shellcheck disable=SC2086
  "$tidings" --host 127.0.0.1 --port 0 --db "$db" ${TIDINGS_ARGS:-} --cluster "$nats_urls" \
    --replicas 3 --stream "$stream" --node-name node-3 \
    >"$log" 2>"$scratch/$setup-catchup-node-3-again.log" &
  pid=$!
  started+=("$pid")
  node_pids[2]="$pid"
  local deadline=$((SECONDS + 300)) applied=0 caught="" cpu_s="null"
  while [ "$SECONDS" -lt "$deadline" ]; do
    kill -0 "$pid" 2>/dev/null || { echo "node 3 exited while catching up" >&2; break; }
    if [ -z "$url" ] && grep -qs "listening on http://" "$log"; then
      listening="$(now)"
      url="$(grep -o 'http://[0-9.:]*' "$log" | head -n 1)"
    fi
    if [ -n "$url" ]; then
      local is_ready=0
      healthy "$url" && is_ready=1
      applied="$(last_id "$url")"
      applied="${applied:-0}"
      # One time for both checks: what they saw happened since the previous poll.
      local t
      t="$(now)"
      if [ -z "$ready" ] && [ "$is_ready" = 1 ]; then
        ready="$t"
      fi
      if [ -z "$caught" ] && [ "$applied" -ge "$end" ]; then
        caught="$t"
        # The node's CPU since it started: utime + stime (fields 14 and 15 of its stat).
        cpu_s="$(awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' \
          "/proc/$pid/stat" 2>/dev/null || echo null)"
        # Readiness follows within a probe (a second); wait for it a little, not forever.
        deadline=$((SECONDS + 10))
      fi
      [ -n "$caught" ] && [ -n "$ready" ] && break
    fi
    sleep 0.05
  done
  local file="$out/$setup-catchup"
  if [ -z "$caught" ]; then
    echo "node 3 did not catch up: applied $applied of $end" | tee "$file.txt" >&2
    failed+=("$setup/catchup")
  else
    local missed=$((end - before))
    local json
    json="$(printf '{"scenario":"catchup","messages":%s,"last_id":%s,"listening_s":%s,"caught_up_s":%s,"ready_s":%s,"catch_up_msgs_per_s":%s,"catch_up_msgs_per_s_after_listening":%s,"node_cpu_s":%s,"node_cpu_us_per_msg":%s}' \
      "$missed" "$end" \
      "$(calc "$listening - $t0")" "$(calc "$caught - $t0")" \
      "$([ -n "$ready" ] && calc "$ready - $t0" || echo null)" \
      "$(calc "$missed / ($caught - $t0)")" \
      "$(calc "$missed / ($caught - $listening)")" \
      "$cpu_s" "$([ "$cpu_s" = null ] && echo null || calc "$cpu_s * 1e6 / $missed")")"
    {
      echo "== catch-up of node 3: $missed messages (ids $((before + 1))..$end)"
      echo "   from start to listening     $(calc "$listening - $t0") s"
      echo "   from start to all applied   $(calc "$caught - $t0") s"
      echo "   from start to /healthz 200  $([ -n "$ready" ] && calc "$ready - $t0" || echo never) s"
      echo "   catch-up rate               $(calc "$missed / ($caught - $t0)") msg/s"
      echo "   node CPU since its start    $cpu_s s"
      echo "$json"
    } | tee "$file.txt"
    echo "$json" >"$file.json"
    echo "{\"setup\":\"$setup\",\"run\":\"catchup\",\"result\":$json}" >>"$out/results.jsonl"
  fi
  stop_setup
}

echo "sizes: M1=$M1 M50=$M50 N=$N RECEIVERS=$RECEIVERS RATES=$RATES DURATION=$DURATION" \
  "OVERLOAD_RATE=$OVERLOAD_RATE OVERLOAD_DRAIN=$OVERLOAD_DRAIN" \
  | tee "$out/sizes.txt" >&2
for setup in a-single b-1node c-3nodes; do
  if [ "$setup" != a-single ]; then
    start_nats "$setup"
  fi
  case "$setup" in
    a-single) echo "a-single: p1 tidings" ;;
    b-1node) echo "b-1node: p1 tidings, p2-p4 nats-1..3" ;;
    c-3nodes) echo "c-3nodes: p1-p3 tidings node-1..3, p4-p6 nats-1..3" ;;
  esac >>"$out/processes.txt"
  replay_from=0
  [ "$setup" = c-3nodes ] && replay_from=2
  scenario "$setup" ingest-c1 ingest -c 1 -m "$M1"
  scenario "$setup" ingest-c50 ingest -c 50 -m "$M50"
  scenario "$setup" fanout fanout -r "$RECEIVERS" --rate "$RATES" --duration "$DURATION"
  if [ "$OVERLOAD_RATE" != 0 ]; then
    # Nothing may be lost, however late: the sweep's p99 limit does not apply.
    scenario "$setup" overload fanout -r "$RECEIVERS" --rate "$OVERLOAD_RATE" \
      --duration "$DURATION" --drain "$OVERLOAD_DRAIN" --stop-p99-ms 1e9
  fi
  scenario "$setup" replay replay -n "$N" --runs 3 --replay-from "$replay_from"
  if [ "$setup" = c-3nodes ]; then
    catch_up
  fi
  if [ "$setup" != a-single ]; then
    stop_nats
  fi
done
echo "results in $out" >&2
if [ "${#failed[@]}" -gt 0 ]; then
  echo "FAILED: ${failed[*]} (see their .txt files)" >&2
  exit 1
fi
