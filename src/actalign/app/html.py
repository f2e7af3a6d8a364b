"""The HTML the page renders: status line, ranking table, step timeline."""

from __future__ import annotations

import html

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
