"""The worker spec a provider hands to the container, rendered in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane.config import Settings
from controlplane.domain import InvalidSpec, Task, TaskKind
from controlplane.domain.target_storage import (
    STAGED_FIELDS,
    Reach,
    StorageKind,
    TargetStorage,
    checkpoint_uri,
    output_uri,
    reach,
    reach_output,
    staged_uri,
    task_prefix,
    worker_view,
)
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.domain.worker_spec import WorkerSpec, parse_worker_spec
from controlplane.policy.storage import StorageFile

__all__ = ["PlacedUris", "placed_uris", "render_worker_spec", "tenant_grants"]

HEARTBEAT_SECONDS = 5.0


def render_worker_spec(
    *,
    task: Task,
    attempt_id: str,
    token: str,
    callback_base: str,
    checkpoint_root: Path | str | None,
    hedged: bool = False,
    storage: TenantStorage | None = None,
    grant: Mapping[str, Any] | None = None,
    provider: str = "local",
    target_storage: TargetStorage | None = None,
) -> WorkerSpec:
    """The spec for one attempt, checked here once against the published schema (``InvalidSpec`` if not).

    The checkpoint location is per task, not per attempt, so the next attempt
    of a preempted video resumes where the last one stopped. A ``hedged``
    attempt's worker waits for the control plane's go (``callback.wait_for_go``)
    before any work, so of the siblings only the winner ever writes.
    Checkpoints live under ``<checkpoint root>/<tenant>/``. With ``storage``
    every local path of the task must be in its tenant's folders
    (``InvalidSpec`` otherwise): the API checked that at submit, this is the
    second line in case a row was written some other way. ``grant`` holds the
    spec's ``access`` (the task's tenant's allow-lists, and nothing of other
    tenants') and ``fetch`` blocks; an s3 or az checkpoint folder, which the
    operator chose, is added to the attempt's access.

    Which URIs the worker is given depends on the chosen target
    (``provider``, ``target_storage``): an input the stager copied into the
    target's store is named by its staged URI, a local output is written to
    the store (:func:`placed_uris`), and a video's checkpoint goes where
    :func:`_checkpoint` says. A worker never gets a path of the control
    plane's disk unless it runs here. With an ``s3`` or ``azure_blob`` store
    the attempt's access grows by the task's own prefix in it
    (``<root><tenant>/<task id>/``), read and write, and no wider.
    """
    checkpoint = (
        _checkpoint(task, provider=provider, store=target_storage, checkpoint_root=checkpoint_root)
        if task.spec.kind == TaskKind.VIDEO
        else None
    )
    if storage is not None:
        refusal = storage.refusal(
            tenant=task.spec.tenant,
            source=task.spec.source_uri,
            target=task.spec.target_uri,
            output=task.spec.output_uri,
            checkpoint=checkpoint if provider == "local" else None,
        )
        if refusal is not None:
            raise InvalidSpec(f"worker spec {refusal}")
    placed = placed_uris(task, provider=provider, store=target_storage)
    blocks = {key: dict(value) for key, value in (grant or {}).items()}
    extra = [checkpoint] if checkpoint is not None and checkpoint.startswith(("s3://", "az://")) else []
    if target_storage is not None and target_storage.kind in (StorageKind.S3, StorageKind.AZURE_BLOB):
        extra = [task_prefix(target_storage, tenant=task.spec.tenant, task_id=task.id)]
    for prefix in extra:
        access = blocks.setdefault("access", {})
        scheme = prefix[:2]
        for key in (f"{scheme}_read", f"{scheme}_write"):
            access[key] = [*access.get(key, []), f"{prefix.rstrip('/')}/"]
    if target_storage is not None and target_storage.endpoint_url:
        # the store at its own endpoint (Azurite, a sovereign cloud, an in-cluster MinIO), not the cloud's default
        where = target_storage.root.partition("://")[2].partition("/")[0]  # the account, or the bucket
        block = {StorageKind.AZURE_BLOB: "blob_endpoints", StorageKind.S3: "s3_endpoints"}.get(target_storage.kind)
        if block is not None:
            blocks[block] = {**blocks.get(block, {}), where: target_storage.endpoint_url}
    callback: dict[str, Any] = {
        "url": f"{callback_base.rstrip('/')}/v1/attempts/{attempt_id}",
        "token": token,
        "heartbeat_seconds": HEARTBEAT_SECONDS,
    }
    if hedged:  # absent otherwise: the spec of an attempt launched alone is unchanged
        callback["wait_for_go"] = True
    document = {
        "version": 1,
        "task_id": task.id,
        "attempt_id": attempt_id,
        "source": placed.source,
        "target": placed.target,
        "output": placed.output,
        "checkpoint": checkpoint,
        "options": dict(task.spec.options),
        **blocks,
        "callback": callback,
    }
    return parse_worker_spec(document, prefix="worker spec ")


def _checkpoint(
    task: Task, *, provider: str, store: TargetStorage | None, checkpoint_root: Path | str | None
) -> str | None:
    """A video's checkpoint folder on the chosen target, the same for every attempt there (so one resumes).

    - a target whose store is S3 or Blob: ``<store root><tenant>/<task id>/checkpoint/``, so an attempt on
      any target of that store resumes from the segments already there;
    - else an ``s3://`` checkpoint root the operator chose: ``<root>/<tenant>/<task id>``, as before;
    - else, on the local provider: ``<checkpoint root>/<tenant>/<task id>`` on this machine;
    - else none: a pod or VM cannot write the control plane's disk (a Kubernetes worker would hit its
      read-only root and exit 65), so it runs without resume rather than fail.

    - a Kubernetes target whose store is a ``pvc``: the checkpoint folder in the claim, as the pod sees it
      at the store's ``mount_path``;
    """
    tenant = task.spec.tenant
    if store is not None and store.kind in (StorageKind.S3, StorageKind.AZURE_BLOB):
        return checkpoint_uri(store, tenant=tenant, task_id=task.id)
    if store is not None and store.kind == StorageKind.PVC and provider == "kubernetes":
        # the pod mounts the claim (providers/kubernetes), so every attempt there resumes from the same folder
        return worker_view(store, checkpoint_uri(store, tenant=tenant, task_id=task.id))
    if checkpoint_root is None:
        return None
    root = str(checkpoint_root).rstrip("/")
    if root.startswith("s3://") or provider == "local":
        return f"{root}/{tenant}/{task.id}"
    return None


@dataclass(frozen=True, kw_only=True)
class PlacedUris:
    """A task's source, target and output as a worker on the chosen target opens them."""

    source: str
    target: str
    output: str
    #: the output as the control plane finds it (a ``pvc://`` URI where the worker has a mount path)
    output_at: str


def placed_uris(task: Task, *, provider: str, store: TargetStorage | None) -> PlacedUris:
    """The task's URIs as the worker on this target is told them.

    An input :func:`reach` says is staged is named by the URI the stager
    copies it to (:func:`staged_uri`, the same derivation, so the two agree);
    a local output on a target with a store becomes the store's
    ``<tenant>/<task id>/output<suffix>``; a URI in a ``pvc`` store is the
    path the pod mounts it at. Everything else is the task's own URI. The
    planner never offers a target for which any of these is unreachable.
    """
    spec, tenant = task.spec, task.spec.tenant
    if store is None:
        return PlacedUris(
            source=spec.source_uri, target=spec.target_uri, output=spec.output_uri, output_at=spec.output_uri
        )
    inputs = []
    for field, uri in zip(STAGED_FIELDS, (spec.source_uri, spec.target_uri), strict=True):
        if reach(provider=provider, storage=store, uri=uri) == Reach.STAGED:
            uri = worker_view(store, staged_uri(store, tenant=tenant, task_id=task.id, field=field, name=uri))
        inputs.append(uri)
    output = spec.output_uri
    if reach_output(provider=provider, storage=store, uri=output) == Reach.STAGED:
        output = output_uri(store, tenant=tenant, task_id=task.id, like=(output, spec.target_uri))
    return PlacedUris(source=inputs[0], target=inputs[1], output=worker_view(store, output), output_at=output)


def tenant_grants(storage: StorageFile, settings: Settings) -> Callable[[str], dict[str, Any]]:
    """The spec's ``access`` and ``fetch`` blocks for a tenant: its own allow-list entries, read at launch.

    Only this tenant's entries travel (never the whole document), and they
    are read when the attempt is launched, so a grant revoked after submit
    stops the next attempt in the worker.
    """
    fetch = {
        "allow_internal_hosts": list(settings.fetch_allow_hosts),
        "max_bytes": settings.fetch_max_bytes,
        "connect_timeout_seconds": settings.fetch_connect_timeout_s,
        "read_timeout_seconds": settings.fetch_read_timeout_s,
    }

    def grant(tenant: str) -> dict[str, Any]:
        return {"access": storage.current().for_tenant(tenant).spec_block(), "fetch": dict(fetch)}

    return grant
