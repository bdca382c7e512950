"""Private bytes never reach a non-private target's store, and a staged key never leaves its task's prefix.

The planner never offers a non-private target to a private task
(tests/unit/test_plan.py); the stager refuses on its own anyway, before it
reads a byte, so a planner or scheduler bug cannot copy private data into a
cloud bucket. Staged keys are built from a tenant, a task id and a file name
a tenant chose: whatever the name holds, the key stays one segment under
``<root><tenant>/<task id>/inputs/``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.dataplane.errors import PrivateDataRefused, StagingError
from controlplane.dataplane.local_store import LocalStore
from controlplane.dataplane.objects import ObjectStore
from controlplane.dataplane.stager import Stager
from controlplane.domain import DataSensitivity, Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import StorageKind, TargetStorage, staged_uri
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.metrics import Metrics

TENANT = "acme"


def private_task(tmp_path: Path, sensitivity: DataSensitivity = DataSensitivity.PRIVATE) -> Task:
    folder = tmp_path / "inputs" / TENANT / "upl_1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "face.png").write_bytes(b"a private face")
    (folder / "scene.png").write_bytes(b"a private scene")
    now = datetime.now(UTC)
    spec = TaskSpec(
        tenant=TENANT,
        kind=TaskKind.IMAGE,
        source_uri=str(folder / "face.png"),
        target_uri=str(folder / "scene.png"),
        output_uri=str(tmp_path / "outputs" / TENANT / "out.png"),
        data_sensitivity=sensitivity,
    )
    return Task(id="tsk_01PRIVATE", spec=spec, state=TaskState.LAUNCHING, created_at=now, updated_at=now)


def never(_storage: TargetStorage) -> ObjectStore:
    raise AssertionError("a private task's refusal must not open any store")


@pytest.mark.parametrize(
    ("provider", "storage"),
    [
        ("aws", TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")),
        ("azure", TargetStorage(kind=StorageKind.AZURE_BLOB, root="az://acct/work/azure/")),
        ("kubernetes", TargetStorage(kind=StorageKind.S3, root="s3://fp-work/k8s/", endpoint_url="http://minio:9000")),
    ],
)
def test_a_private_task_is_never_staged_to_a_non_private_target(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, provider: str, storage: TargetStorage
) -> None:
    metrics = Metrics.create()
    stager = Stager(stores=never, metrics=metrics)
    with caplog.at_level(logging.ERROR, logger="fusionplane.stager"), pytest.raises(PrivateDataRefused) as caught:
        stager.stage(
            private_task(tmp_path),
            attempt_id="att_1",
            target="cloud",
            provider=provider,
            storage=storage,
            private_target=False,
        )
    assert caught.value.code == "private_data_refused"
    assert not caught.value.transient  # never worth retrying on the same target
    assert "private data" in str(caught.value)
    assert [r.__dict__.get("event") for r in caplog.records] == ["staging.private_data_refused"]
    assert metrics.registry.get_sample_value("fusionplane_staging_total", {"outcome": "private_refused"}) == 1


def test_a_private_task_is_staged_to_a_private_target_s_store(tmp_path: Path) -> None:
    root = f"{tmp_path}/private-store/"
    # a private cluster's store the control plane can write (here: a local folder standing in for it)
    storage = TargetStorage(kind=StorageKind.LOCAL, root=root)
    staged = Stager(stores=lambda _s: LocalStore()).stage(
        private_task(tmp_path),
        attempt_id="att_1",
        target="private-gpu",
        provider="kubernetes",
        storage=storage,
        private_target=True,
    )
    assert [item.uri for item in staged] == [
        f"{root}{TENANT}/tsk_01PRIVATE/inputs/source-face.png",
        f"{root}{TENANT}/tsk_01PRIVATE/inputs/target-scene.png",
    ]
    assert Path(staged[0].uri).read_bytes() == b"a private face"


def test_internal_tasks_are_staged_to_cloud_stores(tmp_path: Path) -> None:
    """The refusal is about private data only: the same target takes an internal task's bytes."""
    root = f"{tmp_path}/cloud-store/"
    storage = TargetStorage(kind=StorageKind.LOCAL, root=root)
    staged = Stager(stores=lambda _s: LocalStore()).stage(
        private_task(tmp_path, DataSensitivity.INTERNAL),
        attempt_id="att_1",
        target="cloud",
        provider="aws",
        storage=storage,
        private_target=False,
    )
    assert len(staged) == 2


HOSTILE_NAMES = [
    "..",
    "../../../other-tenant/tsk_X/inputs/source-a.png",
    "a/../../b.png",
    "/etc/passwd",
    "x\x00.png",
    "\\..\\..\\win.png",
    ".hidden",
    "",
    "%2e%2e%2fescape.png",
    "é" * 500 + ".png",
    "a" * 5000,
    "name\nwith\nnewlines.png",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_file_name_stays_inside_the_task_s_prefix(name: str) -> None:
    storage = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")
    uri = staged_uri(storage, tenant=TENANT, task_id="tsk_01ABC", field="source", name=name)
    prefix = "s3://fp-work/aws/acme/tsk_01ABC/inputs/source-"
    assert uri.startswith(prefix)
    segment = uri[len(prefix) :]
    assert segment not in ("", ".", "..")
    for bad in ("/", "\x00", "\\"):
        assert bad not in segment
    assert not segment.startswith(".")
    assert len(uri.encode()) < 1024  # S3's key limit, with the root and prefix


@settings(max_examples=300, deadline=None)
@given(name=st.text(max_size=2000))
def test_any_file_name_stays_one_segment_under_the_task_s_prefix(name: str) -> None:
    storage = TargetStorage(kind=StorageKind.LOCAL, root="/srv/store/")
    uri = staged_uri(storage, tenant=TENANT, task_id="tsk_01ABC", field="target", name=name)
    assert Path(uri).parent == Path("/srv/store/acme/tsk_01ABC/inputs")
    assert Path(uri).resolve(strict=False).parent == Path("/srv/store/acme/tsk_01ABC/inputs")


@pytest.mark.parametrize(
    ("tenant", "task_id", "field"),
    [
        ("acme", "../tsk_1", "source"),
        ("acme", "tsk_1/../../x", "source"),
        ("acme", "/abs", "source"),
        ("acme", "tsk_1\n", "source"),
        ("acme", "", "source"),
        ("../acme", "tsk_1", "source"),
        ("Acme", "tsk_1", "source"),
        ("acme", "tsk_1", "output"),
        ("acme", "tsk_1", "../source"),
    ],
)
def test_task_ids_tenants_and_fields_that_are_paths_are_refused(tenant: str, task_id: str, field: str) -> None:
    storage = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")
    with pytest.raises(ValueError, match=r"cannot name|is not an input"):
        staged_uri(storage, tenant=tenant, task_id=task_id, field=field, name="face.png")


def test_the_stager_refuses_an_input_outside_the_tenant_s_folders(tmp_path: Path) -> None:
    task = private_task(tmp_path, DataSensitivity.INTERNAL)
    folders = TenantStorage(input_roots=(tmp_path / "elsewhere",), output_root=tmp_path / "outputs")
    stager = Stager(stores=lambda _s: LocalStore(), tenant_storage=folders)
    with pytest.raises(StagingError, match="outside tenant acme's input folders"):
        stager.stage(
            task,
            attempt_id="att_1",
            target="cloud",
            provider="aws",
            storage=TargetStorage(kind=StorageKind.LOCAL, root=f"{tmp_path}/s/"),
            private_target=False,
        )
    assert not (tmp_path / "s").exists()
