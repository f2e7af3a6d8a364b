"""Files written and read safely: atomic writes with the user's usual permissions, JSON and JSON
Lines that tolerate a byte-order mark and a torn last line, and a lock for run folders.

Everything here raises `ActAlignError` with one sentence for what a user can fix.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from actalign.errors import ActAlignError

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    """The process umask, read without changing it where /proc allows (changing it is not
    thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class WriteError(ActAlignError, OSError):
    """A file that cannot be written: one sentence for users, and still an OSError (errno,
    strerror) for code that handles those (the embedding cache carries on without writing)."""

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        super().__init__(error.errno, error.strerror)
        self.sentence = f"Cannot write {path} ({error.strerror or error}); choose another place."

    def __str__(self) -> str:
        return self.sentence


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old file or the new one, never a mix.

    The file gets the permissions any new file gets under the user's umask (0644 under 022), not
    the 0600 of a temporary file. Raises WriteError when the place cannot be written.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    except OSError as e:
        raise WriteError(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_can_write_in(folder: Path, target: Path) -> None:
    """Create and remove a temporary file in `folder`: the only test that also holds for root
    on read-only or virtual filesystems (where os.access says yes)."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".actalign-probe-", suffix=TMP_SUFFIX)
    except OSError as e:
        raise ActAlignError(f"Cannot write {target} ({e.strerror}); choose another place.") from None
    os.close(fd)
    os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(folder: str | os.PathLike, names: Iterable[str]) -> int:
    """Delete the temporary files a killed writer of ours left in `folder` for the files `names`
    (`.NAME.XXXXXXXX.tmp`, as `atomic_write_bytes` makes them, and our write probes); returns how
    many. Any other file, a user's `.notes.tmp` included, is left alone."""
    import re

    ours = "|".join(re.escape(n) for n in names)
    pattern = re.compile(rf"^\.(?:(?:{ours})\.|actalign-probe-)[a-z0-9_]{{8}}{re.escape(TMP_SUFFIX)}$")
    n = 0
    for tmp in Path(folder).glob(f".*{TMP_SUFFIX}"):
        if pattern.match(tmp.name):
            tmp.unlink(missing_ok=True)
            n += 1
    return n


# --------------------------------------------------------------------------- reading


MAX_TEXT_BYTES = 512 * 2**20  # no manifest, scripts or candidates file is larger


def check_regular_file(path: str | os.PathLike, what: str) -> Path:
    """A path that names a regular file (not a pipe, a device or a socket, which can hang a read
    or never end), or one clear error. Missing files and folders are left to the caller."""
    p = Path(path).expanduser()
    try:
        mode = p.stat().st_mode
    except OSError:
        return p
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise ActAlignError(f"The {what} {p} is {kind}, not a file; give a regular file.")
    return p


def read_text(path: str | os.PathLike, what: str) -> str:
    """A UTF-8 text file (a leading byte-order mark is dropped), or one clear error."""
    p = check_regular_file(path, what)
    try:
        if p.is_file() and p.stat().st_size > MAX_TEXT_BYTES:
            raise ActAlignError(
                f"The {what} {p} is {p.stat().st_size / 2**20:.0f} MiB, larger than any {what} "
                f"should be ({MAX_TEXT_BYTES // 2**20} MiB at most); check the path."
            )
        data = p.read_bytes()
    except FileNotFoundError:
        raise ActAlignError(f"No such {what}: {p}. Check the path.") from None
    except IsADirectoryError:
        raise ActAlignError(f"The {what} {p} is a folder; give a file.") from None
    except OSError as e:
        raise ActAlignError(f"Cannot read the {what} {p} ({e.strerror}).") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ActAlignError(f"The {what} {p} is not UTF-8 text (byte {e.start}); save it as UTF-8.") from None


def check_text(value: str, where: str) -> str:
    """Refuse strings that cannot be written out as UTF-8 (lone surrogates from broken JSON)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ActAlignError(f"{where} holds an invalid character (a lone surrogate); fix the text.") from None
    return value


def parse_json(text: str, where: str) -> Any:
    """JSON from text with one clear error for syntax errors and absurd nesting."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ActAlignError(f"{where} is not valid JSON ({e.msg} at line {e.lineno}).") from None
    except RecursionError:
        raise ActAlignError(f"{where} is nested too deeply to be a valid file.") from None


def read_json(path: str | os.PathLike, what: str) -> Any:
    return parse_json(read_text(path, what), f"The {what} {Path(path)}")


def read_jsonl(path: str | os.PathLike) -> tuple[list[dict], int]:
    """(rows, number of damaged lines) of a JSON Lines file written by `append_jsonl`.

    A line that is not a complete JSON object (a torn last line from a crash, cut anywhere, even
    inside a multi-byte character) is counted and left out.
    """
    p = check_regular_file(path, "JSON Lines file")
    if not p.exists():
        return [], 0
    rows, bad = [], 0
    for raw in p.read_bytes().split(b"\n"):  # JSON strings may hold U+2028/U+2029 and \r
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    return rows, bad


def rewrite_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one row and fsync, so a finished row survives a crash."""
    line = json.dumps(row, ensure_ascii=False) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------- run folders


def open_regular(path: str | os.PathLike, flags: int, what: str, mode: int = 0o644) -> int:
    """os.open of a regular file that is never a symbolic link (O_NOFOLLOW: a link planted in its
    place cannot make us truncate or write the file it points to), nor a folder, a pipe or a
    device; one clear error otherwise."""
    import errno

    path = Path(path)
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    try:
        extra = nofollow | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(path, flags | extra, mode)
    except OSError as e:
        if e.errno == errno.ELOOP or (nofollow and path.is_symlink()):
            raise ActAlignError(
                f"The {what} {path} is a symbolic link; remove it (it is not ours) or choose another folder."
            ) from None
        if e.errno == errno.EISDIR:
            raise ActAlignError(
                f"The {what} {path} is a folder; remove it or choose another folder."
            ) from None
        raise ActAlignError(f"Cannot open the {what} {path} ({e.strerror}); choose another folder.") from None
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        what_it_is = "a folder" if stat.S_ISDIR(kind) else "a pipe" if stat.S_ISFIFO(kind) else "not a file"
        raise ActAlignError(f"The {what} {path} is {what_it_is}; remove it or choose another folder.")
    if hasattr(os, "O_NONBLOCK"):  # only for opening: a pipe must not hang us before the check
        import fcntl

        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


class FolderLock:
    """An exclusive lock on a folder (an flock on `<folder>/.lock`): a run folder, or an archive
    index, so that two runs (builds) cannot write it at once. The kernel drops it when the
    process dies: no stale locks."""

    def __init__(
        self,
        folder: str | os.PathLike,
        who: str = "run",
        place: str = "run folder",
        advice: str = " or choose another `out` folder",
    ) -> None:
        self.folder = Path(folder)
        self.who, self.place, self.advice = who, place, advice
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        self.folder.mkdir(parents=True, exist_ok=True)
        fd = open_regular(self.folder / ".lock", os.O_RDWR | os.O_CREAT, f"{self.place}'s lock file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ActAlignError(
                f"Another {self.who} is writing to the {self.place} {self.folder} (pid {holder}); "
                f"wait for it to finish{self.advice}."
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def prepare_folder(folder: str | os.PathLike, what: str = "run folder (`out`)") -> Path:
    """A folder that exists and is writable, or one clear error naming it as `what`."""
    p = Path(folder).expanduser()
    if p.exists() and not p.is_dir():
        raise ActAlignError(f"The {what} {p} is a file; give a folder.")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ActAlignError(f"Cannot create the {what} {p} ({e.strerror}); choose another place.") from None
    check_can_write_in(p, p)  # os.access says yes to root on read-only and virtual filesystems
    return p


def iter_files(folder: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Files under `folder` (recursively, sorted) whose suffix is one of `suffixes`."""
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."):
            yield p
