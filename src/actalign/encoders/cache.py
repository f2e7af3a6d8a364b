"""On-disk embedding cache: frame embeddings per (video content, encoder, sampling), text
embeddings per (text, encoder).

Frames live in one .npz per entry, written to a temporary file and renamed into place (atomic,
so two processes never see half an entry); texts live in one SQLite table (safe for concurrent
processes). Every entry stores a checksum: a corrupt or truncated entry is detected, deleted and
recomputed, never returned. A frames entry may keep the warnings its decoding gave (a damaged
video's lost frames), so that a cache hit can repeat them.

A cache on a read-only place is read (what can be read) and never written: new entries are not
kept, damaged ones are not deleted, and the first write that is skipped says so (one warning).

Location: `cache_dir` argument > ACTALIGN_CACHE_DIR > the user cache dir (platformdirs).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actalign.errors import ActAlignError
from actalign.files import atomic_write_bytes

ENV_VAR = "ACTALIGN_CACHE_DIR"


FRAME_BLOCK = 256  # frames per stored block of a video's embeddings


@dataclass(frozen=True)
class VideoIndex:
    timestamps: np.ndarray  # (T,)
    end: float
    warnings: list[str]

    @property
    def blocks(self) -> int:
        return -(-len(self.timestamps) // FRAME_BLOCK)


@dataclass(frozen=True)
class VideoEntry:
    frames: np.ndarray  # (T, d)
    timestamps: np.ndarray  # (T,)
    end: float
    warnings: list[str]


def _no_room(e: BaseException) -> bool:
    """A write refused for want of space (a full disk or quota), by the OS or by SQLite."""
    import errno

    if isinstance(e, OSError):
        return e.errno in (errno.ENOSPC, errno.EDQUOT)
    return "full" in str(e).lower()


def block_key(key: str, i: int) -> str:
    """The key of block i of the video entry `key`."""
    return make_key(key, "block", FRAME_BLOCK, i)


def default_cache_dir() -> Path:
    """$ACTALIGN_CACHE_DIR, else the user cache dir (platformdirs)."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("actalign"))


def make_key(*parts: object) -> str:
    """A 128-bit hex key from the parts' text forms."""
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def _checksum(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


@dataclass
class FramesEntry:
    """A cached frames entry: embeddings (T, d), timestamps (T,), the span's end in s, and the
    warnings its decoding gave."""

    frames: np.ndarray
    timestamps: np.ndarray
    end: float
    warnings: list[str] = field(default_factory=list)


def _warn(message: str, stacklevel: int) -> None:
    warnings.warn(message, stacklevel=stacklevel + 1)


class EmbeddingCache:
    """Frame embeddings per (video content, encoder, sampling) and text embeddings per (text,
    encoder), on disk; see the module docstring. A damaged entry is recomputed, never returned;
    an unreadable text database is moved aside (with a warning) and started afresh."""

    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        if self.root.exists() and not self.root.is_dir():
            raise ActAlignError(f"The cache folder {self.root} is a file; give a folder (`cache_dir`).")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ActAlignError(
                f"Cannot create the cache folder {self.root} ({e.strerror}); choose another `cache_dir` "
                "or pass `no_cache`."
            ) from None
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise ActAlignError(
                f"Cannot read the cache folder {self.root}: permission denied; choose another "
                "`cache_dir` or pass `no_cache`."
            )
        # a read-only place (a read-only mount, another user's cache): read it, write nothing
        self.read_only = not os.access(self.root, os.W_OK | os.X_OK)
        self._said_read_only = False
        self.frames_dir = self.root / "frames"
        self.db_path = self.root / "texts.sqlite"
        self._db: sqlite3.Connection | None = None
        self._no_db = False  # a read-only cache whose text database cannot be read

    def _skip_write(self) -> bool:
        """Whether writes are skipped (a read-only cache); the first skipped write says so."""
        if self.read_only and not self._said_read_only:
            self._said_read_only = True
            _warn(
                f"The cache {self.root} is read-only: cached embeddings are read, and new ones are not kept.",
                stacklevel=3,
            )
        return self.read_only

    # ------------------------------------------------------------------ frames

    def _frames_path(self, key: str) -> Path:
        return self.frames_dir / key[:2] / f"{key}.npz"

    def get_frames(self, key: str) -> tuple[np.ndarray, np.ndarray, float] | None:
        """(frames (T, d), timestamps (T,), end of the span in s) or None when absent or damaged
        (a damaged entry is removed)."""
        entry = self.get_frames_entry(key)
        return None if entry is None else (entry.frames, entry.timestamps, entry.end)

    def _read(self, key: str) -> tuple[np.ndarray, np.ndarray, float, list[str]] | None:
        entry = self.get_frames_entry(key)
        return None if entry is None else (entry.frames, entry.timestamps, entry.end, entry.warnings)

    def get_frames_entry(self, key: str) -> FramesEntry | None:
        """The entry with its decoding warnings, or None when absent or damaged (a damaged entry
        is removed)."""
        path = self._frames_path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                frames, stamps, end = z["frames"], z["timestamps"], z["end"]
                notes = z["warnings"] if "warnings" in z.files else None
                check = str(z["checksum"])
            arrays = (frames, stamps, end) if notes is None else (frames, stamps, end, notes)
            if _checksum(*arrays) == check:
                told = [] if notes is None else [str(x) for x in notes.tolist()]
                return FramesEntry(frames, stamps, float(end), told)
        except Exception:
            pass
        if not self.read_only:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        return None

    def put_frames(
        self,
        key: str,
        frames: np.ndarray,
        timestamps: np.ndarray,
        end: float,
        warnings: list[str] | None = None,
    ) -> None:
        """Store frame embeddings (T, d), timestamps (T,), the span's end and the warnings their
        decoding gave (atomic; a full disk only warns, a read-only cache keeps nothing)."""
        import io

        if self._skip_write():
            return
        end_arr = np.array(float(end))
        arrays = {"frames": frames, "timestamps": timestamps, "end": end_arr}
        if warnings:
            arrays["warnings"] = np.array([str(w) for w in warnings], dtype=str)
        buf = io.BytesIO()
        np.savez(buf, **arrays, checksum=np.array(_checksum(*arrays.values())))
        try:
            atomic_write_bytes(self._frames_path(key), buf.getvalue())
        except OSError as e:
            _warn(f"Could not write to the cache {self.root} ({e.strerror}); continuing without it.", 2)

    # ------------------------------------------------------------------ videos (blocks)
    #
    # A video's frame embeddings are one entry: an index (timestamps, end, decode warnings, block
    # count) at its key and the embeddings in blocks of FRAME_BLOCK frames beside it, so that a
    # long video is read and written a block at a time (locate) and a clip in one go (classify,
    # batch). The index is written last: an entry with an index has all its blocks.

    def put_block(self, key: str, i: int, frames: np.ndarray) -> None:
        """Block i (FRAME_BLOCK frames, fewer for the last) of a video's embeddings (B, d)."""
        self.put_frames(block_key(key, i), frames, np.zeros(0), 0.0)

    def put_index(self, key: str, timestamps: np.ndarray, end: float, warnings_: Sequence[str] = ()) -> None:
        """The index of a video entry whose blocks are all written."""
        self.put_frames(key, np.zeros((0, 0), np.float32), timestamps, end, list(warnings_))

    def get_index(self, key: str) -> VideoIndex | None:
        """timestamps (T,), end, warnings of a whole entry, or None."""
        hit = self._read(key)
        if hit is None or hit[0].shape != (0, 0):
            return None
        return VideoIndex(hit[1], hit[2], hit[3])

    def get_block(self, key: str, i: int) -> np.ndarray | None:
        """Block i (B, d) of a video entry, or None when absent or damaged."""
        hit = self._read(block_key(key, i))
        return None if hit is None else hit[0]

    # ------------------------------------------------------------------ texts

    def _conn(self) -> sqlite3.Connection | None:
        """The text database; None for a read-only cache without a readable one."""
        if self.read_only:
            if self._db is None and not self._no_db:
                self._db = self._open_read_only()
                self._no_db = self._db is None
            return self._db
        if self._db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open_db()
            except sqlite3.DatabaseError:
                self._move_aside()
                self._db = self._open_db()
        return self._db

    def _open_read_only(self) -> sqlite3.Connection | None:
        """The text database opened without writing anything: `mode=ro`, else (where SQLite cannot
        make the WAL index beside it) as an immutable file; None when absent or unreadable."""
        if not self.db_path.is_file():
            return None
        for mode in ("mode=ro", "mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(
                    f"{self.db_path.resolve().as_uri()}?{mode}", uri=True, timeout=60, isolation_level=None
                )
            except sqlite3.Error:
                continue
            try:
                db.execute("SELECT count(*) FROM texts").fetchone()
                return db
            except sqlite3.DatabaseError:
                db.close()
        return None

    def _move_aside(self) -> None:
        """The text cache is only a cache: an unreadable one is set aside and rebuilt."""
        if self._db is not None:
            self._db.close()
            self._db = None
        aside = self.db_path.with_name(f"{self.db_path.name}.corrupt-{int(time.time())}")
        os.replace(self.db_path, aside)
        for suffix in ("-wal", "-shm"):
            Path(f"{self.db_path}{suffix}").unlink(missing_ok=True)
        warnings.warn(f"The text cache {self.db_path} was unreadable; moved it to {aside}.", stacklevel=4)

    def _open_db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS texts (key TEXT PRIMARY KEY, vec BLOB, checksum TEXT)")
            db.execute("SELECT count(*) FROM texts").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def get_texts(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The entries found among `keys` (damaged ones are deleted and left out)."""
        try:
            return self._get_texts(keys)
        except sqlite3.DatabaseError:
            if self.read_only:
                self.close()
                self._no_db = True
                return {}
            self._move_aside()
            return {}

    def put_texts(self, items: dict[str, np.ndarray]) -> None:
        """Store text embeddings by key (one transaction); a read-only cache keeps nothing."""
        if self._skip_write():
            return
        try:
            try:
                self._put_texts(items)
            except sqlite3.DatabaseError as e:
                if _no_room(e):
                    raise
                self._move_aside()
                self._put_texts(items)
        except (sqlite3.DatabaseError, OSError) as e:
            if not _no_room(e):
                raise
            _warn(f"Could not write to the cache {self.root} (the disk is full); continuing without it.", 2)

    def _get_texts(self, keys: list[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        db = self._conn()
        if db is None:
            return found
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = db.execute(
                f"SELECT key, vec, checksum FROM texts WHERE key IN ({marks})", chunk
            ).fetchall()
            for key, blob, check in rows:
                vec = np.frombuffer(blob, dtype=np.float32)
                if _checksum(vec) == check:
                    found[key] = vec
                elif not self.read_only:
                    db.execute("DELETE FROM texts WHERE key = ?", (key,))
        return found

    def _put_texts(self, items: dict[str, np.ndarray]) -> None:
        rows = []
        for key, vec in items.items():
            v = np.ascontiguousarray(vec, dtype=np.float32)
            rows.append((key, v.tobytes(), _checksum(v)))
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO texts VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        """Close the text database connection."""
        if self._db is not None:
            self._db.close()
            self._db = None
