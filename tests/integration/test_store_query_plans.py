"""SQLite's plans for the scheduler's per-round statements: by key or by the narrow index, never a walk of a table.

The store never runs ``ANALYZE``, so SQLite plans with its built-in
guesses. These tests run the real store calls, catch each statement with
its parameters as sent, and ask SQLite how it would run it
(``EXPLAIN QUERY PLAN``): a change that sends one of them back to walking
every queued task or every attempt fails here, long before a 100,000-task
launch day shows it (docs/performance.md, issue 16).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, update

from controlplane.domain import AttemptState
from controlplane.store import Store, wake_waiting
from controlplane.store.offer_stats import offer_outcomes
from controlplane.store.spot_history import spot_history
from controlplane.store.tables import tasks
from tests.support.claimed import image_spec, launched_on
from tests.support.stores import sqlite_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with sqlite_store(tmp_path / "plans.db") as made:
        yield made


@contextmanager
def caught(engine: Engine, wanted: Callable[[str], bool]) -> Iterator[list[tuple[str, Any]]]:
    """The statements (with their parameters) the engine sends while inside, those ``wanted`` picks."""
    found: list[tuple[str, Any]] = []

    def listen(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, many: bool) -> None:
        if wanted(statement):
            found.append((statement, parameters[0] if many else parameters))

    event.listen(engine, "before_cursor_execute", listen)
    try:
        yield found
    finally:
        event.remove(engine, "before_cursor_execute", listen)


def query_plan(engine: Engine, statement: str, parameters: Any) -> str:
    """SQLite's ``EXPLAIN QUERY PLAN`` of ``statement``, its steps joined by newlines."""
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
        return "\n".join(str(row[3]) for row in cursor.fetchall())
    finally:
        raw.close()


def queue(store: Store, count: int, *, waiting_for: str | None = None) -> list[str]:
    """``count`` queued tasks; with ``waiting_for``, each waits for it and backs off for an hour."""
    spec = image_spec()
    created = [store.create_task(spec=spec, request_hash=f"q-{waiting_for}-{n}")[0].id for n in range(count)]
    if waiting_for is not None:
        now = store.now()
        with store.engine.begin() as conn:
            conn.execute(
                update(tasks)
                .where(tasks.c.id.in_(created))
                .values(queue_reason=waiting_for, queued_since=now, not_before=now + timedelta(hours=1))
            )
    return created


def by_key(plan: str) -> bool:
    """The statement finds its rows by the tasks' primary key (SQLite's index for it), not by their state."""
    return "sqlite_autoindex_tasks_1" in plan and "ix_tasks_state" not in plan


def test_the_claim_updates_the_claimed_tasks_by_key_not_by_walking_the_queue(store: Store) -> None:
    queue(store, 20)
    queue(store, 20, waiting_for="onprem: no_capacity")

    with caught(store.engine, lambda sql: sql.startswith("UPDATE tasks SET state")) as found:
        claimed = store.claim_queued(batch_size=5, scheduler_id="s")

    assert len(claimed) == 5
    ((statement, parameters),) = found
    plan = query_plan(store.engine, statement, parameters)
    assert by_key(plan), plan


def test_a_capacity_wake_updates_the_woken_tasks_by_key(store: Store) -> None:
    queue(store, 20)
    waiting = queue(store, 20, waiting_for="onprem: no_capacity")

    with caught(store.engine, lambda sql: sql.startswith("UPDATE tasks")) as found:
        woken = wake_waiting(store, {"onprem": 3})

    assert woken == {"onprem": 3}
    ((statement, parameters),) = found
    assert len(set(parameters) & set(waiting)) == 3  # the three woken, by id
    plan = query_plan(store.engine, statement, parameters)
    assert by_key(plan), plan


def test_the_failover_read_starts_from_the_placed_tasks_not_from_every_ended_attempt(store: Store) -> None:
    for _ in range(5):
        refused = launched_on(store, target="spot")
        store.transition_attempt(refused, wanted=AttemptState.FAILED, actor="s", reason="insufficient_capacity: x")

    with caught(store.engine, lambda sql: sql.startswith("SELECT attempts.id")) as found:
        store.attempts_awaiting_failover()

    ((statement, parameters),) = found
    plan = query_plan(store.engine, statement, parameters).splitlines()
    # its first step reads attempts by task (each launching or running task's few), not by state
    assert "SEARCH attempts USING INDEX ix_attempts_task_id (task_id=?)" in plan[0], plan


def test_the_spot_history_reads_the_spot_targets_window_off_its_index(store: Store) -> None:
    launched_on(store, target="spot")
    launched_on(store, target="ondemand")
    now = store.now()

    with caught(store.engine, lambda sql: "count(*) AS launches" in sql) as found:
        history = spot_history(store.engine, since=now - timedelta(hours=24), now=now, targets=["spot"])

    assert [h.launches for h in history.values()] == [1]
    ((statement, parameters),) = found
    plan = query_plan(store.engine, statement, parameters)
    assert "ix_attempts_target_created_at (target=? AND created_at>?)" in plan, plan
    assert "SCAN attempts" not in plan, plan


def test_the_breaker_window_is_read_off_indexes(store: Store) -> None:
    launched_on(store, target="spot")
    now = store.now()

    with caught(store.engine, lambda sql: "AS outcome" in sql) as found:
        outcomes = offer_outcomes(store.engine, since=now - timedelta(minutes=30))

    assert [o.launching for o in outcomes.values()] == [1]
    ((statement, parameters),) = found
    plan = query_plan(store.engine, statement, parameters)
    assert "SCAN attempts" not in plan, plan
    assert "ix_attempts_updated_at" in plan, plan
