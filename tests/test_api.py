"""The front door: `ActAlign` + `Config` as a researcher calls them from Python.

Scripts come from where the CLI gets them; `run` and `evaluate` give what `actalign batch` and
`actalign eval` write; a damaged cache entry is computed again by every command, with one warning;
no library message names a command-line flag.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import warnings
from pathlib import Path

import pytest

from actalign import ActAlign, Config, Failure, Prediction
from actalign.cli import main
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from llm_server import FakeLLM
from media import make_video

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "actionatlas-samples"
README = Path(__file__).resolve().parents[1] / "README.md"
SCRIPTS = {"t": {"a": ["red ball", "blue net", "player jumps"], "b": ["blue net", "red ball"]}}


@pytest.fixture
def video(tmp_path):
    levels = [(i * 37 % 255, i * 11 % 255, 255 - i * 5 % 255) for i in range(40)]
    return make_video(tmp_path / "clip.mp4", n=40, fps=10, colors=levels)


@pytest.fixture
def scripts_file(tmp_path):
    p = tmp_path / "scripts.json"
    p.write_text(json.dumps(SCRIPTS))
    return p


# --------------------------------------------------------------------------- Config


def test_config_is_data_checked_when_made_and_replaced():
    c = Config(model="m", fps=4)
    assert c.replace(fps=2).fps == 2 and c.fps == 4
    assert Config(scripts="one.json").scripts == ("one.json",)
    for bad, said in [
        ({"fps": 0}, "fps"),
        ({"smooth": 1e308}, "3600"),
        ({"alignment": "diagonal"}, "alignment"),
        ({"template": "{nothing}"}, "template"),
        ({"start": 5, "end": 2}, "after start"),
        ({"workers": 0}, "workers"),
    ]:
        with pytest.raises(ActAlignError, match=said):
            Config(**bad)
    with pytest.raises(ActAlignError, match="no field 'fsp'"):
        c.replace(fsp=3)


def test_config_record_is_the_settings_block_of_a_result(siglip_dir, video, scripts_file):
    aa = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=5, no_cache=True)
    pred = aa.classify(video, ["a", "b"], "t")
    assert pred.settings == aa.config.record(aa.encoder)
    assert {"model", "dtype", "fps", "smooth", "template", "alignment", "method"} <= set(pred.settings)


def test_the_encoder_loads_once_and_only_when_needed(siglip_dir, video, scripts_file, monkeypatch):
    aa = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=5)
    assert aa._encoder is None  # made, not loaded
    first = aa.classify(video, ["a", "b"], "t")
    enc = aa.encoder
    second = aa.classify(video, ["b", "a"], "t")
    assert aa.encoder is enc
    assert first.top.score == pytest.approx(second.candidates[second.rank_of(first.top.action) - 1].score)


# --------------------------------------------------------------------------- scripts without scripts=


def test_classify_without_scripts_reads_the_store(siglip_dir, video, scripts_file):
    from actalign.scripts import ScriptStore

    store = ScriptStore()  # $ACTALIGN_HOME, as the CLI's
    store.import_file(scripts_file)
    store.close()
    pred = ActAlign(model=str(siglip_dir), fps=5).classify(video, ["a", "b"], "t")
    assert {c.action for c in pred.candidates} == {"a", "b"}
    assert pred.candidates[0].steps in (SCRIPTS["t"]["a"], SCRIPTS["t"]["b"])


def test_classify_without_scripts_asks_the_llm_the_environment_names(siglip_dir, video, monkeypatch):
    answer = json.dumps({"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]})
    with FakeLLM() as llm:
        llm.answer(("answer", answer))
        monkeypatch.setenv("OPENAI_BASE_URL", llm.url)
        monkeypatch.setenv("OPENAI_API_KEY", "k")
        pred = ActAlign(model=str(siglip_dir), fps=5).classify(video, ["a", "b"], "t")
        assert llm.requests, "the LLM was not asked"
    assert pred.candidates[pred.rank_of("a") - 1].steps == ["red ball", "blue net"]
    # written into the store: a second front door needs no LLM
    again = ActAlign(model=str(siglip_dir), fps=5).classify(video, ["a", "b"], "t")
    assert [c.score for c in again.candidates] == [c.score for c in pred.candidates]


def test_no_scripts_anywhere_is_one_sentence_naming_parameters(siglip_dir, video):
    with pytest.raises(ActAlignError) as e:
        ActAlign(model=str(siglip_dir)).classify(video, ["a"], "t")
    assert "--" not in str(e.value)
    assert "scripts=" in str(e.value)


# --------------------------------------------------------------------------- run and evaluate


def _manifest(tmp_path, videos, answers=True) -> Path:
    rows = [
        {
            "id": f"c{i}",
            "video": str(v),
            "domain": "t",
            "candidates": ["a", "b"],
            **({"answer": i % 2} if answers else {}),
        }
        for i, v in enumerate(videos)
    ]
    p = tmp_path / "clips.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_run_yields_predictions_with_the_scores_of_batch(tmp_path, siglip_dir, scripts_file):
    videos = [
        make_video(tmp_path / f"v{i}.mp4", n=30, fps=10, colors=[(i * 40, 200 - i * 30, 90)] * 30)
        for i in range(3)
    ]
    manifest = _manifest(tmp_path, [*videos, tmp_path / "missing.mp4"], answers=False)
    aa = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=5, workers=1)
    items = list(aa.run(manifest))
    preds = [p for p in items if isinstance(p, Prediction)]
    fails = [f for f in items if isinstance(f, Failure)]
    assert sorted(p.id for p in preds) == ["c0", "c1", "c2"] and [f.id for f in fails] == ["c3"]
    assert (
        main(
            [
                "batch",
                str(manifest),
                "--out",
                str(tmp_path / "b"),
                "--model",
                str(siglip_dir),
                "--fps",
                "5",
                "--scripts",
                str(scripts_file),
                "--workers",
                "1",
                "-q",
            ]
        )
        == 1
    )  # the missing clip
    rows = {
        r["id"]: r for r in map(json.loads, (tmp_path / "b" / "predictions.jsonl").read_text().splitlines())
    }
    for p in preds:
        assert [(c.action, round(c.score, 6)) for c in p.candidates] == [
            (c["action"], c["score"]) for c in rows[p.id]["predictions"]
        ]
    # with a run folder: resumable, and finished clips come back from it
    out = tmp_path / "r"
    first = [p.id for p in aa.run(manifest, out=out) if isinstance(p, Prediction)]
    again = [p.id for p in aa.run(manifest, out=out) if isinstance(p, Prediction)]
    assert sorted(first) == sorted(again) == ["c0", "c1", "c2"]


def test_evaluate_gives_the_summary_of_eval(tmp_path, siglip_dir, scripts_file):
    if SHARED.is_dir():
        rows = [json.loads(line) for line in (SHARED / "manifest.jsonl").read_text().splitlines()][:2]
        for r in rows:
            r["video"] = str(SHARED / r["video"])
        scripts = {r["domain"]: {c: [f"{c} begins", f"{c} ends"] for c in r["candidates"]} for r in rows}
        scripts_file.write_text(json.dumps(scripts))
        manifest = tmp_path / "m.jsonl"
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:  # generated stand-ins
        videos = [
            make_video(tmp_path / f"v{i}.mp4", n=20, fps=10, colors=[(i * 90, 60, 30)] * 20) for i in range(2)
        ]
        manifest = _manifest(tmp_path, videos)
    summary = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=2, workers=1).evaluate(
        manifest, ladder=True
    )
    assert (
        main(
            [
                "eval",
                str(manifest),
                "--out",
                str(tmp_path / "e"),
                "--model",
                str(siglip_dir),
                "--fps",
                "2",
                "--scripts",
                str(scripts_file),
                "--workers",
                "1",
                "--ladder",
                "-q",
            ]
        )
        == 0
    )
    written = json.loads((tmp_path / "e" / "summary.json").read_text())
    strip = lambda s: {k: v for k, v in s.items() if k not in ("cost",)}  # noqa: E731 (timings differ)
    assert strip(json.loads(json.dumps(summary))) == strip(written)
    assert set(summary["methods"]) >= {"mean-pool", "+ smoothing (ActAlign)"}


# --------------------------------------------------------------------------- the one reader's rule


def _break_second_block(cache: EmbeddingCache, key: str) -> None:
    """Delete block 1 of an entry (block 0 intact: the reader breaks mid-stream)."""
    from actalign.encoders.cache import block_key

    cache._frames_path(block_key(key, 1)).unlink()


def test_a_damaged_cache_entry_is_computed_again_by_every_command(tmp_path, siglip_dir, scripts_file):
    video = make_video(
        tmp_path / "long.mp4", n=300, fps=30, colors=[(i % 255, 80, 200 - i % 200) for i in range(300)]
    )
    from actalign.embed import video_key
    from actalign.video import Sampling

    cache = EmbeddingCache(tmp_path / "c")
    aa = ActAlign(model=str(siglip_dir), scripts=scripts_file, cache=cache, fps=30)  # 300 frames: 2 blocks
    clean = aa.classify(video, ["a", "b"], "t")
    found = aa.locate(video, ["a", "b"], "t")
    key = video_key(aa.encoder, video, Sampling(fps=30))

    said = {}
    for command in ("classify", "locate", "batch"):
        _break_second_block(cache, key)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if command == "classify":
                again = aa.classify(video, ["a", "b"], "t")
                assert [c.score for c in again.candidates] == [c.score for c in clean.candidates]
            elif command == "locate":
                assert [d.to_dict() for d in aa.locate(video, ["a", "b"], "t")] == [
                    d.to_dict() for d in found
                ]
            else:
                (p,) = list(aa.run([str(video)], domain="t", candidates=["a", "b"], workers=1))
                assert [round(c.score, 6) for c in p.candidates] == [
                    round(c.score, 6) for c in clean.candidates
                ]
                caught = [*caught, *[type("W", (), {"message": w})() for w in p.warnings]]
        said[command] = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert all(len(v) == 1 for v in said.values()), {k: len(v) for k, v in said.items()}
    assert said["classify"] == said["locate"] == said["batch"]


# --------------------------------------------------------------------------- words


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]+")


def test_no_library_message_names_a_flag():
    src = Path(__import__("actalign").__file__).parent
    named = []
    for path in src.rglob("*.py"):
        rel = path.relative_to(src).as_posix()
        if rel.startswith(("cli/", "app/")):
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(n.body[0].value)
            for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and n.body
            and isinstance(n.body[0], ast.Expr)
            and isinstance(n.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            literal = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if literal and id(node) not in docstrings and FLAG.search(node.value):
                named.append(f"{rel}:{node.lineno}: {node.value[:70]!r}")
    assert not named, "\n".join(named)


def test_the_cli_says_parameters_as_flags(tmp_path, siglip_dir, video, capsys):
    code = main(["classify", str(video), "--domain", "t", "--candidates", "a", "--model", str(siglip_dir)])
    assert code == 2
    err = capsys.readouterr().err
    assert "--scripts FILE" in err and "scripts=" not in err


# --------------------------------------------------------------------------- the README's Python


def _python_blocks() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    return [b for b in blocks if b.startswith("from actalign import ActAlign")]


def test_the_readme_python_runs_as_written(tmp_path, siglip_dir, scripts_file, monkeypatch):
    """The README's Python blocks, with its model and clip names pointed at this test's."""
    blocks = _python_blocks()
    assert blocks, "the README shows the Python API"
    video = make_video(tmp_path / "clip.mp4", n=30, fps=10, colors=[(200, 30, 30)] * 30)
    shutil.copy(video, tmp_path / "match.mp4")
    (tmp_path / "scripts.json").write_text(
        json.dumps(
            {"basketball": {a: ["a player jumps", "the ball goes in"] for a in ("Tip-in", "Putback dunk")}}
        )
    )
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        code = block.replace('"siglip-base"', repr(str(siglip_dir)))
        namespace: dict = {}
        exec(compile(code, "README.md", "exec"), namespace)
        if "pred" in namespace:
            assert isinstance(namespace["pred"], Prediction)


def test_a_run_folder_is_refused_or_found_finished_before_any_model_loads(
    tmp_path, siglip_dir, scripts_file, monkeypatch
):
    video = make_video(tmp_path / "v.mp4", n=20, fps=10, colors=[(200, 40, 40)] * 20)
    manifest = _manifest(tmp_path, [video])
    out = tmp_path / "run"
    first = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=5, workers=1).batch(manifest, out)
    assert len(first.rows) == 1

    def no_model(self):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(Config, "encoder", no_model)
    again = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=5, workers=1)
    assert again.batch(manifest, out).rows == first.rows  # finished: read, nothing loaded
    assert [p.id for p in again.run(manifest, out=out)] == ["c0"]
    with pytest.raises(ActAlignError, match=r"another configuration \(fps: 5\.0 -> 4\.0"):
        ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=4.0, workers=1).batch(manifest, out)
    with pytest.raises(ActAlignError, match="another configuration"):
        ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=4.0).evaluate(manifest, out=out)


def test_locate_smooths_at_the_rate_classify_measures(tmp_path, siglip_dir, scripts_file):
    """A 12 fps video asked for at 30 fps is sampled at 12: classify measures 12 from the frames,
    and locate's smoothing window and span prior follow the same rate, cached or not."""
    from actalign.embed import FrameStream
    from actalign.score import smoothing_window
    from actalign.video import Sampling

    video = make_video(tmp_path / "v.mp4", n=36, fps=12, colors=[(i * 7, 90, 200 - i * 5) for i in range(36)])
    aa = ActAlign(model=str(siglip_dir), scripts=scripts_file, fps=30, cache=EmbeddingCache(tmp_path / "c"))
    rate = FrameStream(aa.encoder, video, Sampling(fps=30), aa.cache).sampled_fps()  # before any entry
    emb = aa.pipeline().embed(video)
    assert rate == pytest.approx(emb.fps, rel=1e-3)
    assert smoothing_window(1.0, rate) == smoothing_window(1.0, emb.fps) == 12
    cached = FrameStream(aa.encoder, video, Sampling(fps=30), aa.cache).sampled_fps()
    assert cached == emb.fps
