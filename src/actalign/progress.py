"""Progress people can trust: a bar with a total and an ETA on a terminal, a plain line every few
seconds when stderr is a log file (nohup, SLURM, CI), nothing with `--quiet`.

    with Progress("basketball.mp4", total=268, unit="frame") as p:
        for batch in batches:
            p.update(len(batch))

`configure(quiet=True)` silences every bar of the process; `ACTALIGN_PROGRESS_INTERVAL` sets the
seconds between plain lines (default 5).
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

_settings = {"quiet": False, "verbose": False}


def configure(quiet: bool = False, verbose: bool = False) -> None:
    """Silence (or restore) all progress output of this process; `verbose`: also the lines other
    libraries (Ray, transformers, Gradio) log and warn, which are hidden otherwise."""
    _settings["quiet"] = bool(quiet)
    _settings["verbose"] = bool(verbose) and not quiet
    if quiet and "huggingface_hub" in sys.modules:  # else when a model loads (`quiet_hub`): a
        quiet_hub()  # command that loads none need not import the hub (and tqdm) at all


def quiet_hub() -> None:
    """The hub's download bars off when quiet; called where models load (`actalign.hub`)."""
    if _settings["quiet"]:
        try:
            from huggingface_hub.utils import disable_progress_bars

            disable_progress_bars()
        except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
            pass


def is_quiet() -> bool:
    return _settings["quiet"]


def is_verbose() -> bool:
    """Whether other libraries' own log lines and warnings are shown (`-v`)."""
    return _settings["verbose"]


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("ACTALIGN_PROGRESS_INTERVAL", "5")))
    except ValueError:
        return 5.0


def _clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """One task's progress. `update(n)` adds n units; `note` is extra text (e.g. frames/s)."""

    def __init__(
        self,
        desc: str,
        total: int | None = None,
        unit: str = "frame",
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream or sys.stderr
        self.done = 0
        self.note = ""
        self.start = time.monotonic()
        self._last = self.start
        self._printed = False
        self._printed_at = -1
        self._bar = None
        self.enabled = enabled and not is_quiet()
        if self.enabled and _isatty(self.stream):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, desc=desc, unit=unit, file=self.stream, leave=False, dynamic_ncols=True
            )

    def set_total(self, total: int | None) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def update(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        if not self.enabled:
            return
        if self._bar is not None:
            if note is not None:
                self._bar.set_postfix_str(note, refresh=False)
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last >= _interval():
            self._last = now
            self._line()

    def line(self) -> str:
        """The plain progress line: done/total, share, rate, elapsed and ETA."""
        elapsed = time.monotonic() - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.desc}: {self.done}" + (f"/{self.total}" if self.total else "") + f" {self.unit}s"]
        if self.total:
            parts.append(f"{100 * self.done / self.total:.0f}%")
        parts.append(f"{rate:.3g} {self.unit}s/s")
        if self.note:
            parts.append(self.note)
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0 and self.done < self.total:
            parts.append(f"ETA {_clock((self.total - self.done) / rate)}")
        return "[actalign] " + ", ".join(parts)

    def _line(self) -> None:
        print(self.line(), file=self.stream, flush=True)
        self._printed = True
        self._printed_at = self.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._printed and self._printed_at != self.done:
            self._line()  # a long task in a log ends with its final count
        self.enabled = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
