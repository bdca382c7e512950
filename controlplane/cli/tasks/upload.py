"""``fusionctl submit``'s resumable uploads: a small tus 1.0.0 client over the CLI's own httpx client.

A local file goes up in chunks (:data:`CHUNK_BYTES`), each with its sha256
in ``Upload-Checksum``, the whole file's sha256 in ``Upload-Metadata``, and
a progress bar on stderr. The upload's URL is kept in
``$XDG_STATE_HOME/fusionplane/uploads.json`` (default
``~/.local/state/...``) under the server, the file's real path, its size and
its modification time, so running the same command again after an
interruption asks the server where it got to (HEAD) and sends only the
rest; the entry is deleted once the upload is complete. A broken connection
in the middle is retried a few times with backoff, each time from the
offset HEAD gives.

Why not tuspy: it talks through ``requests`` (or aiohttp) and TinyDB, a second
HTTP stack beside the CLI's httpx client with its own errors and retries, and
its checksums and fingerprints are not the sha256 and the (path, size,
mtime, server) key this needs; the protocol side is a few requests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import httpx

from controlplane.cli.client import ApiClient
from controlplane.config import ClientSettings

__all__ = ["CHUNK_BYTES", "RETRIES", "LocalFile", "UploadBook", "upload_resumable"]

CHUNK_BYTES = 8 << 20
#: tries after a broken connection before giving up (the state file keeps the upload for the next run)
RETRIES = 4
_TUS = {"Tus-Resumable": "1.0.0"}
_URI_HEADER = "FusionPlane-Upload-URI"
_CHECKSUM_MISMATCH = 460


class UploadInterrupted(click.ClickException):
    """The connection kept breaking; running the same command again resumes."""

    exit_code = 3


@dataclass(frozen=True, kw_only=True)
class LocalFile:
    """A file as the resume key sees it: change any of these and it is a new upload."""

    path: Path
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> LocalFile:
        real = path.resolve()
        stat = real.stat()
        return cls(path=real, size=stat.st_size, mtime_ns=stat.st_mtime_ns)

    def key(self, server: str) -> str:
        return json.dumps([server, str(self.path), self.size, self.mtime_ns])


class UploadBook:
    """``uploads.json``: resume key -> the upload's URL, for uploads not yet complete."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or ClientSettings.from_env().state_home / "fusionplane" / "uploads.json"

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}  # a damaged book only costs a fresh upload
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _write(self, entries: dict[str, str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(entries, handle, indent=1)
        os.replace(tmp, self.path)

    def get(self, key: str) -> str | None:
        return self._read().get(key)

    def put(self, key: str, location: str) -> None:
        self._write({**self._read(), key: location})

    def forget(self, key: str) -> None:
        entries = self._read()
        if entries.pop(key, None) is not None:
            self._write(entries)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Session:
    """One file's upload: create or find it, then PATCH chunks until the server has every byte."""

    def __init__(self, client: ApiClient, local: LocalFile, *, name: str, book: UploadBook, chunk_bytes: int) -> None:
        self.client, self.local, self.name, self.book, self.chunk_bytes = client, local, name, book, chunk_bytes
        self.key = local.key(client.url)
        self.location: str | None = book.get(self.key)
        self.uri: str | None = None

    def _check(self, response: httpx.Response, *expected: int) -> httpx.Response:
        if response.status_code not in expected:
            self.client.fail(response)
        return response

    def create(self) -> None:
        metadata = f"filename {_b64(self.name.encode())},sha256 {_b64(_sha256(self.local.path).encode())}"
        response = self.client.send(
            "POST",
            "/v1/uploads/",
            headers={**_TUS, "Upload-Length": str(self.local.size), "Upload-Metadata": metadata},
        )
        self.location = self._check(response, 201).headers["location"]
        self.book.put(self.key, self.location)

    def offset(self) -> int | None:
        """Where the server is (HEAD); None when it no longer knows the upload (expired, deleted)."""
        assert self.location is not None
        response = self.client.send("HEAD", self.location, headers=_TUS)
        if response.status_code in (404, 410):
            self.book.forget(self.key)
            self.location = None
            return None
        self._check(response, 200)
        self.uri = response.headers.get(_URI_HEADER)
        return int(response.headers["upload-offset"])

    def patch(self, offset: int, handle: Any) -> int:
        """Send the chunk at ``offset``; the server's new offset (a refused chunk checksum: the same offset)."""
        assert self.location is not None
        handle.seek(offset)
        chunk = handle.read(self.chunk_bytes)
        response = self.client.send(
            "PATCH",
            self.location,
            content=chunk,
            headers={
                **_TUS,
                "Content-Type": "application/offset+octet-stream",
                "Upload-Offset": str(offset),
                "Upload-Checksum": f"sha256 {_b64(hashlib.sha256(chunk).digest())}",
            },
        )
        if response.status_code == _CHECKSUM_MISMATCH and response.json()["error"]["field"] == "Upload-Checksum":
            return offset  # damaged on the way: the server dropped it, send it again
        if response.status_code == 409:
            return int(response.headers["upload-offset"])
        if response.status_code != 204:
            if response.status_code == _CHECKSUM_MISMATCH:
                self.book.forget(self.key)  # the server deleted it: the file changed while it went up
            self._check(response, 204)
        self.uri = response.headers.get(_URI_HEADER)
        return int(response.headers["upload-offset"])


def upload_resumable(
    client: ApiClient,
    path: Path,
    *,
    name: str,
    book: UploadBook | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    retries: int = RETRIES,
    backoff_s: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Upload ``path`` (resuming an earlier, interrupted upload of the same file) and return its URI."""
    local = LocalFile.of(path)
    session = _Session(client, local, name=name, book=book or UploadBook(), chunk_bytes=chunk_bytes)
    failures = 0
    offset: int | None = None
    while True:
        try:
            offset = _run(session, local, offset)
            break
        except httpx.TransportError as exc:
            failures += 1
            if failures > retries:
                raise UploadInterrupted(
                    f"uploading {path} failed {failures} times ({exc}); run the same command again to resume"
                ) from exc
            delay = backoff_s * 2 ** (failures - 1)
            click.echo(f"connection lost ({exc}); retrying in {delay:g} s", err=True)
            sleep(delay)
            offset = None  # ask the server again: part of the last chunk may or may not have landed
    session.book.forget(session.key)
    assert session.uri is not None, "the server answered the last chunk without the file's URI"
    return session.uri


def _run(session: _Session, local: LocalFile, offset: int | None) -> int:
    """Create or find the upload, then send what the server lacks; the final offset."""
    if offset is None and session.location is not None:
        offset = session.offset()
        if offset:
            click.echo(f"resuming {local.path.name} at {offset} of {local.size} bytes", err=True)
    if session.location is None:
        session.create()
        offset = 0
    assert offset is not None
    label = f"uploading {local.path.name}"
    with (
        local.path.open("rb") as handle,
        click.progressbar(length=local.size, label=label, file=sys.stderr, show_pos=True) as bar,
    ):
        bar.update(offset)
        while offset < local.size:
            new = session.patch(offset, handle)
            bar.update(max(0, new - offset))
            offset = new
        if session.uri is None:
            # every byte is in (now or in an earlier run) and the answer naming the file was lost:
            # HEAD names it; if the server never finished it, an empty PATCH at the full offset does
            session.offset()
            if session.uri is None:
                session.patch(offset, handle)
    return offset
