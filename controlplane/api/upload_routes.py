"""Uploads into the caller's tenant folder: ``PUT /v1/uploads/{filename}`` in one go, or resumable (tus).

The resumable routes (``POST``/``HEAD``/``PATCH``/``DELETE`` under
``/v1/uploads/``) are ``api/upload_tus.py``; both kinds share one quota ledger.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request

from controlplane.api.deps import Caller
from controlplane.api.errors import ApiError
from controlplane.api.upload_tus import add_tus_routes
from controlplane.api.uploads import UploadLedger, receive_upload
from controlplane.config import Settings

__all__ = ["upload_router"]


_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


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

    @router.put("/v1/uploads/{filename}", status_code=201, tags=["tasks"])
    async def upload(filename: str, request: Request, principal: Caller) -> dict[str, Any]:
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
