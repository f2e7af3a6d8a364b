"""Scoring in the runner: from one clip's frame embeddings to its output row, for every method of
a run, through the one scoring unit (`actalign.score.score`).

`Scorer.prepare` resolves every clip's scripts (failing fast when some are missing) and embeds
every distinct text of the run once; after that a Scorer is plain data (picklable, so the Ray
engine ships it to its workers) and `Scorer.row` needs no model.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from actalign.candidates import norm
from actalign.embed import VideoEmbedding, embed_text_groups
from actalign.errors import ActAlignError
from actalign.runner.plan import Clip
from actalign.score import Calibration, Method, Prediction, score

__all__ = [
    "SCRIPTS_FILE",
    "Scored",
    "Scorer",
    "check_recorded",
    "primary_method",
    "script_hash",
    "script_key",
]

SCRIPTS_FILE = "scripts.json"  # the scripts a run used, in its folder


def script_hash(steps: Sequence[str]) -> str:
    """A short hash naming one version of a script (its steps, in order)."""
    import hashlib

    return hashlib.blake2b(json.dumps(list(steps), ensure_ascii=False).encode(), digest_size=5).hexdigest()


def script_key(strategy: str, domain: str, action: str) -> str:
    """How a run's scripts.json names a script: strategy|domain|action (names compared as norm)."""
    return f"{strategy}|{norm(domain)}|{norm(action)}"


def check_recorded(recorded: dict, where: str) -> dict:
    """A run's scripts.json ({script_key: {"steps", ...}}) whose every script is valid as a scripts
    file's is (a non-empty list of non-empty steps, each text), or one sentence naming the first
    entry that is not: recorded steps are used as they are, never split or guessed."""
    from actalign.scripts.parse import validate_steps

    for key, entry in recorded.items():
        if not isinstance(entry, dict) or "steps" not in entry:
            problem = "is not a recorded script (an object with its steps)"
        else:
            _, problems = validate_steps(str(key).rsplit("|", 1)[-1], entry["steps"], None)
            if not problems:
                continue
            problem = f"is invalid: {problems[0]}"
        raise ActAlignError(
            f"{where} is damaged: its entry {str(key)[:80]!r} {problem}; restore the file or start a "
            "new `out` folder."
        )
    return recorded


def primary_method(methods: Sequence[Method]) -> Method:
    """The method whose ranked predictions a row carries: the paper's ActAlign (global alignment;
    of a ladder the full rung, of several strategies the first), else the last method."""
    actalign = [m for m in methods if m.kind == "actalign"]
    if not actalign:
        return methods[-1]
    first_strategy = actalign[0].strategy
    same = [m for m in actalign if m.strategy == first_strategy]
    global_ = [m for m in same if m.alignment == "global"]
    return (global_ or same)[-1]


@dataclass
class Scored:
    """What an engine yields for a clip it did: its predictions by method name (ranked, with
    segments; no per-frame arrays), its frame count, where its frames start and end (seconds),
    and the decoder's warnings."""

    clip: Clip
    predictions: dict[str, Prediction]
    frames: int
    start: float
    end: float
    warnings: list[str] = field(default_factory=list)


class Scorer:
    """Scores clips for `methods` (see the module docstring)."""

    def __init__(self, methods: Sequence[Method], calibration: Calibration, fps: float | None = None) -> None:
        if not methods:
            raise ActAlignError("A run needs at least one method.")
        self.methods = list(methods)
        self.calibration = calibration
        self.fps = fps
        self.primary = primary_method(self.methods).name
        self.scripts: dict[tuple[str, str, str], list[str]] = {}  # (strategy, domain, action) -> steps
        self.vectors: dict[str, np.ndarray] = {}
        self.hashes: dict[tuple[str, str, str], str] = {}  # (strategy, domain, action) -> script hash

    # ------------------------------------------------------------------ preparation

    def prepare(
        self,
        clips: Sequence[Clip],
        sources: dict,
        encoder,
        cache=None,
        recorded: dict | None = None,
        keep_recorded: bool = False,
    ) -> dict:
        """Resolve the scripts of every clip and embed every text the run needs, once.

        sources: a ScriptSource per strategy named by the methods. Missing scripts raise here,
        before any video is decoded. recorded: the scripts this run used before (from its folder,
        `script_key` -> {"steps", "hash", "origin"}): they are used again, never asked of the LLM
        again, and one that now reads differently from the files or the store refuses the run
        (unless keep_recorded). Returns the records of the scripts first used now.
        """
        recorded = recorded or {}
        fresh: dict[str, dict] = {}
        wanted: dict[tuple[str, str], list[str]] = {}
        for m in self.methods:
            if m.kind != "actalign":
                continue
            if m.strategy not in sources:
                raise ActAlignError(f"No script source for the strategy {m.strategy!r}.")
            for c in clips:
                actions = wanted.setdefault((m.strategy, c.domain), [])
                actions += [a for a in c.candidates if a not in actions]
        for (strategy, domain), actions in wanted.items():
            source = sources[strategy]
            new = []
            for action in actions:
                old = recorded.get(script_key(strategy, domain, action))
                if old is None:
                    new.append(action)
                    continue
                now = None if keep_recorded else source.offline(domain, action)
                if now is not None and list(now[0]) != list(old["steps"]):
                    raise ActAlignError(
                        f"The script of {action!r} in {domain!r} ({strategy}) is not the one this run "
                        f"used (recorded in its folder's {SCRIPTS_FILE}): put the recorded steps back, "
                        "pass `recorded_scripts` to keep using them, or start a new `out`."
                    )
                self._use(strategy, domain, action, list(old["steps"]))
            for action, (steps, origin) in (source.get_with_origin(domain, new) if new else {}).items():
                fresh[script_key(strategy, domain, action)] = {
                    "strategy": strategy,
                    "domain": domain,
                    "action": action,
                    "steps": list(steps),
                    "hash": script_hash(steps),
                    "origin": origin,
                }
                self._use(strategy, domain, action, list(steps))
        groups: dict[str, list[str]] = {}
        for c in clips:
            for m in self.methods:
                for texts in m.texts(c.domain, self._steps(c, m)):
                    groups.setdefault(self._group_key(texts), texts)
        keys = list(groups)
        if keys:
            for key, vecs in zip(keys, embed_text_groups(encoder, [groups[k] for k in keys], cache)):
                for i, v in enumerate(vecs):
                    self.vectors[self._vector_key(key, groups[key], i)] = v
        return fresh

    def _use(self, strategy: str, domain: str, action: str, steps: list[str]) -> None:
        self.scripts[(strategy, norm(domain), norm(action))] = steps
        self.hashes[(strategy, norm(domain), norm(action))] = script_hash(steps)

    def _vector_key(self, group_key: str, texts: list[str], i: int) -> str:
        if self.calibration.text_encoding == "authors":
            return f"{group_key}#{i}"
        return texts[i]

    def _steps(self, clip: Clip, m: Method) -> dict[str, list[str]]:
        """{action: steps} of a clip's candidates (mean-pool: no steps)."""
        if m.kind == "mean-pool":
            return {a: [] for a in clip.candidates}
        try:
            return {a: self.scripts[(m.strategy, norm(clip.domain), norm(a))] for a in clip.candidates}
        except KeyError as e:
            raise ActAlignError(f"No scripts prepared for {e.args[0][2]!r} in {clip.domain!r}.") from None

    def _group_key(self, texts: list[str]) -> str:
        """Texts are embedded alone ("trained"), or as one group ("authors"): the key says which."""
        if self.calibration.text_encoding == "authors":
            return json.dumps(texts)
        return "\x1f".join(texts)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        key = self._group_key(texts)
        return np.stack([self.vectors[self._vector_key(key, texts, i)] for i in range(len(texts))])

    # ------------------------------------------------------------------ scoring

    def predict(self, clip: Clip, emb: VideoEmbedding, m: Method) -> Prediction:
        """One method's prediction for one clip."""
        steps = self._steps(clip, m)
        vectors = m.assign(clip.candidates, [self._vectors(t) for t in m.texts(clip.domain, steps)])
        return score(str(clip.video), clip.domain, emb, vectors, m, self.calibration, steps)

    def score(self, clip: Clip, emb: VideoEmbedding, warnings: Sequence[str] = ()) -> Scored:
        """One clip by every method: its predictions (per-frame arrays dropped: they travel
        between processes), with what its row needs of the embedding."""
        predictions = {}
        for m in self.methods:
            pred = self.predict(clip, emb, m)
            for c in pred.candidates:
                c.affinity = None
            predictions[m.name] = pred
        said = list(warnings) or list(emb.warnings)
        first = float(emb.timestamps[0]) if len(emb.timestamps) else 0.0
        return Scored(clip, predictions, len(emb.timestamps), first, float(emb.end), said)

    def row(self, scored: Scored) -> dict:
        """The output row of one scored clip: per method its scores in the candidates' order (and
        the answer's rank when known), and the primary method's ranked predictions with segments.
        Only the run folder's writer makes rows."""
        clip = scored.clip
        methods, predictions = {}, []
        candidates = list(clip.candidates)
        for m in self.methods:
            pred = scored.predictions[m.name]
            entry = {"scores": [round(float(s), 9) for s in pred.scores_in(candidates)]}
            if m.kind == "actalign":  # which version of each script produced these scores
                entry["scripts"] = {
                    a: self.hashes[(m.strategy, norm(clip.domain), norm(a))] for a in candidates
                }
            if clip.answer is not None:
                entry["rank"] = pred.rank_of(candidates[clip.answer])
                if m.kind == "actalign":
                    entry["span"] = self._answer_span(pred, candidates[clip.answer], scored)
            methods[m.name] = entry
            if m.name == self.primary:
                predictions = [c.to_dict() for c in pred.candidates]
        row = {
            "id": clip.id,
            "video": str(clip.video),
            "domain": clip.domain,
            "candidates": candidates,
            "start": clip.start,
            "end": clip.end,
            "frames": scored.frames,
            "predictions": predictions,
            "methods": methods,
        }
        if clip.answer is not None:
            row["answer"] = clip.answer
        if clip.span is not None:
            row["span"] = list(clip.span)
        if scored.warnings:
            row["warnings"] = list(scored.warnings)
        return row

    @staticmethod
    def _answer_span(pred, answer: str, scored: Scored) -> list[float]:
        """Where the correct candidate was placed: its detected span (subsequence) or the whole
        window (global), in seconds."""
        c = next(c for c in pred.candidates if c.action == answer)
        span = c.span if c.span is not None else (scored.start, scored.end)
        return [round(span[0], 3), round(span[1], 3)]

    def record(self) -> dict:
        """What the configuration records of the methods."""
        return {"methods": [m.record() for m in self.methods], "primary": self.primary}


ScoreFn = Callable[[Clip, VideoEmbedding], dict]
