#!/usr/bin/env bash
# One entry for a fresh Debian 12 machine: installs what is missing, builds, then
#   ./dev.sh demo    builds the plain module for Lua 5.4 and runs the storefront demo
#                    against the bundled collector; installs only what that needs
#   ./dev.sh test    runs the whole suite through ctest (ends with ctest's summary)
#   ./dev.sh packages [demo]  prints the Debian packages the project needs (CI's
#                    list), or only those of the demo
# DUKANEXT_BUILD_DIR names the build folder (default: build).
set -euo pipefail
cd "$(dirname "$0")"

BUILD_DIR=${DUKANEXT_BUILD_DIR:-build}

# The demo: the module for Lua 5.4, and the bundled collector (nginx with its Lua
# module, driven from Lua 5.4 through LuaSocket).
DEMO_PACKAGES=(
  build-essential cmake pkg-config lua5.4 liblua5.4-dev lua-cjson libcurl4-openssl-dev
  lua-socket nginx-light libnginx-mod-http-lua
)
# The tests add the other Luas, the sanitizers and fuzzers, valgrind, busted, the
# alternatives bench/ measures, LuaRocks and the tools the specs call.
TEST_PACKAGES=(
  clang libclang-rt-14-dev valgrind
  lua5.1 lua5.2 lua5.3 liblua5.1-0-dev liblua5.2-dev liblua5.3-dev
  luajit2 libluajit2-5.1-dev
  lua-busted lua-curl wrk lua-luv luarocks
  openssl curl
  love gcc-mingw-w64-x86-64 wine wine64 dpkg-dev xz-utils
)
PACKAGES=("${DEMO_PACKAGES[@]}" "${TEST_PACKAGES[@]}")

# missing_packages <package>...
missing_packages() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

# install_missing <package>...
install_missing() {
  local missing
  missing=$(missing_packages "$@")
  [ -z "$missing" ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "dev.sh: missing Debian packages:" $missing >&2
    echo "dev.sh: install them as root: apt-get install -y" $missing >&2
    exit 1
  fi
  echo "dev.sh: installing" $missing
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
}

# The test build: the module for Lua 5.4 plus every other Lua, sanitized, fuzzers, the
# valgrind run, the portable module (the code paths of macOS and the BSDs), and the
# Windows build run under Wine.
configure_test() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=ON \
    -DDUKANEXT_SANITIZE=ON -DDUKANEXT_ALL_LUAS=ON -DDUKANEXT_FUZZ=ON -DDUKANEXT_VALGRIND=ON \
    -DDUKANEXT_PORTABLE=ON -DDUKANEXT_WINDOWS=ON >/dev/null
}

# The demo build: the plain module for Lua 5.4, no tests (busted, clang and the other
# Luas are not needed, nor installed).
configure_demo() {
  cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUKANEXT_LUA=5.4 \
    -DBUILD_TESTING=OFF -DDUKANEXT_SANITIZE=OFF -DDUKANEXT_ALL_LUAS=OFF -DDUKANEXT_FUZZ=OFF \
    -DDUKANEXT_VALGRIND=OFF -DDUKANEXT_PORTABLE=OFF >/dev/null
}

case "${1:-}" in
  packages)
    if [ "${2:-}" = demo ]; then
      echo "${DEMO_PACKAGES[@]}"
    else
      echo "${PACKAGES[@]}"
    fi
    ;;
  demo)
    install_missing "${DEMO_PACKAGES[@]}"
    configure_demo
    cmake --build "$BUILD_DIR" -j"$(nproc)" --target dukanext >/dev/null
    LUA_CPATH="$(cd "$BUILD_DIR" && pwd)/?.so;;" lua5.4 examples/demo.lua
    ;;
  test)
    install_missing "${PACKAGES[@]}"
    configure_test
    cmake --build "$BUILD_DIR" -j"$(nproc)"
    cd "$BUILD_DIR"
    ctest --output-on-failure -j"$(nproc)"
    ;;
  *)
    echo "usage: ./dev.sh demo | test | packages [demo]" >&2
    exit 2
    ;;
esac
