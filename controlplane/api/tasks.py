"""Task routes: submit, list, show, cancel, the receipt, events, the output and the worker log.

Every route authenticates the caller (``Caller``) and shows a task only to
its own tenant or an operator; every local path a task names is its
tenant's (``api/schemas.py``), and every remote one follows the fetch rules
and the tenant's storage grant (``api/remote_uris.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.responses import FileResponse

from controlplane.api.auth import Principal
from controlplane.api.deps import Caller, require_operator
from controlplane.api.errors import ApiError
from controlplane.api.remote_uris import HostResolver, RemoteRules, refuse_internal_names
from controlplane.api.schemas import FieldError, TaskCreate, check_input_uri, check_output_uri
from controlplane.api.submissions import SubmitQueue
from controlplane.api.task_file import TaskFileError, infer_kind, output_suffix, task_spec_from_request
from controlplane.api.views import attempt_json, event_json, receipt_json, task_json
from controlplane.config import Settings
from controlplane.domain import DataSensitivity, InvalidTransition, Priority, Task, TaskKind, TaskState
from controlplane.domain.tenant_storage import resolved_inside, tenant_folder
from controlplane.metrics import Metrics
from controlplane.policy.storage import StorageFile
from controlplane.store import IdempotencyConflict, NewTask, NotFound, StateMismatch, Store, new_id
from faceswap.netguard import AllowedHosts

__all__ = ["MAX_EVENT_ID", "SUBMIT_WRITERS_POSTGRES", "add_task_routes"]

_IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:-]{1,128}$"
#: concurrent group-commit writers on PostgreSQL (each holds one pooled connection)
SUBMIT_WRITERS_POSTGRES = 3
#: event ids are 64-bit signed in the database; a larger ``after`` is a 422, not an overflow
MAX_EVENT_ID = 2**63 - 1


def _kind(body: TaskCreate) -> TaskKind:
    try:
        return infer_kind(body)
    except TaskFileError as exc:
        raise ApiError(422, "invalid", exc.message, field=exc.path) from exc


def _visible(task: Task, principal: Principal) -> Task:
    if not principal.sees_all_tenants and task.spec.tenant != principal.tenant:
        raise ApiError(403, "forbidden", "this task belongs to another tenant", field="task_id")
    return task


def _own_output(path: Path, *, output_root: Path, tenant: str) -> Path:
    """The output file resolved, if it lies in the task's tenant folder: never serve another tenant's file."""
    try:
        real = resolved_inside(path, tenant_folder(output_root, tenant))
    except ValueError:
        real = None
    if real is None:
        raise ApiError(403, "forbidden", "the output is outside the task's tenant folder", field="output")
    return real


def _moment(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(422, "invalid", "must be an ISO 8601 time", field=field) from exc
    if parsed.tzinfo is None:
        raise ApiError(422, "invalid", "needs a time zone (e.g. Z)", field=field)
    return parsed


def add_task_routes(
    app: FastAPI,
    *,
    settings: Settings,
    store: Store,
    metrics: Metrics,
    storage: StorageFile,
    resolve_host: HostResolver,
    attempt_logs: Callable[[str], Path | None] | None = None,
) -> None:
    """The ``/v1/tasks`` routes on ``app``."""
    allowed_internal = AllowedHosts.parse(settings.fetch_allow_hosts)

    def load(task_id: str, principal: Principal) -> Task:
        try:
            return _visible(store.get_task(task_id), principal)
        except NotFound as exc:
            raise ApiError(404, "not_found", f"no task {task_id}", field="task_id") from exc

    submit_queue = SubmitQueue(
        store,
        writers=SUBMIT_WRITERS_POSTGRES if store.engine.dialect.name == "postgresql" else 1,
        observe_batch=metrics.submit_batch_size.observe,
    )

    @app.post("/v1/tasks", status_code=202, tags=["tasks"])
    async def submit(
        body: TaskCreate,
        request: Request,
        response: Response,
        principal: Caller,
        idempotency_key: Annotated[str | None, Header(pattern=_IDEMPOTENCY_KEY)] = None,
    ) -> dict[str, Any]:
        """Queue a face-swap task; 202 with its id and a Location header."""
        # Runs on the event loop: the checks below are pure or a realpath under
        # local roots (host names are resolved in the loop's thread pool; one key
        # lookup only for a retry whose output exists), and the write goes through
        # the group-commit queue.
        kind = _kind(body)
        # every local path is the caller's own tenant's (operators and admins included: their principal's)
        tenant = principal.tenant
        remote = RemoteRules(access=storage.current().for_tenant(tenant).access(), allowed_internal=allowed_internal)
        roots = list(settings.input_roots)
        source = check_input_uri(body.source, field="source", input_roots=roots, tenant=tenant, remote=remote)
        target = check_input_uri(body.target, field="target", input_roots=roots, tenant=tenant, remote=remote)
        refused = await refuse_internal_names(
            {"source": source, "target": target},
            rules=remote,
            resolver=resolve_host,
            timeout_s=settings.submit_resolve_timeout_s,
        )
        for field, reason in refused.items():
            raise ApiError(422, "invalid", reason, field=field)
        # the hash covers what the caller sent, so a retry with the same body matches
        request_hash = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
        wanted_output = body.output or f"{tenant}/{new_id('out')}/swapped{output_suffix(body, kind)}"
        try:
            output = check_output_uri(
                wanted_output, field="output", output_root=settings.output_root, tenant=tenant, remote=remote
            )
        except FieldError:
            # a retry of a task that has written its output since gets the stored answer, not "already exists"
            earlier = store.task_for_key(tenant=tenant, idempotency_key=idempotency_key) if idempotency_key else None
            if earlier is None or earlier[1] != request_hash:
                raise
            metrics.submissions.labels(outcome="replayed").inc()
            response.headers["Location"] = f"/v1/tasks/{earlier[0].id}"
            return task_json(earlier[0])
        spec = task_spec_from_request(body, tenant=tenant, kind=kind, source=source, target=target, output=output)
        try:
            task, created = await submit_queue.submit(
                NewTask(spec=spec, request_hash=request_hash, idempotency_key=idempotency_key)
            )
        except IdempotencyConflict as exc:
            metrics.submissions.labels(outcome="conflict").inc()
            raise ApiError(
                409,
                "idempotency_conflict",
                "this Idempotency-Key was used with another body",
                field="Idempotency-Key",
                task_id=exc.task_id,
            ) from exc
        metrics.submissions.labels(outcome="created" if created else "replayed").inc()
        response.headers["Location"] = f"/v1/tasks/{task.id}"
        return task_json(task)

    @app.get("/v1/tasks", tags=["tasks"])
    def list_tasks(
        principal: Caller,
        state: TaskState | None = None,
        priority: Priority | None = None,
        sensitivity: DataSensitivity | None = None,
        target: Annotated[str | None, Query(max_length=128)] = None,
        tenant: Annotated[str | None, Query(max_length=64)] = None,
        created_after: Annotated[str | None, Query(max_length=40)] = None,
        created_before: Annotated[str | None, Query(max_length=40)] = None,
        cursor: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Tasks, newest first, with filters and an opaque cursor for the next page."""
        if not principal.sees_all_tenants:
            if tenant not in (None, principal.tenant):
                raise ApiError(403, "forbidden", "submitters see their own tenant only", field="tenant")
            tenant = principal.tenant
        try:
            tasks, next_cursor = store.list_tasks(
                state=state,
                priority=priority,
                data_sensitivity=sensitivity,
                target=target,
                tenant=tenant,
                created_after=_moment(created_after, "created_after"),
                created_before=_moment(created_before, "created_before"),
                cursor=cursor,
                limit=limit,
            )
        except ValueError as exc:
            raise ApiError(422, "invalid", str(exc), field="cursor") from exc
        return {"tasks": [task_json(t) for t in tasks], "next_cursor": next_cursor}

    @app.get("/v1/tasks/{task_id}", tags=["tasks"])
    def get_task(task_id: str, principal: Caller) -> dict[str, Any]:
        task = load(task_id, principal)
        body = task_json(task)
        body["attempts"] = [attempt_json(a, store.get_progress(a.id)) for a in store.attempts_for(task.id)]
        return body

    @app.post("/v1/tasks/{task_id}/cancel", tags=["tasks"])
    def cancel(task_id: str, principal: Caller) -> dict[str, Any]:
        """Cancel a task that has not finished; the scheduler stops its backend resource."""
        task = load(task_id, principal)
        if task.state.is_final:
            raise ApiError(409, "invalid_state", f"the task already {task.state.value}", field="state")
        try:
            task = store.transition_task(
                task.id,
                wanted=TaskState.CANCELLED,
                actor=f"api:{principal.name}",
                reason="cancelled by request",
                expected=task.state,
            )
        except (StateMismatch, InvalidTransition) as exc:
            raise ApiError(409, "invalid_state", f"the task changed state meanwhile: {exc}", field="state") from exc
        return task_json(task)

    @app.get("/v1/tasks/{task_id}/decision", tags=["tasks"])
    def decision(task_id: str, principal: Caller) -> dict[str, Any]:
        """The placement receipt: every plan (policy version, signals and ages, candidates, rejections)."""
        require_operator(principal)
        task = load(task_id, principal)
        attempts = [attempt_json(a, store.get_progress(a.id)) for a in store.attempts_for(task.id)]
        return receipt_json(task, store.get_decisions(task.id), attempts)

    @app.get("/v1/tasks/{task_id}/events", tags=["tasks"])
    def events(
        task_id: str, principal: Caller, after: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None
    ) -> dict[str, Any]:
        task = load(task_id, principal)
        return {"events": [event_json(e) for e in store.list_events(task.id, after_id=after)]}

    @app.get("/v1/tasks/{task_id}/output", tags=["tasks"], response_model=None)
    def output(task_id: str, principal: Caller) -> Any:
        """The result file once the task succeeded (local outputs); s3 outputs are named in the task."""
        task = load(task_id, principal)
        if task.state != TaskState.SUCCEEDED:
            raise ApiError(409, "not_ready", f"the task is {task.state.value}", field="state")
        uri = task.spec.output_uri
        if uri.startswith("s3://"):
            return {"output_uri": uri}
        path = _own_output(Path(uri), output_root=settings.output_root, tenant=task.spec.tenant)
        if not path.is_file():
            raise ApiError(410, "gone", "the output file is no longer there", field="output")
        return FileResponse(path, filename=path.name)

    @app.get("/v1/tasks/{task_id}/logs", tags=["tasks"], response_model=None)
    def logs(task_id: str, principal: Caller) -> Any:
        """The worker log of the task's latest attempt (providers that keep one)."""
        task = load(task_id, principal)
        attempts = store.attempts_for(task.id)
        if not attempts:
            raise ApiError(404, "not_found", "the task has no attempt yet", field="task_id")
        path = attempt_logs(attempts[-1].id) if attempt_logs else None
        if path is None or not path.is_file():
            raise ApiError(404, "not_found", "no log is kept for this attempt's provider", field="attempt_id")
        return FileResponse(path, media_type="text/plain")
