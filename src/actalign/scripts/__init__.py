"""Sub-action scripts: each candidate action becomes an ordered list of visible steps.

`ScriptSource` finds them in this order: hand-written files, the store, then an LLM (whose
answers are stored, so each script is generated once). `make_writer` gives the LLM: in-process
(`local:ID_OR_DIR`, `scripts.local`) or any OpenAI-compatible endpoint (`scripts.llm`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from actalign.errors import ActAlignError
from actalign.scripts.prompts import DEFAULT_STRATEGY, STRATEGIES, Strategy
from actalign.scripts.schema import scripts_schema
from actalign.scripts.store import (
    GENERATED,
    Script,
    ScriptStore,
    StoreReadOnly,
    lookup,
    read_scripts_file,
)
from actalign.scripts.writers import make_writer

__all__ = [
    "STRATEGIES",
    "Script",
    "ScriptSource",
    "ScriptStore",
    "Strategy",
    "make_writer",
    "read_scripts_file",
    "scripts_schema",
]


class MissingScripts(ActAlignError):
    """No script for some actions and no LLM to write them: `domain`, `missing` (the actions)."""

    def __init__(self, domain: str, missing: Sequence[str], sentence: str) -> None:
        super().__init__(sentence)
        self.domain, self.missing = domain, list(missing)


class ScriptSource:
    """Scripts for (domain, actions): hand-written files first, then the store, then the
    writer (an LLM), whose answers are stored so each script is generated once."""

    def __init__(
        self,
        files: Sequence[str | os.PathLike] = (),
        store: ScriptStore | None = None,
        writer=None,
        strategy: str = DEFAULT_STRATEGY,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ActAlignError(f"Unknown script strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")
        self.hand = [read_scripts_file(f) for f in files]
        self.store = store
        self.writer = writer
        self.strategy = STRATEGIES[strategy]

    def _stored(self, domain: str, action: str) -> list[str] | None:
        if self.store is None:
            return None
        exact = {}
        if self.writer is not None:  # a configured LLM regenerates when model or prompt changed
            exact = {
                "model": self.writer.model,
                "temperature": self.strategy.temperature,
                "prompt_version": self.strategy.version,
            }
        found = self.store.get(domain, action, strategy=self.strategy.name, **exact)
        return list(found.steps) if found else None

    def offline(self, domain: str, action: str) -> tuple[list[str], str] | None:
        """(steps, where they come from: "file" or "store") without asking the LLM, or None."""
        steps = next((s for f in self.hand if (s := lookup(f, domain, action))), None)
        if steps:
            return list(steps), "file"
        stored = self._stored(domain, action)
        return (stored, "store") if stored else None

    def get(self, domain: str, actions: Sequence[str]) -> dict[str, list[str]]:
        """{action: steps} for every action; generates the missing ones or says how to add them."""
        return {a: steps for a, (steps, _) in self.get_with_origin(domain, actions).items()}

    def get_with_origin(self, domain: str, actions: Sequence[str]) -> dict[str, tuple[list[str], str]]:
        """{action: (steps, origin)}: origin "file", "store", or "llm:<writer source>" for a script
        written now; generates the missing ones or says how to add them."""
        found: dict[str, tuple[list[str], str]] = {}
        for action in actions:
            hit = self.offline(domain, action)
            if hit:
                found[action] = hit
        missing = [a for a in actions if a not in found]
        if missing and self.writer is None:
            listed = ", ".join(repr(a) for a in missing)
            hint = self._suggest(domain, missing)
            raise MissingScripts(
                domain,
                missing,
                f"No scripts for {listed} in {domain!r}.{hint} Write them in a JSON file "
                f'({{"{domain}": {{"{missing[0]}": ["first step", "second step", ...]}}}}) and pass '
                "`scripts=FILE`, or configure an LLM to generate them (`llm=local:MODEL_ID_OR_DIR` "
                "in-process, OPENAI_API_KEY, or OPENAI_BASE_URL for a local server).",
            )
        if missing:
            fresh = self.writer.write(domain, missing, self.strategy)
            if self.store is not None:
                try:
                    self.store.put_many([self._generated(domain, a, s) for a, s in fresh.items()])
                except StoreReadOnly:
                    self.store.say_read_only()  # the scripts are used all the same
            origin = f"llm:{getattr(self.writer, 'source', None) or self.writer.model}"
            found.update({a: (list(s), origin) for a, s in fresh.items()})
        return {a: found[a] for a in actions}

    def _suggest(self, domain: str, missing: Sequence[str]) -> str:
        """' Did you mean ...?' for names close to scripts that exist (typos in candidates)."""
        import difflib

        from actalign.scripts.parse import norm

        known = {a for f in self.hand for d, acts in f.items() if norm(d) == norm(domain) for a in acts}
        if not known:
            domains = {d for f in self.hand for d in f}
            close = difflib.get_close_matches(domain, list(domains), n=1, cutoff=0.7)
            return f" (Is the domain {close[0]!r}?)" if close else ""
        hints = []
        for a in missing:
            close = difflib.get_close_matches(a, list(known), n=1, cutoff=0.7)
            if close:
                hints.append(f"{close[0]!r} for {a!r}")
        return f" Did you mean {', '.join(hints)}?" if hints else ""

    def _generated(self, domain: str, action: str, steps: list[str]) -> Script:
        return Script(
            domain,
            action,
            tuple(steps),
            GENERATED,
            self.strategy.name,
            self.writer.model,
            self.strategy.temperature,
            self.strategy.version,
            source=getattr(self.writer, "source", "") or (self.writer.base_url or "openai"),
        )
