"""The ActAlign pipeline and the mean-pool baseline.

    from actalign import ActAlign
    model = ActAlign("google/siglip-so400m-patch14-384", scripts="scripts.json")
    pred = model.classify("clip.mp4", ["Tip-in", "Putback dunk"], domain="basketball")
    pred.top.action, pred.top.score, pred.top.segments   # when each step happened, in seconds
    model(["a.mp4", "b.mp4"], ["Tip-in", "Putback dunk"], domain="basketball")  # several videos

Ranking: candidates by score, highest first; equal scores keep the order they were given in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from actalign.candidates import check_candidates, clean_candidate
from actalign.embed import VideoEmbedding, embed_text_groups, embed_video
from actalign.encoders import DEFAULT_MODEL, Encoder, load_encoder
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.score import (
    ALIGNMENTS,
    AUTHORS_TEMPLATE,
    DEFAULT_TEMPLATE,
    MEAN_POOL_TEMPLATE,
    METHODS,
    Calibration,
    CandidateResult,
    Method,
    Prediction,
    Segment,
    actalign_scores,
    alignment_options,
    fill,
    frame_ends,
    mean_pool_scores,
    rank,
    score,
    segments,
    smoothing_window,
)
from actalign.scripts import ScriptSource
from actalign.video import ArrayVideo, Sampling, as_video

__all__ = [
    "ALIGNMENTS",
    "AUTHORS_TEMPLATE",
    "DEFAULT_TEMPLATE",
    "MEAN_POOL_TEMPLATE",
    "METHODS",
    "ActAlign",
    "CandidateResult",
    "Prediction",
    "Segment",
    "actalign_scores",
    "check_candidates",
    "check_template",
    "clean_candidate",
    "frame_ends",
    "mean_pool_scores",
    "rank",
    "segments",
]

VideoInput = str | os.PathLike | ArrayVideo | tuple
MAX_TEMPLATE_WIDTH = 1000  # of a template field's format spec


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

    Shaped like a transformers pipeline: `preprocess` (candidates checked, scripts resolved),
    `forward` (the frame path: decode -> encode -> cache; the steps' vectors), `postprocess` (the
    one scoring unit, `actalign.score.score`). Call it as `model(video, candidates, domain=...)`
    for one video (a path, or (frames (T, H, W, 3) uint8, fps)) or a list of them.
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
        strategy: str = "context-rich",
    ) -> None:
        self.method_spec = Method(
            method, method, template, smooth_seconds, strategy, alignment, mean_pool_template
        )  # validates method, alignment and smoothing
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

    @property
    def calibration(self) -> Calibration:
        return Calibration.of(self.encoder)

    # ------------------------------------------------------------------ the three stages

    def preprocess(
        self, candidates: Sequence[str], domain: str
    ) -> tuple[list[str], str, dict[str, list[str]]]:
        """(checked candidates, domain, {action: steps}); fails fast on missing scripts, before
        any decoding. Mean-pool has no steps."""
        candidates = check_candidates(candidates)
        domain = (domain or "").strip()
        if self.method == "actalign":
            scripts = self.scripts.get(domain, candidates)
            return candidates, domain, {a: list(scripts[a]) for a in scripts}
        return candidates, domain, {c: [] for c in candidates}

    def text_vectors(self, domain: str, scripts: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """Per candidate, its step vectors (K_m, d) (ActAlign) or its prompt vector (1, d)."""
        groups = self.method_spec.texts(domain, scripts)
        return self.method_spec.assign(list(scripts), embed_text_groups(self.encoder, groups, self.cache))

    def embed(
        self,
        video: VideoInput,
        start: float | None = None,
        end: float | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> VideoEmbedding:
        """Frame embeddings of a video at this pipeline's sampling (the one frame path, cached)."""
        sampling = Sampling(fps=self.fps, start=start, end=end)
        return embed_video(self.encoder, as_video(video), sampling, self.cache, on_frames, on_total)

    def postprocess(
        self, video: str, domain: str, emb: VideoEmbedding, vectors: dict, scripts: dict[str, list[str]]
    ) -> Prediction:
        """The one scoring unit on embeddings already computed."""
        return score(
            video, domain, emb, vectors, self.method_spec, self.calibration, scripts, self.settings()
        )

    # ------------------------------------------------------------------ one video, many videos

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
        candidates, domain, scripts = self.preprocess(candidates, domain)
        video = as_video(video)
        emb = self.embed(video, start, end, on_frames, on_total)
        pred = self.postprocess(str(video), domain, emb, self.text_vectors(domain, scripts), scripts)
        pred.start = start
        pred.end = None if end is None else min(end, emb.end)  # an --end past the video is its end
        return pred

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
        candidates, domain, scripts = self.preprocess(candidates, domain)
        vectors = self.text_vectors(domain, scripts)
        out: list[Prediction | ActAlignError] = []
        for video in videos:
            try:
                video = as_video(video)
                out.append(self.postprocess(str(video), domain, self.embed(video), vectors, scripts))
            except ActAlignError as e:
                if on_error == "raise":
                    raise
                out.append(e)
        return out

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

    # ------------------------------------------------------------------ pieces, for plots and locate

    def step_texts(self, scripts: dict[str, list[str]], domain: str) -> list[list[str]]:
        """Per script, the texts its steps are embedded as (this pipeline's template)."""
        return [
            [fill(self.template, step=s, domain=domain, action=a) for s in steps]
            for a, steps in scripts.items()
        ]

    def step_embeddings(self, scripts: dict[str, list[str]], domain: str) -> list[np.ndarray]:
        """Per script, its steps (K_m, d) embedded through this pipeline's template."""
        return embed_text_groups(self.encoder, self.step_texts(scripts, domain), self.cache)

    def window(self, emb: VideoEmbedding) -> int:
        """Smoothing width in frames (Eq. 7) at this video's sampling rate."""
        return smoothing_window(self.smooth_seconds, emb.fps)

    def alignment_options(self, emb: VideoEmbedding) -> dict:
        """Options of the subsequence score at this video's sampling rate (none for global)."""
        return alignment_options(self.alignment, emb.fps)

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
        per_script = steps if steps is not None else self.step_embeddings(scripts, domain)
        spec = (
            self.method_spec
            if self.method == "actalign"
            else Method("actalign", "actalign", self.template, self.smooth_seconds, alignment=self.alignment)
        )
        vectors = dict(zip(scripts, per_script))
        return score(video, domain, emb, vectors, spec, self.calibration, scripts, self.settings())

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
        spec = Method("mean-pool", "mean-pool", prompt=self.mean_pool_template)
        if texts is None:
            (texts,) = embed_text_groups(
                self.encoder, spec.texts(domain, {c: [] for c in candidates}), self.cache
            )
        vectors = spec.assign(candidates, [texts])
        return score(video, domain, emb, vectors, spec, self.calibration, None, self.settings())


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
