"""Untrimmed variants of any manifest: each clip padded before and after with other clips'
footage, written as real video files, with the true span of the action recorded in the row
(`"span": [start, end]`, seconds). `actalign eval` on the result measures global against local
alignment (`--ladder` has a "+ local alignment" rung) and how well spans are found (span IoU).

    actalign untrimmed clips.jsonl --out untrimmed --pad 10
    actalign eval untrimmed/manifest.jsonl --out runs/untrimmed --ladder
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from actalign.errors import ActAlignError
from actalign.runner.plan import Clip, Plan, write_manifest
from actalign.video import Sampling, iter_frames, probe

MAX_PAD = 3600.0  # seconds on each side


def _frames(clip: Clip, size: tuple[int, int], fps: float):
    """Frames of a clip's span (uint8 (H, W, 3)) at `fps`, resized to `size` (width, height)."""
    for batch in iter_frames(clip.video, Sampling(fps=fps, start=clip.start, end=clip.end), resize=size):
        yield from batch.frames


def _padding(others: list[Clip], n: int, size, fps, rng) -> Iterator[np.ndarray]:
    """n frames of other clips' footage, a random clip after another, as a stream (memory holds a
    batch of frames, whatever the padding)."""
    given = 0
    while given < n:
        donor = others[int(rng.integers(len(others)))]
        for frame in _frames(donor, size, fps):
            yield frame
            given += 1
            if given == n:
                return


def _write(path: Path, frames, fps: Fraction, size: tuple[int, int], on_frames=None) -> int:
    import av

    tmp = path.with_name(f".{path.name}.partial.mp4")  # this command's own temporary name
    n = 0
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
            n += 1
            if on_frames is not None and n % 25 == 0:
                on_frames(25)
        out.mux(stream.encode())
    os.replace(tmp, path)  # same folder: atomic, and never the whole file in memory
    return n


def make_untrimmed(
    plan: Plan,
    out_dir: str | os.PathLike,
    pad: float = 10.0,
    seed: int = 0,
    progress: Callable[[Clip], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
) -> tuple[Path, list[dict]]:
    """Write padded copies of the clips of `plan` into out_dir and their manifest; returns the
    manifest and the clips that could not be used (also in out_dir/failed.jsonl, with why).

    Each clip keeps its frame rate and size (even dimensions); `pad` seconds of other clips'
    footage (resized to fit) come before and after it. Resumable: clips already written are
    kept, and a folder made with another --pad or --seed is refused (its spans would be wrong).
    A clip that cannot be read is listed and left out; it pads no other clip.
    """
    if not (0 <= pad <= MAX_PAD):
        raise ActAlignError(f"`pad` must be a number of seconds from 0 to {MAX_PAD:g}, got {pad}.")
    if not (isinstance(seed, int) and 0 <= seed < 2**32):
        raise ActAlignError(f"`seed` must be a whole number from 0 to 4294967295, got {seed!r}.")
    usable, failures = _usable(plan)
    if not usable:
        raise ActAlignError(f"No clip of the manifest can be read (the first: {failures[0]['reason']}).")
    if len(usable) < 2 and pad > 0:
        raise ActAlignError(
            "Padding takes other clips' footage: the manifest needs at least two usable clips."
        )
    out = Path(out_dir).expanduser()
    _check_settings(out, {"pad": pad, "seed": seed})
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, extra = [], {}
    for clip, info in usable:
        try:
            row = _pad_clip(clip, info, [c for c, _ in usable if c.id != clip.id], out, pad, rng, on_frames)
        except ActAlignError as e:
            failures.append(plan.failure(clip, str(e)))
            continue
        rows.append(row[0])
        extra[clip.id] = row[1]
        if progress is not None:
            progress(clip)
    _write_failures(out, failures)
    if not rows:
        raise ActAlignError(f"No clip could be padded; see {out / 'failed.jsonl'}.")
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, rows, extra)
    return manifest, failures


def _usable(plan: Plan) -> tuple[list[tuple[Clip, object]], list[dict]]:
    """The clips that can be read and whose window lies in the video, with their probe; the others
    (and the manifest's rejected rows) as failures."""
    usable, failures = [], list(plan.failures)
    for clip in plan.clips:
        try:
            info = probe(clip.video)
            if clip.start is not None and info.duration and clip.start >= info.duration:
                raise ActAlignError(
                    f"start {clip.start:g} s is past the end of {clip.video} ({info.duration:.2f} s)."
                )
        except ActAlignError as e:
            failures.append(plan.failure(clip, str(e)))
            continue
        usable.append((clip, info))
    return usable, failures


def _check_settings(out: Path, settings: dict) -> None:
    """Record the padding in out/untrimmed.json; a folder padded otherwise is refused."""
    import json

    from actalign.files import atomic_write_text, read_json

    record = out / "untrimmed.json"
    if record.exists():
        old = read_json(record, "untrimmed settings")
        if old != settings:
            said = ", ".join(f"`{k}={old.get(k)!r}`" for k in settings if old.get(k) != settings[k])
            raise ActAlignError(
                f"{out} holds clips padded with {said}; their spans would be wrong for this run. Use "
                "another `out`, or delete the folder."
            )
    elif (out / "clips").exists() and any((out / "clips").iterdir()):
        raise ActAlignError(
            f"{out}/clips holds clips of unknown padding; use another `out`, or delete the folder."
        )
    else:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps(settings) + "\n")


def _pad_clip(
    clip: Clip, info, others: list[Clip], out: Path, pad: float, rng, on_frames=None
) -> tuple[Clip, dict]:
    """Write one padded clip (unless already there); its manifest row and span."""
    fps = Fraction(info.fps or 30).limit_denominator(1001)
    w, h = info.display_size
    size = (max(2, w // 2 * 2), max(2, h // 2 * 2))
    before, after = round(pad * float(fps)), round(pad * float(fps))
    target = out / "clips" / f"{_safe(clip.id)}.mp4"
    # streamed in order (before, the clip, after); the padding is drawn even when the clip exists,
    # so that a resumed run pads the next clips as a whole run would
    frames = itertools.chain(
        _padding(others, before, size, float(fps), rng),
        _frames(clip, size, float(fps)),
        _padding(others, after, size, float(fps), rng),
    )
    n = _write(target, frames, fps, size) if not target.exists() else sum(1 for _ in frames)
    start, end = before / float(fps), (n - after) / float(fps)
    span = {"span": [round(start, 6), round(end, 6)], "source": str(Path(clip.video).resolve())}
    return replace(clip, video=target, start=None, end=None), span


def _write_failures(out: Path, failures: list[dict]) -> None:
    import json

    from actalign.files import atomic_write_text

    atomic_write_text(
        out / "failed.jsonl", "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures)
    )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
