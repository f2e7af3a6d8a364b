"""`actalign app --index`: the /search endpoint returns exactly what `actalign search --format json`
prints, the Search tab lists the hits with thumbnails at their starts, only the files the index
names are served, and bad input (a missing or damaged index, an empty one, no candidates, a video
gone since indexing) is one sentence."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from actalign.app import AppSettings, Engine
from actalign.cli import main
from actalign.errors import ActAlignError
from actalign.index import Index
from media import make_video

SCRIPTS = {"t": {"a": ["red ball", "blue net", "player jumps"], "b": ["blue net", "red ball"]}}
LEVELS = [(i * 37 % 255, i * 11 % 255, 255 - i * 5 % 255) for i in range(40)]


def build_archive(folder: Path, siglip_dir: Path) -> tuple[Path, list[Path]]:
    """Two generated videos and a float32 index of both, built by `actalign index build`."""
    footage = folder / "footage"
    footage.mkdir(parents=True)
    videos = [
        make_video(footage / "a.mp4", n=40, fps=10, colors=LEVELS),
        make_video(footage / "b.mp4", n=40, fps=10, colors=LEVELS[::-1]),
    ]
    index = folder / "idx"
    args = ["index", "build", str(footage), "--out", str(index), "--model", str(siglip_dir)]
    assert main([*args, "--precision", "float32", "-q"]) == 0
    return index, videos


@pytest.fixture(scope="module")
def archive(siglip_dir, tmp_path_factory) -> tuple[Path, list[Path], Path]:
    """(index, its videos, a scripts file)."""
    folder = tmp_path_factory.mktemp("archive")
    index, videos = build_archive(folder, siglip_dir)
    scripts = folder / "scripts.json"
    scripts.write_text(json.dumps(SCRIPTS))
    (folder / "footage" / "secret.txt").write_text("beside the videos, never served\n")
    return index, videos, scripts


@pytest.fixture(scope="module")
def served(archive, siglip_dir, tmp_path_factory):
    """(url, Blocks) of the app with the index, the tiny model and the scripts file."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    pytest.importorskip("gradio_client", reason="the app extra (gradio_client) is not installed")
    from app_server import serve

    index, _, scripts = archive
    home = tmp_path_factory.mktemp("app-home")
    settings = AppSettings(
        model=str(siglip_dir), scripts=(str(scripts),), store=str(home / "s.sqlite"), index=str(index)
    )
    with serve(settings) as (url, demo):
        yield url, demo


@pytest.fixture
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


def cli_search(index: Path, args: list, capsys) -> str:
    """What `actalign search INDEX ... --format json` prints."""
    capsys.readouterr()
    assert main(["search", str(index), "--format", "json", "-q", *map(str, args)]) == 0
    return capsys.readouterr().out


# --------------------------------------------------------------------------- the endpoint


def test_the_endpoint_returns_exactly_the_cli_json(client, archive, capsys):
    index, videos, scripts = archive
    got = client.predict("t", "a\nb", 3, None, api_name="/search")
    want = cli_search(
        index, ["--domain", "t", "--candidates", "a", "b", "--top", "3", "--scripts", scripts], capsys
    )
    assert got == want
    hits = json.loads(got)["hits"]
    assert len(hits) == 3 and {h["video"] for h in hits} <= {str(v.resolve()) for v in videos}
    # the defaults: top 20, the app's scripts
    everything = client.predict("t", "b\na", api_name="/search")
    assert everything == cli_search(
        index, ["--domain", "t", "--candidates", "b", "a", "--scripts", scripts], capsys
    )
    assert json.loads(everything)["settings"]["top"] == 20


def test_scripts_given_to_the_endpoint_win_as_a_first_scripts_file_does(client, archive, tmp_path, capsys):
    index, _, scripts = archive
    edited = {"a": ["blue net", "player jumps"]}
    got = client.predict("t", "a\nb", 5, json.dumps(edited), api_name="/search")
    (tmp_path / "edited.json").write_text(json.dumps({"t": edited}))
    flags = ["--domain", "t", "--candidates", "a", "b", "--top", "5"]
    want = cli_search(index, [*flags, "--scripts", tmp_path / "edited.json", "--scripts", scripts], capsys)
    assert got == want
    steps = {s["step"] for h in json.loads(got)["hits"] if h["action"] == "a" for s in h["segments"]}
    assert steps <= set(edited["a"]) and steps


def test_the_search_options_are_the_cli_s(client, archive, capsys):
    """window, nms and min-score through /search give exactly `actalign search --window --nms
    --min-score`'s JSON, and do change what is found."""
    index, _, scripts = archive
    flags = ["--domain", "t", "--candidates", "a", "b", "--scripts", scripts]
    plain = client.predict("t", "a\nb", None, None, api_name="/search")
    for window, nms, floor in ((2.0, 0.0, None), (300.0, 0.9, 0.2)):
        got = client.predict("t", "a\nb", None, None, window, nms, floor, api_name="/search")
        more = ["--window", window, "--nms", nms] + (["--min-score", floor] if floor is not None else [])
        assert got == cli_search(index, [*flags, *more], capsys)
        settings = json.loads(got)["settings"]
        assert (settings["window_seconds"], settings["nms"], settings["min_score"]) == (window, nms, floor)
        assert json.loads(got)["hits"] != json.loads(plain)["hits"]


def test_bad_input_to_the_endpoint_is_one_sentence(client):
    from gradio_client.exceptions import AppError

    cases = [
        (("t", "\n# none\n", None, None), "No candidate actions given"),
        (("", "a", None, None), "Give a domain"),
        (("t", "a", 0, None), "Top must be a whole number"),
        (("t", "a", 2.5, None), "Top must be a whole number"),
        (("t", "a", None, "{"), "The scripts are not valid JSON"),
        (("t", "a", None, None, 0, None, None), "Window must be a positive number of seconds"),
        (("t", "a", None, None, None, 1.0, None), "NMS must be an overlap (IoU) from 0 up to"),
        (("t", "a", None, None, None, None, 1.5), "Min score must be from 0 to 1"),
        (
            ("t", "a\nfloater", None, None),
            "No scripts for 'floater' in 't': give them as JSON in the scripts box",
        ),
    ]
    for args, expected in cases:
        with pytest.raises(AppError) as e:
            client.predict(*args, api_name="/search")
        said = str(e.value)
        assert expected in said and "Traceback" not in said and "\n" not in said.strip(), said
        assert "scripts=FILE" not in said and "llm=" not in said  # the library's advice is not the app's


def test_the_plain_http_call_the_docs_show_works(served):
    from test_app import _rest

    url = served[0]
    event = json.loads(_rest(url, "/gradio_api/call/search", {"data": ["t", "a\nb", 2, None]}))["event_id"]
    stream = _rest(url, f"/gradio_api/call/search/{event}")
    assert "event: complete" in stream, stream
    data = json.loads(json.loads(stream.split("data: ", 1)[1].splitlines()[0])[0])
    assert len(data["hits"]) == 2 and data["domain"] == "t"
    # inputs left out at the end take their defaults; a missing required one gets its sentence
    for given, said in (
        (["t", "a\nb"], '"complete"'),
        (["t", "a\nb", 2, None, 300, 0.5], '"complete"'),
        (["t"], "No candidate actions given"),
        (["", "a"], "Give a domain"),
    ):
        event = json.loads(_rest(url, "/gradio_api/call/search", {"data": given}))["event_id"]
        stream = _rest(url, f"/gradio_api/call/search/{event}")
        kind = stream.split("\n", 1)[0].removeprefix("event: ")
        assert said in (f'"{kind}"' if said.startswith('"') else stream), stream


# --------------------------------------------------------------------------- the tab


def test_the_tab_lists_the_hits_best_first_with_a_thumbnail_at_each_start(served, archive):
    from PIL import Image

    from actalign.app.search_tab import SearchTab
    from actalign.video import Sampling, read_frames

    index, videos, _ = archive
    engine = Engine(AppSettings(scripts=(str(archive[2]),), index=str(index)))
    status, page = SearchTab(engine).run("t", "a\nb", 4, "")
    assert "4 hits in" in status and "aa-ok" in status, status
    hits = engine.search("t", ["a", "b"], 4).hits
    buttons = re.findall(r'<button type="button" class="aa-hit"[^>]*>.*?</button>', page)
    assert len(buttons) == 4
    for hit, button in zip(hits, buttons):
        assert f'data-start="{hit.start:.3f}"' in button and Path(hit.video).name in button
        assert hit.action in button and f"{hit.score:.4f}" in button
        assert f'data-src="gradio_api/file={hit.video}"' in button
        jpeg = base64.b64decode(re.search(r'src="data:image/jpeg;base64,([^"]+)"', button).group(1))
        thumb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"), dtype=float)
        frame = read_frames(hit.video, Sampling(start=hit.start)).frames[0].astype(float)
        # the frame at the hit's start: its colour, not another frame's (the frames differ by ~30 levels)
        assert np.abs(thumb.mean(axis=(0, 1)) - frame.mean(axis=(0, 1))).max() < 8


def test_the_tab_and_the_endpoint_exist_only_with_an_index(archive):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from actalign.app import build_app

    def shape(settings):
        demo = build_app(settings)
        try:
            names = {fn.api_name for fn in demo.fns.values()}
            tabs = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
            return "search" in names, "aa-tab-search" in tabs
        finally:
            demo.actalign_results.close()

    assert shape(AppSettings()) == (False, False)
    assert shape(AppSettings(index=str(archive[0]))) == (True, True)


def test_only_the_files_the_index_names_are_served(served, archive):
    index, videos, scripts = archive
    assert all(status(served[0], v.resolve()) == 200 for v in videos)
    for path in (videos[0].parent / "secret.txt", index / "index.json", scripts, videos[0].parent):
        assert status(served[0], path) in (403, 404), path


def test_videos_built_in_or_removed_while_the_app_runs_are_served_or_not_after_a_search(
    siglip_dir, tmp_path, archive
):
    """The app holds the index open: `actalign index build` adds a video and `index remove` takes
    one out while it runs; from the next search on the new one is found and played, the removed
    one neither."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from gradio_client import Client

    from app_server import serve

    index, videos, scripts = archive
    copy = tmp_path / "idx"
    shutil.copytree(index, copy)
    later = make_video(tmp_path / "later.mp4", n=40, fps=10, colors=LEVELS[::2] + LEVELS[1::2])
    settings = AppSettings(
        model=str(siglip_dir), scripts=(str(scripts),), store=str(tmp_path / "s.sqlite"), index=str(copy)
    )
    with serve(settings) as (url, _):
        client = Client(url, verbose=False)

        def found() -> set[str]:
            return {
                h["video"] for h in json.loads(client.predict("t", "a\nb", 50, api_name="/search"))["hits"]
            }

        assert str(later.resolve()) not in found() and status(url, later.resolve()) == 403
        assert main(["index", "build", str(later), "--out", str(copy), "-q"]) == 0
        assert str(later.resolve()) in found() and status(url, later.resolve()) == 200
        assert main(["index", "remove", str(copy), str(videos[0])]) == 0
        assert str(videos[0].resolve()) not in found() and status(url, videos[0].resolve()) == 403
        assert status(url, videos[1].resolve()) == 200


def status(url: str, path: Path) -> int:
    """The HTTP status of the app's file route for `path`."""
    import urllib.error
    import urllib.parse
    import urllib.request

    address = url + "gradio_api/file=" + urllib.parse.quote(str(path))
    try:
        with urllib.request.urlopen(address, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# --------------------------------------------------------------------------- bad input


def test_a_video_gone_since_indexing_keeps_its_hit_and_says_it_is_gone(siglip_dir, tmp_path, archive):
    from actalign.app.search_tab import SearchTab

    index = tmp_path / "idx"
    shutil.copytree(archive[0], index)
    video = archive[1][0]
    moved = tmp_path / "gone.mp4"
    shutil.copy(video, moved)
    Index.open(index).add_video(moved)
    moved.unlink()
    engine = Engine(AppSettings(scripts=(str(archive[2]),), index=str(index)))
    assert str(moved.resolve()) not in engine.indexed_files()
    found = engine.search("t", ["a", "b"], None)
    gone = [h for h in found.hits if h.video == str(moved.resolve())]
    assert gone, "the gone video's hits are still listed"
    assert (
        engine.view(gone[0]).problem
        == "gone.mp4 is gone since it was indexed; this hit comes from the index."
    )
    _, page = SearchTab(engine).run("t", "a\nb", None, None)
    assert page.count('data-gone="gone.mp4 is gone since it was indexed') == len(gone)
    assert page.count("file gone") == len(gone)
    assert page.count("data:image/jpeg") == len(found.hits) - len(gone)


def test_an_empty_index_is_one_sentence_when_searched(siglip_dir, tmp_path):
    from actalign.app.search_tab import SearchTab

    Index.create(tmp_path / "empty", model=str(siglip_dir))
    engine = Engine(AppSettings(index=str(tmp_path / "empty")))
    with pytest.raises(ActAlignError, match="holds no videos yet; add some with `actalign index build`"):
        engine.search("t", ["a"], None, {"a": ["red ball", "blue net"]})
    status, page = SearchTab(engine).run("t", "a", None, '{"a": ["red ball", "blue net"]}')
    assert "aa-error" in status and "holds no videos yet" in status and "aa-hit" not in page
    status, _ = SearchTab(engine).run("t", "  \n", None, "")
    assert "No candidate actions given" in status


@pytest.mark.parametrize("damage", ["missing", "not an index", "torn catalogue", "hollow catalogue"])
def test_a_missing_or_damaged_index_is_refused_at_start_up(damage, siglip_dir, tmp_path, capsys):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    index = tmp_path / "idx"
    if damage == "not an index":
        index.mkdir()
    elif damage != "missing":
        Index.create(index, model=str(siglip_dir))
        text = (index / "index.json").read_text()
        catalogue = json.loads(text)
        catalogue["videos"] = {"x.mp4": {"path": "x.mp4"}}  # an entry without its fields
        (index / "index.json").write_text(text[:40] if damage == "torn catalogue" else json.dumps(catalogue))
    code = main(["app", "--index", str(index), "--store", str(tmp_path / "s.sqlite"), "--port", "1"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert str(index) in err and "Traceback" not in err, err
    assert "actalign index build" in err, err  # the way out


def test_searches_from_the_server_s_threads_share_the_index_and_its_text_cache(archive, tmp_path):
    """Gradio answers each request on one of its worker threads; the index's text cache (SQLite)
    must not be used across them."""
    import threading

    index, _, scripts = archive
    engine = Engine(AppSettings(scripts=(str(scripts),), index=str(index), cache_dir=str(tmp_path / "c")))
    found, failed = [], []

    def search() -> None:
        try:
            found.append(engine.search("t", ["a", "b"], 3).to_json())
        except Exception as e:  # the test reports whatever went wrong
            failed.append(e)

    for _ in range(3):  # one thread after another, as the server's requests come
        worker = threading.Thread(target=search)
        worker.start()
        worker.join()
    assert not failed, failed
    assert len(found) == 3 and found[0] == found[1] == found[2]


def test_a_damaged_shard_is_skipped_and_named_in_the_status(archive, tmp_path):
    from actalign.app.search_tab import SearchTab

    index = tmp_path / "idx"
    shutil.copytree(archive[0], index)
    entry = json.loads((index / "index.json").read_text())["videos"][str(archive[1][0].resolve())]
    shard = index / entry["shard"]
    shard.write_bytes(shard.read_bytes()[:100])
    engine = Engine(AppSettings(scripts=(str(archive[2]),), index=str(index)))
    status, page = SearchTab(engine).run("t", "a\nb", None, None)
    assert "aa-ok" in status and str(shard) in status and "actalign index build" in status, status
    assert "a.mp4" not in page and "b.mp4" in page
