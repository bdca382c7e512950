"""Free GPUs on Kubernetes, against kmock's Kubernetes emulator and the real ``kubernetes`` client.

kmock (``KubernetesEmulator``) stores what the client creates and patches and
serves it back, over real HTTP on 127.0.0.1. Its list endpoint ignores
``limit``, ``continue`` and ``fieldSelector`` (kmock 0.8 returns every object
of the resource in one page), so :class:`EmulatedCluster` adds one kmock
reaction in front of it that lists the emulator's own stored objects the way
the API server does: sorted by namespace/name, paged by ``limit`` with an
opaque ``continue`` token and ``remainingItemCount``, filtered by the pod
field selector, 410 Expired for a token the test marks expired, 400 for a
selector it cannot honour. ``bare`` runs kmock's emulator without it, to
show the count stays right when a server ignores the selector.

kmock runs on its own event loop thread, since the client under test is
synchronous. Objects are created the way they reach a real cluster: Nodes
with their status (the API server lets a kubelet register status on create),
Pods without one and then ``patch_namespaced_pod_status`` (the API server
resets a new pod's status to Pending).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import kubernetes
import pytest

from controlplane.domain import CAPACITY_SOURCE, Target
from controlplane.signals.base import PollResult, wanted_from_targets
from controlplane.signals.kubernetes_capacity import (
    POD_FIELD_SELECTOR,
    KubernetesCapacityError,
    KubernetesCapacitySource,
    NodeRules,
    pod_gpu_request,
    tolerates,
)
from tests.support.loopback import SilentServer, free_port

pytestmark = pytest.mark.timeout(30)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
NODES = kmock.resource("", "v1", "nodes")
PODS = kmock.resource("", "v1", "pods")
PRIORITY_CLASSES = kmock.resource("scheduling.k8s.io", "v1", "priorityclasses")
START_TIMEOUT_S = 10.0


# -- the emulated cluster ------------------------------------------------------------------------


class EmulatedCluster:
    """kmock's KubernetesEmulator on 127.0.0.1, on its own event loop thread."""

    def __init__(self, *, port: int | None = None, api_semantics: bool = True) -> None:
        self.port_wanted, self.api_semantics = port, api_semantics
        self.expired_tokens: set[str] = set()
        #: while set, every request is answered HTTP 200 with an HTML page (a proxy's error page, say)
        self.garbage = threading.Event()
        #: while set, every request is answered 403 Forbidden
        self.forbidden = threading.Event()
        #: requests for these resources are answered 403 Forbidden (a ClusterRole without them)
        self.forbidden_resources: list[Any] = []
        self._ready = threading.Event()
        self._failed: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="kmock", daemon=True)
        self.handler: kmock.KubernetesEmulator
        self.url = ""

    def __enter__(self) -> EmulatedCluster:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_S) or self._failed is not None:
            raise RuntimeError(f"kmock did not start: {self._failed!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(START_TIMEOUT_S)
        assert not self._thread.is_alive(), "kmock's loop did not stop"

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to __enter__, which is waiting for _ready
            self._failed = exc
            self._ready.set()

    async def _serve(self) -> None:
        handler = kmock.KubernetesEmulator()
        # declared, so that listing a resource with no objects yet is an empty list and not a 404
        handler.resources["v1/nodes"] = kmock.ResourceInfo(namespaced=False, kind="Node")
        handler.resources["v1/pods"] = kmock.ResourceInfo(namespaced=True, kind="Pod")
        handler.resources["scheduling.k8s.io/v1/priorityclasses"] = kmock.ResourceInfo(
            namespaced=False, kind="PriorityClass"
        )
        handler[lambda request: self.garbage.is_set()] << b"<html><body>502 Bad Gateway</body></html>"
        handler[lambda request: self.forbidden.is_set()] << kmock.KubernetesError(
            status=403, reason="Forbidden", message='nodes is forbidden: User "x" cannot list resource "nodes"'
        )
        handler[lambda request: any(request.resource == r for r in self.forbidden_resources)] << kmock.KubernetesError(
            status=403, reason="Forbidden", message='User "x" cannot list this resource'
        )
        if self.api_semantics:
            handler[kmock.action.LIST, NODES] << self._list
            handler[kmock.action.LIST, PODS] << self._list
        self.handler = handler
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        async with handler, kmock.Server(handler, host="127.0.0.1", port=self.port_wanted) as server:
            self.url = str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def on_loop(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on kmock's loop (its objects and request log are the loop's to touch)."""
        assert self._loop is not None

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(START_TIMEOUT_S)

    def requests(self, *, resource: Any = None) -> list[Any]:
        """The requests kmock received, optionally those for one resource."""
        requests: list[Any] = self.on_loop(
            lambda: [r for r in self.handler if resource is None or r.resource == resource]
        )
        return requests

    # The API server's list: the emulator's stored objects, sorted, selected and paged.
    def _list(self, request: Any) -> Any:
        params = request.params
        if params.get("labelSelector"):
            return kmock.KubernetesError(status=400, reason="BadRequest", message="labelSelector: not emulated")
        objects = sorted(
            (
                ((namespace or "", name), obj.raw)
                for (resource, namespace, name), obj in self.handler.objects.items()
                if resource == request.resource and not obj.deleted
                if request.namespace is None or namespace == request.namespace
            ),
            key=lambda pair: pair[0],
        )
        for term in filter(None, params.get("fieldSelector", "").split(",")):
            field_name, op, value = _split_selector(term)
            if field_name != "status.phase" or request.resource != PODS:
                return kmock.KubernetesError(
                    status=400, reason="BadRequest", message=f'field label not supported: "{field_name}"'
                )
            wanted = op == "="
            objects = [(k, o) for k, o in objects if (o.get("status", {}).get("phase") == value) == wanted]
        token = params.get("continue")
        if token:
            if token in self.expired_tokens:
                return kmock.KubernetesError(
                    status=410, reason="Expired", message="The provided continue parameter is too old"
                )
            after = tuple(json.loads(base64.urlsafe_b64decode(token))["after"])
            objects = [(k, o) for k, o in objects if k > after]
        limit = int(params.get("limit") or 0)
        page = objects[:limit] if limit else objects
        metadata: dict[str, Any] = {"resourceVersion": "1000"}
        if limit and len(objects) > limit:
            last = page[-1][0]
            metadata["continue"] = base64.urlsafe_b64encode(json.dumps({"after": list(last)}).encode()).decode()
            metadata["remainingItemCount"] = len(objects) - limit
        kind = "NodeList" if request.resource == NODES else "PodList"
        return {"apiVersion": "v1", "kind": kind, "metadata": metadata, "items": [o for _, o in page]}


def _split_selector(term: str) -> tuple[str, str, str]:
    for op in ("!=", "==", "="):
        if op in term:
            name, value = term.split(op, 1)
            return name, "!=" if op == "!=" else "=", value
    raise ValueError(term)


@pytest.fixture
def cluster() -> Iterator[EmulatedCluster]:
    with EmulatedCluster() as emulated:
        yield emulated


@pytest.fixture
def bare() -> Iterator[EmulatedCluster]:
    with EmulatedCluster(api_semantics=False) as emulated:
        yield emulated


@pytest.fixture
def source() -> Iterator[KubernetesCapacitySource]:
    built = KubernetesCapacitySource(ttl_seconds=45.0)
    yield built
    built.close()


class Clusters:
    """A kubeconfig with one context per server URL, and a core API client for each."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.contexts: dict[str, str] = {}
        self._clients: list[Any] = []

    def add(self, context: str, url: str) -> kubernetes.client.CoreV1Api:
        self.contexts[context] = url
        clusters = [{"name": c, "cluster": {"server": u}} for c, u in self.contexts.items()]
        contexts = [{"name": c, "context": {"cluster": c, "user": "tester"}} for c in self.contexts]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": clusters,
            "contexts": contexts,
            "users": [{"name": "tester", "user": {"token": "not-checked"}}],
            "current-context": next(iter(self.contexts)),
        }
        # JSON is YAML: the kubeconfig loader reads it as it reads any kubeconfig
        self.path.write_text(json.dumps(config))
        configuration = kubernetes.client.Configuration()
        configuration.host = url
        client = kubernetes.client.ApiClient(configuration)
        self._clients.append(client)
        return kubernetes.client.CoreV1Api(client)

    def target(self, name: str, context: str, **settings: Any) -> Target:
        settings = {"kubeconfig": str(self.path), "context": context, **settings}
        return Target(name=name, provider="kubernetes", private=False, settings=settings)

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def kube(tmp_path: Path) -> Iterator[Clusters]:
    clusters = Clusters(tmp_path / "kubeconfig")
    yield clusters
    clusters.close()


def _drain(response: Any) -> None:
    """Read a raw answer to its end, so that its connection goes back to the pool reusable."""
    assert response.status < 300, response.data
    response.data  # noqa: B018  (the read is the point)
    response.release_conn()


def make_node(
    api: kubernetes.client.CoreV1Api,
    name: str,
    *,
    gpus: str | None = "4",
    ready: str | None = "True",
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    resource: str = "nvidia.com/gpu",
) -> None:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    allocatable = {"cpu": "32", "memory": "256Gi"} | ({resource: gpus} if gpus is not None else {})
    body = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"taints": taints} if taints else {},
        "status": {"allocatable": allocatable, "capacity": allocatable, "conditions": conditions},
    }
    _drain(api.create_node(body, _preload_content=False))


def container(
    name: str = "c", *, requests: str | None = None, limits: str | None = None, **extra: Any
) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = {"nvidia.com/gpu": requests, "cpu": "1"}
    if limits is not None:
        resources["limits"] = {"nvidia.com/gpu": limits}
    return {"name": name, "image": "registry.internal/fusionplane/worker:1", "resources": resources, **extra}


def make_pod(
    api: kubernetes.client.CoreV1Api,
    name: str,
    *,
    node: str | None,
    phase: str = "Running",
    containers: list[dict[str, Any]] | None = None,
    init_containers: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    priority: int | None = None,
) -> None:
    spec: dict[str, Any] = {"containers": containers or [container(requests="1", limits="1")]}
    if node is not None:
        spec["nodeName"] = node
    if priority is not None:  # what the Priority admission plugin resolves from priorityClassName
        spec["priority"] = priority
    if init_containers:
        spec["initContainers"] = init_containers
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}
    _drain(api.create_namespaced_pod(namespace, body, _preload_content=False))
    _drain(api.patch_namespaced_pod_status(name, namespace, {"status": {"phase": phase}}, _preload_content=False))


def poll(source: KubernetesCapacitySource, *targets: Target, timeout_s: float = 5.0) -> PollResult:
    return source.poll(wanted_from_targets(list(targets)), timeout_s=timeout_s, clock=lambda: NOW)


def free(result: PollResult) -> dict[str, float]:
    return {sample.key: sample.value for sample in result.samples}


# -- counting ------------------------------------------------------------------------------------


def test_only_ready_nodes_count_and_the_sample_is_stamped(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "ready", gpus="4")
    make_node(api, "not-ready", gpus="4", ready="False")
    make_node(api, "unknown", gpus="4", ready="Unknown")
    make_node(api, "no-conditions", gpus="4", ready=None)
    make_node(api, "cpu-only", gpus=None)

    result = poll(source, kube.target("k8s", "a"))

    assert free(result) == {"k8s": 4.0}
    [sample] = result.samples
    assert (sample.source, sample.observed_at, sample.ttl_seconds) == (CAPACITY_SOURCE, NOW, 45.0)
    assert result.problems == []


def test_cordoned_nodes_do_not_count_unless_the_target_tolerates_unschedulable(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "open", gpus="4")
    make_node(api, "cordoned", gpus="2")
    _drain(api.patch_node("cordoned", {"spec": {"unschedulable": True}}, _preload_content=False))
    unschedulable = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}

    result = poll(
        source,
        kube.target("plain", "a"),
        kube.target("tolerant", "a", tolerations=[unschedulable]),
        kube.target("wrong-effect", "a", tolerations=[{**unschedulable, "effect": "NoExecute"}]),
    )

    assert free(result) == {"plain": 4.0, "tolerant": 6.0, "wrong-effect": 4.0}


def test_hard_taints_need_a_toleration_and_soft_ones_do_not(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "plain", gpus="1")
    make_node(api, "gpu-only", gpus="2", taints=[{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
    make_node(api, "dedicated", gpus="4", taints=[{"key": "dedicated", "value": "vfx", "effect": "NoExecute"}])
    make_node(api, "preferred", gpus="8", taints=[{"key": "spot", "value": "true", "effect": "PreferNoSchedule"}])

    result = poll(
        source,
        kube.target("none", "a"),
        kube.target(
            "gpu-equal",
            "a",
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}],
        ),
        kube.target("gpu-wrong-value", "a", tolerations=[{"key": "nvidia.com/gpu", "value": "absent"}]),
        kube.target("dedicated-exists", "a", tolerations=[{"key": "dedicated", "operator": "Exists"}]),
        kube.target("everything", "a", tolerations=[{"operator": "Exists"}]),
        kube.target("future-operator", "a", tolerations=[{"key": "dedicated", "operator": "Gt", "value": "1"}]),
    )

    assert free(result) == {
        "none": 9.0,  # plain + preferred: PreferNoSchedule only steers
        "gpu-equal": 11.0,
        "gpu-wrong-value": 9.0,
        "dedicated-exists": 13.0,
        "everything": 15.0,
        "future-operator": 9.0,  # an operator we do not know tolerates nothing
    }


def test_node_selector_is_label_equality(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "a100", gpus="8", labels={"gpu": "a100", "zone": "a"})
    make_node(api, "t4", gpus="4", labels={"gpu": "t4", "zone": "a"})
    make_node(api, "unlabelled", gpus="2")

    result = poll(
        source,
        kube.target("a100", "a", node_selector={"gpu": "a100"}),
        kube.target("zone-a", "a", node_selector={"zone": "a"}),
        kube.target("t4-zone-b", "a", node_selector={"gpu": "t4", "zone": "b"}),
        kube.target("any", "a"),
    )

    assert free(result) == {"a100": 8.0, "zone-a": 12.0, "t4-zone-b": 0.0, "any": 14.0}


def test_pods_that_hold_gpus_are_subtracted_and_finished_ones_are_not(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "n1", gpus="8")
    make_node(api, "n2", gpus="2")
    make_pod(api, "running", node="n1", phase="Running", containers=[container(requests="1", limits="1")])
    make_pod(api, "bound-pending", node="n1", phase="Pending", containers=[container(requests="2", limits="2")])
    make_pod(api, "other-ns", node="n1", namespace="batch", containers=[container(requests="1", limits="1")])
    make_pod(api, "done", node="n1", phase="Succeeded", containers=[container(requests="4", limits="4")])
    make_pod(api, "crashed", node="n1", phase="Failed", containers=[container(requests="4", limits="4")])
    make_pod(api, "unbound", node=None, phase="Pending", containers=[container(requests="4", limits="4")])
    make_pod(api, "unknown-phase", node="n2", phase="Unknown", containers=[container(requests="1", limits="1")])
    make_pod(api, "cpu-job", node="n2", containers=[{"name": "c", "image": "x", "resources": {}}])

    result = poll(source, kube.target("k8s", "a"))

    assert free(result) == {"k8s": (8 - 1 - 2 - 1) + (2 - 1)}
    [pod_list] = cluster.requests(resource=PODS)[-1:]
    assert pod_list.url.path == "/api/v1/pods"  # every namespace
    assert pod_list.params["fieldSelector"] == "status.phase!=Succeeded,status.phase!=Failed" == POD_FIELD_SELECTOR


def test_a_server_that_ignores_the_field_selector_does_not_hide_gpus(
    bare: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    # kmock's emulator as it is: no paging, no field selectors
    api = kube.add("a", bare.url)
    make_node(api, "n1", gpus="4")
    make_pod(api, "running", node="n1", containers=[container(requests="1")])
    make_pod(api, "done", node="n1", phase="Succeeded", containers=[container(requests="3")])

    assert free(poll(source, kube.target("k8s", "a"))) == {"k8s": 3.0}


def test_requests_else_limits_per_container(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "n1", gpus="8")
    make_pod(
        api,
        "mixed",
        node="n1",
        containers=[
            container("requests-only", requests="1"),
            container("limits-only", limits="2"),
            container("both", requests="1", limits="1"),
            container("none"),
        ],
    )

    assert free(poll(source, kube.target("k8s", "a"))) == {"k8s": 8 - (1 + 2 + 1)}


def test_init_containers_count_as_the_scheduler_counts_them(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    for name in ("big-init", "small-init", "sidecar"):
        make_node(api, name, gpus="8", labels={"case": name})
    # an init container runs alone before the apps: max(3, 1 + 1) = 3
    make_pod(
        api,
        "big-init",
        node="big-init",
        init_containers=[container("warm", requests="3")],
        containers=[container("a", requests="1"), container("b", requests="1")],
    )
    # max(1, 1 + 2) = 3
    make_pod(
        api,
        "small-init",
        node="small-init",
        init_containers=[container("warm", limits="1")],
        containers=[container("a", requests="1"), container("b", requests="2")],
    )
    # a sidecar (restartPolicy Always) keeps running beside the apps: apps 2 + sidecar 1 = 3, more
    # than the init container that runs after it (1 + sidecar 1 = 2), so 3
    make_pod(
        api,
        "sidecar",
        node="sidecar",
        init_containers=[container("proxy", requests="1", restartPolicy="Always"), container("warm", requests="1")],
        containers=[container("a", requests="2")],
    )

    result = poll(
        source, *(kube.target(n, "a", node_selector={"case": n}) for n in ("big-init", "small-init", "sidecar"))
    )

    assert free(result) == {"big-init": 5.0, "small-init": 5.0, "sidecar": 5.0}


def test_milli_quantities_and_fractions_round_down_per_node(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "milli", gpus="4000m")
    make_node(api, "half", gpus="3")
    make_node(api, "half-too", gpus="1")
    make_pod(api, "one", node="milli", containers=[container(requests="1000m")])
    make_pod(api, "one-and-a-half", node="half", containers=[container(requests="1500m")])
    make_pod(api, "half", node="half-too", containers=[container(requests="500m")])

    # 3 + floor(1.5) + floor(0.5): two half GPUs on two nodes do not make one
    assert free(poll(source, kube.target("k8s", "a"))) == {"k8s": 4.0}


def test_over_commit_counts_zero_and_is_reported(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "full", gpus="2")
    make_node(api, "spare", gpus="4")
    make_pod(api, "a", node="full", containers=[container(requests="2")])
    make_pod(api, "b", node="full", containers=[container(requests="1")])

    result = poll(source, kube.target("k8s", "a"))

    assert free(result) == {"k8s": 4.0}  # not 4 - 1
    [problem] = result.problems
    assert problem.startswith("k8s: node full is over-committed")


def test_gpu_resource_name_comes_from_the_settings(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "nv", gpus="4")
    make_node(api, "amd", gpus="2", resource="amd.com/gpu")

    result = poll(source, kube.target("nvidia", "a"), kube.target("amd", "a", gpu_resource="amd.com/gpu"))

    assert free(result) == {"nvidia": 4.0, "amd": 2.0}


def test_lists_are_paged_with_limit_and_continue(cluster: EmulatedCluster, kube: Clusters, tmp_path: Path) -> None:
    api = kube.add("a", cluster.url)
    for i in range(5):
        make_node(api, f"n{i}", gpus="2")
    for i in range(7):
        make_pod(api, f"p{i}", node=f"n{i % 5}", containers=[container(requests="1")])
    make_pod(api, "done", node="n0", phase="Succeeded", containers=[container(requests="2")])
    paging = KubernetesCapacitySource(page_size=2)
    try:
        result = poll(paging, kube.target("k8s", "a"))
    finally:
        paging.close()

    assert free(result) == {"k8s": 10 - 7}
    node_lists = cluster.requests(resource=NODES)
    node_lists = [r for r in node_lists if r.method == "GET"]
    pod_lists = [r for r in cluster.requests(resource=PODS) if r.method == "GET"]
    assert [r.params.get("limit") for r in node_lists] == ["2", "2", "2"]
    assert "continue" not in node_lists[0].params
    assert all(r.params["continue"] for r in node_lists[1:])
    # 7 live pods in pages of 2 (the Succeeded one is filtered by the server)
    assert len(pod_lists) == 4
    assert len({r.params.get("continue") for r in pod_lists}) == 4
    assert all(r.params["fieldSelector"] == POD_FIELD_SELECTOR for r in pod_lists)


def test_an_expired_continue_token_falls_back_to_one_full_list(cluster: EmulatedCluster, kube: Clusters) -> None:
    api = kube.add("a", cluster.url)
    for i in range(3):
        make_node(api, f"n{i}", gpus="2")
    make_pod(api, "p", node="n2", containers=[container(requests="1")])
    first_token = cluster.on_loop(lambda: cluster._list(_ListRequest(NODES, {"limit": "2"})))["metadata"]["continue"]
    cluster.expired_tokens.add(first_token)
    paging = KubernetesCapacitySource(page_size=2)
    try:
        result = poll(paging, kube.target("k8s", "a"))
    finally:
        paging.close()

    assert free(result) == {"k8s": 5.0}
    node_lists = [r.params for r in cluster.requests(resource=NODES) if r.method == "GET"]
    assert node_lists == [{"limit": "2"}, {"limit": "2", "continue": first_token}, {}]


class _ListRequest:
    """What ``EmulatedCluster._list`` reads of a request, to ask it for the first page's token."""

    def __init__(self, resource: Any, params: dict[str, str]) -> None:
        self.resource, self.params, self.namespace = resource, params, None


def test_two_targets_on_one_cluster_share_one_read(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "a100", gpus="8", labels={"gpu": "a100"})
    make_node(api, "t4", gpus="4", labels={"gpu": "t4"})
    make_pod(api, "p", node="t4", containers=[container(requests="3")])
    before = len(cluster.requests())

    result = poll(
        source,
        kube.target("big", "a", node_selector={"gpu": "a100"}),
        kube.target("small", "a", node_selector={"gpu": "t4"}),
    )

    assert free(result) == {"big": 8.0, "small": 1.0}
    reads = cluster.requests()[before:]
    assert [(r.method, r.url.path) for r in reads] == [("GET", "/api/v1/nodes"), ("GET", "/api/v1/pods")]


def test_two_clusters_in_one_poll_and_one_client_per_context(
    kube: Clusters, monkeypatch: pytest.MonkeyPatch, source: KubernetesCapacitySource
) -> None:
    loads: list[str] = []
    real_load = kubernetes.config.load_kube_config

    def counting_load(*args: Any, **kwargs: Any) -> None:
        loads.append(str(kwargs.get("context")))
        real_load(*args, **kwargs)

    monkeypatch.setattr(kubernetes.config, "load_kube_config", counting_load)
    with EmulatedCluster() as east, EmulatedCluster() as west:
        make_node(kube.add("east", east.url), "e1", gpus="4")
        make_node(kube.add("west", west.url), "w1", gpus="2")
        targets = [kube.target("east", "east"), kube.target("east-again", "east"), kube.target("west", "west")]

        first, second = poll(source, *targets), poll(source, *targets)

    assert free(first) == free(second) == {"east": 4.0, "east-again": 4.0, "west": 2.0}
    assert sorted(loads) == ["east", "west"]  # cached per (kubeconfig, context) across polls


def test_default_kubeconfig_from_the_environment(
    cluster: EmulatedCluster, kube: Clusters, monkeypatch: pytest.MonkeyPatch, source: KubernetesCapacitySource
) -> None:
    make_node(kube.add("current", cluster.url), "n1", gpus="3")
    kube.add("other", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: no in-cluster config
    monkeypatch.setenv("KUBECONFIG", str(kube.path))

    result = poll(
        source,
        Target(name="k8s", provider="kubernetes", private=False),
        Target(name="ctx", provider="kubernetes", private=False, settings={"context": "other"}),
    )

    # no settings: $KUBECONFIG's current context; a context alone: that context of $KUBECONFIG
    assert free(result) == {"k8s": 3.0}
    [problem] = result.problems
    assert problem.startswith("ctx: cannot reach the API server"), problem


def test_an_injected_client_factory_is_used(cluster: EmulatedCluster, kube: Clusters) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "n1", gpus="6")
    asked: list[str] = []

    def client_for(target: Target) -> Any:
        asked.append(target.name)
        return api.api_client

    injected = KubernetesCapacitySource(api_client_for=client_for)
    targets = [Target(name=n, provider="kubernetes", private=False) for n in ("one", "two")]
    before = len(cluster.requests())

    result = poll(injected, *targets)

    assert free(result) == {"one": 6.0, "two": 6.0}
    assert asked == ["one", "two"]
    assert len(cluster.requests()) - before == 2  # one client: one node list, one pod list


def test_no_kubernetes_targets_reads_nothing(source: KubernetesCapacitySource) -> None:
    local = Target(name="local", provider="local", private=True)
    assert poll(source, local) == PollResult()


def test_bad_settings_are_one_targets_problem(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    make_node(kube.add("a", cluster.url), "n1", gpus="2")

    result = poll(
        source,
        kube.target("good", "a"),
        kube.target("bool-label", "a", node_selector={"gpu": True}),
        kube.target("no-such-context", "b"),
    )

    assert free(result) == {"good": 2.0}
    assert [p.split(":")[0] for p in result.problems] == ["bool-label", "no-such-context"]
    assert "node_selector" in result.problems[0]


# -- faults --------------------------------------------------------------------------------------


def test_api_server_down_raises_within_the_timeout(kube: Clusters, source: KubernetesCapacitySource) -> None:
    kube.add("down", f"http://127.0.0.1:{free_port()}")

    started = time.monotonic()
    with pytest.raises(KubernetesCapacityError, match="k8s: cannot reach the API server"):
        poll(source, kube.target("k8s", "down"), timeout_s=2.0)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("retrying_client", [False, True], ids=["built-client", "injected-retrying-client"])
def test_a_server_that_never_answers_is_bounded_by_the_timeout(
    kube: Clusters, source: KubernetesCapacitySource, retrying_client: bool
) -> None:
    with SilentServer() as silent:
        api = kube.add("silent", f"http://127.0.0.1:{silent.port}")
        # an injected client keeps urllib3's default of 3 retries: only poll's own wait bounds it
        polling = KubernetesCapacitySource(api_client_for=lambda t: api.api_client) if retrying_client else source

        started = time.monotonic()
        with pytest.raises(KubernetesCapacityError, match="k8s: timed out") as raised:
            poll(polling, kube.target("k8s", "silent"), timeout_s=0.5)
        elapsed = time.monotonic() - started

        # past the deadline, a built client's worker has given up (no retries); urllib3's default retries
        # reconnect after each read timeout, which is why poll must not wait for them
        time.sleep(max(started + 1.3 - time.monotonic(), 0.0))
        connections = len(silent.accepted)
    # 0.2 s of grace, and room for a busy CI machine; unbounded, the retrying client would take 2 s
    assert 0.4 < elapsed < 2.5, (elapsed, str(raised.value))  # bounded; slack for CI load
    assert connections >= 2 if retrying_client else connections == 1


def test_garbage_answers_are_an_error_and_it_recovers(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    make_node(kube.add("a", cluster.url), "n1", gpus="2")
    cluster.garbage.set()

    with pytest.raises(KubernetesCapacityError, match=r"k8s: .*not JSON"):
        poll(source, kube.target("k8s", "a"))

    cluster.garbage.clear()
    assert free(poll(source, kube.target("k8s", "a"))) == {"k8s": 2.0}


def test_forbidden_names_the_permission(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    kube.add("a", cluster.url)
    cluster.forbidden.set()

    with pytest.raises(KubernetesCapacityError, match=r"HTTP 403 .*needs list on nodes and pods"):
        poll(source, kube.target("k8s", "a"))


def test_one_cluster_down_the_other_still_sampled_then_recovery(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    make_node(kube.add("up", cluster.url), "n1", gpus="4")
    port = free_port()
    kube.add("later", f"http://127.0.0.1:{port}")
    targets = [kube.target("up", "up"), kube.target("later", "later")]

    result = poll(source, *targets, timeout_s=2.0)
    assert free(result) == {"up": 4.0}
    [problem] = result.problems
    assert problem.startswith("later: cannot reach the API server")

    with EmulatedCluster(port=port) as later:
        make_node(kube.add("later", later.url), "m1", gpus="1")
        recovered = poll(source, *targets, timeout_s=2.0)  # the same source and its cached client

    assert free(recovered) == {"up": 4.0, "later": 1.0}
    assert recovered.problems == []


def test_malformed_objects_fail_the_cluster_not_the_process(
    cluster: EmulatedCluster, kube: Clusters, source: KubernetesCapacitySource
) -> None:
    api = kube.add("a", cluster.url)
    make_node(api, "n1", gpus="four")

    with pytest.raises(KubernetesCapacityError, match="not a quantity: 'four'"):
        poll(source, kube.target("k8s", "a"))


# -- the rules, as plain functions -------------------------------------------------------------


def test_toleration_matching_follows_kubernetes() -> None:
    taint = {"key": "gpu", "value": "a100", "effect": "NoSchedule"}
    assert tolerates({"key": "gpu", "operator": "Equal", "value": "a100", "effect": "NoSchedule"}, taint)
    assert tolerates({"key": "gpu", "value": "a100"}, taint)  # no operator is Equal, no effect is any
    assert tolerates({"key": "gpu", "operator": "Exists"}, taint)
    assert tolerates({"operator": "Exists"}, taint)
    assert not tolerates({"key": "gpu", "value": "t4"}, taint)
    assert not tolerates({"key": "gpu", "operator": "Exists", "effect": "NoExecute"}, taint)
    assert not tolerates({"key": "other", "operator": "Exists"}, taint)
    assert not tolerates({"key": "gpu", "operator": "Lt", "value": "b"}, taint)


def test_pod_request_rules() -> None:
    def pod(**spec: Any) -> dict[str, Any]:
        return {"spec": spec}

    assert pod_gpu_request(pod(containers=[container(requests="1", limits="2")])) == 1
    assert pod_gpu_request(pod(containers=[container(limits="2")])) == 2
    assert pod_gpu_request(pod(containers=[container(requests="2000m")])) == 2
    assert pod_gpu_request(pod(containers=[container(requests="1")], overhead={"nvidia.com/gpu": "1"})) == 2
    sidecars = pod(
        initContainers=[
            container("s1", requests="1", restartPolicy="Always"),
            container("i1", requests="1"),
            container("s2", requests="1", restartPolicy="Always"),
            container("i2", requests="3"),
        ],
        containers=[container("a", requests="1")],
    )
    # apps + sidecars = 3; i1 runs beside s1 (2); i2 beside s1 and s2 (5)
    assert pod_gpu_request(sidecars) == 5
    with pytest.raises(ValueError, match="node_selector"):
        NodeRules.from_settings({"node_selector": ["gpu"]})
