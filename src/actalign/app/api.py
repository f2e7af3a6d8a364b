"""The API endpoints (/classify, /scripts, /generate_scripts, and /search with an index) and the
one-sentence errors."""

from __future__ import annotations

import json
import logging
import typing
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from actalign.app.engine import Engine, check_domain, parse_candidates, parse_scripts_json
from actalign.errors import ActAlignError

log = logging.getLogger("actalign.app")

GENERIC_ERROR = "Something went wrong on the server; its log has the details."


API_NAMES = ("classify", "scripts", "generate_scripts", "search")


class OptionalInputs:
    """ASGI middleware: a plain HTTP call of our endpoints (POST /gradio_api/call/NAME or
    /run/NAME with {"data": [...]}) may leave out trailing inputs, which then come as null: the
    optional ones take their defaults (as `gradio_client` and /gradio_api/call/v2/NAME allow) and a
    missing required one gets its one sentence. Gradio alone refuses such a call with an empty
    error (and a traceback in the server's log); a /search call made before the endpoint had its
    search options keeps working."""

    def __init__(self, app, names: tuple[str, ...] = API_NAMES) -> None:
        self.app, self.names = app, names

    def _wanted(self, scope) -> int | None:
        """How many inputs the endpoint this request calls takes (None: not one of ours)."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        parts = scope["path"].rstrip("/").split("/")
        if not (len(parts) == 4 and parts[1:3] in (["gradio_api", "call"], ["gradio_api", "run"])):
            return None
        if parts[3] not in self.names or not hasattr(scope.get("app"), "get_blocks"):
            return None
        fns = scope["app"].get_blocks().fns.values()
        return next((len(fn.inputs) for fn in fns if fn.api_name == parts[3]), None)

    async def __call__(self, scope, receive, send):
        size = self._wanted(scope)
        if size is None:
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)
            body, more = body + message.get("body", b""), message.get("more_body", False)
        body = _padded(body, size)
        headers = [(k, v) for k, v in scope["headers"] if k.lower() != b"content-length"]
        scope = dict(scope, headers=[*headers, (b"content-length", str(len(body)).encode())])
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


def _padded(body: bytes, size: int) -> bytes:
    """{"data": [...]} with nulls for the inputs left out (anything else as it came)."""
    try:
        payload = json.loads(body)
    except ValueError:
        return body
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) >= size:
        return body
    payload["data"] = data + [None] * (size - len(data))
    return json.dumps(payload).encode()


def add_api(engine: Engine) -> None:
    """The API endpoints: /classify, /scripts and /generate_scripts; /search when the app has an
    index."""
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

    def search(
        domain: str,
        candidates: str,
        top: int | None = None,
        scripts: str | None = None,
        window_seconds: float | None = None,
        nms: float | None = None,
        min_score: float | None = None,
    ) -> str:
        """Every occurrence of the candidates (one per line) across the app's index, best first,
        `top` in all (default 20): exactly the JSON of `actalign search INDEX --format json`;
        scripts: JSON {action: [steps]} that win over the app's scripts; window_seconds, nms,
        min_score: as the CLI's --window (300), --nms (0.3) and --min-score (none)."""
        with _api_errors(None):
            check_domain(domain)  # the first input missing is the one a sentence names
            given = parse_scripts_json(scripts, domain or "")
            found = engine.search(
                domain, parse_candidates(candidates), top, given, window_seconds, nms, min_score
            )
            return found.to_json()

    for fn in (classify, scripts, generate_scripts, search):  # Gradio reads the types from the hints
        fn.__annotations__ = typing.get_type_hints(fn, localns={"FileData": FileData})
    gr.api(classify, api_name="classify", concurrency_id="model")
    gr.api(scripts, api_name="scripts")
    gr.api(generate_scripts, api_name="generate_scripts")
    if engine.index is not None:
        gr.api(search, api_name="search", concurrency_id="model")


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
        raise gr.Error(message(e, video), print_exception=False) from None


def message(error: BaseException, video: str | None) -> str:
    """The sentence a user sees: an ActAlignError's message with server paths shortened to the
    file's name; anything else becomes one generic sentence (its traceback goes to the log)."""
    if isinstance(error, ActAlignError):
        text = str(error)
        return text.replace(video, Path(video).name) if video else text
    log.error("unexpected error in the app", exc_info=error)
    return GENERIC_ERROR
