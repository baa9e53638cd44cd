#!/usr/bin/env bash
# bench/run.sh: moonfcgi against the plain-C ceiling and the FastCGI servers people use today,
# every workload in one run, and a table of the figures with the ratios between them. `make
# bench` runs it on the build it has just made.
#
#   bench/run.sh [OPTIONS] BUILD_DIR [WORKLOAD...]
#
# Each workload runs against moonfcgi and, in the same run, against the peers that are there:
# mf-peer-libevent (the ceiling: plain C on libevent, nothing between socket and answer),
# mf-peer-libfcgi, PHP-FPM (8 children) and wsapi-fcgi. Every server is started afresh for
# each workload, so that one's memory figures are not another's leftovers. On a machine with
# two CPUs or more the servers run on one CPU and the load generator on another (taskset), so
# that neither steals the other's core and every server gets the same single core.
#
# The last lines printed are machine-readable, one run or one target a line:
#   BENCH workload=hello server=moonfcgi rps=.. bytes_per_s=.. p50_us=.. p99_us=.. ...
#   TARGET name=hello_vs_ceiling value=0.93 target=>=0.90 verdict=PASS
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
ALL_WORKLOADS=(hello nginx noconn body64k upload stream mpx idle sleep json redis-get upstream-wait)

usage() {
    cat <<EOF
usage: bench/run.sh [OPTIONS] BUILD_DIR [WORKLOAD...]

Runs each workload against moonfcgi and the peers available, prints a table with ratios to
the ceiling and to each peer, the targets with PASS/MISS, and a machine-readable summary.

workloads (default: all, in this order):
  hello    hello world, kept connections, mf-bench -c 50 (moonfcgi --workers 1 vs the
           single-process ceiling, libfcgi --threads 2, PHP-FPM with 8 children)
  nginx    hello world through nginx (keep-alive upstream), wrk -t1 -c50
  noconn   hello world, a new connection per request (--no-keep-conn)
  body64k  a 64 KiB response (bench/apps/bytes.lua; the ceiling with --body-size 65536)
  upload   a 1 MiB request body read with req:body() (bench/apps/upload.lua)
  stream   100 MiB streamed to a reader taking 10 MB/s: peak memory of the server
  mpx      16 requests multiplexed on each of 50 connections
  idle     10,000 kept connections held idle: memory of all server processes
  sleep    moonfcgi.sleep(0.01) in 2,000 concurrent requests (-c 200 -m 10)
  json     50 records encoded with lua-cjson per request (apps/json.lua): moonfcgi direct
           and behind nginx, OpenResty running the same Lua (wrk), PHP-FPM json_encode
  redis-get  GET one of 1,000 keys from redis-server through lua-resty-redis with a pool,
           on moonfcgi and OpenResty (the same module), PHP-FPM with php-redis
  upstream-wait  10,000 requests in flight, each waiting 50 ms on its own upstream socket
           (mf-upstream): req/s, p99 and the peak memory of all server processes

options:
  --quick           about a second per workload, moonfcgi and the ceiling only
  --only W[,W...]   run only these workloads (also: list them after BUILD_DIR)
  --results FILE    append the report as a dated section to FILE (e.g. bench/RESULTS.md)
  --summary FILE    also write the machine-readable lines to FILE
  --no-pin          do not pin the servers and the load generator to separate CPUs
  --keep            keep the directory with every server's log and every full report
  -h, --help

environment: MF_BENCH_PORT (first port tried, default 19400), MF_SERVER_CPU (default 1),
MF_LOADGEN_CPU (default 0).
EOF
}

QUICK=0
PIN=1
KEEP=0
RESULTS_FILE=''
SUMMARY_FILE=''
ONLY=()
BUILD_DIR=''
COMMAND_LINE="bench/run.sh $*"
STARTED=$(date '+%Y-%m-%d %H:%M %Z')
# The source the build came from, read without touching the index (no optional locks).
TREE="tree $(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)"
if ! git -C "$REPO" --no-optional-locks diff --quiet HEAD -- src lua CMakeLists.txt 2>/dev/null; then
    TREE="$TREE with uncommitted changes in src/ or lua/"
fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --no-pin) PIN=0 ;;
    --keep) KEEP=1 ;;
    --only)
        [ $# -ge 2 ] || { usage >&2; exit 2; }
        IFS=, read -r -a more <<<"$2"
        ONLY+=("${more[@]}")
        shift
        ;;
    --only=*) IFS=, read -r -a more <<<"${1#--only=}" && ONLY+=("${more[@]}") ;;
    --results)
        [ $# -ge 2 ] || { usage >&2; exit 2; }
        RESULTS_FILE=$2
        shift
        ;;
    --summary)
        [ $# -ge 2 ] || { usage >&2; exit 2; }
        SUMMARY_FILE=$2
        shift
        ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "bench/run.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    *)
        if [ -z "$BUILD_DIR" ]; then
            BUILD_DIR=$1
        else
            ONLY+=("$1")
        fi
        ;;
    esac
    shift
done
[ -n "$BUILD_DIR" ] || { usage >&2; exit 2; }
[ -d "$BUILD_DIR" ] || { echo "bench/run.sh: $BUILD_DIR is not a directory" >&2; exit 2; }
for w in "${ONLY[@]}"; do
    case " ${ALL_WORKLOADS[*]} " in
    *" $w "*) ;;
    *) echo "bench/run.sh: unknown workload '$w' (${ALL_WORKLOADS[*]})" >&2; exit 2 ;;
    esac
done
[ ${#ONLY[@]} -gt 0 ] || ONLY=("${ALL_WORKLOADS[@]}")

MF_BUILD_DIR=$(cd "$BUILD_DIR" && pwd)
# shellcheck source=bench/lib.sh
. "$HERE/lib.sh"

MOONFCGI=$MF_BUILD_DIR/moonfcgi
CEILING=$MF_BENCH_BIN_DIR/mf-peer-libevent
LIBFCGI=$MF_BENCH_BIN_DIR/mf-peer-libfcgi
IDLE=$MF_BENCH_BIN_DIR/mf-idle
APPS=$HERE/apps
for bin in "$MOONFCGI" "$MF_BENCH" "$CEILING"; do
    [ -x "$bin" ] || { echo "bench/run.sh: $bin missing: build first (make build)" >&2; exit 2; }
done

RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/mf-bench-run.XXXXXX") || exit 1
MF_LOADGEN_LOG=$RUN_DIR/loadgen.log
FAILED_RUNS=0
cleanup() {
    stop_all_bg
    if [ "$KEEP" = 1 ] || [ "$FAILED_RUNS" -gt 0 ]; then
        mf_log "logs kept in $RUN_DIR"
    else
        rm -rf "$RUN_DIR"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Durations: a few seconds each for the record, about one for a smoke test.
if [ "$QUICK" = 1 ]; then
    D_HELLO=1 D=1 STREAM_MIB=8 IDLE_CONNS=1000 IDLE_HOLD=0.5 ROUNDS=1 D_ROUND=1 WARMUP=0.2
else
    D_HELLO=4 D=3 STREAM_MIB=100 IDLE_CONNS=10000 IDLE_HOLD=2 ROUNDS=3 D_ROUND=2 WARMUP=0.5
fi
# The workloads with a target against the ceiling alternate the two in ROUNDS rounds of
# D_ROUND seconds (moonfcgi, the ceiling, moonfcgi, ...): a shared machine's speed drifts
# over seconds, and one long run of each put that drift into the ratio (0.88, 0.99 and 0.93
# in three consecutive runs of the 64 KiB workload with one build).
SLOW_BPS=10000000 # mf-bench's --slow-read ceiling: 100 MiB then takes 10.5 s
CLK_TCK=$(getconf CLK_TCK)
NCPU=$(nproc)

NOTES=()
note() {
    NOTES+=("$*")
    mf_log "note: $*"
}

SERVER_CPU=${MF_SERVER_CPU:-1}
LOADGEN_CPU=${MF_LOADGEN_CPU:-0}
if [ "$PIN" = 1 ] && [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null 2>&1; then
    MF_SERVER_WRAP=(taskset -c "$SERVER_CPU")
    MF_LOADGEN_WRAP=(taskset -c "$LOADGEN_CPU")
    PINNING="servers (and nginx) on CPU $SERVER_CPU, load generators on CPU $LOADGEN_CPU (taskset)"
else
    PINNING="not pinned"
    [ "$PIN" = 1 ] && note "not pinned: needs taskset and at least 2 CPUs"
fi

# The idle workload holds thousands of descriptors in the server and in mf-idle.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null
NOFILE=$(ulimit -n)
if [ "$NOFILE" != unlimited ] && [ "$NOFILE" -lt $((IDLE_CONNS + 256)) ]; then
    note "ulimit -n is $NOFILE: the idle workload holds $((NOFILE - 256)) connections, not $IDLE_CONNS"
    IDLE_CONNS=$((NOFILE - 256))
fi

# Which peers take part. --quick keeps to moonfcgi and the ceiling.
HAVE_LIBFCGI=0 HAVE_PHP=0 HAVE_WSAPI=0 HAVE_NGINX=0 HAVE_WRK=0
if [ "$QUICK" = 0 ]; then
    if [ -x "$LIBFCGI" ]; then
        HAVE_LIBFCGI=1
    else
        note "libfcgi peer skipped: $LIBFCGI not built (apt-get install libfcgi-dev, rebuild)"
    fi
    if php_fpm_bin >/dev/null; then
        HAVE_PHP=1
    else
        note "PHP-FPM peer skipped: php-fpm not installed (apt-get install php-fpm)"
    fi
    WSAPI_BIN=$(command -v wsapi.fcgi || true)
    if [ -n "$WSAPI_BIN" ] && command -v spawn-fcgi >/dev/null 2>&1; then
        HAVE_WSAPI=1
    else
        note "wsapi-fcgi peer skipped: not installed (apt-get install lua-wsapi-fcgi spawn-fcgi)"
    fi
fi
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then HAVE_NGINX=1; fi
command -v wrk >/dev/null 2>&1 && HAVE_WRK=1
# OpenResty: Debian's nginx with the Lua module's packages unpacked (lib.sh, openresty_fetch).
HAVE_OPENRESTY=0
if [ "$QUICK" = 0 ] && [ "$HAVE_NGINX" = 1 ] && [ "$HAVE_WRK" = 1 ]; then
    if openresty_fetch; then
        HAVE_OPENRESTY=1
    else
        note "OpenResty peer skipped: its packages could not be fetched"
    fi
fi

# Results, keyed "workload/server"; ROWS keeps the order they ran in.
declare -A R_RPS R_BPS R_P50 R_P99 R_MAX R_ERR R_LGCPU R_SRVCPU R_OTHER R_MEM R_OK R_NOTE R_USREQ
ROWS=()
NEXT_PORT=${MF_BENCH_PORT:-19400}

next_addr() {
    free_port "$NEXT_PORT"
    NEXT_PORT=$((FREE_PORT + 1))
    ADDR=127.0.0.1:$FREE_PORT
}

now_ns() {
    date +%s%N
}

# The machine's busy CPU ticks so far, all CPUs (user, nice, system, irq, softirq, steal).
machine_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9; exit }' /proc/stat
}

# other_pct BUSY_PCT MINUS_PCT...: what the rest of the machine used, never below 0.
other_pct() {
    awk -v b="$1" -v m="${*:2}" 'BEGIN { n = split(m, a, " "); for (i = 1; i <= n; i++) b -= a[i]; printf "%.0f\n", (b < 0 ? 0 : b) }'
}

# cpu_pct TICKS_BEFORE TICKS_AFTER ELAPSED_NS: CPU use over the interval, 100 = one core.
cpu_pct() {
    awk -v a="$1" -v b="$2" -v hz="$CLK_TCK" -v ns="$3" \
        'BEGIN { v = ns > 0 ? 100 * (b - a) / hz / (ns / 1e9) : 0; printf "%.0f\n", v }'
}

# us_per_req NS_BEFORE NS_AFTER REQUESTS: CPU microseconds per request, or nothing.
us_per_req() {
    awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (n == "" || n + 0 == 0) exit; printf "%.2f\n", (b - a) / 1000 / n }'
}

# record W S OK: stores the LG_* figures and the server measurements of one run. A server
# measured in several rounds of a workload (ROUNDS, above) gets the rounds' figures combined
# by finish_rows: means, except max latency and memory (the highest) and errors (the sum).
record() {
    local key="$1/$2" f v
    if [ -z "${R_OK[$key]+set}" ]; then
        ROWS+=("$key")
        R_OK[$key]=1
        for f in R_RPS R_BPS R_P50 R_P99 R_MAX R_ERR R_LGCPU R_SRVCPU R_OTHER R_MEM R_NOTE R_USREQ; do
            declare -n arr=$f
            arr[$key]=''
        done
    fi
    [ "$3" = 1 ] || R_OK[$key]=0
    R_RPS[$key]+=" ${LG_RPS:-}"
    R_BPS[$key]+=" ${LG_BYTES_PER_S:-}"
    R_P50[$key]+=" ${LG_P50_US:-}"
    R_P99[$key]+=" ${LG_P99_US:-}"
    R_MAX[$key]+=" ${LG_MAX_US:-}"
    R_ERR[$key]+=" ${LG_ERRORS:-}"
    R_LGCPU[$key]+=" ${LG_CPU_PCT:-}"
    R_SRVCPU[$key]+=" ${SRV_CPU_PCT:-}"
    R_OTHER[$key]+=" ${OTHER_CPU_PCT:-}"
    R_MEM[$key]+=" ${SRV_MEM_KIB:-}"
    R_USREQ[$key]+=" ${SRV_US_REQ:-}"
    v=${RUN_NOTE:-}
    if [ -n "$v" ] && [[ "; ${R_NOTE[$key]}; " != *"; $v; "* ]]; then
        R_NOTE[$key]=${R_NOTE[$key]:+${R_NOTE[$key]}; }$v
    fi
    if [ "$3" != 1 ]; then
        FAILED_RUNS=$((FAILED_RUNS + 1))
    fi
    mf_log "$(printf '%-8s %-15s %10s req/s  p99 %8s us  errors %s  mem %s KiB  cpu: server %s%% (%s us/req), others %s%%  %s' \
        "$1" "$2" "${LG_RPS:--}" "${LG_P99_US:--}" "${LG_ERRORS:--}" "${SRV_MEM_KIB:--}" \
        "${SRV_CPU_PCT:--}" "${SRV_US_REQ:--}" "${OTHER_CPU_PCT:--}" "${RUN_NOTE:-}")"
}

# combine HOW VALUES...: mean, max or sum of the numbers given; nothing when none is.
combine() {
    local how=$1
    shift
    awk -v how="$how" 'BEGIN {
        n = 0; s = 0; m = ""
        for (i = 1; i < ARGC; i++) { v = ARGV[i] + 0; n++; s += v; if (m == "" || v > m) m = v }
        if (n == 0) exit
        if (how == "mean") { v = s / n } else if (how == "max") { v = m } else { v = s }
        if (v == int(v)) printf "%.0f\n", v; else printf "%.1f\n", v
    }' "$@"
}

# Turns the per-round lists that record keeps into the figures the report prints.
finish_rows() {
    local key f how
    for key in "${ROWS[@]}"; do
        for f in R_RPS:mean R_BPS:mean R_P50:mean R_P99:mean R_MAX:max R_ERR:sum R_LGCPU:mean \
            R_SRVCPU:mean R_OTHER:mean R_MEM:max R_USREQ:mean; do
            how=${f#*:}
            declare -n arr=${f%%:*}
            # shellcheck disable=SC2086 # the list is words on purpose
            arr[$key]=$(combine "$how" ${arr[$key]})
        done
    done
}

# start_server W S ADDR: starts the server S (its command in SRV_CMD, "--listen ADDR" is
# added after the binary) and waits until it accepts. Sets SRV_PID.
SRV_CMD=()
start_server() {
    local w=$1 s=$2 addr=$3 log="$RUN_DIR/$1-$2.log" port=${3##*:}
    case ${SRV_CMD[0]} in
    php-fpm)
        php_fpm_start "$addr" 8 "$RUN_DIR/php-fpm-$w" || return 1
        SRV_PID=$PHP_FPM_PID
        return 0
        ;;
    openresty)
        openresty_start "$addr" "${SRV_CMD[1]}" "${SRV_CMD[2]}" "$RUN_DIR/openresty-$w" || return 1
        SRV_PID=$OPENRESTY_PID
        return 0
        ;;
    wsapi)
        # Not run on the machine this script was written on (wsapi-fcgi was not installed):
        # spawn-fcgi binds and hands the socket to wsapi.fcgi, which loads SCRIPT_FILENAME.
        start_bg "$log" "${MF_SERVER_WRAP[@]}" spawn-fcgi -n -a 127.0.0.1 -p "$port" -- "$WSAPI_BIN"
        ;;
    *)
        start_bg "$log" "${MF_SERVER_WRAP[@]}" "${SRV_CMD[0]}" --listen "$addr" "${SRV_CMD[@]:1}"
        ;;
    esac
    SRV_PID=$BG_PID
    wait_port "$addr" 10 "$SRV_PID" || { stop_pid "$SRV_PID" 2; return 1; }
}

# The memory figure a run reports: rss (VmRSS summed over the server's processes at the end
# of the run) or hwm (summed VmHWM: the peaks).
MEM_MODE=rss
measure_mem() {
    if [ "$MEM_MODE" = hwm ]; then
        hwm_kib_of_pids "$SRV_PID"
    else
        rss_kib_of_pids "$SRV_PID"
    fi
}

# warm_up MF-BENCH-ARGS...: the same load for WARMUP seconds, not measured, when the load is
# bounded by -d. A fresh server first grows its heap and compiles its hot paths: moonfcgi's
# first half second of 1 MiB uploads ran at half the speed of the seconds after it.
warm_up() {
    local args=() a timed=0 next=0
    for a in "$@"; do
        if [ "$next" = 1 ]; then
            a=$WARMUP
            next=0
            timed=1
        elif [ "$a" = -d ]; then
            next=1
        fi
        args+=("$a")
    done
    [ "$timed" = 1 ] || return 0
    "${MF_LOADGEN_WRAP[@]}" "$MF_BENCH" "${args[@]}" >/dev/null 2>&1 || true
}

# direct W S MF-BENCH-ARGS...: one server (SRV_CMD), mf-bench straight at it.
direct() {
    local w=$1 s=$2 t0 t1 m0 m1 ns0 ns1 c0 c1 ok=1
    shift 2
    LG_RPS='' LG_BYTES_PER_S='' LG_P50_US='' LG_P99_US='' LG_MAX_US='' LG_ERRORS='' LG_CPU_PCT=''
    SRV_CPU_PCT='' SRV_MEM_KIB='' RUN_NOTE='' OTHER_CPU_PCT='' SRV_US_REQ=''
    next_addr
    if ! start_server "$w" "$s" "$ADDR"; then
        RUN_NOTE="did not start (see $RUN_DIR/$w-$s.log)"
        record "$w" "$s" 0
        return
    fi
    warm_up --connect "$ADDR" "$@"
    printf '\n### %s / %s: mf-bench %s\n' "$w" "$s" "$*" >>"$MF_LOADGEN_LOG"
    t0=$(cpu_ticks_of_pids "$SRV_PID")
    c0=$(cpu_ns_of_pids "$SRV_PID")
    m0=$(machine_ticks)
    ns0=$(now_ns)
    run_loadgen --connect "$ADDR" "$@" >/dev/null || ok=0
    ns1=$(now_ns)
    m1=$(machine_ticks)
    c1=$(cpu_ns_of_pids "$SRV_PID")
    t1=$(cpu_ticks_of_pids "$SRV_PID")
    SRV_US_REQ=$(us_per_req "$c0" "$c1" "${LG_REQUESTS:-}")
    SRV_MEM_KIB=$(measure_mem)
    SRV_CPU_PCT=$(cpu_pct "$t0" "$t1" $((ns1 - ns0)))
    [ -n "$LG_CPU_PCT" ] &&
        OTHER_CPU_PCT=$(other_pct "$(cpu_pct "$m0" "$m1" $((ns1 - ns0)))" "$SRV_CPU_PCT" "$LG_CPU_PCT")
    [ -z "$LG_RPS" ] && RUN_NOTE="no result"
    [ "$ok" = 0 ] && [ -n "$LG_RPS" ] && RUN_NOTE="errors: see the report"
    record "$w" "$s" "$ok"
    stop_pid "$SRV_PID" 5 || note "$w/$s needed SIGKILL to stop"
}

# through_nginx W S: nginx (one process) in front of the server SRV_CMD, wrk at nginx.
through_nginx() {
    local w=$1 s=$2 up t0 t1 n0 n1 ns0 ns1 c0 c1 g0 g1 ok=1 d=${3:-$D_HELLO} path=${4:-/}
    LG_RPS='' LG_BYTES_PER_S='' LG_P50_US='' LG_P99_US='' LG_MAX_US='' LG_ERRORS='' LG_CPU_PCT=''
    SRV_CPU_PCT='' SRV_MEM_KIB='' RUN_NOTE='' OTHER_CPU_PCT='' SRV_US_REQ=''
    next_addr
    up=$ADDR
    if ! start_server "$w" "$s" "$up"; then
        RUN_NOTE="did not start"
        record "$w" "nginx+$s" 0
        return
    fi
    next_addr
    if ! nginx_start "$ADDR" "$up" "$RUN_DIR/nginx-$s"; then
        RUN_NOTE="nginx did not start (see $RUN_DIR/nginx-$s/error.log)"
        record "$w" "nginx+$s" 0
        stop_pid "$SRV_PID" 5
        return
    fi
    printf '\n### %s / nginx+%s: wrk\n' "$w" "$s" >>"$MF_LOADGEN_LOG"
    t0=$(cpu_ticks_of_pids "$SRV_PID")
    n0=$(cpu_ticks_of_pids "$NGINX_PID")
    c0=$(cpu_ns_of_pids "$SRV_PID")
    g0=$(cpu_ns_of_pids "$NGINX_PID")
    ns0=$(now_ns)
    run_wrk -t1 -c50 -d"${d}s" "http://$ADDR$path" >/dev/null || ok=0
    ns1=$(now_ns)
    c1=$(cpu_ns_of_pids "$SRV_PID")
    g1=$(cpu_ns_of_pids "$NGINX_PID")
    t1=$(cpu_ticks_of_pids "$SRV_PID")
    n1=$(cpu_ticks_of_pids "$NGINX_PID")
    SRV_MEM_KIB=$(measure_mem)
    SRV_CPU_PCT=$(cpu_pct "$t0" "$t1" $((ns1 - ns0)))
    SRV_US_REQ=$(us_per_req "$c0" "$c1" "${LG_REQUESTS:-}")
    RUN_NOTE="nginx used $(cpu_pct "$n0" "$n1" $((ns1 - ns0)))% of a core, $(us_per_req "$g0" "$g1" "${LG_REQUESTS:-}") us/req"
    record "$w" "nginx+$s" "$ok"
    stop_pid "$NGINX_PID" 5
    stop_pid "$SRV_PID" 5
}

# http_direct W S DURATION [PATH [CONNS]]: an HTTP server (SRV_CMD: OpenResty), wrk (-c
# CONNS, default 50) straight at it. Its CPU per request is what compares with moonfcgi's
# own, whatever speaks to each.
http_direct() {
    local w=$1 s=$2 d=$3 path=${4:-/} conns=${5:-50} t0 t1 c0 c1 ns0 ns1 ok=1 threads=1
    LG_RPS='' LG_BYTES_PER_S='' LG_P50_US='' LG_P99_US='' LG_MAX_US='' LG_ERRORS='' LG_CPU_PCT=''
    SRV_CPU_PCT='' SRV_MEM_KIB='' RUN_NOTE='' OTHER_CPU_PCT='' SRV_US_REQ=''
    next_addr
    if ! start_server "$w" "$s" "$ADDR"; then
        RUN_NOTE="did not start (see $RUN_DIR/$s-$w)"
        record "$w" "$s" 0
        return
    fi
    [ "$conns" -gt 1000 ] && threads=2
    run_wrk -t$threads -c"$conns" -d"${WARMUP}s" "http://$ADDR$path" >/dev/null 2>&1
    printf '\n### %s / %s: wrk\n' "$w" "$s" >>"$MF_LOADGEN_LOG"
    t0=$(cpu_ticks_of_pids "$SRV_PID")
    c0=$(cpu_ns_of_pids "$SRV_PID")
    ns0=$(now_ns)
    run_wrk -t$threads -c"$conns" -d"${d}s" --timeout 10s "http://$ADDR$path" >/dev/null || ok=0
    ns1=$(now_ns)
    c1=$(cpu_ns_of_pids "$SRV_PID")
    t1=$(cpu_ticks_of_pids "$SRV_PID")
    SRV_MEM_KIB=$(measure_mem)
    SRV_CPU_PCT=$(cpu_pct "$t0" "$t1" $((ns1 - ns0)))
    SRV_US_REQ=$(us_per_req "$c0" "$c1" "${LG_REQUESTS:-}")
    record "$w" "$s" "$ok"
    stop_pid "$SRV_PID" 5
}

# idle_conns W S: the server SRV_CMD, then mf-idle holding IDLE_CONNS idle kept connections;
# the memory of all the server's processes is read in the middle of the hold.
idle_conns() {
    local w=$1 s=$2 idle_pid out base held_pss i line ok=1
    LG_RPS='' LG_BYTES_PER_S='' LG_P50_US='' LG_P99_US='' LG_MAX_US='' LG_ERRORS='' LG_CPU_PCT=''
    SRV_CPU_PCT='' SRV_MEM_KIB='' RUN_NOTE='' OTHER_CPU_PCT=''
    if [ ! -x "$IDLE" ]; then
        RUN_NOTE="$IDLE not built"
        record "$w" "$s" 0
        return
    fi
    next_addr
    if ! start_server "$w" "$s" "$ADDR"; then
        RUN_NOTE="did not start"
        record "$w" "$s" 0
        return
    fi
    mf_nap 0.3
    base=$(rss_kib_of_pids "$SRV_PID")
    out="$RUN_DIR/$w-$s.idle"
    start_bg "$out" "${MF_LOADGEN_WRAP[@]}" "$IDLE" --connect "$ADDR" -c "$IDLE_CONNS" \
        --hold "$IDLE_HOLD" --timeout 30
    idle_pid=$BG_PID
    for ((i = 0; i < 700; i++)); do
        grep -q '^IDLE ' "$out" 2>/dev/null && break
        mf_alive "$idle_pid" || break
        mf_nap 0.05
    done
    if grep -q '^IDLE ' "$out" 2>/dev/null; then
        mf_nap "$(awk -v h="$IDLE_HOLD" 'BEGIN { print h / 2 }')"
        SRV_MEM_KIB=$(rss_kib_of_pids "$SRV_PID")
        held_pss=$(pss_kib_of_pids "$SRV_PID")
    fi
    # mf-idle ends by itself after the hold; the bound only catches a hung one.
    for ((i = 0; i < 700; i++)); do
        mf_alive "$idle_pid" || break
        mf_nap 0.05
    done
    stop_pid "$idle_pid" 2
    line=$(grep '^RESULT ' "$out" | tail -n 1)
    [[ $line == *" dropped=0 failed=0 "* ]] || ok=0
    [ -n "${SRV_MEM_KIB:-}" ] || ok=0
    LG_ERRORS=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "dropped" || kv[1] == "failed") e += kv[2] } } END { print e + 0 }' <<<"${line:-RESULT}")
    RUN_NOTE="$IDLE_CONNS conns; before: ${base} KiB RSS; held: ${held_pss:-?} KiB PSS; ${line#RESULT }"
    record "$w" "$s" "$ok"
    stop_pid "$SRV_PID" 5
}

want() {
    case " ${ONLY[*]} " in
    *" $1 "*) return 0 ;;
    esac
    return 1
}

W_HELLO=$REPO/examples/hello.lua
MF_ONE=("$MOONFCGI" --workers 1 --log-level warn)

if want hello; then
    mf_log "workload hello: hello world, kept connections, -c 50"
    for ((round = 1; round <= ROUNDS; round++)); do
        SRV_CMD=("${MF_ONE[@]}" "$W_HELLO")
        direct hello moonfcgi -c 50 -d "$D_ROUND" --strict
        SRV_CMD=("$CEILING")
        direct hello ceiling -c 50 -d "$D_ROUND" --strict
    done
    if [ "$HAVE_LIBFCGI" = 1 ]; then
        # A libfcgi thread keeps one kept connection: as many connections as threads.
        SRV_CMD=("$LIBFCGI" --threads 2)
        direct hello libfcgi -c 2 -d "$D_HELLO" --strict
        SRV_CMD=("$LIBFCGI" --threads 50)
        direct hello libfcgi-50t -c 50 -d "$D_HELLO" --strict
    fi
    if [ "$HAVE_PHP" = 1 ]; then
        # A PHP-FPM child keeps one kept connection: -c 8 for 8 children. PHP-FPM ends its
        # STDOUT without the empty record, so no --strict.
        SRV_CMD=(php-fpm)
        direct hello php-fpm -c 8 -d "$D_HELLO" --document-root "$HERE/peers" --uri /hello.php
    fi
    if [ "$HAVE_WSAPI" = 1 ]; then
        SRV_CMD=(wsapi)
        direct hello wsapi -c 1 -d "$D_HELLO" --document-root "$APPS" --uri /wsapi_hello.lua
    fi
fi

if want nginx; then
    if [ "$HAVE_NGINX" = 1 ] && [ "$HAVE_WRK" = 1 ]; then
        mf_log "workload nginx: wrk -t1 -c50 -> nginx (keepalive 64, fastcgi_keep_conn) -> server"
        for ((round = 1; round <= ROUNDS; round++)); do
            SRV_CMD=("${MF_ONE[@]}" "$W_HELLO")
            through_nginx nginx moonfcgi "$D_ROUND"
            SRV_CMD=("$CEILING")
            through_nginx nginx ceiling "$D_ROUND"
        done
    else
        note "nginx workload skipped: needs nginx and wrk (apt-get install nginx wrk)"
    fi
fi

if want noconn; then
    mf_log "workload noconn: a new connection per request"
    SRV_CMD=("${MF_ONE[@]}" "$W_HELLO")
    direct noconn moonfcgi -c 50 -d "$D" --no-keep-conn --strict
    SRV_CMD=("$CEILING")
    direct noconn ceiling -c 50 -d "$D" --no-keep-conn --strict
    if [ "$HAVE_LIBFCGI" = 1 ]; then
        SRV_CMD=("$LIBFCGI" --threads 2)
        direct noconn libfcgi -c 50 -d "$D" --no-keep-conn --strict
    fi
    if [ "$HAVE_PHP" = 1 ]; then
        SRV_CMD=(php-fpm)
        direct noconn php-fpm -c 50 -d "$D" --no-keep-conn --document-root "$HERE/peers" \
            --uri /hello.php
    fi
fi

if want body64k; then
    mf_log "workload body64k: 64 KiB responses"
    for ((round = 1; round <= ROUNDS; round++)); do
        SRV_CMD=("${MF_ONE[@]}" "$APPS/bytes.lua")
        direct body64k moonfcgi -c 50 -d "$D_ROUND" --strict --expect-body-bytes 65536
        SRV_CMD=("$CEILING" --body-size 65536)
        direct body64k ceiling -c 50 -d "$D_ROUND" --strict --expect-body-bytes 65536
    done
fi

if want upload; then
    mf_log "workload upload: 1 MiB request bodies"
    for ((round = 1; round <= ROUNDS; round++)); do
        SRV_CMD=("${MF_ONE[@]}" "$APPS/upload.lua")
        direct upload moonfcgi -c 8 -d "$D_ROUND" --strict --body 1048576
        SRV_CMD=("$CEILING" --read-body)
        direct upload ceiling -c 8 -d "$D_ROUND" --strict --body 1048576
    done
    if [ "$HAVE_LIBFCGI" = 1 ]; then
        SRV_CMD=("$LIBFCGI" --threads 2)
        direct upload libfcgi -c 2 -d "$D" --strict --body 1048576
    fi
    if [ "$HAVE_PHP" = 1 ]; then
        SRV_CMD=(php-fpm)
        direct upload php-fpm -c 8 -d "$D" --body 1048576 --document-root "$HERE/peers" \
            --uri /hello.php
    fi
fi

if want stream; then
    mf_log "workload stream: $STREAM_MIB MiB to a reader taking $SLOW_BPS bytes/s"
    MEM_MODE=hwm
    SRV_CMD=("${MF_ONE[@]}" "$APPS/stream.lua")
    direct stream moonfcgi -c 1 -n 1 -d 60 --timeout 60 --slow-read "$SLOW_BPS" \
        --expect-body-bytes $((STREAM_MIB << 20)) --strict --uri "/?mib=$STREAM_MIB"
    SRV_CMD=("$CEILING" --stream-mib "$STREAM_MIB")
    direct stream ceiling -c 1 -n 1 -d 60 --timeout 60 --slow-read "$SLOW_BPS" \
        --expect-body-bytes $((STREAM_MIB << 20)) --strict
    MEM_MODE=rss
fi

if want mpx; then
    mf_log "workload mpx: -c 50 -m 16"
    SRV_CMD=("${MF_ONE[@]}" "$W_HELLO")
    direct mpx moonfcgi -c 50 -m 16 -d "$D" --strict
    SRV_CMD=("$CEILING")
    direct mpx ceiling -c 50 -m 16 -d "$D" --strict
fi

if want idle; then
    mf_log "workload idle: $IDLE_CONNS idle kept connections, $NCPU server processes each side"
    SRV_CMD=("$MOONFCGI" --workers "$NCPU" --max-conns 20000 --log-level warn "$W_HELLO")
    idle_conns idle moonfcgi
    SRV_CMD=("$CEILING" --procs "$NCPU")
    idle_conns idle ceiling
fi

if want sleep; then
    mf_log "workload sleep: moonfcgi.sleep(0.01), 2000 requests in flight"
    SRV_CMD=("${MF_ONE[@]}" --max-conns 4096 --max-reqs 4096 "$APPS/sleep.lua")
    direct sleep moonfcgi -c 200 -m 10 -d "$D" --strict
fi

if want json; then
    mf_log "workload json: 50 records encoded with lua-cjson per request"
    for ((round = 1; round <= ROUNDS; round++)); do
        SRV_CMD=("${MF_ONE[@]}" "$APPS/json.lua")
        direct json moonfcgi -c 50 -d "$D_ROUND" --strict
        if [ "$HAVE_OPENRESTY" = 1 ]; then
            SRV_CMD=(openresty "$HERE/openresty/json.lua" "$APPS/?.lua")
            http_direct json openresty "$D_ROUND"
        fi
    done
    if [ "$HAVE_NGINX" = 1 ] && [ "$HAVE_WRK" = 1 ]; then
        SRV_CMD=("${MF_ONE[@]}" "$APPS/json.lua")
        through_nginx json moonfcgi "$D"
    fi
    if [ "$HAVE_PHP" = 1 ]; then
        SRV_CMD=(php-fpm)
        direct json php-fpm -c 8 -d "$D" --document-root "$HERE/peers" --uri /json.php
    fi
fi

if want redis-get; then
    mf_log "workload redis-get: GET one of 1,000 keys through lua-resty-redis, pooled"
    if [ "$HAVE_OPENRESTY" = 1 ] && command -v redis-server >/dev/null 2>&1; then
        next_addr
        REDIS_ADDR=$ADDR
        if redis_start "$REDIS_ADDR" "$RUN_DIR/redis"; then
            export MF_RESTY_LUA=$MF_OPENRESTY_DIR/root/usr/share/lua/5.1
            q="/?port=${REDIS_ADDR##*:}"
            for ((round = 1; round <= ROUNDS; round++)); do
                SRV_CMD=("${MF_ONE[@]}" "$APPS/redis.lua")
                direct redis-get moonfcgi -c 50 -d "$D_ROUND" --strict --uri "$q"
                SRV_CMD=(openresty "$HERE/openresty/redis.lua" "$APPS/?.lua")
                http_direct redis-get openresty "$D_ROUND" "$q"
            done
            if [ "$HAVE_NGINX" = 1 ]; then
                SRV_CMD=("${MF_ONE[@]}" "$APPS/redis.lua")
                through_nginx redis-get moonfcgi "$D" "$q"
            fi
            if [ "$HAVE_PHP" = 1 ] && php -m 2>/dev/null | grep -qx redis; then
                SRV_CMD=(php-fpm)
                direct redis-get php-fpm -c 8 -d "$D" --document-root "$HERE/peers" \
                    --uri "/redis.php$q"
            else
                note "redis-get: PHP-FPM peer skipped (apt-get install php-fpm php-redis)"
            fi
            stop_pid "$REDIS_PID" 5
        else
            note "redis-get skipped: redis-server did not start (see $RUN_DIR/redis)"
        fi
    else
        note "redis-get skipped: needs redis-server and OpenResty's packages"
    fi
fi

if want upstream-wait; then
    mf_log "workload upstream-wait: 10,000 requests in flight, each waiting 50 ms upstream"
    next_addr
    UP_ADDR=$ADDR
    if upstream_start "$UP_ADDR" 50 "$RUN_DIR/upstream.log"; then
        q="/?port=${UP_ADDR##*:}"
        MEM_MODE=hwm
        SRV_CMD=("$MOONFCGI" --workers 1 --log-level warn --max-conns 20000 --max-reqs 20000
            --max-sockets 20000 "$APPS/upstream_wait.lua")
        direct upstream-wait moonfcgi -c 1000 -m 10 -d "$D" --timeout 30 --strict --uri "$q"
        if [ "$HAVE_OPENRESTY" = 1 ]; then
            SRV_CMD=(openresty "$HERE/openresty/upstream_wait.lua" "$APPS/?.lua")
            http_direct upstream-wait openresty "$D" "$q" 10000
        fi
        MEM_MODE=rss
        stop_pid "$UPSTREAM_PID" 5
    else
        note "upstream-wait skipped: mf-upstream did not start"
    fi
fi

# ---- the report ----

finish_rows

# fig KEY ARRAY: a figure or empty.
fig() {
    local -n arr=$2
    printf '%s' "${arr[$1]:-}"
}

# The figure a workload is judged by, for the ratio column: throughput, or memory.
key_metric() {
    local w=${1%%/*} k=$1
    case $w in
    body64k) fig "$k" R_BPS ;;
    upload) [ -n "${R_RPS[$k]:-}" ] && awk -v r="${R_RPS[$k]}" 'BEGIN { printf "%.1f", r * 1048576 }' ;;
    stream | idle) fig "$k" R_MEM ;;
    *) fig "$k" R_RPS ;;
    esac
}

key_name() {
    case $1 in
    body64k) echo "STDOUT bytes/s" ;;
    upload) echo "upload bytes/s (req/s x 1 MiB)" ;;
    stream) echo "peak memory, summed VmHWM (lower is better)" ;;
    idle) echo "RSS of all processes while held (lower is better)" ;;
    *) echo "req/s" ;;
    esac
}

# ratio A B: A/B with two decimals, or "-".
ratio() {
    awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

num() {
    # num VALUE DIVISOR DECIMALS
    awk -v v="${1:-}" -v d="$2" -v p="$3" 'BEGIN { if (v == "") print "-"; else printf "%.*f\n", p, v / d }'
}

mf_key_of() {
    # The moonfcgi row of a workload (the nginx workload's is "nginx+moonfcgi").
    if [ "$1" = nginx ]; then echo "nginx/nginx+moonfcgi"; else echo "$1/moonfcgi"; fi
}

print_table() {
    local key w s mfkey mbps lastw=''
    echo "| workload | server | req/s | MB/s | p50 ms | p99 ms | max ms | errors | loadgen cpu % | server cpu % | server cpu µs/req | other cpu % | memory MiB | moonfcgi ÷ this | moonfcgi p99 ÷ this |"
    echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for key in "${ROWS[@]}"; do
        w=${key%%/*}
        s=${key#*/}
        mfkey=$(mf_key_of "$w")
        if [ "$w" = upload ]; then
            mbps=$(awk -v r="${R_RPS[$key]:-}" 'BEGIN { if (r == "") print "-"; else printf "%.1f\n", r * 1048576 / 1e6 }')
        else
            mbps=$(num "${R_BPS[$key]:-}" 1e6 1)
        fi
        local label=$w
        [ "$w" = "$lastw" ] && label=''
        lastw=$w
        local rr pr
        if [ "$key" = "$mfkey" ]; then
            rr='1 (self)'
            pr=''
        else
            rr=$(ratio "$(key_metric "$mfkey")" "$(key_metric "$key")")
            pr=$(ratio "${R_P99[$mfkey]:-}" "${R_P99[$key]:-}")
        fi
        [ "${R_OK[$key]}" = 1 ] || s="$s (FAILED: ${R_NOTE[$key]})"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
            "$label" "$s" "$(num "${R_RPS[$key]:-}" 1 0)" "$mbps" \
            "$(num "${R_P50[$key]:-}" 1000 2)" "$(num "${R_P99[$key]:-}" 1000 2)" \
            "$(num "${R_MAX[$key]:-}" 1000 2)" "${R_ERR[$key]:--}" "${R_LGCPU[$key]:--}" \
            "${R_SRVCPU[$key]:--}" "${R_USREQ[$key]:--}" "${R_OTHER[$key]:--}" "$(num "${R_MEM[$key]:-}" 1024 1)" "$rr" "${pr:--}"
    done
}

TARGET_LINES=()
# target NAME DESCRIPTION VALUE OP THRESHOLD [UNIT]: one row of the targets table. VALUE is
# empty when a run is missing; a run with errors on moonfcgi's side cannot PASS.
target() {
    local name=$1 desc=$2 value=$3 op=$4 thr=$5 unit=${6:-} mfok=${7:-1} verdict
    if [ -z "$value" ] || [ "$value" = - ]; then
        verdict="not run"
    elif [ "$mfok" != 1 ]; then
        verdict="ERR"
    else
        verdict=$(awk -v v="$value" -v t="$thr" -v op="$op" 'BEGIN {
            ok = (op == ">=") ? (v >= t) : (v < t); print ok ? "PASS" : "MISS" }')
    fi
    TARGET_LINES+=("$(printf '| %s | %s %s%s | %s%s | %s |' "$desc" "$op" "$thr" "$unit" "$value" "$unit" "$verdict")")
    SUMMARY+=("TARGET name=$name value=${value:--} target=$op$thr verdict=${verdict// /_}")
}

SUMMARY=()
for key in "${ROWS[@]}"; do
    SUMMARY+=("BENCH workload=${key%%/*} server=${key#*/} ok=${R_OK[$key]} rps=${R_RPS[$key]:--} bytes_per_s=${R_BPS[$key]:--} p50_us=${R_P50[$key]:--} p99_us=${R_P99[$key]:--} max_us=${R_MAX[$key]:--} errors=${R_ERR[$key]:--} loadgen_cpu_pct=${R_LGCPU[$key]:--} server_cpu_pct=${R_SRVCPU[$key]:--} other_cpu_pct=${R_OTHER[$key]:--} mem_kib=${R_MEM[$key]:--} cpu_us_per_req=${R_USREQ[$key]:--}")
done

mfok() { [ "${R_OK[$1]:-0}" = 1 ] && echo 1 || echo 0; }
mib() { num "${R_MEM[$1]:-}" 1024 1; }
# vs_ceiling W FIGURE-ARRAY: moonfcgi against the ceiling on workload W. Where mf-bench ran
# at 95% of its core or more for either, requests/s measure the load generator: then the
# ratio is the ceiling's server CPU per request over moonfcgi's (higher is better, as for
# throughput). Sets VS_VALUE, and VS_HOW to the measure used.
vs_ceiling() {
    local w=$1 -n arr=$2 lg
    lg=$(awk -v a="${R_LGCPU[$w/moonfcgi]:-0}" -v b="${R_LGCPU[$w/ceiling]:-0}" 'BEGIN { print (a >= 95 || b >= 95) ? 1 : 0 }')
    if [ "$lg" = 1 ] && [ -n "${R_USREQ[$w/moonfcgi]:-}" ] && [ -n "${R_USREQ[$w/ceiling]:-}" ]; then
        VS_HOW="server CPU per request, ceiling ÷ moonfcgi: mf-bench saturated"
        VS_VALUE=$(ratio "${R_USREQ[$w/ceiling]}" "${R_USREQ[$w/moonfcgi]}")
    else
        VS_HOW=$3
        VS_VALUE=$(ratio "${arr[$w/moonfcgi]:-}" "${arr[$w/ceiling]:-}")
    fi
}
vs_ceiling hello R_RPS req/s
target hello_vs_ceiling "hello direct, moonfcgi vs ceiling ($VS_HOW)" "$VS_VALUE" ">=" 0.95 "" "$(mfok hello/moonfcgi)"
target hello_vs_libfcgi "hello direct, moonfcgi ÷ libfcgi --threads 2 (req/s)" \
    "$(ratio "${R_RPS[hello/moonfcgi]:-}" "${R_RPS[hello/libfcgi]:-}")" ">=" 1.2 "" "$(mfok hello/moonfcgi)"
target hello_vs_php_fpm "hello direct, moonfcgi ÷ PHP-FPM (req/s)" \
    "$(ratio "${R_RPS[hello/moonfcgi]:-}" "${R_RPS[hello/php-fpm]:-}")" ">=" 3.5 "" "$(mfok hello/moonfcgi)"
target hello_p99_vs_ceiling "hello direct p99, moonfcgi ÷ ceiling (lower is better)" \
    "$(ratio "${R_P99[hello/moonfcgi]:-}" "${R_P99[hello/ceiling]:-}")" "<" 1.5 "" "$(mfok hello/moonfcgi)"
target nginx_vs_ceiling "through nginx, moonfcgi ÷ ceiling (req/s)" \
    "$(ratio "${R_RPS[nginx/nginx+moonfcgi]:-}" "${R_RPS[nginx/nginx+ceiling]:-}")" ">=" 0.9 "" "$(mfok nginx/nginx+moonfcgi)"
vs_ceiling body64k R_BPS bytes/s
target body64k_vs_ceiling "64 KiB responses, moonfcgi vs ceiling ($VS_HOW)" "$VS_VALUE" ">=" 0.95 "" "$(mfok body64k/moonfcgi)"
vs_ceiling mpx R_RPS req/s
target mpx_vs_ceiling "16 multiplexed requests a connection, moonfcgi vs ceiling ($VS_HOW)" "$VS_VALUE" ">=" 0.9 "" "$(mfok mpx/moonfcgi)"
target json_cpu_vs_openresty "json, server CPU per request, moonfcgi ÷ OpenResty (lower is better)" \
    "$(ratio "${R_USREQ[json/moonfcgi]:-}" "${R_USREQ[json/openresty]:-}")" "<" 1.1 "" "$(mfok json/moonfcgi)"
target json_vs_php_fpm "json, moonfcgi ÷ PHP-FPM (req/s)" \
    "$(ratio "${R_RPS[json/moonfcgi]:-}" "${R_RPS[json/php-fpm]:-}")" ">=" 3 "" "$(mfok json/moonfcgi)"
target redis_cpu_vs_openresty "redis-get, server CPU per request, moonfcgi ÷ OpenResty (lower is better)" \
    "$(ratio "${R_USREQ[redis-get/moonfcgi]:-}" "${R_USREQ[redis-get/openresty]:-}")" "<" 1.1 "" "$(mfok redis-get/moonfcgi)"
target redis_vs_php_fpm "redis-get, moonfcgi ÷ PHP-FPM (req/s)" \
    "$(ratio "${R_RPS[redis-get/moonfcgi]:-}" "${R_RPS[redis-get/php-fpm]:-}")" ">=" 4 "" "$(mfok redis-get/moonfcgi)"
target upstream_wait_mem "10,000 requests waiting upstream, peak memory of all moonfcgi processes" \
    "$(mib upstream-wait/moonfcgi)" "<" 64 " MiB" "$(mfok upstream-wait/moonfcgi)"
target upstream_wait_p99 "10,000 requests waiting 50 ms upstream, p99 ÷ 50 ms" \
    "$(ratio "${R_P99[upstream-wait/moonfcgi]:-}" 50000)" "<" 1.2 "" "$(mfok upstream-wait/moonfcgi)"
target upload_vs_ceiling "1 MiB uploads, moonfcgi ÷ ceiling (bytes/s)" \
    "$(ratio "${R_RPS[upload/moonfcgi]:-}" "${R_RPS[upload/ceiling]:-}")" ">=" 0.9 "" "$(mfok upload/moonfcgi)"
target idle_rss "$IDLE_CONNS idle connections, RSS of all moonfcgi processes" \
    "$(mib idle/moonfcgi)" "<" 100 " MiB" "$(mfok idle/moonfcgi)"
target stream_peak "$STREAM_MIB MiB to a slow reader, peak memory of moonfcgi" \
    "$(mib stream/moonfcgi)" "<" 64 " MiB" "$(mfok stream/moonfcgi)"
if [ -n "${R_RPS[sleep/moonfcgi]:-}" ]; then
    SUMMARY+=("INFO name=sleep_vs_ideal value=$(ratio "${R_RPS[sleep/moonfcgi]}" 200000) p99_us=${R_P99[sleep/moonfcgi]:--}")
fi

machine() {
    printf -- '- machine: %s CPUs, %s, Linux %s\n' "$NCPU" \
        "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" "$(uname -r)"
    printf -- '- load average before / after: %s / %s\n' "$LOAD_BEFORE" "$(cut -d' ' -f1-3 /proc/loadavg)"
    printf -- '- pinning: %s\n' "$PINNING"
    printf -- '- moonfcgi: %s, %s\n' "$("$MOONFCGI" --version 2>&1 | head -n 1)" "$TREE"
}

report() {
    local n
    printf '## %s\n\n' "$STARTED"
    # shellcheck disable=SC2016 # the backquotes are Markdown
    printf -- '- command: `%s`%s\n' "$COMMAND_LINE" "$([ "$QUICK" = 1 ] && echo ' (quick: smoke test, not a measurement)')"
    machine
    printf -- '- workloads: %s\n\n' "${ONLY[*]}"
    print_table
    printf '\nmoonfcgi ÷ this compares the workload'"'"'s key figure: '
    local first=1 w
    for w in "${ONLY[@]}"; do
        [ "$first" = 1 ] || printf '; '
        first=0
        printf '%s: %s' "$w" "$(key_name "$w")"
    done
    printf '.\n\n| target | wanted | measured | verdict |\n| --- | --- | ---: | --- |\n'
    printf '%s\n' "${TARGET_LINES[@]}"
    if [ -n "${R_RPS[sleep/moonfcgi]:-}" ]; then
        printf '\nsleep: %s req/s = %s of the ideal 200,000 (2,000 in flight / 10 ms); p99 %s ms (the sleep is 10 ms).\n' \
            "$(num "${R_RPS[sleep/moonfcgi]}" 1 0)" "$(ratio "${R_RPS[sleep/moonfcgi]}" 200000)" \
            "$(num "${R_P99[sleep/moonfcgi]:-}" 1000 2)"
    fi
    printf '\nNotes:\n\n'
    printf -- '- memory MiB: VmRSS summed over the server and its children at the end of the run; stream: summed VmHWM (each process'"'"'s peak); idle: VmRSS while the connections are held. The idle workload runs %s processes on each side (moonfcgi: master + %s workers; ceiling: --procs %s); the rest run one moonfcgi worker (plus the master, which does no request work) against one process of the ceiling.\n' \
        "$NCPU" "$NCPU" "$NCPU"
    printf -- '- server cpu %%: CPU time of the server and its children over the run; 100 = one core. loadgen cpu %%: mf-bench'"'"'s own; near 100 the load generator, not the server, is the limit. other cpu %%: the rest of the machine over the run (all CPUs busy, from /proc/stat, minus the two), i.e. other jobs competing for the cores: a run with much of it is perturbed.\n'
    printf -- '- libfcgi and PHP-FPM hold one thread or child per kept connection: their keep-conn runs use -c 2 (libfcgi --threads 2) and -c 8 (8 children); libfcgi-50t is libfcgi with 50 threads and -c 50, for a like-for-like -c.\n'
    printf -- '- upload MB/s is request body bytes (req/s x 1 MiB); nginx MB/s is the HTTP bytes wrk read.\n'
    for n in "${NOTES[@]}"; do
        printf -- '- %s\n' "$n"
    done
    for key in "${ROWS[@]}"; do
        if [ -n "${R_LGCPU[$key]:-}" ] && awk -v c="${R_LGCPU[$key]}" 'BEGIN { exit !(c >= 95) }'; then
            printf -- '- %s: mf-bench used %s%% of its core: the figure may be the load generator'"'"'s limit.\n' "$key" "${R_LGCPU[$key]}"
        fi
        if [ -n "${R_OTHER[$key]:-}" ] && awk -v c="${R_OTHER[$key]}" 'BEGIN { exit !(c >= 25) }'; then
            printf -- '- %s: other jobs used %s%% of a core during the run: perturbed.\n' "$key" "${R_OTHER[$key]}"
        fi
        case $key in idle/* | nginx/*) printf -- '- %s: %s\n' "$key" "${R_NOTE[$key]}" ;; esac
    done
}

OUT=$(report)
printf '\n%s\n\n' "$OUT"
printf '%s\n' "${SUMMARY[@]}"
if [ -n "$SUMMARY_FILE" ]; then
    printf '%s\n' "${SUMMARY[@]}" >"$SUMMARY_FILE"
fi
if [ -n "$RESULTS_FILE" ]; then
    printf '\n%s\n' "$OUT" >>"$RESULTS_FILE"
    mf_log "report appended to $RESULTS_FILE"
fi
[ "$FAILED_RUNS" -eq 0 ]
