"""Fixtures for the store's tests: a session PostgreSQL, and fresh databases of both kinds.

Test modules load them with ``pytest_plugins = ["tests.integration.store_fixtures"]``
(registered once, so every module shares one server).
``database_url`` is parametrised: every test that uses it runs on SQLite
(a file under tmp_path) and on the real PostgreSQL.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from controlplane.store import Store, make_engine, upgrade
from tests.support.postgres import PostgresServer, missing_binaries, running_postgres

__all__ = ["database_url", "engine", "postgres_server", "store"]

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = missing_binaries()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must test on PostgreSQL: {reason}")
        pytest.skip(reason)
    with running_postgres() as server:
        yield server


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new, empty database (no tables yet)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.create_database()
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on a new database migrated to head."""
    eng = make_engine(database_url)
    try:
        upgrade(engine=eng)
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def store(engine: Engine) -> Store:
    return Store(engine)
