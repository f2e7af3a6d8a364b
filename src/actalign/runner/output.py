"""The run folder: config.json, predictions.jsonl (a row per finished clip, appended as clips
finish), failed.jsonl (clips that could not be done, with the reason), plus whatever a caller adds
(summary.json / summary.md for `eval`).

Rules, the same for every engine:
- A folder is used by one run at a time (a lock; a second run refuses with a clear message).
- A run started again with the same configuration resumes: clips already in predictions.jsonl are
  skipped. Lines that are not complete rows (a torn last line from a crash, cut anywhere, or a
  row without an id) are dropped. A different configuration is refused.
- Every clip is written exactly once, even when an engine retries work (rows are deduplicated by
  id). Failures are retried by every new run.

The folder may be a local path or a pyarrow filesystem URI (s3://..., gs://..., file://...).
Object stores cannot append, so there finished rows are written as part files
(`predictions.part-*.jsonl`) that are merged into predictions.jsonl when the run ends (and read
back on resume if it did not). The lock is for local folders only.
"""

from __future__ import annotations

import contextlib
import errno
import json
import time
import uuid
from pathlib import Path

from actalign.errors import ActAlignError
from actalign.files import (
    FolderLock,
    append_jsonl,
    atomic_write_text,
    prepare_folder,
    read_jsonl,
    remove_stale_temps,
    rewrite_jsonl,
)

PREDICTIONS = "predictions.jsonl"
FAILED = "failed.jsonl"
CONFIG = "config.json"
RUN_FILES = (
    PREDICTIONS,
    FAILED,
    CONFIG,
    "scripts.json",
    "summary.json",
    "summary.md",
)  # ours, in a run folder


def is_uri(out: str) -> bool:
    """Whether an output names a pyarrow filesystem URI (scheme://...) rather than a local path."""
    return "://" in str(out)


def _differences(old: object, new: dict, most: int = 3) -> str:
    """What differs between a folder's configuration and this run's, down to the setting:
    "fps: 2.0 -> 4.0", "methods[0].smooth: 1.0 -> 0.5", long texts cut around the change."""
    if not isinstance(old, dict):
        return "its config.json is unreadable"
    before, after = _leaves(old), _leaves(new)
    keys = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    shown = [f"{k}: {_around(before.get(k), after.get(k))}" for k in keys[:most]]
    more = f"; and {len(keys) - most} more" if len(keys) > most else ""
    return "; ".join(shown) + more


def _leaves(value: object, path: str = "") -> dict[str, object]:
    """Every scalar of a JSON value by its path (a.b[0].c)."""
    if isinstance(value, dict):
        out: dict[str, object] = {}
        for k, v in value.items():
            out.update(_leaves(v, f"{path}.{k}" if path else str(k)))
        return out
    if isinstance(value, list):
        out = {}
        for i, v in enumerate(value):
            out.update(_leaves(v, f"{path}[{i}]"))
        return out or {path: []}
    return {path: value}


def _around(a: object, b: object, width: int = 60) -> str:
    """'a -> b', both cut to the stretch where they first differ when they are long texts."""
    x, y = json.dumps(a, ensure_ascii=False), json.dumps(b, ensure_ascii=False)
    if max(len(x), len(y)) <= width:
        return f"{x} -> {y}"
    first = next((i for i, (p, q) in enumerate(zip(x, y)) if p != q), min(len(x), len(y)))
    lo = max(0, first - width // 3)

    def cut(t: str) -> str:
        return ("..." if lo else "") + t[lo : lo + width] + ("..." if len(t) > lo + width else "")

    return f"{cut(x)} -> {cut(y)}"


KEEPS_NOTHING = ("mock", "memory")  # pyarrow filesystems that live and die with the process


def check_out(out: str) -> str:
    """A run folder a run can be kept in, or one sentence: not empty, not an in-memory filesystem."""
    out = str(out)
    if not out.strip():
        raise ActAlignError("The run folder (`out`) is empty; name a folder, e.g. `out=runs/first`.")
    scheme = out.split("://", 1)[0].lower() if is_uri(out) else ""
    if scheme in KEEPS_NOTHING:
        raise ActAlignError(
            f"`out={out}` is an in-memory filesystem: the run would be lost when it ends; give a folder "
            "or a storage URI (s3://, gs://, file://)."
        )
    return out


class RunFolder:
    """Where a run's rows go; see the module docstring."""

    def __init__(self, out: str) -> None:
        self.out = check_out(out)
        self.files = _ArrowFiles(self.out) if is_uri(self.out) else _LocalFiles(self.out)
        self.done: dict[str, dict] = {}
        self.failed: dict[str, dict] = {}

    def precheck(self, known: dict) -> dict | None:
        """Before any model loads: one sentence when the folder holds a run whose configuration
        differs in a setting `known` names (those that need no model: input, fps, methods,
        model name...); else the folder's recorded configuration (None for a new folder)."""
        try:
            previous = self.files.read(CONFIG)
        except ActAlignError:  # not a readable file: the full check, with the lock held, says what
            return None
        if previous is None:
            return None
        try:
            old = json.loads(previous).get("run")
        except (ValueError, RecursionError, AttributeError):
            old = None
        if not isinstance(old, dict):
            return None  # the full check says so, with the lock held
        mine = {k: old.get(k) for k in known}
        if mine != known:
            raise ActAlignError(
                f"{self.out} holds a run with another configuration ({_differences(mine, known)}); "
                "use a new `out` folder (or delete this one)."
            )
        return old

    def open(self, record: dict, meta: dict | None = None) -> dict[str, dict]:
        """Lock the folder, check or write the configuration, and read the finished rows."""
        with self._room():
            return self._open(record, meta)

    def _open(self, record: dict, meta: dict | None) -> dict[str, dict]:
        self.files.lock()
        try:
            return self._check(record, meta)
        except BaseException:
            self.files.unlock()
            raise

    def _check(self, record: dict, meta: dict | None) -> dict[str, dict]:
        previous = self.files.read(CONFIG)
        rows, _bad = self.files.rows()
        if previous is not None:
            try:
                old = json.loads(previous).get("run")
            except (ValueError, RecursionError, AttributeError):
                old = None
            if old != record:
                raise ActAlignError(
                    f"{self.out} holds a run with another configuration ({_differences(old, record)}); "
                    "use a new `out` folder (or delete this one)."
                )
        elif any(isinstance(r.get("id"), str) for r in rows):
            # the settings these rows were made with are gone: they must not be taken for this run's
            raise ActAlignError(
                f"{self.out} holds finished rows but no {CONFIG}, so the settings they were made with "
                f"are unknown; restore its {CONFIG}, or start a new `out` folder (or delete its "
                f"{PREDICTIONS} to run every clip again)."
            )
        else:
            payload = {"run": record, **(meta or {}), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
            self.files.write(CONFIG, json.dumps(payload, indent=2) + "\n")
        names = _method_names(record)
        self.done = {}
        damaged = 0
        for row in rows:
            if not _usable(row, names):
                damaged += isinstance(row.get("id"), str)
                continue
            if row["id"] not in self.done:
                self.done[row["id"]] = row
        if damaged:
            import warnings

            warnings.warn(
                f"{damaged} damaged row(s) in {self.out}/{PREDICTIONS} were dropped; their clips are run "
                "again.",
                stacklevel=4,
            )
        self.files.rewrite_rows(list(self.done.values()))
        self.files.write(FAILED, "")
        return self.done

    def forget(self, ids: set[str]) -> None:
        """Drop finished rows (their clips changed in the manifest: they are run again)."""
        if ids:
            self.done = {k: v for k, v in self.done.items() if k not in ids}
            self.files.rewrite_rows(list(self.done.values()))

    def append(self, row: dict) -> bool:
        """Write a finished row; False (and nothing written) when its id is already done."""
        if row["id"] in self.done:
            return False
        with self._room():
            self.files.append_row(row)
        self.done[row["id"]] = row
        self.failed.pop(row["id"], None)
        return True

    def fail(self, entry: dict) -> None:
        """Record a clip that could not be done (once per id per run), or a rejected manifest row
        (once per line: its id, if any, may be a clip's that runs)."""
        if entry.get("rejected"):
            key = f"line {entry.get('line', len(self.failed))}"
        else:
            key = str(entry.get("id", len(self.failed)))
        if key in self.failed or key in self.done:
            return
        self.failed[key] = entry
        with self._room():
            self.files.write(
                FAILED, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.failed.values())
            )

    def read_json(self, name: str) -> dict | None:
        """A JSON object file of the run folder, or None when absent; one sentence when damaged."""
        text = self.files.read(name)
        if text is None:
            return None
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):
            value = None
        if not isinstance(value, dict):
            raise ActAlignError(f"{self.out}/{name} is damaged; restore it or start a new `out` folder.")
        return value

    def write(self, name: str, text: str) -> None:
        """Write a whole file of the run folder (atomically where the filesystem allows)."""
        with self._room():
            self.files.write(name, text)

    @contextlib.contextmanager
    def _room(self):
        """A full disk is one sentence: what is written stays valid (rows are appended whole,
        files replaced atomically), and the same command resumes once there is room."""
        try:
            yield
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            raise ActAlignError(
                f"Cannot write to {self.out}: the disk is full. Free some space and run the same "
                "command again: finished clips are kept."
            ) from None

    def close(self) -> None:
        """Flush what is pending, merge part files, release the lock."""
        try:
            with self._room():
                self.files.finish()
        finally:
            self.files.unlock()

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _method_names(record: dict) -> list[str]:
    """The names every row of a run carries an entry for: its methods' and its baselines'."""
    named = [*(record.get("methods") or []), *(record.get("baselines") or [])]
    return [m["name"] for m in named if isinstance(m, dict) and isinstance(m.get("name"), str)]


def _usable(row: dict, names: list[str]) -> bool:
    """Whether a row read back from predictions.jsonl is a whole row of this run: an id, its
    candidates, and for every method an entry whose scores and rank are numbers (a row damaged
    by hand or by the disk is run again, never summarised or relabelled)."""
    if not (isinstance(row.get("id"), str) and row["id"]):
        return False
    if not names:  # a folder of rows that are not a runner's (no methods recorded)
        return True
    candidates, methods = row.get("candidates"), row.get("methods")
    if not (isinstance(candidates, list) and all(isinstance(c, str) for c in candidates)):
        return False
    if not isinstance(methods, dict) or not isinstance(row.get("domain"), str):
        return False
    for name in names:
        entry = methods.get(name)
        if not isinstance(entry, dict):
            return False
        scores, rank = entry.get("scores"), entry.get("rank")
        if scores is not None and not (
            isinstance(scores, list) and len(scores) == len(candidates) and all(_number(x) for x in scores)
        ):
            return False
        if rank is not None and not (isinstance(rank, int) and not isinstance(rank, bool) and rank >= 1):
            return False
    return True


def _number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _text(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ActAlignError(
            f"{where} is not UTF-8 text: it is damaged; restore it or start a new `out` folder."
        ) from None


class _LocalFiles:
    def __init__(self, out: str) -> None:
        self.root = Path(out).expanduser()
        self._lock: FolderLock | None = None

    def lock(self) -> None:
        prepare_folder(self.root)
        self._lock = FolderLock(self.root).acquire()
        try:
            for name in RUN_FILES:  # a folder, a link or a pipe in a file's place: one sentence
                _check_kind(self.root / name)
        except ActAlignError:
            self.unlock()
            raise
        remove_stale_temps(self.root, RUN_FILES)  # left by a writer of ours killed mid-write

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def read(self, name: str) -> str | None:
        p = self.root / name
        if not p.exists():
            return None
        try:
            data = p.read_bytes()
        except OSError as e:
            raise ActAlignError(f"Cannot read {p} ({e.strerror}); check the run folder.") from None
        return _text(data, str(p))

    def write(self, name: str, text: str) -> None:
        atomic_write_text(self.root / name, text)

    def rows(self) -> tuple[list[dict], int]:
        return read_jsonl(self.root / PREDICTIONS)

    def rewrite_rows(self, rows: list[dict]) -> None:
        rewrite_jsonl(self.root / PREDICTIONS, rows)

    def append_row(self, row: dict) -> None:
        append_jsonl(self.root / PREDICTIONS, row)

    def finish(self) -> None:
        pass


def _check_kind(path: Path) -> None:
    """A run folder's file is a regular file of its own or absent; anything else in its place
    (a folder, a symbolic link whose target we would write, a pipe) is one sentence."""
    import stat

    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ActAlignError(f"Cannot read {path} ({e.strerror}); check the run folder.") from None
    if stat.S_ISREG(mode):
        return
    kind = (
        "a folder"
        if stat.S_ISDIR(mode)
        else "a symbolic link"
        if stat.S_ISLNK(mode)
        else "a pipe"
        if stat.S_ISFIFO(mode)
        else "not a regular file"
    )
    raise ActAlignError(
        f"{path} is {kind}, where a run folder keeps its own {path.name} file; move it away or "
        "choose another `out` folder."
    )


class _ArrowFiles:
    """A run folder on any pyarrow filesystem; appends become part files, merged at the end."""

    PART_ROWS = 50
    PART_SECONDS = 30.0

    def __init__(self, uri: str) -> None:
        try:
            from pyarrow import fs
        except ImportError:
            raise ActAlignError(f"Writing to {uri} needs pyarrow: pip install 'actalign[ray]'.") from None
        try:
            self.fs, self.root = fs.FileSystem.from_uri(uri)
        except Exception as e:
            raise ActAlignError(f"Cannot open the output {uri} ({str(e)[:150]}).") from None
        self.uri = uri
        self.pending: list[dict] = []
        self.last_flush = time.monotonic()

    def _path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def lock(self) -> None:
        try:
            self.fs.create_dir(self.root, recursive=True)
        except Exception as e:
            raise ActAlignError(f"Cannot create the output folder {self.uri} ({str(e)[:150]}).") from None

    def unlock(self) -> None:
        pass

    def _bytes(self, name: str) -> bytes | None:
        from pyarrow import fs

        kind = self.fs.get_file_info(self._path(name)).type
        if kind == fs.FileType.NotFound:
            return None
        where = f"{self.uri.rstrip('/')}/{name}"
        if kind != fs.FileType.File:
            raise ActAlignError(
                f"{where} is a folder, where a run folder keeps its own {name} file; move it away or "
                "choose another `out` folder."
            )
        try:
            with self.fs.open_input_stream(self._path(name)) as f:
                return f.read()
        except OSError as e:
            raise ActAlignError(f"Cannot read {where} ({str(e)[:150]}).") from None

    def read(self, name: str) -> str | None:
        data = self._bytes(name)
        return None if data is None else _text(data, f"{self.uri.rstrip('/')}/{name}")

    def write(self, name: str, text: str) -> None:
        with self.fs.open_output_stream(self._path(name)) as f:  # object stores publish on close
            f.write(text.encode("utf-8"))

    def _parts(self) -> list[str]:
        from pyarrow import fs

        selector = fs.FileSelector(self.root, recursive=False)
        names = [i.base_name for i in self.fs.get_file_info(selector) if i.type == fs.FileType.File]
        return sorted(n for n in names if n.startswith("predictions.part-"))

    def rows(self) -> tuple[list[dict], int]:
        rows, bad = [], 0
        for name in [PREDICTIONS, *self._parts()]:
            data = self._bytes(name)
            if data is None:
                continue
            for line in data.split(b"\n"):  # a torn last line may end inside a character
                try:
                    row = json.loads(line.decode("utf-8-sig")) if line.strip() else None
                except (ValueError, RecursionError):
                    bad += 1
                    continue
                if isinstance(row, dict):
                    rows.append(row)
        return rows, bad

    def rewrite_rows(self, rows: list[dict]) -> None:
        self.write(PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        for name in self._parts():
            self.fs.delete_file(self._path(name))

    def append_row(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.PART_ROWS or time.monotonic() - self.last_flush > self.PART_SECONDS:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            name = f"predictions.part-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
            self.write(name, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.pending))
            self.pending = []
        self.last_flush = time.monotonic()

    def finish(self) -> None:
        self._flush()
        rows, _ = self.rows()
        unique = {}
        for r in rows:
            if isinstance(r.get("id"), str):
                unique.setdefault(r["id"], r)
        self.rewrite_rows(list(unique.values()))
