#!/usr/bin/env bash
# Installs dukanext with LuaRocks into temporary trees and runs a smoke test from each:
#   - Lua 5.4:  luarocks --lua-version=5.4 --tree T make <rockspec>, with a LuaRocks
#               config saying that Debian's lua-cjson provides the lua-cjson rock: no
#               "Missing dependencies" message
#   - LuaJIT:   luarocks --lua-dir=D ... make --deps-mode=none <rockspec>, where D is
#               laid out like OpenResty's
#               /usr/local/openresty/luajit (bin/luajit, include/luajit-2.1), made of
#               links to Debian's luajit2 unless DUKANEXT_LUAJIT_DIR names a real one.
# Each make leaves the checkout as it found it (no object file, no ./dukanext.so).
# The smoke test loads dukanext and dukanext.ngx from the tree only, checks the
# version, delivers one event to the bundled collector (nginx), fails one against a
# refused port, and runs examples/game_loop.lua on the installed module.
#   tests/luarocks_smoke.sh            (exits 77, "skipped", without luarocks)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

if ! command -v luarocks >/dev/null; then
  echo "luarocks_smoke: luarocks is not installed (Debian: apt-get install luarocks)" >&2
  exit 77
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/dukanext-luarocks.XXXXXX")
trap 'rm -rf "$work"' EXIT

version=$(sed -n 's/^#define DN_VERSION "\(.*\)"$/\1/p' "$repo/src/version.h")

# A copy of the source to build from, so that the check below sees only what
# luarocks make leaves behind.
copy_source() {
  mkdir -p "$1"
  tar -C "$repo" --exclude=./build --exclude='./build-*' --exclude=./.git -cf - . |
    tar -C "$1" -xf -
}

cat >"$work/smoke.lua" <<'EOF'
local tree, lua_version, want_version, repo = ...
local function from_tree(name, path)
  local file = assert(package.searchpath(name, path), name .. " not found")
  assert(file:sub(1, #tree) == tree, name .. " loads from " .. file .. ", not from " .. tree)
  return file
end
local so = from_tree("dukanext", package.cpath)
local helper = from_tree("dukanext.ngx", package.path)

local dn = require("dukanext")
assert(dn._VERSION == want_version, "version " .. tostring(dn._VERSION) .. ", want " .. want_version)
local dnx = require("dukanext.ngx")
assert(type(dnx.init_worker) == "function" and type(dnx.cookie_storage) == "function")

-- A refused port: accepted, waited for, then given up at max_age.
local refused = dn.new({ endpoint = "http://127.0.0.1:1/access/api/v1/analytics", max_age = 0.5,
  retry_base = 0.05, retry_max = 0.2 })
assert(refused:emit("luarocks_smoke"))
assert(refused:flush(10))
assert(refused:stats().failed == 1, "the refused event did not fail")

-- The bundled collector: delivered.
package.path = repo .. "/?.lua;" .. package.path
local collector = require("spec.support.collector").start({})
local ok, err = pcall(function()
  local c = dn.new({ endpoint = collector.url })
  assert(c:emit("luarocks_smoke", { lua = lua_version }))
  assert(c:flush(10))
  local events = collector:wait_events(1, 5)
  assert(#events == 1 and events[1].event == "luarocks_smoke", "the collector got no event")
  -- An example, as users run it, on the installed module.
  arg = { collector.url, "0.5", tree }
  dofile(repo .. "/examples/game_loop.lua")
  assert(#collector:wait_events(4, 5) >= 4, "the game loop example delivered nothing")
end)
collector:stop()
assert(ok, err)
print(("luarocks_smoke: %s: dukanext %s from %s and %s: delivered"):format(
  lua_version, dn._VERSION, so, helper))
EOF

# The rockspec as LuaRocks reads it: lint, then the sources each platform resolves to
# (platform tables merged as LuaRocks merges them, least specific first) are every C
# file of src/ but the other OS families' seams.
luarocks lint "$repo/rockspec/dukanext-scm-1.rockspec"
lua5.1 - "$repo" <<'EOF_PLATFORMS'
local repo = ...
local util = require("luarocks.core.util")
local want_os = {
  linux = { "src/os_linux.c", "src/os_posix.c" },
  macosx = { "src/os_portable.c", "src/os_posix.c" },
  freebsd = { "src/os_portable.c", "src/os_posix.c" },
  windows = { "src/os_windows.c" },
}
local platforms = {
  linux = { "unix", "linux" },
  macosx = { "unix", "bsd", "macosx" },
  freebsd = { "unix", "bsd", "freebsd" },
  windows = { "windows", "win32", "mingw32" },
}
local core = {}
for file in io.popen("cd " .. repo .. " && ls src/*.c"):lines() do
  if not file:find("^src/os_") then core[#core + 1] = file end
end
for name, order in pairs(platforms) do
  local spec = {}
  assert(setfenv(assert(loadfile(repo .. "/rockspec/dukanext-scm-1.rockspec")), spec))()
  for _, p in ipairs(order) do
    if spec.build.platforms[p] then util.deep_merge(spec.build, spec.build.platforms[p]) end
  end
  -- The builtin type lists the sources; the command type names them in its one call.
  local got = {}
  if spec.build.type == "builtin" then
    for _, f in ipairs(spec.build.modules.dukanext.sources) do got[#got + 1] = f end
  else
    for f in spec.build.install_command:gmatch("src/[%w_]+%.c") do got[#got + 1] = f end
  end
  local want = {}
  for _, f in ipairs(core) do want[#want + 1] = f end
  for _, f in ipairs(want_os[name]) do want[#want + 1] = f end
  table.sort(got)
  table.sort(want)
  assert(table.concat(got, " ") == table.concat(want, " "), name .. " builds " .. table.concat(got, " ")
    .. "\nwant " .. table.concat(want, " "))
end
print("luarocks_smoke: the rockspec lints, and each platform builds the core and its OS seam")
EOF_PLATFORMS

# Tells LuaRocks that the lua-cjson rock is there: Debian's package provides it.
cjson_version=$(dpkg-query -W -f='${Version}' lua-cjson 2>/dev/null | sed 's/[+~-].*//')
printf 'rocks_provided = { ["lua-cjson"] = "%s-1" }\n' "${cjson_version:-2.1.0}" >"$work/config.lua"

# smoke <name> <interpreter> <lua version dir> <make options> <luarocks options...>
smoke() {
  local name=$1 interpreter=$2 luaver=$3 make_options=$4
  shift 4
  local src="$work/src-$name" tree="$work/tree-$name" log="$work/luarocks-$name.log"
  copy_source "$src"
  (cd "$src" && find . | sort) >"$work/files-before-$name"
  echo "luarocks_smoke: $name: luarocks $* --tree $tree make $make_options rockspec/dukanext-scm-1.rockspec"
  # shellcheck disable=SC2086
  (cd "$src" && luarocks "$@" --tree "$tree" make $make_options rockspec/dukanext-scm-1.rockspec \
    >"$log" 2>&1) || {
    cat "$log" >&2
    echo "luarocks_smoke: $name: luarocks make failed" >&2
    return 1
  }
  (cd "$src" && find . | sort) >"$work/files-after-$name"
  if ! diff "$work/files-before-$name" "$work/files-after-$name" >&2; then
    echo "luarocks_smoke: $name: luarocks make left files in the checkout (above)" >&2
    return 1
  fi
  if [ "${LUAROCKS_CONFIG:-}" ] && grep -q "Missing dependencies" "$log"; then
    cat "$log" >&2
    echo "luarocks_smoke: $name: LuaRocks reports lua-cjson missing though the config provides it" >&2
    return 1
  fi
  # The tree first; the system's paths after it for lua-cjson and LuaSocket.
  LUA_PATH="$tree/share/lua/$luaver/?.lua;$tree/share/lua/$luaver/?/init.lua;;" \
    LUA_CPATH="$tree/lib/lua/$luaver/?.so;;" \
    "$interpreter" "$work/smoke.lua" "$tree" "$name" "$version" "$repo"
}

LUAROCKS_CONFIG="$work/config.lua" smoke lua5.4 lua5.4 5.4 "" --lua-version=5.4

luajit_dir=${DUKANEXT_LUAJIT_DIR:-}
if [ -z "$luajit_dir" ]; then
  luajit_dir="$work/luajit"
  mkdir -p "$luajit_dir/bin" "$luajit_dir/include"
  ln -s "$(command -v luajit)" "$luajit_dir/bin/luajit"
  ln -s /usr/include/luajit-2.1 "$luajit_dir/include/luajit-2.1"
fi
smoke luajit "$luajit_dir/bin/luajit" 5.1 --deps-mode=none --lua-dir="$luajit_dir"
