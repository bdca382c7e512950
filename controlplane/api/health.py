"""Health, readiness and metrics.

``/healthz`` is open (liveness); ``/readyz`` says ready or not to anyone
(kubelet probes carry no token) and the detail only to observers;
``/metrics`` needs a ``metrics``, operator or admin token.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import observer, require_observer
from controlplane.api.errors import ApiError
from controlplane.metrics import Metrics
from controlplane.policy_sources import ActivePolicy
from controlplane.store import Store, is_current, waiting_summary

__all__ = ["health_router"]


def health_router(
    *,
    store: Store,
    metrics: Metrics,
    active_policy: ActivePolicy | None = None,
    leader_status: Callable[[], dict[str, Any]] | None = None,
) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics``."""

    router = APIRouter()

    @router.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        tags=["health"],
        response_model=None,
        responses=errors(
            401, 503, why={401: "A bearer token was sent and is not valid", 503: "Not ready: the reason, for observers"}
        ),
    )
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

    @router.get(
        "/metrics",
        tags=["health"],
        response_model=None,
        response_class=Response,
        responses={
            200: {
                # text/plain with the format's version and charset as parameters (CONTENT_TYPE_LATEST)
                "description": "The Prometheus text exposition format",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            },
            **errors(*CALLER, why={403: "Metrics, operator or admin tokens only"}),
        },
    )
    def prometheus(principal: Annotated[Principal | None, Depends(observer)]) -> Response:
        """Prometheus text format; a ``metrics``, operator or admin bearer token."""
        require_observer(principal)
        for state, count in store.count_tasks_by_state().items():
            metrics.tasks_by_state.labels(state=state.value).set(count)
        waiting = waiting_summary(store)
        metrics.tasks_waiting.set(waiting.count)
        metrics.oldest_wait_seconds.set(waiting.oldest_wait_seconds)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
