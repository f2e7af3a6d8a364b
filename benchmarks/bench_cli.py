"""Where the time of one `actalign classify` goes: prints a markdown table (docs/benchmarks.md).

    python benchmarks/bench_cli.py [--video FILE] [--fps F]

Stages, each timed in a fresh interpreter with the tests' tiny SigLIP on the CPU: start-up
(imports, model load), decode, encode (frames and step texts), align (smoothing, affinity, DTW
scores and paths), output (JSON). Also the wall time of the real command, cold and with the
embedding cache warm. Medians of 3 runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "actionatlas-samples"
CANDIDATES = ["Tip-in", "Putback dunk", "Alley-oop Dunk", "Tomahawk Dunk", "Windmill Dunk"]


def stages(model: str, video: str, fps: float | None, scripts: dict) -> dict:
    t0 = time.perf_counter()
    from actalign import ActAlign, align
    from actalign.embed import embed_texts
    from actalign.encoders import load_encoder
    from actalign.exports import to_json
    from actalign.score import Prediction, actalign_scores, segments
    from actalign.video import Sampling, iter_frames

    t_import = time.perf_counter()
    enc = load_encoder(model, device="cpu")
    t_load = time.perf_counter()
    batches = list(iter_frames(video, Sampling(fps=fps), batch_size=enc.batch_size, resize=enc.decode_size))
    t_decode = time.perf_counter()
    import numpy as np

    frames = np.concatenate([enc.encode_images(b.frames) for b in batches])
    timestamps = np.concatenate([b.timestamps for b in batches])
    steps = [embed_texts(enc, [f"{s} in basketball" for s in scripts[a]]) for a in CANDIDATES]
    t_encode = time.perf_counter()
    fps_eff = (len(timestamps) - 1) / (timestamps[-1] - timestamps[0])
    scores, affinities = actalign_scores(
        frames, steps, enc.scale, enc.bias, align.window_frames(1.0, fps_eff)
    )
    paths = [align.dtw(a).path for a in affinities]
    segs = [segments(p, scripts[a], timestamps) for p, a in zip(paths, CANDIDATES)]
    t_align = time.perf_counter()
    from actalign.score import CandidateResult

    order = np.argsort(-scores, kind="stable")
    pred = Prediction(
        video,
        "basketball",
        "actalign",
        [
            CandidateResult(CANDIDATES[i], float(scores[i]), r + 1, scripts[CANDIDATES[i]], segs[i])
            for r, i in enumerate(order)
        ],
        timestamps,
    )
    to_json([pred])
    t_output = time.perf_counter()
    del ActAlign
    return {
        "start-up: imports": t_import - t0,
        "start-up: model load": t_load - t_import,
        "decode": t_decode - t_load,
        "encode": t_encode - t_decode,
        "align": t_align - t_encode,
        "output": t_output - t_align,
        "frames": len(timestamps),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--video", default=str(SHARED / "basketball.mp4"))
    parser.add_argument("--fps", type=float, default=None)
    parser.add_argument("--stages", nargs=2, metavar=("MODEL", "SCRIPTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        scripts = json.loads(Path(args.stages[1]).read_text())["basketball"]
        print(json.dumps(stages(args.stages[0], args.video, args.fps, scripts)))
        return

    sys.path.insert(0, str(ROOT / "tests"))
    from models import build_siglip

    tmp = Path(tempfile.mkdtemp(prefix="actalign-bench-"))
    model = build_siglip(tmp / "tiny")
    scripts = {
        "basketball": {c: [f"{c} step {k} with the ball near the rim" for k in range(5)] for c in CANDIDATES}
    }
    (tmp / "s.json").write_text(json.dumps(scripts))
    fps = ["--fps", str(args.fps)] if args.fps else []
    runs = []
    for _ in range(3):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--video",
                args.video,
                *fps,
                "--stages",
                str(model),
                str(tmp / "s.json"),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    env = {**os.environ, "ACTALIGN_CACHE_DIR": str(tmp / "cache"), "ACTALIGN_HOME": str(tmp / "home")}
    cli = [
        sys.executable,
        "-m",
        "actalign",
        "classify",
        args.video,
        "--domain",
        "basketball",
        "--candidates",
        *CANDIDATES,
        "--scripts",
        str(tmp / "s.json"),
        "--model",
        str(model),
        "--format",
        "json",
        *fps,
    ]

    def wall() -> float:
        t0 = time.perf_counter()
        subprocess.run(cli, env=env, capture_output=True, check=True)
        return time.perf_counter() - t0

    cold = []
    for _ in range(3):
        subprocess.run(["rm", "-rf", str(tmp / "cache")], check=True)
        cold.append(wall())
    warm = [wall() for _ in range(3)]

    keys = [k for k in runs[0] if k != "frames"]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    total = sum(med.values())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores; python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}; {Path(args.video).name}, {runs[0]['frames']} frames, 5 candidates"
    )
    print()
    print("| stage | median time | share |")
    print("|---|---|---|")
    for k in keys:
        print(f"| {k} | {med[k] * 1e3:,.1f} ms | {100 * med[k] / total:.1f}% |")
    print(f"| sum of stages | {total * 1e3:,.0f} ms | 100% |")
    print(f"| `actalign classify` wall, cold cache | {statistics.median(cold) * 1e3:,.0f} ms | |")
    print(f"| `actalign classify` wall, warm cache | {statistics.median(warm) * 1e3:,.0f} ms | |")


if __name__ == "__main__":
    main()
