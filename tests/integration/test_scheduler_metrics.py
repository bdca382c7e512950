"""The scheduler's series the dashboard reads: placements, failovers and ended attempts, each by target.

A real scheduler over a SQLite store and no-op providers (they report what
the test sets); the clock is injected, so nothing sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.domain import (
    DataSensitivity,
    InsufficientCapacity,
    ProviderError,
    TaskKind,
    TaskSpec,
    TaskState,
    Unavailable,
)
from controlplane.metrics import Metrics
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.runtime.jobs import passed
from controlplane.scheduler import Scheduler
from controlplane.store import Store, make_engine, upgrade
from providers.base import BackendState, BackendStatus
from providers.noop import NoopProvider
from tests.support.clock import Clock

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "targets": [
            {"name": "vault", "provider": "kubernetes", "private": True},
            {"name": "home", "provider": "local", "private": True},
        ],
        "rules": [{"name": "private", "targets": ["vault", "home"]}],
    }
)


@dataclass
class World:
    store: Store
    clock: Clock
    providers: dict[str, NoopProvider]
    scheduler: Scheduler
    metrics: Metrics

    def value(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    backends = {name: NoopProvider(name=name) for name in ("kubernetes", "local")}
    metrics = Metrics.create()
    scheduler = standalone_scheduler(
        store=store, policy=POLICY, providers=backends, scheduler_id="sched", clock=clock, metrics=metrics
    )
    yield World(store, clock, backends, scheduler, metrics)
    engine.dispose()


def _submit(store: Store) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://faces/actor.png",
            target_uri="s3://media/still.png",
            output_uri="s3://out/still.png",
            data_sensitivity=DataSensitivity.PRIVATE,
        ),
        request_hash="still",
    )
    return task.id


def test_a_preemption_counts_a_placement_a_failover_and_a_preempted_attempt_on_its_target(world: World) -> None:
    task_id = _submit(world.store)
    assert world.scheduler.place_batch() == 1
    (first,) = world.store.attempts_for(task_id)
    assert first.target == "vault"
    assert world.value("fusionplane_placements_total", provider="kubernetes", target="vault") == 1

    world.providers["kubernetes"].set_status(first.id, BackendStatus(state=BackendState.PREEMPTED, exit_code=75))
    assert world.scheduler.follow() == 1
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    assert world.value("fusionplane_failovers_total", target="vault", trigger="preempted", outcome="requeued") == 1
    assert world.value("fusionplane_attempts_total", provider="kubernetes", target="vault", outcome="preempted") == 1
    assert world.value("fusionplane_placements_total", provider="local", target="home") == 0


@pytest.mark.parametrize(
    ("error", "outcome"),
    [(InsufficientCapacity, "waiting"), (Unavailable, "requeued")],
    ids=["shortage-waits", "api-failure-requeues"],
)
def test_every_target_refusing_the_launch_is_a_launch_refused_failover(
    world: World, error: type[ProviderError], outcome: str
) -> None:
    task_id = _submit(world.store)
    for name in ("kubernetes", "local"):
        world.providers[name].fail_next(error(f"{name} is full"))
    world.scheduler.place_batch()
    assert world.store.get_task(task_id).state == TaskState.QUEUED
    refused = {
        (target, wanted): world.value(
            "fusionplane_failovers_total", target=target, trigger="launch_refused", outcome=wanted
        )
        for target in ("vault", "home")
        for wanted in ("waiting", "requeued")
    }
    # one failover of the task, named after the last target tried; a shortage waits without spending an attempt
    assert sum(refused.values()) == 1
    assert sum(value for (_, wanted), value in refused.items() if wanted == outcome) == 1
    assert world.value("fusionplane_placements_total", provider="kubernetes", target="vault") == 0


def test_a_loop_pass_is_stamped_when_it_returns_and_not_when_it_raises() -> None:
    metrics = Metrics.create()

    def stamp() -> float | None:
        return metrics.registry.get_sample_value("fusionplane_scheduler_last_pass_timestamp_seconds", {"loop": "place"})

    def broken() -> int:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError):
        passed(metrics, "place", broken)()
    assert stamp() is None
    before = datetime.now(UTC).timestamp()
    assert passed(metrics, "place", lambda: 3)() == 3
    stamped = stamp()
    assert stamped is not None
    assert stamped >= before - 1
