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
  workers are configured for): read in place by a local target, by a target
  whose store is S3 without an endpoint of its own, and by an AWS or
  Kubernetes target with no store (its instance profile or service account
  reads S3, as before stores existed); a target whose store is another
  service gets it *staged* (copied store to store); an Azure target with no
  store cannot reach it;
- an ``az://<account>/...`` URI: read in place by a local target, by a target
  whose store is Blob storage of the same account, and by an Azure or
  Kubernetes target with no store (its managed identity); a target whose
  store is another service gets it staged; an AWS target with no store cannot
  reach it.

A task's output (:func:`reach_output`) is written in place where the worker
can write the task's own URI; a local output on a target with a store is
written to the store instead (``<root><tenant>/<task id>/output<suffix>``,
served by ``GET /v1/tasks/{id}/output``); anything else is unreachable: the
planner rejects such a target (``unreachable_input`` / ``unreachable_output``,
:func:`unreachable`), so a worker spec only ever names URIs its target reaches.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from controlplane.domain.tenant import is_tenant_name

__all__ = [
    "STAGED_FIELDS",
    "Reach",
    "StorageKind",
    "TargetStorage",
    "checkpoint_uri",
    "output_uri",
    "reach",
    "reach_output",
    "staged_uri",
    "task_prefix",
    "unreachable",
    "uri_file_name",
    "uri_scheme",
    "worker_view",
]


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
    if scheme not in ("s3", "az"):
        return Reach.UNREACHABLE
    if storage is None:
        # no store: the target's own cloud identity reads its cloud's objects (a pod's may read either)
        return Reach.IN_PLACE if provider in (_CLOUD_OF_SCHEME[scheme], "kubernetes") else Reach.UNREACHABLE
    if scheme == "s3" and storage.kind == StorageKind.S3 and storage.endpoint_url is None:
        return Reach.IN_PLACE
    if scheme == "az" and storage.kind == StorageKind.AZURE_BLOB and _account(uri) == _account(storage.root):
        return Reach.IN_PLACE
    return Reach.STAGED


#: the provider whose workers' own identity reads a scheme's objects
_CLOUD_OF_SCHEME = {"s3": "aws", "az": "azure"}


def reach_output(*, provider: str, storage: TargetStorage | None, uri: str) -> Reach:
    """Where a worker of a target writes a task's output ``uri``: ``in_place`` (the task's own URI),
    ``staged`` (a local output on a target with a store: written to :func:`output_uri` in the store
    instead) or ``unreachable`` (no URI the worker can write and the tenant can read back)."""
    scheme = uri_scheme(uri)
    if provider == "local":
        return Reach.IN_PLACE if scheme in ("file", "s3", "az") else Reach.UNREACHABLE
    if scheme == "file":
        return Reach.STAGED if storage is not None else Reach.UNREACHABLE
    # an s3:// or az:// output the tenant named is written there or nowhere (never silently elsewhere)
    read = reach(provider=provider, storage=storage, uri=uri)
    return Reach.IN_PLACE if read == Reach.IN_PLACE and scheme in ("s3", "az") else Reach.UNREACHABLE


def unreachable(
    *, provider: str, storage: TargetStorage | None, source: str, target: str, output: str
) -> tuple[str, str] | None:
    """(rejection code, detail) when a target could never run a task with these URIs; None when it can.

    ``unreachable_input``: an input its workers can neither read in place nor
    get staged; ``unreachable_output``: an output they cannot write where the
    tenant gets it back. No I/O: the planner calls it for every candidate.
    """
    where = _described(provider, storage)
    for field, uri in (("source", source), ("target", target)):
        if reach(provider=provider, storage=storage, uri=uri) == Reach.UNREACHABLE:
            return "unreachable_input", f"{field}: a {uri_scheme(uri)} input cannot reach {where}"
    if reach_output(provider=provider, storage=storage, uri=output) == Reach.UNREACHABLE:
        return "unreachable_output", f"output: a {uri_scheme(output)} output cannot be written from {where}"
    return None


def _described(provider: str, storage: TargetStorage | None) -> str:
    if storage is None:
        return f"a {provider} target with no storage (give the target a storage in the policy)"
    return f"a {provider} target whose storage is {storage.kind.value}"


# -- the task layout in a store: <root><tenant>/<task id>/{inputs/<field>-<name>, output<suffix>, checkpoint/} --

#: the task fields whose inputs the stager copies into a store
STAGED_FIELDS = ("source", "target")
_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
#: characters a staged object's name keeps; any other becomes ``_`` (no ``/``, ``?``, ``#``, ``%`` or controls)
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,15}$")
_MAX_NAME = 128


def _task_prefix(storage: TargetStorage, tenant: str, task_id: str) -> str:
    # both become key segments of a shared store: a name that could climb out of its prefix never gets there
    if not is_tenant_name(tenant):
        raise ValueError(f"tenant {tenant!r} cannot name a store prefix")
    if not _TASK_ID.fullmatch(task_id) or ".." in task_id:
        raise ValueError(f"task id {task_id!r} cannot name a store prefix")
    return storage.task_prefix(tenant, task_id)


def uri_file_name(uri: str) -> str:
    """The last segment of a task URI's path, made safe as one object name (``input`` when nothing is left).

    Query and fragment are dropped, characters other than ``[A-Za-z0-9._-]``
    become ``_``, leading dots go (no ``..``, no hidden names) and the name is
    cut to 128 characters, keeping its extension.
    """
    path = uri.split("?", 1)[0].split("#", 1)[0] if uri_scheme(uri) != "file" else uri
    name = _NAME_UNSAFE.sub("_", path.rstrip("/").rpartition("/")[2]).lstrip(".")
    if len(name) > _MAX_NAME:
        stem, dot, ext = name.rpartition(".")
        keep = f".{ext}" if dot and stem and len(ext) < 16 else ""
        name = name[: _MAX_NAME - len(keep)] + keep
    return name or "input"


def staged_uri(storage: TargetStorage, *, tenant: str, task_id: str, field: str, name: str) -> str:
    """Where the stager writes a task's input in ``storage``: ``<root><tenant>/<task id>/inputs/<field>-<name>``.

    ``name`` may be a bare file name or the task's whole URI: only its last
    segment counts (:func:`uri_file_name`), so the stager and the worker spec
    derive the same object from the same task. ``ValueError`` for a field
    that is not staged or a tenant or task id that cannot be a key segment.
    """
    if field not in STAGED_FIELDS:
        raise ValueError(f"field {field!r} is not an input ({', '.join(STAGED_FIELDS)})")
    return f"{_task_prefix(storage, tenant, task_id)}inputs/{field}-{uri_file_name(name)}"


def output_uri(storage: TargetStorage, *, tenant: str, task_id: str, like: tuple[str, ...] = ()) -> str:
    """Where a task's output goes in ``storage``: ``<root><tenant>/<task id>/output<suffix>``.

    The suffix is the extension of the first URI of ``like`` that has one
    (the task's requested output, then its target), so the worker picks the
    same encoder as for the path the tenant asked for.
    """
    suffix = ""
    for uri in like:
        name = uri_file_name(uri)
        ext = f".{name.rpartition('.')[2]}" if "." in name else ""
        if _SUFFIX.fullmatch(ext):
            suffix = ext.lower()
            break
    return f"{_task_prefix(storage, tenant, task_id)}output{suffix}"


def task_prefix(storage: TargetStorage, *, tenant: str, task_id: str) -> str:
    """``<root><tenant>/<task id>/``: everything of one task in a store (what its worker may touch there)."""
    return _task_prefix(storage, tenant, task_id)


def checkpoint_uri(storage: TargetStorage, *, tenant: str, task_id: str) -> str:
    """A video's segments in ``storage``: ``<root><tenant>/<task id>/checkpoint/``, the same for every attempt."""
    return f"{_task_prefix(storage, tenant, task_id)}checkpoint/"


def worker_view(storage: TargetStorage, uri: str) -> str:
    """``uri`` as the worker opens it: a ``pvc://<claim>/<path>`` object of a ``pvc`` store is the local
    path ``<mount_path>/<path>`` in the pod that mounts the claim; every other URI is unchanged."""
    if storage.kind != StorageKind.PVC or storage.mount_path is None or not uri.startswith("pvc://"):
        return uri
    claim_and_path = uri[len("pvc://") :]
    claim, _sep, path = claim_and_path.partition("/")
    if claim != _account(storage.root):
        raise ValueError(f"{uri!r} is not on claim {_account(storage.root)!r}")
    return f"{storage.mount_path.rstrip('/')}/{path}"
