#!/usr/bin/env bash
# bench/timings.sh BUILD_DIR: the figures of bench/timings.lua (codec speed, timer lateness,
# the worker's CPU at EMFILE), printed and never asserted: specs check behaviour, not speed.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
cd "$(dirname "$0")/.."
export MOONFCGI_LIB="$build/libmoonfcgi.so"
export MOONFCGI_BIN="$build/moonfcgi"
export LUA_PATH="$PWD/lua/?.lua;$PWD/lua/?/init.lua;$PWD/spec/support/?.lua;${LUA_PATH:-;}"
exec luajit bench/timings.lua
