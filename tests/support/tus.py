"""tus 1.0.0 requests for the upload tests: the headers spelled out once, over a plain httpx client."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx

__all__ = ["TUS", "b64", "create", "metadata", "patch"]

TUS = {"Tus-Resumable": "1.0.0"}


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def metadata(filename: str = "clip.bin", *, sha256: str | None = None) -> str:
    pairs = [f"filename {b64(filename)}"]
    if sha256 is not None:
        pairs.append(f"sha256 {b64(sha256)}")
    return ",".join(pairs)


def create(client: httpx.Client, length: int, *, filename: str = "clip.bin", sha256: str | None = None) -> str:
    """POST a new upload; its path (the Location)."""
    response = client.post(
        "/v1/uploads/",
        headers={**TUS, "Upload-Length": str(length), "Upload-Metadata": metadata(filename, sha256=sha256)},
    )
    assert response.status_code == 201, response.text
    location: str = response.headers["location"]
    return location


def patch(
    client: httpx.Client, location: str, offset: int, data: bytes, *, checksum: bool = True, **headers: Any
) -> httpx.Response:
    """PATCH ``data`` at ``offset``, with its sha256 in Upload-Checksum unless ``checksum`` is False."""
    values = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": str(offset)}
    if checksum:
        values["Upload-Checksum"] = f"sha256 {b64(hashlib.sha256(data).digest())}"
    values.update(headers)
    return client.patch(location, content=data, headers=values)
