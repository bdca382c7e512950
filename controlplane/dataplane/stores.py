"""Which :class:`~controlplane.dataplane.objects.ObjectStore` serves a target's store or a URI: :func:`open_store`.

One store object per service (kind and endpoint), made on first use and
kept: SDK clients are expensive to build and safe to share between threads.
The kinds:

- ``local`` (and plain paths, ``file://``): :class:`~controlplane.dataplane.local_store.LocalStore`;
- ``s3``: :class:`~controlplane.dataplane.s3_store.S3Store` on the store's ``endpoint_url``, else boto3's
  own (``AWS_ENDPOINT_URL`` or AWS);
- ``azure_blob`` (``az://``): the Blob store of ``controlplane/dataplane/blob_store.py``, through its
  ``open_blob_store(endpoint_url=..., settings=...)`` (the hook below);
- ``pvc``: :class:`~controlplane.dataplane.pvc_store.PvcStore` over the control plane's own mount of
  the claim (``StoreSettings.pvc_mounts``, from ``FUSIONPLANE_PVC_MOUNTS``); a claim this control plane
  does not mount is a :class:`~controlplane.dataplane.errors.StoreError`, not transient. One store per
  claim.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from controlplane.dataplane.errors import StoreError
from controlplane.dataplane.local_store import LocalStore
from controlplane.dataplane.objects import ObjectStore
from controlplane.dataplane.pvc_store import MOUNTS_VARIABLE, PvcStore, claim_of
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
    azure_connection_string: str | None = field(default=None, repr=False)
    #: ``FUSIONPLANE_PVC_MOUNTS``: claim -> where this control plane mounts it
    pvc_mounts: Mapping[str, Path] = field(default_factory=dict)


def _kind_and_service(where: TargetStorage | str) -> tuple[StorageKind, str | None]:
    """The store's kind and which service of that kind: the endpoint (s3, az; None: the default one) or
    the claim (pvc)."""
    if isinstance(where, TargetStorage):
        if where.kind == StorageKind.PVC:
            return where.kind, claim_of(where.root)
        return where.kind, where.endpoint_url
    scheme = uri_scheme(where) if "://" in where or where.startswith("/") else where
    kind = _KIND_OF_SCHEME.get(scheme)
    if kind is None:
        raise StoreError(f"no object store serves {scheme!r} URIs", transient=False)
    return kind, claim_of(where) if kind == StorageKind.PVC else None


def open_store(where: TargetStorage | str, settings: StoreSettings | None = None) -> ObjectStore:
    """A new store for a target's storage, or for a URI (or a bare scheme: ``s3``, ``az``, ``file``).

    A URI's own service is the default one of its scheme (boto3's endpoint for
    ``s3://``); a target's storage may name another (``endpoint_url``). A
    ``pvc`` store (or URI) is served from this control plane's mount of its
    claim.
    """
    settings = settings or StoreSettings()
    kind, service = _kind_and_service(where)
    if kind == StorageKind.LOCAL:
        return LocalStore()
    if kind == StorageKind.S3:
        from controlplane.dataplane.s3_store import S3Store  # boto3 only where an S3 store is used

        return S3Store(endpoint_url=service)
    if kind == StorageKind.AZURE_BLOB:
        return _blob_store(service, settings)
    return _pvc_store(service, settings)


def _pvc_store(claim: str | None, settings: StoreSettings) -> ObjectStore:
    if not claim:
        raise StoreError("a pvc store is opened by its claim (pvc://<claim>/...), not by its scheme", transient=False)
    mount = settings.pvc_mounts.get(claim)
    if mount is None:
        # only a worker's pod mounts the claim unless the operator mounts it into the control plane's pod too
        raise StoreError(
            f"claim {claim!r} is not mounted in the control plane: name it in {MOUNTS_VARIABLE} (claim=/mount/path)",
            transient=False,
        )
    return PvcStore(claim=claim, mount=mount)


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
        key = _kind_and_service(where)
        with self._lock:
            store = self._made.get(key)
            if store is None:
                store = self._made[key] = open_store(where, self.settings)
            return store
