"""``GET /v1/tasks/{id}/output``: a local output streamed with Range, an s3 output a 307 to a presigned URL.

The API runs on uvicorn (127.0.0.1); S3 is moto in server mode, driven by
the real boto3 client. moto does not enforce a presigned URL's expiry, so the
test checks the expiry the URL carries and its signing time, and that the URL
reads the object without any other credential.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from click.testing import CliRunner

from controlplane.cli.main import cli
from controlplane.dataplane.stores import Stores
from controlplane.domain import TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.store import Store, make_engine, upgrade
from tests.support.api_fixtures import ACME, OPERATOR, ApiServer
from tests.support.aws import isolate_aws_environment, moto_server

pytestmark = pytest.mark.timeout(60)

LINK_S = 42


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def bucket(moto_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[Any, str]:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    client = boto3.client("s3", endpoint_url=moto_url)
    name = f"fp-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return client, name


@pytest.fixture
def api(tmp_path: Path, moto_url: str) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path}/s.db")
    upgrade(engine=engine)

    def storage_of(tenant: str, target: str) -> TargetStorage | None:
        # the target "spot" names a bucket on moto; its endpoint is where the route signs
        return TargetStorage(kind=StorageKind.S3, root="s3://", endpoint_url=moto_url) if target == "spot" else None

    with ApiServer.start(
        Store(engine), tmp_path, output_link_seconds=LINK_S, app={"stores": Stores(), "storage_of": storage_of}
    ) as server:
        yield server


def finished(api: ApiServer, output_uri: str, *, target: str = "local", state: TaskState = TaskState.SUCCEEDED) -> str:
    spec = TaskSpec(
        tenant="acme",
        kind=TaskKind.VIDEO,
        source_uri="s3://in/face.png",
        target_uri="s3://in/clip.mp4",
        output_uri=output_uri,
    )
    task, _ = api.store.create_task(spec=spec, request_hash=uuid.uuid4().hex)
    path = [TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED]
    for wanted in path[: path.index(state) + 1] if state in path else []:
        api.store.transition_task(task.id, wanted=wanted, actor="test", target=target)
    return task.id


def test_a_local_output_streams_whole_and_by_range(api: ApiServer) -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    output = api.output_root / "acme" / "out" / "swapped.mp4"
    output.parent.mkdir(parents=True)
    output.write_bytes(data)
    task_id = finished(api, str(output))
    client = api.client(ACME)

    whole = client.get(f"/v1/tasks/{task_id}/output")
    assert (whole.status_code, whole.content) == (200, data)
    assert whole.headers["accept-ranges"] == "bytes"

    part = client.get(f"/v1/tasks/{task_id}/output", headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
    assert part.content == data[1000:2000]

    resume = client.get(f"/v1/tasks/{task_id}/output", headers={"Range": f"bytes={len(data) - 10}-"})
    assert (resume.status_code, resume.content) == (206, data[-10:])
    tail = client.get(f"/v1/tasks/{task_id}/output", headers={"Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, data[-5:])

    beyond = client.get(f"/v1/tasks/{task_id}/output", headers={"Range": f"bytes={len(data) + 1}-"})
    assert beyond.status_code == 416
    assert api.client(OPERATOR).get(f"/v1/tasks/{task_id}/output").content == data


@pytest.mark.parametrize("state", [TaskState.QUEUED, TaskState.LAUNCHING, TaskState.RUNNING])
def test_409_until_the_task_has_succeeded(api: ApiServer, state: TaskState) -> None:
    task_id = finished(api, str(api.output_root / "acme" / "o.png"), state=state)
    answer = api.client(ACME).get(f"/v1/tasks/{task_id}/output")
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["field"] == "state"
    assert f"the task is {state.value}" in error["message"]
    assert "once it has succeeded" in error["message"]


def test_an_s3_output_is_a_307_to_a_short_presigned_url(api: ApiServer, bucket: tuple[Any, str]) -> None:
    client, name = bucket
    client.put_object(Bucket=name, Key="aws/acme/t/output.mp4", Body=b"swapped video bytes")
    task_id = finished(api, f"s3://{name}/aws/acme/t/output.mp4", target="spot")
    before = datetime.now(UTC).replace(microsecond=0)

    answer = api.client(ACME).get(f"/v1/tasks/{task_id}/output", follow_redirects=False)
    assert answer.status_code == 307
    assert answer.headers["cache-control"] == "no-store"
    link = answer.headers["location"]
    query = parse_qs(urlsplit(link).query)
    assert query["X-Amz-Expires"] == [str(LINK_S)]
    signed = datetime.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert before <= signed <= datetime.now(UTC)
    assert "testing" not in link.split("X-Amz-Credential", 1)[0]  # no secret in the URL, only the key id

    fetched = httpx.get(link)  # no token, no AWS credentials: the URL alone reads the object
    assert (fetched.status_code, fetched.content) == (200, b"swapped video bytes")
    assert urlsplit(link).path == f"/{name}/aws/acme/t/output.mp4"


def test_an_s3_output_that_is_gone_is_410(api: ApiServer, bucket: tuple[Any, str]) -> None:
    _client, name = bucket
    task_id = finished(api, f"s3://{name}/aws/acme/t/missing.mp4", target="spot")
    answer = api.client(ACME).get(f"/v1/tasks/{task_id}/output", follow_redirects=False)
    assert answer.status_code == 410
    assert answer.json()["error"]["field"] == "output"


def test_fusionctl_tasks_output_downloads_local_and_s3_outputs(
    api: ApiServer, bucket: tuple[Any, str], tmp_path: Path
) -> None:
    client, name = bucket
    local = api.output_root / "acme" / "o1" / "swapped.png"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"local pixels")
    local_task = finished(api, str(local))
    client.put_object(Bucket=name, Key="aws/acme/t/output.mp4", Body=b"cloud video")
    cloud_task = finished(api, f"s3://{name}/aws/acme/t/output.mp4", target="spot")
    runner = CliRunner()
    auth = ["--url", api.url, "--token", ACME]

    result = runner.invoke(cli, ["tasks", "output", local_task, "-o", str(tmp_path / "mine.png"), *auth])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mine.png").read_bytes() == b"local pixels"

    result = runner.invoke(cli, ["tasks", "output", cloud_task, "-o", str(tmp_path / "video.mp4"), *auth])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "video.mp4").read_bytes() == b"cloud video"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []

    queued = finished(api, str(api.output_root / "acme" / "later.png"), state=TaskState.QUEUED)
    result = runner.invoke(cli, ["tasks", "output", queued, "-o", str(tmp_path / "later.png"), *auth])
    assert result.exit_code == 1
    assert "once it has succeeded (HTTP 409)" in result.output
    assert not (tmp_path / "later.png").exists()
