"""The Job of a kubernetes target whose store is a PersistentVolumeClaim mounts that claim into the worker.

Built with the manifest functions alone (no API server): the claim of the
launch's ``target_storage`` is mounted read-write at its ``mount_path`` in the
worker container, beside the spec, scratch, models and TensorRT volumes,
with the pod as locked down as without it; an s3 store or no store adds
nothing; a claim or mount path the pod cannot use is ``InvalidSpec`` naming
the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from controlplane.domain import InvalidSpec, Target
from controlplane.domain.target_storage import StorageKind, TargetStorage
from controlplane.domain.worker_spec import parse_worker_spec
from providers.base import LaunchRequest
from providers.bootstrap import WorkerImage
from providers.kubernetes.manifests import STORE_VOLUME, job_body, job_labels
from providers.kubernetes.settings import JobSettings
from tests.contract.provider_contract import candidate_for, worker_spec

TARGET = Target(
    name="onprem",
    provider="kubernetes",
    private=True,
    settings={"namespace": "gpu", "models_pvc": "fp-models", "trt_cache_pvc": "fp-trt"},
)
IMAGE = WorkerImage(image="registry.internal/fusionplane/worker:test-gpu")
WORK = TargetStorage(kind=StorageKind.PVC, root="pvc://fp-work/tasks/", mount_path="/mnt/work")


def pod_of(storage: TargetStorage | None) -> dict[str, Any]:
    request = LaunchRequest(
        attempt_id="att-1",
        task_id="task-1",
        candidate=candidate_for(TARGET),
        worker_spec=parse_worker_spec(worker_spec("att-1", "task-1")),
        target_storage=storage,
    )
    labels = job_labels(request, "fp-att-1", owner="fusionplane")
    job = job_body(request, TARGET, JobSettings.of(TARGET, IMAGE), "fp-att-1", labels)
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def mounts_of(pod: dict[str, Any], container: str = "worker") -> dict[str, tuple[str, bool]]:
    [found] = [c for c in [*pod["containers"], *pod.get("initContainers", [])] if c["name"] == container]
    return {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in found["volumeMounts"]}


def test_a_pvc_store_is_mounted_read_write_at_its_mount_path_beside_the_pods_own_volumes() -> None:
    pod = pod_of(WORK)

    assert mounts_of(pod) == {
        "/run/fusionplane": ("spec", True),
        "/models": ("models", True),
        "/cache/trt": ("trt-cache", False),
        "/tmp": ("scratch", False),
        "/mnt/work": (STORE_VOLUME, False),
    }
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[STORE_VOLUME] == {"name": STORE_VOLUME, "persistentVolumeClaim": {"claimName": "fp-work"}}
    assert set(volumes) == {"spec", "models", "trt-cache", "scratch", STORE_VOLUME}
    # only the worker reads and writes the task's objects; the model check never sees them
    assert "/mnt/work" not in mounts_of(pod, "models-verify")


def test_the_pod_stays_as_locked_down_with_the_claim_as_without_it() -> None:
    with_claim, without = pod_of(WORK), pod_of(None)

    assert with_claim["securityContext"] == without["securityContext"]
    assert with_claim["securityContext"]["runAsNonRoot"] is True
    assert with_claim["containers"][0]["securityContext"] == without["containers"][0]["securityContext"]
    assert with_claim["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert with_claim["containers"][0]["env"] == without["containers"][0]["env"]


@pytest.mark.parametrize(
    "storage",
    [None, TargetStorage(kind=StorageKind.S3, root="s3://fp-work/k8s/", endpoint_url="https://minio.fp.svc:9000")],
    ids=["no store", "s3 store"],
)
def test_without_a_pvc_store_no_claim_is_mounted(storage: TargetStorage | None) -> None:
    pod = pod_of(storage)

    assert STORE_VOLUME not in {v["name"] for v in pod["volumes"]}
    assert set(mounts_of(pod)) == {"/run/fusionplane", "/models", "/cache/trt", "/tmp"}


@pytest.mark.parametrize(
    ("root", "mount", "field", "why"),
    [
        ("pvc://FP_Work/tasks/", "/mnt/work", "storage.uri", "not a valid PersistentVolumeClaim name"),
        ("pvc://fp..work/tasks/", "/mnt/work", "storage.uri", "not a valid PersistentVolumeClaim name"),
        ("pvc://-fp-work/tasks/", "/mnt/work", "storage.uri", "not a valid PersistentVolumeClaim name"),
        (f"pvc://{'a' * 254}/tasks/", "/mnt/work", "storage.uri", "not a valid PersistentVolumeClaim name"),
        ("pvc://fp-work/tasks/", None, "storage.mount_path", "plain absolute path"),
        ("pvc://fp-work/tasks/", "mnt/work", "storage.mount_path", "plain absolute path"),
        ("pvc://fp-work/tasks/", "/mnt/../etc", "storage.mount_path", "plain absolute path"),
        ("pvc://fp-work/tasks/", "/", "storage.mount_path", "plain absolute path"),
        ("pvc://fp-work/tasks/", "/tmp", "storage.mount_path", "clash with the worker's own mount /tmp"),
        ("pvc://fp-work/tasks/", "/cache", "storage.mount_path", "clash with the worker's own mount /cache/trt"),
        ("pvc://fp-work/tasks/", "/models/work", "storage.mount_path", "clash with the worker's own mount /models"),
    ],
)
def test_a_claim_or_mount_path_the_pod_cannot_use_is_refused_naming_the_field(
    root: str, mount: str | None, field: str, why: str
) -> None:
    # built in code, not parsed from a policy: the provider checks again what it puts in the Job
    storage = dataclasses.replace(WORK, root=root, mount_path=mount)

    with pytest.raises(InvalidSpec, match=why) as refused:
        pod_of(storage)

    assert f"target onprem: {field}" in str(refused.value)
    assert refused.value.target == "onprem"
