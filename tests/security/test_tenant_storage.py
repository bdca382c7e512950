"""Tenant isolation of local storage, tried as tenant B would against a real server (uvicorn on loopback).

B holds a submitter token of its own and knows (or guesses) where tenant A's
files are. Every way of naming A's files as B's input or output is refused
with a 422 naming the field, before anything is stored; ids do not lead from
B's tasks to A's; uploads have a quota per tenant and a retention.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.api.uploads import prune_uploads
from controlplane.config import Settings
from controlplane.domain import InvalidSpec, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.scheduler.workerspec import render_worker_spec
from controlplane.store import Store, make_engine, upgrade
from controlplane.store.ids import new_id
from controlplane.store.uploads import inputs_in_use
from tests.support.api_fixtures import OPERATOR, TENANT_A, TENANT_B, ApiServer, stored_rows
from tests.support.serve_process import served

FACE = b"\x89PNG\r\n\x1a\n tenant a's face"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    engine = make_engine(f"sqlite:///{tmp_path / 'plane.db'}")
    upgrade(engine=engine)
    return Store(engine)


@pytest.fixture
def api(store: Store, tmp_path: Path) -> Iterator[ApiServer]:
    with ApiServer.start(store, tmp_path, upload_quota_bytes=64 * 1024) as server:
        yield server


def upload(api: ApiServer, token: str, name: str = "face.png", data: bytes = FACE) -> Path:
    response = api.client(token).put(f"/v1/uploads/{name}", content=data)
    assert response.status_code == 201, response.text
    return Path(response.json()["uri"])


def refused(api: ApiServer, token: str, body: dict[str, Any], field: str) -> dict[str, Any]:
    """Submit ``body``; it must be a 422 naming ``field``, with nothing stored."""
    before = stored_rows(api.store)
    response = api.client(token).post("/v1/tasks", json=body)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    assert (error["code"], error["field"]) == ("invalid", field), error
    assert stored_rows(api.store) == before
    return error


def b_body(api: ApiServer, **overrides: Any) -> dict[str, Any]:
    """A submission of tenant B that is fine as it is."""
    return api.body(tenant="tenant-b", **overrides)


# --------------------------------------------------------------------------- inputs


def test_b_cannot_read_a_s_upload_as_source_or_target(api: ApiServer) -> None:
    theirs = upload(api, TENANT_A)
    for form in (str(theirs), f"file://{theirs}"):
        refused(api, TENANT_B, b_body(api, source=form), "source")
        refused(api, TENANT_B, b_body(api, target=form), "target")
    # A itself may, and so may B with its own upload
    assert api.client(TENANT_A).post("/v1/tasks", json=api.body(tenant="tenant-a", source=str(theirs))).is_success
    mine = upload(api, TENANT_B)
    assert api.client(TENANT_B).post("/v1/tasks", json=b_body(api, source=f"file://{mine}")).status_code == 202


def test_a_symlink_in_b_s_folder_into_a_s_is_refused(api: ApiServer) -> None:
    theirs = upload(api, TENANT_A)
    b_folder = api.input_root / "tenant-b"
    b_folder.mkdir(exist_ok=True)
    (b_folder / "linked.png").symlink_to(theirs)
    (b_folder / "a-uploads").symlink_to(theirs.parent.parent, target_is_directory=True)
    refused(api, TENANT_B, b_body(api, source=str(b_folder / "linked.png")), "source")
    refused(api, TENANT_B, b_body(api, target=f"file://{b_folder / 'linked.png'}"), "target")
    refused(api, TENANT_B, b_body(api, source=str(b_folder / "a-uploads" / theirs.parent.name / theirs.name)), "source")


def test_dot_dot_out_of_b_s_folder_is_refused(api: ApiServer) -> None:
    theirs = upload(api, TENANT_A)
    relative = theirs.relative_to(api.input_root)  # tenant-a/upl_.../face.png
    sneaky = f"{api.input_root}/tenant-b/../{relative}"
    (api.input_root / "tenant-b").mkdir(exist_ok=True)
    refused(api, TENANT_B, b_body(api, source=sneaky), "source")
    refused(api, TENANT_B, b_body(api, target=f"file://{sneaky}"), "target")
    refused(api, TENANT_B, b_body(api, source=f"{api.input_root}/tenant-b/../../etc/passwd"), "source")
    # a file at the input root itself belongs to no tenant
    refused(api, TENANT_B, b_body(api, source=api.image("shared.png", tenant=".")), "source")


def test_operators_submit_with_their_own_tenant_s_folders(api: ApiServer) -> None:
    theirs = upload(api, TENANT_A)
    refused(api, OPERATOR, api.body(tenant="ops", source=str(theirs)), "source")
    assert api.client(OPERATOR).post("/v1/tasks", json=api.body(tenant="ops")).status_code == 202


# --------------------------------------------------------------------------- outputs


def finished_task_of_a(api: ApiServer) -> tuple[str, Path]:
    """A task of A that succeeded, its output file written (as the worker would)."""
    created = api.client(TENANT_A).post("/v1/tasks", json=api.body(tenant="tenant-a"))
    assert created.status_code == 202, created.text
    task_id, output = created.json()["id"], Path(created.json()["output_uri"])
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"A's finished result")
    api.advance_to(task_id, TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED)
    return task_id, output


def test_b_cannot_write_over_or_beside_a_s_outputs(api: ApiServer) -> None:
    a_task, a_output = finished_task_of_a(api)
    assert a_output.is_relative_to(api.output_root / "tenant-a")
    for output in (
        str(a_output),
        f"file://{a_output}",
        str(a_output.parent / "other.png"),
        str(api.output_root / "tenant-a" / "new" / "x.png"),
        "tenant-a/new.png",
        f"{api.output_root}/tenant-b/../tenant-a/y.png",
        str(api.output_root / "loose.png"),
    ):
        refused(api, TENANT_B, b_body(api, output=output), "output")
    # a link in B's output folder pointing into A's is A's folder
    (api.output_root / "tenant-b").mkdir(exist_ok=True)
    (api.output_root / "tenant-b" / "into-a").symlink_to(a_output.parent, target_is_directory=True)
    refused(api, TENANT_B, b_body(api, output=str(api.output_root / "tenant-b" / "into-a" / "z.png")), "output")
    # A still gets its own bytes
    served = api.client(TENANT_A).get(f"/v1/tasks/{a_task}/output")
    assert (served.status_code, served.content) == (200, b"A's finished result")


def test_an_existing_output_is_never_replaced(api: ApiServer) -> None:
    mine = api.output_root / "tenant-b" / "result.png"
    mine.parent.mkdir(parents=True)
    mine.write_bytes(b"B's earlier result")
    error = refused(api, TENANT_B, b_body(api, output=str(mine)), "output")
    assert "already exists" in error["message"]
    fresh = api.client(TENANT_B).post("/v1/tasks", json=b_body(api, output="tenant-b/fresh/result.png"))
    assert fresh.status_code == 202, fresh.text
    assert fresh.json()["output_uri"] == str(api.output_root / "tenant-b" / "fresh" / "result.png")


def test_a_retry_of_a_finished_task_is_a_replay_not_already_exists(api: ApiServer) -> None:
    body = b_body(api, output="tenant-b/mine/result.png")
    client = api.client(TENANT_B, **{"Idempotency-Key": "order-7"})
    first = client.post("/v1/tasks", json=body)
    assert first.status_code == 202, first.text
    written = Path(first.json()["output_uri"])
    written.parent.mkdir(parents=True)
    written.write_bytes(b"B's result")
    again = client.post("/v1/tasks", json=body)
    assert (again.status_code, again.json()["id"]) == (202, first.json()["id"])
    # another key, or the same key with another body, is a new task that would replace the file
    refused(api, TENANT_B, body, "output")
    other = api.client(TENANT_B, **{"Idempotency-Key": "order-7"}).post("/v1/tasks", json={**body, "priority": "high"})
    assert (other.status_code, other.json()["error"]["field"]) == (422, "output")
    assert written.read_bytes() == b"B's result"


def test_output_route_serves_only_files_in_the_task_s_tenant_folder(api: ApiServer) -> None:
    secret = api.output_root / "tenant-a" / "secret.png"
    secret.parent.mkdir(parents=True)
    secret.write_bytes(b"A's secret")
    # a row written some other way than the API (an old version, a hand edit): the route checks again
    spec = TaskSpec(
        tenant="tenant-b",
        kind=TaskKind.IMAGE,
        source_uri="s3://b/face.png",
        target_uri="s3://b/target.png",
        output_uri=str(secret),
    )
    task, _ = api.store.create_task(spec=spec, request_hash="x")
    api.advance_to(task.id, TaskState.PLANNED, TaskState.LAUNCHING, TaskState.RUNNING, TaskState.SUCCEEDED)
    response = api.client(TENANT_B).get(f"/v1/tasks/{task.id}/output")
    assert response.status_code == 403, response.text
    assert response.json()["error"]["field"] == "output"
    assert b"secret" not in response.content


def test_the_executor_refuses_a_task_whose_paths_are_another_tenant_s(tmp_path: Path) -> None:
    storage = TenantStorage(
        input_roots=(tmp_path / "in",), output_root=tmp_path / "out", checkpoint_root=tmp_path / "ckpt"
    )

    def spec_for(**uris: str) -> dict[str, Any]:
        values = {
            "source_uri": str(tmp_path / "in" / "tenant-b" / "face.png"),
            "target_uri": str(tmp_path / "in" / "tenant-b" / "clip.mp4"),
            "output_uri": str(tmp_path / "out" / "tenant-b" / "out.mp4"),
            **uris,
        }
        spec = TaskSpec(tenant="tenant-b", kind=TaskKind.VIDEO, **values)
        now = datetime.now(UTC)
        task = Task(id=new_id("tsk"), spec=spec, state=TaskState.PLANNED, created_at=now, updated_at=now)
        return render_worker_spec(
            task=task,
            attempt_id=new_id("att"),
            token="t",
            callback_base="http://127.0.0.1:1",
            checkpoint_root=tmp_path / "ckpt",
            storage=storage,
        )

    document = spec_for().wire_document()
    assert document["checkpoint"] == f"{tmp_path / 'ckpt'}/tenant-b/{document['task_id']}"
    for field, uri in (
        ("source", str(tmp_path / "in" / "tenant-a" / "face.png")),
        ("target", f"file://{tmp_path}/in/tenant-b/../tenant-a/clip.mp4"),
        ("output", str(tmp_path / "out" / "tenant-a" / "out.mp4")),
    ):
        with pytest.raises(InvalidSpec, match=field):
            spec_for(**{f"{field}_uri": uri})


# --------------------------------------------------------------------------- ids


def test_b_guessing_the_neighbours_of_its_ids_finds_none_of_a_s_tasks(api: ApiServer) -> None:
    a_client, b_client = api.client(TENANT_A), api.client(TENANT_B)
    a_body, b_body_ = api.body(tenant="tenant-a"), b_body(api)

    def submit(client_body: tuple[httpx.Client, dict[str, Any]]) -> str:
        client, body = client_body
        response = client.post("/v1/tasks", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    # interleaved and concurrent: the group commit stores them in the same batches and milliseconds
    work = [(a_client, a_body), (b_client, b_body_)] * 30
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(submit, work))
    a_ids, b_ids = set(ids[0::2]), ids[1::2]
    guesses = {_neighbour(task_id, step) for task_id in b_ids for step in (-3, -2, -1, 1, 2, 3)}
    assert not guesses & a_ids
    for guess in sorted(guesses)[:60]:  # and the API answers no guess with a task
        assert b_client.get(f"/v1/tasks/{guess}").status_code in (403, 404)


_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _neighbour(task_id: str, step: int) -> str:
    prefix, body = task_id.split("_", 1)
    value = 0
    for char in body:
        value = value * 32 + _ALPHABET.index(char)
    value += step
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"


# --------------------------------------------------------------------------- uploads: quota and retention


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_the_upload_quota_is_per_tenant_and_checked_while_streaming(api: ApiServer) -> None:
    upload(api, TENANT_A, "first.bin", b"a" * 40 * 1024)
    before = files_under(api.input_root)

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"b" * 1024

    response = api.client(TENANT_A).put("/v1/uploads/second.bin", content=chunks())
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("upload_quota_exceeded", "body")
    assert files_under(api.input_root) == before  # nothing of the refused upload stays
    assert len(list((api.input_root / "tenant-a").iterdir())) == 1
    # B has a quota of its own; A fits what is left
    upload(api, TENANT_B, "b.bin", b"b" * 40 * 1024)
    upload(api, TENANT_A, "small.bin", b"a" * 20 * 1024)


def test_retention_deletes_old_uploads_no_unfinished_task_reads(api: ApiServer) -> None:
    old_used, old_unused, old_finished, fresh = (upload(api, TENANT_A, f"{n}.png") for n in "abcd")
    by_hand = api.input_root / "tenant-a" / "operator-placed" / "keep.png"
    by_hand.parent.mkdir()
    by_hand.write_bytes(b"not an upload")
    queued = api.client(TENANT_A).post("/v1/tasks", json=api.body(tenant="tenant-a", source=str(old_used)))
    done = api.client(TENANT_A).post("/v1/tasks", json=api.body(tenant="tenant-a", source=str(old_finished)))
    assert queued.status_code == done.status_code == 202
    api.advance_to(done.json()["id"], TaskState.CANCELLED)
    week_ago = time.time() - 8 * 86_400
    for path in (old_used, old_unused, old_finished, by_hand):
        os.utime(path, (week_ago, week_ago))
        os.utime(path.parent, (week_ago, week_ago))
    # an old folder whose upload is still streaming (its partial file was just written to) stays
    streaming = api.input_root / "tenant-a" / "upl_streaming"
    streaming.mkdir()
    (streaming / ".upload.part").write_bytes(b"half")
    os.utime(streaming, (week_ago, week_ago))

    pruned = prune_uploads(root=api.input_root, retention_seconds=7 * 86_400, in_use=lambda: inputs_in_use(api.store))
    assert pruned == {"folders": 2, "bytes": 2 * len(FACE), "kept_in_use": 1, "expired": 0}
    assert old_used.exists()
    assert fresh.exists()
    assert streaming.exists()
    assert by_hand.exists()
    assert not old_unused.parent.exists()
    assert not old_finished.parent.exists()


@pytest.mark.timeout(120)
def test_serve_runs_the_retention_job_and_logs_counts_only(tmp_path: Path) -> None:
    with served(tmp_path, insecure_dev=True, FUSIONPLANE_UPLOAD_RETENTION_S="1") as plane:
        url = plane.url
        response = httpx.put(f"{url}/v1/uploads/face.png", content=FACE, timeout=10)
        assert response.status_code == 201, response.text
        folder = Path(response.json()["uri"]).parent
        deadline = time.monotonic() + 30
        while folder.exists():  # the job runs every second; nothing refers to this upload
            assert time.monotonic() < deadline, "the retention job did not delete the old upload"
            time.sleep(0.2)
    lines = [line for line in (tmp_path / "serve.log").read_text().splitlines() if "uploads_pruned" in line]
    records = [json.loads(line) for line in lines]
    assert [(r["folders"], r["bytes"]) for r in records] == [(1, len(FACE))], lines
    assert not any(folder.name in line or "dev" in line for line in lines)  # counts, never whose


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("FUSIONPLANE_UPLOAD_QUOTA_BYTES", "lots"),
        ("FUSIONPLANE_UPLOAD_QUOTA_BYTES", "0"),
        ("FUSIONPLANE_UPLOAD_RETENTION_S", "-1"),
        ("FUSIONPLANE_UPLOAD_RETENTION_S", "a week"),
        ("FUSIONPLANE_UPLOAD_CHUNK_MAX_BYTES", "0"),
        ("FUSIONPLANE_UPLOAD_CHUNK_MAX_BYTES", "8M"),
        ("FUSIONPLANE_UPLOAD_EXPIRY_S", "-5"),
        ("FUSIONPLANE_UPLOAD_EXPIRY_S", "tomorrow"),
    ],
)
def test_bad_upload_settings_are_refused_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=variable):
        Settings.from_env()


def test_upload_settings_defaults_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings.from_env()
    assert (defaults.upload_quota_bytes, defaults.upload_retention_seconds) == (10 << 30, 7 * 86_400)
    monkeypatch.setenv("FUSIONPLANE_UPLOAD_QUOTA_BYTES", "1048576")
    monkeypatch.setenv("FUSIONPLANE_UPLOAD_RETENTION_S", "3600")
    monkeypatch.setenv("FUSIONPLANE_UPLOAD_CHUNK_MAX_BYTES", "4194304")
    monkeypatch.setenv("FUSIONPLANE_UPLOAD_EXPIRY_S", "7200")
    settings = Settings.from_env()
    assert (settings.upload_quota_bytes, settings.upload_retention_seconds) == (1 << 20, 3600)
    assert (defaults.upload_chunk_max_bytes, defaults.upload_expiry_seconds) == (64 << 20, 86_400)
    assert (settings.upload_chunk_max_bytes, settings.upload_expiry_seconds) == (4 << 20, 7200)
