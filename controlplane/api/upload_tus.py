"""Resumable uploads: the tus 1.0.0 protocol under ``/v1/uploads/`` (docs/api.md, "Resumable uploads").

Core (HEAD for the offset, PATCH to append) with the creation, checksum
(sha256), termination and expiration extensions. Each upload is its
tenant's: it lives in ``<first input root>/<tenant>/upl_<id>/`` and is looked
up only there, so another tenant's id answers 404 exactly like one that
never existed. The disk side (state, part, the writer lock) is
``api/upload_state.py``; the quota ledger and the retention job are
``api/uploads.py``.

Why our own server rather than a tus library: the maintained FastAPI one
(tuspyserver) keeps every upload in one folder keyed by its id alone, has
no checksum extension, no quota hook and no per-caller ownership, and
answers in its own error shape; the per-tenant folder, the quota reserved
at creation and the 404-for-another-tenant rule are most of the work here.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from controlplane.api.deps import Caller
from controlplane.api.errors import ApiError
from controlplane.api.upload_contract import tus_create, tus_delete, tus_discovery, tus_head, tus_patch
from controlplane.api.upload_headers import (
    CHECKSUM_MISMATCH,
    TUS_VERSION,
    UploadMetadata,
    chunk_checksum,
    count_header,
    metadata_header,
    require_tus,
)
from controlplane.api.upload_state import (
    ChunkWriter,
    UploadBusy,
    UploadState,
    create_upload,
    expired,
    finish_upload,
    finished_file,
    read_state,
    remove_upload,
    upload_folder,
    write_state,
    writer_lock,
)
from controlplane.api.uploads import UploadLedger
from controlplane.config import Settings
from controlplane.domain.tenant_storage import tenant_folder
from controlplane.store.ids import new_id

#: the URL's last segment, named as ``PUT /v1/uploads/{name}`` names it (one URL shape, one parameter name: OpenAPI
#: allows no two templates that differ only by it); here it is the upload's id, the last segment of ``Location``
_UploadId = Annotated[str, PathParam(alias="name", description="the upload's id (the end of the create's Location)")]
__all__ = ["URI_HEADER", "add_tus_routes"]

log = logging.getLogger("fusionplane.uploads")

#: where a finished upload's path is given (not an ``Upload-*`` name: that family is tus's own)
URI_HEADER = "FusionPlane-Upload-URI"
_EXTENSIONS = "creation,checksum,termination,expiration"
_OFFSET_STREAM = "application/offset+octet-stream"
#: bytes gathered before each write: one thread hop per MiB rather than per socket read
_WRITE_BATCH = 1 << 20


@contextlib.contextmanager
def _tus_answer() -> Iterator[None]:
    """Every tus answer, errors included, says which protocol version it speaks."""
    try:
        yield
    except ApiError as exc:
        exc.headers.setdefault("Tus-Resumable", TUS_VERSION)
        raise


def _http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "no such upload", field="upload_id")


class _Uploads:
    """The tus handlers' shared state: settings, the quota ledger and what unfinished tasks read."""

    def __init__(self, *, settings: Settings, ledger: UploadLedger | None, in_use: Callable[[], set[str]]) -> None:
        self.settings, self._ledger, self.in_use = settings, ledger, in_use

    @property
    def ledger(self) -> UploadLedger:
        if self._ledger is None:
            raise ApiError(409, "uploads_disabled", "no input root is configured", field="upload_id")
        return self._ledger

    def folder_of(self, tenant: str, upload_id: str) -> tuple[Path, UploadState]:
        """The caller's own upload, or 404 (another tenant's id included)."""
        try:
            mine = tenant_folder(self.ledger.root, tenant)
        except ValueError:
            raise _not_found() from None
        folder = upload_folder(mine, upload_id)
        state = read_state(folder) if folder is not None else None
        if folder is None or state is None:
            raise _not_found()
        return folder, state

    def headers(self, folder: Path, state: UploadState) -> dict[str, str]:
        """Offset, length, metadata, and either the expiry (unfinished) or the finished file's URI."""
        values = {
            "Tus-Resumable": TUS_VERSION,
            "Upload-Offset": str(state.offset),
            "Upload-Length": str(state.length),
            "Upload-Metadata": UploadMetadata(filename=state.filename, sha256=state.sha256).header(),
            "Cache-Control": "no-store",
        }
        final = finished_file(folder, state)
        if final is not None:
            values[URI_HEADER] = str(final)
        else:
            values["Upload-Expires"] = _http_date(state.expires)
        return values

    # -- creation ----------------------------------------------------------------------------------

    def create(self, request: Request, tenant: str) -> Response:
        require_tus(request)
        if request.headers.get("upload-defer-length") is not None:
            raise ApiError(
                400, "invalid", "deferred lengths are not supported; send Upload-Length", field="Upload-Length"
            )
        length = count_header(request, "Upload-Length")
        assert length is not None
        if length == 0:
            raise ApiError(422, "invalid", "the upload is empty", field="Upload-Length")
        limit = self.settings.max_upload_bytes
        if length > limit:
            raise ApiError(413, "body_too_large", f"uploads are limited to {limit} bytes", field="Upload-Length")
        metadata = metadata_header(request)
        if not self.ledger.reserve(tenant, length):
            raise ApiError(
                413,
                "upload_quota_exceeded",
                f"this upload's Upload-Length would pass the tenant's quota of {self.ledger.quota_bytes} bytes; "
                "finish or delete unfinished uploads, or wait for the retention to free space",
                field="Upload-Length",
            )
        upload_id = new_id("upl")
        expires = time.time() + self.settings.upload_expiry_seconds
        state = UploadState(
            length=length, offset=0, filename=metadata.filename, sha256=metadata.sha256, expires=expires
        )
        try:
            create_upload(tenant_folder(self.ledger.root, tenant) / upload_id, state)
        except ValueError as exc:
            raise ApiError(403, "forbidden", str(exc), field="authorization") from exc
        return Response(
            status_code=201,
            headers={
                "Location": f"/v1/uploads/{upload_id}",
                "Tus-Resumable": TUS_VERSION,
                "Upload-Expires": _http_date(expires),
            },
        )

    # -- core: PATCH -------------------------------------------------------------------------------

    async def append(self, request: Request, tenant: str, upload_id: str) -> Response:
        require_tus(request)
        folder, _ = self.folder_of(tenant, upload_id)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != _OFFSET_STREAM:
            raise ApiError(415, "invalid", f"a PATCH body is Content-Type {_OFFSET_STREAM}", field="Content-Type")
        offset = count_header(request, "Upload-Offset")
        assert offset is not None
        expected = chunk_checksum(request)
        declared = count_header(request, "Content-Length", required=False)
        chunk_max = self.settings.upload_chunk_max_bytes
        if declared is not None and declared > chunk_max:
            raise ApiError(
                413, "body_too_large", f"one PATCH carries at most {chunk_max} bytes", field="Content-Length"
            )
        try:
            with writer_lock(folder):
                return await self._append_locked(request, folder, offset=offset, expected=expected, declared=declared)
        except UploadBusy:
            raise ApiError(
                423, "upload_busy", "another request is writing to this upload; retry after it ends", field="upload_id"
            ) from None
        except FileNotFoundError:  # deleted between the look-up and the lock
            raise _not_found() from None

    async def _append_locked(
        self, request: Request, folder: Path, *, offset: int, expected: bytes | None, declared: int | None
    ) -> Response:
        state = read_state(folder)
        if state is None:
            raise _not_found()
        if expired(state, folder):
            raise ApiError(410, "upload_expired", "this upload expired; start a new one", field="upload_id")
        if offset != state.offset:
            raise ApiError(
                409,
                "offset_mismatch",
                f"Upload-Offset {offset} is not this upload's offset {state.offset}; HEAD it and resume from there",
                field="Upload-Offset",
                headers={"Upload-Offset": str(state.offset)},
            )
        if declared is not None and offset + declared > state.length:
            raise ApiError(
                413, "body_too_large", f"the chunk would pass Upload-Length {state.length}", field="Content-Length"
            )
        if finished_file(folder, state) is not None:
            return Response(status_code=204, headers=self.headers(folder, state))  # a retried last PATCH: done already
        writer = await run_in_threadpool(ChunkWriter, folder, offset=offset, checksum=expected is not None)
        try:
            disconnected = await self._receive(
                request, writer, room=min(state.length - offset, self.settings.upload_chunk_max_bytes)
            )
        except BaseException:
            await run_in_threadpool(writer.rollback)
            raise
        if disconnected and expected is not None:
            # half a chunk cannot be checked against its checksum: none of it is kept
            await run_in_threadpool(writer.rollback)
            return Response(status_code=400)
        if expected is not None and writer.digest() != expected:
            await run_in_threadpool(writer.rollback)
            raise ApiError(
                CHECKSUM_MISMATCH,
                "checksum_mismatch",
                "the chunk's sha256 differs from Upload-Checksum; it was discarded, send it again",
                field="Upload-Checksum",
                headers={"Upload-Offset": str(offset)},
            )
        new_offset = await run_in_threadpool(writer.keep)
        state = state.advanced(offset=new_offset, expires=time.time() + self.settings.upload_expiry_seconds)
        await run_in_threadpool(write_state, folder, state)
        if disconnected:
            return Response(status_code=400)  # nobody reads it: the bytes that arrived are kept for the resume
        if state.offset == state.length and finished_file(folder, state) is None:
            await self._finish(folder, state)
        return Response(status_code=204, headers=self.headers(folder, state))

    async def _receive(self, request: Request, writer: ChunkWriter, *, room: int) -> bool:
        """Stream the body into ``writer`` (at most ``room`` bytes); True if the client went away mid-way."""
        batch: list[bytes] = []
        batched = received = 0
        try:
            async for piece in request.stream():
                received += len(piece)
                if received > room:
                    raise ApiError(
                        413,
                        "body_too_large",
                        "the chunk passes Upload-Length or the largest chunk a PATCH may carry",
                        field="body",
                    )
                batch.append(piece)
                batched += len(piece)
                if batched >= _WRITE_BATCH:
                    await run_in_threadpool(writer.write, b"".join(batch))
                    batch, batched = [], 0
        except ClientDisconnect:
            await run_in_threadpool(writer.write, b"".join(batch))
            return True
        await run_in_threadpool(writer.write, b"".join(batch))
        return False

    async def _finish(self, folder: Path, state: UploadState) -> None:
        """The last byte is in: check the whole-file sha256 (if given) and name the file; else delete it all."""
        final = await run_in_threadpool(finish_upload, folder, state)
        # the id and the size only: what a tenant uploads (its file names) is its own business
        if final is not None:
            log.info("", extra={"event": "upload_completed", "upload_id": folder.name, "bytes": state.length})
        else:
            log.warning("", extra={"event": "upload_checksum_failed", "upload_id": folder.name, "bytes": state.length})
            await run_in_threadpool(remove_upload, folder)
            raise ApiError(
                CHECKSUM_MISMATCH,
                "checksum_mismatch",
                "the whole file's sha256 differs from Upload-Metadata sha256; the upload was deleted, send it again",
                field="Upload-Metadata sha256",
            )

    # -- termination -------------------------------------------------------------------------------

    def terminate(self, request: Request, tenant: str, upload_id: str) -> Response:
        require_tus(request)
        folder, _ = self.folder_of(tenant, upload_id)
        try:
            with writer_lock(folder):
                state = read_state(folder)
                final = finished_file(folder, state) if state is not None else None
                if final is not None and str(final) in self.in_use():
                    raise ApiError(409, "upload_in_use", "an unfinished task reads this upload", field="upload_id")
                remove_upload(folder)
        except UploadBusy:
            raise ApiError(423, "upload_busy", "a PATCH is writing to this upload", field="upload_id") from None
        except FileNotFoundError:
            raise _not_found() from None
        return Response(status_code=204, headers={"Tus-Resumable": TUS_VERSION})

    def discovery(self) -> Response:
        return Response(
            status_code=204,
            headers={
                "Tus-Resumable": TUS_VERSION,
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": _EXTENSIONS,
                "Tus-Max-Size": str(self.settings.max_upload_bytes),
                "Tus-Checksum-Algorithm": "sha256",
            },
        )


def add_tus_routes(
    router: APIRouter, *, settings: Settings, ledger: UploadLedger | None, in_use: Callable[[], set[str]]
) -> None:
    """The tus routes on ``router``: OPTIONS and POST on ``/v1/uploads/``; HEAD, PATCH, DELETE on an upload.

    Without an input root (``ledger`` None) they are there and answer ``409 uploads_disabled``.
    """
    uploads = _Uploads(settings=settings, ledger=ledger, in_use=in_use)

    async def discover() -> Response:
        """tus discovery: the version, extensions, largest upload and checksum algorithm (no token needed)."""
        return uploads.discovery()

    async def create(request: Request, principal: Caller) -> Response:
        """tus creation: ``Upload-Length`` and ``Upload-Metadata`` (filename, optional sha256) -> 201 Location."""
        with _tus_answer():
            return await run_in_threadpool(uploads.create, request, principal.tenant)

    for path in ("/v1/uploads/", "/v1/uploads"):
        documented = path.endswith("/")
        router.add_api_route(
            path, discover, methods=["OPTIONS"], tags=["uploads"], include_in_schema=documented, **tus_discovery()
        )
        router.add_api_route(
            path,
            create,
            methods=["POST"],
            tags=["uploads"],
            include_in_schema=documented,
            **tus_create(settings.max_upload_bytes),
        )

    @router.head("/v1/uploads/{name}", tags=["uploads"], **tus_head())
    async def offset(upload_id: _UploadId, request: Request, principal: Caller) -> Response:
        """tus core: where to resume (``Upload-Offset``); a finished upload also gives its URI."""
        with _tus_answer():
            require_tus(request)
            folder, state = uploads.folder_of(principal.tenant, upload_id)
            if expired(state, folder):
                raise ApiError(410, "upload_expired", "this upload expired; start a new one", field="upload_id")
            return Response(status_code=200, headers=uploads.headers(folder, state))

    @router.patch("/v1/uploads/{name}", tags=["uploads"], **tus_patch(settings.upload_chunk_max_bytes))
    async def append(upload_id: _UploadId, request: Request, principal: Caller) -> Response:
        """tus core: append a chunk at ``Upload-Offset`` (``Upload-Checksum: sha256 <base64>`` optional)."""
        with _tus_answer():
            return await uploads.append(request, principal.tenant, upload_id)

    @router.delete("/v1/uploads/{name}", tags=["uploads"], **tus_delete())
    async def terminate(upload_id: _UploadId, request: Request, principal: Caller) -> Response:
        """tus termination: delete the upload (409 while an unfinished task reads it)."""
        with _tus_answer():
            return await run_in_threadpool(uploads.terminate, request, principal.tenant, upload_id)
