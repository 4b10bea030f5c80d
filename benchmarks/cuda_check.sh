#!/usr/bin/env bash
# The GPU checks, when a GPU machine is lent (the device tool; CI has none): the CUDA tests
# (HU of every network on CUDA against the CPU, the precision policies, training steps), then
# benchmarks/cuda_precision.py timing every network per slice at batch 1/8/32 in the policy
# against the other precisions. Writes cuda_gpu.txt, cuda_tests.txt and cuda_precision.md to
# $OUT (the device tool's folder) or benchmarks/; commit cuda_precision.md from there.
# Usage: bash benchmarks/cuda_check.sh   (PY=python to use another interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks}
py=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/cuda_gpu.txt"
set +e
timeout 300 "$py" -m pytest -q -rs -p no:cacheprovider tests/test_device.py \
    tests/test_precision.py -k "cuda" 2>&1 | tee "$out/cuda_tests.txt"
tests=${PIPESTATUS[0]}
timeout 400 "$py" benchmarks/cuda_precision.py --out "$out/cuda_precision.md"
bench=$?
echo "CUDA tests exit $tests, benchmark exit $bench"
exit $(( tests || bench ))
