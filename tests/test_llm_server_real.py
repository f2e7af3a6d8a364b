"""A real OpenAI-compatible server: llama.cpp (llama-cpp-python's server) on loopback, serving a tiny
random-weight GGUF model the test writes itself. Its JSON-schema mode must turn gibberish into
valid, stored scripts through `actalign scripts generate`."""

from __future__ import annotations

import importlib.util
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from actalign.cli import main
from actalign.scripts import ScriptStore
from actalign.scripts.parse import validate_steps
from actalign.scripts.prompts import SHORT_FIXED
from actalign.scripts.schema import step_pattern

# found, not imported: importing llama_cpp here would leave its /dev/null handle open in this process
NEEDED = ("llama_cpp", "uvicorn", "fastapi", "gguf", "openai")
MISSING = [m for m in NEEDED if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING), reason=f"the llama-server extra (llama-cpp-python[server], gguf) is absent: {MISSING}"
    ),
]

ACTIONS = ["Tip-in", "Putback dunk"]
STARTUP_SECONDS = 90


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            pytest.fail(f"llama_cpp.server exited with {server.returncode}:\n{log.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail(f"llama_cpp.server did not answer within {STARTUP_SECONDS} s")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    """The server's base URL; the server is stopped after the module's tests, whatever happened."""
    from gguf_model import build_gguf

    folder = tmp_path_factory.mktemp("llama")
    model = build_gguf(folder / "tiny.gguf")
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--n_ctx", "8192", "--seed", "0", "--verbose", "false"]
    with open(folder / "server.log", "w+") as log:
        server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}/v1"
            _wait_ready(url, server, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_generate_stores_valid_scripts_through_the_json_schema_mode(llama_server, tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    args = ["scripts", "generate", "--domain", "basketball", "--candidates", *ACTIONS]
    args += ["--strategy", "short-fixed", "--llm", llama_server, "--llm-model", "tiny", "--store", str(store)]
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 0, err
    stored = {s.action: s for s in ScriptStore(store).all()}
    assert set(stored) == set(ACTIONS)
    pattern = step_pattern(SHORT_FIXED.max_words).strip("^$")
    for s in stored.values():
        # llama-cpp-python's server takes the schema as {"type": "json_object", "schema": ...}
        assert s.source == f"{llama_server}|json_object_schema"
        assert (s.model, s.strategy, s.temperature) == ("tiny", "short-fixed", 1.0)
        assert len(s.steps) == 10 and all(re.fullmatch(pattern, step) for step in s.steps)
        assert validate_steps(s.action, list(s.steps), SHORT_FIXED) == (list(s.steps), [])
        assert f"[basketball] {s.action}" in out


def test_without_the_schema_the_same_model_writes_no_json(llama_server):
    """The control: what made the answer valid was the server's grammar, not the model."""
    import openai

    client = openai.OpenAI(base_url=llama_server, api_key="none", max_retries=0)
    prompt = SHORT_FIXED.render("basketball", ACTIONS)
    reply = client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": prompt}], max_tokens=80, temperature=1.0
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(reply.choices[0].message.content)
