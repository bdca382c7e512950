"""Attempts: creation, state changes, the first-to-run race of a hedged launch, heartbeats and reads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, bindparam, func, insert, literal, or_, select, update
from sqlalchemy.engine import Connection

from controlplane.domain import Attempt, AttemptState, check_attempt_transition
from controlplane.store.columns import UTCDateTime
from controlplane.store.core import (
    SHA256_HEX,
    StoreCore,
    attempt_from_row,
    event_row,
    ms,
)
from controlplane.store.errors import NotFound, StateMismatch
from controlplane.store.ids import new_id
from controlplane.store.records import AttemptProgress
from controlplane.store.tables import attempts, events, tasks

__all__ = [
    "LIVE_ATTEMPTS",
    "FinishedAttempt",
    "RunningStart",
    "attempt_rows",
    "attempt_transition_event",
    "attempt_token_sha256",
    "attempts_for",
    "create_attempt",
    "finished_attempts_after",
    "get_attempt",
    "get_progress",
    "launch_number",
    "live_attempts",
    "record_heartbeat",
    "set_backend_ref",
    "transition_attempt",
    "write_attempt_transition",
]

#: the attempt states of an attempt that may still run
LIVE_ATTEMPTS = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)


@dataclass(frozen=True, kw_only=True)
class RunningStart:
    """What :meth:`Store.start_running` decided for an attempt whose worker (or backend) says it runs.

    ``outcome``: "won" (it moved to running now: alone, or the first of its
    hedged launch), "running" (it already was: a repeated report), "lost"
    (a sibling of its hedged launch runs or succeeded, or the task ended:
    it was cancelled now) or "ended" (it had ended before).
    """

    outcome: str
    #: the attempt as it is after the decision
    attempt: Attempt
    #: the still-launching siblings that this win cancelled: their backend resources are to be stopped
    cancelled: tuple[Attempt, ...] = ()

    @property
    def running(self) -> bool:
        """Whether the attempt runs now, i.e. its worker may work."""
        return self.outcome in ("won", "running")


class FinishedAttempt(NamedTuple):
    """An attempt that became final, as :meth:`Store.finished_attempts_after` lists it."""

    event_id: int
    attempt_id: str
    provider: str
    #: the final state it reached (``cancelled`` for a hedge's losers: their resources are released everywhere)
    state: AttemptState


def launch_number(table: Any) -> Any:
    """Which launch an attempt belongs to: its hedge group (the first sibling's number), else its own number."""
    return func.coalesce(table.c.hedge_group, table.c.number)


def attempt_rows(
    *,
    attempt_id: str,
    task_id: str,
    number: int,
    target: str,
    provider: str,
    region: str | None,
    instance_type: str | None,
    token_sha256: str,
    at: datetime,
    actor: str,
    hedge_group: int | None = None,
    output_uri: str | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new launching attempt's row and its ``attempt.created`` event (naming its hedge group, if any).

    ``output_uri`` is where its worker will write the output, stored with the
    row so the output route finds it from the moment the launch can be sent.
    """
    attempt = {
        "id": attempt_id,
        "task_id": task_id,
        "number": number,
        "target": target,
        "provider": provider,
        "region": region,
        "instance_type": instance_type,
        "state": AttemptState.LAUNCHING.value,
        "token_sha256": token_sha256,
        "created_at": at,
        "updated_at": at,
        "progress": {},
        "hedge_group": hedge_group,
        "output_uri": output_uri,
    }
    detail: dict[str, Any] = {"number": number, "target": target, "provider": provider}
    if hedge_group is not None:
        detail["hedge_group"] = hedge_group
    created = event_row(
        task_id=task_id,
        attempt_id=attempt_id,
        at=at,
        actor=actor,
        kind="attempt.created",
        to_state=AttemptState.LAUNCHING.value,
        detail=detail,
    )
    return attempt, created


def create_attempt(
    core: StoreCore,
    *,
    task_id: str,
    target: str,
    provider: str,
    token_sha256: str,
    region: str | None = None,
    instance_type: str | None = None,
    actor: str = "scheduler",
    output_uri: str | None = None,
) -> Attempt:
    """A new launching attempt numbered after the task's previous one (see :meth:`Store.create_attempt`)."""
    if not SHA256_HEX.match(token_sha256):
        raise ValueError("token_sha256 must be 64 lowercase hex characters (the token's sha256)")
    now = core.now()
    attempt_id = new_id("att", now_ms=ms(now))
    with core.write() as conn:
        # lock the task so concurrent creations number one after the other
        if conn.execute(core.locked(select(tasks.c.id).where(tasks.c.id == task_id))).one_or_none() is None:
            raise NotFound("task", task_id)
        previous = conn.execute(select(func.max(attempts.c.number)).where(attempts.c.task_id == task_id)).scalar_one()
        attempt, created = attempt_rows(
            attempt_id=attempt_id,
            task_id=task_id,
            number=(previous or 0) + 1,
            target=target,
            provider=provider,
            region=region,
            instance_type=instance_type,
            token_sha256=token_sha256,
            at=now,
            actor=actor,
            output_uri=output_uri,
        )
        conn.execute(insert(attempts).values(**attempt))
        conn.execute(insert(events).values(**created))
        row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
    return attempt_from_row(row)


def transition_attempt(
    core: StoreCore,
    attempt_id: str,
    *,
    wanted: AttemptState,
    actor: str,
    reason: str | None = None,
    exit_code: int | None = None,
    backend_ref: str | None = None,
    expected: AttemptState | None = None,
) -> Attempt:
    """Move an attempt to ``wanted`` and record the event, in one transaction (see :meth:`Store.transition_attempt`)."""
    now = core.now()
    with core.write() as conn:
        row = conn.execute(core.locked(select(attempts).where(attempts.c.id == attempt_id))).one_or_none()
        if row is None:
            raise NotFound("attempt", attempt_id)
        current = AttemptState(row.state)
        if expected is not None and current != expected:
            raise StateMismatch("attempt", attempt_id, expected=expected.value, actual=current.value)
        check_attempt_transition(current, wanted)
        values: dict[str, Any] = {"state": wanted.value, "updated_at": now}
        detail: dict[str, Any] = {}
        for name, value in (("reason", reason), ("exit_code", exit_code), ("backend_ref", backend_ref)):
            if value is not None:
                values[name] = detail[name] = value
        write_attempt_transition(conn, row, current, wanted, values=values, detail=detail, at=now, actor=actor)
        updated = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
    return attempt_from_row(updated)


def attempt_transition_event(
    *,
    task_id: str,
    attempt_id: str,
    current: AttemptState,
    wanted: AttemptState,
    detail: Mapping[str, Any],
    at: datetime,
    actor: str,
) -> dict[str, Any]:
    """The ``attempt.transition`` event row of ``current -> wanted`` (the caller checked the move)."""
    return event_row(
        task_id=task_id,
        attempt_id=attempt_id,
        at=at,
        actor=actor,
        kind="attempt.transition",
        from_state=current.value,
        to_state=wanted.value,
        detail=detail,
    )


def write_attempt_transition(
    conn: Connection,
    row: Row[Any],
    current: AttemptState,
    wanted: AttemptState,
    *,
    values: Mapping[str, Any],
    detail: Mapping[str, Any],
    at: datetime,
    actor: str,
) -> None:
    """The attempt's new row values and its ``attempt.transition`` event (the caller checked the move)."""
    conn.execute(update(attempts).where(attempts.c.id == row.id).values(**values))
    event = attempt_transition_event(
        task_id=row.task_id, attempt_id=row.id, current=current, wanted=wanted, detail=detail, at=at, actor=actor
    )
    conn.execute(insert(events).values(**event))


def set_backend_ref(core: StoreCore, attempt_id: str, *, backend_ref: str) -> Attempt:
    """Record the provider's handle for a launched attempt without changing its state."""
    now = core.now()
    with core.write() as conn:
        result = conn.execute(
            update(attempts).where(attempts.c.id == attempt_id).values(backend_ref=backend_ref, updated_at=now)
        )
        if result.rowcount == 0:
            raise NotFound("attempt", attempt_id)
        row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one()
    return attempt_from_row(row)


def record_output_uri(core: StoreCore, attempt_id: str, *, output_uri: str) -> None:
    """Record where the attempt's worker writes the output, before it is launched (the output route reads it)."""
    with core.write() as conn:
        result = conn.execute(update(attempts).where(attempts.c.id == attempt_id).values(output_uri=output_uri))
        if result.rowcount == 0:
            raise NotFound("attempt", attempt_id)


def get_attempt(core: StoreCore, attempt_id: str) -> Attempt:
    """The attempt, or :class:`NotFound`."""
    with core.read() as conn:
        row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one_or_none()
    if row is None:
        raise NotFound("attempt", attempt_id)
    return attempt_from_row(row)


def attempts_for(core: StoreCore, task_id: str) -> list[Attempt]:
    """The task's attempts, first to last."""
    with core.read() as conn:
        rows = conn.execute(select(attempts).where(attempts.c.task_id == task_id).order_by(attempts.c.number)).all()
    return [attempt_from_row(r) for r in rows]


#: attempts that became final after an event id; built once (the release loop runs it every round)
_FINISHED_AFTER = (
    select(events.c.id, events.c.attempt_id, attempts.c.provider, events.c.to_state)
    .join(attempts, attempts.c.id == events.c.attempt_id)
    .where(
        events.c.id > bindparam("after_event_id"),
        events.c.kind == "attempt.transition",
        events.c.to_state.in_([state.value for state in AttemptState if state.is_final]),
    )
    .order_by(events.c.id)
    .limit(bindparam("finished_limit"))
)
#: what the scheduler follows, every round; built once
_LIVE = (
    select(attempts)
    .where(attempts.c.state.in_(LIVE_ATTEMPTS))
    .order_by(attempts.c.created_at)
    .limit(bindparam("live_limit"))
)


def finished_attempts_after(core: StoreCore, event_id: int, *, limit: int = 500) -> list[FinishedAttempt]:
    """Attempts that became final after ``event_id`` (event id, attempt id, provider, state), oldest first."""
    with core.read() as conn:
        return [
            FinishedAttempt(int(r.id), str(r.attempt_id), str(r.provider), AttemptState(r.to_state))
            for r in conn.execute(_FINISHED_AFTER, {"after_event_id": event_id, "finished_limit": limit})
        ]


def live_attempts(core: StoreCore, *, limit: int = 1000) -> list[Attempt]:
    """Attempts still launching or running, oldest first: what the scheduler follows."""
    with core.read() as conn:
        rows = conn.execute(_LIVE, {"live_limit": limit}).all()
    return [attempt_from_row(r) for r in rows]


def attempt_token_sha256(core: StoreCore, attempt_id: str) -> str:
    """The stored hash of the attempt's callback token (compare with ``hmac.compare_digest``)."""
    with core.read() as conn:
        value = conn.execute(select(attempts.c.token_sha256).where(attempts.c.id == attempt_id)).scalar_one_or_none()
    if value is None:
        raise NotFound("attempt", attempt_id)
    return str(value)


def record_heartbeat(core: StoreCore, attempt_id: str, *, progress: Mapping[str, Any] | None = None) -> Attempt:
    """Note that the attempt's worker called in, replacing its progress when given (nothing once it ended)."""
    now = core.now()
    values: dict[str, Any] = {"last_heartbeat_at": now}
    if progress is not None:
        values["progress"] = dict(progress)
    with core.write() as conn:
        conn.execute(
            update(attempts).where(attempts.c.id == attempt_id, attempts.c.state.in_(LIVE_ATTEMPTS)).values(**values)
        )
        row = conn.execute(select(attempts).where(attempts.c.id == attempt_id)).one_or_none()
    if row is None:
        raise NotFound("attempt", attempt_id)
    return attempt_from_row(row)


def record_heartbeats(core: StoreCore, attempt_ids: Sequence[str]) -> None:
    """Note that the workers of ``attempt_ids`` called in now, in one transaction (ended or unknown ones: no-op)."""
    now = core.now()
    record_heartbeats_at(core, [(attempt_id, now) for attempt_id in dict.fromkeys(attempt_ids)])


#: built once: one executemany per call of record_heartbeats_at
_BEAT_AT = (
    update(attempts)
    .where(
        attempts.c.id == bindparam("b_id"),
        # spelled out: an IN list expands per call, which executemany does not allow
        or_(*(attempts.c.state == literal(state) for state in LIVE_ATTEMPTS)),
        # a heartbeat is never moved back by one written late
        or_(
            attempts.c.last_heartbeat_at.is_(None),
            attempts.c.last_heartbeat_at < bindparam("b_at", type_=UTCDateTime()),
        ),
    )
    .values(last_heartbeat_at=bindparam("b_at", type_=UTCDateTime()))
)


def record_heartbeats_at(core: StoreCore, beats: Sequence[tuple[str, datetime]]) -> None:
    """Note that the workers of ``beats`` called in, each at its own time, in one transaction.

    For a caller that gathers calls before writing them (the simulator
    writes a round's heartbeats at the round, each with the simulated time
    it came at): the rows end as if each had been written when it came.
    Ended or unknown attempts are skipped, as in :func:`record_heartbeats`.
    """
    if not beats:
        return
    for _, at in beats:
        if at.tzinfo is None:
            raise ValueError("heartbeat times must be timezone-aware")
    with core.write() as conn:
        conn.execute(_BEAT_AT, [{"b_id": attempt_id, "b_at": at} for attempt_id, at in beats])


def get_progress(core: StoreCore, attempt_id: str) -> AttemptProgress:
    """When the attempt's worker last called in, and the progress it reported."""
    with core.read() as conn:
        row = conn.execute(
            select(attempts.c.last_heartbeat_at, attempts.c.progress).where(attempts.c.id == attempt_id)
        ).one_or_none()
    if row is None:
        raise NotFound("attempt", attempt_id)
    return AttemptProgress(
        attempt_id=attempt_id, last_heartbeat_at=row.last_heartbeat_at, progress=dict(row.progress or {})
    )
