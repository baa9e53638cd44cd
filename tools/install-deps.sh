#!/bin/sh
# Installs the Debian packages that building, running and testing moonfcgi need, and only
# those that are missing. Run as root (make run / make test call it).
#   tools/install-deps.sh build   compiler, LuaJIT, libevent, libhttp-parser, PCRE2, OpenSSL,
#                                 busted, lua-cjson
#   tools/install-deps.sh run     the above, plus curl (make run-nginx: nginx too)
#   tools/install-deps.sh test    the above, plus clang's libFuzzer, the web servers,
#                                 clients and the browser (chromium) the integration tests
#                                 start, the upstream servers the socket specs start (Redis,
#                                 memcached, PostgreSQL, dnsmasq, openssl for their
#                                 certificates), and Debian's OpenResty Lua libraries,
#                                 downloaded and unpacked but not installed (tools/fetch-resty.sh)
set -eu

want="build-essential cmake pkg-config libevent-dev libhttp-parser-dev libpcre2-dev libssl-dev
    lua-busted lua-cjson"
case "${1:-build}" in
run) want="$want curl" ;;
run-nginx) want="$want nginx curl" ;;
test) want="$want nginx curl clang libclang-rt-14-dev libfcgi-bin spawn-fcgi systemd util-linux
    apache2-bin lighttpd caddy haproxy redis-server redis-tools memcached postgresql
    dnsmasq-base openssl ca-certificates python3 chromium wrk" ;;
esac

missing=""
for p in $want; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done
# LuaJIT: libluajit-5.1-dev or libluajit2-5.1-dev, whichever is there; never both.
if ! pkg-config --exists luajit 2>/dev/null; then
    missing="$missing libluajit-5.1-dev"
fi
if ! command -v luajit >/dev/null 2>&1; then
    if dpkg-query -W -f='${Status}' libluajit2-5.1-dev 2>/dev/null | grep -q "ok installed"; then
        missing="$missing luajit2"
    else
        missing="$missing luajit"
    fi
fi

# Debian's lua-nginx-* packages for the specs: fetched, never installed (see the script).
fetch_resty() {
    [ "${1:-build}" = test ] || return 0
    "$(dirname "$0")/fetch-resty.sh"
}

if [ -z "$missing" ]; then
    fetch_resty "${1:-build}"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "moonfcgi needs these Debian packages:$missing" >&2
    echo "install them as root: apt-get install$missing" >&2
    exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
# The web servers are for the tests, which start their own on loopback: keep their packages
# from starting system services on port 80 while they install.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    made_policy=1
fi
trap '[ -n "$made_policy" ] && rm -f "$policy"' EXIT
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
fetch_resty "${1:-build}"
