"""``POST /v1/plan``: a dry run of the placement engine (operators only).

"Where would this task go, under this policy, with these signals, at this
time?" Each of policy, signals and time may be given or left to what is in
force: the policy for the tenant, the live snapshot, the snapshot's own
``taken_at``. Nothing is stored, launched or read from the task's URIs; the
answer is the plan view (docs/policies.md, "Dry-run output"), the same JSON
``fusionctl plan -o json`` prints.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from controlplane.api.auth import Principal
from controlplane.api.contract import BAD_BODY, CALLER, errors
from controlplane.api.deps import authenticate, require_operator
from controlplane.api.errors import ApiError
from controlplane.api.plan_view import plan_view
from controlplane.api.schemas import TaskCreate
from controlplane.api.task_file import DEFAULT_TENANT, TENANT_PATTERN, TaskFileError, task_from_create
from controlplane.config import Settings
from controlplane.domain import SignalSnapshot
from controlplane.policy import Policy, PolicyError, parse_policy, plan
from controlplane.policy_sources import load_policy_file
from controlplane.signals.snapshot_json import SnapshotError, parse_time, snapshot_from_json

__all__ = ["LiveSignals", "PlanRequest", "PolicyFor", "plan_router"]

#: the policy in force for a tenant
PolicyFor = Callable[[str], Policy]
#: the live signals snapshot
LiveSignals = Callable[[], SignalSnapshot]


class PlanRequest(BaseModel):
    """``POST /v1/plan``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: TaskCreate = Field(description="A POST /v1/tasks body; local paths need not exist")
    tenant: str | None = Field(
        default=None, pattern=TENANT_PATTERN, description=f"The task's tenant; default {DEFAULT_TENANT!r}"
    )
    signals: dict[str, Any] | None = Field(
        default=None, description="A signals snapshot (docs/policies.md); default: the live snapshot"
    )
    policy: dict[str, Any] | None = Field(
        default=None, description="A policy document (docs/policies.md); default: the tenant's policy in force"
    )
    at: str | None = Field(
        default=None,
        max_length=64,
        json_schema_extra={"format": "date-time"},
        description="Decision time, ISO 8601 with a zone; default: the snapshot's taken_at",
    )


async def _operator(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    # a dependency, so a submitter is refused 403 before the body is judged (never a 422 that probes it)
    require_operator(principal)
    return principal


Operator = Annotated[Principal, Depends(_operator)]


def _invalid(prefix: str, exc: PolicyError | SnapshotError | TaskFileError) -> ApiError:
    """A 422 whose field is the JSON path inside the body (``signals.spot_prices[0].usd_per_hour``)."""
    field = f"{prefix}.{exc.path}" if exc.path else prefix
    return ApiError(422, "invalid", exc.message, field=field)


def plan_router(
    *,
    settings: Settings,
    policy_for: PolicyFor | None = None,
    live_signals: LiveSignals | None = None,
) -> APIRouter:
    """Add ``POST /v1/plan``.

    ``policy_for(tenant)`` is the policy in force (default: ``settings.policy_file``,
    read on each request so an edited file is what a dry run sees);
    ``live_signals()`` the current snapshot (default: an empty one, taken now:
    every signal missing, which the engine treats conservatively).
    """

    router = APIRouter()
    # a seed form's built-in clouds as serve configures them (checked at serve's start-up)
    seed_clouds = settings.seed_clouds

    def policy_in_force(tenant: str) -> Policy:
        return load_policy_file(settings.policy_file, seed_clouds=seed_clouds)

    def no_signals() -> SignalSnapshot:
        return SignalSnapshot(taken_at=datetime.now(UTC))

    current_policy = policy_for or policy_in_force
    current_signals = live_signals or no_signals

    @router.post(
        "/v1/plan",
        tags=["policies"],
        responses=errors(
            *CALLER,
            *BAD_BODY,
            503,
            why={
                403: "Operators and admins only",
                422: "A value breaks a rule; `field` is its JSON path in the body (`task.kind`, `signals.taken_at`)",
                503: "The policy in force or the live signals cannot be read",
            },
        ),
    )
    def dry_run(body: PlanRequest, principal: Operator) -> dict[str, Any]:
        """Plan a task without submitting it: candidates, rejections, trace and signals used."""
        tenant = body.tenant or DEFAULT_TENANT
        if body.policy is not None:
            try:
                policy = parse_policy(body.policy, seed_clouds=seed_clouds)
            except PolicyError as exc:
                raise _invalid("policy", exc) from exc
        else:
            try:
                policy = current_policy(tenant)
            except PolicyError as exc:
                # the configured policy is broken: the server's problem, not the caller's
                raise ApiError(503, "policy_unavailable", f"the policy in force cannot be read: {exc}") from exc
        if body.signals is not None:
            try:
                snapshot = snapshot_from_json(body.signals)
            except SnapshotError as exc:
                raise _invalid("signals", exc) from exc
        else:
            try:
                snapshot = current_signals()
            except Exception as exc:  # any collector failure is "unavailable", never a 500
                raise ApiError(503, "signals_unavailable", f"the live signals cannot be read: {exc}") from exc
        try:
            now = parse_time(body.at, "at") if body.at is not None else snapshot.taken_at
        except SnapshotError as exc:
            raise ApiError(422, "invalid", exc.message, field="at") from exc
        try:
            task = task_from_create(body.task, tenant=tenant, now=now, output_root=settings.output_root)
        except TaskFileError as exc:
            raise _invalid("task", exc) from exc
        return plan_view(plan(task, snapshot, policy, now))

    return router
