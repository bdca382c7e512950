"""Azure Blob Storage (or Azurite in tests) as an ``ObjectStore``: ``az://<account>/<container>/<blob>`` URIs.

Writes stage the source as blocks, read one at a time and hashed with
sha256 as they are read; only when every byte was read and hashes to the
promise does one Put Block List commit them, with the sha256 as the blob's
metadata. Until that commit the blocks are no blob at all: a reader sees
what was there before (or nothing), and on a mismatch nothing is committed
(Azure discards uncommitted blocks by itself within a week; they are never
listed nor readable).

Endpoint of an account: the store's ``endpoint_url`` (a target's storage:
Azurite, a sovereign cloud), else the Blob endpoint of a connection string
for that account, else ``https://<account>.blob.core.windows.net``.
Credential: the connection string's account key for its own account, else
``DefaultAzureCredential``. A presigned URL is a read-only SAS for one blob:
signed with the account key when there is one, else a user delegation SAS
(the identity needs "Storage Blob Delegator" and read access).

Errors are translated here once (:class:`StoreError`): throttling, 5xx and
an endpoint that does not answer are transient; a refused credential, a
missing container or another 4xx are not.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, Protocol

from azure.core.credentials import AzureNamedKeyCredential
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobSasPermissions, BlobServiceClient, LinearRetry, generate_blob_sas

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.objects import ObjectInfo, read_exactly
from faceswap.access import AzPath, split_az

__all__ = ["BLOCK_BYTES", "BlobStore", "open_blob_store"]

#: the size of one staged block (and so of what is held in memory at once)
BLOCK_BYTES = 8 << 20
_SHA256_KEY = "sha256"
_TRANSIENT_CODES = frozenset({"ServerBusy", "OperationTimedOut", "InternalError"})
#: a SAS starts a little in the past: the service's clock may be behind ours
_CLOCK_SKEW = timedelta(minutes=5)


class BlobCredentials(Protocol):
    """What the store reads of the control plane's store settings (``StoreSettings``)."""

    azure_connection_string: str | None


def _connection_string(text: str | None) -> dict[str, str]:
    """``Key=Value;...`` with lower-cased keys (values may hold ``=``: base64 keys do)."""
    parts = (item.partition("=") for item in (text or "").split(";") if "=" in item)
    return {key.strip().lower(): value.strip() for key, _, value in parts}


def _translate(exc: AzureError, where: str) -> StoreError:
    text = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, HttpResponseError) and exc.status_code:
        status = int(exc.status_code)
        code = getattr(exc, "error_code", None)
        code = str(getattr(code, "value", code) or f"HTTP {status}")
        transient = status >= 500 or status == 429 or code in _TRANSIENT_CODES
        return StoreError(f"{where}: {code}: {text}", transient=transient)
    # no answer, a dropped connection, no token yet (a managed identity that is not ready)
    return StoreError(f"{where}: {type(exc).__name__}: {text}", transient=True)


def _block_id(number: int) -> str:
    # block ids of one blob must all have the same length
    return base64.b64encode(f"block-{number:08d}".encode()).decode()


class BlobStore:
    """Objects under ``az://`` URIs, every account reached at its endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        endpoint_url: str | None = None,
        connection_string: str | None = None,
        credential: Any = None,
        block_bytes: int = BLOCK_BYTES,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._endpoint = endpoint_url.rstrip("/") if endpoint_url else None
        self._conn = _connection_string(connection_string)
        self._credential = credential
        self._block_bytes = block_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._services: dict[str, Any] = {}
        # one INFO line per request from azure-core would drown the control plane's own JSON log
        logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

    def _key(self, account: str) -> str | None:
        return self._conn.get("accountkey") if self._conn.get("accountname") == account else None

    def _account_url(self, account: str) -> str:
        if self._endpoint:
            return self._endpoint
        if self._conn.get("accountname") == account and self._conn.get("blobendpoint"):
            return self._conn["blobendpoint"].rstrip("/")
        return f"https://{account}.blob.core.windows.net"

    def _service(self, account: str) -> Any:
        """One ``BlobServiceClient`` per account, made on first use (they are thread-safe)."""
        with self._lock:
            service = self._services.get(account)
            if service is None:
                key = self._key(account)
                if key:
                    credential: Any = AzureNamedKeyCredential(account, key)
                else:
                    if self._credential is None:
                        from azure.identity import DefaultAzureCredential

                        self._credential = DefaultAzureCredential()
                    credential = self._credential
                service = self._services[account] = BlobServiceClient(
                    account_url=self._account_url(account),
                    credential=credential,
                    retry_policy=LinearRetry(backoff=1, random_jitter_range=1, retry_total=2),
                    connection_timeout=10,
                    read_timeout=60,
                )
            return service

    def _blob(self, uri: str) -> tuple[AzPath, Any]:
        path = split_az(uri)
        if not path.name or path.name.endswith("/"):
            raise ValueError(f"az URIs name an account, a container and a blob: {uri!r}")
        return path, self._service(path.account).get_blob_client(path.container, path.name)

    def put(self, uri: str, data: BinaryIO, *, sha256: str, size: int) -> ObjectInfo:
        path, blob = self._blob(uri)
        digest, read = hashlib.sha256(), 0
        blocks: list[str] = []
        try:
            while read < size:
                block = read_exactly(data, min(self._block_bytes, size - read))
                if not block:
                    raise ValueError(f"the source ended after {read} of {size} bytes")
                read += len(block)
                digest.update(block)
                blocks.append(_block_id(len(blocks)))
                blob.stage_block(blocks[-1], block, length=len(block))
            if data.read(1):
                raise ValueError(f"the source holds more than the promised {size} bytes")
            if digest.hexdigest() != sha256:
                raise ValueError("the bytes read do not hash to the promised sha256")
            blob.commit_block_list(blocks, metadata={_SHA256_KEY: sha256})
        except AzureError as exc:
            raise _translate(exc, f"writing {path}") from exc
        return ObjectInfo(uri=uri, size=size, sha256=sha256)

    def head(self, uri: str) -> ObjectInfo | None:
        path, blob = self._blob(uri)
        try:
            properties = blob.get_blob_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _translate(exc, f"reading {path}") from exc
        metadata = properties.metadata or {}
        return ObjectInfo(uri=uri, size=int(properties.size), sha256=metadata.get(_SHA256_KEY))

    def open_read(self, uri: str, *, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path, blob = self._blob(uri)
        if start < 0 or (end is not None and end <= start):
            return iter(())
        try:
            stream = blob.download_blob(offset=start or None, length=None if end is None else end - start)
        except AzureError as exc:
            raise _translate(exc, f"reading {path}") from exc

        def chunks() -> Iterator[bytes]:
            try:
                yield from stream.chunks()
            except AzureError as exc:
                raise _translate(exc, f"reading {path}") from exc

        return chunks()

    def presign(self, uri: str, *, seconds: int) -> str | None:
        path, blob = self._blob(uri)
        now = self._clock()
        expiry = now + timedelta(seconds=seconds)
        signing: dict[str, Any] = {}
        key = self._key(path.account)
        try:
            if key:
                signing["account_key"] = key
            else:
                signing["user_delegation_key"] = self._service(path.account).get_user_delegation_key(
                    key_start_time=now - _CLOCK_SKEW, key_expiry_time=expiry
                )
        except AzureError as exc:
            raise _translate(exc, f"signing {path}") from exc
        token = generate_blob_sas(
            account_name=path.account,
            container_name=path.container,
            blob_name=path.name,
            permission=BlobSasPermissions(read=True),
            start=now - _CLOCK_SKEW,
            expiry=expiry,
            **signing,
        )
        return f"{blob.url}?{token}"

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        path = split_az(prefix)
        container = self._service(path.account).get_container_client(path.container)
        try:
            for item in container.list_blobs(name_starts_with=path.name or None, include=["metadata"]):
                metadata = item.metadata or {}
                uri = f"az://{path.account}/{path.container}/{item.name}"
                yield ObjectInfo(uri=uri, size=int(item.size), sha256=metadata.get(_SHA256_KEY))
        except AzureError as exc:
            raise _translate(exc, f"listing {prefix}") from exc

    def delete_prefix(self, prefix: str) -> int:
        path = split_az(prefix)
        if not path.name.endswith("/"):
            raise ValueError(f"a prefix to delete is a folder inside a container, ending in '/': {prefix!r}")
        container = self._service(path.account).get_container_client(path.container)
        removed = 0
        for info in self.list(prefix):
            name = split_az(info.uri).name
            try:
                container.delete_blob(name, delete_snapshots="include")
            except ResourceNotFoundError:
                continue  # gone meanwhile (another replica's retention): what was asked is done
            except AzureError as exc:
                raise _translate(exc, f"deleting {info.uri}") from exc
            removed += 1
        return removed


def open_blob_store(*, endpoint_url: str | None, settings: BlobCredentials) -> BlobStore:
    """The hook ``controlplane.dataplane.stores`` calls for ``azure_blob`` stores."""
    return BlobStore(endpoint_url=endpoint_url, connection_string=settings.azure_connection_string)
