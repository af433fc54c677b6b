#!/usr/bin/env bash
# Install the aarch64 TVM runtime that runs ARM artifacts on an x86 host under qemu-aarch64 user-mode emulation.
# Idempotent: does nothing when the runtime is already complete. Downloads only from Debian and PyPI, into
#   ${EFFC_ARM_RUNTIME:-~/.cache/effc/arm-runtime}/{root,site}
# root: an aarch64 Debian python3.11 and the C/C++ libraries it needs (extracted .debs, used as qemu's -L sysroot)
# site: the aarch64 wheels of apache-tvm, apache-tvm-ffi, numpy (unpacked; only libtvm_runtime.so is loaded)
set -euo pipefail

dest="${EFFC_ARM_RUNTIME:-$HOME/.cache/effc/arm-runtime}"
stamp="$dest/.complete-v2"
[ -f "$stamp" ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends qemu-user g++-aarch64-linux-gnu >/dev/null
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  $sudo dpkg --add-architecture arm64
  $sudo apt-get update -qq
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/wheels" "$work/root" "$work/site"

# Runtime dependencies of python3.11 and libtvm_runtime.so on arm64.
(cd "$work/debs" && apt-get download -qq \
  python3.11-minimal:arm64 libpython3.11-minimal:arm64 libpython3.11-stdlib:arm64 libc6:arm64 libgcc-s1:arm64 \
  libstdc++6:arm64 zlib1g:arm64 libexpat1:arm64 libffi8:arm64 libssl3:arm64 libbz2-1.0:arm64 liblzma5:arm64 \
  libcrypt1:arm64 2>/dev/null)
for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$work/root"; done

tvm_version="$(python3 -c 'import importlib.metadata as m; print(m.version("apache-tvm"))' 2>/dev/null || echo 0.27.0.post1)"
ffi_version="$(python3 -c 'import importlib.metadata as m; print(m.version("apache-tvm-ffi"))' 2>/dev/null || echo 0.1.14.post1)"
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_aarch64 -d "$work/wheels" \
  "apache-tvm==$tvm_version" "apache-tvm-ffi==$ffi_version" "numpy>=2,<3" ml_dtypes typing_extensions cloudpickle psutil
for wheel in "$work"/wheels/*.whl; do python3 -m zipfile -e "$wheel" "$work/site"; done
# The compiler library (240 MB) is never loaded on the runtime path (TVM_USE_RUNTIME_LIB=1).
rm -rf "$work/site/tvm/lib/libtvm_compiler.so" "$work/site/tvm/3rdparty"

# Smoke test: the emulated interpreter imports the TVM runtime.
qemu-aarch64 -L "$work/root" -E TVM_USE_RUNTIME_LIB=1 -E PYTHONNOUSERSITE=1 -E "PYTHONPATH=$work/site" \
  "$work/root/usr/bin/python3.11" -c "import numpy, tvm; tvm.runtime.load_module" >/dev/null

rm -rf "$dest"
mkdir -p "$(dirname "$dest")"
mkdir -p "$dest"
mv "$work/root" "$dest/root"
mv "$work/site" "$dest/site"
echo "tvm=$tvm_version ffi=$ffi_version" > "$stamp"
echo "aarch64 TVM runtime installed in $dest"
