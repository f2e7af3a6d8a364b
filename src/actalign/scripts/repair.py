"""The repair conversation every script writer shares: ask, and once more listing the problems."""

from __future__ import annotations

from collections.abc import Callable

from actalign.errors import ActAlignError
from actalign.scripts.parse import InvalidAnswer, parse_scripts
from actalign.scripts.prompts import STRATEGIES, Strategy

Ask = Callable[[list[dict], Strategy, list[str]], str]


def as_strategy(strategy: Strategy | str) -> Strategy:
    return STRATEGIES[strategy] if isinstance(strategy, str) else strategy


def write_with_repair(ask: Ask, domain: str, actions: list[str], strategy: Strategy, who: str) -> dict:
    """Ask once; if the answer is invalid, ask once more listing its problems; else give up."""
    messages = [{"role": "user", "content": strategy.render(domain, actions)}]
    answer = ask(messages, strategy, actions)
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
    answer = ask(messages, strategy, actions)
    try:
        return parse_scripts(answer, domain, actions, strategy)
    except InvalidAnswer as e:
        raise ActAlignError(
            f"The LLM ({who}) gave invalid scripts for {domain} twice: {e}. Try another "
            "model, or write the scripts by hand (`scripts=FILE`)."
        ) from None
