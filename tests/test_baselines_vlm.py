"""Video-LLM baseline: a tiny random-weight Qwen2-VL built here and loaded from its folder, and a
loopback OpenAI-compatible server."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch

from actalign.baselines.vlm import (
    MC_PROMPT,
    QWEN2VL_PIXELS,
    LocalVLM,
    ServerVLM,
    VLMAnswerError,
    VLMResult,
    build_prompt,
    first_digit,
    linspace_indices,
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
    return LocalVLM(str(qwen_dir), image_size=32, protocol="ranked", max_new_tokens=8, dtype="float32")


# ---------------------------------------------------------------------- spec, prompt, parsing


def test_parse_vlm_spec():
    assert parse_vlm_spec("local:Qwen/Qwen2-VL-2B-Instruct") == ("local", "Qwen/Qwen2-VL-2B-Instruct")
    assert parse_vlm_spec(" local:/models/qwen ") == ("local", "/models/qwen")
    assert parse_vlm_spec("gpt-4o") == ("server", "gpt-4o")
    assert parse_vlm_spec("Qwen/Qwen2-VL-7B-Instruct") == ("server", "Qwen/Qwen2-VL-7B-Instruct")
    for bad in ("local:", "local:  ", "", "  "):
        with pytest.raises(ActAlignError, match="`vlm"):
            parse_vlm_spec(bad)


def test_the_prompt_is_actionatlas_mc_prompt_with_numbered_choices():
    prompt = build_prompt(QUESTION, CANDIDATES, "basketball")
    lines = prompt.splitlines()
    assert lines[0] == (
        "Answer the given question according to the video. Only output the choice number and nothing "
        "else. When answering the question consider all legal and illegal moves and drills."
    )
    assert lines[1] == QUESTION
    assert lines[2:] == [f"{i}. {c}" for i, c in enumerate(CANDIDATES, 1)]
    assert prompt == MC_PROMPT.format(question=QUESTION, choices="\n".join(lines[2:]))
    # without a question in the manifest: one in ActionAtlas's style
    assert build_prompt(None, CANDIDATES, "basketball").splitlines()[1] == (
        "What best describes the basketball move made in the video?"
    )
    assert (
        build_prompt("  ", ["a"], None).splitlines()[1] == "What best describes the move made in the video?"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", 1),
        ("2. Pike jump", 1),
        ("I pick 3", 2),
        ("B", None),
        ("", None),
        (" 5\n", 4),
        ("Choice 12", 0),  # the first digit only, as ActionAtlas takes it
        ("0", None),
        ("7", None),  # no seventh choice
        ("\u00b2", None),  # a digit to str.isdigit, no choice number
        (None, None),
    ],
)
def test_first_digit_scoring_as_actionatlas(text, expected):
    assert first_digit(text, len(CANDIDATES)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Putback dunk", 1),
        ("  putback   DUNK. ", 1),
        ('"Tip-in"', 0),
        ('{"answer": "Windmill Dunk"}', 4),
        ('{"answer": "2"}', 1),
        ("2", 1),
        ("(3)", 2),
        ("Option 4", 3),
        ("The answer is 5", 4),
        ("2. Putback dunk", 1),
        ("1) Tip-in", 0),
        ("I would say it is a tomahawk dunk here", 3),
        ("Tip-in or Putback dunk", None),  # two candidates: no answer
        ("a slam dunk", None),
        ("B", None),  # letters are no choice numbers
        ("9", None),
        ("zzz", None),
        ("", None),
        (None, None),
    ],
)
def test_answers_are_matched_leniently(text, expected):
    assert match_answer(text, CANDIDATES) == expected


def test_deeply_nested_json_in_an_answer_is_one_error():
    with pytest.raises(VLMAnswerError, match="nested too deeply"):
        match_answer("[" * 200_000, CANDIDATES)


@pytest.mark.parametrize("n", [1, 2, 16, 17, 80, 157])
@pytest.mark.parametrize("k", [1, 4, 16, 64])
def test_frame_indices_are_actionatlas_linspace(n, k):
    assert linspace_indices(n, k).tolist() == np.linspace(0, n - 1, k, dtype=int).tolist()


def test_a_candidate_inside_another_is_matched_to_the_longer_one():
    assert match_answer("I think it's an alley-oop dunk", ["Alley-oop Dunk", "Dunk"]) == 0
    assert match_answer("dunk", ["Alley-oop Dunk", "Dunk"]) == 1


# ---------------------------------------------------------------------- in process


def test_local_vlm_loads_from_a_folder(vlm, qwen_dir):
    from transformers import AutoModelForImageTextToText

    reference = AutoModelForImageTextToText.from_pretrained(qwen_dir)
    assert vlm.parameters == sum(p.numel() for p in reference.parameters())
    assert vlm.identity.startswith("local:dir:") and vlm.identity.endswith("|float32")
    assert vlm.frames == 8 and vlm.image_size == 32 and vlm.protocol == "ranked"
    assert vlm.frame_indices(80).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]  # segment centres
    actionatlas = LocalVLM(str(qwen_dir), max_new_tokens=4, dtype="float32")
    assert (actionatlas.protocol, actionatlas.frames, actionatlas.image_size) == ("actionatlas", 16, None)
    assert actionatlas.limits == QWEN2VL_PIXELS and QWEN2VL_PIXELS[0] == 336 * 336
    assert actionatlas.frame_indices(80).tolist() == np.linspace(0, 79, 16, dtype=int).tolist()


def test_images_only_processor_when_the_full_one_cannot_load(qwen_dir, monkeypatch):
    """Without torchvision the video processor cannot load; the image processor and tokenizer
    suffice. Forced here so the path is tested wherever torchvision is installed too."""
    import transformers

    def refuse(*args, **kwargs):
        raise ImportError("Qwen2VLVideoProcessor requires the Torchvision library")

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", refuse)
    model = LocalVLM(str(qwen_dir), image_size=32, protocol="ranked", max_new_tokens=4, dtype="float32")
    assert type(model.processor).__name__ == "Qwen2VLProcessor"
    assert getattr(model.processor, "video_processor", None) is None
    result = model.rank(_frames(), QUESTION, CANDIDATES, "basketball")
    assert result.ranking[0] in range(len(CANDIDATES))


def test_loglik_of_the_choice_numbers_equals_a_direct_computation(vlm):
    frames = _frames(3)
    result = vlm.rank(frames, QUESTION, CANDIDATES, "basketball")
    assert isinstance(result, VLMResult) and result.loglik.shape == (len(CANDIDATES),)

    inputs, prompt, n = vlm.prompt_inputs(frames, QUESTION, CANDIDATES, "basketball")
    assert n == 3 and prompt == result.prompt == build_prompt(QUESTION, CANDIDATES, "basketball")
    assert int((inputs["input_ids"] == vlm.tokenizer.convert_tokens_to_ids("<|image_pad|>")).sum()) > 0
    with torch.no_grad():
        logp = torch.log_softmax(vlm.model(**inputs).logits[0, -1].double(), dim=-1)
    for i in range(len(CANDIDATES)):
        (number,) = vlm.tokenizer(str(i + 1), add_special_tokens=False)["input_ids"]
        assert result.loglik[i] == pytest.approx(float(logp[number]), abs=1e-4)
    by_loglik = sorted(range(len(CANDIDATES)), key=lambda i: -result.loglik[i])
    assert result.ranking == result.loglik_ranking == by_loglik


def _favour(model, offsets: dict[str, float]):
    """A hook on the LM head that adds `offsets` to the logits of those tokens: the tiny random
    model then answers with a digit, as a real one asked for "the choice number" does."""
    bias = torch.zeros(model.model.lm_head.out_features)
    for token, value in offsets.items():
        bias[model.tokenizer.convert_tokens_to_ids(token)] = value
    return model.model.lm_head.register_forward_hook(lambda mod, inputs, out: out + bias.to(out.dtype))


@pytest.mark.parametrize("offsets", [{"3": 40.0, "1": 39.0}, {"2": 41.0, "5": 40.5, "4": 40.0}])
def test_ranked_top1_is_the_first_digit_of_the_free_answer(vlm, qwen_dir, offsets):
    actionatlas = LocalVLM(str(qwen_dir), image_size=32, max_new_tokens=8, dtype="float32")
    hooks = [_favour(m, offsets) for m in (vlm, actionatlas)]
    try:
        ranked = vlm.rank(_frames(2), QUESTION, CANDIDATES, "basketball")
        free = actionatlas.rank(_frames(2), QUESTION, CANDIDATES, "basketball")
    finally:
        for h in hooks:
            h.remove()
    best = max(offsets, key=offsets.get)
    assert ranked.answer_text.strip()[0] == best and ranked.mode == "free"
    assert ranked.answer == first_digit(ranked.answer_text, 5) == ranked.ranking[0] == int(best) - 1
    assert free.answer == ranked.answer and free.loglik is None and free.ranking == [free.answer]
    assert free.prompt == ranked.prompt  # the same question under both protocols


def test_a_free_answer_without_a_digit_is_a_miss(qwen_dir):
    model = LocalVLM(str(qwen_dir), image_size=32, max_new_tokens=3, dtype="float32")
    hook = _favour(model, {str(d): -1e4 for d in range(10)} | {"<|im_end|>": -1e4, "<|endoftext|>": -1e4})
    try:
        result = model.rank(_frames(2), None, CANDIDATES, "basketball")
    finally:
        hook.remove()
    assert result.answer is None and result.ranking == [] and len(result.answer_text) > 0


def test_qwen2vl_is_tried_again_with_smaller_frames_when_it_fails(qwen_dir, monkeypatch):
    model = LocalVLM(str(qwen_dir), max_new_tokens=2, dtype="float32")
    tried = []
    real = model._answer

    def failing(frames, question, cands, domain, max_pixels):
        tried.append(max_pixels)
        if max_pixels > 252 * 252:
            raise RuntimeError("CUDA out of memory")
        return real(frames, question, cands, domain, max_pixels)

    monkeypatch.setattr(model, "_answer", failing)
    frames = _frames(2, h=480, w=640)
    result = model.rank(frames, QUESTION, CANDIDATES, "basketball")
    assert tried == [336 * 336, 308 * 308, 280 * 280, 252 * 252] and result.max_pixels == 252 * 252
    image = model._images(frames, 336 * 336)[0]
    assert (
        image.shape[0] * image.shape[1] <= 336 * 336 and abs(image.shape[1] / image.shape[0] - 4 / 3) < 0.01
    )

    def always(frames, question, cands, domain, max_pixels):
        tried.append(max_pixels)
        raise RuntimeError("CUDA out of memory")

    tried.clear()
    monkeypatch.setattr(model, "_answer", always)
    with pytest.raises(VLMAnswerError, match="every frame size"):
        model.rank(frames, QUESTION, CANDIDATES, "basketball")
    assert tried == list(QWEN2VL_PIXELS)


def test_half_precision_ranks_close_to_float32(vlm, qwen_dir):
    half = LocalVLM(str(qwen_dir), image_size=32, dtype="bfloat16", protocol="ranked", max_new_tokens=4)
    assert half.identity.endswith("|bfloat16") and half.model.dtype == torch.bfloat16
    frames = _frames(2)
    result = half.rank(frames, QUESTION, CANDIDATES, "basketball")
    assert result.ranking[0] in range(len(CANDIDATES))
    reference = vlm.rank(frames, QUESTION, CANDIDATES, "basketball").loglik
    np.testing.assert_allclose(result.loglik, reference, rtol=0.05, atol=0.5)


def test_frames_and_image_size_are_recorded_and_used(qwen_dir):
    small = LocalVLM(str(qwen_dir), image_size=16, frames=2, max_new_tokens=2, dtype="float32")
    large = LocalVLM(
        str(qwen_dir), image_size=None, frames=2, protocol="ranked", max_new_tokens=2, dtype="float32"
    )
    frames = _frames(2, h=48, w=64)
    inputs_small, _, _ = small.prompt_inputs(frames, None, CANDIDATES, None)
    inputs_large, _, _ = large.prompt_inputs(frames, None, CANDIDATES, None)
    assert inputs_small["pixel_values"].shape[0] < inputs_large["pixel_values"].shape[0]
    result = small.rank(frames, None, CANDIDATES, None)
    assert (result.frames, result.image_size) == (2, 16)
    with pytest.raises(ActAlignError, match="frames per clip"):
        LocalVLM(str(qwen_dir), frames=0)


def test_local_vlm_errors(qwen_dir, clip_dir, tmp_path, vlm):
    with pytest.raises(ActAlignError, match="No VLM directory"):
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
    assert isinstance(load_vlm(f"local:{qwen_dir}", image_size=32, dtype="float32"), LocalVLM)


# ---------------------------------------------------------------------- server


def _images_of(request):
    parts = request["messages"][0]["content"]
    return [p for p in parts if p["type"] == "image_url"], [p for p in parts if p["type"] == "text"]


def test_the_server_receives_the_frames_as_image_parts():
    from PIL import Image

    frames = _frames(4, h=300, w=500)
    with FakeLLM() as fake:
        fake.answer(("answer", json.dumps({"answer": "2"})))
        vlm = ServerVLM("some-vlm", base_url=fake.url, image_size=64, max_retries=0, protocol="ranked")
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
    assert schema["properties"]["answer"]["enum"] == ["1", "2", "3", "4", "5"]
    assert request["model"] == "some-vlm"


@pytest.mark.parametrize(
    ("answer", "expected"), [("2", 1), ("2. Pike jump", 1), ("I pick 3", 2), ("B", None), ("", None)]
)
def test_the_actionatlas_protocol_asks_plainly_and_scores_the_first_digit(answer, expected):
    with FakeLLM() as fake:
        fake.answer(("answer", answer))
        vlm = ServerVLM("some-vlm", base_url=fake.url, max_retries=0)
        result = vlm.rank(_frames(2, h=30, w=40), QUESTION, CANDIDATES, "basketball")
        request = fake.requests[-1]
    assert (result.answer, result.answer_text, result.mode, result.protocol) == (
        expected,
        answer,
        "prompt",
        "actionatlas",
    )
    assert "response_format" not in request and "guided_choice" not in request
    assert _images_of(request)[1][0]["text"] == build_prompt(QUESTION, CANDIDATES, "basketball")
    assert result.ranking == ([] if expected is None else [expected])
    assert (vlm.frames, vlm.image_size) == (16, None)  # ActionAtlas's count, the frames' own size
    images = _images_of(request)[0]
    image = base64.b64decode(images[0]["image_url"]["url"].split(",", 1)[1])
    from PIL import Image

    assert Image.open(io.BytesIO(image)).size == (40, 30)


def test_a_qwen2vl_server_gets_frames_of_at_most_336_squared_then_smaller_on_failure():
    from PIL import Image

    with FakeLLM() as fake:
        fake.answer(
            ("status", 400, "maximum context length exceeded"), ("status", 400, "too long"), ("answer", "4")
        )
        vlm = ServerVLM("Qwen/Qwen2-VL-7B-Instruct", base_url=fake.url, max_retries=0)
        result = vlm.rank(_frames(2, h=480, w=640), QUESTION, CANDIDATES, "basketball")
        sizes = [
            Image.open(
                io.BytesIO(base64.b64decode(_images_of(r)[0][0]["image_url"]["url"].split(",", 1)[1]))
            ).size
            for r in fake.requests
        ]
    assert result.answer == 3 and result.max_pixels == 280 * 280
    for (w, h), limit in zip(sizes, QWEN2VL_PIXELS):
        assert w * h <= limit and w * h > 0.95 * limit and abs(w / h - 4 / 3) < 0.01
    assert vlm.frames == 16


def test_a_garbage_answer_is_a_miss_not_a_crash():
    with FakeLLM() as fake:
        vlm = ServerVLM("some-vlm", base_url=fake.url, max_retries=0, protocol="ranked")
        for garbage in ("I cannot tell from these frames.", "", "{}", '{"answer": 3}', "Z"):
            fake.answer(("answer", garbage))
            result = vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
            assert result.answer is None and result.answer_text == garbage and result.ranking == []


def test_the_server_falls_back_to_guided_choice_then_keeps_it():
    with FakeLLM(response_formats=()) as fake:  # refuses response_format, ignores guided_choice
        fake.answer(("answer", "2. Putback dunk"))
        vlm = ServerVLM("some-vlm", base_url=fake.url, max_retries=0, protocol="ranked")
        first = vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
        second = vlm.rank(_frames(), QUESTION, CANDIDATES, "basketball")
        requests = fake.requests
    assert (first.answer, first.mode, second.mode) == (1, "guided_choice", "guided_choice")
    assert "response_format" in requests[0] and "guided_choice" not in requests[0]
    assert requests[1]["guided_choice"] == ["1", "2", "3", "4", "5"] and "response_format" not in requests[1]
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
        fake.answer(("slow", 2.0, "1"))
        slow = ServerVLM("some-vlm", base_url=fake.url, max_retries=0, timeout=0.5)
        with pytest.raises(ActAlignError, match=r"gave up after 0\.[5-9] s \(the limit is 0\.5 s"):
            slow.rank(_frames(), QUESTION, CANDIDATES, "basketball")
    with pytest.raises(ActAlignError, match="Cannot reach"):
        ServerVLM("m", base_url=fake.url, max_retries=0).rank(_frames(), None, CANDIDATES, None)
    with pytest.raises(ActAlignError, match="OPENAI_BASE_URL"):
        ServerVLM("m")


class _Server:
    """A loopback server whose POST handler is `reply(handler)`."""

    def __init__(self, reply):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    reply(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _body(data: bytes):
    def reply(h):
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return reply


def _completion(content) -> bytes:
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    ).encode()


@pytest.mark.parametrize(
    "body",
    [
        b'{"object": "list", "data": []}',
        b"<html>proxy error</html>",
        b'{"choices": [5]}',
        b'{"choices": []}',
        b'{"choices": [{"message": 3}]}',
        b'{"choices": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
    ],
)
@pytest.mark.parametrize("protocol", ["actionatlas", "ranked"])
def test_a_body_that_is_no_chat_completion_is_an_error_never_a_miss(body, protocol):
    with _Server(_body(body)) as server:
        vlm = ServerVLM("m", base_url=server.url, max_retries=0, protocol=protocol)
        with pytest.raises(VLMAnswerError, match=r"VLM server .* sent .*not a chat completion"):
            vlm.rank(_frames(), None, CANDIDATES, None)


def test_a_deeply_nested_answer_is_one_error():
    nested = "[" * 200_000
    with _Server(_body(_completion(nested))) as server:
        ranked = ServerVLM("m", base_url=server.url, max_retries=0, protocol="ranked")
        with pytest.raises(VLMAnswerError, match="nested too deeply"):
            ranked.rank(_frames(), None, CANDIDATES, None)
        actionatlas = ServerVLM("m", base_url=server.url, max_retries=0)
        assert actionatlas.rank(_frames(), None, CANDIDATES, None).answer is None  # no digit: a miss


def _trickle(h):
    """Headers, then one byte of a body every 0.1 s, for 60 s."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    for _ in range(600):
        h.wfile.write(b" ")
        h.wfile.flush()
        time.sleep(0.1)


def _silent(h):
    time.sleep(30)


@pytest.mark.parametrize("reply", [_trickle, _silent])
def test_one_deadline_for_every_answer_retries_included(reply, monkeypatch):
    monkeypatch.setenv("ACTALIGN_VLM_TIMEOUT", "1.5")
    with _Server(reply) as server:
        vlm = ServerVLM("m", base_url=server.url, max_retries=2)
        assert vlm.timeout == 1.5
        began = time.monotonic()
        with pytest.raises(
            ActAlignError, match=r"gave up after 1\.[5-9] s \(the limit is 1\.5 s per answer, retries"
        ):
            vlm.rank(_frames(), None, CANDIDATES, None)
        assert time.monotonic() - began < 3.0


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("ACTALIGN_VLM_TIMEOUT", raising=False)
    monkeypatch.setenv("ACTALIGN_LLM_TIMEOUT", "7")
    assert ServerVLM("m").timeout == 7.0
    monkeypatch.setenv("ACTALIGN_VLM_TIMEOUT", "3")
    assert ServerVLM("m").timeout == 3.0
    monkeypatch.setenv("ACTALIGN_VLM_TIMEOUT", "soon")
    with pytest.raises(ActAlignError, match="ACTALIGN_VLM_TIMEOUT must be a positive number"):
        ServerVLM("m")


def test_server_vlm_from_spec_and_environment(monkeypatch):
    with FakeLLM() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
        fake.answer(("answer", "5"))
        vlm = load_vlm("some-vlm", frames=4, image_size=32)
        assert isinstance(vlm, ServerVLM) and vlm.identity == f"server:{fake.url}|some-vlm"
        assert vlm.rank(_frames(4), None, CANDIDATES, None).answer == 4
