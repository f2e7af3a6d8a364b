"""Batch runner benchmark: prints a markdown table (see docs/benchmarks.md).

    python benchmarks/bench_batch.py                 # CPU: tiny and SigLIP-base-size random models
    python benchmarks/bench_batch.py --gpu --clips 60  # GPU: random so400m-patch14-384, 720p clips

Measured in the same run, on the same clips (synthetic 720p textured clips, or --videos):
- decode: the local engine with an encoder that does nothing (decode workers at full speed);
- encode: `encode_images` on frames already decoded and resized, in full batches;
- batch: the whole run (decode -> encode -> score -> write) with `actalign.runner.run`.
Ratios: batch / slower of decode and encode (issue 12: >= 0.9 on CPU), and on GPU batch / encode
alone (>= 0.7; encoder alone >= 800 frames/s for so400m). The GPU's name is printed with its rows.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI does (see actalign/cli/__init__.py)
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from actalign import load_encoder
from actalign.encoders import Encoder
from actalign.encoders.cpu import cpu_name
from actalign.runner import run
from actalign.runner.plan import Clip, Plan
from actalign.score import Method
from actalign.scripts import ScriptSource
from actalign.video import Sampling, iter_frames


def textured_clip(path: Path, seconds: float = 4.0, fps: int = 30, size=(1280, 720), seed: int = 0) -> Path:
    """720p H.264 with moving random texture: decoding costs what real footage costs."""
    import av

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        for i in range(int(seconds * fps)):
            img = np.kron(np.roll(base, i, axis=1), np.ones((8, 8, 1), np.uint8))
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


class NoEncode(Encoder):
    """Returns zeros: the runner then runs at the pace of decoding alone."""

    scale, bias, dim = 10.0, -5.0, 8

    def __init__(self, like: Encoder) -> None:
        self.identity = "bench:no-encode"
        self.batch_size = like.batch_size
        self.decode_size = like.decode_size

    def encode_images(self, frames):
        return np.tile(np.eye(self.dim, dtype=np.float32)[:1], (len(frames), 1))

    def encode_texts(self, texts):
        return np.tile(np.eye(self.dim, dtype=np.float32)[1:2], (len(texts), 1))


def plan_for(videos: list[Path]) -> tuple[Plan, dict]:
    clips = [Clip(f"c{i}", v, "bench", ("a", "b", "c", "d", "e")) for i, v in enumerate(videos)]
    steps = {a: [f"step {k} of {a} in bench" for k in range(5)] for a in "abcde"}
    source = ScriptSource()
    source.hand = [{"bench": steps}]
    return Plan(clips, [], "bench"), {"context-rich": source}


def run_rate(plan, enc, sources, workers, frames_total, fps) -> float:
    out = tempfile.mkdtemp(prefix="actalign-bench-run-")
    try:
        t0 = time.perf_counter()
        run(plan, enc, sources, out, [Method("ActAlign")], fps=fps, workers=workers, progress=False)
        return frames_total / (time.perf_counter() - t0)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def encode_rate(enc, frames: np.ndarray, repeats: int = 3) -> float:
    enc.encode_images(frames[: enc.batch_size])  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        enc.encode_images(frames)
        times.append(time.perf_counter() - t0)
    return len(frames) / statistics.median(times)


def measure(label: str, enc, videos: list[Path], workers: int, repeats: int, fps: float | None) -> tuple:
    sampling = Sampling(fps=fps)
    frames = np.concatenate([b.frames for b in iter_frames(videos[0], sampling, resize=enc.decode_size)])
    frames = np.concatenate([frames] * -(-2 * enc.batch_size // len(frames)))[
        : 2 * enc.batch_size
    ]  # full batches
    total = sum(
        sum(len(b.timestamps) for b in iter_frames(v, sampling, resize=enc.decode_size)) for v in videos
    )
    plan, sources = plan_for(videos)
    run_rate(Plan(plan.clips[:2]), NoEncode(enc), sources, workers, 1, fps)  # warm-up: workers, page cache
    decode = statistics.median(
        run_rate(plan, NoEncode(enc), sources, workers, total, fps) for _ in range(repeats)
    )
    encode = encode_rate(enc, frames)
    batch = statistics.median(run_rate(plan, enc, sources, workers, total, fps) for _ in range(repeats))
    slower = min(decode, encode)
    return (
        label,
        f"{decode:,.0f}",
        f"{encode:,.0f}",
        f"{batch:,.0f}",
        f"{batch / slower:.2f}",
        f"{batch / encode:.2f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true", help="random so400m-patch14-384 on CUDA (bf16)")
    parser.add_argument("--clips", type=int, default=None, help="number of clips (default 8 CPU, 60 GPU)")
    parser.add_argument(
        "--videos", nargs="*", default=None, help="use these videos instead of synthetic ones"
    )
    parser.add_argument("--workers", type=int, default=None, help="decode workers (default: one per core)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the vision tower (GPU)")
    args = parser.parse_args()
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA GPU, and torch sees none here")
    tmp = Path(tempfile.mkdtemp(prefix="actalign-bench-"))
    n = args.clips or (60 if args.gpu else 12)
    if args.videos:
        videos = [Path(v) for v in args.videos]
        videos = (videos * (n // len(videos) + 1))[:n]
    else:
        videos = [textured_clip(tmp / f"clip{i}.mp4", seed=i) for i in range(n)]
    cores = len(os.sched_getaffinity(0))
    print(
        f"machine: {cpu_name()} ({platform.machine()}), {cores} cores; torch {torch.__version__}; "
        f"{time.strftime('%Y-%m-%d')}; {len(videos)} clips of 720p, {args.workers or cores} decode workers"
    )
    rows = []
    if args.gpu:
        from bench_encode import so400m

        name = torch.cuda.get_device_name()
        enc = load_encoder(str(so400m(tmp / "so400m")), device="cuda", batch_size=128, compile=args.compile)
        rows.append(
            measure(f"so400m-patch14-384, bf16, {name}", enc, videos, args.workers, args.repeats, None)
        )
    else:
        from bench_encode import base_siglip
        from models import build_siglip

        for label, directory, fps in (
            ("tiny SigLIP (32 px), CPU float32, every frame", build_siglip(tmp / "tiny"), None),
            ("SigLIP-base size (224 px), CPU float32, 2 fps", base_siglip(tmp / "base"), 2.0),
        ):
            enc = load_encoder(str(directory), device="cpu", batch_size=32)
            rows.append(measure(label, enc, videos, args.workers, args.repeats, fps))
    print()
    print("| model | decode fps | encode fps | batch fps | batch / slower stage | batch / encode |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
