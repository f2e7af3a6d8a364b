"""Find every occurrence of candidate actions in long, untrimmed video.

    from actalign import ActAlign
    model = ActAlign("siglip-so400m", scripts="scripts.json", fps=2)
    for d in model.locate("match.mp4", ["Putback dunk", "Alley-oop dunk"], domain="basketball"):
        print(d.action, d.start, d.end, d.score)

The video is decoded and encoded as a stream; its affinities to the steps of every candidate come
from `align.StreamingAffinity` (one product per block of frames, smoothing applied to the
products) and are aligned one window (`window_seconds`) at a time with subsequence DTW whose state
is carried from window to window (`align.SubsequenceStream`), so memory holds one window of frames
however long the video is. Each step's threshold tau is the current window's mean affinity plus z
times the step's spread over the video so far (see `Locator._thresholds`). Every frame's best path
ending there is a candidate occurrence; per start frame the best end is kept, overlapping
candidates of one action are suppressed (temporal IoU > `nms`, the higher gain wins), candidates
with less than `min_gain_ratio` of the best gain found are dropped as noise, and the survivors are
scored like `classify --alignment subsequence` (the shrunk mean affinity) and kept when the score
reaches `min_score`. Their step segments come from decoding each kept span again (a few seconds of
video each)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from actalign import align
from actalign.candidates import check_candidates
from actalign.classify import Pipeline
from actalign.embed import FrameStream
from actalign.errors import ActAlignError
from actalign.score import Segment, frame_ends, segments, smoothing_window
from actalign.video import Sampling, as_video, iter_frames

DEFAULT_FPS = 2.0
DEFAULT_WINDOW_SECONDS = 300.0
DEFAULT_NMS = 0.3
DEFAULT_MIN_GAIN_RATIO = 0.1  # occurrences with less excess than this share of the best one are noise


@dataclass(frozen=True)
class Detection:
    """One occurrence of an action: [start, end) in seconds, its score (the shrunk mean affinity
    of Eq. 13 on the span), the gain (excess over background) that found it, and its steps."""

    action: str
    start: float
    end: float
    score: float
    gain: float
    segments: list[Segment] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON form of `actalign locate --format json`."""
        return {
            "action": self.action,
            "span": {"start": round(self.start, 3), "end": round(self.end, 3)},  # as in classify's JSON
            "score": round(float(self.score), 6),
            "gain": round(float(self.gain), 6),
            "segments": [
                {"step": s.step, "start": round(s.start, 3), "end": round(s.end, 3)} for s in self.segments
            ],
        }


class Locator:
    """The alignment part of `locate`: feed smoothed frame embeddings window by window, then
    `finish()` gives the detections in frame indices. Memory: one window's affinities, the carried
    DP column, and the candidate occurrences (pruned as they accumulate)."""

    def __init__(
        self,
        steps: dict[str, np.ndarray],
        z: float = align.SUBSEQUENCE_Z,
        prior: float = 0.0,
        nms: float = DEFAULT_NMS,
    ) -> None:
        if not steps:
            raise ActAlignError("No candidates to locate.")
        if not 0 <= nms < 1:
            raise ActAlignError(f"`nms` must be in [0, 1), got {nms}.")
        self.steps = steps
        self.stacked = np.concatenate([np.asarray(s, dtype=np.float64) for s in steps.values()])
        self.bounds = np.cumsum([0] + [len(s) for s in steps.values()])
        self.z, self.prior, self.nms = z, prior, nms
        self.streams = {a: align.SubsequenceStream(len(s)) for a, s in steps.items()}
        self.found: list[np.ndarray] = []  # rows of (start, end, gain, raw, length, mean, action)
        self.held = 0  # rows in `found`
        self.taus: dict[str, list[tuple[int, np.ndarray]]] = {a: [] for a in steps}
        self.moments = (0, 0.0, 0.0)
        self.frames = 0

    def feed(self, affinity: np.ndarray) -> None:
        """The next window's affinities (K, C) of every action's steps, stacked as `stacked`."""
        if not affinity.shape[1]:
            return
        affinity = np.ascontiguousarray(affinity, dtype=np.float64)
        taus = self._thresholds(affinity)
        lasts, means = [], []
        for i, action in enumerate(self.steps):
            aff, tau = (
                affinity[self.bounds[i] : self.bounds[i + 1]],
                taus[self.bounds[i] : self.bounds[i + 1]],
            )
            self.taus[action].append((self.frames, tau))
            lasts.append(self.streams[action].feed(aff, tau))
            means.append(float(aff.mean()))
        self._collect(np.stack(lasts), np.array(means))
        self.frames += affinity.shape[1]

    def _collect(self, lasts: np.ndarray, means: np.ndarray) -> None:
        """Keep, per action and start frame, the end with the highest gain (the first of equal
        ones). lasts (A, 4, C): per action the streams' (gain, raw, length, start) per end frame."""
        gain = lasts[:, 0]
        action, end = np.nonzero(gain > 0)
        if not len(action):
            return
        # group by (action, start): a stable sort of one integer key keeps each group in frame
        # order, and starts rise with the end frame almost everywhere, so the sort is nearly free
        key = lasts[action, 3, end].astype(np.int64) + (action.astype(np.int64) << 40)
        order = np.argsort(key, kind="stable")
        key, g = key[order], gain[action[order], end[order]]
        first = np.flatnonzero(_changes(key))
        best = np.repeat(np.maximum.reduceat(g, first), np.diff(first, append=len(key)))
        hits = np.flatnonzero(g == best)
        pick = order[hits[_changes(np.searchsorted(first, hits, side="right"))]]
        action, end = action[pick], end[pick]
        rows = np.empty((len(action), 7))
        rows[:, 0], rows[:, 1], rows[:, 2] = lasts[action, 3, end], self.frames + end, gain[action, end]
        rows[:, 3], rows[:, 4] = lasts[action, 1, end], lasts[action, 2, end]
        rows[:, 5], rows[:, 6] = means[action], action
        self.found.append(rows)
        self.held += len(rows)
        if self.held > 20_000 * len(self.steps):  # keep memory bounded on very long videos
            self.found = [self._suppressed()]
            self.held = len(self.found[0])

    def _suppressed(self) -> np.ndarray:
        """The rows found so far, per action and start frame the best, then per action `_nms`."""
        rows = self._best_per_start(np.concatenate(self.found))
        bounds = np.searchsorted(rows[:, 6], np.arange(len(self.steps) + 1))
        return np.concatenate([_nms(rows[lo:hi], self.nms) for lo, hi in itertools.pairwise(bounds)])

    def _thresholds(self, aff: np.ndarray) -> np.ndarray:
        """tau_k = this window's mean + z * the spread of step k over the whole video so far,
        for every step of every action (K,).

        The mean follows the footage; the spread is pooled, so a window without any action keeps
        the margin that actions elsewhere set (with the window's own spread, background would be
        nearly free to cross and two occurrences would merge into one path)."""
        n, s1, s2 = self.moments
        n, s1, s2 = n + aff.shape[1], s1 + aff.sum(axis=1), s2 + (aff**2).sum(axis=1)
        self.moments = (n, s1, s2)
        spread = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
        return aff.mean(axis=1) + self.z * spread

    def tau_at(self, action: str, frame: int) -> np.ndarray:
        """The thresholds (K,) the window holding `frame` used."""
        return next(t for first, t in reversed(self.taus[action]) if first <= frame)

    @staticmethod
    def _best_per_start(rows: np.ndarray) -> np.ndarray:
        """Per action and start frame the row of highest gain, ordered by action and start."""
        rows = rows[np.lexsort((-rows[:, 2], rows[:, 0], rows[:, 6]))]
        first = np.ones(len(rows), dtype=bool)
        first[1:] = (rows[1:, 0] != rows[:-1, 0]) | (rows[1:, 6] != rows[:-1, 6])
        return rows[first]

    def finish(
        self,
        min_score: float | None = None,
        min_gain_ratio: float = DEFAULT_MIN_GAIN_RATIO,
        limit: int | None = None,
    ) -> list[tuple[str, int, int, float, float]]:
        """(action, first frame, last frame, score, gain) of every kept occurrence, best first
        (the first `limit` of them when given; equal scores in order of action and start).

        Kept: after non-maximum suppression, a gain of at least `min_gain_ratio` times the best
        gain of any action (the rest is background noise, whatever the model's scale) and, if
        given, a score of at least `min_score`."""
        if not self.found:
            return []
        rows = self._suppressed()
        start, end, gain, raw, length, mean, action = rows.T
        score = (raw + self.prior * mean) / (length + self.prior)  # align.shrunk_score
        keep = gain >= min_gain_ratio * gain.max()
        if min_score is not None:
            keep &= score >= min_score
        picked = np.flatnonzero(keep)
        picked = picked[np.argsort(-score[picked], kind="stable")][:limit]
        names = list(self.steps)
        return [
            (names[int(action[i])], int(start[i]), int(end[i]), float(score[i]), float(gain[i]))
            for i in picked
        ]


def _changes(x: np.ndarray) -> np.ndarray:
    """(n,) bool: True where x differs from the element before it (and at 0)."""
    out = np.empty(len(x), dtype=bool)
    out[:1] = True
    np.not_equal(x[1:], x[:-1], out=out[1:])
    return out


def _nms(rows: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy temporal non-maximum suppression by gain: rows of (start, end, gain, ...), kept
    ones in order of start. A row is kept when its temporal IoU with every kept row of higher
    gain (the first of equal gains) is at most `threshold`; rows are taken a few hundred at a
    time, each batch's overlaps with the rows kept before it and among itself in two products."""
    order = np.argsort(-rows[:, 2], kind="stable")
    starts, ends = rows[order, 0], rows[order, 1] + 1
    kept = np.zeros(len(rows), dtype=bool)
    for lo in range(0, len(rows), _NMS_BATCH):
        hi = min(lo + _NMS_BATCH, len(rows))
        s, e = starts[lo:hi], ends[lo:hi]
        before = np.flatnonzero(kept[:lo])
        alive = ~_overlapping(s, e, starts[before], ends[before], threshold).any(axis=1)
        among = _overlapping(s, e, s, e, threshold)
        for i in np.flatnonzero(alive):
            if alive[i]:
                kept[lo + i] = True
                alive[i + 1 :] &= ~among[i, i + 1 :]
    chosen = order[kept]
    return rows[chosen[np.argsort(rows[chosen, 0], kind="stable")]]


_NMS_BATCH = 256


def _overlapping(
    s1: np.ndarray, e1: np.ndarray, s2: np.ndarray, e2: np.ndarray, threshold: float
) -> np.ndarray:
    """(len(s1), len(s2)): temporal IoU of [s1, e1) with [s2, e2) above `threshold`."""
    inter = np.clip(np.minimum(e1[:, None], e2[None]) - np.maximum(s1[:, None], s2[None]), 0, None)
    union = (e1 - s1)[:, None] + (e2 - s2)[None] - inter
    return inter / union > threshold


# --------------------------------------------------------------------------- the whole job


def check_search(nms: float, min_score: float | None, window_seconds: float) -> None:
    """One sentence for a search setting out of range (before any work)."""
    if not 0 <= nms < 1:
        raise ActAlignError(f"`nms` must be in [0, 1), got {nms}.")
    if min_score is not None and not 0 <= min_score <= 1:
        raise ActAlignError(f"`min_score` must be in [0, 1] (scores are Eq. 13 means), got {min_score}.")
    if not (window_seconds > 0):
        raise ActAlignError(f"`window_seconds` must be a positive number of seconds, got {window_seconds}.")


def locate(
    model: Pipeline,
    video,
    candidates: Sequence[str],
    domain: str,
    start: float | None = None,
    end: float | None = None,
    min_score: float | None = None,
    nms: float = DEFAULT_NMS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    min_gain_ratio: float = DEFAULT_MIN_GAIN_RATIO,
    on_frames: Callable[[int], None] | None = None,
    on_total: Callable[[int | None], None] | None = None,
) -> list[Detection]:
    """Every occurrence of `candidates` in a (long) video, best first (see the module docstring).

    Uses the pipeline's encoder, scripts, template, smoothing and sampling rate (`model.fps`; None
    means DEFAULT_FPS here: every frame of a long video is rarely what anyone wants). The
    smoothing window and the span prior follow the sampled rate as classify measures it (so a 12.5
    fps video asked for at 30 fps is smoothed as 12.5 fps, in both).
    """
    candidates = check_candidates(candidates)
    if not (window_seconds > 0):
        raise ActAlignError(f"`window_seconds` must be a positive number of seconds, got {window_seconds}.")
    video = as_video(video)
    requested = model.fps or DEFAULT_FPS
    scripts = model.scripts.get(domain, candidates)
    steps = dict(zip(scripts, model.step_embeddings(scripts, domain)))
    enc = model.encoder
    # the one frame path: a second search of the same video reads its embeddings from the cache
    stream = FrameStream(
        enc, video, Sampling(fps=requested, start=start, end=end), model.cache, on_frames, on_total
    )
    return detect(
        stream,
        steps,
        scripts,
        stream.sampled_fps(),
        enc.scale,
        enc.bias,
        model.config.smooth,
        min_score=min_score,
        nms=nms,
        window_seconds=window_seconds,
        min_gain_ratio=min_gain_ratio,
        decode_again=lambda wanted, stop: _decode_again(model, video, wanted, stop),
    )


class FrameSource(Protocol):
    """Frame embeddings of one video, block by block: iterate for (frames (B, d), timestamps (B,));
    afterwards `timestamps` (T,) and `end` are set, and `frames_between(first, last)` gives the
    embeddings of frames first..last again (None when it cannot). `embed.FrameStream` is one; the
    archive index's shards are another (`actalign.index`)."""

    timestamps: np.ndarray | None
    end: float | None

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]: ...

    def frames_between(self, first: int, last: int) -> np.ndarray | None:
        """Embeddings (last - first + 1, d) of frames first..last again, or None."""
        ...


def detect(
    source: FrameSource,
    steps: dict[str, np.ndarray],
    scripts: dict[str, list[str]],
    fps: float,
    scale: float,
    bias: float | None,
    smooth: float,
    min_score: float | None = None,
    nms: float = DEFAULT_NMS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    min_gain_ratio: float = DEFAULT_MIN_GAIN_RATIO,
    decode_again: Callable[[np.ndarray, float], np.ndarray | None] | None = None,
) -> list[Detection]:
    """The detections of `locate` on one video's frame embeddings, whatever they come from (the
    frame path, or an archive index): `find`, then each detection's step segments.

    scripts: {action: steps' texts}; decode_again(timestamps, stop): the embeddings of those frames
    when `source.frames_between` has none (None: no segments then).
    """
    found = find(source, steps, fps, scale, bias, smooth, min_score, nms, window_seconds, min_gain_ratio)
    return [found.with_segments(i, scripts, decode_again) for i in range(len(found.detections))]


@dataclass
class Found:
    """What `find` found in one video: its detections, best first, without their segments (each
    costs an alignment of its span: `with_segments` adds them to the ones that are kept)."""

    detections: list[Detection]
    taus: list[np.ndarray]  # per detection, the thresholds of the window it ends in
    spans: list[tuple[int, int]]  # per detection, its first and last frame
    source: FrameSource
    steps: dict[str, np.ndarray]
    calibration: tuple[float, float | None]
    window: int

    def with_segments(
        self,
        i: int,
        scripts: dict[str, list[str]],
        decode_again: Callable[[np.ndarray, float], np.ndarray | None] | None = None,
    ) -> Detection:
        """Detection i with its step segments."""
        d = self.detections[i]
        timestamps, end = self.source.timestamps, self.source.end
        segs = _segments(
            self.source,
            decode_again,
            scripts[d.action],
            self.steps[d.action],
            self.calibration,
            timestamps,
            self.spans[i],
            self.window,
            end,
            self.taus[i],
        )
        return Detection(d.action, d.start, d.end, d.score, d.gain, segs)


def find(
    source: FrameSource,
    steps: dict[str, np.ndarray],
    fps: float,
    scale: float,
    bias: float | None,
    smooth: float,
    min_score: float | None = None,
    nms: float = DEFAULT_NMS,
    window_seconds: float = DEFAULT_WINDOW_SECONDS,
    min_gain_ratio: float = DEFAULT_MIN_GAIN_RATIO,
    dtype: type = np.float64,
    limit: int | None = None,
    stored: str | None = None,
) -> Found:
    """`locate`'s occurrences in one video's frames: smoothed as a stream at the sampled rate
    `fps`, aligned one window of `window_seconds` at a time, best first (without segments).

    steps: {action: (K, d) step vectors}; scale/bias: the model's Eq. 9 calibration; smooth: Eq.
    7's window in seconds; limit: keep only the best `limit` detections; dtype: the precision of
    the frames' products with the steps (`align.StreamingAffinity`); stored: the source yields
    frames as an index stores them (that precision's `precision.STORED` rows). One pass: per block of
    frames one product with the steps of all actions, and per window of `window_seconds` one DTW
    step per action."""
    window = smoothing_window(smooth, fps)
    prior = align.window_frames(align.SUBSEQUENCE_PRIOR_SECONDS, fps)
    locator = Locator(steps, prior=prior, nms=nms)
    chunk = max(1, round(window_seconds * fps))
    stream = align.StreamingAffinity(locator.stacked, window, scale, bias, dtype, stored)
    pending: list[np.ndarray] = []  # affinity columns (K, n) not yet fed
    held = [0]  # columns in `pending`

    def flush(columns: np.ndarray, final: bool) -> None:
        if columns.shape[1]:
            pending.append(columns)
            held[0] += columns.shape[1]
        while held[0] >= chunk or (final and held[0]):
            block = np.concatenate(pending, axis=1) if len(pending) > 1 else pending[0]
            locator.feed(block[:, :chunk])
            rest = block[:, chunk:]
            pending[:] = [rest] if rest.shape[1] else []
            held[0] = rest.shape[1]

    for frames, _ in source:
        flush(stream.push(frames), final=False)
    flush(stream.finish(), final=True)
    timestamps = source.timestamps
    ends = frame_ends(timestamps, source.end)
    found = locator.finish(min_score, min_gain_ratio, limit)
    return Found(
        [
            Detection(action, float(timestamps[first]), float(ends[last]), score, gain)
            for action, first, last, score, gain in found
        ],
        [locator.tau_at(action, last) for action, _, last, _, _ in found],
        [(first, last) for _, first, last, _, _ in found],
        source,
        steps,
        (scale, bias),
        window,
    )


def _segments(
    source, decode_again, script, steps, calibration, timestamps, span, window, video_end, tau
) -> list[Segment]:
    """Step segments of one detection: the excess-maximising path between its first and last frame,
    on the span's embeddings with smoothing context (from the source, or decoded again)."""
    first, last = span
    lo, hi = max(0, first - window), min(len(timestamps) - 1, last + window)
    embedded = source.frames_between(lo, hi)
    if embedded is None and decode_again is not None:
        embedded = decode_again(timestamps[lo : hi + 1], float(frame_ends(timestamps, video_end)[hi]))
    if embedded is None:
        return []  # the file changed or decodes differently the second time: no segments
    aff = align.smoothed_affinity(embedded, steps, window, *calibration)[:, first - lo : last - lo + 1]
    path = align.dtw(aff - tau[:, None]).path  # the path of most excess between the span's ends
    path[:, 1] += first
    return segments(path, script, timestamps, video_end)


def _decode_again(model, video, wanted: np.ndarray, stop: float) -> np.ndarray | None:
    """Embeddings of the sampled frames at `wanted` times (without a cache: a few seconds of video)."""
    enc = model.encoder
    batches = iter_frames(video, Sampling(start=float(wanted[0]), end=stop), enc.batch_size, enc.decode_size)
    frames = []
    for b in batches:
        keep = np.isin(np.round(b.timestamps, 6), np.round(wanted, 6))
        if keep.any():
            frames.append(enc.encode_images(b.frames[keep]))
    if not frames or sum(len(f) for f in frames) != len(wanted):
        return None
    return np.concatenate(frames)
