#!/usr/bin/env bash
# Runs one scenario side by side against tidings and the tutorial's reference server, each
# started on a free port with a fresh database (see BENCHMARKS.md):
#
#   bench/compare.sh ingest -c 50 -m 100
#   bench/compare.sh fanout -r 500 --rate 50,100,200,400
#
# Builds the release binaries first (`cargo run -p tidings-bench` alone would not rebuild
# the server). Env: TIDINGS_REFERENCE (default ../shared/reference/node-tutorial next to the
# repository), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export TIDINGS_REFERENCE="${TIDINGS_REFERENCE:-$PWD/../shared/reference/node-tutorial}"
cargo build --release --workspace --bins >&2
exec "${CARGO_TARGET_DIR:-target}/release/tidings-bench" compare "$@"
