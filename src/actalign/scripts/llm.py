"""Script writer for any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Configuration, first found wins: arguments > ACTALIGN_LLM_BASE_URL / ACTALIGN_LLM_MODEL /
ACTALIGN_LLM_API_KEY > OPENAI_BASE_URL / OPENAI_MODEL / OPENAI_API_KEY.

Structured outputs: requests first ask for `response_format` `json_schema` with the JSON schema of
the answer (`schema.scripts_schema`: the action names as required keys, the strategy's step counts,
bounded steps), as OpenAI, vLLM, llama.cpp's llama-server and Ollama support. A server that rejects
it (an HTTP error naming response_format or the schema) is asked again with `json_object` plus the
schema (llama-cpp-python's server, Anyscale-style), then in plain JSON mode, then with the prompt
alone; the mode that worked is kept for the writer's later requests and recorded in `source`. Answers are
parsed and validated strictly in every mode. An invalid answer gets one repair request that lists
its problems. 429, 5xx and timeouts are retried with exponential backoff by the openai client
(honouring Retry-After).
"""

from __future__ import annotations

import os

from actalign.errors import ActAlignError
from actalign.scripts.prompts import Strategy
from actalign.scripts.repair import as_strategy, write_with_repair
from actalign.scripts.schema import SCHEMA_NAME, scripts_schema

DEFAULT_MODEL = "gpt-4o"
MODES = ("json_schema", "json_object_schema", "json_object", "prompt")  # structured outputs, best first
_REJECTION_WORDS = ("response_format", "json_schema", "json_object", "schema", "structured")
_RETRIED = (408, 409, 429, 500, 502, 503, 504)  # what the openai client retries


def _rejects_format(e) -> bool:
    """Whether an HTTP error says the server does not take this `response_format`."""
    return e.status_code not in (401, 403, 404, 429) and any(w in str(e).lower() for w in _REJECTION_WORDS)


def _env(*names: str) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def llm_configured() -> bool:
    """Whether an endpoint or key is configured in the environment."""
    return bool(_env("ACTALIGN_LLM_BASE_URL", "OPENAI_BASE_URL", "ACTALIGN_LLM_API_KEY", "OPENAI_API_KEY"))


class LLMWriter:
    """Writes scripts for the actions of one domain in a single request, as the paper does."""

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        max_retries: int = 4,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise ActAlignError(
                "Generating scripts needs the openai package: pip install 'actalign[llm]'."
            ) from None
        self.model = model or _env("ACTALIGN_LLM_MODEL", "OPENAI_MODEL") or DEFAULT_MODEL
        self.base_url = base_url or _env("ACTALIGN_LLM_BASE_URL", "OPENAI_BASE_URL")
        key = api_key or _env("ACTALIGN_LLM_API_KEY", "OPENAI_API_KEY")
        if key is None and self.base_url is None:
            raise ActAlignError(
                "No LLM is configured: pass --llm local:MODEL_ID_OR_DIR to run one in-process, set "
                "OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL for a local OpenAI-compatible server "
                "(vLLM, Ollama, llama.cpp), or pass --scripts FILE."
            )
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key or "not-needed", timeout=timeout, max_retries=max_retries
        )
        self.max_retries = max_retries
        self.mode = MODES[0]
        self._confirmed = False  # whether a request in `mode` has succeeded

    @property
    def source(self) -> str:
        """The endpoint and the structured-output mode in use, e.g. `http://host/v1|json_schema`."""
        return f"{self.base_url or 'openai'}|{self.mode}"

    def write(
        self, domain: str, actions: list[str], strategy: Strategy | str = "context-rich"
    ) -> dict[str, list[str]]:
        """Scripts for `actions` (all in `domain`): {action: [step, ...]}, in a single request."""
        return write_with_repair(self._ask, domain, list(actions), as_strategy(strategy), self.model)

    def _response_format(self, strategy: Strategy, actions: list[str]) -> dict | None:
        schema = scripts_schema(actions, strategy)
        if self.mode == "json_schema":
            named = {"name": SCHEMA_NAME, "schema": schema, "strict": True}
            return {"type": "json_schema", "json_schema": named}
        if self.mode == "json_object_schema":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"} if self.mode == "json_object" else None

    def _create(self, messages: list[dict], strategy: Strategy, actions: list[str]):
        """One completion; steps down the structured-output modes while the server rejects them."""
        while True:
            kwargs = {"model": self.model, "messages": messages, "temperature": strategy.temperature}
            response_format = self._response_format(strategy, actions)
            if response_format is not None:
                kwargs["response_format"] = response_format
            try:
                response = self._call(kwargs, probe=response_format is not None and not self._confirmed)
            except self._openai.APIStatusError as e:
                if response_format is None or self._confirmed or not _rejects_format(e):
                    raise
                self.mode = MODES[MODES.index(self.mode) + 1]
                continue
            self._confirmed = True
            return response

    def _call(self, kwargs: dict, probe: bool):
        """A mode not yet known to work is tried once without retries, so that a server rejecting it
        with HTTP 500 (llama-cpp-python does) costs no backoff; other failures then retry as usual."""
        openai = self._openai
        if probe:
            try:
                return self.client.with_options(max_retries=0).chat.completions.create(**kwargs)
            except openai.APIStatusError as e:
                if _rejects_format(e) or self.max_retries == 0 or e.status_code not in _RETRIED:
                    raise
            except openai.APIConnectionError:
                if self.max_retries == 0:
                    raise
            client = self.client.with_options(max_retries=self.max_retries - 1)
            return client.chat.completions.create(**kwargs)
        return self.client.chat.completions.create(**kwargs)

    def _ask(self, messages: list[dict], strategy: Strategy, actions: list[str]) -> str:
        openai = self._openai
        where = self.base_url or "api.openai.com"
        try:
            response = self._create(messages, strategy, actions)
        except openai.APITimeoutError:
            raise ActAlignError(
                f"The LLM at {where} did not answer in time, after retries; "
                "try again later or raise the timeout."
            ) from None
        except openai.APIConnectionError:
            raise ActAlignError(
                f"Cannot reach the LLM at {where}; check OPENAI_BASE_URL and the network."
            ) from None
        except openai.AuthenticationError:
            raise ActAlignError(f"The LLM at {where} refused the API key; check OPENAI_API_KEY.") from None
        except openai.NotFoundError:
            raise ActAlignError(
                f"The LLM at {where} has no model {self.model!r}; check --llm-model."
            ) from None
        except openai.APIStatusError as e:
            raise ActAlignError(
                f"The LLM at {where} kept failing (HTTP {e.status_code}) after retries; try again later."
            ) from None
        choices = response.choices or []
        content = choices[0].message.content if choices else None
        if not content:
            return ""
        return content
