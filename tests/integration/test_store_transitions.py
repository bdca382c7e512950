"""``transition_task``, the store core's one way to change a task's state: checked, with its event, or nothing."""

from __future__ import annotations

import pytest

from controlplane.domain import InvalidTransition, TaskKind, TaskSpec, TaskState
from controlplane.store import Store
from controlplane.store.core import transition_task
from controlplane.store.stranded import requeue_stranded

pytest_plugins = ["tests.integration.store_fixtures"]


def _task(store: Store) -> str:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.IMAGE,
        source_uri="file:///in/face.png",
        target_uri="file:///in/target.png",
        output_uri="file:///out/result.png",
    )
    task, _ = store.create_task(spec=spec, request_hash="h")
    return task.id


def test_a_move_the_state_machine_refuses_writes_nothing(store: Store) -> None:
    task_id = _task(store)
    store.transition_task(task_id, wanted=TaskState.FAILED, actor="test", reason="gone")
    before = store.list_events(task_id)
    with pytest.raises(InvalidTransition), store.write() as conn:
        transition_task(
            conn,
            task_id,
            current=TaskState.FAILED,
            wanted=TaskState.QUEUED,
            at=store.now(),
            actor="test",
            values={"reason": "back again"},
        )
    after = store.get_task(task_id)
    assert (after.state, after.reason) == (TaskState.FAILED, "gone")
    assert store.list_events(task_id) == before


def test_an_allowed_move_writes_the_row_and_its_event_together(store: Store) -> None:
    task_id = _task(store)
    at = store.now()
    with store.write() as conn:
        transition_task(
            conn,
            task_id,
            current=TaskState.QUEUED,
            wanted=TaskState.CANCELLED,
            at=at,
            actor="operator",
            values={"reason": "not needed"},
            detail={"reason": "not needed"},
        )
    task = store.get_task(task_id)
    assert (task.state, task.reason, task.updated_at) == (TaskState.CANCELLED, "not needed", at)
    event = store.list_events(task_id)[-1]
    assert (event.kind, event.from_state, event.to_state, event.actor) == (
        "task.transition",
        "queued",
        "cancelled",
        "operator",
    )
    assert event.detail == {"reason": "not needed"}


def test_requeueing_stranded_work_goes_through_the_checked_transition(store: Store) -> None:
    task_id = _task(store)
    store.claim_queued(batch_size=1, scheduler_id="s1")
    store.transition_task(task_id, wanted=TaskState.LAUNCHING, actor="s1", target="home")
    assert requeue_stranded(store, task_id, reason="no live attempt", actor="reconciler")
    task = store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.QUEUED, None)
    event = store.list_events(task_id)[-1]
    assert (event.kind, event.from_state, event.to_state, event.detail) == (
        "task.transition",
        "launching",
        "queued",
        {"reason": "reconciliation: no live attempt"},
    )
