"""Engines for the store: SQLite under ``./var`` by default, PostgreSQL by URL.

``FUSIONPLANE_DATABASE_URL`` picks the database; ``postgresql://`` and
``postgres://`` URLs are driven by psycopg 3. Every SQLite connection gets
WAL, a 5 s busy timeout and foreign keys, and SQLAlchemy (not the sqlite3
module) issues BEGIN: a plain deferred BEGIN for reads and ``BEGIN
IMMEDIATE`` for transactions the store marks as writes, so a writer takes the
lock up front and waits its turn instead of failing half-way on a stale
snapshot.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, Connection, make_url

__all__ = [
    "DATABASE_URL_ENV",
    "DEFAULT_SQLITE_PATH",
    "WRITE_OPTION",
    "database_url",
    "make_engine",
    "normalize_url",
]

DATABASE_URL_ENV = "FUSIONPLANE_DATABASE_URL"
DEFAULT_SQLITE_PATH = Path("var") / "fusionplane.db"
#: execution option the repository sets on connections that will write
WRITE_OPTION = "fusionplane_write"
SQLITE_BUSY_TIMEOUT_MS = 5000


def database_url(url: str | None = None) -> str:
    """``url``, else SQLite at ``./var/fusionplane.db``.

    ``$FUSIONPLANE_DATABASE_URL`` is read by the commands (``Settings.database_url``,
    the ``--database-url`` options), which pass it here.
    """
    chosen = (url or "").strip()
    return chosen or f"sqlite:///{DEFAULT_SQLITE_PATH}"


def normalize_url(url: str) -> URL:
    """Parse ``url``; plain PostgreSQL URLs get the psycopg 3 driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+pysqlite")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database {parsed.drivername!r}: use sqlite:/// or postgresql://")
    return parsed


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url`` (see :func:`database_url`), configured for the store.

    For a SQLite file the parent directory is created and the file is made
    readable by this user only (0600). Extra ``kwargs`` go to
    :func:`sqlalchemy.create_engine`.
    """
    parsed = normalize_url(database_url(url))
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise ValueError("the store needs a SQLite file, not an in-memory database")
        _private_sqlite_file(Path(parsed.database).expanduser())
        engine = create_engine(parsed, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(parsed, **kwargs)


def _private_sqlite_file(path: Path) -> None:
    """Create the database file 0600 (SQLite gives its -wal and -shm the file's mode), or tighten an old one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            mode = file.stat().st_mode
            if mode & 0o077:  # made by an older version or by hand
                file.chmod(mode & 0o700)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # hand transaction control to SQLAlchemy (the begin hook below)
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(WRITE_OPTION, False)
        # straight to the driver: BEGIN has no parameters and no result, and through exec_driver_sql it was a
        # third of a transaction's overhead (every scheduler round opens about ten)
        driver = connection.connection.driver_connection
        assert driver is not None  # a connection being begun is open
        driver.execute("BEGIN IMMEDIATE" if write else "BEGIN")
