"""Script writer for any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Configuration, first found wins: arguments > ACTALIGN_LLM_BASE_URL / ACTALIGN_LLM_MODEL /
ACTALIGN_LLM_API_KEY > OPENAI_BASE_URL / OPENAI_MODEL / OPENAI_API_KEY.

Requests ask for JSON mode (dropped if the server rejects it); answers are parsed strictly either
way. An invalid answer gets one repair request that lists its problems. 429, 5xx and timeouts
are retried with exponential backoff by the openai client (honouring Retry-After).
"""

from __future__ import annotations

import os

from actalign.errors import ActAlignError
from actalign.scripts.parse import InvalidAnswer, parse_scripts
from actalign.scripts.prompts import STRATEGIES, Strategy

DEFAULT_MODEL = "gpt-4o"


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
                "No LLM is configured: set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL for a local "
                "OpenAI-compatible server (vLLM, Ollama, llama.cpp), or pass --scripts FILE."
            )
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=self.base_url, api_key=key or "not-needed", timeout=timeout, max_retries=max_retries
        )
        self._json_mode = True

    def write(
        self, domain: str, actions: list[str], strategy: Strategy | str = "context-rich"
    ) -> dict[str, list[str]]:
        """Scripts for `actions` (all in `domain`): {action: [step, ...]}."""
        strategy = STRATEGIES[strategy] if isinstance(strategy, str) else strategy
        messages = [{"role": "user", "content": strategy.render(domain, actions)}]
        answer = self._ask(messages, strategy.temperature)
        try:
            return parse_scripts(answer, domain, actions, strategy)
        except InvalidAnswer as e:
            messages += [
                {"role": "assistant", "content": answer},
                {
                    "role": "user",
                    "content": "That answer is invalid: "
                    + "; ".join(e.problems)
                    + ". Reply again with only the corrected JSON object, covering every action.",
                },
            ]
        answer = self._ask(messages, strategy.temperature)
        try:
            return parse_scripts(answer, domain, actions, strategy)
        except InvalidAnswer as e:
            raise ActAlignError(
                f"The LLM ({self.model}) gave invalid scripts for {domain} twice: {e}. Try another "
                "model, or write the scripts by hand (--scripts FILE)."
            ) from None

    def _ask(self, messages: list[dict], temperature: float) -> str:
        openai = self._openai
        kwargs = {"model": self.model, "messages": messages, "temperature": temperature}
        where = self.base_url or "api.openai.com"
        try:
            try:
                if self._json_mode:
                    kwargs["response_format"] = {"type": "json_object"}
                response = self.client.chat.completions.create(**kwargs)
            except openai.BadRequestError as e:
                if "response_format" not in str(e):
                    raise
                self._json_mode = False  # the server has no JSON mode: parse plain text strictly
                kwargs.pop("response_format")
                response = self.client.chat.completions.create(**kwargs)
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
