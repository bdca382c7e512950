"""The Secret and the Job of one attempt, as the JSON the API server takes (no API call)."""

from __future__ import annotations

import base64
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlplane.domain import (
    InvalidSpec,
    Target,
)
from controlplane.domain.target_storage import StorageKind, TargetStorage
from providers.base import (
    LaunchRequest,
)
from providers.bootstrap import (
    LABEL_OWNER,
    SPEC_DIR,
    SPEC_PATH,
    resource_tags,
)
from providers.kubernetes.pools import pool_pod_fields
from providers.kubernetes.settings import LABEL_VALUE, JobSettings, is_dns_subdomain

#: the Job and Secret are resource_name(NAME_PREFIX, attempt_id)
NAME_PREFIX = "fp"
CONTAINER = "worker"
INIT_CONTAINER = "models-verify"
MODELS_DIR = "/models"
TRT_CACHE_DIR = "/cache/trt"
#: a pod-private emptyDir, not the node's /tmp
SCRATCH_DIR = "/tmp"
SECRET_KEY = "spec.json"
WORKER_UID = 1000
WORKER_COMMAND = ("fusionctl", "worker", "run", "--spec", SPEC_PATH)
VERIFY_COMMAND = ("fusionctl", "models", "verify", "--model-dir", MODELS_DIR)
LABEL_NAME = "app.kubernetes.io/name"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_INSTANCE = "app.kubernetes.io/instance"
WORKER_APP = "fusionplane-worker"
MANAGER = "fusionplane"
#: not a secret: which policy target launched the Job, for people running kubectl
ANNOTATION_TARGET = "fusionplane.io/target"
#: a pod on a cloud node pool: the offer (cloud/region/instance type) it was priced at, for people and ``status``
ANNOTATION_OFFER = "fusionplane.io/offer"
#: the pod label that makes AKS's workload-identity webhook project the service account's Azure token
AKS_WORKLOAD_IDENTITY_LABEL = "azure.workload.identity/use"
#: the volume of a ``pvc`` target store (the policy's ``targets[].storage``)
STORE_VOLUME = "target-store"


def job_labels(request: LaunchRequest, name: str, *, owner: str) -> dict[str, str]:
    """The labels of the attempt's Job, pod and Secret: ids only, never the token."""
    labels = {
        LABEL_NAME: WORKER_APP,
        LABEL_MANAGED_BY: MANAGER,
        LABEL_INSTANCE: name,
        **resource_tags(task_id=request.task_id, attempt_id=request.attempt_id, owner=owner),
    }
    for key, value in labels.items():
        # ids longer than 63 characters cannot be label values; say so instead of a bare 422
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise InvalidSpec(
                f"label {key}={value!r} is not a valid Kubernetes label value (at most 63 of [A-Za-z0-9._-])",
                target=request.candidate.target,
            )
    return labels


def secret_body(name: str, settings: JobSettings, labels: Mapping[str, str], spec: str) -> dict[str, Any]:
    """The immutable Secret holding the worker spec (the only place the callback token goes)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": settings.namespace, "labels": dict(labels)},
        "type": "Opaque",
        # immutable: the kubelet stops watching it, and nobody can swap a running attempt's token
        "immutable": True,
        "data": {SECRET_KEY: base64.b64encode(spec.encode()).decode()},
    }


def job_body(
    request: LaunchRequest, target: Target, settings: JobSettings, name: str, labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Job for ``request`` (no API call); ``InvalidSpec`` for a deadline or a ``pvc`` store it cannot use."""
    claim = StoreClaim.of(request.target_storage, target=target.name)
    pod = pod_spec(settings, name, store=claim)
    annotations = {ANNOTATION_TARGET: target.name}
    pod_labels = dict(labels)
    if target.cloud is not None:
        # a cloud node pool: the same hardened pod, landed on the capacity type and instance type it was priced at
        candidate = request.candidate
        pod.update(
            pool_pod_fields(
                target.cloud,
                instance_type=candidate.instance_type,
                urgent=request.priority == "urgent",
                spread_labels={LABEL_NAME: WORKER_APP, LABEL_OWNER: labels[LABEL_OWNER]},
                node_selector=settings.node_selector,
                tolerations=settings.tolerations,
                target=target.name,
            )
        )
        if target.cloud.provider == "azure" and settings.service_account:
            # AKS workload identity: its webhook gives the pod the service account's identity (the bucket) only
            # when the pod asks for it with this label
            pod_labels[AKS_WORKLOAD_IDENTITY_LABEL] = "true"
        annotations[ANNOTATION_OFFER] = (
            f"{target.cloud.provider}/{target.cloud.region}/{candidate.instance_type or '-'}"
        )
    job_spec: dict[str, Any] = {
        # a retry is a new attempt, decided by the control plane from the exit code
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": settings.ttl_after_finished_s,
        "template": {"metadata": {"labels": pod_labels}, "spec": pod},
    }
    if request.deadline_seconds is not None:
        if request.deadline_seconds <= 0:
            raise InvalidSpec("deadline_seconds must be > 0", target=target.name)
        job_spec["activeDeadlineSeconds"] = int(request.deadline_seconds)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": dict(labels),
            "annotations": annotations,
        },
        "spec": job_spec,
    }


def pod_spec(settings: JobSettings, name: str, *, store: StoreClaim | None = None) -> dict[str, Any]:
    """The Job's one pod: the worker (after ``models-verify`` with a models PVC) and its volumes, with the
    target's ``pvc`` store mounted read-write when it has one."""
    image = settings.worker
    mounts, volumes = _spec_and_scratch(settings, name)
    if store is not None:
        mounts.append({"name": STORE_VOLUME, "mountPath": store.mount_path})
        volumes.append({"name": STORE_VOLUME, "persistentVolumeClaim": {"claimName": store.claim}})
    init_containers: list[dict[str, Any]] = []
    if settings.models_pvc:
        mounts.insert(1, {"name": "models", "mountPath": MODELS_DIR, "readOnly": True})
        volumes.insert(
            1, {"name": "models", "persistentVolumeClaim": {"claimName": settings.models_pvc, "readOnly": True}}
        )
        init_containers.append(_models_verify(image.image))
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # the worker checkpoints on SIGTERM and exits 75; its final callback needs the time
        "terminationGracePeriodSeconds": image.stop_timeout_s,
        # the worker never talks to the Kubernetes API: no token of the pod's service account in it
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": WORKER_UID,
            "runAsGroup": WORKER_UID,
            "fsGroup": WORKER_UID,
            # a large model or TensorRT cache is not chowned file by file at every pod start
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": CONTAINER,
                "image": image.image,
                "command": list(WORKER_COMMAND),
                "env": [{"name": k, "value": v} for k, v in sorted(_worker_env(settings).items())],
                "resources": _resources(settings),
                "securityContext": _container_security(),
                "volumeMounts": mounts,
            }
        ],
        "volumes": volumes,
    }
    if init_containers:
        spec["initContainers"] = init_containers
    spec.update(_placement(settings))
    return spec


#: where the pod's own volumes are mounted: a store's mount_path on, above or under one would hide it
_OWN_MOUNTS = (SPEC_DIR, MODELS_DIR, TRT_CACHE_DIR, SCRATCH_DIR)


@dataclass(frozen=True, kw_only=True)
class StoreClaim:
    """The PersistentVolumeClaim of a ``pvc`` target store and where the worker's pod mounts it."""

    claim: str
    mount_path: str

    @classmethod
    def of(cls, storage: TargetStorage | None, *, target: str) -> StoreClaim | None:
        """The claim to mount for ``storage`` (None: no store, or a store the pod does not mount).

        ``InvalidSpec`` names the field: a claim that is not a Kubernetes
        object name, a mount path that is not a plain absolute path or that
        would sit on, above or under one of the pod's own volumes.
        """
        if storage is None or storage.kind != StorageKind.PVC:
            return None
        claim = storage.root.removeprefix("pvc://").partition("/")[0]
        if not is_dns_subdomain(claim):
            raise InvalidSpec(
                f"target {target}: storage.uri names claim {claim!r}, not a valid PersistentVolumeClaim name "
                "(a DNS-1123 subdomain: lowercase letters, digits, '-' and '.')",
                target=target,
            )
        mount = storage.mount_path
        if mount is None or not mount.startswith("/") or mount == "/" or posixpath.normpath(mount) != mount:
            raise InvalidSpec(
                f"target {target}: storage.mount_path must be a plain absolute path other than /, not {mount!r}",
                target=target,
            )
        for own in _OWN_MOUNTS:
            if own == mount or own.startswith(f"{mount}/") or mount.startswith(f"{own}/"):
                raise InvalidSpec(
                    f"target {target}: storage.mount_path {mount} would clash with the worker's own mount {own}",
                    target=target,
                )
        return cls(claim=claim, mount_path=mount)


def _worker_env(settings: JobSettings) -> dict[str, str]:
    env = dict(settings.worker.env)
    # paths only, never the spec itself; HOME on the scratch volume because the root filesystem is read-only
    env.update(
        {
            "FUSIONPLANE_WORKER_SPEC": SPEC_PATH,
            "FUSIONPLANE_MODEL_DIR": MODELS_DIR,
            "FUSIONPLANE_TRT_CACHE": TRT_CACHE_DIR,
            "HOME": SCRATCH_DIR,
        }
    )
    return env


def _container_security() -> dict[str, Any]:
    """Every container's security context: the worker's uid, nothing writable but its volumes."""
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(settings: JobSettings) -> dict[str, dict[str, str]]:
    resources: dict[str, dict[str, str]] = {part: dict(values) for part, values in settings.resources.items()}
    if settings.gpus:
        # an extended resource is requested through its limit (the API server copies it to requests)
        resources.setdefault("limits", {})[settings.gpu_resource] = str(settings.gpus)
    return resources


def _spec_and_scratch(settings: JobSettings, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the worker's volume mounts, the pod's volumes) for the spec Secret, the TensorRT cache and scratch."""
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "trt-cache", "mountPath": TRT_CACHE_DIR},
        {"name": "scratch", "mountPath": SCRATCH_DIR},
    ]
    scratch: dict[str, Any] = {}
    if settings.scratch_size_limit:
        scratch["sizeLimit"] = settings.scratch_size_limit
    volumes: list[dict[str, Any]] = [
        {
            "name": "spec",
            "secret": {
                "secretName": name,
                # 0440 and group 1000 (fsGroup): the worker can read it, nobody can write it
                "defaultMode": 0o440,
                "items": [{"key": SECRET_KEY, "path": os.path.basename(SPEC_PATH)}],
            },
        },
        {"name": "trt-cache"}
        | (
            {"persistentVolumeClaim": {"claimName": settings.trt_cache_pvc}}
            if settings.trt_cache_pvc
            else {"emptyDir": {}}
        ),
        {"name": "scratch", "emptyDir": scratch},
    ]
    return mounts, volumes


def _models_verify(image: str) -> dict[str, Any]:
    """The init container that checks the models PVC.

    It reads every model file once (sha256 and signature): a broken cache fails
    the pod with 69 before it holds a GPU for minutes, and the worker starts
    from a warm page cache.
    """
    return {
        "name": INIT_CONTAINER,
        "image": image,
        "command": list(VERIFY_COMMAND),
        "env": [
            {"name": "FUSIONPLANE_MODEL_DIR", "value": MODELS_DIR},
            {"name": "HOME", "value": SCRATCH_DIR},
        ],
        "securityContext": _container_security(),
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_DIR, "readOnly": True},
            {"name": "scratch", "mountPath": SCRATCH_DIR},
        ],
    }


def _placement(settings: JobSettings) -> dict[str, Any]:
    """The pod fields a target's settings add when set: nodes, tolerations, priority, identity, pull secrets."""
    fields: dict[str, Any] = {}
    if settings.node_selector:
        fields["nodeSelector"] = dict(settings.node_selector)
    if settings.tolerations:
        fields["tolerations"] = [dict(t) for t in settings.tolerations]
    if settings.priority_class:
        fields["priorityClassName"] = settings.priority_class
    if settings.service_account:
        # for the S3 role (IRSA, workload identity); the webhook mounts its own token
        fields["serviceAccountName"] = settings.service_account
    if settings.image_pull_secrets:
        fields["imagePullSecrets"] = [{"name": n} for n in settings.image_pull_secrets]
    return fields
