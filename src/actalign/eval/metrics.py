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


def topk(ranks: Sequence[int], k: int) -> float:
    """Share of clips whose answer ranks within the first k (0..1)."""
    r = np.asarray(ranks)
    return float((r <= k).mean()) if len(r) else float("nan")


def random_topk(num_candidates: Sequence[int], k: int) -> float:
    """Expected top-k of uniformly random rankings: mean of min(k, M) / M (exact, no trials)."""
    m = np.asarray(num_candidates, dtype=np.float64)
    return float((np.minimum(k, m) / m).mean()) if len(m) else float("nan")
