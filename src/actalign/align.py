"""Alignment core: Eq. 7-14 of ActAlign, and local (subsequence) alignment beside it. numpy only
(never imports torch).

Arrays: frames (T, d), steps (K, d), affinity (K, T): steps are rows, time is columns.

- `smooth`     Eq. 7, centred moving average over time, zero padded, T rows out for T rows in.
- `affinity`   Eq. 8-9, sigmoid(scale * cos + bias) with the model's own scale and bias.
- `dtw`        Eq. 10-13, max-sum DTW from (0, 0) to (K-1, T-1), path, score, step segments;
               mode="subsequence": the best path from step 0 to step K-1 that may start and end
               at any frame (see below).
- `dtw_scores` the same scores for many matrices at once (all candidates of a video, many videos).
- `SubsequenceStream` subsequence alignment of a long video chunk by chunk, in O(K) memory.

Subsequence mode (docs/alignment.md has the equations and why). A free-ended path scored by its
mean would be won by a few high frames, so the path is chosen by its *excess over background*:
each step k gets a threshold tau_k = mean_t A[k, t] + z * std_t A[k, t] (`background`), and the
path maximises sum over its cells of (A[k, t] - tau_k): frames that match a step better than its
background extend the path, frames that do not end it, so it neither collapses onto one frame nor
drifts over the whole clip. Its score is the path's mean affinity (Eq. 13 on the span) shrunk
toward the matrix's mean affinity mu by `prior` pseudo-frames:
score = (sum_W A + prior * mu) / (|W| + prior), so a span of a few frames cannot outrank a
sustained match; with prior=0 it is Eq. 13 on the span exactly.

The DTW recurrence runs in a small C kernel (`actalign._dtw`, built at install time) that does the
same floating-point operations as the plain double loop, so its results are bit-identical to it.
Where the kernel could not be built, a vectorised numpy version (a max-plus scan per row) is used;
it agrees to rounding. Set ACTALIGN_DTW=numpy to force it. `StreamingAffinity` has a kernel of
its own (`actalign._affinity`: stored half-precision frames times the steps, and Eq. 7-9 from the
window's products), with the numpy route beside it (ACTALIGN_AFFINITY=numpy).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actalign.errors import ActAlignError
from actalign.precision import PRECISIONS, STORED, widen

try:  # the optional compiled kernels
    from actalign import _dtw as _kernel
except ImportError:  # pragma: no cover - depends on the install
    _kernel = None
try:
    from actalign import _affinity as _products_kernel
except ImportError:  # pragma: no cover - depends on the install
    _products_kernel = None

DIAG, LEFT, UP, START = 0, 1, 2, 3  # predecessor codes; ties prefer them in this order (as the authors')
MODES = ("global", "subsequence")
SUBSEQUENCE_Z = 0.5  # tau_k = mean + z * std of step k's affinities
SUBSEQUENCE_PRIOR_SECONDS = 1.0  # the score's prior weight, in seconds of frames


def backend() -> str:
    """Name of the DTW implementation in use: 'c' or 'numpy'."""
    if _kernel is not None and os.environ.get("ACTALIGN_DTW", "").lower() != "numpy":
        return "c"
    return "numpy"


def products_backend() -> str:
    """What multiplies stored half-precision frames with the steps in `StreamingAffinity`:
    'c-avx512f' or 'c-generic' (the C kernel, reading the stored rows in place), or 'numpy'
    (widen the block to float32, then a BLAS product). ACTALIGN_AFFINITY=numpy forces numpy."""
    if _products_kernel is None or os.environ.get("ACTALIGN_AFFINITY", "").lower() == "numpy":
        return "numpy"
    return "c-" + _products_kernel.vector_path()


@dataclass(frozen=True)
class Alignment:
    """Result of aligning K steps to T frames.

    score:    total / len(path), the path-normalised score of Eq. 13 (in [0, 1] for A in [0, 1]);
              in subsequence mode shrunk by the prior (see the module docstring).
    total:    sum of the affinity along the path (Eq. 12), D[K-1, T-1] in global mode.
    path:     (L, 2) int64 rows of (k, t), monotonic and continuous: from (0, 0) to (K-1, T-1)
              in global mode, from (0, span[0]) to (K-1, span[1]) in subsequence mode.
    segments: (K, 2) int64, for each step the first and last frame index matched to it.
    span:     subsequence mode: (first, last) frame index of the path; None in global mode.
    gain:     subsequence mode: the path's sum of excess affinity (what it maximises).
    """

    score: float
    total: float
    path: np.ndarray
    segments: np.ndarray
    span: tuple[int, int] | None = None
    gain: float | None = None


# --------------------------------------------------------------------------- validation


def _as_matrix(x: object, name: str, dtype: type = np.float64, check_finite: bool = True) -> np.ndarray:
    """x as a C-contiguous 2-D array of `dtype` (no copy when it already is one), or one error."""
    try:
        a = np.ascontiguousarray(x, dtype=dtype)
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


class StreamingAffinity:
    """Eq. 7-9 for frames that arrive in blocks, all steps at once: push(frames (B, d)) returns
    the affinity columns (K, n) whose smoothing window is complete (they lag by window // 2
    frames), finish() the rest. Together they equal affinity(smooth(all frames, window), steps,
    scale, bias) to rounding, holding only about `window` frames back.

    Smoothing is linear, so the smoothed frames' products with the steps are the smoothed
    products: one (B, d) x (d, K) product per block, then a moving average over (B, K). The
    smoothed frames' norms come from each frame's products with its window - 1 neighbours
    (|sum f_i|^2 = sum_ij f_i . f_j): no smoothed (T, d) copy is ever made. dtype: the precision
    of the two products (float64: as `affinity`; float32 for half-precision input, where it is
    far finer than the input); everything after them is float64.

    stored: the frames arrive as an index stores them ("float32", "bfloat16" as uint16 bits,
    "float16"; None: any float array). With dtype float32 the C kernel (`products_backend()`)
    then multiplies the stored rows in place, without a widened copy of the block.
    """

    def __init__(
        self,
        steps: np.ndarray,
        window: int,
        scale: float = 1.0,
        bias: float | None = 0.0,
        dtype: type = np.float64,
        stored: str | None = None,
    ) -> None:
        if not isinstance(window, (int, np.integer)) or window < 0:
            raise ActAlignError(
                f"The smoothing window must be a whole number of frames >= 0, got {window!r}."
            )
        u = _normalise_rows(_as_matrix(steps, "steps"), "steps")
        self.k, self.d = u.shape
        self.u = np.ascontiguousarray(u.T, dtype=dtype)  # (d, K)
        self.w, self.dtype = max(1, int(window)), dtype
        self.scale, self.bias = scale, bias
        self.stored = stored
        self.fused = products_backend() != "numpy"  # Eq. 7-9 from the products in C
        self.kernel = self.fused and stored is not None and np.dtype(dtype) == np.float32
        if self.kernel:
            self.u_rows = np.ascontiguousarray(u, dtype=np.float32)  # (K, d)
            self.tail = np.empty((0, self.d), STORED[stored])  # as stored
        else:
            self.tail = np.empty((0, self.d), dtype)  # the last w - 1 frames
        # per frame from `base` on: its K products with the steps, then f_t . f_{t+l}, l < w
        self.rows = np.zeros((0, self.k + self.w))
        self.base = self.n = self.next_out = 0

    def push(self, frames: np.ndarray) -> np.ndarray:
        """Take the next frames (B, d); return the affinity columns (K, n) now complete."""
        if self.stored is not None:
            frames = self._check_stored(frames)
            if self.kernel:
                return self._push_stored(frames)
            frames = widen(frames, self.stored)
        x = _as_matrix(frames, "frames", dtype=self.dtype, check_finite=False)
        if x.shape[1] != self.d:
            raise ActAlignError(
                f"Frame and step embeddings differ in width ({x.shape[1]} vs {self.d}); "
                "embed both with the same model."
            )
        new = np.zeros((len(x), self.k + self.w))
        new[:, : self.k] = x @ self.u
        _check_products(new[:, : self.k])
        self.rows = np.concatenate([self.rows, new])
        y = np.concatenate([self.tail, x]) if len(self.tail) else x
        held = len(y) - len(x)
        for lag in range(self.w):  # the products whose later frame is new
            first, stop = max(held - lag, 0), len(y) - lag
            if stop > first:
                at = self.n - held + first - self.base
                dots = np.einsum("ij,ij->i", y[first:stop], y[first + lag : stop + lag])
                self.rows[at : at + stop - first, self.k + lag] = dots
        self.n += len(x)
        self.tail = y[max(0, len(y) - (self.w - 1)) :] if self.w > 1 else self.tail
        return self._emit(self.n - self.w // 2)

    def _check_stored(self, frames) -> np.ndarray:
        want = STORED[self.stored]
        if not (
            isinstance(frames, np.ndarray)
            and frames.dtype == want
            and frames.ndim == 2
            and frames.shape[1] == self.d
        ):
            raise ActAlignError(
                f"Stored {self.stored} frames must be a 2-D {np.dtype(want).name} array with "
                f"{self.d} columns, got {getattr(frames, 'dtype', type(frames).__name__)} of shape "
                f"{np.shape(frames)}."
            )
        return frames

    def _push_stored(self, x: np.ndarray) -> np.ndarray:
        """push() through the C kernel: the block's products with the steps and the products of
        each new frame with itself and the w - 1 frames before it, read from the stored rows."""
        k, w, b = self.k, self.w, len(x)
        x = np.ascontiguousarray(x)
        held = len(self.rows)
        rows = np.zeros((held + b, k + w))
        rows[:held] = self.rows
        kind = PRECISIONS.index(self.stored)  # the kernel's F32, BF16, F16
        _products_kernel.products(self.tail, x, kind, self.d, self.u_rows, k, w - 1, rows, held, False)
        _check_products(rows[held:, :k])
        self.rows = rows
        self.n += b
        if w > 1:
            self.tail = np.concatenate([self.tail, x[-(w - 1) :]])[-(w - 1) :]  # a copy: no mmap held
        return self._emit(self.n - self.w // 2)

    def finish(self) -> np.ndarray:
        """The remaining columns (K, n) (the video ended: zero padding after it)."""
        return self._emit(self.n)

    def _emit(self, stop: int) -> np.ndarray:
        k, w, n = self.k, self.w, self.n
        out = np.arange(self.next_out, max(self.next_out, stop))
        if not len(out):
            return np.empty((k, 0))
        if self.fused:
            return self._emit_fused(int(out[0]), int(out[-1]) + 1)
        if w == 1:
            sums = self.rows[out - self.base]
            dot, sq = sums[:, :k], sums[:, k]
        else:
            lo = np.clip(out - (w - 1) // 2, 0, n) - self.base
            hi = np.clip(out + w // 2 + 1, 0, n) - self.base
            c = np.zeros((len(self.rows) + 1, k + w))
            np.cumsum(self.rows, axis=0, out=c[1:])
            dot, sq = c[hi, :k] - c[lo, :k], c[hi, k] - c[lo, k]
            for lag in range(1, w):  # pairs i, i + lag both inside the window
                sq = sq + 2 * (c[np.maximum(hi - lag, lo), k + lag] - c[lo, k + lag])
        if not (sq > 0).all():
            raise ActAlignError("frames has an all-zero row, which has no direction to compare.")
        self.next_out += len(out)
        keep_from = max(0, self.next_out - (w - 1) // 2 - self.base)
        self.rows, self.base = self.rows[keep_from:], self.base + keep_from
        return calibrate(dot / np.sqrt(sq)[:, None], self.scale, self.bias).T

    def _emit_fused(self, first: int, stop: int) -> np.ndarray:
        """_emit through the C kernel: one pass over the held rows, then the sigmoid in place."""
        rows = np.ascontiguousarray(self.rows)
        out = np.empty((self.k, stop - first))
        linear = self.bias is None
        bias = 0.0 if linear else float(self.bias)
        args = (self.k, self.w, self.base, first, stop, self.n, float(self.scale), bias, linear)
        if not _products_kernel.emit(rows, *args, out):
            raise ActAlignError("frames has an all-zero row, which has no direction to compare.")
        self.next_out = stop
        keep_from = max(0, self.next_out - (self.w - 1) // 2 - self.base)
        self.rows, self.base = self.rows[keep_from:], self.base + keep_from
        if not linear:
            _sigmoid_in_place(out)
        return out


def _sigmoid_in_place(x: np.ndarray) -> None:
    """x = sigmoid(x), as `sigmoid` computes it, without temporaries."""
    with np.errstate(over="ignore"):
        np.negative(x, out=x)
        np.exp(x, out=x)
        x += 1.0
        np.reciprocal(x, out=x)


def _check_products(products: np.ndarray) -> None:
    if not np.isfinite(products).all():  # a NaN or inf in a frame reaches its products
        raise ActAlignError("frames contains NaN or inf; check the embeddings that produced it.")


def smoothed_affinity(
    frames: np.ndarray,
    steps: np.ndarray,
    window: int,
    scale: float = 1.0,
    bias: float | None = 0.0,
    dtype: type = np.float64,
) -> np.ndarray:
    """Eq. 7-9 in one call through `StreamingAffinity`: frames (T, d), steps (K, d) -> (K, T)."""
    stream = StreamingAffinity(steps, window, scale, bias, dtype)
    return np.concatenate([stream.push(frames), stream.finish()], axis=1)


def _float_dtype(x: object) -> type:
    """Keep float32 / float64 input as it is; anything else becomes float64."""
    dtype = getattr(x, "dtype", None)
    return dtype if dtype is not None and np.issubdtype(dtype, np.floating) else np.float64


def cosine(frames: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Eq. 8: cosine similarity of L2-normalised rows, steps (K, d) x frames (T, d) -> (K, T).

    Frames are taken a block at a time (about 2 MB of float64), so a long video's frames are
    never copied whole."""
    u = _as_matrix(steps, "steps")
    if not isinstance(frames, np.ndarray) or frames.ndim != 2:
        frames = _as_matrix(frames, "frames")
    d = frames.shape[1]
    if d != u.shape[1]:
        raise ActAlignError(
            f"Frame and step embeddings differ in width ({d} vs {u.shape[1]}); "
            "embed both with the same model."
        )
    if frames.shape[0] == 0:
        raise ActAlignError(f"frames is empty (shape {frames.shape}); give at least one row and column.")
    u = _normalise_rows(u, "steps")
    block = max(1, (1 << 18) // max(1, d))
    out = np.empty((u.shape[0], frames.shape[0]))
    for i in range(0, frames.shape[0], block):
        z = _as_matrix(frames[i : i + block], "frames")
        out[:, i : i + block] = u @ _normalise_rows(z, "frames").T
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function, to a few ulp over the whole float64 range (exp(-x) overflowing to
    inf for x < -709 gives the correct 0)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


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


_OPTIONS = {"global": frozenset(), "subsequence": frozenset(("z", "prior", "tau"))}


def _check_mode(mode: str, options: dict) -> None:
    allowed = _OPTIONS.get(mode)
    if allowed is None:
        raise ActAlignError(f"Unknown alignment mode {mode!r}; use one of {', '.join(MODES)}.")
    unknown = options.keys() - allowed if options else ()
    if unknown:
        raise ActAlignError(f"Unknown option(s) {', '.join(sorted(unknown))} for {mode} alignment.")


def dtw(affinity: np.ndarray, mode: str = "global", **options) -> Alignment:
    """Best monotonic, continuous path through affinity (K, T).

    mode="global" (the paper): from (0, 0) to (K-1, T-1); every step and every frame is matched;
    K > T is allowed (steps then share frames). mode="subsequence": from step 0 to step K-1,
    starting and ending at any frames, chosen by excess over background (options `z`, `prior`
    in frames, and `tau` to give the thresholds (K,) instead of `background(A, z)`; see the
    module docstring). Ties prefer the diagonal, then the previous frame,
    then the previous step (and continuing over starting afresh).
    """
    _check_mode(mode, options)
    a = np.ascontiguousarray(_as_matrix(affinity, "affinity"))
    if mode == "subsequence":
        return _subsequence(a, **options)
    k, t = a.shape
    if backend() == "c":
        buf = np.empty((k + t - 1, 2), dtype=np.int64)
        total, length = _kernel.path(a, k, t, buf)
        path = buf[:length].copy()
    else:
        total, path = _dtw_path_numpy(a)
    return Alignment(float(total) / len(path), float(total), path, segments_from_path(path, k))


def dtw_scores(affinities: Sequence[np.ndarray], mode: str = "global", **options) -> np.ndarray:
    """Scores (N,) of many affinity matrices (shapes may differ), in one batched call.

    Equal to `[dtw(A, mode, **options).score for A in affinities]`.
    """
    _check_mode(mode, options)
    mats = [_as_matrix(a, f"affinity[{i}]", check_finite=False) for i, a in enumerate(affinities)]
    if mode == "subsequence":
        return _subsequence_scores(mats, **options)
    if backend() == "c":
        totals = np.empty(len(mats))
        lengths = np.empty(len(mats), dtype=np.int64)
        bad = _kernel.scores(mats, totals, lengths)
    else:
        bad = next((i for i, m in enumerate(mats) if not np.isfinite(m).all()), -1)
        totals, lengths = _totals_numpy(mats)
    if bad >= 0:
        _as_matrix(mats[bad], f"affinity[{bad}]")  # raises with the usual message
    return totals / lengths


# --------------------------------------------------------------------------- subsequence mode


def background(affinity: np.ndarray, z: float = SUBSEQUENCE_Z) -> np.ndarray:
    """Per-step thresholds tau (K,) of subsequence alignment: mean + z * std of each row
    (population std). The C kernel and this function compute them the same way."""
    a = np.ascontiguousarray(np.asarray(affinity, dtype=np.float64))
    if backend() == "c" and a.ndim == 2 and a.size:
        tau = np.empty(a.shape[0])
        _kernel.thresholds(a, a.shape[0], a.shape[1], float(z), tau)
        return tau
    return a.mean(axis=1) + z * a.std(axis=1)


def _check_subsequence_options(z: float, prior: float) -> None:
    if not (0 <= z < math.inf):  # also refuses NaN
        raise ActAlignError(f"The subsequence threshold z must be a number >= 0, got {z!r}.")
    if not (0 <= prior < math.inf):
        raise ActAlignError(f"The subsequence prior must be a number of frames >= 0, got {prior!r}.")


def shrunk_score(raw: float, length: int, mean: float, prior: float) -> float:
    """(sum of affinity on the path + prior * mean) / (path length + prior)."""
    return (raw + prior * mean) / (length + prior)


def _thresholds(a: np.ndarray, z: float, tau) -> np.ndarray:
    if tau is None:
        return np.ascontiguousarray(background(a, z))
    t = np.ascontiguousarray(np.broadcast_to(np.asarray(tau, dtype=np.float64), (a.shape[0],)))
    if not np.isfinite(t).all():
        raise ActAlignError("The subsequence thresholds tau must be finite numbers.")
    return t


def _subsequence(a: np.ndarray, z: float = SUBSEQUENCE_Z, prior: float = 0.0, tau=None) -> Alignment:
    _check_subsequence_options(z, prior)
    k, t = a.shape
    tau = _thresholds(a, z, tau)
    if backend() == "c":
        buf = np.empty((k + t - 1, 2), dtype=np.int64)
        gain, raw, length, start, end = _kernel.subseq_path(a, k, t, tau, buf)
        path = buf[:length].copy()
    else:
        gain, raw, length, start, end, path = _subsequence_path_numpy(a, tau)
    score = shrunk_score(raw, length, float(a.mean()), prior)
    return Alignment(
        score, float(raw), path, segments_from_path(path, k), (int(start), int(end)), float(gain)
    )


def _subsequence_scores(
    mats: list[np.ndarray], z: float = SUBSEQUENCE_Z, prior: float = 0.0, tau=None
) -> np.ndarray:
    _check_subsequence_options(z, prior)
    if backend() == "c":
        out = np.empty((len(mats), 7))
        taus = None if tau is None else [_thresholds(m, z, tau) for m in mats]
        bad = _kernel.subseq_scores(mats, float(z), taus, float(prior), out)
        if bad >= 0:
            _as_matrix(mats[bad], f"affinity[{bad}]")  # raises with the usual message
        return out[:, 6].copy()
    bad = next((i for i, m in enumerate(mats) if not np.isfinite(m).all()), -1)
    if bad >= 0:
        _as_matrix(mats[bad], f"affinity[{bad}]")
    summaries = [_subsequence_path_numpy(m, _thresholds(m, z, tau))[:5] for m in mats]
    raws = np.array([x[1] for x in summaries], dtype=np.float64)
    lengths = np.array([x[2] for x in summaries], dtype=np.float64)
    means = np.array([m.mean() for m in mats]) if mats else np.empty(0)
    return (raws + prior * means) / (lengths + prior)


class SubsequenceStream:
    """Subsequence alignment of one script over a long video, fed chunk by chunk.

    feed(affinity chunk (K, C), tau (K,)) returns, for every frame t of the chunk, the best path
    that ends at t: arrays (4, C) of (gain, raw sum, length, start frame) with absolute frame
    numbers. Only the last column is kept between chunks (O(K) memory), and the results are the
    same as aligning the whole video at once with the same tau (bit for bit with the C kernel;
    with the numpy fallback the same optimum, ties within rounding may pick another path).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.carry: np.ndarray | None = None
        self.offset = 0

    def feed(self, affinity: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """Align the next chunk (K, C) with thresholds tau (K,); returns (4, C) (see the class)."""
        a = np.ascontiguousarray(_as_matrix(affinity, "affinity"))
        if a.shape[0] != self.k:
            raise ActAlignError(f"This stream aligns {self.k} steps, not {a.shape[0]}.")
        tau = np.ascontiguousarray(np.asarray(tau, dtype=np.float64))
        c = a.shape[1]
        if backend() == "c":
            carry_out = np.empty((4, self.k))
            last = np.empty((4, c))
            _kernel.subseq_chunk(a, self.k, c, tau, self.offset, self.carry, carry_out, last)
        else:
            last, carry_out = _subsequence_chunk_numpy(a, tau, self.offset, self.carry)
        self.carry = carry_out
        self.offset += c
        return last


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


# --------------------------------------------------------------------------- numpy subsequence
#
# The same recurrence as the C kernel, row by row: row 0 is a maximum-subarray scan (continue from
# the left while the running sum is >= 0), the other rows the max-plus scan above. Each cell also
# carries its path's length L, raw sum R and start frame S, taken from the cell the path entered
# the row's current run of left moves from.


def _first_min_positions(vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running minimum of vals (T,) and the first position where it was reached."""
    m = np.minimum.accumulate(vals)
    new = np.empty(len(vals), dtype=bool)
    new[0] = True
    new[1:] = vals[1:] < m[:-1]
    pos = np.maximum.accumulate(np.where(new, np.arange(len(vals)), 0))
    return m, pos


def _subsequence_rows(a: np.ndarray, tau: np.ndarray, offset: int = 0, carry: np.ndarray | None = None):
    """Yield (k, D, pred, L, R, S) per row of one matrix a (K, T) in subsequence mode."""
    k_n, t_n = a.shape
    ar = np.arange(t_n)
    e0 = a[0] - tau[0]
    s0 = np.cumsum(e0)
    cum_a0 = np.cumsum(a[0])
    # candidates for "what came before frame t": [carry], start at frame 0, start at frame j+1
    head = [-carry[0, 0]] if carry is not None else []
    vals = np.concatenate([head, [0.0], s0[:-1]])
    m, pos = _first_min_positions(vals)
    shift = len(head)
    best = m[shift:]  # for each t: min over candidates up to "start at t"
    where = pos[shift:] - shift  # -1: the carry; j >= 0: start at frame j
    d = s0 - best
    from_carry = where < 0
    start = np.where(from_carry, 0, where)
    before = np.where(start > 0, cum_a0[np.maximum(start - 1, 0)], 0.0)
    length = ar - start + 1
    raw = cum_a0 - before
    if carry is not None:
        length = np.where(from_carry, carry[2, 0] + ar + 1, length)
        raw = np.where(from_carry, carry[1, 0] + cum_a0, raw)
        starts = np.where(from_carry, carry[3, 0], start + offset)
    else:
        starts = start + offset
    pred = np.where((where == ar) & ~from_carry, START, LEFT).astype(np.uint8)
    rows = (d, pred, length.astype(np.int64), raw, starts.astype(np.int64))
    yield (0, *rows)
    for k in range(1, k_n):
        dp, _, lp, rp, sp = rows
        e = a[k] - tau[k]
        s = np.cumsum(e)
        cum_a = np.cumsum(a[k])
        # the best way into each cell that is not a left move (and, at t = 0, the carry's left)
        above = np.empty(t_n)
        entry_code = np.empty(t_n, dtype=np.uint8)
        entry_l, entry_r, entry_s = np.empty(t_n, np.int64), np.empty(t_n), np.empty(t_n, np.int64)
        up0 = (dp[0], UP, lp[0], rp[0], sp[0])
        first = up0
        if carry is not None:
            options = [
                (carry[0, k - 1], DIAG, carry[2, k - 1], carry[1, k - 1], carry[3, k - 1]),
                (carry[0, k], LEFT, carry[2, k], carry[1, k], carry[3, k]),
                up0,
            ]
            first = max(options, key=lambda o: o[0])  # first maximum: diag, left, up
        above[0], entry_code[0], entry_l[0], entry_r[0], entry_s[0] = first
        diag, up = dp[:-1], dp[1:]
        tie_tol = (_TIE_EPS * (k + t_n)) * np.maximum(np.abs(diag), np.abs(up))
        take_diag = diag >= up - tie_tol
        above[1:] = np.where(take_diag, diag, up)
        entry_code[1:] = np.where(take_diag, DIAG, UP)
        entry_l[1:] = np.where(take_diag, lp[:-1], lp[1:])
        entry_r[1:] = np.where(take_diag, rp[:-1], rp[1:])
        entry_s[1:] = np.where(take_diag, sp[:-1], sp[1:])
        d = s + np.maximum.accumulate(e + above - s)
        left = d[:-1]
        tol = (_TIE_EPS * (k + t_n)) * np.maximum(np.abs(above[1:]), np.abs(left))
        is_left = np.zeros(t_n, dtype=bool)
        is_left[1:] = left > above[1:] + tol
        # a tie between the left and a diagonal keeps the diagonal; between left and up, the left
        tie = np.zeros(t_n, dtype=bool)
        tie[1:] = np.abs(left - above[1:]) <= tol
        is_left |= tie & (entry_code == UP)
        pred = np.where(is_left, LEFT, entry_code).astype(np.uint8)
        last = np.maximum.accumulate(np.where(is_left, 0, ar))
        length = entry_l[last] + 1 + (ar - last)
        raw = entry_r[last] + a[k][last] + (cum_a - cum_a[last])
        starts = entry_s[last]
        rows = (d, pred, length.astype(np.int64), raw, starts.astype(np.int64))
        yield (k, *rows)


def _subsequence_path_numpy(a: np.ndarray, tau: np.ndarray):
    rows = list(_subsequence_rows(a, tau))
    preds = [r[2] for r in rows]
    _, d, _, length, raw, starts = rows[-1]
    end = int(np.argmax(d))
    k, t = a.shape[0] - 1, end
    path = [(k, t)]
    while True:
        move = preds[k][t]
        if k == 0 and move == START:
            break
        k, t = (k - 1, t - 1) if move == DIAG else (k, t - 1) if move == LEFT else (k - 1, t)
        path.append((k, t))
    path_arr = np.array(path[::-1], dtype=np.int64)
    return float(d[end]), float(raw[end]), int(length[end]), int(starts[end]), end, path_arr


def _subsequence_chunk_numpy(a: np.ndarray, tau: np.ndarray, offset: int, carry: np.ndarray | None):
    carry_out = np.empty((4, a.shape[0]))
    for k, d, _, length, raw, starts in _subsequence_rows(a, tau, offset, carry):
        carry_out[:, k] = (d[-1], raw[-1], length[-1], starts[-1])
    return np.stack([d, raw, length.astype(np.float64), starts.astype(np.float64)]), carry_out
