"""A TCP relay on 127.0.0.1 in front of a real test server, that can go silent at any moment.

Timeout tests need a backend that *keeps its state* (the Job, the VM, the
Consul key stay where they were) while it stops answering, and that answers
again afterwards. :class:`TcpFaultRelay` relays bytes both ways between its
clients and the upstream server, so any protocol works through it (HTTP,
Kubernetes' API, ARM over TLS), and offers three faults:

- :meth:`TcpFaultRelay.go_silent`: from now on nothing reaches a client. New
  connections are accepted and never answered; on connections already open
  (a client's keep-alive pool, a Consul blocking query in flight) whatever
  the server sends is dropped. The client sees a read timeout, never a
  refused or reset connection.
- :meth:`TcpFaultRelay.lose_answers`: the next request whose bytes contain a
  marker (``b"POST /apis/batch/v1/"``) is delivered to the server, and its
  answer is dropped: the request took effect, the client cannot know it.
  Plain-text protocols only (the marker is looked for in what the client
  sends).
- :meth:`TcpFaultRelay.heal`: new connections are relayed again. Connections
  that lost bytes stay silent (their framing is lost) unless
  ``reset_held=True`` closes them, as a network that recovers resets its
  stuck flows; either way the client opens a new one.

Everything runs on daemon threads whose socket waits are 0.1 s, and
:meth:`TcpFaultRelay.close` (or leaving the ``with`` block) closes every socket
and joins every thread.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

__all__ = ["TcpFaultRelay"]

_WAIT_S = 0.1
_CHUNK = 65536


@dataclass(eq=False)
class _Flow:
    """One client connection and, unless it was accepted while silent, its upstream connection."""

    client: socket.socket
    upstream: socket.socket | None
    #: bytes were dropped on this connection: it never relays again
    held: bool = False
    #: a request on it was delivered and its answer is being dropped: the server hears, the client does not
    deaf: bool = False
    threads: list[threading.Thread] = field(default_factory=list)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class TcpFaultRelay:
    """Relays 127.0.0.1:<port> to ``upstream_host:upstream_port``; see the module docstring."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(_WAIT_S)
        self.port = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._silent = False
        self._markers: list[bytes] = []
        self._flows: list[_Flow] = []
        #: connections accepted, and requests whose answer was dropped on purpose
        self.accepted = 0
        self.answers_lost = 0
        self._thread = threading.Thread(target=self._accept, name="tcp-fault-relay", daemon=True)

    # -- addresses -------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # -- faults ----------------------------------------------------------------------------------

    def go_silent(self) -> None:
        """Nothing reaches any client from now on (see the module docstring)."""
        with self._lock:
            self._silent = True

    def lose_answers(self, marker: bytes, *, times: int = 1) -> None:
        """Deliver the next ``times`` requests containing ``marker``, and drop their answers."""
        with self._lock:
            self._markers.extend([marker] * times)

    def heal(self, *, reset_held: bool = False) -> None:
        """Relay new connections again; with ``reset_held``, close the connections that lost bytes."""
        with self._lock:
            self._silent = False
            self._markers.clear()
            held = [flow for flow in self._flows if flow.held or flow.deaf] if reset_held else []
        for flow in held:
            flow.close()

    @property
    def silent(self) -> bool:
        with self._lock:
            return self._silent

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> TcpFaultRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            flows, self._flows = list(self._flows), []
        for flow in flows:
            flow.close()
        for flow in flows:
            for thread in flow.threads:
                thread.join(5)

    # -- relaying --------------------------------------------------------------------------------

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(_WAIT_S)
            with self._lock:
                self.accepted += 1
                silent = self._silent
            upstream: socket.socket | None = None
            if not silent:
                try:
                    upstream = socket.create_connection(self.upstream, timeout=2)
                except OSError:
                    client.close()  # the server itself is down: refused, as it would be without us
                    continue
                upstream.settimeout(_WAIT_S)
            flow = _Flow(client, upstream, held=silent)
            with self._lock:
                self._flows.append(flow)
            pumps = [threading.Thread(target=self._from_client, args=(flow,), name="tcp-fault-relay-c2u", daemon=True)]
            if upstream is not None:
                pumps.append(
                    threading.Thread(target=self._to_client, args=(flow,), name="tcp-fault-relay-u2c", daemon=True)
                )
            flow.threads.extend(pumps)
            for pump in pumps:
                pump.start()

    def _from_client(self, flow: _Flow) -> None:
        """Client -> server: relayed unless the connection is held; a marked request loses its answer."""
        while not self._stop.is_set():
            try:
                data = flow.client.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break  # the client hung up (it gave up waiting, or it is done)
            with self._lock:
                if self._silent:
                    flow.held = True
                marked = next((m for m in self._markers if m in data), None) if not (flow.held or flow.deaf) else None
                if marked is not None:
                    self._markers.remove(marked)
                    # delivered below (with the rest of it); whatever the server answers is dropped, so
                    # this is set before the server can have answered
                    flow.deaf = True
                    self.answers_lost += 1
            if flow.held or flow.upstream is None:
                continue  # swallowed: the server never hears of it
            try:
                flow.upstream.sendall(data)
            except OSError:
                break
        flow.close()

    def _to_client(self, flow: _Flow) -> None:
        """Server -> client: relayed unless the connection is held (or the proxy silent)."""
        assert flow.upstream is not None
        while not self._stop.is_set():
            try:
                data = flow.upstream.recv(_CHUNK)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                if flow.held or flow.deaf:
                    return  # the server closed; a silent connection stays open for the client to time out
                with contextlib.suppress(OSError):
                    flow.client.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                if self._silent:
                    flow.held = True
                dropped = flow.held or flow.deaf
            if dropped:
                continue
            try:
                flow.client.sendall(data)
            except OSError:
                break
        flow.close()
