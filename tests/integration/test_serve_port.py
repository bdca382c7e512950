"""``fusionctl serve`` on a port it cannot have fails at once, with nothing changed.

It binds before it migrates the database or takes the scheduler's lease: a
second ``make run`` on a busy port says so in a line instead of migrating a
database and taking a lease first.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from controlplane.api.serving import ListenError, listen
from controlplane.cli.serve import serve
from controlplane.store import make_engine, upgrade
from controlplane.store.tables import leader_lease


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port another process already listens on."""
    with socket.create_server(("127.0.0.1", 0)) as holder:
        yield int(holder.getsockname()[1])


def test_a_busy_port_fails_before_the_database_is_touched(busy_port: int, tmp_path: Path) -> None:
    database = tmp_path / "fusionplane.db"
    var = tmp_path / "var"
    result = CliRunner().invoke(
        serve,
        ["--port", str(busy_port), "--database-url", f"sqlite:///{database}"],
        env={"FUSIONPLANE_VAR_DIR": str(var), "FUSIONPLANE_TOKENS_FILE": str(var / "tokens.json")},
    )
    assert result.exit_code == 1, result.output
    assert f"cannot listen on 127.0.0.1:{busy_port}: the port is already in use" in result.output
    # no migration ran (the file would exist) and so no lease was taken; not even var/ was made
    assert not database.exists()
    assert not var.exists()


def test_a_busy_port_takes_no_lease_on_a_shared_database(busy_port: int, tmp_path: Path) -> None:
    # a second replica started on a busy port must not depose or block the one that leads
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    upgrade(url=url)
    result = CliRunner().invoke(
        serve,
        ["--port", str(busy_port), "--database-url", url],
        env={"FUSIONPLANE_VAR_DIR": str(tmp_path / "var"), "FUSIONPLANE_TOKENS_FILE": str(tmp_path / "t.json")},
    )
    assert result.exit_code == 1, result.output
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.execute(select(leader_lease)).all() == []
    finally:
        engine.dispose()


def test_listen_holds_the_port_from_the_start(busy_port: int) -> None:
    with listen("127.0.0.1", 0) as ours:
        port = ours.getsockname()[1]
        with pytest.raises(ListenError, match=re.escape(f"127.0.0.1:{port}: the port is already in use")):
            listen("127.0.0.1", port)
    with pytest.raises(ListenError, match="already in use"):
        listen("127.0.0.1", busy_port)


def test_an_address_of_another_machine_is_named_as_such() -> None:
    # 192.0.2.0/24 is TEST-NET-1: never an address of this machine; binding sends nothing
    with pytest.raises(ListenError, match=re.escape("192.0.2.1 is not an address of this machine")):
        listen("192.0.2.1", 8080)


def test_an_ipv6_host_gets_an_ipv6_socket() -> None:
    try:
        listener = listen("::1", 0)
    except ListenError as exc:  # pragma: no cover - a host without IPv6 loopback
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with listener:
        assert listener.family == socket.AF_INET6
