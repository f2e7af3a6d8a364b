"""Video input: probe a file, sample frames in seconds, stream bounded batches (PyAV).

Timestamps come from the stream's presentation times (seconds from the first frame), so odd and
variable frame rates are handled; rotation metadata is applied (portrait phone clips come out
upright); frames can be resized while decoding, so a 4K video never sits in memory at full size.

Sampling picks, for each point of a time grid, the first frame shown at or after it, and never
repeats a frame: asking for more fps than the video has gives every frame once.

A file that is corrupt partway yields the frames decoded before the damage, with a warning;
a file with no decodable frame raises `ActAlignError`.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from actalign.errors import ActAlignError

_EPS = 1e-6  # seconds: tolerance when comparing a frame time with a grid time


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` finds. width/height are as stored; `display_size` applies the rotation."""

    path: str
    duration: float | None
    fps: float | None
    frames: int | None
    width: int
    height: int
    rotation: int
    codec: str

    @property
    def display_size(self) -> tuple[int, int]:
        return (self.height, self.width) if self.rotation % 180 else (self.width, self.height)


@dataclass(frozen=True)
class Sampling:
    """Which frames to take: `fps` (None: all frames) or `num_frames` spread evenly, within
    [start, end) seconds (None: from the beginning / to the end)."""

    fps: float | None = None
    num_frames: int | None = None
    start: float | None = None
    end: float | None = None

    def __post_init__(self) -> None:
        if self.fps is not None and not (self.fps > 0 and math.isfinite(self.fps)):
            raise ActAlignError(f"The sampling rate must be a positive number of fps, got {self.fps}.")
        if self.num_frames is not None and self.num_frames < 1:
            raise ActAlignError(f"The number of frames must be at least 1, got {self.num_frames}.")
        if self.fps is not None and self.num_frames is not None:
            raise ActAlignError("Give either a sampling rate (fps) or a number of frames, not both.")
        if self.start is not None and self.start < 0:
            raise ActAlignError(f"The start time must be >= 0 s, got {self.start}.")
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ActAlignError(
                f"The start time ({self.start} s) must be before the end time ({self.end} s)."
            )

    def key(self) -> str:
        """Stable text form for cache keys."""
        return ",".join(f"{k}={v}" for k, v in asdict(self).items())


class FrameBatch(NamedTuple):
    frames: np.ndarray  # (B, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (B,) float64 seconds from the first frame


# --------------------------------------------------------------------------- opening


def _open(path: str | os.PathLike):
    import av

    p = Path(path)
    if not p.exists():
        raise ActAlignError(f"No such video file: {p}. Check the path.")
    if p.is_dir():
        raise ActAlignError(f"{p} is a folder, not a video file.")
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as e:
        raise ActAlignError(
            f"{p} is not a video that FFmpeg can read ({e.strerror or e}); "
            "it may be truncated, corrupt or not a video at all."
        ) from None
    if not container.streams.video:
        container.close()
        raise ActAlignError(f"{p} has no video stream (audio only?); give a file with video.")
    return container


def _rotation(frame) -> int:
    """Display rotation in degrees, a multiple of 90 (counter-clockwise, as FFmpeg reports)."""
    r = getattr(frame, "rotation", 0) or 0
    return round(r / 90.0) * 90 % 360


def _start_offset(stream) -> float:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000 - _start_offset(stream)
    return None


def _stream_info(container, stream, path, rotation: int = 0) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    return VideoInfo(
        path=str(path),
        duration=_duration(container, stream),
        fps=float(rate) if rate else None,
        frames=stream.frames or None,
        width=stream.codec_context.width,
        height=stream.codec_context.height,
        rotation=rotation,
        codec=stream.codec_context.name,
    )


def probe(path: str | os.PathLike) -> VideoInfo:
    """Duration (s), average fps, frame count (None when the container does not say), stored
    width and height, rotation (degrees) and codec name of the first video stream."""
    import av

    with _open(path) as container:
        stream = container.streams.video[0]
        try:
            first = next(container.decode(stream), None)
        except av.error.FFmpegError:
            first = None
        if first is None:
            raise ActAlignError(f"{path} has a video stream but no decodable frame.")
        return _stream_info(container, stream, path, _rotation(first))


def fingerprint(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Content hash of a file (BLAKE2b, 128-bit hex): cache keys survive renames and copies."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- sampling


class _Selector:
    """Decides frame by frame, in time order, which frames the sampling keeps."""

    def __init__(self, sampling: Sampling, lo: float, hi: float) -> None:
        self.sampling, self.lo, self.i = sampling, lo, 0
        self.grid = None
        if sampling.num_frames is not None:
            n = sampling.num_frames
            self.grid = lo + np.arange(n) * (hi - lo) / n

    def __call__(self, ts: float) -> bool:
        s = self.sampling
        if self.grid is not None:
            if self.i >= len(self.grid) or ts < self.grid[self.i] - _EPS:
                return False
            self.i = int(np.searchsorted(self.grid, ts + _EPS, side="right"))
            return True
        if s.fps is None:
            return True
        target = self.lo + self.i / s.fps
        if ts < target - _EPS:
            return False
        self.i = math.floor((ts - self.lo) * s.fps + _EPS * s.fps) + 1
        return True


def _output_size(info_w: int, info_h: int, rotation: int, resize) -> tuple[int, int] | None:
    """Decoder output (width, height) before rotation, for a requested display size."""
    if resize is None:
        return None
    disp_w, disp_h = (info_h, info_w) if rotation % 180 else (info_w, info_h)
    if isinstance(resize, int):
        scale = resize / min(disp_w, disp_h)
        w, h = max(1, round(disp_w * scale)), max(1, round(disp_h * scale))
    else:
        w, h = int(resize[0]), int(resize[1])
    return (h, w) if rotation % 180 else (w, h)


def iter_frames(
    path: str | os.PathLike,
    sampling: Sampling | None = None,
    batch_size: int = 32,
    resize: int | tuple[int, int] | None = None,
) -> Iterator[FrameBatch]:
    """Stream sampled frames as batches of at most `batch_size`.

    resize: None keeps the decoded size; an int sets the shorter display side (aspect kept);
    (width, height) sets the display size exactly. Frames come out upright, RGB, uint8.
    """
    sampling = sampling or Sampling()
    if batch_size < 1:
        raise ActAlignError(f"The batch size must be at least 1, got {batch_size}.")
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        info = _stream_info(container, stream, path)
        lo = sampling.start or 0.0
        hi = sampling.end if sampling.end is not None else math.inf  # stop decoding here
        if info.duration is not None and lo >= info.duration:
            raise ActAlignError(
                f"The start time {lo} s is past the end of {path} ({info.duration:.2f} s long)."
            )
        span_end = min(hi, info.duration) if info.duration is not None else hi
        if sampling.num_frames is not None and not math.isfinite(span_end):
            raise ActAlignError(f"{path} does not state its duration; sample by fps instead of a count.")
        select = _Selector(sampling, lo, span_end)
        if lo > 0:
            t0 = _start_offset(stream)
            container.seek(int((lo + t0) / stream.time_base), stream=stream, backward=True)
        total = 0
        for batch in _batches(_selected(container, stream, info, select, lo, hi), batch_size, resize):
            total += len(batch.timestamps)
            yield batch
    if total == 0:
        raise ActAlignError(f"No frames of {path} fall in [{lo}, {hi}) s; check --start/--end.")


def _selected(container, stream, info: VideoInfo, select: _Selector, lo: float, hi: float):
    """(frame, seconds) of the frames the sampling keeps, in order; handles damaged files."""
    import av

    t0 = _start_offset(stream)
    decoded = container.decode(stream)
    index, last_ts, kept = -1, None, 0
    while True:
        try:
            frame = next(decoded)
        except StopIteration:
            _warn_if_short(info.path, info, last_ts, hi)
            return
        except av.error.FFmpegError as e:
            if kept == 0:
                raise ActAlignError(f"{info.path} could not be decoded ({e.strerror or e}).") from None
            warnings.warn(
                f"{info.path} is corrupt after {last_ts:.2f} s; using the frames decoded before that "
                f"({e.strerror or e}).",
                stacklevel=4,
            )
            return
        index += 1
        ts = (frame.time - t0) if frame.time is not None else index / (info.fps or 30.0)
        last_ts = ts
        if ts < lo - _EPS:
            continue
        if ts >= hi - _EPS:
            return
        if select(ts):
            kept += 1
            yield frame, ts


def _batches(frames, batch_size: int, resize) -> Iterator[FrameBatch]:
    """Convert frames to upright RGB arrays, copied straight into each batch's buffer."""
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()  # one per stream: its scaler context is reused frame to frame
    buf, stamps = None, []
    for frame, ts in frames:
        rot = _rotation(frame)
        size = _output_size(frame.width, frame.height, rot, resize)
        img = _to_rgb(reformatter, frame, size)
        if rot:
            img = np.rot90(img, rot // 90)
        if buf is None or buf.shape[1:] != img.shape:
            if stamps:  # the frame size changed mid-stream: close the batch so far
                yield FrameBatch(buf[: len(stamps)], np.array(stamps))
                stamps = []
            buf = np.empty((batch_size, *img.shape), np.uint8)
        buf[len(stamps)] = img
        stamps.append(ts)
        if len(stamps) == batch_size:
            yield FrameBatch(buf, np.array(stamps))
            buf, stamps = None, []
    if stamps:
        yield FrameBatch(buf[: len(stamps)], np.array(stamps))


def _to_rgb(reformatter, frame, size: tuple[int, int] | None) -> np.ndarray:
    """RGB uint8 (H, W, 3), scaled to `size` (bicubic, as the SigLIP/CLIP processors) if given."""
    if size is None:
        return reformatter.reformat(frame, format="rgb24").to_ndarray()
    return reformatter.reformat(
        frame, width=size[0], height=size[1], format="rgb24", interpolation="BICUBIC"
    ).to_ndarray()


def _warn_if_short(path, info: VideoInfo, last_ts: float | None, stop: float) -> None:
    """Warn when decoding ended well before the stated duration (a truncated file)."""
    if info.duration is None or last_ts is None or stop < info.duration:
        return
    slack = max(0.5, 3.0 / info.fps) if info.fps else 0.5
    if last_ts < info.duration - slack:
        warnings.warn(
            f"{path} ends at {last_ts:.2f} s but states {info.duration:.2f} s; it may be "
            "truncated. Using the frames decoded.",
            stacklevel=3,
        )


def read_frames(
    path: str | os.PathLike,
    sampling: Sampling | None = None,
    resize: int | tuple[int, int] | None = None,
) -> FrameBatch:
    """All sampled frames at once (for short clips; prefer `iter_frames` for long videos)."""
    batches = list(iter_frames(path, sampling, batch_size=256, resize=resize))
    return FrameBatch(
        np.concatenate([b.frames for b in batches]), np.concatenate([b.timestamps for b in batches])
    )
