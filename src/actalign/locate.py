"""Find every occurrence of candidate actions in long, untrimmed video.

    from actalign import ActAlign
    model = ActAlign("siglip-so400m", scripts="scripts.json", fps=2)
    for d in model.locate("match.mp4", ["Putback dunk", "Alley-oop dunk"], domain="basketball"):
        print(d.action, d.start, d.end, d.score)

The video is decoded, encoded and smoothed as a stream; affinities are computed one window
(`window_seconds`) at a time and aligned with subsequence DTW whose state is carried from window
to window (`align.SubsequenceStream`), so memory holds one window of frames however long the
video is. Each step's threshold tau is the current window's mean affinity plus z times the
step's spread over the video so far (see `Locator._thresholds`).
Every frame's best path ending there is a candidate occurrence; per start frame the best end is
kept, overlapping candidates of one action are suppressed (temporal IoU > `nms`, the higher gain
wins), candidates with less than `min_gain_ratio` of the best gain found are dropped as noise,
and the survivors are scored like `classify --alignment subsequence` (the shrunk mean affinity)
and kept when the score reaches `min_score`. Their step segments come from decoding
each kept span again (a few seconds of video each).
"""

from __future__ import annotations

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


@dataclass
class _Candidate:
    """Per action, what the stream found: rows of (start, end, gain, raw, length, mean)."""

    rows: list[np.ndarray] = field(default_factory=list)
    count: int = 0


class Locator:
    """The alignment part of `locate`: feed smoothed frame embeddings window by window, then
    `finish()` gives the detections in frame indices. Memory: one window's affinities, the carried
    DP column, and the candidate occurrences (pruned as they accumulate)."""

    def __init__(
        self,
        steps: dict[str, np.ndarray],
        scale: float,
        bias: float | None,
        z: float = align.SUBSEQUENCE_Z,
        prior: float = 0.0,
        nms: float = DEFAULT_NMS,
    ) -> None:
        if not steps:
            raise ActAlignError("No candidates to locate.")
        if not 0 <= nms < 1:
            raise ActAlignError(f"`nms` must be in [0, 1), got {nms}.")
        self.steps, self.scale, self.bias = steps, scale, bias
        self.stacked = np.concatenate([np.asarray(s, dtype=np.float64) for s in steps.values()])
        self.bounds = np.cumsum([0] + [len(s) for s in steps.values()])
        self.z, self.prior, self.nms = z, prior, nms
        self.streams = {a: align.SubsequenceStream(len(s)) for a, s in steps.items()}
        self.found = {a: _Candidate() for a in steps}
        self.taus: dict[str, list[tuple[int, np.ndarray]]] = {a: [] for a in steps}
        self.moments: dict[str, tuple] = {}
        self.frames = 0

    def feed(self, frames: np.ndarray) -> None:
        """The next window of smoothed frame embeddings (C, d)."""
        if not len(frames):
            return
        every = align.affinity(frames, self.stacked, self.scale, self.bias)  # all steps, one product
        for i, action in enumerate(self.steps):
            aff = np.ascontiguousarray(every[self.bounds[i] : self.bounds[i + 1]])
            tau = self._thresholds(action, aff)
            self.taus[action].append((self.frames, tau))
            last = self.streams[action].feed(aff, tau)
            self._collect(action, last, float(aff.mean()))
        self.frames += len(frames)

    def _collect(self, action: str, last: np.ndarray, mean: float) -> None:
        gain, raw, length, start = last
        ends = self.frames + np.arange(last.shape[1])
        good = gain > 0
        if not good.any():
            return
        # per start frame, the end with the highest gain
        s, g = start[good], gain[good]
        order = np.lexsort((-g, s))
        s_sorted = s[order]
        first = np.r_[True, s_sorted[1:] != s_sorted[:-1]]
        pick = np.flatnonzero(good)[order[first]]
        rows = np.stack(
            [start[pick], ends[pick], gain[pick], raw[pick], length[pick], np.full(len(pick), mean)], 1
        )
        bucket = self.found[action]
        bucket.rows.append(rows)
        bucket.count += len(rows)
        if bucket.count > 20_000:  # keep memory bounded on very long videos
            merged = self._best_per_start(np.concatenate(bucket.rows))
            bucket.rows, bucket.count = [_nms(merged, self.nms)], 0
            bucket.count = len(bucket.rows[0])

    def _thresholds(self, action: str, aff: np.ndarray) -> np.ndarray:
        """tau_k = this window's mean + z * the spread of step k over the whole video so far.

        The mean follows the footage; the spread is pooled, so a window without any action keeps
        the margin that actions elsewhere set (with the window's own spread, background would be
        nearly free to cross and two occurrences would merge into one path)."""
        n, s1, s2 = self.moments.get(action, (0, 0.0, 0.0))
        n, s1, s2 = n + aff.shape[1], s1 + aff.sum(axis=1), s2 + (aff**2).sum(axis=1)
        self.moments[action] = (n, s1, s2)
        spread = np.sqrt(np.maximum(s2 / n - (s1 / n) ** 2, 0.0))
        return aff.mean(axis=1) + self.z * spread

    def tau_at(self, action: str, frame: int) -> np.ndarray:
        """The thresholds (K,) the window holding `frame` used."""
        return next(t for first, t in reversed(self.taus[action]) if first <= frame)

    @staticmethod
    def _best_per_start(rows: np.ndarray) -> np.ndarray:
        order = np.lexsort((-rows[:, 2], rows[:, 0]))
        rows = rows[order]
        first = np.r_[True, rows[1:, 0] != rows[:-1, 0]]
        return rows[first]

    def finish(
        self, min_score: float | None = None, min_gain_ratio: float = DEFAULT_MIN_GAIN_RATIO
    ) -> list[tuple[str, int, int, float, float]]:
        """(action, first frame, last frame, score, gain) of every kept occurrence, best first.

        Kept: after non-maximum suppression, a gain of at least `min_gain_ratio` times the best
        gain of any action (the rest is background noise, whatever the model's scale) and, if
        given, a score of at least `min_score`."""
        found = []
        for action, bucket in self.found.items():
            if bucket.rows:
                found += [
                    (action, row) for row in _nms(self._best_per_start(np.concatenate(bucket.rows)), self.nms)
                ]
        best = max((row[2] for _, row in found), default=0.0)
        out = []
        for action, (start, end, gain, raw, length, mean) in found:
            score = align.shrunk_score(raw, length, mean, self.prior)
            if gain >= min_gain_ratio * best and (min_score is None or score >= min_score):
                out.append((action, int(start), int(end), float(score), float(gain)))
        return sorted(out, key=lambda d: -d[3])


def _nms(rows: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy temporal non-maximum suppression by gain: rows of (start, end, gain, ...)."""
    order = np.argsort(-rows[:, 2], kind="stable")
    kept: list[int] = []
    starts, ends = rows[:, 0], rows[:, 1] + 1
    for i in order:
        if kept:
            k = np.array(kept)
            inter = np.clip(np.minimum(ends[k], ends[i]) - np.maximum(starts[k], starts[i]), 0, None)
            union = (ends[k] - starts[k]) + (ends[i] - starts[i]) - inter
            if (inter / union > threshold).any():
                continue
        kept.append(int(i))
    return rows[sorted(kept, key=lambda j: rows[j, 0])]


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
) -> Found:
    """`locate`'s occurrences in one video's frames: smoothed as a stream at the sampled rate
    `fps`, aligned one window of `window_seconds` at a time, best first (without segments).

    steps: {action: (K, d) step vectors}; scale/bias: the model's Eq. 9 calibration; smooth: Eq.
    7's window in seconds."""
    window = smoothing_window(smooth, fps)
    prior = align.window_frames(align.SUBSEQUENCE_PRIOR_SECONDS, fps)
    locator = Locator(steps, scale, bias, prior=prior, nms=nms)
    chunk = max(1, round(window_seconds * fps))
    smoother = align.StreamingSmoother(window)
    pending: list[np.ndarray] = []
    held = [0]  # frames in `pending`

    def flush(rows: np.ndarray, final: bool) -> None:
        if len(rows):
            pending.append(rows)
            held[0] += len(rows)
        while held[0] >= chunk or (final and held[0]):
            block = np.concatenate(pending) if len(pending) > 1 else pending[0]
            locator.feed(block[:chunk])
            rest = block[chunk:]
            pending[:] = [rest.copy()] if len(rest) else []  # the fed window is freed
            held[0] = len(rest)

    for frames, _ in source:
        flush(smoother.push(frames), final=False)
    flush(smoother.finish(), final=True)
    timestamps = source.timestamps
    ends = frame_ends(timestamps, source.end)
    found = locator.finish(min_score, min_gain_ratio)
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
    smoothed = align.smooth(embedded, window)
    aff = align.affinity(smoothed, steps, *calibration)[:, first - lo : last - lo + 1]
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
