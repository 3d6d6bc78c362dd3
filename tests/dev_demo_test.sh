#!/usr/bin/env bash
# ./dev.sh demo is light: it needs only the demo's Debian packages (none of the test
# toolchain) and builds the plain module, with no tests, sanitizers or other Luas,
# into DUKANEXT_BUILD_DIR; then the demo delivers its visit to the bundled collector.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

read -r -a all <<<"$("$repo/dev.sh" packages)"
read -r -a demo <<<"$("$repo/dev.sh" packages demo)"
for p in "${demo[@]}"; do
  case " ${all[*]} " in *" $p "*) ;; *)
    echo "dev_demo_test: the demo's $p is not in ./dev.sh packages" >&2; exit 1 ;;
  esac
done
for heavy in clang libclang-rt-14-dev valgrind wrk lua5.1 lua5.2 lua5.3 luajit2 lua-busted \
  lua-curl luarocks; do
  case " ${demo[*]} " in *" $heavy "*)
    echo "dev_demo_test: ./dev.sh demo installs $heavy" >&2; exit 1 ;;
  esac
  case " ${all[*]} " in *" $heavy "*) ;; *)
    echo "dev_demo_test: ./dev.sh packages lost $heavy" >&2; exit 1 ;;
  esac
done

build=$(mktemp -d "${TMPDIR:-/tmp}/dukanext-demo.XXXXXX")
trap 'rm -rf "$build"' EXIT
out=$(DUKANEXT_BUILD_DIR="$build" "$repo/dev.sh" demo)
echo "$out" | grep -q "the collector received 7 events" || {
  echo "$out" >&2
  echo "dev_demo_test: the demo did not deliver its visit" >&2
  exit 1
}
for setting in BUILD_TESTING DUKANEXT_SANITIZE DUKANEXT_ALL_LUAS DUKANEXT_FUZZ DUKANEXT_VALGRIND; do
  grep -q "^$setting:BOOL=OFF$" "$build/CMakeCache.txt" || {
    echo "dev_demo_test: the demo's build has $(grep "^$setting:" "$build/CMakeCache.txt")" >&2
    exit 1
  }
done
[ -f "$build/dukanext.so" ] || { echo "dev_demo_test: no $build/dukanext.so" >&2; exit 1; }
echo "dev_demo_test: ./dev.sh demo installs ${#demo[@]} of ${#all[@]} packages, builds the plain module, delivers"
