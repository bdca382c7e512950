"""A real PostgreSQL 15 for the test session, on 127.0.0.1 and a free port.

``initdb`` into a fresh directory owned by the ``postgres`` OS user (the
server refuses to run as root), start ``postgres`` listening on loopback only
with its socket in that directory, wait until it answers, and stop it by PID
at the end (SIGINT = fast shutdown, then SIGKILL after a bounded wait).
Durability is switched off: it is a throwaway database.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.support.loopback import free_port
from tests.support.no_metadata import NO_METADATA_ENV

__all__ = ["PG_BIN", "PostgresServer", "missing_binaries", "running_postgres"]

PG_BIN = Path(os.environ.get("FUSIONPLANE_PG_BIN", "/usr/lib/postgresql/15/bin"))
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
OS_USER = "postgres"


def missing_binaries() -> str | None:
    """Why PostgreSQL cannot be started here, or ``None`` if it can."""
    for name in ("initdb", "postgres"):
        if not os.access(PG_BIN / name, os.X_OK):
            return f"PostgreSQL 15 is not installed ({PG_BIN / name} missing; `make setup` installs it)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(OS_USER)
        except KeyError:
            return f"running as root but there is no {OS_USER!r} OS user to run the server as"
    return None


@dataclass
class PostgresServer:
    """A running server; ``url(db)`` gives a SQLAlchemy URL for one of its databases."""

    port: int
    base_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{OS_USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user=OS_USER, dbname="postgres", autocommit=True, connect_timeout=5
        )

    def create_database(self, prefix: str = "fp") -> str:
        """A new empty database; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._names)}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # a name we made up: no quoting concerns
        return name

    def drop_database(self, name: str) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def _as_postgres() -> dict[str, Any]:
    """Popen arguments that drop root to the postgres user (nothing to do if we are not root)."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam(OS_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGINT)  # fast shutdown: roll back sessions, checkpoint, exit
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


#: a throwaway database: durability off, a few more connections than the tests open
SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
}
START_ATTEMPTS = 3  # another process may take the free port between our probe and the bind


@contextlib.contextmanager
def running_postgres(settings: Mapping[str, str] | None = None) -> Iterator[PostgresServer]:
    """Start a throwaway server; always stop it (by PID) and delete its files.

    ``settings`` override :data:`SERVER_SETTINGS` (the benchmark asks for a
    durable server: fsync and synchronous commit on).
    """
    chosen = {**SERVER_SETTINGS, **(settings or {})}
    reason = missing_binaries()
    if reason is not None:
        raise RuntimeError(reason)
    # /tmp rather than pytest's tmp dirs: those are 0700 root and postgres could not enter them
    base = Path(tempfile.mkdtemp(prefix="fusionplane-pg-"))
    server: PostgresServer | None = None
    try:
        user = _as_postgres()
        if user:
            os.chown(base, user["user"], user["group"])
        data = base / "data"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C",
            "LANG": "C",
            "HOME": str(base),
            **NO_METADATA_ENV,
        }
        initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", OS_USER, "-A", "trust", "-E", "UTF8", "--no-sync"]
        done = subprocess.run(initdb, capture_output=True, env=env, cwd=base, timeout=60, check=False, **user)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
        for attempt in range(1, START_ATTEMPTS + 1):
            server = _start(base, data, env, user, chosen)
            try:
                _wait_ready(server)
                break
            except RuntimeError:
                exited = server.process.poll() is not None
                _stop(server.process)
                # only an early exit (most likely the port was taken) is worth another try
                if not exited or attempt == START_ATTEMPTS:
                    raise
        assert server is not None
        yield server
    finally:
        if server is not None:
            _stop(server.process)
        shutil.rmtree(base, ignore_errors=True)


def _start(
    base: Path, data: Path, env: dict[str, str], user: dict[str, Any], settings: Mapping[str, str]
) -> PostgresServer:
    port = free_port()
    log_path = base / "postgres.log"
    args = [str(PG_BIN / "postgres"), "-D", str(data), "-k", str(base), "-p", str(port), "-h", "127.0.0.1"]
    for name, value in settings.items():
        args += ["-c", f"{name}={value}"]
    with open(log_path, "ab") as log:
        if user:
            os.chown(log_path, user["user"], user["group"])
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=base, **user)
    return PostgresServer(port=port, base_dir=base, process=process, log_path=log_path)


def _wait_ready(server: PostgresServer) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"postgres exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            with server._admin() as conn:
                conn.execute("SELECT 1")
            return
        except psycopg.OperationalError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not answer in {START_TIMEOUT_S:.0f} s: {exc}\n{server.log_tail()}"
                ) from exc
            time.sleep(0.05)
