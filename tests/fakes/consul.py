"""A small, faithful stand-in for Consul's KV HTTP API, for the real ``consul.Consul`` client.

There is no Consul binary in CI, and patching the client would test our
assumptions about Consul instead of Consul's documented behaviour. So this
serves the endpoints the control plane uses on 127.0.0.1, over real HTTP/1.1,
following Consul's HTTP handlers (``agent/kvs_endpoint.go``), its KV state
store (``agent/consul/state/kvs.go``) and its blocking queries
(``agent/blockingquery``):

* ``GET /v1/kv/<key>`` with ``?recurse``, ``?keys`` (+ ``?separator=``),
  ``?raw``; 404 with an empty body when nothing matches; ``X-Consul-Index``,
  ``X-Consul-KnownLeader`` and ``X-Consul-LastContact`` on every read.
* Blocking reads: ``?index=N&wait=D`` answer once the read's index is above
  ``N`` or the wait ends. The index of a read is the key's ``ModifyIndex``;
  for a missing key the KV table's last index; for a listing the highest
  ``ModifyIndex`` or tombstone under the prefix. As in Consul, a read of a
  missing key or a prefix can wake up for writes elsewhere (the index moved
  but the answer did not change): clients must compare, not assume.
* ``PUT`` with ``?flags=`` and ``?cas=``; ``DELETE`` with ``?recurse`` and
  ``?cas=``; one Raft-like index that every write consumes, even a refused
  CAS or an unchanged value (so indexes have gaps, as in Consul).
* ``GET /v1/status/leader`` and ``/v1/status/peers`` for health checks.

Deliberate differences, all documented on :class:`FakeConsul`: the longest
blocking wait is ``max_wait_s`` (10 s) instead of Consul's 10 minutes; there
are no sessions (``?acquire=`` fails as with an unknown session), no ACLs
(tokens are recorded, never checked), one datacenter, tombstones are never
reaped, and no ``/v1/txn``.
"""

from __future__ import annotations

import base64
import json
import random
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from tests.fakes.loopback import LoopbackFake, TrackedHTTPServer

__all__ = [
    "DEFAULT_WAIT_S",
    "FAKE_MAX_WAIT_S",
    "KV_MAX_VALUE_SIZE",
    "LEADER",
    "MAX_WAIT_S",
    "NO_LEADER",
    "FakeConsul",
    "KVEntry",
    "RecordedRequest",
    "parse_go_duration",
]

#: Consul's wait for a blocking query that names none, and its ceiling (``default_query_time``, ``max_query_time``)
DEFAULT_WAIT_S = 300.0
MAX_WAIT_S = 600.0
#: the fake's own ceiling: a test that forgets ``wait`` must not hang for 5 minutes
FAKE_MAX_WAIT_S = 10.0
#: Consul adds up to wait/16 of random jitter to a blocking query (``JitterFraction``)
JITTER_FRACTION = 16
#: ``kv_max_value_size``: larger PUT bodies are refused with 413
KV_MAX_VALUE_SIZE = 512 * 1024
LEADER = "127.0.0.1:8300"
DATACENTER = "dc1"
#: what a Consul agent answers while the servers have lost quorum
NO_LEADER = "rpc error making call: No cluster leader"
#: a fresh cluster has committed some Raft entries (elections, node registration) before its first KV write
FIRST_RAFT_INDEX = 10

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
# longest unit names first, so "5ms" is read as milliseconds and not as minutes followed by garbage
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UINT64_MAX = 2**64 - 1

T = TypeVar("T")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration ("300ms", "5s", "1m30s"), as Consul parses ``?wait=``.

    Raises ValueError for what Go's ``time.ParseDuration`` refuses, such as a
    number without a unit ("5"); "0" alone is allowed, as in Go.
    """
    rest = text
    sign = 1.0
    if rest[:1] in ("+", "-"):
        sign = -1.0 if rest[0] == "-" else 1.0
        rest = rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f"invalid duration {text!r}")
    total, pos = 0.0, 0
    while pos < len(rest):
        match = _DURATION_PART.match(rest, pos)
        if match is None:
            raise ValueError(f"invalid duration {text!r}")
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        pos = match.end()
    return sign * total


def _parse_uint64(text: str) -> int:
    """Go's ``strconv.ParseUint(text, 10, 64)``; the ValueError carries Go's message."""
    if not text or not text.isascii() or not text.isdigit():
        raise ValueError(f"strconv.ParseUint: parsing {json.dumps(text)}: invalid syntax")
    value = int(text)
    if value > _UINT64_MAX:
        raise ValueError(f"strconv.ParseUint: parsing {json.dumps(text)}: value out of range")
    return value


@dataclass(frozen=True)
class KVEntry:
    """One stored key, as Consul's ``DirEntry``; ``value`` is None for an empty body, as in Consul."""

    key: str
    value: bytes | None
    flags: int
    create_index: int
    modify_index: int
    lock_index: int = 0
    session: str = ""

    def to_json(self) -> dict[str, Any]:
        """The entry as Consul's JSON encodes it (Go's encoding/json: bytes as base64, nil as null)."""
        encoded = None if self.value is None else base64.b64encode(self.value).decode("ascii")
        body: dict[str, Any] = {"LockIndex": self.lock_index, "Key": self.key, "Flags": self.flags, "Value": encoded}
        if self.session:
            body["Session"] = self.session
        body["CreateIndex"] = self.create_index
        body["ModifyIndex"] = self.modify_index
        return body

    def same_content(self, other: KVEntry) -> bool:
        """Consul's ``DirEntry.Equal``: a write that changes none of these keeps the old ModifyIndex."""
        return (
            self.key == other.key
            and self.flags == other.flags
            and (self.value or b"") == (other.value or b"")
            and self.lock_index == other.lock_index
            and self.session == other.session
        )


@dataclass(frozen=True)
class RecordedRequest:
    """What a client sent, for assertions about how it talks to Consul (not only what it got back)."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    token: str | None
    body: bytes


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    query: Mapping[str, list[str]]
    body: bytes
    content_length: int


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, value: Any, headers: Mapping[str, str] | None = None) -> _Reply:
        return cls(
            status,
            json.dumps(value, separators=(",", ":")).encode(),
            {"Content-Type": "application/json", **(headers or {})},
        )

    @classmethod
    def text(cls, status: int, message: str, headers: Mapping[str, str] | None = None) -> _Reply:
        return cls(status, message.encode(), {"Content-Type": "text/plain; charset=utf-8", **(headers or {})})


class _Stopping(Exception):
    """The server is going away: drop the connection without an answer, as a dying agent does."""


class _KVStore:
    """Consul's KV state store: entries, tombstones and indexes, under one condition variable.

    Every change notifies the condition, and a blocking read re-runs its query
    after each notification until its index passes the client's, as
    ``blockingquery.Query`` does with memdb watch channels.
    """

    def __init__(self, first_raft_index: int) -> None:
        self._cond = threading.Condition()
        self._first_raft_index = first_raft_index
        self._entries: dict[str, KVEntry] = {}
        self._tombstones: dict[str, int] = {}  # key or deleted prefix -> index of the delete
        self._raft_index = first_raft_index
        self._table_index = 0  # last index at which the kvs or tombstones tables changed
        self._epoch = 0  # bumped by wipe(): like a snapshot restore, it ends every blocking query
        self._closed = False

    # ---- lifecycle -------------------------------------------------------------

    def open(self) -> None:
        with self._cond:
            self._closed = False

    def close(self) -> None:
        """Wake every blocked read so that it drops its connection instead of answering."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wipe(self) -> None:
        with self._cond:
            self._entries.clear()
            self._tombstones.clear()
            self._raft_index = self._first_raft_index
            self._table_index = 0
            self._epoch += 1
            self._cond.notify_all()

    # ---- reads: read_* run inside blocking(), with the condition held ---------

    def read_key(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self._entries.get(key)
        if entry is not None:
            return entry.modify_index, entry
        return max(self._table_index, 1), None

    def read_prefix(self, prefix: str) -> tuple[int, list[KVEntry]]:
        entries = [self._entries[key] for key in sorted(self._entries) if key.startswith(prefix)]
        return self._list_index(prefix, entries), entries

    def read_keys(self, prefix: str, separator: str) -> tuple[int, list[str]]:
        index, entries = self.read_prefix(prefix)
        names: list[str] = []
        for entry in entries:
            name = entry.key
            if separator:
                cut = name.find(separator, len(prefix))
                if cut >= 0:
                    name = name[: cut + len(separator)]
            if not names or names[-1] != name:  # sorted, so the same folder comes in one run
                names.append(name)
        return index, names

    def _list_index(self, prefix: str, entries: list[KVEntry]) -> int:
        # kvsListTxn: the newest entry or tombstone under the prefix; the whole table for "" or when there is none
        index = max((entry.modify_index for entry in entries), default=0)
        if prefix:
            stones = (at for key, at in self._tombstones.items() if key.startswith(prefix))
            index = max(index, max(stones, default=0))
        else:
            index = self._table_index
        return max(index or self._table_index, 1)

    def blocking(self, query: Callable[[], tuple[int, T]], *, min_index: int, timeout_s: float) -> tuple[int, T]:
        """Run ``query`` until its index passes ``min_index`` or ``timeout_s`` ends; ``min_index`` 0 never blocks."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            epoch = self._epoch
            while True:
                if self._closed:
                    raise _Stopping
                index, result = query()
                remaining = deadline - time.monotonic()
                if min_index == 0 or index > min_index or epoch != self._epoch or remaining <= 0:
                    return index, result
                self._cond.wait(remaining)

    def snapshot(self, key: str) -> KVEntry | None:
        with self._cond:
            return self._entries.get(key)

    def current_index(self) -> int:
        with self._cond:
            return self._table_index

    # ---- writes ----------------------------------------------------------------

    def put(self, key: str, value: bytes | None, *, flags: int, cas: int | None) -> bool:
        """``KVS.Apply`` for set and CAS; every call consumes a Raft index, as it is one Raft entry."""
        with self._cond:
            index = self._next_raft_index()
            existing = self._entries.get(key)
            if cas is not None:
                if cas == 0 and existing is not None:
                    return False
                if cas != 0 and (existing is None or existing.modify_index != cas):
                    return False
            entry = KVEntry(
                key=key,
                value=value or None,  # Go's bytes.Buffer.Bytes() of an empty body is nil: JSON null
                flags=flags,
                create_index=existing.create_index if existing else index,
                modify_index=index,
                lock_index=existing.lock_index if existing else 0,
                session=existing.session if existing else "",
            )
            if existing is not None and existing.same_content(entry):
                return True  # Consul skips the write: ModifyIndex and blocked readers stay as they are
            self._entries[key] = entry
            self._changed(index)
            return True

    def delete(self, key: str, *, cas: int | None) -> bool:
        with self._cond:
            index = self._next_raft_index()
            existing = self._entries.get(key)
            if existing is None:
                return True  # nothing to delete; a CAS delete of a missing key also answers true in Consul
            if cas is not None and existing.modify_index != cas:
                return False
            del self._entries[key]
            self._tombstones[key] = index
            self._changed(index)
            return True

    def delete_tree(self, prefix: str) -> bool:
        with self._cond:
            index = self._next_raft_index()
            doomed = [key for key in self._entries if key.startswith(prefix)]
            if not doomed:
                return True
            for key in doomed:
                del self._entries[key]
            if prefix:  # one tombstone for the prefix; deleting everything falls back to the table index
                self._tombstones[prefix] = index
            self._changed(index)
            return True

    def refuse(self) -> None:
        """A write that Raft applied but that changed nothing (e.g. a lock release by a non-holder)."""
        with self._cond:
            self._next_raft_index()

    def _next_raft_index(self) -> int:
        self._raft_index += 1
        return self._raft_index

    def _changed(self, index: int) -> None:
        self._table_index = index
        self._cond.notify_all()


class _ConsulApi:
    """Consul's HTTP handlers over a :class:`_KVStore`: parameters, status codes, headers."""

    def __init__(self, store: _KVStore, *, max_wait_s: float, jitter: bool) -> None:
        self.store = store
        self.max_wait_s = max_wait_s
        self.jitter = jitter

    def handle(self, request: _Request) -> _Reply:
        if request.path.startswith("/v1/kv/"):
            return self._kv(request, request.path[len("/v1/kv/") :])
        if request.path in ("/v1/status/leader", "/v1/status/peers"):
            if request.method != "GET":
                return self._not_allowed(request.method, "GET")
            return _Reply.json(200, LEADER if request.path.endswith("leader") else [LEADER])
        return _Reply(404)  # Consul's index handler: 404, empty body

    def _kv(self, request: _Request, key: str) -> _Reply:
        query = request.query
        dc = _first(query, "dc")
        if dc and dc != DATACENTER:
            return _Reply.text(500, "No path to datacenter")
        if "stale" in query and "consistent" in query:
            return _Reply.text(400, "Cannot specify ?stale with ?consistent, conflicting semantics.")
        try:
            wait_s = self._wait(query)
            min_index = _parse_uint64(_first(query, "index")) if _first(query, "index") else 0
        except _BadRequest as exc:
            return _Reply.text(400, str(exc))
        except ValueError:
            return _Reply.text(400, "Invalid index")
        try:
            if request.method == "GET":
                if "keys" in query:
                    return self._get_keys(query, key, min_index=min_index, wait_s=wait_s)
                return self._get(query, key, min_index=min_index, wait_s=wait_s)
            if request.method == "PUT":
                return self._put(request, key)
            if request.method == "DELETE":
                return self._delete(query, key)
        except ValueError as exc:  # flags or cas that strconv refuses: Consul returns the error as a 500
            return _Reply.text(500, str(exc))
        return self._not_allowed(request.method, "GET,PUT,DELETE")

    def _wait(self, query: Mapping[str, list[str]]) -> float:
        text = _first(query, "wait")
        try:
            wait_s = parse_go_duration(text) if text else 0.0
        except ValueError:
            raise _BadRequest("Invalid wait time") from None
        # RPCQueryTimeout: none or negative -> the default; capped; then jitter of up to 1/16
        wait_s = DEFAULT_WAIT_S if wait_s <= 0 else min(wait_s, MAX_WAIT_S)
        wait_s = min(wait_s, self.max_wait_s)
        if self.jitter:
            wait_s += random.uniform(0, wait_s / JITTER_FRACTION)
        return wait_s

    def _get(self, query: Mapping[str, list[str]], key: str, *, min_index: int, wait_s: float) -> _Reply:
        recurse = "recurse" in query
        if not recurse and not key:
            return _Reply.text(400, "Missing key name")

        def read() -> tuple[int, list[KVEntry]]:
            if recurse:
                return self.store.read_prefix(key)
            index, entry = self.store.read_key(key)
            return index, [] if entry is None else [entry]

        index, entries = self.store.blocking(read, min_index=min_index, timeout_s=wait_s)
        meta = _meta(index, query)
        if not entries:
            return _Reply(404, headers=meta)
        if "raw" in query and not recurse:
            headers = {**meta, "Content-Type": "text/plain", "X-Content-Type-Options": "nosniff"}
            return _Reply(200, entries[0].value or b"", {**headers, "Content-Security-Policy": "sandbox"})
        return _Reply.json(200, [entry.to_json() for entry in entries], meta)

    def _get_keys(self, query: Mapping[str, list[str]], prefix: str, *, min_index: int, wait_s: float) -> _Reply:
        # "seperator" is Consul's historic spelling, still accepted; "separator" wins when both are given
        separator = _first(query, "separator") if "separator" in query else _first(query, "seperator")
        index, names = self.store.blocking(
            lambda: self.store.read_keys(prefix, separator), min_index=min_index, timeout_s=wait_s
        )
        meta = _meta(index, query)
        if not names and prefix:  # no 404 for the root: an empty list
            return _Reply(404, headers=meta)
        return _Reply.json(200, names, meta)

    def _put(self, request: _Request, key: str) -> _Reply:
        query = request.query
        if not key:
            return _Reply.text(400, "Missing key name")
        conflict = _conflicting(query, "cas", "acquire", "release")
        if conflict is not None:
            return conflict
        flags = _parse_uint64(_first(query, "flags")) if "flags" in query else 0
        cas = _parse_uint64(_first(query, "cas")) if "cas" in query else None
        if request.content_length > KV_MAX_VALUE_SIZE:
            return _Reply.text(
                413,
                f"Request body({request.content_length} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes. "
                "See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.",
            )
        if "acquire" in query:  # no sessions exist here, so every lock names an unknown one
            return _Reply.text(500, f"invalid session {json.dumps(_first(query, 'acquire'))}")
        if "release" in query:  # nobody can hold a lock, so a release never applies
            self.store.refuse()
            return _Reply.json(200, False)
        done = self.store.put(key, request.body, flags=flags, cas=cas)
        return _Reply.json(200, done if cas is not None else True)

    def _delete(self, query: Mapping[str, list[str]], key: str) -> _Reply:
        conflict = _conflicting(query, "recurse", "cas")
        if conflict is not None:
            return conflict
        if "recurse" in query:
            return _Reply.json(200, self.store.delete_tree(key))
        if not key:
            return _Reply.text(400, "Missing key name")
        cas = _parse_uint64(_first(query, "cas")) if "cas" in query else None
        done = self.store.delete(key, cas=cas)
        return _Reply.json(200, done if cas is not None else True)

    @staticmethod
    def _not_allowed(method: str, allow: str) -> _Reply:
        return _Reply.text(405, f"method {method} not allowed", {"Allow": allow})


class _BadRequest(Exception):
    pass


def _first(query: Mapping[str, list[str]], name: str) -> str:
    """Go's ``url.Values.Get``: the first value, "" when absent."""
    values = query.get(name)
    return values[0] if values else ""


def _conflicting(query: Mapping[str, list[str]], *names: str) -> _Reply | None:
    if sum(name in query for name in names) < 2:
        return None
    encoded = urlencode(sorted((name, value) for name, values in query.items() for value in values))
    return _Reply.text(400, f"Conflicting flags: {encoded}\n")


def _meta(index: int, query: Mapping[str, list[str]]) -> dict[str, str]:
    """setMeta: the headers every read carries, so clients can long-poll and judge staleness."""
    consistency = "stale" if "stale" in query else "consistent" if "consistent" in query else "leader"
    return {
        "X-Consul-Index": str(index),
        "X-Consul-KnownLeader": "true",
        "X-Consul-LastContact": "0",
        "X-Consul-Effective-Consistency": consistency,
    }


@dataclass
class _Failure:
    status: int
    message: str
    remaining: int | None  # None: until heal()


class _Handler(BaseHTTPRequestHandler):
    """HTTP plumbing only: read the request, ask the fake, write the reply (keep-alive, as Consul's Go server)."""

    protocol_version = "HTTP/1.1"
    server: TrackedHTTPServer
    timeout = 30  # an idle keep-alive connection does not hold a thread forever

    def setup(self) -> None:
        super().setup()
        # as Go's servers do: without it, headers then body as two small writes meet the client's
        # delayed ACK and every request takes 40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:  # Consul answers 405 on the KV path; the fake must say so too
        self._dispatch()

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        # read even a body that will be refused (413): closing on unread data would reset the
        # connection before the client sees the answer, which is a flaky test, not Consul
        body = self._read_body(int(self.headers.get("Content-Length") or 0))
        request = _Request(
            method=self.command,
            path=unquote(split.path),
            query=parse_qs(split.query, keep_blank_values=True),
            body=body,
            content_length=len(body),
        )
        try:
            reply = self.server.fake._answer(request, token=self._token(request.query))
        except _Stopping:
            self.close_connection = True
            return
        self._send(reply)

    def _read_body(self, content_length: int) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return b"".join(self._chunks())
        return self.rfile.read(content_length) if content_length else b""

    def _chunks(self) -> Iterator[bytes]:
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            yield self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass

    def _token(self, query: Mapping[str, list[str]]) -> str | None:
        bearer = self.headers.get("Authorization", "")
        if self.headers.get("X-Consul-Token"):
            return self.headers["X-Consul-Token"]
        if bearer.startswith("Bearer "):
            return bearer[len("Bearer ") :]
        return _first(query, "token") or None

    def _send(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # tests read fake.requests; access logs would only bury pytest's output


class FakeConsul(LoopbackFake):
    """Consul's KV API on 127.0.0.1 for tests; KV data survives ``stop()``/``start()`` to model an outage.

    ``FakeConsul(port=0)`` picks a free port on the first ``start()`` and keeps
    it, so ``stop()`` then ``start()`` is "Consul went away and came back" at
    the same address with the same data. ``fail()`` makes it answer errors
    while still listening, as an agent does when the servers lose quorum.

    Differences from Consul, on purpose: blocking reads wait at most
    ``max_wait_s`` (default 10 s; Consul: 10 min, and 5 min when no ``wait``
    is given); Consul's random extra wait of up to 1/16 is off unless
    ``jitter=True``; no sessions, locks, ACLs, ``/v1/txn``, namespaces or
    other datacenters (``?dc=`` other than "dc1" fails as in Consul);
    tombstones are never reaped; keys are not validated.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        max_wait_s: float = FAKE_MAX_WAIT_S,
        jitter: bool = False,
        first_raft_index: int = FIRST_RAFT_INDEX,
    ) -> None:
        super().__init__(port)
        self._store = _KVStore(first_raft_index)
        self._api = _ConsulApi(self._store, max_wait_s=max_wait_s, jitter=jitter)
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._failure: _Failure | None = None

    # ---- lifecycle -------------------------------------------------------------

    thread_name = "fake-consul"

    def _new_server(self, port: int) -> TrackedHTTPServer:
        return TrackedHTTPServer(port, self, _Handler)

    def _on_start(self) -> None:
        self._store.open()

    def _on_stop(self) -> None:
        # blocked long-polls fail at once, as with a dead agent
        self._store.close()

    @property
    def address(self) -> str:
        """``host:port``, the form of ``CONSUL_HTTP_ADDR``."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    # ---- faults ----------------------------------------------------------------

    def fail(self, *, status: int = 500, message: str = NO_LEADER, times: int | None = None) -> None:
        """Answer the next ``times`` requests (every request until ``heal()`` if None) with this error."""
        if times is not None and times < 1:
            raise ValueError("times must be at least 1 (or None for every request until heal())")
        with self._lock:
            self._failure = _Failure(status, message, times)

    def heal(self) -> None:
        with self._lock:
            self._failure = None

    def wipe(self) -> None:
        """Lose every key and restart the index, as a cluster rebuilt from nothing; blocked reads answer at once."""
        self._store.wipe()

    # ---- direct access, for arranging and checking tests -----------------------

    def seed(self, key: str, value: bytes | None, *, flags: int = 0) -> int:
        """Write a key as a client's PUT would (waking watchers); returns its ModifyIndex."""
        self._store.put(key, value, flags=flags, cas=None)
        entry = self._store.snapshot(key)
        assert entry is not None
        return entry.modify_index

    def entry(self, key: str) -> KVEntry | None:
        return self._store.snapshot(key)

    @property
    def index(self) -> int:
        """The KV table's last index: what a read of a missing key reports (at least 1)."""
        return self._store.current_index()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # ---- called by the handler threads -----------------------------------------

    def _answer(self, request: _Request, *, token: str | None) -> _Reply:
        with self._lock:
            self._requests.append(RecordedRequest(request.method, request.path, request.query, token, request.body))
            failure = self._take_failure()
        if failure is not None:
            return _Reply.text(failure.status, failure.message)
        return self._api.handle(request)

    def _take_failure(self) -> _Failure | None:
        failure = self._failure
        if failure is None or failure.remaining is None:
            return failure
        failure.remaining -= 1
        if failure.remaining <= 0:
            self._failure = None
        return failure
