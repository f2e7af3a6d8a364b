#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtual environment in .venv with actalign and its
# test tools. The CPU build of torch is pinned and installed first, so that nothing pulls a
# multi-GB CUDA build (on a GPU machine, install the torch build you want before this script).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev,llm,eval,app,test-browser]"
# the app's browser tests drive Debian's Chromium (Playwright cannot download browsers here);
# installed when missing and we are root (CI), else they skip and say why
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver
fi
echo "actalign is installed in .venv (activate with: . .venv/bin/activate)"
