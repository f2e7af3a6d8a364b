"""`actalign app`: a web page (Gradio) and an API over the same library calls as the CLI.

The page: pick a sample or upload a video (optionally a start and end in seconds), give the domain
and the candidates (one per line); the scripts of those candidates appear, one editable box each
(from --scripts files, then the script store, or written by the configured LLM at a click). A run
shows the ranking, the winning script's steps as a timeline under the video (a click on a step
seeks the video there), the Figure 4 heatmaps, and the JSON, CSV and WebVTT downloads.

The API (`gradio_client.Client(url).predict(handle_file(video), domain, candidates,
api_name="/classify")`) returns exactly what `actalign classify VIDEO --format json` prints for the
same settings; `/scripts` and `/generate_scripts` look scripts up or write them.

Errors are one sentence in the page (or one `gradio.Error` for API callers), never a traceback:
the traceback of an unexpected failure goes to the server's log only. The model is loaded once per
model setting and reused by every request; embeddings are cached as in the CLI.

Gradio is an optional extra (`pip install 'actalign[app]'`) and is imported only by the functions
that build and launch the page; the rest of this module (the engine and the HTML it renders) does
not need it.
"""

from __future__ import annotations

import html
import itertools
import json
import logging
import shutil
import tempfile
import threading
import time
import typing
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actalign.classify import DEFAULT_TEMPLATE, Prediction
from actalign.encoders import DEFAULT_MODEL, MODELS
from actalign.errors import ActAlignError
from actalign.scripts.parse import norm, validate_steps

log = logging.getLogger("actalign.app")

INSTALL_HINT = "The app needs Gradio, an optional extra: pip install 'actalign[app]'."
GENERIC_ERROR = "Something went wrong on the server; its log has the details."
MAX_EDITORS = 16  # candidates the page shows script boxes for (the API takes any number)
MB = 1024 * 1024  # the upload limit's unit, as Gradio counts it
KEEP_RUNS = 32  # result folders kept on disk (Gradio serves copies from its own cache)
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]


@dataclass
class AppSettings:
    """What `actalign app` was started with: the model, script sources and default settings."""

    model: str = DEFAULT_MODEL
    scripts: tuple[str, ...] = ()  # hand-written scripts files; they win over stored ones
    store: str | None = None
    strategy: str = "context-rich"
    llm_model: str | None = None
    llm_base_url: str | None = None
    device: str | None = None
    dtype: str | None = None
    batch_size: int | None = None
    text_encoding: str = "trained"
    compile: bool = False
    cache_dir: str | None = None
    no_cache: bool = False
    template: str = DEFAULT_TEMPLATE
    fps: float | None = None
    smooth: float = 1.0
    alignment: str = "global"
    max_upload_mb: float = 500.0
    samples: str | None = None  # a manifest (JSONL) whose clips the page offers as samples


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


# --------------------------------------------------------------------------- parsing


def parse_candidates(text: str | None) -> list[str]:
    """Candidates from text, one per line ('#' lines are comments), checked as the CLI does."""
    from actalign.classify import check_candidates

    lines = (text or "").splitlines()
    names = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
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

    def encoder(self, model: str | None = None):
        """The encoder for `model` (default: the app's), loaded once and kept (at most two)."""
        from actalign.encoders import load_encoder

        s = self.settings
        key = (model or s.model, s.device, s.dtype, s.batch_size, s.text_encoding, s.compile)
        with self._lock:
            if key not in self._encoders:
                if len(self._encoders) >= 2:
                    self._encoders.pop(next(iter(self._encoders)))
                self._encoders[key] = load_encoder(
                    key[0],
                    device=s.device,
                    dtype=s.dtype,
                    batch_size=s.batch_size,
                    text_encoding=s.text_encoding,
                    compile=s.compile,
                )
            return self._encoders[key]

    def cache(self):
        """The embedding cache, as the CLI makes it (None with --no-cache)."""
        from actalign.encoders.cache import EmbeddingCache

        return None if self.settings.no_cache else EmbeddingCache(self.settings.cache_dir)

    @contextmanager
    def source(self, need_writer: bool = False):
        """A ScriptSource as the CLI builds it (files, store, LLM when configured), for one request:
        SQLite connections must not cross the server's threads."""
        from actalign.scripts import ScriptSource, ScriptStore
        from actalign.scripts.llm import LLMWriter, llm_configured

        s = self.settings
        writer = None
        if s.llm_base_url or s.llm_model or llm_configured() or need_writer:
            writer = LLMWriter(model=s.llm_model, base_url=s.llm_base_url)
        store = ScriptStore(s.store)
        try:
            yield ScriptSource(list(s.scripts), store, writer, s.strategy)
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
        from actalign.classify import ActAlign, check_candidates

        s = self.settings
        domain = check_domain(domain)
        candidates = check_candidates(candidates)
        self.check_video(video)
        steps = self.resolve(domain, candidates, scripts or {})
        pipeline = ActAlign(
            self.encoder(model),
            {domain: steps},
            fps=s.fps if fps is None else (fps or None),
            smooth_seconds=s.smooth if smooth is None else smooth,
            template=s.template,
            cache=self.cache() or False,
            alignment=alignment or s.alignment,
        )
        return pipeline.classify(video, candidates, domain, start, end, on_frames, on_total)


def check_domain(domain: str | None) -> str:
    """The domain, stripped; one sentence when it is empty."""
    if not domain or not domain.strip():
        raise ActAlignError("Give a domain, e.g. basketball.")
    return domain.strip()


def _find(scripts: dict[str, list[str]], action: str) -> list[str] | None:
    return next((steps for a, steps in scripts.items() if norm(a) == norm(action) and steps), None)


# --------------------------------------------------------------------------- HTML


def status_html(text: str, kind: str = "info", run: int = 0) -> str:
    """One line for the status box: kind is "info", "ok" or "error"; `run` numbers the page's
    runs (data-run), so that a repeated message still shows that a new run has ended."""
    icon = {"ok": "\u2713", "error": "\u2717"}.get(kind, "\u2139")
    return f'<div class="aa-status aa-{kind}" role="status" data-run="{run}">{icon} {html.escape(text)}</div>'


def ranking_html(pred: Prediction) -> str:
    """The ranking as a table: rank, action, score, a bar relative to the best (and the span)."""
    best = max((c.score for c in pred.candidates), default=1.0) or 1.0
    span = pred.alignment != "global"
    head = "<tr><th>#</th><th>action</th><th>score</th><th></th>" + ("<th>span</th>" if span else "")
    rows = []
    for c in pred.candidates:
        width = max(2.0, 100.0 * max(c.score, 0.0) / best)
        where = f"<td>{c.span[0]:.2f}\u2013{c.span[1]:.2f} s</td>" if span and c.span else ""
        rows.append(
            f'<tr class="{"aa-top" if c.rank == 1 else ""}"><td>{c.rank}</td>'
            f"<td>{html.escape(c.action)}</td><td>{c.score:.4f}</td>"
            f'<td class="aa-barcell"><div class="aa-bar" style="width:{width:.1f}%"></div></td>{where}</tr>'
        )
    return (
        '<div class="aa-head">Ranking (bars: score relative to the best)</div>'
        f'<table class="aa-rank"><thead>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def timeline_html(pred: Prediction) -> str:
    """The winner's steps, one row each: number, time, text and a bar on the clip's time axis.
    Each row carries data-start/data-end, which the page's script uses to seek the video."""
    top = pred.top
    if not top.segments:
        return '<div class="aa-empty">This method gives no step alignment.</div>'
    ts = pred.timestamps
    lo = float(ts[0]) if pred.start is None else min(float(pred.start), float(ts[0]))
    hi = max(float(ts[-1]), *(s.end for s in top.segments))
    length = max(hi - lo, 1e-6)
    rows = []
    for k, seg in enumerate(top.segments):
        left = 100.0 * (seg.start - lo) / length
        width = max(1.0, 100.0 * (seg.end - seg.start) / length)
        colour = PALETTE[k % len(PALETTE)]
        bar = f"left:{left:.2f}%;width:{min(width, 100 - left):.2f}%;background:{colour}"
        rows.append(
            f'<button type="button" class="aa-step" data-start="{seg.start:.3f}" data-end="{seg.end:.3f}" '
            f'title="Play from {seg.start:.2f} s">'
            f'<span class="aa-num" style="background:{colour}">{k + 1}</span>'
            f'<span class="aa-time">{seg.start:.2f}\u2013{seg.end:.2f} s</span>'
            f'<span class="aa-text">{html.escape(seg.step)}</span>'
            f'<span class="aa-track"><span class="aa-seg" style="{bar}"></span></span></button>'
        )
    span = f", found at {top.span[0]:.2f}\u2013{top.span[1]:.2f} s" if top.span else ""
    return (
        f'<div class="aa-timeline" data-lo="{lo:.3f}" data-hi="{hi:.3f}">'
        f'<div class="aa-head">Steps of <b>{html.escape(top.action)}</b> (score {top.score:.4f}{span}) '
        f"\u2014 click a step to jump there</div>{''.join(rows)}"
        f'<div class="aa-axis"><span>{lo:.2f} s</span><span>{hi:.2f} s</span></div></div>'
    )


TIMELINE_JS = """
const player = () => document.querySelector('#aa-video video');
element.addEventListener('click', (event) => {
  const step = event.target.closest('[data-start]');
  const video = player();
  if (!step || !video) return;
  video.currentTime = parseFloat(step.dataset.start);
});
document.addEventListener('timeupdate', (event) => {
  const video = event.target;
  if (!(video instanceof HTMLVideoElement) || !video.closest('#aa-video')) return;
  const t = video.currentTime;
  element.querySelectorAll('[data-start]').forEach((step) => {
    const on = t >= parseFloat(step.dataset.start) - 1e-3 && t < parseFloat(step.dataset.end);
    step.classList.toggle('aa-now', on);
  });
}, true);
"""

CSS = """
.aa-status { padding: 8px 12px; border-radius: 6px; font-size: 0.95em; }
.aa-ok { background: rgba(46, 160, 67, 0.12); border: 1px solid rgba(46, 160, 67, 0.5); }
.aa-error { background: rgba(215, 58, 73, 0.12); border: 1px solid rgba(215, 58, 73, 0.6); }
.aa-info { background: var(--block-background-fill); border: 1px solid var(--border-color-primary); }
.aa-empty { color: var(--body-text-color-subdued); padding: 6px 2px; font-size: 0.92em; }
.aa-rank { width: 100%; border-collapse: collapse; font-size: 0.95em; }
.aa-rank th, .aa-rank td { padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary);
  text-align: left; }
.aa-rank th { font-weight: 600; font-size: 0.9em; color: var(--body-text-color-subdued); }
.aa-rank tr.aa-top td { font-weight: 600; }
.aa-barcell { width: 35%; }
.aa-bar { height: 10px; border-radius: 5px; background: var(--color-accent); }
.aa-timeline { display: flex; flex-direction: column; gap: 4px; }
.aa-head { font-size: 0.95em; margin: 6px 0 4px; }
.aa-step { display: grid; grid-template-columns: 26px 104px 1fr; grid-template-rows: auto 8px;
  column-gap: 8px; row-gap: 3px; align-items: center; text-align: left; width: 100%;
  padding: 5px 8px; border: 1px solid var(--border-color-primary); border-radius: 6px;
  background: var(--block-background-fill); color: var(--body-text-color); cursor: pointer;
  font: inherit; font-size: 0.9em; }
.aa-step:hover, .aa-step.aa-now { border-color: var(--color-accent);
  box-shadow: 0 0 0 1px var(--color-accent); }
.aa-num { grid-row: 1 / span 2; width: 22px; height: 22px; border-radius: 11px; color: white;
  display: flex; align-items: center; justify-content: center; font-weight: 600; font-size: 0.85em; }
.aa-time { font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued); }
.aa-text { overflow: hidden; text-overflow: ellipsis; }
.aa-track { grid-column: 2 / span 2; position: relative; height: 8px; border-radius: 4px;
  background: var(--border-color-primary); }
.aa-seg { position: absolute; top: 0; height: 8px; border-radius: 4px; }
.aa-axis { display: flex; justify-content: space-between; font-size: 0.8em;
  color: var(--body-text-color-subdued); padding: 0 9px 0 43px; }
"""

INTRO = (
    "## actalign\n"
    "Zero-shot fine-grained action classification: each candidate action is a script of visible "
    "steps, aligned to the video frames by dynamic time warping; the best-aligned script wins, and "
    "its alignment says when each step happened."
)


# --------------------------------------------------------------------------- results


class Results:
    """A folder of result files per run (JSON, CSV, VTT, heatmap PNG), the oldest removed."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="actalign-app-"))
        self._count = 0
        self._lock = threading.Lock()

    def folder(self) -> Path:
        """A fresh folder for one run."""
        with self._lock:
            self._count += 1
            path = self.root / f"run-{self._count:06d}"
            old = self.root / f"run-{self._count - KEEP_RUNS:06d}"
        shutil.rmtree(old, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def write(self, pred: Prediction, video: str, answer: str | None) -> tuple[list[str], str]:
        """The downloads ([json, csv, vtt]) and the heatmap PNG of one prediction."""
        from actalign.exports import cues_as, prediction_cues, to_csv, to_json
        from actalign.viz import plot_prediction

        out = self.folder()
        stem = Path(pred.video).stem or "video"
        files = [out / f"{stem}.json", out / f"{stem}.csv"]
        files[0].write_text(to_json([pred]), encoding="utf-8")
        files[1].write_text(to_csv([pred]), encoding="utf-8")
        if pred.top.segments:
            files.append(out / f"{stem}.vtt")
            files[2].write_text(cues_as("vtt", prediction_cues(pred)), encoding="utf-8")
        plot = out / f"{stem}-heatmaps.png"
        answer = answer if answer and any(norm(c.action) == norm(answer) for c in pred.candidates) else None
        plot_prediction(pred, plot, answer=answer, video=video)
        return [str(f) for f in files], str(plot)

    def close(self) -> None:
        """Remove every result file."""
        shutil.rmtree(self.root, ignore_errors=True)


def _no_progress(*args, **kwargs) -> None:
    """A progress reporter that reports nothing."""


class _FrameProgress:
    """Frames encoded so far, reported to Gradio's progress bar."""

    def __init__(self, progress) -> None:
        self.progress, self.done, self.total = progress, 0, None

    def set_total(self, total: int | None) -> None:
        self.total = total

    def update(self, frames: int) -> None:
        self.done += frames
        self.progress((self.done, self.total), desc="Encoding frames", unit="frames")


def _message(error: BaseException, video: str | None) -> str:
    """The sentence a user sees: an ActAlignError's message with server paths shortened to the
    file's name; anything else becomes one generic sentence (its traceback goes to the log)."""
    if isinstance(error, ActAlignError):
        text = str(error)
        return text.replace(video, Path(video).name) if video else text
    log.error("unexpected error in the app", exc_info=error)
    return GENERIC_ERROR


# --------------------------------------------------------------------------- the page


def build_app(settings: AppSettings, engine: Engine | None = None):
    """The Gradio Blocks of the page and the API, not launched; `.actalign_results` holds the
    folder of result files, to remove when the app closes."""
    import gradio as gr

    page = _Page(settings, engine or Engine(settings))
    with gr.Blocks(title="actalign", analytics_enabled=False) as demo:
        page.layout()
        page.wire()
        _api(page.engine)
    demo.actalign_results = page.results
    demo.actalign_samples = list(page.samples.values())
    return demo


class _Page:
    """The page's components and the handlers of their events."""

    def __init__(self, settings: AppSettings, engine: Engine) -> None:
        self.settings, self.engine = settings, engine
        self.results = Results()
        self.samples = engine.samples
        self.models = list(dict.fromkeys([settings.model, *MODELS]))  # a page cannot load any other
        self._runs = itertools.count(1)

    # ------------------------------------------------------------------ layout

    def layout(self) -> None:
        """Place the components: video and results on the left, inputs on the right."""
        import gradio as gr

        gr.Markdown(INTRO)
        self.path = gr.State(None)  # the video to classify: the sample's or the upload's file
        self.answer = gr.State(None)  # the sample's correct candidate, marked in the heatmaps
        self.shown = gr.State({"domain": "", "actions": []})  # what the script boxes hold
        with gr.Row(equal_height=False):
            with gr.Column(scale=6):
                self._video_column()
            with gr.Column(scale=5):
                self._input_column()
        self.heatmaps = gr.Image(
            None,
            type="filepath",
            label="Alignment heatmaps (Figure 4)",
            visible=False,
            interactive=False,
            elem_id="aa-heatmaps",
        )

    def _video_column(self) -> None:
        import gradio as gr

        with gr.Row(equal_height=True):
            self.sample = gr.Dropdown(
                [(f"{s.id} \u2014 {s.domain}", s.id) for s in self.samples.values()],
                value=None,
                label="Sample",
                scale=3,
                visible=bool(self.samples),
                elem_id="aa-sample",
            )
            self.upload = gr.UploadButton(
                "Upload a video", file_types=None, scale=2, icon=None, elem_id="aa-upload"
            )
        self.video = gr.Video(label="Video", interactive=False, height=340, elem_id="aa-video")
        with gr.Row():
            self.start = gr.Number(
                0, label="Start (s)", info="0: the beginning", minimum=0, elem_id="aa-start"
            )
            self.end = gr.Number(
                0, label="End (s)", info="0: the end of the video", minimum=0, elem_id="aa-end"
            )
        self.timeline = gr.HTML(
            '<div class="aa-empty">After a run, the winning script\'s steps appear here; '
            "click one to jump there.</div>",
            js_on_load=TIMELINE_JS,
            apply_default_css=False,
            elem_id="aa-timeline",
        )
        self.ranking = gr.HTML("", apply_default_css=False, elem_id="aa-ranking")

    def _input_column(self) -> None:
        import gradio as gr

        self.domain = gr.Textbox(label="Domain", placeholder="e.g. basketball", elem_id="aa-domain")
        self.candidates = gr.Textbox(
            label="Candidate actions",
            info="one per line",
            lines=4,
            placeholder="Tip-in\nPutback dunk\nAlley-oop dunk",
            elem_id="aa-candidates",
        )
        with gr.Accordion("Scripts: the steps of each candidate", open=True):
            self.note = gr.Markdown(
                "Give a domain and candidates; their scripts appear here, one step per line.",
                elem_id="aa-scripts-note",
            )
            self.boxes = [
                gr.Textbox(visible=False, lines=3, max_lines=12, elem_id=f"aa-script-{i}")
                for i in range(MAX_EDITORS)
            ]
            with gr.Row():
                self.lookup_btn = gr.Button("Look up scripts", size="sm", elem_id="aa-lookup")
                self.generate_btn = gr.Button(
                    "Generate missing with the LLM", size="sm", elem_id="aa-generate"
                )
        self._settings_panel()
        self.run_btn = gr.Button("Classify", variant="primary", elem_id="aa-run")
        self.status = gr.HTML(status_html("Ready."), elem_id="aa-status")
        self.downloads = gr.File(
            label="Downloads", file_count="multiple", visible=False, interactive=False, elem_id="aa-downloads"
        )

    def _settings_panel(self) -> None:
        import gradio as gr

        s = self.settings
        with gr.Accordion("Settings", open=False):
            self.model = gr.Dropdown(
                self.models,
                value=s.model,
                label="Model",
                info="the app's --model or a short name (actalign models)",
                elem_id="aa-model",
            )
            with gr.Row():
                self.fps = gr.Number(
                    s.fps or 0, label="Frames per second", info="0: every frame", minimum=0, elem_id="aa-fps"
                )
                self.smooth = gr.Number(
                    s.smooth, label="Smoothing (s)", info="0: none", minimum=0, step=0.1, elem_id="aa-smooth"
                )
            self.alignment = gr.Radio(
                ["global", "subsequence"],
                value=s.alignment,
                label="Alignment",
                info="global: the script spans the clip; subsequence: find the action inside it",
            )

    # ------------------------------------------------------------------ events

    def wire(self) -> None:
        """Connect the events; none of them is part of the public API (see `_api`)."""
        import gradio as gr

        script_in = [self.domain, self.candidates, self.shown, *self.boxes]
        self.script_out = [self.shown, self.note, *self.boxes, self.status]
        # everything that fills the script boxes answers in the order it was asked: a lookup asked
        # when the domain is left (no candidates yet) must not land after the candidates' own
        in_order = {"api_visibility": "private", "concurrency_id": "scripts", "concurrency_limit": 1}
        gr.on(
            [self.candidates.blur, self.domain.blur, self.lookup_btn.click],
            self.refresh,
            script_in,
            self.script_out,
            trigger_mode="always_last",  # one listener: a trigger while it runs must not be dropped
            **in_order,
        )
        self.generate_btn.click(self.generate, script_in, self.script_out, **in_order)
        picked = [self.path, self.video, self.domain, self.candidates, self.start, self.end, self.answer]
        self.sample.input(self.pick, [self.sample], [*picked, *self.script_out], **in_order)
        self.upload.upload(
            self.uploaded,
            self.upload,
            [self.path, self.video, self.answer, self.status],
            api_visibility="private",
        )
        self.run_in = [
            self.path,
            self.domain,
            self.candidates,
            self.start,
            self.end,
            self.model,
            self.fps,
            self.smooth,
            self.alignment,
            self.answer,
            self.shown,
        ]

        def run(values: dict, progress=gr.Progress()) -> list:  # noqa: B008 - how Gradio reports progress
            return self.run(values, progress)

        self.run_btn.click(
            run,
            {*self.run_in, *self.boxes},
            [self.status, self.ranking, self.timeline, self.heatmaps, self.downloads],
            api_visibility="private",
            concurrency_id="model",
        )

    def _editors(self, domain: str, actions: list[str], texts: dict[str, str]) -> list:
        """Updates of the state, the note and every box to show `texts` of `actions`."""
        import gradio as gr

        updates = []
        for i in range(MAX_EDITORS):
            if i >= len(actions):
                updates.append(gr.update(visible=False, value=""))
                continue
            a, text = actions[i], texts.get(actions[i], "")
            updates.append(
                gr.update(
                    visible=True,
                    value=text,
                    label=a,
                    placeholder=f"No script found for {a}: write one visible step per line, or generate it.",
                )
            )
        missing = sum(1 for a in actions if not texts.get(a, "").strip())
        note = (
            f"No script found for {missing} of {len(actions)} candidates: write them (one visible step "
            "per line) or generate them with the LLM."
            if missing
            else "One visible step per line; edits apply to this page's runs."
        )
        if not actions:
            note = "Give a domain and candidates; their scripts appear here, one step per line."
        return [{"domain": domain, "actions": actions}, note, *updates]

    def _unchanged(self, state: dict, error: BaseException) -> list:
        import gradio as gr

        return [state, gr.update(), *[gr.update()] * MAX_EDITORS, status_html(_message(error, None), "error")]

    def refresh(self, domain: str, cands: str, state: dict, *texts: str) -> list:
        """Show the scripts of the candidates: the boxes' own texts where the user has them,
        else the files' and the store's."""
        import gradio as gr

        try:
            actions = parse_candidates(cands)[:MAX_EDITORS] if (cands or "").strip() else []
            keep = _box_texts(state, domain, texts)
            todo = [a for a in actions if a not in keep]
            found = self.engine.lookup(domain, todo) if (domain or "").strip() and todo else {}
            keep.update({a: "\n".join(s) for a, s in found.items() if s})
            return [*self._editors(domain, actions, keep), gr.update()]
        except Exception as e:
            return self._unchanged(state, e)

    def generate(self, domain: str, cands: str, state: dict, *texts: str) -> list:
        """Fill the empty boxes with scripts from the files, the store or the configured LLM."""
        try:
            actions = parse_candidates(cands)[:MAX_EDITORS]
            keep = _box_texts(state, domain, texts)
            fresh = self.engine.generate(domain, [a for a in actions if a not in keep])
            keep.update({a: "\n".join(s) for a, s in fresh.items()})
            return [*self._editors(domain, actions, keep), status_html("Scripts ready.", "ok")]
        except Exception as e:
            return self._unchanged(state, e)

    def pick(self, sample_id: str | None) -> list:
        """Fill the video, domain, candidates, start and end from a sample, and its scripts."""
        import gradio as gr

        s = self.samples.get(sample_id)
        if s is None:
            return [gr.update()] * (7 + len(self.script_out))
        cands = "\n".join(s.candidates)
        scripts = self.refresh(s.domain, cands, {"domain": "", "actions": []})
        return [s.video, s.video, s.domain, cands, s.start or 0, s.end or 0, s.answer, *scripts]

    def uploaded(self, path: str | None) -> list:
        """Check an upload at once and show it, or say in one sentence why it cannot be used."""
        try:
            self.engine.check_video(path)
        except Exception as e:
            return [None, None, None, status_html(_message(e, path), "error")]
        return [path, path, None, status_html(f"{Path(path).name} is ready.", "ok")]

    def run(self, values: dict, progress=None) -> list:
        """Classify, then show the status, ranking, timeline, heatmaps and downloads."""
        import gradio as gr

        run, began = next(self._runs), time.monotonic()
        try:
            # (not `progress or ...`: a Gradio Progress has a length, 0 until it tracks one)
            pred, files, plot = self._classify(values, _no_progress if progress is None else progress)
        except Exception as e:
            hidden = gr.update(value=None, visible=False)
            message = _message(e, values[self.path])
            return [status_html(message, "error", run), "", gr.update(), hidden, hidden]
        text = (
            f"{pred.video}: {len(pred.timestamps)} frames, {len(pred.candidates)} candidates; "
            f"best: {pred.top.action} ({pred.top.score:.4f}); {time.monotonic() - began:.1f} s."
        )
        return [
            status_html(text, "ok", run),
            ranking_html(pred),
            timeline_html(pred),
            gr.update(value=plot, visible=True),
            gr.update(value=files, visible=True),
        ]

    def _classify(self, values: dict, progress) -> tuple[Prediction, list[str], str]:
        """The prediction of the page's inputs, its downloads and its heatmaps."""
        path, domain, cands, t0, t1, model, fps, smooth, mode, answer, state = (
            values[c] for c in self.run_in
        )
        names = parse_candidates(cands)
        texts = tuple(values[b] for b in self.boxes)
        given = {a: steps_from_text(a, t) for a, t in _box_texts(state, domain, texts).items()}
        if model not in self.models:
            raise ActAlignError("Choose a model from the list.")
        progress(0, desc="Loading the model")
        self.engine.encoder(model)
        frames = _FrameProgress(progress)
        pred = self.engine.classify(
            path, domain, names, t0 or None, t1 or None, fps, smooth, mode, given, model,
            frames.update, frames.set_total,
        )  # fmt: skip
        pred.video = Path(path).name
        progress(1.0, desc="Drawing the heatmaps")
        files, plot = self.results.write(pred, path, answer)
        return pred, files, plot


def _box_texts(state: dict, domain: str | None, texts: tuple) -> dict[str, str]:
    """The script boxes' non-empty texts by action, when they belong to `domain`."""
    if norm(state.get("domain") or "") != norm(domain or ""):
        return {}
    return {a: t for a, t in zip(state.get("actions", []), texts) if t and t.strip()}


def _api(engine: Engine) -> None:
    """The API endpoints: /classify, /scripts and /generate_scripts."""
    import gradio as gr
    from gradio.data_classes import FileData

    def classify(
        video: FileData,
        domain: str,
        candidates: str,
        start: float | None = None,
        end: float | None = None,
        fps: float | None = None,
        smooth: float | None = None,
        alignment: str | None = None,
        scripts: str | None = None,
    ) -> str:
        """Rank the candidates (one per line) for the video: exactly the JSON of
        `actalign classify VIDEO --format json`. fps 0: every frame; omitted settings are the
        app's; scripts: JSON {action: [steps]} that win over the app's scripts."""
        from actalign.exports import to_json

        path = _path(video)
        with _api_errors(path):
            pred = engine.classify(
                path,
                domain,
                parse_candidates(candidates),
                start,
                end,
                fps,
                smooth,
                alignment,
                parse_scripts_json(scripts, domain or ""),
            )
            pred.video = _name(video)
            return to_json([pred])

    def scripts(domain: str, candidates: str) -> str:
        """The scripts files' and the store's scripts for the candidates (one per line), as a
        scripts file: {domain: {action: [steps]}}; candidates without a script are left out."""
        with _api_errors(None):
            found = engine.lookup(check_domain(domain), parse_candidates(candidates))
            return json.dumps({domain.strip(): {a: s for a, s in found.items() if s}}, ensure_ascii=False)

    def generate_scripts(domain: str, candidates: str) -> str:
        """Scripts for every candidate (one per line): looked up, else written by the configured
        LLM and stored; as a scripts file {domain: {action: [steps]}}."""
        with _api_errors(None):
            got = engine.generate(domain, parse_candidates(candidates))
            return json.dumps({domain.strip(): got}, ensure_ascii=False)

    for fn in (classify, scripts, generate_scripts):  # Gradio reads the types from the hints
        fn.__annotations__ = typing.get_type_hints(fn, localns={"FileData": FileData})
    gr.api(classify, api_name="classify", concurrency_id="model")
    gr.api(scripts, api_name="scripts")
    gr.api(generate_scripts, api_name="generate_scripts")


def _path(video: Any) -> str | None:
    if isinstance(video, dict):
        return video.get("path")
    return getattr(video, "path", None) or (str(video) if video else None)


def _name(video: Any) -> str:
    original = video.get("orig_name") if isinstance(video, dict) else getattr(video, "orig_name", None)
    return original or Path(_path(video) or "video").name


@contextmanager
def _api_errors(video: str | None):
    """ActAlignError -> gradio.Error with its sentence; anything else -> one generic sentence."""
    import gradio as gr

    try:
        yield
    except gr.Error:
        raise
    except Exception as e:
        raise gr.Error(_message(e, video), print_exception=False) from None


def launch(settings: AppSettings, host: str = "127.0.0.1", port: int = 7860, share: bool = False):
    """Build the page and serve it on host:port in a background thread (loopback by default; a
    public gradio.live link only with share=True). Returns the Blocks; `stop` ends it."""
    demo = build_app(settings)
    allowed = sorted({str(Path(s.video).resolve().parent) for s in demo.actalign_samples})
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(
            server_name=host,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            quiet=True,
            allowed_paths=allowed,
            max_file_size=int(settings.max_upload_mb * MB),
            css=CSS,
            show_error=False,
        )
    except OSError:
        demo.actalign_results.close()
        raise ActAlignError(
            f"Cannot listen on {host}:{port}: the port is in use or the address is not this machine's; "
            "choose another --port or --host."
        ) from None
    return demo


def stop(demo) -> None:
    """Stop serving and remove the app's result files."""
    try:
        demo.close()
    finally:
        demo.actalign_results.close()
