"""Where a target's workers read and write, and which task URIs a target can reach.

Each target names one store (the policy's ``targets[].storage``); a worker on
that target reads its inputs from it and writes its output and checkpoints to
it, under ``<store root>/<tenant>/<task id>/``. The kinds:

- ``local``: the control plane's own disk (the local provider; implied when a
  local target names no store). Root: an absolute path.
- ``s3``: an S3 bucket and prefix, ``s3://bucket/prefix/``; ``endpoint_url``
  names an S3-compatible store instead of AWS (an in-cluster MinIO or Ceph).
- ``azure_blob``: a Blob container and prefix,
  ``az://<account>/<container>/<prefix>/``; ``endpoint_url`` overrides
  ``https://<account>.blob.core.windows.net`` (Azurite, sovereign clouds).
- ``pvc``: a PersistentVolumeClaim the Kubernetes provider mounts into the
  worker's pod at ``mount_path``; root ``pvc://<claim>/<prefix>/``.

URI schemes a task may carry: a local path (or ``file://``), ``s3://``,
``az://`` and ``https://`` (``http://`` where the operator allows it).

What a target can reach (:func:`reach`) is decided here, without I/O, so the
planner can reject a target that could never read a task's inputs
(``unreachable_input``) and the stager can copy what needs copying:

- a web URL: every target (the worker fetches it through the fetch guard);
- a local path on the control plane's disk: a local target reads it in
  place; a target with a store gets it *staged* (copied into the store before
  launch); a target without one cannot reach it;
- an ``s3://`` URI (AWS S3, or the one endpoint the control plane and its
  workers are configured for): a local target reads it with the control
  plane's own credentials, a target whose store is S3 without an endpoint of
  its own reads it in place; any other target cannot reach it;
- an ``az://<account>/...`` URI: a local target, or a target whose store is
  Blob storage of the same account, reads it in place; any other cannot.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from controlplane.domain.tenant import is_tenant_name

__all__ = ["STAGED_FIELDS", "Reach", "StorageKind", "TargetStorage", "reach", "staged_name", "staged_uri", "uri_scheme"]


class StorageKind(enum.StrEnum):
    LOCAL = "local"
    S3 = "s3"
    AZURE_BLOB = "azure_blob"
    PVC = "pvc"


#: the URI scheme each kind of store uses for its objects
SCHEME_OF_KIND = {
    StorageKind.LOCAL: "file",
    StorageKind.S3: "s3",
    StorageKind.AZURE_BLOB: "az",
    StorageKind.PVC: "pvc",
}


class Reach(enum.StrEnum):
    """How a worker on a target gets at one URI of a task."""

    IN_PLACE = "in_place"  # reads (or writes) it where it is
    STAGED = "staged"  # the control plane copies it into the target's store first
    UNREACHABLE = "unreachable"


def uri_scheme(uri: str) -> str:
    """``file`` for plain paths and ``file://``; else the lower-cased scheme (``s3``, ``az``, ``https``, ...)."""
    head, sep, _rest = uri.partition("://")
    if not sep or len(head) <= 1 or "/" in head:
        return "file"
    return head.lower()


@dataclass(frozen=True, kw_only=True)
class TargetStorage:
    """One target's store: its kind, its root URI (ending in ``/``) and, for S3-compatible or Blob
    emulators and sovereign clouds, the service endpoint."""

    kind: StorageKind
    root: str
    endpoint_url: str | None = None
    #: where the Kubernetes provider mounts a ``pvc`` store in the worker's pod
    mount_path: str | None = None

    def task_prefix(self, tenant: str, task_id: str) -> str:
        """``<root><tenant>/<task id>/``: where a task's staged inputs, output and checkpoints live."""
        return f"{self.root}{tenant}/{task_id}/"

    def same_service(self, other: TargetStorage) -> bool:
        """True when a worker with credentials for ``self`` can read ``other``'s objects in place."""
        if self.kind != other.kind or self.endpoint_url != other.endpoint_url or self.kind == StorageKind.PVC:
            return False
        return self.kind != StorageKind.AZURE_BLOB or _account(self.root) == _account(other.root)


def _account(uri: str) -> str:
    """The storage account an ``az://<account>/<container>/...`` URI names."""
    return uri.partition("://")[2].partition("/")[0]


def reach(*, provider: str, storage: TargetStorage | None, uri: str) -> Reach:
    """How a worker of a target (its provider and store) gets at ``uri``; see the module's rules."""
    scheme = uri_scheme(uri)
    if scheme in ("https", "http"):
        return Reach.IN_PLACE
    if provider == "local":
        return Reach.IN_PLACE if scheme in ("file", "s3", "az") else Reach.UNREACHABLE
    if scheme == "file":
        return Reach.STAGED if storage is not None else Reach.UNREACHABLE
    if storage is None:
        return Reach.UNREACHABLE
    if scheme == "s3" and storage.kind == StorageKind.S3 and storage.endpoint_url is None:
        return Reach.IN_PLACE
    if scheme == "az" and storage.kind == StorageKind.AZURE_BLOB and _account(uri) == _account(storage.root):
        return Reach.IN_PLACE
    return Reach.UNREACHABLE


#: the task fields whose local inputs are staged
STAGED_FIELDS = ("source", "target")
#: a task id as the store makes them (``tsk_`` + 26 Crockford base32 characters), with room for other prefixes
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: the longest file name part of a staged key: S3 keys may hold 1,024 bytes, and the prefix needs room
_NAME_MAX = 100


def staged_name(name: str) -> str:
    """A file name made safe as one key segment: its last path part, only ``[A-Za-z0-9._-]``, no leading dots,
    at most 100 characters (the suffix kept), never empty."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = _UNSAFE.sub("_", base).lstrip(".") or "input"
    if len(safe) > _NAME_MAX:
        stem, dot, suffix = safe.rpartition(".")
        suffix = suffix[:16] if dot and stem else ""
        safe = safe[: _NAME_MAX - len(suffix) - 1] + "." + suffix if suffix else safe[:_NAME_MAX]
    return safe


def staged_uri(storage: TargetStorage, tenant: str, task_id: str, field: str, name: str) -> str:
    """Where the stager copies a task's local input in a target's store:
    ``<root><tenant>/<task id>/inputs/<field>-<safe file name>``.

    Pure: the stager writes there and the worker spec names the same URI.
    ``ValueError`` for a tenant, task id or field that could not name one key
    segment; the file name is made safe (:func:`staged_name`), so whatever it
    holds (``..``, ``/``, NUL, a thousand characters) the key stays under the
    task's prefix.
    """
    if not is_tenant_name(tenant):
        raise ValueError(f"tenant {tenant!r} cannot name a store prefix")
    if not _TASK_ID.fullmatch(task_id):
        raise ValueError(f"task id {task_id!r} cannot name a store prefix")
    if field not in STAGED_FIELDS:
        raise ValueError(f"only {', '.join(STAGED_FIELDS)} inputs are staged, not {field!r}")
    return f"{storage.task_prefix(tenant, task_id)}inputs/{field}-{staged_name(name)}"
