"""How spot offers fared lately: attempts per (provider, region, instance type) by outcome, over a window.

The spot circuit breaker's evidence (``controlplane.policy.breaker``). An
attempt counts in the window when its outcome was recorded in it
(``updated_at >= since``: the time of its last transition), or when it is
still launching or running (live now, whenever it started). Outcomes:

- ``preempted`` (failure): state ``preempted``: a spot interruption or
  eviction, or capacity lost right after launch (how the AWS and Azure
  providers report an unfulfilled spot request).
- ``capacity`` (failure): state ``failed`` with a reason starting
  ``insufficient_capacity`` (the executor records a refused launch as
  ``<code>: <message>``).
- ``succeeded``, ``running`` (success): the attempt got capacity.
- ``launching`` (neither): launched, no verdict yet; a half-open breaker's
  probe in flight.
- ``other`` (neither): failed for another reason, lost, or cancelled; that
  says nothing about spot capacity.

One grouped query, the same SQL on SQLite and PostgreSQL: a range of
``ix_attempts_updated_at`` (the window) or'ed with the live attempts off
``ix_attempts_state_created_at``, never a walk of every attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, Select, bindparam, case, func, literal, or_, select

from controlplane.domain import CLOUD_PROVIDERS, AttemptState
from controlplane.store.tables import attempts

__all__ = ["CAPACITY_REASON_PREFIX", "OfferKey", "OfferOutcomes", "offer_outcomes"]

#: the executor records a refused launch as ``f"{exc.code}: {exc.message}"``; this is InsufficientCapacity's code
CAPACITY_REASON_PREFIX = "insufficient_capacity"
#: (provider, region, instance type) as the attempt recorded them
OfferKey = tuple[str, str | None, str | None]

_FAILURES = ("preempted", "capacity")
_SUCCESSES = ("succeeded", "running")


@dataclass(frozen=True, kw_only=True)
class OfferOutcomes:
    """One offer's attempts in the window, by outcome, with the creation time of the newest of each kind."""

    provider: str
    region: str | None
    instance_type: str | None
    preempted: int = 0
    capacity_errors: int = 0
    succeeded: int = 0
    running: int = 0
    launching: int = 0
    other: int = 0
    last_failure_created_at: datetime | None = None
    last_success_created_at: datetime | None = None
    last_created_at: datetime | None = None

    @property
    def failures(self) -> int:
        return self.preempted + self.capacity_errors

    @property
    def successes(self) -> int:
        return self.succeeded + self.running

    @property
    def failure_rate(self) -> float | None:
        """Failures over failures + successes; None without either."""
        total = self.failures + self.successes
        return self.failures / total if total else None


def _latest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _statement() -> Select[Any]:
    """The grouped read, with ``oo_providers`` and ``oo_since`` bound at each poll."""
    live = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)
    outcome = case(
        (attempts.c.state == AttemptState.PREEMPTED.value, literal("preempted")),
        (
            (attempts.c.state == AttemptState.FAILED.value) & attempts.c.reason.like(f"{CAPACITY_REASON_PREFIX}%"),
            literal("capacity"),
        ),
        (attempts.c.state == AttemptState.SUCCEEDED.value, literal("succeeded")),
        (attempts.c.state == AttemptState.RUNNING.value, literal("running")),
        (attempts.c.state == AttemptState.LAUNCHING.value, literal("launching")),
        else_=literal("other"),
    ).label("outcome")
    # the CASE is computed in a subquery and grouped by its column: PostgreSQL refuses a GROUP BY on an
    # expression whose bound literals are numbered apart from the SELECT's
    classified = (
        select(attempts.c.provider, attempts.c.region, attempts.c.instance_type, attempts.c.created_at, outcome)
        .where(
            attempts.c.provider.in_(bindparam("oo_providers", expanding=True)),
            or_(
                attempts.c.updated_at >= bindparam("oo_since", type_=attempts.c.updated_at.type),
                attempts.c.state.in_(live),
            ),
        )
        .subquery()
    )
    return select(
        classified.c.provider,
        classified.c.region,
        classified.c.instance_type,
        classified.c.outcome,
        func.count().label("attempts"),
        func.max(classified.c.created_at).label("last_created_at"),
    ).group_by(classified.c.provider, classified.c.region, classified.c.instance_type, classified.c.outcome)


#: built once: the breaker poller asks every 15 s, and building the statement (and its cache key) cost more than
#: the read of a 30-minute window
_OUTCOMES = _statement()


def offer_outcomes(
    engine: Engine, *, since: datetime, providers: Sequence[str] = CLOUD_PROVIDERS
) -> dict[OfferKey, OfferOutcomes]:
    """Every offer of ``providers`` with an attempt in the window that starts at ``since``."""
    if since.tzinfo is None:
        raise ValueError("since must be timezone-aware")
    counts: dict[OfferKey, dict[str, Any]] = {}
    with engine.connect() as conn:
        for row in conn.execute(_OUTCOMES, {"oo_providers": list(providers), "oo_since": since}):
            key: OfferKey = (row.provider, row.region, row.instance_type)
            counts.setdefault(key, {})[row.outcome] = (int(row.attempts), row.last_created_at)
    return {key: _outcomes(key, found) for key, found in counts.items()}


def _outcomes(key: OfferKey, found: dict[str, tuple[int, datetime | None]]) -> OfferOutcomes:
    def n(name: str) -> int:
        return found.get(name, (0, None))[0]

    def last(names: Sequence[str]) -> datetime | None:
        return _latest(*(found[name][1] for name in names if name in found))

    return OfferOutcomes(
        provider=key[0],
        region=key[1],
        instance_type=key[2],
        preempted=n("preempted"),
        capacity_errors=n("capacity"),
        succeeded=n("succeeded"),
        running=n("running"),
        launching=n("launching"),
        other=n("other"),
        last_failure_created_at=last(_FAILURES),
        last_success_created_at=last(_SUCCESSES),
        last_created_at=last(tuple(found)),
    )
