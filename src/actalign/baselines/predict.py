"""The paper's Table 2 peers on the one path from video to prediction: X-CLIP and a video LLM take
the frames they were built for from the clip (segment centres of the span, at the model's input
size), and their answers become a ranked `Prediction` (for `classify --method xclip|vlm`) or a
row entry of the batch runner (for `eval --xclip/--vlm/--table2`).

    baseline = Baseline.xclip("microsoft/xclip-large-patch14-16-frames")
    pred = baseline.predict("clip.mp4", ["Tip-in", "Putback dunk"], "basketball")

Each baseline decodes its own few frames (a bounded stream: only the chosen frames are kept);
the SigLIP path decodes at --fps. Neither has step segments: a baseline's prediction has scores
and ranks only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from actalign.baselines._load import segment_centres
from actalign.errors import ActAlignError
from actalign.score import CandidateResult, Prediction, rank
from actalign.video import Sampling, expected_frames, iter_frames, probe

XCLIP_TEMPLATE = "{action}"  # X-CLIP's class texts: the action's name, as its zero-shot evaluation


def clip_frames(video, count: int, start: float | None, end: float | None, resize) -> np.ndarray:
    """`count` frames (count, H, W, 3) uint8 at the segment centres of the span [start, end),
    decoded as a stream that keeps only those frames. Where the file holds another number of
    frames than it declares, it is counted first and decoded again."""
    sampling = Sampling(start=start, end=end)
    declared = expected_frames(probe(video), sampling)
    if declared:
        kept, total = _pick(video, sampling, resize, segment_centres(declared, count))
        if total == declared:
            return np.stack([kept[i] for i in segment_centres(declared, count)])
    _, total = _pick(video, sampling, resize, np.zeros(0, np.int64))
    if not total:
        raise ActAlignError(f"{video}: no frames in the chosen span.")
    kept, _ = _pick(video, sampling, resize, segment_centres(total, count))
    return np.stack([kept[i] for i in segment_centres(total, count)])


def _pick(video, sampling: Sampling, resize, wanted: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
    """The frames at indices `wanted` of the span, and how many frames it has."""
    want, kept, seen = set(wanted.tolist()), {}, 0
    for batch in iter_frames(video, sampling, resize=resize):
        for frame in batch.frames:
            if seen in want:
                kept[seen] = frame
            seen += 1
    return kept, seen


@dataclass
class Baseline:
    """One of the paper's peers: kind "xclip" (its video-text logits) or "vlm" (a video LLM's
    multiple-choice answer; in process also every candidate's log-likelihood)."""

    name: str
    kind: str
    spec: str
    settings: dict = field(default_factory=dict)
    template: str = XCLIP_TEMPLATE
    seconds: float = 0.0  # time spent in this run (model calls and its decoding)
    clips: int = 0
    _model: object = field(default=None, repr=False)

    @classmethod
    def xclip(
        cls, spec: str, name: str | None = None, template: str = XCLIP_TEMPLATE, **settings
    ) -> Baseline:
        return cls(name or f"X-CLIP ({spec})", "xclip", spec, settings, template)

    @classmethod
    def vlm(cls, spec: str, name: str | None = None, **settings) -> Baseline:
        return cls(name or f"VLM ({spec})", "vlm", spec, settings)

    @property
    def model(self):
        if self._model is None:
            if self.kind == "xclip":
                from actalign.baselines.xclip import XClip

                self._model = XClip(self.spec, **self.settings)
            else:
                from actalign.baselines.vlm import load_vlm

                self._model = load_vlm(self.spec, **self.settings)
        return self._model

    def record(self) -> dict:
        """What a run's configuration records of this baseline."""
        out = {"name": self.name, "method": self.kind, "model": self.spec, **self.settings}
        if self.kind == "xclip":
            out["template"] = self.template
        return out

    @property
    def parameters(self) -> int | None:
        return getattr(self.model, "parameters", None)

    def _frames(self, video, start, end) -> np.ndarray:
        m = self.model
        count = m.num_frames if self.kind == "xclip" else m.frames
        resize = getattr(m, "decode_size", None) if self.kind == "xclip" else None
        return clip_frames(video, count, start, end, resize)

    def scores(self, video, candidates: list[str], domain: str, start=None, end=None, question=None):
        """(scores (M,) or None, ranking best first (indices), the VLM's result or None)."""
        t0 = time.perf_counter()
        try:
            frames = self._frames(video, start, end)
            if self.kind == "xclip":
                texts = [self.template.format(action=a, domain=domain) for a in candidates]
                s = self.model.score(frames, texts)
                return s, [int(i) for i in rank(s)], None
            result = self.model.rank(list(frames), question, candidates, domain)
            return result.loglik, result.ranking, result
        finally:
            self.seconds += time.perf_counter() - t0
            self.clips += 1

    def predict(
        self, video, candidates: list[str], domain: str, start=None, end=None, question=None
    ) -> Prediction:
        """A ranked Prediction (no segments). A VLM on a server ranks only its answer; a miss (an
        answer naming no candidate) ranks none: every candidate gets score 0 and the message says so."""
        scores, ranking, result = self.scores(video, candidates, domain, start, end, question)
        if scores is None:  # a server VLM: the answer is the whole ranking
            scores = np.zeros(len(candidates))
            if ranking:
                scores[ranking[0]] = 1.0
            ranking = ranking + [i for i in range(len(candidates)) if i not in ranking]
        results = [CandidateResult(candidates[i], float(scores[i]), r) for r, i in enumerate(ranking, 1)]
        settings = self.record()
        if result is not None:
            settings.update(frames=result.frames, image_size=result.image_size, mode=result.mode)
            settings["answer"] = result.answer_text
        return Prediction(
            str(video), domain, self.kind, results, np.zeros(0), start=start, end=end, settings=settings
        )

    def entry(self, clip) -> dict:
        """A batch row's entry for this baseline: scores in the candidates' order (when it has
        them) and the answer's rank; a server VLM's miss or wrong answer beyond top-1 is null."""
        candidates = list(clip.candidates)
        scores, ranking, result = self.scores(
            clip.video, candidates, clip.domain, clip.start, clip.end, getattr(clip, "question", None)
        )
        entry: dict = {"scores": None if scores is None else [round(float(s), 9) for s in scores]}
        if result is not None:
            entry["answer"] = result.answer
            entry["answer_text"] = result.answer_text
            if result.answer is None:
                entry["miss"] = True
        if clip.answer is not None:
            entry["rank"] = ranking.index(clip.answer) + 1 if clip.answer in ranking else None
            if scores is None:
                entry["top1_only"] = True
        return entry
