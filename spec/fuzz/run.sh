#!/usr/bin/env bash
# Runs every fuzz target for about SECONDS/2 each, over a temporary copy of its seed corpus
# (the committed corpus never grows), and fails on any finding.
#   spec/fuzz/run.sh BUILD_DIR [SECONDS]
# BUILD_DIR is a build configured with CC=clang -DMF_FUZZ=ON. Findings (crash-*, leak-*,
# timeout-*, oom-*) are kept in BUILD_DIR/fuzz-findings/. Prints "fuzz: N passed, N failed"
# last; exits non-zero on any finding.
set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [SECONDS]" >&2
    exit 2
fi
build=$(cd "$1" && pwd) || exit 2
seconds=${2:-60}
cd "$(dirname "$0")/../.."

targets=(conn record http)
per=$(( seconds / ${#targets[@]} ))
[ "$per" -ge 1 ] || per=1
findings="$build/fuzz-findings"
mkdir -p "$findings"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

passed=0
failed=0
for t in "${targets[@]}"; do
    bin="$build/spec/fuzz/fuzz_$t"
    if [ ! -x "$bin" ]; then
        echo "fuzz_$t: $bin is missing (build it with --target fuzz_$t)" >&2
        failed=$(( failed + 1 ))
        continue
    fi
    cp -r "spec/fuzz/corpus/$t" "$work/$t"
    log="$work/$t.log"
    before=$(ls "$findings" | grep -c "^$t-" || true)
    echo "== fuzz_$t: ${per}s over $(ls "$work/$t" | wc -l) seeds"
    "$bin" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$findings/$t-" "$work/$t" >"$log" 2>&1
    status=$?
    after=$(ls "$findings" | grep -c "^$t-" || true)
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log")
    cov=$(echo "$done_line" | sed -n 's/.* cov: \([0-9]*\).*/\1/p')
    ft=$(echo "$done_line" | sed -n 's/.* ft: \([0-9]*\).*/\1/p')
    corp=$(echo "$done_line" | sed -n 's/.* corp: \([^ ]*\).*/\1/p')
    if [ "$status" -eq 0 ] && [ "$after" -eq "$before" ] && [ -n "$done_line" ]; then
        echo "fuzz_$t: ok: ${runs:-?} runs, ${rate:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}," \
            "corpus ${corp:-?}, peak rss ${rss:-?} MB"
        passed=$(( passed + 1 ))
    else
        echo "fuzz_$t: FAILED (exit status $status)" >&2
        grep -E 'ERROR: |SUMMARY: |fuzz_(conn|record|http): |Test unit written to' "$log" | head -n 20 >&2
        ls -1 "$findings"/"$t"-* 2>/dev/null | sed 's/^/  finding: /' >&2
        cp "$log" "$findings/$t.log"
        echo "  full log: $findings/$t.log" >&2
        failed=$(( failed + 1 ))
    fi
done
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
