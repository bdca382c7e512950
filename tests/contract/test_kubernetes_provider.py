"""The Kubernetes provider against kmock's emulator, driven by the real ``kubernetes`` client over HTTP.

The contract suite first, then what only this provider does: the Job and
Secret it writes, adoption on 409, the status mapping from Job conditions
and pod status, cancel, list_owned's label filtering and paging, the error
taxonomy, and a dead or silent API server.

kmock has no controllers: a test plays the Job controller by creating the
Job's pod (:func:`start_pod`) and writes Job and pod status through the
client's ``*_status`` patch calls, as the kubelet and controllers would.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controlplane.domain import InvalidSpec, ProviderError, QuotaExceeded, Target, Throttled, Unavailable
from controlplane.domain.worker_spec import parse_worker_spec
from providers.base import BackendState, LaunchRequest, Provider
from providers.bootstrap import LABEL_ATTEMPT, LABEL_OWNER, LABEL_TASK, WorkerImage, resource_name, spec_json
from providers.kubernetes import KubernetesProvider
from tests.contract.provider_contract import ProviderContract, candidate_for, worker_spec
from tests.support.kmock_cluster import (
    EVENTS,
    JOBS,
    PODS,
    SECRETS,
    KmockCluster,
    SilentServer,
    api_client,
    free_port,
    write_kubeconfig,
)

pytestmark = pytest.mark.timeout(60)

NAMESPACE = "fp-test"
IMAGE = "registry.internal/fusionplane/worker:0.1.0-gpu"
OWNER = "fusionplane"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
TOKEN = "att_tok-DO-NOT-LEAK-4f1c9e"
CONTRACT_TARGET = Target(
    name="k8s-contract", provider="kubernetes", private=True, settings={"namespace": NAMESPACE, "worker_image": IMAGE}
)
FULL_SETTINGS: dict[str, Any] = {
    "namespace": NAMESPACE,
    "worker_image": IMAGE,
    "gpus": 2,
    "node_selector": {"nvidia.com/gpu.product": "NVIDIA-A10G"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    "priority_class": "fusionplane-batch",
    "models_pvc": "fusionplane-models",
    "trt_cache_pvc": "fusionplane-trt-cache",
    "service_account": "fusionplane-worker",
    "image_pull_secrets": ["registry-creds"],
    "resources": {"requests": {"cpu": "4", "memory": "16Gi"}, "limits": {"memory": "24Gi"}},
    "ttl_seconds_after_finished": 600,
    "scratch_size_limit": "40Gi",
}


# -- fixtures ---------------------------------------------------------------------------------


def make(client: kubernetes.client.ApiClient, *targets: Target, **kwargs: Any) -> KubernetesProvider:
    kwargs.setdefault("clock", lambda: NOW)
    kwargs.setdefault("request_timeout_s", 5.0)
    kwargs.setdefault("owner", OWNER)
    return KubernetesProvider(list(targets) or [CONTRACT_TARGET], api_client_for=lambda _t: client, **kwargs)


@pytest.fixture
def provider(client: kubernetes.client.ApiClient) -> KubernetesProvider:
    return make(client)


def target(name: str = "k8s", **settings: Any) -> Target:
    return Target(name=name, provider="kubernetes", private=True, settings={"namespace": NAMESPACE, **settings})


def request_for(attempt_id: str, on: Target = CONTRACT_TARGET, *, deadline: int | None = None, **spec: Any) -> Any:
    return LaunchRequest(
        attempt_id=attempt_id,
        task_id="task-k8s",
        candidate=candidate_for(on),
        worker_spec=parse_worker_spec(worker_spec(attempt_id, "task-k8s", **spec)),
        deadline_seconds=deadline,
    )


def with_token(attempt_id: str, on: Target = CONTRACT_TARGET, token: str = TOKEN, **kwargs: Any) -> Any:
    callback = {"url": f"https://cp.internal/v1/attempts/{attempt_id}", "token": token, "heartbeat_seconds": 10}
    return request_for(attempt_id, on, callback=callback, **kwargs)


def _drain(response: Any) -> dict[str, Any]:
    assert response.status < 300, response.data
    body: dict[str, Any] = json.loads(response.data)
    response.release_conn()
    return body


def read_job(client: kubernetes.client.ApiClient, attempt_id: str) -> dict[str, Any]:
    batch = kubernetes.client.BatchV1Api(client)
    return _drain(batch.read_namespaced_job(resource_name("fp", attempt_id), NAMESPACE, _preload_content=False))


def set_job_status(client: kubernetes.client.ApiClient, attempt_id: str, status: dict[str, Any]) -> None:
    batch = kubernetes.client.BatchV1Api(client)
    name = resource_name("fp", attempt_id)
    _drain(batch.patch_namespaced_job_status(name, NAMESPACE, {"status": status}, _preload_content=False))


def start_pod(
    client: kubernetes.client.ApiClient,
    attempt_id: str,
    status: dict[str, Any],
    *,
    suffix: str = "x7k2p",
    uid: str | None = None,
    created: datetime | None = None,
) -> str:
    """Create the Job's pod as the Job controller would (labels, controller reference), then set its status."""
    job = read_job(client, attempt_id)
    name = job["metadata"]["name"]
    job_uid = uid or job["metadata"]["uid"]
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    labels |= {"batch.kubernetes.io/job-name": name, "job-name": name, "batch.kubernetes.io/controller-uid": job_uid}
    metadata: dict[str, Any] = {
        "name": f"{name}-{suffix}",
        "namespace": NAMESPACE,
        "labels": labels,
        "ownerReferences": [
            {"apiVersion": "batch/v1", "kind": "Job", "name": name, "uid": job_uid, "controller": True}
        ],
    }
    if created is not None:
        metadata["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": job["spec"]["template"]["spec"]}
    core = kubernetes.client.CoreV1Api(client)
    _drain(core.create_namespaced_pod(NAMESPACE, body, _preload_content=False))
    _drain(core.patch_namespaced_pod_status(metadata["name"], NAMESPACE, {"status": status}, _preload_content=False))
    return str(metadata["name"])


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def terminated(code: int, reason: str = "Error", name: str = "worker") -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "state": {"terminated": {"exitCode": code, "reason": reason}},
    }


JOB_FAILED = {
    "failed": 1,
    "conditions": [
        {
            "type": "Failed",
            "status": "True",
            "reason": "BackoffLimitExceeded",
            "message": "Job has reached the specified backoff limit",
        }
    ],
}


# -- the contract -----------------------------------------------------------------------------


class TestKubernetesProvider(ProviderContract):
    target = CONTRACT_TARGET

    @pytest.fixture(autouse=True)
    def _emulated(self) -> Iterator[None]:
        with KmockCluster() as emulated:
            self.cluster = emulated
            self.client = api_client(emulated.url)
            try:
                yield
            finally:
                self.client.close()

    def make_provider(self, tmp_path: Path) -> Provider:
        return make(self.client)

    def resources_of(self, provider: Provider, attempt_id: str) -> int:
        """Jobs on the emulated cluster labelled with the attempt (what a second launch must not add)."""
        return sum(
            1 for job in self.cluster.objects(JOBS) if job["metadata"]["labels"].get(LABEL_ATTEMPT) == attempt_id
        )


# -- the Job and its Secret -------------------------------------------------------------------


def test_the_job_and_secret_carry_every_setting_and_the_token_only_in_the_secret(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    on = target(**FULL_SETTINGS)
    provider = make(client, on, owner="cp-east")
    request = with_token("att-shape", on, deadline=900)

    result = provider.launch(request)

    name = resource_name("fp", "att-shape")
    assert name == "fp-att-shape"
    assert result.backend_ref == f"{NAMESPACE}/{name}"
    assert not result.adopted
    [job] = cluster.objects(JOBS)
    [secret] = cluster.objects(SECRETS)
    labels = {
        "app.kubernetes.io/name": "fusionplane-worker",
        "app.kubernetes.io/managed-by": "fusionplane",
        "app.kubernetes.io/instance": name,
        LABEL_TASK: "task-k8s",
        LABEL_ATTEMPT: "att-shape",
        LABEL_OWNER: "cp-east",
    }
    assert job["metadata"]["name"] == secret["metadata"]["name"] == name
    assert job["metadata"]["namespace"] == secret["metadata"]["namespace"] == NAMESPACE
    assert job["metadata"]["labels"] == secret["metadata"]["labels"] == labels
    assert job["metadata"]["annotations"] == {"fusionplane.io/target": "k8s"}
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 900
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["template"]["metadata"]["labels"] == labels
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "fsGroup": 1000,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert pod["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A10G"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod["priorityClassName"] == "fusionplane-batch"
    assert pod["serviceAccountName"] == "fusionplane-worker"
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    restricted = {
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "runAsGroup": 1000,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    [worker] = pod["containers"]
    assert (worker["name"], worker["image"]) == ("worker", IMAGE)
    assert worker["command"] == ["fusionctl", "worker", "run", "--spec", "/run/fusionplane/spec.json"]
    assert worker["securityContext"] == restricted
    assert worker["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"memory": "24Gi", "nvidia.com/gpu": "2"},
    }
    assert {e["name"]: e["value"] for e in worker["env"]} == {
        "FUSIONPLANE_WORKER_SPEC": "/run/fusionplane/spec.json",
        "FUSIONPLANE_MODEL_DIR": "/models",
        "FUSIONPLANE_TRT_CACHE": "/cache/trt",
        "HOME": "/tmp",
    }
    assert {m["mountPath"]: (m["name"], m.get("readOnly", False)) for m in worker["volumeMounts"]} == {
        "/run/fusionplane": ("spec", True),
        "/models": ("models", True),
        "/cache/trt": ("trt-cache", False),
        "/tmp": ("scratch", False),
    }
    [init] = pod["initContainers"]
    assert (init["name"], init["image"]) == ("models-verify", IMAGE)
    assert init["command"] == ["fusionctl", "models", "verify", "--model-dir", "/models"]
    assert init["securityContext"] == restricted
    assert "resources" not in init  # the check needs no GPU: the node's GPU is not held by it
    assert {m["mountPath"]: m.get("readOnly", False) for m in init["volumeMounts"]} == {"/models": True, "/tmp": False}
    assert {v["name"]: {k: x for k, x in v.items() if k != "name"} for v in pod["volumes"]} == {
        "spec": {
            "secret": {
                "secretName": name,
                "defaultMode": 0o440,
                "items": [{"key": "spec.json", "path": "spec.json"}],
            }
        },
        "models": {"persistentVolumeClaim": {"claimName": "fusionplane-models", "readOnly": True}},
        "trt-cache": {"persistentVolumeClaim": {"claimName": "fusionplane-trt-cache"}},
        "scratch": {"emptyDir": {"sizeLimit": "40Gi"}},
    }

    # the Secret holds exactly the rendered spec; the token is there and nowhere else
    assert (secret["type"], secret["immutable"]) == ("Opaque", True)
    assert set(secret["data"]) == {"spec.json"}
    assert base64.b64decode(secret["data"]["spec.json"]).decode() == spec_json(request.worker_spec)
    assert TOKEN in base64.b64decode(secret["data"]["spec.json"]).decode()
    assert TOKEN not in json.dumps(job)
    assert TOKEN not in json.dumps(secret["metadata"])
    provider.status("att-shape")
    provider.list_owned()
    provider.cancel("att-shape")
    carrying = [(r.method, r.url.path) for r in cluster.requests() if _carries_token(r)]
    assert carrying == [("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets")]
    assert TOKEN not in caplog.text


def _carries_token(request: Any) -> bool:
    """Does a request's body hold the token, plainly or base64-encoded as Secret data?"""
    if TOKEN in request.text:
        return True
    data = request.data.get("data") if isinstance(request.data, dict) else None
    return any(TOKEN in base64.b64decode(value).decode() for value in (data or {}).values())


def test_a_task_priority_picks_its_priority_class_and_an_unlisted_one_keeps_the_targets(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    classes = {"urgent": "fp-urgent", "high": "fp-high"}
    on = target(worker_image=IMAGE, priority_class="fusionplane-batch", priority_classes=classes)
    provider = make(client, on)
    for attempt_id, priority in (("att-urgent", "urgent"), ("att-low", "low"), ("att-none", None)):
        request = request_for(attempt_id, on)
        provider.launch(dataclasses.replace(request, priority=priority))
    pods = {job["metadata"]["labels"][LABEL_ATTEMPT]: job["spec"]["template"]["spec"] for job in cluster.objects(JOBS)}
    assert pods["att-urgent"]["priorityClassName"] == "fp-urgent"
    assert pods["att-low"]["priorityClassName"] == "fusionplane-batch"
    assert pods["att-none"]["priorityClassName"] == "fusionplane-batch"


def test_a_priority_class_for_an_unknown_priority_is_refused_naming_the_key(
    client: kubernetes.client.ApiClient,
) -> None:
    on = target(worker_image=IMAGE, priority_classes={"critical": "fp-critical"})
    with pytest.raises(InvalidSpec, match=r"settings\.priority_classes"):
        make(client, on).launch(request_for("att-bad", on))


def test_defaults_of_a_minimal_target_and_a_cpu_target(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    # settings.image: the older name of settings.worker_image, still accepted
    gpu = Target(name="gpu", provider="kubernetes", private=True, settings={"image": IMAGE})
    cpu = Target(name="cpu", provider="kubernetes", private=True, settings={"worker_image": IMAGE, "gpus": 0})
    provider = make(client, gpu, cpu)

    assert provider.launch(request_for("att-gpu", gpu)).backend_ref == "fusionplane/fp-att-gpu"
    provider.launch(request_for("att-cpu", cpu))

    jobs = {job["metadata"]["name"]: job for job in cluster.objects(JOBS, "fusionplane")}
    assert set(jobs) == {"fp-att-gpu", "fp-att-cpu"}
    gpu_spec = jobs["fp-att-gpu"]["spec"]
    assert gpu_spec["ttlSecondsAfterFinished"] == 3600
    assert "activeDeadlineSeconds" not in gpu_spec
    pod = gpu_spec["template"]["spec"]
    assert pod["containers"][0]["resources"] == {"limits": {"nvidia.com/gpu": "1"}}
    for absent in ("initContainers", "nodeSelector", "tolerations", "priorityClassName", "serviceAccountName"):
        assert absent not in pod
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert set(volumes) == {"spec", "trt-cache", "scratch"}  # no models PVC, no model check
    assert volumes["trt-cache"]["emptyDir"] == {}
    assert "/models" not in {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert jobs["fp-att-cpu"]["spec"]["template"]["spec"]["containers"][0]["resources"] == {}


def test_the_secret_is_created_first_and_then_owned_by_the_job(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, provider: KubernetesProvider
) -> None:
    provider.launch(request_for("att-order"))

    writes = [(r.method, r.resource) for r in cluster.requests() if r.method in ("POST", "PATCH")]
    assert writes == [("POST", SECRETS), ("POST", JOBS), ("PATCH", SECRETS)]
    [job] = cluster.objects(JOBS)
    [secret] = cluster.objects(SECRETS)
    assert secret["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": "fp-att-order",
            "uid": job["metadata"]["uid"],
            "blockOwnerDeletion": True,
            "controller": False,
        }
    ]
    [patch] = cluster.requests(resource=SECRETS, method="PATCH")
    assert patch.headers["Content-Type"] == "application/merge-patch+json"


def test_a_second_launch_adopts_without_a_second_job_or_secret(
    cluster: KmockCluster, provider: KubernetesProvider
) -> None:
    first = provider.launch(request_for("att-again"))
    second = provider.launch(request_for("att-again"))

    assert (second.adopted, second.backend_ref) == (True, first.backend_ref)
    assert len(cluster.objects(JOBS)) == len(cluster.objects(SECRETS)) == 1
    assert len(cluster.requests(resource=JOBS, method="POST")) == 1


def test_409_on_job_create_is_adoption(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, provider: KubernetesProvider
) -> None:
    # another scheduler's launch of the same attempt won the race: its Job exists when ours is sent
    rival = make(client)
    rival.launch(request_for("att-race"))
    _drain(
        kubernetes.client.CoreV1Api(client).delete_namespaced_secret("fp-att-race", NAMESPACE, _preload_content=False)
    )
    original_uid = read_job(client, "att-race")["metadata"]["uid"]
    cluster.fail_next(404, 'jobs.batch "fp-att-race" not found', method="GET", resource=JOBS)

    result = provider.launch(request_for("att-race"))

    assert (result.adopted, result.backend_ref) == (True, f"{NAMESPACE}/fp-att-race")
    assert len(cluster.requests(resource=JOBS, method="POST")) == 2  # the rival's and our refused one
    [job] = cluster.objects(JOBS)
    assert job["metadata"]["uid"] == original_uid
    [secret] = cluster.objects(SECRETS)
    assert secret["metadata"]["ownerReferences"][0]["uid"] == original_uid


def test_409_on_secret_create_reuses_or_replaces_a_secret_left_by_a_dead_launch(
    cluster: KmockCluster, provider: KubernetesProvider
) -> None:
    # a launch that died between the Secret and the Job: simulated by refusing the Job once, and the
    # clean-up delete of the Secret that a refusal makes
    cluster.fail_next(503, "etcdserver: request timed out", method="POST", resource=JOBS)
    cluster.fail_next(503, "etcdserver: request timed out", method="DELETE", resource=SECRETS)
    with pytest.raises(Unavailable):
        provider.launch(with_token("att-half"))
    [left] = cluster.objects(SECRETS)
    assert "ownerReferences" not in left["metadata"]

    same = provider.launch(with_token("att-half"))
    assert not same.adopted
    [kept] = cluster.objects(SECRETS)
    assert kept["metadata"]["uid"] == left["metadata"]["uid"]  # same spec: reused as is

    cluster.fail_next(503, "etcdserver: request timed out", method="POST", resource=JOBS)
    cluster.fail_next(503, "etcdserver: request timed out", method="DELETE", resource=SECRETS)
    with pytest.raises(Unavailable):
        provider.launch(with_token("att-new-token", token="att_first"))
    cleanups = len(cluster.requests(resource=SECRETS, method="DELETE"))
    provider.launch(with_token("att-new-token", token="att_second"))
    secret = next(s for s in cluster.objects(SECRETS) if s["metadata"]["name"] == "fp-att-new-token")
    assert "att_second" in base64.b64decode(secret["data"]["spec.json"]).decode()
    replacing = cluster.requests(resource=SECRETS, method="DELETE")[cleanups:]
    assert [d.data.get("preconditions", {}).get("uid") is not None for d in replacing] == [True]


def test_an_attempt_whose_job_was_deleted_is_never_started_twice(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, provider: KubernetesProvider
) -> None:
    provider.launch(request_for("att-once"))
    # someone deleted the Job; on a real cluster the garbage collector would follow with the Secret
    batch = kubernetes.client.BatchV1Api(client)
    _drain(batch.delete_namespaced_job("fp-att-once", NAMESPACE, _preload_content=False))

    again = provider.launch(request_for("att-once"))

    assert again.adopted
    assert cluster.objects(JOBS) == []
    assert len(cluster.requests(resource=JOBS, method="POST")) == 1
    status = provider.status("att-once")
    assert status.state is BackendState.LOST
    assert "job deleted" in (status.reason or "")


def test_two_attempt_ids_with_one_name_are_refused(provider: KubernetesProvider) -> None:
    provider.launch(request_for("att-case"))
    with pytest.raises(InvalidSpec, match="belongs to attempt 'att-case'"):
        provider.launch(request_for("ATT-case"))
    # and status does not report the other attempt's Job as this one's
    assert "unknown attempt" in (provider.status("ATT-case").reason or "")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"node_selector": {"gpu": True}}, "settings.node_selector"),
        ({"gpus": -1}, "settings.gpus"),
        ({"tolerations": "gpu"}, "settings.tolerations"),
        ({"namespace": "Not_A_Namespace"}, "settings.namespace"),
        ({"worker_image": None}, "settings.worker_image is required"),
        ({"worker_image": ""}, "settings.worker_image must be an image reference"),
        ({"image": "registry.internal/other:1"}, "settings.image and settings.worker_image differ"),
        ({"resources": {"limits": ["cpu"]}}, "settings.resources"),
        # a typo is refused, not ignored in favour of the default namespace
        ({"namespce": "gpu"}, "settings.namespce is not a setting of kubernetes targets"),
    ],
)
def test_bad_settings_are_invalid_spec_before_any_call(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, settings: dict[str, Any], match: str
) -> None:
    on = target(**{"worker_image": IMAGE, **settings})
    with pytest.raises(InvalidSpec, match=match) as raised:
        make(client, on).launch(request_for("att-bad", on))
    assert not raised.value.retryable
    assert cluster.requests(resource=JOBS) == []


def test_the_default_image_and_a_per_target_override_over_a_reloaded_policy(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    """The constructor every provider shares: callable targets, a default WorkerImage, settings.worker_image."""
    default = WorkerImage(image="registry.internal/fusionplane/worker:default", env={"LOG_LEVEL": "debug"})
    current = [target("plain")]
    provider = KubernetesProvider(
        lambda: current, image=default, owner="cp-shape", api_client_for=lambda _t: client, clock=lambda: NOW
    )
    provider.launch(request_for("att-default", current[0]))
    # a policy reload: the provider sees the new target, and its own image wins over the default
    current = [target("plain"), target("pinned", worker_image=IMAGE)]
    provider.launch(request_for("att-pinned", current[1]))
    jobs = {job["metadata"]["name"]: job for job in cluster.objects(JOBS)}
    default_pod = jobs["fp-att-default"]["spec"]["template"]["spec"]
    pinned_pod = jobs["fp-att-pinned"]["spec"]["template"]["spec"]
    assert default_pod["containers"][0]["image"] == default.image
    assert pinned_pod["containers"][0]["image"] == IMAGE
    # only the image reference is overridden: the default's env still applies
    assert {"name": "LOG_LEVEL", "value": "debug"} in pinned_pod["containers"][0]["env"]
    # a reloaded target with bad settings fails its launch, naming the key, not the provider
    current = [target("broken", gpus="two")]
    with pytest.raises(InvalidSpec, match=r"settings\.gpus"):
        provider.launch(request_for("att-broken", current[0]))
    # without a default image a target must name one
    bare = make(client, target("no-image"), owner="cp-shape")
    with pytest.raises(InvalidSpec, match=r"settings\.worker_image is required"):
        bare.launch(request_for("att-no-image", target("no-image")))


def test_an_unknown_target_or_deadline_is_invalid(provider: KubernetesProvider) -> None:
    stranger = target("not-configured", worker_image=IMAGE)
    with pytest.raises(InvalidSpec, match="no kubernetes target named 'not-configured'"):
        provider.launch(request_for("att-who", stranger))
    with pytest.raises(InvalidSpec, match="deadline_seconds"):
        provider.launch(request_for("att-when", deadline=0))


# -- status -----------------------------------------------------------------------------------


def running() -> dict[str, Any]:
    return {
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "worker", "ready": True, "restartCount": 0, "state": {"running": {}}}],
    }


STATUS_CASES: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None, BackendState, str, int | None]] = [
    # (id, job status, pod status, state, text in the reason, exit code)
    ("running", None, running(), BackendState.RUNNING, "", None),
    (
        "complete",
        {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]},
        {"phase": "Succeeded", "containerStatuses": [terminated(0, "Completed")]},
        BackendState.SUCCEEDED,
        "",
        0,
    ),
    (
        "exit-75-preempted",
        JOB_FAILED,
        {"phase": "Failed", "containerStatuses": [terminated(75)]},
        BackendState.PREEMPTED,
        "exited 75 (EX_TEMPFAIL",
        75,
    ),
    (
        "exit-70-failed",
        JOB_FAILED,
        {"phase": "Failed", "containerStatuses": [terminated(70)]},
        BackendState.FAILED,
        "exited 70 (EX_SOFTWARE",
        70,
    ),
    (
        "model-check-69",
        JOB_FAILED,
        {
            "phase": "Failed",
            "initContainerStatuses": [terminated(69, name="models-verify")],
            "containerStatuses": [{"name": "worker", "state": {"waiting": {"reason": "PodInitializing"}}}],
        },
        BackendState.FAILED,
        "models-verify (init container) exited 69",
        69,
    ),
    (
        "deadline-beats-exit-75",
        {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "DeadlineExceeded",
                    "message": "Job was active longer than specified deadline",
                }
            ],
        },
        {"phase": "Failed", "containerStatuses": [terminated(75)]},
        BackendState.FAILED,
        "deadline: the job ran past activeDeadlineSeconds=600",
        None,
    ),
    (
        "evicted",
        JOB_FAILED,
        {
            "phase": "Failed",
            "reason": "Evicted",
            "message": "The node was low on resource: ephemeral-storage.",
            "containerStatuses": [terminated(137)],
        },
        BackendState.PREEMPTED,
        "Evicted: The node was low on resource",
        137,
    ),
    (
        "disruption-target",
        JOB_FAILED,
        {
            "phase": "Failed",
            "conditions": [
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": "fp-batch preempted it",
                }
            ],
        },
        BackendState.PREEMPTED,
        "disrupted (PreemptionByScheduler)",
        None,
    ),
    (
        "node-shutdown",
        JOB_FAILED,
        {
            "phase": "Failed",
            "reason": "Terminated",
            "message": "Pod was terminated in response to imminent node shutdown.",
        },
        BackendState.PREEMPTED,
        "imminent node shutdown",
        None,
    ),
    (
        "oom-killed-is-lost",
        JOB_FAILED,
        {"phase": "Failed", "containerStatuses": [terminated(137, "OOMKilled")]},
        BackendState.LOST,
        "killed by signal 9 (exit 137, OOMKilled)",
        137,
    ),
    (
        "unschedulable",
        None,
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    "lastTransitionTime": stamp(NOW - timedelta(seconds=95)),
                }
            ],
        },
        BackendState.PENDING,
        "unschedulable: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu. [unschedulable_for_s=95]",
        None,
    ),
    (
        "image-pull-backoff",
        None,
        {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [
                {
                    "name": "worker",
                    "state": {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}},
                }
            ],
        },
        BackendState.FAILED,
        "image pull: ImagePullBackOff: Back-off pulling image",
        None,
    ),
    (
        "failure-target-waits-for-the-pod",
        {"conditions": [{"type": "FailureTarget", "status": "True", "reason": "PodFailurePolicy"}]},
        running(),
        BackendState.RUNNING,
        "job failing (PodFailurePolicy); waiting for its pod to end",
        None,
    ),
    ("failed-without-a-pod", JOB_FAILED, None, BackendState.FAILED, "no pod left to say why", None),
    (
        "verifying-models",
        None,
        {"phase": "Pending", "initContainerStatuses": [{"name": "models-verify", "state": {"running": {}}}]},
        BackendState.PENDING,
        "verifying the model cache",
        None,
    ),
]


@pytest.mark.parametrize(
    ("job_status", "pod_status", "state", "reason", "exit_code"),
    [case[1:] for case in STATUS_CASES],
    ids=[case[0] for case in STATUS_CASES],
)
def test_status_maps_job_conditions_and_pod_status(
    client: kubernetes.client.ApiClient,
    provider: KubernetesProvider,
    job_status: dict[str, Any] | None,
    pod_status: dict[str, Any] | None,
    state: BackendState,
    reason: str,
    exit_code: int | None,
) -> None:
    provider.launch(request_for("att-st", deadline=600))
    if pod_status is not None:
        start_pod(client, "att-st", pod_status)
    if job_status is not None:
        set_job_status(client, "att-st", job_status)

    status = provider.status("att-st")

    assert status.state is state, status
    assert reason in (status.reason or ""), status
    assert status.exit_code == exit_code
    assert {o.attempt_id: o.state for o in provider.list_owned()} == {"att-st": state}


def test_unschedulable_time_is_readable_and_grows(client: kubernetes.client.ApiClient) -> None:
    clock = [NOW]
    provider = make(client, clock=lambda: clock[0])
    provider.launch(request_for("att-wait"))
    pod = start_pod(client, "att-wait", dict(next(c for c in STATUS_CASES if c[0] == "unschedulable")[2] or {}))

    first = provider.status("att-wait")
    clock[0] = NOW + timedelta(seconds=60)
    later = provider.status("att-wait")

    assert (first.unschedulable_for_s, later.unschedulable_for_s) == (95, 155)
    core = kubernetes.client.CoreV1Api(client)
    _drain(core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": running()}, _preload_content=False))
    scheduled = provider.status("att-wait")
    assert scheduled.state is BackendState.RUNNING
    assert scheduled.unschedulable_for_s is None


def test_a_pod_of_an_older_job_with_the_same_name_is_ignored(
    client: kubernetes.client.ApiClient, provider: KubernetesProvider
) -> None:
    provider.launch(request_for("att-old"))
    start_pod(client, "att-old", {"phase": "Failed", "containerStatuses": [terminated(70)]}, uid="an-older-job-uid")

    status = provider.status("att-old")

    assert status.state is BackendState.PENDING
    assert (status.reason or "").startswith("no pod yet")


def test_a_job_without_a_pod_says_why_from_its_events(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, provider: KubernetesProvider
) -> None:
    cluster.now = lambda: NOW - timedelta(seconds=30)
    provider.launch(request_for("att-quota"))
    job = read_job(client, "att-quota")
    core = kubernetes.client.CoreV1Api(client)
    quota = (
        'pods "fp-att-quota-abcde" is forbidden: exceeded quota: gpu-quota, requested: requests.nvidia.com/gpu=1, '
        "used: requests.nvidia.com/gpu=8, limited: requests.nvidia.com/gpu=8"
    )
    for name, involved, message in [
        ("other", {"kind": "Job", "name": "fp-someone-else"}, "not this one"),
        ("ours", {"kind": "Job", "name": "fp-att-quota", "uid": job["metadata"]["uid"]}, quota),
    ]:
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "involvedObject": {**involved, "namespace": NAMESPACE},
            "reason": "FailedCreate",
            "type": "Warning",
            "message": message,
            "lastTimestamp": stamp(NOW - timedelta(seconds=5)),
        }
        _drain(core.create_namespaced_event(NAMESPACE, event, _preload_content=False))

    status = provider.status("att-quota")

    assert status.state is BackendState.PENDING
    assert status.reason == f"no pod yet: FailedCreate: {quota} [pending_for_s=30]"
    [events] = cluster.requests(resource=EVENTS, method="GET")
    assert events.params["fieldSelector"] == "involvedObject.kind=Job,involvedObject.name=fp-att-quota"


def test_status_of_a_deleted_job(client: kubernetes.client.ApiClient, provider: KubernetesProvider) -> None:
    provider.launch(request_for("att-gone"))
    _drain(kubernetes.client.BatchV1Api(client).delete_namespaced_job("fp-att-gone", NAMESPACE, _preload_content=False))

    status = provider.status("att-gone")

    assert status.state is BackendState.LOST
    assert status.reason == "job deleted: fp-att-gone is gone without a recorded outcome"
    # a restarted control plane never saw it: "unknown attempt", which the contract requires
    assert "unknown attempt" in (make(client).status("att-gone").reason or "")


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_deletes_the_job_in_the_foreground_guarded_by_its_uid(
    cluster: KmockCluster, client: kubernetes.client.ApiClient, provider: KubernetesProvider
) -> None:
    provider.launch(request_for("att-stop"))
    uid = read_job(client, "att-stop")["metadata"]["uid"]
    # a real API server keeps a foreground-deleted Job until its dependents are gone
    batch = kubernetes.client.BatchV1Api(client)
    _drain(
        batch.patch_namespaced_job(
            "fp-att-stop", NAMESPACE, {"metadata": {"finalizers": ["foregroundDeletion"]}}, _preload_content=False
        )
    )

    provider.cancel("att-stop")

    [delete] = cluster.requests(resource=JOBS, method="DELETE")
    assert delete.data == {"propagationPolicy": "Foreground", "preconditions": {"uid": uid}}
    assert read_job(client, "att-stop")["metadata"]["deletionTimestamp"]
    status = provider.status("att-stop")
    assert (status.state, status.reason) == (BackendState.FAILED, "cancelled; the job is being deleted")
    assert cluster.objects(SECRETS) == []


def test_cancel_when_the_job_vanishes_between_read_and_delete(
    cluster: KmockCluster, provider: KubernetesProvider
) -> None:
    provider.launch(request_for("att-404"))
    cluster.fail_next(404, 'jobs.batch "fp-att-404" not found', method="DELETE", resource=JOBS)

    provider.cancel("att-404")  # 404 is done

    assert len(cluster.requests(resource=JOBS, method="DELETE")) == 1


def test_cancel_that_cannot_reach_a_place_is_unavailable(cluster: KmockCluster, provider: KubernetesProvider) -> None:
    provider.launch(request_for("att-500"))
    cluster.fail_next(500, "etcdserver: leader changed", method="GET", resource=JOBS)

    with pytest.raises(Unavailable, match="HTTP 500"):
        provider.cancel("att-500")
    assert len(cluster.objects(JOBS)) == 1


# -- list_owned -------------------------------------------------------------------------------


@pytest.mark.parametrize("ignore_label_selector", [False, True], ids=["selector-honoured", "selector-ignored"])
def test_list_owned_is_only_this_owners_jobs(ignore_label_selector: bool) -> None:
    with KmockCluster(ignore_label_selector=ignore_label_selector) as cluster:
        client = api_client(cluster.url)
        try:
            ours, theirs = make(client, owner="cp-a"), make(client, owner="cp-b")
            ours.launch(request_for("att-mine"))
            theirs.launch(request_for("att-theirs"))
            batch = kubernetes.client.BatchV1Api(client)
            for name, labels in [
                ("hand-made", {"app": "something"}),
                ("half-labelled", {"app.kubernetes.io/managed-by": "fusionplane"}),
                ("no-attempt", {"app.kubernetes.io/managed-by": "fusionplane", LABEL_OWNER: "cp-a"}),
            ]:
                body = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": name, "labels": labels},
                    "spec": {},
                }
                _drain(batch.create_namespaced_job(NAMESPACE, body, _preload_content=False))

            owned = ours.list_owned()

            assert [(o.attempt_id, o.task_id, o.backend_ref) for o in owned] == [
                ("att-mine", "task-k8s", f"{NAMESPACE}/fp-att-mine")
            ]
            [jobs_list] = [r for r in cluster.requests(resource=JOBS, method="GET") if r.name is None]
            assert (
                jobs_list.params["labelSelector"]
                == "app.kubernetes.io/managed-by=fusionplane,fusionplane.io/owner=cp-a"
            )
        finally:
            client.close()


def test_list_owned_reports_a_secret_left_without_its_job_as_lost_and_cancel_deletes_it(
    cluster: KmockCluster, provider: KubernetesProvider
) -> None:
    provider.launch(request_for("att-whole"))
    provider.launch(request_for("att-half"))
    # the Job of att-half goes away without its Secret (a launch cut off between the two creates looks so)
    _drain(
        kubernetes.client.BatchV1Api(api_client(cluster.url)).delete_namespaced_job(
            "fp-att-half", NAMESPACE, _preload_content=False
        )
    )
    owned = {o.attempt_id: o.state for o in provider.list_owned()}
    assert owned["att-half"] == BackendState.LOST
    assert owned["att-whole"] != BackendState.LOST
    provider.cancel("att-half")
    assert [o.attempt_id for o in provider.list_owned()] == ["att-whole"]


def test_list_owned_pages_through_every_job_with_one_pod_list(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    provider = make(client, page_size=2)
    for i in range(5):
        provider.launch(request_for(f"att-page-{i}"))
    start_pod(client, "att-page-3", running())

    owned = provider.list_owned()

    assert sorted(o.attempt_id for o in owned) == [f"att-page-{i}" for i in range(5)]
    assert {o.attempt_id: o.state for o in owned}["att-page-3"] is BackendState.RUNNING
    job_lists = [r for r in cluster.requests(resource=JOBS, method="GET") if r.name is None]
    assert [r.params.get("limit") for r in job_lists] == ["2", "2", "2"]
    assert [bool(r.params.get("continue")) for r in job_lists] == [False, True, True]
    assert len([r for r in cluster.requests(resource=PODS, method="GET") if r.name is None]) == 1


def test_list_owned_across_two_clusters_by_kubeconfig_context(tmp_path: Path) -> None:
    with KmockCluster() as east, KmockCluster() as west:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"east": east.url, "west": west.url})
        targets = [
            target("east", worker_image=IMAGE, kubeconfig=str(kubeconfig), context="east"),
            target("west", worker_image=IMAGE, kubeconfig=str(kubeconfig), context="west", namespace="gpu"),
        ]
        provider = KubernetesProvider(targets, owner=OWNER, request_timeout_s=5.0, clock=lambda: NOW)
        try:
            a = provider.launch(request_for("att-east", targets[0]))
            b = provider.launch(request_for("att-west", targets[1]))
            assert (a.backend_ref, b.backend_ref) == ("east/fp-test/fp-att-east", "west/gpu/fp-att-west")
            assert [j["metadata"]["name"] for j in east.objects(JOBS)] == ["fp-att-east"]
            assert [j["metadata"]["name"] for j in west.objects(JOBS, "gpu")] == ["fp-att-west"]

            restarted = KubernetesProvider(targets, owner=OWNER, request_timeout_s=5.0, clock=lambda: NOW)
            try:
                assert restarted.status("att-west").state is BackendState.PENDING  # found without memory
                assert sorted(o.backend_ref for o in restarted.list_owned()) == [a.backend_ref, b.backend_ref]
                restarted.cancel("att-west")
                assert west.objects(JOBS, "gpu") == []
                assert len(east.objects(JOBS)) == 1
            finally:
                restarted.close()
        finally:
            provider.close()


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "error", "text"),
    [
        (
            403,
            'jobs.batch "fp-att-err" is forbidden: exceeded quota: job-count, requested: count/jobs.batch=1, '
            "used: count/jobs.batch=50, limited: count/jobs.batch=50",
            QuotaExceeded,
            "ResourceQuota exceeded",
        ),
        (
            403,
            'jobs.batch is forbidden: User "system:serviceaccount:fp:cp" cannot create resource "jobs" '
            'in API group "batch"',
            InvalidSpec,
            "forbidden (RBAC)",
        ),
        (
            422,
            'Job.batch "fp-att-err" is invalid: spec.template.spec.tolerations[0].operator: Unsupported value',
            InvalidSpec,
            "HTTP 422",
        ),
        (400, "the body of the request was in an unknown format", InvalidSpec, "HTTP 400"),
        (429, "storage is (re)initializing", Throttled, "HTTP 429"),
        (500, "Internal error occurred: etcd", Unavailable, "HTTP 500"),
        (503, "the server is currently unable to handle the request", Unavailable, "HTTP 503"),
    ],
    ids=["403-quota", "403-rbac", "422", "400", "429", "500", "503"],
)
def test_api_errors_map_to_the_taxonomy(
    cluster: KmockCluster,
    provider: KubernetesProvider,
    status: int,
    message: str,
    error: type[ProviderError],
    text: str,
) -> None:
    cluster.fail_next(status, message, method="POST", resource=JOBS)

    with pytest.raises(ProviderError) as raised:
        provider.launch(request_for("att-err"))

    assert type(raised.value) is error
    assert cluster.objects(SECRETS) == []  # the Secret made for the refused Job does not stay behind
    assert text in raised.value.message
    if status == 403 and error is InvalidSpec:
        # worded as every provider words a refusal of access: the target's setup, not the task
        assert "access denied" in raised.value.message
        assert "the target's configuration or permissions" in raised.value.message
        assert "RBAC Role" in raised.value.message
    assert raised.value.target == CONTRACT_TARGET.name
    assert raised.value.retryable is (error is not InvalidSpec)
    assert not isinstance(raised.value.__cause__, ProviderError)  # the client's exception is kept as the cause


def test_a_refused_secret_stops_the_launch_and_its_message_never_carries_the_token(
    cluster: KmockCluster, provider: KubernetesProvider
) -> None:
    cluster.fail_next(
        422,
        f'Secret "fp-att-echo" is invalid: data[spec.json]: Invalid value: "{TOKEN}"',
        method="POST",
        resource=SECRETS,
    )

    with pytest.raises(InvalidSpec) as raised:
        provider.launch(with_token("att-echo"))

    assert TOKEN not in str(raised.value)
    assert "***" in str(raised.value)
    assert cluster.requests(resource=JOBS, method="POST") == []
    assert cluster.objects(SECRETS) == []  # refused before kmock stored it, as an API server would


def test_status_and_list_owned_errors_are_translated(cluster: KmockCluster, provider: KubernetesProvider) -> None:
    provider.launch(request_for("att-read"))
    cluster.fail_next(429, "too many requests", method="GET", resource=JOBS)
    with pytest.raises(Throttled):
        provider.status("att-read")
    cluster.fail_next(500, "boom", method="GET", resource=PODS)
    with pytest.raises(Unavailable):
        provider.status("att-read")
    cluster.fail_next(403, 'jobs.batch is forbidden: cannot list resource "jobs"', method="GET", resource=JOBS)
    with pytest.raises(InvalidSpec, match="forbidden"):
        provider.list_owned()
    assert provider.status("att-read").state is BackendState.PENDING  # and it recovers


def test_an_api_server_that_is_down_is_unavailable_at_once(tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"down": f"http://127.0.0.1:{free_port()}"})
    on = target(worker_image=IMAGE, kubeconfig=str(kubeconfig), context="down")
    provider = KubernetesProvider([on], owner=OWNER, request_timeout_s=2.0)
    try:
        started = time.monotonic()
        for call in (
            lambda: provider.launch(request_for("att-down", on)),
            lambda: provider.status("att-down"),
            lambda: provider.cancel("att-down"),
            provider.list_owned,
        ):
            with pytest.raises(Unavailable, match="cannot reach the API server"):
                call()
        assert time.monotonic() - started < 2.0  # refused connections, no retries
    finally:
        provider.close()


def test_a_silent_api_server_is_bounded_by_the_request_timeout(tmp_path: Path) -> None:
    with SilentServer() as silent:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", {"silent": f"http://127.0.0.1:{silent.port}"})
        on = target(worker_image=IMAGE, kubeconfig=str(kubeconfig), context="silent")
        provider = KubernetesProvider([on], owner=OWNER, request_timeout_s=0.5)
        try:
            started = time.monotonic()
            with pytest.raises(Unavailable, match="timed out"):
                provider.status("att-silent")
            elapsed = time.monotonic() - started
            with pytest.raises(Unavailable, match="timed out"):
                provider.launch(request_for("att-silent", on))
            connections = len(silent.accepted)
        finally:
            provider.close()
    assert 0.4 < elapsed < 1.5, elapsed
    assert connections == 2  # one per call: the built client never retries


def test_quote_and_capacity_are_owned_and_left_to_the_signal_source(provider: KubernetesProvider) -> None:
    assert provider.quote(candidate_for(CONTRACT_TARGET)).usd_per_hour is None
    capacity = provider.capacity(CONTRACT_TARGET)
    assert (capacity.free, capacity.total) == (None, None)
