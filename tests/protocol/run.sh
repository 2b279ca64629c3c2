#!/usr/bin/env bash
# Runs the official engine.io and socket.io protocol test suites (engine.io/, socket.io/; see
# README.md) against echo servers built on the vendored, patched engineioxide and socketioxide
# (servers/). Each server is started on a free loopback port, its suite is run against it,
# and the server is killed (by pid, also on any exit). Fails if any test of either suite
# failed, was skipped, or did not run.
#
#   tests/protocol/run.sh                  # both suites
#   tests/protocol/run.sh engine.io        # one of them
#
# Honours CARGO_TARGET_DIR (default: the repository's target/, as .ci/run builds). NPM_CI=0
# skips `npm ci` (the packages are installed already). Logs and mocha's JSON reports go to
# target/protocol/ (PROTOCOL_OUT to change it). Needs cargo, node and npm.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# A relative CARGO_TARGET_DIR is relative to where this was called from.
export CARGO_TARGET_DIR
CARGO_TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-$root/target}")
out=$(realpath -m "${PROTOCOL_OUT:-$root/target/protocol}")
cd "$root/tests/protocol"
mkdir -p "$out"

suites=("$@")
[ "${#suites[@]}" -gt 0 ] || suites=(engine.io socket.io)
for suite in "${suites[@]}"; do
  case "$suite" in
    engine.io | socket.io) ;;
    *) echo "unknown suite '$suite' (engine.io, socket.io)" >&2; exit 2 ;;
  esac
done

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

begin=$(date +%s)
echo "=== building the echo servers (tests/protocol/servers, CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
# --locked: the servers' lock file is committed; a vendored patch that changes the crates'
# dependencies must update it (cargo update -w --manifest-path tests/protocol/servers/Cargo.toml).
cargo build --locked --bins --manifest-path servers/Cargo.toml
bin="$CARGO_TARGET_DIR/debug"

if [ "${NPM_CI:-1}" != 0 ]; then
  echo "=== npm ci (tests/protocol)"
  npm ci --no-audit --no-fund
fi

failed=0
for suite in "${suites[@]}"; do
  case "$suite" in
    engine.io) server=engineio-echo url_var=ENGINE_IO_URL ;;
    socket.io) server=socketio-echo url_var=SOCKET_IO_URL ;;
  esac
  echo "=== $suite protocol suite against $server"
  log="$out/$server.log" report="$out/$suite.json"
  rm -f "$report"
  "$bin/$server" 127.0.0.1:0 >"$log" 2>&1 &
  server_pid=$!
  url=""
  for _ in $(seq 1 100); do
    url=$(sed -n 's/^listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$log")
    [ -n "$url" ] && break
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    cat "$log"
    echo "$suite: $server did not start"
    stop_server
    failed=1
    continue
  fi
  echo "$server listening on $url (pid $server_pid)"
  # mocha's exit status counts failures only; report.mjs reads the report and also fails on
  # skipped tests and on tests that did not run.
  env "$url_var=$url" npm run --silent "test:$suite" -- \
    --reporter json --reporter-option "output=$report" || true
  node report.mjs "$suite/test-suite.js" "$report" "$suite" || {
    echo "--- $server's log (last 40 lines of $log)"
    tail -n 40 "$log"
    failed=1
  }
  stop_server
done

echo "=== protocol suites: $(( $(date +%s) - begin ))s"
[ "$failed" = 0 ] || { echo "the protocol suites failed"; exit 1; }
