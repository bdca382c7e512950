"""A replica stopped with SIGTERM shuts down cleanly and gives the scheduler lease back.

uvicorn re-raises SIGTERM after its graceful shutdown; without our handler
the process died there and ``serve``'s clean-up never ran, so the next
replica waited out the whole lease (15 s) before scheduling.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

from controlplane.store.tables import leader_lease
from tests.support.loopback import free_port
from tests.support.no_metadata import subprocess_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def start(tmp_path: Path, database: Path, port: int) -> subprocess.Popen[bytes]:
    env = subprocess_env(FUSIONPLANE_VAR_DIR=str(tmp_path / f"var{port}"), FUSIONPLANE_LEADER_LEASE_S="15")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "controlplane.cli",
            "serve",
            "--port",
            str(port),
            "--insecure-dev",
            "--database-url",
            f"sqlite:///{database}",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def leading(port: int, deadline_s: float) -> float | None:
    """Seconds until this replica's /readyz says it leads, or None by the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        try:
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).json()
            if ready.get("scheduler", {}).get("is_leader"):
                return time.monotonic() - started
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    return None


def test_sigterm_gives_the_lease_back_and_the_next_replica_leads_at_once(tmp_path: Path) -> None:
    database = tmp_path / "plane.db"
    first_port, second_port = free_port(), free_port()
    first = start(tmp_path, database, first_port)
    second: subprocess.Popen[bytes] | None = None
    try:
        assert leading(first_port, 60) is not None
        second = start(tmp_path, database, second_port)
        assert leading(second_port, 5) is None  # the first one holds a 15 s lease
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 128 + signal.SIGTERM
        with create_engine(f"sqlite:///{database}").connect() as conn:
            row = conn.execute(select(leader_lease)).one()
        assert row.expires_at == row.renewed_at  # given back, not left to expire
        took = leading(second_port, 12)
        assert took is not None
        assert took < 10  # one renew interval (5 s) with slack, not the 15 s lease
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(10)
