"""What every HTTP fake in tests/fakes shares: a loopback server that can be stopped mid-request.

:class:`TrackedHTTPServer` serves each connection on its own thread and
remembers it, so ``stop()`` can cut every open connection (idle keep-alives
and requests blocked in a long-poll or a "slow" fault included) and join the
threads within a bound, as a dead backend would. :class:`LoopbackFake` is the
start/stop lifecycle around it: ``stop()`` then ``start()`` keeps the port,
which is how the tests model an outage and a recovery.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ["STOP_JOIN_TIMEOUT_S", "LoopbackFake", "TrackedHTTPServer"]

#: how long stop() waits for the serving threads
STOP_JOIN_TIMEOUT_S = 5.0


class TrackedHTTPServer(ThreadingHTTPServer):
    """One thread per connection, each tracked so that :meth:`cut_connections` can end and join it."""

    daemon_threads = True
    block_on_close = False  # cut_connections joins the connection threads itself, with a timeout
    request_queue_size = 64
    #: errors a connection may end with that are not bugs in the fake (a client hanging up, stop() cutting it)
    quiet_errors: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError)

    def __init__(self, port: int, fake: Any, handler: type[BaseHTTPRequestHandler]) -> None:
        self.fake = fake
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(target=self._serve, args=(request, client_address), daemon=True)
        with self._connections_lock:
            self._connections[request] = thread
        thread.start()

    def wrap(self, request: socket.socket) -> socket.socket | None:
        """The socket to serve on (a TLS server wraps it here); None drops the connection."""
        return request

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            wrapped = self.wrap(request)
            if wrapped is None:
                self.shutdown_request(request)
                return
            if wrapped is not request:
                with self._connections_lock:
                    self._connections[wrapped] = self._connections.pop(request, threading.current_thread())
                request = wrapped
            self.process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections.pop(request, None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], self.quiet_errors):
            super().handle_error(request, client_address)

    def cut_connections(self, timeout_s: float) -> None:
        """Shut every open connection down and join its thread; fail loudly if one will not stop."""
        with self._connections_lock:
            live = dict(self._connections)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + timeout_s
        for thread in live.values():
            thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [thread.name for thread in live.values() if thread.is_alive()]
        if stuck:
            raise RuntimeError(f"{type(self.fake).__name__} connection threads did not stop: {stuck}")


class LoopbackFake:
    """start/stop on one port for a fake; subclasses build their server and say what else starts and stops."""

    #: the serving thread's name prefix
    thread_name = "fake"

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: TrackedHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _new_server(self, port: int) -> TrackedHTTPServer:
        raise NotImplementedError

    def _on_start(self) -> None:
        """Before the server listens (reopen state, clear a stop flag)."""

    def _on_stop(self) -> None:
        """Before the connections are cut (close state, wake slow answers)."""

    def start(self) -> Self:
        """Listen (again) on the same port; returns self so ``fake = Fake().start()`` reads well."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already running")
        self._on_start()
        server = self._new_server(self._port)
        self._port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.thread_name}-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection: requests in progress fail at once, as with a dead server."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._on_stop()
        server.shutdown()
        server.server_close()
        server.cut_connections(STOP_JOIN_TIMEOUT_S)
        thread.join(STOP_JOIN_TIMEOUT_S)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"{type(self).__name__} has no port until it is started")
        return self._port
