"""Run a ``socketserver`` HTTP server on 127.0.0.1 for the length of a test."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import HTTPServer
from typing import TypeVar

S = TypeVar("S", bound=HTTPServer)


@contextlib.contextmanager
def serving(server: S) -> Iterator[S]:
    """Serve on a thread; always shut down, close the socket and join the thread."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
