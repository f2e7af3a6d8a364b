"""`actalign eval MANIFEST|actionatlas --out DIR [--ladder] [--strategies ...]`: the batch runner
plus top-1/2/3 (paper Tables 2-4)."""

from __future__ import annotations

import dataclasses
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
        "ablation ladder of Table 3, or script strategies side by side (Table 4). A run folder as in "
        "batch, resumable; the summary is printed as a Markdown table.",
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
        "--xclip",
        default=None,
        metavar="ID_OR_DIR",
        help="also the X-CLIP baseline with this checkpoint "
        "(default: none; with --table2, microsoft/xclip-large-patch14-16-frames)",
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


def methods(args):
    from actalign.eval.evaluate import ladder
    from actalign.runner.score import Method

    if args.table2:
        rungs = {m.name: m for m in ladder(args.strategy, local=False)}
        full = dataclasses.replace(rungs["+ smoothing (ActAlign)"], name="ActAlign")
        chosen = [rungs["mean-pool"], rungs["+ DTW (bare steps)"], full]
    elif args.ladder:
        chosen = ladder(args.strategy)
    else:
        chosen = [Method("mean-pool", method="mean-pool")]
        if not args.strategies:
            chosen.append(
                Method(
                    "ActAlign",
                    template=args.template,
                    smooth_seconds=args.smooth,
                    strategy=args.strategy,
                    alignment=args.alignment,
                )
            )
            if args.local and args.alignment != "subsequence":
                chosen.append(
                    Method(
                        "ActAlign (local)",
                        template=args.template,
                        smooth_seconds=args.smooth,
                        strategy=args.strategy,
                        alignment="subsequence",
                    )
                )
    for s in args.strategies or []:
        chosen.append(
            Method(
                f"ActAlign ({s})",
                template=args.template,
                smooth_seconds=args.smooth,
                strategy=s,
                alignment=args.alignment,
            )
        )
    return chosen


def run(args) -> int:
    from actalign.eval.evaluate import evaluate, summary_markdown
    from actalign.runner.plan import load_manifest

    common.check_template(args)
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
    chosen = methods(args)
    sources = common.sources_for(args, chosen)
    common.check_scripts(plan, sources, chosen, args.limit)
    baselines = []
    if args.xclip or args.table2:
        baselines.append(common.baseline_for(args, "xclip", args.xclip))
    if args.vlm:
        baselines.append(common.baseline_for(args, "vlm", args.vlm))
    for b in baselines:
        # loaded (or its server's settings checked) once, before the first clip, as classify does: a
        # baseline that cannot run at all is one sentence, not a failure per clip and a table of n/a
        b.model  # noqa: B018
    summary = evaluate(
        plan,
        common.encoder(args),
        sources,
        args.out,
        chosen,
        baselines=baselines,
        **common.run_options(args),
    )
    print(summary_markdown(summary), end="")
    problems = summary["failed"] + summary["rows_rejected"]
    if problems:
        where = f"{args.out.rstrip('/')}/failed.jsonl"
        print(f"{problems} clip(s) or manifest row(s) could not be evaluated; see {where}", file=sys.stderr)
    return 1 if problems else 0
