#!/usr/bin/env bash
# Three NATS servers and three tidings nodes on this machine (see README, "Running a cluster").
# Run from the repository root after `cargo build --release`:
#
#   examples/cluster/run.sh          # Ctrl-C stops everything
#
# Nodes: http://127.0.0.1:3001, :3002, :3003. Data under examples/cluster/data/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="${TIDINGS_BIN:-$here/../../target/release/tidings}"
mkdir -p "$here/data"
cd "$here"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for n in 1 2 3; do
  nats-server -c "nats-$n.conf" >"data/nats-$n.log" 2>&1 &
  pids+=($!)
done
sleep 2
urls=nats://127.0.0.1:4221,nats://127.0.0.1:4222,nats://127.0.0.1:4223
for n in 1 2 3; do
  "$bin" --port "300$n" --db "data/node-$n.redb" --cluster "$urls" --node-name "node-$n" &
  pids+=($!)
done
wait
