"""A kubernetes target whose store is a PersistentVolumeClaim: the Job mounts it, the control plane stages into it.

The real Kubernetes provider, through the kubernetes client, against kmock's
emulated API server: what is asserted is the Job as the API server stored
it. First a launch with a ``pvc`` ``target_storage``; then the whole path
through the scheduler, where the stager copies a task's local input into the
control plane's own mount of the claim (``FUSIONPLANE_PVC_MOUNTS``) before the
Job that mounts the same claim is created.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
from sqlalchemy import create_engine

from controlplane.dataplane.stager import Stager
from controlplane.dataplane.stores import Stores, StoreSettings
from controlplane.domain import AttemptState, DataSensitivity, TaskKind, TaskSpec
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.policy import parse_policy
from controlplane.runtime import standalone_scheduler
from controlplane.store import Store, upgrade
from providers.bootstrap import WorkerImage
from providers.kubernetes import KubernetesProvider
from tests.contract.test_kubernetes_provider import NAMESPACE, make, request_for, target
from tests.support.kmock_cluster import JOBS, KmockCluster

pytestmark = pytest.mark.timeout(60)

IMAGE = "registry.internal/fusionplane/worker:0.1.0-gpu"
WORK = TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work")


def stored_pod(cluster: KmockCluster, namespace: str = NAMESPACE) -> dict[str, Any]:
    [job] = cluster.objects(JOBS, namespace)
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def store_mount(pod: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The worker's mount of the store's volume and every volume of that name."""
    [worker] = pod["containers"]
    [mount] = [m for m in worker["volumeMounts"] if m["mountPath"] == WORK.mount_path]
    return mount, [v for v in pod["volumes"] if v["name"] == mount["name"]]


def test_a_launch_with_a_pvc_store_creates_a_job_that_mounts_the_claim_at_its_mount_path(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    onprem = target("onprem", worker_image=IMAGE, models_pvc="fp-models")
    provider = make(client, onprem)
    request = request_for("att-pvc", onprem)

    provider.launch(dataclasses.replace(request, target_storage=WORK))

    pod = stored_pod(cluster)
    mount, volumes = store_mount(pod)
    assert mount.get("readOnly", False) is False  # the worker writes its output and checkpoints there
    assert volumes == [{"name": mount["name"], "persistentVolumeClaim": {"claimName": "fp-work"}}]
    # beside the pod's own volumes, which are as they were
    assert {v["name"] for v in pod["volumes"]} == {"spec", "models", "trt-cache", "scratch", mount["name"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True


def test_a_launch_without_a_store_mounts_no_claim(cluster: KmockCluster, client: kubernetes.client.ApiClient) -> None:
    onprem = target("onprem", worker_image=IMAGE)
    make(client, onprem).launch(request_for("att-plain", onprem))

    pod = stored_pod(cluster)
    assert {v["name"] for v in pod["volumes"]} == {"spec", "trt-cache", "scratch"}
    assert "persistentVolumeClaim" not in str(pod["volumes"])


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    upgrade(engine=engine)
    yield Store(engine)
    engine.dispose()


def place_one(client: kubernetes.client.ApiClient, store: Store, tmp_path: Path, mounts: dict[str, Path]) -> str:
    """A private task with a local input, placed on a kubernetes target whose store is the claim fp-work."""
    face = tmp_path / "inputs" / "acme" / "face.png"
    face.parent.mkdir(parents=True)
    face.write_bytes(b"a face")
    policy = parse_policy(
        {
            "targets": [
                {
                    "name": "onprem",
                    "provider": "kubernetes",
                    "private": True,
                    "settings": {"namespace": "gpu"},
                    "storage": {"uri": WORK.root, "mount_path": WORK.mount_path},
                }
            ],
            "rules": [{"name": "onprem-only", "targets": ["onprem"]}],
        }
    )
    task, _ = store.create_task(
        spec=TaskSpec(
            tenant="acme",
            kind=TaskKind.IMAGE,
            source_uri=str(face),
            target_uri="https://media.example/target.png",
            output_uri=str(tmp_path / "outputs" / "acme" / "swapped.png"),  # written into the claim
            data_sensitivity=DataSensitivity.PRIVATE,
        ),
        request_hash="h",
    )
    provider = KubernetesProvider(
        lambda: policy.targets,
        image=WorkerImage(image=IMAGE),
        owner="pvc-test",
        api_client_for=lambda _target: client,
    )
    scheduler = standalone_scheduler(
        store=store,
        policy=policy,
        providers={"kubernetes": provider},
        callback_base="https://cp.example",
        stager=Stager(stores=Stores(StoreSettings(pvc_mounts=mounts))),
    )
    scheduler.place_batch()
    return task.id


def test_the_scheduler_stages_into_the_claim_and_launches_a_job_that_mounts_it(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, store: Store, tmp_path: Path
) -> None:
    mount = tmp_path / "mnt" / "work"  # the control plane's own mount of fp-work
    mount.mkdir(parents=True)

    task_id = place_one(client, store, tmp_path, {"fp-work": mount})

    [attempt] = store.attempts_for(task_id)
    assert attempt.state == AttemptState.LAUNCHING
    staged = mount / "tasks" / "acme" / task_id / "inputs" / "source-face.png"
    assert staged.read_bytes() == b"a face"
    mounted, volumes = store_mount(stored_pod(cluster, "gpu"))
    assert volumes == [{"name": mounted["name"], "persistentVolumeClaim": {"claimName": "fp-work"}}]


def test_without_a_mount_of_the_claim_the_launch_is_refused_naming_the_setting(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, store: Store, tmp_path: Path
) -> None:
    task_id = place_one(client, store, tmp_path, {})

    [attempt] = store.attempts_for(task_id)
    assert attempt.state == AttemptState.FAILED
    assert "FUSIONPLANE_PVC_MOUNTS" in (attempt.reason or "")
    assert cluster.objects(JOBS, "gpu") == []  # nothing launched that could not read its input
