#!/usr/bin/env bash
# Request latency of examples/openresty with and without analytics (wrk).
#   bench/openresty_latency.sh            wrk -t2 -c32 -d5s per case
#   bench/openresty_latency.sh --short    -d1s
# Needs the LuaJIT build (cmake -S . -B build -DDUKANEXT_ALL_LUAS=ON && cmake --build
# build; or DUKANEXT_LUAJIT_CPATH=/path/to/?.so), nginx with its Lua module, wrk,
# lua5.4 with LuaSocket and lua-cjson.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "openresty_latency: wrk is missing (apt-get install wrk)" >&2; exit 1; }
exec lua5.4 bench/openresty_latency.lua "$@"
