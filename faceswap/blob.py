"""Azure Blob Storage for the worker: ``az://<account>/<container>/<blob>`` inputs, outputs and checkpoints.

Which endpoint: the one the worker spec names for the account (Azurite, a
sovereign cloud), else the Blob endpoint of a connection string for that
account, else ``https://<account>.blob.core.windows.net``. Which credential:
the account's key from the environment (``AZURE_STORAGE_CONNECTION_STRING``,
or ``AZURE_STORAGE_ACCOUNT`` + ``AZURE_STORAGE_KEY``, read by
:mod:`faceswap.config`), used for its own account only; else
``DefaultAzureCredential`` (the VM's managed identity).

Writes are all or nothing: ``upload_blob(overwrite=True)`` is one Put Blob
for a small file and, for a large one, staged blocks that become the blob only
when one Put Block List commits them; a reader sees the old blob or the new,
never half. SDK errors become the core's: throttling, 5xx and dropped
connections are temporary; a missing blob or container, a refused credential
or an address where nothing answers is bad input naming the field.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from faceswap.access import AzPath
from faceswap.config import WorkerSettings
from faceswap.errors import BadInput, FaceSwapError, TemporaryFailure

__all__ = [
    "BlobEndpoints",
    "account_endpoint",
    "blob_errors",
    "container_client",
    "download_blob",
    "upload_blob",
]

#: storage account -> Blob service endpoint, as the worker spec's ``blob_endpoints`` gives them
BlobEndpoints = Mapping[str, str]
#: Blob error codes that say "try again", whatever the HTTP status
_TEMPORARY_CODES = {"ServerBusy", "OperationTimedOut", "InternalError"}
#: timeouts of one request (seconds); retries are :func:`_retry_policy`'s
_CLIENT_OPTIONS: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 60}


def _connection_string(text: str | None) -> dict[str, str]:
    """``Key=Value;...`` with lower-cased keys (values may hold ``=``: base64 keys do)."""
    parts = (item.partition("=") for item in (text or "").split(";") if "=" in item)
    return {key.strip().lower(): value.strip() for key, _, value in parts}


def _key_for(account: str, settings: WorkerSettings) -> tuple[dict[str, str], str | None]:
    """The connection string's fields when it names ``account`` ({} otherwise) and the account's key, if any."""
    conn = _connection_string(settings.blob_connection_string)
    if conn.get("accountname") == account:
        return conn, conn.get("accountkey") or None
    if settings.blob_account_key is not None and settings.blob_account_key[0] == account:
        return {}, settings.blob_account_key[1]
    return {}, None


def account_endpoint(
    account: str, endpoints: BlobEndpoints | None = None, settings: WorkerSettings | None = None
) -> str:
    """The Blob service endpoint of ``account`` (see the module's order)."""
    if endpoints and endpoints.get(account):
        return endpoints[account].rstrip("/")
    conn, _key = _key_for(account, settings or WorkerSettings.from_env())
    if conn.get("blobendpoint"):
        return conn["blobendpoint"].rstrip("/")
    if conn.get("endpointsuffix"):
        return f"{conn.get('defaultendpointsprotocol', 'https')}://{account}.blob.{conn['endpointsuffix']}"
    return f"https://{account}.blob.core.windows.net"


@functools.cache
def _default_credential() -> Any:
    """One ``DefaultAzureCredential`` per process, so its token cache is shared."""
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()


def container_client(path: AzPath, endpoints: BlobEndpoints | None = None) -> Any:
    """A ``ContainerClient`` for ``path``'s container, with the account's credential; no I/O yet."""
    from azure.core.credentials import AzureNamedKeyCredential, AzureSasCredential
    from azure.storage.blob import ContainerClient

    # one INFO line per request from azure-core would drown the worker's own log
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    settings = WorkerSettings.from_env()
    conn, key = _key_for(path.account, settings)
    credential: Any
    if key:
        credential = AzureNamedKeyCredential(path.account, key)
    elif conn.get("sharedaccesssignature"):
        credential = AzureSasCredential(conn["sharedaccesssignature"])
    else:
        credential = _default_credential()
    return ContainerClient(
        account_url=account_endpoint(path.account, endpoints, settings),
        container_name=path.container,
        credential=credential,
        retry_policy=_retry_policy(),
        **_CLIENT_OPTIONS,
    )


def _retry_policy() -> Any:
    """Two quick retries: a worker on a spot node should fail over, not sit in the SDK's default backoff
    (15 s and up, ten times)."""
    from azure.storage.blob import LinearRetry

    return LinearRetry(backoff=1, random_jitter_range=1, retry_total=2)  # 0-2 s apart: workers spread out


def _classify(exc: BaseException, message: str, field: str) -> FaceSwapError:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestTimeoutError,
        ServiceResponseError,
    )

    text = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, HttpResponseError) and exc.status_code:
        status = int(exc.status_code)
        code = getattr(exc, "error_code", None)  # storage errors carry one, a StorageErrorCode (a str enum)
        code = str(getattr(code, "value", code) or f"HTTP {status}")
        temporary = status >= 500 or status == 429 or code in _TEMPORARY_CODES
        return (TemporaryFailure if temporary else BadInput)(f"{message}: {code}: {text}", field=field)
    if isinstance(exc, ClientAuthenticationError):  # no credential could get a token: the same on every retry
        return BadInput(f"{message}: no usable Azure credential: {text}", field=field)
    if isinstance(exc, (ServiceRequestTimeoutError, ServiceResponseError)):
        return TemporaryFailure(f"{message}: {text}", field=field)
    # ServiceRequestError and the rest: nothing answered at that address (refused, unknown host)
    return BadInput(f"{message}: {text}", field=field)


@contextlib.contextmanager
def blob_errors(message: str, *, field: str) -> Iterator[None]:
    """Turn Azure SDK errors raised inside the block into classified core errors naming ``field``."""
    from azure.core.exceptions import AzureError

    try:
        yield
    except AzureError as exc:
        raise _classify(exc, message, field) from exc


def download_blob(
    path: AzPath, dest: Path, *, field: str, max_bytes: int | None, endpoints: BlobEndpoints | None = None
) -> None:
    """Download one blob to ``dest``; one larger than ``max_bytes`` (None: no cap) is refused before it is read.

    The download is pinned to the ETag seen first, so a blob replaced halfway
    fails (temporary: the next attempt reads the new one whole) rather than
    mixing two versions.
    """
    from azure.core import MatchConditions

    with blob_errors(f"cannot read {path}", field=field):
        blob = container_client(path, endpoints).get_blob_client(path.name)
        properties = blob.get_blob_properties()
        if max_bytes is not None and int(properties.size or 0) > max_bytes:
            raise BadInput(f"cannot read {path}: larger than the {max_bytes} byte limit", field=field)
        with dest.open("wb") as handle:
            stream = blob.download_blob(
                etag=properties.etag, match_condition=MatchConditions.IfNotModified, max_concurrency=2
            )
            stream.readinto(handle)


def upload_blob(path: AzPath, local: Path, *, field: str, endpoints: BlobEndpoints | None = None) -> None:
    """Publish ``local`` at ``path``, all or nothing (see the module docstring), replacing what was there."""
    with blob_errors(f"cannot write {path}", field=field), local.open("rb") as handle:
        container_client(path, endpoints).upload_blob(path.name, handle, overwrite=True, max_concurrency=2)
