"""The scheduler lease: one leader at a time, takeover after expiry, and a deposed leader cannot write.

Two "replicas" are two ``Store`` objects on one database, each with its own
clock (so expiry is exact and nothing sleeps), on SQLite and on the real
PostgreSQL. The fence is checked inside the write's own transaction, so
the tests assert that a refused write left nothing behind.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from controlplane.domain import DataSensitivity, TaskKind, TaskSpec, TaskState
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler import Scheduler
from controlplane.scheduler.leader import Leadership
from controlplane.store import Fence, Fenced, LeaderLease, Store, make_engine
from controlplane.store.tables import attempts, events
from providers.noop import NoopProvider
from tests.support.clock import Clock

pytest_plugins = ["tests.integration.store_fixtures"]
pytestmark = pytest.mark.timeout(120)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICY = parse_policy(
    {
        "targets": [{"name": "home", "provider": "local", "private": True}],
        "rules": [{"name": "default", "targets": ["home"]}],
    }
)


def submit(store: Store, name: str) -> str:
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri="s3://faces/a.png",
            target_uri=f"s3://media/{name}.png",
            output_uri=f"s3://out/{name}.png",
            data_sensitivity=DataSensitivity.PRIVATE,
        ),
        request_hash=name,
    )
    return task.id


def scheduler(store: Store, clock: Clock, provider: NoopProvider, name: str) -> Scheduler:
    return standalone_scheduler(
        store=store,
        policy=lambda: POLICY,
        providers={"local": provider},
        scheduler_id=name,
        clock=clock,
    )


def count(engine: Engine, table: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_one_holder_until_expiry_then_a_takeover_with_a_new_token(engine: Engine) -> None:
    clock_a, clock_b = Clock(T0), Clock(T0)
    a = LeaderLease(Store(engine, clock=clock_a), holder="replica-a", seconds=10)
    b = LeaderLease(Store(engine, clock=clock_b), holder="replica-b", seconds=10)
    first = a.acquire()
    assert (first.holder, first.token, first.mine) == ("replica-a", 1, True)
    seen_by_b = b.acquire()
    assert (seen_by_b.holder, seen_by_b.mine) == ("replica-a", False)
    clock_a.advance(5)
    renewed = a.acquire()
    assert renewed.token == 1
    assert renewed.expires_at == T0 + timedelta(seconds=15)
    clock_b.advance(14.9)  # b's clock: still before a's renewed expiry
    assert not b.acquire().mine
    clock_b.advance(0.2)
    taken = b.acquire()
    assert (taken.holder, taken.token, taken.mine) == ("replica-b", 2, True)
    # a comes back from a pause: renewing does not give it the lease back while b's holds
    back = a.acquire()
    assert (back.holder, back.token, back.mine) == ("replica-b", 2, False)
    read = a.read()
    assert read is not None
    assert (read.holder, read.token) == ("replica-b", 2)


def test_a_deposed_leader_cannot_claim_or_launch_and_leaves_nothing_behind(engine: Engine) -> None:
    clock_a, clock_b = Clock(T0), Clock(T0)
    base_a, base_b = Store(engine, clock=clock_a), Store(engine, clock=clock_b)
    for n in range(3):
        submit(base_a, f"t{n}")
    lease_a = LeaderLease(base_a, holder="replica-a", seconds=5)
    held = lease_a.acquire()
    assert held.mine
    fenced_a = base_a.fenced(Fence(held.name, held.holder, held.token))
    provider_a = NoopProvider(name="local")
    sched_a = scheduler(fenced_a, clock_a, provider_a, "replica-a")
    # replica a stalls past its lease; b takes over
    clock_b.advance(6)
    assert LeaderLease(base_b, holder="replica-b", seconds=5).acquire().token == held.token + 1
    events_before, attempts_before = count(engine, events), count(engine, attempts)
    with pytest.raises(Fenced, match="taken over"):
        sched_a.place_batch()
    assert provider_a.launched() == []  # nothing was sent
    assert (count(engine, events), count(engine, attempts)) == (events_before, attempts_before)
    assert base_b.count_tasks_by_state()[TaskState.QUEUED] == 3  # the claim rolled back
    with pytest.raises(Fenced):
        fenced_a.check_fence()
    # the API's store is not fenced: submissions go on whoever leads
    submit(base_a, "after")


def test_the_leader_schedules_through_its_fenced_store(engine: Engine) -> None:
    clock = Clock(T0)
    base = Store(engine, clock=clock)
    task_id = submit(base, "one")
    provider = NoopProvider(name="local")
    sched = scheduler(base, clock, provider, "replica-a")
    elected: list[Store] = []

    def on_elected(fenced: Store) -> None:
        sched.store = fenced
        elected.append(fenced)

    leadership = Leadership(store=base, holder="replica-a", lease_seconds=9, on_elected=on_elected, clock=clock)
    place = leadership.guard(sched.place_batch, default=-1)
    assert place() == -1  # not leading yet: the job does nothing
    assert leadership.renew()
    assert leadership.is_leader
    assert len(elected) == 1
    assert elected[0].fence is not None
    assert leadership.renew()
    assert len(elected) == 1
    assert place() == 1
    assert [a.state.value for a in base.attempts_for(task_id)] == ["launching"]
    # another replica takes the lease after it expired: the next fenced write makes a step down
    clock.advance(10)
    other = LeaderLease(Store(engine, clock=clock), holder="replica-b", seconds=9).acquire()
    assert other.mine
    submit(base, "two")
    assert not leadership.is_leader  # past its own lease (minus the margin) it stopped by itself
    leadership._valid_until = clock() + timedelta(seconds=5)  # pretend it still believes it leads
    assert leadership.is_leader
    assert place() == -1  # the fence refused the claim; the guard stepped down
    assert not leadership.is_leader
    assert leadership.status()["is_leader"] is False


def test_renew_fails_over_to_not_leading_once_the_lease_would_have_expired(engine: Engine) -> None:
    clock = Clock(T0)
    store = Store(engine, clock=clock)
    leadership = Leadership(store=store, holder="replica-a", lease_seconds=6, on_elected=lambda s: None, clock=clock)
    assert leadership.renew()
    engine.dispose()
    broken = Leadership(
        store=Store(_unreachable_engine(), clock=clock),
        holder="replica-a",
        lease_seconds=6,
        on_elected=lambda s: None,
        clock=clock,
    )
    broken._leading, broken._valid_until = leadership._leading, leadership._valid_until
    assert broken.renew() is True  # the database is away, but the lease surely still holds
    clock.advance(5.5)  # past expiry minus the margin (1 s)
    assert broken.renew() is False
    assert not broken.is_leader


def test_resign_lets_another_replica_take_over_at_once(engine: Engine) -> None:
    clock = Clock(T0)
    a = Leadership(
        store=Store(engine, clock=clock), holder="a", lease_seconds=30, on_elected=lambda s: None, clock=clock
    )
    b = Leadership(
        store=Store(engine, clock=clock), holder="b", lease_seconds=30, on_elected=lambda s: None, clock=clock
    )
    assert a.renew()
    assert not b.renew()
    a.resign()
    assert not a.is_leader
    assert b.renew()
    assert b.last_seen is not None
    assert b.last_seen.token == 2


def test_lease_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="holder"):
        LeaderLease(None, holder="", seconds=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="86400"):
        LeaderLease(None, holder="a", seconds=0)  # type: ignore[arg-type]


def _unreachable_engine() -> Engine:
    return make_engine("postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=1")
