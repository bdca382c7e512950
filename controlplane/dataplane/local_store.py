"""The control plane's own disk as an :class:`~controlplane.dataplane.objects.ObjectStore`.

URIs are absolute paths or ``file://`` paths. A write goes to a temporary
file in the destination folder, is hashed while it is copied, flushed to the
disk and renamed over the final name only when its sha256 is the one
promised: a reader sees the old object or the whole new one, never half.
The sha256 is kept in an extended attribute (``user.fusionplane.sha256``)
where the file system has them; where it has none, :meth:`LocalStore.head`
says ``sha256=None`` and a caller that needs it hashes the file itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from controlplane.dataplane.objects import ObjectInfo

__all__ = ["CHUNK_BYTES", "LocalStore", "local_object_path"]

#: how much of a file is read or written at once
CHUNK_BYTES = 1 << 20
_SHA256_XATTR = "user.fusionplane.sha256"
_PARTIAL = ".staging."


def local_object_path(uri: str) -> Path:
    """The absolute path a local URI names; ``ValueError`` for a relative path or a NUL byte."""
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if "\x00" in path or not os.path.isabs(path):
        raise ValueError(f"not an absolute local path: {uri!r}")
    return Path(path)


class LocalStore:
    """Objects as files under absolute paths."""

    def put(self, uri: str, data: BinaryIO, *, sha256: str, size: int) -> ObjectInfo:
        final = local_object_path(uri)
        final.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=_PARTIAL, dir=final.parent)
        try:
            digest, written = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as handle:
                while chunk := data.read(CHUNK_BYTES):
                    written += len(chunk)
                    if written > size:
                        break
                    digest.update(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            if written != size or digest.hexdigest() != sha256:
                raise ValueError(f"{uri}: the bytes read ({written}) do not hash to the promised sha256 of {size}")
            with contextlib.suppress(OSError):  # a file system without user xattrs keeps no digest
                os.setxattr(tmp, _SHA256_XATTR, sha256.encode())
            os.replace(tmp, final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return ObjectInfo(uri=uri, size=size, sha256=sha256)

    def head(self, uri: str) -> ObjectInfo | None:
        path = local_object_path(uri)
        try:
            size = path.stat().st_size if path.is_file() else None
        except OSError:
            return None
        if size is None:
            return None
        return ObjectInfo(uri=uri, size=size, sha256=_kept_sha256(path))

    def open_read(self, uri: str, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = local_object_path(uri)
        handle = path.open("rb")  # opened now: a missing file fails here, not at the first chunk

        def chunks() -> Iterator[bytes]:
            with handle:
                handle.seek(start)
                left = None if end is None else max(end - start, 0)
                while left is None or left > 0:
                    chunk = handle.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
                    if not chunk:
                        return
                    if left is not None:
                        left -= len(chunk)
                    yield chunk

        return chunks()

    def presign(self, uri: str, *, seconds: int) -> str | None:
        return None  # the API streams local files itself

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        folder = local_object_path(prefix)
        for directory, _dirs, files in os.walk(folder):
            for name in sorted(files):
                if name.startswith(_PARTIAL):
                    continue
                path = Path(directory) / name
                with contextlib.suppress(FileNotFoundError):
                    yield ObjectInfo(uri=str(path), size=path.stat().st_size, sha256=_kept_sha256(path))

    def delete_prefix(self, prefix: str) -> int:
        folder = local_object_path(prefix)
        if not folder.is_dir() or folder.is_symlink():
            return 0
        count = sum(len(files) for _d, _s, files in os.walk(folder))
        shutil.rmtree(folder, ignore_errors=True)
        return count


def _kept_sha256(path: Path) -> str | None:
    try:
        return os.getxattr(path, _SHA256_XATTR).decode()
    except OSError:
        return None
