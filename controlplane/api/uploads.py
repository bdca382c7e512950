"""Uploads: a tenant's local inputs, streamed into ``<first input root>/<tenant>/upl_<id>/``.

Each tenant has a quota on the bytes under its input folder
(``FUSIONPLANE_UPLOAD_QUOTA_BYTES``), counted while the body streams in, so a
refused upload never lands; and a retention (``FUSIONPLANE_UPLOAD_RETENTION_S``)
after which ``fusionctl serve`` deletes upload folders no unfinished task
reads from.

The quota is exact inside one ``serve`` process (a ledger per tenant, read
from the disk whenever none of the tenant's uploads is in flight); with
several replicas each counts its own in-flight uploads, so the tenant can
overshoot by what the other replicas are receiving at that moment.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool

from controlplane.api.errors import ApiError
from controlplane.api.upload_state import UploadBusy, expired, finished_file, read_state, writer_lock
from controlplane.domain.tenant_storage import local_path, tenant_folder
from controlplane.store.ids import new_id

__all__ = ["UPLOAD_PREFIX", "UploadLedger", "prune_uploads", "receive_upload"]

log = logging.getLogger("fusionplane.uploads")

UPLOAD_PREFIX = "upl_"
_PARTIAL = ".upload."


def _bytes_under(folder: Path) -> int:
    total = 0
    for directory, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(directory, name)).st_size
            except FileNotFoundError:  # removed meanwhile (retention, a failed upload)
                continue
    return total


def _reserved_beyond_disk(tenant: Path) -> int:
    """What the tenant's unfinished resumable uploads hold beyond their bytes: each holds its whole Upload-Length."""
    extra = 0
    for folder in _entries(tenant):
        if folder.name.startswith(UPLOAD_PREFIX):
            state = read_state(folder)
            if state is not None and finished_file(folder, state) is None:
                extra += max(0, state.length - _bytes_under(folder))
    return extra


class UploadLedger:
    """Bytes each tenant holds under its input folder, with its uploads in flight counted as they grow.

    An unfinished resumable upload counts its whole declared length from its
    creation on (the bytes written to it stay inside that), so a tenant
    cannot start more resumable uploads than its quota could ever finish.
    """

    def __init__(self, *, root: Path, quota_bytes: int) -> None:
        self.root, self.quota_bytes = root, quota_bytes
        self._lock = threading.Lock()
        self._used: dict[str, int] = {}
        self._in_flight: Counter[str] = Counter()

    def begin(self, tenant: str) -> None:
        """One more upload of ``tenant``; with none in flight, the disk is re-read (retention deletes)."""
        with self._lock:
            if not self._in_flight[tenant]:
                folder = tenant_folder(self.root, tenant)
                self._used[tenant] = _bytes_under(folder) + _reserved_beyond_disk(folder)
            self._in_flight[tenant] += 1

    def take(self, tenant: str, size: int) -> bool:
        """Count ``size`` more bytes; False (nothing counted) when that would pass the quota."""
        with self._lock:
            if self._used[tenant] + size > self.quota_bytes:
                return False
            self._used[tenant] += size
            return True

    def reserve(self, tenant: str, size: int) -> bool:
        """Count a new resumable upload's declared length at once; False (nothing counted) over the quota."""
        self.begin(tenant)
        taken = False
        try:
            taken = self.take(tenant, size)
        finally:
            self.end(tenant, given_back=0)
        return taken

    def end(self, tenant: str, *, given_back: int) -> None:
        """The upload is over; ``given_back`` bytes of it were not kept (it failed)."""
        with self._lock:
            self._used[tenant] -= given_back
            self._in_flight[tenant] -= 1


async def receive_upload(
    *, chunks: AsyncIterator[bytes], filename: str, tenant: str, ledger: UploadLedger, max_bytes: int
) -> dict[str, Any]:
    """Stream ``chunks`` into a new upload folder; 413 over the size limit or the quota, nothing left behind."""
    try:
        folder = tenant_folder(ledger.root, tenant) / new_id("upl")
    except ValueError as exc:
        raise ApiError(403, "forbidden", str(exc), field="authorization") from exc
    await run_in_threadpool(ledger.begin, tenant)
    size, kept = 0, False
    try:
        # 0700 whatever the umask: another local user must not list a tenant's uploads
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=_PARTIAL, dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                async for chunk in chunks:
                    if size + len(chunk) > max_bytes:
                        raise ApiError(413, "body_too_large", f"uploads are limited to {max_bytes} bytes", field="body")
                    if not ledger.take(tenant, len(chunk)):
                        raise ApiError(
                            413,
                            "upload_quota_exceeded",
                            f"this tenant's uploads would pass its quota of {ledger.quota_bytes} bytes; "
                            "delete finished tasks' inputs or wait for the retention to free space",
                            field="body",
                        )
                    size += len(chunk)
                    handle.write(chunk)
            if size == 0:
                raise ApiError(422, "invalid", "the upload is empty", field="body")
            final = folder / filename
            os.replace(tmp, final)
            kept = True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
            if not kept and folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    finally:
        ledger.end(tenant, given_back=0 if kept else size)
    return {"uri": str(final), "bytes": size}


def prune_uploads(
    *, root: Path, retention_seconds: float, in_use: Callable[[], set[str]], now: Callable[[], float] = time.time
) -> dict[str, int]:
    """Delete upload folders older than the retention that no unfinished task reads from; counts, logged.

    ``in_use`` gives the source and target URIs of every unfinished task
    (read after the folders are listed, so a task submitted meanwhile keeps
    its folder). Only ``upl_*`` folders are touched, never what an operator
    put in a tenant folder. An unfinished resumable upload is deleted once its
    ``Upload-Expires`` has passed (counted as ``expired``), whatever its age.
    """
    at = now()
    cutoff = at - retention_seconds
    old: list[Path] = []
    gone = 0
    for tenant in _entries(root):
        for folder in _entries(tenant):
            if not folder.name.startswith(UPLOAD_PREFIX) or folder.is_symlink():
                continue
            state = read_state(folder)
            if state is not None and finished_file(folder, state) is None:
                # unfinished resumable upload: its expiry rules, not the retention; never a task's input
                gone += _remove_if_expired(folder, now=at)
            elif _mtime(folder) < cutoff:
                old.append(folder)
    used = {str(path.parent) for path in map(local_path, in_use()) if path is not None}
    pruned = {"folders": 0, "bytes": 0, "kept_in_use": 0, "expired": gone}
    for folder in old:
        if str(folder) in used or str(folder.resolve()) in used:
            pruned["kept_in_use"] += 1
            continue
        size = _bytes_under(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            pruned["folders"] += 1
            pruned["bytes"] += size
    if pruned["folders"] or pruned["kept_in_use"] or pruned["expired"]:
        # counts only: which tenant uploaded what is that tenant's business
        log.info("", extra={"event": "uploads_pruned", **pruned})
    return pruned


def _remove_if_expired(folder: Path, *, now: float) -> int:
    """1 if the unfinished upload had expired and is now deleted; a chunk arriving right now keeps it."""
    try:
        with writer_lock(folder):
            state = read_state(folder)
            if state is None or not expired(state, folder, now=now):
                return 0
            shutil.rmtree(folder, ignore_errors=True)
            return 1
    except (UploadBusy, FileNotFoundError):
        return 0


def _entries(folder: Path) -> list[Path]:
    try:
        return [Path(entry.path) for entry in os.scandir(folder) if entry.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(folder: Path) -> float:
    """The newest change to the folder or a file in it: an upload still streaming is never old."""
    try:
        return max(
            [folder.lstat().st_mtime, *(entry.stat(follow_symlinks=False).st_mtime for entry in os.scandir(folder))]
        )
    except FileNotFoundError:
        return float("inf")
