"""One runner for many clips: plan -> decode -> encode -> score -> write, resumable, with
interchangeable engines ("local": worker processes on this machine; "ray": Ray Data on a cluster).

    plan = load_manifest("clips.jsonl")                  # or plan_videos([...], domain, candidates)
    result = run(plan, encoder, {"context-rich": scripts}, "runs/x", [Method("ActAlign")])

`actalign batch` is this runner; `actalign eval` is this runner plus metrics (actalign.eval).
The run folder's rules (config, resume, exactly-once rows, failures) are in `runner.output`.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from actalign.errors import ActAlignError
from actalign.runner.decode import Failure
from actalign.runner.engine import Engine
from actalign.runner.output import RunFolder
from actalign.runner.plan import Clip, Plan
from actalign.runner.score import SCRIPTS_FILE, Calibration, Method, Scorer, check_recorded

ENGINES = ("local", "ray")
__all__ = ["ENGINES", "RunResult", "known_record", "run", "stream", "versions"]


@dataclass
class RunResult:
    """The rows of the run's clips that are done (this run or earlier), in plan order, and the
    failures of this run."""

    rows: list[dict]
    failures: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    planned: int = 0
    scripts: dict = field(default_factory=dict)  # the run's scripts.json: every script it used
    timing: dict = field(default_factory=dict)  # this session's clips and seconds, per stage


def versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results, for config.json."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("actalign", "numpy", "torch", "transformers", "av", "ray"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def stream(
    plan: Plan,
    encoder,
    sources: dict,
    out: str,
    methods: Sequence[Method],
    fps: float | None = None,
    limit: int | None = None,
    engine: str = "local",
    workers: int | None = None,
    cache=None,
    record: dict | None = None,
    on_row: Callable[[dict], None] | None = None,
    progress: bool = True,
    ray_address: str | None = None,
    recorded_scripts: bool = False,
    baselines: Sequence = (),
) -> Iterator[dict]:
    """Run `methods` on every clip of `plan` not yet in `out`, writing rows as clips finish.

    sources: a ScriptSource per script strategy the methods name. record: extra configuration
    to store and compare on resume. on_row(row): after each written row.

    The scripts a run uses are part of it: recorded in the folder's scripts.json the first time
    each is used, used again on resume (an LLM is never asked again for one), and a script that
    now reads differently refuses the resume (recorded_scripts=True keeps the recorded ones).
    baselines: the paper's peers (`actalign.baselines.predict.Baseline`), each adding its entry to
    every row (its own frames of the clip, its model) before the row is written.

    Yields each row as it is written and each failure entry ({"id", "reason", ...}) as it is
    recorded; the generator's return value (`StopIteration.value`) is the `RunResult`.
    """
    from actalign.progress import Progress
    from actalign.video import Sampling

    if engine not in ENGINES:
        raise ActAlignError(f"Unknown engine {engine!r}; use one of {', '.join(ENGINES)}.")
    if fps is not None:
        Sampling(fps=fps)
    if limit is not None and limit < 1:
        raise ActAlignError("The clip limit must be at least 1.")
    clips = plan.clips[:limit]
    calibration = Calibration.of(encoder)
    scorer = Scorer(methods, calibration, fps)
    config = {
        "input": plan.source,  # not the limit: a later run may do more of the same clips
        "fps": fps,
        "model_identity": encoder.identity,
        "dtype": getattr(encoder, "dtype_name", None),  # chosen for the CPU or GPU unless --dtype
        "scale": encoder.scale,
        "bias": encoder.bias,
        "text_encoding": calibration.text_encoding,
        "decode_size": list(encoder.decode_size)
        if isinstance(encoder.decode_size, tuple)
        else encoder.decode_size,
        **scorer.record(),
        **({"baselines": [b.record() for b in baselines]} if baselines else {}),
        **(record or {}),
    }
    folder = RunFolder(out)
    failures: list[dict] = []
    with folder:
        done = folder.open(config, {"versions": versions()})
        for f in plan.failures:
            folder.fail(f)
            failures.append(f)
            yield f
        changed = {c.id for c in clips if c.id in done and not _same_clip(done[c.id], c)}
        if changed:  # a row edited in the manifest (new candidates, answer, span): run again
            import warnings

            folder.forget(changed)
            warnings.warn(
                f"{len(changed)} manifest row(s) changed since they were run (e.g. {sorted(changed)[0]!r}); "
                "they are run again.",
                stacklevel=2,
            )
            done = folder.done
        known = {c.id for c in plan.clips}
        strays = [i for i in done if i not in known]
        if strays:  # kept in the file, but not this input's: say so rather than leave them out silently
            import warnings

            warnings.warn(
                f"{len(strays)} row(s) of {out.rstrip('/')}/predictions.jsonl are not clips of this input "
                f"(e.g. {strays[0]!r}); they are kept in the file but left out of this run's results.",
                stacklevel=2,
            )
        todo = [c for c in clips if c.id not in done]
        recorded = check_recorded(folder.read_json(SCRIPTS_FILE) or {}, f"{out.rstrip('/')}/{SCRIPTS_FILE}")
        fresh = scorer.prepare(todo, sources, encoder, cache, recorded, recorded_scripts)
        if fresh:  # before any row that uses them
            folder.write(SCRIPTS_FILE, json.dumps({**recorded, **fresh}, indent=1, ensure_ascii=False) + "\n")
        used = {**recorded, **fresh}

        bar = Progress("clips", total=len(todo), unit="clip", enabled=progress)
        frames = {"n": 0}

        def on_frames(n: int) -> None:
            frames["n"] += n

        by_id = {c.id: c for c in todo}
        out: list[dict] = []  # rows and failures written since the last yield

        def write(scored) -> None:
            row = scorer.row(scored)
            try:
                for b in baselines:
                    row["methods"][b.name] = b.entry(by_id[row["id"]])
            except ActAlignError as e:
                failed(by_id[row["id"]], str(e))
                return
            if folder.append(row):
                if on_row is not None:
                    on_row(row)
                out.append(row)
            elapsed = max(1e-9, _now() - bar.start)
            bar.update(1, note=f"{frames['n'] / elapsed:.1f} frames/s")

        def failed(clip: Clip, reason: str) -> None:
            entry = plan.failure(clip, reason)
            folder.fail(entry)
            failures.append(entry)
            out.append(entry)
            bar.update(1)

        began = _now()
        engine_ = (
            _engine(engine, encoder, fps, cache, scorer, workers, ray_address, on_frames) if todo else None
        )
        with bar:
            for item in engine_.run(todo) if engine_ is not None else ():
                if isinstance(item, Failure):
                    failed(item.clip, item.reason)
                else:
                    write(item)
                yield from out
                out.clear()
        rows = [folder.done[c.id] for c in clips if c.id in folder.done]
    elapsed = _now() - began
    spent = sum(b.seconds for b in baselines)
    timing = {"clips": len(todo) - len([f for f in failures if not f.get("rejected")]), "seconds": elapsed}
    timing["embedding_seconds"] = max(0.0, elapsed - spent)
    timing["baselines"] = {b.name: {"seconds": b.seconds, "clips": b.clips} for b in baselines}
    return RunResult(rows, failures, config, len(clips), used, timing)


def run(plan: Plan, encoder, sources: dict, out: str, methods: Sequence[Method], **options) -> RunResult:
    """`stream` to the end: the run's `RunResult` (rows done, this run's failures, its record)."""
    items = stream(plan, encoder, sources, out, methods, **options)
    while True:
        try:
            next(items)
        except StopIteration as done:
            return done.value


def known_record(plan: Plan, methods: Sequence[Method], fps: float | None, record: dict | None) -> dict:
    """The part of a run's configuration known before any model loads (`RunFolder.precheck`)."""
    from actalign.runner.score import primary_method

    return {
        "input": plan.source,
        "fps": fps,
        "methods": [m.record() for m in methods],
        "primary": primary_method(list(methods)).name,
        **(record or {}),
    }


def _same_clip(row: dict, clip: Clip) -> bool:
    """Whether a finished row was made from this clip as the manifest now gives it."""
    now = {
        "video": str(clip.video),
        "domain": clip.domain,
        "candidates": list(clip.candidates),
        "start": clip.start,
        "end": clip.end,
        "answer": clip.answer,
        "span": list(clip.span) if clip.span is not None else None,
    }
    return all(row.get(k) == v for k, v in now.items())


def _engine(name: str, encoder, fps, cache, scorer, workers, ray_address, on_frames) -> Engine:
    """The engine of that name (`runner.engine.Engine`)."""
    if name == "ray":
        from actalign.runner.ray_engine import RayEngine

        options = _decode_options(encoder, fps, cache, threads=1)
        return RayEngine(encoder, options, scorer, workers, on_frames, address=ray_address)
    from actalign.runner.local import LocalEngine

    options = _decode_options(encoder, fps, cache, threads=1 if workers != 0 else 0)
    stall = _seconds_env("ACTALIGN_DECODE_STALL")
    extra = {"stall_seconds": stall} if stall else {}
    return LocalEngine(encoder, options, scorer, workers, on_frames, **extra)


def _seconds_env(name: str) -> float | None:
    import os

    value = os.environ.get(name)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 1e7:
        raise ActAlignError(f"{name} must be a positive number of seconds, not {value!r}.")
    return seconds


def _decode_options(encoder, fps, cache, threads: int = 0):
    """What the decode stage needs; worker processes decode one thread each (they already run
    one per core: more threads would only fight over the cores the encoder needs)."""
    from actalign.runner.decode import DecodeOptions

    return DecodeOptions(
        fps=fps,
        decode_size=encoder.decode_size,
        chunk=max(1, min(encoder.batch_size, 64)),
        cache_dir=str(cache.root) if cache is not None else None,
        identity=encoder.identity,
        threads=threads,
    )


def _now() -> float:
    import time

    return time.monotonic()
