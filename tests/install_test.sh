#!/usr/bin/env bash
# cmake --install puts dukanext.so and dukanext/ngx.lua where the Lua looks: its
# pkg-config file's INSTALL_CMOD and INSTALL_LMOD. Installs the build twice, with
# --prefix into a temporary folder and staged under DESTDIR, and each time requires
# both modules from there alone, from a folder with no dukanext.so in it; then runs
# examples/game_loop.lua as README says, on the installed module.
#   tests/install_test.sh <build dir> <lua interpreter> <pkg-config name of that Lua>
set -euo pipefail
build=$1 lua=$2 pc=$3
repo=$(cd "$(dirname "$0")/.." && pwd)

work=$(mktemp -d "${TMPDIR:-/tmp}/dukanext-install.XXXXXX")
trap 'rm -rf "$work"' EXIT

version=$(sed -n 's/^#define DN_VERSION "\(.*\)"$/\1/p' "$repo/src/version.h")

# require_from <root> <cmod> <lmod>: both modules load from there and nowhere else.
require_from() {
  local root=$1 cmod=$2 lmod=$3
  for f in "$cmod/dukanext.so" "$lmod/dukanext/ngx.lua"; do
    [ -f "$f" ] || { echo "install_test: $f was not installed" >&2; find "$root" >&2; exit 1; }
  done
  (cd "$work" && LUA_CPATH="$cmod/?.so;;" LUA_PATH="$lmod/?.lua;;" "$lua" - "$root" "$version" <<'EOF'
local root, version = ...
for _, m in ipairs({ { "dukanext", package.cpath }, { "dukanext.ngx", package.path } }) do
  local file = assert(package.searchpath(m[1], m[2]), m[1] .. " not found")
  assert(file:sub(1, #root) == root, m[1] .. " found at " .. file .. ", not under " .. root)
end
local dn = require("dukanext")
assert(dn._VERSION == version, "version " .. tostring(dn._VERSION) .. ", want " .. version)
assert(type(require("dukanext.ngx").init_worker) == "function")
print("install_test: dukanext " .. dn._VERSION .. " and dukanext.ngx load from " .. root)
EOF
  )
}

# A prefix of our own: the same layout as pkg-config gives for that prefix.
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
require_from "$prefix" \
  "$(pkg-config --define-variable=prefix="$prefix" --variable=INSTALL_CMOD "$pc")" \
  "$(pkg-config --define-variable=prefix="$prefix" --variable=INSTALL_LMOD "$pc")"

# Staged as a package would be: the build's own prefix under DESTDIR.
stage="$work/stage"
own_prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
DESTDIR="$stage" cmake --install "$build" >/dev/null
require_from "$stage" \
  "$stage$(pkg-config --define-variable=prefix="$own_prefix" --variable=INSTALL_CMOD "$pc")" \
  "$stage$(pkg-config --define-variable=prefix="$own_prefix" --variable=INSTALL_LMOD "$pc")"

# An example as a user runs it: the installed module, an endpoint nobody listens on
# (the loop plays on, and quits within its flush deadline).
cmod="$stage$(pkg-config --define-variable=prefix="$own_prefix" --variable=INSTALL_CMOD "$pc")"
mkdir -p "$work/save"
out=$(cd "$work" && LUA_CPATH="$cmod/?.so;;" "$lua" "$repo/examples/game_loop.lua" \
  "http://127.0.0.1:1/access/api/v1/analytics" 0.3 "$work/save")
case "$out" in frames=*) echo "install_test: game_loop.lua: $out" ;; *)
  echo "install_test: game_loop.lua printed: $out" >&2; exit 1 ;;
esac
