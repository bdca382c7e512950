"""``fusionctl submit`` with a large local file: chunks, a broken connection, a killed run, the resume.

The CLI runs as a real subprocess against the real API server, through a
TCP relay (tests/support/tcp_fault_relay.py) that drops the answer to one
chosen PATCH: the server took the chunk, the client never hears of it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, ApiServer
from tests.support.tcp_fault_relay import TcpFaultRelay
from tests.support.tus import TUS

MIB = 1 << 20
SIZE = 40 * MIB
CHUNK = 8 * MIB
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.slow


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'plane.db'}")
    upgrade(engine=engine)
    grant = {"acme": {"s3_read": ["s3://media/"]}}
    with ApiServer.start(Store(engine), tmp_path, storage=grant) as server:
        yield server


@pytest.fixture
def relay(api: ApiServer) -> Iterator[TcpFaultRelay]:
    port = int(api.url.rsplit(":", 1)[1])
    with TcpFaultRelay("127.0.0.1", port) as relay:
        yield relay


@pytest.fixture
def big(tmp_path: Path) -> Path:
    path = tmp_path / "big clip.bin"
    path.write_bytes(PNG_SIGNATURE + os.urandom(SIZE - len(PNG_SIGNATURE)))  # a source must start as an image
    return path


def chunk_marker(path: Path, offset: int) -> bytes:
    """What only the PATCH of the chunk at ``offset`` carries: its Upload-Checksum."""
    with path.open("rb") as handle:
        handle.seek(offset)
        return base64.b64encode(hashlib.sha256(handle.read(CHUNK)).digest())


def book() -> Path:
    return Path(os.environ["XDG_STATE_HOME"]) / "fusionplane" / "uploads.json"


def submit(path: Path) -> list[str]:
    return [sys.executable, "-m", "controlplane.cli", "submit", "--source", str(path), "--target", "s3://media/g.png"]


def environment(relay: TcpFaultRelay) -> dict[str, str]:
    return {**os.environ, "FUSIONPLANE_URL": relay.url, "FUSIONPLANE_TOKEN": ACME}


def server_offset_reaches(api: ApiServer, offset: int, *, within_s: float = 30.0) -> str:
    """Wait until the upload in the CLI's book is at ``offset`` on the server (asked directly); its location."""
    client = api.client(ACME)
    deadline = time.monotonic() + within_s
    while True:
        with_entries = json.loads(book().read_text()) if book().exists() else {}
        for location in with_entries.values():
            if int(client.head(location, headers=TUS).headers.get("upload-offset", -1)) == offset:
                return str(location)
        assert time.monotonic() < deadline, f"the upload never reached {offset} bytes"
        time.sleep(0.02)


def uploaded_source(api: ApiServer, stdout: str) -> Path:
    task_id = stdout.splitlines()[1].split()[0]
    return Path(api.store.get_task(task_id).spec.source_uri)


def test_a_killed_submit_resumes_where_the_server_got_to(api: ApiServer, relay: TcpFaultRelay, big: Path) -> None:
    relay.lose_answers(chunk_marker(big, 2 * CHUNK))  # the PATCH at 16 MiB lands; its answer never comes back
    first = subprocess.Popen(submit(big), env=environment(relay), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        location = server_offset_reaches(api, 3 * CHUNK)
    finally:
        first.send_signal(signal.SIGKILL)  # the run dies (a closed laptop, ^C) in the middle
        first.communicate(timeout=10)
    relay.heal(reset_held=True)
    assert location in json.loads(book().read_text()).values()  # kept for the next run
    # the whole file's sha256 went with the creation: the server checks it when the last byte is in
    head = api.client(ACME).head(location, headers=TUS)
    digest = hashlib.sha256(big.read_bytes()).hexdigest()
    assert f"sha256 {base64.b64encode(digest.encode()).decode()}" in head.headers["upload-metadata"]

    second = subprocess.run(
        submit(big), env=environment(relay), capture_output=True, text=True, timeout=120, check=False
    )
    assert second.returncode == 0, second.stderr
    assert f"resuming {big.name} at {3 * CHUNK} of {SIZE} bytes" in second.stderr
    assert f"uploading {big.name}" in second.stderr  # the progress bar, on stderr
    source = uploaded_source(api, second.stdout)
    assert source.parent.name == location.rsplit("/", 1)[1]  # the same upload, not a new one
    assert source.name == "big_clip.bin"
    assert source.read_bytes() == big.read_bytes()
    assert [p.name for p in (api.input_root / "acme").iterdir()] == [source.parent.name]
    assert json.loads(book().read_text()) == {}  # complete: forgotten


def test_a_broken_connection_is_retried_from_heads_offset(api: ApiServer, relay: TcpFaultRelay, big: Path) -> None:
    relay.lose_answers(chunk_marker(big, CHUNK))
    run = subprocess.Popen(
        submit(big), env=environment(relay), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        server_offset_reaches(api, 2 * CHUNK)
        relay.heal(reset_held=True)  # the stuck connection is reset: the CLI sees it break
        stdout, stderr = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate(timeout=10)
    assert run.returncode == 0, stderr
    assert "connection lost" in stderr
    assert f"resuming {big.name} at {2 * CHUNK} of {SIZE} bytes" in stderr
    assert uploaded_source(api, stdout).read_bytes() == big.read_bytes()
    assert json.loads(book().read_text()) == {}


def test_a_changed_file_is_a_new_upload(api: ApiServer, big: Path) -> None:
    small = big.with_name("small.bin")
    small.write_bytes(PNG_SIGNATURE + b"first")
    env = {**os.environ, "FUSIONPLANE_URL": api.url, "FUSIONPLANE_TOKEN": ACME}
    # an entry left by an interrupted run of another version of the file is not resumed into this one
    client = api.client(ACME)
    stale = client.post(
        "/v1/uploads/", headers={**TUS, "Upload-Length": "13", "Upload-Metadata": "filename " + "c21hbGwuYmlu"}
    ).headers["location"]
    stat = small.stat()
    book().parent.mkdir(parents=True, exist_ok=True)
    book().write_text(json.dumps({json.dumps([api.url, str(small.resolve()), 13, stat.st_mtime_ns - 10**9]): stale}))
    small.write_bytes(PNG_SIGNATURE + b"other")
    done = subprocess.run(
        submit(small),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "resuming" not in done.stderr
    assert uploaded_source(api, done.stdout).read_bytes() == PNG_SIGNATURE + b"other"
    assert (
        httpx.head(api.url + stale, headers={**TUS, "Authorization": f"Bearer {ACME}"}).headers["upload-offset"] == "0"
    )
