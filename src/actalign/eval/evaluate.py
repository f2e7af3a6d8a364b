"""Evaluation = the batch runner + metrics: top-1/2/3 per method over a manifest with answers.

Outputs in the run folder, besides the runner's config.json, predictions.jsonl, failed.jsonl:
summary.json and summary.md (top-1/2/3 per method, and the exact expected random baseline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np

from actalign.classify import DEFAULT_TEMPLATE
from actalign.errors import ActAlignError
from actalign.eval.metrics import random_topk, topk
from actalign.runner import RunResult, run
from actalign.runner.plan import Plan
from actalign.runner.score import Method

KS = (1, 2, 3)
Rung = Method  # a rung of the paper's ablation ladder is one method


def ladder(strategy: str = "context-rich", local: bool = True) -> list[Method]:
    """Table 3 of the paper: each rung adds one component; then our "+ local alignment" rung
    beside them (the last rung with subsequence alignment; `local=False` leaves it out)."""
    rungs = [
        Method("mean-pool", method="mean-pool"),
        Method("+ DTW (bare steps)", template="{step}", smooth_seconds=0.0, strategy=strategy),
        Method("+ context", template=DEFAULT_TEMPLATE, smooth_seconds=0.0, strategy=strategy),
        Method("+ smoothing (ActAlign)", template=DEFAULT_TEMPLATE, smooth_seconds=1.0, strategy=strategy),
    ]
    if local:
        rungs.append(
            Method(
                "+ local alignment",
                template=DEFAULT_TEMPLATE,
                smooth_seconds=1.0,
                strategy=strategy,
                alignment="subsequence",
            )
        )
    return rungs


def evaluate(
    plan: Plan,
    encoder,
    sources: dict,
    out: str,
    methods: Sequence[Method],
    **run_options,
) -> dict:
    """Run every method on every clip (resuming), then write and return the summary."""
    missing = [c.id for c in plan.clips if c.answer is None]
    if missing:
        raise ActAlignError(f"Evaluation needs an 'answer' for every clip; {missing[0]!r} has none.")
    result = run(plan, encoder, sources, out, methods, **run_options)
    summary = summarise(result, methods)
    from actalign.runner.output import RunFolder

    folder = RunFolder(out)
    folder.write("summary.json", json.dumps(summary, indent=2) + "\n")
    folder.write("summary.md", summary_markdown(summary))
    return summary


def summarise(result: RunResult, methods: Sequence[Method]) -> dict:
    """Top-1/2/3 per method (and the random expectation) over the finished rows."""
    rows = result.rows
    table = {
        "random (expected)": {f"top{k}": random_topk([len(r["candidates"]) for r in rows], k) for k in KS}
    }
    located = [r for r in rows if r.get("span")]
    for m in methods:
        ranks = [r["methods"][m.name]["rank"] for r in rows]
        table[m.name] = {f"top{k}": topk(ranks, k) for k in KS}
        if located and m.method == "actalign":
            table[m.name]["span_iou"] = float(
                np.mean([span_iou(r["methods"][m.name]["span"], r["span"]) for r in located])
            )
    return {
        "clips": len(rows),
        "clips_in_manifest": result.planned,
        "failed": len(result.failures),
        "methods": table,
        "config": result.record,
    }


def span_iou(a, b) -> float:
    """Temporal intersection over union of two [start, end] spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table (summary.md, and what `eval` prints)."""
    with_iou = any("span_iou" in m for m in summary["methods"].values())
    lines = [
        f"Evaluated {summary['clips']} of {summary['clips_in_manifest']} clips "
        f"(model {summary.get('config', {}).get('encoder', '?')}).",
        "",
        "| method | top-1 (%) | top-2 (%) | top-3 (%) |" + (" span IoU |" if with_iou else ""),
        "|---|---|---|---|" + ("---|" if with_iou else ""),
    ]
    for name, m in summary["methods"].items():
        cells = [f"{100 * m[f'top{k}']:.2f}" for k in KS]
        if with_iou:
            cells.append(f"{m['span_iou']:.3f}" if "span_iou" in m else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
