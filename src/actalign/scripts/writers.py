"""`make_writer`, which turns an `--llm` spec (or the environment) into a writer (the repair
conversation they share is in `scripts.repair`).

A writer has `write(domain, actions, strategy) -> {action: [steps]}`, a `model` (stored with each
script and part of its key) and a `source` (stored too: the backend and the structured-output mode
that produced the answer, e.g. `local:/models/qwen|json_schema`, `http://host/v1|json_object`).
"""

from __future__ import annotations

import os

from actalign.errors import ActAlignError

__all__ = ["LOCAL", "make_writer"]

LOCAL = "local:"


def _float_env(name: str) -> float | None:
    value = os.environ.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ActAlignError(f"{name} must be a number, not {value!r}.") from None


def make_writer(
    spec: str | None = None,
    model: str | None = None,
    base_url: str | None = None,
    required: bool = False,
):
    """The writer for `spec` (`local:ID_OR_DIR`, an http(s) endpoint, or `openai`; default
    $ACTALIGN_LLM), else the OpenAI-compatible settings; None when nothing is configured and the
    writer is not `required`.

    The local writer's bounds come from $ACTALIGN_LLM_MAX_NEW_TOKENS and $ACTALIGN_LLM_TIMEOUT; a
    server writer's total time per answer (retries included) from $ACTALIGN_LLM_TIMEOUT too.
    """
    from actalign.scripts.llm import LLMWriter, llm_configured

    spec = (spec or os.environ.get("ACTALIGN_LLM") or "").strip() or None
    timeout = _float_env("ACTALIGN_LLM_TIMEOUT")
    if timeout is not None and not 0 < timeout < float("inf"):
        raise ActAlignError(f"ACTALIGN_LLM_TIMEOUT must be a positive number of seconds, not {timeout}.")
    if spec and spec.startswith(LOCAL):
        if base_url or model:
            raise ActAlignError(
                "`llm=local:...` runs the model in-process; drop `llm_model` and `llm_base_url`."
            )
        from actalign.scripts.local import LocalWriter

        tokens = _float_env("ACTALIGN_LLM_MAX_NEW_TOKENS")
        return LocalWriter(
            spec[len(LOCAL) :],
            max_new_tokens=int(tokens) if tokens else None,
            **({"timeout": timeout} if timeout else {}),
        )
    if spec and spec.startswith(("http://", "https://")):
        if base_url and base_url != spec:
            raise ActAlignError(f"Give the endpoint once: `llm={spec}` or `llm_base_url={base_url}`.")
        return LLMWriter(model=model, base_url=spec, timeout=timeout)
    if spec and spec != "openai":
        raise ActAlignError(
            f"Unknown LLM {spec!r}: use local:MODEL_ID_OR_DIR, an http(s)://.../v1 endpoint, or openai."
        )
    if spec or base_url or model or llm_configured() or required:
        return LLMWriter(model=model, base_url=base_url, timeout=timeout)
    return None
