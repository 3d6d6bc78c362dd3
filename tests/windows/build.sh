#!/usr/bin/env bash
# tests/windows/build.sh DIR
#
# Everything the Windows tests need, under DIR (ctest's windows-build, run once before
# windows-lua5.4 and windows-luajit):
#   DIR/deps                  tests/windows/deps.sh (cached in DIR/deps.cache)
#   DIR/build-5.4, -luajit    dukanext.dll cross-built with MinGW-w64 for each Lua
#   DIR/wineprefix            the Wine prefix, made here once (its first start is slow)
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(realpath -m "$1")
jobs=${JOBS:-2}

"$repo/tests/windows/deps.sh" "$dir/deps"

for lua in 5.4 luajit; do
  cmake -S "$repo" -B "$dir/build-$lua" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/mingw-w64-x86_64.cmake" \
    -DDUKANEXT_WINDOWS_DEPS="$dir/deps" -DDUKANEXT_LUA="$lua" >/dev/null
  cmake --build "$dir/build-$lua" -j"$jobs" --target dukanext
done

wine=${DN_WINE:-$(command -v wine64 || echo /usr/lib/wine/wine64)}
mkdir -p "$dir/wineprefix"
WINEPREFIX="$dir/wineprefix" WINEDEBUG=-all "$wine" "$dir/deps/bin/lua.exe" -e "" 2>/dev/null
echo "windows build ready: $dir"
