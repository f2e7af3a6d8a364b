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

from actalign.baselines.common import segment_centres
from actalign.errors import ActAlignError
from actalign.score import CandidateResult, Prediction, rank
from actalign.video import Sampling, expected_frames, iter_frames, probe

XCLIP_TEMPLATE = "{action}"  # X-CLIP's class texts: the action's name, as its zero-shot evaluation


def clip_frames(
    video, count: int, start: float | None, end: float | None, resize, indices=segment_centres
) -> np.ndarray:
    """`count` frames (count, H, W, 3) uint8 of the span [start, end) at `indices(n, count)` of its
    n decoded frames (default the segment centres; ActionAtlas's protocol gives its linspace),
    decoded as a stream that keeps only those frames. Where the file holds another number of
    frames than it declares, it is counted first and decoded again."""
    sampling = Sampling(start=start, end=end)
    declared = expected_frames(probe(video), sampling)
    if declared:
        kept, total = _pick(video, sampling, resize, indices(declared, count))
        if total == declared:
            return np.stack([kept[i] for i in indices(declared, count)])
    _, total = _pick(video, sampling, resize, np.zeros(0, np.int64))
    if not total:
        raise ActAlignError(f"{video}: no frames in the chosen span.")
    kept, _ = _pick(video, sampling, resize, indices(total, count))
    return np.stack([kept[i] for i in indices(total, count)])


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
        """What a run's configuration records of this baseline: for a VLM its protocol, frames
        and sizes as they will be used, and the server it asks (base URL and model), so that a run
        resumed with another protocol or against another server is refused."""
        out = {"name": self.name, "method": self.kind, "model": self.spec, **self.settings}
        if self.kind == "xclip":
            out["template"] = self.template
            return out
        from actalign.baselines.vlm import parse_vlm_spec, server_identity, vlm_settings

        keys = ("protocol", "frames", "image_size")
        out.update(vlm_settings(self.spec, *(self.settings.get(k) for k in keys)))
        kind, where = parse_vlm_spec(self.spec)
        if kind == "server":
            out["server"] = server_identity(where, self.settings.get("base_url"))
        return out

    @property
    def top1_only(self) -> bool:
        """Whether this baseline names one answer and no ranking (a VLM under "actionatlas", or on a
        server under either protocol)."""
        if self.kind != "vlm":
            return False
        from actalign.baselines.vlm import check_protocol, parse_vlm_spec

        protocol = check_protocol(self.settings.get("protocol"))
        return protocol == "actionatlas" or parse_vlm_spec(self.spec)[0] == "server"

    @property
    def parameters(self) -> int | None:
        return getattr(self.model, "parameters", None)

    def _frames(self, video, start, end) -> np.ndarray:
        m = self.model
        if self.kind == "xclip":
            return clip_frames(video, m.num_frames, start, end, getattr(m, "decode_size", None))
        return clip_frames(video, m.frames, start, end, None, m.frame_indices)

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
        """A Prediction (no segments). A top-1-only VLM (ActionAtlas's protocol, or a server) ranks
        its answer alone, score 1; a miss (an answer naming no choice) ranks no candidate at all.
        The settings keep the answer as the model wrote it (escaped)."""
        scores, ranking, result = self.scores(video, candidates, domain, start, end, question)
        if scores is None:  # top-1 only: the answer is the whole ranking
            scores = np.zeros(len(candidates))
            if ranking:
                scores[ranking[0]] = 1.0
        results = [CandidateResult(candidates[i], float(scores[i]), r) for r, i in enumerate(ranking, 1)]
        settings = {**self.record(), **self.runs_on()}
        if self.kind == "xclip":
            seen, kind = self.model.num_frames, "logit"
        else:
            seen, kind = result.frames, ("answer" if result.loglik is None else "loglik")
        if result is not None:
            settings.update(frames=result.frames, image_size=result.image_size, mode=result.mode)
            if result.max_pixels is not None:
                settings["max_pixels"] = result.max_pixels
            settings["answer"] = kept_answer(result.answer_text)
            settings["answered"] = None if result.answer is None else candidates[result.answer]
        return Prediction(
            str(video),
            domain,
            self.kind,
            results,
            np.zeros(0),
            start=start,
            end=end,
            settings=settings,
            frames_seen=int(seen),
            score_kind=kind,
        )

    def runs_on(self) -> dict:
        """The device and dtype the loaded model runs in (a server's: "server", its own dtype)."""
        m = self.model
        device, dtype = getattr(m, "device", None), getattr(m, "dtype", None)
        if device is None:  # a model behind an OpenAI-compatible server
            return {"device": "server", "dtype": "server"}
        return {"device": str(device), "dtype": str(dtype).removeprefix("torch.")}

    def entry(self, clip) -> dict:
        """A batch row's entry for this baseline: scores in the candidates' order (when it has
        them) and the answer's rank; a server VLM's miss or wrong answer beyond top-1 is null."""
        from actalign.baselines.vlm import VLMAnswerError

        candidates = list(clip.candidates)
        try:
            scores, ranking, result = self.scores(
                clip.video, candidates, clip.domain, clip.start, clip.end, getattr(clip, "question", None)
            )
        except VLMAnswerError as e:  # no usable reply: wrong, as ActionAtlas counts it, and an error
            entry = {"scores": None, "answer": None, "error": str(e)}
            if clip.answer is not None:
                entry["rank"] = None
                if self.top1_only:
                    entry["top1_only"] = True
            return entry
        entry: dict = {"scores": None if scores is None else [round(float(s), 9) for s in scores]}
        if result is not None:
            entry["answer"] = result.answer
            entry["answer_text"] = kept_answer(result.answer_text)
            if result.answer is None:
                entry["miss"] = True
        if clip.answer is not None:
            entry["rank"] = ranking.index(clip.answer) + 1 if clip.answer in ranking else None
            if scores is None:
                entry["top1_only"] = True
        return entry


def kept_answer(text: str) -> str:
    """A model's answer as a row or an output keeps it: escaped (control characters, bidi overrides
    as Python escapes), at most ANSWER_KEPT characters (the rest counted)."""
    from actalign.baselines.vlm import ANSWER_KEPT
    from actalign.text import printable

    text = str(text)
    if len(text) > ANSWER_KEPT:
        text = f"{text[:ANSWER_KEPT]}... ({len(text) - ANSWER_KEPT} more characters)"
    return printable(text)
