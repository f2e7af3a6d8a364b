"""The paper's Table 2 peers on the one path: `classify --method xclip|vlm`, and `eval --table2`
with X-CLIP, the video LLM (in process, and on an OpenAI-compatible server) beside random,
mean-pool, + DTW and ActAlign, from the same clips, each row with its cost."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from actalign.baselines.predict import clip_frames
from actalign.cli import main
from baseline_models import build_qwen2vl, build_xclip
from llm_server import FakeLLM
from media import SAMPLES, make_video, standin_samples

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
    assert main([*base, "--method", "xclip", "--model", str(xclip_dir)]) == 0
    pred = json.loads(capsys.readouterr().out)["videos"][0]
    assert pred["method"] == "xclip" and sorted(p["action"] for p in pred["predictions"]) == sorted(cands)
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
            ]
        )
        == 0
    )
    pred = json.loads(capsys.readouterr().out)["videos"][0]
    assert pred["method"] == "vlm" and len(pred["predictions"]) == 3
    assert pred["settings"]["frames"] == 2 and pred["settings"]["answer"] in cands
    assert (
        pred["predictions"][0]["action"] == pred["settings"]["answer"]
    )  # the constrained answer ranks first
    assert main([*base, "--method", "vlm"]) == 2
    assert "--vlm" in capsys.readouterr().err


def test_eval_table2_gives_every_row_from_the_same_clips(
    tmp_path, samples, siglip_dir, xclip_dir, qwen_dir, capsys
):
    out = tmp_path / "t2"
    command = [
        "eval", str(samples / "manifest.jsonl"), "--out", str(out), "--table2", "--model", str(siglip_dir),
        "--xclip", str(xclip_dir), "--vlm", f"local:{qwen_dir}", "--vlm-frames", "2",
        "--vlm-image-size", "32", "--scripts", str(EXAMPLE_SCRIPTS), "--fps", "2", "--workers", "1", "-q",
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


def test_eval_with_a_server_vlm_counts_a_garbage_answer_as_a_miss(tmp_path, samples, siglip_dir, monkeypatch):
    out = tmp_path / "srv"
    with FakeLLM() as fake:
        fake.answer(("answer", "I cannot tell from these frames."))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        monkeypatch.setenv("OPENAI_API_KEY", "x")
        command = [
            "eval", str(samples / "manifest.jsonl"), "--out", str(out), "--model", str(siglip_dir),
            "--vlm", "some-vlm", "--scripts", str(EXAMPLE_SCRIPTS), "--fps", "2", "--workers", "1", "-q",
            "--limit", "2",
        ]  # fmt: skip
        assert main(command) == 0
        sent = fake.requests
    summary = json.loads((out / "summary.json").read_text())
    vlm = summary["methods"]["VLM (some-vlm)"]
    assert vlm["misses"] == 2 and vlm["top1"] == 0.0 and vlm["top2"] is None and vlm["top3"] is None
    images = [p for p in sent[-1]["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == 8  # --vlm-frames' default
