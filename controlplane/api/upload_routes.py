"""Uploads into the caller's tenant folder: ``PUT /v1/uploads/{filename}`` in one go, or resumable (tus).

The resumable routes (``POST``/``HEAD``/``PATCH``/``DELETE`` under
``/v1/uploads/``) are ``api/upload_tus.py``; both kinds share one quota ledger.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import Caller
from controlplane.api.errors import ApiError
from controlplane.api.upload_tus import add_tus_routes
from controlplane.api.uploads import UploadLedger, receive_upload
from controlplane.config import Settings

__all__ = ["upload_router"]


_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
#: ``_SAFE_NAME`` not starting with "." as the OpenAPI document says it (the handler's check gives the message)
_FILENAME = r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$"
_PUT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes, as they are (an empty body is refused)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary", "minLength": 1}}},
    }
}
_PUT_ERRORS = errors(
    *CALLER,
    409,
    413,
    422,
    why={
        403: "A metrics token, or a tenant that cannot name a folder",
        409: "No input root is configured: uploads are disabled",
        413: "The file passes the upload limit or the tenant's upload quota",
        422: "A file name with other than letters, digits, '.', '_' and '-' (or starting with '.'), or an empty file",
    },
)


def _no_uploads() -> set[str]:
    return set()


def upload_router(*, settings: Settings, in_use: Callable[[], set[str]] = _no_uploads) -> APIRouter:
    """``PUT /v1/uploads/{filename}`` and the tus routes: into the caller's tenant folder, within its quota.

    ``in_use`` gives the input URIs of unfinished tasks (a finished upload
    they read cannot be deleted).
    """
    router = APIRouter()
    ledger = (
        UploadLedger(root=settings.input_roots[0], quota_bytes=settings.upload_quota_bytes)
        if settings.input_roots
        else None
    )
    add_tus_routes(router, settings=settings, ledger=ledger, in_use=in_use)

    @router.put("/v1/uploads/{name}", status_code=201, tags=["tasks"], responses=_PUT_ERRORS, openapi_extra=_PUT_BODY)
    async def upload(
        # one URL shape with the tus routes, so one parameter name (OpenAPI allows no two templates that differ only
        # by it, and a 405's Allow must name every method of the URL): here it is the file's name
        filename: Annotated[
            str, Path(alias="name", description="the file's name", json_schema_extra={"pattern": _FILENAME})
        ],
        request: Request,
        principal: Caller,
    ) -> dict[str, Any]:
        """Store a local file for a task (``fusionctl submit`` with local paths); returns the URI to use."""
        if not _SAFE_NAME.match(filename) or filename.startswith("."):
            raise ApiError(422, "invalid", "letters, digits, '.', '_' and '-' only", field="filename")
        if ledger is None:
            raise ApiError(409, "uploads_disabled", "no input root is configured", field="filename")
        return await receive_upload(
            chunks=request.stream(),
            filename=filename,
            tenant=principal.tenant,
            ledger=ledger,
            max_bytes=settings.max_upload_bytes,
        )

    return router
