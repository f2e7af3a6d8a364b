"""What a run works on: clips from a JSONL manifest, or from videos with one domain and one list
of candidates. Every row is checked; a bad row becomes a failure with its reason (and line), and
the rest of the run goes on.

Manifest rows (one JSON object per line): `video` (path, relative to the manifest's folder),
`domain`, `candidates` (list of action names, numbering such as "1. Tip-in" is removed), optional
`answer` (0-based index; required by `eval`), `id`, `start`/`end` (seconds), `question`, `span`
([start, end] seconds of the action inside the video, for untrimmed clips; eval reports span
IoU with it). Unknown
fields are ignored, so ../shared/data/actionatlas-samples/manifest.jsonl loads as it is.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from actalign.candidates import check_candidates, check_name, clean_candidate
from actalign.errors import ActAlignError
from actalign.files import check_text, parse_json, read_text


@dataclass(frozen=True)
class Clip:
    """One unit of work: a video (or a span of it), its domain and candidate actions."""

    id: str
    video: Path
    domain: str
    candidates: tuple[str, ...]
    answer: int | None = None
    start: float | None = None
    end: float | None = None
    question: str = ""
    span: tuple[float, float] | None = None  # where the action truly is (seconds), when known


@dataclass
class Plan:
    """The clips of a run, the rows that could not become clips, and where they came from."""

    clips: list[Clip]
    failures: list[dict] = field(default_factory=list)
    source: str = ""
    lines: dict[str, int] = field(default_factory=dict)  # clip id -> manifest line

    def __len__(self) -> int:
        return len(self.clips)

    def __iter__(self):
        return iter(self.clips)

    def failure(self, clip: Clip, reason: str) -> dict:
        """The failed.jsonl entry of a clip that could not be done: id, video, reason, its line."""
        entry = {"id": clip.id, "video": str(clip.video), "reason": reason}
        if clip.id in self.lines:
            entry["line"] = self.lines[clip.id]
        return entry


class BadRow(ValueError):
    pass


def _text(row: dict, name: str, required: bool = True) -> str | None:
    value = row.get(name)
    if value is None:
        if required:
            raise BadRow(f"lacks the field {name!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"{name!r} must be non-empty text, got {value!r}")
    try:
        return check_text(value.strip(), f"{name!r}")
    except ActAlignError as e:
        raise BadRow(str(e)) from None


def _seconds(row: dict, name: str) -> float | None:
    value = row.get(name)
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise BadRow(f"{name!r} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _candidates(row: dict) -> tuple[str, ...]:
    """The row's candidates under the one rule of `actalign.candidates`."""
    raw = row.get("candidates")
    if raw is None:
        raise BadRow("lacks the field 'candidates'")
    if not isinstance(raw, list):
        raise BadRow("'candidates' must be a list of action names")
    if any(not isinstance(c, str) or not clean_candidate(c) for c in raw):
        bad = next(c for c in raw if not isinstance(c, str) or not clean_candidate(c))
        raise BadRow(f"every candidate must be non-empty text, got {bad!r}")
    try:
        return tuple(check_candidates(raw, "the row"))
    except ActAlignError as e:
        raise BadRow(str(e).rstrip(".")[0].lower() + str(e).rstrip(".")[1:]) from None


def _answer(row: dict, n: int, required: bool) -> int | None:
    value = row.get("answer")
    if value is None:
        if required:
            raise BadRow("lacks the field 'answer' (the 0-based index of the correct candidate)")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < n:
        raise BadRow(f"'answer' must be a 0-based index below {n}, got {value!r}")
    return value


def clip_from_row(row: object, base: Path, require_answer: bool = False) -> Clip:
    """A Clip from one manifest row, or BadRow saying what is wrong with it."""
    if not isinstance(row, dict):
        raise BadRow("is not a JSON object")
    video_text = _text(row, "video")
    domain = _text(row, "domain")
    try:
        check_name(domain, "The domain")
    except ActAlignError as e:
        raise BadRow(str(e)) from None
    candidates = _candidates(row)
    answer = _answer(row, len(candidates), require_answer)
    start, end = _seconds(row, "start"), _seconds(row, "end")
    if start is not None and end is not None and start >= end:
        raise BadRow(f"'start' ({start}) must be before 'end' ({end})")
    if end is not None and end <= 0:
        raise BadRow("'end' must be after 0 s")
    raw_id = row.get("id")
    if raw_id is not None and (
        isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)) or not str(raw_id).strip()
    ):
        raise BadRow(f"'id' must be text or a whole number, got {raw_id!r}")
    video = Path(video_text).expanduser()
    video = video if video.is_absolute() else base / video
    question = row.get("question") if isinstance(row.get("question"), str) else ""
    span = row.get("span")
    if span is not None:
        ok = (
            isinstance(span, list)
            and len(span) == 2
            and all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in span
            )
        )
        if not ok or not 0 <= span[0] < span[1]:
            raise BadRow(f"'span' must be [start, end] seconds with start < end, got {span!r}")
        span = (float(span[0]), float(span[1]))
    video_path = Path(video_text)
    default_id = str(video_path.with_suffix("") if video_path.name else video_path)
    if start is not None or end is not None:  # two windows of one video are two clips
        default_id += f"@{'' if start is None else f'{start:g}'}-{'' if end is None else f'{end:g}'}"
    return Clip(
        id=str(raw_id).strip() if raw_id is not None else default_id,
        video=video,
        domain=domain,
        candidates=candidates,
        answer=answer,
        start=start,
        end=end,
        question=question,
        span=span,
    )


def load_manifest(path: str | os.PathLike, require_answer: bool = False) -> Plan:
    """The clips of a JSONL manifest; bad rows go to `Plan.failures` with their line and reason.

    Raises ActAlignError only when the file itself cannot be used (missing, not UTF-8, no rows).
    """
    p = Path(path).expanduser()
    from actalign.video import VIDEO_SUFFIXES

    if p.suffix.lower() in VIDEO_SUFFIXES:
        raise ActAlignError(
            f"{p} is a video; this command takes a manifest (.jsonl, one clip per line). For videos "
            "use actalign classify, or actalign batch VIDEOS `domain=D` `candidates=A B`"
        )
    text = read_text(p, "manifest")
    numbered = []
    failures: list[dict] = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines: U+2028 is valid inside JSON
        if not line.strip():
            continue
        try:
            numbered.append((n, parse_json(line, f"line {n}")))
        except ActAlignError as e:
            failures.append(_failure(None, n, str(e)))
    clips, ids, bad = _clips(numbered, p.parent, require_answer)
    failures = sorted(failures + bad, key=lambda f: f["line"])
    if not clips and not failures:
        raise ActAlignError(f"The manifest {p} has no rows.")
    if not clips:
        raise ActAlignError(
            f"The manifest {p} has no usable row ({len(failures)} rejected; the first: "
            f"{failures[0]['reason']}). A manifest is JSON Lines: one object with video, domain and "
            "candidates per line."
        )
    return Plan(clips, failures, str(p.resolve()), lines=ids)


def _clips(
    numbered: list[tuple[int, object]], base: Path, require_answer: bool
) -> tuple[list[Clip], dict[str, int], list[dict]]:
    """Clips of numbered rows (videos relative to `base`), their lines, and the rejected rows."""
    clips: list[Clip] = []
    failures: list[dict] = []
    ids: dict[str, int] = {}
    for n, row in numbered:
        try:
            clip = clip_from_row(row, base, require_answer)
        except BadRow as e:
            failures.append(_failure(row, n, f"line {n} {e}"))
            continue
        if clip.id in ids:
            failures.append(
                _failure(
                    row,
                    n,
                    f"line {n}: the id {clip.id!r} already appears on line {ids[clip.id]}; "
                    "ids must be unique",
                )
            )
            continue
        ids[clip.id] = n
        clips.append(clip)
    return clips, ids, failures


def plan_rows(rows: list[dict], require_answer: bool = False, source: str = "python") -> Plan:
    """The clips of manifest rows given as dicts (a video, domain and candidates each; "line" in a
    failure is the row's 1-based position); videos relative to the working folder."""
    if not rows:
        raise ActAlignError("No clips given.")
    clips, ids, failures = _clips(list(enumerate(rows, 1)), Path.cwd(), require_answer)
    return Plan(clips, failures, source, lines=ids)


def _failure(row: object, line: int, reason: str) -> dict:
    """A manifest row that could not become a clip ("rejected": it never ran)."""
    out: dict = {"line": line, "reason": reason, "rejected": True}
    if isinstance(row, dict):
        for key in ("id", "video"):
            if isinstance(row.get(key), (str, int)) and not isinstance(row.get(key), bool):
                out[key] = row[key]
    return out


def plan_videos(
    inputs: list[str],
    domain: str,
    candidates: list[str],
    start: float | None = None,
    end: float | None = None,
) -> Plan:
    """Clips for video files, folders (every video inside) and glob patterns, all with the same
    domain and candidates. The id of each clip is its path as found."""
    from actalign.candidates import check_candidates
    from actalign.video import find_videos

    if not domain or not str(domain).strip():
        raise ActAlignError("Give `domain` with videos (or pass a manifest with a domain per row).")
    check_name(str(domain).strip(), "The domain")
    names = tuple(check_candidates(candidates))
    videos = find_videos(list(inputs))
    if not videos:
        raise ActAlignError("No videos found in the given folders or patterns.")
    clips = [Clip(str(v), Path(v).expanduser(), domain.strip(), names, None, start, end) for v in videos]
    # the inputs as given, not the files found: new footage in a folder extends the run
    given = "|".join(str(Path(i).expanduser().absolute()) for i in inputs)
    window = f"|start={start}|end={end}" if start is not None or end is not None else ""
    return Plan(clips, [], f"videos:{given}|domain={domain.strip()}|candidates={list(names)}{window}")


def write_manifest(path: Path, clips, extra: dict | None = None) -> None:
    """A manifest for `clips` (videos relative to the manifest's folder), written atomically."""
    import json

    from actalign.files import atomic_write_text

    rows = []
    for c in clips:
        row = {
            "id": c.id,
            "video": os.path.relpath(c.video, path.parent),
            "domain": c.domain,
            "candidates": list(c.candidates),
        }
        if c.answer is not None:
            row["answer"] = c.answer
        if c.start is not None:
            row["start"] = c.start
        if c.end is not None:
            row["end"] = c.end
        if c.question:
            row["question"] = c.question
        if c.span is not None:
            row["span"] = list(c.span)
        if extra and c.id in extra:
            row.update(extra[c.id])
        rows.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(rows) + "\n")
