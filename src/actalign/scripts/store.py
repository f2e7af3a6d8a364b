"""The script store: every script generated once, kept in SQLite, editable and portable.

Key: (domain, action, strategy, model, temperature, prompt version); names are compared case- and
space-insensitively. Hand-written scripts (kind "hand": from a JSON file or an import) always win
over generated ones. Files:

- ours: `{"<domain>": {"<action>": ["step", ...]}}` (export, import, --scripts FILE)
- the original authors' `generated_subactions.json`: a list of samples, each with `domain` and
  `subactions` keyed "<option> in <domain>" (import)

Default location: $ACTALIGN_HOME/scripts.sqlite, else the user data dir (platformdirs).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from actalign.errors import ActAlignError
from actalign.files import atomic_write_bytes, check_text, read_json
from actalign.scripts.parse import norm, validate_steps

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


_OPEN_ATTEMPTS = 100  # about 4 minutes of waiting in all


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)


class ScriptStore:
    """Scripts in SQLite, keyed by domain, action, kind, strategy, model, temperature and
    prompt version (see the module docstring)."""

    def __init__(self, path: str | os.PathLike | None = None) -> None:
        self.path = Path(path).expanduser() if path else default_store_path()
        if self.path.is_dir():
            raise ActAlignError(f"The script store {self.path} is a folder; give a file (--store PATH).")
        blocker = next((a for a in self.path.parents if a.exists() and not a.is_dir()), None)
        if blocker is not None:
            raise ActAlignError(
                f"The script store {self.path} cannot be made: {blocker} is a file, not a folder."
            )
        self._db: sqlite3.Connection | None = None  # opened on first use: no file until needed

    @property
    def db(self) -> sqlite3.Connection:
        """The database, opened (created, checked, migrated) on first use."""
        if self._db is None:
            self._db = self._open()
        return self._db

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        except (OSError, sqlite3.Error) as e:
            raise ActAlignError(
                f"Cannot open the script store {self.path} ({e}); pass --store PATH."
            ) from None
        for attempt in range(_OPEN_ATTEMPTS):
            try:
                if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                    raise sqlite3.DatabaseError("the integrity check failed")
                db.execute("PRAGMA journal_mode=WAL")
                self._migrate(db)
                break
            except sqlite3.OperationalError as e:
                # another process is creating or migrating the store: busy, not damaged
                if _busy(e) and attempt + 1 < _OPEN_ATTEMPTS:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                db.close()
                if _busy(e):
                    raise ActAlignError(
                        f"The script store {self.path} stayed locked by another process; try again "
                        "when it is done, or pass --store PATH."
                    ) from None
                raise self._damaged(e) from None
            except sqlite3.DatabaseError as e:
                db.close()
                raise self._damaged(e) from None
            except ActAlignError:
                db.close()
                raise
        return db

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
        `<name>.bak-<time>` (the only copy of hand-written scripts must survive a bad migration)."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        has_table = db.execute(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'scripts'"
        ).fetchone()[0]
        if version > STORE_VERSION:
            raise ActAlignError(
                f"The script store {self.path} was written by a newer actalign (format {version}); "
                "upgrade actalign or use another --store."
            )
        if has_table and version < STORE_VERSION:
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
        if self._db is not None:
            self._db.close()
            self._db = None

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
        try:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("INSERT OR REPLACE INTO scripts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
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
        """The script to use: a hand-written one if any, else the newest generated one matching
        the given fields (None: any)."""
        hand = self._query(domain, action, kind=HAND)
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
        try:
            return [_row(r) for r in self.db.execute(sql + " ORDER BY created DESC", args)]
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    def all(self) -> list[Script]:
        """Every stored script, by domain and action, newest first."""
        try:
            rows = self.db.execute("SELECT * FROM scripts ORDER BY domain_key, action_key, created DESC")
            return [_row(r) for r in rows]
        except sqlite3.DatabaseError as e:
            raise self._damaged(e) from None

    def effective(self) -> dict[str, dict[str, list[str]]]:
        """{domain: {action: steps}} of the scripts `get` would return (hand first, then newest)."""
        out: dict[str, dict[str, list[str]]] = defaultdict(dict)
        chosen: dict[tuple[str, str], Script] = {}
        for s in self.all():
            key = (norm(s.domain), norm(s.action))
            if key not in chosen or (chosen[key].kind != HAND and s.kind == HAND):
                chosen[key] = s
        for s in chosen.values():
            out[s.domain][s.action] = list(s.steps)
        return dict(out)

    # ------------------------------------------------------------------ files

    def export(self, path: str | os.PathLike) -> int:
        """Write the scripts `effective` returns to a JSON file; returns how many."""
        data = self.effective()
        atomic_write_bytes(Path(path), (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode())
        return sum(len(v) for v in data.values())

    def import_file(self, path: str | os.PathLike) -> int:
        """Import our JSON format or the authors' generated_subactions.json, as hand-written."""
        scripts = read_scripts_file(path)
        self.put_many(
            [
                Script(domain, action, tuple(steps), HAND, source=str(path))
                for domain, actions in scripts.items()
                for action, steps in actions.items()
            ]
        )
        return sum(len(v) for v in scripts.values())


def _row(r: tuple) -> Script:
    (_, _, kind, strategy, model, temp, version, domain, action, steps, source, _) = r
    return Script(
        domain,
        action,
        tuple(json.loads(steps)),
        kind,
        strategy,
        model,
        None if temp < 0 else temp,
        version,
        source,
    )


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
    out: dict[str, dict[str, list[str]]] = {}
    for i, sample in enumerate(samples):
        if not isinstance(sample, dict) or "domain" not in sample or "subactions" not in sample:
            raise ActAlignError(f"{p}: sample {i} lacks 'domain' or 'subactions'; is this a scripts file?")
        domain, subs = sample["domain"], sample["subactions"]
        if not isinstance(domain, str) or not domain.strip():
            raise ActAlignError(f"{p}: sample {i} has the domain {domain!r}; a domain is a name.")
        check_text(domain, f"{p}: sample {i}'s domain")
        if not isinstance(subs, dict):
            continue  # the authors' files keep unparsed LLM text here when parsing failed
        suffix = f" in {norm(domain)}"
        for key, steps in subs.items():
            if not isinstance(key, str) or not key.strip():
                continue
            action = key[: -len(suffix)] if norm(key).endswith(suffix) else key
            cleaned, problems = validate_steps(action, steps, None)
            if not problems:
                out.setdefault(domain, {})[action.strip()] = cleaned
    if not out:
        raise ActAlignError(f"{p} holds no usable scripts.")
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
