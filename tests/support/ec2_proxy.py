"""An EC2 query-API proxy in front of moto that keeps EC2's ``ClientToken`` promise and can lose answers.

moto 5.2.5 ignores ``ClientToken``: every ``RunInstances`` starts a new
instance. EC2 does not: a repeated token (same parameters) answers with the
instance the first call started. A timeout test that resends a launch would
otherwise see a duplicate that only moto makes, so this proxy gives moto
that behaviour: the first successful answer of each token is kept and sent
again for the same token, without asking moto.

Faults, for timeouts that happen where they hurt most:

- :meth:`Ec2Proxy.lose_run_instances`: the next ``times`` ``RunInstances``
  requests take effect (the first reaches moto and the instance exists; a
  retry of the same token gets the kept answer, as from EC2) and their
  answer is held back until the client has given up: "it timed out, but it
  happened".
- :meth:`Ec2Proxy.go_silent`: every request is held unanswered, and nothing
  reaches moto, until :meth:`Ec2Proxy.heal`.

Held requests end (the connection is closed, with no answer) after
``hold_s`` or at shutdown; silent ones also at :meth:`Ec2Proxy.heal`.
One request per connection (HTTP/1.0), so no handler outlives its request.
"""

from __future__ import annotations

import http.client
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["Ec2Proxy", "Seen"]


@dataclass(frozen=True)
class Seen:
    action: str
    client_token: str | None
    #: "moto" (forwarded and answered), "replayed" (the token's kept answer), "lost" (forwarded, answer held)
    #: or "silent" (held, never forwarded)
    outcome: str


class Ec2Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, *, hold_s: float = 10.0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.hold_s = hold_s
        self.lock = threading.Lock()
        self.seen: list[Seen] = []
        self._tokens: dict[str, tuple[int, bytes, str]] = {}
        self._lose = 0
        self._silent = False
        self._closing = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def lose_run_instances(self, times: int = 1) -> None:
        with self.lock:
            self._lose += times

    def go_silent(self) -> None:
        with self.lock:
            self._silent = True

    def heal(self) -> None:
        with self.lock:
            self._silent = False
            self._lose = 0

    def _hold(self, *, while_silent: bool) -> None:
        """Keep a request unanswered: ``hold_s``, until shutdown, and (``while_silent``) until healed."""
        waited = 0.0
        while waited < self.hold_s and not self._closing.wait(0.05):
            waited += 0.05
            if while_silent:
                with self.lock:
                    if not self._silent:
                        return

    def calls(self, action: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.action == action]

    def server_close(self) -> None:
        self._closing.set()  # held requests end now
        super().server_close()


class _Handler(BaseHTTPRequestHandler):
    server: Ec2Proxy
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        params = {key: values[0] for key, values in parse_qs(raw.decode(), keep_blank_values=True).items()}
        action = params.get("Action", "")
        token = params.get("ClientToken") if action == "RunInstances" else None
        proxy = self.server
        with proxy.lock:
            silent = proxy._silent
            kept = proxy._tokens.get(token) if token else None
            lose = not silent and action == "RunInstances" and proxy._lose > 0
            if lose:
                proxy._lose -= 1
            outcome = "silent" if silent else "lost" if lose else "replayed" if kept else "moto"
            proxy.seen.append(Seen(action, token, outcome))
        if silent:
            proxy._hold(while_silent=True)
            self.close_connection = True
            return
        reply = kept if kept is not None else self._forward(raw)
        if token and kept is None and reply[0] == 200:
            with proxy.lock:
                proxy._tokens.setdefault(token, reply)  # EC2: the same token answers the same instance
        if lose:
            proxy._hold(while_silent=False)  # the instance exists; the client never hears of it
            self.close_connection = True
            return
        self._send(*reply)

    def _forward(self, raw: bytes) -> tuple[int, bytes, str]:
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=20)
        try:
            upstream.request("POST", self.path, body=raw, headers=headers)
            answer = upstream.getresponse()
            return answer.status, answer.read(), answer.getheader("Content-Type", "text/xml")
        finally:
            upstream.close()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
