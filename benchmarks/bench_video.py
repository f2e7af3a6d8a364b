"""Video decoding benchmark: prints a markdown table (see docs/benchmarks.md).

    python benchmarks/bench_video.py [--long-minutes 10]

- all-frames decode to RGB with actalign.video vs `ffmpeg -threads 2 -i FILE -f null -` (decode
  only, no RGB conversion) on the same files in the same run; medians of 5 runs
- sampling 2 fps out of a 30 fps 720p clip vs decoding every frame
- peak resident memory while streaming a long 720p video at 5 fps, resized to 384
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from actalign.video import Sampling, iter_frames

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "actionatlas-samples"


def synthetic(path: Path, seconds: float, fps: int = 30, size=(1280, 720), preset: str = "veryfast") -> Path:
    """A 720p clip with moving texture (so that the encoder has real work)."""
    w, h = size
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (h, w * 2, 3), dtype=np.uint8)
    base = (base.astype(np.uint16) + np.roll(base, 7, axis=1)) // 2  # smoother texture
    base = base.astype(np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": preset, "crf": "23"}
        for i in range(int(seconds * fps)):
            x = (i * 8) % w
            img = np.ascontiguousarray(base[:, x : x + w])
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


def ffmpeg_seconds(path: Path, rgb: bool = False) -> float:
    """`ffmpeg -threads 2 -i FILE -f null -`, optionally converting to RGB like we do."""
    convert = ["-pix_fmt", "rgb24"] if rgb else []
    t0 = time.perf_counter()
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-threads", "2", "-i", str(path), *convert, "-f", "null", "-"],
        check=True,
    )
    return time.perf_counter() - t0


def ours_seconds(path: Path, sampling: Sampling | None = None) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(len(b.timestamps) for b in iter_frames(path, sampling))
    return time.perf_counter() - t0, n


def count_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.demux(c.streams.video[0]) if _.size)


def streaming_rss(path: Path) -> tuple[float, int, float]:
    code = (
        "import resource, sys, time; from actalign.video import Sampling, iter_frames; "
        "t0 = time.perf_counter(); "
        "n = sum(len(b.timestamps) for b in "
        "iter_frames(sys.argv[1], Sampling(fps=5), batch_size=32, resize=384)); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, n, time.perf_counter() - t0)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    mb, n, secs = out.stdout.split()
    return float(mb), int(n), float(secs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--long-minutes", type=float, default=10.0)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("ffmpeg") is None:
        sys.exit("ffmpeg is needed for the baseline: apt-get install ffmpeg")
    tmp = Path(tempfile.mkdtemp(prefix="actalign-bench-"))
    rows = []
    files = [synthetic(tmp / "synthetic-720p30-20s.mp4", 20)]
    files += [SHARED / n for n in ("basketball.mp4", "cricket.mp4", "tennis.mp4") if (SHARED / n).exists()]
    for f in files:
        frames = count_frames(f)
        ff = statistics.median(ffmpeg_seconds(f) for _ in range(args.runs))
        ff_rgb = statistics.median(ffmpeg_seconds(f, rgb=True) for _ in range(args.runs))
        ours = statistics.median(ours_seconds(f)[0] for _ in range(args.runs))
        rows.append(
            (
                f"all frames to RGB: {f.name}",
                f"{frames / ours:,.0f} fps",
                f"ffmpeg decode-only {frames / ff:,.0f} fps; decode+RGB {frames / ff_rgb:,.0f} fps",
                f"{ff / ours:.2f}x; {ff_rgb / ours:.2f}x",
            )
        )
    clip = files[0]
    every = statistics.median(ours_seconds(clip)[0] for _ in range(args.runs))
    two, n = ours_seconds(clip, Sampling(fps=2))
    two = statistics.median([two] + [ours_seconds(clip, Sampling(fps=2))[0] for _ in range(args.runs - 1)])
    rows.append(
        (
            f"2 fps of {clip.name} ({n} frames)",
            f"{two * 1e3:,.0f} ms",
            f"every frame {every * 1e3:,.0f} ms",
            f"{every / two:.2f}x faster",
        )
    )

    long = synthetic(tmp / "long.mp4", args.long_minutes * 60, preset="ultrafast")
    mb, n, secs = streaming_rss(long)
    rows.append(
        (
            f"stream {args.long_minutes:g} min 720p at 5 fps, resize 384",
            f"peak RSS {mb:,.0f} MB",
            f"{n} frames in {secs:,.1f} s",
            "goal < 500 MB",
        )
    )
    shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}, "
        f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info}); {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| workload | actalign.video | baseline (same run) | ratio (ours / baseline speed) |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
