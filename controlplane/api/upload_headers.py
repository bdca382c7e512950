"""The tus 1.0.0 request headers, read strictly: a bad one is an :class:`ApiError` naming the header.

Every request but OPTIONS carries ``Tus-Resumable: 1.0.0`` (412 otherwise,
with ``Tus-Version`` saying what we speak). Numbers are non-negative decimal
integers; ``Upload-Metadata`` is ``key base64,key base64``; and
``Upload-Checksum`` is ``sha256 <base64 of the 32-byte digest>`` (the only
algorithm offered).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from starlette.requests import Request

from controlplane.api.errors import ApiError

__all__ = [
    "CHECKSUM_MISMATCH",
    "TUS_VERSION",
    "UploadMetadata",
    "chunk_checksum",
    "count_header",
    "metadata_header",
    "require_tus",
]

TUS_VERSION = "1.0.0"
#: the tus checksum extension's status for a chunk (or, here, a whole file) whose digest differs
CHECKSUM_MISMATCH = 460
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_KEY = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def require_tus(request: Request) -> None:
    """412 unless the request says ``Tus-Resumable: 1.0.0``."""
    given = request.headers.get("tus-resumable")
    if given != TUS_VERSION:
        said = "is missing" if given is None else f"is {given!r}"
        raise ApiError(
            412,
            "tus_version",
            f"Tus-Resumable {said}; this server speaks tus {TUS_VERSION}",
            field="Tus-Resumable",
            headers={"Tus-Version": TUS_VERSION},
        )


def count_header(request: Request, name: str, *, required: bool = True) -> int | None:
    """A non-negative integer header; 400 naming it when missing (and required) or not such a number."""
    raw = request.headers.get(name)
    if raw is None:
        if required:
            raise ApiError(400, "invalid", f"the {name} header is required", field=name)
        return None
    if not _DIGITS.match(raw.strip()):
        raise ApiError(400, "invalid", f"{name} must be a whole number of bytes, 0 or more", field=name)
    return int(raw.strip())


def _b64(value: str, *, field: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid", "is not valid base64", field=field) from None


@dataclass(frozen=True, kw_only=True)
class UploadMetadata:
    """What we read from ``Upload-Metadata``: the file name and, optionally, the whole file's sha256."""

    filename: str
    sha256: str | None

    def header(self) -> str:
        """The ``Upload-Metadata`` value HEAD gives back."""
        pairs = {"filename": self.filename, "sha256": self.sha256}
        return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in pairs.items() if value)


def metadata_header(request: Request) -> UploadMetadata:
    """``Upload-Metadata`` with a safe ``filename`` (required) and an optional hex ``sha256``; other keys ignored."""
    field = "Upload-Metadata"
    raw = request.headers.get(field)
    if raw is None or not raw.strip():
        raise ApiError(400, "invalid", "the Upload-Metadata header with a filename is required", field=field)
    values: dict[str, bytes] = {}
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not _KEY.match(key) or key in values:
            raise ApiError(400, "invalid", f"{key!r} is not a metadata key (or is repeated)", field=field)
        values[key] = _b64(value.strip(), field=f"{field} {key}")
    try:
        filename = values["filename"].decode("utf-8") if "filename" in values else ""
        digest = values["sha256"].decode("ascii").lower() if "sha256" in values else None
    except UnicodeDecodeError:
        raise ApiError(422, "invalid", "filename and sha256 must be text", field=field) from None
    if not filename:
        raise ApiError(400, "invalid", "Upload-Metadata needs a filename", field=f"{field} filename")
    if not _SAFE_NAME.match(filename) or filename.startswith("."):
        # no separators, no "..", no NUL: the name becomes a file in the upload folder as it is
        raise ApiError(
            422,
            "invalid",
            "letters, digits, '.', '_' and '-' only, not starting with '.'",
            field=f"{field} filename",
        )
    if digest is not None and not _HEX_SHA256.match(digest):
        raise ApiError(422, "invalid", "sha256 must be 64 hexadecimal digits", field=f"{field} sha256")
    return UploadMetadata(filename=filename, sha256=digest)


def chunk_checksum(request: Request) -> bytes | None:
    """The chunk's expected sha256 digest from ``Upload-Checksum``; None when the chunk carries none."""
    field = "Upload-Checksum"
    raw = request.headers.get(field)
    if raw is None:
        return None
    algorithm, _, value = raw.strip().partition(" ")
    if algorithm.lower() != "sha256":
        # tus: an algorithm the server does not support is 400
        raise ApiError(400, "invalid", f"unsupported checksum algorithm {algorithm!r}; use sha256", field=field)
    digest = _b64(value.strip(), field=field)
    if len(digest) != 32:
        raise ApiError(400, "invalid", "a sha256 digest is 32 bytes (base64)", field=field)
    return digest
