#!/usr/bin/env bash
# How long a socket waits to join the live set while the broadcaster passes over many live
# sockets (issue 12, defect 8; BENCHMARKS.md "Joining a large live set"). Starts BIN on a free
# port with a fresh database, holds CONNS idle connections (every one is live and receives
# every message), then runs ROUNDS fan-out rounds (RECEIVERS new receivers join, one sender
# sends RATE msg/s for SECONDS_PER_ROUND), each started halfway through the previous one's sending, so
# its receivers join while passes over CONNS+ sockets run. Prints the server's
# tidings_live_join_seconds and tidings_live_pass_seconds histograms, taken before the rounds
# (the idle connections' own joins, with nothing to pass) and after them.
#
#   bench/join-latency.sh BIN [CONNS] [ROUNDS]
#   env: RATE=20 SECONDS_PER_ROUND=10 RECEIVERS=20 BENCH=target/release/tidings-bench
#
# Every loop is bounded: the idle holder stops after its hold, each round after SECONDS_PER_ROUND plus
# its drain, and the server is stopped by its pid on exit.
set -euo pipefail
bin="$1"
conns="${2:-19000}"
rounds="${3:-5}"
rate="${RATE:-20}"
seconds="${SECONDS_PER_ROUND:-10}"
receivers="${RECEIVERS:-20}"
bench="${BENCH:-$(dirname "${BASH_SOURCE[0]}")/../target/release/tidings-bench}"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"

TIDINGS_RATE_LIMIT=0 "$bin" --host 127.0.0.1 --port "$port" --db "$dir/join.redb" \
  >"$dir/stdout" 2>"$dir/server.log" &
server=$!
holder=""
cleanup() {
  [ -n "$holder" ] && kill "$holder" 2>/dev/null || true
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 1 100); do grep -q listening "$dir/stdout" && break; sleep 0.1; done
grep -q listening "$dir/stdout" || { cat "$dir/server.log"; echo "server did not start"; exit 1; }

# Hold the idle connections for as long as the rounds take, plus a margin.
hold=$(( rounds * (seconds + 15) + 30 ))
"$bench" idle --url "$url" --server-pid "$server" --conns "$conns" --settle 5 --hold "$hold" \
  >"$dir/idle.out" 2>"$dir/idle.err" &
holder=$!
for _ in $(seq 1 300); do
  held=$(ls /proc/"$server"/fd | wc -l)
  [ "$held" -ge "$conns" ] && break
  sleep 1
done
echo "server holds $(ls /proc/"$server"/fd | wc -l) open files; running $rounds rounds" >&2
sleep 5
echo "before the rounds:"
curl -s "$url/metrics" | grep -E '^tidings_live_(join|pass)_seconds_(sum|count)|^tidings_connections '
# A first sender, so that the first round's receivers join during passes too.
"$bench" fanout --url "$url" -r 1 --rate "$rate" --duration $(( seconds / 2 + 2 )) \
  >"$dir/fanout-0.out" 2>&1 &
rounds_running=($!)
sleep $(( seconds / 2 ))
for round in $(seq 1 "$rounds"); do
  "$bench" fanout --url "$url" -r "$receivers" --rate "$rate" --duration "$seconds" \
    >"$dir/fanout-$round.out" 2>&1 &
  rounds_running+=($!)
  sleep $(( seconds / 2 ))
done
failed=0
for pid in "${rounds_running[@]}"; do wait "$pid" || failed=1; done
grep -h "PROBLEM" "$dir"/fanout-*.out || true
[ "$failed" = 0 ] || { tail -n 20 "$dir"/fanout-*.out; echo "a fan-out round failed"; exit 1; }
echo "after $rounds rounds:"
curl -s "$url/metrics" | grep -E '^tidings_live_(join|pass)_seconds|^tidings_connections '
