"""Strict parsing and validation of LLM answers into scripts (ordered lists of steps)."""

from __future__ import annotations

import json
import re

from actalign.candidates import norm  # one rule for names
from actalign.scripts.prompts import Strategy

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
# list numbering only: "1. ", "2) ", "(3) ", "4: ", "5 - ", "Step 6: ", "step 7 "; never a number that
# belongs to the step ("360 spin", "2 defenders", "3-point shot", "1.5 seconds later")
_NUMBERING = re.compile(
    r"^\s*(?:step\s*\d+\s*[.):-]?\s+|\(\d+\)\s*|\d+[.):](?=\s)\s*|\d+\s+-\s+)", re.IGNORECASE
)


def unique_names(names: list[str]) -> list[str]:
    """`names` without repeats up to case and spaces, first spelling kept, order kept."""
    seen: dict[str, str] = {}
    for n in names:
        seen.setdefault(norm(n), n)
    return list(seen.values())


class InvalidAnswer(ValueError):
    """The answer does not hold valid scripts; `problems` says why, in words an LLM can act on."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def extract_json(text: str) -> object:
    """The first JSON object in `text`, also when wrapped in prose or code fences."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        start = chunk.find("{")
        while start != -1:
            try:
                obj, _ = decoder.raw_decode(chunk[start:])
                return obj
            except json.JSONDecodeError:
                start = chunk.find("{", start + 1)
            except RecursionError:  # thousands of brackets: no script is nested like that
                raise InvalidAnswer(["the JSON is nested too deeply to be scripts"]) from None
    raise InvalidAnswer(["the answer holds no JSON object"])


def _mapping(obj: object) -> dict:
    if isinstance(obj, dict) and isinstance(obj.get("actions"), dict):
        return obj["actions"]
    if isinstance(obj, dict):
        return obj
    raise InvalidAnswer(["the JSON is not an object mapping action names to lists of steps"])


def clean_step(step: str) -> str:
    return " ".join(_NUMBERING.sub("", step).split()).strip()


def validate_steps(action: str, steps: object, strategy: Strategy | None) -> tuple[list[str], list[str]]:
    """(cleaned steps, problems) for one action."""
    if not isinstance(steps, list) or not steps:
        return [], [f"'{action}' must map to a non-empty list of steps"]
    problems, cleaned, seen = [], [], set()
    for i, s in enumerate(steps, 1):
        if not isinstance(s, str):
            problems.append(f"step {i} of '{action}' is not a string")
            continue
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            problems.append(f"step {i} of '{action}' holds an invalid character (a lone surrogate)")
            continue
        c = clean_step(s)
        if len(re.sub(r"[\W_]", "", c)) < 2:
            problems.append(f"step {i} of '{action}' is empty or trivial ({s!r})")
            continue
        if norm(c) in seen:
            problems.append(f"'{action}' repeats the step {c!r}")
            continue
        if strategy is not None and len(c.split()) > strategy.max_words:
            problems.append(
                f"step {i} of '{action}' has {len(c.split())} words (at most {strategy.max_words})"
            )
            continue
        seen.add(norm(c))
        cleaned.append(c)
    if strategy is not None and not problems and not strategy.min_steps <= len(cleaned) <= strategy.max_steps:
        want = (
            f"exactly {strategy.min_steps}"
            if strategy.min_steps == strategy.max_steps
            else f"{strategy.min_steps} to {strategy.max_steps}"
        )
        problems.append(f"'{action}' has {len(cleaned)} steps; give {want}")
    return cleaned, problems


def parse_scripts(
    text: str, domain: str, actions: list[str], strategy: Strategy | None
) -> dict[str, list[str]]:
    """Scripts for exactly `actions` from an LLM answer; raises InvalidAnswer listing every problem.

    Keys are matched case- and space-insensitively, also in the "<action> in <domain>" form.
    """
    mapping = _mapping(extract_json(text))
    by_norm: dict[str, object] = {}
    suffix = f" in {norm(domain)}"
    for key, value in mapping.items():
        k = norm(str(key))
        by_norm[k] = value
        if k.endswith(suffix):
            by_norm.setdefault(k[: -len(suffix)], value)
    scripts, problems = {}, []
    for action in actions:
        if norm(action) not in by_norm:
            problems.append(f"the action '{action}' is missing")
            continue
        steps, issues = validate_steps(action, by_norm[norm(action)], strategy)
        problems += issues
        scripts[action] = steps
    if problems:
        raise InvalidAnswer(problems)
    return scripts
