"""The OpenAPI side of the tus routes (``api/upload_tus.py``): the headers they read and what they answer.

The handlers read their headers themselves (``api/upload_headers.py``, which
names the bad header in a 400, 412 or 422), so FastAPI cannot see them; this
module declares them, as strict as those checks where JSON Schema can say it.
What it cannot say: that ``Upload-Metadata``'s base64 values decode to a
safe file name and a hex sha256, and that a chunk matches its checksum.
"""

from __future__ import annotations

from typing import Any

from fastapi import Response

from controlplane.api.contract import CALLER, Responses, errors, header
from controlplane.api.upload_headers import CHECKSUM_MISMATCH, TUS_VERSION

__all__ = ["tus_create", "tus_delete", "tus_discovery", "tus_head", "tus_patch"]

#: base64 of at least one byte (an empty value is a missing one)
_B64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)"
#: ``filename`` and optionally ``sha256``, as fusionctl sends them (the server ignores other keys)
_METADATA = rf"^filename {_B64}(?:,sha256 {_B64})?$"
#: ``sha256 `` and the base64 of a 32-byte digest
_CHECKSUM = r"^sha256 [A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$"

_TUS = header("Tus-Resumable", {"type": "string", "enum": [TUS_VERSION]}, "The tus version: 1.0.0 (412 otherwise)")
_UPLOAD_ID = "No upload with this id for this tenant (another tenant's id included)"
_DISABLED = "No input root is configured: uploads are disabled"
_STATE_HEADERS = {
    "Tus-Resumable": {"schema": {"type": "string"}},
    "Upload-Offset": {"schema": {"type": "string"}, "description": "Bytes received so far"},
}


def _route(parameters: list[dict[str, Any]], responses: Responses, **extra: Any) -> dict[str, Any]:
    # the answers are bare responses (headers, no JSON body), whatever the route's default class
    return {"responses": responses, "response_class": Response, "openapi_extra": {"parameters": parameters, **extra}}


def tus_discovery() -> dict[str, Any]:
    """OPTIONS: no token, no body; the capabilities are headers."""
    return {
        "status_code": 204,
        "response_class": Response,
        "responses": {204: {"description": "Tus-Version, Tus-Extension, Tus-Max-Size and Tus-Checksum-Algorithm"}},
    }


def tus_create(max_upload_bytes: int) -> dict[str, Any]:
    """POST: a new upload of ``Upload-Length`` bytes named by ``Upload-Metadata``."""
    length = header(
        "Upload-Length",
        {"type": "integer", "minimum": 1, "maximum": max_upload_bytes},
        "The whole file's size in bytes (no deferred lengths)",
    )
    metadata = header(
        "Upload-Metadata",
        {"type": "string", "pattern": _METADATA},
        "`filename <base64>` (letters, digits, '.', '_', '-'; not starting with '.'), "
        "optionally `,sha256 <base64 of the hex digest>`",
    )
    answers = {
        201: {"description": "Created: `Location` is the upload's URL", "headers": {"Location": {"schema": {}}}},
        **errors(
            *CALLER,
            400,
            409,
            412,
            413,
            422,
            why={
                400: "A header is missing or malformed (`field` names it)",
                409: _DISABLED,
                413: "Upload-Length passes the upload limit or the tenant's quota",
                422: "An empty upload, or a file name or sha256 in Upload-Metadata that breaks its rule",
            },
        ),
    }
    return {"status_code": 201, **_route([_TUS, length, metadata], answers)}


def tus_head() -> dict[str, Any]:
    """HEAD: where to resume."""
    answers = {
        200: {"description": "Upload-Offset, Upload-Length and Upload-Metadata (and the URI once finished)"},
        **errors(*CALLER, 404, 409, 410, 412, why={404: _UPLOAD_ID, 409: _DISABLED, 410: "The upload expired"}),
    }
    return {"status_code": 200, **_route([_TUS], answers)}


def tus_patch(chunk_max_bytes: int) -> dict[str, Any]:
    """PATCH: one chunk at ``Upload-Offset``."""
    offset = header("Upload-Offset", {"type": "integer", "minimum": 0}, "Where this chunk starts (HEAD says)")
    checksum = header(
        "Upload-Checksum", {"type": "string", "pattern": _CHECKSUM}, "`sha256 <base64 digest>`", required=False
    )
    body = {
        "required": True,
        "content": {"application/offset+octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
    answers = {
        204: {"description": "The chunk is kept", "headers": _STATE_HEADERS},
        **errors(
            *CALLER,
            400,
            404,
            409,
            410,
            412,
            413,
            415,
            423,
            CHECKSUM_MISMATCH,
            why={
                400: "A header is missing or malformed (`field` names it)",
                404: _UPLOAD_ID,
                409: "Upload-Offset is not the upload's offset (the answer's `Upload-Offset` is), or uploads are "
                "disabled",
                410: "The upload expired",
                413: f"The chunk passes Upload-Length or {chunk_max_bytes} bytes",
            },
        ),
    }
    return {"status_code": 204, **_route([_TUS, offset, checksum], answers, requestBody=body)}


def tus_delete() -> dict[str, Any]:
    """DELETE: the upload and its file (not while an unfinished task reads it)."""
    answers = {
        204: {"description": "Deleted"},
        **errors(
            *CALLER,
            404,
            409,
            412,
            423,
            why={404: _UPLOAD_ID, 409: "An unfinished task reads this upload, or uploads are disabled"},
        ),
    }
    return {"status_code": 204, **_route([_TUS], answers)}
