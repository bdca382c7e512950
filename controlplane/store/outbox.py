"""The webhook outbox's writing side: an event row beside each transition a task's submitter is told about.

Every writer of task transitions (one task or a batch) hands its event rows
to :func:`enqueue_outcomes` inside the same transaction, so the outcome and
the event that reports it commit together or not at all: a crash after the
commit still has the row to deliver, and a rolled-back move sends nothing.
Only tasks with a ``notify_url`` are read (one statement per batch, and
none at all when the batch holds no outcome), so placement pays nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection

from controlplane.domain.webhooks import ALWAYS_TOLD, OPTIONAL_TOLD, TRANSITION_EVENT, told_states
from controlplane.store.ids import new_id
from controlplane.store.tables import tasks, webhook_deliveries

__all__ = ["PENDING", "enqueue_outcomes", "event_payload"]

PENDING = "pending"
_TELLABLE = frozenset(ALWAYS_TOLD + OPTIONAL_TOLD)
_TASK_COLUMNS = (
    tasks.c.id,
    tasks.c.tenant,
    tasks.c.state,
    tasks.c.reason,
    tasks.c.target,
    tasks.c.output_uri,
    tasks.c.labels,
    tasks.c.created_at,
    tasks.c.started_at,
    tasks.c.finished_at,
    tasks.c.notify_url,
    tasks.c.notify_events,
)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def event_payload(event_id: str, event: Mapping[str, Any], task: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body the receiver gets (docs/api.md, "Webhooks"): Standard Webhooks' type, timestamp, data."""
    state = str(event["to_state"])
    at: datetime = event["at"]
    detail = event.get("detail") or {}
    finished = at if state in ALWAYS_TOLD else None
    started: datetime | None = task["started_at"]
    data: dict[str, Any] = {
        "task_id": task["id"],
        "tenant": task["tenant"],
        "state": state,
        "reason": detail.get("reason", task["reason"] if state in ALWAYS_TOLD else None),
        "target": detail.get("target", task["target"]),
        "labels": dict(task["labels"] or {}),
        "created_at": _iso(task["created_at"]),
        "started_at": _iso(started),
        "finished_at": _iso(finished),
        "run_seconds": round((finished - started).total_seconds(), 3) if finished and started else None,
    }
    if state == "succeeded":
        data["output_uri"] = task["output_uri"]
        data["output_link"] = f"/v1/tasks/{task['id']}/output"
    return {"id": event_id, "type": f"task.{state}", "timestamp": _iso(at), "data": data}


#: built once: every transaction that moves a task to a state a submitter may hear of runs it
_TOLD = select(*_TASK_COLUMNS).where(
    tasks.c.id.in_(bindparam("o_ids", expanding=True)), tasks.c.notify_url.is_not(None)
)


def _wanted(event: Mapping[str, Any]) -> bool:
    return event.get("kind") == TRANSITION_EVENT and event.get("to_state") in _TELLABLE


def enqueue_outcomes(conn: Connection, events: Sequence[Mapping[str, Any]]) -> int:
    """Outbox rows for the transitions among ``events`` that their task's submitter asked to hear of.

    Call it after the task rows were updated and inside the same
    transaction. Returns how many rows were written.
    """
    wanted = [event for event in events if _wanted(event)]
    if not wanted:
        return 0
    task_ids = sorted({str(event["task_id"]) for event in wanted})
    found = conn.execute(_TOLD, {"o_ids": task_ids}).all()
    told: dict[str, dict[str, Any]] = {row.id: dict(row._mapping) for row in found}
    rows = []
    for event in wanted:
        task = told.get(str(event["task_id"]))
        if task is None or event["to_state"] not in told_states((task["notify_events"] or "").split(",")):
            continue
        event_id = new_id("msg")
        at: datetime = event["at"]
        rows.append(
            {
                "id": event_id,
                "tenant": task["tenant"],
                "task_id": task["id"],
                "kind": f"task.{event['to_state']}",
                "url": task["notify_url"],
                "payload": event_payload(event_id, event, task),
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": at,
                "created_at": at,
                "updated_at": at,
            }
        )
    if rows:
        conn.execute(insert(webhook_deliveries), rows)
    return len(rows)
