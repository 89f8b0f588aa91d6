#!/usr/bin/env bash
# Wheels the GPU machine lacks (its image has torch, accelerate, peft, numpy, pandas, pyarrow, tokenizers...,
# but not trl, datasets or pydantic, and older transformers / huggingface_hub), at the versions of this
# checkout's .venv, for CPython 3.12 on x86-64. Into .whl/ (git-ignored via .git/info/exclude).
#   bash bench/gpu/fetch_wheels.sh        # ~20 MB; then see bench/gpu/README.md
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
names=(transformers trl datasets huggingface_hub httpx2 httpcore2 truststore tokenizers pydantic pydantic_core
       typing_inspection annotated_types dill multiprocess xxhash typer)
rm -rf .whl && mkdir .whl
for n in "${names[@]}"; do
  v=$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$n'))" 2>/dev/null) || { echo "skip $n (not in .venv)"; continue; }
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d .whl "$n==$v"
done
du -sh .whl && ls .whl
