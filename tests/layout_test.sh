#!/usr/bin/env bash
# One build-tree layout: build/dukanext.so is Lua 5.4's module and build/lua-<v>/ holds
# the module for any other Lua, whether DUKANEXT_LUA picks it or DUKANEXT_ALL_LUAS adds
# it; examples/openresty/launch.lua looks for the LuaJIT one there. Configures scratch
# build folders (no compiling) and reads where CMake will put each module from its
# file API.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/dukanext-layout.XXXXXX")
trap 'rm -rf "$work"' EXIT

# artifacts <build folder> <cmake options...>: "target path" lines, path relative to
# the build folder, for every target that builds a dukanext.so.
artifacts() {
  local dir=$1
  shift
  mkdir -p "$dir/.cmake/api/v1/query"
  touch "$dir/.cmake/api/v1/query/codemodel-v2"
  cmake -S "$repo" -B "$dir" -DBUILD_TESTING=OFF "$@" >/dev/null
  lua5.4 - "$dir/.cmake/api/v1/reply" <<'LUA'
local cjson = require("cjson")
local reply = ...
local function read(name)
  local f = assert(io.open(reply .. "/" .. name))
  local data = f:read("a")
  f:close()
  return cjson.decode(data)
end
local index
for name in io.popen("ls " .. reply):lines() do
  if name:match("^index%-.*%.json$") then index = read(name) end
end
local codemodel = read(index.reply["codemodel-v2"].jsonFile)
for _, t in ipairs(codemodel.configurations[1].targets) do
  local target = read(t.jsonFile)
  for _, a in ipairs(target.artifacts or {}) do
    if a.path:match("dukanext%.so$") then print(target.name .. " " .. a.path) end
  end
end
LUA
}

expect() {
  local what=$1 want=$2 got=$3
  if [ "$got" != "$want" ]; then
    echo "layout_test: $what: got [$got], want [$want]" >&2
    exit 1
  fi
}

expect "the default build" "dukanext dukanext.so" "$(artifacts "$work/default")"
expect "-DDUKANEXT_LUA=luajit" "dukanext lua-luajit/dukanext.so" \
  "$(artifacts "$work/luajit" -DDUKANEXT_LUA=luajit)"
expect "-DDUKANEXT_LUA=5.1" "dukanext lua-5.1/dukanext.so" \
  "$(artifacts "$work/lua51" -DDUKANEXT_LUA=5.1)"
all=$(artifacts "$work/all" -DDUKANEXT_ALL_LUAS=ON | sort)
expect "-DDUKANEXT_ALL_LUAS=ON" "dukanext dukanext.so
dukanext_lua51 lua-5.1/dukanext.so
dukanext_lua52 lua-5.2/dukanext.so
dukanext_lua53 lua-5.3/dukanext.so
dukanext_lualuajit lua-luajit/dukanext.so" "$all"

# The OpenResty example's launcher looks where the LuaJIT build lands.
launcher=$(DUKANEXT_LUAJIT_CPATH= lua5.4 - "$repo" <<<'
  print(dofile(... .. "/examples/openresty/launch.lua").luajit_cpath())')
expect "examples/openresty/launch.lua" "$repo/build/lua-luajit/?.so" "$launcher"
echo "layout_test: build/dukanext.so for Lua 5.4, build/lua-<v>/dukanext.so for the others"
