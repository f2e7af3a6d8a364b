"""Stored state. A healthy script store or embedding cache on a read-only place is read
and never written (one warning says so); a damaged row is one sentence naming the file; a store
that is not one of ours is never modified by reading it; a frames entry keeps its decoding warnings.

A read-only place is made for real: as an ordinary user by removing write permission, as root
(whom permissions do not stop) by a read-only bind mount in a private mount namespace
(`unshare -m`); where neither is possible the tests skip, saying why."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import actalign
from actalign.cli import main
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.scripts import ScriptSource, ScriptStore
from actalign.scripts.store import GENERATED, HAND, Script

SRC = Path(actalign.__file__).resolve().parents[1]
BIND_RO = 'mount --bind -o ro "$0" "$0" && exec "$@"'


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: content hash and modification time."""
    return {
        str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _can_bind_read_only() -> str | None:
    """None when `unshare -m` with a read-only bind mount works here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", BIND_RO, "/", "true"], capture_output=True, text=True, check=False
    )
    return None if probe.returncode == 0 else f"no read-only bind mount here ({probe.stderr.strip()})"


def run_read_only(folder: Path, args: list[str], **kw) -> subprocess.CompletedProcess:
    """`python args...` with `folder` on a read-only place."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, *args]
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        modes = {p: p.stat().st_mode for p in paths}
        for p in paths:
            p.chmod(modes[p] & ~0o222)
        try:
            return subprocess.run(command, capture_output=True, text=True, env=env, check=False, **kw)
        finally:
            for p in reversed(paths):
                p.chmod(modes[p])
    why = _can_bind_read_only()
    if why is not None:
        pytest.skip(f"root ignores permissions, and {why}: cannot make a read-only place")
    command = ["unshare", "-m", "sh", "-c", BIND_RO, str(folder), *command]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False, **kw)


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return run_read_only(folder, ["-m", "actalign", *args])


def generated(action: str, steps: tuple[str, ...], strategy: str = "context-rich") -> Script:
    return Script("basketball", action, steps, GENERATED, strategy, "m", 0.2, f"{strategy}/1", "test")


# --------------------------------------------------------------------------- read-only places


def test_a_store_on_a_read_only_place_is_read_and_never_written(tmp_path):
    place = tmp_path / "ro"
    store = ScriptStore(place / "scripts.sqlite")
    store.put_many([generated("Tip-in", ("jump near the rim", "tap the ball in"))])
    store.put(Script("basketball", "Dunk", ("leap high", "slam it"), HAND, "context-rich"))
    store.close()
    before = snapshot(place)
    path = str(place / "scripts.sqlite")

    shown = cli(place, "scripts", "show", "--store", path)
    assert shown.returncode == 0, shown.stderr
    assert "jump near the rim" in shown.stdout and "slam it" in shown.stdout
    notes = shown.stderr.splitlines()
    assert len(notes) <= 1 and all(n.startswith("warning:") and "read-only" in n for n in notes), notes

    stats = cli(place, "scripts", "stats", "--store", path)
    assert stats.returncode == 0 and "basketball" in stats.stdout, stats.stderr
    out = tmp_path / "out.json"
    exported = cli(place, "scripts", "export", str(out), "--store", path)
    assert exported.returncode == 0, exported.stderr
    assert json.loads(out.read_text())["basketball"]["Tip-in"] == ["jump near the rim", "tap the ball in"]

    src = tmp_path / "in.json"
    src.write_text(json.dumps({"tennis": {"Lob": ["racket low under the ball", "ball rises high"]}}))
    imported = cli(place, "scripts", "import", str(src), "--store", path)
    lines = imported.stderr.splitlines()
    assert imported.returncode == 2 and lines[-1].startswith("error: ") and "read-only" in lines[-1]
    assert "Traceback" not in imported.stderr

    # new scripts (from a writer) are used, not kept, and the store says so once
    code = f"""
        import warnings
        from actalign.scripts import ScriptSource, ScriptStore

        class Writer:
            model, source = "m", "test"
            def write(self, domain, actions, strategy):
                return {{a: ["first new step", "second new step"] for a in actions}}

        with warnings.catch_warnings(record=True) as told:
            warnings.simplefilter("always")
            source = ScriptSource([], ScriptStore({path!r}), Writer())
            for _ in range(2):
                got = source.get("basketball", ["Tip-in", "Alley-oop"])
        assert got["Tip-in"] == ["jump near the rim", "tap the ball in"], got
        assert got["Alley-oop"] == ["first new step", "second new step"], got
        print(len(told), "|".join(str(w.message) for w in told))
    """
    ran = run_read_only(place, ["-c", textwrap.dedent(code)])
    assert ran.returncode == 0, ran.stderr
    count, message = ran.stdout.strip().split(" ", 1)
    assert count == "1" and "read-only" in message and path in message
    assert snapshot(place) == before


def test_a_cache_on_a_read_only_place_is_read_and_never_written(tmp_path):
    place = tmp_path / "cache"
    cache = EmbeddingCache(place)
    frames = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache.put_frames("k1", frames, np.array([0.0, 0.5, 1.0]), 1.5, warnings=["2 frames lost"])
    cache.put_frames("bad", frames, np.array([0.0, 0.5, 1.0]), 1.5)
    cache.put_texts({"t1": np.ones(4, np.float32)})
    cache.close()
    (bad,) = (place / "frames").rglob("bad.npz")
    bad.write_bytes(b"x" * 50)  # a damaged entry: a writable cache would delete it
    before = snapshot(place)
    code = f"""
        import warnings
        import numpy as np
        from actalign.encoders.cache import EmbeddingCache

        with warnings.catch_warnings(record=True) as told:
            warnings.simplefilter("always")
            cache = EmbeddingCache({str(place)!r})
            entry = cache.get_frames_entry("k1")
            assert cache.get_frames("bad") is None
            texts = cache.get_texts(["t1", "t2"])
            for _ in range(2):
                cache.put_frames("k2", entry.frames, entry.timestamps, 1.0)
                cache.put_texts({{"t2": np.zeros(4, np.float32)}})
            assert cache.get_frames("k2") is None and cache.get_texts(["t2"]) == {{}}
        print(cache.read_only, entry.frames.sum(), entry.warnings, sorted(texts), len(told), told[0].message)
    """
    ran = run_read_only(place, ["-c", textwrap.dedent(code)])
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith("True 66.0 ['2 frames lost'] ['t1'] 1 "), ran.stdout
    assert "read-only" in ran.stdout
    assert snapshot(place) == before


def test_a_missing_store_is_read_as_empty_and_not_made(tmp_path, capsys):
    path = tmp_path / "deep" / "scripts.sqlite"
    store = ScriptStore(path)
    assert store.get("basketball", "Tip-in") is None and store.all() == [] and store.effective() == {}
    assert main(["scripts", "show", "--store", str(path)]) == 0
    assert main(["scripts", "stats", "--store", str(path)]) == 0
    capsys.readouterr()
    assert not (tmp_path / "deep").exists()


# --------------------------------------------------------------------------- damaged and foreign stores


def one_error(capsys, args: list, *said: str) -> str:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert all(s in err for s in said), err
    return err


@pytest.mark.parametrize("steps", ["not json at all", '["a step", 3]', '{"a": 1}', "[[[["], ids=str)
def test_a_row_with_bad_steps_is_one_sentence_naming_the_file(tmp_path, capsys, steps):
    path = tmp_path / "scripts.sqlite"
    store = ScriptStore(path)
    store.put(generated("Tip-in", ("jump near the rim", "tap the ball in")))
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE scripts SET steps = ?", (steps,))
    db.close()
    one_error(capsys, ["scripts", "show", "--store", path], str(path), "'Tip-in'")
    with pytest.raises(ActAlignError, match="not a JSON list of texts"):
        ScriptStore(path).get("basketball", "tip-in")


def _foreign(path: Path, kind: str) -> None:
    store = ScriptStore(path)
    store.put(generated("Tip-in", ("jump near the rim", "tap the ball in")))
    store.close()
    db = sqlite3.connect(path)
    if kind == "renamed-table":
        db.execute("ALTER TABLE scripts RENAME TO scripts_old")
    elif kind == "other-columns":
        db.execute("DROP TABLE scripts")
        db.execute("CREATE TABLE scripts (name TEXT, body TEXT)")
        db.execute("INSERT INTO scripts VALUES ('mine', 'keep me')")
    else:  # an older format number, as stores from before versioning
        db.execute("PRAGMA user_version = 0")
        db.execute("ALTER TABLE scripts ADD COLUMN extra TEXT")
    db.commit()
    db.close()


@pytest.mark.parametrize("kind", ["renamed-table", "other-columns", "old-with-extra-column"])
def test_reading_a_foreign_store_never_modifies_it(tmp_path, capsys, kind):
    path = tmp_path / "scripts.sqlite"
    _foreign(path, kind)
    before = snapshot(tmp_path)
    said = "no scripts table" if kind == "renamed-table" else "other columns"
    one_error(capsys, ["scripts", "show", "--store", path], str(path), said)
    one_error(capsys, ["scripts", "stats", "--store", path], said)
    with pytest.raises(ActAlignError, match=said):
        ScriptStore(path).get("basketball", "Tip-in")
    source = ScriptSource([], ScriptStore(path), None)
    with pytest.raises(ActAlignError, match=said):
        source.get("basketball", ["Tip-in"])
    assert snapshot(tmp_path) == before  # no new table, no migration, no backup, no WAL switch
    with pytest.raises(ActAlignError, match=said):  # writing refuses it as well, unchanged
        ScriptStore(path).put(generated("Dunk", ("leap high", "slam it")))
    assert snapshot(tmp_path) == before


def test_an_empty_database_file_reads_as_empty_and_becomes_a_store_on_the_first_write(tmp_path):
    path = tmp_path / "scripts.sqlite"
    path.write_bytes(b"")
    assert ScriptStore(path).all() == [] and path.read_bytes() == b""
    store = ScriptStore(path)
    store.put(generated("Tip-in", ("jump near the rim", "tap the ball in")))
    assert store.get("basketball", "tip-in").steps == ("jump near the rim", "tap the ball in")


# --------------------------------------------------------------------------- frames entries keep warnings


def test_a_frames_entry_keeps_its_warnings(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    frames = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    stamps = np.arange(4.0)
    told = ["1 damaged packet skipped, about 3 of 40 frames lost", "ünïcode \x1b kept as it is"]
    cache.put_frames("k", frames, stamps, 4.0, warnings=told)
    entry = cache.get_frames_entry("k")
    np.testing.assert_array_equal(entry.frames, frames)
    np.testing.assert_array_equal(entry.timestamps, stamps)
    assert entry.end == 4.0 and entry.warnings == told
    got = cache.get_frames("k")  # the old interface: the same three values
    assert len(got) == 3 and got[2] == 4.0 and np.array_equal(got[0], frames)
    cache.put_frames("plain", frames, stamps, 4.0)
    assert cache.get_frames_entry("plain").warnings == []


def test_a_tampered_warning_makes_the_entry_damaged(tmp_path):
    import io
    import zipfile

    cache = EmbeddingCache(tmp_path / "c")
    frames = np.ones((2, 3), np.float32)
    cache.put_frames("k", frames, np.arange(2.0), 2.0, warnings=["2 frames lost"])
    (path,) = (tmp_path / "c" / "frames").rglob("k.npz")
    with np.load(path) as z:
        arrays = {name: z[name] for name in z.files}
    arrays["warnings"] = np.array(["0 frames lost"])
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path.write_bytes(buf.getvalue())
    assert zipfile.is_zipfile(path)
    assert cache.get_frames_entry("k") is None and not path.exists()  # recomputed, never returned


def test_entries_written_before_warnings_were_kept_still_read(tmp_path):
    """An entry in the old layout (no warnings array) reads with no warnings."""
    import io

    from actalign.encoders.cache import _checksum

    cache = EmbeddingCache(tmp_path / "c")
    frames, stamps, end = np.ones((2, 3), np.float32), np.arange(2.0), np.array(2.0)
    buf = io.BytesIO()
    check = np.array(_checksum(frames, stamps, end))
    np.savez(buf, frames=frames, timestamps=stamps, end=end, checksum=check)
    path = cache._frames_path("old")
    path.parent.mkdir(parents=True)
    path.write_bytes(buf.getvalue())
    entry = cache.get_frames_entry("old")
    assert entry is not None and entry.warnings == [] and entry.end == 2.0


def test_damaged_entries_in_a_writable_cache_are_still_removed(tmp_path):
    cache = EmbeddingCache(tmp_path / "c")
    assert not cache.read_only
    cache.put_frames("k", np.ones((2, 3), np.float32), np.arange(2.0), 2.0)
    (path,) = (tmp_path / "c" / "frames").rglob("k.npz")
    path.write_bytes(b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and nothing is said about it
        assert cache.get_frames("k") is None
    assert not path.exists()
