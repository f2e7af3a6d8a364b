"""Video LLM baselines (the paper's Table 2 VLM rows): a vision-language model answers the clip's
multiple-choice question from frames of the clip, under one of two protocols.

    kind, where = parse_vlm_spec("local:Qwen/Qwen2-VL-2B-Instruct")   # or a server's model name
    vlm = load_vlm("local:Qwen/Qwen2-VL-2B-Instruct", protocol="actionatlas")
    result = vlm.rank(frames, question, candidates, domain)
    result.answer       # index of the answer (None: it named no choice, a miss)
    result.answer_text  # the model's answer as written
    result.loglik       # (M,) "ranked" in process only: log P(choice number | frames, prompt)

`protocol="actionatlas"` (the default) is how the ActionAtlas benchmark measured the video-LLM
numbers the paper's Table 2 quotes (github.com/mrsalehi/action-atlas: action_atlas/prompts.py
MC_PROMPT, eval_qwen2_vl.py, utils/eval_utils.py compute_final_accuracy):
  * the prompt: MC_PROMPT, word for word: its fixed instruction, the clip's question (the
    manifest's `question`; without one, a question in ActionAtlas's style), then the choices
    numbered "1. name" to "5. name", one a line;
  * the frames: every frame of the clip decoded, k kept at np.linspace(0, n - 1, k, dtype=int):
    k = 64 for VideoChat2, 16 for every other model (Qwen2-VL-7B, VideoLLaMA, mPLUG-Owl, GPT-4o;
    ActionAtlas's code does not give LLaVA-Next-Video's count, 16 is assumed); Qwen2-VL's frames
    are limited to 336*336 pixels (aspect kept) and tried again at 308², 280², 252², 224² when the
    model fails, as eval_qwen2_vl.py does; other models get the frames at their own size;
  * the answer: generated freely (greedy), then scored by its first digit (the digits of the
    answer, the first one taken, as the choice number); an answer without one, a digit that is no
    choice, or an error is wrong. Top-1 only.
`protocol="ranked"` is ours: the same numbered prompt, 8 frames at the segment centres, shrunk to
448 px on the longer side; in process every choice is scored by the log-likelihood of its number
(the tokens of "2" after the prompt), so top-2/3 exist, and the free answer is kept beside it (its
first digit is the top-1 whenever the model answers with a digit); on a server the answer is
constrained to the choice numbers where the server can (`response_format` json_schema with the
numbers as an enum, else vLLM's `guided_choice`) and read leniently (the number, the name, "2. name").

In process (`LocalVLM`): transformers' image-text-to-text models (Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
LLaVA-OneVision, ...), the frames as images through the model's chat template. On an
OpenAI-compatible server (`ServerVLM`: vLLM, llama.cpp, Ollama, OpenAI), the frames go as JPEG
`image_url` parts; every answer has one deadline, retries and smaller frame sizes included
($ACTALIGN_VLM_TIMEOUT, else $ACTALIGN_LLM_TIMEOUT, default 120 s), and its body is read strictly:
a reply that is not a chat completion with an answer (no choices, a choice that is no message,
JSON nested too deeply) is an error (`VLMAnswerError`), never taken as the model naming no choice.
"""

from __future__ import annotations

import base64
import copy
import functools
import inspect
import io
import json
import math
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from actalign.baselines.common import (
    dtype_kwargs,
    parameter_count,
    resolve_dtype,
    segment_centres,
    uint8_frames,
)
from actalign.errors import ActAlignError
from actalign.hub import first_line, load_checkpoint, quiet_transformers

PROTOCOLS = ("actionatlas", "ranked")
DEFAULT_PROTOCOL = "actionatlas"
# action_atlas/prompts.py MC_PROMPT, word for word (eval_qwen2_vl.py's MC names {choices} {options})
MC_PROMPT = (
    "Answer the given question according to the video. Only output the choice number and nothing else. "
    "When answering the question consider all legal and illegal moves and drills.\n{question}\n{choices}"
)
ACTIONATLAS_FRAMES = 16  # Qwen2-VL-7B, VideoLLaMA, mPLUG-Owl, GPT-4o
FRAMES_BY_MODEL = ((re.compile(r"videochat", re.I), 64),)  # the models ActionAtlas gave other counts
QWEN2VL = re.compile(r"qwen2[-_ ]?vl", re.I)  # Qwen2-VL, not Qwen2.5-VL
QWEN2VL_PIXELS = tuple((28 * i) * (28 * i) for i in range(12, 7, -1))  # 336², 308², ... 224²
DEFAULT_FRAMES = 8  # the ranked protocol
DEFAULT_IMAGE_SIZE = 448  # the ranked protocol: longer side, pixels
DEFAULT_TIMEOUT = 120.0  # seconds for one answer from a server, retries included
MAX_NEW_TOKENS = 512  # the answer's length, as eval_qwen2_vl.py generates it
ANSWER_KEPT = 2000  # characters of an answer kept in a row (escaped)
SERVER_MODES = ("json_schema", "guided_choice", "prompt")  # answer constraints, best first


class VLMAnswerError(ActAlignError):
    """The model or its server gave no usable reply for this clip (a malformed body, a failure at
    every frame size): ActionAtlas counts it wrong; eval counts it apart from the misses."""


@dataclass
class VLMResult:
    """One clip's answer.

    answer:      index of the chosen candidate, None when the answer named none (a miss)
    answer_text: the model's answer as written
    loglik:      (M,) log-probability of each choice's number ("ranked" in process, else None)
    frames:      how many frames the model saw; image_size: the longer-side bound they were shrunk
                 to, or max_pixels: the pixel bound (Qwen2-VL under "actionatlas")
    mode:        how the answer was constrained: "free" (generated, scored by its first digit),
                 "json_schema", "guided_choice" or "prompt"
    """

    answer: int | None
    answer_text: str
    loglik: np.ndarray | None
    frames: int
    image_size: int | None
    mode: str
    prompt: str = field(default="", repr=False)
    protocol: str = DEFAULT_PROTOCOL
    max_pixels: int | None = None

    @property
    def loglik_ranking(self) -> list[int]:
        """Candidates by log-likelihood, best first (empty without log-likelihoods)."""
        if self.loglik is None:
            return []
        return [int(i) for i in np.argsort(-self.loglik, kind="stable")]

    @property
    def ranking(self) -> list[int]:
        """Candidates best first: by log-likelihood where there are log-likelihoods ("ranked" in
        process), else the answer alone (empty on a miss): top-1 only."""
        if self.loglik is not None:
            return self.loglik_ranking
        return [] if self.answer is None else [self.answer]


# ---------------------------------------------------------------------- spec, prompt, parsing


def parse_vlm_spec(spec: str) -> tuple[str, str]:
    """`--vlm local:ID_OR_DIR` -> ("local", ID_OR_DIR); `--vlm MODEL` -> ("server", MODEL)."""
    spec = (spec or "").strip()
    if spec.lower().startswith("local:"):
        where = spec[len("local:") :].strip()
        if not where:
            raise ActAlignError("`vlm=local:` needs a model: local:HUB_ID or local:DIRECTORY.")
        return "local", where
    if not spec:
        raise ActAlignError(
            "`vlm` needs a model: local:HUB_ID_OR_DIR to run one in-process, or the name of a model "
            "on the OpenAI-compatible server at OPENAI_BASE_URL."
        )
    return "server", spec


def check_protocol(protocol: str | None) -> str:
    protocol = DEFAULT_PROTOCOL if protocol is None else str(protocol).strip().lower()
    if protocol not in PROTOCOLS:
        raise ActAlignError(f"Unknown VLM protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}.")
    return protocol


def protocol_frames(model: str, protocol: str) -> int:
    """Frames per clip a protocol gives `model` (its name, hub id or path): ActionAtlas's count for
    that model (64 for VideoChat2, else 16), or the ranked protocol's 8."""
    if check_protocol(protocol) == "ranked":
        return DEFAULT_FRAMES
    return next((k for pattern, k in FRAMES_BY_MODEL if pattern.search(model)), ACTIONATLAS_FRAMES)


def pixel_limits(model: str, protocol: str, model_type: str | None = None) -> tuple[int | None, ...]:
    """The frames' pixel bounds to try in turn (None: no bound): Qwen2-VL under "actionatlas" gets
    336² and smaller ones on failure; every other model and protocol one try."""
    qwen = QWEN2VL.search(model) or model_type == "qwen2_vl"
    return QWEN2VL_PIXELS if check_protocol(protocol) == "actionatlas" and qwen else (None,)


def vlm_settings(
    spec: str, protocol: str | None = None, frames: int | None = None, image_size: int | None = None
) -> dict:
    """What a run records of a VLM's protocol, before any model is loaded: the protocol, frames per
    clip, the longer-side bound and (Qwen2-VL under "actionatlas") the pixel bounds tried in turn."""
    protocol = check_protocol(protocol)
    _, where = parse_vlm_spec(spec)
    out = {"protocol": protocol, "frames": frames or protocol_frames(where, protocol)}
    if image_size is None and protocol == "ranked":
        image_size = DEFAULT_IMAGE_SIZE
    out["image_size"] = image_size
    limits = pixel_limits(where, protocol)
    if limits != (None,):
        out["max_pixels"] = list(limits)
    return out


def load_vlm(spec: str, **settings) -> LocalVLM | ServerVLM:
    """The VLM a `--vlm` spec names; `settings` go to its class (protocol, frames, image_size, ...)."""
    kind, where = parse_vlm_spec(spec)
    if kind == "local":
        return LocalVLM(where, **settings)
    return ServerVLM(where, **settings)


def option_labels(count: int) -> list[str]:
    """The choice numbers: 1, 2, 3, ..."""
    return [str(i + 1) for i in range(count)]


def default_question(domain: str | None) -> str:
    """A question in ActionAtlas's style ("What best describes the move made by ...?") for a clip
    whose manifest row gives none."""
    sport = f"{domain.strip()} " if domain and domain.strip() else ""
    return f"What best describes the {sport}move made in the video?"


def build_prompt(question: str | None, candidates: Sequence[str], domain: str | None = None) -> str:
    """ActionAtlas's MC_PROMPT: its instruction, the question, the choices numbered from 1."""
    ask = (question or "").strip() or default_question(domain)
    choices = "\n".join(f"{label}. {c}" for label, c in zip(option_labels(len(candidates)), candidates))
    return MC_PROMPT.format(question=ask, choices=choices)


def linspace_indices(n_available: int, count: int) -> np.ndarray:
    """ActionAtlas's frame choice: np.linspace(0, n - 1, count, dtype=int) of the n decoded frames."""
    if isinstance(n_available, bool) or int(n_available) != n_available or n_available < 1:
        raise ActAlignError(f"The clip has no frames to sample (got {n_available}).")
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise ActAlignError(f"The number of frames to sample must be a whole number >= 1, got {count!r}.")
    return np.linspace(0, int(n_available) - 1, int(count), dtype=int).astype(np.int64)


def first_digit(text: str | None, count: int) -> int | None:
    """ActionAtlas's scoring of an answer: its digits, the first one taken, as a choice number
    (utils/eval_utils.py compute_final_accuracy). The index of that choice, or None when the answer
    has no digit or its first digit is no choice (0, 7 of 5 choices, a superscript two)."""
    digits = [c for c in str(text or "").strip() if c.isdigit()]
    if not digits or digits[0] not in "0123456789":
        return None
    number = int(digits[0])
    return number - 1 if 1 <= number <= count else None


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .,;:!\"'`*")


def _loads(text: str):
    """JSON of an answer, None when it is none; nesting too deep to read is a VLMAnswerError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise VLMAnswerError(
            "The VLM's answer is JSON nested too deeply to read; check the server."
        ) from None
    except ValueError:
        return None


def match_answer(text: str | None, candidates: Sequence[str]) -> int | None:
    """The candidate an answer names, leniently (the ranked protocol on a server): a JSON
    {"answer": ...} unwrapped; then the exact text; the text ignoring case, spacing, quotes and end
    punctuation; a choice number ("2", "(2)", "2. Putback dunk", "Option 2"); the one candidate
    the answer contains (the longest, when the others it contains are all part of it). None when
    nothing fits."""
    if text is None:
        return None
    text = str(text).strip()
    parsed = _loads(text)
    if isinstance(parsed, dict) and len(parsed) == 1:
        parsed = next(iter(parsed.values()))
    if isinstance(parsed, str):
        text = parsed.strip()
    if not text:
        return None
    if text in candidates:
        return list(candidates).index(text)
    normed = [_norm(c) for c in candidates]
    answer = _norm(text)
    if answer in normed:
        return normed.index(answer)
    labels = option_labels(len(candidates))
    m = re.fullmatch(
        r"(?:(?:the\s+)?(?:correct\s+)?(?:option|answer|choice)(?:\s+(?:is|number))?:?\s*)?[(\[]?(\d{1,3})[)\].:]?(?:\s+(.*))?",
        answer,
    )
    if m:
        rest = _norm(m.group(2) or "")
        if rest in normed:
            return normed.index(rest)
        if m.group(1) in labels and not rest:
            return labels.index(m.group(1))
    contained = [i for i, c in enumerate(normed) if c and re.search(rf"(?<!\w){re.escape(c)}(?!\w)", answer)]
    if len(contained) == 1:
        return contained[0]
    if contained:
        longest = max(contained, key=lambda i: len(normed[i]))
        if all(normed[i] in normed[longest] for i in contained):
            return longest
    return None


def _check_candidates(candidates: Sequence[str]) -> list[str]:
    if isinstance(candidates, str):
        raise ActAlignError("The candidates must be a list of texts, not one text.")
    cands = [str(c) for c in candidates]
    if not cands:
        raise ActAlignError("A VLM needs at least one candidate to choose from.")
    if any(not c.strip() for c in cands):
        raise ActAlignError("A candidate is empty; give every candidate a text.")
    return cands


def fit_frame(frame: np.ndarray, image_size: int | None, max_pixels: int | None = None) -> np.ndarray:
    """The frame shrunk (never enlarged, aspect kept) so that its longer side is at most
    `image_size` and its area at most `max_pixels`."""
    h, w = frame.shape[:2]
    scale = 1.0
    if image_size is not None and max(h, w) > image_size:
        scale = image_size / max(h, w)
    if max_pixels is not None and h * w * scale * scale > max_pixels:
        scale = math.sqrt(max_pixels / (h * w))
    if scale >= 1.0:
        return frame
    from PIL import Image

    size = (max(1, math.floor(w * scale)), max(1, math.floor(h * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


def _settings(frames: int | None, image_size: int | None, protocol: str, model: str) -> tuple:
    """(protocol, frames, image_size), the protocol's defaults where None."""
    protocol = check_protocol(protocol)
    frames = protocol_frames(model, protocol) if frames is None else frames
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ActAlignError(f"The VLM's frames per clip must be a whole number >= 1, got {frames!r}.")
    if image_size is None and protocol == "ranked":
        image_size = DEFAULT_IMAGE_SIZE
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16
    ):
        raise ActAlignError(f"The VLM's image size must be a whole number >= 16 pixels, got {image_size!r}.")
    return protocol, frames, image_size


class _Frames:
    """Shared by both VLMs: the protocol, the frame settings and the sampling over a clip."""

    protocol: str
    frames: int
    image_size: int | None
    limits: tuple[int | None, ...] = (None,)

    def frame_indices(self, n_available: int, count: int | None = None) -> np.ndarray:
        """`count` (default: the `frames` setting) indices into `n_available` decoded frames: the
        protocol's choice (ActionAtlas's linspace, or the segment centres of "ranked")."""
        count = self.frames if count is None else count
        if self.protocol == "actionatlas":
            return linspace_indices(n_available, count)
        return segment_centres(n_available, count)

    def _images(self, frames, max_pixels: int | None = None) -> list[np.ndarray]:
        if isinstance(frames, np.ndarray):
            frames = list(uint8_frames(frames))
        images = [uint8_frames(np.asarray(f)[None])[0] for f in frames]
        if not images:
            raise ActAlignError("A VLM needs at least one frame of the clip.")
        return [fit_frame(f, self.image_size, max_pixels) for f in images]

    def _result(self, answer, text, loglik, n, mode, prompt, max_pixels) -> VLMResult:
        return VLMResult(
            answer=answer,
            answer_text=text,
            loglik=loglik,
            frames=n,
            image_size=self.image_size,
            mode=mode,
            prompt=prompt,
            protocol=self.protocol,
            max_pixels=max_pixels,
        )


# ---------------------------------------------------------------------- in process


class LocalVLM(_Frames):
    """A transformers image-text-to-text model, in this process (a hub id or a save_pretrained folder)."""

    def __init__(
        self,
        name_or_path: str,
        device: str | None = None,
        dtype: str | None = None,
        protocol: str | None = None,
        frames: int | None = None,
        image_size: int | None = None,
        max_new_tokens: int = MAX_NEW_TOKENS,
    ) -> None:
        from actalign.encoders.base import select_device

        self.name_or_path = str(name_or_path)
        self.protocol, self.frames, self.image_size = _settings(
            frames, image_size, protocol, self.name_or_path
        )
        self.max_new_tokens = int(max_new_tokens)
        self.device = select_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        load = functools.partial(_load_vlm, dtype=self.dtype)
        (self.model, self.processor), source = load_checkpoint(self.name_or_path, load, "VLM")
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = self.processor.tokenizer
        self.identity = f"local:{source}|{str(self.dtype).removeprefix('torch.')}"
        self.parameters = parameter_count(self.model)
        self.limits = pixel_limits(
            self.name_or_path, self.protocol, getattr(self.model.config, "model_type", None)
        )
        self.mode = "free"
        forward = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._takes_cache_position = "cache_position" in forward
        self._end = self._end_token()
        self._stops = self._stop_tokens()

    # ------------------------------------------------------------------ setup

    def _template(self, messages: list[dict], add_generation_prompt: bool) -> str:
        owner = self.processor if getattr(self.processor, "chat_template", None) else self.tokenizer
        if not getattr(owner, "chat_template", None):
            raise ActAlignError(
                f"The VLM {self.name_or_path} has no chat template, which places its images; use an "
                "instruction-tuned checkpoint."
            )
        return owner.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _end_token(self) -> int:
        """The token that closes the model's answer: what its chat template writes right after an
        assistant message (Qwen's <|im_end|>), else its end-of-sequence token."""
        sentinel = "Zq7xK"
        user = [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
        for content in ([{"type": "text", "text": sentinel}], sentinel):
            try:
                text = self._template([*user, {"role": "assistant", "content": content}], False)
            except Exception:
                continue
            if sentinel in text:
                tail = text.split(sentinel, 1)[1].lstrip(" ")
                ids = self.tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
                if ids and ids[0] in self.tokenizer.all_special_ids:
                    return int(ids[0])
        eos = self.model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
        eos = self.tokenizer.eos_token_id if eos is None else eos
        if eos is None:
            raise ActAlignError(f"The VLM {self.name_or_path} declares no end-of-answer token.")
        return int(eos)

    def _stop_tokens(self) -> set[int]:
        """The tokens that end a generated answer: the end-of-answer token and every eos."""
        eos = self.model.generation_config.eos_token_id
        eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
        return {self._end, *(int(e) for e in eos if e is not None)}

    # ------------------------------------------------------------------ answering

    def prompt_inputs(
        self,
        frames,
        question: str | None,
        candidates: Sequence[str],
        domain: str | None,
        max_pixels: int | None = None,
    ):
        """(model inputs, prompt text, frame count) for the frames and the question, through the
        chat template and the model's processor."""
        images = self._images(frames, max_pixels)
        prompt = build_prompt(question, candidates, domain)
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        text = self._template([{"role": "user", "content": content}], True)
        with quiet_transformers():
            inputs = self.processor(text=[text], images=images, return_tensors="pt")
        return dict(inputs), prompt, len(images)

    def number_ids(self, index: int) -> list[int]:
        """The tokens of answering choice `index` (0-based) with its number ("1" for index 0)."""
        return list(self.tokenizer(str(index + 1), add_special_tokens=False)["input_ids"])

    def rank(self, frames, question: str | None, candidates: Sequence[str], domain: str | None) -> VLMResult:
        """The model's free answer, scored by its first digit; under "ranked" also every choice's
        log-likelihood of its number. Qwen2-VL under "actionatlas" is tried again with smaller
        frames when it fails; failing at every size is a VLMAnswerError."""
        cands = _check_candidates(candidates)
        for k, limit in enumerate(self.limits):
            try:
                return self._answer(frames, question, cands, domain, limit)
            except (RuntimeError, ValueError) as e:
                if len(self.limits) == 1:
                    raise
                if k == len(self.limits) - 1:
                    raise VLMAnswerError(
                        f"The VLM {self.name_or_path} failed on this clip at every frame size down to "
                        f"{limit} pixels ({first_line(e)}); use fewer frames (`vlm_frames`)."
                    ) from None
        raise AssertionError("unreachable")

    def _answer(self, frames, question, cands: list[str], domain, max_pixels) -> VLMResult:
        import torch

        inputs, prompt, n = self.prompt_inputs(frames, question, cands, domain, max_pixels)
        inputs = {k: _to(v, self.device, self.dtype) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs, use_cache=True)
            cache = _cache_of(out)
            first = out.logits[0, -1].float()
            loglik = None
            if self.protocol == "ranked":
                loglik = self._loglik(first, cache, [self.number_ids(i) for i in range(len(cands))])
            text = self.tokenizer.decode(self._generate(first, cache), skip_special_tokens=True)
        return self._result(first_digit(text, len(cands)), text, loglik, n, self.mode, prompt, max_pixels)

    def _step(self, ids, cache):
        """Logits of `ids` (B, L) after the tokens held in `cache` (which grows). transformers 4
        needs their positions (cache_position; Qwen2-VL otherwise restarts its M-RoPE positions
        at 0); transformers 5 reads them from the cache."""
        import torch

        kwargs = {self._cache_arg: cache}
        if self._takes_cache_position:
            start = cache.get_seq_length()
            kwargs["cache_position"] = torch.arange(start, start + ids.shape[1], device=self.device)
        return self.model(input_ids=ids, use_cache=True, **kwargs).logits.float()

    def _loglik(self, first, cache, answers: list[list[int]]) -> np.ndarray:
        """(M,) sum over each answer's tokens of log P(token | prompt, tokens before it), all answers
        in one batch: right padding cannot reach earlier positions (causal attention)."""
        import torch

        head = torch.log_softmax(first, dim=-1)
        total = np.array([float(head[a[0]]) for a in answers])
        longest = max(len(a) for a in answers)
        if longest > 1:
            pad = self._end
            rows = torch.tensor([a[:-1] + [pad] * (longest - len(a)) for a in answers], device=self.device)
            batch = copy.deepcopy(cache)
            batch.batch_repeat_interleave(len(answers))
            logp = torch.log_softmax(self._step(rows, batch), dim=-1)
            for i, a in enumerate(answers):
                following = torch.tensor(a[1:], device=self.device)
                total[i] += float(logp[i, : len(a) - 1].gather(-1, following[:, None]).sum())
        return total.astype(np.float64)

    def _generate(self, first, cache) -> list[int]:
        """Greedy decoding from the prompt (its first logits `first`), up to an end token, at most
        `max_new_tokens`; it stops once a digit is written, which is all the scoring reads."""
        import torch

        state = copy.deepcopy(cache)
        logits, chosen = first, []
        for _ in range(self.max_new_tokens):
            token = int(torch.argmax(logits))
            if token in self._stops:
                break
            chosen.append(token)
            if any(c.isdigit() for c in self.tokenizer.decode(chosen, skip_special_tokens=True)):
                break
            logits = self._step(torch.tensor([[token]], device=self.device), state)[0, -1]
        return chosen


def _to(v, device: str, dtype):
    import torch

    if not isinstance(v, torch.Tensor):
        return v
    return v.to(device, dtype=dtype) if v.is_floating_point() else v.to(device)


def _cache_of(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _load_vlm(where: str, local_files_only: bool, dtype=None):
    import transformers
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(where, local_files_only=local_files_only)
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            where, local_files_only=local_files_only, **dtype_kwargs(dtype)
        )
    except ValueError as e:
        if "Unrecognized configuration class" in str(e) or "AutoModelForImageTextToText" in str(e):
            raise ActAlignError(
                f"{where} is a '{config.model_type}' model, not an image-text-to-text model transformers "
                "can run (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, ...)."
            ) from None
        raise
    try:
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(where, local_files_only=local_files_only)
        if not hasattr(processor, "tokenizer") or not hasattr(processor, "image_processor"):
            raise TypeError("not a multimodal processor")
    except (ImportError, TypeError, AttributeError):
        # the video processors need torchvision; images need only the image processor + tokenizer
        processor = _images_only_processor(transformers, config, where, local_files_only)
    return model, processor


def _images_only_processor(transformers, config, where: str, local_files_only: bool):
    """The model's own processor class, loaded without its video processor: the image processor and
    the tokenizer (with the chat template) are all that images need."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    name = PROCESSOR_MAPPING_NAMES.get(config.model_type)
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if cls is None:
        raise ActAlignError(
            f"Cannot load the processor of {where} (a '{config.model_type}' model): it needs "
            "torchvision, and transformers names no processor class to assemble without it."
        )

    class ImagesOnly(cls):
        attributes: ClassVar[list[str]] = [  # transformers 4
            a for a in getattr(cls, "attributes", []) if "video" not in a
        ]

        @classmethod
        def get_attributes(klass):  # transformers 5
            return [a for a in super().get_attributes() if "video" not in a]

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = cls.__name__
    try:
        return ImagesOnly.from_pretrained(where, local_files_only=local_files_only)
    except ImportError as e:
        raise ActAlignError(
            f"Cannot load the processor of {where} without torchvision ({first_line(e)})."
        ) from None


# ---------------------------------------------------------------------- server


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def jpeg_data_uri(frame: np.ndarray, quality: int = 90) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_REJECTION_WORDS = (
    "response_format",
    "json_schema",
    "schema",
    "structured",
    "guided",
    "extra",
    "unrecognized",
    "unknown",
    "not supported",
    "unsupported",
)


def vlm_timeout() -> float:
    """Seconds one answer from a VLM server may take in all, retries included:
    $ACTALIGN_VLM_TIMEOUT, else $ACTALIGN_LLM_TIMEOUT (the script writer's), else 120."""
    for name in ("ACTALIGN_VLM_TIMEOUT", "ACTALIGN_LLM_TIMEOUT"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise ActAlignError(f"{name} must be a positive number of seconds, not {raw!r}.")
        return value
    return DEFAULT_TIMEOUT


def server_identity(model: str, base_url: str | None = None) -> str:
    """The server a VLM runs on and its model, as a run records it: `server:BASE_URL|MODEL`."""
    base = base_url or _env("ACTALIGN_VLM_BASE_URL", "OPENAI_BASE_URL") or "openai"
    return f"server:{base}|{str(model).strip()}"


class _Late(Exception):
    """The answer did not come before its deadline."""


class ServerVLM(_Frames):
    """A vision model on an OpenAI-compatible chat-completions server. Every answer has one
    deadline (`timeout` seconds, retries and smaller frame sizes included): the requests run in a
    worker thread that is abandoned (its connection closed) when the time is up, and no retry
    leaves after it, so a server that trickles its reply is stopped on time."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
        max_retries: int = 2,
        protocol: str | None = None,
        frames: int | None = None,
        image_size: int | None = None,
        jpeg_quality: int = 90,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise ActAlignError(
                "A VLM on a server needs the openai package: pip install 'actalign[llm]'."
            ) from None
        if not model or not str(model).strip():
            raise ActAlignError("Name the VLM's model on the server: `vlm=MODEL`.")
        self.model = str(model).strip()
        self.protocol, self.frames, self.image_size = _settings(frames, image_size, protocol, self.model)
        self.limits = pixel_limits(self.model, self.protocol)
        self.base_url = base_url or _env("ACTALIGN_VLM_BASE_URL", "OPENAI_BASE_URL")
        key = api_key or _env("ACTALIGN_VLM_API_KEY", "OPENAI_API_KEY")
        if key is None and self.base_url is None:
            raise ActAlignError(
                f"No server for the VLM {self.model!r}: set OPENAI_BASE_URL to an OpenAI-compatible "
                "server (vLLM, llama.cpp, Ollama) or OPENAI_API_KEY for OpenAI, or use `vlm=local:MODEL`."
            )
        self._openai = openai
        self._key = key or "not-needed"
        self.timeout = vlm_timeout() if timeout is None else float(timeout)
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ActAlignError(f"The VLM timeout must be a positive number of seconds, not {timeout!r}.")
        self.max_retries = max_retries
        self._deadline = math.inf  # of the answer being asked for (time.monotonic)
        self.client = self._new_client()
        self.jpeg_quality = jpeg_quality
        self.mode = "prompt" if self.protocol == "actionatlas" else SERVER_MODES[0]
        self._confirmed = self.protocol == "actionatlas"  # ActionAtlas asks with the prompt alone
        self.parameters = None  # not known from a server
        self.identity = server_identity(self.model, self.base_url)

    @property
    def where(self) -> str:
        return self.base_url or "api.openai.com"

    def _new_client(self):
        openai = self._openai
        hooks = {"request": [self._before_request]}  # no request (no retry) leaves after the deadline
        http = openai.DefaultHttpxClient(event_hooks=hooks) if hasattr(openai, "DefaultHttpxClient") else None
        return openai.OpenAI(
            base_url=self.base_url,
            api_key=self._key,
            timeout=self.timeout,
            max_retries=self.max_retries,
            http_client=http,
        )

    def _before_request(self, request) -> None:
        if time.monotonic() >= self._deadline:
            raise _Late

    def messages(self, frames, prompt: str, max_pixels: int | None = None) -> tuple[list[dict], int]:
        images = self._images(frames, max_pixels)
        parts = [
            {"type": "image_url", "image_url": {"url": jpeg_data_uri(f, self.jpeg_quality)}} for f in images
        ]
        parts.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": parts}], len(images)

    def _request(self, messages: list[dict], count: int) -> dict:
        kwargs = {"model": self.model, "messages": messages, "temperature": 0}
        numbers = option_labels(count)
        if self.mode == "json_schema":
            schema = {
                "type": "object",
                "properties": {"answer": {"type": "string", "enum": numbers}},
                "required": ["answer"],
                "additionalProperties": False,
            }
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        elif self.mode == "guided_choice":
            kwargs["extra_body"] = {"guided_choice": numbers}
        return kwargs

    def _create(self, messages: list[dict], count: int) -> bytes:
        """One completion's raw body; steps down the answer constraints while the server refuses them."""
        from actalign.scripts.llm import LLMWriter

        openai = self._openai
        while True:
            kwargs = self._request(messages, count)
            try:
                body = LLMWriter._post(self.client, kwargs)
            except openai.APIStatusError as e:
                last = self.mode == SERVER_MODES[-1]
                if last or self._confirmed or not _refuses_constraint(e):
                    raise
                self.mode = SERVER_MODES[SERVER_MODES.index(self.mode) + 1]
                continue
            self._confirmed = True
            return body

    def _in_time(self, work):
        """`work()` in a worker thread, given up (its connection closed) at the answer's deadline."""
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, work()))
            except BaseException as e:  # handed to the caller's thread
                outcome.append((False, e))

        thread = threading.Thread(target=run, name="actalign-vlm-request", daemon=True)
        thread.start()
        thread.join(max(0.0, self._deadline - time.monotonic()))
        if not outcome:
            abandoned, self.client = self.client, self._new_client()
            abandoned.close()  # the worker stops at its next read, and no retry goes out
            raise _Late
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def rank(self, frames, question: str | None, candidates: Sequence[str], domain: str | None) -> VLMResult:
        """The server's answer to the numbered question, scored by the protocol (first digit, or
        read leniently under "ranked"); no ranking (loglik None). Qwen2-VL under "actionatlas" is
        asked again with smaller frames when the server fails on them."""
        cands = _check_candidates(candidates)
        prompt = build_prompt(question, cands, domain)
        began = time.monotonic()
        self._deadline = began + self.timeout
        try:
            for k, limit in enumerate(self.limits):
                messages, n = self.messages(frames, prompt, limit)
                try:
                    body = self._call(messages, len(cands))
                except self._openai.APIStatusError as e:  # 400, 413, 422, 500: perhaps too many pixels
                    if k < len(self.limits) - 1:
                        continue
                    failed = (
                        f"The VLM server at {self.where} failed (HTTP {e.status_code}: {_server_message(e)})"
                    )
                    if len(self.limits) == 1:
                        raise ActAlignError(failed + ".") from None
                    raise VLMAnswerError(f"{failed} at every frame size down to {limit} pixels.") from None
                text = self._text(body)
                if self.protocol == "actionatlas":
                    answer = first_digit(text, len(cands))
                else:
                    answer = match_answer(text, cands)
                return self._result(answer, text, None, n, self.mode, prompt, limit)
        except _Late:
            raise ActAlignError(
                f"The VLM at {self.where} did not answer in time: gave up after "
                f"{time.monotonic() - began:.1f} s (the limit is {self.timeout:g} s per answer, retries "
                "included); raise ACTALIGN_VLM_TIMEOUT or use fewer or smaller frames."
            ) from None
        finally:
            self._deadline = math.inf
        raise AssertionError("unreachable")

    def _call(self, messages: list[dict], count: int) -> bytes:
        """The raw body of one answer, every failure but a status to retry smaller as one sentence."""
        from actalign.scripts.llm import _BadBody, _transport_errors

        openai = self._openai
        timeouts, broken = _transport_errors()
        try:
            return self._in_time(lambda: self._create(messages, count))
        except (openai.APITimeoutError, *timeouts):
            raise _Late from None
        except openai.APIConnectionError:
            if time.monotonic() >= self._deadline:
                raise _Late from None
            raise ActAlignError(
                f"Cannot reach the VLM server at {self.where}; check OPENAI_BASE_URL."
            ) from None
        except openai.AuthenticationError:
            raise ActAlignError(
                f"The VLM server at {self.where} refused the API key; check OPENAI_API_KEY."
            ) from None
        except openai.NotFoundError:
            raise ActAlignError(
                f"The VLM server at {self.where} has no model {self.model!r}; check `vlm`."
            ) from None
        except openai.APIStatusError as e:
            if e.status_code in (400, 413, 422, 500):
                raise
            raise ActAlignError(
                f"The VLM server at {self.where} failed (HTTP {e.status_code}: {_server_message(e)})."
            ) from None
        except broken:
            raise ActAlignError(
                f"The connection to the VLM server at {self.where} broke off in the middle of its answer; "
                "try again."
            ) from None
        except _BadBody as e:
            raise self._bad(str(e)) from None
        except (openai.APIError, ValueError) as e:
            raise self._bad(first_line(e)) from None

    def _text(self, body: bytes) -> str:
        """The answer's text; a body that is not a chat completion with an answer is a VLMAnswerError."""
        from actalign.scripts.llm import _BadBody, completion_text

        try:
            text = completion_text(body)
        except _BadBody as e:
            raise self._bad(str(e)) from None
        if not text:
            choices = json.loads(body.decode("utf-8")).get("choices")
            if not choices:
                raise self._bad("a chat completion with no choices")
        return text

    def _bad(self, what: str) -> VLMAnswerError:
        return VLMAnswerError(
            f"The VLM server at {self.where} sent {what}, not a chat completion with an answer; check that "
            "it is an OpenAI-compatible endpoint."
        )


def _server_message(e) -> str:
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        message = inner.get("message") if isinstance(inner, dict) else inner
        if isinstance(message, str) and message.strip():
            return first_line(Exception(message))
    return first_line(e)


def _refuses_constraint(e) -> bool:
    """Whether an HTTP error says the server does not take this way of constraining the answer."""
    return e.status_code in (400, 422, 500, 501) and any(w in str(e).lower() for w in _REJECTION_WORDS)


__all__ = [
    "DEFAULT_FRAMES",
    "DEFAULT_IMAGE_SIZE",
    "MC_PROMPT",
    "PROTOCOLS",
    "LocalVLM",
    "ServerVLM",
    "VLMAnswerError",
    "VLMResult",
    "build_prompt",
    "first_digit",
    "linspace_indices",
    "load_vlm",
    "match_answer",
    "parse_vlm_spec",
    "vlm_settings",
]
