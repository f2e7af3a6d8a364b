"""The API reference is built from the docstrings by the documented command (pdoc), and shows the
front door with its methods."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
COMMAND = "python -m pdoc -o docs/api actalign"


def test_the_documented_command_builds_the_reference(tmp_path):
    pytest.importorskip("pdoc", reason="pdoc is a dev extra (pip install 'actalign[dev]')")
    assert COMMAND in README.read_text(), "the README names the command"
    out = tmp_path / "api"
    modules = ["actalign", "actalign.api", "actalign.config", "actalign.score", "actalign.align"]
    done = subprocess.run(
        [sys.executable, "-m", "pdoc", "-o", str(out), *modules], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    page = (out / "actalign" / "api.html").read_text()
    for name in ("ActAlign", "classify", "locate", "evaluate", "Failure"):
        assert name in page
    config = (out / "actalign" / "config.html").read_text()
    assert "Config" in config and "record" in config
