# Shell functions shared by .ci/run and .ci/under-load (sourced, not run).
# shellcheck shell=bash

# Checks the TAP summary node's test runner wrote to $1: some tests ran, all passed, and none
# was skipped, todo or cancelled (the runner counts a skipped test as passed: its exit status
# alone would let a suite that skipped everything through).
require_all_ran() {
  local tap="$1" suite="$2" key value
  declare -A count=()
  [ -s "$tap" ] || { echo "$suite: no test report at $tap"; return 1; }
  for key in tests pass fail cancelled skipped todo; do
    value=$(sed -n "s/^# $key \([0-9][0-9]*\)$/\1/p" "$tap" | tail -n 1)
    [ -n "$value" ] || { echo "$suite: the report has no '# $key' line"; return 1; }
    count[$key]=$value
  done
  echo "$suite: ${count[tests]} tests, ${count[pass]} passed, ${count[fail]} failed," \
    "${count[skipped]} skipped, ${count[todo]} todo, ${count[cancelled]} cancelled"
  if [ "${count[tests]}" -eq 0 ] || [ "${count[pass]}" -ne "${count[tests]}" ] ||
    [ "${count[fail]}" -ne 0 ] || [ "${count[cancelled]}" -ne 0 ] ||
    [ "${count[skipped]}" -ne 0 ] || [ "${count[todo]}" -ne 0 ]; then
    grep -E '^[[:space:]]*(not ok|ok .*# (SKIP|TODO))' "$tap" || true
    echo "$suite: every test must run and pass"
    return 1
  fi
}

# `npm test` in tests/$1 with the spec reporter on the console and TAP to a file, then
# require_all_ran on it.
node_suite() {
  local dir="$1" tap
  tap="$PWD/target/$dir-tests.tap"
  mkdir -p target
  rm -f "$tap"
  (
    cd "tests/$dir"
    # NPM_CI=0: the packages are installed already (repeated runs).
    [ "${NPM_CI:-1}" = 0 ] || npm ci --no-audit --no-fund
    npm test -- --test-reporter=spec --test-reporter-destination=stdout \
      --test-reporter=tap --test-reporter-destination="$tap"
  )
  require_all_ran "$tap" "tests/$dir"
}

# Checks the output of `cargo test` in $1 (stdout and stderr together, in the order printed,
# so that cargo's `Running …` or `Doc-tests …` line comes before its binary's summary): every
# binary that started printed a `test result:` line, there was at least one, and none ignored
# a test, except the binaries whose `Running` line matches the extended regular expression $2
# (the cluster tests, which CI runs on their own with `--ignored`). An `#[ignore]`d test passes
# `cargo test`: without this, a test could be switched off without CI noticing.
require_none_ignored() {
  local log="$1" allowed="${2:-}"
  [ -s "$log" ] || { echo "no cargo test output at $log"; return 1; }
  # The pattern through the environment: `awk -v` would take its backslashes as escapes.
  ALLOWED="$allowed" awk '
    BEGIN { allowed = ENVIRON["ALLOWED"] }
    { sub(/\r$/, "") }
    /^[[:space:]]*(Running|Doc-tests) / {
      name = $0; sub(/^[[:space:]]*/, "", name); binaries++; summarized = 0; next
    }
    /^test result: / {
      results++
      if (name == "" || summarized) { print "a summary with no binary of its own: " $0; bad++; next }
      summarized = 1
      if (!match($0, /; [0-9]+ ignored;/)) { print name ": no ignored count in: " $0; bad++; next }
      ignored = substr($0, RSTART + 2, RLENGTH - 11) + 0
      if (ignored > 0 && !(allowed != "" && name ~ allowed)) {
        print name ": " ignored " ignored test(s)"; bad++
      } else if (ignored > 0) {
        exempt += ignored
      }
    }
    END {
      if (results == 0) { print "no test result line: did any test binary run?"; exit 1 }
      if (results != binaries) {
        print binaries " test binaries started, " results " summaries"; exit 1
      }
      if (bad > 0) { print "cargo test: every test must run (remove the #[ignore])"; exit 1 }
      printf "%d test binaries, none ignored a test", results
      if (exempt > 0) printf " (%d ignored where allowed)", exempt
      print ""
    }
  ' "$log"
}
