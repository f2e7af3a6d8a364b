"""Top-k accuracy over ranked candidates (paper Sec. 4.1).

Ranks follow the predictions: by score, highest first, ties in the order the candidates were
given. With fewer than k candidates, top-k is trivially correct.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rank_of_answer(scores: Sequence[float], answer: int) -> int:
    """1-based position of the correct candidate in the ranking."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    return int(np.flatnonzero(order == answer)[0]) + 1


def topk(ranks: Sequence[int], k: int) -> float | None:
    """Share of clips whose answer ranks within the first k (0..1); None without clips."""
    r = np.asarray(ranks)
    return float((r <= k).mean()) if len(r) else None


def wilson_interval(hits: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """95% Wilson score interval of a proportion hits / n (good at small n and near 0 or 1)."""
    if n == 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def random_topk(num_candidates: Sequence[int], k: int) -> float:
    """Expected top-k of uniformly random rankings: mean of min(k, M) / M (exact, no trials)."""
    m = np.asarray(num_candidates, dtype=np.float64)
    return float((np.minimum(k, m) / m).mean()) if len(m) else None
