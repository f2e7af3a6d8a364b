"""A run's scripts are part of its configuration: recorded in the run folder the first
time each is used, never mixed on resume, named by hash in every row and in the summary."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from actalign.cli import main
from test_engines import manifest, rows, start_batch, wait_for_rows

ORIGINAL = {"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"], "c": ["player jumps", "net"]}}
EDITED = {"t": {**ORIGINAL["t"], "b": ["blue net", "player jumps", "red ball"]}}


def write(path: Path, scripts: dict) -> Path:
    path.write_text(json.dumps(scripts))
    return path


def batch(tmp_path, siglip_dir, *extra: str) -> int:
    clips, out = str(tmp_path / "clips.jsonl"), str(tmp_path / "run")
    model = ["--model", str(siglip_dir), "--cache-dir", str(tmp_path / "cache")]
    return main(["batch", clips, "--out", out, *model, "--workers", "1", "-q", *extra])


def hashes(out: Path) -> dict[str, set[str]]:
    """Per action, the script hashes the rows name."""
    seen: dict[str, set[str]] = {}
    for row in rows(out):
        for action, h in row["methods"]["ActAlign"]["scripts"].items():
            seen.setdefault(action, set()).add(h)
    return seen


def test_a_script_changed_in_the_store_refuses_the_resume(tmp_path, siglip_dir, capsys):
    manifest(tmp_path, 5)
    store = ["--store", str(tmp_path / "s.sqlite")]
    assert main(["scripts", "import", str(write(tmp_path / "orig.json", ORIGINAL)), *store]) == 0
    assert batch(tmp_path, siglip_dir, *store, "--limit", "2") == 0  # a run stopped after 2 clips
    recorded = json.loads((tmp_path / "run" / "scripts.json").read_text())
    assert {v["action"]: v["steps"] for v in recorded.values()} == ORIGINAL["t"]
    assert all(v["origin"] == "store" for v in recorded.values())
    assert main(["scripts", "import", str(write(tmp_path / "edited.json", EDITED)), *store]) == 0
    capsys.readouterr()
    assert batch(tmp_path, siglip_dir, *store) == 2
    err = capsys.readouterr().err
    assert "'b' in 't'" in err and "--recorded-scripts" in err and "new --out" in err, err
    assert "Traceback" not in err and len(rows(tmp_path / "run")) == 2
    assert main(["scripts", "import", str(tmp_path / "orig.json"), *store]) == 0  # put it back
    assert batch(tmp_path, siglip_dir, *store) == 0
    assert len(rows(tmp_path / "run")) == 5
    assert all(len(h) == 1 for h in hashes(tmp_path / "run").values())  # one version per script


def test_recorded_scripts_keep_the_run_on_its_own_version(tmp_path, siglip_dir):
    manifest(tmp_path, 4)
    first = write(tmp_path / "s.json", ORIGINAL)
    assert batch(tmp_path, siglip_dir, "--scripts", str(first), "--limit", "1") == 0
    write(first, EDITED)  # the hand-written file edited between the runs
    assert batch(tmp_path, siglip_dir, "--scripts", str(first)) == 2
    assert batch(tmp_path, siglip_dir, "--scripts", str(first), "--recorded-scripts") == 0
    seen = hashes(tmp_path / "run")
    assert len(rows(tmp_path / "run")) == 4 and all(len(h) == 1 for h in seen.values())
    recorded = json.loads((tmp_path / "run" / "scripts.json").read_text())
    b = next(v for v in recorded.values() if v["action"] == "b")
    assert b["steps"] == ORIGINAL["t"]["b"] and seen["b"] == {b["hash"]} and b["origin"] == "file"


def test_a_killed_batch_resumes_on_its_recorded_scripts(tmp_path, siglip_dir):
    pytest.importorskip("av")
    manifest(tmp_path, 10)
    store = tmp_path / "s.sqlite"
    assert (
        main(["scripts", "import", str(write(tmp_path / "orig.json", ORIGINAL)), "--store", str(store)]) == 0
    )
    out = tmp_path / "run"
    (tmp_path / "scripts.json").write_text("{}")  # start_batch passes --scripts: no hand-written ones
    proc = start_batch(tmp_path, siglip_dir, out, "local", str(tmp_path), ["--store", str(store)])
    wait_for_rows(out, 2, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (
        main(["scripts", "import", str(write(tmp_path / "edited.json", EDITED)), "--store", str(store)]) == 0
    )
    again = start_batch(
        tmp_path, siglip_dir, out, "local", str(tmp_path), ["--store", str(store)], slow=False
    )
    _, err = again.communicate(timeout=300)
    assert again.returncode == 2 and "'b' in 't'" in err, err
    assert main(["scripts", "import", str(tmp_path / "orig.json"), "--store", str(store)]) == 0
    again = start_batch(
        tmp_path, siglip_dir, out, "local", str(tmp_path), ["--store", str(store)], slow=False
    )
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sorted(r["id"] for r in rows(out)) == [f"v{i:02d}" for i in range(10)]
    assert all(len(h) == 1 for h in hashes(out).values())


def test_eval_lists_the_scripts_of_its_summary_and_refuses_a_change(tmp_path, siglip_dir, capsys):
    manifest(tmp_path, 3)
    lines = [json.loads(x) for x in (tmp_path / "clips.jsonl").read_text().splitlines()]
    (tmp_path / "clips.jsonl").write_text("".join(json.dumps({**r, "answer": 1}) + "\n" for r in lines))
    scripts = write(tmp_path / "s.json", ORIGINAL)
    command = [
        "eval", str(tmp_path / "clips.jsonl"), "--out", str(tmp_path / "ev"), "--model", str(siglip_dir),
        "--scripts", str(scripts), "--workers", "1", "-q",
    ]  # fmt: skip
    assert main([*command, "--limit", "1"]) == 0
    write(scripts, EDITED)
    capsys.readouterr()
    assert main(command) == 2
    assert "'b' in 't'" in capsys.readouterr().err
    write(scripts, ORIGINAL)
    assert main(command) == 0
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    listed = {v["action"]: v["hash"] for v in summary["scripts"].values()}
    assert set(listed) == {"a", "b", "c"}
    assert hashes(tmp_path / "ev") == {a: {h} for a, h in listed.items()}
    assert os.path.exists(tmp_path / "ev" / "scripts.json")
