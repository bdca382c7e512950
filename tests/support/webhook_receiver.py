"""A webhook receiver on 127.0.0.1: answers each POST with the next scripted status and keeps what it got.

Tests name it ``hooks.test:<port>`` in the notify URL and list that host in
the operator's allow-list, as an operator would for an internal receiver:
the address rules refuse loopback otherwise. A resolver that answers
127.0.0.1 for that name stands in for DNS.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from faceswap.netguard import IPAddress
from tests.support.loopback import serving

__all__ = ["HOST", "Received", "WebhookReceiver", "loopback_resolver", "receiving"]

HOST = "hooks.test"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


def loopback_resolver(host: str, port: int) -> list[IPAddress]:
    """DNS for the tests: the receiver's name is 127.0.0.1; every other name does not resolve."""
    if host == HOST:
        return [ipaddress.ip_address("127.0.0.1")]
    raise OSError(f"{host} does not resolve in tests")


@dataclass
class _Script:
    statuses: list[int]
    received: list[Received] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class WebhookReceiver(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, statuses: Sequence[int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = _Script(list(statuses))

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/hook"

    @property
    def allow_entry(self) -> str:
        return f"{HOST}:{self.server_address[1]}"

    @property
    def received(self) -> list[Received]:
        with self.script.changed:
            return list(self.script.received)

    def wait_for(self, count: int, *, timeout_s: float = 20.0) -> list[Received]:
        """The first ``count`` requests, once they came; AssertionError after ``timeout_s``."""
        with self.script.changed:
            if not self.script.changed.wait_for(lambda: len(self.script.received) >= count, timeout=timeout_s):
                raise AssertionError(f"{len(self.script.received)} webhook requests came, wanted {count}")
            return list(self.script.received)


class _Handler(BaseHTTPRequestHandler):
    server: WebhookReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        script = self.server.script
        with script.changed:
            status = script.statuses.pop(0) if script.statuses else 200
            script.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            script.changed.notify_all()
        self.send_response(status)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def receiving(statuses: Sequence[int] = ()) -> Iterator[WebhookReceiver]:
    """A receiver serving on a thread for the block; stopped and closed after."""
    with serving(WebhookReceiver(statuses)) as receiver:
        yield receiver
