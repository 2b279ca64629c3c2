#!/usr/bin/env bash
# Checks that each vendored crate is exactly its published version plus its patches
# (vendor/README.md): takes the crate as published on crates.io, checks its sha256, unpacks it,
# applies vendor/patches/CRATE-*.patch in order and compares the result with vendor/CRATE,
# byte for byte. Also checks that every Cargo.lock of the repository resolves the crate to
# that version, through the vendored path.
#
#   vendor/check.sh            # check; prints what differs, exits 1 on any difference
#   vendor/check.sh --apply    # rebuild vendor/CRATE from the published crate and the patches
#                              # (when adding a patch or moving to a new version), then check;
#                              # a copy it replaces is kept in $TMPDIR, and its path printed
#
# Needs bash, tar (gzip), patch, diff, sha256sum, cargo (to check the lock files), and curl or
# python3 when the .crate is not in cargo's download cache. Network: crates.io only (the .crate
# files from https://static.crates.io, and what `cargo metadata` fetches from the registry when
# the crates' dependencies are not downloaded yet).
set -euo pipefail
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")"
vendor=$PWD
root=$(cd .. && pwd)

# The published versions the copies come from, and the sha256 of their .crate files (as
# crates.io's index records them; Cargo.lock did until each crate was patched, in 78793e34^
# for engineioxide and e9cd6fd9^ for socketioxide: the lock entry of a [patch] path has no
# checksum). In dependency order: socketioxide's lock and build use the engineioxide beside it.
crates=(
  "engineioxide 0.17.9 0615980857185ecc33fed6ec417ec64fe3e427bf1de0471bb3594132f453bdbe"
  "socketioxide 0.18.9 ef8a9378fdea634a338e8dd2cf17e81cfaaf8c04840625e4c78555c89d9ba6e9"
)

apply=0
case "${1:-}" in
  "") ;;
  --apply) apply=1 ;;
  *) echo "usage: vendor/check.sh [--apply]" >&2; exit 2 ;;
esac

for tool in tar patch diff sha256sum cargo; do
  command -v "$tool" >/dev/null 2>&1 || { echo "vendor/check.sh needs $tool" >&2; exit 2; }
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/vendor-check.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/crates" "$tmp/tree"

failed=0
fail() { echo "FAIL: $*"; failed=1; }

# The .crate file of $1 $2 in $tmp/crates: from cargo's download cache when it is there,
# else from static.crates.io (curl, or python3 when there is no curl).
get_crate() {
  local name="$1" version="$2" file="$tmp/crates/$1-$2.crate" cached
  local url="https://static.crates.io/crates/$name/$name-$version.crate"
  cached=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate" 2>/dev/null | head -n 1 || true)
  if [ -n "$cached" ]; then
    echo "$name $version: $cached"
    cp "$cached" "$file"
  elif command -v curl >/dev/null 2>&1; then
    echo "$name $version: $url"
    curl -sSfL --retry 3 --max-time 120 -o "$file" "$url"
  elif command -v python3 >/dev/null 2>&1; then
    echo "$name $version: $url (python3)"
    python3 - "$url" "$file" <<'EOF'
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=120) as r, open(sys.argv[2], "wb") as f:
    f.write(r.read())
EOF
  else
    echo "vendor/check.sh needs curl or python3 to download $url" >&2
    return 1
  fi
}

# The `version` of package $2 in lock file $1 (empty when absent; "?" when there are several),
# then its `source` line (empty for a path dependency, such as a [patch] path).
lock_entry() {
  awk -v want="$2" '
    /^\[\[package\]\]/ { name = ""; next }
    /^name = / { name = $3; gsub(/"/, "", name); next }
    name == want && /^version = / { v = $3; gsub(/"/, "", v); n++; version = v; next }
    name == want && /^source = / { source = $3; gsub(/"/, "", source); next }
    END { if (n > 1) version = "?"; print version; print source }
  ' "$1"
}

# Every lock file that resolves the vendored crates: the workspace's, the fuzz workspace's, the
# protocol test servers' (tests/protocol/servers), and socketioxide's own (its [patch] points at
# ../engineioxide).
locks=("$root/Cargo.lock" "$root/fuzz/Cargo.lock" "$root/tests/protocol/servers/Cargo.lock"
  "$vendor/engineioxide/Cargo.lock" "$vendor/socketioxide/Cargo.lock")

for entry in "${crates[@]}"; do
  read -r name version sum <<<"$entry"
  echo "=== $name $version"

  # The published crate, checked, unpacked and patched.
  get_crate "$name" "$version"
  got=$(sha256sum "$tmp/crates/$name-$version.crate" | cut -d' ' -f1)
  if [ "$got" != "$sum" ]; then
    fail "$name-$version.crate has sha256 $got, expected $sum"
    continue
  fi
  tar -xzf "$tmp/crates/$name-$version.crate" -C "$tmp/tree"
  [ -d "$tmp/tree/$name-$version" ] || { fail "$name-$version.crate has no $name-$version/"; continue; }
  mv "$tmp/tree/$name-$version" "$tmp/tree/$name"
  if [ -n "$(find "$tmp/tree/$name" -name target)" ]; then
    # The comparison below ignores cargo's target/ directories; the crate must have none.
    fail "$name-$version.crate holds a file named target: update vendor/check.sh"
    continue
  fi
  patches=("$vendor"/patches/"$name"-*.patch)
  [ -e "${patches[0]}" ] || patches=()
  for p in "${patches[@]}"; do
    # --fuzz=0: every patch applies exactly where it says, on the result of the ones before.
    if ! out=$(cd "$tmp/tree" && patch -p1 --forward --batch --fuzz=0 --no-backup-if-mismatch \
      -r - <"$p" 2>&1); then
      echo "$out"
      fail "patches/$(basename "$p") does not apply"
      continue 2
    fi
  done
  echo "applied ${#patches[@]} patches"

  if [ "$apply" = 1 ] && ! diff -r -q -x target "$tmp/tree/$name" "$vendor/$name" >/dev/null 2>&1; then
    if [ -d "$vendor/$name/target" ]; then
      fail "vendor/$name/target exists: remove it (a build without CARGO_TARGET_DIR) before --apply"
      continue
    fi
    # The copy it replaces is kept: edits that are in no patch file yet are not lost.
    backup=$(mktemp -d "${TMPDIR:-/tmp}/vendor-apply-$name.XXXXXX")
    [ ! -d "$vendor/$name" ] || cp -R "$vendor/$name" "$backup/$name"
    rm -rf "${vendor:?}/$name"
    cp -R "$tmp/tree/$name" "$vendor/$name"
    echo "vendor/$name rebuilt from $name-$version.crate and its patches (the previous copy: $backup/$name)"
  fi

  # Byte for byte, every file, including the lock file (see vendor/README.md); only cargo's
  # build directory (vendor/CRATE/target, from a build without CARGO_TARGET_DIR) is ignored.
  if ! diff -r -q -x target "$tmp/tree/$name" "$vendor/$name" >"$tmp/diff"; then
    sed -e "s|$tmp/tree/|published+patches: |g" -e "s|$vendor/|vendor/|g" "$tmp/diff"
    if [ "${VERBOSE:-0}" = 1 ]; then
      (cd "$tmp/tree" && diff -r -u -x target "$name" "$vendor/$name") | sed "s|$vendor/|vendor/|g" || true
    else
      echo "(VERBOSE=1 vendor/check.sh prints the differences)"
    fi
    fail "vendor/$name is not $name $version plus patches/$name-*.patch"
  else
    echo "vendor/$name = $name $version + ${#patches[@]} patches"
  fi

  # The lock file is compared above, so it must stay as it is when the crate is built on its
  # own (CI runs its suite): cargo must find nothing to change in it (socketioxide's lock
  # resolves the patched engineioxide through its [patch] path, so a patch of engineioxide that
  # changes its dependencies changes that lock too).
  if ! out=$(cargo metadata --locked --format-version 1 \
    --manifest-path "$vendor/$name/Cargo.toml" 2>&1 >/dev/null); then
    echo "$out" | tail -n 5
    fail "cargo would rewrite vendor/$name/Cargo.lock: record its new lines in a patch (vendor/README.md)"
  else
    echo "vendor/$name/Cargo.lock: cargo resolves the crate without changing it"
  fi

  # The vendored manifest's version, and every lock file's.
  toml_version=$(awk '/^\[/ { section = $0 } section == "[package]" && /^version = / {
      gsub(/"/, "", $3); print $3; exit }' "$vendor/$name/Cargo.toml")
  [ "$toml_version" = "$version" ] ||
    fail "vendor/$name/Cargo.toml has version '$toml_version', vendor/check.sh pins $version"
  for lock in "${locks[@]}"; do
    [ -f "$lock" ] || { fail "${lock#"$root"/} is missing"; continue; }
    { read -r locked; read -r source; } < <(lock_entry "$lock" "$name")
    [ -n "$locked" ] || continue
    rel=${lock#"$root"/}
    if [ "$locked" != "$version" ]; then
      fail "$rel resolves $name $locked, the vendored copy is $version"
    elif [ -n "$source" ]; then
      fail "$rel takes $name $locked from $source, not from vendor/$name (is its [patch.crates-io] line missing?)"
    else
      echo "$rel: $name $locked from vendor/$name"
    fi
  done
done

# A patch file must belong to a crate listed above.
for p in "$vendor"/patches/*.patch; do
  [ -e "$p" ] || continue
  known=0
  for entry in "${crates[@]}"; do
    case "$(basename "$p")" in "${entry%% *}"-*) known=1 ;; esac
  done
  [ "$known" = 1 ] || fail "patches/$(basename "$p") is not named after a vendored crate"
done

if [ "$failed" = 0 ]; then
  echo "vendor/check.sh: ok"
else
  echo "vendor/check.sh: the vendored crates differ from their published versions plus patches"
  exit 1
fi
