"""`actalign eval MANIFEST|actionatlas --out DIR [--ladder] [--strategies ...]`: the batch runner
plus top-1/2/3 (paper Tables 2-4)."""

from __future__ import annotations

import sys
from pathlib import Path

from actalign.cli import common
from actalign.errors import ActAlignError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/2/3 on a manifest or ActionAtlas (paper Tables 2-4)",
        description="Measure top-1/2/3 accuracy on a JSONL manifest whose rows name their answer, or "
        "on ActionAtlas (its clips are downloaded and prepared in --data first): the mean-pool "
        "baseline and ActAlign, the paper's Table 2 peers beside them (--table2, --xclip, --vlm), the "
        "ablation ladder of Table 3, or script strategies side by side (Table 4). Writes a run folder "
        "as batch does (predictions.jsonl, failed.jsonl, config.json, scripts.json; resumable) plus "
        "summary.json and summary.md; the summary is printed as a Markdown table.",
    )
    p.add_argument("dataset", metavar="DATASET", help="a JSONL manifest with answers, or 'actionatlas'")
    p.add_argument("--data", default="actionatlas-data", help="the folder ActionAtlas clips are prepared in")
    p.add_argument("--ladder", action="store_true", help="the ablation of Table 3 from the same embeddings")
    p.add_argument(
        "--local",
        action="store_true",
        help="also run ActAlign with subsequence alignment (always in --ladder)",
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        choices=common.STRATEGY_NAMES,
        metavar="S",
        help="compare script strategies (Table 4): context-rich context-rich-t1 short-fixed "
        "(default: none, ActAlign with --strategy only)",
    )
    p.add_argument(
        "--table2",
        action="store_true",
        help="the rows of the paper's Table 2 a manifest can have, from the same clips: random, X-CLIP, "
        "mean-pool, + DTW, ActAlign, and the video LLM when --vlm is given",
    )
    common.add_baseline_options(p)
    common.add_sampling_options(p, start_end=False)
    common.add_method_options(p)
    common.add_run_options(p)
    common.add_model_options(p)
    common.add_script_options(p)
    common.add_quiet(p)


def run(args) -> int:
    from actalign.eval.evaluate import summary_markdown
    from actalign.runner.plan import load_manifest

    front = common.front(args)  # checks the template and every value before any work
    if len(set(args.strategies or [])) > 1 and args.scripts:
        raise ActAlignError(
            "--scripts files win over every strategy, so --strategies would compare the same "
            "scripts; drop --scripts to compare strategies (their scripts come from the store or "
            "the LLM, per strategy)."
        )
    if args.dataset.lower() == "actionatlas":
        manifest = Path(args.data) / "manifest.jsonl"
        if not manifest.exists():
            from actalign.eval.datasets import prepare_actionatlas

            print(f"preparing ActionAtlas clips in {args.data} (resumable)", file=sys.stderr)
            manifest = prepare_actionatlas(args.data)
    else:
        manifest = Path(args.dataset)
    plan = load_manifest(manifest, require_answer=True)
    common.check_out(args)
    baselines = []
    if args.xclip or args.table2:
        baselines.append(common.baseline_for(args, "xclip", args.xclip))
    if args.vlm:
        baselines.append(common.baseline_for(args, "vlm", args.vlm))
    summary = front.evaluate(
        plan,
        args.out,
        ladder=args.ladder,
        local=args.local,
        strategies=args.strategies,
        table2=args.table2,
        baselines=baselines,
        limit=args.limit,
        recorded_scripts=args.recorded_scripts,
        progress=True,
    )
    print(summary_markdown(summary), end="")
    problems = summary["failed"] + summary["rows_rejected"]
    if problems:
        where = f"{args.out.rstrip('/')}/failed.jsonl"
        what = "clip or manifest row" if problems == 1 else "clips or manifest rows"
        print(f"{problems} {what} could not be evaluated; see {where}", file=sys.stderr)
    return 1 if problems else 0
