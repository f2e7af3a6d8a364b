from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests' helper modules (media, models)

# Tests never talk to a model hub: anything not built here must fail fast, offline.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The suite runs with the machine's real CPU flags (bfloat16 by default on a CPU with bfloat16
# units, as for a user there): tests about the choice inject flags (test_cpu_dtype), and tests that
# compare exact numbers pin dtype="float32" / --dtype float32.


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own embedding cache and script store."""
    monkeypatch.setenv("ACTALIGN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ACTALIGN_HOME", str(tmp_path / "home"))
    for var in (
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "OPENAI_MODEL",
        "ACTALIGN_LLM_API_KEY",
        "ACTALIGN_LLM_BASE_URL",
        "ACTALIGN_LLM_MODEL",
        "ACTALIGN_LLM",
        "ACTALIGN_LLM_MAX_NEW_TOKENS",
        "ACTALIGN_LLM_TIMEOUT",
        "ACTALIGN_LOADER",  # the SigLIP loader: the tests choose it where it matters
    ):
        monkeypatch.delenv(var, raising=False)  # no test may reach a real LLM


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:
    from models import build_siglip

    return build_siglip(tmp_path_factory.mktemp("models") / "tiny-siglip")


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    from models import build_clip

    return build_clip(tmp_path_factory.mktemp("models") / "tiny-clip")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Name the folder the browser tests kept their screenshots in."""
    folder = getattr(config, "actalign_artifacts", None)
    if folder is not None:
        terminalreporter.write_line(f"app screenshots: {folder}")
