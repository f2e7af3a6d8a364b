"""What a command prints on stderr is ours: progress lines, `warning:` and `error:` lines. The
libraries underneath (transformers, torch, Ray) log and warn on their own; their lines are shown
with -v only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

import pytest

from media import make_video

OURS = re.compile(r"^(\[actalign\] |warning: |error: )")


def _run(args: list[str], tmp_path, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "ACTALIGN_PROGRESS_INTERVAL": "0.2", **env}
    return subprocess.run(
        [sys.executable, "-m", "actalign", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def clip(tmp_path):
    video = make_video(tmp_path / "clip.mp4", n=12, fps=6)
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"d": {"x": ["red ball", "blue net"], "y": ["blue net", "goal"]}}))
    return ["--domain", "d", "--candidates", "x", "y", "--scripts", str(scripts)], video


def _foreign(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not OURS.match(line)]


def test_classify_prints_no_line_of_another_library(clip, siglip_dir, tmp_path):
    options, video = clip
    done = _run(["classify", str(video), *options, "--model", str(siglip_dir)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert not _foreign(done.stderr), done.stderr
    assert "[actalign] clip.mp4" in done.stderr  # its own progress line stays


@pytest.mark.slow
def test_a_local_batch_prints_no_line_of_another_library(clip, siglip_dir, tmp_path):
    options, video = clip
    args = ["batch", str(video), *options, "--model", str(siglip_dir), "--out", str(tmp_path / "run")]
    done = _run([*args, "--workers", "1"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert not _foreign(done.stderr), done.stderr
    assert done.stdout.startswith("1 of 1 clip done")  # one clip, said so


@pytest.mark.slow
def test_a_ray_batch_prints_no_line_of_ray(clip, siglip_dir, tmp_path):
    """Ray's INFO/WARNING lines, its C++ core's included, are hidden (shown with -v)."""
    pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")
    options, video = clip
    args = ["batch", str(video), *options, "--model", str(siglip_dir), "--out", str(tmp_path / "run")]
    ray_tmp = tempfile.mkdtemp(prefix="aa-ray-", dir="/tmp")  # short: Ray's socket paths
    done = _run([*args, "--engine", "ray", "--workers", "1"], tmp_path, RAY_TMPDIR=ray_tmp)
    assert done.returncode == 0, done.stderr
    assert not _foreign(done.stderr), done.stderr


def test_a_library_warning_shows_only_with_verbose(monkeypatch, capsys):
    """A warning raised inside an installed library is not the user's to fix: shown with -v, named
    as that library's; ours are always shown, as `warning: ...`."""
    import warnings

    from actalign import progress
    from actalign.cli import _show_warning

    foreign = "/venv/lib/python3.11/site-packages/transformers/models/x.py"
    for verbose in (False, True):
        progress.configure(verbose=verbose)
        _show_warning(UserWarning("pad token unset"), UserWarning, foreign, 1)
        _show_warning(UserWarning("3 damaged packets skipped"), UserWarning, "/src/actalign/video.py", 1)
        err = capsys.readouterr().err
        assert "warning: 3 damaged packets skipped" in err
        assert ("transformers: UserWarning: pad token unset" in err) == verbose
    progress.configure()
    warnings.resetwarnings()
