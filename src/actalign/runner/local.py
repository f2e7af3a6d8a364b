"""The local engine: decoding in worker processes, encoding in this process, frames of several
clips packed into full batches, clips scored and written as soon as their last frame is encoded.

    workers (one per core)          this process
    decode clip -> chunks --queue--> pack frames of any clips into full batches -> encode
                                      -> a clip's frames all encoded -> score -> write

The queue is bounded, so memory holds a few chunks per worker, never whole videos. A worker that
dies (killed, crashed decoder) is replaced and its clip decoded again (once; then it is a failure).

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

import numpy as np

from actalign.embed import VideoEmbedding
from actalign.errors import ActAlignError
from actalign.runner.decode import DecodeOptions, Done, Failure, decode_clip
from actalign.runner.plan import Clip

_POLL = 0.05  # seconds between checks on the workers while no message arrives
MAX_WAIT = 1.0  # seconds decoded frames may wait for a full batch while more are still coming
WORKER_NICENESS = 10


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _context():
    """Worker processes that start clean (no copy of the model, no inherited threads or locks)."""
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


class _Threads:
    """The multiprocessing context's interface, with threads (workers=0)."""

    Queue = staticmethod(lambda maxsize=0: _ThreadQueue(maxsize))
    Event = threading.Event

    class Process(threading.Thread):
        def __init__(self, target, args, daemon=True) -> None:
            super().__init__(target=target, args=args, daemon=daemon, name="actalign-decode")
            self.exitcode = None

        pid = None

        def terminate(self) -> None:
            pass


class _ThreadQueue(queue.Queue):
    def cancel_join_thread(self) -> None:
        pass

    def close(self) -> None:
        pass


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


def _worker(tasks, results, stop, options: DecodeOptions, run_pid: int | None = None) -> None:
    """Decode clips from `tasks` until `stop` is set; every message is (clip id, kind, payload).
    A worker whose run was killed (its parent gone) exits instead of waiting forever; Ctrl-C is
    the run's to handle (the worker ignores it: no traceback from each worker)."""
    import signal
    import warnings

    parent = mp.parent_process()
    if parent is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if run_pid is not None:
            threading.Thread(target=_watch, args=(run_pid,), daemon=True, name="actalign-watch").start()
        warnings.simplefilter("ignore")  # in a worker process: warnings travel in Done messages
        # where decoders and the encoder share cores, the encoder (the usual bottleneck) goes
        # first; decoders still get every cycle it leaves
        with contextlib.suppress(OSError, AttributeError):
            os.nice(WORKER_NICENESS)

    def gone() -> bool:
        return stop.is_set() or (parent is not None and not parent.is_alive())

    def send(item) -> None:
        while True:
            try:
                results.put(item, timeout=0.5)
                return
            except queue.Full:
                if gone():
                    raise SystemExit(0) from None

    while True:
        try:
            clip, attempt = tasks.get(timeout=0.2)
        except queue.Empty:
            if gone():
                return
            continue
        send((clip.id, "start", (os.getpid(), attempt)))
        try:
            for part in decode_clip(clip, options):
                send((clip.id, type(part).__name__.lower(), part))
        except ActAlignError as e:
            send((clip.id, "error", str(e)))
        except Exception as e:  # a decoder bug must not take the run down
            send((clip.id, "error", f"could not be decoded ({type(e).__name__}: {e})"))


@dataclass
class _ClipState:
    clip: Clip
    chunks: list = field(default_factory=list)  # embeddings (B, d), in order
    stamps: list = field(default_factory=list)
    waiting: int = 0  # frames queued for the encoder
    done: Done | None = None  # all frames decoded
    finished: bool = False  # written or failed
    worker: int | None = None
    attempt: int = 0


class LocalEngine:
    """Runs clips through decode workers and this process's encoder; `run(clips)` yields each
    clip's output row (a dict, from `scorer.row`) or its `Failure` as soon as it is known.

    workers: decode worker processes (default: one per core; 0: a thread of this process).
    on_frames(n) is called after each encoded batch (for progress).
    """

    def __init__(
        self,
        encoder,
        options: DecodeOptions,
        scorer,
        workers: int | None = None,
        cache=None,
        on_frames: Callable[[int], None] | None = None,
    ) -> None:
        self.encoder, self.options, self.cache, self.scorer = encoder, options, cache, scorer
        self.workers = default_workers() if workers is None else workers
        self.on_frames = on_frames
        if self.workers < 0:
            raise ActAlignError(f"The number of workers must be 0 or more, got {self.workers}.")

    def run(self, clips: list[Clip]) -> Iterator[dict | Failure]:
        """Rows and failures, in the order clips finish."""
        out: deque = deque()

        def on_row(clip: Clip, emb: VideoEmbedding, warns: list[str]) -> None:
            out.append(self.scorer.row(clip, emb, warns))

        yield from self._run(clips, on_row, lambda clip, reason: out.append(Failure(clip, reason)), out)

    def _run(self, clips, on_row, on_error, out: deque) -> Iterator[dict | Failure]:
        if not clips:
            return
        ctx = _context() if self.workers else _Threads()
        n = max(1, self.workers)
        self.tasks, self.results, self.stop = ctx.Queue(), ctx.Queue(maxsize=4 * n), ctx.Event()
        self.started: set[int] = set()  # workers that took a clip
        self.stillborn = 0
        self.states = {c.id: _ClipState(c) for c in clips}
        self.pending: deque = deque()  # (clip id, frames (B, H, W, 3)) waiting for the encoder
        self.ready: set[str] = set()  # clips decoded to the end, perhaps still being encoded
        self.waiting_since = 0.0  # when the oldest frame waiting for the encoder arrived
        self.undecoded = len(clips)  # clips not yet decoded to their end (nor failed)
        self.left = len(clips)
        self.on_row, self.on_error = on_row, on_error
        for c in clips:
            self.tasks.put((c, 0))
        procs = [self._spawn(ctx) for _ in range(min(n, len(clips)))]
        try:
            while self.left:
                try:
                    cid, kind, payload = self.results.get(timeout=_POLL)
                except queue.Empty:
                    if self.pending and self._partial_batch_due():
                        self._encode()
                        self._finish_ready()
                    procs = self._check_workers(ctx, procs)
                    while out:
                        yield out.popleft()
                    continue
                self._handle(cid, kind, payload)
                if self.pending and self._partial_batch_due():
                    self._encode()
                    self._finish_ready()
                while out:
                    yield out.popleft()
            while out:
                yield out.popleft()
        finally:
            self.stop.set()
            for p in procs:
                p.join(timeout=1)
                if p.is_alive():
                    p.terminate()
                    p.join(timeout=5)
            for q in (self.tasks, self.results):
                q.cancel_join_thread()
                q.close()

    def _handle(self, cid: str, kind: str, payload) -> None:
        state = self.states[cid]
        if state.finished:
            return
        if kind == "start":
            state.worker, state.attempt = payload
            self.started.add(payload[0])
        elif kind == "cached":
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

    # ------------------------------------------------------------------ workers

    def _spawn(self, ctx):
        args = (self.tasks, self.results, self.stop, self.options, os.getpid())
        p = ctx.Process(target=_worker, args=args, daemon=True)
        p.start()
        return p

    def _check_workers(self, ctx, procs):
        """Replace dead workers; their clip is decoded again once, then it is a failure."""
        alive = []
        for p in procs:
            if p.is_alive():
                alive.append(p)
                continue
            if p.pid not in self.started:
                self.stillborn += 1
                if self.stillborn >= 3 and not self.started:
                    raise ActAlignError(WORKERS_CANNOT_START)
            for state in self.states.values():
                if state.worker == p.pid and not state.finished and state.done is None:
                    state.worker = None
                    if state.attempt >= 1:
                        self._fail(
                            state, f"the decoder process died twice on this video (exit code {p.exitcode})"
                        )
                    else:
                        self._drop(state.clip.id)
                        self.tasks.put((state.clip, state.attempt + 1))
            alive.append(self._spawn(ctx))
        return alive

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
                self.cache.put_video(done.key, frames, stamps, done.end, done.warnings)
            state.chunks, state.stamps, state.finished = [], [], True  # free the memory
            self.left -= 1
            try:
                self.on_row(state.clip, emb, done.warnings)
            except ActAlignError as e:
                self.on_error(state.clip, str(e))


def now() -> float:
    return time.monotonic()
