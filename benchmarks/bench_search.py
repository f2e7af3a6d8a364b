"""Search an archive index: warm and cold search time and peak memory against a baseline.

    python benchmarks/bench_search.py                 # 10 hours of footage at 2 fps
    python benchmarks/bench_search.py --hours 100 --precision float32

A synthetic index (one video per hour, random unit 1152-d vectors at 2 fps, `Index.add_embeddings`)
is searched for 10 candidates of 8 steps. Each measurement runs in its own process so that its
peak memory (resource.getrusage) is its own:

  baseline  read every shard once (widened to float32) and multiply all frames with the 80 step
            vectors in numpy (BLAS on every core): the least any search must do
  kernel    read every shard once and multiply it with the steps in the C kernel the search uses
            (`actalign._affinity.products`, one video per thread, a thread per core): the least
            this search must do
  cold      open the index and search it once (imports, catalogue, shards from disk or page cache)
  warm      the same search again in that process (one scan thread per core)
  1 thread  the same search with one scan thread (`workers=1`)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from actalign.encoders.cpu import describe, usable_cores

DIM, FPS, ACTIONS, STEPS = 1152, 2, 10, 8


class RandomEncoder:
    """A stand-in for SigLIP so400m: 1152-d unit vectors; texts hashed to fixed random vectors."""

    identity = "bench:random-1152"
    scale, bias, dim, batch_size, decode_size, text_encoding = 10.0, -5.0, DIM, 16, None, "trained"

    def encode_texts(self, texts):
        out = []
        for t in texts:
            v = np.random.default_rng(abs(hash(t)) % 2**32).normal(size=DIM)
            out.append(v / np.linalg.norm(v))
        return np.asarray(out, np.float32)

    def encode_images(self, frames):
        raise NotImplementedError


def scripts() -> dict:
    return {"bench": {f"action {a}": [f"step {a}.{k}" for k in range(STEPS)] for a in range(ACTIONS)}}


def build(root: Path, hours: float, precision: str) -> None:
    from actalign.index import Index

    index = Index.create(root, model=RandomEncoder(), fps=FPS, precision=precision, cache=False)
    rng = np.random.default_rng(0)
    per_video = 3600 * FPS
    left = round(hours * 3600 * FPS)
    n = 0
    while left > 0:
        t = min(per_video, left)
        v = rng.standard_normal((t, DIM), dtype=np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        index.add_embeddings(f"video-{n:04d}", np.arange(t) / FPS, v)
        left, n = left - t, n + 1


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, root: str) -> dict:
    if kind == "baseline":
        from actalign.index import Index, widen

        t0 = time.perf_counter()
        index = Index.open(root, model=RandomEncoder(), cache=False)
        enc = RandomEncoder()
        steps = enc.encode_texts([s for a in scripts()["bench"].values() for s in a])
        total = 0.0
        for entry in index.videos.values():
            frames, _ = index._load(entry)
            total += float((widen(np.asarray(frames), index.precision) @ steps.T).sum())
        return {"baseline_s": time.perf_counter() - t0, "baseline_peak_mb": peak_mb()}
    if kind == "kernel":
        return {"kernel_s": kernel_baseline(root), "kernel_peak_mb": peak_mb()}
    t0 = time.perf_counter()
    from actalign.index import Index

    index = Index.open(root, model=RandomEncoder(), cache=False)
    candidates = list(scripts()["bench"])
    hits = index.search(candidates, "bench", scripts=scripts(), top=20)
    cold = time.perf_counter() - t0
    t1 = time.perf_counter()
    index.search(candidates, "bench", scripts=scripts(), top=20)
    warm = time.perf_counter() - t1
    one = Index.open(root, model=RandomEncoder(), cache=False, workers=1)
    t2 = time.perf_counter()
    one.search(candidates, "bench", scripts=scripts(), top=20)
    single = time.perf_counter() - t2
    from actalign.align import products_backend

    return {
        "cold_s": cold,
        "warm_s": warm,
        "single_s": single,
        "search_peak_mb": peak_mb(),
        "videos": len(index.videos),
        "hits": len(hits),
        "products": products_backend(),
    }


def kernel_baseline(root: str) -> float:
    """Seconds to read every shard and multiply it with the steps in `_affinity.products`."""
    from concurrent.futures import ThreadPoolExecutor

    from actalign import _affinity
    from actalign.encoders.cpu import usable_cores
    from actalign.index import Index
    from actalign.precision import PRECISIONS

    t0 = time.perf_counter()
    index = Index.open(root, model=RandomEncoder(), cache=False)
    steps = RandomEncoder().encode_texts([s for a in scripts()["bench"].values() for s in a])
    kind, k = PRECISIONS.index(index.precision), len(steps)

    def one(entry) -> None:
        frames, _ = index._load(entry)
        for lo in range(0, len(frames), 4096):
            block = np.ascontiguousarray(frames[lo : lo + 4096])
            rows = np.empty((len(block), k + 1))
            _affinity.products(block[:0], block, kind, DIM, steps, k, 0, rows, 0, False)

    with ThreadPoolExecutor(usable_cores()) as pool:
        list(pool.map(one, index.videos.values()))
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, default=10.0, help="hours of footage (default: 10)")
    p.add_argument("--precision", default="float16", help="index precision (default: float16)")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        root = Path(tmp) / "idx"
        t0 = time.perf_counter()
        build(root, args.hours, args.precision)
        built = time.perf_counter() - t0
        results = {}
        for kind in ("baseline", "kernel", "search"):
            command = [sys.executable, __file__, "--child", kind, str(root)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            results.update(json.loads(out.stdout.strip().splitlines()[-1]))
        size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20
    frames = round(args.hours * 3600 * FPS)
    print(f"CPU: {describe()}")
    print(
        f"index: {args.hours:g} h at {FPS} fps = {frames} frames x {DIM}-d, {args.precision}, "
        f"{results['videos']} videos, {size:.0f} MiB on disk (built from vectors in {built:.1f} s)"
    )
    print(f"query: {ACTIONS} candidates x {STEPS} steps, top 20 ({results['hits']} hits)")
    print(f"products: {results['products']}; scan threads: {usable_cores()}")
    print(f"{'':26}{'time (s)':>10}{'per hour (s)':>14}{'peak RSS (MiB)':>16}")
    rows = [
        ("baseline (read + numpy)", results["baseline_s"], results["baseline_peak_mb"]),
        ("baseline (read + kernel)", results["kernel_s"], results["kernel_peak_mb"]),
        ("search, cold", results["cold_s"], results["search_peak_mb"]),
        ("search, warm", results["warm_s"], results["search_peak_mb"]),
        ("search, warm, 1 thread", results["single_s"], results["search_peak_mb"]),
    ]
    for name, seconds, mb in rows:
        print(f"{name:26}{seconds:10.2f}{seconds / args.hours:14.3f}{mb:16.0f}")
    print(
        f"warm search / numpy baseline: {results['warm_s'] / results['baseline_s']:.2f}x; "
        f"/ kernel baseline: {results['warm_s'] / results['kernel_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
