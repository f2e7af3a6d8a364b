"""The Ray engine: the same runner on Ray Data, for a cluster (or all the GPUs of one machine).

    decode (CPU tasks) -> encode (an actor pool: one actor per GPU, CPU actors where there are
    none) -> score (CPU tasks) -> rows streamed back to this process, which writes them

Decoding, encoding and scoring use the same code as the local engine (`runner.decode`, the
encoder's `encode_images`, `runner.score.Scorer`), so both engines give the same predictions. Ray
restarts dead actors and retries their work; the run folder writes each clip once whatever is
retried. Start Ray yourself (`ray start`, `ray.init(...)`) or let this engine join
`--ray-address` / start a local instance.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from actalign.embed import VideoEmbedding, write_entry
from actalign.errors import ActAlignError
from actalign.reaper import start_reaper
from actalign.runner.decode import Cached, Chunk, DecodeOptions, Done, Failure, decode_clip
from actalign.runner.plan import Clip
from actalign.runner.score import Scored

CLIPS_PER_ENCODE = 4  # clips whose frames one actor call packs into full batches
DECODE_MEMORY = 256 * 2**20  # bytes reserved per decode task


# a line of Ray's C++ core ("[2026-01-01 10:00:00,123 E 1234 1234] core_worker.cc:2465: ..."),
# which the driver process writes to its stderr (fd 2) past Python's logging
_CORE_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [DIWEF] \d+ \d+\] ")


@contextmanager
def hidden_core_lines() -> Iterator[None]:
    """While a run is on Ray: the lines Ray's C++ core writes to this process's stderr are left
    out (shown with -v: `progress.is_verbose()`); Python's own stderr writes (progress, warnings,
    errors) go straight to the terminal as before. Only where stderr is the process's own."""
    from actalign import progress

    if progress.is_verbose() or sys.stderr is not sys.__stderr__ or sys.stderr is None:
        yield
        return
    try:
        sys.stderr.flush()
        if sys.stderr.fileno() != 2:
            raise OSError("stderr is not fd 2")
        saved = os.dup(2)
        read, write = os.pipe()
    except (OSError, ValueError, AttributeError):
        yield
        return
    python_stderr = sys.stderr
    direct = os.fdopen(
        os.dup(saved), "w", buffering=1, encoding=python_stderr.encoding, errors="backslashreplace"
    )
    sys.stderr = direct
    os.dup2(write, 2)
    os.close(write)

    def pump() -> None:
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not _CORE_LINE.match(line):
                    with contextlib.suppress(OSError):
                        os.write(saved, line)

    thread = threading.Thread(target=pump, name="ray-core-lines", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            direct.flush()
        sys.stderr = python_stderr
        os.dup2(saved, 2)  # the pipe ends when Ray's processes holding it are gone
        thread.join(timeout=1)
        with contextlib.suppress(Exception):
            direct.close()
        if not thread.is_alive():
            os.close(saved)  # else kept open: the pump may still write to it


def _import_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ActAlignError("The Ray engine needs Ray: pip install 'actalign[ray]'.") from None
    return ray


@contextmanager
def ray_session(address: str | None) -> Iterator:
    """Ray for the length of a job: the one this process runs already, or `address` joined, or a
    local instance started (its processes end with this one). A Ray this started or joined is
    shut down here at the end, where a Ctrl-C is the job's (one line), not in Ray's exit hook."""
    ray = _import_ray()
    if ray.is_initialized():  # the caller's Ray is the caller's to end
        yield ray
        return
    reaper = start_reaper() if address is None else None  # noqa: F841 - lives as long as the job
    try:
        from actalign import progress

        # Ray's own INFO/WARNING lines: with -v only (its C++ core's: `hidden_core_lines`)
        quiet = {} if progress.is_verbose() else {"logging_level": logging.ERROR}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **quiet)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = address or "a local Ray instance"
        raise ActAlignError(f"Could not start or join {where} ({str(e)[:150]}).") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _empty_frames() -> np.ndarray:
    return np.zeros((0, 1, 1, 3), np.uint8)


def decode_row(row: dict, options: DecodeOptions) -> dict:
    """Ray task: one clip -> its frames (or cached embeddings, or an error), as one row."""
    clip = pickle.loads(row["clip"])
    out = {"clip": row["clip"], "error": "", "warnings": "[]", "notes": "[]", "key": "", "end": 0.0}
    frames, stamps, cached = [], [], None
    try:
        for part in decode_clip(clip, options):
            if isinstance(part, Cached):
                cached, stamps, out["end"] = part.frames, [part.timestamps], part.end
                out["warnings"] = json.dumps(part.warnings)
            elif isinstance(part, Chunk):
                frames.append(part.frames)
                stamps.append(part.timestamps)
            elif isinstance(part, Done):
                out["end"], out["warnings"], out["key"] = part.end, json.dumps(part.warnings), part.key or ""
                out["notes"] = json.dumps(part.notes)
    except ActAlignError as e:
        out["error"] = str(e)
    except Exception as e:  # a decoder bug must not take the run down
        out["error"] = f"could not be decoded ({type(e).__name__}: {e})"
    out["frames"] = np.concatenate(frames) if frames else _empty_frames()
    out["timestamps"] = np.concatenate(stamps) if stamps else np.zeros(0)
    out["cached"] = cached if cached is not None else np.zeros((0, 1), np.float32)
    return out


class EncodeActor:
    """Ray actor: holds one encoder; encodes the frames of a few clips in full batches."""

    def __init__(self, factory: Callable, cache_dir: str | None) -> None:
        self.encoder = factory()
        self.cache = None
        if cache_dir is not None:
            from actalign.encoders.cache import EmbeddingCache

            self.cache = EmbeddingCache(cache_dir)

    def __call__(self, batch: dict) -> dict:
        frames = list(batch["frames"])
        todo = [i for i, f in enumerate(frames) if len(f) and not batch["error"][i]]
        embedded = self.encoder.encode_images(np.concatenate([frames[i] for i in todo])) if todo else None
        out, at = [], 0
        for i in range(len(frames)):
            if i in todo:
                n = len(frames[i])
                emb = embedded[at : at + n]
                at += n
                if self.cache is not None and batch["key"][i]:
                    write_entry(
                        self.cache,
                        batch["key"][i],
                        emb,
                        batch["timestamps"][i],
                        float(batch["end"][i]),
                        json.loads(batch["warnings"][i]),
                    )
            else:
                emb = batch["cached"][i]
            out.append(np.asarray(emb, np.float32))
        return {
            "clip": batch["clip"],
            "error": batch["error"],
            "warnings": batch["warnings"],
            "notes": batch["notes"],
            "end": batch["end"],
            "timestamps": batch["timestamps"],
            "embeddings": _object_array(out),
        }


def _object_array(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding arrays of different shapes (numpy would try to stack them)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def _rows(batches) -> Iterator[dict]:
    """Single rows of single-row numpy batches (each one as soon as Ray has it)."""
    for batch in batches:
        for i in range(len(next(iter(batch.values())))):
            yield {k: v[i] for k, v in batch.items()}


def score_row(row: dict, scorer) -> dict:
    """Ray task: one clip's embeddings -> its `Scored` (pickled), or its error."""
    clip = pickle.loads(row["clip"])
    result = {"id": clip.id, "scored": b"", "error": row["error"], "frames": 0}
    if row["error"]:
        return result
    try:
        emb = VideoEmbedding(
            np.asarray(row["embeddings"], np.float32), np.asarray(row["timestamps"]), float(row["end"])
        )
        said = [*json.loads(row["warnings"]), *json.loads(row["notes"])]
        result["scored"] = pickle.dumps(scorer.score(clip, emb, said))
        result["frames"] = len(emb.timestamps)
    except ActAlignError as e:
        result["error"] = str(e)
    return result


def cpu_actors(cpus: int, workers: int | None) -> int:
    """How many CPU encoder actors a cluster of `cpus` CPUs gets: --workers, or a quarter of
    them; never all of them (each actor holds a CPU for the whole run, and a clip must be decoded
    and scored on a CPU left free, or nothing is ever done). One sentence when none can be left."""
    if cpus < 2:
        raise ActAlignError(
            f"The Ray cluster has {cpus} CPU(s): its encoder would hold it and leave none for decoding; "
            "give Ray at least 2 CPUs, or use `engine=local`."
        )
    if workers is not None and workers >= cpus:
        raise ActAlignError(
            f"`workers={workers}` would give the encoders every CPU of the Ray cluster ({cpus}), leaving "
            f"none for decoding; use `workers={cpus - 1}` or fewer."
        )
    return workers or max(1, cpus // 4)


class RayEngine:
    """Runs clips on Ray Data; see the module docstring.

    encoder: the encoder of this process (its `factory()` builds the same encoder in each actor).
    workers: the number of encoder actors when the cluster has no GPU (default: one per 4 CPUs).
    """

    def __init__(
        self,
        encoder,
        options: DecodeOptions,
        scorer,
        workers: int | None = None,
        on_frames: Callable[[int], None] | None = None,
        *,
        address: str | None = None,
    ):
        self.encoder, self.options, self.scorer = encoder, options, scorer
        self.workers, self.address, self.on_frames = workers, address, on_frames

    def _pool(self, ray) -> dict:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus:
            return {"compute": ray.data.ActorPoolStrategy(size=gpus), "num_gpus": 1}
        cpus = int(ray.cluster_resources().get("CPU", 1))
        return {"compute": ray.data.ActorPoolStrategy(size=cpu_actors(cpus, self.workers)), "num_cpus": 1}

    def run(self, clips: list[Clip]) -> Iterator[Scored | Failure]:
        """Rows and failures, streamed as clips finish (decoding is held to a few clips ahead of
        the encoders, so rows come while the run goes on, not all at its end)."""
        if not clips:
            return
        with hidden_core_lines(), ray_session(self.address) as ray:
            yield from self._run(ray, clips)

    def embed(self, clips: list[Clip]) -> Iterator[tuple[Clip, VideoEmbedding, list[str]] | Failure]:
        """Decode and encode only (an archive index's build): per clip its embeddings and the
        decoder's warnings, or its `Failure`, as clips finish."""
        if not clips:
            return
        by_id = {c.id: c for c in clips}
        with hidden_core_lines(), ray_session(self.address) as ray:
            for out in _rows(self._encoded(ray, clips).iter_batches(**_ONE_BY_ONE)):
                clip = by_id[pickle.loads(out["clip"]).id]
                if out["error"]:
                    yield Failure(clip, str(out["error"]))
                    continue
                frames, stamps = np.asarray(out["embeddings"], np.float32), np.asarray(out["timestamps"])
                emb = VideoEmbedding(frames, stamps, float(out["end"]))
                if self.on_frames is not None:
                    self.on_frames(len(emb.timestamps))
                yield clip, emb, [*json.loads(out["warnings"]), *json.loads(out["notes"])]

    def _run(self, ray, clips: list[Clip]) -> Iterator[Scored | Failure]:
        by_id = {c.id: c for c in clips}
        ds = self._encoded(ray, clips).map(score_row, fn_kwargs={"scorer": self.scorer}, num_cpus=1)
        for out in _rows(ds.iter_batches(**_ONE_BY_ONE)):
            clip = by_id[out["id"]]
            if out["error"]:
                yield Failure(clip, str(out["error"]))
                continue
            if self.on_frames is not None:
                self.on_frames(int(out["frames"]))
            yield pickle.loads(out["scored"])

    def _encoded(self, ray, clips: list[Clip]):
        """The Ray dataset of the clips decoded (CPU tasks) and encoded (the actor pool)."""
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        from actalign import progress

        if not progress.is_verbose():  # Ray Data's own lines: with -v only
            for name in ("ray", "ray.data"):
                logging.getLogger(name).setLevel(logging.ERROR)
        ctx.print_on_execution_start = False
        ds = ray.data.from_items([{"clip": pickle.dumps(c)} for c in clips], override_num_blocks=len(clips))
        # decoding runs as tasks over the cluster's CPUs; its memory reservation (a clip's frames)
        # also keeps Ray from fusing it into CPU encoder actors, where one process would decode
        # and encode in turn
        pool = self._pool(ray)
        ds = ds.map(
            decode_row,
            fn_kwargs={"options": self.options},
            num_cpus=1,
            memory=DECODE_MEMORY,
            compute=ray.data.TaskPoolStrategy(size=max(1, 2 * pool["compute"].max_size)),  # a few clips ahead
        )
        return ds.map_batches(
            EncodeActor,
            fn_constructor_kwargs={"factory": self.encoder.factory(), "cache_dir": self.options.cache_dir},
            batch_size=CLIPS_PER_ENCODE,
            batch_format="numpy",
            **pool,
        )


# rows one at a time, each as soon as Ray has it
_ONE_BY_ONE = {"batch_size": 1, "prefetch_batches": 0, "batch_format": "numpy"}
