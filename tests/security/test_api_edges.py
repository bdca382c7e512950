"""Hostile edges of the REST API on a real uvicorn (127.0.0.1), SQLite and PostgreSQL.

Integers past 64 bits in query parameters, callback bodies nested thousands
deep or a megabyte wide, and JSON values of the wrong type that Python would
quietly coerce (``true`` as 1, ``"10"`` as 10): each is a 4xx naming the field,
never a 500 or a dropped connection, and nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from controlplane.cli.main import cli
from controlplane.domain import TaskState
from controlplane.store import Store
from tests.support.api_fixtures import ACME, OPERATOR, ApiServer, attempt_token, stored_rows

pytest_plugins = ["tests.integration.store_fixtures"]

REPO = Path(__file__).resolve().parents[2]
CALLBACKS = ("heartbeat", "progress", "complete", "fail")


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[ApiServer]:
    with ApiServer.start(store, tmp_path) as server:
        yield server


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert {"code", "message", "field"} <= set(error)
    assert error["message"]
    return error


def submit(api: ApiServer, **body: Any) -> dict[str, Any]:
    response = api.client(ACME).post("/v1/tasks", json=api.body(**body))
    assert response.status_code == 202, response.text
    return response.json()


def launched(api: ApiServer) -> tuple[str, str, httpx.Client]:
    """A launching task with an attempt: (task id, attempt id, a client holding the attempt's token)."""
    task = submit(api)
    api.advance_to(task["id"], TaskState.PLANNED, TaskState.LAUNCHING)
    token, digest = attempt_token(task["id"])
    attempt = api.store.create_attempt(task_id=task["id"], target="local", provider="local", token_sha256=digest)
    return task["id"], attempt.id, api.client(token)


# --------------------------------------------------------------------------- integers in query parameters


def test_events_after_past_64_bits_is_a_422_naming_after(api: ApiServer) -> None:
    task = submit(api)
    client = api.client(ACME)
    for after in (2**63, 2**64 + 1, 10**40, -1):
        error = error_of(client.get(f"/v1/tasks/{task['id']}/events", params={"after": after}), 422)
        assert error["field"] == "after"
    largest = client.get(f"/v1/tasks/{task['id']}/events", params={"after": 2**63 - 1})
    assert largest.status_code == 200, largest.text
    assert largest.json() == {"events": []}


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/tasks", "limit"),
        ("/v1/signals/history", "limit"),
        ("/v1/signals/history", "since_seconds"),
        ("/v1/policy/history", "limit"),
    ],
)
def test_other_integer_query_parameters_are_bounded(api: ApiServer, path: str, param: str) -> None:
    for value in (2**63, 2**64, -(2**63) - 1):
        assert error_of(api.client(OPERATOR).get(path, params={param: value}), 422)["field"] == param


# --------------------------------------------------------------------------- callback bodies


@pytest.mark.parametrize("action", CALLBACKS)
@pytest.mark.parametrize("opening", ["[", '{"a":'], ids=["arrays", "objects"])
def test_deeply_nested_callback_body_is_a_422_and_the_connection_stays(
    api: ApiServer, action: str, opening: str
) -> None:
    task_id, attempt_id, client = launched(api)
    before = stored_rows(api.store)
    closing = "]" if opening == "[" else "}"
    body = opening * 5000 + "1" + closing * 5000  # past Python's recursion limit, inside the size limit
    url = f"/v1/attempts/{attempt_id}/{action}"
    error = error_of(client.post(url, content=body, headers={"content-type": "application/json"}), 422)
    assert error["field"] == "body"
    assert "nested" in error["message"]
    just_over = '{"progress": ' + "[" * 40 + "]" * 40 + "}"  # 41 deep: over the bound of 32 too
    assert error_of(client.post(url, content=just_over), 422)["field"] == "body"
    assert stored_rows(api.store) == before
    assert api.store.get_progress(attempt_id).last_heartbeat_at is None
    # the same keep-alive connection still answers
    assert client.post(f"/v1/attempts/{attempt_id}/heartbeat", json={"progress": {"frames": 1}}).status_code == 200
    assert api.store.get_task(task_id).state == TaskState.RUNNING


def test_stored_progress_is_the_typed_fields_only(api: ApiServer) -> None:
    task_id, attempt_id, client = launched(api)
    bulky = {"frames": 3, "total": 9, "blob": "x" * 20_000, "nested": {"more": ["y"] * 100}}
    response = client.post(f"/v1/attempts/{attempt_id}/heartbeat", json={"progress": bulky})
    assert response.status_code == 200, response.text
    assert dict(api.store.get_progress(attempt_id).progress) == {"frames": 3, "total": 9}
    response = client.post(f"/v1/attempts/{attempt_id}/progress", json={**bulky, "stage": "swap", "eta_s": None})
    assert response.status_code == 200, response.text
    shown = api.client(ACME).get(f"/v1/tasks/{task_id}").json()["attempts"][0]["progress"]
    assert shown == {"frames": 3, "total": 9, "stage": "swap", "eta_s": None}


@pytest.mark.parametrize(
    ("action", "body", "field"),
    [
        ("progress", {"message": "m" * 501}, "message"),
        ("heartbeat", {"progress": {"message": "m" * 501}}, "progress.message"),
        ("heartbeat", {"progress": {"frames": "7"}}, "progress.frames"),
        ("progress", {"frames": True}, "frames"),
        ("progress", {"fps": -1}, "fps"),
        ("complete", {"frames": 1.5}, "frames"),
        ("complete", {"timings_s": {f"stage{i}": 1.0 for i in range(40)}}, "timings_s"),
        ("complete", {"execution_provider": "cuda\n<script>"}, "execution_provider"),
        ("complete", {"execution_provider_reason": "r" * 1001}, "execution_provider_reason"),
        ("complete", {"decoder": "nvdec" * 20}, "decoder"),
        ("complete", {"decoder_reason": "r" * 513}, "decoder_reason"),
        ("progress", {"execution_provider": 7}, "execution_provider"),
        ("fail", {"kind": "internal", "exit_code": True}, "exit_code"),
        ("fail", {"kind": "x" * 65}, "kind"),
        ("fail", {"message": "m" * 4001}, "message"),
    ],
)
def test_callback_fields_out_of_type_or_bound_are_a_422_naming_them(
    api: ApiServer, action: str, body: dict[str, Any], field: str
) -> None:
    task_id, attempt_id, client = launched(api)
    before = stored_rows(api.store)
    assert error_of(client.post(f"/v1/attempts/{attempt_id}/{action}", json=body), 422)["field"] == field
    assert stored_rows(api.store) == before
    assert api.store.get_progress(attempt_id).last_heartbeat_at is None
    assert api.store.get_task(task_id).state == TaskState.LAUNCHING


@pytest.mark.parametrize("action", CALLBACKS)
def test_a_callback_over_64_kib_is_refused_before_it_is_read(api: ApiServer, action: str) -> None:
    _task_id, attempt_id, client = launched(api)
    wide = "m" * 100_000  # under the API's 1 MiB body limit, over the callbacks' 64 KiB
    body = {"progress": {"frames": 1, "blob": wide}} if action == "heartbeat" else {"frames": 1, "blob": wide}
    error = error_of(client.post(f"/v1/attempts/{attempt_id}/{action}", json=body), 413)
    assert error["field"] == "body"
    assert api.store.get_progress(attempt_id).last_heartbeat_at is None


# --------------------------------------------------------------------------- strict numbers in task bodies


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"deadline_seconds": True}, "deadline_seconds"),
        ({"deadline_seconds": "10"}, "deadline_seconds"),
        ({"deadline_seconds": 10.5}, "deadline_seconds"),
        ({"budget_usd": True}, "budget_usd"),
        ({"budget_usd": "5"}, "budget_usd"),
        ({"options": {"quality": True}}, "options.quality"),
        ({"options": {"segment_frames": "60"}}, "options.segment_frames"),
        ({"options": {"blend_blur": False}}, "options.blend_blur"),
        ({"options": {"allow_fallback": "yes"}}, "options.allow_fallback"),
        ({"options": {"decoder": "vdpau"}}, "options.decoder"),
        ({"options": {"decoder": "-hwaccel cuda -i /etc/passwd"}}, "options.decoder"),
    ],
)
def test_numbers_are_not_coerced_at_submit(api: ApiServer, extra: dict[str, Any], field: str) -> None:
    before = stored_rows(api.store)
    error = error_of(api.client(ACME).post("/v1/tasks", json=api.body(**extra)), 422)
    assert error["field"] == field
    assert stored_rows(api.store) == before


def test_plain_numbers_still_submit(api: ApiServer) -> None:
    task = submit(api, deadline_seconds=600, budget_usd=5, options={"quality": 20, "blend_blur": 0})
    stored = api.store.get_task(task["id"]).spec
    assert (stored.deadline_seconds, stored.budget_usd) == (600, 5.0)
    assert stored.options["quality"] == 20


def test_plan_route_and_plan_command_refuse_the_same_coercions(api: ApiServer, tmp_path: Path) -> None:
    task = {"source": "/in/face.png", "target": "s3://media/group.png", "deadline_seconds": True}
    error = error_of(api.client(OPERATOR).post("/v1/plan", json={"task": task}), 422)
    assert error["field"] == "task.deadline_seconds"
    task_file = tmp_path / "task.json"
    task_file.write_text(json.dumps(task), encoding="utf-8")
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            "--policy",
            str(REPO / "policies" / "examples" / "seed-table.json"),
            "--signals",
            str(REPO / "policies" / "examples" / "snapshot.json"),
            "--task",
            str(task_file),
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 65, result.output
    assert "deadline_seconds" in result.stderr
