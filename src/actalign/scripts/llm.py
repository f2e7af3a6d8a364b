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

Bounds: `timeout` (default 120 s, $ACTALIGN_LLM_TIMEOUT through `make_writer`) is the most one
answer may take in all, retries and the repair request included (the error says the time spent):
each request runs in a worker thread that is abandoned (its connection closed) when the time is up,
so a server that trickles its answer a byte at a time, or answers after every read timeout, is
stopped on time. The body is read up to MAX_BODY bytes and parsed here, strictly: a body that is
not UTF-8, not JSON, nested too deeply, cut off, or not a chat completion with text content is one
sentence, never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time

from actalign.errors import ActAlignError
from actalign.scripts.prompts import Strategy
from actalign.scripts.repair import as_strategy, write_with_repair
from actalign.scripts.schema import SCHEMA_NAME, scripts_schema

DEFAULT_MODEL = "gpt-4o"
DEFAULT_TIMEOUT = 120.0  # seconds for one answer, retries included
MAX_BODY = 8 << 20  # bytes: a scripts answer is a few kB
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


class _Late(Exception):
    """The answer did not come within the writer's timeout."""


class _BadBody(Exception):
    """The server's answer is not a chat completion; the message says what it is instead."""


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


class LLMWriter:
    """Writes scripts for the actions of one domain in a single request, as the paper does."""

    def __init__(
        self,
        model: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float | None = None,
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
                "No LLM is configured: pass `llm=local:MODEL_ID_OR_DIR` to run one in-process, set "
                "OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL for a local OpenAI-compatible server "
                "(vLLM, Ollama, llama.cpp), or pass `scripts=FILE`."
            )
        self.timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ActAlignError(f"The LLM timeout must be a positive number of seconds, not {timeout!r}.")
        self._openai = openai
        self._key = key or "not-needed"
        self._deadline = math.inf  # of the answer being asked for (time.monotonic)
        self._answer_deadline: float | None = None  # of the whole write(), repair request included
        self._began = time.monotonic()
        self.max_retries = max_retries
        self.client = self._new_client()
        self.mode = MODES[0]
        self._confirmed = False  # whether a request in `mode` has succeeded

    def _new_client(self):
        openai = self._openai
        # no request (no retry either) leaves after the deadline, whatever the worker thread does
        hooks = {"request": [self._before_request]}
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

    @property
    def source(self) -> str:
        """The endpoint and the structured-output mode in use, e.g. `http://host/v1|json_schema`."""
        return f"{self.base_url or 'openai'}|{self.mode}"

    def write(
        self, domain: str, actions: list[str], strategy: Strategy | str = "context-rich"
    ) -> dict[str, list[str]]:
        """Scripts for `actions` (all in `domain`): {action: [step, ...]}, in a single request (and
        one repair request when the answer is invalid): all of it within `timeout`."""
        self._began = time.monotonic()
        self._answer_deadline = self._began + self.timeout
        try:
            return write_with_repair(self._ask, domain, list(actions), as_strategy(strategy), self.model)
        finally:
            self._answer_deadline = None

    def _response_format(self, strategy: Strategy, actions: list[str]) -> dict | None:
        schema = scripts_schema(actions, strategy)
        if self.mode == "json_schema":
            named = {"name": SCHEMA_NAME, "schema": schema, "strict": True}
            return {"type": "json_schema", "json_schema": named}
        if self.mode == "json_object_schema":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_object"} if self.mode == "json_object" else None

    def _create(self, messages: list[dict], strategy: Strategy, actions: list[str]) -> bytes:
        """One completion's body; steps down the structured-output modes while the server rejects
        them."""
        while True:
            kwargs = {"model": self.model, "messages": messages, "temperature": strategy.temperature}
            response_format = self._response_format(strategy, actions)
            if response_format is not None:
                kwargs["response_format"] = response_format
            try:
                body = self._call(kwargs, probe=response_format is not None and not self._confirmed)
            except self._openai.APIStatusError as e:
                if response_format is None or self._confirmed or not _rejects_format(e):
                    raise
                self.mode = MODES[MODES.index(self.mode) + 1]
                continue
            self._confirmed = True
            return body

    def _call(self, kwargs: dict, probe: bool) -> bytes:
        """A mode not yet known to work is tried once without retries, so that a server rejecting it
        with HTTP 500 (llama-cpp-python does) costs no backoff; other failures then retry as usual."""
        openai = self._openai
        if probe:
            try:
                return self._post(self.client.with_options(max_retries=0), kwargs)
            except openai.APIStatusError as e:
                if _rejects_format(e) or self.max_retries == 0 or e.status_code not in _RETRIED:
                    raise
            except openai.APIConnectionError:
                if self.max_retries == 0:
                    raise
            return self._post(self.client.with_options(max_retries=self.max_retries - 1), kwargs)
        return self._post(self.client, kwargs)

    @staticmethod
    def _post(client, kwargs: dict) -> bytes:
        """The raw body of one completion (with the client's retries), at most MAX_BODY bytes."""
        with client.chat.completions.with_streaming_response.create(**kwargs) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_BODY:
                    raise _BadBody(f"an answer of more than {MAX_BODY >> 20} MiB")
                chunks.append(chunk)
        return b"".join(chunks)

    def _in_time(self, work):
        """`work()` in a worker thread, given up (and its connection closed) after `timeout` s."""
        outcome: list = []

        def run() -> None:
            try:
                outcome.append((True, work()))
            except BaseException as e:  # handed to the caller's thread
                outcome.append((False, e))

        now = time.monotonic()
        if self._answer_deadline is None:  # asked outside write(): this request alone
            self._began = now
        self._deadline = self._answer_deadline if self._answer_deadline is not None else now + self.timeout
        if now >= self._deadline:
            raise _Late
        thread = threading.Thread(target=run, name="actalign-llm-request", daemon=True)
        thread.start()
        thread.join(self._deadline - now)
        if not outcome:
            abandoned, self.client = self.client, self._new_client()
            abandoned.close()  # closes the worker's socket: it stops at its next read, and no retry goes out
            raise _Late
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _ask(self, messages: list[dict], strategy: Strategy, actions: list[str]) -> str:
        openai = self._openai
        timeouts, broken = _transport_errors()
        where = self.base_url or "api.openai.com"
        try:
            body = self._in_time(lambda: self._create(messages, strategy, actions))
        except (_Late, openai.APITimeoutError, *timeouts):
            spent = time.monotonic() - self._began
            raise ActAlignError(
                f"The LLM at {where} did not answer in time (within {self.timeout:g} s, retries and "
                f"repair included): given up after {spent:.1f} s; try again later or raise "
                "ACTALIGN_LLM_TIMEOUT."
            ) from None
        except openai.APIConnectionError:
            raise ActAlignError(
                f"Cannot reach the LLM at {where}; check OPENAI_BASE_URL and the network."
            ) from None
        except openai.AuthenticationError:
            raise ActAlignError(f"The LLM at {where} refused the API key; check OPENAI_API_KEY.") from None
        except openai.NotFoundError:
            raise ActAlignError(
                f"The LLM at {where} has no model {self.model!r}; check `llm_model`."
            ) from None
        except openai.APIStatusError as e:
            raise ActAlignError(
                f"The LLM at {where} kept failing (HTTP {e.status_code}) after retries; try again later."
            ) from None
        except broken:  # while reading the body, after the headers came
            raise ActAlignError(
                f"The connection to the LLM at {where} broke off in the middle of its answer; try again."
            ) from None
        except _BadBody as e:
            raise _bad_answer(where, str(e)) from None
        try:
            return completion_text(body)
        except _BadBody as e:
            raise _bad_answer(where, str(e)) from None


def _transport_errors() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """(timeouts, other transport errors) of the HTTP client under openai: httpx, or httpx2 (openai
    3), whichever it imported."""
    modules = [sys.modules[name] for name in ("httpx", "httpx2") if name in sys.modules]
    return tuple(m.TimeoutException for m in modules), tuple(m.HTTPError for m in modules)


def _bad_answer(where: str, what: str) -> ActAlignError:
    return ActAlignError(
        f"The LLM at {where} sent {what}, not a chat completion; check that it is an OpenAI-compatible "
        "endpoint, or try again."
    )


def completion_text(body: bytes) -> str:
    """The text of the first choice of a chat-completions body ("" when the message has no
    content); raises _BadBody saying what the body is instead."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _BadBody("bytes that are not UTF-8 text") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise _BadBody("JSON nested too deeply to read") from None
    except ValueError:
        raise _BadBody("an answer that is not complete JSON (cut off or garbled)") from None
    if not isinstance(data, dict):
        raise _BadBody(f"JSON that is {_kind(data)}")
    choices = data.get("choices")
    if not isinstance(choices, list):
        if isinstance(data.get("error"), dict | str):
            raise _BadBody("an error with HTTP status 200")
        raise _BadBody("a JSON object without a list of choices")
    if not choices:
        return ""
    message = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(message, dict):
        got = _kind(choices[0].get("message")) if isinstance(choices[0], dict) else _kind(choices[0])
        raise _BadBody(f"a choice whose message is {got}")
    content = message.get("content")
    if content is None or isinstance(content, str):
        return content or ""
    # content parts ([{"type": "text", "text": "..."}]), as some servers send
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "".join(p["text"] for p in content)
    raise _BadBody(f"a message whose content is {_kind(content)}, not text")
