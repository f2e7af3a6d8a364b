"""`actalign app` without a browser: the command, the parsing and HTML the page relies on, and the
API served for real (gradio_client against a live server on loopback, the tiny model)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from actalign.app import (
    GENERIC_ERROR,
    AppSettings,
    Engine,
    parse_candidates,
    parse_scripts_json,
    ranking_html,
    steps_from_text,
    timeline_html,
)
from actalign.cli import build_parser, main
from actalign.errors import ActAlignError
from actalign.score import CandidateResult, Prediction, Segment
from llm_server import FakeLLM
from media import make_video

SCRIPTS = {
    "basketball": {
        "Tip-in": ["player jumps", "tap the ball", "ball in net"],
        "Putback dunk": ["ball off the rim", "player jumps", "dunk"],
        "Windmill dunk": ["player runs", "spin the ball", "dunk"],
    }
}
CANDIDATES = ["Tip-in", "Putback dunk", "Windmill dunk"]


# --------------------------------------------------------------------------- parsing and HTML


def test_candidates_one_per_line_with_comments_and_checks():
    assert parse_candidates(" Tip-in \n\n# a comment\nPutback dunk\n") == ["Tip-in", "Putback dunk"]
    with pytest.raises(ActAlignError, match="No candidate"):
        parse_candidates("\n  \n# only a comment\n")
    with pytest.raises(ActAlignError, match="given twice"):
        parse_candidates("Tip-in\ntip-IN")


def test_scripts_json_in_both_forms_and_one_sentence_when_wrong():
    flat = parse_scripts_json('{"Tip-in": ["jump", "tap"]}', "basketball")
    nested = parse_scripts_json('{"Basketball": {"Tip-in": ["jump", "tap"]}, "tennis": {}}', "basketball")
    assert flat == nested == {"Tip-in": ["jump", "tap"]}
    assert parse_scripts_json("  ", "basketball") == {}
    with pytest.raises(ActAlignError, match="not valid JSON"):
        parse_scripts_json("{", "basketball")
    with pytest.raises(ActAlignError, match="repeats the step"):
        parse_scripts_json('{"Tip-in": ["jump", "Jump"]}', "basketball")
    assert steps_from_text("Tip-in", "jump\n\n  tap the ball \n") == ["jump", "tap the ball"]
    with pytest.raises(ActAlignError, match="non-empty list"):
        steps_from_text("Tip-in", "\n \n")


def _prediction(alignment: str = "global") -> Prediction:
    segs = [Segment("<b>jump</b>", 0.0, 1.0), Segment("tap & score", 1.0, 2.5)]
    return Prediction(
        "clip.mp4",
        "basketball",
        "actalign",
        [
            CandidateResult("Tip-in <x>", 0.7, 1, ["<b>jump</b>", "tap & score"], segs, span=(0.0, 2.5)),
            CandidateResult("Putback dunk", 0.35, 2, ["a", "b"], segs[:1], span=(0.5, 1.0)),
        ],
        np.array([0.0, 0.5, 1.0, 1.5, 2.0]),
        alignment=alignment,
    )


def test_timeline_rows_seek_to_each_step_and_escape_text():
    page = timeline_html(_prediction())
    assert page.count('class="aa-step"') == 2
    assert 'data-start="0.000" data-end="1.000"' in page and 'data-start="1.000" data-end="2.500"' in page
    assert "&lt;b&gt;jump&lt;/b&gt;" in page and "tap &amp; score" in page and "<b>jump" not in page
    assert "Tip-in &lt;x&gt;" in page


def test_ranking_lists_every_candidate_and_spans_only_when_local():
    page = ranking_html(_prediction())
    assert page.count("<tr class=") == 2 and "Putback dunk" in page and "0.3500" in page
    assert "span" not in page.split("<tbody>")[0]
    local = ranking_html(_prediction("subsequence"))
    assert "<th>span</th>" in local and "0.50\u20131.00 s" in local


# --------------------------------------------------------------------------- the command


def test_app_command_without_gradio_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradio", None)  # import gradio now raises ImportError
    assert main(["app"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: The app needs Gradio, an optional extra: pip install 'actalign[app]'."]


def test_app_command_listens_on_loopback_and_never_shares_unless_asked(monkeypatch, capsys, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    import actalign.app

    calls = []

    class Served:
        local_url, share_url = "http://127.0.0.1:7860/", None
        is_running = False  # the server ended at once

    monkeypatch.setattr(
        actalign.app, "launch", lambda settings, **kw: calls.append((settings, kw)) or Served()
    )
    monkeypatch.setattr(actalign.app, "stop", lambda demo: calls.append("stopped"))
    assert (
        main(["app", "--store", str(tmp_path / "s.sqlite"), "--fps", "5", "--alignment", "subsequence"]) == 0
    )
    settings, kw = calls[0]
    assert kw == {"host": "127.0.0.1", "port": 7860, "share": False}
    assert (settings.fps, settings.alignment, settings.max_upload_mb) == (5.0, "subsequence", 500.0)
    assert calls[1] == "stopped" and "http://127.0.0.1:7860/" in capsys.readouterr().out
    assert main(["app", "--share", "--port", "9000", "--store", str(tmp_path / "s.sqlite")]) == 0
    assert calls[2][1] == {"host": "127.0.0.1", "port": 9000, "share": True}
    with pytest.raises(SystemExit):
        build_parser().parse_args(["app", "--port", "70000"])


def test_too_large_videos_are_refused_in_one_sentence(tmp_path):
    video = make_video(tmp_path / "clip.mp4", n=30, size=(64, 48))
    engine = Engine(AppSettings(max_upload_mb=1e-4))
    with pytest.raises(ActAlignError, match=r"over this app's limit of 0\.0001 MB"):
        engine.check_video(str(video))
    Engine(AppSettings(max_upload_mb=1)).check_video(str(video))
    with pytest.raises(ActAlignError, match="upload a video first"):
        engine.check_video(None)


# --------------------------------------------------------------------------- the API, served


@pytest.fixture(scope="module")
def scripts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("scripts") / "scripts.json"
    path.write_text(json.dumps(SCRIPTS))
    return path


@pytest.fixture(scope="module")
def served(siglip_dir, scripts_file, tmp_path_factory):
    """(url, Blocks) of the app with the tiny model and the scripts file."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    pytest.importorskip("gradio_client", reason="the app extra (gradio_client) is not installed")
    from app_server import serve

    home = tmp_path_factory.mktemp("app-home")
    settings = AppSettings(model=str(siglip_dir), scripts=(str(scripts_file),), store=str(home / "s.sqlite"))
    with serve(settings) as (url, demo):
        yield url, demo


@pytest.fixture
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)


@pytest.fixture
def clip(tmp_path):
    return make_video(tmp_path / "clip.mp4", n=24, fps=8, size=(48, 40))


def cli_json(args, video: Path, capsys, monkeypatch) -> str:
    """What `actalign classify clip.mp4 ... --format json` prints, run beside the video."""
    monkeypatch.chdir(video.parent)
    capsys.readouterr()
    assert main(["classify", video.name, "--format", "json", "-q", *map(str, args)]) == 0
    return capsys.readouterr().out


def test_classify_api_returns_exactly_the_cli_json(
    client, clip, siglip_dir, scripts_file, capsys, monkeypatch
):
    from gradio_client import handle_file

    got = client.predict(handle_file(str(clip)), "basketball", "\n".join(CANDIDATES), api_name="/classify")
    base = ["--domain", "basketball", "--candidates", *CANDIDATES, "--model", siglip_dir]
    want = cli_json([*base, "--scripts", scripts_file], clip, capsys, monkeypatch)
    assert got == want
    video = json.loads(got)["videos"][0]
    assert video["video"] == "clip.mp4" and len(video["predictions"]) == 3
    assert all(p["segments"] for p in video["predictions"])


def test_classify_api_options_match_the_cli_flags(
    client, clip, siglip_dir, scripts_file, tmp_path, capsys, monkeypatch
):
    from gradio_client import handle_file

    edited = {"Tip-in": ["ball off the rim", "tap the ball"], "Windmill dunk": ["spin the ball", "dunk"]}
    got = client.predict(
        handle_file(str(clip)),
        "basketball",
        "Windmill dunk\nTip-in\nPutback dunk",
        0.5,  # start
        2.5,  # end
        4,  # fps
        0.5,  # smoothing seconds
        "subsequence",
        json.dumps(edited),
        api_name="/classify",
    )
    (tmp_path / "edited.json").write_text(json.dumps({"basketball": edited}))
    flags = ["--start", "0.5", "--end", "2.5", "--fps", "4", "--smooth", "0.5", "--alignment", "subsequence"]
    args = ["--domain", "basketball", "--candidates", "Windmill dunk", "Tip-in", "Putback dunk", *flags]
    scripts = ["--scripts", tmp_path / "edited.json", "--scripts", scripts_file]  # edits win
    want = cli_json([*args, "--model", siglip_dir, *scripts], clip, capsys, monkeypatch)
    assert got == want
    video = json.loads(got)["videos"][0]
    assert (video["start"], video["end"], video["alignment"]) == (0.5, 2.5, "subsequence")
    steps = {p["action"]: [s["step"] for s in p["segments"]] for p in video["predictions"]}
    assert (
        steps["Tip-in"] == edited["Tip-in"] and steps["Putback dunk"] == SCRIPTS["basketball"]["Putback dunk"]
    )


def test_api_errors_are_one_sentence_without_a_traceback(client, tmp_path):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    text = tmp_path / "notes.mp4"
    text.write_text("not a video at all\n")
    cases = [
        (handle_file(str(text)), "basketball", "Tip-in\nPutback dunk", "notes.mp4 is not a video"),
        (handle_file(str(make_video(tmp_path / "v.mp4", n=8))), "basketball", "Tip-in\nFloater", "No script"),
        (handle_file(str(tmp_path / "v.mp4")), "", "Tip-in", "Give a domain"),
        (handle_file(str(tmp_path / "v.mp4")), "basketball", "\n", "No candidate actions"),
    ]
    with pytest.raises(AppError, match="No LLM is configured"):
        client.predict("basketball", "Floater", api_name="/generate_scripts")
    for video, domain, candidates, expected in cases:
        with pytest.raises(AppError) as e:
            client.predict(video, domain, candidates, api_name="/classify")
        message = str(e.value)
        assert expected in message, message
        assert "Traceback" not in message and "/tmp/gradio" not in message and "\n" not in message.strip()


def test_unexpected_failures_become_one_generic_sentence(client, clip, monkeypatch, caplog):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail the user must not see")

    monkeypatch.setattr(Engine, "classify", broken)
    with caplog.at_level(logging.ERROR, logger="actalign.app"), pytest.raises(AppError) as e:
        client.predict(handle_file(str(clip)), "basketball", "Tip-in\nPutback dunk", api_name="/classify")
    assert str(e.value) == GENERIC_ERROR
    assert "internal detail" in caplog.text  # the traceback went to the server's log


def test_a_missing_model_is_one_sentence(clip, scripts_file, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from app_server import serve

    settings = AppSettings(model=str(tmp_path / "no-model"), scripts=(str(scripts_file),))
    with serve(settings) as (url, _), pytest.raises(AppError, match="No model directory at"):
        Client(url, verbose=False).predict(
            handle_file(str(clip)), "basketball", "Tip-in\nPutback dunk", api_name="/classify"
        )


def test_the_model_is_loaded_once_for_every_request(siglip_dir, scripts_file, clip, monkeypatch):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from gradio_client import Client, handle_file

    import actalign.encoders
    from app_server import serve

    real, loads = actalign.encoders.load_encoder, []
    monkeypatch.setattr(actalign.encoders, "load_encoder", lambda *a, **k: loads.append(a) or real(*a, **k))
    with serve(AppSettings(model=str(siglip_dir), scripts=(str(scripts_file),))) as (url, _):
        c = Client(url, verbose=False)
        for fps in (4, 8):
            c.predict(
                handle_file(str(clip)),
                "basketball",
                "Tip-in\nPutback dunk",
                None,
                None,
                fps,
                api_name="/classify",
            )
    assert loads == [(str(siglip_dir),)]


def test_scripts_are_looked_up_and_generated_through_the_api(siglip_dir, scripts_file, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    from gradio_client import Client

    from app_server import serve

    answer = {"Floater": ["player drives to the lane", "soft one-handed shot", "ball drops in"]}
    with FakeLLM() as llm:
        llm.answer(("answer", json.dumps(answer)))
        settings = AppSettings(
            model=str(siglip_dir),
            scripts=(str(scripts_file),),
            store=str(tmp_path / "store.sqlite"),
            llm_base_url=llm.url,
            llm_model="fake",
        )
        with serve(settings) as (url, _):
            c = Client(url, verbose=False)
            found = json.loads(c.predict("basketball", "Tip-in\nFloater", api_name="/scripts"))
            assert found == {"basketball": {"Tip-in": SCRIPTS["basketball"]["Tip-in"]}}
            made = json.loads(c.predict("basketball", "Tip-in\nFloater", api_name="/generate_scripts"))
            assert made == {"basketball": {"Tip-in": SCRIPTS["basketball"]["Tip-in"], **answer}}
            assert len(llm.requests) == 1 and "Floater" in llm.requests[0]["messages"][0]["content"]
            stored = json.loads(c.predict("basketball", "Floater", api_name="/scripts"))
            assert stored == {"basketball": answer} and len(llm.requests) == 1  # kept, not regenerated


def test_a_busy_port_is_one_sentence(siglip_dir):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    import socket

    from actalign.app import launch

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ActAlignError, match=f"Cannot listen on 127.0.0.1:{port}: the port is in use"):
            launch(AppSettings(model=str(siglip_dir)), port=port)


@pytest.mark.parametrize(
    ("signum", "line", "code"), [("SIGINT", "interrupted", 130), ("SIGTERM", "terminated", 143)]
)
def test_the_command_serves_on_loopback_and_ends_like_every_command_when_stopped(
    siglip_dir, tmp_path, signum, line, code
):
    """Ctrl-C or a service manager's SIGTERM: one line (`interrupted`, `terminated`), the signal's
    exit status (130, 143), its result files removed."""
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    import os
    import signal
    import subprocess
    import urllib.request

    from app_server import free_port

    port, scratch = free_port(), tmp_path / "tmp"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch)}
    args = ["app", "--model", str(siglip_dir), "--port", str(port), "--store", str(tmp_path / "s.sqlite")]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    server = subprocess.Popen([sys.executable, "-m", "actalign", *args], env=env, **pipes)
    try:
        first = server.stdout.readline()
        assert first == f"actalign app on http://127.0.0.1:{port}/\n", first + server.stderr.read()
        with urllib.request.urlopen(first.split()[-1], timeout=30) as page:
            assert page.status == 200 and b"actalign" in page.read()
        assert list(scratch.glob("actalign-app-*"))  # its result folder, while it runs
    finally:
        server.send_signal(getattr(signal, signum))
        out, err = server.communicate(timeout=60)
    assert server.returncode == code, err
    assert err.strip().splitlines()[-1:] == [line], err  # its last word; nothing from Gradio after it
    assert "Keyboard interruption" not in out + err and "Traceback" not in err, out + err
    assert not list(scratch.glob("actalign-app-*"))


def test_only_the_sample_videos_are_served_not_the_files_beside_them(tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    import urllib.error
    import urllib.parse
    import urllib.request

    from app_server import serve

    folder = tmp_path / "samples"
    folder.mkdir()
    video = make_video(folder / "clip.mp4", n=8)
    row = {"video": "clip.mp4", "domain": "basketball", "candidates": CANDIDATES, "answer": 0}
    manifest = folder / "manifest.jsonl"
    manifest.write_text(json.dumps(row) + "\n")
    (folder / "secret.txt").write_text("api key: hunter2\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("private\n")
    make_video(folder / "unlisted.mp4", n=8)  # a video, but not a sample

    def status(url: str, path: Path) -> int:
        try:
            address = url + "gradio_api/file=" + urllib.parse.quote(str(path))
            with urllib.request.urlopen(address, timeout=30) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            return e.code

    settings = AppSettings(samples=str(manifest), store=str(tmp_path / "s.sqlite"))
    with serve(settings) as (url, _):
        assert status(url, video) == 200
        for path in (folder / "secret.txt", manifest, folder / "notes" / "todo.txt", folder / "unlisted.mp4"):
            assert status(url, path) in (403, 404), path


@pytest.mark.parametrize(
    ("host", "local", "remote"),
    [
        ("127.0.0.1", "127.0.0.1", None),
        ("127.0.0.2", "127.0.0.2", None),
        ("localhost", "localhost", None),
        ("::1", "[::1]", None),
        ("[::1]", "[::1]", None),
        ("0", "127.0.0.1", "every"),
        ("0.0.0.0", "127.0.0.1", "every"),
        ("::", "[::1]", "every"),
        ("192.168.1.5", "192.168.1.5", "192.168.1.5"),
        ("fd00::5", "[fd00::5]", "[fd00::5]"),
    ],
)
def test_the_listening_address_says_who_can_reach_the_page(host, local, remote):
    from actalign.app import listen_on

    where = listen_on(host)
    assert where.local == local
    if remote == "every":
        assert where.everywhere and where.remote  # this machine's name, for the others
    else:
        assert not where.everywhere and where.remote == remote
    with pytest.raises(ActAlignError, match="Cannot listen on 'no such host!'"):
        listen_on("no such host!")


def _serve_command(host: str, tmp_path, siglip_dir) -> tuple[list[str], str, int]:
    """The banner lines of `actalign app --host HOST` until 'Ctrl-C stops it.', and the status of
    its page fetched at the first URL it printed; stopped with SIGTERM."""
    import os
    import re
    import signal
    import subprocess
    import urllib.request

    from app_server import free_port

    port = free_port()
    args = ["app", "--host", host, "--model", str(siglip_dir), "--port", str(port)]
    args += ["--store", str(tmp_path / "s.sqlite")]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-m", "actalign", *args], env=env, **pipes)
    try:
        lines = []
        while not lines or lines[-1] != "Ctrl-C stops it.":
            line = server.stdout.readline()
            assert line, "".join(lines) + server.stderr.read()
            lines.append(line.rstrip("\n"))
        url = re.search(r"http://\S+/", lines[0]).group(0)
        with urllib.request.urlopen(url, timeout=30) as page:
            status = page.status
    finally:
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=60)
    assert server.returncode == 143  # SIGTERM: `terminated`
    return lines, url, status


def test_the_command_says_plainly_when_other_machines_can_reach_the_page(siglip_dir, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    lines, url, status = _serve_command("0", tmp_path, siglip_dir)
    assert status == 200 and url.startswith("http://127.0.0.1:")
    text = " ".join(lines)
    assert "other machines" in text and "every network interface" in text, text
    assert "--host 127.0.0.1" in text  # how to keep it on this machine
    assert "http://0:" not in text


def test_an_ipv6_loopback_host_serves_the_page(siglip_dir, tmp_path):
    pytest.importorskip("gradio", reason="the app extra (gradio) is not installed")
    import socket

    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("this machine has no IPv6 loopback")
    lines, url, status = _serve_command("::1", tmp_path, siglip_dir)
    assert status == 200 and url.startswith("http://[::1]:")
    assert "other machines" not in " ".join(lines)


def _rest(url: str, path: str, payload: dict | None = None, files: Path | None = None) -> str:
    """A plain HTTP call to the app, as docs/app.md shows it (no Gradio client)."""
    import urllib.request

    if files is not None:
        boundary = "actalign-test-boundary"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{files.name}"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        data = head + files.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        kind = f"multipart/form-data; boundary={boundary}"
    else:
        data, kind = (json.dumps(payload).encode() if payload is not None else None), "application/json"
    request = urllib.request.Request(url.rstrip("/") + path, data=data, headers={"Content-Type": kind})
    with urllib.request.urlopen(request, timeout=120) as answer:
        return answer.read().decode()


def test_the_plain_http_call_the_readme_shows_works(served, clip):
    url = served[0]
    (uploaded,) = json.loads(_rest(url, "/gradio_api/upload", files=clip))
    video = {"path": uploaded, "meta": {"_type": "gradio.FileData"}}
    required = [video, "basketball", "\n".join(CANDIDATES)]
    event = json.loads(_rest(url, "/gradio_api/call/classify", {"data": [*required, *[None] * 6]}))[
        "event_id"
    ]
    stream = _rest(url, f"/gradio_api/call/classify/{event}")
    assert "event: complete" in stream, stream
    assert '\\"predictions\\"' in stream or "predictions" in stream
    # the settings left out at the end are the app's, as docs/app.md says
    event = json.loads(_rest(url, "/gradio_api/call/classify", {"data": required}))["event_id"]
    short = _rest(url, f"/gradio_api/call/classify/{event}")
    assert "event: complete" in short, short
    answers = [json.loads(json.loads(a.split("data: ", 1)[1].splitlines()[0])[0]) for a in (stream, short)]
    full, brief = answers
    assert full["videos"] == brief["videos"] and len(full["videos"][0]["predictions"]) == 3
