"""The worker spec a provider hands to the container, rendered in one place."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from controlplane.config import Settings
from controlplane.domain import InvalidSpec, Task, TaskKind
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.domain.worker_spec import WorkerSpec, parse_worker_spec
from controlplane.policy.storage import StorageFile

__all__ = ["render_worker_spec", "tenant_grants"]

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
    """
    checkpoint = None
    if task.spec.kind == TaskKind.VIDEO and checkpoint_root is not None:
        checkpoint = f"{str(checkpoint_root).rstrip('/')}/{task.spec.tenant}/{task.id}"
    if storage is not None:
        refusal = storage.refusal(
            tenant=task.spec.tenant,
            source=task.spec.source_uri,
            target=task.spec.target_uri,
            output=task.spec.output_uri,
            checkpoint=checkpoint,
        )
        if refusal is not None:
            raise InvalidSpec(f"worker spec {refusal}")
    blocks = {key: dict(value) for key, value in (grant or {}).items()}
    if checkpoint is not None and checkpoint.startswith(("s3://", "az://")):
        access = blocks.setdefault("access", {})
        scheme = checkpoint[:2]
        for key in (f"{scheme}_read", f"{scheme}_write"):
            access[key] = [*access.get(key, []), f"{checkpoint}/"]
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
        "source": task.spec.source_uri,
        "target": task.spec.target_uri,
        "output": task.spec.output_uri,
        "checkpoint": checkpoint,
        "options": dict(task.spec.options),
        **blocks,
        "callback": callback,
    }
    return parse_worker_spec(document, prefix="worker spec ")


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
