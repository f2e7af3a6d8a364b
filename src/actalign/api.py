"""The front door: `ActAlign`, holding one `Config`, for a notebook as much as for the CLI.

    from actalign import ActAlign
    aa = ActAlign(model="siglip-base", fps=4)                      # any Config field, or ActAlign(config)
    pred = aa.classify("clip.mp4", ["Tip-in", "Putback dunk"], domain="basketball")
    pred.top.action, pred.top.score, pred.top.segments             # when each step happened
    hits = aa.locate("match.mp4", ["Putback dunk"], domain="basketball")
    hits = aa.search("archive.idx", ["Putback dunk"], domain="basketball")   # an `actalign.index`
    for p in aa.run("clips.jsonl", out="runs/x"): ...               # Predictions (and Failures)
    summary = aa.evaluate("clips.jsonl", ladder=True)              # top-1/2/3 per method

The encoder is loaded on first use and kept, as are the embedding cache and the script source.
Scripts come from where the CLI gets them: `scripts=` (a file, files, or a {domain: {action:
steps}} dict), then the store (`$ACTALIGN_HOME`), then the LLM the Config or the environment
names (`ACTALIGN_LLM`, `OPENAI_BASE_URL`, `OPENAI_API_KEY`), whose scripts are stored.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from actalign.classify import Pipeline, VideoInput
from actalign.config import Config
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.locate import DEFAULT_FPS, DEFAULT_NMS, DEFAULT_WINDOW_SECONDS, Detection, check_search, locate
from actalign.runner.plan import Plan
from actalign.score import CandidateResult, Prediction, Segment

__all__ = ["ActAlign", "Failure", "RecordedEncoder", "prediction_from_row"]


@dataclass(frozen=True)
class Failure:
    """A clip of `ActAlign.run` that could not be done: its id, video and one sentence."""

    id: str | None
    video: str | None
    reason: str


class ActAlign:
    """Zero-shot classification of videos among candidate actions by script alignment.

    ActAlign(config) or ActAlign(model=..., **config_fields); `model` may also be an encoder
    object (anything with `encode_images`, `encode_texts`, `identity`, `scale`, `bias`) for one of
    your own. scripts: a scripts JSON file (or several), or a {domain: {action: [steps]}} dict;
    they win over the store and the LLM. encoder: an encoder already loaded (shared by several
    front doors; default: the Config's model, loaded on first use). cache: an `EmbeddingCache`, or
    False for none (default: the Config's `cache_dir` / `no_cache`).
    """

    def __init__(
        self,
        config: Config | str | object | None = None,
        scripts: str | os.PathLike | Sequence | dict | None = None,
        *,
        encoder=None,
        cache: EmbeddingCache | bool | None = None,
        **fields,
    ) -> None:
        if isinstance(config, Config):
            base = config
        elif config is None or isinstance(config, (str, os.PathLike)):
            base = Config(**({"model": str(config)} if config is not None else {}))
        elif hasattr(config, "encode_images"):
            encoder, base = config, Config()
        else:
            raise ActAlignError(f"ActAlign takes a Config, a model name or an encoder, not {config!r}.")
        model = fields.get("model")
        if model is not None and not isinstance(model, (str, os.PathLike)):
            encoder = fields.pop("model")
        hand: dict | None = None
        if isinstance(scripts, dict):
            hand = scripts
        elif scripts is not None:
            fields["scripts"] = _paths(scripts)
        self.config = base.replace(**fields) if fields else base
        self._encoder = encoder
        self._hand = hand
        self._scripts: dict[str, object] = {}
        if cache is None or cache is True:
            self.cache = self.config.cache()
        else:
            self.cache = cache or None

    def __repr__(self) -> str:
        c = self.config
        return f"ActAlign(model={c.model!r}, method={c.method!r}, alignment={c.alignment!r}, fps={c.fps})"

    # ------------------------------------------------------------------ what it is made of

    @property
    def encoder(self):
        """The encoder, loaded on first use and kept."""
        if self._encoder is None:
            self._encoder = self.config.encoder()
        return self._encoder

    def scripts(self, strategy: str | None = None):
        """The script source of a strategy (default: the Config's): `scripts=` first, then the
        Config's files, the store and the LLM writer. Made once per strategy."""
        strategy = strategy or self.config.strategy
        if strategy not in self._scripts:
            source = self.config.script_source(strategy)
            if self._hand is not None:
                source.hand = [self._hand, *source.hand]
            self._scripts[strategy] = source
        return self._scripts[strategy]

    def pipeline(self, **changes) -> Pipeline:
        """The one-video pipeline of this Config (with `changes` to its fields)."""
        config = self.config.replace(**changes) if changes else self.config
        scripts = self.scripts(config.strategy) if config.method == "actalign" else None
        return Pipeline(config, self.encoder, scripts, self.cache)

    # ------------------------------------------------------------------ one video

    def classify(
        self,
        video: VideoInput,
        candidates: Sequence[str],
        domain: str | None = None,
        start: float | None = None,
        end: float | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> Prediction:
        """Rank `candidates` for one video: a path, or (frames (T, H, W, 3) uint8, fps).

        start/end: seconds of the video (default: the Config's, else all of it). on_total(n) and
        on_frames(k): progress callbacks (expected frame count; frames encoded since the last).
        """
        pipe = self.pipeline()
        pipe.preprocess(candidates, domain)  # scripts: one sentence before any model loads
        start = self.config.start if start is None else start
        end = self.config.end if end is None else end
        return pipe.classify(video, candidates, domain, start, end, on_frames, on_total)

    def classify_many(
        self,
        videos: Sequence[VideoInput],
        candidates: Sequence[str],
        domain: str | None = None,
        on_error: str = "raise",
    ) -> list[Prediction | ActAlignError]:
        """`classify` for many videos in this process, with the same candidates: scripts resolved
        and embedded once. on_error="keep" puts a failed video's ActAlignError in its place."""
        if on_error not in ("raise", "keep"):
            raise ActAlignError("on_error must be 'raise' or 'keep'.")
        pipe = self.pipeline()
        candidates, domain, scripts = pipe.preprocess(candidates, domain)
        vectors = pipe.text_vectors(domain, scripts)
        out: list[Prediction | ActAlignError] = []
        for video in videos:
            try:
                emb = pipe.embed(video, self.config.start, self.config.end)
                out.append(pipe.postprocess(str(video), domain, emb, vectors, scripts))
            except ActAlignError as e:
                if on_error == "raise":
                    raise
                out.append(e)
        return out

    def locate(
        self,
        video: VideoInput,
        candidates: Sequence[str],
        domain: str | None = None,
        start: float | None = None,
        end: float | None = None,
        min_score: float | None = None,
        nms: float = DEFAULT_NMS,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        top: int | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> list[Detection]:
        """Every occurrence of each candidate in a (long) video, best first (`actalign.locate`):
        subsequence alignment at the Config's fps (default 2), `top` per action at most."""
        check_search(nms, min_score, window_seconds)
        pipe = self.pipeline(method="actalign", alignment="subsequence", fps=self.config.fps or DEFAULT_FPS)
        pipe.preprocess(candidates, domain)
        start = self.config.start if start is None else start
        end = self.config.end if end is None else end
        found = locate(
            pipe,
            video,
            candidates,
            (domain or "").strip(),
            start=start,
            end=end,
            min_score=min_score,
            nms=nms,
            window_seconds=window_seconds,
            on_frames=on_frames,
            on_total=on_total,
        )
        if top is None:
            return found
        kept, per_action = [], {}
        for d in found:  # best first
            per_action[d.action] = per_action.get(d.action, 0) + 1
            if per_action[d.action] <= top:
                kept.append(d)
        return kept

    def locate_settings(self, **search) -> dict:
        """The `settings` block of locate's JSON: the Config's record plus the search's values."""
        config = self.config.replace(
            method="actalign", alignment="subsequence", fps=self.config.fps or DEFAULT_FPS
        )
        return {**config.record(self.encoder), **search}

    def search(
        self,
        index,
        candidates: Sequence[str],
        domain: str | None = None,
        top: int | None = 20,
        min_score: float | None = None,
        nms: float = DEFAULT_NMS,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ):
        """Every occurrence of each candidate across an archive index (`actalign.index.Index`, or
        its folder), best first, `top` in all: per video what `locate` finds there, from the
        index's frames. Scripts come from where `classify` gets them; template and smoothing are
        this Config's; the model and sampling are the index's."""
        from actalign.index import Index

        check_search(nms, min_score, window_seconds)
        if not isinstance(index, Index):
            index = Index.open(index, config=self.config, model=self._encoder, cache=self.cache or False)
        source = self.scripts()
        source.get((domain or "").strip(), candidates)  # scripts: one sentence before any frame is read
        return index.search(
            candidates,
            domain,
            scripts=source,
            top=top,
            min_score=min_score,
            nms=nms,
            window_seconds=window_seconds,
        )

    def search_settings(self, index, candidates: Sequence[str], **search) -> dict:
        """The `settings` block of search's JSON: the Config's record under the index's model and
        sampling, the index's path, model identity and precision, the candidates, and the search's
        values (window_seconds, nms, min_score, top)."""
        model = index.catalogue["model"]
        config = self.config.replace(
            method="actalign",
            alignment="subsequence",
            fps=index.fps,
            model=index.model_name,
            dtype=model.get("dtype") or self.config.dtype,  # the precision the frames were embedded in
            text_encoding=model.get("text_encoding", "trained"),
        )
        return {
            **config.record(),
            "model_identity": index.catalogue["model"]["identity"],
            "index": str(index.root),
            "candidates": list(candidates),
            "precision": index.precision,
            **search,
        }

    # ------------------------------------------------------------------ many clips

    def plan(
        self, clips, domain: str | None = None, candidates: Sequence[str] | None = None, answers=False
    ) -> Plan:
        """The clips of a run: a manifest path (.jsonl), a list of manifest rows (dicts), or
        videos (paths, folders, globs) with `domain` and `candidates`."""
        from actalign.runner.plan import load_manifest, plan_rows, plan_videos

        if isinstance(clips, Plan):
            return clips
        if isinstance(clips, (str, os.PathLike)) and str(clips).lower().endswith((".jsonl", ".json")):
            return load_manifest(clips, require_answer=answers)
        if isinstance(clips, (str, os.PathLike)):
            clips = [clips]
        clips = list(clips)
        if clips and all(isinstance(c, dict) for c in clips):
            return plan_rows(clips, require_answer=answers)
        if not domain or not candidates:
            raise ActAlignError("Give domain and candidates with videos (or give manifest rows).")
        return plan_videos(
            [str(c) for c in clips], domain, list(candidates), self.config.start, self.config.end
        )

    def check_scripts(self, plan: Plan, methods, limit: int | None = None) -> dict:
        """A script source per strategy the methods name, with every clip's scripts found (or
        generated) now, before any model loads."""
        sources = {}
        wanted: dict[tuple[str, str], list[str]] = {}
        for m in methods:
            if m.kind != "actalign":
                continue
            sources[m.strategy] = self.scripts(m.strategy)
            for c in plan.clips[:limit]:
                actions = wanted.setdefault((m.strategy, c.domain), [])
                actions += [a for a in c.candidates if a not in actions]
        for (strategy, domain), actions in wanted.items():
            sources[strategy].get(domain, actions)
        return sources

    def run(
        self,
        clips,
        out: str | os.PathLike | None = None,
        engine: str | None = None,
        workers: int | None = None,
        domain: str | None = None,
        candidates: Sequence[str] | None = None,
        limit: int | None = None,
        recorded_scripts: bool = False,
        progress: bool = False,
    ) -> Iterator[Prediction | Failure]:
        """Classify many clips, yielding a `Prediction` per clip (its `id` set, ranked candidates
        with segments; no per-frame arrays) or a `Failure`, as clips finish.

        clips: a manifest path, manifest rows (dicts), or videos with `domain` and `candidates`.
        out: a run folder, written and resumable (finished clips are yielded from it again);
        None: a temporary one, removed afterwards. engine/workers: the Config's unless given.
        """
        from actalign.runner import stream

        plan = self.plan(clips, domain, candidates)
        methods = [self.config.scoring()]
        encoder = self._encoder_for(out, plan, methods)
        sources = self.check_scripts(plan, methods, limit)
        with _folder(out) as folder:
            items = stream(
                plan,
                encoder,
                sources,
                folder,
                methods,
                **self._run_options(engine, workers, limit, recorded_scripts, progress),
            )
            by_id = {c.id: c for c in plan.clips}
            yielded = set()
            while True:
                try:
                    item = next(items)
                except StopIteration as done:
                    result = done.value
                    break
                yielded.add(item.get("id"))
                yield _item(item, self.config)
            for row in result.rows:  # done in an earlier run of this folder
                if row["id"] not in yielded and row["id"] in by_id:
                    yield _item(row, self.config)

    def batch(self, clips, out: str | os.PathLike, **options):
        """A whole run into a run folder, as `actalign batch`: the runner's `RunResult`."""
        from actalign.runner import run

        plan = self.plan(clips, options.pop("domain", None), options.pop("candidates", None))
        methods = [self.config.scoring()]
        limit = options.pop("limit", None)
        encoder = self._encoder_for(out, plan, methods)
        sources = self.check_scripts(plan, methods, limit)
        return run(
            plan,
            encoder,
            sources,
            str(out),
            methods,
            **self._run_options(
                options.pop("engine", None),
                options.pop("workers", None),
                limit,
                options.pop("recorded_scripts", False),
                options.pop("progress", True),
            ),
            **options,
        )

    def evaluate(
        self,
        manifest,
        out: str | os.PathLike | None = None,
        ladder: bool = False,
        local: bool = False,
        strategies: Sequence[str] | None = None,
        table2: bool = False,
        baselines: Sequence = (),
        limit: int | None = None,
        recorded_scripts: bool = False,
        progress: bool = False,
        engine: str | None = None,
        workers: int | None = None,
    ) -> dict:
        """Top-1/2/3 per method on a manifest whose rows name their answer: the summary that
        `actalign eval` writes as summary.json (per method, per domain, with the cost of each).

        ladder: the paper's Table 3 rungs; local: ActAlign with subsequence alignment beside it;
        strategies: ActAlign per script strategy (Table 4); table2: the Table 2 rows; baselines:
        X-CLIP / VLM peers (`actalign.baselines.predict.Baseline`). out: the run folder (None: a
        temporary one).
        """
        from actalign.eval.evaluate import evaluate, methods_for

        plan = self.plan(manifest, answers=True)
        methods = methods_for(self.config, ladder=ladder, local=local, strategies=strategies, table2=table2)
        if len(set(strategies or [])) > 1 and self.config.scripts:
            raise ActAlignError(
                "Scripts files win over every strategy, so comparing strategies would compare the "
                "same scripts; drop the scripts files (their scripts then come from the store or "
                "the LLM, per strategy)."
            )
        if out is not None:  # another configuration: refused before any model loads
            from actalign.runner import known_record
            from actalign.runner.output import RunFolder

            RunFolder(str(out)).precheck(known_record(plan, methods, self.config.fps, self._record()))
        sources = self.check_scripts(plan, methods, limit)
        for b in baselines:
            # loaded (or its server's settings checked) once, before the first clip: a baseline that
            # cannot run at all is one sentence, not a failure per clip and a table of n/a
            b.model  # noqa: B018
        from actalign.eval.datasets import coverage

        where = manifest if isinstance(manifest, (str, os.PathLike)) else getattr(manifest, "source", "")
        dataset = coverage(where) if where else None  # ActionAtlas: how many of its clips could be had
        with _folder(out) as folder:
            return evaluate(
                plan,
                self.encoder,
                sources,
                folder,
                methods,
                dataset=dataset,
                baselines=list(baselines),
                **self._run_options(engine, workers, limit, recorded_scripts, progress),
            )

    def _encoder_for(self, out, plan: Plan, methods):
        """The encoder of a run into `out`. A folder holding another configuration is refused here,
        before any model loads; one whose recorded model and precision this Config gives gets a
        `RecordedEncoder`, which loads the model only when there is something to encode (a
        finished run is checked, resumed and reported without it)."""
        if out is None or self._encoder is not None:
            return self.encoder
        from actalign.runner import known_record
        from actalign.runner.output import RunFolder

        old = RunFolder(str(out)).precheck(known_record(plan, methods, self.config.fps, self._record()))
        dtype = self._dtype()
        if old is None or dtype is None or old.get("dtype") != dtype:
            return self.encoder
        try:
            return RecordedEncoder(old, lambda: self.encoder)
        except (KeyError, TypeError, ValueError):  # a record without what an encoder says of itself
            return self.encoder

    def _dtype(self) -> str | None:
        """The precision runs will have: the loaded encoder's, else the Config's expectation."""
        if self._encoder is not None:
            return getattr(self._encoder, "dtype_name", None)
        return self.config.expected_dtype()

    def _record(self) -> dict:
        """What a run folder's configuration records of the Config beyond methods and encoder."""
        return {"model": self.config.model, "template": self.config.template}

    def _run_options(self, engine, workers, limit, recorded_scripts, progress) -> dict:
        c = self.config
        return {
            "fps": c.fps,
            "limit": limit,
            "engine": engine or c.engine,
            "workers": c.workers if workers is None else workers,
            "cache": self.cache,
            "record": self._record(),
            "ray_address": c.ray_address,
            "recorded_scripts": recorded_scripts,
            "progress": progress,
        }


class RecordedEncoder:
    """An encoder as a run folder's configuration records it (identity, precision, calibration,
    decoded size): enough to check and resume the run. The model itself is loaded (`load()`) only
    when something asks for more, to encode; its identity must then be the recorded one."""

    def __init__(self, record: dict, load) -> None:
        self.identity = str(record["model_identity"])
        self.dtype_name = record["dtype"]
        self.scale = float(record["scale"])
        self.bias = None if record["bias"] is None else float(record["bias"])
        self.text_encoding = record["text_encoding"]
        size = record["decode_size"]
        self.decode_size = tuple(size) if isinstance(size, list) else size
        self._load = load

    def __getattr__(self, name: str):
        real = self._load()
        if real.identity != self.identity:
            raise ActAlignError(
                f"The model's weights or precision changed since this run began ({self.identity} -> "
                f"{real.identity}); use a new `out` folder (or delete this one)."
            )
        return getattr(real, name)


@contextlib.contextmanager
def _folder(out):
    if out is not None:
        yield str(out)
        return
    with tempfile.TemporaryDirectory(prefix="actalign-run-") as tmp:
        yield str(Path(tmp) / "run")


def _item(item: dict, config: Config) -> Prediction | Failure:
    if "predictions" not in item:
        return Failure(item.get("id"), item.get("video"), item.get("reason", ""))
    return prediction_from_row(item, config.record())


def prediction_from_row(row: dict, settings: dict | None = None) -> Prediction:
    """The `Prediction` of a run folder's row (ranked candidates with segments and spans; no
    per-frame arrays: `timestamps` is empty, `path` and `affinity` None)."""
    import numpy as np

    candidates = [
        CandidateResult(
            c["action"],
            float(c["score"]),
            int(c["rank"]),
            steps=[s["step"] for s in c.get("segments", [])],
            segments=[Segment(s["step"], float(s["start"]), float(s["end"])) for s in c.get("segments", [])],
            span=(c["span"]["start"], c["span"]["end"]) if c.get("span") else None,
        )
        for c in row["predictions"]
    ]
    method = (settings or {}).get("method", "actalign")
    pred = Prediction(
        row["video"],
        row["domain"],
        method,
        candidates,
        np.zeros(0),
        alignment=(settings or {}).get("alignment", "global"),
        start=row.get("start"),
        end=row.get("end"),
        settings=dict(settings or {}),
        warnings=list(row.get("warnings", [])),
    )
    pred.id = row["id"]
    return pred


def _paths(scripts) -> tuple[str, ...]:
    if isinstance(scripts, (str, os.PathLike)):
        return (str(scripts),)
    return tuple(str(s) for s in scripts)
