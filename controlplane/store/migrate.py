"""Alembic, driven from code: works from any working directory.

The migration scripts are package data of ``controlplane.store.migrations``,
so an installed wheel carries them; :func:`alembic_config` finds them through
``importlib.resources`` instead of an ``alembic.ini`` in the working
directory.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from controlplane.store.engine import database_url, normalize_url
from controlplane.store.tables import metadata

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_current",
    "schema_differences",
    "upgrade",
]


def _migrations_dir() -> Path:
    """The folder of the migration scripts, as a real path: Alembic loads ``env.py`` and the versions from disk."""
    scripts = resources.files("controlplane.store.migrations")
    # zip_safe = False: an install is always unpacked, so the package is a folder on disk
    if not isinstance(scripts, Path):
        raise RuntimeError(f"the migration scripts are not a folder on disk: {scripts}")
    return scripts


MIGRATIONS_DIR = _migrations_dir()
#: Alembic's default version table; the migrations' env.py keeps the default
_VERSION_TABLE = "alembic_version"


def alembic_config(url: str | None = None, *, engine: Engine | None = None) -> Config:
    """An Alembic config for ``url`` (default: :func:`~controlplane.store.engine.database_url`).

    With ``engine``, migrations run on that engine's connections (tests, the
    serve command) and ``url`` is ignored.
    """
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise RuntimeError(f"the migration scripts are missing: {MIGRATIONS_DIR}/env.py")
    # without its versions Alembic "upgrades" to nothing and calls that head: a broken install must say so
    if not any((MIGRATIONS_DIR / "versions").glob("[0-9]*.py")):
        raise RuntimeError(f"the migration scripts are missing: {MIGRATIONS_DIR}/versions/ holds none")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    rendered = normalize_url(database_url(url)).render_as_string(hide_password=False)
    # ConfigParser interpolation: a literal % must be doubled
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def _config(url: str | None, engine: Engine | None) -> Config:
    return alembic_config(url, engine=engine)


def upgrade(revision: str = "head", *, url: str | None = None, engine: Engine | None = None) -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(_config(url, engine), revision)


def downgrade(revision: str, *, url: str | None = None, engine: Engine | None = None) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    command.downgrade(_config(url, engine), revision)


def head_revision() -> str | None:
    """The newest revision among the migration scripts."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (``None`` before the first upgrade)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def _script_heads() -> frozenset[str]:
    """The newest revisions among the scripts; they cannot change under a running process."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def is_current(engine: Engine) -> bool:
    """True when the database is at the newest revision (for ``/readyz``, on every probe).

    The version table is read with plain SQL: Alembic's ``MigrationContext``
    logs two INFO lines each time it is set up, which is twice per probe.
    """
    with engine.connect() as conn:
        if not inspect(conn).has_table(_VERSION_TABLE):
            return False
        heads = set(conn.execute(text(f"SELECT version_num FROM {_VERSION_TABLE}")).scalars())
    return heads == _script_heads()


def schema_differences(engine: Engine) -> list[Any]:
    """What ``alembic check`` would report: differences between the tables and the database."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": False})
        return list(compare_metadata(context, metadata))
