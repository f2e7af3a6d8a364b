"""What other programs hand us: pipes and devices instead of files, absurd flag values, line
separators inside JSON strings, long padding. Each is one sentence (or works), never a hang, a
traceback or a memory blow-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from media import make_video

pytestmark = pytest.mark.slow


def actalign(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command as a user runs it; a hang fails the test at `timeout`."""
    return subprocess.run(
        [sys.executable, "-m", "actalign", *args], capture_output=True, text=True, timeout=timeout
    )


def one_sentence(result: subprocess.CompletedProcess, *words: str) -> None:
    err = result.stderr.strip()
    assert result.returncode == 2, (result.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert all(w in err for w in words), err


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def test_pipes_and_devices_are_refused_not_read(tmp_path, fifo, siglip_dir):
    scripts = tmp_path / "s.json"
    scripts.write_text(json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    base = ["--domain", "t", "--candidates", "a", "b", "--model", str(siglip_dir), "--no-cache"]
    one_sentence(actalign("classify", str(fifo), *base, "--scripts", str(scripts)), "is a pipe")
    clip = make_video(tmp_path / "c.mp4", n=10)
    one_sentence(actalign("classify", str(clip), *base, "--scripts", str(fifo)), "is a pipe")
    one_sentence(actalign("classify", str(clip), *base, "--scripts", "/dev/zero"), "is a device")
    one_sentence(
        actalign(
            "classify", str(clip), "--domain", "t", "--candidates-file", str(fifo), "--model", str(siglip_dir)
        ),
        "is a pipe",
    )
    os.mkfifo(tmp_path / "m.jsonl")
    manifest = str(tmp_path / "m.jsonl")
    one_sentence(
        actalign("batch", manifest, "--out", str(tmp_path / "o"), "--model", str(siglip_dir)), "is a pipe"
    )
    one_sentence(
        actalign("eval", manifest, "--out", str(tmp_path / "e"), "--model", str(siglip_dir)), "is a pipe"
    )


def test_a_pipe_in_a_manifest_is_a_failed_row_and_the_batch_goes_on(tmp_path, fifo, siglip_dir):
    clip = make_video(tmp_path / "c.mp4", n=10)
    rows = [
        {"id": "pipe", "video": str(fifo), "domain": "t", "candidates": ["a", "b"]},
        {"id": "clip", "video": str(clip), "domain": "t", "candidates": ["a", "b"]},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "s.json").write_text(
        json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}})
    )
    out = tmp_path / "o"
    result = actalign(
        "batch", str(tmp_path / "m.jsonl"), "--out", str(out), "--model", str(siglip_dir),
        "--scripts", str(tmp_path / "s.json"), "--workers", "1", "-q",
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr  # 1: a clip failed
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    done = [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text().splitlines()]
    failed = [json.loads(x) for x in (out / "failed.jsonl").read_text().splitlines()]
    assert done == ["clip"] and failed[0]["id"] == "pipe" and "is a pipe" in failed[0]["reason"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--fps", "1e308"], ["10000"]),
        (["--template", "{step:>999999999}"], ["limited to 1000"]),
        (["--template", "{step:{domain}}"], ["limited to 1000"]),
    ],
)
def test_absurd_values_are_one_sentence(tmp_path, siglip_dir, args, words):
    clip = make_video(tmp_path / "c.mp4", n=10)
    (tmp_path / "s.json").write_text(
        json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}})
    )
    base = [
        "--domain",
        "t",
        "--candidates",
        "a",
        "b",
        "--model",
        str(siglip_dir),
        "--scripts",
        str(tmp_path / "s.json"),
    ]
    for command in ("classify", "locate"):
        one_sentence(actalign(command, str(clip), *base, *args, timeout=60), *words)


@pytest.mark.parametrize("args", [["--pad", "1e9"], ["--seed", "12345678901234567890"], ["--seed", "-1"]])
def test_untrimmed_bounds_its_padding_and_seed(tmp_path, args):
    (tmp_path / "m.jsonl").write_text("")
    one_sentence(
        actalign("untrimmed", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "o"), *args, timeout=60)
    )


def test_line_separators_inside_json_strings_are_kept(tmp_path, siglip_dir):
    clip = make_video(tmp_path / "c.mp4", n=10)
    odd = ["Tip\u2028in", "Sky\u2029hook"]
    row = {"id": "x", "video": str(clip), "domain": "t", "candidates": odd}
    (tmp_path / "m.jsonl").write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    (tmp_path / "s.json").write_text(
        json.dumps(
            {"t": {odd[0]: ["red ball", "blue net"], odd[1]: ["blue net", "red ball"]}}, ensure_ascii=False
        )
    )
    out = tmp_path / "o"
    result = actalign(
        "batch", str(tmp_path / "m.jsonl"), "--out", str(out), "--model", str(siglip_dir),
        "--scripts", str(tmp_path / "s.json"), "--workers", "1", "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    done = [json.loads(x) for x in (out / "predictions.jsonl").read_text(encoding="utf-8").split("\n") if x]
    # kept, not split into broken lines; the candidate rule makes every kind of space one space
    assert len(done) == 1 and done[0]["candidates"] == ["Tip in", "Sky hook"]


PEAK = """
import resource, sys
from actalign.cli import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
sys.exit(code)
"""


def peak_mb(tmp_path: Path, pad: str) -> int:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            PEAK,
            "untrimmed",
            str(tmp_path / "m.jsonl"),
            "--out",
            str(tmp_path / f"o{pad}"),
            "--pad",
            pad,
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.strip().splitlines()[-1])


def test_untrimmed_streams_its_padding(tmp_path):
    """Two minutes of 320x240 padding on each side is 1,200 frames (276 MB) per side; written as
    a stream, the peak is that of a few seconds' padding."""
    rows = []
    for i in range(2):
        video = make_video(tmp_path / f"c{i}.mp4", n=20, fps=10, size=(320, 240))
        rows.append({"id": f"c{i}", "video": str(video), "domain": "t", "candidates": ["a", "b"]})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    short, long = peak_mb(tmp_path, "6"), peak_mb(tmp_path, "120")
    assert long - short < 100, f"peak {short} MB with 6 s of padding, {long} MB with 120 s: it was held"


# --------------------------------------------------------------------------- run-folder files, fuzzed

RUN_FUZZ_CASES = 36  # fixed: the same cases on every machine (seeded)
VALIDATED = ("id", "candidates", "domain", "methods", "video", "start", "end", "answer")


def _damage(rng, name: str, data: bytes) -> tuple[str, bytes]:
    """One random damage of a run-folder file that a resume can notice: torn, garbage (invalid
    UTF-8 included), a value of the wrong type, absurd nesting, a repeated line, emptied."""
    kind = ["truncate", "garbage", "retype", "deep", "duplicate", "empty"][int(rng.integers(6))]
    if kind == "truncate":
        return kind, data[: int(rng.integers(0, max(1, len(data))))]
    if kind == "garbage":
        at = int(rng.integers(0, len(data) + 1))
        junk = bytes(rng.integers(0, 256, int(rng.integers(1, 12)), dtype=np.uint8)) + b"\xff"  # never UTF-8
        return kind, data[:at] + junk + data[at:]
    if kind == "deep":
        return kind, b"[" * 200_000 + b"\n" + data if name == "predictions.jsonl" else b"{" * 200_000
    if kind == "empty":
        return kind, b""
    lines = data.split(b"\n")
    filled = [i for i, x in enumerate(lines) if x.strip()]
    i = filled[int(rng.integers(len(filled)))]
    if kind == "duplicate":
        return kind, b"\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])
    wrong = [None, 7, "x", [], {}, True, [1, None], "abc"][int(rng.integers(8))]
    if name == "predictions.jsonl":
        row = json.loads(lines[i])
        key = VALIDATED[int(rng.integers(len(VALIDATED)))]
        if key == "methods" and rng.integers(2):
            entry = row["methods"]["ActAlign"]
            entry[["scores", "rank"][int(rng.integers(2))]] = wrong if wrong is not None else "x"
        else:
            row[key] = wrong if (wrong is not None or key != "start") else "x"
        lines[i] = json.dumps(row).encode()
        return f"retype {key}", b"\n".join(lines)
    value = json.loads(data)
    if name == "scripts.json":
        entry = value[sorted(value)[int(rng.integers(len(value)))]]
        if rng.integers(2):
            entry["steps"] = wrong
        else:
            value[sorted(value)[0]] = wrong
    else:
        value["run"][sorted(value["run"])[int(rng.integers(len(value["run"])))]] = wrong
    return "retype", json.dumps(value).encode()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished local run of colour clips (and its rows), to damage copies of."""
    from actalign.runner import run
    from actalign.runner.plan import Plan
    from colour_encoder import ColourEncoder
    from test_batch import METHODS, colour_clips, source

    root = tmp_path_factory.mktemp("run-fuzz")
    clips, scripts = colour_clips(root, n=4)
    out = root / "reference"
    result = run(Plan(clips), ColourEncoder(), source(scripts), str(out), METHODS, workers=0, progress=False)
    assert len(result.rows) == 4
    return root, out, clips, scripts, result.rows


def test_fuzzed_run_folder_files_are_one_sentence_or_a_correct_resume(finished_run, tmp_path):
    """config.json, scripts.json and predictions.jsonl damaged at random (seeded, a fixed count):
    a resume either stops with one sentence or ends with exactly the rows of an undamaged run."""
    import shutil
    import warnings

    from actalign.errors import ActAlignError
    from actalign.runner import run
    from actalign.runner.plan import Plan
    from colour_encoder import ColourEncoder
    from test_batch import METHODS, source

    _, reference, clips, scripts, want = finished_run
    rng = np.random.default_rng(30)
    outcomes: dict[str, int] = {}
    for case in range(RUN_FUZZ_CASES):
        name = ["config.json", "scripts.json", "predictions.jsonl"][case % 3]
        out = tmp_path / f"case{case}"
        shutil.copytree(reference, out)
        kind, data = _damage(rng, name, (out / name).read_bytes())
        (out / name).write_bytes(data)
        label = f"case {case}: {name} {kind}"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = run(Plan(clips), ColourEncoder(), source(scripts), str(out), METHODS, workers=0,
                          progress=False)  # fmt: skip
        except ActAlignError as e:
            message = str(e)
            assert message and "\n" not in message and "Traceback" not in message, label
            outcomes["sentence"] = outcomes.get("sentence", 0) + 1
            continue
        except Exception as e:  # anything else is a traceback a user would see
            raise AssertionError(f"{label}: {type(e).__name__}: {str(e)[:300]}") from None
        assert got.rows == want, label
        ids = [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) and {r["id"] for r in want} <= set(ids), label  # each once
        outcomes["resumed"] = outcomes.get("resumed", 0) + 1
    assert sum(outcomes.values()) == RUN_FUZZ_CASES and len(outcomes) == 2, outcomes
