#!/usr/bin/env bash
# Install everything the tests need (Debian toolchains, Python packages, the aarch64 TVM runtime), then run the suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if command -v apt-get >/dev/null 2>&1; then
  $sudo apt-get update -qq
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[dev]'
if [ -f scripts/setup_arm_runtime.sh ]; then
  bash scripts/setup_arm_runtime.sh
fi

exec python3 -m pytest -q -p no:cacheprovider "$@"
