"""The executor: launch in plan order, fail over on launch errors, never put private data on a cloud."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from controlplane.domain import (
    AttemptState,
    Candidate,
    DataSensitivity,
    InsufficientCapacity,
    InvalidSpec,
    PlacementPlan,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
    Unavailable,
)
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.store import Store, make_engine, upgrade
from providers.noop import NoopProvider

POLICY = parse_policy(
    {
        "targets": [{"name": "local", "provider": "local", "private": True}],
        "rules": [{"name": "default", "targets": ["local"]}],
    }
)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)
    return Store(engine)


def _submit(store: Store, sensitivity: DataSensitivity = DataSensitivity.PUBLIC) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="t",
            kind=TaskKind.IMAGE,
            source_uri="s3://a/f.png",
            target_uri="s3://a/t.png",
            output_uri="s3://a/o.png",
            data_sensitivity=sensitivity,
        ),
        request_hash="h" + sensitivity,
    )
    return task.id


def _scheduler(store: Store, *candidates: Candidate, **providers: NoopProvider) -> Scheduler:
    """A scheduler over ``providers``; with ``candidates`` its planner offers exactly those."""

    def fixed_plan(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
        return PlacementPlan(
            task_id=task.id, policy_version="v", decided_at=now, rejections=(), candidates=tuple(candidates)
        )

    return standalone_scheduler(
        store=store,
        policy=lambda: POLICY,
        providers=providers,
        scheduler_id="test",
        **({"planner": fixed_plan} if candidates else {}),
    )


LOCAL = Candidate(target="local", provider="local", private=True)
SPOT = Candidate(target="spot", provider="aws", private=False)


def test_a_capacity_error_fails_over_to_the_next_candidate(store: Store) -> None:
    first, second = NoopProvider(name="local"), NoopProvider(name="aws")
    first.fail_next(InsufficientCapacity("no slots", target="local"))
    task_id = _submit(store)
    assert _scheduler(store, LOCAL, SPOT, local=first, aws=second).place_batch() == 1
    attempts = store.attempts_for(task_id)
    assert [(a.target, a.state.value) for a in attempts] == [("local", "failed"), ("spot", "launching")]
    assert "insufficient_capacity" in (attempts[0].reason or "")
    assert attempts[1].backend_ref is not None
    assert store.get_task(task_id).state == TaskState.LAUNCHING
    assert second.launched() == [attempts[1].id]


def test_a_terminal_error_stops_the_walk_and_fails_the_task(store: Store) -> None:
    first, second = NoopProvider(name="local"), NoopProvider(name="aws")
    first.fail_next(InvalidSpec("bad image"))
    task_id = _submit(store)
    _scheduler(store, LOCAL, SPOT, local=first, aws=second).place_batch()
    assert len(store.attempts_for(task_id)) == 1
    assert second.launched() == []
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert "invalid_spec" in (failed.reason or "")


def test_the_executor_refuses_a_non_private_candidate_for_private_data(store: Store) -> None:
    """Even a plan that (wrongly) offers a cloud target for a private task launches nothing there."""
    cloud = NoopProvider(name="aws")
    task_id = _submit(store, DataSensitivity.PRIVATE)
    _scheduler(store, SPOT, aws=cloud).place_batch()
    assert cloud.launched() == []
    assert store.attempts_for(task_id) == []
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert "private data" in (failed.reason or "")
    (receipt,) = store.get_decisions(task_id)  # the (faulty) plan is kept as the receipt all the same
    assert [c.target for c in receipt.candidates] == ["spot"]


def test_a_task_cancelled_between_claim_and_launch_is_not_launched(store: Store) -> None:
    local = NoopProvider(name="local")
    task_id = _submit(store)
    scheduler = _scheduler(store, local=local)
    claim = store.claim_queued

    def claim_then_cancel(**kwargs: Any) -> list[Task]:
        claimed = claim(**kwargs)
        store.transition_task(task_id, wanted=TaskState.CANCELLED, actor="operator")
        return claimed

    store.claim_queued = claim_then_cancel  # type: ignore[method-assign]
    assert scheduler.place_batch() == 1
    assert local.launched() == []
    assert store.attempts_for(task_id) == []
    assert store.get_task(task_id).state == TaskState.CANCELLED
    assert len(store.get_decisions(task_id)) == 1


def test_place_batch_plans_records_and_launches(store: Store) -> None:
    local = NoopProvider(name="local")
    ids = [_submit(store, s) for s in (DataSensitivity.PUBLIC, DataSensitivity.PRIVATE)]
    assert _scheduler(store, local=local).place_batch() == 2
    for task_id in ids:
        task = store.get_task(task_id)
        assert (task.state, task.target) == (TaskState.LAUNCHING, "local")
        (decision,) = store.get_decisions(task_id)
        assert [c.target for c in decision.candidates] == ["local"]
        (attempt,) = store.attempts_for(task_id)
        assert (attempt.number, attempt.state.value, attempt.target) == (1, "launching", "local")
        assert attempt.backend_ref == f"noop:{attempt.id}"
        kinds = [e.kind for e in store.list_events(task_id)]
        assert kinds == ["task.created", "task.claimed", "decision.recorded", "attempt.created", "task.transition"]
    assert len(local.launched()) == 2


def test_a_task_with_no_candidate_fails_with_the_rejections(store: Store) -> None:
    task_id = _submit(store)
    assert _scheduler(store).place_batch() == 1  # no provider for the policy's local target
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert "provider local is not configured" in (failed.reason or "")


def test_place_until_idle_drains_full_batches(store: Store) -> None:
    local = NoopProvider(name="local")
    for i in range(10):
        store.create_task(
            spec=TaskSpec(
                tenant="t",
                kind=TaskKind.IMAGE,
                source_uri="s3://a/f.png",
                target_uri=f"s3://a/{i}.png",
                output_uri=f"s3://a/o{i}.png",
            ),
            request_hash=str(i),
        )
    scheduler = _scheduler(store, local=local)
    scheduler.batch_size = 3
    assert scheduler.place_until_idle(max_seconds=30) == 10  # 3 + 3 + 3 + 1: stops on the short batch
    assert len(local.launched()) == 10
    assert scheduler.place_until_idle(max_seconds=30) == 0


def test_resources_of_attempts_that_ended_are_released_once(store: Store) -> None:
    cloud = NoopProvider(name="aws")
    scheduler = _scheduler(store, SPOT, aws=cloud)
    assert scheduler.release_finished() == 0  # the first call only sets the cursor
    task_id = _submit(store)
    assert scheduler.place_batch() == 1
    [attempt] = store.attempts_for(task_id)
    assert scheduler.release_finished() == 0  # still live: nothing to release
    # the worker's callback ends the attempt through the store, as the API does
    store.transition_attempt(attempt.id, wanted=AttemptState.SUCCEEDED, actor="worker")
    assert scheduler.release_finished() == 1
    assert ("cancel", attempt.id) in cloud.calls
    assert scheduler.release_finished() == 0  # once


def test_a_release_that_fails_is_tried_again(store: Store) -> None:
    cloud = NoopProvider(name="aws")
    scheduler = _scheduler(store, SPOT, aws=cloud)
    scheduler.release_finished()
    task_id = _submit(store)
    scheduler.place_batch()
    [attempt] = store.attempts_for(task_id)
    store.transition_attempt(attempt.id, wanted=AttemptState.FAILED, actor="worker", reason="exit 70")
    cloud.fail_next(Unavailable("azure down", target="spot"), operation="cancel")
    assert scheduler.release_finished() == 0
    assert scheduler.release_finished() == 1
    assert [call for call in cloud.calls if call == ("cancel", attempt.id)] == [("cancel", attempt.id)] * 2


class _OutputSeen(NoopProvider):
    """Records, at each launch, where the store says the attempt's worker writes its output."""

    def __init__(self, store: Store, name: str) -> None:
        super().__init__(name=name)
        self.store = store
        self.seen: dict[str, str | None] = {}

    def launch(self, request: Any) -> Any:
        self.seen[request.attempt_id] = self.store.get_attempt(request.attempt_id).output_uri
        return super().launch(request)


def test_the_output_uri_is_stored_with_the_attempt_before_its_launch_on_both_paths(store: Store) -> None:
    """The output route finds where the worker writes from the moment the launch goes out.

    The batch path stores it with the attempt row (no write of its own); the
    path after a refused launch creates the next attempt with it too.
    """
    first, second = _OutputSeen(store, "local"), _OutputSeen(store, "aws")
    first.fail_next(InsufficientCapacity("no slots", target="local"))
    task_id = _submit(store)
    assert _scheduler(store, LOCAL, SPOT, local=first, aws=second).place_batch() == 1
    refused, launched = store.attempts_for(task_id)
    assert first.seen == {refused.id: "s3://a/o.png"}
    assert second.seen == {launched.id: "s3://a/o.png"}
    assert launched.output_uri == "s3://a/o.png"
