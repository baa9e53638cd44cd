#!/usr/bin/env bash
# What `make test` runs: every suite (the plain build, the ASan+UBSan build, the fuzz
# targets), each one even when an earlier one failed. Prints each suite's closing line, then
# the total "N passed, N failed" last; exits non-zero if anything failed.
#   spec/test-all.sh BUILD_DIR ASAN_BUILD_DIR FUZZ_BUILD_DIR [FUZZ_SECONDS]
# CI=true or MOONFCGI_REQUIRE_ALL=1 makes a pending (skipped) spec a failure (spec/run-all.sh).
set -uo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 BUILD_DIR ASAN_BUILD_DIR FUZZ_BUILD_DIR [FUZZ_SECONDS]" >&2
    exit 2
fi
build=$1
asan=$2
fuzz=$3
seconds=${4:-30}
cd "$(dirname "$0")/.."

out=$(mktemp)
trap 'rm -f "$out"' EXIT
passed=0
failed=0
lines=()

# Runs one suite and adds up its closing "...: N passed, N failed" line. A suite that exits
# non-zero without counting a failure (it crashed, or could not start) counts as one.
suite() {
    local rc line p f
    "$@" 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    line=$(grep -E '^[a-z ]+: [0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
    p=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed, .*/\1/p')
    f=$(echo "$line" | sed -n 's/.* passed, \([0-9]*\) failed$/\1/p')
    p=${p:-0}
    f=${f:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
        line="$* exited with status $rc${line:+ ($line)}"
    fi
    lines+=("${line:-$*: no result}")
    passed=$(( passed + p ))
    failed=$(( failed + f ))
}

suite spec/run-all.sh "$build" plain
suite spec/run-all.sh "$asan" asan
suite spec/fuzz/run.sh "$fuzz" "$seconds"

echo "== make test"
printf '%s\n' "${lines[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
