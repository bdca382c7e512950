"""Attempts that start running or end, many in one transaction: what ``follow`` applies each round.

One at a time, an attempt that starts running was one transaction of six
statements, and one that ends (``advance``: read the attempt, move it, read
the task, move it) up to six transactions; with thousands of attempts ending
an hour, that was most of a scheduler round. Here the rows of every item are
read once, locked task before attempts (the order ``fail_over`` keeps, so
the two never wait on each other), each item is decided in order on those
rows exactly as it was decided alone (a hedge's siblings see one another's
moves), and the changes are written with one statement per kind of row.
``Store.start_running`` and ``advance`` are the same code with one item.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Table, Update, bindparam, insert, select, update
from sqlalchemy.engine import Connection

from controlplane.domain import (
    Attempt,
    AttemptState,
    InvalidTransition,
    TaskState,
    check_attempt_transition,
)
from controlplane.domain.verdict import is_retryable
from controlplane.store.attempts import RunningStart, attempt_transition_event
from controlplane.store.core import ATTEMPT_COLUMNS, StoreCore, attempt_from_mapping, transition_event
from controlplane.store.errors import NotFound
from controlplane.store.outbox import enqueue_outcomes
from controlplane.store.tables import attempts, events, tasks
from controlplane.store.tasks import state_columns

__all__ = ["Outcome", "apply_outcomes", "start_and_settle", "start_running_many"]

#: items per transaction (a round of ``follow`` is rarely more)
_CHUNK = 500
_Item = TypeVar("_Item")
_LIVE_OR_WON = (AttemptState.RUNNING.value, AttemptState.SUCCEEDED.value)
#: the columns a move here may change, written back for every changed row
_ATTEMPT_COLUMNS = ("state", "updated_at", "reason", "exit_code")
_TASK_COLUMNS = (
    "state",
    "updated_at",
    "reason",
    "target",
    "planned_at",
    "claimed_by",
    "claimed_at",
    "started_at",
    "finished_at",
    "queue_reason",
    "queued_since",
)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What became of an attempt, for :func:`apply_outcomes` (the arguments ``advance`` takes)."""

    attempt_id: str
    attempt_state: AttemptState
    task_state: TaskState
    reason: str | None = None
    exit_code: int | None = None


#: the statements every call reads its rows with, built once (the ids are expanded at each execution)
_TASK_OF = select(attempts.c.id, attempts.c.task_id).where(attempts.c.id.in_(bindparam("r_ids", expanding=True)))
#: of a task, what the moves here read or change (not its options and labels, JSON decoded for nothing)
_TASKS = (
    select(tasks.c.id, *(tasks.c[name] for name in _TASK_COLUMNS))
    .where(tasks.c.id.in_(bindparam("r_ids", expanding=True)))
    .order_by(tasks.c.id)
)
_ATTEMPTS = (
    select(*ATTEMPT_COLUMNS)
    .where(attempts.c.task_id.in_(bindparam("r_ids", expanding=True)))
    .order_by(attempts.c.task_id, attempts.c.number)
)


class _Rows:
    """The rows of one call's tasks and their attempts, changed in memory item by item, then written at once."""

    def __init__(self, conn: Connection, core: StoreCore, attempt_ids: Sequence[str], *, at: datetime, actor: str):
        self.at, self.actor = at, actor
        wanted = list(dict.fromkeys(attempt_ids))
        task_of = dict(conn.execute(_TASK_OF, {"r_ids": wanted}).all())
        missing = [attempt_id for attempt_id in wanted if attempt_id not in task_of]
        if missing:
            raise NotFound("attempt", missing[0])
        task_ids = sorted(set(task_of.values()))
        # tasks first, then their attempts: the lock order of start_running and fail_over
        self.tasks = {r.id: dict(r._mapping) for r in conn.execute(core.locked_no_key(_TASKS), {"r_ids": task_ids})}
        rows = conn.execute(core.locked_no_key(_ATTEMPTS), {"r_ids": task_ids}).all()
        self.attempts = {r.id: dict(r._mapping) for r in rows}
        self.siblings: dict[str, list[str]] = {}
        for r in rows:
            self.siblings.setdefault(r.task_id, []).append(r.id)
        self._changed_attempts: dict[str, None] = {}
        self._changed_tasks: dict[str, None] = {}
        self._events: list[dict[str, Any]] = []

    def attempt(self, attempt_id: str) -> Attempt:
        return attempt_from_mapping(self.attempts[attempt_id])

    def move_attempt(
        self, attempt_id: str, wanted: AttemptState, *, values: Mapping[str, Any], detail: Mapping[str, Any]
    ) -> None:
        """The attempt to ``wanted`` with its ``attempt.transition`` event (InvalidTransition if not allowed)."""
        row = self.attempts[attempt_id]
        current = AttemptState(row["state"])
        check_attempt_transition(current, wanted)
        row.update(values)
        row.update(state=wanted.value, updated_at=self.at)
        self._changed_attempts[attempt_id] = None
        self._events.append(
            attempt_transition_event(
                task_id=row["task_id"],
                attempt_id=attempt_id,
                current=current,
                wanted=wanted,
                detail=detail,
                at=self.at,
                actor=self.actor,
            )
        )

    def move_task(
        self, task_id: str, wanted: TaskState, *, values: Mapping[str, Any], detail: Mapping[str, Any]
    ) -> None:
        """The task to ``wanted`` with its ``task.transition`` event (InvalidTransition if not allowed)."""
        row = self.tasks[task_id]
        event = transition_event(
            task_id=task_id, current=TaskState(row["state"]), wanted=wanted, at=self.at, actor=self.actor, detail=detail
        )
        row.update(values)
        row.update(state=wanted.value, updated_at=self.at)
        self._changed_tasks[task_id] = None
        self._events.append(event)

    def write(self, conn: Connection) -> None:
        """Every changed row and the events, in the order they happened: one statement per kind."""
        _write_back(conn, attempts, _ATTEMPT_COLUMNS, [self.attempts[a] for a in self._changed_attempts])
        _write_back(conn, tasks, _TASK_COLUMNS, [self.tasks[t] for t in self._changed_tasks])
        if self._events:
            conn.execute(insert(events), self._events)
            enqueue_outcomes(conn, self._events)


def _write_back(conn: Connection, table: Table, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """``columns`` of each changed row as it is now in memory, in one statement."""
    if rows:
        conn.execute(
            _write_back_statement(table, tuple(columns)),
            [{"b_id": row["id"], **{f"v_{name}": row[name] for name in columns}} for row in rows],
        )


@functools.cache
def _write_back_statement(table: Table, columns: tuple[str, ...]) -> Update:
    """Built once per table: every follow round writes back both tables."""
    return (
        update(table).where(table.c.id == bindparam("b_id")).values({name: bindparam(f"v_{name}") for name in columns})
    )


def _start_running(rows: _Rows, attempt_id: str) -> RunningStart:
    """A launching attempt and its task to running, unless a sibling of its hedged launch won first."""
    row = rows.attempts[attempt_id]
    state = AttemptState(row["state"])
    if state is not AttemptState.LAUNCHING:
        return RunningStart(outcome="ended" if state.is_final else "running", attempt=rows.attempt(attempt_id))
    task_id = row["task_id"]
    task_state = TaskState(rows.tasks[task_id]["state"])
    siblings = [rows.attempts[other] for other in rows.siblings[task_id] if other != attempt_id]
    rival = next((r for r in siblings if r["state"] in _LIVE_OR_WON), None)
    hedged = row["hedge_group"] is not None
    if rival is not None or (hedged and task_state.is_final):
        # a hedged worker waits for this answer before any work, so it never writes a second output
        if rival is None:
            reason = f"the task {task_state.value} first"
        else:  # never for an attempt launched alone: one live attempt per task
            reason = f"hedge lost to {rival['id']}" if hedged else f"attempt {rival['id']} of the task runs already"
        _cancel_launching(rows, attempt_id, reason=reason, winner=rival["id"] if rival else None)
        return RunningStart(outcome="lost", attempt=rows.attempt(attempt_id))
    rows.move_attempt(
        attempt_id, AttemptState.RUNNING, values={}, detail={"hedge_group": row["hedge_group"]} if hedged else {}
    )
    losers = [
        r["id"]
        for r in siblings
        if hedged and r["hedge_group"] == row["hedge_group"] and r["state"] == AttemptState.LAUNCHING.value
    ]
    for loser in losers:
        _cancel_launching(rows, loser, reason=f"hedge lost to {attempt_id}", winner=attempt_id)
    if task_state is TaskState.LAUNCHING:
        task = rows.tasks[task_id]
        values: dict[str, Any] = {} if task["started_at"] is not None else {"started_at": rows.at}
        detail: dict[str, Any] = {}
        if hedged:  # the winner's target is the task's now
            values["target"] = detail["target"] = row["target"]
        rows.move_task(task_id, TaskState.RUNNING, values=values, detail=detail)
    return RunningStart(
        outcome="won", attempt=rows.attempt(attempt_id), cancelled=tuple(rows.attempt(loser) for loser in losers)
    )


def _cancel_launching(rows: _Rows, attempt_id: str, *, reason: str, winner: str | None) -> None:
    """A launching attempt that will never run (a hedge it lost): cancelled, with the reason and the winner."""
    detail: dict[str, Any] = {"reason": reason}
    if winner is not None:
        detail["hedge_winner"] = winner
    rows.move_attempt(attempt_id, AttemptState.CANCELLED, values={"reason": reason}, detail=detail)


def _move_attempt_to(
    rows: _Rows, attempt_id: str, wanted: AttemptState, *, reason: str | None, exit_code: int | None
) -> None:
    """``transition_attempt``'s move: the reason and exit code, when given, on the row and in the event."""
    given = {name: value for name, value in (("reason", reason), ("exit_code", exit_code)) if value is not None}
    rows.move_attempt(attempt_id, wanted, values=given, detail=given)


def _move_task_to(rows: _Rows, task_id: str, wanted: TaskState, *, reason: str | None) -> None:
    """``Store.transition_task``'s move: the columns that change with the state, and the reason."""
    task = rows.tasks[task_id]
    values = state_columns(wanted, started_at=task["started_at"], now=rows.at)
    detail: dict[str, Any] = {}
    if reason is not None:
        values["reason"] = detail["reason"] = reason
    rows.move_task(task_id, wanted, values=values, detail=detail)


def _apply(rows: _Rows, item: Outcome) -> bool:
    """One outcome on the attempt and its task (``scheduler.outcomes.advance`` says what each case means)."""
    attempt_id = item.attempt_id
    before = rows.attempt(attempt_id)
    if before.state.is_final:
        return False
    if item.attempt_state == AttemptState.RUNNING:
        return _start_running(rows, attempt_id).running
    try:
        if before.state == AttemptState.LAUNCHING and item.attempt_state.is_final:
            if before.hedge_group is None:
                _move_attempt_to(rows, attempt_id, AttemptState.RUNNING, reason=None, exit_code=None)
            elif item.attempt_state == AttemptState.SUCCEEDED and not _start_running(rows, attempt_id).running:
                return False  # a sibling ran first: its outcome is the task's, never two
        _move_attempt_to(rows, attempt_id, item.attempt_state, reason=item.reason, exit_code=item.exit_code)
    except InvalidTransition:
        return False
    if item.task_state == TaskState.FAILED and is_retryable(item.attempt_state, item.exit_code):
        return True
    if item.task_state == TaskState.FAILED and _hedge_sibling_lives(rows, before):
        return True
    task_id = before.task_id
    current = TaskState(rows.tasks[task_id]["state"])
    if current.is_final:
        return True
    try:
        if current == TaskState.LAUNCHING and item.task_state == TaskState.SUCCEEDED:
            _move_task_to(rows, task_id, TaskState.RUNNING, reason=None)
        if item.task_state != current:
            _move_task_to(rows, task_id, item.task_state, reason=item.reason)
    except InvalidTransition:
        pass
    return True


def _hedge_sibling_lives(rows: _Rows, before: Attempt) -> bool:
    """Whether ``before`` was a launching sibling of a hedged launch that another live sibling may still win."""
    if before.hedge_group is None or before.state != AttemptState.LAUNCHING:
        return False
    others = (rows.attempts[other_id] for other_id in rows.siblings[before.task_id] if other_id != before.id)
    return any(o["hedge_group"] == before.hedge_group and not AttemptState(o["state"]).is_final for o in others)


def start_running_many(core: StoreCore, attempt_ids: Sequence[str], *, actor: str) -> list[RunningStart]:
    """:meth:`Store.start_running` for each attempt, in order, in one transaction per 500; one answer per id."""
    started: list[RunningStart] = []
    for chunk in _chunks(attempt_ids):
        with core.write() as conn:
            rows = _Rows(conn, core, chunk, at=core.now(), actor=actor)
            started += [_start_running(rows, attempt_id) for attempt_id in chunk]
            rows.write(conn)
    return started


def apply_outcomes(core: StoreCore, outcomes: Sequence[Outcome], *, actor: str) -> list[bool]:
    """Apply each outcome to its attempt and task, in order, in one transaction per 500; False where decided."""
    applied: list[bool] = []
    for chunk in _chunks(outcomes):
        with core.write() as conn:
            rows = _Rows(conn, core, [item.attempt_id for item in chunk], at=core.now(), actor=actor)
            applied += [_apply(rows, item) for item in chunk]
            rows.write(conn)
    return applied


def start_and_settle(
    core: StoreCore, starts: Sequence[str], outcomes: Sequence[Outcome], *, actor: str
) -> tuple[list[RunningStart], list[bool]]:
    """:func:`start_running_many` then :func:`apply_outcomes`, in one transaction: what a round of ``follow`` writes.

    The same decisions as the two calls one after the other (the outcomes
    are decided on the rows as the starts left them); one transaction for
    a round instead of two per backend. Past 500 items in all, the two
    calls (each chunked) are made instead.
    """
    if len(starts) + len(outcomes) > _CHUNK:
        return start_running_many(core, starts, actor=actor), apply_outcomes(core, outcomes, actor=actor)
    if not starts and not outcomes:
        return [], []
    with core.write() as conn:
        rows = _Rows(conn, core, [*starts, *(item.attempt_id for item in outcomes)], at=core.now(), actor=actor)
        started = [_start_running(rows, attempt_id) for attempt_id in starts]
        applied = [_apply(rows, item) for item in outcomes]
        rows.write(conn)
    return started, applied


def _chunks(items: Sequence[_Item]) -> list[Sequence[_Item]]:
    """``items`` 500 at a time: one IN list per chunk stays far below every database's parameter limit."""
    return [items[start : start + _CHUNK] for start in range(0, len(items), _CHUNK)]
