#!/usr/bin/env bash
# Install everything the tests need (Debian toolchains, Python packages, the aarch64 TVM runtime), then run the suite
# in tiers: the fast tier (no TVM compile, no large zoo model, nothing slow), then the TVM, zoo and slow tier.
#   bash scripts/test.sh            both tiers
#   bash scripts/test.sh fast       the fast tier only (the inner loop: under 3 minutes on 2 cores)
#   bash scripts/test.sh -- ARGS    both tiers, ARGS passed to pytest (e.g. -k prune)
set -euo pipefail
cd "$(dirname "$0")/.."

tiers="fast tvm"
if [ "${1:-}" = "fast" ]; then tiers="fast"; shift; fi
if [ "${1:-}" = "--" ]; then shift; fi

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc libc6-dev gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm fonts-dejavu-core fonts-liberation fonts-freefont-ttf >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
if [ -f scripts/setup_arm_runtime.sh ]; then
  bash scripts/setup_arm_runtime.sh
fi

for tier in $tiers; do
  case $tier in
    fast) marks="not tvm and not zoo and not slow"; workers=() ;;
    # compiles are mostly single-threaded: two workers, a file's tests on one (module fixtures compile once)
    tvm) marks="tvm or zoo or slow"; workers=(-n "$(( $(nproc) < 2 ? 1 : 2 ))" --dist loadfile) ;;
  esac
  echo "== tier: $tier ($marks)"
  status=0
  python3 -m pytest -q -p no:cacheprovider -m "$marks" "${workers[@]}" "$@" || status=$?
  [ "$status" -eq 0 ] || [ "$status" -eq 5 ] || exit "$status"  # 5: a filter left this tier nothing to run
done
