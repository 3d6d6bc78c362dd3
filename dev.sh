#!/usr/bin/env bash
# One entry for a fresh Debian 12 machine: installs what is missing, builds, then
#   ./dev.sh demo    runs the storefront demo against the bundled collector
#   ./dev.sh test    runs the whole suite through ctest (ends with ctest's summary)
#   ./dev.sh packages  prints the Debian packages the project needs
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake pkg-config clang libclang-rt-14-dev valgrind
  lua5.1 lua5.2 lua5.3 lua5.4 liblua5.1-0-dev liblua5.2-dev liblua5.3-dev liblua5.4-dev
  luajit2 libluajit2-5.1-dev
  lua-cjson libcurl4-openssl-dev
  lua-busted lua-socket lua-curl wrk lua-luv luarocks
  nginx-light libnginx-mod-http-lua openssl curl
  love gcc-mingw-w64-x86-64 wine wine64 dpkg-dev xz-utils
)

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

install_missing() {
  local missing
  missing=$(missing_packages)
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
configure() {
  cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDUKANEXT_SANITIZE=ON \
    -DDUKANEXT_ALL_LUAS=ON -DDUKANEXT_FUZZ=ON -DDUKANEXT_VALGRIND=ON \
    -DDUKANEXT_PORTABLE=ON -DDUKANEXT_WINDOWS=ON >/dev/null
}

case "${1:-}" in
  packages)
    echo "${PACKAGES[@]}"
    ;;
  demo)
    install_missing
    configure
    cmake --build build -j"$(nproc)" --target dukanext >/dev/null
    DUKANEXT_CPATH="$PWD/build/?.so" lua5.4 examples/demo.lua
    ;;
  test)
    install_missing
    configure
    cmake --build build -j"$(nproc)"
    cd build
    ctest --output-on-failure -j"$(nproc)"
    ;;
  *)
    echo "usage: ./dev.sh demo | test | packages" >&2
    exit 2
    ;;
esac
