"""The one scoring unit: a clip's frame embeddings and each candidate's text vectors -> a ranked
`Prediction`. Used by `ActAlign`, the batch runner (both engines) and `locate`; pure numpy (no model,
no files), so it runs wherever the embeddings are.

    pred = score("clip.mp4", "basketball", emb, {"Tip-in": steps (K, d), ...}, Method(), calibration,
                 scripts={"Tip-in": ["step 1", ...]})
    pred.top.action, pred.top.segments

One DTW pass per candidate gives both its score (Eq. 13) and its path (the segments). Ranking:
highest score first; equal scores keep the candidates' given order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from actalign import align
from actalign.candidates import norm
from actalign.errors import ActAlignError
from actalign.exports import candidate_dict, prediction_dict

if TYPE_CHECKING:
    from actalign.embed import VideoEmbedding

METHODS = ("actalign", "mean-pool")
ALIGNMENTS = align.MODES
DEFAULT_TEMPLATE = "{step} in {domain}"  # the paper's context augmentation
AUTHORS_TEMPLATE = "This is a video of doing {action} in {domain} with {step}"  # the original scripts'
MEAN_POOL_TEMPLATE = "This is a video of {domain} executing {action}"


@dataclass(frozen=True)
class Segment:
    """When one step happened: [start, end) in seconds of the video."""

    step: str
    start: float
    end: float  # the start of the next sampled frame after the step's last one (or the video's end)


@dataclass
class CandidateResult:
    """One candidate action of a prediction: its score, rank and (for ActAlign) alignment.

    span: (start, end) in seconds of the detected action with subsequence alignment, else None.
    """

    action: str
    score: float
    rank: int
    steps: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    path: np.ndarray | None = None  # (L, 2) rows of (step, frame index)
    affinity: np.ndarray | None = None  # (K, T), for plots
    span: tuple[float, float] | None = None

    def __repr__(self) -> str:
        return f"CandidateResult(rank={self.rank}, action={self.action!r}, score={self.score:.4f})"

    def to_dict(self) -> dict:
        return candidate_dict(self)


@dataclass
class Prediction:
    """Candidates of one video, ranked best first, with the sampled frame times (T,) in seconds."""

    video: str
    domain: str
    method: str
    candidates: list[CandidateResult]
    timestamps: np.ndarray
    alignment: str = "global"
    start: float | None = None
    end: float | None = None
    video_end: float | None = None  # where the embedded span ends (the video's end, or `end`)
    settings: dict = field(default_factory=dict)  # model, sampling, smoothing, template, ...
    warnings: list[str] = field(default_factory=list)  # e.g. damaged packets skipped while decoding
    id: str | None = None  # the clip's id in a run (`ActAlign.run`)
    # the frames the method saw, where they are not `timestamps` (a baseline's own few frames)
    frames_seen: int | None = None
    score_kind: str | None = None  # what a score is (SCORE_KINDS); None: the method's own kind

    @property
    def frames(self) -> int:
        """How many frames the method saw: the sampled frames, or a baseline's own frames."""
        return len(self.timestamps) if self.frames_seen is None else self.frames_seen

    @property
    def score_is(self) -> str:
        """What this prediction's scores are: a key of SCORE_KINDS."""
        if self.score_kind:
            return self.score_kind
        return "affinity" if self.method == "mean-pool" else "eq13"

    @property
    def top(self) -> CandidateResult:
        """The best-ranked candidate."""
        return self.candidates[0]

    def rank_of(self, action: str) -> int:
        """1-based rank of a candidate (matched case- and space-insensitively)."""
        for c in self.candidates:
            if norm(c.action) == norm(action):
                return c.rank
        raise ActAlignError(f"{action!r} is not one of the candidates of {self.video}.")

    def scores_in(self, order: Sequence[str]) -> list[float]:
        """The candidates' scores in the given order of names."""
        by_action = {c.action: c.score for c in self.candidates}
        return [by_action[a] for a in order]

    def __repr__(self) -> str:
        if not self.candidates:
            return f"Prediction(video={self.video!r}, top=None, frames={len(self.timestamps)})"
        top = self.top
        return (
            f"Prediction(video={self.video!r}, top={top.action!r}, score={top.score:.4f}, "
            f"candidates={len(self.candidates)}, frames={len(self.timestamps)})"
        )

    def to_dict(self, top_k: int | None = None) -> dict:
        """The JSON form of `actalign classify --format json` (one entry of its "videos")."""
        return prediction_dict(self, top_k)


MAX_SMOOTH = 3600.0  # seconds: longer than any sensible smoothing window (the CLI's limit too)


@dataclass(frozen=True)
class Method:
    """One way of scoring a clip: ActAlign (a step template, smoothing, a script strategy, an
    alignment mode) or the mean-pool baseline (one prompt per candidate)."""

    name: str = "ActAlign"
    kind: str = "actalign"  # or "mean-pool"
    template: str = DEFAULT_TEMPLATE
    smooth_seconds: float = 1.0
    strategy: str = "context-rich"
    alignment: str = "global"
    prompt: str = MEAN_POOL_TEMPLATE  # mean-pool only

    def __post_init__(self) -> None:
        if self.kind not in METHODS:
            raise ActAlignError(f"Unknown method {self.kind!r}; use one of {', '.join(METHODS)}.")
        if self.alignment not in ALIGNMENTS:
            raise ActAlignError(f"Unknown alignment {self.alignment!r}; use one of {', '.join(ALIGNMENTS)}.")
        smooth = self.smooth_seconds
        if isinstance(smooth, bool) or not isinstance(smooth, (int, float)) or not 0 <= smooth <= MAX_SMOOTH:
            raise ActAlignError(
                f"The smoothing window must be 0 to {MAX_SMOOTH:g} seconds (0: none), got {smooth!r}."
            )

    def texts(self, domain: str, scripts: Mapping[str, Sequence[str]]) -> list[list[str]]:
        """The groups of texts embedded for a clip's candidates: per candidate its steps through
        the template (ActAlign), or one group of every candidate's prompt (mean-pool). A group is
        one tokenizer call under the authors' text encoding. scripts: {action: steps}."""
        if self.kind == "mean-pool":
            return [[fill(self.prompt, domain=domain, action=a) for a in scripts]]
        return [
            [fill(self.template, step=s, domain=domain, action=a) for s in steps]
            for a, steps in scripts.items()
        ]

    def assign(self, names: Sequence[str], groups: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        """{action: vectors} from the embedded groups of `texts` (in the same order)."""
        if self.kind == "mean-pool":
            return {a: groups[0][i : i + 1] for i, a in enumerate(names)}
        return dict(zip(names, groups, strict=True))

    def record(self) -> dict:
        """What a run's configuration records of this method (for mean-pool only what it uses)."""
        if self.kind == "mean-pool":  # the keys of `Config.record` (one set of keys)
            return {"name": self.name, "method": self.kind, "mean_pool_template": self.prompt}
        return {
            "name": self.name,
            "method": self.kind,
            "template": self.template,
            "smooth": self.smooth_seconds,
            "strategy": self.strategy,
            "alignment": self.alignment,
        }


@dataclass(frozen=True)
class Calibration:
    """What scoring needs of an encoder: the Eq. 9 calibration and how texts were encoded."""

    identity: str
    scale: float
    bias: float | None
    text_encoding: str = "trained"

    @classmethod
    def of(cls, encoder) -> Calibration:
        return cls(
            encoder.identity, encoder.scale, encoder.bias, getattr(encoder, "text_encoding", "trained")
        )


# --------------------------------------------------------------------------- pieces


MAX_TEMPLATE_WIDTH = 1000  # of a template field's format spec


def check_template(template: str, needed: str) -> None:
    """A template must fill with {step}, {domain} and {action} and contain `needed`; widths and
    precisions are bounded (a '{step:>999999999}' would build a gigabyte per step)."""
    import re
    import string

    if not isinstance(template, str):
        raise ActAlignError(f"A template must be text, got {template!r}.")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ActAlignError(
            f"The template {template!r} is invalid ({e}); use the fields {{step}}, {{domain}} and {{action}}."
        ) from None
    for _, name, spec, _ in parts:
        if spec and ("{" in spec or any(int(n) > MAX_TEMPLATE_WIDTH for n in re.findall(r"\d+", spec))):
            raise ActAlignError(
                f"The template {template!r} formats {{{name}}} as {spec!r}; widths and precisions are "
                f"limited to {MAX_TEMPLATE_WIDTH}."
            )
    try:
        template.format(step="s", domain="d", action="a")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ActAlignError(
            f"The template {template!r} is invalid ({e}); use the fields {{step}}, {{domain}} and {{action}}."
        ) from None
    fields = {f for _, f, _, _ in parts if f is not None}
    if needed.strip("{}") not in {f.split("!")[0].split(".")[0].split("[")[0] for f in fields}:
        raise ActAlignError(f"The template {template!r} must contain {needed}.")


def fill(template: str, **fields) -> str:
    """A template filled with {step}, {domain}, {action}; one sentence when it cannot be."""
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ActAlignError(f"The template {template!r} cannot be filled ({e}).") from None


def rank(scores: np.ndarray) -> np.ndarray:
    """Indices best first; ties keep the given order."""
    return np.argsort(-np.asarray(scores), kind="stable")


def frame_ends(timestamps: np.ndarray, end: float | None = None) -> np.ndarray:
    """Where each sampled frame's time ends (T,): the next sampled frame's time; the last one ends
    one typical interval later, clipped to `end` (the end of the video or of the window); a lone
    frame, with no interval to go by, lasts to `end`."""
    step_dt = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else math.inf
    last_end = timestamps[-1] + step_dt if end is not None or len(timestamps) > 1 else timestamps[-1]
    if end is not None:
        last_end = max(float(timestamps[-1]), min(last_end, end))
    return np.append(timestamps[1:], last_end)


def segments(
    path: np.ndarray, steps: Sequence[str], timestamps: np.ndarray, end: float | None = None
) -> list[Segment]:
    """Each step's span in seconds from a DTW path: its first matched frame to the next sampled
    frame after its last one; the last frame ends one frame interval later, clipped to `end`."""
    spans = align.segments_from_path(path, len(steps))
    ends = frame_ends(timestamps, end)
    return [Segment(s, float(timestamps[a]), float(ends[b])) for s, (a, b) in zip(steps, spans)]


def smoothing_window(seconds: float, fps: float) -> int:
    """Eq. 7's width in frames at this sampling rate (1: no smoothing)."""
    return align.window_frames(seconds, fps) if seconds > 0 else 1


def alignment_options(alignment: str, fps: float) -> dict:
    """Options of the subsequence score at this sampling rate (none for global)."""
    if alignment == "global":
        return {}
    return {"prior": align.window_frames(align.SUBSEQUENCE_PRIOR_SECONDS, fps)}


def actalign_scores(
    frames: np.ndarray,
    scripts: Sequence[np.ndarray],
    scale: float,
    bias: float | None,
    window: int,
    mode: str = "global",
    **options,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scores (M,) and affinities [(K_m, T)] of M scripts against frames (T, d) (Eq. 7-13), in one
    batched call without paths (for ablations that need scores only)."""
    smoothed = align.smooth(frames, window)
    affinities = [align.affinity(smoothed, steps, scale, bias) for steps in scripts]
    return align.dtw_scores(affinities, mode=mode, **options), affinities


def mean_pool_scores(frames: np.ndarray, texts: np.ndarray, scale: float, bias: float | None) -> np.ndarray:
    """Baseline: mean frame embedding against one text per candidate, same calibration. (M,)"""
    return align.affinity(frames.mean(axis=0, keepdims=True), texts, scale, bias)[:, 0]


# --------------------------------------------------------------------------- the unit


def score(
    video: str,
    domain: str,
    emb: VideoEmbedding,
    vectors: Mapping[str, np.ndarray],
    method: Method,
    calibration: Calibration,
    scripts: Mapping[str, Sequence[str]] | None = None,
    settings: dict | None = None,
) -> Prediction:
    """Rank the candidates of one clip.

    emb: frames (T, d) unit rows with timestamps (T,) and end; vectors: per candidate, in the
    candidates' order, its step vectors (K_m, d) (ActAlign) or its one prompt vector (1, d) or
    (d,) (mean-pool); scripts: {action: steps} for the segments (ActAlign).
    """
    names = list(vectors)
    if not names:
        raise ActAlignError("No candidates to score.")
    if not len(emb.timestamps):
        raise ActAlignError(f"{video}: no frames to score.")
    common = dict(
        video_end=emb.end, settings=dict(settings or {}), warnings=list(getattr(emb, "warnings", ()))
    )
    if method.kind == "mean-pool":
        texts = np.stack([np.asarray(vectors[a], np.float32).reshape(-1) for a in names])
        scores = mean_pool_scores(emb.frames, texts, calibration.scale, calibration.bias)
        results = [CandidateResult(names[i], float(scores[i]), r) for r, i in enumerate(rank(scores), 1)]
        return Prediction(video, domain, "mean-pool", results, emb.timestamps, **common)
    smoothed = align.smooth(emb.frames, smoothing_window(method.smooth_seconds, emb.fps))
    options = alignment_options(method.alignment, emb.fps)
    ends = frame_ends(emb.timestamps, emb.end)
    unranked = []
    for action in names:
        aff = align.affinity(smoothed, vectors[action], calibration.scale, calibration.bias)
        result = align.dtw(aff, mode=method.alignment, **options)  # score and path in one pass
        steps = list(scripts[action]) if scripts is not None else [f"step {k + 1}" for k in range(len(aff))]
        span = None
        if result.span is not None:
            span = (float(emb.timestamps[result.span[0]]), float(ends[result.span[1]]))
        unranked.append(
            CandidateResult(
                action,
                float(result.score),
                0,
                steps=steps,
                segments=segments(result.path, steps, emb.timestamps, emb.end),
                path=result.path,
                affinity=aff,
                span=span,
            )
        )
    order = rank([c.score for c in unranked])
    results = []
    for r, i in enumerate(order, 1):
        unranked[i].rank = r
        results.append(unranked[i])
    return Prediction(
        video, domain, "actalign", results, emb.timestamps, alignment=method.alignment, **common
    )
