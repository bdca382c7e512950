"""Decisions (receipts): the placement plans made for a task, and each task's first one for ``policy simulate``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, exists, insert, select
from sqlalchemy.orm import aliased
from sqlalchemy.sql import Select

from controlplane.domain import PlacementPlan, Task
from controlplane.store.codec import plan_from_json, plan_to_json
from controlplane.store.core import StoreCore, event_row, ms, task_from_row
from controlplane.store.errors import NotFound
from controlplane.store.ids import new_id
from controlplane.store.tables import decisions, events, signal_snapshots, tasks

__all__ = ["RecordedDecision", "decision_rows", "get_decisions", "record_decision", "recorded_decisions"]


@dataclass(frozen=True, kw_only=True)
class RecordedDecision:
    """A task's first receipt as ``policy simulate`` replays it: the task, what was chosen, the signals seen."""

    task: Task
    decided_at: datetime
    policy_version: str
    #: the plan's first candidate (None: the plan had none)
    target: str | None
    provider: str | None
    expected_usd_h: float | None
    max_price_usd_h: float | None
    snapshot_id: str | None
    #: the snapshot JSON, loaded once per snapshot id in a chunk (batches share one)
    snapshot: Mapping[str, Any] | None
    #: how long the task ran, when it has finished
    runtime_seconds: float | None
    #: the free GPUs the decision read (``free_gpus/<target>`` -> value): the batch's snapshot less the
    #: slots its earlier launches took (docs/reliability.md, "Queueing")
    capacity_seen: Mapping[str, float] = field(default_factory=dict)


def decision_rows(
    plan: PlacementPlan, *, decision_id: str, at: datetime, actor: str, snapshot_id: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The receipt's row and its ``decision.recorded`` event."""
    decision = {
        "id": decision_id,
        "task_id": plan.task_id,
        "policy_version": plan.policy_version,
        "decided_at": plan.decided_at,
        "plan": plan_to_json(plan),
        "snapshot_id": snapshot_id,
    }
    recorded = event_row(
        task_id=plan.task_id,
        at=at,
        actor=actor,
        kind="decision.recorded",
        detail={
            "decision_id": decision_id,
            "policy_version": plan.policy_version,
            "candidates": [c.target for c in plan.candidates],
            "rejections": len(plan.rejections),
        },
    )
    return decision, recorded


def record_decision(core: StoreCore, *, plan: PlacementPlan, actor: str = "scheduler") -> str:
    """Store a placement plan as the task's newest receipt; returns the decision id."""
    now = core.now()
    decision_id = new_id("dec", now_ms=ms(now))
    with core.write() as conn:
        if conn.execute(select(tasks.c.id).where(tasks.c.id == plan.task_id)).one_or_none() is None:
            raise NotFound("task", plan.task_id)
        decision, recorded = decision_rows(plan, decision_id=decision_id, at=now, actor=actor)
        conn.execute(insert(decisions).values(**decision))
        conn.execute(insert(events).values(**recorded))
    return decision_id


def get_decisions(core: StoreCore, task_id: str) -> list[PlacementPlan]:
    """Every plan made for the task, oldest first (failover appends one per planning)."""
    with core.read() as conn:
        documents = conn.execute(
            select(decisions.c.plan).where(decisions.c.task_id == task_id).order_by(decisions.c.id)
        ).scalars()
        return [plan_from_json(d) for d in documents]


def _capacity_seen(signals_used: Any) -> dict[str, float]:
    """The ``free_gpus/...`` values a stored plan read, from its ``signals_used`` (anything else ignored)."""
    if not isinstance(signals_used, dict):
        return {}
    seen: dict[str, float] = {}
    for name, used in signals_used.items():
        value = used.get("value") if isinstance(used, dict) else None
        if name.startswith("free_gpus/") and isinstance(value, int | float) and not isinstance(value, bool):
            seen[name] = float(value)
    return seen


def _is_first() -> ColumnElement[bool]:
    """The receipt is its task's first."""
    # "no earlier receipt for the task": an index probe per row on (task_id, id), so each chunk costs
    # its own size; a GROUP BY over all receipts would be paid again by every chunk
    earlier = aliased(decisions)
    return ~exists().where(earlier.c.task_id == decisions.c.task_id, earlier.c.id < decisions.c.id)


def _first_receipts(*, since: datetime | None, start: str | None, after: str | None, chunk: int) -> Select[Any]:
    """One chunk of first receipts joined with their tasks, by decision id."""
    stmt = (
        select(
            decisions.c.id.label("decision_id"),
            decisions.c.decided_at,
            decisions.c.policy_version,
            # only the first candidate, read by the database: decoding whole plans was most of the time
            decisions.c.plan[("candidates", 0, "target")].as_string().label("chosen_target"),
            decisions.c.plan[("candidates", 0, "provider")].as_string().label("chosen_provider"),
            decisions.c.plan[("candidates", 0, "expected_usd_h")].as_float().label("chosen_usd_h"),
            decisions.c.plan[("candidates", 0, "max_price_usd_h")].as_float().label("chosen_max_usd_h"),
            decisions.c.snapshot_id,
            decisions.c.plan["signals_used"].label("signals_used"),
            tasks,
        )
        .join(tasks, tasks.c.id == decisions.c.task_id)
        .where(_is_first())
        .order_by(decisions.c.id)
        .limit(chunk)
    )
    if since is not None:
        stmt = stmt.where(decisions.c.decided_at >= since)
    if start is not None:
        stmt = stmt.where(decisions.c.id >= start)
    if after is not None:
        stmt = stmt.where(decisions.c.id > after)
    return stmt


def _oldest_of_last(core: StoreCore, *, since: datetime | None, last: int) -> str | None:
    """The decision id the ``last`` N first receipts start at (None: there are none)."""
    bounds = select(decisions.c.id).where(_is_first())
    if since is not None:
        bounds = bounds.where(decisions.c.decided_at >= since)
    with core.read() as conn:
        newest = conn.execute(bounds.order_by(decisions.c.id.desc()).limit(last)).scalars().all()
    return newest[-1] if newest else None


def _recorded(row: Row[Any], snapshots: Mapping[str, Any]) -> RecordedDecision:
    runtime = None
    if row.started_at is not None and row.finished_at is not None:
        runtime = max((row.finished_at - row.started_at).total_seconds(), 0.0)
    return RecordedDecision(
        task=task_from_row(row),
        decided_at=row.decided_at,
        policy_version=row.policy_version,
        target=row.chosen_target,
        provider=row.chosen_provider,
        expected_usd_h=row.chosen_usd_h,
        max_price_usd_h=row.chosen_max_usd_h,
        snapshot_id=row.snapshot_id,
        snapshot=snapshots.get(row.snapshot_id) if row.snapshot_id else None,
        runtime_seconds=runtime,
        capacity_seen=_capacity_seen(row.signals_used),
    )


def recorded_decisions(
    core: StoreCore, *, since: datetime | None = None, last: int | None = None, chunk: int = 2000
) -> Iterator[RecordedDecision]:
    """Each task's first receipt, oldest first: since a time, or the ``last`` N, or all.

    Streams in chunks by decision id so a day of traffic never sits in
    memory at once; every snapshot is read once per chunk.
    """
    start: str | None = None
    if last is not None:
        start = _oldest_of_last(core, since=since, last=last)
        if start is None:
            return
    after: str | None = None
    while True:
        with core.read() as conn:
            rows = conn.execute(_first_receipts(since=since, start=start, after=after, chunk=chunk)).all()
            wanted = {r.snapshot_id for r in rows if r.snapshot_id is not None}
            snapshots = (
                {
                    r.id: r.document
                    for r in conn.execute(
                        select(signal_snapshots.c.id, signal_snapshots.c.document).where(
                            signal_snapshots.c.id.in_(wanted)
                        )
                    )
                }
                if wanted
                else {}
            )
        for row in rows:
            yield _recorded(row, snapshots)
        if len(rows) < chunk:
            return
        after = rows[-1].decision_id
