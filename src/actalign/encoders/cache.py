"""On-disk embedding cache: frame embeddings per (video content, encoder, sampling), text
embeddings per (text, encoder).

Frames live in one .npz per entry, written to a temporary file and renamed into place (atomic,
so two processes never see half an entry); texts live in one SQLite table (safe for concurrent
processes). Every entry stores a checksum: a corrupt or truncated entry is detected, deleted and
recomputed, never returned.

Location: `cache_dir` argument > ACTALIGN_CACHE_DIR > the user cache dir (platformdirs).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ENV_VAR = "ACTALIGN_CACHE_DIR"


def default_cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("actalign"))


def make_key(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).hexdigest()


def _checksum(*arrays: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class EmbeddingCache:
    def __init__(self, cache_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        self.frames_dir = self.root / "frames"
        self.db_path = self.root / "texts.sqlite"
        self._db: sqlite3.Connection | None = None

    # ------------------------------------------------------------------ frames

    def _frames_path(self, key: str) -> Path:
        return self.frames_dir / key[:2] / f"{key}.npz"

    def get_frames(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(frames (T, d), timestamps (T,)) or None when absent or damaged (then it is removed)."""
        path = self._frames_path(key)
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                frames, stamps, check = z["frames"], z["timestamps"], str(z["checksum"])
            if _checksum(frames, stamps) == check:
                return frames, stamps
        except Exception:
            pass
        path.unlink(missing_ok=True)
        return None

    def put_frames(self, key: str, frames: np.ndarray, timestamps: np.ndarray) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, frames=frames, timestamps=timestamps, checksum=np.array(_checksum(frames, timestamps)))
        atomic_write_bytes(self._frames_path(key), buf.getvalue())

    # ------------------------------------------------------------------ texts

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.root.mkdir(parents=True, exist_ok=True)
            try:
                self._db = self._open_db()
            except sqlite3.DatabaseError:
                aside = self.db_path.with_suffix(f".corrupt-{int(time.time())}")
                os.replace(self.db_path, aside)
                warnings.warn(
                    f"The text cache {self.db_path} was unreadable; moved it to {aside}.", stacklevel=3
                )
                self._db = self._open_db()
        return self._db

    def _open_db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS texts (key TEXT PRIMARY KEY, vec BLOB, checksum TEXT)")
        return db

    def get_texts(self, keys: list[str]) -> dict[str, np.ndarray]:
        """The entries found among `keys` (damaged ones are deleted and left out)."""
        found: dict[str, np.ndarray] = {}
        db = self._conn()
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
                else:
                    db.execute("DELETE FROM texts WHERE key = ?", (key,))
        return found

    def put_texts(self, items: dict[str, np.ndarray]) -> None:
        rows = []
        for key, vec in items.items():
            v = np.ascontiguousarray(vec, dtype=np.float32)
            rows.append((key, v.tobytes(), _checksum(v)))
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.executemany("INSERT OR REPLACE INTO texts VALUES (?, ?, ?)", rows)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
