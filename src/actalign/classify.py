"""The ActAlign pipeline and the mean-pool baseline.

    from actalign import ActAlign
    model = ActAlign("google/siglip-so400m-patch14-384", scripts="scripts.json")
    pred = model.classify("clip.mp4", ["Tip-in", "Putback dunk"], domain="basketball")
    pred.top.action, pred.top.score, pred.top.segments   # when each step happened, in seconds

Ranking: candidates by score, highest first; equal scores keep the order they were given in.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from actalign import align
from actalign.embed import VideoEmbedding, embed_texts, embed_video
from actalign.encoders import DEFAULT_MODEL, Encoder, load_encoder
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.scripts import ScriptSource
from actalign.scripts.parse import norm
from actalign.video import Sampling

METHODS = ("actalign", "mean-pool")
DEFAULT_TEMPLATE = "{step} in {domain}"  # the paper's context augmentation
MEAN_POOL_TEMPLATE = "This is a video of {domain} executing {action}"


@dataclass(frozen=True)
class Segment:
    step: str
    start: float  # seconds
    end: float  # seconds (start of the next sampled frame after the step's last frame)


@dataclass
class CandidateResult:
    action: str
    score: float
    rank: int
    steps: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    path: np.ndarray | None = None  # (L, 2) rows of (step, frame index)
    affinity: np.ndarray | None = None  # (K, T), for plots


@dataclass
class Prediction:
    video: str
    domain: str
    method: str
    candidates: list[CandidateResult]  # ranked, best first
    timestamps: np.ndarray  # (T,) seconds of the sampled frames

    @property
    def top(self) -> CandidateResult:
        return self.candidates[0]

    def rank_of(self, action: str) -> int:
        return next(c.rank for c in self.candidates if c.action == action)

    def to_dict(self) -> dict:
        return {
            "video": self.video,
            "domain": self.domain,
            "method": self.method,
            "frames": len(self.timestamps),
            "predictions": [
                {
                    "rank": c.rank,
                    "action": c.action,
                    "score": round(float(c.score), 6),
                    "segments": [
                        {"step": s.step, "start": round(s.start, 3), "end": round(s.end, 3)}
                        for s in c.segments
                    ],
                }
                for c in self.candidates
            ],
        }


# --------------------------------------------------------------------------- scoring


def actalign_scores(
    frames: np.ndarray,
    scripts: Sequence[np.ndarray],
    scale: float,
    bias: float | None,
    window: int,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Scores (M,) and affinities [(K_m, T)] of M scripts against frames (T, d) (Eq. 7-13)."""
    smoothed = align.smooth(frames, window)
    affinities = [align.affinity(smoothed, steps, scale, bias) for steps in scripts]
    return align.dtw_scores(affinities), affinities


def mean_pool_scores(frames: np.ndarray, texts: np.ndarray, scale: float, bias: float | None) -> np.ndarray:
    """Baseline: mean frame embedding against one text per candidate, same calibration. (M,)"""
    return align.affinity(frames.mean(axis=0, keepdims=True), texts, scale, bias)[:, 0]


def rank(scores: np.ndarray) -> np.ndarray:
    """Indices best first; ties keep the given order."""
    return np.argsort(-np.asarray(scores), kind="stable")


def check_candidates(candidates: Sequence[str]) -> list[str]:
    names = [c.strip() for c in candidates if c and c.strip()]
    if not names:
        raise ActAlignError("No candidate actions given; pass --candidates A B C or --candidates-file F.")
    seen: dict[str, str] = {}
    for c in names:
        key = norm(c)
        if key in seen:
            raise ActAlignError(f"The candidate {c!r} is given twice; each candidate must be distinct.")
        seen[key] = c
    return names


def segments(path: np.ndarray, steps: Sequence[str], timestamps: np.ndarray) -> list[Segment]:
    """Each step's span in seconds from a DTW path: first matched frame to the next frame after its last."""
    spans = align.segments_from_path(path, len(steps))
    step_dt = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0
    ends = np.append(timestamps[1:], timestamps[-1] + step_dt)
    return [Segment(s, float(timestamps[a]), float(ends[b])) for s, (a, b) in zip(steps, spans)]


# --------------------------------------------------------------------------- pipeline


class ActAlign:
    """Zero-shot classification of videos among candidate actions by script alignment.

    encoder: an `Encoder`, or a model name / hub id / local directory for `load_encoder`.
    scripts: a `ScriptSource`, a scripts JSON path, or a {domain: {action: [steps]}} dict.
    fps: frames sampled per second of video (None: every frame, as in the paper).
    smooth_seconds: width of the moving average (Eq. 7) in seconds; the paper's w=30 at 30 fps.
    template: how a step is embedded, with {step}, {domain} and {action} (Sec. 3, context).
    method: "actalign", or "mean-pool" for the baseline.
    cache: an EmbeddingCache, None for the default location, or False for none.
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
    ) -> None:
        if method not in METHODS:
            raise ActAlignError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
        if smooth_seconds < 0:
            raise ActAlignError("The smoothing window must be >= 0 seconds.")
        _check_template(template, "{step}")
        _check_template(mean_pool_template, "{action}")
        self.encoder = load_encoder(encoder) if isinstance(encoder, str) else encoder
        self.scripts = _script_source(scripts) if method == "actalign" else scripts
        self.fps, self.smooth_seconds = fps, smooth_seconds
        self.template, self.mean_pool_template, self.method = template, mean_pool_template, method
        self.cache = EmbeddingCache() if cache is None or cache is True else (cache or None)

    def embed(
        self, video: str | os.PathLike, start: float | None = None, end: float | None = None, on_frames=None
    ) -> VideoEmbedding:
        """Frame embeddings of a video at this pipeline's sampling (cached)."""
        sampling = Sampling(fps=self.fps, start=start, end=end)
        return embed_video(self.encoder, video, sampling, self.cache, on_frames=on_frames)

    def classify(
        self,
        video: str | os.PathLike,
        candidates: Sequence[str],
        domain: str,
        start: float | None = None,
        end: float | None = None,
        on_frames=None,
    ) -> Prediction:
        candidates = check_candidates(candidates)
        domain = (domain or "").strip()
        if self.method == "actalign":
            scripts = self.scripts.get(domain, candidates)  # fails fast, before decoding
        emb = self.embed(video, start, end, on_frames)
        if self.method == "mean-pool":
            return self.classify_mean_pool(str(video), emb, candidates, domain)
        return self.classify_embedding(str(video), emb, scripts, domain)

    def classify_many(
        self,
        videos: Sequence[str | os.PathLike],
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

    def step_embeddings(self, scripts: dict[str, list[str]], domain: str) -> list[np.ndarray]:
        """Per script, its steps (K_m, d) embedded through this pipeline's template."""
        names = list(scripts)
        texts = [self.template.format(step=s, domain=domain, action=a) for a in names for s in scripts[a]]
        all_steps = embed_texts(self.encoder, texts, self.cache)
        bounds = np.cumsum([0] + [len(scripts[a]) for a in names])
        return [all_steps[bounds[i] : bounds[i + 1]] for i in range(len(names))]

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
        window = align.window_frames(self.smooth_seconds, emb.fps) if self.smooth_seconds > 0 else 1
        scores, affinities = actalign_scores(
            emb.frames, per_script, self.encoder.scale, self.encoder.bias, window
        )
        results = []
        for r, i in enumerate(rank(scores), 1):
            alignment = align.dtw(affinities[i])
            results.append(
                CandidateResult(
                    action=names[i],
                    score=float(scores[i]),
                    rank=r,
                    steps=list(scripts[names[i]]),
                    segments=segments(alignment.path, scripts[names[i]], emb.timestamps),
                    path=alignment.path,
                    affinity=affinities[i],
                )
            )
        return Prediction(video, domain, "actalign", results, emb.timestamps)

    def classify_mean_pool(
        self, video: str, emb: VideoEmbedding, candidates: list[str], domain: str
    ) -> Prediction:
        """The mean-pool baseline on frame embeddings already computed."""
        texts = [self.mean_pool_template.format(domain=domain, action=c) for c in candidates]
        scores = mean_pool_scores(
            emb.frames, embed_texts(self.encoder, texts, self.cache), self.encoder.scale, self.encoder.bias
        )
        results = [
            CandidateResult(action=candidates[i], score=float(scores[i]), rank=r)
            for r, i in enumerate(rank(scores), 1)
        ]
        return Prediction(video, domain, "mean-pool", results, emb.timestamps)


def _check_template(template: str, needed: str) -> None:
    try:
        template.format(step="s", domain="d", action="a")
    except (KeyError, IndexError, ValueError) as e:
        raise ActAlignError(
            f"The template {template!r} is invalid ({e}); use the fields {{step}}, {{domain}} and {{action}}."
        ) from None
    if needed not in template:
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
