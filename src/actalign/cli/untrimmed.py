"""`actalign untrimmed MANIFEST --out DIR [--pad 10]`: padded (untrimmed) copies of every clip of a
manifest, with the action's true span in each row, to measure local against global alignment."""

from __future__ import annotations

from actalign.cli import common
from actalign.text import plural


def add_parser(sub) -> None:
    p = sub.add_parser(
        "untrimmed",
        help="pad every clip of a manifest with other clips' footage",
        description="Make untrimmed copies of every clip of a manifest: each is padded before and "
        "after with footage of the other clips, and the new manifest.jsonl records the action's true "
        "span in each row, so that eval can measure local (subsequence) against global alignment.",
    )
    p.add_argument("manifest", metavar="MANIFEST", help="a JSONL manifest")
    p.add_argument("--out", required=True, help="folder for the padded clips and their manifest.jsonl")
    p.add_argument(
        "--pad",
        type=common.bounded(common.seconds, 3600, "an hour of padding on each side"),
        default=10.0,
        help="seconds of footage before and after each clip, at most 3600",
    )
    p.add_argument("--seed", type=common.seed, default=0, help="which footage pads which clip, 0 to 2**32-1")
    common.add_quiet(p)


def run(args) -> int:
    from actalign.eval.untrimmed import make_untrimmed
    from actalign.progress import Progress
    from actalign.runner.plan import load_manifest

    plan = load_manifest(args.manifest)
    out = common.make_folder(args.out, "output folder")
    written = [0]

    def on_frames(n: int) -> None:  # a log line every few seconds, even within a long clip
        written[0] += n
        bar.update(0, note=f"{written[0]} frames written")

    with Progress("clips", total=len(plan.clips), unit="clip", enabled=not args.quiet) as bar:
        manifest, failures = make_untrimmed(
            plan,
            out,
            pad=args.pad,
            seed=args.seed,
            progress=lambda c: bar.update(),
            on_frames=on_frames,
        )
    done = len(plan.clips) - sum(1 for f in failures if not f.get("rejected"))
    print(f"{plural(done, 'padded clip')}; manifest: {manifest}")
    if failures:
        common.report_failures(str(out), failures)
    print(f"measure them: actalign eval {manifest} --out RUN --ladder")
    return 1 if failures else 0
