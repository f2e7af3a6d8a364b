"""No process of a run outlives it: a small watchdog process that follows the run's descendants and,
once the run is gone (however it ended, kill -9 included), ends the ones still alive.

Used where a run starts processes that do not watch it themselves (a local Ray instance: its
agents would stay orphaned after the driver is killed). Linux (/proc); elsewhere a no-op.

    start_reaper()          # in the run's process, before it starts the processes
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL = 0.5  # seconds between looks at the run's descendants


def start_reaper() -> subprocess.Popen | None:
    """Start the watchdog for this process (None where /proc is absent)."""
    if not Path("/proc/self/stat").exists():
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "actalign.reaper", str(os.getpid())],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
    )


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def descendants(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of `root`."""
    children: dict[int, list[tuple[int, int]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _stat(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append((int(entry.name), info[1]))
    found, todo = {}, [root]
    while todo:
        for pid, started in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = started
                todo.append(pid)
    return found


def _end(known: dict[int, int], me: int) -> None:
    """SIGTERM the processes still alive (the same ones: start times checked), then SIGKILL."""
    alive = lambda: {p: s for p, s in known.items() if p != me and (_stat(p) or (0, -1))[1] == s}  # noqa: E731
    for sig, wait in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 0.0)):
        for pid in alive():
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        t0 = time.monotonic()
        while alive() and time.monotonic() - t0 < wait:
            time.sleep(0.1)


def watch(run: int) -> None:
    """Follow `run`'s descendants until it is gone, then end those left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's; this one cleans up after it
    me = os.getpid()
    started = (_stat(run) or (0, None))[1]
    known: dict[int, int] = {}
    while (_stat(run) or (0, None))[1] == started and started is not None:
        known.update(descendants(run))
        known = {p: s for p, s in known.items() if (_stat(p) or (0, -1))[1] == s}
        time.sleep(POLL)
    _end(known, me)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
