#!/usr/bin/env bash
# Serves APP.lua behind nginx, the deployment the guide describes: moonfcgi speaks FastCGI on
# 127.0.0.1:9000, nginx speaks HTTP on 127.0.0.1:8080 and keeps its connections to moonfcgi
# open (fastcgi_keep_conn on, an upstream keepalive pool). nginx's configuration comes from
# spec/support/nginx.lua, the generator the integration specs run nginx with. Runs in the
# foreground until Ctrl-C or SIGTERM, then stops both. `make run` calls it.
#
#   examples/serve-behind-nginx.sh MOONFCGI_BIN APP.lua
#
# Environment (all optional):
#   MOONFCGI_LISTEN   where moonfcgi listens: HOST:PORT or unix:/PATH (127.0.0.1:9000)
#   NGINX_LISTEN      where nginx listens (127.0.0.1:8080)
#   MOONFCGI_WORKERS  moonfcgi's --workers (1: examples/rest.lua keeps its items in the
#                     worker's memory, so one worker shows one consistent list)
#   NGINX_BIN         the nginx binary (/usr/sbin/nginx, else nginx on the PATH)
#   RUN_DIR           where nginx.conf, nginx's logs and temp files go (default: a new
#                     directory under /tmp, removed at exit; a given one is kept)
set -euo pipefail

usage() {
    echo "usage: $0 MOONFCGI_BIN APP.lua" >&2
    exit 2
}
[ $# -eq 2 ] || usage
bin=$1
app=$2
here=$(cd "$(dirname "$0")" && pwd)
support="$here/../spec/support"

fcgi_listen=${MOONFCGI_LISTEN:-127.0.0.1:9000}
http_listen=${NGINX_LISTEN:-127.0.0.1:8080}
workers=${MOONFCGI_WORKERS:-1}

die() {
    echo "serve-behind-nginx: $*" >&2
    exit 1
}

[ -x "$bin" ] || die "$bin is not an executable (build moonfcgi first: make build)"
[ -f "$app" ] || die "$app: no such app file"
nginx=${NGINX_BIN:-}
if [ -z "$nginx" ]; then
    if [ -x /usr/sbin/nginx ]; then
        nginx=/usr/sbin/nginx
    else
        nginx=$(command -v nginx || true)
    fi
fi
if [ -z "$nginx" ] || [ ! -x "$nginx" ]; then
    die "nginx is not installed (as root: apt-get install nginx)"
fi
command -v luajit >/dev/null || die "luajit is not installed (as root: apt-get install luajit)"

# True when something accepts connections on ADDR (HOST:PORT or unix:/PATH).
accepting() {
    local addr=$1
    case $addr in
    unix:*) [ -S "${addr#unix:}" ] ;;
    *)
        local host=${addr%:*} port=${addr##*:}
        host=${host#[}
        host=${host%]}
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
        ;;
    esac
}

# Waits up to 10 s for ADDR to accept while PID runs.
wait_accepting() {
    local addr=$1 pid=$2 what=$3
    for _ in $(seq 100); do
        if accepting "$addr"; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || die "$what exited before it listened on $addr"
        sleep 0.1
    done
    die "$what did not listen on $addr within 10 s"
}

case $fcgi_listen in
unix:*) ;;
*) ! accepting "$fcgi_listen" || die "$fcgi_listen is already in use (set MOONFCGI_LISTEN)" ;;
esac
! accepting "$http_listen" || die "$http_listen is already in use (set NGINX_LISTEN)"
[ "$http_listen" != "$fcgi_listen" ] || die "nginx and moonfcgi cannot both listen on $http_listen"

own_run_dir=0
if [ -n "${RUN_DIR:-}" ]; then
    run_dir=$(mkdir -p "$RUN_DIR" && cd "$RUN_DIR" && pwd)
else
    run_dir=$(mktemp -d /tmp/moonfcgi-nginx.XXXXXX)
    own_run_dir=1
fi
# nginx started as root runs its workers as www-data: they use the temp paths in here.
chmod 755 "$run_dir"

moonfcgi_pid=""
nginx_pid=""

# Stops one process by pid: SIGTERM, then SIGKILL after 10 s. (Called from the traps.)
# shellcheck disable=SC2317
stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

stopped=0
# shellcheck disable=SC2317
stop_all() {
    [ "$stopped" = 0 ] || return 0
    stopped=1
    # nginx first, so that no request reaches a moonfcgi that is going away.
    stop_pid "$nginx_pid"
    stop_pid "$moonfcgi_pid"
    if [ "$own_run_dir" = 1 ]; then
        rm -rf "$run_dir"
    fi
}
trap 'stop_all' EXIT
trap 'echo; echo "stopping nginx and moonfcgi"; stop_all; exit 0' INT TERM HUP

# The one source of nginx's configuration: spec/support/nginx.lua.
NGX_SUPPORT=$support NGX_PREFIX=$run_dir NGX_LISTEN=$http_listen NGX_UPSTREAM=$fcgi_listen \
    luajit -e '
package.path = os.getenv("NGX_SUPPORT") .. "/?.lua;" .. package.path
local nginx = require "nginx"
local path, err = nginx.write{
    prefix = os.getenv("NGX_PREFIX"),
    listen = os.getenv("NGX_LISTEN"),
    upstream = os.getenv("NGX_UPSTREAM"),
    keepalive = 8,
}
if not path then
    io.stderr:write("cannot write nginx.conf: ", tostring(err), "\n")
    os.exit(1)
end' || die "cannot generate nginx.conf"

# moonfcgi logs to this terminal. On a unix socket, nginx's workers (www-data when nginx
# starts as root) must be able to connect: the socket is made world-writable.
socket_mode=()
case $fcgi_listen in
unix:*) socket_mode=(--socket-mode 0666) ;;
esac
"$bin" --listen "$fcgi_listen" --workers "$workers" "${socket_mode[@]}" "$app" &
moonfcgi_pid=$!
wait_accepting "$fcgi_listen" "$moonfcgi_pid" moonfcgi

"$nginx" -p "$run_dir/" -c "$run_dir/nginx.conf" -e "$run_dir/error.log" &
nginx_pid=$!
wait_accepting "$http_listen" "$nginx_pid" nginx

url="http://$http_listen"
cat <<EOF

moonfcgi (pid $moonfcgi_pid) serves $app over FastCGI on $fcgi_listen
nginx    (pid $nginx_pid) serves it over HTTP on $url
         configuration $run_dir/nginx.conf, logs $run_dir/error.log and access.log

Try it from another terminal:
EOF
if [ "$(basename "$app")" = rest.lua ]; then
    cat <<EOF
  curl $url/items
  curl -X POST -H 'Content-Type: application/json' -d '{"name":"apple"}' $url/items
  curl $url/items/1
EOF
else
    echo "  curl $url/"
fi
echo
echo "Ctrl-C stops both."

# Runs until a signal (the traps above) or until either process exits. Ctrl-C in a terminal
# reaches all three: moonfcgi and nginx then stop on their own, which ends the wait here.
set +e
wait -n -p ended "$moonfcgi_pid" "$nginx_pid"
status=$?
set -e
if [ "${ended:-}" = "$moonfcgi_pid" ]; then
    moonfcgi_pid=""
    what=moonfcgi
else
    nginx_pid=""
    what=nginx
fi
if [ "$status" = 0 ]; then
    echo "$what stopped; stopping the other one"
    exit 0
fi
echo "serve-behind-nginx: $what exited with status $status" >&2
[ "$what" = moonfcgi ] || cat "$run_dir/error.log" >&2 2>/dev/null || true
exit 1
