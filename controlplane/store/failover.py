"""Failover: an attempt that ended after launch, and its task sent back to be planned again (or failed)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, Select, and_, bindparam, func, or_, select
from sqlalchemy.engine import Connection
from sqlalchemy.orm import aliased

from controlplane.domain import Attempt, AttemptState, TaskState, check_attempt_transition
from controlplane.store.attempts import LIVE_ATTEMPTS, launch_number, write_attempt_transition
from controlplane.store.core import ATTEMPT_COLUMNS, StoreCore, attempt_from_row, insert_event, transition_task
from controlplane.store.errors import NotFound
from controlplane.store.planner_hints import unindexed
from controlplane.store.tables import attempts, events, tasks

__all__ = ["FailoverResult", "Shortage", "attempts_awaiting_failover", "fail_over"]

#: the event of a failover that spends one of the task's attempts, and of a launch refused for a shortage (no room
#: there now) that sends the task back to wait without spending one
FAILOVER_EVENT = "attempt.failover"
REFUSED_EVENT = "attempt.refused"


@dataclass(frozen=True, kw_only=True)
class FailoverResult:
    """What :meth:`Store.fail_over` did with a task whose attempt ended after launch."""

    task_id: str
    #: "requeued" (planned again once ``not_before`` has passed), "waiting" (a shortage: queued with a queue
    #: reason, no attempt spent), "failed" (attempts used up, or a shortage outlasted the queue limit), or
    #: None: nothing, because another caller already decided (or the task was cancelled or finished)
    outcome: str | None
    #: attempts of the task that ended by failover, this one included (0 when ``outcome`` is None)
    attempts: int = 0
    not_before: datetime | None = None
    #: this call ended the attempt (``outcome`` may still be None: a hedged sibling of it still runs)
    ended: bool = False


@dataclass(frozen=True, kw_only=True)
class Shortage:
    """Every candidate refused the launch for want of room (capacity, the market price): wait, do not spend an attempt.

    The task goes back to ``queued`` as a waiting task (``queue_reason``,
    ``queued_since``), so the queue's own bound applies: it fails once it has
    waited ``max_wait_seconds`` since it last needed a placement (its
    creation, or its last failover that spent an attempt); refusals in
    between do not restart that clock. Its deadline is followed as for any
    waiting task (``scheduler/deadlines.py``).
    """

    #: "<target>: <code>" entries joined by "; ", as a plan's waiting reason (scheduler/queueing.py)
    queue_reason: str
    #: the policy's ``thresholds.max_queue_seconds``
    max_wait_seconds: float


def _awaiting_statement() -> Select[Any]:
    later = aliased(attempts)
    # by launch, not by attempt: the ended siblings of a hedged launch all wait here once none is live,
    # and the first one failed over re-queues the task (the others then find it moved on)
    superseded = (
        select(later.c.id)
        .where(
            later.c.task_id == attempts.c.task_id,
            or_(launch_number(later) > launch_number(attempts), later.c.state.in_(LIVE_ATTEMPTS)),
        )
        .exists()
    )
    # found by task, the few launching and running ones (an IN list, not a join), and only then by the ended
    # attempt's state: every launch ever refused is "failed", so a walk of the state index would grow with the day
    # (planner_hints.py); this per-round read stays flat as ended attempts pile up
    placed = select(tasks.c.id).where(tasks.c.state.in_((TaskState.LAUNCHING.value, TaskState.RUNNING.value)))
    ended = unindexed(attempts.c.state)
    return (
        select(*ATTEMPT_COLUMNS)
        .where(
            attempts.c.task_id.in_(placed),
            or_(
                ended.in_((AttemptState.PREEMPTED.value, AttemptState.LOST.value)),
                and_(ended == AttemptState.FAILED.value, attempts.c.exit_code.is_not(None)),
            ),
            ~superseded,
        )
        .order_by(attempts.c.updated_at)
        .limit(bindparam("awaiting_limit"))
    )


#: built once: every scheduler round runs it, and building it (and its cache key) cost three times the query
_AWAITING = _awaiting_statement()


def attempts_awaiting_failover(core: StoreCore, *, limit: int = 500) -> list[Attempt]:
    """Ended attempts whose task still waits on them: the worker's callback ended them, nobody failed over.

    See :meth:`Store.attempts_awaiting_failover`.
    """
    with core.read() as conn:
        return [attempt_from_row(r) for r in conn.execute(_AWAITING, {"awaiting_limit": limit})]


def _end_live(
    conn: Connection,
    row: Row[Any],
    state: AttemptState,
    *,
    ended: AttemptState | None,
    reason: str,
    trigger: str,
    exit_code: int | None,
    at: datetime,
    actor: str,
) -> AttemptState:
    """A live attempt to its final state ``ended``, with the reason, trigger and exit code; returns ``ended``."""
    if ended is None or not ended.is_final:
        raise ValueError("a live attempt can only be failed over into a final state")
    check_attempt_transition(state, ended)
    values: dict[str, Any] = {"state": ended.value, "updated_at": at, "reason": reason}
    detail: dict[str, Any] = {"reason": reason, "trigger": trigger}
    if exit_code is not None:
        values["exit_code"] = detail["exit_code"] = exit_code
    write_attempt_transition(conn, row, state, ended, values=values, detail=detail, at=at, actor=actor)
    return ended


def _launch_superseded(conn: Connection, row: Row[Any]) -> bool:
    """Whether a newer launch of the task exists, or a sibling of this one still lives."""
    # siblings of a hedged launch share its group: they are not newer, and the last of them to end
    # (no live one beside it) fails the task over, once for the whole launch
    own_group = row.hedge_group if row.hedge_group is not None else row.number
    others = conn.execute(
        select(func.count())
        .select_from(attempts)
        .where(
            attempts.c.task_id == row.task_id,
            or_(launch_number(attempts) > own_group, attempts.c.state.in_(LIVE_ATTEMPTS)),
        )
    ).scalar_one()
    return bool(others)


@dataclass(frozen=True)
class _SentBack:
    """How often a task was sent back so far: failovers that spent an attempt, shortages, the last of the former."""

    spent: int
    refused: int
    last_spent_at: datetime | None


_SENT_BACK = (
    select(events.c.kind, func.count(), func.max(events.c.at))
    .where(events.c.task_id == bindparam("sb_task"), events.c.kind.in_((FAILOVER_EVENT, REFUSED_EVENT)))
    .group_by(events.c.kind)
)


def _sent_back(conn: Connection, task_id: str) -> _SentBack:
    counts = {kind: (n, at) for kind, n, at in conn.execute(_SENT_BACK, {"sb_task": task_id})}
    spent, last = counts.get(FAILOVER_EVENT, (0, None))
    return _SentBack(spent=spent, refused=counts.get(REFUSED_EVENT, (0, None))[0], last_spent_at=last)


def fail_over(
    core: StoreCore,
    attempt_id: str,
    *,
    actor: str,
    trigger: str,
    reason: str,
    retryable: Callable[[AttemptState, int | None], bool],
    max_attempts: int,
    backoff_seconds: Callable[[int], float],
    ended: AttemptState | None = None,
    exit_code: int | None = None,
    shortage: Shortage | None = None,
) -> FailoverResult:
    """End an attempt after launch and send its task back to be planned again, in one transaction.

    See :meth:`Store.fail_over`.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
    now = core.now()
    with core.write() as conn:
        task_id = conn.execute(select(attempts.c.task_id).where(attempts.c.id == attempt_id)).scalar_one_or_none()
        if task_id is None:
            raise NotFound("attempt", attempt_id)
        # the task first, then the attempt: start_running locks in this order too (no deadlock between them)
        task = conn.execute(
            core.locked_no_key(select(tasks.c.state, tasks.c.created_at).where(tasks.c.id == task_id))
        ).one()
        row = conn.execute(core.locked(select(attempts).where(attempts.c.id == attempt_id))).one()
        nothing = FailoverResult(task_id=row.task_id, outcome=None)
        state, code = AttemptState(row.state), row.exit_code
        if not state.is_final:
            state = _end_live(
                conn, row, state, ended=ended, reason=reason, trigger=trigger, exit_code=exit_code, at=now, actor=actor
            )
            code = exit_code if exit_code is not None else code
            nothing = FailoverResult(task_id=row.task_id, outcome=None, ended=True)
        elif not retryable(state, code):
            return nothing
        task_state = TaskState(task.state)
        if task_state not in (TaskState.LAUNCHING, TaskState.RUNNING):
            return nothing  # cancelled, finished, or already sent back by someone else
        if _launch_superseded(conn, row):
            return nothing  # a newer launch exists (this ending was acted on), or a sibling still runs
        sent_back = _sent_back(conn, row.task_id)
        # the backoff grows with every time the task was sent back, shortages included: a market that keeps
        # refusing is asked less and less often
        backoff = timedelta(seconds=backoff_seconds(1 + sent_back.spent + sent_back.refused))
        why = f"{trigger}: {reason}"
        if shortage is not None:
            since = sent_back.last_spent_at or task.created_at
            decided = _wait_for_room(shortage, since=since, now=now, backoff=backoff, why=why, trigger=trigger)
            kind, used = REFUSED_EVENT, sent_back.spent
        else:
            used = 1 + sent_back.spent
            decided = _spend_attempt(used, max_attempts, now=now, backoff=backoff, why=why, trigger=trigger)
            kind = FAILOVER_EVENT
        outcome, wanted, values, task_detail = decided
        not_before = values.get("not_before")
        insert_event(
            conn,
            task_id=row.task_id,
            attempt_id=attempt_id,
            at=now,
            actor=actor,
            kind=kind,
            detail={
                "trigger": trigger,
                "reason": reason,
                "attempt_state": state.value,
                "exit_code": code,
                "attempts": used,
                "max_attempts": max_attempts,
                "outcome": outcome,
                "not_before": not_before.isoformat() if not_before is not None else None,
            },
        )
        transition_task(
            conn,
            row.task_id,
            current=task_state,
            wanted=wanted,
            at=now,
            actor=actor,
            values=values,
            detail=task_detail,
        )
    return FailoverResult(task_id=row.task_id, outcome=outcome, attempts=used, not_before=not_before)


_Decided = tuple[str, TaskState, dict[str, Any], dict[str, Any]]


def _failed(task_reason: str, *, now: datetime, trigger: str) -> _Decided:
    return (
        "failed",
        TaskState.FAILED,
        {"reason": task_reason, "finished_at": now},
        {"reason": task_reason, "trigger": trigger},
    )


def _back_in_queue(not_before: datetime) -> dict[str, Any]:
    """The task row's columns when it goes back to ``queued``: unclaimed, and claimable after ``not_before``."""
    # a queued task runs nowhere: the next plan chooses the target again
    return {"target": None, "not_before": not_before, "claimed_by": None, "claimed_at": None}


def _queued_detail(not_before: datetime, why: str, trigger: str) -> dict[str, Any]:
    return {"reason": why, "trigger": trigger, "not_before": not_before.isoformat()}


def _spend_attempt(
    used: int, max_attempts: int, *, now: datetime, backoff: timedelta, why: str, trigger: str
) -> _Decided:
    """A failover that spends an attempt: the task is planned again after the backoff, or fails when none is left."""
    if used >= max_attempts:
        task_reason = f"max attempts reached ({used} of {max_attempts}); last: {why}"
        return _failed(task_reason, now=now, trigger=trigger)
    not_before = now + backoff
    return "requeued", TaskState.QUEUED, _back_in_queue(not_before), _queued_detail(not_before, why, trigger)


def _wait_for_room(
    shortage: Shortage, *, since: datetime, now: datetime, backoff: timedelta, why: str, trigger: str
) -> _Decided:
    """A launch refused for a shortage: the task waits for room as a queued task, or fails past the queue limit."""
    limit = since + timedelta(seconds=shortage.max_wait_seconds)
    waited = (now - since).total_seconds()
    if now >= limit:
        task_reason = (
            f"waited {waited:.0f} s (thresholds.max_queue_seconds {shortage.max_wait_seconds:g} s) "
            f"without a launch that held; last: {why}"
        )
        return _failed(task_reason, now=now, trigger=trigger)
    # planned again once more at the limit at the latest, so it fails close to it, not a backoff later
    not_before = min(now + backoff, limit)
    values = {**_back_in_queue(not_before), "queue_reason": shortage.queue_reason, "queued_since": since}
    return "waiting", TaskState.QUEUED, values, _queued_detail(not_before, why, trigger)
