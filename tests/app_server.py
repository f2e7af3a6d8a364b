"""The app served for real on a free loopback port, for the API and browser tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


def free_port() -> int:
    """A TCP port nobody listens on right now (loopback)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(settings) -> Iterator[tuple[str, object]]:
    """(url, Blocks) of the app listening on 127.0.0.1; stopped and cleaned up afterwards."""
    from actalign.app import launch, stop

    demo = launch(settings, host="127.0.0.1", port=free_port())
    try:
        yield demo.local_url, demo
    finally:
        stop(demo)
