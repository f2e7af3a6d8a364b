"""`actalign search INDEX --domain D --candidates ...`: every occurrence of each candidate across an
archive index (`actalign index build`), ranked best first."""

from __future__ import annotations

from actalign.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser(
        "search",
        help="find every occurrence of actions across an indexed archive",
        description="Find every occurrence of each candidate action across the videos of an index "
        "(actalign index build), scored as locate scores them, from the index's frames (no video "
        "is decoded), ranked best first, as a table, JSON, JSON Lines or CSV.",
    )
    p.add_argument("index", metavar="INDEX", help="the index folder")
    common.add_candidate_options(p)
    p.add_argument("--top", type=common.positive_int, default=20, help="keep the N best hits in all")
    common.add_search_options(p, "hits")
    p.add_argument(
        "--format",
        choices=["table", "json", "jsonl", "csv"],
        default="table",
        help="a table, JSON, JSON Lines or CSV",
    )
    p.add_argument("--output", "-o", default=None, help="write to this file (default: stdout)")
    common.add_engine_options(
        p.add_argument_group("where"),
        "local: scan the shards in this process; ray: one Ray task per video (the index folder "
        "must be readable where the tasks run), the same hits",
        workers="threads scanning the shards here, a video each (default: one per core)",
    )
    common.add_model_options(p, default="the index's model; another one is refused", search=True)
    common.add_script_options(p)
    common.add_quiet(p)


def run(args) -> int:
    from actalign.exports import format_hits
    from actalign.index import Index
    from actalign.locate import check_search

    candidates = common.candidates(args)
    front = common.front(args)  # checks the template, smoothing
    check_search(args.nms, args.min_score, args.window)
    common.check_writable(args.output)
    index = Index.open(args.index, config=front.config, model=args.model, cache=front.cache or False)
    hits = front.search(
        index,
        candidates,
        args.domain,
        top=args.top,
        min_score=args.min_score,
        nms=args.nms,
        window_seconds=args.window,
    )
    settings = front.search_settings(
        index, candidates, window_seconds=args.window, nms=args.nms, min_score=args.min_score, top=args.top
    )
    text = format_hits(args.format, hits, settings, domain=args.domain)
    common.write_output(text, args.output)
    return 0
