"""Staging: a task's local inputs copied into the chosen target's store before its attempt is launched.

A worker on a cloud target cannot read the control plane's disk. For each
input whose :func:`~controlplane.domain.target_storage.reach` is ``staged``,
the stager copies the file to
``<store root><tenant>/<task id>/inputs/<field>-<file name>``
(:func:`~controlplane.domain.target_storage.staged_uri`, the same URI the
worker spec names):

- **private bytes never reach a non-private target's store**: a private
  task is refused (:class:`~controlplane.dataplane.errors.PrivateDataRefused`,
  logged as an error, counted) before anything is read, whatever the planner
  said. The planner never offers such a target; this is the second line, for
  bytes, as the scheduler's own re-check is for placement;
- **streamed**: the file is read in chunks and the store writes it in parts
  (never the whole file in memory);
- **checked**: the bytes written must hash to the source's recorded sha256
  (the upload's, or one taken here just before); otherwise none of them is left
  at the key and the input is refused
  (:class:`~controlplane.dataplane.errors.ChecksumMismatch`);
- **idempotent per attempt**: an object already at the key with the same
  sha256 and size is kept (a second call, a retry after a crash, another
  attempt on the same store); a different object there is replaced, all or
  nothing.

:meth:`Stager.pending` says, without any I/O, whether a launch needs staging
at all, so the placement hot path touches no store when nothing does.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from controlplane.dataplane.errors import (
    ChecksumMismatch,
    PrivateDataRefused,
    StagingError,
    StagingUnavailable,
    StoreError,
)
from controlplane.dataplane.objects import ObjectStore
from controlplane.domain import DataSensitivity, Task
from controlplane.domain.target_storage import STAGED_FIELDS, Reach, TargetStorage, reach, staged_uri
from controlplane.domain.tenant_storage import TenantStorage, local_path
from controlplane.metrics import Metrics

__all__ = ["StagedInput", "Stager", "sha256_of_file"]

log = logging.getLogger("fusionplane.stager")

_CHUNK_BYTES = 1 << 20


def sha256_of_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks."""
    with path.open("rb") as handle:
        return _hash_open(handle)


@dataclass(frozen=True, kw_only=True)
class StagedInput:
    """One input staged for a launch: where it came from, where it is now, and whether bytes moved."""

    field: str
    source: str
    uri: str
    sha256: str
    size: int
    #: False when the object was already there with the same sha256 (a retry, another attempt)
    copied: bool


class Stager:
    """Copies a task's local inputs into a target's store; see the module."""

    def __init__(
        self,
        *,
        stores: Callable[[TargetStorage | str], ObjectStore],
        recorded_sha256: Callable[[Path], str | None] | None = None,
        tenant_storage: TenantStorage | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        #: the store serving a target's storage or a URI's service (``controlplane.dataplane.stores.Stores``)
        self.stores = stores
        #: the sha256 the upload recorded for a local input (None: unknown, hashed here just before the copy)
        self.recorded_sha256 = recorded_sha256
        #: when given, every local input must lie in its tenant's input folders (checked again here)
        self.tenant_storage = tenant_storage
        self.metrics = metrics

    @staticmethod
    def pending(task: Task, *, provider: str, storage: TargetStorage | None) -> list[tuple[str, str]]:
        """The (field, uri) inputs of ``task`` a worker of this target gets only once staged; no I/O."""
        if storage is None and provider == "local":
            return []
        uris = (task.spec.source_uri, task.spec.target_uri)
        return [
            (field, uri)
            for field, uri in zip(STAGED_FIELDS, uris, strict=True)
            if reach(provider=provider, storage=storage, uri=uri) == Reach.STAGED
        ]

    def stage(
        self,
        task: Task,
        *,
        attempt_id: str,
        target: str,
        provider: str,
        storage: TargetStorage | None,
        private_target: bool,
    ) -> list[StagedInput]:
        """Stage every input of ``task`` this target needs staged; what was staged (empty: nothing needed).

        ``private_target`` is the operator's word that the target is private
        (the policy's target, not the candidate's copy). Raises a
        :class:`~controlplane.dataplane.errors.StagingError`: ``transient``
        ones are worth another candidate.
        """
        wanted = self.pending(task, provider=provider, storage=storage)
        if not wanted or storage is None:
            return []
        context = {"task_id": task.id, "attempt_id": attempt_id, "target": target}
        if task.spec.data_sensitivity == DataSensitivity.PRIVATE and not private_target:
            self._count("private_refused")
            log.error("", extra={"event": "staging.private_data_refused", **context})
            raise PrivateDataRefused(f"{target}: refused, private data is never staged to a non-private target's store")
        staged = []
        for field, uri in wanted:
            try:
                staged.append(self._stage_one(task, field=field, uri=uri, storage=storage))
            except StagingError as exc:
                self._count(exc.outcome)
                failed = {"event": "staging.failed", "field": field, "code": exc.code, "error": str(exc)}
                log.warning("", extra={**failed, **context})
                raise
        for item in staged:
            self._count("copied" if item.copied else "already_there")
            log.info(
                "",
                extra={
                    "event": "staging.staged",
                    "field": item.field,
                    "uri": item.uri,
                    "bytes": item.size,
                    "copied": item.copied,
                    **context,
                },
            )
        return staged

    def _stage_one(self, task: Task, *, field: str, uri: str, storage: TargetStorage) -> StagedInput:
        path = local_path(uri)
        if path is None:  # an s3:// or az:// input on a target whose store is another service
            return self._copy_between_stores(task, field=field, uri=uri, storage=storage)
        tenant = task.spec.tenant
        if self.tenant_storage is not None and not self.tenant_storage.readable(uri, tenant=tenant):
            raise StagingError(f"{field}: is outside tenant {tenant}'s input folders")
        try:
            key = staged_uri(storage, tenant=tenant, task_id=task.id, field=field, name=uri)
        except ValueError as exc:
            raise StagingError(f"{field}: {exc}") from exc
        try:
            store = self.stores(storage)
        except StoreError as exc:  # one this control plane cannot open (a claim it does not mount): before any read
            raise _refusal(field, exc) from exc
        try:
            # O_NOFOLLOW on the last part: a link swapped in after the folder check is not followed
            handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        except OSError as exc:
            raise StagingError(f"{field}: the input cannot be read: {exc.strerror}") from exc
        with handle:
            size = os.fstat(handle.fileno()).st_size
            recorded = self.recorded_sha256(path) if self.recorded_sha256 is not None else None
            sha256 = recorded or _hash_open(handle)
            try:
                there = store.head(key)
                if there is not None and there.sha256 == sha256 and there.size == size:
                    return StagedInput(field=field, source=uri, uri=key, sha256=sha256, size=size, copied=False)
                handle.seek(0)
                store.put(key, handle, sha256=sha256, size=size)
            except ValueError as exc:
                raise ChecksumMismatch(
                    f"{field}: the input's bytes do not match its recorded sha256 (changed since upload?); "
                    "nothing was staged"
                ) from exc
            except StoreError as exc:
                raise _refusal(field, exc) from exc
        if self.metrics:
            self.metrics.staged_bytes.inc(size)
        return StagedInput(field=field, source=uri, uri=key, sha256=sha256, size=size, copied=True)

    def _copy_between_stores(self, task: Task, *, field: str, uri: str, storage: TargetStorage) -> StagedInput:
        """Stream an object of one store into the target's (an ``s3://`` input for an Azure worker, say).

        The tenant's read grant on ``uri`` was checked at submit. The source's
        recorded sha256 is used when its store kept one; otherwise the object
        is read once to hash it, then once to copy it, so what lands is
        checked against what was there.
        """
        try:
            key = staged_uri(storage, tenant=task.spec.tenant, task_id=task.id, field=field, name=uri)
        except ValueError as exc:
            raise StagingError(f"{field}: {exc}") from exc
        try:
            source = self.stores(uri)
            info = source.head(uri)
            if info is None:
                raise StagingError(f"{field}: the input object is not there")
            sha256 = info.sha256 or _hash_chunks(source.open_read(uri))
            there = self.stores(storage).head(key)
            if there is not None and there.sha256 == sha256 and there.size == info.size:
                return StagedInput(field=field, source=uri, uri=key, sha256=sha256, size=info.size, copied=False)
            with io.BufferedReader(_ChunkReader(source.open_read(uri)), _CHUNK_BYTES) as stream:
                self.stores(storage).put(key, stream, sha256=sha256, size=info.size)
        except ValueError as exc:
            changed = f"{field}: the input object changed while it was copied; nothing was staged"
            raise ChecksumMismatch(changed) from exc
        except StoreError as exc:
            raise _refusal(field, exc) from exc
        if self.metrics:
            self.metrics.staged_bytes.inc(info.size)
        return StagedInput(field=field, source=uri, uri=key, sha256=sha256, size=info.size, copied=True)

    def _count(self, outcome: str) -> None:
        if self.metrics:
            self.metrics.staging.labels(outcome=outcome).inc()


def _hash_chunks(chunks: Iterator[bytes]) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


class _ChunkReader(io.RawIOBase):
    """An iterator of byte chunks (a store's ``open_read``) as a file the other store's ``put`` reads."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._left = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._left:
            piece = next(self._chunks, None)
            if piece is None:
                return 0
            self._left = piece
        size = min(len(buffer), len(self._left))
        buffer[:size] = self._left[:size]
        self._left = self._left[size:]
        return size


def _refusal(field: str, exc: StoreError) -> StagingError:
    """A store's failure as the candidate's staging refusal: unavailable when it may pass."""
    kind = StagingUnavailable if exc.transient else StagingError
    return kind(f"{field}: {exc}")


def _hash_open(handle: BinaryIO) -> str:
    """The sha256 of an open file from its start (read in chunks)."""
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(_CHUNK_BYTES):
        digest.update(chunk)
    return digest.hexdigest()
