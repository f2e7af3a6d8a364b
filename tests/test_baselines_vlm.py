"""Video-LLM baseline: a tiny random-weight Qwen2-VL built here and loaded from its folder, and a
loopback OpenAI-compatible server."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from actalign.baselines.vlm import (
    INSTRUCTION,
    LocalVLM,
    ServerVLM,
    VLMResult,
    build_prompt,
    load_vlm,
    match_answer,
    parse_vlm_spec,
)
from actalign.errors import ActAlignError
from baseline_models import build_qwen2vl
from llm_server import FakeLLM

CANDIDATES = ["Tip-in", "Putback dunk", "Alley-oop Dunk", "Tomahawk Dunk", "Windmill Dunk"]
QUESTION = "What best describes the move made by the man in a black jersey?"


def _frames(n=3, h=24, w=40, seed=0):
    return list(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_qwen2vl(tmp_path_factory.mktemp("models") / "tiny-qwen2vl")


@pytest.fixture(scope="module")
def vlm(qwen_dir):
    return LocalVLM(str(qwen_dir), image_size=32)


# ---------------------------------------------------------------------- spec, prompt, parsing


def test_parse_vlm_spec():
    assert parse_vlm_spec("local:Qwen/Qwen2-VL-2B-Instruct") == ("local", "Qwen/Qwen2-VL-2B-Instruct")
    assert parse_vlm_spec(" local:/models/qwen ") == ("local", "/models/qwen")
    assert parse_vlm_spec("gpt-4o") == ("server", "gpt-4o")
    assert parse_vlm_spec("Qwen/Qwen2-VL-7B-Instruct") == ("server", "Qwen/Qwen2-VL-7B-Instruct")
    for bad in ("local:", "local:  ", "", "  "):
        with pytest.raises(ActAlignError, match="--vlm"):
            parse_vlm_spec(bad)


def test_prompt_asks_the_question_with_lettered_options():
    prompt = build_prompt(QUESTION, CANDIDATES, "basketball", 8)
    lines = prompt.splitlines()
    assert lines[0] == "These are 8 frames from a basketball video, in time order."
    assert lines[1] == QUESTION
    assert lines[3:8] == [f"{label}. {c}" for label, c in zip("ABCDE", CANDIDATES)]
    assert lines[-1] == INSTRUCTION == "Answer with the option's text only."
    assert "Which basketball action is shown?" in build_prompt(None, CANDIDATES, "basketball", 8)
    many = build_prompt("Q?", [f"move {i}" for i in range(30)], None, 4)
    assert "30. move 29" in many and "from a video" in many


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Putback dunk", 1),
        ("  putback   DUNK. ", 1),
        ('"Tip-in"', 0),
        ('{"answer": "Windmill Dunk"}', 4),
        ("B", 1),
        ("(c)", 2),
        ("Option D", 3),
        ("The answer is e", 4),
        ("B. Putback dunk", 1),
        ("A) Tip-in", 0),
        ("I would say it is a tomahawk dunk here", 3),
        ("Tip-in or Putback dunk", None),  # two candidates: no answer
        ("a slam dunk", None),
        ("zzz", None),
        ("", None),
        (None, None),
    ],
)
def test_answers_are_matched_leniently(text, expected):
    assert match_answer(text, CANDIDATES) == expected


def test_a_candidate_inside_another_is_matched_to_the_longer_one():
    assert match_answer("I think it's an alley-oop dunk", ["Alley-oop Dunk", "Dunk"]) == 0
    assert match_answer("dunk", ["Alley-oop Dunk", "Dunk"]) == 1


# ---------------------------------------------------------------------- in process


def test_local_vlm_loads_from_a_folder(vlm, qwen_dir):
    from transformers import AutoModelForImageTextToText

    reference = AutoModelForImageTextToText.from_pretrained(qwen_dir)
    assert vlm.parameters == sum(p.numel() for p in reference.parameters())
    assert vlm.identity.startswith("local:dir:") and vlm.identity.endswith("|float32")
    assert vlm.frames == 8 and vlm.image_size == 32
    assert vlm.tokenizer.convert_ids_to_tokens(vlm.answer_ids("Tip-in")[-1]) == "<|im_end|>"
    assert vlm.frame_indices(80).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]


def test_images_only_processor_when_the_full_one_cannot_load(qwen_dir, monkeypatch):
    """Without torchvision the video processor cannot load; the image processor and tokenizer
    suffice. Forced here so the path is tested wherever torchvision is installed too."""
    import transformers

    def refuse(*args, **kwargs):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", refuse)
    model = LocalVLM(str(qwen_dir), image_size=32)
    assert type(model.processor).__name__ == "Qwen2VLProcessor"
    assert getattr(model.processor, "video_processor", None) is None
    result = model.rank(_frames(), QUESTION, CANDIDATES, "basketball")
    assert result.answer in range(len(CANDIDATES))


def test_loglik_equals_a_direct_computation(vlm):
    frames = _frames(3)
    result = vlm.rank(frames, QUESTION, CANDIDATES, "basketball")
    assert isinstance(result, VLMResult) and result.loglik.shape == (len(CANDIDATES),)

    inputs, prompt, n = vlm.prompt_inputs(frames, QUESTION, CANDIDATES, "basketball")
    assert n == 3 and prompt == result.prompt
    assert int((inputs["input_ids"] == vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) > 0
    start = inputs["input_ids"].shape[1]
    for i, candidate in enumerate(CANDIDATES):
        answer = vlm.tokenizer(candidate, add_special_tokens=False)["input_ids"]
        answer = [*answer, vlm.tokenizer.convert_tokens_to_ids("<|im_end|>")]
        full = dict(inputs)
        full["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([answer])], dim=1)
        full["attention_mask"] = torch.ones_like(full["input_ids"])
        if "mm_token_type_ids" in full:
            extra = torch.zeros((1, len(answer)), dtype=inputs["mm_token_type_ids"].dtype)
            full["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], extra], dim=1)
        with torch.no_grad():
            logp = torch.log_softmax(vlm.model(**full).logits[0].double(), dim=-1)
        expected = sum(float(logp[start - 1 + j, t]) for j, t in enumerate(answer))
        assert result.loglik[i] == pytest.approx(expected, abs=1e-4)
    by_loglik = sorted(range(len(CANDIDATES)), key=lambda i: -result.loglik[i])
    assert result.loglik_ranking == by_loglik
    assert result.ranking == [result.answer] + [i for i in by_loglik if i != result.answer]


CANDIDATE_SETS = [
    CANDIDATES,
    ["Tip", "Tip-in", "Tip-in dunk"],  # each the beginning of the next
    ['He said "hi"', "back\\slash [x] (y) *z* a|b", "Crème brûlée ü", "日本語"],
    ["x"],
    ["Square Cut", "Cover drive", "Cut Shot", "Straight Drive", "Pull Shot", "Sweep", "Reverse sweep"],
]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_constrained_answer_is_always_a_candidate(tmp_path, seed):
    model = LocalVLM(str(build_qwen2vl(tmp_path / f"q{seed}", seed=seed)), image_size=32)
    for k, cands in enumerate(CANDIDATE_SETS):
        result = model.rank(_frames(2, seed=seed * 10 + k), None, cands, "cricket")
        assert result.answer is not None and 0 <= result.answer < len(cands)
        assert result.answer_text.strip() == cands[result.answer]
        assert result.mode == "llguidance"
    assert np.all(np.isfinite(result.loglik))


def test_half_precision_ranks_close_to_float32(vlm, qwen_dir):
    half = LocalVLM(str(qwen_dir), image_size=32, dtype="bfloat16")
    assert half.identity.endswith("|bfloat16") and half.model.dtype == torch.bfloat16
    frames = _frames(2)
    result = half.rank(frames, QUESTION, CANDIDATES, "basketball")
    assert result.answer in range(len(CANDIDATES))
    reference = vlm.rank(frames, QUESTION, CANDIDATES, "basketball").loglik
    np.testing.assert_allclose(result.loglik, reference, rtol=0.05, atol=0.5)


def test_frames_and_image_size_are_recorded_and_used(qwen_dir):
    small = LocalVLM(str(qwen_dir), image_size=16, frames=2)
    large = LocalVLM(str(qwen_dir), image_size=None, frames=2)
    frames = _frames(2, h=48, w=64)
    inputs_small, _, _ = small.prompt_inputs(frames, None, CANDIDATES, None)
    inputs_large, _, _ = large.prompt_inputs(frames, None, CANDIDATES, None)
    assert inputs_small["pixel_values"].shape[0] < inputs_large["pixel_values"].shape[0]
    result = small.rank(frames, None, CANDIDATES, None)
    assert (result.frames, result.image_size) == (2, 16)
    with pytest.raises(ActAlignError, match="frames per clip"):
        LocalVLM(str(qwen_dir), frames=0)


def test_local_vlm_errors(qwen_dir, clip_dir, tmp_path, vlm):
    with pytest.raises(ActAlignError, match="No VLM folder"):
        LocalVLM(str(tmp_path / "absent"))
    with pytest.raises(ActAlignError, match="HF_HUB_OFFLINE"):
        LocalVLM("nobody/vlm-absent")
    with pytest.raises(ActAlignError, match="image-text-to-text"):
        LocalVLM(str(clip_dir))
    with pytest.raises(ActAlignError, match="at least one candidate"):
        vlm.rank(_frames(), None, [], None)
    with pytest.raises(ActAlignError, match="empty"):
        vlm.rank(_frames(), None, ["a", ""], None)
    with pytest.raises(ActAlignError, match="uint8"):
        vlm.rank([f.astype(np.float32) for f in _frames()], None, CANDIDATES, None)
    assert isinstance(load_vlm(f"local:{qwen_dir}", image_size=32), LocalVLM)


# ---------------------------------------------------------------------- server


def _images_of(request):
    parts = request["messages"][0]["content"]
    return [p for p in parts if p["type"] == "image_url"], [p for p in parts if p["type"] == "text"]


def test_the_server_receives_the_frames_as_image_parts():
    from PIL import Image

    frames = _frames(4, h=300, w=500)
    with FakeLLM() as fake:
        fake.answer(("answer", json.dumps({"answer": "Putback dunk"})))
        vlm = ServerVLM("some-vlm", base_url=fake.url, image_size=64, max_retries=0)
        result = vlm.rank(frames, QUESTION, CANDIDATES, "basketball")
        request = fake.requests[-1]
    assert (result.answer, result.mode, result.frames, result.image_size) == (1, "json_schema", 4, 64)
    assert result.loglik is None and result.ranking == [1]
    images, texts = _images_of(request)
    assert len(images) == 4 and [t["text"] for t in texts] == [result.prompt]
    for part in images:
        url = part["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert image.format == "JPEG" and image.size == (64, 38)
    schema = request["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == CANDIDATES
    assert request["model"] == "some-vlm"


def test_a_garbage_answer_is_a_miss_not_a_crash():
    with FakeLLM() as fake:
        vlm = ServerVLM("some-vlm", base_url=fake.url, max_retries=0)
        for garbage in ("I cannot tell from these frames.", "", "{}", '{"answer": 3}', "Z"):
            fake.answer(("answer", garbage))
            result = vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
            assert result.answer is None and result.answer_text == garbage and result.ranking == []


def test_the_server_falls_back_to_guided_choice_then_keeps_it():
    with FakeLLM(response_formats=()) as fake:  # refuses response_format, ignores guided_choice
        fake.answer(("answer", "B. Putback dunk"))
        vlm = ServerVLM("some-vlm", base_url=fake.url, max_retries=0)
        first = vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
        second = vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
        requests = fake.requests
    assert (first.answer, first.mode, second.mode) == (1, "guided_choice", "guided_choice")
    assert "response_format" in requests[0] and "guided_choice" not in requests[0]
    assert requests[1]["guided_choice"] == CANDIDATES and "response_format" not in requests[1]
    assert len(requests) == 3  # the refused mode is not tried again


def test_server_failures_are_one_sentence_errors():
    with FakeLLM() as fake:
        vlm = ServerVLM("some-vlm", base_url=fake.url, max_retries=0, timeout=5)
        fake.answer(("status", 500, "the model crashed"))
        with pytest.raises(ActAlignError, match=r"HTTP 500: the model crashed"):
            vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
        fake.answer(("status", 404, "no such model"))
        with pytest.raises(ActAlignError, match="has no model 'some-vlm'"):
            vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
        fake.answer(("slow", 2.0, "Tip-in"))
        slow = ServerVLM("some-vlm", base_url=fake.url, max_retries=0, timeout=0.5)
        with pytest.raises(ActAlignError, match=r"did not answer within 0\.5 s"):
            slow.rank(_frames(), QUESTION, CANDIDATES, "basketball")
    with pytest.raises(ActAlignError, match="Cannot reach"):
        ServerVLM("m", base_url=fake.url, max_retries=0).rank(_frames(), None, CANDIDATES, None)
    with pytest.raises(ActAlignError, match="OPENAI_BASE_URL"):
        ServerVLM("m")


@pytest.mark.parametrize("body", [b'{"object": "list", "data": []}', b"<html>proxy error</html>"])
def test_a_body_that_is_no_chat_completion_is_an_error(body):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        with pytest.raises(ActAlignError, match="VLM server"):
            ServerVLM("m", base_url=url, max_retries=0).rank(_frames(), None, CANDIDATES, None)
    finally:
        server.shutdown()
        server.server_close()


def test_server_vlm_from_spec_and_environment(monkeypatch):
    with FakeLLM() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        fake.answer(("answer", "Windmill Dunk"))
        vlm = load_vlm("some-vlm", frames=4, image_size=32)
        assert isinstance(vlm, ServerVLM) and vlm.identity == f"server:{fake.url}|some-vlm"
        assert vlm.rank(_frames(4), None, CANDIDATES, None).answer == 4
