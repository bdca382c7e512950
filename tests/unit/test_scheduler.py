"""The executor: launch in plan order, fail over on launch errors, never put private data on a cloud."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.domain import (
    Candidate,
    DataSensitivity,
    InsufficientCapacity,
    InvalidSpec,
    PlacementPlan,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.policy import parse_policy
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


def _scheduler(store: Store, **providers: NoopProvider) -> Scheduler:
    return Scheduler(
        store=store,
        policy=lambda: POLICY,
        providers=providers,
        callback_base="http://127.0.0.1:1",
        checkpoint_root=None,
        scheduler_id="test",
    )


def test_a_capacity_error_fails_over_to_the_next_candidate(store: Store) -> None:
    first, second = NoopProvider(name="local"), NoopProvider(name="aws")
    first.fail_next(InsufficientCapacity("no slots", target="local"))
    scheduler = _scheduler(store, local=first, aws=second)
    task_id = _submit(store)
    (task,) = store.claim_queued(batch_size=1, scheduler_id="test")
    plan = PlacementPlan(
        task_id=task_id,
        policy_version="v",
        decided_at=datetime.now(UTC),
        rejections=(),
        candidates=(
            Candidate(target="local", provider="local", private=True),
            Candidate(target="spot", provider="aws", private=False),
        ),
    )
    store.record_decision(plan=plan)
    scheduler._launch(task, plan)
    attempts = store.attempts_for(task_id)
    assert [(a.target, a.state.value) for a in attempts] == [("local", "failed"), ("spot", "launching")]
    assert "insufficient_capacity" in (attempts[0].reason or "")
    assert store.get_task(task_id).state == TaskState.LAUNCHING


def test_a_terminal_error_stops_the_walk_and_fails_the_task(store: Store) -> None:
    first, second = NoopProvider(name="local"), NoopProvider(name="aws")
    first.fail_next(InvalidSpec("bad image"))
    scheduler = _scheduler(store, local=first, aws=second)
    task_id = _submit(store)
    (task,) = store.claim_queued(batch_size=1, scheduler_id="test")
    plan = PlacementPlan(
        task_id=task_id,
        policy_version="v",
        decided_at=datetime.now(UTC),
        rejections=(),
        candidates=(
            Candidate(target="local", provider="local", private=True),
            Candidate(target="spot", provider="aws", private=False),
        ),
    )
    scheduler._launch(task, plan)
    assert len(store.attempts_for(task_id)) == 1
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert "invalid_spec" in (failed.reason or "")


def test_the_executor_refuses_a_non_private_candidate_for_private_data(store: Store) -> None:
    """Even a plan that (wrongly) offers a cloud target for a private task launches nothing there."""
    cloud = NoopProvider(name="aws")
    scheduler = _scheduler(store, aws=cloud)
    task_id = _submit(store, DataSensitivity.PRIVATE)
    (task,) = store.claim_queued(batch_size=1, scheduler_id="test")
    bad_plan = PlacementPlan(
        task_id=task_id,
        policy_version="v",
        decided_at=datetime.now(UTC),
        rejections=(),
        candidates=(Candidate(target="spot", provider="aws", private=False),),
    )
    scheduler._launch(task, bad_plan)
    assert cloud.launched() == []
    assert store.attempts_for(task_id) == []
    failed = store.get_task(task_id)
    assert failed.state == TaskState.FAILED
    assert "private data" in (failed.reason or "")


def test_place_batch_plans_records_and_launches(store: Store) -> None:
    local = NoopProvider(name="local")
    ids = [_submit(store, s) for s in (DataSensitivity.PUBLIC, DataSensitivity.PRIVATE)]
    assert _scheduler(store, local=local).place_batch() == 2
    for task_id in ids:
        assert store.get_task(task_id).state == TaskState.LAUNCHING
        (decision,) = store.get_decisions(task_id)
        assert [c.target for c in decision.candidates] == ["local"]
    assert len(local.launched()) == 2
