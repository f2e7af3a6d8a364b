"""The Search tab of `actalign app --index INDEX`: a domain, candidates (one per line), top N,
the search's window, overlap and score floor, and optional scripts JSON in; the hits of the index
best first, each with a thumbnail of the frame at its start; a click on a hit plays its video
from the hit's start in the tab's player."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from urllib.parse import quote

from actalign.app.api import message
from actalign.app.engine import Engine, Search, parse_candidates, parse_scripts_json
from actalign.app.html import hits_html, status_html
from actalign.app.widgets import query_inputs
from actalign.text import plural

SEARCH_JS = (Path(__file__).parent / "static" / "search.js").read_text(encoding="utf-8")
PLAYER_HTML = (
    '<div class="aa-player"><video controls preload="metadata" playsinline></video>'
    '<div class="aa-player-note" role="status">Click a hit to play its video from the hit\'s start.</div>'
    "</div>"
)
NO_HITS_YET = '<div class="aa-empty">The hits appear here, best first.</div>'


def file_url(path: str) -> str:
    """The page-relative URL under which Gradio serves a file of its allowed paths."""
    return "gradio_api/file=" + quote(str(Path(path).resolve()))


def summary(found: Search, seconds: float) -> str:
    """The status line of a search: how many hits in how many videos, the best, the warnings."""
    hits = found.hits
    text = f"{plural(len(hits), 'hit')} in {plural(len({h.video for h in hits}), 'video')}"
    if hits:
        best = hits[0]
        text += (
            f"; best: {best.action} in {Path(best.video).name} at {best.start:.2f}\u2013{best.end:.2f} s "
            f"({best.score:.4f})"
        )
    return " ".join([f"{text}; {seconds:.1f} s.", *found.warnings])


class SearchTab:
    """The tab's components and the handler of its Search button."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._runs = itertools.count(1)

    def layout(self) -> None:
        """The player and the hits on the left, the inputs on the right."""
        import gradio as gr

        with gr.Row(equal_height=False):
            with gr.Column(scale=6):
                self.player = gr.HTML(PLAYER_HTML, apply_default_css=False, elem_id="aa-search-player")
                self.hits = gr.HTML(
                    NO_HITS_YET, js_on_load=SEARCH_JS, apply_default_css=False, elem_id="aa-hits"
                )
            with gr.Column(scale=5):
                self._inputs()

    def _inputs(self) -> None:
        import gradio as gr

        self.domain, self.candidates = query_inputs("aa-search", "Putback dunk\nAlley-oop dunk")
        self.top = gr.Number(
            20, label="Top", info="the best N hits in all", minimum=1, precision=0, elem_id="aa-search-top"
        )
        with gr.Accordion("Search options", open=False):
            self.window = gr.Number(
                300, label="Window (s)", info="seconds of frames aligned at once", elem_id="aa-search-window"
            )
            self.nms = gr.Number(
                0.3,
                label="NMS",
                info="overlap (IoU) above which the weaker of two hits goes",
                elem_id="aa-search-nms",
            )
            self.min_score = gr.Number(
                None,
                label="Min score",
                info="keep hits scoring at least this (empty: all)",
                elem_id="aa-search-min",
            )
        with gr.Accordion("Scripts (optional)", open=False):
            self.scripts = gr.Textbox(
                label="Scripts JSON",
                info='{"action": ["step", ...]}: these win over the app\'s scripts',
                lines=4,
                elem_id="aa-search-scripts",
            )
        self.button = gr.Button("Search", variant="primary", elem_id="aa-search-run")
        self.status = gr.HTML(status_html("Ready."), elem_id="aa-search-status")

    def wire(self) -> None:
        """Connect the Search button (not part of the public API: that is /search)."""
        self.button.click(
            self.run,
            [self.domain, self.candidates, self.top, self.scripts, self.window, self.nms, self.min_score],
            [self.status, self.hits],
            api_visibility="private",
            concurrency_id="model",
        )

    def run(
        self, domain: str, candidates: str, top, scripts: str, window=None, nms=None, min_score=None
    ) -> list[str]:
        """Search, then show the status and the hits, each with its thumbnail."""
        run, began = next(self._runs), time.monotonic()
        try:
            given = parse_scripts_json(scripts, domain or "")
            found = self.engine.search(
                domain, parse_candidates(candidates), top, given, window, nms, min_score
            )
            rows = []
            for hit in found.hits:
                view = self.engine.view(hit)
                rows.append((hit, view, file_url(view.file) if view.file else None))
        except Exception as e:
            return [status_html(message(e, None), "error", run), NO_HITS_YET]
        return [status_html(summary(found, time.monotonic() - began), "ok", run), hits_html(rows)]
