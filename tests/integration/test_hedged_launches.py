"""Hedged launches: a rule's ``hedge: N`` launches N attempts at once; the first to run wins, the others are cancelled.

The policy hedges its first two targets (Azure, then AWS Spot) with the
private cluster after them. What is checked, with real parts throughout
(the store on SQLite and PostgreSQL, the scheduler, the API on a real
loopback server, the worker agent, the no-op and the local providers):

- one receipt, two launching siblings sharing ``hedge_group`` (the first
  one's number), both launched, both told to wait for the go;
- the first heartbeat wins: the other gets 409 ``attempt_ended`` and is
  cancelled in the store and on its provider; the scheduler's own status
  poll decides the same way when the backends report first;
- reports of "it runs" racing each other make exactly one winner;
- a losing worker stops before any work, so only one output is ever written;
- a refused sibling leaves the other to carry on; when all are refused the
  task walks the rest of its plan;
- a sibling that ends while another lives does nothing to the task; when
  every sibling ends retryably the task is re-queued exactly once, and a
  hedged launch counts once against ``max_attempts``.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from controlplane.domain import (
    Attempt,
    AttemptState,
    DataSensitivity,
    InsufficientCapacity,
    InvalidSpec,
    TaskKind,
    TaskSpec,
    TaskState,
)
from controlplane.domain.worker_spec import WorkerSpec
from controlplane.policy import Policy, parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler, advance
from controlplane.store import Event, Store, make_engine, upgrade
from controlplane.worker import run_worker
from providers.base import BackendState, BackendStatus, LaunchRequest, LaunchResult
from providers.local import LocalProvider
from providers.noop import NoopProvider
from tests.support.api_fixtures import ACME, ApiServer
from tests.support.clock import Clock
from tests.support.together import together

pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.timeout(180)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIVE = (AttemptState.LAUNCHING, AttemptState.RUNNING)

#: Azure and AWS Spot hedged (the seed's "urgent: several clouds in parallel"), the private cluster after them
POLICY_DOC: dict[str, Any] = {
    "thresholds": {"max_attempts": 3},
    "targets": [
        {
            "name": "azure-fast",
            "provider": "azure",
            "storage": {"uri": "az://fpwork/work/"},
            "private": False,
            "regions": ["eastus"],
        },
        {
            "name": "spot",
            "provider": "aws",
            "storage": {"uri": "s3://fp-work/aws/"},
            "private": False,
            "regions": ["us-east-1"],
        },
        {"name": "home", "provider": "local", "private": True},
    ],
    "rules": [{"name": "urgent", "hedge": 2, "targets": ["azure-fast", "spot", "home"]}],
}
POLICY = parse_policy(POLICY_DOC)


class RecordingNoop(NoopProvider):
    """The no-op provider, keeping each launch's request (the worker spec, with its callback token)."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name)
        self.requests: dict[str, LaunchRequest] = {}

    def launch(self, request: LaunchRequest) -> LaunchResult:
        result = super().launch(request)
        self.requests.setdefault(request.attempt_id, request)
        return result

    def cancelled(self) -> list[str]:
        return [key for operation, key in self.calls if operation == "cancel"]


@dataclass
class World:
    store: Store
    clock: Clock
    providers: dict[str, RecordingNoop]
    scheduler: Scheduler

    def spec(self, attempt: Attempt) -> dict[str, Any]:
        return self.providers[attempt.provider].requests[attempt.id].worker_spec.wire_document()

    def token(self, attempt: Attempt) -> str:
        return str(self.spec(attempt)["callback"]["token"])

    def set_status(self, attempt: Attempt, status: BackendStatus | BackendState) -> None:
        self.providers[attempt.provider].set_status(attempt.id, status)


def providers() -> dict[str, RecordingNoop]:
    return {name: RecordingNoop(name) for name in ("azure", "aws", "local")}


def new_scheduler(
    store: Store,
    clock: Callable[[], datetime],
    backends: dict[str, RecordingNoop],
    *,
    callback_base: str = "http://127.0.0.1:1",
    name: str = "sched-a",
    policy: Policy = POLICY,
) -> Scheduler:
    return standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers=backends,
        callback_base=callback_base,
        scheduler_id=name,
        clock=clock,
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    backends = providers()
    scheduler = new_scheduler(store, clock, backends)
    scheduler.release_finished()  # the cursor starts here: what ends from now on is released
    yield World(store, clock, backends, scheduler)
    engine.dispose()


def submit(store: Store, *, name: str = "promo", source: str = "s3://faces/star.png", output: str | None = None) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri=source,
            target_uri=f"https://img.example/media/{name}.png",
            output_uri=output or f"/var/fp/outputs/out/{name}.png",
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        request_hash=name,
    )
    return task.id


def launched_pair(world: World, task_id: str) -> tuple[Attempt, Attempt]:
    first, second = world.store.attempts_for(task_id)
    return first, second


def failovers(store: Store, task_id: str) -> list[Event]:
    return [e for e in store.list_events(task_id) if e.kind == "attempt.failover"]


def transitions_to(store: Store, task_id: str, state: TaskState) -> list[Event]:
    return [e for e in store.list_events(task_id) if e.kind == "task.transition" and e.to_state == state.value]


# --------------------------------------------------------------------------- launching


def test_a_hedge_of_two_launches_two_siblings_under_one_receipt(world: World) -> None:
    task_id = submit(world.store)
    assert world.scheduler.place_batch() == 1

    (receipt,) = world.store.get_decisions(task_id)
    assert [(c.target, c.hedge_group) for c in receipt.candidates] == [("azure-fast", 1), ("spot", 1), ("home", None)]
    first, second = launched_pair(world, task_id)
    assert (first.number, first.target, first.state, first.hedge_group) == (1, "azure-fast", AttemptState.LAUNCHING, 1)
    assert (second.number, second.target, second.state, second.hedge_group) == (2, "spot", AttemptState.LAUNCHING, 1)
    task = world.store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.LAUNCHING, "azure-fast")

    # both went out, with their handles recorded; the cluster after them was not touched
    assert world.providers["azure"].launched() == [first.id]
    assert world.providers["aws"].launched() == [second.id]
    assert world.providers["local"].launched() == []
    assert (first.backend_ref, second.backend_ref) == (f"noop:{first.id}", f"noop:{second.id}")
    # each worker must wait for the go, with its own token
    specs = [world.spec(first), world.spec(second)]
    assert [s["callback"]["wait_for_go"] for s in specs] == [True, True]
    assert specs[0]["callback"]["token"] != specs[1]["callback"]["token"]
    created = [e for e in world.store.list_events(task_id) if e.kind == "attempt.created"]
    assert [(e.attempt_id, e.detail["hedge_group"]) for e in created] == [(first.id, 1), (second.id, 1)]


def test_a_refused_sibling_leaves_the_other_to_carry_on(world: World) -> None:
    task_id = submit(world.store)
    world.providers["azure"].fail_next(InsufficientCapacity("no Standard_NC4as_T4_v3 left", target="azure-fast"))
    assert world.scheduler.place_batch() == 1
    first, second = launched_pair(world, task_id)
    assert first.state == AttemptState.FAILED
    assert first.reason == "insufficient_capacity: no Standard_NC4as_T4_v3 left"
    assert (second.state, second.backend_ref) == (AttemptState.LAUNCHING, f"noop:{second.id}")
    # the task names where it is headed: the sibling that launched
    task = world.store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.LAUNCHING, "spot")
    assert world.providers["local"].launched() == []

    world.scheduler.follow()  # AWS says it runs
    assert world.store.get_attempt(second.id).state == AttemptState.RUNNING
    assert world.store.get_task(task_id).state == TaskState.RUNNING
    assert failovers(world.store, task_id) == []


def test_when_every_sibling_is_refused_the_task_walks_the_rest_of_its_plan(world: World) -> None:
    task_id = submit(world.store)
    world.providers["azure"].fail_next(InsufficientCapacity("no capacity", target="azure-fast"))
    world.providers["aws"].fail_next(InsufficientCapacity("InsufficientInstanceCapacity", target="spot"))
    assert world.scheduler.place_batch() == 1
    attempts = world.store.attempts_for(task_id)
    assert [(a.number, a.target, a.state, a.hedge_group) for a in attempts] == [
        (1, "azure-fast", AttemptState.FAILED, 1),
        (2, "spot", AttemptState.FAILED, 1),
        (3, "home", AttemptState.LAUNCHING, None),
    ]
    task = world.store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.LAUNCHING, "home")
    assert "wait_for_go" not in world.spec(attempts[2])["callback"]  # launched alone: it just works


def test_a_terminal_refusal_fails_the_task_only_when_no_sibling_launched(world: World) -> None:
    kept = submit(world.store, name="kept")
    world.providers["azure"].fail_next(InvalidSpec("bad image reference", target="azure-fast"))
    world.scheduler.place_batch()
    first, second = launched_pair(world, kept)
    assert (first.state, second.state) == (AttemptState.FAILED, AttemptState.LAUNCHING)
    assert world.store.get_task(kept).state == TaskState.LAUNCHING

    failed = submit(world.store, name="failed")
    world.providers["azure"].fail_next(InvalidSpec("bad image reference", target="azure-fast"))
    world.providers["aws"].fail_next(InsufficientCapacity("no capacity", target="spot"))
    world.scheduler.place_batch()
    task = world.store.get_task(failed)
    assert task.state == TaskState.FAILED
    assert task.reason is not None
    assert task.reason.startswith("launch refused: azure-fast: invalid_spec: bad image reference")
    assert len(world.store.attempts_for(failed)) == 2  # the cluster after them was not tried


# --------------------------------------------------------------------------- the first to run wins


@pytest.fixture
def api_world(tmp_path: Path) -> Iterator[tuple[World, ApiServer]]:
    """A world whose workers' callbacks reach a real API server over loopback."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    clock.now = datetime.now(UTC)  # the API writes with the wall clock: heartbeats are never in the scheduler's past
    store = Store(engine)
    backends = providers()
    with ApiServer.start(store, tmp_path) as api:
        scheduler = new_scheduler(store, clock, backends, callback_base=api.url)
        scheduler.release_finished()
        yield World(store, clock, backends, scheduler), api
    engine.dispose()


def test_the_first_heartbeat_wins_and_the_loser_is_told_and_cancelled(api_world: tuple[World, ApiServer]) -> None:
    world, api = api_world
    task_id = submit(world.store)
    world.scheduler.place_batch()
    first, second = launched_pair(world, task_id)

    won = api.client(world.token(second)).post(f"/v1/attempts/{second.id}/heartbeat", json={"progress": {}})
    assert won.status_code == 200, won.text
    assert won.json() == {"ok": True, "state": "running"}

    lost = api.client(world.token(first)).post(f"/v1/attempts/{first.id}/heartbeat", json={"progress": {}})
    assert lost.status_code == 409, lost.text
    error = lost.json()["error"]
    assert (error["code"], error["state"], error["field"]) == ("attempt_ended", "cancelled", "attempt_id")
    assert f"hedge lost to {second.id}" in error["message"]

    loser, winner = world.store.get_attempt(first.id), world.store.get_attempt(second.id)
    assert (loser.state, loser.reason) == (AttemptState.CANCELLED, f"hedge lost to {second.id}")
    assert winner.state == AttemptState.RUNNING
    task = world.store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.RUNNING, "spot")
    (cancel,) = [e for e in world.store.list_events(task_id) if e.attempt_id == first.id and e.to_state == "cancelled"]
    assert cancel.detail == {"reason": f"hedge lost to {second.id}", "hedge_winner": second.id}
    assert len(transitions_to(world.store, task_id, TaskState.RUNNING)) == 1

    # the winner keeps its go; the loser's progress is refused too
    again = api.client(world.token(second)).post(f"/v1/attempts/{second.id}/progress", json={"frames": 1})
    assert again.json() == {"ok": True, "state": "running"}
    assert api.client(world.token(first)).post(f"/v1/attempts/{first.id}/progress", json={}).status_code == 409

    # the scheduler stops the loser's VM; nothing of the winner's
    assert world.scheduler.release_finished() == 1
    assert world.providers["azure"].cancelled() == [first.id]
    assert world.providers["azure"].status(first.id).state == BackendState.FAILED
    assert world.providers["aws"].cancelled() == []
    world.scheduler.follow()
    assert world.store.get_attempt(second.id).state == AttemptState.RUNNING

    # one outcome: the winner's; a late complete of the loser changes nothing
    done = api.client(world.token(second)).post(f"/v1/attempts/{second.id}/complete", json={"frames": 1})
    assert done.json() == {"ok": True, "state": "succeeded"}
    late = api.client(world.token(first)).post(f"/v1/attempts/{first.id}/complete", json={"frames": 1})
    assert late.json() == {"ok": True, "state": "cancelled"}
    assert world.store.get_task(task_id).state == TaskState.SUCCEEDED
    assert [a.state for a in world.store.attempts_for(task_id)] == [AttemptState.CANCELLED, AttemptState.SUCCEEDED]


def test_an_attempt_launched_alone_keeps_its_callbacks_and_is_told_once_it_ended(
    api_world: tuple[World, ApiServer],
) -> None:
    world, api = api_world
    alone = parse_policy({**POLICY_DOC, "rules": [{"name": "plain", "targets": ["spot"]}]})
    scheduler = new_scheduler(world.store, world.clock, world.providers, callback_base=api.url, policy=alone)
    task_id = submit(world.store)
    scheduler.place_batch()
    (attempt,) = world.store.attempts_for(task_id)
    assert attempt.hedge_group is None
    assert "wait_for_go" not in world.spec(attempt)["callback"]
    client = api.client(world.token(attempt))
    assert client.post(f"/v1/attempts/{attempt.id}/heartbeat").json() == {"ok": True, "state": "running"}
    assert world.store.get_task(task_id).state == TaskState.RUNNING
    assert api.client(ACME).post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    scheduler.follow()  # stops the backend work of the cancelled task
    assert world.store.get_attempt(attempt.id).state == AttemptState.CANCELLED
    ended = client.post(f"/v1/attempts/{attempt.id}/heartbeat")
    assert ended.status_code == 409
    assert ended.json()["error"]["code"] == "attempt_ended"


def test_the_scheduler_decides_when_the_backends_report_running_first(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    world.scheduler.follow()  # both backends say RUNNING: the first one followed wins
    attempts = world.store.attempts_for(task_id)
    (winner,) = [a for a in attempts if a.state == AttemptState.RUNNING]
    (loser,) = [a for a in attempts if a.state == AttemptState.CANCELLED]
    assert loser.reason == f"hedge lost to {winner.id}"
    # stopped in the same round, not only when release_finished comes by
    assert world.providers[loser.provider].cancelled() == [loser.id]
    assert world.providers[winner.provider].cancelled() == []
    task = world.store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.RUNNING, winner.target)
    world.scheduler.follow()
    assert [a.state for a in world.store.attempts_for(task_id)] == [a.state for a in attempts]


def test_siblings_reporting_running_at_once_make_exactly_one_winner(database_url: str, engine: Engine) -> None:
    clock = Clock(T0)
    backends = providers()
    second_engine = make_engine(database_url)
    stores = [Store(engine, clock=clock), Store(second_engine, clock=clock)]
    scheduler = new_scheduler(stores[0], clock, backends)
    task_ids = [submit(stores[0], name=f"promo-{i}") for i in range(10)]
    try:
        assert scheduler.place_batch() == len(task_ids)
        for task_id in task_ids:
            first, second = launched_pair(World(stores[0], clock, backends, scheduler), task_id)
            # the API's heartbeat of one sibling and the scheduler's status poll of the other, on two connections
            outcomes = together(
                partial(stores[0].start_running, first.id, actor="worker"),
                partial(stores[1].start_running, second.id, actor="sched-b"),
            )
            (won,) = [o for o in outcomes if o.outcome == "won"]
            (other,) = [o for o in outcomes if o is not won]
            # the other one either came second and lost, or came too late: the winner had cancelled it
            assert other.outcome in ("lost", "ended")
            assert [a.id for a in won.cancelled] == ([other.attempt.id] if other.outcome == "ended" else [])
            loser = stores[0].get_attempt(other.attempt.id)
            assert (loser.state, loser.reason) == (AttemptState.CANCELLED, f"hedge lost to {won.attempt.id}")
            states = sorted(a.state.value for a in stores[0].attempts_for(task_id))
            assert states == ["cancelled", "running"]
            task = stores[0].get_task(task_id)
            assert (task.state, task.target) == (TaskState.RUNNING, won.attempt.target)
            assert len(transitions_to(stores[0], task_id, TaskState.RUNNING)) == 1
            # a repeated report changes nothing
            assert stores[1].start_running(won.attempt.id, actor="worker").outcome == "running"
            assert stores[1].start_running(loser.id, actor="worker").outcome == "ended"
    finally:
        second_engine.dispose()


#: a worker that ignores its spec and runs until it is stopped: what an old image, or a stuck start, looks like
SLEEPING_WORKER = "import time; time.sleep(120)"


def test_a_loser_on_the_local_provider_is_stopped_by_release_finished(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    local = LocalProvider(tmp_path / "local", 2, [sys.executable, "-c", SLEEPING_WORKER], term_grace_seconds=5.0)
    policy = parse_policy(
        {
            "targets": [
                {"name": "rack-a", "provider": "local", "private": True},
                {"name": "rack-b", "provider": "local", "private": True},
            ],
            "rules": [{"name": "both", "hedge": 2, "targets": ["rack-a", "rack-b"]}],
        }
    )
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={"local": local},
        scheduler_id="sched-a",
    )
    task_id = submit(store)
    try:
        scheduler.release_finished()
        assert scheduler.place_batch() == 1
        first, second = store.attempts_for(task_id)
        assert [local.status(a.id).state for a in (first, second)] == [BackendState.RUNNING] * 2
        # the first sibling's worker called in first (what the API's heartbeat does)
        assert store.start_running(first.id, actor="worker").outcome == "won"
        assert scheduler.release_finished() == 1
        stopped = local.status(second.id)
        assert stopped.state == BackendState.FAILED
        assert stopped.reason is not None
        assert stopped.reason.startswith("cancelled")
        assert local.status(first.id).state == BackendState.RUNNING  # the winner runs on
    finally:
        for owned in local.list_owned():
            local.cancel(owned.attempt_id)
        engine.dispose()


# --------------------------------------------------------------------------- never two outputs


def worker_spec(world: World, attempt: Attempt) -> WorkerSpec:
    return WorkerSpec.model_validate(world.spec(attempt))


def worker_events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [str(getattr(r, "event", "")) for r in caplog.records if r.name == "fusionplane.worker"]


def test_a_hedged_worker_that_lost_does_no_work(
    api_world: tuple[World, ApiServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real worker agent against the API: the loser stops before it fetches anything; the winner works."""
    world, api = api_world
    output = tmp_path / "out" / "promo.png"
    # a source that is not there: a worker that starts working fails on it (exit 65, reported)
    task_id = submit(world.store, source=str(tmp_path / "missing.png"), output=str(output))
    world.scheduler.place_batch()
    first, second = launched_pair(world, task_id)
    assert api.client(world.token(second)).post(f"/v1/attempts/{second.id}/heartbeat").status_code == 200
    before = len(world.store.list_events(task_id))

    caplog.set_level(logging.INFO, logger="fusionplane.worker")
    stop = threading.Event()
    assert run_worker(worker_spec(world, first), stop=stop) == 75
    events = worker_events(caplog)
    assert "hedge_lost" in events
    assert "attempt_failed" not in events  # it never got as far as reading its source
    assert stop.is_set()  # and it stopped its work
    assert not output.exists()
    assert len(world.store.list_events(task_id)) == before  # it reported nothing: its attempt was over
    assert world.store.get_attempt(first.id).state == AttemptState.CANCELLED

    caplog.clear()
    assert run_worker(worker_spec(world, second), stop=threading.Event()) == 65
    assert "hedge_won" in worker_events(caplog)
    failed = world.store.get_attempt(second.id)
    assert (failed.state, failed.exit_code) == (AttemptState.FAILED, 65)


def test_hedged_workers_starting_at_once_let_exactly_one_work(
    api_world: tuple[World, ApiServer], tmp_path: Path
) -> None:
    world, _api = api_world
    task_id = submit(world.store, source=str(tmp_path / "missing.png"), output=str(tmp_path / "out" / "promo.png"))
    world.scheduler.place_batch()
    first, second = launched_pair(world, task_id)
    codes = together(
        partial(run_worker, worker_spec(world, first), stop=threading.Event()),
        partial(run_worker, worker_spec(world, second), stop=threading.Event()),
    )
    assert sorted(codes) == [65, 75]  # one got the go and worked (on a missing source), the other stopped
    states = sorted(a.state.value for a in world.store.attempts_for(task_id))
    assert states == ["cancelled", "failed"]


SWAP_DEADLINE_S = 120


@pytest.mark.slow
def test_real_workers_on_the_local_provider_write_one_output(
    tmp_path: Path, source_face_path: Path, astronaut_path: Path
) -> None:
    """Two real ``fusionctl worker run`` processes hedged on the local provider: one swaps, the other exits 75."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    local = LocalProvider(tmp_path / "local", 2, term_grace_seconds=5.0)
    policy = parse_policy(
        {
            "targets": [
                {"name": "rack-a", "provider": "local", "private": True},
                {"name": "rack-b", "provider": "local", "private": True},
            ],
            "rules": [{"name": "both", "hedge": 2, "targets": ["rack-a", "rack-b"]}],
        }
    )
    output = tmp_path / "out" / "swapped.png"
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri=str(source_face_path),
            target_uri=str(astronaut_path),
            output_uri=str(output),
        ),
        request_hash="real",
    )
    try:
        with ApiServer.start(store, tmp_path) as api:
            scheduler = standalone_scheduler(
                store=store,
                policy=lambda: policy,
                providers={"local": local},
                callback_base=api.url,
                scheduler_id="sched-a",
            )
            scheduler.release_finished()
            assert scheduler.place_batch() == 1
            # the workers' callbacks decide; the scheduler only follows once the task has finished
            deadline = time.monotonic() + SWAP_DEADLINE_S
            while not store.get_task(task.id).state.is_final:
                assert time.monotonic() < deadline, [(a.state, a.reason) for a in store.attempts_for(task.id)]
                time.sleep(0.1)
            scheduler.follow()
            scheduler.release_finished()
        assert store.get_task(task.id).state == TaskState.SUCCEEDED
        attempts = store.attempts_for(task.id)
        (winner,) = [a for a in attempts if a.state == AttemptState.SUCCEEDED]
        (loser,) = [a for a in attempts if a.state == AttemptState.CANCELLED]
        assert loser.reason == f"hedge lost to {winner.id}"
        assert output.is_file()
        assert sorted(p.name for p in output.parent.iterdir()) == ["swapped.png"]  # no second, no half-written one

        def logged(attempt: Attempt) -> list[str]:
            lines = local.logs(attempt.id).read_text().splitlines()
            return [json.loads(line).get("event", "") for line in lines if line.startswith("{")]

        deadline = time.monotonic() + 30
        while local.status(loser.id).state == BackendState.RUNNING:  # exiting on its own, or cancelled
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert "hedge_lost" in logged(loser)
        assert not {"source_ready", "attempt_succeeded", "attempt_failed"} & set(logged(loser))
        assert {"hedge_won", "source_ready", "attempt_succeeded"} <= set(logged(winner))
        # it stops itself with 75; release_finished may SIGTERM it (143) in the moment between its
        # hedge_lost line and its exit, a race on a loaded machine: either way it did no work
        assert (tmp_path / "local" / loser.id / "exit_code").read_text().strip() in ("75", "143")
    finally:
        for owned in local.list_owned():
            local.cancel(owned.attempt_id)
        engine.dispose()


# --------------------------------------------------------------------------- failover with siblings


def test_a_sibling_preempted_while_the_other_lives_does_nothing_to_the_task(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    first, second = launched_pair(world, task_id)
    world.set_status(second, BackendStatus(state=BackendState.PENDING, reason="spot request open"))
    world.set_status(first, BackendStatus(state=BackendState.PREEMPTED, reason="evicted", exit_code=75))
    world.scheduler.follow()
    ended = world.store.get_attempt(first.id)
    assert (ended.state, ended.reason) == (AttemptState.PREEMPTED, "evicted")
    assert world.store.get_task(task_id).state == TaskState.LAUNCHING
    assert failovers(world.store, task_id) == []
    assert world.store.attempts_awaiting_failover() == []

    world.set_status(second, BackendState.RUNNING)
    world.scheduler.follow()
    assert world.store.get_attempt(second.id).state == AttemptState.RUNNING
    task = world.store.get_task(task_id)
    assert (task.state, task.target) == (TaskState.RUNNING, "spot")
    world.set_status(second, BackendStatus(state=BackendState.SUCCEEDED, exit_code=0))
    world.scheduler.follow()
    assert world.store.get_task(task_id).state == TaskState.SUCCEEDED
    assert failovers(world.store, task_id) == []
    assert world.providers["aws"].cancelled() == []


def test_a_sibling_failing_for_good_while_the_other_lives_leaves_the_task_to_it(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    first, second = launched_pair(world, task_id)
    world.set_status(second, BackendState.PENDING)
    world.set_status(first, BackendStatus(state=BackendState.FAILED, reason="image pull failed"))
    world.scheduler.follow()
    assert world.store.get_attempt(first.id).state == AttemptState.FAILED
    assert world.store.get_task(task_id).state == TaskState.LAUNCHING  # the other one may still win
    world.set_status(second, BackendStatus(state=BackendState.FAILED, reason="image pull failed too"))
    world.scheduler.follow()
    task = world.store.get_task(task_id)
    assert (task.state, task.reason) == (TaskState.FAILED, "image pull failed too")


def test_every_sibling_preempted_requeues_the_task_once_per_launch(world: World) -> None:
    task_id = submit(world.store)
    world.scheduler.place_batch()
    for launch in range(1, 4):
        first, second = world.store.attempts_for(task_id)[-2:]
        assert (first.hedge_group, second.hedge_group) == (first.number, first.number)
        # one ends through its worker's callback, the other through the scheduler's status poll; the
        # higher-numbered sibling ending first must not make the other look superseded
        early, late = (second, first) if launch % 2 else (first, second)
        advance(world.store, early.id, AttemptState.PREEMPTED, TaskState.FAILED, actor="worker", reason="preempted")
        world.scheduler.follow()
        assert len(failovers(world.store, task_id)) == launch - 1  # the other one still lives: nothing yet
        world.set_status(late, BackendStatus(state=BackendState.PREEMPTED, reason="spot interruption", exit_code=75))
        world.scheduler.follow()
        world.scheduler.follow()
        events = failovers(world.store, task_id)
        assert len(events) == launch  # exactly one more per hedged launch
        assert events[-1].detail["attempts"] == launch  # a hedged launch counts once against max_attempts
        if launch < 3:
            assert world.store.get_task(task_id).state == TaskState.QUEUED
            world.clock.advance(60)
            assert world.scheduler.place_batch() == 1
    task = world.store.get_task(task_id)
    assert task.state == TaskState.FAILED
    assert task.reason == "max attempts reached (3 of 3); last: preempted: spot interruption"
    attempts = world.store.attempts_for(task_id)
    assert [(a.number, a.hedge_group) for a in attempts] == [(1, 1), (2, 1), (3, 3), (4, 3), (5, 5), (6, 5)]
    assert {a.state for a in attempts} == {AttemptState.PREEMPTED}
    assert len(world.store.get_decisions(task_id)) == 3


def test_two_schedulers_and_the_callbacks_fail_a_hedged_launch_over_exactly_once(
    database_url: str, engine: Engine
) -> None:
    clock = Clock(T0)
    backends = providers()
    second_engine = make_engine(database_url)
    stores = [Store(engine, clock=clock), Store(second_engine, clock=clock)]
    schedulers = [
        new_scheduler(s, clock, backends, name=n) for s, n in zip(stores, ("sched-a", "sched-b"), strict=True)
    ]
    store = stores[0]
    task_ids = [submit(store, name=f"promo-{i}") for i in range(8)]

    def report_preempted(attempt_ids: list[str]) -> int:
        return sum(
            advance(store, a, AttemptState.PREEMPTED, TaskState.FAILED, actor="worker", reason="preempted")
            for a in attempt_ids
        )

    try:
        assert schedulers[0].place_batch() == len(task_ids)
        for launch in (1, 2):
            live = [a for t in task_ids for a in store.attempts_for(t) if a.state in LIVE]
            assert len(live) == 2 * len(task_ids)
            for attempt in live:
                backends[attempt.provider].set_status(
                    attempt.id, BackendStatus(state=BackendState.PREEMPTED, reason=f"launch {launch}", exit_code=75)
                )
            together(schedulers[0].follow, schedulers[1].follow, partial(report_preempted, [a.id for a in live[::3]]))
            schedulers[0].follow()  # whatever a callback ended after both rounds read their attempts
            for task_id in task_ids:
                assert store.get_task(task_id).state == TaskState.QUEUED
                assert [e.detail["attempts"] for e in failovers(store, task_id)] == list(range(1, launch + 1))
            clock.advance(60)
            assert schedulers[1].place_batch() == len(task_ids)
    finally:
        second_engine.dispose()
