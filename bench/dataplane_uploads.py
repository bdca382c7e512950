"""Uploads for ``bench.dataplane``: the project's tus client against the real API on 127.0.0.1.

One ``bench.api_server`` process (uvicorn, SQLite, a submitter token) serves
every run; each run sends the same file three ways (``bench.dataplane``
rotates which goes first):

* **plain PUT** (the baseline): ``PUT /v1/uploads/{filename}``, the whole
  file as one streamed request body, written to disk as it arrives;
* **tus**: ``upload_resumable`` (controlplane/cli/tasks/upload.py) as
  ``fusionctl submit`` runs it: the file's sha256 first, then 8 MiB PATCHes,
  each with its own sha256, which the server checks and fsyncs before it
  moves the offset, and the whole file's sha256 checked at the end;
* **tus, cut at half**: the same, except that the PATCH whose chunk holds the
  file's middle byte is broken halfway through its body (the client sends
  the headers and half the chunk, then closes the socket). What follows is
  the client's own recovery: ``httpx.WriteError``, its back-off, HEAD for the
  server's offset, PATCHes from there.

The server's peak resident memory is read per upload (``VmHWM``, reset before
each): an upload that streams holds a few MiB, one that buffers holds the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench.api import api_server
from bench.memory import peak_rss, reset_peak, rss
from controlplane.cli.client import ApiClient
from controlplane.cli.tasks.upload import CHUNK_BYTES, UploadBook, upload_resumable

__all__ = ["UploadRun", "UploadServer", "upload_server"]

#: the name every upload gets on the server (one at a time, each deleted after)
_NAME = "bench.bin"
_HASH_BLOCK = 8 << 20


@dataclass(frozen=True, kw_only=True)
class UploadRun:
    """One upload as measured: wall time, what went over the wire, what the server held."""

    kind: str
    seconds: float
    size: int
    #: request body bytes the client sent, every try included
    sent: int
    #: the server's resident bytes before the upload, and its peak during it
    server_rss: int
    server_peak: int
    #: the finished file on the server hashes to the source's sha256 (checked by the bench after the clock stops)
    verified: bool
    #: tus: until the first PATCH left (the client hashing the whole file, then POST)
    before_first_patch_s: float = 0.0
    #: tus: the PATCH round trips but the last, and the last (where the server hashes the whole file)
    patches_s: float = 0.0
    last_patch_s: float = 0.0
    #: the client's back-off after the cut (slept, not counted in ``seconds``)
    backoff_s: float = 0.0
    #: cut runs: the broken PATCH's bytes, the offset HEAD gave, and the time from that HEAD to the end
    lost: int = 0
    resumed_from: int = 0
    resume_s: float = 0.0

    @property
    def resent(self) -> int:
        return self.sent - self.size


@dataclass
class _Exchange:
    method: str
    started: float
    ended: float
    sent: int
    #: ``Upload-Offset`` of the answer (HEAD, PATCH); None for the broken PATCH
    offset: int | None


class _BenchClient(ApiClient):
    """The CLI's client, noting every exchange; with ``cut_at``, the PATCH whose chunk holds that byte is broken.

    The break is real: the request goes out on its own socket with the full
    ``Content-Length``, half the chunk follows, and the socket is closed, so
    the server sees a client that went away mid-body.
    """

    def __init__(self, url: str, token: str, *, cut_at: int | None) -> None:
        super().__init__(url, token)
        self._token, self._cut_at = token, cut_at
        self.exchanges: list[_Exchange] = []

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        started = time.perf_counter()
        body = kwargs.get("content")
        sent = len(body) if isinstance(body, bytes) else 0
        if method == "PATCH" and isinstance(body, bytes) and self._cuts(kwargs["headers"], len(body)):
            self._cut_at = None
            sent = self._hang_up(path, body, kwargs["headers"])
            self.exchanges.append(_Exchange(method, started, time.perf_counter(), sent, None))
            raise httpx.WriteError("bench.dataplane: connection broken halfway through the chunk")
        response = super().send(method, path, **kwargs)
        offset = response.headers.get("upload-offset")
        ended = time.perf_counter()
        self.exchanges.append(_Exchange(method, started, ended, sent, None if offset is None else int(offset)))
        return response

    def _cuts(self, headers: dict[str, str], length: int) -> bool:
        offset = int(headers["Upload-Offset"])
        return self._cut_at is not None and offset <= self._cut_at < offset + length

    def _hang_up(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        """Send the PATCH's head and half its body on a new socket, then close it; the body bytes sent."""
        url = httpx.URL(self.url)
        lines = [f"PATCH {path} HTTP/1.1", f"Host: {url.host}:{url.port}", f"Authorization: Bearer {self._token}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        half = len(body) // 2
        with socket.create_connection((url.host, url.port or 80)) as sock:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
            sock.sendall(body[:half])
        return half


@dataclass
class UploadServer:
    """The API under test, the file to send, and where the server keeps uploads."""

    url: str
    token: str
    pid: int
    workdir: Path
    source: Path
    sha256: str
    _book: Path = field(init=False)

    def __post_init__(self) -> None:
        self._book = self.workdir / "client-state" / "uploads.json"

    def plain_put(self) -> UploadRun:
        """The baseline: the whole file as one streamed ``PUT`` body."""
        size = self.source.stat().st_size
        with self._server_memory() as memory, httpx.Client(base_url=self.url, timeout=600) as http:
            started = time.perf_counter()
            response = http.put(
                f"/v1/uploads/{_NAME}",
                content=_blocks(self.source),
                headers={"Authorization": f"Bearer {self.token}", "Content-Length": str(size)},
            )
            seconds = time.perf_counter() - started
        if response.status_code != 201:
            raise RuntimeError(f"plain PUT answered {response.status_code}: {response.text[:300]}")
        return UploadRun(
            kind="put",
            seconds=seconds,
            size=size,
            sent=size,
            **memory,
            verified=self._verify_and_remove(Path(response.json()["uri"])),
        )

    def tus(self, *, cut: bool) -> UploadRun:
        """``upload_resumable`` as the CLI runs it; with ``cut``, the PATCH at the file's middle is broken."""
        size = self.source.stat().st_size
        client = _BenchClient(self.url, self.token, cut_at=size // 2 if cut else None)
        slept: list[float] = []
        try:
            with self._server_memory() as memory:
                started = time.perf_counter()
                uri = upload_resumable(
                    client, self.source, name=_NAME, book=UploadBook(self._book), sleep=_sleeper(slept)
                )
                ended = time.perf_counter()
        finally:
            client.close()
        patches = [e for e in client.exchanges if e.method == "PATCH"]
        run = UploadRun(
            kind="tus_cut" if cut else "tus",
            seconds=ended - started - sum(slept),
            size=size,
            sent=sum(e.sent for e in patches),
            **memory,
            verified=self._verify_and_remove(Path(uri)),
            before_first_patch_s=patches[0].started - started,
            patches_s=sum(e.ended - e.started for e in patches[:-1]),
            last_patch_s=patches[-1].ended - patches[-1].started,
            backoff_s=sum(slept),
        )
        return _with_resume(run, client.exchanges, ended) if cut else run

    @contextlib.contextmanager
    def _server_memory(self) -> Iterator[dict[str, int]]:
        measured: dict[str, int] = {}
        before = rss(self.pid)
        reset_peak(self.pid)
        yield measured
        measured.update(server_rss=before, server_peak=peak_rss(self.pid))

    def _verify_and_remove(self, final: Path) -> bool:
        """The server's file hashes to the source's sha256; then its upload folder is deleted (quota, disk)."""
        if not final.resolve().is_relative_to(self.workdir.resolve()):
            raise RuntimeError(f"the server named a file outside its folder: {final}")
        verified = _sha256(final) == self.sha256
        shutil.rmtree(final.parent)
        return verified


def _with_resume(run: UploadRun, exchanges: list[_Exchange], ended: float) -> UploadRun:
    """The cut run's resume: the broken PATCH's bytes, and the first HEAD after it (offset, time to the end)."""
    cut = next(i for i, e in enumerate(exchanges) if e.method == "PATCH" and e.offset is None)
    head = next(e for e in exchanges[cut:] if e.method == "HEAD")
    assert head.offset is not None
    return replace(run, lost=exchanges[cut].sent, resumed_from=head.offset, resume_s=ended - head.started)


def _sleeper(slept: list[float]) -> Callable[[float], None]:
    """The client's back-off, really slept (the server is rolling the broken chunk back meanwhile), and noted."""

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        time.sleep(seconds)

    return sleep


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            yield block


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def upload_server(workdir: Path, *, source: Path, sha256: str) -> Iterator[UploadServer]:
    """The API server (``bench.api.api_server``, SQLite under ``workdir``), stopped by PID on leaving."""
    with api_server(f"sqlite:///{workdir / 'plane.db'}", workdir) as api:
        yield UploadServer(
            url=f"http://127.0.0.1:{api.port}",
            token=api.token,
            pid=api.pid,
            workdir=workdir,
            source=source,
            sha256=sha256,
        )
