"""A second `locate` of the same video reads the frame path's cache: no decoding, no encoding.

    python benchmarks/bench_locate_cache.py [--minutes 10] [--model tiny|base]

Makes a synthetic video (`--minutes` long, 320x240 at 25 fps), then times `locate` on it twice
with one embedding cache: first with candidates A, then with other candidates B (what a user does
when searching the same match for another action). Prints the CPU, the times, the ratio, and the
frames decoded by each search. The model has random weights (speed does not depend on them):
`tiny` is the tests' 32 px SigLIP, `base` SigLIP base's shapes (224 px, 12 layers).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from actalign.encoders.cpu import cpu_name

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_long_video(path: Path, minutes: float, fps: int = 25, size=(320, 240)) -> Path:
    import av

    n = int(minutes * 60 * fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps * 2)}
        for i in range(n):
            level = (i // (fps * 7)) * 53 % 255  # a new scene every 7 s
            img = np.full((size[1], size[0], 3), level, np.uint8)
            img[: size[1] // 2, :, 0] = (i * 3) % 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def build_model(kind: str, root: Path) -> Path:
    from models import build_siglip

    if kind == "tiny":
        return build_siglip(root / "tiny")
    from transformers import SiglipConfig, SiglipModel

    path = build_siglip(root / "base", image_size=224)  # tokenizer and processor from the tests
    config = SiglipConfig.from_pretrained(path)
    config.vision_config.update(
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            patch_size=16,
        )
    )
    config.text_config.update(
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            projection_size=768,
        )
    )
    SiglipModel(config).save_pretrained(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--model", choices=["tiny", "base"], default="tiny")
    parser.add_argument("--fps", type=float, default=2.0)
    args = parser.parse_args()

    import actalign.embed
    from actalign import ActAlign
    from actalign.encoders.cache import EmbeddingCache

    root = Path(tempfile.mkdtemp(prefix="bench-locate-"))
    video = make_long_video(root / "match.mp4", args.minutes)
    scripts = {
        "d": {
            "a1": ["red ball", "blue net"],
            "a2": ["player jumps", "ball in net"],
            "b1": ["green court", "player runs", "kicks"],
            "b2": ["white net", "foot", "goal"],
        }
    }
    model = ActAlign(
        str(build_model(args.model, root)), scripts, fps=args.fps, cache=EmbeddingCache(root / "cache")
    )
    decoded = {"n": 0}
    real = actalign.embed.iter_frames

    class Counting:
        """iter_frames, counting the frames it decodes."""

        def __init__(self, *a, **k):
            self.inner = real(*a, **k)
            self.stats = self.inner.stats

        def __iter__(self):
            for batch in self.inner:
                decoded["n"] += len(batch.timestamps)
                yield batch

    counting = Counting

    actalign.embed.iter_frames = counting
    rows = []
    for label, cands in (("first search (a1, a2)", ["a1", "a2"]), ("second search (b1, b2)", ["b1", "b2"])):
        decoded["n"] = 0
        t0 = time.perf_counter()
        found = model.locate(video, cands, "d")
        rows.append((label, time.perf_counter() - t0, decoded["n"], len(found)))
    print(f"CPU: {cpu_name()} ({platform.machine()}), model: {args.model} (random weights)")
    print(f"video: {args.minutes:g} min, 320x240 at 25 fps, sampled at {args.fps:g} fps")
    print()
    print("| search | seconds | frames decoded | detections |")
    print("|---|---|---|---|")
    for label, seconds, n, k in rows:
        print(f"| {label} | {seconds:.2f} | {n} | {k} |")
    print()
    print(f"second / first: {rows[1][1] / rows[0][1]:.3f} ({rows[0][1] / rows[1][1]:.1f}x faster)")
    print(json.dumps({"first_s": rows[0][1], "second_s": rows[1][1]}))


if __name__ == "__main__":
    main()
