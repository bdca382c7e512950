"""One small interface over the stores a target can name: the control plane's side of the data plane.

Every store is addressed by the URIs tasks carry (a local path, ``s3://``,
``az://``); each implementation keeps its SDK behind these calls, so the
stager, the output route and retention do not care which cloud holds the
bytes. Writes are all-or-nothing (a temporary file renamed, a multipart
upload completed, a block list committed): a reader never sees half an object.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol

__all__ = ["ObjectInfo", "ObjectStore", "read_exactly"]


@dataclass(frozen=True, kw_only=True)
class ObjectInfo:
    """What a store says about one object."""

    uri: str
    size: int
    #: hex sha256 of the bytes when the store keeps it (written by :meth:`ObjectStore.put`), else None
    sha256: str | None = None


class ObjectStore(Protocol):
    """A store of objects under URIs of one scheme (and, for clouds, one service endpoint)."""

    def put(self, uri: str, data: BinaryIO, *, sha256: str, size: int) -> ObjectInfo:
        """Write ``data`` (``size`` bytes) at ``uri``, all or nothing, recording ``sha256``; ``ValueError``
        when the bytes read do not hash to ``sha256``, in which case none of them is left at ``uri`` (an object
        that was there stays as it was)."""
        ...

    def head(self, uri: str) -> ObjectInfo | None:
        """The object at ``uri``, or None when there is none."""
        ...

    def open_read(self, uri: str, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The bytes of ``uri`` from ``start`` up to ``end`` (exclusive; None: to the end), in chunks."""
        ...

    def presign(self, uri: str, *, seconds: int) -> str | None:
        """A URL that reads ``uri`` for ``seconds`` without credentials, or None (a local store)."""
        ...

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object whose URI starts with ``prefix`` (a folder URI ending in ``/``)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under ``prefix``; how many were removed."""
        ...


def read_exactly(data: BinaryIO, amount: int) -> bytes:
    """``amount`` bytes of ``data`` (fewer only at its end), however short its reads are."""
    pieces, got = [], 0
    while got < amount:
        piece = data.read(amount - got)
        if not piece:
            break
        pieces.append(piece)
        got += len(piece)
    return b"".join(pieces)
