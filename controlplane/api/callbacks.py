"""Worker callbacks: heartbeat, progress, complete, fail.

Authenticated by the attempt's own token and nothing else (docs/worker.md);
bodies are the typed models of ``controlplane/domain/callbacks.py``, so a
hostile body is a 413 or a 422 naming the field, never a 500.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, TypeVar

from fastapi import APIRouter, Request

from controlplane.api.contract import errors, json_body
from controlplane.api.errors import ApiError
from controlplane.domain import Attempt, AttemptState, TaskState
from controlplane.domain import FieldError as DomainFieldError
from controlplane.domain.backend import BackendStatus
from controlplane.domain.callbacks import MAX_CALLBACK_BYTES, Completion, Failure, Heartbeat, Progress, parse_callback
from controlplane.domain.verdict import Next, verdict, worker_report
from controlplane.metrics import Metrics
from controlplane.scheduler import advance
from controlplane.store import NotFound, Store, utcnow

__all__ = ["callback_router"]

CallbackBody = TypeVar("CallbackBody", Heartbeat, Progress, Completion, Failure)


#: what every callback can answer besides its 200
_CALLBACK_ERRORS = errors(
    401,
    403,
    404,
    409,
    413,
    422,
    why={
        401: "No bearer token",
        403: "The token is not this attempt's",
        404: "No attempt with this id",
        409: "The attempt has ended (cancelled, lost its hedge): stop without writing the output",
        413: f"The body passes {MAX_CALLBACK_BYTES} bytes (or the server's body limit)",
    },
)


def _callback_route(model: type[Heartbeat | Progress | Completion | Failure]) -> dict[str, Any]:
    """The route's documented body (an empty one counts as ``{}``, hence not required) and statuses."""
    return {"tags": ["worker"], "responses": _CALLBACK_ERRORS, "openapi_extra": json_body(model, required=False)}


def callback_router(*, store: Store, metrics: Metrics) -> APIRouter:
    """The ``/v1/attempts/{id}/...`` routes."""
    router = APIRouter()

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

    @router.post("/v1/attempts/{attempt_id}/heartbeat", **_callback_route(Heartbeat))
    async def heartbeat(attempt_id: str, request: Request) -> dict[str, Any]:
        """Note the worker's heartbeat (``{"progress": {...}}``); ``state`` says whether it may work (``running``)."""
        attempt = attempt_for_callback(attempt_id, request)
        body = await callback_body(request, Heartbeat)
        return note_heartbeat(attempt, body.progress)

    @router.post("/v1/attempts/{attempt_id}/progress", **_callback_route(Progress))
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

    def settle(attempt: Attempt, report: BackendStatus) -> None:
        """The worker's report, judged by verdict(); the attempt ends as it says (a retryable ending: only
        the attempt, its failover is the scheduler's, which knows the tenant's max attempts)."""
        decided = verdict(attempt=attempt, status=report, last_heartbeat=None, rules=None, now=utcnow())
        if decided.ended is None:
            return
        task_state = TaskState.SUCCEEDED if decided.next is Next.SUCCEED else TaskState.FAILED
        ended_here = advance(
            store,
            attempt.id,
            decided.ended,
            task_state,
            actor="worker",
            reason=decided.reason,
            exit_code=decided.exit_code,
        )
        if ended_here:  # most attempts end by their worker's word: counted here, not by the scheduler
            metrics.attempt_ended(provider=attempt.provider, target=attempt.target, outcome=decided.ended.value)

    @router.post("/v1/attempts/{attempt_id}/complete", **_callback_route(Completion))
    async def complete(attempt_id: str, request: Request) -> dict[str, Any]:
        attempt = attempt_for_callback(attempt_id, request)
        body = await callback_body(request, Completion)
        store.record_heartbeat(attempt.id, progress=body.stored())
        settle(attempt, worker_report(kind=None))
        return {"ok": True, "state": store.get_attempt(attempt.id).state.value}

    @router.post("/v1/attempts/{attempt_id}/fail", **_callback_route(Failure))
    async def fail(attempt_id: str, request: Request) -> dict[str, Any]:
        attempt = attempt_for_callback(attempt_id, request)
        body = await callback_body(request, Failure)
        reason = f"{body.kind}: {body.field + ': ' if body.field else ''}{body.message[:1000]}".strip()
        settle(attempt, worker_report(kind=body.kind, reason=reason, exit_code=body.exit_code))
        return {"ok": True, "state": store.get_attempt(attempt.id).state.value}

    return router
