#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (a CUDA 13 driver): install effc and onnxruntime-gpu in a fresh virtual environment,
# run the GPU tests, then benchmarks/bench_cuda.py. Written for the `device` machines; not yet run on one (no GPU was
# lent while it was written), so read its output critically the first time.
#   bash scripts/gpu_check.sh [--tune-trials N]
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi
python3 -m venv /tmp/effc-gpu
. /tmp/effc-gpu/bin/activate
pip install -q --disable-pip-version-check -e '.[dev]'
pip uninstall -q -y onnxruntime
pip install -q onnxruntime-gpu "nvidia-cudnn-cu13" "nvidia-cuda-runtime-cu13" || pip install -q onnxruntime-gpu
python -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())"
python -m pytest -q -p no:cacheprovider -m gpu tests/test_cuda.py
python benchmarks/bench_cuda.py "$@"
