#!/usr/bin/env bash
# The whole suite against one build directory: the C unit tests (ctest), then every busted
# spec under spec/ (the in-process harness, the moonfcgi binary, real web servers).
#   spec/run-all.sh BUILD_DIR [plain|asan] [SPEC_PATH...]   (default: all of spec/)
# Prints "moonfcgi KIND: N passed, N failed" last; exits non-zero on any failure.
# In CI (CI=true) or with MOONFCGI_REQUIRE_ALL=1 every spec must run: a pending spec (a server
# or tool missing, not root) counts as failed (spec/support/needs.lua also fails it at once).
set -euo pipefail
build=${1:-build}
kind=${2:-plain}
shift $(( $# < 2 ? $# : 2 ))
[ $# -gt 0 ] || set -- spec/
cd "$(dirname "$0")/.."
root=$PWD
export MOONFCGI_BIN="$root/$build/moonfcgi"

preload=""
busted_asan=""
if [ "$kind" = asan ]; then
    # busted's luajit is not instrumented: the sanitizer runtimes must be loaded first.
    preload="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
    busted_asan="detect_leaks=0"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
    # moonfcgi processes that specs start report leaks and fail with status 23.
    export MOONFCGI_CHILD_ASAN_OPTIONS="detect_leaks=1:exitcode=23"
    # Specs that measure memory know their figures mean nothing under the sanitizers.
    export MOONFCGI_SANITIZED=1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== $kind: C unit tests"
ctest --test-dir "$build" --output-on-failure | tee "$log"
unit_total=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\2/p' "$log")
unit_failed=$(sed -n 's/.*tests passed, \([0-9]*\) tests failed out of \([0-9]*\).*/\1/p' "$log")

echo "== $kind: busted specs"
set +e
LD_PRELOAD="$preload" ASAN_OPTIONS="$busted_asan" "$build/moonfcgi-busted" -o utfTerminal "$@" \
    2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
summary=$(grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$log" |
    tail -n 1)
ok=$(echo "$summary" | sed -n 's/^\([0-9]*\) success.*/\1/p')
failed=$(echo "$summary" | sed -n 's/.* \([0-9]*\) failures\{0,1\} \/ \([0-9]*\) errors\{0,1\}.*/\1 \2/p')
bad=$(( ${failed% *} + ${failed#* } ))
pending=$(echo "$summary" | sed -n 's/.* \([0-9]*\) pending.*/\1/p')
pending=${pending:-0}
strict=""
for v in "${CI:-}" "${MOONFCGI_REQUIRE_ALL:-}"; do
    case "$v" in "" | 0 | false) ;; *) strict=1 ;; esac
done
if [ "$pending" -gt 0 ]; then
    echo "moonfcgi $kind: $pending pending (skipped) specs:"
    grep -E -A 2 '^Pending (->|→) ' "$log" | grep -v '^--$' | sed 's/^/  /' || true
    if [ -n "$strict" ]; then
        echo "moonfcgi $kind: CI or MOONFCGI_REQUIRE_ALL is set: pending specs fail the run" >&2
        bad=$(( bad + pending ))
    fi
fi
if [ -z "$ok" ] || [ "$ok" = 0 ]; then
    echo "moonfcgi $kind: busted ran no spec" >&2
    exit 1
fi
passed=$(( ${unit_total:-0} - ${unit_failed:-0} + ok ))
echo "moonfcgi $kind: $passed passed, $(( ${unit_failed:-0} + bad )) failed"
[ "$status" -eq 0 ] && [ "$bad" -eq 0 ]
