"""Evaluation = the batch runner + metrics: top-1/2/3 per method over a manifest with answers.

Outputs in the run folder, besides the runner's config.json, predictions.jsonl, failed.jsonl:
summary.json and summary.md (top-1/2/3 per method, and the exact expected random baseline).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from actalign.classify import DEFAULT_TEMPLATE
from actalign.errors import ActAlignError
from actalign.eval.metrics import random_topk, topk
from actalign.runner import RunResult, run
from actalign.runner.plan import Plan
from actalign.runner.score import Method

KS = (1, 2, 3)
Rung = Method  # a rung of the paper's ablation ladder is one method


def ladder(strategy: str = "context-rich", local: bool = False) -> list[Method]:
    """Table 3 of the paper: each rung adds one component (and, with `local`, our "+ local
    alignment" rung beside them: the last rung with subsequence alignment)."""
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
    for m in methods:
        ranks = [r["methods"][m.name]["rank"] for r in rows]
        table[m.name] = {f"top{k}": topk(ranks, k) for k in KS}
    return {
        "clips": len(rows),
        "clips_in_manifest": result.planned,
        "failed": len(result.failures),
        "methods": table,
        "config": result.record,
    }


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table (summary.md, and what `eval` prints)."""
    lines = [
        f"Evaluated {summary['clips']} of {summary['clips_in_manifest']} clips "
        f"(model {summary.get('config', {}).get('encoder', '?')}).",
        "",
        "| method | top-1 (%) | top-2 (%) | top-3 (%) |",
        "|---|---|---|---|",
    ]
    for name, m in summary["methods"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * m[f'top{k}']:.2f}" for k in KS) + " |")
    return "\n".join(lines) + "\n"
