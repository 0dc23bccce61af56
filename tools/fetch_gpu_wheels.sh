#!/usr/bin/env bash
# Download the cp312 manylinux wheels the GPU machine lacks (it has Python 3.12, torch, torchaudio,
# triton, numba-cuda, onnxruntime, tensorboard and no network) into .whl/ (git-ignored), which the
# device tool carries with the tree: `run` with carry [".whl"]; benchmarks/gpu_session.sh installs
# from it with --no-deps --no-index, so the machine's torch is never replaced.
#   bash tools/fetch_gpu_wheels.sh [DIR]      # default .whl; prints the total size (carry limit 64 MiB)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
mkdir -p "$dir"
py=${JUSTKIT_PYTHON:-tools/venv/bin/python}
# Missing there (docs: the device tool's package list, 2026-11): kaldiio, soundfile (+ cffi,
# pycparser), jiwer (+ rapidfuzz); matplotlib, sentencepiece, pyyaml, numba(-cuda) are there.
pkgs=(kaldiio soundfile cffi pycparser jiwer rapidfuzz)
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
  -d "$dir" "${pkgs[@]}"
du -sh "$dir"
