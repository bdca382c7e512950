"""One resumable (tus) upload on disk: ``<input root>/<tenant>/upl_<id>/``, its state beside its bytes.

An upload folder holds:

- ``.tus.json``: the declared length, the committed offset, the file name, the
  whole-file sha256 when the client sent one, and when it expires; replaced
  atomically (write, then rename) after every chunk;
- ``.tus.part``: the bytes received so far. Names starting with ``.`` in an
  upload folder are never task inputs (``api/schemas.py`` refuses them), so
  a half-sent file cannot be submitted;
- ``<filename>``: the finished file: the part renamed once the last byte is in
  and the whole-file sha256 (if any) matched. Its existence is what
  "complete" means, so a crash between the check and the rename leaves an
  upload at full offset that the next PATCH completes.

The committed offset in ``.tus.json`` is the truth: a part longer than it (a
server stopped in the middle of a chunk) is cut back to it before the next
chunk. One writer at a time: :func:`writer_lock` takes an exclusive ``flock``
on the folder without waiting, which holds across ``serve`` processes on
the same disk as well as inside one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO

__all__ = [
    "PART",
    "STATE",
    "ChunkWriter",
    "UploadBusy",
    "UploadState",
    "create_upload",
    "expired",
    "finish_upload",
    "finished_file",
    "read_state",
    "remove_upload",
    "upload_folder",
    "write_state",
    "writer_lock",
]

STATE = ".tus.json"
PART = ".tus.part"
#: ``upl_`` and a ULID (controlplane/store/ids.py): anything else is no upload of ours, whoever asks
_UPLOAD_ID = re.compile(r"^upl_[0-9A-HJKMNP-TV-Z]{26}$")
_HASH_BLOCK = 4 << 20


class UploadBusy(Exception):
    """Another request is writing to this upload right now."""


@dataclass(frozen=True, kw_only=True)
class UploadState:
    """What ``.tus.json`` holds."""

    #: the declared ``Upload-Length``
    length: int
    #: bytes received and kept (after their chunk's checksum, when it had one)
    offset: int
    filename: str
    #: the whole file's sha256 (hex) from ``Upload-Metadata``; checked when the last byte is in
    sha256: str | None
    #: epoch seconds after which an unfinished upload is gone (``Upload-Expires``)
    expires: float

    @classmethod
    def parse(cls, raw: bytes) -> UploadState | None:
        try:
            data: dict[str, Any] = json.loads(raw)
            state = cls(
                length=int(data["length"]),
                offset=int(data["offset"]),
                filename=str(data["filename"]),
                sha256=None if data.get("sha256") is None else str(data["sha256"]),
                expires=float(data["expires"]),
            )
        except (ValueError, KeyError, TypeError):
            return None
        return state if 0 <= state.offset <= state.length else None

    def advanced(self, *, offset: int, expires: float) -> UploadState:
        return replace(self, offset=offset, expires=expires)


def upload_folder(tenant_folder: Path, upload_id: str) -> Path | None:
    """The folder of ``upload_id`` in this tenant's folder, if the id is well formed and the folder exists.

    Another tenant's id is simply not in this folder: the caller answers 404
    exactly as for an id that never existed.
    """
    if not _UPLOAD_ID.match(upload_id):
        return None
    folder = tenant_folder / upload_id
    return folder if folder.is_dir() and not folder.is_symlink() else None


def read_state(folder: Path) -> UploadState | None:
    """The upload's state; None if the folder holds no resumable upload (a plain PUT's, or gone)."""
    try:
        return UploadState.parse((folder / STATE).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_state(folder: Path, state: UploadState) -> None:
    """Replace ``.tus.json`` atomically: a reader sees the old state or the new, never half of one."""
    tmp = folder / f"{STATE}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(state), handle)
    os.replace(tmp, folder / STATE)


def create_upload(folder: Path, state: UploadState) -> None:
    """A new upload folder (0700) with its state and an empty part (0600); nothing left if it fails."""
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(mode=0o700)
    try:
        os.close(os.open(folder / PART, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        write_state(folder, state)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def finished_file(folder: Path, state: UploadState) -> Path | None:
    """The finished file, once the upload is complete; None before."""
    final = folder / state.filename
    return final if final.is_file() else None


def remove_upload(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def writer_lock(folder: Path) -> Iterator[None]:
    """Hold the upload's writer lock for the block; :class:`UploadBusy` at once if someone else holds it."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UploadBusy(folder.name) from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


class ChunkWriter:
    """Appends one chunk to the part at the committed offset; :meth:`rollback` cuts it off again."""

    def __init__(self, folder: Path, *, offset: int, checksum: bool) -> None:
        self.offset = offset
        self.written = 0
        self._hash = hashlib.sha256() if checksum else None
        self._handle: BinaryIO = (folder / PART).open("r+b")
        # bytes past the committed offset are from a chunk that never committed (a stop mid-chunk)
        self._handle.truncate(offset)
        self._handle.seek(offset)

    def write(self, data: bytes) -> None:
        self._handle.write(data)
        if self._hash is not None:
            self._hash.update(data)
        self.written += len(data)

    def digest(self) -> bytes | None:
        return None if self._hash is None else self._hash.digest()

    def keep(self) -> int:
        """Flush what was written; the new offset."""
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        return self.offset + self.written

    def rollback(self) -> None:
        """Drop this chunk's bytes: the part ends at the committed offset again."""
        with contextlib.suppress(ValueError, OSError):
            self._handle.truncate(self.offset)
        self._handle.close()
        self.written = 0


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def finish_upload(folder: Path, state: UploadState) -> Path | None:
    """The part, at full length, becomes ``<filename>``; None (nothing renamed) if its sha256 differs."""
    part = folder / PART
    if state.sha256 is not None and _sha256_of(part) != state.sha256:
        return None
    final = folder / state.filename
    os.replace(part, final)
    return final


def expired(state: UploadState, folder: Path, *, now: float | None = None) -> bool:
    """An unfinished upload whose expiry has passed (a finished one never expires; retention handles it)."""
    return finished_file(folder, state) is None and state.expires < (time.time() if now is None else now)
