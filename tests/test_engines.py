"""The engines behind one interface, as a user runs them: rows stream to predictions.jsonl while a
Ray run goes on, Ctrl-C keeps them (exit 130, one line, no traceback), the rerun does each clip
exactly once, and no process of a run outlives it (kill -9 of the parent included)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from media import make_video

pytestmark = pytest.mark.slow
SLOW = """
import importlib.abc, importlib.util, os, sys, time


class _Slow(importlib.abc.MetaPathFinder):
    \"\"\"Slows the tiny model's frame encoding to a real model's pace, in every process of a run.\"\"\"

    def find_spec(self, name, path, target=None):
        if name != "actalign.encoders.common":  # both SigLIP loaders' encode_images
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            real = module.ImageTextEncoder.encode_images

            def encode_images(self, frames):
                time.sleep(float(os.environ["AA_SLOW_ENCODE"]))
                return real(self, frames)

            module.ImageTextEncoder.encode_images = encode_images

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("AA_SLOW_ENCODE"):
    sys.meta_path.insert(0, _Slow())
"""
SCRIPTS = {"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"], "c": ["player jumps", "net"]}}


def manifest(tmp_path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        colors = [((i * 40 + k * 9) % 255, (k * 30) % 255, (i * 7) % 255) for k in range(30)]
        video = make_video(tmp_path / f"v{i:02d}.mp4", n=30, fps=10, colors=colors, size=(32, 32))
        rows.append({"id": f"v{i:02d}", "video": str(video), "domain": "t", "candidates": ["a", "b", "c"]})
    path = tmp_path / "clips.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "scripts.json").write_text(json.dumps(SCRIPTS))
    return path


def start_batch(
    tmp_path: Path, siglip_dir: Path, out: Path, engine: str, ray_tmp: str, extra=(), slow: bool = True
) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "actalign", "batch", str(tmp_path / "clips.jsonl"), "--out", str(out),
        "--engine", engine, "--model", str(siglip_dir), "--scripts", str(tmp_path / "scripts.json"),
        "--cache-dir", str(tmp_path / "cache"), "--batch-size", "4", "--workers", "1", *extra,
    ]  # fmt: skip
    (tmp_path / "slow").mkdir(exist_ok=True)
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW)
    path = os.pathsep.join([str(tmp_path / "slow"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env = {
        **os.environ,
        "RAY_TMPDIR": ray_tmp,
        "RAY_AUTH_MODE": "disabled",
        "AA_SLOW_ENCODE": "0.3" if slow else "",
    }
    env["PYTHONPATH"] = path
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def rows(out: Path) -> list[dict]:
    path = out / "predictions.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_for_rows(out: Path, n: int, proc, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if len(rows(out)) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended early: {proc.stderr.read()}")
        time.sleep(0.1)
    raise AssertionError("no rows appeared while the run went on")


def session_processes(sid: int) -> list[str]:
    """Live processes of a session (the run and everything it started that stayed in it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except (OSError, ValueError):
            continue
    return found


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                line = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in line:
                found.append(line)
    return found


def gone_within(check, seconds: float = 10.0) -> list[str]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        left = check()
        if not left:
            return []
        time.sleep(0.25)
    return check()


@pytest.fixture
def ray_tmp():
    pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")
    path = tempfile.mkdtemp(prefix="aa-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    yield path


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_ctrl_c_keeps_the_streamed_rows_and_the_rerun_finishes_each_clip_once(
    tmp_path, siglip_dir, engine, ray_tmp
):
    n = 24  # enough clips that Ctrl-C lands mid-run on a fast machine too (Ray streams rows in bursts)
    manifest(tmp_path, n)
    out = tmp_path / "run"
    proc = start_batch(tmp_path, siglip_dir, out, engine, ray_tmp)
    wait_for_rows(out, 2, proc)  # rows arrive while the run goes on
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    kept = rows(out)
    assert 2 <= len(kept) < n
    assert not gone_within(lambda: session_processes(proc.pid)), "a process of the run outlived Ctrl-C"
    again = start_batch(tmp_path, siglip_dir, out, engine, ray_tmp)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    ids = [r["id"] for r in rows(out)]
    assert sorted(ids) == [f"v{i:02d}" for i in range(n)]  # each clip exactly once
    assert {r["id"]: r for r in rows(out)}.keys() >= {r["id"] for r in kept}


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_no_process_outlives_a_killed_run(tmp_path, siglip_dir, engine, ray_tmp):
    manifest(tmp_path, 12)
    out = tmp_path / "run"
    proc = start_batch(tmp_path, siglip_dir, out, engine, ray_tmp)
    wait_for_rows(out, 1, proc)
    proc.kill()  # kill -9 of the parent alone
    proc.wait()
    left = gone_within(lambda: session_processes(proc.pid) + processes_mentioning(ray_tmp))
    assert not left, left


def command_for(which: str, tmp_path: Path, siglip_dir: Path) -> list[str]:
    clips = str(tmp_path / "clips.jsonl")
    model = ["--model", str(siglip_dir), "--cache-dir", str(tmp_path / "cache")]
    scripts = ["--scripts", str(tmp_path / "scripts.json")]
    if which == "batch":
        return [
            "batch",
            clips,
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
            "--batch-size",
            "4",
            *model,
            *scripts,
        ]
    if which == "eval":
        return [
            "eval",
            clips,
            "--out",
            str(tmp_path / "o"),
            "--workers",
            "1",
            "--batch-size",
            "4",
            *model,
            *scripts,
        ]
    if which == "locate":
        long = make_video(tmp_path / "long.mp4", n=600, fps=10, size=(32, 32))
        return [
            "locate",
            str(long),
            "--domain",
            "t",
            "--candidates",
            "a",
            "b",
            "--fps",
            "10",
            *model,
            *scripts,
        ]
    return ["untrimmed", clips, "--out", str(tmp_path / "o"), "--pad", "600"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("which", ["batch", "eval", "locate", "untrimmed"])
def test_signals_end_every_command_with_one_line(tmp_path, siglip_dir, which, sig):
    path = manifest(tmp_path, 12)
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**r, "answer": 0}) + "\n" for r in lines))
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "sitecustomize.py").write_text(SLOW)
    env = {**os.environ, "AA_SLOW_ENCODE": "0.3", "PYTHONPATH": str(tmp_path / "slow")}
    command = [sys.executable, "-m", "actalign", *command_for(which, tmp_path, siglip_dir)]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    t0 = time.monotonic()  # wait until it is at work: a row written, a file padded, or 5 s of locate
    while not (
        rows(tmp_path / "o")
        or (which == "untrimmed" and any((tmp_path / "o").rglob("*.mp4*")))
        or (which == "locate" and time.monotonic() - t0 > 5)
    ):
        assert proc.poll() is None and time.monotonic() - t0 < 120, proc.communicate()
        time.sleep(0.05)
    os.killpg(proc.pid, sig)  # as a terminal's Ctrl-C (or a service manager's stop) reaches the group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] in ("interrupted", "terminated"), err
    assert not gone_within(lambda: session_processes(proc.pid)), "a process of the command outlived it"


def decode_workers(run_pid: int) -> list[int]:
    """The decode worker processes of a local run (children of its forkserver)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    servers = [p for p, parent in parents.items() if parent == run_pid]
    return [p for p, parent in parents.items() if parent in servers]


@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_dead_or_stopped_decode_worker_does_not_stop_the_run(tmp_path, siglip_dir, how, monkeypatch):
    n = 10
    manifest(tmp_path, n)
    out = tmp_path / "run"
    monkeypatch.setenv("ACTALIGN_DECODE_STALL", "3")
    proc = start_batch(tmp_path, siglip_dir, out, "local", str(tmp_path), ["--workers", "2"])
    wait_for_rows(out, 1, proc)
    t0 = time.monotonic()
    while len(decode_workers(proc.pid)) < 2 and time.monotonic() - t0 < 30:
        time.sleep(0.1)
    victim = decode_workers(proc.pid)[0]
    os.kill(victim, getattr(signal, how))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    done = rows(out)
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines() if x.strip()]
    assert len(done) + len(failed) == n and len(done) >= n - 1  # its clip retried once (or listed)
    assert not Path(f"/proc/{victim}").exists() or "Z" in Path(f"/proc/{victim}/stat").read_text().split()[2]


LATE_CTRL_C = """
import atexit, os, signal, sys, time
from actalign.cli import entry

def ctrl_c_while_python_shuts_down():  # as Ray's and multiprocessing's exit hooks run
    os.kill(os.getpid(), signal.SIG{sig})
    time.sleep(5)

atexit.register(ctrl_c_while_python_shuts_down)
sys.argv = ["actalign", "models"]
entry()
"""


@pytest.mark.parametrize("sig, code, line", [("INT", 130, "interrupted"), ("TERM", 143, "terminated")])
def test_a_signal_after_the_command_is_done_is_one_line(sig, code, line):
    """Before: a traceback from the exit hook (Ray's shutdown), or death by the signal, no line."""
    proc = subprocess.run(
        [sys.executable, "-c", LATE_CTRL_C.replace("{sig}", sig)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.strip().splitlines() == [line], proc.stderr


def test_the_ray_engine_ends_the_ray_it_started_before_the_run_returns(monkeypatch):
    """Ray's own exit hook is where a Ctrl-C after the last row became a traceback (1 run in 5):
    the engine shuts its Ray down itself, inside the command, where Ctrl-C is one line."""
    from actalign.runner import ray_engine

    calls = []

    class FakeRay:
        up = False

        def is_initialized(self):
            return self.up

        def init(self, **kw):
            self.up = True
            calls.append("init")

        def shutdown(self):
            self.up = False
            calls.append("shutdown")

    fake = FakeRay()
    monkeypatch.setattr(ray_engine, "_import_ray", lambda: fake)
    engine = ray_engine.RayEngine(None, None, None, address="ray://nowhere:1")

    def rows(ray, clips):
        yield {"id": "a"}
        yield {"id": "b"}

    monkeypatch.setattr(engine, "_run", rows)
    assert [r["id"] for r in engine.run(["a", "b"])] == ["a", "b"]
    assert calls == ["init", "shutdown"] and not fake.up
    fake.up = True  # a Ray the caller started is the caller's to end
    calls.clear()
    assert len(list(engine.run(["a"]))) == 2 and calls == []


def test_ray_pools_always_leave_a_cpu_for_decoding():
    from actalign.errors import ActAlignError
    from actalign.runner.ray_engine import cpu_actors

    assert cpu_actors(2, None) == 1 and cpu_actors(16, None) == 4 and cpu_actors(16, 15) == 15
    with pytest.raises(ActAlignError, match="use `workers=1` or fewer"):
        cpu_actors(2, 2)  # before: both CPUs held by encoders, no clip ever decoded, no word
    with pytest.raises(ActAlignError, match="at least 2 CPUs"):
        cpu_actors(1, None)
