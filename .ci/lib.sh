# Shell functions shared by .ci/run and .ci/under-load (sourced, not run).

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
