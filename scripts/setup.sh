#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtual environment in .venv with actalign, its optional
# LLM back ends and its test tools. The CPU build of torch is pinned and installed first, so that
# nothing pulls a multi-GB CUDA build (on a GPU machine, install the torch build you want first).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
# llama-server (llama-cpp-python, for the real-server test) compiles llama.cpp from source: about 4
# minutes on 2 cores without its multimodal library (LLAVA_BUILD=OFF), which nothing here uses.
# pip caches the built wheel, so later runs on the same machine take seconds.
CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" \
    .venv/bin/python -m pip install -q -e ".[dev,llm,eval,local-llm,llama-server,ray]"
echo "actalign is installed in .venv (activate with: . .venv/bin/activate)"
