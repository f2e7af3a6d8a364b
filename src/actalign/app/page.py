"""The Gradio page: layout, events, result files; `build_app`, `launch`, `stop`."""

from __future__ import annotations

import ipaddress
import itertools
import json
import logging
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from actalign.app.api import add_api, message
from actalign.app.engine import MB, AppSettings, Engine, parse_candidates, steps_from_text
from actalign.app.html import ranking_html, status_html, timeline_html
from actalign.app.search_tab import SearchTab
from actalign.app.widgets import query_inputs
from actalign.candidates import norm
from actalign.encoders import MODELS
from actalign.errors import ActAlignError
from actalign.score import Prediction

log = logging.getLogger("actalign.app")

MAX_EDITORS = 16  # candidates the page shows script boxes for (the API takes any number)
KEEP_RUNS = 32  # result folders kept on disk (Gradio serves copies from its own cache)
STATIC = Path(__file__).parent / "static"
TIMELINE_JS = (STATIC / "timeline.js").read_text(encoding="utf-8")
CSS = (STATIC / "page.css").read_text(encoding="utf-8")

INTRO = (
    "## actalign\n"
    "Zero-shot fine-grained action classification: each candidate action is a script of visible "
    "steps, aligned to the video frames by dynamic time warping; the best-aligned script wins, and "
    "its alignment says when each step happened."
)


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


def build_app(settings: AppSettings, engine: Engine | None = None):
    """The Gradio Blocks of the page and the API, not launched; `.actalign_results` holds the
    folder of result files, to remove when the app closes."""
    import gradio as gr

    page = _Page(settings, engine or Engine(settings))
    search = SearchTab(page.engine) if page.engine.index is not None else None
    with gr.Blocks(title="actalign", analytics_enabled=False) as demo:
        gr.Markdown(INTRO)
        if search is None:
            page.layout()
        else:
            with gr.Tabs(elem_id="aa-tabs"):
                with gr.Tab("Classify", elem_id="aa-tab-classify"):
                    page.layout()
                with gr.Tab("Search", elem_id="aa-tab-search"):
                    search.layout()
            search.wire()
        page.wire()
        add_api(page.engine)
    demo.actalign_results = page.results
    demo.actalign_engine = page.engine
    demo.actalign_samples = list(page.samples.values())
    # the only files of the machine it serves: the sample videos and the files the index names
    # (Gradio allows a listed file itself, a listed folder everything under it: never a folder);
    # the engine keeps this list current as the index changes
    demo.actalign_files = page.engine.served
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
        """Place the classification's components: video and results on the left, inputs on the
        right."""
        import gradio as gr

        self.path = gr.State(None)  # the video to classify: the sample's or the upload's file
        self.answer = gr.State(None)  # the sample's correct candidate, marked in the heatmaps
        # what the script boxes hold, kept in the page (not the server's session state) so that a
        # click sends the boxes and their owners as the user sees them at that moment, even while
        # a lookup started by leaving the candidates box is still on its way
        self.shown = gr.Textbox(_shown("", []), visible=False, elem_id="aa-shown")
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

        self.domain, self.candidates = query_inputs("aa", "Tip-in\nPutback dunk\nAlley-oop dunk")
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
        return [_shown(domain, actions), note, *updates]

    def _unchanged(self, state: str, error: BaseException) -> list:
        import gradio as gr

        return [state, gr.update(), *[gr.update()] * MAX_EDITORS, status_html(message(error, None), "error")]

    def refresh(self, domain: str, cands: str, state: str, *texts: str) -> list:
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

    def generate(self, domain: str, cands: str, state: str, *texts: str) -> list:
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
        scripts = self.refresh(s.domain, cands, _shown("", []))
        return [s.video, s.video, s.domain, cands, s.start or 0, s.end or 0, s.answer, *scripts]

    def uploaded(self, path: str | None) -> list:
        """Check an upload at once and show it, or say in one sentence why it cannot be used."""
        try:
            self.engine.check_video(path)
        except Exception as e:
            return [None, None, None, status_html(message(e, path), "error")]
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
            said = message(e, values[self.path])
            return [status_html(said, "error", run), "", gr.update(), hidden, hidden]
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


def _shown(domain: str, actions: list[str]) -> str:
    return json.dumps({"domain": domain, "actions": actions}, ensure_ascii=False)


def _box_texts(state: str | dict, domain: str | None, texts: tuple) -> dict[str, str]:
    """The script boxes' non-empty texts by action, when they belong to `domain`."""
    if isinstance(state, str):
        try:
            state = json.loads(state or "{}")
        except json.JSONDecodeError:
            state = {}
    if not isinstance(state, dict) or norm(state.get("domain") or "") != norm(domain or ""):
        return {}
    return {a: t for a, t in zip(state.get("actions", []), texts) if t and t.strip()}


@dataclass(frozen=True)
class Listening:
    """Where the app listens and who can reach it: `server` as Gradio takes it (an IPv6 address
    in brackets), `local` the host of a URL that works on this machine, `remote` the host of one
    for other machines (None: only this machine can reach the page), `everywhere` when it listens
    on every network interface (0, 0.0.0.0, ::)."""

    server: str
    local: str
    remote: str | None
    everywhere: bool = False


def listen_on(host: str) -> Listening:
    """Who can reach the page served on `host` (an address or a name of this machine); one
    sentence when it is neither."""
    bare = host.strip()
    if bare.startswith("[") and bare.endswith("]"):
        bare = bare[1:-1]
    try:
        found = socket.getaddrinfo(bare, None, type=socket.SOCK_STREAM)
        addresses = {ipaddress.ip_address(info[4][0].split("%")[0]) for info in found}
    except (OSError, UnicodeError, ValueError):
        addresses = set()
    if not bare or not addresses:
        raise ActAlignError(
            f"Cannot listen on {host!r}: it is not an address or a name of this machine; "
            "choose another --host (127.0.0.1: this machine only)."
        )
    url_host = f"[{bare.replace('%', '%25')}]" if ":" in bare else bare
    server = f"[{bare}]" if ":" in bare else bare
    if any(a.is_unspecified for a in addresses):
        local = "[::1]" if all(a.version == 6 for a in addresses) else "127.0.0.1"
        return Listening(server, local, socket.gethostname() or local, everywhere=True)
    if all(a.is_loopback for a in addresses):
        return Listening(server, url_host, None)
    return Listening(server, url_host, url_host)


def optional_inputs():
    """The middleware that lets plain HTTP calls of the API leave out trailing inputs."""
    from starlette.middleware import Middleware

    from actalign.app.api import OptionalInputs

    return Middleware(OptionalInputs)


def launch(settings: AppSettings, host: str = "127.0.0.1", port: int = 7860, share: bool = False):
    """Build the page and serve it on host:port in a background thread (loopback by default; a
    public gradio.live link only with share=True). Returns the Blocks; `stop` ends it."""
    where = listen_on(host)
    demo = build_app(settings)
    # the result files are served from Gradio's own cache, as uploads are
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(
            server_name=where.server,
            server_port=port,
            share=share,
            prevent_thread_lock=True,
            quiet=True,
            allowed_paths=demo.actalign_files,
            max_file_size=int(settings.max_upload_mb * MB),
            css=CSS,
            show_error=False,
            app_kwargs={"middleware": [optional_inputs()]},
        )
        if not demo.allowed_paths:  # Gradio keeps an empty list of its own: share the engine's
            demo.allowed_paths = demo.actalign_files
    except OSError:
        demo.actalign_results.close()
        demo.actalign_engine.close()
        raise ActAlignError(
            f"Cannot listen on {where.server}:{port}: the port is in use or the address is not this "
            "machine's; choose another --port or --host."
        ) from None
    return demo


def stop(demo) -> None:
    """Stop serving, remove the app's result files and end the index's thread."""
    try:
        demo.close()
    finally:
        demo.actalign_results.close()
        demo.actalign_engine.close()
