"""Evaluation data: the ActionAtlas benchmark (manifests themselves are `actalign.runner.plan`).

ActionAtlas: rows from `datasets.load_dataset("mrsalehi/ActionAtlas-v1.0", split="test")`, clips
from YouTube through yt-dlp, cut to the rows' start/end, with the benchmark's
`frames_to_obfuscate` regions blurred. Preparing is resumable: finished clips are kept, videos
that are no longer available are listed in `unavailable.jsonl`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from actalign.errors import ActAlignError
from actalign.files import atomic_write_bytes
from actalign.runner.plan import Clip, clean_candidate, write_manifest

DATASET_ID = "mrsalehi/ActionAtlas-v1.0"
ACTIONATLAS_ROWS = 934  # rows of the benchmark's test split
PAPER_EVALUATED = 898  # the clips the ActAlign paper evaluated: those its authors could still download
__all__ = [
    "ACTIONATLAS_ROWS",
    "DATASET_ID",
    "PAPER_EVALUATED",
    "coverage",
    "coverage_line",
    "prepare_actionatlas",
]


# --------------------------------------------------------------------------- ActionAtlas


def load_actionatlas_rows(split: str = "test") -> list[dict]:
    """The benchmark's rows through `datasets` (downloads once, then reads its cache). Offline
    (HF_DATASETS_OFFLINE / HF_HUB_OFFLINE, or the hub unreachable) only the cache is read, and a
    dataset that is not there is one sentence in seconds, not minutes of retries."""
    try:
        import datasets
    except ImportError:
        raise ActAlignError("ActionAtlas needs the datasets package: pip install 'actalign[eval]'.") from None
    if datasets.config.HF_HUB_OFFLINE:
        return _cached_rows(split, "HF_DATASETS_OFFLINE (or HF_HUB_OFFLINE) is set")
    unreachable = _hub_unreachable()
    if unreachable:
        return _cached_rows(split, unreachable)
    try:
        return [dict(r) for r in datasets.load_dataset(DATASET_ID, split=split)]
    except Exception as e:
        raise ActAlignError(
            f"Could not load {DATASET_ID} ({type(e).__name__}: {str(e)[:150]}); it needs the internet "
            "once, then it is cached."
        ) from None


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub cannot be reached (one quick connection to its host), or None when it can."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except (OSError, UnicodeError) as e:
        return f"{url.hostname} cannot be reached ({getattr(e, 'strerror', None) or e})"
    return None


def _cached_rows(split: str, why: str) -> list[dict]:
    """The rows from the local `datasets` cache only (offline mode for this one call)."""
    import datasets
    from huggingface_hub import constants

    before = datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = constants.HF_HUB_OFFLINE = True
    try:
        return [dict(r) for r in datasets.load_dataset(DATASET_ID, split=split)]
    except Exception:
        raise ActAlignError(
            f"ActionAtlas ({DATASET_ID}) is not in the local datasets cache and {why}: it needs the "
            "internet once (then it is cached), or evaluate a manifest of your own."
        ) from None
    finally:
        datasets.config.HF_HUB_OFFLINE, constants.HF_HUB_OFFLINE = before


def atlas_clip(row: dict, video: Path) -> Clip:
    """A Clip from a benchmark row: numbered `choices_str`, 1-based `answer`."""
    choices = [clean_candidate(c) for c in str(row["choices_str"]).split("\n") if c.strip()]
    return Clip(
        id=str(row["id"]),
        video=video,
        domain=str(row["domain"]),
        candidates=tuple(choices),
        answer=int(row["answer"]) - 1,
        question=str(row.get("question", "")),
    )


def yt_dlp_download(youtube_id: str, directory: Path) -> Path:
    """Download one YouTube video (mp4) with yt-dlp; raises ActAlignError when unavailable."""
    try:
        import yt_dlp
    except ImportError:
        raise ActAlignError("Downloading clips needs yt-dlp: pip install 'actalign[eval]'.") from None
    options = {
        "outtmpl": str(directory / f"{youtube_id}.%(ext)s"),
        # video only (no audio is needed), up to 720p: a single file with audio is usually 360p
        # on YouTube, below the 384-pixel input of SigLIP so400m
        "format": "bestvideo[height<=720][ext=mp4]/bestvideo[height<=720]/best[height<=720]/best",
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
    }
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(f"https://www.youtube.com/watch?v={youtube_id}", download=True)
            return Path(ydl.prepare_filename(info))
    except yt_dlp.utils.DownloadError as e:
        raise ActAlignError(f"YouTube video {youtube_id} is not available ({str(e)[:120]}).") from None


def _regions(obfuscate) -> dict[int, list[tuple[int, int, int, int]]]:
    """{frame index: [(x0, y0, x1, y1)]} from the benchmark's frames_to_obfuscate."""
    if not obfuscate:
        return {}
    if isinstance(obfuscate, str):
        obfuscate = json.loads(obfuscate)
    out: dict[int, list[tuple[int, int, int, int]]] = {}
    for frame, items in obfuscate.items():
        for item in items or []:
            vertices = (item or {}).get("bounding_poly", {}).get("vertices", [])
            if vertices:
                xs, ys = [v[0] for v in vertices], [v[1] for v in vertices]
                out.setdefault(int(frame), []).append(
                    (int(min(xs)), int(min(ys)), int(max(xs)), int(max(ys)))
                )
    return out


def _blur(img: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    from PIL import Image, ImageFilter

    for x0, y0, x1, y1 in boxes:
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(img.shape[1], x1), min(img.shape[0], y1)
        if x1 > x0 and y1 > y0:
            region = Image.fromarray(img[y0:y1, x0:x1]).filter(ImageFilter.GaussianBlur(radius=8))
            img[y0:y1, x0:x1] = np.asarray(region)
    return img


def cut_clip(source: Path, out: Path, start: float, end: float, obfuscate=None) -> Path:
    """Re-encode [start, end) seconds of `source` to `out` (H.264), blurring listed regions.

    Frame indices of `frames_to_obfuscate` count frames of the source from its first frame, as
    the benchmark's own scripts read them.
    """
    import av

    regions = _regions(obfuscate)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".mp4")
    os.close(fd)
    written = 0
    try:
        with av.open(str(source)) as src, av.open(tmp, "w") as dst:
            s_in = src.streams.video[0]
            s_in.thread_type = "AUTO"
            rate = s_in.average_rate or 30
            s_out = dst.add_stream("libx264", rate=rate)
            s_out.pix_fmt = "yuv420p"
            s_out.options = {"crf": "18", "preset": "veryfast"}
            t0 = float(s_in.start_time * s_in.time_base) if s_in.start_time is not None else 0.0
            for index, frame in enumerate(src.decode(s_in)):
                ts = frame.time - t0 if frame.time is not None else index / float(rate)
                if ts < start:
                    continue
                if ts >= end:
                    break
                img = frame.to_ndarray(format="rgb24")
                if index in regions:
                    img = _blur(img, regions[index])
                if written == 0:
                    s_out.width, s_out.height = img.shape[1] // 2 * 2, img.shape[0] // 2 * 2
                img = img[: s_out.height, : s_out.width]
                dst.mux(s_out.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")))
                written += 1
            if written:
                dst.mux(s_out.encode())
        if not written:
            raise ActAlignError(f"{source} has no frames between {start} s and {end} s.")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def prepare_actionatlas(
    out_dir: str | os.PathLike,
    rows: list[dict] | None = None,
    download: Callable[[str, Path], Path] = yt_dlp_download,
    keep_sources: bool = False,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Download, cut and blur the benchmark's clips into out_dir; returns its manifest.jsonl.

    Resumable: clips already in out_dir/clips are kept; sources already downloaded are reused.
    Rows whose video cannot be had go to out_dir/unavailable.jsonl with the reason.
    """
    out = Path(out_dir)
    rows = load_actionatlas_rows() if rows is None else rows
    clips_dir, sources = out / "clips", out / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    done, unavailable = [], []
    for row in rows:
        clip_path = clips_dir / f"{row['id']}.mp4"
        if progress:
            progress(str(row["id"]))
        if not clip_path.exists():
            try:
                found = sorted(sources.glob(f"{row['youtube_id']}.*"))
                source = found[0] if found else download(str(row["youtube_id"]), sources)
                cut_clip(
                    source,
                    clip_path,
                    float(row["start_timestamp"]),
                    float(row["end_timestamp"]),
                    row.get("frames_to_obfuscate"),
                )
            except ActAlignError as e:
                unavailable.append({"id": row["id"], "youtube_id": row["youtube_id"], "reason": str(e)})
                continue
        done.append(atlas_clip(row, clip_path))
    if not keep_sources:
        shutil.rmtree(sources, ignore_errors=True)
    atomic_write_bytes(out / "unavailable.jsonl", "".join(json.dumps(u) + "\n" for u in unavailable).encode())
    manifest = out / "manifest.jsonl"
    if not done:
        raise ActAlignError(f"No ActionAtlas clip could be prepared; see {out / 'unavailable.jsonl'}.")
    write_manifest(manifest, done)
    return manifest


def coverage(manifest: str | os.PathLike) -> dict | None:
    """For a manifest made by `prepare_actionatlas`: how many of the benchmark's rows it holds and
    how many could not be had (`unavailable.jsonl` beside it, with each reason), with the paper's
    count of the same kind beside them. None for other manifests."""
    folder = Path(manifest).parent
    listed = folder / "unavailable.jsonl"
    if not listed.is_file():
        return None
    from actalign.files import read_jsonl

    try:
        prepared = sum(1 for line in Path(manifest).read_text(encoding="utf-8").splitlines() if line.strip())
        unavailable, _ = read_jsonl(listed)
    except (OSError, ValueError, ActAlignError):
        return None
    return {
        "name": "ActionAtlas",
        "rows": prepared + len(unavailable),
        "benchmark_rows": ACTIONATLAS_ROWS,
        "prepared": prepared,
        "unavailable": len(unavailable),
        "unavailable_file": str(listed),
        "paper_evaluated": PAPER_EVALUATED,
    }


def coverage_line(c: dict) -> str:
    """One sentence of the summary: how many clips there are, and why not all."""
    return (
        f"{c['name']}: {c['prepared']} of its {c['rows']} clips could be prepared; "
        f"{c['unavailable']} could not (videos gone from YouTube, or refused to yt-dlp; reasons in "
        f"{c['unavailable_file']}). The paper's {c['paper_evaluated']} of {c['benchmark_rows']} is "
        "the same kind of count: the clips its authors could still download."
    )
