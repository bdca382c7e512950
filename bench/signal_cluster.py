"""The Kubernetes cluster ``bench.signals`` polls: 8 GPU node pools, 50 nodes and 300 pods, shaped like the real thing.

Node and pod objects carry what a real API server sends (labels, taints,
conditions, images, managed fields, container statuses), so that a poll
reads as many bytes as it would; one seeded random generator makes every
run's cluster the same.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

__all__ = [
    "GPU_TAINT",
    "POOL_LABEL",
    "POOLS",
    "SEED",
    "Pool",
    "cluster_objects",
    "make_node",
    "make_pod",
    "node_name",
    "object_uid",
    "pool_target",
]

#: every GPU node carries it (the GPU operator's convention); every target tolerates it
GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
POOL_LABEL = "fusionplane.io/pool"


@dataclass(frozen=True)
class Pool:
    """One node pool of the cluster, and the kubernetes target that selects it."""

    name: str
    product: str  # nvidia.com/gpu.product
    zone: str
    nodes: int
    gpus_per_node: int
    memory_mib: int
    #: an extra taint the pool's target must tolerate (spot nodes)
    taint: dict[str, str] | None = None


#: 50 nodes over 8 label sets; each kubernetes target of the bench selects one pool
POOLS: tuple[Pool, ...] = (
    Pool("a100-a", "NVIDIA-A100-SXM4-80GB", "zone-a", 6, 8, 81920),
    Pool("a100-b", "NVIDIA-A100-SXM4-80GB", "zone-b", 6, 8, 81920),
    Pool("h100", "NVIDIA-H100-80GB-HBM3", "zone-a", 4, 8, 81559),
    Pool("l4-a", "NVIDIA-L4", "zone-a", 8, 4, 23034),
    Pool("l4-b", "NVIDIA-L4", "zone-b", 8, 4, 23034),
    Pool("t4", "Tesla-T4", "zone-c", 8, 4, 15360),
    Pool("a10g", "NVIDIA-A10G", "zone-b", 6, 4, 23028),
    Pool("l4-spot", "NVIDIA-L4", "zone-c", 4, 4, 23034, taint={"key": "spot", "value": "true", "effect": "NoSchedule"}),
)
TOTAL_NODES = sum(pool.nodes for pool in POOLS)
#: the daemon sets every GPU node runs (no GPU requests: the device plugin and DCGM only watch the GPUs)
DAEMONSETS = (("kube-system", "kube-proxy"), ("kube-system", "nvidia-device-plugin"), ("gpu-operator", "dcgm-exporter"))
WORKLOAD_NAMESPACES = ("fusionplane", "ml-training", "render")
TOTAL_PODS = 300
SEED = 20261124


def pool_target(pool: Pool) -> str:
    """The kubernetes target that owns ``pool`` (also the DCGM series' ``fusionplane_target`` label)."""
    return f"k8s-{pool.name}"


def node_name(pool: Pool, index: int) -> str:
    """The node's name, as GKE would call it."""
    return f"gke-gpu-{pool.name}-{index:02d}"


def _stamp(rng: random.Random, days: int = 30) -> str:
    when = time.gmtime(time.time() - rng.randint(3600, days * 86400))
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", when)


def object_uid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def _managed(manager: str, fields: dict[str, Any], stamp: str) -> dict[str, Any]:
    return {
        "manager": manager,
        "operation": "Update",
        "apiVersion": "v1",
        "time": stamp,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }


def make_node(pool: Pool, index: int, rng: random.Random) -> dict[str, Any]:
    """A GPU node as ``kubectl get node -o json`` shows one (labels, taints, conditions, images)."""
    name = node_name(pool, index)
    stamp = _stamp(rng)
    # one node of the first two pools is cordoned, one of the next two NotReady: the counting rules matter
    cordoned = pool.name in ("a100-a", "t4") and index == 0
    ready = "False" if pool.name in ("l4-a", "h100") and index == 1 else "True"
    gpus = str(pool.gpus_per_node)
    labels = _node_labels(pool, name)
    taints = [GPU_TAINT] + ([pool.taint] if pool.taint else [])
    if cordoned:
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": stamp})
    images = _node_images(name, rng)  # before the metadata: the random numbers come in the same order as ever
    allocatable = {
        "cpu": str(pool.gpus_per_node * 12),
        "memory": f"{pool.gpus_per_node * 110}Gi",
        "ephemeral-storage": "400Gi",
        "pods": "110",
        "nvidia.com/gpu": gpus,
    }
    metadata: dict[str, Any] = {
        "name": name,
        "uid": object_uid("node", name),
        "resourceVersion": str(rng.randint(10_000, 99_999_999)),
        "creationTimestamp": stamp,
        "labels": labels,
        "annotations": {
            "node.alpha.kubernetes.io/ttl": "0",
            "volumes.kubernetes.io/controller-managed-attach-detach": "true",
            "nvidia.com/gpu-driver-upgrade-state": "upgrade-done",
            "projectcalico.org/IPv4Address": f"10.20.{index}.{rng.randint(2, 250)}/24",
        },
        "managedFields": [
            _managed("kubelet", {"f:metadata": {"f:labels": {f"f:{key}": {} for key in labels}}}, stamp),
            _managed("gpu-feature-discovery", {"f:metadata": {"f:labels": {"f:nvidia.com/gpu.product": {}}}}, stamp),
        ],
    }
    spec: dict[str, Any] = {
        "podCIDR": f"10.64.{index}.0/24",
        "providerID": f"onprem://{name}",
        "taints": taints,
    }
    if cordoned:
        spec["unschedulable"] = True
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": metadata,
        "spec": spec,
        "status": {
            "capacity": dict(allocatable),
            "allocatable": allocatable,
            "conditions": _node_conditions(ready, stamp),
            "addresses": [{"type": "InternalIP", "address": f"10.20.0.{index}"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": _node_info(name),
            "images": images,
        },
    }


def _node_labels(pool: Pool, name: str) -> dict[str, str]:
    """What the kubelet, GPU feature discovery and node feature discovery label a GPU node with."""
    return {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": f"gpu-{pool.product.lower()}-{pool.gpus_per_node}",
        "topology.kubernetes.io/region": "onprem-1",
        "topology.kubernetes.io/zone": pool.zone,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": pool.product,
        "nvidia.com/gpu.count": str(pool.gpus_per_node),
        "nvidia.com/gpu.memory": str(pool.memory_mib),
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/mig.config": "all-disabled",
        "feature.node.kubernetes.io/pci-10de.present": "true",
        POOL_LABEL: pool.name,
    }


def _node_conditions(ready: str, stamp: str) -> list[dict[str, Any]]:
    """The kubelet's pressure conditions (all clear) and Ready."""
    conditions = [
        {"type": kind, "status": "False", "reason": f"KubeletHas{reason}", "message": f"kubelet has {reason}"}
        for kind, reason in (("MemoryPressure", "SufficientMemory"), ("DiskPressure", "NoDiskPressure"),
                             ("PIDPressure", "SufficientPID"))
    ] + [
        {"type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "KubeletNotReady",
         "message": "kubelet is posting ready status" if ready == "True" else "container runtime is down"},
    ]  # fmt: skip
    for condition in conditions:
        condition.update(lastHeartbeatTime=stamp, lastTransitionTime=stamp)
    return conditions


def _node_images(name: str, rng: random.Random) -> list[dict[str, Any]]:
    """The images a busy GPU node has pulled (a large part of a real node list's bytes)."""
    return [
        {
            "names": [
                f"registry.internal/{repo}@sha256:{object_uid(repo, name)[:32]}",
                f"registry.internal/{repo}:v{i}.2",
            ],
            "sizeBytes": rng.randint(20_000_000, 9_000_000_000),
        }
        for i, repo in enumerate(
            ("fusionplane/worker", "fusionplane/worker-cuda", "nvidia/k8s-device-plugin", "nvidia/dcgm-exporter",
             "nvidia/gpu-operator-validator", "nvidia/driver", "nvidia/container-toolkit", "kube-proxy", "pause",
             "ml/trainer", "ml/trainer-nightly", "render/blender", "render/ffmpeg", "coredns", "node-exporter",
             "fluent-bit", "calico/node", "calico/cni", "csi/node-driver-registrar", "csi/gcs-fuse")
        )
    ]  # fmt: skip


def _node_info(name: str) -> dict[str, str]:
    return {
        "machineID": object_uid("machine", name).replace("-", ""),
        "systemUUID": object_uid("system", name),
        "bootID": object_uid("boot", name),
        "kernelVersion": "6.1.0-27-amd64",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "containerRuntimeVersion": "containerd://1.7.22",
        "kubeletVersion": "v1.30.5",
        "kubeProxyVersion": "v1.30.5",
        "operatingSystem": "linux",
        "architecture": "amd64",
    }


def make_pod(
    namespace: str, name: str, *, node: str | None, gpus: int, app: str, rng: random.Random, phase: str = "Running"
) -> dict[str, Any]:
    """A pod as ``kubectl get pod -o json`` shows one after the scheduler and the kubelet have been at it."""
    stamp = _stamp(rng, days=3)
    container = _pod_container(app, gpus)
    spec = _pod_spec(container)
    status: dict[str, Any] = {"phase": phase, "qosClass": "Burstable"}
    if node is not None:
        spec["nodeName"] = node
        status.update(_scheduled_pod_status(namespace, name, container, phase == "Running", stamp, rng))
    else:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "lastTransitionTime": stamp,
             "message": "0/50 nodes are available: insufficient nvidia.com/gpu."},
        ]  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": object_uid("pod", namespace, name),
            "resourceVersion": str(rng.randint(10_000, 99_999_999)),
            "creationTimestamp": stamp,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "labels": {"app.kubernetes.io/name": container["name"], "pod-template-hash": object_uid(name)[:10]},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": name.rsplit("-", 1)[0],
                    "uid": object_uid("rs", name),
                    "controller": True,
                    "blockOwnerDeletion": True,
                },
            ],
            "managedFields": [
                _managed("kube-controller-manager", {"f:metadata": {"f:labels": {}}, "f:spec": {}}, stamp),
                _managed("kubelet", {"f:status": {"f:conditions": {}, "f:containerStatuses": {}}}, stamp),
            ],
        },
        "spec": spec,
        "status": status,
    }


def _pod_container(app: str, gpus: int) -> dict[str, Any]:
    """The pod's one container: its image, settings, a metrics port and its GPU requests."""
    resources: dict[str, Any] = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    return {
        "name": app.rsplit("/", 1)[-1],
        "image": f"registry.internal/{app}:v3.2",
        "imagePullPolicy": "IfNotPresent",
        "args": ["--log-format=json", "--metrics-port=9400"],
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}"} for i in range(8)]
        + [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}}],
        "ports": [{"containerPort": 9400, "name": "metrics", "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": [
            {"mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "name": "kube-api-access", "readOnly": True},
            {"mountPath": "/scratch", "name": "scratch"},
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }


def _pod_spec(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "containers": [container],
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "default",
        "terminationGracePeriodSeconds": 30,
        "tolerations": [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}, {"name": "kube-api-access", "projected": {"sources": []}}],
    }


def _scheduled_pod_status(
    namespace: str, name: str, container: dict[str, Any], started: bool, stamp: str, rng: random.Random
) -> dict[str, Any]:
    """What the kubelet reports of a pod bound to its node: addresses, conditions, the container's status."""
    image = container["image"]
    return {
        "hostIP": "10.20.0.1",
        "podIP": f"10.64.{rng.randint(0, 49)}.{rng.randint(2, 250)}",
        "startTime": stamp,
        "conditions": [
            {"type": kind, "status": "True" if started else "False", "lastTransitionTime": stamp}
            for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "containerStatuses": [
            {
                "name": container["name"],
                "image": image,
                "imageID": f"{image}@sha256:{object_uid(image)[:32]}",
                "containerID": f"containerd://{object_uid(namespace, name).replace('-', '')}",
                "ready": started,
                "restartCount": rng.choice((0, 0, 0, 1, 2)),
                "started": started,
                "state": {"running": {"startedAt": stamp}} if started else {"waiting": {"reason": "PodInitializing"}},
            }
        ],
    }


def cluster_objects() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The cluster's nodes and pods: 50 GPU nodes, 3 daemon-set pods on each, the rest GPU workloads.

    Every pod is Running or Pending: kmock ignores the source's
    ``fieldSelector``, so with no Succeeded/Failed pod its answer is exactly
    what a real API server would send for it.
    """
    rng = random.Random(SEED)
    nodes: list[dict[str, Any]] = []
    pods: list[dict[str, Any]] = []
    free: dict[str, int] = {}
    for pool in POOLS:
        for index in range(pool.nodes):
            node = make_node(pool, index, rng)
            nodes.append(node)
            free[node["metadata"]["name"]] = pool.gpus_per_node
            for namespace, app in DAEMONSETS:
                pod_name = f"{app}-{object_uid(app, node['metadata']['name'])[:5]}"
                pods.append(make_pod(namespace, pod_name, node=node["metadata"]["name"], gpus=0, app=app, rng=rng))
    names = sorted(free)
    count = 0
    while len(pods) < TOTAL_PODS:  # bounded: one pod per turn, at most TOTAL_PODS turns
        namespace = WORKLOAD_NAMESPACES[count % len(WORKLOAD_NAMESPACES)]
        gpus = rng.choice((1, 1, 1, 2, 4))
        room = [name for name in names if free[name] >= gpus]
        # a few pods find no room and wait unscheduled (Pending, no nodeName), as on a busy cluster
        host = rng.choice(room) if room and rng.random() > 0.05 else None
        if host is not None:
            free[host] -= gpus
        app = {"fusionplane": "fusionplane/worker", "ml-training": "ml/trainer", "render": "render/blender"}[namespace]
        pods.append(
            make_pod(
                namespace,
                f"{app.rsplit('/', 1)[-1]}-{count:04d}-{object_uid(str(count))[:5]}",
                node=host,
                gpus=gpus,
                app=app,
                rng=rng,
                phase="Running" if host is not None else "Pending",
            )
        )
        count += 1
    return nodes, pods
