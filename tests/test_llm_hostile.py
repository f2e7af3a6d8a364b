"""LLM servers that misbehave. A loopback HTTP server sends each bad answer byte for byte
(bodies that are not UTF-8, not JSON, nested 100,000 deep, cut off, not a chat completion; answers
trickled a byte at a time or sent too late; model text with terminal escape sequences): each is one
sentence, within the stated timeout, and model text is never printed unescaped."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from actalign.cli import main
from actalign.errors import ActAlignError
from actalign.scripts.llm import LLMWriter, completion_text
from actalign.text import printable

ACTIONS = ["Tip-in", "Putback dunk"]
GOOD = {
    "Tip-in": ["Player jumps near the rim", "Player taps the ball toward the hoop"],
    "Putback dunk": ["Player catches the rebound above the rim", "Player slams the ball through the hoop"],
}


def completion(content: object = None, message: object = "default") -> dict:
    if message == "default":
        message = {"role": "assistant", "content": content}
    return {"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": message}]}


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


GENERATE = ["scripts", "generate", "--domain", "basketball", "--candidates", *ACTIONS]
GOOD_BODY = body(completion(json.dumps({"actions": GOOD})))


class RawLLM:
    """A loopback server that answers every request with the same raw behaviour:

    ("send", bytes)            200 with this body and its Content-Length
    ("close", bytes)           200 with this body, no Content-Length, then the connection closes
    ("cut", bytes)             200 whose Content-Length promises the whole body; half is sent
    ("trickle", bytes, s)      the whole response (status line, headers, body), a byte every s seconds
    ("late", bytes)            the answer only after `release` is set (the test's end)
    ("slow", bytes, s)         200 with this body after s seconds

    A list of behaviours: the first request gets the first, and so on (the last one repeats).
    """

    def __init__(self, behaviour: tuple) -> None:
        self.behaviour = behaviour
        self.requests: list[dict] = []
        self.finished = threading.Event()  # a response was sent in full
        self.release = threading.Event()
        raw = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw.requests.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                behaviour = raw.behaviour
                if isinstance(behaviour, list):
                    behaviour = behaviour[min(len(raw.requests), len(behaviour)) - 1]
                kind, data = behaviour[0], behaviour[1]
                head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                try:
                    if kind == "send":
                        self._write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data)
                    elif kind == "close":
                        self._write(head + b"Connection: close\r\n\r\n" + data)
                        self.close_connection = True
                    elif kind == "cut":
                        self._write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data[: len(data) // 2])
                        self.close_connection = True
                    elif kind == "trickle":
                        whole = head + b"Content-Length: %d\r\n\r\n" % len(data) + data
                        for i in range(len(whole)):
                            if raw.release.wait(behaviour[2]):
                                return
                            self.wfile.write(whole[i : i + 1])
                            self.wfile.flush()
                        raw.finished.set()
                    elif kind == "slow":
                        if raw.release.wait(behaviour[2]):
                            return
                        self._write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data)
                    elif kind == "late":
                        if raw.release.wait(600):
                            return
                        self._write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True  # the client gave up

            def _write(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                raw.finished.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> RawLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def writer(url: str, **kw) -> LLMWriter:
    return LLMWriter(model="m", base_url=url, api_key="k", **kw)


def one_sentence(e: ActAlignError) -> str:
    text = str(e)
    assert "\n" not in text and text.endswith(".") and "Traceback" not in text, text
    return text


DEEP = 100_000
BAD_BODIES = {
    "not-utf8": (("send", b'{"choices": [{"message": {"content": "caf\xe9 \xff\xfe"}}]}'), "not UTF-8"),
    "nested-100000-deep": (
        ("send", b'{"choices": [{"message": {"content": ' + b"[" * DEEP + b"]" * DEEP + b"}}]}"),
        "nested too deeply",
    ),
    "content-list": (("send", body(completion([1, 2, 3]))), "content is a list"),
    "content-dict": (("send", body(completion({"actions": GOOD}))), "content is an object"),
    "message-null": (("send", body(completion(message=None))), "message is null"),
    "body-list": (("send", body([completion("{}")])), "JSON that is a list"),
    "body-string": (("send", body("hello")), "JSON that is a string"),
    "no-choices": (("send", body({"id": "x", "object": "chat.completion"})), "without a list of choices"),
    "cut-with-length": (("cut", GOOD_BODY), "broke off in the middle"),
    "cut-at-close": (("close", GOOD_BODY[: len(GOOD_BODY) // 2]), "not complete JSON"),
    "html": (("send", b"<html><body>502 Bad Gateway</body></html>"), "not complete JSON"),
}


@pytest.mark.parametrize(("behaviour", "said"), BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_a_bad_body_is_one_sentence(behaviour, said):
    with RawLLM(behaviour) as server, pytest.raises(ActAlignError) as e:
        writer(server.url, max_retries=0, timeout=30).write("basketball", ACTIONS)
    assert said in one_sentence(e.value) and server.url in str(e.value)


@pytest.mark.parametrize(
    "behaviour", [BAD_BODIES["nested-100000-deep"][0], BAD_BODIES["message-null"][0]], ids=["deep", "null"]
)
def test_the_cli_prints_one_line_for_a_bad_body(behaviour, capsys, tmp_path):
    with RawLLM(behaviour) as server:
        code = main([*GENERATE, "--llm", server.url])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (tmp_path / "home" / "scripts.sqlite").exists()  # nothing stored, no empty store left


def test_content_parts_and_a_missing_content_are_read():
    parts = [{"type": "text", "text": '{"actions": '}, {"type": "text", "text": "{}}"}]
    assert completion_text(body(completion(parts))) == '{"actions": {}}'
    assert completion_text(body(completion(None))) == ""  # then the repair request asks again
    assert completion_text(body({"choices": []})) == ""


def test_a_trickling_server_is_stopped_at_the_timeout():
    """Every byte comes well within the read timeout, so only a deadline for the whole answer
    stops it; the server would need minutes to finish."""
    with RawLLM(("trickle", GOOD_BODY, 0.3)) as server:
        with pytest.raises(ActAlignError, match=r"did not answer in time \(within 2 s") as e:
            writer(server.url, timeout=2).write("basketball", ACTIONS)
        assert not server.finished.is_set()  # given up before the answer was complete
    one_sentence(e.value)


def test_a_late_server_is_stopped_at_the_timeout_without_retrying_past_it(monkeypatch, capsys):
    """Before, each retry waited the whole read timeout again (5 x 120 s for a 120 s timeout)."""
    with RawLLM(("late", GOOD_BODY)) as server:
        with pytest.raises(ActAlignError, match="did not answer in time"):
            writer(server.url, timeout=2, max_retries=4).write("basketball", ACTIONS)
        assert len(server.requests) == 1 and not server.finished.is_set()
        monkeypatch.setenv("ACTALIGN_LLM_TIMEOUT", "2")  # the setting the CLI reads
        assert main([*GENERATE, "--llm", server.url]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "within 2 s" in err and len(err.splitlines()) == 1
        assert len(server.requests) == 2 and not server.finished.is_set()


def test_the_timeout_setting_is_checked(monkeypatch):
    from actalign.scripts.writers import make_writer

    monkeypatch.setenv("ACTALIGN_LLM_TIMEOUT", "7.5")
    assert make_writer("http://127.0.0.1:9/v1").timeout == 7.5
    for bad in ("0", "-1", "inf", "nan"):
        monkeypatch.setenv("ACTALIGN_LLM_TIMEOUT", bad)
        with pytest.raises(ActAlignError, match="ACTALIGN_LLM_TIMEOUT must be a positive number"):
            make_writer("http://127.0.0.1:9/v1")
    monkeypatch.delenv("ACTALIGN_LLM_TIMEOUT")
    assert make_writer("http://127.0.0.1:9/v1").timeout == 120.0


def test_model_text_is_never_printed_unescaped(capsys, tmp_path):
    hostile = {
        "Tip-in": ["\x1b[2J\x1b[31mPlayer jumps near the rim", "Player taps\x9b the ball \u202eup"],
        "Putback dunk": ["Player catches the rebound\x07", "Player slams\r the ball through the hoop"],
    }
    store = tmp_path / "s.sqlite"
    with RawLLM(("send", body(completion(json.dumps({"actions": hostile}))))) as server:
        args = ["--domain", "basketball", "--candidates", *ACTIONS, "--llm", server.url, "--store", store]
        assert main(["scripts", "generate", *map(str, args)]) == 0
    shown = capsys.readouterr().out
    assert main(["scripts", "show", "--store", str(store)]) == 0
    shown += capsys.readouterr().out
    for raw in ("\x1b", "\x9b", "\u202e", "\x07", "\r"):
        assert raw not in shown
    assert shown.count("\\x1b[2J\\x1b[31mPlayer jumps near the rim") == 2 and "\\u202eup" in shown


def test_printable():
    assert printable("plain text, é ü 日本") == "plain text, é ü 日本"
    assert printable("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"
    assert printable("a\nb\tc\x00\x7f\x9b") == "a\\nb\\tc\\x00\\x7f\\x9b"
    assert printable("\u202edcba \u2066x\u2069 \ud800") == "\\u202edcba \\u2066x\\u2069 \\ud800"
    assert printable(3) == "3"


def test_a_writer_answers_again_after_a_timeout():
    """The abandoned request's connection is closed; the next request gets a fresh one."""
    with RawLLM(("late", GOOD_BODY)) as server:
        w = writer(server.url, timeout=1, max_retries=0)
        with pytest.raises(ActAlignError, match="did not answer in time"):
            w.write("basketball", ACTIONS)
        server.behaviour = ("send", GOOD_BODY)
        assert w.write("basketball", ACTIONS) == GOOD


def test_the_timeout_bounds_the_whole_answer_repair_included_and_says_the_time_spent():
    """Before: the repair request got the whole timeout again (an invalid answer after 1.5 s, then
    a silent server: 3.5 s for a 2 s timeout) and the sentence still said "within 2 s"."""
    import re
    import time

    invalid = body(completion(json.dumps({"actions": {"Tip-in": ["x"]}})))
    with RawLLM([("slow", invalid, 1.5), ("late", GOOD_BODY)]) as server:
        t0 = time.monotonic()
        with pytest.raises(ActAlignError, match="did not answer in time") as e:
            writer(server.url, timeout=2, max_retries=2).write("basketball", ACTIONS)
        spent = time.monotonic() - t0
    assert len(server.requests) == 2  # the repair request was sent, within the same 2 s
    assert spent < 3.0, spent
    said = float(re.search(r"given up after ([0-9.]+) s", one_sentence(e.value)).group(1))
    assert 1.9 <= said <= spent + 0.1, (said, spent)


def test_scripts_nested_200000_deep_in_the_answer_are_one_sentence():
    """Before: RecursionError from the answer's text (a valid completion whose content is deep)."""
    deep = '{"Tip-in": ' * 200_000 + "[]" + "}" * 200_000
    with (
        RawLLM(("send", body(completion(deep)))) as server,
        pytest.raises(ActAlignError, match="nested too deeply") as e,
    ):
        writer(server.url, max_retries=0, timeout=30).write("basketball", ACTIONS)
    assert len(server.requests) == 2  # asked once more, listing the problem
    one_sentence(e.value)
