"""The archive index: search scores as `locate` does (per video, the same spans and scores), the
index grows and shrinks incrementally, a killed build resumes, half precision finds the same
hits, a cold search with cached step texts loads no model, and bad input is one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from actalign import ActAlign
from actalign.cli import main
from actalign.encoders.cache import EmbeddingCache
from actalign.errors import ActAlignError
from actalign.index import Index, to_stored, widen
from colour_encoder import ColourEncoder
from media import SAMPLES, make_video
from test_locate import CANDIDATES, FPS, padded_video, scripts, two_occurrences

WINDOW = 7.0  # seconds: windows cut through the planted actions, as in test_locate


def _key(d) -> tuple:
    return (d.action, round(d.start, 6), round(d.end, 6))


def assert_same(hits, detections, tol=1e-6):
    """The hits of one video are `locate`'s detections: same spans, scores and segments."""
    assert sorted(map(_key, hits)) == sorted(map(_key, detections))
    by = {_key(d): d for d in detections}
    for h in hits:
        d = by[_key(h)]
        assert h.score == pytest.approx(d.score, abs=tol)
        assert [(s.step, round(s.start, 6), round(s.end, 6)) for s in h.segments] == [
            (s.step, round(s.start, 6), round(s.end, 6)) for s in d.segments
        ]


@pytest.fixture
def archive(tmp_path):
    """Two generated videos (two occurrences; one), a cache and a float32 index of both."""
    videos = [two_occurrences(tmp_path / "a.mp4"), padded_video(tmp_path / "b.mp4", seed=4)]
    cache = EmbeddingCache(tmp_path / "cache")
    enc = ColourEncoder()
    index = Index.create(tmp_path / "idx", model=enc, fps=FPS, precision="float32", cache=cache, smooth=0.6)
    for v in videos:
        assert index.add_video(v) is True
    return index, videos, enc, cache


def search(index, **kw):
    return index.search(CANDIDATES, "t", scripts=scripts(), top=None, window_seconds=WINDOW, **kw)


def test_search_equals_locate_on_each_video(archive):
    index, videos, enc, cache = archive
    hits = search(Index.open(index.root, model=enc, cache=cache, smooth=0.6))
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    warm = ActAlign(enc, scripts(), fps=FPS, smooth=0.6, cache=cache)
    cold = ActAlign(enc, scripts(), fps=FPS, smooth=0.6, cache=False)
    for v in videos:
        mine = [h for h in hits if h.video == str(Path(v).resolve())]
        assert mine
        assert_same(mine, warm.locate(v, CANDIDATES, "t", window_seconds=WINDOW))
        assert_same(mine, cold.locate(v, CANDIDATES, "t", window_seconds=WINDOW))
    top = search(index)[:3]
    assert index.search(CANDIDATES, "t", scripts=scripts(), top=3, window_seconds=WINDOW) == top


def test_search_equals_locate_with_a_tiny_siglip(tmp_path, siglip_dir):
    levels = [(i * 37 % 255, i * 11 % 255, 255 - i * 5 % 255) for i in range(60)]
    videos = [
        make_video(tmp_path / "x.mp4", n=60, fps=10, colors=levels),
        make_video(tmp_path / "y.mp4", n=50, fps=10, colors=levels[::-1][:50]),
    ]
    s = {"t": {"a": ["red ball", "blue net", "player jumps"], "b": ["blue net", "red ball"]}}
    index = Index.create(tmp_path / "idx", model=str(siglip_dir), fps=2, precision="float32")
    for v in videos:
        index.add_video(v)
    hits = index.search(["a", "b"], "t", scripts=s, top=None)
    front = ActAlign(str(siglip_dir), s, fps=2)
    for v in videos:
        mine = [h for h in hits if h.video == str(v.resolve())]
        assert_same(mine, front.locate(v, ["a", "b"], "t"))


@pytest.mark.skipif(not SAMPLES.is_dir(), reason=f"the shared clips are not here ({SAMPLES})")
def test_search_equals_locate_on_the_shared_clips(tmp_path, siglip_dir):
    clips = sorted(SAMPLES.rglob("*.mp4"))[:2]
    if not clips:
        pytest.skip(f"no .mp4 clip under {SAMPLES}")
    s = {"t": {"a": ["a player runs", "the ball flies"], "b": ["the ball flies", "a player runs"]}}
    index = Index.create(tmp_path / "idx", model=str(siglip_dir), fps=2, precision="float32")
    for c in clips:
        index.add_video(c)
    hits = index.search(["a", "b"], "t", scripts=s, top=None)
    front = ActAlign(str(siglip_dir), s, fps=2)
    for c in clips:
        assert_same([h for h in hits if h.video == str(c.resolve())], front.locate(c, ["a", "b"], "t"))


def test_add_remove_and_change(archive, tmp_path):
    index, videos, enc, cache = archive
    assert index.add_video(videos[0]) is False  # unchanged: nothing to do
    os.utime(videos[0])  # touched, same content: still nothing to embed
    assert index.add_video(videos[0]) is False
    old = dict(index.videos[str(videos[0].resolve())])
    padded_video(videos[0], before=5, after=5, seed=9)  # the file changes
    assert index.add_video(videos[0]) is True
    new = index.videos[str(videos[0].resolve())]
    assert new["fingerprint"] != old["fingerprint"] and new["frames"] < old["frames"]
    assert not (index.root / old["shard"]).exists()
    assert index.remove(videos[1]) is True and index.remove(videos[1]) is False
    reopened = Index.open(index.root, model=enc, cache=cache)
    assert list(reopened.videos) == [str(videos[0].resolve())]
    assert sorted(p.name for p in (index.root / "shards").iterdir()) == sorted(
        Path(new[k]).name for k in ("shard", "timestamps")
    )
    info = reopened.info()
    assert info["videos"] == 1 and info["frames"] == new["frames"] and info["size_bytes"] > 0
    assert info["model"] == enc.identity and info["precision"] == "float32"


def test_a_killed_build_resumes(tmp_path):
    videos = [two_occurrences(tmp_path / "a.mp4"), padded_video(tmp_path / "b.mp4", seed=4)]
    enc = ColourEncoder()
    index = Index.create(tmp_path / "idx", model=enc, fps=FPS, cache=False)
    index.add_video(videos[0])
    calls = [0]
    real = enc.encode_images

    def dies(frames):
        calls[0] += 1
        if calls[0] > 3:  # in the middle of the second video
            raise KeyboardInterrupt
        return real(frames)

    enc.encode_images = dies
    with pytest.raises(KeyboardInterrupt):
        index.add_video(videos[1])
    enc.encode_images = real
    again = Index.open(tmp_path / "idx", model=enc, cache=False)
    assert list(again.videos) == [str(videos[0].resolve())]  # the first video kept, whole
    again.tidy()
    assert len(list((tmp_path / "idx" / "shards").iterdir())) == 2
    assert again.add_video(videos[0]) is False and again.add_video(videos[1]) is True
    assert len(search(again)) > 0


def test_add_embeddings_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    enc = ColourEncoder()
    vectors = rng.normal(size=(300, enc.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    stamps = np.arange(300) / 2.0
    for precision, tol in (("float32", 0.0), ("float16", 1e-3), ("bfloat16", 1e-2)):
        index = Index.create(tmp_path / precision, model=enc, fps=2, precision=precision, cache=False)
        index.add_embeddings("cam-1/2024-05-01", stamps, vectors)
        again = Index.open(tmp_path / precision, model=enc, cache=False)
        entry = again.videos["cam-1/2024-05-01"]
        frames, times = again._load(entry)
        assert np.abs(widen(frames, precision) - vectors).max() <= tol
        assert np.array_equal(times, stamps) and entry["end"] == 150.0
        assert entry["path"] is None and again.info()["hours"] == pytest.approx(150 / 3600)
    with pytest.raises(ActAlignError, match="vectors"):
        index.add_embeddings("bad", stamps, vectors[:, :3])


def test_bfloat16_rounds_to_nearest():
    x = np.array([1.0, -0.5, 0.1, 3.14159], np.float32)
    back = widen(to_stored(x, "bfloat16"), "bfloat16")
    assert np.abs(back - x).max() <= np.abs(x).max() * 2**-8


def siglip_archive(tmp_path, siglip_dir, precision, cache=None):
    levels = [(i * 37 % 255, i * 11 % 255, 255 - i * 5 % 255) for i in range(80)]
    videos = [
        make_video(tmp_path / "x.mp4", n=80, fps=10, colors=levels),
        make_video(tmp_path / "y.mp4", n=60, fps=10, colors=levels[::-1][:60]),
    ]
    index = Index.create(tmp_path / f"idx-{precision}", model=str(siglip_dir), fps=4, precision=precision)
    for v in videos:
        index.add_video(v)
    return index


SIGLIP_SCRIPTS = {"t": {"a": ["red ball", "blue net", "player jumps"], "b": ["blue net", "red ball"]}}


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_finds_the_same_hits(tmp_path, siglip_dir, precision):
    full = siglip_archive(tmp_path, siglip_dir, "float32")
    half = siglip_archive(tmp_path, siglip_dir, precision)
    a = full.search(["a", "b"], "t", scripts=SIGLIP_SCRIPTS, top=None)
    b = half.search(["a", "b"], "t", scripts=SIGLIP_SCRIPTS, top=None)
    assert len(a) > 2
    assert sorted((h.video, *_key(h)) for h in b) == sorted((h.video, *_key(h)) for h in a)
    by = {(h.video, *_key(h)): h.score for h in a}
    for h in b:
        assert h.score == pytest.approx(by[(h.video, *_key(h))], abs=1e-3)
    assert half.info()["size_bytes"] < full.info()["size_bytes"]


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_half_precision_finds_the_planted_actions(archive, tmp_path, precision):
    """With the colour encoder's exact ties the background's weak finds may move by a frame; the
    planted actions do not."""
    index, videos, enc, cache = archive
    half = Index.create(
        tmp_path / precision, model=enc, fps=FPS, precision=precision, cache=cache, smooth=0.6
    )
    for v in videos:
        half.add_video(v)
    full = [h for h in search(index) if h.action == "move 0"]
    mine = [h for h in search(half) if h.action == "move 0"]
    assert len(full) == 3 and [(h.video, *_key(h)) for h in mine] == [(h.video, *_key(h)) for h in full]
    assert [h.score for h in mine] == pytest.approx([h.score for h in full], abs=1e-3)


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
def test_scan_threads_and_product_routes_give_the_same_hits(archive, tmp_path, monkeypatch, precision):
    """Videos scanned by one thread or several give the same hits in the same order; the C
    kernel (stored rows read in place, Eq. 7-9 fused) and the numpy route agree to 1e-6."""
    index, videos, enc, cache = archive
    many = Index.create(tmp_path / "many", model=enc, fps=FPS, precision=precision, cache=cache, smooth=0.6)
    rng = np.random.default_rng(0)
    for name, entry in index.videos.items():
        frames, stamps = index._load(entry)
        frames = np.asarray(frames, dtype=np.float32)
        for copy in range(3):  # the same footage with noise: several videos per action
            noisy = frames + rng.normal(scale=0.02, size=frames.shape)  # no exact ties
            many.add_embeddings(f"{Path(name).stem}-{copy}", stamps, noisy)
    runs = {}
    for workers, route in ((1, ""), (4, ""), (4, "numpy")):
        monkeypatch.setenv("ACTALIGN_AFFINITY", route)
        opened = Index.open(many.root, model=enc, cache=cache, smooth=0.6, workers=workers)
        runs[workers, route] = search(opened)
    one, threads, plain = runs[1, ""], runs[4, ""], runs[4, "numpy"]
    assert len(one) > 6 and [h.to_dict() for h in threads] == [h.to_dict() for h in one]
    assert [(h.video, *_key(h)) for h in plain] == [(h.video, *_key(h)) for h in one]
    assert [h.score for h in plain] == pytest.approx([h.score for h in one], abs=1e-6)


def test_a_search_sees_videos_added_by_another_program(archive, tmp_path):
    """An Index held open (an app, a notebook) searches what another writer added since; one
    rebuilt with another model is refused in one sentence."""
    index, videos, enc, cache = archive
    held = Index.open(index.root, model=enc, cache=cache, smooth=0.6)
    before = {h.video for h in search(held)}
    frames, stamps = index._load(index.videos[str(Path(videos[0]).resolve())])
    other = Index.open(index.root, model=enc, cache=cache, smooth=0.6)
    other.add_embeddings("added-later", stamps, np.asarray(frames))
    assert "added-later" not in held.videos and "added-later" not in before
    assert "added-later" in {h.video for h in search(held)}
    assert "added-later" in held.videos and held.refresh() is False
    catalogue = json.loads((index.root / "index.json").read_text())
    catalogue["model"]["identity"] = "another:model"
    (index.root / "index.json").write_text(json.dumps(catalogue))
    with pytest.raises(ActAlignError, match="another model since it was opened; open it again"):
        search(held)


def test_a_cold_search_with_cached_step_texts_loads_no_model(tmp_path, siglip_dir):
    video = make_video(tmp_path / "x.mp4", n=40, fps=10, colors=[(i * 6, 90, 200 - i * 4) for i in range(40)])
    s = {"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}
    (tmp_path / "s.json").write_text(json.dumps(s))
    index = Index.create(tmp_path / "idx", model=str(siglip_dir), fps=2, precision="float32")
    index.add_video(video)
    warm = index.search(["a", "b"], "t", scripts=s, top=None)  # caches the step texts
    code = textwrap.dedent(
        f"""
        import sys, json
        from actalign.index import Index
        index = Index.open({str(tmp_path / "idx")!r})
        hits = index.search(["a", "b"], "t", scripts={str(tmp_path / "s.json")!r}, top=None)
        print(json.dumps({{"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                          "scores": [h.score for h in hits]}}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["torch"] is False and data["transformers"] is False
    assert data["scores"] == pytest.approx([h.score for h in warm], abs=1e-9)


def test_new_step_texts_load_the_text_tower_alone(tmp_path, siglip_dir):
    """A search whose step texts the cache lacks loads the index's model with its text tower only
    (no vision weights read); building loads the whole model."""
    video = make_video(tmp_path / "x.mp4", n=40, fps=10, colors=[(i * 6, 90, 200 - i * 4) for i in range(40)])
    Index.create(tmp_path / "idx", model=str(siglip_dir), fps=2, precision="float32").add_video(video)
    index = Index.open(tmp_path / "idx")
    hits = index.search(["a"], "t", scripts={"t": {"a": ["a green door", "a red ball"]}}, top=None)
    assert hits and index.model._encoder is None and index.model._texts.towers == "text"
    with pytest.raises(ActAlignError, match="text tower only"):
        index.model._texts.encode_images(np.zeros((1, 8, 8, 3), np.uint8))


# --------------------------------------------------------------------------- the commands and bad input


def test_the_commands(tmp_path, siglip_dir, capsys):
    levels = [(i * 37 % 255, i * 11 % 255, 255 - i * 5 % 255) for i in range(40)]
    folder = tmp_path / "footage"
    folder.mkdir()
    a = make_video(folder / "a.mp4", n=40, fps=10, colors=levels)
    b = make_video(folder / "b.mp4", n=40, fps=10, colors=levels[::-1])
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    idx = str(tmp_path / "idx")
    model = ["--model", str(siglip_dir)]
    assert main(["index", "build", str(folder), "--out", idx, *model, "--precision", "float32"]) == 0
    assert "2 video(s) embedded" in capsys.readouterr().out
    assert main(["index", "build", str(a), "--out", idx, *model]) == 0
    assert "0 video(s) embedded, 1 unchanged" in capsys.readouterr().out
    assert main(["index", "info", idx, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["videos"] == 2 and info["precision"] == "float32" and info["fps"] == 2.0
    query = ["search", idx, "--domain", "t", "--candidates", "a", "b", "--scripts", str(s)]
    assert main([*query, "--format", "json", "--top", "3"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert 0 < len(data["hits"]) <= 3 and data["settings"]["precision"] == "float32"
    scores = [h["score"] for h in data["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert main([*query, "--format", "jsonl"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert rows and {r["video"] for r in rows} <= {str(a.resolve()), str(b.resolve())}
    assert main([*query, "--format", "csv", "-o", str(tmp_path / "hits.csv")]) == 0
    assert (tmp_path / "hits.csv").read_text().startswith("rank,video,action,start,end,score")
    assert main([*query]) == 0 and "hits" in capsys.readouterr().out
    assert main(["index", "remove", idx, str(b)]) == 0
    assert "1 video(s) removed, 1 left" in capsys.readouterr().out


def test_the_cli_offers_the_precisions_the_index_knows():
    from actalign.cli.index import PRECISIONS as OFFERED  # a copy: parsing imports no numpy
    from actalign.precision import PRECISIONS

    assert OFFERED == PRECISIONS


def test_the_hits_table_lines_up_its_columns():
    from actalign.exports import format_hits
    from actalign.index import Hit

    hits = [Hit("a.mp4", "Putback dunk", 1.0, 2.0, 0.5), Hit("bb.mp4", "Alley-oop dunk", 3.0, 4.0, 0.4)]
    header, first, second = format_hits("table", hits).splitlines()[1:]
    assert header.index("video") == first.index("a.mp4") == second.index("bb.mp4")
    assert header.index("action") == first.index("Putback") == second.index("Alley-oop")


def test_bad_input_is_one_sentence_and_loses_nothing(tmp_path, siglip_dir, capsys):
    video = make_video(tmp_path / "a.mp4", n=40, fps=10, colors=[(i * 6, 90, 200 - i * 4) for i in range(40)])
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"t": {"a": ["red ball", "blue net"], "b": ["blue net", "red ball"]}}))
    idx = tmp_path / "idx"
    model = ["--model", str(siglip_dir)]
    query = ["search", str(idx), "--domain", "t", "--candidates", "a", "b", "--scripts", str(s)]
    # an empty index
    Index.create(idx, model=str(siglip_dir))
    assert main(query) == 2
    err = capsys.readouterr().err
    assert "holds no videos yet" in err and err.count("\n") == 1
    assert main(["index", "build", str(video), "--out", str(idx), *model]) == 0
    catalogue = (idx / "index.json").read_text()
    capsys.readouterr()
    # another model
    assert main([*query, "--model", "siglip-base"]) == 2
    err = capsys.readouterr().err
    assert "built with the model" in err and "--model" in err and err.count("\n") == 1
    assert main(["index", "build", str(video), "--out", str(idx), "--model", "siglip-base"]) == 2
    assert "built with the model" in capsys.readouterr().err
    assert main(["index", "build", str(video), "--out", str(idx), *model, "--fps", "3"]) == 2
    assert "--fps" in capsys.readouterr().err
    embedded = json.loads(catalogue)["model"]["dtype"]
    other = "bfloat16" if embedded == "float32" else "float32"
    assert main(["index", "build", str(video), "--out", str(idx), *model, "--dtype", other]) == 2
    err = capsys.readouterr().err
    assert f"embedded by its model in {embedded}" in err and "--dtype" in err and err.count("\n") == 1
    assert (idx / "index.json").read_text() == catalogue
    # a damaged shard: named, with the way out; the rest of the index is kept
    entry = json.loads(catalogue)["videos"][str(video.resolve())]
    shard = idx / entry["shard"]
    shard.write_bytes(shard.read_bytes()[:100])
    assert main(query) == 0
    err = capsys.readouterr().err
    assert str(shard) in err and "actalign index build" in err and err.count("\n") == 1
    assert main(["index", "build", str(video), "--out", str(idx), *model]) == 0
    assert "1 video(s) embedded" in capsys.readouterr().out
    assert main([*query, "--format", "json"]) == 0
    found = json.loads(capsys.readouterr().out)["hits"]
    assert found
    # a video gone since indexing: still searchable; the build says it
    video.unlink()
    assert main([*query, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["hits"] == found
    other = make_video(tmp_path / "b.mp4", n=20, fps=10)
    assert main(["index", "build", str(other), "--out", str(idx), *model]) == 0
    err = capsys.readouterr().err
    assert "gone since indexing" in err and str(video.resolve()) in err
    assert main(["index", "info", str(idx)]) == 0
    assert "gone" in capsys.readouterr().out
    # no index at all
    assert main(["search", str(tmp_path / "nowhere"), "--domain", "t", "--candidates", "a"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_one_writer_at_a_time_and_nothing_lost(tmp_path, capsys):
    """Two objects on one index add in turn: both videos are kept (each change reads the catalogue
    again under the lock). A build holding the lock in another process: a change here, and the
    CLI's build, are one sentence, and the catalogue is untouched."""
    enc = ColourEncoder()
    vectors = np.eye(enc.dim, dtype=np.float32)[:4]
    idx = tmp_path / "idx"
    first = Index.create(idx, model=enc, fps=2, precision="float32", cache=False)
    second = Index.open(idx, model=enc, cache=False)
    first.add_embeddings("a", np.arange(4) / 2, vectors)
    second.add_embeddings("b", np.arange(4) / 2, vectors)
    first.remove("nothing")
    assert sorted(Index.open(idx, model=enc, cache=False).videos) == ["a", "b"]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from actalign.index import Index
            from colour_encoder import ColourEncoder
            with Index.open({str(idx)!r}, model=ColourEncoder(), cache=False).writing():
                print("held", flush=True)
                time.sleep(60)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        catalogue = (idx / "index.json").read_text()
        with pytest.raises(
            ActAlignError, match=f"Another build is writing to the index {idx} \\(pid {holder.pid}\\)"
        ):
            first.add_embeddings("c", np.arange(4) / 2, vectors)
        video = make_video(tmp_path / "v.mp4", n=10, fps=10)
        assert main(["index", "build", str(video), "--out", str(idx)]) == 2
        err = capsys.readouterr().err
        assert "Another build is writing" in err and err.count("\n") == 1
        assert (idx / "index.json").read_text() == catalogue
    finally:
        holder.kill()
        holder.wait()
    first.add_embeddings("c", np.arange(4) / 2, vectors)  # the lock went with the process
    assert sorted(Index.open(idx, model=enc, cache=False).videos) == ["a", "b", "c"]


def test_ray_search_equals_local_search(archive, tmp_path, monkeypatch):
    """One Ray task per video on a local Ray instance (started and ended by the search): the
    same hits, scores and segments as the search in this process."""
    ray = pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="aa-ray-", dir="/tmp"))  # short socket paths
    index, _, enc, cache = archive
    local = search(index)
    on_ray = search(Index.open(index.root, model=enc, cache=cache, smooth=0.6, engine="ray"))
    assert local and [h.to_dict() for h in on_ray] == [h.to_dict() for h in local]
    assert not ray.is_initialized()  # the Ray it started is shut down


def test_ray_build_equals_local_build(tmp_path, siglip_dir, monkeypatch, capsys):
    """`index build --engine ray` (the batch engine's decode tasks and encoder actors on a local
    Ray instance): the same frames, timestamps and embeddings as a build in this process; a
    second Ray build skips the unchanged videos and names a broken one."""
    pytest.importorskip("ray", reason="Ray (the ray extra) is not installed")
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="aa-ray-", dir="/tmp"))
    folder = tmp_path / "footage"
    folder.mkdir()
    make_video(folder / "a.mp4", n=30, fps=10)
    make_video(folder / "b.mp4", n=20, fps=10, colors=[(200, i * 9, 40) for i in range(20)])
    model = ["--model", str(siglip_dir), "--precision", "float32", "--no-cache"]
    local, on_ray = tmp_path / "local.idx", tmp_path / "ray.idx"
    assert main(["index", "build", str(folder), "--out", str(local), *model]) == 0
    assert main(["index", "build", str(folder), "--out", str(on_ray), *model, "--engine", "ray"]) == 0
    assert "2 video(s) embedded" in capsys.readouterr().out
    a, b = Index.open(local, cache=False), Index.open(on_ray, cache=False)
    assert sorted(a.videos) == sorted(b.videos)
    for name in a.videos:
        (fa, ta), (fb, tb) = a._load(a.videos[name]), b._load(b.videos[name])
        np.testing.assert_array_equal(ta, tb)
        np.testing.assert_allclose(np.asarray(fa), np.asarray(fb), atol=1e-6)
        assert a.videos[name]["end"] == b.videos[name]["end"]
    (folder / "c.mp4").write_bytes(b"not a video")
    assert main(["index", "build", str(folder), "--out", str(on_ray), *model, "--engine", "ray"]) == 1
    out, err = capsys.readouterr()
    assert "0 video(s) embedded, 2 unchanged" in out and "c.mp4" in err
