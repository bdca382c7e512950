"""The webhook outbox's delivering side: claim what is due, record each try, list and re-queue for operators.

A claim moves due rows to ``delivering`` for one replica until a deadline
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so two replicas claiming at once
take different rows; SQLite serialises writers). A replica that dies while
delivering leaves its claim to lapse and the row is claimed again: delivery
is at least once, with the same event id. A try's result is written only by
the replica that holds the claim, with the task event that reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Row, and_, func, insert, or_, select, update

from controlplane.store.core import StoreCore, event_row
from controlplane.store.errors import NotFound, StateMismatch
from controlplane.store.outbox import PENDING
from controlplane.store.tables import events, webhook_deliveries

__all__ = [
    "DELIVERY_STATES",
    "Delivery",
    "OutboxDepth",
    "Result",
    "claim_deliveries",
    "finish_delivery",
    "get_delivery",
    "list_deliveries",
    "outbox_depth",
    "retry_delivery",
]

DELIVERING, DELIVERED, FAILED = "delivering", "delivered", "failed"
DELIVERY_STATES = (PENDING, DELIVERING, DELIVERED, FAILED)
Result = Literal["delivered", "retry", "failed"]
_T = webhook_deliveries.c


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One outbox row as the deliverer and ``fusionctl webhooks list`` see it."""

    id: str
    tenant: str
    task_id: str
    kind: str
    url: str
    payload: dict[str, Any]
    state: str
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    updated_at: datetime
    last_error: str | None = None
    last_status: int | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class OutboxDepth:
    """Rows not delivered yet (pending or being delivered), and how long the oldest has waited."""

    waiting: int
    oldest_age_s: float


def _delivery(row: Row[Any]) -> Delivery:
    m = row._mapping
    return Delivery(
        id=m["id"],
        tenant=m["tenant"],
        task_id=m["task_id"],
        kind=m["kind"],
        url=m["url"],
        payload=dict(m["payload"]),
        state=m["state"],
        attempts=m["attempts"],
        next_attempt_at=m["next_attempt_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        last_error=m["last_error"],
        last_status=m["last_status"],
        delivered_at=m["delivered_at"],
    )


def _due(now: datetime) -> Any:
    """Pending and due, or claimed by a replica whose claim has lapsed."""
    return or_(
        and_(_T.state == PENDING, _T.next_attempt_at <= now),
        and_(_T.state == DELIVERING, _T.claimed_until < now),
    )


def claim_deliveries(core: StoreCore, *, owner: str, limit: int, claim_seconds: float) -> list[Delivery]:
    """Up to ``limit`` due rows, oldest due first, now ``delivering`` for ``owner`` (their try counted)."""
    now = core.now()
    pick = select(_T.id).where(_due(now)).order_by(_T.next_attempt_at, _T.id).limit(limit)
    if core.postgres:
        pick = pick.with_for_update(skip_locked=True)
    with core.write() as conn:
        ids = list(conn.execute(pick).scalars())
        if not ids:
            return []
        conn.execute(
            update(webhook_deliveries)
            .where(_T.id.in_(ids), _due(now))
            .values(
                state=DELIVERING,
                claimed_by=owner,
                claimed_until=now + timedelta(seconds=claim_seconds),
                attempts=_T.attempts + 1,
                updated_at=now,
            )
        )
        rows = conn.execute(select(webhook_deliveries).where(_T.id.in_(ids), _T.claimed_by == owner)).all()
    return sorted((_delivery(r) for r in rows), key=lambda d: (d.next_attempt_at, d.id))


def finish_delivery(
    core: StoreCore,
    delivery: Delivery,
    *,
    owner: str,
    result: Result,
    status: int | None,
    error: str | None,
    next_attempt_at: datetime | None = None,
) -> bool:
    """Record one try of a claimed row and its task event; False when the claim was lost (nothing written)."""
    now = core.now()
    values: dict[str, Any] = {"claimed_by": None, "claimed_until": None, "updated_at": now, "last_status": status}
    if result == "delivered":
        values.update(state=DELIVERED, delivered_at=now, last_error=None)
    elif result == "retry":
        if next_attempt_at is None:
            raise ValueError("a retry needs next_attempt_at")
        values.update(state=PENDING, next_attempt_at=next_attempt_at, last_error=error)
    else:
        values.update(state=FAILED, last_error=error)
    detail: dict[str, Any] = {"delivery_id": delivery.id, "event": delivery.kind, "try": delivery.attempts}
    if status is not None:
        detail["status"] = status
    if error is not None:
        detail["error"] = error
    if next_attempt_at is not None:
        detail["next_attempt_at"] = next_attempt_at.isoformat()
    with core.write() as conn:
        changed = conn.execute(
            update(webhook_deliveries)
            .where(_T.id == delivery.id, _T.state == DELIVERING, _T.claimed_by == owner)
            .values(**values)
        ).rowcount
        if changed:
            kind = {"delivered": "webhook.delivered", "retry": "webhook.retrying", "failed": "webhook.failed"}[result]
            event = event_row(task_id=delivery.task_id, at=now, actor=owner, kind=kind, detail=detail)
            conn.execute(insert(events).values(**event))
    return bool(changed)


def get_delivery(core: StoreCore, delivery_id: str, *, tenant: str | None = None) -> Delivery:
    """One row (only the tenant's own when ``tenant`` is given), or NotFound."""
    stmt = select(webhook_deliveries).where(_T.id == delivery_id)
    if tenant is not None:
        stmt = stmt.where(_T.tenant == tenant)
    with core.read() as conn:
        row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFound("webhook delivery", delivery_id)
    return _delivery(row)


def list_deliveries(
    core: StoreCore,
    *,
    tenant: str | None = None,
    state: str | None = None,
    task_id: str | None = None,
    after_id: str | None = None,
    limit: int = 50,
) -> list[Delivery]:
    """Rows newest first (``after_id``: older than that one, for paging); None filters nothing."""
    stmt = select(webhook_deliveries)
    for column, wanted in ((_T.tenant, tenant), (_T.state, state), (_T.task_id, task_id)):
        if wanted is not None:
            stmt = stmt.where(column == wanted)
    if after_id is not None:
        stmt = stmt.where(_T.id < after_id)
    with core.read() as conn:
        rows = conn.execute(stmt.order_by(_T.id.desc()).limit(limit)).all()
    return [_delivery(r) for r in rows]


def retry_delivery(core: StoreCore, delivery_id: str, *, actor: str, tenant: str | None = None) -> Delivery:
    """A failed row back to pending, due now, with a fresh retry window; StateMismatch if it is not failed."""
    now = core.now()
    with core.write() as conn:
        stmt = select(webhook_deliveries).where(_T.id == delivery_id)
        if tenant is not None:
            stmt = stmt.where(_T.tenant == tenant)
        row = conn.execute(core.locked(stmt)).one_or_none()
        if row is None:
            raise NotFound("webhook delivery", delivery_id)
        if row.state != FAILED:
            raise StateMismatch("webhook delivery", delivery_id, expected=FAILED, actual=row.state)
        conn.execute(
            update(webhook_deliveries)
            .where(_T.id == delivery_id)
            .values(state=PENDING, attempts=0, next_attempt_at=now, updated_at=now)
        )
        conn.execute(
            insert(events).values(
                **event_row(
                    task_id=row.task_id,
                    at=now,
                    actor=actor,
                    kind="webhook.requeued",
                    detail={"delivery_id": delivery_id, "event": row.kind},
                )
            )
        )
        row = conn.execute(select(webhook_deliveries).where(_T.id == delivery_id)).one()
    return _delivery(row)


def outbox_depth(core: StoreCore) -> OutboxDepth:
    """How many rows wait (pending or delivering) and the age of the oldest, for the metrics."""
    now = core.now()
    with core.read() as conn:
        count, oldest = conn.execute(
            select(func.count(), func.min(_T.created_at)).where(_T.state.in_((PENDING, DELIVERING)))
        ).one()
    if oldest is None:
        return OutboxDepth(0, 0.0)
    if isinstance(oldest, str) or oldest.tzinfo is None:  # an aggregate bypasses the column type on SQLite
        oldest = datetime.fromisoformat(str(oldest)).replace(tzinfo=now.tzinfo)
    return OutboxDepth(int(count), max(0.0, (now - oldest).total_seconds()))
