"""`actalign index build|info|remove`: an archive's frame embeddings on disk, made once and
searched with `actalign search`."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from actalign.cli import common
from actalign.errors import ActAlignError

PRECISIONS = ("float32", "bfloat16", "float16")  # actalign.precision.PRECISIONS, without numpy (tested)


def add_parser(sub) -> None:
    p = sub.add_parser(
        "index",
        help="embed an archive of videos once, for actalign search",
        description="An index of an archive: every video's frame embeddings on disk (one shard per "
        "video, a JSON catalogue), made once and searched with actalign search. build adds videos "
        "(unchanged ones are skipped, changed ones embedded again, a killed build goes on where it "
        "stopped), info describes an index, remove drops videos from it.",
    )
    isub = p.add_subparsers(
        dest="index_command", required=True, metavar="ACTION", help="build, info or remove"
    )
    b = isub.add_parser(
        "build",
        help="add videos to an index (made when new)",
        description="Embed videos into an index (made when it does not exist yet): each video "
        "through the embedding cache, its shard written whole before the catalogue names it. "
        "Videos already indexed and unchanged are skipped.",
    )
    b.add_argument("inputs", nargs="+", metavar="VIDEO", help="videos, folders and globs")
    b.add_argument("--out", required=True, metavar="INDEX", help="the index folder")
    b.add_argument(
        "--fps",
        type=common.fps,
        default=None,
        help="frames sampled per second (default: 2 for a new index, else the index's)",
    )
    b.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="how the embeddings are stored: float16 halves the size of float32 and moves scores "
        "by under 1e-3; float32 scores exactly as locate (default: float16 for a new index, else "
        "the index's)",
    )
    common.add_engine_options(
        b.add_argument_group("where"),
        "local: decode and encode here, one video after the other; ray: the videos spread over "
        "Ray's decode tasks and encoder actors (as batch --engine ray), the same embeddings",
        workers="Ray encoder actors on a cluster without GPUs (default: one per 4 CPUs)",
    )
    common.add_model_options(b, default="siglip-so400m for a new index, else the index's model")
    common.add_quiet(b)
    i = isub.add_parser(
        "info",
        help="what an index holds",
        description="Describe an index: its videos, hours and frames, the model and precision, its "
        "size on disk, and the indexed videos whose files are gone.",
    )
    i.add_argument("index", metavar="INDEX", help="the index folder")
    i.add_argument("--json", action="store_true", help="print JSON instead of lines")
    r = isub.add_parser(
        "remove",
        help="drop videos from an index",
        description="Drop videos from an index (by the path they were indexed under, or the name "
        "given to their embeddings), their shards with them.",
    )
    r.add_argument("index", metavar="INDEX", help="the index folder")
    r.add_argument("videos", nargs="+", metavar="VIDEO", help="videos to drop")


def run(args) -> int:
    return {"build": build, "info": info, "remove": remove}[args.index_command](args)


def build(args) -> int:
    from actalign.index import DEFAULT_FPS, DEFAULT_PRECISION, Index
    from actalign.video import find_videos

    front = common.front(args)  # checks every value before any work
    videos = find_videos(args.inputs)
    if not videos:
        raise ActAlignError("No videos found in the given folders or patterns.")
    if Path(args.out).expanduser().joinpath("index.json").exists():
        index = Index.open(
            args.out,
            config=front.config,
            model=args.model,
            fps=args.fps,
            precision=args.precision,
            cache=front.cache or False,
        )
    else:
        index = Index.create(
            args.out,
            config=front.config,
            model=args.model,
            fps=args.fps or DEFAULT_FPS,
            precision=args.precision or DEFAULT_PRECISION,
            cache=front.cache or False,
        )
    with index.writing():  # one build at a time: another gets one sentence
        return _build_into(index, videos)


def _build_into(index, videos: list) -> int:

    index.tidy()  # what a killed build left
    gone = index.missing()
    if gone:
        shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
        warnings.warn(
            f"{len(gone)} indexed video(s) are gone since indexing: {shown}; their frames stay "
            "searchable (`index remove` drops them).",
            stacklevel=1,
        )
    added = skipped = 0
    failed: list[str] = []
    for video, done in _embed(index, videos):
        if isinstance(done, str):
            failed.append(f"{video}: {done}")
        else:
            added += done
            skipped += not done
    info = index.info()
    print(
        f"{index.root}: {added} video(s) embedded, {skipped} unchanged; {info['videos']} video(s), "
        f"{_length(info['hours'] * 3600)}, {info['frames']} frames"
    )
    if failed:
        print(f"{len(failed)} video(s) failed; first: {failed[0]}", file=sys.stderr)
        return 1
    return 0


def _embed(index, videos: list):
    """(video, True | False | why it failed) per video: here one by one with a progress bar each,
    or all at once on Ray (`index.add_videos`)."""
    from actalign.progress import Progress

    if index.config.engine == "ray":
        with Progress("videos on Ray", unit="frame") as bar:
            yield from index.add_videos(videos, on_frames=bar.update).items()
        return
    for video in videos:
        try:
            with Progress(Path(video).name, unit="frame") as bar:
                yield video, index.add_video(video, on_frames=bar.update, on_total=bar.set_total)
        except (ActAlignError, OSError) as e:
            yield video, getattr(e, "strerror", None) or str(e)


def info(args) -> int:
    import json

    from actalign.index import Index

    data = Index.open(args.index, cache=False).info()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"index      {data['path']}")
    print(f"videos     {data['videos']}")
    print(f"footage    {_length(data['hours'] * 3600)}")
    print(f"frames     {data['frames']} at {data['fps']:g} fps")
    print(f"model      {data['model']} ({data['identity']}, {data['dim']}-d)")
    print(f"precision  {data['precision']}")
    print(f"size       {data['size_bytes'] / 2**20:.1f} MiB")
    for e in data["entries"]:
        gone = ", gone (searchable from the index)" if e["gone"] else ""
        print(f"video      {e['name']} ({_length(e['seconds'])}, {e['frames']} frames{gone})")
    return 0


def _length(seconds: float) -> str:
    """A span of footage in the unit that reads best: 16.5 s, 12.3 min, 2.50 hours."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} hours"


def remove(args) -> int:
    from actalign.index import Index

    index = Index.open(args.index, cache=False)
    missing = [v for v in args.videos if not index.remove(v)]
    for v in missing:
        print(f"warning: {v} is not in the index", file=sys.stderr)
    print(f"{index.root}: {len(args.videos) - len(missing)} video(s) removed, {len(index.videos)} left")
    return 1 if missing else 0
