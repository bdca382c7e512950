"""Confused deputy on S3 (issue 13 item 6): per-tenant allow-lists, at submit and again in the worker.

Workers of every tenant share one storage credential (here moto's
``testing`` key, in server mode on 127.0.0.1), so the credential cannot stop
tenant B (``globex``) from naming tenant A's (``acme``) objects: the
allow-lists must. A's private bucket ``tenant-a-private`` holds a finished
result; B is granted ``s3://tenant-b/`` and a folder of a shared bucket.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from controlplane.config import Settings
from controlplane.domain import DataSensitivity, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.errors import InvalidSpec
from controlplane.domain.worker_spec import WorkerSpec, parse_worker_spec
from controlplane.policy import parse_policy
from controlplane.policy.storage import StorageError, StorageFile, parse_storage
from controlplane.runtime import standalone_scheduler
from controlplane.scheduler.workerspec import render_worker_spec, tenant_grants
from controlplane.store import Store, make_engine, upgrade
from faceswap import BadInput, run_swap
from faceswap.access import Access
from faceswap.errors import EXIT_BAD_INPUT
from providers.base import LaunchRequest, LaunchResult
from providers.noop import NoopProvider
from tests.support.api_fixtures import ACME, GLOBEX, ApiServer, stored_rows
from tests.support.aws import isolate_aws_environment
from tests.support.storage import write_storage

GRANTS: dict[str, dict[str, list[str]]] = {
    "acme": {
        "s3_read": ["s3://tenant-a-private/", "s3://shared-media/acme"],
        "s3_write": ["s3://tenant-a-private/out/"],
    },
    "globex": {
        "s3_read": ["s3://tenant-b/", "s3://shared-media/globex/"],
        "s3_write": ["s3://tenant-b/out/"],
    },
}
A_RESULT = "out/result.png"


# --------------------------------------------------------------------------- prefix matching (pure)


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        ("s3://tenant-b/in/face.png", True),
        ("s3://shared-media/globex/face.png", True),
        ("s3://tenant-a-private/in/face.png", False),
        ("s3://tenant-b-private/in/face.png", False),  # a bucket whose name starts like a granted one
        ("s3://shared-media/globex-old/face.png", False),  # a folder whose name starts like a granted one
        ("s3://shared-media/acme/face.png", False),
        ("s3://tenant-b/../tenant-a-private/in/face.png", False),
        ("s3://tenant-b/in/../../tenant-a-private/x.png", False),
        ("s3://tenant-b//in/face.png", False),
        ("s3://tenant-b/in/./face.png", False),
        ("s3://tenant-b/in/%2e%2e/face.png", False),
        ("s3://tenant-b/in%2Fface.png", False),
        ("s3://tenant-b/in\\face.png", False),
        ("s3://tenant-b/in/face.png?versionId=1", False),
        ("s3://tenant-b/in/face.png#x", False),
        ("s3://Tenant-B/in/face.png", False),
        ("s3://user@tenant-b/in/face.png", False),
    ],
)
def test_prefixes_match_on_bucket_and_folder_boundaries(uri: str, allowed: bool) -> None:
    access = Access.parse(web_hosts=["*"], **GRANTS["globex"])
    if allowed:
        access.check(uri, field="source")
    else:
        with pytest.raises(BadInput) as info:
            access.check(uri, field="source")
        assert info.value.field == "source"


def test_write_needs_a_write_grant() -> None:
    access = Access.parse(web_hosts=["*"], **GRANTS["globex"])
    access.check("s3://tenant-b/out/r.png", field="output", write=True)
    for uri in ("s3://tenant-b/in/r.png", "s3://tenant-a-private/out/result.png", "s3://tenant-b/outside.png"):
        with pytest.raises(BadInput, match="may not write"):
            access.check(uri, field="output", write=True)


def test_a_tenant_without_an_entry_gets_no_s3_and_only_public_web_hosts() -> None:
    policy = parse_storage({"version": 1, "tenants": GRANTS})
    nobody = policy.for_tenant("initech").access()
    with pytest.raises(BadInput, match="may not read"):
        nobody.check("s3://tenant-b/in/face.png", field="source")
    nobody.check("https://cdn.example.com/a.png", field="source")
    assert policy.for_tenant("globex").s3_read == ("s3://tenant-b/", "s3://shared-media/globex/")


# --------------------------------------------------------------------------- the document


@pytest.mark.parametrize(
    ("document", "path"),
    [
        ({"version": 2}, "version"),
        ({"version": 1, "tenants": []}, "tenants"),
        ({"version": 1, "tenants": {"Acme": {}}}, "tenants.Acme"),
        ({"version": 1, "tenants": {"acme": {"s3_read": "s3://a/"}}}, "tenants.acme.s3_read"),
        ({"version": 1, "tenants": {"acme": {"s3_read": ["s3://ok/", "https://x/"]}}}, "tenants.acme.s3_read[1]"),
        ({"version": 1, "tenants": {"acme": {"s3_write": ["s3://b/../c/"]}}}, "tenants.acme.s3_write[0]"),
        ({"version": 1, "tenants": {"acme": {"s3_read": ["s3://B_ad/"]}}}, "tenants.acme.s3_read[0]"),
        ({"version": 1, "tenants": {"acme": {"web_hosts": ["user@h.example"]}}}, "tenants.acme.web_hosts[0]"),
        ({"version": 1, "tenants": {"acme": {"s3_reads": []}}}, "tenants.acme.s3_reads"),
        ({"version": 1, "defaults": {"s3_read": ["s3://everyone/"]}}, "defaults.s3_read"),
    ],
)
def test_bad_documents_are_refused_naming_the_json_path(document: Any, path: str) -> None:
    with pytest.raises(StorageError) as info:
        parse_storage(document)
    assert info.value.path == path


def test_the_shipped_default_allows_public_web_hosts_and_no_s3() -> None:
    from controlplane.config import DEFAULT_STORAGE_PATH

    shipped = StorageFile(DEFAULT_STORAGE_PATH).current()
    assert shipped.tenants == {}
    assert shipped.for_tenant("anyone").spec_block() == {"s3_read": [], "s3_write": [], "web_hosts": ["*"]}


def test_the_file_is_reread_on_change_and_a_bad_edit_keeps_the_last_good(tmp_path: Path) -> None:
    now = [0.0]
    path = write_storage(tmp_path / "storage.json", {"globex": GRANTS["globex"]})
    storage = StorageFile(path, clock=lambda: now[0])
    assert storage.current().for_tenant("globex").s3_read
    write_storage(path, {})  # revoked
    now[0] += 2
    assert storage.current().for_tenant("globex").s3_read == ()
    path.write_text('{"version": 1, "tenants": {"globex": {"s3_read": ["nope"]}}}')
    now[0] += 2
    assert storage.current().for_tenant("globex").s3_read == ()
    assert storage.last_error is not None
    assert storage.last_error.startswith("tenants.globex.s3_read[0]")


# --------------------------------------------------------------------------- the worker spec


def _task(tenant: str, kind: TaskKind = TaskKind.IMAGE) -> Task:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Task(
        id="task_1",
        spec=TaskSpec(
            tenant=tenant,
            kind=kind,
            source_uri="s3://tenant-b/in/face.png",
            target_uri="s3://tenant-b/in/t.mp4",
            output_uri="s3://tenant-b/out/r.mp4",
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        state=TaskState.PLANNED,
        created_at=now,
        updated_at=now,
    )


def test_the_spec_carries_only_this_tenants_entries_and_its_own_checkpoint(tmp_path: Path) -> None:
    storage = StorageFile(write_storage(tmp_path / "storage.json", GRANTS))
    grant = {
        "access": storage.current().for_tenant("globex").spec_block(),
        "fetch": {"allow_internal_hosts": ["minio.corp.internal:9000"], "max_bytes": 1 << 20},
    }
    spec = render_worker_spec(
        task=_task("globex", TaskKind.VIDEO),
        attempt_id="att_1",
        token="t",
        callback_base="http://cp",
        checkpoint_root="s3://fp-checkpoints/ckpt",
        grant=grant,
    )
    parsed = WorkerSpec.model_validate(spec)
    assert parsed.access.s3_read == [
        "s3://tenant-b/",
        "s3://shared-media/globex/",
        "s3://fp-checkpoints/ckpt/globex/task_1/",
    ]
    assert parsed.access.s3_write == ["s3://tenant-b/out/", "s3://fp-checkpoints/ckpt/globex/task_1/"]
    assert "tenant-a-private" not in json.dumps(spec.wire_document())
    assert parsed.fetch.max_bytes == 1 << 20
    assert grant["access"]["s3_read"] == ["s3://tenant-b/", "s3://shared-media/globex/"]  # not changed in place


class SpecRecorder(NoopProvider):
    """A provider that keeps every worker spec it is handed."""

    def __init__(self) -> None:
        super().__init__(name="local")
        self.specs: list[dict[str, Any]] = []

    def launch(self, request: LaunchRequest) -> LaunchResult:
        self.specs.append(request.worker_spec.wire_document())
        return super().launch(request)


def test_the_scheduler_hands_each_attempt_its_own_tenants_grant_read_at_launch(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    store = Store(engine)
    path = write_storage(tmp_path / "storage.json", GRANTS)
    storage = StorageFile(path)
    settings = Settings(fetch_allow_hosts=("minio.corp.internal:9000",), fetch_max_bytes=1 << 20)
    provider = SpecRecorder()
    policy = parse_policy({"targets": [{"name": "local", "provider": "local", "private": True}], "rules": []})
    scheduler = standalone_scheduler(
        store=store,
        policy=lambda: policy,
        providers={"local": provider},
        scheduler_id="test",
        grants=tenant_grants(storage, settings),
    )
    for tenant in ("globex", "initech"):
        store.create_task(
            spec=TaskSpec(
                tenant=tenant,
                kind=TaskKind.IMAGE,
                source_uri="s3://tenant-b/in/face.png",
                target_uri="s3://tenant-b/in/t.png",
                output_uri="s3://tenant-b/out/r.png",
            ),
            request_hash=tenant,
        )
    write_storage(path, {"globex": GRANTS["globex"]})  # acme's entry removed after submit: read at launch
    storage.reload_now()
    assert scheduler.place_batch() == 2
    by_tenant = {spec["task_id"]: spec for spec in provider.specs}
    specs = {store.get_task(task_id).spec.tenant: spec for task_id, spec in by_tenant.items()}
    assert specs["globex"]["access"] == {**GRANTS["globex"], "web_hosts": ["*"]}
    assert specs["initech"]["access"] == {"s3_read": [], "s3_write": [], "web_hosts": ["*"]}
    assert specs["globex"]["fetch"]["allow_internal_hosts"] == ["minio.corp.internal:9000"]
    assert specs["globex"]["fetch"]["max_bytes"] == 1 << 20
    for spec in specs.values():
        assert "tenant-a-private" not in json.dumps(spec)
        WorkerSpec.model_validate(spec)
    engine.dispose()


# --------------------------------------------------------------------------- against moto


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        if server._server is not None:  # stop() leaves the listening socket open
            server._server.server_close()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, astronaut_path: Path) -> Any:
    """Buckets of both tenants; A's private bucket holds A's finished result."""
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    client = boto3.client("s3")
    for bucket in ("tenant-a-private", "tenant-b", "shared-media"):
        if bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}:
            client.create_bucket(Bucket=bucket)
    client.upload_file(str(astronaut_path), "tenant-a-private", "in/face.png")
    client.put_object(Bucket="tenant-a-private", Key=A_RESULT, Body=b"acme's result " + uuid.uuid4().bytes)
    client.upload_file(str(astronaut_path), "tenant-b", "in/face.png")
    client.upload_file(str(astronaut_path), "tenant-b", "in/target.png")
    return client


def _a_result(client: Any) -> tuple[bytes, str]:
    got = client.get_object(Bucket="tenant-a-private", Key=A_RESULT)
    return got["Body"].read(), got["ETag"]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiServer]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}")
    upgrade(engine=engine)
    with ApiServer.start(Store(engine), tmp_path, storage=GRANTS) as server:
        yield server
    engine.dispose()


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("source", "s3://tenant-a-private/in/face.png"),
        ("target", "s3://tenant-a-private/in/face.png"),
        ("output", f"s3://tenant-a-private/{A_RESULT}"),
        ("output", "s3://tenant-a-private/out/new.png"),
        ("source", "s3://tenant-b/../tenant-a-private/in/face.png"),
        ("source", "s3://tenant-b/in/%2e%2e/face.png"),
        ("source", "s3://shared-media/acme/face.png"),
        ("output", "s3://tenant-b/in/overwrite.png"),
    ],
)
def test_b_naming_a_prefix_it_is_not_granted_is_422(api: ApiServer, field: str, uri: str) -> None:
    before = stored_rows(api.store)
    body = {"source": "s3://tenant-b/in/face.png", "target": "s3://tenant-b/in/target.png", field: uri}
    response = api.client(GLOBEX).post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert stored_rows(api.store) == before


def test_each_tenant_submits_inside_its_own_grant(api: ApiServer) -> None:
    b = {"source": "s3://tenant-b/in/face.png", "target": "s3://tenant-b/in/target.png"}
    assert api.client(GLOBEX).post("/v1/tasks", json={**b, "output": "s3://tenant-b/out/r.png"}).status_code == 202
    a = {"source": "s3://tenant-a-private/in/face.png", "target": "s3://tenant-a-private/in/face.png"}
    response = api.client(ACME).post("/v1/tasks", json={**a, "output": f"s3://tenant-a-private/{A_RESULT}"})
    assert response.status_code == 202, response.text


def _forged_spec(tmp_path: Path, **uris: str) -> Path:
    """B's attempt (B's grant), naming whatever the forger likes."""
    spec: dict[str, Any] = {
        "task_id": "task-forged",
        "attempt_id": "att-forged",
        "source": "s3://tenant-b/in/face.png",
        "target": "s3://tenant-b/in/target.png",
        "output": "s3://tenant-b/out/result.png",
        "access": {**GRANTS["globex"], "web_hosts": ["*"]},
    }
    spec.update(uris)
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("field", "uris"),
    [
        ("output", {"output": f"s3://tenant-a-private/{A_RESULT}"}),
        ("source", {"source": "s3://tenant-a-private/in/face.png", "output": f"s3://tenant-a-private/{A_RESULT}"}),
        ("target", {"target": "s3://tenant-a-private/in/face.png"}),
        (
            "checkpoint",
            {
                "target": "s3://tenant-b/in/t.mp4",
                "output": "s3://tenant-b/out/r.mp4",
                "checkpoint": "s3://tenant-a-private/out",
            },
        ),
    ],
)
def test_a_forged_spec_naming_as_object_is_refused_by_the_worker(
    s3: Any, fusionctl: list[str], tmp_path: Path, field: str, uris: dict[str, str]
) -> None:
    before = _a_result(s3)
    done = subprocess.run(
        [*fusionctl, "worker", "run", "--spec", str(_forged_spec(tmp_path, **uris))],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    failed = [json.loads(line) for line in done.stderr.splitlines() if '"attempt_failed"' in line]
    assert [entry["field"] for entry in failed] == [field]
    assert "this tenant may not" in failed[0]["error"]
    assert _a_result(s3) == before
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket="tenant-a-private")["Contents"]) == [
        "in/face.png",
        A_RESULT,
    ]


def test_a_spec_without_an_access_block_may_use_no_s3(s3: Any, fusionctl: list[str], tmp_path: Path) -> None:
    path = tmp_path / "spec.json"
    spec = json.loads(_forged_spec(tmp_path).read_text())
    del spec["access"]
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [*fusionctl, "worker", "run", "--spec", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert '"field":"source","error":"this tenant may not read' in done.stderr


def test_an_s3_endpoint_in_a_forged_spec_grants_nothing(
    s3: Any, moto_endpoint: str, fusionctl: list[str], tmp_path: Path
) -> None:
    """``s3_endpoints`` says where a bucket is, never that the tenant may read it: the grant decides first."""
    path = tmp_path / "spec.json"
    spec = json.loads(_forged_spec(tmp_path, source="s3://tenant-a-private/in/face.png").read_text())
    spec["s3_endpoints"] = {"tenant-a-private": moto_endpoint}
    path.write_text(json.dumps(spec))
    done = subprocess.run(
        [*fusionctl, "worker", "run", "--spec", str(path)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert '"field":"source","error":"this tenant may not read' in done.stderr
    assert not [o for o in s3.list_objects_v2(Bucket="tenant-b").get("Contents", []) if o["Key"].startswith("out/")]


@pytest.mark.parametrize(
    "endpoints",
    [
        pytest.param({"tenant-b": "http://user:secret@127.0.0.1:9000"}, id="credentials in the URL"),
        pytest.param({"tenant-b": "https://minio.internal/x?X-Amz-Signature=abc"}, id="a query"),
        pytest.param({"tenant-b": "https://minio.internal/#frag"}, id="a fragment"),
        pytest.param({"tenant-b": "file:///etc/passwd"}, id="not http(s)"),
        pytest.param({"tenant-b": "gopher://127.0.0.1:70/"}, id="not http(s)"),
        pytest.param({"tenant-b": "https://minio.internal\n/x"}, id="a line break"),
        pytest.param({"Tenant_B": "https://minio.internal"}, id="not a bucket name"),
        pytest.param({"../tenant-b": "https://minio.internal"}, id="not a bucket name"),
        pytest.param({f"bucket-{n:03d}": "https://minio.internal" for n in range(65)}, id="more than 64 buckets"),
    ],
)
def test_a_bad_s3_endpoints_block_is_refused_naming_it(endpoints: dict[str, str]) -> None:
    base = {"task_id": "t", "attempt_id": "a", "source": "s", "target": "t.png", "output": "o.png"}
    with pytest.raises(InvalidSpec, match="s3_endpoints"):
        parse_worker_spec({**base, "s3_endpoints": endpoints})


def test_inside_its_grant_the_job_reads_and_writes(s3: Any, tmp_path: Path) -> None:
    access = Access.parse(web_hosts=["*"], **GRANTS["globex"])
    result = run_swap(
        source="s3://tenant-b/in/face.png",
        target="s3://tenant-b/in/target.png",
        output="s3://tenant-b/out/result.png",
        access=access,
    )
    assert result.output == "s3://tenant-b/out/result.png"
    assert s3.head_object(Bucket="tenant-b", Key="out/result.png")["ContentLength"] > 0
