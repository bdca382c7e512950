"""The FastAPI application: tasks, receipts, worker callbacks, health and metrics.

``create_app`` takes everything it needs (store, token registry, settings);
it starts nothing by itself, so tests and ``fusionctl serve`` wire it the
same way.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import FileResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from controlplane import __version__
from controlplane.api.auth import Principal, TokenRegistry
from controlplane.api.deps import authenticate, observer, require_observer, require_operator
from controlplane.api.errors import ApiError, install_error_handlers
from controlplane.api.limits import BodyLimit
from controlplane.api.planning import LiveSignals, PolicyFor, add_plan_routes
from controlplane.api.policies import add_policy_routes
from controlplane.api.remote_uris import HostResolver, RemoteRules, refuse_internal_names, system_host_resolver
from controlplane.api.schemas import FieldError, TaskCreate, check_input_uri, check_output_uri
from controlplane.api.signals import add_signal_routes
from controlplane.api.submissions import SubmitQueue
from controlplane.api.task_file import TaskFileError, infer_kind, output_suffix
from controlplane.api.uploads import UploadLedger, receive_upload
from controlplane.api.views import attempt_json, event_json, receipt_json, task_json
from controlplane.config import Settings
from controlplane.domain import (
    Attempt,
    AttemptState,
    DataSensitivity,
    InvalidTransition,
    Priority,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.domain import FieldError as DomainFieldError
from controlplane.domain.callbacks import (
    MAX_CALLBACK_BYTES,
    Completion,
    Failure,
    Heartbeat,
    Progress,
    parse_callback,
)
from controlplane.domain.tenant_storage import resolved_inside, tenant_folder
from controlplane.metrics import Metrics
from controlplane.policy import Policy
from controlplane.policy.storage import StorageFile
from controlplane.policy_sources import ActivePolicy
from controlplane.scheduler import advance
from controlplane.store import (
    IdempotencyConflict,
    NewTask,
    NotFound,
    StateMismatch,
    Store,
    is_current,
    new_id,
    waiting_summary,
)
from faceswap.netguard import AllowedHosts

__all__ = ["create_app"]

_IDEMPOTENCY_KEY = r"^[A-Za-z0-9._:-]{1,128}$"
#: concurrent group-commit writers on PostgreSQL (each holds one pooled connection)
SUBMIT_WRITERS_POSTGRES = 3
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")

Caller = Annotated[Principal, Depends(authenticate)]
CallbackBody = TypeVar("CallbackBody", Heartbeat, Progress, Completion, Failure)
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


def create_app(
    *,
    settings: Settings,
    store: Store,
    tokens: TokenRegistry,
    metrics: Metrics | None = None,
    attempt_logs: Callable[[str], Path | None] | None = None,
    policy_for: PolicyFor | None = None,
    live_signals: LiveSignals | None = None,
    active_policy: ActivePolicy | None = None,
    signal_pollers: Callable[[], list[dict[str, Any]]] | None = None,
    leader_status: Callable[[], dict[str, Any]] | None = None,
    storage: StorageFile | None = None,
    resolve_host: HostResolver = system_host_resolver,
) -> Any:
    """The ASGI app: FastAPI routes wrapped in the request-body limit.

    ``attempt_logs`` maps an attempt id to its worker log file when the
    provider keeps one (the local provider does). ``active_policy`` is the
    running scheduler's policy in force (for /v1/policy and /readyz).
    ``storage`` is the per-tenant allow-lists in force (default: read from
    ``settings.storage_file``); ``resolve_host`` resolves input host names
    at submit time (tests hand in one that never leaves the machine).
    """
    metrics = metrics or Metrics.create()
    app = FastAPI(
        title="FusionPlane",
        version=__version__,
        description="Place and run GPU face-swap tasks across private and cloud capacity.",
    )
    app.state.insecure_dev = settings.insecure_dev
    app.state.tokens = tokens
    app.state.store = store
    app.state.metrics = metrics
    install_error_handlers(app)
    storage = storage or StorageFile(settings.storage_file)
    allowed_internal = AllowedHosts.parse(settings.fetch_allow_hosts)

    def load(task_id: str, principal: Principal) -> Task:
        try:
            return _visible(store.get_task(task_id), principal)
        except NotFound as exc:
            raise ApiError(404, "not_found", f"no task {task_id}", field="task_id") from exc

    ledger = (
        UploadLedger(root=settings.input_roots[0], quota_bytes=settings.upload_quota_bytes)
        if settings.input_roots
        else None
    )
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
        spec = TaskSpec(
            tenant=principal.tenant,
            kind=kind,
            source_uri=source,
            target_uri=target,
            output_uri=output,
            priority=Priority(body.priority),
            data_sensitivity=DataSensitivity(body.data_sensitivity),
            deadline_seconds=body.deadline_seconds,
            budget_usd=body.budget_usd,
            options=body.options.model_dump(mode="json"),
            labels=dict(body.labels),
        )
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
        from datetime import datetime

        def moment(value: str | None, field: str) -> datetime | None:
            if value is None:
                return None
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError as exc:
                raise ApiError(422, "invalid", "must be an ISO 8601 time", field=field) from exc
            if parsed.tzinfo is None:
                raise ApiError(422, "invalid", "needs a time zone (e.g. Z)", field=field)
            return parsed

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
                created_after=moment(created_after, "created_after"),
                created_before=moment(created_before, "created_before"),
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

    @app.put("/v1/uploads/{filename}", status_code=201, tags=["tasks"])
    async def upload(filename: str, request: Request, principal: Caller) -> dict[str, Any]:
        """Store a local file for a task (``fusionctl submit`` with local paths); returns the URI to use."""
        if not _SAFE_NAME.match(filename) or filename.startswith("."):
            raise ApiError(422, "invalid", "letters, digits, '.', '_' and '-' only", field="filename")
        if ledger is None:
            raise ApiError(409, "uploads_disabled", "no input root is configured", field="filename")
        return await receive_upload(
            chunks=request.stream(),
            filename=filename,
            tenant=principal.tenant,
            ledger=ledger,
            max_bytes=settings.max_upload_bytes,
        )

    # -- worker callbacks: authenticated by the attempt's own token, nothing else
    def attempt_for_callback(attempt_id: str, request: Request) -> Any:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        try:
            expected = store.attempt_token_sha256(attempt_id)
        except NotFound as exc:
            metrics.callbacks_rejected.labels(reason="unknown_attempt").inc()
            raise ApiError(404, "not_found", f"no attempt {attempt_id}", field="attempt_id") from exc
        if not token:
            metrics.callbacks_rejected.labels(reason="no_token").inc()
            raise ApiError(401, "unauthenticated", "the attempt's bearer token is required", field="authorization")
        if not hmac.compare_digest(hashlib.sha256(token.encode()).hexdigest(), expected):
            metrics.callbacks_rejected.labels(reason="wrong_token").inc()
            raise ApiError(403, "forbidden", "this token belongs to no such attempt", field="authorization")
        return store.get_attempt(attempt_id)

    async def callback_body(request: Request, model: type[CallbackBody]) -> CallbackBody:
        """The typed body (docs/worker.md): 422 naming the field, 413 past the size limit; never a 500."""
        raw = await request.body()
        try:
            return parse_callback(raw, model)
        except DomainFieldError as exc:
            status, code = (413, "body_too_large") if len(raw) > MAX_CALLBACK_BYTES else (422, "invalid")
            raise ApiError(status, code, exc.message, field=exc.path) from exc

    def attempt_ended(attempt: Attempt) -> ApiError:
        """409 to a worker whose attempt has ended (cancelled, lost its hedge): it must stop, writing nothing."""
        metrics.callbacks_rejected.labels(reason="attempt_ended").inc()
        why = f": {attempt.reason}" if attempt.reason else ""
        return ApiError(
            409,
            "attempt_ended",
            f"attempt {attempt.id} has ended ({attempt.state.value}{why}); stop without writing the output",
            field="attempt_id",
            state=attempt.state.value,
        )

    @app.post("/v1/attempts/{attempt_id}/heartbeat", tags=["worker"])
    async def heartbeat(attempt_id: str, request: Request) -> dict[str, Any]:
        """Note the worker's heartbeat (``{"progress": {...}}``); ``state`` says whether it may work (``running``)."""
        attempt = attempt_for_callback(attempt_id, request)
        body = await callback_body(request, Heartbeat)
        return note_heartbeat(attempt, body.progress)

    @app.post("/v1/attempts/{attempt_id}/progress", tags=["worker"])
    async def progress(attempt_id: str, request: Request) -> dict[str, Any]:
        """A heartbeat that carries the progress as its body."""
        attempt = attempt_for_callback(attempt_id, request)
        return note_heartbeat(attempt, await callback_body(request, Progress))

    def note_heartbeat(attempt: Attempt, progress: Progress) -> dict[str, Any]:
        # only the typed, bounded fields are stored: a heartbeat cannot grow the attempt's row
        attempt = store.record_heartbeat(attempt.id, progress=progress.stored())
        if attempt.state == AttemptState.LAUNCHING:
            # the worker is up: the attempt (and its task) run, unless a sibling of its hedged launch ran first
            attempt = store.start_running(attempt.id, actor="worker").attempt
        if attempt.state.is_final:
            raise attempt_ended(attempt)
        return {"ok": True, "state": attempt.state.value}

    @app.post("/v1/attempts/{attempt_id}/complete", tags=["worker"])
    async def complete(attempt_id: str, request: Request) -> dict[str, Any]:
        attempt = attempt_for_callback(attempt_id, request)
        body = await callback_body(request, Completion)
        store.record_heartbeat(attempt.id, progress=body.stored())
        advance(store, attempt.id, AttemptState.SUCCEEDED, TaskState.SUCCEEDED, actor="worker", exit_code=0)
        return {"ok": True, "state": store.get_attempt(attempt.id).state.value}

    @app.post("/v1/attempts/{attempt_id}/fail", tags=["worker"])
    async def fail(attempt_id: str, request: Request) -> dict[str, Any]:
        attempt = attempt_for_callback(attempt_id, request)
        body = await callback_body(request, Failure)
        reason = f"{body.kind}: {body.field + ': ' if body.field else ''}{body.message[:1000]}".strip()
        wanted = AttemptState.PREEMPTED if body.kind in ("preempted", "temporary") else AttemptState.FAILED
        advance(store, attempt.id, wanted, TaskState.FAILED, actor="worker", reason=reason, exit_code=body.exit_code)
        return {"ok": True, "state": store.get_attempt(attempt.id).state.value}

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=None)
    def readyz(principal: Annotated[Principal | None, Depends(observer)]) -> Any:
        """``{"status": "ready"}`` for anyone (kubelet probes carry no token); the detail for observers."""
        detailed = principal is not None and principal.observes
        problem = _not_ready_because()
        if problem is not None:
            # the API's one error shape; the reason names the database's state: for observers only
            raise ApiError(503, "not_ready", problem if detailed else "not ready")
        ready: dict[str, Any] = {"status": "ready"}
        if detailed:
            ready.update(_readiness_detail())
        return ready

    def _not_ready_because() -> str | None:
        try:
            with store.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            current = is_current(store.engine)
        except Exception as exc:  # any database failure means "not ready", never a 500
            return f"database unreachable: {type(exc).__name__}"
        return None if current else "database migrations are not current; run fusionctl db upgrade"

    def _readiness_detail() -> dict[str, Any]:
        detail: dict[str, Any] = {}
        if active_policy is not None:
            # an outdated policy is still a good one: ready, with the reason in the detail
            status = active_policy.status()
            detail["policy"] = {
                key: status[key]
                for key in (
                    "version",
                    "source",
                    "modify_index",
                    "applied_at",
                    "up_to_date",
                    "last_error",
                    "source_reachable",
                )
            }
        if leader_status is not None:
            # every replica is ready to serve the API; only the leader schedules
            detail["scheduler"] = leader_status()
        return detail

    @app.get("/metrics", tags=["health"], response_model=None)
    def prometheus(principal: Annotated[Principal | None, Depends(observer)]) -> Response:
        """Prometheus text format; a ``metrics``, operator or admin bearer token."""
        require_observer(principal)
        for state, count in store.count_tasks_by_state().items():
            metrics.tasks_by_state.labels(state=state.value).set(count)
        waiting = waiting_summary(store)
        metrics.tasks_waiting.set(waiting.count)
        metrics.oldest_wait_seconds.set(waiting.oldest_wait_seconds)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    add_policy_routes(app, store=store, active=active_policy)
    add_signal_routes(
        app,
        store=store,
        snapshot=live_signals,
        pollers=signal_pollers,
        thresholds=(lambda: active_policy.current().base.thresholds) if active_policy is not None else None,
    )

    if policy_for is None and active_policy is not None:
        running = active_policy

        def policy_for(tenant: str) -> Policy:
            return running.current().for_tenant(tenant)

    add_plan_routes(app, settings=settings, policy_for=policy_for, live_signals=live_signals)

    return BodyLimit(app, max_bytes=settings.max_body_bytes, unlimited_prefixes=("/v1/uploads/",)), app
