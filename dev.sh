#!/usr/bin/env bash
# One entry for a fresh Debian 12 machine: installs what is missing, builds, then
#   ./dev.sh demo    runs the storefront demo against the bundled collector
#   ./dev.sh test    runs the whole suite through ctest (ends with ctest's summary)
#   ./dev.sh packages  prints the Debian packages the project needs
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(
  build-essential cmake pkg-config
  lua5.4 liblua5.4-dev
  lua-cjson libcurl4-openssl-dev
  lua-busted lua-socket
  nginx-light libnginx-mod-http-lua openssl curl
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

build() {
  cmake -S . -B build -DDUKANEXT_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build -j"$(nproc)"
}

case "${1:-}" in
  packages)
    echo "${PACKAGES[@]}"
    ;;
  demo)
    install_missing
    build >/dev/null
    DUKANEXT_CPATH="$PWD/build/?.so" lua5.4 examples/demo.lua
    ;;
  test)
    install_missing
    build
    cd build
    ctest --output-on-failure
    ;;
  *)
    echo "usage: ./dev.sh demo | test | packages" >&2
    exit 2
    ;;
esac
