"""A local file as an HTTP answer with byte ranges: 200, 206 or 416, streamed in chunks.

``file_response(request, path)`` answers a GET (or HEAD) for ``path``:

- no ``Range`` (or one we do not serve: another unit, bad syntax, several
  ranges): 200 with the whole file. RFC 9110 lets a server ignore a Range it
  does not serve, which keeps a client that asked for several ranges
  working, at the price of the whole file;
- ``Range: bytes=a-b``, ``bytes=a-`` or ``bytes=-n`` (the last n bytes): 206
  with ``Content-Range: bytes first-last/size``; a last byte past the end is
  taken as the end;
- a range that starts at or past the end (``bytes=-0`` too, and any range of
  an empty file): 416 with ``Content-Range: bytes */size``;
- ``If-Range`` with the file's ETag (or its exact Last-Modified date): the
  range is served; with anything else the file changed since the client's
  first part, so it gets the whole new file (200).

Every answer says ``Accept-Ranges: bytes`` and carries the ETag (inode,
size and modification time: it changes whenever the file is replaced or
rewritten) and Last-Modified. The body is read in chunks in the thread pool,
so a large output never sits in memory and never blocks the event loop.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

__all__ = ["CHUNK_BYTES", "ByteRange", "Unsatisfiable", "file_response", "parse_range"]

CHUNK_BYTES = 1 << 20
_SINGLE = re.compile(r"^bytes=(?:(\d+)-(\d*)|-(\d+))$")


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``first`` to ``last`` inclusive, as Content-Range counts them."""

    first: int
    last: int

    @property
    def length(self) -> int:
        return self.last - self.first + 1


class Unsatisfiable(Exception):
    """A well-formed range with no byte inside the file (416)."""


def parse_range(header: str | None, *, size: int) -> ByteRange | None:
    """The one byte range ``header`` asks of a ``size``-byte file; None to send it whole; :class:`Unsatisfiable`."""
    if header is None:
        return None
    match = _SINGLE.match(header.replace(" ", ""))
    if match is None:
        return None  # another unit, several ranges or bad syntax: ignored, the whole file
    first_text, last_text, suffix = match.groups()
    if suffix is not None:
        wanted = int(suffix)
        if wanted == 0 or size == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - wanted), size - 1)
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None  # not a valid range at all: ignored
    if first >= size:
        raise Unsatisfiable
    return ByteRange(first, min(int(last_text), size - 1) if last_text else size - 1)


def _etag(stat: os.stat_result) -> str:
    return f'"{stat.st_ino:x}-{stat.st_size:x}-{stat.st_mtime_ns:x}"'


def _still_current(if_range: str | None, *, etag: str, last_modified: str) -> bool:
    """If-Range: serve the range only if the client's validator is this file's (strong comparison)."""
    if if_range is None:
        return True
    value = if_range.strip()
    return value == etag if value.startswith('"') else value == last_modified


async def _chunks(path: Path, part: ByteRange, chunk_bytes: int) -> AsyncIterator[bytes]:
    handle = await run_in_threadpool(path.open, "rb")
    try:
        await run_in_threadpool(handle.seek, part.first)
        left = part.length
        while left > 0:
            block = await run_in_threadpool(handle.read, min(chunk_bytes, left))
            if not block:
                return  # the file shrank under us: the client sees a short body and retries with If-Range
            left -= len(block)
            yield block
    finally:
        await run_in_threadpool(handle.close)


def file_response(
    request: Request,
    path: Path,
    *,
    media_type: str = "application/octet-stream",
    filename: str | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Response:
    """Answer ``request`` with ``path`` (see the module docstring); ``filename`` sets Content-Disposition."""
    stat = path.stat()
    size = stat.st_size
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": _etag(stat),
        "Last-Modified": formatdate(stat.st_mtime, usegmt=True),
    }
    if filename is not None:
        safe = "".join(c for c in filename if c.isascii() and c.isprintable() and c not in '"\\')  # no header injection
        headers["Content-Disposition"] = f'attachment; filename="{safe}"'
    try:
        wanted = parse_range(request.headers.get("range"), size=size)
    except Unsatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is not None and not _still_current(
        request.headers.get("if-range"), etag=headers["ETag"], last_modified=headers["Last-Modified"]
    ):
        wanted = None
    part, status = (wanted, 206) if wanted is not None else (ByteRange(0, size - 1), 200)
    headers["Content-Length"] = str(part.length)
    if status == 206:
        headers["Content-Range"] = f"bytes {part.first}-{part.last}/{size}"
    if request.method == "HEAD" or part.length == 0:
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(
        _chunks(path, part, chunk_bytes), status_code=status, headers=headers, media_type=media_type
    )
