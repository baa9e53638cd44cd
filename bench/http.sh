#!/usr/bin/env bash
# wrk against moonfcgi --http, and against nginx in front of moonfcgi over FastCGI for the same
# app, so the development mode's cost shows beside the production path. Not asserted: it
# prints wrk's figures. Needs wrk (tools/install-deps.sh test) and nginx for the second row.
#   bench/http.sh [BUILD_DIR] [SECONDS]
set -euo pipefail
build=${1:-build}
seconds=${2:-5}
cd "$(dirname "$0")/.."
bin="$build/moonfcgi"
[ -x "$bin" ] || { echo "bench/http.sh: $bin missing (make build)" >&2; exit 2; }
command -v wrk >/dev/null || { echo "bench/http.sh: wrk not installed (apt-get install wrk)" >&2; exit 2; }

dir=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "bench/http.sh: nothing listens on $1" >&2
    exit 1
}

cat >"$dir/hello.lua" <<'LUA'
return function(req)
    req:set_header("Content-Type", "text/plain")
    req:write("hello\n")
end
LUA

hport=$(free_port)
fport=$(free_port)
"$bin" --http "127.0.0.1:$hport" --listen "127.0.0.1:$fport" --workers 1 --log-level warn \
    "$dir/hello.lua" >"$dir/moonfcgi.log" 2>&1 &
pids+=($!)
wait_port "$hport"

row() {
    local name=$1 url=$2 out rps lat
    out=$(wrk -t1 -c32 -d"${seconds}s" --latency "$url")
    rps=$(echo "$out" | sed -n 's/^Requests\/sec: *//p')
    lat=$(echo "$out" | awk '/ 99%/ {print $2}')
    errs=$(echo "$out" | sed -n 's/.*Non-2xx or 3xx responses: *//p')
    printf '%-28s %12s req/s   p99 %-8s errors %s\n' "$name" "$rps" "$lat" "${errs:-0}"
}

echo "wrk -t1 -c32 -d${seconds}s, one moonfcgi worker, a 6-byte answer"
row "moonfcgi --http" "http://127.0.0.1:$hport/"
if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
    nport=$(free_port)
    mkdir -p "$dir/nginx/logs"
    cat >"$dir/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
error_log $dir/nginx/logs/error.log warn;
pid $dir/nginx/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $dir/nginx/tmp;
    fastcgi_temp_path $dir/nginx/tmp;
    upstream moonfcgi { server 127.0.0.1:$fport; keepalive 32; }
    server {
        listen 127.0.0.1:$nport;
        location / { include /etc/nginx/fastcgi_params; fastcgi_keep_conn on; fastcgi_pass moonfcgi; }
    }
}
CONF
    "${NGINX_BIN:-/usr/sbin/nginx}" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" >/dev/null 2>&1 &
    pids+=($!)
    wait_port "$nport"
    row "nginx -> moonfcgi (FastCGI)" "http://127.0.0.1:$nport/"
fi
