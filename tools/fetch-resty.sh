#!/bin/sh
# Fetches Debian's packaged OpenResty Lua libraries for the specs, WITHOUT installing them:
# their packages depend on nginx-extras, whose install replaces Debian's LuaJIT with the
# conflicting luajit2. `apt-get download` puts the .deb files in a cache folder and
# `dpkg-deb -x` unpacks them beside it; spec/support/upstreams.lua (resty()) puts the unpacked
# tree on package.path and checks that the files it loads are the packages' own.
#   tools/fetch-resty.sh [CACHE_DIR]
# CACHE_DIR defaults to $MOONFCGI_DEB_CACHE, else ${XDG_CACHE_HOME:-$HOME/.cache}/moonfcgi/debs.
# Layout: CACHE_DIR/*.deb, CACHE_DIR/root/usr/share/lua/5.1/... (the unpacked files).
# A package whose .deb is already in the cache is not fetched again (no network needed).
set -eu

# Debian 12 names. Note Debian installs most of them as nginx.* modules (nginx.redis,
# nginx.dns.resolver, ...), lua-resty-lrucache as resty.lrucache.
PACKAGES="lua-nginx-redis lua-nginx-memcached lua-nginx-dns lua-nginx-websocket lua-nginx-string
lua-nginx-kafka lua-nginx-redis-connector lua-resty-lrucache"

cache=${1:-${MOONFCGI_DEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/moonfcgi/debs}}
mkdir -p "$cache"
cd "$cache"

missing=""
for p in $PACKAGES; do
    if ! ls "${p}"_*.deb >/dev/null 2>&1; then
        missing="$missing $p"
    fi
done
if [ -n "$missing" ]; then
    echo "fetch-resty: downloading$missing into $cache"
    # apt-get download drops its privileges to _apt when it can write the folder as _apt;
    # as root in a folder _apt cannot reach it warns and downloads unsandboxed: fine here.
    # shellcheck disable=SC2086
    if ! apt-get download -q $missing >download.log 2>&1; then
        cat download.log >&2
        echo "fetch-resty: apt-get download failed (apt-get update first?)" >&2
        exit 1
    fi
fi

# Unpack afresh into a new tree, then swap it in, so a half-unpacked tree is never used.
rm -rf root.new
mkdir root.new
for deb in ./*.deb; do
    dpkg-deb -x "$deb" root.new
done
rm -rf root
mv root.new root
echo "fetch-resty: unpacked into $cache/root"
