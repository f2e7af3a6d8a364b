"""Videos made by the tests themselves (PyAV), so no test depends on downloaded footage."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SAMPLES = SHARED / "actionatlas-samples"


def level(i: int) -> int:
    """Grey level that marks frame i (well apart, so compression cannot blur two together)."""
    return (i * 16) % 256


def make_video(
    path: Path,
    n: int = 20,
    fps: Fraction | float = 10,
    size: tuple[int, int] = (64, 48),
    rotation: int = 0,
    audio: bool = False,
    times: list[float] | None = None,
    colors: list[tuple[int, int, int]] | None = None,
    marker: bool = False,
) -> Path:
    """An H.264 mp4 of n frames; frame i is grey `level(i)` (or colors[i]).

    times: presentation times in seconds (variable frame rate); default i / fps.
    marker: paint a red block in the top-left corner, to check orientation.
    """
    rate = Fraction(fps).limit_denominator(100_000)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": "8"}
        if times is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        astream = out.add_stream("aac", rate=16000) if audio else None
        for i in range(n):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = colors[i] if colors else level(i)
            if marker:
                img[: h // 4, : w // 4] = (255, 0, 0)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            if times is not None:
                frame.pts, frame.time_base = round(times[i] * 1000), Fraction(1, 1000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
        if astream is not None:
            samples = np.zeros((1, 1024), np.float32)
            for i in range(int(16000 * n / float(rate) / 1024)):
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, i * 1024
                out.mux(astream.encode(af))
            out.mux(astream.encode())
    return path


def make_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as out:
        astream = out.add_stream("aac", rate=16000)
        for i in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            af.sample_rate, af.pts = 16000, i * 1024
            out.mux(astream.encode(af))
        out.mux(astream.encode())
    return path
