"""The Kubernetes provider on cloud node pools (EKS + Karpenter or a managed node group, AKS spot), on kmock.

The provider contract holds for both flavours; then what a pool adds: the
Job lands with the pool's capacity-type selector, instance type and
tolerations on the same hardened pod; a reclaimed spot node (the pod gone
with a ``DisruptionTarget`` condition, the Job failed) is ``preempted``; a
pod the autoscaler will not bring a node for is a capacity refusal.
kmock has no controllers: the tests play the Job controller, the kubelet and
the autoscaler (pods, statuses, events), as tests/contract/test_kubernetes_provider.py does.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import kubernetes
import pytest

from controlplane.domain import CloudPool, InvalidSpec, Target
from providers.base import BackendState, Provider
from providers.bootstrap import LABEL_ATTEMPT
from providers.kubernetes import KubernetesProvider
from tests.contract.provider_contract import ProviderContract
from tests.contract.test_kubernetes_provider import (
    IMAGE,
    JOB_FAILED,
    NAMESPACE,
    NOW,
    _drain,
    make,
    read_job,
    request_for,
    set_job_status,
    stamp,
    start_pod,
    target,
)
from tests.support.kmock_cluster import EVENTS, JOBS, PODS, SECRETS, KmockCluster, api_client

pytestmark = pytest.mark.timeout(60)

SETTINGS = {"namespace": NAMESPACE, "worker_image": IMAGE, "priority_classes": {"urgent": "fp-urgent"}}


def pool_target(name: str, pool: CloudPool, **settings: Any) -> Target:
    return Target(
        name=name,
        provider="kubernetes",
        private=False,
        regions=(pool.region,),
        instance_types=pool.instance_types,
        market=pool.capacity_type,
        cloud=pool,
        settings={**SETTINGS, **settings},
    )


KARPENTER = CloudPool(
    provider="aws",
    region="us-east-1",
    capacity_type="spot",
    instance_types=("g5.xlarge", "g6.xlarge"),
    autoscaler="karpenter",
    capacity_wait_seconds=60,
)
NODE_GROUP = dataclasses.replace(KARPENTER, autoscaler="eks-node-group")
AKS = CloudPool(
    provider="azure",
    region="eastus",
    capacity_type="spot",
    instance_types=("Standard_NC4as_T4_v3",),
    autoscaler="aks-node-pool",
    capacity_wait_seconds=60,
)
EKS_TARGET = pool_target("eks-spot", KARPENTER)
AKS_TARGET = pool_target("aks-spot", AKS)
AKS_TOLERATION = {
    "key": "kubernetes.azure.com/scalesetpriority",
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}


# -- the contract, on each flavour ------------------------------------------------------------------


class _OnKmock(ProviderContract):
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
        return make(self.client, self.target)

    def resources_of(self, provider: Provider, attempt_id: str) -> int:
        return sum(
            1 for job in self.cluster.objects(JOBS) if job["metadata"]["labels"].get(LABEL_ATTEMPT) == attempt_id
        )


class TestEksKarpenterPool(_OnKmock):
    target = EKS_TARGET


class TestAksSpotPool(_OnKmock):
    target = AKS_TARGET


# -- landing on the pool ----------------------------------------------------------------------------


def pod_of(cluster: KmockCluster) -> dict[str, Any]:
    [job] = cluster.objects(JOBS)
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


@pytest.mark.parametrize(
    ("on", "selector", "tolerations"),
    [
        (
            EKS_TARGET,
            {"karpenter.sh/capacity-type": "spot", "node.kubernetes.io/instance-type": "g5.xlarge"},
            None,
        ),
        (
            pool_target("eks-ng", NODE_GROUP),
            {"eks.amazonaws.com/capacityType": "SPOT", "node.kubernetes.io/instance-type": "g5.xlarge"},
            None,
        ),
        (
            AKS_TARGET,
            {
                "kubernetes.azure.com/scalesetpriority": "spot",
                "node.kubernetes.io/instance-type": "Standard_NC4as_T4_v3",
            },
            [AKS_TOLERATION],
        ),
        (
            pool_target("eks-od", dataclasses.replace(KARPENTER, capacity_type="on-demand")),
            {"karpenter.sh/capacity-type": "on-demand", "node.kubernetes.io/instance-type": "g5.xlarge"},
            None,
        ),
    ],
)
def test_a_job_lands_on_its_pools_capacity_with_the_same_hardened_pod(
    cluster: KmockCluster,
    client: kubernetes.client.ApiClient,
    on: Target,
    selector: dict[str, str],
    tolerations: list[dict[str, str]] | None,
) -> None:
    private = target("onprem", worker_image=IMAGE)
    provider = make(client, on, private)
    provider.launch(request_for("att-pool", on))
    provider.launch(request_for("att-home", private))

    jobs = {job["metadata"]["labels"][LABEL_ATTEMPT]: job for job in cluster.objects(JOBS)}
    pool_pod = jobs["att-pool"]["spec"]["template"]["spec"]
    home_pod = jobs["att-home"]["spec"]["template"]["spec"]
    assert pool_pod["nodeSelector"] == selector
    assert pool_pod.get("tolerations") == tolerations
    assert "topologySpreadConstraints" not in pool_pod  # a normal task: no spread asked

    # everything else is the private cluster's pod: security contexts, the spec Secret, no service-account token
    def rest(pod: dict[str, Any]) -> str:
        # the Secret's name is the attempt's; the rest must be the same text
        kept = {k: v for k, v in pod.items() if k not in {"nodeSelector", "tolerations"}}
        return json.dumps(kept, sort_keys=True).replace("fp-att-pool", "fp-att-home")

    assert rest(pool_pod) == rest(home_pod)
    assert {s["metadata"]["labels"][LABEL_ATTEMPT] for s in cluster.objects(SECRETS)} == {"att-pool", "att-home"}
    offer = f"{on.cloud.provider}/{on.cloud.region}/{on.instance_types[0]}" if on.cloud else ""
    assert jobs["att-pool"]["metadata"]["annotations"]["fusionplane.io/offer"] == offer


def test_urgent_work_gets_its_priority_class_and_spreads_across_zones(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    provider = make(client, EKS_TARGET)
    request = dataclasses.replace(request_for("att-urgent", EKS_TARGET), priority="urgent")
    provider.launch(request)

    pod = pod_of(cluster)
    assert pod["priorityClassName"] == "fp-urgent"
    assert pod["topologySpreadConstraints"] == [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {
                "matchLabels": {"app.kubernetes.io/name": "fusionplane-worker", "fusionplane.io/owner": "fusionplane"}
            },
        }
    ]


def test_the_operators_own_selector_and_tolerations_are_kept_and_a_contradiction_refused(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    on = pool_target("aks-gpu", AKS, node_selector={"accelerator": "t4"}, tolerations=[gpu, AKS_TOLERATION])
    make(client, on).launch(request_for("att-own", on))
    pod = pod_of(cluster)
    assert pod["nodeSelector"]["accelerator"] == "t4"
    assert pod["tolerations"] == [gpu, AKS_TOLERATION]  # the pool's toleration once, not twice
    [job] = cluster.objects(JOBS)
    assert "azure.workload.identity/use" not in job["spec"]["template"]["metadata"]["labels"]  # no service account


def test_an_aks_pod_with_a_service_account_asks_for_its_workload_identity(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    on = pool_target("aks-wi", AKS, service_account="fusionplane-worker")
    make(client, on).launch(request_for("att-wi", on))
    [job] = cluster.objects(JOBS)
    assert job["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    assert "azure.workload.identity/use" not in job["metadata"]["labels"]  # the pod's, not the Job's or Secret's
    assert job["spec"]["template"]["spec"]["serviceAccountName"] == "fusionplane-worker"

    wrong = pool_target("eks-wrong", KARPENTER, node_selector={"karpenter.sh/capacity-type": "on-demand"})
    with pytest.raises(InvalidSpec, match="contradicts its cloud node pool"):
        make(client, wrong).launch(request_for("att-wrong", wrong))
    assert len(cluster.objects(JOBS)) == 1  # nothing created for the refused launch


# -- a reclaimed spot node ----------------------------------------------------------------------------


DISRUPTED = {
    "phase": "Failed",
    "conditions": [
        {
            "type": "DisruptionTarget",
            "status": "True",
            "reason": "DeletionByTaintManager",
            "message": "Taint manager: deleting due to NoExecute taint",
        }
    ],
}


@pytest.mark.parametrize("on", [EKS_TARGET, AKS_TARGET], ids=["eks", "aks"])
def test_a_pod_reclaimed_with_its_spot_node_is_preempted(client: kubernetes.client.ApiClient, on: Target) -> None:
    provider = make(client, on)
    provider.launch(request_for("att-reclaim", on))
    pod = start_pod(client, "att-reclaim", {"phase": "Running"})
    assert provider.status("att-reclaim").state is BackendState.RUNNING

    # the node is drained: the pod is marked for disruption and fails ...
    core = kubernetes.client.CoreV1Api(client)
    _drain(core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": DISRUPTED}, _preload_content=False))
    disrupted = provider.status("att-reclaim")
    assert disrupted.state is BackendState.PREEMPTED
    assert "DisruptionTarget" in (disrupted.reason or "") or "DeletionByTaintManager" in (disrupted.reason or "")

    # ... then the node is deleted and the pod with it; the Job controller marks the Job failed
    _drain(core.delete_namespaced_pod(pod, NAMESPACE, _preload_content=False))
    set_job_status(client, "att-reclaim", JOB_FAILED)
    gone = provider.status("att-reclaim")
    assert gone.state is BackendState.PREEMPTED
    assert gone.reason == (
        f"pod gone with its {on.cloud.provider if on.cloud else ''} spot node (reclaimed); "
        "job BackoffLimitExceeded: Job has reached the specified backoff limit"
    )


def test_a_private_clusters_job_without_a_pod_stays_failed(client: kubernetes.client.ApiClient) -> None:
    home = target("onprem", worker_image=IMAGE)
    provider = make(client, home)
    provider.launch(request_for("att-home", home))
    set_job_status(client, "att-home", JOB_FAILED)
    assert provider.status("att-home").state is BackendState.FAILED


# -- a pool out of capacity ---------------------------------------------------------------------------


def unschedulable(for_s: int) -> dict[str, Any]:
    return {
        "phase": "Pending",
        "conditions": [
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/4 nodes are available: 4 node(s) didn't match Pod's node affinity/selector.",
                "lastTransitionTime": stamp(NOW - timedelta(seconds=for_s)),
            }
        ],
    }


def add_event(client: kubernetes.client.ApiClient, pod: str, name: str, reason: str, message: str, age_s: int) -> None:
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "involvedObject": {"kind": "Pod", "name": pod, "namespace": NAMESPACE},
        "reason": reason,
        "type": "Normal" if reason == "TriggeredScaleUp" else "Warning",
        "message": message,
        "source": {"component": "cluster-autoscaler"},
        "lastTimestamp": stamp(NOW - timedelta(seconds=age_s)),
    }
    core = kubernetes.client.CoreV1Api(client)
    _drain(core.create_namespaced_event(NAMESPACE, event, _preload_content=False))


def test_a_pod_past_the_pools_wait_with_no_scale_up_is_a_capacity_refusal(
    cluster: KmockCluster, client: kubernetes.client.ApiClient
) -> None:
    provider = make(client, AKS_TARGET)
    provider.launch(request_for("att-full", AKS_TARGET))
    pod = start_pod(client, "att-full", unschedulable(45))
    within = provider.status("att-full")
    assert (within.state, within.capacity_refusal, within.unschedulable_for_s) == (BackendState.PENDING, None, 45)

    core = kubernetes.client.CoreV1Api(client)
    _drain(core.patch_namespaced_pod_status(pod, NAMESPACE, {"status": unschedulable(75)}, _preload_content=False))
    no_node = "pod didn't trigger scale-up: 1 max node group size reached"
    add_event(client, pod, "e1", "NotTriggerScaleUp", no_node, age_s=10)
    refused = provider.status("att-full")
    assert refused.state is BackendState.PENDING
    assert refused.capacity_refusal == (
        f"no azure spot node came in eastus within 60 s (unschedulable for 75 s; NotTriggerScaleUp: {no_node})"
    )
    # one read of the pod's own events per status of an unschedulable pod (Karpenter may refuse at any time)
    reads = cluster.requests(resource=EVENTS, method="GET")
    assert len(reads) == 2
    for listed in reads:
        assert listed.params["fieldSelector"] == f"involvedObject.kind=Pod,involvedObject.name={pod}"


def test_a_scale_up_under_way_is_waited_for_and_karpenters_insufficient_capacity_is_final_at_once(
    client: kubernetes.client.ApiClient,
) -> None:
    provider = make(client, EKS_TARGET)
    provider.launch(request_for("att-wait", EKS_TARGET))
    pod = start_pod(client, "att-wait", unschedulable(75))
    add_event(client, pod, "e1", "NotTriggerScaleUp", "no group", age_s=30)
    add_event(client, pod, "e2", "TriggeredScaleUp", "pod triggered scale-up: [gpu-spot 1->2 (max: 10)]", age_s=5)
    assert provider.status("att-wait").capacity_refusal is None  # the newest word: a node is coming

    provider.launch(request_for("att-ice", EKS_TARGET))
    young = start_pod(client, "att-ice", unschedulable(5), suffix="ice01")
    message = "creating nodeclaim, InsufficientCapacityError: no g5.xlarge spot capacity in us-east-1"
    add_event(client, young, "e3", "FailedLaunch", message, age_s=1)
    refused = provider.status("att-ice")
    assert refused.capacity_refusal == f"cluster-autoscaler FailedLaunch: {message}"


def test_the_pods_listing_is_unchanged_for_a_pool(cluster: KmockCluster, client: kubernetes.client.ApiClient) -> None:
    provider = make(client, EKS_TARGET)
    provider.launch(request_for("att-list", EKS_TARGET))
    start_pod(client, "att-list", {"phase": "Running"})
    [owned] = provider.list_owned()
    assert (owned.attempt_id, owned.state) == ("att-list", BackendState.RUNNING)
    assert read_job(client, "att-list")["metadata"]["annotations"]["fusionplane.io/target"] == "eks-spot"
    assert len(cluster.objects(PODS)) == 1


def test_a_provider_with_no_such_target_judges_the_job_as_a_plain_clusters(
    client: kubernetes.client.ApiClient,
) -> None:
    make(client, EKS_TARGET).launch(request_for("att-orphan", EKS_TARGET))
    set_job_status(client, "att-orphan", JOB_FAILED)
    # the same cluster and namespace, but the pool target is gone from the policy
    later: KubernetesProvider = make(client, target("eks-spot-renamed", worker_image=IMAGE))
    assert later.status("att-orphan").state is BackendState.FAILED
