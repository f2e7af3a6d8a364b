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


def textured_video(
    path: Path, n: int, fps: float, size: tuple[int, int], block: int = 8, seed: int = 0, fresh: bool = False
) -> Path:
    """Moving blocky random texture: compresses like real footage (a solid colour would not);
    `fresh`: new noise every frame (barely compressible: a large file)."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, (h // block + 1, w // block + 2, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(n):
            if fresh:
                base = rng.integers(0, 256, base.shape, dtype=np.uint8)
            img = np.kron(np.roll(base, i // 3, axis=1), np.ones((block, block, 1), np.uint8))[:h, :w]
            out.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
        out.mux(stream.encode())
    return path


# The shared samples' domains, candidates and answers (../shared/data/actionatlas-samples).
SAMPLE_ROWS = [
    (
        "basketball.mp4",
        "basketball",
        ["Tip-in", "Putback dunk", "Alley-oop Dunk", "Tomahawk Dunk", "Windmill Dunk"],
        1,
    ),
    ("cricket.mp4", "cricket", ["Square Cut", "Cover drive", "Cut Shot", "Straight Drive", "Pull Shot"], 1),
    ("soccer.mp4", "soccer", ["Knuckleball Shot", "Chip shot", "Power shot", "Outside of the foot shot"], 0),
    (
        "tennis.mp4",
        "tennis",
        ["Windshield wiper forehand", "Inside-in forehand", "Half volley", "Forehand drive", "Sliced serve"],
        0,
    ),
]


def standin_samples(folder: Path) -> Path:
    """Generated stand-ins for the shared samples, for a checkout without ../shared/data: the same
    names, domains, candidates and answers, and what tests rely on (cricket.mp4 has 450 frames,
    basketball.mp4 is over 1.5 MB, tennis.mp4 under it)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    textured_video(folder / "basketball.mp4", n=60, fps=30, size=(640, 360), block=4, seed=1, fresh=True)
    textured_video(folder / "cricket.mp4", n=450, fps=60, size=(160, 90), seed=2)
    textured_video(folder / "soccer.mp4", n=61, fps=30, size=(320, 180), seed=3)
    textured_video(folder / "tennis.mp4", n=210, fps=30, size=(320, 180), seed=4)
    rows = [{"video": v, "domain": d, "candidates": c, "answer": a} for v, d, c, a in SAMPLE_ROWS]
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder
