"""What a user installing the wheel gets: the package data (the app's CSS and JS, py.typed) is in
it, and from a fresh environment with only the wheel installed, `actalign app` serves its page and
`actalign classify` classifies a video.

The wheel is built from a copy of the sources (`pip wheel --no-deps --no-build-isolation`) and
installed with --no-deps into a new virtual environment whose other packages are this test
environment's (a .pth file names its site-packages, after the new environment's own, so the
installed wheel is what `import actalign` finds, never the checkout)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from media import make_video

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _clean_env(tmp: Path) -> dict[str, str]:
    """This environment without anything that would point Python at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["TMPDIR"] = str(tmp)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh virtual environment with the wheel installed."""
    pytest.importorskip("setuptools", reason="building the wheel needs setuptools")
    pytest.importorskip("wheel", reason="building the wheel needs the wheel package")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    )
    dist, env = tmp / "dist", _clean_env(tmp)
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)]
    done = subprocess.run([*build, str(source)], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = dist.glob("actalign-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    for data in ("actalign/app/static/timeline.js", "actalign/app/static/page.css", "actalign/py.typed"):
        assert data in names, f"the wheel lacks {data}"

    venv = tmp / "venv"
    made = subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    # the new environment's own site-packages, then this environment's (the dependencies)
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout.strip()
    ours = [*site.getsitepackages(), sysconfig.get_paths()["purelib"]]
    Path(purelib, "test-env.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(ours)))
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    where = subprocess.run(
        [str(python), "-c", "import actalign; print(actalign.__file__)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        check=True,
    ).stdout.strip()
    assert where.startswith(purelib), f"actalign imported from {where}, not the installed wheel"
    return venv / "bin"


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.status, r.read().decode("utf-8", "replace")


def test_the_installed_wheel_serves_the_app_with_its_css_and_js(installed, siglip_dir, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from app_server import free_port

    port = free_port()
    args = [str(installed / "actalign"), "app", "--model", str(siglip_dir), "--device", "cpu"]
    args += ["--port", str(port), "--store", str(tmp_path / "s.sqlite")]
    server = subprocess.Popen(
        args,
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline()
        assert first == f"actalign app on http://127.0.0.1:{port}/\n", first + server.stderr.read()
        url = first.split()[-1]
        status, page = _get(url)
        assert status == 200 and "actalign" in page
        # the page's CSS and the timeline's JS (package data) are what the page is served with
        status, config = _get(url + "config")
        assert status == 200
        css = (ROOT / "src/actalign/app/static/page.css").read_text().splitlines()[0]
        js = (ROOT / "src/actalign/app/static/timeline.js").read_text().splitlines()[0]
        assert json.dumps(css)[1:-1] in config, "the app's CSS is not served"
        assert json.dumps(js)[1:-1] in config, "the timeline's JS is not served"
    finally:
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 130, err
    assert err.strip().splitlines()[-1:] == ["interrupted"], err


def test_the_installed_wheel_classifies_a_video(installed, siglip_dir, tmp_path):
    video = make_video(tmp_path / "clip.mp4", n=12, fps=6)
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"d": {"x": ["red ball", "blue net"], "y": ["blue net", "goal"]}}))
    args = [str(installed / "actalign"), "classify", str(video), "--domain", "d", "--candidates", "x", "y"]
    args += ["--scripts", str(scripts), "--model", str(siglip_dir), "--device", "cpu", "--format", "json"]
    start = time.monotonic()
    done = subprocess.run(
        [*args, "--quiet"],
        cwd=tmp_path,
        env=_clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    (result,) = json.loads(done.stdout)["videos"]
    assert result["frames"] == 12
    assert {p["action"] for p in result["predictions"]} == {"x", "y"}
    assert time.monotonic() - start < 300
