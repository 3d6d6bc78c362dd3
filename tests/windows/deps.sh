#!/usr/bin/env bash
# tests/windows/deps.sh PREFIX
#
# Builds what dukanext needs on 64-bit Windows, cross-compiled with MinGW-w64 from
# Debian's own source packages (apt-get source):
#   Lua 5.4     PREFIX/bin/lua.exe, lua54.dll          PREFIX/lib/liblua54.dll.a
#   LuaJIT 2.1  PREFIX/bin/luajit.exe, lua51.dll       PREFIX/lib/libluajit-5.1.dll.a
#   lua-cjson   PREFIX/lib/lua/5.4/cjson.dll, PREFIX/lib/lua/5.1/cjson.dll
#   libcurl     PREFIX/bin/libcurl-4.dll (Schannel, HTTP(S) only)  PREFIX/lib/libcurl-4.dll.a
# plus the MinGW runtime DLLs they import, in PREFIX/bin, and the headers under
# PREFIX/include/{lua5.4,luajit-2.1,curl}.
#
# Sources and object files stay in a cache folder (DUKANEXT_DEPS_CACHE, by default
# PREFIX.cache) so that a second run rebuilds nothing; on a filled PREFIX it does
# nothing at all. JOBS (default 2) is the make parallelism.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
PREFIX=$(realpath -m "$1")
CACHE=$(realpath -m "${DUKANEXT_DEPS_CACHE:-$PREFIX.cache}")
JOBS=${JOBS:-2}
HOST=x86_64-w64-mingw32
CC="$HOST-gcc"
TOOLCHAIN=$(realpath "$(dirname "$0")/../../cmake/mingw-w64-x86_64.cmake")

RESULTS=(
  bin/lua.exe bin/lua54.dll lib/liblua54.dll.a include/lua5.4/lua.h
  bin/luajit.exe bin/lua51.dll lib/libluajit-5.1.dll.a include/luajit-2.1/lua.h
  lib/lua/5.4/cjson.dll lib/lua/5.1/cjson.dll
  bin/libcurl-4.dll lib/libcurl-4.dll.a include/curl/curl.h
)

have() {
  local f
  for f in "$@"; do [ -e "$PREFIX/$f" ] || return 1; done
}

if have "${RESULTS[@]}" && [ -e "$PREFIX/.runtime-done" ]; then
  exit 0
fi

log() { echo "deps.sh: $*" >&2; }

# apt-get source needs a deb-src entry; Debian's images ship only deb lines.
ensure_deb_src() {
  if [ -n "$(apt-cache showsrc lua5.4 2>/dev/null)" ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps.sh: no deb-src entry for bookworm; add one as root (see this script)" >&2
    exit 1
  fi
  log "adding Debian bookworm source entries"
  cat >/etc/apt/sources.list.d/dukanext-deb-src.sources <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -qq >&2
}

# source_dir PACKAGE: the unpacked, Debian-patched source of PACKAGE, fetched once.
source_dir() {
  local pkg=$1 dir
  dir=$(find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name "$pkg-*" 2>/dev/null | head -n1)
  if [ -z "$dir" ]; then
    ensure_deb_src
    mkdir -p "$CACHE/src"
    (cd "$CACHE/src" && apt-get source -qq "$pkg" >&2)
    dir=$(find "$CACHE/src" -mindepth 1 -maxdepth 1 -type d -name "$pkg-*" | head -n1)
  fi
  echo "$dir"
}

# Debian's patches send every rule of Lua's makefile through libtool, for Linux, so the
# DLL is linked here as upstream's mingw target does: every core and library unit into
# lua54.dll (LUA_BUILD_AS_DLL) with its import library, then lua.exe against it.
build_lua54() {
  have bin/lua.exe bin/lua54.dll lib/liblua54.dll.a include/lua5.4/lua.h && return 0
  log "building Lua 5.4"
  local src out obj objs=()
  src="$(source_dir lua5.4)/src"
  out="$CACHE/build/lua5.4"
  mkdir -p "$out" "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/include/lua5.4"
  for obj in "$src"/*.c; do
    case "$(basename "$obj")" in lua.c | luac.c) continue ;; esac
    objs+=("$out/$(basename "${obj%.c}").o")
  done
  make -s -j"$JOBS" -f - <<EOF
all: $out/lua54.dll $out/lua.exe
$out/%.o: $src/%.c
	$CC -O2 -Wall -DLUA_COMPAT_5_3 -DLUA_BUILD_AS_DLL -c -o \$@ \$<
$out/lua54.dll: ${objs[*]}
	$CC -shared -o \$@ \$^ -Wl,--out-implib,$out/liblua54.dll.a
$out/lua.exe: $src/lua.c $out/lua54.dll
	$CC -O2 -Wall -DLUA_COMPAT_5_3 -o \$@ $src/lua.c $out/liblua54.dll.a
EOF
  cp "$out/lua54.dll" "$out/lua.exe" "$PREFIX/bin/"
  cp "$out/liblua54.dll.a" "$PREFIX/lib/"
  cp "$src"/{lua.h,luaconf.h,lualib.h,lauxlib.h,lua.hpp} "$PREFIX/include/lua5.4/"
}

build_luajit() {
  have bin/luajit.exe bin/lua51.dll lib/libluajit-5.1.dll.a include/luajit-2.1/lua.h && return 0
  log "building LuaJIT 2.1"
  local src
  src=$(source_dir luajit2)
  make -s -C "$src" -j"$JOBS" HOST_CC=gcc CROSS="$HOST-" TARGET_SYS=Windows BUILDMODE=dynamic
  mkdir -p "$PREFIX/bin" "$PREFIX/lib" "$PREFIX/include/luajit-2.1"
  cp "$src/src/luajit.exe" "$src/src/lua51.dll" "$PREFIX/bin/"
  cp "$src/src/libluajit-5.1.dll.a" "$PREFIX/lib/"
  cp "$src"/src/{lua.h,luaconf.h,lualib.h,lauxlib.h,lua.hpp,luajit.h} "$PREFIX/include/luajit-2.1/"
}

# build_cjson LUAVERSION INCLUDEDIR IMPORTLIB
build_cjson() {
  local version=$1 include=$2 implib=$3 src out
  have "lib/lua/$version/cjson.dll" && return 0
  log "building lua-cjson for Lua $version"
  src=$(source_dir lua-cjson)
  out="$CACHE/build/lua-cjson-$version"
  mkdir -p "$out" "$PREFIX/lib/lua/$version"
  # lua-cjson brings its own luaL_setfuncs for Lua 5.1; both Luas built here have one
  # (OpenResty's LuaJIT exports it), so that fallback is left out.
  sed 's/^#if !defined(LUA_VERSION_NUM) || LUA_VERSION_NUM < 502$/#if 0/' \
    "$src/lua_cjson.c" >"$out/lua_cjson.c"
  $CC -O2 -w -shared -I"$include" -I"$src" -o "$out/cjson.dll" \
    "$out/lua_cjson.c" "$src/strbuf.c" "$src/fpconv.c" "$implib"
  cp "$out/cjson.dll" "$PREFIX/lib/lua/$version/"
}

# libcurl through its CMake build: Schannel for TLS, HTTP and HTTPS only, none of the
# optional libraries dukanext has no use for (zlib, brotli, nghttp2, idn, psl, ssh). A
# unity build (a few large units instead of ~150) compiles in about a quarter of the time.
build_curl() {
  have bin/libcurl-4.dll lib/libcurl-4.dll.a include/curl/curl.h && return 0
  log "building libcurl (Schannel)"
  local src out
  src=$(source_dir curl)
  out="$CACHE/build/curl"
  cmake -S "$src" -B "$out" -DCMAKE_TOOLCHAIN_FILE="$TOOLCHAIN" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$PREFIX" -DCMAKE_UNITY_BUILD=ON \
    -DLIBCURL_OUTPUT_NAME=libcurl-4 -DBUILD_SHARED_LIBS=ON -DBUILD_CURL_EXE=OFF \
    -DBUILD_TESTING=OFF -DENABLE_MANUAL=OFF -DPICKY_COMPILER=OFF -DCURL_ENABLE_EXPORT_TARGET=ON \
    -DCURL_USE_SCHANNEL=ON -DCURL_USE_OPENSSL=OFF -DCURL_WINDOWS_SSPI=OFF \
    -DCURL_CA_BUNDLE=none -DCURL_CA_PATH=none \
    -DHTTP_ONLY=ON -DCURL_DISABLE_LDAP=ON -DCURL_DISABLE_LDAPS=ON \
    -DCURL_ZLIB=OFF -DCURL_BROTLI=OFF -DCURL_ZSTD=OFF -DUSE_NGHTTP2=OFF \
    -DUSE_LIBIDN2=OFF -DCURL_USE_LIBPSL=OFF -DCURL_USE_LIBSSH2=OFF -DCURL_USE_LIBSSH=OFF \
    >"$out.configure.log" 2>&1 || {
    tail -n 40 "$out.configure.log" >&2
    exit 1
  }
  cmake --build "$out" -j"$JOBS" >"$out.build.log" 2>&1 || {
    tail -n 40 "$out.build.log" >&2
    exit 1
  }
  cmake --install "$out" >/dev/null
}

# The MinGW runtime DLLs any of the results imports (libwinpthread-1.dll and the like)
# go beside them, found where the cross compiler would link them from.
copy_runtime() {
  local dll path
  for dll in $(find "$PREFIX" \( -name '*.dll' -o -name '*.exe' \) -exec "$HOST-objdump" -p {} + |
    sed -n 's/^\s*DLL Name: //p' | sort -u); do
    [ -e "$PREFIX/bin/$dll" ] && continue
    path=$($CC -print-file-name="$dll")
    [ "$path" = "$dll" ] && path=$(find "/usr/$HOST/lib" -maxdepth 1 -name "$dll" | head -n1)
    if [ -n "$path" ] && [ -e "$path" ]; then
      cp "$path" "$PREFIX/bin/"
    fi
  done
  # Modules built later (dukanext.dll) may thread through winpthread: always ship it.
  cp -n "/usr/$HOST/lib/libwinpthread-1.dll" "$PREFIX/bin/"
  touch "$PREFIX/.runtime-done"
}

build_lua54
build_luajit
build_cjson 5.4 "$PREFIX/include/lua5.4" "$PREFIX/lib/liblua54.dll.a"
build_cjson 5.1 "$PREFIX/include/luajit-2.1" "$PREFIX/lib/libluajit-5.1.dll.a"
build_curl
copy_runtime
log "done: $PREFIX"
