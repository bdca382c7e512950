"""Reconciliation: a control plane that died at any point of a launch leaves no duplicate and no lost task.

A "crash" is a ``BaseException`` raised at one point of ``place_batch``
(after the claim, after the attempt rows, after the launch was sent); the
next "process" is a fresh ``Scheduler`` on the same database and the same
backends, which reconciles as a newly elected leader. Then: what the
backends own is compared with the store (adopt, cancel orphans, release,
vanished attempts failed over), and tasks left half done in the store are
finished or re-queued. Backends are ``providers/noop.py`` (in-memory, every
call recorded); the store and the schedulers share an injected clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine

from controlplane.domain import AttemptState, Candidate, DataSensitivity, TaskKind, TaskSpec, TaskState, Unavailable
from controlplane.domain.worker_spec import parse_worker_spec
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.scheduler.executor import LAUNCH_GRACE_S, SEND_GRACE_S
from controlplane.scheduler.reconcile import QUIET_S, Reconciler
from controlplane.store import Store
from providers.base import BackendState, LaunchRequest, LaunchResult
from providers.noop import NoopProvider
from tests.contract.provider_contract import worker_spec
from tests.support.clock import Clock

pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "targets": [
            {"name": "home", "provider": "local", "private": True},
            {"name": "spot", "provider": "aws", "private": False, "regions": ["us-east-1"]},
        ],
        # private tasks never get "spot": the engine's own private-data rule
        "rules": [{"name": "default", "targets": ["spot", "home"]}],
        # the no-op backends' "workers" never call in; these tests are about crashes, not silent workers
        "thresholds": {"first_heartbeat_timeout_seconds": 86_400},
    }
)


class Crash(BaseException):
    """The process dies here (kill -9): nothing after this point runs."""


class CrashingStore(Store):
    """A store whose named write kills the process before it happens."""

    def __init__(self, engine: Engine, *, clock: Clock, crash_at: str) -> None:
        super().__init__(engine, clock=clock)
        self.crash_at = crash_at

    def claim_queued(self, **kwargs: Any) -> Any:
        claimed = super().claim_queued(**kwargs)
        if self.crash_at == "claim_queued" and claimed:
            raise Crash
        return claimed

    def record_backend_refs(self, refs: Mapping[str, str]) -> None:
        if self.crash_at == "record_backend_refs":
            raise Crash
        super().record_backend_refs(refs)


class CrashingNoop(NoopProvider):
    """Dies right before (``before``) or right after (``after``) the launch reaches the backend."""

    def __init__(self, name: str, *, crash: str | None = None) -> None:
        super().__init__(name=name)
        self.crash = crash

    def launch(self, request: LaunchRequest) -> LaunchResult:
        if self.crash == "before":
            raise Crash
        result = super().launch(request)
        if self.crash == "after":
            raise Crash
        return result


def submit(store: Store, name: str, *, private: bool) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://faces/a.png",
            target_uri=f"s3://media/{name}.png",
            output_uri=f"s3://out/{name}.png",
            data_sensitivity=DataSensitivity.PRIVATE if private else DataSensitivity.PUBLIC,
        ),
        request_hash=name,
    )
    return task.id


def new_scheduler(store: Store, clock: Clock, backends: Mapping[str, NoopProvider], name: str) -> Scheduler:
    return standalone_scheduler(
        store=store,
        policy=lambda: POLICY,
        providers=dict(backends),
        scheduler_id=name,
        clock=clock,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def backends() -> dict[str, CrashingNoop]:
    return {"local": CrashingNoop("local"), "aws": CrashingNoop("aws")}


def restart(engine: Engine, clock: Clock, backends: Mapping[str, NoopProvider]) -> tuple[Store, Scheduler]:
    """The next control plane process: a fresh store and scheduler on the same database and backends."""
    for provider in backends.values():
        if isinstance(provider, CrashingNoop):
            provider.crash = None
    store = Store(engine, clock=clock)
    return store, new_scheduler(store, clock, backends, "replica-2")


def assert_one_resource_per_task(store: Store, backends: Mapping[str, NoopProvider], task_ids: Sequence[str]) -> None:
    """Every task ran on exactly one backend resource, and no attempt has a resource on two backends."""
    owners: dict[str, list[str]] = {}
    for provider in backends.values():
        for resource in provider.list_owned():
            owners.setdefault(resource.task_id, []).append(resource.attempt_id)
    for task_id in task_ids:
        assert len(owners.get(task_id, [])) == 1, (task_id, owners.get(task_id))
        (attempt_id,) = owners[task_id]
        assert store.get_attempt(attempt_id).task_id == task_id


@pytest.mark.parametrize("leader", [True, False], ids=["elected", "no-lease"])
@pytest.mark.parametrize("where", ["after_claim", "before_send", "after_send", "before_refs"])
def test_a_crash_at_any_point_of_a_launch_leaves_no_duplicate_and_no_lost_task(
    engine: Engine, clock: Clock, backends: dict[str, CrashingNoop], where: str, leader: bool
) -> None:
    first_store = CrashingStore(
        engine,
        clock=clock,
        crash_at={"after_claim": "claim_queued", "before_refs": "record_backend_refs"}.get(where, ""),
    )
    task_ids = [submit(first_store, f"t{n}", private=n % 2 == 0) for n in range(4)]
    for provider in backends.values():
        provider.crash = {"before_send": "before", "after_send": "after"}.get(where)
    with pytest.raises(Crash):
        new_scheduler(first_store, clock, backends, "replica-1").place_batch()

    store, scheduler = restart(engine, clock, backends)
    if leader:
        scheduler.start_leading()  # as serve does when the lease is won
    reconciler = Reconciler(scheduler)
    report = reconciler.run(elected=True)
    if where == "after_claim":
        assert report.requeued_claims == 4
    else:
        assert report.requeued_claims == 0
    if where in ("after_send", "before_refs"):
        adopted = sum(actions.get("adopted", 0) for actions in report.providers.values())
        assert adopted == (1 if where == "after_send" else 4)  # after_send: the first launch went out
    # "before_send": attempt rows exist but nothing was sent; they look like launches in flight
    # until the grace has passed (an elected leader: a minute after its election; without a lease: by the
    # attempt's age), then the backend's "unknown attempt" makes them lost
    scheduler.follow()
    if where == "before_send":
        assert {a.state for t in task_ids for a in store.attempts_for(t)} == {AttemptState.LAUNCHING}
    clock.advance((SEND_GRACE_S if leader else LAUNCH_GRACE_S) + 1)
    for _ in range(4):
        scheduler.place_batch()
        scheduler.follow()
        reconciler.run()
        clock.advance(70)  # past any backoff
    for provider in backends.values():
        for attempt_id in provider.launched():
            provider.set_status(attempt_id, BackendState.SUCCEEDED)
    scheduler.follow()
    states = {store.get_task(t).state for t in task_ids}
    assert states == {TaskState.SUCCEEDED}
    assert_one_resource_per_task(store, backends, task_ids)
    for task_id in task_ids:  # private data never went to the cloud on any attempt
        if store.get_task(task_id).spec.data_sensitivity == DataSensitivity.PRIVATE:
            assert {a.provider for a in store.attempts_for(task_id)} == {"local"}


def test_orphans_are_cancelled_and_ended_resources_released(
    engine: Engine, clock: Clock, backends: dict[str, CrashingNoop]
) -> None:
    store = Store(engine, clock=clock)
    scheduler = new_scheduler(store, clock, backends, "replica-1")
    done, running = submit(store, "done", private=False), submit(store, "running", private=False)
    scheduler.place_batch()
    (done_attempt,) = store.attempts_for(done)
    (running_attempt,) = store.attempts_for(running)
    # the worker said "complete" but its VM is still up (the release never ran: the control plane was down)
    store.transition_attempt(done_attempt.id, wanted=AttemptState.SUCCEEDED, actor="worker", exit_code=0)
    store.transition_task(done, wanted=TaskState.SUCCEEDED, actor="worker")
    # something with our owner tag that this database never heard of
    stray = _launch(backends["aws"], "att_unknown0000000000000000000", "tsk_elsewhere")
    # an ended resource of an ended attempt, still allocated
    gone = _launch(backends["aws"], "att_ended00000000000000000000", "tsk_elsewhere2")
    backends["aws"].set_status(gone, BackendState.SUCCEEDED)

    report = Reconciler(scheduler).run()
    assert report.providers["aws"] == {"orphan_cancelled": 2, "released": 1}
    aws = {r.attempt_id: r.state for r in backends["aws"].list_owned()}
    assert aws[done_attempt.id] == BackendState.FAILED  # cancelled
    assert aws[stray] == BackendState.FAILED
    assert aws[running_attempt.id] == BackendState.RUNNING  # a live attempt is left alone
    assert ("cancel", running_attempt.id) not in backends["aws"].calls


def test_a_vanished_resource_is_confirmed_then_failed_over(
    engine: Engine, clock: Clock, backends: dict[str, CrashingNoop]
) -> None:
    store = Store(engine, clock=clock)
    scheduler = new_scheduler(store, clock, backends, "replica-1")
    task_id = submit(store, "clip", private=True)
    scheduler.place_batch()
    (attempt,) = store.attempts_for(task_id)
    backends["local"].forget(attempt.id)  # the node died with it; nobody reported an outcome
    report = Reconciler(scheduler).run()
    assert report.providers["local"] == {"vanished": 1}
    assert ("status", attempt.id) in backends["local"].calls  # confirmed before concluding
    assert store.get_attempt(attempt.id).state == AttemptState.LOST
    assert store.get_task(task_id).state == TaskState.QUEUED
    assert [e.kind for e in store.list_events(task_id)].count("attempt.failover") == 1


def test_a_backend_that_cannot_list_is_skipped_and_nothing_is_concluded(
    engine: Engine, clock: Clock, backends: dict[str, CrashingNoop]
) -> None:
    store = Store(engine, clock=clock)
    scheduler = new_scheduler(store, clock, backends, "replica-1")
    task_id = submit(store, "clip", private=False)
    scheduler.place_batch()
    (attempt,) = store.attempts_for(task_id)
    backends["aws"].forget(attempt.id)
    backends["aws"].fail_next(Unavailable("EC2 API unreachable"), operation="list_owned")
    report = Reconciler(scheduler).run()
    assert "EC2 API unreachable" in report.skipped["aws"]
    assert "aws" not in report.providers
    assert store.get_attempt(attempt.id).state == AttemptState.LAUNCHING


@pytest.mark.parametrize(
    ("ending", "exit_code", "expected"),
    [
        (AttemptState.SUCCEEDED, 0, TaskState.SUCCEEDED),
        (AttemptState.FAILED, None, TaskState.QUEUED),  # a launch refusal mid-walk: plan again
        (AttemptState.FAILED, 65, TaskState.FAILED),  # bad input: fails with the attempt's reason
    ],
)
def test_tasks_left_without_a_live_attempt_are_finished_or_requeued(
    engine: Engine,
    clock: Clock,
    backends: dict[str, CrashingNoop],
    ending: AttemptState,
    exit_code: int | None,
    expected: TaskState,
) -> None:
    store = Store(engine, clock=clock)
    scheduler = new_scheduler(store, clock, backends, "replica-1")
    task_id = submit(store, "clip", private=True)
    scheduler.place_batch()
    (attempt,) = store.attempts_for(task_id)
    # the attempt's ending was written, the task's was not: the process died in between
    store.transition_attempt(attempt.id, wanted=ending, actor="worker", exit_code=exit_code, reason="no face found")
    backends["local"].set_status(attempt.id, BackendState.SUCCEEDED)
    reconciler = Reconciler(scheduler)
    assert reconciler.run().stranded == {}  # too fresh: the writer may still be between its two writes
    clock.advance(QUIET_S + 1)
    report = reconciler.run()
    assert sum(report.stranded.values()) == 1
    task = store.get_task(task_id)
    assert task.state == expected
    if expected == TaskState.FAILED:
        assert task.reason == "no face found"


def _launch(provider: NoopProvider, attempt_id: str, task_id: str) -> str:
    provider.launch(
        LaunchRequest(
            attempt_id=attempt_id,
            task_id=task_id,
            candidate=Candidate(target="spot", provider=provider.name, private=False),
            worker_spec=parse_worker_spec(worker_spec(attempt_id, task_id)),
        )
    )
    return attempt_id


def test_a_running_attempt_reported_lost_is_failed_over_at_once(
    engine: Engine, clock: Clock, backends: dict[str, CrashingNoop]
) -> None:
    """The launch grace is for launching attempts: one that already ran (a heartbeat) and vanished is lost now."""
    store = CrashingStore(engine, clock=clock, crash_at="record_backend_refs")
    task_id = submit(store, "clip", private=False)
    with pytest.raises(Crash):
        new_scheduler(store, clock, backends, "replica-1").place_batch()
    store, scheduler = restart(engine, clock, backends)
    (attempt,) = store.attempts_for(task_id)
    assert attempt.backend_ref is None
    assert store.start_running(attempt.id, actor="worker").outcome == "won"  # its worker called in
    backends["aws"].forget(attempt.id)  # then its VM was evicted
    scheduler.follow()
    assert store.get_attempt(attempt.id).state == AttemptState.LOST
    assert store.get_task(task_id).state == TaskState.QUEUED
