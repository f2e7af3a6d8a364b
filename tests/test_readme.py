"""The README's claims against what the code does: its example output is what the documented
command prints with the documented tiny model; the files `--plot`, `--save-arrays` and cues are
written to, and the keys of `--save-arrays` and of `locate --format json`, are the ones its pages in
docs/ (output.md, untrimmed.md) name; the README keeps its two set-up commands at the top and links
every page the long sections moved to."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actalign.cli import main
from media import make_video

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def section(title: str) -> str:
    """The README's text under `## title`, up to the next section."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end > 0 else None]


def prose(title: str) -> str:
    """A section's text with the line breaks of its paragraphs undone."""
    return " ".join(section(title).split())


def doc(name: str) -> str:
    """A page of docs/ (the README links it) with the line breaks of its paragraphs undone."""
    assert f"](docs/{name})" in README.read_text(encoding="utf-8"), f"the README does not link docs/{name}"
    return " ".join((ROOT / "docs" / name).read_text(encoding="utf-8").split())


def example() -> tuple[list[str], list[str]]:
    """(the command's words, the output lines) of the first code block under 'What you get'."""
    block = re.search(r"```\n(.*?)```", section("What you get"), re.S)
    assert block, "README: no code block under 'What you get'"
    lines = block.group(1).splitlines()
    assert lines[0].startswith("$ "), lines[0]
    command, i = lines[0][2:], 0
    while command.endswith("\\"):
        i += 1
        command = command[:-1] + " " + lines[i].strip()
    return shlex.split(command), lines[i + 1 :]


def test_the_example_output_is_what_the_documented_command_prints(siglip_dir):
    """The block is the output of its command with the tiny model of tests/models.py (build_siglip,
    as the README says), on the CPU, run as a user's machine runs it: with the machine's real CPU
    flags (no ACTALIGN_CPU_FLAGS), so the command itself must pin its dtype; regenerate the block
    when the scores change on purpose."""
    words, expected = example()
    assert words[:2] == ["actalign", "classify"], words
    assert words[words.index("--dtype") + 1] == "float32", "the example's numbers need a pinned dtype"
    assert "`--dtype float32`" in prose("What you get")
    documented = "`build_siglip` in `tests/models.py` (passed as `--model DIR --device cpu`)"
    assert documented in prose("What you get")
    video = ROOT / words[2]
    if not video.exists():
        pytest.skip(f"the shared sample {video} is absent (see ../shared/data)")
    extra = ["--model", str(siglip_dir), "--device", "cpu", "--quiet"]
    # the environment as it is: the CPU's real flags (a bfloat16 CPU can be simulated by running
    # this file with ACTALIGN_CPU_FLAGS="amx_bf16 avx512_bf16")
    done = subprocess.run(
        [sys.executable, "-m", "actalign", *words[1:], *extra],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n").splitlines() == expected, (
        "README's example differs; its command prints:\n" + done.stdout
    )


@pytest.fixture
def scripts_file(tmp_path) -> Path:
    path = tmp_path / "scripts.json"
    path.write_text(json.dumps({"d": {"x": ["red ball", "blue net"], "y": ["blue net", "red ball", "goal"]}}))
    return path


def test_per_video_files_are_named_and_hold_what_the_docs_say(siglip_dir, scripts_file, tmp_path):
    text = doc("output.md")
    for claim in ["`DIR/<video>.npz`", "(`clip.png`, `clip.npz`, `clip.vtt`)"]:
        assert claim in text, claim
    assert "(`a/clip.mp4`, `b/clip.mp4`) are named by their path below the folder they share" in text
    assert "(`a__clip.mp4.png`, `b__clip.mp4.png`)" in text
    videos = tmp_path / "videos"
    for name in ["a/clip.mp4", "b/clip.mp4", "clip.mp4"]:
        (videos / name).parent.mkdir(parents=True, exist_ok=True)
        make_video(videos / name, n=12, fps=6)
    (videos / "clip.mp4").rename(videos / "other.mp4")
    plots, arrays, cues = tmp_path / "plots", tmp_path / "arrays", tmp_path / "cues"
    args = ["classify", str(videos / "a/clip.mp4"), str(videos / "b/clip.mp4"), str(videos / "other.mp4")]
    args += ["--domain", "d", "--candidates", "x", "y", "--scripts", str(scripts_file)]
    args += ["--model", str(siglip_dir), "--plot", str(plots), "--save-arrays", str(arrays)]
    assert main([*args, "--format", "vtt", "--output", str(cues), "--quiet"]) == 0
    stems = ["a__clip.mp4", "b__clip.mp4", "other"]
    assert sorted(p.name for p in plots.iterdir()) == [f"{s}.png" for s in stems]
    assert sorted(p.name for p in arrays.iterdir()) == [f"{s}.npz" for s in stems]
    assert sorted(p.name for p in cues.iterdir()) == [f"{s}.vtt" for s in stems]
    # a single video: its name without the extension
    single = tmp_path / "single"
    args1 = ["classify", str(videos / "a/clip.mp4"), *args[4:-4]]
    assert main([*args1, "--plot", str(single), "--save-arrays", str(single), "--quiet"]) == 0
    assert sorted(p.name for p in single.iterdir()) == ["clip.npz", "clip.png"]

    # the arrays, as the README lists them
    for claim in [
        "`timestamps` (T,)",
        "`actions` (best first)",
        "`affinity_i` (K_i, T)",
        "`path_i` (L_i, 2)",
    ]:
        assert claim in text, claim
    assert "and `score_i`" in text
    with np.load(single / "clip.npz") as saved:
        t = saved["timestamps"].shape[0]
        assert saved["timestamps"].shape == (t,)
        actions = list(saved["actions"])
        assert sorted(actions) == ["x", "y"]
        steps = {"x": 2, "y": 3}
        scores = [float(saved[f"score_{i}"]) for i in range(2)]
        assert scores == sorted(scores, reverse=True)  # best first
        for i, action in enumerate(actions):
            assert saved[f"affinity_{i}"].shape == (steps[action], t)
            assert saved[f"path_{i}"].ndim == 2 and saved[f"path_{i}"].shape[1] == 2
        assert set(saved.files) == {"timestamps", "actions"} | {
            f"{k}_{i}" for k in ("affinity", "path", "score") for i in range(2)
        }


def test_locate_json_has_the_keys_the_docs_name(siglip_dir, scripts_file, tmp_path, capsys):
    text = doc("untrimmed.md")
    claim = re.search(r"`--format json` \((.*?)\), or WebVTT", text)
    assert claim, "docs/untrimmed.md: locate's JSON is not described as `--format json` (...), or WebVTT"
    named = set()
    for token in re.findall(r"`([^`]+)`", claim.group(1)):
        named |= set(re.findall(r"[a-z_]+", token))
    video = make_video(tmp_path / "long.mp4", n=48, fps=8)
    args = ["locate", str(video), "--domain", "d", "--candidates", "x", "y", "--scripts", str(scripts_file)]
    capsys.readouterr()
    assert main([*args, "--model", str(siglip_dir), "--fps", "4", "--format", "json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["detections"], "the tiny model found no occurrence to check the keys of"
    found = {d["action"] for d in data["detections"]}
    assert found <= {"x", "y"}
    detection = data["detections"][0]
    keys = set(data) | set(detection) | set(detection["span"]) | set(detection["segments"][0])
    run_settings = {"candidates", "start", "end", "window_seconds", "nms", "min_score", "top"}
    assert run_settings <= set(data["settings"])
    assert named == keys | run_settings, (
        f"docs/untrimmed.md names {sorted(named - keys - run_settings)} that locate does not write, "
        f"and not {sorted(keys | run_settings - named)}"
    )


def test_the_readme_is_short_keeps_its_two_commands_and_links_the_rest():
    text = README.read_text(encoding="utf-8")
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [line for line in first.splitlines() if line and not line.startswith("#")]
    assert commands[0].startswith("bash scripts/setup.sh && .venv/bin/actalign classify ")
    assert commands[1] == "bash scripts/setup.sh --dev && .venv/bin/python -m pytest -q"
    assert 'pip install ".[' in text  # the pip path beside setup.sh
    for page in [
        "output.md",
        "untrimmed.md",
        "batch.md",
        "evaluation.md",
        "table2.md",
        "scripts.md",
        "app.md",
    ]:
        assert f"](docs/{page})" in text and (ROOT / "docs" / page).is_file(), page
    for page in ["models.md", "faithfulness.md", "troubleshooting.md", "alignment.md", "benchmarks.md"]:
        assert f"](docs/{page})" in text and (ROOT / "docs" / page).is_file(), page
    assert len(text.splitlines()) < 260, "the README grew long again: move the details to docs/"
    # links between the pages of docs/ lead somewhere
    for page in (ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links {target}, which is not there"
