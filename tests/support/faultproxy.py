"""A small HTTP reverse proxy on 127.0.0.1 that can answer chosen requests itself: faults where the client sees them.

Two uses in the fault storm (tests/faults/storm.py):

- **in front of moto's EC2 endpoint**, answering a share of ``RunInstances``
  calls with EC2's ``InsufficientInstanceCapacity`` error (HTTP 500, EC2's XML
  error body), so the real boto3 client inside ``fusionctl serve`` parses a
  real capacity refusal; everything else goes through to moto unchanged;
- **as the load balancer in front of several ``fusionctl serve`` replicas**:
  each request goes to the next upstream in turn, and to the one after it
  when an upstream refuses the connection (a replica that was killed and is
  still restarting). Workers' callbacks and the storm's submissions use it,
  as they would use a Service or a load balancer in production.

``decide(request)`` returns a :class:`Reply` to answer the request without
forwarding it, or ``None`` to forward. A request that reached an upstream
and got no answer (the upstream died mid-request) is answered 502, as a
load balancer does; the caller's retry rules apply.

One request per connection (HTTP/1.0 answers), so no handler thread outlives
a client, and :meth:`FaultProxy.close` stops and joins everything.
"""

from __future__ import annotations

import http.client
import itertools
import threading
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["FaultProxy", "ProxiedRequest", "Reply"]

_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    #: a name for the counts (``FaultProxy.injected``)
    label: str = "injected"


Decide = Callable[[ProxiedRequest], Reply | None]


class FaultProxy(ThreadingHTTPServer):
    """Forward to ``upstreams`` (URLs, or a function returning them), answering what ``decide`` picks itself."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        upstreams: Sequence[str] | Callable[[], Sequence[str]],
        *,
        decide: Decide | None = None,
        timeout_s: float = 30.0,
        port: int = 0,
    ) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self._upstreams = upstreams
        self.decide = decide
        self.timeout_s = timeout_s
        self.lock = threading.Lock()
        self.forwarded = 0
        self.refused_upstream = 0
        self.bad_gateway = 0
        self.injected: Counter[str] = Counter()
        self._turn = itertools.count()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def upstreams(self) -> list[tuple[str, int]]:
        urls = self._upstreams() if callable(self._upstreams) else self._upstreams
        found = []
        for url in urls:
            parts = urlsplit(url)
            found.append((parts.hostname or "127.0.0.1", parts.port or 80))
        return found

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.1}, name=f"faultproxy-{self.url}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join(5)
            self._thread = None
        self.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up is not the proxy's problem; counts say what happened

    def counts(self) -> dict[str, Any]:
        with self.lock:
            return {
                "forwarded": self.forwarded,
                "upstream_refused": self.refused_upstream,
                "bad_gateway": self.bad_gateway,
                "injected": dict(self.injected),
            }


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = ProxiedRequest(self.command, self.path, headers, body)
        reply = self.server.decide(request) if self.server.decide is not None else None
        if reply is not None:
            with self.server.lock:
                self.server.injected[reply.label] += 1
            self._send(reply.status, reply.body, reply.headers)
            return
        self._forward(request)

    def _forward(self, request: ProxiedRequest) -> None:
        upstreams = self.server.upstreams()
        if not upstreams:
            self._send(503, b"no upstream", {"Content-Type": "text/plain"})
            return
        start = next(self.server._turn) % len(upstreams)
        outgoing = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        outgoing["connection"] = "close"
        for offset in range(len(upstreams)):
            host, port = upstreams[(start + offset) % len(upstreams)]
            connection = http.client.HTTPConnection(host, port, timeout=self.server.timeout_s)
            try:
                try:
                    connection.connect()
                except OSError:
                    with self.server.lock:
                        self.server.refused_upstream += 1
                    continue  # nothing was sent: the next upstream may take it
                try:
                    connection.request(request.method, request.path, body=request.body or None, headers=outgoing)
                    answer = connection.getresponse()
                    data = answer.read()
                except (OSError, http.client.HTTPException):
                    with self.server.lock:
                        self.server.bad_gateway += 1
                    self._send(502, b"upstream did not answer", {"Content-Type": "text/plain"})
                    return
                kept = {k: v for k, v in answer.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
                with self.server.lock:
                    self.server.forwarded += 1
                self._send(answer.status, data, kept)
                return
            finally:
                connection.close()
        self._send(503, b"every upstream refused the connection", {"Content-Type": "text/plain"})

    def _send(self, status: int, body: bytes, headers: Mapping[str, str]) -> None:
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        except OSError:
            pass  # the client went away
