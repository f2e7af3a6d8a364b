"""The pipeline: planted structure through real video files, then the CLI end to end."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from actalign import ActAlign, align
from actalign.cli import main
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from colour_encoder import NAMES, PALETTE, ColourEncoder
from media import SAMPLES, make_video

SPAN = 1.5  # seconds per colour
FPS = 10


def colour_video(path, order, fps=FPS, span=SPAN):
    colours = [PALETTE[c] for c in order for _ in range(round(span * fps))]
    return make_video(path, n=len(colours), fps=fps, colors=colours, size=(32, 32))


def permutation_scripts(order, n_candidates, rng):
    """Candidate 'move k' scripts: distinct permutations of the same colours, one of them right."""
    perms = [list(p) for p in itertools.permutations(order) if list(p) != list(order)]
    picks = [perms[i] for i in rng.choice(len(perms), n_candidates - 1, replace=False)]
    answer = int(rng.integers(n_candidates))
    picks.insert(answer, list(order))
    scripts = {f"move {k}": [f"the {c} phase" for c in p] for k, p in enumerate(picks)}
    return scripts, answer


# --------------------------------------------------------------------------- planted structure


def test_order_separates_permutations_that_mean_pool_cannot(tmp_path):
    rng = np.random.default_rng(0)
    enc = ColourEncoder()
    right = {"actalign": 0, "mean-pool": 0}
    trials = 10
    for trial in range(trials):
        order = list(rng.choice(NAMES, 4, replace=False))
        video = colour_video(tmp_path / f"v{trial}.mp4", order)
        scripts, answer = permutation_scripts(order, 5, rng)
        candidates = list(scripts)
        for method in right:
            model = ActAlign(enc, {"test": scripts}, method=method, cache=False)
            pred = model.classify(video, candidates, "test")
            right[method] += pred.top.action == candidates[answer]
        # even a bag of the steps cannot tell permutations apart: only their order can
        frames = ActAlign(enc, {"test": scripts}, cache=False).pipeline().embed(video).frames
        bags = [enc.encode_texts([f"{s} in test" for s in scripts[c]]).mean(axis=0) for c in candidates]
        bag_scores = align.affinity(frames.mean(axis=0, keepdims=True), np.stack(bags), enc.scale, enc.bias)
        assert np.ptp(bag_scores) < 1e-6
    assert right["actalign"] == trials
    assert right["mean-pool"] <= 0.3 * trials  # 5 candidates: chance is 0.2


@pytest.mark.parametrize("fps", [None, 4.0])
def test_segments_match_the_planted_spans(tmp_path, fps):
    order = ["red", "green", "blue", "yellow"]
    video = colour_video(tmp_path / "v.mp4", order)
    scripts = {"right": [f"the {c} phase" for c in order], "wrong": [f"the {c} phase" for c in order[::-1]]}
    model = ActAlign(ColourEncoder(), {"test": scripts}, fps=fps, cache=False)
    pred = model.classify(video, ["wrong", "right"], "test")
    assert pred.top.action == "right" and pred.rank_of("wrong") == 2
    frame = 1.0 / (fps or FPS)
    for k, seg in enumerate(pred.top.segments):
        assert seg.step == scripts["right"][k]
        assert abs(seg.start - k * SPAN) <= frame + 1e-6
        assert abs(seg.end - (k + 1) * SPAN) <= frame + 1e-6
    assert pred.top.score > 0.9 > pred.candidates[1].score


def test_embeddings_are_reused_from_the_cache(tmp_path):
    video = colour_video(tmp_path / "v.mp4", ["red", "blue"])
    enc = ColourEncoder()
    scripts = {"test": {"a": ["red x", "blue x"], "b": ["blue x", "red x"]}}
    model = ActAlign(enc, scripts, cache=EmbeddingCache(tmp_path / "c"))
    first = model.classify(video, ["a", "b"], "test")
    calls = enc.image_calls
    second = model.classify(video, ["b", "a"], "test")
    assert enc.image_calls == calls
    assert first.top.action == second.top.action == "a"
    assert second.to_dict()["predictions"][0]["action"] == "a"


def test_ties_keep_the_given_order(tmp_path):
    video = colour_video(tmp_path / "v.mp4", ["red", "blue"])
    scripts = {"test": {"a": ["red x", "blue x"], "b": ["red x", "blue x"]}}
    for candidates in (["a", "b"], ["b", "a"]):
        pred = ActAlign(ColourEncoder(), scripts, cache=False).classify(video, candidates, "test")
        assert [c.action for c in pred.candidates] == candidates


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "bogus"}, "Unknown method"),
        ({"template": "{oops}"}, "template"),
        ({"template": "no step here"}, "must contain"),
        ({"smooth": -1}, "0 to 3600"),
    ],
)
def test_bad_pipeline_options(kwargs, match):
    with pytest.raises(ActAlignError, match=match):
        ActAlign(ColourEncoder(), {}, **kwargs)


def test_bad_candidates(tmp_path):
    video = colour_video(tmp_path / "v.mp4", ["red"])
    model = ActAlign(ColourEncoder(), {"test": {"a": ["red"]}}, cache=False)
    with pytest.raises(ActAlignError, match="No candidate"):
        model.classify(video, [], "test")
    with pytest.raises(ActAlignError, match="given twice"):
        model.classify(video, ["a", " A "], "test")
    with pytest.raises(ActAlignError, match="No scripts for 'b'"):
        model.classify(video, ["a", "b"], "test")


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def scripts_file(tmp_path):
    path = tmp_path / "scripts.json"
    path.write_text(
        json.dumps(
            {
                "basketball": {
                    "Tip-in": ["player jumps near the net", "hand taps the ball in"],
                    "Putback dunk": ["ball bounces off", "player jumps", "dunk with both hands"],
                    "Windmill dunk": ["player runs", "spin the ball", "dunk"],
                }
            }
        )
    )
    return path


@pytest.fixture
def clip(tmp_path):
    return make_video(tmp_path / "clip.mp4", n=24, fps=8, size=(48, 40))


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


CANDS = ["--candidates", "Tip-in", "Putback dunk", "Windmill dunk"]


def test_cli_classify_json_csv_table(clip, scripts_file, siglip_dir, tmp_path, capsys):
    base = [
        "classify",
        clip,
        "--domain",
        "basketball",
        *CANDS,
        "--scripts",
        scripts_file,
        "--model",
        siglip_dir,
    ]
    code, out, err = run_cli([*base, "--format", "json"], capsys)
    assert code == 0, err
    (video,) = json.loads(out)["videos"]
    assert video["frames"] == 24 and video["method"] == "actalign"
    preds = video["predictions"]
    assert [p["rank"] for p in preds] == [1, 2, 3]
    assert sorted(p["action"] for p in preds) == sorted(CANDS[1:])
    assert preds[0]["score"] >= preds[1]["score"] >= preds[2]["score"]
    for p in preds:
        segs = p["segments"]
        assert segs[0]["start"] == 0.0 and all(s["start"] < s["end"] for s in segs)
        for a, b in itertools.pairwise(segs):  # in order, no gap; neighbours may share a frame
            assert a["start"] <= b["start"] <= a["end"] <= b["end"]

    code, out, _ = run_cli([*base, "--format", "csv", "--top-k", "2"], capsys)
    assert (
        code == 0
        and out.splitlines()[0] == "video,domain,method,alignment,rank,action,score,span_start,span_end"
    )
    assert len(out.splitlines()) == 3

    code, out, _ = run_cli([*base, "--fps", "4", "--plot", tmp_path / "plots"], capsys)
    assert code == 0 and "steps of" in out and "s  " in out
    assert (tmp_path / "plots" / "clip.png").stat().st_size > 5000

    out_file = tmp_path / "res.json"
    code, _, _ = run_cli([*base, "--method", "mean-pool", "--format", "json", "-o", out_file], capsys)
    assert code == 0 and json.loads(out_file.read_text())["videos"][0]["method"] == "mean-pool"


def test_cli_candidates_file_and_several_videos(clip, scripts_file, siglip_dir, tmp_path, capsys):
    cands = tmp_path / "cands.txt"
    cands.write_text("# candidates\nTip-in\nPutback dunk\n")
    other = make_video(tmp_path / "other.mp4", n=10, fps=5)
    code, out, err = run_cli(
        [
            "classify",
            clip,
            other,
            "--domain",
            "basketball",
            "--candidates-file",
            cands,
            "--scripts",
            scripts_file,
            "--model",
            siglip_dir,
            "--format",
            "json",
        ],
        capsys,
    )
    assert code == 0, err
    assert [v["video"] for v in json.loads(out)["videos"]] == [str(clip), str(other)]


def test_cli_plot(clip, scripts_file, siglip_dir, tmp_path, capsys):
    out = tmp_path / "fig.svg"
    code, stdout, err = run_cli(
        [
            "plot",
            clip,
            "--domain",
            "basketball",
            *CANDS,
            "--scripts",
            scripts_file,
            "--model",
            siglip_dir,
            "--out",
            out,
            "--answer",
            "Tip-in",
        ],
        capsys,
    )
    assert code == 0, err
    assert out.read_text().startswith("<?xml") and "Tip-in" in out.read_text()


def test_plot_marks_predicted_and_correct(tmp_path):
    from actalign.viz import plot_prediction

    order = ["red", "green", "blue"]
    video = colour_video(tmp_path / "v.mp4", order)
    scripts = {"right": [f"the {c} phase" for c in order], "wrong": [f"the {c} phase" for c in order[::-1]]}
    pred = ActAlign(ColourEncoder(), {"test": scripts}, cache=False).classify(
        video, ["wrong", "right"], "test"
    )
    plot_prediction(pred, tmp_path / "p.svg", answer="right")
    svg = (tmp_path / "p.svg").read_text()
    assert "predicted" in svg and "correct" in svg
    plot_prediction(pred, tmp_path / "p.png", answer="right")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ActAlignError, match=r"\.png, \.svg or \.pdf"):
        plot_prediction(pred, tmp_path / "p.jpg")
    # the correct candidate is drawn even where it ranks below --top-k, with its rank in its title
    top = pred.top.action
    fig = plot_prediction(pred, answer="wrong" if top == "right" else "right", top_k=1, thumbnails=0)
    titles = [ax.get_title(loc="left") for ax in fig.axes if ax.get_title(loc="left")]
    assert len(titles) == 2 and titles[0].startswith("#1") and titles[1].startswith("#2")
    assert (
        len(
            [
                t
                for t in (
                    ax.get_title(loc="left") for ax in plot_prediction(pred, top_k=1, thumbnails=0).axes
                )
                if t
            ]
        )
        == 1
    )


def test_cli_bad_input_is_one_sentence(clip, scripts_file, siglip_dir, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    base = ["--domain", "basketball", "--scripts", scripts_file, "--model", siglip_dir]
    cases = [
        (["classify", tmp_path / "missing.mp4", *base, *CANDS], "No such video file"),
        (["classify", corrupt, *base, *CANDS], "not a video"),
        (["classify", clip, *base], "No candidate actions"),
        (["classify", clip, *base, "--candidates", "Tip-in", "tip-in"], "given twice"),
        (["classify", clip, *base, "--candidates", "Tip-in", "Alley-oop"], "No scripts for 'Alley-oop'"),
        (
            [
                "classify",
                clip,
                "--domain",
                "basketball",
                *CANDS,
                "--scripts",
                scripts_file,
                "--model",
                "nobody/no-such-model",
            ],
            "Could not load model",
        ),
        (["classify", clip, *base, *CANDS, "-o", tmp_path / "nope" / "out.json"], "does not exist"),
        (["classify", clip, *base, *CANDS, "--scripts", tmp_path / "absent.json"], "No such scripts file"),
        (["plot", clip, *base, *CANDS, "--out", tmp_path / "fig.gif"], ".png, .svg or .pdf"),
        (["classify", clip, *base, *CANDS, "--method", "mean-pool", "--plot", tmp_path / "p"], "has none"),
    ]
    for args, message in cases:
        code, out, err = run_cli(args, capsys)
        assert code == 2, (args, err)
        assert message in err and "Traceback" not in err and err.startswith("error: ")
        assert len(err.strip().splitlines()) == 1


def _unwritable_folder(tmp_path):
    """A folder this process may not write in: a 0o500 folder, or /proc/self when running as root."""
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if not os.access(locked, os.W_OK):
        return locked
    if os.path.isdir("/proc/self") and not os.access("/proc/self", os.W_OK):
        return Path("/proc/self")
    pytest.skip("no folder here refuses writes to this process")


def test_cli_unwritable_output(clip, scripts_file, siglip_dir, tmp_path, capsys):
    folder = _unwritable_folder(tmp_path)
    code, _, err = run_cli(
        [
            "classify",
            clip,
            "--domain",
            "basketball",
            *CANDS,
            "--scripts",
            scripts_file,
            "--model",
            siglip_dir,
            "-o",
            folder / "out.json",
        ],
        capsys,
    )
    assert code == 2 and "permission denied" in err
    assert not (folder / "out.json").exists()


def test_cli_output_to_a_folder_is_refused(clip, scripts_file, siglip_dir, tmp_path, capsys):
    code, _, err = run_cli(
        [
            "classify",
            clip,
            "--domain",
            "basketball",
            *CANDS,
            "--scripts",
            scripts_file,
            "--model",
            siglip_dir,
            "-o",
            tmp_path,
        ],
        capsys,
    )
    assert code == 2 and "is a folder" in err


def test_entry_point_exit_code_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "actalign",
            "classify",
            str(tmp_path / "none.mp4"),
            "--domain",
            "x",
            "--candidates",
            "a",
            "b",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: No such video file: {tmp_path / 'none.mp4'}. Check the path."


def test_cli_scripts_commands(tmp_path, capsys):
    store = tmp_path / "s.sqlite"
    src = tmp_path / "in.json"
    src.write_text(
        json.dumps({"tennis": {"Half volley": ["racket low near the ground", "ball hit after bounce"]}})
    )
    assert run_cli(["scripts", "import", src, "--store", store], capsys)[0] == 0
    code, out, _ = run_cli(["scripts", "show", "--store", store], capsys)
    assert code == 0 and "[tennis] Half volley  (hand-written)" in out and "1. racket low" in out
    code, out, _ = run_cli(["scripts", "stats", "--store", store], capsys)
    assert code == 0 and "tennis" in out and "2.00" in out
    assert run_cli(["scripts", "export", tmp_path / "out.json", "--store", store], capsys)[0] == 0
    assert json.loads((tmp_path / "out.json").read_text()) == json.loads(src.read_text())
    code, _, err = run_cli(["scripts", "generate", "--store", store], capsys)
    assert code == 2 and "Nothing to generate" in err


def test_cli_scripts_generate_through_an_llm(tmp_path, capsys, monkeypatch):
    from llm_server import FakeLLM

    steps = ["racket held low near the court surface", "ball struck right after it bounces"]
    with FakeLLM() as llm:
        llm.answer(("answer", json.dumps({"actions": {"Half volley": steps}})))
        code, out, err = run_cli(
            [
                "scripts",
                "generate",
                "--domain",
                "tennis",
                "--candidates",
                "Half volley",
                "--store",
                tmp_path / "s.sqlite",
                "--llm-base-url",
                llm.url,
                "--llm-model",
                "m",
            ],
            capsys,
        )
    assert code == 0, err
    assert "1. racket held low" in out


@pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/data is not beside this checkout")
def test_cli_on_a_shared_clip(siglip_dir, tmp_path, capsys):
    row = json.loads((SAMPLES / "manifest.jsonl").read_text().splitlines()[0])
    scripts = {row["domain"]: {c: [f"{c} begins", f"{c} ends"] for c in row["candidates"]}}
    (tmp_path / "s.json").write_text(json.dumps(scripts))
    code, out, err = run_cli(
        [
            "classify",
            SAMPLES / row["video"],
            "--domain",
            row["domain"],
            "--candidates",
            *row["candidates"],
            "--scripts",
            tmp_path / "s.json",
            "--model",
            siglip_dir,
            "--fps",
            "4",
            "--format",
            "json",
        ],
        capsys,
    )
    assert code == 0, err
    video = json.loads(out)["videos"][0]
    assert len(video["predictions"]) == len(row["candidates"])
    assert video["frames"] >= 4 * 4  # the clip is about 4.5 s long


def test_segments_in_seconds_follow_the_path():
    from actalign.score import segments

    ts = np.array([0.0, 0.5, 1.0, 1.5, 2.0])
    path = np.array([[0, 0], [0, 1], [1, 2], [2, 2], [2, 3], [2, 4]])
    got = segments(path, ["a", "b", "c"], ts)
    assert [(s.step, s.start, s.end) for s in got] == [("a", 0.0, 1.0), ("b", 1.0, 1.5), ("c", 1.0, 2.5)]


def test_classify_many_keeps_going_when_asked(tmp_path):
    good = colour_video(tmp_path / "a.mp4", ["red", "blue"])
    scripts = {"test": {"x": ["red x", "blue x"], "y": ["blue x", "red x"]}}
    model = ActAlign(ColourEncoder(), scripts, cache=False)
    preds = model.classify_many([good, tmp_path / "missing.mp4", good], ["x", "y"], "test", on_error="keep")
    assert [p.top.action for p in (preds[0], preds[2])] == ["x", "x"]
    assert isinstance(preds[1], ActAlignError) and "No such video file" in str(preds[1])
    with pytest.raises(ActAlignError, match="No such video file"):
        model.classify_many([tmp_path / "missing.mp4"], ["x", "y"], "test")


def test_cli_start_end_window(clip, scripts_file, siglip_dir, capsys):
    code, out, err = run_cli(
        [
            "classify",
            clip,
            "--domain",
            "basketball",
            *CANDS,
            "--scripts",
            scripts_file,
            "--model",
            siglip_dir,
            "--start",
            "1",
            "--end",
            "2",
            "--format",
            "json",
        ],
        capsys,
    )
    assert code == 0, err
    video = json.loads(out)["videos"][0]
    assert video["frames"] == 8  # 8 fps clip, one second
    assert video["predictions"][0]["segments"][0]["start"] == pytest.approx(1.0)
