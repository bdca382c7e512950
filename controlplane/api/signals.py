"""``GET /v1/signals`` and ``/v1/signals/history`` (operators): what the planner sees, and how old it is."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from controlplane.api.auth import Principal
from controlplane.api.contract import CALLER, errors
from controlplane.api.deps import authenticate, require_operator
from controlplane.api.errors import ApiError
from controlplane.domain import CAPACITY_SOURCE, PREEMPTIBLE_SOURCE, SignalSnapshot
from controlplane.policy import Thresholds
from controlplane.policy.freshness import applied_ttl
from controlplane.store import Store

__all__ = ["signal_router", "signal_rows"]

Caller = Annotated[Principal, Depends(authenticate)]
_OPERATORS = "Operators and admins only"


def _unit(source: str, key: str, local_targets: Collection[str]) -> str | None:
    """What a capacity value counts: a local target's are worker slots on this machine, which may have no GPU."""
    if source == PREEMPTIBLE_SOURCE:
        return "gpus"
    if source != CAPACITY_SOURCE:
        return None
    return "local_slots" if key in local_targets else "gpus"


def signal_rows(
    snapshot: SignalSnapshot, thresholds: Thresholds | None = None, *, local_targets: Collection[str] = ()
) -> list[dict[str, Any]]:
    """One row per signal: source, key, value, unit, observed_at, age, TTL and fresh/stale, sorted by name.

    The TTL is the one plan() applies under ``thresholds`` (the base policy's; the documented
    defaults when None): the lower of the sample's own and the policy's (policy/freshness.py).
    ``unit`` says what a ``free_gpus`` value counts (``gpus``, or ``local_slots`` for the
    ``local_targets``) and a ``preemptible_gpus`` value (``gpus``); None for every other source.
    """
    now = snapshot.taken_at
    thresholds = Thresholds() if thresholds is None else thresholds
    rows = []
    for name in sorted(snapshot.samples):
        sample = snapshot.samples[name]
        age = sample.age_seconds(now)
        ttl = applied_ttl(sample, thresholds)
        rows.append(
            {
                "name": name,
                "source": sample.source,
                "key": sample.key,
                "value": sample.value,
                "unit": _unit(sample.source, sample.key, local_targets),
                "observed_at": sample.observed_at.isoformat(),
                "age_seconds": round(age, 3),
                "ttl_seconds": None if ttl == float("inf") else ttl,
                "status": "stale" if age > ttl else "fresh",
            }
        )
    return rows


def signal_router(
    *,
    store: Store,
    snapshot: Callable[[], SignalSnapshot] | None,
    pollers: Callable[[], list[dict[str, Any]]] | None,
    thresholds: Callable[[], Thresholds] | None = None,
    local_targets: Callable[[], Collection[str]] | None = None,
) -> APIRouter:
    """``thresholds`` gives the base policy's in force, so a row's TTL is the one plan() applies;
    ``local_targets`` the names of the local provider's targets in force, whose capacity is slots."""

    router = APIRouter()

    @router.get(
        "/v1/signals",
        tags=["signals"],
        responses=errors(
            *CALLER, 422, 404, why={403: _OPERATORS, 404: "This API is not attached to a running scheduler"}
        ),
    )
    def signals(principal: Caller, source: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, Any]:
        """Every signal's newest value with its age and status, and each poller's state."""
        require_operator(principal)
        if snapshot is None:
            raise ApiError(404, "not_found", "this API is not attached to a running scheduler", field="signals")
        taken = snapshot()
        applied = thresholds() if thresholds is not None else None
        local = local_targets() if local_targets is not None else ()
        rows = [
            row for row in signal_rows(taken, applied, local_targets=local) if source is None or row["source"] == source
        ]
        return {"taken_at": taken.taken_at.isoformat(), "signals": rows, "pollers": pollers() if pollers else []}

    @router.get("/v1/signals/history", tags=["signals"], responses=errors(*CALLER, 422, why={403: _OPERATORS}))
    def history(
        principal: Caller,
        source: Annotated[str | None, Query(max_length=64)] = None,
        key: Annotated[str | None, Query(max_length=256)] = None,
        since_seconds: Annotated[int | None, Query(ge=1, le=90 * 86400)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 500,
    ) -> dict[str, Any]:
        """Recorded values, newest first (kept for ``FUSIONPLANE_SIGNAL_RETENTION_HOURS``)."""
        require_operator(principal)
        since = datetime.now(UTC) - timedelta(seconds=since_seconds) if since_seconds else None
        items = store.signal_history(source=source, key=key, since=since, limit=limit)
        return {"items": [{"source": s, "key": k, "value": v, "observed_at": at.isoformat()} for s, k, v, at in items]}

    return router
