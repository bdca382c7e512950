"""A target's ``storage`` object -> :class:`TargetStorage`, refusing what its provider's workers could not use.

The JSON form (docs/policies.md, "Target storage")::

    "storage": {"uri": "s3://fp-work/aws/", "endpoint_url": "https://minio.fp.svc:9000"}

Which kind fits which provider (the store is where that provider's workers
read and write, so a store they cannot reach is a policy error, not a
failed task later):

- ``s3://bucket/prefix/``: ``aws``; ``kubernetes`` (AWS S3, or with
  ``endpoint_url`` an S3-compatible store in the cluster); ``local`` (the worker runs here with
  the control plane's own credentials, so a video can resume between this
  machine and a cloud on the same bucket);
- ``az://account/container/prefix/``: ``azure``, ``kubernetes`` on an AKS
  node pool (``cloud.provider: azure``), and ``local`` likewise;
- ``pvc://claim/prefix/`` with an absolute ``mount_path``: ``kubernetes`` only;
- an absolute path (or ``file://``): ``local`` only.

The root always ends in ``/`` (added when missing); no segment may be ``.``
or ``..``, no query or fragment; bucket, account, container and claim names
follow their service's rules; ``endpoint_url`` is an http(s) URL with a host
and nothing else (no user info, query or fragment). Every error names the
JSON path (``targets[2].storage.uri``).
"""

from __future__ import annotations

import posixpath
import re
from typing import Any
from urllib.parse import urlsplit

from controlplane.domain.fields import json_type_name
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.policy.model import PolicyError

__all__ = ["PROVIDERS_OF_KIND", "parse_target_storage"]

_KEYS = frozenset({"uri", "endpoint_url", "mount_path"})
_MAX_URI = 1024
#: the providers whose workers can use each kind of store (see the module docstring)
PROVIDERS_OF_KIND: dict[StorageKind, tuple[str, ...]] = {
    StorageKind.S3: ("aws", "kubernetes", "local"),
    StorageKind.AZURE_BLOB: ("azure", "local"),
    StorageKind.PVC: ("kubernetes",),
    StorageKind.LOCAL: ("local",),
}
_KIND_OF_SCHEME = {"s3": StorageKind.S3, "az": StorageKind.AZURE_BLOB, "pvc": StorageKind.PVC}
#: S3 bucket names (the general-purpose rules): 3..63 of [a-z0-9.-], a letter or digit at each end
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_ACCOUNT = re.compile(r"^[a-z0-9]{3,24}$")
#: Blob container names: 3..63 of [a-z0-9-], a letter or digit first and last, no "--"
_CONTAINER = re.compile(r"^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$")
#: a Kubernetes object name (DNS-1123 subdomain), as a PersistentVolumeClaim's must be
_CLAIM = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")
#: one segment of a store prefix or a mount path: plain characters only, so a key means the same to every SDK
_SEGMENT = re.compile(r"^[A-Za-z0-9._=+@-]{1,255}$")


def parse_target_storage(value: Any, path: str, *, provider: str, cloud: str | None = None) -> TargetStorage:
    """``targets[i].storage`` as a :class:`TargetStorage` for a target of ``provider``.

    ``cloud``: a kubernetes target's node-pool cloud, whose bucket its pods may use too (an AKS pod reads
    Blob storage with its workload identity, as an Azure VM does with its managed identity).

    ``PolicyError`` names the bad field (``targets[2].storage.uri``).
    """
    if not isinstance(value, dict):
        raise PolicyError(path, f"must be an object, not {json_type_name(value)}")
    for key in sorted(value):
        if key not in _KEYS:
            raise PolicyError(f"{path}.{key}", f"unknown field (allowed: {', '.join(sorted(_KEYS))})")
    if "uri" not in value:
        raise PolicyError(f"{path}.uri", "is required")
    uri_path = f"{path}.uri"
    kind, root = _root(value["uri"], uri_path)
    allowed = PROVIDERS_OF_KIND[kind]
    if provider not in allowed and (cloud is None or cloud not in allowed):
        raise PolicyError(
            uri_path, f"store kind {kind} does not fit provider {provider} (it fits: {', '.join(allowed)})"
        )
    endpoint = value.get("endpoint_url")
    if endpoint is not None:
        if kind not in (StorageKind.S3, StorageKind.AZURE_BLOB):
            raise PolicyError(f"{path}.endpoint_url", f"only applies to s3 and az stores, not {kind}")
        endpoint = _endpoint(endpoint, f"{path}.endpoint_url")
    mount = value.get("mount_path")
    if mount is not None and kind != StorageKind.PVC:
        raise PolicyError(f"{path}.mount_path", f"only applies to pvc stores, not {kind}")
    if kind == StorageKind.PVC:
        if mount is None:
            raise PolicyError(f"{path}.mount_path", "is required for a pvc store (where the pod mounts the claim)")
        mount = _absolute(mount, f"{path}.mount_path").rstrip("/")
        if not mount:
            raise PolicyError(f"{path}.mount_path", "must not be / (the claim would hide the image's files)")
    return TargetStorage(kind=kind, root=root, endpoint_url=endpoint, mount_path=mount)


def _root(value: Any, path: str) -> tuple[StorageKind, str]:
    """The store's kind and its root, ending in ``/``."""
    if not isinstance(value, str) or not value:
        raise PolicyError(path, "must be a non-empty string")
    if len(value) > _MAX_URI or any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise PolicyError(path, f"must be at most {_MAX_URI} characters with no spaces or control characters")
    if "?" in value or "#" in value:
        raise PolicyError(path, "must not hold a query or fragment")
    if value.startswith("/") or value.startswith("file://"):
        return StorageKind.LOCAL, _absolute(value.removeprefix("file://"), path).rstrip("/") + "/"
    scheme, sep, rest = value.partition("://")
    kind = _KIND_OF_SCHEME.get(scheme) if sep else None
    if kind is None:
        raise PolicyError(
            path, "must be s3://bucket/prefix/, az://account/container/prefix/, pvc://claim/prefix/ or an absolute path"
        )
    parts = rest.rstrip("/").split("/")
    _check_names(kind, parts, path)
    for segment in parts[1:]:
        _segment(segment, path)
    return kind, f"{scheme}://{'/'.join(parts)}/"


def _check_names(kind: StorageKind, parts: list[str], path: str) -> None:
    name = parts[0]
    if kind == StorageKind.S3 and (not _BUCKET.match(name) or ".." in name or _IPV4.match(name)):
        raise PolicyError(path, f"{name!r} is not a valid S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    if kind == StorageKind.AZURE_BLOB:
        if not _ACCOUNT.match(name):
            raise PolicyError(path, f"{name!r} is not a valid storage account name (3-24 of a-z, 0-9)")
        if len(parts) < 2 or not _CONTAINER.match(parts[1]):
            container = parts[1] if len(parts) > 1 else ""
            raise PolicyError(path, f"needs a valid container after the account ({container!r}: 3-63 of a-z, 0-9, '-')")
    if kind == StorageKind.PVC and not _CLAIM.match(name):
        raise PolicyError(path, f"{name!r} is not a valid PersistentVolumeClaim name")


def _segment(segment: str, path: str) -> None:
    if segment in ("", ".", ".."):
        raise PolicyError(path, "must not hold empty, '.' or '..' segments")
    if not _SEGMENT.match(segment):
        raise PolicyError(path, f"segment {segment!r} may hold only letters, digits and . _ = + @ -")


def _absolute(value: Any, path: str) -> str:
    """An absolute local path, every segment plain (``..`` refused, not resolved)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise PolicyError(path, "must be an absolute path")
    for segment in value.strip("/").split("/"):
        if segment:
            _segment(segment, path)
    if "//" in value.rstrip("/"):
        raise PolicyError(path, "must not hold empty segments")
    return posixpath.normpath(value) if value != "/" else "/"


def _endpoint(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_URI:
        raise PolicyError(path, "must be a non-empty http(s) URL")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in value):
        raise PolicyError(path, "must not hold spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (a bad port raises here)
    except ValueError as exc:
        raise PolicyError(path, f"is not a URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise PolicyError(path, "must be an http:// or https:// URL")
    if not parts.hostname:
        raise PolicyError(path, "must name a host")
    if parts.username is not None or parts.password is not None:
        raise PolicyError(path, "must not hold credentials (the workers' own credentials are used)")
    if parts.query or parts.fragment:
        raise PolicyError(path, "must not hold a query or fragment")
    return value.rstrip("/")
