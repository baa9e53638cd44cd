#!/usr/bin/env bash
# Worker scaling: a CPU-bound handler (about 1 ms of Lua a request, bench/apps/cpu.lua)
# served by moonfcgi --workers 1 and then --workers 2, in one run, and how evenly the two
# workers shared the work (each worker's CPU time over the run).
#   bench/scaling.sh BUILD_DIR [SECONDS]
# Prints the figures, a "SCALING ratio=.. target=>=1.7 verdict=.." line and a "BALANCE
# min_share=.." line (the least busy worker's share of the busiest one's CPU time).
set -euo pipefail
build=${1:?usage: bench/scaling.sh BUILD_DIR [SECONDS]}
secs=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
MF_BUILD_DIR=$(cd "$build" && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
trap stop_all_bg EXIT

tmp=$(mktemp -d)
declare -A RPS

run_one() {
    local workers=$1 master before after
    free_port 19700
    start_bg "$tmp/moonfcgi-$workers.log" "$MF_BUILD_DIR/moonfcgi" --workers "$workers" \
        --listen "127.0.0.1:$FREE_PORT" --log-level warn "$here/apps/cpu.lua"
    master=$BG_PID
    wait_port "127.0.0.1:$FREE_PORT" 10 "$master"
    # Warm up the JIT in every worker, then measure.
    run_loadgen --connect "127.0.0.1:$FREE_PORT" -c 8 -d 1 --strict >/dev/null || true
    declare -A start
    for w in $(cat "/proc/$master/task/$master/children"); do
        start[$w]=$(cpu_ticks_of_pids "$w")
    done
    run_loadgen --connect "127.0.0.1:$FREE_PORT" -c 16 -d "$secs" --strict >/dev/null
    RPS[$workers]=$LG_RPS
    mf_log "--workers $workers: $LG_RPS req/s, p99 $LG_P99_US us, errors $LG_ERRORS"
    if [ "$workers" -gt 1 ]; then
        local shares=() max=0 min=999999999 t
        for w in "${!start[@]}"; do
            t=$(($(cpu_ticks_of_pids "$w") - ${start[$w]}))
            shares+=("$w:$t")
            [ "$t" -gt "$max" ] && max=$t
            [ "$t" -lt "$min" ] && min=$t
        done
        mf_log "CPU ticks per worker over the run: ${shares[*]}"
        awk -v a="$min" -v b="$max" 'BEGIN { printf "BALANCE min_share=%.2f\n", b ? a / b : 0 }'
    fi
    stop_pid "$master" 10
}

run_one 1
run_one 2
awk -v one="${RPS[1]}" -v two="${RPS[2]}" 'BEGIN {
    r = one > 0 ? two / one : 0
    printf "SCALING workers1_rps=%s workers2_rps=%s ratio=%.2f target=>=1.7 verdict=%s\n",
        one, two, r, (r >= 1.7 ? "PASS" : "MISS")
}'
rm -rf "$tmp"
