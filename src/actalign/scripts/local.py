"""In-process script writer: a causal LM run with transformers, its output constrained to the
JSON schema of a scripts answer by llguidance, so any model, even an untrained one, returns
parseable, schema-valid JSON. The prompt strategies, temperatures, validation and repair request
are those of the server writer.

The model is loaded on the first `write` (a classify whose scripts are all stored never loads it):
a hub id (downloaded once into the Hugging Face cache) or a `save_pretrained` directory, on the GPU
when there is one. Without a chat template the prompt is given as plain text: a base model then
continues it, and the schema still holds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from actalign.errors import ActAlignError
from actalign.hub import first_line, hub_validation_error
from actalign.scripts.prompts import Strategy
from actalign.scripts.repair import as_strategy, write_with_repair
from actalign.scripts.schema import scripts_schema

DEFAULT_TIMEOUT = 600.0  # seconds per generation
TOKENS_PER_ACTION = 400  # default bound on new tokens: a real model needs ~100-150 per action
CONSTRAINED, UNCONSTRAINED = "json_schema", "prompt"


def _pick_device(device: str | None) -> str:
    import torch

    if device:
        return device
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def context_length(config, tokenizer) -> int | None:
    """The model's context in tokens, from its config (or the tokenizer's declared limit)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(text, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 1 << 24 else None


class _SchemaMask:
    """A transformers logits processor: tokens the llguidance matcher forbids get -inf."""

    def __init__(self, matcher) -> None:
        self.matcher = matcher
        self.started = False

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch

        if self.started and not self.matcher.consume_token(int(input_ids[0, -1])):
            raise ActAlignError(f"Constrained decoding failed: {self.matcher.get_error()}.")
        self.started = True
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.zeros(scores.shape[-1], dtype=bool)
        unpacked = np.unpackbits(bits, bitorder="little").astype(bool)[: scores.shape[-1]]
        allowed[: len(unpacked)] = unpacked
        if not allowed.any():
            raise ActAlignError(f"Constrained decoding reached a dead end: {self.matcher.get_error()}.")
        forbid = torch.from_numpy(~allowed).to(scores.device)
        return scores.masked_fill(forbid, float("-inf"))


class LocalWriter:
    """Writes the scripts of all actions of a domain in one generation of a local causal LM."""

    def __init__(
        self,
        model_id_or_dir: str,
        device: str | None = None,
        max_new_tokens: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        constrained: bool = True,
    ) -> None:
        if not model_id_or_dir:
            raise ActAlignError("`llm=local:` needs a model: local:HUB_ID or local:DIRECTORY.")
        path = Path(model_id_or_dir).expanduser()
        self.path = str(path.resolve()) if path.is_dir() else model_id_or_dir
        self.model = self.path
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.timeout = timeout
        self.mode = CONSTRAINED if constrained else UNCONSTRAINED
        self.base_url = None
        self.last_stats: dict = {}
        self._lm = self._tokenizer = self._lltokenizer = None

    @property
    def source(self) -> str:
        return f"local:{self.path}|{self.mode}"

    # ------------------------------------------------------------------ loading

    def _load(self) -> None:
        if self._lm is not None:
            return
        try:
            import transformers
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError:
            raise ActAlignError(
                "The local LLM needs transformers: pip install 'actalign[local-llm]'."
            ) from None
        import torch

        device = _pick_device(self.device)
        dtype = "auto" if device != "cpu" else torch.float32  # bf16 checkpoints are slow on most CPUs
        key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(self.path)
            self._lm = AutoModelForCausalLM.from_pretrained(self.path, **{key: dtype}).to(device).eval()
        except (OSError, hub_validation_error()) as e:
            raise ActAlignError(self._not_found(e)) from None
        except ValueError as e:
            raise ActAlignError(
                f"{self.path} is not a causal language model transformers can load ({first_line(e)})."
            ) from None
        if self.mode == CONSTRAINED:
            self._lltokenizer = self._constraint_tokenizer()

    def _not_found(self, e: Exception) -> str:
        if Path(self.path).expanduser().is_dir():
            return f"Cannot load the local LLM from {self.path} ({first_line(e)})."
        if self.path.startswith(("/", ".", "~")) or "\\" in self.path:
            return f"Cannot load the local LLM: there is no directory {self.path}."
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
        return (
            f"Cannot load the local LLM {self.path!r}: it is no directory here and not in the Hugging Face "
            "cache, and downloading it failed"
            + (" (HF_HUB_OFFLINE is set)" if offline else " (no internet, or no such model on the hub)")
            + "; check the name, or download it once with internet access."
        )

    def _constraint_tokenizer(self):
        try:
            import llguidance.hf
        except ImportError:
            raise ActAlignError(
                "Constrained decoding needs llguidance: pip install 'actalign[local-llm]'."
            ) from None
        eos = self._lm.generation_config.eos_token_id
        if eos is None:
            eos = self._tokenizer.eos_token_id
        if eos is None:
            raise ActAlignError(f"The local LLM {self.path} declares no end-of-sequence token.")
        try:
            return llguidance.hf.from_tokenizer(self._tokenizer, eos_token=eos)
        except ValueError:
            raise ActAlignError(
                f"The local LLM {self.path} has no fast tokenizer (tokenizer.json), which constrained "
                "decoding needs."
            ) from None

    # ------------------------------------------------------------------ writing

    def write(self, domain: str, actions: list[str], strategy: Strategy | str = "context-rich") -> dict:
        """Scripts for `actions` (all in `domain`): {action: [step, ...]}."""
        self._load()
        return write_with_repair(self._ask, domain, list(actions), as_strategy(strategy), self.path)

    def prompt_ids(self, messages: list[dict]):
        """Token ids of `messages` through the chat template (plain text when there is none)."""
        tok = self._tokenizer
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = "\n\n".join(m["content"] for m in messages) + "\n"
        return tok(text, return_tensors="pt", add_special_tokens=not tok.chat_template)["input_ids"]

    def _ask(self, messages: list[dict], strategy: Strategy, actions: list[str]) -> str:
        ids = self.prompt_ids(messages).to(self._lm.device)
        budget = self.max_new_tokens or TOKENS_PER_ACTION * len(actions)
        context = context_length(self._lm.config, self._tokenizer)
        if context is not None and ids.shape[1] >= context:
            raise ActAlignError(
                f"The prompt for {len(actions)} actions is {ids.shape[1]} tokens, longer than the "
                f"context of {self.path} ({context} tokens); generate fewer actions at a time "
                "or use a model with a longer context."
            )
        room = budget if context is None else min(budget, context - ids.shape[1])
        mask = self._mask(actions, strategy)
        new, seconds = self._generate(ids, strategy.temperature, room, mask)
        self.last_stats = {"prompt_tokens": int(ids.shape[1]), "new_tokens": len(new), "seconds": seconds}
        if mask is not None and not mask.matcher.is_accepting():
            self._incomplete(len(new), budget if room == budget else None, seconds, context)
        return self._tokenizer.decode(new, skip_special_tokens=True)

    def _mask(self, actions: list[str], strategy: Strategy) -> _SchemaMask | None:
        if self.mode != CONSTRAINED:
            return None
        from llguidance import LLMatcher

        grammar = LLMatcher.grammar_from_json_schema(
            scripts_schema(actions, strategy), defaults={"whitespace_flexible": False}
        )
        matcher = LLMatcher(self._lltokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ActAlignError(f"Cannot compile the scripts schema: {matcher.get_error()}.")
        return _SchemaMask(matcher)

    def _generate(self, ids, temperature: float, budget: int, mask: _SchemaMask | None):
        import torch

        kwargs = {"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0}
        if temperature <= 0:
            kwargs = {"do_sample": False}
        pad = self._tokenizer.pad_token_id
        pad = self._tokenizer.eos_token_id if pad is None else pad
        start = time.monotonic()
        with torch.inference_mode():
            out = self._lm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=budget,
                max_time=self.timeout,
                logits_processor=[mask] if mask is not None else None,
                pad_token_id=pad,
                **kwargs,
            )
        return out[0, ids.shape[1] :].tolist(), time.monotonic() - start

    def _incomplete(self, produced: int, budget: int | None, seconds: float, context: int | None) -> None:
        """Raise the error that says which bound cut the answer short (budget None: the context)."""
        if seconds >= self.timeout:
            raise ActAlignError(
                f"The local LLM {self.path} did not finish the scripts within the time bound of "
                f"{self.timeout:g} s ({produced} tokens); raise ACTALIGN_LLM_TIMEOUT or use a GPU "
                "or a smaller model."
            )
        if budget is None:
            raise ActAlignError(
                f"The local LLM {self.path} filled its context of {context} tokens before the scripts "
                "were complete; generate fewer actions at a time or use a model with a longer context."
            )
        raise ActAlignError(
            f"The local LLM {self.path} stopped at the bound of {budget} new tokens before the scripts "
            "were complete; raise ACTALIGN_LLM_MAX_NEW_TOKENS or generate fewer actions at a time."
        )
