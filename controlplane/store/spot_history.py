"""How each spot offer fared over a window: the history the learned spot risk of ``plan()`` estimates from.

Per (provider, region, instance type), over the attempts of the given spot
targets created since the window's start:

- ``launches``: every attempt sent there;
- ``refusals``: failed with ``insufficient_capacity`` (the launch was refused);
- ``preemptions``: state ``preempted`` (reclaimed, or capacity lost right after launch);
- ``run_hours``: the hours those attempts held an instance, from the launch
  to their end (still running: to ``now``); the boot counts, which makes
  the preemption rate per hour a little lower than per hour of work.

Only spot targets are asked for: an on-demand attempt on the same instance
type is never reclaimed and would make the offer look safer than it is. One
grouped query; the seconds are computed in SQL, per dialect.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, bindparam, case, func, select
from sqlalchemy.sql.elements import ColumnElement

from controlplane.domain import AttemptState
from controlplane.store.offer_stats import CAPACITY_REASON_PREFIX, OfferKey
from controlplane.store.tables import attempts

__all__ = ["OfferHistory", "spot_history"]


@dataclass(frozen=True, kw_only=True)
class OfferHistory:
    launches: int
    refusals: int
    preemptions: int
    run_hours: float


def _epoch_s(column: Any, dialect: str) -> ColumnElement[Any]:
    """Seconds since the epoch of a timestamp column, in the store's dialect."""
    if dialect == "sqlite":
        # stored as naive UTC text; julianday() reads it, day 2440587.5 is 1970-01-01
        return (func.julianday(column) - 2440587.5) * 86400.0
    return func.extract("epoch", column)


@functools.cache  # built once per dialect: the poller asks every minute, and building it cost more than the read
def _statement(dialect: str) -> Select[Any]:
    """The grouped read for ``dialect``, with ``sh_targets``, ``sh_since`` and ``sh_now`` bound at each poll."""
    running = attempts.c.state == AttemptState.RUNNING.value
    held = attempts.c.state.in_(
        [AttemptState.RUNNING.value, AttemptState.SUCCEEDED.value, AttemptState.PREEMPTED.value]
    )
    start = _epoch_s(attempts.c.created_at, dialect)
    # a bound parameter typed as the column, so the store's UTC handling applies to it as to any timestamp
    now_s = _epoch_s(bindparam("sh_now", type_=attempts.c.created_at.type), dialect)
    end = case((running, now_s), else_=_epoch_s(attempts.c.updated_at, dialect))
    refused = (attempts.c.state == AttemptState.FAILED.value) & attempts.c.reason.like(f"{CAPACITY_REASON_PREFIX}%")
    return (
        select(
            attempts.c.provider,
            attempts.c.region,
            attempts.c.instance_type,
            func.count().label("launches"),
            func.sum(case((refused, 1), else_=0)).label("refusals"),
            func.sum(case((attempts.c.state == AttemptState.PREEMPTED.value, 1), else_=0)).label("preemptions"),
            func.sum(case((held, end - start), else_=0.0)).label("run_s"),
        )
        # a range of ix_attempts_target_created_at per spot target (migration 0012), not a walk of every attempt
        .where(
            attempts.c.target.in_(bindparam("sh_targets", expanding=True)),
            attempts.c.created_at >= bindparam("sh_since", type_=attempts.c.created_at.type),
        )
        .group_by(attempts.c.provider, attempts.c.region, attempts.c.instance_type)
    )


def spot_history(
    engine: Engine, *, since: datetime, now: datetime, targets: Sequence[str]
) -> dict[OfferKey, OfferHistory]:
    """Each offer of the spot ``targets`` with an attempt created in the window that starts at ``since``."""
    if since.tzinfo is None or now.tzinfo is None:
        raise ValueError("since and now must be timezone-aware")
    if not targets:
        return {}
    stmt = _statement(engine.dialect.name)
    found: dict[OfferKey, OfferHistory] = {}
    with engine.connect() as conn:
        for row in conn.execute(stmt, {"sh_targets": list(targets), "sh_since": since, "sh_now": now}):
            found[(row.provider, row.region, row.instance_type)] = OfferHistory(
                launches=int(row.launches),
                refusals=int(row.refusals or 0),
                preemptions=int(row.preemptions or 0),
                run_hours=max(float(row.run_s or 0.0), 0.0) / 3600.0,
            )
    return found
