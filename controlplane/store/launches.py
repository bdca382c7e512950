"""Launches: a batch of receipts and what each leads to (attempts, a wait, a failure), in one transaction.

The scheduler's hot path: :func:`start_launch_groups` is the batched form of
``record_decision`` + ``create_attempt`` + ``transition_task``, with the same
rows and events, written with one statement per kind of row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, func, insert, select, update
from sqlalchemy.engine import Connection

from controlplane.domain import Attempt, Candidate, PlacementPlan, TaskState
from controlplane.store.attempts import attempt_rows
from controlplane.store.columns import UTCDateTime
from controlplane.store.core import (
    ATTEMPT_COLUMNS,
    SHA256_HEX,
    StoreCore,
    attempt_from_row,
    event_row,
    ms,
    transition_event,
)
from controlplane.store.decisions import decision_rows
from controlplane.store.errors import NotFound
from controlplane.store.ids import new_id
from controlplane.store.outbox import enqueue_outcomes
from controlplane.store.tables import attempts, decisions, events, signal_snapshots, tasks

__all__ = ["PlannedLaunch", "record_backend_refs", "start_launch_groups"]


@dataclass(frozen=True, kw_only=True)
class PlannedLaunch:
    """One task's receipt and what follows from it, for :meth:`Store.start_launches`.

    ``candidate`` is the plan's first launchable candidate, with the sha256
    of the new attempt's callback token; without one the task waits, back
    in ``queued`` with ``wait`` as its queue reason until ``not_before``
    (docs/reliability.md, "Queueing"), or, without ``wait`` either, fails
    with ``failure``. A hedged launch adds the rest of its hedge group in
    ``hedged`` (plan order), with their tokens' sha256 in
    ``hedged_token_sha256`` (same order): one attempt each, all created
    with ``candidate``'s in the same transaction and sharing its hedge group.
    """

    plan: PlacementPlan
    candidate: Candidate | None = None
    token_sha256: str | None = None
    failure: str | None = None
    #: no candidate now, for a reason time can fix: the task waits with this queue reason ...
    wait: str | None = None
    #: ... and is not claimed again before this
    not_before: datetime | None = None
    hedged: tuple[Candidate, ...] = ()
    hedged_token_sha256: tuple[str, ...] = ()
    #: where each launched attempt's worker writes the output (``candidate``'s, then each hedged one's), stored
    #: with the attempt row; empty: not known yet, recorded before the launch instead
    output_uris: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class _Batch:
    """The rows one call writes, gathered item by item and written kind by kind."""

    at: datetime
    actor: str
    snapshot_id: str | None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    attempts: list[dict[str, Any]] = field(default_factory=list)
    launching: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)


def _launch_group(item: PlannedLaunch) -> list[tuple[Candidate, str]]:
    """The candidates an item launches (its own, then its hedged siblings) with their tokens' sha256, checked."""
    if item.candidate is None:
        return []
    if len(item.hedged) != len(item.hedged_token_sha256):
        raise ValueError("hedged and hedged_token_sha256 must name one token hash per hedged candidate")
    group = [(item.candidate, item.token_sha256), *zip(item.hedged, item.hedged_token_sha256, strict=True)]
    checked: list[tuple[Candidate, str]] = []
    for candidate, token_sha256 in group:
        if token_sha256 is None or not SHA256_HEX.match(token_sha256):
            raise ValueError("token_sha256 must be 64 lowercase hex characters (the token's sha256)")
        checked.append((candidate, token_sha256))
    return checked


def _waiting_update(item: PlannedLaunch, row: Row[Any], *, now: datetime) -> dict[str, Any]:
    """The task row's new queue fields when it goes on waiting (its wait began at its first waiting plan)."""
    return {
        "b_id": item.plan.task_id,
        "queue_reason": item.wait,
        "queued_since": row.queued_since or now,
        "not_before": item.not_before,
    }


def _waiting_event(item: PlannedLaunch, row: Row[Any], *, at: datetime, actor: str) -> dict[str, Any]:
    """``task.waiting``: the task went back to ``queued`` with a new queue reason (written only on a change)."""
    return event_row(
        task_id=item.plan.task_id,
        at=at,
        actor=actor,
        kind="task.waiting",
        from_state=TaskState.PLANNED.value,
        to_state=TaskState.QUEUED.value,
        detail={
            "reason": item.wait,
            "previous": row.queue_reason,
            "queued_since": (row.queued_since or at).isoformat(),
            "not_before": item.not_before.isoformat() if item.not_before is not None else None,
        },
    )


def _no_candidate(item: PlannedLaunch, row: Row[Any], batch: _Batch, *, unchanged: bool) -> None:
    """A planned task without a candidate: it goes on waiting (``wait``), or fails with ``failure``."""
    if item.wait is not None:
        batch.waiting.append(_waiting_update(item, row, now=batch.at))
        if not unchanged:
            batch.events.append(_waiting_event(item, row, at=batch.at, actor=batch.actor))
        return
    task_id = item.plan.task_id
    reason = item.failure or "no placement"
    batch.failed.append({"b_id": task_id, "state": TaskState.FAILED.value, "reason": reason, "finished_at": batch.at})
    batch.events.append(
        transition_event(
            task_id=task_id,
            current=TaskState.PLANNED,
            wanted=TaskState.FAILED,
            at=batch.at,
            actor=batch.actor,
            detail={"reason": reason},
        )
    )


def _launch(item: PlannedLaunch, candidate: Candidate, batch: _Batch, *, previous: int) -> list[str]:
    """A planned task's launching attempts (one per member of its hedge group) and its move to launching."""
    task_id = item.plan.task_id
    group = _launch_group(item)
    first_number = previous + 1
    hedge_group = first_number if len(group) > 1 else None
    if item.output_uris and len(item.output_uris) != len(group):
        raise ValueError("output_uris must name one output per launched candidate")
    started: list[str] = []
    for offset, (member, token_sha256) in enumerate(group):
        attempt_id = new_id("att", now_ms=ms(batch.at))
        attempt, created = attempt_rows(
            attempt_id=attempt_id,
            task_id=task_id,
            number=first_number + offset,
            target=member.target,
            provider=member.provider,
            region=member.region,
            instance_type=member.instance_type,
            token_sha256=token_sha256,
            at=batch.at,
            actor=batch.actor,
            hedge_group=hedge_group,
            output_uri=item.output_uris[offset] if item.output_uris else None,
        )
        batch.attempts.append(attempt)
        batch.events.append(created)
        started.append(attempt_id)
    batch.launching.append({"b_id": task_id, "state": TaskState.LAUNCHING.value, "target": candidate.target})
    batch.events.append(
        transition_event(
            task_id=task_id,
            current=TaskState.PLANNED,
            wanted=TaskState.LAUNCHING,
            at=batch.at,
            actor=batch.actor,
            detail={"target": candidate.target},
        )
    )
    return started


def _gather(
    launches: Sequence[PlannedLaunch], found: Mapping[str, Row[Any]], numbers: Mapping[str, int], batch: _Batch
) -> list[list[str]]:
    """Each item's receipt and what follows from it, into ``batch``; the attempt ids each item started."""
    states = {task_id: r.state for task_id, r in found.items()}
    results: list[list[str]] = []
    for item in launches:
        task_id = item.plan.task_id
        row = found[task_id]
        # a task that goes on waiting for the same reason gets no new receipt: re-planning hundreds
        # of waiting tasks each round must not write hundreds of receipts (docs/reliability.md)
        unchanged = (
            item.candidate is None
            and item.wait is not None
            and item.wait == row.queue_reason
            and states[task_id] == TaskState.PLANNED.value
        )
        if not unchanged:
            decision_id = new_id("dec", now_ms=ms(batch.at))
            decision, recorded = decision_rows(
                item.plan, decision_id=decision_id, at=batch.at, actor=batch.actor, snapshot_id=batch.snapshot_id
            )
            batch.decisions.append(decision)
            batch.events.append(recorded)
        if states[task_id] != TaskState.PLANNED.value:
            results.append([])
            continue
        states[task_id] = "taken"  # a task repeated in the batch gets one launch
        if item.candidate is None:
            _no_candidate(item, row, batch, unchanged=unchanged)
            results.append([])
        else:
            results.append(_launch(item, item.candidate, batch, previous=numbers.get(task_id, 0)))
    return results


#: the batch's statements, built once: every batch of the scheduler runs them
_FOUND: Select[Any] = select(tasks.c.id, tasks.c.state, tasks.c.queue_reason, tasks.c.queued_since).where(
    tasks.c.id.in_(bindparam("l_ids", expanding=True))
)
_NUMBERS = (
    select(attempts.c.task_id, func.max(attempts.c.number))
    .where(attempts.c.task_id.in_(bindparam("l_ids", expanding=True)))
    .group_by(attempts.c.task_id)
)
_STARTED = select(*ATTEMPT_COLUMNS).where(attempts.c.id.in_(bindparam("l_ids", expanding=True)))
_INSERT_SNAPSHOT = insert(signal_snapshots)
_INSERT_DECISIONS = insert(decisions)
_INSERT_ATTEMPTS = insert(attempts)
_INSERT_EVENTS = insert(events)
#: placed (``state``, ``target``) or failed (``state``, ``reason``, ``finished_at``): no longer waiting
_NOT_WAITING = {
    "queue_reason": None,
    "queued_since": None,
    "not_before": None,
    "updated_at": bindparam("l_at", type_=UTCDateTime()),
}
_LAUNCHING = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(**_NOT_WAITING, state=bindparam("state"), target=bindparam("target"))
)
_FAILED = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(
        **_NOT_WAITING,
        state=bindparam("state"),
        reason=bindparam("reason"),
        finished_at=bindparam("finished_at", type_=UTCDateTime()),
    )
)
_WAITING = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(
        state=TaskState.QUEUED.value,
        claimed_by=None,
        claimed_at=None,
        updated_at=bindparam("l_at", type_=UTCDateTime()),
        queue_reason=bindparam("queue_reason"),
        queued_since=bindparam("queued_since", type_=UTCDateTime()),
        not_before=bindparam("not_before", type_=UTCDateTime()),
    )
)


def _flush(conn: Connection, batch: _Batch, snapshot: tuple[datetime, Mapping[str, Any]] | None) -> None:
    """Write the gathered rows, one statement per kind."""
    now = batch.at
    if batch.decisions:
        if snapshot is not None:  # stored only when a receipt names it (not for a batch of unchanged waits)
            conn.execute(
                _INSERT_SNAPSHOT, {"id": batch.snapshot_id, "taken_at": snapshot[0], "document": dict(snapshot[1])}
            )
        conn.execute(_INSERT_DECISIONS, batch.decisions)
    if batch.attempts:
        conn.execute(_INSERT_ATTEMPTS, batch.attempts)
    if batch.launching:
        conn.execute(_LAUNCHING, [{**row, "l_at": now} for row in batch.launching])
    if batch.failed:
        conn.execute(_FAILED, [{**row, "l_at": now} for row in batch.failed])
    if batch.waiting:
        conn.execute(_WAITING, [{**row, "l_at": now} for row in batch.waiting])
    if batch.events:
        conn.execute(_INSERT_EVENTS, batch.events)
        enqueue_outcomes(conn, batch.events)  # tasks failed for want of a placement


def start_launch_groups(
    core: StoreCore,
    launches: Sequence[PlannedLaunch],
    *,
    actor: str,
    snapshot: tuple[datetime, Mapping[str, Any]] | None = None,
) -> list[tuple[Attempt, ...]]:
    """Store a batch of receipts and the launches they lead to; every attempt each item started, in plan order.

    See :meth:`Store.start_launches` and :meth:`Store.start_launch_groups`.
    """
    if not launches:
        return []
    now = core.now()
    task_ids = [item.plan.task_id for item in launches]
    with core.write() as conn:
        found = {r.id: r for r in conn.execute(core.locked(_FOUND), {"l_ids": task_ids})}
        missing = [task_id for task_id in task_ids if task_id not in found]
        if missing:
            raise NotFound("task", missing[0])
        # numbering only matters to the items that launch (a round of unchanged waits launches nothing)
        launching = [item.plan.task_id for item in launches if item.candidate is not None]
        numbers: dict[str, int] = (
            {task_id: number for task_id, number in conn.execute(_NUMBERS, {"l_ids": launching})} if launching else {}
        )
        snapshot_id = new_id("snp", now_ms=ms(now)) if snapshot is not None else None
        batch = _Batch(at=now, actor=actor, snapshot_id=snapshot_id)
        results = _gather(launches, found, numbers, batch)
        _flush(conn, batch, snapshot)
        new_ids = [a for started in results for a in started]
        stored = {r.id: attempt_from_row(r) for r in conn.execute(_STARTED, {"l_ids": new_ids})} if new_ids else {}
    return [tuple(stored[a] for a in started) for started in results]


def record_backend_refs(core: StoreCore, refs: Mapping[str, str]) -> None:
    """Record the provider's handle of each launched attempt (attempt id -> backend ref) at once."""
    if not refs:
        return
    now = core.now()
    with core.write() as conn:
        conn.execute(
            update(attempts).where(attempts.c.id == bindparam("b_id")).values(updated_at=now),
            [{"b_id": attempt_id, "backend_ref": ref} for attempt_id, ref in refs.items()],
        )
