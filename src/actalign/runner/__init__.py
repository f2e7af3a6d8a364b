"""One runner for many clips: plan -> decode -> encode -> score -> write, resumable, with
interchangeable engines ("local": worker processes on this machine; "ray": Ray Data on a cluster).

    plan = load_manifest("clips.jsonl")                  # or plan_videos([...], domain, candidates)
    result = run(plan, encoder, {"context-rich": scripts}, "runs/x", [Method("ActAlign")])

`actalign batch` is this runner; `actalign eval` is this runner plus metrics (actalign.eval).
The run folder's rules (config, resume, exactly-once rows, failures) are in `runner.output`.
"""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from actalign.errors import ActAlignError
from actalign.runner.output import RunFolder
from actalign.runner.plan import Clip, Plan, load_manifest, plan_videos
from actalign.runner.score import Calibration, Method, Scorer

ENGINES = ("local", "ray")
__all__ = ["ENGINES", "Clip", "Method", "Plan", "RunResult", "load_manifest", "plan_videos", "run"]


@dataclass
class RunResult:
    """The rows of the run's clips that are done (this run or earlier), in plan order, and the
    failures of this run."""

    rows: list[dict]
    failures: list[dict] = field(default_factory=list)
    record: dict = field(default_factory=dict)
    planned: int = 0


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


def file_digest(path: str | Path) -> str:
    """Content hash of a file (scripts, manifests), for the run's configuration record."""
    h = hashlib.blake2b(digest_size=12)
    try:
        h.update(Path(path).expanduser().read_bytes())
    except OSError:
        return "unreadable"
    return h.hexdigest()


def run(
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
) -> RunResult:
    """Run `methods` on every clip of `plan` not yet in `out`, writing rows as clips finish.

    sources: a ScriptSource per script strategy the methods name. record: extra configuration
    to store and compare on resume (e.g. script file hashes). on_row(row): after each written row.
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
    calibration = Calibration(
        encoder.identity, encoder.scale, encoder.bias, getattr(encoder, "text_encoding", "trained")
    )
    scorer = Scorer(methods, calibration, fps)
    config = {
        "input": plan.source,  # not the limit: a later run may do more of the same clips
        "fps": fps,
        "encoder": encoder.identity,
        "dtype": getattr(encoder, "dtype_name", None),  # chosen for the CPU or GPU unless --dtype
        "scale": encoder.scale,
        "bias": encoder.bias,
        "text_encoding": calibration.text_encoding,
        "decode_size": list(encoder.decode_size)
        if isinstance(encoder.decode_size, tuple)
        else encoder.decode_size,
        **scorer.record(),
        **(record or {}),
    }
    folder = RunFolder(out)
    failures: list[dict] = []
    with folder:
        done = folder.open(config, {"versions": versions()})
        for f in plan.failures:
            folder.fail(f)
            failures.append(f)
        todo = [c for c in clips if c.id not in done]
        scorer.prepare(todo, sources, encoder, cache)

        bar = Progress("clips", total=len(todo), unit="clip", enabled=progress)
        frames = {"n": 0}

        def on_frames(n: int) -> None:
            frames["n"] += n

        def write(row: dict) -> None:
            if folder.append(row) and on_row is not None:
                on_row(row)
            elapsed = max(1e-9, _now() - bar.start)
            bar.update(1, note=f"{frames['n'] / elapsed:.1f} frames/s")

        def failed(clip: Clip, reason: str) -> None:
            entry = plan.failure(clip, reason)
            folder.fail(entry)
            failures.append(entry)
            bar.update(1)

        with bar:
            if engine == "ray":
                from actalign.runner.ray_engine import RayEngine

                RayEngine(encoder, _decode_options(encoder, fps, cache, threads=1), workers, ray_address).run(
                    todo, scorer, write, failed, on_frames
                )
            else:
                from actalign.runner.local import LocalEngine

                options = _decode_options(encoder, fps, cache, threads=1 if workers != 0 else 0)
                LocalEngine(encoder, options, workers, cache).run(
                    todo, lambda clip, emb, warns: write(scorer.row(clip, emb, warns)), failed, on_frames
                )
        rows = [folder.done[c.id] for c in clips if c.id in folder.done]
    return RunResult(rows, failures, config, len(clips))


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
