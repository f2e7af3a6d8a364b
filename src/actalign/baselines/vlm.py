"""Video LLM baselines (the paper's Table 2 VLM rows): a vision-language model answers the clip's
multiple-choice question from a few of its frames.

    kind, where = parse_vlm_spec("local:Qwen/Qwen2-VL-2B-Instruct")   # or a server's model name
    vlm = LocalVLM(where) if kind == "local" else ServerVLM(where)
    result = vlm.rank(frames, question, candidates, domain)
    result.answer     # index of the single answer (None: a server's answer matched no candidate)
    result.loglik     # (M,) in-process only: log P(candidate's answer | frames, prompt)

The prompt (`build_prompt`): the paper does not print the wording it gave the video LLMs, so this
one asks ActionAtlas's question as a plain multiple-choice question: the frames, in order, as
images; one line saying how many frames of which sport they are; the manifest's `question` (a
generic one when there is none); the candidates as lettered options; "Answer with the option's
text only." The frames are sampled by the caller (`frames`, default 8, spread over the clip) and
each is shrunk so that its longer side is at most `image_size` pixels (default 448) before the
model's own image processing; both settings are recorded in every result.

In process (`LocalVLM`, transformers' image-text-to-text models: Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
LLaVA-OneVision, ...), one forward pass over the prompt is shared by:
  * the ranking: for every candidate, the total log-probability of the answer's tokens -- the
    candidate's text and the end-of-turn token that closes the model's answer, so a candidate that
    is the beginning of another is not favoured -- given the prompt (top-2/3 exist for this row);
  * the answer: greedy decoding in which only the candidates can be written (llguidance masks every
    other token), the paper's top-1 protocol; a random model cannot escape it.
On an OpenAI-compatible server (`ServerVLM`: vLLM, llama.cpp, Ollama, OpenAI), the frames go as
JPEG `image_url` parts, and the answer is constrained where the server can: `response_format`
json_schema with the candidates as an enum, else vLLM's `guided_choice`, else the plain prompt;
whatever comes back is matched leniently (exact, case and spacing, option letter, the one
candidate it contains). An answer that names no candidate is a miss (answer None), never an error.
"""

from __future__ import annotations

import base64
import copy
import functools
import inspect
import io
import json
import os
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from actalign.baselines._load import (
    dtype_kwargs,
    first_line,
    load_checkpoint,
    parameter_count,
    quiet_transformers,
    resolve_dtype,
    segment_centres,
    uint8_frames,
)
from actalign.errors import ActAlignError

DEFAULT_FRAMES = 8
DEFAULT_IMAGE_SIZE = 448
DEFAULT_TIMEOUT = 120.0
SERVER_MODES = ("json_schema", "guided_choice", "prompt")  # answer constraints, best first
INSTRUCTION = "Answer with the option's text only."


@dataclass
class VLMResult:
    """One clip's answer.

    answer:      index of the chosen candidate, None when the model's answer named none (a miss)
    answer_text: the model's answer as written
    loglik:      (M,) log-probability of answering each candidate (in-process only, else None)
    frames:      how many frames the model saw; image_size: the longer-side bound they were shrunk to
    mode:        how the answer was constrained: "llguidance" in process; "json_schema",
                 "guided_choice" or "prompt" (unconstrained) on a server
    """

    answer: int | None
    answer_text: str
    loglik: np.ndarray | None
    frames: int
    image_size: int | None
    mode: str
    prompt: str = field(default="", repr=False)

    @property
    def loglik_ranking(self) -> list[int]:
        """Candidates by log-likelihood, best first (empty on a server)."""
        if self.loglik is None:
            return []
        return [int(i) for i in np.argsort(-self.loglik, kind="stable")]

    @property
    def ranking(self) -> list[int]:
        """Candidates best first: the answer (the paper's top-1), then the others by log-likelihood,
        so top-1 is always inside top-2 and top-3. On a server: the answer alone (empty on a miss)."""
        head = [] if self.answer is None else [self.answer]
        return head + [i for i in self.loglik_ranking if i != self.answer]


# ---------------------------------------------------------------------- spec, prompt, parsing


def parse_vlm_spec(spec: str) -> tuple[str, str]:
    """`--vlm local:ID_OR_DIR` -> ("local", ID_OR_DIR); `--vlm MODEL` -> ("server", MODEL)."""
    spec = (spec or "").strip()
    if spec.lower().startswith("local:"):
        where = spec[len("local:") :].strip()
        if not where:
            raise ActAlignError("--vlm local: needs a model: local:HUB_ID or local:DIRECTORY.")
        return "local", where
    if not spec:
        raise ActAlignError(
            "--vlm needs a model: local:HUB_ID_OR_DIR to run one in-process, or the name of a model "
            "on the OpenAI-compatible server at OPENAI_BASE_URL."
        )
    return "server", spec


def load_vlm(spec: str, **settings) -> LocalVLM | ServerVLM:
    """The VLM a `--vlm` spec names; `settings` go to its class (frames, image_size, device, ...)."""
    kind, where = parse_vlm_spec(spec)
    if kind == "local":
        return LocalVLM(where, **settings)
    return ServerVLM(where, **settings)


def option_labels(count: int) -> list[str]:
    """A, B, C, ... (1, 2, 3, ... beyond 26 options)."""
    return list(string.ascii_uppercase[:count]) if count <= 26 else [str(i + 1) for i in range(count)]


def build_prompt(question: str | None, candidates: Sequence[str], domain: str | None, n_frames: int) -> str:
    """The multiple-choice question put to the model after its frames."""
    where = f" from a {domain} video" if domain and domain.strip() else " from a video"
    lines = [f"These are {n_frames} frames{where}, in time order."]
    ask = (question or "").strip() or (
        f"Which {domain.strip()} action is shown?" if domain and domain.strip() else "Which action is shown?"
    )
    lines.append(ask)
    lines.append("Options:")
    lines += [f"{label}. {c}" for label, c in zip(option_labels(len(candidates)), candidates)]
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def _norm(text: str) -> str:
    return " ".join(text.casefold().split()).strip(" .,;:!\"'`*")


def match_answer(text: str | None, candidates: Sequence[str]) -> int | None:
    """The candidate an answer names, leniently: a JSON {"answer": ...} unwrapped; then the exact
    text; the text ignoring case, spacing, quotes and end punctuation; an option label ("B",
    "(B)", "B. Putback dunk", "Option B"); the one candidate the answer contains (the longest,
    when the others it contains are all part of it). None when nothing fits."""
    if text is None:
        return None
    text = str(text).strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
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
    labels = [label.casefold() for label in option_labels(len(candidates))]
    m = re.fullmatch(
        r"(?:(?:the\s+)?(?:correct\s+)?(?:option|answer)(?:\s+is)?:?\s*)?[(\[]?([a-z]|\d{1,3})[)\].:]?(?:\s+(.*))?",
        answer,
    )
    if m:
        rest = _norm(m.group(2) or "")
        if rest in normed:
            return normed.index(rest)
        if m.group(1) in labels and (not rest or rest in normed):
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


def fit_frame(frame: np.ndarray, image_size: int | None) -> np.ndarray:
    """The frame shrunk (never enlarged) so that its longer side is at most `image_size`."""
    if image_size is None or max(frame.shape[:2]) <= image_size:
        return frame
    from PIL import Image

    h, w = frame.shape[:2]
    scale = image_size / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BICUBIC))


def _settings(frames: int, image_size: int | None) -> tuple[int, int | None]:
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ActAlignError(f"The VLM's frames per clip must be a whole number >= 1, got {frames!r}.")
    if image_size is not None and (
        isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16
    ):
        raise ActAlignError(f"The VLM's image size must be a whole number >= 16 pixels, got {image_size!r}.")
    return frames, image_size


class _Frames:
    """Shared by both VLMs: the frame settings and the sampling over a clip."""

    frames: int
    image_size: int | None

    def frame_indices(self, n_available: int, count: int | None = None) -> np.ndarray:
        """`count` (default: the `frames` setting) segment-centre indices into `n_available` frames."""
        return segment_centres(n_available, self.frames if count is None else count)

    def _images(self, frames) -> list[np.ndarray]:
        if isinstance(frames, np.ndarray):
            frames = list(uint8_frames(frames))
        images = [uint8_frames(np.asarray(f)[None])[0] for f in frames]
        if not images:
            raise ActAlignError("A VLM needs at least one frame of the clip.")
        return [fit_frame(f, self.image_size) for f in images]


# ---------------------------------------------------------------------- in process


class LocalVLM(_Frames):
    """A transformers image-text-to-text model, in this process (a hub id or a save_pretrained folder)."""

    def __init__(
        self,
        name_or_path: str,
        device: str | None = None,
        dtype: str | None = None,
        frames: int = DEFAULT_FRAMES,
        image_size: int | None = DEFAULT_IMAGE_SIZE,
    ) -> None:
        from actalign.encoders import select_device

        self.frames, self.image_size = _settings(frames, image_size)
        self.name_or_path = str(name_or_path)
        self.device = select_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        load = functools.partial(_load_vlm, dtype=self.dtype)
        (self.model, self.processor), source = load_checkpoint(self.name_or_path, load, "VLM")
        self.model.to(device=self.device, dtype=self.dtype).eval()
        self.tokenizer = self.processor.tokenizer
        self.identity = f"local:{source}|{str(self.dtype).removeprefix('torch.')}"
        self.parameters = parameter_count(self.model)
        self.mode = "llguidance"
        forward = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._takes_cache_position = "cache_position" in forward
        self._end = self._end_token()
        self._lltokenizer = self._constraint_tokenizer()

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

    def _constraint_tokenizer(self):
        try:
            import llguidance.hf
        except ImportError:
            raise ActAlignError(
                "The VLM's constrained answer needs llguidance: pip install 'actalign[local-llm]'."
            ) from None
        try:
            return llguidance.hf.from_tokenizer(self.tokenizer, eos_token=self._end)
        except (ValueError, TypeError, AttributeError):
            raise ActAlignError(
                f"The VLM {self.name_or_path} has no fast tokenizer (tokenizer.json), which the "
                "constrained answer needs."
            ) from None

    # ------------------------------------------------------------------ answering

    def prompt_inputs(self, frames, question: str | None, candidates: Sequence[str], domain: str | None):
        """(model inputs, prompt text, frame count) for the frames and the question, through the
        chat template and the model's processor."""
        images = self._images(frames)
        prompt = build_prompt(question, candidates, domain, len(images))
        content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
        text = self._template([{"role": "user", "content": content}], True)
        with quiet_transformers():
            inputs = self.processor(text=[text], images=images, return_tensors="pt")
        return dict(inputs), prompt, len(images)

    def answer_ids(self, candidate: str) -> list[int]:
        """The tokens of answering `candidate`: its text, then the end-of-answer token."""
        return [*self.tokenizer(candidate, add_special_tokens=False)["input_ids"], self._end]

    def rank(self, frames, question: str | None, candidates: Sequence[str], domain: str | None) -> VLMResult:
        """Score every candidate by its log-likelihood and pick one by constrained decoding."""
        import torch

        cands = _check_candidates(candidates)
        inputs, prompt, n = self.prompt_inputs(frames, question, cands, domain)
        inputs = {k: _to(v, self.device, self.dtype) for k, v in inputs.items()}
        with torch.inference_mode():
            out = self.model(**inputs, use_cache=True)
            cache = _cache_of(out)
            first = out.logits[0, -1].float()
            loglik = self._loglik(first, cache, cands)
            chosen = self._constrained(first, cache, cands)
        text = self.tokenizer.decode(chosen, skip_special_tokens=True)
        answer = match_answer(text.strip(), cands)
        return VLMResult(
            answer=answer,
            answer_text=text,
            loglik=loglik,
            frames=n,
            image_size=self.image_size,
            mode=self.mode,
            prompt=prompt,
        )

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

    def _loglik(self, first, cache, cands: list[str]) -> np.ndarray:
        """Sum over each candidate's answer tokens of log P(token | prompt, tokens before it), all
        candidates in one batch: right padding cannot reach earlier positions (causal attention)."""
        import torch

        answers = [self.answer_ids(c) for c in cands]
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

    def _constrained(self, first, cache, cands: list[str]) -> list[int]:
        """Greedy decoding where llguidance allows only the candidates' texts (an optional leading
        space, for tokenizers that mark word starts) followed by the end-of-answer token."""
        import torch
        from llguidance import LLMatcher

        grammar = LLMatcher.grammar_from_lark(
            'start: " "? (' + " | ".join(json.dumps(c) for c in cands) + ")"
        )
        matcher = LLMatcher(self._lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ActAlignError(f"Cannot build the candidates' grammar: {matcher.get_error()}.")
        state = copy.deepcopy(cache)
        logits, chosen = first, []
        budget = max(len(c.encode()) for c in cands) + 3  # a token writes at least one byte
        for _ in range(budget):
            allowed = _allowed(matcher, logits.shape[-1]).to(logits.device)
            token = int(torch.argmax(logits.masked_fill(~allowed, float("-inf"))))
            if not matcher.consume_token(token):
                raise ActAlignError(f"Constrained decoding failed: {matcher.get_error()}.")
            if token == self._end:
                return chosen
            chosen.append(token)
            if matcher.is_stopped():  # the grammar allows nothing but the end any more
                return chosen
            logits = self._step(torch.tensor([[token]], device=self.device), state)[0, -1]
        raise ActAlignError("Constrained decoding did not finish an answer; this is a bug, please report it.")


def _allowed(matcher, vocab: int):
    import torch

    bits = np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8)
    unpacked = np.unpackbits(bits, bitorder="little").astype(bool)[:vocab]
    allowed = np.zeros(vocab, dtype=bool)
    allowed[: len(unpacked)] = unpacked
    if not allowed.any():
        raise ActAlignError(f"Constrained decoding reached a dead end: {matcher.get_error()}.")
    return torch.from_numpy(allowed)


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


class ServerVLM(_Frames):
    """A vision model on an OpenAI-compatible chat-completions server."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = 2,
        frames: int = DEFAULT_FRAMES,
        image_size: int | None = DEFAULT_IMAGE_SIZE,
        jpeg_quality: int = 90,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise ActAlignError(
                "A VLM on a server needs the openai package: pip install 'actalign[llm]'."
            ) from None
        if not model or not str(model).strip():
            raise ActAlignError("Name the VLM's model on the server: --vlm MODEL.")
        self.frames, self.image_size = _settings(frames, image_size)
        self.model = str(model).strip()
        self.base_url = base_url or _env("ACTALIGN_VLM_BASE_URL", "OPENAI_BASE_URL")
        key = api_key or _env("ACTALIGN_VLM_API_KEY", "OPENAI_API_KEY")
        if key is None and self.base_url is None:
            raise ActAlignError(
                f"No server for the VLM {self.model!r}: set OPENAI_BASE_URL to an OpenAI-compatible "
                "server (vLLM, llama.cpp, Ollama) or OPENAI_API_KEY for OpenAI, or use --vlm local:MODEL."
            )
        self._openai = openai
        self.timeout = float(timeout)
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key or "not-needed", timeout=self.timeout, max_retries=max_retries
        )
        self.jpeg_quality = jpeg_quality
        self.mode = SERVER_MODES[0]
        self._confirmed = False
        self.parameters = None  # not known from a server
        self.identity = f"server:{self.base_url or 'openai'}|{self.model}"

    @property
    def where(self) -> str:
        return self.base_url or "api.openai.com"

    def messages(self, frames, prompt_for) -> tuple[list[dict], str, int]:
        images = self._images(frames)
        prompt = prompt_for(len(images))
        parts = [
            {"type": "image_url", "image_url": {"url": jpeg_data_uri(f, self.jpeg_quality)}} for f in images
        ]
        parts.append({"type": "text", "text": prompt})
        return [{"role": "user", "content": parts}], prompt, len(images)

    def _request(self, messages: list[dict], cands: list[str]) -> dict:
        kwargs = {"model": self.model, "messages": messages, "temperature": 0}
        if self.mode == "json_schema":
            schema = {
                "type": "object",
                "properties": {"answer": {"type": "string", "enum": cands}},
                "required": ["answer"],
                "additionalProperties": False,
            }
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": schema, "strict": True},
            }
        elif self.mode == "guided_choice":
            kwargs["extra_body"] = {"guided_choice": cands}
        return kwargs

    def _create(self, messages: list[dict], cands: list[str]):
        """One completion; steps down the answer constraints while the server refuses them."""
        openai = self._openai
        while True:
            kwargs = self._request(messages, cands)
            try:
                return_value = self.client.chat.completions.create(**kwargs)
            except openai.APIStatusError as e:
                last = self.mode == SERVER_MODES[-1]
                if last or self._confirmed or not _refuses_constraint(e):
                    raise
                self.mode = SERVER_MODES[SERVER_MODES.index(self.mode) + 1]
                continue
            self._confirmed = True
            return return_value

    def rank(self, frames, question: str | None, candidates: Sequence[str], domain: str | None) -> VLMResult:
        """The server's answer to the multiple-choice question; no ranking (loglik None)."""
        cands = _check_candidates(candidates)
        messages, prompt, n = self.messages(frames, lambda k: build_prompt(question, cands, domain, k))
        openai = self._openai
        try:
            response = self._create(messages, cands)
        except openai.APITimeoutError:
            raise ActAlignError(
                f"The VLM at {self.where} did not answer within {self.timeout:g} s; raise the timeout or "
                "use fewer or smaller frames."
            ) from None
        except openai.APIConnectionError:
            raise ActAlignError(
                f"Cannot reach the VLM server at {self.where}; check OPENAI_BASE_URL."
            ) from None
        except openai.AuthenticationError:
            raise ActAlignError(
                f"The VLM server at {self.where} refused the API key; check OPENAI_API_KEY."
            ) from None
        except openai.NotFoundError:
            raise ActAlignError(
                f"The VLM server at {self.where} has no model {self.model!r}; check --vlm."
            ) from None
        except openai.APIStatusError as e:
            raise ActAlignError(
                f"The VLM server at {self.where} failed (HTTP {e.status_code}: {_server_message(e)})."
            ) from None
        except (openai.APIError, ValueError) as e:  # e.g. a body that is not JSON
            raise ActAlignError(
                f"The VLM server at {self.where} sent a body that is not a chat completion ({first_line(e)})."
            ) from None
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise ActAlignError(f"The VLM server at {self.where} sent a body that is not a chat completion.")
        message = getattr(choices[0], "message", None) if choices else None
        text = getattr(message, "content", None) if message is not None else None
        text = text if isinstance(text, str) else ""
        return VLMResult(
            answer=match_answer(text, cands),
            answer_text=text,
            loglik=None,
            frames=n,
            image_size=self.image_size,
            mode=self.mode,
            prompt=prompt,
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
    "LocalVLM",
    "ServerVLM",
    "VLMResult",
    "build_prompt",
    "load_vlm",
    "match_answer",
    "parse_vlm_spec",
]
