"""Alignment core: Eq. 7-14 of ActAlign. numpy only (never imports torch).

Arrays: frames (T, d), steps (K, d), affinity (K, T): steps are rows, time is columns.

- `smooth`     Eq. 7, centred moving average over time, zero padded, T rows out for T rows in.
- `affinity`   Eq. 8-9, sigmoid(scale * cos + bias) with the model's own scale and bias.
- `dtw`        Eq. 10-13, max-sum DTW from (0, 0) to (K-1, T-1), path, score, step segments.
- `dtw_scores` the same scores for many matrices at once (all candidates of a video, many videos).

The DTW recurrence runs in a small C kernel (`actalign._dtw`, built at install time) that does the
same floating-point operations as the plain double loop, so its results are bit-identical to it.
Where the kernel could not be built, a vectorised numpy version (a max-plus scan per row) is used;
it agrees to rounding. Set ACTALIGN_DTW=numpy to force it.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actalign.errors import ActAlignError

try:  # the optional compiled kernel
    from actalign import _dtw as _kernel
except ImportError:  # pragma: no cover - depends on the install
    _kernel = None

DIAG, LEFT, UP = 0, 1, 2  # predecessor codes; ties prefer them in this order (as the authors' code)
MODES = ("global", "subsequence")
SUBSEQUENCE_PRIOR_SECONDS = 1.0


def backend() -> str:
    """Name of the DTW implementation in use: 'c' or 'numpy'."""
    if _kernel is not None and os.environ.get("ACTALIGN_DTW", "").lower() != "numpy":
        return "c"
    return "numpy"


@dataclass(frozen=True)
class Alignment:
    """Result of aligning K steps to T frames.

    score:    total / len(path), the path-normalised score of Eq. 13 (in [0, 1] for A in [0, 1]).
    total:    sum of the affinity along the path (Eq. 12), D[K-1, T-1].
    path:     (L, 2) int64 rows of (k, t), from (0, 0) to (K-1, T-1), monotonic and continuous.
    segments: (K, 2) int64, for each step the first and last frame index matched to it.
    """

    score: float
    total: float
    path: np.ndarray
    segments: np.ndarray
    span: tuple[int, int] | None = None


# --------------------------------------------------------------------------- validation


def _as_matrix(x: object, name: str, dtype: type = np.float64, check_finite: bool = True) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ActAlignError(f"{name} must be a numeric 2-D array ({e}).") from None
    if a.ndim != 2:
        raise ActAlignError(f"{name} must be 2-D, got shape {a.shape}.")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ActAlignError(f"{name} is empty (shape {a.shape}); give at least one row and column.")
    if check_finite and not np.isfinite(a).all():
        raise ActAlignError(f"{name} contains NaN or inf; check the embeddings that produced it.")
    return a


def _normalise_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ActAlignError(f"{name} has an all-zero row, which has no direction to compare.")
    return x / norms


# --------------------------------------------------------------------------- Eq. 7-9


def window_frames(seconds: float, fps: float) -> int:
    """Smoothing width in frames for a window of `seconds` at sampling rate `fps` (at least 1)."""
    if seconds < 0 or fps <= 0:
        raise ActAlignError("The smoothing window must be >= 0 s and the sampling rate > 0 fps.")
    return max(1, round(seconds * fps))


def smooth(frames: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of Eq. 7 over time: frames (T, d) -> (T, d), zero padded.

    Row t averages frames t - (w-1)//2 .. t + w//2 (w frames; for odd w that is Eq. 7 exactly,
    for even w the window is one frame later than earlier, the same rows as the authors'
    `conv1d(padding=(w-1)//2)` plus the last row it drops). Missing frames at the ends count as
    zero and the sum is divided by w. `window <= 1` returns the input unchanged.
    """
    if not isinstance(window, (int, np.integer)) or window < 0:
        raise ActAlignError(f"The smoothing window must be a whole number of frames >= 0, got {window!r}.")
    x = _as_matrix(frames, "frames", dtype=_float_dtype(frames))
    if window <= 1:
        return x
    n = x.shape[0]
    t = np.arange(n)
    lo = np.clip(t - (window - 1) // 2, 0, n)
    hi = np.clip(t + window // 2 + 1, 0, n)
    out = np.empty_like(x)
    for j in range(0, x.shape[1], 256):  # float64 running sums, a few columns at a time
        c = np.zeros((n + 1, min(256, x.shape[1] - j)))
        np.cumsum(x[:, j : j + 256], axis=0, dtype=np.float64, out=c[1:])
        out[:, j : j + 256] = (c[hi] - c[lo]) / window
    return out


def _float_dtype(x: object) -> type:
    """Keep float32 / float64 input as it is; anything else becomes float64."""
    dtype = getattr(x, "dtype", None)
    return dtype if dtype is not None and np.issubdtype(dtype, np.floating) else np.float64


def cosine(frames: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Eq. 8: cosine similarity of L2-normalised rows, steps (K, d) x frames (T, d) -> (K, T)."""
    z = _as_matrix(frames, "frames")
    u = _as_matrix(steps, "steps")
    if z.shape[1] != u.shape[1]:
        raise ActAlignError(
            f"Frame and step embeddings differ in width ({z.shape[1]} vs {u.shape[1]}); "
            "embed both with the same model."
        )
    return _normalise_rows(u, "steps") @ _normalise_rows(z, "frames").T


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -x))


def calibrate(cos: np.ndarray, scale: float, bias: float | None) -> np.ndarray:
    """Eq. 9: sigmoid(scale * cos + bias). With `bias=None` (models trained without one, e.g.
    CLIP, whose softmax-trained scale saturates a sigmoid) the map is linear: (1 + cos) / 2."""
    if bias is None:
        return (1.0 + cos) / 2.0
    return sigmoid(scale * cos + bias)


def affinity(
    frames: np.ndarray, steps: np.ndarray, scale: float = 1.0, bias: float | None = 0.0
) -> np.ndarray:
    """Eq. 8-9: steps (K, d), frames (T, d) -> affinity (K, T) in [0, 1].

    `scale` is the multiplier (exp of a model's logit_scale), `bias` its logit_bias.
    """
    return calibrate(cosine(frames, steps), scale, bias)


# --------------------------------------------------------------------------- Eq. 10-13


def dtw(affinity: np.ndarray, mode: str = "global", **options) -> Alignment:
    """Best monotonic, continuous path through affinity (K, T) from (0, 0) to (K-1, T-1).

    Every step and every frame is matched; K > T is allowed (steps then share frames).
    Ties prefer the diagonal, then the previous frame, then the previous step.
    """
    a = np.ascontiguousarray(_as_matrix(affinity, "affinity"))
    k, t = a.shape
    if backend() == "c":
        buf = np.empty((k + t - 1, 2), dtype=np.int64)
        total, length = _kernel.path(a, k, t, buf)
        path = buf[:length].copy()
    else:
        total, path = _dtw_path_numpy(a)
    return Alignment(float(total) / len(path), float(total), path, segments_from_path(path, k))


def dtw_scores(affinities: Sequence[np.ndarray], mode: str = "global", **options) -> np.ndarray:
    """Path-normalised scores (N,) of many affinity matrices (shapes may differ).

    Equal to `[dtw(A).score for A in affinities]`, computed in one batched call.
    """
    mats = [_as_matrix(a, f"affinity[{i}]", check_finite=False) for i, a in enumerate(affinities)]
    if backend() == "c":
        totals = np.empty(len(mats))
        lengths = np.empty(len(mats), dtype=np.int64)
        bad = _kernel.scores([np.ascontiguousarray(m) for m in mats], totals, lengths)
    else:
        bad = next((i for i, m in enumerate(mats) if not np.isfinite(m).all()), -1)
        totals, lengths = _totals_numpy(mats)
    if bad >= 0:
        _as_matrix(mats[bad], f"affinity[{bad}]")  # raises with the usual message
    return totals / lengths


def segments_from_path(path: np.ndarray, k: int) -> np.ndarray:
    """(K, 2) first and last frame of each step along a valid path (rows sorted by step)."""
    steps = np.arange(k)
    first = np.searchsorted(path[:, 0], steps, side="left")
    last = np.searchsorted(path[:, 0], steps, side="right") - 1
    return np.stack([path[first, 1], path[last, 1]], axis=1)


# --------------------------------------------------------------------------- numpy fallback
#
# Row k of Eq. 11 is a max-plus scan: x_t = a_t + max(x_{t-1}, b_t) with b_t the best of the two
# cells above, whose solution is x_t = S_t + max_{s<=t}(a_s + b_s - S_s), S = cumsum(a). Each row
# is then a handful of vectorised calls over a batch of matrices of equal T.


_TIE_EPS = 8 * np.finfo(np.float64).eps


def _scan_rows(a: np.ndarray):
    """Yield (k, D_k, pred_k, L_k) for a batch a (N, K, T): cumulative scores, moves, path lengths."""
    n, _, t = a.shape
    ar = np.arange(t)
    d = np.cumsum(a[:, 0, :], axis=1)
    length = np.broadcast_to(ar + 1, (n, t)).astype(np.int64)
    pred = np.full((n, t), LEFT, dtype=np.uint8)
    yield 0, d, pred, length
    for k in range(1, a.shape[1]):
        row = a[:, k, :]
        dp, lp = d, length
        above = np.empty_like(dp)
        above[:, 0] = dp[:, 0]
        np.maximum(dp[:, :-1], dp[:, 1:], out=above[:, 1:])
        s = np.cumsum(row, axis=1)
        d = s + np.maximum.accumulate(row + above - s, axis=1)
        left, diag, up = d[:, :-1], dp[:, :-1], dp[:, 1:]
        # the scan rounds differently from the sequential sums; values within that rounding
        # are ties, so the tie order is the same as the C kernel's and the plain loop's
        tol = (_TIE_EPS * (k + t)) * np.maximum(np.abs(diag), np.maximum(np.abs(left), np.abs(up)))
        is_diag = diag >= np.maximum(left, up) - tol
        is_left = ~is_diag & (left >= up - tol)
        pred = np.full((n, t), UP, dtype=np.uint8)
        pred[:, 1:][is_diag] = DIAG
        pred[:, 1:][is_left] = LEFT
        # path length: cells not entered from the left take 1 + the length above/diagonal;
        # a run of left moves adds one per frame after the last such cell.
        entry = np.empty_like(lp)
        entry[:, 0] = lp[:, 0] + 1
        entry[:, 1:] = np.where(is_diag, lp[:, :-1], lp[:, 1:]) + 1
        last = np.zeros((n, t), dtype=np.int64)
        last[:, 1:] = np.where(is_left, 0, ar[1:])
        np.maximum.accumulate(last, axis=1, out=last)
        length = np.take_along_axis(entry, last, axis=1) + (ar - last)
        yield k, d, pred, length


def _totals_numpy(mats: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    if not mats:
        return np.empty(0), np.empty(0, dtype=np.int64)
    totals = np.empty(len(mats))
    lengths = np.empty(len(mats), dtype=np.int64)
    by_t: dict[int, list[int]] = defaultdict(list)
    for i, m in enumerate(mats):
        by_t[m.shape[1]].append(i)
    for t, idx in by_t.items():  # pad K within groups of equal T; rows past K_i are never read
        ks = np.array([mats[i].shape[0] for i in idx])
        batch = np.zeros((len(idx), ks.max(), t))
        for j, i in enumerate(idx):
            batch[j, : ks[j]] = mats[i]
        for k, d, _, length in _scan_rows(batch):
            done = np.flatnonzero(ks == k + 1)
            totals[np.array(idx)[done]] = d[done, -1]
            lengths[np.array(idx)[done]] = length[done, -1]
    return totals, lengths


def _dtw_path_numpy(a: np.ndarray) -> tuple[float, np.ndarray]:
    rows = list(_scan_rows(a[None]))
    preds = [pred[0] for _, _, pred, _ in rows]
    total = float(rows[-1][1][0, -1])
    k, t = a.shape[0] - 1, a.shape[1] - 1
    path = [(k, t)]
    while k or t:
        move = preds[k][t]
        k, t = (k - 1, t - 1) if move == DIAG else (k, t - 1) if move == LEFT else (k - 1, t)
        path.append((k, t))
    return total, np.array(path[::-1], dtype=np.int64)
