"""Failover after launch: an attempt that ends badly once it was launched sends its task back to be planned again.

Each trigger (preempted, lost, a crash exit code, a silent worker, a pod
unschedulable too long) ends the attempt with its state and an
``attempt.failover`` event; the task goes back to ``queued``, waits out its
backoff, and the next ``place_batch`` plans it on fresh signals with a new
receipt. Terminal endings (exit 65/69/2) and the last allowed attempt fail
the task with the reason. Throughout: private data only ever lands on
private targets, and a task never has two live attempts, even with two
schedulers following the same attempts at once.

Backends are ``providers/noop.py`` (it reports whatever state a test sets
and records every call) and, for one end-to-end run, the real local
provider with a tiny worker that exits 75 on its first run. The store and
the scheduler share an injected clock, so backoffs and heartbeat timeouts
are exact and nothing sleeps.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from controlplane.domain import (
    AttemptState,
    Candidate,
    DataSensitivity,
    InsufficientCapacity,
    PlacementPlan,
    SignalSnapshot,
    Task,
    TaskKind,
    TaskSpec,
    TaskState,
    Unavailable,
)
from controlplane.policy import Policy, parse_policy, plan
from controlplane.policy.model import Thresholds
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler, advance
from controlplane.store import Event, PlannedLaunch, Store, make_engine, upgrade
from controlplane.store.tables import attempts
from providers.base import BackendState, BackendStatus, LaunchRequest, LaunchResult
from providers.local import LocalProvider
from providers.noop import NoopProvider
from tests.support.clock import Clock
from tests.support.together import together

pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CHECKPOINTS = "s3://fusionplane-checkpoints"
LIVE = (AttemptState.LAUNCHING.value, AttemptState.RUNNING.value)

#: two private targets (the cluster first), two public clouds; the rule lists them all, so the
#: engine's own private-data filter is what keeps private tasks home
POLICY_DOC: dict[str, Any] = {
    "targets": [
        {"name": "vault", "provider": "kubernetes", "private": True},
        {"name": "home", "provider": "local", "private": True},
        {"name": "spot", "provider": "aws", "private": False, "regions": ["us-east-1"]},
        {"name": "azure", "provider": "azure", "private": False, "regions": ["eastus"]},
    ],
    "rules": [{"name": "everywhere", "targets": ["vault", "spot", "azure", "home"]}],
}
POLICY = parse_policy(POLICY_DOC)
PRIVATE_TARGETS = {"vault", "home"}


class RecordingNoop(NoopProvider):
    """The no-op provider, keeping each launch's request (the worker spec with its checkpoint)."""

    def __init__(self, name: str, *, slots: int | None = None) -> None:
        super().__init__(name=name, slots=slots)
        self.requests: dict[str, LaunchRequest] = {}

    def launch(self, request: LaunchRequest) -> LaunchResult:
        result = super().launch(request)
        self.requests.setdefault(request.attempt_id, request)
        return result

    def live_tasks(self) -> list[str]:
        """The task of every resource still pending or running here."""
        return [r.task_id for r in self.list_owned() if not r.state.is_final]


def providers() -> dict[str, RecordingNoop]:
    return {name: RecordingNoop(name) for name in ("kubernetes", "local", "aws", "azure")}


@dataclass
class World:
    store: Store
    clock: Clock
    providers: dict[str, RecordingNoop]
    scheduler: Scheduler

    def provider_of(self, attempt_id: str) -> RecordingNoop:
        return self.providers[self.store.get_attempt(attempt_id).provider]

    def set_status(self, attempt_id: str, status: BackendStatus) -> None:
        self.provider_of(attempt_id).set_status(attempt_id, status)

    def live_attempt(self, task_id: str) -> str:
        return live_attempt(self.store, task_id)


def live_attempt(store: Store, task_id: str) -> str:
    """The task's one live attempt (fails if there are none or several)."""
    (live,) = [a.id for a in store.attempts_for(task_id) if not a.state.is_final]
    return live


def new_scheduler(
    store: Store,
    clock: Clock,
    backends: dict[str, RecordingNoop],
    *,
    policy: Policy = POLICY,
    planner: Callable[[Task, SignalSnapshot, Policy, datetime], PlacementPlan] = plan,
    name: str = "sched-a",
) -> Scheduler:
    return standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers=backends,
        checkpoint_root=CHECKPOINTS,
        scheduler_id=name,
        clock=clock,
        planner=planner,
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    backends = providers()
    yield World(store, clock, backends, new_scheduler(store, clock, backends))
    engine.dispose()


def submit(
    store: Store, *, private: bool = True, kind: TaskKind = TaskKind.VIDEO, name: str = "clip", tenant: str = "acme"
) -> str:
    suffix = "mp4" if kind == TaskKind.VIDEO else "png"
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant=tenant,
            kind=kind,
            source_uri="s3://faces/actor.png",
            target_uri=f"s3://media/{name}.{suffix}",
            output_uri=f"s3://out/{name}.{suffix}",
            data_sensitivity=DataSensitivity.PRIVATE if private else DataSensitivity.PUBLIC,
        ),
        request_hash=f"{name}-{private}-{kind}",
    )
    return task.id


def failovers(store: Store, task_id: str) -> list[Event]:
    return [e for e in store.list_events(task_id) if e.kind == "attempt.failover"]


def assert_at_most_one_live_attempt(store: Store, backends: dict[str, RecordingNoop]) -> None:
    """The no-duplicate-launch invariant, in the database and on the backends."""
    with store.engine.connect() as conn:
        doubled = conn.execute(
            select(attempts.c.task_id, func.count())
            .where(attempts.c.state.in_(LIVE))
            .group_by(attempts.c.task_id)
            .having(func.count() > 1)
        ).all()
    assert doubled == [], f"tasks with two live attempts: {doubled}"
    running = [task_id for backend in backends.values() for task_id in backend.live_tasks()]
    assert len(running) == len(set(running)), f"a task runs twice on the backends: {sorted(running)}"


def fail_over_once(world: World, task_id: str, status: BackendStatus) -> str:
    """The live attempt ends with ``status``; follow fails it over; returns the ended attempt's id."""
    attempt_id = world.live_attempt(task_id)
    world.set_status(attempt_id, status)
    assert world.scheduler.follow() == 1
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    return attempt_id


# --------------------------------------------------------------------------- preempted, lost, crashed


def test_a_preempted_attempt_is_replanned_on_fresh_signals_and_resumes_from_its_checkpoint(world: World) -> None:
    task_id = submit(world.store)
    assert world.scheduler.place_batch() == 1
    first = world.store.attempts_for(task_id)[0]
    assert first.target == "vault"  # the cluster, first in the rule
    world.clock.advance(5)

    # the spot notice: SIGTERM, the worker checkpoints and exits 75; meanwhile the cluster fills up
    world.set_status(first.id, BackendStatus(state=BackendState.PREEMPTED, reason="evicted", exit_code=75))
    world.providers["kubernetes"].slots = 0
    assert world.scheduler.follow() == 1
    assert_at_most_one_live_attempt(world.store, world.providers)

    ended = world.store.get_attempt(first.id)
    assert (ended.state, ended.exit_code, ended.reason) == (AttemptState.PREEMPTED, 75, "evicted")
    task = world.store.get_task(task_id)
    assert (task.state, task.target, task.reason) == (TaskState.QUEUED, None, None)
    (event,) = failovers(world.store, task_id)
    assert event.attempt_id == first.id
    assert event.detail["trigger"] == "preempted"
    assert event.detail["reason"] == "evicted"
    assert event.detail["outcome"] == "requeued"
    assert event.detail["attempts"] == 1
    assert event.detail["not_before"] == (T0 + timedelta(seconds=5 + 2)).isoformat()

    world.clock.advance(2)  # the first backoff
    assert world.scheduler.place_batch() == 1
    assert_at_most_one_live_attempt(world.store, world.providers)
    second = world.store.attempts_for(task_id)[1]
    assert (second.number, second.target, second.state) == (2, "home", AttemptState.LAUNCHING)

    # a new receipt, planned on the snapshot of its own time: the full cluster is rejected now
    before, after = world.store.get_decisions(task_id)
    assert [c.target for c in before.candidates] == ["vault", "home"]
    assert [c.target for c in after.candidates] == ["home"]
    assert ("vault", "no_capacity") in [(r.target, r.code) for r in after.rejections]
    assert after.decided_at == T0 + timedelta(seconds=7) > before.decided_at

    # resume: the second worker spec names the first one's checkpoint
    specs = [world.providers[a.provider].requests[a.id].worker_spec for a in (first, second)]
    assert specs[0].attempt_id != specs[1].attempt_id
    assert specs[0].checkpoint == specs[1].checkpoint == f"{CHECKPOINTS}/acme/{task_id}"


@pytest.mark.parametrize(
    ("status", "ended", "trigger"),
    [
        (BackendStatus(state=BackendState.LOST, reason="job deleted: fp-x is gone"), AttemptState.LOST, "lost"),
        (
            BackendStatus(state=BackendState.LOST, reason="worker killed by signal 9 (exit 137)", exit_code=137),
            AttemptState.LOST,
            "lost",
        ),
        (
            BackendStatus(state=BackendState.FAILED, reason="EX_SOFTWARE: internal", exit_code=70),
            AttemptState.FAILED,
            "exit_code",
        ),
        (
            BackendStatus(state=BackendState.FAILED, reason="exit 1: unhandled exception", exit_code=1),
            AttemptState.FAILED,
            "exit_code",
        ),
    ],
    ids=["lost", "killed-137", "exit-70", "exit-1"],
)
def test_lost_and_crashed_attempts_fail_over_like_a_preemption(
    world: World, status: BackendStatus, ended: AttemptState, trigger: str
) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    first = fail_over_once(world, task_id, status)
    attempt = world.store.get_attempt(first)
    assert (attempt.state, attempt.exit_code, attempt.reason) == (ended, status.exit_code, status.reason)
    (event,) = failovers(world.store, task_id)
    assert (event.detail["trigger"], event.detail["outcome"]) == (trigger, "requeued")

    world.clock.advance(2)
    assert world.scheduler.place_batch() == 1
    second = world.store.attempts_for(task_id)[-1]
    assert second.number == 2
    assert second.state == AttemptState.LAUNCHING
    assert second.target == "vault"  # nothing changed in the signals: the same target is fine
    assert len(world.store.get_decisions(task_id)) == 2
    specs = [world.provider_of(a).requests[a].worker_spec.checkpoint for a in (first, second.id)]
    assert specs == [f"{CHECKPOINTS}/acme/{task_id}"] * 2
    assert_at_most_one_live_attempt(world.store, world.providers)


def test_a_lost_launch_that_may_still_be_on_its_way_is_left_alone(world: World) -> None:
    """ "Unknown attempt" right after the attempt row was written may mean its launch has not gone out yet."""
    task_id = submit(world.store, private=False)
    # what place_batch writes before it launches; this scheduler then dies without launching
    (claimed,) = world.store.claim_queued(batch_size=1, scheduler_id="gone")
    decision = plan(claimed, SignalSnapshot(taken_at=T0, samples={}), POLICY, T0)
    (attempt,) = world.store.start_launches(
        [PlannedLaunch(plan=decision, candidate=decision.candidates[0], token_sha256="0" * 64)], actor="gone"
    )
    assert attempt is not None
    assert world.scheduler.follow() == 0  # the backend says LOST "unknown attempt": young, no ref, left alone
    assert world.store.get_attempt(attempt.id).state == AttemptState.LAUNCHING
    world.clock.advance(301)
    assert world.scheduler.follow() == 1  # long enough: a launch that never happened
    assert world.store.get_attempt(attempt.id).state == AttemptState.LOST
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    world.clock.advance(2)
    assert world.scheduler.place_batch() == 1
    assert_at_most_one_live_attempt(world.store, world.providers)


# --------------------------------------------------------------------------- silent workers, unschedulable pods


def test_a_silent_worker_is_cancelled_then_failed_over(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    # the worker calls in once (as the API's heartbeat does), then goes quiet
    world.store.record_heartbeat(attempt_id)
    advance(world.store, attempt_id, AttemptState.RUNNING, TaskState.RUNNING, actor="worker")
    backend = world.providers["kubernetes"]

    world.clock.advance(60)  # at the limit, not past it
    assert world.scheduler.follow() == 0
    assert ("cancel", attempt_id) not in backend.calls

    # the cancel must go through first: while it fails, nothing else happens
    backend.fail_next(Unavailable("api server down", target="vault"), operation="cancel")
    world.clock.advance(1)
    assert world.scheduler.follow() == 0
    assert world.store.get_attempt(attempt_id).state == AttemptState.RUNNING
    assert world.store.get_task(task_id).state == TaskState.RUNNING

    assert world.scheduler.follow() == 1
    cancels = [i for i, call in enumerate(backend.calls) if call == ("cancel", attempt_id)]
    assert len(cancels) == 2  # the refused one and the one that went through
    attempt = world.store.get_attempt(attempt_id)
    assert attempt.state == AttemptState.LOST
    assert attempt.reason == "no heartbeat for 61 s (limit 60 s)"
    assert backend.status(attempt_id).state.is_final  # the resource was stopped before the failover
    (event,) = failovers(world.store, task_id)
    assert event.detail["trigger"] == "heartbeat"
    assert world.store.get_task(task_id).state == TaskState.QUEUED

    world.clock.advance(2)
    world.scheduler.place_batch()
    second = world.store.attempts_for(task_id)[-1]
    assert second.number == 2
    assert second.state == AttemptState.LAUNCHING
    assert backend.calls.index(("launch", second.id)) > cancels[-1]
    assert_at_most_one_live_attempt(world.store, world.providers)


def test_a_worker_that_never_calls_in_is_cancelled_then_failed_over(world: World) -> None:
    """A VM or pod whose worker never started is "running" to its backend forever: the first-heartbeat limit ends it."""
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    backend = world.providers["kubernetes"]
    world.scheduler.follow()  # the backend says RUNNING
    assert world.store.get_attempt(attempt_id).state == AttemptState.RUNNING

    world.clock.advance(600)  # the Kubernetes default limit, not past it
    assert world.scheduler.follow() == 0
    assert ("cancel", attempt_id) not in backend.calls

    # the cancel must go through first: while it fails, nothing else happens
    backend.fail_next(Unavailable("api server down", target="vault"), operation="cancel")
    world.clock.advance(1)
    assert world.scheduler.follow() == 0
    assert world.store.get_attempt(attempt_id).state == AttemptState.RUNNING

    assert world.scheduler.follow() == 1
    attempt = world.store.get_attempt(attempt_id)
    assert attempt.state == AttemptState.LOST
    assert attempt.reason == "no heartbeat 601 s after launch (limit 600 s on kubernetes)"
    assert backend.status(attempt_id).state.is_final  # the resource was stopped before the failover
    (event,) = failovers(world.store, task_id)
    assert (event.detail["trigger"], event.detail["outcome"]) == ("first_heartbeat", "requeued")
    assert world.store.get_task(task_id).state == TaskState.QUEUED

    world.clock.advance(2)
    world.scheduler.place_batch()
    second = world.store.attempts_for(task_id)[-1]
    assert (second.number, second.state) == (2, AttemptState.LAUNCHING)
    assert_at_most_one_live_attempt(world.store, world.providers)


def test_the_first_heartbeat_limit_is_per_provider_and_a_worker_that_called_in_is_not_held_to_it(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    backends = providers()
    policy = parse_policy(
        {
            "targets": [
                {"name": "home", "provider": "local", "private": True},
                {"name": "spot", "provider": "aws", "private": False, "regions": ["us-east-1"]},
            ],
            "thresholds": {"first_heartbeat_timeout_seconds": {"local": 30}},
            "rules": [
                {"name": "public", "match": {"data_sensitivity": "public"}, "targets": ["spot"]},
                {"name": "rest", "targets": ["home"]},
            ],
        }
    )
    scheduler = new_scheduler(store, clock, backends, policy=policy)
    silent_home = submit(store, name="silent-home")
    talking_home = submit(store, name="talking-home")
    silent_cloud = submit(store, private=False, name="silent-cloud")
    assert scheduler.place_batch() == 3
    store.record_heartbeat(live_attempt(store, talking_home))
    clock.advance(31)
    assert scheduler.follow() == 1
    (lost,) = [a for a in store.attempts_for(silent_home) if a.state == AttemptState.LOST]
    assert lost.reason == "no heartbeat 31 s after launch (limit 30 s on local)"
    assert ("cancel", lost.id) in backends["local"].calls
    for task_id in (talking_home, silent_cloud):  # called in once; or on AWS, whose default is 900 s
        assert store.get_task(task_id).state in (TaskState.LAUNCHING, TaskState.RUNNING)
    clock.advance(900 - 31)
    scheduler.follow()
    assert store.get_task(silent_cloud).state in (TaskState.LAUNCHING, TaskState.RUNNING)
    clock.advance(1)
    scheduler.follow()
    (lost_cloud,) = [a for a in store.attempts_for(silent_cloud) if a.state == AttemptState.LOST]
    assert lost_cloud.reason == "no heartbeat 901 s after launch (limit 900 s on aws)"
    engine.dispose()


def test_a_pod_unschedulable_past_the_limit_is_cancelled_then_failed_over(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    backend = world.providers["kubernetes"]

    def pending(seconds: int) -> BackendStatus:
        message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
        return BackendStatus(
            state=BackendState.PENDING,
            reason=f"unschedulable: {message} [unschedulable_for_s={seconds}]",
            unschedulable_for_s=seconds,
        )

    backend.set_status(attempt_id, pending(120))
    assert world.scheduler.follow() == 0  # at the limit: still waiting
    assert world.store.get_attempt(attempt_id).state == AttemptState.LAUNCHING
    backend.set_status(attempt_id, pending(121))
    assert world.scheduler.follow() == 1
    assert ("cancel", attempt_id) in backend.calls
    attempt = world.store.get_attempt(attempt_id)
    assert attempt.state == AttemptState.FAILED
    assert attempt.reason == "unschedulable for 121 s (limit 120 s)"
    (event,) = failovers(world.store, task_id)
    assert (event.detail["trigger"], event.detail["outcome"]) == ("unschedulable", "requeued")

    # the re-plan sees the cluster full now, and the task goes home
    backend.slots = 0
    world.clock.advance(2)
    assert world.scheduler.place_batch() == 1
    assert world.store.attempts_for(task_id)[-1].target == "home"
    assert_at_most_one_live_attempt(world.store, world.providers)


# --------------------------------------------------------------------------- terminal endings


@pytest.mark.parametrize(
    ("exit_code", "reason"),
    [
        (65, "EX_DATAERR: no face found in the source image"),
        (69, "EX_UNAVAILABLE: the model cache failed verification"),
        (2, "usage error"),
    ],
)
def test_a_terminal_exit_code_fails_the_task_without_a_retry(world: World, exit_code: int, reason: str) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    world.set_status(attempt_id, BackendStatus(state=BackendState.FAILED, reason=reason, exit_code=exit_code))
    assert world.scheduler.follow() == 1
    task = world.store.get_task(task_id)
    assert (task.state, task.reason) == (TaskState.FAILED, reason)
    assert failovers(world.store, task_id) == []
    world.clock.advance(3600)
    assert world.scheduler.place_batch() == 0
    assert world.scheduler.follow() == 0
    assert len(world.store.attempts_for(task_id)) == 1


def test_a_terminal_failure_reported_by_the_worker_fails_the_task(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    # the API's fail callback for kind no_face
    advance(
        world.store, attempt_id, AttemptState.FAILED, TaskState.FAILED, actor="worker", reason="no_face", exit_code=65
    )
    assert world.store.get_task(task_id).state == TaskState.FAILED
    assert world.scheduler.follow() == 0
    assert world.store.attempts_awaiting_failover() == []


def test_max_attempts_fail_the_task_with_the_reason_after_doubling_backoffs(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    waits = []
    for number in range(1, 5):
        fail_over_once(world, task_id, BackendStatus(state=BackendState.PREEMPTED, reason=f"spot reclaimed #{number}"))
        (event, *_) = reversed(failovers(world.store, task_id))
        waits.append((datetime.fromisoformat(event.detail["not_before"]) - world.clock()).total_seconds())
        world.clock.advance(waits[-1])
        assert world.scheduler.place_batch() == 1
    assert waits == [2, 4, 8, 16]

    fifth = world.live_attempt(task_id)
    world.set_status(fifth, BackendStatus(state=BackendState.PREEMPTED, reason="spot reclaimed #5"))
    assert world.scheduler.follow() == 1
    task = world.store.get_task(task_id)
    assert task.state == TaskState.FAILED
    assert task.reason == "max attempts reached (5 of 5); last: preempted: spot reclaimed #5"
    assert [a.state for a in world.store.attempts_for(task_id)] == [AttemptState.PREEMPTED] * 5
    assert failovers(world.store, task_id)[-1].detail["outcome"] == "failed"
    world.clock.advance(3600)
    assert world.scheduler.place_batch() == 0


@dataclass(frozen=True, kw_only=True)
class RetryThresholds(Thresholds):
    """The policy's thresholds with the failover fields, whether or not the model has grown them yet."""

    max_attempts: int = 2
    retry_backoff_seconds: float = 10.0
    retry_backoff_max_seconds: float = 15.0


def test_max_attempts_and_backoff_come_from_the_policy_when_it_sets_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    backends = providers()
    policy = replace(parse_policy(POLICY_DOC), thresholds=RetryThresholds())
    world = World(store, clock, backends, new_scheduler(store, clock, backends, policy=policy))
    task_id = submit(store)
    world.scheduler.place_batch()
    fail_over_once(world, task_id, BackendStatus(state=BackendState.LOST, reason="vm deleted"))
    clock.advance(9.999)
    assert world.scheduler.place_batch() == 0
    clock.advance(0.001)
    assert world.scheduler.place_batch() == 1
    second = world.live_attempt(task_id)
    world.set_status(second, BackendStatus(state=BackendState.LOST, reason="vm deleted again"))
    assert world.scheduler.follow() == 1
    task = store.get_task(task_id)
    assert task.state == TaskState.FAILED
    assert task.reason == "max attempts reached (2 of 2); last: lost: vm deleted again"
    engine.dispose()


def test_backoff_keeps_the_task_from_being_claimed_before_its_time(world: World) -> None:
    task_id = submit(world.store, private=False)
    world.scheduler.place_batch()
    fail_over_once(world, task_id, BackendStatus(state=BackendState.PREEMPTED, reason="spot interruption"))
    # a task queued without a backoff is claimed meanwhile; the backing-off one waits out its 2 s
    fresh = submit(world.store, private=False, name="fresh")
    world.clock.advance(1.999)
    assert world.scheduler.place_batch() == 1
    assert world.store.get_task(fresh).state == TaskState.LAUNCHING
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    assert len([e for e in world.store.list_events(task_id) if e.kind == "task.claimed"]) == 1
    world.clock.advance(0.001)
    assert world.scheduler.place_batch() == 1
    assert world.store.get_task(task_id).state == TaskState.LAUNCHING
    assert len(world.store.attempts_for(task_id)) == 2


# --------------------------------------------------------------------------- the worker's callback and the poll


def test_a_preemption_reported_by_the_worker_and_by_the_backend_is_failed_over_once(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    # the worker's fail callback (kind preempted) comes first: the API ends the attempt only
    advance(
        world.store,
        attempt_id,
        AttemptState.PREEMPTED,
        TaskState.FAILED,
        actor="worker",
        reason="preempted: SIGTERM",
        exit_code=75,
    )
    assert world.store.get_task(task_id).state == TaskState.LAUNCHING
    world.set_status(attempt_id, BackendStatus(state=BackendState.PREEMPTED, reason="evicted", exit_code=75))
    assert world.scheduler.follow() == 1
    assert world.scheduler.follow() == 0
    (event,) = failovers(world.store, task_id)
    assert event.detail["reason"] == "preempted: SIGTERM"  # the attempt's own reason, from the worker
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    world.clock.advance(2)
    assert world.scheduler.place_batch() == 1
    assert world.scheduler.follow() == 0  # the old attempt is history; the new one runs
    assert len(world.store.attempts_for(task_id)) == 2
    assert_at_most_one_live_attempt(world.store, world.providers)


def test_a_cancelled_task_is_not_failed_over(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    attempt_id = world.live_attempt(task_id)
    advance(world.store, attempt_id, AttemptState.PREEMPTED, TaskState.FAILED, actor="worker", reason="preempted")
    world.store.transition_task(task_id, wanted=TaskState.CANCELLED, actor="operator")
    assert world.scheduler.follow() == 0
    assert world.store.get_task(task_id).state == TaskState.CANCELLED
    assert failovers(world.store, task_id) == []


# --------------------------------------------------------------------------- private data, across every failover


TRIGGERS = ("preempted", "lost", "crash", "silent", "unschedulable")


def faulty_planner(lies: list[bool]) -> Callable[[Task, SignalSnapshot, Policy, datetime], PlacementPlan]:
    """A planner that offers every target, public ones first, claiming "private" for those listed as lies."""

    def offer(task: Task, snapshot: SignalSnapshot, policy: Policy, now: datetime) -> PlacementPlan:
        order = ["spot", "azure", "vault", "home"]
        candidates = tuple(
            Candidate(
                target=name,
                provider=policy.target(name).provider,  # type: ignore[union-attr]
                private=name in PRIVATE_TARGETS or lies[i % len(lies)],
            )
            for i, name in enumerate(order)
        )
        return PlacementPlan(
            task_id=task.id, policy_version="faulty", decided_at=now, rejections=(), candidates=candidates
        )

    return offer


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    faulty=st.one_of(st.none(), st.lists(st.booleans(), min_size=1, max_size=4)),
    steps=st.lists(st.tuples(st.sampled_from(TRIGGERS), st.booleans(), st.booleans()), min_size=1, max_size=6),
)
def test_private_data_never_lands_on_a_public_target_across_failovers(
    faulty: list[bool] | None, steps: list[tuple[str, bool, bool]]
) -> None:
    """Whatever ends the attempts, and even with a planner that lies, private tasks stay on private targets."""
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/state.db")
        upgrade(engine=engine)
        clock = Clock(T0)
        store = Store(engine, clock=clock)
        backends = providers()
        scheduler = new_scheduler(store, clock, backends, planner=plan if faulty is None else faulty_planner(faulty))
        private, public = submit(store), submit(store, private=False, name="public")
        scheduler.place_batch()
        for trigger, cluster_full, refuse in steps:
            backends["kubernetes"].slots = 0 if cluster_full else None
            if refuse:  # the next launch on each backend is refused for capacity: the plan walk moves on
                for backend in backends.values():
                    backend.fail_next(InsufficientCapacity("full", target=backend.name))
            for task_id in (private, public):
                live = [a for a in store.attempts_for(task_id) if not a.state.is_final]
                if not live:
                    continue
                attempt = live[0]
                backend = backends[attempt.provider]
                if trigger == "preempted":
                    backend.set_status(attempt.id, BackendStatus(state=BackendState.PREEMPTED, exit_code=75))
                elif trigger == "lost":
                    backend.set_status(attempt.id, BackendStatus(state=BackendState.LOST, reason="gone"))
                elif trigger == "crash":
                    backend.set_status(attempt.id, BackendStatus(state=BackendState.FAILED, exit_code=70))
                elif trigger == "silent":
                    store.record_heartbeat(attempt.id)
                    advance(store, attempt.id, AttemptState.RUNNING, TaskState.RUNNING, actor="worker")
                else:
                    backend.set_status(
                        attempt.id,
                        BackendStatus(
                            state=BackendState.PENDING, reason="unschedulable for 999 s", unschedulable_for_s=999
                        ),
                    )
            clock.advance(61)
            scheduler.follow()
            clock.advance(60)
            scheduler.place_batch()
            assert_at_most_one_live_attempt(store, backends)
        tried = store.attempts_for(private)
        assert tried, "the private task was never even tried"
        for attempt in tried:
            assert attempt.target in PRIVATE_TARGETS, f"private data on {attempt.target}"
        for backend in (backends["aws"], backends["azure"]):
            assert all(request.task_id != private for request in backend.requests.values())
        engine.dispose()


# --------------------------------------------------------------------------- two schedulers following at once


def report_preempted(store: Store, attempt_ids: list[str]) -> int:
    """What the API does with each worker's ``fail`` callback of kind preempted."""
    return sum(
        advance(store, a, AttemptState.PREEMPTED, TaskState.FAILED, actor="worker", reason="preempted")
        for a in attempt_ids
    )


def test_two_schedulers_following_the_same_attempts_never_make_two_live_attempts(
    database_url: str, engine: Engine
) -> None:
    clock = Clock(T0)
    backends = providers()  # one set of backends: both schedulers see the same resources
    second_engine = make_engine(database_url)
    stores = [Store(engine, clock=clock), Store(second_engine, clock=clock)]
    schedulers = [
        new_scheduler(store, clock, backends, name=name)
        for store, name in zip(stores, ("sched-a", "sched-b"), strict=True)
    ]
    store = stores[0]
    total = 12
    task_ids = [submit(store, name=f"clip-{i}") for i in range(total)]
    rounds = 3

    def place_all(scheduler: Scheduler) -> int:
        placed = 0
        while claimed := scheduler.place_batch():
            placed += claimed
        return placed

    try:
        assert sum(together(*(lambda s=s: place_all(s) for s in schedulers))) == total
        assert_at_most_one_live_attempt(store, backends)
        for number in range(1, rounds + 1):
            live = {task_id: live_attempt(store, task_id) for task_id in task_ids}
            for attempt_id in live.values():
                backends["kubernetes"].set_status(
                    attempt_id, BackendStatus(state=BackendState.PREEMPTED, reason=f"round {number}", exit_code=75)
                )

            # the worker's own fail callback for every other attempt, racing the status polls
            reported = partial(report_preempted, store, list(live.values())[::2])
            followed = together(schedulers[0].follow, schedulers[1].follow, reported)
            # every ended attempt was failed over exactly once, by one of the two
            assert followed[0] + followed[1] == total
            assert_at_most_one_live_attempt(store, backends)
            assert all(store.get_task(t).state == TaskState.QUEUED for t in task_ids)
            clock.advance(60)
            assert sum(together(*(lambda s=s: place_all(s) for s in schedulers))) == total
            assert_at_most_one_live_attempt(store, backends)

        for task_id in task_ids:
            history = store.attempts_for(task_id)
            assert [a.number for a in history] == list(range(1, rounds + 2))
            assert [a.state for a in history[:-1]] == [AttemptState.PREEMPTED] * rounds
            assert history[-1].state == AttemptState.LAUNCHING
            assert sorted(e.attempt_id for e in failovers(store, task_id)) == sorted(a.id for a in history[:-1])
            claims = [e for e in store.list_events(task_id) if e.kind == "task.claimed"]
            assert len(claims) == rounds + 1
        launches = [call for call in backends["kubernetes"].calls if call[0] == "launch"]
        assert len(launches) == len({attempt_id for _, attempt_id in launches}) == total * (rounds + 1)
    finally:
        second_engine.dispose()


# --------------------------------------------------------------------------- the real local provider


#: a worker that records its checkpoint and attempt, then exits 75 (preempted) on its first run and 0 after
RESUMING_WORKER = """
import json, pathlib, sys
spec = json.loads(pathlib.Path(sys.argv[sys.argv.index("--spec") + 1]).read_text())
log = pathlib.Path(spec["checkpoint"])
log.mkdir(parents=True, exist_ok=True)
runs = log / "runs.jsonl"
first = not runs.exists()
with runs.open("a") as out:
    out.write(json.dumps({"attempt": spec["attempt_id"], "checkpoint": spec["checkpoint"]}) + "\\n")
sys.exit(75 if first else 0)
"""


@pytest.mark.slow
def test_the_local_provider_worker_exiting_75_resumes_in_a_second_attempt(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    local = LocalProvider(tmp_path / "local", 1, [sys.executable, "-c", RESUMING_WORKER], term_grace_seconds=5.0)
    policy = parse_policy(
        {
            "targets": [{"name": "home", "provider": "local", "private": True}],
            "rules": [{"name": "home", "targets": ["home"]}],
        }
    )
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={"local": local},
        checkpoint_root=tmp_path / "checkpoints",
        scheduler_id="sched-a",
        clock=clock,
    )
    task_id = submit(store)

    def follow_until(done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done():
            assert time.monotonic() < deadline, [a.state for a in store.attempts_for(task_id)]
            scheduler.follow()
            time.sleep(0.05)

    try:
        assert scheduler.place_batch() == 1
        follow_until(lambda: store.get_task(task_id).state == TaskState.QUEUED)
        first = store.attempts_for(task_id)[0]
        assert (first.state, first.exit_code) == (AttemptState.PREEMPTED, 75)
        clock.advance(2)
        assert scheduler.place_batch() == 1
        follow_until(lambda: store.get_task(task_id).state.is_final)
        assert store.get_task(task_id).state == TaskState.SUCCEEDED
        second = store.attempts_for(task_id)[1]
        assert second.state == AttemptState.SUCCEEDED
        runs = [
            json.loads(line)
            for line in (tmp_path / "checkpoints" / "acme" / task_id / "runs.jsonl").read_text().splitlines()
        ]
        assert [r["attempt"] for r in runs] == [first.id, second.id]
        assert {r["checkpoint"] for r in runs} == {str(tmp_path / "checkpoints" / "acme" / task_id)}
    finally:
        for owned in local.list_owned():
            local.cancel(owned.attempt_id)
        engine.dispose()
