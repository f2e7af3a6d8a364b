"""Untrimmed variants of any manifest: each clip padded before and after with other clips'
footage, written as real video files, with the true span of the action recorded in the row
(`"span": [start, end]`, seconds). `actalign eval` on the result measures global against local
alignment (`--ladder` has a "+ local alignment" rung) and how well spans are found (span IoU).

    actalign untrimmed clips.jsonl --out untrimmed --pad 10
    actalign eval untrimmed/manifest.jsonl --out runs/untrimmed --ladder
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np

from actalign.errors import ActAlignError
from actalign.runner.plan import Clip, Plan, write_manifest
from actalign.video import Sampling, iter_frames, probe


def _frames(clip: Clip, size: tuple[int, int], fps: float):
    """Frames of a clip's span (uint8 (H, W, 3)) at `fps`, resized to `size` (width, height)."""
    for batch in iter_frames(clip.video, Sampling(fps=fps, start=clip.start, end=clip.end), resize=size):
        yield from batch.frames


def _padding(others: list[Clip], n: int, size, fps, rng) -> list[np.ndarray]:
    """n frames of other clips' footage, a random clip after another."""
    out: list[np.ndarray] = []
    while len(out) < n:
        donor = others[int(rng.integers(len(others)))]
        for frame in _frames(donor, size, fps):
            out.append(frame)
            if len(out) == n:
                break
    return out


def _write(path: Path, frames, fps: Fraction, size: tuple[int, int]) -> int:
    import av

    from actalign.files import atomic_write_bytes

    tmp = path.with_name(f".{path.name}.partial.mp4")
    n = 0
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
            n += 1
        out.mux(stream.encode())
    atomic_write_bytes(path, tmp.read_bytes())
    tmp.unlink()
    return n


def make_untrimmed(
    plan: Plan,
    out_dir: str | os.PathLike,
    pad: float = 10.0,
    seed: int = 0,
    progress: Callable[[Clip], None] | None = None,
) -> Path:
    """Write padded copies of every clip of `plan` into out_dir and their manifest; returns it.

    Each clip keeps its frame rate and size (even dimensions); `pad` seconds of other clips'
    footage (resized to fit) come before and after it. Resumable: clips already written are kept.
    """
    if not (pad >= 0):
        raise ActAlignError(f"--pad must be a number of seconds >= 0, got {pad}.")
    if len(plan.clips) < 2 and pad > 0:
        raise ActAlignError("Padding takes other clips' footage: the manifest needs at least two clips.")
    out = Path(out_dir).expanduser()
    (out / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, extra = [], {}
    for clip in plan.clips:
        info = probe(clip.video)
        fps = Fraction(info.fps or 30).limit_denominator(1001)
        w, h = info.display_size
        size = (max(2, w // 2 * 2), max(2, h // 2 * 2))
        before, after = round(pad * float(fps)), round(pad * float(fps))
        target = out / "clips" / f"{_safe(clip.id)}.mp4"
        others = [c for c in plan.clips if c.id != clip.id]
        pads = (
            _padding(others, before, size, float(fps), rng),
            _padding(others, after, size, float(fps), rng),
        )
        if not target.exists():
            own = list(_frames(clip, size, float(fps)))
            n = _write(target, [*pads[0], *own, *pads[1]], fps, size)
        else:
            n = before + after + len(list(_frames(clip, size, float(fps))))
        start = before / float(fps)
        end = (n - after) / float(fps)
        rows.append(replace(clip, video=target, start=None, end=None))
        extra[clip.id] = {"span": [round(start, 6), round(end, 6)], "source": str(Path(clip.video).resolve())}
        if progress is not None:
            progress(clip)
    manifest = out / "manifest.jsonl"
    write_manifest(manifest, rows, extra)
    return manifest


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
