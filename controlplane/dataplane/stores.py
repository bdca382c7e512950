"""Which :class:`~controlplane.dataplane.objects.ObjectStore` serves a target's store or a URI: :func:`open_store`.

One store object per service (kind and endpoint), made on first use and
kept: SDK clients are expensive to build and safe to share between threads.
The kinds:

- ``local`` (and plain paths, ``file://``): :class:`~controlplane.dataplane.local_store.LocalStore`;
- ``s3``: :class:`~controlplane.dataplane.s3_store.S3Store` on the store's ``endpoint_url``, else boto3's
  own (``AWS_ENDPOINT_URL`` or AWS);
- ``azure_blob`` (``az://``): the Blob store of ``controlplane/dataplane/blob_store.py``, through its
  ``open_blob_store(endpoint_url=..., settings=...)`` (the hook below);
- ``pvc``: only a worker's pod mounts the claim; the control plane cannot write there
  (:class:`~controlplane.dataplane.errors.StoreError`, not transient).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import cast

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.local_store import LocalStore
from controlplane.dataplane.objects import ObjectStore
from controlplane.domain.target_storage import StorageKind, TargetStorage, uri_scheme

__all__ = ["StoreSettings", "Stores", "open_store"]

_KIND_OF_SCHEME = {
    "file": StorageKind.LOCAL,
    "s3": StorageKind.S3,
    "az": StorageKind.AZURE_BLOB,
    "pvc": StorageKind.PVC,
}


@dataclass(frozen=True, kw_only=True)
class StoreSettings:
    """What the stores need beyond a target's storage; filled from ``Settings`` by whoever builds them."""

    #: Azure Blob: a connection string (Azurite, an account key); None: ``DefaultAzureCredential``
    azure_connection_string: str | None = None


def _kind_and_endpoint(where: TargetStorage | str) -> tuple[StorageKind, str | None]:
    if isinstance(where, TargetStorage):
        return where.kind, where.endpoint_url
    scheme = uri_scheme(where) if "://" in where or where.startswith("/") else where
    kind = _KIND_OF_SCHEME.get(scheme)
    if kind is None:
        raise StoreError(f"no object store serves {scheme!r} URIs", transient=False)
    return kind, None


def open_store(where: TargetStorage | str, settings: StoreSettings | None = None) -> ObjectStore:
    """A new store for a target's storage, or for a URI (or a bare scheme: ``s3``, ``az``, ``file``).

    A URI's own service is the default one of its scheme (boto3's endpoint for
    ``s3://``); a target's storage may name another (``endpoint_url``).
    """
    kind, endpoint = _kind_and_endpoint(where)
    if kind == StorageKind.LOCAL:
        return LocalStore()
    if kind == StorageKind.S3:
        from controlplane.dataplane.s3_store import S3Store  # boto3 only where an S3 store is used

        return S3Store(endpoint_url=endpoint)
    if kind == StorageKind.AZURE_BLOB:
        return _blob_store(endpoint, settings or StoreSettings())
    raise StoreError(
        "the control plane cannot write into a pvc store (only the worker's pod mounts the claim)", transient=False
    )


def _blob_store(endpoint: str | None, settings: StoreSettings) -> ObjectStore:
    """The hook for ``azure_blob``: ``controlplane.dataplane.blob_store.open_blob_store``, written beside this."""
    try:
        module = importlib.import_module("controlplane.dataplane.blob_store")
    except ImportError as exc:
        raise StoreError("Azure Blob stores are not available in this build", transient=False) from exc
    opener = getattr(module, "open_blob_store", None)
    if opener is None:
        raise StoreError("controlplane.dataplane.blob_store has no open_blob_store()", transient=False)
    return cast(ObjectStore, opener(endpoint_url=endpoint, settings=settings))


class Stores:
    """The stores of one control plane, one per service, made on first use (thread-safe)."""

    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self._lock = threading.Lock()
        self._made: dict[tuple[StorageKind, str | None], ObjectStore] = {}

    def __call__(self, where: TargetStorage | str) -> ObjectStore:
        key = _kind_and_endpoint(where)
        with self._lock:
            store = self._made.get(key)
            if store is None:
                store = self._made[key] = open_store(where, self.settings)
            return store
