"""`actalign locate VIDEO --domain D --candidates ...`: every occurrence of each candidate in a long
video, streamed (memory holds one window of frames), as a table, JSON, or WebVTT / SRT cues."""

from __future__ import annotations

from pathlib import Path

from actalign.cli import common


def add_parser(sub) -> None:
    p = sub.add_parser(
        "locate",
        help="find every occurrence of candidate actions in a long video",
        description="Find every occurrence of each candidate action in a long video: each script is "
        "aligned by subsequence DTW over windows of frames, overlapping finds are reduced by "
        "non-maximum suppression, and each occurrence gets its span, score and steps, as a table, "
        "JSON or WebVTT/SRT cues. Memory holds one window of frames, however long the video.",
    )
    p.add_argument("video", metavar="VIDEO", help="the video to search")
    common.add_candidate_options(p)
    p.add_argument("--fps", type=common.fps, default=2.0, help="frames sampled per second")
    p.add_argument(
        "--start", type=common.seconds, default=None, help="start time in seconds (default: the beginning)"
    )
    p.add_argument(
        "--end", type=common.positive_float, default=None, help="end time in seconds (default: the end)"
    )
    common.add_search_options(p)
    p.add_argument(
        "--top",
        type=common.positive_int,
        default=None,
        help="keep the N best occurrences per action (default: all)",
    )
    p.add_argument(
        "--format",
        choices=["table", "json", "vtt", "srt"],
        default="table",
        help="a table, JSON, or WebVTT/SRT cues (one per occurrence)",
    )
    p.add_argument("--output", "-o", default=None, help="write to this file (default: stdout)")
    common.add_model_options(p)
    common.add_script_options(p)
    common.add_quiet(p)


def run(args) -> int:
    from actalign.exports import format_detections
    from actalign.locate import check_search
    from actalign.progress import Progress
    from actalign.video import probe

    candidates = common.candidates(args)
    front = common.front(args)  # checks the template, fps, smoothing
    check_search(args.nms, args.min_score, args.window)
    common.check_writable(args.output)
    probe(args.video)
    front.scripts().get(args.domain, candidates)
    with Progress(Path(args.video).name, unit="frame") as bar:
        found = front.locate(
            args.video,
            candidates,
            args.domain,
            min_score=args.min_score,
            nms=args.nms,
            window_seconds=args.window,
            top=args.top,
            on_frames=bar.update,
            on_total=bar.set_total,
        )
    settings = front.locate_settings(
        candidates=candidates,
        start=args.start,
        end=args.end,
        window_seconds=args.window,  # also the span that "background" is measured over
        nms=args.nms,
        min_score=args.min_score,
        top=args.top,
    )
    text = format_detections(args.format, args.video, found, settings, domain=args.domain)
    common.write_output(text, args.output)
    return 0
