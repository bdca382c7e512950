"""Task deadlines, enforced by the scheduler on every provider (not only Kubernetes' activeDeadlineSeconds).

A task's ``deadline_seconds`` counts from its creation. Once it has passed,
``follow`` fails the task with "deadline of N s passed", cancels its live
attempts and stops their backend resources, whether the task waits in the
queue, is launching, or runs; it is never retried. The store and the
scheduler share an injected clock, on SQLite and PostgreSQL; backends are
the no-op provider and, once, the real local provider with a worker that
would otherwise sleep for a minute.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.domain import AttemptState, Priority, TaskKind, TaskSpec, TaskState, Unavailable
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.store import Store
from providers.base import BackendState, Provider
from providers.local import LocalProvider
from providers.noop import NoopProvider
from tests.support.clock import Clock

pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "targets": [
            {"name": "vault", "provider": "kubernetes", "private": True},
            {"name": "spot", "provider": "aws", "private": False, "regions": ["us-east-1"]},
            {"name": "home", "provider": "local", "private": True},
        ],
        "rules": [
            {"name": "cloud", "match": {"priority": "urgent"}, "targets": ["spot"]},
            {"name": "rest", "targets": ["vault", "home"]},
        ],
    }
)


def scheduler_for(store: Store, clock: Clock, providers: dict[str, Provider], policy: Policy = POLICY) -> Scheduler:
    return standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers=providers,
        scheduler_id="sched-a",
        clock=clock,
    )


def submit(store: Store, name: str, *, deadline: int | None, priority: Priority = Priority.NORMAL) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://faces/a.png",
            target_uri=f"s3://media/{name}.png",
            output_uri=f"s3://out/{name}.png",
            priority=priority,
            deadline_seconds=deadline,
        ),
        request_hash=name,
    )
    return task.id


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def noops() -> dict[str, NoopProvider]:
    return {name: NoopProvider(name=name) for name in ("kubernetes", "aws", "local")}


def test_a_running_task_past_its_deadline_is_stopped_and_failed_on_any_provider(
    engine: Engine, clock: Clock, noops: dict[str, NoopProvider]
) -> None:
    """The case that was seen: an urgent task with a 120 s deadline "running" on a cloud VM for minutes."""
    store = Store(engine, clock=clock)
    scheduler = scheduler_for(store, clock, dict(noops))
    urgent = submit(store, "urgent", deadline=120, priority=Priority.URGENT)
    patient = submit(store, "patient", deadline=3600)
    unbounded = submit(store, "unbounded", deadline=None)
    assert scheduler.place_batch() == 3
    scheduler.follow()  # the backends say RUNNING
    (attempt,) = store.attempts_for(urgent)
    assert (attempt.provider, store.get_task(urgent).state) == ("aws", TaskState.RUNNING)

    def call_in() -> None:  # the workers heartbeat: only the deadline can end them
        for live in store.live_attempts():
            store.record_heartbeat(live.id)

    clock.advance(119)
    call_in()
    scheduler.follow()
    assert store.get_task(urgent).state == TaskState.RUNNING
    assert ("cancel", attempt.id) not in noops["aws"].calls

    clock.advance(2)
    call_in()
    assert scheduler.follow() == 1
    task = store.get_task(urgent)
    assert (task.state, task.reason) == (TaskState.FAILED, "deadline of 120 s passed while running on spot")
    ended = store.get_attempt(attempt.id)
    assert (ended.state, ended.reason) == (AttemptState.CANCELLED, task.reason)
    assert ("cancel", attempt.id) in noops["aws"].calls
    assert noops["aws"].status(attempt.id).state.is_final  # the VM is gone, not left billing
    assert not [e for e in store.list_events(urgent) if e.kind == "attempt.failover"]  # never retried
    scheduler.place_batch()
    assert len(store.attempts_for(urgent)) == 1
    for task_id in (patient, unbounded):
        assert store.get_task(task_id).state == TaskState.RUNNING


def test_a_queued_or_launching_task_past_its_deadline_fails_and_says_why(
    engine: Engine, clock: Clock, noops: dict[str, NoopProvider]
) -> None:
    store = Store(engine, clock=clock)
    scheduler = scheduler_for(store, clock, dict(noops))
    launching = submit(store, "launching", deadline=60)
    assert scheduler.place_batch() == 1
    noops["kubernetes"].set_status(store.attempts_for(launching)[0].id, BackendState.PENDING)
    queued = submit(store, "queued", deadline=30)  # never claimed: nothing places it in this test
    clock.advance(61)
    assert scheduler.follow() == 2
    assert store.get_task(queued).reason == "deadline of 30 s passed while queued"
    task = store.get_task(launching)
    assert (task.state, task.reason) == (TaskState.FAILED, "deadline of 60 s passed while launching on vault")
    (attempt,) = store.attempts_for(launching)
    assert attempt.state == AttemptState.CANCELLED
    assert ("cancel", attempt.id) in noops["kubernetes"].calls
    assert scheduler.place_batch() == 0  # the failed queued task is not claimed any more
    assert store.attempts_for(queued) == []


def test_a_refused_stop_still_fails_the_task_and_the_release_retries_it(
    engine: Engine, clock: Clock, noops: dict[str, NoopProvider]
) -> None:
    store = Store(engine, clock=clock)
    scheduler = scheduler_for(store, clock, dict(noops))
    scheduler.release_finished()  # starts its cursor, as serve's first round does
    task_id = submit(store, "stuck", deadline=10)
    scheduler.place_batch()
    (attempt,) = store.attempts_for(task_id)
    noops["kubernetes"].fail_next(Unavailable("api server down", target="vault"), operation="cancel")
    clock.advance(11)
    assert scheduler.follow() == 1
    assert store.get_task(task_id).state == TaskState.FAILED
    assert not noops["kubernetes"].status(attempt.id).state.is_final  # the stop was refused ...
    scheduler.release_finished()
    assert noops["kubernetes"].status(attempt.id).state.is_final  # ... and went through on the retry


def test_the_local_provider_worker_is_killed_at_the_deadline(engine: Engine, clock: Clock, tmp_path: Path) -> None:
    store = Store(engine, clock=clock)
    local = LocalProvider(tmp_path / "local", 1, [sys.executable, "-c", "import time; time.sleep(60)"])
    local.term_grace_seconds = 5.0
    policy = parse_policy({"targets": [{"name": "home", "provider": "local", "private": True}]})
    scheduler = scheduler_for(store, clock, {"local": local}, policy)
    task_id = submit(store, "local", deadline=5)
    assert scheduler.place_batch() == 1
    (attempt,) = store.attempts_for(task_id)
    assert local.status(attempt.id).state is BackendState.RUNNING
    clock.advance(6)
    assert scheduler.follow() == 1
    assert store.get_task(task_id).reason == "deadline of 5 s passed while launching on home"
    status = local.status(attempt.id)
    assert status.state is BackendState.FAILED
    assert (status.reason or "").startswith("cancelled; "), status.reason
    assert local.capacity(policy.targets[0]).free == 1
