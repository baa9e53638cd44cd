# shellcheck shell=bash
# The LG_* and PHP_FPM_* variables are this file's output, read by the sourcing script.
# shellcheck disable=SC2034
#
# Reusable pieces for moonfcgi's benchmark scripts. Source it from bash; it runs nothing by
# itself:
#
#   . bench/lib.sh
#   trap stop_all_bg EXIT
#   start_bg "$dir/peer.log" "$MF_BENCH_BIN_DIR/mf-peer-libevent" --listen 127.0.0.1:19001
#   wait_port 127.0.0.1:19001 10 "$BG_PID"
#   run_loadgen --connect 127.0.0.1:19001 -c 50 -d 5 && echo "$LG_RPS req/s"
#
# Every wait is bounded in time, and only processes started here are ever signalled: by the
# pid recorded when they were started, never by name.
#
# Where the tools are (override any of these before or after sourcing):
#   MF_BUILD_DIR      the CMake build directory (default: <repo>/build)
#   MF_BENCH_BIN_DIR  where mf-bench and the mf-peer-* binaries are (default: $MF_BUILD_DIR/bench)
#   MF_BENCH          the load generator (default: $MF_BENCH_BIN_DIR/mf-bench)
#
# How to run them (arrays, empty by default; set them after sourcing):
#   MF_LOADGEN_WRAP   a prefix for the load generators run_loadgen and run_wrk start, e.g.
#                     (taskset -c 0) to keep them on CPU 0
#   MF_SERVER_WRAP    the same for the servers php_fpm_start and nginx_start start, e.g.
#                     (taskset -c 1); their children inherit it

MF_BENCH_SRC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
: "${MF_BUILD_DIR:=$(dirname "$MF_BENCH_SRC_DIR")/build}"
: "${MF_BENCH_BIN_DIR:=$MF_BUILD_DIR/bench}"
: "${MF_BENCH:=$MF_BENCH_BIN_DIR/mf-bench}"

# The pids start_bg started and stop_pid has not yet stopped, oldest first.
MF_BG_PIDS=()
MF_LOADGEN_WRAP=()
MF_SERVER_WRAP=()

mf_log() {
    printf '[bench] %s\n' "$*" >&2
}

# start_bg LOGFILE COMMAND [ARGS...]
# Starts COMMAND in the background with stdout and stderr in LOGFILE. Sets BG_PID and records
# it in MF_BG_PIDS for stop_all_bg.
start_bg() {
    local log=$1
    shift
    "$@" >"$log" 2>&1 </dev/null &
    BG_PID=$!
    MF_BG_PIDS+=("$BG_PID")
}

# Whether pid is a live process (a zombie waiting to be reaped counts as gone).
mf_alive() {
    local state
    kill -0 "$1" 2>/dev/null || return 1
    state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
    [ "$state" != Z ]
}

# A fractional sleep that also works where sleep takes whole seconds only.
mf_nap() {
    sleep "$1" 2>/dev/null || sleep 1
}

# Whether something accepts on ADDR right now (one attempt, at most one second).
mf_accepts() {
    local addr=$1 host port path
    case $addr in
    unix:*)
        path=${addr#unix:}
        [ -S "$path" ] || return 1
        # A listening unix socket shows up in ss with its path as the local address.
        if command -v ss >/dev/null 2>&1; then
            ss -xlnH 2>/dev/null | awk -v p="$path" '$5 == p { found = 1 } END { exit !found }'
            return
        fi
        return 0
        ;;
    \[*\]:*)
        host=${addr%]:*}
        host=${host#[}
        port=${addr##*]:}
        ;;
    *:*)
        host=${addr%:*}
        port=${addr##*:}
        ;;
    *)
        host=127.0.0.1
        port=$addr
        ;;
    esac
    [ -n "$host" ] || host=127.0.0.1
    # bash's /dev/tcp connects, and the subshell closes the socket again at once.
    timeout 1 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null
}

# wait_port ADDR [TIMEOUT_S=10] [PID]
# Waits until ADDR (host:port, [v6]:port, a bare port, or unix:/path) accepts connections.
# With PID, gives up as soon as that process has died. Returns 0 when ready, 1 otherwise.
wait_port() {
    local addr=$1 timeout_s=${2:-10} pid=${3:-} tries
    tries=$((timeout_s * 20))
    while [ "$tries" -gt 0 ]; do
        mf_accepts "$addr" && return 0
        if [ -n "$pid" ] && ! mf_alive "$pid"; then
            mf_log "process $pid died before $addr accepted"
            return 1
        fi
        mf_nap 0.05
        tries=$((tries - 1))
    done
    mf_log "$addr did not accept within ${timeout_s}s"
    return 1
}

# stop_pid PID [GRACE_S=5]
# SIGTERM, then SIGKILL if PID is still alive after GRACE_S seconds; reaps it when it is a
# child of this shell. Returns 0 if it ended on SIGTERM (or was already gone), 1 if it
# needed SIGKILL.
stop_pid() {
    local pid=$1 grace=${2:-5} tries rc=0 i
    tries=$((grace * 20))
    if mf_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null
        while [ "$tries" -gt 0 ] && mf_alive "$pid"; do
            mf_nap 0.05
            tries=$((tries - 1))
        done
        if mf_alive "$pid"; then
            mf_log "pid $pid ignored SIGTERM for ${grace}s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
            rc=1
        fi
    fi
    wait "$pid" 2>/dev/null
    for i in "${!MF_BG_PIDS[@]}"; do
        [ "${MF_BG_PIDS[$i]}" = "$pid" ] && unset 'MF_BG_PIDS[i]'
    done
    return "$rc"
}

# stop_all_bg: stops every process start_bg started, newest first. Meant for `trap ... EXIT`.
stop_all_bg() {
    local i pids=("${MF_BG_PIDS[@]}")
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        stop_pid "${pids[$i]}" 5
    done
}

# Prints the pids given and all their descendants, one per line.
mf_descendants() {
    ps -e -o pid=,ppid= | awk -v roots="$*" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) want[r[i]] = 1 }
        { parent[$1] = $2 }
        END {
            do {
                added = 0
                for (p in parent)
                    if (!(p in want) && (parent[p] in want)) { want[p] = 1; added = 1 }
            } while (added)
            for (p in want) if (p in parent) print p
        }'
}

# sum_of_pids FILE AWK-PROGRAM PID...
# Prints the sum, over the pids and all their descendants, of the number the awk program
# prints from /proc/PID/FILE (a process gone meanwhile counts 0).
sum_of_pids() {
    local file=$1 prog=$2 pid total=0 v
    shift 2
    for pid in $(mf_descendants "$@"); do
        v=$(awk "$prog" "/proc/$pid/$file" 2>/dev/null)
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# rss_kib_of_pids PID...
# Prints the summed resident set size in KiB of the pids and all their descendants (worker
# processes, a php-fpm master's children). Pages shared between processes are counted once
# per process: see pss_kib_of_pids for a sum that splits them.
rss_kib_of_pids() {
    sum_of_pids status '/^VmRSS:/ { print $2 }' "$@"
}

# pss_kib_of_pids PID...
# Like rss_kib_of_pids but proportional: a page shared by N processes counts 1/N in each,
# the fair figure for pre-forked workers. Needs /proc/PID/smaps_rollup (Linux 4.14+) and
# permission to read it (same user, or root).
pss_kib_of_pids() {
    sum_of_pids smaps_rollup '/^Pss:/ { print $2 }' "$@"
}

# hwm_kib_of_pids PID...
# Prints the summed peak resident set size (VmHWM) in KiB of the pids and all their
# descendants: an upper bound of the peak of their sum, since each peaked on its own.
hwm_kib_of_pids() {
    sum_of_pids status '/^VmHWM:/ { print $2 }' "$@"
}

# cpu_ticks_of_pids PID...
# Prints the user + system CPU time, in clock ticks (getconf CLK_TCK a second), that the pids
# and their live descendants have used so far. Sample it before and after a run.
cpu_ticks_of_pids() {
    # Fields 14 and 15 of /proc/PID/stat, counted after the ") " that ends the name.
    sum_of_pids stat '{ sub(/^.*\) /, ""); print $12 + $13 }' "$@"
}

# cpu_ns_of_pids PID...
# Prints the CPU time in nanoseconds that the pids, their live descendants and all their
# threads have run so far (the first field of /proc/PID/task/TID/schedstat). Finer than the
# clock ticks of cpu_ticks_of_pids (10 ms each), which made a 2 s run's figure per request
# move by a percent from one tick more or less.
cpu_ns_of_pids() {
    local pid total=0 v
    for pid in $(mf_descendants "$@"); do
        v=$(cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s + 0 }')
        total=$((total + ${v:-0}))
    done
    echo "$total"
}

# free_port [FIRST=19400]
# Sets FREE_PORT to the first port from FIRST on which nothing accepts on 127.0.0.1. Another
# process may still take it before the caller binds: check that the server started.
free_port() {
    local p=${1:-19400}
    while mf_accepts "127.0.0.1:$p"; do
        p=$((p + 1))
    done
    FREE_PORT=$p
}

# run_loadgen [MF-BENCH ARGS...]
# Runs mf-bench, shows its report, and parses its last line
#   RESULT rps=.. bytes_per_s=.. p50_us=.. p99_us=.. max_us=.. errors=.. requests=.. cpu_pct=..
# into LG_RPS, LG_BYTES_PER_S, LG_P50_US, LG_P99_US, LG_MAX_US, LG_ERRORS, LG_REQUESTS,
# LG_CPU_PCT (and the whole line into LG_RESULT). Values are decimal numbers, some with a
# fraction: compare them with awk, not [ -gt ]. Returns mf-bench's exit status (0: no
# errors, 1: errors, 2: bad usage, 124: killed by the safety timeout). The report also goes
# to MF_LOADGEN_LOG when that is set.
run_loadgen() {
    local out rc line kv key val
    LG_RESULT='' LG_RPS='' LG_BYTES_PER_S='' LG_P50_US='' LG_P99_US='' LG_MAX_US=''
    LG_ERRORS='' LG_REQUESTS='' LG_CPU_PCT=''
    # mf-bench bounds itself (-d, or 120 s with -n); this only catches a hung binary.
    out=$(timeout -k 5 "${MF_LOADGEN_TIMEOUT:-900}" "${MF_LOADGEN_WRAP[@]}" "$MF_BENCH" "$@")
    rc=$?
    printf '%s\n' "$out"
    [ -n "${MF_LOADGEN_LOG:-}" ] && printf '%s\n' "$out" >>"$MF_LOADGEN_LOG"
    line=$(printf '%s\n' "$out" | grep '^RESULT ' | tail -n 1)
    if [ -z "$line" ]; then
        mf_log "mf-bench printed no RESULT line (exit status $rc)"
        [ "$rc" -eq 0 ] && rc=2
        return "$rc"
    fi
    LG_RESULT=$line
    for kv in ${line#RESULT }; do
        key=${kv%%=*}
        val=${kv#*=}
        # Only known names and numbers become variables: the line is not trusted as code.
        [[ $val =~ ^[0-9]+(\.[0-9]+)?$ ]] || continue
        case $key in
        rps) LG_RPS=$val ;;
        bytes_per_s) LG_BYTES_PER_S=$val ;;
        p50_us) LG_P50_US=$val ;;
        p99_us) LG_P99_US=$val ;;
        max_us) LG_MAX_US=$val ;;
        errors) LG_ERRORS=$val ;;
        requests) LG_REQUESTS=$val ;;
        cpu_pct) LG_CPU_PCT=$val ;;
        esac
    done
    return "$rc"
}

# The php-fpm binary: php-fpm, or the newest versioned one (Debian: /usr/sbin/php-fpm8.2).
php_fpm_bin() {
    local c
    for c in php-fpm /usr/sbin/php-fpm; do
        command -v "$c" >/dev/null 2>&1 && { command -v "$c"; return 0; }
    done
    local found=()
    for c in /usr/sbin/php-fpm* /usr/bin/php-fpm*; do
        [ -x "$c" ] && found+=("$c")
    done
    [ "${#found[@]}" -gt 0 ] || return 1
    printf '%s\n' "${found[@]}" | sort -V | tail -n 1
}

# php_fpm_start ADDR [CHILDREN=8] [RUNDIR]
# Renders bench/peers/php-fpm.conf.in into RUNDIR (default: a new temporary directory) and
# starts PHP-FPM in the foreground on ADDR (host:port or unix:/path), with -R when running
# as root. Waits until it accepts. Sets PHP_FPM_PID (also in MF_BG_PIDS) and PHP_FPM_RUNDIR;
# its logs are in PHP_FPM_RUNDIR. Point mf-bench at the script with
#   --document-root "$MF_BENCH_SRC_DIR/peers" --uri /hello.php
php_fpm_start() {
    local addr=$1 children=${2:-8} rundir=${3:-} bin listen user root_flag=()
    bin=$(php_fpm_bin) || { mf_log "php-fpm not found (apt-get install php-fpm)"; return 1; }
    [ -n "$rundir" ] || rundir=$(mktemp -d "${TMPDIR:-/tmp}/mf-php-fpm.XXXXXX") || return 1
    mkdir -p "$rundir" || return 1
    case $addr in
    unix:*) listen=${addr#unix:} ;;
    *) listen=$addr ;;
    esac
    user=$(id -un)
    [ "$(id -u)" -eq 0 ] && root_flag=(-R)
    sed -e "s|@RUNDIR@|$rundir|g" -e "s|@LISTEN@|$listen|g" -e "s|@USER@|$user|g" \
        -e "s|@CHILDREN@|$children|g" "$MF_BENCH_SRC_DIR/peers/php-fpm.conf.in" \
        >"$rundir/php-fpm.conf" || return 1
    start_bg "$rundir/php-fpm.stdout" "${MF_SERVER_WRAP[@]}" "$bin" -F "${root_flag[@]}" -p "$rundir" \
        -y "$rundir/php-fpm.conf"
    PHP_FPM_PID=$BG_PID
    PHP_FPM_RUNDIR=$rundir
    if ! wait_port "$addr" 15 "$PHP_FPM_PID"; then
        mf_log "php-fpm did not start; see $rundir/php-fpm.log"
        stop_pid "$PHP_FPM_PID" 5
        return 1
    fi
}

# nginx_start LISTEN UPSTREAM [RUNDIR] [DOCROOT]
# Renders bench/nginx/nginx.conf.in into RUNDIR (default: a new temporary directory) and
# starts nginx in the foreground, as one process, on LISTEN (host:port) with a keep-alive
# FastCGI upstream at UPSTREAM (host:port or unix:/path, as nginx spells them). Its pid file, logs and temp paths all stay in RUNDIR. Waits
# until it accepts. Sets NGINX_PID (also in MF_BG_PIDS) and NGINX_RUNDIR.
nginx_start() {
    local listen=$1 upstream=$2 rundir=${3:-} docroot=${4:-$MF_BENCH_SRC_DIR/peers} bin
    bin=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }) || {
        mf_log "nginx not found (apt-get install nginx)"
        return 1
    }
    [ -n "$rundir" ] || rundir=$(mktemp -d "${TMPDIR:-/tmp}/mf-nginx.XXXXXX") || return 1
    mkdir -p "$rundir" || return 1
    sed -e "s|@RUNDIR@|$rundir|g" -e "s|@LISTEN@|$listen|g" -e "s|@UPSTREAM@|$upstream|g" \
        -e "s|@DOCROOT@|$docroot|g" "$MF_BENCH_SRC_DIR/nginx/nginx.conf.in" \
        >"$rundir/nginx.conf" || return 1
    # -e: nginx opens its default error log before it reads the configuration.
    start_bg "$rundir/nginx.stdout" "${MF_SERVER_WRAP[@]}" "$bin" -p "$rundir" \
        -c "$rundir/nginx.conf" -e "$rundir/error.log"
    NGINX_PID=$BG_PID
    NGINX_RUNDIR=$rundir
    if ! wait_port "$listen" 10 "$NGINX_PID"; then
        mf_log "nginx did not start; see $rundir/error.log"
        stop_pid "$NGINX_PID" 5
        return 1
    fi
}

# redis_start ADDR RUNDIR [KEYS=1000]
# Starts redis-server in the foreground on ADDR (127.0.0.1:PORT), no persistence, and fills
# KEYS keys "key:1".. with 100-byte values. Sets REDIS_PID (also in MF_BG_PIDS).
redis_start() {
    local addr=$1 rundir=$2 keys=${3:-1000} port=${1##*:} i
    command -v redis-server >/dev/null 2>&1 || { mf_log "redis-server not found (apt-get install redis-server)"; return 1; }
    mkdir -p "$rundir" || return 1
    start_bg "$rundir/redis.log" redis-server --bind 127.0.0.1 --port "$port" --save '' \
        --appendonly no --dir "$rundir" --maxclients 20000
    REDIS_PID=$BG_PID
    wait_port "$addr" 10 "$REDIS_PID" || { stop_pid "$REDIS_PID" 5; return 1; }
    for ((i = 1; i <= keys; i++)); do
        printf 'SET key:%d %0100d\n' "$i" "$i"
    done | redis-cli -h 127.0.0.1 -p "$port" >/dev/null || return 1
}

# upstream_start ADDR DELAY_MS LOG: bench/upstream.c's mf-upstream. Sets UPSTREAM_PID.
upstream_start() {
    start_bg "$3" "$MF_BENCH_BIN_DIR/mf-upstream" --listen "$1" --delay-ms "$2"
    UPSTREAM_PID=$BG_PID
    wait_port "$1" 10 "$UPSTREAM_PID" || { stop_pid "$UPSTREAM_PID" 5; return 1; }
}

# OpenResty from Debian's packages, unpacked and never installed: installing
# libnginx-mod-http-lua pulls in OpenResty's luajit2, which replaces Debian's LuaJIT that
# moonfcgi is built against. The packages are fetched once into MF_OPENRESTY_DIR.
MF_OPENRESTY_DIR=${MF_OPENRESTY_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/moonfcgi/openresty}
MF_OPENRESTY_DEBS="libnginx-mod-http-lua libnginx-mod-http-ndk lua-resty-core lua-resty-lrucache
    libluajit2-5.1-2 lua-nginx-redis"

# openresty_fetch: downloads and unpacks the packages into $MF_OPENRESTY_DIR/root unless
# they are there already. Returns 1 (with a message) when they cannot be had.
openresty_fetch() {
    local root=$MF_OPENRESTY_DIR/root p
    [ -f "$root/.complete" ] && return 0
    mkdir -p "$MF_OPENRESTY_DIR/debs" "$root" || return 1
    # shellcheck disable=SC2086 # a list of package names
    (cd "$MF_OPENRESTY_DIR/debs" && apt-get download -o APT::Sandbox::User=root \
        $MF_OPENRESTY_DEBS >/dev/null 2>&1) || {
        mf_log "cannot download OpenResty's packages ($MF_OPENRESTY_DEBS)"
        return 1
    }
    for p in "$MF_OPENRESTY_DIR"/debs/*.deb; do
        dpkg-deb -x "$p" "$root" || return 1
    done
    touch "$root/.complete"
}

# openresty_start LISTEN APP.lua LUA_PATH [RUNDIR]
# Starts Debian's nginx with OpenResty's Lua module (bench/openresty/nginx.conf.in) in the
# foreground, one worker, running APP.lua (content_by_lua_file) for every request, with
# LUA_PATH (";"-separated templates) before the unpacked resty libraries. Sets OPENRESTY_PID
# (also in MF_BG_PIDS) and OPENRESTY_RUNDIR.
openresty_start() {
    local listen=$1 app=$2 luapath=$3 rundir=${4:-} bin root=$MF_OPENRESTY_DIR/root
    openresty_fetch || return 1
    bin=$(command -v nginx || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; }) || {
        mf_log "nginx not found (apt-get install nginx)"
        return 1
    }
    [ -n "$rundir" ] || rundir=$(mktemp -d "${TMPDIR:-/tmp}/mf-openresty.XXXXXX") || return 1
    mkdir -p "$rundir" || return 1
    luapath="$luapath;$root/usr/share/lua/5.1/?.lua;$root/usr/share/lua/5.1/?/init.lua"
    sed -e "s|@ROOT@|$root|g" -e "s|@RUNDIR@|$rundir|g" -e "s|@LISTEN@|$listen|g" \
        -e "s|@APP@|$app|g" -e "s|@LUA_PATH@|$luapath|g" \
        "$MF_BENCH_SRC_DIR/openresty/nginx.conf.in" >"$rundir/nginx.conf" || return 1
    start_bg "$rundir/nginx.stdout" env LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu" \
        "${MF_SERVER_WRAP[@]}" "$bin" -p "$rundir" -c "$rundir/nginx.conf" -e "$rundir/error.log"
    OPENRESTY_PID=$BG_PID
    OPENRESTY_RUNDIR=$rundir
    if ! wait_port "$listen" 10 "$OPENRESTY_PID"; then
        mf_log "OpenResty did not start; see $rundir/error.log"
        stop_pid "$OPENRESTY_PID" 5
        return 1
    fi
}

# Converts one of wrk's figures to a plain number: a latency ("850.00us", "1.30ms", "2.01s",
# "1.00m") to microseconds, a size ("512.00KB", "5.15MB") to bytes (wrk counts in 1024s).
mf_wrk_number() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        f["us"] = 1; f["ms"] = 1000; f["s"] = 1000000; f["m"] = 60000000; f["h"] = 3600000000
        f["B"] = 1; f["KB"] = 1024; f["MB"] = 1048576; f["GB"] = 1073741824; f["TB"] = 1099511627776
        printf "%.1f\n", (u in f) ? n * f[u] : n
    }'
}

# run_wrk [WRK ARGS...]
# Runs wrk with --latency added, shows its report (also appended to $MF_LOADGEN_LOG if set)
# and sets the same LG_* variables as run_loadgen: LG_RPS, LG_BYTES_PER_S (HTTP bytes read),
# LG_P50_US, LG_P99_US, LG_MAX_US, LG_REQUESTS, and LG_ERRORS (socket errors plus non-2xx/3xx
# answers); LG_CPU_PCT stays empty. Returns 1 when there were errors or no figures.
run_wrk() {
    local out rc
    LG_RESULT='' LG_RPS='' LG_BYTES_PER_S='' LG_P50_US='' LG_P99_US='' LG_MAX_US=''
    LG_ERRORS='' LG_REQUESTS='' LG_CPU_PCT=''
    command -v wrk >/dev/null 2>&1 || { mf_log "wrk not found (apt-get install wrk)"; return 2; }
    out=$(timeout -k 5 "${MF_LOADGEN_TIMEOUT:-900}" "${MF_LOADGEN_WRAP[@]}" wrk --latency "$@")
    rc=$?
    printf '%s\n' "$out"
    [ -n "${MF_LOADGEN_LOG:-}" ] && printf '%s\n' "$out" >>"$MF_LOADGEN_LOG"
    LG_RPS=$(printf '%s\n' "$out" | awk '$1 == "Requests/sec:" { print $2 }')
    LG_BYTES_PER_S=$(mf_wrk_number "$(printf '%s\n' "$out" | awk '$1 == "Transfer/sec:" { print $2 }')")
    LG_P50_US=$(mf_wrk_number "$(printf '%s\n' "$out" | awk '$1 == "50%" { print $2 }')")
    LG_P99_US=$(mf_wrk_number "$(printf '%s\n' "$out" | awk '$1 == "99%" { print $2 }')")
    LG_MAX_US=$(mf_wrk_number "$(printf '%s\n' "$out" | awk '$1 == "Latency" && NF >= 4 { print $4; exit }')")
    LG_REQUESTS=$(printf '%s\n' "$out" | awk '/ requests in / { print $1 }')
    LG_ERRORS=$(printf '%s\n' "$out" | awk '
        /Non-2xx or 3xx responses:/ { e += $NF }
        /Socket errors:/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) e += $i + 0 }
        END { print e + 0 }')
    if [ -z "$LG_RPS" ]; then
        mf_log "wrk printed no Requests/sec (exit status $rc)"
        return 1
    fi
    LG_RESULT="RESULT rps=$LG_RPS bytes_per_s=$LG_BYTES_PER_S p50_us=$LG_P50_US p99_us=$LG_P99_US max_us=$LG_MAX_US errors=$LG_ERRORS requests=$LG_REQUESTS"
    [ "$rc" -eq 0 ] && [ "$LG_ERRORS" = 0 ] && return 0
    [ "$rc" -ne 0 ] && return "$rc"
    return 1
}
