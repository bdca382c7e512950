"""Task routes: submit, list, show, cancel, the receipt, events and the worker log (the output: ``output_routes.py``).

Every route authenticates the caller (``Caller``) and shows a task only to
its own tenant or an operator; every local path a task names is its
tenant's (``api/schemas.py``), and every remote one follows the fetch rules
and the tenant's storage grant (``api/remote_uris.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import Caller, require_operator, tenant_filter
from controlplane.api.errors import ApiError
from controlplane.api.event_stream import event_stream_router
from controlplane.api.remote_uris import HostResolver
from controlplane.api.task_submit import SUBMIT_WRITERS_POSTGRES, submit_router
from controlplane.api.views import attempt_json, event_json, receipt_json, task_json
from controlplane.config import Settings
from controlplane.domain import DataSensitivity, InvalidTransition, Priority, Task, TaskState
from controlplane.metrics import Metrics
from controlplane.policy.storage import StorageFile
from controlplane.policy.webhooks import WebhooksFile
from controlplane.store import NotFound, StateMismatch, Store, task_costs

__all__ = ["MAX_EVENT_ID", "SUBMIT_WRITERS_POSTGRES", "task_router", "task_file_router", "task_view_router"]

#: event ids are 64-bit signed in the database; a larger ``after`` is a 422, not an overflow
MAX_EVENT_ID = 2**63 - 1


def _visible(task: Task, principal: Principal) -> Task:
    if not principal.sees_all_tenants and task.spec.tenant != principal.tenant:
        raise ApiError(403, "forbidden", "this task belongs to another tenant", field="task_id")
    return task


def _moment(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        # RFC 3339 (what the OpenAPI document's date-time means) allows a lower-case "t" and "z"
        parsed = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise ApiError(422, "invalid", "must be an ISO 8601 time", field=field) from exc
    if parsed.tzinfo is None:
        raise ApiError(422, "invalid", "needs a time zone (e.g. Z)", field=field)
    return parsed


#: a task by id, as the caller may see it (404 when absent, 403 when another tenant's)
TaskLoader = Callable[[str, Principal], Task]

#: what loading a task can answer besides the route's own statuses
_NO_SUCH_TASK = "No task with this id"
_OTHER_TENANT = "No valid token's role, or the task is another tenant's"
#: RFC 3339 date-time, as ``_moment`` reads it (a zone is required)
_MOMENT = {"format": "date-time"}


def task_view_router(*, store: Store, load: TaskLoader) -> APIRouter:
    """List, show and cancel tasks; a task's receipt and events."""
    router = APIRouter(tags=["tasks"])

    @router.get(
        "/v1/tasks",
        responses=errors(*CALLER, 422, why={403: "A submitter asked for another tenant's tasks, or a metrics token"}),
    )
    def list_tasks(
        principal: Caller,
        state: TaskState | None = None,
        priority: Priority | None = None,
        sensitivity: DataSensitivity | None = None,
        target: Annotated[str | None, Query(max_length=128)] = None,
        tenant: Annotated[str | None, Query(max_length=64)] = None,
        created_after: Annotated[str | None, Query(max_length=40, json_schema_extra=_MOMENT)] = None,
        created_before: Annotated[str | None, Query(max_length=40, json_schema_extra=_MOMENT)] = None,
        cursor: Annotated[str | None, Query(max_length=256)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    ) -> dict[str, Any]:
        """Tasks, newest first, with filters and an opaque cursor for the next page."""
        tenant = tenant_filter(principal, tenant)
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
        costs = task_costs(store.engine, [t.id for t in tasks], now=store.now())
        return {"tasks": [task_json(t, costs[t.id]) for t in tasks], "next_cursor": next_cursor}

    task_errors = errors(*CALLER, 404, why={403: _OTHER_TENANT, 404: _NO_SUCH_TASK})

    @router.get("/v1/tasks/{task_id}", responses=task_errors)
    def get_task(task_id: str, principal: Caller) -> dict[str, Any]:
        task = load(task_id, principal)
        body = task_json(task, task_costs(store.engine, [task.id], now=store.now())[task.id])
        body["attempts"] = [attempt_json(a, store.get_progress(a.id)) for a in store.attempts_for(task.id)]
        return body

    @router.post(
        "/v1/tasks/{task_id}/cancel",
        responses=errors(
            *CALLER,
            404,
            409,
            why={403: _OTHER_TENANT, 404: _NO_SUCH_TASK, 409: "The task has finished, or changed state meanwhile"},
        ),
    )
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
        return task_json(task, task_costs(store.engine, [task.id], now=store.now())[task.id])

    @router.get(
        "/v1/tasks/{task_id}/decision",
        responses=errors(*CALLER, 404, why={403: "Operators and admins only", 404: _NO_SUCH_TASK}),
    )
    def decision(task_id: str, principal: Caller) -> dict[str, Any]:
        """The placement receipt: every plan (policy version, signals and ages, candidates, rejections)."""
        require_operator(principal)
        task = load(task_id, principal)
        attempts = [attempt_json(a, store.get_progress(a.id)) for a in store.attempts_for(task.id)]
        cost = task_costs(store.engine, [task.id], now=store.now())[task.id]
        return receipt_json(task, cost, store.get_decisions(task.id), attempts)

    @router.get("/v1/tasks/{task_id}/events", responses={**task_errors, **errors(422)})
    def events(
        task_id: str, principal: Caller, after: Annotated[int | None, Query(ge=0, le=MAX_EVENT_ID)] = None
    ) -> dict[str, Any]:
        task = load(task_id, principal)
        return {"events": [event_json(e) for e in store.list_events(task.id, after_id=after)]}

    return router


def task_file_router(
    *, settings: Settings, store: Store, load: TaskLoader, attempt_logs: Callable[[str], Path | None] | None
) -> APIRouter:
    """A task's latest attempt's worker log (the output has its own router: ``api/output_routes.py``)."""
    router = APIRouter(tags=["tasks"])

    @router.get(
        "/v1/tasks/{task_id}/logs",
        response_model=None,
        response_class=FileResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The worker log"},
            **errors(
                *CALLER,
                404,
                why={
                    403: _OTHER_TENANT,
                    404: "No task with this id, no attempt yet, or no log kept by the attempt's provider",
                },
            ),
        },
    )
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

    return router


def task_router(
    *,
    settings: Settings,
    store: Store,
    metrics: Metrics,
    storage: StorageFile,
    resolve_host: HostResolver,
    attempt_logs: Callable[[str], Path | None] | None = None,
    webhooks: WebhooksFile | None = None,
) -> APIRouter:
    """The ``/v1/tasks`` routes: submission, views and files, in that order."""

    router = APIRouter()

    def load(task_id: str, principal: Principal) -> Task:
        try:
            return _visible(store.get_task(task_id), principal)
        except NotFound as exc:
            raise ApiError(404, "not_found", f"no task {task_id}", field="task_id") from exc

    router.include_router(
        submit_router(
            settings=settings,
            store=store,
            metrics=metrics,
            storage=storage,
            resolve_host=resolve_host,
            webhooks=webhooks,
        )
    )
    router.include_router(task_view_router(store=store, load=load))
    router.include_router(
        event_stream_router(
            store=store,
            load=load,
            stream_seconds=settings.events_stream_seconds,
            heartbeat_seconds=settings.events_heartbeat_seconds,
        )
    )
    router.include_router(task_file_router(settings=settings, store=store, load=load, attempt_logs=attempt_logs))

    return router
