"""``unindexed``: ``+column`` for SQLite's planner, the column itself for PostgreSQL, the same statement cache."""

from __future__ import annotations

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from controlplane.store.planner_hints import unindexed
from controlplane.store.tables import attempts, tasks


def test_sqlite_gets_a_unary_plus_postgresql_the_column() -> None:
    statement = update(tasks).where(
        tasks.c.id.in_(bindparam("ids", expanding=True)), unindexed(tasks.c.state) == "queued"
    )
    assert "AND +tasks.state = ?" in str(statement.compile(dialect=sqlite.dialect()))
    on_postgres = str(statement.compile(dialect=postgresql.dialect()))
    assert "AND tasks.state = %(param_1)s" in on_postgres
    assert "+tasks" not in on_postgres


def test_in_lists_and_the_column_type_carry_through() -> None:
    statement = select(attempts.c.id).where(unindexed(attempts.c.state).in_(["lost", "preempted"]))
    compiled = statement.compile(dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True})
    assert "WHERE +attempts.state IN ('lost', 'preempted')" in str(compiled)


def test_statements_that_differ_only_in_the_wrapped_column_are_cached_apart() -> None:
    # the cache key must include the wrapped column, or one statement's compiled SQL would serve the other
    by_state = select(tasks.c.id).where(unindexed(tasks.c.state) == "queued")
    by_target = select(tasks.c.id).where(unindexed(tasks.c.target) == "queued")
    key_state, key_target = by_state._generate_cache_key(), by_target._generate_cache_key()
    assert key_state is not None
    assert key_target is not None
    assert key_state.key != key_target.key
