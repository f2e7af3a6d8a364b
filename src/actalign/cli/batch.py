"""`actalign batch INPUT... --out DIR`: classify many clips, resumably, on this machine or a Ray
cluster. INPUT is a JSONL manifest (video, domain, candidates per row) or videos / folders /
globs with --domain and --candidates."""

from __future__ import annotations

from actalign.cli import common
from actalign.errors import ActAlignError
from actalign.text import plural


def add_parser(sub) -> None:
    p = sub.add_parser(
        "batch",
        help="classify many clips (a manifest or videos) into a run folder",
        description="Classify many clips into a run folder (predictions.jsonl: one row per clip as "
        "clips finish; failed.jsonl; config.json; scripts.json: the scripts used; eval adds "
        "summary.json and summary.md): either one JSONL manifest (a video, domain and candidates per row) or "
        "videos, folders and globs with --domain and --candidates. Decoding runs in worker "
        "processes (or on a Ray cluster); an interrupted run resumes where it stopped when run again "
        "with the same --out.",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="a manifest .jsonl, or videos, folders and globs"
    )
    common.add_candidate_options(p, required=False)
    common.add_sampling_options(p)
    common.add_method_options(p)
    common.add_run_options(p)
    common.add_model_options(p)
    common.add_script_options(p)
    common.add_quiet(p)


def plan(args):
    from actalign.runner.plan import load_manifest, plan_videos

    if len(args.inputs) == 1 and args.inputs[0].lower().endswith((".jsonl", ".json")):
        if args.domain or args.candidates or args.candidates_file:
            raise ActAlignError(
                "A manifest names each clip's domain and candidates; drop --domain/--candidates."
            )
        if args.start is not None or args.end is not None:
            raise ActAlignError("With a manifest, give start/end per row, not --start/--end.")
        return load_manifest(args.inputs[0])
    manifests = [i for i in args.inputs if i.lower().endswith((".jsonl", ".json"))]
    if manifests:
        raise ActAlignError(
            f"{manifests[0]} is a manifest: give it alone (one manifest per run), or give videos, "
            "folders and globs with --domain and --candidates."
        )
    if not args.domain:
        raise ActAlignError("Give --domain and --candidates with videos (or pass a manifest .jsonl).")
    return plan_videos(args.inputs, args.domain, common.candidates(args), args.start, args.end)


def run(args) -> int:
    front = common.front(args)  # checks the template and every value before any work
    clips = plan(args)
    common.check_out(args)
    result = front.batch(clips, args.out, limit=args.limit, recorded_scripts=args.recorded_scripts)
    where = f"{args.out.rstrip('/')}/predictions.jsonl"
    left = len(clips.clips) - result.planned
    limited = (
        f" (--limit {args.limit}: {plural(left, 'more clip')} in the input; rerun without it)"
        if left > 0
        else ""
    )
    print(f"{len(result.rows)} of {plural(result.planned, 'clip')} done{limited}; predictions in {where}")
    common.report_failures(args.out, result.failures)
    return 1 if result.failures else 0
