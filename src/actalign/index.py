"""Search your footage: embed an archive once, then find every occurrence of actions across it.

    from actalign.index import Index
    index = Index.create("archive.idx", model="siglip-so400m", fps=2)   # any Config field
    index.add_video("match1.mp4")                 # the one frame path: cached entries are reused
    hits = Index.open("archive.idx").search(["Putback dunk"], domain="basketball", top=20)
    for h in hits:
        print(h.video, h.action, h.start, h.end, h.score)

An index is a folder: `index.json`, the catalogue (the model's identity, the precision, the
sampling rate, and per video its path, file fingerprint, size and time, number of frames, the end
of its span, its shard), and `shards/`, one pair of .npy files per video (the frame embeddings
(T, d) and their timestamps (T,)), memory-mapped when read. A shard is written to a temporary
file and renamed into place, and the catalogue (written atomically too) names it only after that:
a build killed part way loses the video in progress and nothing else, and the next build goes on
from there.

Precision: "float16" by default (half the size of float32; unit vectors' components lie in
[-1, 1], where float16 keeps 11 significant bits: affinities move by about 1e-4, scores by well
under 1e-3, and the same occurrences are found). "float32" stores the embeddings as the encoder
gives them: search then scores exactly as `locate` does. "bfloat16" keeps the upper 16 bits of
each float32 (rounded to nearest even) and is widened back on read.

Search scores as `locate` scores: per video, the shard's frames go through `locate.find`, the
function `locate` itself calls (the same affinities, windows, thresholds and suppression), so the
hits of one video are the detections `locate` gives on it; the hits of all videos are then ranked
by score, best first, and only the best `top` get their step segments. The scan is one pass over
the shards: per block of frames one product with the step vectors of every candidate (float64 for
a float32 index, as `locate`; float32 for half-precision shards), the smoothing applied to the
products, the DTW state carried from window to window, and per video only its best `top`
detections kept: memory is one block and one window, whatever the archive's size. Step vectors
come from the text cache under the index's model identity: a repeated search loads no model; a
search with new step texts loads the index's model to embed them.

One writer at a time (`Index.writing`, an flock on `<index>/.lock`): every change takes the lock
and reads the catalogue again first, so a change made by another process meanwhile is kept; a
build holds it throughout, and a second build at the same time is refused with one sentence.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actalign.candidates import check_candidates
from actalign.config import Config
from actalign.embed import FrameStream, measured_fps
from actalign.encoders import MODELS
from actalign.encoders.cache import make_key
from actalign.encoders.cpu import usable_cores
from actalign.errors import ActAlignError
from actalign.files import FolderLock, atomic_write_text, read_json
from actalign.locate import (
    DEFAULT_MIN_GAIN_RATIO,
    DEFAULT_NMS,
    DEFAULT_WINDOW_SECONDS,
    Found,
    check_search,
    find,
)
from actalign.precision import PRECISIONS, STORED, to_stored, widen
from actalign.score import Segment
from actalign.video import Sampling, as_video, fingerprint

__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "Hit", "Index"]

CATALOGUE = "index.json"
SHARDS = "shards"
FORMAT = 1
DEFAULT_PRECISION = "float16"
DEFAULT_FPS = 2.0
DEFAULT_TOP = 20
# the frames' products with the steps: float64 as `locate` computes them; for half-precision
# shards float32, whose rounding (1e-7) is far below the storage's (1e-3 to 1e-2)
_COMPUTE = {"float32": np.float64, "float16": np.float32, "bfloat16": np.float32}
_SCAN_BLOCK = 4096  # frames per product in a search (a few MB; fewer, larger products)


@dataclass(frozen=True)
class Hit:
    """One occurrence found in an archive: the video (its path as indexed), the action, [start,
    end) in seconds, the score (as `locate` scores it), the step segments and the gain."""

    video: str
    action: str
    start: float
    end: float
    score: float
    segments: list[Segment] = field(default_factory=list)
    gain: float = 0.0

    def to_dict(self) -> dict:
        """The JSON form of `actalign search --format json`."""
        return {
            "video": self.video,
            "action": self.action,
            "span": {"start": round(self.start, 3), "end": round(self.end, 3)},
            "score": round(float(self.score), 6),
            "gain": round(float(self.gain), 6),
            "segments": [
                {"step": s.step, "start": round(s.start, 3), "end": round(s.end, 3)} for s in self.segments
            ],
        }


# --------------------------------------------------------------------------- the model's identity


class _IndexModel:
    """The index's model as far as search needs it: identity and calibration from the catalogue;
    the encoder itself is loaded only when needed: its text tower alone to embed step texts the
    cache does not hold, the whole model to embed videos."""

    batch_size = 1
    decode_size = None

    def __init__(self, model: dict, config: Config, encoder=None) -> None:
        self.identity = model["identity"]
        self.scale, self.bias, self.dim = model["scale"], model["bias"], model["dim"]
        self.text_encoding = model.get("text_encoding", "trained")
        self._model, self._config, self._encoder = model, config, encoder
        self._texts = None  # the text tower alone, when only texts were needed

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self._encoder is None and self._texts is None:
            self._texts = self._load("text")
        return (self._encoder or self._texts).encode_texts(texts)

    def encode_images(self, frames: np.ndarray) -> np.ndarray:
        return self.encoder.encode_images(frames)

    @property
    def encoder(self):
        """The whole model (loaded on first use)."""
        if self._encoder is None:
            self._encoder, self._texts = self._load("both"), None
        return self._encoder

    def _load(self, towers: str):
        name = self._model["name"]
        if name is None:
            raise ActAlignError(
                f"The index was built with a model given as an object ({self.identity}); "
                "open it with that model (`model`) to embed new step texts."
            )
        config = self._config.replace(
            model=name,
            dtype=self._config.dtype or self._model.get("dtype"),
            text_encoding=self.text_encoding,
        )
        encoder = config.encoder(towers=towers)
        _check_same_weights(self.identity, encoder.identity, name)
        return encoder


def _weights(identity: str) -> str:
    """The part of an encoder identity that names the weights (without the `|dtype`)."""
    return identity.rsplit("|", 1)[0]


def _check_same_weights(indexed: str, given: str, name) -> None:
    if _weights(indexed) != _weights(given):
        raise ActAlignError(
            f"The index was built with the model {indexed}, not {name} ({given}); embeddings of "
            "different models cannot be compared: leave `model` out (the index's own is used), or "
            "build another index with this model."
        )


def _model_name(model) -> str:
    """A model name as the loader resolves it (short names, folders made absolute)."""
    name = MODELS.get(str(model), str(model))
    p = Path(name).expanduser()
    return str(p.resolve()) if p.is_dir() else name


# --------------------------------------------------------------------------- the frames of one video


class _ShardFrames:
    """A `locate.FrameSource` over one video's shard: blocks of frames as stored (`find` takes
    them with `stored=precision`; `frames_between` widens them to float32). The
    shard is memory-mapped while it is read and let go after (pages of a mapped file count as the
    process's memory while they stay mapped: an archive's worth, otherwise), mapped again for
    `frames_between`. Pickled (for a Ray task) as its path."""

    def __init__(self, root: Path, entry: dict, dim: int, precision: str, name: str = "?") -> None:
        self.root, self.entry, self.dim, self.precision, self.name = root, entry, dim, precision, name
        self._frames, self._stamps = self._open()  # the mapping is let go once the frames are read
        self._end = entry["end"]
        self.timestamps: np.ndarray | None = None
        self.end: float | None = None

    def _open(self) -> tuple[np.ndarray, np.ndarray]:
        return _open_shard(self.root, self.entry, self.dim, self.precision, self.name)

    def __len__(self) -> int:
        return len(self._stamps)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_frames": None}  # a path travels, not a mapping

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        frames = self._frames if self._frames is not None else self._open()[0]
        self._frames = None
        for lo in range(0, len(frames), _SCAN_BLOCK):
            yield frames[lo : lo + _SCAN_BLOCK], self._stamps[lo : lo + _SCAN_BLOCK]
        self.timestamps, self.end = self._stamps, self._end

    def frames_between(self, first: int, last: int) -> np.ndarray:
        return widen(self._open()[0][first : last + 1], self.precision)


# np.load parses a .npy header with ast.literal_eval, and CPython 3.11's compiler is not safe to
# run in two threads at once ("SystemError: AST constructor recursion depth mismatch", seen when
# two scan threads opened shards together): one header at a time
_NPY_HEADERS = threading.Lock()


def _open_shard(
    root: Path, entry: dict, dim: int, precision: str, name: str = "?"
) -> tuple[np.ndarray, np.ndarray]:
    """(frames as stored, memory-mapped (T, d); timestamps (T,)); _Damaged when they are not what
    the catalogue says."""
    want = (entry["frames"], dim)
    try:
        with _NPY_HEADERS:
            frames = np.load(root / entry["shard"], mmap_mode="r", allow_pickle=False)
            stamps = np.load(root / entry["timestamps"], allow_pickle=False)
    except (OSError, ValueError, EOFError):
        frames = stamps = None
    if (
        frames is None
        or frames.shape != want
        or frames.dtype != STORED[precision]
        or stamps.shape != (want[0],)
    ):
        name = entry.get("path") or name
        raise _Damaged(
            f"The index's shard {root / entry['shard']} (of {name}) is damaged; build the index "
            "again with that video (`actalign index build`) to embed it again."
        )
    return frames, stamps


def _scan(
    root: Path, entry: dict, name: str, steps, model: dict, smooth: float, precision: str, dim: int, **options
) -> Found | str | None:
    """`locate.find` on one video's shard (in this process or a Ray task): its result, or the
    sentence that says the shard is damaged, or None for a video without frames."""
    try:
        source = _ShardFrames(root, entry, dim, precision, name)
    except _Damaged as e:
        return str(e)
    if not len(source):
        return None
    return find(
        source,
        steps,
        measured_fps(source._stamps),
        model["scale"],
        model["bias"],
        smooth,
        dtype=_COMPUTE[precision],
        stored=precision,
        **options,
    )


# --------------------------------------------------------------------------- the index


class Index:
    """An archive's frame embeddings on disk, searchable for actions; see the module docstring.

    Index.create(path, model=..., fps=2, precision="float16") makes one (any `Config` field as a
    keyword, or `config=`; `model` may be an encoder object); Index.open(path) opens one.
    """

    def __init__(self, root: Path, catalogue: dict, config: Config, encoder=None, cache=None) -> None:
        self.root, self.catalogue, self.config = root, catalogue, config
        self._encoder = encoder
        self._lock: FolderLock | None = None
        self._depth = 0  # nested `writing()`s of this object
        self.cache = cache if cache is not None else config.cache()
        if cache is False:
            self.cache = None
        self._seen = self._stamp()

    def __repr__(self) -> str:
        return f"Index({str(self.root)!r}, videos={len(self.videos)}, model={self.model_name!r})"

    @contextlib.contextmanager
    def writing(self) -> Iterator[Index]:
        """Hold the index's write lock: one writer at a time across processes (another gets one
        sentence), re-entrant within this object. On taking it the catalogue is read again from
        disk, so that what another writer added meanwhile is kept, not overwritten. Every change
        takes it; hold it around many changes (a build) to keep others out for all of them."""
        if not self._depth:
            lock = FolderLock(self.root, who="build", place="index", advice="")
            self._lock = lock.acquire()
            try:
                if (self.root / CATALOGUE).is_file():
                    self.catalogue, self._seen = _read_catalogue(self.root / CATALOGUE), self._stamp()
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1
        try:
            yield self
        finally:
            self._depth -= 1
            if not self._depth:
                self._lock.release()
                self._lock = None

    # ------------------------------------------------------------------ making and opening

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        config: Config | None = None,
        model=None,
        fps: float = DEFAULT_FPS,
        precision: str = DEFAULT_PRECISION,
        exist_ok: bool = False,
        cache=None,
        **fields,
    ) -> Index:
        """A new, empty index at `path` (a folder, made). exist_ok: open the index already there
        instead (its model, fps and precision must be the ones given)."""
        root = Path(path).expanduser()
        if (root / CATALOGUE).exists():
            if not exist_ok:
                raise ActAlignError(f"{root} already holds an index; open it (or add to it) instead.")
            return cls.open(
                root, config=config, model=model, fps=fps, precision=precision, cache=cache, **fields
            )
        if precision not in PRECISIONS:
            raise ActAlignError(f"Unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}.")
        config, encoder = _config(config, model, fields)
        if not (isinstance(fps, (int, float)) and 0 < fps <= 10_000):
            raise ActAlignError(f"`fps` must be a number above 0 and at most 10000, got {fps!r}.")
        if root.exists() and (not root.is_dir() or any(p.name != ".lock" for p in root.iterdir())):
            raise ActAlignError(f"{root} is not an empty folder; give a new place for the index (`out`).")
        encoder = encoder if encoder is not None else config.encoder()
        catalogue = {
            "format": FORMAT,
            "model": {
                "name": None
                if model is not None and not isinstance(model, (str, os.PathLike))
                else _model_name(config.model),
                "identity": encoder.identity,
                "scale": float(encoder.scale),
                "bias": None if encoder.bias is None else float(encoder.bias),
                "dim": int(encoder.dim),
                "dtype": getattr(encoder, "dtype_name", None),
                "text_encoding": getattr(encoder, "text_encoding", "trained"),
            },
            "precision": precision,
            "fps": float(fps),
            "videos": {},
        }
        index = cls(root, catalogue, config.replace(fps=float(fps)), encoder, cache)
        (root / SHARDS).mkdir(parents=True, exist_ok=True)
        with index.writing():
            if index.catalogue is not catalogue:  # another build made one meanwhile
                raise ActAlignError(f"{root} already holds an index; open it (or add to it) instead.")
            index._save()
        return index

    @classmethod
    def open(
        cls,
        path: str | os.PathLike,
        *,
        config: Config | None = None,
        model=None,
        fps: float | None = None,
        precision: str | None = None,
        cache=None,
        **fields,
    ) -> Index:
        """The index at `path`. model / fps / precision, when given, must be the index's (a
        search with another model's text vectors would compare different spaces); a Config's
        other fields (the template, the smoothing, the cache) are used as given."""
        root = Path(path).expanduser()
        file = root / CATALOGUE
        if not file.is_file():
            what = "does not exist" if not root.exists() else "holds no index (no index.json)"
            raise ActAlignError(f"The index {root} {what}; make one with `actalign index build`.")
        catalogue = _read_catalogue(file)
        config, encoder = _config(config, None if model is None else model, fields)
        stored = catalogue["model"]
        if encoder is not None:
            _check_same_weights(stored["identity"], encoder.identity, encoder.identity)
        elif model is not None and stored["name"] is not None and _model_name(model) != stored["name"]:
            raise ActAlignError(
                f"The index {root} was built with the model {stored['name']}, not {model}; embeddings "
                "of different models cannot be compared: leave `model` out (the index's own is used), "
                "or build another index with this model."
            )
        if fps is not None and float(fps) != catalogue["fps"]:
            raise ActAlignError(
                f"The index {root} samples {catalogue['fps']:g} frames per second, not {fps:g}; leave "
                "`fps` out, or build another index."
            )
        if precision is not None and precision != catalogue["precision"]:
            raise ActAlignError(
                f"The index {root} stores {catalogue['precision']}, not {precision}; leave `precision` "
                "out, or build another index."
            )
        embedded = stored.get("dtype")
        if encoder is None and config.dtype is not None and embedded and config.dtype != embedded:
            raise ActAlignError(
                f"The index {root} was embedded by its model in {embedded}, not {config.dtype}; leave "
                "`dtype` out (the index's is used), or build another index."
            )
        return cls(root, catalogue, config.replace(fps=catalogue["fps"]), encoder, cache)

    # ------------------------------------------------------------------ what it holds

    @property
    def videos(self) -> dict[str, dict]:
        """{name: catalogue entry} of every indexed video."""
        return self.catalogue["videos"]

    @property
    def precision(self) -> str:
        return self.catalogue["precision"]

    @property
    def fps(self) -> float:
        return self.catalogue["fps"]

    @property
    def model_name(self) -> str:
        m = self.catalogue["model"]
        return m["name"] or m["identity"]

    @property
    def model(self) -> _IndexModel:
        """The index's model: its identity and calibration; its encoder loads on first need."""
        if not isinstance(self._encoder, _IndexModel):
            self._encoder = _IndexModel(self.catalogue["model"], self.config, self._encoder)
        return self._encoder

    def missing(self) -> list[str]:
        """Indexed videos whose file is gone (their frames stay searchable)."""
        return [n for n, v in self.videos.items() if v.get("path") and not Path(v["path"]).exists()]

    def info(self) -> dict:
        """Videos, hours, frames, the model, the precision and fps, the size on disk, and per video
        (`entries`) its name (what `remove` takes), seconds, frames and whether its file is gone."""
        size = sum(f.stat().st_size for f in self.root.rglob("*") if f.is_file())
        seconds = sum(max(0.0, v["end"] - v["start"]) for v in self.videos.values())
        return {
            "path": str(self.root),
            "videos": len(self.videos),
            "hours": seconds / 3600,
            "frames": sum(v["frames"] for v in self.videos.values()),
            "model": self.model_name,
            "identity": self.catalogue["model"]["identity"],
            "dim": self.catalogue["model"]["dim"],
            "precision": self.precision,
            "fps": self.fps,
            "size_bytes": size,
            "missing": self.missing(),
            "entries": [
                {
                    "name": name,
                    "seconds": max(0.0, v["end"] - v["start"]),
                    "frames": v["frames"],
                    "gone": bool(v.get("path")) and not Path(v["path"]).exists(),
                }
                for name, v in self.videos.items()
            ],
        }

    # ------------------------------------------------------------------ adding and removing

    def add_video(self, path: str | os.PathLike, on_frames=None, on_total=None) -> bool:
        """Embed a video (the one frame path: a video the cache holds is read, not decoded) and add
        it. True when it was embedded; False when it is indexed already and unchanged. A changed
        file (another fingerprint) is embedded again; so is one whose shard is damaged."""
        video = as_video(path)
        name = str(Path(str(path)).expanduser().resolve())
        if self._unchanged(name, video):
            return False
        st = os.stat(name)  # the file as it was when its frames were read
        stream = FrameStream(
            self.model.encoder, video, Sampling(fps=self.fps), self.cache, on_frames, on_total
        )
        blocks = [to_stored(frames, self.precision) for frames, _ in stream]
        frames = (
            np.concatenate(blocks) if blocks else np.zeros((0, self.catalogue["model"]["dim"]), np.float32)
        )
        self._put_video(name, video, st, frames, stream.timestamps, float(stream.end), list(stream.warnings))
        return True

    def add_videos(self, paths: Sequence[str | os.PathLike], on_frames=None) -> dict[str, bool | str]:
        """`add_video` for many videos: {path: True (embedded) | False (unchanged) | the reason it
        failed}. With `Config.engine` "ray" the videos are decoded and encoded over Ray (the
        batch engine's decode tasks and encoder actors, the same embeddings); the shards are
        written here. Otherwise one after the other, here."""
        if self.config.engine != "ray":
            out: dict[str, bool | str] = {}
            for p in paths:
                try:
                    out[str(p)] = self.add_video(p, on_frames)
                except (ActAlignError, OSError) as e:
                    out[str(p)] = getattr(e, "strerror", None) or str(e)
            return out
        return self._add_on_ray(paths, on_frames)

    def _add_on_ray(self, paths, on_frames) -> dict[str, bool | str]:
        from actalign.runner import _decode_options
        from actalign.runner.plan import Clip
        from actalign.runner.ray_engine import RayEngine

        out: dict[str, bool | str] = {}
        clips, given = [], {}
        for p in paths:
            try:
                video = as_video(p)
                name = str(Path(str(p)).expanduser().resolve())
                out[str(p)] = False
                if not self._unchanged(name, video):
                    clips.append(Clip(id=name, video=Path(name), domain="", candidates=()))
                    given[name] = (str(p), os.stat(name))
            except (ActAlignError, OSError) as e:
                out[str(p)] = getattr(e, "strerror", None) or str(e)
        encoder = self.model.encoder
        options = _decode_options(encoder, self.fps, self.cache, threads=1)
        engine = RayEngine(
            encoder, options, None, self.config.workers, on_frames, address=self.config.ray_address
        )
        for result in engine.embed(clips):
            if isinstance(result, tuple):
                clip, emb, said = result
                stored = to_stored(emb.frames, self.precision)
                self._put_video(clip.id, clip.id, given[clip.id][1], stored, emb.timestamps, emb.end, said)
                out[given[clip.id][0]] = True
            else:
                out[given[result.clip.id][0]] = result.reason
        return out

    def _unchanged(self, name: str, video) -> bool:
        """Whether the video is indexed already, its shard intact and its file the same (same
        size and time, or else the same fingerprint)."""
        st = os.stat(name)
        old = self.videos.get(name)
        if old is None or not self._intact(old):
            return False
        if (old.get("size"), old.get("mtime_ns")) == (st.st_size, st.st_mtime_ns):
            return True
        if fingerprint(video) != old.get("fingerprint"):
            return False
        with self.writing():
            self.videos.get(name, {}).update(size=st.st_size, mtime_ns=st.st_mtime_ns)
            self._save()
        return True

    def _put_video(self, name: str, video, st, frames: np.ndarray, stamps, end: float, said: list) -> None:
        self._put(
            name,
            frames,
            stamps,
            end,
            path=name,
            fingerprint=fingerprint(video),
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            warnings=list(said),
        )

    def add_embeddings(
        self, name: str, timestamps: Sequence[float], vectors: np.ndarray, end: float | None = None
    ) -> None:
        """Add a video's frame embeddings computed elsewhere: vectors (T, d) image embeddings of the
        index's model at `timestamps` (T,) seconds; `end` the span's end (default: one frame past
        the last timestamp). Replaces an entry of the same name."""
        vectors = np.asarray(vectors, dtype=np.float32)
        stamps = np.asarray(timestamps, dtype=np.float64)
        dim = self.catalogue["model"]["dim"]
        if vectors.ndim != 2 or vectors.shape[1] != dim or len(vectors) != len(stamps) or not len(stamps):
            raise ActAlignError(
                f"`vectors` must be (T, {dim}) and `timestamps` (T,) with T >= 1; got {vectors.shape} "
                f"and {stamps.shape}."
            )
        if not (np.all(np.isfinite(vectors)) and np.all(np.diff(stamps) > 0)):
            raise ActAlignError("`vectors` must be finite and `timestamps` increasing.")
        if end is None:
            step = float(stamps[-1] - stamps[-2]) if len(stamps) > 1 else 1 / self.fps
            end = float(stamps[-1]) + step
        self._put(
            str(name), to_stored(vectors, self.precision), stamps, float(end), path=None, fingerprint=None
        )

    def remove(self, name: str | os.PathLike) -> bool:
        """Drop a video from the index (by its name or path); False when it was not there."""
        with self.writing():
            key = self._name(name)
            if key is None:
                return False
            entry = self.videos.pop(key)
            self._save()
            self._unlink(entry)
        return True

    def _name(self, name) -> str | None:
        if str(name) in self.videos:
            return str(name)
        resolved = str(Path(str(name)).expanduser().resolve())
        return resolved if resolved in self.videos else None

    def _put(self, name: str, frames: np.ndarray, stamps: np.ndarray, end: float, **extra) -> None:
        with self.writing():
            self._put_locked(name, frames, stamps, end, **extra)

    def _put_locked(self, name: str, frames: np.ndarray, stamps: np.ndarray, end: float, **extra) -> None:
        shards = self.root / SHARDS
        stem = make_key(name, time.time_ns(), os.getpid())[:16]
        frames_file, times_file = f"{SHARDS}/{stem}.npy", f"{SHARDS}/{stem}.t.npy"
        _write_npy(self.root / frames_file, frames, shards)
        _write_npy(self.root / times_file, np.asarray(stamps, np.float64), shards)
        old = self.videos.get(name)
        stamps = np.asarray(stamps, np.float64)
        self.videos[name] = {
            **extra,
            "shard": frames_file,
            "offset": 0,
            "timestamps": times_file,
            "frames": len(frames),
            "start": float(stamps[0]) if len(stamps) else 0.0,
            "end": float(end),
            "fps": measured_fps(stamps),
            "added": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        self._save()  # the catalogue names the shard only once it is whole
        if old is not None and old["shard"] != frames_file:
            self._unlink(old)

    def _unlink(self, entry: dict) -> None:
        for key in ("shard", "timestamps"):
            with contextlib.suppress(OSError):
                (self.root / entry[key]).unlink()

    def _save(self) -> None:
        atomic_write_text(self.root / CATALOGUE, json.dumps(self.catalogue, indent=1) + "\n")
        self._seen = self._stamp()

    def _stamp(self) -> tuple | None:
        try:
            st = (self.root / CATALOGUE).stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size  # a change is written to a new file and renamed

    def refresh(self) -> bool:
        """Read the catalogue again if another program changed it since this object last did (a
        build adding videos while an app or notebook holds the index open); True when it did.
        `search` calls it first, so a search sees every video indexed before it started."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        catalogue = _read_catalogue(self.root / CATALOGUE)
        if catalogue["model"]["identity"] != self.catalogue["model"]["identity"]:
            raise ActAlignError(
                f"The index {self.root} was built again with another model since it was opened; "
                "open it again."
            )
        self.catalogue, self._seen = catalogue, stamp
        return True

    def tidy(self) -> int:
        """Remove what a killed build left: temporary files and shards no catalogue entry names.
        Returns how many files went."""
        with self.writing():
            named = {e[k] for e in self.videos.values() for k in ("shard", "timestamps")}
            gone = 0
            for f in (self.root / SHARDS).glob("*"):
                if f.is_file() and f"{SHARDS}/{f.name}" not in named:
                    with contextlib.suppress(OSError):
                        f.unlink()
                        gone += 1
        return gone

    # ------------------------------------------------------------------ reading

    def _load(self, entry: dict) -> tuple[np.ndarray, np.ndarray]:
        """(frames as stored, memory-mapped (T, d); timestamps (T,)); ActAlignError when damaged."""
        return _open_shard(
            self.root, entry, self.catalogue["model"]["dim"], self.precision, self._named(entry)
        )

    def _named(self, entry: dict) -> str:
        return next((n for n, e in self.videos.items() if e is entry), "?")

    def _intact(self, entry: dict) -> bool:
        try:
            self._load(entry)
        except _Damaged:
            return False
        return True

    # ------------------------------------------------------------------ search

    def step_vectors(self, scripts: dict[str, list[str]], domain: str) -> dict[str, np.ndarray]:
        """{action: (K, d) step vectors} embedded by the index's model through the text cache (a
        repeated search loads no model)."""
        from actalign.classify import Pipeline

        pipe = Pipeline(self.config, self.model, None, self.cache)
        return dict(zip(scripts, pipe.step_embeddings(scripts, domain)))

    def search(
        self,
        candidates: Sequence[str],
        domain: str | None = None,
        scripts=None,
        top: int | None = DEFAULT_TOP,
        min_score: float | None = None,
        nms: float = DEFAULT_NMS,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        min_gain_ratio: float = DEFAULT_MIN_GAIN_RATIO,
    ) -> list[Hit]:
        """Every occurrence of `candidates` across the archive, best first, `top` in all (None:
        every one): per video the detections `locate` gives on it (see the module docstring).

        scripts: where the steps come from: a script source (`ActAlign.scripts()`), a scripts file
        (or files), or a {domain: {action: [steps]}} dict (default: the Config's files, then the
        store, then the LLM the Config or the environment names). A damaged shard is skipped with
        a warning naming it; a video whose file is gone is searched from the index as ever.
        """
        candidates = check_candidates(candidates)
        check_search(nms, min_score, window_seconds)
        self.refresh()
        if top is not None and not (isinstance(top, int) and top >= 1):
            raise ActAlignError(f"`top` must be a whole number of at least 1, got {top!r}.")
        if not self.videos:
            raise ActAlignError(
                f"The index {self.root} holds no videos yet; add some with `actalign index build`."
            )
        domain = (domain or "").strip()
        found = _source(self.config, scripts).get(domain, candidates)
        steps = self.step_vectors(found, domain)
        options = {
            "min_score": min_score,
            "nms": nms,
            "window_seconds": window_seconds,
            "min_gain_ratio": min_gain_ratio,
            "limit": top,  # a video's detections below its own top-N cannot be in the archive's
        }
        kept: list[tuple[float, int, str, Found, int]] = []
        for order, name, result in self._scans(steps, options):
            kept += [(d.score, order, name, result, i) for i, d in enumerate(result.detections)]
            # best first, equal scores in catalogue order; only the kept ones get segments (each
            # costs an alignment of its span)
            kept.sort(key=lambda k: (-k[0], k[1]))
            del kept[top if top is not None else len(kept) :]
        hits = []
        for _, _, name, result, i in kept:
            d = result.with_segments(i, found)
            hits.append(Hit(name, d.action, d.start, d.end, d.score, d.segments, d.gain))
        return hits

    def _scans(self, steps: dict[str, np.ndarray], options: dict) -> Iterator[tuple[int, str, Found]]:
        """(catalogue position, name, `find`'s result) per video with frames, as the scans end:
        here one after the other, or as Ray tasks (`Config.engine` "ray"; the index folder must be
        readable where the tasks run). Here the videos are scanned by `Config.workers` threads
        (default: one per core; the kernels release the GIL). A damaged shard is a warning that
        names it."""
        model, dim, root = self.catalogue["model"], self.catalogue["model"]["dim"], self.root.resolve()
        jobs = [(order, name, entry) for order, (name, entry) in enumerate(self.videos.items())]
        args = (steps, model, self.config.smooth, self.precision, dim)
        if self.config.engine != "ray":
            results = self._on_threads(root, jobs, args, options)
        else:
            results = self._on_ray(root, jobs, args, options)
        for order, name, result in results:
            if isinstance(result, str):
                warnings.warn(result, stacklevel=3)
            elif result is not None:
                yield order, name, result

    def _on_threads(self, root: Path, jobs: list, args: tuple, options: dict) -> Iterator[tuple]:
        workers = min(len(jobs), self.config.workers or usable_cores())
        if workers <= 1:
            for order, name, entry in jobs:
                yield order, name, _scan(root, entry, name, *args, **options)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="actalign-scan") as pool:
            pending = {
                pool.submit(_scan, root, entry, name, *args, **options): (order, name)
                for order, name, entry in jobs
            }
            try:
                for done in as_completed(pending):
                    order, name = pending[done]
                    yield order, name, done.result()
            finally:  # an error or Ctrl-C: start no more scans
                for future in pending:
                    future.cancel()

    def _on_ray(self, root: Path, jobs: list, args: tuple, options: dict) -> Iterator[tuple]:
        from actalign.runner.ray_engine import hidden_core_lines, ray_session

        with hidden_core_lines(), ray_session(self.config.ray_address) as ray:
            task, shared = ray.remote(num_cpus=1)(_scan), ray.put(args[0])
            pending = {
                task.remote(root, entry, name, shared, *args[1:], **options): (order, name)
                for order, name, entry in jobs
            }
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                order, name = pending.pop(done[0])
                yield order, name, _ray_result(ray, done[0], name)


def _ray_result(ray, ref, name: str) -> Found:
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as e:
        first = str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__
        raise ActAlignError(f"The search of {name} failed on Ray ({first}).") from None


def _read_catalogue(file: Path) -> dict:
    way_out = "restore it from a copy, or build the index again in a new folder (`actalign index build`)"
    try:
        catalogue = read_json(file, "index catalogue")
    except ActAlignError as e:
        raise ActAlignError(f"{str(e).rstrip('.')}; {way_out}.") from None
    if not isinstance(catalogue, dict) or catalogue.get("format") != FORMAT or "model" not in catalogue:
        raise ActAlignError(f"{file} is not an index catalogue this version reads; {way_out}.")
    return catalogue


class _Damaged(ActAlignError):
    """A shard that cannot be read as the catalogue describes it."""


def _config(config: Config | None, model, fields: dict) -> tuple[Config, object | None]:
    """(the Config, an encoder object given as `model`, or None)."""
    encoder = None
    if model is not None and not isinstance(model, (str, os.PathLike)):
        encoder = model
    elif model is not None:
        fields = {**fields, "model": str(model)}
    base = config if config is not None else Config()
    return (base.replace(**fields) if fields else base), encoder


def _source(config: Config, scripts):
    """The script source of a search (see `Index.search`)."""
    if scripts is not None and hasattr(scripts, "get") and not isinstance(scripts, dict):
        return scripts
    if isinstance(scripts, (str, os.PathLike)):
        return config.replace(scripts=(str(scripts),)).script_source()
    if scripts is not None and not isinstance(scripts, dict):
        return config.replace(scripts=tuple(str(s) for s in scripts)).script_source()
    source = config.script_source()
    if isinstance(scripts, dict):
        source.hand = [scripts, *source.hand]
    return source


def _write_npy(path: Path, array: np.ndarray, folder: Path) -> None:
    """np.save to a temporary file in `folder`, flushed, then renamed to `path` (atomic)."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, array, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
