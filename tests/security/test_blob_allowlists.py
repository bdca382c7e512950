"""Confused deputy on Azure Blob Storage: az_read / az_write allow-lists, at submit and again in the worker.

Workers of every tenant share one storage credential (here Azurite's
well-known account key), so the credential cannot stop tenant B (``globex``)
from naming tenant A's (``acme``) blobs: the allow-lists must. A's container
``tenant-a-private`` holds a finished result; B is granted its own container
and a folder of a shared one. Hostile URIs (``..``, percent-encoding, another
account, a SAS token in the query) are refused naming the field.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobServiceClient

from controlplane.domain import DataSensitivity, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.errors import InvalidSpec
from controlplane.domain.worker_spec import parse_worker_spec
from controlplane.policy.storage import StorageError, parse_storage
from controlplane.scheduler.workerspec import render_worker_spec
from controlplane.store import Store, make_engine, upgrade
from faceswap import BadInput, run_swap
from faceswap.access import Access
from faceswap.checkpoint import open_checkpoint
from faceswap.errors import EXIT_BAD_INPUT
from faceswap.uris import parse_uri
from tests.support.api_fixtures import ACME, GLOBEX, ApiServer, stored_rows
from tests.support.azurite import ACCOUNT, Azurite

B = f"az://{ACCOUNT}/tenant-b"
A_PRIVATE = f"az://{ACCOUNT}/tenant-a-private"
GRANTS: dict[str, dict[str, list[str]]] = {
    "acme": {"az_read": [f"{A_PRIVATE}/", f"az://{ACCOUNT}/shared-media/acme"], "az_write": [f"{A_PRIVATE}/out/"]},
    "globex": {
        "az_read": [f"{B}/", f"az://{ACCOUNT}/shared-media/globex/"],
        "az_write": [f"{B}/out/"],
    },
}
A_RESULT = "out/result.png"


# --------------------------------------------------------------------------- prefix matching (pure)


@pytest.mark.parametrize(
    ("uri", "allowed"),
    [
        (f"{B}/in/face.png", True),
        (f"az://{ACCOUNT}/shared-media/globex/face.png", True),
        (f"{A_PRIVATE}/in/face.png", False),  # another tenant's container
        (f"az://{ACCOUNT}/tenant-b-private/in/face.png", False),  # a container whose name starts like a granted one
        (f"az://{ACCOUNT}/shared-media/globex-old/face.png", False),  # a folder that starts like a granted one
        (f"az://{ACCOUNT}/shared-media/acme/face.png", False),  # another tenant's folder of a shared container
        ("az://otheraccount/tenant-b/in/face.png", False),  # the same container name in another account
        (f"{B}/../tenant-a-private/in/face.png", False),
        (f"{B}/in/../../tenant-a-private/x.png", False),
        (f"{B}//in/face.png", False),
        (f"{B}/in/./face.png", False),
        (f"{B}/in/%2e%2e/face.png", False),
        (f"{B}/in%2Fface.png", False),
        (f"{B}/in\\face.png", False),
        (f"{B}/in/face.png?sv=2024-08-04&sr=b&sp=r&sig=abc", False),  # a SAS token riding in the URI
        (f"{B}/in/face.png?snapshot=2024-01-01", False),
        (f"{B}/in/face.png#x", False),
        (f"az://{ACCOUNT.upper()}/tenant-b/in/face.png", False),
        (f"az://{ACCOUNT}/Tenant-B/in/face.png", False),
        (f"az://user@{ACCOUNT}/tenant-b/in/face.png", False),
        (f"az://{ACCOUNT}:443/tenant-b/in/face.png", False),
        (f"az://{ACCOUNT}/tenant--b/in/face.png", False),
        (f"az://{ACCOUNT}/tenant-b", False),  # no blob
        (f"az://{ACCOUNT}/", False),
    ],
)
def test_prefixes_match_on_account_container_and_folder_boundaries(uri: str, allowed: bool) -> None:
    access = Access.parse(s3_read=[], s3_write=[], web_hosts=["*"], **GRANTS["globex"])
    if allowed:
        access.check(uri, field="source")
    else:
        with pytest.raises(BadInput) as info:
            access.check(uri, field="source")
        assert info.value.field == "source"


def test_write_needs_a_write_grant() -> None:
    access = Access.parse(s3_read=[], s3_write=[], web_hosts=["*"], **GRANTS["globex"])
    access.check(f"{B}/out/r.png", field="output", write=True)
    for uri in (f"{B}/in/r.png", f"{A_PRIVATE}/{A_RESULT}", f"{B}/outside.png"):
        with pytest.raises(BadInput, match="may not write") as info:
            access.check(uri, field="output", write=True)
        assert info.value.field == "output"


def test_a_checkpoint_needs_read_and_write() -> None:
    access = Access.parse(s3_read=[], s3_write=[], web_hosts=["*"], **GRANTS["globex"])
    access.check_checkpoint(f"{B}/out/ckpt/task-1")
    for uri in (f"{B}/in/ckpt", f"{A_PRIVATE}/out/ckpt", f"{B}/out/ckpt?sig=x"):
        with pytest.raises(BadInput) as info:
            access.check_checkpoint(uri)
        assert info.value.field == "checkpoint"


def test_a_tenant_without_an_entry_gets_no_blob_storage() -> None:
    policy = parse_storage({"version": 1, "tenants": GRANTS})
    with pytest.raises(BadInput, match="may not read"):
        policy.for_tenant("initech").access().check(f"{B}/in/face.png", field="source")
    assert "az_read" not in policy.for_tenant("initech").spec_block()
    assert policy.for_tenant("globex").spec_block()["az_write"] == [f"{B}/out/"]


@pytest.mark.parametrize(
    ("uri", "field"),
    [
        (f"{B}/in/face.png?sv=2024&sig=abc", "source"),
        (f"{B}/in/%2e%2e/face.png", "target"),
        (f"az://{ACCOUNT}/tenant-b/", "output"),
        ("az://a/tenant-b/x.png", "source"),  # an account name too short to exist
    ],
)
def test_the_worker_refuses_a_hostile_uri_before_it_has_an_access_check(uri: str, field: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_uri(uri, field=field)
    assert info.value.field == field


# --------------------------------------------------------------------------- the documents


@pytest.mark.parametrize(
    ("grant", "path"),
    [
        ({"az_read": [f"az://{ACCOUNT}/"]}, "tenants.acme.az_read[0]"),  # a whole account is never granted
        ({"az_read": [f"{B}/../tenant-a-private/"]}, "tenants.acme.az_read[0]"),
        ({"az_write": [f"{B}/out/?sv=1&sig=x"]}, "tenants.acme.az_write[0]"),
        ({"az_read": [f"{B}/ok/", "s3://bucket/"]}, "tenants.acme.az_read[1]"),
        ({"az_read": [f"az://{ACCOUNT}/B_ad/"]}, "tenants.acme.az_read[0]"),
        ({"az_read": f"{B}/"}, "tenants.acme.az_read"),
        ({"az_reads": []}, "tenants.acme.az_reads"),
    ],
)
def test_bad_blob_prefixes_in_the_storage_document_name_their_path(grant: dict[str, Any], path: str) -> None:
    with pytest.raises(StorageError) as info:
        parse_storage({"version": 1, "tenants": {"acme": grant}})
    assert info.value.path == path


def test_a_spec_cannot_carry_a_sas_or_a_credential_in_its_blob_fields() -> None:
    base = {"task_id": "t", "attempt_id": "a", "source": "s", "target": "t.png", "output": "o.png"}
    for extra, where in (
        ({"access": {"az_read": [f"{B}/in/?sig=abc"]}}, "access.az_read.0"),
        ({"blob_endpoints": {ACCOUNT: "http://user:pass@127.0.0.1:1/x"}}, "blob_endpoints"),
        ({"blob_endpoints": {"Bad.Account": "https://example.test"}}, "blob_endpoints"),
        ({"blob_endpoints": {ACCOUNT: "https://host.test/x?sig=abc"}}, "blob_endpoints"),
    ):
        with pytest.raises(InvalidSpec, match=where):
            parse_worker_spec({**base, **extra})


def test_the_spec_carries_this_tenants_blob_grant_and_its_own_az_checkpoint() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    task = Task(
        id="task_1",
        spec=TaskSpec(
            tenant="globex",
            kind=TaskKind.VIDEO,
            source_uri=f"{B}/in/face.png",
            target_uri=f"{B}/in/t.mp4",
            output_uri=f"{B}/out/r.mp4",
            data_sensitivity=DataSensitivity.PUBLIC,
        ),
        state=TaskState.PLANNED,
        created_at=now,
        updated_at=now,
    )
    grant = {"access": parse_storage({"version": 1, "tenants": GRANTS}).for_tenant("globex").spec_block()}
    spec = render_worker_spec(
        task=task,
        attempt_id="att_1",
        token="t",
        callback_base="http://cp",
        checkpoint_root=f"az://{ACCOUNT}/checkpoints/ckpt",
        grant=grant,
    )
    folder = f"az://{ACCOUNT}/checkpoints/ckpt/globex/task_1/"
    assert spec.access.az_read == [f"{B}/", f"az://{ACCOUNT}/shared-media/globex/", folder]
    assert spec.access.az_write == [f"{B}/out/", folder]
    assert "tenant-a-private" not in json.dumps(spec.wire_document())


# --------------------------------------------------------------------------- the API at submit


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
        ("source", f"{A_PRIVATE}/in/face.png"),
        ("target", f"{A_PRIVATE}/in/face.png"),
        ("output", f"{A_PRIVATE}/{A_RESULT}"),
        ("output", f"{B}/in/overwrite.png"),
        ("source", f"{B}/../tenant-a-private/in/face.png"),
        ("source", f"{B}/in/%2e%2e/face.png"),
        ("source", f"az://{ACCOUNT}/shared-media/acme/face.png"),
        ("source", "az://otheraccount/tenant-b/in/face.png"),
        ("source", f"{B}/in/face.png?sv=2024-08-04&sp=r&sig=abc"),
        ("output", f"{B}/out/r.png?sv=2024-08-04&sp=w&sig=abc"),
    ],
)
def test_b_naming_blobs_it_is_not_granted_is_422(api: ApiServer, field: str, uri: str) -> None:
    before = stored_rows(api.store)
    body = {"source": f"{B}/in/face.png", "target": f"{B}/in/target.png", field: uri}
    response = api.client(GLOBEX).post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field)
    assert "sig=abc" not in response.text  # a token is never echoed (nor logged)
    assert stored_rows(api.store) == before


def test_each_tenant_submits_inside_its_own_grant(api: ApiServer) -> None:
    b = {"source": f"{B}/in/face.png", "target": f"{B}/in/target.png", "output": f"{B}/out/r.png"}
    assert api.client(GLOBEX).post("/v1/tasks", json=b).status_code == 202
    a = {"source": f"{A_PRIVATE}/in/face.png", "target": f"{A_PRIVATE}/in/face.png"}
    response = api.client(ACME).post("/v1/tasks", json={**a, "output": f"{A_PRIVATE}/{A_RESULT}"})
    assert response.status_code == 202, response.text


# --------------------------------------------------------------------------- the worker, against Azurite


@pytest.fixture
def blobs(azurite: Azurite, monkeypatch: pytest.MonkeyPatch, astronaut_path: Path) -> Any:
    """Containers of both tenants; A's private container holds A's finished result."""
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    for name in ("tenant-a-private", "tenant-b", "shared-media"):
        if not service.get_container_client(name).exists():
            service.create_container(name)
    a = service.get_container_client("tenant-a-private")
    a.upload_blob(A_RESULT, b"acme's result " + uuid.uuid4().bytes, overwrite=True)
    b = service.get_container_client("tenant-b")
    for name in ("in/face.png", "in/target.png"):
        with astronaut_path.open("rb") as handle:
            b.upload_blob(name, handle, overwrite=True)
    return service


def _a_state(service: Any) -> tuple[bytes, list[str]]:
    a = service.get_container_client("tenant-a-private")
    return a.download_blob(A_RESULT).readall(), sorted(blob.name for blob in a.list_blobs())


def _forged_spec(tmp_path: Path, **uris: str) -> Path:
    spec: dict[str, Any] = {
        "task_id": "task-forged",
        "attempt_id": "att-forged",
        "source": f"{B}/in/face.png",
        "target": f"{B}/in/target.png",
        "output": f"{B}/out/result.png",
        "access": {"s3_read": [], "s3_write": [], "web_hosts": ["*"], **GRANTS["globex"]},
    }
    spec.update(uris)
    path = tmp_path / f"spec-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    ("field", "uris"),
    [
        ("output", {"output": f"{A_PRIVATE}/{A_RESULT}"}),
        ("source", {"source": f"{A_PRIVATE}/{A_RESULT}"}),
        ("checkpoint", {"target": f"{B}/in/t.mp4", "output": f"{B}/out/r.mp4", "checkpoint": f"{A_PRIVATE}/out"}),
    ],
)
def test_a_forged_spec_naming_as_blobs_is_refused_by_the_worker(
    blobs: Any, fusionctl: list[str], tmp_path: Path, field: str, uris: dict[str, str]
) -> None:
    before = _a_state(blobs)
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
    assert _a_state(blobs) == before


def test_inside_its_grant_the_job_reads_and_writes_blobs(blobs: Any, tmp_path: Path) -> None:
    access = Access.parse(s3_read=[], s3_write=[], web_hosts=["*"], **GRANTS["globex"])
    result = run_swap(
        source=f"{B}/in/face.png", target=f"{B}/in/target.png", output=f"{B}/out/result.png", access=access
    )
    assert result.output == f"{B}/out/result.png"
    assert blobs.get_container_client("tenant-b").get_blob_client("out/result.png").get_blob_properties().size > 0


def test_a_checkpoint_uri_with_a_sas_is_refused_before_any_request(blobs: Any) -> None:
    with pytest.raises(BadInput) as info:
        open_checkpoint(f"{B}/out/ckpt?sv=2024&sig=abc")
    assert info.value.field == "checkpoint"
