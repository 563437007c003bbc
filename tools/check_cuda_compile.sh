#!/usr/bin/env bash
# Compile every csrc/cuda/*.cu on its own with nvcc for sm_80 and sm_90 (no torch headers are
# involved: the kernels are plain CUDA). Fails on the first error.
set -euo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
files=(csrc/cuda/*.cu)
if [ ${#files[@]} -eq 0 ]; then echo "no CUDA sources"; exit 0; fi
command -v nvcc >/dev/null || { echo "nvcc not found: cannot check CUDA sources" >&2; exit 1; }
out=$(mktemp -d)
for f in "${files[@]}"; do
  nvcc -c -std=c++17 -O3 -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
    "$f" -o "$out/$(basename "$f").o"
  echo "compiled $f"
done
