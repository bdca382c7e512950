"""Tasks waiting for a placement: how many, since when, and waking them when capacity frees.

A waiting task is a ``queued`` task with a ``queue_reason``: its last plan
had no candidate for a reason time can fix (docs/reliability.md,
"Queueing"). It backs off between plans (``not_before``); when capacity
frees, the scheduler wakes the most urgent, oldest of them at once instead
of letting them sleep out their backoff.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select, update

from controlplane.domain import TaskState
from controlplane.store.columns import UTCDateTime
from controlplane.store.core import StoreCore
from controlplane.store.planner_hints import unindexed
from controlplane.store.tables import tasks

__all__ = ["WaitingSummary", "backing_off", "wake_waiting", "wake_waiting_for", "waiting_summary"]


@dataclass(frozen=True, kw_only=True)
class WaitingSummary:
    """How many tasks wait for a placement, when the oldest wait began (None: none waits), and how long ago."""

    count: int
    oldest_since: datetime | None
    oldest_wait_seconds: float


def _waiting() -> ColumnElement[bool]:
    return and_(tasks.c.state == TaskState.QUEUED.value, tasks.c.queue_reason.is_not(None))


def _like_literal(text: str) -> str:
    """``text`` matched as itself in a LIKE pattern whose escape character is ``/``."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _entry_patterns(target: str, code: str) -> dict[str, str]:
    # a queue reason is "<target>: <code>" joined by "; " (scheduler/queueing.py): match a whole entry, so that
    # target "prem" does not match "onprem: no_capacity"
    entry = _like_literal(f"{target}: {code}")
    return {"w_first": f"{entry}%", "w_later": f"%; {entry}%"}


def waiting_summary(store: StoreCore) -> WaitingSummary:
    """The number of waiting tasks and the start of the oldest wait (for /metrics).

    A waiting task being re-planned right now (claimed: ``planned``, its
    queue reason kept) still counts, so the gauge does not dip every round.
    """
    now = store.now()
    still = and_(
        tasks.c.state.in_((TaskState.QUEUED.value, TaskState.PLANNED.value)), tasks.c.queue_reason.is_not(None)
    )
    with store.read() as conn:
        count, oldest = conn.execute(select(func.count(), func.min(tasks.c.queued_since)).where(still)).one()
    waited = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
    return WaitingSummary(count=int(count), oldest_since=oldest, oldest_wait_seconds=waited)


#: built once: every batch asks it first
_BACKING_OFF = (
    select(tasks.c.id)
    .where(_waiting(), tasks.c.not_before > bindparam("backing_off_now", type_=UTCDateTime()))
    .limit(1)
)


def backing_off(store: StoreCore) -> bool:
    """Whether any waiting task is backing off now (its ``not_before`` lies ahead): one cheap read."""
    with store.read() as conn:
        return conn.execute(_BACKING_OFF, {"backing_off_now": store.now()}).first() is not None


#: built once: every batch with free capacity runs them, per target
_WAKE_PICK = (
    select(tasks.c.id)
    .where(
        _waiting(),
        tasks.c.not_before > bindparam("w_now", type_=UTCDateTime()),
        or_(
            tasks.c.queue_reason.like(bindparam("w_first"), escape="/"),
            tasks.c.queue_reason.like(bindparam("w_later"), escape="/"),
        ),
    )
    .order_by(tasks.c.priority_rank, tasks.c.id)
    .limit(bindparam("w_limit"))
)
_WAKE_PICK_SKIP_LOCKED = _WAKE_PICK.with_for_update(skip_locked=True)
_WAKE = (
    update(tasks)
    .where(tasks.c.id.in_(bindparam("w_ids", expanding=True)), unindexed(tasks.c.state) == TaskState.QUEUED.value)
    .values(not_before=None, updated_at=bindparam("w_now", type_=UTCDateTime()))
)


def wake_waiting(store: StoreCore, free: Mapping[str, int], *, code: str = "no_capacity") -> dict[str, int]:
    """Make backing-off tasks waiting on a target claimable now, per target at most its free slots; how many each.

    Called when free capacity shows up (``free``: target -> free slots), so a
    freed slot is used within a round instead of after the waiting tasks'
    backoff: most urgent then oldest of the tasks with ``<target>:
    no_capacity`` in their queue reason. Only those: free spot capacity does
    not wake, round after round, tasks that wait for a full private cluster.
    With ``code="breaker_open"``, ``free`` is the probes a half-open breaker
    lets through. One transaction for every target; the answer has every
    target asked (fewer than its free slots: no other task waits for it).
    """
    wanted = {target: slots for target, slots in free.items() if slots >= 1}
    if not wanted:
        return {}
    now = store.now()
    # another scheduler's claim may hold some of them: skip those rather than wait
    pick = _WAKE_PICK_SKIP_LOCKED if store.postgres else _WAKE_PICK
    woken: dict[str, None] = {}  # a task waiting on two targets is woken once
    found: dict[str, int] = {}
    with store.write() as conn:
        for target in sorted(wanted):
            ids = list(
                conn.execute(pick, {"w_now": now, "w_limit": wanted[target], **_entry_patterns(target, code)}).scalars()
            )
            found[target] = len(ids)
            woken.update(dict.fromkeys(ids))
        if woken:
            # only the backoff changes: no event (the task still waits for the same reason)
            conn.execute(_WAKE, {"w_ids": list(woken), "w_now": now})
    return found


def wake_waiting_for(store: StoreCore, codes: Iterable[str] | None, *, limit: int) -> list[str]:
    """Make up to ``limit`` backing-off tasks whose queue reason names one of ``codes`` claimable now; their ids.

    ``codes`` None: whatever they wait for. Called when a signal such a
    reason waits on changed (a breaker closed, a new price, the budget day
    turned, a rule's ``when`` flipped; ``scheduler/wakeups.py``): the most
    urgent, oldest first, one wave at a time, so that a change that helps
    nobody re-plans one batch of a long queue, not all of it. One write.
    """
    if limit < 1:
        return []
    now = store.now()
    pick = select(tasks.c.id).where(_waiting(), tasks.c.not_before > now)
    if codes is not None:
        named = sorted(set(codes))
        if not named:
            return []
        # "<target>: <code>" entries: the code after a colon, whole (no code is a prefix of another)
        pick = pick.where(or_(*(tasks.c.queue_reason.contains(f": {code}", autoescape=True) for code in named)))
    pick = pick.order_by(tasks.c.priority_rank, tasks.c.id).limit(limit)
    if store.postgres:
        pick = pick.with_for_update(skip_locked=True)  # another scheduler's claim may hold some: skip those
    with store.write() as conn:
        woken = list(conn.execute(pick).scalars())
        if woken:
            # only the backoff changes: no event (the task still waits for the same reason)
            conn.execute(_WAKE, {"w_ids": woken, "w_now": now})
    return woken
