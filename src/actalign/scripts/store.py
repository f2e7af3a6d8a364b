"""The script store: every script generated once, kept in SQLite, editable and portable.

Key: (domain, action, strategy, model, temperature, prompt version); names are compared case- and
space-insensitively. Hand-written scripts (kind "hand": imported for a strategy) win over the
generated ones of their strategy, and only those; hand-written rows without a strategy (imported
before strategies were kept apart) serve every strategy. Files:

- ours: `{"<domain>": {"<action>": ["step", ...]}}` (export, import, --scripts FILE)
- the original authors' `generated_subactions.json`: a list of samples, each with `domain` and
  `subactions` keyed "<option> in <domain>" (import)

Default location: $ACTALIGN_HOME/scripts.sqlite, else the user data dir (platformdirs).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import statistics
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from actalign.errors import ActAlignError
from actalign.files import atomic_write_bytes, check_text, read_json
from actalign.scripts.parse import norm, validate_steps
from actalign.scripts.prompts import DEFAULT_STRATEGY, STRATEGIES

HAND = "hand"
GENERATED = "generated"
STORE_VERSION = 1  # PRAGMA user_version of the schema below; 0: a store from before versioning


def default_store_path() -> Path:
    """$ACTALIGN_HOME/scripts.sqlite, else the user data dir (platformdirs)."""
    if os.environ.get("ACTALIGN_HOME"):
        return Path(os.environ["ACTALIGN_HOME"]).expanduser() / "scripts.sqlite"
    import platformdirs

    return Path(platformdirs.user_data_dir("actalign")) / "scripts.sqlite"


@dataclass(frozen=True)
class Script:
    domain: str
    action: str
    steps: tuple[str, ...]
    kind: str  # "hand" or "generated"
    strategy: str = ""
    model: str = ""
    temperature: float | None = None
    prompt_version: str = ""
    source: str = ""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS scripts (
    domain_key TEXT NOT NULL, action_key TEXT NOT NULL,
    kind TEXT NOT NULL, strategy TEXT NOT NULL, model TEXT NOT NULL,
    temperature REAL NOT NULL, prompt_version TEXT NOT NULL,
    domain TEXT NOT NULL, action TEXT NOT NULL, steps TEXT NOT NULL,
    source TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (domain_key, action_key, kind, strategy, model, temperature, prompt_version)
)
"""


_COLUMNS = [
    "domain_key",
    "action_key",
    "kind",
    "strategy",
    "model",
    "temperature",
    "prompt_version",
    "domain",
    "action",
    "steps",
    "source",
    "created",
]

_OPEN_ATTEMPTS = 100  # about 4 minutes of waiting in all


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


def _read_only_error(e: sqlite3.Error) -> bool:
    return "readonly" in str(e) or "read-only" in str(e)


class StoreReadOnly(ActAlignError):
    """The store cannot be written (a read-only place); reading it still works."""


class ScriptStore:
    """Scripts in SQLite, keyed by domain, action, kind, strategy, model, temperature and
    prompt version (see the module docstring).

    Reading never writes: it uses a query-only connection and checks the schema without creating
    or migrating anything (a missing store reads as empty, and no file is made). Only writing
    creates the file, migrates an older store (after a backup) and turns on WAL. A store on a
    read-only place is read, and says so once (a warning); writing to it raises StoreReadOnly."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_store_path()
        if self.path.is_dir():
            raise ActAlignError(f"The script store {self.path} is a folder; give a file (`store=PATH`).")
        blocker = next((a for a in self.path.parents if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            raise ActAlignError(
                f"The script store {self.path} cannot be made: {blocker} is a file, not a folder."
            )
        self._db: sqlite3.Connection | None = None  # for writing, opened on first write
        self._reader: sqlite3.Connection | None = None  # query-only, opened on first read
        self._said_read_only = False

    @property
    def db(self) -> sqlite3.Connection:
        """The database for writing, opened (created, checked, migrated) on first use."""
        if self._db is None:
            if self._place_read_only():
                raise self._cannot_write()
            self._db = self._open()
            if self._reader is not None:  # reads now go to the writer's connection
                self._reader.close()
                self._reader = None
        return self._db

    def _place_read_only(self) -> bool:
        """Whether the store (or the folder it would be made in) cannot be written."""
        if self.path.exists():
            return not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK))
        folder = next((a for a in self.path.parents if a.exists()), None)
        return folder is not None and not os.access(folder, os.W_OK | os.X_OK)

    def _cannot_write(self) -> StoreReadOnly:
        return StoreReadOnly(
            f"Cannot write the script store {self.path}: it is on a read-only place; pass another "
            "`store=PATH`."
        )

    def say_read_only(self) -> None:
        """Warn, once per store, that the store is read-only and nothing is written to it."""
        if not self._said_read_only:
            self._said_read_only = True
            warnings.warn(
                f"The script store {self.path} is read-only: its scripts are read, and nothing is "
                "written to it (new scripts are used but not kept).",
                stacklevel=3,
            )

    def _reading(self) -> sqlite3.Connection | None:
        """A connection to read from: the writer's when open, else a read-only one; None when
        there is no store (yet) or it holds no scripts table."""
        if self._db is not None:
            return self._db
        if self._reader is None:
            if not self.path.exists():
                return None
            self._reader = self._open(write=False)
        return self._reader if self._has_table(self._reader) else None

    def _open(self, write: bool = True) -> sqlite3.Connection:
        """A checked connection: for writing (created, migrated, WAL), or for reading only (the
        file is never changed; on a read-only place, where SQLite cannot make the WAL index, the
        file is read as immutable)."""
        immutable = False
        for attempt in range(_OPEN_ATTEMPTS):
            db = self._connect(write, immutable)
            try:
                if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("the integrity check failed")
                self._check_schema(db)
                if write:
                    db.execute("PRAGMA journal_mode=WAL")
                    self._migrate(db)
                return db
            except sqlite3.OperationalError as e:
                db.close()
                # another process is creating or migrating the store: busy, not damaged
                if _busy(e) and attempt + 1 < _OPEN_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                if _busy(e):
                    raise ActAlignError(
                        f"The script store {self.path} stayed locked by another process; try again "
                        "when it is done, or pass `store=PATH`."
                    ) from None
                if write and _read_only_error(e):
                    raise self._cannot_write() from None
                if not write and not immutable and self._place_read_only():
                    immutable = True  # no WAL index can be made here: read the file as it is
                    self.say_read_only()
                    continue
                raise self._damaged(e) from None
            except sqlite3.DatabaseError as e:
                db.close()
                raise self._damaged(e) from None
            except ActAlignError:
                db.close()
                raise
        raise AssertionError("unreachable")

    def _connect(self, write: bool, immutable: bool) -> sqlite3.Connection:
        try:
            if write:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                return sqlite3.connect(self.path, timeout=60, isolation_level=None)
            # mode=rw never creates the file, and lets the last connection remove the WAL files
            # as usual; query_only refuses any change through it
            uri = f"{self.path.resolve().as_uri()}?{'mode=ro&immutable=1' if immutable else 'mode=rw'}"
            db = sqlite3.connect(uri, uri=True, timeout=60, isolation_level=None)
            db.execute("PRAGMA query_only = ON")
            return db
        except (OSError, sqlite3.Error) as e:
            if write and isinstance(e, OSError) and e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise self._cannot_write() from None
            raise ActAlignError(
                f"Cannot open the script store {self.path} ({e}); pass `store=PATH`."
            ) from None

    def _has_table(self, db: sqlite3.Connection) -> bool:
        return bool(
            db.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'scripts'"
            ).fetchone()[0]
        )

    def _check_schema(self, db: sqlite3.Connection) -> None:
        """Refuse, without changing anything, a store from a newer actalign or a database that is
        not a script store (no `scripts` table beside other tables, or other columns)."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > STORE_VERSION:
            raise ActAlignError(
                f"The script store {self.path} was written by a newer actalign (format {version}); "
                "upgrade actalign or use another `store`."
            )
        tables = sorted(
            name
            for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not name.startswith("sqlite_")
        )
        if "scripts" not in tables:
            if tables:
                raise ActAlignError(
                    f"The script store {self.path} has no scripts table (it holds {', '.join(tables)}), "
                    "so it is not a script store; it was left as it is: pass another `store=PATH`."
                )
            return  # an empty database: nothing stored yet
        columns = [r[1] for r in db.execute("PRAGMA table_info(scripts)")]
        if columns != _COLUMNS:
            raise ActAlignError(
                f"The script store {self.path} has a scripts table with other columns "
                f"({', '.join(columns)}) than actalign's; it was left as it is: pass another `store=PATH`."
            )

    def _damaged(self, e: Exception) -> ActAlignError:
        """The store holds hand-written data: never deleted, never rebuilt behind the user's back."""
        return ActAlignError(
            f"The script store {self.path} is damaged ({e}). It holds your scripts, so it was left "
            f"as it is: restore a backup ({self.path.name}.bak-* beside it, if any), recover it with "
            f"`sqlite3 {self.path} .recover | sqlite3 recovered.sqlite`, or move it aside to start a "
            "new store."
        )

    def _migrate(self, db: sqlite3.Connection) -> None:
        """Create the schema, or bring an older store's up to date after copying it to
        `<name>.bak-<time>` (the only copy of hand-written scripts must survive a bad migration).
        Only writing migrates; `_check_schema` has refused what is not a script store."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if self._has_table(db) and version < STORE_VERSION:
            self.backup(db)
        db.execute(_SCHEMA)
        db.execute(f"PRAGMA user_version = {STORE_VERSION}")

    def backup(self, db: sqlite3.Connection | None = None) -> Path:
        """A consistent copy of the store beside it (`<name>.bak-<time>`); returns its path."""
        target = self.path.with_name(f"{self.path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        copy = sqlite3.connect(target)
        try:
            (db or self.db).backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        finally:
            copy.close()
        return target

    def close(self) -> None:
        """Close the database (if it was opened)."""
        for db in (self._db, self._reader):
            if db is not None:
                db.close()
        self._db = self._reader = None

    # ------------------------------------------------------------------ writing

    def put(self, script: Script) -> None:
        """Store one script (replacing the one with the same key)."""
        self.put_many([script])

    def put_many(self, scripts: list[Script]) -> None:
        """Store scripts in one transaction."""
        rows = [
            (
                norm(s.domain),
                norm(s.action),
                s.kind,
                s.strategy,
                s.model,
                -1.0 if s.temperature is None else float(s.temperature),
                s.prompt_version,
                s.domain,
                s.action,
                json.dumps(list(s.steps)),
                s.source,
                time.time(),
            )
            for s in scripts
        ]
        db = self.db
        try:
            with db:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR REPLACE INTO scripts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
        except sqlite3.OperationalError as e:
            if _read_only_error(e):
                raise self._cannot_write() from None
            raise self._damaged(e) from None
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    # ------------------------------------------------------------------ reading

    def get(
        self,
        domain: str,
        action: str,
        strategy: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        prompt_version: str | None = None,
    ) -> Script | None:
        """The script to use under `strategy` (None: any): a hand-written one for that strategy
        if any (one imported before scripts had strategies serves every strategy), else the
        newest generated one matching the given fields (None: any)."""
        hand = _for_strategy(self._query(domain, action, kind=HAND), strategy)
        if hand:
            return hand[0]
        found = self._query(
            domain,
            action,
            kind=GENERATED,
            strategy=strategy,
            model=model,
            temperature=temperature,
            prompt_version=prompt_version,
        )
        return found[0] if found else None

    def _query(self, domain: str, action: str, **fields) -> list[Script]:
        sql = "SELECT * FROM scripts WHERE domain_key = ? AND action_key = ?"
        args: list = [norm(domain), norm(action)]
        for name, value in fields.items():
            if value is not None:
                sql += f" AND {name} = ?"
                args.append(value)
        db = self._reading()
        if db is None:
            return []
        try:
            return [self._row(r) for r in db.execute(sql + " ORDER BY created DESC", args)]
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    def all(self) -> list[Script]:
        """Every stored script, by domain and action, newest first."""
        db = self._reading()
        if db is None:
            return []
        try:
            rows = db.execute("SELECT * FROM scripts ORDER BY domain_key, action_key, created DESC")
            return [self._row(r) for r in rows]
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    def scripts(self, strategy: str | None = DEFAULT_STRATEGY) -> list[Script]:
        """The stored scripts of `strategy` (None: all): its generated ones and the hand-written
        ones that serve it, by domain and action, newest first."""
        scripts = self.all()
        if strategy is None:
            return scripts
        _check_strategy(strategy)
        return [s for s in scripts if s.strategy == strategy or (s.kind == HAND and not s.strategy)]

    def effective(self, strategy: str | None = DEFAULT_STRATEGY) -> dict[str, dict[str, list[str]]]:
        """{domain: {action: steps}} of the scripts `get` would return under `strategy` (None: any):
        hand-written first, then the newest generated."""
        out: dict[str, dict[str, list[str]]] = defaultdict(dict)
        chosen: dict[tuple[str, str], Script] = {}
        for s in self.scripts(strategy):
            key = (norm(s.domain), norm(s.action))
            if key not in chosen or _rank(s, strategy) < _rank(chosen[key], strategy):
                chosen[key] = s
        for s in chosen.values():
            out[s.domain][s.action] = list(s.steps)
        return dict(out)

    def _row(self, r: tuple) -> Script:
        (_, _, kind, strategy, model, temp, version, domain, action, steps, source, _) = r
        try:
            parsed = json.loads(steps)
        except (TypeError, ValueError, RecursionError):
            parsed = None
        if not isinstance(parsed, list) or not all(isinstance(x, str) for x in parsed):
            raise ActAlignError(
                f"The script store {self.path} holds a script whose steps are not a JSON list of texts "
                f"({domain!r} / {action!r}); it was left as it is: import that script again, or delete "
                f"its row with `sqlite3 {self.path}`."
            )
        return Script(
            domain,
            action,
            tuple(parsed),
            kind,
            strategy,
            model,
            temp if isinstance(temp, int | float) and temp >= 0 else None,
            version,
            source,
        )

    # ------------------------------------------------------------------ files

    def export(self, path: str | os.PathLike, strategy: str | None = DEFAULT_STRATEGY) -> int:
        """Write the scripts `effective(strategy)` returns to a JSON file; returns how many."""
        data = self.effective(strategy)
        atomic_write_bytes(Path(path), (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
        return sum(len(v) for v in data.values())

    def import_file(self, path: str | os.PathLike, strategy: str = DEFAULT_STRATEGY) -> int:
        """Import our JSON format or the authors' generated_subactions.json, as hand-written
        scripts of `strategy` (they win over generated ones of that strategy only)."""
        _check_strategy(strategy)
        scripts = read_scripts_file(path)
        self.put_many(
            [
                Script(domain, action, tuple(steps), HAND, strategy, source=str(path))
                for domain, actions in scripts.items()
                for action, steps in actions.items()
            ]
        )
        return sum(len(v) for v in scripts.values())


def _check_strategy(strategy: str) -> None:
    if strategy not in STRATEGIES:
        raise ActAlignError(f"Unknown script strategy {strategy!r}; use one of {', '.join(STRATEGIES)}.")


def _rank(s: Script, strategy: str | None) -> int:
    """Which script wins (lowest first): hand-written for the strategy, hand-written for every
    strategy, generated (`all` lists the newest first)."""
    if s.kind != HAND:
        return 2
    return 0 if strategy is None or s.strategy == strategy else 1


def _for_strategy(hand: list[Script], strategy: str | None) -> list[Script]:
    """The hand-written scripts that serve `strategy`, the best first."""
    serving = [s for s in hand if strategy is None or s.strategy in ("", strategy)]
    return sorted(serving, key=lambda s: _rank(s, strategy))


# ---------------------------------------------------------------------- script files


def read_scripts_file(path: str | os.PathLike) -> dict[str, dict[str, list[str]]]:
    """{domain: {action: steps}} from our format or the authors' list-of-samples format."""
    p = Path(path).expanduser()
    data = read_json(p, "scripts file")
    if isinstance(data, list):
        return _from_authors_format(data, p)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ActAlignError(
            f'{p} should map each domain to its actions: {{"basketball": {{"tip-in": ["step", ...]}}}}.'
        )
    out: dict[str, dict[str, list[str]]] = {}
    for domain, actions in data.items():
        check_text(domain, f"{p}: the domain {domain!r}")
        for action, steps in actions.items():
            check_text(action, f"{p}: the action {action!r}")
            cleaned, problems = validate_steps(action, steps, None)
            if problems:
                raise ActAlignError(f"{p}: {domain} / {problems[0]}.")
            out.setdefault(domain, {})[action] = cleaned
    return out


def _from_authors_format(samples: list, p: Path) -> dict[str, dict[str, list[str]]]:
    """The authors' list of samples; samples whose LLM text they could not parse (`subactions`
    kept as text) and scripts that are not valid are skipped, with one warning counting them."""
    out: dict[str, dict[str, list[str]]] = {}
    unparsed, invalid = 0, 0
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict) or "domain" not in sample or "subactions" not in sample:
            raise ActAlignError(f"{p}: sample {i} lacks 'domain' or 'subactions'; is this a scripts file?")
        domain, subs = sample["domain"], sample["subactions"]
        if not isinstance(domain, str) or not domain.strip():
            raise ActAlignError(f"{p}: sample {i} has the domain {domain!r}; a domain is a name.")
        check_text(domain, f"{p}: sample {i}'s domain")
        if not isinstance(subs, dict):
            unparsed += 1  # the authors' files keep unparsed LLM text here when parsing failed
            continue
        suffix = f" in {norm(domain)}"
        for key, steps in subs.items():
            if not isinstance(key, str) or not key.strip():
                invalid += 1
                continue
            action = key[: -len(suffix)] if norm(key).endswith(suffix) else key
            cleaned, problems = validate_steps(action, steps, None)
            if problems:
                invalid += 1
            else:
                out.setdefault(domain, {})[action.strip()] = cleaned
    if not out:
        raise ActAlignError(f"{p} holds no usable scripts.")
    if unparsed or invalid:
        skipped = [
            f"{unparsed} of {len(samples)} samples whose scripts could not be parsed" if unparsed else "",
            f"{invalid} invalid scripts" if invalid else "",
        ]
        warnings.warn(f"{p}: skipped {' and '.join(x for x in skipped if x)}.", stacklevel=3)
    return out


def lookup(scripts: dict[str, dict[str, list[str]]], domain: str, action: str) -> list[str] | None:
    """Case- and space-insensitive lookup in a {domain: {action: steps}} mapping."""
    for d, actions in scripts.items():
        if norm(d) == norm(domain):
            for a, steps in actions.items():
                if norm(a) == norm(action):
                    return steps
    return None


# ---------------------------------------------------------------------- statistics


def stats(scripts: dict[str, dict[str, list[str]]]) -> list[dict]:
    """Table 1 of the paper: steps per action and words per step, per domain and overall."""

    def row(name: str, scripts_: list[list[str]]) -> dict:
        counts = [len(s) for s in scripts_]
        words = [len(step.split()) for s in scripts_ for step in s]
        return {
            "domain": name,
            "actions": len(scripts_),
            "steps_mean": statistics.fmean(counts),
            "steps_std": statistics.pstdev(counts),
            "words_mean": statistics.fmean(words),
            "words_std": statistics.pstdev(words),
        }

    rows = [row(d, list(a.values())) for d, a in sorted(scripts.items()) if a]
    everything = [s for a in scripts.values() for s in a.values()]
    if everything:
        rows.append(row("all", everything))
    return rows
