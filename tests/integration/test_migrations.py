"""Alembic migrations on SQLite and PostgreSQL: up, down, up again, and equal to the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect

from controlplane.cli.db import db
from controlplane.store import current_revision, downgrade, head_revision, is_current, make_engine, upgrade
from controlplane.store.migrate import alembic_config, schema_differences
from controlplane.store.tables import metadata

# fixtures: a session PostgreSQL and `database_url` / `engine` / `store` on both databases
pytest_plugins = ["tests.integration.store_fixtures"]

TABLES = set(metadata.tables)


def test_upgrade_downgrade_upgrade_matches_the_models(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
        assert not is_current(engine)
        upgrade(engine=engine)
        assert is_current(engine)
        assert current_revision(engine) == head_revision() == "0012_attempts_target_index"
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert schema_differences(engine) == []

        downgrade("base", engine=engine)
        assert not is_current(engine)
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) & TABLES == set()

        upgrade(engine=engine)
        assert is_current(engine)
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_config_works_from_any_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = alembic_config("sqlite:///x.db")
    assert Path(config.get_main_option("script_location") or "").joinpath("env.py").is_file()
    assert head_revision() == "0012_attempts_target_index"


def test_cli_upgrade_current_downgrade(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONPLANE_DATABASE_URL", database_url.replace("postgresql+psycopg://", "postgresql://"))
    runner = CliRunner()
    result = runner.invoke(db, ["current"])
    assert result.exit_code == 1, result.output
    assert "base" in result.output
    result = runner.invoke(db, ["upgrade"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(db, ["current"])
    assert result.exit_code == 0, result.output
    assert "0012_attempts_target_index (head)" in result.output
    result = runner.invoke(db, ["downgrade", "--revision", "base"])
    assert result.exit_code == 0, result.output
    engine = make_engine(database_url)
    try:
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_default_database_is_sqlite_under_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FUSIONPLANE_DATABASE_URL", raising=False)
    result = CliRunner().invoke(db, ["upgrade"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "var" / "fusionplane.db").is_file()
    engine = make_engine()
    try:
        assert is_current(engine)
        with engine.connect() as conn:
            pragmas = {
                name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                for name in ("journal_mode", "busy_timeout", "foreign_keys")
            }
        assert pragmas == {"journal_mode": "wal", "busy_timeout": 5000, "foreign_keys": 1}
    finally:
        engine.dispose()


def test_queue_indexes_store_the_deadline_of_tasks_stored_before(database_url: str) -> None:
    """0011 adds ``deadline_at``: tasks stored under 0010 get ``created_at + deadline_seconds``, others none."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import text

    engine = make_engine(database_url)
    created = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
    columns = (
        "id, tenant, kind, source_uri, target_uri, output_uri, priority, priority_rank, data_sensitivity,"
        " deadline_seconds, options, labels, state, created_at, updated_at, request_hash"
    )
    try:
        upgrade("0010_webhook_outbox", engine=engine)
        with engine.begin() as conn:
            for task_id, deadline in (("tsk_with", 900), ("tsk_without", None)):
                conn.execute(
                    text(
                        f"INSERT INTO tasks ({columns}) VALUES (:id, 'acme', 'image', 's3://a', 's3://b', 's3://c',"
                        " 'normal', 2, 'public', :deadline, '{}', '{}', 'queued', :at, :at, 'h')"
                    ),
                    {"id": task_id, "deadline": deadline, "at": created},
                )
        upgrade(engine=engine)
        with engine.connect() as conn:
            stored = dict(conn.execute(text("SELECT id, deadline_at FROM tasks")).all())
        with_deadline = stored["tsk_with"]
        if isinstance(with_deadline, str):  # SQLite hands back its text
            with_deadline = datetime.fromisoformat(with_deadline)
        assert with_deadline.replace(tzinfo=UTC) == created + timedelta(seconds=900)
        assert stored["tsk_without"] is None
    finally:
        downgrade("base", engine=engine)
        engine.dispose()
