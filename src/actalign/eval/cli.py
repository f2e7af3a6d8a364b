"""`actalign eval MANIFEST|actionatlas --out DIR [--ladder] [--strategies ...]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actalign.errors import ActAlignError


def add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="top-1/2/3 on a manifest or ActionAtlas (paper Tables 2-4)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("dataset", help="a JSONL manifest, or 'actionatlas'")
    p.add_argument("--out", required=True, help="run folder (resumable)")
    p.add_argument("--data", default="actionatlas-data", help="where ActionAtlas clips are prepared")
    p.add_argument("--ladder", action="store_true", help="the ablation of Table 3 from the same embeddings")
    p.add_argument(
        "--strategies",
        nargs="+",
        default=None,
        metavar="S",
        help="compare script strategies (Table 4): context-rich short-fixed",
    )
    p.add_argument("--fps", type=float, default=None, help="frames per second (default: every frame)")
    p.add_argument("--smooth", type=float, default=1.0, help="smoothing window in seconds")
    p.add_argument("--template", default="{step} in {domain}")
    p.add_argument("--limit", type=int, default=None, help="only the first N clips")
    from actalign.cli import _add_model_options, _add_script_options

    _add_model_options(p)
    _add_script_options(p)


def _rungs(args):
    from actalign.eval.runner import Rung, ladder

    if args.ladder:
        rungs = ladder(args.strategy)
    else:
        rungs = [Rung("mean-pool", method="mean-pool")]
        if not args.strategies:
            rungs.append(
                Rung("ActAlign", template=args.template, smooth_seconds=args.smooth, strategy=args.strategy)
            )
    for s in args.strategies or []:
        rungs.append(Rung(f"ActAlign ({s})", template=args.template, smooth_seconds=args.smooth, strategy=s))
    return rungs


def cmd_eval(args) -> int:
    from actalign.cli import _encoder, _script_source
    from actalign.encoders.cache import EmbeddingCache
    from actalign.eval.datasets import load_manifest, prepare_actionatlas
    from actalign.eval.runner import EvalConfig, evaluate, summary_markdown

    if args.limit is not None and args.limit < 1:
        raise ActAlignError("--limit must be at least 1.")
    rungs = _rungs(args)
    if args.dataset.lower() == "actionatlas":
        manifest = Path(args.data) / "manifest.jsonl"
        if not manifest.exists():
            print(f"preparing ActionAtlas clips in {args.data} (resumable)", file=sys.stderr)
            manifest = prepare_actionatlas(args.data)
    else:
        manifest = Path(args.dataset)
    clips = load_manifest(manifest)
    sources = {}
    for strategy in {r.strategy for r in rungs if r.method == "actalign"}:
        args.strategy = strategy
        sources[strategy] = _script_source(args)
        for domain in sorted({c.domain for c in clips[: args.limit]}):  # fail fast on missing scripts
            wanted = sorted({a for c in clips[: args.limit] if c.domain == domain for a in c.candidates})
            sources[strategy].get(domain, wanted)
    encoder = _encoder(args)
    cache = None if args.no_cache else EmbeddingCache(args.cache_dir)
    config = EvalConfig(
        manifest=str(manifest),
        rungs=rungs,
        fps=args.fps,
        model=args.model or "",
        scripts=list(args.scripts),
        limit=args.limit,
    )
    from tqdm import tqdm

    with tqdm(total=len(clips[: args.limit]), unit="clip", disable=not sys.stderr.isatty()) as bar:
        summary = evaluate(
            clips, encoder, sources, args.out, config, cache, progress=lambda c, skipped: bar.update()
        )
    print(summary_markdown(summary), end="")
    failed = Path(args.out) / "failed.jsonl"
    if failed.exists() and failed.read_text().strip():
        print(f"some clips failed; see {failed}", file=sys.stderr)
    return 0
