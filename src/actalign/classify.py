"""The ActAlign pipeline and the mean-pool baseline.

    from actalign import ActAlign
    model = ActAlign("google/siglip-so400m-patch14-384", scripts="scripts.json")
    pred = model.classify("clip.mp4", ["Tip-in", "Putback dunk"], domain="basketball")
    pred.top.action, pred.top.score, pred.top.segments   # when each step happened, in seconds
    model(["a.mp4", "b.mp4"], ["Tip-in", "Putback dunk"], domain="basketball")  # several videos

Ranking: candidates by score, highest first; equal scores keep the order they were given in.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from actalign import align
from actalign.embed import VideoEmbedding, embed_text_groups, embed_video
from actalign.encoders import DEFAULT_MODEL, Encoder, load_encoder
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.files import check_text
from actalign.scripts import ScriptSource
from actalign.scripts.parse import norm
from actalign.video import ArrayVideo, Sampling, as_video

METHODS = ("actalign", "mean-pool")
ALIGNMENTS = align.MODES
DEFAULT_TEMPLATE = "{step} in {domain}"  # the paper's context augmentation
AUTHORS_TEMPLATE = "This is a video of doing {action} in {domain} with {step}"  # the original scripts'
MEAN_POOL_TEMPLATE = "This is a video of {domain} executing {action}"

VideoInput = str | os.PathLike | ArrayVideo | tuple


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

    def __repr__(self) -> str:
        top = self.top
        return (
            f"Prediction(video={self.video!r}, top={top.action!r}, score={top.score:.4f}, "
            f"candidates={len(self.candidates)}, frames={len(self.timestamps)})"
        )

    def to_dict(self, top_k: int | None = None) -> dict:
        """The JSON form of `actalign classify --format json` (one entry of its "videos")."""
        from actalign.exports import prediction_dict

        return prediction_dict(self, top_k)


# --------------------------------------------------------------------------- scoring


def actalign_scores(
    frames: np.ndarray,
    scripts: Sequence[np.ndarray],
    scale: float,
    bias: float | None,
    window: int,
    mode: str = "global",
    **options,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scores (M,) and affinities [(K_m, T)] of M scripts against frames (T, d) (Eq. 7-13)."""
    smoothed = align.smooth(frames, window)
    affinities = [align.affinity(smoothed, steps, scale, bias) for steps in scripts]
    return align.dtw_scores(affinities, mode=mode, **options), affinities


def mean_pool_scores(frames: np.ndarray, texts: np.ndarray, scale: float, bias: float | None) -> np.ndarray:
    """Baseline: mean frame embedding against one text per candidate, same calibration. (M,)"""
    return align.affinity(frames.mean(axis=0, keepdims=True), texts, scale, bias)[:, 0]


def rank(scores: np.ndarray) -> np.ndarray:
    """Indices best first; ties keep the given order."""
    return np.argsort(-np.asarray(scores), kind="stable")


_NUMBERING = re.compile(r"^\s*\(?\d+\s*[.):]\s*")


def clean_candidate(name: str) -> str:
    """'1. Tip-in ' -> 'Tip-in': lists pasted from a benchmark (ActionAtlas numbers its choices)."""
    return " ".join(_NUMBERING.sub("", name).split())


def check_candidates(candidates: Sequence[str]) -> list[str]:
    """Stripped candidate names; one clear error when none are given or two are the same (up to
    case and spaces: their scores would tie, so neither could rank first)."""
    if isinstance(candidates, str):
        candidates = [candidates]
    names = []
    for c in candidates:
        if not isinstance(c, str):
            raise ActAlignError(f"Candidates must be text, got {c!r}.")
        if clean_candidate(c):
            names.append(check_text(clean_candidate(c), f"The candidate {c!r}"))
    if not names:
        raise ActAlignError("No candidate actions given; pass --candidates A B C or --candidates-file F.")
    seen: dict[str, str] = {}
    for c in names:
        key = norm(c)
        if key in seen:
            raise ActAlignError(f"The candidate {c!r} is given twice; each candidate must be distinct.")
        seen[key] = c
    return names


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


def _format_template(template: str, **fields) -> str:
    try:
        return template.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ActAlignError(f"The template {template!r} cannot be filled ({e}).") from None


# --------------------------------------------------------------------------- pipeline


class ActAlign:
    """Zero-shot classification of videos among candidate actions by script alignment.

    encoder: an `Encoder`, or a model name / hub id / local directory for `load_encoder`.
    scripts: a `ScriptSource`, a scripts JSON path, or a {domain: {action: [steps]}} dict.
    fps: frames sampled per second of video (None: every frame, as in the paper).
    smooth_seconds: width of the moving average (Eq. 7) in seconds; the paper's w=30 at 30 fps.
    template: how a step is embedded, with {step}, {domain} and {action} (Sec. 3, context).
    method: "actalign", or "mean-pool" for the baseline.
    alignment: "global" (the paper: the path spans the whole clip) or "subsequence" (the action
        may start and end anywhere inside the clip; see `actalign.align`).
    cache: an EmbeddingCache, None for the default location, or False for none.

    Call it like a transformers pipeline: `model(video, candidates, domain=...)` for one video
    (a path, or (frames (T, H, W, 3) uint8, fps)) or a list of them.
    """

    def __init__(
        self,
        encoder: Encoder | str = DEFAULT_MODEL,
        scripts: ScriptSource | str | os.PathLike | dict | None = None,
        fps: float | None = None,
        smooth_seconds: float = 1.0,
        template: str = DEFAULT_TEMPLATE,
        method: str = "actalign",
        cache: EmbeddingCache | bool | None = None,
        mean_pool_template: str = MEAN_POOL_TEMPLATE,
        alignment: str = "global",
    ) -> None:
        if method not in METHODS:
            raise ActAlignError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
        if alignment not in ALIGNMENTS:
            raise ActAlignError(f"Unknown alignment {alignment!r}; use one of {', '.join(ALIGNMENTS)}.")
        if not isinstance(smooth_seconds, (int, float)) or not 0 <= smooth_seconds < 1e6:
            raise ActAlignError(f"The smoothing window must be >= 0 seconds, got {smooth_seconds!r}.")
        if fps is not None:
            Sampling(fps=fps)  # validates
        check_template(template, "{step}")
        check_template(mean_pool_template, "{action}")
        self.encoder = load_encoder(encoder) if isinstance(encoder, str) else encoder
        self.scripts = _script_source(scripts) if method == "actalign" else scripts
        self.fps, self.smooth_seconds = fps, smooth_seconds
        self.template, self.mean_pool_template, self.method = template, mean_pool_template, method
        self.alignment = alignment
        self.cache = EmbeddingCache() if cache is None or cache is True else (cache or None)

    def __repr__(self) -> str:
        return (
            f"ActAlign(encoder={getattr(self.encoder, 'identity', '?')!r}, method={self.method!r}, "
            f"alignment={self.alignment!r}, fps={self.fps}, smooth_seconds={self.smooth_seconds})"
        )

    def __call__(
        self,
        videos: VideoInput | Sequence[VideoInput],
        candidates: Sequence[str],
        domain: str,
        **kwargs,
    ) -> Prediction | list[Prediction]:
        """`classify` for one video, `classify_many` for a list of them."""
        if isinstance(videos, list):
            return self.classify_many(videos, candidates, domain, **kwargs)
        return self.classify(videos, candidates, domain, **kwargs)

    def embed(
        self,
        video: VideoInput,
        start: float | None = None,
        end: float | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> VideoEmbedding:
        """Frame embeddings of a video at this pipeline's sampling (cached)."""
        sampling = Sampling(fps=self.fps, start=start, end=end)
        return embed_video(self.encoder, as_video(video), sampling, self.cache, on_frames, on_total)

    def classify(
        self,
        video: VideoInput,
        candidates: Sequence[str],
        domain: str,
        start: float | None = None,
        end: float | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> Prediction:
        """Rank `candidates` for one video (a path, or (frames, fps)), within [start, end) seconds.

        on_total / on_frames: progress callbacks (expected frame count; frames encoded so far).
        """
        candidates = check_candidates(candidates)
        domain = (domain or "").strip()
        video = as_video(video)
        if self.method == "actalign":
            scripts = self.scripts.get(domain, candidates)  # fails fast, before decoding
        emb = self.embed(video, start, end, on_frames, on_total)
        if self.method == "mean-pool":
            pred = self.classify_mean_pool(str(video), emb, candidates, domain)
        else:
            pred = self.classify_embedding(str(video), emb, scripts, domain)
        pred.start = start
        pred.end = None if end is None else min(end, emb.end)  # an --end past the video is its end
        return pred

    def settings(self) -> dict:
        """What produced a prediction: the model, sampling, method and alignment settings."""
        out = {
            "model": str(
                getattr(self.encoder, "name_or_path", None) or getattr(self.encoder, "identity", "?")
            ),
            "model_identity": getattr(self.encoder, "identity", "?"),  # revision or weights hash, dtype
            "dtype": getattr(self.encoder, "dtype_name", None),  # the precision it ran in
            "text_encoding": getattr(self.encoder, "text_encoding", "trained"),
            "method": self.method,
            "fps": None if self.fps is None else float(self.fps),
        }
        if self.method == "mean-pool":
            out["prompt"] = self.mean_pool_template
        else:
            out.update(
                smooth_seconds=float(self.smooth_seconds), template=self.template, alignment=self.alignment
            )
        return out

    def classify_many(
        self,
        videos: Sequence[VideoInput],
        candidates: Sequence[str],
        domain: str,
        on_error: str = "raise",
    ) -> list[Prediction | ActAlignError]:
        """`classify` for many videos with the same candidates: scripts are resolved and their steps
        embedded once. on_error="keep" puts a failed video's ActAlignError in its place instead of
        raising it."""
        if on_error not in ("raise", "keep"):
            raise ActAlignError("on_error must be 'raise' or 'keep'.")
        candidates = check_candidates(candidates)
        steps = None
        if self.method == "actalign":
            scripts = self.scripts.get(domain, candidates)
            steps = self.step_embeddings(scripts, domain)
        out: list[Prediction | ActAlignError] = []
        for video in videos:
            try:
                video = as_video(video)
                emb = self.embed(video)
                if self.method == "mean-pool":
                    out.append(self.classify_mean_pool(str(video), emb, candidates, domain))
                else:
                    out.append(self.classify_embedding(str(video), emb, scripts, domain, steps))
            except ActAlignError as e:
                if on_error == "raise":
                    raise
                out.append(e)
        return out

    def step_texts(self, scripts: dict[str, list[str]], domain: str) -> list[list[str]]:
        """Per script, the texts its steps are embedded as (this pipeline's template)."""
        return [
            [_format_template(self.template, step=s, domain=domain, action=a) for s in steps]
            for a, steps in scripts.items()
        ]

    def step_embeddings(self, scripts: dict[str, list[str]], domain: str) -> list[np.ndarray]:
        """Per script, its steps (K_m, d) embedded through this pipeline's template."""
        return embed_text_groups(self.encoder, self.step_texts(scripts, domain), self.cache)

    def window(self, emb: VideoEmbedding) -> int:
        """Smoothing width in frames (Eq. 7) at this video's sampling rate."""
        return align.window_frames(self.smooth_seconds, emb.fps) if self.smooth_seconds > 0 else 1

    def classify_embedding(
        self,
        video: str,
        emb: VideoEmbedding,
        scripts: dict[str, list[str]],
        domain: str,
        steps: list[np.ndarray] | None = None,
    ) -> Prediction:
        """ActAlign on frame embeddings already computed, with {action: steps} (and, optionally,
        their step embeddings from `step_embeddings`)."""
        names = list(scripts)
        per_script = steps if steps is not None else self.step_embeddings(scripts, domain)
        options = self.alignment_options(emb)
        scores, affinities = actalign_scores(
            emb.frames,
            per_script,
            self.encoder.scale,
            self.encoder.bias,
            self.window(emb),
            mode=self.alignment,
            **options,
        )
        results = []
        for r, i in enumerate(rank(scores), 1):
            result = align.dtw(affinities[i], mode=self.alignment, **options)
            span = None
            if result.span is not None:
                first, last = result.span
                span = (float(emb.timestamps[first]), float(frame_ends(emb.timestamps, emb.end)[last]))
            results.append(
                CandidateResult(
                    action=names[i],
                    score=float(scores[i]),
                    rank=r,
                    steps=list(scripts[names[i]]),
                    segments=segments(result.path, scripts[names[i]], emb.timestamps, emb.end),
                    path=result.path,
                    affinity=affinities[i],
                    span=span,
                )
            )
        return Prediction(
            video,
            domain,
            "actalign",
            results,
            emb.timestamps,
            alignment=self.alignment,
            video_end=emb.end,
            settings=self.settings(),
        )

    def alignment_options(self, emb: VideoEmbedding) -> dict:
        """Options of the subsequence score at this video's sampling rate (none for global)."""
        if self.alignment == "global":
            return {}
        return {"prior": align.window_frames(align.SUBSEQUENCE_PRIOR_SECONDS, emb.fps)}

    def classify_mean_pool(
        self,
        video: str,
        emb: VideoEmbedding,
        candidates: list[str],
        domain: str,
        texts: np.ndarray | None = None,
    ) -> Prediction:
        """The mean-pool baseline on frame embeddings already computed (and, optionally, the
        candidates' text embeddings (M, d))."""
        embedded = texts
        if embedded is None:
            prompts = [_format_template(self.mean_pool_template, domain=domain, action=c) for c in candidates]
            (embedded,) = embed_text_groups(self.encoder, [prompts], self.cache)
        scores = mean_pool_scores(emb.frames, embedded, self.encoder.scale, self.encoder.bias)
        results = [
            CandidateResult(action=candidates[i], score=float(scores[i]), rank=r)
            for r, i in enumerate(rank(scores), 1)
        ]
        return Prediction(
            video, domain, "mean-pool", results, emb.timestamps, video_end=emb.end, settings=self.settings()
        )


def check_template(template: str, needed: str) -> None:
    """A template must fill with {step}, {domain} and {action} and contain `needed`."""
    if not isinstance(template, str):
        raise ActAlignError(f"A template must be text, got {template!r}.")
    try:
        template.format(step="s", domain="d", action="a")
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        raise ActAlignError(
            f"The template {template!r} is invalid ({e}); use the fields {{step}}, {{domain}} and {{action}}."
        ) from None
    import string

    fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    if needed.strip("{}") not in {f.split("!")[0].split(".")[0].split("[")[0] for f in fields}:
        raise ActAlignError(f"The template {template!r} must contain {needed}.")


def _script_source(scripts) -> ScriptSource:
    if isinstance(scripts, ScriptSource):
        return scripts
    if scripts is None:
        return ScriptSource()
    if isinstance(scripts, dict):
        source = ScriptSource()
        source.hand = [scripts]
        return source
    return ScriptSource([scripts])
