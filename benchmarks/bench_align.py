"""Alignment core benchmark: prints a markdown table (see docs/benchmarks.md).

    python benchmarks/bench_align.py

Baseline: a plain Python double loop over a numpy array (the style of the authors' code),
measured in the same run. Times are medians over repeats on one core.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from actalign import align


def plain_loop(a: np.ndarray) -> float:
    """Eq. 11 as a double loop on a numpy array plus backtracking, as in the original scripts."""
    k_n, t_n = a.shape
    d = np.full((k_n, t_n), -np.inf)
    for k in range(k_n):
        for t in range(t_n):
            if k == 0 and t == 0:
                d[0, 0] = a[0, 0]
                continue
            best = max(
                d[k - 1, t - 1] if k and t else -np.inf,
                d[k, t - 1] if t else -np.inf,
                d[k - 1, t] if k else -np.inf,
            )
            d[k, t] = best + a[k, t]
    k, t, n = k_n - 1, t_n - 1, 1
    while (k, t) != (0, 0):
        options = []
        if k and t:
            options.append(((k - 1, t - 1), d[k - 1, t - 1]))
        if t:
            options.append(((k, t - 1), d[k, t - 1]))
        if k:
            options.append(((k - 1, t), d[k - 1, t]))
        (k, t), _ = max(options, key=lambda o: o[1])
        n += 1
    return d[-1, -1] / n


def median_time(fn, repeats: int, number: int = 1) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def with_backend(name: str, fn):
    old = os.environ.get("ACTALIGN_DTW")
    os.environ["ACTALIGN_DTW"] = name
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("ACTALIGN_DTW")
        else:
            os.environ["ACTALIGN_DTW"] = old


def first_call_latency(backend: str, runs: int = 5) -> float:
    code = (
        "import time; t0 = time.perf_counter(); import numpy as np; from actalign import align; "
        "align.dtw_scores([np.random.rand(6, 300) for _ in range(5)]); "
        "print(time.perf_counter() - t0)"
    )
    env = {**os.environ, "ACTALIGN_DTW": backend}
    out = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            ).stdout
        )
        for _ in range(runs)
    ]
    return statistics.median(out)


def long_video(backend: str) -> tuple[float, float]:
    """Seconds and peak working memory (MB) of one K=10, T=20,000 alignment with its path.

    Memory: numpy allocations traced by tracemalloc (input excluded) plus, for the C kernel, its
    own buffers (K*T bytes of moves, two rows of T), which tracemalloc cannot see.
    """
    code = (
        "import time, tracemalloc, numpy as np; from actalign import align; "
        "a = np.random.default_rng(0).random((10, 20000)); align.dtw(a[:, :10]); "
        "tracemalloc.start(); t0 = time.perf_counter(); r = align.dtw(a); dt = time.perf_counter() - t0; "
        "peak = tracemalloc.get_traced_memory()[1]; "
        "extra = 10 * 20000 + 16 * 20000 if align.backend() == 'c' else 0; "
        "print(dt, (peak + extra) / 2**20)"
    )
    env = {**os.environ, "ACTALIGN_DTW": backend}
    runs = [
        subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(3)
    ]
    return statistics.median(float(r[0]) for r in runs), max(float(r[1]) for r in runs)


def main() -> None:
    rng = np.random.default_rng(0)
    clip = [rng.random((6, 300)) for _ in range(5)]
    many = [rng.random((6, 300)) for _ in range(10_000)]
    backends = ["c", "numpy"] if align._kernel is not None else ["numpy"]

    loop = median_time(lambda: [plain_loop(a) for a in clip], repeats=5) / 5
    ref = [plain_loop(a) for a in clip]
    rows = [
        (
            "plain double loop (baseline)",
            "1 clip: K=6, T=300, 5 candidates",
            f"{loop * 1e6:,.0f} µs / alignment",
            "1x",
        )
    ]
    for b in backends:
        got = with_backend(b, lambda: align.dtw_scores(clip))
        assert np.allclose(got, ref), "backends disagree with the baseline"
        t = with_backend(b, lambda: median_time(lambda: align.dtw_scores(clip), 21, 20)) / 5
        rows.append(
            (
                f"dtw_scores [{b}]",
                "1 clip: K=6, T=300, 5 candidates",
                f"{t * 1e6:,.1f} µs / alignment",
                f"{loop / t:,.0f}x",
            )
        )
        tp = with_backend(b, lambda: median_time(lambda: [align.dtw(a) for a in clip], 11, 5)) / 5
        rows.append(
            (
                f"dtw with path [{b}]",
                "1 clip: K=6, T=300, 5 candidates",
                f"{tp * 1e6:,.1f} µs / alignment",
                f"{loop / tp:,.0f}x",
            )
        )
    for b in backends:
        t = with_backend(b, lambda: median_time(lambda: align.dtw_scores(many), 3))
        rows.append(
            (
                f"dtw_scores [{b}]",
                "10,000 alignments K=6, T=300",
                f"{len(many) / t:,.0f} alignments / s",
                f"{loop * len(many) / t:,.0f}x",
            )
        )
    for b in backends:
        secs, mb = long_video(b)
        rows.append(
            (
                f"dtw with path [{b}]",
                "1 long video: K=10, T=20,000",
                f"{secs * 1e3:,.1f} ms, {mb:,.1f} MB working memory",
                "goal < 1 s",
            )
        )
    for b in backends:
        lat = first_call_latency(b)
        rows.append(
            (
                f"import + first dtw_scores [{b}]",
                "fresh interpreter, 5 x (6, 300)",
                f"{lat * 1e3:,.0f} ms",
                "goal < 500 ms",
            )
        )

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or '?'}; "
        f"python {platform.python_version()}, numpy {np.__version__}; "
        f"{time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| implementation | workload | time | vs baseline |")
    print("|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    assert math.isfinite(loop)


if __name__ == "__main__":
    main()
