"""The JSON schema of a scripts answer, for constrained decoding and servers' structured outputs.

`{"actions": {"<action>": ["step", ...], ...}}` with exactly the requested action names as required
keys, the strategy's step counts, and steps that the semantic validator (`parse.validate_steps`)
accepts by construction: plain ASCII words (letters, digits, ' and -; at most MAX_WORD characters)
separated by single spaces, an optional comma after a word and an optional final period, at most
`max_words` words, and a last word that ends in two letters or digits. That last rule keeps every
step non-trivial even after `clean_step` strips a leading "Step 3" numbering. What a schema cannot
say (steps distinct within an action) is left to the validator and the repair request.
"""

from __future__ import annotations

from actalign.scripts.prompts import Strategy

SCHEMA_NAME = "actalign_scripts"
CHARS_PER_WORD = 8  # maxLength of a step: max_words * CHARS_PER_WORD (English averages ~5-6)

MAX_WORD = 20  # characters per word, so that the pattern alone bounds a step (llama.cpp ignores
# maxLength when a pattern is given). Kept simple on purpose: llguidance must decide whether pattern
# AND maxLength can match, and nested repetitions make that check give up; llama.cpp's converter
# knows no (?:...) groups.
_WORD = rf"[A-Za-z0-9'-]{{1,{MAX_WORD}}}"
_LAST = rf"[A-Za-z0-9'-]{{0,{MAX_WORD - 2}}}[A-Za-z0-9]{{2}}"


def step_pattern(max_words: int) -> str:
    """Regex of one step: 1 to `max_words` words, as described in the module docstring."""
    return rf"^({_WORD},? ){{0,{max_words - 1}}}{_LAST}[.]?$"


def step_schema(strategy: Strategy) -> dict:
    return {
        "type": "string",
        "minLength": 2,
        "maxLength": strategy.max_words * CHARS_PER_WORD,
        "pattern": step_pattern(strategy.max_words),
    }


def scripts_schema(actions: list[str], strategy: Strategy) -> dict:
    """JSON Schema of an answer holding scripts for exactly `actions` under `strategy`."""
    script = {
        "type": "array",
        "items": step_schema(strategy),
        "minItems": strategy.min_steps,
        "maxItems": strategy.max_steps,
    }
    return {
        "type": "object",
        "properties": {
            "actions": {
                "type": "object",
                "properties": {a: script for a in actions},
                "required": list(actions),
                "additionalProperties": False,
            }
        },
        "required": ["actions"],
        "additionalProperties": False,
    }
