"""A full disk: `batch --out` and `classify --cache-dir` on a filesystem with no room left (a real
tmpfs of a few KiB, mounted in a private mount namespace) end in one sentence or one warning,
never a traceback, and leave nothing half-written that a rerun would take as valid."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from media import make_video

pytestmark = pytest.mark.slow


def can_mount(tmp_path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {tmp_path}"], capture_output=True
    )
    return probe.returncode == 0


def on_a_full_disk(folder, *args: str) -> subprocess.CompletedProcess:
    """Run actalign with `folder` a tmpfs filled to the last byte (after `mkdir -p` of its parts)."""
    fill = f"mount -t tmpfs -o size=64k tmpfs {folder} && mkdir -p {folder}/out && "
    fill += f"(dd if=/dev/zero of={folder}/filler bs=1k count=128 2>/dev/null; true) && "
    command = " ".join(f"'{a}'" for a in [sys.executable, "-m", "actalign", *args])
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", fill + command], capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def full(tmp_path):
    folder = tmp_path / "full"
    folder.mkdir()
    if not can_mount(folder):
        pytest.skip("cannot mount a tmpfs here (needs root or user namespaces: unshare -m)")
    return folder


def test_batch_on_a_full_disk_is_one_sentence(tmp_path, full, siglip_dir):
    clip = make_video(tmp_path / "c.mp4", n=10)
    (tmp_path / "s.json").write_text(
        json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}})
    )
    result = on_a_full_disk(
        full, "batch", str(clip), "--domain", "t", "--candidates", "a", "b", "--out", f"{full}/out/run",
        "--model", str(siglip_dir), "--scripts", str(tmp_path / "s.json"), "--no-cache", "--workers", "1",
    )  # fmt: skip
    err = result.stderr.strip()
    assert result.returncode == 2 and "Traceback" not in err, err
    assert "full" in err.splitlines()[-1] or "No space" in err.splitlines()[-1], err


def test_classify_with_its_cache_on_a_full_disk_still_answers(tmp_path, full, siglip_dir):
    clip = make_video(tmp_path / "c.mp4", n=10)
    (tmp_path / "s.json").write_text(
        json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}})
    )
    result = on_a_full_disk(
        full, "classify", str(clip), "--domain", "t", "--candidates", "a", "b", "--model", str(siglip_dir),
        "--scripts", str(tmp_path / "s.json"), "--cache-dir", f"{full}/out/cache", "--format", "json",
    )  # fmt: skip
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "full" in result.stderr and json.loads(result.stdout)["videos"][0]["predictions"]
