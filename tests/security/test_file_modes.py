"""Files the control plane and its local workers write are this user's only (no group or world bits).

Another local user of the machine must not read the database (tokens'
hashes, every task's URIs), the uploads or the outputs, whatever umask the
operator's shell had when it started ``fusionctl serve``.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faceswap.uris import parse_uri, write_atomically
from providers.base import BackendState
from providers.local import LocalProvider
from tests.contract.provider_contract import launch_request
from tests.support.serve_process import served as served_plane

pytestmark = pytest.mark.timeout(120)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, working directory) of a real ``fusionctl serve --insecure-dev`` started with umask 022."""
    # the usual shell umask: files would be 0644 unless serve tightens them itself
    with served_plane(tmp_path, insecure_dev=True, umask=0o022) as plane:
        yield plane.url, tmp_path


def test_serve_keeps_the_database_var_and_uploads_private(served: tuple[str, Path]) -> None:
    url, workdir = served
    response = httpx.put(f"{url}/v1/uploads/face.png", content=b"\x89PNG\r\n\x1a\n a face", timeout=10)
    assert response.status_code == 201, response.text
    uploaded = Path(response.json()["uri"])
    submitted = httpx.post(f"{url}/v1/tasks", json={"source": str(uploaded), "target": str(uploaded)}, timeout=10)
    assert submitted.status_code == 202, submitted.text  # a write: the WAL exists now

    var = workdir / "var"
    assert mode(var) == 0o700
    database = var / "fusionplane.db"
    for path in (database, database.with_name("fusionplane.db-wal"), database.with_name("fusionplane.db-shm")):
        assert mode(path) == 0o600, path
    assert mode(uploaded) == 0o600
    assert mode(uploaded.parent) == mode(uploaded.parent.parent) == 0o700  # upl_<id>/ and the tenant folder


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    from controlplane.store import make_engine

    database = tmp_path / "old.db"
    database.write_bytes(b"")
    database.chmod(0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert mode(database) == 0o600


def test_outputs_follow_the_umask_at_the_time_they_are_written(tmp_path: Path) -> None:
    # faceswap.uris was imported under the test runner's umask; serve sets 077 later
    previous = os.umask(0o077)
    try:
        with write_atomically(parse_uri(str(tmp_path / "out" / "swapped.png"), field="output")) as tmp:
            tmp.write_bytes(b"result")
    finally:
        os.umask(previous)
    assert mode(tmp_path / "out" / "swapped.png") == 0o600


def test_local_workers_run_with_a_private_umask(tmp_path: Path) -> None:
    record = tmp_path / "umask"
    worker = [sys.executable, "-c", f"import os; open({str(record)!r}, 'w').write(oct(os.umask(0)))"]
    previous = os.umask(0o022)  # whatever the control plane's own umask is
    try:
        provider = LocalProvider(tmp_path / "state", 1, worker, term_grace_seconds=5.0)
        provider.launch(launch_request("att-umask"))
    finally:
        os.umask(previous)
    deadline = time.monotonic() + 30
    while provider.status("att-umask").state is BackendState.RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert provider.status("att-umask").state is BackendState.SUCCEEDED
    assert record.read_text() == "0o77"
