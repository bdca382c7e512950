"""``GET /v1/events`` (Server-Sent Events) against a real uvicorn: tenant-scoped, resumable, live, bounded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.cli.client import ApiClient
from controlplane.cli.tasks.wakeup import EventWakeup
from controlplane.domain import TaskState
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, GLOBEX, OPERATOR, ApiServer


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    with ApiServer.start(Store(engine), tmp_path, events_stream_seconds=2.0, events_heartbeat_seconds=0.3) as server:
        yield server
    engine.dispose()


def frames(
    api: ApiServer,
    token: str,
    *,
    until: int,
    headers: dict[str, str] | None = None,
    opened: threading.Event | None = None,
    **params: Any,
) -> list[dict[str, Any]]:
    """The stream's frames (event and heartbeat) until ``until`` events came or the server ended the stream."""
    got: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    sent = {"Authorization": f"Bearer {token}", **(headers or {})}
    with httpx.stream("GET", f"{api.url}/v1/events", params=params, headers=sent, timeout=10) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        if opened is not None:  # the answer's head came: the stream's starting point is fixed
            opened.set()
        for line in response.iter_lines():
            if line.startswith(":"):
                got.append({"heartbeat": True})
            elif line.startswith(("id: ", "event: ", "data: ")):
                name, value = line.split(": ", 1)
                current[name] = json.loads(value) if name == "data" else value
            elif not line and current:
                got.append(current)
                current = {}
                if sum(1 for f in got if "id" in f) >= until:
                    break
    return got


def submit(api: ApiServer, token: str, tenant: str) -> str:
    response = api.client(token).post("/v1/tasks", json=api.body(tenant=tenant))
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def test_a_submitter_streams_its_own_tenants_events_and_an_operator_all(api: ApiServer) -> None:
    mine, theirs = submit(api, ACME, "acme"), submit(api, GLOBEX, "globex")
    acme = [f for f in frames(api, ACME, until=5, after=0) if "id" in f]
    assert {f["data"]["task_id"] for f in acme} == {mine}
    assert {f["data"]["tenant"] for f in acme} == {"acme"}
    everyone = [f for f in frames(api, OPERATOR, until=2, after=0) if "id" in f]
    assert {f["data"]["task_id"] for f in everyone} == {mine, theirs}
    assert everyone[0]["event"] == "task.created"


def test_last_event_id_resumes_after_the_last_frame_seen(api: ApiServer) -> None:
    task_id = submit(api, ACME, "acme")
    api.advance_to(task_id, TaskState.PLANNED, TaskState.LAUNCHING)
    first = [f for f in frames(api, ACME, until=1, after=0) if "id" in f]
    rest = [f for f in frames(api, ACME, until=2, headers={"Last-Event-ID": first[0]["id"]}) if "id" in f]
    assert [int(f["id"]) for f in rest] == sorted(int(f["id"]) for f in rest)
    assert all(int(f["id"]) > int(first[0]["id"]) for f in rest)
    assert [f["data"]["to_state"] for f in rest] == ["planned", "launching"]


def test_a_live_stream_gets_what_happens_after_it_opened(api: ApiServer) -> None:
    task_id = submit(api, ACME, "acme")
    got: list[dict[str, Any]] = []
    opened = threading.Event()
    reader = threading.Thread(target=lambda: got.extend(frames(api, ACME, until=1, opened=opened, task_id=task_id)))
    reader.start()
    assert opened.wait(timeout=10)
    api.advance_to(task_id, TaskState.PLANNED)
    reader.join(timeout=10)
    events = [f for f in got if "id" in f]
    assert [f["data"]["to_state"] for f in events] == ["planned"]


def test_a_quiet_stream_beats_and_ends_within_its_bound(api: ApiServer) -> None:
    got = frames(api, ACME, until=1)
    assert any(f.get("heartbeat") for f in got)
    assert not [f for f in got if "id" in f]


def test_another_tenants_task_is_refused(api: ApiServer) -> None:
    theirs = submit(api, GLOBEX, "globex")
    response = api.client(ACME).get("/v1/events", params={"task_id": theirs})
    assert response.status_code == 403
    assert response.json()["error"]["field"] == "task_id"


def test_tasks_watch_wakes_at_each_event_not_at_its_polling_interval(api: ApiServer) -> None:
    task_id = submit(api, ACME, "acme")
    client = ApiClient(api.url, ACME)
    wakeup = EventWakeup(client, task_id)
    try:
        started = time.monotonic()
        wakeup.wait(30.0)  # task.created, streamed from the task's first event
        api.advance_to(task_id, TaskState.PLANNED)
        wakeup.wait(30.0)
        assert time.monotonic() - started < 10.0, "woken by the poll interval, not by the stream"
    finally:
        wakeup.close()
        client.close()
