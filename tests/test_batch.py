"""The batch runner: `actalign batch` on manifests and folders, resume after SIGKILL, one run per
folder, pyarrow URIs, and the Ray engine on a real local Ray instance (same predictions as the
local engine, an actor killed mid-run)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from actalign.cli import main
from actalign.errors import ActAlignError
from actalign.runner import Method, run
from actalign.runner.plan import Clip, Plan, load_manifest
from actalign.scripts import ScriptSource
from colour_encoder import NAMES, PALETTE, ColourEncoder
from media import SAMPLES, make_video

TESTS = Path(__file__).parent


def colour_clips(root: Path, n: int = 8, seed: int = 0) -> tuple[list[Clip], dict]:
    """Clips of three colour spans; candidates are orders of those colours (one is right)."""
    rng = np.random.default_rng(seed)
    clips, scripts = [], {"t": {}}
    for i in range(n):
        order = [NAMES[j] for j in rng.choice(6, 3, replace=False)]
        frames = [PALETTE[c] for c in order for _ in range(6)]
        video = make_video(root / f"v{i}.mp4", n=len(frames), fps=6, colors=frames, size=(16, 16))
        names = []
        for k, perm in enumerate([order, order[::-1], order[1:] + order[:1]]):
            name = f"clip {i} move {k}"
            scripts["t"][name] = [f"the {c} phase" for c in perm]
            names.append(name)
        clips.append(Clip(f"v{i}", video, "t", tuple(names), 0))
    return clips, scripts


def source(scripts) -> dict:
    s = ScriptSource()
    s.hand = [scripts]
    return {"context-rich": s}


METHODS = [Method("ActAlign", smooth_seconds=0.5)]


def rows_by_id(path: Path) -> dict:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


# --------------------------------------------------------------------------- local engine, CLI


@pytest.fixture
def tiny_scripts(tmp_path):
    path = tmp_path / "scripts.json"
    steps = ["red ball", "blue net", "a player jumps"]
    path.write_text(
        json.dumps(
            {
                "t": {a: steps[i:] + steps[:i] for i, a in enumerate(["a", "b", "c"])},
                "u": {"x": steps, "y": steps[::-1]},
            }
        )
    )
    return path


def test_cli_batch_on_a_manifest_with_a_bad_video(tmp_path, siglip_dir, tiny_scripts, capsys):
    for name in ("one", "two"):
        make_video(tmp_path / f"{name}.mp4", n=12, fps=6)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    rows = [
        {"video": "one.mp4", "domain": "t", "candidates": ["a", "b", "c"]},
        {"video": "two.mp4", "domain": "u", "candidates": ["x", "y"], "start": 0.5},
        {"video": "broken.mp4", "domain": "u", "candidates": ["x", "y"]},
        {"video": "two.mp4", "domain": "u", "candidates": ["x", "X"]},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = [
        "batch",
        str(tmp_path / "m.jsonl"),
        "--out",
        str(tmp_path / "run"),
        "--model",
        str(siglip_dir),
        "--scripts",
        str(tiny_scripts),
        "--no-cache",
        "--workers",
        "2",
    ]
    assert main(args) == 1
    out = tmp_path / "run"
    done = rows_by_id(out / "predictions.jsonl")
    assert set(done) == {"one", "two@0.5-"}  # a windowed clip's default id names its window
    two = done["two@0.5-"]
    assert [p["action"] for p in two["predictions"]] != [] and len(done["one"]["predictions"]) == 3
    for p in done["one"]["predictions"]:
        assert p["segments"] and p["segments"][0]["start"] == 0.0
    assert two["start"] == 0.5 and two["predictions"][0]["segments"][0]["start"] >= 0.5
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    reasons = {f.get("id", f.get("line")): f["reason"] for f in failed}
    assert "not a video" in reasons["broken"] and "given twice" in reasons[4]
    config = json.loads((out / "config.json").read_text())
    assert config["run"]["methods"][0]["name"] == "ActAlign" and config["versions"]["actalign"]
    err = capsys.readouterr().err
    assert "1 clip failed and 1 manifest row rejected" in err and "Traceback" not in err
    assert main(args) == 1  # a rerun: nothing redone, failures tried again
    assert rows_by_id(out / "predictions.jsonl") == done


def test_cli_batch_on_a_folder(tmp_path, siglip_dir, tiny_scripts):
    folder = tmp_path / "clips"
    (folder / "sub").mkdir(parents=True)
    make_video(folder / "a.mp4", n=8, fps=4)
    make_video(folder / "sub" / "b.mp4", n=8, fps=4)
    args = [
        "batch",
        str(folder),
        "--domain",
        "t",
        "--candidates",
        "a",
        "b",
        "--out",
        str(tmp_path / "run"),
        "--model",
        str(siglip_dir),
        "--scripts",
        str(tiny_scripts),
        "--no-cache",
        "--quiet",
    ]
    assert main(args) == 0
    done = rows_by_id(tmp_path / "run" / "predictions.jsonl")
    assert sorted(Path(k).name for k in done) == ["a.mp4", "b.mp4"]
    assert all(r["candidates"] == ["a", "b"] for r in done.values())


def test_frames_of_several_clips_fill_the_batches(tmp_path):
    clips, scripts = colour_clips(tmp_path)

    class Recording(ColourEncoder):
        batch_size = 8

        def __init__(self):
            super().__init__()
            self.sizes = []

        def encode_images(self, frames):
            self.sizes.append(len(frames))
            return super().encode_images(frames)

    enc = Recording()
    run(Plan(clips), enc, source(scripts), str(tmp_path / "run"), METHODS, workers=2, progress=False)
    assert sum(enc.sizes) == 8 * 18  # every frame once
    full = sum(s == 8 for s in enc.sizes)
    assert full >= len(enc.sizes) - 3  # clips of 18 frames packed across clips: (nearly) all full


def test_in_process_decoding_gives_the_same_rows(tmp_path):
    clips, scripts = colour_clips(tmp_path)
    run(
        Plan(clips), ColourEncoder(), source(scripts), str(tmp_path / "a"), METHODS, workers=2, progress=False
    )
    run(
        Plan(clips), ColourEncoder(), source(scripts), str(tmp_path / "b"), METHODS, workers=0, progress=False
    )
    assert rows_by_id(tmp_path / "a" / "predictions.jsonl") == rows_by_id(
        tmp_path / "b" / "predictions.jsonl"
    )


SLOW_RUN = """
import sys, time
sys.path.insert(0, {tests!r})
from pathlib import Path
from colour_encoder import ColourEncoder
from test_batch import colour_clips, source, METHODS
from actalign.runner import run
from actalign.runner.plan import Plan


class Slow(ColourEncoder):
    batch_size = 6

    def encode_images(self, frames):
        time.sleep({delay})
        return super().encode_images(frames)


if __name__ == "__main__":
    clips, scripts = colour_clips(Path({root!r}))
    run(Plan(clips), Slow(), source(scripts), {out!r}, METHODS, workers=1, progress=False)
"""


def start_slow_run(tmp_path, out, delay=0.3):
    script = tmp_path / f"slow_{out.name}.py"
    script.write_text(SLOW_RUN.format(tests=str(TESTS), root=str(tmp_path), out=str(out), delay=delay))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_lines(path: Path, n: int, proc, timeout=120) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.05)
    raise AssertionError("the run did not get far enough")


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line contains `text` (the forkserver's carries sys.path)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def wait_until_gone(text: str, timeout: float = 10.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if not processes_mentioning(text):
            return True
        time.sleep(0.2)
    return False


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path):
    clips, scripts = colour_clips(tmp_path)
    run(Plan(clips), ColourEncoder(), source(scripts), str(tmp_path / "whole"), METHODS, progress=False)
    out = tmp_path / "killed"
    proc = start_slow_run(tmp_path, out)
    wait_for_lines(out / "predictions.jsonl", 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_until_gone(str(tmp_path)), "decode workers outlived their killed run"
    before = rows_by_id(out / "predictions.jsonl")
    assert 2 <= len(before) < len(clips)
    written = []
    run(
        Plan(clips),
        ColourEncoder(),
        source(scripts),
        str(out),
        METHODS,
        progress=False,
        on_row=lambda r: written.append(r["id"]),
    )
    assert sorted(written) == sorted(c.id for c in clips if c.id not in before)  # nothing done twice
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(clips) == len({json.loads(x)["id"] for x in lines})
    assert rows_by_id(out / "predictions.jsonl") == rows_by_id(tmp_path / "whole" / "predictions.jsonl")
    assert not list(out.glob(".*.tmp"))


def test_two_runs_cannot_share_a_folder(tmp_path):
    clips, scripts = colour_clips(tmp_path)
    out = tmp_path / "run"
    proc = start_slow_run(tmp_path, out, delay=0.5)
    try:
        wait_for_lines(out / "config.json", 1, proc)
        with pytest.raises(ActAlignError, match="Another run is writing to"):
            run(Plan(clips), ColourEncoder(), source(scripts), str(out), METHODS, progress=False)
    finally:
        proc.kill()
        proc.wait()
    run(Plan(clips), ColourEncoder(), source(scripts), str(out), METHODS, progress=False)  # free again


def test_a_pyarrow_uri_as_the_run_folder(tmp_path):
    pytest.importorskip("pyarrow", reason="pyarrow (the ray extra) is not installed")
    clips, scripts = colour_clips(tmp_path)
    uri = (tmp_path / "remote").as_uri()
    first = run(Plan(clips[:3]), ColourEncoder(), source(scripts), uri, METHODS, progress=False)
    again = run(Plan(clips), ColourEncoder(), source(scripts), uri, METHODS, progress=False)
    assert len(first.rows) == 3 and len(again.rows) == len(clips)
    remote = tmp_path / "remote"
    names = sorted(p.name for p in remote.iterdir())
    assert names == ["config.json", "failed.jsonl", "predictions.jsonl", "scripts.json"]
    assert len(rows_by_id(remote / "predictions.jsonl")) == len(clips)


def test_a_script_without_a_main_guard_gets_one_clear_sentence(tmp_path):
    """Each worker process imports the caller's script; unguarded, it runs the work again there
    and dies. The runner notices its workers cannot start and says what to do."""
    clips_dir = tmp_path / "c"
    clips_dir.mkdir()
    script = tmp_path / "unguarded.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(TESTS)!r})
            from pathlib import Path
            from colour_encoder import ColourEncoder
            from test_batch import colour_clips, source, METHODS
            from actalign.runner import run
            from actalign.runner.plan import Plan
            clips, scripts = colour_clips(Path({str(clips_dir)!r}), n=2)
            out = {str(tmp_path / "run")!r}
            run(Plan(clips), ColourEncoder(), source(scripts), out, METHODS, progress=False)
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "ActAlignError: Decode worker processes could not start" in proc.stderr
    assert 'if __name__ == "__main__":' in proc.stderr and "workers=0" in proc.stderr


# --------------------------------------------------------------------------- Ray


KILLER = """
import os
from colour_encoder import ColourEncoder


class KillOnce(ColourEncoder):
    \"\"\"Kills its own process the first time it is asked to encode (once per marker file).\"\"\"

    def encode_images(self, frames):
        marker = os.environ["ACTALIGN_TEST_KILL_MARKER"]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(1)
        return super().encode_images(frames)
"""


@pytest.fixture(scope="module")
def ray_instance(tmp_path_factory):
    ray = pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")
    here = tmp_path_factory.mktemp("ray")
    (here / "killer_encoder.py").write_text(KILLER)
    marker = here / "killed"
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                # this checkout's actalign where PYTHONPATH names it (a worktree beside an editable install)
                "PYTHONPATH": os.pathsep.join(
                    filter(None, [str(TESTS), str(here), os.environ.get("PYTHONPATH")])
                ),
                "ACTALIGN_TEST_KILL_MARKER": str(marker),
            }
        },
    )
    sys.path.insert(0, str(here))
    yield marker
    ray.shutdown()
    sys.path.remove(str(here))


def test_ray_gives_the_local_engine_predictions(ray_instance, tmp_path):
    clips, scripts = colour_clips(tmp_path)
    local = run(
        Plan(clips), ColourEncoder(), source(scripts), str(tmp_path / "local"), METHODS, progress=False
    )
    remote = run(
        Plan(clips),
        ColourEncoder(),
        source(scripts),
        str(tmp_path / "ray"),
        METHODS,
        engine="ray",
        progress=False,
    )
    assert len(remote.rows) == len(clips)
    assert rows_by_id(tmp_path / "ray" / "predictions.jsonl") == rows_by_id(
        tmp_path / "local" / "predictions.jsonl"
    )
    assert remote.rows == local.rows


def test_ray_refuses_workers_that_leave_no_cpu_for_decoding(ray_instance, tmp_path):
    """Before: --workers 2 on 2 CPUs gave both to encoder actors; no clip was ever decoded, 0 rows,
    idle, no word."""
    clips, scripts = colour_clips(tmp_path, n=2)
    with pytest.raises(ActAlignError, match="use `workers=1` or fewer"):
        run(
            Plan(clips), ColourEncoder(), source(scripts), str(tmp_path / "run"), METHODS, engine="ray",
            workers=2, progress=False,
        )  # fmt: skip
    assert not (tmp_path / "run" / "predictions.jsonl").read_text()


def test_ray_survives_a_killed_encoder_actor(ray_instance, tmp_path):
    from killer_encoder import KillOnce

    clips, scripts = colour_clips(tmp_path, seed=1)
    assert not ray_instance.exists()
    result = run(
        Plan(clips), KillOnce(), source(scripts), str(tmp_path / "run"), METHODS, engine="ray", progress=False
    )
    assert ray_instance.exists()  # an actor did die mid-run
    lines = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(clips) == len({json.loads(x)["id"] for x in lines}) == len(result.rows)
    clean = run(
        Plan(clips), ColourEncoder(), source(scripts), str(tmp_path / "clean"), METHODS, progress=False
    )
    assert result.rows == clean.rows


@pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/data is not beside this checkout")
def test_ray_and_local_agree_on_the_shared_clips(ray_instance, tmp_path, siglip_dir):
    from actalign import load_encoder

    plan = load_manifest(SAMPLES / "manifest.jsonl")
    scripts = {}
    for c in plan.clips:
        for a in c.candidates:
            scripts.setdefault(c.domain, {})[a] = [f"{a} begins", f"{a} happens", f"{a} ends"]
    enc = load_encoder(str(siglip_dir), device="cpu", dtype="float32")
    local = run(plan, enc, source(scripts), str(tmp_path / "local"), METHODS, fps=2, progress=False)
    remote = run(
        plan, enc, source(scripts), str(tmp_path / "ray"), METHODS, fps=2, engine="ray", progress=False
    )
    assert len(local.rows) == len(remote.rows) == 6
    for a, b in zip(local.rows, remote.rows):
        assert a["id"] == b["id"] and a["frames"] == b["frames"]
        np.testing.assert_allclose(
            a["methods"]["ActAlign"]["scores"], b["methods"]["ActAlign"]["scores"], atol=1e-6
        )
