"""Where a fresh process's seconds go before its first frame is encoded, stage by stage.

    before   from actalign's import to the start of the model stack's (parsing, planning, scripts)
    imports  the model stack: torch, and transformers or, for a SigLIP checkpoint loaded
             natively (`encoders.native`), safetensors and sentencepiece (most of a CPU
             process's startup)
    model    the checkpoint loaded (built on the meta device and filled from the memory-mapped
             safetensors, by transformers 5 or natively), cast to its dtype, one text encoded
             as a probe
    first batch  the first frames' forward pass (preprocessing included)

Each stage is recorded once per process, the first time it happens (`record`, `timed`);
`line()` says them in one line, which the commands print on stderr with `-v`.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

__all__ = ["begin", "line", "mark_before", "record", "stages", "timed"]

ORDER = ("before", "imports", "model", "first batch")
_born = time.perf_counter()  # when actalign was first imported in this process
_stages: dict[str, float] = {}
_begun = False


def record(stage: str, seconds: float) -> None:
    """Note a stage's seconds; only its first occurrence in the process counts."""
    _stages.setdefault(stage, float(seconds))


def mark_before() -> None:
    """The seconds from actalign's import to now, as the "before" stage (once)."""
    record("before", time.perf_counter() - _born)


@contextmanager
def timed(stage: str):
    """Record the block's seconds as `stage` (the first time only)."""
    if stage in _stages:
        yield
        return
    t0 = time.perf_counter()
    try:
        yield
    finally:
        record(stage, time.perf_counter() - t0)


def stages() -> dict[str, float]:
    """The stages recorded so far, in their order."""
    known = [s for s in ORDER if s in _stages] + [s for s in _stages if s not in ORDER]
    return {s: _stages[s] for s in known}


def begin() -> None:
    """A command starts: what was recorded before is forgotten; the first command of a process
    counts from actalign's import, another one (commands run in-process one after another) from now."""
    global _born, _begun
    _stages.clear()
    if _begun:
        _born = time.perf_counter()
    _begun = True


def line() -> str | None:
    """`startup: before 0.21 s, imports 1.23 s, model 0.80 s, first batch 0.40 s`, or None when
    no model was loaded in this process (a cached or refused run, or one on a Ray cluster)."""
    found = stages()
    if "imports" not in found and "model" not in found:
        return None
    return "startup: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in found.items())
