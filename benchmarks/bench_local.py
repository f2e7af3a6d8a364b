"""Local (subsequence) alignment benchmark: prints a markdown table (see docs/benchmarks.md).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 taskset -c 0 python benchmarks/bench_local.py

1. Subsequence scoring against global scoring of the same matrices (goal: within 1.5x of its
   cost) and against a plain Python double loop of the subsequence recurrence (goal >= 150x).
2. `Locator` (the alignment part of `actalign locate`): 10 candidates of 8 steps over
   T = 100,000 frames of 1152-d embeddings (SigLIP so400m's width), fed in windows of 600 frames
   (300 s at 2 fps). Goal: under 5 s on one core, working memory O(K*T) bytes at most.
Times are medians over repeats; the baselines are measured in the same run.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import tracemalloc

import numpy as np

from actalign import align
from actalign.locate import Locator


def plain_subsequence(a: np.ndarray, tau: np.ndarray) -> float:
    """The subsequence recurrence as a plain double loop (row 0 may start afresh) + best end."""
    k_n, t_n = a.shape
    d = np.full((k_n, t_n), -np.inf)
    raw = np.zeros((k_n, t_n))
    length = np.zeros((k_n, t_n), dtype=np.int64)
    for t in range(t_n):
        e = a[0, t] - tau[0]
        if t and d[0, t - 1] >= 0:
            d[0, t], raw[0, t], length[0, t] = d[0, t - 1] + e, raw[0, t - 1] + a[0, t], length[0, t - 1] + 1
        else:
            d[0, t], raw[0, t], length[0, t] = e, a[0, t], 1
    for k in range(1, k_n):
        for t in range(t_n):
            options = [(d[k - 1, t - 1], k - 1, t - 1), (d[k, t - 1], k, t - 1)] if t else []
            options.append((d[k - 1, t], k - 1, t))
            best, bk, bt = max(options, key=lambda o: o[0])
            d[k, t] = best + a[k, t] - tau[k]
            raw[k, t], length[k, t] = raw[bk, bt] + a[k, t], length[bk, bt] + 1
    end = int(np.argmax(d[-1]))
    return raw[-1, end] / length[-1, end]


def median_time(fn, repeats: int, number: int = 1) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def scoring_rows() -> list[tuple]:
    rng = np.random.default_rng(0)
    clip = [rng.random((6, 300)) for _ in range(5)]
    many = [rng.random((6, 300)) for _ in range(10_000)]
    taus = [align.background(a) for a in clip]
    loop = median_time(lambda: [plain_subsequence(a, t) for a, t in zip(clip, taus)], 3) / 5
    expected = [plain_subsequence(a, t) for a, t in zip(clip, taus)]
    assert np.allclose(align.dtw_scores(clip, mode="subsequence"), expected)
    g1 = median_time(lambda: align.dtw_scores(clip), 21, 20) / 5
    s1 = median_time(lambda: align.dtw_scores(clip, mode="subsequence"), 21, 20) / 5
    gm = median_time(lambda: align.dtw_scores(many), 3) / len(many)
    sm = median_time(lambda: align.dtw_scores(many, mode="subsequence"), 3) / len(many)
    return [
        (
            "plain double loop, subsequence (baseline)",
            "1 clip: K=6, T=300, 5 candidates",
            f"{loop * 1e6:,.0f} µs / alignment",
            "1x",
            "",
        ),
        (
            "dtw_scores global [" + align.backend() + "]",
            "1 clip: K=6, T=300, 5 candidates",
            f"{g1 * 1e6:,.1f} µs / alignment",
            f"{loop / g1:,.0f}x",
            "1.00",
        ),
        (
            "dtw_scores subsequence [" + align.backend() + "]",
            "1 clip: K=6, T=300, 5 candidates",
            f"{s1 * 1e6:,.1f} µs / alignment",
            f"{loop / s1:,.0f}x",
            f"{s1 / g1:.2f}",
        ),
        (
            "dtw_scores global [" + align.backend() + "]",
            "10,000 alignments K=6, T=300",
            f"{1 / gm:,.0f} alignments / s",
            f"{loop / gm:,.0f}x",
            "1.00",
        ),
        (
            "dtw_scores subsequence [" + align.backend() + "]",
            "10,000 alignments K=6, T=300",
            f"{1 / sm:,.0f} alignments / s",
            f"{loop / sm:,.0f}x",
            f"{sm / gm:.2f}",
        ),
    ]


def locate_row(t_total: int = 100_000, window: int = 600, d: int = 1152) -> tuple:
    rng = np.random.default_rng(1)
    steps = {f"action {i}": rng.standard_normal((8, d)).astype(np.float32) for i in range(10)}
    loc = Locator(steps, prior=2)
    stream = align.StreamingAffinity(loc.stacked, 1, scale=112.0, bias=-16.5)
    windows = (t_total + window - 1) // window
    spent = 0.0
    tracemalloc.start()
    for w in range(windows):
        n = min(window, t_total - w * window)
        frames = rng.standard_normal((n, d)).astype(np.float32)  # made outside the timing
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        t0 = time.perf_counter()
        loc.feed(stream.push(frames))
        spent += time.perf_counter() - t0
        peak = tracemalloc.get_traced_memory()[1] - base
    t0 = time.perf_counter()
    found = loc.finish()
    spent += time.perf_counter() - t0
    tracemalloc.stop()
    kt = 10 * 8 * t_total
    return (
        "StreamingAffinity + Locator.feed + finish",
        f"10 candidates x 8 steps, T = {t_total:,}, d = {d}, windows of {window}",
        f"{spent:.2f} s, {peak / 2**20:.1f} MB working memory per window ({len(found)} occurrences)",
        f"K*T = {kt / 2**20:.1f} MB",
        "goal < 5 s",
    )


def main() -> None:
    rows = scoring_rows()
    rows.append(locate_row())
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} used), "
        f"python {platform.python_version()}, numpy {np.__version__}; {time.strftime('%Y-%m-%d')}"
    )
    print()
    print("| implementation | workload | time | vs plain loop | vs global |")
    print("|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
