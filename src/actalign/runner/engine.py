"""The one interface of the batch runner's engines (`LocalEngine`, `RayEngine`).

An engine is built as `Engine(encoder, options, scorer, workers=None, on_frames=None, **own)`
(own: `stall_seconds` for the local engine, `address` for Ray), keeps no state of a run on itself,
and yields, as clips finish, each clip's `Scored` (its predictions by method) or its `Failure`.
Rows are made only by the run folder's writer (`runner.stream`), from the `Scored`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol, runtime_checkable

from actalign.runner.decode import Failure
from actalign.runner.plan import Clip
from actalign.runner.score import Scored

__all__ = ["Engine"]


@runtime_checkable
class Engine(Protocol):
    """Clips in; each clip's `Scored` or `Failure` out, in the order clips finish."""

    def run(self, clips: list[Clip]) -> Iterator[Scored | Failure]: ...
