"""What a task priority's PriorityClass may preempt on a full cluster, against kmock and the real client.

The same emulated cluster as ``test_signals_kubernetes`` (its helpers are
reused), with PriorityClasses created through ``SchedulingV1Api`` and pods
carrying the ``spec.priority`` that the Priority admission plugin resolves.
"""

from __future__ import annotations

from typing import Any

import kubernetes
import pytest

from controlplane.domain import CAPACITY_SOURCE, PREEMPTIBLE_SOURCE
from controlplane.signals.kubernetes_capacity import KubernetesCapacitySource
from tests.integration import test_signals_kubernetes as base
from tests.integration.test_signals_kubernetes import (
    PRIORITY_CLASSES,
    Clusters,
    EmulatedCluster,
    _drain,
    container,
    make_node,
    make_pod,
    poll,
)

pytestmark = pytest.mark.timeout(30)

#: task priority -> PriorityClass, as an operator writes it in the target's settings
CLASSES = {"urgent": "fp-urgent", "high": "fp-high", "normal": "fp-batch-never", "low": "fp-gone"}


# the emulated cluster, the kubeconfig and the source under test: the same fixtures as the free-GPU tests
cluster, kube, source = base.cluster, base.kube, base.source


def make_class(api: kubernetes.client.CoreV1Api, name: str, value: int, policy: str | None = None) -> None:
    body: dict[str, Any] = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass"}
    body |= {"metadata": {"name": name}, "value": value}
    if policy is not None:
        body["preemptionPolicy"] = policy
    scheduling = kubernetes.client.SchedulingV1Api(api.api_client)
    _drain(scheduling.create_priority_class(body, _preload_content=False))


def full_cluster(api: kubernetes.client.CoreV1Api) -> None:
    """Every GPU taken: two eligible nodes and a cordoned one, with pods of three priorities."""
    make_class(api, "fp-urgent", 1_000_000)
    make_class(api, "fp-high", 10_000)
    make_class(api, "fp-batch-never", 5_000, policy="Never")
    make_node(api, "gpu-a", gpus="4")
    make_node(api, "gpu-b", gpus="4")
    make_node(api, "gpu-c", gpus="2")
    _drain(api.patch_node("gpu-c", {"spec": {"unschedulable": True}}, _preload_content=False))
    two = [container(requests="2", limits="2")]
    make_pod(api, "no-class", node="gpu-a", containers=two)  # priority 0
    make_pod(api, "batch", node="gpu-a", containers=two, priority=20_000)
    make_pod(api, "urgent", node="gpu-b", containers=[container(requests="4", limits="4")], priority=1_000_000)
    make_pod(api, "half", node="gpu-c", containers=two)  # cordoned: not the target's to take
    make_pod(api, "done", node="gpu-b", containers=two, phase="Succeeded")


def samples(result: Any, source: str) -> dict[str, float]:
    return {s.key: s.value for s in result.samples if s.source == source}


def test_each_priority_counts_the_gpus_its_class_may_preempt_on_eligible_nodes(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    full_cluster(api)

    result = poll(source, kube.target("k8s", "a", priority_classes=CLASSES))

    assert samples(result, CAPACITY_SOURCE) == {"k8s": 0.0}
    # urgent's class is above both of gpu-a's pods; high's only above the classless one; the urgent pod on
    # gpu-b is nobody's, and neither is the cordoned node's pod. normal's class never preempts: no sample.
    assert samples(result, PREEMPTIBLE_SOURCE) == {"k8s/urgent": 4.0, "k8s/high": 2.0}
    assert all(s.ttl_seconds == 45.0 for s in result.samples)
    assert result.problems == ["k8s: PriorityClass 'fp-gone' (priority_classes.low) does not exist"]


def test_fractions_of_a_gpu_held_below_a_class_round_down_per_node(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_class(api, "fp-urgent", 1_000_000)
    make_node(api, "gpu-a", gpus="1")
    make_node(api, "gpu-b", gpus="1")
    for node in ("gpu-a", "gpu-b"):  # two half-GPU pods on two nodes: one whole GPU nowhere
        make_pod(api, f"half-{node}", node=node, containers=[container(requests="500m", limits="500m")])
    make_pod(
        api, "other-half", node="gpu-a", containers=[container(requests="500m", limits="500m")], priority=2_000_000
    )

    result = poll(source, kube.target("k8s", "a", priority_classes={"urgent": "fp-urgent"}))

    assert samples(result, PREEMPTIBLE_SOURCE) == {"k8s/urgent": 0.0}


def test_without_priority_classes_the_classes_are_not_read(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    full_cluster(api)
    created = len(cluster.requests(resource=PRIORITY_CLASSES))

    result = poll(source, kube.target("k8s", "a"))

    assert samples(result, PREEMPTIBLE_SOURCE) == {}
    assert len(cluster.requests(resource=PRIORITY_CLASSES)) == created  # no list
    poll(source, kube.target("k8s", "a", priority_classes=CLASSES))
    assert len(cluster.requests(resource=PRIORITY_CLASSES)) == created + 1


def test_a_role_without_priorityclasses_still_counts_free_gpus_and_names_the_permission(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    full_cluster(api)
    cluster.forbidden_resources.append(PRIORITY_CLASSES)

    result = poll(source, kube.target("k8s", "a", priority_classes=CLASSES))

    assert samples(result, CAPACITY_SOURCE) == {"k8s": 0.0}
    assert samples(result, PREEMPTIBLE_SOURCE) == {}
    [problem] = result.problems
    assert problem.startswith("k8s: cannot count preemptible GPUs: API server answered HTTP 403")
    assert "priorityclasses" in problem
