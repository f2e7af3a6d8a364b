"""The pipeline of one video: `preprocess` (candidates checked, scripts resolved) -> `forward` (the
frame path: decode -> encode -> cache; the steps' vectors) -> `postprocess` (the one scoring unit,
`actalign.score.score`). `actalign.ActAlign` is the front door that builds one from a `Config`;
this is the piece below it that `locate` and the app's page also use.

    pipe = Pipeline(config, encoder, scripts, cache)
    pred = pipe.classify("clip.mp4", ["Tip-in", "Putback dunk"], "basketball")

Ranking: candidates by score, highest first; equal scores keep the order they were given in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

from actalign.candidates import check_candidates
from actalign.config import Config
from actalign.embed import VideoEmbedding, embed_text_groups, embed_video
from actalign.encoders import Encoder
from actalign.encoders.cache import EmbeddingCache
from actalign.score import Calibration, Prediction, alignment_options, fill, score, smoothing_window
from actalign.scripts import ScriptSource
from actalign.video import ArrayVideo, Sampling, as_video

__all__ = ["Pipeline", "VideoInput"]

VideoInput = str | os.PathLike | ArrayVideo | tuple


class Pipeline:
    """ActAlign (or the mean-pool baseline) on one video at a time, with a Config's method and
    sampling, an encoder, a script source (None for mean-pool) and a cache (None: none)."""

    def __init__(
        self,
        config: Config,
        encoder: Encoder,
        scripts: ScriptSource | None,
        cache: EmbeddingCache | None,
    ) -> None:
        self.config, self.encoder, self.scripts, self.cache = config, encoder, scripts, cache
        self.method = config.scoring()

    @property
    def fps(self) -> float | None:
        return self.config.fps

    @property
    def calibration(self) -> Calibration:
        return Calibration.of(self.encoder)

    def settings(self) -> dict:
        """What produced a prediction (`Config.record` with the loaded encoder)."""
        return self.config.record(self.encoder)

    # ------------------------------------------------------------------ the three stages

    def preprocess(
        self, candidates: Sequence[str], domain: str | None
    ) -> tuple[list[str], str, dict[str, list[str]]]:
        """(checked candidates, domain, {action: steps}); fails fast on missing scripts, before
        any decoding. Mean-pool has no steps."""
        candidates = check_candidates(candidates)
        domain = (domain or "").strip()
        if self.config.method == "actalign":
            scripts = self.scripts.get(domain, candidates)
            return candidates, domain, {a: list(scripts[a]) for a in scripts}
        return candidates, domain, {c: [] for c in candidates}

    def text_vectors(self, domain: str, scripts: dict[str, list[str]]) -> dict[str, np.ndarray]:
        """Per candidate, its step vectors (K_m, d) (ActAlign) or its prompt vector (1, d)."""
        groups = self.method.texts(domain, scripts)
        return self.method.assign(list(scripts), embed_text_groups(self.encoder, groups, self.cache))

    def embed(
        self,
        video: VideoInput,
        start: float | None = None,
        end: float | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> VideoEmbedding:
        """Frame embeddings (T, d) of a video at this pipeline's sampling (the one frame path)."""
        sampling = Sampling(fps=self.config.fps, start=start, end=end)
        return embed_video(self.encoder, as_video(video), sampling, self.cache, on_frames, on_total)

    def postprocess(
        self, video: str, domain: str, emb: VideoEmbedding, vectors: dict, scripts: dict[str, list[str]]
    ) -> Prediction:
        """The one scoring unit on embeddings already computed."""
        return score(video, domain, emb, vectors, self.method, self.calibration, scripts, self.settings())

    def classify(
        self,
        video: VideoInput,
        candidates: Sequence[str],
        domain: str | None,
        start: float | None = None,
        end: float | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> Prediction:
        """Rank `candidates` for one video (a path, or (frames (T, H, W, 3) uint8, fps)), within
        [start, end) seconds. on_total / on_frames: progress callbacks."""
        candidates, domain, scripts = self.preprocess(candidates, domain)
        video = as_video(video)
        emb = self.embed(video, start, end, on_frames, on_total)
        pred = self.postprocess(str(video), domain, emb, self.text_vectors(domain, scripts), scripts)
        pred.start = start
        pred.end = None if end is None else min(end, emb.end)  # an end past the video is its end
        return pred

    # ------------------------------------------------------------------ pieces, for locate and plots

    def step_texts(self, scripts: dict[str, list[str]], domain: str) -> list[list[str]]:
        """Per script, the texts its steps are embedded as (this pipeline's template)."""
        return [
            [fill(self.config.template, step=s, domain=domain, action=a) for s in steps]
            for a, steps in scripts.items()
        ]

    def step_embeddings(self, scripts: dict[str, list[str]], domain: str) -> list[np.ndarray]:
        """Per script, its steps (K_m, d) embedded through this pipeline's template."""
        return embed_text_groups(self.encoder, self.step_texts(scripts, domain), self.cache)

    def window(self, fps: float) -> int:
        """Smoothing width in frames (Eq. 7) at this sampling rate."""
        return smoothing_window(self.config.smooth, fps)

    def alignment_options(self, fps: float) -> dict:
        """Options of the subsequence score at this sampling rate (none for global)."""
        return alignment_options(self.config.alignment, fps)

    def classify_embedding(
        self,
        video: str,
        emb: VideoEmbedding,
        scripts: dict[str, list[str]],
        domain: str,
        steps: list[np.ndarray] | None = None,
    ) -> Prediction:
        """ActAlign on frame embeddings already computed, with {action: steps} (and, optionally,
        their step embeddings (K_m, d) from `step_embeddings`)."""
        per_script = steps if steps is not None else self.step_embeddings(scripts, domain)
        vectors = dict(zip(scripts, per_script))
        return score(video, domain, emb, vectors, self.method, self.calibration, scripts, self.settings())
