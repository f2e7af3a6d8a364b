"""Evaluation = the batch runner + metrics: top-1/2/3 per method over a manifest with answers.

Outputs in the run folder, besides the runner's config.json, predictions.jsonl, failed.jsonl:
summary.json and summary.md (top-1/2/3 per method, and the exact expected random baseline).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

from actalign.errors import ActAlignError
from actalign.eval.datasets import coverage_line
from actalign.eval.metrics import random_topk, topk, wilson_interval
from actalign.runner import RunResult, run
from actalign.runner.plan import Plan
from actalign.score import DEFAULT_TEMPLATE, Method
from actalign.text import human_count, plural

KS = (1, 2, 3)
Rung = Method  # a rung of the paper's ablation ladder is one method


def ladder(strategy: str = "context-rich", local: bool = True) -> list[Method]:
    """Table 3 of the paper: each rung adds one component; then our "+ local alignment" rung
    beside them (the last rung with subsequence alignment; `local=False` leaves it out)."""
    rungs = [
        Method("mean-pool", kind="mean-pool"),
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


_ladder = ladder  # methods_for's `ladder` flag shadows the function


def methods_for(
    config,
    ladder: bool = False,
    local: bool = False,
    strategies: Sequence[str] | None = None,
    table2: bool = False,
) -> list[Method]:
    """The methods an evaluation compares, from a `Config`: mean-pool and ActAlign (its template,
    smoothing, strategy, alignment); or the Table 2 rows; or the Table 3 ladder; plus ActAlign per
    script strategy (Table 4) and, with `local`, ActAlign with subsequence alignment."""
    import dataclasses

    def actalign(name: str, **changes) -> Method:
        return config.scoring(name, kind="actalign", **changes)

    if table2:
        rungs = {m.name: m for m in _ladder(config.strategy, local=False)}
        full = dataclasses.replace(rungs["+ smoothing (ActAlign)"], name="ActAlign")
        chosen = [rungs["mean-pool"], rungs["+ DTW (bare steps)"], full]
    elif ladder:
        chosen = _ladder(config.strategy)
    else:
        chosen = [config.scoring("mean-pool", kind="mean-pool")]
        if not strategies:
            chosen.append(actalign("ActAlign"))
            if local and config.alignment != "subsequence":
                chosen.append(actalign("ActAlign (local)", alignment="subsequence"))
    chosen += [actalign(f"ActAlign ({s})", strategy=s) for s in strategies or []]
    return chosen


def evaluate(
    plan: Plan,
    encoder,
    sources: dict,
    out: str,
    methods: Sequence[Method],
    dataset: dict | None = None,
    **run_options,
) -> dict:
    """Run every method on every clip (resuming), then write and return the summary. dataset: a
    benchmark's coverage (`datasets.coverage`), kept in the summary and said in its first lines."""
    missing = [c.id for c in plan.clips if c.answer is None]
    if missing:
        raise ActAlignError(f"Evaluation needs an 'answer' for every clip; {missing[0]!r} has none.")
    baselines = list(run_options.get("baselines") or ())
    result = run(plan, encoder, sources, out, methods, **run_options)
    summary = summarise(result, [*methods, *baselines])
    summary["cost"] = cost(result, methods, baselines, encoder)
    if dataset is not None:  # a benchmark's coverage: how many of its clips there were, and why
        summary["dataset"] = dataset
    from actalign.runner.output import RunFolder

    folder = RunFolder(out)
    folder.write("summary.json", json.dumps(summary, indent=2) + "\n")
    folder.write("summary.md", summary_markdown(summary))
    return summary


def summarise(result: RunResult, methods: Sequence[Method]) -> dict:
    """Top-1/2/3 per method (with the 95% Wilson interval of top-1, and the random expectation)
    over the finished rows; span IoU where rows know the action's span (measured on the correct
    candidate's span: how well the action is found, whatever is ranked first); top-1 per domain."""
    rows = result.rows
    table = {
        "random (expected)": {f"top{k}": random_topk([len(r["candidates"]) for r in rows], k) for k in KS}
    }
    located = [r for r in rows if r.get("span")]
    for m in methods:
        entries = [r["methods"][m.name] for r in rows]
        ranks = [e["rank"] if e.get("rank") is not None else math.inf for e in entries]
        top1_only = any(e.get("top1_only") for e in entries)
        table[m.name] = {f"top{k}": (None if top1_only and k > 1 else topk(ranks, k)) for k in KS}
        table[m.name]["top1_ci95"] = wilson_interval(sum(r == 1 for r in ranks), len(ranks))
        misses = sum(1 for e in entries if e.get("miss"))
        if misses:  # the model's answer named no choice
            table[m.name]["misses"] = misses
        errors = sum(1 for e in entries if e.get("error"))
        if errors:  # no usable reply (a malformed server body, ...): wrong, as ActionAtlas counts it
            table[m.name]["errors"] = errors
        if located and getattr(m, "kind", None) == "actalign":
            table[m.name]["span_iou"] = float(
                np.mean([span_iou(r["methods"][m.name]["span"], r["span"]) for r in located])
            )
    domains: dict[str, dict] = {}
    for domain in sorted({r["domain"] for r in rows}):
        mine = [r for r in rows if r["domain"] == domain]
        domains[domain] = {"clips": len(mine)}
        for m in methods:
            ranks = [r["methods"][m.name].get("rank") for r in mine]
            domains[domain][m.name] = topk([math.inf if x is None else x for x in ranks], 1)
    rejected = sum(1 for f in result.failures if f.get("rejected"))
    return {
        "clips": len(rows),
        "clips_in_manifest": result.planned,
        "rows_rejected": rejected,
        "failed": len(result.failures) - rejected,
        "methods": table,
        "domains": domains,
        "config": result.record,
        # the scripts that produced these numbers: steps, their short hash (as in each row), origin
        "scripts": {
            k: {f: v[f] for f in ("strategy", "domain", "action", "hash", "origin", "steps") if f in v}
            for k, v in sorted(result.scripts.items())
        },
    }


def cost(result: RunResult, methods: Sequence[Method], baselines: Sequence, encoder) -> dict:
    """Per row of the table, the model's parameters and the clips/s measured in this run (the
    embedding methods share one decode and encode: their clips/s is that of the whole path)."""
    timing = result.timing or {}
    clips = timing.get("clips") or 0
    shared = timing.get("embedding_seconds") or 0.0
    params = getattr(encoder, "parameters", None)
    if params is None and hasattr(encoder, "model"):
        params = sum(p.numel() for p in encoder.model.parameters())
    out = {
        m.name: {"parameters": params, "clips_per_s": clips / shared if clips and shared else None}
        for m in methods
    }
    for b in baselines:
        spent = timing.get("baselines", {}).get(b.name, {})
        rate = spent.get("clips") / spent["seconds"] if spent.get("clips") and spent.get("seconds") else None
        out[b.name] = {"parameters": b.parameters if b._model is not None else None, "clips_per_s": rate}
    return out


def span_iou(a, b) -> float:
    """Temporal intersection over union of two [start, end] spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def _pct(x: float | None) -> str:  # None: not measured (a server VLM gives top-1 only)
    return "n/a" if x is None else f"{100 * x:.2f}"


def summary_markdown(summary: dict) -> str:
    """The summary as Markdown tables (summary.md, and what `eval` prints)."""
    with_iou = any("span_iou" in m for m in summary["methods"].values())
    costs = summary.get("cost") or {}
    skipped = []
    if summary.get("failed"):
        skipped.append(f"{summary['failed']} failed")
    if summary.get("rows_rejected"):
        skipped.append(f"{summary['rows_rejected']} manifest rows rejected")
    lines = [coverage_line(summary["dataset"]), ""] if summary.get("dataset") else []
    lines += [
        f"Evaluated {summary['clips']} of {plural(summary['clips_in_manifest'], 'clip')}"
        + (f" ({', '.join(skipped)}; see failed.jsonl)" if skipped else "")
        + f" (model {_model_named(summary.get('config', {}))}).",
        "",
        "| method | top-1 (%) | top-1 95% CI | top-2 (%) | top-3 (%) |"
        + (" span IoU |" if with_iou else "")
        + (" parameters | clips/s |" if costs else ""),
        "|---|---|---|---|---|" + ("---|" if with_iou else "") + ("---|---|" if costs else ""),
    ]
    for name, m in summary["methods"].items():
        ci = m.get("top1_ci95")
        cells = [
            _pct(m["top1"]),
            f"{100 * ci[0]:.1f}-{100 * ci[1]:.1f}" if ci else "",
            _pct(m["top2"]),
            _pct(m["top3"]),
        ]
        if with_iou:
            cells.append(f"{m['span_iou']:.3f}" if "span_iou" in m else "")
        if costs:
            c = costs.get(name, {})
            cells.append(human_count(c.get("parameters")) if c.get("parameters") else "")
            cells.append(f"{c['clips_per_s']:.3g}" if c.get("clips_per_s") else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, m in summary["methods"].items():
        if m.get("misses") or m.get("errors"):
            counted = [f"{m[k]} {k}" for k in ("misses", "errors") if m.get(k)]
            lines.append(
                f"\n{name}: {' and '.join(counted)} (a miss: the answer named no choice; an error: no "
                'usable reply, see the rows\' "error"), each counted wrong.'
            )
    domains = summary.get("domains") or {}
    if len(domains) > 1:
        names = [n for n in summary["methods"] if n != "random (expected)"]
        lines += [
            "",
            "Top-1 (%) per domain:",
            "",
            "| domain | clips | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for domain, d in domains.items():
            lines.append(f"| {domain} | {d['clips']} | " + " | ".join(_pct(d[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


def _model_named(config: dict) -> str:
    """The model as the user named it, with its identity (revision or weights hash, dtype)."""
    named, identity = config.get("model"), config.get("model_identity", "?")
    return identity if named in (None, "default") else f"{named}, {identity}"
