"""Cloud spend so far today (UTC), per tenant and overall, from the attempts and their receipts.

What the budget guard reads (``budget/spent_today_usd`` and
``budget/spent_today_usd/<tenant>``). The schema has no billing data and no
price column on attempts, so this is an estimate from what is stored, and
errs towards counting more:

- **Which attempts:** those on ``aws`` or ``azure``, or on the named
  ``targets`` (kubernetes targets on cloud node pools, whose pods run on
  bought nodes), that overlap today (UTC): still launching or running, or
  whose last transition (``updated_at``) is today.
- **Runtime** = end - start, clipped to today: start is the attempt's
  ``created_at`` (the launch request, so boot time counts: conservative);
  end is ``now`` for a live attempt and ``updated_at`` (when its outcome was
  recorded) for a finished one. The resource is released shortly after
  that, which this does not see. A launch refused at once costs ~0.
- **Price:** the candidate the attempt was launched on, in the newest
  receipt (decisions row) of its task made at or before the attempt was
  created: its ``expected_usd_h`` (the fresh spot price that chose it),
  else its ``max_price_usd_h`` (the most an hour may cost). A candidate with
  neither (a target without a max price planned on no fresh price) is
  **unpriced**: it counts 0 and is reported in ``unpriced_attempts``; set
  ``max_price_usd_h`` on cloud targets that spend against a budget.

Receipts are JSON documents, so prices are read once per attempt and kept
in the caller's ``prices`` cache (the budget poller keeps one across polls);
the cache is trimmed to today's attempts on each call. Each call scans the
attempts table (no index on ``updated_at``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, or_, select

from controlplane.domain import CLOUD_PROVIDERS, AttemptState
from controlplane.store.tables import attempts, decisions, tasks

__all__ = ["DailySpend", "PriceCache", "TaskCost", "cloud_spend_today", "day_start", "task_costs"]

#: attempt id -> $/h (None: no price in its receipt); see :func:`cloud_spend_today`
PriceCache = MutableMapping[str, float | None]
#: task ids per IN (...) when reading receipts (well under SQLite's bound-parameter limit)
_CHUNK = 500
#: what pricing an attempt reads: its offer (for the receipt's candidate), state and times (for its run time)
_PRICED_ATTEMPT = (
    attempts.c.id,
    attempts.c.task_id,
    attempts.c.target,
    attempts.c.region,
    attempts.c.instance_type,
    attempts.c.state,
    attempts.c.created_at,
    attempts.c.updated_at,
)


@dataclass(frozen=True, kw_only=True)
class DailySpend:
    """Cloud spend from ``day_start`` (00:00 UTC) to ``as_of``, in USD."""

    day_start: datetime
    as_of: datetime
    total_usd: float
    #: tenant -> USD, only tenants with a cloud attempt today
    per_tenant: Mapping[str, float] = field(default_factory=dict)
    #: cloud attempts that overlap today
    attempts: int = 0
    #: of those, attempts whose receipt gives no price (counted 0)
    unpriced_attempts: int = 0


def day_start(now: datetime) -> datetime:
    """00:00 UTC of ``now``'s UTC day."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def cloud_spend_today(
    engine: Engine,
    *,
    now: datetime,
    prices: PriceCache | None = None,
    providers: Sequence[str] = CLOUD_PROVIDERS,
    targets: Sequence[str] = (),
) -> DailySpend:
    """Today's (UTC) estimated cloud spend at ``now``; see the module's notes for what is approximated."""
    start = day_start(now)
    live = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)
    stmt = (
        select(*_PRICED_ATTEMPT, tasks.c.tenant)
        .join(tasks, tasks.c.id == attempts.c.task_id)
        .where(
            or_(attempts.c.provider.in_(list(providers)), attempts.c.target.in_(list(targets)))
            if targets
            else attempts.c.provider.in_(list(providers)),
            attempts.c.created_at < now,
            or_(attempts.c.state.in_(live), attempts.c.updated_at >= start),
        )
    )
    cache: PriceCache = {} if prices is None else prices
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
        unknown = [row for row in rows if row.id not in cache]
        if unknown:
            cache.update(_prices(conn, unknown))
    # keep the cache to today's attempts, so it cannot grow day after day
    today = {row.id for row in rows}
    for stale in [attempt_id for attempt_id in cache if attempt_id not in today]:
        del cache[stale]

    total, unpriced = 0.0, 0
    per_tenant: dict[str, float] = {}
    for row in rows:
        price = cache.get(row.id)
        if price is None:
            unpriced += 1
            continue
        cost = _cost(row, price, since=start, now=now)
        total += cost
        per_tenant[row.tenant] = per_tenant.get(row.tenant, 0.0) + cost
    for row in rows:  # a tenant with only unpriced or zero-length attempts still shows up, at 0
        per_tenant.setdefault(row.tenant, 0.0)
    return DailySpend(
        day_start=start,
        as_of=now,
        total_usd=total,
        per_tenant=per_tenant,
        attempts=len(rows),
        unpriced_attempts=unpriced,
    )


@dataclass(frozen=True, kw_only=True)
class TaskCost:
    """A task's estimated cloud cost so far, in USD, over all its attempts (0 for private and local work).

    Pods on a cloud node pool (a kubernetes target with ``cloud``) count at the price their receipt chose them on.
    """

    usd: float
    #: cloud attempts whose receipt gives no price (counted 0): the estimate is low by their cost
    unpriced_attempts: int = 0

    def as_json(self) -> dict[str, Any]:
        """As the task list, the task and the webhook events show it (docs/api.md)."""
        return {"estimated_usd": round(self.usd, 6), "unpriced_attempts": self.unpriced_attempts}


def task_costs(engine: Engine, task_ids: Sequence[str], *, now: datetime) -> dict[str, TaskCost]:
    """Each task's estimated cloud cost at ``now`` (every task of ``task_ids`` is in the answer).

    The same estimate as :func:`cloud_spend_today` (launch to outcome, at the
    price its receipt chose it on), over the attempt's whole life instead of
    today's part: what the task list and the console show per task.
    """
    costs = {task_id: TaskCost(usd=0.0) for task_id in task_ids}
    if not task_ids:
        return costs
    with engine.connect() as conn:
        rows: list[Any] = []
        for chunk in _chunks(sorted(set(task_ids)), _CHUNK):
            rows += conn.execute(
                select(*_PRICED_ATTEMPT, attempts.c.provider).where(attempts.c.task_id.in_(chunk))
            ).all()
        prices = _prices(conn, rows) if rows else {}
    for row in rows:
        known = costs[row.task_id]
        price = prices.get(row.id)
        if price is None and row.provider not in CLOUD_PROVIDERS:
            continue  # private or local capacity: free at the margin (a pod on a cloud node pool has its price)
        if price is None:
            costs[row.task_id] = TaskCost(usd=known.usd, unpriced_attempts=known.unpriced_attempts + 1)
        else:
            usd = known.usd + _cost(row, price, since=row.created_at, now=now)
            costs[row.task_id] = TaskCost(usd=usd, unpriced_attempts=known.unpriced_attempts)
    return costs


def _cost(row: Any, price: float, *, since: datetime, now: datetime) -> float:
    """One attempt's cost from ``since`` (clipped to its launch) to its outcome or ``now``, at ``price`` $/h."""
    live = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)
    begin = max(row.created_at, since)
    end = min(now if row.state in live else row.updated_at, now)
    hours: float = max((end - begin).total_seconds(), 0.0) / 3600.0
    return hours * price


def _prices(conn: Any, rows: Sequence[Any]) -> dict[str, float | None]:
    """attempt id -> $/h from its task's receipts (see the module's notes)."""
    receipts: dict[str, list[tuple[datetime, str, Mapping[str, Any]]]] = {}
    task_ids = sorted({row.task_id for row in rows})
    for chunk in _chunks(task_ids, _CHUNK):
        found = conn.execute(
            select(decisions.c.task_id, decisions.c.decided_at, decisions.c.id, decisions.c.plan).where(
                decisions.c.task_id.in_(chunk)
            )
        )
        for task_id, decided_at, decision_id, plan in found:
            receipts.setdefault(task_id, []).append((decided_at, decision_id, plan))
    out: dict[str, float | None] = {}
    for row in rows:
        # newest first; receipts made after the attempt was created are tried last (clock skew, replans)
        mine = sorted(receipts.get(row.task_id, ()), key=lambda r: (r[0] <= row.created_at, r[0], r[1]), reverse=True)
        out[row.id] = _price_in(mine, row)
    return out


def _price_in(receipts: Iterable[tuple[datetime, str, Mapping[str, Any]]], row: Any) -> float | None:
    for _decided_at, _id, plan in receipts:
        candidates = [c for c in plan.get("candidates", ()) if c.get("target") == row.target]
        if not candidates:
            continue
        # the same target may appear once per plan; prefer the candidate of the attempt's region and type
        exact = [c for c in candidates if (c.get("region"), c.get("instance_type")) == (row.region, row.instance_type)]
        for candidate in exact or candidates:
            for field_name in ("expected_usd_h", "max_price_usd_h"):
                value = candidate.get(field_name)
                if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                    return float(value)
        return None
    return None


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for index in range(0, len(items), size):
        yield items[index : index + size]
