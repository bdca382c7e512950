"""The store's transaction core: what every aggregate module of the store writes and reads through.

:class:`StoreCore` wraps an :class:`~sqlalchemy.Engine`: :meth:`~StoreCore.write`
and :meth:`~StoreCore.read` open one short transaction each (a writing one
first checks the leader fence, when the store is fenced), :meth:`~StoreCore.locked`
adds ``FOR UPDATE`` on PostgreSQL, and :meth:`~StoreCore.now` is the store's
clock. Around it: the row mappers (:func:`task_from_row`,
:func:`attempt_from_row`, :func:`event_from_row`), the event row builder
(:func:`event_row`) and :func:`transition_task`, the one place a task's
state changes together with its ``task.transition`` event, always checked
against the state machine (:func:`~controlplane.domain.check_task_transition`),
and with the webhook outbox's row when the submitter asked to be told
(:mod:`controlplane.store.outbox`).

Concurrency: rows that are read and then changed are locked (``SELECT ...
FOR UPDATE`` on PostgreSQL; on SQLite every writing transaction starts with
``BEGIN IMMEDIATE``, which serialises writers, and threads of this process
queue on one lock first).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime
from typing import Any, Self

from sqlalchemy import Engine, Row, insert, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from controlplane.domain import (
    Attempt,
    AttemptState,
    DataSensitivity,
    Priority,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
    check_task_transition,
)
from controlplane.store.columns import utcnow
from controlplane.store.engine import WRITE_OPTION
from controlplane.store.fence import Fence
from controlplane.store.outbox import enqueue_outcomes
from controlplane.store.records import Event
from controlplane.store.tables import attempts, events, tasks

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "SHA256_HEX",
    "StoreCore",
    "attempt_from_mapping",
    "attempt_from_row",
    "event_from_row",
    "event_row",
    "insert_event",
    "ms",
    "task_from_row",
    "transition_event",
    "transition_task",
]

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
#: a callback token's sha256 as the store keeps it
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")


class StoreCore:
    """An engine, a clock and an optional leader fence: one short transaction per :meth:`write` or :meth:`read`."""

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._engine = engine
        self._clock = clock
        self._postgres = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time. Threads of this process queue on a lock
        # instead of racing for BEGIN IMMEDIATE and falling into SQLite's busy
        # handler, whose sleeps made tail latency explode under concurrent submits.
        # Other processes still meet busy_timeout as before.
        self._write_lock: AbstractContextManager[Any] = nullcontext() if self._postgres else threading.Lock()
        #: set on the copy a leading scheduler writes through (:meth:`fenced`); None: writes are not fenced
        self._fence: Fence | None = None
        #: monotonic time of the last check of the fence that passed
        self._fence_checked = 0.0

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def postgres(self) -> bool:
        """Whether the database is PostgreSQL (else SQLite)."""
        return self._postgres

    @property
    def fence(self) -> Fence | None:
        return self._fence

    def fenced(self, fence: Fence) -> Self:
        """This store, with every write first checking that ``fence`` still holds (controlplane.store.lease).

        The copy shares the engine and, on SQLite, the writer lock; the
        API's store stays unfenced (submissions and workers' callbacks are
        not scheduling decisions).
        """
        view = copy.copy(self)
        view._fence = fence
        return view

    def check_fence(self, *, max_age_s: float = 0.0) -> None:
        """Raise ``Fenced`` if this store's fence no longer holds (a read; no-op when unfenced).

        For the moment between a fenced write and a call outside the
        database, such as a launch: a deposed leader stops before it sends.
        With ``max_age_s``, a check (or fenced write) that passed less than
        that long ago is taken as still good, so a batch of launches costs
        one read per interval rather than one per launch.
        """
        if self._fence is None:
            return
        if max_age_s > 0 and time.monotonic() - self._fence_checked < max_age_s:
            return
        with self.read() as conn:
            self._fence.check(conn, postgres=False)
        self._fence_checked = time.monotonic()

    def now(self) -> datetime:
        """The store's clock (aware UTC; tests may replace the clock)."""
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the store's clock must return timezone-aware datetimes")
        return now

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One writing transaction, committed on leaving (the fence checked first, when fenced)."""
        with self._write_lock, self._engine.connect() as conn:
            conn.execution_options(**{WRITE_OPTION: True})
            with conn.begin():
                if self._fence is not None:
                    self._fence.check(conn, postgres=self._postgres)
                    self._fence_checked = time.monotonic()
                yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One reading transaction."""
        with self._engine.connect() as conn, conn.begin():
            yield conn

    def locked(self, stmt: Select[Any]) -> Select[Any]:
        """``stmt`` with ``FOR UPDATE`` on PostgreSQL (SQLite's writers are serialised anyway)."""
        return stmt.with_for_update() if self._postgres else stmt

    def locked_no_key(self, stmt: Select[Any]) -> Select[Any]:
        """:meth:`locked` as FOR NO KEY UPDATE on PostgreSQL, for rows locked before other rows.

        That is the lock an UPDATE of non-key columns takes anyway, and it
        lets another transaction insert an event naming the row (the foreign
        key check share-locks it): ``transition_attempt`` locks an attempt,
        then inserts its event; with FOR UPDATE here, the task row locked
        first would make the two wait on each other.
        """
        return stmt.with_for_update(key_share=True) if self._postgres else stmt


def ms(moment: datetime) -> int:
    """Milliseconds since the epoch (the time part of new ids)."""
    return int(moment.timestamp() * 1000)


def task_from_row(row: Row[Any]) -> Task:
    """A ``tasks`` row (or a row that selects all of its columns) as the domain's :class:`Task`."""
    m = row._mapping
    spec = TaskSpec(
        tenant=m["tenant"],
        kind=TaskKind(m["kind"]),
        source_uri=m["source_uri"],
        target_uri=m["target_uri"],
        output_uri=m["output_uri"],
        priority=Priority(m["priority"]),
        data_sensitivity=DataSensitivity(m["data_sensitivity"]),
        deadline_seconds=m["deadline_seconds"],
        budget_usd=m["budget_usd"],
        options=dict(m["options"] or {}),
        labels=dict(m["labels"] or {}),
        input_bytes=m["input_bytes"],
        notify_url=m["notify_url"],
        notify_events=tuple(filter(None, (m["notify_events"] or "").split(","))),
    )
    return Task(
        id=m["id"],
        spec=spec,
        state=TaskState(m["state"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        reason=m["reason"],
        target=m["target"],
        queue_reason=m["queue_reason"],
        queued_since=m["queued_since"],
    )


#: the columns :func:`attempt_from_mapping` reads (the :class:`Attempt` fields, which the columns are named after):
#: what the hot reads select, instead of the whole row (its ``progress`` JSON, decoded for every live attempt every
#: round, was the largest part of follow's read)
ATTEMPT_COLUMNS = tuple(attempts.c[field.name] for field in dataclasses.fields(Attempt))


def attempt_from_row(row: Row[Any]) -> Attempt:
    """An ``attempts`` row as the domain's :class:`Attempt`."""
    return attempt_from_mapping(row._mapping)


def attempt_from_mapping(m: Mapping[Any, Any]) -> Attempt:
    """An ``attempts`` row's values (a row's mapping, or a copy changed in memory) as an :class:`Attempt`."""
    return Attempt(
        id=m["id"],
        task_id=m["task_id"],
        number=m["number"],
        target=m["target"],
        provider=m["provider"],
        state=AttemptState(m["state"]),
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        region=m["region"],
        instance_type=m["instance_type"],
        backend_ref=m["backend_ref"],
        reason=m["reason"],
        exit_code=m["exit_code"],
        hedge_group=m["hedge_group"],
        output_uri=m["output_uri"],
    )


def event_from_row(row: Row[Any]) -> Event:
    """An ``events`` row as an :class:`Event` record."""
    m = row._mapping
    return Event(
        id=m["id"],
        task_id=m["task_id"],
        attempt_id=m["attempt_id"],
        at=m["at"],
        actor=m["actor"],
        kind=m["kind"],
        from_state=m["from_state"],
        to_state=m["to_state"],
        detail=dict(m["detail"] or {}),
    )


def event_row(
    *,
    task_id: str,
    at: datetime,
    actor: str,
    kind: str,
    attempt_id: str | None = None,
    from_state: str | None = None,
    to_state: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The values of one ``events`` row."""
    return {
        "task_id": task_id,
        "attempt_id": attempt_id,
        "at": at,
        "actor": actor,
        "kind": kind,
        "from_state": from_state,
        "to_state": to_state,
        "detail": dict(detail or {}),
    }


def insert_event(conn: Connection, **fields: Any) -> None:
    """Insert one event row (fields as :func:`event_row` takes them)."""
    conn.execute(insert(events).values(**event_row(**fields)))


def transition_event(
    *,
    task_id: str,
    current: TaskState,
    wanted: TaskState,
    at: datetime,
    actor: str,
    detail: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``task.transition`` event row of ``current -> wanted``, once the state machine allowed it.

    Raises :class:`~controlplane.domain.InvalidTransition` otherwise. For
    batches that update many task rows in one statement; a single task
    changes state through :func:`transition_task`.
    """
    check_task_transition(current, wanted)
    return event_row(
        task_id=task_id,
        at=at,
        actor=actor,
        kind="task.transition",
        from_state=current.value,
        to_state=wanted.value,
        detail=detail,
    )


def transition_task(
    conn: Connection,
    task_id: str,
    *,
    current: TaskState,
    wanted: TaskState,
    at: datetime,
    actor: str,
    values: Mapping[str, Any] | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Move a task from ``current`` to ``wanted`` and write its ``task.transition`` event, inside ``conn``.

    The state machine is checked first (a refused move raises
    :class:`~controlplane.domain.InvalidTransition` and writes nothing);
    ``values`` are the other columns that change with the state
    (``updated_at`` is ``at`` unless given). The caller has locked the
    task row and read ``current`` from it.
    """
    event = transition_event(task_id=task_id, current=current, wanted=wanted, at=at, actor=actor, detail=detail)
    changes: dict[str, Any] = {"updated_at": at, **(values or {}), "state": wanted.value}
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(**changes))
    conn.execute(insert(events).values(**event))
    enqueue_outcomes(conn, [event])
