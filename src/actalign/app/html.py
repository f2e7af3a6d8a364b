"""The HTML the page renders: status line, ranking table, step timeline, search hits."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from actalign.score import Prediction

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]


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


def hits_html(rows: list) -> str:
    """The hits of a search, best first, one button each: rank, a thumbnail of the frame at the
    hit's start, the video's name, the action, start-end and the score. rows: (Hit, HitView, the
    URL that plays its file or None). Each button carries data-start and data-src, or data-gone
    (the sentence saying why its video cannot be shown), which the page's script uses."""
    if not rows:
        return '<div class="aa-empty">No hits.</div>'
    items = [_hit_html(rank, hit, view, url) for rank, (hit, view, url) in enumerate(rows, 1)]
    return (
        '<div class="aa-head">Hits, best first \u2014 click one to play it from its start</div>'
        f'<div class="aa-hits">{"".join(items)}</div>'
    )


def _hit_html(rank: int, hit, view, url: str | None) -> str:
    name = Path(hit.video).name or hit.video
    when = f"{hit.start:.2f}\u2013{hit.end:.2f} s"
    if view.problem:
        picture = '<span class="aa-thumb aa-nothumb">file gone</span>'
        where = f'data-gone="{html.escape(view.problem)}"'
    else:
        where = f'data-src="{html.escape(url or "")}"'
        picture = (
            f'<img class="aa-thumb" alt="frame at {hit.start:.2f} s" '
            f'src="data:image/jpeg;base64,{base64.b64encode(view.thumbnail).decode()}">'
            if view.thumbnail
            else '<span class="aa-thumb aa-nothumb">no frame</span>'
        )
    label = f"{name}: {hit.action}, {when}"
    return (
        f'<button type="button" class="aa-hit" data-start="{hit.start:.3f}" data-end="{hit.end:.3f}" '
        f'{where} title="{html.escape(label)}">{picture}'
        f'<span class="aa-num">{rank}</span>'
        f'<span class="aa-hit-video">{html.escape(name)}</span>'
        f'<span class="aa-hit-action">{html.escape(hit.action)}</span>'
        f'<span class="aa-time">{when}</span><span class="aa-score">{hit.score:.4f}</span></button>'
    )
