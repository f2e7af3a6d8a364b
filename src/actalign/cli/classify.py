"""`actalign classify VIDEO... --domain D --candidates A B C`: rank candidate actions per video.

Videos may be files, folders (every video inside) or glob patterns. Results are written as each
video finishes; a bad video gets one error line and the others go on (exit status 1 then).
"""

from __future__ import annotations

import sys
from pathlib import Path

from actalign.cli import common
from actalign.errors import ActAlignError


def add_parser(sub) -> None:
    p = sub.add_parser(
        "classify",
        help="rank candidate actions for videos",
        description="Rank the candidate actions of each video: every candidate's script of visible "
        "steps (from --scripts files, the script store, or the LLM) is aligned to the video's frames "
        "by dynamic time warping, and the best-aligned script wins. Videos may be files, folders or "
        "glob patterns; a video that cannot be read gets one error line and the others go on.",
    )
    p.add_argument("videos", nargs="+", metavar="VIDEO", help="video files, folders or glob patterns")
    common.add_classify_options(p)
    p.add_argument(
        "--top-k", type=common.positive_int, default=None, help="show the K best candidates (default: all)"
    )
    p.add_argument(
        "--format",
        choices=["table", "json", "jsonl", "csv", "vtt", "srt"],
        default="table",
        help="a table, JSON, JSON lines, CSV, or WebVTT/SRT cues of the winning script's steps",
    )
    p.add_argument(
        "--output",
        "-o",
        default=None,
        help="write results to this file (a folder for vtt/srt of several videos) (default: stdout)",
    )
    p.add_argument(
        "--plot",
        default=None,
        metavar="DIR",
        help="also save each video's alignment heatmaps as DIR/<video>.png (default: none)",
    )
    p.add_argument(
        "--save-arrays",
        default=None,
        metavar="DIR",
        help="also save each video's affinity matrices and DTW paths as DIR/<video>.npz (default: none)",
    )


def _check_output(args, several: bool) -> None:
    if args.format in ("vtt", "srt") and several:
        if args.output is None:
            raise ActAlignError(
                f"--format {args.format} with several videos needs --output FOLDER (a file per video)."
            )
        if Path(args.output).suffix.lower() in (".vtt", ".srt") and not Path(args.output).is_dir():
            raise ActAlignError(
                f"With several videos --output names a folder (a .{args.format} file per video), not "
                f"the file {args.output}."
            )
        common.make_folder(args.output, "output folder")
    else:
        common.check_writable(args.output)


def _report(video: str, e: ActAlignError) -> None:
    """One line per failed video, naming it once."""
    from actalign.cli import as_flags

    text = as_flags(str(e))
    print(f"error: {text}" if str(video) in text else f"error: {video}: {text}", file=sys.stderr)


def run(args) -> int:
    from actalign.exports import PredictionWriter
    from actalign.progress import Progress
    from actalign.video import find_videos, probe

    candidates = common.candidates(args)
    if args.method != "actalign" and args.alignment != "global":
        raise ActAlignError(
            f"--alignment applies to actalign; the {args.method} baseline aligns nothing. Drop one of them."
        )
    if args.plot and args.method != "actalign":
        raise ActAlignError(
            f"--plot draws alignments; the {args.method} baseline has none. Use --method actalign."
        )
    if args.save_arrays and args.method in ("xclip", "vlm"):
        raise ActAlignError(f"--save-arrays saves alignments; the {args.method} baseline has none.")
    videos = find_videos(args.videos)
    if not videos:
        raise ActAlignError("No videos found in the given folders or patterns.")
    several = len(videos) > 1
    _check_output(args, several)
    if args.plot:
        common.make_folder(args.plot, "plot folder")
    if args.save_arrays:
        common.make_folder(args.save_arrays, "arrays folder")
    good, failed = [], 0
    for v in videos:  # missing, corrupt or video-less files fail here, before any model is loaded
        try:
            probe(v)
            good.append(v)
        except ActAlignError as e:
            if not several:
                raise
            _report(v, e)
            failed += 1
    front = common.front(args)
    if args.method == "actalign":
        front.scripts().get(args.domain, candidates)  # missing scripts: say so before loading any model
    from actalign.exports import file_names

    names = file_names(videos)  # one output file per video, never two videos on one name
    writer = PredictionWriter(args.format, args.output, args.top_k, several=several, names=names)
    baseline = None
    if args.method in ("xclip", "vlm"):
        # X-CLIP's checkpoint: --xclip, as in eval; --model is kept as an alias with --method xclip
        spec = (args.xclip or args.model) if args.method == "xclip" else args.vlm
        baseline = common.baseline_for(args, args.method, spec)
    for video in good:
        try:
            if baseline is not None:
                pred = baseline.predict(video, candidates, args.domain, args.start, args.end)
            else:
                with Progress(Path(video).name, unit="frame") as bar:
                    pred = front.classify(
                        video,
                        candidates,
                        args.domain,
                        args.start,
                        args.end,
                        on_frames=bar.update,
                        on_total=bar.set_total,
                    )
        except ActAlignError as e:
            if not several:
                raise
            _report(video, e)
            failed += 1
            continue
        writer.add(pred)
        if args.save_arrays:
            from actalign.exports import save_arrays

            save_arrays(pred, Path(args.save_arrays) / f"{names[str(video)]}.npz")
        if args.plot:
            from actalign.viz import plot_prediction

            plot_prediction(pred, Path(args.plot) / f"{names[str(video)]}.png", top_k=args.top_k)
    writer.close()
    return 1 if failed else 0
