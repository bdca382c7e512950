"""The output route tells another tenant nothing, and ids that are paths reach no file."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner

from controlplane.cli.main import cli
from controlplane.dataplane.objects import ObjectInfo
from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, GLOBEX, OPERATOR, ApiServer
from tests.support.loopback import serving

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)
    with ApiServer.start(Store(engine), tmp_path) as server:
        yield server


def acme_output(api: ApiServer, state: TaskState = TaskState.SUCCEEDED) -> str:
    output = api.output_root / "acme" / uuid.uuid4().hex / "secret.png"
    output.parent.mkdir(parents=True)
    output.write_bytes(b"acme's secret result")
    spec = TaskSpec(
        tenant="acme", kind=TaskKind.IMAGE, source_uri="s3://a/f.png", target_uri="s3://a/t.png", output_uri=str(output)
    )
    task, _ = api.store.create_task(spec=spec, request_hash=uuid.uuid4().hex)
    path = [TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED]
    for wanted in path[: path.index(state) + 1] if state in path else []:
        api.store.transition_task(task.id, wanted=wanted, actor="test", target="local")
    return task.id


@pytest.mark.parametrize("state", [TaskState.SUCCEEDED, TaskState.RUNNING, TaskState.QUEUED])
def test_another_tenant_gets_404_as_for_an_unknown_task(api: ApiServer, state: TaskState) -> None:
    """Not 403 and not 409: whether the task exists, or how far it got, is acme's business."""
    task_id = acme_output(api, state)
    theirs = api.client(GLOBEX).get(f"/v1/tasks/{task_id}/output", headers={"Range": "bytes=0-3"})
    unknown = api.client(GLOBEX).get("/v1/tasks/tsk_01NOSUCHTASK0000000000000/output")
    assert (theirs.status_code, unknown.status_code) == (404, 404)
    assert theirs.json()["error"]["message"].replace(task_id, "X") == unknown.json()["error"]["message"].replace(
        "tsk_01NOSUCHTASK0000000000000", "X"
    )
    assert b"secret" not in theirs.content
    # the owner and an operator do see it
    assert api.client(ACME).get(f"/v1/tasks/{task_id}/output").status_code in (200, 409)
    assert api.client(OPERATOR).get(f"/v1/tasks/{task_id}/output").status_code in (200, 409)


def test_no_token_is_401(api: ApiServer) -> None:
    task_id = acme_output(api)
    assert api.client().get(f"/v1/tasks/{task_id}/output").status_code == 401


@pytest.mark.parametrize(
    "task_id",
    [
        "..%2F..%2F..%2Fetc%2Fpasswd",
        "..",
        "%2e%2e",
        "%00",
        "tsk_%00..%2F",
        "%2Fetc%2Fpasswd",
        "a" * 5000,
        "tsk_'; DROP TABLE tasks; --",
    ],
)
def test_task_ids_that_are_paths_reach_no_file(api: ApiServer, task_id: str) -> None:
    acme_output(api)
    for token in (ACME, OPERATOR):
        answer = api.client(token).get(f"/v1/tasks/{task_id}/output")
        assert answer.status_code in (404, 422), answer.text
        assert b"secret" not in answer.content
        assert b"root:" not in answer.content
    assert api.store.list_tasks(tenant="acme", limit=10)[0]  # the table is still there


class _Recording(BaseHTTPRequestHandler):
    """A stand-in for a store's presigned URL: answers the object, remembers the headers it was sent."""

    seen: ClassVar[list[dict[str, str]]] = []

    def do_GET(self) -> None:
        type(self).seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"cloud bytes"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None


class _LinkOnlyStore:
    """An ObjectStore whose every object exists and whose presigned URL points at ``base``."""

    def __init__(self, base: str) -> None:
        self.base = base

    def head(self, uri: str) -> ObjectInfo | None:
        return ObjectInfo(uri=uri, size=11)

    def presign(self, uri: str, *, seconds: int) -> str | None:
        return f"{self.base}/{uri.rpartition('/')[2]}?X-Amz-Expires={seconds}&X-Amz-Signature=abc"


def test_fusionctl_never_sends_the_api_token_to_the_store(tmp_path: Path) -> None:
    """The 307's Location is a third party: the download goes there without the bearer token."""
    _Recording.seen.clear()
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), _Recording)) as fake:
        store = _LinkOnlyStore(f"http://127.0.0.1:{fake.server_address[1]}")
        with ApiServer.start(Store(engine), tmp_path, app={"stores": lambda _where: store}) as api:
            spec = TaskSpec(
                tenant="acme",
                kind=TaskKind.IMAGE,
                source_uri="s3://a/f.png",
                target_uri="s3://a/t.png",
                output_uri="s3://acme-bucket/out/result.png",
            )
            task, _ = api.store.create_task(spec=spec, request_hash="h")
            for wanted in (TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED):
                api.store.transition_task(task.id, wanted=wanted, actor="test", target="spot")
            result = CliRunner().invoke(
                cli, ["tasks", "output", task.id, "-o", str(tmp_path / "r.png"), "--url", api.url, "--token", ACME]
            )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.png").read_bytes() == b"cloud bytes"
    assert len(_Recording.seen) == 1
    assert "authorization" not in _Recording.seen[0]
    assert ACME not in str(_Recording.seen[0])
