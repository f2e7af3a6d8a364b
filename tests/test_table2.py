"""The paper's Table 2 peers on the one path: `classify --method xclip|vlm`, and `eval --table2`
with X-CLIP, the video LLM (in process, and on an OpenAI-compatible server) beside random,
mean-pool, + DTW and ActAlign, from the same clips, each row with its cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actalign.baselines.predict import clip_frames
from actalign.baselines.vlm import MC_PROMPT, linspace_indices
from actalign.cli import main
from actalign.encoders.cpu import default_cpu_dtype
from baseline_models import build_qwen2vl, build_xclip
from llm_server import FakeLLM
from media import SAMPLES, make_video, standin_samples
from test_baselines_vlm import _body, _Server

pytestmark = pytest.mark.slow
EXAMPLE_SCRIPTS = Path(__file__).resolve().parents[1] / "examples" / "sample-scripts.json"


@pytest.fixture(scope="module")
def xclip_dir(tmp_path_factory):
    return build_xclip(tmp_path_factory.mktemp("models") / "tiny-xclip", num_frames=4)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_qwen2vl(tmp_path_factory.mktemp("models") / "tiny-qwen2vl")


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """The shared sample clips, or generated stand-ins (same names, domains, candidates)."""
    return SAMPLES if SAMPLES.exists() else standin_samples(tmp_path_factory.mktemp("samples"))


def test_frames_are_the_segment_centres_of_the_span(tmp_path):
    levels = [(i * 10, i * 10, i * 10) for i in range(20)]
    video = make_video(tmp_path / "v.mp4", n=20, fps=10, colors=levels)
    frames = clip_frames(video, 4, None, None, None)
    # frames 2, 7, 12, 17 of 20: floor((i + 1/2) * 20 / 4)
    assert frames.shape[0] == 4
    assert np.allclose(frames.mean(axis=(1, 2, 3)), [20, 70, 120, 170], atol=4)
    windowed = clip_frames(video, 2, 1.0, 2.0, None)  # frames 10..19 of the span: 12 and 17
    assert np.allclose(windowed.mean(axis=(1, 2, 3)), [120, 170], atol=4)


def test_classify_with_xclip_and_a_local_vlm_ranks_every_candidate(tmp_path, xclip_dir, qwen_dir, capsys):
    video = make_video(tmp_path / "v.mp4", n=20, fps=10)
    cands = ["Tip-in", "Putback dunk", "Sky hook"]
    base = ["classify", str(video), "--domain", "basketball", "--candidates", *cands, "--format", "json"]
    assert main([*base, "--method", "xclip", "--xclip", str(xclip_dir), "--device", "cpu"]) == 0
    pred = json.loads(capsys.readouterr().out)["videos"][0]
    assert pred["method"] == "xclip" and sorted(p["action"] for p in pred["predictions"]) == sorted(cands)
    # what it saw and what its scores are, told truly: its 4 frames, logits, its device and dtype
    assert pred["frames"] == 4 and pred["score_kind"] == "logit"
    # the CPU's default precision: bfloat16 where it has bfloat16 units, else float32
    assert pred["settings"]["device"] == "cpu" and pred["settings"]["dtype"] == default_cpu_dtype()
    assert main([*base[:-2], "--method", "xclip", "--model", str(xclip_dir), "--dtype", "float32"]) == 0
    table = capsys.readouterr().out  # --model: the alias of --xclip with --method xclip
    assert "(basketball, 4 frames, xclip)" in table and "  rank    logit  action" in table, table
    assert [p["rank"] for p in pred["predictions"]] == [1, 2, 3] and all(
        not p["segments"] for p in pred["predictions"]
    )
    assert (
        main(
            [
                *base,
                "--method",
                "vlm",
                "--vlm",
                f"local:{qwen_dir}",
                "--vlm-image-size",
                "32",
                "--vlm-frames",
                "2",
                "--vlm-protocol",
                "ranked",
            ]
        )
        == 0
    )
    pred = json.loads(capsys.readouterr().out)["videos"][0]
    assert pred["method"] == "vlm" and len(pred["predictions"]) == 3  # ranked in process: every choice
    assert pred["settings"]["frames"] == 2 and pred["settings"]["protocol"] == "ranked"
    assert pred["frames"] == 2 and pred["score_kind"] == "loglik"
    assert pred["settings"]["device"] and pred["settings"]["dtype"]
    assert isinstance(pred["settings"]["answer"], str)
    vlm = [*base, "--method", "vlm", "--vlm", f"local:{qwen_dir}", "--vlm-frames", "2"]
    assert main(vlm) == 0  # ActionAtlas's protocol: the answer alone, or no answer
    pred = json.loads(capsys.readouterr().out)["videos"][0]
    assert pred["settings"]["protocol"] == "actionatlas" and pred["settings"]["max_pixels"] == 336 * 336
    assert pred["frames"] == 2 and pred["score_kind"] == "answer"
    answered = pred["settings"]["answered"]
    assert [p["action"] for p in pred["predictions"]] == ([] if answered is None else [answered])
    assert main([*vlm, "--format", "table"]) == 0
    table = capsys.readouterr().out
    assert "answer as written:" in table and ("no answer" in table) == (answered is None)
    assert main([*base, "--method", "vlm"]) == 2
    assert "--vlm" in capsys.readouterr().err


def test_eval_table2_gives_every_row_from_the_same_clips(
    tmp_path, samples, siglip_dir, xclip_dir, qwen_dir, capsys
):
    out = tmp_path / "t2"
    command = [
        "eval", str(samples / "manifest.jsonl"), "--out", str(out), "--table2", "--model", str(siglip_dir),
        "--xclip", str(xclip_dir), "--vlm", f"local:{qwen_dir}", "--vlm-frames", "2",
        "--vlm-image-size", "32", "--vlm-protocol", "ranked", "--scripts", str(EXAMPLE_SCRIPTS), "--fps", "2",
        "--workers", "1", "-q",
    ]  # fmt: skip
    assert main(command) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = list(summary["methods"])
    peers = [f"X-CLIP ({xclip_dir})", f"VLM (local:{qwen_dir})"]
    assert rows == ["random (expected)", "mean-pool", "+ DTW (bare steps)", "ActAlign", *peers]
    vlm = summary["methods"][f"VLM (local:{qwen_dir})"]
    assert all(vlm[f"top{k}"] is not None for k in (1, 2, 3))  # in process: every candidate ranked
    assert vlm["top1"] <= vlm["top2"] <= vlm["top3"] == pytest.approx(vlm["top3"])
    cost = summary["cost"]
    assert (
        cost[f"X-CLIP ({xclip_dir})"]["parameters"] > 0 and cost[f"X-CLIP ({xclip_dir})"]["clips_per_s"] > 0
    )
    assert cost["ActAlign"]["clips_per_s"] > 0
    printed = capsys.readouterr().out
    assert "| ActAlign |" in printed and "clips/s" in printed
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["methods"]) == 5 for r in lines)  # five methods per row, one decode of the SigLIP path
    assert main(command) == 0  # resumed: nothing to do, same summary
    assert json.loads((out / "summary.json").read_text())["methods"] == summary["methods"]


def _eval(out, samples, siglip_dir, *extra):
    return [
        "eval", str(samples / "manifest.jsonl"), "--out", str(out), "--model", str(siglip_dir),
        "--scripts", str(EXAMPLE_SCRIPTS), "--fps", "2", "--workers", "1", "-q", "--limit", "2", *extra,
    ]  # fmt: skip


def test_eval_with_a_server_vlm_counts_a_garbage_answer_as_a_miss(tmp_path, samples, siglip_dir, monkeypatch):
    out = tmp_path / "srv"
    with FakeLLM() as fake:
        fake.answer(("answer", "I cannot tell from these frames."))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        monkeypatch.setenv("OPENAI_API_KEY", "x")
        assert main(_eval(out, samples, siglip_dir, "--vlm", "some-vlm")) == 0
        sent = fake.requests
    summary = json.loads((out / "summary.json").read_text())
    vlm = summary["methods"]["VLM (some-vlm)"]
    assert vlm["misses"] == 2 and vlm["top1"] == 0.0 and vlm["top2"] is None and vlm["top3"] is None
    assert "errors" not in vlm
    images = [p for p in sent[-1]["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == 16  # ActionAtlas's count


@pytest.mark.parametrize(
    ("protocol", "frames", "answer", "kept"),
    [("actionatlas", 16, "2\x1b[31m", "2\\x1b[31m"), ("ranked", 8, "2", "2")],
)
def test_a_server_vlm_row_under_each_protocol(
    tmp_path, samples, siglip_dir, monkeypatch, protocol, frames, answer, kept
):
    """A server answering as ActionAtlas asks, with a choice number: '2' is choice 2 (each of the
    first two clips' answer) under both protocols, the answer is kept in the row, and the run
    records the protocol and the server."""
    out = tmp_path / protocol
    rows = [json.loads(x) for x in (samples / "manifest.jsonl").read_text().splitlines()][:2]
    with FakeLLM() as fake:
        fake.answer(("answer", answer))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        command = _eval(out, samples, siglip_dir, "--vlm", "some-vlm", "--vlm-protocol", protocol)
        assert main(command) == 0
        sent = fake.requests
    summary = json.loads((out / "summary.json").read_text())
    vlm = summary["methods"]["VLM (some-vlm)"]
    expected = sum(r["answer"] == 1 for r in rows) / 2
    assert vlm["top1"] == expected and vlm["top2"] is None and "misses" not in vlm
    (record,) = summary["config"]["baselines"]
    assert record["protocol"] == protocol and record["frames"] == frames
    assert record["server"] == f"server:{fake.url}|some-vlm"
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    for line in lines:
        entry = line["methods"]["VLM (some-vlm)"]
        assert entry["answer"] == 1 and entry["answer_text"] == kept  # escaped
    asked = [r["messages"][0]["content"][-1]["text"] for r in sent]
    for row in rows:
        question = row.get("question") or f"What best describes the {row['domain']} move made in the video?"
        choices = "\n".join(f"{i}. {c}" for i, c in enumerate(row["candidates"], 1))
        assert MC_PROMPT.format(question=question, choices=choices) in asked
    assert all(len(r["messages"][0]["content"]) == frames + 1 for r in sent)
    assert ("response_format" in sent[0]) == (protocol == "ranked")


def test_a_malformed_server_reply_is_an_error_apart_from_the_misses(
    tmp_path, samples, siglip_dir, monkeypatch
):
    out = tmp_path / "bad"
    with _Server(_body(b'{"choices": [5]}')) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        assert main(_eval(out, samples, siglip_dir, "--vlm", "some-vlm")) == 0
    summary = json.loads((out / "summary.json").read_text())
    vlm = summary["methods"]["VLM (some-vlm)"]
    assert vlm["errors"] == 2 and "misses" not in vlm and vlm["top1"] == 0.0
    assert summary["clips"] == 2 and summary["methods"]["ActAlign"]["top1"] is not None
    lines = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert all("not a chat completion" in r["methods"]["VLM (some-vlm)"]["error"] for r in lines)
    assert "2 errors" in (out / "summary.md").read_text()


def test_a_vlm_run_resumed_against_another_server_is_refused(
    tmp_path, samples, siglip_dir, monkeypatch, capsys
):
    out = tmp_path / "resume"
    with FakeLLM() as first:
        first.answer(("answer", "1"))
        monkeypatch.setenv("OPENAI_BASE_URL", first.url)
        assert main(_eval(out, samples, siglip_dir, "--vlm", "some-vlm", "--limit", "1")) == 0
    with FakeLLM() as other:
        other.answer(("answer", "1"))
        monkeypatch.setenv("OPENAI_BASE_URL", other.url)
        capsys.readouterr()
        assert main(_eval(out, samples, siglip_dir, "--vlm", "some-vlm")) == 2
        assert "another configuration" in capsys.readouterr().err
        assert other.requests == []


@pytest.mark.skipif(not SAMPLES.exists(), reason=f"the shared ActionAtlas clips are not at {SAMPLES}")
def test_actionatlas_frames_on_the_shared_clips_are_linspace_of_every_frame():
    from actalign.video import Sampling, iter_frames

    video = SAMPLES / "cricket.mp4"
    every = np.concatenate([b.frames for b in iter_frames(video, Sampling())])
    for count in (4, 16, 64):
        picked = clip_frames(video, count, None, None, None, linspace_indices)
        expected = np.linspace(0, len(every) - 1, count, dtype=int)
        np.testing.assert_array_equal(picked, every[expected])


@pytest.mark.parametrize(
    ("answer", "shown"), [("2", "Putback dunk"), ("2. Pike jump", "Putback dunk"), ("B", None)]
)
def test_classify_with_a_server_shows_the_answer_or_no_answer(tmp_path, monkeypatch, capsys, answer, shown):
    video = make_video(tmp_path / "v.mp4", n=20, fps=10)
    cands = ["Tip-in", "Putback dunk", "Sky hook"]
    base = ["classify", str(video), "--domain", "basketball", "--candidates", *cands, "--method", "vlm"]
    with FakeLLM() as fake:
        fake.answer(("answer", answer))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        assert main([*base, "--vlm", "some-vlm", "--format", "json"]) == 0
        pred = json.loads(capsys.readouterr().out)["videos"][0]
        assert main([*base, "--vlm", "some-vlm"]) == 0
        table = capsys.readouterr().out
        assert main([*base, "--vlm", "some-vlm", "--format", "vtt"]) == 0
        cues = capsys.readouterr().out
    assert cues.startswith("WEBVTT") and ("no answer" if shown is None else shown) in cues
    assert [p["action"] for p in pred["predictions"]] == ([] if shown is None else [shown])
    assert pred["settings"]["answer"] == answer and pred["settings"]["protocol"] == "actionatlas"
    assert pred["settings"]["server"] == f"server:{fake.url}|some-vlm"
    assert pred["frames"] == 16 and pred["settings"]["frames"] == 16  # ActionAtlas's 16, sent as images
    assert (pred["settings"]["device"], pred["settings"]["dtype"]) == ("server", "server")
    assert "(basketball, 16 frames, vlm)" in table and "  rank   answer  action" in table, table
    assert "Tip-in" not in table  # no ranking the model did not make
    assert ("no answer" in table) == (shown is None) and f"answer as written: {answer!r}" in table
