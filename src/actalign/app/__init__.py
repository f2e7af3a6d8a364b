"""`actalign app`: a web page (Gradio) and an API over the same library calls as the CLI.

The page: pick a sample or upload a video (optionally a start and end in seconds), give the domain
and the candidates (one per line); the scripts of those candidates appear, one editable box each
(from --scripts files, then the script store, or written by the configured LLM at a click). A run
shows the ranking, the winning script's steps as a timeline under the video (a click on a step
seeks the video there), the Figure 4 heatmaps, and the JSON, CSV and WebVTT downloads.

The API (`gradio_client.Client(url).predict(handle_file(video), domain, candidates,
api_name="/classify")`) returns exactly what `actalign classify VIDEO --format json` prints for the
same settings; `/scripts` and `/generate_scripts` look scripts up or write them.

With an archive index (`AppSettings(index=...)`, `actalign app --index`), a Search tab lists the
index's hits for the candidates best first, each with a thumbnail of the frame at its start, and
plays a clicked hit from its start; `/search` returns exactly what `actalign search INDEX --format
json` prints.

Errors are one sentence in the page (or one `gradio.Error` for API callers), never a traceback:
the traceback of an unexpected failure goes to the server's log only. The model is loaded once per
model setting and reused by every request; embeddings are cached as in the CLI.

Gradio is an optional extra (`pip install 'actalign[app]'`) and is imported only by the functions
that build and launch the page; the rest of this module (the engine and the HTML it renders) does
not need it.
"""

from actalign.app.api import GENERIC_ERROR
from actalign.app.engine import (
    AppSettings,
    Engine,
    HitView,
    Sample,
    Search,
    check_domain,
    load_samples,
    parse_candidates,
    parse_scripts_json,
    parse_top,
    steps_from_text,
)
from actalign.app.html import hits_html, ranking_html, status_html, timeline_html
from actalign.app.page import MAX_EDITORS, Listening, build_app, launch, listen_on, stop

INSTALL_HINT = "The app needs Gradio, an optional extra: pip install 'actalign[app]'."

__all__ = [
    "GENERIC_ERROR",
    "INSTALL_HINT",
    "MAX_EDITORS",
    "AppSettings",
    "Engine",
    "HitView",
    "Listening",
    "Sample",
    "Search",
    "build_app",
    "check_domain",
    "hits_html",
    "launch",
    "listen_on",
    "load_samples",
    "parse_candidates",
    "parse_scripts_json",
    "parse_top",
    "ranking_html",
    "status_html",
    "steps_from_text",
    "stop",
    "timeline_html",
]
