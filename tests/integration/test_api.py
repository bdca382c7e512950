"""The REST API on a real uvicorn (127.0.0.1), over SQLite and the real PostgreSQL.

Every refused request is checked twice: the JSON error names the field, and
the store holds exactly what it held before (tasks, events, attempts).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from controlplane.domain import AttemptState, Candidate, PlacementPlan, TaskState
from controlplane.store import Store, make_engine
from controlplane.store.tables import attempts
from tests.support.api_fixtures import ACME, GLOBEX, METRICS, OPERATOR, TENANT_OF, ApiServer, attempt_token, stored_rows

# fixtures: a session PostgreSQL and `database_url` / `engine` / `store` on both databases
pytest_plugins = ["tests.integration.store_fixtures"]

MAX_BODY = 2048
MAX_UPLOAD = 4096


@pytest.fixture
def start_api(store: Store, tmp_path: Path) -> Iterator[Callable[..., ApiServer]]:
    """Start servers over the test's store (both backends); all stopped at teardown."""
    started: list[ApiServer] = []

    def start(**overrides: Any) -> ApiServer:
        overrides.setdefault("max_body_bytes", MAX_BODY)
        overrides.setdefault("max_upload_bytes", MAX_UPLOAD)
        server = ApiServer.start(store, tmp_path, **overrides)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def api(start_api: Callable[..., ApiServer]) -> ApiServer:
    return start_api()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    """The JSON error of a refused request, checked for shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert {"code", "message", "field"} <= set(error)
    assert isinstance(error["code"], str)
    assert error["code"]
    assert isinstance(error["message"], str)
    assert error["message"]
    return error


def submit(api: ApiServer, token: str = ACME, **body: Any) -> dict[str, Any]:
    response = api.client(token).post("/v1/tasks", json=api.body(tenant=TENANT_OF[token], **body))
    assert response.status_code == 202, response.text
    return response.json()


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer fp_not-a-known-token"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {ACME}"},
        {"Authorization": ACME},
    ],
    ids=["none", "wrong", "empty", "basic", "no-scheme"],
)
def test_requests_without_a_valid_token_are_401(api: ApiServer, headers: dict[str, str]) -> None:
    before = stored_rows(api.store)
    client = api.client(**headers)
    for method, path in (("GET", "/v1/tasks"), ("GET", "/v1/tasks/tsk_x"), ("POST", "/v1/tasks/tsk_x/cancel")):
        assert error_of(client.request(method, path), 401)["field"] == "authorization"
    assert error_of(client.post("/v1/tasks", json=api.body()), 401)["code"] == "unauthenticated"
    assert stored_rows(api.store) == before


def test_a_task_shows_its_estimated_cloud_cost_so_far(api: ApiServer) -> None:
    cloudy, local = submit(api, ACME), submit(api, ACME)
    started = api.store.now() - timedelta(hours=2)
    offer = Candidate(target="aws", provider="aws", private=False, region="us-east-1", instance_type="g4dn.xlarge")
    priced = dataclasses.replace(offer, expected_usd_h=0.6)
    api.store.record_decision(
        plan=PlacementPlan(
            task_id=cloudy["id"], policy_version="v", decided_at=started, candidates=(priced,), rejections=()
        )
    )
    api.store.create_attempt(
        task_id=cloudy["id"],
        target="aws",
        provider="aws",
        token_sha256="0" * 64,
        region="us-east-1",
        instance_type="g4dn.xlarge",
    )
    with api.store.engine.begin() as conn:  # launched two hours ago, still launching: it costs from then
        conn.execute(attempts.update().where(attempts.c.task_id == cloudy["id"]).values(created_at=started))
    acme = api.client(ACME)
    listed = {t["id"]: t["cost"] for t in acme.get("/v1/tasks").json()["tasks"]}
    assert listed[local["id"]] == {"estimated_usd": 0.0, "unpriced_attempts": 0}
    assert listed[cloudy["id"]]["estimated_usd"] == pytest.approx(1.2, abs=0.01)
    assert acme.get(f"/v1/tasks/{cloudy['id']}").json()["cost"]["estimated_usd"] == pytest.approx(1.2, abs=0.01)


def test_submitters_see_only_their_own_tenant(api: ApiServer) -> None:
    mine = submit(api, ACME)
    theirs = submit(api, GLOBEX)
    acme, globex, ops = api.client(ACME), api.client(GLOBEX), api.client(OPERATOR)
    assert mine["tenant"] == "acme"
    assert theirs["tenant"] == "globex"

    for path in (f"/v1/tasks/{mine['id']}", f"/v1/tasks/{mine['id']}/events"):
        assert error_of(globex.get(path), 403)["field"] == "task_id"
    # the output answers as if the task did not exist (tests/security/test_output_route.py)
    assert error_of(globex.get(f"/v1/tasks/{mine['id']}/output"), 404)["field"] == "task_id"
    before = stored_rows(api.store)
    assert error_of(globex.post(f"/v1/tasks/{mine['id']}/cancel"), 403)["code"] == "forbidden"
    assert stored_rows(api.store) == before
    assert api.store.get_task(mine["id"]).state == TaskState.QUEUED

    assert [t["id"] for t in acme.get("/v1/tasks").json()["tasks"]] == [mine["id"]]
    assert [t["id"] for t in globex.get("/v1/tasks").json()["tasks"]] == [theirs["id"]]
    assert acme.get("/v1/tasks", params={"tenant": "acme"}).status_code == 200
    assert error_of(acme.get("/v1/tasks", params={"tenant": "globex"}), 403)["field"] == "tenant"

    # operators see every tenant, filter by tenant, and read receipts; submitters may not
    assert {t["id"] for t in ops.get("/v1/tasks").json()["tasks"]} == {mine["id"], theirs["id"]}
    assert [t["id"] for t in ops.get("/v1/tasks", params={"tenant": "globex"}).json()["tasks"]] == [theirs["id"]]
    assert ops.get(f"/v1/tasks/{mine['id']}").status_code == 200
    receipt = ops.get(f"/v1/tasks/{mine['id']}/decision")
    assert receipt.status_code == 200
    assert receipt.json() == {
        "task": {**mine, "updated_at": receipt.json()["task"]["updated_at"]},
        "decisions": [],
        "attempts": [],
    }
    assert error_of(acme.get(f"/v1/tasks/{mine['id']}/decision"), 403)["field"] == "authorization"


def test_insecure_dev_mode_needs_no_token(start_api: Callable[..., ApiServer]) -> None:
    api = start_api(insecure_dev=True)
    client = api.client()
    created = client.post("/v1/tasks", json=api.body(tenant="dev"))
    assert created.status_code == 202, created.text
    assert created.json()["tenant"] == "dev"
    assert client.get(f"/v1/tasks/{created.json()['id']}/decision").status_code == 200


# --------------------------------------------------------------------------- submit


def test_submit_returns_202_with_location_and_the_task(api: ApiServer) -> None:
    client = api.client(ACME)
    body = api.body(priority="high", data_sensitivity="private", deadline_seconds=600, labels={"team": "vfx"})
    response = client.post("/v1/tasks", json=body)
    assert response.status_code == 202, response.text
    task = response.json()
    assert response.headers["location"] == f"/v1/tasks/{task['id']}"
    assert task["state"] == "queued"
    assert task["tenant"] == "acme"
    assert task["kind"] == "image"
    assert task["source_uri"] == body["source"]
    assert task["target_uri"] == body["target"]
    assert (task["priority"], task["data_sensitivity"], task["deadline_seconds"]) == ("high", "private", 600)
    assert task["labels"] == {"team": "vfx"}
    assert task["options"]["swapper"] == "classic"
    output = Path(task["output_uri"])
    assert output.suffix == ".png"
    assert output.is_relative_to(api.output_root / "acme")

    shown = client.get(response.headers["location"])
    assert shown.status_code == 200
    assert shown.json() == {**task, "attempts": []}
    events = client.get(f"/v1/tasks/{task['id']}/events").json()["events"]
    assert [(e["kind"], e["to_state"]) for e in events] == [("task.created", "queued")]


@pytest.mark.parametrize(
    ("target", "kind", "suffix"),
    [("clip.mp4", "video", ".mp4"), ("clip.webm", "video", ".mp4"), ("still.JPG", "image", ".jpg")],
)
def test_kind_is_inferred_from_the_target_suffix(api: ApiServer, target: str, kind: str, suffix: str) -> None:
    task = submit(api, target=api.image(target))
    assert task["kind"] == kind
    assert Path(task["output_uri"]).suffix == suffix


def test_explicit_output_under_the_output_root(start_api: Callable[..., ApiServer]) -> None:
    api = start_api(storage={"acme": {"s3_read": ["s3://bucket/"], "s3_write": ["s3://b/"], "web_hosts": ["*"]}})
    task = submit(api, output="acme/mine/result.png")
    assert task["output_uri"] == str(api.output_root / "acme" / "mine" / "result.png")
    remote = submit(api, source="s3://bucket/face.png", target="https://example.com/t.png", output="s3://b/o.png")
    assert (remote["source_uri"], remote["output_uri"]) == ("s3://bucket/face.png", "s3://b/o.png")


def test_idempotency_key_replays_and_conflicts(api: ApiServer) -> None:
    client = api.client(ACME, **{"Idempotency-Key": "order-42"})
    body = api.body(labels={"run": "1"})
    first = client.post("/v1/tasks", json=body)
    assert first.status_code == 202, first.text
    rows = stored_rows(api.store)
    again = client.post("/v1/tasks", json=body)
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert stored_rows(api.store) == rows

    conflict = client.post("/v1/tasks", json={**body, "priority": "urgent"})
    error = error_of(conflict, 409)
    assert (error["code"], error["field"]) == ("idempotency_conflict", "Idempotency-Key")
    assert error["task_id"] == first.json()["id"]
    assert stored_rows(api.store) == rows

    # keys belong to a tenant: another tenant's same key is a new task
    globex_body = api.body(tenant="globex", labels={"run": "1"})
    other = api.client(GLOBEX, **{"Idempotency-Key": "order-42"}).post("/v1/tasks", json=globex_body)
    assert other.status_code == 202, other.text
    assert other.json()["id"] != first.json()["id"]


# --------------------------------------------------------------------------- bad input


def _bad_bodies(api: ApiServer) -> list[tuple[str, Any, str]]:
    """(case, JSON body, field the error must name)."""
    root = api.input_root
    outside = root.parent / "secret.png"
    outside.write_bytes(b"not yours")
    link = root / "innocent.png"
    if not link.is_symlink():
        link.symlink_to(outside)
    good = api.body()
    without = {k: v for k, v in good.items() if k != "source"}
    return [
        ("missing-source", without, "source"),
        ("missing-target", {"source": good["source"]}, "target"),
        ("empty-object", {}, "source"),
        ("array-body", [good], "body"),
        ("bad-priority", {**good, "priority": "asap"}, "priority"),
        ("bad-sensitivity", {**good, "data_sensitivity": "secret"}, "data_sensitivity"),
        ("bad-kind", {**good, "kind": "audio"}, "kind"),
        ("bad-swapper", {**good, "options": {"swapper": "deepfake9000"}}, "options.swapper"),
        ("bad-quality", {**good, "options": {"quality": 99}}, "options.quality"),
        ("negative-deadline", {**good, "deadline_seconds": -5}, "deadline_seconds"),
        ("zero-deadline", {**good, "deadline_seconds": 0}, "deadline_seconds"),
        ("absurd-deadline", {**good, "deadline_seconds": 10**12}, "deadline_seconds"),
        ("text-deadline", {**good, "deadline_seconds": "soon"}, "deadline_seconds"),
        ("negative-budget", {**good, "budget_usd": -1}, "budget_usd"),
        ("ftp-source", {**good, "source": "ftp://example.com/face.png"}, "source"),
        ("gopher-target", {**good, "target": "gopher://example.com/t.png"}, "target"),
        ("s3-without-key", {**good, "source": "s3://bucket"}, "source"),
        ("traversal", {**good, "source": f"{root}/../secret.png"}, "source"),
        ("file-uri-traversal", {**good, "target": f"file://{root}/../../etc/passwd.png"}, "target"),
        ("symlink-out", {**good, "source": str(link)}, "source"),
        ("absolute-elsewhere", {**good, "source": "/etc/passwd"}, "source"),
        ("relative-path", {**good, "source": "face.png"}, "source"),
        ("output-outside", {**good, "output": "/tmp/elsewhere.png"}, "output"),
        ("output-traversal", {**good, "output": "../../escape.png"}, "output"),
        ("output-http", {**good, "output": "https://example.com/o.png"}, "output"),
        ("control-in-label", {**good, "labels": {"team": "vfx\x07"}}, "labels"),
        ("newline-in-label", {**good, "labels": {"team": "a\nb"}}, "labels"),
        ("control-in-uri", {**good, "source": good["source"] + "\x00"}, "source"),
        ("bad-label-key", {**good, "labels": {"Bad Key!": "x"}}, "labels"),
        ("too-many-labels", {**good, "labels": {f"k{i}": "v" for i in range(33)}}, "labels"),
        ("long-label-value", {**good, "labels": {"k": "v" * 257}}, "labels"),
        ("unknown-field", {**good, "colour": "blue"}, "colour"),
        ("unknown-option", {**good, "options": {"turbo": True}}, "options.turbo"),
        ("no-suffix-no-kind", {**good, "target": "https://example.com/download"}, "kind"),
    ]


BAD_CASE_IDS = [
    "missing-source",
    "missing-target",
    "empty-object",
    "array-body",
    "bad-priority",
    "bad-sensitivity",
    "bad-kind",
    "bad-swapper",
    "bad-quality",
    "negative-deadline",
    "zero-deadline",
    "absurd-deadline",
    "text-deadline",
    "negative-budget",
    "ftp-source",
    "gopher-target",
    "s3-without-key",
    "traversal",
    "file-uri-traversal",
    "symlink-out",
    "absolute-elsewhere",
    "relative-path",
    "output-outside",
    "output-traversal",
    "output-http",
    "control-in-label",
    "newline-in-label",
    "control-in-uri",
    "bad-label-key",
    "too-many-labels",
    "long-label-value",
    "unknown-field",
    "unknown-option",
    "no-suffix-no-kind",
]


def test_every_bad_body_is_a_4xx_naming_its_field_and_stores_nothing(api: ApiServer) -> None:
    client = api.client(ACME)
    cases = _bad_bodies(api)
    assert [c for c, *_ in cases] == BAD_CASE_IDS
    before = stored_rows(api.store)
    failures = []
    for case, body, field in cases:
        response = client.post("/v1/tasks", json=body)
        if response.status_code != 422:
            failures.append(f"{case}: {response.status_code} {response.text}")
            continue
        error = error_of(response, 422)
        if not str(error["field"]).startswith(field):
            failures.append(f"{case}: field {error['field']!r}, wanted {field!r}")
    assert not failures, "\n".join(failures)
    assert stored_rows(api.store) == before
    assert not any(api.output_root.rglob("*"))


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b'{"source": "/x", ', 422), (b"not json", 422), (b"", 422), (b"\xff\xfe\x00", 400)],
    ids=["truncated", "text", "empty", "not-utf8"],
)
def test_malformed_json_is_4xx_naming_the_body(api: ApiServer, raw: bytes, status: int) -> None:
    before = stored_rows(api.store)
    response = api.client(ACME).post("/v1/tasks", content=raw, headers={"content-type": "application/json"})
    assert error_of(response, status)["field"] == "body"
    assert stored_rows(api.store) == before


@pytest.mark.parametrize(
    "key", ["has space", "x" * 129, "semi;colon", "ünïcode"], ids=["space", "long", "semi", "utf8"]
)
def test_bad_idempotency_key_header_is_refused(api: ApiServer, key: str) -> None:
    before = stored_rows(api.store)
    response = api.client(ACME).post("/v1/tasks", json=api.body(), headers={"Idempotency-Key": key.encode("utf-8")})
    assert error_of(response, 422)["field"].lower() == "idempotency-key"
    assert stored_rows(api.store) == before


def test_oversized_bodies_are_413_before_parsing(api: ApiServer) -> None:
    client = api.client(ACME)
    before = stored_rows(api.store)
    big = json.dumps(api.body(labels={f"k{i}": "v" * 120 for i in range(32)})).encode()
    assert len(big) > 4000
    error = error_of(client.post("/v1/tasks", content=big, headers={"content-type": "application/json"}), 413)
    assert (error["code"], error["field"]) == ("body_too_large", "body")

    def chunks() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        for start in range(0, len(big), 512):
            yield big[start : start + 512]

    request = client.build_request("POST", "/v1/tasks", content=chunks(), headers={"content-type": "application/json"})
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert error_of(client.send(request), 413)["field"] == "body"
    assert stored_rows(api.store) == before
    # a body just under the limit still goes through
    assert client.post("/v1/tasks", json=api.body()).status_code == 202


def test_cancel(api: ApiServer) -> None:
    client = api.client(ACME)
    task = submit(api)
    cancelled = client.post(f"/v1/tasks/{task['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    before = stored_rows(api.store)
    error = error_of(client.post(f"/v1/tasks/{task['id']}/cancel"), 409)
    assert error["field"] == "state"
    assert "cancelled" in error["message"]
    # a succeeded task cannot be cancelled either
    done = submit(api)
    api.advance_to(done["id"], TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED)
    before = stored_rows(api.store)
    assert "succeeded" in error_of(client.post(f"/v1/tasks/{done['id']}/cancel"), 409)["message"]
    assert stored_rows(api.store) == before
    assert api.store.get_task(done["id"]).state == TaskState.SUCCEEDED


def test_unknown_task_is_404(api: ApiServer) -> None:
    before = stored_rows(api.store)
    for client in (api.client(ACME), api.client(OPERATOR)):
        for method, suffix in (("GET", ""), ("GET", "/events"), ("GET", "/output"), ("POST", "/cancel")):
            error = error_of(client.request(method, f"/v1/tasks/tsk_nope{suffix}"), 404)
            assert error["field"] == "task_id"
    assert error_of(api.client(OPERATOR).get("/v1/tasks/tsk_nope/decision"), 404)["field"] == "task_id"
    assert stored_rows(api.store) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"state": "bogus"}, "state"),
        ({"priority": "whenever"}, "priority"),
        ({"sensitivity": "top-secret"}, "sensitivity"),
        ({"created_after": "not-a-date"}, "created_after"),
        ({"created_after": "2026-01-01T00:00:00"}, "created_after"),
        ({"created_before": "yesterday"}, "created_before"),
        ({"target": "t" * 129}, "target"),
    ],
)
def test_bad_list_queries_are_422_naming_the_parameter(api: ApiServer, params: dict[str, str], field: str) -> None:
    assert error_of(api.client(OPERATOR).get("/v1/tasks", params=params), 422)["field"] == field


def test_bad_events_query(api: ApiServer) -> None:
    task = submit(api)
    assert error_of(api.client(ACME).get(f"/v1/tasks/{task['id']}/events", params={"after": -1}), 422)["field"] == (
        "after"
    )


# --------------------------------------------------------------------------- listing


def test_filters_and_cursor_pagination(api: ApiServer) -> None:
    priorities = ["low", "normal", "high", "urgent"]
    sensitivities = ["public", "internal", "private"]
    created = [submit(api, priority=priorities[i % 4], data_sensitivity=sensitivities[i % 3])["id"] for i in range(25)]
    client, ops = api.client(ACME), api.client(OPERATOR)
    for task_id in created[:3]:
        assert client.post(f"/v1/tasks/{task_id}/cancel").status_code == 200
    submit(api, GLOBEX)

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 10}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/v1/tasks", params=params)
        assert page.status_code == 200, page.text
        pages += 1
        seen += [t["id"] for t in page.json()["tasks"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(created))  # newest first, every task exactly once

    def ids(**params: Any) -> set[str]:
        response = ops.get("/v1/tasks", params={"tenant": "acme", "limit": 100, **params})
        assert response.status_code == 200, response.text
        return {t["id"] for t in response.json()["tasks"]}

    assert ids(state="cancelled") == set(created[:3])
    assert ids(state="queued") == set(created[3:])
    assert ids(priority="urgent") == {t for i, t in enumerate(created) if i % 4 == 3}
    assert ids(sensitivity="private") == {t for i, t in enumerate(created) if i % 3 == 2}
    assert ids(priority="low", sensitivity="public") == {t for i, t in enumerate(created) if i % 12 == 0}
    assert ids(state="running") == set()
    first = api.store.get_task(created[0]).created_at
    assert ids(created_before=first.isoformat()) == set()
    assert ids(created_after=first.isoformat().replace("+00:00", "Z")) == set(created)
    assert len(ops.get("/v1/tasks", params={"limit": 100}).json()["tasks"]) == 26


# --------------------------------------------------------------------------- worker callbacks


def launched(api: ApiServer, name: str = "a") -> tuple[str, str, str]:
    """A task in launching with an attempt; (task id, attempt id, the attempt's token)."""
    task = submit(api)
    api.advance_to(task["id"], TaskState.PLANNED, TaskState.LAUNCHING)
    token, digest = attempt_token(name)
    attempt = api.store.create_attempt(task_id=task["id"], target="local", provider="local", token_sha256=digest)
    return task["id"], attempt.id, token


def test_heartbeat_moves_the_attempt_and_task_to_running(api: ApiServer) -> None:
    task_id, attempt_id, token = launched(api)
    response = api.client(token).post(f"/v1/attempts/{attempt_id}/heartbeat", json={"progress": {"frames": 3}})
    assert response.status_code == 200, response.text
    assert api.store.get_attempt(attempt_id).state == AttemptState.RUNNING
    assert api.store.get_task(task_id).state == TaskState.RUNNING
    progress = api.client(token).post(f"/v1/attempts/{attempt_id}/progress", json={"frames": 7, "total": 10})
    assert progress.status_code == 200
    shown = api.client(ACME).get(f"/v1/tasks/{task_id}").json()
    assert shown["state"] == "running"
    assert shown["attempts"][0]["state"] == "running"
    assert shown["attempts"][0]["progress"] == {"frames": 7, "total": 10}
    assert shown["attempts"][0]["last_heartbeat_at"] is not None


def test_callbacks_need_the_attempts_own_token(api: ApiServer) -> None:
    task_id, attempt_id, _token = launched(api, "mine")
    _other_task, _other_attempt, other_token = launched(api, "other")
    before = stored_rows(api.store)
    for action in ("heartbeat", "progress", "complete", "fail"):
        path = f"/v1/attempts/{attempt_id}/{action}"
        assert error_of(api.client(other_token).post(path, json={}), 403)["field"] == "authorization"
        assert error_of(api.client(OPERATOR).post(path, json={}), 403)["code"] == "forbidden"
        assert error_of(api.client().post(path, json={}), 401)["field"] == "authorization"
        assert error_of(api.client(other_token).post(f"/v1/attempts/att_nope/{action}"), 404)["field"] == "attempt_id"
    assert stored_rows(api.store) == before
    assert api.store.get_attempt(attempt_id).state == AttemptState.LAUNCHING
    assert api.store.get_task(task_id).state == TaskState.LAUNCHING
    assert api.store.get_progress(attempt_id).last_heartbeat_at is None


def test_complete_then_a_late_fail_changes_nothing(api: ApiServer) -> None:
    task_id, attempt_id, token = launched(api)
    client = api.client(token)
    assert error_of(api.client(ACME).get(f"/v1/tasks/{task_id}/output"), 409)["field"] == "state"
    assert client.post(f"/v1/attempts/{attempt_id}/complete", json={"frames": 1}).status_code == 200
    assert api.store.get_attempt(attempt_id).state == AttemptState.SUCCEEDED
    assert api.store.get_task(task_id).state == TaskState.SUCCEEDED
    before = stored_rows(api.store)
    late = client.post(f"/v1/attempts/{attempt_id}/fail", json={"kind": "internal", "message": "too late"})
    assert late.status_code < 500
    assert stored_rows(api.store) == before
    assert api.store.get_attempt(attempt_id).state == AttemptState.SUCCEEDED
    assert api.store.get_task(task_id).state == TaskState.SUCCEEDED

    # the output: 410 until the file exists, then its bytes
    output = Path(api.store.get_task(task_id).spec.output_uri)
    assert error_of(api.client(ACME).get(f"/v1/tasks/{task_id}/output"), 410)["field"] == "output"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"swapped pixels")
    fetched = api.client(ACME).get(f"/v1/tasks/{task_id}/output")
    assert fetched.status_code == 200
    assert fetched.content == b"swapped pixels"


def test_complete_stores_the_execution_provider_the_worker_reports(api: ApiServer) -> None:
    _task_id, attempt_id, token = launched(api)
    body = {"frames": 1, "execution_provider": "cuda", "execution_provider_reason": "tensorrt: libnvinfer.so.10: x"}
    assert api.client(token).post(f"/v1/attempts/{attempt_id}/complete", json=body).status_code == 200
    assert dict(api.store.get_progress(attempt_id).progress) == body


def test_fail_preempted_ends_the_attempt_and_leaves_the_task_to_failover(api: ApiServer) -> None:
    """A preemption is retryable: the callback ends the attempt only; the scheduler re-plans the task."""
    task_id, attempt_id, token = launched(api)
    client = api.client(token)
    assert client.post(f"/v1/attempts/{attempt_id}/heartbeat").status_code == 200
    response = client.post(
        f"/v1/attempts/{attempt_id}/fail", json={"kind": "preempted", "message": "spot reclaimed", "exit_code": 143}
    )
    assert response.status_code == 200, response.text
    attempt, task = api.store.get_attempt(attempt_id), api.store.get_task(task_id)
    assert attempt.state == AttemptState.PREEMPTED
    assert attempt.exit_code == 143
    assert attempt.reason is not None
    assert "preempted" in attempt.reason
    assert "spot reclaimed" in attempt.reason
    # not failed: it waits, with no live attempt, for the scheduler's failover (follow)
    assert task.state == TaskState.RUNNING
    assert task.reason is None
    (awaiting,) = api.store.attempts_awaiting_failover()
    assert awaiting.id == attempt_id
    body = api.client(ACME).get(f"/v1/tasks/{task_id}").json()
    assert body["state"] == "running"
    assert body["attempts"][-1]["state"] == "preempted"


@pytest.mark.parametrize("raw", [b"not json", b"[1, 2]", b'"text"'], ids=["text", "array", "string"])
def test_callback_body_must_be_a_json_object(api: ApiServer, raw: bytes) -> None:
    task_id, attempt_id, token = launched(api)
    before = stored_rows(api.store)
    for action in ("heartbeat", "complete", "fail"):
        response = api.client(token).post(f"/v1/attempts/{attempt_id}/{action}", content=raw)
        assert error_of(response, 422)["field"] == "body"
    assert stored_rows(api.store) == before
    assert api.store.get_task(task_id).state == TaskState.LAUNCHING


# --------------------------------------------------------------------------- uploads


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_upload_then_submit_it(api: ApiServer) -> None:
    client = api.client(ACME)
    response = client.put("/v1/uploads/face-1.png", content=b"\x89PNG\r\n\x1a\n face bytes")
    assert response.status_code == 201, response.text
    uri = Path(response.json()["uri"])
    assert response.json()["bytes"] == len(b"\x89PNG\r\n\x1a\n face bytes")
    assert uri.name == "face-1.png"
    assert uri.is_relative_to(api.input_root / "acme")
    assert uri.read_bytes() == b"\x89PNG\r\n\x1a\n face bytes"
    task = submit(api, source=str(uri))
    assert task["source_uri"] == str(uri)


@pytest.mark.parametrize(
    ("name", "statuses"),
    [
        ("..", (404, 422)),
        (".hidden", (422,)),
        ("a/b.png", (404, 422)),
        ("a%2Fb.png", (404, 422)),
        ("with%20space.png", (422,)),
        ("semi%3Bcolon.png", (422,)),
        ("x" * 129, (422,)),
    ],
)
def test_bad_upload_names_are_refused(api: ApiServer, name: str, statuses: tuple[int, ...]) -> None:
    response = api.client(ACME).put(f"/v1/uploads/{name}", content=b"data")
    assert response.status_code in statuses, response.text
    error_of(response, response.status_code)
    assert files_under(api.input_root) == []


def test_empty_and_oversized_uploads_leave_nothing(api: ApiServer) -> None:
    client = api.client(ACME)
    assert error_of(client.put("/v1/uploads/empty.png", content=b""), 422)["field"] == "body"
    error = error_of(client.put("/v1/uploads/big.png", content=b"x" * (MAX_UPLOAD + 1)), 413)
    assert (error["code"], error["field"]) == ("body_too_large", "body")

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b"y" * 1024

    assert client.put("/v1/uploads/chunked.png", content=chunks()).status_code == 413
    assert files_under(api.input_root) == []
    assert list(api.input_root.rglob("*")) in ([], [api.input_root / "acme"])


def test_upload_needs_a_token(api: ApiServer) -> None:
    assert error_of(api.client().put("/v1/uploads/face.png", content=b"data"), 401)["field"] == "authorization"
    assert files_under(api.input_root) == []


# --------------------------------------------------------------------------- health, metrics, schema


def test_health_readiness_and_openapi(api: ApiServer) -> None:
    client = api.client()
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    schema = client.get("/openapi.json")
    assert schema.status_code == 200
    document = schema.json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/tasks", "/v1/tasks/{task_id}", "/v1/attempts/{attempt_id}/heartbeat"} <= set(document["paths"])


def test_readyz_is_503_on_a_database_never_migrated(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url)
    try:
        with ApiServer.start(Store(engine), tmp_path) as api:
            response = api.client(OPERATOR).get("/readyz")
            error = error_of(response, 503)
            assert error["code"] == "not_ready"
            assert "migrations" in error["message"]
            assert api.client().get("/healthz").status_code == 200
    finally:
        engine.dispose()


def test_readyz_is_503_when_the_database_is_unreachable(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'db.sqlite'}")
    try:
        with ApiServer.start(Store(engine), tmp_path) as api:
            assert error_of(api.client(OPERATOR).get("/readyz"), 503)["code"] == "not_ready"
    finally:
        engine.dispose()


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics(api: ApiServer) -> None:
    client = api.client(ACME, **{"Idempotency-Key": "k1"})
    ids = [submit(api)["id"] for _ in range(3)]
    assert client.post("/v1/tasks", json=api.body()).status_code == 202
    assert client.post("/v1/tasks", json=api.body()).status_code == 202  # replay
    assert client.post("/v1/tasks", json=api.body(priority="low")).status_code == 409
    assert client.post(f"/v1/tasks/{ids[0]}/cancel").status_code == 200
    _task, attempt_id, _token = launched(api)
    api.client("wrong").post(f"/v1/attempts/{attempt_id}/heartbeat")

    response = api.client(METRICS).get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text)
    assert samples[("fusionplane_tasks", (("state", "queued"),))] == 3.0
    assert samples[("fusionplane_tasks", (("state", "cancelled"),))] == 1.0
    assert samples[("fusionplane_tasks", (("state", "launching"),))] == 1.0
    assert samples[("fusionplane_tasks", (("state", "succeeded"),))] == 0.0
    assert samples[("fusionplane_submissions_total", (("outcome", "created"),))] == 5.0
    assert samples[("fusionplane_submissions_total", (("outcome", "replayed"),))] == 1.0
    assert samples[("fusionplane_submissions_total", (("outcome", "conflict"),))] == 1.0
    assert samples[("fusionplane_callbacks_rejected_total", (("reason", "wrong_token"),))] == 1.0
    names = {family.name for family in text_string_to_metric_families(response.text)}
    assert {"fusionplane_plan_seconds", "fusionplane_tasks", "fusionplane_submissions"} <= names
