#!/usr/bin/env bash
# Runs ON the GPU machine (bench/gpu/README.md): installs the carried wheels over its image, then the training
# bench on a random Llama-3.2-1B-shaped model, ours vs plain TRL side by side, with MFU. Output in $OUT.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-bench/out/gpu}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 bench/bench_train.py --device cuda --shape llama-3.2-1b --limit 181 --batch 16 --rounds 2 \
  --out-dir "$OUT" "$@" 2>&1 | grep -v -i warn | tee "$OUT/log.txt"
