"""Scoring: from one clip's frame embeddings to its output row, for every method of a run.

`Scorer.prepare` resolves every clip's scripts (failing fast when some are missing) and embeds
every distinct text of the run once; after that a Scorer is plain data (picklable, so the Ray
engine ships it to its workers) and `Scorer.row` needs no model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from actalign.classify import DEFAULT_TEMPLATE, ActAlign
from actalign.embed import VideoEmbedding, embed_text_groups
from actalign.errors import ActAlignError
from actalign.exports import candidate_dict
from actalign.runner.plan import Clip
from actalign.scripts.parse import norm


@dataclass(frozen=True)
class Method:
    """One way of scoring a clip: the mean-pool baseline, or ActAlign with a step template,
    smoothing, a script strategy and an alignment mode."""

    name: str
    method: str = "actalign"  # or "mean-pool"
    template: str = DEFAULT_TEMPLATE
    smooth_seconds: float = 1.0
    strategy: str = "context-rich"
    alignment: str = "global"


@dataclass(frozen=True)
class Calibration:
    """What scoring needs of an encoder: the Eq. 9 calibration and how texts were encoded."""

    identity: str
    scale: float
    bias: float | None
    text_encoding: str = "trained"


def primary_method(methods: Sequence[Method]) -> Method:
    """The method whose ranked predictions a row carries: the paper's ActAlign (global alignment;
    of a ladder the full rung, of several strategies the first), else the last method."""
    actalign = [m for m in methods if m.method == "actalign"]
    if not actalign:
        return methods[-1]
    first_strategy = actalign[0].strategy
    same = [m for m in actalign if m.strategy == first_strategy]
    global_ = [m for m in same if m.alignment == "global"]
    return (global_ or same)[-1]


class Scorer:
    """Scores clips for `methods` (see the module docstring)."""

    def __init__(self, methods: Sequence[Method], calibration: Calibration, fps: float | None = None) -> None:
        if not methods:
            raise ActAlignError("A run needs at least one method.")
        self.methods = list(methods)
        self.calibration = calibration
        self.pipes = {
            m.name: ActAlign(
                calibration,
                {},
                fps=fps,
                smooth_seconds=m.smooth_seconds,
                template=m.template,
                method=m.method,
                cache=False,
                alignment=m.alignment,
            )
            for m in self.methods
        }
        for pipe in self.pipes.values():
            pipe.scripts = None  # a plain-data Scorer: scripts live in self.scripts
        self.primary = primary_method(self.methods).name
        self.scripts: dict[tuple[str, str, str], list[str]] = {}  # (strategy, domain, action) -> steps
        self.vectors: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ preparation

    def prepare(self, clips: Sequence[Clip], sources: dict, encoder, cache=None) -> None:
        """Resolve the scripts of every clip and embed every text the run needs, once.

        sources: a ScriptSource per strategy named by the methods. Missing scripts raise here,
        before any video is decoded.
        """
        wanted: dict[tuple[str, str], list[str]] = {}
        for m in self.methods:
            if m.method != "actalign":
                continue
            if m.strategy not in sources:
                raise ActAlignError(f"No script source for the strategy {m.strategy!r}.")
            for c in clips:
                actions = wanted.setdefault((m.strategy, c.domain), [])
                actions += [a for a in c.candidates if a not in actions]
        for (strategy, domain), actions in wanted.items():
            for action, steps in sources[strategy].get(domain, actions).items():
                self.scripts[(strategy, norm(domain), norm(action))] = list(steps)
        groups: dict[str, list[str]] = {}
        for c in clips:
            for m in self.methods:
                texts = self._texts(c, m)
                groups.setdefault(self._group_key(texts), texts)
        keys = list(groups)
        if not keys:
            return
        for key, vecs in zip(keys, embed_text_groups(encoder, [groups[k] for k in keys], cache)):
            for i, v in enumerate(vecs):
                self.vectors[self._vector_key(key, groups[key], i)] = v

    def _vector_key(self, group_key: str, texts: list[str], i: int) -> str:
        if self.calibration.text_encoding == "authors":
            return f"{group_key}#{i}"
        return texts[i]

    def _steps(self, clip: Clip, m: Method) -> dict[str, list[str]]:
        try:
            return {a: self.scripts[(m.strategy, norm(clip.domain), norm(a))] for a in clip.candidates}
        except KeyError as e:
            raise ActAlignError(f"No scripts prepared for {e.args[0][2]!r} in {clip.domain!r}.") from None

    def _texts(self, clip: Clip, m: Method) -> list[str]:
        pipe = self.pipes[m.name]
        if m.method == "mean-pool":
            return [pipe.mean_pool_template.format(domain=clip.domain, action=a) for a in clip.candidates]
        return [t for group in pipe.step_texts(self._steps(clip, m), clip.domain) for t in group]

    def _group_key(self, texts: list[str]) -> str:
        """Texts are embedded alone ("trained"), or as one group ("authors"): the key says which."""
        if self.calibration.text_encoding == "authors":
            return json.dumps(texts)
        return "\x1f".join(texts)

    def _embedded_groups(self, clip: Clip, m: Method) -> list[np.ndarray]:
        pipe = self.pipes[m.name]
        if m.method == "mean-pool":
            texts = self._texts(clip, m)
            return [self._vectors(texts)]
        groups = pipe.step_texts(self._steps(clip, m), clip.domain)
        return [self._vectors(g) for g in groups]

    def _vectors(self, texts: list[str]) -> np.ndarray:
        key = self._group_key(texts)
        return np.stack([self.vectors[self._vector_key(key, texts, i)] for i in range(len(texts))])

    # ------------------------------------------------------------------ scoring

    def row(self, clip: Clip, emb: VideoEmbedding, warnings: Sequence[str] = ()) -> dict:
        """The output row of one clip: per method its scores in the candidates' order (and the
        answer's rank when known), and the primary method's ranked predictions with segments."""
        from actalign.eval.metrics import rank_of_answer

        methods, predictions = {}, []
        candidates = list(clip.candidates)
        for m in self.methods:
            pipe = self.pipes[m.name]
            if m.method == "mean-pool":
                (texts,) = self._embedded_groups(clip, m)
                pred = pipe.classify_mean_pool(str(clip.video), emb, candidates, clip.domain, texts=texts)
            else:
                steps = self._embedded_groups(clip, m)
                pred = pipe.classify_embedding(str(clip.video), emb, self._steps(clip, m), clip.domain, steps)
            by_action = {c.action: c.score for c in pred.candidates}
            scores = [by_action[a] for a in candidates]
            entry = {"scores": [round(float(s), 9) for s in scores]}
            if clip.answer is not None:
                entry["rank"] = rank_of_answer(scores, clip.answer)
                if m.method == "actalign":
                    entry["span"] = self._answer_span(pred, candidates[clip.answer], emb)
            methods[m.name] = entry
            if m.name == self.primary:
                predictions = [candidate_dict(c) for c in pred.candidates]
        row = {
            "id": clip.id,
            "video": str(clip.video),
            "domain": clip.domain,
            "candidates": candidates,
            "start": clip.start,
            "end": clip.end,
            "frames": len(emb.timestamps),
            "predictions": predictions,
            "methods": methods,
        }
        if clip.answer is not None:
            row["answer"] = clip.answer
        if clip.span is not None:
            row["span"] = list(clip.span)
        if warnings:
            row["warnings"] = list(warnings)
        return row

    @staticmethod
    def _answer_span(pred, answer: str, emb: VideoEmbedding) -> list[float]:
        """Where the correct candidate was placed: its detected span (subsequence) or the whole
        window (global), in seconds."""
        c = next(c for c in pred.candidates if c.action == answer)
        span = c.span if c.span is not None else (float(emb.timestamps[0]), float(emb.end))
        return [round(span[0], 3), round(span[1], 3)]

    def record(self) -> dict:
        """What the configuration records of the methods (for mean-pool only what it uses)."""
        methods = []
        for m in self.methods:
            if m.method == "mean-pool":
                methods.append(
                    {"name": m.name, "method": m.method, "prompt": self.pipes[m.name].mean_pool_template}
                )
            else:
                methods.append(asdict(m))
        return {"methods": methods, "primary": self.primary}


ScoreFn = Callable[[Clip, VideoEmbedding], dict]
