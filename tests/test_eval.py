"""Evaluation: metrics by hand, a planted ladder, resume after a kill, ActionAtlas from a local fixture."""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import pytest

from actalign.cli import main
from actalign.errors import ActAlignError
from actalign.eval import datasets
from actalign.eval.datasets import prepare_actionatlas
from actalign.eval.evaluate import Rung, evaluate, ladder
from actalign.eval.metrics import random_topk, rank_of_answer, topk
from actalign.runner.plan import Clip, Plan, clean_candidate, load_manifest
from actalign.scripts import ScriptSource
from colour_encoder import CODEWORDS, DOMAIN_OFFSET, NAMES, PALETTE, ColourEncoder
from media import SAMPLES, make_video

# --------------------------------------------------------------------------- metrics


def test_rank_with_ties_follows_the_given_order():
    assert rank_of_answer([0.5, 0.5, 0.2], 0) == 1
    assert rank_of_answer([0.5, 0.5, 0.2], 1) == 2
    assert rank_of_answer([0.1, 0.9, 0.4], 2) == 2
    assert rank_of_answer([0.3, 0.3, 0.3], 2) == 3


def test_topk_by_hand():
    ranks = [1, 2, 3, 4, 1]
    assert topk(ranks, 1) == pytest.approx(2 / 5)
    assert topk(ranks, 2) == pytest.approx(3 / 5)
    assert topk(ranks, 3) == pytest.approx(4 / 5)
    # two candidates: top-2 and top-3 are always right
    two = [rank_of_answer([0.2, 0.8], 0), rank_of_answer([0.2, 0.8], 1)]
    assert (topk(two, 1), topk(two, 2), topk(two, 3)) == (0.5, 1.0, 1.0)


def test_random_baseline_is_the_exact_expectation():
    assert random_topk([2, 5], 1) == pytest.approx((1 / 2 + 1 / 5) / 2)
    assert random_topk([2, 5], 3) == pytest.approx((1 + 3 / 5) / 2)
    rng = np.random.default_rng(0)
    sims = [rank_of_answer(rng.random(5), 0) for _ in range(20000)]
    assert topk(sims, 2) == pytest.approx(random_topk([5], 2), abs=0.01)


# --------------------------------------------------------------------------- manifests


def test_clean_candidate():
    assert clean_candidate("1. Tip-in ") == "Tip-in"
    assert clean_candidate("12) Putback  dunk") == "Putback dunk"
    assert clean_candidate("3 : Alley-oop") == "Alley-oop"
    assert clean_candidate("360 dunk") == "360 dunk"


@pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/data is not beside this checkout")
def test_shared_manifest_loads_as_is():
    plan = load_manifest(SAMPLES / "manifest.jsonl", require_answer=True)
    clips = plan.clips
    assert len(clips) == 6 and not plan.failures and all(c.video.exists() for c in clips)
    basketball = next(c for c in clips if c.domain == "basketball")
    assert basketball.candidates[basketball.answer] == "Putback dunk"


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"video": "a.mp4"}', "lacks the field 'domain'"),
        (
            '{"video": "a.mp4", "domain": "d", "candidates": [], "answer": 0}',
            "no candidate actions given in the row; list at least one",
        ),
        ('{"video": "a.mp4", "domain": "d", "candidates": ["x", "y"], "answer": 2}', "0-based index"),
        ("not json", "not valid JSON"),
        ('{"video": "a.mp4", "domain": "d", "candidates": ["x", "y"], "answer": 0}\n' * 2, "already appears"),
    ],
)
def test_bad_manifest_rows_become_failures(tmp_path, content, match):
    path = tmp_path / "m.jsonl"
    good = '{"video": "b.mp4", "domain": "d", "candidates": ["x", "y"], "answer": 0}\n'
    path.write_text(good + content)
    plan = load_manifest(path, require_answer=True)
    assert len(plan.failures) == 1 and match in plan.failures[0]["reason"]
    assert plan.failures[0]["line"] == 1 + len(content.strip().splitlines())
    assert [c.id for c in plan.clips] == ["b"] + (["a"] if match == "already appears" else [])


def test_a_manifest_without_a_usable_row_is_refused_with_the_first_reason(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"video": "a.mp4"}\nnot json\n')
    with pytest.raises(ActAlignError, match=r"no usable row \(2 rejected; the first: line 1 lacks"):
        load_manifest(path)


def test_an_empty_manifest_is_refused(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text("\n")
    with pytest.raises(ActAlignError, match="no rows"):
        load_manifest(path)


# --------------------------------------------------------------------------- planted ladder


def planted_dataset(root, n=24, noise=0.6, seed=0, fps=8, span=1.0):
    """Clips of four colour spans (each frame shows another of the clip's colours with prob. `noise`).
    Scripts use code words that name a colour only together with their domain, so bare steps carry
    no information, context does, and smoothing averages the per-frame noise away."""
    rng = np.random.default_rng(seed)
    clips, scripts = [], {}
    for i in range(n):
        domain = list(DOMAIN_OFFSET)[i % 2]
        codes = list(rng.choice(len(CODEWORDS), 4, replace=False))
        colours = [NAMES[(c + DOMAIN_OFFSET[domain]) % len(NAMES)] for c in codes]
        frames = [PALETTE[c] for c in colours for _ in range(round(span * fps))]
        for j in range(len(frames)):
            if rng.random() < noise:
                frames[j] = PALETTE[colours[rng.integers(4)]]
        video = make_video(root / f"c{i}.mp4", n=len(frames), fps=fps, colors=frames, size=(16, 16))
        perms = [list(p) for p in itertools.permutations(codes) if list(p) != codes]
        picks = [perms[k] for k in rng.choice(len(perms), 4, replace=False)]
        answer = int(rng.integers(5))
        picks.insert(answer, codes)
        names = [f"move {i}-{k}" for k in range(5)]
        for name, p in zip(names, picks):
            scripts.setdefault(domain, {})[name] = [CODEWORDS[c] for c in p]
        clips.append(Clip(f"c{i}", video, domain, tuple(names), answer))
    return clips, scripts


def source(scripts) -> ScriptSource:
    s = ScriptSource()
    s.hand = [scripts]
    return s


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return planted_dataset(tmp_path_factory.mktemp("planted"))


def plan_of(clips) -> Plan:
    return Plan(list(clips), [], "planted")


def test_ladder_ordering_on_planted_data(planted, tmp_path):
    clips, scripts = planted
    summary = evaluate(
        plan_of(clips),
        ColourEncoder(),
        {"context-rich": source(scripts)},
        str(tmp_path / "run"),
        ladder(),
    )
    top1 = {name: m["top1"] for name, m in summary["methods"].items()}
    assert summary["clips"] == 24
    # names and bare code words carry nothing: both fall back to the given order (ties)
    assert top1["mean-pool"] == top1["+ DTW (bare steps)"] <= 0.4
    assert top1["+ context"] >= 0.7
    assert top1["+ smoothing (ActAlign)"] > top1["+ context"]
    assert top1["random (expected)"] == pytest.approx(0.2)
    md = (tmp_path / "run" / "summary.md").read_text()
    assert "| + smoothing (ActAlign) |" in md
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["run"]["model_identity"] == "test:colour-v1" and "numpy" in config["versions"]


class CountingEncoder(ColourEncoder):
    def __init__(self) -> None:
        super().__init__()
        self.frames = 0

    def encode_images(self, frames):
        self.frames += len(frames)
        return super().encode_images(frames)


def test_resume_after_a_kill(planted, tmp_path):
    clips, scripts = planted
    clips = clips[:8]
    sources = {"context-rich": source(scripts)}
    whole = evaluate(plan_of(clips), ColourEncoder(), sources, str(tmp_path / "whole"), ladder())

    class Killed(BaseException):
        pass

    seen = []

    def kill_after_three(row):
        seen.append(row["id"])
        if len(seen) == 3:
            raise Killed

    with pytest.raises(Killed):
        evaluate(
            plan_of(clips), ColourEncoder(), sources, str(tmp_path / "run"), ladder(), on_row=kill_after_three
        )
    predictions = tmp_path / "run" / "predictions.jsonl"
    assert len(predictions.read_text().splitlines()) == 3
    with open(predictions, "a") as f:
        f.write('{"id": "c3", "video": "torn li')  # a crash in the middle of a write

    encoder, written = CountingEncoder(), []
    resumed = evaluate(
        plan_of(clips),
        encoder,
        sources,
        str(tmp_path / "run"),
        ladder(),
        on_row=lambda r: written.append(r["id"]),
    )
    assert sorted(written) == sorted(
        c.id for c in clips if c.id not in seen
    )  # finished clips were not redone
    assert encoder.frames == sum(32 for c in clips if c.id not in seen)  # 4 spans x 8 frames each
    assert resumed["methods"] == whole["methods"]
    assert len(predictions.read_text().splitlines()) == 8


def test_a_run_folder_refuses_another_configuration(planted, tmp_path):
    clips, scripts = planted
    sources = {"context-rich": source(scripts)}
    evaluate(plan_of(clips[:2]), ColourEncoder(), sources, str(tmp_path / "run"), ladder())
    other = [Rung("mean-pool", kind="mean-pool")]
    with pytest.raises(ActAlignError, match="another configuration"):
        evaluate(plan_of(clips[:2]), ColourEncoder(), sources, str(tmp_path / "run"), other)
    with pytest.raises(ActAlignError, match=r"another configuration \(fps: null -> 4\.0\)"):
        evaluate(plan_of(clips[:2]), ColourEncoder(), sources, str(tmp_path / "run"), ladder(), fps=4.0)


def test_a_limited_run_is_extended_by_the_same_run_without_the_limit(planted, tmp_path):
    clips, scripts = planted
    sources = {"context-rich": source(scripts)}
    first = evaluate(plan_of(clips[:3]), ColourEncoder(), sources, str(tmp_path / "run"), ladder(), limit=1)
    rest = evaluate(plan_of(clips[:3]), ColourEncoder(), sources, str(tmp_path / "run"), ladder())
    assert (first["clips"], rest["clips"]) == (1, 3)


def test_unreadable_clips_are_reported_and_skipped(planted, tmp_path):
    clips, scripts = planted
    broken = Clip("broken", tmp_path / "missing.mp4", clips[0].domain, clips[0].candidates, 0)
    summary = evaluate(
        plan_of([broken, clips[0]]),
        ColourEncoder(),
        {"context-rich": source(scripts)},
        str(tmp_path / "run"),
        ladder(),
    )
    assert summary["clips"] == 1 and summary["clips_in_manifest"] == 2
    failed = json.loads((tmp_path / "run" / "failed.jsonl").read_text())
    assert failed["id"] == "broken" and "No such video file" in failed["reason"]


def test_strategies_compare_script_sets(planted, tmp_path):
    clips, scripts = planted
    scrambled = {d: {a: list(reversed(s)) for a, s in acts.items()} for d, acts in scripts.items()}
    rungs = [Rung("A", strategy="context-rich"), Rung("B", strategy="short-fixed")]
    summary = evaluate(
        plan_of(clips[:6]),
        ColourEncoder(),
        {"context-rich": source(scripts), "short-fixed": source(scrambled)},
        str(tmp_path / "run"),
        rungs,
    )
    assert summary["methods"]["A"]["top1"] > summary["methods"]["B"]["top1"]


# --------------------------------------------------------------------------- ActionAtlas


def atlas_rows():
    box = {"bounding_poly": {"vertices": [[0, 0], [32, 0], [32, 24], [0, 24]]}}
    return [
        {
            "id": "clip-1",
            "youtube_id": "yt-1",
            "domain": "basketball",
            "action": "Putback dunk",
            "question": "What move?",
            "answer": 2,
            "start_timestamp": 1.0,
            "end_timestamp": 3.0,
            "choices_str": "1. Tip-in\n2. Putback dunk\n3. Alley-oop Dunk",
            "frames_to_obfuscate": {"12": [box]},
        },
        {
            "id": "clip-2",
            "youtube_id": "gone",
            "domain": "tennis",
            "action": "Half volley",
            "question": "What shot?",
            "answer": 1,
            "start_timestamp": 0.0,
            "end_timestamp": 1.0,
            "choices_str": "1. Half volley\n2. Lob",
            "frames_to_obfuscate": None,
        },
    ]


def noisy_source(path):
    """Random texture in every frame, so that a blur is measurable."""
    import av

    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.options = {"crf": "10"}
        for i in range(50):
            img = np.random.default_rng(i).integers(0, 256, (48, 64, 3), dtype=np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


def test_prepare_actionatlas_from_a_local_fixture(tmp_path):
    source_video = noisy_source(tmp_path / "source.mp4")
    calls = []

    def fake_download(youtube_id, directory):
        calls.append(youtube_id)
        if youtube_id == "gone":
            raise ActAlignError("YouTube video gone is not available (private).")
        target = directory / f"{youtube_id}.mp4"
        target.write_bytes(source_video.read_bytes())
        return target

    manifest = prepare_actionatlas(tmp_path / "atlas", rows=atlas_rows(), download=fake_download)
    (clip,) = load_manifest(manifest, require_answer=True).clips
    assert clip.id == "clip-1" and clip.candidates == ("Tip-in", "Putback dunk", "Alley-oop Dunk")
    assert clip.answer == 1 and clip.domain == "basketball"
    unavailable = [json.loads(x) for x in (tmp_path / "atlas" / "unavailable.jsonl").read_text().splitlines()]
    assert [u["youtube_id"] for u in unavailable] == ["gone"] and "not available" in unavailable[0]["reason"]

    from actalign.video import read_frames

    got = read_frames(clip.video)
    np.testing.assert_allclose(got.timestamps, np.arange(20) / 10, atol=1e-3)  # 1.0 s to 3.0 s
    blurred = got.frames[2, :24, :32].astype(float)  # source frame 12 = clip frame 2
    untouched = got.frames[3, :24, :32].astype(float)
    assert blurred.std(axis=(0, 1)).mean() < 0.5 * untouched.std(axis=(0, 1)).mean()

    # resume: the finished clip is kept, only the missing video is tried again
    calls.clear()
    prepare_actionatlas(tmp_path / "atlas", rows=atlas_rows(), download=fake_download)
    assert calls == ["gone"]


def test_actionatlas_rows_need_the_hub_once():
    with pytest.raises(ActAlignError, match="needs the internet once"):
        datasets.load_actionatlas_rows()


# --------------------------------------------------------------------------- CLI


def write_scripts_for(clips, path):
    scripts = {}
    for c in clips:
        for a in c.candidates:
            scripts.setdefault(c.domain, {})[a] = [f"{a} starts", f"{a} happens", f"{a} ends"]
    path.write_text(json.dumps(scripts))
    return path


@pytest.mark.skipif(not SAMPLES.exists(), reason="../shared/data is not beside this checkout")
def test_cli_eval_on_shared_clips(siglip_dir, tmp_path, capsys):
    """Plumbing only: with random weights the numbers mean nothing."""
    manifest = SAMPLES / "manifest.jsonl"
    scripts = write_scripts_for(load_manifest(manifest).clips, tmp_path / "s.json")
    args = [
        "eval",
        manifest,
        "--model",
        siglip_dir,
        "--scripts",
        scripts,
        "--out",
        tmp_path / "run",
        "--fps",
        "2",
        "--ladder",
        "--limit",
        "3",
    ]
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    assert "Evaluated 3 of 3 clips" in out and "| + smoothing (ActAlign) |" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary["methods"]) == {"random (expected)", *[r.name for r in ladder()]}


def test_cli_eval_missing_scripts_fails_fast(tmp_path, capsys):
    video = make_video(tmp_path / "v.mp4", n=5)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"video": "v.mp4", "domain": "d", "candidates": ["x", "y"], "answer": 0}) + "\n"
    )
    code = main(
        ["eval", str(manifest), "--out", str(tmp_path / "run"), "--store", str(tmp_path / "s.sqlite")]
    )
    assert code == 2 and "No scripts for 'x', 'y'" in capsys.readouterr().err
    assert video.exists()


# --------------------------------------------------------------------------- untrimmed variants


def test_untrimmed_variants_measure_local_against_global(planted, tmp_path):
    from actalign.eval.untrimmed import make_untrimmed
    from actalign.runner.plan import write_manifest
    from actalign.video import read_frames

    clips, scripts = planted
    clips = clips[:12]
    write_manifest(tmp_path / "m.jsonl", clips)
    manifest, failures = make_untrimmed(load_manifest(tmp_path / "m.jsonl"), tmp_path / "u", pad=6.0, seed=1)
    assert failures == []
    plan = load_manifest(manifest, require_answer=True)
    assert len(plan.clips) == 12 and not plan.failures
    first = plan.clips[0]
    assert first.span == pytest.approx((6.0, 10.0))  # 6 s of padding, the 4 s clip, 6 s of padding
    padded, original = read_frames(first.video), read_frames(clips[0].video)
    inside = (padded.timestamps >= 6.0 - 1e-6) & (padded.timestamps < 10.0 - 1e-6)
    assert len(padded.timestamps) == 16 * 8 and inside.sum() == len(original.timestamps)
    np.testing.assert_allclose(
        padded.frames[inside].astype(float).mean(axis=(1, 2)),
        original.frames.astype(float).mean(axis=(1, 2)),
        atol=6,
    )
    summary = evaluate(
        plan, ColourEncoder(), {"context-rich": source(scripts)}, str(tmp_path / "run"), ladder()
    )
    m = summary["methods"]
    # global alignment always claims the whole padded clip (IoU 4/16); local finds the action
    assert m["+ smoothing (ActAlign)"]["span_iou"] == pytest.approx(0.25, abs=0.01)
    assert m["+ local alignment"]["span_iou"] > 0.5
    assert m["+ local alignment"]["top1"] > m["+ smoothing (ActAlign)"]["top1"]
    assert "span IoU" in (tmp_path / "run" / "summary.md").read_text()
    # resumable: a second run keeps the written clips
    stamp = first.video.stat().st_mtime_ns
    make_untrimmed(load_manifest(tmp_path / "m.jsonl"), tmp_path / "u", pad=6.0, seed=1)
    assert first.video.stat().st_mtime_ns == stamp
    # another padding would leave the old clips under new spans: refused, nothing touched
    with pytest.raises(ActAlignError, match=r"padded with `pad=6\.0`"):
        make_untrimmed(load_manifest(tmp_path / "m.jsonl"), tmp_path / "u", pad=3.0, seed=1)
    assert load_manifest(manifest).clips[0].span == pytest.approx((6.0, 10.0))


def test_untrimmed_lists_clips_it_cannot_use_and_pads_the_others(planted, tmp_path, capsys):
    from actalign.runner.plan import write_manifest

    clips, _ = planted
    write_manifest(tmp_path / "m.jsonl", clips[:3])
    with (tmp_path / "m.jsonl").open("a") as f:
        f.write(
            json.dumps({"id": "gone", "video": "nothere.mp4", "domain": "d", "candidates": ["a", "b"]}) + "\n"
        )
        f.write(
            json.dumps(
                {
                    "id": "late",
                    "video": os.path.relpath(clips[0].video, tmp_path),
                    "domain": "d",
                    "candidates": ["a", "b"],
                    "start": 100,
                }
            )
            + "\n"
        )
        f.write("not json\n")
    code = main(
        ["untrimmed", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "u"), "--pad", "1", "--quiet"]
    )
    out, err = capsys.readouterr()
    assert code == 1 and "3 padded clips" in out
    assert "2 clips failed and 1 manifest row rejected" in err and "Traceback" not in err
    failed = {
        f.get("id", f["line"]): f["reason"]
        for f in map(json.loads, (tmp_path / "u" / "failed.jsonl").read_text().splitlines())
    }
    assert (
        "No such video file" in failed["gone"]
        and "past the end" in failed["late"]
        and "not valid JSON" in failed[6]
    )
    plan = load_manifest(tmp_path / "u" / "manifest.jsonl")
    assert [c.id for c in plan.clips] == [c.id for c in clips[:3]] and all(
        c.video.exists() for c in plan.clips
    )


def test_rows_carry_the_papers_actalign_whatever_else_runs_beside_it():
    from actalign.eval.evaluate import ladder
    from actalign.runner.score import primary_method
    from actalign.score import Method

    assert primary_method(ladder()).name == "+ smoothing (ActAlign)"  # not the local rung after it
    pool = Method("mean-pool", kind="mean-pool")
    beside = [pool, Method("ActAlign"), Method("ActAlign (local)", alignment="subsequence")]
    assert primary_method(beside).name == "ActAlign"
    strategies = [
        pool,
        Method("ActAlign (context-rich)"),
        Method("ActAlign (short-fixed)", strategy="short-fixed"),
    ]
    assert primary_method(strategies).name == "ActAlign (context-rich)"
    only_local = [pool, Method("ActAlign", alignment="subsequence")]
    assert primary_method(only_local).name == "ActAlign"
    assert primary_method([pool]).name == "mean-pool"


def test_eval_actionatlas_says_how_many_clips_and_why_not_all(tmp_path, siglip_dir, capsys):
    """The summary says how many of the benchmark's clips were prepared and evaluated, why the rest
    were not (unavailable.jsonl), and that the paper's 898 is the same kind of count."""
    from actalign.cli import main
    from actalign.eval.datasets import coverage

    source_video = make_video(tmp_path / "source.mp4", n=40, fps=10)

    def fake_download(youtube_id, directory):
        if youtube_id == "gone":
            raise ActAlignError("YouTube video gone is not available (private).")
        target = directory / f"{youtube_id}.mp4"
        target.write_bytes(source_video.read_bytes())
        return target

    data = tmp_path / "atlas"
    manifest = prepare_actionatlas(data, rows=atlas_rows(), download=fake_download)
    c = coverage(manifest)
    assert (c["rows"], c["prepared"], c["unavailable"], c["paper_evaluated"]) == (2, 1, 1, 898)
    assert coverage(tmp_path / "source.mp4") is None  # not a prepared benchmark
    scripts = write_scripts_for(load_manifest(manifest).clips, tmp_path / "scripts.json")
    out = tmp_path / "run"
    args = ["eval", "actionatlas", "--data", str(data), "--out", str(out), "--model", str(siglip_dir)]
    assert main([*args, "--scripts", str(scripts), "--workers", "1", "-q"]) == 0
    printed = capsys.readouterr().out
    first = " ".join(printed.split("\n\n")[0].split())
    assert first.startswith("ActionAtlas: 1 of its 2 clips could be prepared; 1 could not")
    assert str(data / "unavailable.jsonl") in first and "The paper's 898 of 934" in first
    assert "Evaluated 1 of 1 clip" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dataset"]["unavailable"] == 1 and summary["dataset"]["prepared"] == 1
