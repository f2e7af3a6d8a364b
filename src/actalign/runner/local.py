"""The local engine: decoding in worker processes, encoding in this process, frames of several
clips packed into full batches, clips scored as soon as their last frame is encoded.

    workers (one per core)           this process
    decode clip -> chunks --pipe-->  pack frames of any clips into full batches -> encode
                                     -> a clip's frames all encoded -> score -> yield its row

Each worker has its own pipe (no lock shared between workers, so a worker killed in the middle of
a message cannot block the others) and is given one clip at a time. A worker that dies (killed,
crashed decoder) or falls silent (stopped: no message for `stall_seconds` while this process waits
for it) is replaced and its clip decoded again once; then the clip is a failure and the run goes
on. A pipe holds about one chunk, so memory holds a few chunks per worker, never whole videos.

Workers are processes started by forkserver (clean: no copy of the model, no inherited threads).
Like every Python multiprocessing user, a script that calls the runner must keep its top-level
code under `if __name__ == "__main__":` (each worker imports the script); `workers=0` decodes in
a thread of this process instead (slower where decoding is the bottleneck).
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait as wait_for

import numpy as np

from actalign.embed import VideoEmbedding, write_entry
from actalign.encoders.cpu import usable_cores
from actalign.errors import ActAlignError
from actalign.runner.decode import DecodeOptions, Done, Failure, decode_clip
from actalign.runner.plan import Clip
from actalign.runner.score import Scored

_POLL = 0.05  # seconds between checks on the workers while no message arrives
MAX_WAIT = 1.0  # seconds decoded frames may wait for a full batch while more are still coming
WORKER_NICENESS = 10


AHEAD = 2  # clips given to a worker at a time: the one it decodes, and the next
OUTBOX = 4  # decoded chunks a worker may hold while the run is busy encoding
STALL_SECONDS = 300.0  # a worker silent this long (while we wait for it) is stopped and replaced


def _context():
    """Worker processes that start clean (no copy of the model, no inherited threads or locks)."""
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


WORKERS_CANNOT_START = (
    "Decode worker processes could not start. If you call actalign from a script, put the call "
    'under `if __name__ == "__main__":` (Python\'s multiprocessing imports the script in each '
    "worker), or pass workers=0 to decode in this process."
)


def _watch(run_pid: int) -> None:
    """In a worker: exit at once when the run's process is gone (kill -9 included), even in the
    middle of decoding a clip; a worker never outlives its run."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(run_pid, 0)
        except ProcessLookupError:
            os._exit(0)
        except PermissionError:
            pass


def _worker(conn, options: DecodeOptions, run_pid: int | None = None) -> None:
    """Decode the clips this worker is sent, one at a time, until its pipe closes; every message
    is (clip id, kind, payload). Ctrl-C is the run's to handle (no traceback from each worker)."""
    import signal
    import warnings

    if run_pid is not None:  # a process of its own (not the in-process thread)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(target=_watch, args=(run_pid,), daemon=True, name="actalign-watch").start()
        warnings.simplefilter("ignore")  # in a worker process: warnings travel in Done messages
        # where decoders and the encoder share cores, the encoder (the usual bottleneck) goes
        # first; decoders still get every cycle it leaves
        with contextlib.suppress(OSError, AttributeError):
            os.nice(WORKER_NICENESS)
    # decoded chunks wait in a small outbox sent by a thread of their own, so that decoding goes on
    # while the run is busy encoding (a pipe holds less than one chunk)
    outbox: queue.Queue = queue.Queue(maxsize=OUTBOX)
    broken = threading.Event()

    def send_all() -> None:
        while True:
            item = outbox.get()
            if item is None:
                return
            try:
                conn.send(item)
            except (OSError, EOFError, ValueError):  # the run closed the pipe (finished, or gone)
                broken.set()
                return

    sender = threading.Thread(target=send_all, daemon=True, name="actalign-send")
    sender.start()

    def send(item) -> None:
        while not broken.is_set():
            try:
                outbox.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise EOFError

    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            clip, attempt = task
            send((clip.id, "start", attempt))
            try:
                for part in decode_clip(clip, options):
                    send((clip.id, type(part).__name__.lower(), part))
            except ActAlignError as e:
                send((clip.id, "error", str(e)))
            except (EOFError, OSError):
                raise
            except Exception as e:  # a decoder bug must not take the run down
                send((clip.id, "error", f"could not be decoded ({type(e).__name__}: {e})"))
    except (EOFError, OSError):  # the run closed the pipe (finished, or gone)
        return
    finally:
        with contextlib.suppress(queue.Full):
            outbox.put_nowait(None)


class _Thread(threading.Thread):
    """A decode worker as a thread of this process (workers=0), with a process's interface."""

    pid = None
    exitcode = None

    def kill(self) -> None:
        pass


@dataclass
class _Worker:
    proc: object
    conn: object  # this side of its pipe
    clips: list = field(default_factory=list)  # the clips it was given and has not finished, in order
    seen: float = field(default_factory=time.monotonic)  # its last message (or our last busy spell)
    started: bool = False  # it has sent a message


@dataclass
class _ClipState:
    clip: Clip
    chunks: list = field(default_factory=list)  # embeddings (B, d), in order
    stamps: list = field(default_factory=list)
    waiting: int = 0  # frames queued for the encoder
    done: Done | None = None  # all frames decoded
    finished: bool = False  # written or failed
    attempt: int = 0


class LocalEngine:
    """Runs clips through decode workers and this process's encoder; `run(clips)` yields each
    clip's `Scored` (from `scorer.score`) or its `Failure` as soon as it is known. Reusable:
    each run keeps its state in its own `_LocalRun`.

    workers: decode worker processes (default: one per core; 0: a thread of this process).
    on_frames(n) is called after each encoded batch (for progress). stall_seconds: how long a
    worker may stay silent while the run waits for it.
    """

    def __init__(
        self,
        encoder,
        options: DecodeOptions,
        scorer,
        workers: int | None = None,
        on_frames: Callable[[int], None] | None = None,
        *,
        stall_seconds: float = STALL_SECONDS,
    ) -> None:
        self.encoder, self.options, self.scorer = encoder, options, scorer
        self.workers = usable_cores() if workers is None else workers
        self.on_frames, self.stall_seconds = on_frames, stall_seconds
        if self.workers < 0:
            raise ActAlignError(f"The number of workers must be 0 or more, got {self.workers}.")

    def run(self, clips: list[Clip]) -> Iterator[Scored | Failure]:
        """Scored clips and failures, in the order clips finish."""
        yield from _LocalRun(self, clips)


class _LocalRun:
    """One run of a LocalEngine: its workers, queues and clips' states."""

    def __init__(self, engine: LocalEngine, clips: list[Clip]) -> None:
        self.encoder, self.options, self.scorer = engine.encoder, engine.options, engine.scorer
        self.workers, self.on_frames, self.stall_seconds = (
            engine.workers,
            engine.on_frames,
            engine.stall_seconds,
        )
        self.clips = clips
        self.cache = None
        if self.options.cache_dir is not None:
            from actalign.encoders.cache import EmbeddingCache

            self.cache = EmbeddingCache(self.options.cache_dir)

    def __iter__(self) -> Iterator[Scored | Failure]:
        clips = self.clips
        out: deque = deque()
        self.on_row = lambda clip, emb, warns: out.append(self.scorer.score(clip, emb, warns))
        self.on_error = lambda clip, reason: out.append(Failure(clip, reason))
        if not clips:
            return
        self.states = {c.id: _ClipState(c) for c in clips}
        self.todo: deque = deque((c, 0) for c in clips)
        self.pending: deque = deque()  # (clip id, frames (B, H, W, 3)) waiting for the encoder
        self.ready: set[str] = set()  # clips decoded to the end, perhaps still being encoded
        self.waiting_since = 0.0  # when the oldest frame waiting for the encoder arrived
        self.undecoded = len(clips)  # clips not yet decoded to their end (nor failed)
        self.left = len(clips)
        self.stillborn, self.any_started = 0, False
        self.ctx = _context() if self.workers else None
        self.pool = [self._spawn() for _ in range(min(max(1, self.workers), len(clips)))]
        try:
            while self.left:
                self._dispatch()
                ready = wait_for([w.conn for w in self.pool], timeout=_POLL)
                for w in [w for w in self.pool if w.conn in ready]:
                    self._receive(w)
                if self.pending and self._partial_batch_due():
                    self._encode()
                    self._finish_ready()
                self._check_workers()
                while out:
                    yield out.popleft()
            while out:
                yield out.popleft()
        finally:
            self._close()

    # ------------------------------------------------------------------ workers

    def _spawn(self) -> _Worker:
        mine, theirs = mp.Pipe(duplex=True)
        if self.ctx is None:
            proc = _Thread(target=_worker, args=(theirs, self.options), daemon=True, name="actalign-decode")
        else:
            proc = self.ctx.Process(target=_worker, args=(theirs, self.options, os.getpid()), daemon=True)
        proc.start()
        if self.ctx is not None:
            theirs.close()  # the worker holds its end: its death closes the pipe
        return _Worker(proc, mine)

    def _dispatch(self) -> None:
        """Keep each worker AHEAD clips deep: the next one waits in its pipe while it decodes."""
        for w in self.pool:
            while len(w.clips) < AHEAD and self.todo:
                clip, attempt = self.todo.popleft()
                try:
                    w.conn.send((clip, attempt))
                except (OSError, EOFError):  # died meanwhile: found by _check_workers
                    self.todo.appendleft((clip, attempt))
                    break
                if not w.clips:
                    w.seen = time.monotonic()
                w.clips.append(clip.id)
                self.states[clip.id].attempt = attempt

    def _receive(self, w: _Worker) -> None:
        """Every message the worker has sent so far."""
        try:
            while w.conn.poll():
                cid, kind, payload = w.conn.recv()
                w.seen, w.started = time.monotonic(), True
                self.any_started = True
                if kind in ("done", "error", "cached") and cid in w.clips:
                    w.clips.remove(cid)
                self._handle(cid, kind, payload)
        except (EOFError, OSError):
            pass  # a dead worker: _check_workers replaces it

    def _check_workers(self) -> None:
        """Replace dead or silent workers; their clip is decoded again once, then it fails."""
        now = time.monotonic()
        for i, w in enumerate(self.pool):
            alive = w.proc.is_alive()
            silent = alive and bool(w.clips) and now - w.seen > self.stall_seconds
            if alive and not silent:
                continue
            if silent:
                w.proc.kill()
                w.proc.join(timeout=5)
            reason = (
                f"the decoder process was silent for {self.stall_seconds:g} s on this video"
                if silent
                else f"the decoder process died on this video (exit code {w.proc.exitcode})"
            )
            with contextlib.suppress(OSError):
                w.conn.close()
            if not w.started and not silent:
                self.stillborn += 1
                if self.stillborn >= 3 and not self.any_started:
                    raise ActAlignError(WORKERS_CANNOT_START)
            for cid in reversed(w.clips):  # the clip it was decoding, and the next one given to it
                state = self.states[cid]
                if not state.finished and state.done is None:
                    self._drop(cid)
                    if state.attempt >= 1 and cid == w.clips[0]:
                        self._fail(state, reason + ", twice")
                    else:
                        self.todo.appendleft((state.clip, state.attempt + (cid == w.clips[0])))
            self.pool[i] = self._spawn() if (self.todo or self.left) else w

    def _close(self) -> None:
        for w in self.pool:
            with contextlib.suppress(OSError, EOFError, ValueError):
                w.conn.send(None)
        for w in self.pool:
            w.proc.join(timeout=1)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=5)
            with contextlib.suppress(OSError):
                w.conn.close()

    # ------------------------------------------------------------------ messages

    def _handle(self, cid: str, kind: str, payload) -> None:
        state = self.states[cid]
        if state.finished or kind == "start":
            return
        if kind == "cached":
            state.chunks, state.stamps = [payload.frames], [payload.timestamps]
            state.done = Done(payload.end, payload.warnings, None)
            self.ready.add(cid)
            self.undecoded -= 1
        elif kind == "chunk":
            if not self.pending:
                self.waiting_since = time.monotonic()
            self.pending.append((cid, payload.frames))
            state.waiting += len(payload.timestamps)
            state.stamps.append(payload.timestamps)
            while sum(len(p[1]) for p in self.pending) >= self.encoder.batch_size:
                self._encode()
        elif kind == "done":
            state.done = payload
            self.ready.add(cid)
            self.undecoded -= 1
        elif kind == "error":
            self._fail(state, payload)
        self._finish_ready()

    def _partial_batch_due(self) -> bool:
        """Encode less than a full batch only when no more frames can come (every clip left has
        been decoded to its end), or when frames have waited MAX_WAIT (a slow decoder must not
        hold finished clips back). Otherwise batches stay full: frames of several clips."""
        if self.undecoded == 0:
            return True
        return time.monotonic() - self.waiting_since > MAX_WAIT

    def _fail(self, state: _ClipState, reason: str) -> None:
        self._drop(state.clip.id)
        if state.done is None:
            self.undecoded -= 1
        state.finished = True
        self.ready.discard(state.clip.id)
        self.left -= 1
        self.on_error(state.clip, reason)

    def _drop(self, cid: str) -> None:
        kept = [p for p in self.pending if p[0] != cid]
        self.pending.clear()
        self.pending.extend(kept)
        state = self.states[cid]
        state.chunks, state.stamps, state.waiting = [], [], 0

    # ------------------------------------------------------------------ encoding

    def _encode(self) -> None:
        """Encode one batch of up to batch_size frames taken from the front of the queue (a
        partial batch only when nothing else is arriving)."""
        size = self.encoder.batch_size
        take, owners, have = [], [], 0
        pending = self.pending
        while pending and have < size:
            cid, frames = pending[0]
            room = size - have
            if len(frames) <= room:
                pending.popleft()
                part = frames
            else:
                part = frames[:room]
                pending[0] = (cid, frames[room:])
            take.append(part)
            owners.append((cid, len(part)))
            have += len(part)
        if not take:
            return
        batch = take[0] if len(take) == 1 else np.concatenate(take)
        embedded = self.encoder.encode_images(batch)
        self.waiting_since = time.monotonic()
        for w in self.pool:  # while we encoded, nobody listened: that is not the workers' silence
            w.seen = max(w.seen, self.waiting_since)
        at = 0
        for cid, k in owners:
            state = self.states[cid]
            state.chunks.append(embedded[at : at + k])
            state.waiting -= k
            at += k
        if self.on_frames is not None:
            self.on_frames(have)

    def _finish_ready(self) -> None:
        for cid in [c for c in self.ready if not self.states[c].waiting]:
            self.ready.discard(cid)
            state = self.states[cid]
            frames = np.concatenate(state.chunks)
            stamps = np.concatenate(state.stamps)
            done = state.done
            emb = VideoEmbedding(
                frames, stamps, done.end, cached=done.key is None, warnings=tuple(done.warnings)
            )
            if self.cache is not None and done.key is not None:
                write_entry(self.cache, done.key, frames, stamps, done.end, done.warnings)
            state.chunks, state.stamps, state.finished = [], [], True  # free the memory
            self.left -= 1
            try:
                self.on_row(state.clip, emb, [*done.warnings, *done.notes])
            except ActAlignError as e:
                self.on_error(state.clip, str(e))


def now() -> float:
    return time.monotonic()
