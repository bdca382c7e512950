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
        assert current_revision(engine) == head_revision() == "0010_webhook_outbox"
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
    assert head_revision() == "0010_webhook_outbox"


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
    assert "0010_webhook_outbox (head)" in result.output
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
