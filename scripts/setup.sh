#!/usr/bin/env bash
# One-shot set-up on a fresh machine: a virtual environment in .venv with actalign and its LLM back
# ends; with --dev also the test tools and every optional extra (Ray, the app, llama.cpp, Chromium).
#
# torch is installed first, pinned ($TORCH, default torch==2.13.0), so that no looser requirement
# pulls another build later. Which build that pin gives depends on where pip looks: on this
# project's build machines a local CPU wheel is served (seconds); on a normal Linux machine PyPI
# serves the CUDA build (several GB, what a GPU needs). For a CPU-only build elsewhere, point pip
# at PyTorch's CPU wheel index: TORCH_INDEX_URL=<that index> bash scripts/setup.sh. A torch already
# in .venv is kept: install the build you want there first.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    .venv/bin/python -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH:-torch==2.13.0}"
fi
if [ "${1:-}" = "--dev" ]; then
    # everything the tests use. llama-server (llama-cpp-python, for the real-server test) compiles
    # llama.cpp from source: about 4 minutes on 2 cores without its multimodal library
    # (LLAVA_BUILD=OFF), which nothing here uses; pip caches the built wheel for later runs.
    CMAKE_ARGS="-DLLAVA_BUILD=OFF ${CMAKE_ARGS:-}" \
        .venv/bin/python -m pip install -q -e ".[dev,llm,eval,local-llm,llama-server,ray,app,test-browser]"
    # the app's browser tests drive Debian's Chromium (Playwright cannot download browsers here);
    # installed when missing and we are root (CI), else those tests skip and say why
    if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        log="${TMPDIR:-/tmp}/actalign-setup-apt.log"
        echo "installing chromium and chromium-driver with apt-get (for the browser tests; log: $log)"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >"$log" 2>&1; then
            echo "apt-get could not install chromium (see $log); the browser tests will skip and say why" >&2
        fi
    fi
else
    # what a user needs: classify, locate, batch, eval, scripts from an LLM server or a local model
    .venv/bin/python -m pip install -q -e ".[llm,eval,local-llm]"
fi
echo "actalign is installed in .venv (activate with: . .venv/bin/activate)"
