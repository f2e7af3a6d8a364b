"""A real HTTP server on loopback that speaks the chat-completions API, with scripted answers."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def mode_of(request: dict) -> str:
    """The structured-output mode a chat-completions request asks for."""
    fmt = request.get("response_format")
    if fmt is None:
        return "prompt"
    return "json_object_schema" if fmt["type"] == "json_object" and "schema" in fmt else fmt["type"]


class FakeLLM:
    """Answers each request with the next queued behaviour (the last one repeats):

    ("answer", text) | ("status", code[, message]) | ("slow", seconds, text)

    `response_formats`: the structured-output modes the server supports (json_schema,
    json_object_schema: json_object with a schema, json_object); a request asking for another one
    gets HTTP 400 naming response_format (as OpenAI, vLLM and llama.cpp do), without using the queue.
    """

    def __init__(
        self, response_formats: tuple[str, ...] = ("json_schema", "json_object_schema", "json_object")
    ) -> None:
        self.response_formats = response_formats
        self.queue: list[tuple] = []
        self.requests: list[dict] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                kind = mode_of(body)
                if kind != "prompt" and kind not in fake.response_formats:
                    message = f"response_format of type {kind!r} is not supported"
                    self._send(400, {"error": {"message": message, "type": "invalid_request_error"}})
                    return
                step = fake.queue.pop(0) if len(fake.queue) > 1 else fake.queue[0]
                if step[0] == "status":
                    message = step[2] if len(step) > 2 else "server error"
                    self._send(step[1], {"error": {"message": message, "type": "error"}})
                    return
                if step[0] == "slow":
                    time.sleep(step[1])
                text = step[-1]
                self._send(
                    200,
                    {
                        "id": "chatcmpl-test",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    },
                )

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("retry-after-ms", "10")  # keep the client's backoff short
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeLLM:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, *steps: tuple) -> None:
        self.queue = list(steps)
