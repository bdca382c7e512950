"""The backends ``bench.signals`` polls, served on 127.0.0.1 from a process of their own.

Run by ``bench.signals`` (or alone: ``python -m bench.signal_backends``).
The backends live in a separate process, pinned to the other core when
there are two, so that the CPU they spend answering is never counted
against the control plane being measured: the bench wants the client side
of a poll only, as it would cost against real AWS, Azure, Kubernetes and
Prometheus.

* **Azure Retail Prices**: ``tests.fakes.azure_prices.FakeAzurePrices``
  with a catalogue built through its public ``vm_item`` (every meter a real
  answer holds per size: regular, Windows, Spot, Low Priority, dev/test,
  reservations) for :data:`AZURE_REGIONS` x :data:`AZURE_SIZES`.
* **EC2 ``DescribeSpotPriceHistory``**: moto's ``ThreadedMotoServer``
  (every price is moto's constant 0.00001; entries per (type, zone) as in
  moto's offerings; no paging).
* **Kubernetes**: kmock's ``KubernetesEmulator`` holding one cluster of
  :data:`POOLS` (50 GPU nodes, 300 pods), with node and pod objects shaped
  and sized like a real API server's (labels, taints, conditions, images,
  managed fields, container statuses).
* **Prometheus**: a real ``prometheus`` (``tests.support.prometheus``)
  scraping a DCGM-style exporter with every GPU of the cluster; skipped with
  a printed reason when the binary is missing.

When everything is up, one JSON line on stdout gives the URLs (and the
sizes of what a poll reads); then it serves until SIGTERM/SIGINT, until
stdin closes (``--watch-stdin``: the bench holds the other end, so the
backends end with it even if it is killed), or until ``--max-lifetime-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AWS_INSTANCE_TYPES",
    "AWS_REGIONS",
    "AZURE_REGIONS",
    "AZURE_SIZES",
    "GPU_TAINT",
    "POOL_LABEL",
    "POOLS",
    "Pool",
    "pool_target",
]

#: EC2 regions and GPU instance types the bench prices; every pair is in moto's offerings
AWS_REGIONS = ("eu-central-1", "eu-west-2", "us-east-1", "us-east-2", "us-west-2")
AWS_INSTANCE_TYPES = ("g4dn.2xlarge", "g4dn.xlarge", "g5.2xlarge", "g5.xlarge", "g6.xlarge")
#: Azure regions and GPU VM sizes, with a Linux pay-as-you-go list price (USD/h, made up in the API's range)
AZURE_REGIONS = ("eastus", "eastus2", "northeurope", "westeurope", "westus2")
AZURE_SIZES: dict[str, tuple[str, str, float]] = {
    # arm SKU name: (meter/sku name, series, Linux price)
    "Standard_NC4as_T4_v3": ("NC4as T4 v3", "NCasT4_v3", 0.526),
    "Standard_NC8as_T4_v3": ("NC8as T4 v3", "NCasT4_v3", 0.752),
    "Standard_NC16as_T4_v3": ("NC16as T4 v3", "NCasT4_v3", 1.204),
    "Standard_NC24ads_A100_v4": ("NC24ads A100 v4", "NCadsA100v4", 3.673),
    "Standard_NV36ads_A10_v5": ("NV36ads A10 v5", "NVadsA10v5", 3.200),
}
_AZURE_REGION_FACTOR = {"eastus": 1.0, "eastus2": 1.0, "westus2": 1.02, "westeurope": 1.17, "northeurope": 1.12}

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

#: the DCGM fields a real dcgm-exporter exports by default besides the three the source reads
_EXTRA_DCGM = ("DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_POWER_USAGE")
READY_TIMEOUT_S = 60.0


def pool_target(pool: Pool) -> str:
    """The kubernetes target that owns ``pool`` (also the DCGM series' ``fusionplane_target`` label)."""
    return f"k8s-{pool.name}"


def node_name(pool: Pool, index: int) -> str:
    return f"gke-gpu-{pool.name}-{index:02d}"


# ---- Azure -----------------------------------------------------------------------------------


def azure_catalogue() -> list[dict[str, Any]]:
    """Every meter of every (region, size), as the Retail Prices API lists them, plus another service."""
    from tests.fakes.azure_prices import vm_item

    items: list[dict[str, Any]] = []
    for region in AZURE_REGIONS:
        factor = _AZURE_REGION_FACTOR[region]
        for arm_sku, (sku, series, base) in AZURE_SIZES.items():
            linux = round(base * factor, 4)
            linux_product = f"Virtual Machines {series} Series"
            windows_product = f"{linux_product} Windows"
            items += [
                vm_item(region, arm_sku, sku, linux_product, linux),
                vm_item(region, arm_sku, sku, windows_product, round(linux * 1.4, 4)),
                vm_item(region, arm_sku, sku, linux_product, round(linux * 5500), price_type="Reservation",
                        reservation_term="1 Year"),
                vm_item(region, arm_sku, sku, linux_product, round(linux * 10500), price_type="Reservation",
                        reservation_term="3 Years"),
                vm_item(region, arm_sku, sku, windows_product, linux, price_type="DevTestConsumption"),
                vm_item(region, arm_sku, f"{sku} Low Priority", linux_product, round(linux * 0.2, 4)),
                vm_item(region, arm_sku, f"{sku} Low Priority", windows_product, round(linux * 0.36, 4)),
                vm_item(region, arm_sku, f"{sku} Spot", windows_product, round(linux * 0.62, 4)),
                vm_item(region, arm_sku, f"{sku} Spot", linux_product, round(linux * 0.3, 4)),
            ]  # fmt: skip
        # meters of other services in the same region, which the source's filter must leave out
        items.append(vm_item(region, "", "Hot LRS", "Blob Storage", 0.0208, unit="1 GB/Month", service="Storage"))
    return items


@contextlib.contextmanager
def azure_prices() -> Iterator[str]:
    from tests.fakes.azure_prices import FakeAzurePrices

    with FakeAzurePrices(items=azure_catalogue()) as fake:
        yield fake.url


# ---- EC2 -------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_ec2() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    # werkzeug logs one line per request on its own handler: noise on the bench's stderr
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()
        inner = getattr(server, "_server", None)
        if inner is not None:  # stop() leaves the listening socket open
            inner.server_close()


# ---- Kubernetes ------------------------------------------------------------------------------


def _stamp(rng: random.Random, days: int = 30) -> str:
    when = time.gmtime(time.time() - rng.randint(3600, days * 86400))
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", when)


def _uid(*parts: str) -> str:
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
    cpu = str(pool.gpus_per_node * 12)
    memory = f"{pool.gpus_per_node * 110}Gi"
    labels = {
        "kubernetes.io/arch": "amd64",
        "kubernetes.io/os": "linux",
        "kubernetes.io/hostname": name,
        "node.kubernetes.io/instance-type": f"gpu-{pool.product.lower()}-{pool.gpus_per_node}",
        "topology.kubernetes.io/region": "onprem-1",
        "topology.kubernetes.io/zone": pool.zone,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": pool.product,
        "nvidia.com/gpu.count": gpus,
        "nvidia.com/gpu.memory": str(pool.memory_mib),
        "nvidia.com/cuda.driver.major": "550",
        "nvidia.com/mig.config": "all-disabled",
        "feature.node.kubernetes.io/pci-10de.present": "true",
        POOL_LABEL: pool.name,
    }
    taints = [GPU_TAINT] + ([pool.taint] if pool.taint else [])
    if cordoned:
        taints.append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": stamp})
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
    images = [
        {
            "names": [f"registry.internal/{repo}@sha256:{_uid(repo, name)[:32]}", f"registry.internal/{repo}:v{i}.2"],
            "sizeBytes": rng.randint(20_000_000, 9_000_000_000),
        }
        for i, repo in enumerate(
            ("fusionplane/worker", "fusionplane/worker-cuda", "nvidia/k8s-device-plugin", "nvidia/dcgm-exporter",
             "nvidia/gpu-operator-validator", "nvidia/driver", "nvidia/container-toolkit", "kube-proxy", "pause",
             "ml/trainer", "ml/trainer-nightly", "render/blender", "render/ffmpeg", "coredns", "node-exporter",
             "fluent-bit", "calico/node", "calico/cni", "csi/node-driver-registrar", "csi/gcs-fuse")
        )
    ]  # fmt: skip
    allocatable = {"cpu": cpu, "memory": memory, "ephemeral-storage": "400Gi", "pods": "110", "nvidia.com/gpu": gpus}
    metadata: dict[str, Any] = {
        "name": name,
        "uid": _uid("node", name),
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
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": f"10.20.0.{index}"}, {"type": "Hostname", "address": name}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": _uid("machine", name).replace("-", ""),
                "systemUUID": _uid("system", name),
                "bootID": _uid("boot", name),
                "kernelVersion": "6.1.0-27-amd64",
                "osImage": "Debian GNU/Linux 12 (bookworm)",
                "containerRuntimeVersion": "containerd://1.7.22",
                "kubeletVersion": "v1.30.5",
                "kubeProxyVersion": "v1.30.5",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
            "images": images,
        },
    }


def make_pod(
    namespace: str, name: str, *, node: str | None, gpus: int, app: str, rng: random.Random, phase: str = "Running"
) -> dict[str, Any]:
    """A pod as ``kubectl get pod -o json`` shows one after the scheduler and the kubelet have been at it."""
    stamp = _stamp(rng, days=3)
    resources: dict[str, Any] = {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}
    if gpus:
        resources["requests"]["nvidia.com/gpu"] = str(gpus)
        resources["limits"]["nvidia.com/gpu"] = str(gpus)
    image = f"registry.internal/{app}:v3.2"
    container = {
        "name": app.rsplit("/", 1)[-1],
        "image": image,
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
    spec: dict[str, Any] = {
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
    status: dict[str, Any] = {"phase": phase, "qosClass": "Burstable"}
    if node is not None:
        spec["nodeName"] = node
        started = phase == "Running"
        status.update(
            hostIP="10.20.0.1",
            podIP=f"10.64.{rng.randint(0, 49)}.{rng.randint(2, 250)}",
            startTime=stamp,
            conditions=[
                {"type": kind, "status": "True" if started else "False", "lastTransitionTime": stamp}
                for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            containerStatuses=[
                {
                    "name": container["name"],
                    "image": image,
                    "imageID": f"{image}@sha256:{_uid(image)[:32]}",
                    "containerID": f"containerd://{_uid(namespace, name).replace('-', '')}",
                    "ready": started,
                    "restartCount": rng.choice((0, 0, 0, 1, 2)),
                    "started": started,
                    "state": {"running": {"startedAt": stamp}}
                    if started
                    else {"waiting": {"reason": "PodInitializing"}},
                }
            ],
        )
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
            "uid": _uid("pod", namespace, name),
            "resourceVersion": str(rng.randint(10_000, 99_999_999)),
            "creationTimestamp": stamp,
            "generateName": name.rsplit("-", 1)[0] + "-",
            "labels": {"app.kubernetes.io/name": container["name"], "pod-template-hash": _uid(name)[:10]},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": name.rsplit("-", 1)[0],
                    "uid": _uid("rs", name),
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
                pod_name = f"{app}-{_uid(app, node['metadata']['name'])[:5]}"
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
                f"{app.rsplit('/', 1)[-1]}-{count:04d}-{_uid(str(count))[:5]}",
                node=host,
                gpus=gpus,
                app=app,
                rng=rng,
                phase="Running" if host is not None else "Pending",
            )
        )
        count += 1
    return nodes, pods


class KmockCluster:
    """kmock's Kubernetes emulator on 127.0.0.1, on its own event-loop thread, preloaded with the cluster."""

    def __init__(self, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.nodes, self.pods = nodes, pods
        self.url = ""
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)

    def __enter__(self) -> KmockCluster:
        self._thread.start()
        if not self._ready.wait(READY_TIMEOUT_S) or self._failed is not None:
            raise RuntimeError(f"kmock did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, which waits on _ready
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        import kmock

        handler = kmock.KubernetesEmulator()
        handler.resources["v1/nodes"] = kmock.ResourceInfo(namespaced=False, kind="Node")
        handler.resources["v1/pods"] = kmock.ResourceInfo(namespaced=True, kind="Pod")
        # stored directly (kmock's documented way to preload objects): 650 create/patch calls
        # over HTTP would only slow the start, and the objects are the same
        for node in self.nodes:
            handler.objects["v1/nodes", None, node["metadata"]["name"]] = node
        for pod in self.pods:
            handler.objects["v1/pods", pod["metadata"]["namespace"], pod["metadata"]["name"]] = pod
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with handler, kmock.Server(handler, host="127.0.0.1") as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()


# ---- Prometheus and the DCGM exporter --------------------------------------------------------


def dcgm_registry() -> tuple[Any, int]:
    """A registry with dcgm-exporter's series for every GPU of the cluster; and how many GPUs."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    labels = ("gpu", "UUID", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION", "fusionplane_target")
    util = Gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels, registry=registry)
    used = Gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels, registry=registry)
    free = Gauge("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels, registry=registry)
    extra = [Gauge(name, name, labels, registry=registry) for name in _EXTRA_DCGM]
    rng = random.Random(SEED)
    gpus = 0
    for pool in POOLS:
        for index in range(pool.nodes):
            host = node_name(pool, index)
            for gpu in range(pool.gpus_per_node):
                values = (str(gpu), _uid("gpu", host, str(gpu)), f"nvidia{gpu}", pool.product, host, "550.90.07")
                series = (*values, pool_target(pool))
                fb_used = rng.randint(0, pool.memory_mib)
                util.labels(*series).set(rng.randint(0, 100))
                used.labels(*series).set(fb_used)
                free.labels(*series).set(pool.memory_mib - fb_used)
                for gauge in extra:
                    gauge.labels(*series).set(rng.randint(30, 1500))
                gpus += 1
    return registry, gpus


@contextlib.contextmanager
def prometheus(scrape_interval_s: float) -> Iterator[dict[str, Any]]:
    """A real Prometheus scraping the DCGM exporter, once every GPU's series is queryable; or why not."""
    from tests.support.prometheus import missing_binaries, running_prometheus, serving_exporter

    reason = missing_binaries()
    if reason is not None:
        print(f"signal_backends: Prometheus skipped: {reason}", file=sys.stderr, flush=True)
        yield {"prometheus": None, "prometheus_skipped": reason}
        return
    registry, gpus = dcgm_registry()
    with (
        serving_exporter(registry) as exporter,
        running_prometheus([exporter], scrape_interval_s=scrape_interval_s) as server,
    ):
        # the first scrape comes up to one interval after the start: wait for it, or the first polls find no data
        server.wait_for(
            "count(DCGM_FI_DEV_GPU_UTIL)",
            lambda result: bool(result) and int(float(result[0]["value"][1])) == gpus,
            timeout_s=READY_TIMEOUT_S,
        )
        yield {
            "prometheus": server.url,
            "prometheus_pid": server.process.pid,
            "dcgm_exporter": f"http://{exporter}/metrics",
            "dcgm_gpus": gpus,
            "dcgm_series": gpus * (3 + len(_EXTRA_DCGM)),
            "scrape_interval_s": scrape_interval_s,
        }


# ---- the process -----------------------------------------------------------------------------


def pin_to_last_core() -> str:
    """Pin this process (and what it starts) to the last allowed core, away from the bench's first one."""
    if not hasattr(os, "sched_getaffinity"):
        return "not pinned (no sched_setaffinity here)"
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return f"not pinned: only core {cores[0]} is allowed, the backends share it with the bench"
    os.sched_setaffinity(0, {cores[-1]})
    return f"pinned to core {cores[-1]}"


def _json_bytes(objects: list[dict[str, Any]]) -> int:
    """About what a list answer of these objects weighs on the wire (kmock adds a few bytes of envelope)."""
    return len(json.dumps(objects).encode())


def _wait_for_stop(stop: threading.Event, max_lifetime_s: float) -> None:
    deadline = time.monotonic() + max_lifetime_s
    # short waits so that the signal handler's flag is seen at once; bounded by the lifetime
    while not stop.is_set() and time.monotonic() < deadline:
        stop.wait(0.5)


def _watch_stdin(stop: threading.Event) -> None:
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):  # ends at EOF: the bench closed its end, or died
            pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-lifetime-s", type=float, default=600.0)
    parser.add_argument("--scrape-interval-s", type=float, default=5.0)
    parser.add_argument("--watch-stdin", action="store_true", help="exit when stdin reaches EOF")
    args = parser.parse_args(argv)
    pinned = pin_to_last_core()  # first, so that every thread and child process inherits it
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if args.watch_stdin:
        threading.Thread(target=_watch_stdin, args=(stop,), name="stdin", daemon=True).start()
    started = time.monotonic()
    nodes, pods = cluster_objects()
    with contextlib.ExitStack() as stack:
        azure_url = stack.enter_context(azure_prices())
        aws_url = stack.enter_context(moto_ec2())
        cluster = stack.enter_context(KmockCluster(nodes, pods))
        prom = stack.enter_context(prometheus(args.scrape_interval_s))
        line = {
            "pid": os.getpid(),
            "pinned": pinned,
            "azure": azure_url,
            "aws": aws_url,
            "kubernetes": cluster.url,
            "kubernetes_nodes": len(nodes),
            "kubernetes_pods": len(pods),
            "kubernetes_node_list_bytes": _json_bytes(nodes),
            "kubernetes_pod_list_bytes": _json_bytes(pods),
            **prom,
            "started_in_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps(line), flush=True)
        _wait_for_stop(stop, args.max_lifetime_s)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
