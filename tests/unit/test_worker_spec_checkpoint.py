"""A video's checkpoint in the worker spec is one the chosen target's worker can write, the same for every attempt."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from controlplane.domain import Task, TaskKind, TaskSpec, TaskState
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.domain.tenant_storage import TenantStorage
from controlplane.domain.worker_spec import WorkerSpec
from controlplane.scheduler.workerspec import render_worker_spec

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
S3_STORE = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/aws/")
BLOB_STORE = TargetStorage(kind=StorageKind.AZURE_BLOB, root="az://fpwork/work/")
PVC_STORE = TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/t/", mount_path="/mnt/work")


def _video(kind: TaskKind = TaskKind.VIDEO) -> Task:
    spec = TaskSpec(
        tenant="acme",
        kind=kind,
        source_uri="s3://tenant-in/acme/face.png",
        target_uri="s3://tenant-in/acme/clip.mp4",
        output_uri="s3://tenant-out/acme/out.mp4",
    )
    return Task(id="tsk_7", spec=spec, state=TaskState.PLANNED, created_at=NOW, updated_at=NOW)


def _spec(
    *,
    provider: str,
    store: TargetStorage | None = None,
    root: str | None = "/srv/var/checkpoints",
    task: Task | None = None,
) -> WorkerSpec:
    return render_worker_spec(
        task=task or _video(),
        attempt_id="att_1",
        token="t",
        callback_base="http://cp.example",
        checkpoint_root=root,
        provider=provider,
        target_storage=store,
    )


def test_a_kubernetes_worker_without_a_store_never_gets_a_control_plane_path() -> None:
    # the bug of issue 15: <serve var>/checkpoints/... in a pod with a read-only root (exit 65)
    assert _spec(provider="kubernetes").checkpoint is None
    assert _spec(provider="aws").checkpoint is None


def test_the_local_provider_keeps_its_checkpoint_root_on_this_machine() -> None:
    assert _spec(provider="local").checkpoint == "/srv/var/checkpoints/acme/tsk_7"


def test_an_s3_checkpoint_root_the_operator_chose_serves_every_provider() -> None:
    spec = _spec(provider="kubernetes", root="s3://fp-ckpt")
    assert spec.checkpoint == "s3://fp-ckpt/acme/tsk_7"
    assert spec.access.s3_write == ["s3://fp-ckpt/acme/tsk_7/"]


@pytest.mark.parametrize("provider", ["aws", "kubernetes", "local"])
def test_a_target_with_an_s3_store_checkpoints_under_its_task_prefix_with_a_grant_for_it_alone(provider: str) -> None:
    spec = _spec(provider=provider, store=S3_STORE)
    assert spec.checkpoint == "s3://fp-work/aws/acme/tsk_7/checkpoint/"
    # the task's own prefix in the store (staged inputs, output, checkpoint), and nothing wider
    assert spec.access.s3_read == ["s3://fp-work/aws/acme/tsk_7/"]
    assert spec.access.s3_write == ["s3://fp-work/aws/acme/tsk_7/"]
    # the next attempt, on any target of the same store, resumes from the same folder
    assert _spec(provider="aws", store=S3_STORE).checkpoint == spec.checkpoint


def test_a_blob_store_checkpoints_in_its_container_and_passes_the_tenant_check(tmp_path: Path) -> None:
    tenants = TenantStorage(input_roots=(tmp_path / "in",), output_root=tmp_path / "out", checkpoint_root=tmp_path)
    spec = render_worker_spec(
        task=_video(),
        attempt_id="att_1",
        token="t",
        callback_base="http://cp.example",
        checkpoint_root=tmp_path,
        storage=tenants,
        provider="azure",
        target_storage=BLOB_STORE,
    )
    assert spec.checkpoint == "az://fpwork/work/acme/tsk_7/checkpoint/"


def test_a_pvc_store_checkpoints_in_the_claim_where_the_pod_mounts_it() -> None:
    assert _spec(provider="kubernetes", store=PVC_STORE).checkpoint == "/mnt/work/t/acme/tsk_7/checkpoint/"


def test_an_image_task_has_no_checkpoint_anywhere() -> None:
    assert _spec(provider="aws", store=S3_STORE, task=_video(TaskKind.IMAGE)).checkpoint is None


def _local_task(output: str = "/srv/out/acme/o.png", kind: TaskKind = TaskKind.IMAGE) -> Task:
    spec = TaskSpec(
        tenant="acme",
        kind=kind,
        source_uri="/srv/in/acme/upl_1/face.png",
        target_uri="s3://tenant-in/acme/photo.png",
        output_uri=output,
    )
    return Task(id="tsk_7", spec=spec, state=TaskState.PLANNED, created_at=NOW, updated_at=NOW)


def test_a_cloud_worker_gets_its_store_s_uris_never_the_control_plane_s_paths() -> None:
    spec = _spec(provider="aws", store=S3_STORE, task=_local_task())
    assert spec.source == "s3://fp-work/aws/acme/tsk_7/inputs/source-face.png"  # staged
    assert spec.target == "s3://tenant-in/acme/photo.png"  # read in place with the instance profile
    assert spec.output == "s3://fp-work/aws/acme/tsk_7/output.png"
    assert not any(uri.startswith("/srv") for uri in (spec.source, spec.target, spec.output))


def test_an_azure_worker_gets_s3_inputs_staged_and_the_store_s_endpoint() -> None:
    store = TargetStorage(
        kind=StorageKind.AZURE_BLOB, root="az://fpwork/work/", endpoint_url="http://127.0.0.1:10000/fpwork"
    )
    spec = _spec(provider="azure", store=store, task=_local_task())
    assert spec.target == "az://fpwork/work/acme/tsk_7/inputs/target-photo.png"
    assert spec.output == "az://fpwork/work/acme/tsk_7/output.png"
    assert spec.access.az_write == ["az://fpwork/work/acme/tsk_7/"]
    assert spec.blob_endpoints == {"fpwork": "http://127.0.0.1:10000/fpwork"}


def test_a_pvc_worker_gets_paths_under_its_mount() -> None:
    spec = _spec(provider="kubernetes", store=PVC_STORE, task=_local_task())
    assert spec.source == "/mnt/work/t/acme/tsk_7/inputs/source-face.png"
    assert spec.output == "/mnt/work/t/acme/tsk_7/output.png"


def test_the_local_provider_keeps_the_task_s_own_uris() -> None:
    task = _local_task()
    spec = _spec(provider="local", store=None, task=task)
    assert (spec.source, spec.target, spec.output) == (task.spec.source_uri, task.spec.target_uri, task.spec.output_uri)


def test_an_s3_compatible_store_reaches_the_worker_as_its_bucket_s_endpoint() -> None:
    minio = TargetStorage(kind=StorageKind.S3, root="s3://fp-work/k8s/", endpoint_url="http://minio.fp:9000")
    spec = _spec(provider="kubernetes", store=minio, task=_local_task())
    assert spec.s3_endpoints == {"fp-work": "http://minio.fp:9000"}
    assert spec.output == "s3://fp-work/k8s/acme/tsk_7/output.png"
    assert spec.target == "s3://fp-work/k8s/acme/tsk_7/inputs/target-photo.png"  # AWS's object, copied in
    assert _spec(provider="aws", store=S3_STORE, task=_local_task()).s3_endpoints == {}
