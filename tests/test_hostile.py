"""Hostile input. A fuzz harness over damaged videos (a fixed set of cases, the same on
every machine), and a test per class of bad input: damaged and odd videos, every input checked,
stored state that cannot be poisoned, run folders that cannot be corrupted."""

from __future__ import annotations

import json
import os
import select
import sqlite3
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import av
import numpy as np
import pytest

from actalign.cli import main
from actalign.errors import ActAlignError
from media import SAMPLES, make_video

TESTS = Path(__file__).parent
CASE_TIMEOUT = 60.0  # a case taking longer than this is a hang
MIN_SHARE = 0.5  # exit 0 from fewer than this share of the decodable frames needs a warning


def textured(path: Path, n: int = 60, size=(320, 240), fps: int = 30) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
        s.options = {"g": "10", "crf": "23", "preset": "veryfast"}
        for i in range(n):
            img = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
            img = np.kron(img, np.ones((8, 8, 1), np.uint8))
            img[..., 0] = (i * 4) % 256
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


# --------------------------------------------------------------------------- mutations


def box(data: bytes, name: bytes) -> int:
    return data.find(name)


def set_u32(data: bytearray, at: int, value: int) -> None:
    data[at : at + 4] = struct.pack(">I", value & 0xFFFFFFFF)


def header_mutations(data: bytes) -> dict[str, bytes]:
    out = {}
    m = box(data, b"mdhd")
    if m > 0:
        for name, offset, value in [
            ("mdhd-duration-max", 20, 0xFFFFFFFF),
            ("mdhd-duration-0", 20, 0),
            ("mdhd-timescale-1", 16, 1),
            ("mdhd-timescale-max", 16, 0xFFFFFFFF),
        ]:
            d = bytearray(data)
            set_u32(d, m + offset, value)
            out[name] = bytes(d)
    s = box(data, b"stts")
    if s > 0:
        for name, value in [
            ("stts-delta-huge", 0x7FFFFFFF),
            ("stts-delta-0", 0),
            ("stts-count-huge", 0x7FFFFFFF),
        ]:
            d = bytearray(data)
            set_u32(d, s + (16 if "delta" in name else 12), value)
            out[name] = bytes(d)
    for name, tag, offset in [("mvhd-duration-0", b"mvhd", 20), ("tkhd-width-0", b"tkhd", 80)]:
        at = box(data, tag)
        if at > 0:
            d = bytearray(data)
            set_u32(d, at + offset, 0)
            out[name] = bytes(d)
    lavf = box(data, b"Lavf")
    if lavf > 0:
        d = bytearray(data)
        d[lavf] = 0xE9  # a Latin-1 byte in the encoder tag
        out["metadata-latin1"] = bytes(d)
    return out


def mutations(data: bytes, seed: int = 0) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    n = len(data)
    start = box(data, b"mdat") + 8 if box(data, b"mdat") > 0 else n // 10
    out = {
        "empty": b"",
        "random-bytes": rng.integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        **header_mutations(data),
    }
    for density in (1e-5, 1e-4, 1e-3, 1e-2):
        for k in range(3):
            d = np.frombuffer(data, np.uint8).copy()
            idx = rng.integers(0, n, max(1, int(n * density)))
            d[idx] ^= rng.integers(1, 256, len(idx), dtype=np.uint8)
            out[f"flip-{density:g}-{k}"] = d.tobytes()
    for share in (0.1, 0.3, 0.5, 0.7, 0.9, 0.99):
        out[f"truncate-{share}"] = data[: int(n * share)]
    for k in range(6):
        d = bytearray(data)
        at = int(rng.integers(start, n - 4096))
        d[at : at + 4096] = bytes(4096)
        out[f"zero-4k-{k}"] = bytes(d)
    for k in range(4):
        d = bytearray(data)
        a, b = sorted(int(x) for x in rng.integers(start, n - 4096, 2))
        if b - a >= 4096:
            d[a : a + 4096], d[b : b + 4096] = data[b : b + 4096], data[a : a + 4096]
            out[f"swap-4k-{k}"] = bytes(d)
    return out


# --------------------------------------------------------------------------- harness


def run_fuzz(cases: list[dict], base_args: list[str]) -> list[dict]:
    """Each case through `actalign classify` in a worker process; crashes and hangs are caught
    here and charged to the case that caused them (a new worker takes the next ones)."""
    results: list[dict] = []
    pending = list(cases)
    while pending:
        proc = subprocess.Popen(
            [sys.executable, str(TESTS / "fuzz_worker.py"), json.dumps(base_args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            while pending:
                case = pending.pop(0)
                proc.stdin.write((json.dumps(case) + "\n").encode())
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], CASE_TIMEOUT + 30)
                if not ready:
                    results.append({"case": case["name"], "outcome": "hang"})
                    break
                line = proc.stdout.readline()
                if not line:
                    results.append(
                        {"case": case["name"], "outcome": "crash", "detail": f"exit {proc.wait()}"}
                    )
                    break
                results.append(json.loads(line))
        finally:
            proc.kill()
            proc.wait()
    return results


@pytest.fixture(scope="module")
def fuzz_base(tmp_path_factory, siglip_dir):
    """(folder, the classify flags every case runs with)."""
    root = tmp_path_factory.mktemp("fuzz")
    scripts = root / "s.json"
    scripts.write_text(json.dumps({"d": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    base = [
        "--domain",
        "d",
        "--candidates",
        "a",
        "b",
        "--scripts",
        str(scripts),
        "--model",
        str(siglip_dir),
        "--fps",
        "10",
        "--no-cache",
        "--format",
        "json",
        "--quiet",
    ]
    return root, base


@pytest.mark.slow
@pytest.mark.parametrize("source", ["generated", "soccer-sample"])
def test_fuzzed_videos_never_crash_hang_or_pass_silently(fuzz_base, source):
    """Every mutation of one source video (a fixed list: the same cases on any machine, however
    fast) through `classify`: one sentence or a result, never a traceback, crash or hang."""
    from actalign.video import Sampling, read_frames

    root, base = fuzz_base
    if source == "generated":
        src, seed = textured(root / "textured.mp4"), 0
    elif (SAMPLES / "soccer.mp4").exists():
        src, seed = SAMPLES / "soccer.mp4", 1
    else:
        pytest.skip(f"the shared sample {SAMPLES / 'soccer.mp4'} is absent")
    reference = len(read_frames(src, Sampling(fps=10)).timestamps)
    cases = []
    for name, data in mutations(src.read_bytes(), seed=seed).items():
        path = root / f"{src.stem}-{name}.mp4"
        path.write_bytes(data)
        cases.append({"name": f"{src.stem}/{name}", "path": str(path)})
    results = run_fuzz(cases, base)
    by_case = {c["name"]: c for c in cases}
    counts: dict[str, int] = {}
    silent = []
    for r in results:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
        if r["outcome"] == "ok" and r["frames"] < MIN_SHARE * reference and not r["warned"]:
            silent.append((r["case"], r["frames"], reference))
    report = {"cases": len(results), "of": len(cases), "outcomes": counts}
    artifacts = Path(os.environ.get("ACTALIGN_ARTIFACTS", root))
    artifacts.mkdir(parents=True, exist_ok=True)
    report_file = artifacts / f"fuzz-report-{source}.json"
    report_file.write_text(json.dumps({**report, "results": results}, indent=1))
    print(f"fuzz: {report}")
    bad = [r for r in results if r["outcome"] in ("traceback", "crash", "hang")]
    assert not bad, bad[:3]
    assert not silent, silent
    assert [r["case"] for r in results] == list(by_case)  # every case ran, once
    assert counts.get("ok", 0) >= 5 and counts.get("error", 0) >= 3  # both kinds of answer were exercised


# --------------------------------------------------------------------------- damaged and odd videos


def test_decoding_goes_past_damaged_packets(tmp_path):
    from actalign import video

    data = textured(tmp_path / "v.mp4", n=80).read_bytes()
    zeroed = bytearray(data)
    zeroed[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)
    (tmp_path / "z.mp4").write_bytes(bytes(zeroed))
    with pytest.warns(UserWarning, match=r"damaged packet\(s\) skipped, about \d+ of 80 frames lost"):
        got = video.read_frames(tmp_path / "z.mp4")
    assert len(got.timestamps) >= 76 and (np.diff(got.timestamps) > 0).all()


def test_damaged_headers(tmp_path):
    from actalign import video

    data = textured(tmp_path / "v.mp4", n=60).read_bytes()
    cases = header_mutations(data)
    (tmp_path / "dur.mp4").write_bytes(cases["mdhd-duration-max"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every frame decodes: nothing to warn about
        assert len(video.read_frames(tmp_path / "dur.mp4").timestamps) == 60
    (tmp_path / "count.mp4").write_bytes(cases["stts-count-huge"])  # the packets contradict the count
    assert len(video.read_frames(tmp_path / "count.mp4").timestamps) == 60
    (tmp_path / "tag.mp4").write_bytes(cases["metadata-latin1"])
    assert video.probe(tmp_path / "tag.mp4").frames == 60
    for name in ("mdhd-timescale-1", "stts-delta-huge"):
        (tmp_path / f"{name}.mp4").write_bytes(cases[name])
        with pytest.raises(ActAlignError, match="timing tables are damaged"):
            video.read_frames(tmp_path / f"{name}.mp4")


def test_jumping_timestamps_are_repaired_with_a_warning(tmp_path):
    from actalign import video

    times = [0.0, 0.1, 0.2, 0.3, 500.0, 500.1, 500.2]
    path = make_video(tmp_path / "t.mp4", n=len(times), times=times)
    with pytest.warns(UserWarning, match="timestamps that repeat, go backwards or jump"):
        got = video.read_frames(path)
    np.testing.assert_allclose(got.timestamps, np.arange(7) / 10, atol=1e-6)


def test_the_clock_repairs_repeated_and_backward_timestamps():
    """Muxers refuse to write such files, but damaged ones hold them; the clock sees frames."""
    from types import SimpleNamespace

    from actalign.video import DecodeStats, _Clock

    stats = DecodeStats()
    clock = _Clock(0.0, 10.0, stats)
    raw = [0.0, 0.1, 0.2, 0.2, 0.15, 0.3, None, 0.5]
    got = [clock(SimpleNamespace(time=t)) for t in raw]
    assert (np.diff(got) > 0).all() and stats.retimed == 5  # the repeat, the step back and what follows
    np.testing.assert_allclose(got, [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], atol=1e-9)


# --------------------------------------------------------------------------- every input checked


@pytest.fixture
def setup(tmp_path, siglip_dir):
    clip = make_video(tmp_path / "clip.mp4", n=16, fps=8)
    scripts = tmp_path / "s.json"
    scripts.write_text(json.dumps({"d": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    base = ["--domain", "d", "--candidates", "a", "b", "--scripts", str(scripts), "--model", str(siglip_dir)]
    return tmp_path, clip, scripts, base


def one_error(capsys, args, message):
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and message in err, (args, err)


def test_bad_flags_are_one_sentence(setup, capsys):
    tmp, clip, scripts, base = setup
    a_file = tmp / "file"
    a_file.write_text("x")
    for extra, message in [
        (["--device", "foo"], "Unknown device"),
        (["--device", "meta"], "Unknown device"),
        (["--cache-dir", str(a_file)], "is a file"),
        (["--template", "{oops}"], "template"),
    ]:
        one_error(capsys, ["classify", clip, *base, *extra], message)


def test_flag_values_rejected_by_argparse_say_why(setup, capsys):
    tmp, clip, scripts, base = setup
    for extra, message in [
        (["--start", "nan"], "not a finite number"),
        (["--smooth", "inf"], "not a finite number"),
        (["--batch-size", "0"], "must be at least 1"),
        (["--fps", "0"], "must be greater than 0"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(["classify", str(clip), *base, *extra])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unwritable_cache_and_out_folders(setup, capsys):
    tmp, clip, scripts, base = setup
    if os.geteuid() == 0:
        locked = Path("/proc/self")  # root may write anywhere else
    else:
        locked = tmp / "locked"
        locked.mkdir(mode=0o500)
    one_error(capsys, ["classify", clip, *base, "--cache-dir", locked / "cache"], "cache")
    (tmp / "m.jsonl").write_text(
        json.dumps({"video": "clip.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 0})
    )
    a_file = tmp / "taken"
    a_file.write_text("x")
    one_error(capsys, ["eval", tmp / "m.jsonl", "--out", a_file, *base[5:]], "is a file")
    one_error(
        capsys, ["eval", tmp / "m.jsonl", "--out", a_file, "--scripts", scripts, "--fps", "1"], "is a file"
    )


def test_bad_files_are_one_sentence(setup, capsys):
    tmp, clip, scripts, base = setup
    latin = tmp / "cands.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    deep = tmp / "deep.json"
    deep.write_text("[" * 1000 + "]" * 1000)
    authors = tmp / "authors.json"
    authors.write_text(json.dumps([{"domain": 7, "subactions": {"a in 7": ["x y", "z w"]}}]))
    surrogate = tmp / "surrogate.json"
    surrogate.write_text('{"d": {"a": ["red \\ud800 ball", "blue net"]}}')
    run = ["classify", clip, "--domain", "d", "--model", base[-1]]
    one_error(capsys, [*run, "--candidates-file", latin, "--scripts", scripts], "not UTF-8")
    one_error(capsys, [*run, "--candidates", "a", "--scripts", deep], "nested too deeply")
    one_error(capsys, [*run, "--candidates", "a", "--scripts", authors], "a domain is a name")
    one_error(capsys, [*run, "--candidates", "a", "--scripts", surrogate], "lone surrogate")
    one_error(capsys, ["scripts", "import", surrogate, "--store", tmp / "st.sqlite"], "lone surrogate")


def test_byte_order_marks_and_format_conversions_are_accepted(setup, capsys):
    tmp, clip, scripts, base = setup
    bom = tmp / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + scripts.read_bytes())
    code = main(
        [
            "classify",
            str(clip),
            *base[:6],
            str(bom),
            *base[5:],
            "--template",
            "{step!r} in {domain}",
            "--format",
            "json",
            "--no-cache",
        ]
    )
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    manifest = tmp / "m.jsonl"
    manifest.write_bytes(
        b"\xef\xbb\xbf"
        + json.dumps({"video": "clip.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 0}).encode()
        + b"\n"
    )
    from actalign.runner.plan import load_manifest

    plan = load_manifest(manifest)
    assert len(plan.clips) == 1 and not plan.failures


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"video": None}, "lacks the field 'video'"),
        ({"video": 3}, "'video' must be non-empty text"),
        ({"video": ["a.mp4"]}, "'video' must be non-empty text"),
        ({"start": "1"}, "'start' must be a number of seconds"),
        ({"end": [1]}, "'end' must be a number of seconds"),
        ({"answer": True}, "'answer' must be a 0-based index"),
        ({"candidates": ["Tip-in", "tip-in "]}, "given twice"),
        ({"span": [3, 1]}, "'span' must be [start, end]"),
        ({"candidates": ["Tip\x00in", "b"]}, "control character"),
        ({"domain": "d\x1b[31m"}, "control character"),
    ],
)
def test_manifest_rows_of_the_wrong_type_go_to_failed(tmp_path, row, reason):
    from actalign.runner.plan import load_manifest

    good = {"video": "v.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 0}
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "bad", **row}) + "\n")
    plan = load_manifest(path)
    assert len(plan.clips) == 1
    (failure,) = plan.failures
    assert failure["line"] == 2 and reason in failure["reason"]


def test_a_rejected_row_that_reuses_an_id_stays_listed_and_counted_as_rejected(setup, capsys):
    tmp, clip, scripts, base = setup
    rows = [
        {"id": "one", "video": "clip.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 0},
        {"id": "gone", "video": "missing.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 1},
        {"id": "one", "video": "clip.mp4", "domain": "d", "candidates": ["b", "a"], "answer": 1},
    ]
    (tmp / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(tmp / "m.jsonl"), "--out", str(tmp / "run"), *base[5:], "--quiet"]) == 1
    failed = [json.loads(x) for x in (tmp / "run" / "failed.jsonl").read_text().splitlines()]
    assert sorted((f.get("rejected", False), f["line"]) for f in failed) == [(False, 2), (True, 3)]
    summary = json.loads((tmp / "run" / "summary.json").read_text())
    assert (summary["clips"], summary["failed"], summary["rows_rejected"]) == (1, 1, 1)
    assert "Evaluated 1 of 2 clips" in capsys.readouterr().out


def test_eval_with_the_default_cache_lists_missing_videos_and_folders(setup, capsys, monkeypatch):
    tmp, clip, scripts, base = setup
    rows = [
        {"video": "clip.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 0},
        {"video": "missing.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 1},
        {"video": ".", "domain": "d", "candidates": ["a", "b"], "answer": 1, "id": "folder"},
        {"video": "~/no-such-file.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 1, "id": "home"},
    ]
    (tmp / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(tmp / "m.jsonl"), "--out", str(tmp / "run"), *base[5:], "--quiet"]) == 1
    failed = {
        f["id"]: f["reason"] for f in map(json.loads, (tmp / "run" / "failed.jsonl").read_text().splitlines())
    }
    assert (
        "No such video file" in failed["missing"]
        and "folder" in failed["folder"]
        and "No such" in failed["home"]
    )
    assert "Evaluated 1 of 4 clips" in capsys.readouterr().out


# --------------------------------------------------------------------------- stored state


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[100:4096] = os.urandom(len(data[100:4096]))
    path.write_bytes(bytes(data))


def test_a_corrupt_text_cache_is_moved_aside_and_rebuilt(setup, capsys):
    tmp, clip, scripts, base = setup
    args = ["classify", str(clip), *base, "--cache-dir", str(tmp / "cache"), "--format", "json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    db = tmp / "cache" / "texts.sqlite"
    sqlite3.connect(db).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    corrupt(db)
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "moved it to" in captured.err
    assert json.loads(captured.out) == first
    assert list((tmp / "cache").glob("texts.sqlite.corrupt-*"))
    assert main(args) == 0 and "warning" not in capsys.readouterr().err  # healthy again


def test_a_corrupt_script_store_is_refused_and_kept(tmp_path, capsys):
    store = tmp_path / "scripts.sqlite"
    src = tmp_path / "in.json"
    src.write_text(json.dumps({"tennis": {"Lob": ["racket low under the ball", "ball rises high"]}}))
    assert main(["scripts", "import", str(src), "--store", str(store)]) == 0
    sqlite3.connect(store).execute("PRAGMA wal_checkpoint(TRUNCATE)").close()
    corrupt(store)
    before = store.read_bytes()
    one_error(capsys, ["scripts", "show", "--store", store], "is damaged")
    assert store.read_bytes() == before  # never deleted, never rebuilt
    one_error(capsys, ["scripts", "show", "--store", store], ".recover")


def test_an_old_store_is_backed_up_before_its_migration(tmp_path):
    from actalign.scripts.store import _SCHEMA, Script, ScriptStore

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.execute(_SCHEMA)
    db.execute("INSERT INTO scripts VALUES ('d','a','hand','','',-1,'','d','a','[\"x y\", \"z w\"]','f',0)")
    db.commit()
    db.close()
    before = path.read_bytes()
    store = ScriptStore(path)
    assert store.get("d", "a").steps == ("x y", "z w")
    assert path.read_bytes() == before  # reading never migrates
    assert not list(tmp_path.glob("old.sqlite.bak-*"))
    store.put(Script("d", "b", ("p q", "r s"), "hand"))  # the first write migrates, after a backup
    (backup,) = list(tmp_path.glob("old.sqlite.bak-*"))
    assert sqlite3.connect(backup).execute("SELECT count(*) FROM scripts").fetchone()[0] == 1
    store.close()
    again = ScriptStore(path)
    assert again.get("d", "a").steps == ("x y", "z w")
    again.put(Script("d", "c", ("p q", "r s"), "hand"))
    again.close()
    assert len(list(tmp_path.glob("old.sqlite.bak-*"))) == 1  # migrated once


# --------------------------------------------------------------------------- run folders


def test_torn_lines_rows_without_ids_and_temp_files_do_not_block_a_resume(setup):
    from actalign.runner.output import RunFolder

    tmp, *_ = setup
    out = tmp / "run"
    folder = RunFolder(str(out))
    folder.open({"a": 1})
    folder.append({"id": "x", "v": "é"})
    folder.close()
    with open(out / "predictions.jsonl", "ab") as f:
        f.write(json.dumps({"v": 1}).encode() + b"\n")  # no id
        f.write('{"id": "y", "v": "é'.encode()[:-1])  # torn inside a two-byte character
    (out / ".predictions.jsonl.k3x_9qaz.tmp").write_text("left by a kill")  # as mkstemp names ours
    (out / ".my-notes.tmp").write_text("the user's")  # not ours: kept
    folder = RunFolder(str(out))
    done = folder.open({"a": 1})
    assert set(done) == {"x"} and [p.name for p in out.glob(".*.tmp")] == [".my-notes.tmp"]
    folder.close()
    assert [json.loads(x)["id"] for x in (out / "predictions.jsonl").read_text().splitlines()] == ["x"]


def test_a_relative_and_an_absolute_manifest_are_one_configuration(setup, capsys, monkeypatch):
    tmp, clip, scripts, base = setup
    (tmp / "m.jsonl").write_text(
        json.dumps({"video": "clip.mp4", "domain": "d", "candidates": ["a", "b"], "answer": 0})
    )
    monkeypatch.chdir(tmp)
    args = ["--out", "run", *base[5:], "--fps", "4", "--quiet"]
    assert main(["eval", "m.jsonl", *args]) == 0
    assert main(["eval", str(tmp / "m.jsonl"), *args]) == 0
    assert "another configuration" not in capsys.readouterr().err


# --------------------------------------------------------------------------- no network


@pytest.mark.parametrize("why", ["offline", "unreachable"])
def test_actionatlas_without_the_hub_is_one_sentence_in_seconds(tmp_path, why):
    """`eval actionatlas` with the dataset not cached: offline (HF_DATASETS_OFFLINE, as the tests
    run) or with the hub unreachable, one sentence at once, not minutes of retries and their log
    lines; nothing is left behind. (Bounded only by the subprocess timeout.)"""
    pytest.importorskip("datasets", reason="the eval extra (datasets) is not installed")
    import socket

    env = {**os.environ, "HF_HOME": str(tmp_path / "hf")}
    if why == "unreachable":
        for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            env.pop(var, None)
        with socket.socket() as s:  # a port nobody listens on: the connection is refused
            s.bind(("127.0.0.1", 0))
            env["HF_ENDPOINT"] = f"http://127.0.0.1:{s.getsockname()[1]}"
    args = ["eval", "actionatlas", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    done = subprocess.run(
        [sys.executable, "-m", "actalign", *args], env=env, capture_output=True, text=True, timeout=120
    )
    lines = done.stderr.splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 2 and lines[0].startswith("preparing ActionAtlas clips"), done.stderr
    assert lines[1].startswith("error: ActionAtlas (mrsalehi/ActionAtlas-v1.0) is not in the local")
    assert ("HF_DATASETS_OFFLINE" if why == "offline" else "cannot be reached") in lines[1]
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- run folders


def test_a_lock_file_that_is_a_link_is_refused_and_its_target_never_written(tmp_path):
    from actalign.runner.output import RunFolder

    victim = tmp_path / "someone-elses.txt"
    victim.write_text("precious\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(ActAlignError, match="is a symbolic link"):
        RunFolder(str(out)).open({"a": 1})
    assert victim.read_text() == "precious\n"
    (out / ".lock").unlink()
    os.mkfifo(out / ".lock")  # a pipe: refused, never a hang
    with pytest.raises(ActAlignError, match="is a pipe"):
        RunFolder(str(out)).open({"a": 1})


def batch_once(setup, capsys, *extra) -> Path:
    tmp, clip, _, base = setup
    out = tmp / "run"
    assert main(["batch", str(clip), "--out", str(out), *base, "--fps", "4", "-q", *extra]) == 0
    capsys.readouterr()
    return out


@pytest.mark.parametrize(
    "name", ["config.json", "scripts.json", "predictions.jsonl", ".lock", "failed.jsonl"]
)
def test_run_files_that_are_folders_are_one_sentence(setup, capsys, name):
    tmp, clip, _, base = setup
    (tmp / "run" / name).mkdir(parents=True)
    one_error(capsys, ["batch", clip, "--out", tmp / "run", *base, "-q"], "is a folder")


@pytest.mark.parametrize("name", ["config.json", "scripts.json"])
def test_run_files_that_are_not_utf8_are_one_sentence(setup, capsys, name):
    tmp, clip, _, base = setup
    out = batch_once(setup, capsys)
    (out / name).write_bytes(b'{"run": "\xff\xfe"}')
    one_error(capsys, ["batch", clip, "--out", out, *base, "--fps", "4", "-q"], "not UTF-8")


def test_a_deeply_nested_config_is_one_sentence(setup, capsys):
    tmp, clip, _, base = setup
    out = batch_once(setup, capsys)
    (out / "config.json").write_text("[" * 200_000)
    one_error(capsys, ["batch", clip, "--out", out, *base, "--fps", "4", "-q"], "unreadable")


@pytest.mark.parametrize(
    "entry, said",
    [
        ({"strategy": "context-rich"}, "not a recorded script"),
        ("abc", "not a recorded script"),
        ({"steps": []}, "non-empty list of steps"),
        ({"steps": "abc"}, "non-empty list of steps"),
        ({"steps": [1, 2, None]}, "is not a string"),
        ({"steps": ["", " "]}, "empty or trivial"),
    ],
    ids=["no-steps", "a-string", "no-step", "steps-a-string", "not-strings", "empty-steps"],
)
def test_recorded_scripts_are_validated_as_scripts_files_are(setup, capsys, entry, said):
    """Before: KeyError, TypeError or ValueError; or "abc" used as the steps a, b, c."""
    tmp, clip, _, base = setup
    out = batch_once(setup, capsys)
    recorded = json.loads((out / "scripts.json").read_text())
    key = sorted(recorded)[0]
    recorded[key] = entry
    (out / "scripts.json").write_text(json.dumps(recorded))
    before = (out / "predictions.jsonl").read_bytes()
    for extra in ([], ["--recorded-scripts"]):
        args = ["batch", clip, "--out", out, *base, "--fps", "4", "-q", *extra]
        one_error(capsys, args, "scripts.json is damaged")
        one_error(capsys, args, said)
    assert (out / "predictions.jsonl").read_bytes() == before


def test_rows_without_their_config_are_never_relabelled(setup, capsys):
    """Before: with config.json deleted, a rerun with --fps 4 -> 2 took the old rows as its own."""
    tmp, clip, _, base = setup
    out = batch_once(setup, capsys)
    (out / "config.json").unlink()
    before = (out / "predictions.jsonl").read_bytes()
    one_error(capsys, ["batch", clip, "--out", out, *base, "--fps", "2", "-q"], "no config.json")
    assert (out / "predictions.jsonl").read_bytes() == before and not (out / "config.json").exists()
    (out / "predictions.jsonl").unlink()  # as the sentence says: the clips are run again
    assert main(["batch", str(clip), "--out", str(out), *base, "--fps", "2", "-q"]) == 0


def test_rows_of_other_clips_and_damaged_rows_are_named_in_a_warning(setup, capsys):
    tmp, clip, _, base = setup
    out = batch_once(setup, capsys)
    (row,) = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    stray = {**row, "id": "added-by-hand"}
    damaged = {**row, "methods": {"ActAlign": {"scores": "high"}}}
    with open(out / "predictions.jsonl", "a") as f:
        f.write(json.dumps(stray) + "\n")
    assert main(["batch", str(clip), "--out", str(out), *base, "--fps", "4", "-q"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 row(s)" in err and "added-by-hand" in err, err
    (out / "predictions.jsonl").write_text(json.dumps(damaged) + "\n")
    assert main(["batch", str(clip), "--out", str(out), *base, "--fps", "4", "-q"]) == 0
    err = capsys.readouterr().err
    assert "1 damaged row(s)" in err, err
    (again,) = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert again == row  # run again, not kept


def test_control_characters_in_names_are_refused_everywhere(setup, capsys):
    from actalign.app.engine import check_domain, parse_candidates
    from actalign.candidates import check_candidates

    tmp, clip, scripts, _ = setup
    for bad in ("Tip\x00in", "Tip\x1b[2Jin", "Tip\x7fin"):
        with pytest.raises(ActAlignError, match="control character"):
            check_candidates([bad, "b"])
        with pytest.raises(ActAlignError, match="control character"):
            parse_candidates(f"{bad}\nb")  # the app's /classify, /scripts, /generate_scripts
        with pytest.raises(ActAlignError, match="control character"):
            check_domain(bad)
    with pytest.raises(ActAlignError, match="must be text"):
        check_domain(5)  # the API with numbers for strings
    with pytest.raises(ActAlignError, match="must be text"):
        parse_candidates(7)
    common = ["--scripts", scripts, "--model", "x"]
    for args in (
        ["classify", clip, "--domain", "d\x00", "--candidates", "a", "b", *common],
        ["classify", clip, "--domain", "d", "--candidates", "a\x07", "b", *common],
    ):
        try:
            code = main([str(a) for a in args])
        except SystemExit as e:  # refused by argparse, as every bad flag value
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and "control character" in err and len(err.strip().splitlines()) == 1, err


def test_a_start_just_before_the_end_says_why_no_frame_is_sampled(tmp_path):
    from actalign.video import Sampling, read_frames

    clip = make_video(tmp_path / "c.mp4", n=10, fps=10)  # frames at 0.0 .. 0.9 s, 1.0 s long
    with pytest.raises(ActAlignError) as e:
        read_frames(str(clip), Sampling(fps=10, start=0.95))
    assert "past the end" not in str(e.value) and "last frame starts at 0.90 s" in str(e.value)
    with pytest.raises(ActAlignError, match="past the end"):
        read_frames(str(clip), Sampling(fps=10, start=5.0))


def test_the_smoothing_window_limit_is_the_same_in_the_library_and_the_cli():
    from actalign.score import Method

    for bad in (1e308, -1.0, float("nan"), True):
        with pytest.raises(ActAlignError, match="0 to 3600 seconds"):
            Method("m", smooth_seconds=bad)
    assert Method("m", smooth_seconds=3600).smooth_seconds == 3600


@pytest.mark.parametrize("extra", [["--table2"], ["--xclip", "SIGLIP"], ["--table2", "--dtype", "int8"]])
def test_eval_refuses_a_baseline_that_cannot_run_before_the_first_clip(setup, capsys, extra):
    """Before: every clip went to failed.jsonl with the same sentence, a table of n/a, and the
    mean-pool and ActAlign rows were lost."""
    tmp, clip, scripts, base = setup
    (tmp / "m.jsonl").write_text(
        json.dumps({"video": str(clip), "domain": "d", "candidates": ["a", "b"], "answer": 0}) + "\n"
    )
    model = base[base.index("--model") + 1]
    extra = [model if x == "SIGLIP" else x for x in extra]  # a SigLIP is no X-CLIP
    out = tmp / "run"
    code = main(["eval", str(tmp / "m.jsonl"), "--out", str(out), *map(str, base[5:]), "-q", *extra])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (out / "predictions.jsonl").exists() and not (out / "failed.jsonl").exists()
