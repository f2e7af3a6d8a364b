"""The library calls behind the page and the API: settings, samples, scripts, classification, and
the search of an archive index.

Needs no Gradio."""

from __future__ import annotations

import io
import json
import logging
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actalign.candidates import candidates_from_text, check_candidates, norm
from actalign.candidates import check_domain as _check_domain
from actalign.config import Config
from actalign.errors import ActAlignError
from actalign.score import Prediction
from actalign.scripts.parse import validate_steps

log = logging.getLogger("actalign.app")
MB = 1024 * 1024  # the upload limit's unit, as Gradio counts it


@dataclass(frozen=True)
class AppSettings(Config):
    """What `actalign app` was started with: the one `Config` of the CLI, plus the page's own
    fields."""

    max_upload_mb: float = 500.0
    samples: str | None = None  # a manifest (JSONL) whose clips the page offers as samples
    index: str | None = None  # an archive index (`actalign index build`) the Search tab searches


@dataclass(frozen=True)
class Sample:
    """A clip the page offers: its video, domain, candidates and, when known, the answer."""

    id: str
    video: str
    domain: str
    candidates: tuple[str, ...]
    answer: str | None = None
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Search:
    """One search of the index: the domain, the hits best first, the `settings` block of
    `actalign search --format json`, and the warnings it gave (a damaged shard skipped)."""

    domain: str
    hits: list
    settings: dict
    warnings: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Exactly what `actalign search INDEX --format json` prints for the same search."""
        from actalign.exports import format_hits

        return format_hits("json", self.hits, self.settings, domain=self.domain)


@dataclass(frozen=True)
class HitView:
    """What the Search tab shows of a hit's video: its file (None: no file to show), a JPEG
    thumbnail of the frame at the hit's start (None: no frame there), and one sentence when the
    file cannot be shown."""

    file: str | None
    thumbnail: bytes | None
    problem: str | None = None


# --------------------------------------------------------------------------- parsing


def parse_candidates(text: str | None) -> list[str]:
    """Candidates from the page's box or an API call: one per line, under the one rule of
    `actalign.candidates` (as the CLI's --candidates-file)."""
    if text is not None and not isinstance(text, str):
        raise ActAlignError(f"The candidates must be text, one per line, got {text!r}.")
    names = candidates_from_text(text)
    if not names:
        raise ActAlignError("No candidate actions given; write them one per line.")
    return check_candidates(names)


def steps_from_text(action: str, text: str) -> list[str]:
    """The steps in an editor box (one per line), validated like a scripts file."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    steps, problems = validate_steps(action, lines, None)
    if problems:
        raise ActAlignError(f"The script of {action!r} has a problem: {problems[0]}.")
    return steps


def parse_scripts_json(text: str | None, domain: str) -> dict[str, list[str]]:
    """{action: steps} from JSON text: either {action: [steps]} or a scripts file's
    {domain: {action: [steps]}} (only `domain` is used). Empty text: no scripts."""
    if not text or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ActAlignError(f"The scripts are not valid JSON ({e.msg} at line {e.lineno}).") from None
    if not isinstance(data, dict):
        raise ActAlignError('The scripts must be a JSON object: {"action": ["step", ...]}.')
    if data and all(isinstance(v, dict) for v in data.values()):
        data = next((v for d, v in data.items() if norm(d) == norm(domain)), {})
    out: dict[str, list[str]] = {}
    for action, steps in data.items():
        cleaned, problems = validate_steps(action, steps, None)
        if problems:
            raise ActAlignError(f"The scripts have a problem: {problems[0]}.")
        out[action] = cleaned
    return out


def parse_top(value) -> int:
    """How many hits to keep: a whole number of at least 1 (the CLI's --top); None: its default."""
    from actalign.index import DEFAULT_TOP

    if value is None:
        return DEFAULT_TOP
    whole = isinstance(value, (int, float)) and not isinstance(value, bool) and float(value).is_integer()
    if not whole or value < 1:
        raise ActAlignError(f"Top must be a whole number of hits, at least 1, got {value!r}.")
    return int(value)


def parse_search_options(window_seconds=None, nms=None, min_score=None) -> dict:
    """The search's window (seconds), overlap (IoU) and score floor, as the page or /search gives
    them (None: the CLI's defaults, and no floor), in the sentences the page shows."""
    from actalign.locate import DEFAULT_NMS, DEFAULT_WINDOW_SECONDS

    def number(value, name: str, default):
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ActAlignError(f"{name} must be a number, got {value!r}.")
        return float(value)

    window = number(window_seconds, "Window", DEFAULT_WINDOW_SECONDS)
    overlap = number(nms, "NMS", DEFAULT_NMS)
    floor = number(min_score, "Min score", None)
    if not window > 0:
        raise ActAlignError(f"Window must be a positive number of seconds, got {window:g}.")
    if not 0 <= overlap < 1:
        raise ActAlignError(f"NMS must be an overlap (IoU) from 0 up to (not including) 1, got {overlap:g}.")
    if floor is not None and not 0 <= floor <= 1:
        raise ActAlignError(f"Min score must be from 0 to 1 (scores are means of affinities), got {floor:g}.")
    return {"window_seconds": window, "nms": overlap, "min_score": floor}


def load_samples(manifest: str | None) -> list[Sample]:
    """The clips of a manifest as samples; rows that cannot be used are logged and skipped."""
    if not manifest:
        return []
    from actalign.runner.plan import load_manifest

    plan = load_manifest(manifest)
    for failure in plan.failures:
        log.warning("sample manifest %s: %s", manifest, failure["reason"])
    return [
        Sample(
            c.id,
            str(c.video),
            c.domain,
            c.candidates,
            c.candidates[c.answer] if c.answer is not None else None,
            c.start,
            c.end,
        )
        for c in plan.clips
        if c.video.is_file()
    ]


# --------------------------------------------------------------------------- engine


class Engine:
    """The library calls behind the page and the API: one encoder per model setting, loaded on
    first use and reused; scripts from files, the store and the LLM; classification."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self._encoders: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        self.samples = {s.id: s for s in load_samples(settings.samples)}
        self._trusted = {str(Path(s.video).resolve()) for s in self.samples.values()}
        # the index is read on a thread of its own: its text cache is SQLite, whose connections
        # must not cross the server's threads
        self._index_thread = ThreadPoolExecutor(1, "actalign-index") if settings.index else None
        self.index = self._on_index_thread(open_index, settings)
        # the only files of the machine the page serves (Gradio reads this list at each request)
        self.served: list[str] = []
        self._serve_current_files()

    def _serve_current_files(self) -> None:
        """Bring `served` up to date, in place: the sample videos and the files the index names
        that are there now (after a search, which reads the catalogue again if it changed)."""
        self.served[:] = sorted(self._trusted | set(self.indexed_files()))

    def _on_index_thread(self, fn, *args):
        """fn(*args) on the index's thread (None without an index); its exception, if any."""
        if self._index_thread is None:
            return None
        return self._index_thread.submit(fn, *args).result()

    def close(self) -> None:
        """End the index's thread."""
        if self._index_thread is not None:
            self._index_thread.shutdown(wait=False)

    def encoder(self, model: str | None = None):
        """The encoder for `model` (default: the app's), loaded once and kept (at most two)."""
        key = model or self.settings.model
        with self._lock:
            if key not in self._encoders:
                if len(self._encoders) >= 2:
                    self._encoders.pop(next(iter(self._encoders)))
                self._encoders[key] = self.settings.replace(model=key).encoder()
            return self._encoders[key]

    def cache(self):
        """The embedding cache, as the CLI makes it (None with --no-cache)."""
        return self.settings.cache()

    @contextmanager
    def source(self, need_writer: bool = False):
        """The CLI's ScriptSource (files, store, the --llm / $ACTALIGN_LLM writer), for one request:
        SQLite connections must not cross the server's threads; the writer is made once."""
        from actalign.scripts import ScriptStore

        store = ScriptStore(self.settings.store)
        try:
            yield self.settings.script_source(need_writer=need_writer, store=store)
        finally:
            store.close()

    def lookup(self, domain: str, actions: list[str]) -> dict[str, list[str] | None]:
        """{action: steps or None} from the scripts files and the store; never calls an LLM."""
        from actalign.scripts import ScriptSource

        with self.source() as src:
            offline = ScriptSource((), src.store, None, self.settings.strategy)
            offline.hand = src.hand
            found: dict[str, list[str] | None] = {}
            for action in actions:
                try:
                    found[action] = offline.get(domain, [action])[action]
                except ActAlignError:
                    found[action] = None
            return found

    def generate(self, domain: str, actions: list[str]) -> dict[str, list[str]]:
        """Scripts for `actions`: files and store first, the configured LLM for the rest (stored)."""
        if not actions:
            return {}
        with self.source(need_writer=True) as src:
            return src.get(check_domain(domain), actions)

    def resolve(self, domain: str, candidates: list[str], given: dict[str, list[str]]) -> dict:
        """{action: steps} for every candidate: `given` first, then files, store and the LLM."""
        chosen = {c: steps for c in candidates if (steps := _find(given, c))}
        missing = [c for c in candidates if c not in chosen]
        if missing:
            with self.source() as src:
                if src.writer is not None:  # as the CLI: stored for this LLM, else generated
                    chosen.update(src.get(domain, missing))
                    missing = []
        if missing:
            found = self.lookup(domain, missing)
            absent = [a for a in missing if not found[a]]
            if absent:
                raise ActAlignError(
                    f"No script for {', '.join(repr(a) for a in absent)} in {domain!r}: write "
                    "its steps (one per line) under Scripts, or configure an LLM to generate it."
                )
            chosen.update(found)
        return {c: chosen[c] for c in candidates}

    def check_video(self, path: str | None) -> None:
        """One sentence when the input is missing, too large or not a video."""
        from actalign.video import probe

        if not path:
            raise ActAlignError("Choose a sample or upload a video first.")
        size = Path(path).stat().st_size if Path(path).is_file() else 0
        limit = self.settings.max_upload_mb
        if size > limit * MB and str(Path(path).resolve()) not in self._trusted:  # samples are the host's
            raise ActAlignError(
                f"The video is {size / MB:.1f} MB, over this app's limit of {limit:g} MB "
                "(actalign app --max-upload-mb)."
            )
        probe(path)

    def classify(
        self,
        video: str,
        domain: str,
        candidates: list[str],
        start: float | None = None,
        end: float | None = None,
        fps: float | None = None,
        smooth: float | None = None,
        alignment: str | None = None,
        scripts: dict[str, list[str]] | None = None,
        model: str | None = None,
        on_frames: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
    ) -> Prediction:
        """Rank `candidates` for one video as `actalign classify` does; None settings are the
        app's. `scripts` ({action: steps}) win over the files, the store and the LLM."""
        s = self.settings
        domain = check_domain(domain)
        candidates = check_candidates(candidates)
        self.check_video(video)
        steps = self.resolve(domain, candidates, scripts or {})
        from actalign.api import ActAlign

        config = s.replace(
            model=model or s.model,
            fps=s.fps if fps is None else (fps or None),
            smooth=s.smooth if smooth is None else smooth,
            alignment=alignment or s.alignment,
            method="actalign",
        )
        front = ActAlign(config, {domain: steps}, encoder=self.encoder(model), cache=self.cache() or False)
        return front.classify(video, candidates, domain, start, end, on_frames, on_total)

    def search(
        self,
        domain: str,
        candidates: list[str],
        top: int | float | None = None,
        scripts: dict[str, list[str]] | None = None,
        window_seconds: float | None = None,
        nms: float | None = None,
        min_score: float | None = None,
    ) -> Search:
        """Every occurrence of `candidates` across the app's index, best first, `top` in all, as
        `actalign search` finds them; `scripts` ({action: steps}) win over the files, the store
        and the LLM; window_seconds, nms, min_score: as `actalign search --window --nms
        --min-score` (None: its defaults)."""
        if self.index is None:
            raise ActAlignError("This app has no index to search; start it with --index INDEX.")
        domain, candidates, top = check_domain(domain), check_candidates(candidates), parse_top(top)
        options = parse_search_options(window_seconds, nms, min_score)
        return self._on_index_thread(self._search, domain, candidates, top, scripts, options)

    def _search(
        self, domain: str, candidates: list[str], top: int, scripts: dict | None, options: dict
    ) -> Search:
        """`search` with checked values, on the index's thread: the one front door's search, its
        warnings kept."""
        from actalign.api import ActAlign
        from actalign.scripts import MissingScripts

        front = ActAlign(self.settings, {domain: scripts} if scripts else None, cache=self.cache() or False)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                hits = front.search(self.index, candidates, domain, top=top, **options)
        except MissingScripts as e:
            raise ActAlignError(
                f"No scripts for {', '.join(repr(a) for a in e.missing)} in {domain!r}: give them as JSON "
                f'in the scripts box ({{"{e.missing[0]}": ["first step", "second step"]}}), or start the '
                "app with --scripts FILE or --llm SPEC."
            ) from None
        finally:
            front.scripts().store.close()  # SQLite connections must not cross the server's threads
            self._serve_current_files()  # videos added or removed since: served or not from now on
        settings = front.search_settings(self.index, candidates, **options, top=top)
        return Search(domain, hits, settings, tuple(str(w.message) for w in caught))

    def indexed_files(self) -> list[str]:
        """The files the index names that are there now (the only ones the Search tab plays)."""
        if self.index is None:
            return []
        named = (self.video_file(name) for name in self.index.videos)
        return sorted({str(Path(f).resolve()) for f in named if f and Path(f).is_file()})

    def video_file(self, name: str) -> str | None:
        """The file of an indexed video (None: it was indexed from embeddings, without one)."""
        entry = self.index.videos.get(name) if self.index is not None else None
        return (entry or {}).get("path")

    def view(self, hit) -> HitView:
        """A hit's file and thumbnail, or one sentence saying why its video cannot be shown."""
        file = self.video_file(hit.video)
        if file is None:
            return HitView(None, None, f"{hit.video} was indexed from embeddings: there is no file to show.")
        if not Path(file).is_file():
            return HitView(
                None, None, f"{Path(file).name} is gone since it was indexed; this hit comes from the index."
            )
        return HitView(file, thumbnail(file, hit.start))


def open_index(settings: AppSettings):
    """The archive index of --index (None without one), read once; one sentence when it does not
    exist or its catalogue is damaged."""
    if not settings.index:
        return None
    from actalign.index import Index

    index = Index.open(settings.index, config=settings, cache=settings.cache() or False)
    try:
        index.info()  # reads every entry of the catalogue
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ActAlignError(
            f"The index {settings.index} is damaged: its catalogue is not as `actalign index build` "
            "writes it; build the index again."
        ) from None
    return index


THUMB_EDGE = 90  # pixels on the shorter side of a hit's thumbnail


def thumbnail(video: str, seconds: float) -> bytes | None:
    """A JPEG of the frame at `seconds` of `video`, decoded by the project's decoder (the shorter
    side THUMB_EDGE pixels); None when no frame can be decoded there."""
    from PIL import Image

    from actalign.video import Sampling, iter_frames

    frames = iter(iter_frames(video, Sampling(start=max(0.0, seconds)), batch_size=1, resize=THUMB_EDGE))
    try:
        with warnings.catch_warnings():  # one frame by design: no notes on the rest of the video
            warnings.simplefilter("ignore")
            batch = next(frames, None)
    except (ActAlignError, OSError):
        return None
    finally:
        frames.close()
    if batch is None:
        return None
    out = io.BytesIO()
    Image.fromarray(batch.frames[0]).save(out, "JPEG", quality=85)
    return out.getvalue()


def check_domain(domain: str | None) -> str:
    """The domain, stripped; one sentence when it is empty, not text or holds control characters
    (the one rule of `actalign.candidates`)."""
    return _check_domain(domain)


def _find(scripts: dict[str, list[str]], action: str) -> list[str] | None:
    return next((steps for a, steps in scripts.items() if norm(a) == norm(action) and steps), None)


# --------------------------------------------------------------------------- HTML
