"""`actalign plot VIDEO --domain D --candidates ... --out fig.png`: the paper's Figure 4."""

from __future__ import annotations

from actalign.cli import common
from actalign.errors import ActAlignError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw the alignment heatmaps of one video (paper Figure 4)",
        description="Draw the alignment heatmaps of one video, as the paper's Figure 4: for each "
        "candidate, its steps' affinity to every frame with the DTW path over it and the score; "
        "--answer marks the correct candidate.",
    )
    p.add_argument("video", metavar="VIDEO", help="the video to draw")
    common.add_classify_options(p, baseline=False)
    p.add_argument("--out", required=True, help="output .png, .svg or .pdf")
    p.add_argument("--answer", default=None, help="the correct candidate, to mark it (default: none marked)")
    p.add_argument(
        "--top-k", type=common.positive_int, default=None, help="draw the K best candidates (default: all)"
    )


def run(args) -> int:
    from actalign.video import probe

    candidates = common.candidates(args)
    from actalign.viz import check_plot_path

    check_plot_path(args.out)
    common.check_writable(args.out)
    probe(args.video)
    if args.answer is not None:
        args.answer = _candidate_named(args.answer, candidates)
    front = common.front(args)
    front.scripts().get(args.domain, candidates)
    pred = front.classify(args.video, candidates, args.domain)
    from actalign.viz import plot_prediction

    plot_prediction(pred, args.out, answer=args.answer, top_k=args.top_k)
    print(args.out)
    return 0


def _candidate_named(answer: str, candidates: list[str]) -> str:
    """The candidate `answer` names, up to case and spacing, or one sentence saying which exist."""
    from actalign.scripts.parse import norm

    match = next((c for c in candidates if norm(c) == norm(answer)), None)
    if match is None:
        raise ActAlignError(
            f"--answer {answer!r} is not one of the candidates ({', '.join(map(repr, candidates))})."
        )
    return match
