"""Every output format in one place: the table, JSON, CSV of predictions, and WebVTT / SRT cues
(spans and steps) that video players show as subtitles. The CLI, the batch runner and the app
all format through here, so they agree to the byte.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from actalign.text import plural, printable

FORMATS = ("table", "json", "jsonl", "csv", "vtt", "srt")
CUE_FORMATS = ("vtt", "srt")
# What a score is, per kind: the column name of the table and what the README says of it.
SCORE_KINDS: dict[str, tuple[str, str]] = {
    "eq13": ("score", "the path-normalised DTW score of Eq. 13, in [0, 1]"),
    "affinity": ("score", "the affinity (Eq. 9) of the mean frame embedding, in [0, 1]"),
    "logit": ("logit", "X-CLIP's video-text logit (its learned scale times a cosine; not in [0, 1])"),
    "loglik": ("loglik", "the video LLM's log-likelihood of the choice's number (<= 0)"),
    "answer": ("answer", "1 for the choice the video LLM answered (top-1 only)"),
}


CSV_FIELDS = ["video", "domain", "method", "alignment", "rank", "action", "score", "span_start", "span_end"]


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def candidate_dict(c) -> dict:
    """One ranked candidate as JSON-ready data (span only with subsequence alignment)."""
    out = {"rank": c.rank, "action": c.action, "score": round(float(c.score), 6)}
    if c.span is not None:
        out["span"] = {"start": _r(c.span[0]), "end": _r(c.span[1])}
    out["segments"] = [{"step": s.step, "start": _r(s.start), "end": _r(s.end)} for s in c.segments]
    return out


def prediction_dict(p, top_k: int | None = None) -> dict:
    """One video's prediction as JSON-ready data (the form of `classify --format json`)."""
    return {
        "video": p.video,
        "domain": p.domain,
        "method": p.method,
        "alignment": p.alignment,
        "start": p.start,
        "end": p.end,
        "frames": p.frames,
        "score_kind": p.score_is,
        "settings": p.settings,
        "predictions": [candidate_dict(c) for c in p.candidates[:top_k]],
    }


def to_json(predictions: Sequence, top_k: int | None = None) -> str:
    """All predictions as one JSON document: {"videos": [...]}."""
    return (
        json.dumps({"videos": [prediction_dict(p, top_k) for p in predictions]}, indent=2, ensure_ascii=False)
        + "\n"
    )


def to_jsonl(predictions: Sequence, top_k: int | None = None) -> str:
    """One JSON line per video."""
    return "".join(json.dumps(prediction_dict(p, top_k), ensure_ascii=False) + "\n" for p in predictions)


def csv_rows(p, top_k: int | None = None) -> list[list]:
    """CSV rows (CSV_FIELDS) of one prediction, best candidate first."""
    rows = []
    for c in p.candidates[:top_k]:
        span = c.span or (None, None)
        rows.append(
            [
                p.video,
                p.domain,
                p.method,
                p.alignment,
                c.rank,
                c.action,
                f"{c.score:.6f}",
                _r(span[0]),
                _r(span[1]),
            ]
        )
    return rows


def to_csv(predictions: Sequence, top_k: int | None = None, header: bool = True) -> str:
    """All predictions as CSV, one row per video and candidate."""
    buf = io.StringIO()
    w = csv.writer(buf)
    if header:
        w.writerow(CSV_FIELDS)
    for p in predictions:
        w.writerows(csv_rows(p, top_k))
    return buf.getvalue()


def to_table(predictions: Sequence, top_k: int | None = None) -> str:
    """The human-readable table: the ranking and the winner's steps in seconds."""
    out = []
    for p in predictions:
        if p.start is None and p.end is None:
            where = ""
        elif p.end is None:
            where = f", from {p.start:g} s"
        else:
            where = f", {p.start or 0:g}-{p.end:g} s"
        n = p.frames
        out.append(
            f"{p.video}  ({p.domain}, {n} frame{'' if n == 1 else 's'}{where}, {p.method}"
            + (f", {p.alignment} alignment" if p.alignment != "global" else "")
            + ")"
        )
        local = p.alignment != "global"
        # the span (fixed width) before the action (any width), so that the columns line up
        column = SCORE_KINDS.get(p.score_is, ("score", ""))[0]
        out.append(f"  {'rank':>4}  {column:>7}  " + (f"{'span':<18}  " if local else "") + "action")
        for c in p.candidates[:top_k]:
            span = f"{c.span[0]:7.2f} - {c.span[1]:6.2f} s  " if local and c.span is not None else ""
            out.append(f"  {c.rank:>4}  {c.score:7.4f}  {span}{printable(c.action)}")
        if "answer" in p.settings:  # a video LLM's answer, as it wrote it (top-1 only: no ranking)
            if not p.candidates:
                out.append(f"  {'-':>4}  {'':>7}  no answer (it named no choice)")
            out.append(f"  answer as written: {printable(repr(p.settings['answer']))}")
        if p.candidates and p.top.segments:  # steps may be an LLM's text: shown, never obeyed by the terminal
            out.append(f"  steps of {printable(repr(p.top.action))}:")
            for s in p.top.segments:
                out.append(f"    {s.start:7.2f} - {s.end:6.2f} s  {printable(s.step)}")
        out.append("")
    return "\n".join(out) + ("\n" if out else "")


def file_names(videos: Sequence) -> dict[str, str]:
    """A distinct output name per video: its stem, or where two videos share a stem (clip.mp4 in
    two folders), its path below their common folder with '/' written as '__' (a__clip.mp4)."""
    import os
    from collections import defaultdict
    from pathlib import Path

    paths = [Path(v).expanduser().absolute() for v in videos]
    by_stem: dict[str, list[Path]] = defaultdict(list)  # linear in the videos: folders hold thousands
    for p in paths:
        by_stem[p.stem].append(p)
    common = {stem: os.path.commonpath([q.parent for q in ps]) for stem, ps in by_stem.items() if len(ps) > 1}
    names: dict[str, str] = {}
    taken: set[str] = set()
    for v, p in zip(videos, paths):
        name = p.stem
        if name in common:
            name = "__".join(Path(os.path.relpath(p, common[name])).parts)
        base, n = name, 1
        while name in taken:  # the same file given twice, or a name that happens to match another
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names[str(v)] = name
    return names


def save_arrays(p, path) -> None:
    """One video's arrays for analysis, as .npz: `timestamps` (T,), `actions` (M,) best first,
    and for each candidate i in that order `affinity_i` (K_i, T) and `path_i` (L_i, 2)."""
    import io as _io

    import numpy as np

    from actalign.files import atomic_write_bytes

    arrays = {"timestamps": np.asarray(p.timestamps), "actions": np.array([c.action for c in p.candidates])}
    for i, c in enumerate(p.candidates):
        if c.affinity is not None:
            arrays[f"affinity_{i}"] = c.affinity
            arrays[f"path_{i}"] = c.path
        arrays[f"score_{i}"] = np.array(c.score)
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


# --------------------------------------------------------------------------- cues


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def prediction_cues(p) -> list[Cue]:
    """The top candidate's span (or the whole clip) and its steps, as timed cues; "no answer" over
    the clip where a video LLM named no choice."""
    cues = []
    if not p.candidates:
        return [Cue(*_clip_time(p), "no answer")]
    c = p.top
    if c.segments:
        lo = c.span[0] if c.span else c.segments[0].start
        hi = c.span[1] if c.span else c.segments[-1].end
        cues.append(Cue(lo, hi, f"{c.action} (score {c.score:.3f})"))
        cues += [Cue(s.start, s.end, f"{k}. {s.step}") for k, s in enumerate(c.segments, 1)]
    else:
        cues.append(Cue(*_clip_time(p), f"{c.action} (score {c.score:.3f})"))
    return cues


def _clip_time(p) -> tuple[float, float]:
    """(start, end) of what a prediction saw: its frames, else (a baseline) its span."""
    t = p.timestamps
    lo = float(t[0]) if len(t) else float(p.start or 0.0)
    hi = p.video_end if p.video_end is not None else (float(t[-1]) if len(t) else p.end)
    return lo, float(lo if hi is None else hi)


def detection_cues(detections: Iterable) -> list[Cue]:
    """Cues for `locate` detections: each span, then its steps."""
    cues = []
    for d in sorted(detections, key=lambda d: (d.start, -d.score)):
        cues.append(Cue(d.start, d.end, f"{d.action} (score {d.score:.3f})"))
        cues += [Cue(s.start, s.end, f"{d.action}: {k}. {s.step}") for k, s in enumerate(d.segments, 1)]
    return cues


def format_detections(
    fmt: str, video: str, detections, settings: dict | None = None, domain: str | None = None
) -> str:
    """`actalign locate`'s output: a table (each occurrence and its steps), JSON, or cues."""
    if fmt in CUE_FORMATS:
        return cues_as(fmt, detection_cues(detections))
    if fmt == "json":
        data = {
            "video": video,
            "domain": domain,
            "settings": settings or {},
            "detections": [d.to_dict() for d in detections],
        }
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    lines = [
        f"{video}  ({plural(len(detections), 'occurrence')})",
        f"  {'start':>8}  {'end':>8}  {'score':>7}  action",
    ]
    for d in detections:
        lines.append(f"  {d.start:8.2f}  {d.end:8.2f}  {d.score:7.4f}  {d.action}")
        lines += [f"      {s.start:8.2f} - {s.end:8.2f} s  {s.step}" for s in d.segments]
    return "\n".join(lines) + "\n"


def format_hits(fmt: str, hits, settings: dict | None = None, domain: str | None = None) -> str:
    """`actalign search`'s output: a table (each hit and its steps), JSON, JSON Lines or CSV."""
    if fmt == "json":
        data = {"domain": domain, "settings": settings or {}, "hits": [h.to_dict() for h in hits]}
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if fmt == "jsonl":
        return "".join(json.dumps(h.to_dict(), ensure_ascii=False) + "\n" for h in hits)
    if fmt == "csv":
        out = io.StringIO()
        w = csv.writer(out, lineterminator="\n")
        w.writerow(["rank", "video", "action", "start", "end", "score"])
        for i, h in enumerate(hits, 1):
            w.writerow([i, h.video, h.action, f"{h.start:.3f}", f"{h.end:.3f}", f"{h.score:.6f}"])
        return out.getvalue()
    width = max([len("action"), *(len(printable(h.action)) for h in hits)])  # the video column lines up
    lines = [f"{len(hits)} hits", f"  {'start':>8}  {'end':>8}  {'score':>7}  {'action':<{width}}  video"]
    for h in hits:
        action = f"{printable(h.action):<{width}}"
        lines.append(f"  {h.start:8.2f}  {h.end:8.2f}  {h.score:7.4f}  {action}  {printable(h.video)}")
        lines += [f"      {s.start:8.2f} - {s.end:8.2f} s  {printable(s.step)}" for s in h.segments]
    return "\n".join(lines) + "\n"


def _positive(cue: Cue) -> Cue:
    # players drop zero-length cues; a step matched to one instant still gets a visible millisecond
    return cue if cue.end > cue.start else Cue(cue.start, cue.start + 0.001, cue.text)


def to_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text of `cues` (webvtt-py), in time order."""
    import webvtt

    vtt = webvtt.WebVTT()
    for cue in sorted(map(_positive, cues), key=lambda c: (c.start, c.end)):
        vtt.captions.append(webvtt.Caption(_clock(cue.start, "."), _clock(cue.end, "."), cue.text))
    return vtt.content


def to_srt(cues: Sequence[Cue]) -> str:
    """SRT text of `cues` (srt), in time order."""
    from datetime import timedelta

    import srt

    subs = [
        srt.Subtitle(i, timedelta(seconds=c.start), timedelta(seconds=c.end), c.text)
        for i, c in enumerate(sorted(map(_positive, cues), key=lambda c: (c.start, c.end)), 1)
    ]
    return srt.compose(subs)


def _clock(seconds: float, sep: str) -> str:
    ms = round(max(0.0, seconds) * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def cues_as(fmt: str, cues: Sequence[Cue]) -> str:
    """Cues as WebVTT (fmt 'vtt') or SRT (fmt 'srt')."""
    return to_vtt(cues) if fmt == "vtt" else to_srt(cues)


def format_predictions(fmt: str, predictions: Sequence, top_k: int | None = None) -> str:
    """All predictions in one of FORMATS (vtt/srt: the cues of the first prediction)."""
    if fmt == "table":
        return to_table(predictions, top_k)
    if fmt == "json":
        return to_json(predictions, top_k)
    if fmt == "jsonl":
        return to_jsonl(predictions, top_k)
    if fmt == "csv":
        return to_csv(predictions, top_k)
    return cues_as(fmt, [c for p in predictions for c in prediction_cues(p)])


# --------------------------------------------------------------------------- streamed output


class PredictionWriter:
    """Writes predictions as each video finishes, so a crash loses nothing already done.

    To a stream (stdout): each video's part is written as soon as it is known (JSON as the pieces
    of one document). To a file: the whole document is rewritten atomically after each video, so
    the file is always complete and valid. vtt/srt: one cue file per video; `output` must then be
    a folder when there are several videos (files `<stem>.vtt`), a file or the stream for one.
    """

    def __init__(
        self,
        fmt: str,
        output=None,
        top_k: int | None = None,
        stream=None,
        several: bool = False,
        names: dict[str, str] | None = None,
    ) -> None:
        import sys
        from pathlib import Path

        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}")
        self.fmt, self.top_k = fmt, top_k
        self.output = Path(output).expanduser() if output is not None else None
        self.stream = stream or sys.stdout
        self.several = several
        self.names = names or {}  # video -> output file name of its cues (see file_names)
        self.done: list = []

    def add(self, prediction) -> None:
        """Write one finished video's prediction."""
        self.done.append(prediction)
        if self.fmt in CUE_FORMATS:
            self._cues(prediction)
        elif self.output is not None:
            from actalign.files import atomic_write_text

            atomic_write_text(self.output, format_predictions(self.fmt, self.done, self.top_k))
        else:
            self.stream.write(self._piece(prediction, first=len(self.done) == 1))
            self.stream.flush()

    def _piece(self, p, first: bool) -> str:
        import textwrap

        if self.fmt == "json":
            body = textwrap.indent(
                json.dumps(prediction_dict(p, self.top_k), indent=2, ensure_ascii=False), "    "
            )
            return ('{\n  "videos": [\n' if first else ",\n") + body
        if self.fmt == "csv":
            return to_csv([p], self.top_k, header=first)
        return format_predictions(self.fmt, [p], self.top_k)

    def _cues(self, p) -> None:
        from pathlib import Path

        from actalign.files import atomic_write_text

        text = cues_as(self.fmt, prediction_cues(p))
        if self.output is None:
            self.stream.write(text)
            self.stream.flush()
        elif self.several:
            name = self.names.get(str(p.video), Path(p.video).stem)
            atomic_write_text(self.output / f"{name}.{self.fmt}", text)
        else:
            atomic_write_text(self.output, text)

    def close(self) -> None:
        """End the document (JSON's closing brackets; an empty result where nothing was done)."""
        if self.fmt in CUE_FORMATS:
            return
        if self.output is not None:
            if not self.done:
                from actalign.files import atomic_write_text

                atomic_write_text(self.output, format_predictions(self.fmt, [], self.top_k))
            return
        if self.fmt == "json":
            self.stream.write("\n  ]\n}\n" if self.done else to_json([]))
        elif self.fmt == "csv" and not self.done:
            self.stream.write(to_csv([]))
        self.stream.flush()
