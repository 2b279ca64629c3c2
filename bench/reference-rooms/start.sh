#!/usr/bin/env bash
# Start our rooms extension of the Socket.IO tutorial server (Node + SQLite; see index.js and
# README.md). Env: PORT (default 3000), DB (default chat.db, relative to the caller's cwd).
# Its package.json and package-lock.json are the tutorial reference's
# (../shared/reference/node-tutorial), so both share one dependency cache: installed once into
# a writable folder, sqlite3 built from source (~60 s the first time, needs g++/make/python3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TIDINGS_REFERENCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tidings-reference}"
if [ ! -d "$cache/node_modules" ] || ! cmp -s "$here/package-lock.json" "$cache/package-lock.json"; then
  mkdir -p "$cache"
  cp "$here/package.json" "$here/package-lock.json" "$cache/"
  (cd "$cache" && npm_config_build_from_source=true npm ci --build-from-source --no-audit --no-fund >&2)
fi
# A folder of its own inside the cache: node finds the shared node_modules one level up, and the
# tutorial's index.js (copied to the cache's top by its own start.sh) is left alone.
mkdir -p "$cache/rooms"
cp "$here/index.js" "$cache/rooms/"
exec node "$cache/rooms/index.js"
