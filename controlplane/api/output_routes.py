"""``GET /v1/tasks/{id}/output``: a succeeded task's output, wherever its worker wrote it.

- Only the task's own tenant (or an operator) gets an answer; for anyone
  else the task does not exist (404, the same answer as for an unknown id),
  so ids cannot be probed across tenants.
- 409 while the task has not succeeded; 410 when the output is gone
  (removed by the tenant, or by retention).
- A local output (the control plane's disk, inside the tenant's output
  folder) is streamed, with ``Range`` requests answered 206 (resumable and
  partial downloads of large videos).
- The output is where the succeeded attempt's worker was told to write it
  (``attempts.output_uri``: the chosen target's store for a local output
  placed on a cloud), else the task's own ``output``.
- A ``pvc://`` output (a Kubernetes target whose store is a claim the control
  plane also mounts) is streamed from that mount, ``Range`` answered too.
- An ``s3://`` or ``az://`` output is answered ``307`` to a presigned URL that
  reads that one object for a short time (``FUSIONPLANE_OUTPUT_LINK_S``,
  default 300 s): the bytes go from the store to the tenant, not through the
  control plane. The URL is a credential: never logged, never cached.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response, StreamingResponse

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, Responses, errors
from controlplane.api.deps import Caller
from controlplane.api.errors import ApiError
from controlplane.api.ranges import Unsatisfiable, parse_range
from controlplane.config import DEFAULT_OUTPUT_LINK_S
from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.objects import ObjectStore
from controlplane.domain import AttemptState, Task, TaskState
from controlplane.domain.target_storage import TargetStorage, uri_scheme
from controlplane.domain.tenant_storage import local_path, resolved_inside, tenant_folder
from controlplane.store import NotFound, Store

__all__ = ["TargetStorageOf", "output_router"]

log = logging.getLogger("fusionplane.api.output")

#: a target's store, as the tenant's policy in force names it (tenant, target name) -> storage or None
TargetStorageOf = Callable[[str, str], TargetStorage | None]


def _own_task(store: Store, task_id: str, principal: Principal) -> Task:
    """The task, if the caller may see it; otherwise 404 whether it exists or not."""
    try:
        task = store.get_task(task_id)
    except NotFound:
        task = None
    if task is None or (not principal.sees_all_tenants and task.spec.tenant != principal.tenant):
        raise ApiError(404, "not_found", f"no task {task_id}", field="task_id")
    return task


def _local_output(task: Task, uri: str, output_root: Path) -> FileResponse:
    path = local_path(uri)
    assert path is not None
    try:
        real = resolved_inside(path, tenant_folder(output_root, task.spec.tenant))
    except ValueError:
        real = None
    if real is None:
        # a row written some other way than the API: never serve a file outside the tenant's folder
        raise ApiError(403, "forbidden", "the output is outside the task's tenant folder", field="output")
    if not real.is_file():
        raise ApiError(410, "gone", "the output file is no longer there", field="output")
    # Starlette's FileResponse answers Range (206, several ranges, If-Range, 416) from the file itself
    return FileResponse(real, filename=real.name)


def _written_at(store: Store, task: Task) -> str:
    """The succeeded attempt's output URI (its target's store), else the task's own (older attempts)."""
    for attempt in reversed(store.attempts_for(task.id)):
        if attempt.state == AttemptState.SUCCEEDED and attempt.output_uri:
            return attempt.output_uri
    return task.spec.output_uri


def _streamed(objects: ObjectStore, uri: str, range_header: str | None) -> Response:
    """An object the control plane reads itself (a mounted claim): 200, or 206 for one byte range."""
    try:
        info = objects.head(uri)
    except StoreError as exc:
        raise ApiError(502, "store_unavailable", f"the output's store: {exc}", field="output") from exc
    if info is None:
        raise ApiError(410, "gone", "the output object is no longer there", field="output")
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "no-store"}
    try:
        wanted = parse_range(range_header, size=info.size)
    except Unsatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{info.size}"})
    if wanted is None:
        body = objects.open_read(uri)
        return StreamingResponse(body, headers={**headers, "Content-Length": str(info.size)})
    body = objects.open_read(uri, start=wanted.first, end=wanted.last + 1)
    headers |= {
        "Content-Length": str(wanted.length),
        "Content-Range": f"bytes {wanted.first}-{wanted.last}/{info.size}",
    }
    return StreamingResponse(body, status_code=206, headers=headers)


_FILE = {"schema": {"type": "string", "format": "binary"}}
#: a local output is served with the type its suffix says; a pvc:// one as octet-stream
_OUTPUT_TYPES = {"image/*": _FILE, "video/*": _FILE, "application/octet-stream": _FILE}
_OUTPUT_ANSWERS: Responses = {
    200: {"description": "The whole output", "content": _OUTPUT_TYPES},
    206: {"description": "The part a `Range: bytes=...` header asked for", "content": _OUTPUT_TYPES},
    307: {"description": "An s3:// or az:// output: `Location` is a short-lived presigned URL"},
    416: {"description": "The `Range` asked is outside the file (`Content-Range: bytes */size`)"},
    **errors(
        *CALLER,
        404,
        409,
        410,
        502,
        503,
        why={
            403: "Another tenant's task, or its output outside the tenant's folder",
            404: "No task with this id",
            409: "The task has not succeeded (yet)",
            410: "The output is no longer there, or cannot be downloaded here",
            502: "The output's object store failed",
            503: "The output's object store is unavailable for now",
        },
    ),
}


def output_router(
    *,
    store: Store,
    output_root: Path,
    stores: Callable[[TargetStorage | str], ObjectStore],
    storage_of: TargetStorageOf | None = None,
    link_seconds: int = DEFAULT_OUTPUT_LINK_S,
) -> APIRouter:
    """The output route; ``stores`` opens the store of a target (or of a URI's scheme), ``storage_of`` says
    which store the target the task ran on names (its endpoint is used to sign)."""
    router = APIRouter(tags=["tasks"])

    def remote_store(task: Task, uri: str) -> ObjectStore:
        storage = storage_of(task.spec.tenant, task.target) if storage_of and task.target else None
        if storage is not None and uri.startswith(storage.root):
            return stores(storage)
        return stores(uri)

    @router.get("/v1/tasks/{task_id}/output", response_model=None, response_class=Response, responses=_OUTPUT_ANSWERS)
    def output(task_id: str, principal: Caller, request: Request) -> Any:
        """The output of a succeeded task: streamed (local, ``Range`` supported) or a 307 to a short presigned URL."""
        task = _own_task(store, task_id, principal)
        if task.state != TaskState.SUCCEEDED:
            raise ApiError(
                409,
                "not_ready",
                f"the task is {task.state.value}; its output is available once it has succeeded",
                field="state",
            )
        uri = _written_at(store, task)
        scheme = uri_scheme(uri)
        if scheme == "file":
            return _local_output(task, uri, output_root)
        if scheme == "pvc":
            return _streamed(remote_store(task, uri), uri, request.headers.get("range"))
        if scheme not in ("s3", "az"):
            raise ApiError(410, "gone", f"outputs at {scheme}:// cannot be downloaded here", field="output")
        try:
            objects = remote_store(task, uri)
            if objects.head(uri) is None:
                raise ApiError(410, "gone", "the output object is no longer there", field="output")
            link = objects.presign(uri, seconds=link_seconds)
        except StoreError as exc:
            log.warning("", extra={"event": "output.store_failed", "task_id": task.id, "error": str(exc)})
            raise ApiError(
                503 if exc.transient else 502, "store_unavailable", f"the output's store: {exc}", field="output"
            ) from exc
        if link is None:
            raise ApiError(410, "gone", "the output's store cannot hand out links", field="output")
        log.info("", extra={"event": "output.link", "task_id": task.id, "seconds": link_seconds})
        return RedirectResponse(link, status_code=307, headers={"Cache-Control": "no-store"})

    return router
