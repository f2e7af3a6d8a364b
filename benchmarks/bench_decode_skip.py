"""Decode only what sampling needs? PyAV's `skip_frame` against decoding every frame.

    python benchmarks/bench_decode_skip.py

On a synthetic 720p30 clip (x264, `bench_video.synthetic`) and the shared basketball clip: the time
to decode every frame against decoding with `skip_frame="NONREF"` (the decoder drops frames that
no other frame refers to), in the same run (best of 2), and the share of the frames that sampling
at 1 and 2 fps picks (the first frame at or after each sample time, as `actalign.video` does) that
are still there when non-reference frames are skipped: below 100% the sampled timestamps would
not be exact.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np

from actalign.encoders.cpu import cpu_name

sys.path.insert(0, str(Path(__file__).parent))
from bench_video import SHARED, synthetic


def decode(path: Path, skip: str | None) -> tuple[float, np.ndarray]:
    """(seconds, presentation times of the frames the decoder gave)."""
    t0 = time.perf_counter()
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if skip:
            s.codec_context.skip_frame = skip
        times = [float(f.pts * s.time_base) for f in c.decode(s)]
    return time.perf_counter() - t0, np.array(times)


def main() -> None:
    print(f"CPU: {cpu_name()}")
    print("| clip | every frame | skip_frame=NONREF | speed-up | sampled frames kept, 1 fps | 2 fps |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        clips = [synthetic(Path(tmp) / "synthetic-720p30-20s.mp4", 20), SHARED / "basketball.mp4"]
        for path in clips:
            if not path.exists():
                continue
            full_t, full = min(decode(path, None) for _ in range(2))
            skip_t, kept = min(decode(path, "NONREF") for _ in range(2))
            shares = []
            for fps in (1, 2):
                wanted = np.arange(full[0], full[-1], 1 / fps)
                picked = full[np.searchsorted(full, wanted - 1e-9)]
                shares.append(f"{np.isin(picked, kept).mean():.0%}")
            print(
                f"| {path.name} | {len(full)} frames, {full_t:.2f} s | {len(kept)} frames, {skip_t:.2f} s "
                f"| {full_t / skip_t:.2f}x | {shares[0]} | {shares[1]} |"
            )


if __name__ == "__main__":
    main()
